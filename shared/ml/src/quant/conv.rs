//! The conv blocks of a quantized CNN student. Each 3x3 conv (padding 1) is stored as its im2col matrix
//! `[out_ch, pad32(in_ch * 9)]` (column `c * 9 + ky * 3 + kx`, the `[out, in, 3, 3]` weight flattened, then
//! zero columns up to the Q8_0 block), in the same formats as a linear layer, so a conv is a linear layer
//! applied to every output position's patch: Q8_0 blocks run through the same kernels (candle's `QMatMul`,
//! the dequantized copy, the int8 row kernel). The input standardization is applied to the raw image
//! exactly as `Model::forward` does, not folded: the conv pads the *standardized* image with zeros, which
//! no change of the first conv's weights and bias reproduces at the border.
//!
//! A 1-D CNN's blocks go the same way: a conv of `k` taps (padding `k / 2`) is stored as `[out_ch,
//! pad32(in_ch * k)]` (column `c * k + j`, the `[out, in, k]` weight flattened), its im2col row at step `t`
//! holds step `t + j - k / 2` of each input channel (0 outside the series), and the pooling is the f32
//! model's floor max-pool of 2.

use candle_core::{Device, Tensor};

use crate::error::{MlError, Result};
use crate::model::max_pool1d;

use super::arch::{AnyConvBlock, ConvBlock, CONV_TAPS};
use super::model::QLayer;

/// The front of a quantized CNN (2-D or 1-D): standardization, then the conv blocks.
#[derive(Debug)]
pub(crate) struct ConvStack {
    /// Per-feature shift of the standardization (`input.shift`), `[in_dim]`.
    pub shift: Vec<f32>,
    /// Per-feature scale (`input.scale`), `[in_dim]`.
    pub scale: Vec<f32>,
    /// Shape of each block.
    pub blocks: Vec<AnyConvBlock>,
    /// The im2col weights of each block, `[out_ch, block.cols()]`.
    pub layers: Vec<QLayer>,
    shift_t: Tensor,
    scale_t: Tensor,
}

impl ConvStack {
    /// Assembles the stack; every layer must have the im2col shape of its block.
    pub fn new(shift: Vec<f32>, scale: Vec<f32>, blocks: Vec<AnyConvBlock>, layers: Vec<QLayer>) -> Result<ConvStack> {
        let first = blocks
            .first()
            .ok_or_else(|| MlError::InvalidConfig("a cnn needs at least one conv block".into()))?;
        let d = first.in_values();
        if shift.len() != d || scale.len() != d || blocks.len() != layers.len() {
            return Err(MlError::InvalidConfig(format!(
                "conv stack: {} shift / {} scale values for {d} inputs, {} blocks for {} layers",
                shift.len(),
                scale.len(),
                blocks.len(),
                layers.len()
            )));
        }
        for (i, (b, l)) in blocks.iter().zip(&layers).enumerate() {
            if (l.out_dim, l.in_dim) != (b.out_ch(), b.cols()) {
                return Err(MlError::InvalidConfig(format!(
                    "convs.{i}.weight is [{}, {}], expected [{}, {}]",
                    l.out_dim,
                    l.in_dim,
                    b.out_ch(),
                    b.cols()
                )));
            }
        }
        let shift_t = Tensor::from_slice(&shift, d, &Device::Cpu)?;
        let scale_t = Tensor::from_slice(&scale, d, &Device::Cpu)?;
        Ok(ConvStack {
            shift,
            scale,
            blocks,
            layers,
            shift_t,
            scale_t,
        })
    }

    /// Input values (pixels, or channels times steps).
    pub fn in_dim(&self) -> usize {
        self.shift.len()
    }

    /// Features the blocks hand to the linear layers (channel-major, as the f32 model flattens them).
    pub fn flat_dim(&self) -> usize {
        self.blocks.last().map_or(0, AnyConvBlock::out_values)
    }

    /// Rows per chunk of a batched forward so that the largest im2col matrix stays near 4 Mi values.
    pub fn chunk_rows(&self) -> usize {
        let widest = self.blocks.iter().map(|b| b.positions() * b.cols()).max().unwrap_or(1);
        ((4 << 20) / widest.max(1)).max(1)
    }

