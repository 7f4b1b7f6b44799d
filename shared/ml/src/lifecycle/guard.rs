//! Degradation guard: a candidate student replaces the current one only if no key metric got worse by
//! more than a relative tolerance. The decision, with every number it used, is a serializable record the
//! federation logs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::LifecycleError;

/// Whether a larger value of a metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Larger is better (accuracy, F1, AUC).
    HigherIsBetter,
    /// Smaller is better (losses, calibration error).
    LowerIsBetter,
}

/// Metrics the guard can watch, with their direction. Names are the JSON field names of
/// [`crate::Metrics`].
pub const KNOWN_METRICS: &[(&str, Direction)] = &[
    ("accuracy", Direction::HigherIsBetter),
    ("f1_macro", Direction::HigherIsBetter),
    ("roc_auc", Direction::HigherIsBetter),
    ("precision_macro", Direction::HigherIsBetter),
    ("recall_macro", Direction::HigherIsBetter),
    ("agreement", Direction::HigherIsBetter),
    ("log_loss", Direction::LowerIsBetter),
    ("ece", Direction::LowerIsBetter),
    ("kl_to_teacher", Direction::LowerIsBetter),
    ("latency_p50_us", Direction::LowerIsBetter),
    ("latency_p99_us", Direction::LowerIsBetter),
    ("throughput_per_s", Direction::HigherIsBetter),
    // Regression tasks (`crate::regression::RegressionMetrics`).
    ("r2", Direction::HigherIsBetter),
    ("rmse", Direction::LowerIsBetter),
    ("mae", Direction::LowerIsBetter),
    ("violation_rate", Direction::LowerIsBetter),
    ("bound_violation_rate", Direction::LowerIsBetter),
];

/// The metrics of a regression task, the ones a regression learner's guard may watch.
pub const REGRESSION_METRICS: &[&str] = &["r2", "rmse", "mae", "violation_rate", "bound_violation_rate"];

/// Accepted spellings that map to a [`KNOWN_METRICS`] name.
const ALIASES: &[(&str, &str)] = &[("macro_f1", "f1_macro"), ("auc", "roc_auc")];

/// The canonical name of a metric (aliases resolved), `None` if unknown.
pub fn canonical_metric(name: &str) -> Option<&'static str> {
    let name = ALIASES.iter().find(|(a, _)| *a == name).map_or(name, |(_, c)| *c);
    KNOWN_METRICS.iter().find(|(n, _)| *n == name).map(|(n, _)| *n)
}

/// Direction of a known metric (aliases accepted), `None` for a name the guard does not know.
pub fn metric_direction(name: &str) -> Option<Direction> {
    let name = canonical_metric(name)?;
    KNOWN_METRICS.iter().find(|(n, _)| *n == name).map(|(_, d)| *d)
}

/// The default relative tolerance: 5 %.
pub const DEFAULT_MAX_RELATIVE_DROP: f64 = 0.05;

/// Fewest evaluation rows on which the guard compares two students. Below it one row moves accuracy by more
/// than 3 points and a ranking metric may not exist at all (a single class), so a comparison would reject at
/// random; [`GuardConfig::judge`] then accepts and says why.
pub const MIN_GUARD_ROWS: usize = 30;

/// Guard configuration as written in a config file; validated into [`GuardConfig`] at load.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGuardConfig {
    #[serde(default = "default_metrics")]
    metrics: Vec<String>,
    #[serde(default = "default_drop")]
    max_relative_drop: f64,
}

fn default_metrics() -> Vec<String> {
    vec!["accuracy".into(), "f1_macro".into(), "roc_auc".into()]
}

fn default_drop() -> f64 {
    DEFAULT_MAX_RELATIVE_DROP
}

/// Validated guard configuration: known metric names, a tolerance in `[0, 1)`.
///
/// Deserializing (from TOML, JSON, ...) validates, so a config naming an unknown metric is refused at
/// load, not at the first round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawGuardConfig")]
pub struct GuardConfig {
    metrics: Vec<String>,
    max_relative_drop: f64,
}

