//! Fixtures shared by the audit stages' unit tests: real signed logs and bundles built from them.

pub(crate) use super::*;
pub(crate) use crate::crypto::{signing_bytes, FederationId};
pub(crate) use crate::ledger::note::Trust;
pub(crate) use crate::ledger::tree::MemoryTree;
pub(crate) use crate::ledger::{
    Cosignature, Digest, EncodingName, GuardDecision, LogSigner, LogVerifier, ParticipantId, Record, RosterAction,
    RoundId, RuleName, SignedCheckpoint, WitnessKey,
};
use crate::protocol::{softlabels, Encoding};
use crate::wire::messages::SoftLabels;
pub(crate) use ed25519_dalek::{Signer as _, SigningKey};

pub(crate) const ORIGIN: &str = "fedistill.test/fed-1";
pub(crate) const FED: &str = "fed-1";

pub(crate) fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// The log key is key 1; witnesses `w-a` (key 31) and `w-b` (key 32).
pub(crate) fn trust(quorum: usize) -> Trust {
    Trust {
        log: LogVerifier {
            origin: ORIGIN.into(),
            key: key(1).verifying_key(),
        },
        witnesses: vec![
            WitnessKey {
                name: "w-a".into(),
                key: key(31).verifying_key(),
            },
            WitnessKey {
                name: "w-b".into(),
                key: key(32).verifying_key(),
            },
        ],
        quorum,
    }
}

/// [`trust`] with another log key (key 9): no checkpoint of the fixtures verifies under it.
pub(crate) fn other_log_key_trust() -> Trust {
    let mut t = trust(0);
    t.log.key = key(9).verifying_key();
    t
}

pub(crate) fn fed() -> FederationId {
    FederationId::new(FED).expect("valid id")
}

/// A signed `SoftLabels` payload (2 rows x 3 classes, f32) and its contribution record.
pub(crate) fn contribution(who: &str, seed: u8, probs: &[f32], seq: u64) -> (Record, Vec<u8>) {
    let msg = SoftLabels {
        round: RoundId(1),
        public_digest: Digest::of(b"public"),
        sample_ids_digest: Digest::of(b"ids"),
        encoding: Encoding::F32,
        rows: 2,
        classes: 3,
        samples: 100,
        payload: softlabels::encode(probs, 2, 3, Encoding::F32).expect("valid distributions"),
    };
    let payload = crate::wire::encode_payload(&msg).expect("encodes");
    let d = Digest::of(&payload);
    let sig = key(seed).sign(&signing_bytes(SOFT_LABELS_DOMAIN, &fed(), RoundId(1), seq, &d));
    let rec = Record::Contribution {
        round: RoundId(1),
        participant: ParticipantId::new(who),
        encoding: EncodingName::parse("f32").expect("valid encoding"),
        payload_digest: d,
        sequence: seq,
        signature: sig.to_bytes().to_vec(),
    };
    (rec, payload)
}

pub(crate) fn signed_aggregate(digest: Digest) -> Record {
    let mut agg = Record::Aggregate {
        round: RoundId(1),
        digest,
        rule: RuleName::parse("mean").expect("valid rule"),
        contributors: vec![ParticipantId::new("bank-a"), ParticipantId::new("bank-b")],
        signature: Vec::new(),
    };
    let stmt = agg.statement(FED).expect("encodes").expect("aggregates are signed");
    if let Record::Aggregate { signature, .. } = &mut agg {
        *signature = key(1).sign(&stmt).to_bytes().to_vec();
    }
    agg
}

pub(crate) struct Fixture {
    pub(crate) records: Vec<Record>,
    pub(crate) payloads: Vec<(Digest, Vec<u8>)>,
    pub(crate) checkpoints: Vec<SignedCheckpoint>,
}

