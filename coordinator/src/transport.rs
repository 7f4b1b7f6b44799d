//! The coordinator's QUIC listener: mutual TLS against the federation CA and CRL, mapping each peer
//! certificate to its roster entry, and live reloading of roster + CRL without a restart.
//!
//! Handshakes run concurrently in their own tasks; [`Server::accept`] yields identified participants and
//! the reasons other peers were turned away. A watcher task polls the roster and CRL files (every second
//! by default) and reacts to SIGHUP: it swaps the endpoint's server config so new handshakes see the new
//! CRL, and closes live connections whose participant was revoked or removed.

use fedistill_shared::crypto::{Digest, FederationId, ParticipantId, PublicKey};
use fedistill_shared::provision::{fsutil, FederationLayout, ProvisionError, Roster, RosterEntry, Status};
use fedistill_shared::tls::{self, TlsError};
use fedistill_transport::{close_code, negotiated_alpn, peer_leaf_certificate, quic_server_config, QuicTuning};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Errors starting the server or reloading its trust material.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A federation file is missing or invalid (includes a bad roster signature).
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    /// The TLS configuration could not be built (bad certificate, key or CRL).
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The roster on disk is older than the one in force (a rollback); the one in force stays.
    #[error("roster version {found} is older than version {in_force} in force; refusing to roll back")]
    RosterRollback {
        /// Version found on disk.
        found: u64,
        /// Version in force.
        in_force: u64,
    },
    /// The UDP socket could not be bound.
    #[error("cannot bind {addr}: {reason}")]
    Bind {
        /// Requested address.
        addr: SocketAddr,
        /// OS error text.
        reason: String,
    },
}

/// Why a connection attempt was turned away (each is also logged).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The TLS/QUIC handshake failed: no or untrusted client certificate, expired, revoked per CRL,
    /// wrong EKU, wrong ALPN offered, or a timeout.
    #[error("handshake with {remote} failed: {reason}")]
    Handshake {
        /// Peer address.
        remote: SocketAddr,
        /// The handshake error.
        reason: String,
    },
    /// The negotiated ALPN is not `fedistill/1`.
    #[error("{remote} negotiated ALPN {alpn:?}, expected fedistill/1")]
    BadAlpn {
        /// Peer address.
        remote: SocketAddr,
        /// What was negotiated.
        alpn: Option<String>,
    },
    /// The peer presented no certificate (cannot happen with the verifier in place; kept as a guard).
    #[error("{remote} presented no client certificate")]
    NoCertificate {
        /// Peer address.
        remote: SocketAddr,
    },
    /// The certificate chains to the CA but lacks the `clientAuth` extended key usage (webpki accepts a
    /// certificate with no EKU extension at all; the protocol requires `clientAuth`).
    #[error("{remote} presented a client certificate without the clientAuth EKU ({reason})")]
    BadEku {
        /// Peer address.
        remote: SocketAddr,
        /// What is wrong with the certificate's EKU.
        reason: String,
    },
    /// The certificate chains to the CA but its fingerprint is not in the roster.
    #[error("{remote} presented certificate {fingerprint}, which is not in the roster")]
    UnknownCertificate {
        /// Peer address.
        remote: SocketAddr,
        /// SHA-256 of the certificate.
        fingerprint: Digest,
    },
    /// The roster marks this participant revoked.
    #[error("participant {participant} ({remote}) is revoked")]
    Revoked {
        /// Peer address.
        remote: SocketAddr,
        /// The revoked participant.
        participant: ParticipantId,
    },
    /// This participant already holds its own connection limit open.
    #[error("connection of {participant} ({remote}) refused: it already has {max} connections open")]
    TooManyConnectionsForParticipant {
        /// Peer address.
        remote: SocketAddr,
        /// The participant at its limit.
        participant: ParticipantId,
        /// Configured per-participant limit.
        max: usize,
    },
    /// The connection limit is reached.
    #[error("connection from {remote} refused: {max} connections already open")]
    TooManyConnections {
        /// Peer address.
        remote: SocketAddr,
        /// Configured limit.
        max: usize,
    },
}

