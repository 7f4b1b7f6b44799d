//! The hidden activations of a model next to its logits (`Model::forward_features`) and their shapes
//! (`ModelConfig::feature_shapes`), for the feature-alignment stage of distillation (hint and attention
//! losses). A second forward function rather than a flag on `forward`, so the hot path stays as it was.

use candle_core::{Module, Tensor};
use serde::{Deserialize, Serialize};

use super::{conv1d, image_side, Model, ModelConfig, Net};
use crate::error::Result;

/// The shape of one hidden activation of a model, per sample (what [`Model::forward_features`] returns
/// for each hidden layer, without the batch dimension).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FeatureShape {
    /// A vector of `width` values (an MLP's hidden layer, a CNN's hidden linear layer).
    Flat {
        /// Values per sample.
        width: usize,
    },
    /// `channels` feature maps of `side` x `side` (a CNN's conv block after its pooling).
    Spatial {
        /// Feature maps.
        channels: usize,
        /// Height and width of each map.
        side: usize,
    },
    /// `channels` series of `length` steps (a 1-D CNN's conv block after its pooling).
    Sequence {
        /// Series (feature channels).
        channels: usize,
        /// Time steps of each series.
        length: usize,
    },
}

impl FeatureShape {
    /// Values per sample.
    pub fn numel(&self) -> usize {
        match *self {
            FeatureShape::Flat { width } => width,
            FeatureShape::Spatial { channels, side } => channels * side * side,
            FeatureShape::Sequence { channels, length } => channels * length,
        }
    }
}

impl std::fmt::Display for FeatureShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            FeatureShape::Flat { width } => write!(f, "{width} values"),
            FeatureShape::Spatial { channels, side } => write!(f, "{channels}x{side}x{side} maps"),
            FeatureShape::Sequence { channels, length } => write!(f, "{channels}x{length} series"),
        }
    }
}

impl ModelConfig {
    /// The per-sample shape of each hidden activation, input side first, for `in_dim` input features: after
    /// each hidden ReLU of an MLP; after each conv block (conv, ReLU, pool) and the hidden linear layer of a
    /// CNN (a 1-D CNN's blocks as [`FeatureShape::Sequence`]); a fused model's fused embedding and hidden
    /// layer. Empty for an MLP without hidden layers. Assumes
    /// `validate` passed (a CNN on a non-square input reports side 0).
    pub fn feature_shapes(&self, in_dim: usize) -> Vec<FeatureShape> {
        match self {
            ModelConfig::Mlp { hidden } => hidden.iter().map(|&width| FeatureShape::Flat { width }).collect(),
            ModelConfig::Cnn { channels, hidden } => {
                let mut side = image_side(in_dim).unwrap_or(0);
                let mut out: Vec<FeatureShape> = channels
                    .iter()
                    .map(|&c| {
                        side /= 2;
                        FeatureShape::Spatial { channels: c, side }
                    })
                    .collect();
                out.push(FeatureShape::Flat { width: *hidden });
                out
            }
            ModelConfig::Cnn1d {
                in_channels,
                channels,
                hidden,
                ..
            } => {
                let lengths = conv1d::pooled_lengths(in_dim, *in_channels, channels.len());
                let mut out: Vec<FeatureShape> = channels
                    .iter()
                    .zip(lengths)
                    .map(|(&c, length)| FeatureShape::Sequence { channels: c, length })
                    .collect();
                out.push(FeatureShape::Flat { width: *hidden });
                out
            }
            ModelConfig::Fused { embed, hidden, .. } => vec![
                FeatureShape::Flat { width: *embed },
                FeatureShape::Flat { width: *hidden },
            ],
        }
    }
}

impl Net {
    /// `forward` that also keeps each hidden activation (the shapes of `ModelConfig::feature_shapes`, with
    /// the batch first); the same operations in the same order, so the logits are identical.
    fn forward_features(&self, x: &Tensor) -> candle_core::Result<(Vec<Tensor>, Tensor)> {
        let mut feats = Vec::new();
        match self {
            Net::Mlp(layers) => {
                let mut h = x.clone();
                let last = layers.len() - 1;
                for (i, l) in layers.iter().enumerate() {
                    h = l.forward(&h)?;
                    if i != last {
                        h = h.relu()?;
                        feats.push(h.clone());
                    }
                }
                Ok((feats, h))
            }
            Net::Cnn { convs, side, head } => {
                let n = x.dim(0)?;
                let mut h = x.reshape((n, 1, *side, *side))?;
                for c in convs {
                    h = c.forward(&h)?.relu()?.max_pool2d(2)?;
                    feats.push(h.clone());
                }
                let h = h.flatten_from(1)?;
                let h = head[0].forward(&h)?.relu()?;
                feats.push(h.clone());
                Ok((feats, head[1].forward(&h)?))
            }
            Net::Cnn1d { convs, head } => {
                let h = convs.forward(x, Some(&mut feats))?.flatten_from(1)?;
                let h = head[0].forward(&h)?.relu()?;
                feats.push(h.clone());
                Ok((feats, head[1].forward(&h)?))
            }
            Net::Fused(f) => {
                let logits = f.forward(x, Some(&mut feats))?;
                Ok((feats, logits))
            }
        }
    }
}

impl Model {
    /// Forward pass on raw inputs `[n, in_dim]` that also returns every hidden activation, input side first:
    /// after each hidden ReLU of an MLP (`[n, width]`), after each conv block (`[n, channels, side, side]`,
    /// `[n, channels, length]` for a 1-D CNN) and the hidden linear layer (`[n, hidden]`) of a CNN; shapes as
    /// `ModelConfig::feature_shapes`. The logits equal `forward`'s.
    pub fn forward_features(&self, x: &Tensor) -> Result<(Vec<Tensor>, Tensor)> {
        let x = x.broadcast_sub(&self.shift)?.broadcast_mul(&self.scale)?;
        Ok(self.net.forward_features(&x)?)
    }

    /// The per-sample shape of each hidden activation (see `ModelConfig::feature_shapes`).
    pub fn feature_shapes(&self) -> Vec<FeatureShape> {
        self.cfg.feature_shapes(self.in_dim)
    }

    /// The input standardization as (shift, scale) tensors of `[in_dim]`: the model sees `(x - shift) * scale`.
    pub fn input_standardization(&self) -> (&Tensor, &Tensor) {
        (&self.shift, &self.scale)
    }
}
