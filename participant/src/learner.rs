// Over 800 lines: the real learner (teacher, refresh, student, INT8, guard) and its defaults read best beside the seam they implement.
//! The learner seam: what a participant's round lifecycle asks of the machine-learning side, as plain
//! synchronous calls (label these public ids; distill this round from this consensus; say what you hold).
//!
//! [`ModelLearner`] is the real one: the private teacher, the shared student, INT8 quantization, export,
//! evaluation and the degradation guard on candle. The driver runs every call on a blocking thread; the
//! benchmarks drive the same driver and lifecycle with a learner of their own where they need no model
//! (`fedistill bench scale`). Nothing here touches the network.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use tracing::info;

use fedistill_shared::crypto::{Digest, RoundId};
use fedistill_shared::data::{Dataset, FederatedSplit, ModalityRange};
use fedistill_shared::ml::augment::PublicAugment;
use fedistill_shared::ml::codistill::{refresh_teacher, RefreshConfig, RefreshData};
use fedistill_shared::ml::distill::{DistillConfig, Distiller, SoftTargets};
use fedistill_shared::ml::lifecycle::{metric_map, GuardConfig};
use fedistill_shared::ml::local::{default_distill, default_train, LocalOptions};
use fedistill_shared::ml::quant::model::{Profile, QuantizedModel};
use fedistill_shared::ml::{evaluate, train_teacher, Model, ModelConfig, Progress};
use fedistill_shared::privacy::DpSgdCost;
use fedistill_shared::protocol::{refresh_targets, AggregationRule};

use crate::absent::AbsentBlocks;
use crate::config::ParticipantSettings;
use crate::personalize::{personalize, PersonalizeConfig, Personalized};

/// What one round's distillation produced. The candidate is measured twice: on the node's validation rows
/// (what the degradation guard decides on and the signed round report carries, so the coordinator's `[stop]`
/// rule never sees a test figure) and on its test rows (the final reports only: `rounds.jsonl`,
/// `result.json`).
#[derive(Debug, Clone)]
pub struct Distilled {
    /// The candidate student's metrics on the validation rows (`accuracy`, `macro_f1`, ...), whether or not
    /// the guard kept it: what the guard compared and the round report carries.
    pub metrics: BTreeMap<String, f64>,
    /// Validation accuracy of the candidate's INT8 version (the round report's `int8_accuracy`).
    pub int8_accuracy: f64,
    /// The same metrics on the node's test rows (reported, never decided on).
    pub test_metrics: BTreeMap<String, f64>,
    /// Test accuracy of the candidate's INT8 version.
    pub test_int8_accuracy: f64,
    /// Size of the candidate's INT8 export.
    pub int8_bytes: usize,
    /// Whether the candidate now serves (the guard accepted it, or it is the first student).
    pub accepted: bool,
    /// Why the guard decided as it did.
    pub guard_reason: String,
    /// Digest of the student that serves after the round.
    pub student_digest: Digest,
    /// Agreement of the consensus with the true labels of the round's public samples (reporting only; NaN
    /// when the public set carries no labels).
    pub consensus_accuracy: f64,
    /// Where the time went, in seconds, by phase (for [`ModelLearner`]: `refresh`, `distill`, `evaluate`,
    /// `quantize` (with the INT8 evaluation), `export` (GGUF bytes), `guard`, `save` (round artifacts),
    /// `personalize` when a personalized student was built).
    pub phases: Vec<(String, f64)>,
    /// Test accuracy of this round's personalized student (`[personalize]`), when one was built.
    pub personalized_accuracy: Option<f64>,
}

/// What a learner holds, for `result.json`.
#[derive(Debug, Clone, Default)]
pub struct LearnerSummary {
    /// Private training samples.
    pub private_samples: usize,
    /// Test accuracy of the private teacher alone (the local-only baseline).
    pub local_only_accuracy: f64,
    /// Its ROC AUC on the same rows (`None` when it is not defined there).
    pub local_only_auc: Option<f64>,
    /// Teacher parameters.
    pub teacher_params: usize,
    /// Student parameters.
    pub student_params: usize,
    /// Regression tasks: the teacher's metrics on the test rows by name (`r2`, `rmse`, ...); empty for
    /// classification.
    pub local_only_metrics: BTreeMap<String, f64>,
}

/// The machine-learning side of a participant, called synchronously (on a blocking thread) by the round
/// lifecycle. Implementations keep private data and weights to themselves.
pub trait Learner: Send + 'static {
    /// Digest of the public transfer set this learner labels (the session refuses rounds on another).
    fn public_digest(&self) -> Digest;
    /// Rows of the public transfer set.
    fn public_len(&self) -> u64;
    /// Classes of the task.
    fn classes(&self) -> usize;
    /// Samples the teacher learned from (sent as the contribution's weight).
    fn private_samples(&self) -> u64;
    /// The teacher's probabilities at `temperature` for the public rows `ids`, row-major
    /// `ids.len() x classes()`.
    fn label(&mut self, round: RoundId, ids: &[u64], temperature: f32) -> anyhow::Result<Vec<f32>>;
    /// Distills a candidate student from the round's consensus (`consensus` is row-major probabilities for
    /// `ids`), evaluates it, asks the guard against the metrics of the student serving now (`serving`,
    /// empty before the first round) and keeps the candidate only when accepted. `rule` formed the consensus
    /// (a teacher refresh undoes ERA's sharpening, `protocol::refresh_targets`).
    fn distill(
        &mut self,
        round: RoundId,
        ids: &[u64],
        consensus: &[f32],
        total_rounds: u64,
        rule: AggregationRule,
        serving: &BTreeMap<String, f64>,
    ) -> anyhow::Result<Distilled>;
    /// What this learner holds.
    fn summary(&self) -> LearnerSummary;
}

