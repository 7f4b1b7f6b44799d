//! The architecture a deployable student records (model card, GGUF and f16 metadata) and must match when
//! it is read back: an MLP, a CNN (on square images, or 1-D on time series) whose conv blocks are stored
//! as im2col matrices (see [`super::conv`]), or a fused model whose block encoders come first (see
//! [`super::fused`]).

use serde::{Deserialize, Serialize};

use crate::error::{MlError, Result};
use crate::model::{DropRate, ModelConfig};

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
/// linear layer in `hidden` (the [`ModelConfig::Cnn`] it was made from); a 1-D CNN also has `conv1d` (the
/// [`ModelConfig::Cnn1d`]'s input channels and kernel); a fused model has its one hidden layer in `hidden`
/// and its embedding width and block widths in `fused` (modality dropout is training only: not recorded).
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
    /// A 1-D CNN's input layout and kernel; absent for an MLP and a 2-D CNN (and then absent from the JSON,
    /// so their cards read and write as before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conv1d: Option<Conv1dArch>,
    /// A fused model's blocks and embedding; absent for every other kind (and then absent from the JSON, so
    /// their cards read and write as before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fused: Option<FusedArch>,
}

/// What a fused model adds to an [`Arch`]: its modality blocks and its embedding width.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FusedArch {
    /// Width of each block's embedding and of the attention gate.
    pub embed: usize,
    /// Inputs of each block, in input order; the presence inputs follow them, one per block.
    pub blocks: Vec<usize>,
}

/// What a 1-D CNN adds to an [`Arch`]: how its input is laid out and how wide its kernels are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conv1dArch {
    /// Channels of each time step; the input's `in_dim` values are channel-major (`c * length + t`).
    pub in_channels: usize,
    /// Taps of every conv kernel (odd; padding `kernel / 2` keeps the length).
    pub kernel: usize,
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

/// Shape of one conv block of a 1-D CNN as the quantized student runs it: a conv of `kernel` taps with
/// padding `kernel / 2`, ReLU, max-pool of 2 (floor).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv1dBlock {
    /// Input channels.
    pub in_ch: usize,
    /// Output channels.
    pub out_ch: usize,
    /// Steps of the input series (the output, after pooling, has `length / 2`).
    pub length: usize,
    /// Taps of the kernel.
    pub kernel: usize,
}

impl Conv1dBlock {
    /// Columns of the im2col weight as stored: `in_ch * kernel` padded to the Q8_0 block.
    pub fn cols(&self) -> usize {
        pad32(self.in_ch * self.kernel)
    }
}

/// One conv block of either kind, as the quantized student's front runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnyConvBlock {
    /// A 3x3 block of a CNN on square images.
    Square(ConvBlock),
    /// A block of a 1-D CNN on series.
    Line(Conv1dBlock),
}

impl AnyConvBlock {
    /// Input channels.
    pub fn in_ch(&self) -> usize {
        match self {
            AnyConvBlock::Square(b) => b.in_ch,
            AnyConvBlock::Line(b) => b.in_ch,
        }
    }

    /// Output channels.
    pub fn out_ch(&self) -> usize {
        match self {
            AnyConvBlock::Square(b) => b.out_ch,
            AnyConvBlock::Line(b) => b.out_ch,
        }
    }

    /// Kernel values per input channel: 9 for a 3x3 block, the kernel's taps for a 1-D one.
    pub fn taps(&self) -> usize {
        match self {
            AnyConvBlock::Square(_) => CONV_TAPS,
            AnyConvBlock::Line(b) => b.kernel,
        }
    }

    /// Columns of the im2col weight as stored: `in_ch * taps` padded to the Q8_0 block.
    pub fn cols(&self) -> usize {
        pad32(self.in_ch() * self.taps())
    }

    /// Output positions of the conv (before pooling): `side * side`, or the length.
    pub fn positions(&self) -> usize {
        match self {
            AnyConvBlock::Square(b) => b.side * b.side,
            AnyConvBlock::Line(b) => b.length,
        }
    }

    /// Positions after pooling: `(side / 2)^2`, or `length / 2`.
    pub fn pooled(&self) -> usize {
        match self {
            AnyConvBlock::Square(b) => (b.side / 2) * (b.side / 2),
            AnyConvBlock::Line(b) => b.length / 2,
        }
    }

    /// Values entering the block: `in_ch * positions`.
    pub fn in_values(&self) -> usize {
        self.in_ch() * self.positions()
    }

    /// Values leaving the block after pooling, channel-major: `out_ch * pooled`.
    pub fn out_values(&self) -> usize {
        self.out_ch() * self.pooled()
    }

    /// Shape of the conv weight as the f32 model and the f16 export hold it: `[out, in, 3, 3]`, or
    /// `[out, in, kernel]`.
    pub fn kernel_dims(&self) -> Vec<usize> {
        match self {
            AnyConvBlock::Square(b) => vec![b.out_ch, b.in_ch, 3, 3],
            AnyConvBlock::Line(b) => vec![b.out_ch, b.in_ch, b.kernel],
        }
    }

