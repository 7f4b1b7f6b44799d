//! `fedistill coordinator --config FILE` and `fedistill participant --config FILE`: the two long-running
//! services. Both run on a multi-threaded tokio runtime; training runs on its blocking pool.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

/// Arguments of `fedistill coordinator`.
#[derive(Debug, Args)]
pub struct CoordinatorArgs {
    /// Coordinator settings (TOML; see docs/operations.md).
    #[arg(long)]
    pub config: PathBuf,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Runs the coordinator until all rounds are done or Ctrl-C.
pub fn run_coordinator(args: CoordinatorArgs) -> anyhow::Result<()> {
    let summary = runtime()?.block_on(fedistill_coordinator::service::run_from_file(&args.config))?;
    println!(
        "coordinator done: {} rounds aggregated, log size {}",
        summary.rounds, summary.log_size
    );
    Ok(())
}

/// Runs a participant until the federation finishes or Ctrl-C.
pub fn run_participant(config: PathBuf) -> anyhow::Result<()> {
    let result = runtime()?.block_on(fedistill_participant::service::run_from_file(&config))?;
    println!(
        "participant {} done: student accuracy {:.4}, int8 {:.4}, local-only {:.4}",
        result.participant, result.student_accuracy, result.int8_accuracy, result.local_only_accuracy
    );
    Ok(())
}
