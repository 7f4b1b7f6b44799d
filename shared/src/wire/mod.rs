//! Frames and messages (from the protocol crate, `fedistill_protocol::wire`) and the QUIC glue that moves
//! them:
//!
//! - [`frame`], [`messages`]: re-exported from the protocol crate.
//! - [`stream`]: reading and writing frames on QUIC streams with a size cap, a deadline and memory budgets.

pub use fedistill_protocol::wire::*;
pub mod stream;

pub use stream::{
    read_frame, read_frame_budgeted, recv_message, recv_message_budgeted, send_message, write_frame, BudgetedFrame,
    FrameBudget, FrameQuota, Reservation, TransportError,
};
