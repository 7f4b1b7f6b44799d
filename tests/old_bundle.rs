//! Bundles exported by older builds (tests/fixtures/README.md) still verify with today's auditor, and
//! an edited copy does not.

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture() -> (PathBuf, PathBuf) {
    fixture_named("bundle-436f378")
}

fn fixture_named(name: &str) -> (PathBuf, PathBuf) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    (dir.join(name), dir.join(format!("{name}.trust.toml")))
}

fn verify(bundle: &Path, trust: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fedistill"))
        .args(["audit", "verify"])
        .arg(bundle)
        .arg("--trust")
        .arg(trust)
        .arg("--require-payloads")
        .output()
        .expect("run fedistill audit verify");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

#[test]
fn a_bundle_exported_before_the_hardening_and_the_restructure_still_verifies() {
    let (bundle, trust) = fixture();
    let (ok, text) = verify(&bundle, &trust);
    assert!(ok, "{text}");
    assert!(text.starts_with("OK: 20 records, 13 checkpoints"), "{text}");
    assert!(text.contains("2 aggregates recomputed bit for bit"), "{text}");
    assert!(text.contains("all 12 record payloads present"), "{text}");
}

#[test]
fn a_secure_aggregation_bundle_exported_before_the_protocol_core_owned_record_assembly_still_verifies() {
    let (bundle, trust) = fixture_named("bundle-09a5ae1-secure");
    let (ok, text) = verify(&bundle, &trust);
    assert!(ok, "{text}");
    assert!(text.starts_with("OK: 23 records, 13 checkpoints"), "{text}");
    assert!(text.contains("2 aggregates recomputed bit for bit"), "{text}");
    assert!(text.contains("all 14 record payloads present"), "{text}");
}

#[test]
fn an_edited_copy_of_the_old_bundle_is_refused() {
    let (bundle, trust) = fixture();
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("bundle");
    copy_dir(&bundle, &copy);
    // Flip one byte in the middle of the record log.
    let records = copy.join("records.bin");
    let mut bytes = std::fs::read(&records).expect("read records");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&records, bytes).expect("write records");
    let (ok, text) = verify(&copy, &trust);
    assert!(!ok, "an edited bundle verified: {text}");
    assert!(text.starts_with("FAILED"), "{text}");
    assert!(
        text.contains("records.bin: contents do not match the manifest digest"),
        "{text}"
    );
    assert!(text.contains("root does not match the records in the bundle"), "{text}");
}
