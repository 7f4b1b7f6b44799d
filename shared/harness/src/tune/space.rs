//! The search space of `fedistill tune`: the knobs it tunes, how a candidate is drawn (seeded, so a rerun tries
//! the same candidates), and how a candidate is applied to an [`ExperimentConfig`]. Two groups, tuned in two
//! stages on different evidence (docs/ml.md, "Tuning the knobs"):
//! - [`TeacherKnobs`], a participant's `[train]`: tuned on each participant's own holdout rows.
//! - [`FederationKnobs`], the shared knobs (the coordinator's `temperature` and `rounds`, the `[student]` width,
//!   the `[distill]` temperature schedule, confidence weighting and learning rate) and the `[refresh]`: tuned in
//!   a federation simulated on the public set.
//!
//! Candidate 0 of each stage is the defaults, so the search always measures them at its smallest budget.

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use fedistill_shared::ml::distill::{ConfidenceWeighting, TemperatureSchedule};
use fedistill_shared::ml::{ModelConfig, TrainConfig};

use crate::experiment::ExperimentConfig;

/// How a participant trains its private teacher (`[train]`); the rest of `[train]` keeps the defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeacherKnobs {
    /// Peak AdamW learning rate.
    pub lr: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Most passes over the private rows (early stopping may end sooner).
    pub epochs: usize,
}

impl TeacherKnobs {
    /// The knobs of a training configuration.
    pub fn of(train: &TrainConfig) -> Self {
        TeacherKnobs {
            lr: train.lr,
            weight_decay: train.weight_decay,
            epochs: train.epochs,
        }
    }

    /// Sets the knobs in `train`.
    pub fn apply(&self, train: &mut TrainConfig) {
        train.lr = self.lr;
        train.weight_decay = self.weight_decay;
        train.epochs = self.epochs;
    }
}

/// The knobs tuned in the simulated federation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FederationKnobs {
    /// Temperature of the released soft labels (coordinator `temperature`).
    pub temperature: f32,
    /// Distillation rounds (coordinator `rounds`; each round labels `public / rounds` rows).
    pub rounds: usize,
    /// Hidden width of the one-layer MLP student (`[student] hidden = [width]`).
    pub width: usize,
    /// The student's distillation temperature over the run (`[distill] schedule`).
    pub schedule: TemperatureSchedule,
    /// Per-sample weighting of the KD term (`[distill] confidence`).
    pub confidence: ConfidenceWeighting,
    /// Peak distillation learning rate (`[distill] lr`).
    pub distill_lr: f64,
    /// Teacher refresh epochs per round, 0 = off (`[refresh] epochs`).
    pub refresh_epochs: usize,
    /// Weight of the consensus term in the refresh (`[refresh] w_kd`).
    pub refresh_w_kd: f32,
}

impl FederationKnobs {
    /// The knobs of an experiment configuration; its student must be a one-hidden-layer MLP (the defaults are).
    pub fn of(cfg: &ExperimentConfig) -> anyhow::Result<Self> {
        let width = match &cfg.student {
            ModelConfig::Mlp { hidden } if hidden.len() == 1 => hidden[0],
            other => anyhow::bail!("tune varies the width of a one-hidden-layer MLP student, not {other:?}"),
        };
        Ok(FederationKnobs {
            temperature: cfg.temperature,
            rounds: cfg.rounds,
            width,
            schedule: cfg.distill.schedule.clone(),
            confidence: cfg.distill.confidence,
            distill_lr: cfg.distill.lr,
            refresh_epochs: cfg.refresh.epochs,
            refresh_w_kd: cfg.refresh.w_kd,
        })
    }

    /// Sets the knobs in `cfg`.
    pub fn apply(&self, cfg: &mut ExperimentConfig) {
        cfg.temperature = self.temperature;
        cfg.rounds = self.rounds;
        cfg.student = ModelConfig::Mlp {
            hidden: vec![self.width],
        };
        cfg.distill.schedule = self.schedule.clone();
        cfg.distill.confidence = self.confidence;
        cfg.distill.lr = self.distill_lr;
        cfg.refresh.epochs = self.refresh_epochs;
        cfg.refresh.w_kd = self.refresh_w_kd;
    }
}

/// `temperature` as a table cell: `lin 5.0>1.0`, `cos 4.2>1.3`, `const 2.0`.
pub fn schedule_name(s: &TemperatureSchedule) -> String {
    match *s {
        TemperatureSchedule::Constant { t } => format!("const {t:.1}"),
        TemperatureSchedule::Linear { start, end } => format!("lin {start:.1}>{end:.1}"),
        TemperatureSchedule::Cosine { start, end } => format!("cos {start:.1}>{end:.1}"),
    }
}

