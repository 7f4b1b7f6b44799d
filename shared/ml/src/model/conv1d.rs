//! The 1-D CNN for time series (`ModelConfig::Cnn1d`): its validation, its conv blocks in candle and the
//! floor max-pool that the f32 model, the quantized student and QAT share, so all three pool alike.

use candle_core::{Module, Tensor};
use candle_nn::{Conv1d, Conv1dConfig, VarBuilder};

use super::{check_widths, MAX_WIDTH};
use crate::error::{MlError, Result};

/// Most conv blocks of a 1-D CNN (as of a 2-D one).
const MAX_BLOCKS: usize = 4;
/// Smallest kernel accepted (taps per input channel).
const MIN_KERNEL: usize = 3;
/// Largest kernel accepted.
const MAX_KERNEL: usize = 15;
/// `in_channels` of a `ModelConfig::Cnn1d` that leaves it out: a univariate series.
pub const CNN1D_DEFAULT_IN_CHANNELS: usize = 1;
/// `kernel` of a `ModelConfig::Cnn1d` that leaves it out.
pub const CNN1D_DEFAULT_KERNEL: usize = 5;

/// serde's default of `in_channels`.
pub(crate) fn default_in_channels() -> usize {
    CNN1D_DEFAULT_IN_CHANNELS
}

/// serde's default of `kernel`.
pub(crate) fn default_kernel() -> usize {
    CNN1D_DEFAULT_KERNEL
}

/// Time steps of an input of `in_dim` values in `in_channels` channels (0 without channels).
pub(crate) fn seq_length(in_dim: usize, in_channels: usize) -> usize {
    in_dim.checked_div(in_channels).unwrap_or(0)
}

/// `ModelConfig::Cnn1d`'s checks on `in_dim` input values; every message names the problem.
pub(crate) fn validate(
    in_channels: usize,
    channels: &[usize],
    hidden: usize,
    kernel: usize,
    in_dim: usize,
) -> Result<()> {
    let bad = |m: String| Err(MlError::InvalidConfig(m));
    if channels.is_empty() || channels.len() > MAX_BLOCKS {
        return bad(format!(
            "cnn1d needs 1..={MAX_BLOCKS} conv blocks, got {}",
            channels.len()
        ));
    }
    check_widths("channels", channels)?;
    check_widths("hidden", &[hidden])?;
    if !(1..=MAX_WIDTH).contains(&in_channels) {
        return bad(format!("cnn1d in_channels {in_channels} out of range 1..={MAX_WIDTH}"));
    }
    if !in_dim.is_multiple_of(in_channels) {
        return bad(format!(
            "cnn1d with {in_channels} input channels needs an input dimension divisible by {in_channels} \
             (channel-major: in_dim = in_channels * length), got {in_dim}"
        ));
    }
    if !(MIN_KERNEL..=MAX_KERNEL).contains(&kernel) || kernel.is_multiple_of(2) {
        return bad(format!(
            "cnn1d kernel {kernel} must be odd and in {MIN_KERNEL}..={MAX_KERNEL} (padding kernel / 2 keeps the \
             length)"
        ));
    }
    let length = seq_length(in_dim, in_channels);
    let need = 1usize << channels.len();
    if length < need {
        return bad(format!(
            "cnn1d with {} pooling blocks needs a length of at least {need} steps, got {length} ({in_dim} values \
             in {in_channels} channels)",
            channels.len()
        ));
    }
    Ok(())
}

/// Max-pool of 2 with stride 2 over the last axis of `[n, c, len]`: `[n, c, len / 2]`, a trailing odd step
/// dropped (floor, as candle's pooling does). A max over pairs rather than candle's `max_pool2d`, whose
/// backward hands a window's single maximum the gradient divided by the window size and, for an odd
/// length, upsamples the pooled map onto the wrong windows; this one gives each maximum its whole gradient.
pub(crate) fn max_pool1d(h: &Tensor) -> candle_core::Result<Tensor> {
    let (n, c, len) = h.dims3()?;
    let half = len / 2;
    let h = if 2 * half == len {
        h.clone()
    } else {
        h.narrow(2, 0, 2 * half)?
    };
    h.reshape((n, c, half, 2))?.max(3)
}

/// The conv blocks of a 1-D CNN, read from the VarBuilder (`convs.{i}.weight` `[out, in, kernel]`,
/// `convs.{i}.bias`).
pub(super) struct Conv1dStack {
    convs: Vec<Conv1d>,
    in_channels: usize,
    length: usize,
}

