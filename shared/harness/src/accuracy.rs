// Over 800 lines: the flags shared with `bench communication` (clap attributes included), the helpers the communication, personalize and tune suites share, the grid and its report read best in one file.
//! `fedistill bench accuracy`: federated distillation (each aggregation rule) against local-only,
//! centralized and FedAvg on the same student, over datasets, partitions, federation sizes and seeds; writes
//! JSON, Markdown and plots (docs/benchmarks.md explains every figure and gives the commands). The helpers
//! both this suite and [`crate::communication`] use live here.

use std::path::PathBuf;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use fedistill_shared::data::{load, Dataset, LoadOptions, Partition};
use fedistill_shared::ml::{ModelConfig, Progress, ProgressMode};
use fedistill_shared::protocol::AggregationRule;

use crate::exchange::{Link, WireExchange};
use crate::experiment::{self, ExperimentConfig, ExperimentRun};
use crate::report::{self, Chart, Series};

/// Options shared by both suites (the flags of `fedistill bench accuracy|communication`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CommonOptions {
    /// Small configuration for CI (one small dataset, one seed, few rounds).
    #[arg(long)]
    pub quick: bool,
    /// Write JSON, Markdown and plots to this directory.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Replace this suite's generated section of a Markdown file (e.g. docs/benchmarks.md).
    #[arg(long)]
    pub docs: Option<PathBuf>,
    /// Directory of file-based datasets (fashion-mnist; default: the Debian package's directory).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Count frame bytes only instead of carrying every message over real mTLS QUIC connections.
    #[arg(long)]
    pub no_link: bool,
    /// Distillation rounds (default: 10; quick: 3).
    #[arg(long)]
    pub rounds: Option<usize>,
    /// FedAvg rounds (default: 30; quick: 5).
    #[arg(long)]
    pub fedavg_rounds: Option<usize>,
    /// Share of each dataset in the public transfer set.
    #[arg(long)]
    pub public_fraction: Option<f64>,
    /// Teacher refresh epochs per round (co-distillation; 0 = off).
    #[arg(long)]
    pub refresh_epochs: Option<usize>,
    /// Public rows per round (default: public / rounds, one pass); rounds walk the public set in epochs.
    #[arg(long)]
    pub samples_per_round: Option<usize>,
    /// The task card's public-set augmentation for image datasets, e.g. `shift=2,flip` (see docs/data.md).
    #[arg(long)]
    pub augment: Option<String>,
    /// Teacher architecture, `mlp:512,256`, `cnn:16,32:128` (channels, then the hidden width) or, for
    /// series, `cnn1d:16,32:64[:KERNEL[:IN_CHANNELS]]` (kernel 5, one input channel by default).
    #[arg(long)]
    pub teacher: Option<String>,
    /// Student architecture (FD and FedAvg), `mlp:128`, `cnn:8,16:64` or `cnn1d:8,16:32`.
    #[arg(long)]
    pub student: Option<String>,
    /// Share of each participant's private rows whose labels are dropped (image datasets): they reach the
    /// node as `[private] unlabeled` rows.
    #[arg(long)]
    pub unlabeled_fraction: Option<f64>,
    /// Semi-supervised refresh: pseudo-label unlabelled rows the student predicts with at least this
    /// confidence (`[refresh] pseudo_threshold`).
    #[arg(long)]
    pub pseudo_threshold: Option<f32>,
    /// End the distillation rounds once the student's accuracy has not improved by 0.1 point for N rounds
    /// (the coordinator's `[stop]` rule); --rounds stays the most that run.
    #[arg(long)]
    pub stop_patience: Option<u64>,
    /// The command line recorded in the report (`fedistill bench ...`; not a flag: the dispatch sets it).
    #[arg(skip)]
    pub command: String,
}

