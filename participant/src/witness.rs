//! The participant as a witness of the coordinator's update log: it keeps the last checkpoint it
//! cosigned (in a file in its work dir), demands a consistency proof for every larger one, and
//! cosigns (c2sp.org/tlog-cosignature) only if the log only grew. Two different roots for the same
//! size, or a larger checkpoint that cannot be proven consistent, are kept as evidence files and
//! raise an alarm (an error and `tracing::error!`).
//!
//! Pure apart from its own small files: no sockets, no clock (the caller passes `now`).

use ed25519_dalek::SigningKey;
use fedistill_shared::files::{replace, Durability};
use fedistill_shared::ledger::note::check_key_name;
use fedistill_shared::ledger::tree::verify_consistency;
use fedistill_shared::ledger::{Cosignature, Digest, LogVerifier, NoteError, ProofError, SignedCheckpoint, WitnessKey};
use fedistill_shared::wire::messages::{Cosignature as WireCosignature, ToCoordinator};
use std::path::{Path, PathBuf};

/// File (in the work dir) holding the last checkpoint this witness cosigned, as a signed note.
pub const STATE_FILE: &str = "witness-checkpoint.note";
/// Directory (in the work dir) where evidence of coordinator misbehaviour is written.
pub const EVIDENCE_DIR: &str = "witness-evidence";

/// Why the witness refused to cosign.
#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    /// Reading or writing the witness's own files failed.
    #[error("witness file {path}: {source}")]
    Io {
        /// File involved.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The stored last checkpoint is unreadable or not signed by the log key.
    #[error("witness state {path} is not a valid checkpoint of this log: {reason}")]
    State {
        /// State file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The offered checkpoint is not a valid checkpoint of the trusted log.
    #[error("offered checkpoint rejected: {0}")]
    Note(#[from] NoteError),
    /// The offered checkpoint is smaller than one already cosigned (stale or replayed).
    #[error("offered checkpoint of size {offered} is older than the size {seen} already witnessed")]
    Stale {
        /// Size already cosigned.
        seen: u64,
        /// Size offered.
        offered: u64,
    },
    /// ALARM: two signed checkpoints of the same size with different roots.
    #[error("ALARM: the log forked at size {size}: two signed roots; evidence in {evidence:?}")]
    Fork {
        /// Tree size.
        size: u64,
        /// Both signed notes, as written.
        evidence: Vec<PathBuf>,
    },
    /// ALARM: a larger checkpoint that the supplied proof does not show to extend the last one.
    #[error(
        "ALARM: checkpoint {new_size} is not proven consistent with {old_size} ({reason}); evidence in {evidence:?}"
    )]
    Inconsistent {
        /// Size already cosigned.
        old_size: u64,
        /// Size offered.
        new_size: u64,
        /// Why the proof failed.
        reason: ProofError,
        /// Both signed notes, as written.
        evidence: Vec<PathBuf>,
    },
}

