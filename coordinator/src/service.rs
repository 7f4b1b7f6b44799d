// Over 800 lines: the coordinator's core loop and its message handlers read best together; see issue #17.
//! The coordinator service: a tokio driver around the sans-IO round state machine.
//!
//! One task (the core loop) owns the state machine, the durable store, the signing key and the replay
//! guard; connection tasks move frames and check the signatures of signed messages (under the connection's
//! roster key), which the core loop finishes verifying before they reach the state machine. The core loop
//! handles the messages queued together and makes their effects durable in one transaction before it
//! answers any of them (group commit); a round's records are appended in one SQLite transaction, which also
//! holds the messages that completed the round, before its aggregate is published. Store writes run under
//! `block_in_place`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn, Instrument};

use fedistill_shared::crypto::{
    Digest, FederationId, ParticipantId, ReplayGuard, RoundId, SignError, SignatureChecked, Signed, SignedMessage,
    Signer, SigningIdentity,
};
use fedistill_shared::ledger::{Cosignature as LedgerCosignature, Record, RosterAction, WitnessKey};
use fedistill_shared::protocol::coordinator::{AcceptedContribution, StoredContribution};
use fedistill_shared::protocol::robust::{AnomalyTracker, QuarantinePolicy};
use fedistill_shared::protocol::{
    CoordinatorConfig, CoordinatorRound, Encoding, MessageRecords, Millis, OutMessage, Output, Rejection, RoundCommit,
    Snapshot,
};
use fedistill_shared::provision::FederationLayout;
use fedistill_shared::wire::encode_frame;
use fedistill_shared::wire::messages::{
    Abstain, RejectCode, Reply, RoundReport, SoftLabels, ToCoordinator, ToParticipant, KIND_REPLY, KIND_TO_COORDINATOR,
    KIND_TO_PARTICIPANT, PROTOCOL_VERSION,
};
use fedistill_shared::wire::secagg::{SecAggKeys, SecAggReveal, SecAggRoster, SecAggShares};
use fedistill_transport::{recv_message_budgeted, send_message, write_frame, FrameBudget, FrameQuota};

use crate::config::{CoordinatorSettings, TaskSource};
use crate::metrics::{Observability, RoundStatus, Status};
use crate::store::{Batch, Store};
use crate::task::TaskArtifact;
use crate::transport::{FederationFiles, PeerConnection, Server};

/// State key of the round snapshot in the store.
/// A connection's queue of encoded frames to push; a broadcast shares one frame among all queues.
type PushQueue = mpsc::UnboundedSender<Arc<[u8]>>;

const SNAPSHOT_KEY: &str = "round_snapshot";
/// Prefix of the state keys holding the open round's accepted contributions, one per participant.
const CONTRIBUTION_PREFIX: &str = "contribution/";

/// State key of `p`'s accepted contribution to `round`: a [`StoredContribution`] (bincode), its signed
/// payload in the payload table.
fn contribution_key(round: RoundId, p: &ParticipantId) -> String {
    format!("{CONTRIBUTION_PREFIX}v2/{}/{p}", round.0)
}

/// Where earlier versions stored the whole [`AcceptedContribution`] (bincode), read when resuming their store.
fn legacy_contribution_key(round: RoundId, p: &ParticipantId) -> String {
    format!("{CONTRIBUTION_PREFIX}{}/{p}", round.0)
}

/// Puts the contributions a stored snapshot names back into it, from their own state keys and the payload
/// table (older stores kept them whole under a key of their own, or inside the snapshot; those are read as
/// they are). A named contribution that is missing, does not decode or is from someone else is an error
/// naming the key: the store is not what this coordinator wrote.
fn load_contributions(store: &Store, snap: &mut Snapshot, federation: &FederationId) -> anyhow::Result<()> {
    for id in std::mem::take(&mut snap.contribution_ids) {
        if snap.contributions.iter().any(|c| c.participant == id) {
            continue;
        }
        let key = contribution_key(snap.round, &id);
        let c = match store.state(&key)? {
            Some(bytes) => {
                let stored: StoredContribution = fedistill_shared::wire::decode_payload(&bytes)
                    .with_context(|| format!("decoding the stored contribution {key}"))?;
                anyhow::ensure!(
                    stored.participant == id,
                    "the stored contribution {key} is from {}, not {id}",
                    stored.participant
                );
                let payload = store.payload(&stored.payload_digest)?.with_context(|| {
                    format!(
                        "the payload {} of the stored contribution {key} is not stored",
                        stored.payload_digest
                    )
                })?;
                AcceptedContribution::from_stored(stored, payload, federation, snap.round)
                    .with_context(|| format!("rebuilding the stored contribution {key}"))?
            }
            None => {
                let key = legacy_contribution_key(snap.round, &id);
                let bytes = store.state(&key)?.with_context(|| {
                    format!("the durable round state names a contribution from {id} that is not stored ({key})")
                })?;
                let c: AcceptedContribution = fedistill_shared::wire::decode_payload(&bytes)
                    .with_context(|| format!("decoding the stored contribution {key}"))?;
                anyhow::ensure!(
                    c.participant == id,
                    "the stored contribution {key} is from {}, not {id}",
                    c.participant
                );
                c
            }
        };
        snap.contributions.push(c);
    }
    Ok(())
}
/// State key of the replay guard's last sequence numbers.
const GUARD_KEY: &str = "replay_guard";
/// State key of the last committed round's aggregate message (a [`StoredAggregate`]), which the coordinator
/// signs again and re-sends to contributors that reconnect before reporting.
const ROUND_AGGREGATE_KEY: &str = "round_aggregate";
/// Where earlier versions stored the signed aggregate frame itself (read when resuming their store).
const AGGREGATE_KEY: &str = "last_aggregate";

/// A committed round's aggregate message as stored with the round's records, its checkpoint blank: the
/// checkpoint of `checkpoint_size` records covers the round, and its signed note goes in before sending.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredAggregate {
    checkpoint_size: u64,
    message: fedistill_shared::wire::messages::AggregateLabels,
}
/// State key of the per-contributor anomaly scores (shared::protocol::robust).
const ANOMALY_KEY: &str = "anomaly_tracker";
/// Witness key names are `fedistill-witness/<participant>`.
pub const WITNESS_PREFIX: &str = "fedistill-witness/";

enum Event {
    Connected {
        peer: Box<PeerConnection>,
        conn_id: u64,
        push: PushQueue,
    },
    Disconnected {
        participant: ParticipantId,
        conn_id: u64,
    },
    Request {
        participant: ParticipantId,
        msg: Box<Incoming>,
        reply: oneshot::Sender<Reply>,
    },
}

/// A participant's request as its connection task hands it to the core loop. The signature of a signed
/// message is already checked there, under the connection's roster key (the costly, stateless half of
/// verification, done in parallel across connections as the frames arrive); the core loop finishes
/// verifying it against the round and the replay guard ([`SignatureChecked::verify`]).
enum Incoming {
    SoftLabels(Result<SignatureChecked<SoftLabels>, SignError>),
    Abstain(Result<SignatureChecked<Abstain>, SignError>),
    Report(Result<SignatureChecked<RoundReport>, SignError>),
    SecAggKeys(Result<SignatureChecked<SecAggKeys>, SignError>),
    SecAggShares(Result<SignatureChecked<SecAggShares>, SignError>),
    SecAggReveal(Result<SignatureChecked<SecAggReveal>, SignError>),
    /// Everything else, as received.
    Other(ToCoordinator),
}

impl Incoming {
    /// Checks the signature of a signed message under `key`.
    fn check(msg: ToCoordinator, key: &fedistill_shared::crypto::PublicKey) -> Self {
        match msg {
            ToCoordinator::SoftLabels(s) => Incoming::SoftLabels(s.verify_signature(key)),
            ToCoordinator::Abstain(s) => Incoming::Abstain(s.verify_signature(key)),
            ToCoordinator::Report(s) => Incoming::Report(s.verify_signature(key)),
            ToCoordinator::SecAggKeys(s) => Incoming::SecAggKeys(s.verify_signature(key)),
            ToCoordinator::SecAggShares(s) => Incoming::SecAggShares(s.verify_signature(key)),
            ToCoordinator::SecAggReveal(s) => Incoming::SecAggReveal(s.verify_signature(key)),
            other => Incoming::Other(other),
        }
    }
}

/// Finishes verifying a message of `p` whose signature its connection task checked: the key must still be
/// `p`'s roster key (`key`), and the envelope must name `p` and be of this federation, `round` and fresh
/// under `guard`. A refusal is the reply to send.
fn finish_verify<T: SignedMessage>(
    checked: Result<SignatureChecked<T>, SignError>,
    key: &fedistill_shared::crypto::PublicKey,
    p: &ParticipantId,
    guard: &ReplayGuard,
    round: RoundId,
) -> Result<fedistill_shared::crypto::Verified<T>, Reply> {
    let refuse = |e: SignError| Reply::Reject {
        code: RejectCode::from(&e),
        message: e.to_string(),
    };
    match checked {
        Ok(c) if c.key() != key => Err(Reply::Reject {
            code: RejectCode::BadSignature,
            message: format!("the message was signed under a key that is no longer {p}'s"),
        }),
        Ok(c) => c.verify(&Signer::Participant(p.clone()), guard, round).map_err(refuse),
        Err(e) => Err(refuse(e)),
    }
}

