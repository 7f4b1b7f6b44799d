//! The local pipeline behind `fedistill local`: train a teacher on the private part, distill the
//! student on the public part from the teacher's soft labels, evaluate both on the test set.

use std::time::Instant;

use fedistill_data::{split, DataKind, Dataset, FederatedSplit, Partition, SplitConfig};
use serde::{Deserialize, Serialize};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::augment::random_shifts;
use crate::distill::{DistillConfig, Distiller, InputNorm, SoftTargets};
use crate::error::{MlError, Result};
use crate::metrics::{evaluate, Metrics};
use crate::model::{Model, ModelConfig};
use crate::progress::Progress;
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

/// A student config file: `[model]` and optional `[distill]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudentFile {
    /// Architecture.
    pub model: ModelConfig,
    /// Distillation hyper-parameters (defaults per dataset kind when absent).
    pub distill: Option<DistillConfig>,
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
            },
            seed,
            test_fraction: 0.2,
            public_fraction: 0.3,
            augment_copies: if image { 4 } else { 0 },
        }
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
        DataKind::Tabular => TrainConfig {
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
    /// Seconds spent distilling the student.
    pub distill_seconds: f64,
    /// Wall-clock seconds of the whole pipeline (split, training, distillation, evaluation).
    pub seconds: f64,
}

/// Runs the pipeline on a loaded dataset.
pub fn run_local(ds: &Dataset, opts: &LocalOptions, progress: &Progress) -> Result<(LocalReport, Model, Model)> {
    let start = Instant::now();
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
    train_cfg.validate()?;
    distill_cfg.validate()?;
    opts.teacher.model.validate(ds.dim, ds.num_classes)?;
    opts.student.model.validate(ds.dim, ds.num_classes)?;
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

    let t1 = Instant::now();
    let public = &fed.public;
    let (px, pn) = augmented_public(public, opts.augment_copies, opts.seed);
    let targets = SoftTargets::from_teacher(&teacher, &px, pn)?;
    let student = Model::new(&opts.student.model, ds.dim, ds.num_classes, opts.seed.wrapping_add(1))?;
    let mut distiller = Distiller::new(student, distill_cfg.clone());
    progress.start("student", distill_cfg.epochs_per_round as u64);
    let stats = distiller.distill_round_with_progress(&px, pn, &targets, None, 0, 1, progress)?;
    progress.finish(
        "student",
        &format!(
            "final KD loss {:.4} (T {} -> {})",
            stats.final_loss, stats.temperature_start, stats.temperature_end
        ),
    );
    let student = distiller.into_student();
    let distill_seconds = t1.elapsed().as_secs_f64();

    let test = &fed.test;
    let teacher_probs = teacher.probabilities(&test.features, test.n, 1.0)?;
    let tm = evaluate(&teacher, test, Some(&teacher_probs))?;
    let sm = evaluate(&student, test, Some(&teacher_probs))?;
    let report = LocalReport {
        dataset: ds.name.clone(),
        seed: opts.seed,
        private_samples: private.n,
        public_samples: public.n,
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
        teacher_seconds,
        distill_seconds,
        seconds: start.elapsed().as_secs_f64(),
    };
    Ok((report, teacher, student))
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
