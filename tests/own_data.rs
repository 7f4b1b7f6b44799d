//! Institutions joining with their own files (issue #15), with real processes: the operator drafts a task
//! card from a public file, the coordinator runs from `[task]` (no dataset, no partition), and three banks
//! each read their own CSV (lending-club rows split by the borrower's state) against the card: one as the
//! card lays it out (in Parquet), one with its columns reversed and `;` as delimiter, one with renamed headers mapped in
//! its config and missing values. Every bank fetches the public set over the mTLS QUIC connection and
//! verifies it against the card. Rounds complete, `audit verify` passes and names the card, and a node
//! holding another card is refused while the others go on.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use sha2::Digest as _;

use common::{audit_export_verify_show, fedistill, free_udp_port, provision, write_trust, Procs, StatusServer};

const WAIT: Duration = Duration::from_secs(300);
const BANKS: [&str; 3] = ["bank-a", "bank-b", "bank-c"];

/// The lending-club rows: header and records (the file has no quoted fields).
fn lending_club() -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("data/lending_club.csv"))
        .expect("data/lending_club.csv");
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().expect("header").split(',').map(str::to_string).collect();
    let rows = lines
        .filter(|l| !l.is_empty())
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect();
    (header, rows)
}

fn write_csv(path: &Path, header: &[String], rows: &[Vec<String>], delimiter: &str) {
    let mut out = header.join(delimiter);
    out.push('\n');
    for r in rows {
        out.push_str(&r.join(delimiter));
        out.push('\n');
    }
    std::fs::write(path, out).expect("write csv");
}

/// Writes the public file (every third row), the card drafted from it, and each bank's own file in its own
/// directory: bank-a holds states A..H, bank-b I..M, bank-c N..Z.
fn write_files(dir: &Path) {
    let (header, rows) = lending_club();
    let state = header.iter().position(|h| h == "addr_state").expect("addr_state");
    let public: Vec<Vec<String>> = rows.iter().step_by(3).cloned().collect();
    write_csv(&dir.join("public.csv"), &header, &public, ",");
    let (ok, out) = fedistill(
        dir,
        &[
            "task",
            "infer",
            "--public",
            "public.csv",
            "--label",
            "Class",
            "--out",
            "task.toml",
        ],
    );
    assert!(ok, "task infer: {out}");
    // The operator's review: a state the public file lacks becomes "other" rather than stopping a bank.
    let card = std::fs::read_to_string(dir.join("task.toml")).expect("card");
    let at = card.find("name = \"addr_state\"").expect("addr_state in the card");
    let rel = card[at..].find("unknown = \"refuse\"").expect("its unknown policy");
    let card = format!(
        "{}unknown = \"other\"{}",
        &card[..at + rel],
        &card[at + rel + "unknown = \"refuse\"".len()..]
    );
    std::fs::write(dir.join("task.toml"), card).expect("card");

    let private: Vec<&Vec<String>> = rows
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 != 0)
        .map(|(_, r)| r)
        .collect();
    let bank_of = |r: &Vec<String>| match r[state].as_bytes()[0] {
        b'A'..=b'H' => 0,
        b'I'..=b'M' => 1,
        _ => 2,
    };
    for (b, name) in BANKS.iter().enumerate() {
        let mine: Vec<Vec<String>> = private
            .iter()
            .filter(|r| bank_of(r) == b)
            .map(|r| (*r).clone())
            .collect();
        let bank_dir = dir.join("banks").join(name);
        std::fs::create_dir_all(&bank_dir).expect("bank dir");
        std::fs::copy(dir.join("task.toml"), bank_dir.join("task.toml")).expect("card copy");
        match b {
            0 => write_csv(&bank_dir.join("loans.csv"), &header, &mine, ","),
            1 => {
                // Columns in the opposite order, `;` between them.
                let rev = |v: &Vec<String>| v.iter().rev().cloned().collect::<Vec<_>>();
                let rows: Vec<Vec<String>> = mine.iter().map(rev).collect();
                write_csv(&bank_dir.join("loans.csv"), &rev(&header), &rows, ";");
            }
            _ => {
                // Its own names for two columns, and annual income missing on every fifth row.
                let inc = header.iter().position(|h| h == "annual_inc").expect("annual_inc");
                let renamed: Vec<String> = header
                    .iter()
                    .map(|h| match h.as_str() {
                        "Class" => "loan_outcome".to_string(),
                        "int_rate" => "rate_pct".to_string(),
                        other => other.to_string(),
                    })
                    .collect();
                let rows: Vec<Vec<String>> = mine
                    .iter()
                    .enumerate()
                    .map(|(i, r)| {
                        let mut r = r.clone();
                        if i % 5 == 0 {
                            r[inc] = String::new();
                        }
                        r
                    })
                    .collect();
                write_csv(&bank_dir.join("loans.csv"), &renamed, &rows, ",");
            }
        }
    }
}

/// Writes `rows` as Parquet: numeric columns as Float64 (empty cells null), the others as Utf8.
fn write_parquet(path: &Path, header: &[String], rows: &[Vec<String>]) {
    use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray};
    use std::sync::Arc;
    let columns: Vec<(String, ArrayRef)> = header
        .iter()
        .enumerate()
        .map(|(k, h)| {
            let cells: Vec<&str> = rows.iter().map(|r| r[k].as_str()).collect();
            let numeric = cells.iter().all(|c| c.is_empty() || c.parse::<f64>().is_ok());
            let array: ArrayRef = if numeric {
                Arc::new(Float64Array::from(
                    cells.iter().map(|c| c.parse::<f64>().ok()).collect::<Vec<_>>(),
                ))
            } else {
                Arc::new(StringArray::from(cells.iter().map(|c| Some(*c)).collect::<Vec<_>>()))
            };
            (h.clone(), array)
        })
        .collect();
    let batch = RecordBatch::try_from_iter(columns).expect("batch");
    let file = std::fs::File::create(path).expect("create parquet");
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).expect("writer");
    w.write(&batch).expect("write parquet");
    w.close().expect("close parquet");
}

