// Over 800 lines: the driver (connection, pushes, secure rounds, witnessing) and its replay-guard test read best together.
//! The participant's async driver: dials the coordinator with capped backoff, verifies every push,
//! witnesses the log checkpoints, and hands the verified messages to the [`RoundLifecycle`], whose
//! blocking work (teacher, distillation) runs on blocking threads. It signs and sends what the lifecycle
//! yields and reports what it saw as [`NodeEvent`]s to whoever watches (the benchmarks). The same driver
//! runs a real node, the demo's nodes and the benchmarks' nodes.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use fedistill_shared::crypto::{ReplayGuard, RoundId, Signed, SignedMessage, Signer};
use fedistill_shared::ledger::SignedCheckpoint;
use fedistill_shared::wire::messages::{
    RejectCode, Reply, ToCoordinator, ToParticipant, KIND_REPLY, KIND_TO_COORDINATOR, KIND_TO_PARTICIPANT,
    PROTOCOL_VERSION,
};
use fedistill_shared::wire::{decode_frame, encode_frame};
use fedistill_transport::{read_frame, write_frame};

use fedistill_shared::failpoint::failpoint;

use crate::learner::Learner;
use crate::lifecycle::{Outgoing, RoundLifecycle};
use crate::transport::{connect_with_backoff, Kit};
use crate::witness::Witness;

/// How long one request or push may take to arrive.
const STREAM_TIMEOUT: Duration = Duration::from_secs(60);

/// Which push arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushKind {
    /// A round opening.
    Open,
    /// A round's aggregate.
    Aggregate,
    /// The federation finished.
    Finished,
    /// A secure round's relayed adverts, shares or unmasking request.
    SecAgg,
}

/// What the driver saw, for a watcher (`fedistill bench scale` times rounds and counts bytes with it).
#[derive(Debug, Clone)]
pub enum NodeEvent {
    /// A push from the coordinator, stamped when its last byte arrived (`round` is `None` for `Finished`).
    Pushed {
        /// Which push.
        kind: PushKind,
        /// Its round.
        round: Option<RoundId>,
        /// When its last byte arrived.
        at: Instant,
        /// Frame bytes received.
        bytes: u64,
    },
    /// A request and its reply (frame bytes sent and received).
    Exchanged {
        /// Bytes sent.
        up: u64,
        /// Bytes received.
        down: u64,
    },
    /// The coordinator refused something this node sent, or this node refused a push.
    Refused {
        /// What was refused and why.
        what: String,
    },
}

/// The driver's settings.
#[derive(Debug, Clone)]
pub struct DriverOptions {
    /// Largest frame accepted from the coordinator.
    pub max_frame_bytes: usize,
    /// The digest of the task card this node's files were read against: checked against the
    /// coordinator's signed card after every hello (a node on a catalog split has none).
    pub task: Option<fedistill_shared::crypto::Digest>,
}

/// Sends one request on a fresh bidirectional stream and reads the reply; returns it with the frame bytes
/// sent and received.
pub async fn exchange(
    conn: &quinn::Connection,
    msg: &ToCoordinator,
    max_frame: usize,
) -> anyhow::Result<(Reply, u64, u64)> {
    let frame = encode_frame(KIND_TO_COORDINATOR, msg)?;
    let (mut send, mut recv) = conn.open_bi().await?;
    write_frame(&mut send, &frame).await?;
    send.finish()?;
    let reply = read_frame(&mut recv, max_frame, STREAM_TIMEOUT).await?;
    let d = decode_frame::<Reply>(&reply, max_frame)?;
    anyhow::ensure!(d.kind == KIND_REPLY, "unexpected frame kind {} in reply", d.kind.0);
    Ok((d.value, frame.len() as u64, reply.len() as u64))
}

/// A participant node's driver around its lifecycle.
pub struct Driver<L: Learner> {
    kit: Kit,
    lifecycle: Arc<Mutex<RoundLifecycle<L>>>,
    /// Shared with the blocking pool: cosigning writes the witness state durably (an fsync), which must not
    /// hold a runtime worker that other connections' frames need.
    witness: Arc<Mutex<Witness>>,
    replay: ReplayGuard,
    max_frame: usize,
    task: Option<fedistill_shared::crypto::Digest>,
    events: Option<mpsc::UnboundedSender<NodeEvent>>,
    /// The operator-signed roster last fetched, by its file's digest (secure rounds check adverts with it).
    roster: Option<(fedistill_shared::crypto::Digest, fedistill_shared::provision::Roster)>,
}

