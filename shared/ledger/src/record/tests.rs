//! Unit tests of the record encoding (sample records of every kind, layouts, refusals).

use super::*;

/// One record of every kind, with distinctive field values.
pub(crate) fn samples() -> Vec<Record> {
    let p = |s: &str| ParticipantId::new(s);
    vec![
        Record::FederationCreated {
            federation_id: "fed-1".into(),
            coordinator_key: [7; 32],
            created_unix: 1_700_000_000,
            config_digest: Digest::of(b"config"),
        },
        Record::RosterChange {
            participant: p("bank-a"),
            action: RosterAction::Enrol,
            signing_key: [9; 32],
            cert_fingerprint: Digest::of(b"cert"),
            reason: "initial roster".into(),
        },
        Record::RoundOpened {
            round: RoundId(3),
            public_set_digest: Digest::of(b"public"),
            sample_ids_digest: Digest::of(b"ids"),
            temperature: 2.5,
            rule: RuleName::parse("trimmed_mean:0.1").expect("valid rule"),
            deadline_unix_ms: 1_700_000_123_456,
            quorum: 2,
        },
        Record::Contribution {
            round: RoundId(3),
            participant: p("bank-a"),
            encoding: EncodingName::parse("topk:5").expect("valid encoding"),
            payload_digest: Digest::of(b"payload"),
            sequence: 42,
            signature: vec![1; 64],
        },
        Record::Aggregate {
            round: RoundId(3),
            digest: Digest::of(b"agg"),
            rule: RuleName::parse("mean").expect("valid rule"),
            contributors: vec![p("bank-a"), p("hospital-b")],
            signature: vec![2; 64],
        },
        Record::RoundReport {
            round: RoundId(3),
            participant: p("hospital-b"),
            metrics: Metric::canonical([("f1", 0.5), ("accuracy", 0.875)]).expect("distinct names"),
            student_digest: Digest::of(b"student"),
            guard: GuardDecision::Accept,
            message_digest: Digest::of(b"report message"),
            sequence: 43,
            signature: vec![3; 64],
        },
        Record::Quarantine {
            round: RoundId(4),
            participant: p("bank-c"),
            reason: "outlier".into(),
            evidence: Metric::canonical([("z_score", 9.25)]).expect("one name"),
        },
        Record::PrivacySpend {
            round: RoundId(4),
            participant: p("bank-a"),
            epsilon: 0.5,
            delta: 1e-5,
        },
        Record::Abstention {
            round: RoundId(5),
            participant: p("bank-a"),
            reason: "budget_exhausted".into(),
            figures: Metric::canonical([("epsilon_spent", 8.0), ("epsilon_budget", 10.0)]).expect("distinct"),
            message_digest: Digest::of(b"abstain message"),
            sequence: 44,
            signature: vec![4; 64],
        },
        Record::QuarantineRelease {
            round: RoundId(9),
            participant: p("bank-c"),
            quarantined_round: RoundId(4),
            after_rounds: 5,
            reason: "served".into(),
        },
        Record::TaskDeclared {
            name: "lending".into(),
            card_digest: Digest::of(b"card"),
            public_digest: Digest::of(b"public file"),
            public_rows: 9857,
        },
        Record::SecureAggregation {
            round: RoundId(6),
            transcript_digest: Digest::of(b"transcript"),
            threshold: 3,
            neighbours: 0,
            survivors: vec![p("bank-a"), p("bank-b"), p("bank-c")],
            dropped: vec![p("bank-d")],
        },
    ]
}

#[test]
fn task_declared_layout_is_exactly_as_documented() {
    // Expected bytes written by hand from the layout in docs/protocol.md.
    let r = Record::TaskDeclared {
        name: "t".into(),
        card_digest: Digest([1; 32]),
        public_digest: Digest([2; 32]),
        public_rows: 5,
    };
    let mut want = vec![1u8, 11, 0, 0, 0, 1, b't'];
    want.extend_from_slice(&[1; 32]);
    want.extend_from_slice(&[2; 32]);
    want.extend_from_slice(&5u64.to_be_bytes());
    assert_eq!(r.encode().expect("encodes"), want);
}

#[test]
fn every_kind_round_trips_byte_for_byte() {
    for r in samples() {
        let bytes = r.encode().expect("sample encodes");
        assert_eq!(bytes[0], RECORD_VERSION);
        assert_eq!(bytes[1], r.kind() as u8);
        let back = Record::decode(&bytes).expect("own encoding decodes");
        assert_eq!(back, r);
        assert_eq!(back.encode().expect("re-encodes"), bytes);
    }
}

