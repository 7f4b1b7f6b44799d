//! End-to-end tests of `fedistill size`: a `--quick` run on the embedded `digits` set chooses within the budget,
//! its report agrees with its remeasured figures, the written config drives `fedistill local` to the same
//! student; an impossible budget names the closest candidates; bad flags are clear errors before any work.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn fedistill(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fedistill"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    match cmd.output() {
        Ok(o) => o,
        Err(e) => panic!("cannot run fedistill: {e}"),
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap_or_else(|| panic!("non-UTF-8 path {}", p.display()))
}

/// Every candidate of the quick grid (3 architectures x 4 profiles) is in the report.
const QUICK_CANDIDATES: usize = 12;

#[test]
fn quick_run_chooses_within_the_budget_and_writes_a_config_local_reproduces() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let (out, report) = (dir.path().join("student.toml"), dir.path().join("report"));
    // Memory binds (the f32 and f16 candidates are over 5 KB, deterministically); a 1 s latency never does.
    let o = fedistill(
        &[
            "size",
            "--quick",
            "--dataset",
            "digits",
            "--seed",
            "3",
            "--threads",
            "1",
            "--latency-us",
            "1000000",
            "--memory-kb",
            "5",
            "--out",
            s(&out),
            "--report",
            s(&report),
        ],
        &[],
    );
    let all = text(&o);
    assert!(o.status.success(), "{all}");
    assert!(
        all.contains("candidate") && all.contains("memory_KB") && all.contains(" *"),
        "table missing: {all}"
    );
    let r = json(&report.join("size.json"));
    let budget_bytes = f(&r["budget"]["memory_bytes"]);
    assert_eq!(budget_bytes, 5.0 * 1024.0);
    let cands = r["candidates"]
        .as_array()
        .unwrap_or_else(|| panic!("no candidates: {r}"));
    assert_eq!(cands.len(), QUICK_CANDIDATES);
    let chosen_name = r["chosen"].as_str().unwrap_or_else(|| panic!("nothing chosen: {r}"));
    let chosen = cands
        .iter()
        .find(|c| c["name"] == chosen_name)
        .unwrap_or_else(|| panic!("{chosen_name} is not a candidate"));
    // Memory is computed, not timed: the choice is within the budget, and some candidates are not.
    assert!(f(&chosen["memory_bytes"]) <= budget_bytes, "{chosen}");
    assert!(
        cands.iter().any(|c| c["meets_memory"] == false),
        "5 KB excludes nothing"
    );
    for c in cands {
        assert_eq!(
            c["memory_bytes"].as_u64(),
            Some(c["weight_bytes"].as_u64().unwrap_or(0) + c["activation_bytes"].as_u64().unwrap_or(0)),
            "{c}"
        );
        assert_eq!(c["meets_memory"], f(&c["memory_bytes"]) <= budget_bytes, "{c}");
        // Nothing within the budget is more accurate than the choice.
        if c["meets_budget"] == true {
            assert!(f(&c["accuracy"]) <= f(&chosen["accuracy"]), "{c} beats {chosen}");
        }
    }
    // The report's verdict is the remeasured figures against the budget.
    let re = &r["remeasured"];
    let agrees = f(&re["latency_p50_us"]) <= f(&r["budget"]["latency_us"]) && f(&re["memory_bytes"]) <= budget_bytes;
    assert_eq!(r["meets_budget"], agrees, "{re}");
    assert_eq!(
        re["memory_bytes"], chosen["memory_bytes"],
        "read back from the file, same memory"
    );
    assert_eq!(
        re["accuracy"], chosen["test_accuracy"],
        "read back from the file, same predictions on the held-out rows"
    );
    for file in [
        "size.md",
        "size-latency.png",
        "size-latency.svg",
        "size-memory.png",
        "size-memory.svg",
    ] {
        let len = std::fs::metadata(report.join(file)).map_or(0, |m| m.len());
        assert!(len > 0, "{file} missing or empty");
    }
    // The written config: the chosen architecture, the profile in a comment, loadable by `fedistill local`.
    let toml = std::fs::read_to_string(&out).unwrap_or_else(|e| panic!("reading --out: {e}"));
    let profile = chosen["profile"].as_str().unwrap_or("?");
    assert!(toml.contains(&format!("# Quantization profile: {profile}.")), "{toml}");
    assert_eq!(r["config_toml"].as_str(), Some(toml.as_str()));
    // Same seed, epochs and thread count: `fedistill local` distills the very student `size` measured in f32.
    let local_report = dir.path().join("local.json");
    let epochs = |v: &Value| v.as_u64().unwrap_or(0).to_string();
    let o = fedistill(
        &[
            "local",
            "--dataset",
            "digits",
            "--seed",
            "3",
            "--student",
            s(&out),
            "--teacher-epochs",
            &epochs(&r["teacher"]["epochs"]),
            "--distill-epochs",
            &epochs(&r["distill_epochs"]),
            "--report",
            s(&local_report),
        ],
        &[("RAYON_NUM_THREADS", "1")],
    );
    assert!(o.status.success(), "local --student: {}", text(&o));
    let l = json(&local_report);
    assert_eq!(l["student"]["config"]["hidden"], chosen["hidden"]);
    assert_eq!(
        l["student"]["accuracy"], chosen["accuracy_f32"],
        "size's distillation no longer mirrors fedistill local's (shared/ml/src/local.rs)"
    );
    assert_eq!(l["teacher"]["accuracy"], r["teacher"]["accuracy"]);
    // A participant uses it as its comment says: the [model] table as the node's [student].
    let node = format!(
        "kit = \"kit\"\nworkdir = \"work\"\nshard = 0\n[data]\ndataset = \"digits\"\nparticipants = 3\n{}",
        toml.replace("[model]", "[student]")
    );
    let settings = fedistill_participant::config::ParticipantSettings::parse(&node, dir.path())
        .unwrap_or_else(|e| panic!("a participant refuses size's [model] as its [student]: {e:#}\n{node}"));
    match settings.student {
        Some(fedistill_shared::ml::ModelConfig::Mlp { hidden }) => {
            assert_eq!(serde_json::json!(hidden), chosen["hidden"], "{node}")
        }
        other => panic!("the participant's student is not the chosen MLP: {other:?}"),
    }
}

