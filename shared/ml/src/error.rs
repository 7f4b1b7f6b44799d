//! The one error type of the ML stack, so callers can tell bad input from numeric failure.

use thiserror::Error;

/// Everything that can go wrong while building, training, distilling or evaluating a model.
#[derive(Debug, Error)]
pub enum MlError {
    /// A model configuration that cannot describe a network for the given input and classes.
    #[error("invalid model config: {0}")]
    InvalidConfig(String),
    /// A training or distillation hyper-parameter out of its valid range.
    #[error("invalid hyper-parameter: {0}")]
    InvalidHyperParameter(String),
    /// Input features, labels or soft labels of the wrong shape or with non-finite values.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Rows that should be probability distributions are not (range or sum).
    #[error("invalid probabilities: {0}")]
    InvalidProbabilities(String),
    /// The loss became NaN or infinite: training stopped instead of writing garbage weights.
    #[error("training diverged at epoch {epoch}, step {step}: loss = {loss}")]
    Diverged {
        /// Zero-based epoch (or epoch within the round, for distillation).
        epoch: usize,
        /// Zero-based optimizer step within that epoch.
        step: usize,
        /// The non-finite loss value observed.
        loss: f32,
    },
    /// A checkpoint that is missing tensors, has wrong shapes or cannot be parsed.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The file involved.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The file involved.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An error raised inside candle (tensor shape or backend failure).
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Result alias of the ML stack.
pub type Result<T, E = MlError> = std::result::Result<T, E>;
