//! One configuration of `fedistill bench scale`: the real coordinator as a child process, and one tokio task
//! per participant with its own kit and mTLS connection speaking the protocol through the sans-IO
//! [`ParticipantSession`], with deterministic synthetic soft labels instead of a model.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use fedistill_participant::transport::{connect_with_backoff, Kit};
use fedistill_participant::witness::Witness;
use fedistill_shared::crypto::{Digest, ReplayGuard, RoundId, Signed, Signer};
use fedistill_shared::ledger::{LogVerifier, SignedCheckpoint};
use fedistill_shared::protocol::{softlabels, Encoding, ParticipantOutput, ParticipantSession};
use fedistill_shared::settings::DataSettings;
use fedistill_shared::wire::messages::{
    Reply, RoundReport, ToCoordinator, ToParticipant, KIND_REPLY, KIND_TO_COORDINATOR, KIND_TO_PARTICIPANT,
    PROTOCOL_VERSION,
};
use fedistill_shared::wire::{decode_frame, encode_frame, read_frame, write_frame, DEFAULT_MAX_FRAME};

use super::probe::{clock_ticks_per_second, free_tcp_port, get_status, raw_transfer, ProcSample, RawServer};
use super::{ScaleRow, Shared, CLAIMED_SAMPLES, RULE, STREAM_TIMEOUT};

pub(super) struct RunConfig {
    pub(super) participants: usize,
    pub(super) rows: u64,
    pub(super) rounds: u64,
    pub(super) port: u16,
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
    pub(super) data: DataSettings,
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
    aggregated: Arc<AtomicU64>,
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
                    if index == 0 {
                        aggregated.fetch_max(round.0, Ordering::Relaxed);
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
                        let body = softlabels::soft_labels_message(
                            round,
                            shared.public_digest,
                            &sample_ids,
                            &last_labels,
                            classes,
                            Encoding::F32,
                            CLAIMED_SAMPLES,
                        )?;
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
                            privacy_spend: None,
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
    let new = sc.checkpoint.size;
    let proof = match witness.proof_request(new) {
        Some(req) => {
            let (reply, u, d) = request(conn, &req).await?;
            (up, down) = (up + u, down + d);
            match reply {
                Reply::Proof { hashes } => hashes,
                other => bail!("no consistency proof up to {new}: {other:?}"),
            }
        }
        None => Vec::new(),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let c = witness.handle_checkpoint(sc, &proof, now)?;
    let msg = fedistill_participant::witness::cosign_message(new, &c);
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
