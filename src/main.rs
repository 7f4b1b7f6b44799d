//! The one `fedistill` binary: a thin clap dispatch over the library crates (the flags of the commands the
//! harness runs are `fedistill_harness::cli`'s).

mod cli;

use clap::{Parser, Subcommand};
use fedistill_harness::cli as harness;

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
    /// Task cards: draft one from the public transfer set.
    #[command(subcommand)]
    Task(cli::task::TaskCommand),
    /// Export, verify and show the coordinator's signed update log (auditor tools).
    #[command(subcommand)]
    Audit(cli::audit::AuditCommand),
    /// Train a teacher, distill a student and evaluate both, on one machine.
    Local(fedistill_harness::local::LocalRunOptions),
    /// Benchmarks (build with --release).
    #[command(subcommand)]
    Bench(harness::bench::BenchCommand),
    /// Quantize a trained student (int8, sandwich, f16, f32), export it with a model card.
    Quantize(fedistill_harness::student::ExportOptions),
    /// A/B-compare two exported students on the same held-out samples (McNemar's exact test).
    Compare(fedistill_harness::student::CompareOptions),
    /// Pick the most accurate student that meets a latency and memory budget on this machine; write its config.
    Size(fedistill_harness::size::SizeOptions),
    /// Search the distillation knobs (teacher training, temperature, rounds, student width, loss weights,
    /// refresh) by successive halving in a federation simulated on the public set; write the config found.
    Tune(fedistill_harness::tune::TuneOptions),
    /// Operator commands: create a federation, enrol, sign CSRs, revoke, show the roster.
    #[command(subcommand)]
    Provision(cli::provision::ProvisionCommand),
    /// Run a participant node (`--config FILE`), or prepare its keys (`enroll`).
    Participant(cli::enroll::ParticipantArgs),
    /// Run the coordinator of a federation.
    Coordinator(cli::node::CoordinatorArgs),
    /// Run a whole federation on this machine: provision, coordinator and participants as processes.
    Demo(harness::demo::DemoArgs),
    /// Internal: load one exported model, run batch-1 inferences, print the process's peak RSS as JSON
    /// (`fedistill local` measures each model's inference memory in a process of its own with it).
    #[command(hide = true)]
    ProbeInference(cli::probe::ProbeArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    cli::init_logging(cli.log_json);
    let result = match cli.command {
        Command::Data(cmd) => cli::data::run(cmd),
        Command::Task(cmd) => cli::task::run(cmd),
        Command::Audit(cmd) => cli::audit::run(cmd),
        Command::Local(args) => harness::local::run(args),
        Command::ProbeInference(args) => cli::probe::run(args),
        Command::Bench(cmd) => harness::bench::run(cmd),
        Command::Quantize(args) => harness::student::quantize(args),
        Command::Compare(args) => harness::student::compare(args),
        Command::Size(args) => harness::size::run(args),
        Command::Tune(args) => harness::tune::run(args),
        Command::Provision(cmd) => cli::provision::run(cmd),
        Command::Participant(args) => cli::enroll::run_args(args),
        Command::Coordinator(args) => cli::node::run_coordinator(args),
        Command::Demo(args) => harness::demo::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
