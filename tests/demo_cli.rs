//! End-to-end test of `fedistill demo`: a real federation of processes (coordinator + participants over
//! mTLS QUIC on loopback) on a small embedded dataset, checking the JSON report and the kept artifacts, and
//! the coordinator's web console as a real headless Chromium renders it while the federation runs (needs
//! Debian's `chromium` package; see tests/chromium/mod.rs).

mod chromium;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_fedistill");

/// Runs `fedistill <args> --workdir WORK --report REPORT`, asserts it succeeded, and returns the report.
fn run_demo(args: &[&str], work: &std::path::Path, report: &std::path::Path) -> serde_json::Value {
    let out = Command::new(BIN)
        .args(args)
        .arg("--workdir")
        .arg(work)
        .arg("--report")
        .arg(report)
        .output()
        .expect("spawn fedistill demo");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    serde_json::from_slice(&std::fs::read(report).expect("the demo's report")).expect("report JSON")
}

/// `audit verify` of the bundle and trust file a demo kept in `work`: whether it passed, and its output.
fn audit_verify(work: &std::path::Path) -> (bool, String) {
    let verify = Command::new(BIN)
        .args(["audit", "verify"])
        .arg(work.join("audit-bundle"))
        .arg("--trust")
        .arg(work.join("trust.toml"))
        .output()
        .expect("spawn fedistill audit verify");
    let v = String::from_utf8_lossy(&verify.stdout).to_string() + &String::from_utf8_lossy(&verify.stderr);
    (verify.status.success(), v)
}

