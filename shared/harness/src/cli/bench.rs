//! `fedistill bench`: the flags of every suite, converted to the suite's options struct and dispatched to its
//! entry point, which runs the suite and writes its reports.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::command_line;
use crate::{
    accuracy, communication, domains, load, personalize, quantize, robust, routing, scale, stages, train, transport,
};

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Federated distillation (each rule) vs local-only, centralized and FedAvg, over datasets and splits.
    Accuracy(BenchAccuracyArgs),
    /// Bytes per soft-label encoding vs FedAvg's bytes to the same student accuracy.
    Communication(BenchCommunicationArgs),
    /// Time to move 1/10/100 MB over the mTLS link vs plain QUIC, measured in the same run.
    Transport(BenchTransportArgs),
    /// Every quantization profile against the f32 student, teacher vs int8, QAT vs PTQ, on MNIST-10k.
    Quantize(BenchQuantizeArgs),
    /// Round latency, coordinator CPU and memory vs participants (3..100) and payload, vs raw transfer.
    Scale(BenchScaleArgs),
    /// Student accuracy vs DP epsilon and under poisoning attacks, per aggregation rule, on MNIST-10k.
    Robust(BenchRobustArgs),
    /// Forgetting on a two-task sequence: dynamic routing (MoE, an expert per task) vs fine-tuning and replay.
    Routing(BenchRoutingArgs),
    /// Ablation of the distillation stages: KD only, + feature alignment, + gradient guidance, + both.
    Stages(BenchStagesArgs),
    /// The same ablation for the personalized student of each participant after federated rounds.
    Personalize(BenchPersonalizeArgs),
    /// Domain adapters on their worked examples (issue 22): real-process federations of three participants,
    /// with and without the adapter, against local-only and pooled teachers.
    Domains(BenchDomainsArgs),
    /// Teacher training and distillation throughput, fused vs plain candle-nn AdamW, on MNIST-10k.
    Train {
        /// Fewer steps (a quick check rather than a stable figure).
        #[arg(long)]
        quick: bool,
        /// Also print the result as JSON lines.
        #[arg(long)]
        json: bool,
        /// Write train.json, train.md and train-throughput.png/.svg (plain vs fused samples/s per workload)
        /// to this directory.
        #[arg(long)]
        report: Option<std::path::PathBuf>,
    },
    /// Own-file loading: CSV and Parquet readers and the data check vs a bare csv-crate loop; data check's peak RSS.
    Load {
        /// A ~20 MB file instead of ~200 MB.
        #[arg(long)]
        quick: bool,
        /// Size of the generated CSV in MB (overrides the default and --quick).
        #[arg(long)]
        size_mb: Option<f64>,
        /// Measure `fedistill data check`'s peak RSS on a generated CSV of this many GB instead.
        #[arg(long)]
        check_gb: Option<f64>,
        /// Write load.json, load.md and load-throughput.png/.svg (rows/s per method) to this directory.
        #[arg(long)]
        report: Option<PathBuf>,
    },
}

