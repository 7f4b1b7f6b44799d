//! Distillation in three stages, one configurable schedule: (1) feature alignment (FitNets hints through a
//! learned projector, attention transfer between conv blocks), (2) gradient guidance (KD plus Jacobian
//! matching: the input gradients by backprop for an MLP student, directional finite differences otherwise),
//! (3) temperature KD (the [`Distiller`], unchanged).
//!
//! [`distill_in_stages`] is the one path: `fedistill local` runs it, and a participant can call it to build a
//! personalized student on its own data. Semantics (docs/ml.md, "Distillation in stages"):
//! - stage 1 runs `feature_alignment.epochs` passes of `weight * hint MSE + attention_weight * AT` alone (no
//!   KD); it trains the student's layers up to the deepest one the losses reach, plus the projector (which is
//!   dropped afterwards);
//! - stage 2 runs `gradient_guidance.epochs` passes of `KD + weight * Jacobian loss` at the temperature the
//!   KD schedule starts with;
//! - stage 3 is `[distill] epochs_per_round` passes of the Distiller's KD over its temperature schedule.
//!
//! Stages 1 and 2 use `[distill]`'s batch size, learning rate (constant), weight decay, confidence weighting
//! and seed, each with a fresh AdamW; stage 3 builds its own as it always has.

mod features;
mod jacobian;

use std::time::Instant;

use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::distill::{confidence_weights, DistillConfig, Distiller, InputNorm, SoftTargets};
use crate::error::{MlError, Result};
use crate::loss::{fused_loss, LossSpec};
use crate::model::{check_features, softmax_rows, FeatureShape, Model, ModelConfig};
use crate::optim::{AdamWParams, FusedAdamW};
use crate::progress::Progress;
use crate::train::gather_rows;

pub use features::{attention_loss, attention_map, hint_loss, Projector, ProjectorKind, MAX_PROJECTOR_WEIGHTS};
pub use jacobian::{
    directional_jacobian, input_gradient, jacobian_matching_loss, mlp_input_gradient, unit_directions, JacobianOf,
    JV_NORM_FLOOR,
};

/// Most epochs a stage accepts (as `[distill] epochs_per_round`).
const MAX_STAGE_EPOCHS: usize = 100_000;

/// Stage 1, feature alignment (TOML `[stages] feature_alignment = { ... }`). Off with `epochs = 0`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FeatureAlignment {
    /// Passes over the transfer set (0 = stage off).
    pub epochs: usize,
    /// Weight of the hint loss (MSE between the projected student layer and the teacher layer).
    pub weight: f32,
    /// Weight of attention transfer, summed over the conv-block pairs of equal side (CNN teacher and
    /// student only; 0 = off).
    pub attention_weight: f32,
    /// The teacher's hint layer: index into its hidden activations (`Model::forward_features`); default the
    /// last one.
    pub teacher_layer: Option<usize>,
    /// The student's guided layer: index into its hidden activations; default the last one.
    pub student_layer: Option<usize>,
}

impl Default for FeatureAlignment {
    /// The values a `feature_alignment` table starts from: 5 epochs of the hint loss between the last hidden
    /// layers, no attention transfer.
    fn default() -> Self {
        FeatureAlignment {
            epochs: 5,
            weight: 1.0,
            attention_weight: 0.0,
            teacher_layer: None,
            student_layer: None,
        }
    }
}

/// Stage 2, gradient guidance (TOML `[stages] gradient_guidance = { ... }`). Off with `epochs = 0`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GradientGuidance {
    /// Passes over the transfer set (0 = stage off).
    pub epochs: usize,
    /// Weight of the Jacobian-matching loss next to the KD loss (> 0 when the stage is on).
    pub weight: f32,
    /// Finite-difference step along each unit direction, in raw feature units (> 0); used only for a
    /// student that is not an MLP (an MLP student's input gradients are exact).
    pub epsilon: f32,
}

impl Default for GradientGuidance {
    /// The values a `gradient_guidance` table starts from: 5 epochs, weight 1, epsilon 0.05.
    fn default() -> Self {
        GradientGuidance {
            epochs: 5,
            weight: 1.0,
            epsilon: 0.05,
        }
    }
}

/// The schedule's first two stages (TOML `[stages]` of a student file); stage 3 is `[distill]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StagesConfig {
    /// Stage 1.
    pub feature_alignment: FeatureAlignment,
    /// Stage 2.
    pub gradient_guidance: GradientGuidance,
}

