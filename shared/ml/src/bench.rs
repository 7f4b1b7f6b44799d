//! `fedistill bench train`: training throughput of the fused path (fused loss op, hand-written MLP
//! backward, fused AdamW) next to
//! the plain candle-nn path (stock loss ops + `candle_nn::AdamW`), measured in the same run on the same
//! batches, interleaved so machine noise hits both alike.

use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use candle_nn::Optimizer;
use serde::{Deserialize, Serialize};

use crate::error::{MlError, Result};
use crate::loss::{composed_kd_loss, LossSpec};
use crate::model::{check_features, softmax_rows, Model, ModelConfig};
use crate::optim::{AdamWParams, FusedAdamW};
use crate::progress::Progress;
use crate::step::train_step;
use crate::train::gather_rows;

/// One line of the benchmark: a workload measured on both paths.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchLine {
    /// What was trained (e.g. "teacher 784-256-10 batch 128").
    pub workload: String,
    /// Samples per second of the plain candle-nn path.
    pub plain_samples_per_s: f64,
    /// Samples per second of the fused path.
    pub fused_samples_per_s: f64,
    /// fused / plain.
    pub speedup: f64,
    /// Optimizer steps timed per path.
    pub steps: usize,
}

/// Benchmark settings.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Timed steps per path and workload (split into interleaved blocks).
    pub steps: usize,
    /// Untimed warm-up steps per path.
    pub warmup: usize,
    /// Samples per step.
    pub batch_size: usize,
}

impl BenchConfig {
    /// Full run (a few seconds per workload in release).
    pub fn full() -> Self {
        BenchConfig {
            steps: 600,
            warmup: 30,
            batch_size: 128,
        }
    }

    /// `--quick`: enough steps for a stable ratio, well under a minute in release.
    pub fn quick() -> Self {
        BenchConfig {
            steps: 120,
            warmup: 10,
            batch_size: 128,
        }
    }
}

enum Path {
    Plain(candle_nn::AdamW),
    Fused(FusedAdamW),
}

struct Runner {
    model: Model,
    path: Path,
}

impl Runner {
    fn new(cfg: &ModelConfig, dim: usize, classes: usize, fused: bool) -> Result<Runner> {
        let model = Model::new(cfg, dim, classes, 7)?;
        let vars: Vec<_> = model.trainable_vars().into_iter().map(|(_, v)| v).collect();
        let p = AdamWParams::default();
        let path = if fused {
            Path::Fused(FusedAdamW::new(vars, p)?)
        } else {
            Path::Plain(candle_nn::AdamW::new(
                vars,
                candle_nn::ParamsAdamW {
                    lr: p.lr,
                    beta1: p.beta1,
                    beta2: p.beta2,
                    eps: p.eps,
                    weight_decay: p.weight_decay,
                },
            )?)
        };
        Ok(Runner { model, path })
    }

    /// One step on batch `b` (rows of `xs`, labels `y`, teacher probabilities `pt` at temperature `t`
    /// when distilling).
    fn step(&mut self, bx: &Tensor, y: &[u32], pt: Option<(&[f32], f32)>, classes: usize) -> Result<()> {
        match &mut self.path {
            Path::Fused(opt) => {
                let spec = match pt {
                    Some((p, t)) => LossSpec {
                        classes,
                        teacher_probs: p.to_vec(),
                        weights: Vec::new(),
                        hard: Vec::new(),
                        temperature: t,
                        w_kd: 1.0,
                        w_ce: 0.0,
                    },
                    None => LossSpec {
                        classes,
                        teacher_probs: Vec::new(),
                        weights: Vec::new(),
                        hard: y.iter().map(|&v| Some(v)).collect(),
                        temperature: 1.0,
                        w_kd: 0.0,
                        w_ce: 1.0,
                    },
                };
                train_step(&self.model, bx, &spec, opt)?;
            }
            Path::Plain(opt) => {
                let logits = self.model.forward_standardized(bx)?;
                let n = y.len();
                let loss = match pt {
                    Some((p, t)) => {
                        let pt = Tensor::from_slice(p, (n, classes), &Device::Cpu)?;
                        let w = Tensor::ones(n, candle_core::DType::F32, &Device::Cpu)?;
                        composed_kd_loss(&logits, &pt, &w, t as f64, 1.0)?
                    }
                    None => {
                        let yt = Tensor::from_slice(y, n, &Device::Cpu)?;
                        candle_nn::loss::cross_entropy(&logits, &yt)?
                    }
                };
                opt.step(&loss.backward()?)?;
            }
        }
        Ok(())
    }
}

