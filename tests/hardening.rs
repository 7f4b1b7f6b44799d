//! Regression tests for the findings of the independent attack on the coordinator (issue #16), written as
//! the attacker wrote them: a client driven by hand with a valid participant kit (`common::Client`: the
//! real kit, real mutual-TLS QUIC to a real `fedistill coordinator` process), lying in the fields it
//! controls. The honest participants are hand-driven too, so every step is under the test's control.
//! Set `FEDISTILL_KEEP_TEST_DIRS=1` to keep each test's directory.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fedistill_shared::crypto::{RoundId, Signed, Signer};
use fedistill_shared::wire::messages::{Abstain, AbstainReason, RejectCode, Reply, ToCoordinator, KIND_TO_COORDINATOR};
use fedistill_shared::wire::{HEADER_LEN, MAGIC, VERSION};
use fedistill_transport::close_code;

use common::{free_udp_port, metric, names, provision, reject_code, rejections, round_of, Client, Procs, StatusServer};

/// Overall limit of any single wait (debug builds on a shared 2-core machine).
const WAIT: Duration = Duration::from_secs(120);
/// The coordinator's frame cap in these tests (its default).
const MAX_FRAME: usize = 16 * 1024 * 1024;

/// A coordinator process for hand-driven participants, on `digits` with three shards.
struct Coord {
    procs: Procs,
    dir: PathBuf,
    server: StatusServer,
}

impl Coord {
    fn start(names: &[&str], rounds: u64, min_participants: usize, extra: &str) -> Coord {
        Self::start_with_env(names, rounds, min_participants, extra, &[])
    }

    fn start_with_env(
        names: &[&str],
        rounds: u64,
        min_participants: usize,
        extra: &str,
        env: &[(&str, &str)],
    ) -> Coord {
        let mut procs = Procs::new();
        let dir = procs.dir().to_path_buf();
        let port = free_udp_port();
        let server = StatusServer::on_free_port();
        provision(&dir, "hardening", port, names);
        // A short report window unless `extra` sets one.
        let report = if extra.contains("report_timeout_ms") {
            ""
        } else {
            "report_timeout_ms = 1500\n"
        };
        std::fs::write(
            dir.join("coordinator.toml"),
            format!(
                "federation_dir = \"federation\"\nbind = \"127.0.0.1:{port}\"\nstore = \"coordinator.sqlite\"\n\
                 status = \"{server}\"\nrounds = {rounds}\nmin_participants = {min_participants}\nquorum = 2\n\
                 collect_timeout_ms = 60000\n{report}samples_per_round = 100\nrule = \"mean\"\n\
                 temperature = 2.0\n{extra}\n[data]\ndataset = \"digits\"\nparticipants = 3\npartition = \"iid\"\n\
                 seed = 7\ntest_fraction = 0.1\npublic_fraction = 0.7\n"
            ),
        )
        .expect("write coordinator.toml");
        procs.spawn_with_env("coordinator", &["coordinator", "--config", "coordinator.toml"], env);
        let mut c = Coord { procs, dir, server };
        c.wait_for("the coordinator's status server", StatusServer::status);
        c
    }

    fn kit(&self, name: &str) -> PathBuf {
        self.dir.join("federation").join("kits").join(name)
    }

    fn wait_for<T>(&mut self, what: &str, probe: impl FnMut(StatusServer) -> Option<T>) -> T {
        self.procs.wait_for(self.server, what, Instant::now() + WAIT, probe)
    }

    fn metrics(&mut self) -> String {
        self.wait_for("/metrics", StatusServer::metrics)
    }
}

/// A signed abstention for `round` that names `signer` but is signed with `client`'s own key.
fn forged_abstain(client: &Client, signer: Signer, round: RoundId, seq: u64) -> ToCoordinator {
    let body = Abstain {
        round,
        reason: AbstainReason::BudgetExhausted,
        figures: vec![],
    };
    ToCoordinator::Abstain(
        Signed::sign(
            &client.kit.signing,
            signer,
            client.kit.federation().clone(),
            round,
            seq,
            &body,
        )
        .expect("sign"),
    )
}

