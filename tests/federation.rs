//! End-to-end tests of federated rounds with real processes: a coordinator and participants spawned from
//! the `fedistill` binary, real kits provisioned in a temporary directory, mutual-TLS QUIC on 127.0.0.1.
//! Covers a full federation, a participant and a coordinator SIGKILLed mid-round and restarted, and a
//! hand-written client (a real kit, the real protocol) sending bad inputs. Every wait polls the
//! coordinator's `/status` and `/metrics`, the participants' files or the processes, under an overall timeout.
//! Set `FEDISTILL_KEEP_TEST_DIRS=1` to keep each test's directory (configs, store, `logs/*.log`, work dirs).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use fedistill_shared::crypto::Digest;
use fedistill_shared::wire::encode_frame;
use fedistill_shared::wire::messages::{RejectCode, Reply, ToCoordinator, KIND_TO_COORDINATOR, PROTOCOL_VERSION};

use common::{
    free_udp_port, history, metric, names, provision, reject_code, rejections, round_of, write_participant_config,
    Client, Procs, StatusServer,
};

/// Overall limit of any single wait; generous because the machine is shared and builds are debug.
const WAIT: Duration = Duration::from_secs(240);
/// Hidden widths of the deliberately slow teacher (about 8.5 M parameters): labelling a whole round of
/// ~1,250 public samples takes it seconds, which leaves a wide window to kill a process after the round
/// opened and before that participant's labels arrive.
const SLOW_TEACHER: &[usize] = &[2048, 2048, 2048];
const SMALL_TEACHER: &[usize] = &[32];

/// Coordinator settings a test chooses.
#[derive(Clone, Debug)]
struct CoordOpts {
    rounds: u64,
    min_participants: usize,
    quorum: usize,
    collect_ms: u64,
    report_ms: u64,
    samples_per_round: u64,
    max_frame_bytes: usize,
    /// Data shards (real participants with private data).
    shards: usize,
}

impl Default for CoordOpts {
    fn default() -> Self {
        Self {
            rounds: 2,
            min_participants: 3,
            quorum: 2,
            collect_ms: 8000,
            report_ms: 8000,
            samples_per_round: 200,
            max_frame_bytes: 16 * 1024 * 1024,
            shards: 3,
        }
    }
}

/// `digits` (1,797 samples): 10% test, 70% public transfer set (~1,258), the rest split IID over the shards.
fn data_toml(shards: usize) -> String {
    format!(
        "[data]\ndataset = \"digits\"\nparticipants = {shards}\npartition = \"iid\"\nseed = 7\ntest_fraction = 0.1\npublic_fraction = 0.7\n"
    )
}

/// A provisioned federation in a temporary directory and the processes started for it.
struct Fed {
    procs: Procs,
    dir: PathBuf,
    server: StatusServer,
}

impl Fed {
    /// Provisions federation `test` with a kit per name and writes `coordinator.toml`.
    fn new(names: &[&str], opts: &CoordOpts) -> Fed {
        let procs = Procs::new();
        let dir = procs.dir().to_path_buf();
        let port = free_udp_port();
        let server = StatusServer::on_free_port();
        provision(&dir, "test", port, names);
        std::fs::write(
            dir.join("coordinator.toml"),
            format!(
                "federation_dir = \"federation\"\nbind = \"127.0.0.1:{port}\"\nstore = \"coordinator.sqlite\"\n\
                 status = \"{server}\"\nrounds = {}\nmin_participants = {}\nquorum = {}\n\
                 collect_timeout_ms = {}\nreport_timeout_ms = {}\nsamples_per_round = {}\nrule = \"mean\"\n\
                 temperature = 2.0\nmax_frame_bytes = {}\n{}",
                opts.rounds,
                opts.min_participants,
                opts.quorum,
                opts.collect_ms,
                opts.report_ms,
                opts.samples_per_round,
                opts.max_frame_bytes,
                data_toml(opts.shards)
            ),
        )
        .expect("write coordinator.toml");
        Fed { procs, dir, server }
    }

    /// Writes `participant-<name>.toml`: small student and short training for every participant; the
    /// teacher's hidden widths are the test's choice (teachers are private and may differ).
    fn participant_config(&self, name: &str, shard: usize, shards: usize, teacher: &[usize]) {
        let epochs = if teacher == SLOW_TEACHER { 1 } else { 5 };
        write_participant_config(&self.dir, name, shard, teacher, epochs, &data_toml(shards));
    }

