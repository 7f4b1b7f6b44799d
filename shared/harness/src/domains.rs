// Over 800 lines: the suite (examples, variants, one federation per run), its summary, Markdown tables and charts read best together with the tests of the tables.
//! `fedistill bench domains`: the domain adapters of issue 22 on their worked examples, each a real-process
//! federation of three participants run by `fedistill demo` (the coordinator and every participant are
//! processes of this binary, each node reads its own files against the task card, the audit bundle is
//! exported and verified), with and without the adapter, against each participant's local-only teacher and
//! the teacher trained on the pooled private rows. Writes domains.json, domains.md and one bar chart per
//! example, and with `--docs` the generated part of docs/domains.md.
//!
//! Examples: `italy-power` (UCR ItalyPowerDemand from the catalog, Dirichlet split, `.ts` files per node),
//! `sp500-banks` (examples/sp500-banks: three banks holding different years of the S&P 500, windows cut
//! from their own CSVs) and `ad-hospitals` (examples/ad-hospitals: three hospitals, one without the CSF
//! assay). The sequence adapters: the time-series augmentation of the public set (`[augment]`), and the 1-D
//! CNN teacher and student (`cnn1d`) against the default MLPs. The two-modality adapter: the fused models
//! over the card's blocks, against MLPs on both blocks and against federations on each block alone (the
//! hospital without a block cannot join the one on that block). The regression example `concrete-plants`
//! (examples/concrete-plants: three plants, each its own mix type) runs with and without the constraint
//! loss on the shared student, and reports R², RMSE and the measured violation rates.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use serde::Serialize;

use fedistill_shared::data::{Augment, TaskCard};
use fedistill_shared::ml::ModelConfig;

use crate::demo::{DemoOptions, OwnFiles};
use crate::report::{self, BarChart};

/// Options of `fedistill bench domains`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DomainsOptions {
    /// One seed, two rounds, two variants per example (CI).
    #[arg(long)]
    pub quick: bool,
    /// Seeds (default 1,2,3; with --quick 1).
    #[arg(long, value_delimiter = ',')]
    pub seeds: Vec<u64>,
    /// Rounds of each federation (default 10; with --quick 2).
    #[arg(long)]
    pub rounds: Option<u64>,
    /// Examples to run (italy-power, sp500-banks; default all).
    #[arg(long, value_delimiter = ',')]
    pub examples: Vec<String>,
    /// The folder holding the worked examples' files (default `examples`, relative to the current directory).
    #[arg(long)]
    pub examples_dir: Option<PathBuf>,
    /// Write domains.json, domains.md and domains-EXAMPLE.png/.svg to this directory.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Rewrite the generated section of this Markdown file (docs/domains.md) and its charts.
    #[arg(long)]
    pub docs: Option<PathBuf>,
    /// Keep every federation's directory (kits, logs, audit bundles) here.
    #[arg(long)]
    pub workdir: Option<PathBuf>,
    /// The `fedistill` binary the nodes run as (not a flag: the dispatch sets it).
    #[arg(skip)]
    pub exe: PathBuf,
    /// The command line recorded in the report (not a flag: the dispatch sets it).
    #[arg(skip)]
    pub command: String,
}

/// The variants of a sequence example: the default MLPs or the 1-D CNNs, each without and with the
/// public-set augmentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    /// The participants' default MLP teacher and student, no augmentation.
    Mlp,
    /// The MLPs, with the card's `[augment]`.
    MlpAugment,
    /// 1-D CNN teacher and student, no augmentation.
    Cnn1d,
    /// The 1-D CNNs with the card's `[augment]`.
    Cnn1dAugment,
    /// Two modalities: the card's blocks, the participants' default fused teacher and student; every
    /// participant, the one without a block included.
    Fused,
    /// Two modalities: both blocks as one flat input (with the presence inputs) to MLPs.
    MlpBoth,
    /// Only the first block (`csf`): a card without the other; participants lacking the block cannot join.
    FirstOnly,
    /// Only the second block (`clinical`): every participant.
    SecondOnly,
    /// Regression: the shared student with the card's constraint loss (monotone and bounds, weight 1).
    Constrained,
    /// Regression: the same federation without the constraint loss (weight 0).
    Unconstrained,
}