impl Rejection {
    /// A stable short name for metrics and logs (`fedistill_coordinator_rejections{reason=...}`).
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::Handshake { .. } => "handshake",
            Rejection::BadAlpn { .. } => "bad_alpn",
            Rejection::BadEku { .. } => "bad_eku",
            Rejection::NoCertificate { .. } => "no_certificate",
            Rejection::UnknownCertificate { .. } => "unknown_certificate",
            Rejection::Revoked { .. } => "revoked",
            Rejection::TooManyConnectionsForParticipant { .. } => "participant_connection_limit",
            Rejection::TooManyConnections { .. } => "connection_limit",
        }
    }
}

/// The files the coordinator's transport reads. [`FederationFiles::from_federation_dir`] fills them
/// from the operator's federation directory; a coordinator host with a copied subset can set paths.
#[derive(Debug, Clone)]
pub struct FederationFiles {
    /// Federation name (checked against the roster).
    pub federation: FederationId,
    /// Federation CA certificate (trust anchor for client certificates).
    pub ca_cert: PathBuf,
    /// Coordinator TLS certificate chain.
    pub server_cert: PathBuf,
    /// Coordinator TLS private key.
    pub server_key: PathBuf,
    /// Operator ed25519 public key (verifies the roster).
    pub operator_pub: PathBuf,
    /// Signed roster file (watched).
    pub roster: PathBuf,
    /// CRL file (watched).
    pub crl: PathBuf,
}

impl FederationFiles {
    /// The standard paths inside a federation directory made by `fedistill provision init`.
    pub fn from_federation_dir(dir: &Path) -> Result<Self, ServerError> {
        let layout = FederationLayout::new(dir);
        let cfg = layout.load_config()?;
        Ok(Self {
            federation: cfg.federation,
            ca_cert: layout.ca_cert(),
            server_cert: layout.server_cert(),
            server_key: layout.server_key(),
            operator_pub: layout.operator_pub(),
            roster: layout.roster(),
            crl: layout.crl(),
        })
    }
}

/// Tunables of the listener.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// QUIC timers and windows.
    pub tuning: QuicTuning,
    /// How often the roster and CRL files are checked for changes.
    pub reload_poll: Duration,
    /// Longest a handshake may take.
    pub handshake_timeout: Duration,
    /// Most simultaneously open participant connections, all participants together.
    pub max_connections: usize,
    /// Most simultaneously open connections of any one participant. Checked before the global limit,
    /// so one participant reaching its own limit never takes a slot another participant needs.
    pub max_connections_per_participant: usize,
}

/// Default of [`ServerOptions::max_connections_per_participant`]: a participant needs one connection;
/// the spare ones cover a reconnect while the previous connection of a crashed process has not timed out.
pub const DEFAULT_MAX_CONNECTIONS_PER_PARTICIPANT: usize = 4;

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            tuning: QuicTuning::coordinator(),
            reload_poll: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(10),
            max_connections: 1024,
            max_connections_per_participant: DEFAULT_MAX_CONNECTIONS_PER_PARTICIPANT,
        }
    }
}

/// The endpoint's stateless-reset key is derived from the coordinator's TLS private key, so a restarted
/// coordinator process resets the connections of the one it replaced and participants reconnect at once
/// instead of waiting for their idle timeout (RFC 9000, section 10.3).
fn endpoint_config(files: &FederationFiles) -> Result<quinn::EndpointConfig, ServerError> {
    use sha2::Digest as _;
    let pem = fsutil::read_bytes(&files.server_key)?;
    let mut h = sha2::Sha256::new();
    h.update(b"fedistill/quic-stateless-reset/v1");
    h.update(&pem);
    let secret = h.finalize();
    let mut cfg = quinn::EndpointConfig::new(Arc::new(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret)));
    // The connection-id validation key must survive restarts too, or the new process drops packets of old
    // connections as invalid instead of answering them with a reset.
    let mut cid_key = [0u8; 8];
    cid_key.copy_from_slice(&secret[..8]);
    let cid_key = u64::from_le_bytes(cid_key);
    cfg.cid_generator(move || Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key)));
    Ok(cfg)
}

