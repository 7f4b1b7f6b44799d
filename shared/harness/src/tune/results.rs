//! The report of `fedistill tune`: what `tune.json` holds (every trial of both brackets, the choice, the
//! comparison with the defaults), `tune.md` (the tables of every configuration tried and the result) and the
//! per-stage plot series.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::halving::Schedule;
use super::space::{confidence_name, schedule_name, FederationKnobs, TeacherKnobs};
use super::VERIFY_SEED_OFFSET;
use crate::report::{self, Series};

/// One evaluation of the report: a candidate on a rung.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialRow {
    /// Candidate index (0 = the defaults).
    pub config: usize,
    /// Rung, 0-based.
    pub rung: usize,
    /// Share of the public set the simulation got.
    pub budget: f64,
    /// Public rows the simulation got.
    pub rows: usize,
    /// The score in [0, 1]; null when it failed.
    pub score: Option<f64>,
    /// Why it failed.
    pub error: Option<String>,
    /// Whether it went on to the next rung.
    pub promoted: bool,
    /// Seconds it took (0 when an earlier evaluation was reused).
    pub seconds: f64,
}

/// One stage of the search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stage<K> {
    /// What the score measures.
    pub score: String,
    /// The bracket's rungs.
    pub schedule: Schedule,
    /// Every candidate, the defaults first.
    pub candidates: Vec<K>,
    /// Every evaluation, rung by rung.
    pub trials: Vec<TrialRow>,
    /// The best candidate of the last rung (null: every evaluation of it failed).
    pub best: Option<usize>,
    /// Its score.
    pub best_score: Option<f64>,
    /// The defaults at the full budget.
    pub defaults_score: f64,
    /// The candidate the next step uses: `best` when it beats the defaults at the full budget, else 0.
    pub chosen: usize,
    /// Its score at the full budget.
    pub chosen_score: f64,
}

/// What the run settled on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Chosen {
    /// A tuned configuration beat the defaults in the simulation.
    Tuned,
    /// Nothing beat the defaults: they are written.
    Defaults,
}

/// The defaults against the chosen configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// Which configuration was chosen.
    pub chosen: Chosen,
    /// The defaults' student validation accuracy in the simulation the search ran on (full budget).
    pub defaults_validation: f64,
    /// The candidate's (the chosen teacher and federation knobs) in the same simulation: the search picked it
    /// for this figure, so it is biased upwards (the best of several noisy scores).
    pub candidate_validation: f64,
    /// Seed of the second simulated federation (the same public rows split anew, other model seeds) that
    /// re-scores the candidate and the defaults; null when the candidate did not beat the defaults.
    pub verify_seed: Option<u64>,
    /// The defaults' student validation accuracy there.
    pub verify_defaults: Option<f64>,
    /// The candidate's.
    pub verify_candidate: Option<f64>,
    /// The written configuration's gain over the defaults in points on the second simulation (0 when the
    /// defaults are written): the search's estimate of the gain, free of its own selection.
    pub gain_points: f64,
    /// The defaults' student test accuracy on the real federation (`--confirm`).
    pub defaults_test: Option<f64>,
    /// The chosen configuration's.
    pub chosen_test: Option<f64>,
    /// `chosen - defaults` in points on the real test set.
    pub test_gain_points: Option<f64>,
    /// Why the real federation could not run (`--confirm`); the search's result is written all the same.
    pub confirm_error: Option<String>,
}

/// The report of `fedistill tune` (tune.json).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TuneReport {
    /// The command line.
    pub command: String,
    /// Catalog dataset.
    pub dataset: String,
    /// K.
    pub participants: usize,
    /// Dirichlet alpha.
    pub alpha: f64,
    /// Seed.
    pub seed: u64,
    /// `--quick`.
    pub quick: bool,
    /// Halving factor.
    pub eta: usize,
    /// Rows of the public set the simulation is made of.
    pub public_rows: usize,
    /// Stage 1: the teacher's `[train]` knobs.
    pub teacher: Stage<TeacherKnobs>,
    /// Stage 2: the federation's knobs.
    pub federation: Stage<FederationKnobs>,
    /// Defaults against the chosen configuration.
    pub comparison: Comparison,
    /// The TOML written to `out` (and printed).
    pub config_toml: String,
    /// Where it was written.
    pub out: Option<PathBuf>,
    /// Seconds of the whole run.
    pub seconds: f64,
}

/// A budget share as `1/3` (or `1`).
pub(super) fn budget_name(b: f64) -> String {
    if b >= 1.0 {
        "1".into()
    } else {
        format!("1/{}", (1.0 / b).round())
    }
}

fn pct(s: Option<f64>) -> String {
    s.map(|s| format!("{:.1}", s * 100.0)).unwrap_or_else(|| "-".into())
}

impl<K> Stage<K> {
    /// One line per candidate that has a score: (rows, score %) over its rungs.
    pub(super) fn series(&self) -> Vec<Series> {
        let mut by: BTreeMap<usize, Vec<(f64, f64)>> = BTreeMap::new();
        for t in &self.trials {
            if let Some(s) = t.score {
                by.entry(t.config).or_default().push((t.rows as f64, s * 100.0));
            }
        }
        by.into_iter()
            .map(|(c, points)| Series {
                name: if c == 0 { "#0 defaults".into() } else { format!("#{c}") },
                points,
            })
            .collect()
    }

