//! The batch-1 kernel of the quantized student ([`super::Kernel::RowInt8`]): one row at a time through
//! Q8_0 x Q8_0 and f32 matrix-vector products in plain Rust, written once and compiled twice: for the
//! build's baseline target (SSE2 on x86-64, NEON on aarch64; runs anywhere) and, on x86-64 CPUs that have
//! it, for AVX2, picked at run time through `pulp`'s feature-detected token so that this crate stays free
//! of `unsafe`. Both compilations do the same float operations in the same order (integer block sums are
//! exact, f32 products are never fused), so they return bit-identical logits. The Q8_0 arithmetic is that
//! of candle's `vec_dot_q8_0_q8_0` (per 32-value block an exact integer dot product scaled by both f16
//! scales), summed block after block in f32 where candle sums in another order.
//!
//! Q8_0 weights are stored in tiles of [`TILE_ROWS`] output rows by one 32-value block, so the AVX2 path
//! reduces the eight rows' block sums to one register (one conversion, one multiply, one add per tile)
//! instead of one horizontal sum per row and block.
//!
//! A CNN's conv blocks run in front of the linear layers: per output position the im2col patch goes
//! through the block's weights like an input row through a linear layer (quantized to Q8_0 for a Q8_0
//! block), then ReLU and 2x2 max-pool (a 1-D CNN's: per step, then ReLU and max-pool of 2). A fused model's
//! block encoders run the same way on each block's columns, then its f32 attention gate weighs the
//! embeddings of the blocks the row holds.

use serde::{Deserialize, Serialize};

use crate::error::{MlError, Result};

use super::arch::AnyConvBlock;
use super::conv::{patch_at, relu_pool_at};
use super::fakequant::Q8_BLOCK;
use super::fused::Gate;

/// Output rows per tile: one AVX2 register of f32 accumulators.
const TILE_ROWS: usize = 8;
/// Values of one tile (`TILE_ROWS` rows of one block).
const TILE: usize = TILE_ROWS * Q8_BLOCK;
/// Bytes of one ggml Q8_0 block: an f16 scale and 32 int8 values.
const Q8_BLOCK_BYTES: usize = 2 + Q8_BLOCK;

/// Instruction set the batch-1 kernel runs on. Both give bit-identical logits; only the speed differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowSimd {
    /// The build's baseline target (SSE2 on x86-64, NEON on aarch64): available everywhere.
    Portable,
    /// AVX2 on x86-64 (integer multiply-adds on 16 lanes, 8 output rows per register).
    Avx2,
}

impl RowSimd {
    /// The fastest instruction set this CPU offers (what [`super::QuantizedModel::logits_rows`] uses).
    pub fn detect() -> RowSimd {
        if RowSimd::Avx2.is_available() {
            RowSimd::Avx2
        } else {
            RowSimd::Portable
        }
    }

    /// Whether this CPU (and this build's target) can run it.
    pub fn is_available(self) -> bool {
        self.isa().is_some()
    }

    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            RowSimd::Portable => "portable",
            RowSimd::Avx2 => "avx2",
        }
    }

    fn isa(self) -> Option<Isa> {
        match self {
            RowSimd::Portable => Some(Isa::Portable),
            #[cfg(target_arch = "x86_64")]
            RowSimd::Avx2 => pulp::x86::V3::try_new().map(Isa::Avx2),
            #[cfg(not(target_arch = "x86_64"))]
            RowSimd::Avx2 => None,
        }
    }
}

impl std::fmt::Display for RowSimd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A detected instruction set: the AVX2 variant holds pulp's proof that the CPU has AVX2 (and FMA,
/// BMI, ...), which is what makes entering code compiled for it safe.
#[derive(Debug, Clone, Copy)]
enum Isa {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2(pulp::x86::V3),
}

/// Q8_0 weights of one layer tiled for the batch-1 kernel: output rows in groups of [`TILE_ROWS`] (the
/// last group padded with zero rows), each group stored block after block.
#[derive(Debug)]
pub(crate) struct Q8Tiles {
    /// int8 values, `[group][block][row in group][32]`.
    qs: Vec<i8>,
    /// Weight scales (f16 widened to f32), `[group][block][row in group]`.
    d: Vec<f32>,
    /// Bias, `[out]`.
    bias: Vec<f32>,
    in_dim: usize,
    out_dim: usize,
}

