// Over 800 lines: attacks, scenarios and the robust tables are one experiment that reads together (issue #17).
//! Attack harness: poisoned participants and DP noise against every aggregation rule, in-process.
//!
//! Teachers are trained on disjoint shards of a dataset (MNIST-10k in the bench), each round every
//! participant labels a chunk of the public set (honest, privatized with [`crate::privacy`], or poisoned by
//! an [`Attack`]), the chunk's consensus is computed with [`crate::protocol::aggregate`] over the
//! contributors not quarantined by [`crate::protocol::robust`], and one shared student is distilled on it
//! with the ML crate and scored on a held-out test split. No network: this is the federation's maths
//! without its transport, so a table of scenarios runs in seconds. Used by `fedistill bench robust` and
//! tests/privacy_robustness.rs. `Harness::build_dp_sgd` trains the teachers with DP-SGD instead (the
//! per-private-sample guarantee, docs/privacy.md), for the table of accuracy vs that epsilon.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};

use crate::crypto::{ParticipantId, RoundId};
use crate::data::{DataError, Dataset};
use crate::ml::{evaluate, DistillConfig, Distiller, MlError, Model, ModelConfig, Progress, SoftTargets, TrainConfig};
use crate::privacy::accountant::dp_sgd_noise_for_epsilon;
use crate::privacy::{noise_for_epsilon, DpSgdCost, PrivacyConfig, PrivacyError, PrivacyMode, SoftLabelMechanism};
use crate::protocol::aggregate::{aggregate, distance_to_consensus, AggregateError, AggregationRule, ContributionView};
use crate::protocol::robust::{AnomalyTracker, QuarantinePolicy, RobustError};

/// What a poisoned participant does to the soft labels it would honestly send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Attack {
    /// Permutes the classes: the mass of class c is sent as class (c + 1) mod k.
    LabelFlip,
    /// Sends uniformly random distributions (flat Dirichlet), unrelated to the sample.
    RandomLabels,
    /// Scales its teacher's logits by 10 (over-confident, sharpened labels of the right class).
    Sharpen,
    /// Two attackers send the same poison: class-permuted labels, sharpened to near one-hot.
    Collude,
}

impl Attack {
    /// Every attack, in table order.
    pub const ALL: [Attack; 4] = [
        Attack::LabelFlip,
        Attack::RandomLabels,
        Attack::Sharpen,
        Attack::Collude,
    ];

    /// Stable name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Attack::LabelFlip => "label_flip",
            Attack::RandomLabels => "random_labels",
            Attack::Sharpen => "sharpen",
            Attack::Collude => "collude",
        }
    }

    /// Participants that attack (the last ones by index): 2 for collusion, otherwise 1.
    pub fn attackers(self) -> usize {
        match self {
            Attack::Collude => 2,
            _ => 1,
        }
    }

    /// Poisons `honest` (`rows x classes` probabilities). `rng` only feeds `RandomLabels`.
    pub fn apply(self, honest: &[f32], classes: usize, rng: &mut ChaCha20Rng) -> Vec<f32> {
        let mut out = vec![0.0f32; honest.len()];
        for (o, h) in out.chunks_exact_mut(classes).zip(honest.chunks_exact(classes)) {
            match self {
                Attack::LabelFlip => {
                    for c in 0..classes {
                        o[(c + 1) % classes] = h[c];
                    }
                }
                Attack::RandomLabels => {
                    let g: Vec<f64> = (0..classes).map(|_| -(1.0 - rng.random::<f64>()).ln()).collect();
                    let s: f64 = g.iter().sum();
                    o.iter_mut().zip(&g).for_each(|(v, x)| *v = (x / s) as f32);
                }
                Attack::Sharpen | Attack::Collude => {
                    let mut src = h.to_vec();
                    if self == Attack::Collude {
                        for c in 0..classes {
                            src[(c + 1) % classes] = h[c];
                        }
                    }
                    // softmax(10 * ln p): p^10 renormalised.
                    let w: Vec<f64> = src.iter().map(|&p| f64::from(p.max(1e-12)).powi(10)).collect();
                    let s: f64 = w.iter().sum();
                    o.iter_mut().zip(&w).for_each(|(v, x)| *v = (x / s) as f32);
                }
            }
        }
        out
    }
}

