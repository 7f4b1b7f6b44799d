//! `fedistill bench communication`: the bytes of each soft-label encoding against FedAvg's bytes to the same
//! student accuracy, on one setting; writes JSON, Markdown and a plot (docs/benchmarks.md).

use anyhow::Context;
use serde::{Deserialize, Serialize};

use fedistill_shared::ml::Progress;
use fedistill_shared::protocol::{AggregationRule, Encoding};

use crate::accuracy::{
    config_for, exchange_for, human_bytes, load_dataset, parse_partition, partition_name, CommonOptions,
};
use crate::experiment::{self, ExperimentRun};
use crate::report::{self, Chart, Series};

/// Options of `fedistill bench communication`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CommunicationOptions {
    /// Flags shared with the accuracy suite.
    #[command(flatten)]
    pub common: CommonOptions,
    /// Dataset (default: fashion-mnist).
    #[arg(long)]
    pub dataset: Option<String>,
    /// Partition: `iid` or a Dirichlet alpha (default: 0.5).
    #[arg(long)]
    pub partition: Option<String>,
    /// Participants (default: 10).
    #[arg(long)]
    pub participants: Option<usize>,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Aggregation rule of the distillation runs.
    #[arg(long, default_value = "confidence_weighted")]
    pub rule: String,
    /// Encodings (default: f32,f16,int8,topk:1,qtopk:1).
    #[arg(long, value_delimiter = ',')]
    pub encodings: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EncodingLine {
    /// Encoding name.
    pub encoding: String,
    /// Final student accuracy.
    pub accuracy: f64,
    /// Bytes per round (mean).
    pub bytes_per_round: f64,
    /// Bytes of the whole run.
    pub total_bytes: u64,
    /// FedAvg's bytes until its global model first reached `accuracy` (None: not within its rounds).
    pub fedavg_bytes_to_match: Option<u64>,
    /// FedAvg's round at that point.
    pub fedavg_rounds_to_match: Option<usize>,
    /// FedAvg bytes to match / FD bytes (a lower bound from FedAvg's whole run when it never matched).
    pub fedavg_over_fd: f64,
    /// Whether FedAvg matched the accuracy within its rounds.
    pub fedavg_matched: bool,
}

/// The communication suite's report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommunicationReport {
    /// Command line that produced it.
    pub command: String,
    /// Whether messages crossed real mTLS QUIC connections.
    pub mtls_link: bool,
    /// The setting.
    pub dataset: String,
    /// Partition.
    pub partition: String,
    /// K.
    pub participants: usize,
    /// Rule of the distillation runs.
    pub rule: String,
    /// One line per encoding.
    pub encodings: Vec<EncodingLine>,
    /// FedAvg's curve and bytes.
    pub fedavg: experiment::MethodRun,
    /// Bytes of one FedAvg round (all clients, up and down).
    pub fedavg_bytes_per_round: f64,
    /// The underlying run (one distillation per encoding, then FedAvg).
    pub run: ExperimentRun,
}

impl CommunicationReport {
    /// The Markdown table.
    pub fn to_markdown(&self) -> String {
        let mut rows = Vec::new();
        for l in &self.encodings {
            rows.push(vec![
                l.encoding.clone(),
                format!("{:.1}", l.accuracy * 100.0),
                human_bytes(l.bytes_per_round),
                human_bytes(l.total_bytes as f64),
                match (l.fedavg_bytes_to_match, l.fedavg_rounds_to_match) {
                    (Some(b), Some(r)) => format!("{} (round {r})", human_bytes(b as f64)),
                    _ => format!("not reached in {} rounds", self.fedavg.curve.len()),
                },
                format!("{}{:.0}x", if l.fedavg_matched { "" } else { "≥ " }, l.fedavg_over_fd),
            ]);
        }
        rows.push(vec![
            "FedAvg (weights)".into(),
            format!("{:.1}", self.fedavg.accuracy * 100.0),
            human_bytes(self.fedavg_bytes_per_round),
            human_bytes(self.fedavg.bytes as f64),
            "-".into(),
            "-".into(),
        ]);
        format!(
            "Command: `{}`. {} {} K={}, rule {}; bytes are {}.\n\n{}",
            self.command,
            self.dataset,
            self.partition,
            self.participants,
            self.rule,
            if self.mtls_link {
                "UDP bytes on the participants' mTLS QUIC connections"
            } else {
                "signed frame bytes"
            },
            report::markdown_table(
                &[
                    "encoding",
                    "student accuracy (%)",
                    "bytes / round",
                    "total bytes",
                    "FedAvg bytes to the same accuracy",
                    "FedAvg / FD bytes",
                ],
                &rows
            )
        )
    }
}

