//! Subcommand implementations of the `fedistill` binary, one module per command family.

pub mod audit;
pub mod data;
pub mod enroll;
pub mod node;
pub mod probe;
pub mod provision;
pub mod task;

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
