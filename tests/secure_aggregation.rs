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

use fedistill_shared::ledger::Record;
use fedistill_shared::protocol::secagg::{encode_fixed, fixed_point_error_bound};
use fedistill_shared::protocol::{softlabels, Encoding};
use fedistill_shared::wire::messages::SoftLabels;

use common::{
    audit_export_verify_show, fedistill, free_udp_port, history, names, provision, write_trust, Procs, StatusServer,
};

const WAIT: Duration = Duration::from_secs(300);
const NAMES: [&str; 5] = ["p0", "p1", "p2", "p3", "p4"];

struct Run {
    dir: PathBuf,
    _procs: Procs,
    final_status: serde_json::Value,
    accuracy: Vec<f64>,
}

/// Runs two rounds with five participants (p4 aborts once its round-1 labels are acknowledged).
fn run(secure: bool) -> Run {
    let mut procs = Procs::new();
    let dir = procs.dir().to_path_buf();
    let port = free_udp_port();
    let server = StatusServer::on_free_port();
    let federation = provision(&dir, "secagg", port, &NAMES);
    write_trust(&dir, &federation, &NAMES);
    let data = "[data]\ndataset = \"digits\"\nparticipants = 5\npartition = \"iid\"\nseed = 7\ntest_fraction = 0.1\npublic_fraction = 0.6\n";
    std::fs::write(
        dir.join("coordinator.toml"),
        format!(
            "federation_dir = \"federation\"\nbind = \"127.0.0.1:{port}\"\nstore = \"coordinator.sqlite\"\n\
             status = \"{server}\"\nrounds = 2\nmin_participants = 5\nquorum = 3\ncollect_timeout_ms = 20000\n\
             report_timeout_ms = 3000\nsamples_per_round = 150\nrule = \"mean\"\ntemperature = 2.0\n{}{data}",
            if secure {
                "secure_aggregation = true\nsecagg_threshold = 3\n"
            } else {
                "[quarantine]\nenabled = false\n"
            }
        ),
    )
    .expect("write coordinator.toml");
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