    /// The blocks on raw rows `x` (`[n, in_dim]`): flattened features `[n, flat_dim]`. With `io`, every
    /// block's input as it enters the weights (the im2col matrix) and its output before ReLU
    /// (`[n * positions, out_ch]`) are pushed, for calibration.
    pub fn forward(
        &self,
        x: &Tensor,
        quantized_kernel: bool,
        mut io: Option<&mut Vec<(Tensor, Tensor)>>,
    ) -> Result<Tensor> {
        let x = x.broadcast_sub(&self.shift_t)?.broadcast_mul(&self.scale_t)?;
        let mut h = match self.blocks.first() {
            Some(first) => input_maps(&x, first)?,
            None => x,
        };
        let n = h.dim(0)?;
        for (b, l) in self.blocks.iter().zip(&self.layers) {
            let cols = im2col_block(&h, b, b.cols())?;
            let y = l.forward(&cols, quantized_kernel)?;
            h = relu_pool_block(&y, n, b)?;
            if let Some(io) = io.as_deref_mut() {
                io.push((cols, y));
            }
        }
        Ok(h.flatten_from(1)?)
    }
}

/// Standardized rows `[n, in_dim]` as the first block reads them: `[n, 1, side, side]` maps, or
/// `[n, in_ch, length]` series (channel-major, as the rows hold them).
pub(crate) fn input_maps(x: &Tensor, first: &AnyConvBlock) -> candle_core::Result<Tensor> {
    let n = x.dim(0)?;
    match first {
        AnyConvBlock::Square(b) => x.reshape((n, 1, b.side, b.side)),
        AnyConvBlock::Line(b) => x.reshape((n, b.in_ch, b.length)),
    }
}

/// im2col of a block's input (`[n, ch, side, side]` or `[n, ch, length]`) with `cols >= ch * taps` columns:
/// [`im2col_tensor`] or [`im2col1d_tensor`].
pub(crate) fn im2col_block(h: &Tensor, b: &AnyConvBlock, cols: usize) -> candle_core::Result<Tensor> {
    match b {
        AnyConvBlock::Square(_) => im2col_tensor(h, cols),
        AnyConvBlock::Line(b) => im2col1d_tensor(h, b.kernel, cols),
    }
}

/// ReLU and pooling of a block's output `[n * positions, out_ch]`: [`relu_pool_tensor`] or
/// [`relu_pool1d_tensor`].
pub(crate) fn relu_pool_block(y: &Tensor, n: usize, b: &AnyConvBlock) -> candle_core::Result<Tensor> {
    match b {
        AnyConvBlock::Square(b) => relu_pool_tensor(y, n, b),
        AnyConvBlock::Line(b) => relu_pool1d_tensor(y, n, b.length, b.out_ch),
    }
}

/// im2col of series `[n, ch, length]` in candle ops (differentiable: QAT runs it too): one row per sample
/// and step, `cols >= ch * kernel` columns, column `c * kernel + j` holding step `t + j - kernel / 2` of
/// channel `c` (0 outside the series), zeros after `ch * kernel`.
pub(crate) fn im2col1d_tensor(h: &Tensor, kernel: usize, cols: usize) -> candle_core::Result<Tensor> {
    let (n, ch, len) = h.dims3()?;
    let pad = kernel / 2;
    let p = h.pad_with_zeros(2, pad, pad)?;
    let taps = (0..kernel)
        .map(|j| p.narrow(2, j, len))
        .collect::<candle_core::Result<Vec<_>>>()?;
    // [n, ch, kernel, len] -> [n, len, ch, kernel]
    let m = Tensor::stack(&taps, 2)?
        .permute((0, 3, 1, 2))?
        .reshape((n * len, ch * kernel))?;
    if cols > ch * kernel {
        m.pad_with_zeros(1, 0, cols - ch * kernel)
    } else {
        Ok(m)
    }
}

/// ReLU and floor max-pool of 2 of a 1-D block's output `[n * length, out_ch]` (step-major, as the im2col
/// product gives it): `[n, out_ch, length / 2]`.
pub(crate) fn relu_pool1d_tensor(y: &Tensor, n: usize, length: usize, out_ch: usize) -> candle_core::Result<Tensor> {
    let h = y.reshape((n, length, out_ch))?.permute((0, 2, 1))?.relu()?;
    max_pool1d(&h)?.contiguous()
}

