//! `fedistill demo`: the flags of a whole local federation, checked and converted to [`DemoOptions`];
//! [`crate::demo`] provisions it, runs the coordinator and participants as processes of the binary, and
//! prints and writes the report (documented in docs/demo.md).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::demo::{self, DemoOptions};

/// Arguments of `fedistill demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Number of participants (institutions).
    #[arg(long, default_value_t = 3)]
    pub participants: usize,
    /// Federated rounds (12: the default demo's student ends within 2 points of the centralized model;
    /// docs/demo.md).
    #[arg(long, default_value_t = 12)]
    pub rounds: u64,
    /// Dataset from the catalog (`fedistill data list`).
    #[arg(long, default_value = "mnist-10k")]
    pub dataset: String,
    /// Dirichlet label-skew concentration (smaller = more non-IID).
    #[arg(long, default_value_t = 0.5)]
    pub alpha: f64,
    /// Seed of the split and of every model.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Aggregation rule (mean, sample_weighted, confidence_weighted, era[:T], median, trimmed_mean[:F]);
    /// default confidence_weighted, or mean with --secure-aggregation.
    #[arg(long)]
    pub rule: Option<String>,
    /// Secure aggregation: the coordinator sees only masked inputs and learns their sum (mean, sample_weighted).
    #[arg(long)]
    pub secure_aggregation: bool,
    /// Soft-label encoding participants send (f32, f16, int8, topk:K).
    #[arg(long, default_value = "f16")]
    pub encoding: String,
    /// How the coordinator packs the consensus it sends back (f32 exact; f16, int8, topk:K smaller).
    #[arg(long, default_value = "f32")]
    pub aggregate_encoding: String,
    /// Teacher refresh epochs per round (co-distillation, participant `[refresh]`; 0 = off).
    #[arg(long, default_value_t = 3)]
    pub refresh_epochs: usize,
    /// Also run FedAvg on the same split (in this process, same student) for N rounds: a time-to-accuracy baseline.
    #[arg(long, default_value_t = 0, conflicts_with = "task")]
    pub fedavg_rounds: usize,
    /// Write the JSON report here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Keep everything (kits, store, artifacts, audit bundle, trust file) in this directory.
    #[arg(long)]
    pub workdir: Option<PathBuf>,
    /// Directory of file-based datasets (fashion-mnist).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Every participant's teacher architecture: `mlp:W,W`, `cnn:C,C:H` or
    /// `cnn1d:C,C:H[:KERNEL[:IN_CHANNELS]]` (default: the participant's defaults for the data kind).
    #[arg(long, value_name = "SPEC")]
    pub teacher: Option<String>,
    /// The shared student architecture, same forms as --teacher.
    #[arg(long, value_name = "SPEC")]
    pub student: Option<String>,
    /// A regression task's constraint-loss weight on the shared student (participants' `[regression]
    /// constraint_weight`; 0 turns the monotone and bound constraints off; default 1).
    #[arg(long, value_name = "W", requires = "task")]
    pub constraint_weight: Option<f32>,
    /// Run on your own files: the task card (with --public and one --private per participant).
    #[arg(long, requires_all = ["public", "private"], conflicts_with = "dataset")]
    pub task: Option<PathBuf>,
    /// The public transfer set file the card names.
    #[arg(long, requires = "task")]
    pub public: Option<PathBuf>,
    /// A participant's private file (repeat: one participant each).
    #[arg(long, requires = "task")]
    pub private: Vec<PathBuf>,
    /// Augment the public rows of each round (image datasets; the task card's `[augment]`), e.g. `shift=2,flip`:
    /// a row revisited in a later round is a fresh view, the same on every participant.
    #[arg(long, conflicts_with = "task")]
    pub augment: Option<String>,
    /// Finish early once the median accuracy the participants report has not improved for N rounds
    /// (the coordinator's `[stop]`); --rounds stays the most that run.
    #[arg(long)]
    pub stop_patience: Option<u64>,
    /// With --stop-patience: the rise of the median accuracy that counts as an improvement (default 0.001).
    #[arg(long, requires = "stop_patience")]
    pub stop_min_delta: Option<f64>,
}

/// Runs the demo.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    if let Some(patience) = args.stop_patience {
        // Checked here, before any process starts, as the coordinator would check its `[stop]`.
        fedistill_shared::protocol::coordinator::stop::StopRule {
            patience,
            min_delta: args.stop_min_delta.unwrap_or(0.001),
            min_rounds: 1,
        }
        .validate()
        .map_err(|e| anyhow::anyhow!("--stop-patience / --stop-min-delta: {e}"))?;
    }
    let regression = match &args.task {
        Some(card) => fedistill_shared::data::TaskCard::load(card)?.is_regression(),
        None => false,
    };
    demo::run(&DemoOptions {
        participants: args.participants,
        rounds: args.rounds,
        dataset: args.dataset,
        alpha: args.alpha,
        seed: args.seed,
        rule: match args.rule {
            Some(r) => r,
            // Confidence weighting needs class probabilities: a regression card's default is the mean.
            None if args.secure_aggregation || regression => "mean".into(),
            None => "confidence_weighted".into(),
        },
        secure_aggregation: args.secure_aggregation,
        encoding: args.encoding,
        aggregate_encoding: args.aggregate_encoding,
        refresh_epochs: args.refresh_epochs,
        fedavg_rounds: args.fedavg_rounds,
        report: args.report,
        workdir: args.workdir,
        data_dir: args.data_dir,
        exe: std::env::current_exe().context("locating the fedistill binary")?,
        own: match (args.task, args.public) {
            (Some(card), Some(public)) => Some(demo::OwnFiles {
                card,
                public,
                private: args.private,
            }),
            _ => None,
        },
        augment: args
            .augment
            .as_deref()
            .map(crate::accuracy::parse_augment)
            .transpose()
            .context("--augment")?,
        stop_patience: args.stop_patience,
        stop_min_delta: args.stop_min_delta,
        teacher: args
            .teacher
            .as_deref()
            .map(crate::accuracy::parse_model)
            .transpose()
            .context("--teacher")?,
        student: args
            .student
            .as_deref()
            .map(crate::accuracy::parse_model)
            .transpose()
            .context("--student")?,
        constraint_weight: args.constraint_weight,
    })
}