/// Why the harness could not run.
#[derive(Debug, thiserror::Error)]
pub enum AttackError {
    /// The harness configuration is unusable.
    #[error("invalid harness configuration: {0}")]
    BadConfig(String),
    /// Loading or slicing the data failed.
    #[error(transparent)]
    Data(#[from] DataError),
    /// Training, distillation or evaluation failed.
    #[error(transparent)]
    Ml(#[from] MlError),
    /// Aggregation refused the contributions.
    #[error(transparent)]
    Aggregate(#[from] AggregateError),
    /// The privacy mechanism refused its input.
    #[error(transparent)]
    Privacy(#[from] PrivacyError),
    /// The quarantine policy is invalid.
    #[error(transparent)]
    Robust(#[from] RobustError),
}

/// Sizes and models of a harness run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HarnessConfig {
    /// Participants (teachers).
    pub participants: usize,
    /// Private samples per participant.
    pub private_per_participant: usize,
    /// Public transfer-set size (split evenly over the rounds).
    pub public_len: usize,
    /// Test-split size.
    pub test_len: usize,
    /// Rounds (each labels one chunk of the public set).
    pub rounds: usize,
    /// Teacher architecture.
    pub teacher: ModelConfig,
    /// Student architecture.
    pub student: ModelConfig,
    /// Teacher training.
    pub train: TrainConfig,
    /// Student distillation.
    pub distill: DistillConfig,
    /// Teacher temperature of the released soft labels.
    pub temperature: f32,
    /// Delta of every epsilon in the report.
    pub delta: f64,
    /// Quarantine policy of the coordinator.
    pub policy: QuarantinePolicy,
    /// Seed of the split, the models and the noise.
    pub seed: u64,
    /// DP-SGD settings of the teachers of the per-private-sample table (`Harness::build_dp_sgd`).
    #[serde(default = "DpSgdTeachers::quick")]
    pub dp_sgd: DpSgdTeachers,
}

/// How `Harness::build_dp_sgd` trains its teachers: clip, expected batch, epochs and learning rate (the
/// noise multiplier is calibrated per target epsilon). Inputs are standardized on the public set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DpSgdTeachers {
    /// Per-sample gradient L2 clip C.
    pub clip: f64,
    /// Expected (Poisson) batch size.
    pub batch: usize,
    /// Epochs (`ceil(epochs * n / batch)` steps).
    pub epochs: usize,
    /// Peak AdamW learning rate.
    pub lr: f64,
}

impl DpSgdTeachers {
    /// The settings of `HarnessConfig::quick` and `full`: C = 1, batch 100, 20 epochs, lr 4e-3.
    pub fn quick() -> Self {
        DpSgdTeachers {
            clip: 1.0,
            batch: 100,
            epochs: 20,
            lr: 4e-3,
        }
    }
}

impl HarnessConfig {
    /// Small sizes for tests and `--quick`: 5 x 400 private, 1200 public in 4 rounds, 1000 test.
    pub fn quick(seed: u64) -> Self {
        HarnessConfig {
            participants: 5,
            private_per_participant: 400,
            public_len: 1200,
            test_len: 1000,
            rounds: 4,
            teacher: ModelConfig::Mlp { hidden: vec![128] },
            student: ModelConfig::Mlp { hidden: vec![64] },
            train: TrainConfig {
                epochs: 12,
                batch_size: 64,
                lr: 2e-3,
                patience: 4,
                seed,
                ..TrainConfig::default()
            },
            distill: DistillConfig {
                epochs_per_round: 10,
                batch_size: 64,
                lr: 2e-3,
                input_norm: crate::ml::InputNorm::Global,
                seed,
                ..DistillConfig::default()
            },
            temperature: 2.0,
            delta: 1e-5,
            policy: QuarantinePolicy {
                consecutive: 2,
                ..QuarantinePolicy::default()
            },
            seed,
            dp_sgd: DpSgdTeachers::quick(),
        }
    }

    /// The bench's full sizes: 5 x 1000 private, 3000 public in 6 rounds, 2000 test, wider models.
    pub fn full(seed: u64) -> Self {
        let mut c = Self::quick(seed);
        c.private_per_participant = 1000;
        c.public_len = 3000;
        c.test_len = 2000;
        c.rounds = 6;
        c.teacher = ModelConfig::Mlp { hidden: vec![256, 128] };
        c.student = ModelConfig::Mlp { hidden: vec![128] };
        c.train.epochs = 20;
        c.distill.epochs_per_round = 15;
        c.policy.consecutive = 3;
        c
    }

    fn validate(&self, ds: &Dataset) -> Result<(), AttackError> {
        let need = self.participants * self.private_per_participant + self.public_len + self.test_len;
        let bad = |m: String| Err(AttackError::BadConfig(m));
        if self.participants < 3 {
            return bad(format!("{} participants: need at least 3", self.participants));
        }
        if need > ds.n {
            return bad(format!("needs {need} samples, the dataset has {}", ds.n));
        }
        if self.rounds == 0 || self.public_len < self.rounds {
            return bad(format!(
                "{} rounds over {} public samples",
                self.rounds, self.public_len
            ));
        }
        if self.private_per_participant == 0 || self.test_len == 0 {
            return bad("empty private shards or test split".into());
        }
        Ok(())
    }
}

/// A scenario: which rule, which attack (if any), which privacy level (if any).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scenario {
    /// Aggregation rule.
    pub rule: AggregationRule,
    /// The attack of the last `attack.attackers()` participants, if any.
    pub attack: Option<Attack>,
    /// Total epsilon over all rounds of every honest participant (None: no DP).
    pub epsilon: Option<f64>,
    /// Whether the coordinator applies the quarantine policy.
    pub quarantine: bool,
}

/// The result of one scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// Rule name.
    pub rule: String,
    /// Attack name, or `none`.
    pub attack: String,
    /// Number of attackers.
    pub attackers: usize,
    /// Target total epsilon (None: no DP).
    pub epsilon: Option<f64>,
    /// Noise multiplier used (None: no DP).
    pub noise_multiplier: Option<f64>,
    /// Epsilon actually spent according to the accountant (None: no DP).
    pub epsilon_spent: Option<f64>,
    /// Student accuracy on the test split.
    pub accuracy: f64,
    /// Mean over rounds of each participant's distance to consensus, by participant index.
    pub mean_distance: Vec<f64>,
    /// Participants quarantined (index, round).
    pub quarantined: Vec<(usize, u64)>,
}

/// Teachers trained once, reused by every scenario.
pub struct Harness {
    cfg: HarnessConfig,
    teachers: Vec<Model>,
    teacher_accuracy: Vec<f64>,
    public: Dataset,
    test: Dataset,
    /// Honest soft labels of each teacher on the whole public set.
    honest: Vec<Vec<f32>>,
    /// What DP-SGD training cost each teacher (the same for all), when `build_dp_sgd` made them.
    teacher_dp: Option<DpSgdCost>,
}

/// The harness's split: the test set, the public set and each participant's private rows.
#[derive(Debug, Clone)]
pub struct HarnessData {
    /// Held-out test rows.
    pub test: Dataset,
    /// The public transfer set.
    pub public: Dataset,
    /// One private shard per participant.
    pub shards: Vec<Dataset>,
}

impl HarnessData {
    /// Splits `ds` for `cfg`: a seeded shuffle, then the test rows, the public rows, and
    /// `private_per_participant` rows for each participant.
    pub fn split(ds: &Dataset, cfg: &HarnessConfig) -> Result<HarnessData, AttackError> {
        cfg.validate(ds)?;
        let mut idx: Vec<usize> = (0..ds.n).collect();
        let mut rng = ChaCha20Rng::seed_from_u64(cfg.seed);
        for i in (1..idx.len()).rev() {
            let j = rng.random_range(0..=i);
            idx.swap(i, j);
        }
        let mut start = cfg.test_len + cfg.public_len;
        let shards = (0..cfg.participants)
            .map(|_| {
                let shard = ds.subset(&idx[start..start + cfg.private_per_participant]);
                start += cfg.private_per_participant;
                shard
            })
            .collect();
        Ok(HarnessData {
            test: ds.subset(&idx[..cfg.test_len]),
            public: ds.subset(&idx[cfg.test_len..cfg.test_len + cfg.public_len]),
            shards,
        })
    }
}

impl Harness {
    /// Splits `ds` (seeded shuffle: test, public, then the private shards) and trains the teachers.
    pub fn build(ds: &Dataset, cfg: HarnessConfig) -> Result<Harness, AttackError> {
        let data = HarnessData::split(ds, &cfg)?;
        Self::build_inner(&data, cfg, None)
    }

