//! End to end with real processes: a participant whose differential-privacy budget runs out abstains (a
//! signed `Abstain`, issue 8) instead of going silent, so later rounds close as soon as the others
//! contributed, not at the collection deadline. The deadline is set far beyond the test's overall wait, so
//! a federation that finishes at all proves no round waited for it (completion, not timing, is asserted).
//! The update log carries the abstentions and `fedistill audit verify` accepts it.
//! Set `FEDISTILL_KEEP_TEST_DIRS=1` to keep the test's directory (configs, store, `logs/*.log`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use fedistill_shared::crypto::{FederationId, ParticipantId};
use fedistill_shared::provision::FederationLayout;

const EXE: &str = env!("CARGO_BIN_EXE_fedistill");
/// Overall limit of the run; far below the collection deadline below.
const WAIT: Duration = Duration::from_secs(300);
/// Collection deadline per round: 30 minutes, so no round can close on it within `WAIT`.
const COLLECT_MS: u64 = 1_800_000;
const ROUNDS: u64 = 3;
const NAMES: [&str; 3] = ["p0", "p1", "p2"];

fn data_toml() -> &'static str {
    "[data]\ndataset = \"digits\"\nparticipants = 3\npartition = \"iid\"\nseed = 7\ntest_fraction = 0.1\npublic_fraction = 0.7\n"
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("free udp port")
        .port()
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("free tcp port")
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

