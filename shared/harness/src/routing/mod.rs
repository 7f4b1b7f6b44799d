//! `fedistill bench routing`: forgetting on a two-task sequence. Students learn task 1, then task 2, each by
//! distillation from that task's teacher; the suite measures task-1 accuracy before and after task 2 for plain
//! fine-tuning, replay alone (both the project's `Distiller` on an MLP), and dynamic routing (a
//! mixture-of-experts student that adds an expert for task 2: with replay, with replay and a gate taught each
//! task's expert, and without replay), at a comparable parameter budget, over seeds. Writes routing.json, routing.md and one grouped bar chart per sequence
//! ([`results`]: the report's types and rendering).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{ensure, Context};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use fedistill_shared::data::{load, Dataset, LoadOptions};
use fedistill_shared::ml::metrics::accuracy;
use fedistill_shared::ml::model::argmax;
use fedistill_shared::ml::moe::{ContinualMoe, MoeConfig, MoeDistillConfig, MoeStudent};
use fedistill_shared::ml::{
    train_teacher, DistillConfig, Distiller, InputNorm, Model, ModelConfig, Progress, SoftTargets, TemperatureSchedule,
    TrainConfig,
};

use crate::report;

use results::{markdown, plot, summarize};
pub use results::{MethodSummary, RoutingReport, Run, SequenceReport, Stat};

/// Hidden width of the MLP students; the MoE's experts share the same number of hidden units.
const MLP_HIDDEN: usize = 128;
/// Hidden width of each task's teacher (MLP 784-256-10).
const TEACHER_HIDDEN: usize = 256;
/// KD temperature of every student (constant, so the methods differ only in what they are).
const TEMPERATURE: f32 = 2.0;
/// Weight of the Switch load-balancing loss in the MoE students.
const BALANCE_WEIGHT: f32 = 0.01;
/// Weight of the routing term of `routing-supervised` (the gate's cross-entropy against each task's experts).
const ROUTE_WEIGHT: f32 = 1.0;
/// Students' batch size, learning rate (constant) and weight decay.
const BATCH: usize = 128;
const LR: f64 = 2e-3;
const WEIGHT_DECAY: f64 = 1e-4;
/// Share of each class held out for testing (MNIST-10k; Fashion-MNIST's test rows come from its test file).
const TEST_SHARE: f64 = 0.2;
/// `--quick`: samples per task for training and testing, student epochs per task, teacher epochs.
const QUICK_TRAIN: usize = 600;
const QUICK_TEST: usize = 300;
const QUICK_EPOCHS: usize = 3;
const QUICK_TEACHER_EPOCHS: usize = 4;
/// Full run: student epochs per task, teacher epochs (early stopping may end them sooner), replay capacity.
const EPOCHS: usize = 10;
const TEACHER_EPOCHS: usize = 20;
const REPLAY: usize = 1000;
const QUICK_REPLAY: usize = 150;

/// Options of `fedistill bench routing`; `None` or an empty list takes the suite's default.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RoutingOptions {
    /// One seed, split-mnist only, small subsets, few epochs (CI).
    #[arg(long)]
    pub quick: bool,
    /// Seeds (default 1,2,3; with --quick 1).
    #[arg(long, value_delimiter = ',')]
    pub seeds: Vec<u64>,
    /// Two-task sequences: split-mnist (digits 0-4 then 5-9), mnist-fashion (MNIST-10k then Fashion-MNIST)
    /// (default both; with --quick split-mnist).
    #[arg(long, value_delimiter = ',')]
    pub sequences: Vec<String>,
    /// Experts each sample is routed to in the routing students (1 or 2).
    #[arg(long, default_value_t = 1)]
    pub top_k: usize,
    /// Replay reservoir of task 1's (input, teacher logits) pairs, in samples (default 1000; with --quick 150).
    #[arg(long)]
    pub replay: Option<usize>,
    /// Student distillation epochs per task (default 10; with --quick 3).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Directory of Fashion-MNIST's files (default: the Debian package's directory).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Write routing.json, routing.md and routing-SEQUENCE.png/.svg (grouped bars per method) to this directory.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// The command line recorded in the report (not a flag: the dispatch sets it).
    #[arg(skip)]
    pub command: String,
}

/// A two-task sequence (stable names: they are the flag values and the report's `sequence` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sequence {
    /// Class-incremental: MNIST-10k digits 0-4, then digits 5-9 (one 10-way head, no task id at test).
    SplitMnist,
    /// Domain-incremental: MNIST-10k, then Fashion-MNIST (same 784 inputs, same 10 outputs, new meaning).
    MnistFashion,
}

