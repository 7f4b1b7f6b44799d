//! fedistill's shared library, used by the coordinator, the participant and the auditor.
//!
//! The protocol core (crypto, frames and messages, the sans-IO round state machines) is its own crate,
//! `fedistill-protocol` (shared/protocol), which does no I/O and depends on no tokio, quinn or candle; this
//! crate re-exports it and adds what touches the world: TLS configs, provisioning, privacy accounting and
//! the auditor. Heavy parts live in sub-crates under `shared/` (data, ml, ledger) and are re-exported as
//! modules so that callers see one library. It depends on no tokio or quinn either: the QUIC stream glue,
//! the quinn configs and the stop signal live with the drivers, in `fedistill-transport` (shared/transport).

pub use fedistill_data as data;
pub use fedistill_ledger as ledger;
#[cfg(feature = "ml")]
pub use fedistill_ml as ml;
pub use fedistill_protocol::{crypto, protocol};

pub mod audit;
pub mod failpoint;
pub mod files;
pub mod html;
pub mod privacy;
pub mod provision;
pub mod settings;
pub mod tls;
pub mod wire;