    /// Trains the teachers on an already split `data` (the benchmark passes the split through the files a
    /// real node reads).
    pub fn build_from(data: &HarnessData, cfg: HarnessConfig) -> Result<Harness, AttackError> {
        Self::build_inner(data, cfg, None)
    }

    /// The same split, with every teacher trained by DP-SGD (`cfg.dp_sgd`) at the noise multiplier that
    /// makes its training cost `epsilon` at `cfg.delta`: each private sample is in exactly one shard, so
    /// this is the per-private-sample epsilon of everything the participant releases.
    pub fn build_dp_sgd(ds: &Dataset, cfg: HarnessConfig, epsilon: f64) -> Result<Harness, AttackError> {
        let data = HarnessData::split(ds, &cfg)?;
        Self::build_dp_sgd_from(&data, cfg, epsilon)
    }

    /// [`Harness::build_dp_sgd`] on an already split `data`.
    pub fn build_dp_sgd_from(data: &HarnessData, cfg: HarnessConfig, epsilon: f64) -> Result<Harness, AttackError> {
        if !(epsilon > 0.0 && epsilon.is_finite()) {
            return Err(AttackError::BadConfig(format!("epsilon {epsilon} must be > 0")));
        }
        let d = cfg.dp_sgd;
        if d.batch == 0 || d.batch > cfg.private_per_participant || d.epochs == 0 {
            return Err(AttackError::BadConfig(format!(
                "DP-SGD batch {} / epochs {} do not fit {} private samples",
                d.batch, d.epochs, cfg.private_per_participant
            )));
        }
        let q = d.batch as f64 / cfg.private_per_participant as f64;
        let steps = ((d.epochs * cfg.private_per_participant) as f64 / d.batch as f64).ceil() as u64;
        let z = dp_sgd_noise_for_epsilon(epsilon, q, steps, cfg.delta).ok_or_else(|| {
            AttackError::BadConfig(format!("epsilon {epsilon} is out of reach for {steps} DP-SGD steps"))
        })?;
        let cost = DpSgdCost::new(q, z, steps, cfg.delta);
        Self::build_inner(data, cfg, Some(cost))
    }

