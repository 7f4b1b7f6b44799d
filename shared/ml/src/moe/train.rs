//! Continual distillation of a [`MoeStudent`]: one task after another, each from its teacher's soft labels
//! (the project's fused KD loss, KL * T^2) plus the load-balancing loss, with reservoirs of earlier tasks'
//! (input, teacher logits) pairs shuffled into every epoch, as [`crate::Distiller`] replays earlier rounds.
//!
//! Optionally (`route_weight` > 0) the gate is also taught which experts belong to which task: every sample
//! knows its task (a replayed one by the reservoir it sits in), and the routing term is the cross-entropy
//! `-ln sum_{i in experts(task)} p_i`, averaged so that every task weighs the same (a reservoir is usually much
//! smaller than the new task, and a plain mean teaches the gate to prefer the new expert). At test time no task
//! id is given; the gate has to recognise the task.
//!
//! The MoE forward is not an MLP, so the step goes through candle's autograd (the fused loss hands its
//! gradient back through `bwd`) rather than the hand-written MLP backward of `step.rs`.

use candle_core::{Device, Tensor, D};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{load_balancing_loss, MoeStudent};
use crate::distill::{InputNorm, ReplayBuffer, SoftTargets};
use crate::error::{MlError, Result};
use crate::loss::{fused_loss, LossSpec};
use crate::model::{check_features, check_temperature, softmax_rows};
use crate::optim::{AdamWParams, FusedAdamW};
use crate::progress::Progress;
use crate::train::gather_rows;

/// Hyper-parameters of continual MoE distillation. TOML/JSON keys are the field names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MoeDistillConfig {
    /// Passes over (the task's samples + replay) per task.
    pub epochs: usize,
    /// Samples per optimizer step.
    pub batch_size: usize,
    /// AdamW learning rate (constant; a fresh optimizer per task, since the gate changes shape).
    pub lr: f64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Softmax temperature of the KD term (constant).
    pub temperature: f32,
    /// Earlier samples kept for replay, shared equally among the earlier tasks (0 = no replay).
    pub replay_capacity: usize,
    /// Weight of the routing term that teaches the gate each task's experts (0 = off: the gate learns from
    /// the KD and balancing losses alone).
    pub route_weight: f32,
    /// Seed of batch order and reservoirs.
    pub seed: u64,
    /// Standardization of the input, fitted on the first task.
    pub input_norm: InputNorm,
}

impl Default for MoeDistillConfig {
    fn default() -> Self {
        MoeDistillConfig {
            epochs: 10,
            batch_size: 128,
            lr: 2e-3,
            weight_decay: 1e-4,
            temperature: 2.0,
            replay_capacity: 1000,
            route_weight: 0.0,
            seed: 0,
            input_norm: InputNorm::Global,
        }
    }
}

impl MoeDistillConfig {
    /// Checks every field's range; the error names the field and the value.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(MlError::InvalidHyperParameter(m));
        crate::train::check_optimizer(self.epochs, self.batch_size, self.lr, self.weight_decay)?;
        if self.replay_capacity > 10_000_000 {
            return bad(format!("replay_capacity {} above 10000000", self.replay_capacity));
        }
        if !(self.route_weight.is_finite() && self.route_weight >= 0.0) {
            return bad(format!(
                "route_weight must be finite and >= 0, got {}",
                self.route_weight
            ));
        }
        check_temperature(self.temperature)
    }
}

/// The loss of one step, by term.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MoeStepLoss {
    /// KD + balance_weight * balance + route_weight * route: what the step minimised.
    pub total: f32,
    /// The KD term (KL * T^2, mean over the batch).
    pub kd: f32,
    /// The load-balancing term, unweighted (1 = balanced).
    pub balance: f32,
    /// The routing term, unweighted (0 when routing is not supervised).
    pub route: f32,
}

