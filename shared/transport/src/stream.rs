//! Frame I/O over QUIC streams, used by both the coordinator and the participant.
//!
//! `read_frame` reads the 12-byte header and validates it against the cap before it allocates anything,
//! then reads the payload as it arrives, all under one deadline. The buffer grows with the bytes received
//! (never to the announced length up front), so a peer that announces a large frame and sends little pins
//! little. With a [`FrameQuota`] ([`read_frame_budgeted`]) every byte of buffer is drawn first from the
//! peer's own budget and then from one budget shared by all connections, and given back when the frame is
//! dropped: the memory held by in-flight frames is bounded per identity and in total (docs/security.md,
//! "Memory per connection"). On a timeout or an invalid header it sends `STOP_SENDING` so a slow or hostile
//! peer's stream slot is released at once.

use crate::quic::close_code;
use fedistill_shared::wire::frame::{decode_frame, decode_header, encode_frame, FrameKind, WireError, HEADER_LEN};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Largest piece read from the stream at once; the frame buffer grows by at most this much beyond the
/// bytes that have arrived.
pub const READ_CHUNK: usize = 64 * 1024;

/// A pool of bytes that in-flight frames draw from (one per identity, one shared by all connections).
#[derive(Clone, Debug)]
pub struct FrameBudget {
    sem: Arc<Semaphore>,
    capacity: usize,
}

impl FrameBudget {
    /// A budget of `bytes` (at most `u32::MAX`; larger values are clamped).
    pub fn new(bytes: usize) -> Self {
        let capacity = bytes.min(u32::MAX as usize);
        Self {
            sem: Arc::new(Semaphore::new(capacity)),
            capacity,
        }
    }

    /// The budget's size in bytes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes held by frames being received or decoded right now (including bytes already set aside for a
    /// reader that waits for more of them).
    pub fn in_use(&self) -> usize {
        self.capacity.saturating_sub(self.sem.available_permits())
    }
}

/// What one peer's frames draw from: its own budget first, then the budget shared by every connection.
#[derive(Clone, Debug)]
pub struct FrameQuota {
    /// The identity's own budget (shared by all of its connections and streams).
    pub own: FrameBudget,
    /// The budget shared by all connections.
    pub global: FrameBudget,
}

/// Bytes reserved from a [`FrameQuota`]; given back when dropped.
#[derive(Debug, Default)]
pub struct Reservation {
    own: Option<OwnedSemaphorePermit>,
    global: Option<OwnedSemaphorePermit>,
    bytes: usize,
}

impl Reservation {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Takes `more` bytes from the quota, waiting until both budgets have them. Fails at once when the
    /// request can never be met (more than a budget's whole capacity).
    async fn grow(&mut self, quota: &FrameQuota, more: usize) -> Result<(), TransportError> {
        if more == 0 {
            return Ok(());
        }
        let want = self.bytes + more;
        for b in [&quota.own, &quota.global] {
            if want > b.capacity {
                return Err(TransportError::Budget {
                    wanted: want,
                    capacity: b.capacity,
                });
            }
        }
        let n = more as u32; // more <= capacity <= u32::MAX
        let own = quota
            .own
            .sem
            .clone()
            .acquire_many_owned(n)
            .await
            .map_err(|_| TransportError::Cancelled)?;
        let global = quota
            .global
            .sem
            .clone()
            .acquire_many_owned(n)
            .await
            .map_err(|_| TransportError::Cancelled)?;
        for (slot, p) in [(&mut self.own, own), (&mut self.global, global)] {
            match slot {
                Some(held) => held.merge(p),
                None => *slot = Some(p),
            }
        }
        self.bytes = want;
        Ok(())
    }
}

/// A frame read under a [`FrameQuota`]: the bytes and the reservation that accounts for them. Keep it
/// alive while the frame (or what is decoded from it) is in memory.
#[derive(Debug)]
pub struct BudgetedFrame {
    /// The raw frame bytes.
    pub bytes: Vec<u8>,
    /// The budget held for them.
    pub reservation: Reservation,
}