/// Options of `fedistill bench accuracy`; an empty list takes the suite's default.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AccuracyOptions {
    /// Flags shared with the communication suite.
    #[command(flatten)]
    pub common: CommonOptions,
    /// Datasets (default: fashion-mnist, mnist-10k, credit, lending-club, breast-cancer).
    #[arg(long, value_delimiter = ',')]
    pub datasets: Vec<String>,
    /// Partitions: `iid` or a Dirichlet alpha (default: iid,0.1,0.5,1.0).
    #[arg(long, value_delimiter = ',')]
    pub partitions: Vec<String>,
    /// Federation sizes K (default: 3,10).
    #[arg(long, value_delimiter = ',')]
    pub participants: Vec<usize>,
    /// Seeds (default: 1,2,3).
    #[arg(long, value_delimiter = ',')]
    pub seeds: Vec<u64>,
    /// Aggregation rules (default: all six).
    #[arg(long, value_delimiter = ',')]
    pub rules: Vec<String>,
    /// Skip FedAvg.
    #[arg(long)]
    pub no_fedavg: bool,
    /// Also distill the student from the centralized model (method `kd:centralized`: every teacher replaced
    /// by it, no refresh, the same rounds and public rows): the ceiling of distillation on this public set
    #[arg(long)]
    pub ceiling: bool,
    /// Soft-label encoding of both directions (`f32`, `f16`, `int8`, `topk:K`, ...; default f16).
    #[arg(long)]
    pub encoding: Option<String>,
    /// Name of the generated section `--docs` replaces (`<!-- bench-NAME:begin -->`), so runs over
    /// different datasets can keep separate tables.
    #[arg(long, default_value = "accuracy")]
    pub section: String,
}

pub(crate) fn parse_partition(s: &str) -> anyhow::Result<Partition> {
    if s == "iid" {
        return Ok(Partition::Iid);
    }
    let alpha: f64 = s
        .strip_prefix("dirichlet:")
        .unwrap_or(s)
        .parse()
        .with_context(|| format!("partition {s:?}: expected `iid` or a Dirichlet alpha such as 0.5"))?;
    anyhow::ensure!(alpha.is_finite() && alpha > 0.0, "partition {s:?}: alpha must be > 0");
    Ok(Partition::Dirichlet { alpha })
}

pub(crate) fn partition_name(p: &Partition) -> String {
    match p {
        Partition::Iid => "iid".into(),
        Partition::Dirichlet { alpha } => format!("dir({alpha})"),
        other => other.to_string(),
    }
}

pub(crate) fn load_dataset(name: &str, common: &CommonOptions) -> anyhow::Result<Dataset> {
    load(
        name,
        &LoadOptions {
            data_dir: common.data_dir.clone(),
        },
    )
    .with_context(|| format!("loading dataset {name}"))
}

/// The configuration of one experiment for these flags.
pub(crate) fn config_for(
    ds: &Dataset,
    k: usize,
    partition: Partition,
    seed: u64,
    common: &CommonOptions,
) -> anyhow::Result<ExperimentConfig> {
    let mut c = ExperimentConfig::defaults(ds, k, partition, seed);
    if ds.name == "fashion-mnist" {
        // 70 000 samples: 10 000 test (as the official split), 14 000 public, 46 000 private.
        c.test_fraction = 1.0 / 7.0;
    }
    if common.quick {
        c.rounds = 3;
        c.fedavg_rounds = 5;
    }
    if let Some(r) = common.rounds {
        c.rounds = r;
    }
    if let Some(r) = common.fedavg_rounds {
        c.fedavg_rounds = r;
    }
    if let Some(f) = common.public_fraction {
        c.public_fraction = f;
    }
    if let Some(e) = common.refresh_epochs {
        c.refresh.epochs = e;
    }
    c.samples_per_round = common.samples_per_round.or(c.samples_per_round);
    apply_checked(&mut c, ds, common)?;
    Ok(c)
}

