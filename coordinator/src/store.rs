//! The coordinator's durable store: the update log (records, Merkle tree nodes, signed checkpoints,
//! witness cosignatures), the content-addressed payloads beside it, and a small key-value table for
//! round state, all in one SQLite database (WAL, `synchronous=FULL`).
//!
//! **Invariant:** one [`Store::append_with_state`] or [`Store::append_batch`] call is one SQLite
//! transaction (one fsync) holding the new records, their tree nodes, their payloads, the caller's state
//! updates and cosignatures and the new (unsigned) checkpoint row. The checkpoint is signed only after
//! that transaction is durable; `append` returns (acknowledges) it then. Its signature is stored by the
//! next transaction (or when the store is dropped), so a round costs one fsync: Ed25519 signatures are
//! deterministic, and a signature lost with a crash is the one [`Store::open`] signs again. On open the whole tree is recomputed from the
//! record bytes and compared with the stored nodes and every signed checkpoint: any difference is
//! a [`StoreError::Corrupt`] / [`StoreError::RootMismatch`] and the store refuses to open. A
//! checkpoint row left unsigned by a crash between commit and signing is signed at open (its
//! records were durable). A write torn by a crash is an uncommitted WAL tail that SQLite discards;
//! it was never acknowledged.

use ed25519_dalek::SigningKey;
use fedistill_shared::ledger::note::check_key_name;
use fedistill_shared::ledger::tree::{self, MemoryTree, NodeSource};
use fedistill_shared::ledger::{
    Cosignature, Digest, LogSigner, LogVerifier, NoteError, ProofError, Record, RecordError, SignedCheckpoint,
    WitnessKey,
};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::ops::Range;
use std::path::Path;

/// Pages the WAL may hold before a commit copies it into the database (64 MiB at SQLite's 4 KiB pages).
const WAL_AUTOCHECKPOINT_PAGES: i64 = 16_384;

/// Schema version stored in `meta.format`.
const FORMAT: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS records (idx INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (idx INTEGER PRIMARY KEY, hash BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS payloads (digest BLOB PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (size INTEGER PRIMARY KEY, root BLOB NOT NULL, note BLOB);
CREATE TABLE IF NOT EXISTS cosignatures (
    size INTEGER NOT NULL, witness TEXT NOT NULL, key_id BLOB NOT NULL, timestamp INTEGER NOT NULL,
    sig BLOB NOT NULL, PRIMARY KEY (size, witness));
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value BLOB NOT NULL);
";

/// Why the store failed or refused to open.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite reported an error (I/O, locking, a malformed database file).
    #[error("log database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The stored log is internally inconsistent (a torn or tampered row); the store refuses to start.
    #[error("log store is corrupt, refusing to start: {0}")]
    Corrupt(String),
    /// A signed checkpoint's root differs from the root recomputed from the stored records.
    #[error(
        "checkpoint of size {size} says root {signed}, but the stored records hash to {computed}; refusing to start"
    )]
    RootMismatch {
        /// Tree size of the checkpoint.
        size: u64,
        /// Root in the signed checkpoint.
        signed: Digest,
        /// Root recomputed from the records.
        computed: Digest,
    },
    /// The database belongs to another log origin or was signed with another key.
    #[error("log store identity mismatch: {0}")]
    Identity(String),
    /// A record could not be encoded or a stored one decoded.
    #[error("record {index}: {source}")]
    Record {
        /// Log index (or position in the batch being appended).
        index: u64,
        /// What was wrong.
        source: RecordError,
    },
    /// Signing, parsing or verifying a checkpoint or cosignature failed.
    #[error("checkpoint: {0}")]
    Note(#[from] NoteError),
    /// A proof could not be built.
    #[error("proof: {0}")]
    Proof(#[from] ProofError),
    /// A payload's bytes do not hash to the digest it was filed under.
    #[error("payload filed under {claimed} hashes to {actual}")]
    PayloadDigest {
        /// Digest given by the caller.
        claimed: Digest,
        /// SHA-256 of the bytes.
        actual: Digest,
    },
    /// A size or index outside the log.
    #[error("{0}")]
    OutOfRange(String),
    /// A write was attempted on a store opened with [`Store::open_read_only`].
    #[error("the log store was opened read-only")]
    ReadOnly,
}

/// A witness cosignature checked against the signed checkpoint it covers ([`Store::check_cosignature`]),
/// to be stored by a [`Batch`].
#[derive(Debug, Clone)]
pub struct CheckedCosignature {
    size: u64,
    witness: String,
    cosig: Cosignature,
}

/// What one [`Store::append_batch`] writes, in one transaction: the coordinator's group commit of every
/// message it handled together (docs/ARCHITECTURE.md).
#[derive(Debug, Default)]
pub struct Batch {
    /// Every state key starting with one of these prefixes is deleted first.
    pub delete_state_prefixes: Vec<String>,
    /// Records to append, in log order.
    pub records: Vec<Record>,
    /// Content-addressed payloads (each must hash to its digest).
    pub payloads: Vec<(Digest, Vec<u8>)>,
    /// State key-value updates (a later update of the same key wins).
    pub state: Vec<(String, Vec<u8>)>,
    /// Witness cosignatures, each checked by [`Store::check_cosignature`].
    pub cosignatures: Vec<CheckedCosignature>,
}

impl Batch {
    /// Whether the batch writes nothing.
    pub fn is_empty(&self) -> bool {
        self.delete_state_prefixes.is_empty()
            && self.records.is_empty()
            && self.payloads.is_empty()
            && self.state.is_empty()
            && self.cosignatures.is_empty()
    }
}

/// The coordinator's durable log store. Not `Sync`: wrap it in a mutex or own it on one task.
pub struct Store {
    conn: Connection,
    signer: Option<LogSigner>,
    verifier: LogVerifier,
    size: u64,
    latest: SignedCheckpoint,
    /// The newest checkpoint's signature while it waits to be stored by the next transaction.
    note_due: Option<SignedCheckpoint>,
}

struct DbNodes<'a>(&'a Connection);

