//! The round protocol's messages: what participants and the coordinator say to each other.
//!
//! Participant-to-coordinator messages travel as one frame on a participant-opened bidirectional stream and
//! are answered with one [`Reply`] frame on the same stream. Coordinator-to-participant pushes travel as one
//! frame on a coordinator-opened unidirectional stream. Every state-changing message is a [`Signed`]
//! envelope; the TLS identity (roster entry) says who is connected, the signature says who said what.
//! Layouts and rules are in docs/protocol.md ("Round messages").

use serde::{Deserialize, Serialize};

use crate::crypto::{Digest, ParticipantId, RoundId, Signed, SignedMessage};
use crate::protocol::{AggregationRule, Encoding};
use crate::wire::frame::FrameKind;

/// Frame kind of a [`ToCoordinator`] message.
pub const KIND_TO_COORDINATOR: FrameKind = FrameKind(1);
/// Frame kind of a [`Reply`].
pub const KIND_REPLY: FrameKind = FrameKind(2);
/// Frame kind of a [`ToParticipant`] push.
pub const KIND_TO_PARTICIPANT: FrameKind = FrameKind(3);

/// The coordinator opens a round: which public samples to label and under which rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundOpen {
    /// The round (1-based).
    pub round: RoundId,
    /// Rounds the federation runs in total (for temperature schedules).
    pub total_rounds: u64,
    /// Digest of the whole public transfer set every node must hold.
    pub public_digest: Digest,
    /// Ids (positions in the public set) of the samples to label this round.
    pub sample_ids: Vec<u64>,
    /// Digest of `sample_ids` (see [`sample_ids_digest`]).
    pub sample_ids_digest: Digest,
    /// Temperature at which teachers soften their logits.
    pub temperature: f32,
    /// How contributions will be combined.
    pub rule: AggregationRule,
    /// Collection deadline, milliseconds after the round opened.
    pub deadline_ms: u64,
    /// Minimum number of contributions for the round to aggregate.
    pub quorum: u32,
    /// Number of classes.
    pub classes: u32,
}

impl SignedMessage for RoundOpen {
    const DOMAIN: &'static str = "fedistill/round-open";
}

/// A participant's soft labels for one round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SoftLabels {
    /// The round these labels answer.
    pub round: RoundId,
    /// The public-set digest the participant holds.
    pub public_digest: Digest,
    /// Digest of the sample ids labelled (must equal the round's).
    pub sample_ids_digest: Digest,
    /// Payload encoding.
    pub encoding: Encoding,
    /// Rows in the payload.
    pub rows: u32,
    /// Classes per row.
    pub classes: u32,
    /// The participant's private training-set size (used by the sample-weighted rule).
    pub samples: u64,
    /// Encoded probabilities (see `protocol::softlabels`).
    #[serde(with = "crate::wire::frame::bytes")]
    pub payload: Vec<u8>,
}

impl SignedMessage for SoftLabels {
    const DOMAIN: &'static str = "fedistill/soft-labels";
}

/// The coordinator's consensus for a round, with the log checkpoint that records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AggregateLabels {
    /// The round.
    pub round: RoundId,
    /// The rule applied.
    pub rule: AggregationRule,
    /// Participants whose contributions were aggregated, in id order.
    pub contributors: Vec<ParticipantId>,
    /// Participants expected but absent (deadline passed).
    pub absent: Vec<ParticipantId>,
    /// Rows (= sample ids of the round).
    pub rows: u32,
    /// Classes per row.
    pub classes: u32,
    /// How `probabilities` is packed (the coordinator's `aggregate_encoding`; `f32` is exact).
    pub encoding: Encoding,
    /// The consensus probabilities in `encoding` (for `f32`: the canonical little-endian bytes).
    #[serde(with = "crate::wire::frame::bytes")]
    pub probabilities: Vec<u8>,
    /// SHA-256 of the canonical f32 little-endian aggregate, as the update log records it. With the `f32`
    /// encoding it is the digest of `probabilities`; with a lossy encoding `probabilities` is
    /// `softlabels::encode` of exactly those canonical values, which an auditor can recompute.
    pub aggregate_digest: Digest,
    /// The signed checkpoint (C2SP signed note text) of the log after this round's records.
    pub checkpoint: String,
}

impl SignedMessage for AggregateLabels {
    const DOMAIN: &'static str = "fedistill/aggregate";
}