impl Variant {
    const SEQUENCE: [Variant; 4] = [Variant::Mlp, Variant::MlpAugment, Variant::Cnn1d, Variant::Cnn1dAugment];
    const SEQUENCE_QUICK: [Variant; 2] = [Variant::Mlp, Variant::Cnn1dAugment];
    const MODALITIES: [Variant; 4] = [
        Variant::Fused,
        Variant::MlpBoth,
        Variant::FirstOnly,
        Variant::SecondOnly,
    ];
    const MODALITIES_QUICK: [Variant; 2] = [Variant::Fused, Variant::FirstOnly];
    const REGRESSION: [Variant; 2] = [Variant::Constrained, Variant::Unconstrained];

    fn label(self) -> &'static str {
        match self {
            Variant::Mlp => "MLP",
            Variant::MlpAugment => "MLP + augmentation",
            Variant::Cnn1d => "1-D CNN",
            Variant::Cnn1dAugment => "1-D CNN + augmentation",
            Variant::Fused => "fused, both blocks",
            Variant::MlpBoth => "MLP, both blocks",
            Variant::FirstOnly => "first block only",
            Variant::SecondOnly => "second block only",
            Variant::Constrained => "constraint loss",
            Variant::Unconstrained => "no constraint loss",
        }
    }

    fn augmented(self) -> bool {
        matches!(self, Variant::MlpAugment | Variant::Cnn1dAugment)
    }

    fn cnn(self) -> bool {
        matches!(self, Variant::Cnn1d | Variant::Cnn1dAugment)
    }
}

/// A worked example.
struct Example {
    name: &'static str,
    domain: &'static str,
    /// Input channels of its series (for the 1-D CNNs); 0 for a tabular example.
    channels: usize,
    augment: Augment,
    /// `None`: the catalog dataset of the same name, split three ways; else the example's directory.
    own: Option<PathBuf>,
    /// The participants' own files in the example's directory.
    private: &'static [&'static str],
    /// A two-modality example (its card has `[[modalities]]`): the fusion variants instead of the sequence ones.
    modalities: bool,
    /// A regression example (its card has `[regression]`): with and without the constraint loss.
    regression: bool,
}

impl Example {
    fn variants(&self, quick: bool) -> &'static [Variant] {
        if self.regression {
            return &Variant::REGRESSION;
        }
        match (self.modalities, quick) {
            (false, false) => &Variant::SEQUENCE,
            (false, true) => &Variant::SEQUENCE_QUICK,
            (true, false) => &Variant::MODALITIES,
            (true, true) => &Variant::MODALITIES_QUICK,
        }
    }
}

fn examples(dir: &Path) -> Vec<Example> {
    let augment = Augment {
        jitter: 0.05,
        magnitude_warp: 0.1,
        time_warp: 0.1,
        ..Augment::default()
    };
    vec![
        Example {
            name: "italy-power",
            domain: "energy demand (UCR ItalyPowerDemand)",
            channels: 1,
            augment,
            own: None,
            private: &[],
            modalities: false,
            regression: false,
        },
        Example {
            name: "sp500-banks",
            domain: "finance: three banks, S&P 500 volatility regime by time period",
            channels: 2,
            augment,
            own: Some(dir.join("sp500-banks")),
            private: &["bank-a.csv", "bank-b.csv", "bank-c.csv"],
            modalities: false,
            regression: false,
        },
        Example {
            name: "ad-hospitals",
            domain: "medicine: three hospitals, cognitive impairment from the CSF assay and clinical data; \
                     hospital C has no CSF assay",
            channels: 0,
            augment: Augment::default(),
            own: Some(dir.join("ad-hospitals")),
            private: &["hospital-a.csv", "hospital-b.csv", "hospital-c.csv"],
            modalities: true,
            regression: false,
        },
        Example {
            name: "concrete-plants",
            domain: "manufacturing: three concrete plants, each its own mix type, compressive strength under \
                     monotone (cement, age, water) and bound constraints",
            channels: 0,
            augment: Augment::default(),
            own: Some(dir.join("concrete-plants")),
            private: &["plant-a.csv", "plant-b.csv", "plant-c.csv"],
            modalities: false,
            regression: true,
        },
    ]
}

