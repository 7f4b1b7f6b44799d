//! Unit tests of the coordinator's durable store.

use super::*;
use fedistill_shared::ledger::tree::{verify_consistency, verify_inclusion};
use fedistill_shared::ledger::{EncodingName, ParticipantId, RoundId};

const ORIGIN: &str = "fedistill.test/fed-1";

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn contribution(round: u64, who: &str, payload: &[u8]) -> (Record, (Digest, Vec<u8>)) {
    let d = Digest::of(payload);
    (
        Record::Contribution {
            round: RoundId(round),
            participant: ParticipantId::new(who),
            encoding: EncodingName::parse("f32").expect("valid encoding"),
            payload_digest: d,
            sequence: round,
            signature: vec![round as u8; 64],
        },
        (d, payload.to_vec()),
    )
}

fn open(path: &Path) -> Result<Store, StoreError> {
    Store::open(path, key(1), ORIGIN)
}

/// Appends `n` single-record batches; returns every acknowledged checkpoint.
fn fill(store: &mut Store, n: u64) -> Vec<SignedCheckpoint> {
    (0..n)
        .map(|i| {
            let (r, p) = contribution(i, "bank-a", format!("payload {i}").as_bytes());
            store.append(&[r], &[p]).expect("append")
        })
        .collect()
}

#[test]
fn appended_records_payloads_state_and_proofs_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("log.db");
    let mut s = open(&path).expect("create");
    assert_eq!(s.size(), 0);
    assert_eq!(s.checkpoint_latest().checkpoint.root, tree::EMPTY_ROOT);
    let (r1, p1) = contribution(1, "bank-a", b"one");
    let (r2, p2) = contribution(1, "bank-b", b"two");
    let cp2 = s
        .append_with_state(
            &[r1.clone(), r2.clone()],
            &[p1.clone(), p2],
            &[("round".into(), b"1".to_vec())],
        )
        .expect("append");
    assert_eq!(cp2.checkpoint.size, 2);
    s.log_verifier().verify(&cp2).expect("signed by the log key");
    let cps = fill(&mut s, 5);
    drop(s);

    let s = open(&path).expect("reopen");
    assert_eq!(s.size(), 7);
    assert_eq!(s.checkpoint_latest(), cps[4]);
    assert_eq!(s.records(0..2).expect("read"), vec![r1, r2]);
    assert_eq!(s.payload(&p1.0).expect("read"), Some(p1.1));
    assert_eq!(s.payload(&Digest::of(b"absent")).expect("read"), None);
    assert_eq!(s.state("round").expect("read"), Some(b"1".to_vec()));
    assert_eq!(s.checkpoint_sizes().expect("read"), vec![0, 2, 3, 4, 5, 6, 7]);
    // Proofs from the store verify against the signed roots.
    let raw = s.records_raw(0..7).expect("read");
    for (i, data) in raw.iter().enumerate() {
        let p = s.inclusion_proof(i as u64, 7).expect("proof");
        verify_inclusion(tree::leaf_hash(data), i as u64, 7, &p, cps[4].checkpoint.root).expect("inclusion");
    }
    let p = s.consistency_proof(2, 7).expect("proof");
    verify_consistency(2, cp2.checkpoint.root, 7, cps[4].checkpoint.root, &p).expect("consistency");
    assert!(matches!(s.inclusion_proof(0, 8), Err(StoreError::OutOfRange(_))));
}

#[test]
fn a_read_only_open_checks_the_log_and_refuses_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("log.db");
    let mut w = open(&path).expect("create");
    let acked = fill(&mut w, 3);
    // Readable beside the open writer (WAL). The newest checkpoint's signature is stored by the writer's
    // next transaction: until then a reader has the records and the checkpoint before.
    let r = Store::open_read_only(&path).expect("read-only open");
    assert_eq!(r.size(), 3);
    assert_eq!(r.checkpoint_latest(), acked[1]);
    w.put_state("k", b"v").expect("a later transaction");
    let mut r = Store::open_read_only(&path).expect("read-only open");
    assert_eq!(r.size(), 3);
    assert_eq!(r.checkpoint_latest(), acked[2]);
    assert_eq!(r.origin(), ORIGIN);
    let (rec, p) = contribution(9, "x", b"y");
    assert!(matches!(r.append(&[rec], &[p]), Err(StoreError::ReadOnly)));
    assert!(Store::open_read_only(&dir.path().join("absent.db")).is_err());
}

