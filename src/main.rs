//! The one `fedistill` binary: a thin clap dispatch over the library crates.

mod cli;

use clap::{Parser, Subcommand};

/// Federated knowledge distillation over mutually authenticated QUIC.
#[derive(Debug, Parser)]
#[command(name = "fedistill", version, about, long_about = None)]
struct Cli {
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect the dataset catalog and seeded federated splits.
    #[command(subcommand)]
    Data(cli::data::DataCommand),
    /// Export, verify and show the coordinator's signed update log (auditor tools).
    #[command(subcommand)]
    Audit(cli::audit::AuditCommand),
    /// Operator commands: create a federation, enrol, sign CSRs, revoke, show the roster.
    #[command(subcommand)]
    Provision(cli::provision::ProvisionCommand),
    /// Commands run on a participant's host.
    #[command(subcommand)]
    Participant(cli::enroll::ParticipantCommand),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    cli::init_logging(cli.log_json);
    let result = match cli.command {
        Command::Data(cmd) => cli::data::run(cmd),
        Command::Audit(cmd) => cli::audit::run(cmd),
        Command::Provision(cmd) => cli::provision::run(cmd),
        Command::Participant(cmd) => cli::enroll::run(cmd),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
