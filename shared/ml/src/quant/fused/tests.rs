//! A quantized fused student: every kernel and instruction set against the f32 model, masking kept in INT8,
//! post-training quantization of a trained model, GGUF and f16 round trips with identical logits, the
//! architecture's JSON, and QAT's refusal.

use candle_core::{Device, Tensor};

use super::*;
use crate::model::fused::{two_block_task, without_block_b};
use crate::model::{argmax, DropRate, Model, ModelConfig};
use crate::quant::export::{from_f16_safetensors, from_gguf, to_f16_safetensors, to_gguf};
use crate::quant::ptq::{quantize, PtqOptions};
use crate::quant::{qat_finetune, Kernel, LayerFormat, Profile, QatConfig, QatTargets, QuantizedModel};
use crate::train::{train_teacher, TrainConfig};

/// Block A of 37 inputs (two Q8_0 blocks once padded), block B of 5, the two presence inputs.
const WA: usize = 37;
const WB: usize = 5;
const D: usize = WA + WB + 2;

fn fused(embed: usize, hidden: usize) -> ModelConfig {
    ModelConfig::Fused {
        embed,
        hidden,
        blocks: vec![WA, WB],
        dropout: DropRate(0.2),
    }
}

/// A fused model of embeddings 12 and hidden 10 trained on 500 rows of the two-block task; 300 test rows.
fn trained() -> (Model, Vec<f32>, Vec<u32>) {
    let (x, y) = two_block_task(500, WA, WB, (0.8, 1.2), 31);
    let ds = fedistill_data::Dataset::new(
        "two-blocks",
        x,
        y,
        D,
        fedistill_data::DataKind::Tabular,
        vec!["a".into(), "b".into()],
    )
    .expect("dataset");
    let tc = TrainConfig {
        epochs: 20,
        batch_size: 32,
        lr: 3e-3,
        patience: 20,
        seed: 4,
        ..TrainConfig::default()
    };
    let m = train_teacher(&fused(12, 10), &ds, &tc, &crate::Progress::hidden()).expect("train");
    let (tx, ty) = two_block_task(300, WA, WB, (0.8, 1.2), 32);
    (m, tx, ty)
}

/// Test rows: the first half with both blocks, the second without block B.
fn mixed(x: &[f32]) -> Vec<f32> {
    let half = x.len() / D / 2 * D;
    let mut out = x[..half].to_vec();
    out.extend(without_block_b(&x[half..], WA, WB));
    out
}

fn agreement(a: &[f32], b: &[f32], c: usize) -> f64 {
    let same = a
        .chunks_exact(c)
        .zip(b.chunks_exact(c))
        .filter(|(x, y)| argmax(x) == argmax(y))
        .count();
    same as f64 / (a.len() / c) as f64
}

#[test]
fn the_fused_arch_records_blocks_and_embedding_and_round_trips_as_json() {
    let cfg = fused(12, 10);
    let a = Arch::from_config(&cfg, D, 2).expect("arch");
    let json = serde_json::to_string(&a).expect("json");
    assert_eq!(
        json,
        r#"{"hidden":[10],"in_dim":44,"classes":2,"fused":{"embed":12,"blocks":[37,5]}}"#
    );
    let back: Arch = serde_json::from_str(&json).expect("back");
    assert_eq!(back, a);
    // Modality dropout is training only: the config comes back with the default.
    assert_eq!(back.model_config().expect("cfg"), cfg);
    assert!(a.is_fused() && !a.is_cnn());
    assert_eq!(a.front_layers(), 2);
    assert_eq!(a.flat_dim(), 12);
    assert_eq!(a.layer_dims(), vec![(37, 12), (5, 12), (12, 10), (10, 2)]);
    assert_eq!(a.padded_dims(), vec![(64, 12), (32, 12), (32, 32), (32, 2)]);
    // A fused architecture with conv blocks, or two hidden layers, is refused.
    let conv = Arch {
        channels: vec![4],
        ..a.clone()
    };
    assert!(conv
        .validate()
        .is_err_and(|e| e.to_string().contains("fused (fused) and convolutional")));
    let deep = Arch {
        hidden: vec![4, 4],
        ..a.clone()
    };
    assert!(deep.validate().is_err_and(|e| e.to_string().contains("one hidden")));
    let wrong = Arch { in_dim: 43, ..a };
    assert!(wrong
        .validate()
        .is_err_and(|e| e.to_string().contains("the data has 43")));
}