/// A small real log: federation, roster, one round with two contributions, the aggregate,
/// a signed report; checkpoints at 3, 6 and 9 records, the head cosigned by `head_witnesses`.
pub(crate) fn fixture(head_witnesses: &[u8], aggregate_digest: Option<Digest>) -> Fixture {
    let enrol = |who: &str, seed: u8| Record::RosterChange {
        participant: ParticipantId::new(who),
        action: RosterAction::Enrol,
        signing_key: key(seed).verifying_key().to_bytes(),
        cert_fingerprint: Digest::of(who.as_bytes()),
        reason: "initial roster".into(),
    };
    let (ca, pa) = contribution("bank-a", 21, &[0.5, 0.25, 0.25, 0.125, 0.125, 0.75], 1);
    let (cb, pb) = contribution("bank-b", 22, &[0.25, 0.5, 0.25, 0.375, 0.125, 0.5], 1);
    let inputs = [
        AggregateInput {
            participant: &ParticipantId::new("bank-a"),
            encoding: "f32",
            payload: &pa,
        },
        AggregateInput {
            participant: &ParticipantId::new("bank-b"),
            encoding: "f32",
            payload: &pb,
        },
    ];
    let agg_bytes = ProtocolRecompute.aggregate("mean", &inputs).expect("aggregates");
    let report_digest = Digest::of(b"report message");
    let report = Record::RoundReport {
        round: RoundId(1),
        participant: ParticipantId::new("bank-a"),
        metrics: crate::ledger::Metric::canonical([("accuracy", 0.9)]).expect("one metric"),
        student_digest: Digest::of(b"student"),
        guard: GuardDecision::Accept,
        message_digest: report_digest,
        sequence: 2,
        signature: key(21)
            .sign(&signing_bytes(
                ROUND_REPORT_DOMAIN,
                &fed(),
                RoundId(1),
                2,
                &report_digest,
            ))
            .to_bytes()
            .to_vec(),
    };
    let records = vec![
        Record::FederationCreated {
            federation_id: FED.into(),
            coordinator_key: key(1).verifying_key().to_bytes(),
            created_unix: 1_700_000_000,
            config_digest: Digest::of(b"config"),
        },
        enrol("bank-a", 21),
        enrol("bank-b", 22),
        Record::RoundOpened {
            round: RoundId(1),
            public_set_digest: Digest::of(b"public"),
            sample_ids_digest: Digest::of(b"ids"),
            temperature: 2.0,
            rule: RuleName::parse("mean").expect("valid rule"),
            deadline_unix_ms: 1_700_000_060_000,
            quorum: 2,
        },
        ca,
        cb,
        signed_aggregate(aggregate_digest.unwrap_or(Digest::of(&agg_bytes))),
        report,
        Record::PrivacySpend {
            round: RoundId(1),
            participant: ParticipantId::new("bank-a"),
            epsilon: 0.5,
            delta: 1e-6,
        },
    ];
    let signer = LogSigner::new(ORIGIN, key(1)).expect("name");
    let mut tree = MemoryTree::new();
    let mut checkpoints = Vec::new();
    for (i, r) in records.iter().enumerate() {
        tree.push(&r.encode().expect("encodes"));
        if [3, 6, 9].contains(&(i + 1)) {
            let size = tree.size();
            let mut sc = signer.sign(size, tree.root(size).expect("root")).expect("sign");
            let witnesses: &[u8] = if size == 9 { head_witnesses } else { &[31] };
            for &w in witnesses {
                let name = if w == 31 { "w-a" } else { "w-b" };
                let c = Cosignature::sign(&sc.checkpoint, name, &key(w), 1_700_000_100 + size).expect("cosign");
                sc.add_cosignature(&c);
            }
            checkpoints.push(sc);
        }
    }
    Fixture {
        records,
        payloads: vec![(Digest::of(&pa), pa), (Digest::of(&pb), pb)],
        checkpoints,
    }
}

pub(crate) fn bundle_of(f: &Fixture, payloads: bool) -> Bundle {
    Bundle::build(ExportInput {
        records: f.records.iter().map(|r| r.encode().expect("encodes")).collect(),
        checkpoints: f.checkpoints.clone(),
        payloads: payloads.then(|| f.payloads.clone()),
    })
    .expect("builds")
}

pub(crate) fn good() -> Bundle {
    bundle_of(&fixture(&[31, 32], None), true)
}

pub(crate) fn check(b: &Bundle) -> Report {
    verify(b, &trust(2), Some(&ProtocolRecompute))
}

pub(crate) fn first(r: &Report) -> &Failure {
    r.failures.first().expect("verification must fail")
}

/// `item: reason` of every failure.
pub(crate) fn lines(r: &Report) -> Vec<String> {
    r.failures.iter().map(|f| format!("{}: {}", f.item, f.reason)).collect()
}