/// A correctly signed abstention whose reason this build does not know (as a newer participant might
/// send): the same fields, the reason a free string.
fn abstain_with_unknown_reason(client: &Client, round: RoundId, seq: u64, reason: &str) -> ToCoordinator {
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Newer {
        round: RoundId,
        reason: String,
        figures: Vec<(String, f64)>,
    }
    impl fedistill_shared::crypto::SignedMessage for Newer {
        const DOMAIN: &'static str = <Abstain as fedistill_shared::crypto::SignedMessage>::DOMAIN;
    }
    let me = Signer::Participant(client.kit.participant().clone());
    let body = Newer {
        round,
        reason: reason.into(),
        figures: vec![],
    };
    let s = Signed::sign(
        &client.kit.signing,
        me.clone(),
        client.kit.federation().clone(),
        round,
        seq,
        &body,
    )
    .expect("sign");
    ToCoordinator::Abstain(Signed::from_parts(
        me,
        client.kit.federation().clone(),
        round,
        seq,
        s.payload,
        s.signature,
    ))
}

/// Finding 1: mallory, enrolled, signs with its own key an envelope that names alice as the signer with a
/// sequence number near 2^64. Before the fix that poisoned alice's replay guard (persisted, so it survived
/// restarts) and every later message of alice's was refused as a replay.
#[test]
fn a_forged_signer_field_does_not_lock_the_victim_out_even_across_a_restart() {
    let mut coord = Coord::start(&["alice", "bob", "mallory"], 2, 3, "");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (alice_seq, open_a) = rt.block_on(async {
        let alice = Client::connect(&coord.kit("alice")).await;
        let bob = Client::connect(&coord.kit("bob")).await;
        let mallory = Client::connect(&coord.kit("mallory")).await;
        for c in [&alice, &bob, &mallory] {
            c.hello().await;
        }
        let open = mallory.next_open().await;
        let alice_name = Signer::Participant(alice.kit.participant().clone());
        // The attack as found, and its variant with mallory's key checked against alice's identity.
        let r = mallory
            .request(&forged_abstain(&mallory, alice_name.clone(), open.round, u64::MAX - 1))
            .await;
        assert_eq!(reject_code(&r), RejectCode::SignerMismatch, "{r:?}");
        // A sequence number far ahead of the clock under mallory's own name is refused too (it would let
        // a sender freeze its own numbering).
        let me = Signer::Participant(mallory.kit.participant().clone());
        let r = mallory
            .request(&forged_abstain(&mallory, me, open.round, u64::MAX - 1))
            .await;
        assert_eq!(reject_code(&r), RejectCode::Replay, "{r:?}");
        // An abstention reason this build does not know is refused by name, and changes nothing (mallory
        // still contributes below).
        let seq = common::next_seq(&mut 0);
        let r = mallory
            .request(&abstain_with_unknown_reason(
                &mallory,
                open.round,
                seq,
                "guard_regression",
            ))
            .await;
        assert_eq!(reject_code(&r), RejectCode::BadPayload, "{r:?}");
        let Reply::Reject { message, .. } = &r else {
            unreachable!()
        };
        assert!(
            message.contains("unknown abstention reason `guard_regression` (this build knows budget_exhausted)"),
            "{message}"
        );
        let mut alice = alice;
        let open_a = alice.next_open().await;
        let labels = alice.labels(&open_a, |_| {});
        let r = alice.request(&labels).await;
        assert!(
            matches!(r, Reply::Ack),
            "the victim's contribution is accepted after the attack: {r:?}"
        );
        // The accepted envelope, sent again, is a replay.
        let r = alice.request(&labels).await;
        assert_eq!(reject_code(&r), RejectCode::Replay, "{r:?}");
        assert_eq!(open_a.round, open.round);
        (alice.seq, open_a)
    });
    let round1 = open_a.round;
    let metrics = coord.metrics();
    assert!(rejections(&metrics, "signer_mismatch") >= 1.0, "{metrics}");
    // Restart the coordinator mid-round: alice's acknowledged contribution and her (unpoisoned) replay
    // state come back from the store.
    coord.procs.kill("coordinator");
    coord.procs.start_coordinator();
    coord.wait_for("the restarted coordinator", StatusServer::status);
    rt.block_on(async {
        let mut alice = Client::connect(&coord.kit("alice")).await;
        alice.seq = alice_seq;
        let mut bob = Client::connect(&coord.kit("bob")).await;
        let mut mallory = Client::connect(&coord.kit("mallory")).await;
        for c in [&alice, &bob, &mallory] {
            c.hello().await;
        }
        // The resent contribution is a duplicate (kept), not a replay (poisoned guard).
        let msg = alice.labels(&open_a, |_| {});
        let r = alice.request(&msg).await;
        assert_eq!(reject_code(&r), RejectCode::Duplicate, "{r:?}");
        for c in [&mut bob, &mut mallory] {
            let open = c.next_open().await;
            let msg = c.labels(&open, |_| {});
            let r = c.request(&msg).await;
            assert!(matches!(r, Reply::Ack), "{r:?}");
        }
        // Round 2: alice's next contribution is accepted.
        let open2 = loop {
            let o = alice.next_open().await;
            if o.round > round1 {
                break o;
            }
        };
        let msg = alice.labels(&open2, |_| {});
        let r = alice.request(&msg).await;
        assert!(matches!(r, Reply::Ack), "alice contributes to round 2: {r:?}");
    });
    let status = coord.wait_for("round 1 aggregated", |s| {
        s.status().filter(|v| round_of(v, round1.0).is_some())
    });
    let r1 = round_of(&status, round1.0).expect("round 1");
    let mut contributors = names(&r1["contributors"]);
    contributors.sort();
    assert_eq!(contributors, ["alice", "bob", "mallory"], "{r1}");
}

