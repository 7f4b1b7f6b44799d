//! fedistill's ML stack on candle: models, teacher training, distillation, evaluation, benchmarks.
//!
//! Everything runs on candle's CPU device and is seeded: the same seed gives the same weights.

pub mod augment;
pub mod bench;
pub mod codistill;
pub mod distill;
pub mod dpsgd;
pub mod error;
pub mod fedavg;
pub mod lifecycle;
pub mod local;
pub mod loss;
pub mod metrics;
pub mod model;
pub mod moe;
pub mod optim;
pub mod progress;
pub mod quant;
pub mod regression;
pub mod sizing;
pub mod stages;
pub mod step;
pub mod train;

pub use distill::{
    confidence_weights, validate_probabilities, ConfidenceWeighting, DistillConfig, DistillStats, Distiller, InputNorm,
    ReplayBuffer, SoftTargets, TemperatureSchedule,
};
pub use dpsgd::{train_teacher_dp, DpSgdConfig, DpTrainStats};
pub use error::MlError;
pub use metrics::{evaluate, evaluate_slices, Metrics};
pub use model::{Model, ModelConfig};
pub use optim::{AdamWParams, FusedAdamW};
pub use progress::{Progress, ProgressMode};
pub use train::{train_teacher, train_teacher_with_stats, TrainConfig, TrainStats};

/// Re-exported so callers can name `VarMap` without depending on candle-nn directly.
pub use candle_nn::VarMap;

/// Fixes the number of threads candle's CPU kernels use in this process, once, at start (call it before
/// any other thread exists: it may set an environment variable). candle reads `RAYON_NUM_THREADS` on every
/// matrix product and, when it is unset, counts the physical cores by parsing `/proc/cpuinfo` each time:
/// in a 10-participant federation on 2 cores that was about 4% of all CPU time (docs/ml.md, "Where a
/// round's time goes"). A value the operator set is kept; otherwise it becomes the parallelism this
/// process may use (CPU affinity and cgroup quota included). Returns the thread count.
pub fn init_compute_threads() -> usize {
    const VAR: &str = "RAYON_NUM_THREADS";
    if let Some(n) = std::env::var(VAR)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
    {
        return n;
    }
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::env::set_var(VAR, n.to_string());
    n
}
