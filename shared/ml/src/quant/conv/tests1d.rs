//! Unit tests of a quantized 1-D CNN student: im2col rows and pooling by hand, every kernel and instruction
//! set against the f32 model, post-training quantization of a trained model, and QAT's forward.

use candle_core::{Device, Tensor};

use super::*;
use crate::model::{argmax, bump_teacher, Model, ModelConfig};
use crate::quant::{fake_quant_forward, Kernel, Profile, QuantizedModel};

fn cnn1d(in_channels: usize, channels: &[usize], hidden: usize, kernel: usize) -> ModelConfig {
    ModelConfig::Cnn1d {
        in_channels,
        channels: channels.to_vec(),
        hidden,
        kernel,
    }
}

#[test]
fn patches_of_a_series_by_hand() {
    // Two channels of 5 steps: 1..5 and 10..50.
    let src = [1., 2., 3., 4., 5., 10., 20., 30., 40., 50.];
    let mut row = vec![-1f32; 32];
    // Kernel 3 at step 0: the first tap falls in the zero padding; channel 0's taps, then channel 1's.
    patch1d(&src, 2, 5, 3, 0, &mut row);
    assert_eq!(&row[..6], &[0., 1., 2., 0., 10., 20.]);
    assert!(
        row[6..].iter().all(|&v| v == -1.0),
        "the padding columns are the caller's"
    );
    patch1d(&src, 2, 5, 3, 2, &mut row);
    assert_eq!(&row[..6], &[2., 3., 4., 20., 30., 40.]);
    // Kernel 5 at the last step: two taps past the end.
    patch1d(&src, 2, 5, 5, 4, &mut row);
    assert_eq!(&row[..10], &[3., 4., 5., 0., 0., 30., 40., 50., 0., 0.]);
    // The candle im2col gives the same rows, zero-padded to 32 columns.
    let t = Tensor::from_slice(&src, (1, 2, 5), &Device::Cpu).expect("t");
    for kernel in [3, 5] {
        let m: Vec<Vec<f32>> = im2col1d_tensor(&t, kernel, 32).expect("im2col").to_vec2().expect("v");
        assert_eq!(m.len(), 5);
        for (step, got) in m.iter().enumerate() {
            patch1d(&src, 2, 5, kernel, step, &mut row);
            assert_eq!(&got[..2 * kernel], &row[..2 * kernel], "kernel {kernel}, step {step}");
            assert!(got[2 * kernel..].iter().all(|&v| v == 0.0));
        }
    }
}

#[test]
fn relu_pool1d_by_hand() {
    // 5 steps of 2 channels, step-major: channel 0 = step, channel 1 = -step. Floor: the 5th step is dropped.
    let src: Vec<f32> = (0..5).flat_map(|t| [t as f32, -(t as f32)]).collect();
    let mut dst = vec![9f32; 4];
    relu_pool1d(&src, 2, 5, &mut dst);
    assert_eq!(dst, vec![1., 3., 0., 0.]);
    // The tensor version agrees.
    let y = Tensor::from_slice(&src, (5, 2), &Device::Cpu).expect("t");
    let t = relu_pool1d_tensor(&y, 1, 5, 2).expect("pool");
    assert_eq!(t.flatten_all().expect("f").to_vec1::<f32>().expect("v"), dst);
}

/// Two channels of 6 steps, one block of 2 channels with kernel 3 (the box sum of channel 0; the next step
/// of channel 1 plus 10) and an identity head, so the logits are the pooled block output.
fn hand_cnn1d() -> Model {
    let m = Model::new(&cnn1d(2, &[2], 6, 3), 12, 6, 1).expect("model");
    let eye: Vec<f32> = (0..36).map(|i| if i % 7 == 0 { 1.0 } else { 0.0 }).collect();
    let set = |name: &str, v: Vec<f32>, dims: &[usize]| {
        let data = m.varmap().data().lock().expect("lock");
        let t = Tensor::from_vec(v, dims, &Device::Cpu).expect("t");
        data.get(name).expect("var").set(&t).expect("set");
    };
    set(
        "convs.0.weight",
        vec![1., 1., 1., 0., 0., 0., 0., 0., 0., 0., 0., 1.],
        &[2, 2, 3],
    );
    set("convs.0.bias", vec![0., 10.], &[2]);
    set("layers.0.weight", eye.clone(), &[6, 6]);
    set("layers.0.bias", vec![0.; 6], &[6]);
    set("layers.1.weight", eye, &[6, 6]);
    set("layers.1.bias", vec![0.; 6], &[6]);
    m
}

