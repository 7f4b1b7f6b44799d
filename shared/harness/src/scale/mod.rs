// Over 800 lines: about 975 lines of code and its unit tests: the suite's options, report types, tables and plots (the round driver and the synthetic learner are in round.rs and learner.rs).
//! `fedistill bench scale`: round latency and coordinator CPU / memory as the number of participants and the
//! payload per round grow, next to two baselines measured in the same run: the raw loopback transfer time of
//! the same bytes and one plain durable SQLite commit of the round's soft labels (issues 9 and 23; method,
//! fields and figures in docs/benchmarks.md).
//!
//! The coordinator is the real one, started as a child process of this binary (`fedistill coordinator
//! --config`, as `fedistill demo` does) so that its CPU time and peak RSS can be read from /proc. Each
//! participant is the real participant driver and round lifecycle in a tokio task of this process, with its
//! own provisioned startup kit and its own mutually authenticated QUIC connection (hello, task check, signed
//! soft labels, verified aggregate, witness cosignature of the log checkpoint, signed report). Only the
//! machine learning is left out: the learner behind the seam labels with deterministic synthetic
//! probability rows and distills nothing ([`learner`]).
//!
//! With `--secure-aggregation` every configuration of the participant sweep also runs with
//! `secure_aggregation = true` (issue 19), right after its clear run, and the report pairs the two: round
//! latency and bytes, secure over plain.
//!
//! Files: this one (options, plan, report and its Markdown and plots), [`round`] (one configuration: the
//! coordinator process and the participant tasks), [`probe`] (/proc sampling, the /status poll, the plain
//! QUIC and SQLite baselines).

mod learner;
pub(crate) mod probe;
mod round;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use serde::{Deserialize, Serialize};

use fedistill_participant::transport::Kit;
use fedistill_shared::crypto::{Digest, FederationId, ParticipantId};
use fedistill_shared::ml::Progress;
use fedistill_shared::protocol::Encoding;
use fedistill_shared::provision;
use fedistill_shared::settings::DataSettings;

use crate::report::{self, Chart, Series};
use probe::{free_udp_port, RawServer};
use round::{run_config, Env, RunConfig};

/// Suite name: file stem of the report files and name of the docs markers.
const SUITE: &str = "scale";
/// Upper bound on one configuration (provisioned kits connect, all rounds, coordinator exit).
const CONFIG_TIMEOUT: Duration = Duration::from_secs(900);
/// Private samples each synthetic participant claims (only weighs sample-weighted rules; the bench uses mean).
const CLAIMED_SAMPLES: u64 = 100;

/// Options of `fedistill bench scale`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ScaleOptions {
    /// CI-sized run: 3 and 10 participants at 100 rows per round, plus 1000 rows at 3 participants; 3 rounds.
    #[arg(long)]
    pub quick: bool,
    /// Participant counts of the participant sweep (default 3,10,30,100; with --quick 3,10).
    #[arg(long, value_delimiter = ',')]
    pub participants: Option<Vec<usize>>,
    /// Public rows per round of the payload sweep (default 100,1000,8000 at 10 participants; with --quick
    /// 100,1000 at 3). At most 9000, the size of the public transfer set used here.
    #[arg(long, value_delimiter = ',')]
    pub rows: Option<Vec<u64>>,
    /// Rounds per configuration (default 10; with --quick 3).
    #[arg(long)]
    pub rounds: Option<u64>,
    /// Write scale.json, scale.md and the plots latency_vs_participants / latency_vs_payload (PNG + SVG) here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Replace the generated `bench-scale` section of this Markdown file (e.g. docs/benchmarks.md); the plots
    /// are also written next to it, under img/bench-scale/.
    #[arg(long)]
    pub docs: Option<PathBuf>,
    /// Keep the federation, configs, coordinator logs and stores in this (new or empty) directory.
    #[arg(long)]
    pub workdir: Option<PathBuf>,
    /// The `fedistill` binary the coordinator is started from (`fedistill coordinator --config`; not a flag:
    /// the dispatch sets it).
    #[arg(skip)]
    pub exe: PathBuf,
    /// Also run every participant count of the participant sweep with secure aggregation, right after its
    /// clear run, and report the overhead (round p50 and bytes, secure / plain); threshold: a majority of each
    /// participant's share holders.
    #[arg(long)]
    pub secure_aggregation: bool,
    /// SecAgg+ neighbourhood of the secure runs (`secagg_neighbours`: even, at least 2; 0 = complete graph).
    #[arg(long, default_value_t = 0, requires = "secure_aggregation")]
    pub secagg_neighbours: u32,
}

/// What to measure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Participant counts of the participant sweep.
    pub participant_counts: Vec<usize>,
    /// Rows per round in the participant sweep.
    pub participant_sweep_rows: u64,
    /// Rows per round of the payload sweep.
    pub payload_rows: Vec<u64>,
    /// Participants in the payload sweep.
    pub payload_participants: usize,
    /// Rounds per configuration.
    pub rounds: u64,
    /// Whether the participant sweep is also run with secure aggregation (the "secure" sweep).
    #[serde(default)]
    pub secure_aggregation: bool,
    /// SecAgg+ neighbourhood of the secure sweep (0 = complete graph).
    #[serde(default)]
    pub secagg_neighbours: u32,
}

