//! End-to-end test of `fedistill demo`: a real federation of processes (coordinator + participants over
//! mTLS QUIC on loopback) on a small embedded dataset, checking the JSON report and the kept artifacts.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_fedistill");

#[test]
fn demo_runs_a_federation_and_its_log_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("run");
    let report = dir.path().join("report.json");
    let out = Command::new(BIN)
        .args([
            "demo",
            "--dataset",
            "breast-cancer",
            "--participants",
            "3",
            "--rounds",
            "2",
            "--seed",
            "5",
        ])
        .arg("--workdir")
        .arg(&work)
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["dataset"], "breast-cancer");
    assert_eq!(r["participants"], 3);
    assert_eq!(r["per_round"].as_array().unwrap().len(), 2, "{r}");
    for row in r["per_round"].as_array().unwrap() {
        assert!(row["bytes_up"].as_u64().unwrap() > 0);
        assert!(row["bytes_down"].as_u64().unwrap() > 0);
        let a = row["student_accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&a));
    }
    for key in [
        &r["final"]["student_accuracy"],
        &r["final"]["int8_accuracy"],
        &r["baselines"]["local_only_accuracy"],
        &r["baselines"]["centralized_accuracy"],
    ] {
        let v = key.as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{v}");
    }
    // A distilled student on this dataset is far better than chance.
    assert!(r["final"]["student_accuracy"].as_f64().unwrap() > 0.8, "{r}");
    assert_eq!(r["audit"]["verified"], true, "{}", r["audit"]["output"]);
    // The kept artifacts let anyone re-run the auditor's check.
    assert!(work.join("audit-bundle").is_dir());
    assert!(work.join("trust.toml").is_file());
    let verify = Command::new(BIN)
        .args(["audit", "verify"])
        .arg(work.join("audit-bundle"))
        .arg("--trust")
        .arg(work.join("trust.toml"))
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
    // Each participant kept its served student, its INT8 export and per-round artifacts.
    for p in ["p0", "p1", "p2"] {
        let w = work.join("work").join(p);
        assert!(w.join("student.safetensors").is_file());
        assert!(w.join("student-int8.gguf").is_file());
        assert!(w.join("round-0001").join("metrics.json").is_file());
        // The demo refreshes each teacher from the consensus after every round but the last ([refresh]).
        let log = std::fs::read_to_string(work.join("logs").join(format!("{p}.log"))).unwrap();
        assert_eq!(
            log.matches("teacher refreshed from the consensus").count(),
            1,
            "{p}: {log}"
        );
    }
}

#[test]
fn demo_refuses_bad_flags_clearly() {
    for (args, needle) in [
        (vec!["demo", "--participants", "1"], "--participants must be at least 2"),
        (vec!["demo", "--alpha", "0"], "--alpha must be > 0"),
        (vec!["demo", "--rule", "average"], "unknown aggregation rule"),
        (vec!["demo", "--encoding", "int4"], "unknown soft-label encoding"),
        (vec!["demo", "--dataset", "cifar-10"], "cifar-10"),
    ] {
        let out = Command::new(BIN).args(&args).output().unwrap();
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}