#[test]
fn every_kernel_and_instruction_set_agrees_and_keeps_absent_blocks_masked() {
    use rand::{Rng, SeedableRng};
    let m = Model::new(&fused(12, 10), D, 3, 2).expect("model");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(6);
    let n = 9;
    let mut x: Vec<f32> = (0..n * D).map(|_| rng.random_range(-2.0f32..3.0)).collect();
    for (i, row) in x.chunks_exact_mut(D).enumerate() {
        // Presence: both, A only, B only.
        row[D - 2] = if i % 3 == 2 { 0.0 } else { 1.0 };
        row[D - 1] = if i % 3 == 1 { 0.0 } else { 1.0 };
    }
    m.fit_input_normalization(&x, n, true).expect("norm");
    let want = m.logits(&x, n).expect("f32");
    // The same rows with the absent blocks' inputs scrambled.
    let mut scrambled = x.clone();
    for (i, row) in scrambled.chunks_exact_mut(D).enumerate() {
        let absent = match i % 3 {
            1 => WA..WA + WB,
            2 => 0..WA,
            _ => 0..0,
        };
        for v in &mut row[absent] {
            *v = -*v * 7.0 + 1.0;
        }
    }
    for (profile, q) in crate::quant::assert_every_kernel_agrees(&m, &x, n, &want, "fused") {
        assert_eq!(q.layer_formats().len(), 4, "two encoders and two linear layers");
        // Masking survives quantization: an absent block's inputs never move the logits, in any kernel.
        for kernel in [Kernel::RowInt8, Kernel::Quantized, Kernel::Dequantized] {
            assert_eq!(
                q.logits_kernel(&scrambled, n, kernel).expect("scrambled"),
                q.logits_kernel(&x, n, kernel).expect("logits"),
                "{profile} {kernel:?}"
            );
        }
        // The gate is f32 in every profile and counted in the weights' bytes.
        let gate = 4 * (2 * (12 * 12 + 12) + 12);
        let layers: usize = [(64, 12), (32, 12), (32, 32), (32, 3)]
            .iter()
            .enumerate()
            .map(|(i, &(inp, out))| {
                let w = inp * out;
                out * 4
                    + match profile.layer_format(i, 4) {
                        LayerFormat::Q8_0 => w / 32 * 34,
                        LayerFormat::F16 => w * 2,
                        LayerFormat::F32 => w * 4,
                    }
            })
            .sum();
        assert_eq!(q.weight_bytes(), gate + layers, "{profile}");
    }
}

#[test]
fn a_trained_fused_student_keeps_its_predictions_in_int8() {
    let (m, tx, ty) = trained();
    let x = mixed(&tx);
    let n = ty.len();
    let want = m.logits(&x, n).expect("f32");
    let acc = |l: &[f32]| {
        l.chunks_exact(2)
            .zip(&ty)
            .filter(|(r, &y)| argmax(r) as u32 == y)
            .count() as f64
            / n as f64
    };
    let f32_acc = acc(&want);
    assert!(f32_acc > 0.85, "the fused model did not learn: accuracy {f32_acc}");
    let (calib, _) = two_block_task(200, WA, WB, (0.8, 1.2), 33);
    let (ptq, report) = quantize(&m, Profile::Int8, &calib, 200, &PtqOptions::default()).expect("ptq");
    let names: Vec<&str> = report.layers.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "encoders.0.weight",
            "encoders.1.weight",
            "layers.0.weight",
            "layers.1.weight"
        ]
    );
    assert_eq!(report.layers[0].shape, [12, 64]);
    assert_eq!(report.calibration_samples, 200);
    for l in &report.layers {
        assert!(l.weight_rel_l2 > 0.0 && l.weight_rel_l2 < 0.02, "{l:?}");
    }
    assert_eq!(ptq.layer_formats(), vec![LayerFormat::Q8_0; 4]);
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
            let agree = agreement(&got, &want, 2);
            eprintln!(
                "{name} {kernel:?}: agreement {agree:.4}, accuracy {:.4} (f32 {f32_acc:.4})",
                acc(&got)
            );
            assert!(agree >= 0.97, "{name} {kernel:?}: argmax agreement {agree}");
        }
    }
}

#[test]
fn every_fused_profile_round_trips_with_identical_logits() {
    let (m, tx, _) = trained();
    let x = mixed(&tx[..40 * D]);
    let arch = Arch::from_config(m.config(), D, 2).expect("arch");
    let dir = tempfile::tempdir().expect("tmp");
    crate::quant::assert_every_profile_round_trips(&m, &arch, &x, 40, dir.path());
    // The GGUF says what it holds; another architecture is refused; so is a truncated file.
    let q = QuantizedModel::from_model(&m, Profile::Int8).expect("q");
    let gguf = to_gguf(&q).expect("gguf");
    let content =
        candle_core::quantized::gguf_file::Content::read(&mut std::io::Cursor::new(&gguf[..])).expect("gguf reads");
    let meta = |k: &str| content.metadata.get(k).and_then(|v| v.to_string().ok()).cloned();
    assert_eq!(meta("general.architecture").as_deref(), Some("fedistill-fused"));
    assert_eq!(
        meta("fedistill.fusion_layout").as_deref(),
        Some(crate::quant::export::FUSION_LAYOUT)
    );
    assert_eq!(
        content.tensor_infos["gate.v.weight"].ggml_dtype,
        candle_core::quantized::GgmlDType::F32,
        "the gate stays f32"
    );
    assert_eq!(content.tensor_infos.len(), 2 * 4 + 5);
    let other = Arch {
        fused: Some(crate::quant::FusedArch {
            embed: 12,
            blocks: vec![36, 6],
        }),
        ..arch.clone()
    };
    let err = from_gguf(&gguf, &other).expect_err("wrong blocks").to_string();
    assert!(err.contains("wrong architecture"), "{err}");
    assert!(from_gguf(&gguf[..gguf.len() / 2], &arch).is_err());
    let f16 = to_f16_safetensors(&QuantizedModel::from_model(&m, Profile::F16).expect("f16")).expect("st");
    let err = from_f16_safetensors(&f16, &other)
        .expect_err("wrong blocks")
        .to_string();
    assert!(err.contains("encoders.0.weight") && err.contains("shape"), "{err}");
}

#[test]
fn qat_refuses_a_fused_student() {
    let m = Model::new(&fused(4, 4), D, 2, 1).expect("model");
    let x = vec![0.5f32; 4 * D];
    let err = qat_finetune(&m, &x, 4, QatTargets::Labels(&[0, 1, 0, 1]), &QatConfig::default())
        .expect_err("fused")
        .to_string();
    assert!(err.contains("a fused student is quantized after training"), "{err}");
    let xt = Tensor::from_slice(&x, (4, D), &Device::Cpu).expect("t");
    assert!(crate::quant::fake_quant_forward(&m, &xt, true).is_err());
}
