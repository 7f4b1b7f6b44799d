//! fedistill's protocol core: everything two nodes must agree on, and nothing that talks to the world.
//!
//! - [`codec`]: the bounded bincode payload codec and the `bytes` serde helper.
//! - [`crypto`]: identities, ed25519 keys and domain-separated signed envelopes with replay guards.
//! - [`wire`]: the versioned frame layout, the protocol's message types and the enums they carry
//!   (aggregation rule, soft-label encoding, reject code).
//! - [`protocol`]: the sans-IO round state machines (coordinator round, participant session), the
//!   aggregation rules, anomaly scores and the soft-label encodings, and the assembly of every message and
//!   log record a round produces.
//!
//! The crate does no I/O: no sockets, no files, no clock, no async runtime, no ML stack (`cargo tree -p
//! fedistill-protocol` shows no tokio, quinn or candle). Drivers (coordinator, participant, benchmarks) add
//! the QUIC glue of `fedistill-transport` (`fedistill_transport::stream`) and only sign, persist, send and time.
//!
//! The modules are layered, each importing only the ones before it: `codec` <- `crypto` <- `wire` <-
//! `protocol` (`tests/layering.rs` at the workspace root scans the sources and fails on an import against
//! that order).

pub use fedistill_ledger as ledger;

pub mod codec;
pub mod crypto;
pub mod protocol;
pub mod wire;
