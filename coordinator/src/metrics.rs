//! Prometheus metrics and the JSON status the coordinator serves on its local HTTP port.

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
    frame_budget: std::sync::OnceLock<fedistill_shared::wire::FrameBudget>,
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
    pub fn watch_frame_budget(&self, budget: fedistill_shared::wire::FrameBudget) {
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
}

/// Metrics and status shared with the HTTP server.
pub struct Observability {
    /// Metrics.
    pub metrics: Metrics,
    /// Status.
    pub status: Mutex<Status>,
}

/// Serves `/metrics`, `/status` and `/healthz` on `addr` until `cancel` fires.
pub async fn serve(
    addr: std::net::SocketAddr,
    obs: Arc<Observability>,
    cancel: tokio_util::sync::CancellationToken,
) -> anyhow::Result<std::net::SocketAddr> {
    use axum::routing::get;
    let o1 = obs.clone();
    let o2 = obs.clone();
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let o = o1.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        o.metrics.encode(),
                    )
                }
            }),
        )
        .route(
            "/status",
            get(move || {
                let o = o2.clone();
                async move {
                    let s = o.status.lock().map(|s| s.clone()).unwrap_or_default();
                    axum::Json(s)
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
