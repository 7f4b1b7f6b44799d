// Over 800 lines: the suite (plan, federation through the real learners, personalization, report) and its unit tests read best together.
//! `fedistill bench personalize`: the federated half of the stages ablation (issue 18). Per dataset and seed a
//! federation of K participants is dealt a label-skewed split; every participant reads its files as a node with
//! its own data does (`[private] holdout`: a seeded share of its own rows is its test set), trains its teacher,
//! and the rounds run through the real participant learners (`experiment::run_rounds`, every participant
//! distilling the shared student as a deployed node does). After the last round every participant builds a
//! personalized student through `ModelLearner::personalize_now` under each configuration of the ablation (KD
//! only, + feature alignment, + gradient guidance, + both; each from the same shared student, each making the
//! same passes over the private rows), and its accuracy on the node's own holdout is recorded next to the shared
//! student's and the teacher's on the same rows. Writes personalize.json, personalize.md and a grouped bar chart.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use fedistill_participant::learner::NodeData;
use fedistill_participant::personalize::PersonalizeConfig;
use fedistill_shared::crypto::Digest;
use fedistill_shared::data::{load, Dataset, LoadOptions, Partition};
use fedistill_shared::ml::stages::{StageReport, StagesConfig};
use fedistill_shared::ml::{Model, Progress, ProgressMode};

use crate::accuracy::{config_for, parse_partition, partition_name, CommonOptions};
use crate::exchange::WireExchange;
use crate::experiment::{self, CurvePoint, Distilling, ExperimentConfig, Federation, Method};
use crate::report::{self, BarChart};
use crate::stages::{Configuration, Summary};

/// Share of the personalization passes each enabled stage takes over from KD (at least one pass).
const STAGE_SHARE: usize = 5;
/// Defaults of the full suite.
const PARTICIPANTS: usize = 5;
const ROUNDS: usize = 5;
const ALPHA: f64 = 0.5;
const HOLDOUT: f64 = 0.2;
/// `--quick`: participants, rounds, personalization passes.
const QUICK_PARTICIPANTS: usize = 3;
const QUICK_ROUNDS: usize = 2;
const QUICK_EPOCHS: usize = 5;

/// Options of `fedistill bench personalize`; an empty list or `None` takes the suite's default.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PersonalizeOptions {
    /// One small dataset (digits), one seed, 3 participants, 2 rounds, few epochs (CI).
    #[arg(long)]
    pub quick: bool,
    /// Seeds (default 1,2,3; with --quick 1).
    #[arg(long, value_delimiter = ',')]
    pub seeds: Vec<u64>,
    /// Catalog datasets (default mnist-10k,fashion-mnist,credit; with --quick digits).
    #[arg(long, value_delimiter = ',')]
    pub datasets: Vec<String>,
    /// Participants K (default 5; with --quick 3).
    #[arg(long)]
    pub participants: Option<usize>,
    /// Partition: a Dirichlet alpha or `iid` (default 0.5).
    #[arg(long)]
    pub partition: Option<String>,
    /// Share of each participant's rows held out (seeded) as its own test set (default 0.2).
    #[arg(long)]
    pub holdout: Option<f64>,
    /// Federated distillation rounds before personalizing (default 5; with --quick 2).
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Passes over the private rows of each personalization, stages included (default 10; with --quick 5).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Directory of file-based datasets (fashion-mnist; default: the Debian package's directory).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Write personalize.json, personalize.md and personalize-accuracy.png/.svg (shared vs personalized
    /// accuracy per dataset and configuration).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// The command line recorded in the report (not a flag: the dispatch sets it).
    #[arg(skip)]
    pub command: String,
}

