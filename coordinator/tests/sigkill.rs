//! SIGKILL while appending: a real process appends to the store in a loop and is killed at an
//! arbitrary point; on reopen every checkpoint it acknowledged must still be there (same root),
//! the log must verify, and appending must continue. Repeated three times on the same store.

use ed25519_dalek::SigningKey;
use fedistill_coordinator::store::Store;
use fedistill_shared::audit::{self, Bundle, ExportInput};
use fedistill_shared::ledger::note::Trust;
use fedistill_shared::ledger::tree::verify_consistency;
use fedistill_shared::ledger::Digest;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

const ORIGIN: &str = "fedistill.test/crash";

/// `cargo test` builds the package's examples next to the test binaries' parent directory.
fn example() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let debug = exe.parent().and_then(|p| p.parent()).expect("target/<profile>");
    debug
        .join("examples")
        .join(format!("append_loop{}", std::env::consts::EXE_SUFFIX))
}

#[test]
fn sigkill_mid_append_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("log.db");
    let mut acked: Vec<(u64, Digest)> = Vec::new();
    for _ in 0..3 {
        let mut child = Command::new(example())
            .arg(&db)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn target/<profile>/examples/append_loop: plain `cargo test` builds it; with `--test sigkill` run `cargo build --examples` first");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut fresh = 0;
        while fresh < 25 {
            let line = lines.next().expect("child still running").expect("utf8 line");
            let mut parts = line.split_whitespace().skip(1);
            let size: u64 = parts.next().and_then(|s| s.parse().ok()).expect("size");
            let root = Digest::from_hex(parts.next().expect("root")).expect("hex root");
            acked.push((size, root));
            fresh += 1;
        }
        child.kill().expect("SIGKILL");
        // Lines printed before the kill were acknowledged too.
        for line in lines.map_while(Result::ok) {
            let mut parts = line.split_whitespace().skip(1);
            if let (Some(size), Some(root)) = (parts.next(), parts.next()) {
                if let (Ok(size), Ok(root)) = (size.parse(), Digest::from_hex(root)) {
                    acked.push((size, root));
                }
            }
        }
        child.wait().expect("reap");

        let store = Store::open(&db, SigningKey::from_bytes(&[1; 32]), ORIGIN).expect("reopens after SIGKILL");
        let (last_size, last_root) = *acked.last().expect("acks");
        assert!(
            store.size() >= last_size,
            "lost acknowledged records: {} < {last_size}",
            store.size()
        );
        for &(size, root) in &acked {
            assert_eq!(
                store.root(size).expect("root"),
                root,
                "acknowledged checkpoint {size} changed"
            );
        }
        let head = store.checkpoint_latest();
        let proof = store.consistency_proof(last_size, head.checkpoint.size).expect("proof");
        verify_consistency(last_size, last_root, head.checkpoint.size, head.checkpoint.root, &proof)
            .expect("the log only grew");
        // The whole log verifies as an audit bundle.
        let sizes = store.checkpoint_sizes().expect("sizes");
        let bundle = Bundle::build(ExportInput {
            records: store.records_raw(0..head.checkpoint.size).expect("records"),
            checkpoints: sizes
                .iter()
                .filter_map(|s| store.checkpoint(*s).expect("checkpoint"))
                .collect(),
            payloads: None,
        })
        .expect("bundle");
        let trust = Trust {
            log: store.log_verifier(),
            witnesses: Vec::new(),
            quorum: 0,
        };
        let report = audit::verify(&bundle, &trust, None);
        assert!(report.ok(), "{:?}", report.failures);
    }
}
