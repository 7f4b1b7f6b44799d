//! Stopping on convergence (`[stop]` in the coordinator's config): the federation finishes before its last
//! round once the median of the accuracies the participants report for their candidate students has not
//! improved by more than `min_delta` for `patience` rounds. The median, not the mean: a minority of insiders
//! reporting made-up accuracies can neither stop the federation early nor keep it running past `rounds`
//! (that bound holds whatever anyone reports). Every figure it uses is in the signed reports of the update
//! log, so an auditor can recompute the decision.

use serde::{Deserialize, Serialize};

use crate::wire::messages::RoundReport;

/// The report metric the rule watches.
pub const STOP_METRIC: &str = "accuracy";

/// When to finish early.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopRule {
    /// Rounds in a row without an improvement before the federation finishes (at least 1).
    pub patience: u64,
    /// The smallest rise of the median reported accuracy that counts as an improvement (in [0, 1)).
    pub min_delta: f64,
    /// The federation never stops before this round.
    pub min_rounds: u64,
}

impl StopRule {
    /// Refuses settings that cannot work, naming the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.patience == 0 {
            return Err("stop.patience must be at least 1".into());
        }
        if !(self.min_delta.is_finite() && (0.0..1.0).contains(&self.min_delta)) {
            return Err(format!("stop.min_delta {} must be in [0, 1)", self.min_delta));
        }
        Ok(())
    }
}

/// What the rule has seen so far (durable: part of the coordinator's snapshot).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Convergence {
    /// Best median accuracy so far and the round it was reported for.
    pub best: Option<(u64, f64)>,
    /// Rounds since the last improvement.
    pub stale: u64,
    /// The round after which the federation stops, once decided.
    pub converged_at: Option<u64>,
}

/// The decision, for the driver's log.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Converged {
    /// The round whose reports decided it.
    pub round: u64,
    /// The round of the best median accuracy.
    pub best_round: u64,
    /// That median accuracy.
    pub best: f64,
}

/// The median of the reports' `accuracy` figures that are numbers in [0, 1] (a report without one, or with
/// a value no accuracy has, does not count); `None` when no report has one.
pub fn median_accuracy<'a>(reports: impl IntoIterator<Item = &'a RoundReport>) -> Option<f64> {
    let mut v: Vec<f64> = reports
        .into_iter()
        .filter_map(|r| r.metrics.iter().find(|(n, _)| n == STOP_METRIC).map(|(_, v)| *v))
        .filter(|v| v.is_finite() && (0.0..=1.0).contains(v))
        .collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

impl Convergence {
    /// Takes the median reported accuracy of `round` (`None`: no usable report, which counts as no
    /// improvement) and says whether the federation has converged.
    pub fn observe(&mut self, rule: &StopRule, round: u64, median: Option<f64>) -> Option<Converged> {
        if self.converged_at.is_some() {
            return None;
        }
        match (median, self.best) {
            (Some(m), None) => {
                self.best = Some((round, m));
                self.stale = 0;
            }
            (Some(m), Some((_, best))) if m > best + rule.min_delta => {
                self.best = Some((round, m));
                self.stale = 0;
            }
            _ => self.stale += 1,
        }
        if self.stale >= rule.patience && round >= rule.min_rounds {
            self.converged_at = Some(round);
            let (best_round, best) = self.best.unwrap_or((0, f64::NAN));
            return Some(Converged {
                round,
                best_round,
                best,
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Digest, RoundId};

    fn report(acc: f64) -> RoundReport {
        RoundReport {
            round: RoundId(1),
            metrics: vec![("loss".into(), 0.3), (STOP_METRIC.into(), acc)],
            student_digest: Digest([0; 32]),
            guard_accepted: true,
            guard_reason: String::new(),
            privacy_spend: None,
        }
    }

    /// Hand-worked: medians 0.80, 0.85, 0.852, 0.851, 0.853 with patience 2 and min_delta 0.005: round 2
    /// improves, rounds 3 and 4 do not (0.852 and 0.851 are within 0.005 of 0.85), so round 4 decides.
    #[test]
    fn stops_after_patience_rounds_without_improvement() {
        let rule = StopRule {
            patience: 2,
            min_delta: 0.005,
            min_rounds: 1,
        };
        let mut c = Convergence::default();
        let medians = [0.80, 0.85, 0.852, 0.851, 0.853];
        let decided: Vec<Option<Converged>> = medians
            .iter()
            .enumerate()
            .map(|(i, m)| c.observe(&rule, i as u64 + 1, Some(*m)))
            .collect();
        assert_eq!(decided[..3], [None, None, None]);
        assert_eq!(
            decided[3],
            Some(Converged {
                round: 4,
                best_round: 2,
                best: 0.85
            })
        );
        assert_eq!(decided[4], None, "decided once");
        assert_eq!(c.converged_at, Some(4));
    }

    /// `min_rounds` holds the decision back; rounds without reports count as stale.
    #[test]
    fn min_rounds_and_missing_reports() {
        let rule = StopRule {
            patience: 1,
            min_delta: 0.0,
            min_rounds: 3,
        };
        let mut c = Convergence::default();
        assert_eq!(c.observe(&rule, 1, Some(0.9)), None);
        assert_eq!(c.observe(&rule, 2, None), None, "before min_rounds");
        assert_eq!(c.stale, 1);
        assert_eq!(c.observe(&rule, 3, Some(0.9)).map(|d| d.round), Some(3));
    }

    /// The median: a minority of liars moves it no further than the honest values around it; figures no
    /// accuracy has are left out.
    #[test]
    fn the_median_resists_a_minority_of_liars() {
        let honest = [0.81, 0.82, 0.83];
        let mut reports: Vec<RoundReport> = honest.iter().map(|a| report(*a)).collect();
        reports.push(report(0.0));
        reports.push(report(1.0));
        assert_eq!(median_accuracy(&reports), Some(0.82));
        reports.push(report(f64::NAN));
        reports.push(report(7.0));
        assert_eq!(median_accuracy(&reports), Some(0.82));
        let mut no_acc = report(0.5);
        no_acc.metrics.retain(|(n, _)| n != STOP_METRIC);
        assert_eq!(median_accuracy([&no_acc]), None);
        assert_eq!(median_accuracy(&reports[..2]), Some(0.815));
    }

    #[test]
    fn bad_rules_are_named() {
        let ok = StopRule {
            patience: 3,
            min_delta: 0.001,
            min_rounds: 1,
        };
        assert!(ok.validate().is_ok());
        assert!(StopRule { patience: 0, ..ok }
            .validate()
            .unwrap_err()
            .contains("stop.patience"));
        assert!(StopRule { min_delta: -0.1, ..ok }
            .validate()
            .unwrap_err()
            .contains("stop.min_delta"));
        assert!(StopRule {
            min_delta: f64::NAN,
            ..ok
        }
        .validate()
        .unwrap_err()
        .contains("stop.min_delta"));
    }
}