impl Q8Tiles {
    /// Tiles the ggml Q8_0 bytes of an `[out_dim, in_dim]` weight (row-major blocks of 34 bytes).
    pub fn from_ggml(data: &[u8], out_dim: usize, in_dim: usize, bias: Vec<f32>) -> Result<Q8Tiles> {
        if in_dim == 0 || !in_dim.is_multiple_of(Q8_BLOCK) {
            return Err(MlError::InvalidConfig(format!(
                "Q8_0 layer input width {in_dim} is not a multiple of {Q8_BLOCK}"
            )));
        }
        let blocks = in_dim / Q8_BLOCK;
        let expected = out_dim * blocks * Q8_BLOCK_BYTES;
        if data.len() != expected {
            return Err(MlError::InvalidConfig(format!(
                "Q8_0 tensor holds {} bytes, expected {expected}",
                data.len()
            )));
        }
        if bias.len() != out_dim {
            return Err(MlError::InvalidConfig(format!(
                "bias holds {} values, expected {out_dim}",
                bias.len()
            )));
        }
        let groups = out_dim.div_ceil(TILE_ROWS);
        let mut qs = vec![0i8; groups * blocks * TILE];
        let mut d = vec![0f32; groups * blocks * TILE_ROWS];
        for (i, blk) in data.chunks_exact(Q8_BLOCK_BYTES).enumerate() {
            let (o, b) = (i / blocks, i % blocks);
            let tile = (o / TILE_ROWS) * blocks + b;
            let r = o % TILE_ROWS;
            d[tile * TILE_ROWS + r] = half::f16::from_le_bytes([blk[0], blk[1]]).to_f32();
            let dst = &mut qs[tile * TILE + r * Q8_BLOCK..][..Q8_BLOCK];
            for (q, &byte) in dst.iter_mut().zip(&blk[2..]) {
                *q = i8::from_le_bytes([byte]);
            }
        }
        Ok(Q8Tiles {
            qs,
            d,
            bias,
            in_dim,
            out_dim,
        })
    }
}

/// f32 (or f16-rounded) weights of one layer, row-major `[out, in]`.
#[derive(Debug)]
pub(crate) struct F32Rows {
    pub w: Vec<f32>,
    pub bias: Vec<f32>,
    pub in_dim: usize,
    pub out_dim: usize,
}

/// Weights of one layer laid out for the batch-1 kernel.
#[derive(Debug)]
pub(crate) enum RowWeights {
    /// A Q8_0 layer: the input is quantized to Q8_0 and multiplied in integers.
    Q8(Q8Tiles),
    /// An f32 or f16 layer: f32 dot products.
    F32(F32Rows),
}

impl RowWeights {
    fn dims(&self) -> (usize, usize) {
        match self {
            RowWeights::Q8(t) => (t.in_dim, t.out_dim),
            RowWeights::F32(f) => (f.in_dim, f.out_dim),
        }
    }
}

/// A CNN's front for the batch-1 kernel: the standardization of the raw input and the conv blocks.
pub(crate) struct ConvRows<'a> {
    /// Per-input shift, `[d]`.
    pub shift: &'a [f32],
    /// Per-input scale, `[d]`.
    pub scale: &'a [f32],
    /// Shape of each block.
    pub blocks: &'a [AnyConvBlock],
    /// Each block's im2col weights, `[out_ch, block.cols()]`.
    pub weights: &'a [&'a RowWeights],
}

impl ConvRows<'_> {
    fn check(&self, d: usize) -> Result<usize> {
        let fits = self.shift.len() == d
            && self.scale.len() == d
            && self.blocks.len() == self.weights.len()
            && self.blocks.first().is_some_and(|b| b.in_values() == d)
            && self
                .blocks
                .iter()
                .zip(self.weights)
                .all(|(b, w)| w.dims() == (b.cols(), b.out_ch()))
            && self.blocks.windows(2).all(|p| p[1].follows(&p[0]));
        if !fits {
            return Err(MlError::InvalidConfig(format!("conv blocks do not fit {d} features")));
        }
        Ok(self.blocks.last().map_or(d, AnyConvBlock::out_values))
    }
}

