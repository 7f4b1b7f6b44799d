//! One configuration of `fedistill bench scale`: the real coordinator as a child process, and one tokio task
//! per participant running the real participant driver and round lifecycle with its own kit and mTLS
//! connection, with a [`SyntheticLearner`] (deterministic soft labels) instead of a model. A secure
//! configuration is the same with `secure_aggregation = true` in the coordinator's config: the participants'
//! drivers then run the secure round's extra steps themselves.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use fedistill_participant::driver::{Driver, DriverOptions, NodeEvent, PushKind};
use fedistill_participant::lifecycle::RoundLifecycle;
use fedistill_participant::service::open_witness;
use fedistill_participant::transport::Kit;
use fedistill_shared::protocol::Encoding;
use fedistill_shared::wire::DEFAULT_MAX_FRAME;

use super::learner::SyntheticLearner;
use super::probe::{
    clock_ticks_per_second, free_tcp_port, get_status, raw_transfer, sqlite_commit_ms, ProcSample, RawServer,
};
use super::{ScaleRow, SecureParams, SecurePhases, Shared, RULE};

pub(super) struct RunConfig {
    pub(super) participants: usize,
    pub(super) rows: u64,
    pub(super) rounds: u64,
    pub(super) port: u16,
    /// Secure aggregation (`secure_aggregation = true` with these parameters), or `None` in the clear.
    pub(super) secure: Option<SecureParams>,
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
pub(super) struct Env {
    pub(super) exe: PathBuf,
    pub(super) dir: PathBuf,
    pub(super) fed_dir: PathBuf,
    pub(super) shared: Arc<Shared>,
    pub(super) raw: RawServer,
    /// The task card the coordinator runs from, and the public file it serves.
    pub(super) card: PathBuf,
    pub(super) public: PathBuf,
}

/// Runs one configuration; `on_round` is told the number of rounds aggregated so far (as the first participant
/// saw them) while the rounds run, for the suite's progress.
pub(super) async fn run_config(
    env: &Env,
    kits: &[Kit],
    cfg: &RunConfig,
    on_round: &(dyn Fn(u64) + Sync),
) -> anyhow::Result<ScaleRow> {
    let Env {
        exe,
        dir,
        fed_dir,
        shared,
        raw,
        card,
        public,
    } = env;
    let started = Instant::now();
    let n = cfg.participants;
    let run_dir = dir.join(match cfg.secure {
        Some(_) => format!("run-{n}x{}-secure", cfg.rows),
        None => format!("run-{n}x{}", cfg.rows),
    });
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    let status_port = free_tcp_port()?;
    let config_path = run_dir.join("coordinator.toml");
    // Generous windows: every round must aggregate because everyone contributed, never by deadline.
    // Top-level keys must precede the [task] table.
    let secure = match cfg.secure {
        Some(p) => format!(
            "secure_aggregation = true\nsecagg_threshold = {}\nsecagg_neighbours = {}\n",
            p.threshold, p.neighbours
        ),
        None => String::new(),
    };
    let config = format!(
        "federation_dir = {fed:?}\nbind = \"127.0.0.1:{port}\"\nstore = \"coordinator.sqlite\"\nstatus = \"127.0.0.1:{status_port}\"\nrounds = {rounds}\nmin_participants = {n}\nquorum = {n}\ncollect_timeout_ms = 600000\nreport_timeout_ms = 600000\nsamples_per_round = {rows}\nrule = {RULE:?}\ntemperature = 2.0\n{secure}\n[task]\ncard = {card:?}\npublic = {public:?}\n",
        fed = fed_dir.display().to_string(),
        port = cfg.port,
        rounds = cfg.rounds,
        rows = cfg.rows,
        card = card.display().to_string(),
        public = public.display().to_string(),
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
    let aggregated = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, kit) in kits.iter().take(n).enumerate() {
        let kit = kit.clone();
        let shared = shared.clone();
        let workdir = run_dir.join("work").join(format!("p{i}"));
        let cancel = cancel.clone();
        let aggregated = aggregated.clone();
        tasks.spawn(async move {
            let name = kit.participant().to_string();
            let r = participant(i, kit, workdir, shared, cancel, aggregated).await;
            (name, r)
        });
    }
    let mut per_participant = Vec::with_capacity(n);
    let mut shown = 0u64;
    loop {
        let joined = tokio::select! {
            j = tasks.join_next() => j,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                let now = aggregated.load(Ordering::Relaxed);
                if now > shown {
                    shown = now;
                    on_round(now);
                }
                continue;
            }
        };
        let Some(joined) = joined else { break };
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
    let mut phases: Vec<SecurePhases> = Vec::with_capacity(rounds);
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
            if cfg.secure.is_some() {
                phases.push(secure_phases(&obs, o, a).with_context(|| {
                    format!(
                        "round {}: a participant missed a secure round's push; {}",
                        r + 1,
                        see_log()
                    )
                })?);
            }
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
    let coordinator_commit_ms: Vec<f64> = status
        .history
        .iter()
        .filter_map(|h| h.phases.get("commit").map(|s| s * 1e3))
        .collect();

    // Raw baseline: the same bytes over a plain connection, one warm-up then one transfer per round.
    let conn = raw.connect().await?;
    raw_transfer(&conn, bytes_up, bytes_down).await?;
    let mut raw_ms = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        raw_ms.push(raw_transfer(&conn, bytes_up, bytes_down).await? * 1e3);
    }
    conn.close(0u32.into(), b"done");