/// A participant's witness state for one log.
pub struct Witness {
    name: String,
    key: SigningKey,
    log: LogVerifier,
    dir: PathBuf,
    last: Option<SignedCheckpoint>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WitnessError + '_ {
    move |source| WitnessError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` durably: its spare fsync'd, the two names exchanged, the directory fsync'd
/// (`fedistill_shared::files`; no inode allocated per checkpoint).
fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), WitnessError> {
    replace(path, bytes, Durability::Durable).map_err(io(path))
}

/// The `Cosign` message that carries `cosig` on a checkpoint of `size` to the coordinator.
pub fn cosign_message(size: u64, cosig: &Cosignature) -> ToCoordinator {
    ToCoordinator::Cosign(WireCosignature {
        size,
        name: cosig.name.clone(),
        key_id: cosig.key_id,
        timestamp: cosig.timestamp,
        signature: cosig.signature.to_vec(),
    })
}

impl Witness {
    /// Opens the witness state in `work_dir` (creating nothing until the first cosignature).
    /// `name` is the witness key name (as in the auditor's trust file), `key` its ed25519 key,
    /// `log` the coordinator's origin and public key.
    pub fn open(work_dir: &Path, name: &str, key: SigningKey, log: LogVerifier) -> Result<Witness, WitnessError> {
        check_key_name(name)?;
        let path = work_dir.join(STATE_FILE);
        let last = match std::fs::read(&path) {
            Ok(bytes) => {
                let bad = |reason: String| WitnessError::State {
                    path: path.clone(),
                    reason,
                };
                let sc = SignedCheckpoint::parse(&bytes).map_err(|e| bad(e.to_string()))?;
                log.verify(&sc).map_err(|e| bad(e.to_string()))?;
                Some(sc)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(WitnessError::Io { path, source: e }),
        };
        Ok(Witness {
            name: name.to_string(),
            key,
            log,
            dir: work_dir.to_path_buf(),
            last,
        })
    }

    /// The consistency-proof request to send before cosigning a checkpoint of `new_size`: from the last
    /// checkpoint cosigned, when the log grew since; `None` for the first checkpoint or no growth.
    pub fn proof_request(&self, new_size: u64) -> Option<ToCoordinator> {
        let old = self.last().map(|c| c.checkpoint.size).unwrap_or(0);
        (old > 0 && new_size > old).then_some(ToCoordinator::ProofRequest {
            old_size: old,
            new_size,
        })
    }

    /// The last checkpoint cosigned (log signature only).
    pub fn last(&self) -> Option<&SignedCheckpoint> {
        self.last.as_ref()
    }

    /// This witness's public identity, for trust files and the coordinator's roster.
    pub fn witness_key(&self) -> WitnessKey {
        WitnessKey {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// Checks `offered` (must be signed by the log) against the last cosigned checkpoint with
    /// `proof` (RFC 9162 consistency proof from the last size to the offered size; empty for the
    /// first checkpoint or the same size) and cosigns it at `now_unix` if the log only grew.
    pub fn handle_checkpoint(
        &mut self,
        offered: &SignedCheckpoint,
        proof: &[Digest],
        now_unix: u64,
    ) -> Result<Cosignature, WitnessError> {
        self.log.verify(offered)?;
        let offered = offered.without_cosignatures();
        if let Some(last) = &self.last {
            let (old, new) = (&last.checkpoint, &offered.checkpoint);
            if new.size < old.size {
                return Err(WitnessError::Stale {
                    seen: old.size,
                    offered: new.size,
                });
            }
            if new.size == old.size && new.root != old.root {
                let evidence = self.keep_evidence("fork", last, &offered)?;
                tracing::error!(
                    size = new.size,
                    ?evidence,
                    "ALARM: coordinator log forked: two signed roots for one size"
                );
                return Err(WitnessError::Fork {
                    size: new.size,
                    evidence,
                });
            }
            if new.size > old.size {
                if let Err(reason) = verify_consistency(old.size, old.root, new.size, new.root, proof) {
                    let evidence = self.keep_evidence("inconsistent", last, &offered)?;
                    tracing::error!(
                        old_size = old.size,
                        new_size = new.size,
                        %reason,
                        ?evidence,
                        "ALARM: coordinator log did not prove it only grew"
                    );
                    return Err(WitnessError::Inconsistent {
                        old_size: old.size,
                        new_size: new.size,
                        reason,
                        evidence,
                    });
                }
            }
        }
        let cosig = Cosignature::sign(&offered.checkpoint, &self.name, &self.key, now_unix)?;
        if self.last.as_ref().map(|l| l.checkpoint.size) != Some(offered.checkpoint.size) {
            write_durably(&self.dir.join(STATE_FILE), &offered.to_note()?)?;
            self.last = Some(offered);
        }
        Ok(cosig)
    }

    fn keep_evidence(
        &self,
        what: &str,
        a: &SignedCheckpoint,
        b: &SignedCheckpoint,
    ) -> Result<Vec<PathBuf>, WitnessError> {
        let dir = self.dir.join(EVIDENCE_DIR);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let mut out = Vec::new();
        for sc in [a, b] {
            let path = dir.join(format!(
                "{what}-{}-{}.note",
                sc.checkpoint.size,
                &sc.checkpoint.root.to_hex()[..16]
            ));
            write_durably(&path, &sc.to_note()?)?;
            out.push(path);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedistill_shared::ledger::{LogSigner, MemoryTree};

    const ORIGIN: &str = "fedistill.test/fed-1";

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    struct Log {
        signer: LogSigner,
        tree: MemoryTree,
    }

    impl Log {
        fn new() -> Log {
            Log {
                signer: LogSigner::new(ORIGIN, key(1)).expect("name"),
                tree: MemoryTree::new(),
            }
        }
        fn grow(&mut self, n: u32) -> SignedCheckpoint {
            for _ in 0..n {
                let i = self.tree.size() as u32;
                self.tree.push(&i.to_be_bytes());
            }
            let size = self.tree.size();
            self.signer
                .sign(size, self.tree.root(size).expect("root"))
                .expect("sign")
        }
    }

    fn witness(dir: &Path) -> Witness {
        Witness::open(dir, "w-bank-a", key(7), Log::new().signer.verifier()).expect("open")
    }

    #[test]
    fn cosigns_a_growing_log_and_remembers_across_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = Log::new();
        let mut w = witness(dir.path());
        let cp3 = log.grow(3);
        let c = w.handle_checkpoint(&cp3, &[], 100).expect("first checkpoint");
        w.witness_key()
            .verify(&cp3.checkpoint, &c)
            .expect("cosignature verifies");
        let cp7 = log.grow(4);
        let proof = log.tree.consistency_proof(3, 7).expect("proof");
        w.handle_checkpoint(&cp7, &proof, 101).expect("log grew");
        // Same checkpoint again is fine (idempotent).
        w.handle_checkpoint(&cp7, &[], 102).expect("same size, same root");
        drop(w);
        let w = witness(dir.path());
        assert_eq!(w.last(), Some(&cp7));
    }

    #[test]
    fn a_fork_keeps_both_checkpoints_as_evidence_and_refuses() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut honest = Log::new();
        let mut w = witness(dir.path());
        let cp = honest.grow(4);
        w.handle_checkpoint(&cp, &[], 1).expect("first");
        let mut other = Log::new();
        other.tree.push(b"something else");
        let forked = other.grow(3);
        let err = w.handle_checkpoint(&forked, &[], 2).expect_err("fork");
        let WitnessError::Fork { size: 4, evidence } = err else {
            panic!("expected a fork, got {err}")
        };
        assert_eq!(evidence.len(), 2);
        let kept: Vec<SignedCheckpoint> = evidence
            .iter()
            .map(|p| SignedCheckpoint::parse(&std::fs::read(p).expect("evidence file")).expect("note"))
            .collect();
        assert_eq!(kept[0], cp);
        assert_eq!(kept[1], forked);
        assert_eq!(w.last(), Some(&cp), "state unchanged");
    }

    #[test]
    fn a_rewritten_history_fails_the_consistency_proof() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = Log::new();
        let mut w = witness(dir.path());
        w.handle_checkpoint(&log.grow(3), &[], 1).expect("first");
        let mut rewritten = Log::new();
        rewritten.tree.push(b"rewritten");
        let cp = rewritten.grow(5);
        let proof = rewritten.tree.consistency_proof(3, 6).expect("proof");
        let err = w.handle_checkpoint(&cp, &proof, 2).expect_err("inconsistent");
        assert!(
            matches!(
                err,
                WitnessError::Inconsistent {
                    old_size: 3,
                    new_size: 6,
                    ..
                }
            ),
            "{err}"
        );
        // A missing proof is refused the same way.
        let err = w.handle_checkpoint(&log.grow(3), &[], 3).expect_err("no proof");
        assert!(matches!(err, WitnessError::Inconsistent { .. }), "{err}");
    }

    #[test]
    fn stale_foreign_and_unsigned_checkpoints_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = Log::new();
        let mut w = witness(dir.path());
        let cp2 = log.grow(2);
        let cp5 = log.grow(3);
        w.handle_checkpoint(&cp5, &[], 1).expect("first");
        assert!(matches!(
            w.handle_checkpoint(&cp2, &[], 2),
            Err(WitnessError::Stale { seen: 5, offered: 2 })
        ));
        let foreign = LogSigner::new(ORIGIN, key(2))
            .expect("name")
            .sign(6, Digest::of(b"x"))
            .expect("sign");
        assert!(matches!(
            w.handle_checkpoint(&foreign, &[], 3),
            Err(WitnessError::Note(_))
        ));
    }

    #[test]
    fn a_corrupt_state_file_refuses_to_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(STATE_FILE), b"garbage").expect("write");
        let err = Witness::open(dir.path(), "w", key(7), Log::new().signer.verifier())
            .err()
            .expect("refuses");
        assert!(matches!(err, WitnessError::State { .. }), "{err}");
    }
}
