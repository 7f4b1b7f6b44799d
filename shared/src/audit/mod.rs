//! Audit bundles: the export format of the coordinator's update log and its offline verification
//! (`fedistill audit export|verify|show`).
//!
//! A bundle is a directory (layout in docs/security.md, "The update log"):
//! `manifest.json` (format, whether payloads are included, SHA-256 of every other file),
//! `records.bin` (each canonical record as `u32 BE length || bytes`, in log order),
//! `checkpoints/<size:020>-<root hex[..16]>.note` (signed notes with witness cosignatures),
//! `proofs.json` (consistency proofs between consecutive checkpoints, an inclusion proof of every
//! record in the head checkpoint) and, optionally, `payloads/<sha256 hex>` (the signed messages).
//!
//! [`verify`] trusts nothing in the bundle: every signature is checked with `verify_strict`, every
//! proof against the signed roots, the roots against the records, the witness quorum on the head
//! checkpoint, the roster and participant signatures on every contribution and report, and (with
//! payloads and a [`Recompute`]) every aggregate bit for bit. Quarantines, releases and abstentions are
//! checked for consistency (see [`verify`]). Files are canonical (one spelling),
//! so a change to any byte is a failure. The bundle directory is read and written here; all
//! checks are pure functions of the bytes.
//!
//! Verification is a pipeline of stages, one module each, every stage a function that appends its
//! [`Failure`]s to the [`Report`] in check order:
//!
//! | stage | module | checks |
//! |---|---|---|
//! | bundle shape | `bundle` | the manifest is canonical, has the format, lists and hashes every file |
//! | records | `records` | `records.bin` framing and record decoding; then (after the proofs) federation, roster and every record signature |
//! | checkpoints | `checkpoints` | checkpoint notes: names, log signatures, cosignatures, forks, the head; the witness quorum (distinct keys) on the head; `--expect-checkpoint` |
//! | tree and proofs | `tree` | every record included in the head, consecutive checkpoints consistent, every root recomputed from the records |
//! | policy | `policy` | quarantine, release and abstention rules, fed record by record by the records walk so that failures stay in log order |
//! | aggregates | `aggregates` | payload files, payload presence (`--require-payloads`), abstention messages, aggregates recomputed bit for bit |
//!
//! `trust` parses the trust file; `timeline` prints a bundle without verifying it; `export` collects a bundle's
//! contents from a log (`fedistill audit export`).

mod aggregates;
mod bundle;
mod checkpoints;
pub mod export;
mod policy;
mod records;
pub mod report;
mod secure;
mod timeline;
mod tree;
mod trust;

#[cfg(test)]
mod testutil;

pub use aggregates::{AggregateInput, ProtocolRecompute, Recompute, SecureRound};
pub use bundle::{checkpoint_file_name, Bundle, ExportInput};
pub use checkpoints::EXPECTED_CHECKPOINT_ITEM;
pub use timeline::timeline;
pub use tree::{ConsistencyEntry, InclusionEntry, Proofs};
pub use trust::parse_trust;

use crate::ledger::note::Trust;
use crate::ledger::{Checkpoint, SignedCheckpoint};
use std::path::PathBuf;

/// Format string in `manifest.json`.
pub const BUNDLE_FORMAT: &str = "fedistill-audit-bundle/v1";
/// Manifest file name.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Records file name.
pub const RECORDS_FILE: &str = "records.bin";
/// Proofs file name.
pub const PROOFS_FILE: &str = "proofs.json";
/// Directory of signed checkpoints.
pub const CHECKPOINTS_DIR: &str = "checkpoints";
/// Directory of payloads.
pub const PAYLOADS_DIR: &str = "payloads";
/// Largest single file read from a bundle.
pub const MAX_FILE_LEN: u64 = 1 << 30;
/// Most files read from a bundle.
pub const MAX_FILES: usize = 1_000_000;
/// Signature domain of a contribution's envelope (as `wire::messages::SoftLabels`).
pub const SOFT_LABELS_DOMAIN: &str = "fedistill/soft-labels";
/// Signature domain of a round report's envelope (as `wire::messages::RoundReport`).
pub const ROUND_REPORT_DOMAIN: &str = "fedistill/round-report";
/// Signature domain of an abstention's envelope (as `wire::messages::Abstain`).
pub const ABSTAIN_DOMAIN: &str = "fedistill/abstain";