/// Writes a round's artifacts under `workdir/round-NNNN/` (the candidate student, its INT8 export, its
/// `metrics`, the guard's `decision`); when the guard accepted the candidate (or there was no decision) it
/// becomes the served student (`student.safetensors`, `student-int8.gguf`), else the working `student` is
/// rolled back to the served weights `before`. Returns the round's directory. Both learners end a round here.
pub(crate) fn save_round(
    workdir: &Path,
    round: RoundId,
    student: &Model,
    before: &[u8],
    int8_bytes: &[u8],
    metrics: &impl serde::Serialize,
    decision: Option<&fedistill_shared::ml::lifecycle::GuardDecision>,
) -> anyhow::Result<PathBuf> {
    let round_dir = workdir.join(format!("round-{:04}", round.0));
    std::fs::create_dir_all(&round_dir)?;
    student.save(&round_dir.join("student.safetensors"))?;
    std::fs::write(round_dir.join("student-int8.gguf"), int8_bytes)?;
    std::fs::write(round_dir.join("metrics.json"), serde_json::to_vec_pretty(metrics)?)?;
    if let Some(dec) = decision {
        std::fs::write(round_dir.join("guard.json"), serde_json::to_vec_pretty(dec)?)?;
    }
    if decision.is_none_or(|d| d.accepted) {
        student.save(&workdir.join("student.safetensors"))?;
        std::fs::write(workdir.join("student-int8.gguf"), int8_bytes)?;
    } else {
        // Roll the working student back to the served one.
        let restored = Model::from_safetensors(student.config(), student.in_dim(), student.classes(), before)?;
        student.copy_weights_from(&restored)?;
    }
    Ok(round_dir)
}

/// Accuracy of the quantized model `q` (of `classes` outputs) on `rows` (0 on none).
fn int8_accuracy_on(q: &QuantizedModel, classes: usize, rows: &Dataset) -> anyhow::Result<f64> {
    let logits = q.logits(&rows.features, rows.n)?;
    let correct = logits
        .chunks_exact(classes.max(1))
        .zip(&rows.labels)
        .filter(|(r, &y)| fedistill_shared::ml::model::argmax(r) as u32 == y)
        .count();
    Ok(correct as f64 / rows.n.max(1) as f64)
}

/// Seconds spent per named phase, measured lap by lap.
pub struct PhaseClock {
    last: std::time::Instant,
    /// The phases measured so far, in order.
    pub phases: Vec<(String, f64)>,
}

impl Default for PhaseClock {
    fn default() -> Self {
        PhaseClock {
            last: std::time::Instant::now(),
            phases: Vec::new(),
        }
    }
}

impl PhaseClock {
    /// Ends the phase `name` now (it began at the previous lap).
    pub fn lap(&mut self, name: &str) {
        let now = std::time::Instant::now();
        self.phases.push((name.to_string(), (now - self.last).as_secs_f64()));
        self.last = now;
    }
}

/// Multiply-adds one epoch of the default image teacher may cost over this node's private rows plus the
/// public set (what it trains on and labels): 784-512-256 (535k parameters) below it, 784-256 (203k) above.
pub const TEACHER_EPOCH_BUDGET: u64 = 6_000_000_000;

/// A participant's defaults where its config names no `[teacher]`, `[student]` or `[distill]`: the
/// architectures of `fedistill local`, a per-round distillation budget, and for images a teacher sized to
/// [`TEACHER_EPOCH_BUDGET`]. Chosen for time to accuracy on two cores (docs/ml.md, "Where a round's time
/// goes"): on Fashion-MNIST (21,000 public rows) the 784-512-256 teacher costs 2.6x per round for a
/// consensus about a point better, on MNIST-10k (3,000) it is cheap and worth 1.2 points. Images distill
/// 8 epochs of batch 128 per round at a learning rate of 3e-3 decaying with a cosine to a tenth over the
/// run; tabular data 10 epochs per round. A task card with modality blocks (`blocks`: their input widths, in
/// order; empty without blocks) gets the fused teacher and student of `LocalOptions::with_modality_blocks`.
pub fn federation_defaults(shard: &Dataset, blocks: &[usize], public_rows: usize, student_seed: u64) -> LocalOptions {
    let mut o = LocalOptions::defaults_for(shard, student_seed).with_modality_blocks(blocks);
    let mut d = default_distill(&shard.kind, student_seed);
    if matches!(shard.kind, fedistill_shared::data::DataKind::Image { .. }) {
        let rows = (shard.n + public_rows) as u64;
        let widths: Vec<u64> = match &o.teacher.model {
            fedistill_shared::ml::ModelConfig::Mlp { hidden } => std::iter::once(shard.dim)
                .chain(hidden.iter().copied())
                .chain(std::iter::once(shard.num_classes))
                .map(|w| w as u64)
                .collect(),
            fedistill_shared::ml::ModelConfig::Cnn { .. }
            | fedistill_shared::ml::ModelConfig::Cnn1d { .. }
            | fedistill_shared::ml::ModelConfig::Fused { .. } => Vec::new(),
        };
        let macs: u64 = widths.windows(2).map(|w| w[0] * w[1]).sum();
        if rows.saturating_mul(macs) > TEACHER_EPOCH_BUDGET {
            o.teacher.model = fedistill_shared::ml::ModelConfig::Mlp { hidden: vec![256] };
        }
        d.epochs_per_round = 8;
        d.batch_size = 128;
        d.lr = 3e-3;
        d.lr_final = 0.1;
    } else {
        d.epochs_per_round = 10;
    }
    o.student.distill = Some(d);
    o
}

/// Work-directory file recording the DP-SGD cost of the saved teacher (`DpSgdCost` as JSON).
pub const TEACHER_DP_FILE: &str = "teacher-dp.json";

