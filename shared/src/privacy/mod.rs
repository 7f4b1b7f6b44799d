//! Differential privacy of the soft labels a participant releases: settings, the clipped and quantized
//! discrete-Gaussian mechanism, its Rényi-DP accountant, and the per-participant budget.
//!
//! What the guarantee covers (and what it does not) is spelled out in docs/privacy.md: the soft-label
//! mechanism makes each released row (event-level, per round) differentially private with respect to that
//! row's clipped contribution; it does not by itself bound how much one private training sample moves the
//! teacher. DP-SGD training of the teacher (`[privacy.teacher]`, `fedistill_ml::dpsgd`) does: its cost,
//! a `DpSgdCost`, is composed with the rounds' by the accountant, and then every figure is per private
//! training sample (add/remove one sample).

pub mod accountant;
pub mod discrete;
pub mod distributed;

use rand::RngCore;
use serde::{Deserialize, Serialize};

pub use accountant::{noise_for_epsilon, DpSgdCost, RdpAccountant, Spend};
pub use discrete::DiscreteGaussian;

/// Probabilities are quantized to integers in units of `1 / QUANT_SCALE` before noise is added.
pub const QUANT_SCALE: f64 = 65_536.0;
/// Largest accepted noise multiplier (keeps the sampler's integers inside u128).
pub const MAX_NOISE_MULTIPLIER: f64 = 1_000.0;

/// How the released labels are formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PrivacyMode {
    /// Noisy clipped probability vectors, projected back onto the simplex.
    #[default]
    Soft,
    /// PATE-style: the teacher's vote (one-hot argmax) plus discrete Gaussian noise, released as the
    /// one-hot argmax of the noisy vote.
    NoisyArgmax,
}

/// `[privacy]` table of a participant config, as written (see docs/privacy.md for every key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyToml {
    /// Turns the mechanism on (default true when the table is present).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `soft` (default) or `noisy_argmax`.
    #[serde(default)]
    pub mode: PrivacyMode,
    /// Noise standard deviation divided by the L2 sensitivity; give this or `epsilon_per_round`.
    #[serde(default)]
    pub noise_multiplier: Option<f64>,
    /// Target epsilon of one round alone; the noise multiplier is calibrated from it.
    #[serde(default)]
    pub epsilon_per_round: Option<f64>,
    /// The delta every epsilon is stated for, in (0, 1).
    pub delta: f64,
    /// L2 bound of a row's probability vector (in (0, 1]; 1 leaves probability vectors unchanged).
    #[serde(default = "one")]
    pub clip: f64,
    /// Cumulative epsilon the participant never exceeds: a round that would exceed it is not sent.
    pub budget_epsilon: f64,
    /// DP-SGD training of the teacher (`[privacy.teacher]`); with it, the guarantee is per private sample.
    #[serde(default)]
    pub teacher: Option<TeacherDp>,
}

/// `[privacy.teacher]`: DP-SGD settings of the participant's teacher training (MLP teachers only).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeacherDp {
    /// Noise standard deviation divided by `clip` (> 0).
    pub noise_multiplier: f64,
    /// L2 bound of each private sample's gradient (> 0).
    pub clip: f64,
    /// Expected batch size; the Poisson sampling rate is `batch / private samples`.
    pub batch: usize,
}

/// Validated `[privacy]` settings: the soft-label mechanism and/or DP-SGD of the teacher, one budget.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PrivacySettings {
    /// Noise on the released soft labels; `None` when only the teacher is DP-trained (labels are then
    /// released as computed, which is post-processing of the DP teacher).
    pub labels: Option<PrivacyConfig>,
    /// DP-SGD of the teacher; `None` when the teacher is trained normally.
    pub teacher: Option<TeacherDp>,
    /// Delta of every (epsilon, delta) statement.
    pub delta: f64,
    /// Cumulative epsilon budget (teacher and rounds together).
    pub budget_epsilon: f64,
}