/// An authenticated participant connection.
#[derive(Debug, Clone)]
pub struct PeerConnection {
    /// Who it is (from the roster, by certificate fingerprint).
    pub participant: ParticipantId,
    /// The QUIC connection.
    pub conn: quinn::Connection,
    /// The roster entry at accept time (includes the ed25519 key that verifies its messages).
    pub roster_entry: RosterEntry,
}

/// Result of a reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The files did not change since the last load.
    Unchanged,
    /// New roster and CRL are in force.
    Reloaded {
        /// Roster version now in force.
        roster_version: u64,
        /// Participants whose live connections were closed (revoked or removed).
        closed: Vec<ParticipantId>,
    },
}

struct Live {
    fingerprint: Digest,
    participant: ParticipantId,
    conn: quinn::Connection,
}

struct State {
    roster: Arc<Roster>,
    loaded: Digest,
    live: HashMap<usize, Live>,
}

struct Shared {
    files: FederationFiles,
    opts: ServerOptions,
    operator: PublicKey,
    endpoint: quinn::Endpoint,
    state: Mutex<State>,
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    // A panic while holding the lock cannot leave State half-updated in a way that matters more than
    // refusing service, so recover the guard.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

struct Loaded {
    roster: Roster,
    config: quinn::ServerConfig,
    digest: Digest,
}

fn load(files: &FederationFiles, operator: &PublicKey, tuning: &QuicTuning) -> Result<Loaded, ServerError> {
    let roster_text = fsutil::read_string(&files.roster)?;
    let crl = fsutil::read_bytes(&files.crl)?;
    let mut both = roster_text.as_bytes().to_vec();
    both.extend_from_slice(&crl);
    let digest = Digest::of(&both);
    let roster = Roster::from_signed_toml(&roster_text, operator, &files.federation)?;
    let tls = tls::server_config(
        &fsutil::read_bytes(&files.ca_cert)?,
        &fsutil::read_bytes(&files.server_cert)?,
        &fsutil::read_bytes(&files.server_key)?,
        &crl,
    )?;
    let config = quic_server_config(tls, tuning)?;
    Ok(Loaded { roster, config, digest })
}

fn files_digest(files: &FederationFiles) -> Option<Digest> {
    let mut both = std::fs::read(&files.roster).ok()?;
    both.extend_from_slice(&std::fs::read(&files.crl).ok()?);
    Some(Digest::of(&both))
}

impl Shared {
    fn reload(&self, force: bool) -> Result<ReloadOutcome, ServerError> {
        if !force {
            let current = lock(&self.state).loaded;
            if files_digest(&self.files) == Some(current) {
                return Ok(ReloadOutcome::Unchanged);
            }
        }
        let loaded = load(&self.files, &self.operator, &self.opts.tuning)?;
        let mut st = lock(&self.state);
        // An older roster is genuinely signed too; accepting it would un-revoke participants.
        if loaded.roster.version < st.roster.version {
            return Err(ServerError::RosterRollback {
                found: loaded.roster.version,
                in_force: st.roster.version,
            });
        }
        self.endpoint.set_server_config(Some(loaded.config));
        st.roster = Arc::new(loaded.roster);
        st.loaded = loaded.digest;
        let roster = st.roster.clone();
        let mut closed = Vec::new();
        st.live.retain(|_, live| {
            let (code, reason) = match roster.by_fingerprint(&live.fingerprint) {
                Some(e) if e.status == Status::Active && e.id == live.participant => return true,
                Some(e) if e.status == Status::Revoked => (close_code::REVOKED, "participant revoked"),
                _ => (close_code::UNKNOWN_PARTICIPANT, "participant removed from roster"),
            };
            tracing::info!(participant = %live.participant, reason, "closing connection after roster reload");
            live.conn.close(code.into(), reason.as_bytes());
            closed.push(live.participant.clone());
            false
        });
        tracing::info!(
            version = roster.version,
            closed = closed.len(),
            "roster and CRL reloaded"
        );
        Ok(ReloadOutcome::Reloaded {
            roster_version: roster.version,
            closed,
        })
    }