/// Finding 2: one kit opening connection after connection used to fill the global limit (1,024) and lock
/// everyone else out. Now a participant gets at most four; the rest of the federation is unaffected.
#[test]
fn a_participant_holding_its_connection_limit_open_does_not_stop_the_others() {
    let mut coord = Coord::start(&["alice", "bob", "mallory"], 1, 3, "");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut held = Vec::new();
        let mut refused = 0;
        for _ in 0..24 {
            let c = Client::connect(&coord.kit("mallory")).await;
            // The handshake completes; the coordinator then admits or closes the connection.
            let (mut send, mut recv) = match c.conn.open_bi().await {
                Ok(s) => s,
                Err(e) => {
                    assert_refused(&e.into(), &c);
                    refused += 1;
                    continue;
                }
            };
            let hello = ToCoordinator::Hello {
                version: fedistill_shared::wire::messages::PROTOCOL_VERSION,
                last_checkpoint_size: 0,
            };
            let sent = fedistill_transport::send_message(&mut send, KIND_TO_COORDINATOR, &hello).await;
            let _ = send.finish();
            let reply = match sent {
                Ok(()) => fedistill_transport::recv_message::<Reply>(&mut recv, 1 << 20, Duration::from_secs(30)).await,
                Err(e) => Err(e),
            };
            match reply {
                Ok((_, Reply::Welcome { .. })) => held.push(c),
                Ok((_, other)) => panic!("unexpected reply {other:?}"),
                Err(e) => {
                    assert_refused(&e, &c);
                    refused += 1;
                }
            }
        }
        assert_eq!(held.len(), 4, "mallory holds exactly its own limit");
        assert_eq!(refused, 20);
        // Everyone else still gets in and the round completes.
        let mut alice = Client::connect(&coord.kit("alice")).await;
        let mut bob = Client::connect(&coord.kit("bob")).await;
        alice.hello().await;
        bob.hello().await;
        // The coordinator pushes to a participant's newest connection.
        let mut m = held.pop().expect("a held connection");
        for c in [&mut alice, &mut bob, &mut m] {
            let open = c.next_open().await;
            let msg = c.labels(&open, |_| {});
            let r = c.request(&msg).await;
            assert!(matches!(r, Reply::Ack), "{r:?}");
        }
        drop(held);
    });
    let status = coord.wait_for("round 1 aggregated", |s| {
        s.status().filter(|v| round_of(v, 1).is_some())
    });
    let mut contributors = names(&round_of(&status, 1).expect("round 1")["contributors"]);
    contributors.sort();
    assert_eq!(contributors, ["alice", "bob", "mallory"]);
    let metrics = coord.metrics();
    assert_eq!(rejections(&metrics, "participant_connection_limit"), 20.0, "{metrics}");
}

