//! `fedistill quantize` and `fedistill compare A B`: the flags of the student tools, converted to
//! [`ExportOptions`] and [`CompareOptions`]. [`crate::student::export`] quantizes a trained MLP or CNN student
//! (optionally after QAT) into the int8 / sandwich / f16 / f32 profiles, exports them with model cards and
//! writes the quantization table; [`crate::student::compare`] A/B-compares two exported students on the same
//! held-out samples (McNemar's exact test, shadow mode) and prints the result (see docs/quantization.md).

use std::path::PathBuf;

use clap::Args;

use crate::student::{self, CompareOptions, ExportOptions, SplitOptions};

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
struct LocalSplitArgs {
    /// Seed of the split (same meaning and default as `fedistill local`).
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Fraction of the data used as the test set.
    #[arg(long, default_value_t = 0.2)]
    test_fraction: f64,
    /// Fraction of the data used as the public transfer set (calibration for `quantize`).
    #[arg(long, default_value_t = 0.3)]
    public_fraction: f64,
    /// Directory with the dataset files instead of the embedded copies.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

impl LocalSplitArgs {
    fn options(self) -> SplitOptions {
        SplitOptions {
            seed: self.seed,
            test_fraction: self.test_fraction,
            public_fraction: self.public_fraction,
            data_dir: self.data_dir,
        }
    }
}

/// Runs `fedistill quantize`.
pub fn quantize(args: QuantizeArgs) -> anyhow::Result<()> {
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

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Student A (the current one): .gguf, f16 .safetensors or an f32 student checkpoint.
    #[arg(value_name = "A")]
    a: PathBuf,
    /// Student B (the candidate).
    #[arg(value_name = "B")]
    b: PathBuf,
    /// Catalog dataset name; its test split is the held-out set.
    #[arg(long)]
    dataset: String,
    /// Significance level of McNemar's test.
    #[arg(long, default_value_t = 0.05)]
    alpha: f64,
    /// Student config TOML (`[model]`); needed only for bare f32 checkpoints without a model card.
    #[arg(long, value_name = "CFG.toml")]
    config: Option<PathBuf>,
    /// Batch size of the shadow-mode stream.
    #[arg(long, default_value_t = 64)]
    shadow_batch: usize,
    /// Print the result as one JSON object instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    split: LocalSplitArgs,
}

/// Runs `fedistill compare`.
pub fn compare(args: CompareArgs) -> anyhow::Result<()> {
    student::compare(&CompareOptions {
        a: args.a,
        b: args.b,
        dataset: args.dataset,
        alpha: args.alpha,
        config: args.config,
        shadow_batch: args.shadow_batch,
        json: args.json,
        split: args.split.options(),
    })
}
