//! Secure aggregation with real processes: a coordinator and five participants of the `fedistill` binary on
//! mutual-TLS QUIC, the same federation run twice, in the clear and with `secure_aggregation = true`, and in
//! both runs participant p4 crashes (a failpoint aborts it) right after the coordinator acknowledged its
//! round-1 labels: in the secure run it dropped after uploading its masked input, so the others' shares of
//! its self-mask seed unmask it. Teachers are deterministic, so the clear run's contributions are what each
//! participant computed in the clear in the secure run too: the secure aggregate must be their mean within
//! the fixed-point error, the students must agree, and the secure run's store (every byte of the SQLite
//! files) must hold none of those labels, while the clear run's does. The exported log verifies, secure
//! aggregate recomputed bit for bit.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::SeedableRng;

use fedistill_shared::crypto::{ParticipantId, Signed, Signer};
use fedistill_shared::ledger::Record;
use fedistill_shared::protocol::secagg::{encode_fixed, fixed_point_error_bound, SecureClient};
use fedistill_shared::protocol::{softlabels, Encoding};
use fedistill_shared::wire::messages::{RejectCode, Reply, SoftLabels, ToCoordinator, ToParticipant};
use fedistill_shared::wire::secagg::SecAggKeys;
use fedistill_transport::recv_message;

use common::{
    audit_export_verify_show, fedistill, free_udp_port, history, names, next_seq, provision, reject_code, sign,
    write_trust, Procs, StatusServer,
};

const WAIT: Duration = Duration::from_secs(300);
const NAMES: [&str; 5] = ["p0", "p1", "p2", "p3", "p4"];

struct Run {
    dir: PathBuf,
    _procs: Procs,
    final_status: serde_json::Value,
    accuracy: Vec<f64>,
}

/// A federation `name` provisioned in a new test directory with a kit per name in `nodes`, the trust file
/// naming them all as witnesses, and `coordinator.toml`: two rounds of rule `mean` on `digits` split IID
/// over `shards` data shards, plus `settings` (one `key = value` per line). Returns the processes (none
/// started), the directory and the status server address.
fn federation(name: &str, nodes: &[&str], shards: usize, settings: &str) -> (Procs, PathBuf, StatusServer, String) {
    let procs = Procs::new();
    let dir = procs.dir().to_path_buf();
    let port = free_udp_port();
    let server = StatusServer::on_free_port();
    let federation = provision(&dir, name, port, nodes);
    write_trust(&dir, &federation, nodes);
    let data = format!(
        "[data]\ndataset = \"digits\"\nparticipants = {shards}\npartition = \"iid\"\nseed = 7\ntest_fraction = 0.1\npublic_fraction = 0.6\n"
    );
    std::fs::write(
        dir.join("coordinator.toml"),
        format!(
            "federation_dir = \"federation\"\nbind = \"127.0.0.1:{port}\"\nstore = \"coordinator.sqlite\"\n\
             status = \"{server}\"\nrounds = 2\nrule = \"mean\"\ntemperature = 2.0\n{settings}{data}"
        ),
    )
    .expect("write coordinator.toml");
    (procs, dir, server, data)
}

/// Runs two rounds with five participants (p4 aborts once its round-1 labels are acknowledged).
fn run(secure: bool) -> Run {
    let settings = format!(
        "min_participants = 5\nquorum = 3\ncollect_timeout_ms = 20000\nreport_timeout_ms = 3000\n\
         samples_per_round = 150\n{}",
        if secure {
            "secure_aggregation = true\nsecagg_threshold = 3\n"
        } else {
            "[quarantine]\nenabled = false\n"
        }
    );
    let (mut procs, dir, server, data) = federation("secagg", &NAMES, 5, &settings);
    for (i, n) in NAMES.iter().enumerate() {
        std::fs::write(
            dir.join(format!("participant-{n}.toml")),
            format!(
                "kit = \"federation/kits/{n}\"\nworkdir = \"work/{n}\"\nshard = {i}\nencoding = \"f32\"\n\
                 [teacher]\nkind = \"mlp\"\nhidden = [32]\n[student]\nkind = \"mlp\"\nhidden = [16]\n\
                 [train]\nepochs = 5\nbatch_size = 64\npatience = 0\n[distill]\nepochs_per_round = 2\n{data}"
            ),
        )
        .expect("write participant config");
    }
    procs.start_coordinator();
    for n in &NAMES[..4] {
        procs.start_participant(n);
    }
    let cfg = dir.join("participant-p4.toml");
    procs.spawn_with_env(
        "p4",
        &["participant", "--config", cfg.to_str().expect("utf-8 path")],
        &[("FEDISTILL_FAILPOINT", "labels-delivered:1")],
    );
    let deadline = Instant::now() + WAIT;
    let status = procs.wait_exit("p4", deadline);
    assert!(
        !status.success(),
        "p4 aborted at its failpoint: {status:?}{}",
        procs.log("p4")
    );
    assert!(procs.log("p4").contains("failpoint reached"), "{}", procs.log("p4"));
    let final_status = procs.wait_for(server, "the federation to finish", deadline, StatusServer::finished);
    procs.wait_all_exit(deadline, "processes did not exit");
    let accuracy = NAMES[..4]
        .iter()
        .map(|n| {
            let r: serde_json::Value = serde_json::from_slice(
                &std::fs::read(dir.join("work").join(n).join("result.json")).expect("result.json"),
            )
            .expect("json");
            r["student_accuracy"].as_f64().expect("student accuracy")
        })
        .collect();
    Run {
        dir,
        _procs: procs,
        final_status,
        accuracy,
    }
}

