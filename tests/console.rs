//! The operator's web console (`/` on the coordinator's status server) seen in a real headless Chromium,
//! against a real `fedistill coordinator` process driven by hand-written participants (real kits, real
//! mutual-TLS QUIC, the real protocol): the round number advances, every participant has a row, a
//! participant revoked with `fedistill provision revoke` is shown revoked, the page's script polls
//! `/status`, and a status server bound beyond loopback refuses requests without the operator's token.
//! Needs Debian's `chromium` package (the tests fail, naming it, without it). Set
//! `FEDISTILL_UPDATE_SCREENSHOT=1` to refresh docs/img/console.png from the test.

mod chromium;
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use fedistill_shared::wire::messages::Reply;

use common::{free_tcp_port, free_udp_port, provision, Client, Procs, StatusServer};

const WAIT: Duration = Duration::from_secs(120);

/// Provisions `names` and writes `coordinator.toml` (digits, three shards, status on `status`).
fn configure(procs: &mut Procs, names: &[&str], status: &str, rounds: u64) {
    let dir = procs.dir().to_path_buf();
    let port = free_udp_port();
    provision(&dir, "console", port, names);
    std::fs::write(
        dir.join("coordinator.toml"),
        format!(
            "federation_dir = \"federation\"\nbind = \"127.0.0.1:{port}\"\nstore = \"coordinator.sqlite\"\n\
             status = \"{status}\"\nrounds = {rounds}\nmin_participants = {}\nquorum = 2\n\
             collect_timeout_ms = 60000\nreport_timeout_ms = 1000\nsamples_per_round = 50\nrule = \"mean\"\n\
             temperature = 2.0\n[data]\ndataset = \"digits\"\nparticipants = 3\npartition = \"iid\"\n\
             seed = 7\ntest_fraction = 0.1\npublic_fraction = 0.7\n",
            names.len()
        ),
    )
    .expect("write coordinator.toml");
}

/// A GET with extra header lines: (status code, headers, body).
fn get(addr: SocketAddr, path: &str, headers: &str) -> Option<(u16, String, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{headers}\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    let code = head.lines().next()?.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, head.to_string(), body.to_string()))
}

/// The `<tr>` of participant `name` in a rendered console.
fn row<'a>(dom: &'a str, name: &str) -> &'a str {
    let start = dom
        .find(&format!("id=\"participant-{name}\""))
        .unwrap_or_else(|| panic!("no row for {name} in the page:\n{dom}"));
    let end = dom[start..].find("</tr>").map_or(dom.len(), |e| start + e);
    &dom[start..end]
}

fn round_number(dom: &str) -> u64 {
    let at = dom.find("id=\"round-number\">").expect("round number in the page") + "id=\"round-number\">".len();
    dom[at..]
        .split('<')
        .next()
        .unwrap_or("")
        .trim()
        .parse()
        .expect("a round number")
}

