//! `fedistill bench stages`: the ablation of the distillation stages. Per dataset and seed one teacher is
//! trained (`fedistill local`'s pipeline, [`prepare_local`]); then four students are distilled from it through
//! [`distill_local`] (the same path as `fedistill local`): KD only, + feature alignment (stage 1), + gradient
//! guidance (stage 2), + both. Every configuration makes the same number of passes over the transfer set:
//! the stages take their epochs from the KD stage, so a difference is the stage's and not more training.
//! Writes stages.json, stages.md and a grouped bar chart.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use fedistill_shared::data::{load, DataKind, Dataset, LoadOptions};
use fedistill_shared::ml::local::{default_distill, default_train, distill_local, prepare_local, LocalOptions};
use fedistill_shared::ml::stages::{FeatureAlignment, GradientGuidance, StageReport, StagesConfig};
use fedistill_shared::ml::{ModelConfig, Progress, ProgressMode};

use crate::report::{self, BarChart};

/// Share of the KD epochs each enabled stage takes over (at least one epoch).
const STAGE_SHARE: usize = 6;
/// Datasets with more rows than this (Fashion-MNIST's 70,000) get half the teacher's and the student's
/// default epochs, so the full suite stays within about 25 minutes on 2 cores (a stage-2 epoch costs tens of
/// KD epochs: two teacher and three student forward passes per step, through candle's autograd).
const LARGE_DATASET: usize = 50_000;
/// `--quick`: total student epochs, shifted copies per public image (the teacher keeps its defaults: on
/// digits it trains in a second).
const QUICK_EPOCHS: usize = 12;
const QUICK_COPIES: usize = 1;

/// Options of `fedistill bench stages`; an empty list takes the suite's default.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct StagesOptions {
    /// One small dataset (digits), one seed, few epochs (CI).
    #[arg(long)]
    pub quick: bool,
    /// Seeds (default 1,2,3; with --quick 1).
    #[arg(long, value_delimiter = ',')]
    pub seeds: Vec<u64>,
    /// Catalog datasets (default mnist-10k,fashion-mnist,credit; with --quick digits).
    #[arg(long, value_delimiter = ',')]
    pub datasets: Vec<String>,
    /// Directory of file-based datasets (fashion-mnist; default: the Debian package's directory).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Write stages.json, stages.md and stages-accuracy.png/.svg (accuracy per dataset and configuration).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// The command line recorded in the report (not a flag: the dispatch sets it).
    #[arg(skip)]
    pub command: String,
    /// Convolutional teacher (conv blocks 8, 16; hidden 64) and student (conv block 8; hidden 32), image
    /// datasets only; stage 1 then adds attention transfer to the hint loss.
    #[arg(long, conflicts_with = "federated")]
    pub cnn: bool,
    /// Also run the federated half, the personalized student of each participant (`fedistill bench
    /// personalize` with the same --quick, --seeds, --datasets, --data-dir and --report, its defaults else).
    #[arg(long)]
    pub federated: bool,
}

impl StagesOptions {
    /// The federated half `federated` asks for, run after this suite: `fedistill bench personalize` with this
    /// run's `quick`, `seeds`, `datasets`, `data_dir`, `report` and `command`, its defaults else; `None`
    /// without `federated`.
    pub fn federated_half(&self) -> Option<crate::personalize::PersonalizeOptions> {
        self.federated.then(|| crate::personalize::PersonalizeOptions {
            quick: self.quick,
            seeds: self.seeds.clone(),
            datasets: self.datasets.clone(),
            participants: None,
            partition: None,
            holdout: None,
            rounds: None,
            epochs: None,
            data_dir: self.data_dir.clone(),
            report: self.report.clone(),
            command: self.command.clone(),
        })
    }
}

/// `--cnn`'s teacher: conv blocks of 8 and 16 channels, a 64-wide hidden layer.
pub const CNN_TEACHER: (&[usize], usize) = (&[8, 16], 64);
/// `--cnn`'s student: one conv block of 8 channels, a 32-wide hidden layer (its block and the teacher's
/// first have the same side, so attention transfer has a pair).
pub const CNN_STUDENT: (&[usize], usize) = (&[8], 32);
/// `--cnn`'s attention-transfer weight in stage 1.
pub const CNN_ATTENTION_WEIGHT: f32 = 1.0;

/// One configuration of the ablation (stable names: the report's `configuration` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Configuration {
    /// Temperature KD alone (stage 3).
    KdOnly,
    /// Feature alignment, then KD.
    FeatureAlignment,
    /// Gradient guidance, then KD.
    GradientGuidance,
    /// All three stages.
    Both,
}