impl Sequence {
    const ALL: [Sequence; 2] = [Sequence::SplitMnist, Sequence::MnistFashion];

    /// The flag value and report name.
    pub fn name(self) -> &'static str {
        match self {
            Sequence::SplitMnist => "split-mnist",
            Sequence::MnistFashion => "mnist-fashion",
        }
    }

    fn tasks(self) -> [&'static str; 2] {
        match self {
            Sequence::SplitMnist => ["MNIST-10k digits 0-4", "MNIST-10k digits 5-9"],
            Sequence::MnistFashion => ["MNIST-10k", "Fashion-MNIST"],
        }
    }

    fn parse(s: &str) -> anyhow::Result<Sequence> {
        Sequence::ALL.into_iter().find(|q| q.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Sequence::ALL.iter().map(|q| q.name()).collect();
            anyhow::anyhow!("unknown sequence {s:?}: expected one of {}", names.join(", "))
        })
    }
}

/// A way of learning the two tasks (stable names, as in the report's `method` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// MLP student distilled on task 1, then on task 2 alone.
    Finetune,
    /// The same MLP with a replay reservoir of task 1's (input, teacher logits) pairs during task 2.
    Replay,
    /// MoE student: an expert added for task 2 (old ones frozen), a gate learnt from the KD and balancing
    /// losses, with the replay reservoir.
    Routing,
    /// The same, with the gate also taught which expert belongs to which task (the routing term, weight
    /// `ROUTE_WEIGHT`; replayed samples belong to task 1). No task id is given at test time.
    RoutingSupervised,
    /// The same MoE without replay (ablation: what the gate does with no task-1 samples).
    RoutingNoReplay,
}

impl Method {
    const ALL: [Method; 5] = [
        Method::Finetune,
        Method::Replay,
        Method::Routing,
        Method::RoutingSupervised,
        Method::RoutingNoReplay,
    ];

    /// The report name.
    pub fn name(self) -> &'static str {
        match self {
            Method::Finetune => "finetune",
            Method::Replay => "replay",
            Method::Routing => "routing",
            Method::RoutingSupervised => "routing-supervised",
            Method::RoutingNoReplay => "routing-no-replay",
        }
    }

    fn replays(self) -> bool {
        matches!(self, Method::Replay | Method::Routing | Method::RoutingSupervised)
    }

    fn routes(self) -> bool {
        matches!(
            self,
            Method::Routing | Method::RoutingSupervised | Method::RoutingNoReplay
        )
    }
}

/// The validated settings of one invocation.
#[derive(Debug, Clone, PartialEq)]
struct Plan {
    sequences: Vec<Sequence>,
    seeds: Vec<u64>,
    top_k: usize,
    replay: usize,
    epochs: usize,
    teacher_epochs: usize,
    /// Caps on each task's training and test samples (quick), else every sample.
    caps: Option<(usize, usize)>,
}

impl Plan {
    /// Experts of a routing student before and after it adds task 2's.
    fn experts(&self) -> (usize, usize) {
        (self.top_k, self.top_k + 1)
    }

    /// Each expert's hidden width: the MLP's hidden units shared among the experts it ends with.
    fn expert_hidden(&self) -> usize {
        MLP_HIDDEN / self.experts().1
    }
}

/// Checks the options and fills in the defaults; every bad value is named before anything is loaded.
fn plan(o: &RoutingOptions) -> anyhow::Result<Plan> {
    ensure!((1..=2).contains(&o.top_k), "--top-k must be 1 or 2, got {}", o.top_k);
    let seeds = match (o.seeds.is_empty(), o.quick) {
        (false, _) => o.seeds.clone(),
        (true, true) => vec![1],
        (true, false) => vec![1, 2, 3],
    };
    for (i, s) in seeds.iter().enumerate() {
        ensure!(!seeds[..i].contains(s), "--seeds: seed {s} is given twice");
    }
    let sequences = match (o.sequences.is_empty(), o.quick) {
        (false, _) => o
            .sequences
            .iter()
            .map(|s| Sequence::parse(s.trim()))
            .collect::<anyhow::Result<Vec<_>>>()
            .context("--sequences")?,
        (true, true) => vec![Sequence::SplitMnist],
        (true, false) => Sequence::ALL.to_vec(),
    };
    for (i, s) in sequences.iter().enumerate() {
        ensure!(!sequences[..i].contains(s), "--sequences: {} is given twice", s.name());
    }
    let replay = o.replay.unwrap_or(if o.quick { QUICK_REPLAY } else { REPLAY });
    ensure!(
        (1..=1_000_000).contains(&replay),
        "--replay must be in 1..=1000000 samples (the replay and routing methods need a reservoir), got {replay}"
    );
    let epochs = o.epochs.unwrap_or(if o.quick { QUICK_EPOCHS } else { EPOCHS });
    ensure!(
        (1..=1000).contains(&epochs),
        "--epochs must be in 1..=1000, got {epochs}"
    );
    Ok(Plan {
        sequences,
        seeds,
        top_k: o.top_k,
        replay,
        epochs,
        teacher_epochs: if o.quick { QUICK_TEACHER_EPOCHS } else { TEACHER_EPOCHS },
        caps: o.quick.then_some((QUICK_TRAIN, QUICK_TEST)),
    })
}