/// Runs `fedistill` to completion in `dir`: (success, stdout + stderr).
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

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.tmp.path().join("logs").join(format!("{name}.log"))).unwrap_or_default()
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for (name, _) in &self.children {
            let text = self.log(name);
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(30)..].join("\n");
            out.push_str(&format!("\n----- {name} -----\n{tail}\n"));
        }
        out
    }

    /// Waits until every process exited successfully; panics with the logs otherwise or after `WAIT`.
    fn wait_all(&mut self, started: Instant) {
        loop {
            let mut running = false;
            let mut failed = None;
            for (name, c) in &mut self.children {
                match c.try_wait() {
                    Ok(Some(st)) if !st.success() => failed = Some(format!("{name} exited with {st}")),
                    Ok(Some(_)) => {}
                    _ => running = true,
                }
            }
            if let Some(f) = failed {
                panic!("{f}{}", self.logs());
            }
            if !running {
                return;
            }
            assert!(
                started.elapsed() < WAIT,
                "the federation did not finish within {WAIT:?} (its rounds' deadline is {COLLECT_MS} ms): a round waited for the abstainer{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Three participants with DP on (4 epsilon per round); p2's budget (5) covers round 1 only, so it abstains
/// in rounds 2 and 3. Asserts: every round aggregated (the deadline is 30 minutes, the test waits at most 5),
/// p2 contributed to round 1 and abstained (not absent) from rounds 2 and 3 in `/status`, its log says why,
/// the update log holds its two abstentions with the budget figures, and `audit verify` passes.
#[test]
fn a_participant_out_of_budget_abstains_and_rounds_close_without_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_path_buf();
    std::fs::create_dir_all(dir.join("logs")).expect("logs dir");
    let port = free_udp_port();
    let status: SocketAddr = ([127, 0, 0, 1], free_tcp_port()).into();
    let fed_dir = dir.join("federation");
    let federation = FederationId::new("budget").expect("name");
    let now = fedistill_shared::provision::now_utc();
    fedistill_shared::provision::init(
        &fed_dir,
        &federation,
        &[format!("127.0.0.1:{port}")],
        Some(SocketAddr::from(([127, 0, 0, 1], port))),
        now,
    )
    .expect("provision init");
    for n in NAMES {
        fedistill_shared::provision::add_participant(&fed_dir, &ParticipantId::new(n), now).expect("add participant");
    }
    std::fs::write(
        dir.join("coordinator.toml"),
        format!(
            "federation_dir = \"federation\"\nbind = \"127.0.0.1:{port}\"\nstore = \"coordinator.sqlite\"\n\
             status = \"{status}\"\nrounds = {ROUNDS}\nmin_participants = 3\nquorum = 2\n\
             collect_timeout_ms = {COLLECT_MS}\nreport_timeout_ms = 120000\nsamples_per_round = 200\n\
             rule = \"median\"\ntemperature = 2.0\n{}",
            data_toml()
        ),
    )
    .expect("write coordinator.toml");
    for (shard, (n, budget)) in NAMES.iter().zip([100.0, 100.0, 5.0]).enumerate() {
        std::fs::write(
            dir.join(format!("participant-{n}.toml")),
            format!(
                "kit = \"federation/kits/{n}\"\nworkdir = \"work/{n}\"\nshard = {shard}\nencoding = \"f16\"\n\
                 [teacher]\nkind = \"mlp\"\nhidden = [32]\n[student]\nkind = \"mlp\"\nhidden = [16]\n\
                 [train]\nepochs = 5\nbatch_size = 64\npatience = 0\n[distill]\nepochs_per_round = 2\n{}\
                 [privacy]\nepsilon_per_round = 4.0\ndelta = 1e-5\nbudget_epsilon = {budget}\n",
                data_toml()
            ),
        )
        .expect("write participant config");
    }
    // The auditor's trust file, as `fedistill demo` writes it: the log key and the three witnesses, 2 of 3.
    let layout = FederationLayout::new(&fed_dir);
    let coordinator_pub = std::fs::read_to_string(layout.coordinator_signing_pub()).expect("coordinator key");
    let coordinator = fedistill_shared::crypto::PublicKey::from_pem(&coordinator_pub).expect("pem");
    let roster = layout.load_roster(&federation).expect("roster");
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let mut trust = format!(
        "origin = \"fedistill/budget\"\ncoordinator_key = \"{}\"\nquorum = 2\n",
        hex(&coordinator.to_bytes())
    );
    for n in NAMES {
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
    for n in NAMES {
        let cfg = format!("participant-{n}.toml");
        procs.spawn(n, &["participant", "--config", &cfg]);
    }
    // The coordinator lingers a few seconds after the last round: read its final /status then.
    let mut last = None;
    let done = loop {
        if let Some(s) = http_get(status, "/status").and_then(|b| serde_json::from_str::<Value>(&b).ok()) {
            if s["finished"] == Value::Bool(true) {
                break s;
            }
            last = Some(s);
        }
        if procs
            .children
            .iter_mut()
            .any(|(_, c)| matches!(c.try_wait(), Ok(Some(_))))
        {
            // Someone exited before /status said finished: wait_all reports a failure with the logs.
            procs.wait_all(started);
        }
        assert!(
            started.elapsed() < WAIT,
            "no finished /status within {WAIT:?} (deadline {COLLECT_MS} ms per round): last {last:?}{}",
            procs.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    procs.wait_all(started);

    // Completion counts: every round aggregated; p2 in round 1, abstaining (not absent) in rounds 2 and 3.
    let history = done["history"].as_array().cloned().unwrap_or_default();
    assert_eq!(history.len() as u64, ROUNDS, "{done}");
    for h in &history {
        let round = h["round"].as_u64().unwrap_or(0);
        let (contributors, abstained) = if round == 1 {
            (vec!["p0", "p1", "p2"], vec![])
        } else {
            (vec!["p0", "p1"], vec!["p2"])
        };
        assert_eq!(names(&h["contributors"]), contributors, "round {round}: {h}");
        assert_eq!(names(&h["abstained"]), abstained, "round {round}: {h}");
        assert!(names(&h["absent"]).is_empty(), "round {round}: {h}");
    }
    let p2 = procs.log("p2");
    for round in [2, 3] {
        assert!(
            p2.contains(&format!(
                "privacy budget would be exceeded: abstaining from round {round}"
            )),
            "p2 says why it stops in round {round}:\n{p2}"
        );
    }
    assert!(p2.contains("abstention recorded by the coordinator"), "{p2}");

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
    let abstentions: Vec<&str> = show.lines().filter(|l| l.contains("ABSTENTION by")).collect();
    assert_eq!(abstentions.len(), 2, "{abstentions:?}");
    for (line, round) in abstentions.iter().zip([2, 3]) {
        assert!(
            line.contains(&format!("round {round}: ABSTENTION by p2: budget_exhausted"))
                && line.contains("epsilon_budget=5")
                && line.contains("epsilon_spent=")
                && line.contains("epsilon_would_reach="),
            "{line}"
        );
    }
    // p2 spent budget in round 1 only.
    assert!(
        show.lines().any(|l| l.contains("round 1: privacy spend by p2")),
        "{show}"
    );
    assert!(
        !show.lines().any(|l| l.contains("round 2: privacy spend by p2")),
        "{show}"
    );
}