impl Configuration {
    /// Every configuration, in report order.
    pub const ALL: [Configuration; 4] = [
        Configuration::KdOnly,
        Configuration::FeatureAlignment,
        Configuration::GradientGuidance,
        Configuration::Both,
    ];

    /// The column heading of the tables and the chart's legend.
    pub fn label(self) -> &'static str {
        match self {
            Configuration::KdOnly => "KD only",
            Configuration::FeatureAlignment => "+ stage 1",
            Configuration::GradientGuidance => "+ stage 2",
            Configuration::Both => "+ stages 1, 2",
        }
    }

    /// The stage schedule and the KD epochs of this configuration within `total` passes, each enabled stage
    /// taking `stage_epochs` of them.
    pub(crate) fn schedule(self, total: usize, stage_epochs: usize) -> (StagesConfig, usize) {
        let (s1, s2) = match self {
            Configuration::KdOnly => (0, 0),
            Configuration::FeatureAlignment => (stage_epochs, 0),
            Configuration::GradientGuidance => (0, stage_epochs),
            Configuration::Both => (stage_epochs, stage_epochs),
        };
        let stages = StagesConfig {
            feature_alignment: FeatureAlignment {
                epochs: s1,
                ..FeatureAlignment::default()
            },
            gradient_guidance: GradientGuidance {
                epochs: s2,
                ..GradientGuidance::default()
            },
        };
        (stages, total.saturating_sub(s1 + s2))
    }

    /// [`Configuration::schedule`], with attention transfer in stage 1 when the models are convolutional.
    fn schedule_for(self, total: usize, stage_epochs: usize, cnn: bool) -> (StagesConfig, usize) {
        let (mut stages, kd) = self.schedule(total, stage_epochs);
        if cnn && stages.feature_alignment.epochs > 0 {
            stages.feature_alignment.attention_weight = CNN_ATTENTION_WEIGHT;
        }
        (stages, kd)
    }
}

/// Mean and sample standard deviation of per-seed values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation (0 with one value).
    pub sd: f64,
    /// The values, in seed order.
    pub values: Vec<f64>,
}

impl Summary {
    /// The mean and sample standard deviation of `values` (kept in the summary).
    pub fn of(values: Vec<f64>) -> Summary {
        let n = values.len().max(1) as f64;
        let mean = values.iter().sum::<f64>() / n;
        let sd = if values.len() > 1 {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (values.len() - 1) as f64).sqrt()
        } else {
            0.0
        };
        Summary { mean, sd, values }
    }

    /// `mean ± sd` in percent (just the mean with one value).
    pub fn pct(&self) -> String {
        if self.values.len() > 1 {
            format!("{:.2} ± {:.2}", self.mean * 100.0, self.sd * 100.0)
        } else {
            format!("{:.2}", self.mean * 100.0)
        }
    }
}

/// One student of one seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudentRun {
    /// Seed of the split, the teacher and the student.
    pub seed: u64,
    /// Test accuracy (0..1).
    pub accuracy: f64,
    /// Seconds of the distillation (all stages).
    pub distill_seconds: f64,
    /// What each stage did (`fedistill local`'s `stages[]`).
    pub stages: Vec<StageReport>,
}

/// One configuration on one dataset, over the seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigurationResult {
    /// Which configuration.
    pub configuration: Configuration,
    /// Its `[stages]` as run.
    pub stages: StagesConfig,
    /// Its `[distill] epochs_per_round` (stage 3).
    pub kd_epochs: usize,
    /// Student test accuracy over the seeds.
    pub accuracy: Summary,
    /// Mean over the seeds of (this accuracy - KD only's accuracy of the same seed), in points.
    pub delta_points: f64,
    /// Mean distillation seconds.
    pub distill_seconds: f64,
    /// One entry per seed.
    pub runs: Vec<StudentRun>,
}

/// One dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetResult {
    /// Catalog name.
    pub dataset: String,
    /// The teacher's epoch limit (early stopping may end it sooner).
    pub teacher_epochs: usize,
    /// Passes over the transfer set of every configuration (stages + KD).
    pub epochs: usize,
    /// Epochs of each enabled stage 1 or 2.
    pub stage_epochs: usize,
    /// Samples in the transfer set (public part plus shifted copies of images).
    pub transfer_samples: usize,
    /// Teacher test accuracy over the seeds.
    pub teacher: Summary,
    /// The four configurations, in `Configuration::ALL` order.
    pub configurations: Vec<ConfigurationResult>,
}

/// One configuration's change against KD only, averaged over the datasets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeanDelta {
    /// Which configuration.
    pub configuration: Configuration,
    /// Mean of the datasets' `delta_points`.
    pub delta_points: f64,
}

