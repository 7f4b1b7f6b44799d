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

use crate::crypto::{envelope_signing_bytes, signing_bytes, FederationId, PublicKey, RoundId, Signer};
use crate::ledger::note::{check_key_name, Cosigners, Trust};
use crate::ledger::tree::{leaf_hash, verify_consistency, verify_inclusion, MemoryTree};
use crate::ledger::{
    Checkpoint, Digest, LogVerifier, ParticipantId, Record, RecordKind, RosterAction, SignedCheckpoint, WitnessKey,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

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

/// One contribution fed to an aggregate recomputation.
#[derive(Debug, Clone, Copy)]
pub struct AggregateInput<'a> {
    /// Contributor.
    pub participant: &'a ParticipantId,
    /// Encoding named in the contribution record.
    pub encoding: &'a str,
    /// The stored payload (the signed message bytes).
    pub payload: &'a [u8],
}

/// Recomputes an aggregate from its contributions: returns the bytes whose SHA-256 the
/// aggregate record's `digest` must equal. [`ProtocolRecompute`] is the implementation for
/// fedistill's own protocol; closures `Fn(&str, &[AggregateInput]) -> Result<Vec<u8>, String>`
/// implement it too.
pub trait Recompute {
    /// Aggregates `inputs` (in the record's contributor order) with the rule named `rule`.
    fn aggregate(&self, rule: &str, inputs: &[AggregateInput<'_>]) -> Result<Vec<u8>, String>;
}

impl<F> Recompute for F
where
    F: Fn(&str, &[AggregateInput<'_>]) -> Result<Vec<u8>, String>,
{
    fn aggregate(&self, rule: &str, inputs: &[AggregateInput<'_>]) -> Result<Vec<u8>, String> {
        self(rule, inputs)
    }
}

/// Recomputes aggregates as the coordinator does: each payload is a bincode `SoftLabels`
/// message, decoded with `protocol::softlabels::decode`, aggregated with `protocol::aggregate`
/// under the parsed rule; the result is the aggregate probabilities as little-endian f32 bytes.
pub struct ProtocolRecompute;

impl Recompute for ProtocolRecompute {
    fn aggregate(&self, rule: &str, inputs: &[AggregateInput<'_>]) -> Result<Vec<u8>, String> {
        use crate::protocol::{aggregate, softlabels, AggregationRule, ContributionView};
        use crate::wire::messages::SoftLabels;
        let rule = AggregationRule::parse(rule).map_err(|e| e.to_string())?;
        let mut decoded = Vec::with_capacity(inputs.len());
        let mut shape: Option<(usize, usize)> = None;
        for input in inputs {
            let sl: SoftLabels = crate::wire::frame::decode_payload(input.payload)
                .map_err(|e| format!("payload of {}: {e}", input.participant))?;
            if sl.encoding.name() != input.encoding {
                return Err(format!(
                    "payload of {} is {} but the record says {}",
                    input.participant,
                    sl.encoding.name(),
                    input.encoding
                ));
            }
            let (rows, classes) = (sl.rows as usize, sl.classes as usize);
            if shape.is_some_and(|s| s != (rows, classes)) {
                return Err(format!("payload of {} has a different shape", input.participant));
            }
            shape = Some((rows, classes));
            let p = softlabels::decode(&sl.payload, rows, classes, sl.encoding)
                .map_err(|e| format!("payload of {}: {e}", input.participant))?;
            decoded.push((p, sl.samples));
        }
        let (rows, classes) = shape.ok_or("aggregate has no contributors")?;
        let views: Vec<ContributionView<'_>> = decoded
            .iter()
            .map(|(p, samples)| ContributionView {
                probabilities: p,
                samples: *samples,
            })
            .collect();
        let out = aggregate(rule, &views, rows, classes).map_err(|e| e.to_string())?;
        Ok(out.iter().flat_map(|v| v.to_le_bytes()).collect())
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    format: String,
    payloads: bool,
    files: BTreeMap<String, Digest>,
}

/// A consistency proof between two checkpoint sizes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyEntry {
    /// Older size.
    pub old_size: u64,
    /// Newer size.
    pub new_size: u64,
    /// Proof hashes.
    pub hashes: Vec<Digest>,
}

/// An inclusion proof of one record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionEntry {
    /// Record index.
    pub index: u64,
    /// Tree size.
    pub size: u64,
    /// Proof hashes.
    pub hashes: Vec<Digest>,
}

/// `proofs.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proofs {
    /// Between consecutive checkpoint sizes, ascending.
    pub consistency: Vec<ConsistencyEntry>,
    /// One per record of the head checkpoint, ascending.
    pub inclusion: Vec<InclusionEntry>,
}

fn canonical_json<T: Serialize>(v: &T) -> Vec<u8> {
    // Serializing these plain structs cannot fail.
    let mut out = serde_json::to_vec_pretty(v).unwrap_or_default();
    out.push(b'\n');
    out
}

/// The file name of a checkpoint: `checkpoints/<size, 20 digits>-<first 16 hex of the root>.note`.
pub fn checkpoint_file_name(c: &Checkpoint) -> String {
    format!("{CHECKPOINTS_DIR}/{:020}-{}.note", c.size, &c.root.to_hex()[..16])
}

/// A bundle in memory: relative path (with `/`) -> bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bundle {
    /// Every file of the bundle.
    pub files: BTreeMap<String, Vec<u8>>,
}

/// What [`Bundle::build`] packs.
pub struct ExportInput {
    /// Canonical record bytes, in log order; exactly the records of the largest checkpoint.
    pub records: Vec<Vec<u8>>,
    /// Signed checkpoints (with cosignatures) of sizes up to the number of records.
    pub checkpoints: Vec<SignedCheckpoint>,
    /// Payloads, when exported with `--payloads`.
    pub payloads: Option<Vec<(Digest, Vec<u8>)>>,
}

impl Bundle {
    /// Packs an export: frames the records, names the checkpoints, computes the proofs from the
    /// records and writes the manifest.
    pub fn build(input: ExportInput) -> Result<Bundle, AuditError> {
        let mut files = BTreeMap::new();
        let mut tree = MemoryTree::new();
        let mut records = Vec::new();
        for r in &input.records {
            let len = u32::try_from(r.len()).map_err(|_| AuditError::Export("record too large".into()))?;
            records.extend_from_slice(&len.to_be_bytes());
            records.extend_from_slice(r);
            tree.push(r);
        }
        files.insert(RECORDS_FILE.to_string(), records);
        let mut sizes = BTreeSet::new();
        for sc in &input.checkpoints {
            if sc.checkpoint.size > tree.size() {
                return Err(AuditError::Export(format!(
                    "checkpoint of size {} beyond the {} exported records",
                    sc.checkpoint.size,
                    tree.size()
                )));
            }
            let note = sc.to_note().map_err(|e| AuditError::Export(e.to_string()))?;
            files.insert(checkpoint_file_name(&sc.checkpoint), note);
            sizes.insert(sc.checkpoint.size);
        }
        let head = sizes.last().copied().unwrap_or(0);
        if head != tree.size() {
            return Err(AuditError::Export(format!(
                "{} records exported but the largest checkpoint covers {head}",
                tree.size()
            )));
        }
        let sizes: Vec<u64> = sizes.into_iter().collect();
        let proof_err = |e: crate::ledger::ProofError| AuditError::Export(e.to_string());
        let consistency = sizes
            .windows(2)
            .map(|w| {
                Ok(ConsistencyEntry {
                    old_size: w[0],
                    new_size: w[1],
                    hashes: tree.consistency_proof(w[0], w[1]).map_err(proof_err)?,
                })
            })
            .collect::<Result<Vec<_>, AuditError>>()?;
        let inclusion = (0..head)
            .map(|index| {
                Ok(InclusionEntry {
                    index,
                    size: head,
                    hashes: tree.inclusion_proof(index, head).map_err(proof_err)?,
                })
            })
            .collect::<Result<Vec<_>, AuditError>>()?;
        files.insert(
            PROOFS_FILE.to_string(),
            canonical_json(&Proofs { consistency, inclusion }),
        );
        let with_payloads = input.payloads.is_some();
        for (d, bytes) in input.payloads.unwrap_or_default() {
            files.insert(format!("{PAYLOADS_DIR}/{}", d.to_hex()), bytes);
        }
        let manifest = Manifest {
            format: BUNDLE_FORMAT.to_string(),
            payloads: with_payloads,
            files: files.iter().map(|(k, v)| (k.clone(), Digest::of(v))).collect(),
        };
        files.insert(MANIFEST_FILE.to_string(), canonical_json(&manifest));
        Ok(Bundle { files })
    }

    /// Rewrites `manifest.json` to match the current files (tests use it to model an attacker
    /// who edits a bundle consistently; a real bundle never needs it).
    pub fn reseal(&mut self) {
        let payloads = self
            .files
            .get(MANIFEST_FILE)
            .and_then(|m| serde_json::from_slice::<Manifest>(m).ok())
            .is_some_and(|m| m.payloads);
        self.files.remove(MANIFEST_FILE);
        let manifest = Manifest {
            format: BUNDLE_FORMAT.to_string(),
            payloads,
            files: self.files.iter().map(|(k, v)| (k.clone(), Digest::of(v))).collect(),
        };
        self.files.insert(MANIFEST_FILE.to_string(), canonical_json(&manifest));
    }

    /// Writes the bundle to `dir` (created; must not exist or be empty).
    pub fn write_dir(&self, dir: &Path) -> Result<(), AuditError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| AuditError::Io { path, source }
        };
        if dir.exists() {
            let mut entries = std::fs::read_dir(dir).map_err(io(dir))?;
            if entries.next().is_some() {
                return Err(AuditError::OutputExists(dir.to_path_buf()));
            }
        }
        std::fs::create_dir_all(dir.join(CHECKPOINTS_DIR)).map_err(io(dir))?;
        if self.files.keys().any(|k| k.starts_with(&format!("{PAYLOADS_DIR}/"))) {
            std::fs::create_dir_all(dir.join(PAYLOADS_DIR)).map_err(io(dir))?;
        }
        for (name, bytes) in &self.files {
            let path = dir.join(name);
            std::fs::write(&path, bytes).map_err(io(&path))?;
        }
        Ok(())
    }

    /// Reads a bundle directory: regular files at the top level and one level down only.
    pub fn read_dir(dir: &Path) -> Result<Bundle, AuditError> {
        let mut files = BTreeMap::new();
        read_level(dir, "", 0, &mut files)?;
        Ok(Bundle { files })
    }
}

fn read_level(dir: &Path, prefix: &str, depth: u8, files: &mut BTreeMap<String, Vec<u8>>) -> Result<(), AuditError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| AuditError::Io { path, source }
    };
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        let layout = |reason: &str| AuditError::Layout {
            path: path.clone(),
            reason: reason.into(),
        };
        let name = entry
            .file_name()
            .into_string()
            .map_err(|_| layout("file name is not UTF-8"))?;
        let meta = std::fs::symlink_metadata(&path).map_err(io(&path))?;
        if meta.file_type().is_symlink() {
            return Err(layout("symbolic links are not allowed in a bundle"));
        }
        if meta.is_dir() {
            if depth > 0 {
                return Err(layout("bundles have at most one level of directories"));
            }
            read_level(&path, &format!("{name}/"), depth + 1, files)?;
            continue;
        }
        if !meta.is_file() {
            return Err(layout("not a regular file"));
        }
        if meta.len() > MAX_FILE_LEN {
            return Err(layout("file too large"));
        }
        if files.len() >= MAX_FILES {
            return Err(layout("too many files"));
        }
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        files.insert(format!("{prefix}{name}"), bytes);
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustFile {
    origin: String,
    coordinator_key: String,
    quorum: usize,
    #[serde(default)]
    witness: Vec<TrustWitness>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustWitness {
    name: String,
    key: String,
}

fn parse_key(what: &str, hex_key: &str) -> Result<ed25519_dalek::VerifyingKey, AuditError> {
    let bytes: [u8; 32] = hex::decode(hex_key.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| AuditError::Trust(format!("{what}: a key is 64 hex characters (32 bytes)")))?;
    // Through PublicKey so weak keys are refused the same way as everywhere else.
    PublicKey::from_bytes(&bytes).map_err(|e| AuditError::Trust(format!("{what}: {e}")))?;
    ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|e| AuditError::Trust(format!("{what}: {e}")))
}

