// Over 800 lines: attacks, the poisoned learner, scenarios and the robust tables are one experiment that reads together (issue #17).
//! Attack harness: poisoned participants and DP noise against every aggregation rule, in-process.
//!
//! Teachers are trained on disjoint shards of a dataset (MNIST-10k in the bench); then, in every scenario,
//! each participant is the participants' real learner (`fedistill_participant::learner::ModelLearner`, built
//! from its teacher as `crate::experiment` builds them) driven through the learner seam. Each round every
//! participant labels the round's public rows (`protocol::round_sample_ids`) through `Learner::label` at the
//! harness temperature; an honest one's labels are then released through its privacy state as a node's round
//! lifecycle releases them (`privacy::ParticipantPrivacy::handle_round`: the soft-label mechanism, the
//! accountant and the budget; an exhausted budget abstains), while a poisoned one is a [`Poisoned`] learner
//! around an honest one that lies in the labels it returns ([`Attack`]; colluders share one poison). The
//! consensus is computed with the coordinator's `protocol::aggregate` over the contributors not quarantined
//! by `protocol::robust::AnomalyTracker` (scored with `distance_to_consensus`, as the coordinator scores
//! them), and participant 0's learner distills the shared student from it through `Learner::distill` (same
//! seed and consensus everywhere, so one student stands for all, as in `experiment::run_rounds`); its test
//! accuracy after the last round is the outcome. No network: this is the federation's maths without its
//! transport, so a table of scenarios runs in seconds. Used by `fedistill bench robust` (crate::robust) and
//! tests/privacy_robustness.rs. `Harness::build_dp_sgd` trains the teachers with DP-SGD instead (the
//! per-private-sample guarantee, docs/privacy.md), whose cost the honest participants' privacy state
//! composes as a node's does, for the table of accuracy vs that epsilon.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, ensure, Context};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};

use fedistill_participant::learner::{Distilled, Learner, LearnerParts, LearnerSummary, ModelLearner};
use fedistill_shared::crypto::{Digest, ParticipantId, RoundId};
use fedistill_shared::data::Dataset;
use fedistill_shared::ml::codistill::RefreshConfig;
use fedistill_shared::ml::lifecycle::GuardConfig;
use fedistill_shared::ml::{DistillConfig, Distiller, Model, ModelConfig, Progress, TrainConfig};
use fedistill_shared::privacy::accountant::dp_sgd_noise_for_epsilon;
use fedistill_shared::privacy::{
    noise_for_epsilon, DpSgdCost, ParticipantPrivacy, PrivacyConfig, PrivacyMode, PrivacySettings, Release, TeacherDp,
};
use fedistill_shared::protocol::aggregate::{aggregate, distance_to_consensus, AggregationRule, ContributionView};
use fedistill_shared::protocol::robust::{AnomalyTracker, QuarantinePolicy};
use fedistill_shared::protocol::round_sample_ids;

use crate::experiment::accuracy;

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

/// What colluders share out of band: each round's poison, made by the first of them to label the round.
pub type Collusion = Arc<Mutex<BTreeMap<u64, Vec<f32>>>>;

/// A poisoned participant: the real learner with its own teacher, honest in everything but the labels it
/// returns, which are its honest labels poisoned by `attack` ([`Attack::apply`]). Colluders
/// ([`Attack::Collude`]) given the same [`Collusion`] send the poison the first of them made each round.
pub struct Poisoned {
    inner: ModelLearner,
    attack: Attack,
    rng: ChaCha20Rng,
    collusion: Collusion,
}

impl Poisoned {
    /// Wraps the honest learner `inner`; `seed` seeds the attack's randomness (`RandomLabels`).
    pub fn new(inner: ModelLearner, attack: Attack, seed: u64, collusion: Collusion) -> Self {
        Poisoned {
            inner,
            attack,
            rng: ChaCha20Rng::seed_from_u64(seed),
            collusion,
        }
    }
}

impl Learner for Poisoned {
    fn public_digest(&self) -> Digest {
        self.inner.public_digest()
    }

    fn public_len(&self) -> u64 {
        self.inner.public_len()
    }

    fn classes(&self) -> usize {
        self.inner.classes()
    }

