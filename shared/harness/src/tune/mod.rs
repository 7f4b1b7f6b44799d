//! `fedistill tune` (issue 21, AutoDistill): a budgeted search over the distillation knobs. It never looks at a
//! test set while it searches. A catalog dataset is split as `fedistill bench accuracy` splits it, and the
//! search runs on the split's labelled **public set** only, the one set a federation shares:
//! 1. **Teacher knobs** (`[train]`, a participant's own): the public set is dealt into a simulated federation
//!    (K participants, Dirichlet skew) written as a deployment's files; every participant reads its rows back
//!    through the participant's own loader with a seeded holdout of 20% (`[private] holdout`), trains its
//!    teacher on the rest, and scores it on its own holdout. Score: the mean over the participants.
//! 2. **Federation knobs** (coordinator `temperature`, `rounds`; `[student]` width; `[distill]` schedule,
//!    confidence weighting, learning rate; `[refresh]` epochs and weight): federated distillation on the same
//!    simulated federation, through `experiment::run` (the participants' real learner, the real signed
//!    messages), with the teachers of stage 1's choice. Score: the student's accuracy on the simulation's
//!    held-out validation rows.
//!
//! Each stage is one successive-halving bracket ([`halving`]) over seeded candidates ([`space`]) whose first
//! is the defaults; the budget is the share of the public set the simulation gets (nested seeded subsets).
//! The defaults are measured at the full budget in the same run (the baseline), and kept unless the candidate
//! beats them there and again on a second simulated federation (the public set split anew, `--seed` + 1), which
//! the search's selection never saw. Unless `--no-confirm`, the written configuration and the defaults then run
//! once each on the real federation of the catalog split: the only time a test set is read.
//! The written TOML ([`config_file`]) is read back through the coordinator's and the participant's parsers.
//! The report (tune.json, the tables of tune.md, the plots' series) is [`results`].

pub mod config_file;
pub mod halving;
mod results;
pub mod space;

pub use results::{Chosen, Comparison, Stage, TrialRow, TuneReport};

use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};

use fedistill_participant::learner::NodeData;
use fedistill_shared::data::{Dataset, Partition};
use fedistill_shared::ml::{Progress, ProgressMode};

use crate::accuracy::{config_for, load_dataset, CommonOptions};
use crate::exchange::WireExchange;
use crate::experiment::{self, ExperimentConfig};
use crate::report::{self, Chart};
use halving::{Schedule, Trial};
use results::budget_name;
use space::{FederationKnobs, TeacherKnobs};

/// The smallest simulated federation a rung runs on, in public rows: below it the held-out rows and the shards
/// are a handful each and a score says little. Rungs under it are dropped (`Schedule::new`'s floor).
pub const MIN_SIMULATION_ROWS: usize = 300;
/// The floor of `--quick`, a smoke test that must show a promotion on digits' 359 public rows.
pub const MIN_SIMULATION_ROWS_QUICK: usize = 100;
/// The share of its rows each simulated participant holds out to score its teacher on (the participant's
/// `[private] holdout` default).
pub const HOLDOUT: f64 = 0.2;
/// Most candidates per stage.
pub const MAX_CONFIGS: usize = 729;
/// Largest `--eta`.
pub const MAX_ETA: usize = 100;
/// Largest federation.
pub const MAX_PARTICIPANTS: usize = 100;
/// The second simulated federation that re-scores the candidate is seeded `--seed` + this.
pub const VERIFY_SEED_OFFSET: u64 = 1;