impl PrivacySettings {
    /// The privacy cost of training the teacher with DP-SGD on `samples` private samples for `epochs`
    /// epochs (`ceil(epochs * samples / batch)` steps at rate `batch / samples`); `None` without DP-SGD.
    /// Refused when the batch exceeds the samples, or when the cost alone exceeds the budget (the
    /// message gives the numbers).
    pub fn teacher_cost(&self, samples: usize, epochs: usize) -> Result<Option<DpSgdCost>, PrivacyError> {
        let Some(t) = self.teacher else {
            return Ok(None);
        };
        if samples == 0 || t.batch > samples {
            return Err(PrivacyError::BadSetting(format!(
                "[privacy.teacher] batch {} exceeds the {samples} private samples",
                t.batch
            )));
        }
        let q = t.batch as f64 / samples as f64;
        let steps = ((epochs as f64 * samples as f64) / t.batch as f64).ceil() as u64;
        let cost = DpSgdCost::new(q, t.noise_multiplier, steps, self.delta);
        if cost.epsilon > self.budget_epsilon {
            return Err(PrivacyError::BadSetting(format!(
                "training the teacher with DP-SGD costs epsilon {:.3} at delta {} ({} steps, sampling rate {:.5}, \
                 noise multiplier {}), more than budget_epsilon {}: raise the noise multiplier, train fewer epochs \
                 or raise the budget",
                cost.epsilon, self.delta, steps, q, t.noise_multiplier, self.budget_epsilon
            )));
        }
        Ok(Some(cost))
    }
}

fn yes() -> bool {
    true
}
fn one() -> f64 {
    1.0
}

/// Why privacy settings were refused or the mechanism could not run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PrivacyError {
    /// A setting is out of its valid range.
    #[error("invalid privacy setting: {0}")]
    BadSetting(String),
    /// The input to the mechanism is not `rows x classes` finite probabilities.
    #[error("privacy mechanism input: {0}")]
    BadInput(String),
}

/// Validated privacy settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PrivacyConfig {
    /// Soft or noisy-argmax release.
    pub mode: PrivacyMode,
    /// Noise multiplier z (noise standard deviation = z x L2 sensitivity).
    pub noise_multiplier: f64,
    /// Delta of the (epsilon, delta) statements.
    pub delta: f64,
    /// L2 clip of a row.
    pub clip: f64,
    /// Cumulative epsilon budget.
    pub budget_epsilon: f64,
}

impl PrivacyToml {
    /// Validates the soft-label mechanism alone (see `validate_settings`); `None` when disabled or when only
    /// the teacher is DP-trained.
    pub fn validate(&self) -> Result<Option<PrivacyConfig>, PrivacyError> {
        Ok(self.validate_settings()?.and_then(|s| s.labels))
    }

    /// Validates everything; `None` when `enabled = false`. Refuses epsilon <= 0, delta outside (0, 1), a
    /// zero (or missing) noise multiplier, a clip outside (0, 1] and a budget <= 0; with `[privacy.teacher]`
    /// the label noise may be left out, and the teacher's noise multiplier and clip must be > 0 and its
    /// batch >= 1.
    pub fn validate_settings(&self) -> Result<Option<PrivacySettings>, PrivacyError> {
        let bad = |m: String| Err(PrivacyError::BadSetting(m));
        if !self.enabled {
            return Ok(None);
        }
        if let Some(t) = &self.teacher {
            if !(t.noise_multiplier > 0.0 && t.noise_multiplier.is_finite()) {
                return bad(format!(
                    "[privacy.teacher] noise_multiplier {} must be a finite number > 0",
                    t.noise_multiplier
                ));
            }
            if !(t.clip > 0.0 && t.clip.is_finite()) {
                return bad(format!("[privacy.teacher] clip {} must be a finite number > 0", t.clip));
            }
            if t.batch == 0 {
                return bad("[privacy.teacher] batch must be >= 1".into());
            }
        }
        if !(self.delta > 0.0 && self.delta < 1.0) {
            return bad(format!("delta {} must be in (0, 1)", self.delta));
        }
        if !(self.budget_epsilon > 0.0 && self.budget_epsilon.is_finite()) {
            return bad(format!(
                "budget_epsilon {} must be a finite number > 0",
                self.budget_epsilon
            ));
        }
        if !(self.clip > 0.0 && self.clip <= 1.0) {
            return bad(format!("clip {} must be in (0, 1]", self.clip));
        }
        let z =
            match (self.noise_multiplier, self.epsilon_per_round) {
                (Some(_), Some(_)) => return bad("give noise_multiplier or epsilon_per_round, not both".into()),
                (None, None) if self.teacher.is_some() => {
                    return Ok(Some(PrivacySettings {
                        labels: None,
                        teacher: self.teacher,
                        delta: self.delta,
                        budget_epsilon: self.budget_epsilon,
                    }))
                }
                (None, None) => return bad(
                    "privacy is enabled but neither noise_multiplier nor epsilon_per_round (nor [privacy.teacher]) \
                     is set"
                        .into(),
                ),
                (Some(z), None) => {
                    if !(z > 0.0 && z.is_finite()) {
                        return bad(format!("noise_multiplier {z} must be > 0 when privacy is enabled"));
                    }
                    z
                }
                (None, Some(e)) => {
                    if !(e > 0.0 && e.is_finite()) {
                        return bad(format!("epsilon_per_round {e} must be a finite number > 0"));
                    }
                    noise_for_epsilon(e, self.delta, 1)
                }
            };
        if z > MAX_NOISE_MULTIPLIER {
            return bad(format!("noise multiplier {z} exceeds {MAX_NOISE_MULTIPLIER}"));
        }
        Ok(Some(PrivacySettings {
            labels: Some(PrivacyConfig {
                mode: self.mode,
                noise_multiplier: z,
                delta: self.delta,
                clip: self.clip,
                budget_epsilon: self.budget_epsilon,
            }),
            teacher: self.teacher,
            delta: self.delta,
            budget_epsilon: self.budget_epsilon,
        }))
    }
}

