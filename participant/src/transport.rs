//! The participant's side of the transport: loading a startup kit and dialling the coordinator with
//! mutual TLS, reconnecting with capped exponential backoff. Participants never listen.

use fedistill_shared::crypto::{FederationId, KeyError, ParticipantId, PublicKey, SigningIdentity};
use fedistill_shared::provision::{fsutil, KitConfig, ProvisionError};
use fedistill_shared::tls::{self, TlsError};
use fedistill_transport::{close_code, negotiated_alpn, quic_client_config, QuicTuning, TransportError};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Errors loading a kit.
#[derive(Debug, thiserror::Error)]
pub enum KitError {
    /// A kit file is missing or `participant.toml` is invalid.
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    /// A key file is malformed.
    #[error("{path}: {source}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        source: KeyError,
    },
    /// The certificates or TLS key are unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// A loaded startup kit: identity, trust anchors and where to dial.
#[derive(Clone)]
pub struct Kit {
    /// The kit directory.
    pub dir: PathBuf,
    /// `participant.toml` as read.
    pub config: KitConfig,
    /// This participant's ed25519 signing key.
    pub signing: Arc<SigningIdentity>,
    /// The coordinator's ed25519 public key.
    pub coordinator_key: PublicKey,
    /// The operator's ed25519 public key.
    pub operator_key: PublicKey,
    ca_pem: Vec<u8>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

impl std::fmt::Debug for Kit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kit")
            .field("dir", &self.dir)
            .field("participant", &self.config.participant)
            .field("coordinator", &self.config.coordinator)
            .finish_non_exhaustive()
    }
}

fn read_key<T>(path: &Path, parse: impl FnOnce(&str) -> Result<T, KeyError>) -> Result<T, KitError> {
    let text = fsutil::read_string(path)?;
    parse(&text).map_err(|source| KitError::Key {
        path: path.to_path_buf(),
        source,
    })
}

impl Kit {
    /// Loads `participant.toml` and every file it names (relative paths resolve against `dir`), and
    /// checks that the TLS material builds a client config.
    pub fn load(dir: impl AsRef<Path>) -> Result<Kit, KitError> {
        let dir = dir.as_ref().to_path_buf();
        let config = KitConfig::load(&dir)?;
        let p = |f: &Path| KitConfig::resolve(&dir, f);
        let kit = Kit {
            signing: Arc::new(read_key(&p(&config.signing_key), SigningIdentity::from_pkcs8_pem)?),
            coordinator_key: read_key(&p(&config.coordinator_signing_key), PublicKey::from_pem)?,
            operator_key: read_key(&p(&config.operator_key), PublicKey::from_pem)?,
            ca_pem: fsutil::read_bytes(&p(&config.ca_cert))?,
            cert_pem: fsutil::read_bytes(&p(&config.client_cert))?,
            key_pem: fsutil::read_bytes(&p(&config.client_key))?,
            config,
            dir,
        };
        tls::check_server_name(&kit.config.server_name)?;
        kit.tls_config()?;
        Ok(kit)
    }

    /// Federation name.
    pub fn federation(&self) -> &FederationId {
        &self.config.federation
    }

    /// This participant's name.
    pub fn participant(&self) -> &ParticipantId {
        &self.config.participant
    }

    fn tls_config(&self) -> Result<rustls::ClientConfig, TlsError> {
        tls::client_config(&self.ca_pem, &self.cert_pem, &self.key_pem)
    }

    /// The quinn client config: pins the federation CA, presents the client certificate.
    pub fn client_config(&self, tuning: &QuicTuning) -> Result<quinn::ClientConfig, TlsError> {
        quic_client_config(self.tls_config()?, tuning)
    }
}

/// Capped exponential backoff between connection attempts.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// Delay after the first failure.
    pub initial: Duration,
    /// Upper bound on any delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// Delay before attempt `attempt + 1` after `attempt` failures (0-based): `initial * 2^attempt`,
    /// capped at `max`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// Options for dialling.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// QUIC timers and windows.
    pub tuning: QuicTuning,
    /// Retry schedule for [`connect_with_backoff`].
    pub backoff: Backoff,
    /// Longest one attempt (resolve + handshake) may take.
    pub attempt_timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            tuning: QuicTuning::default(),
            backoff: Backoff::default(),
            attempt_timeout: Duration::from_secs(10),
        }
    }
}

