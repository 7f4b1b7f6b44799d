//! Helpers shared by the end-to-end tests that run real `fedistill` processes (`federation`,
//! `budget_abstain`, `quarantine_release`): free local ports, a minimal HTTP client for the coordinator's
//! `/status` and `/metrics`, provisioning a federation and the auditor's trust file into a test directory,
//! running `fedistill` to completion and auditing its update log, [`Procs`] (the temporary directory and
//! the long-running processes of one test, each logging to `logs/<name>.log`, polled under a deadline,
//! killed on drop), and the pieces of a hand-driven participant (a real kit, the real protocol).
//! Each test binary declares `mod common;` and uses only part of it, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use fedistill_participant::transport::{connect, ConnectOptions, Kit};
use fedistill_shared::crypto::{FederationId, ParticipantId, ReplayGuard, RoundId, Signed, SignedMessage, Signer};
use fedistill_shared::protocol::{softlabels, Encoding};
use fedistill_shared::provision::FederationLayout;
use fedistill_shared::wire::messages::{
    RejectCode, Reply, RoundOpen, SoftLabels, ToCoordinator, ToParticipant, KIND_REPLY, KIND_TO_COORDINATOR,
    KIND_TO_PARTICIPANT, PROTOCOL_VERSION,
};
use fedistill_transport::{recv_message, send_message, write_frame};

/// The binary under test.
pub const EXE: &str = env!("CARGO_BIN_EXE_fedistill");
/// Classes of the `digits` dataset the end-to-end tests federate on.
pub const CLASSES: usize = 10;
/// Interval between two polls of a wait.
const POLL: Duration = Duration::from_millis(25);

/// A UDP port on 127.0.0.1 that was free a moment ago (for the coordinator's QUIC endpoint).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("free udp port")
        .port()
}

/// A TCP port on 127.0.0.1 that was free a moment ago (for the coordinator's status server).
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("free tcp port")
        .port()
}

/// A minimal HTTP/1.0 GET (the server closes the connection after the response); `None` unless 200.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    let code = head.lines().next()?.split_whitespace().nth(1)?;
    (code == "200").then(|| body.to_string())
}

/// The coordinator's status server (`status = "<addr>"` in `coordinator.toml`).
#[derive(Clone, Copy, Debug)]
pub struct StatusServer(pub SocketAddr);

/// The address, as `coordinator.toml` takes it.
impl std::fmt::Display for StatusServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl StatusServer {
    /// On 127.0.0.1, at a free TCP port.
    pub fn on_free_port() -> StatusServer {
        StatusServer(SocketAddr::from(([127, 0, 0, 1], free_tcp_port())))
    }

    /// `/status` as JSON; `None` while it is not served.
    pub fn status(self) -> Option<Value> {
        serde_json::from_str(&http_get(self.0, "/status")?).ok()
    }

    /// `/metrics` (Prometheus text); `None` while it is not served.
    pub fn metrics(self) -> Option<String> {
        http_get(self.0, "/metrics")
    }

    /// `/status` once it says `finished` (the coordinator lingers a few seconds after the last round).
    pub fn finished(self) -> Option<Value> {
        self.status().filter(|s| s["finished"] == Value::Bool(true))
    }
}

