//! Versioned, length-prefixed frames around the bounded payload codec of [`crate::codec`].
//!
//! Layout (documented in docs/protocol.md, "Frame layout"):
//! `magic "FDST" | version u8 | kind u8 | reserved u16 = 0 | payload length u32 BE | payload`.
//! The decoder checks magic, version, reserved bits and the length against the caller's cap before it
//! allocates or parses anything, and it tells "need more bytes" ([`WireError::Incomplete`]) apart from
//! "this can never become valid" (every other variant). The payload codec itself (bincode 2) lives in
//! [`crate::codec`]; this module wraps its `encode_payload` and `decode_payload` so codec errors come back
//! as [`WireError`], and re-exports its `bytes` serde helper.

use crate::codec::{self, CodecError};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Serde adapter that writes `Vec<u8>` fields as one length-prefixed byte string (from [`crate::codec`]).
pub use crate::codec::bytes;

/// The four magic bytes that open every frame.
pub const MAGIC: [u8; 4] = *b"FDST";
/// The frame format version this build writes and accepts.
pub const VERSION: u8 = 1;
/// Size of the fixed frame header in bytes.
pub const HEADER_LEN: usize = 12;
/// Default cap on one frame's payload: 16 MiB.
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;
/// Hard ceiling for any payload, whatever cap a caller passes (the length field is a u32 anyway).
pub const ABSOLUTE_MAX_FRAME: usize = 1024 * 1024 * 1024;

/// What a frame carries; the numbering is owned by `wire::messages`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrameKind(pub u8);

/// Errors from encoding or decoding frames and payloads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// More bytes are needed before the frame can be decoded (not an error on a stream that is still open).
    #[error("incomplete frame: {needed} more bytes needed")]
    Incomplete {
        /// Minimum number of additional bytes required.
        needed: usize,
    },
    /// The first four bytes are not the frame magic.
    #[error("bad frame magic {0:02x?}; expected \"FDST\"")]
    BadMagic([u8; 4]),
    /// The frame declares a format version this build does not speak.
    #[error("unsupported frame version {got}; this build speaks version {VERSION}")]
    UnsupportedVersion {
        /// Version byte found in the header.
        got: u8,
    },
    /// Reserved header bits are set.
    #[error("reserved header field is {0:#06x}, must be 0")]
    Reserved(u16),
    /// The declared payload length exceeds the receiver's cap.
    #[error("frame payload of {len} bytes exceeds the cap of {max} bytes")]
    TooLarge {
        /// Declared payload length.
        len: usize,
        /// Receiver's cap.
        max: usize,
    },
    /// The payload is not a valid encoding of the expected type.
    #[error("malformed payload: {0}")]
    Malformed(String),
    /// The payload decoded but left unread bytes behind.
    #[error("payload has {0} trailing bytes after the message")]
    TrailingBytes(usize),
    /// The value could not be encoded.
    #[error("could not encode payload: {0}")]
    Encode(String),
}

impl From<CodecError> for WireError {
    fn from(e: CodecError) -> Self {
        match e {
            CodecError::Malformed(m) => WireError::Malformed(m),
            CodecError::TrailingBytes(n) => WireError::TrailingBytes(n),
            CodecError::Encode(m) => WireError::Encode(m),
        }
    }
}

impl WireError {
    /// True for [`WireError::Incomplete`]: wait for more bytes instead of rejecting the peer.
    pub fn is_incomplete(&self) -> bool {
        matches!(self, WireError::Incomplete { .. })
    }
}

/// A parsed frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// What the payload holds.
    pub kind: FrameKind,
    /// Payload length in bytes (already checked against the cap).
    pub len: usize,
}

impl FrameHeader {
    /// Total frame size: header plus payload.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.len
    }
}

/// A decoded frame: the message, its kind and how many bytes of the input it used.
#[derive(Clone, Debug, PartialEq)]
pub struct Decoded<T> {
    /// Frame kind from the header.
    pub kind: FrameKind,
    /// The decoded message.
    pub value: T,
    /// Bytes consumed from the input (header + payload).
    pub consumed: usize,
}