    /// The teachers' DP-SGD cost (`None` for `build`).
    pub fn teacher_dp(&self) -> Option<DpSgdCost> {
        self.teacher_dp
    }

    fn build_inner(data: &HarnessData, cfg: HarnessConfig, dp: Option<DpSgdCost>) -> Result<Harness, AttackError> {
        cfg.policy.validate()?;
        if data.shards.len() != cfg.participants {
            return Err(AttackError::BadConfig(format!(
                "{} shards for {} participants",
                data.shards.len(),
                cfg.participants
            )));
        }
        let (test, public) = (data.test.clone(), data.public.clone());
        let mut teachers = Vec::new();
        let mut teacher_accuracy = Vec::new();
        let mut honest = Vec::new();
        for (p, shard) in data.shards.iter().enumerate() {
            let shard = shard.clone();
            let tc = TrainConfig {
                seed: cfg.seed.wrapping_add(p as u64 + 1),
                ..cfg.train.clone()
            };
            let t = match &dp {
                None => crate::ml::train_teacher(&cfg.teacher, &shard, &tc, &Progress::hidden())?,
                Some(cost) => {
                    let tc = TrainConfig {
                        epochs: cfg.dp_sgd.epochs,
                        lr: cfg.dp_sgd.lr,
                        ..tc
                    };
                    let dpc = crate::ml::DpSgdConfig {
                        noise_multiplier: cost.noise_multiplier,
                        clip: cfg.dp_sgd.clip,
                        batch: cfg.dp_sgd.batch,
                    };
                    // Seeded for a reproducible bench; a participant seeds from the OS.
                    let mut noise = ChaCha20Rng::seed_from_u64(cfg.seed ^ 0xd9_5dd0 ^ ((p as u64) << 8));
                    crate::ml::train_teacher_dp(
                        &cfg.teacher,
                        &shard,
                        &tc,
                        &dpc,
                        Some(&public),
                        &mut noise,
                        &Progress::hidden(),
                    )?
                    .0
                }
            };
            teacher_accuracy.push(evaluate(&t, &test, None)?.accuracy);
            honest.push(t.probabilities(&public.features, public.n, cfg.temperature)?);
            teachers.push(t);
        }
        Ok(Harness {
            cfg,
            teachers,
            teacher_accuracy,
            public,
            test,
            honest,
            teacher_dp: dp,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &HarnessConfig {
        &self.cfg
    }

    /// Test accuracy of each teacher.
    pub fn teacher_accuracy(&self) -> &[f64] {
        &self.teacher_accuracy
    }

    /// Number of teachers.
    pub fn participants(&self) -> usize {
        self.teachers.len()
    }

    /// Runs one scenario: rounds of label, (privatize | poison), aggregate, score, quarantine, distill.
    pub fn run(&self, s: &Scenario) -> Result<Outcome, AttackError> {
        let cfg = &self.cfg;
        let classes = self.public.num_classes;
        let m = self.teachers.len();
        let attackers = s.attack.map(|a| a.attackers()).unwrap_or(0);
        if attackers >= m {
            return Err(AttackError::BadConfig(format!(
                "{attackers} attackers of {m} participants"
            )));
        }
        let mechanism = match s.epsilon {
            Some(e) => {
                if !(e > 0.0 && e.is_finite()) {
                    return Err(AttackError::BadConfig(format!("epsilon {e} must be > 0")));
                }
                let z = noise_for_epsilon(e, cfg.delta, cfg.rounds as u64);
                Some(SoftLabelMechanism::new(PrivacyConfig {
                    mode: PrivacyMode::Soft,
                    noise_multiplier: z,
                    delta: cfg.delta,
                    clip: 1.0,
                    budget_epsilon: e,
                }))
            }
            None => None,
        };
        let mut accountant = mechanism.as_ref().map(|mech| mech.accountant(classes));
        let mut rng = ChaCha20Rng::seed_from_u64(cfg.seed ^ 0x5eed_a77a);
        let ids: Vec<ParticipantId> = (0..m).map(|i| ParticipantId::new(format!("p{i}"))).collect();
        let mut tracker = AnomalyTracker::new(cfg.policy)?;
        let mut excluded = vec![false; m];
        let mut quarantined = Vec::new();
        let mut distance_sum = vec![0.0f64; m];
        let mut distance_rounds = vec![0usize; m];
        let student = Model::new(&cfg.student, self.public.dim, classes, cfg.seed.wrapping_add(1000))?;
        let mut distiller = Distiller::new(student, cfg.distill.clone());
        let chunk = cfg.public_len / cfg.rounds;
        for r in 0..cfg.rounds {
            let lo = r * chunk;
            let hi = if r + 1 == cfg.rounds {
                cfg.public_len
            } else {
                lo + chunk
            };
            let rows = hi - lo;
            let mut labels: Vec<Vec<f32>> = Vec::with_capacity(m);
            let mut poison: Option<Vec<f32>> = None;
            for p in 0..m {
                let honest = &self.honest[p][lo * classes..hi * classes];
                let attacking = p >= m - attackers;
                let l = match (attacking, s.attack, &mechanism) {
                    (true, Some(a), _) => {
                        // Colluders share one poison (computed from the first colluder's teacher).
                        if a == Attack::Collude {
                            poison.get_or_insert_with(|| a.apply(honest, classes, &mut rng)).clone()
                        } else {
                            a.apply(honest, classes, &mut rng)
                        }
                    }
                    (_, _, Some(mech)) => mech.privatize(honest, rows, classes, &mut rng)?,
                    _ => honest.to_vec(),
                };
                labels.push(l);
            }
            if let Some(acc) = accountant.as_mut() {
                acc.record_round();
            }
            let included: Vec<usize> = (0..m).filter(|&p| !(s.quarantine && excluded[p])).collect();
            let views: Vec<ContributionView<'_>> = included
                .iter()
                .map(|&p| ContributionView {
                    probabilities: &labels[p],
                    samples: cfg.private_per_participant as u64,
                })
                .collect();
            let consensus = aggregate(s.rule, &views, rows, classes)?;
            let mut scores = Vec::new();
            for &p in &included {
                let d = distance_to_consensus(&labels[p], &consensus, classes);
                distance_sum[p] += d;
                distance_rounds[p] += 1;
                scores.push((ids[p].clone(), d));
            }
            if s.quarantine {
                for dec in tracker.handle_round(RoundId(r as u64 + 1), &scores) {
                    if let Some(p) = ids.iter().position(|i| *i == dec.participant) {
                        excluded[p] = true;
                        quarantined.push((p, r as u64 + 1));
                    }
                }
            }
            let x = &self.public.features[lo * self.public.dim..hi * self.public.dim];
            distiller.distill_round(x, rows, &SoftTargets::Probabilities(consensus), None, r, cfg.rounds)?;
        }
        let accuracy = evaluate(distiller.student(), &self.test, None)?.accuracy;
        Ok(Outcome {
            rule: s.rule.name(),
            attack: s.attack.map(|a| a.name().to_string()).unwrap_or_else(|| "none".into()),
            attackers,
            epsilon: s.epsilon,
            noise_multiplier: mechanism.as_ref().map(|m| m.config().noise_multiplier),
            epsilon_spent: accountant.as_ref().map(|a| a.epsilon()),
            accuracy,
            mean_distance: distance_sum
                .iter()
                .zip(&distance_rounds)
                .map(|(s, n)| if *n == 0 { 0.0 } else { s / *n as f64 })
                .collect(),
            quarantined,
        })
    }
}

/// The full table of `fedistill bench robust`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RobustTable {
    /// Harness sizes and models.
    pub config: HarnessConfig,
    /// Teacher test accuracies.
    pub teacher_accuracy: Vec<f64>,
    /// Clean runs (no attack, no DP), one per rule.
    pub clean: Vec<Outcome>,
    /// DP runs (no attack), per epsilon and rule.
    pub privacy: Vec<Outcome>,
    /// Attacked runs without quarantine, per attack and rule.
    pub attacks: Vec<Outcome>,
    /// Attacked runs with the quarantine policy on, per attack and rule.
    pub attacks_quarantine: Vec<Outcome>,
    /// DP-SGD teachers (per-private-sample epsilon), no label noise, no attack: one row per epsilon.
    #[serde(default)]
    pub dp_sgd: Vec<DpSgdRow>,
}

/// One epsilon of the DP-SGD table: the teachers' training cost and accuracy, the students per rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DpSgdRow {
    /// Target per-private-sample epsilon.
    pub epsilon: f64,
    /// The teachers' DP-SGD cost (noise multiplier, sampling rate, steps, delta, epsilon).
    pub cost: DpSgdCost,
    /// Teacher test accuracies.
    pub teacher_accuracy: Vec<f64>,
    /// Student outcome per rule (labels released without further noise).
    pub outcomes: Vec<Outcome>,
}

impl RobustTable {
    /// Runs every scenario: clean x rules, epsilons x rules, attacks x rules (with and without quarantine).
    pub fn run(h: &Harness, rules: &[AggregationRule], epsilons: &[f64]) -> Result<RobustTable, AttackError> {
        Self::run_with_progress(h, rules, epsilons, &Progress::hidden())
    }

