//! `fedistill tune`: the flags of the knob search (successive halving over the teacher's and the federation's
//! knobs, in a federation simulated on the public set); [`crate::tune`] does the work.

use std::path::PathBuf;

use clap::Args;

use crate::tune::{self, TuneOptions};

#[derive(Debug, Args)]
pub struct TuneArgs {
    /// Catalog dataset (default: mnist-10k; with --quick: digits).
    #[arg(long)]
    dataset: Option<String>,
    /// Directory with the dataset files instead of the embedded copies (fashion-mnist).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Participants of the federation (and of the simulated one).
    #[arg(long, default_value_t = 3)]
    participants: usize,
    /// Dirichlet alpha of the label skew (smaller: more skewed).
    #[arg(long, default_value_t = 0.5, allow_negative_numbers = true)]
    alpha: f64,
    /// Seed of the split, the simulation, the candidates and every model.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Candidates per stage, the defaults among them (default 9; with --quick: 3).
    #[arg(long)]
    configs: Option<usize>,
    /// Halving factor: each rung keeps the best 1/eta candidates and gives them eta times the budget.
    #[arg(long, default_value_t = 3)]
    eta: usize,
    /// A small search for CI: digits, 3 candidates, 2 or 3 rounds.
    #[arg(long)]
    quick: bool,
    /// Skip running the chosen configuration and the defaults on the real federation's test set.
    #[arg(long)]
    no_confirm: bool,
    /// Write the tuned configuration (coordinator keys, participant tables) to this TOML file.
    #[arg(long, value_name = "FILE.toml")]
    out: Option<PathBuf>,
    /// Write tune.json, tune.md and the per-stage plots (PNG and SVG) to this directory.
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
}

/// Runs the search.
pub fn run(args: TuneArgs) -> anyhow::Result<()> {
    let command = super::command_line();
    let opts = TuneOptions {
        dataset: args.dataset,
        data_dir: args.data_dir,
        participants: args.participants,
        alpha: args.alpha,
        seed: args.seed,
        configs: args.configs,
        eta: args.eta,
        quick: args.quick,
        confirm: !args.no_confirm,
        out: args.out,
        report: args.report,
        command,
    };
    tune::run(&opts).map(|_| ())
}
