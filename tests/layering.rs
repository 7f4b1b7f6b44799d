//! Crate boundaries that docs/ARCHITECTURE.md promises, checked against the real dependency graph with
//! `cargo tree` (offline; it reads Cargo.lock): the protocol core pulls in no async runtime, no QUIC and no
//! ML stack, and the shared library no async runtime and no QUIC (that glue lives in fedistill-transport).

use std::process::Command;

/// Every package (name only) in the normal (non-dev) dependency tree of `package`.
fn dependency_names(package: &str) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
            "-p",
            package,
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn the_protocol_crate_depends_on_no_runtime_transport_or_ml_stack() {
    let names = dependency_names("fedistill-protocol");
    assert!(names.iter().any(|n| n == "fedistill-ledger"), "{names:?}");
    let forbidden: Vec<&String> = names
        .iter()
        .filter(|n| {
            ["tokio", "quinn", "candle", "rustls", "fedistill-ml", "fedistill-data"]
                .iter()
                .any(|f| n.starts_with(f))
        })
        .collect();
    assert!(
        forbidden.is_empty(),
        "fedistill-protocol must stay free of I/O and ML crates, found {forbidden:?}"
    );
}

/// The names in `names` that start with one of `prefixes`.
fn starting_with<'a>(names: &'a [String], prefixes: &[&str]) -> Vec<&'a String> {
    names
        .iter()
        .filter(|n| prefixes.iter().any(|p| n.starts_with(p)))
        .collect()
}

#[test]
fn the_shared_library_depends_on_no_async_runtime_or_quic() {
    let names = dependency_names("fedistill-shared");
    assert!(names.iter().any(|n| n == "fedistill-protocol"), "{names:?}");
    assert!(
        names.iter().any(|n| n == "rustls"),
        "the TLS configs stay in fedistill-shared: {names:?}"
    );
    let forbidden = starting_with(&names, &["tokio", "quinn", "fedistill-transport"]);
    assert!(
        forbidden.is_empty(),
        "fedistill-shared must stay free of tokio and quinn (the QUIC glue lives in fedistill-transport), \
         found {forbidden:?}"
    );
}

#[test]
fn the_transport_crate_does_pull_quic_in_so_the_check_above_can_fail() {
    let names = dependency_names("fedistill-transport");
    assert!(names.iter().any(|n| n == "fedistill-shared"), "{names:?}");
    assert!(names.iter().any(|n| n == "quinn"), "{names:?}");
    assert!(names.iter().any(|n| n == "tokio"), "{names:?}");
}

/// The modules of `fedistill-protocol` in layer order: each may import only the ones before it.
const PROTOCOL_LAYERS: [&str; 4] = ["codec", "crypto", "wire", "protocol"];

/// Every crate-root module that `source` names: `crate::m` (and `$crate::m`), the names inside
/// `crate::{...}` groups, and `super::m` / `super::super::m` (comments and doc links count too, so a doc
/// link against the order fails just like an import).
fn crate_modules_named(source: &str) -> Vec<String> {
    fn ident_at(s: &str) -> String {
        s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect()
    }
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut found = Vec::new();
    for (prefix, grouped) in [("crate::", true), ("super::", false)] {
        for (at, _) in source.match_indices(prefix) {
            let before = &source[..at];
            if before.ends_with("super::") || before.chars().next_back().is_some_and(is_ident) {
                continue;
            }
            let mut rest = &source[at + prefix.len()..];
            if !grouped {
                while let Some(r) = rest.strip_prefix("super::") {
                    rest = r;
                }
            }
            if let Some(group) = rest.strip_prefix('{').filter(|_| grouped) {
                // Top-level items of the group: `crate::{a, b::{c, d}, e as f}` names a, b and e.
                let mut depth = 0usize;
                let mut item_start = true;
                for (i, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => item_start = true,
                        c if c.is_whitespace() => {}
                        _ if item_start && depth == 0 => {
                            item_start = false;
                            found.push(ident_at(&group[i..]));
                        }
                        _ => {}
                    }
                }
            } else {
                let name = ident_at(rest);
                if !name.is_empty() {
                    found.push(name);
                }
            }
        }
    }
    found
}