/// One personalized student of one participant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersonalizedRun {
    /// Which configuration.
    pub configuration: Configuration,
    /// Accuracy on the participant's own holdout (0..1).
    pub accuracy: f64,
    /// `accuracy` - the shared student's accuracy on the same rows.
    pub gain: f64,
    /// Accuracy on the split's shared test set (every class, the federation's overall distribution).
    pub global_accuracy: f64,
    /// Seconds of the personalization (all stages, the evaluation and the save).
    pub seconds: f64,
    /// What each stage did (`personalized.json`'s `stages`).
    pub stages: Vec<StageReport>,
}

/// One participant of one seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRun {
    /// Index in the split.
    pub participant: usize,
    /// Private training rows (after the holdout).
    pub train_rows: usize,
    /// Rows of its own holdout (its test set).
    pub holdout_rows: usize,
    /// Training rows per class (the label skew).
    pub class_counts: Vec<usize>,
    /// Its teacher as trained, on its holdout (the local-only baseline).
    pub teacher: f64,
    /// Its teacher after the rounds (refreshed from the consensus when refresh is on), on its holdout: the
    /// teacher the personalization distills from.
    pub teacher_final: f64,
    /// The shared student after the last round, on its holdout (`ModelLearner::student_accuracy`).
    pub shared: f64,
    /// The shared student on the split's shared test set.
    pub shared_global: f64,
    /// One personalized student per configuration, in `Configuration::ALL` order.
    pub personalized: Vec<PersonalizedRun>,
}

/// One seed of one dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedRun {
    /// Seed of the split, the holdouts, the teachers and the students.
    pub seed: u64,
    /// Public transfer rows.
    pub public_rows: usize,
    /// Rows of the split's shared test set (the `global` figures).
    pub test_rows: usize,
    /// The rounds: per round, the mean over participants of the shared student's accuracy on their holdouts,
    /// and the bytes of the real signed messages so far.
    pub curve: Vec<CurvePoint>,
    /// Every participant.
    pub nodes: Vec<NodeRun>,
    /// Seconds of this seed (teachers, rounds, personalizations).
    pub seconds: f64,
}

/// One configuration on one dataset, over the seeds; every value of a seed is a mean over its participants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigurationResult {
    /// Which configuration.
    pub configuration: Configuration,
    /// Its `[personalize.stages]` as run.
    pub stages: StagesConfig,
    /// Its `[personalize] epochs` (stage 3).
    pub kd_epochs: usize,
    /// Personalized accuracy on the participants' own holdouts.
    pub personalized: Summary,
    /// Per seed: `personalized` - the shared student's accuracy on the same rows.
    pub gain: Summary,
    /// Per seed: `personalized` - KD only's personalized accuracy (0 for KD only): what the stages add.
    pub vs_kd_only: Summary,
    /// Personalized accuracy on the split's shared test set.
    pub global: Summary,
    /// Mean seconds of one personalization.
    pub seconds: f64,
}

/// One dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetResult {
    /// Catalog name.
    pub dataset: String,
    /// Teachers as trained, on their own holdouts.
    pub teacher: Summary,
    /// Teachers after the rounds, on their own holdouts.
    pub teacher_final: Summary,
    /// The shared student on the participants' own holdouts.
    pub shared: Summary,
    /// The shared student on the split's shared test set.
    pub shared_global: Summary,
    /// The four configurations, in `Configuration::ALL` order.
    pub configurations: Vec<ConfigurationResult>,
    /// One entry per seed.
    pub runs: Vec<SeedRun>,
}

/// One configuration's gain over the shared student, averaged over the datasets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeanGain {
    /// Which configuration.
    pub configuration: Configuration,
    /// Mean of the datasets' `gain.mean`, in points.
    pub gain_points: f64,
    /// Mean of the datasets' `vs_kd_only.mean`, in points.
    pub vs_kd_only_points: f64,
}