impl Default for StagesConfig {
    /// Without `[stages]` (or without one of its tables): both stages off, as the ablation `fedistill bench
    /// stages` found that neither helps on average (docs/ml.md has the table).
    fn default() -> Self {
        StagesConfig {
            feature_alignment: FeatureAlignment {
                epochs: 0,
                ..FeatureAlignment::default()
            },
            gradient_guidance: GradientGuidance {
                epochs: 0,
                ..GradientGuidance::default()
            },
        }
    }
}

/// A stage's stable name in reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageName {
    /// Stage 1.
    FeatureAlignment,
    /// Stage 2.
    GradientGuidance,
    /// Stage 3.
    TemperatureKd,
}

impl StageName {
    /// The name as reports write it.
    pub fn as_str(&self) -> &'static str {
        match self {
            StageName::FeatureAlignment => "feature_alignment",
            StageName::GradientGuidance => "gradient_guidance",
            StageName::TemperatureKd => "temperature_kd",
        }
    }
}

/// What one stage did (`stages[]` of `fedistill local`'s report).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageReport {
    /// Which stage.
    pub name: StageName,
    /// Whether it ran (epochs > 0).
    pub enabled: bool,
    /// Epochs configured (run when enabled).
    pub epochs: usize,
    /// The stage's loss weight: the hint weight (stage 1), the Jacobian weight (stage 2), `w_kd` (stage 3).
    pub weight: f32,
    /// Mean loss of the stage's last epoch (its whole objective); `null` when the stage did not run.
    pub final_loss: Option<f32>,
    /// Seconds the stage took.
    pub seconds: f64,
}

/// Which layers stage 1 aligns, as checked against the two architectures.
#[derive(Clone, Debug, PartialEq)]
struct FeaturePlan {
    teacher_layer: usize,
    student_layer: usize,
    projector: ProjectorKind,
    /// (teacher block, student block) pairs of conv blocks with the same side; empty without attention.
    attention_pairs: Vec<(usize, usize)>,
}

fn bad(msg: String) -> MlError {
    MlError::InvalidConfig(format!("[stages] {msg}"))
}

fn check_weight(what: &str, w: f32) -> Result<()> {
    if !(w.is_finite() && w >= 0.0) {
        return Err(bad(format!("{what} must be finite and >= 0, got {w}")));
    }
    Ok(())
}

fn check_epochs(what: &str, e: usize) -> Result<()> {
    if e > MAX_STAGE_EPOCHS {
        return Err(bad(format!("{what} {e} above {MAX_STAGE_EPOCHS}")));
    }
    Ok(())
}

/// `[distill]` as stage 3: everything `DistillConfig::validate` checks, except that `epochs_per_round = 0`
/// is allowed here (stage 3 off) as long as stage 2 trains the classifier.
fn check_distill(distill: &DistillConfig) -> Result<()> {
    if distill.epochs_per_round == 0 {
        let mut d = distill.clone();
        d.epochs_per_round = 1;
        d.validate()
    } else {
        distill.validate()
    }
}

/// A layer index into a model's hidden activations, or why it does not exist.
fn pick_layer(which: &str, model: &ModelConfig, shapes: &[FeatureShape], layer: Option<usize>) -> Result<usize> {
    let describe = || match model {
        ModelConfig::Mlp { hidden } => format!("mlp {hidden:?}"),
        ModelConfig::Cnn { channels, hidden } => format!("cnn channels {channels:?}, hidden {hidden}"),
        ModelConfig::Cnn1d {
            in_channels,
            channels,
            hidden,
            kernel,
        } => format!("cnn1d in_channels {in_channels}, channels {channels:?}, hidden {hidden}, kernel {kernel}"),
        ModelConfig::Fused {
            embed, hidden, blocks, ..
        } => format!("fused embed {embed}, hidden {hidden}, blocks {blocks:?}"),
    };
    if shapes.is_empty() {
        return Err(bad(format!(
            "feature_alignment: the {which} ({}) has no hidden layer to align",
            describe()
        )));
    }
    let last = shapes.len() - 1;
    match layer {
        None => Ok(last),
        Some(l) if l <= last => Ok(l),
        Some(l) => Err(bad(format!(
            "feature_alignment.{which}_layer {l} does not exist: the {which} ({}) has {} hidden layers, \
             0..={last}",
            describe(),
            shapes.len()
        ))),
    }
}