#[test]
fn conv1d_of_a_series_by_hand_through_every_kernel() {
    let x = [1., 2., 3., 4., 5., 6., 10., 20., 30., 40., 50., 60.];
    // Box sums 3 6 9 12 15 11 -> 6 12 15; next steps + 10: 30 40 50 60 70 10 -> 40 60 70.
    let want = [6f32, 12., 15., 40., 60., 70.];
    let m = hand_cnn1d();
    assert_eq!(m.logits(&x, 1).expect("f32"), want);
    let mut q = QuantizedModel::from_model(&m, Profile::F32).expect("quantize");
    assert_eq!(q.arch().layer_dims(), vec![(6, 2), (6, 6), (6, 6)]);
    assert_eq!(q.arch().padded_dims(), vec![(32, 2), (32, 32), (32, 6)]);
    for kernel in [Kernel::RowInt8, Kernel::Quantized, Kernel::Dequantized] {
        q.set_kernel(kernel);
        // Integers in f32: exact whatever the summation order.
        assert_eq!(q.logits(&x, 1).expect("logits"), want, "{kernel:?}");
    }
    // The standardization comes before the zero padding: with shift 1 each box sum loses its taps inside
    // the series (2 at either end, 3 inside) and each next step loses 1 (none past the end).
    m.fit_input_normalization(&[0., 2.].repeat(6), 1, false).expect("norm");
    let shifted = m.logits(&x, 1).expect("f32");
    assert_eq!(shifted, [3., 9., 12., 39., 59., 69.]);
    let q = QuantizedModel::from_model(&m, Profile::F32).expect("quantize");
    assert_eq!(q.logits_rows(&x, 1).expect("rows"), shifted);
    assert_eq!(q.logits_with(&x, 1, false).expect("tensor"), shifted);
}

#[test]
fn every_kernel_and_instruction_set_agrees_on_random_cnn1ds() {
    use rand::{Rng, SeedableRng};
    // (config, in_dim, classes): 1 x 25 steps, 3 x 33, 2 x 41 (odd lengths pooled with floor); im2col widths
    // 3 -> 32; 21 -> 32 and 35 -> 64; 30 -> 32, 45 -> 64, 60 -> 64.
    let cases = [
        (cnn1d(1, &[4], 12, 3), 25, 3),
        (cnn1d(3, &[5, 6], 20, 7), 99, 5),
        (cnn1d(2, &[3, 4, 5], 7, 15), 82, 2),
    ];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(6);
    for (seed, (cfg, d, c)) in cases.into_iter().enumerate() {
        let m = Model::new(&cfg, d, c, seed as u64).expect("model");
        let n = 7;
        let x: Vec<f32> = (0..n * d).map(|_| rng.random_range(-2.0f32..3.0)).collect();
        m.fit_input_normalization(&x, n, true).expect("norm");
        let want = m.logits(&x, n).expect("f32");
        for (_, q) in crate::quant::assert_every_kernel_agrees(&m, &x, n, &want, &format!("{cfg:?}")) {
            assert_eq!(q.layer_formats().len(), q.arch().channels.len() + 2);
        }
    }
}

fn agreement(a: &[f32], b: &[f32], c: usize) -> f64 {
    let same = a
        .chunks_exact(c)
        .zip(b.chunks_exact(c))
        .filter(|(x, y)| argmax(x) == argmax(y))
        .count();
    same as f64 / (a.len() / c) as f64
}

/// Relative L2 distance of `a` from `b`.
fn rel_l2(a: &[f32], b: &[f32]) -> f32 {
    let num: f32 = a.iter().zip(b).map(|(p, q)| (p - q).powi(2)).sum();
    let den: f32 = b.iter().map(|p| p * p).sum();
    (num / den).sqrt()
}

