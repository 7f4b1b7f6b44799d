//! End-to-end tests of `fedistill local`: the real binary on the embedded datasets, its JSON report,
//! determinism under a seed, and clear errors for bad configs.

use std::path::Path;
use std::process::{Command, Output};

fn fedistill(args: &[&str]) -> Output {
    match Command::new(env!("CARGO_BIN_EXE_fedistill")).args(args).output() {
        Ok(o) => o,
        Err(e) => panic!("cannot run fedistill: {e}"),
    }
}

fn report(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
}

const METRICS: [&str; 12] = [
    "accuracy",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "roc_auc",
    "log_loss",
    "ece",
    "agreement",
    "kl_to_teacher",
    "latency_p50_us",
    "latency_p99_us",
    "throughput_per_s",
];

#[test]
fn breast_cancer_report_has_every_metric_and_is_seeded() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let (a, b) = (dir.path().join("a.json"), dir.path().join("b.json"));
    for p in [&a, &b] {
        let out = fedistill(&[
            "local",
            "--dataset",
            "breast-cancer",
            "--seed",
            "3",
            "--report",
            p.to_str().unwrap_or(""),
        ]);
        assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("accuracy") && stdout.contains("student"),
            "table missing: {stdout}"
        );
    }
    let (ra, rb) = (report(&a), report(&b));
    for model in ["teacher", "student"] {
        for key in METRICS.iter().chain(&["params", "size_bytes"]) {
            let v = &ra[model][key];
            assert!(v.as_f64().is_some_and(f64::is_finite), "{model}.{key} = {v}");
        }
        let acc = ra[model]["accuracy"].as_f64().unwrap_or(-1.0);
        assert!(
            (0.8..=1.0).contains(&acc),
            "{model} accuracy {acc} is not a good fraction"
        );
        // Same seed, same weights: every quality metric repeats exactly (timings do not).
        for key in &METRICS[..9] {
            assert_eq!(
                ra[model][key], rb[model][key],
                "{model}.{key} differs between seeded runs"
            );
        }
    }
    assert!(ra["seconds"].as_f64().is_some_and(|s| s > 0.0));
    assert!(ra["student"]["params"].as_u64() < ra["teacher"]["params"].as_u64());
    // The quantization table: every profile, with size, latency, throughput and accuracy.
    let rows = ra["quantization"]
        .as_array()
        .unwrap_or_else(|| panic!("no quantization table: {ra}"));
    let by = |p: &str| {
        rows.iter()
            .find(|r| r["profile"] == p)
            .unwrap_or_else(|| panic!("no {p} row: {rows:?}"))
    };
    for p in ["f32", "f16", "int8", "sandwich"] {
        let r = by(p);
        for key in ["accuracy", "bytes", "latency_p50_us", "throughput"] {
            assert!(
                r[key].as_f64().is_some_and(|v| v.is_finite() && v >= 0.0),
                "{p}.{key} = {}",
                r[key]
            );
        }
    }
    // (Size ratios are asserted on MNIST in tests/quantize_cli.rs: a 30-8-2 student is smaller than the
    // GGUF header and block padding, so int8 does not shrink it.)
    assert!(by("int8")["bytes"].as_u64().is_some_and(|b| b > 0));
    assert!((0.0..=1.0).contains(&by("int8")["accuracy"].as_f64().unwrap_or(-1.0)));
}

#[test]
fn custom_configs_set_the_architectures() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let t = dir.path().join("t.toml");
    let s = dir.path().join("s.toml");
    let r = dir.path().join("r.json");
    std::fs::write(&t, "[model]\nkind = \"mlp\"\nhidden = [16]\n[train]\nepochs = 5\n").unwrap_or_default();
    std::fs::write(
        &s,
        "[model]\nkind = \"mlp\"\nhidden = [4]\n[distill]\nepochs_per_round = 3\nconfidence = \"entropy\"\n\
         [distill.schedule]\nkind = \"cosine\"\nstart = 4.0\nend = 1.0\n",
    )
    .unwrap_or_default();
    let out = fedistill(&[
        "local",
        "--dataset",
        "breast-cancer",
        "--teacher",
        t.to_str().unwrap_or(""),
        "--student",
        s.to_str().unwrap_or(""),
        "--report",
        r.to_str().unwrap_or(""),
    ]);
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let rep = report(&r);
    // Hand count on 30 features, 2 classes: 30*16+16 + 16*2+2 = 530 and 30*4+4 + 4*2+2 = 134.
    assert_eq!(rep["teacher"]["params"].as_u64(), Some(530));
    assert_eq!(rep["student"]["params"].as_u64(), Some(134));
}