/// One configuration to run.
#[derive(Debug, Clone, PartialEq)]
struct Config {
    participants: usize,
    rows: u64,
    /// Secure aggregation parameters, `None` in the clear.
    secure: Option<SecureParams>,
    /// Sweeps the configuration belongs to.
    sweeps: Vec<&'static str>,
}

/// The secure-aggregation settings of one secure configuration, as its coordinator config gets them.
#[derive(Debug, Clone, Copy, PartialEq)]
struct SecureParams {
    /// `secagg_threshold`: a majority of each participant's share holders.
    threshold: u32,
    /// `secagg_neighbours` in effect: 0 when the graph is complete (asked for, or `k + 1 >= participants`).
    neighbours: u32,
}

impl SecureParams {
    /// The graph the coordinator builds for `n` participants and neighbourhood `k` (`round_graph`), and the
    /// smallest threshold above half of each participant's holders (its neighbours and itself), so that two
    /// disjoint holder sets can never both reach it.
    fn for_round(n: usize, k: u32) -> Self {
        let neighbours = if k == 0 || k as usize + 1 >= n { 0 } else { k };
        let holders = if neighbours == 0 { n } else { neighbours as usize + 1 };
        SecureParams {
            threshold: (holders / 2 + 1).max(2) as u32,
            neighbours,
        }
    }
}

impl Plan {
    fn from_args(a: &ScaleOptions) -> anyhow::Result<Self> {
        let mut p = if a.quick {
            Plan {
                participant_counts: vec![3, 10],
                participant_sweep_rows: 100,
                payload_rows: vec![100, 1000],
                payload_participants: 3,
                rounds: 3,
                secure_aggregation: a.secure_aggregation,
                secagg_neighbours: a.secagg_neighbours,
            }
        } else {
            Plan {
                participant_counts: vec![3, 10, 30, 100],
                participant_sweep_rows: 1000,
                payload_rows: vec![100, 1000, 8000],
                payload_participants: 10,
                rounds: 10,
                secure_aggregation: a.secure_aggregation,
                secagg_neighbours: a.secagg_neighbours,
            }
        };
        if let Some(c) = &a.participants {
            p.participant_counts = c.clone();
        }
        if let Some(r) = &a.rows {
            p.payload_rows = r.clone();
        }
        if let Some(r) = a.rounds {
            p.rounds = r;
        }
        p.validate()?;
        Ok(p)
    }

    fn validate(&self) -> anyhow::Result<()> {
        ensure!(self.rounds >= 1, "--rounds must be at least 1");
        ensure!(
            !self.participant_counts.is_empty() || !self.payload_rows.is_empty(),
            "nothing to measure: give --participants or --rows"
        );
        for &n in &self.participant_counts {
            ensure!(
                (1..=1000).contains(&n),
                "--participants {n}: each count must be between 1 and 1000"
            );
        }
        if self.secure_aggregation {
            ensure!(
                !self.participant_counts.is_empty(),
                "--secure-aggregation runs the participant sweep securely: give --participants"
            );
            for &n in &self.participant_counts {
                ensure!(
                    (2..=MAX_SECURE_PARTICIPANTS).contains(&n),
                    "--participants {n}: secure aggregation needs between 2 and {MAX_SECURE_PARTICIPANTS} \
                     participants (Shamir shares over GF(2^8))"
                );
            }
            let k = self.secagg_neighbours;
            ensure!(
                k == 0 || (k >= 2 && k.is_multiple_of(2)),
                "--secagg-neighbours {k}: the SecAgg+ neighbourhood is an even number of at least 2 (0 = complete graph)"
            );
        } else {
            ensure!(
                self.secagg_neighbours == 0,
                "--secagg-neighbours only applies with --secure-aggregation"
            );
        }
        for &r in self.payload_rows.iter().chain([&self.participant_sweep_rows]) {
            ensure!(
                (1..=PUBLIC_ROWS).contains(&r),
                "--rows {r}: each value must be between 1 and {PUBLIC_ROWS} (the public transfer set)"
            );
        }
        Ok(())
    }

    /// Distinct configurations with the sweeps each belongs to, in run order: each secure configuration
    /// right after its clear twin of the participant sweep, so the pair sees the machine in the same state.
    fn configs(&self) -> Vec<Config> {
        let mut out: Vec<Config> = Vec::new();
        let mut add = |n: usize, r: u64, secure: Option<SecureParams>, sweep: &'static str| match out
            .iter_mut()
            .find(|c| c.participants == n && c.rows == r && c.secure == secure)
        {
            Some(c) => c.sweeps.push(sweep),
            None => out.push(Config {
                participants: n,
                rows: r,
                secure,
                sweeps: vec![sweep],
            }),
        };
        for &n in &self.participant_counts {
            add(n, self.participant_sweep_rows, None, "participants");
            if self.secure_aggregation {
                let params = SecureParams::for_round(n, self.secagg_neighbours);
                add(n, self.participant_sweep_rows, Some(params), SECURE_SWEEP);
            }
        }
        for &r in &self.payload_rows {
            add(self.payload_participants, r, None, "payload");
        }
        out
    }
}

/// Name of the sweep of secure configurations.
const SECURE_SWEEP: &str = "secure";