/// The refused connection was closed by the coordinator with the connection-limit code.
fn assert_refused(e: &fedistill_transport::TransportError, c: &Client) {
    let code = match c.conn.close_reason() {
        Some(quinn::ConnectionError::ApplicationClosed(a)) => a.error_code.into_inner(),
        other => panic!("expected the coordinator to close the connection, got {other:?} after {e}"),
    };
    assert_eq!(code, u64::from(close_code::TOO_MANY_CONNECTIONS), "{e}");
}

/// The header of a frame to the coordinator that announces `payload` bytes.
fn frame_header(payload: usize) -> Vec<u8> {
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(&MAGIC);
    header.push(VERSION);
    header.push(KIND_TO_COORDINATOR.0);
    header.extend_from_slice(&[0, 0]);
    header.extend_from_slice(&(payload as u32).to_be_bytes());
    header
}

/// Waits (at most [`WAIT`]) until the coordinator's frame bytes in flight are exactly `want`.
async fn until_frame_bytes_in_flight(server: StatusServer, want: usize) {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = server
            .metrics()
            .map(|t| metric(&t, "fedistill_coordinator_frame_bytes_in_flight"));
        if now == Some(want as f64) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "frame bytes in flight {now:?}, waiting for {want}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Limits per identity, request streams: mallory holds `STREAMS_PER_PARTICIPANT` request streams open, each
/// announcing a frame it never finishes. Its next request, on another of its connections, is neither read
/// nor refused: it waits for one of mallory's own slots (the coordinator acknowledges its bytes at the
/// transport level and answers nothing), while alice's hello and request are answered at once. As soon as
/// mallory gives one of its streams up, the waiting request is served.
#[test]
fn a_participant_holding_its_stream_limit_waits_alone_and_others_are_served() {
    use fedistill_coordinator::service::STREAMS_PER_PARTICIPANT;
    use fedistill_shared::wire::messages::PROTOCOL_VERSION;
    use fedistill_transport::{recv_message, send_message};
    // The held streams must not time out during the test.
    let coord = Coord::start(&["alice", "bob", "mallory"], 1, 3, "stream_timeout_ms = 600000");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mallory = Client::connect(&coord.kit("mallory")).await;
        mallory.hello().await;
        const PAYLOAD: usize = 1000;
        let mut held = Vec::new();
        for _ in 0..STREAMS_PER_PARTICIPANT {
            let (mut send, recv) = mallory.conn.open_bi().await.expect("a request stream");
            send.write_all(&frame_header(PAYLOAD)).await.expect("header");
            send.write_all(&[0xA5; PAYLOAD / 2]).await.expect("half the payload");
            held.push((send, recv));
        }
        // Every one of them is being read: each holds the buffer of its frame (no one else is connected).
        until_frame_bytes_in_flight(coord.server, STREAMS_PER_PARTICIPANT * (HEADER_LEN + PAYLOAD)).await;

        // One more request from mallory, complete, on a second connection.
        let second = Client::connect(&coord.kit("mallory")).await;
        let (mut send, mut recv) = second.conn.open_bi().await.expect("a request stream");
        let hello = ToCoordinator::Hello {
            version: PROTOCOL_VERSION,
            last_checkpoint_size: 0,
        };
        send_message(&mut send, KIND_TO_COORDINATOR, &hello)
            .await
            .expect("send");
        send.finish().expect("finish");
        // The coordinator's transport has every byte of it, and did not stop the stream (no refusal).
        let stopped = tokio::time::timeout(WAIT, send.stopped())
            .await
            .expect("the request is acknowledged")
            .expect("the stream stays open");
        assert_eq!(stopped, None, "the coordinator stopped mallory's request stream");
        let (tx, mut answered) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let _ = tx.send(recv_message::<Reply>(&mut recv, MAX_FRAME, WAIT).await);
        });

        // Another participant is served at once.
        let alice = Client::connect(&coord.kit("alice")).await;
        alice.hello().await;
        let r = alice.request(&ToCoordinator::GetRoster).await;
        assert!(matches!(r, Reply::Roster { .. }), "{r:?}");

        // By then mallory's request has had no answer of any kind, and no byte of it was read.
        assert!(
            matches!(
                answered.try_recv(),
                Err(tokio::sync::oneshot::error::TryRecvError::Empty)
            ),
            "mallory's request beyond its stream limit was answered"
        );
        until_frame_bytes_in_flight(coord.server, STREAMS_PER_PARTICIPANT * (HEADER_LEN + PAYLOAD)).await;

        // Mallory gives one stream up: its slot goes to the waiting request, which is served.
        let (mut send, recv) = held.pop().expect("a held stream");
        send.reset(0u32.into()).expect("reset");
        drop(recv);
        let reply = tokio::time::timeout(WAIT, &mut answered)
            .await
            .expect("served once a slot is free")
            .expect("the reader task")
            .expect("a reply");
        assert!(matches!(reply.1, Reply::Welcome { .. }), "{reply:?}");
        drop(held);
    });
}

