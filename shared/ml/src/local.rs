//! The local pipeline behind `fedistill local`: train a teacher on the private part, distill the
//! student on the public part from the teacher's soft labels (through the stage schedule of
//! [`crate::stages`]), evaluate both on the test set. Split in two halves ([`prepare_local`],
//! [`distill_local`]) so `fedistill bench stages` distills several students from one teacher.

use std::time::Instant;

use fedistill_data::{split, DataKind, Dataset, FederatedSplit, Partition, SplitConfig};
use serde::{Deserialize, Serialize};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::augment::random_shifts;
use crate::distill::{DistillConfig, InputNorm};
use crate::error::{MlError, Result};
use crate::metrics::{evaluate, Metrics};
use crate::model::{Model, ModelConfig};
use crate::progress::Progress;
use crate::stages::{distill_in_stages, StageReport, StagesConfig};
use crate::train::{train_teacher, TrainConfig};

/// A teacher config file: `[model]` (architecture) and optional `[train]` (hyper-parameters).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeacherFile {
    /// Architecture.
    pub model: ModelConfig,
    /// Training hyper-parameters (defaults per dataset kind when absent).
    pub train: Option<TrainConfig>,
}

/// A student config file: `[model]`, optional `[distill]` (stage 3) and optional `[stages]` (stages 1-2).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudentFile {
    /// Architecture.
    pub model: ModelConfig,
    /// Distillation hyper-parameters (defaults per dataset kind when absent).
    pub distill: Option<DistillConfig>,
    /// Feature alignment and gradient guidance before the KD (`StagesConfig::default()` when absent).
    pub stages: Option<StagesConfig>,
}

/// Parses a TOML config file's text.
pub fn parse_toml<T: for<'de> Deserialize<'de>>(text: &str, what: &str) -> Result<T> {
    toml::from_str(text).map_err(|e| MlError::InvalidConfig(format!("{what}: {e}")))
}

/// Everything `run_local` needs besides the dataset.
#[derive(Clone, Debug)]
pub struct LocalOptions {
    /// Teacher architecture and training.
    pub teacher: TeacherFile,
    /// Student architecture and distillation.
    pub student: StudentFile,
    /// Seed of the split, the inits and the batch orders.
    pub seed: u64,
    /// Fraction of the data held out as the test set.
    pub test_fraction: f64,
    /// Fraction used as the public transfer set (student side).
    pub public_fraction: f64,
    /// Images only: randomly shifted copies (up to 2 pixels) of each public image added to the
    /// transfer set, labelled by the teacher (0 = none).
    pub augment_copies: usize,
}

impl LocalOptions {
    /// Defaults for a dataset: images get an MLP 784-512-256 teacher and a 128-wide student, tabular
    /// data a 64-32 teacher and an 8-wide student.
    pub fn defaults_for(ds: &Dataset, seed: u64) -> LocalOptions {
        let image = matches!(ds.kind, DataKind::Image { .. });
        let (teacher, student) = if image {
            (
                ModelConfig::Mlp { hidden: vec![512, 256] },
                ModelConfig::Mlp { hidden: vec![128] },
            )
        } else {
            (
                ModelConfig::Mlp { hidden: vec![64, 32] },
                ModelConfig::Mlp { hidden: vec![8] },
            )
        };
        LocalOptions {
            teacher: TeacherFile {
                model: teacher,
                train: None,
            },
            student: StudentFile {
                model: student,
                distill: None,
                stages: None,
            },
            seed,
            test_fraction: 0.2,
            public_fraction: 0.3,
            augment_copies: if image { 4 } else { 0 },
        }
    }
}

/// The default teacher of a tabular task in modality blocks: a fused model with 32-wide embeddings and a
/// 32-wide hidden layer (`blocks` filled in).
pub const FUSED_TEACHER: ModelConfig = ModelConfig::Fused {
    embed: 32,
    hidden: 32,
    blocks: Vec::new(),
    dropout: crate::model::DropRate(crate::model::FUSED_DEFAULT_DROPOUT),
};

/// The default student of a tabular task in modality blocks: a fused model with 16-wide embeddings and a
/// 16-wide hidden layer (`blocks` filled in).
pub const FUSED_STUDENT: ModelConfig = ModelConfig::Fused {
    embed: 16,
    hidden: 16,
    blocks: Vec::new(),
    dropout: crate::model::DropRate(crate::model::FUSED_DEFAULT_DROPOUT),
};

impl LocalOptions {
    /// These options for a task in modality blocks of `blocks` inputs each (the task card's
    /// `ModalityRange::width`s, in order): the teacher and student become [`FUSED_TEACHER`] and
    /// [`FUSED_STUDENT`] with those blocks. No blocks (`[]`): the options as they are.
    pub fn with_modality_blocks(mut self, blocks: &[usize]) -> LocalOptions {
        if !blocks.is_empty() {
            self.teacher.model = FUSED_TEACHER.with_blocks(blocks);
            self.student.model = FUSED_STUDENT.with_blocks(blocks);
        }
        self
    }
}

