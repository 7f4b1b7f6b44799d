//! `fedistill size`: the flags of device-aware sizing (measure candidate students on this machine, pick the most
//! accurate one within a latency and memory budget, write its student config); [`crate::size`] does the work. The thread count is fixed here, before any computation, because candle reads it once per process.

use std::path::PathBuf;

use clap::Args;

use crate::size::{self, SizeOptions};

#[derive(Debug, Args)]
pub struct SizeArgs {
    /// Batch-1 p50 inference latency budget, microseconds (> 0).
    #[arg(long, value_name = "US", allow_negative_numbers = true)]
    latency_us: f64,
    /// Inference memory budget in KB (1024 bytes): stored weights + peak activations of a batch-1 forward.
    #[arg(long, value_name = "KB", allow_negative_numbers = true)]
    memory_kb: f64,
    /// Compute threads of the measurement (and of the whole run).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Catalog dataset name.
    #[arg(long, default_value = "mnist-10k")]
    dataset: String,
    /// Directory with the dataset files instead of the embedded copies.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Seed of the split, inits and batch orders (as `fedistill local --seed`).
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Write the chosen student config TOML here (loadable by `fedistill local --student`).
    #[arg(long, value_name = "FILE.toml")]
    out: Option<PathBuf>,
    /// Write size.json, size.md and the accuracy-vs-latency and accuracy-vs-memory plots to this directory.
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    /// Fewer candidates and epochs (tests, CI).
    #[arg(long)]
    quick: bool,
}

/// Checks the budgets, fixes the thread count and runs the sizing.
pub fn run(args: SizeArgs) -> anyhow::Result<()> {
    let opts = SizeOptions {
        latency_us: args.latency_us,
        memory_kb: args.memory_kb,
        threads: args.threads,
        dataset: args.dataset,
        data_dir: args.data_dir,
        seed: args.seed,
        out: args.out,
        report: args.report,
        quick: args.quick,
    };
    opts.validate()?;
    // Before any candle work: candle sizes its thread pool from these on first use, and gemm reads
    // RAYON_NUM_THREADS on every product. The flag wins over a value in the environment.
    let t = opts.threads.to_string();
    std::env::set_var("RAYON_NUM_THREADS", &t);
    std::env::set_var("CANDLE_NUM_THREADS", &t);
    size::run(&opts)
}