/// What a finished coordinator run reports.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Rounds aggregated by this process (resumed rounds included).
    pub rounds: u64,
    /// Final log size.
    pub log_size: u64,
}

/// Binds, then runs rounds until all are done or `cancel` fires. `on_ready` receives the bound QUIC
/// address and the status address once listening.
pub async fn run(
    settings: CoordinatorSettings,
    cancel: CancellationToken,
    on_ready: impl FnOnce(std::net::SocketAddr, Option<std::net::SocketAddr>) + Send,
) -> anyhow::Result<RunSummary> {
    let layout = FederationLayout::new(&settings.federation_dir);
    let fed_cfg = layout
        .load_config()
        .with_context(|| format!("loading federation config in {}", settings.federation_dir.display()))?;
    let key_pem = std::fs::read_to_string(layout.coordinator_signing_key())
        .with_context(|| format!("reading {}", layout.coordinator_signing_key().display()))?;
    let key = SigningIdentity::from_pkcs8_pem(&key_pem).context("parsing the coordinator signing key")?;
    let federation = fed_cfg.federation.clone();

    // The task: a card and the public file it names (the deployment path), or a catalog split.
    let (task, public_digest, classes, public_len, task_line) = match &settings.task {
        TaskSource::Card(files) => {
            info!(card = %files.card.display(), public = %files.public.display(), "loading the task card");
            let t = tokio::task::block_in_place(|| TaskArtifact::load(&files.card, &files.public, &key, &federation))
                .context("loading the task")?;
            let line = format!("task {} (card {})", t.card().name, hex::encode(t.card().digest()));
            let (digest, classes, rows) = (t.public_digest(), t.card().classes().len() as u32, t.card().public.rows);
            (Some(Arc::new(t)), digest, classes, rows, line)
        }
        TaskSource::Catalog(data) => {
            info!(dataset = %data.dataset, "deriving the public transfer set");
            let split = tokio::task::block_in_place(|| data.load_split())?;
            let out = (
                Digest(split.public_digest),
                split.public.num_classes as u32,
                split.public.n as u64,
            );
            (None, out.0, out.1, out.2, format!("dataset {}", data.dataset))
        }
    };

    if classes == 1 {
        check_regression_settings(&settings)?;
    }

    let origin = format!("fedistill/{}", federation.as_str());
    let mut store = tokio::task::block_in_place(|| Store::open(&settings.store, key.to_dalek(), &origin))
        .with_context(|| format!("opening the coordinator store {}", settings.store.display()))?;
    if store.size() == 0 {
        let created = Record::FederationCreated {
            federation_id: federation.as_str().to_string(),
            coordinator_key: key.public_key().to_bytes(),
            created_unix: unix_seconds(),
            config_digest: Digest::of(format!("{settings:?}").as_bytes()),
        };
        // The task is declared with the federation, in the same transaction.
        let records: Vec<Record> = std::iter::once(created)
            .chain(task.as_ref().map(|t| t.record()))
            .collect();
        tokio::task::block_in_place(|| store.append(&records, &[]))?;
    } else {
        // A restarted federation keeps the task it declared.
        let declared = match store.size() {
            1 => None,
            _ => match store.records(1..2)?.pop() {
                Some(r @ Record::TaskDeclared { .. }) => Some(r),
                _ => None,
            },
        };
        let configured = task.as_ref().map(|t| t.record());
        anyhow::ensure!(
            declared == configured,
            "the store {} declares {} but the config declares {}: a federation keeps its task (start a new \
             store for another task)",
            settings.store.display(),
            declared.map_or("no task card".to_string(), |r| r.summary()),
            configured.map_or("no task card".to_string(), |r| r.summary())
        );
    }

    // Which participants (and keys) the log already enrolled: auditors check every contribution against it.
    let mut enrolled = BTreeMap::new();
    for r in store.records(0..store.size())? {
        if let Record::RosterChange {
            participant,
            action,
            signing_key,
            ..
        } = r
        {
            match action {
                RosterAction::Revoke => {
                    enrolled.remove(&participant);
                }
                _ => {
                    enrolled.insert(participant, signing_key);
                }
            }
        }
    }

    let cfg = CoordinatorConfig {
        federation: federation.clone(),
        rounds: settings.rounds,
        min_participants: settings.min_participants,
        quorum: settings.quorum,
        collect_timeout: Millis(settings.collect_timeout_ms),
        report_timeout: Millis(settings.report_timeout_ms),
        public_len,
        samples_per_round: settings.samples_per_round,
        public_digest,
        classes,
        rule: settings.rule,
        temperature: settings.temperature,
        max_payload: settings.max_frame_bytes,
        secure: settings.secure,
        stop: settings.stop,
    };
    if let Some(p) = settings.secure.filter(|p| p.noise_sigma2 > 0) {
        use fedistill_shared::privacy::{accountant, distributed};
        let l2 = distributed::row_l2_sensitivity(fedistill_shared::protocol::secagg::FRAC_BITS, 1.0);
        let d = (settings.samples_per_round as usize).saturating_mul(classes as usize);
        let rho = distributed::distributed_gaussian_rho(p.noise_sigma2 as f64, p.threshold as usize, l2, d);
        let epsilon = accountant::epsilon_for(
            rho * settings.rounds as f64,
            1e-5,
            &accountant::default_orders(),
            accountant::Conversion::Improved,
        );
        info!(
            threshold = p.threshold,
            noise_sigma2_per_participant = p.noise_sigma2,
            rho_per_round = rho,
            rounds = settings.rounds,
            epsilon_at_delta_1e_5 = epsilon,
            "secure aggregation with distributed discrete Gaussian noise: with at least {} survivors, the sum of \
             each round is {rho:.4e}-zCDP for one participant's released row; over {} rounds ({epsilon:.3}, 1e-5)-DP",
            p.threshold,
            settings.rounds
        );
    }
    let start = Instant::now();
    let (sm, guard) = match store.state(SNAPSHOT_KEY)? {
        Some(bytes) => {
            let mut snap: Snapshot = serde_json::from_slice(&bytes).context("decoding the stored round snapshot")?;
            load_contributions(&store, &mut snap, &federation)?;
            info!(round = snap.round.0, phase = %snap.phase, contributions = snap.contributions.len(), "resuming from the durable round state");
            let last: Vec<(Signer, u64)> = match store.state(GUARD_KEY)? {
                Some(g) => serde_json::from_slice(&g).context("decoding the stored replay guard")?,
                None => Vec::new(),
            };
            (
                CoordinatorRound::restore(cfg, snap, Millis(0)),
                ReplayGuard::with_state(federation.clone(), last),
            )
        }
        None => (CoordinatorRound::new(cfg), ReplayGuard::new(federation.clone())),
    };

    let anomaly = restore_tracker(store.state(ANOMALY_KEY)?.as_deref(), settings.quarantine.policy)?;
    if !settings.quarantine.enabled {
        info!("[quarantine] enabled = false: no anomaly scores, no new quarantines");
    }

    let files = FederationFiles::from_federation_dir(&settings.federation_dir)?;
    let server = Arc::new(Server::bind(settings.bind, &files).context("binding the QUIC endpoint")?);
    let quic_addr = server.local_addr()?;
    let obs = Arc::new(Observability::new(Status {
        task: format!(
            "{task_line}, rule {}, temperature {}, {} samples per round",
            settings.rule.name(),
            settings.temperature,
            settings.samples_per_round
        ),
        ..Status::default()
    }));
    obs.watch_roster(server.reload_handle());
    let status_addr = match settings.status {
        Some(addr) => Some(crate::metrics::serve(addr, obs.clone(), &settings.federation_dir, cancel.clone()).await?),
        None => None,
    };
    info!(%quic_addr, status = ?status_addr, federation = %federation, "coordinator listening");
    on_ready(quic_addr, status_addr);

    let (tx, rx) = mpsc::channel::<Event>(1024);
    let accept_cancel = cancel.child_token();
    let limits = Arc::new(StreamLimits::new(
        settings.max_frame_bytes,
        Duration::from_millis(settings.stream_timeout_ms),
        settings.frame_budget_bytes,
    ));
    obs.metrics.watch_frame_budget(limits.global.clone());
    tokio::spawn(accept_loop(
        server.clone(),
        tx.clone(),
        accept_cancel.clone(),
        limits,
        obs.clone(),
        task,
    ));

    let mut core = Core {
        sm,
        store,
        key,
        federation,
        guard,
        seq: 0,
        start,
        conns: BTreeMap::new(),
        conn_keys: BTreeMap::new(),
        enrolled,
        obs,
        history: Vec::new(),
        round_started: Instant::now(),
        round_bytes_up: 0,
        pending: Pending::default(),
        status_at: None,
        status_key: None,
        status_due: false,
        rounds_done: 0,
        finished_at: None,
        last_aggregate: None,
        anomaly,
        quarantine_enabled: settings.quarantine.enabled,
        aggregate_encoding: settings.aggregate_encoding,
        roster_path: FederationLayout::new(&settings.federation_dir).roster(),
    };
    core.last_aggregate = core.stored_aggregate_frame()?;
    core.sm.handle_timeout(core.now());
    core.pump()?;
    core.publish_status(true);
    let result = core.run(rx, cancel.clone()).await;
    accept_cancel.cancel();
    server.close().await;
    result
}

