//! `fedistill bench accuracy` and `fedistill bench communication`: federated distillation (each
//! aggregation rule) against local-only, centralized and FedAvg on the same student, over datasets,
//! partitions, federation sizes and seeds (accuracy); and the bytes of each soft-label encoding against
//! FedAvg's bytes to the same student accuracy (communication). Both write JSON, Markdown and plots
//! (docs/benchmarks.md explains every figure and gives the commands).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use serde::{Deserialize, Serialize};

use fedistill_shared::data::{load, Dataset, LoadOptions, Partition};
use fedistill_shared::ml::Progress;
use fedistill_shared::protocol::{AggregationRule, Encoding};

use super::exchange::{Link, WireExchange};
use super::experiment::{self, ExperimentConfig, ExperimentRun};
use super::report::{self, Chart, Series};

/// Options shared by both suites.
#[derive(Debug, Args, Clone)]
pub struct CommonArgs {
    /// Small configuration for CI (one small dataset, one seed, few rounds).
    #[arg(long)]
    pub quick: bool,
    /// Write JSON, Markdown and plots to this directory.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Replace this suite's generated section of a Markdown file (e.g. docs/benchmarks.md).
    #[arg(long)]
    pub docs: Option<PathBuf>,
    /// Directory of file-based datasets (fashion-mnist; default: the Debian package's directory).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Count frame bytes only instead of carrying every message over real mTLS QUIC connections.
    #[arg(long)]
    pub no_link: bool,
    /// Distillation rounds (default: 10; quick: 3).
    #[arg(long)]
    pub rounds: Option<usize>,
    /// FedAvg rounds (default: 30; quick: 5).
    #[arg(long)]
    pub fedavg_rounds: Option<usize>,
    /// Share of each dataset in the public transfer set.
    #[arg(long)]
    pub public_fraction: Option<f64>,
    /// Teacher refresh epochs per round (co-distillation; 0 = off).
    #[arg(long)]
    pub refresh_epochs: Option<usize>,
}

/// `fedistill bench accuracy`.
#[derive(Debug, Args)]
pub struct BenchAccuracyArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Datasets (default: fashion-mnist, mnist-10k, credit, lending-club, breast-cancer).
    #[arg(long, value_delimiter = ',')]
    pub datasets: Vec<String>,
    /// Partitions: `iid` or a Dirichlet alpha (default: iid,0.1,0.5,1.0).
    #[arg(long, value_delimiter = ',')]
    pub partitions: Vec<String>,
    /// Federation sizes K (default: 3,10).
    #[arg(long, value_delimiter = ',')]
    pub participants: Vec<usize>,
    /// Seeds (default: 1,2,3).
    #[arg(long, value_delimiter = ',')]
    pub seeds: Vec<u64>,
    /// Aggregation rules (default: all six).
    #[arg(long, value_delimiter = ',')]
    pub rules: Vec<String>,
    /// Skip FedAvg.
    #[arg(long)]
    pub no_fedavg: bool,
    /// Name of the generated section `--docs` replaces (`<!-- bench-NAME:begin -->`), so runs over
    /// different datasets can keep separate tables.
    #[arg(long, default_value = "accuracy")]
    pub section: String,
}