/// Errors moving frames over QUIC.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The whole frame did not arrive within the deadline.
    #[error("timed out after {0:?} waiting for a frame")]
    Timeout(Duration),
    /// The bytes received are not a valid frame.
    #[error("invalid frame: {0}")]
    Wire(#[from] WireError),
    /// The stream ended before a complete frame arrived.
    #[error("stream ended after {got} of {expected} frame bytes")]
    Truncated {
        /// Bytes received.
        got: usize,
        /// Bytes the frame needed.
        expected: usize,
    },
    /// Reading from the stream failed (reset by the peer, connection lost, ...).
    #[error("stream read failed: {0}")]
    Read(String),
    /// Writing to the stream failed.
    #[error("stream write failed: {0}")]
    Write(String),
    /// The connection was closed; holds the peer's close code and reason when it sent one.
    #[error("connection closed: {0}")]
    Closed(#[from] quinn::ConnectionError),
    /// Establishing the connection failed.
    #[error("connect failed: {0}")]
    Connect(String),
    /// The TLS or QUIC configuration could not be built.
    #[error("configuration error: {0}")]
    Config(String),
    /// A local socket error.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The operation was cancelled by shutdown.
    #[error("cancelled")]
    Cancelled,
    /// A frame needs more buffer than a memory budget can ever grant.
    #[error("frame needs {wanted} bytes of buffer, more than the budget of {capacity} bytes")]
    Budget {
        /// Bytes the frame needs.
        wanted: usize,
        /// The budget's capacity.
        capacity: usize,
    },
}

impl TransportError {
    /// The application close code and reason if the peer closed the connection with one.
    pub fn application_close(&self) -> Option<(u64, String)> {
        let err = match self {
            TransportError::Closed(e) => e,
            _ => return None,
        };
        match err {
            quinn::ConnectionError::ApplicationClosed(c) => Some((
                c.error_code.into_inner(),
                String::from_utf8_lossy(&c.reason).into_owned(),
            )),
            _ => None,
        }
    }
}

fn read_err(e: quinn::ReadError) -> TransportError {
    match e {
        quinn::ReadError::ConnectionLost(c) => TransportError::Closed(c),
        other => TransportError::Read(other.to_string()),
    }
}

/// Writes one already-encoded frame. Does not finish the stream.
pub async fn write_frame(send: &mut quinn::SendStream, frame: &[u8]) -> Result<(), TransportError> {
    send.write_all(frame).await.map_err(|e| match e {
        quinn::WriteError::ConnectionLost(c) => TransportError::Closed(c),
        other => TransportError::Write(other.to_string()),
    })
}

/// Encodes `value` as a frame of `kind` and writes it.
pub async fn send_message<T: Serialize + ?Sized>(
    send: &mut quinn::SendStream,
    kind: FrameKind,
    value: &T,
) -> Result<(), TransportError> {
    let frame = encode_frame(kind, value)?;
    write_frame(send, &frame).await
}

async fn read_exact_counting(recv: &mut quinn::RecvStream, buf: &mut [u8]) -> Result<(), (usize, TransportError)> {
    let mut filled = 0;
    while filled < buf.len() {
        match recv.read(&mut buf[filled..]).await {
            Ok(Some(n)) => filled += n,
            Ok(None) => {
                return Err((
                    filled,
                    TransportError::Truncated {
                        got: filled,
                        expected: buf.len(),
                    },
                ))
            }
            Err(e) => return Err((filled, read_err(e))),
        }
    }
    Ok(())
}

/// How many bytes of capacity to add to a buffer of `capacity` that must hold `need` bytes of a frame of
/// `total`: double (so the copies stay linear), but never past the frame's length and never below `need`.
/// The reader grows its buffer only once the bytes received fill it, so the buffer never holds more than
/// twice what arrived or what arrived plus one chunk ([`READ_CHUNK`]), whichever is more; never the
/// announced length up front.
fn growth(capacity: usize, need: usize, total: usize) -> usize {
    capacity.saturating_mul(2).min(total).max(need).saturating_sub(capacity)
}

async fn read_frame_inner(
    recv: &mut quinn::RecvStream,
    max_payload: usize,
    quota: Option<&FrameQuota>,
) -> Result<(Vec<u8>, Reservation), TransportError> {
    let mut header = [0u8; HEADER_LEN];
    read_exact_counting(recv, &mut header)
        .await
        .map_err(|(got, e)| match e {
            // Even a partial header can already be invalid; report that rather than "truncated".
            TransportError::Truncated { .. } => match decode_header(&header[..got], max_payload) {
                Err(w) if !w.is_incomplete() => TransportError::Wire(w),
                _ => TransportError::Truncated {
                    got,
                    expected: HEADER_LEN,
                },
            },
            e => e,
        })?;
    let h = decode_header(&header, max_payload)?;
    let total = h.frame_len();
    let mut reservation = Reservation::default();
    // `held`: the bytes of buffer allocated (and drawn from the quota), grown only once what arrived fills it.
    let mut held = growth(0, HEADER_LEN + (total - HEADER_LEN).min(READ_CHUNK), total);
    if let Some(q) = quota {
        reservation.grow(q, held).await?;
    }
    let mut frame: Vec<u8> = Vec::new();
    frame.reserve_exact(held);
    frame.extend_from_slice(&header);
    while frame.len() < total {
        if frame.len() == held {
            let more = growth(held, held + (total - held).min(READ_CHUNK), total);
            if let Some(q) = quota {
                reservation.grow(q, more).await?;
            }
            frame.reserve_exact(more);
            held += more;
        }
        // Never more than the buffer's free space: a read cannot outgrow what was drawn from the quota.
        let want = (held - frame.len()).min(READ_CHUNK);
        match recv.read_chunk(want, true).await {
            Ok(Some(chunk)) => frame.extend_from_slice(&chunk.bytes),
            Ok(None) => {
                return Err(TransportError::Truncated {
                    got: frame.len(),
                    expected: total,
                })
            }
            Err(e) => return Err(read_err(e)),
        }
    }
    Ok((frame, reservation))
}

async fn read_frame_with(
    recv: &mut quinn::RecvStream,
    max_payload: usize,
    timeout: Duration,
    quota: Option<&FrameQuota>,
) -> Result<(Vec<u8>, Reservation), TransportError> {
    let result = match tokio::time::timeout(timeout, read_frame_inner(recv, max_payload, quota)).await {
        Ok(r) => r,
        Err(_) => Err(TransportError::Timeout(timeout)),
    };
    let code = match &result {
        Err(TransportError::Timeout(_)) => Some(close_code::STREAM_TIMEOUT),
        Err(TransportError::Wire(_)) | Err(TransportError::Truncated { .. }) | Err(TransportError::Budget { .. }) => {
            Some(close_code::STREAM_INVALID)
        }
        _ => None,
    };
    if let Some(code) = code {
        // The stream may already be gone; nothing more to free then.
        let _ = recv.stop(code.into());
    }
    result
}

/// Reads one frame like [`read_frame`], drawing its buffer from `quota` as bytes arrive (waiting while
/// the budgets are exhausted, within the same deadline).
pub async fn read_frame_budgeted(
    recv: &mut quinn::RecvStream,
    max_payload: usize,
    timeout: Duration,
    quota: &FrameQuota,
) -> Result<BudgetedFrame, TransportError> {
    let (bytes, reservation) = read_frame_with(recv, max_payload, timeout, Some(quota)).await?;
    Ok(BudgetedFrame { bytes, reservation })
}

/// Reads one frame under `quota` and decodes its payload as `T`; the reservation is returned with the
/// value so the caller holds it while the decoded message is in memory.
pub async fn recv_message_budgeted<T: DeserializeOwned>(
    recv: &mut quinn::RecvStream,
    max_payload: usize,
    timeout: Duration,
    quota: &FrameQuota,
) -> Result<(FrameKind, T, Reservation), TransportError> {
    let frame = read_frame_budgeted(recv, max_payload, timeout, quota).await?;
    match decode_frame::<T>(&frame.bytes, max_payload) {
        Ok(d) => Ok((d.kind, d.value, frame.reservation)),
        Err(e) => {
            let _ = recv.stop(close_code::STREAM_INVALID.into());
            Err(e.into())
        }
    }
}

/// Reads exactly one frame (header + payload) of at most `max_payload` payload bytes within `timeout`.
///
/// Returns the raw frame bytes for [`fedistill_shared::wire::decode_frame`]. On timeout, an invalid header or a truncated
/// frame the receive side is stopped (`STOP_SENDING` with [`close_code::STREAM_TIMEOUT`] or
/// [`close_code::STREAM_INVALID`]), so the stream slot is freed.
pub async fn read_frame(
    recv: &mut quinn::RecvStream,
    max_payload: usize,
    timeout: Duration,
) -> Result<Vec<u8>, TransportError> {
    read_frame_with(recv, max_payload, timeout, None)
        .await
        .map(|(frame, _)| frame)
}

/// Reads one frame and decodes its payload as `T`; returns the frame kind and the value.
pub async fn recv_message<T: DeserializeOwned>(
    recv: &mut quinn::RecvStream,
    max_payload: usize,
    timeout: Duration,
) -> Result<(FrameKind, T), TransportError> {
    let frame = read_frame(recv, max_payload, timeout).await?;
    match decode_frame::<T>(&frame, max_payload) {
        Ok(d) => Ok((d.kind, d.value)),
        Err(e) => {
            let _ = recv.stop(close_code::STREAM_INVALID.into());
            Err(e.into())
        }
    }
}

#[cfg(test)]
mod tests {
    //! The reader against a real QUIC stream on loopback (the federation's own TLS setup, no client
    //! certificate): what a frame's buffer holds while its bytes trickle in, and the budget shared by
    //! connections.
    use super::*;
    use crate::{quic_client_config, quic_server_config, QuicTuning};
    use fedistill_shared::provision::{self, pki, Ca};
    use fedistill_shared::tls;
    use std::time::Instant;

    /// A server endpoint on 127.0.0.1 and a way to dial it.
    struct Loopback {
        server: quinn::Endpoint,
        ca_pem: String,
    }

    impl Loopback {
        fn start() -> Loopback {
            let now = provision::now_utc();
            let (ca_cert, ca_key) = pki::create_ca("stream-test", now).expect("ca");
            let ca = Ca::from_pem(&ca_cert.pem, &ca_key, "stream-test").expect("ca");
            let key = pki::generate_tls_key().expect("key");
            let cert = ca.issue_server(&["127.0.0.1".to_string()], &key, now).expect("cert");
            let tls = tls::dangerous::server_config_no_client_auth(cert.pem.as_bytes(), key.serialize_pem().as_bytes())
                .expect("server tls");
            let cfg = quic_server_config(tls, &QuicTuning::default()).expect("server quic");
            let server = quinn::Endpoint::server(cfg, std::net::SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind");
            Loopback {
                server,
                ca_pem: ca_cert.pem,
            }
        }

        /// A new connection: (the client's side, the server's side).
        async fn connect(&self) -> (quinn::Connection, quinn::Connection) {
            let tls = tls::dangerous::client_config_no_client_auth(self.ca_pem.as_bytes()).expect("client tls");
            let cfg = quic_client_config(tls, &QuicTuning::default()).expect("client quic");
            let mut client =
                quinn::Endpoint::client(std::net::SocketAddr::from(([127, 0, 0, 1], 0))).expect("client endpoint");
            client.set_default_client_config(cfg);
            let addr = self.server.local_addr().expect("addr");
            let dialled = client.connect(addr, "127.0.0.1").expect("connect");
            let accepted = async { self.server.accept().await.expect("incoming").await.expect("handshake") };
            let (c, s) = tokio::join!(dialled, accepted);
            (c.expect("client handshake"), s)
        }
    }

    fn header(payload: usize) -> [u8; HEADER_LEN] {
        fedistill_shared::wire::frame::encode_header(FrameKind(1), payload).expect("header")
    }

    /// Waits (at most a minute) until `cond` holds.
    async fn until(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The bound the reader keeps: the buffer holds at most twice what arrived, or what arrived plus one
    /// chunk. `sent` bounds what arrived, so the bound under `sent` holds at any moment.
    fn bound(sent: usize) -> usize {
        (2 * sent).max(sent + READ_CHUNK)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_frame_announced_at_16_mib_holds_about_what_arrived() {
        const ANNOUNCED: usize = 16 * 1024 * 1024;
        let lo = Loopback::start();
        let (client, server) = lo.connect().await;
        let quota = FrameQuota {
            own: FrameBudget::new(2 * (ANNOUNCED + HEADER_LEN)),
            global: FrameBudget::new(4 * (ANNOUNCED + HEADER_LEN)),
        };
        let (mut send, _client_recv) = client.open_bi().await.expect("stream");
        send.write_all(&header(ANNOUNCED)).await.expect("header");
        send.write_all(&[0xA5; 1024]).await.expect("1 KiB of payload");
        let sent = HEADER_LEN + 1024;
        let (_server_send, mut recv) = server.accept_bi().await.expect("accept");
        let q = quota.clone();
        let reader = tokio::spawn(async move {
            read_frame_budgeted(&mut recv, ANNOUNCED, Duration::from_secs(60), &q)
                .await
                .map(|f| f.bytes.len())
        });
        until("the reader holds a buffer", || quota.own.in_use() > 0).await;
        let held = quota.own.in_use();
        assert!(
            held <= bound(sent),
            "{held} bytes held for {sent} sent of a {ANNOUNCED}-byte frame (at most {})",
            bound(sent)
        );
        assert_eq!(
            quota.global.in_use(),
            held,
            "the same bytes are drawn from the shared budget"
        );
        // The stream ends after the 1 KiB: every byte sent arrived, the frame is truncated, the buffer given back.
        send.finish().expect("finish");
        match reader.await.expect("reader task") {
            Err(TransportError::Truncated { got, expected }) => {
                assert_eq!((got, expected), (sent, HEADER_LEN + ANNOUNCED));
            }
            other => panic!("expected a truncated frame, got {other:?}"),
        }
        assert_eq!((quota.own.in_use(), quota.global.in_use()), (0, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_shared_budget_bounds_frames_in_flight_across_connections() {
        // Two peers, each with its own budget of 1 MiB, share 256 KiB: a 200 KiB frame from each cannot be
        // held at once.
        const PAYLOAD: usize = 200 * 1024;
        const TOTAL: usize = HEADER_LEN + PAYLOAD;
        let lo = Loopback::start();
        let global = FrameBudget::new(256 * 1024);
        let quota = |own: usize| FrameQuota {
            own: FrameBudget::new(own),
            global: global.clone(),
        };
        let (qa, qb) = (quota(1 << 20), quota(1 << 20));
        let mut frame = header(PAYLOAD).to_vec();
        frame.resize(TOTAL, 0x5A);
        let (client_a, server_a) = lo.connect().await;
        let (client_b, server_b) = lo.connect().await;

        // A's whole frame is read and held (being handled).
        let (mut send, _ra) = client_a.open_bi().await.expect("stream a");
        send.write_all(&frame).await.expect("frame a");
        send.finish().expect("finish a");
        let (_sa, mut recv) = server_a.accept_bi().await.expect("accept a");
        let held_a = read_frame_budgeted(&mut recv, PAYLOAD, Duration::from_secs(60), &qa)
            .await
            .expect("frame a");
        assert_eq!((held_a.bytes.len(), held_a.reservation.bytes()), (TOTAL, TOTAL));
        assert_eq!(global.in_use(), TOTAL);

        // B's whole frame arrives on the other connection. Its reader takes its own budget, then needs more of
        // the shared one than A's frame leaves: it waits, and its stream deadline passes first.
        assert!(TOTAL + (HEADER_LEN + READ_CHUNK) > global.capacity());
        let send_b = |frame: Vec<u8>| {
            let conn = client_b.clone();
            async move {
                let (mut send, recv) = conn.open_bi().await.expect("stream b");
                send.write_all(&frame).await.expect("frame b");
                send.finish().expect("finish b");
                (send, recv)
            }
        };
        let _b1 = send_b(frame.clone()).await;
        let (_sb, mut recv) = server_b.accept_bi().await.expect("accept b");
        match read_frame_budgeted(&mut recv, PAYLOAD, Duration::from_secs(1), &qb).await {
            Err(TransportError::Timeout(_)) => {}
            other => panic!("B's frame was read past the shared budget: {other:?}"),
        }
        assert_eq!(
            (global.in_use(), qb.own.in_use()),
            (TOTAL, 0),
            "B's reader gave back what it held"
        );

        // Sent again, B's frame waits for the shared budget ...
        let _b2 = send_b(frame).await;
        let (_sb, mut recv) = server_b.accept_bi().await.expect("accept b");
        let q = qb.clone();
        let reader = tokio::spawn(async move {
            read_frame_budgeted(&mut recv, PAYLOAD, Duration::from_secs(60), &q)
                .await
                .map(|f| (f.bytes.len(), f.reservation.bytes()))
        });
        until("B's reader has drawn on its own budget", || qb.own.in_use() > 0).await;
        assert!(global.in_use() <= global.capacity());
        // ... and is read as soon as A's frame is handled and dropped.
        drop(held_a);
        let (len, reserved) = tokio::time::timeout(Duration::from_secs(60), reader)
            .await
            .expect("B is read once A's bytes are given back")
            .expect("reader task")
            .expect("frame b");
        assert_eq!((len, reserved), (TOTAL, TOTAL));
        assert_eq!(global.in_use(), 0, "B's frame was dropped with its reservation");
        assert_eq!((qa.own.in_use(), qb.own.in_use()), (0, 0));
    }
}