/// Most events handled together before their writes are made durable and they are answered.
const MAX_BATCH: usize = 512;

/// Longest `/status` may lag the core's state. It is rebuilt at most this often (it walks every participant
/// and reads the checkpoint table), and at once when the round, its phase or the history changes.
const STATUS_INTERVAL: Duration = Duration::from_millis(100);

/// A reply held until its batch is durable.
struct Held {
    reply: oneshot::Sender<Reply>,
    answer: Reply,
}

/// The writes of the events handled since the last [`Core::write_pending`], which makes them durable in one
/// transaction before any of their replies leaves (group commit).
#[derive(Default)]
struct Pending {
    batch: Batch,
    /// The round snapshot and the replay guard changed: the flush writes them as they are then.
    round_state: bool,
    replies: Vec<Held>,
    /// Accepted contributions (participant, signed bytes), counted once durable.
    contributions: Vec<(ParticipantId, u64)>,
}

/// What `/status` said about the round when last published: a change is published at once.
#[derive(Debug, Clone, PartialEq)]
struct StatusKey {
    round: u64,
    phase: &'static str,
    history: usize,
    finished: bool,
}

struct Core {
    /// How the consensus is packed in `AggregateLabels` (the log always records the f32 digest).
    aggregate_encoding: Encoding,
    sm: CoordinatorRound,
    store: Store,
    key: SigningIdentity,
    federation: FederationId,
    guard: ReplayGuard,
    seq: u64,
    start: Instant,
    conns: BTreeMap<ParticipantId, (u64, PushQueue)>,
    conn_keys: BTreeMap<ParticipantId, fedistill_shared::crypto::PublicKey>,
    enrolled: BTreeMap<ParticipantId, [u8; 32]>,
    obs: Arc<Observability>,
    history: Vec<RoundStatus>,
    round_started: Instant,
    round_bytes_up: u64,
    /// What the events handled since the last [`Core::write_pending`] wrote, and their held replies.
    pending: Pending,
    /// When the status was last published, and what it said about the round then.
    status_at: Option<Instant>,
    status_key: Option<StatusKey>,
    /// An event changed the state since the last publication (published within [`STATUS_INTERVAL`]).
    status_due: bool,
    rounds_done: u64,
    finished_at: Option<Instant>,
    last_aggregate: Option<Vec<u8>>,
    anomaly: AnomalyTracker,
    quarantine_enabled: bool,
    /// The operator-signed roster file, served to participants (`GetRoster`) so that they can check each
    /// other's secure-aggregation key adverts.
    roster_path: std::path::PathBuf,
}

impl Core {
    fn now(&self) -> Millis {
        Millis(self.start.elapsed().as_millis() as u64)
    }

    /// SHA-256 of the roster file as it is now (zero if it cannot be read: participants then refuse).
    fn roster_digest(&self) -> Digest {
        match tokio::task::block_in_place(|| std::fs::read(&self.roster_path)) {
            Ok(b) => Digest::of(&b),
            Err(e) => {
                warn!(error = %e, path = %self.roster_path.display(), "reading the roster for its digest");
                Digest([0; 32])
            }
        }
    }

    async fn run(&mut self, mut rx: mpsc::Receiver<Event>, cancel: CancellationToken) -> anyhow::Result<RunSummary> {
        loop {
            let wake = self.sm.poll_timeout().map(|t| {
                let now = self.now();
                Duration::from_millis(t.0.saturating_sub(now.0))
            });
            // After the last round, give participants a moment to fetch proofs and cosign, then stop.
            let linger = self
                .finished_at
                .map(|t| Duration::from_secs(3).saturating_sub(t.elapsed()));
            // A status publication held back by the interval is made when it ends.
            let status = self
                .status_due
                .then(|| STATUS_INTERVAL.saturating_sub(self.status_at.map_or(STATUS_INTERVAL, |t| t.elapsed())));
            let sleep = [wake, linger, status]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(Duration::from_secs(3600));
            tokio::select! {
                _ = cancel.cancelled() => {
                    info!(round = self.sm.round().0, "shutting down: the round state is durable and resumes on restart");
                    break;
                }
                ev = rx.recv() => {
                    let Some(ev) = ev else { break };
                    // Group commit: the events already queued are handled with this one, their writes made
                    // durable in one transaction, and only then are they answered.
                    self.handle_event(ev)?;
                    for _ in 1..MAX_BATCH {
                        match rx.try_recv() {
                            Ok(ev) => self.handle_event(ev)?,
                            Err(_) => break,
                        }
                    }
                    // `pump` below writes the batch: in the transaction of the round transition the batch
                    // caused (the last contribution's goes with the round's commit), or on its own.
                }
                _ = tokio::time::sleep(sleep) => {
                    if let Some(t) = self.finished_at {
                        if t.elapsed() >= Duration::from_secs(3) && (self.conns.is_empty() || t.elapsed() >= Duration::from_secs(3)) {
                            info!("all rounds finished");
                            break;
                        }
                    }
                    let now = self.now();
                    self.sm.handle_timeout(now);
                }
            }
            self.pump()?;
            self.publish_status(false);
        }
        Ok(RunSummary {
            rounds: self.rounds_done,
            log_size: self.store.size(),
        })
    }

    fn next_seq(&mut self) -> u64 {
        // Sequence numbers must grow across restarts without a write per message: use the wall clock in
        // microseconds, never below the last one used.
        self.seq = (self.seq + 1).max(unix_micros());
        self.seq
    }

    fn sign<T: SignedMessage>(&mut self, round: RoundId, m: &T) -> anyhow::Result<Signed<T>> {
        let seq = self.next_seq();
        Ok(Signed::sign(
            &self.key,
            Signer::Coordinator,
            self.federation.clone(),
            round,
            seq,
            m,
        )?)
    }

    fn push_to(&mut self, p: &ParticipantId, msg: &ToParticipant) -> anyhow::Result<usize> {
        let frame = encode_frame(KIND_TO_PARTICIPANT, msg)?;
        let len = frame.len();
        if let Some((_, tx)) = self.conns.get(p) {
            if tx.send(Arc::from(frame)).is_err() {
                debug!(participant = %p, "push to a closing connection dropped");
            }
        }
        Ok(len)
    }

    fn broadcast(&mut self, msg: &ToParticipant) -> anyhow::Result<u64> {
        let frame = encode_frame(KIND_TO_PARTICIPANT, msg)?;
        Ok(self.broadcast_frame(&frame))
    }

    /// Queues `frame` (encoded once, shared by every queue: no copy per participant) to every connected
    /// participant; returns the bytes queued.
    fn broadcast_frame(&mut self, frame: &[u8]) -> u64 {
        let shared: Arc<[u8]> = Arc::from(frame);
        let mut bytes = 0u64;
        for (p, (_, tx)) in &self.conns {
            if tx.send(Arc::clone(&shared)).is_err() {
                debug!(participant = %p, "push to a closing connection dropped");
            }
            bytes += frame.len() as u64;
        }
        bytes
    }

    /// Queues `p`'s accepted contribution for the batch's transaction: its signed payload in the payload
    /// table (where the round's commit records it, so the commit writes it no second time), the rest under its
    /// own state key, and the snapshot that names it. Each contribution is written once, and the per-message
    /// cost does not grow with the contributions already accepted.
    fn persist_contribution(&mut self, p: &ParticipantId) -> anyhow::Result<()> {
        let c = self
            .sm
            .contribution(p)
            .with_context(|| format!("the accepted contribution of {p} is missing from the round state"))?;
        let (stored, payload) = c.to_stored();
        let bytes = fedistill_shared::wire::encode_payload(&stored)?;
        self.pending.batch.payloads.push((stored.payload_digest, payload));
        self.pending
            .batch
            .state
            .push((contribution_key(self.sm.round(), p), bytes));
        self.pending.round_state = true;
        Ok(())
    }

    /// Group commit: makes what the events handled since the last write left pending durable in ONE
    /// transaction, with the round snapshot and the replay guard as they are now if they changed, then
    /// sends their replies. No reply leaves before the writes of its batch are durable: an `Ack` acknowledges
    /// a durable contribution, report, abstention or cosignature, and a refusal (a duplicate, say) may refer
    /// to one. If the transaction fails every `Ack` of the batch becomes an internal error (nothing
    /// acknowledged is lost; the participants retry) and the error is returned.
    fn write_pending(&mut self) -> anyhow::Result<()> {
        self.write_pending_with(Batch::default()).map(|_| ())
    }

