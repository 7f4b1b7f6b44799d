//! Stages 2 and 6, records: `records.bin` framing and record decoding, then the walk over the log
//! that checks the federation record, the roster (enrolment, rekeying, revocation) and every
//! record signature, and feeds each record to the quarantine and abstention [`Policy`] in the same
//! walk, so that failures stay in log order.

use super::policy::Policy;
use super::{Bundle, Report, ABSTAIN_DOMAIN, RECORDS_FILE, ROUND_REPORT_DOMAIN, SOFT_LABELS_DOMAIN};
use crate::crypto::{envelope_signing_bytes, signing_bytes, FederationId, RoundId, Signer};
use crate::ledger::note::Trust;
use crate::ledger::tree::MemoryTree;
use crate::ledger::{ParticipantId, Record, RecordKind, RosterAction};
use std::collections::HashMap;

/// The records of a bundle as read: the framed byte strings, each decoded (or `None` when it does
/// not decode, already reported), and the Merkle tree of the byte strings.
pub(super) struct Log {
    pub(super) raw: Vec<Vec<u8>>,
    pub(super) records: Vec<Option<Record>>,
    pub(super) tree: MemoryTree,
}

/// The item name of record `i` in failures: `record 12 (contribution)`, or `record 12` when it did
/// not decode.
pub(super) fn record_item(i: usize, r: Option<&Record>) -> String {
    match r {
        Some(r) => format!("record {i} ({})", r.kind().name()),
        None => format!("record {i}"),
    }
}

/// Splits `records.bin` into record byte strings; stops at the first framing error.
pub(super) fn split_records(bytes: &[u8], report: &mut Report) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut off = 0usize;
    while off < bytes.len() {
        let Some(len_bytes) = bytes.get(off..off + 4) else {
            report.fail(
                format!("record {}", out.len()),
                format!("{RECORDS_FILE} truncated inside a length prefix at offset {off}"),
            );
            break;
        };
        let len = u32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]) as usize;
        let Some(body) = bytes.get(off + 4..off + 4 + len) else {
            report.fail(
                format!("record {}", out.len()),
                format!("{RECORDS_FILE} truncated: record at offset {off} declares {len} bytes"),
            );
            break;
        };
        out.push(body.to_vec());
        off += 4 + len;
    }
    out
}

/// Stage 2: reads `records.bin` (it must exist and frame cleanly), decodes every record and builds
/// the tree of their bytes. Sets `report.records`.
pub(super) fn read_records(bundle: &Bundle, report: &mut Report) -> Log {
    let raw = match bundle.files.get(RECORDS_FILE) {
        Some(b) => split_records(b, report),
        None => {
            report.fail(RECORDS_FILE, "missing");
            Vec::new()
        }
    };
    report.records = raw.len() as u64;
    let mut tree = MemoryTree::new();
    let mut records: Vec<Option<Record>> = Vec::with_capacity(raw.len());
    for (i, r) in raw.iter().enumerate() {
        tree.push(r);
        match Record::decode(r) {
            Ok(rec) => records.push(Some(rec)),
            Err(e) => {
                report.fail(record_item(i, None), e.to_string());
                records.push(None);
            }
        }
    }
    Log { raw, records, tree }
}

