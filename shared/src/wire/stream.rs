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

use super::frame::{decode_frame, decode_header, encode_frame, FrameKind, WireError, HEADER_LEN};
use crate::tls::close_code;
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

    /// Bytes held by frames being received or decoded right now.
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
/// The buffer thus holds at most twice what arrived plus one chunk, never the announced length up front.
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
    let mut frame: Vec<u8> = Vec::new();
    let first = growth(0, HEADER_LEN + (total - HEADER_LEN).min(READ_CHUNK), total);
    if let Some(q) = quota {
        reservation.grow(q, first).await?;
    }
    frame.reserve_exact(first);
    frame.extend_from_slice(&header);
    while frame.len() < total {
        let want = (total - frame.len()).min(READ_CHUNK);
        if frame.capacity() < frame.len() + want {
            let more = growth(frame.capacity(), frame.len() + want, total);
            if let Some(q) = quota {
                reservation.grow(q, more).await?;
            }
            frame.reserve_exact(more);
        }
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
/// Returns the raw frame bytes for [`super::decode_frame`]. On timeout, an invalid header or a truncated
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
