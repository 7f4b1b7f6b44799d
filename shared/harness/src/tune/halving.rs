//! Successive halving (Jamieson & Talwalkar 2016, the bracket Hyperband repeats): evaluate every candidate on
//! a small budget, keep the best `1/eta`, multiply the budget by `eta`, until one rung at the full budget is
//! left. Pure and generic: the candidates are indices, the evaluation is a closure, so the schedule and the
//! promotion rule are tested without training anything (`fedistill tune` plugs the simulated federation in).
//!
//! Written here rather than taken from a crate: the Rust crates that offer it (scirs2-optimize's
//! `multi_fidelity`, hyperopt-rs) search continuous boxes through their own objective signature and bring a
//! numerical stack with them; this is sixty lines over the candidates `fedistill tune` samples itself.

use serde::{Deserialize, Serialize};

/// One rung: how many candidates are evaluated on it, and at which share of the full budget.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rung {
    /// Candidates evaluated on this rung.
    pub configs: usize,
    /// Share of the full budget each of them gets, in (0, 1]; the last rung's is 1.
    pub budget: f64,
}

/// The rungs of one bracket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// Rungs, smallest budget first.
    pub rungs: Vec<Rung>,
    /// The factor between rungs.
    pub eta: usize,
}

impl Schedule {
    /// `configs` candidates, `eta` >= 2: `floor(log_eta(configs)) + 1` rungs where rung `i` keeps
    /// `floor(configs / eta^i)` candidates at `eta^(i - last)` of the budget (9 configs, eta 3: 9 at 1/9, 3 at
    /// 1/3, 1 at 1). No rung's budget falls below `min_budget`: the rungs under it are dropped from the bottom,
    /// so every candidate starts on the lowest budget left and the last rung keeps more than one of them (all
    /// at the full budget; the best of them wins).
    pub fn new(configs: usize, eta: usize, min_budget: f64) -> Result<Schedule, String> {
        if configs == 0 {
            return Err("at least one configuration is needed".into());
        }
        if eta < 2 {
            return Err(format!(
                "eta must be at least 2 (each rung keeps 1/eta of the configurations), got {eta}"
            ));
        }
        if !(min_budget.is_finite() && min_budget > 0.0 && min_budget <= 1.0) {
            return Err(format!("the smallest budget must be in (0, 1], got {min_budget}"));
        }
        // Rungs that halving alone allows: eta^(n-1) <= configs.
        let mut rungs = 1usize;
        let mut reach = eta;
        while reach <= configs {
            rungs += 1;
            reach = reach.saturating_mul(eta);
        }
        // The budget floor: eta^-(rungs-1) >= min_budget.
        while rungs > 1 && (eta as f64).powi(rungs as i32 - 1).recip() < min_budget * (1.0 - 1e-12) {
            rungs -= 1;
        }
        let last = rungs - 1;
        let mut keep = configs;
        let mut out = Vec::with_capacity(rungs);
        for i in 0..rungs {
            out.push(Rung {
                configs: keep.max(1),
                budget: (eta as f64).powi(i as i32 - last as i32),
            });
            keep /= eta;
        }
        Ok(Schedule { rungs: out, eta })
    }

    /// Evaluations the bracket runs.
    pub fn evaluations(&self) -> usize {
        self.rungs.iter().map(|r| r.configs).sum()
    }
}

/// One evaluation of a candidate on a rung.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    /// Index of the candidate.
    pub config: usize,
    /// Rung (0-based).
    pub rung: usize,
    /// Share of the full budget.
    pub budget: f64,
    /// Its score (higher is better); None when the evaluation failed.
    pub score: Option<f64>,
    /// Why it failed.
    pub error: Option<String>,
    /// Whether it went on to the next rung.
    pub promoted: bool,
}

/// What a bracket found.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Every evaluation, rung by rung, in evaluation order.
    pub trials: Vec<Trial>,
    /// The best candidate of the last rung (None when every evaluation of the last rung failed).
    pub best: Option<usize>,
    /// Its score.
    pub best_score: Option<f64>,
}

