//! End-to-end test of `fedistill bench scale --quick`: the real binary starts a real coordinator process and
//! lightweight participants over mTLS QUIC on loopback; checks the JSON report's shape, that every round of
//! every configuration completed, the plots, and the generated docs section.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_fedistill");

#[test]
fn quick_scale_suite_completes_every_round_and_writes_its_report() {
    let dir = tempfile::tempdir().expect("tempdir");
    let report = dir.path().join("report");
    let docs = dir.path().join("benchmarks.md");
    std::fs::write(
        &docs,
        "# Benchmarks\n\nhand-written prose\n\n<!-- bench-scale:begin -->\nstale\n<!-- bench-scale:end -->\n\ntail\n",
    )
    .expect("docs");
    let out = Command::new(BIN)
        .args(["bench", "scale", "--quick", "--report"])
        .arg(&report)
        .arg("--docs")
        .arg(&docs)
        .env("RUST_LOG", "warn")
        .output()
        .expect("running fedistill");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench scale failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Progress over the grid goes to stderr as plain lines when stderr is not a terminal (shared/ml's
    // progress module): a start line, the start and end of every configuration, and a closing line; stdout
    // keeps only the results.
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "scale: starting (9 steps)",
        "scale: 0/9 ",
        "scale: 3/9 ",
        "scale: 6/9 ",
        "scale: 9/9 ",
        "scale: done 3 configurations",
    ] {
        assert!(stderr.contains(needle), "stderr lacks {needle:?}:\n{stderr}");
    }
    assert!(
        !stdout.lines().any(|l| l.starts_with("scale: ")),
        "progress leaked to stdout:\n{stdout}"
    );

    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.join("scale.json")).expect("scale.json")).expect("json");
    assert_eq!(r["suite"], "scale");
    assert_eq!(r["quick"], true);
    assert_eq!(r["encoding"], "f32");
    assert_eq!(r["classes"], 10);
    let rows = r["rows"].as_array().expect("rows");
    // --quick: 3 and 10 participants at 100 rows, and 1000 rows at 3 participants (docs/benchmarks.md).
    let mut configs: Vec<(u64, u64)> = rows
        .iter()
        .map(|x| {
            (
                x["participants"].as_u64().expect("n"),
                x["rows_per_round"].as_u64().expect("rows"),
            )
        })
        .collect();
    configs.sort();
    assert_eq!(configs, vec![(3, 100), (3, 1000), (10, 100)]);
    for x in rows {
        assert_eq!(x["rounds"], 3, "{x}");
        assert_eq!(
            x["rounds_completed"], 3,
            "every round completed with every participant: {x}"
        );
        let lat = x["latency_ms"].as_array().expect("latency_ms");
        assert_eq!(lat.len(), 3, "{x}");
        for v in lat {
            let v = v.as_f64().expect("number");
            assert!(v.is_finite() && v > 0.0, "{x}");
        }
        for key in [
            "latency_ms_median",
            "latency_ms_p95",
            "raw_transfer_ms_median",
            "latency_over_raw",
            "commit_ms_median",
            "latency_over_raw_plus_commit",
            "coordinator_latency_ms_median",
            "coordinator_over_raw_plus_commit",
            "coordinator_commit_ms_median",
        ] {
            let v = x[key].as_f64().unwrap_or(f64::NAN);
            assert!(v.is_finite() && v > 0.0, "{key}: {x}");
        }
        let f = |k: &str| x[k].as_f64().unwrap_or(f64::NAN);
        let ratio = f("latency_ms_median") / (f("raw_transfer_ms_median") + f("commit_ms_median"));
        assert!(
            (f("latency_over_raw_plus_commit") - ratio).abs() <= 1e-9 * ratio,
            "latency_over_raw_plus_commit is p50 / (raw + commit): {x}"
        );
        let coordinator = f("coordinator_latency_ms_median") / (f("raw_transfer_ms_median") + f("commit_ms_median"));
        assert!(
            (f("coordinator_over_raw_plus_commit") - coordinator).abs() <= 1e-9 * coordinator,
            "coordinator_over_raw_plus_commit is the coordinator's p50 / (raw + commit): {x}"
        );
        assert!(x["latency_ms_p95"].as_f64() >= x["latency_ms_median"].as_f64(), "{x}");
        assert!(
            x["coordinator_cpu_s_per_round"].as_f64().is_some_and(|v| v >= 0.0),
            "{x}"
        );
        assert!(x["coordinator_peak_rss_mib"].as_f64().is_some_and(|v| v > 1.0), "{x}");
        let up = x["bytes_up_per_round"].as_u64().expect("up");
        let down = x["bytes_down_per_round"].as_u64().expect("down");
        assert_eq!(x["bytes_per_round"].as_u64(), Some(up + down));
    }
    let row = |n: u64, rows_per_round: u64| {
        rows.iter()
            .find(|x| x["participants"] == n && x["rows_per_round"] == rows_per_round)
            .expect("row")
    };
    let up = |x: &serde_json::Value| x["bytes_up_per_round"].as_u64().expect("up");
    // f32 soft labels are 10 classes x 4 bytes per row, so 900 more rows from each of 3 participants add
    // 108 000 payload bytes to the uploads; framing and length prefixes add at most a few bytes each.
    let extra = up(row(3, 1000)) - up(row(3, 100));
    assert!((108_000..108_000 + 300).contains(&extra), "extra upload bytes {extra}");
    assert!(
        up(row(10, 100)) > 3 * up(row(3, 100)),
        "10 participants upload more than 3x what 3 do"
    );

    for f in [
        "scale.md",
        "latency_vs_participants.png",
        "latency_vs_participants.svg",
        "latency_vs_payload.png",
        "latency_vs_payload.svg",
    ] {
        assert!(report.join(f).is_file(), "{f} missing");
    }
    let png = std::fs::read(report.join("latency_vs_participants.png")).expect("png");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");

    let md = std::fs::read_to_string(&docs).expect("docs");
    assert!(
        md.starts_with("# Benchmarks\n\nhand-written prose\n\n<!-- bench-scale:begin -->\n"),
        "{md}"
    );
    assert!(md.ends_with("<!-- bench-scale:end -->\n\ntail\n"), "{md}");
    assert!(!md.contains("stale"), "{md}");
    assert!(
        md.contains("Generated by `fedistill bench scale --quick --docs docs/benchmarks.md`"),
        "{md}"
    );
    assert!(md.contains("| sweep | participants |"), "{md}");
    assert!(md.contains("| commit ms | p50 / raw | p50 / (raw + commit) |"), "{md}");
    assert!(md.contains("](img/bench-scale/latency_vs_participants.svg)"), "{md}");
    assert!(dir.path().join("img/bench-scale/latency_vs_participants.svg").is_file());
}