#[test]
fn state_keys_are_deleted_by_prefix_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir.path().join("s.sqlite")).unwrap();
    for k in [
        "contribution/1/a",
        "contribution/1/b",
        "contribution/2/a",
        "contributions",
        "round_snapshot",
    ] {
        store.put_state(k, k.as_bytes()).unwrap();
    }
    assert_eq!(store.delete_state_prefix("contribution/").unwrap(), 3);
    assert_eq!(store.state("contribution/1/a").unwrap(), None);
    assert_eq!(
        store.state("contributions").unwrap().as_deref(),
        Some(&b"contributions"[..])
    );
    assert_eq!(
        store.state("round_snapshot").unwrap().as_deref(),
        Some(&b"round_snapshot"[..])
    );
    // `%` and `_` are not wildcards.
    assert_eq!(store.delete_state_prefix("round%").unwrap(), 0);
    assert_eq!(store.delete_state_prefix("round_").unwrap(), 1);
}

#[test]
fn state_only_updates_do_not_create_checkpoints() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(&dir.path().join("log.db")).expect("create");
    fill(&mut s, 1);
    s.put_state("k", b"v1").expect("put");
    s.put_state("k", b"v2").expect("put");
    assert_eq!(s.state("k").expect("read"), Some(b"v2".to_vec()));
    assert_eq!(s.checkpoint_sizes().expect("read"), vec![0, 1]);
}

#[test]
fn a_payload_filed_under_the_wrong_digest_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(&dir.path().join("log.db")).expect("create");
    let (r, (_, bytes)) = contribution(1, "bank-a", b"x");
    let err = s.append(&[r], &[(Digest::of(b"y"), bytes)]).expect_err("mismatch");
    assert!(matches!(err, StoreError::PayloadDigest { .. }), "{err}");
    assert_eq!(s.size(), 0);
}

#[test]
fn another_key_or_origin_cannot_open_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("log.db");
    fill(&mut open(&path).expect("create"), 2);
    assert!(matches!(
        Store::open(&path, key(2), ORIGIN),
        Err(StoreError::Identity(_))
    ));
    assert!(matches!(
        Store::open(&path, key(1), "other"),
        Err(StoreError::Identity(_))
    ));
    assert!(matches!(
        Store::open(&path, key(1), "bad origin"),
        Err(StoreError::Note(_))
    ));
}

fn raw(path: &Path) -> Connection {
    Connection::open(path).expect("raw sqlite connection")
}

#[test]
fn a_changed_last_record_is_detected_at_startup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("log.db");
    fill(&mut open(&path).expect("create"), 4);
    let (r, _) = contribution(3, "bank-a", b"forged");
    raw(&path)
        .execute(
            "UPDATE records SET data = ?1 WHERE idx = 3",
            [r.encode().expect("encodes")],
        )
        .expect("tamper");
    let err = open(&path).err().expect("refuses to start");
    assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
}

#[test]
fn a_garbled_last_record_is_detected_at_startup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("log.db");
    fill(&mut open(&path).expect("create"), 4);
    raw(&path)
        .execute("UPDATE records SET data = x'0104' WHERE idx = 3", [])
        .expect("tamper");
    let err = open(&path).err().expect("refuses to start");
    assert!(matches!(err, StoreError::Record { index: 3, .. }), "{err}");
}

#[test]
fn a_deleted_last_record_is_detected_at_startup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("log.db");
    fill(&mut open(&path).expect("create"), 4);
    raw(&path)
        .execute("DELETE FROM records WHERE idx = 3", [])
        .expect("tamper");
    let err = open(&path).err().expect("refuses to start");
    assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
}

#[test]
fn a_checkpoint_row_with_another_root_is_a_root_mismatch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("log.db");
    fill(&mut open(&path).expect("create"), 3);
    raw(&path)
        .execute("UPDATE checkpoints SET root = ?1 WHERE size = 3", [vec![0u8; 32]])
        .expect("tamper");
    let err = open(&path).err().expect("refuses to start");
    assert!(matches!(err, StoreError::RootMismatch { size: 3, .. }), "{err}");
}

#[test]
fn a_checkpoint_signed_by_another_key_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("log.db");
    let mut s = open(&path).expect("create");
    fill(&mut s, 2);
    let root = s.root(2).expect("root");
    drop(s);
    let forged = LogSigner::new(ORIGIN, key(9))
        .expect("name")
        .sign(2, root)
        .expect("sign");
    raw(&path)
        .execute(
            "UPDATE checkpoints SET note = ?1 WHERE size = 2",
            [forged.to_note().expect("note")],
        )
        .expect("tamper");
    let err = open(&path).err().expect("refuses to start");
    assert!(
        matches!(err, StoreError::Note(NoteError::MissingLogSignature(_))),
        "{err}"
    );
}

