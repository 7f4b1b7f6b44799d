//! The architecture a deployable student records (model card, GGUF and f16 metadata) and must match when
//! it is read back: an MLP, or a CNN whose conv blocks are stored as im2col matrices (see [`super::conv`]).

use serde::{Deserialize, Serialize};

use crate::error::{MlError, Result};
use crate::model::ModelConfig;

use super::fakequant::Q8_BLOCK;

/// Rounds `n` up to a multiple of the Q8_0 block length.
pub fn pad32(n: usize) -> usize {
    n.div_ceil(Q8_BLOCK) * Q8_BLOCK
}

/// Values per output channel and input channel of a conv block's kernel (3x3).
pub const CONV_TAPS: usize = 9;

/// The architecture an exported student must match.
///
/// An MLP has no `channels`; a CNN lists its conv blocks' output channels in `channels` and its one hidden
/// linear layer in `hidden` (the [`ModelConfig::Cnn`] it was made from).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arch {
    /// Hidden widths, input side first (a CNN: the single hidden linear layer after the conv blocks).
    pub hidden: Vec<usize>,
    /// Input features.
    pub in_dim: usize,
    /// Classes.
    pub classes: usize,
    /// Output channels of each conv block (3x3 conv, padding 1, ReLU, 2x2 max-pool) of a CNN, input side
    /// first; empty for an MLP (and then absent from the JSON, so MLP cards read and write as before).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<usize>,
}

/// Shape of one conv block as the quantized student runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvBlock {
    /// Input channels.
    pub in_ch: usize,
    /// Output channels.
    pub out_ch: usize,
    /// Side of the square input feature map (the output, after pooling, is `side / 2`).
    pub side: usize,
}

impl ConvBlock {
    /// Columns of the im2col weight as stored: `in_ch * 9` padded to the Q8_0 block.
    pub fn cols(&self) -> usize {
        pad32(self.in_ch * CONV_TAPS)
    }
}

impl Arch {
    /// The architecture of `cfg` (an MLP or a CNN), validated for `in_dim` features and `classes` classes.
    pub fn from_config(cfg: &ModelConfig, in_dim: usize, classes: usize) -> Result<Arch> {
        cfg.validate(in_dim, classes)?;
        Ok(match cfg {
            ModelConfig::Mlp { hidden } => Arch {
                hidden: hidden.clone(),
                in_dim,
                classes,
                channels: Vec::new(),
            },
            ModelConfig::Cnn { channels, hidden } => Arch {
                hidden: vec![*hidden],
                in_dim,
                classes,
                channels: channels.clone(),
            },
        })
    }

    /// The model config this architecture was made from; an error when a CNN does not have exactly one
    /// hidden layer (only possible for an architecture read from a file).
    pub fn model_config(&self) -> Result<ModelConfig> {
        if self.channels.is_empty() {
            return Ok(ModelConfig::Mlp {
                hidden: self.hidden.clone(),
            });
        }
        match self.hidden[..] {
            [hidden] => Ok(ModelConfig::Cnn {
                channels: self.channels.clone(),
                hidden,
            }),
            _ => Err(MlError::InvalidConfig(format!(
                "a cnn has exactly one hidden linear layer, the architecture lists {:?}",
                self.hidden
            ))),
        }
    }

    /// Checks the architecture (e.g. one read from a file) as [`ModelConfig::validate`] does.
    pub fn validate(&self) -> Result<()> {
        self.model_config()?.validate(self.in_dim, self.classes)
    }

    /// Whether this is a CNN.
    pub fn is_cnn(&self) -> bool {
        !self.channels.is_empty()
    }

    /// The conv blocks, input side first (empty for an MLP).
    pub fn conv_blocks(&self) -> Vec<ConvBlock> {
        let mut side = image_side(self.in_dim);
        let mut in_ch = 1;
        self.channels
            .iter()
            .map(|&out_ch| {
                let b = ConvBlock { in_ch, out_ch, side };
                in_ch = out_ch;
                side /= 2;
                b
            })
            .collect()
    }

    /// Features entering the first linear layer: the input for an MLP, the flattened (channel, row,
    /// column) output of the last conv block for a CNN.
    pub fn flat_dim(&self) -> usize {
        match self.conv_blocks().last() {
            Some(b) => b.out_ch * (b.side / 2) * (b.side / 2),
            None => self.in_dim,
        }
    }

    /// `(in, out)` of each weight layer, unpadded, input side first: a CNN's conv blocks as im2col
    /// matrices (`in_ch * 9`, `out_ch`), then the linear layers.
    pub fn layer_dims(&self) -> Vec<(usize, usize)> {
        let mut dims: Vec<(usize, usize)> = self
            .conv_blocks()
            .iter()
            .map(|b| (b.in_ch * CONV_TAPS, b.out_ch))
            .collect();
        let mut prev = self.flat_dim();
        for &h in &self.hidden {
            dims.push((prev, h));
            prev = h;
        }
        dims.push((prev, self.classes));
        dims
    }

    /// `(in, out)` of each weight layer as stored: inputs padded to 32, hidden linear outputs padded to
    /// match (a conv block's output channels are not: the next block's im2col columns are padded instead).
    pub fn padded_dims(&self) -> Vec<(usize, usize)> {
        let dims = self.layer_dims();
        let convs = self.channels.len();
        let last = dims.len() - 1;
        dims.iter()
            .enumerate()
            .map(|(i, &(inp, out))| (pad32(inp), if i == last || i < convs { out } else { pad32(out) }))
            .collect()
    }
}

/// Side of a square single-channel image of `in_dim` pixels (validated configs only; 0 otherwise).
pub(crate) fn image_side(in_dim: usize) -> usize {
    let side = (in_dim as f64).sqrt().round() as usize;
    if side * side == in_dim {
        side
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cnn_dims_follow_the_blocks() {
        let cfg = ModelConfig::Cnn {
            channels: vec![4, 6],
            hidden: 10,
        };
        let a = Arch::from_config(&cfg, 64, 3).expect("arch");
        assert!(a.is_cnn());
        assert_eq!(
            a.conv_blocks(),
            vec![
                ConvBlock {
                    in_ch: 1,
                    out_ch: 4,
                    side: 8
                },
                ConvBlock {
                    in_ch: 4,
                    out_ch: 6,
                    side: 4
                }
            ]
        );
        // 8x8 -> pool -> 4x4 -> pool -> 2x2 of 6 channels: 24 features.
        assert_eq!(a.flat_dim(), 24);
        assert_eq!(a.layer_dims(), vec![(9, 4), (36, 6), (24, 10), (10, 3)]);
        assert_eq!(a.padded_dims(), vec![(32, 4), (64, 6), (32, 32), (32, 3)]);
        assert_eq!(a.model_config().expect("cfg"), cfg);
        // An MLP's card JSON has no `channels` key, and a card without it reads as an MLP.
        let mlp = Arch::from_config(&ModelConfig::Mlp { hidden: vec![5] }, 7, 2).expect("mlp");
        let json = serde_json::to_string(&mlp).expect("json");
        assert_eq!(json, r#"{"hidden":[5],"in_dim":7,"classes":2}"#);
        assert_eq!(serde_json::from_str::<Arch>(&json).expect("back"), mlp);
        let bad = Arch {
            hidden: vec![4, 4],
            ..a
        };
        assert!(bad.validate().is_err());
    }
}