    /// [`Core::write_pending`] with `with` (a round's opening or commit) appended to the same transaction;
    /// returns the latest signed checkpoint once durable.
    fn write_pending_with(&mut self, with: Batch) -> anyhow::Result<fedistill_shared::ledger::SignedCheckpoint> {
        let Pending {
            mut batch,
            round_state,
            replies,
            contributions,
        } = std::mem::take(&mut self.pending);
        batch.delete_state_prefixes.extend(with.delete_state_prefixes);
        batch.records.extend(with.records);
        batch.payloads.extend(with.payloads);
        batch.state.extend(with.state);
        batch.cosignatures.extend(with.cosignatures);
        let written = (|| -> anyhow::Result<fedistill_shared::ledger::SignedCheckpoint> {
            if round_state {
                batch.state.push((
                    SNAPSHOT_KEY.into(),
                    serde_json::to_vec(&self.sm.snapshot_without_payloads())?,
                ));
                batch
                    .state
                    .push((GUARD_KEY.into(), serde_json::to_vec(&self.guard_state())?));
            }
            if batch.is_empty() {
                return Ok(self.store.checkpoint_latest());
            }
            let checkpoint = tokio::task::block_in_place(|| self.store.append_batch(&batch))?;
            self.obs.metrics.log_size.set(self.store.size() as i64);
            Ok(checkpoint)
        })();
        match &written {
            Ok(_) => {
                let round = self.sm.round().0;
                for (participant, bytes) in contributions {
                    self.obs.metrics.contributions.inc();
                    self.obs.metrics.bytes_up.inc_by(bytes);
                    self.round_bytes_up += bytes;
                    info!(%participant, round, bytes, "contribution accepted");
                }
            }
            Err(e) => {
                error!(error = %format!("{e:#}"), messages = replies.len(), "storing a batch failed; its acknowledgements become internal errors")
            }
        }
        for held in replies {
            let answer = match (&written, held.answer) {
                (Err(e), Reply::Ack) => {
                    self.obs.metrics.reject(RejectCode::Internal.as_str());
                    Reply::Reject {
                        code: RejectCode::Internal,
                        message: format!("{e:#}"),
                    }
                }
                (_, answer) => answer,
            };
            let _ = held.reply.send(answer);
        }
        written
    }

    fn guard_state(&self) -> Vec<(Signer, u64)> {
        self.sm
            .connected()
            .cloned()
            .chain(self.conns.keys().cloned())
            .filter_map(|p| {
                let s = Signer::Participant(p);
                self.guard.last_seq(&s).map(|q| (s, q))
            })
            .collect()
    }

    fn handle_event(&mut self, ev: Event) -> anyhow::Result<()> {
        let now = self.now();
        match ev {
            Event::Connected { peer, conn_id, push } => {
                info!(participant = %peer.participant, "participant connected");
                // The log keeps the order of events: what the batch wrote so far goes first.
                if let Err(e) = self.write_pending() {
                    error!(error = %format!("{e:#}"), "storing the batch before an enrolment failed");
                }
                self.log_enrolment(&peer)?;
                self.conns.insert(peer.participant.clone(), (conn_id, push));
                self.conn_keys
                    .insert(peer.participant.clone(), peer.roster_entry.signing_key);
                self.obs.metrics.connected.set(self.conns.len() as i64);
                if self.sm.awaits_report_from(&peer.participant) {
                    if let (Some(frame), Some((_, tx))) = (&self.last_aggregate, self.conns.get(&peer.participant)) {
                        info!(participant = %peer.participant, round = self.sm.round().0, "re-sending the round's aggregate");
                        let _ = tx.send(Arc::from(frame.as_slice()));
                    }
                }
                self.sm.handle_connected(now, peer.participant);
            }
            Event::Disconnected { participant, conn_id } => {
                if self.conns.get(&participant).is_some_and(|(id, _)| *id == conn_id) {
                    info!(%participant, "participant disconnected");
                    self.conns.remove(&participant);
                    self.obs.metrics.connected.set(self.conns.len() as i64);
                    self.sm.handle_disconnected(now, &participant);
                }
            }
            Event::Request {
                participant,
                msg,
                reply,
            } => {
                let answer = self.handle_request(now, &participant, *msg);
                let answer = match answer {
                    Ok(r) => r,
                    Err(e) => {
                        // A store failure must not be acknowledged; the participant retries.
                        error!(%participant, error = %format!("{e:#}"), "request failed");
                        Reply::Reject {
                            code: RejectCode::Internal,
                            message: format!("{e:#}"),
                        }
                    }
                };
                if let Reply::Reject { code, message } = &answer {
                    if *code == RejectCode::NotNeeded {
                        debug!(%participant, reason = %message, "shares not needed");
                    } else {
                        warn!(%participant, code = %code, reason = %message, "rejected");
                    }
                    self.obs.metrics.reject(code.as_str());
                }
                self.pending.replies.push(Held { reply, answer });
            }
        }
        Ok(())
    }

    /// Appends a roster record the first time a participant (or a new key of it) is seen, so the log
    /// says which key every later contribution must verify under.
    fn log_enrolment(&mut self, peer: &PeerConnection) -> anyhow::Result<()> {
        let key = peer.roster_entry.signing_key.to_bytes();
        let action = match self.enrolled.get(&peer.participant) {
            Some(k) if *k == key => return Ok(()),
            Some(_) => RosterAction::Rekey,
            None => RosterAction::Enrol,
        };
        let record = Record::RosterChange {
            participant: peer.participant.clone(),
            action,
            signing_key: key,
            cert_fingerprint: peer.roster_entry.cert_sha256,
            reason: "admitted from the operator-signed roster".into(),
        };
        tokio::task::block_in_place(|| self.store.append(&[record], &[]))?;
        self.enrolled.insert(peer.participant.clone(), key);
        self.obs.metrics.log_size.set(self.store.size() as i64);
        Ok(())
    }

    fn key_of(&self, p: &ParticipantId) -> Option<fedistill_shared::crypto::PublicKey> {
        self.conn_keys.get(p).copied()
    }

    fn handle_request(&mut self, now: Millis, p: &ParticipantId, msg: Incoming) -> anyhow::Result<Reply> {
        let reject = |code: RejectCode, message: String| Reply::Reject { code, message };
        let Some(key) = self.key_of(p) else {
            return Ok(reject(
                RejectCode::UnknownParticipant,
                format!("{p} has no signing key in the roster"),
            ));
        };
        // Every envelope must verify under the roster key of the participant of the connection it arrived on
        // (its connection task checked the signature under that connection's key, which must still be the
        // participant's) and name that participant (its signature covers the name); the replay guard moves only
        // once the whole message is accepted and stored.
        let round = self.sm.round();
        let msg = match msg {
            Incoming::SoftLabels(checked) => {
                let verified = match finish_verify(checked, &key, p, &self.guard, round) {
                    Ok(v) => v,
                    Err(r) => return Ok(r),
                };
                return self.handle_soft_labels(now, p, verified);
            }
            Incoming::Abstain(checked) => {
                let verified = match finish_verify(checked, &key, p, &self.guard, round) {
                    Ok(v) => v,
                    Err(r) => return Ok(r),
                };
                return self.handle_abstain(now, p, verified);
            }
            Incoming::Report(checked) => {
                let verified = match finish_verify(checked, &key, p, &self.guard, round) {
                    Ok(v) => v,
                    Err(r) => return Ok(r),
                };
                return self.handle_report(now, p, verified);
            }
            Incoming::SecAggKeys(checked) => {
                return Ok(match finish_verify(checked, &key, p, &self.guard, round) {
                    Ok(v) => {
                        let fresh = v.fresh();
                        let r = self.sm.handle_secagg_keys(now, p, v);
                        self.secure_reply(fresh, r)
                    }
                    Err(r) => r,
                });
            }
            Incoming::SecAggShares(checked) => {
                return Ok(match finish_verify(checked, &key, p, &self.guard, round) {
                    Ok(v) => {
                        let fresh = v.fresh();
                        let r = self.sm.handle_secagg_shares(now, p, v);
                        self.secure_reply(fresh, r)
                    }
                    Err(r) => r,
                });
            }
            Incoming::SecAggReveal(checked) => {
                return Ok(match finish_verify(checked, &key, p, &self.guard, round) {
                    Ok(v) => {
                        let fresh = v.fresh();
                        let r = self.sm.handle_secagg_reveal(now, p, v);
                        self.secure_reply(fresh, r)
                    }
                    Err(r) => r,
                });
            }
            Incoming::Other(msg) => msg,
        };
        match msg {
            ToCoordinator::Hello { version, .. } => {
                if version != PROTOCOL_VERSION {
                    return Ok(reject(
                        RejectCode::Version,
                        format!(
                            "protocol version {version} is not supported (this coordinator speaks {PROTOCOL_VERSION})"
                        ),
                    ));
                }
                Ok(Reply::Welcome {
                    round: self.sm.round(),
                    finished: matches!(self.sm.phase(), fedistill_shared::protocol::Phase::Finished),
                })
            }
            ToCoordinator::GetRoster => {
                let path = self.roster_path.clone();
                match tokio::task::block_in_place(|| std::fs::read_to_string(&path)) {
                    Ok(toml) => Ok(Reply::Roster { toml }),
                    Err(e) => Ok(reject(
                        RejectCode::Internal,
                        format!("the roster {} cannot be read: {e}", path.display()),
                    )),
                }
            }
            // Checked by the connection task and handled above.
            ToCoordinator::SoftLabels(_)
            | ToCoordinator::Abstain(_)
            | ToCoordinator::Report(_)
            | ToCoordinator::SecAggKeys(_)
            | ToCoordinator::SecAggShares(_)
            | ToCoordinator::SecAggReveal(_) => Ok(reject(
                RejectCode::Internal,
                "a signed message reached the core loop without its signature check".into(),
            )),
            // Served by the connection tasks; never forwarded here.
            ToCoordinator::GetTask | ToCoordinator::GetPublic { .. } => Ok(no_task()),
            ToCoordinator::ProofRequest { old_size, new_size } => {
                match self.store.consistency_proof(old_size, new_size) {
                    Ok(hashes) => Ok(Reply::Proof { hashes }),
                    Err(e) => Ok(reject(RejectCode::BadProofRequest, e.to_string())),
                }
            }
            ToCoordinator::Cosign(c) => {
                let expected = format!("{WITNESS_PREFIX}{p}");
                if c.name != expected {
                    return Ok(reject(
                        RejectCode::BadCosignature,
                        format!("witness name {:?}, expected {expected:?}", c.name),
                    ));
                }
                let Ok(signature) = <[u8; 64]>::try_from(c.signature.as_slice()) else {
                    return Ok(reject(RejectCode::BadCosignature, "signature is not 64 bytes".into()));
                };
                let Ok(vk) = ed25519_dalek::VerifyingKey::from_bytes(&key.to_bytes()) else {
                    return Ok(reject(
                        RejectCode::BadCosignature,
                        "roster key is not a valid ed25519 key".into(),
                    ));
                };
                let witness = WitnessKey {
                    name: expected,
                    key: vk,
                };
                let cosig = LedgerCosignature {
                    name: c.name,
                    key_id: c.key_id,
                    timestamp: c.timestamp,
                    signature,
                };
                match self.store.check_cosignature(c.size, &witness, &cosig) {
                    Ok(checked) => {
                        self.pending.batch.cosignatures.push(checked);
                        Ok(Reply::Ack)
                    }
                    Err(e) => Ok(reject(RejectCode::BadCosignature, e.to_string())),
                }
            }
        }
    }

