//! The quantization table: every profile of a student side by side with the f32 student measured in the
//! same run (accuracy, bytes on disk, batch-1 latency, batch-128 throughput, both int8 kernels), and the
//! evaluation of a quantized student with the same metrics as `evaluate`.

use std::time::Instant;

use fedistill_data::Dataset;
use serde::{Deserialize, Serialize};

use crate::error::{MlError, Result};
use crate::metrics::{accuracy, ece, log_loss, macro_prf, percentile, roc_auc, Metrics, ECE_BINS};
use crate::model::{argmax, softmax_rows, Model};

use super::export::export_bytes;
use super::model::{Profile, QuantizedModel};
use super::ptq::{quantize, PtqOptions};

/// Batch size of the throughput figures.
pub const THROUGHPUT_BATCH: usize = 128;
/// Batch-1 passes timed per latency figure (after 20 warm-up passes).
pub const LATENCY_PASSES: usize = 300;

/// Timing of one kernel at one batch size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KernelTiming {
    /// `qmatmul` (candle QMatMul on Q8_0 blocks), `dequantized` (f32 matmul on dequantized weights),
    /// `f32` (the student itself) or `f32_folded` (its weights with the standardization folded in and
    /// padded inputs, the layout of the quantized profiles).
    pub kernel: String,
    /// Median batch-1 latency, microseconds.
    pub latency_p50_us: f64,
    /// 99th-percentile batch-1 latency, microseconds.
    pub latency_p99_us: f64,
    /// Samples per second at batch 128.
    pub throughput: f64,
}

/// One row of the quantization table. `*_vs_f32` figures divide by the f32 row of the same run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantRow {
    /// Profile name (`f32`, `f16`, `sandwich`, `int8`).
    pub profile: String,
    /// Test accuracy through the row kernel (Q8_0 layers as int8 x int8 dot products on the stored blocks,
    /// what `Kernel::Auto` runs at small batches).
    pub accuracy: f64,
    /// Test accuracy through candle's `QMatMul` (same arithmetic, another summation order).
    pub accuracy_qmatmul: f64,
    /// Test accuracy through the large-batch (dequantized) kernel.
    pub accuracy_dequantized_kernel: f64,
    /// `accuracy - accuracy_f32`, in percentage points.
    pub accuracy_delta_points: f64,
    /// Fraction of test samples with the same argmax as the f32 student.
    pub agreement_with_f32: f64,
    /// Bytes of the exported file (GGUF or safetensors).
    pub bytes: usize,
    /// `bytes_f32 / bytes`.
    pub size_ratio_vs_f32: f64,
    /// Median batch-1 latency with the automatic kernel choice, microseconds.
    pub latency_p50_us: f64,
    /// 99th-percentile batch-1 latency, microseconds.
    pub latency_p99_us: f64,
    /// Samples per second at batch 128 with the automatic kernel choice.
    pub throughput: f64,
    /// `latency_p50_f32 / latency_p50_us`.
    pub speedup_batch1_vs_f32: f64,
    /// `throughput / throughput_f32`.
    pub throughput_ratio_vs_f32: f64,
    /// Both kernels at both regimes (quantized profiles), or the f32 timing.
    pub kernels: Vec<KernelTiming>,
}

/// A logits function: rows of raw features and their count in, logits out.
pub type LogitsFn<'a> = &'a dyn Fn(&[f32], usize) -> Result<Vec<f32>>;

/// An owned logits function.
type BoxedLogitsFn<'a> = Box<dyn Fn(&[f32], usize) -> Result<Vec<f32>> + 'a>;