/// Applies the flags that can be wrong (`--augment`, `--teacher`, `--student`, `--samples-per-round`) to
/// `c`, with an error naming the flag.
fn apply_checked(c: &mut ExperimentConfig, ds: &Dataset, common: &CommonOptions) -> anyhow::Result<()> {
    if let Some(0) = common.samples_per_round {
        anyhow::bail!("--samples-per-round must be at least 1");
    }
    if let Some(a) = &common.augment {
        let aug = parse_augment(a).context("--augment")?;
        let checked = match ds.kind {
            fedistill_shared::data::DataKind::Image { height, width } => {
                aug.check(fedistill_shared::data::ImageShape {
                    height,
                    width,
                    channels: 1,
                })
            }
            fedistill_shared::data::DataKind::Sequence { channels, length } => {
                aug.check_sequence(&fedistill_shared::data::SequenceShape {
                    channels,
                    length,
                    normalize: fedistill_shared::data::SeriesNorm::None,
                    mean: Vec::new(),
                    std: Vec::new(),
                    windows: None,
                })
            }
            fedistill_shared::data::DataKind::Tabular => {
                anyhow::bail!(
                    "--augment applies to image and sequence datasets; {} is tabular",
                    ds.name
                )
            }
        };
        checked.map_err(|(_, problem)| anyhow::anyhow!("--augment {a}: {problem}"))?;
        c.augment = Some(aug);
    }
    if let Some(t) = &common.teacher {
        c.teacher = parse_model(t).context("--teacher")?;
        c.teacher.validate(ds.dim, ds.num_classes).context("--teacher")?;
    }
    if let Some(f) = common.unlabeled_fraction {
        anyhow::ensure!((0.0..1.0).contains(&f), "--unlabeled-fraction {f} must be in [0, 1)");

        c.unlabeled_fraction = f;
    }
    if let Some(p) = common.stop_patience {
        let rule = fedistill_shared::protocol::coordinator::stop::StopRule {
            patience: p,
            min_delta: 0.001,
            min_rounds: 1,
        };
        rule.validate().map_err(|e| anyhow::anyhow!("--stop-patience: {e}"))?;
        c.stop = Some(rule);
    }
    if let Some(t) = common.pseudo_threshold {
        c.refresh.pseudo_threshold = Some(t);
        c.refresh.validate().context("--pseudo-threshold")?;
        anyhow::ensure!(
            c.unlabeled_fraction > 0.0 && c.refresh.epochs > 0,
            "--pseudo-threshold labels unlabelled rows for the teacher refresh: it needs --unlabeled-fraction > 0 \
             and the refresh on (--refresh-epochs > 0)"
        );
    }
    if let Some(t) = &common.student {
        c.student = parse_model(t).context("--student")?;
        c.student.validate(ds.dim, ds.num_classes).context("--student")?;
    }
    Ok(())
}

/// Images: `shift=N` and/or `flip`; sequences: any of `jitter=S`, `scaling=S`, `magnitude-warp=S`,
/// `time-warp=S`, `slice=F`; comma-separated (the card's `[augment]` fields).
pub fn parse_augment(s: &str) -> anyhow::Result<fedistill_shared::data::Augment> {
    let mut a = fedistill_shared::data::Augment::default();
    for part in s.split(',').map(str::trim) {
        let number = |v: &str| -> anyhow::Result<f64> {
            v.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .with_context(|| format!("{part:?}: {v:?} is not a number"))
        };
        match part.split_once('=') {
            None if part == "flip" => a.flip = true,
            Some(("shift", v)) => {
                a.shift = v
                    .parse()
                    .with_context(|| format!("{part:?}: the shift is a whole number of pixels"))?
            }
            Some(("jitter", v)) => a.jitter = number(v)?,
            Some(("scaling", v)) => a.scaling = number(v)?,
            Some(("magnitude-warp", v)) => a.magnitude_warp = number(v)?,
            Some(("time-warp", v)) => a.time_warp = number(v)?,
            Some(("slice", v)) => a.slice = number(v)?,
            _ => anyhow::bail!(
                "{part:?}: expected `shift=N` or `flip` (images, e.g. `shift=2,flip`), or `jitter=S`, `scaling=S`, \
                 `magnitude-warp=S`, `time-warp=S`, `slice=F` (sequences, e.g. `jitter=0.03,time-warp=0.2`)"
            ),
        }
    }
    anyhow::ensure!(
        a.has_image_fields() || a.has_sequence_fields(),
        "{s:?} augments nothing"
    );
    Ok(a)
}