    /// The reply to a secure-aggregation message the state machine took (`Ok`) or refused. Accepted ones move
    /// the replay guard and are answered without a write: a secure round's secrets live in memory, a
    /// restarted coordinator runs the round again from its key adverts with fresh keys, and the round's
    /// commit logs what was used. (The guard's new high-water mark is stored with the next write; only the
    /// participant itself can send on its connection, so nobody else could replay these in between.)
    fn secure_reply(&mut self, fresh: fedistill_shared::crypto::Fresh, r: Result<(), Rejection>) -> Reply {
        match r {
            Ok(()) => {
                self.guard.accept(fresh);
                Reply::Ack
            }
            Err(e) => Reply::Reject {
                code: e.code(),
                message: e.to_string(),
            },
        }
    }

    /// Verified soft labels from `p`: into the state machine, then queued for the batch's transaction.
    fn handle_soft_labels(
        &mut self,
        now: Millis,
        p: &ParticipantId,
        verified: fedistill_shared::crypto::Verified<SoftLabels>,
    ) -> anyhow::Result<Reply> {
        let bytes = verified.envelope().payload.len() as u64;
        let fresh = verified.fresh();
        match self.sm.handle_soft_labels(now, p, verified) {
            Ok(()) => {
                self.guard.accept(fresh);
                self.persist_contribution(p)?;
                // Counted (and logged) once the batch is durable.
                self.pending.contributions.push((p.clone(), bytes));
                Ok(Reply::Ack)
            }
            Err(e) => Ok(Reply::Reject {
                code: e.code(),
                message: e.to_string(),
            }),
        }
    }

    /// A verified abstention from `p`: the state machine checks it (its figures before anything changes) and
    /// returns its `abstention` record, which is logged with the message in the batch's transaction.
    fn handle_abstain(
        &mut self,
        now: Millis,
        p: &ParticipantId,
        verified: fedistill_shared::crypto::Verified<Abstain>,
    ) -> anyhow::Result<Reply> {
        let fresh = verified.fresh();
        let (round, reason, figures) = {
            let body = verified.value();
            (body.round, body.reason, body.figures.clone())
        };
        match self.sm.handle_abstain(now, p, verified) {
            Ok(logged) => {
                self.guard.accept(fresh);
                self.append(logged);
                warn!(participant = %p, round = round.0, %reason, ?figures, "participant abstains from the round; not waiting for it");
                Ok(Reply::Ack)
            }
            Err(e) => Ok(Reply::Reject {
                code: e.code(),
                message: e.to_string(),
            }),
        }
    }

    /// A verified round report from `p`: the state machine checks it (its metrics and privacy spend before
    /// anything changes) and returns its `round_report` record and, for a participant with DP, its
    /// `privacy_spend` record, which are logged with the message in the batch's transaction.
    fn handle_report(
        &mut self,
        now: Millis,
        p: &ParticipantId,
        verified: fedistill_shared::crypto::Verified<RoundReport>,
    ) -> anyhow::Result<Reply> {
        let fresh = verified.fresh();
        match self.sm.handle_report(now, p, verified) {
            Ok(logged) => {
                self.guard.accept(fresh);
                self.append(logged);
                Ok(Reply::Ack)
            }
            Err(e) => Ok(Reply::Reject {
                code: e.code(),
                message: e.to_string(),
            }),
        }
    }

    /// Queues what an accepted abstention or report puts in the log (records and the signed message) for
    /// the batch's transaction, with the round state.
    fn append(&mut self, logged: MessageRecords) {
        self.pending.batch.records.extend(logged.records);
        self.pending.batch.payloads.push(logged.payload);
        self.pending.round_state = true;
    }

    /// Carries out the state machine's outputs. Whatever the handled events left pending is written in the
    /// transaction of the first output that writes (a round's opening or commit, which a failed write
    /// stops the coordinator on, as a restart resumes from the durable state) or, if none does, on its own.
    fn pump(&mut self) -> anyhow::Result<()> {
        while let Some(out) = self.sm.poll_output() {
            match out {
                Output::Broadcast(OutMessage::Open(open)) => {
                    info!(round = open.round.0, samples = open.sample_ids.len(), rule = %open.rule.name(), "round opened");
                    self.round_started = Instant::now();
                    self.round_bytes_up = 0;
                    let s = self.sign(open.round, &open)?;
                    // Persist before broadcast: no participant ever labels for a round opening the store
                    // does not hold, so a crash between the two re-sends this same opening on reconnect.
                    // The snapshot names no contribution: the previous round's go in the same transaction.
                    self.pending.round_state = true;
                    self.write_pending_with(Batch {
                        delete_state_prefixes: vec![CONTRIBUTION_PREFIX.into()],
                        ..Batch::default()
                    })?;
                    failpoint("open-persisted", open.round);
                    self.broadcast(&ToParticipant::Open(s))?;
                }
                Output::Send(p, OutMessage::Open(open)) => {
                    let s = self.sign(open.round, &open)?;
                    self.push_to(&p, &ToParticipant::Open(s))?;
                }
                Output::Broadcast(OutMessage::Finished) => {
                    let msg = self.finished_message()?;
                    self.broadcast(&msg)?;
                }
                Output::Send(p, OutMessage::Finished) => {
                    let msg = self.finished_message()?;
                    self.push_to(&p, &msg)?;
                }
                Output::Commit(commit) => self.commit(*commit)?,
                Output::RoundClosed {
                    round,
                    reports,
                    missing,
                } => {
                    info!(round = round.0, reports = reports.len(), missing = ?missing.iter().map(|p| p.as_str()).collect::<Vec<_>>(), "round closed");
                    self.pending.round_state = true;
                    self.write_pending()?;
                    // Between two rounds, the WAL is copied into the database, so that no round's commit
                    // does it (SQLite's own checkpoint would run inside whichever commit crosses its limit).
                    if let Err(e) = tokio::task::block_in_place(|| self.store.checkpoint_wal()) {
                        warn!(error = %e, "copying the WAL into the database failed; SQLite retries at its limit");
                    }
                }
                Output::Broadcast(OutMessage::SecAggRoster { round, adverts }) => {
                    info!(
                        round = round.0,
                        participants = adverts.len(),
                        "secure round: key adverts relayed"
                    );
                    let roster_digest = self.roster_digest();
                    let msg = SecAggRoster {
                        round,
                        adverts,
                        roster_digest,
                    };
                    let s = self.sign(round, &msg)?;
                    self.broadcast(&ToParticipant::SecAggRoster(s))?;
                }
                Output::Send(p, OutMessage::SecAggRoster { round, adverts }) => {
                    let roster_digest = self.roster_digest();
                    let s = self.sign(
                        round,
                        &SecAggRoster {
                            round,
                            adverts,
                            roster_digest,
                        },
                    )?;
                    self.push_to(&p, &ToParticipant::SecAggRoster(s))?;
                }
                Output::Send(p, OutMessage::SecAggDelivery(d)) => {
                    let s = self.sign(d.round, &d)?;
                    self.push_to(&p, &ToParticipant::SecAggDelivery(s))?;
                }
                Output::Broadcast(OutMessage::SecAggDelivery(d)) => {
                    let s = self.sign(d.round, &d)?;
                    self.broadcast(&ToParticipant::SecAggDelivery(s))?;
                }
                Output::Send(p, OutMessage::SecAggUnmask(u)) => {
                    failpoint("secure-unmasking", u.round);
                    let s = self.sign(u.round, &u)?;
                    self.push_to(&p, &ToParticipant::SecAggUnmask(s))?;
                }
                Output::Broadcast(OutMessage::SecAggUnmask(u)) => {
                    info!(
                        round = u.round.0,
                        survivors = u.survivors.len(),
                        dropped = u.dropped.len(),
                        "secure round: unmasking"
                    );
                    let s = self.sign(u.round, &u)?;
                    self.broadcast(&ToParticipant::SecAggUnmask(s))?;
                }
                Output::RoundFailed { round, reason } => {
                    warn!(round = round.0, %reason, "secure round closed without an aggregate");
                    self.pending.round_state = true;
                }
                Output::QuorumNotMet { round, have, need } => {
                    warn!(
                        round = round.0,
                        have, need, "quorum not met by the deadline; still collecting"
                    );
                }
                Output::Converged(c) => {
                    info!(
                        round = c.round,
                        best_round = c.best_round,
                        best_median_accuracy = c.best,
                        "converged: the median reported accuracy stopped improving ([stop]); no further round opens"
                    );
                }
                Output::Finished => {
                    info!(
                        rounds = self.sm.round().0,
                        max_rounds = self.sm.config().rounds,
                        "federation finished"
                    );
                    self.pending.round_state = true;
                    self.write_pending()?;
                    self.finished_at = Some(Instant::now());
                }
            }
        }
        // A batch that caused no round transition is written on its own; a failure is answered (internal
        // errors instead of acknowledgements) and the coordinator keeps serving.
        if let Err(e) = self.write_pending() {
            error!(error = %format!("{e:#}"), "storing a batch of messages failed");
        }
        Ok(())
    }