/// One task's samples.
struct Task {
    train: Dataset,
    test: Dataset,
}

/// Seeded per-class split of `idx` (indices into `ds`): the first `share` of each class (rounded) is the
/// test part. Per class, so both parts keep the class mix and their sizes do not depend on the seed.
fn stratified(ds: &Dataset, idx: &[usize], share: f64, rng: &mut ChaCha8Rng) -> (Vec<usize>, Vec<usize>) {
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for c in 0..ds.num_classes as u32 {
        let mut of_class: Vec<usize> = idx.iter().copied().filter(|&i| ds.labels[i] == c).collect();
        of_class.shuffle(rng);
        let k = (of_class.len() as f64 * share).round() as usize;
        test.extend_from_slice(&of_class[..k]);
        train.extend_from_slice(&of_class[k..]);
    }
    train.shuffle(rng);
    test.shuffle(rng);
    (train, test)
}

/// The two tasks of a sequence for one seed, capped for `--quick`.
fn tasks(
    seq: Sequence,
    seed: u64,
    plan: &Plan,
    mnist: &Dataset,
    fashion: Option<&Dataset>,
) -> anyhow::Result<[Task; 2]> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0005_EC0E);
    let cap = |mut v: Vec<usize>, n: Option<usize>| {
        if let Some(n) = n {
            v.truncate(n);
        }
        v
    };
    let (tr_cap, te_cap) = (plan.caps.map(|c| c.0), plan.caps.map(|c| c.1));
    let all: Vec<usize> = (0..mnist.n).collect();
    let (train, test) = stratified(mnist, &all, TEST_SHARE, &mut rng);
    let task = |ds: &Dataset, train: Vec<usize>, test: Vec<usize>| Task {
        train: ds.subset(&cap(train, tr_cap)),
        test: ds.subset(&cap(test, te_cap)),
    };
    Ok(match seq {
        Sequence::SplitMnist => {
            let part = |v: &[usize], low: bool| -> Vec<usize> {
                v.iter().copied().filter(|&i| (mnist.labels[i] < 5) == low).collect()
            };
            [
                task(mnist, part(&train, true), part(&test, true)),
                task(mnist, part(&train, false), part(&test, false)),
            ]
        }
        Sequence::MnistFashion => {
            let fashion = fashion.context("fashion-mnist was not loaded")?;
            // Fashion-MNIST as loaded: 60,000 training rows, then the 10,000 of the official test set. Task 2
            // gets as many rows of each as task 1 has, drawn per class from the matching part.
            ensure!(
                fashion.n == 70_000,
                "fashion-mnist has {} rows, expected 70000",
                fashion.n
            );
            let train_part: Vec<usize> = (0..60_000).collect();
            let test_part: Vec<usize> = (60_000..70_000).collect();
            let f_train = stratified(fashion, &train_part, train.len() as f64 / 60_000.0, &mut rng).1;
            let f_test = stratified(fashion, &test_part, test.len() as f64 / 10_000.0, &mut rng).1;
            [task(mnist, train, test), task(fashion, f_train, f_test)]
        }
    })
}

/// Fraction of rows whose argmax is the label.
fn accuracy_of(logits: &[f32], ds: &Dataset) -> f64 {
    let pred: Vec<u32> = logits.chunks_exact(ds.num_classes).map(|r| argmax(r) as u32).collect();
    accuracy(&ds.labels, &pred)
}

/// A student the suite trains, behind one interface so every method runs the same sequence of steps.
enum Student {
    Mlp(Box<Distiller>),
    Moe(Box<ContinualMoe>),
}