/// `mlp:W,W,...` (hidden widths; `mlp:` alone is logistic regression), `cnn:C,C,...:H`, or
/// `cnn1d:C,C,...:H[:KERNEL[:IN_CHANNELS]]` (a 1-D CNN; kernel 5 and one input channel when left out).
pub fn parse_model(s: &str) -> anyhow::Result<fedistill_shared::ml::ModelConfig> {
    let widths = |t: &str| -> anyhow::Result<Vec<usize>> {
        t.split(',')
            .filter(|w| !w.trim().is_empty())
            .map(|w| {
                w.trim()
                    .parse::<usize>()
                    .with_context(|| format!("{w:?} in {s:?} is not a width"))
            })
            .collect()
    };
    match s.split_once(':') {
        Some(("mlp", rest)) => Ok(ModelConfig::Mlp { hidden: widths(rest)? }),
        Some(("cnn", rest)) => {
            let (channels, hidden) = rest
                .rsplit_once(':')
                .with_context(|| format!("{s:?}: a cnn is `cnn:CHANNELS:HIDDEN`, e.g. `cnn:16,32:128`"))?;
            let hidden = hidden
                .trim()
                .parse()
                .with_context(|| format!("{s:?}: the hidden width {hidden:?} is not a number"))?;
            Ok(ModelConfig::Cnn {
                channels: widths(channels)?,
                hidden,
            })
        }
        Some(("cnn1d", rest)) => {
            const USAGE: &str = "a cnn1d is `cnn1d:CHANNELS:HIDDEN[:KERNEL[:IN_CHANNELS]]`, e.g. `cnn1d:16,32:64` \
                                 or `cnn1d:16:64:7:3`";
            let number = |what: &str, v: &str| -> anyhow::Result<usize> {
                v.trim()
                    .parse()
                    .with_context(|| format!("{s:?}: the {what} {v:?} is not a number ({USAGE})"))
            };
            let parts: Vec<&str> = rest.split(':').collect();
            let (channels, hidden, kernel, in_channels) = match parts[..] {
                [c, h] => (c, h, None, None),
                [c, h, k] => (c, h, Some(k), None),
                [c, h, k, i] => (c, h, Some(k), Some(i)),
                _ => anyhow::bail!("{s:?}: {USAGE}"),
            };
            Ok(ModelConfig::Cnn1d {
                in_channels: match in_channels {
                    Some(i) => number("input channel count", i)?,
                    None => fedistill_shared::ml::model::CNN1D_DEFAULT_IN_CHANNELS,
                },
                channels: widths(channels)?,
                hidden: number("hidden width", hidden)?,
                kernel: match kernel {
                    Some(k) => number("kernel", k)?,
                    None => fedistill_shared::ml::model::CNN1D_DEFAULT_KERNEL,
                },
            })
        }
        _ => anyhow::bail!(
            "{s:?}: expected `mlp:512,256`, `cnn:16,32:128` or `cnn1d:16,32:64[:KERNEL[:IN_CHANNELS]]` (e.g. \
             `cnn1d:16:64:7:3`)"
        ),
    }
}

pub(crate) fn exchange_for(k: usize, common: &CommonOptions) -> anyhow::Result<WireExchange> {
    let link = if common.no_link {
        None
    } else {
        Some(Link::start(k).context("starting the mTLS link")?)
    };
    WireExchange::new(k, link)
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64
    } else {
        0.0
    };
    (m, var.sqrt())
}

fn pct(m: f64, sd: f64, n: usize) -> String {
    if n > 1 {
        format!("{:.1} ± {:.1}", m * 100.0, sd * 100.0)
    } else {
        format!("{:.1}", m * 100.0)
    }
}