/// `--secure-aggregation`: each participant count runs again with `secure_aggregation = true`; the secure rows
/// complete every round, and the overhead pairs each with its clear twin (figures present and positive; no
/// timing assertion).
#[test]
fn quick_scale_suite_with_secure_aggregation_reports_the_overhead() {
    let dir = tempfile::tempdir().expect("tempdir");
    let report = dir.path().join("report");
    let out = Command::new(BIN)
        .args([
            "bench",
            "scale",
            "--quick",
            "--participants",
            "3,10",
            "--rows",
            "100",
            "--secure-aggregation",
            "--secagg-neighbours",
            "4",
            "--report",
        ])
        .arg(&report)
        .env("RUST_LOG", "warn")
        .output()
        .expect("running fedistill");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench scale --secure-aggregation failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.join("scale.json")).expect("scale.json")).expect("json");
    assert_eq!(r["plan"]["secure_aggregation"], true);
    assert_eq!(r["plan"]["secagg_neighbours"], 4);
    let rows = r["rows"].as_array().expect("rows");
    // 3 and 10 participants at 100 rows, each in the clear (3 also the payload sweep) and secure.
    let mut configs: Vec<(u64, bool)> = rows
        .iter()
        .map(|x| {
            (
                x["participants"].as_u64().expect("n"),
                x["secure"].as_bool().expect("secure"),
            )
        })
        .collect();
    configs.sort();
    assert_eq!(configs, vec![(3, false), (3, true), (10, false), (10, true)]);
    let row = |n: u64, secure: bool| {
        rows.iter()
            .find(|x| x["participants"] == n && x["secure"] == secure)
            .expect("row")
    };
    for n in [3, 10] {
        let (plain, secure) = (row(n, false), row(n, true));
        assert_eq!(secure["sweeps"], serde_json::json!(["secure"]), "{secure}");
        assert_eq!(
            secure["rounds_completed"], 3,
            "every secure round completed with everyone: {secure}"
        );
        assert_eq!(plain["rounds_completed"], 3, "{plain}");
        assert!(plain.get("secure_phases_ms").is_none(), "{plain}");
        let phases = &secure["secure_phases_ms"];
        let sum: f64 = ["keys_ms", "shares_ms", "masked_ms", "unmask_ms"]
            .iter()
            .map(|k| {
                let v = phases[k].as_f64().unwrap_or(f64::NAN);
                assert!(v.is_finite() && v >= 0.0, "{k}: {secure}");
                v
            })
            .sum();
        assert!(sum > 0.0, "{secure}");
        // Masked inputs are 8 bytes per value against 4 for f32 labels, and the adverts, shares, relays and
        // reveals come on top, all counted: the secure round moves more bytes up and down.
        for key in ["bytes_up_per_round", "bytes_down_per_round"] {
            assert!(secure[key].as_u64() > plain[key].as_u64(), "{key}: {secure} vs {plain}");
        }
        let up = |x: &serde_json::Value| x["bytes_up_per_round"].as_u64().expect("up");
        assert!(
            up(secure) >= up(plain) + n * 100 * 10 * 4,
            "the masked inputs' extra 4 bytes per value are counted: {secure} vs {plain}"
        );
    }
    let overhead = r["secure_overhead"].as_array().expect("secure_overhead");
    assert_eq!(overhead.len(), 2, "{overhead:?}");
    for (o, n) in overhead.iter().zip([3u64, 10]) {
        assert_eq!(o["participants"], n, "{o}");
        assert_eq!(o["rows_per_round"], 100, "{o}");
        // k = 4: complete below 6 participants (threshold 2 of 3), else 5 holders and a threshold of 3.
        let (threshold, neighbours) = if n == 3 { (2, 0) } else { (3, 4) };
        assert_eq!(
            (o["threshold"].as_u64(), o["neighbours"].as_u64()),
            (Some(threshold), Some(neighbours)),
            "{o}"
        );
        for key in ["plain_p50_ms", "secure_p50_ms", "latency_ratio", "bytes_ratio"] {
            let v = o[key].as_f64().unwrap_or(f64::NAN);
            assert!(v.is_finite() && v > 0.0, "{key}: {o}");
        }
        let f = |k: &str| o[k].as_f64().unwrap_or(f64::NAN);
        assert!((f("latency_ratio") - f("secure_p50_ms") / f("plain_p50_ms")).abs() <= 1e-9 * f("latency_ratio"));
        assert_eq!(o["plain_bytes"], row(n, false)["bytes_per_round"], "{o}");
        assert_eq!(o["secure_bytes"], row(n, true)["bytes_per_round"], "{o}");
        assert!(f("bytes_ratio") > 1.0, "{o}");
        assert_eq!(o["plain_p50_ms"], row(n, false)["latency_ms_median"], "{o}");
        assert_eq!(o["secure_p50_ms"], row(n, true)["latency_ms_median"], "{o}");
    }
    let md = std::fs::read_to_string(report.join("scale.md")).expect("scale.md");
    assert!(md.contains("Secure aggregation overhead"), "{md}");
    assert!(
        md.contains("| participants | graph | threshold | plain p50 ms | secure p50 ms | latency ratio |"),
        "{md}"
    );
    assert!(md.contains("| 10 | SecAgg+ k = 4 | 3 |"), "{md}");
    assert!(stdout.contains("secure (t = 3, SecAgg+ k = 4)"), "{stdout}");
    assert!(report.join("secure_vs_plain.svg").is_file());
}