fn bank_config(dir: &Path, name: &str, extra_private: &str, seed: u64) {
    bank_config_file(dir, name, "loans.csv", extra_private, seed);
}

fn bank_config_file(dir: &Path, name: &str, file: &str, extra_private: &str, seed: u64) {
    let text = format!(
        "kit = \"../../federation/kits/{name}\"\nworkdir = \"work\"\nencoding = \"f16\"\n\
         [task]\ncard = \"task.toml\"\n[private]\npath = \"{file}\"\nseed = {seed}\n{extra_private}\
         [teacher]\nkind = \"mlp\"\nhidden = [32]\n[student]\nkind = \"mlp\"\nhidden = [16]\n\
         [train]\nepochs = 3\nbatch_size = 64\npatience = 0\n[distill]\nepochs_per_round = 2\n"
    );
    std::fs::write(dir.join("banks").join(name).join("participant.toml"), text).expect("config");
}

fn coordinator_config(dir: &Path, port: u16, status: std::net::SocketAddr, participants: usize, collect_ms: u64) {
    std::fs::write(
        dir.join("coordinator.toml"),
        format!(
            "federation_dir = \"federation\"\nbind = \"127.0.0.1:{port}\"\nstore = \"coordinator.sqlite\"\n\
             status = \"{status}\"\nrounds = 2\nmin_participants = {participants}\nquorum = {participants}\n\
             collect_timeout_ms = {collect_ms}\nreport_timeout_ms = {collect_ms}\nsamples_per_round = 600\nrule = \"mean\"\n\
             temperature = 2.0\n[task]\ncard = \"task.toml\"\npublic = \"public.csv\"\n"
        ),
    )
    .expect("coordinator config");
}

/// Starts the coordinator and each named node (config `<group>/<name>/participant.toml`), and waits until
/// every node finished successfully and the coordinator exited.
fn run_to_the_end(procs: &mut Procs, group: &str, names: &[&str]) {
    procs.start_coordinator();
    for name in names {
        let cfg = format!("{group}/{name}/participant.toml");
        procs.spawn(name, &["participant", "--config", &cfg]);
    }
    let deadline = Instant::now() + WAIT;
    for name in names {
        let st = procs.wait_exit(name, deadline);
        assert!(st.success(), "{name} exited with {st}{}", procs.logs());
    }
    procs.wait_exit("coordinator", deadline);
}

fn sha256_hex(path: &Path) -> String {
    hex::encode(sha2::Sha256::digest(std::fs::read(path).expect("read")))
}

#[test]
fn three_banks_join_with_their_own_csv_files_and_the_public_set_fetched_over_quic() {
    let mut procs = Procs::new();
    let dir = procs.dir().to_path_buf();
    let port = free_udp_port();
    let federation = provision(&dir, "own-data", port, &BANKS);
    write_trust(&dir, &federation, &BANKS);
    write_files(&dir);
    // bank-a keeps its rows in Parquet.
    {
        let bank_a = dir.join("banks/bank-a");
        let text = std::fs::read_to_string(bank_a.join("loans.csv")).expect("bank-a csv");
        let mut lines = text.lines();
        let header: Vec<String> = lines.next().expect("header").split(',').map(str::to_string).collect();
        let rows: Vec<Vec<String>> = lines.map(|l| l.split(',').map(str::to_string).collect()).collect();
        write_parquet(&bank_a.join("loans.parquet"), &header, &rows);
        std::fs::remove_file(bank_a.join("loans.csv")).expect("only the Parquet file");
    }
    bank_config_file(&dir, "bank-a", "loans.parquet", "", 1);
    bank_config(&dir, "bank-b", "delimiter = \";\"\n", 2);
    bank_config(
        &dir,
        "bank-c",
        "columns = { Class = \"loan_outcome\", int_rate = \"rate_pct\" }\n",
        3,
    );
    // The data stewards' check, as each will run it before joining.
    for name in BANKS {
        let bank = dir.join("banks").join(name);
        let file = if name == "bank-a" { "loans.parquet" } else { "loans.csv" };
        let mut args = vec!["data", "check", "--task", "task.toml", file];
        if name == "bank-b" {
            args.extend(["--delimiter", ";"]);
        }
        if name == "bank-c" {
            args.extend(["--column", "Class=loan_outcome", "--column", "int_rate=rate_pct"]);
        }
        let (ok, out) = fedistill(&bank, &args);
        assert!(ok, "{name}: data check: {out}");
    }
    // bank-a was cut off after the first 1,000 bytes of an earlier download: it resumes from there.
    let work_a = dir.join("banks/bank-a/work");
    std::fs::create_dir_all(&work_a).expect("work dir");
    let public = std::fs::read(dir.join("public.csv")).expect("public");
    std::fs::write(work_a.join("public.csv.part"), &public[..1000]).expect("partial download");
    let server = StatusServer::on_free_port();
    coordinator_config(&dir, port, server.0, BANKS.len(), 60_000);
    run_to_the_end(&mut procs, "banks", &BANKS);

    let card_sha = {
        let card = std::fs::read_to_string(dir.join("task.toml")).expect("card");
        let line = card
            .lines()
            .find(|l| l.starts_with("sha256"))
            .expect("public sha256 in the card")
            .to_string();
        line.split('"').nth(1).expect("quoted").to_string()
    };
    assert_eq!(sha256_hex(&dir.join("public.csv")), card_sha);
    for name in BANKS {
        let work = dir.join("banks").join(name).join("work");
        // The public set came over QUIC, verified, into the bank's own work directory.
        assert_eq!(sha256_hex(&work.join("public.csv")), card_sha, "{name}");
        assert!(!work.join("public.csv.part").exists(), "{name}");
        let result: serde_json::Value =
            serde_json::from_slice(&std::fs::read(work.join("result.json")).expect("result.json")).expect("json");
        assert_eq!(result["rounds"].as_array().map(Vec::len), Some(2), "{name}: {result}");
        let acc = result["student_accuracy"].as_f64().expect("accuracy");
        assert!(acc > 0.5, "{name}: student accuracy {acc}");
        let log = procs.log(name);
        assert!(
            log.contains("the coordinator's task card is this node's"),
            "{name}: {log}"
        );
        assert!(log.contains("public set fetched and verified"), "{name}: {log}");
        // Off a terminal the transfer's progress is plain lines in the node's log, the last at 100%.
        let size = public.len();
        assert!(
            log.contains(&format!("public set: starting ({size} bytes)"))
                && log.contains(&format!("public set: {size}/{size} bytes (100%)"))
                && log.contains("public set: done sha256 matches the task card"),
            "{name}: {log}"
        );
    }
    assert!(
        procs.log("bank-a").contains("public set: 1000/"),
        "{}",
        procs.log("bank-a")
    );
    assert!(
        procs.log("bank-a").contains("resuming the public set download"),
        "{}",
        procs.log("bank-a")
    );
    assert!(
        procs.log("bank-c").contains("private rows read against the task card"),
        "{}",
        procs.log("bank-c")
    );

    let show = audit_export_verify_show(&dir);
    assert!(show.contains("TASK \"public\""), "{show}");
    let (ok, out) = fedistill(&dir, &["audit", "verify", "bundle", "--trust", "trust.toml"]);
    assert!(ok, "{out}");
    let card = fedistill_shared::data::TaskCard::load(&dir.join("task.toml")).expect("card");
    assert!(
        out.contains(&format!("task \"public\": card {}", card.digest_hex())),
        "{out}"
    );
}

