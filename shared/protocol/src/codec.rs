//! The project's payload codec: bounded bincode (2, standard config) and the `bytes` serde helper.
//!
//! This is the bottom layer of the crate: it imports no other module of it, so `crypto` (which encodes the
//! payloads it signs) and `wire` (which frames them) can both sit on top of it without importing each
//! other. The order, enforced by `tests/layering.rs` at the workspace root, is
//! `codec` <- `crypto` <- `wire` <- `protocol`. bincode stays private to this file so the codec can be
//! swapped without touching callers. Frame-level callers use the same functions through `wire` (`wire::
//! encode_payload`, `wire::decode_payload`), which report a [`CodecError`] as the matching frame error.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The largest decode tier, in decoded (in-memory) bytes: 1 GiB, the same ceiling the frame layer puts on
/// any payload.
const LARGEST_TIER: usize = 1024 * 1024 * 1024;

/// Errors from encoding or decoding a payload (no frame header involved).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
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

fn config<const N: usize>(
) -> bincode::config::Configuration<bincode::config::LittleEndian, bincode::config::Varint, bincode::config::Limit<N>> {
    bincode::config::standard().with_limit::<N>()
}

/// Serializes a value with the project codec (bincode 2, standard config), no frame header.
pub fn encode_payload<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, bincode::config::standard()).map_err(|e| CodecError::Encode(e.to_string()))
}

/// Deserializes a payload that must be consumed exactly.
///
/// bincode's limit is a compile-time constant and counts decoded (in-memory) bytes, so the smallest of a
/// few tiers at least 16x the payload length is chosen: a length prefix inside a small payload can never
/// make bincode reserve more than that tier, while honest varint-packed data (a `u64` takes 1 to 9 bytes
/// on the wire, 8 in memory) always fits. Payloads up to 64 KiB get 1 MiB, up to 1 MiB get 16 MiB, up to
/// 16 MiB get 256 MiB.
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, CodecError> {
    const KIB64: usize = 64 * 1024;
    const MIB1: usize = 1024 * 1024;
    const MIB16: usize = 16 * MIB1;
    const MIB256: usize = 256 * MIB1;
    let n = payload.len();
    let result = if n <= KIB64 {
        bincode::serde::decode_from_slice(payload, config::<MIB1>())
    } else if n <= MIB1 {
        bincode::serde::decode_from_slice(payload, config::<MIB16>())
    } else if n <= MIB16 {
        bincode::serde::decode_from_slice(payload, config::<MIB256>())
    } else {
        bincode::serde::decode_from_slice(payload, config::<LARGEST_TIER>())
    };
    let (value, used) = result.map_err(|e| CodecError::Malformed(e.to_string()))?;
    if used != n {
        return Err(CodecError::TrailingBytes(n - used));
    }
    Ok(value)
}

/// Serde adapter that writes `Vec<u8>` fields as one length-prefixed byte string, which bincode copies in
/// one go instead of element by element. Use with `#[serde(with = "fedistill_shared::wire::bytes")]`.
pub mod bytes {
    use serde::{Deserializer, Serializer};

    /// Serializes a byte vector as a byte string.
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    /// Deserializes a byte string into a vector.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_byte_buf(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Blob {
        #[serde(with = "bytes")]
        data: Vec<u8>,
    }

    #[test]
    fn round_trips_and_byte_strings_are_one_length_prefix_and_the_bytes() {
        let b = Blob { data: vec![7, 8, 9] };
        let enc = encode_payload(&b).expect("encode");
        assert_eq!(enc, vec![3, 7, 8, 9]);
        assert_eq!(decode_payload::<Blob>(&enc).expect("decode"), b);
    }

    #[test]
    fn trailing_and_malformed_payloads_are_refused() {
        assert_eq!(decode_payload::<u8>(&[7, 0]), Err(CodecError::TrailingBytes(1)));
        // A string whose length prefix claims far more than the payload holds.
        assert!(matches!(
            decode_payload::<String>(&[0xFB, 0xFF, 0xFF, 0xFF, 0x0F]),
            Err(CodecError::Malformed(_))
        ));
    }
}