    /// The trials as table rows: `knobs(candidate)` gives the knob cells.
    fn rows(&self, knobs: impl Fn(&K) -> Vec<String>) -> Vec<Vec<String>> {
        let last = self.schedule.rungs.len().saturating_sub(1);
        self.trials
            .iter()
            .map(|t| {
                let mut row = vec![if t.config == 0 {
                    "#0 defaults".to_string()
                } else {
                    format!("#{}", t.config)
                }];
                row.extend(knobs(&self.candidates[t.config]));
                row.push(t.rung.to_string());
                row.push(budget_name(t.budget));
                row.push(t.rows.to_string());
                row.push(pct(t.score));
                row.push(match (&t.error, t.promoted) {
                    (Some(e), _) => format!("failed: {e}"),
                    (None, true) => "promoted".into(),
                    (None, false) if t.rung == last && self.best == Some(t.config) => "best".into(),
                    _ => String::new(),
                });
                row
            })
            .collect()
    }
}

impl TuneReport {
    /// tune.md: the settings, both stages' tables and the comparison.
    pub fn to_markdown(&self) -> String {
        let mut md = format!(
            "Command: `{}`. Search on the {} public rows of {} only: a simulated federation of K={} \
             (Dirichlet {}, seed {}), successive halving with eta {} over {} candidates per stage (candidate #0 \
             is the defaults), budget = share of the public set; scores in %.\n\n",
            self.command,
            self.public_rows,
            self.dataset,
            self.participants,
            self.alpha,
            self.seed,
            self.eta,
            self.teacher.candidates.len()
        );
        let tail = ["rung", "budget", "rows", "score", "note"];
        md.push_str(&format!(
            "### Teacher knobs (`[train]`)\n\nScore: {}.\n\n",
            self.teacher.score
        ));
        let mut h = vec!["config", "lr", "weight_decay", "epochs"];
        h.extend(tail);
        md.push_str(&report::markdown_table(
            &h,
            &self
                .teacher
                .rows(|k| vec![format!("{}", k.lr), format!("{}", k.weight_decay), k.epochs.to_string()]),
        ));
        md.push_str(&format!(
            "\nDefaults at the full budget: {:.1}; chosen: #{}.\n\n",
            self.teacher.defaults_score * 100.0,
            self.teacher.chosen
        ));
        md.push_str(&format!(
            "### Federation knobs\n\nScore: {}.\n\n",
            self.federation.score
        ));
        let mut h = vec![
            "config",
            "temperature",
            "rounds",
            "width",
            "schedule",
            "confidence",
            "distill lr",
            "refresh",
            "refresh w_kd",
        ];
        h.extend(tail);
        md.push_str(&report::markdown_table(
            &h,
            &self.federation.rows(|k| {
                vec![
                    format!("{:.1}", k.temperature),
                    k.rounds.to_string(),
                    k.width.to_string(),
                    schedule_name(&k.schedule),
                    confidence_name(k.confidence).to_string(),
                    format!("{}", k.distill_lr),
                    k.refresh_epochs.to_string(),
                    format!("{}", k.refresh_w_kd),
                ]
            }),
        ));
        let c = &self.comparison;
        md.push_str(&format!(
            "\n### Result: {}\n\n",
            match c.chosen {
                Chosen::Tuned => "tuned",
                Chosen::Defaults => "the defaults are kept (no candidate beat them in both simulations)",
            }
        ));
        let gain = |d: Option<f64>, c: Option<f64>| {
            d.zip(c)
                .map(|(d, c)| format!("{:+.1}", (c - d) * 100.0))
                .unwrap_or_else(|| "-".into())
        };
        let written = match c.chosen {
            Chosen::Tuned => "tuned",
            Chosen::Defaults => "defaults",
        };
        md.push_str(&report::markdown_table(
            &["", "defaults", "candidate", "gain (points)"],
            &[
                vec![
                    format!("search simulation (seed {}): student validation accuracy", self.seed),
                    pct(Some(c.defaults_validation)),
                    pct(Some(c.candidate_validation)),
                    gain(Some(c.defaults_validation), Some(c.candidate_validation)),
                ],
                vec![
                    format!(
                        "second simulation (seed {}): student validation accuracy",
                        self.seed.wrapping_add(VERIFY_SEED_OFFSET)
                    ),
                    pct(c.verify_defaults),
                    pct(c.verify_candidate),
                    gain(c.verify_defaults, c.verify_candidate),
                ],
                vec![
                    format!("real federation: student test accuracy (written: {written})"),
                    pct(c.defaults_test),
                    pct(c.chosen_test),
                    gain(c.defaults_test, c.chosen_test),
                ],
            ],
        ));
        if let Some(e) = &c.confirm_error {
            md.push_str(&format!("\nThe real federation could not run: {e}.\n"));
        }
        md.push_str(&format!("\n{:.0} s in all.\n", self.seconds));
        md
    }
}