impl Student {
    fn logits(&self, ds: &Dataset) -> anyhow::Result<Vec<f32>> {
        Ok(match self {
            Student::Mlp(d) => d.student().logits(&ds.features, ds.n)?,
            Student::Moe(m) => m.student().logits(&ds.features, ds.n)?,
        })
    }

    fn learn(&mut self, task: usize, ds: &Dataset, targets: &SoftTargets, progress: &Progress) -> anyhow::Result<()> {
        match self {
            Student::Mlp(d) => {
                d.distill_round_with_progress(&ds.features, ds.n, targets, None, task, 2, progress)?;
            }
            Student::Moe(m) => {
                if task > 0 {
                    m.add_expert()?;
                }
                m.learn_task(&ds.features, ds.n, targets, progress)?;
            }
        }
        Ok(())
    }
}

/// Runs one method through the two tasks; returns its run record and final parameter count.
fn run_method(
    method: Method,
    seed: u64,
    plan: &Plan,
    tasks: &[Task; 2],
    targets: &[SoftTargets; 2],
    progress: &Progress,
) -> anyhow::Result<(Run, usize)> {
    let start = Instant::now();
    let replay = if method.replays() { plan.replay } else { 0 };
    let (in_dim, classes) = (tasks[0].train.dim, tasks[0].train.num_classes);
    let mut student = match method {
        Method::Finetune | Method::Replay => {
            let model = Model::new(
                &ModelConfig::Mlp {
                    hidden: vec![MLP_HIDDEN],
                },
                in_dim,
                classes,
                seed,
            )?;
            let cfg = DistillConfig {
                epochs_per_round: plan.epochs,
                batch_size: BATCH,
                lr: LR,
                lr_final: 1.0,
                weight_decay: WEIGHT_DECAY,
                schedule: TemperatureSchedule::Constant { t: TEMPERATURE },
                w_kd: 1.0,
                w_ce: 0.0,
                replay_capacity: replay,
                seed,
                input_norm: InputNorm::Global,
                ..DistillConfig::default()
            };
            cfg.validate()?;
            Student::Mlp(Box::new(Distiller::new(model, cfg)))
        }
        Method::Routing | Method::RoutingSupervised | Method::RoutingNoReplay => {
            let cfg = MoeConfig {
                experts: plan.experts().0,
                hidden: plan.expert_hidden(),
                top_k: plan.top_k,
                balance_weight: BALANCE_WEIGHT,
                freeze_old: true,
            };
            let dc = MoeDistillConfig {
                epochs: plan.epochs,
                batch_size: BATCH,
                lr: LR,
                weight_decay: WEIGHT_DECAY,
                temperature: TEMPERATURE,
                replay_capacity: replay,
                route_weight: if method == Method::RoutingSupervised {
                    ROUTE_WEIGHT
                } else {
                    0.0
                },
                seed,
                input_norm: InputNorm::Global,
            };
            Student::Moe(Box::new(ContinualMoe::new(
                MoeStudent::new(&cfg, in_dim, classes, seed)?,
                dc,
            )?))
        }
    };
    student.learn(0, &tasks[0].train, &targets[0], progress)?;
    let task1_before = accuracy_of(&student.logits(&tasks[0].test)?, &tasks[0].test);
    student.learn(1, &tasks[1].train, &targets[1], progress)?;
    let task1_after = accuracy_of(&student.logits(&tasks[0].test)?, &tasks[0].test);
    let task2_after = accuracy_of(&student.logits(&tasks[1].test)?, &tasks[1].test);
    let (routed, params) = match &student {
        Student::Mlp(d) => (None, d.student().params()),
        Student::Moe(m) => {
            let s = m.student();
            let old = plan.experts().0;
            let share = |ds: &Dataset, new: bool| -> anyhow::Result<f64> {
                let a = s.assignments(&ds.features, ds.n)?;
                Ok(a.iter().filter(|&&e| (e >= old) == new).count() as f64 / ds.n.max(1) as f64)
            };
            (
                Some((share(&tasks[0].test, false)?, share(&tasks[1].test, true)?)),
                s.params(),
            )
        }
    };
    let run = Run {
        seed,
        task1_before,
        task1_after,
        task2_after,
        forgetting: task1_before - task1_after,
        task1_to_old_experts: routed.map(|r| r.0),
        task2_to_new_expert: routed.map(|r| r.1),
        seconds: start.elapsed().as_secs_f64(),
    };
    Ok((run, params))
}