#[test]
fn a_node_holding_another_card_is_refused_and_the_others_go_on() {
    let mut procs = Procs::new();
    let dir = procs.dir().to_path_buf();
    let port = free_udp_port();
    let names = ["bank-a", "bank-b", "bank-c"];
    provision(&dir, "own-data-mismatch", port, &names);
    write_files(&dir);
    bank_config(&dir, "bank-a", "", 1);
    bank_config(&dir, "bank-b", "delimiter = \";\"\n", 2);
    bank_config(
        &dir,
        "bank-c",
        "columns = { Class = \"loan_outcome\", int_rate = \"rate_pct\" }\n",
        3,
    );
    // bank-c's card differs in one statistic: another task, as far as the federation is concerned.
    let card_c = dir.join("banks/bank-c/task.toml");
    let text = std::fs::read_to_string(&card_c).expect("card");
    let changed = text.replacen("std = ", "std = 1", 1);
    assert_ne!(changed, text);
    std::fs::write(&card_c, changed).expect("card");
    let server = StatusServer::on_free_port();
    coordinator_config(&dir, port, server.0, 2, 15_000);
    procs.start_coordinator();
    for name in names {
        let cfg = format!("banks/{name}/participant.toml");
        procs.spawn(name, &["participant", "--config", &cfg]);
    }
    let deadline = Instant::now() + WAIT;
    let st = procs.wait_exit("bank-c", deadline);
    assert!(!st.success());
    let log = procs.log("bank-c");
    assert!(log.contains("is not this node's card"), "{log}");
    assert!(
        !dir.join("banks/bank-c/work/public.csv").exists(),
        "no public set for a refused node"
    );
    for name in ["bank-a", "bank-b"] {
        let st = procs.wait_exit(name, deadline);
        assert!(st.success(), "{name} exited with {st}{}", procs.logs());
    }
}