/// Parses a trust file (TOML; keys in docs/security.md):
/// `origin`, `coordinator_key` (hex), `quorum`, and `[[witness]]` tables with `name` and `key`.
pub fn parse_trust(text: &str) -> Result<Trust, AuditError> {
    let t: TrustFile = toml::from_str(text).map_err(|e| AuditError::Trust(e.to_string()))?;
    check_key_name(&t.origin).map_err(|e| AuditError::Trust(format!("origin: {e}")))?;
    let log = LogVerifier {
        origin: t.origin,
        key: parse_key("coordinator_key", &t.coordinator_key)?,
    };
    let mut witnesses: Vec<WitnessKey> = Vec::new();
    for w in t.witness {
        check_key_name(&w.name).map_err(|e| AuditError::Trust(format!("witness: {e}")))?;
        if witnesses.iter().any(|o| o.name == w.name) {
            return Err(AuditError::Trust(format!("witness {} listed twice", w.name)));
        }
        let key = parse_key(&format!("witness {}", w.name), &w.key)?;
        witnesses.push(WitnessKey { name: w.name, key });
    }
    if t.quorum > witnesses.len() {
        return Err(AuditError::Trust(format!(
            "quorum {} exceeds the {} witnesses listed",
            t.quorum,
            witnesses.len()
        )));
    }
    let trust = Trust {
        log,
        witnesses,
        quorum: t.quorum,
    };
    // One key listed under two names is one witness; refuse the file rather than guess.
    trust
        .check_distinct_witness_keys()
        .map_err(|e| AuditError::Trust(e.to_string()))?;
    Ok(trust)
}

