//! `fedistill data split` through the real binary: a catalog dataset written as a deployment's files (the
//! task card and the public set for the coordinator, each participant's own directory), every participant's
//! files accepted by `fedistill data check --task` against its copy of the card, the same seed giving the same
//! files, and the errors for a used directory, a bad partition and an unknown dataset.

use std::path::Path;
use std::process::{Command, Output};

use fedistill_shared::data::{sha256_file, TaskCard};

fn fedistill(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fedistill"))
        .args(args)
        // Run from a directory without data/ to prove the embedded copies are used.
        .current_dir(std::env::temp_dir())
        .output()
        .expect("the fedistill binary runs")
}

fn text(o: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn split(dataset: &str, partition: &str, seed: &str, out: &Path) -> Output {
    let out = out.to_str().expect("UTF-8 path");
    fedistill(&[
        "data",
        "split",
        "--dataset",
        dataset,
        "--participants",
        "3",
        "--partition",
        partition,
        "--seed",
        seed,
        "--out",
        out,
    ])
}

fn sha(path: &Path) -> String {
    hex::encode(sha256_file(path).expect("sha256").0)
}

/// `data check --task CARD FILE` exits 0: the file is usable against the card.
fn check(card: &Path, file: &Path) {
    let o = fedistill(&[
        "data",
        "check",
        "--task",
        card.to_str().expect("UTF-8 path"),
        file.to_str().expect("UTF-8 path"),
    ]);
    assert!(o.status.success(), "data check {}: {}", file.display(), text(&o));
}

/// The private row counts `data split` printed (`pI  DIR: FILES (N private rows, ...)`).
fn private_rows(stdout: &str) -> Vec<u64> {
    stdout
        .lines()
        .filter(|l| l.starts_with('p') && l.contains(" private rows"))
        .map(|l| {
            let before = l.split(" private rows").next().expect("text");
            before
                .rsplit('(')
                .next()
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or_else(|| panic!("no row count in `{l}`"))
        })
        .collect()
}

#[test]
fn an_image_split_writes_each_participants_own_files_and_the_card_checks_them() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("fed-data");
    let o = split("digits", "iid", "7", &out);
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();

    // The coordinator's files: the card and the public set it declares.
    let card = TaskCard::load(&out.join("task.toml")).expect("the card parses");
    let public = out.join("public-images.idx3-ubyte");
    assert_eq!(sha(&public), card.public.sha256, "the public file is the card's");
    assert!(
        stdout.contains(&card.digest_hex()),
        "the card's digest is printed:\n{stdout}"
    );
    let benchmark = card
        .benchmark
        .as_ref()
        .expect("the split's test set is the card's benchmark");

    // Each participant's own directory: its copy of the card, its private rows (labels beside), the test set.
    let rows = private_rows(&stdout);
    assert_eq!(rows.len(), 3, "{stdout}");
    for i in 0..3 {
        let node = out.join("nodes").join(format!("p{i}"));
        assert_eq!(
            std::fs::read(node.join("task.toml")).expect("card copy"),
            std::fs::read(out.join("task.toml")).expect("card"),
            "p{i}: the same card"
        );
        for f in [
            "private-images.idx3-ubyte",
            "private-labels.idx1-ubyte",
            "test-images.idx3-ubyte",
        ] {
            assert!(node.join(f).is_file(), "p{i}: {f} missing");
        }
        assert_eq!(
            sha(&node.join("test-images.idx3-ubyte")),
            benchmark.sha256,
            "p{i}: benchmark"
        );
        check(&node.join("task.toml"), &node.join("private-images.idx3-ubyte"));
        check(&node.join("task.toml"), &node.join("test-images.idx3-ubyte"));
    }
    // Nothing but the card, the public set and the nodes' directories at the top: no test set or private
    // rows the coordinator could read.
    let mut top: Vec<String> = std::fs::read_dir(&out)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(top, ["nodes", "public-images.idx3-ubyte", "task.toml"]);
    // Every sample lands in exactly one place (digits: 1797).
    assert_eq!(
        rows.iter().sum::<u64>() + card.public.rows + benchmark.rows,
        1797,
        "{stdout}"
    );
    // The operator is told what goes in each node's config.
    for needle in [
        "[task]",
        "card = \"task.toml\"",
        "public = \"public-images.idx3-ubyte\"",
        "[benchmark]",
    ] {
        assert!(stdout.contains(needle), "no `{needle}` in:\n{stdout}");
    }

    // The same seed gives the same files; another seed another split.
    let again = tmp.path().join("again");
    assert!(split("digits", "iid", "7", &again).status.success());
    assert_eq!(
        std::fs::read(again.join("task.toml")).expect("card"),
        std::fs::read(out.join("task.toml")).expect("card")
    );
    let other = tmp.path().join("other");
    assert!(split("digits", "iid", "8", &other).status.success());
    assert_ne!(sha(&other.join("public-images.idx3-ubyte")), card.public.sha256);
}

#[test]
fn a_tabular_split_writes_csv_files_the_card_checks() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("banks");
    let o = split("breast-cancer", "dirichlet:0.5", "3", &out);
    assert!(o.status.success(), "{}", text(&o));
    let card = TaskCard::load(&out.join("task.toml")).expect("the card parses");
    assert_eq!(sha(&out.join("public.csv")), card.public.sha256);
    for i in 0..3 {
        let node = out.join("nodes").join(format!("p{i}"));
        check(&node.join("task.toml"), &node.join("private.csv"));
        check(&node.join("task.toml"), &node.join("test.csv"));
    }
}

#[test]
fn a_used_directory_a_bad_partition_and_an_unknown_dataset_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let used = tmp.path().join("used");
    std::fs::create_dir_all(&used).expect("mkdir");
    std::fs::write(used.join("keep.txt"), "mine").expect("write");
    let o = split("digits", "iid", "1", &used);
    assert!(!o.status.success());
    assert!(text(&o).contains("is not empty"), "{}", text(&o));
    assert_eq!(std::fs::read_to_string(used.join("keep.txt")).expect("kept"), "mine");

    for (bad, needle) in [
        ("dirichlet", "--partition \"dirichlet\""),
        ("dirichlet:-1", "must be > 0"),
        ("classes:two", "classes:K"),
        ("zipf:2", "--partition \"zipf:2\""),
    ] {
        let o = split(
            "digits",
            bad,
            "1",
            &tmp.path().join(format!("bad-{}", bad.replace(':', "-"))),
        );
        assert!(!o.status.success(), "{bad} accepted");
        assert!(text(&o).contains(needle), "{bad}: {}", text(&o));
    }
    let o = split("no-such-set", "iid", "1", &tmp.path().join("none"));
    assert!(!o.status.success());
    assert!(text(&o).contains("no-such-set"), "{}", text(&o));
}

#[test]
fn classes_and_quantity_partitions_are_accepted() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for p in ["classes:4", "quantity:1.0"] {
        let out = tmp.path().join(p.replace(':', "-"));
        let o = split("digits", p, "5", &out);
        assert!(o.status.success(), "{p}: {}", text(&o));
        assert!(out.join("nodes/p2/private-images.idx3-ubyte").is_file(), "{p}");
    }
}
