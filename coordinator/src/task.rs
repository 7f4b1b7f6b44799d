//! The federation's task when the coordinator runs from a task card (`[task]` in coordinator.toml): the
//! card, checked against the public transfer set file it names, signed once and served to participants
//! (`GetTask`), and the public file served in bounded chunks (`GetPublic`), straight from the connection
//! tasks (the core loop never reads the file). docs/data.md "Task card and own files", docs/protocol.md.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use fedistill_shared::crypto::{Digest, FederationId, RoundId, Signed, Signer, SigningIdentity};
use fedistill_shared::data::{read_public, TaskCard};
use fedistill_shared::ledger::Record;
use fedistill_shared::wire::messages::{RejectCode, Reply, TaskAnnouncement, MAX_PUBLIC_CHUNK};

/// The task card and the public file, verified against each other.
pub struct TaskArtifact {
    card: TaskCard,
    digest: Digest,
    public_path: PathBuf,
    public_bytes: u64,
    public_sha256: Digest,
    announcement: Signed<TaskAnnouncement>,
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
        let (public_sha256, public_bytes) = sha256_file(public_path)?;
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
    /// an offset past the end is refused. Blocking (one positioned read).
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
        let read = std::fs::File::open(&self.public_path).and_then(|f| f.read_exact_at(&mut bytes, offset));
        match read {
            Ok(()) => Reply::PublicChunk {
                total: self.public_bytes,
                offset,
                bytes,
            },
            // The file changed or vanished under the coordinator: say so rather than serve other bytes.
            Err(e) => Reply::Reject {
                code: RejectCode::NoTask,
                message: format!("cannot read the public set: {e}"),
            },
        }
    }
}

/// SHA-256 and size of a file, streamed.
fn sha256_file(path: &Path) -> anyhow::Result<(Digest, u64)> {
    let (d, n) = fedistill_shared::data::sha256_file(path)?;
    Ok((Digest(d), n))
}