fn fails_with(args: &[&str], needle: &str) {
    let out = fedistill(args);
    assert!(!out.status.success(), "{args:?} should fail");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(needle), "{args:?}: stderr lacks {needle:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_inputs_fail_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap_or_default();
        p.to_str().unwrap_or("").to_string()
    };
    fails_with(&["local", "--dataset", "no-such-data"], "no-such-data");
    let zero = write("zero.toml", "[model]\nkind = \"mlp\"\nhidden = [0]\n");
    fails_with(&["local", "--dataset", "breast-cancer", "--teacher", &zero], "width 0");
    let cnn = write("cnn.toml", "[model]\nkind = \"cnn\"\nchannels = [8]\nhidden = 16\n");
    fails_with(&["local", "--dataset", "breast-cancer", "--teacher", &cnn], "square");
    let kind = write("kind.toml", "[model]\nkind = \"transformer\"\n");
    fails_with(
        &["local", "--dataset", "breast-cancer", "--student", &kind],
        "transformer",
    );
    let temp = write(
        "temp.toml",
        "[model]\nkind = \"mlp\"\nhidden = [4]\n[distill.schedule]\nkind = \"constant\"\nt = 0.0\n",
    );
    fails_with(
        &["local", "--dataset", "breast-cancer", "--student", &temp],
        "temperature",
    );
    fails_with(
        &[
            "local",
            "--dataset",
            "breast-cancer",
            "--teacher",
            "/nonexistent/t.toml",
        ],
        "/nonexistent/t.toml",
    );
}

/// A `[stages]` table turns the stages on and off as written, and the report lists all three in order with
/// their epochs, weights and (for the stages that ran) a finite final loss.
#[test]
fn stages_table_sets_the_schedule_in_the_report() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let cases = [
        (
            "feature_alignment = { epochs = 2, teacher_layer = 0, weight = 0.5 }\n\
             gradient_guidance = { epochs = 0 }\n",
            [(true, 2, 0.5), (false, 0, 1.0), (true, 5, 1.0)],
        ),
        (
            "gradient_guidance = { epochs = 3, weight = 2.0, epsilon = 0.1 }\n",
            [(false, 0, 1.0), (true, 3, 2.0), (true, 5, 1.0)],
        ),
    ];
    for (i, (stages, expect)) in cases.iter().enumerate() {
        let s = dir.path().join(format!("s{i}.toml"));
        let r = dir.path().join(format!("r{i}.json"));
        std::fs::write(
            &s,
            format!("[model]\nkind = \"mlp\"\nhidden = [4]\n[distill]\nepochs_per_round = 5\n[stages]\n{stages}"),
        )
        .unwrap_or_default();
        let out = fedistill(&[
            "local",
            "--dataset",
            "breast-cancer",
            "--teacher-epochs",
            "20",
            "--student",
            s.to_str().unwrap_or(""),
            "--report",
            r.to_str().unwrap_or(""),
        ]);
        assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
        let rep = report(&r);
        let list = rep["stages"]
            .as_array()
            .unwrap_or_else(|| panic!("no stages list: {rep}"));
        let names: Vec<&str> = list.iter().filter_map(|s| s["name"].as_str()).collect();
        assert_eq!(names, ["feature_alignment", "gradient_guidance", "temperature_kd"]);
        for (stage, (enabled, epochs, weight)) in list.iter().zip(expect) {
            assert_eq!(stage["enabled"], *enabled, "{stage}");
            assert_eq!(stage["epochs"].as_u64(), Some(*epochs), "{stage}");
            assert_eq!(stage["weight"].as_f64(), Some(*weight), "{stage}");
            if *enabled {
                assert!(stage["final_loss"].as_f64().is_some_and(f64::is_finite), "{stage}");
            } else {
                assert!(stage["final_loss"].is_null(), "{stage}");
            }
        }
        let acc = rep["student"]["accuracy"].as_f64().unwrap_or(-1.0);
        assert!((0.8..=1.0).contains(&acc), "student accuracy {acc}");
    }
}

/// A bad `[stages]` fails at start, before the teacher trains, with a message naming the key.
#[test]
fn bad_stages_fail_before_training_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let cases = [
        (
            "[stages]\nfeature_alignment = { epochs = 2, teacher_layer = 5 }\n",
            "teacher_layer 5 does not exist",
        ),
        (
            "[stages]\nfeature_alignment = { epochs = 2, student_layer = 1 }\n",
            "student_layer 1 does not exist",
        ),
        (
            "[stages]\nfeature_alignment = { epochs = 2, attention_weight = 1.0 }\n",
            "same spatial size",
        ),
        (
            "[stages]\ngradient_guidance = { epochs = 2, epsilon = 0.0 }\n",
            "epsilon must be finite and > 0",
        ),
        (
            "[stages]\ngradient_guidance = { epochs = 2, weight = -1.0 }\n",
            "gradient_guidance.weight must be finite and >= 0",
        ),
        (
            "[stages]\nfeature_alignment = { epochs = 2, weight = nan }\n",
            "feature_alignment.weight must be finite and >= 0",
        ),
        (
            "[distill]\nepochs_per_round = 0\n[stages]\nfeature_alignment = { epochs = 0 }\n",
            "no epochs anywhere",
        ),
        (
            "[distill]\nepochs_per_round = 0\n[stages]\nfeature_alignment = { epochs = 3 }\n",
            "classifier is never trained",
        ),
        ("[stages]\nfeature_alignment = { epoch = 3 }\n", "unknown field"),
    ];
    for (i, (table, needle)) in cases.iter().enumerate() {
        let p = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&p, format!("[model]\nkind = \"mlp\"\nhidden = [4]\n{table}")).unwrap_or_default();
        let out = fedistill(&[
            "local",
            "--dataset",
            "breast-cancer",
            "--student",
            p.to_str().unwrap_or(""),
        ]);
        assert!(!out.status.success(), "{table} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{table}: stderr lacks {needle:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(
            !err.contains("teacher: "),
            "{table}: the teacher trained before the error: {err}"
        );
    }
}