/// im2col of feature maps `[n, ch, side, side]` in candle ops (differentiable: QAT runs it too): one row
/// per sample and output position (row-major), `cols >= ch * 9` columns, column `c * 9 + ky * 3 + kx`
/// holding pixel (y + ky - 1, x + kx - 1) of channel `c` (0 outside the image), zeros after `ch * 9`.
pub(crate) fn im2col_tensor(h: &Tensor, cols: usize) -> candle_core::Result<Tensor> {
    let (n, ch, side, _) = h.dims4()?;
    let p = h.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?;
    let mut taps = Vec::with_capacity(CONV_TAPS);
    for ky in 0..3 {
        for kx in 0..3 {
            taps.push(p.narrow(2, ky, side)?.narrow(3, kx, side)?);
        }
    }
    // [n, ch, 9, side, side] -> [n, side, side, ch, 9]
    let m = Tensor::stack(&taps, 2)?
        .permute((0, 3, 4, 1, 2))?
        .reshape((n * side * side, ch * CONV_TAPS))?;
    if cols > ch * CONV_TAPS {
        m.pad_with_zeros(1, 0, cols - ch * CONV_TAPS)
    } else {
        Ok(m)
    }
}

/// ReLU and 2x2 max-pool of a block's output `[n * side * side, out_ch]` (position-major, as the im2col
/// product gives it): `[n, out_ch, side / 2, side / 2]`.
pub(crate) fn relu_pool_tensor(y: &Tensor, n: usize, b: &ConvBlock) -> candle_core::Result<Tensor> {
    y.reshape((n, b.side, b.side, b.out_ch))?
        .permute((0, 3, 1, 2))?
        .relu()?
        .max_pool2d(2)?
        .contiguous()
}

/// Writes the im2col row of output position (`y`, `x`) of a `ch` x `side` x `side` feature map (CHW) into
/// `dst[..ch * 9]`, laid out as [`im2col_tensor`]'s rows; `dst` beyond `ch * 9` (the Q8_0 padding) is left
/// as it is, for the caller to zero once.
#[inline(always)]
pub(crate) fn patch(src: &[f32], ch: usize, side: usize, y: usize, x: usize, dst: &mut [f32]) {
    let plane = side * side;
    for (c, taps) in dst[..ch * CONV_TAPS].chunks_exact_mut(CONV_TAPS).enumerate() {
        let img = &src[c * plane..][..plane];
        for ky in 0..3 {
            for kx in 0..3 {
                // (y + ky - 1, x + kx - 1) without going below zero.
                let (yy, xx) = ((y + ky).wrapping_sub(1), (x + kx).wrapping_sub(1));
                taps[ky * 3 + kx] = if yy < side && xx < side {
                    img[yy * side + xx]
                } else {
                    0.0
                };
            }
        }
    }
}

/// ReLU and 2x2 max-pool of one sample's block output held position-major (`side * side` rows of `out_ch`),
/// written channel-major (`out_ch` x `side / 2` x `side / 2`) as the f32 model flattens it.
#[inline(always)]
pub(crate) fn relu_pool(src: &[f32], out_ch: usize, side: usize, dst: &mut [f32]) {
    let half = side / 2;
    for c in 0..out_ch {
        for py in 0..half {
            for px in 0..half {
                let mut m = 0f32;
                for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                    m = m.max(src[((2 * py + dy) * side + 2 * px + dx) * out_ch + c]);
                }
                dst[(c * half + py) * half + px] = m;
            }
        }
    }
}

/// Writes the im2col row of step `t` of a `ch` x `len` series (channel-major) into `dst[..ch * kernel]`, laid
/// out as [`im2col1d_tensor`]'s rows; `dst` beyond `ch * kernel` is left as it is (as [`patch`] does).
#[inline(always)]
pub(crate) fn patch1d(src: &[f32], ch: usize, len: usize, kernel: usize, t: usize, dst: &mut [f32]) {
    let pad = kernel / 2;
    for (c, taps) in dst[..ch * kernel].chunks_exact_mut(kernel).enumerate() {
        let series = &src[c * len..][..len];
        for (j, tap) in taps.iter_mut().enumerate() {
            // t + j - pad without going below zero.
            let s = (t + j).wrapping_sub(pad);
            *tap = if s < len { series[s] } else { 0.0 };
        }
    }
}