/// One federation's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// The example.
    pub example: String,
    /// What it stands for.
    pub domain: String,
    /// The variant.
    pub variant: Variant,
    /// The seed.
    pub seed: u64,
    /// Mean test accuracy of the participants' federated students (f32).
    pub student_accuracy: f64,
    /// Their INT8 exports' mean test accuracy.
    pub int8_accuracy: f64,
    /// Mean test accuracy of the participants' teachers trained on their own rows only.
    pub local_only_accuracy: f64,
    /// The teacher architecture trained on the pooled private rows.
    pub pooled_accuracy: f64,
    /// Participants of the federation.
    pub participants: usize,
    /// Mean ROC AUC of the federated students (two-modality example; absent where undefined).
    pub student_auc: Option<f64>,
    /// Mean ROC AUC of the local-only teachers.
    pub local_only_auc: Option<f64>,
    /// ROC AUC of the pooled teacher.
    pub pooled_auc: Option<f64>,
    /// Whether `fedistill audit verify` accepted the federation's bundle.
    pub audit_verified: bool,
    /// Soft-label bytes sent by all participants over the run.
    pub bytes_up: u64,
    /// Wall-clock seconds of the federation (the demo, baselines and audit included).
    pub seconds: f64,
    /// A regression example's error and constraint figures (the `*_accuracy` fields then hold R²).
    pub regression: Option<RegressionFigures>,
}

/// RMSE (target units), measured monotone violation rate and bound violation rate of the federated student,
/// the local-only teachers (mean) and the pooled teacher.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RegressionFigures {
    /// Federated students' RMSE, mean over participants.
    pub student_rmse: f64,
    /// Their monotone violation rate.
    pub student_violation: f64,
    /// Their bound violation rate: the share of held-out rows predicted outside the card's output bounds
    /// (`None` when the card declares no bounds).
    pub student_bound_violation: Option<f64>,
    /// Their INT8 exports' RMSE.
    pub int8_rmse: f64,
    /// Local-only teachers' RMSE, mean.
    pub local_only_rmse: f64,
    /// Their violation rate.
    pub local_only_violation: f64,
    /// Their bound violation rate.
    pub local_only_bound_violation: Option<f64>,
    /// The pooled teacher's RMSE.
    pub pooled_rmse: f64,
    /// Its violation rate.
    pub pooled_violation: f64,
    /// Its bound violation rate.
    pub pooled_bound_violation: Option<f64>,
}

/// Mean and standard deviation over seeds, per example and variant.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The example.
    pub example: String,
    /// What it stands for.
    pub domain: String,
    /// The variant.
    pub variant: Variant,
    /// Seeds run.
    pub seeds: usize,
    /// Federated student accuracy, mean and sample standard deviation.
    pub student: (f64, f64),
    /// INT8 student accuracy, mean.
    pub int8: f64,
    /// Local-only teachers, mean.
    pub local_only: f64,
    /// Pooled teacher, mean.
    pub pooled: f64,
    /// Participants of each federation.
    pub participants: usize,
    /// Federated student ROC AUC, mean and sample standard deviation (when every run has one).
    pub student_auc: Option<(f64, f64)>,
    /// Local-only teachers' ROC AUC, mean.
    pub local_only_auc: Option<f64>,
    /// Pooled teacher's ROC AUC, mean.
    pub pooled_auc: Option<f64>,
    /// Every run's audit verified.
    pub audit_verified: bool,
    /// A regression example's figures, mean over seeds (student RMSE's standard deviation aside).
    pub regression: Option<RegressionFigures>,
}

/// The suite's report.
#[derive(Debug, Clone, Serialize)]
pub struct DomainsReport {
    /// `"domains"`.
    pub suite: &'static str,
    /// The command that produced it.
    pub command: String,
    /// Build profile.
    pub build: &'static str,
    /// Rounds per federation.
    pub rounds: u64,
    /// Every run.
    pub runs: Vec<Run>,
    /// Per example and variant.
    pub summary: Vec<Summary>,
    /// Seconds for the whole suite.
    pub seconds: f64,
}