fn records(dir: &Path) -> (Vec<Record>, fedistill_coordinator::store::Store) {
    let store = fedistill_coordinator::store::Store::open_read_only(&dir.join("coordinator.sqlite")).expect("store");
    let raw = store.records_raw(0..store.size()).expect("records");
    (raw.iter().map(|b| Record::decode(b).expect("record")).collect(), store)
}

/// Round 1's contributions (participant, the signed soft labels) and aggregate.
fn round_one(dir: &Path) -> (Vec<(String, SoftLabels)>, Vec<f32>) {
    let (recs, store) = records(dir);
    let mut contributions = Vec::new();
    let mut aggregate = None;
    for r in &recs {
        match r {
            Record::Contribution {
                round,
                participant,
                payload_digest,
                ..
            } if round.0 == 1 => {
                let bytes = store.payload(payload_digest).expect("read").expect("payload stored");
                let body: SoftLabels = fedistill_shared::wire::decode_payload(&bytes).expect("soft labels");
                contributions.push((participant.as_str().to_string(), body));
            }
            Record::Aggregate { round, digest, .. } if round.0 == 1 => {
                let bytes = store.payload(digest).expect("read").expect("aggregate stored");
                aggregate = Some(
                    bytes
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect(),
                );
            }
            _ => {}
        }
    }
    (contributions, aggregate.expect("round 1 aggregated"))
}