/// ReLU and floor max-pool of 2 of one sample's 1-D block output held step-major (`len` rows of `out_ch`),
/// written channel-major (`out_ch` x `len / 2`) as the f32 model flattens it.
#[inline(always)]
pub(crate) fn relu_pool1d(src: &[f32], out_ch: usize, len: usize, dst: &mut [f32]) {
    let half = len / 2;
    for c in 0..out_ch {
        for p in 0..half {
            let (a, b) = (src[2 * p * out_ch + c], src[(2 * p + 1) * out_ch + c]);
            dst[c * half + p] = 0f32.max(a).max(b);
        }
    }
}

/// [`patch`] or [`patch1d`] for output position `p` (row-major, or the step) of block `b`.
#[inline(always)]
pub(crate) fn patch_at(src: &[f32], b: &AnyConvBlock, p: usize, dst: &mut [f32]) {
    match b {
        AnyConvBlock::Square(b) => patch(src, b.in_ch, b.side, p / b.side, p % b.side, dst),
        AnyConvBlock::Line(b) => patch1d(src, b.in_ch, b.length, b.kernel, p, dst),
    }
}

/// [`relu_pool`] or [`relu_pool1d`] of block `b`'s output.
#[inline(always)]
pub(crate) fn relu_pool_at(src: &[f32], b: &AnyConvBlock, dst: &mut [f32]) {
    match b {
        AnyConvBlock::Square(b) => relu_pool(src, b.out_ch, b.side, dst),
        AnyConvBlock::Line(b) => relu_pool1d(src, b.out_ch, b.length, dst),
    }
}