/// Times several logits functions **interleaved** (pass `i` of every function runs before pass `i + 1` of
/// any), so that load from other processes hits all of them alike: per function, batch-1 p50/p99 latency
/// (µs, 300 passes after 20 warm-up) and samples/s at batch 128 (16 rounds of one batch each).
pub fn time_interleaved(fns: &[LogitsFn<'_>], x: &[f32], n: usize, d: usize) -> Result<Vec<(f64, f64, f64)>> {
    if n == 0 || x.len() != n * d {
        return Err(MlError::InvalidInput("timing needs a non-empty sample buffer".into()));
    }
    let m = n.min(LATENCY_PASSES);
    let mut times = vec![Vec::with_capacity(m); fns.len()];
    for i in 0..(m + 20) {
        let row = &x[(i % m) * d..(i % m + 1) * d];
        for (f, t) in fns.iter().zip(times.iter_mut()) {
            let t0 = Instant::now();
            let out = f(row, 1)?;
            let dt = t0.elapsed().as_secs_f64() * 1e6;
            std::hint::black_box(out);
            if i >= 20 {
                t.push(dt);
            }
        }
    }
    let b = THROUGHPUT_BATCH.min(n);
    let mut busy = vec![0f64; fns.len()];
    for f in fns {
        std::hint::black_box(f(&x[..b * d], b)?);
    }
    let rounds = 16;
    for r in 0..rounds {
        let start = (r * b) % (n - b + 1);
        let chunk = &x[start * d..(start + b) * d];
        for (f, t) in fns.iter().zip(busy.iter_mut()) {
            let t0 = Instant::now();
            std::hint::black_box(f(chunk, b)?);
            *t += t0.elapsed().as_secs_f64();
        }
    }
    Ok(times
        .into_iter()
        .zip(busy)
        .map(|(mut t, busy)| {
            t.sort_by(f64::total_cmp);
            (percentile(&t, 50.0), percentile(&t, 99.0), (rounds * b) as f64 / busy)
        })
        .collect())
}

fn predictions(logits: &[f32], c: usize) -> Vec<u32> {
    logits.chunks_exact(c).map(|r| argmax(r) as u32).collect()
}

/// Evaluates a quantized student with the metrics of `evaluate` (quality through the row kernel, i.e.
/// int8 arithmetic for Q8_0 layers;
/// latency with the automatic kernel at batch 1, throughput at batch 128; `size_bytes` is the exported
/// file). `teacher_probs` enables agreement and KL.
pub fn evaluate_quantized(q: &QuantizedModel, test: &Dataset, teacher_probs: Option<&[f32]>) -> Result<Metrics> {
    let (c, d, n) = (q.classes(), q.in_dim(), test.n);
    if test.dim != d || test.num_classes != c {
        return Err(MlError::InvalidInput(format!(
            "test set has dim {} and {} classes, model expects {d} and {c}",
            test.dim, test.num_classes
        )));
    }
    if n == 0 {
        return Err(MlError::InvalidInput("empty test set".into()));
    }
    crate::train::check_labels(&test.labels, n, c)?;
    if let Some(tp) = teacher_probs {
        crate::distill::validate_probabilities(tp, n, c)?;
    }
    let logits = q.logits_rows(&test.features, n)?;
    let probs = softmax_rows(&logits, c, 1.0);
    let pred = predictions(&logits, c);
    let (precision_macro, recall_macro, f1_macro) = macro_prf(&test.labels, &pred, c);
    let f = |x: &[f32], n: usize| q.logits(x, n);
    let timing = time_interleaved(&[&f], &test.features, n, d)?;
    let (p50, p99, tp) = timing.first().copied().unwrap_or((f64::NAN, f64::NAN, f64::NAN));
    let size = match q.profile() {
        Profile::F32 => q.weight_bytes(),
        _ => export_bytes(q, None)?.len(),
    };
    Ok(Metrics {
        accuracy: accuracy(&test.labels, &pred),
        precision_macro,
        recall_macro,
        f1_macro,
        roc_auc: roc_auc(&test.labels, &probs, c),
        log_loss: log_loss(&test.labels, &probs, c),
        ece: ece(&test.labels, &probs, c, ECE_BINS),
        agreement: teacher_probs.map(|tp| crate::metrics::agreement(tp, &logits, c)),
        kl_to_teacher: teacher_probs.map(|tp| crate::metrics::mean_kl(tp, &logits, c)),
        latency_p50_us: p50,
        latency_p99_us: p99,
        throughput_per_s: tp,
        params: q.stored_params(),
        size_bytes: size,
    })
}

/// Builds the quantization table of an MLP or CNN student: f32 (the student itself), f16, sandwich and int8,
/// calibrated on `calib` (`n_calib` rows, e.g. the public transfer set), measured on `test`.
pub fn quantization_table(model: &Model, test: &Dataset, calib: &[f32], n_calib: usize) -> Result<Vec<QuantRow>> {
    let (c, d, n) = (model.classes(), model.in_dim(), test.n);
    if test.dim != d || test.num_classes != c || n == 0 {
        return Err(MlError::InvalidInput(format!(
            "test set ({} samples, dim {}, {} classes) does not fit the model (dim {d}, {c} classes)",
            n, test.dim, test.num_classes
        )));
    }
    let x = &test.features;
    let f32_logits = model.logits(x, n)?;
    let f32_pred = predictions(&f32_logits, c);
    let f32_acc = accuracy(&test.labels, &f32_pred);
    let f32_bytes = model.serialized_size()?;
    // The same f32 weights with the standardization folded and inputs padded, as the quantized profiles
    // run: shows how much of their speed-up is layout, not quantization.
    let folded = QuantizedModel::from_model(model, Profile::F32)?;
    let profiles = [Profile::F16, Profile::Sandwich, Profile::Int8];
    let mut quantized = Vec::with_capacity(profiles.len());
    for p in profiles {
        quantized.push(quantize(model, p, calib, n_calib, &PtqOptions::default())?.0);
    }
    // Every kernel of every profile, timed interleaved with the f32 baseline in one pass.
    let fm = |x: &[f32], n: usize| model.logits(x, n);
    let ff = |x: &[f32], n: usize| folded.logits_with(x, n, false);
    let fr = |x: &[f32], n: usize| folded.logits_rows(x, n);
    let mut fns: Vec<LogitsFn<'_>> = vec![&fm, &ff, &fr];
    let mut labels: Vec<(usize, &'static str)> = vec![
        (usize::MAX, "f32"),
        (usize::MAX, "f32_folded"),
        (usize::MAX, "f32_rows"),
    ];
    let closures: Vec<(usize, &'static str, BoxedLogitsFn<'_>)> = quantized
        .iter()
        .enumerate()
        .flat_map(|(i, q)| {
            let has_q8 = q.layer_formats().contains(&super::LayerFormat::Q8_0);
            let mut v: Vec<(usize, &'static str, BoxedLogitsFn<'_>)> = Vec::new();
            // First the kernel Kernel::Auto uses at batch 1, last the one it uses at batch 128.
            v.push((i, "row_int8", Box::new(move |x: &[f32], n: usize| q.logits_rows(x, n))));
            if has_q8 {
                v.push((
                    i,
                    "qmatmul",
                    Box::new(move |x: &[f32], n: usize| q.logits_with(x, n, true)),
                ));
            }
            v.push((
                i,
                "dequantized",
                Box::new(move |x: &[f32], n: usize| q.logits_with(x, n, false)),
            ));
            v
        })
        .collect();
    for (i, name, f) in &closures {
        fns.push(f.as_ref());
        labels.push((*i, name));
    }
    let timings = time_interleaved(&fns, x, n, d)?;
    let timing_of = |i: usize| -> Vec<KernelTiming> {
        labels
            .iter()
            .zip(&timings)
            .filter(|((j, _), _)| *j == i)
            .map(|((_, k), &(p50, p99, tp))| KernelTiming {
                kernel: (*k).into(),
                latency_p50_us: p50,
                latency_p99_us: p99,
                throughput: tp,
            })
            .collect()
    };
    let f32_kernels = timing_of(usize::MAX);
    let (f32_p50, f32_p99, f32_tp) = (
        f32_kernels[0].latency_p50_us,
        f32_kernels[0].latency_p99_us,
        f32_kernels[0].throughput,
    );
    let mut rows = vec![QuantRow {
        profile: "f32".into(),
        accuracy: f32_acc,
        accuracy_qmatmul: f32_acc,
        accuracy_dequantized_kernel: f32_acc,
        accuracy_delta_points: 0.0,
        agreement_with_f32: 1.0,
        bytes: f32_bytes,
        size_ratio_vs_f32: 1.0,
        latency_p50_us: f32_p50,
        latency_p99_us: f32_p99,
        throughput: f32_tp,
        speedup_batch1_vs_f32: 1.0,
        throughput_ratio_vs_f32: 1.0,
        kernels: f32_kernels,
    }];
    for (i, (profile, q)) in profiles.iter().zip(&quantized).enumerate() {
        let lq = q.logits_rows(x, n)?;
        let pq = predictions(&lq, c);
        let lm = q.logits_with(x, n, true)?;
        let ld = q.logits_with(x, n, false)?;
        let bytes = export_bytes(q, Some(model))?.len();
        let kernels = timing_of(i);
        // Kernel::Auto runs QMatMul at batch 1 (when there are Q8_0 layers) and the dequantized copy at
        // batch 128: those are the row's headline figures.
        let b1 = kernels
            .first()
            .map_or((f64::NAN, f64::NAN), |k| (k.latency_p50_us, k.latency_p99_us));
        let tp = kernels.last().map_or(f64::NAN, |k| k.throughput);
        let acc = accuracy(&test.labels, &pq);
        rows.push(QuantRow {
            profile: profile.name().into(),
            accuracy: acc,
            accuracy_qmatmul: accuracy(&test.labels, &predictions(&lm, c)),
            accuracy_dequantized_kernel: accuracy(&test.labels, &predictions(&ld, c)),
            accuracy_delta_points: 100.0 * (acc - f32_acc),
            agreement_with_f32: pq.iter().zip(&f32_pred).filter(|(a, b)| a == b).count() as f64 / n as f64,
            bytes,
            size_ratio_vs_f32: f32_bytes as f64 / bytes as f64,
            latency_p50_us: b1.0,
            latency_p99_us: b1.1,
            throughput: tp,
            speedup_batch1_vs_f32: f32_p50 / b1.0,
            throughput_ratio_vs_f32: tp / f32_tp,
            kernels,
        });
    }
    Ok(rows)
}

/// Renders the table as fixed-width text.
pub fn format_table(rows: &[QuantRow]) -> String {
    let mut s = format!(
        "{:<9} {:>8} {:>7} {:>9} {:>10} {:>6} {:>9} {:>9} {:>7} {:>11} {:>6}\n",
        "profile",
        "accuracy",
        "d_pts",
        "agree_f32",
        "bytes",
        "x_size",
        "p50_us",
        "p99_us",
        "x_b1",
        "thr_b128/s",
        "x_thr"
    );
    for r in rows {
        s.push_str(&format!(
            "{:<9} {:>8.4} {:>+7.2} {:>9.4} {:>10} {:>6.2} {:>9.1} {:>9.1} {:>7.2} {:>11.0} {:>6.2}\n",
            r.profile,
            r.accuracy,
            r.accuracy_delta_points,
            r.agreement_with_f32,
            r.bytes,
            r.size_ratio_vs_f32,
            r.latency_p50_us,
            r.latency_p99_us,
            r.speedup_batch1_vs_f32,
            r.throughput,
            r.throughput_ratio_vs_f32
        ));
    }
    s.push_str("kernels (batch-1 p50 us / batch-128 samples/s):\n");
    for r in rows {
        for k in &r.kernels {
            s.push_str(&format!(
                "  {:<9} {:<12} {:>9.1} {:>11.0}\n",
                r.profile, k.kernel, k.latency_p50_us, k.throughput
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelConfig;

    #[test]
    fn table_has_every_profile_with_consistent_figures() {
        let cfg = ModelConfig::Mlp { hidden: vec![64] };
        let m = Model::new(&cfg, 64, 3, 4).expect("model");
        let n = 60;
        let features: Vec<f32> = (0..n * 64).map(|i| ((i * 17) % 31) as f32 / 31.0).collect();
        let labels: Vec<u32> = (0..n as u32).map(|i| i % 3).collect();
        let test = Dataset {
            name: "synthetic".into(),
            features: features.clone(),
            labels,
            n,
            dim: 64,
            num_classes: 3,
            kind: fedistill_data::DataKind::Image { height: 8, width: 8 },
            class_names: vec!["a".into(), "b".into(), "c".into()],
            targets: Vec::new(),
        };
        let rows = quantization_table(&m, &test, &features, n).expect("table");
        let names: Vec<&str> = rows.iter().map(|r| r.profile.as_str()).collect();
        assert_eq!(names, ["f32", "f16", "sandwich", "int8"]);
        let f32_bytes = rows[0].bytes as f64;
        for r in &rows {
            assert!((r.size_ratio_vs_f32 - f32_bytes / r.bytes as f64).abs() < 1e-9);
            assert!((0.0..=1.0).contains(&r.accuracy));
        }
        // int8 stores ~1.06 bytes per weight against 4: the file is several times smaller.
        assert!(rows[3].size_ratio_vs_f32 > 3.0, "{:?}", rows[3]);
        let kernels: Vec<&str> = rows[3].kernels.iter().map(|k| k.kernel.as_str()).collect();
        assert_eq!(kernels, ["row_int8", "qmatmul", "dequantized"]);
        let json = serde_json::to_value(&rows[3]).expect("json");
        for key in [
            "profile",
            "accuracy",
            "bytes",
            "latency_p50_us",
            "latency_p99_us",
            "throughput",
        ] {
            assert!(json.get(key).is_some(), "{key}");
        }
        let q = QuantizedModel::from_model(&m, Profile::Int8).expect("q");
        let metrics = evaluate_quantized(&q, &test, None).expect("eval");
        assert!((metrics.accuracy - rows[3].accuracy).abs() < 0.1);
    }

    #[test]
    fn guard_accepts_the_int8_student_and_rejects_a_degraded_one() {
        use crate::lifecycle::{metric_map, GuardConfig};
        use crate::train::{train_teacher, TrainConfig};
        let fed = crate::quant::digits_split();
        let cfg = ModelConfig::Mlp { hidden: vec![32] };
        let tc = TrainConfig {
            epochs: 20,
            seed: 2,
            ..TrainConfig::default()
        };
        let m = train_teacher(&cfg, &fed.shards[0], &tc, &crate::Progress::hidden()).expect("train");
        let current = metric_map(&crate::evaluate(&m, &fed.test, None).expect("eval")).expect("map");
        let (q, _) = quantize(
            &m,
            Profile::Int8,
            &fed.public.features,
            fed.public.n,
            &PtqOptions::default(),
        )
        .expect("quantize");
        let good = metric_map(&evaluate_quantized(&q, &fed.test, None).expect("eval")).expect("map");
        // Deliberately degraded: the hidden layer's weights overwritten with seeded noise of similar scale.
        let bad_model = Model::new(&cfg, fed.test.dim, fed.test.num_classes, 99).expect("model");
        bad_model.copy_weights_from(&m).expect("copy");
        {
            let data = bad_model.varmap().data().lock().expect("lock");
            let w = data.get("layers.0.weight").expect("w");
            use rand::{Rng, SeedableRng};
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
            let vals: Vec<f32> = (0..w.elem_count()).map(|_| rng.random_range(-0.5f32..0.5)).collect();
            let noise = candle_core::Tensor::from_vec(vals, w.shape(), &candle_core::Device::Cpu).expect("noise");
            w.set(&noise).expect("set");
        }
        let bad = metric_map(&crate::evaluate(&bad_model, &fed.test, None).expect("eval")).expect("map");
        let guard = GuardConfig::default();
        let ok = guard.decide(&current, &good);
        assert!(ok.accepted, "{ok:?}");
        let no = guard.decide(&current, &bad);
        assert!(!no.accepted, "{no:?}");
        assert!(no.reason.contains("accuracy"), "{}", no.reason);
    }
}