/// The report of `fedistill bench personalize`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersonalizeReport {
    /// Command line that produced it.
    pub command: String,
    /// Whether it was the `--quick` subset.
    pub quick: bool,
    /// Seeds run.
    pub seeds: Vec<u64>,
    /// Participants K.
    pub participants: usize,
    /// Partition label (`dir(0.5)`).
    pub partition: String,
    /// Share of each participant's rows held out as its test set.
    pub holdout: f64,
    /// Distillation rounds before the personalization.
    pub rounds: usize,
    /// Passes over the private rows of every personalization (stages + KD).
    pub epochs: usize,
    /// Passes of each enabled stage 1 or 2.
    pub stage_epochs: usize,
    /// One entry per dataset.
    pub datasets: Vec<DatasetResult>,
    /// Per configuration, the mean over the datasets of its gains.
    pub mean_gain: Vec<MeanGain>,
    /// Seconds of the whole suite.
    pub seconds: f64,
}

/// The suite's settings after the defaults, checked.
#[derive(Debug, Clone, PartialEq)]
struct Plan {
    seeds: Vec<u64>,
    datasets: Vec<String>,
    participants: usize,
    partition: Partition,
    holdout: f64,
    rounds: usize,
    epochs: usize,
    stage_epochs: usize,
}

