//! End to end with real processes: the coordinator's `[quarantine]` table (issue 8). Four real participants
//! and one hand-driven attacker (a real kit and the real protocol) that sends confidently wrong soft labels
//! every round it may. With `consecutive = 1` and `release_after_rounds = 1` the attacker is quarantined in
//! round 1, left out of round 2 and released after it, contributes again in round 3 and is quarantined again,
//! and is released after round 4. The update log holds the four decisions and `fedistill audit verify`
//! (which rechecks each decision's consistency) passes.
//! Set `FEDISTILL_KEEP_TEST_DIRS=1` to keep the test's directory (configs, store, `logs/*.log`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use fedistill_participant::transport::{connect, ConnectOptions, Kit};
use fedistill_shared::crypto::{Digest, FederationId, ParticipantId, ReplayGuard, Signed, SignedMessage, Signer};
use fedistill_shared::protocol::{softlabels, Encoding};
use fedistill_shared::provision::FederationLayout;
use fedistill_shared::wire::messages::{
    sample_ids_digest, Reply, RoundReport, SoftLabels, ToCoordinator, ToParticipant, KIND_REPLY, KIND_TO_COORDINATOR,
    KIND_TO_PARTICIPANT, PROTOCOL_VERSION,
};
use fedistill_shared::wire::{recv_message, send_message};

const EXE: &str = env!("CARGO_BIN_EXE_fedistill");
/// Overall limit of the run.
const WAIT: Duration = Duration::from_secs(300);
/// Classes of `digits`.
const CLASSES: usize = 10;
const ROUNDS: u64 = 4;
const HONEST: [&str; 4] = ["p0", "p1", "p2", "p3"];

fn data_toml() -> &'static str {
    "[data]\ndataset = \"digits\"\nparticipants = 4\npartition = \"iid\"\nseed = 7\ntest_fraction = 0.1\npublic_fraction = 0.7\n"
}

fn free_port(udp: bool) -> u16 {
    if udp {
        std::net::UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr())
    } else {
        std::net::TcpListener::bind("127.0.0.1:0").and_then(|s| s.local_addr())
    }
    .expect("free port")
    .port()
}

/// A minimal HTTP/1.0 GET; `None` unless 200.
fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    (head.lines().next()?.split_whitespace().nth(1)? == "200").then(|| body.to_string())
}

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

