//! End-to-end tests of an institution's own files through the real binary: `task infer` drafts a
//! card from a public CSV (and refuses to overwrite one), `data check` reads own files against it,
//! exits 0 for a usable file and non-zero, naming file:line:column, for a bad one, and shows its progress
//! per file as plain lines on stderr when stderr is not a terminal.

use std::path::Path;
use std::process::{Command, Output};

fn fedistill(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fedistill"))
        .args(args)
        .current_dir(dir)
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

const PUBLIC: &str = "age,city,score,outcome\n\
                      30,Oslo,1.5,sick\n\
                      ,Bergen,2.5,well\n\
                      50,Oslo,NA,sick\n\
                      40,Bergen,3.5,well\n";

#[test]
fn infer_then_check_good_and_bad_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    std::fs::write(d.join("public.csv"), PUBLIC).expect("write");
    let infer = [
        "task",
        "infer",
        "--public",
        "public.csv",
        "--label",
        "outcome",
        "--out",
        "task.toml",
    ];
    let out = fedistill(d, &infer);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("task `public`: 3 columns (4 inputs)"),
        "{}",
        text(&out)
    );
    let card = std::fs::read_to_string(d.join("task.toml")).expect("card written");
    assert!(card.contains("classes = [\"sick\", \"well\"]"), "{card}");

    // A second infer does not overwrite the card unless --force.
    std::fs::write(d.join("task.toml"), "# edited by the operator\n".to_string() + &card).expect("write");
    let again = fedistill(d, &infer);
    assert!(!again.status.success());
    assert!(
        text(&again).contains("task.toml exists; --force replaces it"),
        "{}",
        text(&again)
    );
    assert!(std::fs::read_to_string(d.join("task.toml"))
        .expect("card")
        .starts_with("# edited"));
    let forced = fedistill(d, &[&infer[..], &["--force"]].concat());
    assert!(forced.status.success(), "{}", text(&forced));

    // A good own file: other column order, `;`, the label under another name, an extra column.
    let good = "patient;outcome_local;score;city;age\np1;well;2.0;Oslo;41\np2;sick;;Bergen;35\np3;well;3;Oslo;NA\n";
    std::fs::write(d.join("ward_a.csv"), good).expect("write");
    let check = [
        "data",
        "check",
        "--task",
        "task.toml",
        "--delimiter",
        ";",
        "--column",
        "outcome=outcome_local",
        "ward_a.csv",
    ];
    let out = fedistill(d, &check);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("verdict     usable"), "{shown}");
    assert!(shown.contains("rows        3 read, 3 without problems"), "{shown}");
    assert!(shown.contains("classes     sick 1, well 2"), "{shown}");
    assert!(shown.contains("ignored     patient"), "{shown}");

    // A bad file next to the good one: the good one is still reported, the exit status fails,
    // and each problem names file:line:column.
    let bad =
        "patient;outcome_local;score;city;age\np1;well;2.0;Oslo;41\np2;sick;lots;Bergen;35\np3;maybe;3;Paris;NA\n";
    std::fs::write(d.join("ward_b.csv"), bad).expect("write");
    let out = fedistill(d, &[&check[..], &["ward_b.csv"]].concat());
    let shown = text(&out);
    assert!(!out.status.success(), "{shown}");
    assert!(shown.contains("ward_b.csv:3:score: `lots` is not a number"), "{shown}");
    assert!(
        shown.contains("ward_b.csv:4:city: `Paris` is not a level of `city` (Bergen|Oslo)"),
        "{shown}"
    );
    assert!(
        shown.contains("ward_b.csv:4:outcome_local: `maybe` is not a class of the task (sick|well)"),
        "{shown}"
    );
    assert!(shown.contains("1 of 2 files cannot be used"), "{shown}");
    assert_eq!(shown.matches("verdict     usable").count(), 1, "{shown}");
    // Off a terminal the progress is plain lines on stderr, per file with its rows; never on stdout.
    let err = String::from_utf8_lossy(&out.stderr);
    for line in [
        "data check: starting (2 steps)",
        "data check: 0/2 reading ward_a.csv",
        "data check: 1/2 ward_a.csv: 3 rows read, 3 without problems",
        "data check: 1/2 reading ward_b.csv",
        "data check: 2/2 ward_b.csv: 3 rows read, 1 without problems",
        "data check: done 1 of 2 files usable",
    ] {
        assert!(err.lines().any(|l| l == line), "no `{line}` on stderr:\n{err}");
    }
    assert!(!String::from_utf8_lossy(&out.stdout).contains("data check:"), "{shown}");

    // Missing columns are named all at once.
    let out = fedistill(d, &["data", "check", "--task", "task.toml", "ward_b.csv"]);
    let shown = text(&out);
    assert!(!out.status.success());
    assert!(
        shown.contains("ward_b.csv:1:header: missing columns of task `public`: `age`, `city`, `score`, `outcome`"),
        "{shown}"
    );
}