/// Runs the bracket over candidates `0..schedule.rungs[0].configs`: `evaluate(candidate, rung, budget)` scores
/// one candidate (an error counts as the worst score and is recorded); `on_trial` sees each trial as it ends.
/// Promotion keeps the highest scores; ties go to the lower index, so a rerun with the same scores promotes the
/// same candidates.
pub fn run(
    schedule: &Schedule,
    mut evaluate: impl FnMut(usize, usize, f64) -> anyhow::Result<f64>,
    mut on_trial: impl FnMut(&Trial),
) -> Outcome {
    let mut alive: Vec<usize> = (0..schedule.rungs.first().map_or(0, |r| r.configs)).collect();
    let mut trials: Vec<Trial> = Vec::with_capacity(schedule.evaluations());
    for (rung, r) in schedule.rungs.iter().enumerate() {
        let first = trials.len();
        for &c in &alive {
            let trial = match evaluate(c, rung, r.budget) {
                Ok(s) if s.is_finite() => Trial {
                    config: c,
                    rung,
                    budget: r.budget,
                    score: Some(s),
                    error: None,
                    promoted: false,
                },
                Ok(s) => Trial {
                    config: c,
                    rung,
                    budget: r.budget,
                    score: None,
                    error: Some(format!("score {s} is not a number")),
                    promoted: false,
                },
                Err(e) => Trial {
                    config: c,
                    rung,
                    budget: r.budget,
                    score: None,
                    error: Some(format!("{e:#}")),
                    promoted: false,
                },
            };
            on_trial(&trial);
            trials.push(trial);
        }
        let ranked = rank(&trials[first..]);
        if let Some(next) = schedule.rungs.get(rung + 1) {
            alive = ranked
                .iter()
                .take(next.configs)
                .map(|&i| trials[first + i].config)
                .collect();
            for &i in ranked.iter().take(next.configs) {
                trials[first + i].promoted = true;
            }
        } else {
            let best = ranked
                .first()
                .map(|&i| &trials[first + i])
                .filter(|t| t.score.is_some());
            return Outcome {
                best: best.map(|t| t.config),
                best_score: best.and_then(|t| t.score),
                trials,
            };
        }
    }
    Outcome {
        trials,
        best: None,
        best_score: None,
    }
}

