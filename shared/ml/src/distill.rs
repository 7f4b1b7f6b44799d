//! Distillation of the shared student from soft labels: temperature schedules, confidence weighting,
//! a bounded reservoir replay buffer, and one code path for local teachers and federation aggregates.

use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{MlError, Result};
use crate::loss::LossSpec;
use crate::model::{check_features, check_temperature, softmax_rows, Model};
use crate::optim::{AdamWParams, FusedAdamW};
use crate::progress::Progress;
use crate::step::train_step;
use crate::train::gather_rows;

/// Temperature as a function of the run's progress p in [0, 1] (over all rounds and epochs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TemperatureSchedule {
    /// Always `t`.
    Constant {
        /// The temperature.
        t: f32,
    },
    /// `start + (end - start) * p`.
    Linear {
        /// Temperature at p = 0.
        start: f32,
        /// Temperature at p = 1.
        end: f32,
    },
    /// `end + (start - end) * (1 + cos(pi p)) / 2`.
    Cosine {
        /// Temperature at p = 0.
        start: f32,
        /// Temperature at p = 1.
        end: f32,
    },
}

impl Default for TemperatureSchedule {
    fn default() -> Self {
        TemperatureSchedule::Linear { start: 5.0, end: 1.0 }
    }
}

impl TemperatureSchedule {
    /// Checks that every temperature the schedule can produce is finite and > 0.
    pub fn validate(&self) -> Result<()> {
        match *self {
            TemperatureSchedule::Constant { t } => check_temperature(t),
            TemperatureSchedule::Linear { start, end } | TemperatureSchedule::Cosine { start, end } => {
                check_temperature(start)?;
                check_temperature(end)
            }
        }
    }

    /// Temperature at progress `p` (clamped to [0, 1]).
    pub fn at(&self, p: f64) -> f32 {
        let p = if p.is_finite() { p.clamp(0.0, 1.0) } else { 0.0 };
        match *self {
            TemperatureSchedule::Constant { t } => t,
            TemperatureSchedule::Linear { start, end } => (start as f64 + (end as f64 - start as f64) * p) as f32,
            TemperatureSchedule::Cosine { start, end } => {
                (end as f64 + (start as f64 - end as f64) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())) as f32
            }
        }
    }
}

/// How much each sample's KD term counts, from the teacher's distribution at temperature 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfidenceWeighting {
    /// Every sample weighs 1.
    #[default]
    None,
    /// Weight = the teacher's largest probability.
    MaxProb,
    /// Weight = 1 - entropy / ln(classes).
    Entropy,
}

/// Per-sample weights for row-major probabilities with `classes` columns.
pub fn confidence_weights(probs: &[f32], classes: usize, mode: ConfidenceWeighting) -> Vec<f32> {
    let rows = probs.chunks_exact(classes.max(1));
    match mode {
        ConfidenceWeighting::None => rows.map(|_| 1.0).collect(),
        ConfidenceWeighting::MaxProb => rows.map(|r| r.iter().fold(0f32, |a, &b| a.max(b))).collect(),
        ConfidenceWeighting::Entropy => {
            let norm = (classes as f64).ln();
            rows.map(|r| {
                let h: f64 = r
                    .iter()
                    .filter(|&&p| p > 0.0)
                    .map(|&p| -(p as f64) * (p as f64).ln())
                    .sum();
                (1.0 - h / norm).clamp(0.0, 1.0) as f32
            })
            .collect()
        }
    }
}

/// Soft labels for `n` samples, `n * classes` values.
#[derive(Clone, Debug, PartialEq)]
pub enum SoftTargets {
    /// Teacher logits (finite).
    Logits(Vec<f32>),
    /// Probabilities (rows are distributions), as a federation aggregate hands them over; used as
    /// log-probabilities, which are logits of the same distribution (zeros stay zero at any temperature).
    Probabilities(Vec<f32>),
}

impl SoftTargets {
    /// Precomputed soft labels of a local teacher.
    pub fn from_teacher(teacher: &Model, x: &[f32], n: usize) -> Result<SoftTargets> {
        Ok(SoftTargets::Logits(teacher.logits(x, n)?))
    }

    /// Validates the shape and values and returns logits (`-inf` where a probability is 0).
    pub fn to_logits(&self, n: usize, classes: usize) -> Result<Vec<f32>> {
        match self {
            SoftTargets::Logits(l) => {
                if l.len() != n * classes {
                    return Err(MlError::InvalidInput(format!(
                        "soft labels hold {} values, expected n * classes = {n} * {classes}",
                        l.len()
                    )));
                }
                if let Some(i) = l.iter().position(|v| !v.is_finite()) {
                    return Err(MlError::InvalidInput(format!(
                        "soft label logit of sample {} class {} is {} (NaN or Inf)",
                        i / classes,
                        i % classes,
                        l[i]
                    )));
                }
                Ok(l.clone())
            }
            SoftTargets::Probabilities(p) => {
                validate_probabilities(p, n, classes)?;
                Ok(p.iter()
                    .map(|&v| if v > 0.0 { v.ln() } else { f32::NEG_INFINITY })
                    .collect())
            }
        }
    }
}

