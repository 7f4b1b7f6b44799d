//! The worked example examples/italy-power: its files are the cut of the UCR archive's files
//! (data/ItalyPowerDemand_{TRAIN,TEST}.ts) that its README states, its card reads every one of them (the public
//! set as declared), and `fedistill demo --task` runs the three utilities as real processes (a coordinator and
//! three participants of the binary, each reading its own `.ts` file) with a verified audit.

mod common;

use std::path::{Path, PathBuf};

use fedistill_shared::data::{read_private, read_public, sha256_file, CsvOptions, TaskCard};
use serde_json::Value;

use common::fedistill;

const UTILITIES: [&str; 3] = ["utility-a.ts", "utility-b.ts", "utility-c.ts"];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn example(file: &str) -> PathBuf {
    root().join("examples/italy-power").join(file)
}

/// A `.ts` file's lines without its comments, cut at `@data`: (the header's `@` lines, the data lines).
fn header_and_days(path: &Path) -> (Vec<String>, Vec<String>) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let lines: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    let at = lines
        .iter()
        .position(|l| l == "@data")
        .unwrap_or_else(|| panic!("{}: no @data", path.display()));
    (lines[..=at].to_vec(), lines[at + 1..].to_vec())
}

/// The README's rule: the public set is every day (TRAIN then TEST, numbered from 0) whose number ends in 0, 1
/// or 2; the others, counted class by class, go three in five to A (winter) or B (summer), one in five to the
/// other of the two, one in five to C.
#[test]
fn the_example_files_are_the_stated_cut_of_the_archive_and_read_against_the_card() {
    let (header, train) = header_and_days(&root().join("data/ItalyPowerDemand_TRAIN.ts"));
    let (test_header, test) = header_and_days(&root().join("data/ItalyPowerDemand_TEST.ts"));
    assert_eq!(header, test_header);
    let days: Vec<String> = train.into_iter().chain(test).collect();
    assert_eq!(days.len(), 1096);
    let mut want: Vec<(&str, Vec<String>)> = ["public.ts"]
        .into_iter()
        .chain(UTILITIES)
        .map(|f| (f, Vec::new()))
        .collect();
    let mut counted = [0usize; 2];
    for (i, day) in days.iter().enumerate() {
        let file = if i % 10 < 3 {
            0
        } else {
            let winter = day.ends_with(":1");
            assert!(winter || day.ends_with(":2"), "{day}");
            let k = &mut counted[usize::from(!winter)];
            let (own, other) = if winter { (1, 2) } else { (2, 1) };
            let to = match *k % 5 {
                0..=2 => own,
                3 => other,
                _ => 3,
            };
            *k += 1;
            to
        };
        want[file].1.push(day.clone());
    }
    for (file, rows) in &want {
        let (h, d) = header_and_days(&example(file));
        assert_eq!(&h, &header, "{file}: the archive's header");
        assert!(&d == rows, "{file}: not the README's cut of the archive");
    }

    let card = TaskCard::load(&example("task.toml")).expect("the example's card");
    let (public, labelled) = read_public(&example("public.ts"), &card).expect("the public set reads");
    assert!(labelled);
    assert_eq!((public.n as u64, public.dim), (card.public.rows, 24));
    assert_eq!(
        hex::encode(sha256_file(&example("public.ts")).expect("hash").0),
        card.public.sha256
    );
    // The README's table: each utility's own mix of seasons.
    let mut mixes = Vec::new();
    for file in UTILITIES {
        let (rows, report) = read_private(&example(file), &card, &CsvOptions::default()).expect(file);
        assert_eq!(report.rows, rows.n);
        mixes.push(rows.class_counts());
    }
    assert_eq!(mixes, [vec![226, 78], vec![75, 234], vec![75, 78]]);
}

/// The README's command, with two rounds: three utilities federate through their own files and the audit
/// of the coordinator's log verifies.
#[test]
fn three_utilities_run_the_example_as_real_processes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let report = dir.path().join("report.json");
    let path = |f: &str| example(f).display().to_string();
    let mut args: Vec<String> = vec![
        "demo".into(),
        "--task".into(),
        path("task.toml"),
        "--public".into(),
        path("public.ts"),
        "--rounds".into(),
        "2".into(),
        "--report".into(),
        report.display().to_string(),
    ];
    for f in UTILITIES {
        args.extend(["--private".into(), path(f)]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out) = fedistill(dir.path(), &args);
    assert!(ok, "demo failed:\n{out}");
    assert!(out.contains("audit verify: OK"), "{out}");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&report).expect("report")).expect("JSON");
    assert_eq!(r["participants"], 3, "{r}");
    assert_eq!(r["audit"]["verified"], true, "{r}");
    assert_eq!(r["per_round"].as_array().map(Vec::len), Some(2), "{r}");
    // A winter day's demand curve is easy to tell from a summer one's: far better than a coin.
    for k in ["student_accuracy", "int8_accuracy"] {
        let v = r["final"][k].as_f64().unwrap_or(0.0);
        assert!(v > 0.8, "{k} {v}: {r}");
    }
    assert!(
        r["baselines"]["local_only_accuracy"].as_f64().unwrap_or(0.0) > 0.8,
        "{r}"
    );
}