/// The mechanism applied to one round's soft labels.
#[derive(Debug, Clone)]
pub struct SoftLabelMechanism {
    cfg: PrivacyConfig,
    scale: f64,
    noise: DiscreteGaussian,
}

impl SoftLabelMechanism {
    /// Builds the sampler for `cfg`. Replacing one row changes its clipped non-negative vector by at most
    /// `sqrt(2) * clip` in L2 (two non-negative vectors of norm <= c are at most sqrt(2) c apart), so the
    /// integer noise variance is `ceil((z * sqrt(2) * clip * scale)²)`; rounding up only adds noise.
    pub fn new(cfg: PrivacyConfig) -> Self {
        let scale = match cfg.mode {
            PrivacyMode::Soft => QUANT_SCALE,
            PrivacyMode::NoisyArgmax => 1.0,
        };
        let clip = match cfg.mode {
            PrivacyMode::Soft => cfg.clip,
            PrivacyMode::NoisyArgmax => 1.0,
        };
        let sd = cfg.noise_multiplier * std::f64::consts::SQRT_2 * clip * scale;
        let noise = DiscreteGaussian::new((sd * sd).ceil() as u128);
        SoftLabelMechanism { cfg, scale, noise }
    }

    /// The settings.
    pub fn config(&self) -> &PrivacyConfig {
        &self.cfg
    }

    /// zCDP parameter of one round for rows of `classes` values: `1 / (2 z²)` plus the correction term of
    /// Canonne-Kamath-Steinke (Thm. 14) for a `classes`-dimensional discrete Gaussian, `tau * classes`.
    pub fn rho_per_round(&self, classes: usize) -> f64 {
        let z = self.cfg.noise_multiplier;
        let s2 = self.noise.sigma2() as f64;
        let tau: f64 = 10.0
            * (1..classes.max(1))
                .map(|k| (-2.0 * std::f64::consts::PI.powi(2) * s2 * k as f64 / (k as f64 + 1.0)).exp())
                .sum::<f64>();
        1.0 / (2.0 * z * z) + tau * classes as f64
    }

    /// A fresh accountant for this mechanism.
    pub fn accountant(&self, classes: usize) -> RdpAccountant {
        RdpAccountant::new(self.rho_per_round(classes), self.cfg.delta)
    }

    /// Releases `rows x classes` probabilities privately: quantize, clip each row to L2 <= clip (integer
    /// arithmetic, scaling down never increases a coordinate), add discrete Gaussian noise per coordinate,
    /// then map back onto the probability simplex (Euclidean projection; noisy-argmax: one-hot argmax).
    pub fn privatize<R: RngCore + ?Sized>(
        &self,
        probabilities: &[f32],
        rows: usize,
        classes: usize,
        rng: &mut R,
    ) -> Result<Vec<f32>, PrivacyError> {
        if classes == 0 || probabilities.len() != rows * classes {
            return Err(PrivacyError::BadInput(format!(
                "{} values for {rows} rows x {classes} classes",
                probabilities.len()
            )));
        }
        if let Some(i) = probabilities.iter().position(|v| !v.is_finite() || *v < 0.0) {
            return Err(PrivacyError::BadInput(format!("value {i} is negative or not finite")));
        }
        let mut out = Vec::with_capacity(probabilities.len());
        let mut q = vec![0i64; classes];
        for row in probabilities.chunks_exact(classes) {
            match self.cfg.mode {
                PrivacyMode::Soft => {
                    for (qi, &p) in q.iter_mut().zip(row) {
                        *qi = (f64::from(p) * self.scale).round() as i64;
                    }
                    clip_integer_row(&mut q, self.cfg.clip * self.scale);
                }
                PrivacyMode::NoisyArgmax => {
                    q.iter_mut().for_each(|v| *v = 0);
                    q[argmax(row)] = 1;
                }
            }
            let noisy: Vec<f64> = q
                .iter()
                .map(|&v| (v.saturating_add(self.noise.sample(rng))) as f64 / self.scale)
                .collect();
            match self.cfg.mode {
                PrivacyMode::Soft => out.extend(project_to_simplex(&noisy).into_iter().map(|v| v as f32)),
                PrivacyMode::NoisyArgmax => {
                    let k = argmax(&noisy);
                    out.extend((0..classes).map(|c| if c == k { 1.0f32 } else { 0.0 }));
                }
            }
        }
        Ok(out)
    }
}