/// The flags of `fedistill tune`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TuneOptions {
    /// Catalog dataset (default: mnist-10k; with --quick: digits).
    #[arg(long)]
    pub dataset: Option<String>,
    /// Directory with the dataset files instead of the embedded copies (fashion-mnist).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Participants of the federation (and of the simulated one).
    #[arg(long, default_value_t = 3)]
    pub participants: usize,
    /// Dirichlet alpha of the label skew (smaller: more skewed).
    #[arg(long, default_value_t = 0.5, allow_negative_numbers = true)]
    pub alpha: f64,
    /// Seed of the split, the simulation, the candidates and every model.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Candidates per stage, the defaults among them (default 9; with --quick: 3).
    #[arg(long)]
    pub configs: Option<usize>,
    /// Halving factor: each rung keeps the best 1/eta candidates and gives them eta times the budget.
    #[arg(long, default_value_t = 3)]
    pub eta: usize,
    /// A small search for CI: digits, 3 candidates, 2 or 3 rounds.
    #[arg(long)]
    pub quick: bool,
    // `--no-confirm` inverted: true (run the chosen configuration and the defaults on the real federation
    // and report their test accuracy) unless the flag is given.
    /// Skip running the chosen configuration and the defaults on the real federation's test set.
    #[arg(long = "no-confirm", action = clap::ArgAction::SetFalse)]
    pub confirm: bool,
    /// Write the tuned configuration (coordinator keys, participant tables) to this TOML file.
    #[arg(long, value_name = "FILE.toml")]
    pub out: Option<PathBuf>,
    /// Write tune.json, tune.md and the per-stage plots (PNG and SVG) to this directory.
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
    /// The command line, for the report (not a flag: the dispatch sets it).
    #[arg(skip)]
    pub command: String,
}

impl TuneOptions {
    /// Checks every flag that needs no data; each error names its flag.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.eta < 2 {
            bail!(
                "--eta must be at least 2 (each rung keeps the best 1/eta of the configurations), got {}",
                self.eta
            );
        }
        if self.eta > MAX_ETA {
            bail!("--eta {} is absurd: at most {MAX_ETA}", self.eta);
        }
        match self.configs {
            Some(0) => bail!("--configs must be at least 1, got 0"),
            Some(n) if n > MAX_CONFIGS => bail!("--configs {n} is too many: at most {MAX_CONFIGS}"),
            _ => {}
        }
        if self.participants < 2 {
            bail!("--participants must be at least 2, got {}", self.participants);
        }
        if self.participants > MAX_PARTICIPANTS {
            bail!(
                "--participants {} is too many: at most {MAX_PARTICIPANTS}",
                self.participants
            );
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            bail!("--alpha must be a finite number > 0, got {}", self.alpha);
        }
        if let Some(r) = &self.report {
            if r.is_file() {
                bail!("--report {} is a file, expected a directory", r.display());
            }
        }
        if let Some(o) = &self.out {
            crate::size::check_writable(o)?;
        }
        Ok(())
    }

    /// The dataset the run uses.
    pub fn dataset_name(&self) -> &str {
        self.dataset
            .as_deref()
            .unwrap_or(if self.quick { "digits" } else { "mnist-10k" })
    }

    /// The candidates per stage the run uses.
    pub fn config_count(&self) -> usize {
        self.configs.unwrap_or(if self.quick { 3 } else { 9 })
    }
}

/// The public set, and the nested seeded subsets the rungs run on.
struct Simulation {
    data: Dataset,
    order: Vec<usize>,
}

impl Simulation {
    fn new(data: Dataset, seed: u64) -> Self {
        use rand::seq::SliceRandom;
        use rand::SeedableRng;
        let mut order: Vec<usize> = (0..data.n).collect();
        order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5105_0B5E));
        Simulation { data, order }
    }

    fn rows_at(&self, budget: f64) -> usize {
        ((self.data.n as f64 * budget).round() as usize).clamp(1, self.data.n.max(1))
    }

    /// The first `rows` of the seeded order, in the set's own order: a rung's subset holds every smaller one.
    fn at(&self, rows: usize) -> Dataset {
        let mut idx = self.order[..rows.min(self.order.len())].to_vec();
        idx.sort_unstable();
        self.data.subset(&idx)
    }
}

/// The evaluations of both stages, with the simulated participants' holdouts and every score cached (the
/// defaults at the full budget are often measured by the bracket already).
struct Tuner<'a> {
    sim: &'a Simulation,
    base: &'a ExperimentConfig,
    inner: Progress,
    holdouts: BTreeMap<usize, Vec<(usize, NodeData)>>,
    scores: BTreeMap<String, f64>,
}