/// Measures one workload on both paths; `teacher_probs` switches from CE training to distillation.
#[allow(clippy::too_many_arguments)]
fn measure(
    name: &str,
    cfg: &ModelConfig,
    xs: &[f32],
    y: &[u32],
    n: usize,
    dim: usize,
    classes: usize,
    teacher_probs: Option<&[f32]>,
    bc: &BenchConfig,
) -> Result<BenchLine> {
    let bs = bc.batch_size.min(n);
    let batches: Vec<(Tensor, Vec<u32>, Option<Vec<f32>>)> = (0..n / bs)
        .map(|b| {
            let idx: Vec<usize> = (b * bs..(b + 1) * bs).collect();
            let bx = Tensor::from_vec(gather_rows(xs, dim, &idx), (bs, dim), &Device::Cpu)?;
            let by = idx.iter().map(|&i| y[i]).collect();
            let bp = teacher_probs.map(|p| gather_rows(p, classes, &idx));
            Ok((bx, by, bp))
        })
        .collect::<Result<_>>()?;
    if batches.is_empty() {
        return Err(MlError::InvalidInput("not enough samples for one batch".into()));
    }
    let mut runners = [
        Runner::new(cfg, dim, classes, false)?,
        Runner::new(cfg, dim, classes, true)?,
    ];
    let mut elapsed = [Duration::ZERO; 2];
    let mut k = 0usize;
    for r in runners.iter_mut() {
        for i in 0..bc.warmup {
            let (bx, by, bp) = &batches[i % batches.len()];
            r.step(bx, by, bp.as_deref().map(|p| (p, 2.0)), classes)?;
        }
    }
    let block = 20usize;
    let mut done = 0usize;
    while done < bc.steps {
        let todo = block.min(bc.steps - done);
        for (which, r) in runners.iter_mut().enumerate() {
            let start = Instant::now();
            for j in 0..todo {
                let (bx, by, bp) = &batches[(k + j) % batches.len()];
                r.step(bx, by, bp.as_deref().map(|p| (p, 2.0)), classes)?;
            }
            elapsed[which] += start.elapsed();
        }
        k += todo;
        done += todo;
    }
    let sps = |d: Duration| (bc.steps * bs) as f64 / d.as_secs_f64().max(1e-9);
    let plain = sps(elapsed[0]);
    let fused = sps(elapsed[1]);
    Ok(BenchLine {
        workload: name.to_string(),
        plain_samples_per_s: plain,
        fused_samples_per_s: fused,
        speedup: fused / plain,
        steps: bc.steps,
    })
}

/// Runs the training benchmark on images `x` (n rows of `dim`, e.g. MNIST 784) with labels `y`:
/// teacher training of an MLP dim-256-classes and distillation of an MLP dim-64-classes from
/// soft labels of a (randomly initialized) teacher.
pub fn bench_train(
    x: &[f32],
    y: &[u32],
    n: usize,
    dim: usize,
    classes: usize,
    bc: &BenchConfig,
) -> Result<Vec<BenchLine>> {
    bench_train_with_progress(x, y, n, dim, classes, bc, &Progress::hidden())
}

/// [`bench_train`], showing one step per workload on `progress`.
pub fn bench_train_with_progress(
    x: &[f32],
    y: &[u32],
    n: usize,
    dim: usize,
    classes: usize,
    bc: &BenchConfig,
    progress: &Progress,
) -> Result<Vec<BenchLine>> {
    check_features(x, n, dim)?;
    let teacher_cfg = ModelConfig::Mlp { hidden: vec![256] };
    let student_cfg = ModelConfig::Mlp { hidden: vec![64] };
    let norm = Model::new(&teacher_cfg, dim, classes, 1)?;
    norm.fit_input_normalization(x, n, false)?;
    let xs = norm.standardize(x, n)?;
    let teacher_logits = norm.logits(x, n)?;
    let pt = softmax_rows(&teacher_logits, classes, 2.0);
    let bs = bc.batch_size;
    let workloads: [(String, &ModelConfig, Option<&[f32]>); 3] = [
        (
            format!("teacher MLP {dim}-256-{classes}, batch {bs}"),
            &teacher_cfg,
            None,
        ),
        (
            format!("distill MLP {dim}-256-{classes}, batch {bs}"),
            &teacher_cfg,
            Some(&pt),
        ),
        (
            format!("distill MLP {dim}-64-{classes}, batch {bs}"),
            &student_cfg,
            Some(&pt),
        ),
    ];
    let total = workloads.len() as u64;
    progress.start("train", total);
    let mut lines = Vec::with_capacity(workloads.len());
    for (i, (name, cfg, soft)) in workloads.iter().enumerate() {
        let line = measure(name, cfg, &xs, y, n, dim, classes, *soft, bc)?;
        progress.advance("train", i as u64 + 1, total, &format!("{name}: {:.2}x", line.speedup));
        lines.push(line);
    }
    progress.finish("train", "done");
    Ok(lines)
}
