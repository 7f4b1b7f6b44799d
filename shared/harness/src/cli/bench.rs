//! `fedistill bench`: the subcommand of every suite, each holding the suite's own options struct (its flags),
//! dispatched to the suite's entry point, which runs the suite and writes its reports.

use anyhow::Context;
use clap::Subcommand;

use super::command_line;
use crate::{
    accuracy, communication, domains, load, personalize, quantize, robust, routing, scale, stages, train, transport,
};

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Federated distillation (each rule) vs local-only, centralized and FedAvg, over datasets and splits.
    Accuracy(accuracy::AccuracyOptions),
    /// Bytes per soft-label encoding vs FedAvg's bytes to the same student accuracy.
    Communication(communication::CommunicationOptions),
    /// Time to move 1/10/100 MB over the mTLS link vs plain QUIC, measured in the same run.
    Transport(transport::TransportOptions),
    /// Every quantization profile against the f32 student, teacher vs int8, QAT vs PTQ, on MNIST-10k.
    Quantize(quantize::QuantizeOptions),
    /// Round latency, coordinator CPU and memory vs participants (3..100) and payload, vs raw transfer.
    Scale(scale::ScaleOptions),
    /// Student accuracy vs DP epsilon and under poisoning attacks, per aggregation rule, on MNIST-10k.
    Robust(robust::RobustOptions),
    /// Forgetting on a two-task sequence: dynamic routing (MoE, an expert per task) vs fine-tuning and replay.
    Routing(routing::RoutingOptions),
    /// Ablation of the distillation stages: KD only, + feature alignment, + gradient guidance, + both.
    Stages(stages::StagesOptions),
    /// The same ablation for the personalized student of each participant after federated rounds.
    Personalize(personalize::PersonalizeOptions),
    /// Domain adapters on their worked examples (issue 22): real-process federations of three participants,
    /// with and without the adapter, against local-only and pooled teachers.
    Domains(domains::DomainsOptions),
    /// Teacher training and distillation throughput, fused vs plain candle-nn AdamW, on MNIST-10k.
    Train(train::TrainOptions),
    /// Own-file loading: CSV and Parquet readers and the data check vs a bare csv-crate loop; data check's peak RSS.
    Load(load::LoadOptions),
}

/// The `fedistill` binary, for the suites that start processes of it.
fn exe() -> anyhow::Result<std::path::PathBuf> {
    std::env::current_exe().context("locating the fedistill binary")
}

/// Runs the suite `cmd` names, after filling in what its options take from this process rather than from a flag
/// (the command line its report records, the binary it starts).
pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Accuracy(mut o) => {
            o.common.command = command_line();
            accuracy::run(&o)
        }
        BenchCommand::Communication(mut o) => {
            o.common.command = command_line();
            communication::run(&o)
        }
        BenchCommand::Transport(o) => transport::run(&o),
        BenchCommand::Quantize(o) => quantize::run(&o),
        BenchCommand::Robust(o) => robust::run(&o),
        BenchCommand::Domains(mut o) => {
            o.exe = exe()?;
            o.command = command_line();
            domains::run(&o).map(|_| ())
        }
        BenchCommand::Scale(mut o) => {
            o.exe = exe()?;
            scale::run(&o)
        }
        BenchCommand::Stages(mut o) => {
            o.command = command_line();
            stages::run(&o)?;
            match o.federated_half() {
                Some(p) => personalize::run(&p),
                None => Ok(()),
            }
        }
        BenchCommand::Personalize(mut o) => {
            o.command = command_line();
            personalize::run(&o)
        }
        BenchCommand::Routing(mut o) => {
            o.command = command_line();
            routing::run(&o)
        }
        BenchCommand::Train(o) => train::run(&o),
        BenchCommand::Load(mut o) => {
            o.exe = exe()?;
            o.command = command_line();
            load::run(&o)
        }
    }
}
