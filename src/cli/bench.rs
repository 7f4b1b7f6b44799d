//! `fedistill bench train`: samples/s of the fused training path next to the plain candle-nn path,
//! measured in the same run (build with --release for meaningful figures).

use anyhow::Context;
use clap::Subcommand;
use fedistill_shared::data::{load, LoadOptions};
use fedistill_shared::ml::bench::{bench_train, BenchConfig};

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Federated distillation (each rule) vs local-only, centralized and FedAvg, over datasets and splits.
    Accuracy(super::bench_accuracy::BenchAccuracyArgs),
    /// Bytes per soft-label encoding vs FedAvg's bytes to the same student accuracy.
    Communication(super::bench_accuracy::BenchCommunicationArgs),
    /// Time to move 1/10/100 MB over the mTLS link vs plain QUIC, measured in the same run.
    Transport(super::bench_transport::BenchTransportArgs),
    /// Every quantization profile against the f32 student, teacher vs int8, QAT vs PTQ, on MNIST-10k.
    Quantize(super::bench_quantize::BenchQuantizeArgs),
    /// Round latency, coordinator CPU and memory vs participants (3..100) and payload, vs raw transfer.
    Scale(super::bench_scale::BenchScaleArgs),
    /// Student accuracy vs DP epsilon and under poisoning attacks, per aggregation rule, on MNIST-10k.
    Robust(super::bench_robust::BenchRobustArgs),
    /// Teacher training and distillation throughput, fused vs plain candle-nn AdamW, on MNIST-10k.
    Train {
        /// Fewer steps (a quick check rather than a stable figure).
        #[arg(long)]
        quick: bool,
        /// Also print the result as JSON lines.
        #[arg(long)]
        json: bool,
        /// Write train.json, train.md and train-throughput.png/.svg (plain vs fused samples/s per workload)
        /// to this directory.
        #[arg(long)]
        report: Option<std::path::PathBuf>,
    },
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Accuracy(a) => super::bench_accuracy::run_accuracy(a),
        BenchCommand::Communication(a) => super::bench_accuracy::run_communication(a),
        BenchCommand::Transport(a) => super::bench_transport::run(a),
        BenchCommand::Quantize(a) => super::bench_quantize::run(a),
        BenchCommand::Robust(a) => super::bench_robust::run(a),
        BenchCommand::Scale(a) => super::bench_scale::run(a),
        BenchCommand::Train { quick, json, report } => {
            if cfg!(debug_assertions) {
                eprintln!("warning: debug build; figures are only meaningful with --release");
            }
            let ds = load("mnist-10k", &LoadOptions::default()).context("loading mnist-10k")?;
            let bc = if quick {
                BenchConfig::quick()
            } else {
                BenchConfig::full()
            };
            let lines = bench_train(&ds.features, &ds.labels, ds.n, ds.dim, ds.num_classes, &bc)
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
            if let Some(dir) = &report {
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
                    super::report::markdown_table(
                        &["workload", "plain samples/s", "fused samples/s", "speed-up"],
                        &rows
                    )
                );
                super::report::write_report(dir, "train", &lines, &md)?;
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
                super::report::write_bar_chart(
                    dir,
                    "train-throughput",
                    &super::report::BarChart {
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
    }
}