impl StagesConfig {
    /// Checks the schedule against `[distill]` (stage 3) and the two architectures on `in_dim` features:
    /// weights finite and >= 0, epsilon finite and > 0, at least one epoch and a classifier that gets
    /// trained (stage 2 or 3), hint layers that exist, a projector that can map them, attention pairs that
    /// exist. Every error names the key.
    pub fn validate(
        &self,
        teacher: &ModelConfig,
        student: &ModelConfig,
        in_dim: usize,
        distill: &DistillConfig,
    ) -> Result<()> {
        self.plan(teacher, student, in_dim, distill).map(|_| ())
    }

    fn plan(
        &self,
        teacher: &ModelConfig,
        student: &ModelConfig,
        in_dim: usize,
        distill: &DistillConfig,
    ) -> Result<Option<FeaturePlan>> {
        let (fa, gg) = (&self.feature_alignment, &self.gradient_guidance);
        check_epochs("feature_alignment.epochs", fa.epochs)?;
        check_epochs("gradient_guidance.epochs", gg.epochs)?;
        check_weight("feature_alignment.weight", fa.weight)?;
        check_weight("feature_alignment.attention_weight", fa.attention_weight)?;
        check_weight("gradient_guidance.weight", gg.weight)?;
        if !(gg.epsilon.is_finite() && gg.epsilon > 0.0) {
            return Err(bad(format!(
                "gradient_guidance.epsilon must be finite and > 0, got {}",
                gg.epsilon
            )));
        }
        check_distill(distill)?;
        let e3 = distill.epochs_per_round;
        if fa.epochs + gg.epochs + e3 == 0 {
            return Err(bad(
                "the schedule has no epochs anywhere: feature_alignment.epochs, gradient_guidance.epochs and \
                 [distill] epochs_per_round are all 0"
                    .into(),
            ));
        }
        if gg.epochs + e3 == 0 {
            return Err(bad(
                "the schedule ends after feature_alignment, so the classifier is never trained: give \
                 gradient_guidance.epochs or [distill] epochs_per_round"
                    .into(),
            ));
        }
        if gg.epochs > 0 && gg.weight == 0.0 {
            return Err(bad(
                "gradient_guidance.weight is 0, which makes stage 2 plain KD; set gradient_guidance.epochs = 0 \
                 to turn it off"
                    .into(),
            ));
        }
        if fa.epochs == 0 {
            return Ok(None);
        }
        if fa.weight == 0.0 && fa.attention_weight == 0.0 {
            return Err(bad(
                "feature_alignment.weight and attention_weight are both 0: nothing to align (set \
                 feature_alignment.epochs = 0 to turn it off)"
                    .into(),
            ));
        }
        let (ts, ss) = (teacher.feature_shapes(in_dim), student.feature_shapes(in_dim));
        let teacher_layer = pick_layer("teacher", teacher, &ts, fa.teacher_layer)?;
        let student_layer = pick_layer("student", student, &ss, fa.student_layer)?;
        let projector = ProjectorKind::between(ss[student_layer], ts[teacher_layer])?;
        let mut attention_pairs = Vec::new();
        if fa.attention_weight > 0.0 {
            for (j, s) in ss.iter().enumerate() {
                if let Some(i) = ts.iter().position(|t| same_map_size(t, s)) {
                    attention_pairs.push((i, j));
                }
            }
            if attention_pairs.is_empty() {
                return Err(bad(format!(
                    "feature_alignment.attention_weight {} needs conv blocks of the same spatial size in the \
                     teacher and the student; teacher blocks: {}; student blocks: {}",
                    fa.attention_weight,
                    spatial_list(&ts),
                    spatial_list(&ss)
                )));
            }
        }
        Ok(Some(FeaturePlan {
            teacher_layer,
            student_layer,
            projector,
            attention_pairs,
        }))
    }

    /// The reports of a schedule that did not run yet (every stage with its configuration, no loss).
    fn reports(&self, distill: &DistillConfig) -> [StageReport; 3] {
        let report = |name, epochs: usize, weight| StageReport {
            name,
            enabled: epochs > 0,
            epochs,
            weight,
            final_loss: None,
            seconds: 0.0,
        };
        [
            report(
                StageName::FeatureAlignment,
                self.feature_alignment.epochs,
                self.feature_alignment.weight,
            ),
            report(
                StageName::GradientGuidance,
                self.gradient_guidance.epochs,
                self.gradient_guidance.weight,
            ),
            report(StageName::TemperatureKd, distill.epochs_per_round, distill.w_kd),
        ]
    }
}

