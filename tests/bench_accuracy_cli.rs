//! `fedistill bench accuracy --quick` and `fedistill bench communication --quick` as real processes (and the
//! train and quantize suites' reports): the reports' JSON shape, the learning curves, the bytes (counted on
//! real mTLS QUIC connections and at the frame level), the plots, and each bad flag.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn fedistill() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fedistill"))
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display())))
        .expect("valid JSON")
}

/// `bench accuracy --quick --no-link --no-fedavg --rules mean` with `extra` flags, into a fresh report
/// directory; asserts the run succeeded and returns the directory (kept alive) and `accuracy.json`.
fn quick_mean_run(extra: &[&str]) -> (tempfile::TempDir, Value) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let out = fedistill()
        .args([
            "bench",
            "accuracy",
            "--quick",
            "--no-link",
            "--no-fedavg",
            "--rules",
            "mean",
        ])
        .args(extra)
        .arg("--report")
        .arg(dir.path())
        .output()
        .expect("starting fedistill");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rep = read_json(&dir.path().join("accuracy.json"));
    (dir, rep)
}

fn assert_png_and_svg(dir: &Path, stem: &str) {
    let png = std::fs::read(dir.join(format!("{stem}.png"))).expect("png written");
    assert!(png.len() > 8, "{stem}.png is empty or truncated ({} bytes)", png.len());
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{stem}.png is a PNG");
    let svg = std::fs::read_to_string(dir.join(format!("{stem}.svg"))).expect("svg written");
    assert!(svg.contains("<svg"), "{stem}.svg is an SVG");
}

