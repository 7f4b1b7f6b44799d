//! `fedistill compare A B`: the flags of the A/B comparison of two exported students on the same held-out
//! samples; `fedistill_harness::student::compare` runs McNemar's exact test and the shadow-mode pass and
//! prints the result (see docs/quantization.md).

use std::path::PathBuf;

use clap::Args;
use fedistill_harness::student::{self, CompareOptions};

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
    split: super::quantize::LocalSplitArgs,
}

pub fn run(args: CompareArgs) -> anyhow::Result<()> {
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