/// Runs the suite.
pub fn run(opts: &DomainsOptions) -> anyhow::Result<DomainsReport> {
    let started = Instant::now();
    let seeds = match (opts.seeds.is_empty(), opts.quick) {
        (false, _) => opts.seeds.clone(),
        (true, true) => vec![1],
        (true, false) => vec![1, 2, 3],
    };
    let rounds = opts.rounds.unwrap_or(if opts.quick { 2 } else { 10 });
    if rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let dir = opts.examples_dir.clone().unwrap_or_else(|| PathBuf::from("examples"));
    let mut chosen = examples(&dir);
    if !opts.examples.is_empty() {
        for name in &opts.examples {
            if !chosen.iter().any(|e| e.name == name) {
                bail!(
                    "unknown example {name:?}; known: {}",
                    chosen.iter().map(|e| e.name).collect::<Vec<_>>().join(", ")
                );
            }
        }
        chosen.retain(|e| opts.examples.iter().any(|n| n == e.name));
    }
    for e in &chosen {
        if let Some(d) = &e.own {
            if !d.join("task.toml").is_file() {
                bail!(
                    "example {}: {} not found; run from the repository root or pass --examples-dir DIR (the \
                     folder holding {}/)",
                    e.name,
                    d.join("task.toml").display(),
                    e.name
                );
            }
        }
    }

    let temp = tempfile::tempdir().context("creating the suite's temporary directory")?;
    let root = opts.workdir.clone().unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let total: usize = chosen.iter().map(|e| e.variants(opts.quick).len() * seeds.len()).sum();
    let mut runs = Vec::new();
    for e in &chosen {
        for &v in e.variants(opts.quick) {
            for &seed in &seeds {
                eprintln!(
                    "domains: [{}/{total}] {} / {} / seed {seed}: a federation of 3 participant processes, {rounds} rounds",
                    runs.len() + 1,
                    e.name,
                    v.label()
                );
                let work = root.join(format!("{}-{:?}-{seed}", e.name, v).to_lowercase());
                runs.push(run_one(e, v, seed, rounds, &work, &opts.exe)?);
            }
        }
    }
    let summary = summarize(&runs);
    let report = DomainsReport {
        suite: "domains",
        command: opts.command.clone(),
        build: if cfg!(debug_assertions) { "debug" } else { "release" },
        rounds,
        runs,
        summary,
        seconds: started.elapsed().as_secs_f64(),
    };
    let md = markdown(&report);
    println!("{md}");
    if let Some(dir) = &opts.report {
        report::write_report(dir, "domains", &report, &md)?;
        charts(&report, dir)?;
    }
    if let Some(docs) = &opts.docs {
        let img = docs.parent().unwrap_or(Path::new(".")).join("img/bench-domains");
        charts(&report, &img)?;
        let mut body = md.clone();
        for e in report
            .summary
            .iter()
            .map(|s| s.example.clone())
            .collect::<std::collections::BTreeSet<_>>()
        {
            body.push_str(&format!("\n![{e}](img/bench-domains/domains-{e}.svg)\n"));
        }
        report::replace_docs_section(docs, "domains", &body)?;
    }
    Ok(report)
}