/// Parses and validates a header from the start of `buf` without allocating.
///
/// Prefix checks run on whatever bytes are present, so garbage is rejected as soon as its first byte
/// differs from the magic, not after 12 bytes arrive.
pub fn decode_header(buf: &[u8], max_payload: usize) -> Result<FrameHeader, WireError> {
    let max = max_payload.min(ABSOLUTE_MAX_FRAME);
    let have = buf.len().min(MAGIC.len());
    if buf[..have] != MAGIC[..have] {
        let mut got = [0u8; 4];
        got[..have].copy_from_slice(&buf[..have]);
        return Err(WireError::BadMagic(got));
    }
    if let Some(&v) = buf.get(4) {
        if v != VERSION {
            return Err(WireError::UnsupportedVersion { got: v });
        }
    }
    if buf.len() < HEADER_LEN {
        return Err(WireError::Incomplete {
            needed: HEADER_LEN - buf.len(),
        });
    }
    let kind = FrameKind(buf[5]);
    let reserved = u16::from_be_bytes([buf[6], buf[7]]);
    if reserved != 0 {
        return Err(WireError::Reserved(reserved));
    }
    let len = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]) as usize;
    if len > max {
        return Err(WireError::TooLarge { len, max });
    }
    Ok(FrameHeader { kind, len })
}

/// Writes the 12-byte header for a payload of `len` bytes.
pub fn encode_header(kind: FrameKind, len: usize) -> Result<[u8; HEADER_LEN], WireError> {
    let len32 = u32::try_from(len)
        .ok()
        .filter(|&l| (l as usize) <= ABSOLUTE_MAX_FRAME)
        .ok_or(WireError::TooLarge {
            len,
            max: ABSOLUTE_MAX_FRAME,
        })?;
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(&MAGIC);
    h[4] = VERSION;
    h[5] = kind.0;
    h[8..].copy_from_slice(&len32.to_be_bytes());
    Ok(h)
}