/// `fedistill bench communication`.
#[derive(Debug, Args)]
pub struct BenchCommunicationArgs {
    #[command(flatten)]
    pub common: CommonArgs,
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

fn parse_partition(s: &str) -> anyhow::Result<Partition> {
    if s == "iid" {
        return Ok(Partition::Iid);
    }
    let alpha: f64 = s
        .strip_prefix("dirichlet:")
        .unwrap_or(s)
        .parse()
        .with_context(|| format!("partition {s:?}: expected `iid` or a Dirichlet alpha such as 0.5"))?;
    anyhow::ensure!(alpha.is_finite() && alpha > 0.0, "partition {s:?}: alpha must be > 0");
    Ok(Partition::Dirichlet { alpha })
}

fn partition_name(p: &Partition) -> String {
    match p {
        Partition::Iid => "iid".into(),
        Partition::Dirichlet { alpha } => format!("dir({alpha})"),
        other => other.to_string(),
    }
}

fn load_dataset(name: &str, common: &CommonArgs) -> anyhow::Result<Dataset> {
    load(
        name,
        &LoadOptions {
            data_dir: common.data_dir.clone(),
        },
    )
    .with_context(|| format!("loading dataset {name}"))
}

/// The configuration of one experiment for these flags.
fn config_for(ds: &Dataset, k: usize, partition: Partition, seed: u64, common: &CommonArgs) -> ExperimentConfig {
    let mut c = ExperimentConfig::defaults(ds, k, partition, seed);
    if ds.name == "fashion-mnist" {
        // 70 000 samples: 10 000 test (as the official split), 14 000 public, 46 000 private.
        c.test_fraction = 1.0 / 7.0;
    }
    if common.quick {
        c.rounds = 3;
        c.fedavg_rounds = 5;
    }
    if let Some(r) = common.rounds {
        c.rounds = r;
    }
    if let Some(r) = common.fedavg_rounds {
        c.fedavg_rounds = r;
    }
    if let Some(f) = common.public_fraction {
        c.public_fraction = f;
    }
    if let Some(e) = common.refresh_epochs {
        c.refresh.epochs = e;
    }
    c
}

fn exchange_for(k: usize, common: &CommonArgs) -> anyhow::Result<WireExchange> {
    let link = if common.no_link {
        None
    } else {
        Some(Link::start(k).context("starting the mTLS link")?)
    };
    WireExchange::new(k, link)
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64
    } else {
        0.0
    };
    (m, var.sqrt())
}

fn pct(m: f64, sd: f64, n: usize) -> String {
    if n > 1 {
        format!("{:.1} ± {:.1}", m * 100.0, sd * 100.0)
    } else {
        format!("{:.1}", m * 100.0)
    }
}

fn human_bytes(b: f64) -> String {
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.2} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{b:.0} B")
    }
}

/// Every experiment of one (dataset, partition, K) setting, one per seed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Setting {
    /// Dataset.
    pub dataset: String,
    /// Partition label (`iid`, `dir(0.5)`).
    pub partition: String,
    /// K.
    pub participants: usize,
    /// One run per seed that completed.
    pub runs: Vec<ExperimentRun>,
    /// Seeds that could not run, with the reason (e.g. a shard too small to train on under strong skew).
    #[serde(default)]
    pub failed: Vec<(u64, String)>,
}

impl Setting {
    fn methods(&self) -> Vec<String> {
        self.runs
            .first()
            .map(|r| r.methods.iter().map(|m| m.method.clone()).collect())
            .unwrap_or_default()
    }

    fn method_accuracy(&self, method: &str) -> Vec<f64> {
        self.runs
            .iter()
            .filter_map(|r| r.methods.iter().find(|m| m.method == method).map(|m| m.accuracy))
            .collect()
    }

    fn method_bytes(&self, method: &str) -> f64 {
        let b: Vec<f64> = self
            .runs
            .iter()
            .filter_map(|r| r.methods.iter().find(|m| m.method == method).map(|m| m.bytes as f64))
            .collect();
        mean_sd(&b).0
    }

    fn stem(&self) -> String {
        format!("{}-{}-k{}", self.dataset, self.partition, self.participants)
            .replace(['(', ')'], "")
            .replace('.', "_")
    }

