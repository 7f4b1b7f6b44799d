//! End-to-end tests of `fedistill quantize` and `fedistill compare` with the real binary on MNIST-10k:
//! export of every profile with model cards (MLP and CNN students), the quantization table, the A/B
//! comparison, and the clear errors for truncated files, wrong architectures and wrong tensor shapes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fedistill_shared::data::{load, split, LoadOptions, Partition, SplitConfig};
use fedistill_shared::ml::lifecycle::mcnemar_exact_p;
use fedistill_shared::ml::quant::{load_student, recorded_arch, Arch};
use fedistill_shared::ml::{train_teacher, Model, ModelConfig, Progress, TrainConfig};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fedistill"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("spawn fedistill")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `fedistill compare A B --dataset mnist-10k --json`, asserted to succeed; its JSON.
fn compare_json(a: &Path, b: &Path) -> serde_json::Value {
    let o = run(&[
        "compare",
        a.to_str().expect("utf8"),
        b.to_str().expect("utf8"),
        "--dataset",
        "mnist-10k",
        "--json",
    ]);
    assert!(o.status.success(), "stderr: {}", text(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("json")
}

const CONFIG: &str = "[model]\nkind = \"mlp\"\nhidden = [32]\n\n[distill]\nignored = true\n";

/// The split the CLI uses by default (seed 7, test 0.2, public 0.3).
fn default_split() -> fedistill_shared::data::FederatedSplit {
    let ds = load("mnist-10k", &LoadOptions::default()).expect("mnist");
    split(
        &ds,
        &SplitConfig {
            participants: 1,
            partition: Partition::Iid,
            test_fraction: 0.2,
            public_fraction: 0.3,
            seed: 7,
        },
    )
    .expect("split")
}

/// Trains a small student of `cfg` (2 epochs, seeded) on the private part of the default split and
/// writes it with its config `toml`.
fn train_student(dir: &Path, cfg: &ModelConfig, toml: &str) -> (Model, PathBuf, PathBuf) {
    let fed = default_split();
    let tc = TrainConfig {
        epochs: 2,
        seed: 3,
        ..TrainConfig::default()
    };
    let m = train_teacher(cfg, &fed.shards[0], &tc, &Progress::hidden()).expect("train");
    let model = dir.join("student.safetensors");
    m.save(&model).expect("save");
    let config = dir.join("student.toml");
    std::fs::write(&config, toml).expect("config");
    (m, model, config)
}

fn student(dir: &Path) -> (PathBuf, PathBuf) {
    let (_, model, config) = train_student(dir, &ModelConfig::Mlp { hidden: vec![32] }, CONFIG);
    (model, config)
}

fn quantize_all(dir: &Path) -> (PathBuf, Output) {
    let (model, config) = student(dir);
    let out = dir.join("out");
    let o = run(&[
        "quantize",
        "--model",
        model.to_str().expect("utf8"),
        "--config",
        config.to_str().expect("utf8"),
        "--dataset",
        "mnist-10k",
        "--profile",
        "all",
        "--out",
        out.to_str().expect("utf8"),
    ]);
    (out, o)
}

#[test]
fn quantize_exports_every_profile_with_cards_and_table() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (out, o) = quantize_all(tmp.path());
    assert!(o.status.success(), "stderr: {}", text(&o.stderr));
    let arch = Arch {
        hidden: vec![32],
        in_dim: 784,
        classes: 10,
        channels: Vec::new(),
        conv1d: None,
        fused: None,
    };
    let ds = load("mnist-10k", &LoadOptions::default()).expect("mnist");
    let fed = split(
        &ds,
        &SplitConfig {
            participants: 1,
            partition: Partition::Iid,
            test_fraction: 0.2,
            public_fraction: 0.3,
            seed: 7,
        },
    )
    .expect("split");
    let mut sizes = std::collections::HashMap::new();
    for (profile, file) in [
        ("f32", "student-f32.safetensors"),
        ("f16", "student-f16.safetensors"),
        ("sandwich", "student-sandwich.gguf"),
        ("int8", "student-int8.gguf"),
    ] {
        let path = out.join(file);
        let bytes = std::fs::read(&path).expect("export exists");
        let card: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join(format!("{file}.card.json"))).expect("card")).expect("json");
        assert_eq!(card["profile"], profile);
        assert_eq!(card["file_bytes"], bytes.len() as u64);
        assert_eq!(card["dataset"]["public_digest"], fed.public_digest_hex());
        assert_eq!(card["dataset"]["test_samples"], fed.test.n as u64);
        // The card's accuracy is that of the exported file: re-measure it on the loaded student.
        let q = load_student(&path, &arch).expect("load back");
        let logits = q.logits_with(&fed.test.features, fed.test.n, true).expect("logits");
        let correct = logits
            .chunks_exact(10)
            .zip(&fed.test.labels)
            .filter(|(row, &y)| {
                let best = row
                    .iter()
                    .enumerate()
                    .fold(0, |b, (i, v)| if *v > row[b] { i } else { b });
                best as u32 == y
            })
            .count();
        let acc = card["metrics"]["accuracy"].as_f64().expect("accuracy");
        assert!(
            (acc - correct as f64 / fed.test.n as f64).abs() < 1e-9,
            "{profile}: card {acc}"
        );
        sizes.insert(profile, bytes.len());
    }
    // Q8_0 stores 34 bytes per 32 weights (+ padding 784 -> 800) against 4 bytes per weight.
    let ratio = sizes["f32"] as f64 / sizes["int8"] as f64;
    assert!(ratio >= 3.5, "int8 only {ratio:.2}x smaller");
    let rows: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("quantization_table.json")).expect("table")).expect("json");
    let rows = rows.as_array().expect("array");
    assert_eq!(rows.len(), 4);
    for r in rows {
        for key in [
            "profile",
            "accuracy",
            "bytes",
            "latency_p50_us",
            "latency_p99_us",
            "throughput",
            "accuracy_delta_points",
        ] {
            assert!(r.get(key).is_some(), "missing {key} in {r}");
        }
    }
    let stdout = text(&o.stdout);
    assert!(stdout.contains("int8") && stdout.contains("sandwich"), "{stdout}");

    // A/B: the int8 student against its own f32 version, and against itself.
    let a = out.join("student-int8.gguf");
    let b = out.join("student-f32.safetensors");
    let v = compare_json(&a, &b);
    assert_eq!(v["ab"]["samples"], fed.test.n as u64);
    let (oa, ob) = (
        v["ab"]["counts"]["only_a"].as_u64().expect("a"),
        v["ab"]["counts"]["only_b"].as_u64().expect("b"),
    );
    assert_eq!(v["ab"]["p_value"].as_f64().expect("p"), mcnemar_exact_p(oa, ob));
    assert_eq!(v["shadow"]["scored"], fed.test.n as u64);
    let v = compare_json(&a, &a);
    assert_eq!(v["ab"]["p_value"], 1.0);
    assert_eq!(v["ab"]["decision"], "no_significant_difference");
    assert_eq!(v["shadow"]["disagreements"], 0);

    // Bad input: a truncated GGUF names the tensor it could not read.
    let bytes = std::fs::read(&a).expect("read");
    let cut = tmp.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() - 100]).expect("write");
    let o = run(&[
        "compare",
        cut.to_str().expect("utf8"),
        b.to_str().expect("utf8"),
        "--dataset",
        "mnist-10k",
    ]);
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(err.contains("layers.1.") && err.contains("cut.gguf"), "{err}");

    // Bad input: a config of another architecture is refused, naming the architecture mismatch.
    let other = tmp.path().join("other.toml");
    std::fs::write(&other, "[model]\nkind = \"mlp\"\nhidden = [64]\n").expect("write");
    let o = run(&[
        "compare",
        a.to_str().expect("utf8"),
        b.to_str().expect("utf8"),
        "--dataset",
        "mnist-10k",
        "--config",
        other.to_str().expect("utf8"),
    ]);
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(err.contains("wrong architecture"), "{err}");
}

