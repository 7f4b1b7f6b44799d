//! Prometheus metrics and the JSON status the coordinator serves on its local HTTP port.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::Serialize;

/// Label set of the rejection counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// The rejection code (`late`, `duplicate`, `bad_payload`, ...).
    pub reason: String,
}

/// All coordinator metrics.
pub struct Metrics {
    registry: Registry,
    /// Rounds aggregated.
    pub rounds: Counter,
    /// Contributions accepted.
    pub contributions: Counter,
    /// Messages rejected, by reason.
    pub rejections: Family<ReasonLabel, Counter>,
    /// Soft-label payload bytes received.
    pub bytes_up: Counter,
    /// Aggregate bytes sent.
    pub bytes_down: Counter,
    /// Connected participants.
    pub connected: Gauge,
    /// Seconds from round open to aggregate commit.
    pub round_seconds: Histogram,
    /// Current log size.
    pub log_size: Gauge,
    /// Bytes held by request frames being received or decoded, all connections together (set at scrape).
    pub frame_bytes_in_flight: Gauge,
    /// Size of the shared in-flight frame budget.
    pub frame_budget_bytes: Gauge,
    frame_budget: std::sync::OnceLock<fedistill_transport::FrameBudget>,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("fedistill_coordinator");
        let rounds = Counter::default();
        let contributions = Counter::default();
        let rejections = Family::<ReasonLabel, Counter>::default();
        let bytes_up = Counter::default();
        let bytes_down = Counter::default();
        let connected = Gauge::default();
        let round_seconds = Histogram::new([0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0].into_iter());
        let log_size = Gauge::default();
        registry.register("rounds", "Rounds aggregated", rounds.clone());
        registry.register(
            "contributions",
            "Soft-label contributions accepted",
            contributions.clone(),
        );
        registry.register("rejections", "Messages rejected, by reason", rejections.clone());
        registry.register("bytes_up", "Soft-label payload bytes received", bytes_up.clone());
        registry.register("bytes_down", "Aggregate payload bytes sent", bytes_down.clone());
        registry.register(
            "connected_participants",
            "Participants connected now",
            connected.clone(),
        );
        registry.register(
            "round_seconds",
            "Seconds from round open to aggregate commit",
            round_seconds.clone(),
        );
        registry.register("log_size", "Records in the update log", log_size.clone());
        let frame_bytes_in_flight = Gauge::default();
        let frame_budget_bytes = Gauge::default();
        registry.register(
            "frame_bytes_in_flight",
            "Bytes held by request frames being received or decoded, all connections together",
            frame_bytes_in_flight.clone(),
        );
        registry.register(
            "frame_budget_bytes",
            "Size of the in-flight frame budget shared by all connections",
            frame_budget_bytes.clone(),
        );
        Self {
            registry,
            rounds,
            contributions,
            rejections,
            bytes_up,
            bytes_down,
            connected,
            round_seconds,
            log_size,
            frame_bytes_in_flight,
            frame_budget_bytes,
            frame_budget: std::sync::OnceLock::new(),
        }
    }

    /// Reports the shared in-flight frame budget (its use is read at every scrape).
    pub fn watch_frame_budget(&self, budget: fedistill_transport::FrameBudget) {
        self.frame_budget_bytes.set(budget.capacity() as i64);
        let _ = self.frame_budget.set(budget);
    }

    /// Counts a rejection.
    pub fn reject(&self, reason: &str) {
        self.rejections
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        if let Some(b) = self.frame_budget.get() {
            self.frame_bytes_in_flight.set(b.in_use() as i64);
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// What `/status` returns.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    /// Federation id.
    pub federation: String,
    /// Current round.
    pub round: u64,
    /// Rounds configured.
    pub rounds: u64,
    /// Phase name.
    pub phase: String,
    /// Connected participants.
    pub connected: Vec<String>,
    /// Log size.
    pub log_size: u64,
    /// Per finished round: contributors and absentees.
    pub history: Vec<RoundStatus>,
    /// Whether all rounds ran.
    pub finished: bool,
    /// Participants that abstained (signed `Abstain`, e.g. budget exhausted) from the open round.
    pub abstaining: Vec<String>,
    /// Participants currently quarantined.
    pub quarantined: Vec<String>,
    /// What the federation learns: dataset, rule, temperature, samples per round.
    pub task: String,
    /// Contributions a round needs to aggregate.
    pub quorum: u64,
    /// Participants the open round waits for.
    pub expected: Vec<String>,
    /// Participants whose contribution to the open round was accepted.
    pub received: Vec<String>,
    /// Milliseconds left until the current phase's deadline (collecting or reporting); absent otherwise.
    pub deadline_ms: Option<u64>,
    /// One row per participant the roster or the log names, in id order.
    pub participants: Vec<ParticipantStatus>,
    /// Per round in the log: participant-reported student accuracy.
    pub reports: Vec<RoundReports>,
    /// The newest signed checkpoint.
    pub checkpoint: Option<CheckpointStatus>,
    /// The newest checkpoint with at least one witness cosignature.
    pub cosigned_checkpoint: Option<CheckpointStatus>,
}

/// One participant in `/status` (counts come from the update log, so they cover every round).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ParticipantStatus {
    /// Participant id.
    pub name: String,
    /// Connected now.
    pub connected: bool,
    /// When this process last saw it connected or logged a record of it (Unix ms); absent: not since start.
    pub last_seen_unix_ms: Option<u64>,
    /// Contributions in the log.
    pub contributions: u64,
    /// Signed abstentions in the log.
    pub abstentions: u64,
    /// Round reports in the log.
    pub reports: u64,
    /// Quarantined now.
    pub quarantined: bool,
    /// Quarantine decisions in the log.
    pub quarantines: u64,
    /// Differential-privacy epsilon recorded as spent (`privacy_spend` records, summed).
    pub epsilon_spent: f64,
    /// Revoked in the roster in force.
    pub revoked: bool,
    /// Student accuracy of its last round report.
    pub last_accuracy: Option<f64>,
}