#[test]
fn accuracy_quick_reports_every_method_with_curves_bytes_and_plots() {
    let dir = tempfile::tempdir().unwrap();
    let out = fedistill()
        .args(["bench", "accuracy", "--quick", "--report"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("| dataset | partition | K |"), "{stdout}");
    let rep = read_json(&dir.path().join("accuracy.json"));
    assert_eq!(rep["mtls_link"], true);
    let settings = rep["settings"].as_array().unwrap();
    assert_eq!(settings.len(), 1);
    let run = &settings[0]["runs"][0];
    let rounds = run["config"]["rounds"].as_u64().unwrap() as usize;
    let fedavg_rounds = run["config"]["fedavg_rounds"].as_u64().unwrap() as usize;
    let methods: Vec<&str> = run["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["method"].as_str().unwrap())
        .collect();
    assert_eq!(methods, ["fd:mean", "fd:median", "fedavg"]);
    for m in run["methods"].as_array().unwrap() {
        let curve = m["curve"].as_array().unwrap();
        let want = if m["method"] == "fedavg" { fedavg_rounds } else { rounds };
        assert_eq!(curve.len(), want, "{}", m["method"]);
        let mut last = 0;
        for p in curve {
            let acc = p["accuracy"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&acc));
            let b = p["bytes"].as_u64().unwrap();
            assert!(b > last, "bytes grow every round: {b} after {last}");
            last = b;
        }
        assert_eq!(m["bytes"].as_u64().unwrap(), last);
    }
    // Collaboration helps: the distilled student beats the participants' own models on average
    // (digits, 10 classes, strong label skew), and the pooled model learns the task.
    let fd = run["methods"][0]["accuracy"].as_f64().unwrap();
    let local = run["local_only_mean"].as_f64().unwrap();
    assert!(fd > local, "fd:mean {fd} vs local-only {local}");
    assert!(run["centralized"].as_f64().unwrap() > 0.7, "{}", run["centralized"]);
    assert_eq!(run["local_only"].as_array().unwrap().len(), 3);
    let md = std::fs::read_to_string(dir.path().join("accuracy.md")).unwrap();
    assert!(md.contains("fd:median") && md.contains("fedavg"), "{md}");
    assert_png_and_svg(dir.path(), "accuracy-per-round-digits-dir0_5-k3");
    assert_png_and_svg(dir.path(), "accuracy-vs-bytes-digits-dir0_5-k3");
}

/// Rounds that revisit the public set (4 rounds of 150 rows over about 360 public rows), each revisit a
/// seeded view (`--augment`, the task card's `[augment]`), and half of every participant's rows unlabelled
/// (`[private] unlabeled`, pseudo-labelled for the refresh): the run goes through the nodes' files, the
/// report records the settings, every round costs the same bytes, and the shards hold the labelled half.
#[test]
fn accuracy_quick_with_epochs_augmentation_and_unlabelled_rows() {
    let (_dir, rep) = quick_mean_run(&[
        "--rounds",
        "4",
        "--samples-per-round",
        "150",
        "--augment",
        "shift=1,flip",
        "--unlabeled-fraction",
        "0.5",
        "--pseudo-threshold",
        "0.6",
        "--encoding",
        "int8",
    ]);
    let run = &rep["settings"][0]["runs"][0];
    let cfg = &run["config"];
    assert_eq!(cfg["samples_per_round"], 150);
    assert!(cfg["encodings"].to_string().contains("int8"), "{}", cfg["encodings"]);
    assert_eq!(cfg["augment"]["shift"], 1);
    assert_eq!(cfg["augment"]["flip"], true);
    assert_eq!(cfg["unlabeled_fraction"], 0.5);
    assert!((cfg["refresh"]["pseudo_threshold"].as_f64().unwrap() - 0.6).abs() < 1e-6);
    let public = run["public_rows"].as_u64().unwrap();
    assert!(4 * 150 > public, "the rounds revisit the public set: {public} rows");
    let curve = run["methods"][0]["curve"].as_array().unwrap();
    assert_eq!(curve.len(), 4);
    let bytes: Vec<u64> = curve.iter().map(|p| p["bytes"].as_u64().unwrap()).collect();
    let per_round: Vec<u64> = std::iter::once(bytes[0])
        .chain(bytes.windows(2).map(|w| w[1] - w[0]))
        .collect();
    for b in &per_round {
        // The same 150 rows' labels every round (a wrapped round's ids are two runs instead of one).
        assert!(b.abs_diff(per_round[0]) * 100 <= per_round[0], "{per_round:?}");
    }
    // Digits: 1797 rows, 20% test and 20% public; the private pool is dealt, then half of each shard's
    // rows lose their labels.
    let labelled: u64 = run["shard_sizes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_u64().unwrap())
        .sum();
    let pool = 1797 - public - run["test_rows"].as_u64().unwrap();
    assert!(
        labelled.abs_diff(pool / 2) <= 3,
        "{labelled} labelled of a pool of {pool}"
    );
    let acc = run["methods"][0]["accuracy"].as_f64().unwrap();
    assert!(acc > run["local_only_mean"].as_f64().unwrap(), "{acc}");
}

/// `--stop-patience 1`: the distillation rounds end at the first round that does not beat the best so far
/// by more than 0.001 (the coordinator's `[stop]` rule), and the curve and bytes are those of the rounds run.
#[test]
fn accuracy_quick_stops_on_convergence() {
    let (_dir, rep) = quick_mean_run(&["--rounds", "12", "--stop-patience", "1"]);
    let run = &rep["settings"][0]["runs"][0];
    assert_eq!(run["config"]["stop"]["patience"], 1);
    let m = &run["methods"][0];
    let acc: Vec<f64> = m["curve"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["accuracy"].as_f64().unwrap())
        .collect();
    // Where the rule says stop, the run stopped; before it, every round improved.
    let stop_at = (1..acc.len().max(1))
        .find(|&k| acc[k] <= acc[..k].iter().cloned().fold(f64::MIN, f64::max) + 0.001)
        .map(|k| k + 1);
    match stop_at {
        Some(n) => assert_eq!(acc.len(), n, "{acc:?}"),
        None => assert_eq!(acc.len(), 12, "stopped without reason: {acc:?}"),
    }
    assert_eq!(m["bytes"], m["curve"][acc.len() - 1]["bytes"]);
    let err = fedistill()
        .args(["bench", "accuracy", "--quick", "--stop-patience", "0"])
        .output()
        .unwrap();
    assert!(!err.status.success());
    assert!(String::from_utf8_lossy(&err.stderr).contains("stop.patience must be at least 1"));
}

#[test]
fn communication_quick_compares_encodings_with_fedavg() {
    let dir = tempfile::tempdir().unwrap();
    let out = fedistill()
        .args(["bench", "communication", "--quick", "--no-link", "--report"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rep = read_json(&dir.path().join("communication.json"));
    assert_eq!(rep["mtls_link"], false);
    let lines = rep["encodings"].as_array().unwrap();
    let names: Vec<&str> = lines.iter().map(|l| l["encoding"].as_str().unwrap()).collect();
    assert_eq!(names, ["f32", "f16", "int8", "topk:1", "qtopk:1"]);
    let total = |i: usize| lines[i]["total_bytes"].as_u64().unwrap();
    // Same rows and messages, smaller payloads: frame bytes shrink from f32 to f16, and the compact top-1
    // (2 B per row each way) sends less than top-1 with a u16 class and an f16 value (4 B).
    assert!(total(1) < total(0), "f16 {} < f32 {}", total(1), total(0));
    assert!(total(4) < total(3), "qtopk:1 {} < topk:1 {}", total(4), total(3));
    for l in lines {
        let ratio = l["fedavg_over_fd"].as_f64().unwrap();
        assert!(ratio.is_finite() && ratio > 0.0);
        if l["fedavg_matched"] == true {
            let b = l["fedavg_bytes_to_match"].as_u64().unwrap() as f64;
            assert!((b / l["total_bytes"].as_u64().unwrap() as f64 - ratio).abs() < 1e-9);
        }
    }
    assert!(rep["fedavg"]["bytes"].as_u64().unwrap() > 0);
    assert_png_and_svg(dir.path(), "communication-accuracy-vs-bytes");
}

#[test]
fn bad_flags_are_refused_with_a_clear_error() {
    let cases: &[(&[&str], &str)] = &[
        (&["accuracy", "--quick", "--partitions", "0"], "alpha must be > 0"),
        (
            &["accuracy", "--quick", "--partitions", "lots"],
            "expected `iid` or a Dirichlet alpha",
        ),
        (&["accuracy", "--quick", "--rules", "loudest"], "--rules: loudest"),
        (&["accuracy", "--quick", "--participants", "1"], "at least 2"),
        (&["accuracy", "--quick", "--datasets", "imagenet"], "imagenet"),
        (&["communication", "--quick", "--encodings", "f12"], "--encodings: f12"),
        (
            &["accuracy", "--quick", "--datasets", "credit", "--augment", "shift=1"],
            "--augment applies to image and sequence datasets",
        ),
        (
            &["accuracy", "--quick", "--augment", "twist"],
            "expected `shift=N` or `flip`",
        ),
        (
            &["accuracy", "--quick", "--augment", "shift=3"],
            "more than a quarter of its side",
        ),
        (
            &["accuracy", "--quick", "--student", "cnn:8"],
            "a cnn is `cnn:CHANNELS:HIDDEN`",
        ),
        (&["accuracy", "--quick", "--teacher", "rnn:3"], "--teacher"),
        (
            &["accuracy", "--quick", "--unlabeled-fraction", "1.5"],
            "must be in [0, 1)",
        ),
        (
            &["accuracy", "--quick", "--pseudo-threshold", "2"],
            "pseudo_threshold 2 must be in (0, 1]",
        ),
        (
            &["accuracy", "--quick", "--samples-per-round", "0"],
            "--samples-per-round must be at least 1",
        ),
        (&["accuracy", "--quick", "--encoding", "int4"], "--encoding: int4"),
        (
            &["accuracy", "--quick", "--pseudo-threshold", "0.9"],
            "it needs --unlabeled-fraction > 0",
        ),
    ];
    for (args, want) in cases {
        let out = fedistill().arg("bench").args(*args).output().unwrap();
        assert!(!out.status.success(), "{args:?} must fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

#[test]
fn a_setting_that_cannot_run_is_reported_and_the_grid_goes_on() {
    // breast-cancer (569 rows, 2 classes) under Dirichlet 0.5 for 3 participants leaves one participant
    // a single private sample with seed 1: no teacher can be trained on it.
    let dir = tempfile::tempdir().unwrap();
    let out = fedistill()
        .args([
            "bench",
            "accuracy",
            "--quick",
            "--no-link",
            "--datasets",
            "breast-cancer",
            "--partitions",
            "0.5,iid",
            "--report",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rep = read_json(&dir.path().join("accuracy.json"));
    let settings = rep["settings"].as_array().unwrap();
    assert_eq!(settings.len(), 2);
    let failed = settings[0]["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{}", settings[0]);
    assert!(
        failed[0][1]
            .as_str()
            .unwrap()
            .contains("need at least 2 training samples"),
        "{}",
        failed[0]
    );
    assert!(settings[0]["runs"].as_array().unwrap().is_empty());
    // The IID setting after it ran.
    assert_eq!(settings[1]["runs"].as_array().unwrap().len(), 1);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("| breast-cancer | dir(0.5) | 3 | 0 | failed"),
        "{stdout}"
    );
    assert!(stdout.contains("did not run: "), "{stdout}");
}

#[test]
fn train_and_quantize_suites_write_their_reports() {
    let dir = tempfile::tempdir().unwrap();
    let out = fedistill()
        .args(["bench", "train", "--quick", "--report"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = read_json(&dir.path().join("train.json"));
    let lines = lines.as_array().unwrap();
    assert_eq!(lines.len(), 3, "{lines:?}");
    for l in lines {
        let (plain, fused) = (
            l["plain_samples_per_s"].as_f64().unwrap(),
            l["fused_samples_per_s"].as_f64().unwrap(),
        );
        assert!(plain > 0.0 && fused > 0.0);
        assert!((l["speedup"].as_f64().unwrap() - fused / plain).abs() < 1e-6 * (fused / plain));
    }
    let md = std::fs::read_to_string(dir.path().join("train.md")).unwrap();
    assert!(
        md.contains("| workload | plain samples/s | fused samples/s | speed-up |"),
        "{md}"
    );
    assert_eq!(md.matches("x |").count(), 3, "{md}");
    assert!(md.contains("](train-throughput.png)"), "{md}");
    assert_png_and_svg(dir.path(), "train-throughput");
    // Each workload's name is written under its bars (wrapped at spaces, but no word cut: three categories
    // leave room for these names) and both groups are in the legend.
    let svg = std::fs::read_to_string(dir.path().join("train-throughput.svg")).unwrap();
    for l in lines {
        for word in l["workload"].as_str().unwrap().split_whitespace() {
            assert!(svg.contains(word), "train-throughput.svg lacks {word:?}");
        }
    }
    assert!(svg.contains("plain candle-nn") && svg.contains("fused"));
    let out = fedistill()
        .args(["bench", "quantize", "--quick", "--report"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let q = read_json(&dir.path().join("quantize.json"));
    let profiles: Vec<&str> = q["table"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["profile"].as_str().unwrap())
        .collect();
    assert_eq!(profiles, ["f32", "f16", "sandwich", "int8"]);
    // INT8 is the smallest export.
    let bytes = |i: usize| q["table"][i]["bytes"].as_u64().unwrap();
    assert!(bytes(3) < bytes(1) && bytes(1) < bytes(0));
    let md = std::fs::read_to_string(dir.path().join("quantize.md")).unwrap();
    assert!(md.contains("| int8 |"), "{md}");
    assert!(md.contains("](quantize-vs-f32.png)"), "{md}");
    assert_png_and_svg(dir.path(), "quantize-vs-f32");
    let svg = std::fs::read_to_string(dir.path().join("quantize-vs-f32.svg")).unwrap();
    for p in profiles
        .iter()
        .chain(&["accuracy", "size reduction", "batch-1 speed-up"])
    {
        assert!(svg.contains(p), "quantize-vs-f32.svg lacks {p:?}");
    }
}

/// `--ceiling`: the same rounds distilled from the centralized model (`kd:centralized`), every teacher
/// replaced by it and unrefreshed; it runs through the same exchange (the same bytes per round as the
/// federation's) and, taught by the pooled data's model, ends above the participants' own teachers.
#[test]
fn accuracy_quick_ceiling_distills_from_the_centralized_model() {
    let (dir, rep) = quick_mean_run(&["--ceiling"]);
    let run = &rep["settings"][0]["runs"][0];
    assert_eq!(run["config"]["ceiling"], true);
    let methods: Vec<&str> = run["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["method"].as_str().unwrap())
        .collect();
    assert_eq!(methods, ["fd:mean", "kd:centralized"]);
    let (fd, ceiling) = (&run["methods"][0], &run["methods"][1]);
    assert_eq!(
        ceiling["curve"].as_array().unwrap().len(),
        fd["curve"].as_array().unwrap().len()
    );
    assert_eq!(ceiling["bytes"], fd["bytes"], "same rows and encoding, same bytes");
    let acc = ceiling["accuracy"].as_f64().unwrap();
    assert!(
        acc > run["local_only_mean"].as_f64().unwrap(),
        "{acc} vs {}",
        run["local_only_mean"]
    );
    assert!(acc <= 1.0 && run["centralized"].as_f64().unwrap() > 0.7);
    let md = std::fs::read_to_string(dir.path().join("accuracy.md")).unwrap();
    assert!(md.contains("kd:centralized"), "{md}");
}