/// A fused model's front for the batch-1 kernel: the block encoders and the attention gate.
pub(crate) struct FusedRows<'a> {
    /// `(offset, width)` of each block in a raw row.
    pub spans: &'a [(usize, usize)],
    /// Index of the first presence input.
    pub presence: usize,
    /// Each block's encoder, `[embed, pad32(width)]`.
    pub weights: &'a [&'a RowWeights],
    /// The f32 gate.
    pub gate: &'a Gate,
}

impl FusedRows<'_> {
    fn check(&self, d: usize) -> Result<usize> {
        let e = self.gate.embed;
        let fits = self.spans.len() == self.weights.len()
            && self.presence + self.spans.len() == d
            && self
                .spans
                .iter()
                .zip(self.weights)
                .all(|(&(at, w), l)| at + w <= self.presence && l.dims().1 == e && l.dims().0 >= w);
        if !fits {
            return Err(MlError::InvalidConfig(format!("fused blocks do not fit {d} features")));
        }
        Ok(e)
    }
}

/// What runs in front of the linear layers of [`forward_rows`].
pub(crate) enum Front<'a> {
    /// A CNN's standardization and conv blocks.
    Conv(ConvRows<'a>),
    /// A fused model's encoders and gate.
    Fused(FusedRows<'a>),
}

/// Logits of `n` rows of `d` raw features through `front` (a CNN's or a fused model's, if any) and `layers`
/// (ReLU between them): `n * classes` values. Inputs of the first linear layer are zero-padded to its width;
/// each layer's input is the previous output. `simd` must be available (see [`RowSimd::is_available`]).
pub(crate) fn forward_rows(
    front: Option<&Front<'_>>,
    layers: &[&RowWeights],
    x: &[f32],
    n: usize,
    d: usize,
    classes: usize,
    simd: RowSimd,
) -> Result<Vec<f32>> {
    let isa = simd
        .isa()
        .ok_or_else(|| MlError::InvalidConfig(format!("this CPU cannot run the {simd} row kernel")))?;
    let Some(first) = layers.first() else {
        return Err(MlError::InvalidConfig("model without layers".into()));
    };
    let features = match front {
        Some(Front::Conv(c)) => c.check(d)?,
        Some(Front::Fused(f)) => f.check(d)?,
        None => d,
    };
    let width = first.dims().0;
    if width < features || layers.last().is_some_and(|l| l.dims().1 < classes) {
        return Err(MlError::InvalidConfig(format!(
            "layers do not fit {features} features and {classes} classes"
        )));
    }
    let run = Forward {
        front,
        layers,
        x,
        n,
        d,
        classes,
    };
    Ok(match isa {
        Isa::Portable => run.rows(Portable),
        // `vectorize` runs the closure in a function compiled with AVX2 enabled; everything it calls
        // is `#[inline(always)]`, so it all gets AVX2 code.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2(v3) => v3.vectorize(
            #[inline(always)]
            || run.rows(Avx2(v3)),
        ),
    })
}

/// One call of [`forward_rows`], checked.
struct Forward<'a> {
    front: Option<&'a Front<'a>>,
    layers: &'a [&'a RowWeights],
    x: &'a [f32],
    n: usize,
    d: usize,
    classes: usize,
}

