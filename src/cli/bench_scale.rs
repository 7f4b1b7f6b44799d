//! `fedistill bench scale`: round latency and coordinator CPU / memory as the number of participants and the
//! payload per round grow, next to the raw loopback transfer time of the same bytes measured in the same run
//! (issue 9; method, fields and figures in docs/benchmarks.md).
//!
//! The coordinator is the real one, started as a child process of this binary (`fedistill coordinator
//! --config`, as `fedistill demo` does) so that its CPU time and peak RSS can be read from /proc. The
//! participants are lightweight: tokio tasks in this process, each with its own provisioned startup kit and
//! its own mutually authenticated QUIC connection, speaking the real protocol through the sans-IO
//! [`ParticipantSession`] (hello, signed soft labels, verified aggregate, witness cosignature of the log
//! checkpoint, signed report). Only the machine learning is left out: the soft labels are deterministic
//! synthetic probability rows, and nothing is distilled. The real participant service trains a teacher
//! before it connects and has no hook for synthetic labels, hence this minimal client.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use fedistill_participant::transport::{connect_with_backoff, Kit};
use fedistill_participant::witness::Witness;
use fedistill_shared::crypto::{Digest, FederationId, ParticipantId, ReplayGuard, RoundId, Signed, Signer};
use fedistill_shared::ledger::{LogVerifier, SignedCheckpoint};
use fedistill_shared::protocol::{softlabels, Encoding, ParticipantOutput, ParticipantSession};
use fedistill_shared::provision::{self, pki, Ca};
use fedistill_shared::settings::DataSettings;
use fedistill_shared::tls::{self, QuicTuning};
use fedistill_shared::wire::messages::{
    Cosignature, Reply, RoundReport, SoftLabels, ToCoordinator, ToParticipant, KIND_REPLY, KIND_TO_COORDINATOR,
    KIND_TO_PARTICIPANT, PROTOCOL_VERSION,
};
use fedistill_shared::wire::{decode_frame, encode_frame, read_frame, write_frame, DEFAULT_MAX_FRAME};

use super::report::{self, Chart, Series};

/// Suite name: file stem of the report files and name of the docs markers.
const SUITE: &str = "scale";
/// How long one stream may take to deliver a frame (generous: 100 participants on 2 cores).
const STREAM_TIMEOUT: Duration = Duration::from_secs(120);
/// Upper bound on one configuration (provisioned kits connect, all rounds, coordinator exit).
const CONFIG_TIMEOUT: Duration = Duration::from_secs(900);
/// Private samples each synthetic participant claims (only weighs sample-weighted rules; the bench uses mean).
const CLAIMED_SAMPLES: u64 = 100;

/// Arguments of `fedistill bench scale`.
#[derive(Debug, clap::Args)]
pub struct BenchScaleArgs {
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
}