impl Conv1dStack {
    /// The blocks for `in_dim` input values; returns them and the number of features they hand to the
    /// linear layers (channels times pooled length of the last block).
    pub(super) fn build(
        in_channels: usize,
        channels: &[usize],
        kernel: usize,
        in_dim: usize,
        vb: &VarBuilder,
    ) -> Result<(Conv1dStack, usize)> {
        let length = seq_length(in_dim, in_channels);
        let mut convs = Vec::with_capacity(channels.len());
        let (mut prev, mut len) = (in_channels, length);
        for (i, &c) in channels.iter().enumerate() {
            let vbc = vb.pp("convs").pp(i.to_string());
            let w = vbc.get((c, prev, kernel), "weight")?;
            let b = vbc.get(c, "bias")?;
            let cfg = Conv1dConfig {
                padding: kernel / 2,
                ..Default::default()
            };
            convs.push(Conv1d::new(w, Some(b), cfg));
            prev = c;
            len /= 2;
        }
        let stack = Conv1dStack {
            convs,
            in_channels,
            length,
        };
        Ok((stack, prev * len))
    }

    /// The blocks on standardized rows `[n, in_dim]`: each block's output `[n, channels, length]` after
    /// conv, ReLU and pooling (`keep` collects every one; the last is returned).
    pub(super) fn forward(&self, x: &Tensor, mut keep: Option<&mut Vec<Tensor>>) -> candle_core::Result<Tensor> {
        let n = x.dim(0)?;
        let mut h = x.reshape((n, self.in_channels, self.length))?;
        for c in &self.convs {
            h = max_pool1d(&c.forward(&h)?.relu()?)?;
            if let Some(k) = keep.as_deref_mut() {
                k.push(h.clone());
            }
        }
        Ok(h)
    }
}

/// Output length of each block of a 1-D CNN on `in_dim` values, input side first (after pooling).
pub(crate) fn pooled_lengths(in_dim: usize, in_channels: usize, blocks: usize) -> Vec<usize> {
    let mut len = seq_length(in_dim, in_channels);
    (0..blocks)
        .map(|_| {
            len /= 2;
            len
        })
        .collect()
}

/// A seeded two-class series task for the 1-D CNN's tests: `n` samples of `in_channels` x `length` values
/// (channel-major) of uniform noise in [-0.5, 0.5), one channel of which carries a Gaussian bump (height 2,
/// sigma 1.5); the class is whether the bump's centre sits in the first half of the series (0) or the
/// second (1). Returns (features, labels).
#[cfg(test)]
pub(crate) fn bump_task(n: usize, in_channels: usize, length: usize, seed: u64) -> (Vec<f32>, Vec<u32>) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let half = length / 2;
    let mut x = Vec::with_capacity(n * in_channels * length);
    let mut y = Vec::with_capacity(n);
    for _ in 0..n {
        let class = rng.random_range(0..2u32);
        // Centres at least 3 steps from the ends and from the middle, so no bump straddles the halves.
        let centre = if class == 0 {
            rng.random_range(3..half - 2)
        } else {
            rng.random_range(half + 3..length - 3)
        } as f32;
        let channel = rng.random_range(0..in_channels);
        for c in 0..in_channels {
            for t in 0..length {
                let noise = rng.random_range(-0.5f32..0.5);
                let d = t as f32 - centre;
                let bump = if c == channel { 2.0 * (-d * d / 4.5).exp() } else { 0.0 };
                x.push(noise + bump);
            }
        }
        y.push(class);
    }
    (x, y)
}

/// A 1-D CNN (2 channels of 33 steps, blocks of 8 and 16 channels, kernel 5, hidden 16) trained by
/// `train_teacher` on 600 series of [`bump_task`], with 300 test series: (model, test features, test labels).
#[cfg(test)]
pub(crate) fn bump_teacher() -> Result<(super::Model, Vec<f32>, Vec<u32>)> {
    use crate::train::{train_teacher, TrainConfig};
    let (channels, length) = (2, 33);
    let (x, y) = bump_task(600, channels, length, 7);
    let ds = fedistill_data::Dataset::new(
        "bumps",
        x,
        y,
        channels * length,
        fedistill_data::DataKind::Tabular,
        vec!["first half".into(), "second half".into()],
    )
    .map_err(|e| MlError::InvalidInput(e.to_string()))?;
    let tc = TrainConfig {
        epochs: 12,
        batch_size: 32,
        lr: 3e-3,
        patience: 12,
        seed: 3,
        ..TrainConfig::default()
    };
    let cfg = super::ModelConfig::Cnn1d {
        in_channels: channels,
        channels: vec![8, 16],
        hidden: 16,
        kernel: 5,
    };
    let m = train_teacher(&cfg, &ds, &tc, &crate::Progress::hidden())?;
    let (tx, ty) = bump_task(300, channels, length, 8);
    Ok((m, tx, ty))
}

#[cfg(test)]
mod tests;