#[test]
fn a_trained_cnn1d_keeps_its_predictions_in_int8() {
    use crate::quant::ptq::{quantize, PtqOptions};
    let (m, x, y) = bump_teacher().expect("train");
    let (n, c) = (y.len(), 2);
    let want = m.logits(&x, n).expect("f32");
    let acc = |l: &[f32]| {
        let right = l
            .chunks_exact(c)
            .zip(&y)
            .filter(|(r, &label)| argmax(r) as u32 == label)
            .count();
        right as f64 / n as f64
    };
    let f32_acc = acc(&want);
    assert!(f32_acc > 0.95, "the 1-D CNN did not learn: accuracy {f32_acc}");
    // F32 profile: the same function as the candle model, through every kernel.
    let q = QuantizedModel::from_model(&m, Profile::F32).expect("f32");
    for kernel in [Kernel::RowInt8, Kernel::Quantized, Kernel::Dequantized] {
        for (a, b) in q.logits_kernel(&x, n, kernel).expect("logits").iter().zip(&want) {
            assert!((a - b).abs() < 1e-4, "{kernel:?}: {a} vs {b}");
        }
    }
    // INT8 calibrated on other series of the task (bias correction), plain INT8 and sandwich.
    let (calib, _) = crate::model::bump_task(200, 2, 33, 11);
    let (ptq, report) = quantize(&m, Profile::Int8, &calib, 200, &PtqOptions::default()).expect("ptq");
    assert_eq!(report.layers.len(), 4);
    assert_eq!(report.layers[0].name, "convs.0.weight");
    // Block 0: 2 channels * 5 taps -> 32 columns; block 1: 8 * 5 = 40 -> 64.
    assert_eq!(report.layers[0].shape, [8, 32]);
    assert_eq!(report.layers[1].shape, [16, 64]);
    assert_eq!(report.layers[2].name, "layers.0.weight");
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
            let got = q.logits_kernel(&x, n, kernel).expect("logits");
            let agree = agreement(&got, &want, c);
            let rel = rel_l2(&got, &want);
            eprintln!(
                "{name} {kernel:?}: agreement {agree:.4}, logits rel L2 {rel:.4}, accuracy {:.4} (f32 {f32_acc:.4})",
                acc(&got)
            );
            assert!(agree >= 0.98, "{name} {kernel:?}: argmax agreement {agree}");
            // Q8_0 keeps about 2 significant digits per weight: the logits stay within a few percent.
            assert!(rel < 0.05, "{name} {kernel:?}: logits rel L2 {rel}");
        }
    }
}

#[test]
fn cnn1d_fake_quant_forward_matches_the_exported_int8_student() {
    use crate::quant::{qat_finetune, QatConfig, QatTargets};
    // Two blocks (im2col widths 3 * 5 = 15 and 4 * 5 = 20, stored padded to 32), an odd length and a
    // per-step standardization: the QAT forward quantizes what the exported 1-D CNN quantizes, unpadded.
    let m = Model::new(&cnn1d(3, &[4, 5], 10, 5), 3 * 19, 3, 4).expect("model");
    let x: Vec<f32> = (0..6 * 57).map(|i| ((i * 17) % 31) as f32 / 31.0).collect();
    m.fit_input_normalization(&x, 6, true).expect("norm");
    let xt = Tensor::from_slice(&x, (6, 57), &Device::Cpu).expect("t");
    let q = QuantizedModel::from_model(&m, Profile::Int8).expect("q");
    for (activations, kernel) in [(true, true), (false, false)] {
        let fq: Vec<f32> = fake_quant_forward(&m, &xt, activations)
            .expect("fq")
            .flatten_all()
            .expect("f")
            .to_vec1()
            .expect("v");
        // With activations: W8A8 as QMatMul computes; without: the dequantized weights.
        let got = q.logits_with(&x, 6, kernel).expect("logits");
        for (a, b) in fq.iter().zip(&got) {
            assert!((a - b).abs() < 1e-3 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }
    // And QAT trains it: the loss goes down.
    let y: Vec<u32> = (0..6).map(|i| i % 3).collect();
    let qc = QatConfig {
        epochs: 4,
        batch_size: 3,
        lr: 1e-2,
        ..QatConfig::default()
    };
    let (tuned, stats) = qat_finetune(&m, &x, 6, QatTargets::Labels(&y), &qc).expect("qat");
    assert!(
        stats.epoch_loss.last() < stats.epoch_loss.first(),
        "{:?}",
        stats.epoch_loss
    );
    assert_ne!(tuned.weights_digest(), m.weights_digest());
}
