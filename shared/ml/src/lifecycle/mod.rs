//! Student lifecycle: the degradation guard that decides whether a candidate student replaces the current
//! one, and A/B comparison (McNemar's exact test, shadow mode) of two students on the same samples.

pub mod ab;
pub mod guard;
pub mod mcnemar;

pub use ab::{argmax_rows, compare_predictions, AbDecision, AbReport, Shadow, ShadowReport};
pub use guard::{
    metric_map, Direction, GuardConfig, GuardDecision, MetricCheck, KNOWN_METRICS, MIN_GUARD_ROWS, REGRESSION_METRICS,
};
pub use mcnemar::{mcnemar_exact_p, PairedCounts};

/// Errors of the lifecycle layer.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// A guard config names a metric the guard does not know.
    #[error("unknown guard metric `{name}` (known: {known})")]
    UnknownMetric {
        /// The name as written.
        name: String,
        /// The names the guard knows.
        known: String,
    },
    /// A guard config lists no metric.
    #[error("guard config lists no metric to watch")]
    NoGuardMetrics,
    /// The guard tolerance is outside `[0, 1)`.
    #[error("guard max_relative_drop {0} is outside [0, 1)")]
    BadTolerance(f64),
    /// The significance level is outside `(0, 1)`.
    #[error("significance level alpha {0} is outside (0, 1)")]
    BadAlpha(f64),
    /// Prediction and label vectors of a paired comparison differ in length.
    #[error("paired comparison needs equal lengths: a={a} b={b} labels={labels}")]
    LengthMismatch {
        /// Predictions of A.
        a: usize,
        /// Predictions of B.
        b: usize,
        /// Labels.
        labels: usize,
    },
    /// A paired comparison got no samples.
    #[error("paired comparison got no samples")]
    NoSamples,
    /// A metric record could not be serialized.
    #[error("cannot serialize metric record: {0}")]
    Serialize(String),
}