    fn status(&self) -> Option<Value> {
        self.server.status()
    }

    fn metrics(&self) -> Option<String> {
        self.server.metrics()
    }

    fn kit_dir(&self, name: &str) -> PathBuf {
        self.dir.join("federation").join("kits").join(name)
    }

    fn work(&self, name: &str) -> PathBuf {
        self.dir.join("work").join(name)
    }

    /// Polls `probe` (given the coordinator's status server) until it yields a value; panics with `what`
    /// and the logs after `WAIT`, or when a process fails.
    fn wait_for<T>(&mut self, what: &str, probe: impl FnMut(StatusServer) -> Option<T>) -> T {
        self.procs.wait_for(self.server, what, Instant::now() + WAIT, probe)
    }

    /// The final `/status` (the coordinator lingers a few seconds after finishing, so poll for it).
    fn wait_finished(&mut self) -> Value {
        self.wait_for("the federation to finish", StatusServer::finished)
    }

    /// Waits until every tracked process exited, and asserts each exited successfully.
    fn wait_all_exit(&mut self) {
        self.procs
            .wait_all_exit(Instant::now() + WAIT, "processes did not exit");
    }

    fn result(&self, name: &str) -> Value {
        let p = self.work(name).join("result.json");
        let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}{}", p.display(), self.procs.logs()));
        serde_json::from_slice(&bytes).expect("result.json is JSON")
    }
}

fn assert_unit(v: &Value, what: &str) {
    let x = v.as_f64().unwrap_or_else(|| panic!("{what} is not a number: {v}"));
    assert!((0.0..=1.0).contains(&x), "{what} = {x} is not in [0, 1]");
}

fn store_size(dir: &Path) -> u64 {
    fedistill_coordinator::store::Store::open_read_only(&dir.join("coordinator.sqlite"))
        .expect("open the store read-only")
        .size()
}

#[test]
fn a_small_federation_runs_every_round_with_every_participant() {
    let opts = CoordOpts {
        rounds: 2,
        min_participants: 3,
        quorum: 2,
        ..CoordOpts::default()
    };
    let mut fed = Fed::new(&["p0", "p1", "p2"], &opts);
    for (i, n) in ["p0", "p1", "p2"].iter().enumerate() {
        fed.participant_config(n, i, 3, SMALL_TEACHER);
    }
    // p0 also builds a personalized student after round 2, through all three stages (issue 18).
    let p0_config = fed.dir.join("participant-p0.toml");
    let mut text = std::fs::read_to_string(&p0_config).expect("p0 config");
    text.push_str(
        "[personalize]\nevery = 2\nepochs = 2\n[personalize.stages]\nfeature_alignment = { epochs = 1 }\n\
         gradient_guidance = { epochs = 1 }\n",
    );
    std::fs::write(&p0_config, text).expect("write p0 config");
    fed.procs.start_coordinator();
    fed.wait_for("the coordinator's status", |f| f.status());
    // Before any round only the FederationCreated record is in the log (read from the store itself:
    // /status is first filled in when the first event arrives).
    assert_eq!(store_size(&fed.dir), 1);
    for n in ["p0", "p1", "p2"] {
        fed.procs.start_participant(n);
    }
    let done = fed.wait_finished();
    let hist = history(&done);
    assert_eq!(hist.len() as u64, opts.rounds, "one history entry per round: {done}");
    for (i, h) in hist.iter().enumerate() {
        assert_eq!(h["round"].as_u64(), Some(i as u64 + 1), "{h}");
        assert_eq!(names(&h["contributors"]), ["p0", "p1", "p2"], "round {}: {h}", i + 1);
        assert!(names(&h["absent"]).is_empty(), "round {}: {h}", i + 1);
    }
    fed.wait_all_exit();
    for n in ["p0", "p1", "p2"] {
        let r = fed.result(n);
        assert_eq!(r["participant"], n);
        for key in ["student_accuracy", "int8_accuracy", "local_only_accuracy"] {
            assert_unit(&r[key], &format!("{n} {key}"));
        }
        let rounds = r["rounds"].as_array().expect("rounds");
        assert_eq!(
            rounds
                .iter()
                .map(|x| x["round"].as_u64().unwrap_or(0))
                .collect::<Vec<_>>(),
            [1, 2],
            "{n}: {r}"
        );
        for x in rounds {
            assert_unit(&x["student_accuracy"], &format!("{n} round student_accuracy"));
            assert_unit(&x["consensus_accuracy"], &format!("{n} round consensus_accuracy"));
        }
        // Only p0 personalizes, and only after round 2; its personalized student stays in its work dir.
        let personalized = fed.work(n).join("personalized-student.safetensors");
        assert!(rounds[0].get("personalized_accuracy").is_none(), "{n}: {r}");
        if n == "p0" {
            assert_unit(&rounds[1]["personalized_accuracy"], "p0 round 2 personalized_accuracy");
            assert!(personalized.exists() && fed.work(n).join("round-0002/personalized.json").exists());
        } else {
            assert!(rounds[1].get("personalized_accuracy").is_none(), "{n}: {r}");
            assert!(!personalized.exists());
        }
    }
    // Counted from coordinator/src/service.rs: FederationCreated once, a RosterChange (enrol) per
    // participant the first time it connects, then per round RoundOpened + one Contribution per contributor
    // + Aggregate (the commit) and one RoundReport per reporting contributor: 1 + 3 + 2 * (1 + 3 + 1 + 3) = 20.
    let size = store_size(&fed.dir);
    assert_eq!(size, 1 + 3 + opts.rounds * (2 + 2 * 3), "log size in the store");
    assert!(done["log_size"].as_u64().unwrap_or(0) > 1, "the log grew: {done}");
}

