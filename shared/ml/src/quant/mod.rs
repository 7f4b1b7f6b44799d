//! Quantization of the deployable student (an MLP, a CNN, 2-D or 1-D, or a fused model): INT8 (ggml Q8_0) and mixed
//! profiles, post-training quantization with calibration, quantization-aware training, GGUF/safetensors
//! export with a model card, and the quantization table (size, accuracy, latency) the `local` command and the
//! benchmark print.

pub mod arch;
pub mod bench;
pub mod config;
pub(crate) mod conv;
pub mod export;
pub mod fakequant;
pub(crate) mod fused;
pub(crate) mod kernel;
pub(crate) mod layer;
pub mod model;
pub mod ptq;
pub mod qat;
pub mod table;

pub use arch::{AnyConvBlock, Conv1dArch, Conv1dBlock, ConvBlock, FusedArch};
pub use bench::{bench_quantize, KernelSweepRow, QatRow, QuantBenchConfig, QuantBenchReport, TeacherVsInt8};
pub use config::{parse_quantize_file, QuantizeFile};
pub use export::{export_student, load_student, recorded_arch, CardInfo, DatasetRef, ModelCard};
pub use fakequant::{fake_quant, FakeQuantQ8};
pub use kernel::RowSimd;
pub use model::{pad32, Arch, Kernel, LayerFormat, Profile, QuantizedModel, DEFAULT_AUTO_THRESHOLD};
pub use ptq::{quantize, LayerReport, PtqOptions, PtqReport, CNN_CALIBRATION_SAMPLES};
pub use qat::{fake_quant_forward, qat_finetune, QatConfig, QatStats, QatTargets};
pub use table::{
    evaluate_quantized, format_table, quantization_table, time_interleaved, KernelTiming, LogitsFn, QuantRow,
};

/// The embedded digits (8x8) split for one participant (25% test, 20% public, seed 5), shared by the tests
/// that train a small student and quantize it.
#[cfg(test)]
pub(crate) fn digits_split() -> fedistill_data::FederatedSplit {
    let ds = fedistill_data::load("digits", &fedistill_data::LoadOptions::default()).expect("digits");
    fedistill_data::split(
        &ds,
        &fedistill_data::SplitConfig {
            participants: 1,
            partition: fedistill_data::Partition::Iid,
            test_fraction: 0.25,
            public_fraction: 0.2,
            seed: 5,
        },
    )
    .expect("split")
}

/// Every profile of `m` on the raw rows `x` (`n` of them), quantized: the portable and the detected row
/// kernels agree bit for bit, the f32 profile is within 1e-4 of `want` (the f32 model's logits) in every
/// kernel, and the row kernel computes what candle computes on the same blocks (W8A8 for Q8_0 layers) up to
/// summation order; `what` names the case in failures. Returns each profile's quantized model, for the
/// caller's own checks. Shared by the MLP-free students' kernel tests (2-D and 1-D CNNs, fused models).
#[cfg(test)]
pub(crate) fn assert_every_kernel_agrees(
    m: &crate::model::Model,
    x: &[f32],
    n: usize,
    want: &[f32],
    what: &str,
) -> Vec<(Profile, QuantizedModel)> {
    let best = RowSimd::detect();
    let mut out = Vec::new();
    for profile in Profile::ALL {
        let q = QuantizedModel::from_model(m, profile).expect("quantize");
        let portable = q.logits_rows_simd(x, n, RowSimd::Portable).expect("portable");
        let fast = q.logits_rows_simd(x, n, best).expect("fast");
        for (a, b) in portable.iter().zip(&fast) {
            assert_eq!(a.to_bits(), b.to_bits(), "{profile} {what}: {a} vs {b} ({best})");
        }
        let quantized = q.logits_with(x, n, true).expect("qmatmul");
        let dequantized = q.logits_with(x, n, false).expect("dequantized");
        if profile == Profile::F32 {
            for got in [&portable, &quantized, &dequantized] {
                for (a, b) in got.iter().zip(want) {
                    assert!((a - b).abs() < 1e-4, "{what}: {a} vs f32 {b}");
                }
            }
        }
        for (a, b) in portable.iter().zip(&quantized) {
            assert!((a - b).abs() < 1e-3 * (1.0 + b.abs()), "{profile} {what}: {a} vs {b}");
        }
        out.push((profile, q));
    }
    out
}

/// Exports `m` in every profile to `dir` and reads each file back: the card and the file record `arch`,
/// the loaded student has the profile and layer formats it was exported with, gives the same logits as the
/// quantized model in every kernel on the `n` raw rows `x`, and (outside f32) hashes to the card's
/// `weights_sha256`. Returns each profile's card, for the caller's own checks. Shared by the CNN, 1-D CNN
/// and fused export tests.
#[cfg(test)]
pub(crate) fn assert_every_profile_round_trips(
    m: &crate::model::Model,
    arch: &Arch,
    x: &[f32],
    n: usize,
    dir: &std::path::Path,
) -> Vec<(Profile, ModelCard)> {
    let mut out = Vec::new();
    for p in Profile::ALL {
        let q = QuantizedModel::from_model(m, p).expect("quantize");
        let (path, card) = export_student(&q, m, dir, p.name(), &CardInfo::default()).expect("export");
        assert_eq!(&card.arch, arch);
        // The file (or its card) describes itself: no config needed to read it back.
        assert_eq!(recorded_arch(&path).expect("arch"), Some(arch.clone()), "{p}");
        let back = load_student(&path, arch).expect("load");
        assert_eq!(back.profile(), p);
        assert_eq!(back.layer_formats(), q.layer_formats());
        for kernel in [Kernel::RowInt8, Kernel::Quantized, Kernel::Dequantized] {
            assert_eq!(
                q.logits_kernel(x, n, kernel).expect("logits"),
                back.logits_kernel(x, n, kernel).expect("logits"),
                "{p} {kernel:?}"
            );
        }
        if p != Profile::F32 {
            assert_eq!(
                hex::encode(export::stored_weights_digest(&back).expect("digest")),
                card.weights_sha256
            );
        }
        out.push((p, card));
    }
    out
}
