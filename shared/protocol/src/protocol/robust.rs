//! Per-contributor anomaly scores tracked across rounds and the quarantine policy built on them.
//!
//! Each round every contributor's distance to the consensus ([`super::aggregate::distance_to_consensus`])
//! updates an exponentially weighted score. A contributor whose score exceeds `factor` x the median score
//! of the round's contributors (and an absolute floor) for `consecutive` rounds in a row is quarantined:
//! the driver applies it with `CoordinatorRound::apply_quarantine`, which returns the `Record::Quarantine`
//! ([`QuarantineDecision::record`], the evidence in canonical order) for the round's commit.
//! Relative-to-median thresholds keep honest participants safe under DP noise, which raises every score.
//! Quarantine is permanent unless the policy sets `release_after_rounds`: then [`AnomalyTracker::releases_due`]
//! readmits a participant once that many aggregated rounds have passed, with a fresh score
//! (`CoordinatorRound::apply_release` readmits it and returns the `Record::QuarantineRelease`,
//! [`ReleaseDecision::record`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::crypto::{ParticipantId, RoundId};
use crate::ledger::{Metric, Record, RecordError};

/// Parameters of the quarantine policy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QuarantinePolicy {
    /// Weight of the newest round in the exponentially weighted score, in (0, 1].
    pub decay: f64,
    /// A score above `factor` x the round's median score counts as a strike.
    pub factor: f64,
    /// Scores at or below this absolute value never count as strikes.
    pub floor: f64,
    /// Strikes in consecutive rounds before quarantine.
    pub consecutive: u32,
    /// Fewer contributors than this: no strikes (a median of two or three says little).
    pub min_contributors: usize,
    /// Readmit a quarantined participant after this many aggregated rounds (None: permanent).
    #[serde(default)]
    pub release_after_rounds: Option<u32>,
}

impl Default for QuarantinePolicy {
    fn default() -> Self {
        QuarantinePolicy {
            decay: 0.5,
            factor: 3.0,
            floor: 0.1,
            consecutive: 3,
            min_contributors: 4,
            release_after_rounds: None,
        }
    }
}

/// Why a policy was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RobustError {
    /// A parameter is out of range.
    #[error("invalid quarantine policy: {0}")]
    BadPolicy(String),
}

impl QuarantinePolicy {
    /// Refuses meaningless parameters.
    pub fn validate(&self) -> Result<(), RobustError> {
        let bad = |m: String| Err(RobustError::BadPolicy(m));
        if !(self.decay > 0.0 && self.decay <= 1.0) {
            return bad(format!("decay {} must be in (0, 1]", self.decay));
        }
        if !(self.factor > 1.0 && self.factor.is_finite()) {
            return bad(format!("factor {} must be a finite number > 1", self.factor));
        }
        if !(self.floor >= 0.0 && self.floor.is_finite()) {
            return bad(format!("floor {} must be a finite number >= 0", self.floor));
        }
        if self.consecutive == 0 {
            return bad("consecutive must be >= 1".into());
        }
        if self.min_contributors < 3 {
            return bad(format!("min_contributors {} must be >= 3", self.min_contributors));
        }
        if self.release_after_rounds == Some(0) {
            return bad("release_after_rounds must be >= 1 (leave it out for permanent quarantine)".into());
        }
        Ok(())
    }
}

/// One contributor's tracked state.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct ScoreState {
    /// Exponentially weighted distance to consensus.
    pub ewma: f64,
    /// Consecutive rounds with a strike.
    pub strikes: u32,
    /// Rounds scored.
    pub rounds: u64,
    /// Already quarantined (no further decisions).
    pub quarantined: bool,
    /// Round in which the current quarantine was decided (None in state written before releases existed).
    #[serde(default)]
    pub quarantined_round: Option<RoundId>,
}

