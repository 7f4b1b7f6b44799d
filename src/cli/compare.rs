//! `fedistill compare A B`: A/B comparison of two exported students on the same held-out samples
//! (paired accuracy difference, McNemar's exact test, decision at `--alpha`) and a shadow-mode pass that
//! streams the samples through both and reports disagreement (see docs/quantization.md).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use fedistill_shared::ml::lifecycle::{argmax_rows, compare_predictions, AbReport, Shadow, ShadowReport};
use fedistill_shared::ml::quant::{load_student, recorded_arch, Arch, QuantizedModel};
use serde::Serialize;

use super::quantize::{load_split, read_config};

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

/// What `compare --json` prints.
#[derive(Debug, Serialize)]
struct CompareOutput {
    a: String,
    b: String,
    dataset: String,
    ab: AbReport,
    shadow: ShadowReport,
}

fn open(path: &Path, config: Option<&Arch>, in_dim: usize, classes: usize) -> anyhow::Result<QuantizedModel> {
    let arch = match config {
        Some(a) => a.clone(),
        None => recorded_arch(path)?.with_context(|| {
            format!(
                "{} records no architecture (no metadata, no model card): pass --config",
                path.display()
            )
        })?,
    };
    if arch.in_dim != in_dim || arch.classes != classes {
        anyhow::bail!(
            "{} expects {} features and {} classes, the dataset has {in_dim} and {classes}",
            path.display(),
            arch.in_dim,
            arch.classes
        );
    }
    load_student(path, &arch).with_context(|| format!("loading {}", path.display()))
}

pub fn run(args: CompareArgs) -> anyhow::Result<()> {
    if args.shadow_batch == 0 {
        anyhow::bail!("--shadow-batch must be >= 1");
    }
    let (ds, fed) = load_split(
        &args.dataset,
        args.split.data_dir.clone(),
        args.split.seed,
        args.split.test_fraction,
        args.split.public_fraction,
    )?;
    let config_arch = match &args.config {
        Some(p) => {
            let f = read_config(p)?;
            Some(Arch::from_config(&f.model, ds.dim, ds.num_classes).context("student config")?)
        }
        None => None,
    };
    let a = open(&args.a, config_arch.as_ref(), ds.dim, ds.num_classes)?;
    let b = open(&args.b, config_arch.as_ref(), ds.dim, ds.num_classes)?;
    let test = &fed.test;
    let c = ds.num_classes;
    let pa = argmax_rows(&a.logits(&test.features, test.n)?, c);
    let pb = argmax_rows(&b.logits(&test.features, test.n)?, c);
    let ab = compare_predictions(&pa, &pb, &test.labels, args.alpha)?;
    // Shadow mode: A serves, B scores the same stream batch by batch.
    let mut shadow = Shadow::default();
    let d = ds.dim;
    for (chunk, labels) in test
        .features
        .chunks(args.shadow_batch * d)
        .zip(test.labels.chunks(args.shadow_batch))
    {
        let n = labels.len();
        let sa = argmax_rows(&a.logits(chunk, n)?, c);
        let sb = argmax_rows(&b.logits(chunk, n)?, c);
        shadow.handle_batch(&sa, &sb, Some(labels))?;
    }
    let out = CompareOutput {
        a: args.a.display().to_string(),
        b: args.b.display().to_string(),
        dataset: ds.name.clone(),
        ab,
        shadow: shadow.poll_report(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out).context("serializing")?);
    } else {
        let r = &out.ab;
        println!("samples            {}", r.samples);
        println!("accuracy A         {:.4}  ({} {})", r.accuracy_a, a.profile(), out.a);
        println!("accuracy B         {:.4}  ({} {})", r.accuracy_b, b.profile(), out.b);
        println!("difference A - B   {:+.4}", r.accuracy_difference);
        println!(
            "discordant pairs   only A right {}, only B right {}",
            r.counts.only_a, r.counts.only_b
        );
        println!("McNemar exact p    {:.6}", r.p_value);
        println!("decision (alpha {}) {:?}", r.alpha, r.decision);
        println!(
            "shadow             {} scored in batches of {}, {} disagreements ({:.2}%)",
            out.shadow.scored,
            args.shadow_batch,
            out.shadow.disagreements,
            100.0 * out.shadow.disagreement_rate
        );
    }
    Ok(())
}