pub(crate) fn records_of(b: &Bundle) -> Vec<Vec<u8>> {
    let mut r = Report::default();
    super::records::split_records(&b.files[RECORDS_FILE], &mut r)
}

pub(crate) fn with_records(b: &Bundle, recs: &[Vec<u8>]) -> Bundle {
    let mut t = b.clone();
    let mut bytes = Vec::new();
    for r in recs {
        bytes.extend_from_slice(&(r.len() as u32).to_be_bytes());
        bytes.extend_from_slice(r);
    }
    t.files.insert(RECORDS_FILE.into(), bytes);
    t.reseal();
    t
}

pub(crate) fn replace_checkpoint(b: &Bundle, old: &SignedCheckpoint, new: &SignedCheckpoint) -> Bundle {
    let mut t = b.clone();
    t.files.remove(&checkpoint_file_name(&old.checkpoint));
    t.files
        .insert(checkpoint_file_name(&new.checkpoint), new.to_note().expect("note"));
    t.reseal();
    t
}

// ---- logs for the record and policy stages ---------------------------------------------------------

/// The federation record and bank-a..bank-d enrolled (keys 21..24).
pub(crate) fn preamble() -> Vec<Record> {
    let mut records = vec![Record::FederationCreated {
        federation_id: FED.into(),
        coordinator_key: key(1).verifying_key().to_bytes(),
        created_unix: 1_700_000_000,
        config_digest: Digest::of(b"config"),
    }];
    for (who, seed) in [("bank-a", 21), ("bank-b", 22), ("bank-c", 23), ("bank-d", 24)] {
        records.push(Record::RosterChange {
            participant: ParticipantId::new(who),
            action: RosterAction::Enrol,
            signing_key: key(seed).verifying_key().to_bytes(),
            cert_fingerprint: Digest::of(who.as_bytes()),
            reason: "initial roster".into(),
        });
    }
    records
}

/// One log: federation, bank-a..bank-d enrolled, then `rest`; one head checkpoint; trust quorum 0.
pub(crate) fn log_of(rest: Vec<Record>, payloads: Option<Vec<(Digest, Vec<u8>)>>) -> Bundle {
    let mut records = preamble();
    records.extend(rest);
    let encoded: Vec<Vec<u8>> = records.iter().map(|r| r.encode().expect("encodes")).collect();
    let mut tree = MemoryTree::new();
    for e in &encoded {
        tree.push(e);
    }
    let size = tree.size();
    let signer = LogSigner::new(ORIGIN, key(1)).expect("name");
    Bundle::build(ExportInput {
        records: encoded,
        checkpoints: vec![signer.sign(size, tree.root(size).expect("root")).expect("sign")],
        payloads,
    })
    .expect("builds")
}

pub(crate) fn seed_of(who: &str) -> u8 {
    match who {
        "bank-a" => 21,
        "bank-b" => 22,
        "bank-c" => 23,
        _ => 24,
    }
}

/// A contribution record of `who` in `round` (signature over a made-up payload digest; no payload).
pub(crate) fn contribution_in(who: &str, round: u64) -> Record {
    let d = Digest::of(format!("{who}-{round}").as_bytes());
    let sig = key(seed_of(who)).sign(&signing_bytes(SOFT_LABELS_DOMAIN, &fed(), RoundId(round), round, &d));
    Record::Contribution {
        round: RoundId(round),
        participant: ParticipantId::new(who),
        encoding: EncodingName::parse("f32").expect("valid encoding"),
        payload_digest: d,
        sequence: round,
        signature: sig.to_bytes().to_vec(),
    }
}

pub(crate) fn aggregate_in(round: u64, who: &[&str]) -> Record {
    let mut agg = Record::Aggregate {
        round: RoundId(round),
        digest: Digest::of(format!("agg-{round}").as_bytes()),
        rule: RuleName::parse("median").expect("valid rule"),
        contributors: who.iter().map(|w| ParticipantId::new(*w)).collect(),
        signature: Vec::new(),
    };
    let stmt = agg.statement(FED).expect("encodes").expect("aggregates are signed");
    if let Record::Aggregate { signature, .. } = &mut agg {
        *signature = key(1).sign(&stmt).to_bytes().to_vec();
    }
    agg
}

/// A round where `who` contribute and are aggregated.
pub(crate) fn round_of(round: u64, who: &[&str]) -> Vec<Record> {
    let mut v: Vec<Record> = who.iter().map(|w| contribution_in(w, round)).collect();
    v.push(aggregate_in(round, who));
    v
}

