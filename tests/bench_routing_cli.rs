//! End-to-end test of `fedistill bench routing --quick --report DIR`: the real binary trains both tasks'
//! teachers and every student on split-MNIST and writes its report; asserts the report's shape, that every
//! accuracy is a fraction, that forgetting is before - after, and that plain fine-tuning forgets digits 0-4
//! (the class-incremental failure the suite exists to measure). Bad flags fail at once with a clear message.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_fedistill");
const METHODS: [&str; 5] = [
    "finetune",
    "replay",
    "routing",
    "routing-supervised",
    "routing-no-replay",
];

fn fraction(v: &serde_json::Value, key: &str) -> f64 {
    let x = v[key].as_f64().unwrap_or_else(|| panic!("{key} missing in {v}"));
    assert!(x.is_finite() && (0.0..=1.0).contains(&x), "{key} = {x} in {v}");
    x
}

#[test]
fn quick_routing_suite_reports_forgetting_per_method() {
    let dir = tempfile::tempdir().expect("tempdir");
    let report = dir.path().join("report");
    let out = Command::new(BIN)
        .args(["bench", "routing", "--quick", "--report"])
        .arg(&report)
        .output()
        .expect("running fedistill");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench routing failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for m in METHODS {
        assert!(stdout.contains(&format!("| {m} |")), "stdout lacks {m}:\n{stdout}");
    }

    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.join("routing.json")).expect("routing.json")).expect("json");
    assert_eq!(r["suite"], "routing");
    assert_eq!(r["quick"], true);
    assert_eq!(r["seeds"], serde_json::json!([1]));
    assert_eq!(
        (
            r["top_k"].as_u64(),
            r["experts_before"].as_u64(),
            r["experts_after"].as_u64()
        ),
        (Some(1), Some(1), Some(2))
    );
    let sequences = r["sequences"].as_array().expect("sequences");
    assert_eq!(sequences.len(), 1);
    let s = &sequences[0];
    assert_eq!(s["sequence"], "split-mnist");
    for t in 0..2 {
        assert!(s["train_samples"][t].as_u64().is_some_and(|n| n > 0), "{s}");
        assert!(s["test_samples"][t].as_u64().is_some_and(|n| n > 0), "{s}");
        fraction(&s["teacher_accuracy"][t], "mean");
    }
    let methods = s["methods"].as_array().expect("methods");
    let names: Vec<&str> = methods.iter().filter_map(|m| m["method"].as_str()).collect();
    assert_eq!(names, METHODS);
    let replay = r["replay_capacity"].as_u64().expect("replay_capacity");
    for m in methods {
        let name = m["method"].as_str().unwrap_or_default();
        let routing = name.starts_with("routing");
        assert!(m["params"].as_u64().is_some_and(|p| p > 50_000), "{m}");
        let replays = matches!(name, "replay" | "routing" | "routing-supervised");
        assert_eq!(
            m["replay_capacity"].as_u64(),
            Some(if replays { replay } else { 0 }),
            "{m}"
        );
        assert_eq!(m["experts"].as_u64(), routing.then_some(2), "{m}");
        let (before, after) = (
            fraction(&m["task1_before"], "mean"),
            fraction(&m["task1_after"], "mean"),
        );
        fraction(&m["task2_after"], "mean");
        let forgetting = m["forgetting"]["mean"].as_f64().expect("forgetting");
        assert!((forgetting - (before - after)).abs() < 1e-9, "{m}");
        // One seed: no spread.
        assert_eq!(m["task1_after"]["sd"].as_f64(), Some(0.0), "{m}");
        let runs = m["runs"].as_array().expect("runs");
        assert_eq!(runs.len(), 1);
        let run = &runs[0];
        assert_eq!(run["seed"].as_u64(), Some(1));
        let (b, a) = (fraction(run, "task1_before"), fraction(run, "task1_after"));
        fraction(run, "task2_after");
        assert_eq!(run["forgetting"].as_f64(), Some(b - a), "{run}");
        // Every student learnt task 1 before task 2 came.
        assert!(b > 0.5, "{name} learnt too little of task 1: {run}");
        for key in ["task1_to_old_experts", "task2_to_new_expert"] {
            if routing {
                fraction(run, key);
                fraction(&m[key], "mean");
            } else {
                assert!(run[key].is_null() && m[key].is_null(), "{name}: {key} should be null");
            }
        }
    }
    // Distilling digits 5-9 from a teacher that never saw 0-4, with nothing to remind it, wipes out task 1.
    let after = |i: usize| methods[i]["task1_after"]["mean"].as_f64().unwrap_or(1.0);
    assert!(after(0) < 0.2, "fine-tuning kept {} of task 1", after(0));
    assert!(after(4) < 0.2, "routing without replay kept {} of task 1", after(4));

    for file in ["routing.md", "routing-split-mnist.png", "routing-split-mnist.svg"] {
        let len = std::fs::metadata(report.join(file)).map(|m| m.len()).unwrap_or(0);
        assert!(len > 0, "{file} missing or empty");
    }
    let md = std::fs::read_to_string(report.join("routing.md")).expect("routing.md");
    assert!(
        md.contains("| routing-supervised |") && md.contains("forgetting"),
        "{md}"
    );
}

/// Each bad flag is refused before any data is read, naming the flag.
#[test]
fn bad_flags_fail_with_a_clear_message() {
    let cases: [(&[&str], &str); 5] = [
        (&["--top-k", "3"], "--top-k must be 1 or 2"),
        (&["--sequences", "cifar"], "unknown sequence \"cifar\""),
        (&["--replay", "0"], "--replay must be in 1..=1000000"),
        (&["--epochs", "0"], "--epochs must be in 1..=1000"),
        (&["--seeds", "1,1"], "seed 1 is given twice"),
    ];
    for (args, want) in cases {
        let out = Command::new(BIN)
            .args(["bench", "routing", "--quick"])
            .args(args)
            .output()
            .expect("running fedistill");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(want), "{args:?}: stderr lacks {want:?}:\n{stderr}");
    }
    // A sequence whose dataset is not installed names the dataset and how to get it.
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(BIN)
        .args([
            "bench",
            "routing",
            "--quick",
            "--sequences",
            "mnist-fashion",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .expect("running fedistill");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("fashion-mnist") && stderr.contains("apt-get install"),
        "{stderr}"
    );
}
