//! `fedistill local`, the one-machine experiment: teacher on the private part, student distilled on the
//! public part, both evaluated on the test set; prints a table and writes a JSON report (see docs/ml.md).

use std::path::PathBuf;

use anyhow::Context;
use fedistill_shared::data::{load, LoadOptions};
use fedistill_shared::ml::local::{parse_toml, run_local, LocalOptions, LocalReport, StudentFile, TeacherFile};
use fedistill_shared::ml::Progress;

use crate::headline::{self, HeadlineInputs};

/// Options of `fedistill local`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LocalRunOptions {
    /// Catalog dataset name (mnist-10k, digits, credit, lending-club, breast-cancer, italy-power, fashion-mnist).
    #[arg(long)]
    pub dataset: String,
    /// Teacher config TOML: `[model]` (kind, widths) and optional `[train]`.
    #[arg(long, value_name = "CFG.toml")]
    pub teacher: Option<PathBuf>,
    /// Student config TOML: `[model]` and optional `[distill]`.
    #[arg(long, value_name = "CFG.toml")]
    pub student: Option<PathBuf>,
    /// Seed of the split, inits and batch orders.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Write the JSON report here.
    #[arg(long, value_name = "FILE.json")]
    pub report: Option<PathBuf>,
    /// Directory with the dataset files instead of the embedded copies.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Fraction of the data used as the test set.
    #[arg(long, default_value_t = 0.2)]
    pub test_fraction: f64,
    /// Fraction of the data used as the public transfer set.
    #[arg(long, default_value_t = 0.3)]
    pub public_fraction: f64,
    /// Override the teacher's epochs.
    #[arg(long)]
    pub teacher_epochs: Option<usize>,
    /// Override the student's distillation epochs.
    #[arg(long)]
    pub distill_epochs: Option<usize>,
}

/// Runs the local pipeline, prints the teacher/student table and the student's quantization table, and writes
/// the JSON report.
pub fn run(args: &LocalRunOptions) -> anyhow::Result<()> {
    // `..default()` keeps this compiling when the data crate adds load options.
    #[allow(clippy::needless_update)]
    let opts = LoadOptions {
        data_dir: args.data_dir.clone(),
        ..LoadOptions::default()
    };
    let ds = load(&args.dataset, &opts).with_context(|| format!("loading dataset {}", args.dataset))?;
    let mut lo = LocalOptions::defaults_for(&ds, args.seed);
    lo.test_fraction = args.test_fraction;
    lo.public_fraction = args.public_fraction;
    if let Some(p) = &args.teacher {
        let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        lo.teacher = parse_toml::<TeacherFile>(&text, &p.display().to_string())?;
    }
    if let Some(p) = &args.student {
        let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        lo.student = parse_toml::<StudentFile>(&text, &p.display().to_string())?;
    }
    if let Some(e) = args.teacher_epochs {
        let mut t = lo
            .teacher
            .train
            .clone()
            .unwrap_or_else(|| fedistill_shared::ml::local::default_train(&ds.kind, args.seed));
        t.epochs = e;
        lo.teacher.train = Some(t);
    }
    if let Some(e) = args.distill_epochs {
        let mut d = lo
            .student
            .distill
            .clone()
            .unwrap_or_else(|| fedistill_shared::ml::local::default_distill(&ds.kind, args.seed));
        d.epochs_per_round = e;
        lo.student.distill = Some(d);
    }
    let progress = Progress::auto();
    let (report, teacher, student) = run_local(&ds, &lo, &progress).context("local pipeline")?;
    print_table(&report);
    let split = fedistill_shared::data::split(
        &ds,
        &fedistill_shared::data::SplitConfig {
            participants: 1,
            partition: fedistill_shared::data::Partition::Iid,
            test_fraction: lo.test_fraction,
            public_fraction: lo.public_fraction,
            seed: lo.seed,
        },
    )
    .context("re-deriving the split for the quantization table")?;
    let n_calib = split.public.n.min(512);
    let calib = &split.public.features[..n_calib * split.public.dim];
    let quantization = quantization_rows(&split.test, calib, n_calib, &student)?;
    let mut json_report = serde_json::to_value(&report).context("serializing report")?;
    if let (Some(obj), Some(rows)) = (json_report.as_object_mut(), &quantization) {
        obj.insert(
            "quantization".into(),
            serde_json::to_value(rows).context("serializing quantization table")?,
        );
        let h = headline::measure(&HeadlineInputs {
            teacher: &teacher,
            student: &student,
            quant_rows: rows,
            test: &split.test,
            calib: (calib, n_calib),
            probe_exe: std::env::current_exe().ok(),
        })
        .context("the student against the teacher (headline)")?;
        print_headline(&h);
        obj.insert(
            "headline".into(),
            serde_json::to_value(&h).context("serializing headline")?,
        );
    }
    if let Some(path) = &args.report {
        let json = serde_json::to_string_pretty(&json_report).context("serializing report")?;
        std::fs::write(path, json).with_context(|| format!("writing report {}", path.display()))?;
    }
    Ok(())
}