    /// Maps a finished handshake to a roster entry, registering it as live, or closes it with a reason.
    fn admit(&self, conn: quinn::Connection) -> Result<PeerConnection, Rejection> {
        let remote = conn.remote_address();
        let alpn = negotiated_alpn(&conn);
        if alpn.as_deref() != Some(tls::ALPN) {
            conn.close(close_code::BAD_ALPN.into(), b"ALPN must be fedistill/1");
            return Err(Rejection::BadAlpn {
                remote,
                alpn: alpn.map(|a| String::from_utf8_lossy(&a).into_owned()),
            });
        }
        let Some(leaf) = peer_leaf_certificate(&conn) else {
            conn.close(close_code::NO_CERTIFICATE.into(), b"client certificate required");
            return Err(Rejection::NoCertificate { remote });
        };
        if let Err(e) = tls::require_client_auth_eku(&leaf) {
            conn.close(close_code::NO_CERTIFICATE.into(), b"clientAuth EKU required");
            return Err(Rejection::BadEku {
                remote,
                reason: e.to_string(),
            });
        }
        let fingerprint = tls::cert_fingerprint(&leaf);
        let mut st = lock(&self.state);
        let entry = match st.roster.by_fingerprint(&fingerprint) {
            None => {
                conn.close(close_code::UNKNOWN_PARTICIPANT.into(), b"certificate not in roster");
                return Err(Rejection::UnknownCertificate { remote, fingerprint });
            }
            Some(e) if e.status == Status::Revoked => {
                conn.close(close_code::REVOKED.into(), b"participant revoked");
                return Err(Rejection::Revoked {
                    remote,
                    participant: e.id.clone(),
                });
            }
            Some(e) => e.clone(),
        };
        let own = st.live.values().filter(|l| l.participant == entry.id).count();
        if own >= self.opts.max_connections_per_participant {
            conn.close(
                close_code::TOO_MANY_CONNECTIONS.into(),
                b"too many connections for this participant",
            );
            return Err(Rejection::TooManyConnectionsForParticipant {
                remote,
                participant: entry.id.clone(),
                max: self.opts.max_connections_per_participant,
            });
        }
        if st.live.len() >= self.opts.max_connections {
            conn.close(close_code::TOO_MANY_CONNECTIONS.into(), b"too many connections");
            return Err(Rejection::TooManyConnections {
                remote,
                max: self.opts.max_connections,
            });
        }
        st.live.insert(
            conn.stable_id(),
            Live {
                fingerprint,
                participant: entry.id.clone(),
                conn: conn.clone(),
            },
        );
        Ok(PeerConnection {
            participant: entry.id.clone(),
            conn,
            roster_entry: entry,
        })
    }
}

/// The coordinator's listening endpoint.
pub struct Server {
    shared: Arc<Shared>,
    incoming: tokio::sync::Mutex<mpsc::Receiver<Result<PeerConnection, Rejection>>>,
    cancel: CancellationToken,
}

/// Triggers a roster + CRL reload on a running [`Server`].
#[derive(Clone)]
pub struct ReloadHandle {
    shared: Arc<Shared>,
}

impl ReloadHandle {
    /// Re-reads the roster and CRL now (even if unchanged), swaps the TLS config and closes connections of
    /// revoked or removed participants. On error the previous configuration stays in force.
    pub fn reload(&self) -> Result<ReloadOutcome, ServerError> {
        self.shared.reload(true)
    }

    /// The roster currently in force.
    pub fn roster(&self) -> Arc<Roster> {
        lock(&self.shared.state).roster.clone()
    }
}

impl Server {
    /// Binds with default options. Must run inside a tokio runtime.
    pub fn bind(bind_addr: SocketAddr, files: &FederationFiles) -> Result<Server, ServerError> {
        Self::bind_with(bind_addr, files, ServerOptions::default())
    }