#[test]
fn the_demo_runs_a_federation_on_own_files_and_refuses_a_bad_one_by_position() {
    let procs = Procs::new();
    let dir = procs.dir().to_path_buf();
    write_files(&dir);
    // Three plain files: bank-a's as it is, and the others re-read through the card's layout.
    let (header, rows) = lending_club();
    let state = header.iter().position(|h| h == "addr_state").expect("addr_state");
    for (k, (lo, hi)) in [(b'A', b'H'), (b'I', b'M'), (b'N', b'Z')].into_iter().enumerate() {
        let mine: Vec<Vec<String>> = rows
            .iter()
            .enumerate()
            .filter(|(i, r)| i % 3 != 0 && (lo..=hi).contains(&r[state].as_bytes()[0]))
            .map(|(_, r)| r.clone())
            .collect();
        write_csv(&dir.join(format!("bank{k}.csv")), &header, &mine, ",");
    }
    let args = [
        "demo",
        "--task",
        "task.toml",
        "--public",
        "public.csv",
        "--private",
        "bank0.csv",
        "--private",
        "bank1.csv",
        "--private",
        "bank2.csv",
        "--rounds",
        "2",
        "--report",
        "report.json",
    ];
    let (ok, out) = fedistill(&dir, &args);
    assert!(ok, "{out}");
    assert!(out.contains("3 participants on their own files"), "{out}");
    assert!(out.contains("audit verify: OK"), "{out}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("report.json")).expect("report")).expect("json");
    assert_eq!(report["participants"], 3, "{report}");
    assert_eq!(report["dataset"], "task public", "{report}");
    assert_eq!(report["per_round"].as_array().map(Vec::len), Some(2), "{report}");
    // The bytes the participants counted are the bytes the coordinator counted, both ways; each round
    // says where its time went and when it ended.
    for row in report["per_round"].as_array().expect("rounds") {
        assert!(row["bytes_up"].as_u64().unwrap_or(0) > 0, "{row}");
        assert_eq!(row["bytes_up"], row["coordinator_bytes_up"], "{row}");
        assert_eq!(row["bytes_down"], row["coordinator_bytes_down"], "{row}");
        for phase in [
            "label",
            "upload_wait",
            "distill",
            "evaluate",
            "quantize",
            "export",
            "guard",
        ] {
            assert!(row["participant_phases"][phase].as_f64().is_some(), "{phase}: {row}");
        }
        for phase in ["collect", "assemble", "commit", "send"] {
            assert!(row["coordinator_phases"][phase].as_f64().is_some(), "{phase}: {row}");
        }
        assert!(row["elapsed_s"].as_f64().unwrap_or(0.0) > 0.0, "{row}");
    }
    assert!(
        report["audit"]["output"]
            .as_str()
            .unwrap_or_default()
            .contains("task \"public\""),
        "{report}"
    );
    // A ragged row in one file stops the demo before anything starts, naming file, line and column.
    let bad = std::fs::read_to_string(dir.join("bank1.csv")).expect("bank1");
    let mut lines: Vec<&str> = bad.lines().collect();
    lines[3] = "1,2,3";
    std::fs::write(dir.join("bank1.csv"), lines.join("\n") + "\n").expect("write");
    std::fs::remove_file(dir.join("report.json")).expect("remove report");
    let (ok, out) = fedistill(&dir, &args);
    assert!(!ok, "{out}");
    assert!(out.contains("bank1.csv:4:"), "{out}");
    assert!(!out.contains("provisioned federation"), "{out}");
    assert!(!dir.join("report.json").exists());
}

/// `path` with `.` and `..` resolved lexically (relative paths taken from `cwd`).
fn normalize(cwd: &Path, path: &str) -> std::path::PathBuf {
    let mut out = std::path::PathBuf::new();
    let full = if path.starts_with('/') {
        Path::new(path).to_path_buf()
    } else {
        cwd.join(path)
    };
    for c in full.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[test]
fn a_participant_opens_no_file_outside_its_own_directory() {
    let mut procs = Procs::new();
    let dir = std::fs::canonicalize(procs.dir()).expect("dir");
    let port = free_udp_port();
    provision(&dir, "own-data-isolation", port, &["bank-a", "bank-b"]);
    write_files(&dir);
    // bank-a keeps everything in its directory: kit, card, config, private file, work directory.
    let bank_a = dir.join("banks/bank-a");
    let kit_src = dir.join("federation/kits/bank-a");
    std::fs::create_dir_all(bank_a.join("kit")).expect("kit dir");
    for e in std::fs::read_dir(&kit_src).expect("kit") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), bank_a.join("kit").join(e.file_name())).expect("copy kit");
    }
    bank_config(&dir, "bank-a", "", 1);
    let cfg = bank_a.join("participant.toml");
    let text = std::fs::read_to_string(&cfg)
        .expect("config")
        .replace("../../federation/kits/bank-a", "kit");
    std::fs::write(&cfg, text).expect("config");
    bank_config(&dir, "bank-b", "delimiter = \";\"\n", 2);
    let server = StatusServer::on_free_port();
    coordinator_config(&dir, port, server.0, 2, 60_000);
    procs.start_coordinator();
    procs.spawn("bank-b", &["participant", "--config", "banks/bank-b/participant.toml"]);
    let trace = dir.join("trace.txt");
    let log = std::fs::File::create(dir.join("logs/bank-a.log")).expect("log");
    let mut traced = std::process::Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-e",
            "trace=open,openat,openat2,creat,truncate,rename,renameat,renameat2,mkdir,mkdirat,unlink,unlinkat",
            "-o",
        ])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_fedistill"))
        .args(["participant", "--config", "banks/bank-a/participant.toml"])
        .current_dir(&dir)
        .env("RUST_LOG", "info")
        // cargo's library path makes the loader probe the build tree; a deployed node has none.
        .env_remove("LD_LIBRARY_PATH")
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("strace (apt install strace) runs the participant");
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(st) = traced.try_wait().expect("wait") {
            break st;
        }
        assert!(Instant::now() < deadline, "bank-a did not finish{}", procs.logs());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "bank-a exited with {status}{}", procs.logs());
    assert!(procs.wait_exit("bank-b", deadline).success(), "{}", procs.logs());
    assert!(bank_a.join("work/result.json").exists());

    let exe = std::fs::canonicalize(env!("CARGO_BIN_EXE_fedistill")).expect("exe");
    let system = ["/proc/", "/sys/", "/dev/", "/etc/", "/lib/", "/lib64/", "/usr/"];
    let text = std::fs::read_to_string(&trace).expect("trace");
    let mut opened = 0;
    let mut outside = Vec::new();
    for line in text.lines() {
        // `PID call(..., "PATH", ...) = result`: every quoted argument is a path for these calls.
        for (k, part) in line.split('"').enumerate() {
            if k % 2 == 0 || part.is_empty() {
                continue;
            }
            let p = normalize(&dir, part);
            opened += 1;
            let ok = p.starts_with(&bank_a) || p == exe || system.iter().any(|s| p.starts_with(s)) || p == dir;
            if !ok {
                outside.push(line.to_string());
            }
        }
    }
    assert!(opened > 20, "the trace saw too little: {text}");
    assert!(
        outside.is_empty(),
        "bank-a touched files outside its directory:\n{}",
        outside.join("\n")
    );
    // And it did read its own files.
    assert!(
        text.contains("loans.csv") && text.contains("task.toml") && text.contains("public.csv"),
        "{text}"
    );
}