#[test]
fn the_console_shows_rounds_every_participant_and_a_revocation_in_a_real_browser() {
    let names = ["alice", "bob", "carol"];
    let mut procs = Procs::new();
    let server = StatusServer::on_free_port();
    configure(&mut procs, &names, &server.to_string(), 4);
    procs.start_coordinator();
    let dir = procs.dir().to_path_buf();
    procs.wait_for(server, "the status server", Instant::now() + WAIT, StatusServer::status);
    let url = format!("http://{}/", server.0);

    // Before anyone connects: every enrolled participant has a row, round 0; the script ran and polled.
    let dom = chromium::dump_dom(&url, 4000);
    assert!(dom.contains("fedistill console"), "{dom}");
    for n in names {
        assert!(row(&dom, n).contains("data-state=\"active\""), "{}", row(&dom, n));
    }
    assert_eq!(round_number(&dom), 0);
    assert!(
        dom.contains("data-live=\"ok\""),
        "the console's script did not poll /status:\n{dom}"
    );

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let kit = |n: &str| dir.join("federation").join("kits").join(n);
    let (mut clients, open) = rt.block_on(async {
        let mut clients = Vec::new();
        for n in names {
            let c = Client::connect(&kit(n)).await;
            c.hello().await;
            clients.push(c);
        }
        let open = clients[0].next_open().await;
        for c in &clients[1..] {
            assert_eq!(c.next_open().await.round, open.round);
        }
        for c in clients.iter_mut().take(2) {
            let msg = c.labels(&open, |_| {});
            assert!(matches!(c.request(&msg).await, Reply::Ack));
        }
        (clients, open)
    });
    assert_eq!(open.round.0, 1);

    // Round 1 collecting: two of three received, all three connected.
    procs.wait_for(server, "two contributions", Instant::now() + WAIT, |s| {
        s.status().filter(|v| v["received"].as_array().map_or(0, Vec::len) == 2)
    });
    let dom = chromium::dump_dom(&url, 500);
    assert_eq!(round_number(&dom), 1, "{dom}");
    assert!(dom.contains("2 of 3 contributions received"), "{dom}");
    for n in names {
        assert!(row(&dom, n).contains(">yes<"), "{n} connected: {}", row(&dom, n));
    }

    // Carol contributes: round 1 aggregates, round 2 opens after the report window.
    rt.block_on(async {
        let msg = clients[2].labels(&open, |_| {});
        assert!(matches!(clients[2].request(&msg).await, Reply::Ack));
    });
    procs.wait_for(server, "round 2", Instant::now() + WAIT, |s| {
        s.status().filter(|v| v["round"].as_u64() >= Some(2))
    });
    let dom = chromium::dump_dom(&url, 500);
    assert!(round_number(&dom) >= 2, "the round number advances:\n{dom}");
    assert!(
        row(&dom, "alice").contains("<td class=\"num\">1</td>"),
        "one contribution: {}",
        row(&dom, "alice")
    );

    // The operator revokes carol; the coordinator reloads the roster and the console shows it.
    let (ok, out) = common::fedistill(&dir, &["provision", "revoke", "carol", "--out", "federation"]);
    assert!(ok, "{out}");
    procs.wait_for(server, "carol revoked in /status", Instant::now() + WAIT, |s| {
        s.status().filter(|v| {
            v["participants"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["name"] == "carol" && p["revoked"] == true))
        })
    });
    let dom = chromium::dump_dom(&url, 500);
    assert!(
        row(&dom, "carol").contains("data-state=\"revoked\""),
        "{}",
        row(&dom, "carol")
    );
    assert!(row(&dom, "carol").contains(">revoked<"), "{}", row(&dom, "carol"));
    assert!(
        row(&dom, "alice").contains("data-state=\"active\""),
        "{}",
        row(&dom, "alice")
    );
    assert!(
        dom.contains("id=\"chart-bytes\"") && dom.contains("<circle"),
        "round history is drawn:\n{dom}"
    );

    // A screenshot of the page as the browser drew it (kept for the README with FEDISTILL_UPDATE_SCREENSHOT).
    let png = dir.join("console.png");
    chromium::screenshot(&url, &png, 1200, 900, 3000);
    if std::env::var_os("FEDISTILL_UPDATE_SCREENSHOT").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/img/console.png");
        std::fs::create_dir_all(docs.parent().expect("docs/img")).expect("mkdir docs/img");
        std::fs::copy(&png, &docs).expect("copy the screenshot");
    }
    drop(clients);
}

#[test]
fn a_console_bound_beyond_loopback_refuses_requests_without_the_operator_token() {
    let mut procs = Procs::new();
    let port = free_tcp_port();
    let names = ["alice", "bob"];
    // Provision, then remove the token: the coordinator creates it at first start (mode 0600).
    let dir = procs.dir().to_path_buf();
    configure(&mut procs, &names, &format!("0.0.0.0:{port}"), 1);
    let token_path = dir.join("federation/operator/console.token");
    assert!(token_path.is_file(), "provision init writes the console token");
    std::fs::remove_file(&token_path).expect("remove the token");
    procs.start_coordinator();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + WAIT;
    while get(addr, "/healthz", "").map(|r| r.0) != Some(200) {
        procs.check();
        assert!(Instant::now() < deadline, "no /healthz{}", procs.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    let token = std::fs::read_to_string(&token_path)
        .expect("console token")
        .trim()
        .to_string();
    assert!(token.len() >= 32, "{token}");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_path)
            .expect("token metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "token mode {mode:o}");
    }

    // Without the token: 401 on the console, /status and /metrics; /healthz stays open.
    for path in ["/", "/status", "/metrics", "/?token=wrong-token-0123456789"] {
        let (code, head, body) = get(addr, path, "").expect("a response");
        assert_eq!(code, 401, "{path}: {head}\n{body}");
        assert!(head.to_ascii_lowercase().contains("www-authenticate: bearer"), "{head}");
        assert!(!body.contains(&token));
    }
    let bad = get(
        addr,
        "/status",
        "Authorization: Bearer 0000000000000000000000000000000000\r\n",
    )
    .expect("response");
    assert_eq!(bad.0, 401);
    // With it: the bearer header, or the cookie that `/?token=` sets.
    let auth = format!("Authorization: Bearer {token}\r\n");
    let (code, _, body) = get(addr, "/status", &auth).expect("response");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"federation\":\"console\""), "{body}");
    assert_eq!(get(addr, "/metrics", &auth).expect("response").0, 200);
    let (code, head, _) = get(addr, &format!("/?token={token}"), "").expect("response");
    assert_eq!(code, 303, "{head}");
    assert!(
        head.contains("fedistill_console=") && head.contains("HttpOnly"),
        "{head}"
    );
    let (code, _, body) = get(addr, "/", &format!("Cookie: fedistill_console={token}\r\n")).expect("response");
    assert_eq!(code, 200);
    assert!(body.contains("id=\"participant-alice\""), "{body}");

    // The browser: refused without the token; with `?token=` it follows the redirect, keeps the cookie, and
    // the page's script polls /status with it.
    let dom = chromium::dump_dom(&format!("http://{addr}/"), 500);
    assert!(
        dom.contains("401 Unauthorized") && !dom.contains("participant-alice"),
        "{dom}"
    );
    let dom = chromium::dump_dom(&format!("http://{addr}/?token={token}"), 4000);
    assert!(
        dom.contains("id=\"participant-alice\"") && dom.contains("id=\"participant-bob\""),
        "{dom}"
    );
    assert!(
        dom.contains("data-live=\"ok\""),
        "the script's /status poll was refused:\n{dom}"
    );
}

