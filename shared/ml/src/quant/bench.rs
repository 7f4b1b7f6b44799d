//! The quantization benchmark behind `fedistill bench quantize`: trains a teacher and an f32 student on a
//! seeded split, then measures every profile against the f32 student in the same run, the teacher against
//! the int8 student, and QAT against plain PTQ.

use fedistill_data::{split, Dataset, Partition, SplitConfig};
use serde::{Deserialize, Serialize};

use crate::error::{MlError, Result};
use crate::model::ModelConfig;
use crate::progress::Progress;
use crate::train::{train_teacher, TrainConfig};

use super::model::{Kernel, Profile, QuantizedModel};
use super::ptq::{quantize, PtqOptions, PtqReport};
use super::qat::{qat_finetune, QatConfig, QatTargets};
use super::table::{quantization_table, time_interleaved, QuantRow};

/// Settings of the benchmark.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantBenchConfig {
    /// Teacher architecture.
    pub teacher: ModelConfig,
    /// Student architecture (an MLP).
    pub student: ModelConfig,
    /// Training of teacher and student.
    pub train: TrainConfig,
    /// QAT fine-tuning.
    pub qat: QatConfig,
    /// Seed of the split.
    pub seed: u64,
}

impl QuantBenchConfig {
    /// The full benchmark.
    pub fn full() -> Self {
        QuantBenchConfig {
            teacher: ModelConfig::Mlp { hidden: vec![512, 256] },
            student: ModelConfig::Mlp { hidden: vec![128] },
            train: TrainConfig {
                epochs: 15,
                seed: 1,
                ..TrainConfig::default()
            },
            qat: QatConfig {
                epochs: 2,
                ..QatConfig::default()
            },
            seed: 42,
        }
    }

    /// A quick run (fewer epochs, smaller teacher).
    pub fn quick() -> Self {
        QuantBenchConfig {
            teacher: ModelConfig::Mlp { hidden: vec![256] },
            train: TrainConfig {
                epochs: 3,
                seed: 1,
                ..TrainConfig::default()
            },
            qat: QatConfig {
                epochs: 1,
                ..QatConfig::default()
            },
            ..Self::full()
        }
    }
}

/// The teacher against the int8 student (both measured in this run).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeacherVsInt8 {
    /// Teacher test accuracy.
    pub teacher_accuracy: f64,
    /// Int8 student test accuracy.
    pub int8_accuracy: f64,
    /// `int8_accuracy / teacher_accuracy`.
    pub accuracy_ratio: f64,
    /// Teacher batch-1 p50 latency, microseconds.
    pub teacher_latency_p50_us: f64,
    /// Int8 student batch-1 p50 latency (QMatMul), microseconds.
    pub int8_latency_p50_us: f64,
    /// `teacher_latency_p50_us / int8_latency_p50_us`.
    pub speedup_batch1: f64,
    /// Teacher samples/s at batch 128.
    pub teacher_throughput: f64,
    /// Int8 student samples/s at batch 128 (automatic kernel).
    pub int8_throughput: f64,
    /// `int8_throughput / teacher_throughput`.
    pub throughput_ratio: f64,
}

/// PTQ against QAT for one profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QatRow {
    /// Profile.
    pub profile: String,
    /// f32 student accuracy.
    pub f32_accuracy: f64,
    /// Accuracy after post-training quantization.
    pub ptq_accuracy: f64,
    /// Accuracy after QAT and the same quantization.
    pub qat_accuracy: f64,
    /// `100 * (f32 - ptq)`, percentage points lost by PTQ.
    pub ptq_loss_points: f64,
    /// `100 * (f32 - qat)`.
    pub qat_loss_points: f64,
    /// Share of the PTQ loss QAT recovered (`null` when PTQ lost nothing).
    pub recovered_fraction: Option<f64>,
}

/// Median time of one batch through each int8 kernel (what [`super::DEFAULT_AUTO_THRESHOLD`] rests on).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KernelSweepRow {
    /// Rows per batch.
    pub batch: usize,
    /// Median µs per batch through the row kernel (int8 dot products in plain Rust).
    pub row_int8_us: f64,
    /// Median µs per batch through `QMatMul`.
    pub qmatmul_us: f64,
    /// Median µs per batch through the dequantized f32 copy.
    pub dequantized_us: f64,
}