/// The layering violations in `source`, a file of the module at `layer` (an index into
/// [`PROTOCOL_LAYERS`]): every named module at the same layer's successors.
fn layering_violations(layer: usize, source: &str) -> Vec<String> {
    let above = &PROTOCOL_LAYERS[layer + 1..];
    crate_modules_named(source)
        .into_iter()
        .filter(|m| above.contains(&m.as_str()))
        .collect()
}

fn rust_files_under(path: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    if path.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)
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

#[test]
fn protocol_modules_import_only_the_layers_below_them() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shared/protocol/src");
    let mut checked = Vec::new();
    let mut violations = Vec::new();
    for (layer, module) in PROTOCOL_LAYERS.iter().enumerate().take(PROTOCOL_LAYERS.len() - 1) {
        let mut files = Vec::new();
        rust_files_under(&src.join(format!("{module}.rs")), &mut files);
        rust_files_under(&src.join(module), &mut files);
        assert!(
            !files.is_empty(),
            "no sources found for module {module} under {}",
            src.display()
        );
        for file in files {
            let text = std::fs::read_to_string(&file).expect("read source");
            for bad in layering_violations(layer, &text) {
                violations.push(format!(
                    "{} (module `{module}`) names `{bad}`",
                    file.strip_prefix(&src).unwrap_or(&file).display()
                ));
            }
            checked.push(file);
        }
    }
    assert!(checked.len() >= 8, "too few files scanned: {checked:?}");
    assert!(
        violations.is_empty(),
        "fedistill-protocol layering is codec <- crypto <- wire <- protocol (docs/ARCHITECTURE.md, \"Crates\"); \
         a module may only name modules before it:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_layering_scan_catches_every_form_of_import_so_the_check_above_can_fail() {
    let [codec, crypto, wire, protocol] = [0, 1, 2, 3];
    assert_eq!(
        layering_violations(wire, "use crate::protocol::{AggregationRule, Encoding};"),
        ["protocol"]
    );
    assert_eq!(
        layering_violations(crypto, "use crate::{codec::bytes, wire::frame::FrameKind};"),
        ["wire"]
    );
    assert_eq!(
        layering_violations(codec, "#[serde(with = \"crate::crypto::x\")]"),
        ["crypto"]
    );
    assert_eq!(
        layering_violations(crypto, "use super::super::protocol::Millis;"),
        ["protocol"]
    );
    assert_eq!(layering_violations(codec, "/// see [`crate::wire::frame`]"), ["wire"]);
    assert!(layering_violations(wire, "use crate::crypto::Digest; use crate::codec::{self, CodecError};").is_empty());
    assert!(layering_violations(wire, "use super::frame::FrameKind; use crate::wire_protocol::X;").is_empty());
    assert!(layering_violations(protocol, "use crate::{codec, crypto, wire};").is_empty());
    assert_eq!(
        layering_violations(crypto, "macro_rules! m { () => { $crate::wire::X } }"),
        ["wire"]
    );
    assert!(layering_violations(crypto, "use other_crate::wire; use fedistill_ledger::protocol;").is_empty());
}

// The round state machines are sans-IO (docs/ARCHITECTURE.md, "Invariants"): nothing under the protocol
// crate's `protocol/`, `wire/` and `codec` opens a file or a socket, reads the clock, draws OS randomness or
// starts a thread. Time and seeded RNGs come in as arguments, which is what lets `protocol::sim` replay a
// federation on a virtual clock. The crate's only clock read (`SeqCeiling::WallClock`) and its only OS
// randomness (`SigningIdentity::generate`) live in `crypto/`, and the second test pins them there.

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

fn protocol_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("shared/protocol/src")
}

#[test]
fn the_round_state_machines_name_no_io_clock_or_os_randomness() {
    let root = protocol_src();
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
    let root = protocol_src();
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