fn run_one(e: &Example, v: Variant, seed: u64, rounds: u64, work: &Path, exe: &Path) -> anyhow::Result<Run> {
    std::fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
    let cnn = |channels: &[usize], hidden: usize| ModelConfig::Cnn1d {
        in_channels: e.channels,
        channels: channels.to_vec(),
        hidden,
        kernel: 5,
    };
    let own = match &e.own {
        None => None,
        Some(dir) => {
            let mut card = dir.join("task.toml");
            let mut private: Vec<PathBuf> = e.private.iter().map(|f| dir.join(f)).collect();
            if let Some(keep) = match v {
                Variant::FirstOnly => Some(0),
                Variant::SecondOnly => Some(1),
                _ => None,
            } {
                let (one, holders) = single_block_card(&card, keep, &private)?;
                let path = work.join("task-one-block.toml");
                std::fs::write(&path, one.to_toml_string()).with_context(|| format!("writing {}", path.display()))?;
                card = path;
                private = holders;
            }
            if v.augmented() {
                // The operator's card with `[augment]`: the same public file, so the same declared digest.
                let text = std::fs::read_to_string(&card).with_context(|| format!("reading {}", card.display()))?;
                let augmented = work.join("task-augment.toml");
                std::fs::write(
                    &augmented,
                    format!("{text}\n[augment]\n{}", toml::to_string(&e.augment)?),
                )
                .with_context(|| format!("writing {}", augmented.display()))?;
                card = augmented;
            }
            Some(OwnFiles {
                card,
                public: dir.join("public.csv"),
                private,
            })
        }
    };
    let report_path = work.join("report.json");
    let options = DemoOptions {
        participants: 3,
        rounds,
        dataset: e.name.to_string(),
        alpha: 0.5,
        seed,
        rule: if e.regression { "mean" } else { "confidence_weighted" }.into(),
        secure_aggregation: false,
        encoding: "f16".into(),
        aggregate_encoding: "f32".into(),
        refresh_epochs: if e.regression { 0 } else { 3 },
        fedavg_rounds: 0,
        report: Some(report_path.clone()),
        workdir: Some(work.join("federation")),
        data_dir: None,
        exe: exe.to_path_buf(),
        own,
        augment: (v.augmented() && e.own.is_none()).then_some(e.augment),
        stop_patience: None,
        stop_min_delta: None,
        teacher: match v {
            _ if v.cnn() => Some(cnn(&[16, 32], 64)),
            Variant::MlpBoth => Some(ModelConfig::Mlp { hidden: vec![64, 32] }),
            _ => None,
        },
        student: match v {
            _ if v.cnn() => Some(cnn(&[8], 32)),
            Variant::MlpBoth => Some(ModelConfig::Mlp { hidden: vec![16] }),
            _ => None,
        },
        constraint_weight: (v == Variant::Unconstrained).then_some(0.0),
    };
    crate::demo::run(&options).with_context(|| format!("{} / {}: the federation", e.name, v.label()))?;
    let text = std::fs::read_to_string(&report_path).with_context(|| format!("reading {}", report_path.display()))?;
    let r: serde_json::Value = serde_json::from_str(&text).context("the demo's report")?;
    let num = |path: &[&str]| -> anyhow::Result<f64> {
        let mut at = &r;
        for p in path {
            at = &at[*p];
        }
        at.as_f64()
            .with_context(|| format!("the demo report has no number at {}", path.join(".")))
    };
    let bytes_up = r["per_round"]
        .as_array()
        .map(|rows| rows.iter().filter_map(|row| row["bytes_up"].as_u64()).sum())
        .unwrap_or(0);
    // An optional number (an AUC, a bound violation rate): `None` where the report has none.
    let auc = |path: &[&str]| {
        let mut at = &r;
        for p in path {
            at = &at[*p];
        }
        at.as_f64()
    };
    Ok(Run {
        participants: r["participants"].as_u64().unwrap_or(0) as usize,
        student_auc: auc(&["final", "student_auc"]),
        local_only_auc: auc(&["baselines", "local_only_auc"]),
        pooled_auc: auc(&["baselines", "centralized_auc"]),
        example: e.name.to_string(),
        domain: e.domain.to_string(),
        variant: v,
        seed,
        student_accuracy: num(&["final", "student_accuracy"])?,
        int8_accuracy: num(&["final", "int8_accuracy"])?,
        local_only_accuracy: num(&["baselines", "local_only_accuracy"])?,
        pooled_accuracy: num(&["baselines", "centralized_accuracy"])?,
        audit_verified: r["audit"]["verified"].as_bool() == Some(true),
        bytes_up,
        seconds: num(&["seconds"])?,
        regression: if e.regression {
            Some(RegressionFigures {
                student_rmse: num(&["final", "student_metrics", "rmse"])?,
                student_violation: num(&["final", "student_metrics", "violation_rate"])?,
                // Reported only where the card declares bounds.
                student_bound_violation: auc(&["final", "student_metrics", "bound_violation_rate"]),
                int8_rmse: num(&["final", "student_metrics", "int8_rmse"])?,
                local_only_rmse: num(&["baselines", "local_only_metrics", "rmse"])?,
                local_only_violation: num(&["baselines", "local_only_metrics", "violation_rate"])?,
                local_only_bound_violation: auc(&["baselines", "local_only_metrics", "bound_violation_rate"]),
                pooled_rmse: num(&["baselines", "centralized_metrics", "rmse"])?,
                pooled_violation: num(&["baselines", "centralized_metrics", "violation_rate"])?,
                pooled_bound_violation: auc(&["baselines", "centralized_metrics", "bound_violation_rate"]),
            })
        } else {
            None
        },
    })
}

