// Over 800 lines: the async driver and its round handlers read together until the learner seam (issue #17).
//! The participant service: a tokio driver around the sans-IO participant session.
//!
//! It trains (or reloads) the private teacher, dials the coordinator with capped backoff, and for every
//! round labels the requested public samples, verifies the aggregate, witnesses the log checkpoint,
//! distills the shared student, quantizes it to INT8, evaluates both, applies the degradation guard and
//! reports. Training, labelling and evaluation run on blocking threads, never on the executor. Private
//! data, teacher and student weights never leave this process; only signed soft labels, reports and
//! cosignatures do.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Mutex};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn, Instrument};

use fedistill_shared::crypto::{Digest, ReplayGuard, RoundId, Signed, SignedMessage, Signer};
use fedistill_shared::data::{Dataset, FederatedSplit};
use fedistill_shared::ledger::{LogVerifier, SignedCheckpoint};
use fedistill_shared::ml::codistill::{refresh_teacher, RefreshData};
use fedistill_shared::ml::distill::{DistillConfig, Distiller, SoftTargets};
use fedistill_shared::ml::lifecycle::{metric_map, GuardConfig};
use fedistill_shared::ml::local::{default_distill, default_train, LocalOptions};
use fedistill_shared::ml::quant::model::{Profile, QuantizedModel};
use fedistill_shared::ml::{evaluate, train_teacher, Model, Progress};
use fedistill_shared::protocol::{softlabels, ParticipantOutput, ParticipantSession};
use fedistill_shared::wire::messages::{
    RejectCode, Reply, RoundReport, ToCoordinator, ToParticipant, KIND_REPLY, KIND_TO_COORDINATOR, KIND_TO_PARTICIPANT,
    PROTOCOL_VERSION,
};
use fedistill_shared::wire::{recv_message, send_message};

use crate::config::ParticipantSettings;
use crate::transport::{connect_with_backoff, Kit};
use crate::witness::Witness;

/// One round as this participant saw it (a line of `rounds.jsonl`, and part of `result.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoundRecord {
    /// Round number.
    pub round: u64,
    /// Soft-label payload bytes sent.
    pub bytes_up: u64,
    /// Aggregate payload bytes received.
    pub bytes_down: u64,
    /// Test accuracy of this round's distilled student (f32).
    pub student_accuracy: f64,
    /// Test accuracy of its INT8 version.
    pub int8_accuracy: f64,
    /// Agreement of the aggregate with the true labels of the round's public samples (for reporting only;
    /// the labels are never used for training).
    pub consensus_accuracy: f64,
    /// Whether the guard accepted the candidate.
    pub guard_accepted: bool,
    /// Seconds from receiving the round opening to sending the report.
    pub seconds: f64,
    /// Contributors of the round.
    pub contributors: usize,
}

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
    /// Size in bytes of the exported INT8 student.
    pub int8_bytes: usize,
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

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SessionState {
    last_done: u64,
    seq: u64,
    accepted_metrics: BTreeMap<String, f64>,
    accepted_int8_accuracy: f64,
    accepted_int8_bytes: usize,
    rounds: Vec<RoundRecord>,
    cosigned: u64,
}

struct Node {
    settings: ParticipantSettings,
    kit: Kit,
    public: Dataset,
    public_digest: Digest,
    test: Dataset,
    teacher: Arc<Model>,
    /// The private shard (kept for the teacher refresh of `[refresh]`).
    shard: Arc<Dataset>,
    /// Temperature of the last soft labels released (the consensus of that round is at it).
    last_temperature: f32,
    distiller: Arc<std::sync::Mutex<Distiller>>,
    guard: GuardConfig,
    state: SessionState,
    witness: Witness,
    replay: ReplayGuard,
    local_only_accuracy: f64,
    private_samples: usize,
    round_started: BTreeMap<u64, (Instant, u64)>,
    /// DP mechanism, accountant and budget (docs/privacy.md); None when `[privacy]` is off.
    privacy: Option<fedistill_shared::privacy::ParticipantPrivacy>,
}