impl Forward<'_> {
    #[inline(always)]
    fn rows<K: Q8Gemv>(&self, k: K) -> Vec<f32> {
        let last = self.layers.len() - 1;
        let widest = self
            .layers
            .iter()
            .map(|l| l.dims().0.max(l.dims().1))
            .max()
            .unwrap_or(0);
        let mut out = Vec::with_capacity(self.n * self.classes);
        let (mut h, mut y) = (vec![0f32; widest], vec![0f32; widest]);
        let (mut xq, mut xd) = (vec![0i16; widest], vec![0f32; widest / Q8_BLOCK]);
        let mut d16 = vec![half::f16::ZERO; widest / Q8_BLOCK];
        let mut conv = match self.front {
            Some(Front::Conv(c)) => Some(ConvScratch::new(c, self.d)),
            _ => None,
        };
        let mut fused = match self.front {
            Some(Front::Fused(f)) => Some(FusedScratch::new(f)),
            _ => None,
        };
        for row in self.x.chunks_exact(self.d.max(1)).take(self.n) {
            let mut width = match (self.front, conv.as_mut(), fused.as_mut()) {
                (Some(Front::Conv(c)), Some(s), _) => s.features(k, c, row, &mut h),
                (Some(Front::Fused(f)), _, Some(s)) => s.features(k, f, row, &mut h),
                _ => {
                    h[..self.d].copy_from_slice(row);
                    self.d
                }
            };
            for (i, l) in self.layers.iter().enumerate() {
                let (inp, outd) = l.dims();
                // Zero padding up to the layer's input width (only the first layer's in practice: the
                // widths chain).
                if inp > width {
                    h[width..inp].fill(0.0);
                }
                let (src, dst) = (&h[..inp], &mut y[..outd]);
                match l {
                    RowWeights::Q8(t) => {
                        let (xq, xd) = (&mut xq[..inp], &mut xd[..inp / Q8_BLOCK]);
                        quantize_row_q8(src, xd, xq, &mut d16);
                        k.q8(t, xq, xd, dst);
                    }
                    RowWeights::F32(f) => gemv_f32(f, src, dst),
                }
                if i != last {
                    for v in dst.iter_mut() {
                        *v = v.max(0.0);
                    }
                }
                width = outd;
                std::mem::swap(&mut h, &mut y);
            }
            out.extend_from_slice(&h[..self.classes]);
        }
        out
    }
}

/// Buffers of a CNN's front for one call of [`forward_rows`].
struct ConvScratch {
    /// Feature maps in and out of a block (CHW).
    a: Vec<f32>,
    b: Vec<f32>,
    /// A block's output before pooling, position-major.
    out: Vec<f32>,
    /// One im2col patch and its Q8_0 form.
    patch: Vec<f32>,
    xq: Vec<i16>,
    xd: Vec<f32>,
    d16: Vec<half::f16>,
}

impl ConvScratch {
    fn new(c: &ConvRows<'_>, d: usize) -> ConvScratch {
        let maps = c
            .blocks
            .iter()
            .map(|b| b.in_values().max(b.out_values()))
            .fold(d, usize::max);
        let out = c.blocks.iter().map(|b| b.out_ch() * b.positions()).max().unwrap_or(0);
        let cols = c.blocks.iter().map(AnyConvBlock::cols).max().unwrap_or(0);
        ConvScratch {
            a: vec![0.0; maps],
            b: vec![0.0; maps],
            out: vec![0.0; out],
            patch: vec![0.0; cols],
            xq: vec![0; cols],
            xd: vec![0.0; cols / Q8_BLOCK],
            d16: vec![half::f16::ZERO; cols / Q8_BLOCK],
        }
    }

    /// Standardizes one raw row as `Model::standardize` does, runs the conv blocks and writes the
    /// flattened features to `dst`; returns their count.
    #[inline(always)]
    fn features<K: Q8Gemv>(&mut self, k: K, c: &ConvRows<'_>, row: &[f32], dst: &mut [f32]) -> usize {
        for (((a, &v), s), sc) in self.a.iter_mut().zip(row).zip(c.shift).zip(c.scale) {
            *a = (v - s) * sc;
        }
        let mut flat = row.len();
        for (b, w) in c.blocks.iter().zip(c.weights) {
            let (cols, plane, out_ch) = (b.cols(), b.positions(), b.out_ch());
            let patch = &mut self.patch[..cols];
            // Columns past in_ch * taps stay zero: the Q8_0 padding.
            patch.fill(0.0);
            let src = &self.a[..b.in_ch() * plane];
            for p in 0..plane {
                patch_at(src, b, p, patch);
                let y = &mut self.out[p * out_ch..][..out_ch];
                match w {
                    RowWeights::Q8(t) => {
                        let (xq, xd) = (&mut self.xq[..cols], &mut self.xd[..cols / Q8_BLOCK]);
                        quantize_row_q8(patch, xd, xq, &mut self.d16);
                        k.q8(t, xq, xd, y);
                    }
                    RowWeights::F32(f) => gemv_f32(f, patch, y),
                }
            }
            flat = b.out_values();
            relu_pool_at(&self.out[..out_ch * plane], b, &mut self.b[..flat]);
            std::mem::swap(&mut self.a, &mut self.b);
        }
        dst[..flat].copy_from_slice(&self.a[..flat]);
        flat
    }
}