/// The data a node learns from: its private rows, the public transfer set, its test rows, and the seeds.
pub struct NodeData {
    /// The private training rows.
    pub private: Dataset,
    /// The public transfer set.
    pub public: Dataset,
    /// Digest of the public transfer set (what the coordinator's round openings announce).
    pub public_digest: Digest,
    /// Whether the public set's labels are real (reporting only: the consensus' agreement with them).
    pub public_labelled: bool,
    /// Rows this node's final reports are measured on (its own test holdout, the card's shared benchmark
    /// set, or a catalog split's shared test set).
    pub test: Dataset,
    /// Rows the degradation guard and the accuracy reported for early stopping (`[stop]`) are measured on:
    /// a seeded split of the node's own rows (`[private] validation`), disjoint from `private` and `test`.
    /// `None`: the test rows serve (a catalog split's nodes; `fedistill bench`'s in-process experiments).
    pub validation: Option<Dataset>,
    /// Seed of teacher training and refresh.
    pub seed: u64,
    /// This node's index in a catalog split (0 for own files); mixed into the seeds.
    pub index: u64,
    /// The task card's public-set augmentation (`[augment]`), applied to every round's public rows.
    pub augment: Option<PublicAugment>,
    /// Unlabelled private rows (`[private] unlabeled`), pseudo-labelled for the teacher refresh.
    pub unlabeled: Option<Dataset>,
    /// The task card's modality blocks (`TaskCard::modality_ranges`): where each lies in a row, for the
    /// fused models' defaults. Empty without `[[modalities]]` (and for a catalog split).
    pub modalities: Vec<ModalityRange>,
}

impl NodeData {
    /// This node's part of a catalog split.
    pub fn from_split(split: FederatedSplit, shard: usize, seed: u64) -> anyhow::Result<Self> {
        let private = split
            .shards
            .get(shard)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("shard {shard} is not in the split"))?;
        Ok(NodeData {
            private,
            public_digest: Digest(split.public_digest),
            public_labelled: true,
            public: split.public,
            validation: None,
            test: split.test,
            seed,
            index: shard as u64,
            augment: None,
            unlabeled: None,
            modalities: Vec::new(),
        })
    }
}

/// Everything a [`ModelLearner`] is made of, for a caller that prepared the parts itself (the in-process
/// experiments of `fedistill bench`, which train many teachers and share the public and test sets).
pub struct LearnerParts {
    /// The public transfer set and its digest.
    pub public: Arc<Dataset>,
    /// Digest of the public set.
    pub public_digest: Digest,
    /// This node's test rows (the final reports).
    pub test: Arc<Dataset>,
    /// This node's validation rows (the guard and the reported accuracy); the test rows where the caller
    /// keeps no guard and reports nothing to a coordinator (`fedistill bench`'s experiments).
    pub validation: Arc<Dataset>,
    /// The private teacher (refreshed in place when `refresh.epochs > 0`).
    pub teacher: Arc<Model>,
    /// The private training rows.
    pub shard: Arc<Dataset>,
    /// The student and its distillation settings.
    pub distiller: Distiller,
    /// The degradation guard.
    pub guard: GuardConfig,
    /// Teacher refresh (co-distillation).
    pub refresh: RefreshConfig,
    /// Seed of the teacher refresh (mixed with the round).
    pub refresh_seed: u64,
    /// Where the round artifacts go.
    pub workdir: PathBuf,
    /// The teacher's test accuracy.
    pub local_only_accuracy: f64,
    /// The federation's public-set augmentation (the task card's `[augment]`).
    pub augment: Option<PublicAugment>,
    /// Unlabelled private rows, pseudo-labelled by the student for the teacher refresh.
    pub unlabeled: Option<Arc<Dataset>>,
}

/// The participant's real learner: private teacher, shared student, INT8, guard; artifacts under the work
/// directory (`teacher.safetensors`, `student.safetensors`, `student-int8.gguf`, `round-NNNN/`).
pub struct ModelLearner {
    public: Arc<Dataset>,
    public_digest: Digest,
    test: Arc<Dataset>,
    validation: Arc<Dataset>,
    teacher: Arc<Model>,
    shard: Arc<Dataset>,
    distiller: Distiller,
    guard: GuardConfig,
    refresh: RefreshConfig,
    workdir: PathBuf,
    /// Seed of the teacher refresh (mixed with the round).
    refresh_seed: u64,
    /// Temperature of the last soft labels released (the consensus of that round is at it).
    last_temperature: f32,
    local_only_accuracy: f64,
    /// The teacher's ROC AUC on the test rows, when `prepare` computed it (with its accuracy).
    local_only_auc: Option<f64>,
    teacher_dp: Option<DpSgdCost>,
    /// Whether the public set's labels are real (else the consensus accuracy is not known: NaN).
    public_labelled: bool,
    /// The personalized student's settings (`[personalize]`), checked against both models.
    personalize: Option<PersonalizeConfig>,
    /// The federation's public-set augmentation: each round's public rows are that round's views.
    augment: Option<PublicAugment>,
    /// Unlabelled private rows (semi-supervised refresh, `[refresh] pseudo_threshold`).
    unlabeled: Option<Arc<Dataset>>,
    /// The modality blocks this node's file lacks: masked in the public rows the teacher labels and
    /// refreshes on (crate::absent).
    absent: AbsentBlocks,
}