/// Runs the participant until the federation finishes or `cancel` fires.
pub async fn run(settings: ParticipantSettings, cancel: CancellationToken) -> anyhow::Result<ParticipantResult> {
    let kit =
        Kit::load(&settings.kit).with_context(|| format!("loading the startup kit {}", settings.kit.display()))?;
    std::fs::create_dir_all(&settings.workdir)
        .with_context(|| format!("creating the work directory {}", settings.workdir.display()))?;
    let me = kit.participant().clone();
    info!(participant = %me, federation = %kit.federation(), "participant starting");

    let data = settings.data.clone();
    let split: FederatedSplit = tokio::task::spawn_blocking(move || data.load_split()).await??;
    let shard = split
        .shards
        .get(settings.shard)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("shard {} is not in the split", settings.shard))?;
    let public = split.public;
    let test = split.test;
    let public_digest = Digest(split.public_digest);
    let private_samples = shard.n;
    // The read-only status page (`status = ...`, participant/src/console.rs).
    crate::console::spawn(&settings, me.as_str(), shard.num_classes, &cancel).await?;

    let defaults = LocalOptions::defaults_for(&shard, settings.data.seed);
    let teacher_cfg = settings.teacher.clone().unwrap_or(defaults.teacher.model.clone());
    let student_cfg = settings.student.clone().unwrap_or(defaults.student.model.clone());
    let train_cfg = settings
        .train
        .clone()
        .unwrap_or_else(|| default_train(&shard.kind, settings.data.seed + settings.shard as u64));
    let distill_cfg: DistillConfig = settings.distill.clone().unwrap_or_else(|| {
        let mut d = default_distill(&shard.kind, settings.student_seed);
        d.epochs_per_round = 10;
        d
    });

    let teacher_path = settings.workdir.join("teacher.safetensors");
    let (dim, classes) = (shard.dim, shard.num_classes);
    // DP-SGD of the teacher ([privacy.teacher], docs/privacy.md): its cost is known before training and
    // refused at start when it alone exceeds the budget.
    let dp_teacher = match &settings.privacy {
        Some(p) => match p.teacher {
            Some(t) => {
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
        },
        None => None,
    };
    let dp_record_path = settings.workdir.join(TEACHER_DP_FILE);
    let (teacher, local_only_accuracy, teacher_cost) = {
        let teacher_cfg = teacher_cfg.clone();
        let path = teacher_path.clone();
        let shard = shard.clone();
        let test = test.clone();
        let public = public.clone();
        let budget = settings.privacy.map(|p| p.budget_epsilon);
        type Trained = (Model, f64, Option<fedistill_shared::privacy::DpSgdCost>);
        tokio::task::spawn_blocking(move || -> anyhow::Result<Trained> {
            let progress = Progress::with_mode(fedistill_shared::ml::ProgressMode::Lines);
            let (m, cost) = if path.exists() {
                info!(path = %path.display(), "reloading the private teacher");
                let m = Model::load(&teacher_cfg, dim, classes, &path)?;
                // A reloaded teacher costs what its training cost (recorded beside it), not what the
                // current settings would cost; one trained without DP-SGD cannot serve a DP-SGD config.
                let cost = match &dp_teacher {
                    None => None,
                    Some(_) => {
                        let bytes = std::fs::read(&dp_record_path).map_err(|_| {
                            anyhow::anyhow!(
                                "{} was not trained with DP-SGD ({} is missing) but [privacy.teacher] is set: \
                                 delete it to retrain the teacher privately",
                                path.display(),
                                dp_record_path.display()
                            )
                        })?;
                        let c: fedistill_shared::privacy::DpSgdCost = serde_json::from_slice(&bytes)
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
                m.save(&path)?;
                write_json(&dp_record_path, &cost)?;
                (m, Some(cost))
            } else {
                info!(samples = shard.n, "training the private teacher on local data");
                let m = train_teacher(&teacher_cfg, &shard, &train_cfg, &progress)?;
                m.save(&path)?;
                (m, None)
            };
            let acc = evaluate(&m, &test, None)?.accuracy;
            Ok((m, acc, cost))
        })
        .await??
    };
    info!(
        accuracy = local_only_accuracy,
        params = teacher.params(),
        dp_sgd_epsilon = teacher_cost.map(|c| c.epsilon),
        "teacher ready (local-only baseline)"
    );

    let state_path = settings.workdir.join("state.json");
    let state: SessionState = match std::fs::read(&state_path) {
        Ok(b) => serde_json::from_slice(&b).with_context(|| format!("decoding {}", state_path.display()))?,
        Err(_) => SessionState::default(),
    };
    let student_path = settings.workdir.join("student.safetensors");
    let student = if student_path.exists() {
        Model::load(&student_cfg, dim, classes, &student_path)?
    } else {
        Model::new(&student_cfg, dim, classes, settings.student_seed)?
    };
    let distiller = Distiller::new(student, distill_cfg);
    let guard = GuardConfig::new(settings.guard_metrics.clone(), settings.guard_max_relative_drop)?;
    let log = LogVerifier {
        origin: format!("fedistill/{}", kit.federation().as_str()),
        key: ed25519_dalek::VerifyingKey::from_bytes(&kit.coordinator_key.to_bytes())
            .context("the kit's coordinator key is not a valid ed25519 key")?,
    };
    let witness_name = format!("fedistill-witness/{me}");
    let witness = Witness::open(&settings.workdir, &witness_name, kit.signing.to_dalek(), log)?;
    let replay = ReplayGuard::new(kit.federation().clone());

    // Rounds already released survive restarts (workdir/privacy.json), so the budget does too.
    let privacy = match settings.privacy {
        Some(cfg) => {
            let path = settings.workdir.join(PRIVACY_FILE);
            let released = match std::fs::read(&path) {
                Ok(b) => serde_json::from_slice::<serde_json::Value>(&b)
                    .ok()
                    .and_then(|v| v.get("rounds_released").and_then(|r| r.as_u64()))
                    .with_context(|| format!("{} has no rounds_released count", path.display()))?,
                Err(_) => 0,
            };
            Some(fedistill_shared::privacy::ParticipantPrivacy::with_settings(
                &cfg,
                teacher_cost,
                classes,
                released,
            ))
        }
        None => None,
    };
    let node = Arc::new(Mutex::new(Node {
        privacy,
        settings,
        kit,
        public,
        public_digest,
        test,
        teacher: Arc::new(teacher),
        shard: Arc::new(shard),
        last_temperature: 1.0,
        distiller: Arc::new(std::sync::Mutex::new(distiller)),
        guard,
        state,
        witness,
        replay,
        local_only_accuracy,
        private_samples,
        round_started: BTreeMap::new(),
    }));
    let last_done = RoundId(node.lock().await.state.last_done);
    let classes_u32 = classes as u32;
    let public_len = node.lock().await.public.n as u64;
    let mut session = ParticipantSession::new(public_digest, public_len, classes_u32, last_done);

    // Reconnect until the coordinator says the federation finished.
    loop {
        let kit = node.lock().await.kit.clone();
        let conn = tokio::select! {
            _ = cancel.cancelled() => anyhow::bail!("cancelled"),
            c = connect_with_backoff(&kit, &cancel) => c,
        };
        let conn = match conn {
            Ok(c) => c,
            Err(e) => return Err(anyhow::anyhow!("cannot reach the coordinator: {e}")),
        };
        info!(coordinator = %kit.config.coordinator, "connected");
        let watched = conn.clone();
        let outcome = serve_connection(&node, &mut session, conn, &cancel).await;
        if let Some(reason) = watched.close_reason() {
            // Revoked, unknown or refused: retrying cannot help; stop with the coordinator's reason.
            if crate::transport::is_permanent_rejection(&reason) {
                anyhow::bail!("the coordinator refused this participant: {reason}");
            }
        }
        match outcome {
            Ok(true) => break,
            Ok(false) => {
                warn!("connection to the coordinator lost; reconnecting");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => {
                error!(error = %format!("{e:#}"), "session error; reconnecting");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        if cancel.is_cancelled() {
            anyhow::bail!("cancelled");
        }
    }
    let n = node.lock().await;
    let result = ParticipantResult {
        participant: n.kit.participant().to_string(),
        private_samples: n.private_samples,
        local_only_accuracy: n.local_only_accuracy,
        teacher_params: n.teacher.params(),
        student_params: n.distiller.lock().map(|d| d.student().params()).unwrap_or(0),
        student_accuracy: n.state.accepted_metrics.get("accuracy").copied().unwrap_or(0.0),
        int8_accuracy: n.state.accepted_int8_accuracy,
        int8_bytes: n.state.accepted_int8_bytes,
        rounds: n.state.rounds.clone(),
        cosigned: n.state.cosigned,
        teacher_dp: n.privacy.as_ref().and_then(|p| p.teacher_cost()),
        dp_epsilon_total: n.privacy.as_ref().map(|p| p.epsilon_spent()),
    };
    write_json(&n.settings.workdir.join("result.json"), &result)?;
    info!(
        student_accuracy = result.student_accuracy,
        int8_accuracy = result.int8_accuracy,
        "federation finished"
    );
    Ok(result)
}

/// Sends one request on a fresh bidirectional stream and reads the reply.
async fn request(conn: &quinn::Connection, msg: &ToCoordinator, max_frame: usize) -> anyhow::Result<Reply> {
    let (mut send, mut recv) = conn.open_bi().await?;
    send_message(&mut send, KIND_TO_COORDINATOR, msg).await?;
    send.finish()?;
    let (kind, reply) = recv_message::<Reply>(&mut recv, max_frame, Duration::from_secs(60)).await?;
    anyhow::ensure!(kind == KIND_REPLY, "unexpected frame kind {} in reply", kind.0);
    Ok(reply)
}

/// Serves one connection; `Ok(true)` when the federation finished.
async fn serve_connection(
    node: &Arc<Mutex<Node>>,
    session: &mut ParticipantSession,
    conn: quinn::Connection,
    cancel: &CancellationToken,
) -> anyhow::Result<bool> {
    let (max_frame, last_size) = {
        let n = node.lock().await;
        (
            n.settings.max_frame_bytes,
            n.witness.last().map(|c| c.checkpoint.size).unwrap_or(0),
        )
    };
    match request(
        &conn,
        &ToCoordinator::Hello {
            version: PROTOCOL_VERSION,
            last_checkpoint_size: last_size,
        },
        max_frame,
    )
    .await?
    {
        Reply::Welcome { round, finished } => {
            info!(round = round.0, finished, "welcomed by the coordinator");
        }
        Reply::Reject { code, message } => anyhow::bail!("coordinator refused hello ({code}): {message}"),
        other => anyhow::bail!("unexpected reply to hello: {other:?}"),
    }
    let (tx, mut rx) = mpsc::channel::<ToParticipant>(64);
    let reader_conn = conn.clone();
    let reader = tokio::spawn(async move {
        loop {
            let Ok(mut recv) = reader_conn.accept_uni().await else {
                break;
            };
            match recv_message::<ToParticipant>(&mut recv, max_frame, Duration::from_secs(60)).await {
                Ok((kind, msg)) if kind == KIND_TO_PARTICIPANT => {
                    if tx.send(msg).await.is_err() {
                        break;
                    }
                }
                Ok((kind, _)) => warn!(kind = kind.0, "ignoring a push of an unexpected kind"),
                Err(e) => warn!(error = %e, "bad push from the coordinator"),
            }
        }
    });
    let mut queued: std::collections::VecDeque<ToParticipant> = std::collections::VecDeque::new();
    let result = loop {
        let msg = match queued.pop_front() {
            Some(m) => Some(m),
            None => tokio::select! {
                _ = cancel.cancelled() => break Ok(true),
                m = rx.recv() => m,
            },
        };
        let Some(msg) = msg else { break Ok(false) };
        // A participant that fell behind (slow teacher, long partition) skips openings that a newer one
        // already superseded instead of labelling rounds that have closed.
        while let Ok(m) = rx.try_recv() {
            queued.push_back(m);
        }
        if matches!(msg, ToParticipant::Open(_)) && queued.iter().any(|m| matches!(m, ToParticipant::Open(_))) {
            info!("skipping a round opening superseded by a newer one");
            continue;
        }
        match handle_push(node, session, &conn, msg, max_frame).await {
            Ok(true) => break Ok(true),
            Ok(false) => {}
            Err(e) => {
                if conn.close_reason().is_some() {
                    break Ok(false);
                }
                error!(error = %format!("{e:#}"), "handling a coordinator message failed");
            }
        }
    };
    reader.abort();
    if matches!(result, Ok(true)) {
        conn.close(0u32.into(), b"done");
    }
    result
}

async fn handle_push(
    node: &Arc<Mutex<Node>>,
    session: &mut ParticipantSession,
    conn: &quinn::Connection,
    msg: ToParticipant,
    max_frame: usize,
) -> anyhow::Result<bool> {
    let mut pending_checkpoint: Option<(SignedCheckpoint, u64, usize)> = None;
    {
        let mut n = node.lock().await;
        let key = n.kit.coordinator_key;
        match msg {
            ToParticipant::Open(s) => {
                let round = s.round;
                match s.verify(&key, &Signer::Coordinator, &n.replay, round) {
                    Ok(v) => {
                        let fresh = v.fresh();
                        if let Err(e) = session.handle_open(v) {
                            info!(round = round.0, reason = %e, "not labelling this round");
                        } else {
                            n.replay.accept(fresh);
                            n.round_started.insert(round.0, (Instant::now(), 0));
                        }
                    }
                    Err(e) => warn!(round = round.0, error = %e, "rejected a round opening"),
                }
            }
            ToParticipant::Aggregate(s) => {
                let round = s.round;
                let bytes = s.payload.len() as u64;
                match s.verify(&key, &Signer::Coordinator, &n.replay, round) {
                    Ok(v) => {
                        let fresh = v.fresh();
                        let note = v.value().checkpoint.clone();
                        let contributors = v.value().contributors.len();
                        match SignedCheckpoint::parse(note.as_bytes()) {
                            Ok(sc) => pending_checkpoint = Some((sc, bytes, contributors)),
                            Err(e) => warn!(round = round.0, error = %e, "aggregate carries an unreadable checkpoint"),
                        }
                        match session.handle_aggregate(v) {
                            Ok(()) => n.replay.accept(fresh),
                            Err(e) => warn!(round = round.0, reason = %e, "ignoring aggregate"),
                        }
                        if let Some(r) = n.round_started.get_mut(&round.0) {
                            r.1 = bytes;
                        }
                    }
                    Err(e) => warn!(round = round.0, error = %e, "rejected an aggregate"),
                }
            }
            ToParticipant::Finished { rounds, checkpoint } => {
                info!(rounds, "coordinator finished all rounds");
                match SignedCheckpoint::parse(checkpoint.as_bytes()) {
                    Ok(sc) => pending_checkpoint = Some((sc, 0, 0)),
                    Err(e) => warn!(error = %e, "final checkpoint is unreadable"),
                }
                session.handle_finished();
            }
        }
    }
    if let Some((sc, _, _)) = pending_checkpoint {
        witness(node, conn, &sc, max_frame).await?;
    }
    while let Some(out) = session.poll_output() {
        match out {
            ParticipantOutput::ComputeSoftLabels {
                round,
                sample_ids,
                temperature,
            } => {
                let (teacher, public, encoding) = {
                    let mut n = node.lock().await;
                    n.last_temperature = temperature;
                    (n.teacher.clone(), n.public.clone(), n.settings.encoding)
                };
                let ids = sample_ids.clone();
                let (probs, rows, classes) =
                    tokio::task::spawn_blocking(move || -> anyhow::Result<(Vec<f32>, usize, usize)> {
                        let x: Vec<f32> = ids.iter().flat_map(|&i| public.row(i as usize).to_vec()).collect();
                        let probs = teacher.probabilities(&x, ids.len(), temperature)?;
                        Ok((probs, ids.len(), teacher.classes()))
                    })
                    .await??;
                let probs = {
                    let mut n = node.lock().await;
                    let path = n.settings.workdir.join(PRIVACY_FILE);
                    match n.privacy.as_mut() {
                        None => probs,
                        Some(dp) => {
                            use fedistill_shared::privacy::Release;
                            let mut rng = fedistill_shared::privacy::os_rng()?;
                            match dp.handle_round(round.0, &probs, rows, classes, &mut rng)? {
                                Release::Send { labels, spend } => {
                                    let released = serde_json::json!({ "rounds_released": dp.rounds_released() });
                                    write_json(&path, &released)?;
                                    info!(
                                        round = round.0,
                                        epsilon_round = spend.epsilon_round,
                                        epsilon_total = spend.epsilon_total,
                                        delta = spend.delta,
                                        "soft labels privatized"
                                    );
                                    labels
                                }
                                Release::BudgetExhausted {
                                    would_reach,
                                    budget,
                                    spent,
                                } => {
                                    // Out of budget: say so, signed, so the round does not wait for us
                                    // (docs/privacy.md "When the budget runs out"). Every later round ends
                                    // here too; the node stays connected until the federation finishes.
                                    warn!(
                                        round = round.0,
                                        would_reach,
                                        budget,
                                        spent,
                                        "privacy budget would be exceeded: abstaining from round {} (epsilon spent {spent:.3} of the budget {budget}; this round would reach {would_reach:.3}); no soft labels are sent from now on",
                                        round.0
                                    );
                                    let abstain = fedistill_shared::wire::messages::Abstain {
                                        round,
                                        reason: fedistill_shared::wire::messages::ABSTAIN_BUDGET_EXHAUSTED.into(),
                                        figures: vec![
                                            ("epsilon_budget".into(), budget),
                                            ("epsilon_spent".into(), spent),
                                            ("epsilon_would_reach".into(), would_reach),
                                        ],
                                    };
                                    let signed = sign(&mut n, round, &abstain)?;
                                    drop(n);
                                    match request(conn, &ToCoordinator::Abstain(signed), max_frame).await? {
                                        Reply::Ack => info!(round = round.0, "abstention recorded by the coordinator"),
                                        Reply::Reject {
                                            code: RejectCode::Duplicate,
                                            message,
                                        } => {
                                            info!(round = round.0, %message, "coordinator already holds our abstention")
                                        }
                                        Reply::Reject { code, message } => {
                                            warn!(round = round.0, %code, %message, "abstention rejected")
                                        }
                                        other => warn!(?other, "unexpected reply to an abstention"),
                                    }
                                    continue;
                                }
                            }
                        }
                    }
                };
                let mut n = node.lock().await;
                let body = softlabels::soft_labels_message(
                    round,
                    n.public_digest,
                    &sample_ids,
                    &probs,
                    classes,
                    encoding,
                    n.private_samples as u64,
                )?;
                let bytes = body.payload.len() as u64;
                let signed = sign(&mut n, round, &body)?;
                drop(n);
                match request(conn, &ToCoordinator::SoftLabels(signed), max_frame).await? {
                    Reply::Ack => {
                        info!(round = round.0, bytes, "soft labels accepted");
                        session.handle_labels_sent(round);
                        if let Some(r) = node.lock().await.round_started.get_mut(&round.0) {
                            r.1 = bytes;
                        }
                    }
                    Reply::Reject {
                        code: RejectCode::Duplicate,
                        message,
                    } => {
                        info!(round = round.0, %message, "coordinator already holds our labels");
                        session.handle_labels_sent(round);
                    }
                    Reply::Reject { code, message } => warn!(round = round.0, %code, %message, "soft labels rejected"),
                    other => warn!(?other, "unexpected reply to soft labels"),
                }
            }
            ParticipantOutput::Distill {
                round,
                sample_ids,
                probabilities,
                total_rounds,
                payload_bytes,
            } => {
                let report = distill_round(node, round, sample_ids, probabilities, total_rounds, payload_bytes).await?;
                session.handle_distilled(report);
            }
            ParticipantOutput::SendReport(report) => {
                let round = report.round;
                let signed = {
                    let mut n = node.lock().await;
                    sign(&mut n, round, &report)?
                };
                match request(conn, &ToCoordinator::Report(signed), max_frame).await? {
                    Reply::Ack => info!(round = round.0, "report accepted"),
                    Reply::Reject { code, message } => warn!(round = round.0, %code, %message, "report rejected"),
                    other => warn!(?other, "unexpected reply to report"),
                }
            }
            ParticipantOutput::Finished => return Ok(true),
        }
    }
    Ok(false)
}

fn sign<T: SignedMessage>(n: &mut Node, round: RoundId, body: &T) -> anyhow::Result<Signed<T>> {
    // Sequence numbers must grow across restarts: the wall clock in microseconds, never below the last.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    n.state.seq = (n.state.seq + 1).max(now);
    let signer = Signer::Participant(n.kit.participant().clone());
    Ok(Signed::sign(
        &n.kit.signing,
        signer,
        n.kit.federation().clone(),
        round,
        n.state.seq,
        body,
    )?)
}

async fn witness(
    node: &Arc<Mutex<Node>>,
    conn: &quinn::Connection,
    sc: &SignedCheckpoint,
    max_frame: usize,
) -> anyhow::Result<()> {
    let new = sc.checkpoint.size;
    let ask = node.lock().await.witness.proof_request(new);
    let proof = match ask {
        Some(req) => match request(conn, &req, max_frame).await? {
            Reply::Proof { hashes } => hashes,
            other => anyhow::bail!("no consistency proof up to {new}: {other:?}"),
        },
        None => Vec::new(),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let cosig = {
        let mut n = node.lock().await;
        match n.witness.handle_checkpoint(sc, &proof, now) {
            Ok(c) => c,
            Err(e) => {
                error!(error = %e, "refusing to cosign the coordinator's checkpoint");
                return Ok(());
            }
        }
    };
    let msg = crate::witness::cosign_message(new, &cosig);
    match request(conn, &msg, max_frame).await? {
        Reply::Ack => {
            node.lock().await.state.cosigned += 1;
            info!(size = new, "cosigned the log checkpoint");
        }
        Reply::Reject { code, message } => warn!(%code, %message, "cosignature refused"),
        other => warn!(?other, "unexpected reply to cosignature"),
    }
    Ok(())
}

/// Co-distillation (`[refresh]`, docs/ml.md): fine-tunes the private teacher on its shard plus this round's
/// public rows with the consensus as soft targets, then saves it (write and rename), so the labels of the
/// next round carry what the federation knows. Off when `epochs = 0`; skipped after the last round.
async fn refresh_teacher_after(
    node: &Arc<Mutex<Node>>,
    round: RoundId,
    sample_ids: &[u64],
    consensus: &[f32],
    total_rounds: u64,
) -> anyhow::Result<()> {
    let (cfg, teacher, shard, public, temperature, path, seed) = {
        let n = node.lock().await;
        if n.settings.refresh.epochs == 0 || round.0 >= total_rounds {
            return Ok(());
        }
        (
            n.settings.refresh.clone(),
            n.teacher.clone(),
            n.shard.clone(),
            n.public.clone(),
            n.last_temperature,
            n.settings.workdir.join("teacher.safetensors"),
            n.settings.data.seed ^ (n.settings.shard as u64) << 32 ^ round.0,
        )
    };
    let ids = sample_ids.to_vec();
    let consensus = consensus.to_vec();
    let loss = tokio::task::spawn_blocking(move || -> anyhow::Result<Option<f32>> {
        let x: Vec<f32> = ids.iter().flat_map(|&i| public.row(i as usize).to_vec()).collect();
        let data = RefreshData {
            private_x: &shard.features,
            private_y: &shard.labels,
            public_x: &x,
            consensus: &consensus,
            temperature,
        };
        let loss = refresh_teacher(&teacher, &data, &cfg, seed)?;
        let tmp = path.with_extension("safetensors.tmp");
        teacher.save(&tmp)?;
        std::fs::rename(&tmp, &path).with_context(|| format!("replacing {}", path.display()))?;
        Ok(loss)
    })
    .await??;
    info!(
        round = round.0,
        loss = loss.unwrap_or(f32::NAN),
        "teacher refreshed from the consensus"
    );
    Ok(())
}

async fn distill_round(
    node: &Arc<Mutex<Node>>,
    round: RoundId,
    sample_ids: Vec<u64>,
    probabilities: Vec<f32>,
    total_rounds: u64,
    payload_bytes: u64,
) -> anyhow::Result<RoundReport> {
    refresh_teacher_after(node, round, &sample_ids, &probabilities, total_rounds).await?;
    let (distiller, public, test, guard, accepted, workdir, started) = {
        let n = node.lock().await;
        (
            n.distiller.clone(),
            n.public.clone(),
            n.test.clone(),
            n.guard.clone(),
            n.state.accepted_metrics.clone(),
            n.settings.workdir.clone(),
            n.round_started.get(&round.0).copied(),
        )
    };
    let ids = sample_ids.clone();
    let probs = probabilities.clone();
    let outcome = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let x: Vec<f32> = ids.iter().flat_map(|&i| public.row(i as usize).to_vec()).collect();
        let classes = public.num_classes;
        let consensus_correct = ids
            .iter()
            .zip(probs.chunks_exact(classes))
            .filter(|(&i, p)| fedistill_shared::ml::model::argmax(p) as u32 == public.labels[i as usize])
            .count();
        let consensus_accuracy = consensus_correct as f64 / ids.len().max(1) as f64;
        let mut d = distiller
            .lock()
            .map_err(|_| anyhow::anyhow!("distiller lock poisoned"))?;
        // Keep the served student; distill a candidate on a copy so a rejected candidate changes nothing.
        let before = d.student().to_safetensors()?;
        d.distill_round(
            &x,
            ids.len(),
            &SoftTargets::Probabilities(probs),
            None,
            (round.0 as usize).saturating_sub(1),
            total_rounds.max(round.0) as usize,
        )?;
        let student = d.student();
        let metrics = evaluate(student, &test, None)?;
        let q = QuantizedModel::from_model(student, Profile::Int8)?;
        let qlogits = q.logits(&test.features, test.n)?;
        let int8_correct = qlogits
            .chunks_exact(classes)
            .zip(&test.labels)
            .filter(|(r, &y)| fedistill_shared::ml::model::argmax(r) as u32 == y)
            .count();
        let int8_accuracy = int8_correct as f64 / test.n.max(1) as f64;
        let int8_bytes = fedistill_shared::ml::quant::export::export_bytes(&q, Some(student))?;
        let candidate = metric_map(&metrics)?;
        let decision = if accepted.is_empty() {
            None
        } else {
            Some(guard.decide(&accepted, &candidate))
        };
        let accepted_now = decision.as_ref().is_none_or(|d| d.accepted);
        let round_dir = workdir.join(format!("round-{:04}", round.0));
        std::fs::create_dir_all(&round_dir)?;
        student.save(&round_dir.join("student.safetensors"))?;
        std::fs::write(round_dir.join("student-int8.gguf"), &int8_bytes)?;
        std::fs::write(round_dir.join("metrics.json"), serde_json::to_vec_pretty(&metrics)?)?;
        if let Some(dec) = &decision {
            std::fs::write(round_dir.join("guard.json"), serde_json::to_vec_pretty(dec)?)?;
        }
        if accepted_now {
            student.save(&workdir.join("student.safetensors"))?;
            std::fs::write(workdir.join("student-int8.gguf"), &int8_bytes)?;
        } else {
            // Roll the working student back to the served one.
            let restored = Model::from_safetensors(student.config(), student.in_dim(), student.classes(), &before)?;
            student.copy_weights_from(&restored)?;
        }
        let digest = Digest(d.student().weights_digest());
        Ok((
            metrics,
            candidate,
            int8_accuracy,
            int8_bytes.len(),
            decision,
            accepted_now,
            digest,
            consensus_accuracy,
        ))
    })
    .await??;
    let (metrics, candidate, int8_accuracy, int8_bytes, decision, accepted_now, digest, consensus_accuracy) = outcome;
    let mut n = node.lock().await;
    if accepted_now {
        n.state.accepted_metrics = candidate.clone();
        n.state.accepted_int8_accuracy = int8_accuracy;
        n.state.accepted_int8_bytes = int8_bytes;
    }
    let (bytes_up, seconds) = started.map(|(t, b)| (b, t.elapsed().as_secs_f64())).unwrap_or((0, 0.0));
    let record = RoundRecord {
        round: round.0,
        bytes_up,
        bytes_down: payload_bytes,
        student_accuracy: metrics.accuracy,
        int8_accuracy,
        consensus_accuracy,
        guard_accepted: accepted_now,
        seconds,
        contributors: 0,
    };
    info!(
        round = round.0,
        student_accuracy = metrics.accuracy,
        int8_accuracy,
        consensus_accuracy,
        guard = if accepted_now { "accept" } else { "reject" },
        "round distilled"
    );
    n.state.rounds.push(record);
    n.state.last_done = round.0;
    let state_path = n.settings.workdir.join("state.json");
    write_json(&state_path, &n.state)?;
    let keep = ["accuracy", "macro_f1", "roc_auc", "log_loss", "ece"];
    let dp_metrics = n
        .privacy
        .as_ref()
        .map(|p| p.report_metrics(round.0))
        .unwrap_or_default();
    Ok(RoundReport {
        round,
        metrics: candidate
            .iter()
            .filter(|(k, _)| keep.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), *v))
            .chain([("int8_accuracy".to_string(), int8_accuracy)])
            .chain(dp_metrics)
            .collect(),
        student_digest: digest,
        guard_accepted: accepted_now,
        guard_reason: decision.map(|d| d.reason).unwrap_or_else(|| "first student".into()),
        privacy_spend: n.privacy.as_ref().and_then(|p| p.report_spend(round.0)),
    })
}

/// Work-directory file holding how many rounds the DP accountant has released.
const PRIVACY_FILE: &str = "privacy.json";
/// Work-directory file recording the DP-SGD cost of the saved teacher (`DpSgdCost` as JSON).
const TEACHER_DP_FILE: &str = "teacher-dp.json";

fn write_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let tmp: PathBuf = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(value)?).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Loads settings from a file and runs until done or Ctrl-C.
pub async fn run_from_file(path: &Path) -> anyhow::Result<ParticipantResult> {
    let settings = ParticipantSettings::load(path)?;
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            info!("Ctrl-C: stopping");
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
