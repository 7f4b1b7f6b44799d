//! `fedistill local --report`'s `headline` (issue 18): the student against the teacher, checked against the
//! rest of the same report, and the hidden `probe-inference` command that measures each model's memory.

mod common;

use common::fedistill;

fn num(v: &serde_json::Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {v}"))
}

#[test]
fn the_headline_agrees_with_the_rest_of_the_report() {
    let dir = tempfile::tempdir().expect("temp dir");
    let report = dir.path().join("r.json");
    let (ok, out) = fedistill(
        dir.path(),
        &[
            "local",
            "--dataset",
            "breast-cancer",
            "--seed",
            "5",
            "--teacher-epochs",
            "20",
            "--distill-epochs",
            "20",
            "--report",
            report.to_str().expect("utf-8 path"),
        ],
    );
    assert!(ok, "{out}");
    assert!(out.contains("student vs teacher: accuracy"), "{out}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("report")).expect("json report");
    let h = &r["headline"];
    let teacher_acc = num(&r["teacher"], "accuracy");
    let quant = r["quantization"].as_array().expect("quantization rows");
    let row = |p: &str| {
        quant
            .iter()
            .find(|q| q["profile"] == p)
            .unwrap_or_else(|| panic!("no {p} row"))
    };
    let (f32_acc, int8_acc) = (num(row("f32"), "accuracy"), num(row("int8"), "accuracy"));
    assert!((num(h, "accuracy_ratio") - f32_acc / teacher_acc).abs() < 1e-12, "{h}");
    assert!(
        (num(h, "int8_accuracy_ratio") - int8_acc / teacher_acc).abs() < 1e-12,
        "{h}"
    );
    assert!(
        (num(h, "int8_points_lost") - 100.0 * (f32_acc - int8_acc)).abs() < 1e-9,
        "{h}"
    );
    // Weight bytes are the checkpoints the report already sizes; the int8 file is the table's int8 row.
    let (tb, sb) = (num(&r["teacher"], "size_bytes"), num(&r["student"], "size_bytes"));
    assert_eq!(num(h, "teacher_bytes"), tb);
    assert_eq!(num(h, "student_f32_bytes"), sb);
    assert!((num(h, "memory_reduction") - (1.0 - sb / tb)).abs() < 1e-12, "{h}");
    assert!((num(h, "int8_size_ratio_vs_teacher") - tb / num(row("int8"), "bytes")).abs() < 1e-9);
    // The speed-ups are the latencies' ratios.
    let (t, s, q) = (
        num(h, "teacher_latency_ms"),
        num(h, "student_f32_latency_ms"),
        num(h, "student_int8_latency_ms"),
    );
    assert!(t > 0.0 && s > 0.0 && q > 0.0, "{h}");
    assert!((num(h, "speedup_f32_batch1") - t / s).abs() < 1e-9 * (t / s));
    assert!((num(h, "speedup_int8_batch1") - t / q).abs() < 1e-9 * (t / q));
    // Every memory probe ran in its own process and read its peak.
    let m = &h["peak_rss"];
    for k in ["baseline_kib", "teacher_kib", "student_f32_kib", "student_int8_kib"] {
        assert!(num(m, k) > 1000.0, "{k}: {m}");
    }
}

#[test]
fn the_probe_names_a_model_file_it_cannot_load() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = dir.path().join("garbage.gguf");
    std::fs::write(&bad, b"not a model").expect("write");
    let (ok, out) = fedistill(
        dir.path(),
        &[
            "probe-inference",
            "--model",
            bad.to_str().expect("utf-8 path"),
            "--in-dim",
            "30",
            "--classes",
            "2",
            "--hidden",
            "8",
        ],
    );
    assert!(!ok, "{out}");
    assert!(out.contains("garbage.gguf"), "{out}");
    // And without a model it reports the process's own floor.
    let (ok, out) = fedistill(
        dir.path(),
        &["probe-inference", "--in-dim", "30", "--classes", "2", "--hidden", "8"],
    );
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(v["passes"], 0);
    assert!(num(&v, "peak_rss_kib") > 0.0);
}