/// Participant-reported student accuracy of one round (from the `round_report` records; each node measures
/// it on its own validation rows, what its guard and the `[stop]` rule see).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RoundReports {
    /// Round number.
    pub round: u64,
    /// Reports logged.
    pub reports: u64,
    /// Mean reported `accuracy`.
    pub accuracy_mean: f64,
    /// Lowest reported `accuracy`.
    pub accuracy_min: f64,
    /// Highest reported `accuracy`.
    pub accuracy_max: f64,
}

/// A signed checkpoint in `/status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckpointStatus {
    /// Tree size.
    pub size: u64,
    /// Root hash, hex.
    pub root: String,
    /// Witnesses whose cosignature is stored with it.
    pub cosigners: Vec<String>,
}

/// One aggregated round in `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct RoundStatus {
    /// Round number.
    pub round: u64,
    /// Contributors.
    pub contributors: Vec<String>,
    /// Absent participants.
    pub absent: Vec<String>,
    /// Participants that abstained from the round (they said so, signed; logged as `abstention`).
    pub abstained: Vec<String>,
    /// Bytes of soft labels received this round.
    pub bytes_up: u64,
    /// Bytes of aggregate sent this round.
    pub bytes_down: u64,
    /// Seconds from open to commit.
    pub seconds: f64,
    /// Where the round's time went, in seconds: `collect` (open until the aggregate is ready, which
    /// includes waiting for the slowest contributor and aggregating), `assemble` (records and the aggregate's
    /// signature), `commit` (the round's one SQLite transaction with its fsync, which also holds the messages
    /// that completed the round, and the signed checkpoint), `send` (the signed aggregate message and its
    /// broadcast).
    pub phases: std::collections::BTreeMap<String, f64>,
}

/// Metrics and status shared with the HTTP server.
pub struct Observability {
    /// Metrics.
    pub metrics: Metrics,
    /// Status.
    pub status: Mutex<Status>,
    /// What the console folds from the update log (read incrementally).
    log: Mutex<LogFold>,
    /// The transport's roster in force (revocations), once the server is bound.
    roster: std::sync::OnceLock<crate::transport::ReloadHandle>,
}

#[derive(Default)]
struct LogFold {
    /// Records folded so far.
    cursor: u64,
    participants: BTreeMap<String, ParticipantStatus>,
    /// Round -> reported accuracies.
    accuracy: BTreeMap<u64, Vec<f64>>,
    /// When the checkpoints were last read, and the log size then.
    checkpoints_read: Option<(std::time::Instant, u64)>,
    checkpoint: Option<CheckpointStatus>,
    cosigned: Option<CheckpointStatus>,
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn checkpoint_status(sc: &fedistill_shared::ledger::SignedCheckpoint) -> CheckpointStatus {
    CheckpointStatus {
        size: sc.checkpoint.size,
        root: sc.checkpoint.root.to_hex(),
        cosigners: sc
            .signatures
            .iter()
            .filter(|s| s.name != sc.checkpoint.origin)
            .map(|s| s.name.clone())
            .collect(),
    }
}

impl Observability {
    /// Fresh metrics and a status that starts from `status`.
    pub fn new(status: Status) -> Self {
        Self {
            metrics: Metrics::new(),
            status: Mutex::new(status),
            log: Mutex::new(LogFold::default()),
            roster: std::sync::OnceLock::new(),
        }
    }

