//! `fedistill bench domains --quick` as a real process: every worked example runs as a federation of real
//! participant processes through the own-data path, the audit of each verifies, the report holds every run
//! with its baselines and charts, and bad flags are refused by name.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn fedistill(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fedistill"));
    c.current_dir(dir);
    c
}

#[test]
fn domains_quick_runs_every_example_with_a_verified_audit() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("temp dir");
    let out = fedistill(root)
        .args(["bench", "domains", "--quick", "--report"])
        .arg(dir.path())
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rep: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("domains.json")).expect("report")).expect("JSON");
    assert_eq!(rep["suite"], "domains");
    let runs = rep["runs"].as_array().expect("runs");
    // Four examples x two variants x one seed.
    assert_eq!(runs.len(), 8, "{rep}");
    for r in runs {
        assert_eq!(r["audit_verified"], true, "{r}");
        // Soft labels crossed the wire in every round.
        assert!(r["bytes_up"].as_u64().expect("bytes") > 0, "{r}");
        if r["example"] == "concrete-plants" {
            // The regression example: R² in the accuracy fields, RMSE in MPa and violation rates measured
            // for the student, the local-only teachers and the pooled teacher. A student predicting the
            // mean strength would have R² near 0 and RMSE near 16 MPa.
            let f = &r["regression"];
            assert!(r["student_accuracy"].as_f64().expect("R²") > 0.2, "{r}");
            assert!(f["student_rmse"].as_f64().expect("rmse") < 14.0, "{r}");
            // The card bounds the strength (0 to 120 MPa): the share of rows predicted outside is measured
            // for every model too.
            for k in [
                "student_violation",
                "local_only_violation",
                "pooled_violation",
                "student_bound_violation",
                "local_only_bound_violation",
                "pooled_bound_violation",
            ] {
                let v = f[k].as_f64().unwrap_or_else(|| panic!("{k} missing: {r}"));
                assert!((0.0..=1.0).contains(&v), "{k} {v}");
            }
            continue;
        }
        for k in [
            "student_accuracy",
            "int8_accuracy",
            "local_only_accuracy",
            "pooled_accuracy",
        ] {
            let v = r[k].as_f64().expect(k);
            assert!((0.0..=1.0).contains(&v), "{k} {v}");
        }
        // Better than a coin on every example: the season of a day's demand is easy, next week's
        // volatility regime follows this one's, and impairment shows in the CSF proteins.
        assert!(r["student_accuracy"].as_f64().expect("acc") > 0.6, "{r}");
    }
    // The two-modality example: the fused federation takes all three hospitals, the one without the CSF
    // assay included, and reports the students' AUC; the federation on the CSF block alone cannot take it.
    let ad: Vec<&Value> = runs.iter().filter(|r| r["example"] == "ad-hospitals").collect();
    let participants = |variant: &str| {
        ad.iter()
            .find(|r| r["variant"] == variant)
            .and_then(|r| r["participants"].as_u64())
            .unwrap_or_else(|| panic!("no {variant} run: {rep}"))
    };
    assert_eq!((participants("fused"), participants("first_only")), (3, 2), "{rep}");
    for r in &ad {
        let auc = r["student_auc"].as_f64().expect("an AUC");
        assert!((0.5..=1.0).contains(&auc), "{r}");
    }
    let examples: Vec<&str> = runs.iter().filter_map(|r| r["example"].as_str()).collect();
    assert!(
        examples.contains(&"italy-power") && examples.contains(&"sp500-banks"),
        "{examples:?}"
    );
    let variants: Vec<&str> = runs.iter().filter_map(|r| r["variant"].as_str()).collect();
    assert!(
        variants.contains(&"mlp") && variants.contains(&"cnn1d_augment"),
        "{variants:?}"
    );
    let concrete: Vec<&str> = runs
        .iter()
        .filter(|r| r["example"] == "concrete-plants")
        .filter_map(|r| r["variant"].as_str())
        .collect();
    assert_eq!(concrete, ["constrained", "unconstrained"], "{rep}");
    for stem in [
        "domains-italy-power",
        "domains-sp500-banks",
        "domains-ad-hospitals",
        "domains-concrete-plants",
    ] {
        let png = std::fs::read(dir.path().join(format!("{stem}.png"))).expect("png");
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let svg = std::fs::read_to_string(dir.path().join(format!("{stem}.svg"))).expect("svg");
        assert!(svg.contains("<svg"));
    }
    let md = std::fs::read_to_string(dir.path().join("domains.md")).expect("markdown");
    assert!(md.contains("| 1-D CNN + augmentation | 3 | 1 |"), "{md}");
    assert!(md.contains("| first block only | 2 | 1 |"), "{md}");
    assert!(md.contains("| no constraint loss | 1 |"), "{md}");
    assert!(md.contains("| student out of bounds % |"), "{md}");
}

#[test]
fn domains_refuses_bad_flags_by_name() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let empty = tempfile::tempdir().expect("temp dir");
    for (dir, args, want) in [
        (
            root,
            vec!["--examples", "weather"],
            "unknown example \"weather\"; known: italy-power, sp500-banks, ad-hospitals, concrete-plants",
        ),
        (root, vec!["--rounds", "0"], "--rounds must be at least 1"),
        (
            empty.path(),
            vec![],
            "sp500-banks/task.toml not found; run from the repository root or pass --examples-dir",
        ),
    ] {
        let out = fedistill(dir)
            .args(["bench", "domains", "--quick"])
            .args(&args)
            .output()
            .expect("runs");
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
}
