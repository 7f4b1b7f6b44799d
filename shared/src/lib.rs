//! fedistill's shared core, used by the coordinator, the participant and the auditor.
//!
//! The protocol core here does no I/O: no sockets, no clock, no tokio. Heavy parts live in
//! sub-crates under `shared/` (data, ml, ledger) and are re-exported as modules so that callers
//! see one library.

pub use fedistill_data as data;
pub use fedistill_ledger as ledger;
#[cfg(feature = "ml")]
pub use fedistill_ml as ml;

#[cfg(feature = "ml")]
pub mod attack;
pub mod audit;
pub mod crypto;
pub mod privacy;
pub mod protocol;
pub mod provision;
pub mod settings;
pub mod tls;
pub mod wire;
