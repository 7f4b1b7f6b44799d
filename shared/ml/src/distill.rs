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
    /// AdamW learning rate (constant across rounds; the optimizer state persists).
    pub lr: f64,
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
            let t = self.cfg.schedule.at((round * epochs + epoch) as f64 / span);
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
mod tests {
    use super::*;
    use crate::model::ModelConfig;

    fn close(a: f32, b: f32) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }

    /// A tiny fixture: 40 samples of 4 features, teacher = a fixed random MLP.
    fn fixture() -> Result<(Vec<f32>, Model)> {
        let x: Vec<f32> = (0..160).map(|i| ((i * 7919 % 97) as f32 / 97.0) - 0.5).collect();
        let teacher = Model::new(&ModelConfig::Mlp { hidden: vec![8] }, 4, 3, 11)?;
        Ok((x, teacher))
    }

    fn cfg() -> DistillConfig {
        DistillConfig {
            epochs_per_round: 3,
            batch_size: 8,
            replay_capacity: 16,
            seed: 3,
            ..DistillConfig::default()
        }
    }

    fn student() -> Result<Model> {
        Model::new(&ModelConfig::Mlp { hidden: vec![4] }, 4, 3, 1)
    }

    #[test]
    fn temperature_schedules_hand_values() {
        let lin = TemperatureSchedule::Linear { start: 5.0, end: 1.0 };
        close(lin.at(0.0), 5.0);
        close(lin.at(0.5), 3.0);
        close(lin.at(1.0), 1.0);
        close(lin.at(2.0), 1.0); // clamped
        let cos = TemperatureSchedule::Cosine { start: 5.0, end: 1.0 };
        close(cos.at(0.0), 5.0);
        close(cos.at(0.5), 3.0);
        // 1 + 4 * (1 + cos(pi/4)) / 2 = 4.414213562
        close(cos.at(0.25), 4.414_213_5);
        close(cos.at(1.0), 1.0);
        close(TemperatureSchedule::Constant { t: 2.5 }.at(0.7), 2.5);
        assert_eq!(TemperatureSchedule::default(), lin);
    }

    #[test]
    fn schedule_is_spread_over_rounds_and_epochs() -> Result<()> {
        let (x, teacher) = fixture()?;
        let targets = SoftTargets::from_teacher(&teacher, &x, 40)?;
        let mut d = Distiller::new(
            student()?,
            DistillConfig {
                epochs_per_round: 2,
                replay_capacity: 0,
                ..cfg()
            },
        );
        // 2 rounds x 2 epochs: progress 0, 1/3 | 2/3, 1 -> T = 5, 3.667 | 2.333, 1 (linear 5 -> 1).
        let s0 = d.distill_round(&x, 40, &targets, None, 0, 2)?;
        let s1 = d.distill_round(&x, 40, &targets, None, 1, 2)?;
        close(s0.temperature_start, 5.0);
        close(s0.temperature_end, 5.0 - 4.0 / 3.0);
        close(s1.temperature_start, 5.0 - 8.0 / 3.0);
        close(s1.temperature_end, 1.0);
        Ok(())
    }

    #[test]
    fn non_positive_temperature_is_rejected_before_training() -> Result<()> {
        let (x, teacher) = fixture()?;
        let targets = SoftTargets::from_teacher(&teacher, &x, 40)?;
        for schedule in [
            TemperatureSchedule::Constant { t: 0.0 },
            TemperatureSchedule::Linear { start: 5.0, end: -1.0 },
            TemperatureSchedule::Cosine {
                start: f32::NAN,
                end: 1.0,
            },
        ] {
            let s = student()?;
            let before = s.weights_digest();
            let mut d = Distiller::new(s, DistillConfig { schedule, ..cfg() });
            assert!(matches!(
                d.distill_round(&x, 40, &targets, None, 0, 1),
                Err(MlError::InvalidHyperParameter(_))
            ));
            assert_eq!(d.student().weights_digest(), before, "weights must not change");
        }
        Ok(())
    }

    #[test]
    fn confidence_weights_hand_values() {
        let p = [
            0.7f32,
            0.2,
            0.1,
            1.0 / 3.0,
            1.0 / 3.0,
            1.0 / 3.0,
            0.5,
            0.5,
            0.0,
            1.0,
            0.0,
            0.0,
        ];
        assert_eq!(confidence_weights(&p, 3, ConfidenceWeighting::None), vec![1.0; 4]);
        let m = confidence_weights(&p, 3, ConfidenceWeighting::MaxProb);
        for (a, b) in m.iter().zip([0.7, 1.0 / 3.0, 0.5, 1.0]) {
            close(*a, b);
        }
        // 1 - H/ln 3: H(0.7,0.2,0.1) = 0.8018185 -> 0.2701608; uniform -> 0; (0.5,0.5,0) -> 1 - ln2/ln3
        // = 0.3690702; one-hot -> 1.
        let e = confidence_weights(&p, 3, ConfidenceWeighting::Entropy);
        for (a, b) in e.iter().zip([0.270_160_8, 0.0, 0.369_070_2, 1.0]) {
            close(*a, b);
        }
    }

    #[test]
    fn replay_buffer_is_bounded_and_reservoir_sampled() {
        let mut r = ReplayBuffer::new(10, 2, 2, 1);
        for i in 0..1000 {
            let v = i as f32;
            r.offer(&[v, v], &[v, -v]);
        }
        assert_eq!(r.len(), 10);
        assert_eq!(r.seen(), 1000);
        let (x, l) = r.contents();
        assert_eq!((x.len(), l.len()), (20, 20));
        // Pairs stay aligned, and a reservoir over 1000 keeps mostly late items (P(any of first 10 kept) small).
        for (xr, lr) in x.chunks(2).zip(l.chunks(2)) {
            assert_eq!(xr[0], lr[0]);
        }
        assert!(x.chunks(2).filter(|r| r[0] >= 10.0).count() >= 8);
        let mut empty = ReplayBuffer::new(0, 2, 2, 1);
        empty.offer(&[1.0, 1.0], &[0.0, 0.0]);
        assert!(empty.is_empty());
    }

    #[test]
    fn replay_is_mixed_into_later_rounds() -> Result<()> {
        let (x, teacher) = fixture()?;
        let targets = SoftTargets::from_teacher(&teacher, &x, 40)?;
        let mut d = Distiller::new(student()?, cfg());
        let s0 = d.distill_round(&x, 40, &targets, None, 0, 3)?;
        assert_eq!(s0.replayed, 0);
        let s1 = d.distill_round(&x, 40, &targets, None, 1, 3)?;
        assert_eq!(s1.replayed, 16);
        assert_eq!(d.replay().len(), 16);
        Ok(())
    }

    #[test]
    fn distillation_is_deterministic_and_learns() -> Result<()> {
        let (x, teacher) = fixture()?;
        let targets = SoftTargets::from_teacher(&teacher, &x, 40)?;
        let c = DistillConfig {
            epochs_per_round: 60,
            lr: 1e-2,
            ..cfg()
        };
        let mut a = Distiller::new(student()?, c.clone());
        let mut b = Distiller::new(student()?, c.clone());
        let sa = a.distill_round(&x, 40, &targets, None, 0, 1)?;
        b.distill_round(&x, 40, &targets, None, 0, 1)?;
        assert_eq!(a.student().weights_digest(), b.student().weights_digest());
        let mut other = Distiller::new(student()?, DistillConfig { seed: 4, ..c });
        other.distill_round(&x, 40, &targets, None, 0, 1)?;
        assert_ne!(a.student().weights_digest(), other.student().weights_digest());
        let tp = teacher.probabilities(&x, 40, 1.0)?;
        let before = crate::metrics::mean_kl(&tp, &student()?.logits(&x, 40)?, 3);
        let after = crate::metrics::mean_kl(&tp, &a.student().logits(&x, 40)?, 3);
        assert!(after < before * 0.5, "KL to teacher {before} -> {after}");
        assert!(sa.final_loss.is_finite());
        Ok(())
    }

    #[test]
    fn probabilities_and_logits_take_the_same_path() -> Result<()> {
        let (x, teacher) = fixture()?;
        let logits = teacher.logits(&x, 40)?;
        let probs = softmax_rows(&logits, 3, 1.0);
        let mut a = Distiller::new(student()?, cfg());
        let mut b = Distiller::new(student()?, cfg());
        a.distill_round(&x, 40, &SoftTargets::Logits(logits), None, 0, 1)?;
        b.distill_round(&x, 40, &SoftTargets::Probabilities(probs), None, 0, 1)?;
        let (la, lb) = (a.student().logits(&x, 40)?, b.student().logits(&x, 40)?);
        for (p, q) in la.iter().zip(&lb) {
            assert!((p - q).abs() < 1e-3, "{p} vs {q}");
        }
        Ok(())
    }

    #[test]
    fn bad_soft_labels_are_rejected() -> Result<()> {
        let (x, teacher) = fixture()?;
        let good = teacher.logits(&x, 40)?;
        let probs = softmax_rows(&good, 3, 1.0);
        let mut nan = good.clone();
        nan[5] = f32::NAN;
        let mut inf = good.clone();
        inf[7] = f32::INFINITY;
        let mut not_dist = probs.clone();
        not_dist[0] += 0.1;
        let mut negative = probs.clone();
        negative[0] = -0.1;
        negative[1] += 0.1;
        let mut above_one = probs.clone();
        above_one[0] = 1.5;
        let mut nan_p = probs.clone();
        nan_p[2] = f32::NAN;
        type Check = fn(&MlError) -> bool;
        let cases: Vec<(SoftTargets, Check)> = vec![
            (SoftTargets::Logits(good[..good.len() - 1].to_vec()), |e| {
                matches!(e, MlError::InvalidInput(_))
            }),
            (SoftTargets::Logits(nan), |e| matches!(e, MlError::InvalidInput(_))),
            (SoftTargets::Logits(inf), |e| matches!(e, MlError::InvalidInput(_))),
            (SoftTargets::Probabilities(probs[..probs.len() - 3].to_vec()), |e| {
                matches!(e, MlError::InvalidInput(_))
            }),
            (SoftTargets::Probabilities(not_dist), |e| {
                matches!(e, MlError::InvalidProbabilities(_))
            }),
            (SoftTargets::Probabilities(negative), |e| {
                matches!(e, MlError::InvalidProbabilities(_))
            }),
            (SoftTargets::Probabilities(above_one), |e| {
                matches!(e, MlError::InvalidProbabilities(_))
            }),
            (SoftTargets::Probabilities(nan_p), |e| {
                matches!(e, MlError::InvalidProbabilities(_))
            }),
        ];
        for (targets, is_expected) in cases {
            let s = student()?;
            let before = s.weights_digest();
            let mut d = Distiller::new(s, cfg());
            match d.distill_round(&x, 40, &targets, None, 0, 1) {
                Err(e) => assert!(is_expected(&e), "unexpected error {e}"),
                Ok(_) => panic!("accepted bad soft labels"),
            }
            assert_eq!(d.student().weights_digest(), before);
        }
        Ok(())
    }

    #[test]
    fn bad_features_labels_and_rounds_are_rejected() -> Result<()> {
        let (x, teacher) = fixture()?;
        let t = SoftTargets::from_teacher(&teacher, &x, 40)?;
        let mut d = Distiller::new(student()?, cfg());
        let mut xn = x.clone();
        xn[0] = f32::NAN;
        assert!(matches!(
            d.distill_round(&xn, 40, &t, None, 0, 1),
            Err(MlError::InvalidInput(_))
        ));
        assert!(matches!(
            d.distill_round(&x[..100], 40, &t, None, 0, 1),
            Err(MlError::InvalidInput(_))
        ));
        assert!(matches!(
            d.distill_round(&x, 40, &t, Some(&[5; 40]), 0, 1),
            Err(MlError::InvalidInput(_))
        ));
        assert!(matches!(
            d.distill_round(&x, 40, &t, Some(&[0; 39]), 0, 1),
            Err(MlError::InvalidInput(_))
        ));
        assert!(matches!(
            d.distill_round(&x, 40, &t, None, 1, 1),
            Err(MlError::InvalidHyperParameter(_))
        ));
        assert!(matches!(
            d.distill_round(&[], 0, &SoftTargets::Logits(vec![]), None, 0, 1),
            Err(MlError::InvalidInput(_))
        ));
        let mut bad = Distiller::new(
            student()?,
            DistillConfig {
                w_kd: 0.0,
                w_ce: 0.0,
                ..cfg()
            },
        );
        assert!(matches!(
            bad.distill_round(&x, 40, &t, None, 0, 1),
            Err(MlError::InvalidHyperParameter(_))
        ));
        Ok(())
    }

    #[test]
    fn validate_probabilities_cases() {
        assert!(validate_probabilities(&[0.2, 0.8, 1.0, 0.0], 2, 2).is_ok());
        assert!(validate_probabilities(&[0.2, 0.8005], 1, 2).is_ok()); // within 1e-3
        assert!(matches!(
            validate_probabilities(&[0.2, 0.81], 1, 2),
            Err(MlError::InvalidProbabilities(_))
        ));
        assert!(matches!(
            validate_probabilities(&[0.2, 0.8, 0.5], 1, 2),
            Err(MlError::InvalidInput(_))
        ));
        assert!(matches!(
            validate_probabilities(&[f32::INFINITY, 0.0], 1, 2),
            Err(MlError::InvalidProbabilities(_))
        ));
    }

    #[test]
    fn diverging_distillation_names_epoch_and_step() -> Result<()> {
        let (x, teacher) = fixture()?;
        let t = SoftTargets::from_teacher(&teacher, &x, 40)?;
        let mut d = Distiller::new(
            student()?,
            DistillConfig {
                lr: 1e30,
                weight_decay: 0.0,
                ..cfg()
            },
        );
        match d.distill_round(&x, 40, &t, None, 0, 1) {
            Err(e @ MlError::Diverged { .. }) => assert!(e.to_string().contains("epoch 0, step"), "{e}"),
            other => panic!("expected divergence, got {other:?}"),
        }
        Ok(())
    }
}