fn fedistill(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(EXE).args(args).current_dir(dir).output().expect("runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The processes of the run; killed if the test fails midway.
struct Procs {
    tmp: tempfile::TempDir,
    children: Vec<(String, Child)>,
}

impl Drop for Procs {
    fn drop(&mut self) {
        if std::env::var_os("FEDISTILL_KEEP_TEST_DIRS").is_some() {
            eprintln!("keeping {}", self.tmp.path().display());
            self.tmp.disable_cleanup(true);
        }
        for (_, c) in &mut self.children {
            if let Ok(None) = c.try_wait() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

impl Procs {
    fn spawn(&mut self, name: &str, args: &[&str]) {
        let dir = self.tmp.path();
        let log = std::fs::File::create(dir.join("logs").join(format!("{name}.log"))).expect("log file");
        let child = Command::new(EXE)
            .args(args)
            .current_dir(dir)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("spawn fedistill");
        self.children.push((name.to_string(), child));
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for (name, _) in &self.children {
            let text =
                std::fs::read_to_string(self.tmp.path().join("logs").join(format!("{name}.log"))).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!(
                "\n----- {name} -----\n{}\n",
                lines[lines.len().saturating_sub(30)..].join("\n")
            ));
        }
        out
    }

    /// Panics with the logs if a process exited unsuccessfully; true when all exited.
    fn all_exited(&mut self) -> bool {
        let mut running = false;
        for (name, c) in &mut self.children {
            match c.try_wait() {
                Ok(Some(st)) if !st.success() => {
                    let name = name.clone();
                    panic!("{name} exited with {st}{}", self.logs());
                }
                Ok(Some(_)) => {}
                _ => running = true,
            }
        }
        !running
    }
}

/// The attacker: a real kit and connection; every round it may, it sends one-hot labels on class
/// `id % 10` (unrelated to the digits, so far from the honest consensus) and reports the rounds it
/// contributed to. Returns the reply code to each of its soft-label messages, per round.
async fn attacker(dir: std::path::PathBuf) -> Vec<(u64, String)> {
    let kit = Kit::load(&dir).expect("load kit");
    let conn = connect(&kit, &ConnectOptions::default()).await.expect("mTLS connect");
    let mut seq = 0u64;
    let mut next_seq = || {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        seq = (seq + 1).max(now);
        seq
    };
    let request = |msg: ToCoordinator| {
        let conn = conn.clone();
        async move {
            let (mut send, mut recv) = conn.open_bi().await.expect("open stream");
            send_message(&mut send, KIND_TO_COORDINATOR, &msg).await.expect("send");
            send.finish().expect("finish");
            let (kind, reply) = recv_message::<Reply>(&mut recv, 1 << 24, Duration::from_secs(30))
                .await
                .expect("reply");
            assert_eq!(kind, KIND_REPLY);
            reply
        }
    };
    let hello = request(ToCoordinator::Hello {
        version: PROTOCOL_VERSION,
        last_checkpoint_size: 0,
    })
    .await;
    assert!(matches!(hello, Reply::Welcome { .. }), "{hello:?}");
    let mut guard = ReplayGuard::new(kit.federation().clone());
    let me = Signer::Participant(kit.participant().clone());
    let mut codes = Vec::new();
    let mut contributed = Vec::new();
    loop {
        let Ok(mut recv) = conn.accept_uni().await else {
            return codes;
        };
        let Ok((kind, msg)) = recv_message::<ToParticipant>(&mut recv, 1 << 24, Duration::from_secs(30)).await else {
            return codes;
        };
        assert_eq!(kind, KIND_TO_PARTICIPANT);
        match msg {
            ToParticipant::Open(s) => {
                let round = s.round;
                let open = s
                    .verify(&kit.coordinator_key, &mut guard, round)
                    .expect("coordinator signature")
                    .into_inner();
                let rows = open.sample_ids.len();
                let probs: Vec<f32> = open
                    .sample_ids
                    .iter()
                    .flat_map(|id| (0..CLASSES).map(move |c| if c == (*id as usize) % CLASSES { 1.0 } else { 0.0 }))
                    .collect();
                let body = SoftLabels {
                    round,
                    public_digest: open.public_digest,
                    sample_ids_digest: sample_ids_digest(&open.sample_ids),
                    encoding: Encoding::F32,
                    rows: rows as u32,
                    classes: CLASSES as u32,
                    samples: 100,
                    payload: softlabels::encode(&probs, rows, CLASSES, Encoding::F32).expect("encode"),
                };
                let signed = signed(&kit, &me, round, next_seq(), &body);
                let code = match request(ToCoordinator::SoftLabels(signed)).await {
                    Reply::Ack => {
                        contributed.push(round);
                        "ack".to_string()
                    }
                    Reply::Reject { code, .. } => code,
                    other => format!("{other:?}"),
                };
                codes.push((round.0, code));
            }
            ToParticipant::Aggregate(s) => {
                let round = s.round;
                if contributed.contains(&round) {
                    let report = RoundReport {
                        round,
                        metrics: vec![("accuracy".into(), 0.1)],
                        student_digest: Digest::of(b"attacker"),
                        guard_accepted: true,
                        guard_reason: String::new(),
                    };
                    let signed = signed(&kit, &me, round, next_seq(), &report);
                    let _ = request(ToCoordinator::Report(signed)).await;
                }
            }
            ToParticipant::Finished { .. } => {
                conn.close(0u32.into(), b"done");
                return codes;
            }
        }
    }
}

fn signed<T: SignedMessage>(
    kit: &Kit,
    me: &Signer,
    round: fedistill_shared::crypto::RoundId,
    seq: u64,
    body: &T,
) -> Signed<T> {
    Signed::sign(&kit.signing, me.clone(), kit.federation().clone(), round, seq, body).expect("sign")
}

#[test]
fn a_persistent_attacker_is_quarantined_released_and_quarantined_again() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_path_buf();
    std::fs::create_dir_all(dir.join("logs")).expect("logs dir");
    let port = free_port(true);
    let status: SocketAddr = ([127, 0, 0, 1], free_port(false)).into();
    let fed_dir = dir.join("federation");
    let federation = FederationId::new("quarantine").expect("name");
    let now = fedistill_shared::provision::now_utc();
    fedistill_shared::provision::init(
        &fed_dir,
        &federation,
        &[format!("127.0.0.1:{port}")],
        Some(SocketAddr::from(([127, 0, 0, 1], port))),
        now,
    )
    .expect("provision init");
    for n in HONEST.iter().chain(&["mallory"]) {
        fedistill_shared::provision::add_participant(&fed_dir, &ParticipantId::new(*n), now).expect("add participant");
    }
    // Every expected participant contributes, so rounds close early; the deadlines only bound a failure.
    std::fs::write(
        dir.join("coordinator.toml"),
        format!(
            "federation_dir = \"federation\"\nbind = \"127.0.0.1:{port}\"\nstore = \"coordinator.sqlite\"\n\
             status = \"{status}\"\nrounds = {ROUNDS}\nmin_participants = 5\nquorum = 3\n\
             collect_timeout_ms = 120000\nreport_timeout_ms = 120000\nsamples_per_round = 200\n\
             rule = \"median\"\ntemperature = 2.0\n{}[quarantine]\nconsecutive = 1\nrelease_after_rounds = 1\n",
            data_toml()
        ),
    )
    .expect("write coordinator.toml");
    for (shard, n) in HONEST.iter().enumerate() {
        std::fs::write(
            dir.join(format!("participant-{n}.toml")),
            format!(
                "kit = \"federation/kits/{n}\"\nworkdir = \"work/{n}\"\nshard = {shard}\nencoding = \"f16\"\n\
                 [teacher]\nkind = \"mlp\"\nhidden = [32]\n[student]\nkind = \"mlp\"\nhidden = [16]\n\
                 [train]\nepochs = 5\nbatch_size = 64\npatience = 0\n[distill]\nepochs_per_round = 2\n{}",
                data_toml()
            ),
        )
        .expect("write participant config");
    }
    let layout = FederationLayout::new(&fed_dir);
    let coordinator_pub = std::fs::read_to_string(layout.coordinator_signing_pub()).expect("coordinator key");
    let coordinator = fedistill_shared::crypto::PublicKey::from_pem(&coordinator_pub).expect("pem");
    let roster = layout.load_roster(&federation).expect("roster");
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let mut trust = format!(
        "origin = \"fedistill/quarantine\"\ncoordinator_key = \"{}\"\nquorum = 2\n",
        hex(&coordinator.to_bytes())
    );
    for n in HONEST {
        let entry = roster.by_id(&ParticipantId::new(n)).expect("in the roster");
        trust.push_str(&format!(
            "[[witness]]\nname = \"fedistill-witness/{n}\"\nkey = \"{}\"\n",
            hex(&entry.signing_key.to_bytes())
        ));
    }
    std::fs::write(dir.join("trust.toml"), trust).expect("write trust");

    let mut procs = Procs {
        tmp,
        children: Vec::new(),
    };
    let started = Instant::now();
    procs.spawn("coordinator", &["coordinator", "--config", "coordinator.toml"]);
    while http_get(status, "/status").is_none() {
        assert!(
            !procs.all_exited() && started.elapsed() < WAIT,
            "no /status{}",
            procs.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mallory = rt.spawn(attacker(fed_dir.join("kits").join("mallory")));
    for n in HONEST {
        let cfg = format!("participant-{n}.toml");
        procs.spawn(n, &["participant", "--config", &cfg]);
    }
    let mut last = None;
    let done = loop {
        if let Some(s) = http_get(status, "/status").and_then(|b| serde_json::from_str::<Value>(&b).ok()) {
            if s["finished"] == Value::Bool(true) {
                break s;
            }
            last = Some(s);
        }
        assert!(
            !procs.all_exited(),
            "processes exited before the federation finished{}",
            procs.logs()
        );
        assert!(
            started.elapsed() < WAIT,
            "no finished /status within {WAIT:?}: last {last:?}{}",
            procs.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    while !procs.all_exited() {
        assert!(started.elapsed() < WAIT, "processes did not exit{}", procs.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    let codes = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(30), mallory).await })
        .expect("the attacker finished")
        .expect("the attacker task did not panic");

    // Rounds 1 and 3 aggregate mallory (then quarantine it), rounds 2 and 4 do not wait for it.
    let history = done["history"].as_array().cloned().unwrap_or_default();
    assert_eq!(history.len() as u64, ROUNDS, "{done}");
    for h in &history {
        let round = h["round"].as_u64().unwrap_or(0);
        // In id order, as the coordinator lists them.
        let mut want: Vec<&str> = HONEST.to_vec();
        if round % 2 == 1 {
            want.insert(0, "mallory");
        }
        assert_eq!(names(&h["contributors"]), want, "round {round}: {h}");
        assert!(names(&h["absent"]).is_empty(), "round {round}: {h}");
    }
    assert_eq!(
        names(&done["quarantined"]),
        Vec::<String>::new(),
        "released after round 4: {done}"
    );
    // What mallory was told: accepted in rounds 1 and 3; in rounds 2 and 4 refused as quarantined (or the
    // round had already aggregated without waiting for it).
    for (round, code) in &codes {
        let ok = if round % 2 == 1 {
            code == "ack"
        } else {
            code == "quarantined" || code == "not_collecting"
        };
        assert!(ok, "round {round}: {code} ({codes:?})");
    }
    assert_eq!(codes.iter().filter(|(_, c)| c == "ack").count(), 2, "{codes:?}");

    let (ok, out) = fedistill(
        &dir,
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
    let (ok, out) = fedistill(&dir, &["audit", "verify", "bundle", "--trust", "trust.toml"]);
    assert!(ok && out.contains("OK"), "audit verify: {out}");
    let (ok, show) = fedistill(&dir, &["audit", "show", "bundle"]);
    assert!(ok, "{show}");
    let decisions: Vec<&str> = show
        .lines()
        .filter(|l| l.contains("QUARANTINE") || l.contains("RELEASE"))
        .collect();
    assert_eq!(decisions.len(), 4, "{decisions:?}");
    for (line, needle) in decisions.iter().zip([
        "round 1: QUARANTINE mallory",
        "round 2: RELEASE mallory from the quarantine of round 1 after 1 round(s)",
        "round 3: QUARANTINE mallory",
        "round 4: RELEASE mallory from the quarantine of round 3 after 1 round(s)",
    ]) {
        assert!(line.contains(needle), "{needle}: {line}");
    }
    // The evidence records the configured policy.
    assert!(decisions[0].contains("policy_consecutive=1"), "{}", decisions[0]);
    let coordinator_log = std::fs::read_to_string(dir.join("logs").join("coordinator.log")).unwrap_or_default();
    assert!(
        coordinator_log.contains("participant released from quarantine"),
        "{coordinator_log}"
    );
}
