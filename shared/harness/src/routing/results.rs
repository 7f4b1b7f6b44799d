//! The report of `fedistill bench routing`: its JSON types (routing.json), the Markdown table per sequence and
//! the grouped bar chart per sequence.

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::{Method, Plan, Sequence, BATCH, LR, TEACHER_HIDDEN};
use crate::report::{self as writer, BarChart};

/// Mean and sample standard deviation (0 for one value).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    pub mean: f64,
    pub sd: f64,
}

impl Stat {
    pub(super) fn of(v: &[f64]) -> Stat {
        let n = v.len().max(1) as f64;
        let mean = v.iter().sum::<f64>() / n;
        let sd = if v.len() > 1 {
            (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
        } else {
            0.0
        };
        Stat { mean, sd }
    }

    /// Percent with the sd when there is more than one seed.
    pub(super) fn pct(&self, seeds: usize) -> String {
        if seeds > 1 {
            format!("{:.1} ± {:.1}", self.mean * 100.0, self.sd * 100.0)
        } else {
            format!("{:.1}", self.mean * 100.0)
        }
    }
}

/// One method on one seed. Accuracies are fractions in [0, 1]; `forgetting` = before - after.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    pub seed: u64,
    /// Task-1 test accuracy after learning task 1.
    pub task1_before: f64,
    /// Task-1 test accuracy after learning task 2.
    pub task1_after: f64,
    /// Task-2 test accuracy after learning task 2.
    pub task2_after: f64,
    /// `task1_before - task1_after`.
    pub forgetting: f64,
    /// Routing students: share of task-1 test samples whose first-choice expert is one of task 1's.
    pub task1_to_old_experts: Option<f64>,
    /// Routing students: share of task-2 test samples whose first-choice expert is the one added for it.
    pub task2_to_new_expert: Option<f64>,
    /// Wall-clock seconds of both tasks' distillation and the evaluations.
    pub seconds: f64,
}

/// One method over the seeds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MethodSummary {
    pub method: Method,
    /// Trainable parameters at the end (a routing student: gate and every expert, frozen ones included).
    pub params: usize,
    /// Replay reservoir capacity (0 = none).
    pub replay_capacity: usize,
    /// Routing students: experts after task 2.
    pub experts: Option<usize>,
    pub task1_before: Stat,
    pub task1_after: Stat,
    pub task2_after: Stat,
    pub forgetting: Stat,
    pub task1_to_old_experts: Option<Stat>,
    pub task2_to_new_expert: Option<Stat>,
    pub runs: Vec<Run>,
}

/// One sequence over methods and seeds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SequenceReport {
    pub sequence: Sequence,
    /// What task 1 and task 2 are.
    pub tasks: [String; 2],
    /// Training samples of task 1 and task 2 (teacher training and distillation inputs).
    pub train_samples: [usize; 2],
    /// Test samples of task 1 and task 2.
    pub test_samples: [usize; 2],
    /// Each task's teacher on its own test set.
    pub teacher_accuracy: [Stat; 2],
    pub methods: Vec<MethodSummary>,
}

/// The report (routing.json).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoutingReport {
    pub suite: String,
    pub command: String,
    pub quick: bool,
    pub seeds: Vec<u64>,
    pub top_k: usize,
    pub replay_capacity: usize,
    pub epochs_per_task: usize,
    pub teacher_epochs: usize,
    pub temperature: f32,
    pub balance_weight: f32,
    pub route_weight: f32,
    pub mlp_hidden: usize,
    pub expert_hidden: usize,
    pub experts_before: usize,
    pub experts_after: usize,
    pub sequences: Vec<SequenceReport>,
    pub seconds: f64,
}

pub(super) fn summarize(method: Method, plan: &Plan, runs: Vec<Run>, params: usize) -> MethodSummary {
    let stat = |f: fn(&Run) -> f64| Stat::of(&runs.iter().map(f).collect::<Vec<_>>());
    let opt_stat = |f: fn(&Run) -> Option<f64>| -> Option<Stat> {
        let v: Option<Vec<f64>> = runs.iter().map(f).collect();
        v.map(|v| Stat::of(&v))
    };
    let routing = method.routes();
    MethodSummary {
        method,
        params,
        replay_capacity: if method.replays() { plan.replay } else { 0 },
        experts: routing.then_some(plan.experts().1),
        task1_before: stat(|r| r.task1_before),
        task1_after: stat(|r| r.task1_after),
        task2_after: stat(|r| r.task2_after),
        forgetting: stat(|r| r.forgetting),
        task1_to_old_experts: opt_stat(|r| r.task1_to_old_experts),
        task2_to_new_expert: opt_stat(|r| r.task2_to_new_expert),
        runs,
    }
}

