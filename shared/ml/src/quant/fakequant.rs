//! Fake quantization for quantization-aware training: a candle custom op whose forward pass rounds a
//! tensor exactly as ggml's Q8_0 would (blocks of 32 along the last dimension, scale = max|x| / 127
//! stored as f16) and whose backward pass is the straight-through estimator (the incoming gradient,
//! unchanged).

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use half::f16;

/// Q8_0 block length: values sharing one scale.
pub const Q8_BLOCK: usize = 32;

/// Fake-quantizes along the last dimension in Q8_0 blocks; gradient passes straight through.
///
/// A row whose length is not a multiple of 32 ends in a short block, which rounds exactly like the
/// zero-padded block the exported model uses (zeros change neither the block maximum nor the sum).
#[derive(Debug, Clone, Copy, Default)]
pub struct FakeQuantQ8;

/// Rounds one block in place the way candle's `BlockQ8_0::from_float` + `to_float` do.
pub fn fake_quant_block(xs: &mut [f32]) {
    let amax = xs.iter().fold(0f32, |m, x| m.max(x.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let d16 = f16::from_f32(d).to_f32();
    for x in xs.iter_mut() {
        let q = (*x * id).round() as i8; // `as` saturates, like ggml
        *x = f32::from(q) * d16;
    }
}

/// Fake-quantizes a row-major buffer whose rows have `row_len` values.
pub fn fake_quant_rows(data: &mut [f32], row_len: usize) {
    if row_len == 0 {
        return;
    }
    for row in data.chunks_mut(row_len) {
        for block in row.chunks_mut(Q8_BLOCK) {
            fake_quant_block(block);
        }
    }
}

impl CustomOp1 for FakeQuantQ8 {
    fn name(&self) -> &'static str {
        "fake-quant-q8_0"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("fake-quant needs a contiguous tensor".into()))?;
        let shape = layout.shape().clone();
        let row_len = shape.dims().last().copied().unwrap_or(1);
        match storage {
            CpuStorage::F32(v) => {
                let mut out = v[start..end].to_vec();
                fake_quant_rows(&mut out, row_len);
                Ok((CpuStorage::F32(out), shape))
            }
            other => Err(candle_core::Error::Msg(format!(
                "fake-quant supports f32 only, got {:?}",
                other.dtype()
            ))),
        }
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        // Straight-through estimator: d round(x) / dx is taken as 1.
        Ok(Some(grad_res.clone()))
    }
}

/// Applies [`FakeQuantQ8`] to a tensor (made contiguous first).
pub fn fake_quant(t: &Tensor) -> candle_core::Result<Tensor> {
    t.contiguous()?.apply_op1(FakeQuantQ8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Var};

    #[test]
    fn matches_candle_q8_0_round_trip() {
        // The expected values come from candle itself: quantize to Q8_0 and dequantize.
        let dev = Device::Cpu;
        let vals: Vec<f32> = (0..4 * 64).map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0).collect();
        let t = Tensor::from_vec(vals, (4, 64), &dev).expect("tensor");
        let q = QTensor::quantize(&t, GgmlDType::Q8_0).expect("quantize");
        let want: Vec<f32> = q
            .dequantize(&dev)
            .expect("deq")
            .flatten_all()
            .expect("flat")
            .to_vec1()
            .expect("vec");
        let got: Vec<f32> = fake_quant(&t)
            .expect("fq")
            .flatten_all()
            .expect("flat")
            .to_vec1()
            .expect("vec");
        assert_eq!(got, want);
    }

    #[test]
    fn short_trailing_block_equals_zero_padding() {
        let dev = Device::Cpu;
        let vals: Vec<f32> = (0..48).map(|i| (i as f32 * 0.731).sin()).collect();
        let mut padded = vals.clone();
        padded.extend(std::iter::repeat_n(0.0, 16));
        let t = Tensor::from_vec(padded, (1, 64), &dev).expect("tensor");
        let q = QTensor::quantize(&t, GgmlDType::Q8_0).expect("quantize");
        let want: Vec<f32> = q
            .dequantize(&dev)
            .expect("deq")
            .flatten_all()
            .expect("flat")
            .to_vec1()
            .expect("vec");
        let mut got = vals;
        fake_quant_rows(&mut got, 48);
        assert_eq!(&got[..], &want[..48]);
    }

    #[test]
    fn gradient_passes_straight_through() {
        let dev = Device::Cpu;
        let w = Var::new(&[[0.3f32, -1.2, 0.05], [2.0, 0.0, -0.7]], &dev).expect("var");
        let y = fake_quant(w.as_tensor()).expect("fq");
        let coeff = Tensor::new(&[[1f32, 2., 3.], [4., 5., 6.]], &dev).expect("t");
        let loss = (y * &coeff).expect("mul").sum_all().expect("sum");
        let grads = loss.backward().expect("backward");
        let g = grads.get(w.as_tensor()).expect("grad");
        let g: Vec<Vec<f32>> = g.to_vec2().expect("vec");
        assert_eq!(g, vec![vec![1., 2., 3.], vec![4., 5., 6.]]);
    }
}