/// Most participants of a secure round (Shamir x-coordinates in GF(2^8)).
const MAX_SECURE_PARTICIPANTS: usize = fedistill_shared::protocol::secagg::MAX_PARTICIPANTS;

/// Public rows of the split used here (MNIST-10k, public fraction 0.9).
const PUBLIC_ROWS: u64 = 9000;

/// The dataset and split every node derives the public transfer set from. A large public fraction so the
/// payload sweep can reach 9000 rows per round; the shards are unused (no participant trains).
fn data_settings(participants: usize) -> DataSettings {
    DataSettings {
        dataset: "mnist-10k".into(),
        data_dir: None,
        participants,
        partition: "iid".into(),
        alpha: 0.5,
        classes_per_node: 2,
        seed: 42,
        test_fraction: 0.05,
        public_fraction: 0.9,
    }
}

/// The JSON report (`scale.json`; fields documented in docs/benchmarks.md).
#[derive(Debug, Serialize, Deserialize)]
pub struct ScaleReport {
    /// Always "scale".
    pub suite: String,
    /// Whether --quick sizes were used.
    pub quick: bool,
    /// The configurations asked for.
    pub plan: Plan,
    /// Where and how it ran.
    pub machine: Machine,
    /// Dataset of the public transfer set.
    pub dataset: String,
    /// Public rows available.
    pub public_rows: u64,
    /// Classes per soft-label row.
    pub classes: u32,
    /// Soft-label encoding sent by participants.
    pub encoding: String,
    /// Aggregation rule of the coordinator.
    pub rule: String,
    /// Startup kits provisioned (the largest participant count) and how long that took.
    pub provisioned_kits: usize,
    /// Seconds to provision the federation and all kits.
    pub provision_seconds: f64,
    /// One row per measured configuration.
    pub rows: Vec<ScaleRow>,
    /// With `--secure-aggregation`: per participant count, the secure run against its clear twin.
    #[serde(default)]
    pub secure_overhead: Vec<SecureOverhead>,
    /// Wall-clock seconds of the whole suite.
    pub seconds: f64,
}

/// A secure configuration against the clear one with the same participants and rows, from the same run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecureOverhead {
    /// Participants.
    pub participants: usize,
    /// Public rows labelled per round.
    pub rows_per_round: u64,
    /// Shamir threshold of the secure run.
    pub threshold: u32,
    /// SecAgg+ neighbourhood of the secure run (0 = complete graph).
    pub neighbours: u32,
    /// Round latency p50 in the clear, ms.
    pub plain_p50_ms: f64,
    /// Round latency p50 with secure aggregation, ms.
    pub secure_p50_ms: f64,
    /// `secure_p50_ms / plain_p50_ms`.
    pub latency_ratio: f64,
    /// Frame bytes per round (up + down, all participants) in the clear.
    pub plain_bytes: u64,
    /// Frame bytes per round with secure aggregation (adverts, shares, masked inputs, reveals included).
    pub secure_bytes: u64,
    /// `secure_bytes / plain_bytes`.
    pub bytes_ratio: f64,
    /// Coordinator CPU seconds per round in the clear.
    pub plain_coordinator_cpu_s: f64,
    /// Coordinator CPU seconds per round with secure aggregation.
    pub secure_coordinator_cpu_s: f64,
}

/// Where a secure round's time went, participants' view on one clock, median over rounds, ms. Each phase
/// ends when the last participant holds the coordinator's next push; in every round the four add up to its
/// latency (their medians need not add up to the median latency).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SecurePhases {
    /// First opening -> last participant holds the round's key adverts: labelling, fixed point, fresh keys,
    /// the signed adverts and their collection.
    pub keys_ms: f64,
    /// -> last participant holds its relayed shares: the roster check, Shamir splits and sealing (one x25519
    /// per holder), the shares' upload and relay.
    pub shares_ms: f64,
    /// -> last participant holds the unmasking request: opening the shares (one x25519 each), the masks (one
    /// x25519 and one ChaCha20 stream per neighbour, plus the self mask), the masked inputs' upload and
    /// storage.
    pub masked_ms: f64,
    /// -> last participant holds the aggregate: the reveals, Shamir reconstruction and self-mask removal at
    /// the coordinator, the round's commit and the aggregate's delivery.
    pub unmask_ms: f64,
}

/// Where the figures come from.
#[derive(Debug, Serialize, Deserialize)]
pub struct Machine {
    /// Logical CPUs visible to this process.
    pub cpus: usize,
    /// "release" or "debug".
    pub build: String,
    /// Target OS and architecture.
    pub target: String,
}

