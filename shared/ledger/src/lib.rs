//! The signed update log: canonical records, the RFC 6962 Merkle tree with its proofs, and C2SP
//! signed-note checkpoints with witness cosignatures.
//!
//! Everything here is pure logic: no files, no clock, no randomness. Callers (the coordinator's
//! store, the participant's witness, the auditor's bundle verifier) do the I/O and pass bytes and
//! timestamps in.
//!
//! - [`record`]: versioned canonical byte encoding of every log entry ([`Record`]).
//! - [`tree`]: leaf/node hashing, roots, inclusion and consistency proofs (via `tlog_tiles`).
//! - [`note`]: checkpoints in the C2SP signed-note format, signed by the coordinator's ed25519 key,
//!   and C2SP tlog-cosignature (`cosignature/v1`) witness cosignatures.

mod ids;
pub mod note;
pub mod record;
pub mod tree;

pub use ids::{Digest, DigestParseError, ParticipantId, RoundId};
pub use note::{
    Checkpoint, Cosignature, Cosigners, LogSigner, LogVerifier, NoteError, NoteSignature, SignedCheckpoint, Trust,
    WitnessKey,
};
pub use record::{
    EncodingName, GuardDecision, Metric, Record, RecordError, RecordKind, RosterAction, RuleName, MAX_NAME_LEN,
};
pub use tree::{MemoryTree, NodeSource, ProofError};