/// A participant's signed account of what it did with a round's aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundReport {
    /// The round.
    pub round: RoundId,
    /// Metrics of the candidate student, as (name, value) pairs in a fixed order.
    pub metrics: Vec<(String, f64)>,
    /// Digest of the student the participant now serves.
    pub student_digest: Digest,
    /// Whether the degradation guard accepted the candidate.
    pub guard_accepted: bool,
    /// The guard's reason, for the log.
    pub guard_reason: String,
}

impl SignedMessage for RoundReport {
    const DOMAIN: &'static str = "fedistill/round-report";
}

/// Reason code of an [`Abstain`] whose sender's differential-privacy budget would be exceeded by the round.
pub const ABSTAIN_BUDGET_EXHAUSTED: &str = "budget_exhausted";

/// A participant's signed statement that it does not contribute to a round, so the coordinator stops
/// waiting for it. The coordinator logs it (`Record::Abstention`) with the figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Abstain {
    /// The round the participant sits out.
    pub round: RoundId,
    /// Reason code: [`ABSTAIN_BUDGET_EXHAUSTED`] (the only one this build sends).
    pub reason: String,
    /// The figures behind it as (name, value) pairs with unique names; for `budget_exhausted`:
    /// `epsilon_budget`, `epsilon_spent` and `epsilon_would_reach`.
    pub figures: Vec<(String, f64)>,
}

impl SignedMessage for Abstain {
    const DOMAIN: &'static str = "fedistill/abstain";
}

/// A witness cosignature (C2SP tlog-cosignature) on a checkpoint the participant checked grew
/// append-only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cosignature {
    /// Tree size of the cosigned checkpoint.
    pub size: u64,
    /// Witness key name.
    pub name: String,
    /// Witness key id.
    pub key_id: [u8; 4],
    /// Seconds since the Unix epoch when the witness signed.
    pub timestamp: u64,
    /// The ed25519 signature (64 bytes).
    #[serde(with = "crate::wire::frame::bytes")]
    pub signature: Vec<u8>,
}

/// Everything a participant may send.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ToCoordinator {
    /// First message on a connection: protocol version and the last checkpoint size the participant saw.
    Hello {
        /// Protocol version the participant speaks.
        version: u16,
        /// Size of the last checkpoint the participant witnessed (0 if none).
        last_checkpoint_size: u64,
    },
    /// Soft labels for the open round.
    SoftLabels(Signed<SoftLabels>),
    /// The participant's report for a round.
    Report(Signed<RoundReport>),
    /// Ask for a consistency proof between two log sizes.
    ProofRequest {
        /// The size the participant trusts.
        old_size: u64,
        /// The size it is asked to accept.
        new_size: u64,
    },
    /// A witness cosignature.
    Cosign(Cosignature),
    /// The participant does not contribute to the open round (appended last: older variants keep their tags).
    Abstain(Signed<Abstain>),
}

/// The coordinator's answer on the same stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Reply {
    /// Accepted and durably recorded.
    Ack,
    /// The hello was accepted; the coordinator's state for this participant.
    Welcome {
        /// Current round (0 before the first).
        round: RoundId,
        /// Whether the federation has finished all its rounds.
        finished: bool,
    },
    /// Refused, with a machine-readable reason code and a human-readable message.
    Reject {
        /// Stable code (e.g. `late`, `duplicate`, `wrong_round`, `bad_payload`).
        code: String,
        /// What was wrong.
        message: String,
    },
    /// A consistency proof (RFC 6962 node hashes).
    Proof {
        /// Hashes of the proof, in order.
        hashes: Vec<Digest>,
    },
}

/// Everything the coordinator pushes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ToParticipant {
    /// A round opened.
    Open(Signed<RoundOpen>),
    /// A round's aggregate is ready.
    Aggregate(Signed<AggregateLabels>),
    /// The federation ran all its rounds.
    Finished {
        /// The last round.
        rounds: u64,
        /// The final signed checkpoint (C2SP signed note), for witnesses to cosign.
        checkpoint: String,
    },
}

/// Digest of a list of sample ids: SHA-256 over `b"fedistill/sample-ids/v1"` then each id as u64 BE.
pub fn sample_ids_digest(ids: &[u64]) -> Digest {
    let mut bytes = Vec::with_capacity(23 + ids.len() * 8);
    bytes.extend_from_slice(b"fedistill/sample-ids/v1");
    for id in ids {
        bytes.extend_from_slice(&id.to_be_bytes());
    }
    Digest::of(&bytes)
}

/// Protocol version spoken by this build.
pub const PROTOCOL_VERSION: u16 = 1;