/// Resident memory of process `pid` in bytes (Linux).
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kb * 1024
}

/// Finding 4: the frame reader allocated each announced length (up to the 16 MiB cap) before any payload
/// arrived, and unidirectional streams were never read, so one authenticated connection could pin about
/// 160 MiB. Now buffers grow with the bytes received under the participant's own budget (two full frames)
/// and a global one, unidirectional streams are refused, and the connection's transport buffers are
/// bounded by its 16 MiB receive window. The attacker opens every request stream it may, announces a
/// full-size frame on each and pushes as much payload as the coordinator will take.
#[test]
fn one_connection_pins_at_most_its_budgets_and_others_are_still_served() {
    let coord = Coord::start(&["alice", "mallory", "bob"], 1, 3, "stream_timeout_ms = 120000");
    let pid = coord.procs.pid("coordinator");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let before = rss_bytes(pid);
    let (in_flight, grown) = rt.block_on(async {
        let mallory = Client::connect(&coord.kit("mallory")).await;
        mallory.hello().await;
        // No unidirectional stream can even be opened: the coordinator grants none. The timeout only bounds
        // the wait for a credit that never comes.
        assert!(
            tokio::time::timeout(Duration::from_secs(2), mallory.conn.open_uni())
                .await
                .is_err(),
            "the coordinator must grant no unidirectional streams"
        );
        let sent = Arc::new(AtomicU64::new(0));
        let payload = MAX_FRAME;
        let header = frame_header(payload);
        let mut writers = Vec::new();
        for _ in 0..16 {
            let Ok((mut send, recv)) = mallory.conn.open_bi().await else {
                break;
            };
            let header = header.clone();
            let sent = sent.clone();
            writers.push(tokio::spawn(async move {
                let _recv = recv;
                if send.write_all(&header).await.is_err() {
                    return;
                }
                let chunk = vec![0xA5u8; 64 * 1024];
                // Stop one chunk short of the frame so no frame ever completes.
                for _ in 0..(payload / chunk.len() - 1) {
                    if send.write_all(&chunk).await.is_err() {
                        return;
                    }
                    sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
                std::future::pending::<()>().await;
            }));
        }
        // Wait until the coordinator stops taking bytes: the amount sent has not moved for two seconds.
        let mut last = (0, Instant::now());
        let deadline = Instant::now() + WAIT;
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = sent.load(Ordering::Relaxed);
            if now != last.0 {
                last = (now, Instant::now());
            } else if last.1.elapsed() >= Duration::from_secs(2) && now > 0 {
                break;
            }
            assert!(Instant::now() < deadline, "the coordinator kept taking bytes: {now}");
        }
        let sent_total = sent.load(Ordering::Relaxed);
        let grown = rss_bytes(pid).saturating_sub(before);
        let text = coord.server.metrics().expect("/metrics");
        let in_flight = metric(&text, "fedistill_coordinator_frame_bytes_in_flight");
        eprintln!(
            "attacker pushed {:.1} MiB on {} streams; coordinator RSS grew {:.1} MiB; frames in flight {:.1} MiB",
            sent_total as f64 / 1048576.0,
            writers.len(),
            grown as f64 / 1048576.0,
            in_flight / 1048576.0
        );
        // Another participant is served meanwhile: its request is read and answered.
        let alice = Client::connect(&coord.kit("alice")).await;
        alice.hello().await;
        for w in writers {
            w.abort();
        }
        (in_flight, grown)
    });
    let own_budget = 2.0 * (MAX_FRAME + HEADER_LEN) as f64;
    assert!(
        in_flight > 0.0 && in_flight <= own_budget,
        "in-flight frame bytes {in_flight}"
    );
    // Documented bound (docs/security.md, "Memory per connection"): 32 MiB of frames + a 16 MiB receive
    // window, plus transport and allocator overhead (55 to 69 MiB of growth measured in all, the allocator's
    // share varying from run to run); before the fix the same attack grew the coordinator by over 120 MiB.
    // The exact guarantee is the in-flight figure above; this catches a reader that pins memory again.
    assert!(
        grown <= 100 * 1024 * 1024,
        "one connection grew the coordinator by {} MiB",
        grown / 1048576
    );
}

