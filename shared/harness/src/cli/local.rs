//! `fedistill local`: the flags of the one-machine experiment (teacher on the private part, student distilled
//! on the public part, both evaluated on the test set), converted to [`LocalRunOptions`]; [`crate::local`] runs
//! it, prints the table and writes the JSON report (see docs/ml.md).

use std::path::PathBuf;

use clap::Args;

use crate::local::{self, LocalRunOptions};

#[derive(Debug, Args)]
pub struct LocalArgs {
    /// Catalog dataset name (mnist-10k, digits, credit, lending-club, breast-cancer, italy-power, fashion-mnist).
    #[arg(long)]
    dataset: String,
    /// Teacher config TOML: `[model]` (kind, widths) and optional `[train]`.
    #[arg(long, value_name = "CFG.toml")]
    teacher: Option<PathBuf>,
    /// Student config TOML: `[model]` and optional `[distill]`.
    #[arg(long, value_name = "CFG.toml")]
    student: Option<PathBuf>,
    /// Seed of the split, inits and batch orders.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Write the JSON report here.
    #[arg(long, value_name = "FILE.json")]
    report: Option<PathBuf>,
    /// Directory with the dataset files instead of the embedded copies.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Fraction of the data used as the test set.
    #[arg(long, default_value_t = 0.2)]
    test_fraction: f64,
    /// Fraction of the data used as the public transfer set.
    #[arg(long, default_value_t = 0.3)]
    public_fraction: f64,
    /// Override the teacher's epochs.
    #[arg(long)]
    teacher_epochs: Option<usize>,
    /// Override the student's distillation epochs.
    #[arg(long)]
    distill_epochs: Option<usize>,
}

/// Runs the experiment.
pub fn run(args: LocalArgs) -> anyhow::Result<()> {
    local::run(&LocalRunOptions {
        dataset: args.dataset,
        teacher: args.teacher,
        student: args.student,
        seed: args.seed,
        report: args.report,
        data_dir: args.data_dir,
        test_fraction: args.test_fraction,
        public_fraction: args.public_fraction,
        teacher_epochs: args.teacher_epochs,
        distill_epochs: args.distill_epochs,
    })
}