#[test]
fn the_participant_page_shows_what_the_node_recorded_in_a_real_browser() {
    let mut procs = Procs::new();
    let dir = procs.dir().to_path_buf();
    // No coordinator: the participant keeps dialling while its page serves what its work directory holds.
    provision(&dir, "console", free_udp_port(), &["alice"]);
    common::write_participant_config(
        &dir,
        "alice",
        0,
        &[16],
        1,
        "[data]\ndataset = \"digits\"\nparticipants = 3\npartition = \"iid\"\nseed = 7\ntest_fraction = 0.1\npublic_fraction = 0.7\n\
         [privacy]\nepsilon_per_round = 1.0\ndelta = 1e-5\nbudget_epsilon = 8.0\n",
    );
    let port = free_tcp_port();
    let cfg = dir.join("participant-alice.toml");
    let text = std::fs::read_to_string(&cfg).expect("config");
    std::fs::write(&cfg, format!("status = \"127.0.0.1:{port}\"\n{text}")).expect("config");
    // What two rounds left behind: state.json, the guard's decision of round 2, two released rounds.
    let work = dir.join("work/alice");
    std::fs::create_dir_all(work.join("round-0002")).expect("workdir");
    let round = |n: u64, acc: f64, accepted: bool| {
        format!(
            "{{\"round\": {n}, \"bytes_up\": 7200, \"bytes_down\": 14400, \"student_accuracy\": {acc}, \"int8_accuracy\": {acc}, \
             \"consensus_accuracy\": 0.9, \"guard_accepted\": {accepted}, \"seconds\": 1.5, \"contributors\": 0}}"
        )
    };
    std::fs::write(
        work.join("state.json"),
        format!(
            "{{\"last_done\": 2, \"seq\": 1, \"accepted_metrics\": {{\"accuracy\": 0.81, \"macro_f1\": 0.8}}, \
             \"accepted_int8_accuracy\": 0.8, \"accepted_int8_bytes\": 1000, \"rounds\": [{}, {}], \"cosigned\": 2}}",
            round(1, 0.81, true),
            round(2, 0.62, false)
        ),
    )
    .expect("state.json");
    std::fs::write(
        work.join("round-0002/guard.json"),
        "{\"accepted\": false, \"max_relative_drop\": 0.05, \"checks\": [], \"reason\": \"accuracy dropped 23.5% > 5%\"}",
    )
    .expect("guard.json");
    std::fs::write(work.join("privacy.json"), "{\"rounds_released\": 2}").expect("privacy.json");
    procs.start_participant("alice");

    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + WAIT;
    while get(addr, "/healthz", "").map(|r| r.0) != Some(200) {
        procs.check();
        assert!(Instant::now() < deadline, "no participant page{}", procs.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    let dom = chromium::dump_dom(&format!("http://{addr}/"), 200);
    assert!(
        dom.contains("fedistill participant: <span id=\"participant\">alice</span>"),
        "{dom}"
    );
    let r2 = &dom[dom.find("<tr data-round=\"2\"").expect("round 2 row")..];
    let r2 = &r2[..r2.find("</tr>").expect("row end")];
    assert!(
        r2.contains("rolled back") && r2.contains("accuracy dropped 23.5% &gt; 5%"),
        "{r2}"
    );
    assert!(
        r2.contains("7200") && r2.contains("14.4k") && r2.contains("62.00%"),
        "{r2}"
    );
    assert!(
        dom.contains("of 8 spent") && dom.contains("2 round(s) released"),
        "privacy budget: {dom}"
    );
    assert!(dom.contains("<dt>macro_f1</dt>"), "served student's metrics: {dom}");
    let (code, _, json) = get(addr, "/status.json", "").expect("status.json");
    assert_eq!(code, 200);
    assert!(
        json.contains("\"participant\":\"alice\"") && json.contains("\"epsilon_spent\""),
        "{json}"
    );
}