/// `confidence` as its TOML name.
pub fn confidence_name(c: ConfidenceWeighting) -> &'static str {
    match c {
        ConfidenceWeighting::None => "none",
        ConfidenceWeighting::MaxProb => "max_prob",
        ConfidenceWeighting::Entropy => "entropy",
    }
}

/// `x` rounded to two significant digits (sampled rates read as 0.0023, not 0.002317...).
fn two_digits(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let scale = 10f64.powi(1 - x.abs().log10().floor() as i32);
    (x * scale).round() / scale
}

/// Log-uniform in `[lo, hi]`, two significant digits.
fn log_uniform(rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> f64 {
    two_digits((lo.ln() + rng.random::<f64>() * (hi.ln() - lo.ln())).exp())
}

/// A temperature in `[lo, hi]`, log-uniform, to 0.1.
fn temperature(rng: &mut ChaCha8Rng, lo: f32, hi: f32) -> f32 {
    let t = (lo.ln() + rng.random::<f32>() * (hi.ln() - lo.ln())).exp();
    ((t * 10.0).round() / 10.0).clamp(lo, hi)
}

fn pick<T: Copy>(rng: &mut ChaCha8Rng, choices: &[T]) -> T {
    *choices
        .choose(rng)
        .expect("every choice list of the space is non-empty")
}

/// Salts that keep the two stages' streams apart for the same `--seed`.
const TEACHER_SALT: u64 = 0x7EAC_4E55;
const FEDERATION_SALT: u64 = 0xFED5_1A7E;

/// `n` teacher candidates: the defaults, then seeded draws around them (learning rate within a factor 3,
/// weight decay 1e-5..1e-2 log-uniform, epochs half, same or double; `quick`: never more epochs).
pub fn teacher_candidates(defaults: &TrainConfig, n: usize, seed: u64, quick: bool) -> Vec<TeacherKnobs> {
    let base = TeacherKnobs::of(defaults);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ TEACHER_SALT);
    let epochs: Vec<usize> = if quick {
        vec![(base.epochs / 2).max(1), base.epochs]
    } else {
        vec![(base.epochs / 2).max(1), base.epochs, base.epochs * 2]
    };
    let mut out = vec![base.clone()];
    while out.len() < n {
        out.push(TeacherKnobs {
            lr: log_uniform(&mut rng, base.lr / 3.0, base.lr * 3.0),
            weight_decay: log_uniform(&mut rng, 1e-5, 1e-2),
            epochs: pick(&mut rng, &epochs),
        });
    }
    out.truncate(n);
    out
}

