//! `fedistill quantize`: the flags of post-training quantization (optionally after QAT) of a trained MLP or
//! CNN student into the int8 / sandwich / f16 / f32 profiles; `fedistill_harness::student::export` quantizes,
//! exports with model cards and writes the quantization table (see docs/quantization.md).

use std::path::PathBuf;

use clap::Args;
use fedistill_harness::student::{self, ExportOptions, SplitOptions};

#[derive(Debug, Args)]
pub struct QuantizeArgs {
    /// The trained f32 student checkpoint (safetensors written by the student's `save`).
    #[arg(long, value_name = "FILE")]
    model: PathBuf,
    /// Student config TOML: `[model]` (an MLP or a CNN), optional `[qat]` and `[ptq]`; other tables are
    /// ignored.
    #[arg(long, value_name = "CFG.toml")]
    config: PathBuf,
    /// Catalog dataset name; its test split is the evaluation set, its public split the calibration set.
    #[arg(long)]
    dataset: String,
    /// Profile to export, or `all` (also prints and writes the quantization table).
    #[arg(long, default_value = "int8")]
    profile: String,
    /// Output directory (created if missing).
    #[arg(long, value_name = "DIR", default_value = "quantized")]
    out: PathBuf,
    /// Fine-tune with quantization-aware training on the labelled private part before quantizing.
    #[arg(long)]
    qat: bool,
    #[command(flatten)]
    split: LocalSplitArgs,
}

/// The split flags `quantize` and `compare` share (same meaning and defaults as `fedistill local`).
#[derive(Debug, clap::Args)]
pub(crate) struct LocalSplitArgs {
    /// Seed of the split (same meaning and default as `fedistill local`).
    #[arg(long, default_value_t = 7)]
    pub(crate) seed: u64,
    /// Fraction of the data used as the test set.
    #[arg(long, default_value_t = 0.2)]
    pub(crate) test_fraction: f64,
    /// Fraction of the data used as the public transfer set (calibration for `quantize`).
    #[arg(long, default_value_t = 0.3)]
    pub(crate) public_fraction: f64,
    /// Directory with the dataset files instead of the embedded copies.
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
}

impl LocalSplitArgs {
    pub(crate) fn options(self) -> SplitOptions {
        SplitOptions {
            seed: self.seed,
            test_fraction: self.test_fraction,
            public_fraction: self.public_fraction,
            data_dir: self.data_dir,
        }
    }
}

pub fn run(args: QuantizeArgs) -> anyhow::Result<()> {
    student::export(&ExportOptions {
        model: args.model,
        config: args.config,
        dataset: args.dataset,
        profile: args.profile,
        out: args.out,
        qat: args.qat,
        split: args.split.options(),
    })
}