impl ModelLearner {
    /// Takes this node's data, trains the private teacher (or reloads it from the work directory) and
    /// builds the student. Blocking: minutes on a large shard.
    pub fn prepare(settings: &ParticipantSettings, data: NodeData) -> anyhow::Result<Self> {
        let NodeData {
            private: shard,
            public,
            public_digest,
            public_labelled,
            test,
            validation,
            seed,
            index,
            augment,
            unlabeled,
            modalities,
        } = data;
        let blocks: Vec<usize> = modalities.iter().map(ModalityRange::width).collect();
        // A block the node's file lacks is absent from every public row its teacher labels or refreshes on.
        let absent = AbsentBlocks::of_rows(&shard, &modalities);
        if !absent.is_empty() {
            info!(
                blocks = %absent.names().join(", "),
                "this node's file lacks these modality blocks: its teacher labels the public rows without them"
            );
        }
        let defaults = federation_defaults(&shard, &blocks, public.n, settings.student_seed);
        // A fused [teacher] or [student] that leaves its blocks out takes the card's.
        let pick = |set: &Option<ModelConfig>, default: &ModelConfig| set.clone().unwrap_or(default.clone());
        let teacher_cfg = pick(&settings.teacher, &defaults.teacher.model).with_blocks(&blocks);
        let student_cfg = pick(&settings.student, &defaults.student.model).with_blocks(&blocks);
        let train_cfg = settings
            .train
            .clone()
            .unwrap_or_else(|| default_train(&shard.kind, seed + index));
        let distill_cfg: DistillConfig = settings
            .distill
            .clone()
            .or(defaults.student.distill)
            .context("no default distillation")?;
        let (dim, classes) = (shard.dim, shard.num_classes);
        let teacher_path = settings.workdir.join("teacher.safetensors");
        let dp_record_path = settings.workdir.join(TEACHER_DP_FILE);
        // DP-SGD of the teacher ([privacy.teacher], docs/privacy.md): its cost is known before training and
        // refused at start when it alone exceeds the budget.
        let dp_teacher = match settings.privacy.as_ref().and_then(|p| p.teacher.map(|t| (p, t))) {
            Some((p, t)) => {
                anyhow::ensure!(
                    matches!(teacher_cfg, fedistill_shared::ml::ModelConfig::Mlp { .. }),
                    "[privacy.teacher] (DP-SGD) supports MLP teachers only; set [teacher] kind = \"mlp\""
                );
                let cost = p
                    .teacher_cost(shard.n, train_cfg.epochs)?
                    .context("DP-SGD settings without a cost")?;
                Some((t, cost))
            }
            None => None,
        };
        let budget = settings.privacy.map(|p| p.budget_epsilon);
        let progress = Progress::with_mode(fedistill_shared::ml::ProgressMode::Lines);
        let (teacher, teacher_dp) = if teacher_path.exists() {
            info!(path = %teacher_path.display(), "reloading the private teacher");
            let m = Model::load(&teacher_cfg, dim, classes, &teacher_path)?;
            // A reloaded teacher costs what its training cost (recorded beside it), not what the current
            // settings would cost; one trained without DP-SGD cannot serve a DP-SGD config.
            let cost = match &dp_teacher {
                None => None,
                Some(_) => {
                    let bytes = std::fs::read(&dp_record_path).map_err(|_| {
                        anyhow::anyhow!(
                            "{} was not trained with DP-SGD ({} is missing) but [privacy.teacher] is set: delete \
                             it to retrain the teacher privately",
                            teacher_path.display(),
                            dp_record_path.display()
                        )
                    })?;
                    let c: DpSgdCost = serde_json::from_slice(&bytes)
                        .with_context(|| format!("decoding {}", dp_record_path.display()))?;
                    if let Some(b) = budget {
                        anyhow::ensure!(
                            c.epsilon <= b,
                            "the saved DP-SGD teacher cost epsilon {:.3}, more than budget_epsilon {b}",
                            c.epsilon
                        );
                    }
                    Some(c)
                }
            };
            (m, cost)
        } else if let Some((t, cost)) = dp_teacher {
            info!(
                samples = shard.n,
                steps = cost.steps,
                sampling_rate = cost.sampling_rate,
                noise_multiplier = t.noise_multiplier,
                epsilon = cost.epsilon,
                delta = cost.delta,
                "training the private teacher with DP-SGD"
            );
            let dp = fedistill_shared::ml::DpSgdConfig {
                noise_multiplier: t.noise_multiplier,
                clip: t.clip,
                batch: t.batch,
            };
            // Sampling and noise must be unpredictable: ChaCha20 seeded from the OS.
            let mut rng = fedistill_shared::privacy::os_rng()?;
            let (m, stats) = fedistill_shared::ml::train_teacher_dp(
                &teacher_cfg,
                &shard,
                &train_cfg,
                &dp,
                Some(&public),
                &mut rng,
                &progress,
            )?;
            anyhow::ensure!(
                stats.steps == cost.steps,
                "DP-SGD ran {} steps, {} accounted",
                stats.steps,
                cost.steps
            );
            m.save(&teacher_path)?;
            crate::lifecycle::write_json(&dp_record_path, &cost)?;
            (m, Some(cost))
        } else {
            info!(samples = shard.n, "training the private teacher on local data");
            let m = train_teacher(&teacher_cfg, &shard, &train_cfg, &progress)?;
            m.save(&teacher_path)?;
            (m, None)
        };
        let teacher_metrics = evaluate(&teacher, &test, None)?;
        let local_only_accuracy = teacher_metrics.accuracy;
        info!(
            accuracy = local_only_accuracy,
            params = teacher.params(),
            dp_sgd_epsilon = teacher_dp.map(|c| c.epsilon),
            "teacher ready (local-only baseline)"
        );

        let student_path = settings.workdir.join("student.safetensors");
        let student = if student_path.exists() {
            Model::load(&student_cfg, dim, classes, &student_path)?
        } else {
            Model::new(&student_cfg, dim, classes, settings.student_seed)?
        };
        let test = Arc::new(test);
        let mut learner = ModelLearner::from_parts(LearnerParts {
            public: Arc::new(public),
            public_digest,
            validation: validation.map_or_else(|| test.clone(), Arc::new),
            test,
            teacher: Arc::new(teacher),
            shard: Arc::new(shard),
            distiller: Distiller::new(student, distill_cfg),
            guard: GuardConfig::new(settings.guard_metrics.clone(), settings.guard_max_relative_drop)?,
            refresh: settings.refresh.clone(),
            refresh_seed: seed ^ index << 32,
            workdir: settings.workdir.clone(),
            local_only_accuracy,
            augment,
            unlabeled: unlabeled.map(Arc::new),
        });
        learner.teacher_dp = teacher_dp;
        learner.local_only_auc = Some(teacher_metrics.roc_auc).filter(|a| a.is_finite());
        learner.public_labelled = public_labelled;
        learner.absent = absent;
        if learner.validation.n < fedistill_shared::ml::lifecycle::MIN_GUARD_ROWS {
            tracing::warn!(
                rows = learner.validation.n,
                min = fedistill_shared::ml::lifecycle::MIN_GUARD_ROWS,
                "too few validation rows for the degradation guard to compare students: it will accept every \
                 candidate (raise [private] validation)"
            );
        }
        learner.set_personalize(settings.personalize.clone())?;
        Ok(learner)
    }