/// Stage 6: walks the decoded records in log order. The first record creates the federation with the
/// trusted log key; roster changes enrol, rekey and revoke participants' signing keys; every
/// contribution, round report and abstention carries its participant's signature under the key the
/// roster holds at that point, and every aggregate the coordinator's. Each record is first fed to the
/// quarantine and abstention [`Policy`] (its failures for a record come before the signature's), and
/// the policy's cross-record checks run at the end. Counts `report.record_signatures`.
pub(super) fn check_records(records: &[Option<Record>], trust: &Trust, report: &mut Report) {
    let mut federation: Option<FederationId> = None;
    let mut roster: HashMap<ParticipantId, ed25519_dalek::VerifyingKey> = HashMap::new();
    let mut policy = Policy::default();
    // The public set the declared task names; every round must open on it.
    let mut task_public: Option<crate::crypto::Digest> = None;
    for (i, rec) in records.iter().enumerate() {
        let Some(rec) = rec else { continue };
        let item = record_item(i, Some(rec));
        if i == 0 && rec.kind() != RecordKind::FederationCreated {
            report.fail(item.as_str(), "the first record must create the federation");
        }
        policy.record(i, rec, &item, &|p| roster.contains_key(p), report);
        match rec {
            Record::FederationCreated {
                federation_id,
                coordinator_key,
                ..
            } => {
                if i != 0 {
                    report.fail(item.as_str(), "federation created twice");
                    continue;
                }
                if *coordinator_key != trust.log.key.to_bytes() {
                    report.fail(item.as_str(), "coordinator key differs from the trusted log key");
                }
                match FederationId::new(federation_id.clone()) {
                    Ok(f) => federation = Some(f),
                    Err(e) => report.fail(item.as_str(), format!("federation id: {e}")),
                }
            }
            Record::RosterChange {
                participant,
                action,
                signing_key,
                ..
            } => match action {
                RosterAction::Enrol | RosterAction::Rekey => match ed25519_dalek::VerifyingKey::from_bytes(signing_key)
                {
                    Ok(k) => {
                        roster.insert(participant.clone(), k);
                    }
                    Err(_) => report.fail(item.as_str(), "signing key is not an ed25519 key"),
                },
                RosterAction::Revoke => {
                    if roster.remove(participant).is_none() {
                        report.fail(item.as_str(), "revokes a participant that is not enrolled");
                    }
                }
            },
            Record::Contribution {
                round,
                participant,
                payload_digest: digest,
                sequence,
                signature,
                ..
            }
            | Record::RoundReport {
                round,
                participant,
                message_digest: digest,
                sequence,
                signature,
                ..
            }
            | Record::Abstention {
                round,
                participant,
                message_digest: digest,
                sequence,
                signature,
                ..
            } => {
                let domain = match rec.kind() {
                    RecordKind::Contribution => SOFT_LABELS_DOMAIN,
                    RecordKind::RoundReport => ROUND_REPORT_DOMAIN,
                    _ => ABSTAIN_DOMAIN,
                };
                let (Some(fed), Some(key)) = (federation.as_ref(), roster.get(participant)) else {
                    report.fail(
                        item.as_str(),
                        format!("{participant} is not an enrolled participant here"),
                    );
                    continue;
                };
                if !participant_signature_verifies(key, domain, participant, fed, *round, *sequence, digest, signature)
                {
                    report.fail(item.as_str(), format!("signature of {participant} does not verify"));
                }
                report.record_signatures += 1;
            }
            Record::TaskDeclared {
                name,
                card_digest,
                public_digest,
                ..
            } => {
                // Declared once, when the federation starts (right after it is created).
                if i != 1 || report.task.is_some() {
                    report.fail(
                        item.as_str(),
                        "a task is declared only once, right after the federation is created",
                    );
                    continue;
                }
                task_public = Some(*public_digest);
                report.task = Some((name.clone(), *card_digest));
            }
            Record::RoundOpened {
                round,
                public_set_digest,
                ..
            } => {
                if let Some(want) = task_public {
                    if *public_set_digest != want {
                        report.fail(
                            item.as_str(),
                            format!(
                                "round {round} opened on public set {}, not the declared task's {}",
                                public_set_digest.to_hex(),
                                want.to_hex()
                            ),
                        );
                    }
                }
            }
            Record::Aggregate { signature, .. } => {
                let Some(fed) = federation.as_ref() else {
                    report.fail(item.as_str(), "aggregate before the federation was created");
                    continue;
                };
                match rec.statement(fed.as_str()) {
                    Ok(Some(msg)) if verify_sig(&trust.log.key, &msg, signature) => {}
                    _ => report.fail(item.as_str(), "coordinator signature does not verify"),
                }
                report.record_signatures += 1;
            }
            _ => {}
        }
    }
    policy.finish(records, report);
}

/// Checks a participant's envelope signature as logged: the protocol 3 layout, which covers the signer's
/// identity ([`envelope_signing_bytes`]), or the protocol 2 layout without it ([`signing_bytes`]) so that
/// logs written before version 3 still verify. Both are sound offline: the key is the roster's key of the
/// participant the record names, so a signature by any other participant's key fails either way.
#[allow(clippy::too_many_arguments)]
pub(super) fn participant_signature_verifies(
    key: &ed25519_dalek::VerifyingKey,
    domain: &str,
    participant: &ParticipantId,
    federation: &FederationId,
    round: RoundId,
    sequence: u64,
    digest: &crate::crypto::Digest,
    signature: &[u8],
) -> bool {
    let signer = Signer::Participant(participant.clone());
    verify_sig(
        key,
        &envelope_signing_bytes(domain, &signer, federation, round, sequence, digest),
        signature,
    ) || verify_sig(
        key,
        &signing_bytes(domain, federation, round, sequence, digest),
        signature,
    )
}