impl TryFrom<RawGuardConfig> for GuardConfig {
    type Error = LifecycleError;
    fn try_from(raw: RawGuardConfig) -> Result<Self, Self::Error> {
        Self::new(raw.metrics, raw.max_relative_drop)
    }
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self {
            metrics: default_metrics(),
            max_relative_drop: DEFAULT_MAX_RELATIVE_DROP,
        }
    }
}

impl GuardConfig {
    /// Validates metric names and the tolerance.
    pub fn new(metrics: Vec<String>, max_relative_drop: f64) -> Result<Self, LifecycleError> {
        if metrics.is_empty() {
            return Err(LifecycleError::NoGuardMetrics);
        }
        let mut canonical = Vec::with_capacity(metrics.len());
        for m in &metrics {
            match canonical_metric(m) {
                Some(c) => canonical.push(c.to_string()),
                None => {
                    return Err(LifecycleError::UnknownMetric {
                        name: m.clone(),
                        known: KNOWN_METRICS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "),
                    })
                }
            }
        }
        let metrics = canonical;
        if !(0.0..1.0).contains(&max_relative_drop) {
            return Err(LifecycleError::BadTolerance(max_relative_drop));
        }
        Ok(Self {
            metrics,
            max_relative_drop,
        })
    }

    /// Watched metric names.
    pub fn metrics(&self) -> &[String] {
        &self.metrics
    }

    /// Largest accepted relative worsening of any watched metric.
    pub fn max_relative_drop(&self) -> f64 {
        self.max_relative_drop
    }

    /// [`GuardConfig::decide`] when the metrics were measured on at least [`MIN_GUARD_ROWS`] rows (`rows`);
    /// below that the candidate is accepted without a comparison, the reason naming the row count.
    pub fn judge(
        &self,
        rows: usize,
        current: &BTreeMap<String, f64>,
        candidate: &BTreeMap<String, f64>,
    ) -> GuardDecision {
        if rows >= MIN_GUARD_ROWS {
            return self.decide(current, candidate);
        }
        GuardDecision {
            accepted: true,
            max_relative_drop: self.max_relative_drop,
            checks: Vec::new(),
            reason: format!(
                "not judged: the metrics come from {rows} rows, fewer than the {MIN_GUARD_ROWS} the guard compares on \
                 (accepted; give the node more validation rows)"
            ),
        }
    }

    /// Decides whether `candidate` may replace `current`, given both metric records by name.
    ///
    /// A watched metric missing from either record, or not finite in the candidate, rejects the candidate:
    /// the guard fails closed.
    pub fn decide(&self, current: &BTreeMap<String, f64>, candidate: &BTreeMap<String, f64>) -> GuardDecision {
        let mut checks = Vec::with_capacity(self.metrics.len());
        let mut reasons = Vec::new();
        for name in &self.metrics {
            let dir = metric_direction(name).unwrap_or(Direction::HigherIsBetter);
            let (cur, cand) = match (current.get(name), candidate.get(name)) {
                (Some(&a), Some(&b)) => (a, b),
                _ => {
                    reasons.push(format!("{name}: missing from a metric record"));
                    checks.push(MetricCheck {
                        metric: name.clone(),
                        direction: dir,
                        current: current.get(name).copied(),
                        candidate: candidate.get(name).copied(),
                        relative_worsening: None,
                        passed: false,
                    });
                    continue;
                }
            };
            let worsening = relative_worsening(dir, cur, cand);
            let passed = worsening.is_some_and(|w| w <= self.max_relative_drop + 1e-12);
            if !passed {
                reasons.push(match worsening {
                    Some(w) => format!(
                        "{name}: {cand:.4} vs {cur:.4} is {:.2}% worse (limit {:.2}%)",
                        100.0 * w,
                        100.0 * self.max_relative_drop
                    ),
                    None => format!("{name}: not finite ({cand} vs {cur})"),
                });
            }
            checks.push(MetricCheck {
                metric: name.clone(),
                direction: dir,
                current: Some(cur),
                candidate: Some(cand),
                relative_worsening: worsening,
                passed,
            });
        }
        let accepted = reasons.is_empty();
        GuardDecision {
            accepted,
            max_relative_drop: self.max_relative_drop,
            checks,
            reason: if accepted {
                "no watched metric worse than the tolerance".into()
            } else {
                reasons.join("; ")
            },
        }
    }
}