    /// The aggregate frame of the last committed round, signed again from what its commit stored (or, from
    /// an earlier version's store, the frame it stored).
    fn stored_aggregate_frame(&mut self) -> anyhow::Result<Option<Vec<u8>>> {
        let Some(bytes) = self.store.state(ROUND_AGGREGATE_KEY)? else {
            return Ok(self.store.state(AGGREGATE_KEY)?);
        };
        let StoredAggregate {
            checkpoint_size,
            mut message,
        } = fedistill_shared::wire::decode_payload(&bytes).context("decoding the stored round aggregate")?;
        let checkpoint = self.store.log_checkpoint(checkpoint_size)?.with_context(|| {
            format!("the stored round aggregate names checkpoint {checkpoint_size}, which is not stored")
        })?;
        message.checkpoint = String::from_utf8(
            checkpoint
                .to_note()
                .map_err(|e| anyhow::anyhow!("checkpoint note: {e}"))?,
        )?;
        let s = self.sign(message.round, &message)?;
        Ok(Some(encode_frame(KIND_TO_PARTICIPANT, &ToParticipant::Aggregate(s))?))
    }

    fn finished_message(&self) -> anyhow::Result<ToParticipant> {
        let note = self
            .store
            .checkpoint_latest()
            .to_note()
            .map_err(|e| anyhow::anyhow!("checkpoint note: {e}"))?;
        Ok(ToParticipant::Finished {
            rounds: self.sm.config().rounds,
            checkpoint: String::from_utf8(note)?,
        })
    }

    fn commit(&mut self, c: RoundCommit) -> anyhow::Result<()> {
        let now = self.now();
        let collect_s = self.round_started.elapsed().as_secs_f64();
        let t_assemble = Instant::now();
        // The protocol core assembles the records and the message; this driver signs, persists and sends.
        let mut assembled = c.records(&self.federation, unix_micros() / 1000 + c.open.deadline_ms)?;
        assembled.sign_aggregate(self.key.sign_raw(&assembled.statement).to_vec());
        let contributors = c.contributors();
        let mut records = assembled.records;
        // Each contribution's payload was stored with the contribution: the commit writes it no second time.
        let mut payloads = assembled.payloads;
        payloads.retain(|(d, _)| !self.store.has_payload(d).unwrap_or(false));
        for (p, score) in &c.anomaly {
            debug!(round = c.round.0, participant = %p, score, "distance to consensus");
        }
        // Quarantine policy (docs/privacy.md): decided and logged in the round's transaction.
        let decisions = if self.quarantine_enabled {
            self.anomaly.handle_round(c.round, &c.anomaly)
        } else {
            Vec::new()
        };
        for q in decisions {
            warn!(round = c.round.0, participant = %q.participant, reason = %q.reason, "participant quarantined");
            let record = self
                .sm
                .apply_quarantine(&q)
                .map_err(|e| anyhow::anyhow!("quarantine evidence: {e}"))?;
            records.push(record);
        }
        // Releases (policy `release_after_rounds`): readmitted from the next round, logged in this transaction.
        for r in self.anomaly.releases_due(c.round) {
            info!(round = c.round.0, participant = %r.participant, quarantined_round = r.quarantined_round.0, "participant released from quarantine");
            records.push(self.sm.apply_release(&r));
        }
        let anomaly_state = serde_json::to_vec(&self.anomaly)?;
        let assemble_s = t_assemble.elapsed().as_secs_f64();
        let t_commit = Instant::now();
        // The state machine moves to reporting; its snapshot is written in the same transaction as the
        // round's records, so a restart never re-aggregates a committed round. The aggregate message goes in
        // too, its checkpoint left blank: the checkpoint is signed once the transaction is durable, and a
        // restarted coordinator puts the same signed note in and sends it again (no second write before the
        // broadcast). The contributions and messages still pending (the last ones, which completed the
        // round) share this transaction: one fsync for the round.
        self.sm.handle_committed(now, c.round);
        let mut msg = c.aggregate_message(self.aggregate_encoding, String::new())?;
        let checkpoint_size = self.store.size() + (self.pending.batch.records.len() + records.len()) as u64;
        let stored = fedistill_shared::wire::encode_payload(&StoredAggregate {
            checkpoint_size,
            message: msg.clone(),
        })?;
        self.pending.round_state = true;
        let checkpoint = self.write_pending_with(Batch {
            records,
            payloads,
            state: vec![
                (ANOMALY_KEY.into(), anomaly_state),
                (ROUND_AGGREGATE_KEY.into(), stored),
            ],
            ..Batch::default()
        })?;
        anyhow::ensure!(
            checkpoint.checkpoint.size == checkpoint_size,
            "the round's checkpoint covers {} records, expected {checkpoint_size}",
            checkpoint.checkpoint.size
        );
        let commit_s = t_commit.elapsed().as_secs_f64();
        let t_send = Instant::now();
        msg.checkpoint = String::from_utf8(
            checkpoint
                .to_note()
                .map_err(|e| anyhow::anyhow!("checkpoint note: {e}"))?,
        )?;
        let s = self.sign(c.round, &msg)?;
        let frame = encode_frame(KIND_TO_PARTICIPANT, &ToParticipant::Aggregate(s))?;
        let sent = self.broadcast_frame(&frame);
        self.last_aggregate = Some(frame);
        let seconds = self.round_started.elapsed().as_secs_f64();
        self.obs.metrics.rounds.inc();
        self.obs.metrics.bytes_down.inc_by(sent);
        self.obs.metrics.round_seconds.observe(seconds);
        self.rounds_done += 1;
        info!(
            round = c.round.0,
            contributors = contributors.len(),
            absent = ?c.absent.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
            log_size = self.store.size(),
            "aggregate committed and published"
        );
        self.history.push(RoundStatus {
            round: c.round.0,
            contributors: contributors.iter().map(|p| p.to_string()).collect(),
            absent: c.absent.iter().map(|p| p.to_string()).collect(),
            abstained: c.abstained.iter().map(|p| p.to_string()).collect(),
            bytes_up: self.round_bytes_up,
            bytes_down: sent,
            seconds,
            phases: [
                ("collect", collect_s),
                ("assemble", assemble_s),
                ("commit", commit_s),
                ("send", t_send.elapsed().as_secs_f64()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        });
        Ok(())
    }

    /// Publishes the state for `/status` and the console: at once when `now` is set or the round, its phase
    /// or the history changed, otherwise at most every [`STATUS_INTERVAL`] (the run loop wakes for a
    /// publication held back).
    fn publish_status(&mut self, now: bool) {
        let key = StatusKey {
            round: self.sm.round().0,
            phase: self.sm.phase().name(),
            history: self.history.len(),
            finished: self.finished_at.is_some(),
        };
        let recent = self.status_at.is_some_and(|t| t.elapsed() < STATUS_INTERVAL);
        if !now && recent && self.status_key.as_ref() == Some(&key) {
            self.status_due = true;
            return;
        }
        let Ok(mut s) = self.obs.status.lock() else { return };
        s.federation = self.federation.to_string();
        s.round = key.round;
        s.rounds = self.sm.config().rounds;
        s.phase = key.phase.to_string();
        s.connected = self.conns.keys().map(|p| p.to_string()).collect();
        s.log_size = self.store.size();
        // The history only grows: only its new rounds are copied.
        let published = s.history.len().min(self.history.len());
        s.history.extend_from_slice(&self.history[published..]);
        s.finished = key.finished;
        s.abstaining = self.sm.abstained().map(|p| p.to_string()).collect();
        s.quarantined = self.sm.quarantined().map(|p| p.to_string()).collect();
        s.quorum = self.sm.config().quorum as u64;
        s.expected = self.sm.expected().map(|p| p.to_string()).collect();
        s.received = self.sm.contribution_ids().map(|p| p.to_string()).collect();
        s.deadline_ms = match self.sm.phase() {
            fedistill_shared::protocol::Phase::Collecting { deadline }
            | fedistill_shared::protocol::Phase::Reporting { deadline } => {
                Some(deadline.0.saturating_sub(self.now().0))
            }
            _ => None,
        };
        let (connected, quarantined) = (s.connected.clone(), s.quarantined.clone());
        self.obs.fill_console(&self.store, &connected, &quarantined, &mut s);
        drop(s);
        self.status_at = Some(Instant::now());
        self.status_key = Some(key);
        self.status_due = false;
    }
}

/// Concurrent request streams one participant may have open, all of its connections together.
pub const STREAMS_PER_PARTICIPANT: usize = 8;

/// The limits every request stream runs under: the frame cap and deadline, one in-flight frame budget
/// shared by all connections, and per participant (across its connections) a stream limit and a frame
/// budget of its own, so one participant at its limits never holds what another needs.
struct StreamLimits {
    max_frame: usize,
    stream_timeout: Duration,
    global: FrameBudget,
    per_participant: std::sync::Mutex<BTreeMap<ParticipantId, (Arc<tokio::sync::Semaphore>, FrameQuota)>>,
}

impl StreamLimits {
    fn new(max_frame: usize, stream_timeout: Duration, global_bytes: usize) -> Self {
        Self {
            max_frame,
            stream_timeout,
            global: FrameBudget::new(global_bytes),
            per_participant: std::sync::Mutex::new(BTreeMap::new()),
        }
    }

    /// A participant's own budget: two frames of the largest size (one being read, one being decoded).
    fn own_budget_bytes(&self) -> usize {
        2 * (self.max_frame + fedistill_shared::wire::HEADER_LEN)
    }

    /// The stream slots and frame quota of `p` (created on its first connection, shared by all of them).
    fn of(&self, p: &ParticipantId) -> (Arc<tokio::sync::Semaphore>, FrameQuota) {
        let mut map = self.per_participant.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(p.clone())
            .or_insert_with(|| {
                (
                    Arc::new(tokio::sync::Semaphore::new(STREAMS_PER_PARTICIPANT)),
                    FrameQuota {
                        own: FrameBudget::new(self.own_budget_bytes()),
                        global: self.global.clone(),
                    },
                )
            })
            .clone()
    }
}

async fn accept_loop(
    server: Arc<Server>,
    tx: mpsc::Sender<Event>,
    cancel: CancellationToken,
    limits: Arc<StreamLimits>,
    obs: Arc<Observability>,
    task: Option<Arc<TaskArtifact>>,
) {
    let mut next_id = 0u64;
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return,
            a = server.accept() => a,
        };
        let peer = match accepted {
            None => return,
            Some(Err(rejection)) => {
                warn!(%rejection, "connection refused");
                obs.metrics.reject(rejection.code());
                continue;
            }
            Some(Ok(peer)) => peer,
        };
        next_id += 1;
        tokio::spawn(connection(
            peer,
            next_id,
            tx.clone(),
            cancel.clone(),
            limits.clone(),
            obs.clone(),
            task.clone(),
        ));
    }
}