#[test]
fn a_hospital_joins_with_an_image_folder_and_the_public_set_is_an_unlabelled_idx_file() {
    let mut procs = Procs::new();
    let dir = procs.dir().to_path_buf();
    let port = free_udp_port();
    let names = ["clinic-a", "clinic-b"];
    let federation = provision(&dir, "own-images", port, &names);
    write_trust(&dir, &federation, &names);
    // The embedded digits (8x8 grey, 10 classes): 600 public images as one IDX file, the rest dealt to two
    // clinics as PNG files in one folder per class.
    let ds = fedistill_shared::data::load("digits", &Default::default()).expect("digits");
    let pixel = |v: f32| (v * 255.0).round().clamp(0.0, 255.0) as u8;
    let public: Vec<u8> = ds.features[..600 * 64].iter().map(|&v| pixel(v)).collect();
    let idx = fedistill_shared::data::idx::write_idx(&[600, 8, 8], &public);
    std::fs::write(dir.join("public-images.idx3-ubyte"), &idx).expect("public idx");
    let classes: Vec<String> = (0..10).map(|c| format!("\"{c}\"")).collect();
    // The card augments the public rows of each round (shifts of one pixel, the same view on every node).
    let card = format!(
        "name = \"digits\"\nversion = 1\n[label]\nclasses = [{}]\n[image]\nheight = 8\nwidth = 8\nchannels = 1\n\
         [public]\nsha256 = \"{}\"\nrows = 600\nformat = \"idx\"\n[augment]\nshift = 1\n",
        classes.join(", "),
        sha256_hex(&dir.join("public-images.idx3-ubyte"))
    );
    std::fs::write(dir.join("task.toml"), &card).expect("card");
    for (k, name) in names.iter().enumerate() {
        let clinic = dir.join("clinics").join(name);
        // clinic-b has a third of its images without labels: an IDX file beside its folder.
        let mut unlabelled = Vec::new();
        for i in (600 + k..ds.n).step_by(2) {
            if k == 1 && i % 3 == 0 {
                unlabelled.extend(ds.row(i).iter().map(|&v| pixel(v)));
                continue;
            }
            let class_dir = clinic.join("images").join(ds.labels[i].to_string());
            std::fs::create_dir_all(&class_dir).expect("class dir");
            let px: Vec<u8> = ds.row(i).iter().map(|&v| pixel(v)).collect();
            image::GrayImage::from_raw(8, 8, px)
                .expect("8x8")
                .save(class_dir.join(format!("{i:05}.png")))
                .expect("png");
        }
        std::fs::write(clinic.join("task.toml"), &card).expect("card copy");
        let (unlabelled_conf, pseudo) = if unlabelled.is_empty() {
            (String::new(), "")
        } else {
            let rows = unlabelled.len() / 64;
            let idx = fedistill_shared::data::idx::write_idx(&[rows, 8, 8], &unlabelled);
            std::fs::write(clinic.join("unlabelled.idx3-ubyte"), idx).expect("unlabelled idx");
            (
                "unlabeled = \"unlabelled.idx3-ubyte\"\n".to_string(),
                "pseudo_threshold = 0.5\n",
            )
        };
        // A CNN teacher at clinic-a, an MLP one at clinic-b; the shared student is a CNN, quantized to INT8
        // and exported every round. clinic-b pseudo-labels its unlabelled images for the teacher refresh.
        let teacher = if k == 0 {
            "[teacher]\nkind = \"cnn\"\nchannels = [8]\nhidden = 32\n"
        } else {
            "[teacher]\nkind = \"mlp\"\nhidden = [32]\n"
        };
        std::fs::write(
            clinic.join("participant.toml"),
            format!(
                "kit = \"../../federation/kits/{name}\"\nworkdir = \"work\"\nencoding = \"f16\"\n\
                 [task]\ncard = \"task.toml\"\n[private]\npath = \"images\"\nseed = {k}\n{unlabelled_conf}\
                 {teacher}[student]\nkind = \"cnn\"\nchannels = [4]\nhidden = 16\n\
                 [train]\nepochs = 40\nbatch_size = 32\npatience = 0\n[distill]\nepochs_per_round = 10\n\
                 [refresh]\nepochs = 1\n{pseudo}"
            ),
        )
        .expect("config");
        let (ok, out) = fedistill(&clinic, &["data", "check", "--task", "task.toml", "images"]);
        assert!(ok, "{name}: data check: {out}");
    }
    let server = StatusServer::on_free_port();
    std::fs::write(
        dir.join("coordinator.toml"),
        format!(
            "federation_dir = \"federation\"\nbind = \"127.0.0.1:{port}\"\nstore = \"coordinator.sqlite\"\n\
             status = \"{}\"\nrounds = 4\nmin_participants = 2\nquorum = 2\ncollect_timeout_ms = 60000\n\
             report_timeout_ms = 60000\nsamples_per_round = 300\nrule = \"mean\"\ntemperature = 2.0\n\
             [task]\ncard = \"task.toml\"\npublic = \"public-images.idx3-ubyte\"\n",
            server.0
        ),
    )
    .expect("coordinator config");
    run_to_the_end(&mut procs, "clinics", &names);
    for name in names {
        let work = dir.join("clinics").join(name).join("work");
        assert_eq!(
            sha256_hex(&work.join("public.idx3-ubyte")),
            sha256_hex(&dir.join("public-images.idx3-ubyte")),
            "{name}: the fetched public set"
        );
        let result: serde_json::Value =
            serde_json::from_slice(&std::fs::read(work.join("result.json")).expect("result.json")).expect("json");
        let rounds = result["rounds"].as_array().expect("rounds");
        assert_eq!(rounds.len(), 4, "{name}: {result}");
        // The served student is the CNN, exported as a self-describing INT8 GGUF.
        let gguf = std::fs::read(work.join("student-int8.gguf")).expect("int8 student");
        assert!(
            gguf.windows(13).any(|w| w == b"fedistill-cnn"),
            "{name}: the GGUF does not declare a CNN"
        );
        // The public images carry no labels: the consensus cannot be scored, and says so.
        assert!(
            rounds.iter().all(|r| r["consensus_accuracy"].is_null()),
            "{name}: {result}"
        );
        // The images were read right: the teacher learns them; the student (two short rounds on 600 public
        // images) is well above chance (10 classes).
        let teacher = result["local_only_accuracy"].as_f64().expect("teacher accuracy");
        let student = result["student_accuracy"].as_f64().expect("accuracy");
        assert!(
            teacher > 0.8 && student > 0.3,
            "{name}: teacher {teacher}, student {student}"
        );
    }
    // From round 2 on clinic-b's refreshes (rounds 2 and 3; none after the last) add the unlabelled images
    // its student is confident about: none while the student is untrained, some once it has learned.
    let log = procs.log("clinic-b");
    let kept: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("unlabelled rows pseudo-labelled for the teacher refresh"))
        .map(|l| {
            // The figure after `kept=`, colour codes (ESC [ ... m) removed first.
            let mut plain = String::new();
            let mut chars = l.chars();
            while let Some(c) = chars.next() {
                if c == '\u{1b}' {
                    chars.by_ref().find(|&c| c == 'm');
                } else {
                    plain.push(c);
                }
            }
            let after = &plain[plain.find("kept=").expect("kept field") + 5..];
            let digits: String = after
                .chars()
                .skip_while(|c| !c.is_ascii_digit())
                .take_while(|c| c.is_ascii_digit())
                .collect();
            digits.parse().expect("a count")
        })
        .collect();
    let unlabelled_rows = (600 + 1..ds.n).step_by(2).filter(|i| i % 3 == 0).count() as u64;
    assert_eq!(kept.len(), 2, "{kept:?}\n{log}");
    assert!(
        kept.iter().any(|&k| k > 0) && kept.iter().all(|&k| k <= unlabelled_rows),
        "{kept:?} of {unlabelled_rows}\n{log}"
    );
    assert!(!procs.log("clinic-a").contains("pseudo-labelled"));
    let show = audit_export_verify_show(&dir);
    assert!(show.contains("TASK \"digits\""), "{show}");
}