/// Routing supervision of one batch: a `[n, E]` 0/1 mask of the experts each sample's task owns, per-sample
/// weights, and the weight of the term.
pub struct RouteTargets<'a> {
    /// 1 where expert `i` belongs to sample `b`'s task.
    pub mask: &'a Tensor,
    /// `[n]` weight of each sample in the term's weighted mean (`1 / samples of its task` makes every task
    /// count the same, however few of its samples are replayed).
    pub sample_weights: &'a Tensor,
    /// Weight of the routing term.
    pub weight: f32,
}

/// What learning one task did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MoeTaskStats {
    /// Zero-based task index.
    pub task: usize,
    /// Epochs run.
    pub epochs: usize,
    /// Samples of this task.
    pub samples: usize,
    /// Replayed samples of earlier tasks mixed in.
    pub replayed: usize,
    /// Experts during this task.
    pub experts: usize,
    /// The experts this task owns (for the routing term and the diagnostics).
    pub task_experts: Vec<usize>,
    /// Parameters trained during this task.
    pub trainable_params: usize,
    /// Mean losses of the last epoch.
    pub final_loss: MoeStepLoss,
}

/// One optimizer step on a standardized batch: forward, KD loss (`spec`) plus the student's `balance_weight`
/// times the load-balancing loss (plus the routing term when `route` is given), backward through autograd,
/// AdamW on the trainable variables. A non-finite loss leaves the weights unchanged and is returned for the
/// caller to report.
pub fn train_step(
    student: &MoeStudent,
    bx: &Tensor,
    spec: &LossSpec,
    route: Option<RouteTargets<'_>>,
    opt: &mut FusedAdamW,
) -> Result<MoeStepLoss> {
    let out = student.forward_standardized(bx)?;
    let kd = fused_loss(&out.logits, spec.clone())?;
    let balance = load_balancing_loss(&out.probs)?;
    let w = student.config().balance_weight;
    let mut total = if w > 0.0 {
        (&kd + (&balance * w as f64)?)?
    } else {
        kd.clone()
    };
    let mut route_value = 0.0;
    if let Some(r) = route.filter(|r| r.weight > 0.0) {
        // -ln of the probability mass on the task's experts, weighted mean over the batch.
        let mass = (&out.probs * r.mask)?.sum(D::Minus1)?;
        let nll = mass.affine(1.0, 1e-9)?.log()?.neg()?;
        let term = (nll * r.sample_weights)?
            .sum_all()?
            .broadcast_div(&r.sample_weights.sum_all()?)?;
        route_value = term.to_scalar::<f32>()?;
        total = (total + (term * r.weight as f64)?)?;
    }
    let loss = MoeStepLoss {
        total: total.to_scalar::<f32>()?,
        kd: kd.to_scalar::<f32>()?,
        balance: balance.to_scalar::<f32>()?,
        route: route_value,
    };
    if loss.total.is_finite() {
        opt.step(&total.backward()?)?;
    }
    Ok(loss)
}

/// Learns tasks in sequence: the student, one replay reservoir per earlier task, the experts each task owns
/// and the batch RNG persist.
pub struct ContinualMoe {
    student: MoeStudent,
    cfg: MoeDistillConfig,
    /// Reservoir `t` holds task `t`'s (input, teacher logits) pairs.
    replays: Vec<ReplayBuffer>,
    /// Experts owned by each task learnt (or being learnt).
    task_experts: Vec<Vec<usize>>,
    rng: ChaCha8Rng,
}

impl ContinualMoe {
    /// Wraps a student; the configuration is checked here, before any training.
    pub fn new(student: MoeStudent, cfg: MoeDistillConfig) -> Result<ContinualMoe> {
        cfg.validate()?;
        let rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        Ok(ContinualMoe {
            student,
            cfg,
            replays: Vec::new(),
            task_experts: Vec::new(),
            rng,
        })
    }

    /// The student.
    pub fn student(&self) -> &MoeStudent {
        &self.student
    }