impl Tuner<'_> {
    /// Each simulated participant's rows at `rows` public rows, read back by the participant's loader with its
    /// own holdout; participants whose shard is too small to hold one out are left out.
    fn holdouts(&mut self, rows: usize) -> anyhow::Result<&[(usize, NodeData)]> {
        if !self.holdouts.contains_key(&rows) {
            let ds = self.sim.at(rows);
            let fs = experiment::split_for(&ds, self.base)?;
            let dir = tempfile::tempdir().context("creating a directory for the simulated federation's files")?;
            let files = crate::files::write_split(dir.path(), &fs, None)?;
            let nodes: Vec<(usize, NodeData)> = (0..self.base.participants)
                .filter_map(|i| {
                    let seed = self.base.seed.wrapping_add(i as u64);
                    crate::files::node_with_holdout(dir.path(), &files, i, HOLDOUT, seed)
                        .ok()
                        .map(|n| (i, n))
                })
                .collect();
            anyhow::ensure!(
                !nodes.is_empty(),
                "no simulated participant of {rows} public rows can hold out {HOLDOUT} of its rows"
            );
            self.holdouts.insert(rows, nodes);
        }
        Ok(self.holdouts.get(&rows).map(Vec::as_slice).unwrap_or_default())
    }

    /// The mean over the simulated participants of their teacher's accuracy on their own holdout.
    fn teacher_score(&mut self, k: &TeacherKnobs, rows: usize) -> anyhow::Result<f64> {
        let key = serde_json::to_string(&("teacher", k, rows))?;
        if let Some(&s) = self.scores.get(&key) {
            return Ok(s);
        }
        let mut cfg = self.base.clone();
        k.apply(&mut cfg.train);
        let quiet = Progress::hidden();
        let mut sum = 0.0;
        let nodes = self.holdouts(rows)?;
        for (p, node) in nodes {
            let t = experiment::participant_teacher(&cfg, *p, &node.private, &quiet)?;
            sum += experiment::accuracy(&t, &node.test)?;
        }
        let s = sum / nodes.len() as f64;
        self.scores.insert(key, s);
        Ok(s)
    }

    /// The federation's student accuracy on the simulation's held-out rows, at `rows` public rows, the split and
    /// the models seeded with `seed`.
    fn federation_score(
        &mut self,
        t: &TeacherKnobs,
        f: &FederationKnobs,
        rows: usize,
        seed: u64,
    ) -> anyhow::Result<f64> {
        let key = serde_json::to_string(&("federation", t, f, rows, seed))?;
        if let Some(&s) = self.scores.get(&key) {
            return Ok(s);
        }
        let mut cfg = self.base.clone();
        cfg.seed = seed;
        t.apply(&mut cfg.train);
        f.apply(&mut cfg);
        let s = federated_accuracy(&self.sim.at(rows), &cfg, &self.inner)?;
        self.scores.insert(key, s);
        Ok(s)
    }
}

/// The FD student's accuracy on the held-out part of `ds` after `cfg`'s rounds (no FedAvg, no centralized).
fn federated_accuracy(ds: &Dataset, cfg: &ExperimentConfig, progress: &Progress) -> anyhow::Result<f64> {
    let mut ex = WireExchange::new(cfg.participants, None)?;
    let run = experiment::run(ds, cfg, &mut ex, progress, None)?;
    run.methods
        .first()
        .map(|m| m.accuracy)
        .context("the experiment ran no distillation")
}

/// The progress of the whole search: one step per evaluation; a line per step off a terminal, and on a terminal
/// the bar plus the line kept above it.
struct Steps {
    grid: Progress,
    done: Cell<usize>,
    total: usize,
}

impl Steps {
    fn step(&self, line: &str) {
        self.skip(1, line);
    }

    /// Counts `n` steps as done with one line.
    fn skip(&self, n: usize, line: &str) {
        self.done.set(self.done.get() + n);
        let done = self.done.get().min(self.total);
        self.grid.advance("tune", done as u64, self.total as u64, line);
        if self.grid.mode() == ProgressMode::Bar {
            self.grid.println(line);
        }
    }
}

fn trial_line(stage: &str, t: &Trial, rows: usize, rungs: usize, seconds: f64) -> String {
    let what = match (t.score, &t.error) {
        (Some(s), _) => format!("{:.1}%", s * 100.0),
        (None, Some(e)) => format!("FAILED: {e}"),
        (None, None) => "FAILED".into(),
    };
    format!(
        "{stage} #{} rung {}/{rungs} (budget {}, {rows} rows): {what} ({seconds:.1} s)",
        t.config,
        t.rung + 1,
        budget_name(t.budget),
    )
}