    // Commit baseline: the round's soft labels (the signed payloads the coordinator counted, split evenly
    // over the participants) written in one plain durable SQLite transaction, on the store's disk.
    let payload_bytes: Vec<u64> = status.history.iter().map(|h| h.bytes_up).collect();
    let blob = median_u64(&payload_bytes) as usize / n.max(1);
    let commit_ms = tokio::task::block_in_place(|| sqlite_commit_ms(&run_dir, n, blob, rounds))
        .context("timing the plain SQLite commit")?;

    let latency_ms_median = percentile(&latency_ms, 50.0);
    let coordinator_latency_ms_median = percentile(&coordinator_ms, 50.0);
    let raw_transfer_ms_median = percentile(&raw_ms, 50.0);
    let commit_ms_median = percentile(&commit_ms, 50.0);
    let median = |f: fn(&SecurePhases) -> f64| percentile(&phases.iter().map(f).collect::<Vec<_>>(), 50.0);
    let secure_phases_ms = cfg.secure.map(|_| SecurePhases {
        keys_ms: median(|p| p.keys_ms),
        shares_ms: median(|p| p.shares_ms),
        masked_ms: median(|p| p.masked_ms),
        unmask_ms: median(|p| p.unmask_ms),
    });
    Ok(ScaleRow {
        sweeps: Vec::new(),
        secure: cfg.secure.is_some(),
        secure_phases_ms,
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
        coordinator_latency_ms_median,
        coordinator_over_raw_plus_commit: coordinator_latency_ms_median / (raw_transfer_ms_median + commit_ms_median),
        raw_transfer_ms_median,
        latency_over_raw: latency_ms_median / raw_transfer_ms_median,
        commit_ms_median,
        latency_over_raw_plus_commit: latency_ms_median / (raw_transfer_ms_median + commit_ms_median),
        coordinator_commit_ms_median: percentile(&coordinator_commit_ms, 50.0),
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
    /// A secure round's pushes in arrival order: the key adverts, the relayed shares, the unmasking request.
    secure: Vec<Instant>,
    up: u64,
    down: u64,
}

/// Pushes of a secure round between its opening and its aggregate.
const SECURE_PUSHES: usize = 3;

/// A secure round's phases from every participant's view of it (`opened`: the first opening, `aggregated`:
/// the last aggregate): each ends when the last participant holds the next push. `None` if a participant
/// did not see all three secure pushes.
fn secure_phases(obs: &[&RoundObs], opened: Instant, aggregated: Instant) -> Option<SecurePhases> {
    let mut last = [opened; SECURE_PUSHES];
    for o in obs {
        if o.secure.len() != SECURE_PUSHES {
            return None;
        }
        for (l, &at) in last.iter_mut().zip(&o.secure) {
            *l = (*l).max(at);
        }
    }
    let ms = |from: Instant, to: Instant| to.saturating_duration_since(from).as_secs_f64() * 1e3;
    Some(SecurePhases {
        keys_ms: ms(opened, last[0]),
        shares_ms: ms(last[0], last[1]),
        masked_ms: ms(last[1], last[2]),
        unmask_ms: ms(last[2], aggregated),
    })
}

/// One participant node: the real participant driver and round lifecycle with its own kit, work directory
/// and mTLS connection, around a [`SyntheticLearner`] instead of a model. What the driver saw (pushes,
/// exchanges) times the rounds and counts their bytes. Any refusal, either way, is an error (the bench
/// requires clean runs).
async fn participant(
    index: usize,
    kit: Kit,
    workdir: PathBuf,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    aggregated: Arc<AtomicU64>,
) -> anyhow::Result<Vec<RoundObs>> {
    std::fs::create_dir_all(&workdir).with_context(|| format!("creating {}", workdir.display()))?;
    let learner = SyntheticLearner::new(index, shared.public_digest, shared.public_len, shared.classes as usize);
    let lifecycle = RoundLifecycle::open(learner, &workdir, Encoding::F32, None, None)?;
    let witness = open_witness(&kit, &workdir)?;
    let (tx, mut rx) = mpsc::unbounded_channel::<NodeEvent>();
    let opts = DriverOptions {
        max_frame_bytes: DEFAULT_MAX_FRAME,
        task: None,
    };
    let driver = Driver::new(kit, lifecycle, witness, &opts, Some(tx));
    let watch = async {
        let mut obs: Vec<RoundObs> = Vec::new();
        let mut refused: Vec<String> = Vec::new();
        // Index of the round whose traffic is being counted (the last opening seen).
        let mut current: Option<usize> = None;
        while let Some(event) = rx.recv().await {
            match event {
                NodeEvent::Pushed { kind, round, at, bytes } => {
                    let i = round.map(|r| (r.0 as usize).saturating_sub(1));
                    match (kind, i) {
                        (PushKind::Open, Some(i)) => {
                            if obs.len() <= i {
                                obs.resize(i + 1, RoundObs::default());
                            }
                            obs[i].opened = Some(at);
                            current = Some(i);
                        }
                        (PushKind::Aggregate, Some(i)) => {
                            if let Some(o) = obs.get_mut(i) {
                                o.aggregated = Some(at);
                            }
                            if index == 0 {
                                aggregated.fetch_max(i as u64 + 1, Ordering::Relaxed);
                            }
                        }
                        // A secure round's relayed adverts, shares and unmasking request, and what the
                        // participant sends in answer, are that round's traffic.
                        (PushKind::SecAgg, Some(i)) => match obs.get_mut(i) {
                            Some(o) => {
                                o.secure.push(at);
                                current = Some(i);
                            }
                            None => current = None,
                        },
                        // Traffic after the last round is not attributed to it.
                        _ => current = None,
                    }
                    count(&mut obs, current, 0, bytes);
                }
                NodeEvent::Exchanged { up, down } => count(&mut obs, current, up, down),
                NodeEvent::Refused { what } => refused.push(what),
            }
        }
        (obs, refused)
    };
    let (ran, (obs, refused)) = tokio::join!(driver.run(&cancel), watch);
    ran?;
    if !refused.is_empty() {
        bail!("refused: {}", refused.join("; "));
    }
    Ok(obs)
}

/// Adds a participant's frame bytes to the round being counted.
fn count(obs: &mut [RoundObs], current: Option<usize>, up: u64, down: u64) {
    if let Some(o) = current.and_then(|i| obs.get_mut(i)) {
        o.up += up;
        o.down += down;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn secure_phases_end_when_the_last_participant_holds_each_push() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let node = |pushes: &[u64]| RoundObs {
            opened: Some(at(0)),
            aggregated: Some(at(100)),
            secure: pushes.iter().map(|&ms| at(ms)).collect(),
            ..RoundObs::default()
        };
        let (a, b) = (node(&[10, 30, 60]), node(&[20, 25, 70]));
        let p = secure_phases(&[&a, &b], at(0), at(100)).expect("phases");
        assert_eq!(
            (p.keys_ms, p.shares_ms, p.masked_ms, p.unmask_ms),
            (20.0, 10.0, 40.0, 30.0)
        );
        assert_eq!(p.keys_ms + p.shares_ms + p.masked_ms + p.unmask_ms, 100.0);
        // A participant that missed a push (or a round in the clear) has no secure phases.
        assert_eq!(secure_phases(&[&a, &node(&[10, 30])], at(0), at(100)), None);
    }
}
