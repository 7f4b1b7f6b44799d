//! `fedistill bench stages --quick` as a real process: the report's JSON shape (every configuration of the
//! ablation with its stage schedule, accuracies that are fractions, the same passes for every configuration),
//! the Markdown and the plot; and a clear error for each bad flag.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn fedistill() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fedistill"))
}

fn read_json(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn fraction(v: &Value) -> f64 {
    let x = v.as_f64().unwrap_or(f64::NAN);
    assert!(x.is_finite() && (0.0..=1.0).contains(&x), "{v} is not a fraction");
    x
}

#[test]
fn stages_quick_reports_every_configuration() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let out = fedistill()
        .args(["bench", "stages", "--quick", "--report"])
        .arg(dir.path())
        .output()
        .unwrap_or_else(|e| panic!("running fedistill: {e}"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("| dataset | epochs (stage) | teacher |"), "{stdout}");
    let rep = read_json(&dir.path().join("stages.json"));
    assert_eq!(rep["quick"], true);
    assert_eq!(rep["seeds"], serde_json::json!([1]));
    let datasets = rep["datasets"]
        .as_array()
        .unwrap_or_else(|| panic!("no datasets: {rep}"));
    assert_eq!(datasets.len(), 1);
    let d = &datasets[0];
    assert_eq!(d["dataset"], "digits");
    let total = d["epochs"].as_u64().unwrap_or(0);
    let stage_epochs = d["stage_epochs"].as_u64().unwrap_or(0);
    assert!(total > 2 * stage_epochs && stage_epochs > 0, "{d}");
    // The teacher learnt the task (10 classes: chance is 0.1).
    assert!(fraction(&d["teacher"]["mean"]) > 0.5, "{}", d["teacher"]);
    let configs = d["configurations"]
        .as_array()
        .unwrap_or_else(|| panic!("no configurations: {d}"));
    let names: Vec<&str> = configs.iter().filter_map(|c| c["configuration"].as_str()).collect();
    assert_eq!(names, ["kd_only", "feature_alignment", "gradient_guidance", "both"]);
    let expect_on = [(false, false), (true, false), (false, true), (true, true)];
    for (c, (s1, s2)) in configs.iter().zip(expect_on) {
        let acc = fraction(&c["accuracy"]["mean"]);
        assert!(acc > 0.3, "{} learnt nothing: {acc}", c["configuration"]);
        let runs = c["runs"].as_array().unwrap_or_else(|| panic!("no runs: {c}"));
        assert_eq!(runs.len(), 1);
        assert_eq!(fraction(&runs[0]["accuracy"]), acc);
        let stages = runs[0]["stages"].as_array().unwrap_or_else(|| panic!("no stages: {c}"));
        let got: Vec<(&str, bool)> = stages
            .iter()
            .map(|s| (s["name"].as_str().unwrap_or(""), s["enabled"] == true))
            .collect();
        assert_eq!(
            got,
            [
                ("feature_alignment", s1),
                ("gradient_guidance", s2),
                ("temperature_kd", true)
            ],
            "{}",
            c["configuration"]
        );
        // Every configuration makes the same passes; enabled stages report a finite loss, others null.
        let epochs: u64 = stages
            .iter()
            .filter(|s| s["enabled"] == true)
            .map(|s| s["epochs"].as_u64().unwrap_or(0))
            .sum();
        assert_eq!(epochs, total, "{}", c["configuration"]);
        for s in stages {
            let loss = &s["final_loss"];
            if s["enabled"] == true {
                assert!(loss.as_f64().is_some_and(f64::is_finite), "{s}");
            } else {
                assert!(loss.is_null(), "{s}");
            }
        }
    }
    assert_eq!(configs[0]["delta_points"].as_f64(), Some(0.0));
    assert_eq!(rep["mean_delta_points"].as_array().map(Vec::len), Some(4));
    let md = std::fs::read_to_string(dir.path().join("stages.md")).unwrap_or_default();
    assert!(md.contains("+ stages 1, 2") && md.contains("digits"), "{md}");
    let png = std::fs::read(dir.path().join("stages-accuracy.png")).unwrap_or_default();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "stages-accuracy.png is not a PNG"
    );
    let svg = std::fs::read_to_string(dir.path().join("stages-accuracy.svg")).unwrap_or_default();
    assert!(svg.contains("<svg"), "stages-accuracy.svg is not an SVG");
}

#[test]
fn stages_bad_flags_fail_clearly() {
    for (args, needle) in [
        (vec!["--datasets", "no-such-data"], "no-such-data"),
        (vec!["--seeds", "1,1"], "seed 1 is given twice"),
        (vec!["--seeds", "x"], "invalid value"),
        // Convolutional models need images: refused after loading, before any teacher trains.
        (
            vec!["--cnn", "--datasets", "digits,credit"],
            "--cnn: credit is not an image dataset",
        ),
        (vec!["--cnn", "--federated"], "cannot be used with"),
    ] {
        let out = fedistill()
            .args(["bench", "stages", "--quick"])
            .args(&args)
            .output()
            .unwrap_or_else(|e| panic!("running fedistill: {e}"));
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: stderr lacks {needle:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn stages_federated_also_runs_the_personalized_half_with_the_same_seeds_and_datasets() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let out = fedistill()
        .args(["bench", "stages", "--quick", "--federated", "--report"])
        .arg(dir.path())
        .output()
        .unwrap_or_else(|e| panic!("running fedistill: {e}"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let local = read_json(&dir.path().join("stages.json"));
    let federated = read_json(&dir.path().join("personalize.json"));
    assert_eq!(local["seeds"], federated["seeds"]);
    let names = |rep: &Value| -> Vec<String> {
        rep["datasets"]
            .as_array()
            .unwrap_or_else(|| panic!("no datasets: {rep}"))
            .iter()
            .filter_map(|d| d["dataset"].as_str().map(str::to_string))
            .collect()
    };
    assert_eq!(names(&local), names(&federated));
    for d in federated["datasets"].as_array().into_iter().flatten() {
        let configs = d["configurations"].as_array().map_or(0, Vec::len);
        assert_eq!(configs, 4, "{d}");
    }
    assert!(dir.path().join("personalize.md").is_file() && dir.path().join("stages.md").is_file());
}