/// Options shared by both suites.
#[derive(Debug, Args, Clone)]
pub struct CommonArgs {
    /// Small configuration for CI (one small dataset, one seed, few rounds).
    #[arg(long)]
    quick: bool,
    /// Write JSON, Markdown and plots to this directory.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Replace this suite's generated section of a Markdown file (e.g. docs/benchmarks.md).
    #[arg(long)]
    docs: Option<PathBuf>,
    /// Directory of file-based datasets (fashion-mnist; default: the Debian package's directory).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Count frame bytes only instead of carrying every message over real mTLS QUIC connections.
    #[arg(long)]
    no_link: bool,
    /// Distillation rounds (default: 10; quick: 3).
    #[arg(long)]
    rounds: Option<usize>,
    /// FedAvg rounds (default: 30; quick: 5).
    #[arg(long)]
    fedavg_rounds: Option<usize>,
    /// Share of each dataset in the public transfer set.
    #[arg(long)]
    public_fraction: Option<f64>,
    /// Teacher refresh epochs per round (co-distillation; 0 = off).
    #[arg(long)]
    refresh_epochs: Option<usize>,
    /// Public rows per round (default: public / rounds, one pass); rounds walk the public set in epochs.
    #[arg(long)]
    samples_per_round: Option<usize>,
    /// The task card's public-set augmentation for image datasets, e.g. `shift=2,flip` (see docs/data.md).
    #[arg(long)]
    augment: Option<String>,
    /// Teacher architecture, `mlp:512,256`, `cnn:16,32:128` (channels, then the hidden width) or, for
    /// series, `cnn1d:16,32:64[:KERNEL[:IN_CHANNELS]]` (kernel 5, one input channel by default).
    #[arg(long)]
    teacher: Option<String>,
    /// Student architecture (FD and FedAvg), `mlp:128`, `cnn:8,16:64` or `cnn1d:8,16:32`.
    #[arg(long)]
    student: Option<String>,
    /// Share of each participant's private rows whose labels are dropped (image datasets): they reach the
    /// node as `[private] unlabeled` rows.
    #[arg(long)]
    unlabeled_fraction: Option<f64>,
    /// Semi-supervised refresh: pseudo-label unlabelled rows the student predicts with at least this
    /// confidence (`[refresh] pseudo_threshold`).
    #[arg(long)]
    pseudo_threshold: Option<f32>,
    /// End the distillation rounds once the student's accuracy has not improved by 0.1 point for N rounds
    /// (the coordinator's `[stop]` rule); --rounds stays the most that run.
    #[arg(long)]
    stop_patience: Option<u64>,
}

/// `fedistill bench accuracy`.
#[derive(Debug, Args)]
pub struct BenchAccuracyArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Datasets (default: fashion-mnist, mnist-10k, credit, lending-club, breast-cancer).
    #[arg(long, value_delimiter = ',')]
    datasets: Vec<String>,
    /// Partitions: `iid` or a Dirichlet alpha (default: iid,0.1,0.5,1.0).
    #[arg(long, value_delimiter = ',')]
    partitions: Vec<String>,
    /// Federation sizes K (default: 3,10).
    #[arg(long, value_delimiter = ',')]
    participants: Vec<usize>,
    /// Seeds (default: 1,2,3).
    #[arg(long, value_delimiter = ',')]
    seeds: Vec<u64>,
    /// Aggregation rules (default: all six).
    #[arg(long, value_delimiter = ',')]
    rules: Vec<String>,
    /// Skip FedAvg.
    #[arg(long)]
    no_fedavg: bool,
    /// Also distill the student from the centralized model (method `kd:centralized`: every teacher replaced
    /// by it, no refresh, the same rounds and public rows): the ceiling of distillation on this public set
    #[arg(long)]
    ceiling: bool,
    /// Soft-label encoding of both directions (`f32`, `f16`, `int8`, `topk:K`, ...; default f16).
    #[arg(long)]
    encoding: Option<String>,
    /// Name of the generated section `--docs` replaces (`<!-- bench-NAME:begin -->`), so runs over
    /// different datasets can keep separate tables.
    #[arg(long, default_value = "accuracy")]
    section: String,
}

/// `fedistill bench communication`.
#[derive(Debug, Args)]
pub struct BenchCommunicationArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Dataset (default: fashion-mnist).
    #[arg(long)]
    dataset: Option<String>,
    /// Partition: `iid` or a Dirichlet alpha (default: 0.5).
    #[arg(long)]
    partition: Option<String>,
    /// Participants (default: 10).
    #[arg(long)]
    participants: Option<usize>,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Aggregation rule of the distillation runs.
    #[arg(long, default_value = "confidence_weighted")]
    rule: String,
    /// Encodings (default: f32,f16,int8,topk:1,qtopk:1).
    #[arg(long, value_delimiter = ',')]
    encodings: Vec<String>,
}