    /// A learner from prepared parts (no DP-SGD teacher).
    pub fn from_parts(p: LearnerParts) -> Self {
        ModelLearner {
            public: p.public,
            public_digest: p.public_digest,
            test: p.test,
            validation: p.validation,
            teacher: p.teacher,
            shard: p.shard,
            distiller: p.distiller,
            guard: p.guard,
            refresh: p.refresh,
            workdir: p.workdir,
            refresh_seed: p.refresh_seed,
            last_temperature: 1.0,
            local_only_accuracy: p.local_only_accuracy,
            local_only_auc: None,
            teacher_dp: None,
            public_labelled: true,
            personalize: None,
            augment: p.augment,
            unlabeled: p.unlabeled,
            absent: AbsentBlocks::default(),
        }
    }

    /// Masks `absent` (the modality blocks this node's rows lack) in the public rows the teacher labels and
    /// refreshes on; [`ModelLearner::prepare`] sets it from the node's private rows, a learner from parts
    /// has none until this is called.
    pub fn set_absent_blocks(&mut self, absent: AbsentBlocks) {
        self.absent = absent;
    }

    /// The modality blocks this node's rows lack (masked for its teacher).
    pub fn absent_blocks(&self) -> &AbsentBlocks {
        &self.absent
    }

    /// Builds a personalized student after the rounds `cfg` names (checked against both models here).
    pub fn set_personalize(&mut self, cfg: Option<PersonalizeConfig>) -> anyhow::Result<()> {
        if let Some(c) = &cfg {
            c.validate()?;
            c.check_models(&self.teacher, self.distiller.student(), self.distiller.config())?;
        }
        self.personalize = cfg;
        Ok(())
    }

    /// Builds a personalized student now from the student that serves (see [`crate::personalize`]), evaluated
    /// on this node's test rows, saved in `dir`; the round hook of `[personalize]` and `fedistill bench
    /// stages` both come through here.
    pub fn personalize_now(&self, cfg: &PersonalizeConfig, round: u64, dir: &Path) -> anyhow::Result<Personalized> {
        personalize(
            cfg,
            (&self.teacher, self.distiller.student()),
            self.distiller.config(),
            (&self.shard, &self.test),
            round,
            dir,
        )
    }

    /// Test accuracy of the student that serves now, on this node's test rows.
    pub fn student_accuracy(&self) -> anyhow::Result<f64> {
        Ok(evaluate(self.distiller.student(), &self.test, None)?.accuracy)
    }

    /// The shared student this learner distills (the candidate of the last round, or the served one).
    pub fn student(&self) -> &Model {
        self.distiller.student()
    }

    /// The DP-SGD cost of the teacher, when it was trained with DP-SGD.
    pub fn teacher_dp(&self) -> Option<DpSgdCost> {
        self.teacher_dp
    }

    /// The public rows `ids` as round `round` uses them: as read, or their views of this round when the task
    /// card declares `[augment]` (the same on every participant).
    fn public_rows(&self, round: RoundId, ids: &[u64]) -> Vec<f32> {
        let mut x: Vec<f32> = ids.iter().flat_map(|&i| self.public.row(i as usize).to_vec()).collect();
        if let Some(a) = &self.augment {
            a.apply(&self.public_digest.0, round.0, ids, &mut x);
        }
        x
    }

    /// The public rows `ids` as the teacher sees them in round `round`: [`ModelLearner::public_rows`] with the
    /// modality blocks this node's file lacks made absent (inputs 0, presence 0), as in its own rows.
    fn teacher_rows(&self, round: RoundId, ids: &[u64]) -> Vec<f32> {
        let mut x = self.public_rows(round, ids);
        self.absent.apply(&mut x, self.public.dim);
        x
    }

    /// Co-distillation (`[refresh]`, docs/ml.md): fine-tunes the private teacher on its shard plus this
    /// round's public rows `ids` (without the modality blocks its file lacks) with the consensus as soft
    /// targets, then saves it (write and rename), so the labels of the next round carry what the federation
    /// knows. Off when `epochs = 0`; skipped after
    /// the last round. [`Learner::distill`] does this first; a caller that distills the (identical) shared
    /// student once for many learners calls it on the others.
    /// `student` pseudo-labels the node's unlabelled rows when `[refresh] pseudo_threshold` is set: a caller
    /// that distills one shared student for many learners passes it (`None`: this learner's own).
    pub fn refresh(
        &mut self,
        round: RoundId,
        ids: &[u64],
        consensus: &[f32],
        total_rounds: u64,
        rule: AggregationRule,
        student: Option<&Model>,
    ) -> anyhow::Result<()> {
        let x = self.teacher_rows(round, ids);
        let targets = refresh_targets(rule, consensus, self.public.num_classes);
        self.refresh_teacher(
            round,
            &x,
            &targets,
            total_rounds,
            student.unwrap_or(self.distiller.student()),
        )
    }

    /// The unlabelled private rows the student (distilled up to the previous round) predicts with at least
    /// `threshold` confidence, with those classes as labels; with the card's `[augment]` each kept row is
    /// trained on a seeded view of this round (FixMatch's weak-label / strong-view split, with a shift as
    /// the strong view). Empty before any round was distilled.
    fn pseudo_labelled(&self, round: RoundId, student: &Model) -> anyhow::Result<(Vec<f32>, Vec<u32>)> {
        let (Some(rows), Some(threshold)) = (&self.unlabeled, self.refresh.pseudo_threshold) else {
            return Ok((Vec::new(), Vec::new()));
        };
        if round.0 <= 1 {
            return Ok((Vec::new(), Vec::new()));
        }
        let probs = student.probabilities(&rows.features, rows.n, 1.0)?;
        let classes = student.classes();
        let mut ids = Vec::new();
        let mut labels = Vec::new();
        for (i, p) in probs.chunks_exact(classes).enumerate() {
            let c = fedistill_shared::ml::model::argmax(p);
            if p[c] >= threshold {
                ids.push(i as u64);
                labels.push(c as u32);
            }
        }
        let mut x: Vec<f32> = ids.iter().flat_map(|&i| rows.row(i as usize).to_vec()).collect();
        if let Some(a) = &self.augment {
            // A salt of this node's own (the views of private rows need not match anyone's).
            let salt: [u8; 32] = fedistill_shared::crypto::Digest::of(&self.refresh_seed.to_le_bytes()).0;
            a.apply(&salt, round.0, &ids, &mut x);
        }
        info!(
            round = round.0,
            kept = labels.len(),
            unlabelled = rows.n,
            threshold,
            "unlabelled rows pseudo-labelled for the teacher refresh"
        );
        Ok((x, labels))
    }