/// Buffers of a fused model's front for one call of [`forward_rows`].
struct FusedScratch {
    /// One block's columns, zero-padded to its encoder's width, and their Q8_0 form.
    patch: Vec<f32>,
    xq: Vec<i16>,
    xd: Vec<f32>,
    d16: Vec<half::f16>,
    /// The block embeddings, `[blocks][embed]`.
    emb: Vec<f32>,
    /// The gate's two projections of one embedding.
    tv: Vec<f32>,
    su: Vec<f32>,
    /// The attention logits, then weights, per block.
    att: Vec<f32>,
}

impl FusedScratch {
    fn new(f: &FusedRows<'_>) -> FusedScratch {
        let cols = f.weights.iter().map(|w| w.dims().0).max().unwrap_or(0);
        let (b, e) = (f.spans.len(), f.gate.embed);
        FusedScratch {
            patch: vec![0.0; cols],
            xq: vec![0; cols],
            xd: vec![0.0; cols / Q8_BLOCK],
            d16: vec![half::f16::ZERO; cols / Q8_BLOCK],
            emb: vec![0.0; b * e],
            tv: vec![0.0; e],
            su: vec![0.0; e],
            att: vec![0.0; b],
        }
    }

    /// Runs one raw row through the encoders and the gate, as `FusedFront::forward` does, and writes the
    /// fused embedding to `dst`; returns its width.
    #[inline(always)]
    fn features<K: Q8Gemv>(&mut self, k: K, f: &FusedRows<'_>, row: &[f32], dst: &mut [f32]) -> usize {
        let (g, e) = (f.gate, f.gate.embed);
        for (b, (&(at, w), wts)) in f.spans.iter().zip(f.weights).enumerate() {
            let cols = wts.dims().0;
            let patch = &mut self.patch[..cols];
            patch.fill(0.0);
            patch[..w].copy_from_slice(&row[at..at + w]);
            let y = &mut self.emb[b * e..(b + 1) * e];
            match wts {
                RowWeights::Q8(t) => {
                    let (xq, xd) = (&mut self.xq[..cols], &mut self.xd[..cols / Q8_BLOCK]);
                    quantize_row_q8(patch, xd, xq, &mut self.d16);
                    k.q8(t, xq, xd, y);
                }
                RowWeights::F32(l) => gemv_f32(l, patch, y),
            }
            for v in y.iter_mut() {
                *v = v.max(0.0);
            }
            let present = f64::from(row[f.presence + b]) >= crate::model::fused::PRESENT;
            self.att[b] = if present {
                for j in 0..e {
                    let (vr, ur) = (&g.v_w[j * e..(j + 1) * e], &g.u_w[j * e..(j + 1) * e]);
                    self.tv[j] = (dot_f32(vr, y) + g.v_b[j]).tanh();
                    self.su[j] = 1.0 / (1.0 + (-(dot_f32(ur, y) + g.u_b[j])).exp());
                }
                let mut a = 0f32;
                for j in 0..e {
                    a += g.w[j] * self.tv[j] * self.su[j];
                }
                a
            } else {
                crate::model::fused::MASKED_LOGIT
            };
        }
        let max = self.att.iter().fold(f32::NEG_INFINITY, |m, &a| m.max(a));
        let mut sum = 0f32;
        for a in self.att.iter_mut() {
            *a = (*a - max).exp();
            sum += *a;
        }
        let z = &mut dst[..e];
        z.fill(0.0);
        for (b, &a) in self.att.iter().enumerate() {
            let w = a / sum;
            for (zj, &ej) in z.iter_mut().zip(&self.emb[b * e..(b + 1) * e]) {
                *zj += w * ej;
            }
        }
        e
    }
}