    /// Gives the student back.
    pub fn into_student(self) -> MoeStudent {
        self.student
    }

    /// The replay reservoirs, one per task learnt.
    pub fn replays(&self) -> &[ReplayBuffer] {
        &self.replays
    }

    /// Tasks learnt so far.
    pub fn tasks_done(&self) -> usize {
        self.replays.len()
    }

    /// The experts each task learnt owns: those that were new when it began (the previous task's when it
    /// brought none).
    pub fn task_experts(&self) -> &[Vec<usize>] {
        &self.task_experts
    }

    /// Adds a fresh expert for the task about to come (see [`MoeStudent::add_expert`]).
    pub fn add_expert(&mut self) -> Result<usize> {
        self.student.add_expert()
    }

    /// Learns one task from `n` samples `x` (raw features) and the task teacher's `targets`, with the
    /// reservoirs' earlier samples shuffled in; afterwards this task's samples fill a reservoir of their own
    /// and the capacity is shared equally among the tasks. Every input is checked before any weight
    /// changes. Progress: one step per epoch, label "moe task N".
    pub fn learn_task(
        &mut self,
        x: &[f32],
        n: usize,
        targets: &SoftTargets,
        progress: &Progress,
    ) -> Result<MoeTaskStats> {
        let (dim, classes) = (self.student.in_dim(), self.student.classes());
        if n == 0 {
            return Err(MlError::InvalidInput("no samples to learn the task from".into()));
        }
        check_features(x, n, dim)?;
        let logits = targets.to_logits(n, classes)?;
        let task = self.tasks_done();
        if task == 0 {
            match self.cfg.input_norm {
                InputNorm::PerFeature => self.student.fit_input_normalization(x, n, true)?,
                InputNorm::Global => self.student.fit_input_normalization(x, n, false)?,
                InputNorm::Keep => {}
            }
        }
        let experts = self.student.experts();
        // A failed earlier attempt at this task may have recorded its experts already.
        self.task_experts.truncate(task);
        let owned = self.task_experts.iter().flatten().max().map_or(0, |m| m + 1);
        let mine: Vec<usize> = match self.task_experts.last() {
            Some(prev) if owned >= experts => prev.clone(),
            _ => (owned..experts).collect(),
        };
        self.task_experts.push(mine.clone());
        let vars = self.student.trainable_vars().into_iter().map(|(_, v)| v).collect();
        let mut opt = FusedAdamW::new(
            vars,
            AdamWParams {
                lr: self.cfg.lr,
                weight_decay: self.cfg.weight_decay,
                ..AdamWParams::default()
            },
        )?;
        let mut all_x = x.to_vec();
        let mut all_logits = logits.clone();
        let mut task_of = vec![task; n];
        for (t, r) in self.replays.iter().enumerate() {
            let (rx, rl) = r.contents();
            all_x.extend_from_slice(rx);
            all_logits.extend_from_slice(rl);
            task_of.extend(std::iter::repeat_n(t, r.len()));
        }
        let total = task_of.len();
        let xs = self.student.standardize(&all_x, total)?;
        let mut route_mask = vec![0f32; total * experts];
        for (b, &t) in task_of.iter().enumerate() {
            for &i in &self.task_experts[t] {
                route_mask[b * experts + i] = 1.0;
            }
        }
        let mut per_task = vec![0usize; task + 1];
        for &t in &task_of {
            per_task[t] += 1;
        }
        let route_weights: Vec<f32> = task_of.iter().map(|&t| 1.0 / per_task[t] as f32).collect();
        let t = self.cfg.temperature;
        let pt = softmax_rows(&all_logits, classes, t);
        let label = format!("moe task {}", task + 1);
        let epochs = self.cfg.epochs;
        progress.start(&label, epochs as u64);
        let mut order: Vec<usize> = (0..total).collect();
        let mut last = MoeStepLoss {
            total: f32::NAN,
            kd: f32::NAN,
            balance: f32::NAN,
            route: f32::NAN,
        };
        for epoch in 0..epochs {
            order.shuffle(&mut self.rng);
            let mut sums = [0f64; 4];
            let mut steps = 0usize;
            for (step, batch) in order.chunks(self.cfg.batch_size).enumerate() {
                let bx = Tensor::from_vec(gather_rows(&xs, dim, batch), (batch.len(), dim), &Device::Cpu)?;
                let spec = LossSpec {
                    classes,
                    teacher_probs: gather_rows(&pt, classes, batch),
                    weights: Vec::new(),
                    hard: Vec::new(),
                    temperature: t,
                    w_kd: 1.0,
                    w_ce: 0.0,
                };
                let mask = Tensor::from_vec(
                    gather_rows(&route_mask, experts, batch),
                    (batch.len(), experts),
                    &Device::Cpu,
                )?;
                let sample_weights = Tensor::from_vec(
                    batch.iter().map(|&i| route_weights[i]).collect::<Vec<f32>>(),
                    batch.len(),
                    &Device::Cpu,
                )?;
                let route = RouteTargets {
                    mask: &mask,
                    sample_weights: &sample_weights,
                    weight: self.cfg.route_weight,
                };
                let l = train_step(&self.student, &bx, &spec, Some(route), &mut opt)?;
                if !l.total.is_finite() {
                    progress.finish(&label, "diverged");
                    return Err(MlError::Diverged {
                        epoch,
                        step,
                        loss: l.total,
                    });
                }
                for (s, v) in sums.iter_mut().zip([l.total, l.kd, l.balance, l.route]) {
                    *s += v as f64;
                }
                steps += 1;
            }
            let s = steps.max(1) as f64;
            last = MoeStepLoss {
                total: (sums[0] / s) as f32,
                kd: (sums[1] / s) as f32,
                balance: (sums[2] / s) as f32,
                route: (sums[3] / s) as f32,
            };
            progress.advance(
                &label,
                epoch as u64 + 1,
                epochs as u64,
                &format!(
                    "KD loss {:.4} balance {:.3} route {:.3}",
                    last.kd, last.balance, last.route
                ),
            );
        }
        progress.finish(&label, &format!("KD loss {:.4}", last.kd));
        self.remember(task, x, n, &logits);
        Ok(MoeTaskStats {
            task,
            epochs,
            samples: n,
            replayed: total - n,
            experts,
            task_experts: mine,
            trainable_params: self.student.trainable_params(),
            final_loss: last,
        })
    }

