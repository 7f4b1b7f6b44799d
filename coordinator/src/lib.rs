//! fedistill coordinator: the tokio + quinn driver around the sans-IO round state machine, its durable
//! SQLite store, the mTLS transport and the metrics/status endpoint.
pub mod config;
pub mod console;
pub mod metrics;
pub mod service;
pub mod store;
pub mod task;
pub mod transport;