/// A ChaCha20 generator seeded from the operating system: the noise of a real release must be
/// unpredictable (seeded generators are for tests and benchmarks only).
pub fn os_rng() -> Result<rand_chacha::ChaCha20Rng, PrivacyError> {
    use rand::SeedableRng;
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| PrivacyError::BadInput(format!("OS randomness unavailable: {e}")))?;
    Ok(rand_chacha::ChaCha20Rng::from_seed(seed))
}

/// What a participant's privacy state decided for a round.
#[derive(Debug, Clone, PartialEq)]
pub enum Release {
    /// Send these privatized labels; `spend` is what the round cost (already recorded).
    Send {
        /// Privatized `rows x classes` probabilities.
        labels: Vec<f32>,
        /// The round's spend.
        spend: Spend,
    },
    /// Sending would exceed the budget: send nothing this round.
    BudgetExhausted {
        /// Cumulative epsilon the round would have reached.
        would_reach: f64,
        /// The budget.
        budget: f64,
        /// Cumulative epsilon spent so far.
        spent: f64,
    },
}

/// A participant's mechanism, accountant and budget across rounds.
#[derive(Debug, Clone)]
pub struct ParticipantPrivacy {
    mechanism: Option<SoftLabelMechanism>,
    teacher: Option<DpSgdCost>,
    budget: f64,
    accountant: RdpAccountant,
    spends: std::collections::BTreeMap<u64, Spend>,
    released: Option<(u64, Vec<f32>)>,
}

impl ParticipantPrivacy {
    /// State for `cfg` with `rounds_released` rounds already spent (restored after a restart).
    pub fn new(cfg: PrivacyConfig, classes: usize, rounds_released: u64) -> Self {
        let mechanism = SoftLabelMechanism::new(cfg);
        let mut accountant = mechanism.accountant(classes);
        accountant.set_rounds(rounds_released);
        ParticipantPrivacy {
            budget: cfg.budget_epsilon,
            mechanism: Some(mechanism),
            teacher: None,
            accountant,
            spends: std::collections::BTreeMap::new(),
            released: None,
        }
    }

    /// State for validated `settings` whose teacher was trained at `teacher` cost (from
    /// `PrivacySettings::teacher_cost`; `None` when it was not DP-trained): the teacher's RDP is composed
    /// with the rounds' from the first release on, so the first round's spend includes it.
    pub fn with_settings(
        settings: &PrivacySettings,
        teacher: Option<DpSgdCost>,
        classes: usize,
        rounds_released: u64,
    ) -> Self {
        let mechanism = settings.labels.map(SoftLabelMechanism::new);
        let mut accountant = match &mechanism {
            Some(m) => m.accountant(classes),
            None => RdpAccountant::new(0.0, settings.delta),
        };
        if let Some(t) = &teacher {
            accountant = accountant.with_teacher(t);
        }
        accountant.set_rounds(rounds_released);
        ParticipantPrivacy {
            mechanism,
            teacher,
            budget: settings.budget_epsilon,
            accountant,
            spends: std::collections::BTreeMap::new(),
            released: None,
        }
    }

    /// The teacher's DP-SGD cost, if it was DP-trained.
    pub fn teacher_cost(&self) -> Option<DpSgdCost> {
        self.teacher
    }

    /// Rounds released so far (persist this; pass it to `new` after a restart).
    pub fn rounds_released(&self) -> u64 {
        self.accountant.rounds()
    }

    /// Cumulative epsilon spent.
    pub fn epsilon_spent(&self) -> f64 {
        self.accountant.epsilon()
    }

