//! The only serializable types: versioned, length-prefixed frames with bounded decoding.
//!
//! - [`frame`]: the byte layout, the bounded codec, `Incomplete` vs invalid (pure, no I/O).
//! - [`messages`]: the round protocol's message types.
//! - [`messages`]: the round protocol's message types (owned by the protocol work).
//! - [`stream`]: reading and writing frames on QUIC streams with a size cap and a deadline.

pub mod frame;
pub mod messages;
pub mod stream;

pub use frame::{
    bytes, decode_frame, decode_header, decode_payload, encode_frame, encode_header, encode_payload, Decoded,
    FrameHeader, FrameKind, WireError, ABSOLUTE_MAX_FRAME, DEFAULT_MAX_FRAME, HEADER_LEN, MAGIC, VERSION,
};
pub use stream::{
    read_frame, read_frame_budgeted, recv_message, recv_message_budgeted, send_message, write_frame, BudgetedFrame,
    FrameBudget, FrameQuota, Reservation, TransportError,
};