/// Relative worsening of `candidate` vs `current` (positive = worse, negative = better); `None` when a
/// value is not finite. A zero baseline uses the absolute difference so that the ratio stays defined.
fn relative_worsening(dir: Direction, current: f64, candidate: f64) -> Option<f64> {
    if !current.is_finite() || !candidate.is_finite() {
        return None;
    }
    let worse_by = match dir {
        Direction::HigherIsBetter => current - candidate,
        Direction::LowerIsBetter => candidate - current,
    };
    let base = current.abs();
    Some(if base < 1e-12 { worse_by } else { worse_by / base })
}

/// One watched metric's comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricCheck {
    /// Metric name.
    pub metric: String,
    /// Whether larger is better.
    pub direction: Direction,
    /// Value of the current student (`None` if missing).
    pub current: Option<f64>,
    /// Value of the candidate (`None` if missing).
    pub candidate: Option<f64>,
    /// `(current - candidate) / |current|` for higher-is-better metrics (mirrored for lower-is-better);
    /// positive means worse; `None` when a value was missing or not finite.
    pub relative_worsening: Option<f64>,
    /// Whether this metric is within the tolerance.
    pub passed: bool,
}

/// The guard's decision with the numbers it was based on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuardDecision {
    /// Whether the candidate replaces the current student.
    pub accepted: bool,
    /// Tolerance used.
    pub max_relative_drop: f64,
    /// Per-metric comparisons, in the configured order.
    pub checks: Vec<MetricCheck>,
    /// Human-readable summary: which metrics failed and by how much.
    pub reason: String,
}