/// Evidence as `protocol::robust` writes it (default policy: factor 3, floor 0.1, 3 strikes).
pub(crate) fn quarantine_of(who: &str, round: u64) -> Record {
    let (median, factor, floor) = (0.2f64, 3.0f64, 0.1f64);
    Record::Quarantine {
        round: RoundId(round),
        participant: ParticipantId::new(who),
        reason: "anomaly score above 3 x median for 3 consecutive rounds".into(),
        evidence: crate::ledger::Metric::canonical([
            ("ewma_score", 1.6),
            ("last_distance", 1.6),
            ("median_score", median),
            ("policy_consecutive", 3.0),
            ("policy_decay", 0.5),
            ("policy_factor", factor),
            ("policy_floor", floor),
            ("policy_min_contributors", 4.0),
            ("strikes", 3.0),
            ("threshold", (factor * median).max(floor)),
        ])
        .expect("unique names"),
    }
}

pub(crate) fn release_of(who: &str, round: u64, quarantined_round: u64, after_rounds: u32) -> Record {
    Record::QuarantineRelease {
        round: RoundId(round),
        participant: ParticipantId::new(who),
        quarantined_round: RoundId(quarantined_round),
        after_rounds,
        reason: "served".into(),
    }
}

pub(crate) const ALL: [&str; 4] = ["bank-a", "bank-b", "bank-c", "bank-d"];
pub(crate) const HONEST: [&str; 3] = ["bank-a", "bank-b", "bank-c"];

/// Quarantine of bank-d in round 3, out in rounds 4 and 5, released after round 5 (3 + 2), back in 6.
pub(crate) fn quarantine_log(release: Record, round6: &[&str]) -> Bundle {
    let mut rest = Vec::new();
    for r in 1..=3 {
        rest.extend(round_of(r, &ALL));
    }
    rest.push(quarantine_of("bank-d", 3));
    rest.extend(round_of(4, &HONEST));
    rest.extend(round_of(5, &HONEST));
    rest.push(release);
    rest.extend(round_of(6, round6));
    log_of(rest, None)
}

/// `item: reason` of every failure of [`verify`] under a quorum of 0, without recomputation.
pub(crate) fn failures(b: &Bundle) -> Vec<String> {
    lines(&verify(b, &trust(0), None))
}

/// A signed abstention of `who` from `round` and its payload.
pub(crate) fn abstention_of(who: &str, round: u64, seq: u64) -> (Record, (Digest, Vec<u8>)) {
    let msg = crate::wire::messages::Abstain {
        round: RoundId(round),
        reason: crate::wire::messages::AbstainReason::BudgetExhausted,
        figures: vec![
            ("epsilon_spent".into(), 4.0),
            ("epsilon_budget".into(), 5.0),
            ("epsilon_would_reach".into(), 8.0),
        ],
    };
    let payload = crate::wire::encode_payload(&msg).expect("encodes");
    let d = Digest::of(&payload);
    let sig = key(seed_of(who)).sign(&signing_bytes(ABSTAIN_DOMAIN, &fed(), RoundId(round), seq, &d));
    let rec = Record::Abstention {
        round: RoundId(round),
        participant: ParticipantId::new(who),
        reason: msg.reason.as_str().to_string(),
        figures: crate::ledger::Metric::canonical(msg.figures.clone()).expect("unique"),
        message_digest: d,
        sequence: seq,
        signature: sig.to_bytes().to_vec(),
    };
    (rec, (d, payload))
}

/// `extra` plus the (made-up) payload of every contribution in `records`, as `contribution_in` hashed it.
pub(crate) fn with_contribution_payloads(
    records: &[Record],
    extra: (Digest, Vec<u8>),
) -> Option<Vec<(Digest, Vec<u8>)>> {
    let mut out = vec![extra];
    for r in records {
        if let Record::Contribution { round, participant, .. } = r {
            let b = format!("{participant}-{round}").into_bytes();
            out.push((Digest::of(&b), b));
        }
    }
    Some(out)
}

/// Decoded records, as the records stage hands them on.
pub(crate) fn decoded(records: &[Record]) -> Vec<Option<Record>> {
    records.iter().cloned().map(Some).collect()
}