/// Whether two conv blocks have attention maps of the same size: 2-D maps of the same side, or 1-D blocks of
/// the same length.
fn same_map_size(a: &FeatureShape, b: &FeatureShape) -> bool {
    match (*a, *b) {
        (FeatureShape::Spatial { side: x, .. }, FeatureShape::Spatial { side: y, .. }) => x == y,
        (FeatureShape::Sequence { length: x, .. }, FeatureShape::Sequence { length: y, .. }) => x == y,
        _ => false,
    }
}

fn spatial_list(shapes: &[FeatureShape]) -> String {
    let v: Vec<String> = shapes
        .iter()
        .filter(|s| matches!(s, FeatureShape::Spatial { .. } | FeatureShape::Sequence { .. }))
        .map(|s| s.to_string())
        .collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Distills `student` from `teacher` on `n` raw samples `x` (row-major `n * in_dim`, the transfer set; no
/// labels needed) through the three stages, and returns the student with one report per stage (in stage
/// order, disabled stages included). Every input is checked before any weight changes: the two models' input
/// and class counts, the features, `distill` (stage 3; `epochs_per_round = 0` turns it off) and `stages`
/// against both architectures. The student's input standardization is fitted first, as `distill.input_norm`
/// says, so every stage sees the same inputs. Seeded by `distill.seed`: the same call gives the same student.
pub fn distill_in_stages(
    teacher: &Model,
    student: Model,
    x: &[f32],
    n: usize,
    stages: &StagesConfig,
    distill: &DistillConfig,
    progress: &Progress,
) -> Result<(Model, Vec<StageReport>)> {
    if teacher.in_dim() != student.in_dim() || teacher.classes() != student.classes() {
        return Err(MlError::InvalidInput(format!(
            "teacher ({} features, {} classes) and student ({} features, {} classes) do not match",
            teacher.in_dim(),
            teacher.classes(),
            student.in_dim(),
            student.classes()
        )));
    }
    if n == 0 {
        return Err(MlError::InvalidInput("no samples to distill on".into()));
    }
    check_features(x, n, student.in_dim())?;
    let plan = stages.plan(teacher.config(), student.config(), student.in_dim(), distill)?;
    match distill.input_norm {
        InputNorm::PerFeature => student.fit_input_normalization(x, n, true)?,
        InputNorm::Global => student.fit_input_normalization(x, n, false)?,
        InputNorm::Keep => {}
    }
    let teacher_logits = teacher.logits(x, n)?;
    let mut reports = stages.reports(distill);
    let data = Transfer {
        x,
        n,
        dim: student.in_dim(),
    };
    if let Some(plan) = &plan {
        let t0 = Instant::now();
        let fa = &stages.feature_alignment;
        progress.start("features", fa.epochs as u64);
        let loss = align_features(teacher, &student, &data, plan, fa, distill, progress)?;
        progress.finish("features", &format!("final feature loss {loss:.4}"));
        reports[0].final_loss = Some(loss);
        reports[0].seconds = t0.elapsed().as_secs_f64();
    }
    if stages.gradient_guidance.epochs > 0 {
        let t0 = Instant::now();
        let gg = &stages.gradient_guidance;
        progress.start("jacobian", gg.epochs as u64);
        let loss = guide_gradients(teacher, &student, &data, &teacher_logits, gg, distill, progress)?;
        progress.finish("jacobian", &format!("final KD + Jacobian loss {loss:.4}"));
        reports[1].final_loss = Some(loss);
        reports[1].seconds = t0.elapsed().as_secs_f64();
    }
    let mut student = student;
    if distill.epochs_per_round > 0 {
        let t0 = Instant::now();
        let mut distiller = Distiller::new(student, distill.clone());
        progress.start("student", distill.epochs_per_round as u64);
        let targets = SoftTargets::Logits(teacher_logits);
        let stats = distiller.distill_round_with_progress(x, n, &targets, None, 0, 1, progress)?;
        progress.finish(
            "student",
            &format!(
                "final KD loss {:.4} (T {} -> {})",
                stats.final_loss, stats.temperature_start, stats.temperature_end
            ),
        );
        student = distiller.into_student();
        reports[2].final_loss = Some(stats.final_loss);
        reports[2].seconds = t0.elapsed().as_secs_f64();
    }
    Ok((student, reports.to_vec()))
}

/// The transfer set: `n` raw samples of `dim` features.
struct Transfer<'a> {
    x: &'a [f32],
    n: usize,
    dim: usize,
}

impl Transfer<'_> {
    /// The sample order of one epoch.
    fn shuffled(&self, rng: &mut ChaCha8Rng) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.n).collect();
        order.shuffle(rng);
        order
    }

    /// The raw features of the samples `idx`, `[idx.len(), dim]`.
    fn batch(&self, idx: &[usize]) -> Result<Tensor> {
        Ok(Tensor::from_vec(
            gather_rows(self.x, self.dim, idx),
            (idx.len(), self.dim),
            &Device::Cpu,
        )?)
    }
}