#[test]
fn demo_runs_a_federation_and_its_log_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("run");
    let report = dir.path().join("report.json");
    let mut child = Command::new(BIN)
        .args([
            "demo",
            "--dataset",
            "breast-cancer",
            "--participants",
            "3",
            // Six rounds keep the coordinator (and its console) up for a few seconds, so headless Chromium
            // loads the page of a running federation even on a loaded machine.
            "--rounds",
            "6",
            "--seed",
            "5",
            "--fedavg-rounds",
            "3",
        ])
        .arg("--workdir")
        .arg(&work)
        .arg("--report")
        .arg(&report)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // stderr drains on its own thread, so a chatty demo never blocks on a full pipe.
    let mut err_pipe = child.stderr.take().unwrap();
    let stderr_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    // While the demo runs, its coordinator's status address serves the web console at `/`.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stdout = String::new();
    let mut console = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        stdout.push_str(&line);
        stdout.push('\n');
        // "started the coordinator (udp ..., status http://127.0.0.1:PORT/status) and ..."
        if let Some(at) = line.find("status http://") {
            let status = line[at + "status ".len()..].split(')').next().unwrap();
            let url = format!("{}/", status.trim_end_matches("/status"));
            let page = get_page(&url);
            console = Some((url, page));
            break;
        }
    }
    let (url, page) = console.unwrap_or_else(|| panic!("the demo never announced its console:\n{stdout}"));
    assert!(
        page.starts_with("HTTP/1.0 200") || page.starts_with("HTTP/1.1 200"),
        "{page}"
    );
    assert!(
        page.contains("fedistill console") && page.contains("id=\"round-number\""),
        "{page}"
    );
    // The same console in a real headless Chromium once the federation is in a round: a row per participant
    // and the round number the page rendered (and its script refreshed) at 1 or more.
    let dom = console_in_a_round(&url, &mut child, &["p0", "p1", "p2"]);
    assert!(
        dom.contains("fedistill console: <span id=\"federation\">demo</span>"),
        "{dom}"
    );
    for line in lines {
        stdout.push_str(&line.unwrap());
        stdout.push('\n');
    }
    let stderr = stderr_reader.join().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "demo failed:\n{stdout}\n{stderr}");
    // Off a terminal the demo's progress is plain lines on stderr, never on stdout.
    assert!(stderr.contains("compare: done"), "{stderr}");
    assert!(stderr.lines().any(|l| l.starts_with("rounds: ")), "{stderr}");
    assert!(!stdout.lines().any(|l| l.starts_with("compare: ")), "{stdout}");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["dataset"], "breast-cancer");
    assert_eq!(r["participants"], 3);
    assert_eq!(r["per_round"].as_array().unwrap().len(), 6, "{r}");
    for row in r["per_round"].as_array().unwrap() {
        assert!(row["bytes_up"].as_u64().unwrap() > 0);
        assert!(row["bytes_down"].as_u64().unwrap() > 0);
        let a = row["student_accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&a));
    }
    for key in [
        &r["final"]["student_accuracy"],
        &r["final"]["int8_accuracy"],
        &r["baselines"]["local_only_accuracy"],
        &r["baselines"]["centralized_accuracy"],
    ] {
        let v = key.as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{v}");
    }
    // The FedAvg baseline ran on the same split: its rounds timed from its start, its bytes real frames; the
    // time-to-accuracy table is printed and drawn beside the report.
    let curve = r["fedavg"]["curve"].as_array().expect("a FedAvg curve");
    assert_eq!(curve.len(), 3, "{r}");
    for w in curve.windows(2) {
        assert!(w[1]["elapsed_s"].as_f64() > w[0]["elapsed_s"].as_f64(), "{curve:?}");
        assert!(w[1]["bytes"].as_u64() > w[0]["bytes"].as_u64(), "{curve:?}");
    }
    assert!(curve[0]["elapsed_s"].as_f64().unwrap() > 0.0, "{curve:?}");
    let fedavg_accuracy = r["fedavg"]["accuracy"].as_f64().unwrap();
    assert_eq!(Some(fedavg_accuracy), curve[2]["accuracy"].as_f64(), "{r}");
    assert!(fedavg_accuracy > 0.0 && fedavg_accuracy <= 1.0, "{r}");
    let mut elapsed = 0.0;
    for row in r["per_round"].as_array().unwrap() {
        let e = row["elapsed_s"].as_f64().unwrap();
        assert!(e > elapsed, "{row}");
        elapsed = e;
    }
    assert!(
        stdout.contains("| s to 75% |") && stdout.contains("| FedAvg (in process) | 3 |"),
        "{stdout}"
    );
    for ext in ["png", "svg"] {
        let chart = dir.path().join(format!("report-time-to-accuracy.{ext}"));
        assert!(std::fs::metadata(&chart).unwrap().len() > 1000, "{}", chart.display());
    }
    // A distilled student on this dataset is far better than chance.
    assert!(r["final"]["student_accuracy"].as_f64().unwrap() > 0.8, "{r}");
    assert_eq!(r["audit"]["verified"], true, "{}", r["audit"]["output"]);
    // The kept artifacts let anyone re-run the auditor's check.
    assert!(work.join("audit-bundle").is_dir());
    assert!(work.join("trust.toml").is_file());
    let verify = Command::new(BIN)
        .args(["audit", "verify"])
        .arg(work.join("audit-bundle"))
        .arg("--trust")
        .arg(work.join("trust.toml"))
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
    // The demo runs the deployment path: the coordinator names a task card and a public file, no dataset
    // or partition; each participant names the card and its own files in its own directory, and fetched
    // the public set from the coordinator (byte counts agree with the coordinator's).
    let coordinator = std::fs::read_to_string(work.join("coordinator.toml")).unwrap();
    assert!(
        coordinator.contains("[task]") && !coordinator.contains("[data]"),
        "{coordinator}"
    );
    for row in r["per_round"].as_array().unwrap() {
        assert_eq!(row["bytes_up"], row["coordinator_bytes_up"], "{row}");
        assert_eq!(row["bytes_down"], row["coordinator_bytes_down"], "{row}");
    }
    for p in ["p0", "p1", "p2"] {
        let cfg = std::fs::read_to_string(work.join(format!("participant-{p}.toml"))).unwrap();
        assert!(!cfg.contains("shard") && !cfg.contains("[data]"), "{cfg}");
        assert!(cfg.contains(&format!("path = \"nodes/{p}/private.csv\"")), "{cfg}");
        assert!(
            work.join("work").join(p).join("public.csv").is_file(),
            "{p}: no fetched public set"
        );
    }
    // Each participant kept its served student, its INT8 export and per-round artifacts.
    for p in ["p0", "p1", "p2"] {
        let w = work.join("work").join(p);
        assert!(w.join("student.safetensors").is_file());
        assert!(w.join("student-int8.gguf").is_file());
        assert!(w.join("round-0001").join("metrics.json").is_file());
        // The demo refreshes each teacher from the consensus after every round but the last ([refresh]).
        let log = std::fs::read_to_string(work.join("logs").join(format!("{p}.log"))).unwrap();
        assert_eq!(
            log.matches("teacher refreshed from the consensus").count(),
            5,
            "{p}: {log}"
        );
    }
}