/// The strings of a JSON array (empty when `v` is not an array).
pub fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// Runs `fedistill` to completion in `dir`: (success, stdout + stderr).
pub fn fedistill(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(EXE).args(args).current_dir(dir).output().expect("runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Exports the coordinator's update log (`<dir>/coordinator.sqlite`) with payloads to `<dir>/bundle`,
/// asserts that `fedistill audit verify` accepts it against `<dir>/trust.toml`, and returns what
/// `fedistill audit show bundle` prints.
pub fn audit_export_verify_show(dir: &Path) -> String {
    let (ok, out) = fedistill(
        dir,
        &[
            "audit",
            "export",
            "--store",
            "coordinator.sqlite",
            "--out",
            "bundle",
            "--payloads",
        ],
    );
    assert!(ok, "{out}");
    let (ok, out) = fedistill(dir, &["audit", "verify", "bundle", "--trust", "trust.toml"]);
    assert!(ok && out.contains("OK"), "audit verify: {out}");
    let (ok, show) = fedistill(dir, &["audit", "show", "bundle"]);
    assert!(ok, "{show}");
    show
}

/// Provisions federation `name` in `<dir>/federation` (coordinator on 127.0.0.1:`port`, UDP) with a kit
/// per participant under `federation/kits/<participant>`.
pub fn provision(dir: &Path, name: &str, port: u16, participants: &[&str]) -> FederationId {
    let fed_dir = dir.join("federation");
    let federation = FederationId::new(name).expect("name");
    let now = fedistill_shared::provision::now_utc();
    fedistill_shared::provision::init(
        &fed_dir,
        &federation,
        &[format!("127.0.0.1:{port}")],
        Some(SocketAddr::from(([127, 0, 0, 1], port))),
        now,
    )
    .expect("provision init");
    for n in participants {
        fedistill_shared::provision::add_participant(&fed_dir, &ParticipantId::new(*n), now).expect("add participant");
    }
    federation
}

/// Writes `<dir>/participant-<name>.toml`: kit `federation/kits/<name>`, work directory `work/<name>`, data
/// shard `shard`, f16 soft labels, an MLP teacher with hidden widths `teacher` trained for `epochs` epochs
/// (batch 64, no early stopping), the small MLP student (hidden 16, 2 distillation epochs per round), then
/// `tables` (the `[data]` table and any other the test needs).
pub fn write_participant_config(dir: &Path, name: &str, shard: usize, teacher: &[usize], epochs: usize, tables: &str) {
    let widths = teacher.iter().map(|w| w.to_string()).collect::<Vec<_>>().join(", ");
    std::fs::write(
        dir.join(format!("participant-{name}.toml")),
        format!(
            "kit = \"federation/kits/{name}\"\nworkdir = \"work/{name}\"\nshard = {shard}\nencoding = \"f16\"\n\
             [teacher]\nkind = \"mlp\"\nhidden = [{widths}]\n[student]\nkind = \"mlp\"\nhidden = [16]\n\
             [train]\nepochs = {epochs}\nbatch_size = 64\npatience = 0\n[distill]\nepochs_per_round = 2\n{tables}"
        ),
    )
    .expect("write participant config");
}

/// Writes `<dir>/trust.toml`, the auditor's trust file as `fedistill demo` writes it: origin
/// `fedistill/<federation>`, the coordinator's log key and the given participants as witnesses, 2 needed.
pub fn write_trust(dir: &Path, federation: &FederationId, witnesses: &[&str]) {
    let layout = FederationLayout::new(dir.join("federation"));
    let coordinator_pub = std::fs::read_to_string(layout.coordinator_signing_pub()).expect("coordinator key");
    let coordinator = fedistill_shared::crypto::PublicKey::from_pem(&coordinator_pub).expect("pem");
    let roster = layout.load_roster(federation).expect("roster");
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let mut trust = format!(
        "origin = \"fedistill/{federation}\"\ncoordinator_key = \"{}\"\nquorum = 2\n",
        hex(&coordinator.to_bytes())
    );
    for n in witnesses {
        let entry = roster.by_id(&ParticipantId::new(*n)).expect("in the roster");
        trust.push_str(&format!(
            "[[witness]]\nname = \"fedistill-witness/{n}\"\nkey = \"{}\"\n",
            hex(&entry.signing_key.to_bytes())
        ));
    }
    std::fs::write(dir.join("trust.toml"), trust).expect("write trust");
}

/// A test's temporary directory (with `logs/`) and the processes it started there, by name. Dropping it
/// kills what still runs; with `FEDISTILL_KEEP_TEST_DIRS` set it keeps the directory.
pub struct Procs {
    tmp: tempfile::TempDir,
    children: BTreeMap<String, Child>,
    started: Instant,
}

impl Drop for Procs {
    fn drop(&mut self) {
        if std::env::var_os("FEDISTILL_KEEP_TEST_DIRS").is_some() {
            eprintln!("keeping {}", self.tmp.path().display());
            self.tmp.disable_cleanup(true);
        }
        for c in self.children.values_mut() {
            if let Ok(None) = c.try_wait() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

impl Procs {
    /// A fresh temporary directory with an empty `logs/`, no process yet.
    pub fn new() -> Procs {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(tmp.path().join("logs")).expect("logs dir");
        Procs {
            tmp,
            children: BTreeMap::new(),
            started: Instant::now(),
        }
    }

    /// The test's directory; every process runs there.
    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.dir().join("logs").join(format!("{name}.log"))
    }

    /// Starts `fedistill <args>` as `name` (not already running), stdout and stderr appended to its log.
    pub fn spawn(&mut self, name: &str, args: &[&str]) {
        self.spawn_with_env(name, args, &[]);
    }

    /// [`Procs::spawn`] with extra environment variables.
    pub fn spawn_with_env(&mut self, name: &str, args: &[&str], env: &[(&str, &str)]) {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(name))
            .expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(EXE)
            .args(args)
            .current_dir(self.dir())
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn fedistill");
        assert!(
            self.children.insert(name.to_string(), child).is_none(),
            "{name} already running"
        );
    }

    /// Starts the coordinator as `coordinator` with `coordinator.toml`.
    pub fn start_coordinator(&mut self) {
        self.spawn("coordinator", &["coordinator", "--config", "coordinator.toml"]);
    }

    /// Starts participant `name` with `participant-<name>.toml`.
    pub fn start_participant(&mut self, name: &str) {
        let cfg = format!("participant-{name}.toml");
        self.spawn(name, &["participant", "--config", &cfg]);
    }

    /// SIGKILL (`Child::kill` on Unix), then reap; the process is no longer tracked.
    pub fn kill(&mut self, name: &str) {
        let mut c = self.children.remove(name).expect("process to kill");
        c.kill().expect("SIGKILL");
        let _ = c.wait();
    }

    /// Waits until `name` exits on its own (whatever its status), stops tracking it and returns the status;
    /// panics with the logs once `deadline` passed.
    pub fn wait_exit(&mut self, name: &str, deadline: Instant) -> std::process::ExitStatus {
        loop {
            let c = self.children.get_mut(name).expect("a tracked process");
            if let Ok(Some(st)) = c.try_wait() {
                self.children.remove(name);
                return st;
            }
            assert!(Instant::now() < deadline, "{name} did not exit{}", self.logs());
            std::thread::sleep(POLL);
        }
    }

    /// The OS process id of running process `name`.
    pub fn pid(&self, name: &str) -> u32 {
        self.children.get(name).expect("a running process").id()
    }

    /// The whole log of `name` (empty when it has none).
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.log_path(name)).unwrap_or_default()
    }

    /// The last 30 lines of every log (also of processes killed meanwhile), for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        if let Ok(rd) = std::fs::read_dir(self.dir().join("logs")) {
            let mut paths: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
            paths.sort();
            for p in paths {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(30)..].join("\n");
                out.push_str(&format!("\n----- {} -----\n{tail}\n", p.display()));
            }
        }
        out
    }

    /// Panics (with the logs) if a tracked process exited unsuccessfully.
    pub fn check(&mut self) {
        let failed = self.children.iter_mut().find_map(|(name, c)| match c.try_wait() {
            Ok(Some(st)) if !st.success() => Some(format!("{name} exited with {st}")),
            _ => None,
        });
        if let Some(f) = failed {
            panic!("{f}{}", self.logs());
        }
    }

    /// Whether every tracked process exited; panics (with the logs) if one exited unsuccessfully.
    pub fn all_exited(&mut self) -> bool {
        self.check();
        self.children.values_mut().all(|c| matches!(c.try_wait(), Ok(Some(_))))
    }

    /// Polls `probe` (given the coordinator's status server) until it yields a value. Panics with the logs
    /// when a process exited unsuccessfully, when every process exited first, or once `deadline` passed
    /// (then also with the last `/status`).
    pub fn wait_for<T>(
        &mut self,
        server: StatusServer,
        what: &str,
        deadline: Instant,
        mut probe: impl FnMut(StatusServer) -> Option<T>,
    ) -> T {
        loop {
            if let Some(v) = probe(server) {
                return v;
            }
            assert!(!self.all_exited(), "every process exited before {what}{}", self.logs());
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what} (test running {:.1}s); last status {:?}{}",
                self.started.elapsed().as_secs_f64(),
                server.status(),
                self.logs()
            );
            std::thread::sleep(POLL);
        }
    }

    /// Waits until every tracked process exited, each successfully; panics with `why` and the logs once
    /// `deadline` passed.
    pub fn wait_all_exit(&mut self, deadline: Instant, why: &str) {
        while !self.all_exited() {
            assert!(Instant::now() < deadline, "{why}{}", self.logs());
            std::thread::sleep(POLL);
        }
    }
}