fn store_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("dir") {
        let p = entry.expect("entry").path();
        if p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("coordinator.sqlite"))
        {
            out.extend(std::fs::read(&p).expect("read store file"));
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_secure_round_with_a_dropout_after_upload_gives_the_plain_mean_and_the_store_holds_no_labels() {
    let plain = run(false);
    let secure = run(true);

    // Both runs: round 1 aggregated all five (p4's labels arrived before it crashed), round 2 the other four.
    for r in [&plain, &secure] {
        let hist = history(&r.final_status);
        assert_eq!(hist.len(), 2, "{}", r.final_status);
        assert_eq!(names(&hist[0]["contributors"]), NAMES, "{}", hist[0]);
        assert_eq!(names(&hist[1]["contributors"]), &NAMES[..4], "{}", hist[1]);
    }

    // What each participant computed in the clear in round 1 (the clear run's contributions, f32).
    let (clear, plain_aggregate) = round_one(&plain.dir);
    assert_eq!(clear.len(), 5);
    let rows = clear[0].1.rows as usize;
    let classes = clear[0].1.classes as usize;
    let probs: Vec<Vec<f32>> = clear
        .iter()
        .map(|(_, sl)| softlabels::decode(&sl.payload, rows, classes, Encoding::F32).expect("f32 labels"))
        .collect();

    // The secure run's round-1 contributions are masked inputs, and its aggregate is their mean.
    let (masked, secure_aggregate) = round_one(&secure.dir);
    assert_eq!(masked.len(), 5);
    assert!(masked.iter().all(|(_, sl)| sl.encoding == Encoding::MaskedU64));
    let tolerance = fixed_point_error_bound() * 4.0 + 1e-6;
    let mut worst = 0f64;
    for (j, got) in secure_aggregate.iter().enumerate() {
        let mean = probs.iter().map(|p| f64::from(p[j])).sum::<f64>() / 5.0;
        worst = worst.max((f64::from(*got) - mean).abs());
    }
    assert!(
        worst <= tolerance,
        "secure aggregate is {worst} from the clear mean (tolerance {tolerance})"
    );
    let plain_diff = plain_aggregate
        .iter()
        .zip(&secure_aggregate)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(plain_diff <= 1e-5, "secure and clear aggregates differ by {plain_diff}");

    // The students: within half a point of the clear run, participant by participant.
    for (i, (a, b)) in plain.accuracy.iter().zip(&secure.accuracy).enumerate() {
        assert!((a - b).abs() <= 0.005, "p{i}: clear {a}, secure {b}");
    }

    // No participant's labels anywhere in the secure run's store files (as f32 or as the fixed-point
    // values it masked); the same needles are in the clear run's store, so this check can fail.
    let (secure_store, plain_store) = (store_bytes(&secure.dir), store_bytes(&plain.dir));
    for (i, p) in probs.iter().enumerate() {
        let f32_needle: Vec<u8> = p[..16].iter().flat_map(|v| v.to_le_bytes()).collect();
        let fixed_needle: Vec<u8> = encode_fixed(&p[..8])
            .expect("fixed point")
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert!(
            contains(&plain_store, &f32_needle),
            "p{i}'s labels are in the clear run's store"
        );
        assert!(
            !contains(&secure_store, &f32_needle),
            "p{i}'s f32 labels leaked into the secure store"
        );
        assert!(
            !contains(&secure_store, &fixed_needle),
            "p{i}'s fixed-point labels leaked into the secure store"
        );
    }
    // And a masked input is unrelated to the input it hides.
    for (name, sl) in &masked {
        let i = NAMES.iter().position(|n| n == name).expect("a participant");
        let m = softlabels::decode_masked(&sl.payload, rows, classes).expect("masked");
        let x = encode_fixed(&probs[i]).expect("fixed");
        let same = m.iter().zip(&x).filter(|(a, b)| a == b).count();
        assert!(
            same * 100 < m.len(),
            "{name}: {same} of {} masked values equal the input",
            m.len()
        );
    }

    // The log of the secure run: a secure_aggregation record per round, and the auditor recomputes both.
    let (recs, _) = records(&secure.dir);
    let secure_records: Vec<&Record> = recs
        .iter()
        .filter(|r| matches!(r, Record::SecureAggregation { .. }))
        .collect();
    assert_eq!(secure_records.len(), 2, "one per round");
    let show = audit_export_verify_show(&secure.dir);
    assert!(show.contains("SECURE aggregation of [p0, p1, p2, p3, p4]"), "{show}");
    let (ok, out) = fedistill(&secure.dir, &["audit", "verify", "bundle", "--trust", "trust.toml"]);
    assert!(ok && out.contains("2 aggregates recomputed bit for bit"), "{out}");
}

/// The next push to `c` (any kind), unverified: the attacker reads what the coordinator relays.
async fn next_push(c: &common::Client) -> ToParticipant {
    let mut recv = c.conn.accept_uni().await.expect("push stream");
    let (_, msg) = recv_message::<ToParticipant>(&mut recv, 1 << 24, Duration::from_secs(60))
        .await
        .expect("push");
    msg
}

/// `body` signed by the attacker's kit under its next sequence number.
fn signed<T: fedistill_shared::crypto::SignedMessage>(
    m: &mut common::Client,
    round: fedistill_shared::crypto::RoundId,
    body: &T,
) -> Signed<T> {
    let seq = next_seq(&mut m.seq);
    sign(&m.kit, round, seq, body)
}

/// A pushed message's body, unverified (the attacker trusts whatever it is told).
fn unverified<T: serde::de::DeserializeOwned>(s: &Signed<T>) -> T {
    fedistill_shared::wire::decode_payload(&s.payload).expect("payload")
}

fn message_of(r: &Reply) -> &str {
    match r {
        Reply::Reject { message, .. } => message,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

/// An insider with a valid kit ("mallory") drives the secure rounds by hand and lies in every field it
/// controls: keys signed under another participant's name, a second advert, shares that are short,
/// repeated or for a non-holder, labels in the clear, a masked input of the wrong length. Each is refused
/// with a reason; the honest messages that follow are taken and round 1 aggregates all three. In round 2
/// mallory shares its keys but never sends its masked input: with threshold 3 the round closes without an
/// aggregate and the coordinator says why.
#[test]
fn an_insider_lying_in_every_secure_message_is_refused_and_too_few_survivors_close_the_round() {
    let (mut procs, dir, server, data) = federation(
        "secagg-attack",
        &["p0", "p1", "mallory"],
        2,
        "min_participants = 3\nquorum = 2\ncollect_timeout_ms = 6000\nreport_timeout_ms = 3000\n\
         samples_per_round = 40\nsecure_aggregation = true\nsecagg_threshold = 3\n",
    );
    for (i, n) in ["p0", "p1"].iter().enumerate() {
        common::write_participant_config(&dir, n, i, &[32], 3, &data);
    }
    procs.start_coordinator();
    procs.wait_for(server, "the coordinator's status", Instant::now() + WAIT, |s| {
        s.status()
    });
    for n in ["p0", "p1"] {
        procs.start_participant(n);
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let kit_dir = dir.join("federation").join("kits").join("mallory");
    rt.block_on(async {
        let mut m = common::Client::connect(&kit_dir).await;
        m.hello().await;
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(5);
        let me = m.kit.participant().clone();
        let fed = m.kit.federation().clone();
        for round_no in 1..=2u64 {
            let open = loop {
                if let ToParticipant::Open(s) = next_push(&m).await {
                    break unverified(&s);
                }
            };
            assert_eq!(open.round.0, round_no);
            let params = open.secure.expect("a secure round");
            let classes = open.classes as usize;
            let rows = open.sample_ids.len();
            let probs = vec![1.0 / classes as f32; rows * classes];
            let input = encode_fixed(&probs).expect("fixed");
            let (mut client, advert) = SecureClient::new(params, fed.clone(), open.round, me.clone(), input, &mut rng);
            let round = open.round;
            if round_no == 1 {
                // Keys signed by mallory under p0's name.
                let seq = next_seq(&mut m.seq);
                let forged = Signed::sign(
                    &m.kit.signing,
                    Signer::Participant(ParticipantId::new("p0")),
                    fed.clone(),
                    round,
                    seq,
                    &advert,
                )
                .expect("sign");
                let r = m.request(&ToCoordinator::SecAggKeys(forged)).await;
                assert!(
                    matches!(reject_code(&r), RejectCode::SignerMismatch | RejectCode::BadSignature),
                    "{r:?}"
                );
            }
            let r = {
                let msg = ToCoordinator::SecAggKeys(signed(&mut m, round, &advert));
                m.request(&msg).await
            };
            assert!(matches!(r, Reply::Ack), "honest advert: {r:?}");
            if round_no == 1 {
                let r = {
                    let msg = ToCoordinator::SecAggKeys(signed(&mut m, round, &advert));
                    m.request(&msg).await
                };
                // Refused as a second advert, or, once everyone advertised, as out of its phase.
                match reject_code(&r) {
                    RejectCode::BadPayload => assert!(message_of(&r).contains("already advertised"), "{r:?}"),
                    RejectCode::NotCollecting => assert!(message_of(&r).contains("phase sharing"), "{r:?}"),
                    other => panic!("a second advert was answered {other}: {r:?}"),
                }
            }
            let roster = loop {
                if let ToParticipant::SecAggRoster(s) = next_push(&m).await {
                    break unverified(&s);
                }
            };
            let adverts: Vec<(ParticipantId, SecAggKeys)> = roster
                .adverts
                .iter()
                .map(|a| {
                    let Signer::Participant(p) = &a.signer else {
                        panic!("participant advert")
                    };
                    (
                        p.clone(),
                        fedistill_shared::wire::decode_payload(&a.payload).expect("advert"),
                    )
                })
                .collect();
            let shares = client.on_roster(&adverts, &mut rng).expect("shares");
            if round_no == 1 {
                let mut short = shares.clone();
                short.shares[0].ciphertext.pop();
                let mut repeated = shares.clone();
                repeated.shares[1].to = repeated.shares[0].to;
                let mut foreign = shares.clone();
                foreign.shares[0].from = (foreign.shares[0].from + 1) % 3;
                for (bad, why) in [(short, "bytes"), (repeated, "repeats holder"), (foreign, "names owner")] {
                    let r = {
                        let msg = ToCoordinator::SecAggShares(signed(&mut m, round, &bad));
                        m.request(&msg).await
                    };
                    assert_eq!(reject_code(&r), RejectCode::BadPayload, "{r:?}");
                    assert!(message_of(&r).contains(why), "{why}: {r:?}");
                }
            }
            let r = {
                let msg = ToCoordinator::SecAggShares(signed(&mut m, round, &shares));
                m.request(&msg).await
            };
            assert!(matches!(r, Reply::Ack), "honest shares: {r:?}");
            let delivery = loop {
                if let ToParticipant::SecAggDelivery(s) = next_push(&m).await {
                    break unverified(&s);
                }
            };
            let masked = client.on_delivery(&delivery).expect("masked input");
            if round_no == 2 {
                // Drops before sending its masked input: only two survivors, the threshold is three.
                break;
            }
            let clear = m.labels(&open, |_| {});
            let r = m.request(&clear).await;
            assert_eq!(reject_code(&r), RejectCode::BadPayload, "{r:?}");
            assert!(message_of(&r).contains("masked_u64"), "{r:?}");
            let body = |payload: Vec<u8>| SoftLabels {
                round,
                public_digest: open.public_digest,
                sample_ids_digest: open.sample_ids_digest,
                rows: rows as u32,
                classes: classes as u32,
                encoding: Encoding::MaskedU64,
                samples: 100,
                payload,
            };
            let mut short = softlabels::masked_payload(&masked);
            short.truncate(short.len() - 8);
            let r = {
                let msg = ToCoordinator::SoftLabels(signed(&mut m, round, &body(short)));
                m.request(&msg).await
            };
            assert_eq!(reject_code(&r), RejectCode::BadPayload, "{r:?}");
            let honest = body(softlabels::masked_payload(&masked));
            let r = {
                let msg = ToCoordinator::SoftLabels(signed(&mut m, round, &honest));
                m.request(&msg).await
            };
            assert!(matches!(r, Reply::Ack), "honest masked input: {r:?}");
            let unmask = loop {
                if let ToParticipant::SecAggUnmask(s) = next_push(&m).await {
                    break unverified(&s);
                }
            };
            let reveal = client.on_unmask(&unmask).expect("reveal").expect("a survivor reveals");
            let r = {
                let msg = ToCoordinator::SecAggReveal(signed(&mut m, round, &reveal));
                m.request(&msg).await
            };
            assert!(matches!(r, Reply::Ack | Reply::Reject { .. }), "{r:?}");
        }
        // Stay connected until the federation finishes, so the coordinator sees a dropout, not a disconnect.
        let deadline = Instant::now() + WAIT;
        while server.finished().is_none() {
            assert!(
                Instant::now() < deadline,
                "the federation did not finish{}",
                procs.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let done = server.finished().expect("finished");
    let hist = history(&done);
    assert_eq!(hist.len(), 1, "round 1 aggregated, round 2 did not: {done}");
    assert_eq!(names(&hist[0]["contributors"]), ["mallory", "p0", "p1"], "{}", hist[0]);
    let log = procs.log("coordinator");
    assert!(
        log.contains("secure round closed without an aggregate")
            && log.contains("2 masked inputs arrived, the threshold is 3"),
        "{log}"
    );
    procs.wait_all_exit(Instant::now() + WAIT, "processes did not exit");
}

/// The coordinator crashes (a failpoint aborts it) when round 1's masked inputs are in and its unmasking
/// requests are about to go out. A secure round's secrets live only in memory, so the restarted coordinator
/// runs round 1 again from its key adverts; the participants, which had already sent masked inputs, take
/// part again with fresh secrets, and both rounds aggregate everyone and verify.
#[test]
fn a_coordinator_crash_before_unmasking_runs_the_secure_round_again() {
    let nodes = ["p0", "p1", "p2"];
    let (mut procs, dir, server, data) = federation(
        "secagg-restart",
        &nodes,
        3,
        "min_participants = 3\nquorum = 2\ncollect_timeout_ms = 20000\nreport_timeout_ms = 20000\n\
         samples_per_round = 60\nsecure_aggregation = true\n",
    );
    for (i, n) in nodes.iter().enumerate() {
        common::write_participant_config(&dir, n, i, &[32], 3, &data);
    }
    procs.spawn_with_env(
        "coordinator",
        &["coordinator", "--config", "coordinator.toml"],
        &[("FEDISTILL_FAILPOINT", "secure-unmasking:1")],
    );
    for n in nodes {
        procs.start_participant(n);
    }
    let deadline = Instant::now() + WAIT;
    let status = procs.wait_exit("coordinator", deadline);
    assert!(!status.success(), "the coordinator aborted at its failpoint");
    let first = procs.log("coordinator");
    assert!(first.contains("failpoint reached"), "{first}");
    procs.start_coordinator();
    let done = procs.wait_for(server, "the federation to finish", deadline, StatusServer::finished);
    let hist = history(&done);
    assert_eq!(hist.len(), 2, "{done}");
    for h in &hist {
        assert_eq!(names(&h["contributors"]), nodes, "{h}");
    }
    procs.wait_all_exit(deadline, "processes did not exit");
    let (ok, out) = {
        audit_export_verify_show(&dir);
        fedistill(&dir, &["audit", "verify", "bundle", "--trust", "trust.toml"])
    };
    assert!(ok && out.contains("2 aggregates recomputed bit for bit"), "{out}");
}