/// `fedistill bench communication`.
pub fn run(args: &CommunicationOptions) -> anyhow::Result<()> {
    let c = &args.common;
    let name = args.dataset.clone().unwrap_or_else(|| {
        if c.quick {
            "digits".into()
        } else {
            "fashion-mnist".into()
        }
    });
    let partition = parse_partition(args.partition.as_deref().unwrap_or("0.5"))?;
    let k = args.participants.unwrap_or(if c.quick { 3 } else { 10 });
    anyhow::ensure!(k >= 2, "--participants must be at least 2");
    let rule = AggregationRule::parse(&args.rule).with_context(|| format!("--rule {}", args.rule))?;
    let encodings: Vec<Encoding> = if args.encodings.is_empty() {
        vec![
            Encoding::F32,
            Encoding::F16,
            Encoding::Int8,
            Encoding::TopK { k: 1 },
            Encoding::QTopK { k: 1 },
        ]
    } else {
        args.encodings
            .iter()
            .map(|e| Encoding::parse(e).with_context(|| format!("--encodings: {e}")))
            .collect::<anyhow::Result<_>>()?
    };
    let ds = load_dataset(&name, c)?;
    let mut cfg = config_for(&ds, k, partition, args.seed, c)?;
    cfg.rules = vec![rule];
    cfg.encodings = encodings.clone();
    cfg.fedavg = true;
    cfg.centralized = false;
    let mut ex = exchange_for(k, c)?;
    let run = experiment::run(&ds, &cfg, &mut ex, &Progress::auto(), None)
        .with_context(|| format!("{name} communication run"))?;
    let fedavg = run
        .methods
        .iter()
        .find(|m| m.method == "fedavg")
        .cloned()
        .context("FedAvg did not run")?;
    let mut lines = Vec::new();
    for (fd, enc) in run
        .methods
        .iter()
        .filter(|m| m.method.starts_with("fd:"))
        .zip(&encodings)
    {
        let matched = fedavg.bytes_to_reach(fd.accuracy);
        let fd_bytes = fd.bytes.max(1) as f64;
        lines.push(EncodingLine {
            encoding: enc.name(),
            accuracy: fd.accuracy,
            bytes_per_round: fd.bytes as f64 / fd.curve.len().max(1) as f64,
            total_bytes: fd.bytes,
            fedavg_bytes_to_match: matched.map(|m| m.1),
            fedavg_rounds_to_match: matched.map(|m| m.0),
            fedavg_over_fd: matched.map(|m| m.1 as f64).unwrap_or(fedavg.bytes as f64) / fd_bytes,
            fedavg_matched: matched.is_some(),
        });
    }
    let rep = CommunicationReport {
        command: c.command.clone(),
        mtls_link: !c.no_link,
        dataset: name.clone(),
        partition: partition_name(&partition),
        participants: k,
        rule: rule.name(),
        fedavg_bytes_per_round: fedavg.bytes as f64 / fedavg.curve.len().max(1) as f64,
        encodings: lines,
        fedavg: fedavg.clone(),
        run,
    };
    let md = rep.to_markdown();
    print!("{md}");
    if let Some(dir) = &c.report {
        let mut series: Vec<Series> = rep
            .run
            .methods
            .iter()
            .filter(|m| m.method.starts_with("fd:"))
            .zip(&encodings)
            .map(|(m, e)| Series {
                name: format!("FD {}", e.name()),
                points: m
                    .curve
                    .iter()
                    .map(|p| (p.bytes.max(1) as f64, p.accuracy * 100.0))
                    .collect(),
            })
            .collect();
        series.push(Series {
            name: "FedAvg".into(),
            points: fedavg
                .curve
                .iter()
                .map(|p| (p.bytes.max(1) as f64, p.accuracy * 100.0))
                .collect(),
        });
        report::write_chart(
            dir,
            "communication-accuracy-vs-bytes",
            &Chart {
                title: &format!("Accuracy vs bytes, {name} {} K={k}", partition_name(&partition)),
                x_label: "bytes exchanged by the federation (log)",
                y_label: "test accuracy (%)",
                series: &series,
                log_x: true,
            },
        )?;
        let md_full = format!("{md}\n![accuracy vs bytes](communication-accuracy-vs-bytes.png)\n");
        report::write_report(dir, "communication", &rep, &md_full)?;
        eprintln!("report written to {}", dir.display());
    }
    if let Some(p) = &c.docs {
        report::replace_docs_section(p, "communication", &md)?;
    }
    Ok(())
}
