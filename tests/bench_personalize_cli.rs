//! `fedistill bench personalize --quick` as a real process: the report's JSON shape (every configuration of
//! the ablation per dataset, per seed and per participant; accuracies that are fractions; each gain the
//! personalized accuracy minus the shared student's on the same rows; one shared student for the whole
//! federation), the Markdown and the plot; and a clear error for each bad flag.

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

fn number(v: &Value) -> f64 {
    let x = v.as_f64().unwrap_or(f64::NAN);
    assert!(x.is_finite(), "{v} is not a finite number");
    x
}

fn array<'a>(v: &'a Value, what: &str) -> &'a Vec<Value> {
    v.as_array().unwrap_or_else(|| panic!("{what} is not an array: {v}"))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

const CONFIGURATIONS: [&str; 4] = ["kd_only", "feature_alignment", "gradient_guidance", "both"];

#[test]
fn personalize_quick_reports_every_configuration_per_participant() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let out = fedistill()
        .args(["bench", "personalize", "--quick", "--report"])
        .arg(dir.path())
        .output()
        .unwrap_or_else(|e| panic!("running fedistill: {e}"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("| dataset | teacher | shared student | KD only |"),
        "{stdout}"
    );
    let rep = read_json(&dir.path().join("personalize.json"));
    assert_eq!(rep["quick"], true);
    assert_eq!(rep["seeds"], serde_json::json!([1]));
    assert_eq!(rep["participants"], 3);
    assert_eq!(rep["rounds"], 2);
    assert_eq!(rep["partition"], "dir(0.5)");
    let epochs = rep["epochs"].as_u64().unwrap_or(0);
    let stage_epochs = rep["stage_epochs"].as_u64().unwrap_or(0);
    assert!(epochs > 2 * stage_epochs && stage_epochs > 0, "{rep}");
    let datasets = array(&rep["datasets"], "datasets");
    assert_eq!(datasets.len(), 1);
    let d = &datasets[0];
    assert_eq!(d["dataset"], "digits");
    let shared = fraction(&d["shared"]["mean"]);
    // The federation learnt the task (10 classes: chance is 0.1).
    assert!(shared > 0.3, "the shared student learnt nothing: {shared}");
    for key in ["teacher", "teacher_final", "shared_global"] {
        fraction(&d[key]["mean"]);
    }
    let configs = array(&d["configurations"], "configurations");
    let names: Vec<&str> = configs.iter().filter_map(|c| c["configuration"].as_str()).collect();
    assert_eq!(names, CONFIGURATIONS);
    let expect_on = [
        (0, 0),
        (stage_epochs, 0),
        (0, stage_epochs),
        (stage_epochs, stage_epochs),
    ];
    for (c, (s1, s2)) in configs.iter().zip(expect_on) {
        let name = &c["configuration"];
        // Every configuration makes the same passes over the private rows.
        assert_eq!(c["stages"]["feature_alignment"]["epochs"].as_u64(), Some(s1), "{name}");
        assert_eq!(c["stages"]["gradient_guidance"]["epochs"].as_u64(), Some(s2), "{name}");
        assert_eq!(c["kd_epochs"].as_u64(), Some(epochs - s1 - s2), "{name}");
        let acc = fraction(&c["personalized"]["mean"]);
        fraction(&c["global"]["mean"]);
        assert!(acc > 0.3, "{name} learnt nothing: {acc}");
        // The gain is the personalized accuracy minus the shared student's on the same rows.
        assert!(close(number(&c["gain"]["mean"]), acc - shared), "{name}: {c}");
    }
    assert!(configs[0]["vs_kd_only"]["values"]
        .as_array()
        .is_some_and(|v| v.iter().all(|x| x.as_f64() == Some(0.0))));
    let kd = fraction(&configs[0]["personalized"]["mean"]);
    for c in configs {
        let acc = fraction(&c["personalized"]["mean"]);
        assert!(close(number(&c["vs_kd_only"]["mean"]), acc - kd), "{c}");
    }

    // Per participant: its own holdout, its four personalized students, one shared student for all.
    let runs = array(&d["runs"], "runs");
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert_eq!(array(&run["curve"], "curve").len(), 2);
    let nodes = array(&run["nodes"], "nodes");
    assert_eq!(nodes.len(), 3);
    let shared_global = fraction(&nodes[0]["shared_global"]);
    let mut shared_sum = 0.0;
    for (p, n) in nodes.iter().enumerate() {
        assert_eq!(n["participant"].as_u64(), Some(p as u64));
        let holdout = n["holdout_rows"].as_u64().unwrap_or(0);
        let train = n["train_rows"].as_u64().unwrap_or(0);
        assert!(holdout > 0 && train > 3 * holdout, "{n}");
        let counts: u64 = array(&n["class_counts"], "class_counts")
            .iter()
            .filter_map(Value::as_u64)
            .sum();
        assert_eq!(counts, train, "{n}");
        fraction(&n["teacher"]);
        fraction(&n["teacher_final"]);
        let s = fraction(&n["shared"]);
        shared_sum += s;
        // Every node distilled the same student from the same consensus.
        assert_eq!(fraction(&n["shared_global"]), shared_global, "participant {p}");
        let ps = array(&n["personalized"], "personalized");
        let got: Vec<&str> = ps.iter().filter_map(|c| c["configuration"].as_str()).collect();
        assert_eq!(got, CONFIGURATIONS, "participant {p}");
        for (c, (s1, s2)) in ps.iter().zip(expect_on) {
            let a = fraction(&c["accuracy"]);
            fraction(&c["global_accuracy"]);
            assert!(close(number(&c["gain"]), a - s), "participant {p}: {c}");
            let stages = array(&c["stages"], "stages");
            let got: Vec<(&str, u64, bool)> = stages
                .iter()
                .map(|s| {
                    (
                        s["name"].as_str().unwrap_or(""),
                        s["epochs"].as_u64().unwrap_or(u64::MAX),
                        s["enabled"] == true,
                    )
                })
                .collect();
            assert_eq!(
                got,
                [
                    ("feature_alignment", s1, s1 > 0),
                    ("gradient_guidance", s2, s2 > 0),
                    ("temperature_kd", epochs - s1 - s2, true)
                ],
                "participant {p}"
            );
        }
    }
    assert!(close(shared_sum / 3.0, shared), "{d}");
    assert_eq!(array(&rep["mean_gain"], "mean_gain").len(), 4);

    let md = std::fs::read_to_string(dir.path().join("personalize.md")).unwrap_or_default();
    assert!(md.contains("+ stages 1, 2") && md.contains("digits"), "{md}");
    let png = std::fs::read(dir.path().join("personalize-accuracy.png")).unwrap_or_default();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "personalize-accuracy.png is not a PNG"
    );
    let svg = std::fs::read_to_string(dir.path().join("personalize-accuracy.svg")).unwrap_or_default();
    assert!(
        svg.contains("<svg") && svg.contains("shared student"),
        "personalize-accuracy.svg"
    );
}

#[test]
fn personalize_bad_flags_fail_clearly() {
    for (args, needle) in [
        (vec!["--datasets", "no-such-data"], "no-such-data"),
        (vec!["--seeds", "1,1"], "seed 1 is given twice"),
        (vec!["--participants", "1"], "at least 2"),
        (vec!["--holdout", "0"], "--holdout 0"),
        (vec!["--epochs", "2"], "--epochs 2"),
        (vec!["--partition", "0"], "alpha must be > 0"),
        (vec!["--rounds", "x"], "invalid value"),
    ] {
        let out = fedistill()
            .args(["bench", "personalize", "--quick"])
            .args(&args)
            .output()
            .unwrap_or_else(|e| panic!("running fedistill: {e}"));
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: stderr lacks {needle:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}