/// Default teacher training for a dataset kind.
pub fn default_train(kind: &DataKind, seed: u64) -> TrainConfig {
    match kind {
        DataKind::Image { .. } => TrainConfig {
            epochs: 30,
            batch_size: 128,
            lr: 1e-3,
            patience: 8,
            augment_shift: 2,
            seed,
            ..TrainConfig::default()
        },
        // Series: small sets like tabular rows; normalized with one shift and scale for all steps (what
        // a convolution over time expects; `train` fits per-feature statistics for tabular data only).
        DataKind::Tabular | DataKind::Sequence { .. } => TrainConfig {
            epochs: 100,
            batch_size: 64,
            lr: 3e-3,
            weight_decay: 1e-3,
            patience: 10,
            seed,
            ..TrainConfig::default()
        },
    }
}

/// Default distillation for a dataset kind.
pub fn default_distill(kind: &DataKind, seed: u64) -> DistillConfig {
    match kind {
        DataKind::Image { .. } => DistillConfig {
            epochs_per_round: 30,
            batch_size: 64,
            lr: 2e-3,
            input_norm: InputNorm::Global,
            seed,
            ..DistillConfig::default()
        },
        DataKind::Tabular => DistillConfig {
            epochs_per_round: 60,
            batch_size: 32,
            lr: 3e-3,
            input_norm: InputNorm::PerFeature,
            seed,
            ..DistillConfig::default()
        },
        DataKind::Sequence { .. } => DistillConfig {
            epochs_per_round: 60,
            batch_size: 32,
            lr: 3e-3,
            input_norm: InputNorm::Global,
            seed,
            ..DistillConfig::default()
        },
    }
}

/// One model's part of the report: its architecture and the 12 metrics + size (flattened).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelReport {
    /// Architecture.
    pub config: ModelConfig,
    /// Evaluation on the test set.
    #[serde(flatten)]
    pub metrics: Metrics,
}

/// The JSON report of `fedistill local`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LocalReport {
    /// Dataset name.
    pub dataset: String,
    /// Seed used.
    pub seed: u64,
    /// Samples in the private (teacher) part.
    pub private_samples: usize,
    /// Samples in the public transfer set.
    pub public_samples: usize,
    /// Samples in the test set.
    pub test_samples: usize,
    /// Teacher report (agreement 1 and KL 0 by construction: it is compared with itself).
    pub teacher: ModelReport,
    /// Student report (agreement and KL against the teacher).
    pub student: ModelReport,
    /// student.params / teacher.params.
    pub param_ratio: f64,
    /// student.accuracy / teacher.accuracy.
    pub accuracy_ratio: f64,
    /// Seconds spent training the teacher.
    pub teacher_seconds: f64,
    /// Seconds spent distilling the student (all stages).
    pub distill_seconds: f64,
    /// The distillation stages in order (feature_alignment, gradient_guidance, temperature_kd), disabled
    /// ones included.
    pub stages: Vec<StageReport>,
    /// Wall-clock seconds of the whole pipeline (split, training, distillation, evaluation).
    pub seconds: f64,
}

/// The teacher half of the pipeline: the split, the trained teacher and the transfer set it labels.
pub struct LocalTeacher {
    /// The split (`participants = 1`, IID): private shard, public part, test set.
    pub split: FederatedSplit,
    /// The teacher, trained on the private shard.
    pub teacher: Model,
    /// The transfer set: the public features plus the shifted copies (images), row-major.
    pub transfer: Vec<f32>,
    /// Samples in `transfer`.
    pub transfer_n: usize,
    /// Seconds spent training the teacher.
    pub teacher_seconds: f64,
    /// Seconds of this half (split and teacher).
    pub seconds: f64,
}

/// The configurations a run uses: the files' or the dataset kind's defaults, with the run's seed.
fn resolved(ds: &Dataset, opts: &LocalOptions) -> (TrainConfig, DistillConfig, StagesConfig) {
    // The run's seed wins over any `seed` key in the files, so `--seed` alone reproduces a run.
    let mut train_cfg = opts
        .teacher
        .train
        .clone()
        .unwrap_or_else(|| default_train(&ds.kind, opts.seed));
    train_cfg.seed = opts.seed;
    let mut distill_cfg = opts
        .student
        .distill
        .clone()
        .unwrap_or_else(|| default_distill(&ds.kind, opts.seed));
    distill_cfg.seed = opts.seed;
    (train_cfg, distill_cfg, opts.student.stages.clone().unwrap_or_default())
}