/// Persist before broadcast: the coordinator crashes (a failpoint aborts it) after round 2's opening is
/// stored and before it is sent. Nothing acknowledged is lost (round 1 stays committed and is not run
/// again), and after the restart every participant receives round 2's opening and completes it.
#[test]
fn a_crash_between_storing_and_sending_a_round_opening_loses_nothing_and_strands_no_one() {
    let env = [(fedistill_coordinator::service::FAILPOINT_ENV, "open-persisted:2")];
    let mut coord = Coord::start_with_env(&["alice", "bob", "carol"], 2, 3, "", &env);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    // The clients stay connected until the crash, so round 2 opens (it needs three participants).
    let clients = rt.block_on(async {
        let mut clients = Vec::new();
        for n in ["alice", "bob", "carol"] {
            let c = Client::connect(&coord.kit(n)).await;
            c.hello().await;
            clients.push(c);
        }
        for c in &mut clients {
            let open = c.next_open().await;
            assert_eq!(open.round, RoundId(1));
            let msg = c.labels(&open, |_| {});
            let r = c.request(&msg).await;
            assert!(matches!(r, Reply::Ack), "{r:?}");
        }
        clients
    });
    let status = coord.procs.wait_exit("coordinator", Instant::now() + WAIT);
    drop(clients);
    assert!(!status.success(), "the failpoint aborts the coordinator: {status}");
    let log = coord.procs.log("coordinator");
    assert!(log.contains("failpoint reached"), "{log}");
    assert!(
        log.contains("aggregate committed and published"),
        "round 1 committed first: {log}"
    );
    // The opening the crashed coordinator stored before it could send it.
    let stored = {
        let store = fedistill_coordinator::store::Store::open_read_only(&coord.dir.join("coordinator.sqlite"))
            .expect("the store");
        let bytes = store
            .state("round_snapshot")
            .expect("read the snapshot")
            .expect("a stored round snapshot");
        let snap: fedistill_shared::protocol::Snapshot = serde_json::from_slice(&bytes).expect("decode the snapshot");
        snap.open.expect("the stored snapshot holds an opening")
    };
    assert_eq!(
        stored.round,
        RoundId(2),
        "round 2's opening was stored before the crash"
    );
    coord.procs.start_coordinator();
    coord.wait_for("the restarted coordinator", StatusServer::status);
    rt.block_on(async {
        for n in ["alice", "bob", "carol"] {
            let mut c = Client::connect(&coord.kit(n)).await;
            c.hello().await;
            let open = c.next_open().await;
            assert_eq!(open.round, RoundId(2), "{n} is sent the stored round 2 opening");
            // The very opening that was stored: same round, samples, rule and deadlines, not a new one.
            assert_eq!(open, stored, "{n} is sent the opening the store holds");
            let msg = c.labels(&open, |_| {});
            let r = c.request(&msg).await;
            assert!(matches!(r, Reply::Ack), "{n}: {r:?}");
        }
    });
    let status = coord.wait_for("round 2 aggregated", |s| {
        s.status().filter(|v| round_of(v, 2).is_some())
    });
    assert!(round_of(&status, 1).is_none(), "round 1 is not run again: {status}");
    let mut contributors = names(&round_of(&status, 2).expect("round 2")["contributors"]);
    contributors.sort();
    assert_eq!(contributors, ["alice", "bob", "carol"]);
}