/// Checks row-major probabilities: `n * classes` values, finite, in [0, 1], rows summing to 1 +- 1e-3.
pub fn validate_probabilities(p: &[f32], n: usize, classes: usize) -> Result<()> {
    if classes == 0 || n.checked_mul(classes) != Some(p.len()) {
        return Err(MlError::InvalidInput(format!(
            "probabilities hold {} values, expected n * classes = {n} * {classes}",
            p.len()
        )));
    }
    for (i, row) in p.chunks_exact(classes).enumerate() {
        if let Some(k) = row.iter().position(|v| !v.is_finite()) {
            return Err(MlError::InvalidProbabilities(format!(
                "sample {i} class {k} is {} (NaN or Inf)",
                row[k]
            )));
        }
        if let Some(k) = row.iter().position(|v| !(0.0..=1.0).contains(v)) {
            return Err(MlError::InvalidProbabilities(format!(
                "sample {i} class {k} is {}, outside [0, 1]",
                row[k]
            )));
        }
        let sum: f64 = row.iter().map(|&v| v as f64).sum();
        if (sum - 1.0).abs() > 1e-3 {
            return Err(MlError::InvalidProbabilities(format!(
                "row {i} sums to {sum}, not 1 +- 1e-3"
            )));
        }
    }
    Ok(())
}

/// A bounded reservoir (Vitter's algorithm R) of earlier (sample, teacher logits) pairs: every sample
/// ever offered has the same chance to be held, and at most `capacity` are held.
#[derive(Clone, Debug)]
pub struct ReplayBuffer {
    capacity: usize,
    dim: usize,
    classes: usize,
    x: Vec<f32>,
    logits: Vec<f32>,
    seen: u64,
    rng: ChaCha8Rng,
}

impl ReplayBuffer {
    /// An empty buffer holding at most `capacity` samples of `dim` features and `classes` logits.
    pub fn new(capacity: usize, dim: usize, classes: usize, seed: u64) -> Self {
        ReplayBuffer {
            capacity,
            dim,
            classes,
            x: Vec::new(),
            logits: Vec::new(),
            seen: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// Number of samples held.
    pub fn len(&self) -> usize {
        self.x.len() / self.dim.max(1)
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.x.is_empty()
    }

    /// Maximum number of samples held.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Number of samples ever offered.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Offers one (sample, logits) pair.
    pub fn offer(&mut self, x: &[f32], logits: &[f32]) {
        if self.capacity == 0 || x.len() != self.dim || logits.len() != self.classes {
            return;
        }
        self.seen += 1;
        if self.len() < self.capacity {
            self.x.extend_from_slice(x);
            self.logits.extend_from_slice(logits);
        } else {
            let j = self.rng.random_range(0..self.seen);
            if (j as usize) < self.capacity {
                let j = j as usize;
                self.x[j * self.dim..(j + 1) * self.dim].copy_from_slice(x);
                self.logits[j * self.classes..(j + 1) * self.classes].copy_from_slice(logits);
            }
        }
    }

    /// The held samples (row-major) and their logits.
    pub fn contents(&self) -> (&[f32], &[f32]) {
        (&self.x, &self.logits)
    }
}

/// Where the student's input standardization comes from on the first round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputNorm {
    /// Per-feature mean/std of the first round's samples (tabular data).
    #[default]
    PerFeature,
    /// One global mean/std (images).
    Global,
    /// Keep the student's standardization as it is.
    Keep,
}

/// Hyper-parameters of distillation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DistillConfig {
    /// Passes over (round samples + replay) per round.
    pub epochs_per_round: usize,
    /// Samples per optimizer step.
    pub batch_size: usize,
    /// Peak AdamW learning rate (the optimizer state persists across rounds).
    pub lr: f64,
    /// The learning rate at the end of the run, as a fraction of `lr`: it decays with a cosine over the run's
    /// progress (rounds x epochs); 1.0 keeps it constant.
    pub lr_final: f64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Temperature over the run.
    pub schedule: TemperatureSchedule,
    /// Weight of the KD term.
    pub w_kd: f32,
    /// Weight of hard-label cross-entropy where labels are given.
    pub w_ce: f32,
    /// Per-sample weighting of the KD term.
    pub confidence: ConfidenceWeighting,
    /// Maximum number of earlier samples kept for replay (0 = no replay).
    pub replay_capacity: usize,
    /// Seed of batch order and reservoir.
    pub seed: u64,
    /// Standardization of the student's input on the first round.
    pub input_norm: InputNorm,
}