/// The report of `fedistill bench stages`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StagesReport {
    /// Command line that produced it.
    pub command: String,
    /// Whether it was the `--quick` subset.
    pub quick: bool,
    /// Seeds run.
    pub seeds: Vec<u64>,
    /// One entry per dataset.
    pub datasets: Vec<DatasetResult>,
    /// Mean over the datasets of each configuration's `delta_points` (KD only is 0).
    pub mean_delta_points: Vec<MeanDelta>,
    /// Seconds of the whole suite.
    pub seconds: f64,
    /// `mlp` (the defaults of `fedistill local`) or `cnn` (`--cnn`).
    #[serde(default)]
    pub architecture: String,
}

impl StagesReport {
    /// The Markdown tables: accuracy per dataset and configuration, then the change against KD only and the
    /// distillation time.
    pub fn to_markdown(&self) -> String {
        let mut headers = vec!["dataset", "epochs (stage)", "teacher"];
        headers.extend(Configuration::ALL.iter().map(|c| c.label()));
        let rows: Vec<Vec<String>> = self
            .datasets
            .iter()
            .map(|d| {
                let mut row = vec![
                    d.dataset.clone(),
                    format!("{} ({})", d.epochs, d.stage_epochs),
                    d.teacher.pct(),
                ];
                row.extend(d.configurations.iter().map(|c| c.accuracy.pct()));
                row
            })
            .collect();
        let mut dh = vec!["dataset"];
        dh.extend(Configuration::ALL.iter().map(|c| c.label()));
        let delta_rows: Vec<Vec<String>> = self
            .datasets
            .iter()
            .map(|d| {
                let mut row = vec![d.dataset.clone()];
                row.extend(
                    d.configurations
                        .iter()
                        .map(|c| format!("{:+.2} pt, {:.1} s", c.delta_points, c.distill_seconds)),
                );
                row
            })
            .collect();
        let mean: Vec<String> = self
            .mean_delta_points
            .iter()
            .map(|m| format!("{} {:+.2} pt", m.configuration.label(), m.delta_points))
            .collect();
        format!(
            "Command: `{}` ({} teacher and student). Student test accuracy (%), mean ± sample standard deviation \
             over seeds {:?}; one teacher per dataset and seed, four students distilled from it. Every configuration makes the same \
             number of passes over the transfer set; each enabled stage takes its epochs from the KD stage.\n\n\
             {}\nChange against KD only (mean over seeds of the per-seed difference, points) and mean \
             distillation seconds:\n\n{}\nMean change over the datasets: {}.\n\n\
             ![Student accuracy per configuration](stages-accuracy.png)\n",
            self.command,
            self.architecture,
            self.seeds,
            report::markdown_table(&headers, &rows),
            report::markdown_table(&dh, &delta_rows),
            mean.join(", ")
        )
    }
}

/// The seeds and datasets of a run, after the defaults; duplicates are refused.
fn plan(args: &StagesOptions) -> anyhow::Result<(Vec<u64>, Vec<String>)> {
    let seeds = match (args.seeds.is_empty(), args.quick) {
        (false, _) => args.seeds.clone(),
        (true, true) => vec![1],
        (true, false) => vec![1, 2, 3],
    };
    let datasets = match (args.datasets.is_empty(), args.quick) {
        (false, _) => args.datasets.clone(),
        (true, true) => vec!["digits".to_string()],
        (true, false) => ["mnist-10k", "fashion-mnist", "credit"].map(String::from).to_vec(),
    };
    for (i, s) in seeds.iter().enumerate() {
        if seeds[..i].contains(s) {
            bail!("--seeds: seed {s} is given twice");
        }
    }
    for (i, d) in datasets.iter().enumerate() {
        if datasets[..i].contains(d) {
            bail!("--datasets: {d} is given twice");
        }
    }
    Ok((seeds, datasets))
}