/// One configuration's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScaleRow {
    /// Sweeps this configuration belongs to ("participants", "payload", "secure").
    pub sweeps: Vec<String>,
    /// Whether the rounds ran with secure aggregation (the "secure" sweep).
    #[serde(default)]
    pub secure: bool,
    /// Secure rounds only: where a round's time went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure_phases_ms: Option<SecurePhases>,
    /// Participants (each its own kit and mTLS connection).
    pub participants: usize,
    /// Rounds run.
    pub rounds: u64,
    /// Rounds every participant saw from opening to aggregate, and the coordinator logged with every
    /// participant as contributor and none absent.
    pub rounds_completed: u64,
    /// Public rows labelled per round.
    pub rows_per_round: u64,
    /// Median over rounds of the frame bytes all participants sent in a round (soft labels, report, proof
    /// request, cosignature; secure rounds add the key adverts, shares and reveals).
    pub bytes_up_per_round: u64,
    /// Median over rounds of the frame bytes all participants received in a round (opening, aggregate, replies;
    /// secure rounds add the relayed adverts, shares and unmasking requests).
    pub bytes_down_per_round: u64,
    /// `bytes_up_per_round + bytes_down_per_round`.
    pub bytes_per_round: u64,
    /// Round latency per round, ms: first participant receives the opening -> last participant holds the
    /// aggregate (participants' view, one clock in this process).
    pub latency_ms: Vec<f64>,
    /// Median of `latency_ms`.
    pub latency_ms_median: f64,
    /// 95th percentile of `latency_ms` (nearest rank).
    pub latency_ms_p95: f64,
    /// Median over rounds of the coordinator's own open -> aggregate committed and queued figure (/status).
    pub coordinator_latency_ms_median: f64,
    /// Median time to move `bytes_up_per_round` up and `bytes_down_per_round` back over one plain loopback
    /// QUIC connection (server certificate only, no framing), in this run.
    pub raw_transfer_ms_median: f64,
    /// `latency_ms_median / raw_transfer_ms_median`.
    pub latency_over_raw: f64,
    /// Median time of one plain durable SQLite commit of the round's soft labels (the signed payloads the
    /// coordinator accepted, as many blobs as participants; WAL, `synchronous=FULL`, on the store's disk), in
    /// this run.
    pub commit_ms_median: f64,
    /// `latency_ms_median / (raw_transfer_ms_median + commit_ms_median)`: the round against the wire and one
    /// durable commit.
    pub latency_over_raw_plus_commit: f64,
    /// `coordinator_latency_ms_median / (raw_transfer_ms_median + commit_ms_median)`: the coordinator's own
    /// round (opened to committed and queued, issue 23's "coordinator's round latency") against the same
    /// baseline.
    pub coordinator_over_raw_plus_commit: f64,
    /// Median over rounds of the coordinator's own `commit` phase (/status): its transaction with the fsync.
    pub coordinator_commit_ms_median: f64,
    /// Coordinator CPU seconds (user + system) from listening to the end of the last round, per round;
    /// includes the participants' handshakes and enrolment records.
    pub coordinator_cpu_s_per_round: f64,
    /// Coordinator peak resident memory (VmHWM), MiB; includes loading the dataset at start.
    pub coordinator_peak_rss_mib: f64,
    /// Coordinator resident memory (VmRSS) after the last round, MiB.
    pub coordinator_rss_end_mib: f64,
    /// Seconds from starting the coordinator to its exit.
    pub seconds: f64,
}

/// Runs the suite.
pub fn run(args: &ScaleOptions) -> anyhow::Result<()> {
    if cfg!(debug_assertions) && !args.quick {
        eprintln!("warning: debug build; figures are only meaningful with --release");
    }
    let plan = Plan::from_args(args)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let report = rt.block_on(measure(args, plan))?;
    let md = markdown(&report);
    print!("{md}");
    if let Some(dir) = &args.report {
        report::write_report(dir, SUITE, &report, &md)?;
        let charts = write_charts(dir, &report)?;
        println!(
            "report: {} ({} plots)",
            dir.join(format!("{SUITE}.json")).display(),
            charts.len()
        );
    }
    if let Some(docs) = &args.docs {
        let img_dir = docs.parent().unwrap_or(Path::new(".")).join("img").join("bench-scale");
        write_charts(&img_dir, &report)?;
        report::replace_docs_section(docs, SUITE, &docs_section(args, &report, &md))?;
        println!(
            "updated the {SUITE} section of {} (plots in {})",
            docs.display(),
            img_dir.display()
        );
    }
    Ok(())
}

struct WorkDir {
    path: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

fn work_dir(args: &ScaleOptions) -> anyhow::Result<WorkDir> {
    match &args.workdir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            ensure!(
                std::fs::read_dir(d)?.next().is_none(),
                "--workdir {} is not empty; give a new or empty directory",
                d.display()
            );
            Ok(WorkDir {
                path: std::fs::canonicalize(d)?,
                _temp: None,
            })
        }
        None => {
            let t = tempfile::tempdir().context("creating a temporary directory")?;
            Ok(WorkDir {
                path: t.path().to_path_buf(),
                _temp: Some(t),
            })
        }
    }
}

/// What every participant task of a configuration shares.
struct Shared {
    federation: FederationId,
    public_digest: Digest,
    public_len: u64,
    classes: u32,
}