/// The round a console page shows (`<span id="round-number">N</span>`), if it shows one.
fn console_round(page: &str) -> Option<u64> {
    let tag = "id=\"round-number\">";
    let at = page.find(tag)? + tag.len();
    page[at..].split('<').next()?.trim().parse().ok()
}

/// Whether a rendered console has an active row for every one of `names`.
fn console_rows(dom: &str, names: &[&str]) -> bool {
    names.iter().all(|n| {
        dom.find(&format!("id=\"participant-{n}\"")).is_some_and(|at| {
            dom[at..]
                .split("</tr>")
                .next()
                .is_some_and(|row| row.contains("data-state=\"active\""))
        })
    })
}

/// The DOM headless Chromium renders for the demo's console `url` once the federation is in a round. The
/// participants train their teachers first and the coordinator stays up only 3 s after the last round, so
/// this polls `/status` over plain HTTP (every 50 ms, for at most 2 minutes or until the demo exits) until its
/// round is 1 or more, then loads the page in Chromium (at most 3 tries) until it renders a round of 1 or
/// more and an active row for every one of `names`.
fn console_in_a_round(url: &str, demo: &mut std::process::Child, names: &[&str]) -> String {
    let status_url = format!("{url}status");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut last = String::new();
    loop {
        last = try_get(&status_url).unwrap_or(last);
        let body = last.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let round = serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["round"].as_u64());
        if round.is_some_and(|r| r >= 1) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline && demo.try_wait().ok().flatten().is_none(),
            "the demo's coordinator never reported a round of 1 or more; last /status:\n{last}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let mut dom = String::new();
    for _ in 0..3 {
        // 1 s of virtual time: the page's script polls /status once and redraws the live figures.
        dom = chromium::dump_dom(url, 1000);
        if console_round(&dom).is_some_and(|r| r >= 1) && console_rows(&dom, names) {
            return dom;
        }
    }
    panic!("Chromium never rendered the demo's console in a round with a row for each of {names:?}:\n{dom}");
}

/// One `GET url` over plain HTTP/1.0 (an `http://127.0.0.1:PORT/...` address): the whole response, or
/// `None` when nothing answers.
fn try_get(url: &str) -> Option<String> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/')?;
    let addr: std::net::SocketAddr = host.parse().ok()?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5))).ok()?;
    write!(s, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    Some(buf)
}

/// `GET url` (an `http://127.0.0.1:PORT/` address) over plain HTTP/1.0: the whole response. The demo
/// announces the address as it starts the coordinator, which listens a moment later: retried for a minute.
fn get_page(url: &str) -> String {
    let rest = url.strip_prefix("http://").expect("an http:// address");
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .expect("host/path");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut s = loop {
        match std::net::TcpStream::connect(host) {
            Ok(s) => break s,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => panic!("the demo's status server {host} never answered: {e}"),
        }
    };
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("read timeout");
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").expect("send the request");
    let mut buf = String::new();
    s.read_to_string(&mut buf).expect("read the response");
    buf
}