    /// Gives task `task` a reservoir of its samples and shares the capacity equally among all reservoirs: a
    /// uniform sample of a uniform sample is uniform, so shrinking one refills a smaller reservoir from it.
    fn remember(&mut self, task: usize, x: &[f32], n: usize, logits: &[f32]) {
        let (dim, classes) = (self.student.in_dim(), self.student.classes());
        let share = self.cfg.replay_capacity / (task + 1);
        let base = self.cfg.seed ^ 0x5EED_0F4E;
        let seed = |t: usize| base ^ (t as u64).wrapping_mul(0x9E37_79B9);
        for (t, r) in self.replays.iter_mut().enumerate() {
            if r.capacity() > share {
                let mut smaller = ReplayBuffer::new(share, dim, classes, seed(t) ^ 1);
                let (rx, rl) = r.contents();
                for (xi, li) in rx.chunks_exact(dim).zip(rl.chunks_exact(classes)) {
                    smaller.offer(xi, li);
                }
                *r = smaller;
            }
        }
        let mut mine = ReplayBuffer::new(share, dim, classes, seed(task));
        for i in 0..n {
            mine.offer(&x[i * dim..(i + 1) * dim], &logits[i * classes..(i + 1) * classes]);
        }
        self.replays.push(mine);
    }
}