pub(crate) fn human_bytes(b: f64) -> String {
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.2} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{b:.0} B")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Setting {
    /// Dataset.
    pub dataset: String,
    /// Partition label (`iid`, `dir(0.5)`).
    pub partition: String,
    /// K.
    pub participants: usize,
    /// One run per seed that completed.
    pub runs: Vec<ExperimentRun>,
    /// Seeds that could not run, with the reason (e.g. a shard too small to train on under strong skew).
    #[serde(default)]
    pub failed: Vec<(u64, String)>,
}

impl Setting {
    fn methods(&self) -> Vec<String> {
        self.runs
            .first()
            .map(|r| r.methods.iter().map(|m| m.method.clone()).collect())
            .unwrap_or_default()
    }

    fn method_accuracy(&self, method: &str) -> Vec<f64> {
        self.runs
            .iter()
            .filter_map(|r| r.methods.iter().find(|m| m.method == method).map(|m| m.accuracy))
            .collect()
    }

    fn method_bytes(&self, method: &str) -> f64 {
        let b: Vec<f64> = self
            .runs
            .iter()
            .filter_map(|r| r.methods.iter().find(|m| m.method == method).map(|m| m.bytes as f64))
            .collect();
        mean_sd(&b).0
    }

    fn stem(&self) -> String {
        format!("{}-{}-k{}", self.dataset, self.partition, self.participants)
            .replace(['(', ')'], "")
            .replace('.', "_")
    }

    /// Mean accuracy per round of each method over seeds, as chart series (x = round).
    fn round_series(&self) -> Vec<Series> {
        let mut out = Vec::new();
        for m in self.methods() {
            let curves: Vec<&Vec<experiment::CurvePoint>> = self
                .runs
                .iter()
                .filter_map(|r| r.methods.iter().find(|x| x.method == m).map(|x| &x.curve))
                .collect();
            let len = curves.iter().map(|c| c.len()).min().unwrap_or(0);
            let points = (0..len)
                .map(|i| {
                    let acc = curves.iter().map(|c| c[i].accuracy).sum::<f64>() / curves.len() as f64;
                    ((i + 1) as f64, acc * 100.0)
                })
                .collect();
            out.push(Series { name: m, points });
        }
        out
    }

    /// Mean accuracy vs cumulative bytes of each method (x = bytes, log scale).
    fn bytes_series(&self) -> Vec<Series> {
        let mut out = Vec::new();
        for m in self.methods() {
            let curves: Vec<&Vec<experiment::CurvePoint>> = self
                .runs
                .iter()
                .filter_map(|r| r.methods.iter().find(|x| x.method == m).map(|x| &x.curve))
                .collect();
            let len = curves.iter().map(|c| c.len()).min().unwrap_or(0);
            let points = (0..len)
                .map(|i| {
                    let n = curves.len() as f64;
                    let acc = curves.iter().map(|c| c[i].accuracy).sum::<f64>() / n;
                    let bytes = curves.iter().map(|c| c[i].bytes as f64).sum::<f64>() / n;
                    (bytes.max(1.0), acc * 100.0)
                })
                .collect();
            out.push(Series { name: m, points });
        }
        out
    }
}

/// The accuracy suite's report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccuracyReport {
    /// Command line that produced it.
    pub command: String,
    /// Whether messages crossed real mTLS QUIC connections (false: frame bytes counted).
    pub mtls_link: bool,
    /// Every setting.
    pub settings: Vec<Setting>,
    /// Seconds of the whole suite.
    pub seconds: f64,
}