#[test]
fn a_participant_killed_mid_round_is_absent_then_rejoins_with_its_identity() {
    let opts = CoordOpts {
        rounds: 4,
        min_participants: 3,
        quorum: 2,
        collect_ms: 8000,
        report_ms: 8000,
        // Every round labels the whole public set, so the slow teacher needs seconds per round.
        samples_per_round: 5000,
        ..CoordOpts::default()
    };
    let mut fed = Fed::new(&["p0", "p1", "p2"], &opts);
    fed.participant_config("p0", 0, 3, SMALL_TEACHER);
    fed.participant_config("p1", 1, 3, SMALL_TEACHER);
    fed.participant_config("p2", 2, 3, SLOW_TEACHER);
    fed.procs.start_coordinator();
    fed.wait_for("the coordinator's status", |f| f.status());
    for n in ["p0", "p1", "p2"] {
        fed.procs.start_participant(n);
    }
    // Round 1 opens once all three are connected; p2 is then busy labelling with its slow teacher.
    fed.wait_for("round 1 collecting", |f| {
        f.status().filter(|s| s["round"] == 1 && s["phase"] == "collecting")
    });
    fed.procs.kill("p2");
    let s = fed.wait_for("round 1 aggregated", |f| {
        f.status().filter(|s| round_of(s, 1).is_some())
    });
    let r1 = round_of(&s, 1).expect("round 1");
    assert_eq!(
        names(&r1["contributors"]),
        ["p0", "p1"],
        "round 1 completes on quorum without p2: {r1}"
    );
    assert_eq!(names(&r1["absent"]), ["p2"], "p2 is recorded absent in round 1: {r1}");
    assert!(
        !fed.work("p2").join("state.json").exists(),
        "p2 finished no round before it was killed"
    );

    // Restart p2 exactly as before: same config, same kit, same work directory; no operator action.
    fed.procs.start_participant("p2");
    let done = fed.wait_finished();
    let hist = history(&done);
    assert_eq!(hist.len() as u64, opts.rounds, "{done}");
    let rejoined: Vec<u64> = hist
        .iter()
        .filter(|h| names(&h["contributors"]).iter().any(|p| p == "p2"))
        .filter_map(|h| h["round"].as_u64())
        .collect();
    assert!(!rejoined.is_empty(), "p2 contributed again in a later round: {done}");
    assert!(rejoined.iter().all(|&r| r > 1), "{rejoined:?}");
    for h in &hist {
        let c = names(&h["contributors"]);
        assert!(
            c.len() >= opts.quorum && c.contains(&"p0".into()) && c.contains(&"p1".into()),
            "{h}"
        );
    }
    fed.wait_all_exit();
    let p2 = fed.result("p2");
    assert_eq!(p2["participant"], "p2");
    let done_rounds: Vec<u64> = p2["rounds"]
        .as_array()
        .expect("rounds")
        .iter()
        .filter_map(|r| r["round"].as_u64())
        .collect();
    assert!(
        !done_rounds.is_empty() && done_rounds.iter().all(|r| rejoined.contains(r)),
        "p2 distilled {done_rounds:?}, contributed {rejoined:?}"
    );
    assert_unit(&p2["student_accuracy"], "p2 student_accuracy");
    for n in ["p0", "p1"] {
        assert_eq!(
            fed.result(n)["rounds"].as_array().map(Vec::len),
            Some(opts.rounds as usize),
            "{n}"
        );
    }
}

