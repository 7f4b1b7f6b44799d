//! Regression tasks end to end (issue #22, part 2), with real processes: three concrete plants
//! (examples/concrete-plants) distill a shared strength regressor through `fedistill demo` (coordinator and
//! participants are processes of the binary, each reads its own CSV against the card, the audit bundle is
//! verified); an insider with a valid kit lies in every field of its real-valued soft labels against a real
//! coordinator; and each bad input (card, file, flag, coordinator setting) is refused by name.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fedistill_shared::protocol::softlabels;
use fedistill_shared::protocol::Encoding;
use fedistill_shared::wire::messages::Reply;
use serde_json::Value;

use common::{fedistill, free_udp_port, provision, reject_code, Client, Procs, StatusServer};

const WAIT: Duration = Duration::from_secs(120);

fn example(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/concrete-plants")
        .join(file)
}

/// `fedistill demo` on the three plants with `extra` flags; the JSON report.
fn demo(dir: &Path, extra: &[&str]) -> Value {
    let report = dir.join("report.json");
    let (card, public) = (example("task.toml"), example("public.csv"));
    let plants: Vec<PathBuf> = ["plant-a.csv", "plant-b.csv", "plant-c.csv"].map(example).into();
    let mut args: Vec<String> = vec![
        "demo".into(),
        "--task".into(),
        card.display().to_string(),
        "--public".into(),
        public.display().to_string(),
        "--rounds".into(),
        "3".into(),
        "--report".into(),
        report.display().to_string(),
    ];
    for p in &plants {
        args.extend(["--private".into(), p.display().to_string()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out) = fedistill(dir, &args);
    assert!(ok, "demo failed:\n{out}");
    assert!(out.contains("| federated student (int8) |"), "{out}");
    serde_json::from_str(&std::fs::read_to_string(&report).expect("report")).expect("report JSON")
}

#[test]
fn three_plants_distill_a_constrained_strength_regressor_through_real_processes() {
    let d = tempfile::tempdir().expect("temp dir");
    let r = demo(d.path(), &[]);
    assert_eq!(r["audit"]["verified"], Value::Bool(true), "{}", r["audit"]["output"]);
    assert_eq!(r["rule"], "mean", "a regression's default rule is the mean");
    let m = &r["final"]["student_metrics"];
    for k in [
        "r2",
        "rmse",
        "mae",
        "violation_rate",
        "int8_r2",
        "int8_rmse",
        "int8_violation_rate",
    ] {
        assert!(m[k].as_f64().is_some_and(f64::is_finite), "{k} missing: {m}");
    }
    // The student learned the target (a student at the mean would have R² near 0 and RMSE near 16 MPa),
    // and the INT8 export predicts within half an MPa of it.
    let (r2, rmse) = (m["r2"].as_f64().unwrap_or(0.0), m["rmse"].as_f64().unwrap_or(99.0));
    assert!(r2 > 0.3 && rmse < 13.0, "{m}");
    assert!((m["int8_rmse"].as_f64().unwrap_or(99.0) - rmse).abs() < 0.5, "{m}");
    assert_eq!(r["final"]["student_accuracy"], m["r2"], "a regression's score is R²");
    for k in ["local_only_metrics", "centralized_metrics"] {
        assert!(r["baselines"][k]["rmse"].as_f64().is_some(), "{k}: {}", r["baselines"]);
    }
    // Every round's soft labels are one f16 value per public row: bytes up grow with rows, not classes.
    let rounds = r["per_round"].as_array().expect("rounds");
    assert_eq!(rounds.len(), 3);
    let up = rounds[0]["bytes_up"].as_u64().unwrap_or(0);
    assert!(
        up > 0 && up < 3 * (125 * 2 + 400),
        "{up} bytes up for 125 rows x 3 plants"
    );

    // The same federation without the constraint loss: its student is measured the same way, and the
    // constraint term was off (0), while the constrained one paid a positive penalty.
    let d0 = tempfile::tempdir().expect("temp dir");
    let free = demo(d0.path(), &["--constraint-weight", "0"]);
    let f = &free["final"]["student_metrics"];
    assert_eq!(f["constraint_loss"].as_f64(), Some(0.0), "{f}");
    assert!(m["constraint_loss"].as_f64().is_some_and(|c| c > 0.0), "{m}");
    assert!(
        m["violation_rate"].as_f64() <= f["violation_rate"].as_f64(),
        "constrained {m} against free {f}"
    );
}

/// A coordinator on the concrete card with alice, bob and mallory; `rule` aggregates.
fn coordinator(rule: &str) -> (Procs, StatusServer) {
    let mut procs = Procs::new();
    let dir = procs.dir().to_path_buf();
    let port = free_udp_port();
    let server = StatusServer::on_free_port();
    provision(&dir, "plants", port, &["alice", "bob", "mallory"]);
    for f in ["task.toml", "public.csv"] {
        std::fs::copy(example(f), dir.join(f)).expect("copy example");
    }
    std::fs::write(
        dir.join("coordinator.toml"),
        format!(
            "federation_dir = \"federation\"\nbind = \"127.0.0.1:{port}\"\nstore = \"coordinator.sqlite\"\n\
             status = \"{server}\"\nrounds = 1\nmin_participants = 3\nquorum = 3\n\
             collect_timeout_ms = 60000\nreport_timeout_ms = 60000\nsamples_per_round = 40\nrule = \"{rule}\"\n\
             temperature = 1.0\n[task]\ncard = \"task.toml\"\npublic = \"public.csv\"\n"
        ),
    )
    .expect("coordinator config");
    procs.spawn("coordinator", &["coordinator", "--config", "coordinator.toml"]);
    (procs, server)
}

/// Mallory, with a valid kit, sends real-valued soft labels that lie in every field it controls; each is
/// refused by name and the coordinator keeps serving: alice and bob are acknowledged, mallory's honest
/// retry is too, and the round commits with all three (median: mallory's extreme-but-legal values do not
/// move the consensus beyond the honest ones).
#[test]
fn an_insider_lying_in_regression_soft_labels_is_refused_and_the_round_goes_on() {
    let (mut procs, server) = coordinator("median");
    procs.wait_for(
        server,
        "the coordinator's status",
        Instant::now() + WAIT,
        StatusServer::status,
    );
    let dir = procs.dir().to_path_buf();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut clients = Vec::new();
        for n in ["alice", "bob", "mallory"] {
            let c = Client::connect(&dir.join("federation/kits").join(n)).await;
            c.hello().await;
            clients.push(c);
        }
        let mut opens = Vec::new();
        for c in &clients {
            opens.push(c.next_open().await);
        }
        let open = opens[0].clone();
        let rows = open.sample_ids.len();
        let values = |v: f32| vec![v; rows];
        let encode = |v: &[f32], enc: Encoding| -> Vec<u8> {
            match enc {
                Encoding::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                _ => softlabels::encode(v, rows, 1, enc).expect("encode"),
            }
        };
        // Honest participants: alice predicts 0.5 and bob 0.7 standard deviations above the mean.
        for (c, v) in clients.iter_mut().take(2).zip([0.5f32, 0.7]) {
            let msg = c.labels(&open, |b| {
                b.classes = 1;
                b.payload = encode(&values(v), Encoding::F32);
            });
            assert!(matches!(c.request(&msg).await, Reply::Ack), "honest labels");
        }
        let m = &mut clients[2];
        type Lie<'a> = Box<dyn Fn(&mut fedistill_shared::wire::messages::SoftLabels) + 'a>;
        let lies: Vec<(&str, Lie)> = vec![
            (
                "NaN",
                Box::new(|b| b.payload = encode(&values(f32::NAN), Encoding::F32)),
            ),
            (
                "beyond the limit",
                Box::new(|b| b.payload = encode(&values(5_000.0), Encoding::F32)),
            ),
            (
                "infinite",
                Box::new(|b| b.payload = encode(&values(f32::INFINITY), Encoding::F32)),
            ),
            (
                "int8 for values",
                Box::new(|b| {
                    b.encoding = Encoding::Int8;
                    b.payload = vec![1u8; rows * 5];
                }),
            ),
            (
                "ten classes on a one-output task",
                Box::new(|b| {
                    b.classes = 10;
                    b.payload = encode(&vec![0.1; rows * 10], Encoding::F32);
                }),
            ),
            ("a row short", Box::new(|b| b.payload.truncate(b.payload.len() - 4))),
        ];
        for (what, lie) in lies {
            let msg = m.labels(&open, |b| {
                b.classes = 1;
                b.payload = encode(&values(0.6), Encoding::F32);
                lie(b);
            });
            let reply = m.request(&msg).await;
            assert!(matches!(reply, Reply::Reject { .. }), "{what}: {reply:?}");
            let code = reject_code(&reply).to_string();
            assert!(!code.is_empty(), "{what}");
        }
        // Extreme but legal: 900 standard deviations, accepted, and outvoted by the median.
        let msg = m.labels(&open, |b| {
            b.classes = 1;
            b.payload = encode(&values(900.0), Encoding::F32);
        });
        assert!(
            matches!(m.request(&msg).await, Reply::Ack),
            "legal values are acknowledged"
        );
        // The round commits with all three; the median of 0.5, 0.7 and 900 is bob's 0.7 on every row.
        for c in &clients {
            let agg = c.next_aggregate().await;
            assert_eq!((agg.rows as usize, agg.classes, agg.contributors.len()), (rows, 1, 3));
            let consensus = softlabels::decode(&agg.probabilities, rows, 1, agg.encoding).expect("decodes");
            assert!(consensus.iter().all(|&v| v == 0.7), "{consensus:?}");
        }
    });
}

