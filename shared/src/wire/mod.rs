//! Frames and messages, re-exported from the protocol crate (`fedistill_protocol::wire`): [`frame`],
//! [`messages`] and the rest.
//!
//! Moving them over QUIC streams (with a size cap, a deadline and memory budgets) lives with the drivers, in
//! `fedistill_transport::stream`.

pub use fedistill_protocol::wire::*;