/// Runs one bracket: `score(candidate, rows)` for every trial; the defaults (candidate 0) at the full budget
/// afterwards; the choice.
fn stage<K: Clone>(
    name: &str,
    what: &str,
    schedule: &Schedule,
    candidates: Vec<K>,
    sim: &Simulation,
    steps: &Steps,
    mut score: impl FnMut(&K, usize) -> anyhow::Result<f64>,
) -> anyhow::Result<Stage<K>> {
    let last_seconds = Cell::new(0.0);
    let mut seconds = Vec::with_capacity(schedule.evaluations());
    let outcome = halving::run(
        schedule,
        |c, _rung, budget| {
            let t0 = Instant::now();
            let s = score(&candidates[c], sim.rows_at(budget));
            last_seconds.set(t0.elapsed().as_secs_f64());
            s
        },
        |t| {
            seconds.push(last_seconds.get());
            let line = trial_line(name, t, sim.rows_at(t.budget), schedule.rungs.len(), last_seconds.get());
            steps.step(&line);
        },
    );
    let full = sim.rows_at(1.0);
    let t0 = Instant::now();
    let defaults_score =
        score(&candidates[0], full).with_context(|| format!("{name}: the defaults at the full budget"))?;
    steps.step(&format!(
        "{name} defaults at the full budget ({full} rows): {:.1}% ({:.1} s)",
        defaults_score * 100.0,
        t0.elapsed().as_secs_f64()
    ));
    let (chosen, chosen_score) = match (outcome.best, outcome.best_score) {
        (Some(b), Some(s)) if s > defaults_score => (b, s),
        _ => (0, defaults_score),
    };
    Ok(Stage {
        score: what.to_string(),
        schedule: schedule.clone(),
        candidates,
        trials: outcome
            .trials
            .iter()
            .zip(seconds.iter().copied().chain(std::iter::repeat(0.0)))
            .map(|(t, seconds)| TrialRow {
                config: t.config,
                rung: t.rung,
                budget: t.budget,
                rows: sim.rows_at(t.budget),
                score: t.score,
                error: t.error.clone(),
                promoted: t.promoted,
                seconds,
            })
            .collect(),
        best: outcome.best,
        best_score: outcome.best_score,
        defaults_score,
        chosen,
        chosen_score,
    })
}