/// Why a bundle or trust file could not be read or written (verification failures are
/// [`Failure`]s in a [`Report`], not errors).
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Reading or writing a bundle file failed.
    #[error("{path}: {source}")]
    Io {
        /// File or directory.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The bundle directory holds something that is not a bundle file (symlink, deep directory,
    /// non-UTF-8 name, oversized file, too many files).
    #[error("{path}: {reason}")]
    Layout {
        /// Offending path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The output directory exists and is not empty.
    #[error("output directory {0} exists and is not empty")]
    OutputExists(PathBuf),
    /// The trust file is not valid.
    #[error("trust file: {0}")]
    Trust(String),
    /// Building a bundle failed (bad record or checkpoint from the store).
    #[error("export: {0}")]
    Export(String),
}

/// One failed check: which item (record, checkpoint file, proof…) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The offending item, e.g. `record 12 (contribution)` or `checkpoints/…note`.
    pub item: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The outcome of [`verify`]. The bundle verifies only when `failures` is empty.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Every failure, in check order (the first is the first offending item).
    pub failures: Vec<Failure>,
    /// Records in the bundle.
    pub records: u64,
    /// Checkpoints that verified.
    pub checkpoints: usize,
    /// The head (largest) checkpoint, if any verified.
    pub head: Option<Checkpoint>,
    /// Witnesses whose cosignature on the head verified.
    pub head_cosigners: Vec<String>,
    /// Aggregates recomputed bit for bit.
    pub aggregates_recomputed: usize,
    /// Signatures of contributions, reports and aggregates checked.
    pub record_signatures: usize,
    /// Things not checked, and why (e.g. no payloads in the bundle).
    pub notes: Vec<String>,
    /// The expected checkpoint ([`VerifyOptions::expect_checkpoint`]) the bundle was shown to extend.
    pub extends: Option<Checkpoint>,
    /// With [`VerifyOptions::require_payloads`]: how many record payloads were required and present.
    pub payloads_present: Option<usize>,
    /// The task the log declares (`task_declared`): name and card digest, when the federation ran from a
    /// task card.
    pub task: Option<(String, crate::crypto::Digest)>,
}

impl Report {
    /// True when nothing failed.
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }

    fn fail(&mut self, item: impl Into<String>, reason: impl Into<String>) {
        self.failures.push(Failure {
            item: item.into(),
            reason: reason.into(),
        });
    }
}

/// Verifies a bundle against `trust`; `recompute` checks aggregates bit for bit when the bundle
/// holds payloads. Never panics on any input; see [`Report`].
///
/// Robustness and budget records are checked for consistency with the rest of the log: a `quarantine`
/// names an enrolled participant that is in its round's (earlier) aggregate and not already quarantined,
/// and its evidence shows `ewma_score > threshold`, with (when the policy figures are present) `threshold
/// == max(policy_factor x median_score, policy_floor)` recomputed bit for bit and `strikes >=
/// policy_consecutive`; a quarantined participant has no contribution and is in no aggregate of a later
/// round until a `quarantine_release` that names its quarantine round, follows its own round's aggregate
/// and comes no earlier than `quarantined_round + after_rounds`; an `abstention` carries the participant's
/// signature over the `fedistill/abstain` domain, the participant has no contribution in and is in no
/// aggregate of that round, and (with payloads) its stored `Abstain` message says what the record says.
/// Scores are not replayed: the distances behind them are not in the log.
pub fn verify(bundle: &Bundle, trust: &Trust, recompute: Option<&dyn Recompute>) -> Report {
    let mut report = Report::default();
    // 1. Bundle shape: the manifest is canonical, complete, every file hashed.
    let manifest = bundle::check_manifest(bundle, &mut report);
    // 2. Records: framing and decoding (the Merkle tree of the leaves is built as they are read).
    let log = records::read_records(bundle, &mut report);
    // 3. Checkpoints: names, log signatures, cosignatures, forks; without a head nothing else can be checked.
    let Some(checkpoints) = checkpoints::check_checkpoints(bundle, trust, &mut report) else {
        return report;
    };
    // 4. Tree and proofs: every record included in the head; consecutive checkpoints consistent;
    // every root recomputed from the records.
    tree::check_proofs(bundle, &log, &checkpoints, &mut report);
    // 5. Witness quorum on the head, by distinct keys.
    checkpoints::check_head_quorum(&checkpoints, trust, &mut report);
    // 6. Record semantics: federation, roster, signatures, with the quarantine and abstention policy
    // fed in the same walk (failures in log order).
    records::check_records(&log.records, trust, &mut report);
    // 7. Payloads and aggregates.
    aggregates::check_payloads_and_aggregates(bundle, manifest.as_ref(), &log.records, recompute, &mut report);
    report
}

/// What an auditor demands beyond [`verify`] (`fedistill audit verify --expect-checkpoint FILE
/// --require-payloads`). A bundle is self-consistent on its own; only these tie it to something the
/// auditor obtained elsewhere.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// A signed checkpoint obtained independently of the bundle (from a witness, or the head of an
    /// earlier audit). Its log signature must verify under the trusted log key and the bundle must
    /// extend it: the bundle's head is at least as large, and the root recomputed from the bundle's
    /// first `size` records equals its root. Without it, a bundle cut back to an earlier signed
    /// checkpoint verifies (it is a consistent prefix of the log). Cosignature lines on it are not
    /// needed and not checked.
    pub expect_checkpoint: Option<SignedCheckpoint>,
    /// Fail unless every record that names a payload (a contribution's soft labels, a round report's
    /// or an abstention's signed message) has that payload in the bundle; without payloads,
    /// aggregates cannot be recomputed and abstentions cannot be compared with their messages.
    pub require_payloads: bool,
}