/// Sends `msg` on a fresh stream and returns the reply, or `None` if the connection fails first (the
/// coordinator was killed).
async fn try_request(conn: &quinn::Connection, msg: &ToCoordinator) -> Option<Reply> {
    use fedistill_shared::wire::messages::KIND_REPLY;
    let (mut send, mut recv) = conn.open_bi().await.ok()?;
    fedistill_transport::send_message(&mut send, KIND_TO_COORDINATOR, msg)
        .await
        .ok()?;
    send.finish().ok()?;
    let (kind, reply) = fedistill_transport::recv_message::<Reply>(&mut recv, MAX_FRAME, Duration::from_secs(30))
        .await
        .ok()?;
    (kind == KIND_REPLY).then_some(reply)
}

/// Group commit: contributions that arrive together are made durable in one transaction, and none is
/// acknowledged before it. Eleven of twelve participants send their soft labels at once (the twelfth stays
/// silent, so the round cannot commit); the coordinator is SIGKILLed as soon as four acknowledgements
/// arrived, with the other contributions in flight (being verified, batched, written or answered). After
/// a restart every acknowledged contribution is in the round without being sent again, and the round
/// aggregates with each of them.
#[test]
fn contributions_acknowledged_under_concurrent_load_survive_a_sigkill() {
    let names_owned: Vec<String> = (0..12).map(|i| format!("n{i:02}")).collect();
    let all: Vec<&str> = names_owned.iter().map(String::as_str).collect();
    let mut coord = Coord::start(&all, 1, all.len(), "");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (acked, in_flight, opens) = rt.block_on(async {
        let mut clients = Vec::new();
        for n in &all {
            let c = Client::connect(&coord.kit(n)).await;
            c.hello().await;
            clients.push(c);
        }
        // Every client holds its signed soft labels before the first one is sent.
        let (mut msgs, mut opens) = (Vec::new(), Vec::new());
        for c in clients.iter_mut() {
            let open = c.next_open().await;
            assert_eq!(open.round, RoundId(1));
            msgs.push(c.labels(&open, |_| {}));
            opens.push((open, c.seq));
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for (c, m) in clients.iter().zip(msgs).take(all.len() - 1) {
            let (conn, name, tx) = (c.conn.clone(), c.kit.participant().to_string(), tx.clone());
            tokio::spawn(async move {
                let _ = tx.send((name, try_request(&conn, &m).await));
            });
        }
        drop(tx);
        let mut acked = Vec::new();
        while acked.len() < 4 {
            let (name, reply) = rx.recv().await.expect("the first acknowledgements");
            assert!(matches!(reply, Some(Reply::Ack)), "{name}: {reply:?}");
            acked.push(name);
        }
        coord.procs.kill("coordinator");
        // Acknowledgements already on their way when the process died count as well.
        while let Ok(Some((name, reply))) = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
            if matches!(reply, Some(Reply::Ack)) {
                acked.push(name);
            }
        }
        let in_flight = all.len() - 1 - acked.len();
        drop(clients);
        (acked, in_flight, opens)
    });
    coord.procs.start_coordinator();
    let status = coord.wait_for("the restarted coordinator in round 1", |s| {
        s.status().filter(|v| v["round"] == 1)
    });
    let received = names(&status["received"]);
    for n in &acked {
        assert!(
            received.contains(n),
            "{n} was acknowledged before the SIGKILL but is not in the restarted round ({in_flight} were in flight): {status}"
        );
    }
    // Everyone finishes the round (the restarted coordinator sends the opening only to those it holds no
    // contribution of, so each sends again for the opening it has): an acknowledged contribution is a
    // duplicate (kept), one in flight at the kill a duplicate or accepted now.
    rt.block_on(async {
        for (n, (open, seq)) in all.iter().zip(&opens) {
            let mut c = Client::connect(&coord.kit(n)).await;
            c.seq = *seq;
            c.hello().await;
            let msg = c.labels(open, |_| {});
            let r = c.request(&msg).await;
            if acked.iter().any(|a| a == n) {
                assert_eq!(reject_code(&r), RejectCode::Duplicate, "{n}: {r:?}");
            } else {
                assert!(
                    matches!(&r, Reply::Ack) || reject_code(&r) == RejectCode::Duplicate,
                    "{n}: {r:?}"
                );
            }
        }
    });
    let status = coord.wait_for("round 1 aggregated", |s| {
        s.status().filter(|v| round_of(v, 1).is_some())
    });
    let mut contributors = names(&round_of(&status, 1).expect("round 1")["contributors"]);
    contributors.sort();
    assert_eq!(contributors, all, "every participant contributed once: {status}");
}

