//! Frame I/O over QUIC streams, used by both the coordinator and the participant.
//!
//! `read_frame` reads the 12-byte header, validates it against the cap BEFORE allocating the payload
//! buffer, then reads exactly the payload, all under one deadline. On a timeout or an invalid header it
//! sends `STOP_SENDING` so a slow or hostile peer's stream slot is released at once.

use super::frame::{decode_frame, decode_header, encode_frame, FrameKind, WireError, HEADER_LEN};
use crate::tls::close_code;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::Duration;

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

async fn read_frame_inner(recv: &mut quinn::RecvStream, max_payload: usize) -> Result<Vec<u8>, TransportError> {
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
    let mut frame = vec![0u8; h.frame_len()];
    frame[..HEADER_LEN].copy_from_slice(&header);
    read_exact_counting(recv, &mut frame[HEADER_LEN..])
        .await
        .map_err(|(got, e)| match e {
            TransportError::Truncated { .. } => TransportError::Truncated {
                got: HEADER_LEN + got,
                expected: h.frame_len(),
            },
            e => e,
        })?;
    Ok(frame)
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
    let result = match tokio::time::timeout(timeout, read_frame_inner(recv, max_payload)).await {
        Ok(r) => r,
        Err(_) => Err(TransportError::Timeout(timeout)),
    };
    let code = match &result {
        Err(TransportError::Timeout(_)) => Some(close_code::STREAM_TIMEOUT),
        Err(TransportError::Wire(_)) | Err(TransportError::Truncated { .. }) => Some(close_code::STREAM_INVALID),
        _ => None,
    };
    if let Some(code) = code {
        // The stream may already be gone; nothing more to free then.
        let _ = recv.stop(code.into());
    }
    result
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