#[test]
fn check_refuses_a_contradictory_card() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    std::fs::write(d.join("public.csv"), PUBLIC).expect("write");
    let out = fedistill(
        d,
        &[
            "task",
            "infer",
            "--public",
            "public.csv",
            "--label",
            "outcome",
            "--out",
            "t.toml",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let card = std::fs::read_to_string(d.join("t.toml")).expect("card");
    std::fs::write(d.join("t.toml"), card.replace("rows = 4", "rows = 0")).expect("write");
    let out = fedistill(d, &["data", "check", "--task", "t.toml", "public.csv"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("t.toml: task card field `public.rows`"),
        "{}",
        text(&out)
    );
}

/// A sequence task from `.ts` files: `task infer` drafts the card from the public series file (no
/// `--label`: the labels follow each line's last `:`), `data check` passes the real UCR file and fails a
/// ragged one naming its line; `--label` with a `.ts` file and a CSV without `--label` are refused.
#[test]
fn series_files_infer_and_check() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    std::fs::copy(data.join("ItalyPowerDemand_TRAIN.ts"), d.join("public.ts")).expect("copy");
    std::fs::copy(data.join("ItalyPowerDemand_TEST.ts"), d.join("own.ts")).expect("copy");
    let out = fedistill(d, &["task", "infer", "--public", "public.ts", "--out", "t.toml"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("task `ItalyPowerDemand`: sequence 1x24 (24 inputs), classes 1|2, public set 67 rows"),
        "{}",
        text(&out)
    );
    let card = std::fs::read_to_string(d.join("t.toml")).expect("card");
    assert!(card.contains("[sequence]\nchannels = 1\nlength = 24\n"), "{card}");
    let out = fedistill(d, &["data", "check", "--task", "t.toml", "own.ts"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("1029"), "{}", text(&out));

    // Drop the last value of the third series: a ragged series, refused with its line.
    let own = std::fs::read_to_string(d.join("own.ts")).expect("read");
    let mut lines: Vec<String> = own.lines().map(str::to_string).collect();
    let at = lines.iter().position(|l| l == "@data").expect("@data") + 3;
    let (values, label) = lines[at].rsplit_once(':').expect("a label");
    let (shorter, _) = values.rsplit_once(',').expect("values");
    lines[at] = format!("{shorter}:{label}");
    std::fs::write(d.join("ragged.ts"), lines.join("\n")).expect("write");
    let out = fedistill(d, &["data", "check", "--task", "t.toml", "ragged.ts"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains(&format!(
            "ragged.ts: line {}: expected 24 values in dimension 0, the task card's series length, found 23 values \
             (a ragged series)",
            at + 1
        )),
        "{}",
        text(&out)
    );

    let out = fedistill(
        d,
        &[
            "task",
            "infer",
            "--public",
            "public.ts",
            "--label",
            "x",
            "--out",
            "u.toml",
        ],
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("--label names a CSV column"), "{}", text(&out));
    std::fs::write(d.join("public.csv"), PUBLIC).expect("write");
    let out = fedistill(d, &["task", "infer", "--public", "public.csv", "--out", "u.toml"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("--label COLUMN is required"), "{}", text(&out));
}

/// `task infer --modality`: the drafted card gets its `[[modalities]]` blocks (`rest` takes the features no
/// other block names), the steward's check reads a hospital file without the CSF assay as that block absent,
/// and bad blocks are refused naming the flag and the problem.
#[test]
fn infer_with_modality_blocks_and_check_a_file_without_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ad-hospitals");
    for f in ["public.csv", "hospital-c.csv"] {
        std::fs::copy(example.join(f), d.join(f)).expect("copy");
    }
    let infer = |out: &str, blocks: &[&str]| {
        let mut args = vec![
            "task",
            "infer",
            "--public",
            "public.csv",
            "--label",
            "Class",
            "--out",
            out,
        ];
        for b in blocks {
            args.extend(["--modality", b]);
        }
        fedistill(d, &args)
    };
    let out = infer("t.toml", &["clinical=age,male,Genotype", "csf=rest"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("130 columns in 2 modality blocks (137 inputs)"),
        "{}",
        text(&out)
    );
    let card = std::fs::read_to_string(d.join("t.toml")).expect("card");
    // The clinical block comes first now, and csf holds the other 127 columns.
    let first = card.find("[[features]]").expect("features");
    assert!(
        card[first..]
            .trim_start_matches("[[features]]")
            .trim_start()
            .starts_with("kind = \"numeric\"\nname = \"age\""),
        "{card}"
    );
    assert!(card.contains("name = \"csf\"") && card.contains("\"Ab_42\"]"), "{card}");
    let out = fedistill(d, &["data", "check", "--task", "t.toml", "hospital-c.csv"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("absent      modality csf"), "{}", text(&out));

    for (blocks, want) in [
        (
            vec!["clinical"],
            "--modality \"clinical\": expected NAME=COL,COL,... or NAME=rest",
        ),
        (vec!["a=rest", "b=rest"], "only one block can take the rest"),
        (vec!["a=age,height", "b=rest"], "`height` is not a feature of the card"),
        (vec!["a=rest"], "declare at least two"),
    ] {
        let out = infer("u.toml", &blocks);
        assert!(!out.status.success(), "{blocks:?}");
        assert!(text(&out).contains(want), "{blocks:?}: {}", text(&out));
    }
}