#[derive(Debug, Args)]
pub struct BenchTransportArgs {
    /// Transfer sizes in MB (10^6 bytes), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
    sizes_mb: Vec<usize>,
    /// Transfers per size and transport; the median is reported.
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Also print each line as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct BenchQuantizeArgs {
    /// Fewer epochs (a quick check rather than a stable figure).
    #[arg(long)]
    quick: bool,
    /// Also print the whole report as JSON.
    #[arg(long)]
    json: bool,
    /// Write quantize.json, quantize.md (the table as Markdown) and quantize-vs-f32.png/.svg (each profile's
    /// accuracy, size reduction, batch-1 speed-up and batch-128 throughput relative to f32) to this directory.
    #[arg(long)]
    report: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct BenchRobustArgs {
    /// Small sizes and three rules (mean, median, trimmed_mean) instead of the full table.
    #[arg(long)]
    quick: bool,
    /// Seed of the split, models and noise.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write the whole table as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Replace the generated section (between the bench-robust markers) of this Markdown file, e.g.
    /// docs/benchmarks.md; the markers are appended if missing.
    #[arg(long)]
    docs: Option<PathBuf>,
    /// Do not run anything: re-render a table saved earlier with --json (for --docs or stdout).
    #[arg(long, conflicts_with = "json")]
    from_json: Option<PathBuf>,
}

/// Arguments of `fedistill bench scale`.
#[derive(Debug, Args)]
pub struct BenchScaleArgs {
    /// CI-sized run: 3 and 10 participants at 100 rows per round, plus 1000 rows at 3 participants; 3 rounds.
    #[arg(long)]
    quick: bool,
    /// Participant counts of the participant sweep (default 3,10,30,100; with --quick 3,10).
    #[arg(long, value_delimiter = ',')]
    participants: Option<Vec<usize>>,
    /// Public rows per round of the payload sweep (default 100,1000,8000 at 10 participants; with --quick
    /// 100,1000 at 3). At most 9000, the size of the public transfer set used here.
    #[arg(long, value_delimiter = ',')]
    rows: Option<Vec<u64>>,
    /// Rounds per configuration (default 10; with --quick 3).
    #[arg(long)]
    rounds: Option<u64>,
    /// Write scale.json, scale.md and the plots latency_vs_participants / latency_vs_payload (PNG + SVG) here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Replace the generated `bench-scale` section of this Markdown file (e.g. docs/benchmarks.md); the plots
    /// are also written next to it, under img/bench-scale/.
    #[arg(long)]
    docs: Option<PathBuf>,
    /// Keep the federation, configs, coordinator logs and stores in this (new or empty) directory.
    #[arg(long)]
    workdir: Option<PathBuf>,
    /// Also run every participant count of the participant sweep with secure aggregation, right after its
    /// clear run, and report the overhead (round p50 and bytes, secure / plain); threshold: a majority of each
    /// participant's share holders.
    #[arg(long)]
    secure_aggregation: bool,
    /// SecAgg+ neighbourhood of the secure runs (`secagg_neighbours`: even, at least 2; 0 = complete graph).
    #[arg(long, default_value_t = 0, requires = "secure_aggregation")]
    secagg_neighbours: u32,
}

/// Arguments of `fedistill bench domains`.
#[derive(Debug, Args)]
pub struct BenchDomainsArgs {
    /// One seed, two rounds, two variants per example (CI).
    #[arg(long)]
    quick: bool,
    /// Seeds (default 1,2,3; with --quick 1).
    #[arg(long, value_delimiter = ',')]
    seeds: Vec<u64>,
    /// Rounds of each federation (default 10; with --quick 2).
    #[arg(long)]
    rounds: Option<u64>,
    /// Examples to run (italy-power, sp500-banks; default all).
    #[arg(long, value_delimiter = ',')]
    examples: Vec<String>,
    /// The folder holding the worked examples' files (default `examples`, relative to the current directory).
    #[arg(long)]
    examples_dir: Option<PathBuf>,
    /// Write domains.json, domains.md and domains-EXAMPLE.png/.svg to this directory.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Rewrite the generated section of this Markdown file (docs/domains.md) and its charts.
    #[arg(long)]
    docs: Option<PathBuf>,
    /// Keep every federation's directory (kits, logs, audit bundles) here.
    #[arg(long)]
    workdir: Option<PathBuf>,
}

/// Arguments of `fedistill bench stages`.
#[derive(Debug, Args)]
pub struct BenchStagesArgs {
    /// One small dataset (digits), one seed, few epochs (CI).
    #[arg(long)]
    quick: bool,
    /// Seeds (default 1,2,3; with --quick 1).
    #[arg(long, value_delimiter = ',')]
    seeds: Vec<u64>,
    /// Catalog datasets (default mnist-10k,fashion-mnist,credit; with --quick digits).
    #[arg(long, value_delimiter = ',')]
    datasets: Vec<String>,
    /// Directory of file-based datasets (fashion-mnist; default: the Debian package's directory).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Write stages.json, stages.md and stages-accuracy.png/.svg (accuracy per dataset and configuration).
    #[arg(long)]
    report: Option<PathBuf>,
    /// Convolutional teacher (conv blocks 8, 16; hidden 64) and student (conv block 8; hidden 32), image
    /// datasets only; stage 1 then adds attention transfer to the hint loss.
    #[arg(long, conflicts_with = "federated")]
    cnn: bool,
    /// Also run the federated half, the personalized student of each participant (`fedistill bench
    /// personalize` with the same --quick, --seeds, --datasets, --data-dir and --report, its defaults else).
    #[arg(long)]
    federated: bool,
}

/// Arguments of `fedistill bench personalize`.
#[derive(Debug, Args)]
pub struct BenchPersonalizeArgs {
    /// One small dataset (digits), one seed, 3 participants, 2 rounds, few epochs (CI).
    #[arg(long)]
    quick: bool,
    /// Seeds (default 1,2,3; with --quick 1).
    #[arg(long, value_delimiter = ',')]
    seeds: Vec<u64>,
    /// Catalog datasets (default mnist-10k,fashion-mnist,credit; with --quick digits).
    #[arg(long, value_delimiter = ',')]
    datasets: Vec<String>,
    /// Participants K (default 5; with --quick 3).
    #[arg(long)]
    participants: Option<usize>,
    /// Partition: a Dirichlet alpha or `iid` (default 0.5).
    #[arg(long)]
    partition: Option<String>,
    /// Share of each participant's rows held out (seeded) as its own test set (default 0.2).
    #[arg(long)]
    holdout: Option<f64>,
    /// Federated distillation rounds before personalizing (default 5; with --quick 2).
    #[arg(long)]
    rounds: Option<usize>,
    /// Passes over the private rows of each personalization, stages included (default 10; with --quick 5).
    #[arg(long)]
    epochs: Option<usize>,
    /// Directory of file-based datasets (fashion-mnist; default: the Debian package's directory).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Write personalize.json, personalize.md and personalize-accuracy.png/.svg (shared vs personalized
    /// accuracy per dataset and configuration).
    #[arg(long)]
    report: Option<PathBuf>,
}

/// Arguments of `fedistill bench routing`.
#[derive(Debug, Args)]
pub struct BenchRoutingArgs {
    /// One seed, split-mnist only, small subsets, few epochs (CI).
    #[arg(long)]
    quick: bool,
    /// Seeds (default 1,2,3; with --quick 1).
    #[arg(long, value_delimiter = ',')]
    seeds: Vec<u64>,
    /// Two-task sequences: split-mnist (digits 0-4 then 5-9), mnist-fashion (MNIST-10k then Fashion-MNIST)
    /// (default both; with --quick split-mnist).
    #[arg(long, value_delimiter = ',')]
    sequences: Vec<String>,
    /// Experts each sample is routed to in the routing students (1 or 2).
    #[arg(long, default_value_t = 1)]
    top_k: usize,
    /// Replay reservoir of task 1's (input, teacher logits) pairs, in samples (default 1000; with --quick 150).
    #[arg(long)]
    replay: Option<usize>,
    /// Student distillation epochs per task (default 10; with --quick 3).
    #[arg(long)]
    epochs: Option<usize>,
    /// Directory of Fashion-MNIST's files (default: the Debian package's directory).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Write routing.json, routing.md and routing-SEQUENCE.png/.svg (grouped bars per method) to this directory.
    #[arg(long)]
    report: Option<PathBuf>,
}

fn common(c: CommonArgs) -> accuracy::CommonOptions {
    accuracy::CommonOptions {
        quick: c.quick,
        report: c.report,
        docs: c.docs,
        data_dir: c.data_dir,
        no_link: c.no_link,
        rounds: c.rounds,
        fedavg_rounds: c.fedavg_rounds,
        public_fraction: c.public_fraction,
        refresh_epochs: c.refresh_epochs,
        samples_per_round: c.samples_per_round,
        augment: c.augment,
        teacher: c.teacher,
        student: c.student,
        unlabeled_fraction: c.unlabeled_fraction,
        pseudo_threshold: c.pseudo_threshold,
        stop_patience: c.stop_patience,
        command: command_line(),
    }
}

/// Runs the suite `cmd` names.
pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Accuracy(a) => accuracy::run(&accuracy::AccuracyOptions {
            common: common(a.common),
            datasets: a.datasets,
            partitions: a.partitions,
            participants: a.participants,
            seeds: a.seeds,
            rules: a.rules,
            no_fedavg: a.no_fedavg,
            ceiling: a.ceiling,
            encoding: a.encoding,
            section: a.section,
        }),
        BenchCommand::Communication(a) => communication::run(&communication::CommunicationOptions {
            common: common(a.common),
            dataset: a.dataset,
            partition: a.partition,
            participants: a.participants,
            seed: a.seed,
            rule: a.rule,
            encodings: a.encodings,
        }),
        BenchCommand::Transport(a) => transport::run(&transport::TransportOptions {
            sizes_mb: a.sizes_mb,
            repeats: a.repeats,
            json: a.json,
        }),
        BenchCommand::Quantize(a) => quantize::run(&quantize::QuantizeOptions {
            quick: a.quick,
            json: a.json,
            report: a.report,
        }),
        BenchCommand::Robust(a) => robust::run(&robust::RobustOptions {
            quick: a.quick,
            seed: a.seed,
            json: a.json,
            docs: a.docs,
            from_json: a.from_json,
        }),
        BenchCommand::Domains(a) => domains::run(&domains::DomainsOptions {
            quick: a.quick,
            seeds: a.seeds,
            rounds: a.rounds,
            examples: a.examples,
            examples_dir: a.examples_dir,
            report: a.report,
            docs: a.docs,
            workdir: a.workdir,
            exe: std::env::current_exe().context("locating the fedistill binary")?,
            command: command_line(),
        })
        .map(|_| ()),
        BenchCommand::Scale(a) => scale::run(&scale::ScaleOptions {
            quick: a.quick,
            participants: a.participants,
            rows: a.rows,
            rounds: a.rounds,
            report: a.report,
            docs: a.docs,
            workdir: a.workdir,
            exe: std::env::current_exe().context("locating the fedistill binary")?,
            secure_aggregation: a.secure_aggregation,
            secagg_neighbours: a.secagg_neighbours,
        }),
        BenchCommand::Stages(a) => {
            stages::run(&stages::StagesOptions {
                quick: a.quick,
                seeds: a.seeds.clone(),
                datasets: a.datasets.clone(),
                data_dir: a.data_dir.clone(),
                report: a.report.clone(),
                command: command_line(),
                cnn: a.cnn,
            })?;
            if !a.federated {
                return Ok(());
            }
            personalize::run(&personalize::PersonalizeOptions {
                quick: a.quick,
                seeds: a.seeds,
                datasets: a.datasets,
                participants: None,
                partition: None,
                holdout: None,
                rounds: None,
                epochs: None,
                data_dir: a.data_dir,
                report: a.report,
                command: command_line(),
            })
        }
        BenchCommand::Personalize(a) => personalize::run(&personalize::PersonalizeOptions {
            quick: a.quick,
            seeds: a.seeds,
            datasets: a.datasets,
            participants: a.participants,
            partition: a.partition,
            holdout: a.holdout,
            rounds: a.rounds,
            epochs: a.epochs,
            data_dir: a.data_dir,
            report: a.report,
            command: command_line(),
        }),
        BenchCommand::Routing(a) => routing::run(&routing::RoutingOptions {
            quick: a.quick,
            seeds: a.seeds,
            sequences: a.sequences,
            top_k: a.top_k,
            replay: a.replay,
            epochs: a.epochs,
            data_dir: a.data_dir,
            report: a.report,
            command: command_line(),
        }),
        BenchCommand::Train { quick, json, report } => train::run(&train::TrainOptions { quick, json, report }),
        BenchCommand::Load {
            quick,
            size_mb,
            check_gb,
            report,
        } => load::run(&load::LoadOptions {
            quick,
            size_mb,
            check_gb,
            report,
            exe: std::env::current_exe().context("locating the fedistill binary")?,
            command: command_line(),
        }),
    }
}
