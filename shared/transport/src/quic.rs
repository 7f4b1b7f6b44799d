//! QUIC wrappers around the rustls configs of [`fedistill_shared::tls`]: transport tuning, connection
//! introspection and the application close codes both sides use.

use fedistill_shared::tls::TlsError;
use quinn::crypto::rustls::{HandshakeData, QuicClientConfig, QuicServerConfig};
use rustls::pki_types::CertificateDer;
use std::sync::Arc;
use std::time::Duration;

/// Application close codes (QUIC `CONNECTION_CLOSE` with an application error code) and their meaning.
pub mod close_code {
    /// Normal shutdown.
    pub const NORMAL: u32 = 0;
    /// The peer presented no usable client certificate.
    pub const NO_CERTIFICATE: u32 = 0x100;
    /// The certificate's fingerprint is not in the roster.
    pub const UNKNOWN_PARTICIPANT: u32 = 0x101;
    /// The roster marks this participant revoked.
    pub const REVOKED: u32 = 0x102;
    /// The negotiated ALPN is not `fedistill/1`.
    pub const BAD_ALPN: u32 = 0x103;
    /// The peer broke the framing or message rules.
    pub const PROTOCOL_VIOLATION: u32 = 0x104;
    /// The server is shutting down.
    pub const SHUTDOWN: u32 = 0x105;
    /// The participant (or the server as a whole) already has its limit of connections open.
    pub const TOO_MANY_CONNECTIONS: u32 = 0x106;
    /// Stream-level (`STOP_SENDING`/`RESET_STREAM`) code: the frame did not arrive in time.
    pub const STREAM_TIMEOUT: u32 = 0x200;
    /// Stream-level code: the frame was invalid (too large, bad magic or version, malformed).
    pub const STREAM_INVALID: u32 = 0x201;
}

/// Timers and limits applied to every QUIC connection.
#[derive(Debug, Clone)]
pub struct QuicTuning {
    /// Interval between keep-alive PINGs (keeps NAT bindings and idle timers alive).
    pub keep_alive: Duration,
    /// A connection with no traffic for this long is closed.
    pub idle_timeout: Duration,
    /// Concurrent bidirectional streams a peer may open.
    pub max_bidi_streams: u32,
    /// Concurrent unidirectional streams a peer may open (coordinator pushes use them).
    pub max_uni_streams: u32,
    /// Per-stream receive window in bytes.
    pub stream_receive_window: u32,
    /// Per-connection receive window in bytes.
    pub receive_window: u32,
}

impl Default for QuicTuning {
    fn default() -> Self {
        Self {
            keep_alive: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            max_bidi_streams: 16,
            max_uni_streams: 16,
            stream_receive_window: 8 * 1024 * 1024,
            receive_window: 32 * 1024 * 1024,
        }
    }
}

impl QuicTuning {
    /// The coordinator's settings: participants may open no unidirectional streams (they only send requests
    /// on bidirectional ones), and a connection may hold at most 16 MiB of unread data, so what one
    /// connection pins in transport buffers is bounded (docs/security.md, "Memory per connection").
    pub fn coordinator() -> Self {
        Self {
            max_uni_streams: 0,
            receive_window: 16 * 1024 * 1024,
            ..Self::default()
        }
    }

    /// The quinn transport config for these settings.
    pub fn transport(&self) -> Result<quinn::TransportConfig, TlsError> {
        let mut t = quinn::TransportConfig::default();
        let idle = quinn::IdleTimeout::try_from(self.idle_timeout).map_err(|e| TlsError::Quic(e.to_string()))?;
        t.max_idle_timeout(Some(idle))
            .keep_alive_interval(Some(self.keep_alive))
            .max_concurrent_bidi_streams(self.max_bidi_streams.into())
            .max_concurrent_uni_streams(self.max_uni_streams.into())
            .stream_receive_window(self.stream_receive_window.into())
            .receive_window(self.receive_window.into())
            .send_window(u64::from(self.receive_window));
        Ok(t)
    }
}

/// Wraps a rustls server config for quinn.
pub fn quic_server_config(tls: rustls::ServerConfig, tuning: &QuicTuning) -> Result<quinn::ServerConfig, TlsError> {
    let crypto = QuicServerConfig::try_from(Arc::new(tls)).map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    cfg.transport_config(Arc::new(tuning.transport()?));
    Ok(cfg)
}

/// Wraps a rustls client config for quinn.
pub fn quic_client_config(tls: rustls::ClientConfig, tuning: &QuicTuning) -> Result<quinn::ClientConfig, TlsError> {
    let crypto = QuicClientConfig::try_from(Arc::new(tls)).map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(Arc::new(tuning.transport()?));
    Ok(cfg)
}

/// The peer's end-entity certificate, if it presented one.
pub fn peer_leaf_certificate(conn: &quinn::Connection) -> Option<CertificateDer<'static>> {
    let any = conn.peer_identity()?;
    let chain = any.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    chain.first().cloned()
}

/// The ALPN protocol negotiated on the connection.
pub fn negotiated_alpn(conn: &quinn::Connection) -> Option<Vec<u8>> {
    let any = conn.handshake_data()?;
    any.downcast::<HandshakeData>().ok()?.protocol
}
