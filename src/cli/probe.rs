//! `fedistill probe-inference` (hidden): the flags of the inference memory probe `fedistill local` runs in a
//! process of its own per model (`fedistill_harness::headline`), and its JSON line. The flags of `fedistill
//! local` itself are `fedistill_harness::cli::local`'s.

use std::path::PathBuf;

use clap::Args;

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
pub fn run(args: ProbeArgs) -> anyhow::Result<()> {
    use fedistill_harness::headline;
    let arch = headline::probe_arch(args.in_dim, args.classes, &args.hidden)?;
    let report = headline::probe(args.model.as_deref(), &arch, args.passes)?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