#[test]
fn an_insider_asking_for_the_task_and_the_public_set_gets_bounded_signed_answers_only() {
    use fedistill_shared::crypto::Signer;
    use fedistill_shared::wire::messages::{Reply, ToCoordinator, MAX_PUBLIC_CHUNK};
    let mut procs = Procs::new();
    let dir = procs.dir().to_path_buf();
    let port = free_udp_port();
    provision(&dir, "own-data-insider", port, &["mallory", "bank-b"]);
    // A public set over 1 MiB (the lending rows four times), so one reply cannot carry it all.
    let (header, rows) = lending_club();
    let many: Vec<Vec<String>> = (0..4).flat_map(|_| rows.iter().cloned()).collect();
    write_csv(&dir.join("public.csv"), &header, &many, ",");
    let total = std::fs::metadata(dir.join("public.csv")).expect("public").len();
    assert!(total > u64::from(MAX_PUBLIC_CHUNK), "{total}");
    let (ok, out) = fedistill(
        &dir,
        &[
            "task",
            "infer",
            "--public",
            "public.csv",
            "--label",
            "Class",
            "--out",
            "task.toml",
        ],
    );
    assert!(ok, "{out}");
    let server = StatusServer::on_free_port();
    coordinator_config(&dir, port, server.0, 2, 60_000);
    procs.start_coordinator();
    let card = fedistill_shared::data::TaskCard::load(&dir.join("task.toml")).expect("card");
    // Listening once /status answers (the QUIC endpoint is bound before the status server starts).
    let deadline = Instant::now() + WAIT;
    while server.status().is_none() {
        assert!(
            Instant::now() < deadline,
            "the coordinator never listened{}",
            procs.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let client = common::Client::connect(&dir.join("federation/kits/mallory")).await;
        // The card comes signed by the coordinator, under the kit's key, and is the operator's card.
        let Reply::Task(signed) = client.request(&ToCoordinator::GetTask).await else {
            panic!("expected the task");
        };
        assert_eq!(signed.signer, Signer::Coordinator);
        let ann = signed
            .verify_offline(&client.kit.coordinator_key, client.kit.federation())
            .expect("coordinator signature")
            .into_inner();
        assert_eq!(ann.card_digest.0, card.digest());
        assert_eq!(ann.public_bytes, total);
        // Lies in the fields it controls: sizes and offsets.
        let get = |offset: u64, max_len: u32| ToCoordinator::GetPublic { offset, max_len };
        let chunk = |r: Reply| match r {
            Reply::PublicChunk { total, offset, bytes } => (total, offset, bytes.len() as u64),
            other => panic!("expected a chunk, got {other:?}"),
        };
        assert_eq!(
            chunk(client.request(&get(0, u32::MAX)).await),
            (total, 0, u64::from(MAX_PUBLIC_CHUNK))
        );
        assert_eq!(chunk(client.request(&get(5, 10)).await), (total, 5, 10));
        assert_eq!(
            chunk(client.request(&get(total - 3, u32::MAX)).await),
            (total, total - 3, 3)
        );
        assert_eq!(chunk(client.request(&get(total, 100)).await), (total, total, 0));
        for offset in [total + 1, u64::MAX] {
            let r = client.request(&get(offset, 100)).await;
            assert_eq!(
                common::reject_code(&r),
                fedistill_shared::wire::messages::RejectCode::BadRange,
                "{r:?}"
            );
        }
        // The bytes served are the file's.
        let Reply::PublicChunk { bytes, .. } = client.request(&get(100, 50)).await else {
            panic!("chunk");
        };
        let file = std::fs::read(dir.join("public.csv")).expect("public");
        assert_eq!(bytes, file[100..150]);
        // And the coordinator goes on serving: a hello is still welcomed.
        client.hello().await;
    });
}