    /// Mean accuracy per round of each method over seeds, as chart series (x = round).
    fn round_series(&self) -> Vec<Series> {
        let mut out = Vec::new();
        for m in self.methods() {
            let curves: Vec<&Vec<experiment::CurvePoint>> = self
                .runs
                .iter()
                .filter_map(|r| r.methods.iter().find(|x| x.method == m).map(|x| &x.curve))
                .collect();
            let len = curves.iter().map(|c| c.len()).min().unwrap_or(0);
            let points = (0..len)
                .map(|i| {
                    let acc = curves.iter().map(|c| c[i].accuracy).sum::<f64>() / curves.len() as f64;
                    ((i + 1) as f64, acc * 100.0)
                })
                .collect();
            out.push(Series { name: m, points });
        }
        out
    }

    /// Mean accuracy vs cumulative bytes of each method (x = bytes, log scale).
    fn bytes_series(&self) -> Vec<Series> {
        let mut out = Vec::new();
        for m in self.methods() {
            let curves: Vec<&Vec<experiment::CurvePoint>> = self
                .runs
                .iter()
                .filter_map(|r| r.methods.iter().find(|x| x.method == m).map(|x| &x.curve))
                .collect();
            let len = curves.iter().map(|c| c.len()).min().unwrap_or(0);
            let points = (0..len)
                .map(|i| {
                    let n = curves.len() as f64;
                    let acc = curves.iter().map(|c| c[i].accuracy).sum::<f64>() / n;
                    let bytes = curves.iter().map(|c| c[i].bytes as f64).sum::<f64>() / n;
                    (bytes.max(1.0), acc * 100.0)
                })
                .collect();
            out.push(Series { name: m, points });
        }
        out
    }
}

/// The accuracy suite's report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccuracyReport {
    /// Command line that produced it.
    pub command: String,
    /// Whether messages crossed real mTLS QUIC connections (false: frame bytes counted).
    pub mtls_link: bool,
    /// Every setting.
    pub settings: Vec<Setting>,
    /// Seconds of the whole suite.
    pub seconds: f64,
}

impl AccuracyReport {
    /// The Markdown table: one row per setting; accuracy mean ± sample standard deviation over seeds.
    pub fn to_markdown(&self) -> String {
        if self.settings.is_empty() {
            return "No settings were run.\n".into();
        }
        let methods = self
            .settings
            .iter()
            .find(|s| !s.runs.is_empty())
            .map(Setting::methods)
            .unwrap_or_default();
        let mut headers: Vec<String> = vec![
            "dataset".into(),
            "partition".into(),
            "K".into(),
            "seeds".into(),
            "local-only".into(),
            "centralized".into(),
        ];
        headers.extend(methods.iter().cloned());
        headers.push("FD bytes".into());
        headers.push("FedAvg bytes".into());
        let mut rows = Vec::new();
        for s in &self.settings {
            let n = s.runs.len();
            if n == 0 {
                let mut row = vec![
                    s.dataset.clone(),
                    s.partition.clone(),
                    s.participants.to_string(),
                    "0".into(),
                ];
                row.extend(std::iter::repeat_n("failed".to_string(), headers.len() - 4));
                rows.push(row);
                continue;
            }
            let (lm, ls) = mean_sd(&s.runs.iter().map(|r| r.local_only_mean).collect::<Vec<_>>());
            let cents: Vec<f64> = s.runs.iter().filter_map(|r| r.centralized).collect();
            let (cm, cs) = mean_sd(&cents);
            let mut row = vec![
                s.dataset.clone(),
                s.partition.clone(),
                s.participants.to_string(),
                n.to_string(),
                pct(lm, ls, n),
                if cents.is_empty() {
                    "-".into()
                } else {
                    pct(cm, cs, cents.len())
                },
            ];
            for m in &methods {
                let a = s.method_accuracy(m);
                let (am, asd) = mean_sd(&a);
                row.push(if a.is_empty() {
                    "-".into()
                } else {
                    pct(am, asd, a.len())
                });
            }
            let fd = methods.iter().find(|m| m.starts_with("fd:"));
            row.push(fd.map(|m| human_bytes(s.method_bytes(m))).unwrap_or_else(|| "-".into()));
            row.push(if methods.iter().any(|m| m == "fedavg") {
                human_bytes(s.method_bytes("fedavg"))
            } else {
                "-".into()
            });
            rows.push(row);
        }
        let h: Vec<&str> = headers.iter().map(String::as_str).collect();
        let mut md = format!(
            "Command: `{}`. Test accuracy (%) of the federated student, mean ± sample standard deviation over \
             seeds; local-only is the mean of the participants' own teachers; centralized is the teacher \
             architecture on the pooled private data; bytes are the whole run's, {}.\n\n",
            self.command,
            if self.mtls_link {
                "UDP bytes on the participants' mTLS QUIC connections"
            } else {
                "signed frame bytes"
            }
        );
        md.push_str(&report::markdown_table(&h, &rows));
        for s in &self.settings {
            for (seed, why) in &s.failed {
                md.push_str(&format!(
                    "\n- {} {} K={} seed {seed} did not run: {why}",
                    s.dataset, s.partition, s.participants
                ));
            }
        }
        if self.settings.iter().any(|s| !s.failed.is_empty()) {
            md.push('\n');
        }
        md
    }
}

