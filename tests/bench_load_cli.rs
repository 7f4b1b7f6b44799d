//! End-to-end test of `fedistill bench load --quick --size-mb 2`: the real binary generates the CSV and its
//! Parquet copy, times every loading method in one run, measures a real `fedistill data check` child, and
//! writes its report. Asserts the report's shape and that every figure is positive; never a timing threshold.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_fedistill");

#[test]
fn quick_load_suite_measures_every_method_against_the_baseline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let report = dir.path().join("report");
    let out = Command::new(BIN)
        .args(["bench", "load", "--quick", "--size-mb", "2", "--report"])
        .arg(&report)
        .output()
        .expect("running fedistill");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench load failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The printed table names the baseline and every method.
    for method in ["csv-baseline", "read-private-csv", "read-private-parquet", "check-csv"] {
        assert!(stdout.contains(method), "stdout lacks {method}:\n{stdout}");
    }
    assert!(stdout.contains("vs baseline"), "{stdout}");
    assert!(stdout.contains("the 300 MB target"), "{stdout}");
    assert!(stdout.contains("parquet rows equal csv rows: yes"), "{stdout}");

    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.join("load.json")).expect("load.json")).expect("json");
    let methods = r["methods"].as_array().expect("methods");
    let names: Vec<&str> = methods.iter().filter_map(|m| m["method"].as_str()).collect();
    assert_eq!(
        names,
        ["csv-baseline", "read-private-csv", "read-private-parquet", "check-csv"]
    );
    let rows = r["rows"].as_u64().expect("rows");
    assert!(rows > 0);
    // About 2 MB of CSV (the writer stops at the first row past the size).
    let csv_bytes = r["csv_bytes"].as_u64().expect("csv_bytes");
    assert!((2_000_000..2_100_000).contains(&csv_bytes), "{csv_bytes}");
    for m in methods {
        assert_eq!(m["rows"].as_u64(), Some(rows), "{m}");
        for key in ["mb_per_s", "rows_per_s", "seconds", "vs_baseline"] {
            assert!(m[key].as_f64().is_some_and(|v| v > 0.0), "{key} of {m}");
        }
    }
    assert_eq!(methods[0]["vs_baseline"].as_f64(), Some(1.0));
    assert_eq!(r["parquet_matches_csv"], true);
    let mem = &r["check_memory"];
    assert_eq!(mem["file_bytes"].as_u64(), Some(csv_bytes));
    assert_eq!(mem["target_mb"].as_f64(), Some(300.0));
    assert!(mem["peak_rss_mb"].as_f64().is_some_and(|v| v > 0.0), "{mem}");
    for file in ["load.md", "load-throughput.png", "load-throughput.svg"] {
        let len = std::fs::metadata(report.join(file)).map(|m| m.len()).unwrap_or(0);
        assert!(len > 0, "{file} missing or empty");
    }
    let md = std::fs::read_to_string(report.join("load.md")).expect("load.md");
    assert!(md.contains("| csv-baseline |"), "{md}");
}