/// A quarantine the driver must apply and log.
#[derive(Debug, Clone, PartialEq)]
pub struct QuarantineDecision {
    /// Round in which it was decided.
    pub round: RoundId,
    /// Who.
    pub participant: ParticipantId,
    /// Why, in words.
    pub reason: String,
    /// The figures behind it (names unique: `ewma_score`, `last_distance`, `median_score`, `strikes`,
    /// `threshold`, and the policy in force: `policy_consecutive`, `policy_decay`, `policy_factor`,
    /// `policy_floor`, `policy_min_contributors`), so an auditor can recheck the decision.
    pub evidence: Vec<(String, f64)>,
}

/// A release from quarantine the driver must apply and log.
#[derive(Debug, Clone, PartialEq)]
pub struct ReleaseDecision {
    /// Round after whose aggregate the participant is readmitted (it may contribute from the next one).
    pub round: RoundId,
    /// Who.
    pub participant: ParticipantId,
    /// Round in which the quarantine was decided.
    pub quarantined_round: RoundId,
    /// The policy's `release_after_rounds`.
    pub after_rounds: u32,
    /// Why, in words.
    pub reason: String,
}

impl QuarantineDecision {
    /// The `quarantine` record that logs the decision, its evidence in canonical order (refused if two
    /// figures share a name).
    pub fn record(&self) -> Result<Record, RecordError> {
        Ok(Record::Quarantine {
            round: self.round,
            participant: self.participant.clone(),
            reason: self.reason.clone(),
            evidence: Metric::canonical(self.evidence.iter().map(|(n, v)| (n.clone(), *v)))?,
        })
    }
}

impl ReleaseDecision {
    /// The `quarantine_release` record that logs the release.
    pub fn record(&self) -> Record {
        Record::QuarantineRelease {
            round: self.round,
            participant: self.participant.clone(),
            quarantined_round: self.quarantined_round,
            after_rounds: self.after_rounds,
            reason: self.reason.clone(),
        }
    }
}

/// Tracks scores across rounds; serializable so the driver persists it with the round snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnomalyTracker {
    policy: QuarantinePolicy,
    scores: BTreeMap<ParticipantId, ScoreState>,
}

impl AnomalyTracker {
    /// A tracker with no history.
    pub fn new(policy: QuarantinePolicy) -> Result<Self, RobustError> {
        policy.validate()?;
        Ok(AnomalyTracker {
            policy,
            scores: BTreeMap::new(),
        })
    }

    /// The policy.
    pub fn policy(&self) -> &QuarantinePolicy {
        &self.policy
    }

    /// Replaces the policy, keeping the scores (the configured policy wins over the one stored with the
    /// state after a restart).
    pub fn set_policy(&mut self, policy: QuarantinePolicy) -> Result<(), RobustError> {
        policy.validate()?;
        self.policy = policy;
        Ok(())
    }