/// `n` federation candidates: the defaults, then seeded draws. Release temperature 1..8 and the schedule's
/// start 1..8 log-uniform, its end 1..start (constant, linear or cosine alike); rounds 5, 10, 15 or 20
/// (`quick`: 2 or 3); width half, same or double the default; confidence weighting none, max_prob or
/// entropy; distillation learning rate within a factor 3 of the default; refresh 0, 1, 2 or 4 epochs
/// (`quick`: up to 2) with a consensus weight 0.3..3 log-uniform.
pub fn federation_candidates(defaults: &FederationKnobs, n: usize, seed: u64, quick: bool) -> Vec<FederationKnobs> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ FEDERATION_SALT);
    let rounds: &[usize] = if quick { &[2, 3] } else { &[5, 10, 15, 20] };
    let refresh: &[usize] = if quick { &[0, 1, 2] } else { &[0, 1, 2, 4] };
    let widths = [(defaults.width / 2).max(2), defaults.width, defaults.width * 2];
    let confidence = [
        ConfidenceWeighting::None,
        ConfidenceWeighting::MaxProb,
        ConfidenceWeighting::Entropy,
    ];
    let mut out = vec![defaults.clone()];
    while out.len() < n {
        let start = temperature(&mut rng, 1.0, 8.0);
        let end = ((1.0 + rng.random::<f32>() * (start - 1.0)) * 10.0).round() / 10.0;
        let schedule = match rng.random_range(0..3) {
            0 => TemperatureSchedule::Constant { t: start },
            1 => TemperatureSchedule::Linear { start, end },
            _ => TemperatureSchedule::Cosine { start, end },
        };
        out.push(FederationKnobs {
            temperature: temperature(&mut rng, 1.0, 8.0),
            rounds: pick(&mut rng, rounds),
            width: pick(&mut rng, &widths),
            schedule,
            confidence: pick(&mut rng, &confidence),
            distill_lr: log_uniform(&mut rng, defaults.distill_lr / 3.0, defaults.distill_lr * 3.0),
            refresh_epochs: pick(&mut rng, refresh),
            refresh_w_kd: log_uniform(&mut rng, 0.3, 3.0) as f32,
        });
    }
    out.truncate(n);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedistill_shared::data::{load, LoadOptions, Partition};

    fn defaults() -> ExperimentConfig {
        let ds = load("digits", &LoadOptions::default()).unwrap();
        ExperimentConfig::defaults(&ds, 3, Partition::Dirichlet { alpha: 0.5 }, 1)
    }

    #[test]
    fn sampling_is_seeded_and_starts_with_the_defaults() {
        let cfg = defaults();
        let fed = FederationKnobs::of(&cfg).unwrap();
        let a = federation_candidates(&fed, 9, 1, false);
        assert_eq!(
            a,
            federation_candidates(&fed, 9, 1, false),
            "same seed, same candidates"
        );
        assert_ne!(
            a,
            federation_candidates(&fed, 9, 2, false),
            "another seed, other candidates"
        );
        assert_eq!(a.len(), 9);
        assert_eq!(a[0], fed);
        // A longer list extends the shorter one: --configs 27 tries the 9 of --configs 9 and more.
        assert_eq!(federation_candidates(&fed, 27, 1, false)[..9], a[..]);
        let t = teacher_candidates(&cfg.train, 5, 1, false);
        assert_eq!(t, teacher_candidates(&cfg.train, 5, 1, false));
        assert_ne!(t, teacher_candidates(&cfg.train, 5, 3, false));
        assert_eq!(t[0], TeacherKnobs::of(&cfg.train));
        assert_eq!(
            teacher_candidates(&cfg.train, 1, 1, false),
            vec![TeacherKnobs::of(&cfg.train)]
        );
    }

    #[test]
    fn every_candidate_is_a_valid_configuration_within_its_ranges() {
        let cfg = defaults();
        let fed = FederationKnobs::of(&cfg).unwrap();
        for quick in [false, true] {
            // Candidate 0 is the defaults (10 rounds even with --quick): the ranges hold for the draws.
            for k in federation_candidates(&fed, 200, 7, quick).into_iter().skip(1) {
                let mut c = cfg.clone();
                k.apply(&mut c);
                c.distill.validate().unwrap();
                c.refresh.validate().unwrap();
                c.student.validate(64, 10).unwrap();
                assert!((1.0..=8.0).contains(&k.temperature), "{k:?}");
                assert!(if quick { k.rounds <= 3 } else { k.rounds >= 5 }, "{k:?}");
                assert!([64, 128, 256].contains(&k.width), "{k:?}");
                assert!(k.distill_lr >= fed.distill_lr / 3.0 * 0.95 && k.distill_lr <= fed.distill_lr * 3.05);
                assert!((0.29..=3.1).contains(&k.refresh_w_kd), "{k:?}");
                if let TemperatureSchedule::Linear { start, end } | TemperatureSchedule::Cosine { start, end } =
                    k.schedule
                {
                    assert!(end >= 1.0 && end <= start, "{k:?}");
                }
                assert_eq!(FederationKnobs::of(&c).unwrap(), k, "apply then read back");
            }
            for k in teacher_candidates(&cfg.train, 200, 7, quick).into_iter().skip(1) {
                let mut t = cfg.train.clone();
                k.apply(&mut t);
                t.validate().unwrap();
                assert!(k.epochs <= if quick { cfg.train.epochs } else { cfg.train.epochs * 2 });
                assert!((1e-5 * 0.95..=1e-2 * 1.05).contains(&k.weight_decay), "{k:?}");
                assert_eq!(TeacherKnobs::of(&t), k);
            }
        }
        // Every kind of schedule, confidence weighting and width is drawn.
        let many = federation_candidates(&fed, 200, 7, false);
        for name in ["const", "lin", "cos"] {
            assert!(
                many.iter().any(|k| schedule_name(&k.schedule).starts_with(name)),
                "{name}"
            );
        }
        for c in ["none", "max_prob", "entropy"] {
            assert!(many.iter().any(|k| confidence_name(k.confidence) == c), "{c}");
        }
    }

    #[test]
    fn two_digit_rounding_and_names() {
        assert_eq!(two_digits(0.0023171), 0.0023);
        assert_eq!(two_digits(3.16), 3.2);
        assert_eq!(two_digits(0.0), 0.0);
        assert_eq!(
            schedule_name(&TemperatureSchedule::Linear { start: 5.0, end: 1.0 }),
            "lin 5.0>1.0"
        );
        assert_eq!(schedule_name(&TemperatureSchedule::Constant { t: 2.0 }), "const 2.0");
        assert!(FederationKnobs::of(&{
            let mut c = defaults();
            c.student = ModelConfig::Mlp { hidden: vec![64, 32] };
            c
        })
        .is_err());
    }
}
