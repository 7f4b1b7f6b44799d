//! `fedistill quantize`: post-training quantization (optionally after QAT) of a trained MLP student into
//! the int8 / sandwich / f16 / f32 profiles, exported with model cards, plus the quantization table
//! (see docs/quantization.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use fedistill_shared::data::{load, split, Dataset, FederatedSplit, LoadOptions, Partition, SplitConfig};
use fedistill_shared::ml::lifecycle::metric_map;
use fedistill_shared::ml::quant::{
    evaluate_quantized, export_student, format_table, parse_quantize_file, qat_finetune, quantization_table, quantize,
    Arch, CardInfo, DatasetRef, Profile, QatTargets, QuantizeFile,
};
use fedistill_shared::ml::{evaluate, Model};

#[derive(Debug, Args)]
pub struct QuantizeArgs {
    /// The trained f32 student checkpoint (safetensors written by the student's `save`).
    #[arg(long, value_name = "FILE")]
    model: PathBuf,
    /// Student config TOML: `[model]` (an MLP), optional `[qat]` and `[ptq]`; other tables are ignored.
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

pub(crate) fn read_config(path: &Path) -> anyhow::Result<QuantizeFile> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(parse_quantize_file(&text, &path.display().to_string())?)
}

pub(crate) fn load_split(
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

pub fn run(args: QuantizeArgs) -> anyhow::Result<()> {
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
