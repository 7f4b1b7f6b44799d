//! `fedistill bench quantize`: every quantization profile of an MNIST-10k student next to its f32
//! baseline measured in the same run, the teacher against the int8 student, and QAT against PTQ
//! (build with --release for meaningful figures; see docs/quantization.md).

use anyhow::Context;
use fedistill_shared::data::{load, LoadOptions};
use fedistill_shared::ml::quant::{bench_quantize, format_table, QuantBenchConfig, QuantRow};
use fedistill_shared::ml::Progress;

/// Options of `fedistill bench quantize`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct QuantizeOptions {
    /// Fewer epochs (a quick check rather than a stable figure).
    #[arg(long)]
    pub quick: bool,
    /// Also print the whole report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Write quantize.json, quantize.md (the table as Markdown) and quantize-vs-f32.png/.svg (each profile's
    /// accuracy, size reduction, batch-1 speed-up and batch-128 throughput relative to f32) to this directory.
    #[arg(long)]
    pub report: Option<std::path::PathBuf>,
}

/// Runs the suite and prints its tables.
pub fn run(args: &QuantizeOptions) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        eprintln!("warning: debug build; figures are only meaningful with --release");
    }
    let ds = load("mnist-10k", &LoadOptions::default()).context("loading mnist-10k")?;
    let cfg = if args.quick {
        QuantBenchConfig::quick()
    } else {
        QuantBenchConfig::full()
    };
    let r = bench_quantize(&ds, &cfg, &Progress::auto()).context("quantization benchmark")?;
    println!(
        "{}: {} train / {} test / {} calibration (public) samples; student {:?}, teacher {:?}",
        r.dataset, r.samples[0], r.samples[1], r.samples[2], cfg.student, cfg.teacher
    );
    print!("{}", format_table(&r.table));
    let t = &r.teacher_vs_int8;
    println!(
        "teacher vs int8 student: accuracy {:.4} vs {:.4} (ratio {:.4}); batch-1 p50 {:.1} vs {:.1} us \
         (speed-up {:.2}x); batch-128 {:.0} vs {:.0} samples/s ({:.2}x)",
        t.teacher_accuracy,
        t.int8_accuracy,
        t.accuracy_ratio,
        t.teacher_latency_p50_us,
        t.int8_latency_p50_us,
        t.speedup_batch1,
        t.teacher_throughput,
        t.int8_throughput,
        t.throughput_ratio
    );
    println!(
        "{:<9} {:>8} {:>8} {:>8} {:>9} {:>9} {:>10}",
        "profile", "f32", "ptq", "qat", "ptq_loss", "qat_loss", "recovered"
    );
    for q in &r.qat {
        println!(
            "{:<9} {:>8.4} {:>8.4} {:>8.4} {:>+9.2} {:>+9.2} {:>10}",
            q.profile,
            q.f32_accuracy,
            q.ptq_accuracy,
            q.qat_accuracy,
            q.ptq_loss_points,
            q.qat_loss_points,
            q.recovered_fraction
                .map_or("n/a".to_string(), |f| format!("{:.0}%", 100.0 * f))
        );
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r).context("serializing report")?);
    }
    if let Some(dir) = &args.report {
        let rows: Vec<Vec<String>> = r
            .table
            .iter()
            .map(|q| {
                vec![
                    q.profile.clone(),
                    format!("{:.2}", q.accuracy * 100.0),
                    format!("{:+.2}", q.accuracy_delta_points),
                    format!("{:.4}", q.agreement_with_f32),
                    q.bytes.to_string(),
                    format!("{:.2}x", q.size_ratio_vs_f32),
                    format!("{:.1}", q.latency_p50_us),
                    format!("{:.2}x", q.speedup_batch1_vs_f32),
                    format!("{:.0}", q.throughput),
                ]
            })
            .collect();
        let md = format!(
            "Command: `fedistill bench quantize{}`. MNIST-10k student, every profile against the f32 model of the \
             same run.\n\n{}\n![Each profile relative to the f32 student: accuracy, size reduction, batch-1 \
             speed-up, batch-128 throughput](quantize-vs-f32.png)\n",
            if args.quick { " --quick" } else { "" },
            crate::report::markdown_table(
                &[
                    "profile",
                    "accuracy (%)",
                    "vs f32 (points)",
                    "agreement with f32",
                    "bytes",
                    "size vs f32",
                    "batch-1 p50 (us)",
                    "batch-1 speed-up",
                    "batch-128 samples/s",
                ],
                &rows
            )
        );
        crate::report::write_report(dir, "quantize", &r, &md)?;
        write_vs_f32_chart(dir, &r.table, args.quick)?;
        eprintln!("report written to {}", dir.display());
    }
    Ok(())
}

/// quantize-vs-f32.png/.svg: per profile, four bars relative to the f32 student of the same run, all "higher
/// is better": accuracy / f32 accuracy, f32 bytes / bytes, batch-1 speed-up and batch-128 throughput ratio.
fn write_vs_f32_chart(dir: &std::path::Path, table: &[QuantRow], quick: bool) -> anyhow::Result<()> {
    let f32_accuracy = table
        .iter()
        .find(|q| q.profile == "f32")
        .context("the quantization table has no f32 row to compare with")?
        .accuracy;
    let categories: Vec<String> = table.iter().map(|q| q.profile.clone()).collect();
    let column = |f: fn(&QuantRow) -> f64| table.iter().map(f).collect::<Vec<f64>>();
    let groups = [
        (
            "accuracy".to_string(),
            table.iter().map(|q| q.accuracy / f32_accuracy).collect(),
        ),
        ("size reduction".to_string(), column(|q| q.size_ratio_vs_f32)),
        ("batch-1 speed-up".to_string(), column(|q| q.speedup_batch1_vs_f32)),
        (
            "batch-128 throughput".to_string(),
            column(|q| q.throughput_ratio_vs_f32),
        ),
    ];
    let title = format!(
        "Quantization profiles relative to f32, MNIST-10k student{}",
        if quick { " (--quick)" } else { "" }
    );
    crate::report::write_bar_chart(
        dir,
        "quantize-vs-f32",
        &crate::report::BarChart {
            title: &title,
            y_label: "× f32 (higher is better)",
            categories: &categories,
            groups: &groups,
        },
    )
    .context("plotting the quantization profiles against f32")?;
    Ok(())
}