/// Splits `records.bin` into record byte strings; stops at the first framing error.
fn split_records(bytes: &[u8], report: &mut Report) -> Vec<Vec<u8>> {
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

fn record_item(i: usize, r: Option<&Record>) -> String {
    match r {
        Some(r) => format!("record {i} ({})", r.kind().name()),
        None => format!("record {i}"),
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
    let empty = Vec::new();

    // 1. Manifest: canonical, complete, every file hashed.
    let manifest = match bundle.files.get(MANIFEST_FILE) {
        None => {
            report.fail(MANIFEST_FILE, "missing");
            None
        }
        Some(bytes) => match serde_json::from_slice::<Manifest>(bytes) {
            Err(e) => {
                report.fail(MANIFEST_FILE, format!("not a valid manifest: {e}"));
                None
            }
            Ok(m) => {
                if canonical_json(&m) != *bytes {
                    report.fail(MANIFEST_FILE, "not in canonical form");
                }
                if m.format != BUNDLE_FORMAT {
                    report.fail(
                        MANIFEST_FILE,
                        format!("format {:?}, expected {BUNDLE_FORMAT:?}", m.format),
                    );
                }
                for (name, digest) in &m.files {
                    match bundle.files.get(name) {
                        None => report.fail(name.as_str(), "listed in the manifest but missing"),
                        Some(b) if Digest::of(b) != *digest => {
                            report.fail(name.as_str(), "contents do not match the manifest digest")
                        }
                        Some(_) => {}
                    }
                }
                for name in bundle.files.keys() {
                    if name != MANIFEST_FILE && !m.files.contains_key(name) {
                        report.fail(name.as_str(), "not listed in the manifest");
                    }
                }
                Some(m)
            }
        },
    };

    // 2. Records.
    let raw = match bundle.files.get(RECORDS_FILE) {
        Some(b) => split_records(b, &mut report),
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

    // 3. Checkpoints: signatures, names, forks.
    let mut valid: Vec<(String, SignedCheckpoint, Cosigners)> = Vec::new();
    for (name, bytes) in bundle.files.range(format!("{CHECKPOINTS_DIR}/")..) {
        if !name.starts_with(&format!("{CHECKPOINTS_DIR}/")) {
            break;
        }
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
            Ok(cosigners) => valid.push((name.clone(), sc, cosigners)),
            Err(e) => report.fail(name.as_str(), e.to_string()),
        }
    }
    valid.sort_by(|a, b| a.1.checkpoint.size.cmp(&b.1.checkpoint.size).then(a.0.cmp(&b.0)));
    let mut by_size: BTreeMap<u64, &(String, SignedCheckpoint, Cosigners)> = BTreeMap::new();
    for entry in &valid {
        if let Some(prev) = by_size.get(&entry.1.checkpoint.size) {
            report.fail(
                entry.0.as_str(),
                format!(
                    "FORK: log signed two roots for size {}: {} and {}",
                    entry.1.checkpoint.size, prev.0, entry.0
                ),
            );
        } else {
            by_size.insert(entry.1.checkpoint.size, entry);
        }
    }
    report.checkpoints = valid.len();
    let head = by_size.values().next_back().copied();
    let Some(head) = head else {
        report.fail(CHECKPOINTS_DIR, "no valid checkpoint signed by the trusted log key");
        return report;
    };
    let head_size = head.1.checkpoint.size;
    let head_root = head.1.checkpoint.root;
    report.head = Some(head.1.checkpoint.clone());

    // 4. Proofs: every record included in the head; consecutive checkpoints consistent.
    let proofs = match bundle.files.get(PROOFS_FILE) {
        None => {
            report.fail(PROOFS_FILE, "missing");
            None
        }
        Some(bytes) => match serde_json::from_slice::<Proofs>(bytes) {
            Ok(p) => {
                if canonical_json(&p) != *bytes {
                    report.fail(PROOFS_FILE, "not in canonical form");
                }
                Some(p)
            }
            Err(e) => {
                report.fail(PROOFS_FILE, format!("not valid proofs: {e}"));
                None
            }
        },
    };
    let proofs = proofs.unwrap_or(Proofs {
        consistency: Vec::new(),
        inclusion: Vec::new(),
    });
    let mut inclusion: HashMap<u64, &InclusionEntry> = HashMap::new();
    for e in &proofs.inclusion {
        if e.size != head_size || inclusion.insert(e.index, e).is_some() || e.index >= head_size {
            report.fail(
                format!("{PROOFS_FILE}: inclusion of record {} in size {}", e.index, e.size),
                "unexpected or duplicate proof",
            );
        }
    }
    for i in 0..head_size {
        let item = record_item(i as usize, records.get(i as usize).and_then(|r| r.as_ref()));
        let Some(data) = raw.get(i as usize) else {
            report.fail(item, format!("missing: the head checkpoint covers {head_size} records"));
            break;
        };
        match inclusion.get(&i) {
            None => report.fail(item, "no inclusion proof in the bundle"),
            Some(e) => {
                if let Err(err) = verify_inclusion(leaf_hash(data), i, head_size, &e.hashes, head_root) {
                    report.fail(item, format!("not included in the head checkpoint: {err}"));
                }
            }
        }
    }
    if raw.len() as u64 > head_size {
        report.fail(
            record_item(
                head_size as usize,
                records.get(head_size as usize).and_then(|r| r.as_ref()),
            ),
            "not covered by any signed checkpoint",
        );
    }
    let sizes: Vec<u64> = by_size.keys().copied().collect();
    let mut consistency: HashMap<(u64, u64), &ConsistencyEntry> = HashMap::new();
    for e in &proofs.consistency {
        let known = sizes.windows(2).any(|w| w[0] == e.old_size && w[1] == e.new_size);
        if !known || consistency.insert((e.old_size, e.new_size), e).is_some() {
            report.fail(
                format!("{PROOFS_FILE}: consistency {} -> {}", e.old_size, e.new_size),
                "unexpected or duplicate proof",
            );
        }
    }
    for w in sizes.windows(2) {
        let (a, b) = (by_size[&w[0]], by_size[&w[1]]);
        match consistency.get(&(w[0], w[1])) {
            None => report.fail(b.0.as_str(), format!("no consistency proof from size {}", w[0])),
            Some(e) => {
                if let Err(err) = verify_consistency(w[0], a.1.checkpoint.root, w[1], b.1.checkpoint.root, &e.hashes) {
                    report.fail(b.0.as_str(), format!("not consistent with {}: {err}", a.0));
                }
            }
        }
    }
    // Every checkpoint's root against the records themselves.
    for (name, sc, _) in by_size.values() {
        if sc.checkpoint.size <= tree.size() {
            match tree.root(sc.checkpoint.size) {
                Ok(root) if root == sc.checkpoint.root => {}
                _ => report.fail(name.as_str(), "root does not match the records in the bundle"),
            }
        }
    }

    // 5. Witness quorum on the head: distinct public keys count, not names (one key listed under
    // two names in a trust file cosigns under both, and is still one witness).
    report.head_cosigners = head.2.names.clone();
    if !head.2.meets(trust.quorum) {
        let shared = if head.2.names.len() > head.2.distinct_keys {
            format!(
                " ({} names, but only {} distinct keys)",
                head.2.names.len(),
                head.2.distinct_keys
            )
        } else {
            String::new()
        };
        report.fail(
            head.0.as_str(),
            format!(
                "witness quorum not met: {} of the required {} trusted witnesses cosigned the head checkpoint{shared}",
                head.2.distinct_keys, trust.quorum
            ),
        );
    }

    // 6. Record semantics: federation, roster, signatures.
    let mut federation: Option<FederationId> = None;
    let mut roster: HashMap<ParticipantId, ed25519_dalek::VerifyingKey> = HashMap::new();
    // Quarantine in force: participant -> round of the decision.
    let mut quarantined: HashMap<ParticipantId, crate::ledger::RoundId> = HashMap::new();
    // Contributors of every aggregate seen so far, by round.
    let mut aggregated: HashMap<crate::ledger::RoundId, Vec<ParticipantId>> = HashMap::new();
    // (round, participant) of every abstention and contribution, checked against each other at the end.
    let mut abstentions: BTreeMap<(u64, ParticipantId), usize> = BTreeMap::new();
    let mut contributed: BTreeMap<(u64, ParticipantId), usize> = BTreeMap::new();
    for (i, rec) in records.iter().enumerate() {
        let Some(rec) = rec else { continue };
        let item = record_item(i, Some(rec));
        if i == 0 && rec.kind() != RecordKind::FederationCreated {
            report.fail(item.as_str(), "the first record must create the federation");
        }
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
                RosterAction::Enrol | RosterAction::Rekey => {
                    match ed25519_dalek::VerifyingKey::from_bytes(signing_key) {
                        Ok(k) => {
                            roster.insert(participant.clone(), k);
                        }
                        Err(_) => report.fail(item.as_str(), "signing key is not an ed25519 key"),
                    }
                }
                RosterAction::Revoke => {
                    if roster.remove(participant).is_none() {
                        report.fail(item.as_str(), "revokes a participant that is not enrolled");
                    }
                }
            },
            Record::Contribution {
                round,
                participant,
                payload_digest,
                sequence,
                signature,
                ..
            }
            | Record::RoundReport {
                round,
                participant,
                message_digest: payload_digest,
                sequence,
                signature,
                ..
            } => {
                let domain = if rec.kind() == RecordKind::Contribution {
                    if let Some(q) = quarantined.get(participant).filter(|q| q.0 < round.0) {
                        report.fail(
                            item.as_str(),
                            format!("contribution from {participant}, quarantined since round {q}"),
                        );
                    }
                    contributed.insert((round.0, participant.clone()), i);
                    SOFT_LABELS_DOMAIN
                } else {
                    ROUND_REPORT_DOMAIN
                };
                let (Some(fed), Some(key)) = (federation.as_ref(), roster.get(participant)) else {
                    report.fail(
                        item.as_str(),
                        format!("{participant} is not an enrolled participant here"),
                    );
                    continue;
                };
                if !participant_signature_verifies(
                    key,
                    domain,
                    participant,
                    fed,
                    *round,
                    *sequence,
                    payload_digest,
                    signature,
                ) {
                    report.fail(item.as_str(), format!("signature of {participant} does not verify"));
                }
                report.record_signatures += 1;
            }
            Record::Aggregate {
                round,
                contributors,
                signature,
                ..
            } => {
                for c in contributors {
                    if let Some(q) = quarantined.get(c).filter(|q| q.0 < round.0) {
                        report.fail(item.as_str(), format!("aggregates {c}, quarantined since round {q}"));
                    }
                }
                aggregated.insert(*round, contributors.clone());
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
            Record::Quarantine {
                round,
                participant,
                evidence,
                ..
            } => {
                if !roster.contains_key(participant) {
                    report.fail(
                        item.as_str(),
                        format!("{participant} is not an enrolled participant here"),
                    );
                }
                if !aggregated.get(round).is_some_and(|c| c.contains(participant)) {
                    report.fail(
                        item.as_str(),
                        format!("{participant} is not a contributor of an earlier aggregate of round {round}"),
                    );
                }
                if let Some(q) = quarantined.get(participant) {
                    report.fail(
                        item.as_str(),
                        format!("{participant} is already quarantined (since round {q})"),
                    );
                }
                if let Err(why) = check_quarantine_evidence(evidence) {
                    report.fail(item.as_str(), why);
                }
                quarantined.insert(participant.clone(), *round);
            }
            Record::QuarantineRelease {
                round,
                participant,
                quarantined_round,
                after_rounds,
                ..
            } => {
                match quarantined.get(participant) {
                    None => report.fail(item.as_str(), format!("{participant} is not quarantined")),
                    Some(q) if q != quarantined_round => report.fail(
                        item.as_str(),
                        format!(
                            "names the quarantine of round {quarantined_round}, but {participant}'s is of round {q}"
                        ),
                    ),
                    Some(_) => {}
                }
                if *after_rounds == 0 || round.0 < quarantined_round.0.saturating_add(u64::from(*after_rounds)) {
                    report.fail(
                        item.as_str(),
                        format!(
                            "released after round {round}: earlier than round {quarantined_round} + {after_rounds} round(s)"
                        ),
                    );
                }
                if !aggregated.contains_key(round) {
                    report.fail(item.as_str(), format!("no earlier aggregate of round {round}"));
                }
                quarantined.remove(participant);
            }
            Record::Abstention {
                round,
                participant,
                reason,
                message_digest,
                sequence,
                signature,
                ..
            } => {
                if reason.is_empty() {
                    report.fail(item.as_str(), "abstention without a reason code");
                }
                if abstentions.insert((round.0, participant.clone()), i).is_some() {
                    report.fail(
                        item.as_str(),
                        format!("{participant} abstained twice from round {round}"),
                    );
                }
                let (Some(fed), Some(key)) = (federation.as_ref(), roster.get(participant)) else {
                    report.fail(
                        item.as_str(),
                        format!("{participant} is not an enrolled participant here"),
                    );
                    continue;
                };
                if !participant_signature_verifies(
                    key,
                    ABSTAIN_DOMAIN,
                    participant,
                    fed,
                    *round,
                    *sequence,
                    message_digest,
                    signature,
                ) {
                    report.fail(item.as_str(), format!("signature of {participant} does not verify"));
                }
                report.record_signatures += 1;
            }
            _ => {}
        }
    }
    for ((round, participant), &i) in &abstentions {
        let item = record_item(i, records.get(i).and_then(|r| r.as_ref()));
        if contributed.contains_key(&(*round, participant.clone())) {
            report.fail(
                item.as_str(),
                format!("{participant} abstained from round {round} but also contributed to it"),
            );
        }
        if aggregated
            .get(&crate::ledger::RoundId(*round))
            .is_some_and(|c| c.contains(participant))
        {
            report.fail(
                item.as_str(),
                format!("{participant} abstained from round {round} but is in its aggregate"),
            );
        }
    }

    // 7. Payloads and aggregates.
    let with_payloads = manifest.as_ref().is_some_and(|m| m.payloads);
    for (name, bytes) in bundle.files.range(format!("{PAYLOADS_DIR}/")..) {
        if !name.starts_with(&format!("{PAYLOADS_DIR}/")) {
            break;
        }
        let hexname = &name[PAYLOADS_DIR.len() + 1..];
        if Digest::from_hex(hexname).ok() != Some(Digest::of(bytes)) {
            report.fail(name.as_str(), "payload does not hash to its file name");
        }
    }
    if !with_payloads {
        report
            .notes
            .push("bundle has no payloads: aggregates were not recomputed".into());
        return report;
    }
    let payload = |d: &Digest| {
        bundle
            .files
            .get(&format!("{PAYLOADS_DIR}/{}", d.to_hex()))
            .unwrap_or(&empty)
    };
    for (i, rec) in records.iter().enumerate() {
        if let Some(Record::Contribution { payload_digest, .. }) = rec {
            if !bundle
                .files
                .contains_key(&format!("{PAYLOADS_DIR}/{}", payload_digest.to_hex()))
            {
                report.fail(record_item(i, rec.as_ref()), "payload missing from the bundle");
            }
        }
        if let Some(Record::Abstention {
            round,
            reason,
            figures,
            message_digest,
            ..
        }) = rec
        {
            let item = record_item(i, rec.as_ref());
            let Some(bytes) = bundle.files.get(&format!("{PAYLOADS_DIR}/{}", message_digest.to_hex())) else {
                report.fail(item, "payload missing from the bundle");
                continue;
            };
            match crate::wire::frame::decode_payload::<crate::wire::messages::Abstain>(bytes) {
                Err(e) => report.fail(item, format!("payload is not an Abstain message: {e}")),
                Ok(a) => {
                    let same_figures = crate::ledger::Metric::canonical(a.figures.iter().map(|(n, v)| (n.clone(), *v)))
                        .is_ok_and(|f| f == *figures);
                    if a.round != *round || a.reason != *reason || !same_figures {
                        report.fail(item, "the signed Abstain message says something else than the record");
                    }
                }
            }
        }
    }
    let Some(recompute) = recompute else {
        report
            .notes
            .push("no aggregation function supplied: aggregates were not recomputed".into());
        return report;
    };
    for (i, rec) in records.iter().enumerate() {
        let Some(Record::Aggregate {
            round,
            digest,
            rule,
            contributors,
            ..
        }) = rec
        else {
            continue;
        };
        let item = record_item(i, rec.as_ref());
        let mut inputs = Vec::with_capacity(contributors.len());
        let mut missing = None;
        for c in contributors {
            let found: Vec<&Record> = records[..i]
                .iter()
                .flatten()
                .filter(|r| matches!(r, Record::Contribution { round: cr, participant, .. } if cr == round && participant == c))
                .collect();
            match found.as_slice() {
                [Record::Contribution {
                    participant,
                    encoding,
                    payload_digest,
                    ..
                }] => inputs.push(AggregateInput {
                    participant,
                    encoding,
                    payload: payload(payload_digest),
                }),
                [] => missing = Some(format!("no logged contribution of {c} in round {round}")),
                _ => missing = Some(format!("{c} has several contributions in round {round}")),
            }
        }
        if let Some(m) = missing {
            report.fail(item, m);
            continue;
        }
        match recompute.aggregate(rule, &inputs) {
            Ok(bytes) if Digest::of(&bytes) == *digest => report.aggregates_recomputed += 1,
            Ok(bytes) => report.fail(
                item,
                format!(
                    "recomputed aggregate hashes to {}, the signed record says {digest}",
                    Digest::of(&bytes)
                ),
            ),
            Err(e) => report.fail(item, format!("could not recompute: {e}")),
        }
    }
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
    let raw = bundle
        .files
        .get(RECORDS_FILE)
        .map(|b| split_records(b, &mut Report::default()))
        .unwrap_or_default();
    if let Some(expected) = &opts.expect_checkpoint {
        check_extends(&raw, trust, expected, &mut report);
    }
    if opts.require_payloads {
        check_payloads_present(bundle, &raw, &mut report);
    }
    report
}

/// Item name of failures about [`VerifyOptions::expect_checkpoint`].
pub const EXPECTED_CHECKPOINT_ITEM: &str = "expected checkpoint";

fn check_extends(raw: &[Vec<u8>], trust: &Trust, expected: &SignedCheckpoint, report: &mut Report) {
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

/// How many missing payloads a `--require-payloads` failure lists by name.
const MISSING_PAYLOADS_NAMED: usize = 5;

fn check_payloads_present(bundle: &Bundle, raw: &[Vec<u8>], report: &mut Report) {
    let mut total = 0usize;
    let mut missing = Vec::new();
    for (i, bytes) in raw.iter().enumerate() {
        let Ok(rec) = Record::decode(bytes) else {
            continue; // already a failure of `verify`
        };
        let digest = match &rec {
            Record::Contribution { payload_digest, .. } => payload_digest,
            Record::RoundReport { message_digest, .. } | Record::Abstention { message_digest, .. } => message_digest,
            _ => continue,
        };
        total += 1;
        if !bundle
            .files
            .contains_key(&format!("{PAYLOADS_DIR}/{}", digest.to_hex()))
        {
            missing.push(format!(
                "{} (payload {})",
                record_item(i, Some(&rec)),
                &digest.to_hex()[..16]
            ));
        }
    }
    if missing.is_empty() {
        report.payloads_present = Some(total);
        return;
    }
    let more = missing.len().saturating_sub(MISSING_PAYLOADS_NAMED);
    let mut named = missing[..missing.len().min(MISSING_PAYLOADS_NAMED)].join(", ");
    if more > 0 {
        named.push_str(&format!(" and {more} more"));
    }
    report.fail(
        PAYLOADS_DIR,
        format!(
            "payloads required (--require-payloads) but {} of {total} are missing from the bundle: {named}",
            missing.len()
        ),
    );
}

/// Checks a quarantine's evidence (names as written by `protocol::robust`): the score is above the
/// threshold and, when the policy is recorded, the threshold and the strike count follow from it.
fn check_quarantine_evidence(evidence: &[crate::ledger::Metric]) -> Result<(), String> {
    let get = |n: &str| evidence.iter().find(|m| m.name == n).map(|m| m.value);
    let (Some(score), Some(threshold)) = (get("ewma_score"), get("threshold")) else {
        return Err("evidence lacks ewma_score or threshold".into());
    };
    if score.partial_cmp(&threshold) != Some(std::cmp::Ordering::Greater) {
        return Err(format!(
            "evidence: ewma_score {score} is not above the threshold {threshold}"
        ));
    }
    if let (Some(factor), Some(floor), Some(median)) = (get("policy_factor"), get("policy_floor"), get("median_score"))
    {
        let expected = (factor * median).max(floor);
        if expected.to_bits() != threshold.to_bits() {
            return Err(format!(
                "evidence: threshold {threshold} is not max(policy_factor {factor} x median_score {median}, policy_floor {floor}) = {expected}"
            ));
        }
    }
    if let (Some(strikes), Some(needed)) = (get("strikes"), get("policy_consecutive")) {
        if strikes
            .partial_cmp(&needed)
            .is_none_or(|o| o == std::cmp::Ordering::Less)
        {
            return Err(format!("evidence: {strikes} strikes, the policy needs {needed}"));
        }
    }
    Ok(())
}

/// Checks a participant's envelope signature as logged: the protocol 3 layout, which covers the signer's
/// identity ([`envelope_signing_bytes`]), or the protocol 2 layout without it ([`signing_bytes`]) so that
/// logs written before version 3 still verify. Both are sound offline: the key is the roster's key of the
/// participant the record names, so a signature by any other participant's key fails either way.
#[allow(clippy::too_many_arguments)]
fn participant_signature_verifies(
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

fn verify_sig(key: &ed25519_dalek::VerifyingKey, msg: &[u8], sig: &[u8]) -> bool {
    let Ok(sig) = <[u8; 64]>::try_from(sig) else {
        return false;
    };
    key.verify_strict(msg, &ed25519_dalek::Signature::from_bytes(&sig))
        .is_ok()
}

/// A readable timeline of a bundle (records interleaved with checkpoints), without verifying it.
pub fn timeline(bundle: &Bundle) -> String {
    let mut report = Report::default();
    let raw = bundle
        .files
        .get(RECORDS_FILE)
        .map(|b| split_records(b, &mut report))
        .unwrap_or_default();
    let mut cps: Vec<SignedCheckpoint> = bundle
        .files
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("{CHECKPOINTS_DIR}/")))
        .filter_map(|(_, v)| SignedCheckpoint::parse(v).ok())
        .collect();
    cps.sort_by_key(|c| c.checkpoint.size);
    let mut out = String::from("(unverified: run `fedistill audit verify` to check signatures and proofs)\n");
    let mut next_cp = cps.iter().peekable();
    for (i, r) in raw.iter().enumerate() {
        while let Some(cp) = next_cp.next_if(|c| c.checkpoint.size <= i as u64) {
            out.push_str(&checkpoint_line(cp));
        }
        match Record::decode(r) {
            Ok(rec) => out.push_str(&format!("#{i:<6} {}\n", rec.summary())),
            Err(e) => out.push_str(&format!("#{i:<6} <undecodable record: {e}>\n")),
        }
    }
    for cp in next_cp {
        out.push_str(&checkpoint_line(cp));
    }
    for f in report.failures {
        out.push_str(&format!("!! {}: {}\n", f.item, f.reason));
    }
    out
}

fn checkpoint_line(cp: &SignedCheckpoint) -> String {
    let cosigners: Vec<&str> = cp
        .signatures
        .iter()
        .filter(|s| s.name != cp.checkpoint.origin)
        .map(|s| s.name.as_str())
        .collect();
    format!(
        "-- checkpoint size {} root {} cosigned by [{}]\n",
        cp.checkpoint.size,
        &cp.checkpoint.root.to_hex()[..16],
        cosigners.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Cosignature, LogSigner, RoundId};
    use crate::protocol::{softlabels, Encoding};
    use crate::wire::messages::SoftLabels;
    use ed25519_dalek::{Signer as _, SigningKey};

    const ORIGIN: &str = "fedistill.test/fed-1";
    const FED: &str = "fed-1";

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn trust(quorum: usize) -> Trust {
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

    fn fed() -> FederationId {
        FederationId::new(FED).expect("valid id")
    }

    /// A signed `SoftLabels` payload (2 rows x 3 classes, f32) and its contribution record.
    fn contribution(who: &str, seed: u8, probs: &[f32], seq: u64) -> (Record, Vec<u8>) {
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
            encoding: "f32".into(),
            payload_digest: d,
            sequence: seq,
            signature: sig.to_bytes().to_vec(),
        };
        (rec, payload)
    }

    fn signed_aggregate(digest: Digest) -> Record {
        let mut agg = Record::Aggregate {
            round: RoundId(1),
            digest,
            rule: "mean".into(),
            contributors: vec![ParticipantId::new("bank-a"), ParticipantId::new("bank-b")],
            signature: Vec::new(),
        };
        let stmt = agg.statement(FED).expect("encodes").expect("aggregates are signed");
        if let Record::Aggregate { signature, .. } = &mut agg {
            *signature = key(1).sign(&stmt).to_bytes().to_vec();
        }
        agg
    }

    struct Fixture {
        records: Vec<Record>,
        payloads: Vec<(Digest, Vec<u8>)>,
        checkpoints: Vec<SignedCheckpoint>,
    }

    /// A small real log: federation, roster, one round with two contributions, the aggregate,
    /// a signed report; checkpoints at 3, 6 and 9 records, the head cosigned by `head_witnesses`.
    fn fixture(head_witnesses: &[u8], aggregate_digest: Option<Digest>) -> Fixture {
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
            guard: "accept".into(),
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
                rule: "mean".into(),
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

    fn bundle_of(f: &Fixture, payloads: bool) -> Bundle {
        Bundle::build(ExportInput {
            records: f.records.iter().map(|r| r.encode().expect("encodes")).collect(),
            checkpoints: f.checkpoints.clone(),
            payloads: payloads.then(|| f.payloads.clone()),
        })
        .expect("builds")
    }

    fn good() -> Bundle {
        bundle_of(&fixture(&[31, 32], None), true)
    }

    fn check(b: &Bundle) -> Report {
        verify(b, &trust(2), Some(&ProtocolRecompute))
    }

    fn first(r: &Report) -> &Failure {
        r.failures.first().expect("verification must fail")
    }

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

    fn records_of(b: &Bundle) -> Vec<Vec<u8>> {
        let mut r = Report::default();
        split_records(&b.files[RECORDS_FILE], &mut r)
    }

    fn with_records(b: &Bundle, recs: &[Vec<u8>]) -> Bundle {
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

    #[test]
    fn a_dropped_record_is_named() {
        let b = good();
        let mut recs = records_of(&b);
        recs.remove(4);
        let r = check(&with_records(&b, &recs));
        assert_eq!(first(&r).item, "record 4 (contribution)", "{:?}", r.failures);
    }

    #[test]
    fn reordered_records_are_named() {
        let b = good();
        let mut recs = records_of(&b);
        recs.swap(4, 5);
        let r = check(&with_records(&b, &recs));
        assert_eq!(first(&r).item, "record 4 (contribution)", "{:?}", r.failures);
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

    fn replace_checkpoint(b: &Bundle, old: &SignedCheckpoint, new: &SignedCheckpoint) -> Bundle {
        let mut t = b.clone();
        t.files.remove(&checkpoint_file_name(&old.checkpoint));
        t.files
            .insert(checkpoint_file_name(&new.checkpoint), new.to_note().expect("note"));
        t.reseal();
        t
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
    }

    #[test]
    fn a_recomputed_aggregate_mismatch_is_named() {
        let f = fixture(&[31, 32], Some(Digest::of(b"not the mean")));
        let r = check(&bundle_of(&f, true));
        assert_eq!(r.failures.len(), 1, "{:?}", r.failures);
        assert_eq!(first(&r).item, "record 6 (aggregate)");
        assert!(
            first(&r).reason.contains("recomputed aggregate hashes to"),
            "{}",
            first(&r).reason
        );
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
    fn bundles_round_trip_through_a_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("bundle");
        let b = good();
        b.write_dir(&out).expect("write");
        assert_eq!(Bundle::read_dir(&out).expect("read"), b);
        assert!(matches!(b.write_dir(&out), Err(AuditError::OutputExists(_))));
        std::fs::create_dir_all(out.join("payloads/deeper")).expect("mkdir");
        assert!(matches!(Bundle::read_dir(&out), Err(AuditError::Layout { .. })));
    }

    #[test]
    fn trust_files_are_validated() {
        let k = |s: u8| hex::encode(key(s).verifying_key().to_bytes());
        let ok = format!(
            "origin = \"{ORIGIN}\"\ncoordinator_key = \"{}\"\nquorum = 1\n[[witness]]\nname = \"w-a\"\nkey = \"{}\"\n",
            k(1),
            k(31)
        );
        let t = parse_trust(&ok).expect("valid");
        assert_eq!(t.quorum, 1);
        assert_eq!(t.log.origin, ORIGIN);
        for bad in [
            ok.replace("quorum = 1", "quorum = 2"),
            ok.replace(&k(1), "abcd"),
            ok.replace("origin = ", "extra = 1\norigin = "),
            ok.replace("\"w-a\"", "\"w a\""),
            format!("{ok}[[witness]]\nname = \"w-a\"\nkey = \"{}\"\n", k(32)),
        ] {
            assert!(parse_trust(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_timeline_lists_records_and_checkpoints() {
        let t = timeline(&good());
        assert!(t.contains("#4      round 1: contribution from bank-a"), "{t}");
        assert!(t.contains("-- checkpoint size 9"), "{t}");
        assert!(t.contains("cosigned by [w-a, w-b]"), "{t}");
    }

    // ---- quarantine, release and abstention consistency -------------------------------------------

    /// One log: federation, bank-a..bank-d enrolled, then `rest`; one head checkpoint; trust quorum 0.
    fn log_of(rest: Vec<Record>, payloads: Option<Vec<(Digest, Vec<u8>)>>) -> Bundle {
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

    fn seed_of(who: &str) -> u8 {
        match who {
            "bank-a" => 21,
            "bank-b" => 22,
            "bank-c" => 23,
            _ => 24,
        }
    }

    /// A contribution record of `who` in `round` (signature over a made-up payload digest; no payload).
    fn contribution_in(who: &str, round: u64) -> Record {
        let d = Digest::of(format!("{who}-{round}").as_bytes());
        let sig = key(seed_of(who)).sign(&signing_bytes(SOFT_LABELS_DOMAIN, &fed(), RoundId(round), round, &d));
        Record::Contribution {
            round: RoundId(round),
            participant: ParticipantId::new(who),
            encoding: "f32".into(),
            payload_digest: d,
            sequence: round,
            signature: sig.to_bytes().to_vec(),
        }
    }

    fn aggregate_in(round: u64, who: &[&str]) -> Record {
        let mut agg = Record::Aggregate {
            round: RoundId(round),
            digest: Digest::of(format!("agg-{round}").as_bytes()),
            rule: "median".into(),
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
    fn round_of(round: u64, who: &[&str]) -> Vec<Record> {
        let mut v: Vec<Record> = who.iter().map(|w| contribution_in(w, round)).collect();
        v.push(aggregate_in(round, who));
        v
    }

    /// Evidence as `protocol::robust` writes it (default policy: factor 3, floor 0.1, 3 strikes).
    fn quarantine_of(who: &str, round: u64) -> Record {
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

    fn release_of(who: &str, round: u64, quarantined_round: u64, after_rounds: u32) -> Record {
        Record::QuarantineRelease {
            round: RoundId(round),
            participant: ParticipantId::new(who),
            quarantined_round: RoundId(quarantined_round),
            after_rounds,
            reason: "served".into(),
        }
    }

    const ALL: [&str; 4] = ["bank-a", "bank-b", "bank-c", "bank-d"];
    const HONEST: [&str; 3] = ["bank-a", "bank-b", "bank-c"];

    /// Quarantine of bank-d in round 3, out in rounds 4 and 5, released after round 5 (3 + 2), back in 6.
    fn quarantine_log(release: Record, round6: &[&str]) -> Bundle {
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

    fn failures(b: &Bundle) -> Vec<String> {
        verify(b, &trust(0), None)
            .failures
            .iter()
            .map(|f| format!("{}: {}", f.item, f.reason))
            .collect()
    }

    #[test]
    fn a_consistent_quarantine_and_release_verify() {
        let b = quarantine_log(release_of("bank-d", 5, 3, 2), &ALL);
        assert!(failures(&b).is_empty(), "{:?}", failures(&b));
        // Without any release the quarantine is permanent: bank-d may not come back in round 6.
        let mut rest = Vec::new();
        for r in 1..=3 {
            rest.extend(round_of(r, &ALL));
        }
        rest.push(quarantine_of("bank-d", 3));
        rest.extend(round_of(4, &HONEST));
        assert!(failures(&log_of(rest.clone(), None)).is_empty());
        rest.extend(round_of(5, &ALL));
        let f = failures(&log_of(rest, None));
        assert!(
            f.iter()
                .any(|f| f.contains("(contribution)") && f.contains("quarantined since round 3")),
            "{f:?}"
        );
        assert!(
            f.iter()
                .any(|f| f.contains("(aggregate)") && f.contains("aggregates bank-d")),
            "{f:?}"
        );
    }

    #[test]
    fn inconsistent_releases_are_named() {
        // Released after round 4: one round early for a 2-round policy.
        let f = failures(&quarantine_log(release_of("bank-d", 4, 3, 2), &HONEST));
        assert!(
            f.iter()
                .any(|f| f.contains("(quarantine_release)") && f.contains("earlier than")),
            "{f:?}"
        );
        // Names another quarantine round.
        let f = failures(&quarantine_log(release_of("bank-d", 5, 2, 2), &ALL));
        assert!(f.iter().any(|f| f.contains("names the quarantine of round 2")), "{f:?}");
        // Releases someone never quarantined (and bank-d stays quarantined, so round 6 fails too).
        let f = failures(&quarantine_log(release_of("bank-a", 5, 3, 2), &ALL));
        assert!(f.iter().any(|f| f.contains("bank-a is not quarantined")), "{f:?}");
        assert!(f.iter().any(|f| f.contains("quarantined since round 3")), "{f:?}");
        // after_rounds 0 is never a valid policy.
        let f = failures(&quarantine_log(release_of("bank-d", 5, 3, 0), &ALL));
        assert!(f.iter().any(|f| f.contains("earlier than")), "{f:?}");
    }

    #[test]
    fn quarantine_evidence_and_context_are_checked() {
        let with = |q: Record| {
            let mut rest = Vec::new();
            for r in 1..=3 {
                rest.extend(round_of(r, &ALL));
            }
            rest.push(q);
            failures(&log_of(rest, None))
        };
        assert!(with(quarantine_of("bank-d", 3)).is_empty());
        let edit = |name: &str, value: f64| {
            let Record::Quarantine {
                round,
                participant,
                reason,
                mut evidence,
            } = quarantine_of("bank-d", 3)
            else {
                unreachable!()
            };
            for m in &mut evidence {
                if m.name == name {
                    m.value = value;
                }
            }
            Record::Quarantine {
                round,
                participant,
                reason,
                evidence,
            }
        };
        for (name, value, needle) in [
            ("threshold", 0.7, "is not max(policy_factor"),
            ("ewma_score", 0.5, "is not above the threshold"),
            ("strikes", 2.0, "the policy needs 3"),
        ] {
            let f = with(edit(name, value));
            assert!(f.iter().any(|f| f.contains(needle)), "{name}: {f:?}");
        }
        // Not in its round's aggregate; quarantined twice.
        let f = with(quarantine_of("bank-d", 4));
        assert!(
            f.iter()
                .any(|f| f.contains("not a contributor of an earlier aggregate of round 4")),
            "{f:?}"
        );
        let mut rest = Vec::new();
        for r in 1..=3 {
            rest.extend(round_of(r, &ALL));
        }
        rest.push(quarantine_of("bank-d", 3));
        rest.push(quarantine_of("bank-d", 3));
        let f = failures(&log_of(rest, None));
        assert!(f.iter().any(|f| f.contains("already quarantined")), "{f:?}");
    }

    /// A signed abstention of `who` from `round` and its payload.
    fn abstention_of(who: &str, round: u64, seq: u64) -> (Record, (Digest, Vec<u8>)) {
        let msg = crate::wire::messages::Abstain {
            round: RoundId(round),
            reason: "budget_exhausted".into(),
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
            reason: msg.reason.clone(),
            figures: crate::ledger::Metric::canonical(msg.figures.clone()).expect("unique"),
            message_digest: d,
            sequence: seq,
            signature: sig.to_bytes().to_vec(),
        };
        (rec, (d, payload))
    }

    /// `extra` plus the (made-up) payload of every contribution in `records`, as `contribution_in` hashed it.
    fn with_contribution_payloads(records: &[Record], extra: (Digest, Vec<u8>)) -> Option<Vec<(Digest, Vec<u8>)>> {
        let mut out = vec![extra];
        for r in records {
            if let Record::Contribution { round, participant, .. } = r {
                let b = format!("{participant}-{round}").into_bytes();
                out.push((Digest::of(&b), b));
            }
        }
        Some(out)
    }

    #[test]
    fn abstentions_are_signed_and_exclusive_of_contributions() {
        let (a, pa) = abstention_of("bank-d", 2, 7);
        let mut rest = round_of(1, &ALL);
        rest.push(a.clone());
        rest.extend(round_of(2, &HONEST));
        let ok = log_of(rest.clone(), with_contribution_payloads(&rest, pa.clone()));
        let report = verify(&ok, &trust(0), None);
        assert!(report.ok(), "{:?}", report.failures);
        // Forged signature (another participant's key).
        let (forged, pf) = abstention_of("bank-a", 2, 7);
        let Record::Abstention { signature, .. } = forged else {
            unreachable!()
        };
        let mut bad = a.clone();
        if let Record::Abstention { signature: s, .. } = &mut bad {
            *s = signature;
        }
        let mut r2 = round_of(1, &ALL);
        r2.push(bad);
        r2.extend(round_of(2, &HONEST));
        let p2 = with_contribution_payloads(&r2, pf);
        let f = failures(&log_of(r2, p2));
        assert!(
            f.iter().any(|f| f.contains("signature of bank-d does not verify")),
            "{f:?}"
        );
        // Abstained and contributed to the same round.
        let mut r3 = round_of(1, &ALL);
        r3.push(a.clone());
        r3.extend(round_of(2, &ALL));
        let p3 = with_contribution_payloads(&r3, pa.clone());
        let f = failures(&log_of(r3, p3));
        assert!(
            f.iter()
                .any(|f| f.contains("abstained from round 2 but also contributed")),
            "{f:?}"
        );
        assert!(
            f.iter()
                .any(|f| f.contains("abstained from round 2 but is in its aggregate")),
            "{f:?}"
        );
        // The record's figures differ from the signed message's.
        let mut edited = a.clone();
        if let Record::Abstention { figures, .. } = &mut edited {
            figures[0].value = 1.0;
        }
        let mut r4 = round_of(1, &ALL);
        r4.push(edited);
        let p4 = with_contribution_payloads(&r4, pa);
        let f = failures(&log_of(r4, p4));
        assert!(
            f.iter().any(|f| f.contains("says something else than the record")),
            "{f:?}"
        );
    }

    // ---- distinct witness keys; expected checkpoint; required payloads ------------------------------

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

    #[test]
    fn a_trust_file_listing_one_key_under_two_names_is_refused() {
        let k = |s: u8| hex::encode(key(s).verifying_key().to_bytes());
        let text = format!(
            "origin = \"{ORIGIN}\"\ncoordinator_key = \"{}\"\nquorum = 2\n[[witness]]\nname = \"w-a\"\nkey = \"{}\"\n[[witness]]\nname = \"w-b\"\nkey = \"{}\"\n",
            k(1),
            k(31),
            k(31)
        );
        let err = parse_trust(&text).expect_err("same key twice");
        let msg = err.to_string();
        assert!(msg.contains("witnesses w-a and w-b have the same public key"), "{msg}");
        assert!(parse_trust(&text.replacen(&k(31), &k(32), 1)).is_ok());
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

    fn requiring_payloads(b: &Bundle) -> Report {
        let opts = VerifyOptions {
            expect_checkpoint: None,
            require_payloads: true,
        };
        verify_with(b, &trust(2), Some(&ProtocolRecompute), &opts)
    }

    #[test]
    fn require_payloads_names_the_missing_ones() {
        // The fixture's round report has no stored message: fine for plain verification.
        let f = fixture(&[31, 32], None);
        assert!(check(&bundle_of(&f, true)).ok());
        let r = requiring_payloads(&bundle_of(&f, true));
        assert_eq!(r.failures.len(), 1, "{:?}", r.failures);
        assert_eq!(first(&r).item, PAYLOADS_DIR);
        assert!(
            first(&r)
                .reason
                .contains("1 of 3 are missing from the bundle: record 7 (round_report)"),
            "{}",
            first(&r).reason
        );
        // Exported without payloads: verifies (with a note), fails when payloads are required.
        let without = bundle_of(&f, false);
        assert!(check(&without).ok());
        let r = requiring_payloads(&without);
        assert!(
            first(&r)
                .reason
                .contains("3 of 3 are missing from the bundle: record 4 (contribution)"),
            "{}",
            first(&r).reason
        );
        // With every payload present it passes and says how many.
        let mut complete = fixture(&[31, 32], None);
        complete
            .payloads
            .push((Digest::of(b"report message"), b"report message".to_vec()));
        let r = requiring_payloads(&bundle_of(&complete, true));
        assert!(r.ok(), "{:?}", r.failures);
        assert_eq!(r.payloads_present, Some(3));
        // One payload removed (manifest resealed): named.
        let mut b = bundle_of(&complete, true);
        let Record::Contribution { payload_digest, .. } = &complete.records[5] else {
            unreachable!()
        };
        b.files.remove(&format!("{PAYLOADS_DIR}/{}", payload_digest.to_hex()));
        b.reseal();
        let r = requiring_payloads(&b);
        let named = r
            .failures
            .iter()
            .find(|x| x.item == PAYLOADS_DIR)
            .expect("the requirement fails");
        assert!(
            named
                .reason
                .contains("1 of 3 are missing from the bundle: record 5 (contribution)"),
            "{}",
            named.reason
        );
    }
}