impl Default for DistillConfig {
    fn default() -> Self {
        DistillConfig {
            epochs_per_round: 20,
            batch_size: 64,
            lr: 2e-3,
            lr_final: 1.0,
            weight_decay: 1e-4,
            schedule: TemperatureSchedule::default(),
            w_kd: 1.0,
            w_ce: 1.0,
            confidence: ConfidenceWeighting::None,
            replay_capacity: 2048,
            seed: 0,
            input_norm: InputNorm::PerFeature,
        }
    }
}

impl DistillConfig {
    /// Checks every field's range.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(MlError::InvalidHyperParameter(m));
        if self.epochs_per_round == 0 || self.epochs_per_round > 100_000 {
            return bad(format!(
                "epochs_per_round {} out of range 1..=100000",
                self.epochs_per_round
            ));
        }
        if self.batch_size == 0 || self.batch_size > 1 << 20 {
            return bad(format!("batch_size {} out of range 1..=1048576", self.batch_size));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("lr must be finite and > 0, got {}", self.lr));
        }
        if !(self.lr_final.is_finite() && self.lr_final > 0.0 && self.lr_final <= 1.0) {
            return bad(format!("lr_final must be in (0, 1], got {}", self.lr_final));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!(
                "weight_decay must be finite and >= 0, got {}",
                self.weight_decay
            ));
        }
        if !(self.w_kd.is_finite() && self.w_kd >= 0.0 && self.w_ce.is_finite() && self.w_ce >= 0.0) {
            return bad(format!(
                "w_kd and w_ce must be finite and >= 0, got {} and {}",
                self.w_kd, self.w_ce
            ));
        }
        if self.w_kd == 0.0 && self.w_ce == 0.0 {
            return bad("w_kd and w_ce are both 0: nothing to learn".into());
        }
        if self.replay_capacity > 10_000_000 {
            return bad(format!("replay_capacity {} above 10000000", self.replay_capacity));
        }
        self.schedule.validate()
    }
}

/// What one round of distillation did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DistillStats {
    /// Round index as passed in.
    pub round: usize,
    /// Epochs run.
    pub epochs: usize,
    /// Samples of this round.
    pub samples: usize,
    /// Replayed samples mixed in.
    pub replayed: usize,
    /// Mean loss of the last epoch.
    pub final_loss: f32,
    /// Temperature of the first epoch.
    pub temperature_start: f32,
    /// Temperature of the last epoch.
    pub temperature_end: f32,
    /// Mean confidence weight of this round's samples.
    pub mean_confidence: f32,
}

/// Distills a student over one or more rounds; optimizer state and replay buffer persist.
pub struct Distiller {
    student: Model,
    cfg: DistillConfig,
    /// Built on the first round, after the configuration is validated.
    opt: Option<FusedAdamW>,
    replay: ReplayBuffer,
    rng: ChaCha8Rng,
    rounds_done: usize,
}

impl Distiller {
    /// Wraps a student; the configuration is validated by every round (call `DistillConfig::validate`
    /// to check it earlier).
    pub fn new(student: Model, cfg: DistillConfig) -> Self {
        let replay = ReplayBuffer::new(
            cfg.replay_capacity,
            student.in_dim(),
            student.classes(),
            cfg.seed ^ 0x5EED_0F4E,
        );
        let rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        Distiller {
            student,
            cfg,
            opt: None,
            replay,
            rng,
            rounds_done: 0,
        }
    }

    /// The student being distilled.
    pub fn student(&self) -> &Model {
        &self.student
    }

    /// Gives the student back.
    pub fn into_student(self) -> Model {
        self.student
    }

    /// The replay buffer.
    pub fn replay(&self) -> &ReplayBuffer {
        &self.replay
    }

    /// The configuration.
    pub fn config(&self) -> &DistillConfig {
        &self.cfg
    }

    /// One round: trains the student on `n` samples `x` (raw features) against `targets`, plus the
    /// replay buffer's samples, then offers this round's samples to the buffer. `hard` labels (if any)
    /// add the CE term for this round's samples. `round` of `total_rounds` places the round on the
    /// temperature schedule. Every input is validated before any weight changes.
    pub fn distill_round(
        &mut self,
        x: &[f32],
        n: usize,
        targets: &SoftTargets,
        hard: Option<&[u32]>,
        round: usize,
        total_rounds: usize,
    ) -> Result<DistillStats> {
        self.distill_round_with_progress(x, n, targets, hard, round, total_rounds, &Progress::hidden())
    }