/// The coordinator's reply on a request stream (its frame kind checked).
pub async fn read_reply(recv: &mut quinn::RecvStream) -> Reply {
    let (kind, reply) = recv_message::<Reply>(recv, 1 << 24, Duration::from_secs(30))
        .await
        .expect("reply");
    assert_eq!(kind, KIND_REPLY);
    reply
}

/// Sends `msg` to the coordinator on a fresh bidirectional stream and returns its reply.
pub async fn request(conn: &quinn::Connection, msg: &ToCoordinator) -> Reply {
    let (mut send, mut recv) = conn.open_bi().await.expect("open stream");
    send_message(&mut send, KIND_TO_COORDINATOR, msg).await.expect("send");
    send.finish().expect("finish");
    read_reply(&mut recv).await
}

/// The next replay sequence number after `*last` (stored back): strictly larger, and at least the current
/// time in microseconds.
pub fn next_seq(last: &mut u64) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    *last = (*last + 1).max(now);
    *last
}

/// `body` signed with the kit's participant key for `round` under sequence number `seq`.
pub fn sign<T: SignedMessage>(kit: &Kit, round: RoundId, seq: u64, body: &T) -> Signed<T> {
    let signer = Signer::Participant(kit.participant().clone());
    Signed::sign(&kit.signing, signer, kit.federation().clone(), round, seq, body).expect("sign")
}