    /// [`RobustTable::run`], showing one step per scenario on `progress`.
    pub fn run_with_progress(
        h: &Harness,
        rules: &[AggregationRule],
        epsilons: &[f64],
        progress: &Progress,
    ) -> Result<RobustTable, AttackError> {
        let sc = |rule, attack, epsilon, quarantine| Scenario {
            rule,
            attack,
            epsilon,
            quarantine,
        };
        let total = (rules.len() * (1 + epsilons.len() + 2 * Attack::ALL.len())) as u64;
        let mut done = 0u64;
        let mut step = |s: &Scenario| -> Result<Outcome, AttackError> {
            let o = h.run(s)?;
            done += 1;
            let what = match (s.attack, s.epsilon) {
                (Some(a), _) => format!("{}{}", a.name(), if s.quarantine { " with quarantine" } else { "" }),
                (None, Some(e)) => format!("epsilon {e}"),
                (None, None) => "clean".to_string(),
            };
            progress.advance(
                "robust",
                done,
                total,
                &format!("{} {what}: {:.1}%", s.rule.name(), 100.0 * o.accuracy),
            );
            Ok(o)
        };
        progress.start("robust", total);
        let mut clean = Vec::new();
        let mut privacy = Vec::new();
        let mut attacks = Vec::new();
        let mut attacks_quarantine = Vec::new();
        for &rule in rules {
            clean.push(step(&sc(rule, None, None, false))?);
            for &e in epsilons {
                privacy.push(step(&sc(rule, None, Some(e), false))?);
            }
            for a in Attack::ALL {
                attacks.push(step(&sc(rule, Some(a), None, false))?);
                attacks_quarantine.push(step(&sc(rule, Some(a), None, true))?);
            }
        }
        progress.finish("robust", &format!("{total} scenarios"));
        Ok(RobustTable {
            config: h.config().clone(),
            teacher_accuracy: h.teacher_accuracy().to_vec(),
            clean,
            privacy,
            attacks,
            attacks_quarantine,
            dp_sgd: Vec::new(),
        })
    }