/// `demo --secure-aggregation`: every round aggregated from masked inputs (rule mean by default), the
/// report says so, and the kept log verifies with each secure aggregate recomputed.
#[test]
fn demo_with_secure_aggregation_reports_it_and_its_log_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("run");
    let report = dir.path().join("report.json");
    let r = run_demo(
        &[
            "demo",
            "--secure-aggregation",
            "--dataset",
            "breast-cancer",
            "--rounds",
            "2",
            "--seed",
            "5",
        ],
        &work,
        &report,
    );
    assert_eq!(r["secure_aggregation"], true, "{r}");
    assert_eq!(r["rule"], "mean", "{r}");
    assert_eq!(r["per_round"].as_array().map(|a| a.len()), Some(2), "{r}");
    let acc = r["final"]["student_accuracy"].as_f64().unwrap();
    assert!(acc > 0.5, "the student learned: {acc}");
    let (ok, v) = audit_verify(&work);
    assert!(ok && v.contains("2 aggregates recomputed bit for bit"), "{v}");
    let show = Command::new(BIN)
        .args(["audit", "show"])
        .arg(work.join("audit-bundle"))
        .output()
        .unwrap();
    let show = String::from_utf8_lossy(&show.stdout);
    assert_eq!(show.matches("SECURE aggregation of").count(), 2, "{show}");
}

/// `demo --augment --stop-patience`: the task card every node checks carries `[augment]`, the coordinator's
/// `[stop]` (patience 1, an improvement of 0.5 needed) ends the federation after round 2 of 6, the report
/// holds those 2 rounds, and the kept log verifies.
#[test]
fn demo_with_augmentation_stops_on_convergence_and_its_log_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("run");
    let report = dir.path().join("report.json");
    let r = run_demo(
        &[
            "demo",
            "--dataset",
            "digits",
            "--rounds",
            "6",
            "--augment",
            "shift=1",
            "--stop-patience",
            "1",
            "--stop-min-delta",
            "0.5",
            "--refresh-epochs",
            "1",
        ],
        &work,
        &report,
    );
    let card = std::fs::read_to_string(work.join("task.toml")).unwrap();
    assert!(card.contains("[augment]") && card.contains("shift = 1"), "{card}");
    let coordinator = std::fs::read_to_string(work.join("coordinator.toml")).unwrap();
    assert!(
        coordinator.contains("[stop]\npatience = 1\nmin_delta = 0.5"),
        "{coordinator}"
    );
    assert_eq!(r["per_round"].as_array().map(|a| a.len()), Some(2), "{r}");
    let log = std::fs::read_to_string(work.join("logs").join("coordinator.log")).unwrap_or_default();
    assert!(log.contains("converged"), "{log}");
    let (ok, v) = audit_verify(&work);
    assert!(ok && v.contains("2 aggregates recomputed bit for bit"), "{v}");
}

#[test]
fn demo_refuses_bad_flags_clearly() {
    for (args, needle) in [
        (vec!["demo", "--participants", "1"], "--participants must be at least 2"),
        (vec!["demo", "--alpha", "0"], "--alpha must be > 0"),
        (vec!["demo", "--rule", "average"], "unknown aggregation rule"),
        (vec!["demo", "--encoding", "int4"], "unknown soft-label encoding"),
        (vec!["demo", "--dataset", "cifar-10"], "cifar-10"),
        (vec!["demo", "--augment", "twist"], "expected `shift=N` or `flip`"),
        (vec!["demo", "--stop-patience", "0"], "stop.patience must be at least 1"),
        (vec!["demo", "--stop-min-delta", "0.1"], "--stop-patience"),
        (vec!["demo", "--student", "rnn:8"], "--student"),
        (
            vec!["demo", "--dataset", "digits", "--teacher", "cnn1d:8:16:5:3"],
            "--teacher: 64 inputs and 10 classes",
        ),
        (
            vec!["demo", "--dataset", "italy-power", "--augment", "shift=1"],
            "shift and flip augment images, not sequences",
        ),
        (
            vec!["demo", "--secure-aggregation", "--rule", "median"],
            "--rule median needs every participant's own soft labels",
        ),
        (
            vec![
                "demo",
                "--fedavg-rounds",
                "2",
                "--task",
                "t.toml",
                "--public",
                "p.csv",
                "--private",
                "a.csv",
            ],
            "cannot be used with",
        ),
    ] {
        let out = Command::new(BIN).args(&args).output().unwrap();
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}
