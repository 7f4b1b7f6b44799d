//! The round state machines are sans-IO (docs/ARCHITECTURE.md, "Invariants"): nothing under
//! `src/protocol/` opens a file or a socket, reads the clock, draws OS randomness or starts a thread. Time
//! and seeded RNGs come in as arguments, which is what lets `protocol::sim` replay a federation on a
//! virtual clock. The crate's only clock read (`SeqCeiling::WallClock`) and its only OS randomness
//! (`SigningIdentity::generate`) live in `src/crypto/`, and this test pins them there too.

use std::path::{Path, PathBuf};

/// What a sans-IO module may not name. Matched as plain text, comments included, so a doc comment that
/// mentions one of these must be reworded: the check stays simple and cannot be dodged by an alias.
const FORBIDDEN: [&str; 14] = [
    "std::fs",
    "std::net",
    "std::io::stdin",
    "std::process",
    "std::thread",
    "std::env",
    "SystemTime",
    "Instant",
    "getrandom",
    "OsRng",
    "thread_rng",
    "rand::rng(",
    "from_entropy",
    "from_os_rng",
];

fn rust_files_under(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .expect("read source dir")
            .map(|e| e.expect("dir entry").path())
            .collect();
        entries.sort();
        for e in entries {
            rust_files_under(&e, out);
        }
    } else if path.is_file() && path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_path_buf());
    }
}

/// Every (file, forbidden name) pair in `files`, file names relative to `root`.
fn findings(root: &Path, files: &[PathBuf]) -> Vec<String> {
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).expect("read source");
        for name in FORBIDDEN {
            if text.contains(name) {
                found.push(format!(
                    "{} names `{name}`",
                    file.strip_prefix(root).unwrap_or(file).display()
                ));
            }
        }
    }
    found
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn the_round_state_machines_name_no_io_clock_or_os_randomness() {
    let root = src();
    let mut files = Vec::new();
    rust_files_under(&root.join("protocol"), &mut files);
    rust_files_under(&root.join("protocol.rs"), &mut files);
    rust_files_under(&root.join("wire"), &mut files);
    rust_files_under(&root.join("codec.rs"), &mut files);
    assert!(files.len() >= 10, "too few files scanned: {files:?}");
    let found = findings(&root, &files);
    assert!(
        found.is_empty(),
        "the protocol core's state machines, wire types and codec must stay sans-IO (time and RNGs are \
         arguments):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_crate_reads_the_clock_and_os_randomness_in_exactly_one_place_each() {
    let root = src();
    let mut files = Vec::new();
    rust_files_under(&root.join("crypto"), &mut files);
    let found = findings(&root, &files);
    // Tests may read the clock; only non-test sources are pinned.
    let found: Vec<&String> = found.iter().filter(|f| !f.contains("tests.rs")).collect();
    assert_eq!(
        found,
        [
            "crypto/keys.rs names `getrandom`",
            "crypto/signed.rs names `SystemTime`",
        ]
        .iter()
        .collect::<Vec<_>>(),
        "the crypto module's clock and OS-randomness reads moved or multiplied: update docs/ARCHITECTURE.md"
    );
}

#[test]
fn the_scan_finds_each_forbidden_name_so_the_checks_above_can_fail() {
    let dir = std::env::temp_dir().join(format!("fedistill-sans-io-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("bad.rs");
    std::fs::write(
        &file,
        "fn f() { let _ = std::time::Instant::now(); let _ = std::fs::read(\"x\"); }",
    )
    .expect("write probe");
    let found = findings(&dir, &[file]);
    std::fs::remove_dir_all(&dir).expect("clean up");
    assert_eq!(found, ["bad.rs names `std::fs`", "bad.rs names `Instant`"]);
}