    /// Reports revocations from the roster the transport has in force.
    pub fn watch_roster(&self, handle: crate::transport::ReloadHandle) {
        let _ = self.roster.set(handle);
    }

    /// Fills the console's fields of `s` (participants, reported accuracy, checkpoints) from the records
    /// appended to `store` since the last call, the roster in force and `connected`. Called by the core
    /// loop when it publishes the status (at most every 100 ms, or when the round changes); reads only new
    /// records, and the checkpoint table at most every 500 ms unless the log grew.
    pub fn fill_console(
        &self,
        store: &crate::store::Store,
        connected: &[String],
        quarantined: &[String],
        s: &mut Status,
    ) {
        use fedistill_shared::ledger::{Record, RosterAction};
        let Ok(mut fold) = self.log.lock() else { return };
        let now = unix_ms();
        let live = fold.cursor > 0;
        let size = store.size();
        if fold.cursor < size {
            match store.records(fold.cursor..size) {
                Ok(records) => {
                    for r in records {
                        let (who, f): (&str, fn(&mut ParticipantStatus)) = match &r {
                            Record::RosterChange {
                                participant, action, ..
                            } => {
                                let revoke = *action == RosterAction::Revoke;
                                let e = fold.participants.entry(participant.to_string()).or_default();
                                if revoke {
                                    e.revoked = true;
                                }
                                continue;
                            }
                            Record::Contribution { participant, .. } => {
                                (participant.as_str(), |e| e.contributions += 1)
                            }
                            Record::Abstention { participant, .. } => (participant.as_str(), |e| e.abstentions += 1),
                            Record::Quarantine { participant, .. } => (participant.as_str(), |e| e.quarantines += 1),
                            Record::PrivacySpend {
                                participant, epsilon, ..
                            } => {
                                let e = fold.participants.entry(participant.to_string()).or_default();
                                e.epsilon_spent += epsilon;
                                continue;
                            }
                            Record::RoundReport {
                                round,
                                participant,
                                metrics,
                                ..
                            } => {
                                let acc = metrics.iter().find(|m| m.name == "accuracy").map(|m| m.value);
                                let e = fold.participants.entry(participant.to_string()).or_default();
                                e.reports += 1;
                                if acc.is_some() {
                                    e.last_accuracy = acc;
                                }
                                if live {
                                    e.last_seen_unix_ms = Some(now);
                                }
                                if let Some(a) = acc {
                                    fold.accuracy.entry(round.0).or_default().push(a);
                                }
                                continue;
                            }
                            _ => continue,
                        };
                        let e = fold.participants.entry(who.to_string()).or_default();
                        f(e);
                        if live {
                            e.last_seen_unix_ms = Some(now);
                        }
                    }
                    fold.cursor = size;
                }
                Err(e) => tracing::warn!(error = %e, "console: reading the update log"),
            }
        }
        let stale = match fold.checkpoints_read {
            None => true,
            Some((t, at)) => at != size || t.elapsed() >= std::time::Duration::from_millis(500),
        };
        if stale {
            fold.checkpoints_read = Some((std::time::Instant::now(), size));
            if let Ok(sizes) = store.checkpoint_sizes() {
                fold.checkpoint = sizes
                    .last()
                    .and_then(|&n| store.checkpoint(n).ok().flatten())
                    .map(|c| checkpoint_status(&c));
                // The newest cosigned one is usually one of the last few.
                fold.cosigned = sizes
                    .iter()
                    .rev()
                    .take(16)
                    .filter_map(|&n| store.checkpoint(n).ok().flatten())
                    .map(|c| checkpoint_status(&c))
                    .find(|c| !c.cosigners.is_empty());
            }
        }
        for p in connected {
            fold.participants.entry(p.clone()).or_default().last_seen_unix_ms = Some(now);
        }
        let roster = self.roster.get().map(|h| h.roster());
        // Revoked in the roster in force, by name (None: not in the roster).
        let mut revoked: BTreeMap<&str, bool> = BTreeMap::new();
        if let Some(r) = &roster {
            for e in &r.participants {
                fold.participants.entry(e.id.to_string()).or_default();
                revoked.insert(
                    e.id.as_str(),
                    e.status == fedistill_shared::provision::roster::Status::Revoked,
                );
            }
        }
        let connected: std::collections::BTreeSet<&str> = connected.iter().map(String::as_str).collect();
        let quarantined: std::collections::BTreeSet<&str> = quarantined.iter().map(String::as_str).collect();
        s.participants = fold
            .participants
            .iter()
            .map(|(name, p)| {
                let mut p = p.clone();
                p.name = name.clone();
                p.connected = connected.contains(name.as_str());
                p.quarantined = quarantined.contains(name.as_str());
                if let Some(&r) = revoked.get(name.as_str()) {
                    p.revoked = r;
                }
                p
            })
            .collect();
        s.reports = fold
            .accuracy
            .iter()
            .map(|(round, v)| RoundReports {
                round: *round,
                reports: v.len() as u64,
                accuracy_mean: v.iter().sum::<f64>() / v.len().max(1) as f64,
                accuracy_min: v.iter().copied().fold(f64::INFINITY, f64::min),
                accuracy_max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            })
            .collect();
        s.checkpoint = fold.checkpoint.clone();
        s.cosigned_checkpoint = fold.cosigned.clone();
    }
}

/// The access rule for a status server bound to `addr`: open on loopback; otherwise the operator's console
/// token from `federation_dir` (`operator/console.token`, created with mode 0600 when missing).
pub fn access_for(
    addr: std::net::SocketAddr,
    federation_dir: &std::path::Path,
) -> anyhow::Result<crate::console::Access> {
    use anyhow::Context;
    if addr.ip().is_loopback() {
        return Ok(crate::console::Access::Open);
    }
    let layout = fedistill_shared::provision::FederationLayout::new(federation_dir);
    let token = fedistill_shared::provision::ensure_console_token(&layout).with_context(|| {
        format!(
            "status = \"{addr}\" is not a loopback address, so the console and /status need the operator token {}; \
             create it (fedistill provision init writes one) or bind status to 127.0.0.1",
            layout.console_token().display()
        )
    })?;
    Ok(crate::console::Access::Token(token))
}

/// Serves the console at `/`, `/metrics`, `/status` and `/healthz` on `addr` until `cancel` fires. Bound
/// beyond loopback, every path but `/healthz` needs the console token of `federation_dir`.
pub async fn serve(
    addr: std::net::SocketAddr,
    obs: Arc<Observability>,
    federation_dir: &std::path::Path,
    cancel: tokio_util::sync::CancellationToken,
) -> anyhow::Result<std::net::SocketAddr> {
    use crate::console::{Access, Presented};
    use axum::http::{header, HeaderMap, StatusCode, Uri};
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    let access = Arc::new(access_for(addr, federation_dir)?);
    let refused = || -> Response {
        (
            StatusCode::UNAUTHORIZED,
            [
                (header::WWW_AUTHENTICATE, "Bearer realm=\"fedistill console\""),
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            ],
            crate::console::REFUSED,
        )
            .into_response()
    };
    let guard = |access: &Access, headers: &HeaderMap| matches!(access.check(headers, None, false), Presented::Ok);
    let (o1, o2, o3) = (obs.clone(), obs.clone(), obs.clone());
    let (a1, a2, a3) = (access.clone(), access.clone(), access.clone());
    let app = axum::Router::new()
        .route(
            "/",
            get(move |headers: HeaderMap, uri: Uri| {
                let (o, a) = (o3.clone(), a3.clone());
                async move {
                    match a.check(&headers, uri.query(), true) {
                        Presented::Refused => refused(),
                        Presented::SetCookie => {
                            let Access::Token(t) = &*a else { return refused() };
                            (
                                StatusCode::SEE_OTHER,
                                [
                                    (header::LOCATION, "/".to_string()),
                                    (
                                        header::SET_COOKIE,
                                        format!("{}={t}; HttpOnly; SameSite=Strict; Path=/", crate::console::COOKIE),
                                    ),
                                ],
                            )
                                .into_response()
                        }
                        Presented::Ok => {
                            let s = o.status.lock().map(|s| s.clone()).unwrap_or_default();
                            (
                                [
                                    (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                                    (header::CACHE_CONTROL, "no-store"),
                                    (
                                        header::HeaderName::from_static("content-security-policy"),
                                        "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
                                    ),
                                ],
                                crate::console::render(&s),
                            )
                                .into_response()
                        }
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move |headers: HeaderMap| {
                let (o, a) = (o1.clone(), a1.clone());
                async move {
                    if !guard(&a, &headers) {
                        return refused();
                    }
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        o.metrics.encode(),
                    )
                        .into_response()
                }
            }),
        )
        .route(
            "/status",
            get(move |headers: HeaderMap| {
                let (o, a) = (o2.clone(), a2.clone());
                async move {
                    if !guard(&a, &headers) {
                        return refused();
                    }
                    let s = o.status.lock().map(|s| s.clone()).unwrap_or_default();
                    ([(header::CACHE_CONTROL, "no-store")], axum::Json(s)).into_response()
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await;
    });
    Ok(local)
}
