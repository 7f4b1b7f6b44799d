//! Stage 1, bundle shape: the bundle in memory, its directory form and its manifest.
//!
//! [`Bundle::build`] packs an export (framed records, named checkpoint notes, proofs, payloads, the
//! manifest); [`check_manifest`] is the first verification stage: the manifest is canonical, has the
//! bundle format, and lists and hashes exactly the other files.

use super::tree::build_proofs;
use super::{
    AuditError, Report, BUNDLE_FORMAT, CHECKPOINTS_DIR, MANIFEST_FILE, MAX_FILES, MAX_FILE_LEN, PAYLOADS_DIR,
    PROOFS_FILE, RECORDS_FILE,
};
use crate::ledger::tree::MemoryTree;
use crate::ledger::{Checkpoint, Digest, SignedCheckpoint};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// `manifest.json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Manifest {
    pub(super) format: String,
    pub(super) payloads: bool,
    pub(super) files: BTreeMap<String, Digest>,
}

/// The one spelling of a bundle's JSON files: pretty JSON and a newline.
pub(super) fn canonical_json<T: Serialize>(v: &T) -> Vec<u8> {
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
        let proofs = build_proofs(&tree, &sizes).map_err(|e| AuditError::Export(e.to_string()))?;
        files.insert(PROOFS_FILE.to_string(), canonical_json(&proofs));
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

    /// The files under `dir/` (a bundle directory such as `checkpoints`), in name order.
    pub(super) fn files_under<'a>(&'a self, dir: &str) -> impl Iterator<Item = (&'a String, &'a Vec<u8>)> + 'a {
        let prefix = format!("{dir}/");
        self.files
            .range(prefix.clone()..)
            .take_while(move |(name, _)| name.starts_with(&prefix))
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

/// Stage 1: the manifest is present, valid, canonical, of the bundle format, and lists exactly the
/// other files with their SHA-256. Returns the manifest when it parses (even with failures), since
/// later stages read whether it declares payloads.
pub(super) fn check_manifest(bundle: &Bundle, report: &mut Report) -> Option<Manifest> {
    let Some(bytes) = bundle.files.get(MANIFEST_FILE) else {
        report.fail(MANIFEST_FILE, "missing");
        return None;
    };
    let m = match serde_json::from_slice::<Manifest>(bytes) {
        Err(e) => {
            report.fail(MANIFEST_FILE, format!("not a valid manifest: {e}"));
            return None;
        }
        Ok(m) => m,
    };
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

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    fn manifest_failures(b: &Bundle) -> (Option<Manifest>, Vec<(String, String)>) {
        let mut r = Report::default();
        let m = check_manifest(b, &mut r);
        (m, r.failures.into_iter().map(|f| (f.item, f.reason)).collect())
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
    fn a_built_bundle_has_a_complete_canonical_manifest() {
        let b = good();
        let (m, failures) = manifest_failures(&b);
        assert!(failures.is_empty(), "{failures:?}");
        let m = m.expect("parses");
        assert!(m.payloads);
        assert_eq!(
            m.files.len(),
            b.files.len() - 1,
            "every file but the manifest is listed"
        );
        let (m, failures) = manifest_failures(&bundle_of(&fixture(&[31, 32], None), false));
        assert!(failures.is_empty(), "{failures:?}");
        assert!(!m.expect("parses").payloads);
    }

    #[test]
    fn manifest_failures_name_the_file() {
        let b = good();
        // Missing manifest.
        let mut t = b.clone();
        t.files.remove(MANIFEST_FILE);
        let (m, f) = manifest_failures(&t);
        assert!(m.is_none());
        assert_eq!(f, vec![(MANIFEST_FILE.to_string(), "missing".to_string())]);
        // Not JSON.
        t.files.insert(MANIFEST_FILE.into(), b"{".to_vec());
        let (m, f) = manifest_failures(&t);
        assert!(m.is_none());
        assert!(f[0].1.starts_with("not a valid manifest"), "{f:?}");
        // Same content, another spelling.
        let mut t = b.clone();
        let compact: serde_json::Value = serde_json::from_slice(&b.files[MANIFEST_FILE]).expect("json");
        t.files
            .insert(MANIFEST_FILE.into(), serde_json::to_vec(&compact).expect("json"));
        let (m, f) = manifest_failures(&t);
        assert!(m.is_some());
        assert_eq!(
            f,
            vec![(MANIFEST_FILE.to_string(), "not in canonical form".to_string())]
        );
        // Another format.
        let mut t = b.clone();
        let text = String::from_utf8(b.files[MANIFEST_FILE].clone()).expect("utf-8");
        t.files.insert(
            MANIFEST_FILE.into(),
            text.replace(BUNDLE_FORMAT, "other/v9").into_bytes(),
        );
        let (_, f) = manifest_failures(&t);
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].1.contains("expected \"fedistill-audit-bundle/v1\""), "{f:?}");
        // A file changed, a file removed, a file added.
        let mut t = b.clone();
        if let Some(r) = t.files.get_mut(RECORDS_FILE) {
            r[0] ^= 1;
        }
        t.files.remove(PROOFS_FILE);
        t.files.insert("extra.txt".into(), b"hello".to_vec());
        let (_, f) = manifest_failures(&t);
        assert!(
            f.contains(&(RECORDS_FILE.into(), "contents do not match the manifest digest".into())),
            "{f:?}"
        );
        assert!(
            f.contains(&(PROOFS_FILE.into(), "listed in the manifest but missing".into())),
            "{f:?}"
        );
        assert!(
            f.contains(&("extra.txt".into(), "not listed in the manifest".into())),
            "{f:?}"
        );
        assert_eq!(f.len(), 3, "{f:?}");
    }

    #[test]
    fn files_under_lists_one_directory() {
        let b = good();
        let cps: Vec<&String> = b.files_under(CHECKPOINTS_DIR).map(|(n, _)| n).collect();
        assert_eq!(cps.len(), 3, "{cps:?}");
        assert!(cps.iter().all(|n| n.starts_with("checkpoints/")));
        assert_eq!(b.files_under(PAYLOADS_DIR).count(), 2);
        assert_eq!(b.files_under("nothing").count(), 0);
    }
}