/// Checks both files against the dataset (architectures, hyper-parameters, the stage schedule) before
/// anything is trained.
fn validate(ds: &Dataset, opts: &LocalOptions) -> Result<(TrainConfig, DistillConfig, StagesConfig)> {
    let (train_cfg, distill_cfg, stages) = resolved(ds, opts);
    train_cfg.validate()?;
    opts.teacher.model.validate(ds.dim, ds.num_classes)?;
    opts.student.model.validate(ds.dim, ds.num_classes)?;
    stages.validate(&opts.teacher.model, &opts.student.model, ds.dim, &distill_cfg)?;
    Ok((train_cfg, distill_cfg, stages))
}

/// Runs the pipeline on a loaded dataset.
pub fn run_local(ds: &Dataset, opts: &LocalOptions, progress: &Progress) -> Result<(LocalReport, Model, Model)> {
    let prepared = prepare_local(ds, opts, progress)?;
    let (report, student) = distill_local(ds, &prepared, opts, progress)?;
    Ok((report, prepared.teacher, student))
}

/// The teacher half: checks every configuration of `opts` (the student's too, so a bad `[stages]` fails
/// before the teacher trains), splits the dataset, trains the teacher, builds the transfer set.
pub fn prepare_local(ds: &Dataset, opts: &LocalOptions, progress: &Progress) -> Result<LocalTeacher> {
    let start = Instant::now();
    let (train_cfg, _, _) = validate(ds, opts)?;
    let fed: FederatedSplit = split(
        ds,
        &SplitConfig {
            participants: 1,
            partition: Partition::Iid,
            test_fraction: opts.test_fraction,
            public_fraction: opts.public_fraction,
            seed: opts.seed,
        },
    )
    .map_err(|e| MlError::InvalidInput(format!("split of {}: {e}", ds.name)))?;
    let private = fed
        .shards
        .first()
        .ok_or_else(|| MlError::InvalidInput("split produced no private shard".into()))?;
    let t0 = Instant::now();
    let teacher = train_teacher(&opts.teacher.model, private, &train_cfg, progress)?;
    let teacher_seconds = t0.elapsed().as_secs_f64();
    let (transfer, transfer_n) = augmented_public(&fed.public, opts.augment_copies, opts.seed);
    Ok(LocalTeacher {
        split: fed,
        teacher,
        transfer,
        transfer_n,
        teacher_seconds,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// The student half: distills `opts`' student from the prepared teacher through the stage schedule
/// ([`distill_in_stages`]) and evaluates both on the test set. `opts` must describe the same dataset and
/// teacher as the `prepare_local` call; its student, `[distill]` and `[stages]` may differ.
pub fn distill_local(
    ds: &Dataset,
    prepared: &LocalTeacher,
    opts: &LocalOptions,
    progress: &Progress,
) -> Result<(LocalReport, Model)> {
    let start = Instant::now();
    let (_, distill_cfg, stages) = validate(ds, opts)?;
    let teacher = &prepared.teacher;
    let student = Model::new(&opts.student.model, ds.dim, ds.num_classes, opts.seed.wrapping_add(1))?;
    let (px, pn) = (&prepared.transfer, prepared.transfer_n);
    let (student, stage_reports) = distill_in_stages(teacher, student, px, pn, &stages, &distill_cfg, progress)?;
    let distill_seconds = start.elapsed().as_secs_f64();

    let fed = &prepared.split;
    let private_samples = fed.shards.first().map_or(0, |s| s.n);
    let test = &fed.test;
    let teacher_probs = teacher.probabilities(&test.features, test.n, 1.0)?;
    let tm = evaluate(teacher, test, Some(&teacher_probs))?;
    let sm = evaluate(&student, test, Some(&teacher_probs))?;
    let report = LocalReport {
        dataset: ds.name.clone(),
        seed: opts.seed,
        private_samples,
        public_samples: fed.public.n,
        test_samples: test.n,
        param_ratio: sm.params as f64 / tm.params.max(1) as f64,
        accuracy_ratio: sm.accuracy / tm.accuracy,
        teacher: ModelReport {
            config: opts.teacher.model.clone(),
            metrics: tm,
        },
        student: ModelReport {
            config: opts.student.model.clone(),
            metrics: sm,
        },
        teacher_seconds: prepared.teacher_seconds,
        distill_seconds,
        stages: stage_reports,
        seconds: prepared.seconds + start.elapsed().as_secs_f64(),
    };
    Ok((report, student))
}

/// The public features followed by `copies` randomly shifted copies of each image (images only).
fn augmented_public(public: &Dataset, copies: usize, seed: u64) -> (Vec<f32>, usize) {
    let mut x = public.features.clone();
    if let DataKind::Image { height, width } = public.kind {
        if height * width == public.dim && copies > 0 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xA06_4E47);
            let mut out = vec![0f32; public.features.len()];
            for _ in 0..copies {
                random_shifts(&public.features, height, width, 2, 0.0, &mut rng, &mut out);
                x.extend_from_slice(&out);
            }
            return (x, public.n * (copies + 1));
        }
    }
    (x, public.n)
}