/// The local pipeline's options for one dataset and seed (large datasets get half the epochs; the `--quick`
/// subset shrinks the student's epochs and the image copies), and the total student epochs.
fn local_options(ds: &Dataset, seed: u64, quick: bool, cnn: bool) -> anyhow::Result<(LocalOptions, usize)> {
    let mut opts = LocalOptions::defaults_for(ds, seed);
    if cnn {
        if !matches!(ds.kind, DataKind::Image { .. }) {
            bail!("--cnn: {} is not an image dataset", ds.name);
        }
        let conv = |(channels, hidden): (&[usize], usize)| ModelConfig::Cnn {
            channels: channels.to_vec(),
            hidden,
        };
        opts.teacher.model = conv(CNN_TEACHER);
        opts.student.model = conv(CNN_STUDENT);
    }
    let mut distill = default_distill(&ds.kind, seed);
    if ds.n > LARGE_DATASET && !quick {
        let mut train = default_train(&ds.kind, seed);
        train.epochs /= 2;
        opts.teacher.train = Some(train);
        distill.epochs_per_round /= 2;
    }
    if quick {
        distill.epochs_per_round = QUICK_EPOCHS;
        if matches!(ds.kind, DataKind::Image { .. }) {
            opts.augment_copies = QUICK_COPIES;
        }
    }
    let total = distill.epochs_per_round;
    opts.student.distill = Some(distill);
    Ok((opts, total))
}