    /// Whether this block can follow `prev`: the same kind, reading `prev`'s pooled output.
    pub(crate) fn follows(&self, prev: &AnyConvBlock) -> bool {
        match (prev, self) {
            (AnyConvBlock::Square(p), AnyConvBlock::Square(b)) => b.in_ch == p.out_ch && b.side == p.side / 2,
            (AnyConvBlock::Line(p), AnyConvBlock::Line(b)) => {
                b.in_ch == p.out_ch && b.length == p.length / 2 && b.kernel == p.kernel
            }
            _ => false,
        }
    }
}

impl Arch {
    /// The architecture of `cfg` (an MLP, a CNN or a 1-D CNN), validated for `in_dim` features and `classes`
    /// classes.
    pub fn from_config(cfg: &ModelConfig, in_dim: usize, classes: usize) -> Result<Arch> {
        cfg.validate(in_dim, classes)?;
        Ok(match cfg {
            ModelConfig::Mlp { hidden } => Arch {
                hidden: hidden.clone(),
                in_dim,
                classes,
                channels: Vec::new(),
                conv1d: None,
                fused: None,
            },
            ModelConfig::Cnn { channels, hidden } => Arch {
                hidden: vec![*hidden],
                in_dim,
                classes,
                channels: channels.clone(),
                conv1d: None,
                fused: None,
            },
            ModelConfig::Cnn1d {
                in_channels,
                channels,
                hidden,
                kernel,
            } => Arch {
                hidden: vec![*hidden],
                in_dim,
                classes,
                channels: channels.clone(),
                conv1d: Some(Conv1dArch {
                    in_channels: *in_channels,
                    kernel: *kernel,
                }),
                fused: None,
            },
            ModelConfig::Fused {
                embed, hidden, blocks, ..
            } => Arch {
                hidden: vec![*hidden],
                in_dim,
                classes,
                channels: Vec::new(),
                conv1d: None,
                fused: Some(FusedArch {
                    embed: *embed,
                    blocks: blocks.clone(),
                }),
            },
        })
    }