impl<L: Learner> Driver<L> {
    /// A driver for `kit` around `lifecycle`, witnessing with `witness`; `events` receives what it saw.
    pub fn new(
        kit: Kit,
        mut lifecycle: RoundLifecycle<L>,
        witness: Witness,
        opts: &DriverOptions,
        events: Option<mpsc::UnboundedSender<NodeEvent>>,
    ) -> Self {
        let replay = ReplayGuard::new(kit.federation().clone());
        lifecycle.set_participant(kit.participant().clone());
        lifecycle.set_federation(kit.federation().clone());
        Driver {
            kit,
            lifecycle: Arc::new(Mutex::new(lifecycle)),
            witness: Arc::new(Mutex::new(witness)),
            replay,
            max_frame: opts.max_frame_bytes,
            task: opts.task,
            events,
            roster: None,
        }
    }

    /// Runs the lifecycle under the lock (briefly; never across an await).
    fn with<T>(&self, f: impl FnOnce(&mut RoundLifecycle<L>) -> T) -> anyhow::Result<T> {
        let mut lc = self
            .lifecycle
            .lock()
            .map_err(|_| anyhow::anyhow!("the round lifecycle lock is poisoned"))?;
        Ok(f(&mut lc))
    }

    fn lock_witness(&self) -> anyhow::Result<std::sync::MutexGuard<'_, Witness>> {
        self.witness
            .lock()
            .map_err(|_| anyhow::anyhow!("the witness lock is poisoned"))
    }

    fn emit(&self, e: NodeEvent) {
        if let Some(tx) = &self.events {
            let _ = tx.send(e);
        }
    }

    fn refused(&self, what: String) {
        self.emit(NodeEvent::Refused { what });
    }

    /// Reconnects until the coordinator says the federation finished (or `cancel` fires); returns the
    /// lifecycle.
    pub async fn run(mut self, cancel: &CancellationToken) -> anyhow::Result<RoundLifecycle<L>> {
        loop {
            let conn = tokio::select! {
                _ = cancel.cancelled() => anyhow::bail!("cancelled"),
                c = connect_with_backoff(&self.kit, cancel) => c,
            };
            let conn = conn.map_err(|e| anyhow::anyhow!("cannot reach the coordinator: {e}"))?;
            info!(coordinator = %self.kit.config.coordinator, "connected");
            let watched = conn.clone();
            let outcome = self.serve_connection(conn, cancel).await;
            if let Err(e) = &outcome {
                if let Some(m) = e.downcast_ref::<crate::owndata::TaskMismatch>() {
                    anyhow::bail!("{m}");
                }
            }
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
        let Driver { lifecycle, .. } = self;
        Arc::try_unwrap(lifecycle)
            .map_err(|_| anyhow::anyhow!("the round lifecycle is still in use"))?
            .into_inner()
            .map_err(|_| anyhow::anyhow!("the round lifecycle lock is poisoned"))
    }

    /// Sends one request on a fresh bidirectional stream and reads the reply.
    async fn request(&self, conn: &quinn::Connection, msg: &ToCoordinator) -> anyhow::Result<Reply> {
        let (reply, up, down) = exchange(conn, msg, self.max_frame).await?;
        self.emit(NodeEvent::Exchanged { up, down });
        Ok(reply)
    }

    fn sign<T: SignedMessage>(&self, round: RoundId, body: &T) -> anyhow::Result<Signed<T>> {
        // Sequence numbers must grow across restarts: the wall clock in microseconds, never below the last.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let seq = self.with(|lc| lc.next_seq(now))??;
        let signer = Signer::Participant(self.kit.participant().clone());
        Ok(Signed::sign(
            &self.kit.signing,
            signer,
            self.kit.federation().clone(),
            round,
            seq,
            body,
        )?)
    }

    /// Serves one connection; `Ok(true)` when the federation finished.
    async fn serve_connection(&mut self, conn: quinn::Connection, cancel: &CancellationToken) -> anyhow::Result<bool> {
        let last_size = self.lock_witness()?.last().map(|c| c.checkpoint.size).unwrap_or(0);
        let hello = ToCoordinator::Hello {
            version: PROTOCOL_VERSION,
            last_checkpoint_size: last_size,
        };
        match self.request(&conn, &hello).await? {
            Reply::Welcome { round, finished } => info!(round = round.0, finished, "welcomed by the coordinator"),
            Reply::Reject { code, message } => anyhow::bail!("coordinator refused hello ({code}): {message}"),
            other => anyhow::bail!("unexpected reply to hello: {other:?}"),
        }
        if let Some(digest) = self.task {
            crate::owndata::check_task(&conn, &self.kit, digest, self.max_frame).await?;
        }
        // Pushes arrive on coordinator-opened unidirectional streams; a reader task stamps and forwards them.
        let (tx, mut rx) = mpsc::channel::<(ToParticipant, Instant, u64)>(64);
        let reader_conn = conn.clone();
        let max_frame = self.max_frame;
        let reader = tokio::spawn(async move {
            while let Ok(mut recv) = reader_conn.accept_uni().await {
                let pushed = match read_frame(&mut recv, max_frame, STREAM_TIMEOUT).await {
                    Ok(frame) => {
                        let at = Instant::now();
                        decode_frame::<ToParticipant>(&frame, max_frame)
                            .map(|d| (d, at, frame.len() as u64))
                            .map_err(anyhow::Error::from)
                    }
                    Err(e) => Err(e.into()),
                };
                match pushed {
                    Ok((d, at, bytes)) if d.kind == KIND_TO_PARTICIPANT => {
                        if tx.send((d.value, at, bytes)).await.is_err() {
                            break;
                        }
                    }
                    Ok((d, _, _)) => warn!(kind = d.kind.0, "ignoring a push of an unexpected kind"),
                    Err(e) => warn!(error = %e, "bad push from the coordinator"),
                }
            }
        });
        let mut queued = std::collections::VecDeque::new();
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
            let is_open = |m: &(ToParticipant, Instant, u64)| matches!(m.0, ToParticipant::Open(_));
            if is_open(&msg) && queued.iter().any(is_open) {
                info!("skipping a round opening superseded by a newer one");
                continue;
            }
            match self.handle_push(&conn, msg).await {
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

    /// Verifies one push, feeds it to the lifecycle, witnesses its checkpoint, then sends what the
    /// lifecycle yields; `Ok(true)` when the federation finished.
    async fn handle_push(
        &mut self,
        conn: &quinn::Connection,
        (msg, at, bytes): (ToParticipant, Instant, u64),
    ) -> anyhow::Result<bool> {
        let key = self.kit.coordinator_key;
        let mut checkpoint: Option<SignedCheckpoint> = None;
        let (kind, round) = match &msg {
            ToParticipant::Open(s) => (PushKind::Open, Some(s.round)),
            ToParticipant::Aggregate(s) => (PushKind::Aggregate, Some(s.round)),
            ToParticipant::Finished { .. } => (PushKind::Finished, None),
            ToParticipant::SecAggRoster(s) => (PushKind::SecAgg, Some(s.round)),
            ToParticipant::SecAggDelivery(s) => (PushKind::SecAgg, Some(s.round)),
            ToParticipant::SecAggUnmask(s) => (PushKind::SecAgg, Some(s.round)),
        };
        self.emit(NodeEvent::Pushed { kind, round, at, bytes });
        match msg {
            ToParticipant::Open(s) => {
                let round = s.round;
                match s.verify(&key, &Signer::Coordinator, &self.replay, round) {
                    Ok(v) => {
                        let fresh = v.fresh();
                        match self.with(|lc| lc.on_open(v))? {
                            Ok(()) => self.replay.accept(fresh),
                            Err(e) => info!(round = round.0, reason = %e, "not labelling this round"),
                        }
                    }
                    Err(e) => {
                        warn!(round = round.0, error = %e, "rejected a round opening");
                        self.refused(format!("round {} opening: {e}", round.0));
                    }
                }
            }
            ToParticipant::Aggregate(s) => {
                let round = s.round;
                match s.verify(&key, &Signer::Coordinator, &self.replay, round) {
                    Ok(v) => {
                        let fresh = v.fresh();
                        match SignedCheckpoint::parse(v.value().checkpoint.as_bytes()) {
                            Ok(sc) => checkpoint = Some(sc),
                            Err(e) => warn!(round = round.0, error = %e, "aggregate carries an unreadable checkpoint"),
                        }
                        match self.with(|lc| lc.on_aggregate(v, bytes))? {
                            Ok(()) => self.replay.accept(fresh),
                            Err(e) => warn!(round = round.0, reason = %e, "ignoring aggregate"),
                        }
                    }
                    Err(e) => {
                        warn!(round = round.0, error = %e, "rejected an aggregate");
                        self.refused(format!("round {} aggregate: {e}", round.0));
                    }
                }
            }
            ToParticipant::SecAggRoster(s) => {
                let round = s.round;
                match s.verify(&key, &Signer::Coordinator, &self.replay, round) {
                    Ok(v) => {
                        // The guard moves inside, once the lifecycle has taken the adverts.
                        let fresh = v.fresh();
                        if let Err(e) = self.secure_roster(conn, fresh, v.into_inner()).await {
                            warn!(round = round.0, error = %format!("{e:#}"), "secure round: refusing the key adverts");
                            self.refused(format!("round {} key adverts: {e:#}", round.0));
                        }
                    }
                    Err(e) => {
                        warn!(round = round.0, error = %e, "rejected the secure round's key adverts");
                        self.refused(format!("round {} key adverts: {e}", round.0));
                    }
                }
            }
            ToParticipant::SecAggDelivery(s) => {
                let round = s.round;
                match s.verify(&key, &Signer::Coordinator, &self.replay, round) {
                    Ok(v) => {
                        let fresh = v.fresh();
                        let d = v.into_inner();
                        match self.blocking(move |lc| lc.on_secagg_delivery(&d)).await {
                            Ok(labels) => {
                                // Taken by the lifecycle: only now may the guard move.
                                self.replay.accept(fresh);
                                let signed = self.sign(round, &labels)?;
                                let bytes = signed.payload.len() as u64;
                                match self.request(conn, &ToCoordinator::SoftLabels(signed)).await? {
                                    Reply::Ack => {
                                        info!(round = round.0, bytes, "masked input accepted");
                                        self.with(|lc| lc.labels_delivered(round, bytes))?;
                                        failpoint("labels-delivered", round);
                                    }
                                    other => self.unexpected("masked input", round, other),
                                }
                            }
                            Err(e) => {
                                warn!(round = round.0, error = %format!("{e:#}"), "secure round: refusing the relayed shares");
                                self.refused(format!("round {} shares: {e:#}", round.0));
                            }
                        }
                    }
                    Err(e) => {
                        warn!(round = round.0, error = %e, "rejected the secure round's shares");
                        self.refused(format!("round {} shares: {e}", round.0));
                    }
                }
            }
            ToParticipant::SecAggUnmask(s) => {
                let round = s.round;
                match s.verify(&key, &Signer::Coordinator, &self.replay, round) {
                    Ok(v) => {
                        let fresh = v.fresh();
                        let u = v.into_inner();
                        let handled = self.with(|lc| lc.on_secagg_unmask(&u))?;
                        if handled.is_ok() {
                            // Taken by the lifecycle (to reveal, or as dropped): only now may the guard move.
                            self.replay.accept(fresh);
                        }
                        match handled {
                            Ok(Some(reveal)) => {
                                let signed = self.sign(round, &reveal)?;
                                match self.request(conn, &ToCoordinator::SecAggReveal(signed)).await? {
                                    Reply::Ack => info!(round = round.0, "secure round: shares revealed"),
                                    Reply::Reject {
                                        code: RejectCode::NotNeeded,
                                        ..
                                    } => info!(round = round.0, "secure round: unmasked without this node's shares"),
                                    other => self.unexpected("revealed shares", round, other),
                                }
                            }
                            Ok(None) => info!(round = round.0, "secure round: counted as dropped; nothing to reveal"),
                            Err(e) => {
                                warn!(round = round.0, error = %format!("{e:#}"), "secure round: refusing to unmask");
                                self.refused(format!("round {} unmasking: {e:#}", round.0));
                            }
                        }
                    }
                    Err(e) => {
                        warn!(round = round.0, error = %e, "rejected the secure round's unmasking request");
                        self.refused(format!("round {} unmasking: {e}", round.0));
                    }
                }
            }
            ToParticipant::Finished {
                rounds,
                checkpoint: note,
            } => {
                info!(rounds, "coordinator finished all rounds");
                match SignedCheckpoint::parse(note.as_bytes()) {
                    Ok(sc) => checkpoint = Some(sc),
                    Err(e) => warn!(error = %e, "final checkpoint is unreadable"),
                }
                self.with(|lc| lc.on_finished())?;
            }
        }
        // Witness the checkpoint (consistency proof, cosignature) before anything else.
        if let Some(sc) = checkpoint {
            self.witness(conn, &sc).await?;
        }
        loop {
            // Nothing queued: done until the next push, without a trip to a blocking thread.
            if !self.with(|lc| lc.has_work())? {
                return Ok(false);
            }
            let lc = self.lifecycle.clone();
            let next = tokio::task::spawn_blocking(move || {
                lc.lock()
                    .map_err(|_| anyhow::anyhow!("the round lifecycle lock is poisoned"))?
                    .step()
            })
            .await??;
            let Some(out) = next else { return Ok(false) };
            match out {
                Outgoing::SoftLabels(body) => {
                    let round = body.round;
                    let signed = self.sign(round, &body)?;
                    // The signed message's bytes: what the coordinator counts as this node's upload.
                    let bytes = signed.payload.len() as u64;
                    match self.request(conn, &ToCoordinator::SoftLabels(signed)).await? {
                        Reply::Ack => {
                            info!(round = round.0, bytes, "soft labels accepted");
                            self.with(|lc| lc.labels_delivered(round, bytes))?;
                            failpoint("labels-delivered", round);
                        }
                        Reply::Reject {
                            code: RejectCode::Duplicate,
                            message,
                        } => {
                            info!(round = round.0, %message, "coordinator already holds our labels");
                            self.with(|lc| lc.labels_delivered(round, bytes))?;
                        }
                        other => self.unexpected("soft labels", round, other),
                    }
                }
                Outgoing::SecAggKeys(body) => {
                    let round = body.round;
                    let signed = self.sign(round, &body)?;
                    match self.request(conn, &ToCoordinator::SecAggKeys(signed)).await? {
                        Reply::Ack => info!(round = round.0, "secure round: key advert accepted"),
                        other => self.unexpected("key advert", round, other),
                    }
                }
                Outgoing::Abstain(body) => {
                    let round = body.round;
                    let signed = self.sign(round, &body)?;
                    match self.request(conn, &ToCoordinator::Abstain(signed)).await? {
                        Reply::Ack => info!(round = round.0, "abstention recorded by the coordinator"),
                        Reply::Reject {
                            code: RejectCode::Duplicate,
                            message,
                        } => info!(round = round.0, %message, "coordinator already holds our abstention"),
                        other => self.unexpected("abstention", round, other),
                    }
                }
                Outgoing::Report(report) => {
                    let round = report.round;
                    let signed = self.sign(round, &report)?;
                    match self.request(conn, &ToCoordinator::Report(signed)).await? {
                        Reply::Ack => info!(round = round.0, "report accepted"),
                        other => self.unexpected("report", round, other),
                    }
                }
                Outgoing::Finished => return Ok(true),
            }
        }
    }

    fn unexpected(&self, what: &str, round: RoundId, reply: Reply) {
        match reply {
            Reply::Reject { code, message } => {
                warn!(round = round.0, %code, %message, "{what} rejected");
                self.refused(format!("round {} {what}: {code}: {message}", round.0));
            }
            other => {
                warn!(round = round.0, ?other, "unexpected reply to {what}");
                self.refused(format!("round {} {what}: unexpected reply {other:?}", round.0));
            }
        }
    }

    /// Runs `f` on the lifecycle on a blocking thread (masking expands one ChaCha20 stream per neighbour).
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut RoundLifecycle<L>) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let lc = self.lifecycle.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = lc
                .lock()
                .map_err(|_| anyhow::anyhow!("the round lifecycle lock is poisoned"))?;
            f(&mut guard)
        })
        .await?
    }

    /// A secure round's key adverts: each must be signed by the participant it names under the
    /// operator-signed roster (fetched from the coordinator, checked against the operator key of the kit
    /// and against the digest the coordinator signed), so that the coordinator cannot slip in keys of its own.
    ///
    /// `fresh` is the push's sequence number: recorded in the replay guard only once the lifecycle has taken
    /// the adverts (not when the roster, an advert or the lifecycle refuses them), before the shares go out.
    async fn secure_roster(
        &mut self,
        conn: &quinn::Connection,
        fresh: fedistill_shared::crypto::Fresh,
        msg: fedistill_shared::wire::secagg::SecAggRoster,
    ) -> anyhow::Result<()> {
        let round = msg.round;
        let cached = self.roster.as_ref().is_some_and(|(d, _)| *d == msg.roster_digest);
        if !cached {
            let toml = match self.request(conn, &ToCoordinator::GetRoster).await? {
                Reply::Roster { toml } => toml,
                other => anyhow::bail!("no roster from the coordinator: {other:?}"),
            };
            let digest = fedistill_shared::crypto::Digest::of(toml.as_bytes());
            anyhow::ensure!(
                digest == msg.roster_digest,
                "the roster served ({digest}) is not the one the key adverts name ({})",
                msg.roster_digest
            );
            let roster = fedistill_shared::provision::Roster::from_signed_toml(
                &toml,
                &self.kit.operator_key,
                self.kit.federation(),
            )
            .context("the roster is not signed by this federation's operator")?;
            self.roster = Some((digest, roster));
        }
        let Some((_, roster)) = self.roster.as_ref() else {
            anyhow::bail!("no roster");
        };
        let mut keyed = Vec::with_capacity(msg.adverts.len());
        for a in msg.adverts {
            let Signer::Participant(p) = a.signer.clone() else {
                anyhow::bail!("a key advert is signed by {}, not a participant", a.signer);
            };
            let entry = roster
                .by_id(&p)
                .filter(|e| e.status == fedistill_shared::provision::Status::Active)
                .with_context(|| format!("{p} is not an active participant of the roster"))?;
            keyed.push((p, entry.signing_key, a));
        }
        // The signature checks and the shares run on the blocking pool. Only the adverts whose keys this node
        // uses (its share holders: neighbours and itself) need checking; the others' keys are never used.
        let federation = self.kit.federation().clone();
        let me = self.kit.participant().clone();
        let shares = self
            .blocking(move |lc| {
                let n = keyed.len();
                let my_index = keyed
                    .iter()
                    .position(|(p, _, _)| *p == me)
                    .context("this participant's advert is missing from the round")?;
                let used = lc.secure_used_indices(round, n, my_index)?;
                let mut adverts = Vec::with_capacity(n);
                for (i, (p, key, a)) in keyed.into_iter().enumerate() {
                    let body: fedistill_shared::wire::secagg::SecAggKeys = if used.contains(&i) {
                        a.verify_offline(&key, &federation)
                            .with_context(|| format!("the key advert of {p}"))?
                            .into_inner()
                    } else {
                        fedistill_shared::wire::decode_payload(&a.payload)
                            .with_context(|| format!("the key advert of {p}"))?
                    };
                    anyhow::ensure!(body.round == round, "the key advert of {p} is for round {}", body.round);
                    adverts.push((p, body));
                }
                lc.on_secagg_roster(round, &adverts)
            })
            .await?;
        self.replay.accept(fresh);
        let signed = self.sign(round, &shares)?;
        match self.request(conn, &ToCoordinator::SecAggShares(signed)).await? {
            Reply::Ack => info!(round = round.0, "secure round: shares accepted"),
            other => self.unexpected("shares", round, other),
        }
        Ok(())
    }

    async fn witness(&mut self, conn: &quinn::Connection, sc: &SignedCheckpoint) -> anyhow::Result<()> {
        let new = sc.checkpoint.size;
        let request = self.lock_witness()?.proof_request(new);
        let proof = match request {
            Some(req) => match self.request(conn, &req).await? {
                Reply::Proof { hashes } => hashes,
                other => anyhow::bail!("no consistency proof up to {new}: {other:?}"),
            },
            None => Vec::new(),
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let (witness, offered) = (self.witness.clone(), sc.clone());
        let checked = tokio::task::spawn_blocking(move || {
            witness
                .lock()
                .map_err(|_| anyhow::anyhow!("the witness lock is poisoned"))
                .map(|mut w| w.handle_checkpoint(&offered, &proof, now))
        })
        .await??;
        let cosig = match checked {
            Ok(c) => c,
            Err(e) => {
                error!(error = %e, "refusing to cosign the coordinator's checkpoint");
                self.refused(format!("checkpoint {new}: {e}"));
                return Ok(());
            }
        };
        let msg = crate::witness::cosign_message(new, &cosig);
        match self.request(conn, &msg).await.context("sending the cosignature")? {
            Reply::Ack => {
                self.with(|lc| lc.note_cosigned())?;
                info!(size = new, "cosigned the log checkpoint");
            }
            Reply::Reject { code, message } => {
                warn!(%code, %message, "cosignature refused");
                self.refused(format!("cosignature of {new}: {code}: {message}"));
            }
            other => warn!(?other, "unexpected reply to cosignature"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The replay guard against the coordinator moves only for a push the lifecycle took: a secure-round push
    //! it refuses leaves the guard where it was (as a refused opening or aggregate does), so it cannot
    //! shadow a later push with a lower, still fresh sequence number. Driven through `handle_push` with a
    //! real kit and a real (idle) QUIC connection to a stand-in coordinator.
    use super::*;
    use crate::learner::{Distilled, LearnerSummary};
    use fedistill_shared::crypto::{Digest, FederationId, ParticipantId, SigningIdentity};
    use fedistill_shared::protocol::{AggregationRule, Encoding};
    use fedistill_shared::provision::FederationLayout;
    use fedistill_shared::wire::messages::{sample_ids_digest, RoundOpen};
    use fedistill_shared::wire::secagg::{SecAggDelivery, SecAggRoster, SecAggUnmask};
    use std::collections::BTreeMap;

    const PUBLIC: Digest = Digest([7; 32]);
    const CLASSES: usize = 3;

    /// A learner whose teacher refuses to label: the test needs the lifecycle to take an opening, nothing more.
    /// It counts the calls to `label` made on a blocking thread and those made on the async executor.
    struct Idle;

    static LABELLED_OFF_EXECUTOR: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    static LABELLED_ON_EXECUTOR: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    /// Whether this thread is running async tasks: `Handle::block_on` panics there ("Cannot start a runtime
    /// from within a runtime") and works on a `spawn_blocking` thread or a plain thread.
    fn on_async_executor() -> bool {
        match tokio::runtime::Handle::try_current() {
            Err(_) => false,
            Ok(h) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h.block_on(async {}))).is_err(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_executor_probe_tells_a_worker_from_a_blocking_thread() {
        assert!(on_async_executor(), "a task body runs on the executor");
        let off = tokio::task::spawn_blocking(on_async_executor).await.expect("join");
        assert!(!off, "a spawn_blocking closure runs off the executor");
    }

    impl Learner for Idle {
        fn public_digest(&self) -> Digest {
            PUBLIC
        }
        fn public_len(&self) -> u64 {
            100
        }
        fn classes(&self) -> usize {
            CLASSES
        }
        fn private_samples(&self) -> u64 {
            10
        }
        fn label(&mut self, _: RoundId, _: &[u64], _: f32) -> anyhow::Result<Vec<f32>> {
            let counter = if on_async_executor() {
                &LABELLED_ON_EXECUTOR
            } else {
                &LABELLED_OFF_EXECUTOR
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            anyhow::bail!("this test's teacher labels nothing")
        }
        fn distill(
            &mut self,
            _: RoundId,
            _: &[u64],
            _: &[f32],
            _: u64,
            _: AggregationRule,
            _: &BTreeMap<String, f64>,
        ) -> anyhow::Result<Distilled> {
            anyhow::bail!("this test's learner distills nothing")
        }
        fn summary(&self) -> LearnerSummary {
            LearnerSummary::default()
        }
    }

    fn push<T: SignedMessage>(key: &SigningIdentity, federation: &FederationId, seq: u64, body: &T) -> Signed<T> {
        Signed::sign(key, Signer::Coordinator, federation.clone(), RoundId(1), seq, body).expect("sign")
    }

    fn refusals(rx: &mut mpsc::UnboundedReceiver<NodeEvent>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(e) = rx.try_recv() {
            if let NodeEvent::Refused { what } = e {
                out.push(what);
            }
        }
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_secure_push_does_not_move_the_replay_guard() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let fed_dir = tmp.path().join("federation");
        let federation = FederationId::new("driver-test").expect("name");
        let now = fedistill_shared::provision::now_utc();
        fedistill_shared::provision::init(&fed_dir, &federation, &["127.0.0.1:4433".into()], None, now)
            .expect("provision init");
        let alice = ParticipantId::new("alice");
        fedistill_shared::provision::add_participant(&fed_dir, &alice, now).expect("add participant");
        let layout = FederationLayout::new(&fed_dir);
        let read = |p: std::path::PathBuf| std::fs::read(&p).expect("federation file");
        let coordinator =
            SigningIdentity::from_pkcs8_pem(&String::from_utf8(read(layout.coordinator_signing_key())).expect("utf-8"))
                .expect("coordinator key");

        // A stand-in coordinator with the federation's server certificate: it completes the handshake and
        // serves nothing (every push below is refused or taken without a request to it).
        let tls = fedistill_shared::tls::dangerous::server_config_no_client_auth(
            &read(layout.server_cert()),
            &read(layout.server_key()),
        )
        .expect("server tls");
        let server_cfg = fedistill_transport::quic_server_config(tls, &fedistill_transport::QuicTuning::default())
            .expect("server quic");
        let endpoint =
            quinn::Endpoint::server(server_cfg, std::net::SocketAddr::from(([127, 0, 0, 1], 0))).expect("endpoint");
        let mut kit = Kit::load(layout.kit(&alice)).expect("kit");
        kit.config.coordinator = endpoint.local_addr().expect("addr").to_string();
        let server = tokio::spawn(async move {
            let conn = endpoint.accept().await.expect("incoming").await.expect("handshake");
            (endpoint, conn)
        });
        let conn = crate::transport::connect(&kit, &crate::transport::ConnectOptions::default())
            .await
            .expect("connect");
        let _server = server.await.expect("server task");

        let workdir = tmp.path().join("work");
        std::fs::create_dir_all(&workdir).expect("workdir");
        let lifecycle = RoundLifecycle::open(Idle, &workdir, Encoding::F32, None, None).expect("lifecycle");
        let witness = crate::service::open_witness(&kit, &workdir).expect("witness");
        let opts = DriverOptions {
            max_frame_bytes: 1 << 20,
            task: None,
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut driver = Driver::new(kit, lifecycle, witness, &opts, Some(tx));
        // The roster is cached, so the adverts are checked without fetching it.
        let roster_digest = Digest([9; 32]);
        driver.roster = Some((roster_digest, layout.load_roster(&federation).expect("roster")));
        let coordinator_seq = |d: &Driver<Idle>| d.replay.last_seq(&Signer::Coordinator);
        let at = Instant::now();

        // Validly signed secure-round pushes, with decreasing sequence numbers, that the lifecycle refuses:
        // no secure round is in progress (and the adverts lack this participant's). None moves the guard.
        let roster = SecAggRoster {
            round: RoundId(1),
            adverts: Vec::new(),
            roster_digest,
        };
        let msg = ToParticipant::SecAggRoster(push(&coordinator, &federation, 30, &roster));
        driver
            .handle_push(&conn, (msg, at, 0))
            .await
            .expect("refused, not failed");
        let delivery = SecAggDelivery {
            round: RoundId(1),
            senders: Vec::new(),
            shares: Vec::new(),
        };
        let msg = ToParticipant::SecAggDelivery(push(&coordinator, &federation, 20, &delivery));
        driver
            .handle_push(&conn, (msg, at, 0))
            .await
            .expect("refused, not failed");
        let unmask = SecAggUnmask {
            round: RoundId(1),
            survivors: Vec::new(),
            dropped: Vec::new(),
        };
        let msg = ToParticipant::SecAggUnmask(push(&coordinator, &federation, 10, &unmask));
        driver
            .handle_push(&conn, (msg, at, 0))
            .await
            .expect("refused, not failed");
        let refused = refusals(&mut rx);
        assert_eq!(refused.len(), 3, "{refused:?}");
        assert!(
            refused[0].contains("key adverts: this participant's advert is missing"),
            "{refused:?}"
        );
        assert!(
            refused[1].contains("shares: no secure round 1 in progress"),
            "{refused:?}"
        );
        assert!(
            refused[2].contains("unmasking: no secure round 1 in progress"),
            "{refused:?}"
        );
        assert_eq!(coordinator_seq(&driver), None, "a refused push moved the replay guard");

        // An opening signed before them (a lower sequence number, still fresh) is taken and moves the guard.
        let ids: Vec<u64> = (0..10).collect();
        let open = RoundOpen {
            round: RoundId(1),
            total_rounds: 1,
            public_digest: PUBLIC,
            sample_ids_digest: sample_ids_digest(&ids),
            sample_ids: ids,
            temperature: 1.0,
            rule: AggregationRule::Mean,
            deadline_ms: 60_000,
            quorum: 1,
            classes: CLASSES as u32,
            secure: None,
        };
        let msg = ToParticipant::Open(push(&coordinator, &federation, 5, &open));
        // The lifecycle takes the opening; labelling it then fails (this teacher labels nothing).
        let labelled = driver.handle_push(&conn, (msg.clone(), at, 0)).await;
        assert!(labelled.is_err(), "the idle teacher cannot label");
        // Training never runs on the async executor (docs/ARCHITECTURE.md): the learner was asked to label
        // once, on a blocking thread.
        use std::sync::atomic::Ordering::SeqCst;
        assert_eq!(
            (LABELLED_OFF_EXECUTOR.load(SeqCst), LABELLED_ON_EXECUTOR.load(SeqCst)),
            (1, 0),
            "(labels on blocking threads, labels on the executor)"
        );
        assert_eq!(coordinator_seq(&driver), Some(5));
        assert!(refusals(&mut rx).is_empty());
        // The guard is live: the same opening again is a replay.
        driver
            .handle_push(&conn, (msg, at, 0))
            .await
            .expect("refused, not failed");
        let refused = refusals(&mut rx);
        assert!(
            refused.len() == 1 && refused[0].contains("opening") && refused[0].contains("replay"),
            "{refused:?}"
        );
    }
}