/// What [`coordinator_restart`] observed.
struct Restart {
    fed: Fed,
    /// `/status` of the restarted coordinator once finished.
    done: Value,
    /// Contributions the first coordinator process had acknowledged when it was killed.
    acked: f64,
    /// Log size in the store at the kill.
    size_at_kill: u64,
}

/// Three participants (p2 with the slow teacher), 2 rounds; the coordinator is SIGKILLed once round 1
/// is collecting and p0's and p1's contributions are acknowledged (the counter moves only after a
/// contribution is durable, just before the Ack is sent), then restarted with the same config. Returns
/// once every process exited.
fn coordinator_restart() -> Restart {
    let opts = CoordOpts {
        rounds: 2,
        min_participants: 3,
        quorum: 2,
        collect_ms: 8000,
        // The report window closes early once every contributor reported, so a long one costs nothing; it
        // keeps round 1 open for a participant whose reconnect backoff (250 ms doubling, up to 16 s by the
        // sixth attempt) outlasts a restart slowed by a loaded machine, so it still gets round 1's aggregate.
        report_ms: 40_000,
        samples_per_round: 5000,
        ..CoordOpts::default()
    };
    let mut fed = Fed::new(&["p0", "p1", "p2"], &opts);
    fed.participant_config("p0", 0, 3, SMALL_TEACHER);
    fed.participant_config("p1", 1, 3, SMALL_TEACHER);
    fed.participant_config("p2", 2, 3, SLOW_TEACHER);
    fed.procs.start_coordinator();
    fed.wait_for("the coordinator's status", |f| f.status());
    for n in ["p0", "p1", "p2"] {
        fed.procs.start_participant(n);
    }
    let acked = fed.wait_for("two acknowledged contributions in round 1", |f| {
        let s = f.status()?;
        let m = f.metrics()?;
        let n = metric(&m, "fedistill_coordinator_contributions_total");
        (s["round"] == 1 && s["phase"] == "collecting" && n >= 2.0).then_some(n)
    });
    fed.procs.kill("coordinator");
    let size_at_kill = store_size(&fed.dir);
    fed.procs.start_coordinator();
    let done = fed.wait_finished();
    fed.wait_all_exit();
    Restart {
        fed,
        done,
        acked,
        size_at_kill,
    }
}

#[test]
fn a_coordinator_killed_mid_round_resumes_and_loses_nothing_acknowledged() {
    let Restart {
        fed,
        done,
        acked,
        size_at_kill,
    } = coordinator_restart();
    // The restarted process lists the rounds it aggregated; the interrupted round 1 is among them.
    let r1 = round_of(&done, 1).unwrap_or_else(|| panic!("round 1 aggregated after the restart: {done}"));
    let c1 = names(&r1["contributors"]);
    assert!(c1.len() as f64 >= acked, "{r1}");
    assert!(
        c1.contains(&"p0".into()) && c1.contains(&"p1".into()),
        "the acknowledged contributions of p0 and p1 survive the kill: {r1}"
    );
    assert_eq!(
        history(&done).last().and_then(|h| h["round"].as_u64()),
        Some(2),
        "all rounds ran: {done}"
    );
    assert!(store_size(&fed.dir) > size_at_kill, "the log grew after the restart");
    // Every participant reconnected by itself: each exited successfully (checked by wait_all_exit) after
    // the restarted coordinator told it the federation finished, and wrote its result.
    for n in ["p0", "p1", "p2"] {
        let r = fed.result(n);
        assert_eq!(r["participant"], n);
        assert_unit(&r["student_accuracy"], &format!("{n} student_accuracy"));
    }
}