    /// Privatizes `round`'s labels if the budget allows. Asking again for the same round returns the
    /// same release without spending again (a resend after a reconnect must not draw fresh noise).
    pub fn handle_round<R: RngCore + ?Sized>(
        &mut self,
        round: u64,
        probabilities: &[f32],
        rows: usize,
        classes: usize,
        rng: &mut R,
    ) -> Result<Release, PrivacyError> {
        if let (Some((r, labels)), Some(spend)) = (&self.released, self.spends.get(&round)) {
            if *r == round {
                return Ok(Release::Send {
                    labels: labels.clone(),
                    spend: *spend,
                });
            }
        }
        let preview = self.accountant.preview();
        let budget = self.budget;
        if preview.epsilon_total > budget {
            return Ok(Release::BudgetExhausted {
                would_reach: preview.epsilon_total,
                budget,
                spent: self.accountant.epsilon(),
            });
        }
        let labels = match &self.mechanism {
            Some(m) => m.privatize(probabilities, rows, classes, rng)?,
            None => {
                if classes == 0 || probabilities.len() != rows * classes {
                    return Err(PrivacyError::BadInput(format!(
                        "{} values for {rows} rows x {classes} classes",
                        probabilities.len()
                    )));
                }
                probabilities.to_vec()
            }
        };
        let spend = self.accountant.record_round();
        self.spends.insert(round, spend);
        self.released = Some((round, labels.clone()));
        Ok(Release::Send { labels, spend })
    }

    /// The spend of a round this participant released, as its round report carries it (and the coordinator
    /// logs it as `Record::PrivacySpend`); `None` if it released nothing for that round.
    pub fn report_spend(&self, round: u64) -> Option<crate::wire::messages::PrivacySpend> {
        self.spends.get(&round).map(|s| s.to_wire())
    }

    /// Report metrics of a round this participant released: `dp_epsilon_round`, `dp_epsilon_total`,
    /// `dp_delta`, `dp_noise_multiplier` (with label noise), `dp_teacher_epsilon` and
    /// `dp_teacher_noise_multiplier` (with a DP-SGD teacher); empty if it released nothing for that round.
    pub fn report_metrics(&self, round: u64) -> Vec<(String, f64)> {
        let Some(s) = self.spends.get(&round) else {
            return Vec::new();
        };
        let mut m = vec![
            ("dp_delta".to_string(), s.delta),
            ("dp_epsilon_round".into(), s.epsilon_round),
            ("dp_epsilon_total".into(), s.epsilon_total),
        ];
        if let Some(mech) = &self.mechanism {
            m.push(("dp_noise_multiplier".into(), mech.config().noise_multiplier));
        }
        if let Some(t) = &self.teacher {
            m.push(("dp_teacher_epsilon".into(), t.epsilon));
            m.push(("dp_teacher_noise_multiplier".into(), t.noise_multiplier));
        }
        m
    }
}

/// Scales a non-negative integer row down (flooring) until its L2 norm is at most `bound`.
fn clip_integer_row(q: &mut [i64], bound: f64) {
    let norm2 = |q: &[i64]| q.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>();
    let n = norm2(q).sqrt();
    if n <= bound {
        return;
    }
    let f = bound / n;
    q.iter_mut().for_each(|v| *v = ((*v as f64) * f).floor() as i64);
    // Floating rounding can leave the norm a hair above the bound: shave the largest entry.
    while norm2(q).sqrt() > bound {
        if let Some(m) = q.iter_mut().max() {
            *m -= 1;
        }
    }
}

/// Index of the largest value, lowest index on ties.
fn argmax<T: Copy + PartialOrd>(row: &[T]) -> usize {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best
}

/// Euclidean projection of `y` onto the probability simplex (Duchi et al. 2008, sort-based).
pub fn project_to_simplex(y: &[f64]) -> Vec<f64> {
    let mut u = y.to_vec();
    u.sort_by(|a, b| b.total_cmp(a));
    let mut cum = 0.0;
    let mut theta = 0.0;
    for (j, &v) in u.iter().enumerate() {
        cum += v;
        let t = (cum - 1.0) / (j as f64 + 1.0);
        if v - t > 0.0 {
            theta = t;
        }
    }
    let mut p: Vec<f64> = y.iter().map(|v| (v - theta).max(0.0)).collect();
    // Exact renormalisation against accumulated rounding.
    let s: f64 = p.iter().sum();
    if s > 0.0 {
        p.iter_mut().for_each(|v| *v /= s);
    } else {
        let k = p.len() as f64;
        p.iter_mut().for_each(|v| *v = 1.0 / k);
    }
    p
}

#[cfg(test)]
mod tests;