#[test]
fn privacy_spend_layout_is_exactly_as_documented() {
    // Expected bytes written by hand from the layout in docs/protocol.md.
    let r = Record::PrivacySpend {
        round: RoundId(1),
        participant: ParticipantId::new("ab"),
        epsilon: 1.0,
        delta: 0.0,
    };
    let mut want = vec![1u8, 8];
    want.extend_from_slice(&1u64.to_be_bytes());
    want.extend_from_slice(&[0, 0, 0, 2, b'a', b'b']);
    want.extend_from_slice(&[0x3f, 0xf0, 0, 0, 0, 0, 0, 0]);
    want.extend_from_slice(&[0; 8]);
    assert_eq!(r.encode().expect("encodes"), want);
}

#[test]
fn quarantine_release_layout_is_exactly_as_documented() {
    // Expected bytes written by hand from the layout in docs/protocol.md.
    let r = Record::QuarantineRelease {
        round: RoundId(7),
        participant: ParticipantId::new("ab"),
        quarantined_round: RoundId(4),
        after_rounds: 3,
        reason: "r".into(),
    };
    let mut want = vec![1u8, 10];
    want.extend_from_slice(&7u64.to_be_bytes());
    want.extend_from_slice(&[0, 0, 0, 2, b'a', b'b']);
    want.extend_from_slice(&4u64.to_be_bytes());
    want.extend_from_slice(&[0, 0, 0, 3]);
    want.extend_from_slice(&[0, 0, 0, 1, b'r']);
    assert_eq!(r.encode().expect("encodes"), want);
    assert_eq!(Record::decode(&want).expect("decodes"), r);
}

#[test]
fn every_truncation_is_refused_without_panic() {
    for r in samples() {
        let bytes = r.encode().expect("encodes");
        for cut in 0..bytes.len() {
            assert!(Record::decode(&bytes[..cut]).is_err(), "{:?} cut at {cut}", r.kind());
        }
    }
}

#[test]
fn trailing_bytes_wrong_version_and_kind_are_refused() {
    let mut bytes = samples()[0].encode().expect("encodes");
    bytes.push(0);
    assert_eq!(Record::decode(&bytes), Err(RecordError::Trailing(1)));
    let mut v2 = samples()[0].encode().expect("encodes");
    v2[0] = 2;
    assert_eq!(Record::decode(&v2), Err(RecordError::Version(2)));
    let mut k = samples()[0].encode().expect("encodes");
    k[1] = 99;
    assert_eq!(Record::decode(&k), Err(RecordError::Kind(99)));
}

#[test]
fn huge_declared_lengths_are_refused_before_allocating() {
    let mut bytes = vec![1u8, 1];
    bytes.extend_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        Record::decode(&bytes),
        Err(RecordError::TooLong {
            field: "federation_id",
            ..
        })
    ));
}

#[test]
fn metric_lists_must_be_canonical() {
    assert!(Metric::canonical([("a", 1.0), ("a", 2.0)]).is_err());
    assert!(Metric::canonical([("", 1.0)]).is_err());
    let unsorted = Record::Quarantine {
        round: RoundId(1),
        participant: ParticipantId::new("x"),
        reason: String::new(),
        evidence: vec![
            Metric {
                name: "b".into(),
                value: 1.0,
            },
            Metric {
                name: "a".into(),
                value: 1.0,
            },
        ],
    };
    assert!(matches!(unsorted.encode(), Err(RecordError::Metrics(_))));
}

#[test]
fn statement_excludes_the_signature_and_binds_the_federation() {
    let c = samples()[4].clone();
    let s1 = c.statement("fed-1").expect("encodes").expect("aggregates are signed");
    let mut c2 = c.clone();
    if let Record::Aggregate { signature, .. } = &mut c2 {
        *signature = vec![0xee; 64];
    }
    assert_eq!(c2.statement("fed-1").expect("encodes"), Some(s1.clone()));
    assert_ne!(c.statement("fed-2").expect("encodes"), Some(s1.clone()));
    assert!(s1.starts_with(STATEMENT_DOMAIN));
    assert_eq!(samples()[0].statement("fed-1").expect("encodes"), None);
    assert_eq!(samples()[3].statement("fed-1").expect("encodes"), None);
}

/// The string-encoded fields as builds before the typed fields wrote them, by hand: the typed record
/// must encode to exactly these bytes (the Merkle leaf), and decode back to the same typed value.
fn legacy_round_report(guard: &str) -> Vec<u8> {
    let mut want = vec![1u8, 6];
    want.extend_from_slice(&3u64.to_be_bytes());
    want.extend_from_slice(&[0, 0, 0, 2, b'a', b'b']);
    want.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 3, b'a', b'c', b'c']);
    want.extend_from_slice(&0.5f64.to_bits().to_be_bytes());
    want.extend_from_slice(&[5; 32]);
    want.extend_from_slice(&(guard.len() as u32).to_be_bytes());
    want.extend_from_slice(guard.as_bytes());
    want.extend_from_slice(&[6; 32]);
    want.extend_from_slice(&9u64.to_be_bytes());
    want.extend_from_slice(&[0, 0, 0, 1, 0xab]);
    want
}