#[test]
fn a_coordinator_restart_keeps_the_round_s_expected_set_and_delivers_its_aggregate() {
    let Restart { fed, done, .. } = coordinator_restart();
    let r1 = round_of(&done, 1).unwrap_or_else(|| panic!("round 1 aggregated after the restart: {done}"));
    let mut seen = names(&r1["contributors"]);
    seen.extend(names(&r1["absent"]));
    seen.sort();
    // p2 was connected when round 1 opened, so it must end the round as a contributor or as absent.
    assert_eq!(
        seen,
        ["p0", "p1", "p2"],
        "round 1 accounts for every expected participant: {r1}"
    );
    // p0's and p1's round-1 contributions were aggregated, so once they reconnect they must receive that
    // aggregate and distill round 1.
    for n in ["p0", "p1"] {
        let r = fed.result(n);
        let rounds: Vec<u64> = r["rounds"]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x["round"].as_u64()).collect())
            .unwrap_or_default();
        assert!(rounds.contains(&1), "{n} distilled round 1: {r}");
    }
}

#[test]
fn bad_inputs_are_rejected_and_counted_and_the_round_completes_on_quorum() {
    // Two real participants (p0, p1; quorum 2) and three hand-driven clients with real kits: mallory sends
    // bad soft labels, silent connects and never says anything, dropper cuts a frame short and disconnects.
    let max_frame = 16 * 1024;
    let opts = CoordOpts {
        rounds: 1,
        min_participants: 5,
        quorum: 2,
        collect_ms: 6000,
        report_ms: 8000,
        samples_per_round: 100,
        max_frame_bytes: max_frame,
        shards: 2,
    };
    let mut fed = Fed::new(&["p0", "p1", "mallory", "silent", "dropper"], &opts);
    fed.participant_config("p0", 0, 2, SMALL_TEACHER);
    fed.participant_config("p1", 1, 2, SMALL_TEACHER);
    fed.procs.start_coordinator();
    fed.wait_for("the coordinator's status", |f| f.status());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (mut mallory, silent, mut dropper) = rt.block_on(async {
        let m = Client::connect(&fed.kit_dir("mallory")).await;
        let s = Client::connect(&fed.kit_dir("silent")).await;
        let d = Client::connect(&fed.kit_dir("dropper")).await;
        // A build that speaks the previous protocol (sample ids as a varint list) is refused by name, and
        // the same connection can still say a correct hello.
        let old = m
            .request(&ToCoordinator::Hello {
                version: PROTOCOL_VERSION - 1,
                last_checkpoint_size: 0,
            })
            .await;
        assert_eq!(reject_code(&old), RejectCode::Version, "{old:?}");
        let Reply::Reject { message, .. } = &old else {
            unreachable!()
        };
        assert!(
            message.contains(&format!("protocol version {} is not supported", PROTOCOL_VERSION - 1)),
            "{message}"
        );
        m.hello().await;
        d.hello().await;
        (m, s, d)
    });
    fed.procs.start_participant("p0");
    fed.procs.start_participant("p1");
    // Round 1 opens when all five are connected; every connected participant, silent included, is expected.
    let (open, open_d) = rt.block_on(async {
        tokio::time::timeout(WAIT, async { (mallory.next_open().await, dropper.next_open().await) })
            .await
            .expect("round 1 opened")
    });
    assert_eq!(open.round.0, 1);
    assert_eq!(open.sample_ids, open_d.sample_ids);

    // 1. Soft labels for another public transfer set; 2. the same envelope again; 3. a bad signature.
    let msg = mallory.labels(&open, |b| b.public_digest = Digest([7u8; 32]));
    let r = rt.block_on(mallory.request(&msg));
    assert_eq!(reject_code(&r), RejectCode::WrongPublicSet, "{r:?}");
    // The same envelope again is refused for the same reason: a refused message never spends its sequence
    // number (docs/security.md, "Message authentication"; a replayed accepted envelope is refused as
    // `replay` in tests/hardening.rs).
    let r = rt.block_on(mallory.request(&msg));
    assert_eq!(reject_code(&r), RejectCode::WrongPublicSet, "{r:?}");
    // Valid labels whose signature does not match (one bit flipped).
    let mut msg = mallory.labels(&open, |_| {});
    if let ToCoordinator::SoftLabels(signed) = &mut msg {
        signed.signature[0] ^= 1;
    }
    let r = rt.block_on(mallory.request(&msg));
    assert_eq!(reject_code(&r), RejectCode::BadSignature, "{r:?}");
    // 4. A NaN in an otherwise well-formed F32 payload (bytes 0..4 are row 0, class 0).
    let msg = mallory.labels(&open, |b| b.payload[0..4].copy_from_slice(&f32::NAN.to_le_bytes()));
    let r = rt.block_on(mallory.request(&msg));
    assert_eq!(reject_code(&r), RejectCode::BadPayload, "{r:?}");
    // 5. A frame larger than max_frame_bytes: refused from its header, before the payload is read.
    let msg = mallory.labels(&open, |b| b.payload = vec![0u8; 2 * max_frame]);
    let frame = encode_frame(KIND_TO_COORDINATOR, &msg).expect("encode");
    assert!(frame.len() > max_frame);
    let r = rt.block_on(mallory.raw(&frame));
    assert_eq!(reject_code(&r), RejectCode::BadFrame, "{r:?}");
    // 6. Half of a valid frame, then the stream ends; then the client disconnects mid-round.
    let msg = dropper.labels(&open, |_| {});
    let frame = encode_frame(KIND_TO_COORDINATOR, &msg).expect("encode");
    let r = rt.block_on(dropper.raw(&frame[..frame.len() / 2]));
    assert_eq!(reject_code(&r), RejectCode::Truncated, "{r:?}");
    dropper.conn.close(0u32.into(), b"gone");

    // Each rejection is counted (the counter moves before the reply is sent).
    let m = fed.metrics().expect("metrics");
    assert_eq!(rejections(&m, "wrong_public_set"), 2.0, "{m}");
    for reason in ["bad_signature", "bad_payload", "bad_frame", "truncated", "version"] {
        assert_eq!(rejections(&m, reason), 1.0, "{reason}:\n{m}");
    }

    // The round completes at the deadline with the two real participants; the others are absent.
    let done = fed.wait_finished();
    let r1 = round_of(&done, 1).unwrap_or_else(|| panic!("round 1: {done}"));
    assert_eq!(names(&r1["contributors"]), ["p0", "p1"], "{r1}");
    assert_eq!(names(&r1["absent"]), ["dropper", "mallory", "silent"], "{r1}");
    fed.wait_all_exit();
    for n in ["p0", "p1"] {
        assert_unit(&fed.result(n)["student_accuracy"], &format!("{n} student_accuracy"));
    }
    drop(silent);
    drop(mallory);
}