/// Encodes `value` as one frame of `kind`.
pub fn encode_frame<T: Serialize + ?Sized>(kind: FrameKind, value: &T) -> Result<Vec<u8>, WireError> {
    let payload = encode_payload(value)?;
    let header = encode_header(kind, payload.len())?;
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Decodes one frame from the start of `buf`; the payload may be at most `max_payload` bytes.
///
/// Trailing bytes after the frame are left alone (see [`Decoded::consumed`]); trailing bytes inside the
/// payload are an error.
pub fn decode_frame<T: DeserializeOwned>(buf: &[u8], max_payload: usize) -> Result<Decoded<T>, WireError> {
    let header = decode_header(buf, max_payload)?;
    let total = header.frame_len();
    if buf.len() < total {
        return Err(WireError::Incomplete {
            needed: total - buf.len(),
        });
    }
    let value = decode_payload(&buf[HEADER_LEN..total])?;
    Ok(Decoded {
        kind: header.kind,
        value,
        consumed: total,
    })
}

/// Serializes a value with the project codec (bincode 2, standard config), no frame header: the codec's
/// [`crate::codec::encode_payload`] with its error reported as a [`WireError`].
pub fn encode_payload<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, WireError> {
    Ok(codec::encode_payload(value)?)
}

/// Deserializes a payload that must be consumed exactly, with bounded allocation: the codec's
/// [`crate::codec::decode_payload`] with its error reported as a [`WireError`].
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, WireError> {
    Ok(codec::decode_payload(payload)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Msg {
        round: u64,
        name: String,
        #[serde(with = "bytes")]
        blob: Vec<u8>,
        probs: Vec<f32>,
    }

    fn sample() -> Msg {
        Msg {
            round: 3,
            name: "bank-a".into(),
            blob: vec![1, 2, 3],
            probs: vec![0.25, 0.75],
        }
    }

    #[test]
    fn round_trip_and_header_layout() {
        let f = encode_frame(FrameKind(9), &sample()).expect("encode");
        assert_eq!(&f[..4], b"FDST");
        assert_eq!(f[4], VERSION);
        assert_eq!(f[5], 9);
        assert_eq!(&f[6..8], &[0, 0]);
        assert_eq!(
            u32::from_be_bytes([f[8], f[9], f[10], f[11]]) as usize,
            f.len() - HEADER_LEN
        );
        let d: Decoded<Msg> = decode_frame(&f, DEFAULT_MAX_FRAME).expect("decode");
        assert_eq!(d.value, sample());
        assert_eq!(d.kind, FrameKind(9));
        assert_eq!(d.consumed, f.len());
    }

    #[test]
    fn every_strict_prefix_is_incomplete_not_invalid() {
        let f = encode_frame(FrameKind(1), &sample()).expect("encode");
        for cut in 0..f.len() {
            let err = decode_frame::<Msg>(&f[..cut], DEFAULT_MAX_FRAME).expect_err("prefix");
            assert!(err.is_incomplete(), "cut {cut}: {err}");
        }
    }

    #[test]
    fn oversized_is_rejected_from_the_header_alone() {
        let mut h = encode_header(FrameKind(1), 1_000_000).expect("header").to_vec();
        assert_eq!(
            decode_frame::<Msg>(&h, 1000),
            Err(WireError::TooLarge {
                len: 1_000_000,
                max: 1000
            })
        );
        h[8..].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(decode_header(&h, usize::MAX), Err(WireError::TooLarge { .. })));
    }

    #[test]
    fn wrong_magic_version_reserved_are_invalid() {
        let f = encode_frame(FrameKind(1), &sample()).expect("encode");
        let mut bad = f.clone();
        bad[0] = b'X';
        assert!(matches!(
            decode_frame::<Msg>(&bad[..1], 1 << 20),
            Err(WireError::BadMagic(_))
        ));
        let mut v2 = f.clone();
        v2[4] = 2;
        assert_eq!(
            decode_frame::<Msg>(&v2, 1 << 20),
            Err(WireError::UnsupportedVersion { got: 2 })
        );
        let mut r = f.clone();
        r[7] = 1;
        assert_eq!(decode_frame::<Msg>(&r, 1 << 20), Err(WireError::Reserved(1)));
    }

    #[test]
    fn payload_garbage_and_trailing_bytes_are_invalid() {
        let mut f = encode_frame(FrameKind(1), &7u8).expect("encode");
        // Claim 2 payload bytes while the message uses 1: trailing byte inside the payload.
        f.push(0);
        f[11] = 2;
        assert_eq!(decode_frame::<u8>(&f, 1 << 20), Err(WireError::TrailingBytes(1)));
        // A string whose length prefix claims far more than the payload holds.
        let payload = [0xFBu8, 0xFF, 0xFF, 0xFF, 0x0F];
        let mut g = encode_header(FrameKind(1), payload.len()).expect("h").to_vec();
        g.extend_from_slice(&payload);
        assert!(matches!(
            decode_frame::<String>(&g, 1 << 20),
            Err(WireError::Malformed(_))
        ));
    }

    #[test]
    fn varint_packed_ids_decode_even_when_they_expand_eightfold_in_memory() {
        // 9000 sample ids below 2^14 take 2 bytes each on the wire (~18 KB) but 72 KB as u64s: the
        // decode limit must count memory, not wire bytes (a round opening of 9000 rows was refused).
        let ids: Vec<u64> = (0..9000).map(|i| i * 7 % 16000).collect();
        let f = encode_frame(FrameKind(1), &ids).expect("encode");
        assert!(f.len() < 64 * 1024, "{} bytes", f.len());
        let d = decode_frame::<Vec<u64>>(&f, 1 << 20).expect("decodes");
        assert_eq!(d.value, ids);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, rng_seed: proptest::test_runner::RngSeed::Fixed(0x5eed), ..ProptestConfig::default() })]

        #[test]
        fn decoder_never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            match decode_frame::<Msg>(&bytes, 1024) {
                Ok(d) => prop_assert!(d.consumed <= bytes.len()),
                Err(WireError::Incomplete { needed }) => prop_assert!(needed > 0),
                Err(_) => {}
            }
        }

        #[test]
        fn round_trip_any_message(round in any::<u64>(), name in "[a-z]{0,20}", blob in proptest::collection::vec(any::<u8>(), 0..300),
                                  probs in proptest::collection::vec(any::<f32>().prop_filter("finite", |f| f.is_finite()), 0..50),
                                  kind in any::<u8>(), tail in proptest::collection::vec(any::<u8>(), 0..8)) {
            let m = Msg { round, name, blob, probs };
            let mut f = encode_frame(FrameKind(kind), &m).expect("encode");
            let n = f.len();
            f.extend_from_slice(&tail);
            let d: Decoded<Msg> = decode_frame(&f, DEFAULT_MAX_FRAME).expect("decode");
            prop_assert_eq!(d.value, m);
            prop_assert_eq!(d.consumed, n);
            prop_assert_eq!(d.kind, FrameKind(kind));
        }

        #[test]
        fn flipping_a_header_byte_never_panics(idx in 0usize..HEADER_LEN, val in any::<u8>()) {
            let mut f = encode_frame(FrameKind(1), &sample()).expect("encode");
            f[idx] = val;
            let _ = decode_frame::<Msg>(&f, 4096);
        }
    }
}
