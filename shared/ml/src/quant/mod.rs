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
