//! The federation's task when the coordinator runs from a task card (`[task]` in coordinator.toml): the
//! card, checked against the public transfer set file it names, signed once and served to participants
//! (`GetTask`), and the public file served in bounded chunks (`GetPublic`), straight from the connection
//! tasks (the core loop never reads the file). The file is served only while it is still the one verified
//! at start: a file replaced or rewritten on disk (another size, modification time or inode) is hashed again,
//! and refused by name unless its SHA-256 is still the card's. docs/data.md "Task card and own files",
//! docs/protocol.md.

use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::Digest as _;
use tracing::{info, warn};

use fedistill_shared::crypto::{Digest, FederationId, RoundId, Signed, Signer, SigningIdentity};
use fedistill_shared::data::{read_public, TaskCard};
use fedistill_shared::ledger::Record;
use fedistill_shared::wire::messages::{RejectCode, Reply, TaskAnnouncement, MAX_PUBLIC_CHUNK};

/// What tells a file's versions apart without reading it: device, inode, size, modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Stamp {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
        }
    }
}

/// The task card and the public file, verified against each other.
pub struct TaskArtifact {
    card: TaskCard,
    digest: Digest,
    public_path: PathBuf,
    public_bytes: u64,
    public_sha256: Digest,
    announcement: Signed<TaskAnnouncement>,
    /// The public file as last verified (its SHA-256 the card's).
    verified: Mutex<Stamp>,
    /// The public file as last found changed, with the refusal that names it (not hashed again while it
    /// stays so).
    changed: Mutex<Option<(Stamp, String)>>,
}

impl TaskArtifact {
    /// Loads `card_path`, checks that `public_path` is the file the card names (SHA-256, then every row
    /// readable against the card and as many as declared), and signs the announcement. Blocking.
    pub fn load(
        card_path: &Path,
        public_path: &Path,
        key: &SigningIdentity,
        federation: &FederationId,
    ) -> anyhow::Result<Self> {
        let card = TaskCard::load(card_path)?;
        let card_text = card.to_toml_string();
        let stamp = || -> anyhow::Result<Stamp> {
            let m = std::fs::metadata(public_path)
                .map_err(|e| anyhow::anyhow!("{}: cannot read the public set: {e}", public_path.display()))?;
            Ok(Stamp::of(&m))
        };
        let before = stamp()?;
        let (public_sha256, public_bytes) = sha256_file(public_path)?;
        anyhow::ensure!(
            stamp()? == before,
            "{}: the public set changed on disk while the coordinator was hashing it: start again once it is \
             in place",
            public_path.display()
        );
        let declared = card.public.sha256.to_ascii_lowercase();
        anyhow::ensure!(
            hex::encode(public_sha256.0) == declared,
            "{}: sha256 {} differs from the task card's public sha256 {declared} ({}): the card names another \
             public file",
            public_path.display(),
            hex::encode(public_sha256.0),
            card_path.display()
        );
        let (public, _) = read_public(public_path, &card)?;
        anyhow::ensure!(
            public.n as u64 == card.public.rows,
            "{}: {} rows, the task card declares {}",
            public_path.display(),
            public.n,
            card.public.rows
        );
        let digest = Digest(card.digest());
        let body = TaskAnnouncement {
            card: card_text,
            card_digest: digest,
            public_sha256,
            public_bytes,
        };
        let announcement = Signed::sign(key, Signer::Coordinator, federation.clone(), RoundId(0), 0, &body)?;
        Ok(TaskArtifact {
            card,
            digest,
            public_path: public_path.to_path_buf(),
            public_bytes,
            public_sha256,
            announcement,
            verified: Mutex::new(before),
            changed: Mutex::new(None),
        })
    }

    /// The card.
    pub fn card(&self) -> &TaskCard {
        &self.card
    }

    /// Digest of the public transfer set file (what every round opening announces).
    pub fn public_digest(&self) -> Digest {
        self.public_sha256
    }

    /// The log record declaring the task.
    pub fn record(&self) -> Record {
        Record::TaskDeclared {
            name: self.card.name.clone(),
            card_digest: self.digest,
            public_digest: self.public_sha256,
            public_rows: self.card.public.rows,
        }
    }

    /// The reply to `GetTask`.
    pub fn task_reply(&self) -> Reply {
        Reply::Task(self.announcement.clone())
    }