    fn refresh_teacher(
        &self,
        round: RoundId,
        x: &[f32],
        consensus: &[f32],
        total_rounds: u64,
        student: &Model,
    ) -> anyhow::Result<()> {
        if self.refresh.epochs == 0 || round.0 >= total_rounds {
            return Ok(());
        }
        let (pseudo_x, pseudo_y) = self.pseudo_labelled(round, student)?;
        let (private_x, private_y) = if pseudo_y.is_empty() {
            (
                std::borrow::Cow::Borrowed(&self.shard.features[..]),
                std::borrow::Cow::Borrowed(&self.shard.labels[..]),
            )
        } else {
            let mut px = self.shard.features.clone();
            px.extend_from_slice(&pseudo_x);
            let mut py = self.shard.labels.clone();
            py.extend_from_slice(&pseudo_y);
            (std::borrow::Cow::Owned(px), std::borrow::Cow::Owned(py))
        };
        let data = RefreshData {
            private_x: &private_x,
            private_y: &private_y,
            public_x: x,
            consensus,
            temperature: self.last_temperature,
        };
        let loss = refresh_teacher(&self.teacher, &data, &self.refresh, self.refresh_seed ^ round.0)?;
        let path = self.workdir.join("teacher.safetensors");
        let tmp = path.with_extension("safetensors.tmp");
        self.teacher.save(&tmp)?;
        std::fs::rename(&tmp, &path).with_context(|| format!("replacing {}", path.display()))?;
        info!(
            round = round.0,
            loss = loss.unwrap_or(f32::NAN),
            "teacher refreshed from the consensus"
        );
        Ok(())
    }
}

impl Learner for ModelLearner {
    fn public_digest(&self) -> Digest {
        self.public_digest
    }

    fn public_len(&self) -> u64 {
        self.public.n as u64
    }

    fn classes(&self) -> usize {
        self.teacher.classes()
    }

    fn private_samples(&self) -> u64 {
        self.shard.n as u64
    }

    fn label(&mut self, round: RoundId, ids: &[u64], temperature: f32) -> anyhow::Result<Vec<f32>> {
        self.last_temperature = temperature;
        let x = self.teacher_rows(round, ids);
        Ok(self.teacher.probabilities(&x, ids.len(), temperature)?)
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
        let mut clock = PhaseClock::default();
        // The student distills from the public rows as they are; the teacher refreshes on them as its own
        // file would hold them (without the blocks it lacks).
        let x = self.public_rows(round, ids);
        let targets = refresh_targets(rule, consensus, self.public.num_classes);
        let teacher_x = self.absent.masked(&x, self.public.dim);
        self.refresh_teacher(round, &teacher_x, &targets, total_rounds, self.distiller.student())?;
        clock.lap("refresh");
        let classes = self.public.num_classes;
        let consensus_correct = ids
            .iter()
            .zip(consensus.chunks_exact(classes))
            .filter(|(&i, p)| fedistill_shared::ml::model::argmax(p) as u32 == self.public.labels[i as usize])
            .count();
        let consensus_accuracy = if self.public_labelled {
            consensus_correct as f64 / ids.len().max(1) as f64
        } else {
            f64::NAN
        };
        // Keep the served student; distill a candidate in place and roll back when the guard refuses it.
        let before = self.distiller.student().to_safetensors()?;
        self.distiller.distill_round(
            &x,
            ids.len(),
            &SoftTargets::Probabilities(consensus.to_vec()),
            None,
            (round.0 as usize).saturating_sub(1),
            total_rounds.max(round.0) as usize,
        )?;
        clock.lap("distill");
        let student = self.distiller.student();
        // The guard and the report see the validation rows; the test rows are measured for the final
        // reports only.
        // (One set serving as both, as in `fedistill bench`'s experiments, is measured once.)
        let same = Arc::ptr_eq(&self.validation, &self.test);
        let metrics = evaluate(student, &self.validation, None)?;
        let test_metrics = if same {
            metrics.clone()
        } else {
            evaluate(student, &self.test, None)?
        };
        clock.lap("evaluate");
        let q = QuantizedModel::from_model(student, Profile::Int8)?;
        let int8_accuracy = int8_accuracy_on(&q, classes, &self.validation)?;
        let test_int8_accuracy = if same {
            int8_accuracy
        } else {
            int8_accuracy_on(&q, classes, &self.test)?
        };
        clock.lap("quantize");
        let int8_bytes = fedistill_shared::ml::quant::export::export_bytes(&q, Some(student))?;
        clock.lap("export");
        let candidate = metric_map(&metrics)?;
        let test_candidate = metric_map(&test_metrics)?;
        let decision = (!serving.is_empty()).then(|| self.guard.judge(self.validation.n, serving, &candidate));
        let accepted = decision.as_ref().is_none_or(|d| d.accepted);
        clock.lap("guard");
        let round_dir = save_round(
            &self.workdir,
            round,
            student,
            &before,
            &int8_bytes,
            &serde_json::json!({ "validation": &metrics, "test": &test_metrics }),
            decision.as_ref(),
        )?;
        clock.lap("save");
        // The personalized student starts from the student that serves now (accepted or rolled back).
        let personalized_accuracy = match self.personalize.clone() {
            Some(p) if p.due(round.0) => {
                let out = self.personalize_now(&p, round.0, &round_dir)?;
                std::fs::copy(
                    round_dir.join("personalized-student.safetensors"),
                    self.workdir.join("personalized-student.safetensors"),
                )?;
                clock.lap("personalize");
                info!(round = round.0, accuracy = out.accuracy, "personalized student built");
                Some(out.accuracy)
            }
            _ => None,
        };
        Ok(Distilled {
            metrics: candidate,
            int8_accuracy,
            test_metrics: test_candidate,
            test_int8_accuracy,
            int8_bytes: int8_bytes.len(),
            accepted,
            guard_reason: decision.map(|d| d.reason).unwrap_or_else(|| "first student".into()),
            student_digest: Digest(self.distiller.student().weights_digest()),
            consensus_accuracy,
            phases: clock.phases,
            personalized_accuracy,
        })
    }