/// [`verify`], then the auditor's own demands in `opts`; their failures come after the bundle's own.
pub fn verify_with(bundle: &Bundle, trust: &Trust, recompute: Option<&dyn Recompute>, opts: &VerifyOptions) -> Report {
    let mut report = verify(bundle, trust, recompute);
    if opts.expect_checkpoint.is_none() && !opts.require_payloads {
        return report;
    }
    // Framing failures were reported by `verify`; here only the records read before them count.
    let raw = bundle
        .files
        .get(RECORDS_FILE)
        .map(|b| records::split_records(b, &mut Report::default()))
        .unwrap_or_default();
    if let Some(expected) = &opts.expect_checkpoint {
        checkpoints::check_extends(&raw, trust, expected, &mut report);
    }
    if opts.require_payloads {
        aggregates::check_payloads_present(bundle, &raw, &mut report);
    }
    report
}

#[cfg(test)]
mod tests {
    use super::testutil::*;

    #[test]
    fn an_untouched_bundle_verifies_completely() {
        let r = check(&good());
        assert!(r.ok(), "{:?}", r.failures);
        assert_eq!(r.records, 9);
        assert_eq!(r.checkpoints, 3);
        assert_eq!(r.head.as_ref().map(|h| h.size), Some(9));
        assert_eq!(r.head_cosigners, vec!["w-a".to_string(), "w-b".to_string()]);
        assert_eq!(r.aggregates_recomputed, 1);
        assert_eq!(r.record_signatures, 4);
        // Without payloads it still verifies, and says what it skipped.
        let r = check(&bundle_of(&fixture(&[31, 32], None), false));
        assert!(r.ok(), "{:?}", r.failures);
        assert_eq!(r.aggregates_recomputed, 0);
        assert!(!r.notes.is_empty());
    }

    /// Every byte of every file, changed to another value, fails verification: the manifest's
    /// bytes as found, every other file's bytes with the manifest rewritten to match (so the
    /// signature, proof and content checks alone must catch it). `proofs.json` is sampled (300
    /// seeded positions) to keep the test to seconds in debug builds; a one-off run over every
    /// byte of it with three different flips also passed.
    #[test]
    fn every_single_byte_change_fails() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x5eed);
        let b = good();
        let mut tried = 0;
        for (name, bytes) in &b.files {
            let positions: Vec<usize> = if name == PROOFS_FILE {
                (0..300).map(|_| rng.random_range(0..bytes.len())).collect()
            } else {
                (0..bytes.len()).collect()
            };
            for pos in positions {
                let flip: u8 = rng.random_range(1..=255);
                let mut t = b.clone();
                if let Some(f) = t.files.get_mut(name) {
                    f[pos] ^= flip;
                }
                if name != MANIFEST_FILE {
                    t.reseal();
                }
                let r = check(&t);
                assert!(!r.ok(), "{name} byte {pos} ^ {flip:#x} went unnoticed");
                tried += 1;
            }
        }
        assert!(tried > 3000, "the fixture should be a realistic size ({tried})");
        // Without resealing, the manifest names the changed file.
        for name in b.files.keys().filter(|n| *n != MANIFEST_FILE) {
            let mut t = b.clone();
            if let Some(f) = t.files.get_mut(name) {
                f[0] ^= 1;
            }
            let r = check(&t);
            assert_eq!(&first(&r).item, name, "{:?}", r.failures);
        }
    }

    /// The pipeline stops after the checkpoint stage when no checkpoint verifies: the later stages
    /// would only repeat that nothing is signed.
    #[test]
    fn without_a_valid_checkpoint_the_pipeline_stops_there() {
        let b = good();
        let r = verify(&b, &other_log_key_trust(), Some(&ProtocolRecompute));
        let last = r.failures.last().expect("fails");
        assert_eq!(last.item, CHECKPOINTS_DIR, "{:?}", r.failures);
        assert!(last.reason.contains("no valid checkpoint"), "{}", last.reason);
        assert_eq!(r.head, None);
        assert_eq!(r.record_signatures, 0, "records are not checked without a head");
        assert_eq!(r.records, 9, "records were still read");
    }

    /// `verify_with` without demands is `verify`; its own failures come after the bundle's.
    #[test]
    fn verify_with_appends_the_auditors_demands_after_the_bundles_failures() {
        let f = fixture(&[31], None);
        let b = bundle_of(&f, false);
        let plain = verify(&b, &trust(2), Some(&ProtocolRecompute));
        let same = verify_with(&b, &trust(2), Some(&ProtocolRecompute), &VerifyOptions::default());
        assert_eq!(plain.failures, same.failures);
        assert_eq!(plain.failures.len(), 1, "the quorum: {:?}", plain.failures);
        let opts = VerifyOptions {
            expect_checkpoint: None,
            require_payloads: true,
        };
        let r = verify_with(&b, &trust(2), Some(&ProtocolRecompute), &opts);
        assert_eq!(r.failures.len(), 2, "{:?}", r.failures);
        assert_eq!(r.failures[0], plain.failures[0]);
        assert_eq!(r.failures[1].item, PAYLOADS_DIR);
    }
}