async fn connection(
    peer: PeerConnection,
    conn_id: u64,
    tx: mpsc::Sender<Event>,
    cancel: CancellationToken,
    limits: Arc<StreamLimits>,
    obs: Arc<Observability>,
    task: Option<Arc<TaskArtifact>>,
) {
    let participant = peer.participant.clone();
    let key = peer.roster_entry.signing_key;
    let conn = peer.conn.clone();
    let (push_tx, mut push_rx) = mpsc::unbounded_channel::<Arc<[u8]>>();
    let pusher_conn = conn.clone();
    let pusher = tokio::spawn(async move {
        while let Some(frame) = push_rx.recv().await {
            let sent = async {
                let mut s = pusher_conn.open_uni().await.map_err(|e| e.to_string())?;
                write_frame(&mut s, &frame).await.map_err(|e| e.to_string())?;
                s.finish().map_err(|e| e.to_string())?;
                Ok::<(), String>(())
            };
            if let Err(e) = sent.await {
                debug!(error = %e, "push failed; the participant will catch up on reconnect");
                break;
            }
        }
    });
    if tx
        .send(Event::Connected {
            peer: Box::new(peer),
            conn_id,
            push: push_tx,
        })
        .await
        .is_err()
    {
        return;
    }
    // Participants never open unidirectional streams (the server allows none); stop any that appear anyway
    // so their bytes are never buffered.
    let uni_conn = conn.clone();
    let uni = tokio::spawn(async move {
        while let Ok(mut r) = uni_conn.accept_uni().await {
            let _ = r.stop(fedistill_transport::close_code::PROTOCOL_VIOLATION.into());
        }
    });
    // Request streams and their frame buffers count against the participant's own limits (shared by its
    // connections) and the global frame budget, so one peer cannot exhaust the core loop or the memory.
    let (slots, quota) = limits.of(&participant);
    let (max_frame, stream_timeout) = (limits.max_frame, limits.stream_timeout);
    loop {
        let stream = tokio::select! {
            _ = cancel.cancelled() => break,
            s = conn.accept_bi() => s,
        };
        let Ok((mut send, mut recv)) = stream else { break };
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        let tx = tx.clone();
        let participant = participant.clone();
        let obs = obs.clone();
        let quota = quota.clone();
        let task = task.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let reply = match recv_message_budgeted::<ToCoordinator>(&mut recv, max_frame, stream_timeout, &quota).await
            {
                // The task card and the public set are served here, off the core loop.
                Ok((kind, ToCoordinator::GetTask, _)) if kind == KIND_TO_COORDINATOR => match &task {
                    Some(t) => t.task_reply(),
                    None => no_task(),
                },
                Ok((kind, ToCoordinator::GetPublic { offset, max_len }, _)) if kind == KIND_TO_COORDINATOR => {
                    match task {
                        Some(t) => tokio::task::spawn_blocking(move || t.chunk_reply(offset, max_len))
                            .await
                            .unwrap_or_else(|e| Reply::Reject {
                                code: RejectCode::Internal,
                                message: format!("reading the public set failed: {e}"),
                            }),
                        None => no_task(),
                    }
                }
                Ok((kind, msg, _reservation)) if kind == KIND_TO_COORDINATOR => {
                    let msg = Incoming::check(msg, &key);
                    let (rtx, rrx) = oneshot::channel();
                    if tx
                        .send(Event::Request {
                            participant: participant.clone(),
                            msg: Box::new(msg),
                            reply: rtx,
                        })
                        .await
                        .is_err()
                    {
                        return;
                    }
                    match rrx.await {
                        Ok(r) => r,
                        Err(_) => return,
                    }
                }
                Ok((kind, _, _)) => Reply::Reject {
                    code: RejectCode::BadFrame,
                    message: format!("unexpected frame kind {}", kind.0),
                },
                Err(e) => {
                    let code = match &e {
                        fedistill_transport::TransportError::Timeout(_) => RejectCode::Timeout,
                        fedistill_transport::TransportError::Wire(_) => RejectCode::BadFrame,
                        fedistill_transport::TransportError::Truncated { .. } => RejectCode::Truncated,
                        fedistill_transport::TransportError::Budget { .. } => RejectCode::TooLarge,
                        _ => RejectCode::Stream,
                    };
                    warn!(%participant, error = %e, "bad stream");
                    obs.metrics.reject(code.as_str());
                    Reply::Reject {
                        code,
                        message: e.to_string(),
                    }
                }
            };
            if send_message(&mut send, KIND_REPLY, &reply).await.is_ok() {
                let _ = send.finish();
                // Wait for the peer to read the reply before the stream is dropped.
                let _ = tokio::time::timeout(Duration::from_secs(5), send.stopped()).await;
            }
        });
    }
    pusher.abort();
    uni.abort();
    let _ = tx.send(Event::Disconnected { participant, conn_id }).await;
}

/// The refusal of a task request by a coordinator that runs a catalog dataset.
fn no_task() -> Reply {
    Reply::Reject {
        code: RejectCode::NoTask,
        message: "this federation runs a catalog dataset ([data]), not a task card: there is no card or public \
                  file to serve"
            .into(),
    }
}

use fedistill_shared::failpoint::failpoint;
pub use fedistill_shared::failpoint::FAILPOINT_ENV;

fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn unix_seconds() -> u64 {
    unix_micros() / 1_000_000
}

/// The anomaly tracker to run with: the stored one (scores kept) under the configured policy, which wins over
/// the policy stored with it (docs/operations.md, `[quarantine]`), or a fresh one.
fn restore_tracker(stored: Option<&[u8]>, configured: QuarantinePolicy) -> anyhow::Result<AnomalyTracker> {
    match stored {
        Some(bytes) => {
            let mut tracker: AnomalyTracker =
                serde_json::from_slice(bytes).context("decoding the stored anomaly scores")?;
            if tracker.policy() != &configured {
                info!(stored = ?tracker.policy(), configured = ?configured, "the configured [quarantine] policy replaces the stored one; scores are kept");
                tracker.set_policy(configured).context("[quarantine] policy")?;
            }
            Ok(tracker)
        }
        None => AnomalyTracker::new(configured).context("[quarantine] policy"),
    }
}