/// Extracts every numeric top-level field of a serializable metric record (e.g. [`crate::Metrics`]) into a
/// name -> value map the guard reads. Non-numeric fields are skipped.
pub fn metric_map<T: Serialize>(metrics: &T) -> Result<BTreeMap<String, f64>, LifecycleError> {
    let value = serde_json::to_value(metrics).map_err(|e| LifecycleError::Serialize(e.to_string()))?;
    let mut out = BTreeMap::new();
    if let serde_json::Value::Object(map) = value {
        for (k, v) in map {
            if let Some(x) = v.as_f64() {
                out.insert(k, x);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(acc: f64, f1: f64, auc: f64) -> BTreeMap<String, f64> {
        BTreeMap::from([
            ("accuracy".to_string(), acc),
            ("f1_macro".to_string(), f1),
            ("roc_auc".to_string(), auc),
        ])
    }

    #[test]
    fn accepts_small_drop_and_improvement() {
        let g = GuardConfig::default();
        // 0.90 -> 0.86 is a 4.4 % relative drop: within 5 %.
        let d = g.decide(&rec(0.90, 0.88, 0.97), &rec(0.86, 0.90, 0.99));
        assert!(d.accepted, "{d:?}");
        assert!(d.checks.iter().all(|c| c.passed));
    }

    #[test]
    fn rejects_drop_beyond_tolerance_naming_the_metric() {
        let g = GuardConfig::default();
        // f1_macro 0.88 -> 0.80 is a 9.1 % relative drop.
        let d = g.decide(&rec(0.90, 0.88, 0.97), &rec(0.90, 0.80, 0.97));
        assert!(!d.accepted);
        assert!(d.reason.contains("f1_macro"), "{}", d.reason);
        let f1 = d.checks.iter().find(|c| c.metric == "f1_macro").expect("checked");
        let w = f1.relative_worsening.expect("finite");
        assert!((w - (0.88 - 0.80) / 0.88).abs() < 1e-12);
        // The decision round-trips through JSON for the federation log.
        let back: GuardDecision = serde_json::from_str(&serde_json::to_string(&d).expect("ser")).expect("de");
        // (floats are compared with a tolerance: serde_json's default float parsing is not bit-exact)
        assert_eq!(
            (back.accepted, &back.reason, back.checks.len()),
            (d.accepted, &d.reason, 3)
        );
        let w_back = back.checks[1].relative_worsening.expect("finite");
        assert!((w_back - w).abs() < 1e-12);
    }

    #[test]
    fn lower_is_better_metrics_mirror() {
        let g = GuardConfig::new(vec!["ece".into()], 0.05).expect("valid");
        let cur = BTreeMap::from([("ece".to_string(), 0.10)]);
        assert!(g.decide(&cur, &BTreeMap::from([("ece".to_string(), 0.104)])).accepted);
        assert!(!g.decide(&cur, &BTreeMap::from([("ece".to_string(), 0.2)])).accepted);
    }

    #[test]
    fn fails_closed_on_missing_or_nan() {
        let g = GuardConfig::default();
        let mut cand = rec(0.9, 0.9, 0.9);
        cand.remove("roc_auc");
        assert!(!g.decide(&rec(0.9, 0.9, 0.9), &cand).accepted);
        assert!(!g.decide(&rec(0.9, 0.9, 0.9), &rec(f64::NAN, 0.9, 0.9)).accepted);
    }

    #[test]
    fn unknown_metric_refused_at_load() {
        let err =
            serde_json::from_str::<GuardConfig>(r#"{"metrics":["accuracy","acuracy"]}"#).expect_err("unknown metric");
        assert!(err.to_string().contains("acuracy"), "{err}");
        let err = serde_json::from_str::<GuardConfig>(r#"{"max_relative_drop":1.5}"#).expect_err("bad tolerance");
        assert!(err.to_string().contains("1.5"), "{err}");
        assert!(serde_json::from_str::<GuardConfig>(r#"{"metrics":[]}"#).is_err());
        let ok: GuardConfig = serde_json::from_str("{}").expect("defaults");
        assert_eq!(ok, GuardConfig::default());
        // The brief's spelling `macro_f1` is an alias of the Metrics field `f1_macro`.
        let alias: GuardConfig =
            serde_json::from_str(r#"{"metrics":["accuracy","macro_f1","roc_auc"]}"#).expect("alias");
        assert_eq!(alias, GuardConfig::default());
    }

    #[test]
    fn metric_map_reads_numeric_fields() {
        #[derive(Serialize)]
        struct M {
            accuracy: f64,
            name: String,
        }
        let m = metric_map(&M {
            accuracy: 0.5,
            name: "x".into(),
        })
        .expect("map");
        assert_eq!(m.get("accuracy"), Some(&0.5));
        assert!(!m.contains_key("name"));
    }

    #[test]
    fn too_few_rows_are_not_judged_and_say_so() {
        let g = GuardConfig::new(vec!["accuracy".into()], 0.05).expect("a guard");
        let cur: BTreeMap<String, f64> = [("accuracy".to_string(), 0.9)].into();
        let worse: BTreeMap<String, f64> = [("accuracy".to_string(), 0.5)].into();
        let d = g.judge(MIN_GUARD_ROWS - 1, &cur, &worse);
        assert!(d.accepted && d.checks.is_empty(), "{d:?}");
        assert!(
            d.reason.contains(&format!("{} rows", MIN_GUARD_ROWS - 1)),
            "{}",
            d.reason
        );
        let d = g.judge(MIN_GUARD_ROWS, &cur, &worse);
        assert!(!d.accepted && d.checks.len() == 1, "{d:?}");
    }
}