async fn measure(args: &ScaleOptions, plan: Plan) -> anyhow::Result<ScaleReport> {
    let started = Instant::now();
    let work = work_dir(args)?;
    let dir = work.path.clone();
    let configs = plan.configs();
    let max_n = configs.iter().map(|c| c.participants).max().unwrap_or(1);

    // The public set, written as a deployment's files: the coordinator runs from the task card and serves
    // the public file; the synthetic participants need only its digest, size and classes.
    let data = data_settings(max_n);
    let split = tokio::task::block_in_place(|| data.load_split()).context("loading the public transfer set")?;
    let task_dir = dir.join("task");
    std::fs::create_dir_all(&task_dir).with_context(|| format!("creating {}", task_dir.display()))?;
    let files = tokio::task::block_in_place(|| crate::files::write_split(&task_dir, &split, None))?;
    let card = fedistill_shared::data::TaskCard::load(&task_dir.join("task.toml"))?;
    let digest = card.public.digest().context("the card's public sha256")?;
    let shared = Arc::new(Shared {
        federation: FederationId::new("scale").context("federation id")?,
        public_digest: Digest(digest),
        public_len: card.public.rows,
        classes: card.classes().len() as u32,
    });
    drop(split);
    ensure!(
        shared.public_len == PUBLIC_ROWS,
        "the public set has {} rows, expected {PUBLIC_ROWS}",
        shared.public_len
    );

    // One federation with kits for the largest configuration; smaller ones use the first kits. The port is
    // fixed at provisioning because kits name the endpoint they dial.
    let port = free_udp_port()?;
    let fed_dir = dir.join("federation");
    let t = Instant::now();
    let kits = tokio::task::block_in_place(|| provision_kits(&fed_dir, &shared.federation, port, max_n))?;
    let provision_seconds = t.elapsed().as_secs_f64();
    // Progress over the grid, one step per round of every configuration, on stderr: a bar on a terminal, plain
    // lines otherwise (the result lines on stdout are printed with the bar out of the way).
    let progress = Progress::auto();
    progress.suspend(|| {
        println!(
            "fedistill bench scale: provisioned a federation with {max_n} participant kits in {provision_seconds:.1} s"
        )
    });
    let total: u64 = configs.len() as u64 * plan.rounds;
    progress.start(SUITE, total);

    let raw = RawServer::start()
        .await
        .context("starting the plain QUIC baseline server")?;
    let env = Env {
        exe: args.exe.clone(),
        dir: dir.clone(),
        fed_dir: fed_dir.clone(),
        shared: shared.clone(),
        raw,
        card: task_dir.join("task.toml"),
        public: task_dir.join(&files.public),
    };
    let mut rows = Vec::new();
    for (done, c) in configs.into_iter().enumerate() {
        let (n, r) = (c.participants, c.rows);
        let cfg = RunConfig {
            participants: n,
            rows: r,
            rounds: plan.rounds,
            port,
            secure: c.secure,
        };
        let what = match c.secure {
            Some(_) => format!("{n} participants x {r} rows, secure"),
            None => format!("{n} participants x {r} rows"),
        };
        let base = done as u64 * plan.rounds;
        let rounds = plan.rounds;
        progress.advance(SUITE, base, total, &format!("{what}: starting ({rounds} rounds)"));
        let on_round = |k: u64| {
            progress.advance(
                SUITE,
                base + k.min(rounds),
                total,
                &format!("{what}: round {} of {rounds} aggregated", k.min(rounds)),
            )
        };
        let row = tokio::time::timeout(CONFIG_TIMEOUT, run_config(&env, &kits[..n], &cfg, &on_round))
            .await
            .map_err(|_| anyhow::anyhow!("{what} did not finish within {CONFIG_TIMEOUT:?}"))?
            .with_context(|| what.clone())?;
        progress.advance(
            SUITE,
            base + rounds,
            total,
            &format!(
                "{what}: {} rounds, median round {:.1} ms",
                row.rounds_completed, row.latency_ms_median
            ),
        );
        let label = match c.secure {
            Some(p) => format!(
                "{n:>4} participants x {r:>5} rows, secure (t = {}, {}):",
                p.threshold,
                graph_name(p.neighbours)
            ),
            None => format!("{n:>4} participants x {r:>5} rows:"),
        };
        progress.suspend(|| {
            println!(
                "  {label} {} rounds, median round {:.1} ms (p95 {:.1}), {} bytes/round, raw transfer {:.2} ms + commit {:.2} ms (x{:.2}; the coordinator's own round {:.1} ms, x{:.2}), coordinator {:.3} CPU s/round, peak RSS {:.1} MiB",
                row.rounds_completed,
                row.latency_ms_median,
                row.latency_ms_p95,
                row.bytes_per_round,
                row.raw_transfer_ms_median,
                row.commit_ms_median,
                row.latency_over_raw_plus_commit,
                row.coordinator_latency_ms_median,
                row.coordinator_over_raw_plus_commit,
                row.coordinator_cpu_s_per_round,
                row.coordinator_peak_rss_mib
            )
        });
        rows.push(ScaleRow {
            sweeps: c.sweeps.iter().map(|s| s.to_string()).collect(),
            ..row
        });
    }
    progress.finish(SUITE, &format!("{} configurations", rows.len()));
    env.raw.close();
    let secure_overhead = secure_overhead(&plan, &rows);
    Ok(ScaleReport {
        suite: SUITE.into(),
        quick: args.quick,
        plan,
        machine: Machine {
            cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            build: if cfg!(debug_assertions) { "debug" } else { "release" }.into(),
            target: format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH),
        },
        dataset: data.dataset,
        public_rows: shared.public_len,
        classes: shared.classes,
        encoding: Encoding::F32.name(),
        rule: RULE.into(),
        provisioned_kits: max_n,
        provision_seconds,
        secure_overhead,
        rows,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Pairs every secure row with the clear row of the same participants and rows.
fn secure_overhead(plan: &Plan, rows: &[ScaleRow]) -> Vec<SecureOverhead> {
    rows.iter()
        .filter(|s| s.secure)
        .filter_map(|s| {
            let p = rows
                .iter()
                .find(|p| !p.secure && p.participants == s.participants && p.rows_per_round == s.rows_per_round)?;
            let params = SecureParams::for_round(s.participants, plan.secagg_neighbours);
            Some(SecureOverhead {
                participants: s.participants,
                rows_per_round: s.rows_per_round,
                threshold: params.threshold,
                neighbours: params.neighbours,
                plain_p50_ms: p.latency_ms_median,
                secure_p50_ms: s.latency_ms_median,
                latency_ratio: s.latency_ms_median / p.latency_ms_median,
                plain_bytes: p.bytes_per_round,
                secure_bytes: s.bytes_per_round,
                bytes_ratio: s.bytes_per_round as f64 / p.bytes_per_round.max(1) as f64,
                plain_coordinator_cpu_s: p.coordinator_cpu_s_per_round,
                secure_coordinator_cpu_s: s.coordinator_cpu_s_per_round,
            })
        })
        .collect()
}

/// "complete graph" or "k = K" (SecAgg+).
fn graph_name(neighbours: u32) -> String {
    match neighbours {
        0 => "complete graph".into(),
        k => format!("SecAgg+ k = {k}"),
    }
}

/// Aggregation rule of the bench's coordinator (the cheapest; the rule's own cost is not what is measured).
const RULE: &str = "mean";

fn provision_kits(fed_dir: &Path, federation: &FederationId, port: u16, n: usize) -> anyhow::Result<Vec<Kit>> {
    let now = provision::now_utc();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    provision::init(fed_dir, federation, &[format!("127.0.0.1:{port}")], Some(addr), now)
        .context("provisioning the federation")?;
    let mut kits = Vec::with_capacity(n);
    for i in 0..n {
        let id = ParticipantId::new(format!("p{i}"));
        let kit_dir = provision::add_participant(fed_dir, &id, now).with_context(|| format!("adding {id}"))?;
        kits.push(Kit::load(&kit_dir).with_context(|| format!("loading the kit of {id}"))?);
    }
    Ok(kits)
}

fn fmt_ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The Markdown table of a report.
fn markdown(r: &ScaleReport) -> String {
    let rows: Vec<Vec<String>> = r
        .rows
        .iter()
        .map(|x| {
            vec![
                x.sweeps.join(" + "),
                x.participants.to_string(),
                x.rounds.to_string(),
                x.rows_per_round.to_string(),
                x.bytes_per_round.to_string(),
                fmt_ms(x.latency_ms_median),
                fmt_ms(x.latency_ms_p95),
                fmt_ms(x.coordinator_latency_ms_median),
                fmt_ms(x.raw_transfer_ms_median),
                fmt_ms(x.commit_ms_median),
                format!("{:.1}", x.latency_over_raw),
                format!("{:.2}", x.latency_over_raw_plus_commit),
                format!("{:.2}", x.coordinator_over_raw_plus_commit),
                fmt_ms(x.coordinator_commit_ms_median),
                format!("{:.3}", x.coordinator_cpu_s_per_round),
                format!("{:.1}", x.coordinator_peak_rss_mib),
                format!("{:.1}", x.coordinator_rss_end_mib),
            ]
        })
        .collect();
    let table = report::markdown_table(
        &[
            "sweep",
            "participants",
            "rounds",
            "rows/round",
            "bytes/round",
            "round p50 ms",
            "round p95 ms",
            "coordinator p50 ms",
            "raw transfer ms",
            "commit ms",
            "p50 / raw",
            "p50 / (raw + commit)",
            "coordinator p50 / (raw + commit)",
            "coordinator commit ms",
            "coordinator CPU s/round",
            "peak RSS MiB",
            "RSS after MiB",
        ],
        &rows,
    );
    let mut out = format!(
        "{table}\n{} build, {} CPUs, {}; {} public rows of {} x {} classes, {} soft labels, rule {}; {} kits provisioned in {:.1} s; suite took {:.0} s.\n",
        r.machine.build,
        r.machine.cpus,
        r.machine.target,
        r.public_rows,
        r.dataset,
        r.classes,
        r.encoding,
        r.rule,
        r.provisioned_kits,
        r.provision_seconds,
        r.seconds
    );
    if !r.secure_overhead.is_empty() {
        out.push_str(&format!("\n{}", secure_markdown(r)));
    }
    out
}

/// The "secure aggregation overhead" table: each secure row against its clear twin, and where the secure
/// round's time went.
fn secure_markdown(r: &ScaleReport) -> String {
    let rows: Vec<Vec<String>> = r
        .secure_overhead
        .iter()
        .map(|o| {
            let phases = r
                .rows
                .iter()
                .find(|x| x.secure && x.participants == o.participants && x.rows_per_round == o.rows_per_round)
                .and_then(|x| x.secure_phases_ms)
                .unwrap_or_default();
            vec![
                o.participants.to_string(),
                graph_name(o.neighbours),
                o.threshold.to_string(),
                fmt_ms(o.plain_p50_ms),
                fmt_ms(o.secure_p50_ms),
                format!("{:.2}", o.latency_ratio),
                o.plain_bytes.to_string(),
                o.secure_bytes.to_string(),
                format!("{:.2}", o.bytes_ratio),
                format!("{:.3}", o.plain_coordinator_cpu_s),
                format!("{:.3}", o.secure_coordinator_cpu_s),
                fmt_ms(phases.keys_ms),
                fmt_ms(phases.shares_ms),
                fmt_ms(phases.masked_ms),
                fmt_ms(phases.unmask_ms),
            ]
        })
        .collect();
    let table = report::markdown_table(
        &[
            "participants",
            "graph",
            "threshold",
            "plain p50 ms",
            "secure p50 ms",
            "latency ratio",
            "plain bytes/round",
            "secure bytes/round",
            "bytes ratio",
            "plain coordinator CPU s/round",
            "secure coordinator CPU s/round",
            "secure: keys ms",
            "shares ms",
            "masked ms",
            "unmask ms",
        ],
        &rows,
    );
    format!(
        "Secure aggregation overhead ({} rows/round, secure run right after its clear twin; ratios are secure / plain; the four secure phases end when the last participant held the next push, medians over rounds):\n\n{table}",
        r.plan.participant_sweep_rows
    )
}

/// latency_vs_participants (participant sweep) and latency_vs_payload (payload sweep), when they have points.
fn write_charts(dir: &Path, r: &ScaleReport) -> anyhow::Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    let sweep =
        |name: &str| -> Vec<&ScaleRow> { r.rows.iter().filter(|x| x.sweeps.iter().any(|s| s == name)).collect() };
    let series = |rows: &[&ScaleRow], x: &dyn Fn(&ScaleRow) -> f64| -> Vec<Series> {
        let pts = |y: &dyn Fn(&ScaleRow) -> f64| rows.iter().map(|row| (x(row), y(row))).collect::<Vec<_>>();
        vec![
            Series {
                name: "round latency p50 (mTLS federation)".into(),
                points: pts(&|row| row.latency_ms_median),
            },
            Series {
                name: "round latency p95".into(),
                points: pts(&|row| row.latency_ms_p95),
            },
            Series {
                name: "raw QUIC transfer of the same bytes".into(),
                points: pts(&|row| row.raw_transfer_ms_median),
            },
            Series {
                name: "raw transfer + one durable SQLite commit".into(),
                points: pts(&|row| row.raw_transfer_ms_median + row.commit_ms_median),
            },
        ]
    };
    let by_participants = sweep("participants");
    if !by_participants.is_empty() {
        let rows = by_participants.first().map(|x| x.rows_per_round).unwrap_or(0);
        let s = series(&by_participants, &|row| row.participants as f64);
        let title = format!("Round latency vs participants ({rows} rows/round)");
        paths.extend(report::write_chart(
            dir,
            "latency_vs_participants",
            &Chart {
                title: &title,
                x_label: "participants",
                y_label: "ms",
                series: &s,
                log_x: true,
            },
        )?);
    }
    if !r.secure_overhead.is_empty() {
        let pts = |y: &dyn Fn(&SecureOverhead) -> f64| {
            r.secure_overhead
                .iter()
                .map(|o| (o.participants as f64, y(o)))
                .collect::<Vec<_>>()
        };
        let s = vec![
            Series {
                name: "round latency p50, in the clear".into(),
                points: pts(&|o| o.plain_p50_ms),
            },
            Series {
                name: "round latency p50, secure aggregation".into(),
                points: pts(&|o| o.secure_p50_ms),
            },
        ];
        let title = format!(
            "Secure aggregation vs clear ({} rows/round, {})",
            r.plan.participant_sweep_rows,
            graph_name(r.plan.secagg_neighbours)
        );
        paths.extend(report::write_chart(
            dir,
            "secure_vs_plain",
            &Chart {
                title: &title,
                x_label: "participants",
                y_label: "ms",
                series: &s,
                log_x: true,
            },
        )?);
    }
    let by_payload = sweep("payload");
    if !by_payload.is_empty() {
        let n = by_payload.first().map(|x| x.participants).unwrap_or(0);
        let s = series(&by_payload, &|row| row.bytes_per_round as f64 / 1e6);
        let title = format!("Round latency vs bytes per round ({n} participants)");
        paths.extend(report::write_chart(
            dir,
            "latency_vs_payload",
            &Chart {
                title: &title,
                x_label: "MB per round (all uploads + downloads)",
                y_label: "ms",
                series: &s,
                log_x: true,
            },
        )?);
    }
    Ok(paths)
}

/// The generated docs section: command, table, plots.
fn docs_section(args: &ScaleOptions, r: &ScaleReport, md: &str) -> String {
    let mut cmd = String::from("fedistill bench scale");
    if args.quick {
        cmd.push_str(" --quick");
    }
    if let Some(p) = &args.participants {
        cmd.push_str(&format!(" --participants {}", join(p)));
    }
    if let Some(p) = &args.rows {
        cmd.push_str(&format!(" --rows {}", join(p)));
    }
    if let Some(n) = args.rounds {
        cmd.push_str(&format!(" --rounds {n}"));
    }
    if args.secure_aggregation {
        cmd.push_str(" --secure-aggregation");
    }
    if args.secagg_neighbours != 0 {
        cmd.push_str(&format!(" --secagg-neighbours {}", args.secagg_neighbours));
    }
    let mut plots = String::new();
    if r.rows.iter().any(|x| x.sweeps.iter().any(|s| s == "participants")) {
        plots.push_str("![Round latency vs participants](img/bench-scale/latency_vs_participants.svg)\n");
    }
    if r.rows.iter().any(|x| x.sweeps.iter().any(|s| s == "payload")) {
        plots.push_str("![Round latency vs bytes per round](img/bench-scale/latency_vs_payload.svg)\n");
    }
    if !r.secure_overhead.is_empty() {
        plots.push_str("![Secure aggregation vs clear](img/bench-scale/secure_vs_plain.svg)\n");
    }
    format!("Generated by `{cmd} --docs docs/benchmarks.md`.\n\n{md}\n{plots}")
}

fn join<T: ToString>(v: &[T]) -> String {
    v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_merges_shared_configs_and_refuses_bad_sizes() {
        let args = |quick: bool| ScaleOptions {
            quick,
            ..ScaleOptions::default()
        };
        let full = Plan::from_args(&args(false)).expect("full");
        let configs = full.configs();
        let key = |c: &Config| (c.participants, c.rows, c.secure, c.sweeps.clone());
        // 4 participant counts at 1000 rows + 3 payload sizes at 10 participants, (10, 1000) shared.
        assert_eq!(configs.len(), 6);
        assert_eq!(key(&configs[1]), (10, 1000, None, vec!["participants", "payload"]));
        let quick = Plan::from_args(&args(true)).expect("quick");
        assert_eq!(quick.rounds, 3);
        assert_eq!(
            quick.configs().iter().map(key).collect::<Vec<_>>(),
            vec![
                (3, 100, None, vec!["participants", "payload"]),
                (10, 100, None, vec!["participants"]),
                (3, 1000, None, vec!["payload"])
            ]
        );
        // --secure-aggregation: each participant count again, securely, right after its clear run; a majority
        // threshold of the holders (everyone on the complete graph, k + 1 on a sparser SecAgg+ graph).
        let secure = |k: u32| {
            Plan::from_args(&ScaleOptions {
                quick: true,
                secure_aggregation: true,
                secagg_neighbours: k,
                participants: Some(vec![3, 10, 30]),
                ..ScaleOptions::default()
            })
            .expect("secure plan")
            .configs()
        };
        let complete = secure(0);
        assert_eq!(complete.len(), 7);
        let s = |threshold: u32, neighbours: u32| Some(SecureParams { threshold, neighbours });
        assert_eq!(key(&complete[1]), (3, 100, s(2, 0), vec!["secure"]));
        assert_eq!(key(&complete[3]), (10, 100, s(6, 0), vec!["secure"]));
        assert_eq!(key(&complete[5]), (30, 100, s(16, 0), vec!["secure"]));
        assert_eq!(key(&complete[6]), (3, 1000, None, vec!["payload"]));
        // k = 8: complete below 10 participants (k + 1 >= n), else 9 holders and a threshold of 5.
        let sparse = secure(8);
        assert_eq!(sparse[1].secure, s(2, 0));
        assert_eq!(sparse[3].secure, s(5, 8));
        assert_eq!(sparse[5].secure, s(5, 8));
        for (n, k) in [
            (3usize, 0u32),
            (10, 0),
            (30, 0),
            (100, 0),
            (10, 8),
            (30, 8),
            (100, 8),
            (9, 8),
            (100, 2),
        ] {
            let p = SecureParams::for_round(n, k);
            let graph = fedistill_shared::protocol::secagg::round_graph(
                &fedistill_shared::wire::secagg::SecAggParams {
                    threshold: p.threshold,
                    neighbours: k,
                    noise_sigma2: 0,
                },
                n,
            )
            .expect("the coordinator's graph");
            assert!(graph.majority_threshold(), "n = {n}, k = {k}: {p:?}");
            assert_eq!(
                p.neighbours == 0,
                graph.neighbours(0).len() + 1 == n,
                "n = {n}, k = {k}"
            );
        }
        let bad = |f: &dyn Fn(&mut ScaleOptions)| {
            let mut a = args(true);
            f(&mut a);
            format!("{:#}", Plan::from_args(&a).expect_err("bad plan"))
        };
        assert!(bad(&|a| a.rows = Some(vec![10_000])).contains("between 1 and 9000"));
        assert!(bad(&|a| a.participants = Some(vec![0])).contains("between 1 and 1000"));
        assert!(bad(&|a| a.rounds = Some(0)).contains("at least 1"));
        assert!(bad(&|a| a.secagg_neighbours = 8).contains("only applies with --secure-aggregation"));
        assert!(bad(&|a| {
            a.secure_aggregation = true;
            a.secagg_neighbours = 3;
        })
        .contains("an even number"));
        assert!(bad(&|a| {
            a.secure_aggregation = true;
            a.participants = Some(vec![1]);
        })
        .contains("between 2 and 255"));
        assert!(bad(&|a| {
            a.secure_aggregation = true;
            a.participants = Some(vec![]);
        })
        .contains("give --participants"));
        assert!(bad(&|a| {
            a.participants = Some(vec![]);
            a.rows = Some(vec![]);
        })
        .contains("nothing to measure"));
    }
}
