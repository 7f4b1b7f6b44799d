//! `fedistill bench train`: samples/s of the fused training path next to the plain candle-nn path,
//! measured in the same run (build with --release for meaningful figures).

use anyhow::Context;
use fedistill_shared::data::{load, LoadOptions};
use fedistill_shared::ml::bench::{bench_train_with_progress, BenchConfig};
use fedistill_shared::ml::Progress;

/// Options of `fedistill bench train`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TrainOptions {
    /// Fewer steps (a quick check rather than a stable figure).
    #[arg(long)]
    pub quick: bool,
    /// Also print the result as JSON lines.
    #[arg(long)]
    pub json: bool,
    /// Write train.json, train.md and train-throughput.png/.svg (plain vs fused samples/s per workload)
    /// to this directory.
    #[arg(long)]
    pub report: Option<std::path::PathBuf>,
}

/// Runs the suite and prints one line per workload.
pub fn run(args: &TrainOptions) -> anyhow::Result<()> {
    let (quick, json, report) = (args.quick, args.json, &args.report);
    if cfg!(debug_assertions) {
        eprintln!("warning: debug build; figures are only meaningful with --release");
    }
    let ds = load("mnist-10k", &LoadOptions::default()).context("loading mnist-10k")?;
    let bc = if quick {
        BenchConfig::quick()
    } else {
        BenchConfig::full()
    };
    // One step per workload on stderr: a bar on a terminal, plain lines otherwise.
    let progress = Progress::auto();
    let lines = bench_train_with_progress(&ds.features, &ds.labels, ds.n, ds.dim, ds.num_classes, &bc, &progress)
        .context("training benchmark")?;
    println!(
        "{:<36} {:>16} {:>16} {:>9}",
        "workload", "plain samples/s", "fused samples/s", "speed-up"
    );
    for l in &lines {
        println!(
            "{:<36} {:>16.0} {:>16.0} {:>8.2}x",
            l.workload, l.plain_samples_per_s, l.fused_samples_per_s, l.speedup
        );
    }
    if json {
        for l in &lines {
            println!("{}", serde_json::to_string(l).context("serializing bench line")?);
        }
    }
    if let Some(dir) = report {
        let rows: Vec<Vec<String>> = lines
            .iter()
            .map(|l| {
                vec![
                    l.workload.clone(),
                    format!("{:.0}", l.plain_samples_per_s),
                    format!("{:.0}", l.fused_samples_per_s),
                    format!("{:.2}x", l.speedup),
                ]
            })
            .collect();
        let md = format!(
            "Command: `fedistill bench train{}`. MNIST-10k, both paths over the same batches in the same run.\n\n{}\n\
             ![Training throughput, plain vs fused samples/s per workload](train-throughput.png)\n",
            if quick { " --quick" } else { "" },
            crate::report::markdown_table(&["workload", "plain samples/s", "fused samples/s", "speed-up"], &rows)
        );
        crate::report::write_report(dir, "train", &lines, &md)?;
        let categories: Vec<String> = lines.iter().map(|l| l.workload.clone()).collect();
        let groups = [
            (
                "plain candle-nn".to_string(),
                lines.iter().map(|l| l.plain_samples_per_s).collect(),
            ),
            (
                "fused".to_string(),
                lines.iter().map(|l| l.fused_samples_per_s).collect(),
            ),
        ];
        let title = format!(
            "Training throughput on MNIST-10k, plain vs fused{}",
            if quick { " (--quick)" } else { "" }
        );
        crate::report::write_bar_chart(
            dir,
            "train-throughput",
            &crate::report::BarChart {
                title: &title,
                y_label: "samples/s",
                categories: &categories,
                groups: &groups,
            },
        )
        .context("plotting the training throughput")?;
        eprintln!("report written to {}", dir.display());
    }
    Ok(())
}