/// `fedistill tune`: the search, the report and the TOML.
pub fn run(opts: &TuneOptions) -> anyhow::Result<TuneReport> {
    opts.validate()?;
    if cfg!(debug_assertions) && !opts.quick {
        eprintln!("warning: debug build; use --release for a full tune");
    }
    let started = Instant::now();
    let name = opts.dataset_name().to_string();
    let common = CommonOptions {
        quick: opts.quick,
        data_dir: opts.data_dir.clone(),
        ..CommonOptions::default()
    };
    let ds = load_dataset(&name, &common).with_context(|| format!("--dataset {name}"))?;
    let partition = Partition::Dirichlet { alpha: opts.alpha };
    let k = opts.participants;
    let mut real = config_for(&ds, k, partition, opts.seed, &common)?;
    real.fedavg = false;
    real.centralized = false;
    // The federation's public set, labelled (a catalog split keeps the labels for evaluation): the search
    // sees nothing else. A tabular one as its raw rows, as the public file holds them: each simulated
    // federation's files and card are drafted from its own rows (files::write_split).
    let fs = experiment::split_for(&ds, &real)?;
    let public = fs.raw.map_or(fs.public, |r| r.public);
    let public_rows = public.n;
    let sim = Simulation::new(public, opts.seed);
    let mut base = config_for(&sim.data, k, partition, opts.seed, &common)?;
    base.fedavg = false;
    base.centralized = false;
    let n = opts.config_count();
    let floor = if opts.quick {
        MIN_SIMULATION_ROWS_QUICK
    } else {
        MIN_SIMULATION_ROWS
    };
    let min_budget = (floor as f64 / sim.data.n.max(1) as f64).min(1.0);
    let schedule = Schedule::new(n, opts.eta, min_budget).map_err(|e| anyhow::anyhow!("--configs/--eta: {e}"))?;
    let grid = Progress::auto();
    let inner = if grid.mode() == ProgressMode::Bar {
        grid.child()
    } else {
        Progress::hidden()
    };
    let steps = Steps {
        total: 2 * (schedule.evaluations() + 1) + 3 + if opts.confirm { 2 } else { 0 },
        grid,
        done: Cell::new(0),
    };
    steps.grid.start("tune", steps.total as u64);
    let mut tuner = Tuner {
        sim: &sim,
        base: &base,
        inner,
        holdouts: BTreeMap::new(),
        scores: BTreeMap::new(),
    };

    let teachers = space::teacher_candidates(&base.train, n, opts.seed, opts.quick);
    let teacher = stage(
        "teacher",
        "mean over the simulated participants of their teacher's accuracy on their own holdout (20% of their rows)",
        &schedule,
        teachers,
        &sim,
        &steps,
        |k, rows| tuner.teacher_score(k, rows),
    )?;
    let t_chosen = teacher.candidates[teacher.chosen].clone();
    let t_defaults = teacher.candidates[0].clone();

    let feds = space::federation_candidates(&FederationKnobs::of(&base)?, n, opts.seed, opts.quick);
    let federation = stage(
        "federation",
        "the federated student's accuracy on the simulation's held-out validation rows, with the teachers \
         trained as stage 1 chose",
        &schedule,
        feds,
        &sim,
        &steps,
        |f, rows| tuner.federation_score(&t_chosen, f, rows, opts.seed),
    )?;
    let full = sim.rows_at(1.0);
    let f_defaults = federation.candidates[0].clone();
    let f_chosen = federation.candidates[federation.chosen].clone();
    let t0 = Instant::now();
    let defaults_validation = tuner
        .federation_score(&t_defaults, &f_defaults, full, opts.seed)
        .context("the defaults in the simulation")?;
    steps.step(&format!(
        "baseline: every default, full budget: {:.1}% ({:.1} s)",
        defaults_validation * 100.0,
        t0.elapsed().as_secs_f64()
    ));
    // Tuned only on evidence, twice: the candidate must beat every default at the full budget of the
    // simulation it was picked in, and again on a second simulated federation it was not picked in (the best of
    // several noisy scores is biased upwards; a fresh split is not). A tie keeps the defaults.
    let candidate_validation = federation.chosen_score;
    let tuned_anything = t_chosen != t_defaults || f_chosen != f_defaults;
    let verify_seed = opts.seed.wrapping_add(VERIFY_SEED_OFFSET);
    let verify = if tuned_anything && candidate_validation > defaults_validation {
        let mut both = [0.0; 2];
        for (i, (who, t, f)) in [
            ("defaults", &t_defaults, &f_defaults),
            ("candidate", &t_chosen, &f_chosen),
        ]
        .into_iter()
        .enumerate()
        {
            let t0 = Instant::now();
            both[i] = tuner
                .federation_score(t, f, full, verify_seed)
                .with_context(|| format!("the {who} on the second simulated federation"))?;
            steps.step(&format!(
                "verify: {who} on a second simulated federation (seed {verify_seed}): {:.1}% ({:.1} s)",
                both[i] * 100.0,
                t0.elapsed().as_secs_f64()
            ));
        }
        Some((both[0], both[1]))
    } else {
        steps.skip(2, "verify: skipped, no candidate beat the defaults");
        None
    };
    let (chosen, t_final, f_final) = match verify {
        Some((d, c)) if c > d => (Chosen::Tuned, t_chosen.clone(), f_chosen.clone()),
        _ => (Chosen::Defaults, t_defaults.clone(), f_defaults.clone()),
    };
    let mut tuned = real.clone();
    t_final.apply(&mut tuned.train);
    f_final.apply(&mut tuned);

    // The confirmation is a benchmark of the result, not part of the search: when the real federation cannot
    // run (a tiny dataset under strong skew leaves a participant without rows to train on) the search's result
    // is still written, with the reason in the report.
    let mut confirm_error = None;
    let (mut defaults_test, mut chosen_test) = (None, None);
    if opts.confirm {
        let one = |who: &str, cfg: &ExperimentConfig| -> anyhow::Result<f64> {
            let t0 = Instant::now();
            let a = federated_accuracy(&ds, cfg, &tuner.inner)
                .with_context(|| format!("the {who} on the real federation"))?;
            steps.step(&format!(
                "confirm: {who} on the real federation: test {:.1}% ({:.1} s)",
                a * 100.0,
                t0.elapsed().as_secs_f64()
            ));
            Ok(a)
        };
        let both = one("defaults", &real).and_then(|d| {
            let c = if chosen == Chosen::Defaults {
                steps.step("confirm: chosen = the defaults");
                d
            } else {
                one("chosen", &tuned)?
            };
            Ok((d, c))
        });
        match both {
            Ok((d, c)) => (defaults_test, chosen_test) = (Some(d), Some(c)),
            Err(e) => {
                let why = format!("{e:#}");
                steps.skip(2, &format!("confirm: FAILED: {why}"));
                confirm_error = Some(why);
            }
        }
    }
    steps.grid.finish("tune", "done");
    let comparison = Comparison {
        chosen,
        defaults_validation,
        candidate_validation,
        verify_seed: verify.map(|_| verify_seed),
        verify_defaults: verify.map(|v| v.0),
        verify_candidate: verify.map(|v| v.1),
        gain_points: match (chosen, verify) {
            (Chosen::Tuned, Some((d, c))) => (c - d) * 100.0,
            _ => 0.0,
        },
        defaults_test,
        chosen_test,
        test_gain_points: defaults_test.zip(chosen_test).map(|(d, c)| (c - d) * 100.0),
        confirm_error,
    };

    let mut comments = vec![
        format!("Tuned by `{}`.", opts.command),
        format!(
            "Simulated federation: K={k}, Dirichlet {}, on the {public_rows} public rows of {name} (seed {}).",
            opts.alpha, opts.seed
        ),
        match (chosen, verify) {
            (Chosen::Tuned, Some((d, c))) => format!(
                "Student validation accuracy {:.1}% against {:.1}% with the defaults ({:+.1} points) on a second \
                 simulated federation; {:.1}% against {:.1}% in the search.",
                c * 100.0,
                d * 100.0,
                comparison.gain_points,
                candidate_validation * 100.0,
                defaults_validation * 100.0,
            ),
            _ => format!(
                "No candidate beat the defaults ({:.1}% validation accuracy) in the search and on a second \
                 simulated federation: these are the defaults.",
                defaults_validation * 100.0
            ),
        },
    ];
    if let (Some(d), Some(c)) = (defaults_test, chosen_test) {
        comments.push(format!(
            "On the real federation's test set: {:.1}% against {:.1}% ({:+.1} points).",
            c * 100.0,
            d * 100.0,
            (c - d) * 100.0
        ));
    }
    let config_toml = config_file::tuned_toml(&tuned, public_rows, &comments)?;
    config_file::check(&config_toml, &tuned, &name, k)?;
    if let Some(out) = &opts.out {
        std::fs::write(out, &config_toml).with_context(|| format!("writing --out {}", out.display()))?;
    }
    let rep = TuneReport {
        command: opts.command.clone(),
        dataset: name,
        participants: k,
        alpha: opts.alpha,
        seed: opts.seed,
        quick: opts.quick,
        eta: opts.eta,
        public_rows,
        teacher,
        federation,
        comparison,
        config_toml,
        out: opts.out.clone(),
        seconds: started.elapsed().as_secs_f64(),
    };
    let md = rep.to_markdown();
    steps.grid.suspend(|| {
        print!("{md}");
        println!("\n```toml\n{}```", rep.config_toml);
    });
    if let Some(dir) = &opts.report {
        let mut md_full = md.clone();
        for (stem, title, series) in [
            (
                "tune-teacher",
                "Teacher knobs: own-holdout accuracy per rung",
                rep.teacher.series(),
            ),
            (
                "tune-federation",
                "Federation knobs: student validation accuracy per rung",
                rep.federation.series(),
            ),
        ] {
            if series.is_empty() {
                continue;
            }
            report::write_chart(
                dir,
                stem,
                &Chart {
                    title,
                    x_label: "public rows in the simulation (log)",
                    y_label: "score (%)",
                    series: &series,
                    log_x: true,
                },
            )?;
            md_full.push_str(&format!("\n![{title}]({stem}.png)\n"));
        }
        report::write_report(dir, "tune", &rep, &md_full)?;
        eprintln!("report written to {}", dir.display());
    }
    if let Some(out) = &opts.out {
        eprintln!("tuned configuration written to {}", out.display());
    }
    Ok(rep)
}