/// Runs the suite, prints one table per sequence and writes the report when asked.
pub fn run(o: &RoutingOptions) -> anyhow::Result<()> {
    let plan = plan(o)?;
    let started = Instant::now();
    if cfg!(debug_assertions) && !o.quick {
        eprintln!("warning: debug build; the full suite is meant for --release");
    }
    // Every dataset is loaded before anything trains, so a missing one fails at once.
    let mnist = load("mnist-10k", &LoadOptions::default()).context("loading mnist-10k")?;
    let fashion = if plan.sequences.contains(&Sequence::MnistFashion) {
        let opts = LoadOptions {
            data_dir: o.data_dir.clone(),
        };
        Some(load("fashion-mnist", &opts).context("loading fashion-mnist for the mnist-fashion sequence")?)
    } else {
        None
    };
    let grid = Progress::auto();
    let inner = grid.child();
    let total = (plan.sequences.len() * plan.seeds.len()) as u64;
    grid.start("routing", total);
    let mut done = 0;
    let mut sequences = Vec::new();
    for &seq in &plan.sequences {
        let mut runs: Vec<Vec<(Run, usize)>> = vec![Vec::new(); Method::ALL.len()];
        let mut teacher_acc: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        let mut sizes = ([0; 2], [0; 2]);
        for &seed in &plan.seeds {
            let tasks = tasks(seq, seed, &plan, &mnist, fashion.as_ref())?;
            let mut targets = Vec::new();
            for (t, task) in tasks.iter().enumerate() {
                let tc = TrainConfig {
                    epochs: plan.teacher_epochs,
                    batch_size: 128,
                    lr: 1e-3,
                    patience: 5,
                    seed: seed.wrapping_mul(31).wrapping_add(t as u64),
                    ..TrainConfig::default()
                };
                let teacher = train_teacher(
                    &ModelConfig::Mlp {
                        hidden: vec![TEACHER_HIDDEN],
                    },
                    &task.train,
                    &tc,
                    &inner,
                )
                .with_context(|| format!("training the teacher of {} task {}", seq.name(), t + 1))?;
                teacher_acc[t].push(accuracy_of(
                    &teacher.logits(&task.test.features, task.test.n)?,
                    &task.test,
                ));
                targets.push(SoftTargets::from_teacher(&teacher, &task.train.features, task.train.n)?);
                sizes.0[t] = task.train.n;
                sizes.1[t] = task.test.n;
            }
            let targets: [SoftTargets; 2] = targets
                .try_into()
                .map_err(|_| anyhow::anyhow!("expected the soft labels of two tasks"))?;
            for (m, &method) in Method::ALL.iter().enumerate() {
                let r = run_method(method, seed, &plan, &tasks, &targets, &inner)
                    .with_context(|| format!("{} seed {seed}: {}", seq.name(), method.name()))?;
                runs[m].push(r);
            }
            done += 1;
            grid.advance("routing", done, total, &format!("{} seed {seed}", seq.name()));
        }
        let methods = Method::ALL
            .iter()
            .zip(runs)
            .map(|(&m, r)| {
                let params = r.last().map_or(0, |x| x.1);
                summarize(m, &plan, r.into_iter().map(|x| x.0).collect(), params)
            })
            .collect();
        sequences.push(SequenceReport {
            sequence: seq,
            tasks: seq.tasks().map(String::from),
            train_samples: sizes.0,
            test_samples: sizes.1,
            teacher_accuracy: [Stat::of(&teacher_acc[0]), Stat::of(&teacher_acc[1])],
            methods,
        });
    }
    grid.finish("routing", "done");
    let (experts_before, experts_after) = plan.experts();
    let report = RoutingReport {
        suite: "routing".into(),
        command: o.command.clone(),
        quick: o.quick,
        seeds: plan.seeds.clone(),
        top_k: plan.top_k,
        replay_capacity: plan.replay,
        epochs_per_task: plan.epochs,
        teacher_epochs: plan.teacher_epochs,
        temperature: TEMPERATURE,
        balance_weight: BALANCE_WEIGHT,
        route_weight: ROUTE_WEIGHT,
        mlp_hidden: MLP_HIDDEN,
        expert_hidden: plan.expert_hidden(),
        experts_before,
        experts_after,
        sequences,
        seconds: started.elapsed().as_secs_f64(),
    };
    let md = markdown(&report);
    grid.suspend(|| println!("{md}"));
    if let Some(dir) = &o.report {
        report::write_report(dir, "routing", &report, &md)?;
        for s in &report.sequences {
            plot(dir, s, report.quick)?;
        }
        eprintln!("report written to {}", dir.display());
    }
    Ok(())
}

mod results;
#[cfg(test)]
mod tests;
