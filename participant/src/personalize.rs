//! The personalized student (issue 18, `[personalize]`): after a round, a copy of the shared student is
//! aligned to this node's own teacher on this node's own private rows, through the three-stage schedule of
//! `fedistill_ml::stages`. It never leaves the node; the shared student stays the consensus-distilled one,
//! identical everywhere. Its test accuracy is reported next to the shared student's.

use std::path::Path;

use fedistill_shared::data::Dataset;
use fedistill_shared::ml::distill::{DistillConfig, InputNorm};
use fedistill_shared::ml::stages::{distill_in_stages, StageReport, StagesConfig};
use fedistill_shared::ml::{evaluate, Model, Progress};
use serde::{Deserialize, Serialize};

/// Most rounds between two personalizations.
const MAX_EVERY: u64 = 1_000_000;
/// Most stage-3 epochs on the private rows.
const MAX_EPOCHS: usize = 10_000;

/// `[personalize]` of a participant config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PersonalizeConfig {
    /// Personalize after every `every`-th round this node distils (1 = every round).
    pub every: u64,
    /// Stage-3 epochs (temperature KD from this node's teacher) over the private rows.
    pub epochs: usize,
    /// Stages 1 and 2 (the same tables as a student file's `[stages]`); absent: the schedule's defaults.
    pub stages: StagesConfig,
}

impl Default for PersonalizeConfig {
    fn default() -> Self {
        PersonalizeConfig {
            every: 1,
            epochs: 10,
            stages: StagesConfig::default(),
        }
    }
}

impl PersonalizeConfig {
    /// Checks the values that do not depend on the models (the stages are checked against both
    /// architectures when the learner is built).
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (1..=MAX_EVERY).contains(&self.every),
            "[personalize] every = {} must be between 1 and {MAX_EVERY} (rounds between two personalized students)",
            self.every
        );
        anyhow::ensure!(
            self.epochs <= MAX_EPOCHS,
            "[personalize] epochs = {} is more than {MAX_EPOCHS}",
            self.epochs
        );
        let any_stage =
            self.epochs > 0 || self.stages.feature_alignment.epochs > 0 || self.stages.gradient_guidance.epochs > 0;
        anyhow::ensure!(
            any_stage,
            "[personalize] trains nothing: epochs = 0 and both [personalize.stages] are off; drop [personalize] instead"
        );
        Ok(())
    }

    /// Whether round `round` gets a personalized student.
    pub fn due(&self, round: u64) -> bool {
        self.every > 0 && round.is_multiple_of(self.every)
    }

    /// The distillation settings of the personalization: the shared student's, with this section's epochs,
    /// its standardization kept (the copy starts from the shared student's weights) and a per-round seed.
    pub fn distill_config(&self, shared: &DistillConfig, round: u64) -> DistillConfig {
        DistillConfig {
            epochs_per_round: self.epochs,
            input_norm: InputNorm::Keep,
            seed: shared.seed ^ round.rotate_left(17) ^ 0x5045_5253,
            ..shared.clone()
        }
    }

    /// Checks the stages against the two architectures, once, before any round.
    pub fn check_models(&self, teacher: &Model, student: &Model, shared: &DistillConfig) -> anyhow::Result<()> {
        self.stages
            .validate(
                teacher.config(),
                student.config(),
                student.in_dim(),
                &self.distill_config(shared, 0),
            )
            .map_err(|e| anyhow::anyhow!("[personalize.stages] {e}"))
    }
}

/// What one personalization produced.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Personalized {
    /// Test accuracy of the personalized student (this node's test rows, as the shared student's).
    pub accuracy: f64,
    /// One report per stage.
    pub stages: Vec<StageReport>,
}

/// Builds the personalized student from `shared` (copied, never changed) and saves it as
/// `dir/personalized-student.safetensors`, with its stage reports in `personalized.json`.
/// `(teacher, shared)` are this node's teacher and the shared student; `(private, test)` its private training
/// rows and its test rows.
pub fn personalize(
    cfg: &PersonalizeConfig,
    (teacher, shared): (&Model, &Model),
    shared_distill: &DistillConfig,
    (private, test): (&Dataset, &Dataset),
    round: u64,
    dir: &Path,
) -> anyhow::Result<Personalized> {
    let copy = Model::from_safetensors(
        shared.config(),
        shared.in_dim(),
        shared.classes(),
        &shared.to_safetensors()?,
    )?;
    let distill = cfg.distill_config(shared_distill, round);
    let progress = Progress::with_mode(fedistill_shared::ml::ProgressMode::Hidden);
    let (student, stages) = distill_in_stages(
        teacher,
        copy,
        &private.features,
        private.n,
        &cfg.stages,
        &distill,
        &progress,
    )?;
    let accuracy = evaluate(&student, test, None)?.accuracy;
    student.save(&dir.join("personalized-student.safetensors"))?;
    let out = Personalized { accuracy, stages };
    std::fs::write(dir.join("personalized.json"), serde_json::to_vec_pretty(&out)?)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_sections_are_refused_with_the_key_named() {
        let every0 = PersonalizeConfig {
            every: 0,
            ..PersonalizeConfig::default()
        };
        assert!(every0.validate().unwrap_err().to_string().contains("every = 0"));
        let nothing = PersonalizeConfig {
            epochs: 0,
            ..PersonalizeConfig::default()
        };
        assert!(nothing.validate().unwrap_err().to_string().contains("trains nothing"));
        assert!(PersonalizeConfig::default().validate().is_ok());
    }

    /// A hint layer the teacher does not have is refused when the learner is built, before any round, naming
    /// the section and the key; a layer that exists passes.
    #[test]
    fn a_hint_layer_that_does_not_exist_is_refused_naming_the_section() {
        let mlp = |hidden: Vec<usize>| fedistill_shared::ml::ModelConfig::Mlp { hidden };
        let teacher = Model::new(&mlp(vec![16, 8]), 6, 3, 1).expect("a teacher");
        let student = Model::new(&mlp(vec![4]), 6, 3, 2).expect("a student");
        let with_layer = |layer| {
            let mut c = PersonalizeConfig::default();
            c.stages.feature_alignment.epochs = 1;
            c.stages.feature_alignment.teacher_layer = Some(layer);
            c
        };
        let shared = DistillConfig::default();
        let e = with_layer(99)
            .check_models(&teacher, &student, &shared)
            .expect_err("layer 99 of a two-layer teacher")
            .to_string();
        assert!(
            e.starts_with("[personalize.stages]") && e.contains("teacher_layer 99 does not exist"),
            "{e}"
        );
        assert!(with_layer(1).check_models(&teacher, &student, &shared).is_ok());
    }

    #[test]
    fn due_every_nth_round_and_the_seed_moves_with_the_round() {
        let c = PersonalizeConfig {
            every: 3,
            ..PersonalizeConfig::default()
        };
        assert_eq!((1..=9).filter(|&r| c.due(r)).collect::<Vec<_>>(), vec![3, 6, 9]);
        let shared = DistillConfig::default();
        let (a, b) = (c.distill_config(&shared, 3), c.distill_config(&shared, 6));
        assert_ne!(a.seed, b.seed);
        assert_eq!(a.input_norm, InputNorm::Keep);
        assert_eq!(a.epochs_per_round, c.epochs);
    }
}