    /// `distill_round` reporting each epoch to `progress` (label "student").
    #[allow(clippy::too_many_arguments)]
    pub fn distill_round_with_progress(
        &mut self,
        x: &[f32],
        n: usize,
        targets: &SoftTargets,
        hard: Option<&[u32]>,
        round: usize,
        total_rounds: usize,
        progress: &Progress,
    ) -> Result<DistillStats> {
        self.cfg.validate()?;
        let dim = self.student.in_dim();
        let classes = self.student.classes();
        if n == 0 {
            return Err(MlError::InvalidInput("no samples to distill on".into()));
        }
        check_features(x, n, dim)?;
        let logits = targets.to_logits(n, classes)?;
        if let Some(h) = hard {
            crate::train::check_labels(h, n, classes)?;
        }
        if total_rounds == 0 || round >= total_rounds {
            return Err(MlError::InvalidHyperParameter(format!(
                "round {round} is not below total_rounds {total_rounds}"
            )));
        }
        if self.opt.is_none() {
            let vars = self.student.trainable_vars().into_iter().map(|(_, v)| v).collect();
            let params = AdamWParams {
                lr: self.cfg.lr,
                weight_decay: self.cfg.weight_decay,
                ..AdamWParams::default()
            };
            self.opt = Some(FusedAdamW::new(vars, params)?);
        }
        let Some(opt) = self.opt.as_mut() else {
            return Err(MlError::InvalidHyperParameter("optimizer could not be built".into()));
        };
        if self.rounds_done == 0 {
            match self.cfg.input_norm {
                InputNorm::PerFeature => self.student.fit_input_normalization(x, n, true)?,
                InputNorm::Global => self.student.fit_input_normalization(x, n, false)?,
                InputNorm::Keep => {}
            }
        }
        let (rx, rl) = self.replay.contents();
        let n_rep = self.replay.len();
        let total = n + n_rep;
        let mut all_x = Vec::with_capacity(total * dim);
        all_x.extend_from_slice(x);
        all_x.extend_from_slice(rx);
        let mut all_logits = Vec::with_capacity(total * classes);
        all_logits.extend_from_slice(&logits);
        all_logits.extend_from_slice(rl);
        let mut all_hard: Vec<Option<u32>> = match hard {
            Some(h) => h.iter().map(|&y| Some(y)).collect(),
            None => vec![None; n],
        };
        all_hard.extend(std::iter::repeat_n(None, n_rep));
        let xs = self.student.standardize(&all_x, total)?;
        let weights = confidence_weights(&softmax_rows(&all_logits, classes, 1.0), classes, self.cfg.confidence);
        let mean_confidence = weights[..n].iter().sum::<f32>() / n as f32;

        let epochs = self.cfg.epochs_per_round;
        let span = (total_rounds * epochs).saturating_sub(1).max(1) as f64;
        let mut order: Vec<usize> = (0..total).collect();
        let mut stats = DistillStats {
            round,
            epochs,
            samples: n,
            replayed: n_rep,
            final_loss: f32::NAN,
            temperature_start: f32::NAN,
            temperature_end: f32::NAN,
            mean_confidence,
        };
        for epoch in 0..epochs {
            let p = (round * epochs + epoch) as f64 / span;
            let t = self.cfg.schedule.at(p);
            let f = self.cfg.lr_final;
            opt.set_learning_rate(self.cfg.lr * (f + (1.0 - f) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())));
            if epoch == 0 {
                stats.temperature_start = t;
            }
            stats.temperature_end = t;
            let pt = softmax_rows(&all_logits, classes, t);
            order.shuffle(&mut self.rng);
            let mut sum = 0f64;
            let mut steps = 0usize;
            for (step, batch) in order.chunks(self.cfg.batch_size).enumerate() {
                let bx = Tensor::from_vec(gather_rows(&xs, dim, batch), (batch.len(), dim), &Device::Cpu)?;
                let spec = LossSpec {
                    classes,
                    teacher_probs: gather_rows(&pt, classes, batch),
                    weights: batch.iter().map(|&i| weights[i]).collect(),
                    hard: batch.iter().map(|&i| all_hard[i]).collect(),
                    temperature: t,
                    w_kd: self.cfg.w_kd,
                    w_ce: self.cfg.w_ce,
                };
                let lv = train_step(&self.student, &bx, &spec, opt)?;
                if !lv.is_finite() {
                    return Err(MlError::Diverged { epoch, step, loss: lv });
                }
                sum += lv as f64;
                steps += 1;
            }
            stats.final_loss = (sum / steps.max(1) as f64) as f32;
            progress.advance(
                "student",
                epoch as u64 + 1,
                epochs as u64,
                &format!("KD loss {:.4} T {t:.2}", stats.final_loss),
            );
        }
        for i in 0..n {
            self.replay
                .offer(&x[i * dim..(i + 1) * dim], &logits[i * classes..(i + 1) * classes]);
        }
        self.rounds_done += 1;
        Ok(stats)
    }
}

#[cfg(test)]
mod tests;