impl Plan {
    fn from_args(a: &BenchScaleArgs) -> anyhow::Result<Self> {
        let mut p = if a.quick {
            Plan {
                participant_counts: vec![3, 10],
                participant_sweep_rows: 100,
                payload_rows: vec![100, 1000],
                payload_participants: 3,
                rounds: 3,
            }
        } else {
            Plan {
                participant_counts: vec![3, 10, 30, 100],
                participant_sweep_rows: 1000,
                payload_rows: vec![100, 1000, 8000],
                payload_participants: 10,
                rounds: 10,
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
        for &r in self.payload_rows.iter().chain([&self.participant_sweep_rows]) {
            ensure!(
                (1..=PUBLIC_ROWS).contains(&r),
                "--rows {r}: each value must be between 1 and {PUBLIC_ROWS} (the public transfer set)"
            );
        }
        Ok(())
    }

    /// Distinct (participants, rows) configurations with the sweeps each belongs to, in run order.
    fn configs(&self) -> Vec<(usize, u64, Vec<&'static str>)> {
        let mut out: Vec<(usize, u64, Vec<&'static str>)> = Vec::new();
        let mut add = |n: usize, r: u64, sweep: &'static str| match out.iter_mut().find(|c| c.0 == n && c.1 == r) {
            Some(c) => c.2.push(sweep),
            None => out.push((n, r, vec![sweep])),
        };
        for &n in &self.participant_counts {
            add(n, self.participant_sweep_rows, "participants");
        }
        for &r in &self.payload_rows {
            add(self.payload_participants, r, "payload");
        }
        out
    }
}

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
    /// Wall-clock seconds of the whole suite.
    pub seconds: f64,
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
    /// Sweeps this configuration belongs to ("participants", "payload").
    pub sweeps: Vec<String>,
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
    /// request, cosignature).
    pub bytes_up_per_round: u64,
    /// Median over rounds of the frame bytes all participants received in a round (opening, aggregate, replies).
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
pub fn run(args: BenchScaleArgs) -> anyhow::Result<()> {
    if cfg!(debug_assertions) && !args.quick {
        eprintln!("warning: debug build; figures are only meaningful with --release");
    }
    let plan = Plan::from_args(&args)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let report = rt.block_on(measure(&args, plan))?;
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
        report::replace_docs_section(docs, SUITE, &docs_section(&args, &report, &md))?;
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

fn work_dir(args: &BenchScaleArgs) -> anyhow::Result<WorkDir> {
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

async fn measure(args: &BenchScaleArgs, plan: Plan) -> anyhow::Result<ScaleReport> {
    let started = Instant::now();
    let work = work_dir(args)?;
    let dir = work.path.clone();
    let configs = plan.configs();
    let max_n = configs.iter().map(|c| c.0).max().unwrap_or(1);

    // The public set every node derives; the coordinator computes the same split from its config.
    let data = data_settings(max_n);
    let split = tokio::task::block_in_place(|| data.load_split()).context("loading the public transfer set")?;
    let shared = Arc::new(Shared {
        federation: FederationId::new("scale").context("federation id")?,
        public_digest: Digest(split.public_digest),
        public_len: split.public.n as u64,
        classes: split.public.num_classes as u32,
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
    println!(
        "fedistill bench scale: provisioned a federation with {max_n} participant kits in {provision_seconds:.1} s"
    );

    let raw = RawServer::start()
        .await
        .context("starting the plain QUIC baseline server")?;
    let env = Env {
        exe: std::env::current_exe().context("locating the fedistill binary")?,
        dir: dir.clone(),
        fed_dir: fed_dir.clone(),
        shared: shared.clone(),
        raw,
        data: data.clone(),
    };
    let mut rows = Vec::new();
    for (n, r, sweeps) in configs {
        let cfg = RunConfig {
            participants: n,
            rows: r,
            rounds: plan.rounds,
            port,
        };
        let row = tokio::time::timeout(CONFIG_TIMEOUT, run_config(&env, &kits[..n], &cfg))
            .await
            .map_err(|_| anyhow::anyhow!("{n} participants x {r} rows did not finish within {CONFIG_TIMEOUT:?}"))?
            .with_context(|| format!("{n} participants, {r} rows per round"))?;
        println!(
            "  {n:>4} participants x {r:>5} rows: {} rounds, median round {:.1} ms (p95 {:.1}), raw transfer {:.2} ms, coordinator {:.3} CPU s/round, peak RSS {:.1} MiB",
            row.rounds_completed,
            row.latency_ms_median,
            row.latency_ms_p95,
            row.raw_transfer_ms_median,
            row.coordinator_cpu_s_per_round,
            row.coordinator_peak_rss_mib
        );
        rows.push(ScaleRow {
            sweeps: sweeps.iter().map(|s| s.to_string()).collect(),
            ..row
        });
    }
    env.raw.close();
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
        rows,
        seconds: started.elapsed().as_secs_f64(),
    })
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

struct RunConfig {
    participants: usize,
    rows: u64,
    rounds: u64,
    port: u16,
}

/// Kills the coordinator if the bench stops early.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// What every configuration of one suite run shares.
struct Env {
    exe: PathBuf,
    dir: PathBuf,
    fed_dir: PathBuf,
    shared: Arc<Shared>,
    raw: RawServer,
    data: DataSettings,
}

async fn run_config(env: &Env, kits: &[Kit], cfg: &RunConfig) -> anyhow::Result<ScaleRow> {
    let Env {
        exe,
        dir,
        fed_dir,
        shared,
        raw,
        data,
    } = env;
    let started = Instant::now();
    let n = cfg.participants;
    let run_dir = dir.join(format!("run-{n}x{}", cfg.rows));
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    let status_port = free_tcp_port()?;
    let config_path = run_dir.join("coordinator.toml");
    // Generous windows: every round must aggregate because everyone contributed, never by deadline.
    let config = format!(
        "federation_dir = {fed:?}\nbind = \"127.0.0.1:{port}\"\nstore = \"coordinator.sqlite\"\nstatus = \"127.0.0.1:{status_port}\"\nrounds = {rounds}\nmin_participants = {n}\nquorum = {n}\ncollect_timeout_ms = 600000\nreport_timeout_ms = 600000\nsamples_per_round = {rows}\nrule = {RULE:?}\ntemperature = 2.0\n\n[data]\ndataset = {ds:?}\nparticipants = {dp}\npartition = {part:?}\nseed = {seed}\ntest_fraction = {tf}\npublic_fraction = {pf}\n",
        fed = fed_dir.display().to_string(),
        port = cfg.port,
        rounds = cfg.rounds,
        rows = cfg.rows,
        ds = data.dataset,
        dp = data.participants,
        part = data.partition,
        seed = data.seed,
        tf = data.test_fraction,
        pf = data.public_fraction,
    );
    std::fs::write(&config_path, config).with_context(|| format!("writing {}", config_path.display()))?;
    let log_path = run_dir.join("coordinator.log");
    let log = std::fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let child = Command::new(exe)
        .arg("coordinator")
        .arg("--config")
        .arg(&config_path)
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting the coordinator")?;
    let mut child = ChildGuard(child);
    let pid = child.0.id();
    let see_log = || format!("see {}", log_path.display());

    // Ready once /status answers (the QUIC endpoint is bound before the status server starts).
    let ready_by = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.0.try_wait()? {
            bail!("the coordinator exited with {status} before listening; {}", see_log());
        }
        if get_status(status_port).await.is_ok() {
            break;
        }
        ensure!(
            Instant::now() < ready_by,
            "the coordinator did not listen within 120 s; {}",
            see_log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let clk_tck = clock_ticks_per_second();
    let before = ProcSample::read(pid, clk_tck).context("reading the coordinator's /proc entry")?;

    // Participants: one task, kit and connection each.
    let cancel = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, kit) in kits.iter().take(n).enumerate() {
        let kit = kit.clone();
        let shared = shared.clone();
        let workdir = run_dir.join("work").join(format!("p{i}"));
        let cancel = cancel.clone();
        tasks.spawn(async move {
            let name = kit.participant().to_string();
            let r = participant(i, kit, workdir, shared, cancel).await;
            (name, r)
        });
    }
    let mut per_participant = Vec::with_capacity(n);
    while let Some(joined) = tasks.join_next().await {
        let (name, result) = joined.context("a participant task panicked")?;
        match result {
            Ok(obs) => per_participant.push(obs),
            Err(e) => {
                cancel.cancel();
                bail!("participant {name}: {e:#}; coordinator log: {}", log_path.display());
            }
        }
    }
    let after = ProcSample::read(pid, clk_tck).with_context(|| {
        format!(
            "reading the coordinator's /proc entry after the last round ({})",
            see_log()
        )
    })?;
    let status = get_status(status_port)
        .await
        .with_context(|| format!("reading /status; {}", see_log()))?;

    // The coordinator lingers a few seconds for late cosignatures, then exits on its own.
    let exit_by = Instant::now() + Duration::from_secs(60);
    let exit = loop {
        if let Some(s) = child.0.try_wait()? {
            break s;
        }
        ensure!(
            Instant::now() < exit_by,
            "the coordinator did not exit after the last round; {}",
            see_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    ensure!(exit.success(), "the coordinator exited with {exit}; {}", see_log());

    // Figures per round.
    let rounds = cfg.rounds as usize;
    let mut latency_ms = Vec::with_capacity(rounds);
    let mut up = Vec::with_capacity(rounds);
    let mut down = Vec::with_capacity(rounds);
    let mut completed = 0u64;
    for r in 0..rounds {
        let obs: Vec<&RoundObs> = per_participant
            .iter()
            .filter_map(|p: &Vec<RoundObs>| p.get(r))
            .collect();
        let opened = obs.iter().filter_map(|o| o.opened).min();
        let aggregated = obs
            .iter()
            .map(|o| o.aggregated)
            .collect::<Option<Vec<_>>>()
            .and_then(|v| v.into_iter().max());
        let logged = status.history.iter().find(|h| h.round == r as u64 + 1);
        let all_in = logged.is_some_and(|h| h.contributors.len() == n && h.absent.is_empty());
        if let (true, Some(o), Some(a), true) = (obs.len() == n, opened, aggregated, all_in) {
            completed += 1;
            latency_ms.push(a.duration_since(o).as_secs_f64() * 1e3);
            up.push(obs.iter().map(|o| o.up).sum::<u64>());
            down.push(obs.iter().map(|o| o.down).sum::<u64>());
        }
    }
    ensure!(
        completed == cfg.rounds,
        "only {completed} of {} rounds completed with every participant; {}",
        cfg.rounds,
        see_log()
    );
    let bytes_up = median_u64(&up);
    let bytes_down = median_u64(&down);
    let coordinator_ms: Vec<f64> = status.history.iter().map(|h| h.seconds * 1e3).collect();

    // Raw baseline: the same bytes over a plain connection, one warm-up then one transfer per round.
    let conn = raw.connect().await?;
    raw_transfer(&conn, bytes_up, bytes_down).await?;
    let mut raw_ms = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        raw_ms.push(raw_transfer(&conn, bytes_up, bytes_down).await? * 1e3);
    }
    conn.close(0u32.into(), b"done");

    let latency_ms_median = percentile(&latency_ms, 50.0);
    let raw_transfer_ms_median = percentile(&raw_ms, 50.0);
    Ok(ScaleRow {
        sweeps: Vec::new(),
        participants: n,
        rounds: cfg.rounds,
        rounds_completed: completed,
        rows_per_round: cfg.rows,
        bytes_up_per_round: bytes_up,
        bytes_down_per_round: bytes_down,
        bytes_per_round: bytes_up + bytes_down,
        latency_ms_p95: percentile(&latency_ms, 95.0),
        latency_ms,
        latency_ms_median,
        coordinator_latency_ms_median: percentile(&coordinator_ms, 50.0),
        raw_transfer_ms_median,
        latency_over_raw: latency_ms_median / raw_transfer_ms_median,
        coordinator_cpu_s_per_round: (after.cpu_s - before.cpu_s) / cfg.rounds as f64,
        coordinator_peak_rss_mib: after.hwm_kib as f64 / 1024.0,
        coordinator_rss_end_mib: after.rss_kib as f64 / 1024.0,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// One round as one participant saw it.
#[derive(Debug, Clone, Default)]
struct RoundObs {
    opened: Option<Instant>,
    aggregated: Option<Instant>,
    up: u64,
    down: u64,
}

/// A push from the coordinator, stamped when its last byte arrived.
struct Push {
    at: Instant,
    bytes: u64,
    msg: ToParticipant,
}

/// One lightweight participant: connects with its own kit and follows the protocol until the coordinator
/// says the federation finished. Any rejection or protocol error is an error (the bench requires clean runs).
async fn participant(
    index: usize,
    kit: Kit,
    workdir: PathBuf,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) -> anyhow::Result<Vec<RoundObs>> {
    std::fs::create_dir_all(&workdir).with_context(|| format!("creating {}", workdir.display()))?;
    let me = kit.participant().clone();
    let conn = connect_with_backoff(&kit, &cancel)
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the coordinator: {e}"))?;
    let mut obs: Vec<RoundObs> = Vec::new();
    // Index of the round whose traffic is being counted (the last opening seen).
    let mut current: Option<usize> = None;

    let (reply, _, _) = request(
        &conn,
        &ToCoordinator::Hello {
            version: PROTOCOL_VERSION,
            last_checkpoint_size: 0,
        },
    )
    .await?;
    match reply {
        Reply::Welcome { .. } => {}
        other => bail!("unexpected reply to hello: {other:?}"),
    }

    // Pushes arrive on coordinator-opened unidirectional streams; a reader task stamps and forwards them.
    let (tx, mut rx) = mpsc::unbounded_channel::<anyhow::Result<Push>>();
    let reader_conn = conn.clone();
    let reader = tokio::spawn(async move {
        while let Ok(mut recv) = reader_conn.accept_uni().await {
            let pushed: anyhow::Result<Push> = async {
                let frame = read_frame(&mut recv, DEFAULT_MAX_FRAME, STREAM_TIMEOUT).await?;
                let at = Instant::now();
                let d = decode_frame::<ToParticipant>(&frame, DEFAULT_MAX_FRAME)?;
                ensure!(
                    d.kind == KIND_TO_PARTICIPANT,
                    "push of unexpected frame kind {}",
                    d.kind.0
                );
                Ok(Push {
                    at,
                    bytes: frame.len() as u64,
                    msg: d.value,
                })
            }
            .await;
            if tx.send(pushed).is_err() {
                break;
            }
        }
    });

    let log = LogVerifier {
        origin: format!("fedistill/{}", shared.federation.as_str()),
        key: ed25519_dalek::VerifyingKey::from_bytes(&kit.coordinator_key.to_bytes())
            .context("the kit's coordinator key is not a valid ed25519 key")?,
    };
    let mut witness = Witness::open(
        &workdir,
        &format!("fedistill-witness/{me}"),
        kit.signing.to_dalek(),
        log,
    )?;
    let mut session = ParticipantSession::new(shared.public_digest, shared.public_len, shared.classes, RoundId(0));
    let mut replay = ReplayGuard::new(shared.federation.clone());
    let mut seq = 0u64;
    let mut sign = |round: RoundId| {
        seq += 1;
        (Signer::Participant(me.clone()), shared.federation.clone(), round, seq)
    };
    let mut last_labels: Vec<f32> = Vec::new();
    let result: anyhow::Result<()> = async {
        loop {
            let push = tokio::select! {
                _ = cancel.cancelled() => break Err(anyhow::anyhow!("cancelled")),
                p = rx.recv() => p,
            };
            let Some(push) = push else {
                break Err(anyhow::anyhow!("the connection closed before the federation finished"));
            };
            let push = push?;
            let mut checkpoint = None;
            match push.msg {
                ToParticipant::Open(s) => {
                    let round = s.round;
                    let v = s
                        .verify(&kit.coordinator_key, &Signer::Coordinator, &replay, round)
                        .with_context(|| format!("round {} opening", round.0))?;
                    let fresh = v.fresh();
                    let i = (round.0 as usize).saturating_sub(1);
                    if obs.len() <= i {
                        obs.resize(i + 1, RoundObs::default());
                    }
                    obs[i].opened = Some(push.at);
                    current = Some(i);
                    count(&mut obs, current, 0, push.bytes);
                    session
                        .handle_open(v)
                        .with_context(|| format!("round {} opening", round.0))?;
                    replay.accept(fresh);
                }
                ToParticipant::Aggregate(s) => {
                    let round = s.round;
                    let v = s
                        .verify(&kit.coordinator_key, &Signer::Coordinator, &replay, round)
                        .with_context(|| format!("round {} aggregate", round.0))?;
                    let fresh = v.fresh();
                    if let Some(o) = obs.get_mut((round.0 as usize).saturating_sub(1)) {
                        o.aggregated = Some(push.at);
                    }
                    count(&mut obs, current, 0, push.bytes);
                    checkpoint =
                        Some(SignedCheckpoint::parse(v.value().checkpoint.as_bytes()).context("aggregate checkpoint")?);
                    session
                        .handle_aggregate(v)
                        .with_context(|| format!("round {} aggregate", round.0))?;
                    replay.accept(fresh);
                }
                ToParticipant::Finished { checkpoint: note, .. } => {
                    // Traffic after the last round is not attributed to it.
                    current = None;
                    checkpoint = Some(SignedCheckpoint::parse(note.as_bytes()).context("final checkpoint")?);
                    session.handle_finished();
                }
            }
            // As the real participant: witness the checkpoint (consistency proof, cosignature) first.
            if let Some(sc) = checkpoint {
                let (up, down) = cosign(&conn, &mut witness, &sc)
                    .await
                    .context("witnessing the log checkpoint")?;
                count(&mut obs, current, up, down);
            }
            let mut finished = false;
            while let Some(out) = session.poll_output() {
                match out {
                    ParticipantOutput::ComputeSoftLabels { round, sample_ids, .. } => {
                        let classes = shared.classes as usize;
                        last_labels = synthetic_labels(index, &sample_ids, classes);
                        let body = SoftLabels {
                            round,
                            public_digest: shared.public_digest,
                            sample_ids_digest: fedistill_shared::wire::messages::sample_ids_digest(&sample_ids),
                            encoding: Encoding::F32,
                            rows: sample_ids.len() as u32,
                            classes: classes as u32,
                            samples: CLAIMED_SAMPLES,
                            payload: softlabels::encode(&last_labels, sample_ids.len(), classes, Encoding::F32)?,
                        };
                        let (signer, fed, r, s) = sign(round);
                        let signed = Signed::sign(&kit.signing, signer, fed, r, s, &body)?;
                        let (reply, up, down) = request(&conn, &ToCoordinator::SoftLabels(signed)).await?;
                        count(&mut obs, current, up, down);
                        expect_ack(reply, "soft labels", round)?;
                        session.handle_labels_sent(round);
                    }
                    ParticipantOutput::Distill {
                        round, probabilities, ..
                    } => {
                        // No student: report how often the consensus agrees with this participant's own labels.
                        let classes = shared.classes as usize;
                        let agree = probabilities
                            .chunks_exact(classes)
                            .zip(last_labels.chunks_exact(classes))
                            .filter(|(a, b)| argmax(a) == argmax(b))
                            .count();
                        let rows = (probabilities.len() / classes.max(1)).max(1);
                        let bytes: Vec<u8> = probabilities.iter().flat_map(|p| p.to_le_bytes()).collect();
                        session.handle_distilled(RoundReport {
                            round,
                            metrics: vec![("accuracy".into(), agree as f64 / rows as f64)],
                            student_digest: Digest::of(&bytes),
                            guard_accepted: true,
                            guard_reason: "synthetic participant (bench scale): no student".into(),
                        });
                    }
                    ParticipantOutput::SendReport(report) => {
                        let round = report.round;
                        let (signer, fed, r, s) = sign(round);
                        let signed = Signed::sign(&kit.signing, signer, fed, r, s, &report)?;
                        let (reply, up, down) = request(&conn, &ToCoordinator::Report(signed)).await?;
                        count(&mut obs, current, up, down);
                        expect_ack(reply, "report", round)?;
                    }
                    ParticipantOutput::Finished => finished = true,
                }
            }
            if finished {
                break Ok(());
            }
        }
    }
    .await;
    reader.abort();
    conn.close(0u32.into(), b"done");
    result.map(|()| obs)
}

/// Adds a participant's frame bytes to the round being counted.
fn count(obs: &mut [RoundObs], current: Option<usize>, up: u64, down: u64) {
    if let Some(o) = current.and_then(|i| obs.get_mut(i)) {
        o.up += up;
        o.down += down;
    }
}

fn expect_ack(reply: Reply, what: &str, round: RoundId) -> anyhow::Result<()> {
    match reply {
        Reply::Ack => Ok(()),
        Reply::Reject { code, message } => bail!(
            "the coordinator rejected the {what} of round {}: {code}: {message}",
            round.0
        ),
        other => bail!("unexpected reply to the {what} of round {}: {other:?}", round.0),
    }
}

/// Sends one request on a fresh bidirectional stream and reads the reply; returns it with the frame bytes
/// sent and received.
async fn request(conn: &quinn::Connection, msg: &ToCoordinator) -> anyhow::Result<(Reply, u64, u64)> {
    let frame = encode_frame(KIND_TO_COORDINATOR, msg)?;
    let (mut send, mut recv) = conn.open_bi().await.context("opening a request stream")?;
    write_frame(&mut send, &frame).await?;
    send.finish().context("finishing the request stream")?;
    let reply = read_frame(&mut recv, DEFAULT_MAX_FRAME, STREAM_TIMEOUT).await?;
    let d = decode_frame::<Reply>(&reply, DEFAULT_MAX_FRAME)?;
    ensure!(d.kind == KIND_REPLY, "unexpected frame kind {} in a reply", d.kind.0);
    Ok((d.value, frame.len() as u64, reply.len() as u64))
}

/// Checks the offered checkpoint against the last one cosigned (fetching a consistency proof when the log
/// grew) and sends the cosignature, as the participant's witness does. Returns the bytes sent and received.
async fn cosign(conn: &quinn::Connection, witness: &mut Witness, sc: &SignedCheckpoint) -> anyhow::Result<(u64, u64)> {
    let (mut up, mut down) = (0, 0);
    let old = witness.last().map(|c| c.checkpoint.size).unwrap_or(0);
    let new = sc.checkpoint.size;
    let proof = if old > 0 && new > old {
        let (reply, u, d) = request(
            conn,
            &ToCoordinator::ProofRequest {
                old_size: old,
                new_size: new,
            },
        )
        .await?;
        (up, down) = (up + u, down + d);
        match reply {
            Reply::Proof { hashes } => hashes,
            other => bail!("no consistency proof from {old} to {new}: {other:?}"),
        }
    } else {
        Vec::new()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let c = witness.handle_checkpoint(sc, &proof, now)?;
    let msg = ToCoordinator::Cosign(Cosignature {
        size: new,
        name: c.name.clone(),
        key_id: c.key_id,
        timestamp: c.timestamp,
        signature: c.signature.to_vec(),
    });
    let (reply, u, d) = request(conn, &msg).await?;
    expect_ack(reply, "cosignature", RoundId(0))?;
    Ok((up + u, down + d))
}

/// Deterministic synthetic soft labels: for each sample a probability row peaked on `sample % classes`,
/// with per-participant noise from a fixed hash of (participant, sample, class), normalised with a softmax.
fn synthetic_labels(participant: usize, sample_ids: &[u64], classes: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(sample_ids.len() * classes);
    for &s in sample_ids {
        let target = (s % classes as u64) as usize;
        let logits: Vec<f32> = (0..classes)
            .map(|c| {
                let h = splitmix64(((participant as u64) << 40) ^ (s << 8) ^ c as u64);
                let noise = (h >> 40) as f32 / (1u64 << 24) as f32;
                if c == target {
                    2.0 + noise
                } else {
                    noise
                }
            })
            .collect();
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
        let sum: f32 = exp.iter().sum();
        out.extend(exp.iter().map(|e| e / sum));
    }
    out
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |best, (i, &v)| if v > best.1 { (i, v) } else { best },
        )
        .0
}

/// Nearest-rank percentile (`p` in 0..=100) of `v`; NaN for an empty slice.
fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

fn median_u64(v: &[u64]) -> u64 {
    let mut s = v.to_vec();
    s.sort_unstable();
    s.get(s.len().saturating_sub(1) / 2).copied().unwrap_or(0)
}

/// CPU time and memory of a process from /proc.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ProcSample {
    cpu_s: f64,
    hwm_kib: u64,
    rss_kib: u64,
}

impl ProcSample {
    fn read(pid: u32, clk_tck: f64) -> anyhow::Result<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).context("reading /proc/PID/stat")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("reading /proc/PID/status")?;
        Self::parse(&stat, &status, clk_tck)
    }

    /// `stat`: utime and stime are fields 14 and 15 (proc(5)), counted after the `(comm)` field, which may
    /// itself hold spaces and parentheses. `status`: the `VmHWM:` and `VmRSS:` lines, in kB.
    fn parse(stat: &str, status: &str, clk_tck: f64) -> anyhow::Result<Self> {
        let after_comm = stat
            .rfind(')')
            .map(|i| &stat[i + 1..])
            .ok_or_else(|| anyhow::anyhow!("/proc/PID/stat has no (comm) field"))?;
        let fields: Vec<&str> = after_comm.split_whitespace().collect();
        // fields[0] is field 3 (state), so field k is fields[k - 3].
        let tick = |k: usize| -> anyhow::Result<u64> {
            fields
                .get(k - 3)
                .ok_or_else(|| anyhow::anyhow!("/proc/PID/stat has no field {k}"))?
                .parse::<u64>()
                .with_context(|| format!("/proc/PID/stat field {k}"))
        };
        let kib = |key: &str| -> anyhow::Result<u64> {
            let line = status
                .lines()
                .find(|l| l.starts_with(key))
                .ok_or_else(|| anyhow::anyhow!("/proc/PID/status has no {key} line"))?;
            line[key.len()..]
                .split_whitespace()
                .next()
                .ok_or_else(|| anyhow::anyhow!("{key} has no value"))?
                .parse::<u64>()
                .with_context(|| format!("{key} value"))
        };
        Ok(Self {
            cpu_s: (tick(14)? + tick(15)?) as f64 / clk_tck,
            hwm_kib: kib("VmHWM:")?,
            rss_kib: kib("VmRSS:")?,
        })
    }
}

/// USER_HZ, the unit of /proc/PID/stat times (`getconf CLK_TCK`; 100 on every Linux this runs on).
fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|&t| t > 0.0)
        .unwrap_or(100.0)
}

/// The parts of the coordinator's `/status` JSON the bench reads.
#[derive(Debug, Deserialize)]
struct Status {
    history: Vec<StatusRound>,
}

#[derive(Debug, Deserialize)]
struct StatusRound {
    round: u64,
    contributors: Vec<String>,
    absent: Vec<String>,
    seconds: f64,
}

/// GET /status on the coordinator's local HTTP port (HTTP/1.1, `Connection: close`).
async fn get_status(port: u16) -> anyhow::Result<Status> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .context("GET /status timed out")??;
    let text = String::from_utf8(buf).context("/status is not UTF-8")?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("/status: no HTTP body"))?;
    ensure!(
        head.starts_with("HTTP/1.1 200"),
        "/status answered {:?}",
        head.lines().next().unwrap_or("")
    );
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(body)?
    } else {
        body.to_string()
    };
    serde_json::from_str(&body).context("decoding /status")
}

fn dechunk(mut body: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body
            .split_once("\r\n")
            .ok_or_else(|| anyhow::anyhow!("bad chunked body"))?;
        let n = usize::from_str_radix(size.trim(), 16).context("bad chunk size")?;
        if n == 0 {
            return Ok(out);
        }
        ensure!(rest.len() >= n + 2, "truncated chunk");
        out.push_str(
            rest.get(..n)
                .ok_or_else(|| anyhow::anyhow!("chunk splits a character"))?,
        );
        body = &rest[n + 2..];
    }
}