/// Positions of `trials` from best to worst: score descending, failures last, ties by candidate index.
fn rank(trials: &[Trial]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..trials.len()).collect();
    order.sort_by(|&a, &b| {
        let key = |t: &Trial| t.score.unwrap_or(f64::NEG_INFINITY);
        key(&trials[b])
            .total_cmp(&key(&trials[a]))
            .then(trials[a].config.cmp(&trials[b].config))
    });
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(s: &Schedule) -> Vec<(usize, f64)> {
        s.rungs.iter().map(|r| (r.configs, r.budget)).collect()
    }

    #[test]
    fn nine_configs_eta_three_is_nine_three_one_at_r_3r_9r() {
        let s = Schedule::new(9, 3, 0.01).unwrap();
        assert_eq!(shape(&s), vec![(9, 1.0 / 9.0), (3, 1.0 / 3.0), (1, 1.0)]);
        assert_eq!(s.evaluations(), 13);
        // Budgets r, 3r, 9r.
        let r = s.rungs[0].budget;
        assert!((s.rungs[1].budget - 3.0 * r).abs() < 1e-12 && (s.rungs[2].budget - 9.0 * r).abs() < 1e-12);
    }

    #[test]
    fn schedules_by_hand() {
        // (configs, eta, budget floor, the rungs as (configs, budget)).
        type Case = (usize, usize, f64, &'static [(usize, f64)]);
        let cases: &[Case] = &[
            (3, 3, 0.01, &[(3, 1.0 / 3.0), (1, 1.0)]),
            (10, 3, 0.01, &[(10, 1.0 / 9.0), (3, 1.0 / 3.0), (1, 1.0)]),
            (
                27,
                3,
                0.01,
                &[(27, 1.0 / 27.0), (9, 1.0 / 9.0), (3, 1.0 / 3.0), (1, 1.0)],
            ),
            (8, 2, 0.01, &[(8, 0.125), (4, 0.25), (2, 0.5), (1, 1.0)]),
            (2, 3, 0.01, &[(2, 1.0)]),
            (1, 3, 0.01, &[(1, 1.0)]),
            // The floor drops the 1/27 rung: 27 start at 1/9, 3 are left at the full budget.
            (27, 3, 0.1, &[(27, 1.0 / 9.0), (9, 1.0 / 3.0), (3, 1.0)]),
            // No rung below the full budget at all.
            (9, 3, 1.0, &[(9, 1.0)]),
        ];
        for &(n, eta, floor, want) in cases {
            let s = Schedule::new(n, eta, floor).unwrap();
            assert_eq!(
                shape(&s).len(),
                want.len(),
                "{n} configs, eta {eta}, floor {floor}: {s:?}"
            );
            for ((c, b), (wc, wb)) in shape(&s).into_iter().zip(want.iter().copied()) {
                assert_eq!(c, wc, "{n}/{eta}/{floor}: {s:?}");
                assert!((b - wb).abs() < 1e-12, "{n}/{eta}/{floor}: {s:?}");
            }
        }
    }

    #[test]
    fn bad_schedules_are_refused_with_the_reason() {
        assert!(Schedule::new(0, 3, 0.1).unwrap_err().contains("at least one"));
        assert!(Schedule::new(9, 1, 0.1).unwrap_err().contains("eta must be at least 2"));
        assert!(Schedule::new(9, 0, 0.1).unwrap_err().contains("got 0"));
        assert!(Schedule::new(9, 3, 0.0).unwrap_err().contains("(0, 1]"));
        assert!(Schedule::new(9, 3, f64::NAN).unwrap_err().contains("(0, 1]"));
    }

    #[test]
    fn keeps_the_best_third_and_ends_on_the_best_of_the_last_rung() {
        let s = Schedule::new(9, 3, 0.01).unwrap();
        // Candidate c scores c at every budget except that 4 only shines at the full one: halving (correctly)
        // never sees it there, because it ranks on the small budgets first.
        let score = |c: usize, budget: f64| if c == 4 && budget == 1.0 { 100.0 } else { c as f64 };
        let mut seen = Vec::new();
        let out = run(&s, |c, _rung, b| Ok(score(c, b) * b), |t| seen.push((t.config, t.rung)));
        let rung = |i: usize| -> Vec<usize> { out.trials.iter().filter(|t| t.rung == i).map(|t| t.config).collect() };
        assert_eq!(rung(0), (0..9).collect::<Vec<_>>());
        assert_eq!(rung(1), vec![8, 7, 6]);
        assert_eq!(rung(2), vec![8]);
        assert_eq!(out.best, Some(8));
        assert_eq!(out.best_score, Some(8.0));
        assert_eq!(seen.len(), 13);
        let promoted: Vec<(usize, usize)> = out
            .trials
            .iter()
            .filter(|t| t.promoted)
            .map(|t| (t.config, t.rung))
            .collect();
        assert_eq!(promoted, vec![(6, 0), (7, 0), (8, 0), (8, 1)]);
        // The budgets each trial ran with are its rung's.
        assert!(out
            .trials
            .iter()
            .all(|t| (t.budget - s.rungs[t.rung].budget).abs() < 1e-12));
    }

    #[test]
    fn failures_rank_last_ties_go_to_the_lower_index() {
        let s = Schedule::new(3, 3, 0.01).unwrap();
        let out = run(
            &s,
            |c, _, _| match c {
                0 => anyhow::bail!("shard too small"),
                1 | 2 => Ok(0.5),
                _ => unreachable!("three candidates"),
            },
            |_| {},
        );
        assert_eq!(out.trials[0].error.as_deref(), Some("shard too small"));
        assert_eq!(out.trials[0].score, None);
        assert_eq!(out.best, Some(1), "tie between 1 and 2 goes to 1");
        // NaN is a failure too.
        let out = run(&s, |c, _, _| Ok(if c == 2 { f64::NAN } else { c as f64 }), |_| {});
        assert_eq!(out.best, Some(1));
        assert!(out.trials[2].error.as_deref().unwrap_or("").contains("not a number"));
        // Everything failing leaves no best.
        let out = run(&s, |_, _, _| anyhow::bail!("no"), |_| {});
        assert_eq!((out.best, out.best_score), (None, None));
        assert_eq!(out.trials.len(), 4);
    }

    #[test]
    fn several_survivors_on_the_last_rung_pick_the_best_of_them() {
        let s = Schedule::new(27, 3, 0.1).unwrap();
        let out = run(&s, |c, _, b| Ok((c % 10) as f64 * b), |_| {});
        let last: Vec<usize> = out.trials.iter().filter(|t| t.rung == 2).map(|t| t.config).collect();
        assert_eq!(last.len(), 3);
        let max = out
            .trials
            .iter()
            .filter(|t| t.rung == 2)
            .filter_map(|t| t.score)
            .fold(f64::NEG_INFINITY, f64::max);
        assert_eq!(out.best_score, Some(max));
        assert_eq!(out.best, Some(9), "9 and 19 tie on the last rung: the lower index wins");
    }
}