#[test]
fn status_is_published_before_any_participant_connects() {
    let opts = CoordOpts {
        rounds: 3,
        ..CoordOpts::default()
    };
    let mut fed = Fed::new(&["p0", "p1", "p2"], &opts);
    fed.procs.start_coordinator();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = None;
    while Instant::now() < deadline {
        fed.procs.check();
        last = fed.status();
        if last.as_ref().is_some_and(|s| s["federation"] == "test") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let s = last.expect("the coordinator serves /status");
    assert_eq!(s["federation"], "test", "{s}");
    assert_eq!(s["rounds"], 3, "{s}");
    assert_eq!(s["phase"], "waiting", "{s}");
    assert_eq!(s["log_size"], 1, "{s}");

    // SIGTERM (what systemd, podman stop and Kubernetes send) stops a node as Ctrl-C does: a participant
    // waiting for its first round and the coordinator both shut down cleanly, saying why.
    fed.participant_config("p0", 0, 3, SMALL_TEACHER);
    fed.procs.start_participant("p0");
    fed.wait_for("p0 to connect", |s| {
        s.status()
            .filter(|s| names(&s["connected"]).contains(&"p0".to_string()))
    });
    for name in ["p0", "coordinator"] {
        let kill = std::process::Command::new("kill")
            .args(["-TERM", &fed.procs.pid(name).to_string()])
            .status()
            .expect("kill");
        assert!(kill.success());
        let st = fed.procs.wait_exit(name, Instant::now() + Duration::from_secs(30));
        let log = fed.procs.log(name);
        assert!(log.contains("SIGTERM: stopping"), "{name}: {log}");
        assert!(st.success(), "{name} exited with {st}: {log}");
        assert!(!log.contains(": federation finished"), "{name}: {log}");
        if name == "p0" {
            assert!(
                log.contains("stopped on request before the federation finished"),
                "{log}"
            );
        }
    }
}