/// F32 soft labels `probs` (`classes` per row) for every sample of `open`, claiming 100 private samples.
pub fn f32_labels(open: &RoundOpen, probs: &[f32], classes: usize) -> SoftLabels {
    softlabels::soft_labels_message(
        open.round,
        open.public_digest,
        &open.sample_ids,
        probs,
        classes,
        Encoding::F32,
        100,
    )
    .expect("encode")
}

/// The value of a metric line `<series> <value>` in the Prometheus text exposition (0 when absent: a
/// counter family member is only exposed once incremented).
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// The count of rejections with `reason` in the Prometheus text exposition.
pub fn rejections(text: &str, reason: &str) -> f64 {
    metric(
        text,
        &format!("fedistill_coordinator_rejections_total{{reason=\"{reason}\"}}"),
    )
}

/// The finished rounds of a `/status` document.
pub fn history(status: &Value) -> Vec<Value> {
    status["history"].as_array().cloned().unwrap_or_default()
}

/// Round `round` of `/status` history, once it finished.
pub fn round_of(status: &Value, round: u64) -> Option<Value> {
    history(status).into_iter().find(|h| h["round"].as_u64() == Some(round))
}

/// A hand-written participant: a real kit and the real protocol, driven step by step by the test.
pub struct Client {
    /// The participant's real kit.
    pub kit: Kit,
    /// Its mutually authenticated connection.
    pub conn: quinn::Connection,
    /// Its last sequence number.
    pub seq: u64,
}