#[test]
fn quantize_refuses_bad_inputs_with_clear_errors() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let m = Model::new(&ModelConfig::Mlp { hidden: vec![32] }, 784, 10, 1).expect("model");
    let model = dir.join("m.safetensors");
    m.save(&model).expect("save");
    let cfg = dir.join("c.toml");
    let args = |model: &Path, cfg: &Path, extra: &[&str]| {
        let mut v = vec![
            "quantize".to_string(),
            "--model".into(),
            model.display().to_string(),
            "--config".into(),
            cfg.display().to_string(),
            "--dataset".into(),
            "mnist-10k".into(),
            "--out".into(),
            dir.join("out").display().to_string(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        bin().args(v).output().expect("spawn")
    };
    // The checkpoint has layers.0.weight [32, 784]; a config with 64 hidden units expects [64, 784].
    std::fs::write(&cfg, "[model]\nkind = \"mlp\"\nhidden = [64]\n").expect("write");
    let o = args(&model, &cfg, &[]);
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(err.contains("layers.0.weight") && err.contains("shape"), "{err}");
    // A truncated checkpoint.
    std::fs::write(&cfg, CONFIG).expect("write");
    let bytes = std::fs::read(&model).expect("read");
    let cut = dir.join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write");
    let o = args(&cut, &cfg, &[]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("cut.safetensors"), "{}", text(&o.stderr));
    // A typo in the config, an unknown profile, a CNN student.
    std::fs::write(&cfg, "[model]\nkind = \"mlp\"\nhiden = [32]\n").expect("write");
    let o = args(&model, &cfg, &[]);
    assert!(
        !o.status.success() && text(&o.stderr).contains("hiden"),
        "{}",
        text(&o.stderr)
    );
    std::fs::write(&cfg, CONFIG).expect("write");
    let o = args(&model, &cfg, &["--profile", "int4"]);
    assert!(
        !o.status.success() && text(&o.stderr).contains("int4"),
        "{}",
        text(&o.stderr)
    );
    // An MLP checkpoint given a CNN config: the first tensor the CNN needs is named.
    std::fs::write(&cfg, "[model]\nkind = \"cnn\"\nchannels = [4]\nhidden = 8\n").expect("write");
    let o = args(&model, &cfg, &[]);
    assert!(
        !o.status.success() && text(&o.stderr).contains("convs.0"),
        "{}",
        text(&o.stderr)
    );
}

const CNN_CONFIG: &str = "[model]\nkind = \"cnn\"\nchannels = [4]\nhidden = 16\n";

#[test]
fn quantize_exports_a_cnn_student_that_reads_back_without_its_config() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = ModelConfig::Cnn {
        channels: vec![4],
        hidden: 16,
    };
    let (m, model, config) = train_student(tmp.path(), &cfg, CNN_CONFIG);
    let out = tmp.path().join("out");
    let quantize = |profile: &str| {
        run(&[
            "quantize",
            "--model",
            model.to_str().expect("utf8"),
            "--config",
            config.to_str().expect("utf8"),
            "--dataset",
            "mnist-10k",
            "--profile",
            profile,
            "--out",
            out.to_str().expect("utf8"),
        ])
    };
    for profile in ["int8", "f32"] {
        let o = quantize(profile);
        assert!(o.status.success(), "{profile} stderr: {}", text(&o.stderr));
    }
    let arch = Arch::from_config(&cfg, 784, 10).expect("arch");
    let gguf = out.join("student-int8.gguf");
    // The GGUF records the CNN itself (channels, hidden, sizes); the card says the same.
    assert_eq!(recorded_arch(&gguf).expect("arch"), Some(arch.clone()));
    let card: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("student-int8.gguf.card.json")).expect("card")).expect("json");
    assert_eq!(card["arch"]["channels"], serde_json::json!([4]));
    assert_eq!(card["layer_formats"], serde_json::json!(["q8_0", "q8_0", "q8_0"]));
    // The card's accuracy is the exported file's (the row kernel, as `evaluate_quantized` measures it), and
    // its predictions are the f32 student's on at least 98% of the test digits.
    let fed = default_split();
    let (x, n) = (&fed.test.features, fed.test.n);
    let q = load_student(&gguf, &arch).expect("load back");
    let got = q.logits_rows(x, n).expect("logits");
    let want = m.logits(x, n).expect("f32");
    let argmax = |r: &[f32]| r.iter().enumerate().fold(0, |b, (i, v)| if *v > r[b] { i } else { b });
    let pred: Vec<usize> = got.chunks_exact(10).map(argmax).collect();
    let correct = pred
        .iter()
        .zip(&fed.test.labels)
        .filter(|(p, &y)| **p as u32 == y)
        .count();
    let acc = card["metrics"]["accuracy"].as_f64().expect("accuracy");
    assert!((acc - correct as f64 / n as f64).abs() < 1e-9, "card {acc}");
    let same = pred
        .iter()
        .zip(want.chunks_exact(10))
        .filter(|(p, w)| **p == argmax(w))
        .count();
    let f32_acc = want
        .chunks_exact(10)
        .zip(&fed.test.labels)
        .filter(|(w, &y)| argmax(w) as u32 == y)
        .count() as f64
        / n as f64;
    eprintln!("cnn 784-conv4-16-10: f32 accuracy {f32_acc:.4}, int8 {acc:.4}, argmax agreement {same}/{n}");
    assert!(same as f64 >= 0.98 * n as f64, "int8 agrees with f32 on {same} of {n}");

    // `compare` needs no --config: both files (the GGUF, the f32 checkpoint through its card) say what
    // they are.
    let f32_file = out.join("student-f32.safetensors");
    let v = compare_json(&gguf, &f32_file);
    assert_eq!(v["ab"]["samples"], n as u64);
    assert!(v["shadow"]["disagreement_rate"].as_f64().expect("rate") <= 0.02, "{v}");

    // Bad input: a config whose first block has 6 channels where the checkpoint has 4.
    std::fs::write(&config, "[model]\nkind = \"cnn\"\nchannels = [6]\nhidden = 16\n").expect("write");
    let o = quantize("int8");
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(err.contains("convs.0.weight") && err.contains("shape"), "{err}");
}
