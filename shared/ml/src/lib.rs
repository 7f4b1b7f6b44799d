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
pub mod optim;
pub mod progress;
pub mod quant;
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