    /// Binds with explicit options. Must run inside a tokio runtime.
    pub fn bind_with(
        bind_addr: SocketAddr,
        files: &FederationFiles,
        opts: ServerOptions,
    ) -> Result<Server, ServerError> {
        let socket = std::net::UdpSocket::bind(bind_addr).map_err(|e| ServerError::Bind {
            addr: bind_addr,
            reason: e.to_string(),
        })?;
        Self::bind_socket(socket, files, opts)
    }

    /// Serves on an already bound UDP socket (tests reserve a port before provisioning kits that name
    /// it; service managers may hand over sockets). Must run inside a tokio runtime.
    pub fn bind_socket(
        socket: std::net::UdpSocket,
        files: &FederationFiles,
        opts: ServerOptions,
    ) -> Result<Server, ServerError> {
        let addr = socket
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let bind_err = |e: std::io::Error| ServerError::Bind {
            addr,
            reason: e.to_string(),
        };
        let operator = PublicKey::from_pem(&fsutil::read_string(&files.operator_pub)?).map_err(ProvisionError::from)?;
        let loaded = load(files, &operator, &opts.tuning)?;
        widen_socket_buffers(&socket);
        let endpoint = quinn::Endpoint::new(
            endpoint_config(files)?,
            Some(loaded.config),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(bind_err)?;
        let shared = Arc::new(Shared {
            files: files.clone(),
            opts,
            operator,
            endpoint,
            state: Mutex::new(State {
                roster: Arc::new(loaded.roster),
                loaded: loaded.digest,
                live: HashMap::new(),
            }),
        });
        let cancel = CancellationToken::new();
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(accept_loop(shared.clone(), tx, cancel.clone()));
        tokio::spawn(watch_loop(shared.clone(), cancel.clone()));
        Ok(Server {
            shared,
            incoming: tokio::sync::Mutex::new(rx),
            cancel,
        })
    }

    /// The next identified participant, or why a peer was turned away. `None` after [`Server::close`].
    pub async fn accept(&self) -> Option<Result<PeerConnection, Rejection>> {
        self.incoming.lock().await.recv().await
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.shared.endpoint.local_addr()
    }

    /// A handle to reload roster and CRL on demand.
    pub fn reload_handle(&self) -> ReloadHandle {
        ReloadHandle {
            shared: self.shared.clone(),
        }
    }

    /// The roster currently in force.
    pub fn roster(&self) -> Arc<Roster> {
        lock(&self.shared.state).roster.clone()
    }

    /// Participants with an open connection right now.
    pub fn connected(&self) -> Vec<ParticipantId> {
        lock(&self.shared.state)
            .live
            .values()
            .map(|l| l.participant.clone())
            .collect()
    }

    /// Stops accepting, closes every connection with [`close_code::SHUTDOWN`] and waits until the
    /// endpoint is idle.
    pub async fn close(&self) {
        self.cancel.cancel();
        self.shared
            .endpoint
            .close(close_code::SHUTDOWN.into(), b"coordinator shutting down");
        self.shared.endpoint.wait_idle().await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// What the coordinator asks of its UDP socket's receive and send buffers (the kernel caps both at
/// `net.core.rmem_max` / `net.core.wmem_max`).
pub const SOCKET_BUFFER_BYTES: usize = 8 * 1024 * 1024;

/// Widens the socket's buffers to [`SOCKET_BUFFER_BYTES`]. Every participant sends its soft labels as a
/// round opens, so the coordinator's one socket takes a burst of all their uploads at once; with the
/// kernel's default buffer (about 200 KiB) a burst overflows it, the datagrams are dropped, and the
/// senders wait for QUIC's loss timer (tens of milliseconds) before sending them again.
pub fn widen_socket_buffers(socket: &std::net::UdpSocket) {
    let state = match quinn::udp::UdpSocketState::new(socket.into()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot inspect the UDP socket; keeping its buffer sizes");
            return;
        }
    };
    let recv = state.set_recv_buffer_size(socket.into(), SOCKET_BUFFER_BYTES);
    let send = state.set_send_buffer_size(socket.into(), SOCKET_BUFFER_BYTES);
    let (got_recv, got_send) = (
        state.recv_buffer_size(socket.into()),
        state.send_buffer_size(socket.into()),
    );
    match (recv, send, got_recv, got_send) {
        (Ok(()), Ok(()), Ok(r), Ok(s)) => tracing::info!(
            receive = r,
            send = s,
            asked = SOCKET_BUFFER_BYTES,
            "UDP socket buffers (the kernel caps them at net.core.rmem_max / wmem_max)"
        ),
        (r, s, _, _) => tracing::warn!(receive = ?r.err(), send = ?s.err(), "cannot widen the UDP socket buffers"),
    }
}

async fn accept_loop(
    shared: Arc<Shared>,
    tx: mpsc::Sender<Result<PeerConnection, Rejection>>,
    cancel: CancellationToken,
) {
    loop {
        let incoming = tokio::select! {
            _ = cancel.cancelled() => break,
            i = shared.endpoint.accept() => match i { Some(i) => i, None => break },
        };
        let shared = shared.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let result = match tokio::time::timeout(shared.opts.handshake_timeout, incoming).await {
                Err(_) => Err(Rejection::Handshake {
                    remote,
                    reason: "handshake timed out".into(),
                }),
                Ok(Err(e)) => Err(Rejection::Handshake {
                    remote,
                    reason: e.to_string(),
                }),
                Ok(Ok(conn)) => shared.admit(conn),
            };
            match result {
                Ok(peer) => {
                    tracing::info!(participant = %peer.participant, %remote, "participant connected");
                    let id = peer.conn.stable_id();
                    let conn = peer.conn.clone();
                    let watcher = shared.clone();
                    tokio::spawn(async move {
                        let why = conn.closed().await;
                        lock(&watcher.state).live.remove(&id);
                        tracing::info!(%remote, reason = %why, "participant connection closed");
                    });
                    // If nobody accepts any more the connection is dropped, which closes it.
                    let _ = tx.send(Ok(peer)).await;
                }
                Err(rej) => {
                    tracing::warn!(%rej, "connection rejected");
                    // Rejections are best-effort notifications; never let a flood of them block.
                    let _ = tx.try_send(Err(rej));
                }
            }
        });
    }
}

async fn watch_loop(shared: Arc<Shared>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(shared.opts.reload_poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let hup_recv = async {
            match hup.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hup_recv = std::future::pending::<Option<()>>();
        let force = tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => false,
            _ = hup_recv => true,
        };
        // File reads and config building are short; run them off the executor anyway.
        let s = shared.clone();
        match tokio::task::spawn_blocking(move || s.reload(force)).await {
            Ok(Ok(ReloadOutcome::Unchanged)) => {}
            Ok(Ok(outcome)) => tracing::debug!(?outcome, "reload applied"),
            Ok(Err(e)) => tracing::warn!(error = %e, "roster/CRL reload failed; keeping the previous configuration"),
            Err(e) => tracing::warn!(error = %e, "reload task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedistill_shared::provision;

    #[test]
    fn missing_federation_dir_is_a_clear_error() {
        let tmp = tempfile::tempdir().expect("tmp");
        let err = FederationFiles::from_federation_dir(tmp.path()).expect_err("empty dir");
        assert!(err.to_string().contains("federation.toml"), "{err}");
    }

    #[tokio::test]
    async fn server_refuses_to_start_on_a_tampered_roster() {
        let tmp = tempfile::tempdir().expect("tmp");
        let fed = FederationId::new("acme").expect("valid");
        provision::init(tmp.path(), &fed, &["127.0.0.1:9".into()], None, provision::now_utc()).expect("init");
        let files = FederationFiles::from_federation_dir(tmp.path()).expect("files");
        let text = std::fs::read_to_string(&files.roster).expect("roster");
        std::fs::write(&files.roster, text.replace("version = 1", "version = 9")).expect("tamper");
        let err = Server::bind("127.0.0.1:0".parse().expect("addr"), &files)
            .err()
            .expect("refused");
        assert!(
            matches!(err, ServerError::Provision(ProvisionError::RosterSignature)),
            "{err}"
        );
    }
}
