//! Versioned, length-prefixed frames with bounded decoding, the protocol's messages and the enums they carry.
//!
//! - [`frame`]: the byte layout, `Incomplete` vs invalid (pure, no I/O), and the payload codec of
//!   [`crate::codec`] with its errors as [`WireError`].
//! - [`messages`]: the round protocol's message types and reject codes (`RejectCode`).
//! - [`secagg`]: secure aggregation's key adverts, relayed shares, unmasking request and revealed shares.
//! - [`enums`]: the aggregation rule and the soft-label encoding that messages carry, with their stable
//!   names, parsing and validation.
//!
//! `wire` sits on `codec` and `crypto` and imports nothing from `protocol` (enforced by
//! `tests/layering.rs` at the workspace root).
//!
//! Reading and writing frames on QUIC streams lives with the drivers (`fedistill_transport::stream`).

pub mod enums;
pub mod frame;
pub mod messages;
pub mod secagg;

pub use enums::{AggregationRule, Encoding, EncodingError, RuleError};

pub use frame::{
    bytes, decode_frame, decode_header, decode_payload, encode_frame, encode_header, encode_payload, Decoded,
    FrameHeader, FrameKind, WireError, ABSOLUTE_MAX_FRAME, DEFAULT_MAX_FRAME, HEADER_LEN, MAGIC, VERSION,
};
