//! End-to-end tests of `fedistill data` through the real binary: the split totals, the stability
//! of the public digest across processes, and the errors for unknown or uninstalled datasets.

use std::process::{Command, Output};

fn fedistill(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fedistill"))
        .args(args)
        // Run from a directory without data/ to prove the embedded copies are used.
        .current_dir(std::env::temp_dir())
        .output()
        .expect("the fedistill binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const DESCRIBE: &[&str] = &[
    "data",
    "describe",
    "mnist-10k",
    "--participants",
    "5",
    "--alpha",
    "0.5",
    "--seed",
    "7",
];

#[test]
fn describe_mnist_totals_and_stable_digest() {
    let first = fedistill(DESCRIBE);
    assert!(first.status.success(), "stderr: {}", stderr(&first));
    let text = stdout(&first);
    // Sum the "total" column of every shard/public/test row; it must be the 10,000 samples, and
    // each row's class counts must add up to its total.
    let mut sum = 0usize;
    let mut shards = 0;
    for line in text.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let (label, nums) = match cols.first() {
            Some(&"shard") => {
                shards += 1;
                ("shard", &cols[2..])
            }
            Some(&"public") if cols.len() == 12 => ("public", &cols[1..]),
            Some(&"test") if cols.len() == 12 => ("test", &cols[1..]),
            _ => continue,
        };
        let nums: Vec<usize> = nums.iter().map(|s| s.parse().expect("numeric table cell")).collect();
        assert_eq!(nums.len(), 11, "{label}: total + 10 classes in `{line}`");
        assert_eq!(nums[0], nums[1..].iter().sum::<usize>(), "row `{line}`");
        sum += nums[0];
    }
    assert_eq!(shards, 5, "{text}");
    assert_eq!(sum, 10_000, "{text}");
    let digest_line = |t: &str| {
        t.lines()
            .find(|l| l.starts_with("public digest"))
            .map(str::to_string)
            .expect("a public digest line")
    };
    let d1 = digest_line(&text);
    assert!(d1.contains("sha256:") && d1.len() > 64, "{d1}");
    let second = fedistill(DESCRIBE);
    assert!(second.status.success());
    assert_eq!(d1, digest_line(&stdout(&second)));
    // Another seed gives another public set.
    let other = fedistill(&["data", "describe", "mnist-10k", "--participants", "5", "--seed", "8"]);
    assert_ne!(d1, digest_line(&stdout(&other)));
}

#[test]
fn describe_json_matches_the_table() {
    let mut args = DESCRIBE.to_vec();
    args.push("--json");
    let out = fedistill(&args);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("valid JSON");
    assert_eq!(v["total"], 10_000);
    assert_eq!(v["dataset"]["n"], 10_000);
    assert_eq!(v["config"]["partition"]["kind"], "dirichlet");
    let shards = v["shards"].as_array().expect("shards array");
    assert_eq!(shards.len(), 5);
    let sizes: u64 = shards.iter().map(|s| s["size"].as_u64().expect("size")).sum();
    let public = v["public"]["size"].as_u64().expect("public size");
    let test = v["test"]["size"].as_u64().expect("test size");
    assert_eq!(sizes + public + test, 10_000);
    let table = stdout(&fedistill(DESCRIBE));
    let digest = v["public"]["digest"].as_str().expect("digest");
    assert!(table.contains(&format!("sha256:{digest}")));
}

#[test]
fn unknown_dataset_lists_the_known_ones() {
    let out = fedistill(&["data", "describe", "cifar-10"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("unknown dataset `cifar-10`"), "{err}");
    for name in [
        "mnist-10k",
        "digits",
        "credit",
        "lending-club",
        "breast-cancer",
        "fashion-mnist",
    ] {
        assert!(err.contains(name), "{name} missing from: {err}");
    }
}

#[test]
fn fashion_mnist_missing_dir_says_how_to_install() {
    let dir = std::env::temp_dir().join("fedistill-no-such-fashion-dir");
    let out = fedistill(&[
        "data",
        "describe",
        "fashion-mnist",
        "--data-dir",
        dir.to_str().expect("utf-8 temp path"),
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("apt-get install -y dataset-fashion-mnist"), "{err}");
    assert!(err.contains("train-images-idx3-ubyte.gz not found"), "{err}");
}

#[test]
fn impossible_partition_is_refused() {
    let out = fedistill(&["data", "describe", "breast-cancer", "--classes-per-node", "3"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("k must be in 1..=2"), "{}", stderr(&out));
    let out = fedistill(&["data", "describe", "digits", "--alpha", "0"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("alpha must be a finite number > 0"));
    // Two partition flags at once are a usage error.
    let out = fedistill(&["data", "describe", "digits", "--iid", "--alpha", "0.3"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("cannot be used with"), "{}", stderr(&out));
}

#[test]
fn list_names_every_dataset_with_licence() {
    let out = fedistill(&["data", "list", "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("valid JSON");
    let names: Vec<&str> = v
        .as_array()
        .expect("array")
        .iter()
        .map(|e| e["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        [
            "mnist-10k",
            "digits",
            "credit",
            "lending-club",
            "breast-cancer",
            "italy-power",
            "fashion-mnist"
        ]
    );
    assert!(v
        .as_array()
        .expect("array")
        .iter()
        .all(|e| !e["licence"].as_str().unwrap_or("").is_empty()));
    let table = stdout(&fedistill(&["data", "list"]));
    assert!(table.contains("breast-cancer") && table.contains("BSD-3-Clause"));
}
