//! The student tools behind `fedistill quantize` and `fedistill compare`: post-training quantization
//! (optionally after QAT) of a trained MLP or CNN student into the int8 / sandwich / f16 / f32 profiles, exported
//! with model cards, plus the quantization table; and the A/B comparison of two exported students on the same
//! held-out samples (paired accuracy difference, McNemar's exact test, decision at `alpha`) with a
//! shadow-mode pass (see docs/quantization.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use fedistill_shared::data::{load, split, Dataset, FederatedSplit, LoadOptions, Partition, SplitConfig};
use fedistill_shared::ml::lifecycle::{argmax_rows, compare_predictions, metric_map, AbReport, Shadow, ShadowReport};
use fedistill_shared::ml::quant::{
    evaluate_quantized, export_student, format_table, load_student, parse_quantize_file, qat_finetune,
    quantization_table, quantize, recorded_arch, Arch, CardInfo, DatasetRef, Profile, QatTargets, QuantizeFile,
    QuantizedModel,
};
use fedistill_shared::ml::{evaluate, Model};
use serde::Serialize;

/// The split both tools evaluate on (same meaning and defaults as `fedistill local`): the split flags
/// `quantize` and `compare` share.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SplitOptions {
    /// Seed of the split (same meaning and default as `fedistill local`).
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Fraction of the data used as the test set.
    #[arg(long, default_value_t = 0.2)]
    pub test_fraction: f64,
    /// Fraction of the data used as the public transfer set (calibration for `quantize`).
    #[arg(long, default_value_t = 0.3)]
    pub public_fraction: f64,
    /// Directory with the dataset files instead of the embedded copies.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// Options of `fedistill quantize`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ExportOptions {
    /// The trained f32 student checkpoint (safetensors written by the student's `save`).
    #[arg(long, value_name = "FILE")]
    pub model: PathBuf,
    /// Student config TOML: `[model]` (an MLP or a CNN), optional `[qat]` and `[ptq]`; other tables are
    /// ignored.
    #[arg(long, value_name = "CFG.toml")]
    pub config: PathBuf,
    /// Catalog dataset name; its test split is the evaluation set, its public split the calibration set.
    #[arg(long)]
    pub dataset: String,
    /// Profile to export, or `all` (also prints and writes the quantization table).
    #[arg(long, default_value = "int8")]
    pub profile: String,
    /// Output directory (created if missing).
    #[arg(long, value_name = "DIR", default_value = "quantized")]
    pub out: PathBuf,
    /// Fine-tune with quantization-aware training on the labelled private part before quantizing.
    #[arg(long)]
    pub qat: bool,
    /// The split.
    #[command(flatten)]
    pub split: SplitOptions,
}

/// Options of `fedistill compare`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CompareOptions {
    /// Student A (the current one): .gguf, f16 .safetensors or an f32 student checkpoint.
    #[arg(value_name = "A")]
    pub a: PathBuf,
    /// Student B (the candidate).
    #[arg(value_name = "B")]
    pub b: PathBuf,
    /// Catalog dataset name; its test split is the held-out set.
    #[arg(long)]
    pub dataset: String,
    /// Significance level of McNemar's test.
    #[arg(long, default_value_t = 0.05)]
    pub alpha: f64,
    /// Student config TOML (`[model]`); needed only for bare f32 checkpoints without a model card.
    #[arg(long, value_name = "CFG.toml")]
    pub config: Option<PathBuf>,
    /// Batch size of the shadow-mode stream.
    #[arg(long, default_value_t = 64)]
    pub shadow_batch: usize,
    /// Print the result as one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// The split.
    #[command(flatten)]
    pub split: SplitOptions,
}

fn read_config(path: &Path) -> anyhow::Result<QuantizeFile> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(parse_quantize_file(&text, &path.display().to_string())?)
}