    /// The reply to `GetPublic { offset, max_len }`: at most [`MAX_PUBLIC_CHUNK`] bytes; empty at the end;
    /// an offset past the end is refused, and so is every request while the file on disk is not the one
    /// the card names (checked before and after the read). Blocking (one
    /// positioned read; the whole file is hashed again after it changed on disk).
    pub fn chunk_reply(&self, offset: u64, max_len: u32) -> Reply {
        if offset > self.public_bytes {
            return Reply::Reject {
                code: RejectCode::BadRange,
                message: format!(
                    "offset {offset} is past the end of the {}-byte public set",
                    self.public_bytes
                ),
            };
        }
        let len = (max_len.min(MAX_PUBLIC_CHUNK) as u64).min(self.public_bytes - offset) as usize;
        let mut bytes = vec![0u8; len];
        let read = self.read_at(&mut bytes, offset);
        match read {
            Ok(()) => Reply::PublicChunk {
                total: self.public_bytes,
                offset,
                bytes,
            },
            // The file changed or vanished under the coordinator: say so rather than serve other bytes.
            Err(message) => Reply::Reject {
                code: RejectCode::NoTask,
                message,
            },
        }
    }

    /// Fills `bytes` from `offset` of the public file, while it is still the verified one.
    fn read_at(&self, bytes: &mut [u8], offset: u64) -> Result<(), String> {
        let f = std::fs::File::open(&self.public_path).map_err(|e| self.unreadable(&e))?;
        self.still_verified(&f)?;
        f.read_exact_at(bytes, offset).map_err(|e| self.unreadable(&e))?;
        // A write during the read shows in the stamp.
        self.still_verified(&f)
    }

    fn unreadable(&self, e: &std::io::Error) -> String {
        format!("{}: cannot read the public set: {e}", self.public_path.display())
    }

    /// Whether the open public file `f` is still the one the card names: the same stamp as when last
    /// verified; otherwise it is hashed again, and served on if its SHA-256 is still the card's (touched,
    /// or copied back in place), refused naming the file if not.
    fn still_verified(&self, f: &std::fs::File) -> Result<(), String> {
        let now = Stamp::of(&f.metadata().map_err(|e| self.unreadable(&e))?);
        if now == *self.verified.lock().unwrap_or_else(|e| e.into_inner()) {
            return Ok(());
        }
        let mut changed = self.changed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((stamp, message)) = changed.as_ref() {
            if *stamp == now {
                return Err(message.clone());
            }
        }
        let (sha, len) = sha256_open(f).map_err(|e| self.unreadable(&e))?;
        if sha == self.public_sha256
            && len == self.public_bytes
            && Stamp::of(&f.metadata().map_err(|e| self.unreadable(&e))?) == now
        {
            info!(path = %self.public_path.display(), "the public set was touched on disk; its sha256 is still the task card's");
            *self.verified.lock().unwrap_or_else(|e| e.into_inner()) = now;
            *changed = None;
            return Ok(());
        }
        let message = format!(
            "{}: the public set changed on disk since the coordinator verified it against the task card (now {len} \
             bytes, sha256 {}; the card's is {} bytes, sha256 {}): it is not served; put the card's file back \
             (participants holding a verified copy are not affected)",
            self.public_path.display(),
            hex::encode(sha.0),
            self.public_bytes,
            hex::encode(self.public_sha256.0)
        );
        warn!(path = %self.public_path.display(), "{message}");
        *changed = Some((now, message.clone()));
        Err(message)
    }
}

/// SHA-256 and size of an open file, read from its start with positioned reads.
fn sha256_open(f: &std::fs::File) -> std::io::Result<(Digest, u64)> {
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    loop {
        let n = f.read_at(&mut buf, at)?;
        if n == 0 {
            return Ok((Digest(h.finalize().into()), at));
        }
        h.update(&buf[..n]);
        at += n as u64;
    }
}

