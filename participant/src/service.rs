//! The participant service: a real node from its settings file. It loads the node's data, starts its
//! status page, prepares the [`ModelLearner`] (trains or reloads the private teacher) on a blocking thread,
//! opens the [`RoundLifecycle`] and the log [`Witness`] in the work directory, and runs the [`Driver`]
//! until the federation finishes; then it writes `result.json`. Private data, teacher and student weights
//! never leave this process; only signed soft labels, reports and cosignatures do.

use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{info, Instrument};

use fedistill_shared::crypto::Digest;
use fedistill_shared::ledger::LogVerifier;

use crate::config::{DataSource, ParticipantSettings};
use crate::driver::{Driver, DriverOptions};
use crate::learner::{Learner, ModelLearner, NodeData};
use crate::lifecycle::{write_json, RoundLifecycle, RoundRecord};
use crate::regression::{NodeLearner, RegressionLearner, RegressionTask};
use crate::transport::Kit;
use crate::witness::Witness;

/// What `result.json` holds when the federation finished.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ParticipantResult {
    /// Participant id.
    pub participant: String,
    /// Private training samples.
    pub private_samples: usize,
    /// Test accuracy of the private teacher (the local-only baseline).
    pub local_only_accuracy: f64,
    /// Teacher parameters.
    pub teacher_params: usize,
    /// Student parameters.
    pub student_params: usize,
    /// Test accuracy of the accepted (served) student.
    pub student_accuracy: f64,
    /// Test accuracy of the accepted student's INT8 version.
    pub int8_accuracy: f64,
    /// ROC AUC of the accepted (served) student on the same rows (absent when not defined there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub student_auc: Option<f64>,
    /// ROC AUC of the private teacher alone (absent when not defined there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_only_auc: Option<f64>,
    /// Size in bytes of the exported INT8 student.
    pub int8_bytes: usize,
    /// Regression tasks: the served student's metrics by name (`r2`, `rmse`, `mae`, `violation_rate`,
    /// `bound_violation_rate`, their `int8_` versions, `constraint_loss`). For a regression task the
    /// `*_accuracy` fields above hold R², the task's score.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub student_metrics: std::collections::BTreeMap<String, f64>,
    /// Regression tasks: the private teacher's metrics on the same rows (the local-only baseline).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub local_only_metrics: std::collections::BTreeMap<String, f64>,
    /// Rounds this process took part in.
    pub rounds: Vec<RoundRecord>,
    /// Checkpoints cosigned.
    pub cosigned: u64,
    /// What DP-SGD training of the teacher cost (`sampling_rate`, `noise_multiplier`, `steps`, `delta`,
    /// `epsilon`); absent when the teacher was not DP-trained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher_dp: Option<fedistill_shared::privacy::DpSgdCost>,
    /// Cumulative epsilon spent (teacher and released rounds composed), at the configured delta; absent
    /// without `[privacy]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dp_epsilon_total: Option<f64>,
}

/// Opens the witness state of `kit`'s participant in `workdir` (the coordinator's log key from the kit).
pub fn open_witness(kit: &Kit, workdir: &Path) -> anyhow::Result<Witness> {
    let log = LogVerifier {
        origin: format!("fedistill/{}", kit.federation().as_str()),
        key: ed25519_dalek::VerifyingKey::from_bytes(&kit.coordinator_key.to_bytes())
            .context("the kit's coordinator key is not a valid ed25519 key")?,
    };
    let name = format!("fedistill-witness/{}", kit.participant());
    Ok(Witness::open(workdir, &name, kit.signing.to_dalek(), log)?)
}