/// Quantizes one row to Q8_0 exactly as candle's `BlockQ8_0::from_float`: per block of 32 the scale
/// `max |x| / 127` rounded to f16 (`xd`), values `round(x / scale)` (`xq`, widened to i16 for the
/// multiply-add). `d16` is scratch for the scales' f16 rounding, done for the whole row in one call.
#[inline(always)]
fn quantize_row_q8(x: &[f32], xd: &mut [f32], xq: &mut [i16], d16: &mut [half::f16]) {
    for ((block, d), q) in x
        .chunks_exact(Q8_BLOCK)
        .zip(xd.iter_mut())
        .zip(xq.chunks_exact_mut(Q8_BLOCK))
    {
        // max |x| ignoring NaN, as candle's `f32::max` fold: non-negative floats order like their bit
        // patterns, so an integer max over 8 lanes (which vectorizes; a float one does not) gives it.
        let mut m = [0i32; 8];
        for c in block.chunks_exact(8) {
            for (m, v) in m.iter_mut().zip(c) {
                let bits = (v.to_bits() & 0x7fff_ffff) as i32;
                *m = (*m).max(if bits > 0x7f80_0000 { 0 } else { bits });
            }
        }
        let amax = f32::from_bits(m.into_iter().fold(0, i32::max) as u32);
        let scale = amax / 127.0;
        let inv = if scale != 0.0 { 1.0 / scale } else { 0.0 };
        *d = scale;
        for (q, v) in q.iter_mut().zip(block) {
            *q = round_q8(v * inv);
        }
    }
    use half::slice::HalfFloatSliceExt;
    let d16 = &mut d16[..xd.len()];
    d16.convert_from_f32_slice(xd);
    d16.convert_to_f32_slice(xd);
}