    fn private_samples(&self) -> u64 {
        self.inner.private_samples()
    }

    fn label(&mut self, round: RoundId, ids: &[u64], temperature: f32) -> anyhow::Result<Vec<f32>> {
        let honest = self.inner.label(round, ids, temperature)?;
        let classes = self.inner.classes();
        if self.attack != Attack::Collude {
            return Ok(self.attack.apply(&honest, classes, &mut self.rng));
        }
        let mut shared = self
            .collusion
            .lock()
            .map_err(|_| anyhow!("the colluders' channel is poisoned"))?;
        let poison = shared
            .entry(round.0)
            .or_insert_with(|| self.attack.apply(&honest, classes, &mut self.rng));
        Ok(poison.clone())
    }

    fn distill(
        &mut self,
        round: RoundId,
        ids: &[u64],
        consensus: &[f32],
        total_rounds: u64,
        rule: AggregationRule,
        serving: &BTreeMap<String, f64>,
    ) -> anyhow::Result<Distilled> {
        self.inner.distill(round, ids, consensus, total_rounds, rule, serving)
    }

    fn summary(&self) -> LearnerSummary {
        self.inner.summary()
    }
}

/// Sizes and models of a harness run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HarnessConfig {
    /// Participants (teachers).
    pub participants: usize,
    /// Private samples per participant.
    pub private_per_participant: usize,
    /// Public transfer-set size: each round labels `public_len / rounds` of its rows, at the positions
    /// `protocol::round_sample_ids` gives (the coordinator's walk over the public set).
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
                input_norm: fedistill_shared::ml::InputNorm::Global,
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

    fn validate(&self, ds: &Dataset) -> anyhow::Result<()> {
        let need = self.participants * self.private_per_participant + self.public_len + self.test_len;
        let bad = |m: String| Err(anyhow!("invalid harness configuration: {m}"));
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
    pub fn split(ds: &Dataset, cfg: &HarnessConfig) -> anyhow::Result<HarnessData> {
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

/// Teachers trained once, reused by every scenario (each builds fresh learners around them).
pub struct Harness {
    cfg: HarnessConfig,
    teachers: Vec<Arc<Model>>,
    teacher_accuracy: Vec<f64>,
    public: Arc<Dataset>,
    /// Stands for the digest the round openings announce (the learners label only this set).
    public_digest: Digest,
    test: Arc<Dataset>,
    /// Each participant's private rows (its learner's shard).
    shards: Vec<Arc<Dataset>>,
    /// What DP-SGD training cost each teacher (the same for all), when `build_dp_sgd` made them.
    teacher_dp: Option<DpSgdCost>,
}

/// One participant of a scenario: its learner (honest or [`Poisoned`]) and, for an honest one with DP, the
/// privacy state its round lifecycle would hold.
struct Participant {
    learner: Box<dyn Learner>,
    privacy: Option<ParticipantPrivacy>,
}

impl Participant {
    /// What the participant sends for `round`: its learner's labels of `ids`, released through its privacy
    /// state as participant/src/lifecycle.rs releases them (`ParticipantPrivacy::handle_round`); `None`
    /// when its budget is spent (the node abstains).
    fn release(
        &mut self,
        round: RoundId,
        ids: &[u64],
        temperature: f32,
        noise: &mut ChaCha20Rng,
    ) -> anyhow::Result<Option<Vec<f32>>> {
        let probabilities = self.learner.label(round, ids, temperature)?;
        let Some(dp) = self.privacy.as_mut() else {
            return Ok(Some(probabilities));
        };
        let classes = self.learner.classes();
        Ok(
            match dp.handle_round(round.0, &probabilities, ids.len(), classes, noise)? {
                Release::Send { labels, .. } => Some(labels),
                Release::BudgetExhausted { .. } => None,
            },
        )
    }
}

impl Harness {
    /// Splits `ds` (seeded shuffle: test, public, then the private shards) and trains the teachers.
    pub fn build(ds: &Dataset, cfg: HarnessConfig) -> anyhow::Result<Harness> {
        let data = HarnessData::split(ds, &cfg)?;
        Self::build_inner(&data, cfg, None)
    }

    /// Trains the teachers on an already split `data` (the benchmark passes the split through the files a
    /// real node reads).
    pub fn build_from(data: &HarnessData, cfg: HarnessConfig) -> anyhow::Result<Harness> {
        Self::build_inner(data, cfg, None)
    }

    /// The same split, with every teacher trained by DP-SGD (`cfg.dp_sgd`) at the noise multiplier that
    /// makes its training cost `epsilon` at `cfg.delta`: each private sample is in exactly one shard, so
    /// this is the per-private-sample epsilon of everything the participant releases.
    pub fn build_dp_sgd(ds: &Dataset, cfg: HarnessConfig, epsilon: f64) -> anyhow::Result<Harness> {
        let data = HarnessData::split(ds, &cfg)?;
        Self::build_dp_sgd_from(&data, cfg, epsilon)
    }

    /// [`Harness::build_dp_sgd`] on an already split `data`.
    pub fn build_dp_sgd_from(data: &HarnessData, cfg: HarnessConfig, epsilon: f64) -> anyhow::Result<Harness> {
        if !(epsilon > 0.0 && epsilon.is_finite()) {
            bail!("invalid harness configuration: epsilon {epsilon} must be > 0");
        }
        let d = cfg.dp_sgd;
        if d.batch == 0 || d.batch > cfg.private_per_participant || d.epochs == 0 {
            bail!(
                "invalid harness configuration: DP-SGD batch {} / epochs {} do not fit {} private samples",
                d.batch,
                d.epochs,
                cfg.private_per_participant
            );
        }
        let q = d.batch as f64 / cfg.private_per_participant as f64;
        let steps = ((d.epochs * cfg.private_per_participant) as f64 / d.batch as f64).ceil() as u64;
        let z = dp_sgd_noise_for_epsilon(epsilon, q, steps, cfg.delta).ok_or_else(|| {
            anyhow!("invalid harness configuration: epsilon {epsilon} is out of reach for {steps} DP-SGD steps")
        })?;
        let cost = DpSgdCost::new(q, z, steps, cfg.delta);
        Self::build_inner(data, cfg, Some(cost))
    }

    /// The teachers' DP-SGD cost (`None` for `build`).
    pub fn teacher_dp(&self) -> Option<DpSgdCost> {
        self.teacher_dp
    }

    fn build_inner(data: &HarnessData, cfg: HarnessConfig, dp: Option<DpSgdCost>) -> anyhow::Result<Harness> {
        cfg.policy.validate()?;
        ensure!(
            data.shards.len() == cfg.participants,
            "invalid harness configuration: {} shards for {} participants",
            data.shards.len(),
            cfg.participants
        );
        let mut teachers = Vec::new();
        let mut teacher_accuracy = Vec::new();
        for (p, shard) in data.shards.iter().enumerate() {
            let tc = TrainConfig {
                seed: cfg.seed.wrapping_add(p as u64 + 1),
                ..cfg.train.clone()
            };
            let t = match &dp {
                None => fedistill_shared::ml::train_teacher(&cfg.teacher, shard, &tc, &Progress::hidden())?,
                Some(cost) => {
                    let tc = TrainConfig {
                        epochs: cfg.dp_sgd.epochs,
                        lr: cfg.dp_sgd.lr,
                        ..tc
                    };
                    let dpc = fedistill_shared::ml::DpSgdConfig {
                        noise_multiplier: cost.noise_multiplier,
                        clip: cfg.dp_sgd.clip,
                        batch: cfg.dp_sgd.batch,
                    };
                    // Seeded for a reproducible bench; a participant seeds from the OS.
                    let mut noise = ChaCha20Rng::seed_from_u64(cfg.seed ^ 0xd9_5dd0 ^ ((p as u64) << 8));
                    fedistill_shared::ml::train_teacher_dp(
                        &cfg.teacher,
                        shard,
                        &tc,
                        &dpc,
                        Some(&data.public),
                        &mut noise,
                        &Progress::hidden(),
                    )?
                    .0
                }
            };
            teacher_accuracy.push(accuracy(&t, &data.test)?);
            teachers.push(Arc::new(t));
        }
        let public_bytes: Vec<u8> = data.public.features.iter().flat_map(|v| v.to_le_bytes()).collect();
        Ok(Harness {
            teachers,
            teacher_accuracy,
            public_digest: Digest::of(&public_bytes),
            public: Arc::new(data.public.clone()),
            test: Arc::new(data.test.clone()),
            shards: data.shards.iter().map(|s| Arc::new(s.clone())).collect(),
            teacher_dp: dp,
            cfg,
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

    /// Participant `p`'s honest learner: the real participant learner around its teacher and shard, with the
    /// harness's student and distillation (temperature, epochs and seed), no refresh and no guard; its test
    /// rows are the harness's test split, its artifacts go under `workdir/p<p>/`.
    fn learner(&self, p: usize, workdir: &Path) -> anyhow::Result<ModelLearner> {
        let cfg = &self.cfg;
        let (dim, classes) = (self.public.dim, self.public.num_classes);
        let student = Model::new(&cfg.student, dim, classes, cfg.seed.wrapping_add(1000))?;
        let dir = workdir.join(format!("p{p}"));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(ModelLearner::from_parts(LearnerParts {
            public: self.public.clone(),
            public_digest: self.public_digest,
            test: self.test.clone(),
            // No guard and no coordinator here: the outcome is the test split's figure.
            validation: self.test.clone(),
            teacher: self.teachers[p].clone(),
            shard: self.shards[p].clone(),
            distiller: Distiller::new(student, cfg.distill.clone()),
            guard: GuardConfig::default(),
            // The teachers stay as trained: every scenario starts from the same ones.
            refresh: RefreshConfig::default(),
            refresh_seed: cfg.seed ^ (p as u64) << 32,
            workdir: dir,
            local_only_accuracy: self.teacher_accuracy[p],
            augment: None,
            unlabeled: None,
        }))
    }

    /// The honest participants' `[privacy]` in scenario `s`: the soft-label mechanism at the noise multiplier
    /// whose `rounds` releases cost `s.epsilon`, and the DP-SGD teachers' cost; `None` without either.
    fn privacy_settings(&self, s: &Scenario) -> anyhow::Result<Option<PrivacySettings>> {
        let cfg = &self.cfg;
        let labels = match s.epsilon {
            Some(e) => {
                ensure!(
                    e > 0.0 && e.is_finite(),
                    "invalid harness configuration: epsilon {e} must be > 0"
                );
                Some(PrivacyConfig {
                    mode: PrivacyMode::Soft,
                    noise_multiplier: noise_for_epsilon(e, cfg.delta, cfg.rounds as u64),
                    delta: cfg.delta,
                    clip: 1.0,
                    budget_epsilon: e,
                })
            }
            None => None,
        };
        if labels.is_none() && self.teacher_dp.is_none() {
            return Ok(None);
        }
        let teacher = self.teacher_dp.map(|c| TeacherDp {
            noise_multiplier: c.noise_multiplier,
            clip: cfg.dp_sgd.clip,
            batch: cfg.dp_sgd.batch,
        });
        // The label noise's target plus the teachers' cost: composition never costs more than the sum.
        let budget_epsilon = labels.map_or(0.0, |l| l.budget_epsilon) + self.teacher_dp.map_or(0.0, |c| c.epsilon);
        Ok(Some(PrivacySettings {
            labels,
            teacher,
            delta: cfg.delta,
            budget_epsilon,
        }))
    }

    /// Runs one scenario: rounds of label (honest and released through the privacy state, or poisoned),
    /// aggregate, score, quarantine, distill, every participant a learner driven through the learner seam.
    pub fn run(&self, s: &Scenario) -> anyhow::Result<Outcome> {
        let cfg = &self.cfg;
        let classes = self.public.num_classes;
        let m = self.teachers.len();
        let attackers = s.attack.map(|a| a.attackers()).unwrap_or(0);
        ensure!(
            attackers < m,
            "invalid harness configuration: {attackers} attackers of {m} participants"
        );
        let settings = self.privacy_settings(s)?;
        let workdir = tempfile::tempdir().context("creating a directory for the learners' artifacts")?;
        // One seed for the attack's randomness and the release noise (no scenario has both).
        let seed = cfg.seed ^ 0x5eed_a77a;
        let collusion = Collusion::default();
        let mut participants = Vec::with_capacity(m);
        for p in 0..m {
            let honest = self.learner(p, workdir.path())?;
            participants.push(match s.attack.filter(|_| p >= m - attackers) {
                Some(a) => Participant {
                    learner: Box::new(Poisoned::new(honest, a, seed, collusion.clone())),
                    // An attacker adds no noise to its poison.
                    privacy: None,
                },
                None => Participant {
                    learner: Box::new(honest),
                    privacy: settings
                        .as_ref()
                        .map(|st| ParticipantPrivacy::with_settings(st, self.teacher_dp, classes, 0)),
                },
            });
        }
        // Seeded for a reproducible bench; a node draws its release noise from the OS (`privacy::os_rng`).
        let mut noise = ChaCha20Rng::seed_from_u64(seed);
        let ids: Vec<ParticipantId> = (0..m).map(|i| ParticipantId::new(format!("p{i}"))).collect();
        let mut tracker = AnomalyTracker::new(cfg.policy)?;
        let mut excluded = vec![false; m];
        let mut quarantined = Vec::new();
        let mut distance_sum = vec![0.0f64; m];
        let mut distance_rounds = vec![0usize; m];
        let per_round = (cfg.public_len / cfg.rounds) as u64;
        let total = cfg.rounds as u64;
        // No guard: every candidate is kept.
        let serving = BTreeMap::new();
        let mut student_accuracy = None;
        for r in 0..cfg.rounds {
            let round = RoundId(r as u64 + 1);
            // Sample ids are positions in the public set, as the coordinator announces them.
            let sample_ids = round_sample_ids(round, per_round, self.public.n as u64);
            let rows = sample_ids.len();
            // A quarantined participant is no longer counted; one out of budget abstains.
            let mut labels: Vec<Option<Vec<f32>>> = Vec::with_capacity(m);
            for (p, participant) in participants.iter_mut().enumerate() {
                labels.push(if s.quarantine && excluded[p] {
                    None
                } else {
                    participant.release(round, &sample_ids, cfg.temperature, &mut noise)?
                });
            }
            let included: Vec<usize> = (0..m).filter(|&p| labels[p].is_some()).collect();
            let contributed: Vec<&[f32]> = labels.iter().flatten().map(Vec::as_slice).collect();
            ensure!(
                !contributed.is_empty(),
                "round {}: every participant abstained",
                round.0
            );
            let views: Vec<ContributionView<'_>> = contributed
                .iter()
                .map(|l| ContributionView {
                    probabilities: l,
                    samples: cfg.private_per_participant as u64,
                })
                .collect();
            let consensus = aggregate(s.rule, &views, rows, classes)?;
            let mut scores = Vec::with_capacity(included.len());
            for (&p, l) in included.iter().zip(&contributed) {
                let d = distance_to_consensus(l, &consensus, classes);
                distance_sum[p] += d;
                distance_rounds[p] += 1;
                scores.push((ids[p].clone(), d));
            }
            if s.quarantine {
                for dec in tracker.handle_round(round, &scores) {
                    if let Some(p) = ids.iter().position(|i| *i == dec.participant) {
                        excluded[p] = true;
                        quarantined.push((p, round.0));
                    }
                }
            }
            // The student is the same on every node (same consensus, same seed, no guard): participant 0,
            // always honest, distills it for all.
            let first = participants.first_mut().context("no participants")?;
            let distilled = first
                .learner
                .distill(round, &sample_ids, &consensus, total, s.rule, &serving)?;
            student_accuracy = Some(
                distilled
                    .test_metrics
                    .get("accuracy")
                    .copied()
                    .context("the learner reported no accuracy")?,
            );
        }
        let privacy: Vec<&ParticipantPrivacy> = participants.iter().filter_map(|p| p.privacy.as_ref()).collect();
        Ok(Outcome {
            rule: s.rule.name(),
            attack: s.attack.map(|a| a.name().to_string()).unwrap_or_else(|| "none".into()),
            attackers,
            epsilon: s.epsilon,
            noise_multiplier: settings.and_then(|st| st.labels).map(|l| l.noise_multiplier),
            epsilon_spent: (!privacy.is_empty()).then(|| privacy.iter().map(|p| p.epsilon_spent()).fold(0.0, f64::max)),
            accuracy: student_accuracy.context("no rounds")?,
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
    pub fn run(h: &Harness, rules: &[AggregationRule], epsilons: &[f64]) -> anyhow::Result<RobustTable> {
        Self::run_with_progress(h, rules, epsilons, &Progress::hidden())
    }

    /// [`RobustTable::run`], showing one step per scenario on `progress`.
    pub fn run_with_progress(
        h: &Harness,
        rules: &[AggregationRule],
        epsilons: &[f64],
        progress: &Progress,
    ) -> anyhow::Result<RobustTable> {
        let sc = |rule, attack, epsilon, quarantine| Scenario {
            rule,
            attack,
            epsilon,
            quarantine,
        };
        let total = (rules.len() * (1 + epsilons.len() + 2 * Attack::ALL.len())) as u64;
        let mut done = 0u64;
        let mut step = |s: &Scenario| -> anyhow::Result<Outcome> {
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
    pub fn run_dp_sgd(&mut self, ds: &Dataset, rules: &[AggregationRule], epsilons: &[f64]) -> anyhow::Result<()> {
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
    ) -> anyhow::Result<()> {
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
    ) -> anyhow::Result<()> {
        let total = epsilons.len() as u64;
        progress.start("dp-sgd", total);
        for (i, &e) in epsilons.iter().enumerate() {
            let h = Harness::build_dp_sgd_from(data, self.config.clone(), e)?;
            let cost = h.teacher_dp().context("DP-SGD harness without a cost")?;
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
            fedistill_shared::data::DataKind::Tabular,
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

    /// A real learner around an untrained teacher of seed `seed` on twelve tabular rows of three classes.
    fn tiny_learner(seed: u64, dir: &Path) -> ModelLearner {
        let ds = Arc::new(
            Dataset::new(
                "tiny",
                (0..12 * 4).map(|i| (i % 7) as f32 / 7.0).collect(),
                (0..12).map(|i| i % 3).collect(),
                4,
                fedistill_shared::data::DataKind::Tabular,
                vec!["a".into(), "b".into(), "c".into()],
            )
            .expect("valid tiny dataset"),
        );
        let mlp = ModelConfig::Mlp { hidden: vec![8] };
        let teacher = Model::new(&mlp, 4, 3, seed).expect("teacher");
        let student = Model::new(&mlp, 4, 3, 0).expect("student");
        ModelLearner::from_parts(LearnerParts {
            public: ds.clone(),
            public_digest: Digest([0; 32]),
            test: ds.clone(),
            validation: ds.clone(),
            teacher: Arc::new(teacher),
            shard: ds,
            distiller: Distiller::new(student, DistillConfig::default()),
            guard: GuardConfig::default(),
            refresh: RefreshConfig::default(),
            refresh_seed: seed,
            workdir: dir.join(format!("t{seed}")),
            local_only_accuracy: 0.0,
            augment: None,
            unlabeled: None,
        })
    }

    #[test]
    fn poisoned_learners_lie_through_the_seam_and_colluders_share_one_poison() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ids = [0u64, 3, 5, 11];
        let round = RoundId(1);
        let truth = tiny_learner(1, dir.path())
            .label(round, &ids, 2.0)
            .expect("honest labels");
        let mut rng = ChaCha20Rng::seed_from_u64(0);
        let mut flip = Poisoned::new(tiny_learner(1, dir.path()), Attack::LabelFlip, 7, Collusion::default());
        assert_eq!(
            flip.label(round, &ids, 2.0).expect("poisoned labels"),
            Attack::LabelFlip.apply(&truth, 3, &mut rng)
        );
        assert_eq!((flip.classes(), flip.private_samples(), flip.public_len()), (3, 12, 12));
        // Two colluders with different teachers send one poison: the first one's.
        let channel = Collusion::default();
        let mut first = Poisoned::new(tiny_learner(1, dir.path()), Attack::Collude, 7, channel.clone());
        let mut second = Poisoned::new(tiny_learner(2, dir.path()), Attack::Collude, 7, channel);
        let a = first.label(round, &ids, 2.0).expect("first poison");
        let b = second.label(round, &ids, 2.0).expect("second poison");
        assert_eq!(a, Attack::Collude.apply(&truth, 3, &mut rng));
        assert_eq!(a, b);
    }
}