/// `verify_strict` of a 64-byte signature; any other length does not verify.
fn verify_sig(key: &ed25519_dalek::VerifyingKey, msg: &[u8], sig: &[u8]) -> bool {
    let Ok(sig) = <[u8; 64]>::try_from(sig) else {
        return false;
    };
    key.verify_strict(msg, &ed25519_dalek::Signature::from_bytes(&sig))
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    /// The records stage alone over `rest` after the preamble (federation, bank-a..d enrolled).
    fn walk(rest: Vec<Record>) -> Report {
        let mut records = preamble();
        records.extend(rest);
        let mut r = Report::default();
        check_records(&decoded(&records), &trust(0), &mut r);
        r
    }

    fn task(public: &[u8]) -> Record {
        Record::TaskDeclared {
            name: "lending".into(),
            card_digest: crate::crypto::Digest::of(b"card"),
            public_digest: crate::crypto::Digest::of(public),
            public_rows: 100,
        }
    }

    fn opened(round: u64, public: &[u8]) -> Record {
        Record::RoundOpened {
            round: RoundId(round),
            public_set_digest: crate::crypto::Digest::of(public),
            sample_ids_digest: crate::crypto::Digest::of(b"ids"),
            temperature: 2.0,
            rule: crate::ledger::RuleName::parse("mean").expect("valid rule"),
            deadline_unix_ms: 1,
            quorum: 1,
        }
    }

    /// The records stage over federation, `task`, the roster, then `rest`.
    fn walk_with_task(task: Record, rest: Vec<Record>) -> Report {
        let mut records = preamble();
        records.insert(1, task);
        records.extend(rest);
        let mut r = Report::default();
        check_records(&decoded(&records), &trust(0), &mut r);
        r
    }

    #[test]
    fn a_declared_task_binds_every_round_to_its_public_set() {
        let r = walk_with_task(task(b"public"), vec![opened(1, b"public"), opened(2, b"public")]);
        assert!(r.ok(), "{:?}", lines(&r));
        assert_eq!(r.task.as_ref().map(|t| t.0.as_str()), Some("lending"));
        let r = walk_with_task(task(b"public"), vec![opened(1, b"public"), opened(2, b"another file")]);
        assert_eq!(lines(&r).len(), 1, "{:?}", lines(&r));
        assert!(lines(&r)[0].contains("round 2 opened on public set"), "{:?}", lines(&r));
        assert!(lines(&r)[0].contains("not the declared task's"), "{:?}", lines(&r));
    }

    #[test]
    fn a_task_declared_late_or_twice_is_refused() {
        let r = walk(vec![task(b"public")]);
        assert!(lines(&r)[0].contains("a task is declared only once"), "{:?}", lines(&r));
        let r = walk_with_task(task(b"public"), vec![task(b"other")]);
        assert_eq!(lines(&r).len(), 1, "{:?}", lines(&r));
        assert!(lines(&r)[0].contains("a task is declared only once"), "{:?}", lines(&r));
        // Without a declared task, rounds on any public set are accepted (logs of catalog federations).
        assert!(walk(vec![opened(1, b"x"), opened(2, b"y")]).ok());
    }

    #[test]
    fn framing_errors_name_the_record() {
        let mut r = Report::default();
        let framed = [&3u32.to_be_bytes()[..], b"abc", &5u32.to_be_bytes()[..], b"de"].concat();
        assert_eq!(split_records(&framed, &mut r), vec![b"abc".to_vec()]);
        assert_eq!(
            lines(&r),
            vec!["record 1: records.bin truncated: record at offset 7 declares 5 bytes"]
        );
        let mut r = Report::default();
        let framed = [&3u32.to_be_bytes()[..], b"abc", &[0, 0][..]].concat();
        assert_eq!(split_records(&framed, &mut r), vec![b"abc".to_vec()]);
        assert_eq!(
            lines(&r),
            vec!["record 1: records.bin truncated inside a length prefix at offset 7"]
        );
        let mut r = Report::default();
        assert!(split_records(&[], &mut r).is_empty());
        assert!(r.ok());
    }

    #[test]
    fn a_truncated_records_file_is_named() {
        let b = good();
        let mut t = b.clone();
        if let Some(f) = t.files.get_mut(RECORDS_FILE) {
            f.truncate(f.len() - 7);
        }
        t.reseal();
        let r = check(&t);
        assert_eq!(first(&r).item, "record 8", "{:?}", r.failures);
        assert!(first(&r).reason.contains("truncated"));
        // Truncated without resealing: the manifest names the file.
        let mut t = b.clone();
        if let Some(f) = t.files.get_mut(PROOFS_FILE) {
            f.truncate(10);
        }
        assert_eq!(first(&check(&t)).item, PROOFS_FILE);
    }

    #[test]
    fn read_records_decodes_and_names_undecodable_records() {
        let b = good();
        let mut r = Report::default();
        let log = read_records(&b, &mut r);
        assert!(r.ok(), "{:?}", r.failures);
        assert_eq!(r.records, 9);
        assert_eq!(log.raw.len(), 9);
        assert!(log.records.iter().all(Option::is_some));
        assert_eq!(log.tree.size(), 9);
        // A record that frames but does not decode: still a leaf, named by index only.
        let mut recs = records_of(&b);
        recs[2] = b"\xffnot a record".to_vec();
        let mut r = Report::default();
        let log = read_records(&with_records(&b, &recs), &mut r);
        assert_eq!(r.failures.len(), 1, "{:?}", r.failures);
        assert_eq!(first(&r).item, "record 2");
        assert!(log.records[2].is_none());
        assert_eq!(log.tree.size(), 9);
        // No records file.
        let mut t = b.clone();
        t.files.remove(RECORDS_FILE);
        let mut r = Report::default();
        let log = read_records(&t, &mut r);
        assert_eq!(lines(&r), vec!["records.bin: missing"]);
        assert!(log.raw.is_empty());
    }

    #[test]
    fn a_contribution_from_an_unenrolled_or_wrong_key_is_named() {
        let mut f = fixture(&[31, 32], None);
        if let Record::Contribution { signature, .. } = &mut f.records[5] {
            signature[0] ^= 1;
        }
        // Re-sign the log over the altered records (a coordinator forging a contribution).
        let signer = LogSigner::new(ORIGIN, key(1)).expect("name");
        let mut tree = MemoryTree::new();
        for r in &f.records {
            tree.push(&r.encode().expect("encodes"));
        }
        f.checkpoints = [3u64, 6, 9]
            .iter()
            .map(|&s| {
                let mut sc = signer.sign(s, tree.root(s).expect("root")).expect("sign");
                for (w, name) in [(31u8, "w-a"), (32, "w-b")] {
                    sc.add_cosignature(&Cosignature::sign(&sc.checkpoint, name, &key(w), 7).expect("cosign"));
                }
                sc
            })
            .collect();
        let r = check(&bundle_of(&f, true));
        assert_eq!(first(&r).item, "record 5 (contribution)", "{:?}", r.failures);
        assert!(first(&r).reason.contains("signature of bank-b"));
    }

    #[test]
    fn the_fixture_log_walks_cleanly_and_counts_its_signatures() {
        let f = fixture(&[31, 32], None);
        let mut r = Report::default();
        check_records(&decoded(&f.records), &trust(2), &mut r);
        assert!(r.ok(), "{:?}", r.failures);
        assert_eq!(r.record_signatures, 4, "two contributions, the aggregate, the report");
        // Undecodable records (None) are skipped: already reported by `read_records`.
        let mut recs = decoded(&f.records);
        recs[4] = None;
        let mut r = Report::default();
        check_records(&recs, &trust(2), &mut r);
        assert_eq!(r.record_signatures, 3);
    }

    #[test]
    fn federation_and_roster_rules_are_named() {
        let fed_record = preamble().remove(0);
        // The federation created twice; not first; under another coordinator key.
        let r = walk(vec![fed_record.clone()]);
        assert_eq!(
            lines(&r),
            vec!["record 5 (federation_created): federation created twice"]
        );
        let mut r = Report::default();
        check_records(
            &decoded(&[contribution_in("bank-a", 1), fed_record.clone()]),
            &trust(0),
            &mut r,
        );
        assert_eq!(
            lines(&r),
            vec![
                "record 0 (contribution): the first record must create the federation",
                "record 0 (contribution): bank-a is not an enrolled participant here",
                "record 1 (federation_created): federation created twice",
            ]
        );
        let mut r = Report::default();
        check_records(&decoded(&[fed_record]), &other_log_key_trust(), &mut r);
        assert_eq!(
            lines(&r),
            vec!["record 0 (federation_created): coordinator key differs from the trusted log key"]
        );
        // Revoking: the participant's later records are no longer accepted; revoking twice fails.
        let revoke = Record::RosterChange {
            participant: ParticipantId::new("bank-c"),
            action: RosterAction::Revoke,
            signing_key: key(23).verifying_key().to_bytes(),
            cert_fingerprint: Digest::of(b"bank-c"),
            reason: "left".into(),
        };
        let r = walk(vec![revoke.clone(), contribution_in("bank-c", 1), revoke]);
        assert_eq!(
            lines(&r),
            vec![
                "record 6 (contribution): bank-c is not an enrolled participant here",
                "record 7 (roster_change): revokes a participant that is not enrolled",
            ]
        );
        // Rekeying: the old key no longer signs.
        let rekey = Record::RosterChange {
            participant: ParticipantId::new("bank-a"),
            action: RosterAction::Rekey,
            signing_key: key(77).verifying_key().to_bytes(),
            cert_fingerprint: Digest::of(b"bank-a"),
            reason: "rotated".into(),
        };
        let r = walk(vec![rekey, contribution_in("bank-a", 1)]);
        assert_eq!(
            lines(&r),
            vec!["record 6 (contribution): signature of bank-a does not verify"]
        );
        assert_eq!(
            r.record_signatures, 1,
            "a failed signature is still a signature checked"
        );
    }

    #[test]
    fn an_aggregate_needs_the_federation_and_the_coordinators_signature() {
        let mut forged = aggregate_in(1, &ALL);
        if let Record::Aggregate { signature, .. } = &mut forged {
            signature[10] ^= 1;
        }
        let r = walk(vec![forged]);
        assert_eq!(
            lines(&r),
            vec!["record 5 (aggregate): coordinator signature does not verify"]
        );
        let mut r = Report::default();
        check_records(&decoded(&[aggregate_in(1, &[])]), &trust(0), &mut r);
        assert_eq!(
            lines(&r),
            vec![
                "record 0 (aggregate): the first record must create the federation",
                "record 0 (aggregate): aggregate before the federation was created",
            ]
        );
        assert_eq!(r.record_signatures, 0);
    }

    /// Protocol 3 signatures cover the signer's identity; protocol 2 signatures (logs written before
    /// version 3) do not; both verify under the participant's own key, no other.
    #[test]
    fn participant_signatures_verify_in_both_protocol_layouts() {
        let d = Digest::of(b"payload");
        let who = ParticipantId::new("bank-a");
        let signer = Signer::Participant(who.clone());
        let v3 = key(21)
            .sign(&envelope_signing_bytes(
                SOFT_LABELS_DOMAIN,
                &signer,
                &fed(),
                RoundId(4),
                9,
                &d,
            ))
            .to_bytes();
        let v2 = key(21)
            .sign(&signing_bytes(SOFT_LABELS_DOMAIN, &fed(), RoundId(4), 9, &d))
            .to_bytes();
        let k = key(21).verifying_key();
        let ok = |sig: &[u8], domain: &str, who: &ParticipantId, round: u64, seq: u64| {
            participant_signature_verifies(&k, domain, who, &fed(), RoundId(round), seq, &d, sig)
        };
        assert!(ok(&v3, SOFT_LABELS_DOMAIN, &who, 4, 9));
        assert!(ok(&v2, SOFT_LABELS_DOMAIN, &who, 4, 9));
        // The v3 layout names the signer: the same bytes claimed for another participant fail.
        assert!(!ok(&v3, SOFT_LABELS_DOMAIN, &ParticipantId::new("bank-b"), 4, 9));
        for sig in [&v3, &v2] {
            assert!(!ok(sig, ROUND_REPORT_DOMAIN, &who, 4, 9), "another domain");
            assert!(!ok(sig, SOFT_LABELS_DOMAIN, &who, 5, 9), "another round");
            assert!(!ok(sig, SOFT_LABELS_DOMAIN, &who, 4, 10), "another sequence");
            assert!(!ok(&sig[..63], SOFT_LABELS_DOMAIN, &who, 4, 9), "a short signature");
        }
        let other = key(22).verifying_key();
        assert!(!participant_signature_verifies(
            &other,
            SOFT_LABELS_DOMAIN,
            &who,
            &fed(),
            RoundId(4),
            9,
            &d,
            &v3
        ));
        // In a log: a protocol 3 contribution verifies like a protocol 2 one.
        let Record::Contribution {
            payload_digest,
            sequence,
            ..
        } = contribution_in("bank-b", 1)
        else {
            unreachable!()
        };
        let sig = key(22).sign(&envelope_signing_bytes(
            SOFT_LABELS_DOMAIN,
            &Signer::Participant(ParticipantId::new("bank-b")),
            &fed(),
            RoundId(1),
            sequence,
            &payload_digest,
        ));
        let v3_record = Record::Contribution {
            round: RoundId(1),
            participant: ParticipantId::new("bank-b"),
            encoding: EncodingName::parse("f32").expect("valid encoding"),
            payload_digest,
            sequence,
            signature: sig.to_bytes().to_vec(),
        };
        let r = walk(vec![v3_record, contribution_in("bank-a", 1)]);
        assert!(r.ok(), "{:?}", r.failures);
        assert_eq!(r.record_signatures, 2);
    }
}