impl AccuracyReport {
    /// The Markdown table: one row per setting; accuracy mean ± sample standard deviation over seeds.
    pub fn to_markdown(&self) -> String {
        if self.settings.is_empty() {
            return "No settings were run.\n".into();
        }
        let methods = self
            .settings
            .iter()
            .find(|s| !s.runs.is_empty())
            .map(Setting::methods)
            .unwrap_or_default();
        let mut headers: Vec<String> = vec![
            "dataset".into(),
            "partition".into(),
            "K".into(),
            "seeds".into(),
            "local-only".into(),
            "centralized".into(),
        ];
        headers.extend(methods.iter().cloned());
        headers.push("FD bytes".into());
        headers.push("FedAvg bytes".into());
        let mut rows = Vec::new();
        for s in &self.settings {
            let n = s.runs.len();
            if n == 0 {
                let mut row = vec![
                    s.dataset.clone(),
                    s.partition.clone(),
                    s.participants.to_string(),
                    "0".into(),
                ];
                row.extend(std::iter::repeat_n("failed".to_string(), headers.len() - 4));
                rows.push(row);
                continue;
            }
            let (lm, ls) = mean_sd(&s.runs.iter().map(|r| r.local_only_mean).collect::<Vec<_>>());
            let cents: Vec<f64> = s.runs.iter().filter_map(|r| r.centralized).collect();
            let (cm, cs) = mean_sd(&cents);
            let mut row = vec![
                s.dataset.clone(),
                s.partition.clone(),
                s.participants.to_string(),
                n.to_string(),
                pct(lm, ls, n),
                if cents.is_empty() {
                    "-".into()
                } else {
                    pct(cm, cs, cents.len())
                },
            ];
            for m in &methods {
                let a = s.method_accuracy(m);
                let (am, asd) = mean_sd(&a);
                row.push(if a.is_empty() {
                    "-".into()
                } else {
                    pct(am, asd, a.len())
                });
            }
            let fd = methods.iter().find(|m| m.starts_with("fd:"));
            row.push(fd.map(|m| human_bytes(s.method_bytes(m))).unwrap_or_else(|| "-".into()));
            row.push(if methods.iter().any(|m| m == "fedavg") {
                human_bytes(s.method_bytes("fedavg"))
            } else {
                "-".into()
            });
            rows.push(row);
        }
        let h: Vec<&str> = headers.iter().map(String::as_str).collect();
        let mut md = format!(
            "Command: `{}`. Test accuracy (%) of the federated student, mean ± sample standard deviation over \
             seeds; local-only is the mean of the participants' own teachers; centralized is the teacher \
             architecture on the pooled private data; bytes are the whole run's, {}.\n\n",
            self.command,
            if self.mtls_link {
                "UDP bytes on the participants' mTLS QUIC connections"
            } else {
                "signed frame bytes"
            }
        );
        md.push_str(&report::markdown_table(&h, &rows));
        for s in &self.settings {
            for (seed, why) in &s.failed {
                md.push_str(&format!(
                    "\n- {} {} K={} seed {seed} did not run: {why}",
                    s.dataset, s.partition, s.participants
                ));
            }
        }
        if self.settings.iter().any(|s| !s.failed.is_empty()) {
            md.push('\n');
        }
        md
    }
}

/// One finished run of the grid: `accuracy: DONE/TOTAL LINE` on stderr off a terminal; on a terminal the
/// grid's bar advances and the line is kept above it.
fn run_done(grid: &Progress, done: usize, total: usize, line: &str) {
    grid.advance("accuracy", done as u64, total as u64, line);
    if grid.mode() == ProgressMode::Bar {
        grid.println(&format!("[{done}/{total}] {line}"));
    }
}