fn headers() -> [&'static str; 8] {
    [
        "method",
        "params",
        "task 1 after task 1 %",
        "task 1 after task 2 %",
        "task 2 after task 2 %",
        "forgetting (points)",
        "task 1 to old experts %",
        "task 2 to new expert %",
    ]
}

/// The report's Markdown: settings, then per sequence the teachers and the forgetting table.
pub(super) fn markdown(r: &RoutingReport) -> String {
    let n = r.seeds.len();
    let mut md = format!(
        "Command: `{}`. Seeds {:?}; {} student epochs per task at T = {}, batch {BATCH}, lr {LR}; replay reservoir {} \
         samples; MLP students 784-{}-10; routing students top-{}, {} -> {} experts of 784-{}-10 (old ones frozen), \
         balancing weight {}, routing-supervised's routing weight {}. Accuracies are on each task's held-out test set, 10-way argmax, mean{} over seeds; \
         forgetting = task 1 after task 1 - task 1 after task 2.\n",
        r.command,
        r.seeds,
        r.epochs_per_task,
        r.temperature,
        r.replay_capacity,
        r.mlp_hidden,
        r.top_k,
        r.experts_before,
        r.experts_after,
        r.expert_hidden,
        r.balance_weight,
        r.route_weight,
        if n > 1 { " ± sd" } else { "" },
    );
    for s in &r.sequences {
        md.push_str(&format!(
            "\n### {}: {} then {}\n\n{} / {} training and {} / {} test samples; teachers (MLP 784-{TEACHER_HIDDEN}-10) \
             {}% and {}%.\n\n",
            s.sequence.name(),
            s.tasks[0],
            s.tasks[1],
            s.train_samples[0],
            s.train_samples[1],
            s.test_samples[0],
            s.test_samples[1],
            s.teacher_accuracy[0].pct(n),
            s.teacher_accuracy[1].pct(n),
        ));
        let rows: Vec<Vec<String>> = s
            .methods
            .iter()
            .map(|m| {
                let opt = |v: Option<Stat>| v.map_or(String::new(), |v| v.pct(n));
                let forgetting = if n > 1 {
                    format!("{:.1} ± {:.1}", m.forgetting.mean * 100.0, m.forgetting.sd * 100.0)
                } else {
                    format!("{:.1}", m.forgetting.mean * 100.0)
                };
                vec![
                    m.method.name().to_string(),
                    m.params.to_string(),
                    m.task1_before.pct(n),
                    m.task1_after.pct(n),
                    m.task2_after.pct(n),
                    forgetting,
                    opt(m.task1_to_old_experts),
                    opt(m.task2_to_new_expert),
                ]
            })
            .collect();
        md.push_str(&writer::markdown_table(&headers(), &rows));
        md.push_str(&format!(
            "\n![Accuracy per method, {}](routing-{}.png)\n",
            s.sequence.name(),
            s.sequence.name()
        ));
    }
    md
}

pub(super) fn plot(dir: &std::path::Path, s: &SequenceReport, quick: bool) -> anyhow::Result<()> {
    let categories: Vec<String> = s.methods.iter().map(|m| m.method.name().to_string()).collect();
    let group = |name: &str, f: fn(&MethodSummary) -> f64| {
        (
            name.to_string(),
            s.methods.iter().map(|m| (f(m) * 100.0).max(0.0)).collect::<Vec<f64>>(),
        )
    };
    let groups = [
        group("task 1 after task 1", |m| m.task1_before.mean),
        group("task 1 after task 2", |m| m.task1_after.mean),
        group("task 2 after task 2", |m| m.task2_after.mean),
    ];
    let title = format!(
        "{}: {} then {}{}",
        s.sequence.name(),
        s.tasks[0],
        s.tasks[1],
        if quick { " (--quick)" } else { "" }
    );
    writer::write_bar_chart(
        dir,
        &format!("routing-{}", s.sequence.name()),
        &BarChart {
            title: &title,
            y_label: "test accuracy %",
            categories: &categories,
            groups: &groups,
        },
    )
    .with_context(|| format!("plotting {}", s.sequence.name()))?;
    Ok(())
}