fn free_udp_port() -> anyhow::Result<u16> {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").context("finding a free UDP port")?;
    Ok(s.local_addr()?.port())
}

fn free_tcp_port() -> anyhow::Result<u16> {
    let s = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free TCP port")?;
    Ok(s.local_addr()?.port())
}

/// The raw-transfer baseline: a plain quinn server on loopback with only a server certificate (no client
/// authentication, roster, signatures or framing). A request is an 8-byte little-endian count D followed by
/// the upload bytes; the server reads the whole upload, then answers with D bytes.
struct RawServer {
    endpoint: quinn::Endpoint,
    ca_pem: String,
    tuning: QuicTuning,
}

/// Largest download the baseline server sends (far above any configuration here).
const RAW_MAX: usize = 1 << 30;

impl RawServer {
    async fn start() -> anyhow::Result<Self> {
        let now = provision::now_utc();
        let (ca_cert, ca_key) = pki::create_ca("plain", now)?;
        let ca = Ca::from_pem(&ca_cert.pem, &ca_key, "plain")?;
        let key = pki::generate_tls_key()?;
        let cert = ca.issue_server(&["127.0.0.1".to_string()], &key, now)?;
        let tuning = QuicTuning::default();
        let cfg = tls::quic_server_config(
            tls::dangerous::server_config_no_client_auth(cert.pem.as_bytes(), key.serialize_pem().as_bytes())?,
            &tuning,
        )?;
        let endpoint = quinn::Endpoint::server(cfg, std::net::SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let server = endpoint.clone();
        tokio::spawn(async move {
            while let Some(incoming) = server.accept().await {
                let Ok(conn) = incoming.await else { continue };
                tokio::spawn(async move {
                    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                        let Ok(req) = recv.read_to_end(RAW_MAX + 8).await else {
                            continue;
                        };
                        let Some(d) = req.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()) else {
                            continue;
                        };
                        let d = (u64::from_le_bytes(d) as usize).min(RAW_MAX);
                        let _ = send.write_all(&vec![0x5a; d]).await;
                        let _ = send.finish();
                    }
                });
            }
        });
        Ok(Self {
            endpoint,
            ca_pem: ca_cert.pem,
            tuning,
        })
    }

    async fn connect(&self) -> anyhow::Result<quinn::Connection> {
        let cfg = tls::quic_client_config(
            tls::dangerous::client_config_no_client_auth(self.ca_pem.as_bytes())?,
            &self.tuning,
        )?;
        let mut ep = quinn::Endpoint::client(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))?;
        ep.set_default_client_config(cfg);
        Ok(ep.connect(self.endpoint.local_addr()?, "127.0.0.1")?.await?)
    }

    fn close(&self) {
        self.endpoint.close(0u32.into(), b"done");
    }
}