/// `fedistill bench accuracy`.
pub fn run(args: &AccuracyOptions) -> anyhow::Result<()> {
    if cfg!(debug_assertions) && !args.common.quick {
        eprintln!("warning: debug build; use --release for the full suite");
    }
    let started = std::time::Instant::now();
    let c = &args.common;
    let datasets = if !args.datasets.is_empty() {
        args.datasets.clone()
    } else if c.quick {
        vec!["digits".into()]
    } else {
        ["fashion-mnist", "mnist-10k", "credit", "lending-club", "breast-cancer"]
            .map(String::from)
            .to_vec()
    };
    let partitions: Vec<Partition> = if !args.partitions.is_empty() {
        args.partitions
            .iter()
            .map(|p| parse_partition(p))
            .collect::<anyhow::Result<_>>()?
    } else if c.quick {
        vec![Partition::Dirichlet { alpha: 0.5 }]
    } else {
        vec![
            Partition::Iid,
            Partition::Dirichlet { alpha: 0.1 },
            Partition::Dirichlet { alpha: 0.5 },
            Partition::Dirichlet { alpha: 1.0 },
        ]
    };
    let ks = if !args.participants.is_empty() {
        args.participants.clone()
    } else if c.quick {
        vec![3]
    } else {
        vec![3, 10]
    };
    let seeds = if !args.seeds.is_empty() {
        args.seeds.clone()
    } else if c.quick {
        vec![1]
    } else {
        vec![1, 2, 3]
    };
    let encoding = args
        .encoding
        .as_deref()
        .map(|e| fedistill_shared::protocol::Encoding::parse(e).with_context(|| format!("--encoding: {e}")))
        .transpose()?;
    let rules: Vec<AggregationRule> = if !args.rules.is_empty() {
        args.rules
            .iter()
            .map(|r| AggregationRule::parse(r).with_context(|| format!("--rules: {r}")))
            .collect::<anyhow::Result<_>>()?
    } else if c.quick {
        vec![AggregationRule::Mean, AggregationRule::Median]
    } else {
        [
            "mean",
            "sample_weighted",
            "confidence_weighted",
            "era",
            "median",
            "trimmed_mean",
        ]
        .iter()
        .map(|r| AggregationRule::parse(r))
        .collect::<Result<_, _>>()?
    };
    anyhow::ensure!(ks.iter().all(|&k| k >= 2), "--participants: every K must be at least 2");
    let total = datasets.len() * partitions.len() * ks.len() * seeds.len();
    let mut settings = Vec::new();
    let mut done = 0;
    // The grid's progress: one step per run (a bar on a terminal, plain lines otherwise); each run's
    // teachers and rounds show below it.
    let grid = Progress::auto();
    grid.start("accuracy", total as u64);
    // The pooled private data depends on the dataset, the seed and the fractions, not on the partition.
    let mut centralized: std::collections::BTreeMap<(String, u64), f64> = std::collections::BTreeMap::new();
    for name in &datasets {
        let ds = load_dataset(name, c)?;
        for partition in &partitions {
            for &k in &ks {
                let mut runs = Vec::new();
                let mut failed = Vec::new();
                for &seed in &seeds {
                    let mut cfg = config_for(&ds, k, *partition, seed, c)?;
                    cfg.rules = rules.clone();
                    cfg.fedavg = !args.no_fedavg;
                    cfg.ceiling = args.ceiling;
                    if let Some(e) = encoding {
                        cfg.encodings = vec![e];
                    }
                    let mut ex = exchange_for(k, c)?;
                    let known = centralized.get(&(name.clone(), seed)).copied();
                    let run = match experiment::run(&ds, &cfg, &mut ex, &grid.child(), known) {
                        Ok(run) => run,
                        Err(e) => {
                            // One impossible setting (a tiny dataset under strong skew) must not throw
                            // away hours of the grid: it is reported in the table and the JSON.
                            done += 1;
                            let why = format!("{e:#}");
                            let line = format!("{name} {} K={k} seed {seed}: FAILED: {why}", partition_name(partition));
                            run_done(&grid, done, total, &line);
                            failed.push((seed, why));
                            continue;
                        }
                    };
                    done += 1;
                    if let Some(a) = run.centralized {
                        centralized.insert((name.clone(), seed), a);
                    }
                    let summary: Vec<String> = run
                        .methods
                        .iter()
                        .map(|m| format!("{} {:.1}%", m.method, m.accuracy * 100.0))
                        .collect();
                    let line = format!(
                        "{name} {} K={k} seed {seed}: local-only {:.1}%, centralized {}, {} ({:.0} s)",
                        partition_name(partition),
                        run.local_only_mean * 100.0,
                        run.centralized
                            .map(|a| format!("{:.1}%", a * 100.0))
                            .unwrap_or_else(|| "-".into()),
                        summary.join(", "),
                        run.seconds
                    );
                    run_done(&grid, done, total, &line);
                    runs.push(run);
                }
                settings.push(Setting {
                    dataset: name.clone(),
                    partition: partition_name(partition),
                    participants: k,
                    runs,
                    failed,
                });
            }
        }
    }
    grid.finish("accuracy", &format!("{done} runs"));
    let rep = AccuracyReport {
        command: c.command.clone(),
        mtls_link: !c.no_link,
        settings,
        seconds: started.elapsed().as_secs_f64(),
    };
    let md = rep.to_markdown();
    print!("{md}");
    if let Some(dir) = &c.report {
        let mut md_full = md.clone();
        for s in rep.settings.iter().filter(|s| !s.runs.is_empty()) {
            let stem = s.stem();
            let title = format!("{} {} K={}", s.dataset, s.partition, s.participants);
            let rs = s.round_series();
            report::write_chart(
                dir,
                &format!("accuracy-per-round-{stem}"),
                &Chart {
                    title: &format!("Student accuracy per round, {title}"),
                    x_label: "round",
                    y_label: "test accuracy (%)",
                    series: &rs,
                    log_x: false,
                },
            )?;
            let bs = s.bytes_series();
            report::write_chart(
                dir,
                &format!("accuracy-vs-bytes-{stem}"),
                &Chart {
                    title: &format!("Student accuracy vs bytes exchanged, {title}"),
                    x_label: "bytes exchanged by the federation (log)",
                    y_label: "test accuracy (%)",
                    series: &bs,
                    log_x: true,
                },
            )?;
            md_full.push_str(&format!(
                "\n![accuracy per round, {title}](accuracy-per-round-{stem}.png)\n![accuracy vs bytes, {title}](accuracy-vs-bytes-{stem}.png)\n"
            ));
        }
        report::write_report(dir, "accuracy", &rep, &md_full)?;
        eprintln!("report written to {}", dir.display());
    }
    if let Some(p) = &c.docs {
        report::replace_docs_section(p, &args.section, &md)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_specs_parse_with_defaults_and_name_the_mistake() {
        let ok = |s: &str| parse_model(s).expect("a valid spec");
        assert_eq!(ok("mlp:512,256"), ModelConfig::Mlp { hidden: vec![512, 256] });
        assert_eq!(
            ok("cnn:16,32:128"),
            ModelConfig::Cnn {
                channels: vec![16, 32],
                hidden: 128
            }
        );
        let cnn1d = |in_channels, channels: &[usize], hidden, kernel| ModelConfig::Cnn1d {
            in_channels,
            channels: channels.to_vec(),
            hidden,
            kernel,
        };
        assert_eq!(ok("cnn1d:16,32:64"), cnn1d(1, &[16, 32], 64, 5));
        assert_eq!(ok("cnn1d:16:64:7"), cnn1d(1, &[16], 64, 7));
        assert_eq!(ok("cnn1d:16:64:7:3"), cnn1d(3, &[16], 64, 7));
        let err = |s: &str| format!("{:#}", parse_model(s).expect_err("an invalid spec"));
        for bad in ["cnn1d:16", "cnn1d:16:64:7:3:1"] {
            let e = err(bad);
            assert!(e.contains("cnn1d:CHANNELS:HIDDEN[:KERNEL[:IN_CHANNELS]]"), "{e}");
        }
        assert!(err("cnn1d:16:64:seven").contains("the kernel \"seven\" is not a number"));
        assert!(err("cnn1d:16:x").contains("hidden width"));
        assert!(err("rnn:4").contains("cnn1d:16,32:64[:KERNEL[:IN_CHANNELS]]"));
    }
}