/// One optimizer step on `loss` (its value returned); a non-finite loss stops the stage as diverged.
fn descend(opt: &mut FusedAdamW, loss: &Tensor, epoch: usize, step: usize) -> Result<f32> {
    let lv = loss.to_scalar::<f32>()?;
    if !lv.is_finite() {
        return Err(MlError::Diverged { epoch, step, loss: lv });
    }
    opt.step(&loss.backward()?)?;
    Ok(lv)
}

/// A fresh AdamW at `[distill]`'s learning rate and weight decay.
fn optimizer(vars: Vec<candle_core::Var>, distill: &DistillConfig) -> Result<FusedAdamW> {
    FusedAdamW::new(
        vars,
        AdamWParams {
            lr: distill.lr,
            weight_decay: distill.weight_decay,
            ..AdamWParams::default()
        },
    )
}

/// Seed offsets of the stages' random streams, so each draws its own numbers from `distill.seed`.
const SEED_FEATURES: u64 = 0xFEA7_0001;
const SEED_PROJECTOR: u64 = 0xFEA7_0002;
const SEED_JACOBIAN: u64 = 0x1AC0_0001;
const SEED_DIRECTIONS: u64 = 0x1AC0_0002;

/// The stage-1 objective of one batch: `weight * hint + attention_weight * sum of AT over the pairs`.
fn feature_loss(
    teacher: &Model,
    student: &Model,
    projector: &Projector,
    plan: &FeaturePlan,
    fa: &FeatureAlignment,
    xb: &Tensor,
) -> Result<Tensor> {
    let (tf, _) = teacher.forward_features(xb)?;
    let (sf, _) = student.forward_features(xb)?;
    let feature = |f: &[Tensor], i: usize| -> Result<Tensor> {
        f.get(i)
            .cloned()
            .ok_or_else(|| MlError::InvalidConfig(format!("hidden layer {i} missing from the forward pass")))
    };
    let mut loss = Tensor::zeros((), candle_core::DType::F32, &Device::Cpu)?;
    if fa.weight > 0.0 {
        let ht = feature(&tf, plan.teacher_layer)?.detach();
        let hint = hint_loss(&projector.forward(&feature(&sf, plan.student_layer)?)?, &ht)?;
        loss = loss.add(&hint.affine(fa.weight as f64, 0.0)?)?;
    }
    for &(i, j) in &plan.attention_pairs {
        let at = attention_loss(&feature(&sf, j)?, &feature(&tf, i)?.detach())?;
        loss = loss.add(&at.affine(fa.attention_weight as f64, 0.0)?)?;
    }
    Ok(loss)
}

/// Stage 1: trains the student's layers up to the deepest aligned one, and the projector, on the feature
/// loss alone; returns the mean loss of the last epoch.
fn align_features(
    teacher: &Model,
    student: &Model,
    data: &Transfer<'_>,
    plan: &FeaturePlan,
    fa: &FeatureAlignment,
    distill: &DistillConfig,
    progress: &Progress,
) -> Result<f32> {
    let projector = Projector::new(plan.projector, distill.seed ^ SEED_PROJECTOR)?;
    let mut vars: Vec<candle_core::Var> = student.trainable_vars().into_iter().map(|(_, v)| v).collect();
    vars.extend(projector.vars());
    // Parameters the loss does not reach get no gradient, and AdamW leaves them alone.
    let mut opt = optimizer(vars, distill)?;
    let mut rng = ChaCha8Rng::seed_from_u64(distill.seed ^ SEED_FEATURES);
    let mut last = f32::NAN;
    for epoch in 0..fa.epochs {
        let (mut sum, mut steps) = (0f64, 0usize);
        for (step, idx) in data.shuffled(&mut rng).chunks(distill.batch_size).enumerate() {
            let xb = data.batch(idx)?;
            let loss = feature_loss(teacher, student, &projector, plan, fa, &xb)?;
            let lv = descend(&mut opt, &loss, epoch, step)?;
            sum += lv as f64;
            steps += 1;
        }
        last = (sum / steps.max(1) as f64) as f32;
        progress.advance(
            "features",
            epoch as u64 + 1,
            fa.epochs as u64,
            &format!("feature loss {last:.4}"),
        );
    }
    Ok(last)
}

