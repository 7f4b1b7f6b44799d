//! The learner of a regression task (`[regression]` in the task card): the private teacher predicts the
//! standardized target, its soft labels are those values (one per public row), and the shared student is
//! fitted to the consensus with MSE or Huber, under the card's monotone and bound constraints when
//! `[regression] constraint_weight` is above zero. Every round's candidate is evaluated (MAE, RMSE, R²,
//! violation rates, float and INT8), exported as INT8 and put to the degradation guard, like the
//! classification learner's. docs/ml.md, "Regression and physical constraints".

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use serde::Deserialize;
use tracing::info;

use fedistill_shared::crypto::{Digest, RoundId};
use fedistill_shared::data::{Dataset, Regression, TaskCard};
use fedistill_shared::ml::lifecycle::{GuardConfig, REGRESSION_METRICS};
use fedistill_shared::ml::quant::model::{Profile, QuantizedModel};
use fedistill_shared::ml::regression::{
    fit_regressor, predict, regression_metrics, Constraints, RegressionConfig, RegressionLoss, RegressionMetrics,
};
use fedistill_shared::ml::{Model, ModelConfig};
use fedistill_shared::protocol::AggregationRule;

use crate::absent::AbsentBlocks;
use crate::config::ParticipantSettings;
use crate::learner::{Distilled, Learner, LearnerSummary, NodeData, PhaseClock};

/// `[regression]` in a participant's settings: how its teacher and the shared student are fitted.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegressionSettings {
    /// `mse` or `huber`.
    #[serde(default = "default_loss")]
    pub loss: String,
    /// Huber's threshold in target standard deviations.
    #[serde(default = "default_delta")]
    pub huber_delta: f32,
    /// Weight of the constraint loss on the student (0: off).
    #[serde(default = "default_constraint_weight")]
    pub constraint_weight: f32,
    /// Finite-difference step of the monotone pairs, in the card's scaled input units.
    #[serde(default = "default_step")]
    pub constraint_step: f32,
    /// Passes of the teacher over the private rows.
    #[serde(default = "default_teacher_epochs")]
    pub teacher_epochs: usize,
    /// Passes of the student over a round's public rows.
    #[serde(default = "default_round_epochs")]
    pub epochs_per_round: usize,
    /// Learning rate of both.
    #[serde(default = "default_lr")]
    pub lr: f64,
}

fn default_loss() -> String {
    "huber".into()
}
fn default_delta() -> f32 {
    1.0
}
fn default_constraint_weight() -> f32 {
    1.0
}
fn default_step() -> f32 {
    0.5
}
fn default_teacher_epochs() -> usize {
    150
}
fn default_round_epochs() -> usize {
    20
}
fn default_lr() -> f64 {
    3e-3
}

impl Default for RegressionSettings {
    fn default() -> Self {
        RegressionSettings {
            loss: default_loss(),
            huber_delta: default_delta(),
            constraint_weight: default_constraint_weight(),
            constraint_step: default_step(),
            teacher_epochs: default_teacher_epochs(),
            epochs_per_round: default_round_epochs(),
            lr: default_lr(),
        }
    }
}

impl RegressionSettings {
    /// The teacher's and the student's fits (the teacher without the constraint loss: it is the node's own
    /// model, the constraints are the federation's requirement on the shared student); refuses bad values.
    pub fn configs(&self, seed: u64) -> anyhow::Result<(RegressionConfig, RegressionConfig)> {
        let loss = match self.loss.as_str() {
            "mse" => RegressionLoss::Mse,
            "huber" => RegressionLoss::Huber {
                delta: self.huber_delta,
            },
            other => anyhow::bail!("[regression] loss = {other:?}: expected \"mse\" or \"huber\""),
        };
        let teacher = RegressionConfig {
            loss,
            epochs: self.teacher_epochs,
            batch_size: 32,
            lr: self.lr,
            constraint_weight: 0.0,
            step: self.constraint_step,
            seed,
        };
        let student = RegressionConfig {
            epochs: self.epochs_per_round,
            constraint_weight: self.constraint_weight,
            ..teacher.clone()
        };
        teacher.validate().map_err(|e| anyhow::anyhow!("[regression] {e}"))?;
        student.validate().map_err(|e| anyhow::anyhow!("[regression] {e}"))?;
        Ok((teacher, student))
    }
}

