//! End to end with real processes: the coordinator's `[quarantine]` table (issue 8). Four real participants
//! and one hand-driven attacker (a real kit and the real protocol) that sends confidently wrong soft labels
//! every round it may. With `consecutive = 1` and `release_after_rounds = 1` the attacker is quarantined in
//! round 1, left out of round 2 and released after it, contributes again in round 3 and is quarantined again,
//! and is released after round 4. The update log holds the four decisions and `fedistill audit verify`
//! (which rechecks each decision's consistency) passes. The attacker's reports also carry a typed privacy
//! spend: a malformed one is refused (`bad_payload`) before any state changes, and the well-formed one that
//! follows is accepted and logged as a `PrivacySpend` record from the typed figures.
//! Set `FEDISTILL_KEEP_TEST_DIRS=1` to keep the test's directory (configs, store, `logs/*.log`).

mod common;

use std::time::{Duration, Instant};

use fedistill_participant::transport::{connect, ConnectOptions, Kit};
use fedistill_shared::crypto::{Digest, ReplayGuard, Signer};
use fedistill_shared::wire::messages::{
    PrivacySpend, Reply, RoundReport, ToCoordinator, ToParticipant, KIND_TO_PARTICIPANT, PROTOCOL_VERSION,
};
use fedistill_transport::recv_message;

use common::{
    audit_export_verify_show, f32_labels, free_udp_port, names, next_seq, provision, request, sign,
    write_participant_config, write_trust, Procs, StatusServer,
};

/// Overall limit of the run.
const WAIT: Duration = Duration::from_secs(300);
/// Classes of `digits`.
const CLASSES: usize = 10;
const ROUNDS: u64 = 4;
const HONEST: [&str; 4] = ["p0", "p1", "p2", "p3"];

fn data_toml() -> &'static str {
    "[data]\ndataset = \"digits\"\nparticipants = 4\npartition = \"iid\"\nseed = 7\ntest_fraction = 0.1\npublic_fraction = 0.7\n"
}

/// The attacker: a real kit and connection; every round it may, it sends one-hot labels on class
/// `id % 10` (unrelated to the digits, so far from the honest consensus) and reports the rounds it
/// contributed to: first with a malformed privacy spend, then with a well-formed one. Returns the reply code
/// to each of its soft-label messages and to each of its reports, per round.
async fn attacker(dir: std::path::PathBuf) -> (Vec<(u64, String)>, Vec<(u64, String)>) {
    let kit = Kit::load(&dir).expect("load kit");
    let conn = connect(&kit, &ConnectOptions::default()).await.expect("mTLS connect");
    let mut seq = 0u64;
    let hello = request(
        &conn,
        &ToCoordinator::Hello {
            version: PROTOCOL_VERSION,
            last_checkpoint_size: 0,
        },
    )
    .await;
    assert!(matches!(hello, Reply::Welcome { .. }), "{hello:?}");
    let guard = ReplayGuard::new(kit.federation().clone());
    let mut codes = Vec::new();
    let mut report_codes = Vec::new();
    let mut contributed = Vec::new();
    loop {
        let Ok(mut recv) = conn.accept_uni().await else {
            return (codes, report_codes);
        };
        let Ok((kind, msg)) = recv_message::<ToParticipant>(&mut recv, 1 << 24, Duration::from_secs(30)).await else {
            return (codes, report_codes);
        };
        assert_eq!(kind, KIND_TO_PARTICIPANT);
        match msg {
            ToParticipant::Open(s) => {
                let round = s.round;
                let open = s
                    .verify(&kit.coordinator_key, &Signer::Coordinator, &guard, round)
                    .expect("coordinator signature")
                    .into_inner();
                let probs: Vec<f32> = open
                    .sample_ids
                    .iter()
                    .flat_map(|id| (0..CLASSES).map(move |c| if c == (*id as usize) % CLASSES { 1.0 } else { 0.0 }))
                    .collect();
                let body = f32_labels(&open, &probs, CLASSES);
                let signed = sign(&kit, round, next_seq(&mut seq), &body);
                let reply = request(&conn, &ToCoordinator::SoftLabels(signed)).await;
                if matches!(reply, Reply::Ack) {
                    contributed.push(round);
                }
                codes.push((round.0, reply_code(reply)));
            }
            ToParticipant::Aggregate(s) => {
                let round = s.round;
                if contributed.contains(&round) {
                    // No `dp_*` metrics: the log's PrivacySpend record comes from the typed field alone.
                    let report = |epsilon_round: f64| RoundReport {
                        round,
                        metrics: vec![("accuracy".into(), 0.1)],
                        student_digest: Digest::of(b"attacker"),
                        guard_accepted: true,
                        guard_reason: String::new(),
                        privacy_spend: Some(PrivacySpend {
                            epsilon_round,
                            epsilon_total: 0.25 * round.0 as f64,
                            delta: 1e-5,
                        }),
                    };
                    // A negative epsilon is refused before any state changes, so the next report is no duplicate.
                    for epsilon_round in [-1.0, 0.25] {
                        let signed = sign(&kit, round, next_seq(&mut seq), &report(epsilon_round));
                        let reply = request(&conn, &ToCoordinator::Report(signed)).await;
                        report_codes.push((round.0, reply_code(reply)));
                    }
                }
            }
            ToParticipant::Finished { .. } => {
                conn.close(0u32.into(), b"done");
                return (codes, report_codes);
            }
            other => panic!("a federation in the clear pushed a secure-aggregation message: {other:?}"),
        }
    }
}

