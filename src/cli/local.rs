//! `fedistill local`: the flags of the one-machine experiment (teacher on the private part, student distilled
//! on the public part, both evaluated on the test set); `fedistill_harness::local` runs it, prints the table
//! and writes the JSON report (see docs/ml.md).

use std::path::PathBuf;

use clap::Args;
use fedistill_harness::local::{self, LocalRunOptions};

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

/// Flags of the hidden `fedistill probe-inference` (see `fedistill_harness::headline`).
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// The exported model (f32 safetensors checkpoint, f16 safetensors or GGUF); absent: load nothing.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Input features of the MLP.
    #[arg(long)]
    in_dim: usize,
    /// Classes of the MLP.
    #[arg(long)]
    classes: usize,
    /// Hidden widths, comma-separated (empty: logistic regression).
    #[arg(long, value_delimiter = ',', num_args = 0..)]
    hidden: Vec<usize>,
    /// Batch-1 inferences to run before reading the peak RSS.
    #[arg(long, default_value_t = fedistill_harness::headline::PROBE_PASSES)]
    passes: usize,
}

/// Runs the probe and prints its JSON report on stdout.
pub fn probe(args: ProbeArgs) -> anyhow::Result<()> {
    use fedistill_harness::headline;
    let arch = headline::probe_arch(args.in_dim, args.classes, &args.hidden)?;
    let report = headline::probe(args.model.as_deref(), &arch, args.passes)?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

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
