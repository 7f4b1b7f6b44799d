//! Stage 3, checkpoints and cosignatures: the signed checkpoint notes of the bundle, the witness
//! quorum on the head, and the auditor's expected checkpoint (`--expect-checkpoint`).

use super::bundle::checkpoint_file_name;
use super::{Bundle, Report, CHECKPOINTS_DIR};
use crate::ledger::note::{Cosigners, Trust};
use crate::ledger::tree::MemoryTree;
use crate::ledger::SignedCheckpoint;
use std::collections::BTreeMap;

/// Item name of failures about [`VerifyOptions::expect_checkpoint`](super::VerifyOptions::expect_checkpoint).
pub const EXPECTED_CHECKPOINT_ITEM: &str = "expected checkpoint";

/// A checkpoint whose log signature (and every cosignature on it) verified.
pub(super) struct VerifiedCheckpoint {
    /// Its file name in the bundle.
    pub(super) name: String,
    pub(super) signed: SignedCheckpoint,
    /// The trusted witnesses whose cosignatures verified.
    pub(super) cosigners: Cosigners,
}

/// The verified checkpoints, one per size (the first of a fork, by file name, stays).
pub(super) struct CheckpointChain {
    pub(super) by_size: BTreeMap<u64, VerifiedCheckpoint>,
}

impl CheckpointChain {
    /// The largest checkpoint; [`check_checkpoints`] hands on only chains that have one.
    pub(super) fn head(&self) -> Option<&VerifiedCheckpoint> {
        self.by_size.values().next_back()
    }
}

/// Stage 3: parses every `checkpoints/*.note`, checks that its name matches its size and root, that
/// the log signed it and that every cosignature on it verifies, and that no size has two roots (a
/// FORK). Sets `report.checkpoints` and `report.head`. Returns `None` (after reporting it) when no
/// checkpoint verifies: nothing else can be checked then.
pub(super) fn check_checkpoints(bundle: &Bundle, trust: &Trust, report: &mut Report) -> Option<CheckpointChain> {
    let mut valid: Vec<VerifiedCheckpoint> = Vec::new();
    for (name, bytes) in bundle.files_under(CHECKPOINTS_DIR) {
        let sc = match SignedCheckpoint::parse(bytes) {
            Ok(sc) => sc,
            Err(e) => {
                report.fail(name.as_str(), e.to_string());
                continue;
            }
        };
        if checkpoint_file_name(&sc.checkpoint) != *name {
            report.fail(name.as_str(), "file name does not match the checkpoint's size and root");
            continue;
        }
        match trust.verify_quorum(&sc) {
            Ok(cosigners) => valid.push(VerifiedCheckpoint {
                name: name.clone(),
                signed: sc,
                cosigners,
            }),
            Err(e) => report.fail(name.as_str(), e.to_string()),
        }
    }
    valid.sort_by(|a, b| {
        a.signed
            .checkpoint
            .size
            .cmp(&b.signed.checkpoint.size)
            .then(a.name.cmp(&b.name))
    });
    report.checkpoints = valid.len();
    let mut by_size: BTreeMap<u64, VerifiedCheckpoint> = BTreeMap::new();
    for cp in valid {
        let size = cp.signed.checkpoint.size;
        if let Some(prev) = by_size.get(&size) {
            report.fail(
                cp.name.as_str(),
                format!(
                    "FORK: log signed two roots for size {size}: {} and {}",
                    prev.name, cp.name
                ),
            );
        } else {
            by_size.insert(size, cp);
        }
    }
    let chain = CheckpointChain { by_size };
    let Some(head) = chain.head() else {
        report.fail(CHECKPOINTS_DIR, "no valid checkpoint signed by the trusted log key");
        return None;
    };
    report.head = Some(head.signed.checkpoint.clone());
    Some(chain)
}