/// Stage 2: KD at the schedule's first temperature plus `weight` times the Jacobian-matching loss; returns the
/// mean loss of the last epoch. An MLP student matches the teacher's input gradients of its top class's
/// probability exactly (backprop); any other student matches directional finite differences along fresh
/// random directions every step (`epsilon`).
fn guide_gradients(
    teacher: &Model,
    student: &Model,
    data: &Transfer<'_>,
    teacher_logits: &[f32],
    gg: &GradientGuidance,
    distill: &DistillConfig,
    progress: &Progress,
) -> Result<f32> {
    let classes = student.classes();
    let t = distill.schedule.at(0.0);
    let of = JacobianOf::Softmax { temperature: t };
    let exact = student.mlp_layers().is_some();
    let pt = softmax_rows(teacher_logits, classes, t);
    let weights = confidence_weights(&softmax_rows(teacher_logits, classes, 1.0), classes, distill.confidence);
    let vars = student.trainable_vars().into_iter().map(|(_, v)| v).collect();
    let mut opt = optimizer(vars, distill)?;
    let mut rng = ChaCha8Rng::seed_from_u64(distill.seed ^ SEED_JACOBIAN);
    let mut dir_rng = ChaCha8Rng::seed_from_u64(distill.seed ^ SEED_DIRECTIONS);
    let mut last = f32::NAN;
    for epoch in 0..gg.epochs {
        let (mut sum, mut steps) = (0f64, 0usize);
        for (step, idx) in data.shuffled(&mut rng).chunks(distill.batch_size).enumerate() {
            let xb = data.batch(idx)?;
            let b = idx.len();
            let (logits, js, jt) = if exact {
                let u = jacobian::top_class_onehot(teacher_logits, classes, idx)?;
                let jt = input_gradient(teacher, &xb, &u, of)?;
                let js = mlp_input_gradient(student, &xb, &u, of)?
                    .ok_or_else(|| MlError::InvalidConfig("the student stopped being an MLP".into()))?;
                (student.forward(&xb)?, js, jt)
            } else {
                let v = jacobian::directions_tensor(&mut dir_rng, b, data.dim)?;
                let jt = directional_jacobian(teacher, &xb, &v, gg.epsilon, of)?.detach();
                // One student forward over [x + eps v; x - eps v; x]: the two derivative points and the KD logits.
                let out = student.forward(&Tensor::cat(&[&jacobian::perturbed(&xb, &v, gg.epsilon)?, &xb], 0)?)?;
                let js = jacobian::difference(&out.narrow(0, 0, b)?, &out.narrow(0, b, b)?, gg.epsilon, of)?;
                (out.narrow(0, 2 * b, b)?, js, jt)
            };
            let spec = LossSpec {
                classes,
                teacher_probs: gather_rows(&pt, classes, idx),
                weights: idx.iter().map(|&i| weights[i]).collect(),
                hard: Vec::new(),
                temperature: t,
                w_kd: distill.w_kd,
                w_ce: 0.0,
            };
            let kd = fused_loss(&logits, spec)?;
            let loss = kd.add(&jacobian_matching_loss(&js, &jt)?.affine(gg.weight as f64, 0.0)?)?;
            let lv = descend(&mut opt, &loss, epoch, step)?;
            sum += lv as f64;
            steps += 1;
        }
        last = (sum / steps.max(1) as f64) as f32;
        progress.advance(
            "jacobian",
            epoch as u64 + 1,
            gg.epochs as u64,
            &format!("KD + Jacobian loss {last:.4} T {t:.2}"),
        );
    }
    Ok(last)
}

#[cfg(test)]
mod tests;