/// A regression task as a node learns it: the card's target statistics and its constraints in model
/// input space (monotone features by input index, bounds standardized).
#[derive(Debug, Clone, PartialEq)]
pub struct RegressionTask {
    /// The card's `[regression]`.
    pub spec: Regression,
    /// Its constraints where the model sees them.
    pub constraints: Constraints,
}

impl RegressionTask {
    /// The card's regression task, `None` for a classification card.
    pub fn from_card(card: &TaskCard) -> anyhow::Result<Option<RegressionTask>> {
        let Some(spec) = card.regression.clone() else {
            return Ok(None);
        };
        let monotone = spec
            .monotone
            .iter()
            .map(|m| {
                card.numeric_input(&m.feature)
                    .map(|j| (j, m.direction.sign()))
                    .with_context(|| format!("monotone feature `{}` is not a numeric input of the card", m.feature))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        // With scale = "none" the inputs are the raw values; "standard" divides by a positive deviation:
        // either way a rise of the input is a rise of the feature.
        let constraints = Constraints {
            monotone,
            min: spec.min.map(|v| spec.standardize(v)),
            max: spec.max.map(|v| spec.standardize(v)),
        };
        Ok(Some(RegressionTask { spec, constraints }))
    }
}

/// The default regression teacher and student: MLPs of 32 hidden units each. On the worked example
/// (eight inputs, a few hundred rows per plant, each plant its own mix type) a teacher this small
/// extrapolates to the other plants' mixes far better than a 64-32 one (consensus R² on the public set
/// 0.70 against 0.56, docs/domains.md), and the consensus caps the student.
pub fn default_models() -> (ModelConfig, ModelConfig) {
    (
        ModelConfig::Mlp { hidden: vec![32] },
        ModelConfig::Mlp { hidden: vec![32] },
    )
}

/// The participant's regression learner.
pub struct RegressionLearner {
    public: Arc<Dataset>,
    public_digest: Digest,
    public_labelled: bool,
    /// The node's test rows: the final reports only.
    test: Arc<Dataset>,
    /// The node's validation rows: what the guard decides on and the round report carries.
    validation: Arc<Dataset>,
    shard: Arc<Dataset>,
    teacher: Model,
    student: Model,
    task: RegressionTask,
    student_fit: RegressionConfig,
    guard: GuardConfig,
    workdir: PathBuf,
    local_only: RegressionMetrics,
    /// The modality blocks this node's file lacks: masked in the public rows its teacher labels.
    absent: AbsentBlocks,
}

impl RegressionLearner {
    /// Trains (or reloads) the private teacher on the node's rows and builds the student. Blocking.
    pub fn prepare(settings: &ParticipantSettings, data: NodeData, task: RegressionTask) -> anyhow::Result<Self> {
        anyhow::ensure!(
            data.private.is_regression()
                && data.test.is_regression()
                && data.validation.as_ref().is_none_or(Dataset::is_regression),
            "the task card is a regression but the node's rows carry no targets"
        );
        anyhow::ensure!(
            data.unlabeled.is_none(),
            "[private] unlabeled: pseudo-labelling is for classification tasks; a regression task uses labelled \
             rows only"
        );
        anyhow::ensure!(
            settings.refresh.epochs == 0,
            "[refresh] (teacher refresh from the consensus) is for classification tasks: set epochs = 0 for a \
             regression task"
        );
        anyhow::ensure!(
            settings.privacy.is_none() && settings.personalize.is_none() && settings.distill.is_none(),
            "[privacy], [personalize] and [distill] apply to classification tasks; a regression task is tuned in \
             [regression]"
        );
        let (default_teacher, default_student) = default_models();
        let teacher_cfg = settings.teacher.clone().unwrap_or(default_teacher);
        let student_cfg = settings.student.clone().unwrap_or(default_student);
        for (what, cfg) in [("[teacher]", &teacher_cfg), ("[student]", &student_cfg)] {
            anyhow::ensure!(
                matches!(cfg, ModelConfig::Mlp { .. }),
                "{what}: a regression task's models are MLPs (kind = \"mlp\")"
            );
        }
        let guard = regression_guard(settings)?;
        let reg = settings.regression.clone().unwrap_or_default();
        let seed = data.seed ^ data.index << 32;
        let (teacher_fit, student_fit) = reg.configs(seed)?;
        let shard = data.private;
        let absent = AbsentBlocks::of_rows(&shard, &data.modalities);
        let (dim, spec) = (shard.dim, &task.spec);
        let y: Vec<f32> = shard.targets.iter().map(|&t| spec.standardize(f64::from(t))).collect();
        let teacher_path = settings.workdir.join("teacher.safetensors");
        let teacher = if teacher_path.exists() {
            info!(path = %teacher_path.display(), "reloading the private teacher");
            Model::load(&teacher_cfg, dim, 1, &teacher_path)?
        } else {
            info!(
                samples = shard.n,
                "training the private regression teacher on local data"
            );
            let m = Model::new(&teacher_cfg, dim, 1, seed)?;
            m.fit_input_normalization(&shard.features, shard.n, true)?;
            let stats = fit_regressor(&m, &shard.features, &y, shard.n, &teacher_fit, &Constraints::default())?;
            info!(fit = stats.fit, "teacher fitted");
            m.save(&teacher_path)?;
            m
        };
        let test = Arc::new(data.test);
        let local_only = metrics_of(&|x, n| predict(&teacher, x, n), &test, &task, student_fit.step)?;
        info!(
            r2 = local_only.r2,
            rmse = local_only.rmse,
            violation_rate = local_only.violation_rate,
            "teacher ready (local-only baseline)"
        );
        let public = data.public;
        let student_path = settings.workdir.join("student.safetensors");
        let student = if student_path.exists() {
            Model::load(&student_cfg, dim, 1, &student_path)?
        } else {
            // Identical on every node: the same seed and the public rows' statistics.
            let m = Model::new(&student_cfg, dim, 1, settings.student_seed)?;
            m.fit_input_normalization(&public.features, public.n, true)?;
            m
        };
        let validation_rows = data.validation.as_ref().map_or(test.n, |v| v.n);
        if validation_rows < fedistill_shared::ml::lifecycle::MIN_GUARD_ROWS {
            tracing::warn!(
                rows = validation_rows,
                min = fedistill_shared::ml::lifecycle::MIN_GUARD_ROWS,
                "too few validation rows for the degradation guard to compare students: it will accept every \
                 candidate (raise [private] validation)"
            );
        }
        Ok(RegressionLearner {
            public_labelled: data.public_labelled && public.is_regression(),
            public: Arc::new(public),
            public_digest: data.public_digest,
            validation: data.validation.map_or_else(|| test.clone(), Arc::new),
            test,
            shard: Arc::new(shard),
            teacher,
            student,
            task,
            student_fit,
            guard,
            workdir: settings.workdir.clone(),
            local_only,
            absent,
        })
    }

    /// The teacher's metrics on the node's test rows (the local-only baseline).
    pub fn local_only(&self) -> RegressionMetrics {
        self.local_only
    }

    fn public_rows(&self, ids: &[u64]) -> Vec<f32> {
        ids.iter().flat_map(|&i| self.public.row(i as usize).to_vec()).collect()
    }
}

/// The guard of a regression learner: the configured metrics when they are regression metrics, `rmse`
/// when the settings keep the classification default.
fn regression_guard(settings: &ParticipantSettings) -> anyhow::Result<GuardConfig> {
    let configured = &settings.guard_metrics;
    let default = crate::config::default_guard_metrics();
    let metrics = if *configured == default {
        vec!["rmse".to_string()]
    } else {
        if let Some(m) = configured.iter().find(|m| !REGRESSION_METRICS.contains(&m.as_str())) {
            anyhow::bail!(
                "guard_metrics names {m:?}, which a regression task does not measure: use {}",
                REGRESSION_METRICS.join(", ")
            );
        }
        configured.clone()
    };
    Ok(GuardConfig::new(metrics, settings.guard_max_relative_drop)?)
}

/// `predict`'s metrics on `test` in the target's units.
fn metrics_of(
    predict: fedistill_shared::ml::regression::Predict<'_>,
    test: &Dataset,
    task: &RegressionTask,
    step: f32,
) -> anyhow::Result<RegressionMetrics> {
    let spec = &task.spec;
    Ok(regression_metrics(
        predict,
        &test.features,
        &test.targets,
        test.dim,
        &|z| spec.destandardize(z),
        &task.constraints,
        step,
    )?)
}

impl Learner for RegressionLearner {
    fn public_digest(&self) -> Digest {
        self.public_digest
    }

    fn public_len(&self) -> u64 {
        self.public.n as u64
    }

    fn classes(&self) -> usize {
        1
    }

    fn private_samples(&self) -> u64 {
        self.shard.n as u64
    }

    /// The teacher's standardized predictions (a regression has no temperature: it is ignored), on the public
    /// rows without the modality blocks this node's file lacks.
    fn label(&mut self, _round: RoundId, ids: &[u64], _temperature: f32) -> anyhow::Result<Vec<f32>> {
        let mut x = self.public_rows(ids);
        self.absent.apply(&mut x, self.public.dim);
        Ok(predict(&self.teacher, &x, ids.len())?)
    }

    fn distill(
        &mut self,
        round: RoundId,
        ids: &[u64],
        consensus: &[f32],
        _total_rounds: u64,
        _rule: AggregationRule,
        serving: &BTreeMap<String, f64>,
    ) -> anyhow::Result<Distilled> {
        let mut clock = PhaseClock::default();
        anyhow::ensure!(
            consensus.len() == ids.len(),
            "{} consensus values for {} public rows",
            consensus.len(),
            ids.len()
        );
        let x = self.public_rows(ids);
        let consensus_accuracy = if self.public_labelled {
            let spec = &self.task.spec;
            let pred: Vec<f64> = consensus.iter().map(|&z| spec.destandardize(z)).collect();
            let truth: Vec<f32> = ids.iter().map(|&i| self.public.targets[i as usize]).collect();
            fedistill_shared::ml::regression::error_metrics(&pred, &truth).2
        } else {
            f64::NAN
        };
        let before = self.student.to_safetensors()?;
        let mut fit = self.student_fit.clone();
        fit.seed ^= round.0;
        let stats = fit_regressor(&self.student, &x, consensus, ids.len(), &fit, &self.task.constraints)?;
        clock.lap("distill");
        let student = &self.student;
        // The guard and the report see the validation rows; the test rows are measured for the final
        // reports only.
        let m = metrics_of(&|x, n| predict(student, x, n), &self.validation, &self.task, fit.step)?;
        let tm = metrics_of(&|x, n| predict(student, x, n), &self.test, &self.task, fit.step)?;
        clock.lap("evaluate");
        let q = QuantizedModel::from_model(student, Profile::Int8)?;
        let qm = metrics_of(&|x, n| q.logits(x, n), &self.validation, &self.task, fit.step)?;
        let tqm = metrics_of(&|x, n| q.logits(x, n), &self.test, &self.task, fit.step)?;
        clock.lap("quantize");
        let int8_bytes = fedistill_shared::ml::quant::export::export_bytes(&q, Some(student))?;
        clock.lap("export");
        let map = |m: &RegressionMetrics, qm: &RegressionMetrics| {
            let mut out = m.to_map();
            out.extend(qm.to_map().into_iter().map(|(k, v)| (format!("int8_{k}"), v)));
            out.insert("constraint_loss".into(), f64::from(stats.constraint));
            out
        };
        let candidate = map(&m, &qm);
        let test_candidate = map(&tm, &tqm);
        let decision = (!serving.is_empty()).then(|| self.guard.judge(self.validation.n, serving, &candidate));
        let accepted = decision.as_ref().is_none_or(|d| d.accepted);
        clock.lap("guard");
        crate::learner::save_round(
            &self.workdir,
            round,
            student,
            &before,
            &int8_bytes,
            &serde_json::json!({ "validation": &candidate, "test": &test_candidate }),
            decision.as_ref(),
        )?;
        clock.lap("save");
        info!(
            round = round.0,
            validation_r2 = m.r2,
            validation_rmse = m.rmse,
            r2 = tm.r2,
            rmse = tm.rmse,
            violation_rate = tm.violation_rate,
            int8_rmse = tqm.rmse,
            "regression student distilled"
        );
        Ok(Distilled {
            metrics: candidate,
            int8_accuracy: qm.r2,
            test_metrics: test_candidate,
            test_int8_accuracy: tqm.r2,
            int8_bytes: int8_bytes.len(),
            accepted,
            guard_reason: decision.map(|d| d.reason).unwrap_or_else(|| "first student".into()),
            student_digest: Digest(self.student.weights_digest()),
            consensus_accuracy,
            phases: clock.phases,
            personalized_accuracy: None,
        })
    }

    fn summary(&self) -> LearnerSummary {
        LearnerSummary {
            private_samples: self.shard.n,
            local_only_accuracy: self.local_only.r2,
            local_only_auc: None,
            teacher_params: self.teacher.params(),
            student_params: self.student.params(),
            local_only_metrics: self.local_only.to_map(),
        }
    }
}

/// The learner a node runs, chosen by its task card: the classifier, or the regressor of a
/// `[regression]` card. Both go through the same lifecycle and driver.
pub enum NodeLearner {
    /// A classification task ([`crate::learner::ModelLearner`]).
    Classifier(Box<crate::learner::ModelLearner>),
    /// A regression task.
    Regressor(Box<RegressionLearner>),
}

impl NodeLearner {
    /// The DP-SGD cost of the teacher (classification only).
    pub fn teacher_dp(&self) -> Option<fedistill_shared::privacy::DpSgdCost> {
        match self {
            NodeLearner::Classifier(l) => l.teacher_dp(),
            NodeLearner::Regressor(_) => None,
        }
    }

    fn inner(&self) -> &dyn Learner {
        match self {
            NodeLearner::Classifier(l) => l.as_ref(),
            NodeLearner::Regressor(l) => l.as_ref(),
        }
    }

    fn inner_mut(&mut self) -> &mut dyn Learner {
        match self {
            NodeLearner::Classifier(l) => l.as_mut(),
            NodeLearner::Regressor(l) => l.as_mut(),
        }
    }
}

impl Learner for NodeLearner {
    fn public_digest(&self) -> Digest {
        self.inner().public_digest()
    }
    fn public_len(&self) -> u64 {
        self.inner().public_len()
    }
    fn classes(&self) -> usize {
        self.inner().classes()
    }
    fn private_samples(&self) -> u64 {
        self.inner().private_samples()
    }
    fn label(&mut self, round: RoundId, ids: &[u64], temperature: f32) -> anyhow::Result<Vec<f32>> {
        self.inner_mut().label(round, ids, temperature)
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
        self.inner_mut()
            .distill(round, ids, consensus, total_rounds, rule, serving)
    }
    fn summary(&self) -> LearnerSummary {
        self.inner().summary()
    }
}

#[cfg(test)]
mod tests;