#[test]
fn a_checkpoint_left_unsigned_by_a_crash_is_signed_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("log.db");
    let acked = fill(&mut open(&path).expect("create"), 3);
    raw(&path)
        .execute("UPDATE checkpoints SET note = NULL WHERE size = 3", [])
        .expect("simulate");
    let s = open(&path).expect("recovers");
    assert_eq!(s.size(), 3);
    // Ed25519 is deterministic: the re-signed checkpoint is the acknowledged one.
    assert_eq!(s.checkpoint_latest(), acked[2]);
}

/// Offsets just past each commit frame of a WAL file (SQLite WAL format: 32-byte header with
/// the page size at offset 8; frames of 24-byte header + page, header bytes 4..8 non-zero on
/// the frame that commits a transaction).
fn commit_ends(wal: &[u8]) -> Vec<usize> {
    let page = u32::from_be_bytes([wal[8], wal[9], wal[10], wal[11]]) as usize;
    let mut out = Vec::new();
    let mut off = 32;
    while off + 24 + page <= wal.len() {
        if wal[off + 4..off + 8] != [0, 0, 0, 0] {
            out.push(off + 24 + page);
        }
        off += 24 + page;
    }
    out
}

/// Copies the database and its WAL as a crash would leave them, with the WAL cut `cut_txns`
/// transactions before its end plus part of a frame (a torn write of the next transaction, if any).
fn crash_copy(src_dir: &Path, dst_dir: &Path, cut_txns: usize) {
    std::fs::copy(src_dir.join("log.db"), dst_dir.join("log.db")).expect("copy db");
    let wal = std::fs::read(src_dir.join("log.db-wal")).expect("WAL exists while the store is open");
    let ends = commit_ends(&wal);
    assert!(ends.len() > cut_txns + 1, "test needs more transactions in the WAL");
    let keep = (ends[ends.len() - 1 - cut_txns] + 100).min(wal.len());
    std::fs::write(dst_dir.join("log.db-wal"), &wal[..keep]).expect("write torn WAL");
}

#[test]
fn a_torn_last_append_loses_only_the_unacknowledged_batch() {
    let src = tempfile::tempdir().expect("tempdir");
    let mut s = open(&src.path().join("log.db")).expect("create");
    let acked = fill(&mut s, 6);
    // The last append is one WAL transaction (its records, and the signature of the append before). Tear
    // into it: as if the crash hit before append #6 was acknowledged.
    let dst = tempfile::tempdir().expect("tempdir");
    crash_copy(src.path(), dst.path(), 1);
    let r = open(&dst.path().join("log.db")).expect("torn tail is discarded, store opens");
    assert_eq!(r.size(), 5);
    assert_eq!(r.checkpoint_latest(), acked[4]);
    assert_eq!(r.records_raw(0..5).expect("read"), s.records_raw(0..5).expect("read"));
}

#[test]
fn a_signature_lost_with_a_crash_is_signed_again_at_open() {
    let src = tempfile::tempdir().expect("tempdir");
    let mut s = open(&src.path().join("log.db")).expect("create");
    let acked = fill(&mut s, 6);
    // Append #6 was acknowledged; its signature waits for the next transaction, which the crash tore.
    let dst = tempfile::tempdir().expect("tempdir");
    crash_copy(src.path(), dst.path(), 0);
    let r = open(&dst.path().join("log.db")).expect("opens and signs");
    assert_eq!(r.size(), 6);
    assert_eq!(r.checkpoint_latest(), acked[5]);
}

#[test]
fn cosignatures_are_verified_stored_and_attached() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("log.db");
    let mut s = open(&path).expect("create");
    let cp = fill(&mut s, 2).pop().expect("two appends");
    let w = WitnessKey {
        name: "w1".into(),
        key: key(11).verifying_key(),
    };
    let c = Cosignature::sign(&cp.checkpoint, "w1", &key(11), 1_700_000_000).expect("cosign");
    s.add_cosignature(2, &w, &c).expect("valid cosignature");
    let forged = Cosignature::sign(&cp.checkpoint, "w1", &key(12), 1_700_000_000).expect("cosign");
    assert!(matches!(s.add_cosignature(2, &w, &forged), Err(StoreError::Note(_))));
    assert!(matches!(s.add_cosignature(9, &w, &c), Err(StoreError::OutOfRange(_))));
    drop(s);
    let s = open(&path).expect("reopen");
    let with = s.checkpoint(2).expect("read").expect("exists");
    assert_eq!(with.signatures.len(), 2);
    assert_eq!(Cosignature::from_note_signature(&with.signatures[1]).expect("shape"), c);
}