/// The aggregate is not written again before it is sent: the round's one transaction holds the aggregate
/// message with its checkpoint blank, and a coordinator restarted while the round collects reports signs it
/// again and re-sends it to a contributor that reconnects before reporting: the same round, consensus and
/// digest, under the checkpoint that covers the round, with valid signatures.
#[test]
fn a_coordinator_restarted_before_the_reports_re_sends_the_round_s_aggregate() {
    use fedistill_shared::ledger::SignedCheckpoint;
    use fedistill_shared::wire::messages::{AggregateLabels, ToParticipant, KIND_TO_PARTICIPANT};
    let mut coord = Coord::start(&["alice", "bob"], 2, 2, "report_timeout_ms = 60000");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    // The next aggregate pushed to `c`, its signature checked with the kit's coordinator key.
    async fn next_aggregate(c: &Client) -> AggregateLabels {
        let guard = fedistill_shared::crypto::ReplayGuard::new(c.kit.federation().clone());
        loop {
            let mut recv = c.conn.accept_uni().await.expect("push stream");
            let (kind, msg) =
                fedistill_transport::recv_message::<ToParticipant>(&mut recv, MAX_FRAME, Duration::from_secs(30))
                    .await
                    .expect("push");
            assert_eq!(kind, KIND_TO_PARTICIPANT);
            if let ToParticipant::Aggregate(s) = msg {
                let round = s.round;
                return s
                    .verify(&c.kit.coordinator_key, &Signer::Coordinator, &guard, round)
                    .expect("coordinator signature")
                    .into_inner();
            }
        }
    }
    let first = rt.block_on(async {
        let mut clients = Vec::new();
        for n in ["alice", "bob"] {
            let c = Client::connect(&coord.kit(n)).await;
            c.hello().await;
            clients.push(c);
        }
        for c in &mut clients {
            let open = c.next_open().await;
            let msg = c.labels(&open, |_| {});
            assert!(matches!(c.request(&msg).await, Reply::Ack));
        }
        next_aggregate(&clients[0]).await
    });
    assert_eq!(first.round, RoundId(1));
    // Nobody reported: the round is collecting reports when the coordinator dies.
    coord.procs.kill("coordinator");
    coord.procs.start_coordinator();
    coord.wait_for("the restarted coordinator collecting round 1's reports", |s| {
        s.status().filter(|v| v["round"] == 1 && v["phase"] == "reporting")
    });
    let again = rt.block_on(async {
        let c = Client::connect(&coord.kit("alice")).await;
        c.hello().await;
        next_aggregate(&c).await
    });
    assert_eq!(
        (
            again.round,
            &again.contributors,
            &again.probabilities,
            again.aggregate_digest
        ),
        (
            first.round,
            &first.contributors,
            &first.probabilities,
            first.aggregate_digest
        ),
        "the same aggregate"
    );
    assert_eq!(
        again.checkpoint, first.checkpoint,
        "under the same checkpoint, signed again identically"
    );
    // A fresh witness of the participant's (no earlier checkpoint, so no proof needed) checks the log
    // signature and cosigns.
    let sc = SignedCheckpoint::parse(again.checkpoint.as_bytes()).expect("a signed note");
    let kit = fedistill_participant::transport::Kit::load(coord.kit("alice")).expect("kit");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut witness = fedistill_participant::service::open_witness(&kit, dir.path()).expect("witness");
    witness
        .handle_checkpoint(&sc, &[], 1_700_000_000)
        .expect("the coordinator's log signature verifies");
}