/// Runs the participant until the federation finishes or `cancel` fires.
pub async fn run(settings: ParticipantSettings, cancel: CancellationToken) -> anyhow::Result<ParticipantResult> {
    let kit =
        Kit::load(&settings.kit).with_context(|| format!("loading the startup kit {}", settings.kit.display()))?;
    std::fs::create_dir_all(&settings.workdir)
        .with_context(|| format!("creating the work directory {}", settings.workdir.display()))?;
    let me = kit.participant().clone();
    info!(participant = %me, federation = %kit.federation(), "participant starting");

    // This node's data: its own files against the federation's task card (checked with the coordinator,
    // the public set fetched if needed), or its shard of a catalog split.
    let (data, task, regression) = match &settings.source {
        DataSource::Own(own) => {
            let (card, public) =
                crate::owndata::prepare(&kit, own, &settings.workdir, settings.max_frame_bytes, &cancel).await?;
            let digest = Digest(card.digest());
            let regression = RegressionTask::from_card(&card)?;
            let own = own.clone();
            let data = tokio::task::spawn_blocking(move || crate::owndata::load(&own, &card, &public)).await??;
            (data, Some(digest), regression)
        }
        DataSource::Catalog { shard, data } => {
            let (data, shard) = (data.clone(), *shard);
            let split = tokio::task::spawn_blocking(move || {
                let seed = data.seed;
                NodeData::from_split(data.load_split()?, shard, seed)
            })
            .await??;
            (split, None, None)
        }
    };
    anyhow::ensure!(
        regression.is_some() || settings.regression.is_none(),
        "[regression] settings apply to a regression task card ([regression] in the card); this task classifies"
    );
    // The read-only status page (`status = ...`, participant/src/console.rs).
    crate::console::spawn(&settings, me.as_str(), data.public.num_classes, &cancel).await?;
    let learner = {
        let settings = settings.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<NodeLearner> {
            Ok(match regression {
                Some(task) => NodeLearner::Regressor(Box::new(RegressionLearner::prepare(&settings, data, task)?)),
                None => NodeLearner::Classifier(Box::new(ModelLearner::prepare(&settings, data)?)),
            })
        })
        .await??
    };
    let teacher_dp = learner.teacher_dp();
    let lifecycle = RoundLifecycle::open(
        learner,
        &settings.workdir,
        settings.encoding,
        settings.privacy.as_ref(),
        teacher_dp,
    )?;
    let witness = open_witness(&kit, &settings.workdir)?;
    let opts = DriverOptions {
        max_frame_bytes: settings.max_frame_bytes,
        task,
    };
    let lifecycle = Driver::new(kit, lifecycle, witness, &opts, None).run(&cancel).await?;
    let summary = lifecycle.learner().summary();
    let state = lifecycle.state();
    // The final figures are the serving student's on the test rows (the guard and the round reports saw
    // the validation rows).
    let tested = state.serving_test_metrics();
    let result = ParticipantResult {
        participant: me.to_string(),
        private_samples: summary.private_samples,
        local_only_accuracy: summary.local_only_accuracy,
        teacher_params: summary.teacher_params,
        student_params: summary.student_params,
        student_accuracy: tested
            .get("accuracy")
            .or_else(|| tested.get("r2"))
            .copied()
            .unwrap_or(0.0),
        int8_accuracy: state.accepted_int8_accuracy,
        student_auc: tested.get("roc_auc").copied().filter(|a| a.is_finite()),
        local_only_auc: summary.local_only_auc,
        int8_bytes: state.accepted_int8_bytes,
        student_metrics: if summary.local_only_metrics.is_empty() {
            Default::default()
        } else {
            tested.clone()
        },
        local_only_metrics: summary.local_only_metrics.clone(),
        rounds: state.rounds.clone(),
        cosigned: state.cosigned,
        teacher_dp: lifecycle.privacy().and_then(|p| p.teacher_cost()),
        dp_epsilon_total: lifecycle.privacy().map(|p| p.epsilon_spent()),
    };
    lifecycle.save()?;
    write_json(&settings.workdir.join("result.json"), &result)?;
    if cancel.is_cancelled() {
        info!(
            rounds = result.rounds.len(),
            "stopped on request before the federation finished; state saved, a restart resumes"
        );
    } else {
        info!(
            student_accuracy = result.student_accuracy,
            int8_accuracy = result.int8_accuracy,
            "federation finished"
        );
    }
    Ok(result)
}

/// Loads settings from a file and runs until done, SIGINT (Ctrl-C) or SIGTERM.
pub async fn run_from_file(path: &Path) -> anyhow::Result<ParticipantResult> {
    let settings = ParticipantSettings::load(path)?;
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        if let Ok(signal) = fedistill_transport::signal::stop_requested().await {
            info!("{signal}: stopping");
            c.cancel();
        }
    });
    // Every log line of this process carries the participant's name.
    let name = Kit::load(&settings.kit)
        .map(|k| k.participant().to_string())
        .unwrap_or_else(|_| "unknown".into());
    run(settings, cancel)
        .instrument(tracing::info_span!("participant", participant = %name))
        .await
}