fn report_with(guard: GuardDecision) -> Record {
    Record::RoundReport {
        round: RoundId(3),
        participant: ParticipantId::new("ab"),
        metrics: Metric::canonical([("acc", 0.5)]).expect("one name"),
        student_digest: Digest([5; 32]),
        guard,
        message_digest: Digest([6; 32]),
        sequence: 9,
        signature: vec![0xab],
    }
}

#[test]
fn typed_guard_encodes_to_the_old_strings() {
    for (guard, text) in [
        (GuardDecision::Accept, "accept"),
        (
            GuardDecision::Reject {
                reason: "accuracy fell by 0.031 > 0.02".into(),
            },
            "reject: accuracy fell by 0.031 > 0.02",
        ),
        (GuardDecision::Reject { reason: String::new() }, "reject: "),
    ] {
        let want = legacy_round_report(text);
        let r = report_with(guard);
        assert_eq!(r.encode().expect("encodes"), want, "{text:?}");
        assert_eq!(Record::decode(&want).expect("old bytes decode"), r);
    }
}

#[test]
fn an_unknown_guard_string_is_refused() {
    for text in ["rollback", "Accept", "reject", ""] {
        assert_eq!(
            Record::decode(&legacy_round_report(text)),
            Err(RecordError::UnknownGuard(text.into())),
            "{text:?}"
        );
    }
}

#[test]
fn typed_rule_and_encoding_encode_to_the_old_strings() {
    let rule = |s: &str| RuleName::parse(s).expect("valid rule");
    let opened = Record::RoundOpened {
        round: RoundId(2),
        public_set_digest: Digest([1; 32]),
        sample_ids_digest: Digest([2; 32]),
        temperature: 1.0,
        rule: rule("era:0.1"),
        deadline_unix_ms: 7,
        quorum: 2,
    };
    let mut want = vec![1u8, 3];
    want.extend_from_slice(&2u64.to_be_bytes());
    want.extend_from_slice(&[1; 32]);
    want.extend_from_slice(&[2; 32]);
    want.extend_from_slice(&1.0f64.to_bits().to_be_bytes());
    want.extend_from_slice(&[0, 0, 0, 7]);
    want.extend_from_slice(b"era:0.1");
    want.extend_from_slice(&7u64.to_be_bytes());
    want.extend_from_slice(&2u32.to_be_bytes());
    assert_eq!(opened.encode().expect("encodes"), want);
    assert_eq!(Record::decode(&want).expect("decodes"), opened);

    let contribution = Record::Contribution {
        round: RoundId(2),
        participant: ParticipantId::new("ab"),
        encoding: EncodingName::parse("qtopk:3").expect("valid encoding"),
        payload_digest: Digest([4; 32]),
        sequence: 1,
        signature: vec![],
    };
    let mut want = vec![1u8, 4];
    want.extend_from_slice(&2u64.to_be_bytes());
    want.extend_from_slice(&[0, 0, 0, 2, b'a', b'b']);
    want.extend_from_slice(&[0, 0, 0, 7]);
    want.extend_from_slice(b"qtopk:3");
    want.extend_from_slice(&[4; 32]);
    want.extend_from_slice(&1u64.to_be_bytes());
    want.extend_from_slice(&[0, 0, 0, 0]);
    assert_eq!(contribution.encode().expect("encodes"), want);
    assert_eq!(Record::decode(&want).expect("decodes"), contribution);

    let aggregate = Record::Aggregate {
        round: RoundId(2),
        digest: Digest([8; 32]),
        rule: rule("trimmed_mean:0.2"),
        contributors: vec![ParticipantId::new("ab")],
        signature: vec![],
    };
    let mut want = vec![1u8, 5];
    want.extend_from_slice(&2u64.to_be_bytes());
    want.extend_from_slice(&[8; 32]);
    want.extend_from_slice(&[0, 0, 0, 16]);
    want.extend_from_slice(b"trimmed_mean:0.2");
    want.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2, b'a', b'b']);
    want.extend_from_slice(&[0, 0, 0, 0]);
    assert_eq!(aggregate.encode().expect("encodes"), want);
    assert_eq!(Record::decode(&want).expect("decodes"), aggregate);

    // A rule field that is no rule name is refused when decoding, naming the field.
    let mut bad = want.clone();
    bad[2 + 8 + 32 + 4] = b'T';
    assert!(matches!(
        Record::decode(&bad),
        Err(RecordError::InvalidName { field: "rule", .. })
    ));
}