/// The card `card` reduced to its modality block `keep` (its features, their statistics; no blocks), and the
/// files among `private` that hold that block (a file lacking it cannot take part in that federation).
fn single_block_card(card: &Path, keep: usize, private: &[PathBuf]) -> anyhow::Result<(TaskCard, Vec<PathBuf>)> {
    let full = TaskCard::load(card)?;
    let block = full
        .modalities
        .get(keep)
        .with_context(|| format!("{}: no modality block {keep}", card.display()))?
        .clone();
    let mut one = full.clone();
    one.features.retain(|f| block.features.iter().any(|n| n == f.name()));
    if let Some(p) = one.preprocessing.as_mut() {
        p.stats.retain(|s| block.features.contains(&s.name));
    }
    one.modalities.clear();
    one.name = format!("{}-{}", full.name, block.name);
    one.validate()?;
    let mut holders = Vec::new();
    for f in private {
        let (_, report) =
            fedistill_shared::data::read_private(f, &full, &fedistill_shared::data::CsvOptions::default())?;
        if !report.absent_modalities.contains(&block.name) {
            holders.push(f.clone());
        }
    }
    Ok((one, holders))
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n.max(1.0);
    let sd = if v.len() > 1 {
        (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    (mean, sd)
}

fn summarize(runs: &[Run]) -> Vec<Summary> {
    let mut out: Vec<Summary> = Vec::new();
    for r in runs {
        if out.iter().any(|s| s.example == r.example && s.variant == r.variant) {
            continue;
        }
        let same: Vec<&Run> = runs
            .iter()
            .filter(|x| x.example == r.example && x.variant == r.variant)
            .collect();
        let pick = |f: fn(&Run) -> f64| same.iter().map(|x| f(x)).collect::<Vec<_>>();
        out.push(Summary {
            example: r.example.clone(),
            domain: r.domain.clone(),
            variant: r.variant,
            seeds: same.len(),
            student: mean_sd(&pick(|x| x.student_accuracy)),
            int8: mean_sd(&pick(|x| x.int8_accuracy)).0,
            local_only: mean_sd(&pick(|x| x.local_only_accuracy)).0,
            pooled: mean_sd(&pick(|x| x.pooled_accuracy)).0,
            participants: r.participants,
            student_auc: all(&same, |x| x.student_auc).map(|v| mean_sd(&v)),
            local_only_auc: all(&same, |x| x.local_only_auc).map(|v| mean_sd(&v).0),
            pooled_auc: all(&same, |x| x.pooled_auc).map(|v| mean_sd(&v).0),
            audit_verified: same.iter().all(|x| x.audit_verified),
            regression: mean_figures(&same),
        });
    }
    out
}

/// The mean of the runs' regression figures (`None` unless every run has them).
fn mean_figures(runs: &[&Run]) -> Option<RegressionFigures> {
    let f: Option<Vec<RegressionFigures>> = runs.iter().map(|r| r.regression).collect();
    let f = f.filter(|f| !f.is_empty())?;
    let m = |g: fn(&RegressionFigures) -> f64| mean_sd(&f.iter().map(g).collect::<Vec<_>>()).0;
    // The mean when every run has the figure.
    let some =
        |g: fn(&RegressionFigures) -> Option<f64>| f.iter().map(g).collect::<Option<Vec<f64>>>().map(|v| mean_sd(&v).0);
    Some(RegressionFigures {
        student_rmse: m(|x| x.student_rmse),
        student_violation: m(|x| x.student_violation),
        student_bound_violation: some(|x| x.student_bound_violation),
        int8_rmse: m(|x| x.int8_rmse),
        local_only_rmse: m(|x| x.local_only_rmse),
        local_only_violation: m(|x| x.local_only_violation),
        local_only_bound_violation: some(|x| x.local_only_bound_violation),
        pooled_rmse: m(|x| x.pooled_rmse),
        pooled_violation: m(|x| x.pooled_violation),
        pooled_bound_violation: some(|x| x.pooled_bound_violation),
    })
}

/// A regression example's table: R², RMSE (MPa), monotone violation rate and bound violation rate of every
/// model (`-` where the card declares no bounds).
fn regression_table(rows: &[&Summary]) -> String {
    let bounds = |v: Option<f64>| v.map_or("-".to_string(), pct);
    let body: Vec<Vec<String>> = rows
        .iter()
        .filter_map(|s| s.regression.map(|f| (s, f)))
        .map(|(s, f)| {
            vec![
                s.variant.label().to_string(),
                s.seeds.to_string(),
                format!("{:.3} ± {:.3}", s.student.0, s.student.1),
                format!("{:.2}", f.student_rmse),
                pct(f.student_violation),
                bounds(f.student_bound_violation),
                format!("{:.2}", f.int8_rmse),
                format!("{:.3}", s.local_only),
                format!("{:.2}", f.local_only_rmse),
                pct(f.local_only_violation),
                bounds(f.local_only_bound_violation),
                format!("{:.3}", s.pooled),
                format!("{:.2}", f.pooled_rmse),
                pct(f.pooled_violation),
                bounds(f.pooled_bound_violation),
                if s.audit_verified { "OK" } else { "FAILED" }.to_string(),
            ]
        })
        .collect();
    report::markdown_table(
        &[
            "variant",
            "seeds",
            "student R²",
            "student RMSE",
            "student violations %",
            "student out of bounds %",
            "int8 RMSE",
            "local-only R²",
            "local-only RMSE",
            "local-only violations %",
            "local-only out of bounds %",
            "pooled R²",
            "pooled RMSE",
            "pooled violations %",
            "pooled out of bounds %",
            "audit verify",
        ],
        &body,
    )
}

/// Every run's value, or `None` when one lacks it.
fn all(runs: &[&Run], f: fn(&Run) -> Option<f64>) -> Option<Vec<f64>> {
    runs.iter().map(|r| f(r)).collect()
}

fn pct(v: f64) -> String {
    format!("{:.1}", 100.0 * v)
}

/// The report as Markdown: one table per example (variants as rows).
pub fn markdown(r: &DomainsReport) -> String {
    let mut md = format!(
        "Generated by `{}` ({} build, {} rounds per federation, {:.0} s).\n",
        r.command, r.build, r.rounds, r.seconds
    );
    let mut names: Vec<(&str, &str)> = Vec::new();
    for s in &r.summary {
        if !names.iter().any(|(n, _)| *n == s.example) {
            names.push((&s.example, &s.domain));
        }
    }
    for (name, domain) in names {
        let of_example: Vec<&Summary> = r.summary.iter().filter(|s| s.example == name).collect();
        if of_example.iter().any(|s| s.regression.is_some()) {
            md.push_str(&format!(
                "\n**{name}**: {domain} (on each participant's held-out rows, mean over participants and \
                 seeds; RMSE in the target's units, violations: share of (row, monotone feature) pairs whose \
                 prediction moves the wrong way; out of bounds: share of rows predicted outside the card's \
                 output bounds)\n\n"
            ));
            md.push_str(&regression_table(&of_example));
            continue;
        }
        md.push_str(&format!(
            "\n**{name}**: {domain} (test accuracy %, mean over seeds)\n\n"
        ));
        let rows: Vec<Vec<String>> = r
            .summary
            .iter()
            .filter(|s| s.example == name)
            .map(|s| {
                let auc = |v: Option<f64>| v.map_or("-".to_string(), |a| format!("{a:.3}"));
                vec![
                    s.variant.label().to_string(),
                    s.participants.to_string(),
                    s.seeds.to_string(),
                    format!("{} ± {}", pct(s.student.0), pct(s.student.1)),
                    pct(s.int8),
                    pct(s.local_only),
                    pct(s.pooled),
                    s.student_auc
                        .map_or("-".to_string(), |(m, sd)| format!("{m:.3} ± {sd:.3}")),
                    auc(s.local_only_auc),
                    auc(s.pooled_auc),
                    if s.audit_verified { "OK" } else { "FAILED" }.to_string(),
                ]
            })
            .collect();
        md.push_str(&report::markdown_table(
            &[
                "variant",
                "participants",
                "seeds",
                "federated student",
                "int8 student",
                "local-only teachers",
                "pooled teacher",
                "student AUC",
                "local-only AUC",
                "pooled AUC",
                "audit verify",
            ],
            &rows,
        ));
    }
    md
}

fn charts(r: &DomainsReport, dir: &Path) -> anyhow::Result<()> {
    let mut names: Vec<String> = Vec::new();
    for s in &r.summary {
        if !names.contains(&s.example) {
            names.push(s.example.clone());
        }
    }
    for name in names {
        let rows: Vec<&Summary> = r.summary.iter().filter(|s| s.example == name).collect();
        let categories: Vec<String> = rows.iter().map(|s| s.variant.label().to_string()).collect();
        if rows.iter().any(|s| s.regression.is_some()) {
            let fig = |g: fn(&RegressionFigures) -> f64| -> Vec<f64> {
                rows.iter().map(|s| s.regression.map_or(0.0, |f| g(&f))).collect()
            };
            let groups = vec![
                ("local-only teachers".to_string(), fig(|f| f.local_only_rmse)),
                ("federated student".to_string(), fig(|f| f.student_rmse)),
                ("int8 student".to_string(), fig(|f| f.int8_rmse)),
                ("pooled teacher".to_string(), fig(|f| f.pooled_rmse)),
            ];
            report::write_bar_chart(
                dir,
                &format!("domains-{name}"),
                &BarChart {
                    title: &format!("{name}: test RMSE (lower is better)"),
                    y_label: "RMSE",
                    categories: &categories,
                    groups: &groups,
                },
            )?;
            continue;
        }
        let groups = vec![
            (
                "local-only teachers".to_string(),
                rows.iter().map(|s| 100.0 * s.local_only).collect(),
            ),
            (
                "federated student".to_string(),
                rows.iter().map(|s| 100.0 * s.student.0).collect(),
            ),
            (
                "int8 student".to_string(),
                rows.iter().map(|s| 100.0 * s.int8).collect(),
            ),
            (
                "pooled teacher".to_string(),
                rows.iter().map(|s| 100.0 * s.pooled).collect(),
            ),
        ];
        report::write_bar_chart(
            dir,
            &format!("domains-{name}"),
            &BarChart {
                title: &format!("{name}: test accuracy (%)"),
                y_label: "test accuracy (%)",
                categories: &categories,
                groups: &groups,
            },
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(example: &str, variant: Variant, seed: u64, student: f64) -> Run {
        Run {
            example: example.into(),
            domain: "d".into(),
            variant,
            seed,
            student_accuracy: student,
            int8_accuracy: student - 0.01,
            local_only_accuracy: 0.5,
            pooled_accuracy: 0.9,
            audit_verified: seed != 9,
            bytes_up: 10,
            seconds: 1.0,
            participants: 3,
            student_auc: (example == "a").then_some(0.5 + student / 10.0),
            local_only_auc: None,
            pooled_auc: None,
            regression: (example == "r").then_some(RegressionFigures {
                student_rmse: 10.0 - student,
                student_violation: 0.0,
                student_bound_violation: Some(if seed == 1 { 0.02 } else { 0.0 }),
                int8_rmse: 10.1 - student,
                local_only_rmse: 6.0,
                local_only_violation: 0.08,
                local_only_bound_violation: Some(0.005),
                pooled_rmse: 5.0,
                pooled_violation: 0.1,
                pooled_bound_violation: (seed == 1).then_some(0.0),
            }),
        }
    }

    /// A regression example's summary averages its figures and gets its own table (R², RMSE, violations).
    #[test]
    fn regression_examples_summarize_rmse_and_violations() {
        let runs = [
            run("r", Variant::Constrained, 1, 0.6),
            run("r", Variant::Constrained, 2, 0.8),
        ];
        let s = summarize(&runs);
        let f = s[0].regression.expect("figures");
        assert!(
            (f.student_rmse - 9.3).abs() < 1e-9 && f.pooled_violation == 0.1,
            "{f:?}"
        );
        // Bound violations: the mean over seeds, or none when a run lacks the figure.
        assert!(
            f.student_bound_violation.is_some_and(|v| (v - 0.01).abs() < 1e-12)
                && f.local_only_bound_violation == Some(0.005)
                && f.pooled_bound_violation.is_none(),
            "{f:?}"
        );
        let md = markdown(&DomainsReport {
            suite: "domains",
            command: "c".into(),
            build: "debug",
            rounds: 2,
            runs: runs.to_vec(),
            summary: s,
            seconds: 1.0,
        });
        assert!(
            md.contains("| constraint loss | 2 | 0.700 ± 0.141 | 9.30 | 0.0 | 1.0 | 9.40 | 0.500 | 6.00 | 8.0 | 0.5 | 0.900 | 5.00 | 10.0 | - | OK |"),
            "{md}"
        );
    }

    #[test]
    fn summaries_group_by_example_and_variant() {
        let runs = [
            run("a", Variant::Mlp, 1, 0.6),
            run("a", Variant::Mlp, 2, 0.8),
            run("a", Variant::Cnn1d, 1, 0.7),
            run("b", Variant::Mlp, 9, 0.4),
        ];
        let s = summarize(&runs);
        assert_eq!(s.len(), 3);
        assert_eq!(
            (s[0].example.as_str(), s[0].variant, s[0].seeds),
            ("a", Variant::Mlp, 2)
        );
        assert!((s[0].student.0 - 0.7).abs() < 1e-12);
        assert!((s[0].student.1 - (0.02f64).sqrt()).abs() < 1e-12);
        assert!((s[0].int8 - 0.69).abs() < 1e-12);
        assert!(s[0].audit_verified && !s[2].audit_verified);
        let md = markdown(&DomainsReport {
            suite: "domains",
            command: "fedistill bench domains".into(),
            build: "debug",
            rounds: 2,
            runs: runs.to_vec(),
            summary: s,
            seconds: 3.0,
        });
        assert!(md.contains("**a**") && md.contains("**b**"), "{md}");
        assert!(
            md.contains("| MLP | 3 | 2 | 70.0 ± 14.1 | 69.0 | 50.0 | 90.0 | 0.570 ± 0.014 | - | - | OK |"),
            "{md}"
        );
        assert!(
            md.contains("| MLP | 3 | 1 | 40.0 ± 0.0 | 39.0 | 50.0 | 90.0 | - | - | - | FAILED |"),
            "{md}"
        );
    }
}