/// Moves `up` bytes to the baseline server and `down` bytes back on one new stream; returns seconds.
async fn raw_transfer(conn: &quinn::Connection, up: u64, down: u64) -> anyhow::Result<f64> {
    let mut upload = Vec::with_capacity(8 + up as usize);
    upload.extend_from_slice(&down.to_le_bytes());
    upload.resize(8 + up as usize, 0xa5);
    let start = Instant::now();
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(&upload).await?;
    send.finish()?;
    let got = recv
        .read_to_end(RAW_MAX)
        .await
        .context("reading the baseline download")?;
    let seconds = start.elapsed().as_secs_f64();
    ensure!(
        got.len() as u64 == down,
        "baseline download of {} bytes, expected {down}",
        got.len()
    );
    Ok(seconds)
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
                format!("{:.1}", x.latency_over_raw),
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
            "p50 / raw",
            "coordinator CPU s/round",
            "peak RSS MiB",
            "RSS after MiB",
        ],
        &rows,
    );
    format!(
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
fn docs_section(args: &BenchScaleArgs, r: &ScaleReport, md: &str) -> String {
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
    let mut plots = String::new();
    if r.rows.iter().any(|x| x.sweeps.iter().any(|s| s == "participants")) {
        plots.push_str("![Round latency vs participants](img/bench-scale/latency_vs_participants.svg)\n");
    }
    if r.rows.iter().any(|x| x.sweeps.iter().any(|s| s == "payload")) {
        plots.push_str("![Round latency vs bytes per round](img/bench-scale/latency_vs_payload.svg)\n");
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
    fn proc_stat_and_status_parse() {
        // A real /proc/PID/stat line shape with a comm holding a space and a parenthesis (proc(5)); fields
        // 14 and 15 are 250 and 50 ticks, so 3.0 s at 100 ticks/s.
        let stat = "4242 (fedi stil)l) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 50 0 0 20 0 9 0 100 200000000 3000";
        let status = "Name:\tfedistill\nVmPeak:\t  300000 kB\nVmHWM:\t   51200 kB\nVmRSS:\t   40960 kB\n";
        let s = ProcSample::parse(stat, status, 100.0).expect("parse");
        assert_eq!(
            s,
            ProcSample {
                cpu_s: 3.0,
                hwm_kib: 51200,
                rss_kib: 40960
            }
        );
        let e = ProcSample::parse("4242 (x) S 1 2", status, 100.0).expect_err("short stat");
        assert!(format!("{e:#}").contains("no field 14"), "{e:#}");
        let e = ProcSample::parse(stat, "Name:\tx\n", 100.0).expect_err("no VmHWM");
        assert!(format!("{e:#}").contains("no VmHWM: line"), "{e:#}");
        // The live process: this test's own entry parses and shows some memory.
        let me = ProcSample::read(std::process::id(), clock_ticks_per_second()).expect("own /proc");
        assert!(me.hwm_kib >= me.rss_kib && me.rss_kib > 0, "{me:?}");
    }

    #[test]
    fn synthetic_labels_are_deterministic_distributions() {
        let ids = [0u64, 7, 13, 8999];
        let a = synthetic_labels(3, &ids, 10);
        assert_eq!(a, synthetic_labels(3, &ids, 10));
        assert_ne!(a, synthetic_labels(4, &ids, 10), "participants differ");
        for (row, &id) in a.chunks_exact(10).zip(&ids) {
            let sum: f32 = row.iter().sum();
            assert!((sum - 1.0).abs() < 1e-5, "{sum}");
            // The peak (logit 2 + noise in [0, 1)) beats every other class (noise in [0, 1)).
            assert_eq!(argmax(row), (id % 10) as usize);
        }
        // The protocol's own validator accepts them.
        softlabels::encode(&a, ids.len(), 10, Encoding::F32).expect("valid soft labels");
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        // Nearest rank: ceil(p/100 * n)-th smallest; for n = 20, p50 -> 10th, p95 -> 19th, p100 -> 20th.
        assert_eq!(percentile(&v, 50.0), 10.0);
        assert_eq!(percentile(&v, 95.0), 19.0);
        assert_eq!(percentile(&v, 100.0), 20.0);
        assert_eq!(percentile(&[5.0], 95.0), 5.0);
        assert!(percentile(&[], 50.0).is_nan());
        assert_eq!(median_u64(&[9, 1, 5, 3]), 3);
        assert_eq!(median_u64(&[]), 0);
    }

    #[test]
    fn plan_merges_shared_configs_and_refuses_bad_sizes() {
        let args = |quick: bool| BenchScaleArgs {
            quick,
            participants: None,
            rows: None,
            rounds: None,
            report: None,
            docs: None,
            workdir: None,
        };
        let full = Plan::from_args(&args(false)).expect("full");
        let configs = full.configs();
        // 4 participant counts at 1000 rows + 3 payload sizes at 10 participants, (10, 1000) shared.
        assert_eq!(configs.len(), 6);
        assert_eq!(configs[1], (10, 1000, vec!["participants", "payload"]));
        let quick = Plan::from_args(&args(true)).expect("quick");
        assert_eq!(quick.rounds, 3);
        assert_eq!(
            quick.configs(),
            vec![
                (3, 100, vec!["participants", "payload"]),
                (10, 100, vec!["participants"]),
                (3, 1000, vec!["payload"])
            ]
        );
        let bad = |f: &dyn Fn(&mut BenchScaleArgs)| {
            let mut a = args(true);
            f(&mut a);
            format!("{:#}", Plan::from_args(&a).expect_err("bad plan"))
        };
        assert!(bad(&|a| a.rows = Some(vec![10_000])).contains("between 1 and 9000"));
        assert!(bad(&|a| a.participants = Some(vec![0])).contains("between 1 and 1000"));
        assert!(bad(&|a| a.rounds = Some(0)).contains("at least 1"));
        assert!(bad(&|a| {
            a.participants = Some(vec![]);
            a.rows = Some(vec![]);
        })
        .contains("nothing to measure"));
    }

    #[test]
    fn chunked_bodies_decode() {
        assert_eq!(
            dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n").expect("chunked"),
            "hello world"
        );
        assert!(dechunk("5\r\nhel").is_err());
    }
}