/// `y.round() as i8` (half away from zero, saturating, NaN to 0), widened, in operations that vectorize
/// on any x86-64 (no libm call, no float-to-int cast, which LLVM scalarizes).
#[inline(always)]
fn round_q8(y: f32) -> i16 {
    /// 2^23: adding it to a float in [0, 2^23) rounds it to an integer (ties to even) held in the
    /// mantissa bits.
    const MAGIC: f32 = 8_388_608.0;
    let a = y.abs();
    // NaN to 0, beyond the i8 range to 256 (saturated below).
    let a = if a <= 256.0 {
        a
    } else if a > 256.0 {
        256.0
    } else {
        0.0
    };
    let big = a + MAGIC;
    let mut r = (big.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    // A tie rounded down to even goes up instead (`a - rne` is exact).
    if a - (big - MAGIC) == 0.5 {
        r += 1;
    }
    let r = if y < 0.0 { -r } else { r };
    r.clamp(-128, 127) as i16
}

/// f32 layer: `y = W x + b`.
#[inline(always)]
fn gemv_f32(f: &F32Rows, x: &[f32], y: &mut [f32]) {
    for ((row, b), y) in f.w.chunks_exact(f.in_dim.max(1)).zip(&f.bias).zip(y) {
        *y = dot_f32(row, x) + b;
    }
}

/// f32 dot product with 8 independent partial sums (one SIMD register on AVX2, two on SSE2).
#[inline(always)]
fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (xa, xb) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += xa[i] * xb[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The Q8_0 layer product `y = W x + b` on a quantized input (`xq` values, `xd` block scales).
trait Q8Gemv: Copy {
    fn q8(self, t: &Q8Tiles, xq: &[i16], xd: &[f32], y: &mut [f32]);
}

/// Plain Rust: per row, block after block, `acc += (dw * dx) * dot` with the exact integer `dot`.
#[derive(Clone, Copy)]
struct Portable;

impl Q8Gemv for Portable {
    #[inline(always)]
    fn q8(self, t: &Q8Tiles, xq: &[i16], xd: &[f32], y: &mut [f32]) {
        let blocks = t.in_dim / Q8_BLOCK;
        let (xb, _) = pulp::as_arrays::<Q8_BLOCK, i16>(xq);
        let (tiles, _) = pulp::as_arrays::<TILE, i8>(&t.qs);
        let (scales, _) = pulp::as_arrays::<TILE_ROWS, f32>(&t.d);
        let groups = tiles
            .chunks_exact(blocks.max(1))
            .zip(scales.chunks_exact(blocks.max(1)));
        for ((gq, gd), (y, bias)) in groups.zip(y.chunks_mut(TILE_ROWS).zip(t.bias.chunks(TILE_ROWS))) {
            for (r, (y, b)) in y.iter_mut().zip(bias).enumerate() {
                let mut acc = 0f32;
                for (((tq, td), x), dx) in gq.iter().zip(gd).zip(xb).zip(xd) {
                    let w = &tq[r * Q8_BLOCK..][..Q8_BLOCK];
                    let mut dot = 0i32;
                    for (&w, &x) in w.iter().zip(x) {
                        dot += i32::from(w) * i32::from(x);
                    }
                    acc += td[r] * dx * dot as f32;
                }
                *y = acc + b;
            }
        }
    }
}

/// AVX2: per tile, 16-lane multiply-adds give each row's block sum in 8 lanes, a horizontal-add tree
/// reduces the 8 rows to one register, and the scaling runs on the 8 rows at once; the same operations
/// per row as [`Portable`].
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Avx2(pulp::x86::V3);

#[cfg(target_arch = "x86_64")]
impl Q8Gemv for Avx2 {
    #[inline(always)]
    fn q8(self, t: &Q8Tiles, xq: &[i16], xd: &[f32], y: &mut [f32]) {
        use std::arch::x86_64::{__m128i, __m256, __m256i};
        let (avx, avx2) = (self.0.avx, self.0.avx2);
        let blocks = t.in_dim / Q8_BLOCK;
        // Each block of x as two registers of 16 i16.
        let (xb, _) = pulp::as_arrays::<2, [i16; 16]>(pulp::as_arrays::<16, i16>(xq).0);
        // Each tile as 16 halves of 16 int8: row r is halves 2r and 2r + 1.
        let (tiles, _) = pulp::as_arrays::<{ 2 * TILE_ROWS }, [i8; 16]>(pulp::as_arrays::<16, i8>(&t.qs).0);
        let (scales, _) = pulp::as_arrays::<TILE_ROWS, f32>(&t.d);
        let groups = tiles
            .chunks_exact(blocks.max(1))
            .zip(scales.chunks_exact(blocks.max(1)));
        for ((gq, gd), (y, bias)) in groups.zip(y.chunks_mut(TILE_ROWS).zip(t.bias.chunks(TILE_ROWS))) {
            let mut acc = avx._mm256_setzero_ps();
            for (((tq, td), x), &dx) in gq.iter().zip(gd).zip(xb).zip(xd) {
                let x0: __m256i = pulp::cast(x[0]);
                let x1: __m256i = pulp::cast(x[1]);
                // p[r]: 8 lanes whose sum is row r's block dot product (exact in i32).
                let p: [__m256i; TILE_ROWS] = std::array::from_fn(|r| {
                    let w0 = avx2._mm256_cvtepi8_epi16(pulp::cast::<[i8; 16], __m128i>(tq[2 * r]));
                    let w1 = avx2._mm256_cvtepi8_epi16(pulp::cast::<[i8; 16], __m128i>(tq[2 * r + 1]));
                    avx2._mm256_add_epi32(avx2._mm256_madd_epi16(w0, x0), avx2._mm256_madd_epi16(w1, x1))
                });
                let h01 = avx2._mm256_hadd_epi32(p[0], p[1]);
                let h23 = avx2._mm256_hadd_epi32(p[2], p[3]);
                let h45 = avx2._mm256_hadd_epi32(p[4], p[5]);
                let h67 = avx2._mm256_hadd_epi32(p[6], p[7]);
                // Rows 0..3 in each 128-bit half (low half's partial sums, then the high half's).
                let q0 = avx2._mm256_hadd_epi32(h01, h23);
                let q1 = avx2._mm256_hadd_epi32(h45, h67);
                let lo = avx2._mm256_permute2x128_si256::<0x20>(q0, q1);
                let hi = avx2._mm256_permute2x128_si256::<0x31>(q0, q1);
                let dot = avx._mm256_cvtepi32_ps(avx2._mm256_add_epi32(lo, hi));
                let s = avx._mm256_mul_ps(pulp::cast::<[f32; TILE_ROWS], __m256>(*td), avx._mm256_set1_ps(dx));
                acc = avx._mm256_add_ps(acc, avx._mm256_mul_ps(s, dot));
            }
            let acc: [f32; TILE_ROWS] = pulp::cast(acc);
            for ((y, a), b) in y.iter_mut().zip(acc).zip(bias) {
                *y = a + b;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_q8_matches_round_then_cast() {
        let edge = [
            0.0f32,
            -0.0,
            0.5,
            -0.5,
            0.49999997,
            -0.49999997,
            1.5,
            2.5,
            -2.5,
            126.5,
            -126.5,
            127.0,
            127.49998,
            127.5,
            -127.5,
            -128.5,
            -129.0,
            1e10,
            -1e10,
            f32::MAX,
            f32::MIN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -f32::NAN,
            f32::MIN_POSITIVE,
            1e-40,
        ];
        let mut state = 0x9e37_79b9u32;
        let random = (0..20_000).map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 8) as f32 / (1u32 << 24) as f32 * 300.0 - 150.0
        });
        for y in edge.into_iter().chain(random) {
            assert_eq!(round_q8(y), i16::from(y.round() as i8), "{y:e}");
        }
    }

    #[test]
    fn quantized_rows_match_candle_blocks() {
        use candle_core::quantized::{GgmlDType, QTensor};
        use candle_core::{Device, Tensor};
        let mut x: Vec<f32> = (0..96).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.013).collect();
        // Block 0 with scale 1: ties at .5 round away from zero.
        x[..5].copy_from_slice(&[127.0, 0.5, -2.5, 3.5, -0.5]);
        x[32..64].fill(0.0); // a zero block: scale 0, values 0
        x[64..80].fill(1.0e-7); // tiny values: the scale is an f16 subnormal
        x[80] = -7.0e-6;
        let (mut xd, mut xq, mut d16) = (vec![0f32; 3], vec![0i16; 96], vec![half::f16::ZERO; 3]);
        quantize_row_q8(&x, &mut xd, &mut xq, &mut d16);
        let t = Tensor::from_slice(&x, (1, 96), &Device::Cpu).expect("tensor");
        let q = QTensor::quantize(&t, GgmlDType::Q8_0).expect("quantize");
        let bytes = q.data().expect("bytes");
        for (i, blk) in bytes.chunks_exact(Q8_BLOCK_BYTES).enumerate() {
            assert_eq!(xd[i], half::f16::from_le_bytes([blk[0], blk[1]]).to_f32(), "block {i}");
            let want: Vec<i16> = blk[2..].iter().map(|&b| i16::from(i8::from_le_bytes([b]))).collect();
            assert_eq!(&xq[i * 32..(i + 1) * 32], &want[..], "block {i}");
        }
    }

    #[test]
    fn tiles_refuse_bad_shapes() {
        let bytes = vec![0u8; 2 * Q8_BLOCK_BYTES];
        assert!(Q8Tiles::from_ggml(&bytes, 2, 32, vec![0.0; 2]).is_ok());
        assert!(Q8Tiles::from_ggml(&bytes, 1, 64, vec![0.0; 1]).is_ok());
        assert!(Q8Tiles::from_ggml(&bytes, 2, 40, vec![0.0; 2]).is_err());
        assert!(Q8Tiles::from_ggml(&[], 2, 0, vec![0.0; 2]).is_err());
        assert!(Q8Tiles::from_ggml(&bytes[1..], 2, 32, vec![0.0; 2]).is_err());
        assert!(Q8Tiles::from_ggml(&bytes, 2, 32, vec![0.0; 3]).is_err());
    }
}
