//! fedistill's QUIC glue, used by the drivers (coordinator, participant, harness) and not by the library:
//! `fedistill-shared` builds the rustls configs and holds frames and messages but depends on no tokio or
//! quinn; this crate moves those frames over quinn streams and wraps those configs for quinn.
//!
//! - [`stream`]: reading and writing frames on QUIC streams with a size cap, a deadline and per-identity and
//!   global memory budgets.
//! - [`quic`]: quinn client and server configs from the rustls ones ([`QuicTuning`]), the application
//!   [`close_code`]s both sides use, and the negotiated ALPN and peer certificate of a connection.
//! - [`signal`]: the SIGINT/SIGTERM wait that stops a node gracefully.

pub mod quic;
pub mod signal;
pub mod stream;

pub use quic::{
    close_code, negotiated_alpn, peer_leaf_certificate, quic_client_config, quic_server_config, QuicTuning,
};
pub use stream::{
    read_frame, read_frame_budgeted, recv_message, recv_message_budgeted, send_message, write_frame, BudgetedFrame,
    FrameBudget, FrameQuota, Reservation, TransportError,
};