/// SHA-256 and size of a file, streamed.
fn sha256_file(path: &Path) -> anyhow::Result<(Digest, u64)> {
    let (d, n) = fedistill_shared::data::sha256_file(path)?;
    Ok((Digest(d), n))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unlabelled `.ts` public set of `rows` rows of length 3, the `k`-th version.
    fn public(rows: usize, k: u32) -> Vec<u8> {
        let mut text = String::from("@problemName t\n@classLabel false\n@data\n");
        for i in 0..rows {
            text.push_str(&format!("{i},{k},{}\n", i * 2));
        }
        text.into_bytes()
    }

    /// Writes `public.ts` and a card naming `card_bytes` as its public set into `dir`.
    fn files(dir: &Path, public_bytes: &[u8], card_bytes: &[u8]) -> (PathBuf, PathBuf) {
        let (card, file) = (dir.join("task.toml"), dir.join("public.ts"));
        std::fs::write(&file, public_bytes).expect("public");
        std::fs::write(
            &card,
            format!(
                "name = \"t\"\nversion = 1\n[label]\nclasses = [\"a\", \"b\"]\n[sequence]\nchannels = 1\nlength = 3\n\
                 [public]\nsha256 = \"{}\"\nrows = 4\nformat = \"ts\"\n",
                Digest::of(card_bytes).to_hex()
            ),
        )
        .expect("card");
        (card, file)
    }

    fn load(card: &Path, file: &Path) -> anyhow::Result<TaskArtifact> {
        TaskArtifact::load(
            card,
            file,
            &SigningIdentity::generate().expect("key"),
            &FederationId::new("task-test").expect("id"),
        )
    }

    fn refusal(r: Reply) -> String {
        match r {
            Reply::Reject {
                code: RejectCode::NoTask,
                message,
            } => message,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn served(r: Reply) -> Vec<u8> {
        match r {
            Reply::PublicChunk { bytes, .. } => bytes,
            other => panic!("expected a chunk, got {other:?}"),
        }
    }

    #[test]
    fn the_coordinator_refuses_to_start_on_a_public_file_the_card_does_not_name() {
        let dir = tempfile::tempdir().expect("dir");
        let (card, file) = files(dir.path(), &public(4, 1), &public(4, 2));
        let err = format!("{:#}", load(&card, &file).err().expect("refused"));
        assert!(
            err.starts_with(&format!(
                "{}: sha256 {} differs from the task card's public sha256 {}",
                file.display(),
                Digest::of(&public(4, 1)).to_hex(),
                Digest::of(&public(4, 2)).to_hex()
            )) && err.contains("the card names another public file"),
            "{err}"
        );
        // The right file, but not as many rows as the card declares.
        let (card, file) = files(dir.path(), &public(5, 1), &public(5, 1));
        let err = format!("{:#}", load(&card, &file).err().expect("refused"));
        assert!(err.ends_with("5 rows, the task card declares 4"), "{err}");
    }

    /// Between rounds (or during a participant's download) the public file on disk is rewritten, grown,
    /// or replaced: the coordinator stops serving it, naming the file, and serves again once the card's
    /// bytes are back. A file only touched (same bytes) goes on being served.
    #[test]
    fn a_public_file_that_changes_on_disk_is_not_served() {
        let dir = tempfile::tempdir().expect("dir");
        let original = public(4, 1);
        let (card, file) = files(dir.path(), &original, &original);
        let task = load(&card, &file).expect("loads");
        assert_eq!(served(task.chunk_reply(0, 10)), original[..10]);
        // Touched: hashed again, still the card's, served.
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(&file)
            .and_then(|f| f.set_modified(later))
            .expect("touch");
        assert_eq!(served(task.chunk_reply(5, 10)), original[5..15]);
        // Rewritten in place with other bytes of the same size.
        let other = public(4, 7);
        assert_eq!(other.len(), original.len());
        std::fs::write(&file, &other).expect("rewrite");
        let message = refusal(task.chunk_reply(0, 10));
        let want = format!(
            "{}: the public set changed on disk since the coordinator verified it against the task card (now {} \
             bytes, sha256 {}; the card's is {} bytes, sha256 {}): it is not served",
            file.display(),
            other.len(),
            Digest::of(&other).to_hex(),
            original.len(),
            Digest::of(&original).to_hex()
        );
        assert!(message.starts_with(&want), "{message}");
        // Refused again without a change (from the remembered verdict), at any offset.
        assert_eq!(refusal(task.chunk_reply(20, 10)), message);
        // Grown.
        let mut grown = original.clone();
        grown.extend_from_slice(b"4,1,8\n");
        std::fs::write(&file, &grown).expect("grow");
        assert!(refusal(task.chunk_reply(0, 10)).contains(&format!("(now {} bytes", grown.len())));
        // The card's bytes back in place: served again.
        std::fs::write(&file, &original).expect("restore");
        assert_eq!(served(task.chunk_reply(0, 10)), original[..10]);
        // Replaced by another file renamed over it.
        let next = dir.path().join("next.ts");
        std::fs::write(&next, &other).expect("other");
        std::fs::rename(&next, &file).expect("rename");
        assert!(refusal(task.chunk_reply(0, 10)).starts_with(&format!("{}: the public set changed", file.display())));
        // Gone.
        std::fs::remove_file(&file).expect("remove");
        let gone = refusal(task.chunk_reply(0, 10));
        assert!(
            gone.starts_with(&format!("{}: cannot read the public set: ", file.display())),
            "{gone}"
        );
    }
}