fn plan(args: &PersonalizeOptions) -> anyhow::Result<Plan> {
    let q = args.quick;
    let seeds = match (args.seeds.is_empty(), q) {
        (false, _) => args.seeds.clone(),
        (true, true) => vec![1],
        (true, false) => vec![1, 2, 3],
    };
    let datasets = match (args.datasets.is_empty(), q) {
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
    let participants = args
        .participants
        .unwrap_or(if q { QUICK_PARTICIPANTS } else { PARTICIPANTS });
    if participants < 2 {
        bail!("--participants {participants}: a federation needs at least 2");
    }
    let partition = match &args.partition {
        Some(p) => parse_partition(p).context("--partition")?,
        None => Partition::Dirichlet { alpha: ALPHA },
    };
    let holdout = args.holdout.unwrap_or(HOLDOUT);
    if !(holdout.is_finite() && holdout > 0.0 && holdout < 1.0) {
        bail!("--holdout {holdout}: the share of each participant's rows held out must be in (0, 1)");
    }
    let rounds = args.rounds.unwrap_or(if q { QUICK_ROUNDS } else { ROUNDS });
    if rounds == 0 {
        bail!("--rounds 0: at least one round is needed before personalizing");
    }
    let epochs = args.epochs.unwrap_or(if q {
        QUICK_EPOCHS
    } else {
        PersonalizeConfig::default().epochs
    });
    // Both stages on must leave KD (stage 3) at least one pass.
    if epochs < 3 {
        bail!("--epochs {epochs}: at least 3 passes, so that every configuration keeps a KD pass");
    }
    Ok(Plan {
        seeds,
        datasets,
        participants,
        partition,
        holdout,
        rounds,
        epochs,
        stage_epochs: (epochs / STAGE_SHARE).max(1),
    })
}

/// The `[personalize]` of `config` within `total` passes, each enabled stage taking `stage_epochs` of them
/// from KD.
pub fn personalize_config(config: Configuration, total: usize, stage_epochs: usize) -> PersonalizeConfig {
    let (stages, epochs) = config.schedule(total, stage_epochs);
    PersonalizeConfig {
        every: 1,
        epochs,
        stages,
    }
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    sum / n.max(1) as f64
}

/// `mean ± sd` in signed points.
fn points(s: &Summary) -> String {
    if s.values.len() > 1 {
        format!("{:+.2} ± {:.2}", s.mean * 100.0, s.sd * 100.0)
    } else {
        format!("{:+.2}", s.mean * 100.0)
    }
}

/// The experiment configuration of one dataset and seed: `bench accuracy`'s defaults for the dataset, one
/// rule, no FedAvg, no centralized baseline.
fn experiment_config(ds: &Dataset, plan: &Plan, seed: u64) -> anyhow::Result<ExperimentConfig> {
    let common = CommonOptions {
        rounds: Some(plan.rounds),
        ..CommonOptions::default()
    };
    let mut cfg = config_for(ds, plan.participants, plan.partition, seed, &common)?;
    cfg.fedavg = false;
    cfg.centralized = false;
    Ok(cfg)
}

/// Accuracy of the student a learner saved at `path` on `test`.
fn saved_accuracy(cfg: &ExperimentConfig, path: &Path, test: &Dataset) -> anyhow::Result<f64> {
    let m = Model::load(&cfg.student, test.dim, test.num_classes, path)
        .with_context(|| format!("loading {}", path.display()))?;
    experiment::accuracy(&m, test)
}

/// One dataset and seed: the federation, its rounds, and every participant's personalized students.
fn run_seed(ds: &Dataset, plan: &Plan, seed: u64, progress: &Progress) -> anyhow::Result<SeedRun> {
    let started = Instant::now();
    let cfg = experiment_config(ds, plan, seed)?;
    let fs = experiment::split_for(ds, &cfg)?;
    let dir = tempfile::tempdir().context("creating a directory for the federation's files")?;
    let files = crate::files::write_split(dir.path(), &fs, None)?;
    let nodes: Vec<NodeData> = (0..cfg.participants)
        .map(|i| crate::files::node_with_holdout(dir.path(), &files, i, plan.holdout, seed))
        .collect::<anyhow::Result<_>>()?;
    // The split's shared test set as a node reads it (for the `global` figures only; no node tests on it).
    let global = crate::files::node_data(dir.path(), &files, 0, seed)
        .context("reading the split's shared test set")?
        .test;
    let first = nodes.first().context("no participants")?;
    let public = Arc::new(first.public.clone());
    let public_digest: Digest = first.public_digest;

    let quiet = Progress::hidden();
    let mut teachers = Vec::with_capacity(nodes.len());
    let mut local_only = Vec::with_capacity(nodes.len());
    progress.start("teachers", nodes.len() as u64);
    for (p, node) in nodes.iter().enumerate() {
        let t = experiment::participant_teacher(&cfg, p, &node.private, &quiet)?;
        local_only.push(experiment::accuracy(&t, &node.test)?);
        progress.advance(
            "teachers",
            p as u64 + 1,
            nodes.len() as u64,
            &format!(
                "participant {p}: {} rows, own holdout {:.1}%",
                node.private.n,
                local_only[p] * 100.0
            ),
        );
        teachers.push(Arc::new(t));
    }
    progress.finish("teachers", "done");
    let federation = Federation {
        public: public.clone(),
        public_digest,
        shards: nodes.iter().map(|n| Arc::new(n.private.clone())).collect(),
        tests: nodes.iter().map(|n| Arc::new(n.test.clone())).collect(),
        teachers,
        local_only: local_only.clone(),
        augment: None,
        unlabeled: Vec::new(),
    };
    let rule = cfg.rules.first().copied().context("no aggregation rule")?;
    let encoding = cfg.encodings.first().copied().context("no soft-label encoding")?;
    let method = Method {
        rule,
        encoding,
        label: "rounds",
        distilling: Distilling::Everyone,
    };
    let mut exchange = WireExchange::new(cfg.participants, None)?;
    let work = tempfile::tempdir().context("creating a directory for the participants' artifacts")?;
    let rounds = experiment::run_rounds(&cfg, &federation, &method, work.path(), &mut exchange, progress)?;

    let total = (rounds.learners.len() * Configuration::ALL.len()) as u64;
    progress.start("personalize", total);
    let mut done = 0u64;
    let mut out = Vec::with_capacity(rounds.learners.len());
    for (p, learner) in rounds.learners.iter().enumerate() {
        let node = &nodes[p];
        let shared = learner.student_accuracy()?;
        let shared_global = saved_accuracy(
            &cfg,
            &work.path().join(format!("p{p}")).join("student.safetensors"),
            &global,
        )?;
        let teacher_final = experiment::accuracy(&rounds.teachers[p], &node.test)?;
        let mut personalized = Vec::with_capacity(Configuration::ALL.len());
        for config in Configuration::ALL {
            let pc = personalize_config(config, plan.epochs, plan.stage_epochs);
            pc.validate()?;
            let pdir = work
                .path()
                .join("personalize")
                .join(format!("{config:?}"))
                .join(format!("p{p}"));
            std::fs::create_dir_all(&pdir).with_context(|| format!("creating {}", pdir.display()))?;
            let t0 = Instant::now();
            let got = learner
                .personalize_now(&pc, cfg.rounds as u64, &pdir)
                .with_context(|| format!("participant {p}: personalizing with {}", config.label()))?;
            let seconds = t0.elapsed().as_secs_f64();
            let global_accuracy = saved_accuracy(&cfg, &pdir.join("personalized-student.safetensors"), &global)?;
            done += 1;
            progress.advance(
                "personalize",
                done,
                total,
                &format!(
                    "participant {p} {}: {:.1}% (shared {:.1}%)",
                    config.label(),
                    got.accuracy * 100.0,
                    shared * 100.0
                ),
            );
            personalized.push(PersonalizedRun {
                configuration: config,
                accuracy: got.accuracy,
                gain: got.accuracy - shared,
                global_accuracy,
                seconds,
                stages: got.stages,
            });
        }
        out.push(NodeRun {
            participant: p,
            train_rows: node.private.n,
            holdout_rows: node.test.n,
            class_counts: node.private.class_counts(),
            teacher: local_only[p],
            teacher_final,
            shared,
            shared_global,
            personalized,
        });
    }
    progress.finish("personalize", "done");
    Ok(SeedRun {
        seed,
        public_rows: public.n,
        test_rows: global.n,
        curve: rounds.curve,
        nodes: out,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// A dataset's figures from its seeds.
fn dataset_result(name: &str, plan: &Plan, runs: Vec<SeedRun>) -> DatasetResult {
    let per_seed =
        |f: &dyn Fn(&NodeRun) -> f64| -> Vec<f64> { runs.iter().map(|r| mean(r.nodes.iter().map(f))).collect() };
    let shared = per_seed(&|n| n.shared);
    let pers = |k: usize| per_seed(&|n| n.personalized.get(k).map_or(f64::NAN, |c| c.accuracy));
    let kd = pers(0);
    let configurations = Configuration::ALL
        .iter()
        .enumerate()
        .map(|(k, &configuration)| {
            let pc = personalize_config(configuration, plan.epochs, plan.stage_epochs);
            let acc = pers(k);
            let gain = acc.iter().zip(&shared).map(|(a, s)| a - s).collect();
            let vs_kd = acc.iter().zip(&kd).map(|(a, b)| a - b).collect();
            let global = per_seed(&|n| n.personalized.get(k).map_or(f64::NAN, |c| c.global_accuracy));
            let seconds = mean(
                runs.iter()
                    .flat_map(|r| r.nodes.iter())
                    .filter_map(|n| n.personalized.get(k).map(|c| c.seconds)),
            );
            ConfigurationResult {
                configuration,
                stages: pc.stages,
                kd_epochs: pc.epochs,
                personalized: Summary::of(acc),
                gain: Summary::of(gain),
                vs_kd_only: Summary::of(vs_kd),
                global: Summary::of(global),
                seconds,
            }
        })
        .collect();
    DatasetResult {
        dataset: name.to_string(),
        teacher: Summary::of(per_seed(&|n| n.teacher)),
        teacher_final: Summary::of(per_seed(&|n| n.teacher_final)),
        shared: Summary::of(shared),
        shared_global: Summary::of(per_seed(&|n| n.shared_global)),
        configurations,
        runs,
    }
}

impl PersonalizeReport {
    /// The Markdown tables: accuracy on the participants' own holdouts, the gains, and the accuracy on the
    /// split's shared test set.
    pub fn to_markdown(&self) -> String {
        let labels = Configuration::ALL.iter().map(|c| c.label());
        let mut h1 = vec!["dataset", "teacher", "shared student"];
        h1.extend(labels.clone());
        let r1: Vec<Vec<String>> = self
            .datasets
            .iter()
            .map(|d| {
                let mut row = vec![
                    d.dataset.clone(),
                    Summary::pct(&d.teacher_final),
                    Summary::pct(&d.shared),
                ];
                row.extend(d.configurations.iter().map(|c| Summary::pct(&c.personalized)));
                row
            })
            .collect();
        let mut h2 = vec!["dataset"];
        h2.extend(labels.clone());
        let r2: Vec<Vec<String>> = self
            .datasets
            .iter()
            .map(|d| {
                let mut row = vec![d.dataset.clone()];
                row.extend(
                    d.configurations
                        .iter()
                        .map(|c| format!("{} pt ({} vs KD only)", points(&c.gain), points(&c.vs_kd_only))),
                );
                row
            })
            .collect();
        let mut h3 = vec!["dataset", "shared student"];
        h3.extend(labels);
        let r3: Vec<Vec<String>> = self
            .datasets
            .iter()
            .map(|d| {
                let mut row = vec![d.dataset.clone(), Summary::pct(&d.shared_global)];
                row.extend(d.configurations.iter().map(|c| Summary::pct(&c.global)));
                row
            })
            .collect();
        let mean: Vec<String> = self
            .mean_gain
            .iter()
            .map(|m| {
                format!(
                    "{} {:+.2} pt ({:+.2} vs KD only)",
                    m.configuration.label(),
                    m.gain_points,
                    m.vs_kd_only_points
                )
            })
            .collect();
        format!(
            "Command: `{}`. {} participants, partition {}, each holding out {:.0}% of its own rows as its test \
             set; {} rounds of federated distillation through the participants' learners, then per participant \
             one personalized student per configuration, each from the same shared student, {} passes over the \
             private rows (each enabled stage takes {} of them from KD). Accuracy (%) on the participants' own \
             holdouts: per seed the mean over participants, then mean ± sample standard deviation over seeds \
             {:?}. \"teacher\" is the node's teacher after the rounds (the one the personalization distills \
             from).\n\n{}\nGain over the shared student on the same rows (points), and in brackets over KD \
             only:\n\n{}\nMean over the datasets: {}.\n\nThe same students on the split's shared test set (every \
             class; what personalization costs outside the node's own distribution):\n\n{}\n\
             ![Shared and personalized students per configuration](personalize-accuracy.png)\n",
            self.command,
            self.participants,
            self.partition,
            self.holdout * 100.0,
            self.rounds,
            self.epochs,
            self.stage_epochs,
            self.seeds,
            report::markdown_table(&h1, &r1),
            report::markdown_table(&h2, &r2),
            mean.join(", "),
            report::markdown_table(&h3, &r3),
        )
    }
}

/// `fedistill bench personalize`.
pub fn run(args: &PersonalizeOptions) -> anyhow::Result<()> {
    if cfg!(debug_assertions) && !args.quick {
        eprintln!("warning: debug build; use --release for the full suite");
    }
    let started = Instant::now();
    let plan = plan(args)?;
    let mut loaded = Vec::new();
    for name in &plan.datasets {
        let ds = load(
            name,
            &LoadOptions {
                data_dir: args.data_dir.clone(),
            },
        )
        .with_context(|| format!("loading dataset {name}"))?;
        loaded.push(ds);
    }
    let grid = Progress::auto();
    let total = (plan.datasets.len() * plan.seeds.len()) as u64;
    grid.start("personalize", total);
    let inner = grid.child();
    let mut datasets = Vec::new();
    let mut done = 0u64;
    for ds in &loaded {
        let mut runs = Vec::new();
        for &seed in &plan.seeds {
            let run = run_seed(ds, &plan, seed, &inner).with_context(|| format!("{} seed {seed}", ds.name))?;
            done += 1;
            let gains: Vec<String> = (0..Configuration::ALL.len())
                .map(|k| {
                    let g = mean(run.nodes.iter().filter_map(|n| n.personalized.get(k).map(|c| c.gain)));
                    format!("{} {:+.1}", Configuration::ALL[k].label(), g * 100.0)
                })
                .collect();
            let line = format!(
                "{} seed {seed}: shared {:.1}%, gain (pt) {} ({:.0} s)",
                ds.name,
                mean(run.nodes.iter().map(|n| n.shared)) * 100.0,
                gains.join(", "),
                run.seconds
            );
            grid.advance("personalize", done, total, &line);
            if grid.mode() == ProgressMode::Bar {
                grid.println(&line);
            }
            runs.push(run);
        }
        datasets.push(dataset_result(&ds.name, &plan, runs));
    }
    grid.finish("personalize", "done");
    let mean_gain = Configuration::ALL
        .iter()
        .enumerate()
        .map(|(k, &configuration)| MeanGain {
            configuration,
            gain_points: mean(datasets.iter().map(|d| d.configurations[k].gain.mean)) * 100.0,
            vs_kd_only_points: mean(datasets.iter().map(|d| d.configurations[k].vs_kd_only.mean)) * 100.0,
        })
        .collect();
    let rep = PersonalizeReport {
        command: args.command.clone(),
        quick: args.quick,
        seeds: plan.seeds.clone(),
        participants: plan.participants,
        partition: partition_name(&plan.partition),
        holdout: plan.holdout,
        rounds: plan.rounds,
        epochs: plan.epochs,
        stage_epochs: plan.stage_epochs,
        datasets,
        mean_gain,
        seconds: started.elapsed().as_secs_f64(),
    };
    let md = rep.to_markdown();
    grid.suspend(|| println!("{md}"));
    if let Some(dir) = &args.report {
        report::write_report(dir, "personalize", &rep, &md)?;
        let categories: Vec<String> = rep.datasets.iter().map(|d| d.dataset.clone()).collect();
        let mut groups = vec![(
            "shared student".to_string(),
            rep.datasets.iter().map(|d| d.shared.mean * 100.0).collect(),
        )];
        for (k, c) in Configuration::ALL.iter().enumerate() {
            groups.push((
                c.label().to_string(),
                rep.datasets
                    .iter()
                    .map(|d| d.configurations[k].personalized.mean * 100.0)
                    .collect(),
            ));
        }
        groups.push((
            "teacher".to_string(),
            rep.datasets.iter().map(|d| d.teacher_final.mean * 100.0).collect(),
        ));
        let title = format!(
            "Personalized students on the nodes' own holdouts{}",
            if rep.quick { " (--quick)" } else { "" }
        );
        report::write_bar_chart(
            dir,
            "personalize-accuracy",
            &BarChart {
                title: &title,
                y_label: "accuracy on own holdout (%)",
                categories: &categories,
                groups: &groups,
            },
        )
        .context("plotting the personalization ablation")?;
        eprintln!("report written to {}", dir.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_configuration_makes_the_same_passes_and_is_a_valid_section() {
        for c in Configuration::ALL {
            let p = personalize_config(c, 10, 2);
            let s = &p.stages;
            assert_eq!(
                s.feature_alignment.epochs + s.gradient_guidance.epochs + p.epochs,
                10,
                "{c:?}"
            );
            p.validate().unwrap_or_else(|e| panic!("{c:?}: {e}"));
        }
        let both = personalize_config(Configuration::Both, 10, 2);
        assert_eq!(
            (
                both.stages.feature_alignment.epochs,
                both.stages.gradient_guidance.epochs,
                both.epochs
            ),
            (2, 2, 6)
        );
        assert_eq!(
            personalize_config(Configuration::KdOnly, 10, 2).stages,
            StagesConfig::default()
        );
    }

    #[test]
    fn defaults_and_bad_options() {
        let p = plan(&PersonalizeOptions::default()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.seeds, [1, 2, 3]);
        assert_eq!(p.datasets, ["mnist-10k", "fashion-mnist", "credit"]);
        assert_eq!((p.participants, p.rounds, p.epochs, p.stage_epochs), (5, 5, 10, 2));
        assert_eq!(p.partition, Partition::Dirichlet { alpha: 0.5 });
        let q = plan(&PersonalizeOptions {
            quick: true,
            ..PersonalizeOptions::default()
        })
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((q.seeds.len(), q.participants, q.rounds), (1, 3, 2));
        for (opts, needle) in [
            (
                PersonalizeOptions {
                    seeds: vec![2, 2],
                    ..PersonalizeOptions::default()
                },
                "seed 2 is given twice",
            ),
            (
                PersonalizeOptions {
                    participants: Some(1),
                    ..PersonalizeOptions::default()
                },
                "at least 2",
            ),
            (
                PersonalizeOptions {
                    holdout: Some(1.0),
                    ..PersonalizeOptions::default()
                },
                "--holdout 1",
            ),
            (
                PersonalizeOptions {
                    epochs: Some(2),
                    ..PersonalizeOptions::default()
                },
                "--epochs 2",
            ),
            (
                PersonalizeOptions {
                    partition: Some("0".into()),
                    ..PersonalizeOptions::default()
                },
                "--partition",
            ),
        ] {
            let e = plan(&opts).expect_err(needle);
            assert!(format!("{e:#}").contains(needle), "{e:#} lacks {needle}");
        }
    }

    #[test]
    fn gains_are_per_seed_differences_of_participant_means() {
        let node = |shared: f64, accs: [f64; 4]| NodeRun {
            participant: 0,
            train_rows: 1,
            holdout_rows: 1,
            class_counts: vec![1],
            teacher: 0.9,
            teacher_final: 0.9,
            shared,
            shared_global: shared,
            personalized: Configuration::ALL
                .iter()
                .zip(accs)
                .map(|(&configuration, accuracy)| PersonalizedRun {
                    configuration,
                    accuracy,
                    gain: accuracy - shared,
                    global_accuracy: 0.5,
                    seconds: 1.0,
                    stages: Vec::new(),
                })
                .collect(),
        };
        let seed = |seed, nodes| SeedRun {
            seed,
            public_rows: 1,
            test_rows: 1,
            curve: Vec::new(),
            nodes,
            seconds: 0.0,
        };
        let runs = vec![
            seed(
                1,
                vec![node(0.5, [0.6, 0.7, 0.5, 0.6]), node(0.7, [0.8, 0.7, 0.9, 0.8])],
            ),
            seed(2, vec![node(0.4, [0.6, 0.6, 0.6, 0.6])]),
        ];
        let p = plan(&PersonalizeOptions::default()).unwrap_or_else(|e| panic!("{e}"));
        let d = dataset_result("t", &p, runs);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(d.shared.values[0], 0.6) && close(d.shared.values[1], 0.4));
        let kd = &d.configurations[0];
        assert!(
            close(kd.personalized.values[0], 0.7) && close(kd.gain.values[0], 0.1) && close(kd.gain.values[1], 0.2)
        );
        assert!(kd.vs_kd_only.values.iter().all(|&v| v == 0.0));
        let s2 = &d.configurations[2];
        assert!(close(s2.vs_kd_only.values[0], 0.0) && close(s2.vs_kd_only.values[1], 0.0));
        assert!(close(s2.gain.mean, s2.personalized.mean - d.shared.mean));
        assert_eq!(d.configurations[3].kd_epochs, 6);
    }
}