impl Client {
    /// Loads the kit in `dir` and connects with it.
    pub async fn connect(dir: &Path) -> Client {
        let kit = Kit::load(dir).expect("load kit");
        let conn = connect(&kit, &ConnectOptions::default()).await.expect("mTLS connect");
        Client { kit, conn, seq: 0 }
    }

    /// Sends `msg` on a fresh stream and returns the reply.
    pub async fn request(&self, msg: &ToCoordinator) -> Reply {
        request(&self.conn, msg).await
    }

    /// Hello with the current protocol version; asserts the welcome.
    pub async fn hello(&self) {
        let r = self
            .request(&ToCoordinator::Hello {
                version: PROTOCOL_VERSION,
                last_checkpoint_size: 0,
            })
            .await;
        assert!(matches!(r, Reply::Welcome { finished: false, .. }), "{r:?}");
    }

    /// The next round opening pushed by the coordinator, signature-checked with the kit's coordinator key.
    pub async fn next_open(&self) -> RoundOpen {
        let guard = ReplayGuard::new(self.kit.federation().clone());
        loop {
            let mut recv = self.conn.accept_uni().await.expect("push stream");
            let (kind, msg) = recv_message::<ToParticipant>(&mut recv, 1 << 24, Duration::from_secs(30))
                .await
                .expect("push");
            assert_eq!(kind, KIND_TO_PARTICIPANT);
            if let ToParticipant::Open(s) = msg {
                let round = s.round;
                return s
                    .verify(&self.kit.coordinator_key, &Signer::Coordinator, &guard, round)
                    .expect("coordinator signature")
                    .into_inner();
            }
        }
    }

    /// Honest-looking soft labels (uniform, F32) for `open`, altered by `tamper`, signed with the kit's key.
    /// The next aggregate pushed by the coordinator, signature-checked with the kit's coordinator key (round
    /// openings and other pushes before it are skipped).
    #[allow(dead_code)]
    pub async fn next_aggregate(&self) -> fedistill_shared::wire::messages::AggregateLabels {
        let guard = ReplayGuard::new(self.kit.federation().clone());
        loop {
            let mut recv = self.conn.accept_uni().await.expect("push stream");
            let (_, msg) = recv_message::<ToParticipant>(&mut recv, 1 << 24, Duration::from_secs(30))
                .await
                .expect("push");
            if let ToParticipant::Aggregate(s) = msg {
                let round = s.round;
                return s
                    .verify(&self.kit.coordinator_key, &Signer::Coordinator, &guard, round)
                    .expect("coordinator signature")
                    .into_inner();
            }
        }
    }

    pub fn labels(&mut self, open: &RoundOpen, tamper: impl FnOnce(&mut SoftLabels)) -> ToCoordinator {
        let uniform = vec![1.0 / CLASSES as f32; open.sample_ids.len() * CLASSES];
        let mut body = f32_labels(open, &uniform, CLASSES);
        tamper(&mut body);
        let seq = next_seq(&mut self.seq);
        ToCoordinator::SoftLabels(sign(&self.kit, open.round, seq, &body))
    }

    /// Writes `frame` (possibly over the coordinator's cap, possibly cut short), finishes the stream and
    /// returns the coordinator's reply. Write errors are expected: the coordinator stops reading a bad frame.
    pub async fn raw(&self, frame: &[u8]) -> Reply {
        let (mut send, mut recv) = self.conn.open_bi().await.expect("open stream");
        let _ = write_frame(&mut send, frame).await;
        let _ = send.finish();
        read_reply(&mut recv).await
    }
}

/// The code of a rejection, compared as a `RejectCode` value; panics on any other reply.
pub fn reject_code(r: &Reply) -> RejectCode {
    match r {
        Reply::Reject { code, .. } => code.clone(),
        other => panic!("expected a rejection, got {other:?}"),
    }
}