/// `fedistill bench accuracy`.
pub fn run_accuracy(args: BenchAccuracyArgs) -> anyhow::Result<()> {
    if cfg!(debug_assertions) && !args.common.quick {
        eprintln!("warning: debug build; use --release for the full suite");
    }
    let started = std::time::Instant::now();
    let c = &args.common;
    let datasets = if !args.datasets.is_empty() {
        args.datasets.clone()
    } else if c.quick {
        vec!["digits".into()]
    } else {
        ["fashion-mnist", "mnist-10k", "credit", "lending-club", "breast-cancer"]
            .map(String::from)
            .to_vec()
    };
    let partitions: Vec<Partition> = if !args.partitions.is_empty() {
        args.partitions
            .iter()
            .map(|p| parse_partition(p))
            .collect::<anyhow::Result<_>>()?
    } else if c.quick {
        vec![Partition::Dirichlet { alpha: 0.5 }]
    } else {
        vec![
            Partition::Iid,
            Partition::Dirichlet { alpha: 0.1 },
            Partition::Dirichlet { alpha: 0.5 },
            Partition::Dirichlet { alpha: 1.0 },
        ]
    };
    let ks = if !args.participants.is_empty() {
        args.participants.clone()
    } else if c.quick {
        vec![3]
    } else {
        vec![3, 10]
    };
    let seeds = if !args.seeds.is_empty() {
        args.seeds.clone()
    } else if c.quick {
        vec![1]
    } else {
        vec![1, 2, 3]
    };
    let rules: Vec<AggregationRule> = if !args.rules.is_empty() {
        args.rules
            .iter()
            .map(|r| AggregationRule::parse(r).with_context(|| format!("--rules: {r}")))
            .collect::<anyhow::Result<_>>()?
    } else if c.quick {
        vec![AggregationRule::Mean, AggregationRule::Median]
    } else {
        [
            "mean",
            "sample_weighted",
            "confidence_weighted",
            "era",
            "median",
            "trimmed_mean",
        ]
        .iter()
        .map(|r| AggregationRule::parse(r))
        .collect::<Result<_, _>>()?
    };
    anyhow::ensure!(ks.iter().all(|&k| k >= 2), "--participants: every K must be at least 2");
    let total = datasets.len() * partitions.len() * ks.len() * seeds.len();
    let mut settings = Vec::new();
    let mut done = 0;
    // The pooled private data depends on the dataset, the seed and the fractions, not on the partition.
    let mut centralized: std::collections::BTreeMap<(String, u64), f64> = std::collections::BTreeMap::new();
    for name in &datasets {
        let ds = load_dataset(name, c)?;
        for partition in &partitions {
            for &k in &ks {
                let mut runs = Vec::new();
                let mut failed = Vec::new();
                for &seed in &seeds {
                    let mut cfg = config_for(&ds, k, *partition, seed, c);
                    cfg.rules = rules.clone();
                    cfg.fedavg = !args.no_fedavg;
                    let mut ex = exchange_for(k, c)?;
                    let known = centralized.get(&(name.clone(), seed)).copied();
                    let run = match experiment::run(&ds, &cfg, &mut ex, &Progress::auto(), known) {
                        Ok(run) => run,
                        Err(e) => {
                            // One impossible setting (a tiny dataset under strong skew) must not throw
                            // away hours of the grid: it is reported in the table and the JSON.
                            done += 1;
                            let why = format!("{e:#}");
                            eprintln!(
                                "[{done}/{total}] {name} {} K={k} seed {seed}: FAILED: {why}",
                                partition_name(partition)
                            );
                            failed.push((seed, why));
                            continue;
                        }
                    };
                    done += 1;
                    if let Some(a) = run.centralized {
                        centralized.insert((name.clone(), seed), a);
                    }
                    let summary: Vec<String> = run
                        .methods
                        .iter()
                        .map(|m| format!("{} {:.1}%", m.method, m.accuracy * 100.0))
                        .collect();
                    eprintln!(
                        "[{done}/{total}] {name} {} K={k} seed {seed}: local-only {:.1}%, centralized {}, {} ({:.0} s)",
                        partition_name(partition),
                        run.local_only_mean * 100.0,
                        run.centralized
                            .map(|a| format!("{:.1}%", a * 100.0))
                            .unwrap_or_else(|| "-".into()),
                        summary.join(", "),
                        run.seconds
                    );
                    runs.push(run);
                }
                settings.push(Setting {
                    dataset: name.clone(),
                    partition: partition_name(partition),
                    participants: k,
                    runs,
                    failed,
                });
            }
        }
    }
    let rep = AccuracyReport {
        command: command_line(),
        mtls_link: !c.no_link,
        settings,
        seconds: started.elapsed().as_secs_f64(),
    };
    let md = rep.to_markdown();
    print!("{md}");
    if let Some(dir) = &c.report {
        let mut md_full = md.clone();
        for s in rep.settings.iter().filter(|s| !s.runs.is_empty()) {
            let stem = s.stem();
            let title = format!("{} {} K={}", s.dataset, s.partition, s.participants);
            let rs = s.round_series();
            report::write_chart(
                dir,
                &format!("accuracy-per-round-{stem}"),
                &Chart {
                    title: &format!("Student accuracy per round, {title}"),
                    x_label: "round",
                    y_label: "test accuracy (%)",
                    series: &rs,
                    log_x: false,
                },
            )?;
            let bs = s.bytes_series();
            report::write_chart(
                dir,
                &format!("accuracy-vs-bytes-{stem}"),
                &Chart {
                    title: &format!("Student accuracy vs bytes exchanged, {title}"),
                    x_label: "bytes exchanged by the federation (log)",
                    y_label: "test accuracy (%)",
                    series: &bs,
                    log_x: true,
                },
            )?;
            md_full.push_str(&format!(
                "\n![accuracy per round, {title}](accuracy-per-round-{stem}.png)\n![accuracy vs bytes, {title}](accuracy-vs-bytes-{stem}.png)\n"
            ));
        }
        report::write_report(dir, "accuracy", &rep, &md_full)?;
        eprintln!("report written to {}", dir.display());
    }
    if let Some(p) = &c.docs {
        report::replace_docs_section(p, &args.section, &md)?;
    }
    Ok(())
}

fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("fedistill {}", args.join(" "))
}

/// One encoding's line of the communication suite.
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
pub fn run_communication(args: BenchCommunicationArgs) -> anyhow::Result<()> {
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
    let mut cfg = config_for(&ds, k, partition, args.seed, c);
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
        command: command_line(),
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
