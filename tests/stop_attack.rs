//! The coordinator's `[stop]` rule against an insider: a participant driven by hand with a valid kit
//! (`common::Client`, real mutual-TLS QUIC to a real `fedistill coordinator` process) that lies in the only
//! field the rule reads, the accuracy of its signed round reports. The rule takes the median of the reported
//! accuracies, so one liar among three can neither stop the federation while the others still improve nor
//! keep it running once they have stopped improving; the same run with the liar telling the truth shows the
//! rule does stop (so the test can fail). The honest participants are hand-driven too.

mod common;

use std::time::{Duration, Instant};

use fedistill_shared::crypto::RoundId;
use fedistill_shared::ledger::Digest;
use fedistill_shared::wire::messages::{Reply, RoundReport, ToCoordinator};
use serde_json::Value;

use common::{free_udp_port, next_seq, provision, sign, Client, Procs, StatusServer};

const WAIT: Duration = Duration::from_secs(120);
const ROUNDS: u64 = 6;

/// A coordinator for alice, bob and mallory: 6 rounds, every participant needed, `[stop]` patience 1 with
/// an improvement of 0.01 needed.
fn start() -> (Procs, StatusServer) {
    let mut procs = Procs::new();
    let dir = procs.dir().to_path_buf();
    let port = free_udp_port();
    let server = StatusServer::on_free_port();
    provision(&dir, "stopping", port, &["alice", "bob", "mallory"]);
    std::fs::write(
        dir.join("coordinator.toml"),
        format!(
            "federation_dir = \"federation\"\nbind = \"127.0.0.1:{port}\"\nstore = \"coordinator.sqlite\"\n\
             status = \"{server}\"\nrounds = {ROUNDS}\nmin_participants = 3\nquorum = 3\n\
             collect_timeout_ms = 60000\nreport_timeout_ms = 60000\nsamples_per_round = 50\nrule = \"mean\"\n\
             temperature = 2.0\n[stop]\npatience = 1\nmin_delta = 0.01\n[data]\ndataset = \"digits\"\n\
             participants = 3\npartition = \"iid\"\nseed = 7\ntest_fraction = 0.1\npublic_fraction = 0.7\n"
        ),
    )
    .expect("write coordinator.toml");
    procs.spawn("coordinator", &["coordinator", "--config", "coordinator.toml"]);
    procs.wait_for(
        server,
        "the coordinator's status",
        Instant::now() + WAIT,
        StatusServer::status,
    );
    (procs, server)
}

fn report(c: &mut Client, round: RoundId, accuracy: f64) -> ToCoordinator {
    let body = RoundReport {
        round,
        metrics: vec![("accuracy".into(), accuracy)],
        student_digest: Digest([7; 32]),
        guard_accepted: true,
        guard_reason: String::new(),
        privacy_spend: None,
    };
    let seq = next_seq(&mut c.seq);
    ToCoordinator::Report(sign(&c.kit, round, seq, &body))
}

/// Runs rounds until the coordinator finishes; in round r (1-based) participant i reports `accuracy(i, r)`
/// (alice, bob, mallory). Returns the last round that ran and the final status.
fn run(accuracy: impl Fn(usize, u64) -> f64) -> (u64, Value) {
    let (mut procs, server) = start();
    let dir = procs.dir().to_path_buf();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut clients: Vec<Client> = rt.block_on(async {
        let mut v = Vec::new();
        for n in ["alice", "bob", "mallory"] {
            let c = Client::connect(&dir.join("federation/kits").join(n)).await;
            c.hello().await;
            v.push(c);
        }
        v
    });
    let mut last = 0;
    loop {
        let status = procs.wait_for(server, "a round opening or the end", Instant::now() + WAIT, |s| {
            s.status().filter(|v| {
                v["finished"] == Value::Bool(true) || (v["round"].as_u64() > Some(last) && v["phase"] == "collecting")
            })
        });
        if status["finished"] == Value::Bool(true) {
            return (last, status);
        }
        let round = rt.block_on(async {
            let mut round = RoundId(0);
            for c in &mut clients {
                let open = c.next_open().await;
                round = open.round;
                let msg = c.labels(&open, |_| {});
                assert!(
                    matches!(c.request(&msg).await, Reply::Ack),
                    "labels of round {}",
                    open.round.0
                );
            }
            round
        });
        last = round.0;
        procs.wait_for(server, "the round's reports window", Instant::now() + WAIT, |s| {
            s.status().filter(|v| {
                v["finished"] == Value::Bool(true) || (v["round"].as_u64() == Some(last) && v["phase"] == "reporting")
            })
        });
        rt.block_on(async {
            for (i, c) in clients.iter_mut().enumerate() {
                let msg = report(c, round, accuracy(i, last));
                let reply = c.request(&msg).await;
                assert!(
                    matches!(reply, Reply::Ack),
                    "report of participant {i} in round {last}: {reply:?}"
                );
            }
        });
    }
}

#[test]
fn one_lying_insider_can_neither_stop_nor_prolong_a_federation() {
    // Control: everyone reports a flat 0.8 from round 1. Round 2 does not improve: the federation stops
    // after round 2 of 6.
    let (last, status) = run(|_, _| 0.8);
    assert_eq!(last, 2, "the honest federation stops once the median stalls: {status}");

    // Alice and bob still improve (0.50, 0.55, 0.60, ...); mallory reports 1.0 in round 1 (to set a best
    // nobody reaches again), then 0.0 (to drag the median flat), then a value no accuracy has. Every round's
    // median is the lower honest figure, which keeps rising: all 6 rounds run.
    let (last, status) = run(|i, r| match (i, r) {
        (2, 1) => 1.0,
        (2, 2..=3) => 0.0,
        (2, _) => 1e9,
        _ => 0.45 + 0.05 * r as f64,
    });
    assert_eq!(
        last, ROUNDS,
        "mallory stopped a federation that still improves: {status}"
    );

    // Alice and bob have stopped improving (a flat 0.8); mallory reports a steady rise to keep the
    // federation running. The median is 0.8 either way: it still stops after round 2.
    let (last, status) = run(|i, r| if i == 2 { 0.1 * r as f64 } else { 0.8 });
    assert_eq!(last, 2, "mallory kept a stalled federation running: {status}");
}