/// `ack`, or the reject code's name.
fn reply_code(reply: Reply) -> String {
    match reply {
        Reply::Ack => "ack".to_string(),
        Reply::Reject { code, .. } => code.to_string(),
        other => format!("{other:?}"),
    }
}

#[test]
fn a_persistent_attacker_is_quarantined_released_and_quarantined_again() {
    let mut procs = Procs::new();
    let dir = procs.dir().to_path_buf();
    let port = free_udp_port();
    let status = StatusServer::on_free_port();
    let fed_dir = dir.join("federation");
    let all: Vec<&str> = HONEST.iter().copied().chain(["mallory"]).collect();
    let federation = provision(&dir, "quarantine", port, &all);
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
        write_participant_config(&dir, n, shard, &[32], 5, data_toml());
    }
    write_trust(&dir, &federation, &HONEST);

    let started = Instant::now();
    let deadline = started + WAIT;
    procs.start_coordinator();
    procs.wait_for(status, "/status", deadline, StatusServer::status);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mallory = rt.spawn(attacker(fed_dir.join("kits").join("mallory")));
    for n in HONEST {
        procs.start_participant(n);
    }
    let what = format!("a finished /status within {WAIT:?}");
    let done = procs.wait_for(status, &what, deadline, StatusServer::finished);
    procs.wait_all_exit(deadline, "processes did not exit");
    let (codes, report_codes) = rt
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
    // Its reports in rounds 1 and 3: the malformed privacy spend refused, the well-formed one accepted.
    let want: Vec<(u64, String)> = [1, 1, 3, 3]
        .into_iter()
        .zip(["bad_payload", "ack", "bad_payload", "ack"])
        .map(|(r, c)| (r, c.to_string()))
        .collect();
    assert_eq!(report_codes, want);

    let show = audit_export_verify_show(&dir);
    let decisions: Vec<&str> = show
        .lines()
        .filter(|l| l.contains("QUARANTINE") || l.contains("RELEASE"))
        .collect();
    assert_eq!(decisions.len(), 4, "{decisions:?}");
    // Only the accepted typed spends are logged (the honest participants run without DP).
    let spends: Vec<&str> = show.lines().filter(|l| l.contains("privacy spend by")).collect();
    assert_eq!(spends.len(), 2, "{spends:?}");
    for (line, needle) in spends.iter().zip([
        "round 1: privacy spend by mallory: epsilon=0.25 delta=0.00001",
        "round 3: privacy spend by mallory: epsilon=0.25 delta=0.00001",
    ]) {
        assert!(line.contains(needle), "{needle}: {line}");
    }
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
    let coordinator_log = procs.log("coordinator");
    assert!(
        coordinator_log.contains("participant released from quarantine"),
        "{coordinator_log}"
    );
}