#[cfg(test)]
mod tests1d;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Model, ModelConfig};
    use crate::quant::{Kernel, Profile, QuantizedModel};

    /// The 4x4 image 1..16, row by row.
    fn image() -> Vec<f32> {
        (1..=16).map(|v| v as f32).collect()
    }

    #[test]
    fn patches_of_a_4x4_image_by_hand() {
        let img = image();
        let mut row = vec![-1f32; 32];
        // Top-left corner: the first row and column of taps fall in the zero padding.
        patch(&img, 1, 4, 0, 0, &mut row);
        assert_eq!(&row[..9], &[0., 0., 0., 0., 1., 2., 0., 5., 6.]);
        // The padding columns are the caller's: untouched.
        assert!(row[9..].iter().all(|&v| v == -1.0));
        // (1, 2): fully inside.
        patch(&img, 1, 4, 1, 2, &mut row);
        assert_eq!(&row[..9], &[2., 3., 4., 6., 7., 8., 10., 11., 12.]);
        // (3, 3): bottom-right corner.
        patch(&img, 1, 4, 3, 3, &mut row);
        assert_eq!(&row[..9], &[11., 12., 0., 15., 16., 0., 0., 0., 0.]);
        // Two channels of a 2x2 map: channel 0's nine taps, then channel 1's.
        let two = [1., 2., 3., 4., 10., 20., 30., 40.];
        patch(&two, 2, 2, 0, 0, &mut row);
        assert_eq!(
            &row[..18],
            &[0., 0., 0., 0., 1., 2., 0., 3., 4., 0., 0., 0., 0., 10., 20., 0., 30., 40.]
        );
        // The candle im2col gives the same rows, zero-padded to 32 columns.
        let t = Tensor::from_slice(&two, (1, 2, 2, 2), &Device::Cpu).expect("t");
        let m: Vec<Vec<f32>> = im2col_tensor(&t, 32).expect("im2col").to_vec2().expect("v");
        assert_eq!(m.len(), 4);
        assert_eq!(&m[0][..18], &row[..18]);
        assert!(m[0][18..].iter().all(|&v| v == 0.0));
        let t = Tensor::from_slice(&img, (1, 1, 4, 4), &Device::Cpu).expect("t");
        let m: Vec<Vec<f32>> = im2col_tensor(&t, 32).expect("im2col").to_vec2().expect("v");
        for y in 0..4 {
            for x in 0..4 {
                patch(&img, 1, 4, y, x, &mut row);
                assert_eq!(&m[y * 4 + x][..9], &row[..9], "position ({y}, {x})");
            }
        }
    }

    #[test]
    fn relu_pool_by_hand() {
        // 4x4 positions of 2 channels, position-major: channel 0 = position index, channel 1 = -index.
        let src: Vec<f32> = (0..16).flat_map(|p| [p as f32, -(p as f32)]).collect();
        let mut dst = vec![9f32; 8];
        relu_pool(&src, 2, 4, &mut dst);
        // Channel 0: the bottom-right of each 2x2 window (5, 7, 13, 15); channel 1: ReLU gives 0.
        assert_eq!(dst, vec![5., 7., 13., 15., 0., 0., 0., 0.]);
    }

    /// A CNN on 4x4 images with one block of 2 channels (a 3x3 box sum; 20 minus the centre pixel), and an
    /// identity head, so its logits are the pooled feature maps themselves.
    fn hand_cnn() -> Model {
        let cfg = ModelConfig::Cnn {
            channels: vec![2],
            hidden: 8,
        };
        let m = Model::new(&cfg, 16, 8, 1).expect("model");
        let mut conv = vec![1f32; 9];
        conv.extend([0., 0., 0., 0., -1., 0., 0., 0., 0.]);
        let eye: Vec<f32> = (0..64).map(|i| if i % 9 == 0 { 1.0 } else { 0.0 }).collect();
        let set = |name: &str, v: Vec<f32>, dims: &[usize]| {
            let data = m.varmap().data().lock().expect("lock");
            let t = Tensor::from_vec(v, dims, &Device::Cpu).expect("t");
            data.get(name).expect("var").set(&t).expect("set");
        };
        set("convs.0.weight", conv, &[2, 1, 3, 3]);
        set("convs.0.bias", vec![0., 20.], &[2]);
        set("layers.0.weight", eye.clone(), &[8, 8]);
        set("layers.0.bias", vec![0.; 8], &[8]);
        set("layers.1.weight", eye, &[8, 8]);
        set("layers.1.bias", vec![0.; 8], &[8]);
        m
    }

    #[test]
    fn conv_of_a_4x4_image_by_hand() {
        // Box sums of 1..16 with zero padding:
        //   14 24 30 22        20 - centre: 19 18 17 16
        //   33 54 63 45                     15 14 13 12
        //   57 90 99 69                     11 10  9  8
        //   46 72 78 54                      7  6  5  4
        // 2x2 max-pools: [54, 63, 90, 99] and [19, 17, 11, 9].
        let want = [54f32, 63., 90., 99., 19., 17., 11., 9.];
        let m = hand_cnn();
        let x = image();
        assert_eq!(m.logits(&x, 1).expect("f32"), want);
        let mut q = QuantizedModel::from_model(&m, Profile::F32).expect("quantize");
        for kernel in [Kernel::RowInt8, Kernel::Quantized, Kernel::Dequantized] {
            q.set_kernel(kernel);
            // Integers in f32, sums below 2^24: exact whatever the summation order.
            assert_eq!(q.logits(&x, 1).expect("logits"), want, "{kernel:?}");
        }
        // Standardization is applied before the zero padding: with shift 1 the box sums change by the
        // number of taps inside the image (4 at a corner, 6 at an edge, 9 inside), which no bias
        // folding could reproduce.
        m.fit_input_normalization(&[0., 2.].repeat(8), 1, false).expect("norm");
        let shifted = m.logits(&x, 1).expect("f32");
        assert_eq!(shifted, [45., 54., 81., 90., 20., 18., 12., 10.]);
        let q = QuantizedModel::from_model(&m, Profile::F32).expect("quantize");
        assert_eq!(q.logits_rows(&x, 1).expect("rows"), shifted);
        assert_eq!(q.logits_with(&x, 1, false).expect("tensor"), shifted);
        // Int8: weights and every layer's input rounded to Q8_0 (a step of max|block| / 127 each): within
        // 2% of the largest logit.
        let q = QuantizedModel::from_model(&m, Profile::Int8).expect("quantize");
        for got in [
            q.logits_rows(&x, 1).expect("rows"),
            q.logits_with(&x, 1, true).expect("q"),
        ] {
            for (a, b) in got.iter().zip(&shifted) {
                assert!((a - b).abs() <= 0.02 * 90.0, "{a} vs {b}");
            }
        }
    }

    fn agreement(a: &[f32], b: &[f32], c: usize) -> f64 {
        let same = a
            .chunks_exact(c)
            .zip(b.chunks_exact(c))
            .filter(|(x, y)| crate::model::argmax(x) == crate::model::argmax(y))
            .count();
        same as f64 / (a.len() / c) as f64
    }

    #[test]
    fn every_kernel_and_instruction_set_agrees_on_random_cnns() {
        use rand::{Rng, SeedableRng};
        // One and two blocks; im2col widths 9 -> 32 and 27 -> 32, 36 -> 64; per-pixel standardization.
        let cases: [(&[usize], usize, usize, usize); 3] =
            [(&[4], 64, 12, 3), (&[3, 4], 256, 20, 5), (&[4, 3], 64, 7, 2)];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for (seed, &(channels, d, hidden, c)) in cases.iter().enumerate() {
            let cfg = ModelConfig::Cnn {
                channels: channels.to_vec(),
                hidden,
            };
            let m = Model::new(&cfg, d, c, seed as u64).expect("model");
            let n = 7;
            let x: Vec<f32> = (0..n * d).map(|_| rng.random_range(-2.0f32..3.0)).collect();
            m.fit_input_normalization(&x, n, true).expect("norm");
            let want = m.logits(&x, n).expect("f32");
            crate::quant::assert_every_kernel_agrees(&m, &x, n, &want, &format!("{channels:?}"));
        }
    }

    #[test]
    fn a_trained_digits_cnn_keeps_its_predictions_in_int8() {
        use crate::quant::ptq::{quantize, PtqOptions};
        use crate::train::{train_teacher, TrainConfig};
        let fed = crate::quant::digits_split();
        let cfg = ModelConfig::Cnn {
            channels: vec![8, 16],
            hidden: 32,
        };
        let tc = TrainConfig {
            epochs: 20,
            batch_size: 32,
            lr: 3e-3,
            patience: 20,
            seed: 2,
            ..TrainConfig::default()
        };
        let m = train_teacher(&cfg, &fed.shards[0], &tc, &crate::Progress::hidden()).expect("train");
        let (x, n, c) = (&fed.test.features, fed.test.n, fed.test.num_classes);
        let want = m.logits(x, n).expect("f32");
        let acc = |l: &[f32]| {
            let right = l
                .chunks_exact(c)
                .zip(&fed.test.labels)
                .filter(|(r, &y)| crate::model::argmax(r) as u32 == y)
                .count();
            right as f64 / n as f64
        };
        let f32_acc = acc(&want);
        assert!(f32_acc > 0.85, "the CNN did not learn: accuracy {f32_acc}");
        // F32 profile: the same function as the candle model.
        let q = QuantizedModel::from_model(&m, Profile::F32).expect("f32");
        for kernel in [Kernel::RowInt8, Kernel::Quantized, Kernel::Dequantized] {
            for (a, b) in q.logits_kernel(x, n, kernel).expect("logits").iter().zip(&want) {
                assert!((a - b).abs() < 1e-4, "{kernel:?}: {a} vs {b}");
            }
        }
        // INT8, plain and calibrated (bias correction), through every kernel: the predictions stay.
        let (ptq, report) = quantize(
            &m,
            Profile::Int8,
            &fed.public.features,
            fed.public.n,
            &PtqOptions::default(),
        )
        .expect("ptq");
        assert_eq!(report.layers.len(), 4);
        assert_eq!(report.layers[1].name, "convs.1.weight");
        assert_eq!(report.layers[1].shape, [16, 96]);
        assert_eq!(
            report.calibration_samples,
            fed.public.n.min(crate::quant::CNN_CALIBRATION_SAMPLES)
        );
        for l in &report.layers {
            assert!(l.weight_rel_l2 > 0.0 && l.weight_rel_l2 < 0.02, "{l:?}");
            assert!(l.output_rel_l2_corrected <= l.output_rel_l2 + 1e-9, "{l:?}");
        }
        for (name, q) in [
            ("int8", QuantizedModel::from_model(&m, Profile::Int8).expect("int8")),
            ("int8 ptq", ptq),
            (
                "sandwich",
                QuantizedModel::from_model(&m, Profile::Sandwich).expect("sandwich"),
            ),
        ] {
            for kernel in [Kernel::RowInt8, Kernel::Quantized, Kernel::Dequantized] {
                let got = q.logits_kernel(x, n, kernel).expect("logits");
                let agree = agreement(&got, &want, c);
                eprintln!(
                    "{name} {kernel:?}: agreement {agree:.4}, accuracy {:.4} (f32 {f32_acc:.4}, {n} test digits)",
                    acc(&got)
                );
                assert!(agree >= 0.98, "{name} {kernel:?}: argmax agreement {agree}");
            }
        }
    }
}