/// Each bad input names what is wrong: a coordinator rule, a demo flag, a target cell, an inferred card.
#[test]
fn bad_regression_inputs_are_refused_by_name() {
    // A coordinator whose rule needs class probabilities refuses to start on a regression card.
    let (mut procs, _server) = coordinator("confidence_weighted");
    let st = procs.wait_exit("coordinator", Instant::now() + WAIT);
    assert!(!st.success());
    let log = procs.log("coordinator");
    assert!(log.contains("rule") && log.contains("regression"), "{log}");

    let d = tempfile::tempdir().expect("temp dir");
    let dir = d.path();
    // The demo refuses an encoding that cannot carry real values.
    let (card, public) = (example("task.toml"), example("public.csv"));
    let (card, public) = (card.display().to_string(), public.display().to_string());
    let plant = example("plant-a.csv").display().to_string();
    let (ok, out) = fedistill(
        dir,
        &[
            "demo",
            "--task",
            &card,
            "--public",
            &public,
            "--private",
            &plant,
            "--private",
            &plant,
            "--encoding",
            "int8",
        ],
    );
    assert!(!ok && out.contains("regression") && out.contains("f32 or f16"), "{out}");
    // A classification demo refuses --constraint-weight.
    let (ok, out) = fedistill(dir, &["demo", "--rounds", "1", "--constraint-weight", "1"]);
    assert!(
        !ok && out.contains("--constraint-weight") && out.contains("--task"),
        "{out}"
    );

    // Target cells: not a number, beyond the card's bounds (reported, never clipped).
    let text = std::fs::read_to_string(example("plant-a.csv")).expect("plant a");
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let replace_last = |line: &str, v: &str| {
        let mut cells: Vec<&str> = line.split(',').collect();
        let n = cells.len();
        cells[n - 1] = v;
        cells.join(",")
    };
    lines[3] = replace_last(&lines[3], "strong");
    lines[5] = replace_last(&lines[5], "130.5");
    std::fs::write(dir.join("bad.csv"), lines.join("\n")).expect("bad file");
    let (ok, out) = fedistill(dir, &["data", "check", "--task", &card, "bad.csv"]);
    assert!(!ok, "{out}");
    assert!(out.contains("`strong` is not a number"), "{out}");
    assert!(out.contains("130.5 is outside the card's bounds [0, 120]"), "{out}");

    // `task infer --regression` on a label that is not a number.
    std::fs::write(dir.join("p.csv"), "a,grade\n1,A\n2,B\n").expect("public");
    let (ok, out) = fedistill(
        dir,
        &[
            "task",
            "infer",
            "--public",
            "p.csv",
            "--label",
            "grade",
            "--regression",
            "--out",
            "t.toml",
        ],
    );
    assert!(
        !ok && out.contains("regression target `grade`") && out.contains("not a number"),
        "{out}"
    );
    // And on a numeric one it drafts [regression] with the public targets' statistics.
    std::fs::write(dir.join("q.csv"), "a,y\n1,10\n2,20\n3,30\n").expect("public");
    let (ok, out) = fedistill(
        dir,
        &[
            "task",
            "infer",
            "--public",
            "q.csv",
            "--label",
            "y",
            "--regression",
            "--out",
            "t.toml",
        ],
    );
    assert!(ok, "{out}");
    let t = std::fs::read_to_string(dir.join("t.toml")).expect("card");
    assert!(t.contains("[regression]\nmean = 20.0") && !t.contains("classes"), "{t}");
}
