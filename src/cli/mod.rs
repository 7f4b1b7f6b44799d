//! Subcommand implementations of the `fedistill` binary, one module per command family.

pub mod audit;
pub mod bench;
pub mod compare;
pub mod data;
pub mod demo;
pub mod enroll;
pub mod local;
pub mod node;
pub mod provision;
pub mod quantize;
pub mod size;
pub mod task;
pub mod tune;

/// Process start: fixes the compute threads, then `tracing` output on stderr (text, or JSON lines with `--log-json`).
pub fn init_logging(json: bool) {
    fedistill_shared::ml::init_compute_threads();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