    fn summary(&self) -> LearnerSummary {
        LearnerSummary {
            private_samples: self.shard.n,
            local_only_accuracy: self.local_only_accuracy,
            local_only_auc: self.local_only_auc,
            teacher_params: self.teacher.params(),
            student_params: self.distiller.student().params(),
            local_only_metrics: BTreeMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedistill_shared::data::DataKind;
    use fedistill_shared::ml::ModelConfig;

    fn dataset(kind: DataKind, dim: usize) -> Dataset {
        Dataset {
            name: "t".into(),
            features: vec![0.0; 2 * dim],
            labels: vec![0, 1],
            n: 2,
            dim,
            num_classes: 10,
            kind,
            class_names: (0..10).map(|c| c.to_string()).collect(),
            targets: Vec::new(),
        }
    }

    #[test]
    fn federation_defaults_size_the_image_teacher_and_budget_the_rounds() {
        let image = |public_rows: usize| {
            federation_defaults(
                &dataset(DataKind::Image { height: 28, width: 28 }, 784),
                &[],
                public_rows,
                7,
            )
        };
        // 784-512-256-10 is 535,040 multiply-adds a row: 11,214 rows (2 private + public) fit, one more does not.
        assert_eq!(image(11_212).teacher.model, ModelConfig::Mlp { hidden: vec![512, 256] });
        assert_eq!(image(11_213).teacher.model, ModelConfig::Mlp { hidden: vec![256] });
        assert_eq!(image(21_000).teacher.model, ModelConfig::Mlp { hidden: vec![256] });
        let image = image(3_000);
        assert_eq!(image.student.model, ModelConfig::Mlp { hidden: vec![128] });
        let d = image.student.distill.expect("a distillation default");
        assert_eq!(
            (d.epochs_per_round, d.batch_size, d.lr, d.lr_final, d.seed),
            (8, 128, 3e-3, 0.1, 7)
        );
        d.validate().unwrap();
        // Tabular data keeps `fedistill local`'s architectures and distills 10 epochs a round.
        let tab = federation_defaults(&dataset(DataKind::Tabular, 3), &[], 1_000_000, 7);
        assert_eq!(tab.teacher.model, ModelConfig::Mlp { hidden: vec![64, 32] });
        let d = tab.student.distill.expect("a distillation default");
        assert_eq!((d.epochs_per_round, d.lr_final), (10, 1.0));
    }

    /// Rows of a two-block task: block A (inputs 0..3), block B (3..5), presence inputs 5 and 6; `b` holds
    /// block B's values of each row, `None` for a file without the block.
    fn two_blocks(n: usize, b: Option<f32>) -> Dataset {
        let mut features = Vec::with_capacity(n * 7);
        for i in 0..n {
            let v = i as f32 / n as f32 - 0.5;
            features.extend([v, -v, 2.0 * v]);
            match b {
                Some(b) => features.extend([b + v, b - v, 1.0, 1.0]),
                None => features.extend([0.0, 0.0, 1.0, 0.0]),
            }
        }
        Dataset {
            name: "t".into(),
            features,
            labels: (0..n as u32).map(|i| i % 2).collect(),
            n,
            dim: 7,
            num_classes: 2,
            kind: DataKind::Tabular,
            class_names: vec!["x".into(), "y".into()],
            targets: Vec::new(),
        }
    }

    /// A learner around an untrained fused teacher (the same weights for every call) whose private rows lack
    /// block B, on `public`; with `mask`, block B is masked for its teacher as `prepare` does.
    fn learner_without_block_b(public: Dataset, workdir: &Path, mask: bool) -> ModelLearner {
        let cfg = ModelConfig::Fused {
            embed: 4,
            hidden: 4,
            blocks: vec![3, 2],
            dropout: fedistill_shared::ml::model::DropRate(0.0),
        };
        let shard = two_blocks(20, None);
        let modalities = vec![
            ModalityRange {
                name: "a".into(),
                inputs: 0..3,
                indicator: 5,
            },
            ModalityRange {
                name: "b".into(),
                inputs: 3..5,
                indicator: 6,
            },
        ];
        let absent = AbsentBlocks::of_rows(&shard, &modalities);
        assert_eq!(absent.names(), ["b"]);
        let teacher = Model::new(&cfg, 7, 2, 5).expect("teacher");
        let student = Model::new(&cfg, 7, 2, 6).expect("student");
        let mut learner = ModelLearner::from_parts(LearnerParts {
            public_digest: Digest([1; 32]),
            public: Arc::new(public),
            test: Arc::new(shard.clone()),
            validation: Arc::new(shard.clone()),
            teacher: Arc::new(teacher),
            shard: Arc::new(shard),
            distiller: Distiller::new(student, default_distill(&DataKind::Tabular, 6)),
            guard: GuardConfig::default(),
            refresh: RefreshConfig {
                epochs: 2,
                batch_size: 8,
                ..RefreshConfig::default()
            },
            refresh_seed: 9,
            workdir: workdir.to_path_buf(),
            local_only_accuracy: 0.5,
            augment: None,
            unlabeled: None,
        });
        if mask {
            learner.set_absent_blocks(absent);
        }
        learner
    }

    /// A participant whose file lacks block B labels and refreshes on public rows without it: its soft
    /// labels, and its teacher after a refresh, are the same whatever the public set holds in block B. The
    /// same teacher fed block B (no mask) labels otherwise, so the check is not vacuous.
    #[test]
    fn a_node_lacking_a_block_labels_and_refreshes_on_public_rows_without_it() {
        let ids: Vec<u64> = (0..12).collect();
        let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().expect("tmp")).collect();
        let mut one = learner_without_block_b(two_blocks(12, Some(3.0)), dirs[0].path(), true);
        let mut other = learner_without_block_b(two_blocks(12, Some(-7.0)), dirs[1].path(), true);
        let labels = one.label(RoundId(1), &ids, 2.0).expect("labels");
        assert_eq!(labels, other.label(RoundId(1), &ids, 2.0).expect("labels"));
        let mut unmasked = learner_without_block_b(two_blocks(12, Some(3.0)), dirs[2].path(), false);
        let mut unmasked_other = learner_without_block_b(two_blocks(12, Some(-7.0)), dirs[3].path(), false);
        assert_ne!(
            unmasked.label(RoundId(1), &ids, 2.0).expect("labels"),
            unmasked_other.label(RoundId(1), &ids, 2.0).expect("labels"),
            "block B's values reach an unmasked teacher"
        );
        // A refresh from the same consensus leaves both masked teachers alike (and changes them).
        let before = one.teacher.weights_digest();
        let consensus: Vec<f32> = (0..12)
            .flat_map(|i| if i % 2 == 0 { [0.8, 0.2] } else { [0.3, 0.7] })
            .collect();
        for l in [&mut one, &mut other] {
            l.refresh(RoundId(1), &ids, &consensus, 3, AggregationRule::Mean, None)
                .expect("refreshed");
        }
        assert_ne!(one.teacher.weights_digest(), before, "the refresh trained the teacher");
        assert_eq!(one.teacher.weights_digest(), other.teacher.weights_digest());
        assert_eq!(
            one.label(RoundId(2), &ids, 1.0).expect("labels"),
            other.label(RoundId(2), &ids, 1.0).expect("labels")
        );
    }

    /// `n` copies of one tabular row, all labelled `label` (two classes): whatever a model predicts for the
    /// row, its accuracy here is 1 or 0.
    fn same_row(n: usize, label: u32) -> Dataset {
        Dataset {
            name: "t".into(),
            features: [0.3f32, -0.7, 1.1].repeat(n),
            labels: vec![label; n],
            n,
            dim: 3,
            num_classes: 2,
            kind: DataKind::Tabular,
            class_names: vec!["x".into(), "y".into()],
            targets: Vec::new(),
        }
    }

    /// The guard decides, and the round report's figures are measured, on the validation rows; the test
    /// rows are measured for the final reports only. The validation and test rows here are the same row
    /// under opposite labels, so the student scores 1 on one and 0 on the other: against a serving
    /// accuracy of 1, a guard on the validation rows accepts exactly when the validation accuracy is 1, which
    /// a guard on the test rows would refuse. Both orientations run, so both verdicts are seen.
    #[test]
    fn the_guard_and_the_reported_figures_use_the_validation_rows_not_the_test_rows() {
        let cfg = ModelConfig::Mlp { hidden: vec![4] };
        let public = Dataset {
            labels: (0..8).map(|i| i % 2).collect(),
            features: (0..24).map(|i| (i as f32 * 0.37).sin()).collect(),
            ..same_row(8, 0)
        };
        let ids: Vec<u64> = (0..8).collect();
        let consensus: Vec<f32> = (0..8)
            .flat_map(|i| if i % 2 == 0 { [0.9, 0.1] } else { [0.2, 0.8] })
            .collect();
        let serving = BTreeMap::from([("accuracy".to_string(), 1.0)]);
        let mut verdicts = Vec::new();
        for validation_label in [0u32, 1] {
            let dir = tempfile::tempdir().expect("tmp");
            let mut learner = ModelLearner::from_parts(LearnerParts {
                public_digest: Digest([1; 32]),
                public: Arc::new(public.clone()),
                // As many rows as the guard needs to compare (fewer are accepted unjudged).
                test: Arc::new(same_row(
                    fedistill_shared::ml::lifecycle::MIN_GUARD_ROWS,
                    1 - validation_label,
                )),
                validation: Arc::new(same_row(
                    fedistill_shared::ml::lifecycle::MIN_GUARD_ROWS,
                    validation_label,
                )),
                teacher: Arc::new(Model::new(&cfg, 3, 2, 5).expect("teacher")),
                shard: Arc::new(public.clone()),
                distiller: Distiller::new(
                    Model::new(&cfg, 3, 2, 6).expect("student"),
                    default_distill(&DataKind::Tabular, 6),
                ),
                guard: GuardConfig::new(vec!["accuracy".into()], 0.05).expect("guard"),
                refresh: RefreshConfig::default(),
                refresh_seed: 9,
                workdir: dir.path().to_path_buf(),
                local_only_accuracy: 0.5,
                augment: None,
                unlabeled: None,
            });
            let d = learner
                .distill(RoundId(2), &ids, &consensus, 3, AggregationRule::Mean, &serving)
                .expect("distilled");
            let (validation, test) = (d.metrics["accuracy"], d.test_metrics["accuracy"]);
            assert!(
                (validation == 1.0 && test == 0.0) || (validation == 0.0 && test == 1.0),
                "{validation} {test}"
            );
            assert_eq!(d.accepted, validation == 1.0, "{}", d.guard_reason);
            assert_eq!(d.int8_accuracy + d.test_int8_accuracy, 1.0);
            // The round's saved metrics carry both, by name.
            let saved: serde_json::Value = serde_json::from_slice(
                &std::fs::read(dir.path().join("round-0002").join("metrics.json")).expect("metrics.json"),
            )
            .expect("json");
            assert_eq!(saved["validation"]["accuracy"], validation);
            assert_eq!(saved["test"]["accuracy"], test);
            verdicts.push(d.accepted);
        }
        verdicts.sort_unstable();
        assert_eq!(
            verdicts,
            [false, true],
            "one orientation is accepted, the other refused"
        );
    }
}