fn load_split(
    name: &str,
    data_dir: Option<PathBuf>,
    seed: u64,
    test_fraction: f64,
    public_fraction: f64,
) -> anyhow::Result<(Dataset, FederatedSplit)> {
    let opts = LoadOptions { data_dir };
    let ds = load(name, &opts).with_context(|| format!("loading dataset {name}"))?;
    let cfg = SplitConfig {
        participants: 1,
        partition: Partition::Iid,
        test_fraction,
        public_fraction,
        seed,
    };
    let fed = split(&ds, &cfg).with_context(|| format!("splitting dataset {name}"))?;
    Ok((ds, fed))
}

/// Quantizes and exports the student to each profile asked for, printing one line per export.
pub fn export(args: &ExportOptions) -> anyhow::Result<()> {
    let profiles: Vec<Profile> = if args.profile == "all" {
        Profile::ALL.to_vec()
    } else {
        vec![args.profile.parse::<Profile>().context("--profile")?]
    };
    let file = read_config(&args.config)?;
    let (ds, fed) = load_split(
        &args.dataset,
        args.split.data_dir.clone(),
        args.split.seed,
        args.split.test_fraction,
        args.split.public_fraction,
    )?;
    let arch = Arch::from_config(&file.model, ds.dim, ds.num_classes).context("student config")?;
    let mut student = Model::load(&file.model, ds.dim, ds.num_classes, &args.model)
        .with_context(|| format!("loading student {}", args.model.display()))?;
    let qat_cfg = file.qat.clone().unwrap_or_default();
    let mut training = serde_json::json!({
        "source_model": args.model.display().to_string(),
        "split": { "seed": args.split.seed, "test_fraction": args.split.test_fraction, "public_fraction": args.split.public_fraction },
        "qat": serde_json::Value::Null,
    });
    if args.qat {
        let train = fed.shards.first().context("split produced no private shard")?;
        let (tuned, stats) = qat_finetune(
            &student,
            &train.features,
            train.n,
            QatTargets::Labels(&train.labels),
            &qat_cfg,
        )
        .context("quantization-aware training")?;
        training["qat"] = serde_json::json!({ "config": qat_cfg, "epoch_loss": stats.epoch_loss, "samples": train.n });
        student = tuned;
    }
    let ptq = file.ptq.unwrap_or_default();
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let dataset = DatasetRef {
        name: ds.name.clone(),
        public_digest: fed.public_digest_hex(),
        test_samples: fed.test.n,
    };
    for profile in &profiles {
        let (q, report) = quantize(&student, *profile, &fed.public.features, fed.public.n, &ptq)
            .with_context(|| format!("quantizing to {profile}"))?;
        let metrics: BTreeMap<String, f64> = match profile {
            Profile::F32 => metric_map(&evaluate(&student, &fed.test, None)?)?,
            _ => metric_map(&evaluate_quantized(&q, &fed.test, None)?)?,
        };
        let info = CardInfo {
            dataset: Some(dataset.clone()),
            training: training.clone(),
            metrics,
            ptq: (*profile != Profile::F32).then_some(report),
        };
        let stem = format!("student-{}", profile.name());
        let (path, card) =
            export_student(&q, &student, &args.out, &stem, &info).with_context(|| format!("exporting {profile}"))?;
        println!(
            "{:<9} {} ({} bytes, accuracy {:.4}, sha256 {})",
            profile.name(),
            path.display(),
            card.file_bytes,
            card.metrics.get("accuracy").copied().unwrap_or(f64::NAN),
            card.file_sha256
        );
        // A sanity check that what was written reads back: the exported file is the artifact.
        fedistill_shared::ml::quant::load_student(&path, &arch).context("reading back the export")?;
    }
    if args.profile == "all" {
        let rows = quantization_table(&student, &fed.test, &fed.public.features, fed.public.n)
            .context("quantization table")?;
        print!("{}", format_table(&rows));
        let path = args.out.join("quantization_table.json");
        let json = serde_json::to_string_pretty(&rows).context("serializing table")?;
        std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
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

/// Compares two exported students and prints the result.
pub fn compare(args: &CompareOptions) -> anyhow::Result<()> {
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
