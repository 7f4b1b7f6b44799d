//! End-to-end test of `fedistill audit export|verify|show|report` on a real store: a round's records are
//! appended to the coordinator's SQLite store, two participant witnesses cosign through their real
//! witness state, the binary exports, verifies (recomputing the aggregate) and shows the bundle,
//! and a tampered bundle fails with the offending item named; the HTML report opens in headless Chromium.

mod chromium;

use fedistill_coordinator::store::Store;
use fedistill_participant::witness::Witness;
use fedistill_shared::audit::{AggregateInput, ProtocolRecompute, Recompute, SOFT_LABELS_DOMAIN};
use fedistill_shared::crypto::{signing_bytes, FederationId, SigningIdentity};
use fedistill_shared::ledger::{Digest, EncodingName, ParticipantId, Record, RosterAction, RoundId, RuleName};
use fedistill_shared::protocol::{softlabels, Encoding};
use fedistill_shared::wire::messages::SoftLabels;
use std::path::Path;
use std::process::{Command, Output};

const ORIGIN: &str = "fedistill.test/fed-1";
const FED: &str = "fed-1";

fn id(seed: u8) -> SigningIdentity {
    SigningIdentity::from_seed([seed; 32])
}

fn fedistill(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fedistill"))
        .args(args)
        .output()
        .expect("run fedistill")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn contribution(who: &str, seed: u8, probs: &[f32]) -> (Record, (Digest, Vec<u8>)) {
    let msg = SoftLabels {
        round: RoundId(1),
        public_digest: Digest::of(b"public"),
        sample_ids_digest: Digest::of(b"ids"),
        encoding: Encoding::F32,
        rows: 2,
        classes: 2,
        samples: 10,
        payload: softlabels::encode(probs, 2, 2, Encoding::F32).expect("valid distributions"),
    };
    let payload = fedistill_shared::wire::encode_payload(&msg).expect("encodes");
    let d = Digest::of(&payload);
    let fed = FederationId::new(FED).expect("valid");
    let sig = id(seed).sign_raw(&signing_bytes(SOFT_LABELS_DOMAIN, &fed, RoundId(1), 1, &d));
    let rec = Record::Contribution {
        round: RoundId(1),
        participant: ParticipantId::new(who),
        encoding: EncodingName::parse("f32").expect("valid encoding"),
        payload_digest: d,
        sequence: 1,
        signature: sig.to_vec(),
    };
    (rec, (d, payload))
}

/// Builds a store holding one complete round, cosigned by two witnesses; returns the trust file text.
fn build_store(db: &Path, work: &Path) -> String {
    let coordinator = id(1);
    let mut store = Store::open(db, coordinator.to_dalek(), ORIGIN).expect("open store");
    let enrol = |who: &str, seed: u8| Record::RosterChange {
        participant: ParticipantId::new(who),
        action: RosterAction::Enrol,
        signing_key: id(seed).public_key().to_bytes(),
        cert_fingerprint: Digest::of(who.as_bytes()),
        reason: "initial".into(),
    };
    let first = store
        .append(
            &[
                Record::FederationCreated {
                    federation_id: FED.into(),
                    coordinator_key: coordinator.public_key().to_bytes(),
                    created_unix: 1_700_000_000,
                    config_digest: Digest::of(b"config"),
                },
                enrol("bank-a", 21),
                enrol("bank-b", 22),
            ],
            &[],
        )
        .expect("append roster");
    let (ca, pa) = contribution("bank-a", 21, &[0.75, 0.25, 0.5, 0.5]);
    let (cb, pb) = contribution("bank-b", 22, &[0.25, 0.75, 0.5, 0.5]);
    let inputs = [
        AggregateInput {
            participant: &ParticipantId::new("bank-a"),
            encoding: "f32",
            payload: &pa.1,
        },
        AggregateInput {
            participant: &ParticipantId::new("bank-b"),
            encoding: "f32",
            payload: &pb.1,
        },
    ];
    let agg = ProtocolRecompute.aggregate("mean", &inputs).expect("aggregate");
    let mut aggregate = Record::Aggregate {
        round: RoundId(1),
        digest: Digest::of(&agg),
        rule: RuleName::parse("mean").expect("valid rule"),
        contributors: vec![ParticipantId::new("bank-a"), ParticipantId::new("bank-b")],
        signature: Vec::new(),
    };
    let stmt = aggregate.statement(FED).expect("encodes").expect("signed kind");
    if let Record::Aggregate { signature, .. } = &mut aggregate {
        *signature = coordinator.sign_raw(&stmt).to_vec();
    }
    let head = store.append(&[ca, cb, aggregate], &[pa, pb]).expect("append round");
    // Both participants witness: first checkpoint, then the grown one with a consistency proof.
    let mut trust = format!(
        "origin = \"{ORIGIN}\"\ncoordinator_key = \"{}\"\nquorum = 2\n",
        hex(&coordinator.public_key().to_bytes())
    );
    for (name, seed) in [("witness-bank-a", 31u8), ("witness-bank-b", 32)] {
        let dir = work.join(name);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let mut w = Witness::open(&dir, name, id(seed).to_dalek(), store.log_verifier()).expect("witness");
        let c1 = w.handle_checkpoint(&first, &[], 1_700_000_100).expect("cosign first");
        store
            .add_cosignature(first.checkpoint.size, &w.witness_key(), &c1)
            .expect("store cosig");
        let proof = store
            .consistency_proof(first.checkpoint.size, head.checkpoint.size)
            .expect("proof");
        let c2 = w.handle_checkpoint(&head, &proof, 1_700_000_200).expect("cosign head");
        store
            .add_cosignature(head.checkpoint.size, &w.witness_key(), &c2)
            .expect("store cosig");
        trust.push_str(&format!(
            "[[witness]]\nname = \"{name}\"\nkey = \"{}\"\n",
            hex(&id(seed).public_key().to_bytes())
        ));
    }
    trust
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn export_verify_show_and_tamper() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("log.db");
    let trust = build_store(&db, dir.path());
    let trust_path = dir.path().join("trust.toml");
    std::fs::write(&trust_path, trust).expect("write trust");
    let bundle = dir.path().join("bundle");
    let (db_s, bundle_s, trust_s) = (
        db.to_str().expect("utf8 path"),
        bundle.to_str().expect("utf8 path"),
        trust_path.to_str().expect("utf8 path"),
    );

    let out = fedistill(&["audit", "export", "--store", db_s, "--out", bundle_s, "--payloads"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("exported 6 records"), "{}", text(&out));

    let out = fedistill(&["audit", "verify", bundle_s, "--trust", trust_s]);
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("OK: 6 records"), "{t}");
    assert!(t.contains("1 aggregates recomputed bit for bit"), "{t}");
    assert!(t.contains("witness-bank-a, witness-bank-b"), "{t}");

    let out = fedistill(&["audit", "show", bundle_s]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("round 1: contribution from bank-a"),
        "{}",
        text(&out)
    );

    // Exporting into a non-empty directory is refused.
    let out = fedistill(&["audit", "export", "--store", db_s, "--out", bundle_s]);
    assert!(!out.status.success());
    assert!(text(&out).contains("not empty"), "{}", text(&out));

    // One changed byte: exit non-zero, the offending file named.
    let records = bundle.join("records.bin");
    let mut bytes = std::fs::read(&records).expect("read");
    bytes[10] ^= 1;
    std::fs::write(&records, &bytes).expect("write");
    let out = fedistill(&["audit", "verify", bundle_s, "--trust", trust_s]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("FAILED"), "{}", text(&out));
    assert!(
        text(&out).contains("first offending item: records.bin"),
        "{}",
        text(&out)
    );

    // A missing trust file and a missing bundle are clear errors, not panics.
    let out = fedistill(&["audit", "verify", bundle_s, "--trust", "/nonexistent/trust.toml"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("reading trust file"), "{}", text(&out));
    let out = fedistill(&["audit", "show", "/nonexistent/bundle"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("reading bundle"), "{}", text(&out));
}

#[test]
fn a_stricter_quorum_than_the_witnesses_gave_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("log.db");
    let trust = build_store(&db, dir.path());
    // Add a third trusted witness and require all three.
    let trust = trust.replace("quorum = 2", "quorum = 3")
        + &format!(
            "[[witness]]\nname = \"witness-bank-c\"\nkey = \"{}\"\n",
            hex(&id(33).public_key().to_bytes())
        );
    let trust_path = dir.path().join("trust.toml");
    std::fs::write(&trust_path, trust).expect("write trust");
    let bundle = dir.path().join("bundle");
    let out = fedistill(&[
        "audit",
        "export",
        "--store",
        db.to_str().expect("utf8"),
        "--out",
        bundle.to_str().expect("utf8"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let out = fedistill(&[
        "audit",
        "verify",
        bundle.to_str().expect("utf8"),
        "--trust",
        trust_path.to_str().expect("utf8"),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("witness quorum not met: 2 of the required 3"),
        "{}",
        text(&out)
    );
}

fn checkpoint_note_of_size(bundle: &Path, size: u64) -> std::path::PathBuf {
    let prefix = format!("{size:020}-");
    std::fs::read_dir(bundle.join("checkpoints"))
        .expect("checkpoints dir")
        .map(|e| e.expect("entry").path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix))
        })
        .expect("a checkpoint of that size")
}

/// A bundle cut back to the earlier cosigned checkpoint verifies on its own, but not against the later
/// checkpoint the auditor expects; `--require-payloads` refuses a bundle without (or missing one of)
/// the payloads that plain verification accepts.
#[test]
fn expect_checkpoint_and_require_payloads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("log.db");
    let trust_path = dir.path().join("trust.toml");
    std::fs::write(&trust_path, build_store(&db, dir.path())).expect("write trust");
    let (db_s, trust_s) = (db.to_str().expect("utf8"), trust_path.to_str().expect("utf8"));
    let export = |name: &str, extra: &[&str]| {
        let out_dir = dir.path().join(name);
        let mut args = vec![
            "audit",
            "export",
            "--store",
            db_s,
            "--out",
            out_dir.to_str().expect("utf8"),
        ];
        args.extend_from_slice(extra);
        let out = fedistill(&args);
        assert!(out.status.success(), "{}", text(&out));
        out_dir
    };
    let verify = |bundle: &Path, extra: &[&str]| {
        let mut args = vec!["audit", "verify", bundle.to_str().expect("utf8"), "--trust", trust_s];
        args.extend_from_slice(extra);
        fedistill(&args)
    };
    let full = export("full", &["--payloads"]);
    let cut = export("cut", &["--payloads", "--size", "3"]);
    let later = checkpoint_note_of_size(&full, 6);
    let earlier = checkpoint_note_of_size(&cut, 3);
    let (later_s, earlier_s) = (later.to_str().expect("utf8"), earlier.to_str().expect("utf8"));

    // (a) The cut bundle is a consistent, cosigned prefix: plain verification says OK...
    let out = verify(&cut, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("OK: 3 records"), "{}", text(&out));
    // ...but it does not extend the checkpoint the auditor got from a witness.
    let out = verify(&cut, &["--expect-checkpoint", later_s]);
    assert!(!out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("FAILED: 1 problem(s)"), "{t}");
    assert!(
        t.contains(
            "first offending item: expected checkpoint: bundle does not extend the expected checkpoint: size 6 root"
        ),
        "{t}"
    );
    assert!(t.contains("bundle has size 3 root"), "{t}");
    // The state a participant's witness keeps is such a note (it last cosigned size 6).
    let kept = dir.path().join("witness-bank-a/witness-checkpoint.note");
    let out = verify(&cut, &["--expect-checkpoint", kept.to_str().expect("utf8")]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("does not extend the expected checkpoint: size 6"),
        "{}",
        text(&out)
    );
    let out = verify(&full, &["--expect-checkpoint", kept.to_str().expect("utf8")]);
    assert!(out.status.success(), "{}", text(&out));
    // The full bundle extends both the later checkpoint and the earlier one.
    for expected in [later_s, earlier_s] {
        let out = verify(&full, &["--expect-checkpoint", expected]);
        assert!(out.status.success(), "{}", text(&out));
        assert!(
            text(&out).contains("extends the expected checkpoint: size"),
            "{}",
            text(&out)
        );
    }
    // A file that is not a signed checkpoint is a clear error.
    let junk = dir.path().join("junk.note");
    std::fs::write(&junk, "not a note").expect("write");
    let out = verify(&full, &["--expect-checkpoint", junk.to_str().expect("utf8")]);
    assert!(!out.status.success());
    assert!(text(&out).contains("expected checkpoint"), "{}", text(&out));

    // (b) All payloads present: passes and says so.
    let out = verify(&full, &["--require-payloads"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("all 2 record payloads present"), "{}", text(&out));
    // Exported without payloads: plain verification is OK (with a note), required payloads fail.
    let bare = export("bare", &[]);
    let out = verify(&bare, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let out = verify(&bare, &["--require-payloads"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("2 of 2 are missing from the bundle: record 3 (contribution)"),
        "{}",
        text(&out)
    );
    // One payload removed from a full bundle (manifest rewritten to match): named.
    let mut b = fedistill_shared::audit::Bundle::read_dir(&full).expect("read bundle");
    let removed = b
        .files
        .keys()
        .find(|k| k.starts_with("payloads/"))
        .cloned()
        .expect("a payload");
    b.files.remove(&removed);
    b.reseal();
    let trimmed = dir.path().join("trimmed");
    b.write_dir(&trimmed).expect("write bundle");
    let out = verify(&trimmed, &["--require-payloads"]);
    assert!(!out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("payloads required (--require-payloads) but 1 of 2 are missing"),
        "{t}"
    );
    let hex16 = &removed["payloads/".len()..][..16];
    assert!(t.contains(&format!("(contribution) (payload {hex16})")), "{t}");
}

#[test]
fn the_audit_report_opens_in_a_browser_with_its_verdict_and_a_tampered_bundle_shows_the_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("log.db");
    let trust_path = dir.path().join("trust.toml");
    std::fs::write(&trust_path, build_store(&db, dir.path())).expect("write trust");
    let bundle = dir.path().join("bundle");
    let html = dir.path().join("report.html");
    let (db_s, bundle_s, trust_s, html_s) = (
        db.to_str().expect("utf8 path"),
        bundle.to_str().expect("utf8 path"),
        trust_path.to_str().expect("utf8 path"),
        html.to_str().expect("utf8 path"),
    );
    let out = fedistill(&["audit", "export", "--store", db_s, "--out", bundle_s, "--payloads"]);
    assert!(out.status.success(), "{}", text(&out));

    let out = fedistill(&["audit", "report", bundle_s, "--trust", trust_s, "--out", html_s]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("OK: report written to"), "{}", text(&out));
    let file = std::fs::read_to_string(&html).expect("report written");
    assert!(
        !file.contains("<script") && !file.contains("src=\"http"),
        "self-contained, no script"
    );
    let dom = chromium::dump_dom(&chromium::file_url(&html), 200);
    assert!(dom.contains("data-verdict=\"ok\"") && dom.contains("VERIFIED"), "{dom}");
    assert!(dom.contains("witness-bank-a, witness-bank-b"), "cosigners: {dom}");
    let round = &dom[dom.find("<tr data-round=\"1\"").expect("round 1 row")..];
    let round = &round[..round.find("</tr>").expect("row end")];
    assert!(
        round.contains("bank-a, bank-b") && round.contains("bit for bit"),
        "{round}"
    );
    assert!(dom.contains("id=\"chart-participation\""), "{dom}");

    // One changed byte of records.bin: the report is still written, and shows the failure.
    let records = bundle.join("records.bin");
    let mut bytes = std::fs::read(&records).expect("read");
    bytes[10] ^= 1;
    std::fs::write(&records, &bytes).expect("write");
    let bad = dir.path().join("tampered.html");
    let out = fedistill(&[
        "audit",
        "report",
        bundle_s,
        "--trust",
        trust_s,
        "--out",
        bad.to_str().expect("utf8"),
    ]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("FAILED") && text(&out).contains("report written to"),
        "{}",
        text(&out)
    );
    let dom = chromium::dump_dom(&chromium::file_url(&bad), 200);
    assert!(
        dom.contains("data-verdict=\"failed\"") && dom.contains("FAILED:"),
        "{dom}"
    );
    assert!(dom.contains("records.bin"), "the offending item is named: {dom}");
    assert!(!dom.contains("VERIFIED"), "{dom}");
}