    /// Adds the DP-SGD table: for each per-private-sample `epsilon`, teachers trained with DP-SGD on the
    /// same split (`Harness::build_dp_sgd`), their labels aggregated with each rule and distilled.
    pub fn run_dp_sgd(&mut self, ds: &Dataset, rules: &[AggregationRule], epsilons: &[f64]) -> Result<(), AttackError> {
        self.run_dp_sgd_with_progress(ds, rules, epsilons, &Progress::hidden())
    }

    /// [`RobustTable::run_dp_sgd`], showing one step per epsilon (its teachers trained and distilled under
    /// every rule) on `progress`.
    pub fn run_dp_sgd_with_progress(
        &mut self,
        ds: &Dataset,
        rules: &[AggregationRule],
        epsilons: &[f64],
        progress: &Progress,
    ) -> Result<(), AttackError> {
        let data = HarnessData::split(ds, &self.config)?;
        self.run_dp_sgd_from_with_progress(&data, rules, epsilons, progress)
    }

    /// [`RobustTable::run_dp_sgd_with_progress`] on an already split `data`.
    pub fn run_dp_sgd_from_with_progress(
        &mut self,
        data: &HarnessData,
        rules: &[AggregationRule],
        epsilons: &[f64],
        progress: &Progress,
    ) -> Result<(), AttackError> {
        let total = epsilons.len() as u64;
        progress.start("dp-sgd", total);
        for (i, &e) in epsilons.iter().enumerate() {
            let h = Harness::build_dp_sgd_from(data, self.config.clone(), e)?;
            let cost = h
                .teacher_dp()
                .ok_or_else(|| AttackError::BadConfig("DP-SGD harness without a cost".into()))?;
            let mut outcomes = Vec::new();
            for &rule in rules {
                let mut o = h.run(&Scenario {
                    rule,
                    attack: None,
                    epsilon: None,
                    quarantine: false,
                })?;
                o.epsilon = Some(e);
                o.noise_multiplier = Some(cost.noise_multiplier);
                o.epsilon_spent = Some(cost.epsilon);
                outcomes.push(o);
            }
            let noise_multiplier = cost.noise_multiplier;
            self.dp_sgd.push(DpSgdRow {
                epsilon: e,
                cost,
                teacher_accuracy: h.teacher_accuracy().to_vec(),
                outcomes,
            });
            progress.advance(
                "dp-sgd",
                i as u64 + 1,
                total,
                &format!("teachers at epsilon {e} (noise multiplier {noise_multiplier:.2})"),
            );
        }
        progress.finish("dp-sgd", &format!("{total} epsilons"));
        Ok(())
    }