    /// The model config this architecture was made from (a fused model's with the default modality
    /// dropout, which only training uses); an error when a CNN or a fused model does not have exactly one
    /// hidden layer, a 1-D layout comes without conv blocks, or a fused model with conv blocks (only
    /// possible for an architecture read from a file).
    pub fn model_config(&self) -> Result<ModelConfig> {
        if let Some(f) = &self.fused {
            return match (&self.hidden[..], self.channels.is_empty(), self.conv1d) {
                (&[hidden], true, None) => Ok(ModelConfig::Fused {
                    embed: f.embed,
                    hidden,
                    blocks: f.blocks.clone(),
                    dropout: DropRate::default(),
                }),
                (_, true, None) => Err(MlError::InvalidConfig(format!(
                    "a fused model has exactly one hidden linear layer, the architecture lists {:?}",
                    self.hidden
                ))),
                _ => Err(MlError::InvalidConfig(
                    "the architecture is fused (fused) and convolutional (channels, conv1d) at once".into(),
                )),
            };
        }
        if self.channels.is_empty() {
            if self.conv1d.is_some() {
                return Err(MlError::InvalidConfig(
                    "the architecture has a 1-D conv layout (conv1d) but no conv blocks (channels)".into(),
                ));
            }
            return Ok(ModelConfig::Mlp {
                hidden: self.hidden.clone(),
            });
        }
        match (&self.hidden[..], self.conv1d) {
            (&[hidden], None) => Ok(ModelConfig::Cnn {
                channels: self.channels.clone(),
                hidden,
            }),
            (&[hidden], Some(c)) => Ok(ModelConfig::Cnn1d {
                in_channels: c.in_channels,
                channels: self.channels.clone(),
                hidden,
                kernel: c.kernel,
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

    /// Whether this is a CNN (2-D or 1-D).
    pub fn is_cnn(&self) -> bool {
        !self.channels.is_empty()
    }

    /// Whether this is a 1-D CNN.
    pub fn is_cnn1d(&self) -> bool {
        self.is_cnn() && self.conv1d.is_some()
    }

    /// Whether this is a fused model.
    pub fn is_fused(&self) -> bool {
        self.fused.is_some()
    }

    /// Weight layers before the linear layers: a CNN's conv blocks, a fused model's block encoders (0 for an
    /// MLP).
    pub fn front_layers(&self) -> usize {
        match &self.fused {
            Some(f) => f.blocks.len(),
            None => self.channels.len(),
        }
    }

    /// The conv blocks of a 2-D CNN, input side first (empty for an MLP and a 1-D CNN: see [`Arch::blocks`]).
    pub fn conv_blocks(&self) -> Vec<ConvBlock> {
        if self.conv1d.is_some() {
            return Vec::new();
        }
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

    /// The conv blocks of either kind of CNN, input side first (empty for an MLP).
    pub fn blocks(&self) -> Vec<AnyConvBlock> {
        let Some(c) = self.conv1d else {
            return self.conv_blocks().into_iter().map(AnyConvBlock::Square).collect();
        };
        let mut length = self.in_dim.checked_div(c.in_channels).unwrap_or(0);
        let mut in_ch = c.in_channels;
        self.channels
            .iter()
            .map(|&out_ch| {
                let b = Conv1dBlock {
                    in_ch,
                    out_ch,
                    length,
                    kernel: c.kernel,
                };
                in_ch = out_ch;
                length /= 2;
                AnyConvBlock::Line(b)
            })
            .collect()
    }

    /// Features entering the first linear layer: the input for an MLP, the flattened (channel, row,
    /// column; or channel, step) output of the last conv block for a CNN, the fused embedding for a fused
    /// model.
    pub fn flat_dim(&self) -> usize {
        if let Some(f) = &self.fused {
            return f.embed;
        }
        match self.blocks().last() {
            Some(b) => b.out_values(),
            None => self.in_dim,
        }
    }

    /// `(in, out)` of each weight layer, unpadded, input side first: a CNN's conv blocks as im2col
    /// matrices (`in_ch * 9` or `in_ch * kernel`, `out_ch`), or a fused model's block encoders (`block
    /// inputs`, `embed`), then the linear layers. (A fused model's attention gate is not a weight layer:
    /// it stays f32.)
    pub fn layer_dims(&self) -> Vec<(usize, usize)> {
        let mut dims: Vec<(usize, usize)> = match &self.fused {
            Some(f) => f.blocks.iter().map(|&w| (w, f.embed)).collect(),
            None => self
                .blocks()
                .iter()
                .map(|b| (b.in_ch() * b.taps(), b.out_ch()))
                .collect(),
        };
        let mut prev = self.flat_dim();
        for &h in &self.hidden {
            dims.push((prev, h));
            prev = h;
        }
        dims.push((prev, self.classes));
        dims
    }

    /// `(in, out)` of each weight layer as stored: inputs padded to 32, hidden linear outputs padded to
    /// match (a conv block's output channels are not: the next block's im2col columns are padded instead;
    /// nor a fused model's embeddings, which the attention weighs before the head pads them).
    pub fn padded_dims(&self) -> Vec<(usize, usize)> {
        let dims = self.layer_dims();
        let convs = self.front_layers();
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

    #[test]
    fn arch_json_round_trips_for_every_kind() {
        let mlp = ModelConfig::Mlp { hidden: vec![5, 3] };
        let cnn = ModelConfig::Cnn {
            channels: vec![4, 6],
            hidden: 10,
        };
        let cnn1d = ModelConfig::Cnn1d {
            in_channels: 3,
            channels: vec![4, 6],
            hidden: 10,
            kernel: 7,
        };
        // MLP and 2-D CNN archs serialize exactly as before 1-D CNNs existed; a 1-D CNN adds `conv1d`.
        let cases = [
            (&mlp, 7, r#"{"hidden":[5,3],"in_dim":7,"classes":2}"#),
            (&cnn, 64, r#"{"hidden":[10],"in_dim":64,"classes":2,"channels":[4,6]}"#),
            (
                &cnn1d,
                75,
                r#"{"hidden":[10],"in_dim":75,"classes":2,"channels":[4,6],"conv1d":{"in_channels":3,"kernel":7}}"#,
            ),
        ];
        for (cfg, in_dim, want) in cases {
            let a = Arch::from_config(cfg, in_dim, 2).expect("arch");
            let json = serde_json::to_string(&a).expect("json");
            assert_eq!(json, want);
            let back: Arch = serde_json::from_str(&json).expect("back");
            assert_eq!(back, a);
            assert_eq!(&back.model_config().expect("cfg"), cfg);
        }
        // The 1-D blocks: 25 steps of 3 channels, pooled to 12, then 6.
        let a = Arch::from_config(&cnn1d, 75, 2).expect("arch");
        assert!(a.is_cnn() && a.is_cnn1d());
        assert!(a.conv_blocks().is_empty(), "no 2-D blocks");
        let line = |in_ch, out_ch, length| {
            AnyConvBlock::Line(Conv1dBlock {
                in_ch,
                out_ch,
                length,
                kernel: 7,
            })
        };
        assert_eq!(a.blocks(), vec![line(3, 4, 25), line(4, 6, 12)]);
        assert_eq!(a.flat_dim(), 36);
        assert_eq!(a.layer_dims(), vec![(21, 4), (28, 6), (36, 10), (10, 2)]);
        assert_eq!(a.padded_dims(), vec![(32, 4), (32, 6), (64, 32), (32, 2)]);
        // A 1-D layout needs conv blocks; a 1-D CNN has one hidden layer; the config's checks apply.
        let no_blocks = Arch {
            channels: Vec::new(),
            ..a.clone()
        };
        assert!(no_blocks
            .validate()
            .is_err_and(|e| e.to_string().contains("no conv blocks")));
        let deep = Arch {
            hidden: vec![4, 4],
            ..a.clone()
        };
        assert!(deep.validate().is_err_and(|e| e.to_string().contains("one hidden")));
        let even = Arch {
            conv1d: Some(Conv1dArch {
                in_channels: 3,
                kernel: 6,
            }),
            ..a
        };
        assert!(even.validate().is_err_and(|e| e.to_string().contains("kernel 6")));
    }
}