async fn resolve(endpoint: &str) -> Result<SocketAddr, TransportError> {
    let mut addrs = tokio::net::lookup_host(endpoint)
        .await
        .map_err(|e| TransportError::Connect(format!("cannot resolve {endpoint}: {e}")))?;
    addrs
        .next()
        .ok_or_else(|| TransportError::Connect(format!("{endpoint} resolved to no address")))
}

/// One connection attempt. Succeeds when the handshake completes and ALPN `fedistill/1` was negotiated.
///
/// A coordinator that rejects this participant after the handshake (unknown, revoked) closes the
/// connection right away; that shows on the first stream operation or on `conn.closed()`, see
/// [`is_permanent_rejection`].
pub async fn connect(kit: &Kit, opts: &ConnectOptions) -> Result<quinn::Connection, TransportError> {
    match tokio::time::timeout(opts.attempt_timeout, connect_once(kit, opts)).await {
        Ok(r) => r,
        Err(_) => Err(TransportError::Connect(format!(
            "no handshake with {} within {:?}",
            kit.config.coordinator, opts.attempt_timeout
        ))),
    }
}

async fn connect_once(kit: &Kit, opts: &ConnectOptions) -> Result<quinn::Connection, TransportError> {
    let addr = resolve(&kit.config.coordinator).await?;
    let local: SocketAddr = if addr.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let mut endpoint = quinn::Endpoint::client(local)?;
    endpoint.set_default_client_config(
        kit.client_config(&opts.tuning)
            .map_err(|e| TransportError::Config(e.to_string()))?,
    );
    let conn = endpoint
        .connect(addr, &kit.config.server_name)
        .map_err(|e| TransportError::Connect(e.to_string()))?
        .await?;
    if negotiated_alpn(&conn).as_deref() != Some(tls::ALPN) {
        conn.close(close_code::BAD_ALPN.into(), b"ALPN must be fedistill/1");
        return Err(TransportError::Connect(
            "coordinator did not negotiate ALPN fedistill/1".into(),
        ));
    }
    Ok(conn)
}

/// Dials until a connection is established or `cancel` fires, sleeping per [`Backoff`] between
/// failures (each failure is logged). Returns [`TransportError::Cancelled`] on cancellation.
pub async fn connect_with_backoff(kit: &Kit, cancel: &CancellationToken) -> Result<quinn::Connection, TransportError> {
    connect_with_backoff_opts(kit, &ConnectOptions::default(), cancel).await
}

/// [`connect_with_backoff`] with explicit options.
pub async fn connect_with_backoff_opts(
    kit: &Kit,
    opts: &ConnectOptions,
    cancel: &CancellationToken,
) -> Result<quinn::Connection, TransportError> {
    let mut attempt = 0u32;
    loop {
        let result = tokio::select! {
            _ = cancel.cancelled() => return Err(TransportError::Cancelled),
            r = connect(kit, opts) => r,
        };
        match result {
            Ok(conn) => return Ok(conn),
            Err(e) => {
                let delay = opts.backoff.delay(attempt);
                tracing::warn!(error = %e, attempt, ?delay, coordinator = %kit.config.coordinator, "connect failed; retrying");
                attempt = attempt.saturating_add(1);
                tokio::select! {
                    _ = cancel.cancelled() => return Err(TransportError::Cancelled),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// True when the coordinator closed the connection because this participant may not connect (unknown
/// certificate, revoked, wrong ALPN): reconnecting will not help until the operator acts.
pub fn is_permanent_rejection(err: &quinn::ConnectionError) -> bool {
    match err {
        quinn::ConnectionError::ApplicationClosed(c) => {
            let code = c.error_code.into_inner();
            [
                close_code::UNKNOWN_PARTICIPANT,
                close_code::REVOKED,
                close_code::BAD_ALPN,
                close_code::NO_CERTIFICATE,
            ]
            .iter()
            .any(|&k| u64::from(k) == code)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let got: Vec<u64> = (0..6).map(|a| b.delay(a).as_millis() as u64).collect();
        // 100 * 2^n capped at 1000, computed by hand.
        assert_eq!(got, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn missing_kit_is_a_clear_error() {
        let tmp = tempfile::tempdir().expect("tmp");
        let err = Kit::load(tmp.path()).expect_err("no kit");
        assert!(err.to_string().contains("participant.toml"), "{err}");
    }
}