/// `fedistill bench stages`.
pub fn run(args: &StagesOptions) -> anyhow::Result<()> {
    if cfg!(debug_assertions) && !args.quick {
        eprintln!("warning: debug build; use --release for the full suite");
    }
    let started = Instant::now();
    let (seeds, names) = plan(args)?;
    let mut loaded = Vec::new();
    for name in &names {
        let ds = load(
            name,
            &LoadOptions {
                data_dir: args.data_dir.clone(),
            },
        )
        .with_context(|| format!("loading dataset {name}"))?;
        if args.cnn && !matches!(ds.kind, DataKind::Image { .. }) {
            bail!("--cnn: {name} is not an image dataset (convolutional models need images)");
        }
        loaded.push(ds);
    }
    let grid = Progress::auto();
    let total_runs = names.len() * seeds.len() * Configuration::ALL.len();
    grid.start("stages", total_runs as u64);
    let inner = grid.child();
    let mut done = 0usize;
    let mut datasets = Vec::new();
    for ds in &loaded {
        let mut teacher_acc = Vec::new();
        let mut runs: Vec<Vec<StudentRun>> = vec![Vec::new(); Configuration::ALL.len()];
        let mut epochs = (0, 0, 0, 0);
        for &seed in &seeds {
            let (opts, total) = local_options(ds, seed, args.quick, args.cnn)?;
            let stage_epochs = (total / STAGE_SHARE).max(1);
            let prepared =
                prepare_local(ds, &opts, &inner).with_context(|| format!("{} seed {seed}: teacher", ds.name))?;
            let teacher_epochs = opts
                .teacher
                .train
                .as_ref()
                .map_or_else(|| default_train(&ds.kind, seed).epochs, |t| t.epochs);
            epochs = (teacher_epochs, total, stage_epochs, prepared.transfer_n);
            for (k, config) in Configuration::ALL.iter().enumerate() {
                let (stages, kd_epochs) = config.schedule_for(total, stage_epochs, args.cnn);
                let mut o = opts.clone();
                o.student.stages = Some(stages);
                if let Some(d) = o.student.distill.as_mut() {
                    d.epochs_per_round = kd_epochs;
                }
                let (rep, _) = distill_local(ds, &prepared, &o, &inner)
                    .with_context(|| format!("{} seed {seed}: {}", ds.name, config.label()))?;
                if k == 0 {
                    teacher_acc.push(rep.teacher.metrics.accuracy);
                }
                runs[k].push(StudentRun {
                    seed,
                    accuracy: rep.student.metrics.accuracy,
                    distill_seconds: rep.distill_seconds,
                    stages: rep.stages,
                });
                done += 1;
                let line = format!(
                    "{} seed {seed} {}: {:.2}% ({:.1} s)",
                    ds.name,
                    config.label(),
                    rep.student.metrics.accuracy * 100.0,
                    rep.distill_seconds
                );
                grid.advance("stages", done as u64, total_runs as u64, &line);
                if grid.mode() == ProgressMode::Bar {
                    grid.println(&line);
                }
            }
        }
        let (teacher_epochs, total, stage_epochs, transfer_samples) = epochs;
        let kd: Vec<f64> = runs[0].iter().map(|r| r.accuracy).collect();
        let configurations = Configuration::ALL
            .iter()
            .zip(runs)
            .map(|(&configuration, runs)| {
                let (stages, kd_epochs) = configuration.schedule_for(total, stage_epochs, args.cnn);
                let acc: Vec<f64> = runs.iter().map(|r| r.accuracy).collect();
                let delta = acc.iter().zip(&kd).map(|(a, b)| (a - b) * 100.0).sum::<f64>() / acc.len().max(1) as f64;
                let secs = runs.iter().map(|r| r.distill_seconds).sum::<f64>() / runs.len().max(1) as f64;
                ConfigurationResult {
                    configuration,
                    stages,
                    kd_epochs,
                    accuracy: Summary::of(acc),
                    delta_points: delta,
                    distill_seconds: secs,
                    runs,
                }
            })
            .collect();
        datasets.push(DatasetResult {
            dataset: ds.name.clone(),
            teacher_epochs,
            epochs: total,
            stage_epochs,
            transfer_samples,
            teacher: Summary::of(teacher_acc),
            configurations,
        });
    }
    grid.finish("stages", "done");
    let mean_delta_points = Configuration::ALL
        .iter()
        .enumerate()
        .map(|(k, &c)| {
            let d: Vec<f64> = datasets.iter().map(|d| d.configurations[k].delta_points).collect();
            MeanDelta {
                configuration: c,
                delta_points: d.iter().sum::<f64>() / d.len().max(1) as f64,
            }
        })
        .collect();
    let rep = StagesReport {
        command: args.command.clone(),
        quick: args.quick,
        seeds,
        datasets,
        mean_delta_points,
        seconds: started.elapsed().as_secs_f64(),
        architecture: if args.cnn { "cnn" } else { "mlp" }.to_string(),
    };
    let md = rep.to_markdown();
    grid.suspend(|| println!("{md}"));
    if let Some(dir) = &args.report {
        report::write_report(dir, "stages", &rep, &md)?;
        let categories: Vec<String> = rep.datasets.iter().map(|d| d.dataset.clone()).collect();
        let mut groups = vec![(
            "teacher".to_string(),
            rep.datasets.iter().map(|d| d.teacher.mean * 100.0).collect(),
        )];
        for (k, c) in Configuration::ALL.iter().enumerate() {
            groups.push((
                c.label().to_string(),
                rep.datasets
                    .iter()
                    .map(|d| d.configurations[k].accuracy.mean * 100.0)
                    .collect(),
            ));
        }
        let title = format!(
            "Student accuracy by distillation stages{}",
            if rep.quick { " (--quick)" } else { "" }
        );
        report::write_bar_chart(
            dir,
            "stages-accuracy",
            &BarChart {
                title: &title,
                y_label: "test accuracy (%)",
                categories: &categories,
                groups: &groups,
            },
        )
        .context("plotting the stages ablation")?;
        eprintln!("report written to {}", dir.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_configuration_makes_the_same_passes() {
        for c in Configuration::ALL {
            let (s, kd) = c.schedule(30, 5);
            assert_eq!(
                s.feature_alignment.epochs + s.gradient_guidance.epochs + kd,
                30,
                "{c:?}"
            );
        }
        let (s, kd) = Configuration::Both.schedule(30, 5);
        assert_eq!((s.feature_alignment.epochs, s.gradient_guidance.epochs, kd), (5, 5, 20));
    }

    #[test]
    fn cnn_schedules_add_attention_transfer_to_stage_one_only() {
        for c in Configuration::ALL {
            let (plain, _) = c.schedule_for(30, 5, false);
            let (conv, _) = c.schedule_for(30, 5, true);
            assert_eq!(plain.feature_alignment.attention_weight, 0.0, "{c:?}");
            let want = if conv.feature_alignment.epochs > 0 {
                CNN_ATTENTION_WEIGHT
            } else {
                0.0
            };
            assert_eq!(conv.feature_alignment.attention_weight, want, "{c:?}");
        }
    }

    #[test]
    fn duplicate_seeds_and_datasets_are_refused() {
        let opts = |seeds: Vec<u64>, datasets: Vec<&str>| StagesOptions {
            seeds,
            datasets: datasets.into_iter().map(String::from).collect(),
            ..StagesOptions::default()
        };
        let e = plan(&opts(vec![1, 2, 1], vec![])).expect_err("duplicate seed");
        assert!(e.to_string().contains("seed 1 is given twice"), "{e}");
        let e = plan(&opts(vec![], vec!["credit", "credit"])).expect_err("duplicate dataset");
        assert!(e.to_string().contains("credit is given twice"), "{e}");
        let (seeds, names) = plan(&opts(vec![], vec![])).expect("defaults");
        assert_eq!(seeds, [1, 2, 3]);
        assert_eq!(names, ["mnist-10k", "fashion-mnist", "credit"]);
    }

    #[test]
    fn summary_is_mean_and_sample_sd() {
        let s = Summary::of(vec![0.5, 0.7, 0.9]);
        assert!((s.mean - 0.7).abs() < 1e-12 && (s.sd - 0.2).abs() < 1e-12);
        assert_eq!(Summary::of(vec![0.8]).sd, 0.0);
        assert_eq!(Summary::of(vec![0.8]).pct(), "80.00");
    }
}