/// Stage 5: the head checkpoint carries cosignatures of at least `trust.quorum` distinct trusted
/// witness keys (one key listed under two names in a trust file cosigns under both, and is still one
/// witness). Sets `report.head_cosigners`.
pub(super) fn check_head_quorum(chain: &CheckpointChain, trust: &Trust, report: &mut Report) {
    let Some(head) = chain.head() else {
        return;
    };
    let cosigners = &head.cosigners;
    report.head_cosigners = cosigners.names.clone();
    if !cosigners.meets(trust.quorum) {
        let shared = if cosigners.names.len() > cosigners.distinct_keys {
            format!(
                " ({} names, but only {} distinct keys)",
                cosigners.names.len(),
                cosigners.distinct_keys
            )
        } else {
            String::new()
        };
        report.fail(
            head.name.as_str(),
            format!(
                "witness quorum not met: {} of the required {} trusted witnesses cosigned the head checkpoint{shared}",
                cosigners.distinct_keys, trust.quorum
            ),
        );
    }
}

/// `--expect-checkpoint`: `expected` verifies under the trusted log key and the bundle (its records
/// `raw` and the head `verify` found) extends it; sets `report.extends` when it does.
pub(super) fn check_extends(raw: &[Vec<u8>], trust: &Trust, expected: &SignedCheckpoint, report: &mut Report) {
    let exp = &expected.checkpoint;
    if let Err(e) = trust.log.verify(expected) {
        report.fail(
            EXPECTED_CHECKPOINT_ITEM,
            format!("does not verify under the trusted log key: {e}"),
        );
        return;
    }
    let not_extended = |has: String| {
        format!(
            "bundle does not extend the expected checkpoint: size {} root {}, bundle has {has}",
            exp.size, exp.root
        )
    };
    let Some(head) = report.head.clone() else {
        report.fail(EXPECTED_CHECKPOINT_ITEM, not_extended("no valid checkpoint".into()));
        return;
    };
    if head.size < exp.size {
        report.fail(
            EXPECTED_CHECKPOINT_ITEM,
            not_extended(format!(
                "size {} root {} (an earlier state of the log: cut back or rolled back)",
                head.size, head.root
            )),
        );
        return;
    }
    // The bundle holds every record, so recompute the root at the expected size from its leaves
    // (stronger than a consistency proof the bundle would have to supply).
    let Ok(size) = usize::try_from(exp.size) else {
        report.fail(EXPECTED_CHECKPOINT_ITEM, not_extended("fewer records".into()));
        return;
    };
    let Some(leaves) = raw.get(..size) else {
        report.fail(
            EXPECTED_CHECKPOINT_ITEM,
            not_extended(format!(
                "only {} records (head size {} root {})",
                raw.len(),
                head.size,
                head.root
            )),
        );
        return;
    };
    let mut tree = MemoryTree::new();
    for leaf in leaves {
        tree.push(leaf);
    }
    match tree.root(exp.size) {
        Ok(root) if root == exp.root && (head.size > exp.size || head.root == exp.root) => {
            report.extends = Some(exp.clone());
        }
        Ok(root) => report.fail(
            EXPECTED_CHECKPOINT_ITEM,
            not_extended(format!(
                "root {root} at size {} (head size {} root {}): a different history, a FORK",
                exp.size, head.size, head.root
            )),
        ),
        Err(e) => report.fail(
            EXPECTED_CHECKPOINT_ITEM,
            not_extended(format!("no root at size {}: {e}", exp.size)),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    /// The checkpoint stage alone: its failures and the chain it hands on.
    fn stage(b: &Bundle, t: &Trust) -> (Report, Option<CheckpointChain>) {
        let mut r = Report::default();
        let chain = check_checkpoints(b, t, &mut r);
        (r, chain)
    }

    #[test]
    fn valid_checkpoints_form_a_chain_with_the_largest_as_head() {
        let f = fixture(&[31, 32], None);
        let (r, chain) = stage(&bundle_of(&f, true), &trust(2));
        assert!(r.ok(), "{:?}", r.failures);
        let chain = chain.expect("a head");
        assert_eq!(chain.by_size.keys().copied().collect::<Vec<_>>(), vec![3, 6, 9]);
        assert_eq!(r.checkpoints, 3);
        assert_eq!(r.head.as_ref(), Some(&f.checkpoints[2].checkpoint));
        let head = chain.head().expect("head");
        assert_eq!(head.name, checkpoint_file_name(&f.checkpoints[2].checkpoint));
        assert_eq!(head.cosigners.names, vec!["w-a".to_string(), "w-b".to_string()]);
    }

    #[test]
    fn no_valid_checkpoint_stops_verification() {
        let (r, chain) = stage(&good(), &other_log_key_trust());
        assert!(chain.is_none());
        assert_eq!(r.checkpoints, 0);
        assert_eq!(r.head, None);
        assert_eq!(
            r.failures.len(),
            4,
            "three bad signatures and no head: {:?}",
            r.failures
        );
        assert_eq!(r.failures[3].item, CHECKPOINTS_DIR);
        assert_eq!(
            r.failures[3].reason,
            "no valid checkpoint signed by the trusted log key"
        );
    }

    #[test]
    fn a_misnamed_or_unparsable_checkpoint_is_named() {
        let f = fixture(&[31, 32], None);
        let b = bundle_of(&f, true);
        let mut t = b.clone();
        let name = checkpoint_file_name(&f.checkpoints[0].checkpoint);
        let note = t.files.remove(&name).expect("note");
        t.files
            .insert("checkpoints/00000000000000000003-0000000000000000.note".into(), note);
        t.files
            .insert("checkpoints/garbage.note".into(), b"not a note".to_vec());
        let (r, chain) = stage(&t, &trust(2));
        let lines = lines(&r);
        assert!(
            lines.contains(&"checkpoints/00000000000000000003-0000000000000000.note: file name does not match the checkpoint's size and root".to_string()),
            "{lines:?}"
        );
        assert!(
            lines.iter().any(|l| l.starts_with("checkpoints/garbage.note: ")),
            "{lines:?}"
        );
        assert_eq!(r.failures.len(), 2, "{lines:?}");
        assert_eq!(chain.expect("a head").by_size.len(), 2, "sizes 6 and 9 remain");
    }

    #[test]
    fn a_checkpoint_signed_by_another_key_is_named() {
        let f = fixture(&[31, 32], None);
        let b = bundle_of(&f, true);
        let head = &f.checkpoints[2];
        let forged = LogSigner::new(ORIGIN, key(9))
            .expect("name")
            .sign(head.checkpoint.size, head.checkpoint.root)
            .expect("sign");
        let r = check(&replace_checkpoint(&b, head, &forged));
        assert_eq!(
            first(&r).item,
            checkpoint_file_name(&head.checkpoint),
            "{:?}",
            r.failures
        );
        assert!(
            first(&r).reason.contains("not signed by the log key"),
            "{}",
            first(&r).reason
        );
    }

    #[test]
    fn a_forged_cosignature_is_named() {
        let f = fixture(&[31], None);
        let b = bundle_of(&f, true);
        let head = &f.checkpoints[2];
        let mut forged = head.clone();
        let mut c = Cosignature::sign(&head.checkpoint, "w-b", &key(99), 5).expect("cosign");
        c.key_id = trust(2).witnesses[1].key_id();
        forged.add_cosignature(&c);
        let r = check(&replace_checkpoint(&b, head, &forged));
        assert_eq!(
            first(&r).item,
            checkpoint_file_name(&head.checkpoint),
            "{:?}",
            r.failures
        );
        assert!(
            first(&r).reason.contains("bad signature from w-b"),
            "{}",
            first(&r).reason
        );
    }

    #[test]
    fn a_fork_is_detected_and_named() {
        let f = fixture(&[31, 32], None);
        let mut b = bundle_of(&f, true);
        let other = LogSigner::new(ORIGIN, key(1))
            .expect("name")
            .sign(6, Digest::of(b"other root"))
            .expect("sign");
        b.files
            .insert(checkpoint_file_name(&other.checkpoint), other.to_note().expect("note"));
        b.reseal();
        let r = check(&b);
        let fork = r
            .failures
            .iter()
            .find(|x| x.reason.contains("FORK"))
            .expect("fork reported");
        assert!(fork.reason.contains("size 6"), "{}", fork.reason);
        // The stage alone: both count as verified, one stays in the chain.
        let (r, chain) = stage(&b, &trust(2));
        assert_eq!(r.checkpoints, 4);
        assert_eq!(r.failures.len(), 1, "{:?}", r.failures);
        assert_eq!(chain.expect("a head").by_size.len(), 3);
    }

    #[test]
    fn witness_quorum_failure_is_reported() {
        let f = fixture(&[31], None);
        let b = bundle_of(&f, true);
        let r = check(&b);
        assert_eq!(r.failures.len(), 1, "{:?}", r.failures);
        assert_eq!(first(&r).item, checkpoint_file_name(&f.checkpoints[2].checkpoint));
        assert!(first(&r).reason.contains("quorum"), "{}", first(&r).reason);
        assert!(verify(&b, &trust(1), Some(&ProtocolRecompute)).ok(), "1-of-2 is met");
    }

    #[test]
    fn the_quorum_stage_counts_the_heads_distinct_cosigning_keys() {
        let (_, chain) = stage(&bundle_of(&fixture(&[31], None), true), &trust(2));
        let chain = chain.expect("a head");
        for (quorum, ok) in [(0, true), (1, true), (2, false)] {
            let mut r = Report::default();
            check_head_quorum(&chain, &trust(quorum), &mut r);
            assert_eq!(r.ok(), ok, "quorum {quorum}: {:?}", r.failures);
            assert_eq!(r.head_cosigners, vec!["w-a".to_string()]);
        }
        let mut r = Report::default();
        check_head_quorum(&chain, &trust(2), &mut r);
        assert_eq!(
            first(&r).reason,
            "witness quorum not met: 1 of the required 2 trusted witnesses cosigned the head checkpoint"
        );
    }

    /// A trust list naming key 31 twice ("w-a" and "w-b"): one key cosigning under both names is
    /// still one witness, so a quorum of 2 is not met.
    #[test]
    fn one_witness_key_under_two_names_does_not_meet_a_quorum_of_two() {
        let f = fixture(&[31], None);
        let b = bundle_of(&f, true);
        let head = &f.checkpoints[2];
        let mut twice = head.clone();
        twice.add_cosignature(&Cosignature::sign(&head.checkpoint, "w-b", &key(31), 5).expect("cosign"));
        let b = replace_checkpoint(&b, head, &twice);
        let mut t = trust(2);
        t.witnesses[1].key = key(31).verifying_key();
        let r = verify(&b, &t, Some(&ProtocolRecompute));
        assert_eq!(r.failures.len(), 1, "{:?}", r.failures);
        assert_eq!(first(&r).item, checkpoint_file_name(&head.checkpoint));
        assert!(
            first(&r).reason.contains("witness quorum not met: 1 of the required 2"),
            "{}",
            first(&r).reason
        );
        assert!(
            first(&r).reason.contains("2 names, but only 1 distinct keys"),
            "{}",
            first(&r).reason
        );
        t.quorum = 1;
        assert!(verify(&b, &t, Some(&ProtocolRecompute)).ok());
    }

    fn expecting(b: &Bundle, t: &Trust, expected: &SignedCheckpoint) -> Report {
        let opts = VerifyOptions {
            expect_checkpoint: Some(expected.clone()),
            require_payloads: false,
        };
        verify_with(b, t, Some(&ProtocolRecompute), &opts)
    }

    /// A bundle cut back to an earlier signed checkpoint is a consistent prefix and verifies on its
    /// own; only the checkpoint the auditor expected shows that it is not the whole log.
    #[test]
    fn a_bundle_cut_back_before_the_expected_checkpoint_fails() {
        let f = fixture(&[31, 32], None);
        let full = bundle_of(&f, true);
        let cut = Bundle::build(ExportInput {
            records: f.records[..6].iter().map(|r| r.encode().expect("encodes")).collect(),
            checkpoints: f.checkpoints[..2].to_vec(),
            payloads: Some(f.payloads.clone()),
        })
        .expect("builds");
        let t = trust(1);
        let plain = verify(&cut, &t, Some(&ProtocolRecompute));
        assert!(plain.ok(), "{:?}", plain.failures);
        let later = &f.checkpoints[2];
        let r = expecting(&cut, &t, later);
        assert_eq!(r.failures.len(), 1, "{:?}", r.failures);
        assert_eq!(first(&r).item, EXPECTED_CHECKPOINT_ITEM);
        let want = format!(
            "bundle does not extend the expected checkpoint: size 9 root {}, bundle has size 6 root {}",
            later.checkpoint.root, f.checkpoints[1].checkpoint.root
        );
        assert!(first(&r).reason.starts_with(&want), "{}", first(&r).reason);
        assert_eq!(r.extends, None);
        // The full bundle extends the later checkpoint (equal size) and the earlier ones (larger).
        for cp in &f.checkpoints {
            let r = expecting(&full, &t, cp);
            assert!(r.ok(), "size {}: {:?}", cp.checkpoint.size, r.failures);
            assert_eq!(r.extends.as_ref(), Some(&cp.checkpoint));
        }
        // A cosignature-free copy (just the log's signature) is enough.
        assert!(expecting(&full, &t, &later.without_cosignatures()).ok());
    }

    #[test]
    fn an_expected_checkpoint_of_another_history_or_key_fails() {
        let f = fixture(&[31, 32], None);
        let b = bundle_of(&f, true);
        let t = trust(2);
        let signer = LogSigner::new(ORIGIN, key(1)).expect("name");
        // Same log key, a root at size 6 that the bundle's records do not produce: a fork.
        let other = signer.sign(6, Digest::of(b"another history")).expect("sign");
        let r = expecting(&b, &t, &other);
        assert_eq!(r.failures.len(), 1, "{:?}", r.failures);
        assert!(
            first(&r)
                .reason
                .contains("bundle does not extend the expected checkpoint: size 6 root"),
            "{}",
            first(&r).reason
        );
        assert!(first(&r).reason.contains("FORK"), "{}", first(&r).reason);
        // Same size as the head, different root.
        let other = signer.sign(9, Digest::of(b"another head")).expect("sign");
        assert!(expecting(&b, &t, &other).failures[0].reason.contains("FORK"));
        // Signed by another key: not evidence of anything.
        let forged = LogSigner::new(ORIGIN, key(9))
            .expect("name")
            .sign(20, Digest::of(b"r"))
            .expect("sign");
        let r = expecting(&b, &t, &forged);
        assert_eq!(first(&r).item, EXPECTED_CHECKPOINT_ITEM);
        assert!(
            first(&r).reason.contains("does not verify under the trusted log key"),
            "{}",
            first(&r).reason
        );
    }

    /// `check_extends` alone, on a report whose head it is given: no head, fewer records than the
    /// expected size, and success.
    #[test]
    fn check_extends_needs_a_head_and_the_records() {
        let f = fixture(&[31, 32], None);
        let raw = records_of(&bundle_of(&f, true));
        let t = trust(2);
        let expected = &f.checkpoints[1];
        let mut r = Report::default();
        check_extends(&raw, &t, expected, &mut r);
        assert!(
            first(&r).reason.ends_with("bundle has no valid checkpoint"),
            "{}",
            first(&r).reason
        );
        let mut r = Report {
            head: Some(f.checkpoints[2].checkpoint.clone()),
            ..Report::default()
        };
        check_extends(&raw[..4], &t, expected, &mut r);
        assert!(
            first(&r).reason.contains("only 4 records (head size 9"),
            "{}",
            first(&r).reason
        );
        let mut r = Report {
            head: Some(f.checkpoints[2].checkpoint.clone()),
            ..Report::default()
        };
        check_extends(&raw, &t, expected, &mut r);
        assert!(r.ok(), "{:?}", r.failures);
        assert_eq!(r.extends.as_ref(), Some(&expected.checkpoint));
    }
}