/// Everything the benchmark measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantBenchReport {
    /// Dataset name.
    pub dataset: String,
    /// Threads candle's CPU kernels use in this run (`RAYON_NUM_THREADS`, default: all cores).
    pub threads: usize,
    /// Train / test / calibration (public) samples.
    pub samples: [usize; 3],
    /// The quantization table (f32 baseline first).
    pub table: Vec<QuantRow>,
    /// Calibration report of the int8 student.
    pub int8_ptq: PtqReport,
    /// Teacher against the int8 student.
    pub teacher_vs_int8: TeacherVsInt8,
    /// PTQ against QAT.
    pub qat: Vec<QatRow>,
    /// Both int8 kernels across batch sizes.
    pub kernel_sweep: Vec<KernelSweepRow>,
}

fn accuracy_of(logits: &[f32], labels: &[u32], c: usize) -> f64 {
    let pred: Vec<u32> = logits.chunks_exact(c).map(|r| crate::model::argmax(r) as u32).collect();
    crate::metrics::accuracy(labels, &pred)
}

/// Median time of one batch of `batch` rows per kernel of an int8 student, the two kernels interleaved.
fn kernel_sweep(q: &QuantizedModel, test: &Dataset) -> Result<Vec<KernelSweepRow>> {
    let d = test.dim;
    let mut rows = Vec::new();
    for batch in [1usize, 2, 4, 8, 16, 32, 64, 128] {
        if batch > test.n {
            break;
        }
        let x = &test.features[..batch * d];
        let mut tq = Vec::with_capacity(40);
        let mut td = Vec::with_capacity(40);
        let mut tr = Vec::with_capacity(40);
        for rep in 0..45 {
            let t0 = std::time::Instant::now();
            std::hint::black_box(q.logits_rows(x, batch)?);
            let r = t0.elapsed().as_secs_f64() * 1e6;
            let t0 = std::time::Instant::now();
            std::hint::black_box(q.logits_with(x, batch, true)?);
            let a = t0.elapsed().as_secs_f64() * 1e6;
            let t0 = std::time::Instant::now();
            std::hint::black_box(q.logits_with(x, batch, false)?);
            let b = t0.elapsed().as_secs_f64() * 1e6;
            if rep >= 5 {
                tr.push(r);
                tq.push(a);
                td.push(b);
            }
        }
        tq.sort_by(f64::total_cmp);
        td.sort_by(f64::total_cmp);
        tr.sort_by(f64::total_cmp);
        rows.push(KernelSweepRow {
            batch,
            row_int8_us: crate::metrics::percentile(&tr, 50.0),
            qmatmul_us: crate::metrics::percentile(&tq, 50.0),
            dequantized_us: crate::metrics::percentile(&td, 50.0),
        });
    }
    Ok(rows)
}