/// The operator's public file is not the one the card names (here one row was added after the card was
/// drafted): the coordinator refuses to start, naming the file and both digests, and serves nothing.
#[test]
fn the_coordinator_refuses_to_start_on_a_public_file_whose_sha256_is_not_the_cards() {
    let mut procs = Procs::new();
    let dir = procs.dir().to_path_buf();
    let port = free_udp_port();
    provision(&dir, "own-data-bad-public", port, &["bank-a"]);
    write_files(&dir);
    let card_sha = sha256_hex(&dir.join("public.csv"));
    let mut text = std::fs::read_to_string(dir.join("public.csv")).expect("public");
    let last = text.lines().last().expect("a row").to_string();
    text.push_str(&last);
    text.push('\n');
    std::fs::write(dir.join("public.csv"), text).expect("public");
    let server = StatusServer::on_free_port();
    coordinator_config(&dir, port, server.0, 1, 1_000);
    procs.start_coordinator();
    let st = procs.wait_exit("coordinator", Instant::now() + WAIT);
    assert!(!st.success());
    let log = procs.log("coordinator");
    assert!(
        log.contains(&format!(
            "public.csv: sha256 {} differs from the task card's public sha256 {card_sha}",
            sha256_hex(&dir.join("public.csv"))
        )) && log.contains("the card names another public file"),
        "{log}"
    );
    assert!(server.status().is_none(), "nothing is served");
}

/// `[private] unlabeled` is read against the card (a tabular task: a CSV like the private file, label
/// ignored; an image task: an IDX image file of the card's shape) and a file that does not fit is refused
/// naming the key; nothing else of the node's data is affected by its absence.
#[test]
fn unlabelled_rows_are_refused_where_they_cannot_be_read() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_files(dir.path());
    let bank = dir.path().join("banks").join(BANKS[0]);
    let card = fedistill_shared::data::TaskCard::load(&bank.join("task.toml")).expect("card");
    std::fs::write(bank.join("more.csv"), "a,b\n1,2\n").expect("file");
    let own = |unlabeled: Option<&str>| fedistill_participant::config::OwnData {
        card: bank.join("task.toml"),
        private: bank.join("loans.csv"),
        format: None,
        csv: fedistill_shared::data::CsvOptions::default(),
        holdout: 0.2,
        validation: fedistill_participant::config::DEFAULT_VALIDATION,
        seed: 1,
        public: Some(dir.path().join("public.csv")),
        max_public_bytes: u64::MAX,
        public_labels: None,
        benchmark: None,
        unlabeled: unlabeled.map(|u| bank.join(u)),
    };
    let public = dir.path().join("public.csv");
    let loaded = fedistill_participant::owndata::load(&own(None), &card, &public).expect("the bank's files");
    assert!(loaded.unlabeled.is_none() && loaded.private.n > 0);
    // A tabular task reads unlabelled rows from a CSV like its private file (here the bank's own file: its
    // label column is ignored); one without the card's columns is refused naming the key.
    let with = fedistill_participant::owndata::load(&own(Some("loans.csv")), &card, &public).expect("unlabelled CSV");
    let rows = with.unlabeled.expect("unlabelled rows");
    assert_eq!(
        rows.n,
        with.private.n + with.validation.map_or(0, |v| v.n) + with.test.n
    );
    assert!(rows.labels.iter().all(|&l| l == 0));
    let err = format!(
        "{:#}",
        fedistill_participant::owndata::load(&own(Some("more.csv")), &card, &public)
            .err()
            .expect("a CSV without the card's columns refused")
    );
    assert!(
        err.contains("[private] unlabeled") && err.contains("missing columns"),
        "{err}"
    );

    // An image card: a CSV (not IDX) and an IDX of another image size are refused naming the key.
    let images = dir.path().join("img");
    std::fs::create_dir_all(&images).expect("dir");
    let pixels = vec![0u8; 5 * 64];
    std::fs::write(
        images.join("public.idx3-ubyte"),
        fedistill_shared::data::idx::write_idx(&[5, 8, 8], &pixels),
    )
    .expect("public");
    let sha = hex::encode(
        fedistill_shared::data::sha256_file(&images.join("public.idx3-ubyte"))
            .expect("sha")
            .0,
    );
    let text = format!(
        "name = \"digits\"\nversion = 1\n[label]\nclasses = [\"0\", \"1\"]\n[image]\nheight = 8\nwidth = 8\nchannels = 1\n\
         [public]\nsha256 = \"{sha}\"\nrows = 5\nformat = \"idx\"\n"
    );
    let card = fedistill_shared::data::TaskCard::from_toml_str(&text, "card").expect("image card");
    std::fs::write(images.join("task.toml"), &text).expect("card file");
    let labels = vec![0u8, 1, 0, 1, 0, 1, 0, 1, 0, 1];
    std::fs::write(
        images.join("own.idx3-ubyte"),
        fedistill_shared::data::idx::write_idx(&[10, 8, 8], &[9u8; 640]),
    )
    .expect("own");
    std::fs::write(
        fedistill_shared::data::idx_labels_path(&images.join("own.idx3-ubyte")),
        fedistill_shared::data::idx::write_idx(&[10], &labels),
    )
    .expect("labels");
    std::fs::write(
        images.join("wide.idx3-ubyte"),
        fedistill_shared::data::idx::write_idx(&[2, 8, 9], &[0u8; 144]),
    )
    .expect("wide");
    for (file, want) in [
        ("more.csv", "[private] unlabeled"),
        ("wide.idx3-ubyte", "[private] unlabeled"),
    ] {
        std::fs::copy(bank.join("more.csv"), images.join("more.csv")).expect("copy");
        let own = fedistill_participant::config::OwnData {
            card: images.join("task.toml"),
            private: images.join("own.idx3-ubyte"),
            format: None,
            csv: fedistill_shared::data::CsvOptions::default(),
            holdout: 0.2,
            validation: fedistill_participant::config::DEFAULT_VALIDATION,
            seed: 1,
            public: Some(images.join("public.idx3-ubyte")),
            max_public_bytes: u64::MAX,
            public_labels: None,
            benchmark: None,
            unlabeled: Some(images.join(file)),
        };
        let err = fedistill_participant::owndata::load(&own, &card, &images.join("public.idx3-ubyte"))
            .err()
            .unwrap_or_else(|| panic!("{file} accepted as unlabelled rows"));
        let text = format!("{err:#}");
        assert!(text.contains(want) && text.contains(file), "{file}: {text}");
    }
}