/// The quantization table of the distilled student (every profile against f32, calibrated on the public
/// part of the same split `run_local` used), MLP and CNN students alike.
fn quantization_rows(
    test: &fedistill_shared::data::Dataset,
    calib: &[f32],
    n_calib: usize,
    student: &fedistill_shared::ml::Model,
) -> anyhow::Result<Option<Vec<fedistill_shared::ml::quant::table::QuantRow>>> {
    let rows = fedistill_shared::ml::quant::table::quantization_table(student, test, calib, n_calib)
        .context("quantization table")?;
    println!();
    println!("{}", fedistill_shared::ml::quant::table::format_table(&rows));
    Ok(Some(rows))
}

/// The headline lines under the tables.
fn print_headline(h: &headline::Headline) {
    println!();
    println!(
        "student vs teacher: accuracy {:.3} (int8 {:.3}, {:+.2} points f32 -> int8); batch-1 {:.1}x faster f32, \
         {:.1}x int8 ({:.4} / {:.4} / {:.4} ms); weights {:.0}% smaller; int8 file {:.1}x smaller than the f32 teacher",
        h.accuracy_ratio,
        h.int8_accuracy_ratio,
        -h.int8_points_lost,
        h.speedup_f32_batch1,
        h.speedup_int8_batch1,
        h.teacher_latency_ms,
        h.student_f32_latency_ms,
        h.student_int8_latency_ms,
        100.0 * h.memory_reduction,
        h.int8_size_ratio_vs_teacher
    );
    if let Some(m) = &h.peak_rss {
        println!(
            "peak RSS in inference (own process, KiB): no model {}, teacher {}, student f32 {}, student int8 {}",
            m.baseline_kib, m.teacher_kib, m.student_f32_kib, m.student_int8_kib
        );
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |x| format!("{x:.4}"))
}

fn print_table(r: &LocalReport) {
    let (t, s) = (&r.teacher.metrics, &r.student.metrics);
    println!(
        "dataset {} (seed {}): private {}, public {}, test {} samples; {:.1} s",
        r.dataset, r.seed, r.private_samples, r.public_samples, r.test_samples, r.seconds
    );
    println!("{:<22} {:>14} {:>14}", "metric", "teacher", "student");
    let rows: Vec<(&str, String, String)> = vec![
        ("accuracy", format!("{:.4}", t.accuracy), format!("{:.4}", s.accuracy)),
        (
            "precision (macro)",
            format!("{:.4}", t.precision_macro),
            format!("{:.4}", s.precision_macro),
        ),
        (
            "recall (macro)",
            format!("{:.4}", t.recall_macro),
            format!("{:.4}", s.recall_macro),
        ),
        ("F1 (macro)", format!("{:.4}", t.f1_macro), format!("{:.4}", s.f1_macro)),
        ("ROC-AUC", format!("{:.4}", t.roc_auc), format!("{:.4}", s.roc_auc)),
        ("log loss", format!("{:.4}", t.log_loss), format!("{:.4}", s.log_loss)),
        ("ECE (15 bins)", format!("{:.4}", t.ece), format!("{:.4}", s.ece)),
        ("agreement w/ teacher", opt(t.agreement), opt(s.agreement)),
        ("KL to teacher", opt(t.kl_to_teacher), opt(s.kl_to_teacher)),
        (
            "latency p50 (us)",
            format!("{:.1}", t.latency_p50_us),
            format!("{:.1}", s.latency_p50_us),
        ),
        (
            "latency p99 (us)",
            format!("{:.1}", t.latency_p99_us),
            format!("{:.1}", s.latency_p99_us),
        ),
        (
            "throughput (/s, b256)",
            format!("{:.0}", t.throughput_per_s),
            format!("{:.0}", s.throughput_per_s),
        ),
        ("params", t.params.to_string(), s.params.to_string()),
        ("size (bytes)", t.size_bytes.to_string(), s.size_bytes.to_string()),
    ];
    for (name, a, b) in rows {
        println!("{name:<22} {a:>14} {b:>14}");
    }
    println!(
        "student/teacher: params {:.3}, accuracy {:.4}; teacher {:.1} s, distill {:.1} s",
        r.param_ratio, r.accuracy_ratio, r.teacher_seconds, r.distill_seconds
    );
}