impl NodeSource for DbNodes<'_> {
    fn nodes(&self, indexes: &[u64]) -> Result<Vec<Digest>, String> {
        let mut stmt = self
            .0
            .prepare_cached("SELECT hash FROM nodes WHERE idx = ?1")
            .map_err(|e| e.to_string())?;
        indexes
            .iter()
            .map(|&i| {
                let idx = i64::try_from(i).map_err(|_| format!("node index {i} out of range"))?;
                let blob: Option<Vec<u8>> = stmt
                    .query_row([idx], |r| r.get(0))
                    .optional()
                    .map_err(|e| e.to_string())?;
                let blob = blob.ok_or_else(|| format!("tree node {i} is missing"))?;
                to_digest(&blob).ok_or_else(|| format!("tree node {i} is not 32 bytes"))
            })
            .collect()
    }
}

fn to_digest(b: &[u8]) -> Option<Digest> {
    <[u8; 32]>::try_from(b).ok().map(Digest)
}

fn to_i64(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::OutOfRange(format!("{v} exceeds the store's range")))
}

fn to_u64(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative size or index {v}")))
}

impl Store {
    /// Opens (creating if absent) the store at `path` for the log `origin` signed by
    /// `signing_key`, recomputes the tree from the records and checks it against the stored nodes
    /// and every signed checkpoint. A mismatch is an error: the coordinator must not start.
    pub fn open(path: &Path, signing_key: SigningKey, origin: &str) -> Result<Store, StoreError> {
        check_key_name(origin)?;
        let signer = LogSigner::new(origin, signing_key)?;
        let mut conn = Connection::open(path)?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Corrupt(format!(
                "could not enable WAL (journal_mode is {mode})"
            )));
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        // The WAL is copied into the database by [`Store::checkpoint_wal`] when the coordinator is idle;
        // SQLite's own checkpoint (normally at 1000 pages, inside whichever commit crosses it) is left as a
        // backstop for a WAL that grows past 64 MiB between those calls.
        conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
        let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        if check != "ok" {
            return Err(StoreError::Corrupt(format!("SQLite quick_check: {check}")));
        }
        let key_bytes = signer.verifier().key.to_bytes().to_vec();
        {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute_batch(SCHEMA)?;
            let meta = |k: &str| -> Result<Option<Vec<u8>>, rusqlite::Error> {
                tx.query_row("SELECT value FROM meta WHERE key = ?1", [k], |r| r.get(0))
                    .optional()
            };
            match meta("origin")? {
                None => {
                    tx.execute(
                        "INSERT INTO meta VALUES ('format', ?1)",
                        [FORMAT.to_string().into_bytes()],
                    )?;
                    tx.execute("INSERT INTO meta VALUES ('origin', ?1)", [origin.as_bytes()])?;
                    tx.execute("INSERT INTO meta VALUES ('log_key', ?1)", [&key_bytes])?;
                    tx.execute(
                        "INSERT INTO checkpoints (size, root, note) VALUES (0, ?1, NULL)",
                        [tree::EMPTY_ROOT.0.to_vec()],
                    )?;
                }
                Some(stored) => {
                    if stored != origin.as_bytes() {
                        return Err(StoreError::Identity(format!(
                            "database is for origin {:?}, not {origin:?}",
                            String::from_utf8_lossy(&stored)
                        )));
                    }
                    if meta("format")? != Some(FORMAT.to_string().into_bytes()) {
                        return Err(StoreError::Identity("unsupported store format".into()));
                    }
                    if meta("log_key")? != Some(key_bytes.clone()) {
                        return Err(StoreError::Identity(
                            "database was written under a different coordinator log key".into(),
                        ));
                    }
                }
            }
            tx.commit()?;
        }
        let verifier = signer.verifier();
        let (size, latest) = Self::recover(&conn, &verifier, Some(&signer))?;
        Ok(Store {
            conn,
            signer: Some(signer),
            verifier,
            size,
            latest,
            note_due: None,
        })
    }

    /// Opens an existing store read-only (for `fedistill audit export` beside a running
    /// coordinator): no signing key needed, the log key and origin come from the database and
    /// the same start-up checks run. A checkpoint left unsigned stays unsigned (and unexported).
    pub fn open_read_only(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let meta = |k: &str| -> Result<Vec<u8>, StoreError> {
            conn.query_row("SELECT value FROM meta WHERE key = ?1", [k], |r| r.get(0))
                .optional()?
                .ok_or_else(|| StoreError::Identity(format!("not a fedistill log store (no {k})")))
        };
        if meta("format")? != FORMAT.to_string().into_bytes() {
            return Err(StoreError::Identity("unsupported store format".into()));
        }
        let origin =
            String::from_utf8(meta("origin")?).map_err(|_| StoreError::Corrupt("origin is not UTF-8".into()))?;
        let key: [u8; 32] = meta("log_key")?
            .as_slice()
            .try_into()
            .map_err(|_| StoreError::Corrupt("stored log key is not 32 bytes".into()))?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&key)
            .map_err(|_| StoreError::Corrupt("stored log key is not an ed25519 key".into()))?;
        let verifier = LogVerifier { origin, key };
        let (size, latest) = Self::recover(&conn, &verifier, None)?;
        Ok(Store {
            conn,
            signer: None,
            verifier,
            size,
            latest,
            note_due: None,
        })
    }

    /// Recomputes the tree from the records, checks nodes and checkpoints, signs a checkpoint left
    /// unsigned by a crash. Returns the size and the latest signed checkpoint.
    fn recover(
        conn: &Connection,
        verifier: &LogVerifier,
        signer: Option<&LogSigner>,
    ) -> Result<(u64, SignedCheckpoint), StoreError> {
        let mut tree = MemoryTree::new();
        {
            let mut stmt = conn.prepare("SELECT idx, data FROM records ORDER BY idx")?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let idx = to_u64(row.get(0)?)?;
                let data: Vec<u8> = row.get(1)?;
                if idx != tree.size() {
                    return Err(StoreError::Corrupt(format!(
                        "record {} is missing (next stored record is {idx})",
                        tree.size()
                    )));
                }
                Record::decode(&data).map_err(|source| StoreError::Record { index: idx, source })?;
                tree.push(&data);
            }
        }
        let size = tree.size();
        // Stored nodes must be exactly the recomputed ones.
        let want = tree.stored_hashes();
        let stored_count: i64 = conn.query_row("SELECT COUNT(*) FROM nodes", [], |r| r.get(0))?;
        if to_u64(stored_count)? != want.len() as u64 {
            return Err(StoreError::Corrupt(format!(
                "{stored_count} tree nodes stored, {} expected for {size} records",
                want.len()
            )));
        }
        {
            let mut stmt = conn.prepare("SELECT idx, hash FROM nodes ORDER BY idx")?;
            let mut rows = stmt.query([])?;
            let mut i = 0usize;
            while let Some(row) = rows.next()? {
                let idx = to_u64(row.get(0)?)?;
                let blob: Vec<u8> = row.get(1)?;
                if idx != i as u64 || to_digest(&blob) != want.get(i).copied() {
                    return Err(StoreError::Corrupt(format!(
                        "tree node {idx} does not match the node recomputed from the records"
                    )));
                }
                i += 1;
            }
        }
        // Every checkpoint row must match the recomputed root at its size.
        let mut latest_signed: Option<SignedCheckpoint> = None;
        let mut max_size = 0u64;
        let mut unsigned: Vec<u64> = Vec::new();
        {
            let mut stmt = conn.prepare("SELECT size, root, note FROM checkpoints ORDER BY size")?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let cp_size = to_u64(row.get(0)?)?;
                let root_blob: Vec<u8> = row.get(1)?;
                let note: Option<Vec<u8>> = row.get(2)?;
                if cp_size > size {
                    return Err(StoreError::Corrupt(format!(
                        "checkpoint of size {cp_size} but only {size} records are stored"
                    )));
                }
                let computed = tree.root(cp_size)?;
                let stored_root = to_digest(&root_blob)
                    .ok_or_else(|| StoreError::Corrupt(format!("checkpoint {cp_size} root is not 32 bytes")))?;
                if stored_root != computed {
                    return Err(StoreError::RootMismatch {
                        size: cp_size,
                        signed: stored_root,
                        computed,
                    });
                }
                match note {
                    Some(note) => {
                        let sc = SignedCheckpoint::parse(&note)?;
                        verifier.verify(&sc)?;
                        if sc.checkpoint.size != cp_size || sc.checkpoint.root != computed {
                            return Err(StoreError::RootMismatch {
                                size: sc.checkpoint.size,
                                signed: sc.checkpoint.root,
                                computed,
                            });
                        }
                        latest_signed = Some(sc);
                    }
                    None => unsigned.push(cp_size),
                }
                max_size = cp_size;
            }
        }
        if max_size != size {
            return Err(StoreError::Corrupt(format!(
                "{size} records stored but the newest checkpoint covers {max_size}"
            )));
        }
        // Rows left unsigned by a crash after their commit: their records are durable, sign now.
        for cp_size in unsigned {
            let Some(signer) = signer else { break };
            let sc = signer.sign(cp_size, tree.root(cp_size)?)?;
            conn.execute(
                "UPDATE checkpoints SET note = ?1 WHERE size = ?2",
                params![sc.to_note()?, to_i64(cp_size)?],
            )?;
            tracing::warn!(
                size = cp_size,
                "signed a checkpoint left unsigned by an interrupted append"
            );
            if latest_signed.as_ref().is_none_or(|l| l.checkpoint.size < cp_size) {
                latest_signed = Some(sc);
            }
        }
        let latest = latest_signed.ok_or_else(|| StoreError::Corrupt("no checkpoint stored".into()))?;
        Ok((size, latest))
    }

    /// Number of records in the log.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The log origin.
    pub fn origin(&self) -> &str {
        &self.verifier.origin
    }

    /// The verifier for this log's checkpoints (origin + coordinator public key).
    pub fn log_verifier(&self) -> LogVerifier {
        self.verifier.clone()
    }

    /// Appends records and payloads durably; see [`Store::append_with_state`].
    pub fn append(
        &mut self,
        records: &[Record],
        payloads: &[(Digest, Vec<u8>)],
    ) -> Result<SignedCheckpoint, StoreError> {
        self.append_with_state(records, payloads, &[])
    }

    /// In ONE transaction: appends `records`, their tree nodes, `payloads` (content-addressed,
    /// each must hash to its digest), the `state` key-value updates and the new checkpoint row;
    /// then signs the checkpoint and stores the signature. Returns the signed checkpoint only once
    /// all of it is durable. With no records, only the state is written and the latest checkpoint
    /// is returned.
    pub fn append_with_state(
        &mut self,
        records: &[Record],
        payloads: &[(Digest, Vec<u8>)],
        state: &[(String, Vec<u8>)],
    ) -> Result<SignedCheckpoint, StoreError> {
        self.write(&[], records, payloads, state, &[])
    }

    /// [`Store::append_with_state`] of a whole [`Batch`], its cosignatures included, in ONE transaction
    /// (one fsync): the coordinator's group commit. Returns only once all of it is durable.
    pub fn append_batch(&mut self, batch: &Batch) -> Result<SignedCheckpoint, StoreError> {
        self.write(
            &batch.delete_state_prefixes,
            &batch.records,
            &batch.payloads,
            &batch.state,
            &batch.cosignatures,
        )
    }

    fn write(
        &mut self,
        delete_state_prefixes: &[String],
        records: &[Record],
        payloads: &[(Digest, Vec<u8>)],
        state: &[(String, Vec<u8>)],
        cosignatures: &[CheckedCosignature],
    ) -> Result<SignedCheckpoint, StoreError> {
        let encoded = records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                r.encode().map_err(|source| StoreError::Record {
                    index: self.size + i as u64,
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        for (claimed, bytes) in payloads {
            let actual = Digest::of(bytes);
            if actual != *claimed {
                return Err(StoreError::PayloadDigest {
                    claimed: *claimed,
                    actual,
                });
            }
        }
        let Some(signer) = self.signer.as_ref() else {
            return Err(StoreError::ReadOnly);
        };
        let new_size = self.size + encoded.len() as u64;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some(due) = &self.note_due {
            tx.execute(
                "UPDATE checkpoints SET note = ?1 WHERE size = ?2",
                params![due.to_note()?, to_i64(due.checkpoint.size)?],
            )?;
        }
        for prefix in delete_state_prefixes {
            tx.execute("DELETE FROM state WHERE substr(key, 1, length(?1)) = ?1", [prefix])?;
        }
        for (i, data) in encoded.iter().enumerate() {
            let idx = self.size + i as u64;
            tx.execute(
                "INSERT INTO records (idx, data) VALUES (?1, ?2)",
                params![to_i64(idx)?, data],
            )?;
            let hashes = tree::stored_hashes_for_leaf(idx, tree::leaf_hash(data), &DbNodes(&tx))?;
            let first = tree::stored_hash_index(0, idx);
            for (j, h) in hashes.iter().enumerate() {
                tx.execute(
                    "INSERT INTO nodes (idx, hash) VALUES (?1, ?2)",
                    params![to_i64(first + j as u64)?, h.0.to_vec()],
                )?;
            }
        }
        for (digest, bytes) in payloads {
            tx.execute(
                "INSERT OR IGNORE INTO payloads (digest, data) VALUES (?1, ?2)",
                params![digest.0.to_vec(), bytes],
            )?;
        }
        for (k, v) in state {
            tx.execute(
                "INSERT OR REPLACE INTO state (key, value) VALUES (?1, ?2)",
                params![k, v],
            )?;
        }
        for c in cosignatures {
            tx.execute(
                "INSERT OR REPLACE INTO cosignatures (size, witness, key_id, timestamp, sig) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    to_i64(c.size)?,
                    c.witness,
                    c.cosig.key_id.to_vec(),
                    to_i64(c.cosig.timestamp)?,
                    c.cosig.signature.to_vec()
                ],
            )?;
        }
        if encoded.is_empty() {
            tx.commit()?;
            self.note_due = None;
            return Ok(self.latest.clone());
        }
        let root = tree::root(new_size, &DbNodes(&tx))?;
        tx.execute(
            "INSERT INTO checkpoints (size, root, note) VALUES (?1, ?2, NULL)",
            params![to_i64(new_size)?, root.0.to_vec()],
        )?;
        tx.commit()?;
        self.size = new_size;
        // Signed only now that the records are durable; the signature is stored with the next transaction.
        let signed = signer.sign(new_size, root)?;
        self.latest = signed.clone();
        self.note_due = Some(signed.clone());
        Ok(signed)
    }

    /// Copies the WAL into the database file (SQLite's passive checkpoint; nothing waits for it). The
    /// coordinator calls it once a round's aggregate is out, so the copy never lengthens a round.
    pub fn checkpoint_wal(&mut self) -> Result<(), StoreError> {
        self.conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
        Ok(())
    }

    /// Whether a payload is stored under `digest`.
    pub fn has_payload(&self, digest: &Digest) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM payloads WHERE digest = ?1")?
            .exists([digest.0.to_vec()])?)
    }

    /// Writes one state key in its own transaction.
    pub fn put_state(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.append_with_state(&[], &[], &[(key.to_string(), value.to_vec())])
            .map(|_| ())
    }

    /// Deletes every state key that starts with `prefix`, in its own transaction; returns how many.
    pub fn delete_state_prefix(&mut self, prefix: &str) -> Result<usize, StoreError> {
        if self.signer.is_none() {
            return Err(StoreError::ReadOnly);
        }
        Ok(self
            .conn
            .execute("DELETE FROM state WHERE substr(key, 1, length(?1)) = ?1", [prefix])?)
    }

    /// Reads one state key.
    pub fn state(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT value FROM state WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    /// The newest signed checkpoint (log signature only).
    pub fn checkpoint_latest(&self) -> SignedCheckpoint {
        self.latest.clone()
    }

    /// The signed checkpoint of `size` with the log's signature only (as the aggregate of the round that
    /// reached it carried it), if one was signed at that size.
    pub fn log_checkpoint(&self, size: u64) -> Result<Option<SignedCheckpoint>, StoreError> {
        if size == self.latest.checkpoint.size {
            return Ok(Some(self.latest.clone()));
        }
        let note: Option<Option<Vec<u8>>> = self
            .conn
            .query_row("SELECT note FROM checkpoints WHERE size = ?1", [to_i64(size)?], |r| {
                r.get(0)
            })
            .optional()?;
        match note {
            Some(Some(note)) => Ok(Some(SignedCheckpoint::parse(&note)?)),
            _ => Ok(None),
        }
    }

    /// The signed checkpoint of `size` with every stored witness cosignature attached, if one was
    /// signed at that size.
    pub fn checkpoint(&self, size: u64) -> Result<Option<SignedCheckpoint>, StoreError> {
        let Some(mut sc) = self.log_checkpoint(size)? else {
            return Ok(None);
        };
        let mut stmt = self
            .conn
            .prepare("SELECT witness, key_id, timestamp, sig FROM cosignatures WHERE size = ?1 ORDER BY witness")?;
        let rows = stmt
            .query_map([to_i64(size)?], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        for (name, key_id, timestamp, sig) in rows {
            let bad = || StoreError::Corrupt(format!("cosignature row of {name} at size {size} is malformed"));
            let c = Cosignature {
                key_id: key_id.as_slice().try_into().map_err(|_| bad())?,
                timestamp: u64::try_from(timestamp).map_err(|_| bad())?,
                signature: sig.as_slice().try_into().map_err(|_| bad())?,
                name,
            };
            sc.add_cosignature(&c);
        }
        Ok(Some(sc))
    }

    /// Sizes of every signed checkpoint, ascending.
    pub fn checkpoint_sizes(&self) -> Result<Vec<u64>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT size FROM checkpoints WHERE note IS NOT NULL ORDER BY size")?;
        let sizes = stmt
            .query_map([], |r| r.get::<_, i64>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        let mut sizes: Vec<u64> = sizes.into_iter().map(to_u64).collect::<Result<_, _>>()?;
        if let Some(due) = &self.note_due {
            if sizes.last().is_none_or(|&s| s < due.checkpoint.size) {
                sizes.push(due.checkpoint.size);
            }
        }
        Ok(sizes)
    }

    /// Root hash of the first `size` records.
    pub fn root(&self, size: u64) -> Result<Digest, StoreError> {
        self.check_size(size)?;
        Ok(tree::root(size, &DbNodes(&self.conn))?)
    }

    /// RFC 9162 consistency proof from `old_size` to `new_size`.
    pub fn consistency_proof(&self, old_size: u64, new_size: u64) -> Result<Vec<Digest>, StoreError> {
        self.check_size(new_size)?;
        Ok(tree::prove_consistency(old_size, new_size, &DbNodes(&self.conn))?)
    }

    /// RFC 9162 inclusion proof of record `index` in the tree of `size`.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Digest>, StoreError> {
        self.check_size(size)?;
        Ok(tree::prove_inclusion(index, size, &DbNodes(&self.conn))?)
    }

    fn check_size(&self, size: u64) -> Result<(), StoreError> {
        if size > self.size {
            return Err(StoreError::OutOfRange(format!(
                "size {size} exceeds the log's {}",
                self.size
            )));
        }
        Ok(())
    }

    /// Verifies `cosig` from `witness` on the signed checkpoint of `size` and stores it
    /// (replacing that witness's earlier cosignature of the same size), in its own transaction.
    pub fn add_cosignature(&mut self, size: u64, witness: &WitnessKey, cosig: &Cosignature) -> Result<(), StoreError> {
        let checked = self.check_cosignature(size, witness, cosig)?;
        self.append_batch(&Batch {
            cosignatures: vec![checked],
            ..Batch::default()
        })
        .map(|_| ())
    }

    /// Verifies `cosig` from `witness` on the signed checkpoint of `size`, for a [`Batch`] to store.
    pub fn check_cosignature(
        &self,
        size: u64,
        witness: &WitnessKey,
        cosig: &Cosignature,
    ) -> Result<CheckedCosignature, StoreError> {
        let sc = self
            .log_checkpoint(size)?
            .ok_or_else(|| StoreError::OutOfRange(format!("no signed checkpoint of size {size}")))?;
        if self.signer.is_none() {
            return Err(StoreError::ReadOnly);
        }
        witness.verify(&sc.checkpoint, cosig)?;
        Ok(CheckedCosignature {
            size,
            witness: witness.name.clone(),
            cosig: cosig.clone(),
        })
    }

    /// Decoded records in `range` (clamped to the log).
    pub fn records(&self, range: Range<u64>) -> Result<Vec<Record>, StoreError> {
        self.records_raw(range.clone())?
            .into_iter()
            .zip(range)
            .map(|(b, index)| Record::decode(&b).map_err(|source| StoreError::Record { index, source }))
            .collect()
    }

    /// Canonical record bytes in `range` (clamped to the log), for export.
    pub fn records_raw(&self, range: Range<u64>) -> Result<Vec<Vec<u8>>, StoreError> {
        let end = range.end.min(self.size);
        let mut stmt = self
            .conn
            .prepare("SELECT data FROM records WHERE idx >= ?1 AND idx < ?2 ORDER BY idx")?;
        let rows = stmt
            .query_map(params![to_i64(range.start)?, to_i64(end)?], |r| r.get::<_, Vec<u8>>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// A stored payload by digest.
    pub fn payload(&self, digest: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT data FROM payloads WHERE digest = ?1",
                [digest.0.to_vec()],
                |r| r.get(0),
            )
            .optional()?)
    }
}

impl Drop for Store {
    /// Stores a signature still waiting for the next transaction (best effort: [`Store::open`] signs the
    /// checkpoint again if this fails).
    fn drop(&mut self) {
        if let Some(due) = self.note_due.take() {
            if let (Ok(note), Ok(size)) = (due.to_note(), to_i64(due.checkpoint.size)) {
                let _ = self
                    .conn
                    .execute("UPDATE checkpoints SET note = ?1 WHERE size = ?2", params![note, size]);
            }
        }
    }
}

#[cfg(test)]
mod tests;