/// Loads settings from a file and runs until done, SIGINT (Ctrl-C) or SIGTERM.
pub async fn run_from_file(path: &Path) -> anyhow::Result<RunSummary> {
    let settings = CoordinatorSettings::load(path)?;
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        if let Ok(signal) = fedistill_transport::signal::stop_requested().await {
            info!("{signal}: stopping after flushing the round state");
            c.cancel();
        }
    });
    let span = tracing::info_span!("coordinator", bind = %settings.bind);
    run(settings, cancel, |_, _| {}).instrument(span).await
}

/// A regression task (one output: its soft labels are real values, docs/protocol.md "Regression soft
/// labels") takes only the rules and encodings that treat them as numbers, and no secure aggregation (its
/// fixed-point encoding is of probabilities in [0, 1]). Refused at start, naming the setting.
fn check_regression_settings(settings: &CoordinatorSettings) -> anyhow::Result<()> {
    fedistill_shared::protocol::aggregate::check_rule_for_values(settings.rule)
        .map_err(|e| anyhow::anyhow!("rule: {e}"))?;
    settings
        .aggregate_encoding
        .check_shape(1)
        .map_err(|e| anyhow::anyhow!("aggregate_encoding: {e}"))?;
    anyhow::ensure!(
        settings.secure.is_none(),
        "secure_aggregation = true encodes probabilities in [0, 1] as fixed point; the task is a regression \
         (real-valued soft labels), which secure aggregation does not support: set secure_aggregation = false"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(s: &str) -> ParticipantId {
        ParticipantId::new(s)
    }

    /// Five contributors, `evil` 8x further from the consensus than the others.
    fn scores() -> Vec<(ParticipantId, f64)> {
        ["a", "b", "c", "d"]
            .iter()
            .map(|p| (pid(p), 0.2))
            .chain([(pid("evil"), 1.6)])
            .collect()
    }

    /// A contribution accepted from `p` in `round`: real signed f32 soft labels of two rows.
    fn signed_contribution(p: &str, round: RoundId) -> AcceptedContribution {
        signed_labels(p, round, &[0.25, 0.75, 0.5, 0.5])
    }

    /// As earlier versions stored a contribution (whole, under the legacy key): signed f32 soft labels of
    /// one row.
    fn contribution(p: &str) -> AcceptedContribution {
        signed_labels(p, RoundId(4), &[0.25, 0.75])
    }

    fn signed_labels(p: &str, round: RoundId, probabilities: &[f32]) -> AcceptedContribution {
        use fedistill_shared::protocol::softlabels;
        let ids: Vec<u64> = (0..probabilities.len() as u64 / 2).map(|i| i + 3).collect();
        let body =
            softlabels::soft_labels_message(round, Digest([1; 32]), &ids, probabilities, 2, Encoding::F32, 7).unwrap();
        let key = SigningIdentity::from_seed([9; 32]);
        let signed = Signed::sign(&key, Signer::Participant(pid(p)), federation(), round, 11, &body).unwrap();
        AcceptedContribution {
            participant: pid(p),
            probabilities: probabilities.to_vec(),
            samples: 7,
            encoding: Encoding::F32,
            payload_digest: signed.payload_digest(),
            envelope: signed,
            seq: 11,
        }
    }

    fn federation() -> FederationId {
        FederationId::new("fed").unwrap()
    }

    #[test]
    fn stored_contributions_come_back_and_a_tampered_store_is_refused_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(
            &dir.path().join("c.sqlite"),
            ed25519_dalek::SigningKey::from_bytes(&[3; 32]),
            "fedistill.test/fed",
        )
        .unwrap();
        let round = RoundId(4);
        // `a` as this version stores it (its payload in the payload table), `b` as earlier versions did.
        let a = signed_contribution("a", round);
        let (stored, payload) = a.to_stored();
        store
            .append_with_state(
                &[],
                &[(stored.payload_digest, payload)],
                &[(
                    contribution_key(round, &pid("a")),
                    fedistill_shared::wire::encode_payload(&stored).unwrap(),
                )],
            )
            .unwrap();
        let bytes = fedistill_shared::wire::encode_payload(&contribution("b")).unwrap();
        store
            .put_state(&legacy_contribution_key(round, &pid("b")), &bytes)
            .unwrap();
        let snap = |ids: &[&str]| Snapshot {
            round,
            open: None,
            phase: "collecting".into(),
            contributions: Vec::new(),
            contribution_ids: ids.iter().map(|p| pid(p)).collect(),
            reports: Vec::new(),
            contributors: Vec::new(),
            quarantined: Vec::new(),
            expected: Vec::new(),
            abstained: Vec::new(),
            convergence: Default::default(),
        };
        let load = |store: &Store, ids: &[&str]| {
            let mut s = snap(ids);
            load_contributions(store, &mut s, &federation()).map(|()| s)
        };
        let s = load(&store, &["a", "b"]).unwrap();
        let got: Vec<_> = s
            .contributions
            .iter()
            .map(|c| (c.participant.clone(), c.probabilities.clone()))
            .collect();
        assert_eq!(
            got,
            vec![(pid("a"), vec![0.25, 0.75, 0.5, 0.5]), (pid("b"), vec![0.25, 0.75])]
        );
        let bytes = |c: &AcceptedContribution| fedistill_shared::wire::encode_payload(&c.envelope).unwrap();
        assert_eq!(bytes(&s.contributions[0]), bytes(&a), "rebuilt byte for byte");
        assert_eq!(
            s.contributions[1].encoding,
            Encoding::F32,
            "read from the envelope of the legacy form"
        );
        assert!(s.contribution_ids.is_empty());

        // Named but not stored.
        let err = format!("{:#}", load(&store, &["a", "c"]).unwrap_err());
        assert!(
            err.contains("contribution from c that is not stored (contribution/4/c)"),
            "{err}"
        );
        // Garbage under either key.
        store.put_state("contribution/4/b", b"\xff\xff").unwrap();
        let err = format!("{:#}", load(&store, &["b"]).unwrap_err());
        assert!(
            err.contains("decoding the stored contribution contribution/4/b"),
            "{err}"
        );
        store.put_state("contribution/v2/4/c", b"\xff\xff").unwrap();
        let err = format!("{:#}", load(&store, &["c"]).unwrap_err());
        assert!(
            err.contains("decoding the stored contribution contribution/v2/4/c"),
            "{err}"
        );
        // Someone else's contribution under the key.
        let bytes = fedistill_shared::wire::encode_payload(&contribution("a")).unwrap();
        store.put_state("contribution/4/b", &bytes).unwrap();
        let err = format!("{:#}", load(&store, &["b"]).unwrap_err());
        assert!(
            err.contains("the stored contribution contribution/4/b is from a, not b"),
            "{err}"
        );
        let (mut stored, _) = a.to_stored();
        stored.participant = pid("c");
        store
            .put_state(
                "contribution/v2/4/a",
                &fedistill_shared::wire::encode_payload(&stored).unwrap(),
            )
            .unwrap();
        let err = format!("{:#}", load(&store, &["a"]).unwrap_err());
        assert!(
            err.contains("the stored contribution contribution/v2/4/a is from c, not a"),
            "{err}"
        );
        // Its payload missing from the payload table.
        let (mut stored, _) = a.to_stored();
        stored.payload_digest = Digest::of(b"elsewhere");
        store
            .put_state(
                "contribution/v2/4/a",
                &fedistill_shared::wire::encode_payload(&stored).unwrap(),
            )
            .unwrap();
        let err = format!("{:#}", load(&store, &["a"]).unwrap_err());
        assert!(
            err.contains("of the stored contribution contribution/v2/4/a is not stored"),
            "{err}"
        );
    }

    #[test]
    fn the_configured_policy_wins_over_the_stored_one_and_scores_are_kept() {
        let mut old = AnomalyTracker::new(QuarantinePolicy::default()).unwrap();
        old.handle_round(RoundId(1), &scores());
        old.handle_round(RoundId(2), &scores());
        let bytes = serde_json::to_vec(&old).unwrap();
        let configured = QuarantinePolicy {
            consecutive: 3,
            factor: 4.0,
            release_after_rounds: Some(2),
            ..QuarantinePolicy::default()
        };
        let mut t = restore_tracker(Some(&bytes), configured).unwrap();
        assert_eq!(t.policy(), &configured);
        // Two strikes were stored; the third (under the configured policy) quarantines.
        assert_eq!(t.state(&pid("evil")).unwrap().strikes, 2);
        assert_eq!(t.handle_round(RoundId(3), &scores()).len(), 1);
        // And the configured release applies: round 3 + 2.
        assert!(t.releases_due(RoundId(4)).is_empty());
        assert_eq!(t.releases_due(RoundId(5)).len(), 1);
        // Nothing stored: a fresh tracker under the configured policy.
        let fresh = restore_tracker(None, configured).unwrap();
        assert_eq!(fresh.policy(), &configured);
        assert!(fresh.quarantined().is_empty());
        // Unreadable state is an error, not a silent reset.
        let err = format!("{:#}", restore_tracker(Some(b"not json"), configured).unwrap_err());
        assert!(err.contains("decoding the stored anomaly scores"), "{err}");
    }
}