    /// Clean accuracy of a rule.
    pub fn clean_accuracy(&self, rule: &str) -> Option<f64> {
        self.clean.iter().find(|o| o.rule == rule).map(|o| o.accuracy)
    }

    /// Markdown tables (accuracy in percent).
    pub fn to_markdown(&self) -> String {
        let pct = |v: f64| format!("{:.1}", 100.0 * v);
        let rules: Vec<String> = self.clean.iter().map(|o| o.rule.clone()).collect();
        let mut s = String::new();
        s.push_str(&format!(
            "Teachers: {} x {} private samples (test accuracy {}); public set {} in {} rounds; test split {}; delta {}.\n\n",
            self.config.participants,
            self.config.private_per_participant,
            self.teacher_accuracy.iter().map(|a| pct(*a)).collect::<Vec<_>>().join(", "),
            self.config.public_len,
            self.config.rounds,
            self.config.test_len,
            self.config.delta
        ));
        s.push_str(
            "Student accuracy (%) vs total epsilon per participant, no attack:\n\n| epsilon | noise multiplier |",
        );
        for r in &rules {
            s.push_str(&format!(" {r} |"));
        }
        s.push_str("\n|---|---|");
        s.push_str(&"---|".repeat(rules.len()));
        s.push('\n');
        let mut eps: Vec<f64> = self.privacy.iter().filter_map(|o| o.epsilon).collect();
        eps.sort_by(f64::total_cmp);
        eps.dedup();
        for e in eps {
            let row: Vec<&Outcome> = self.privacy.iter().filter(|o| o.epsilon == Some(e)).collect();
            let z = row.first().and_then(|o| o.noise_multiplier).unwrap_or(0.0);
            s.push_str(&format!("| {e} | {z:.3} |"));
            for r in &rules {
                let a = row
                    .iter()
                    .find(|o| &o.rule == r)
                    .map(|o| pct(o.accuracy))
                    .unwrap_or_default();
                s.push_str(&format!(" {a} |"));
            }
            s.push('\n');
        }
        s.push_str("| no DP | - |");
        for o in &self.clean {
            s.push_str(&format!(" {} |", pct(o.accuracy)));
        }
        s.push_str("\n\n");
        if !self.dp_sgd.is_empty() {
            let d = &self.config.dp_sgd;
            s.push_str(&format!(
                "Student accuracy (%) vs per-private-sample epsilon (DP-SGD teachers; clip {}, expected batch {}, \
                 {} epochs, Poisson sampling; labels released without further noise; no attack):\n\n\
                 | epsilon | teacher noise multiplier | steps | mean teacher accuracy |",
                d.clip, d.batch, d.epochs
            ));
            for r in &rules {
                s.push_str(&format!(" {r} |"));
            }
            s.push_str("\n|---|---|---|---|");
            s.push_str(&"---|".repeat(rules.len()));
            s.push('\n');
            let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
            for row in &self.dp_sgd {
                s.push_str(&format!(
                    "| {} | {:.3} | {} | {} |",
                    row.epsilon,
                    row.cost.noise_multiplier,
                    row.cost.steps,
                    pct(mean(&row.teacher_accuracy))
                ));
                for r in &rules {
                    let a = row
                        .outcomes
                        .iter()
                        .find(|o| &o.rule == r)
                        .map(|o| pct(o.accuracy))
                        .unwrap_or_default();
                    s.push_str(&format!(" {a} |"));
                }
                s.push('\n');
            }
            s.push_str(&format!("| no DP | - | - | {} |", pct(mean(&self.teacher_accuracy))));
            for o in &self.clean {
                s.push_str(&format!(" {} |", pct(o.accuracy)));
            }
            s.push_str("\n\n");
        }
        for (title, set) in [
            ("without quarantine", &self.attacks),
            ("with the quarantine policy", &self.attacks_quarantine),
        ] {
            s.push_str(&format!(
                "Student accuracy (%) under attack, {title} (change vs clean in points; q = attackers quarantined, fp = honest participants quarantined):\n\n| attack | attackers |"
            ));
            for r in &rules {
                s.push_str(&format!(" {r} |"));
            }
            s.push_str("\n|---|---|");
            s.push_str(&"---|".repeat(rules.len()));
            s.push('\n');
            for a in Attack::ALL {
                s.push_str(&format!(
                    "| {} | {} of {} |",
                    a.name(),
                    a.attackers(),
                    self.config.participants
                ));
                for r in &rules {
                    let cell = set
                        .iter()
                        .find(|o| &o.rule == r && o.attack == a.name())
                        .map(|o| {
                            let drop = self.clean_accuracy(r).map(|c| 100.0 * (c - o.accuracy)).unwrap_or(0.0);
                            let first_attacker = self.config.participants.saturating_sub(o.attackers);
                            let caught = o.quarantined.iter().filter(|(p, _)| *p >= first_attacker).count();
                            let honest = o.quarantined.len() - caught;
                            let mut q = String::new();
                            if caught > 0 {
                                q.push_str(&format!(", q={caught}"));
                            }
                            if honest > 0 {
                                q.push_str(&format!(", fp={honest}"));
                            }
                            format!("{} ({:+.1}{q})", pct(o.accuracy), -drop)
                        })
                        .unwrap_or_default();
                    s.push_str(&format!(" {cell} |"));
                }
                s.push('\n');
            }
            s.push('\n');
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attacks_transform_rows_as_documented() {
        let honest = [0.7f32, 0.2, 0.1];
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        assert_eq!(Attack::LabelFlip.apply(&honest, 3, &mut rng), vec![0.1, 0.7, 0.2]);
        let sharp = Attack::Sharpen.apply(&honest, 3, &mut rng);
        assert!(sharp[0] > 0.99 && (sharp.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        let coll = Attack::Collude.apply(&honest, 3, &mut rng);
        assert!(coll[1] > 0.99, "{coll:?}");
        let r1 = Attack::RandomLabels.apply(&honest, 3, &mut rng);
        let r2 = Attack::RandomLabels.apply(&honest, 3, &mut rng);
        assert!((r1.iter().sum::<f32>() - 1.0).abs() < 1e-5 && r1 != r2);
        assert_eq!(Attack::Collude.attackers(), 2);
        assert_eq!(Attack::LabelFlip.attackers(), 1);
    }

    #[test]
    fn refuses_impossible_configs() {
        let ds = Dataset::new(
            "tiny",
            vec![0.0; 20 * 4],
            (0..20).map(|i| (i % 2) as u32).collect(),
            4,
            crate::data::DataKind::Tabular,
            vec!["a".into(), "b".into()],
        )
        .expect("valid tiny dataset");
        let cfg = HarnessConfig::quick(1);
        let err = Harness::build(&ds, cfg.clone())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("needs"), "{err}");
        let two = HarnessConfig { participants: 2, ..cfg };
        let err = Harness::build(&ds, two)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("at least 3"), "{err}");
    }
}