    /// Participants currently quarantined, in id order.
    pub fn quarantined(&self) -> Vec<ParticipantId> {
        self.scores
            .iter()
            .filter(|(_, s)| s.quarantined)
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// After the aggregate of `round`: the quarantines that have lasted `release_after_rounds` rounds
    /// (`round >= quarantined_round + release_after_rounds`) end now; the participant's score starts afresh.
    /// None under a permanent policy. A quarantine without a recorded round (state from an older build)
    /// starts counting at `round`.
    pub fn releases_due(&mut self, round: RoundId) -> Vec<ReleaseDecision> {
        let Some(after) = self.policy.release_after_rounds else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (p, s) in self.scores.iter_mut() {
            if !s.quarantined {
                continue;
            }
            let since = *s.quarantined_round.get_or_insert(round);
            if round.0 >= since.0.saturating_add(u64::from(after)) {
                *s = ScoreState::default();
                out.push(ReleaseDecision {
                    round,
                    participant: p.clone(),
                    quarantined_round: since,
                    after_rounds: after,
                    reason: format!(
                        "quarantine of round {since} served for {after} round(s); readmitted with a fresh score"
                    ),
                });
            }
        }
        out
    }

    /// A contributor's state.
    pub fn state(&self, p: &ParticipantId) -> Option<&ScoreState> {
        self.scores.get(p)
    }

    /// Feeds one round's distances to consensus; returns the contributors to quarantine now.
    /// Non-finite distances are scored as the worst finite distance seen this round (never NaN).
    pub fn handle_round(&mut self, round: RoundId, distances: &[(ParticipantId, f64)]) -> Vec<QuarantineDecision> {
        let worst = distances
            .iter()
            .map(|(_, d)| *d)
            .filter(|d| d.is_finite())
            .fold(0.0f64, f64::max);
        for (p, d) in distances {
            let d = if d.is_finite() { *d } else { worst };
            let s = self.scores.entry(p.clone()).or_default();
            s.ewma = if s.rounds == 0 {
                d
            } else {
                self.policy.decay * d + (1.0 - self.policy.decay) * s.ewma
            };
            s.rounds += 1;
        }
        let mut decisions = Vec::new();
        if distances.len() < self.policy.min_contributors {
            return decisions;
        }
        let mut current: Vec<f64> = distances
            .iter()
            .filter_map(|(p, _)| self.scores.get(p).map(|s| s.ewma))
            .collect();
        current.sort_by(f64::total_cmp);
        let m = current.len();
        let median = if m % 2 == 1 {
            current[m / 2]
        } else {
            (current[m / 2 - 1] + current[m / 2]) / 2.0
        };
        let threshold = (self.policy.factor * median).max(self.policy.floor);
        for (p, d) in distances {
            let Some(s) = self.scores.get_mut(p) else { continue };
            if s.quarantined {
                continue;
            }
            if s.ewma > threshold {
                s.strikes += 1;
            } else {
                s.strikes = 0;
            }
            if s.strikes >= self.policy.consecutive {
                s.quarantined = true;
                s.quarantined_round = Some(round);
                decisions.push(QuarantineDecision {
                    round,
                    participant: p.clone(),
                    reason: format!(
                        "anomaly score {:.4} above {:.1} x median {:.4} (and floor {}) for {} consecutive rounds",
                        s.ewma, self.policy.factor, median, self.policy.floor, s.strikes
                    ),
                    evidence: vec![
                        ("ewma_score".into(), s.ewma),
                        ("last_distance".into(), if d.is_finite() { *d } else { worst }),
                        ("median_score".into(), median),
                        ("policy_consecutive".into(), f64::from(self.policy.consecutive)),
                        ("policy_decay".into(), self.policy.decay),
                        ("policy_factor".into(), self.policy.factor),
                        ("policy_floor".into(), self.policy.floor),
                        ("policy_min_contributors".into(), self.policy.min_contributors as f64),
                        ("strikes".into(), f64::from(s.strikes)),
                        ("threshold".into(), threshold),
                    ],
                });
            }
        }
        decisions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(s: &str) -> ParticipantId {
        ParticipantId::new(s)
    }

    fn round(honest: f64, attacker: f64) -> Vec<(ParticipantId, f64)> {
        vec![
            (pid("a"), honest),
            (pid("b"), honest * 1.2),
            (pid("c"), honest * 0.8),
            (pid("d"), honest * 1.1),
            (pid("evil"), attacker),
        ]
    }

    /// A decision's record carries what the decision says, the evidence sorted by name; a release's too.
    #[test]
    fn decisions_yield_their_log_records() {
        let q = QuarantineDecision {
            round: RoundId(3),
            participant: pid("evil"),
            reason: "outlier".into(),
            evidence: vec![("threshold".into(), 0.6), ("ewma_score".into(), 1.6)],
        };
        let Ok(Record::Quarantine {
            round,
            participant,
            reason,
            evidence,
        }) = q.record()
        else {
            panic!("not a quarantine record: {:?}", q.record())
        };
        assert_eq!(
            (round, participant, reason.as_str()),
            (RoundId(3), pid("evil"), "outlier")
        );
        let names: Vec<(&str, f64)> = evidence.iter().map(|m| (m.name.as_str(), m.value)).collect();
        assert_eq!(names, vec![("ewma_score", 1.6), ("threshold", 0.6)]);
        let twice = QuarantineDecision {
            evidence: vec![("strikes".into(), 3.0), ("strikes".into(), 4.0)],
            ..q
        };
        assert!(twice.record().is_err(), "duplicate evidence names are refused");

        let r = ReleaseDecision {
            round: RoundId(7),
            participant: pid("evil"),
            quarantined_round: RoundId(4),
            after_rounds: 3,
            reason: "served".into(),
        };
        assert_eq!(
            r.record(),
            Record::QuarantineRelease {
                round: RoundId(7),
                participant: pid("evil"),
                quarantined_round: RoundId(4),
                after_rounds: 3,
                reason: "served".into(),
            }
        );
    }

    #[test]
    fn persistent_outlier_is_quarantined_after_m_rounds() {
        let mut t = AnomalyTracker::new(QuarantinePolicy::default()).unwrap();
        // Distances: honest ~0.2, attacker 1.6 (8x): strikes in rounds 1, 2, 3 -> quarantine in round 3.
        assert!(t.handle_round(RoundId(1), &round(0.2, 1.6)).is_empty());
        assert!(t.handle_round(RoundId(2), &round(0.2, 1.6)).is_empty());
        let d = t.handle_round(RoundId(3), &round(0.2, 1.6));
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].participant, pid("evil"));
        assert_eq!(d[0].round, RoundId(3));
        let names: Vec<&str> = d[0].evidence.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "ewma_score",
                "last_distance",
                "median_score",
                "policy_consecutive",
                "policy_decay",
                "policy_factor",
                "policy_floor",
                "policy_min_contributors",
                "strikes",
                "threshold"
            ]
        );
        // The threshold is recomputable from the evidence (what `audit verify` does).
        let ev = |n: &str| d[0].evidence.iter().find(|(k, _)| k == n).map(|(_, v)| *v).unwrap();
        assert_eq!(
            ev("threshold"),
            (ev("policy_factor") * ev("median_score")).max(ev("policy_floor"))
        );
        assert!(ev("ewma_score") > ev("threshold"));
        // Decided once only.
        assert!(t.handle_round(RoundId(4), &round(0.2, 1.6)).is_empty());
        assert!(t.state(&pid("evil")).unwrap().quarantined);
        assert!(!t.state(&pid("a")).unwrap().quarantined);
    }

    #[test]
    fn intermittent_or_mild_outliers_are_not() {
        let mut t = AnomalyTracker::new(QuarantinePolicy {
            decay: 1.0,
            ..QuarantinePolicy::default()
        })
        .unwrap();
        // With decay 1 the score is the last distance: strike, strike, clean, strike, strike: never 3 in a row.
        for (r, a) in [(1, 1.6), (2, 1.6), (3, 0.2), (4, 1.6), (5, 1.6)] {
            assert!(t.handle_round(RoundId(r), &round(0.2, a)).is_empty(), "round {r}");
        }
        // 2x the median stays below the 3x factor forever.
        let mut t = AnomalyTracker::new(QuarantinePolicy::default()).unwrap();
        for r in 1..10 {
            assert!(t.handle_round(RoundId(r), &round(0.2, 0.4)).is_empty());
        }
        // Everyone noisy (DP): all scores high, nobody singled out.
        for r in 10..20 {
            assert!(t.handle_round(RoundId(r), &round(1.5, 1.5)).is_empty());
        }
    }

    #[test]
    fn too_few_contributors_never_strike() {
        let mut t = AnomalyTracker::new(QuarantinePolicy::default()).unwrap();
        let three = vec![(pid("a"), 0.1), (pid("b"), 0.1), (pid("evil"), 1.9)];
        for r in 1..10 {
            assert!(t.handle_round(RoundId(r), &three).is_empty());
        }
    }

    #[test]
    fn nan_distance_is_scored_as_the_worst() {
        let mut t = AnomalyTracker::new(QuarantinePolicy::default()).unwrap();
        let mut r = round(0.2, f64::NAN);
        r[1].1 = 1.7;
        t.handle_round(RoundId(1), &r);
        assert_eq!(t.state(&pid("evil")).unwrap().ewma, 1.7);
    }

    #[test]
    fn refuses_bad_policies() {
        let base = QuarantinePolicy::default();
        for (p, needle) in [
            (QuarantinePolicy { decay: 0.0, ..base }, "decay"),
            (QuarantinePolicy { factor: 1.0, ..base }, "factor"),
            (
                QuarantinePolicy {
                    floor: f64::NAN,
                    ..base
                },
                "floor",
            ),
            (QuarantinePolicy { consecutive: 0, ..base }, "consecutive"),
            (
                QuarantinePolicy {
                    min_contributors: 2,
                    ..base
                },
                "min_contributors",
            ),
            (
                QuarantinePolicy {
                    release_after_rounds: Some(0),
                    ..base
                },
                "release_after_rounds",
            ),
        ] {
            assert!(
                AnomalyTracker::new(p).unwrap_err().to_string().contains(needle),
                "{needle}"
            );
        }
    }

    #[test]
    fn permanent_quarantine_is_never_released() {
        let mut t = AnomalyTracker::new(QuarantinePolicy::default()).unwrap();
        for r in 1..=3 {
            t.handle_round(RoundId(r), &round(0.2, 1.6));
        }
        assert_eq!(t.quarantined(), vec![pid("evil")]);
        for r in 4..50 {
            assert!(t.releases_due(RoundId(r)).is_empty());
        }
        assert!(t.state(&pid("evil")).unwrap().quarantined);
    }

    #[test]
    fn release_after_n_rounds_readmits_with_a_fresh_score() {
        let mut t = AnomalyTracker::new(QuarantinePolicy {
            release_after_rounds: Some(2),
            ..QuarantinePolicy::default()
        })
        .unwrap();
        for r in 1..=3 {
            t.handle_round(RoundId(r), &round(0.2, 1.6));
        }
        assert_eq!(t.state(&pid("evil")).unwrap().quarantined_round, Some(RoundId(3)));
        // Quarantined in round 3: still out after rounds 3 and 4, released after round 5 (3 + 2).
        assert!(t.releases_due(RoundId(3)).is_empty());
        let honest: Vec<(ParticipantId, f64)> =
            round(0.2, 0.2).into_iter().filter(|(p, _)| p != &pid("evil")).collect();
        t.handle_round(RoundId(4), &honest);
        assert!(t.releases_due(RoundId(4)).is_empty());
        t.handle_round(RoundId(5), &honest);
        let rel = t.releases_due(RoundId(5));
        assert_eq!(rel.len(), 1);
        assert_eq!(rel[0].participant, pid("evil"));
        assert_eq!(rel[0].quarantined_round, RoundId(3));
        assert_eq!(rel[0].after_rounds, 2);
        assert_eq!(t.state(&pid("evil")), Some(&ScoreState::default()));
        assert!(t.quarantined().is_empty());
        // Still attacking after readmission: quarantined again after `consecutive` fresh strikes.
        assert!(t.handle_round(RoundId(6), &round(0.2, 1.6)).is_empty());
        assert!(t.handle_round(RoundId(7), &round(0.2, 1.6)).is_empty());
        assert_eq!(t.handle_round(RoundId(8), &round(0.2, 1.6)).len(), 1);
    }

    #[test]
    fn the_configured_policy_replaces_the_stored_one() {
        let mut t = AnomalyTracker::new(QuarantinePolicy::default()).unwrap();
        for r in 1..=3 {
            t.handle_round(RoundId(r), &round(0.2, 1.6));
        }
        // State written by an older build has no quarantine round: counting starts at the first check.
        let mut json: serde_json::Value = serde_json::to_value(&t).unwrap();
        json["scores"]["evil"]
            .as_object_mut()
            .unwrap()
            .remove("quarantined_round");
        json["policy"].as_object_mut().unwrap().remove("release_after_rounds");
        let mut old: AnomalyTracker = serde_json::from_value(json).unwrap();
        assert_eq!(old.policy().release_after_rounds, None);
        let policy = QuarantinePolicy {
            release_after_rounds: Some(1),
            ..QuarantinePolicy::default()
        };
        old.set_policy(policy).unwrap();
        assert_eq!(old.policy(), &policy);
        assert!(old.releases_due(RoundId(10)).is_empty());
        assert_eq!(old.releases_due(RoundId(11)).len(), 1);
        assert!(old.set_policy(QuarantinePolicy { decay: 2.0, ..policy }).is_err());
    }
}