/// A series task reads `[private] unlabeled` from a `.ts` file (its labels, if any, ignored) against the card;
/// a ragged one is refused naming the key and the line; a task that cuts windows from long series (labelled by
/// what follows each window) refuses unlabelled rows.
#[test]
fn unlabelled_series_are_read_for_series_tasks_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let series = |rows: &[(&[f32], &str)], labelled: bool| {
        let mut text = format!(
            "@problemName t\n@classLabel {}\n@data\n",
            if labelled { "true a b" } else { "false" }
        );
        for (values, label) in rows {
            let v: Vec<String> = values.iter().map(|x| x.to_string()).collect();
            text.push_str(&v.join(","));
            if labelled {
                text.push(':');
                text.push_str(label);
            }
            text.push('\n');
        }
        text
    };
    let own_rows: Vec<(&[f32], &str)> = (0..10)
        .map(|i| {
            (
                if i % 2 == 0 {
                    &[0.0f32, 1.0, 2.0][..]
                } else {
                    &[2.0f32, 1.0, 0.0][..]
                },
                if i % 2 == 0 { "a" } else { "b" },
            )
        })
        .collect();
    std::fs::write(d.join("own.ts"), series(&own_rows, true)).expect("own");
    std::fs::write(d.join("public.ts"), series(&own_rows[..4], false)).expect("public");
    std::fs::write(d.join("more.ts"), series(&own_rows[..3], false)).expect("more");
    std::fs::write(d.join("ragged.ts"), "@classLabel false\n@data\n1,2,3\n1,2\n").expect("ragged");
    let sha = hex::encode(
        fedistill_shared::data::sha256_file(&d.join("public.ts"))
            .expect("sha")
            .0,
    );
    let text = format!(
        "name = \"t\"\nversion = 1\n[label]\nclasses = [\"a\", \"b\"]\n[sequence]\nchannels = 1\nlength = 3\n\
         [public]\nsha256 = \"{sha}\"\nrows = 4\nformat = \"ts\"\n"
    );
    std::fs::write(d.join("task.toml"), &text).expect("card");
    let card = fedistill_shared::data::TaskCard::from_toml_str(&text, "card").expect("a series card");
    let own = |unlabeled: &str| fedistill_participant::config::OwnData {
        card: d.join("task.toml"),
        private: d.join("own.ts"),
        format: None,
        csv: fedistill_shared::data::CsvOptions::default(),
        holdout: 0.2,
        validation: fedistill_participant::config::DEFAULT_VALIDATION,
        seed: 1,
        public: Some(d.join("public.ts")),
        max_public_bytes: u64::MAX,
        public_labels: None,
        benchmark: None,
        unlabeled: Some(d.join(unlabeled)),
    };
    let loaded = fedistill_participant::owndata::load(&own("more.ts"), &card, &d.join("public.ts")).expect("reads");
    let rows = loaded.unlabeled.expect("unlabelled rows");
    assert_eq!((rows.n, rows.dim), (3, 3));
    assert_eq!(rows.row(1), &[2.0, 1.0, 0.0]);
    assert_eq!(
        loaded.private.n + loaded.validation.as_ref().map_or(0, |v| v.n) + loaded.test.n,
        10
    );
    let err = format!(
        "{:#}",
        fedistill_participant::owndata::load(&own("ragged.ts"), &card, &d.join("public.ts"))
            .err()
            .expect("ragged refused")
    );
    assert!(err.contains("[private] unlabeled") && err.contains("line 4"), "{err}");

    // The windows card of the bank example: its windows are labelled by what follows them.
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/sp500-banks");
    let card = fedistill_shared::data::TaskCard::load(&example.join("task.toml")).expect("example card");
    let own = fedistill_participant::config::OwnData {
        card: example.join("task.toml"),
        private: example.join("bank-a.csv"),
        format: None,
        csv: fedistill_shared::data::CsvOptions::default(),
        holdout: 0.2,
        validation: fedistill_participant::config::DEFAULT_VALIDATION,
        seed: 1,
        public: Some(example.join("public.csv")),
        max_public_bytes: u64::MAX,
        public_labels: None,
        benchmark: None,
        unlabeled: Some(example.join("bank-b.csv")),
    };
    let err = format!(
        "{:#}",
        fedistill_participant::owndata::load(&own, &card, &example.join("public.csv"))
            .err()
            .expect("refused")
    );
    assert!(
        err.contains("[private] unlabeled") && err.contains("cut from long series"),
        "{err}"
    );
}