#[test]
fn impossible_budget_names_the_closest_candidates_and_writes_no_config() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let (out, report) = (dir.path().join("student.toml"), dir.path().join("report"));
    let o = fedistill(
        &[
            "size",
            "--quick",
            "--dataset",
            "digits",
            "--seed",
            "3",
            "--latency-us",
            "0.001",
            "--memory-kb",
            "0.5",
            "--out",
            s(&out),
            "--report",
            s(&report),
        ],
        &[],
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no candidate meets --latency-us 0.001 --memory-kb 0.5: the closest is mlp ["),
        "{err}"
    );
    assert!(err.contains(" KB, ") && err.contains("x over)"), "{err}");
    // The table was printed, no config was written, and the report records the miss.
    assert!(String::from_utf8_lossy(&o.stdout).contains("memory_KB"));
    assert!(!out.exists(), "--out must not be written when nothing fits");
    let r = json(&report.join("size.json"));
    assert_eq!(r["chosen"], Value::Null);
    assert_eq!(r["meets_budget"], false);
    let closest = r["closest"].as_array().map_or(0, Vec::len);
    assert!((1..=3).contains(&closest), "{r}");
    let first = r["closest"][0].as_str().unwrap_or("?");
    assert!(err.contains(&format!("the closest is {first} (")), "{err} vs {first}");
}

#[test]
fn bad_flags_are_clear_errors_before_any_work() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let missing_dir = dir.path().join("no").join("x.toml");
    let a_file = dir.path().join("file");
    std::fs::write(&a_file, "x").unwrap_or_else(|e| panic!("write: {e}"));
    let ok = ["--latency-us", "10", "--memory-kb", "100"];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--latency-us", "0", "--memory-kb", "100"],
            "--latency-us must be > 0, got 0",
        ),
        (
            vec!["--latency-us", "-5", "--memory-kb", "100"],
            "--latency-us must be > 0, got -5",
        ),
        (
            vec!["--latency-us", "NaN", "--memory-kb", "100"],
            "--latency-us must be a finite number, got NaN",
        ),
        (
            vec!["--latency-us", "inf", "--memory-kb", "100"],
            "--latency-us must be a finite number",
        ),
        (
            vec!["--latency-us", "1e9", "--memory-kb", "100"],
            "--latency-us 1000000000 is absurd",
        ),
        (
            vec!["--latency-us", "10", "--memory-kb", "0"],
            "--memory-kb must be > 0, got 0",
        ),
        (
            vec!["--latency-us", "10", "--memory-kb", "-1"],
            "--memory-kb must be > 0, got -1",
        ),
        (
            vec!["--latency-us", "10", "--memory-kb", "nan"],
            "--memory-kb must be a finite number",
        ),
        (
            vec!["--latency-us", "10", "--memory-kb", "1e12"],
            "--memory-kb 1000000000000 is absurd",
        ),
        (vec!["--latency-us", "ten", "--memory-kb", "100"], "--latency-us"),
        (vec!["--memory-kb", "100"], "--latency-us"),
        (vec!["--threads", "0"], "--threads must be at least 1, got 0"),
        (vec!["--threads", "5000"], "--threads 5000 is absurd"),
        (vec!["--dataset", "nope"], "unknown dataset `nope`"),
        (vec!["--out", s(&missing_dir)], "is not writable"),
        (vec!["--out", s(dir.path())], "is a directory"),
        (vec!["--report", s(&a_file)], "is not a directory"),
    ];
    for (extra, want) in cases {
        let mut args = vec!["size", "--quick"];
        // A case that sets a budget flag replaces the valid budget.
        if !extra
            .iter()
            .any(|a| a.starts_with("--latency-us") || a.starts_with("--memory-kb"))
        {
            args.extend(ok);
        }
        args.extend(&extra);
        let o = fedistill(&args, &[]);
        let all = text(&o);
        assert!(!o.status.success(), "{extra:?} was accepted: {all}");
        assert!(all.contains(want), "{extra:?}: {all} lacks {want}");
        // Rejected before the teacher was trained.
        assert!(!all.contains("teacher:"), "{extra:?} started work: {all}");
    }
    assert_eq!(std::fs::read_to_string(&a_file).unwrap_or_default(), "x");
    assert!(!missing_dir.exists());
}