/// Runs the benchmark on `ds` (MNIST-10k in `fedistill bench quantize`).
pub fn bench_quantize(ds: &Dataset, cfg: &QuantBenchConfig, progress: &Progress) -> Result<QuantBenchReport> {
    let fed = split(
        ds,
        &SplitConfig {
            participants: 1,
            partition: Partition::Iid,
            test_fraction: 0.2,
            public_fraction: 0.1,
            seed: cfg.seed,
        },
    )
    .map_err(|e| MlError::InvalidInput(format!("splitting {}: {e}", ds.name)))?;
    let train = fed
        .shards
        .first()
        .ok_or_else(|| MlError::InvalidInput("split produced no training shard".into()))?;
    let (test, public) = (&fed.test, &fed.public);
    let c = ds.num_classes;
    // Stages of the suite on `progress`; each model's epochs on a child sink below it.
    const STAGES: u64 = 7;
    let stage = |pos: u64, msg: &str| progress.advance("quantize", pos, STAGES, msg);
    progress.start("quantize", STAGES);
    let epochs = progress.child();
    let teacher = train_teacher(&cfg.teacher, train, &cfg.train, &epochs)?;
    stage(1, "teacher trained");
    let student = train_teacher(&cfg.student, train, &cfg.train, &epochs)?;
    stage(2, "f32 student trained");
    let table = quantization_table(&student, test, &public.features, public.n)?;
    stage(3, "every profile quantized and timed");
    let f32_acc = table[0].accuracy;
    let int8_row = table
        .iter()
        .find(|r| r.profile == "int8")
        .cloned()
        .ok_or_else(|| MlError::InvalidInput("table lacks the int8 row".into()))?;
    // Teacher and int8 student timed interleaved: the student's batch-1 figure through the row kernel, its
    // batch-128 figure through the dequantized copy (what Kernel::Auto picks at those sizes).
    let (int8, _) = quantize(
        &student,
        Profile::Int8,
        &public.features,
        public.n,
        &PtqOptions::default(),
    )?;
    let ft = |x: &[f32], n: usize| teacher.logits(x, n);
    let fq = |x: &[f32], n: usize| int8.logits_rows(x, n);
    let fd = |x: &[f32], n: usize| int8.logits_with(x, n, false);
    let t = time_interleaved(&[&ft, &fq, &fd], &test.features, test.n, test.dim)?;
    let (t_p50, t_tp) = (t[0].0, t[0].2);
    let (i_p50, i_tp) = (t[1].0, t[2].2);
    let t_acc = accuracy_of(&teacher.logits(&test.features, test.n)?, &test.labels, c);
    let teacher_vs_int8 = TeacherVsInt8 {
        teacher_accuracy: t_acc,
        int8_accuracy: int8_row.accuracy,
        accuracy_ratio: int8_row.accuracy / t_acc,
        teacher_latency_p50_us: t_p50,
        int8_latency_p50_us: i_p50,
        speedup_batch1: t_p50 / i_p50,
        teacher_throughput: t_tp,
        int8_throughput: i_tp,
        throughput_ratio: i_tp / t_tp,
    };
    stage(4, "teacher vs int8 student timed");
    let kernel_sweep = kernel_sweep(&int8, test)?;
    stage(5, "kernel sweep");
    let (student_qat, _) = qat_finetune(
        &student,
        &train.features,
        train.n,
        QatTargets::Labels(&train.labels),
        &cfg.qat,
    )?;
    stage(6, "QAT fine-tune");
    let mut qat = Vec::new();
    let mut int8_ptq = None;
    for profile in [Profile::Sandwich, Profile::Int8] {
        let opts = PtqOptions::default();
        let (mut p, report) = quantize(&student, profile, &public.features, public.n, &opts)?;
        let (mut q, _) = quantize(&student_qat, profile, &public.features, public.n, &opts)?;
        p.set_kernel(Kernel::Quantized);
        q.set_kernel(Kernel::Quantized);
        let ptq_acc = accuracy_of(&p.logits(&test.features, test.n)?, &test.labels, c);
        let qat_acc = accuracy_of(&q.logits(&test.features, test.n)?, &test.labels, c);
        let ptq_loss = 100.0 * (f32_acc - ptq_acc);
        let qat_loss = 100.0 * (f32_acc - qat_acc);
        qat.push(QatRow {
            profile: profile.name().into(),
            f32_accuracy: f32_acc,
            ptq_accuracy: ptq_acc,
            qat_accuracy: qat_acc,
            ptq_loss_points: ptq_loss,
            qat_loss_points: qat_loss,
            recovered_fraction: (ptq_loss > 0.0).then(|| (ptq_loss - qat_loss) / ptq_loss),
        });
        if profile == Profile::Int8 {
            int8_ptq = Some(report);
        }
    }
    stage(7, "QAT vs PTQ");
    progress.finish("quantize", "done");
    Ok(QuantBenchReport {
        dataset: ds.name.clone(),
        threads: candle_core::utils::get_num_threads(),
        samples: [train.n, test.n, public.n],
        table,
        int8_ptq: int8_ptq.ok_or_else(|| MlError::InvalidInput("no int8 report".into()))?,
        teacher_vs_int8,
        qat,
        kernel_sweep,
    })
}
