// Over 800 lines: the message types and their wire-compatibility tests (reject codes, abstention reasons,
// sample-id runs) read together.
//! The round protocol's messages: what participants and the coordinator say to each other.
//!
//! Participant-to-coordinator messages travel as one frame on a participant-opened bidirectional stream and
//! are answered with one [`Reply`] frame on the same stream. Coordinator-to-participant pushes travel as one
//! frame on a coordinator-opened unidirectional stream. Every state-changing message is a [`Signed`]
//! envelope; the TLS identity (roster entry) says who is connected, the signature says who said what.
//! Layouts and rules are in docs/protocol.md ("Round messages").

use serde::{Deserialize, Serialize};

use crate::crypto::{Digest, ParticipantId, RoundId, Signed, SignedMessage};
use crate::wire::enums::{AggregationRule, Encoding};
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
    /// Ids (positions in the public set) of the samples to label this round. On the wire as runs of
    /// consecutive ids (see [`sample_id_runs`]): a round's chunk of the public set costs a few bytes.
    #[serde(with = "sample_id_runs")]
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
    /// Secure aggregation's parameters when the round aggregates masked inputs (docs/protocol.md, "Secure
    /// aggregation"); `None` for a round in the clear.
    pub secure: Option<crate::wire::secagg::SecAggParams>,
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
    /// The differential-privacy budget the participant spent on this round, if it runs with DP and released
    /// labels for it. The coordinator logs it as `Record::PrivacySpend` after [`PrivacySpend::check`]; the
    /// same figures also appear in `metrics` (`dp_epsilon_round`, `dp_epsilon_total`, `dp_delta`) for people.
    pub privacy_spend: Option<PrivacySpend>,
}

impl SignedMessage for RoundReport {
    const DOMAIN: &'static str = "fedistill/round-report";
}

impl RoundReport {
    /// The guard's decision as the update log records it (`accept` or `reject: <reason>`).
    pub fn guard_decision(&self) -> crate::ledger::GuardDecision {
        crate::ledger::GuardDecision::from_report(self.guard_accepted, &self.guard_reason)
    }
}

/// A participant's differential-privacy spend for one round, in (epsilon, delta) (see docs/privacy.md).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PrivacySpend {
    /// Increase of the participant's cumulative epsilon caused by this round (cumulative after minus before).
    pub epsilon_round: f64,
    /// The participant's cumulative epsilon after this round.
    pub epsilon_total: f64,
    /// The delta both epsilons are stated for.
    pub delta: f64,
}

impl PrivacySpend {
    /// Refuses figures no accountant produces: every figure finite, both epsilons `>= 0`, `0 < delta < 1`.
    pub fn check(&self) -> Result<(), String> {
        for (name, v) in [
            ("epsilon_round", self.epsilon_round),
            ("epsilon_total", self.epsilon_total),
            ("delta", self.delta),
        ] {
            if !v.is_finite() {
                return Err(format!("privacy spend: {name} {v} is not finite"));
            }
        }
        if self.epsilon_round < 0.0 || self.epsilon_total < 0.0 {
            return Err(format!(
                "privacy spend: epsilon must be >= 0 (round {}, total {})",
                self.epsilon_round, self.epsilon_total
            ));
        }
        if !(self.delta > 0.0 && self.delta < 1.0) {
            return Err(format!("privacy spend: delta {} is outside (0, 1)", self.delta));
        }
        Ok(())
    }
}

/// Reason code of an [`Abstain`] whose sender's differential-privacy budget would be exceeded by the round
/// ([`AbstainReason::BudgetExhausted`]'s name).
pub const ABSTAIN_BUDGET_EXHAUSTED: &str = AbstainReason::BudgetExhausted.as_str();

/// Why a participant abstains from a round: a closed set of codes. On the wire (and in the update log's
/// `abstention` record, a string there) each is its stable snake_case name, the same bytes as the free
/// string the field was before the type existed. A name this build does not know does not decode: an
/// `Abstain` carrying it is refused as a malformed payload (`bad_payload`), so every abstention the log
/// holds has a reason an auditor can interpret (docs/protocol.md, "Abstain").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AbstainReason {
    /// The sender's differential-privacy budget would be exceeded by the round (`budget_exhausted`; figures
    /// `epsilon_budget`, `epsilon_spent`, `epsilon_would_reach`).
    BudgetExhausted,
}

impl AbstainReason {
    /// Every reason, in the order of their names.
    pub const ALL: [AbstainReason; 1] = [AbstainReason::BudgetExhausted];

    /// The stable name, as the wire and the log write it.
    pub const fn as_str(&self) -> &'static str {
        match self {
            AbstainReason::BudgetExhausted => "budget_exhausted",
        }
    }

    /// The reason with this name, or an error naming the ones this build knows.
    pub fn parse(name: &str) -> Result<AbstainReason, String> {
        Self::ALL.iter().copied().find(|r| r.as_str() == name).ok_or_else(|| {
            let known: Vec<&str> = Self::ALL.iter().map(|r| r.as_str()).collect();
            format!(
                "unknown abstention reason `{}` (this build knows {})",
                name.escape_default(),
                known.join(", ")
            )
        })
    }
}

impl std::fmt::Display for AbstainReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for AbstainReason {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for AbstainReason {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Serialize for AbstainReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for AbstainReason {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        AbstainReason::parse(&name).map_err(serde::de::Error::custom)
    }
}

/// A participant's signed statement that it does not contribute to a round, so the coordinator stops
/// waiting for it. The coordinator logs it (`Record::Abstention`) with the figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Abstain {
    /// The round the participant sits out.
    pub round: RoundId,
    /// Why (the only reason this build knows is [`AbstainReason::BudgetExhausted`]).
    pub reason: AbstainReason,
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
    /// Ask for the federation's signed task card (answered with [`Reply::Task`]).
    GetTask,
    /// Ask for `max_len` bytes of the public transfer set file from `offset` (answered with
    /// [`Reply::PublicChunk`]; at most [`MAX_PUBLIC_CHUNK`] bytes per reply).
    GetPublic {
        /// First byte wanted.
        offset: u64,
        /// Most bytes wanted.
        max_len: u32,
    },
    /// Secure aggregation: the participant's signed x25519 keys for the open round.
    SecAggKeys(Signed<crate::wire::secagg::SecAggKeys>),
    /// Secure aggregation: the participant's encrypted shares for its neighbours.
    SecAggShares(Signed<crate::wire::secagg::SecAggShares>),
    /// Secure aggregation: the shares the coordinator asked the participant to reveal.
    SecAggReveal(Signed<crate::wire::secagg::SecAggReveal>),
    /// Ask for the operator-signed roster (answered with [`Reply::Roster`]): a participant checks its peers'
    /// key adverts against it.
    GetRoster,
}

/// Most bytes of the public set one [`Reply::PublicChunk`] carries (well under every frame limit).
pub const MAX_PUBLIC_CHUNK: u32 = 1 << 20;

/// The federation's task, as the coordinator announces it: the card's text, its digest, and the public
/// transfer set file's SHA-256 and size. Signed by the coordinator (round 0), so a participant can keep
/// proof of what it was asked to learn; the same digest is the log's `task_declared` record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskAnnouncement {
    /// The card (TOML), exactly as the coordinator loaded it.
    pub card: String,
    /// The card's digest (`TaskCard::digest`).
    pub card_digest: Digest,
    /// SHA-256 of the public transfer set file.
    pub public_sha256: Digest,
    /// Size of the public transfer set file in bytes.
    pub public_bytes: u64,
}

impl SignedMessage for TaskAnnouncement {
    const DOMAIN: &'static str = "fedistill/task";
}

/// Why the coordinator refused a request: the stable code in [`Reply::Reject`], in the rejection metric
/// (`fedistill_coordinator_rejections_total{reason}`) and in logs. On the wire it is the code's name as a
/// string (the same bytes as before the type existed); a name this build does not know decodes as
/// [`RejectCode::Other`], so a newer coordinator's codes still reach an older participant's log.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RejectCode {
    /// The hello's protocol version is not spoken here.
    Version,
    /// The connection's participant has no signing key in the roster.
    UnknownParticipant,
    /// The envelope names another signer than the connection's participant.
    SignerMismatch,
    /// The envelope's signature does not verify.
    BadSignature,
    /// The envelope belongs to another federation.
    WrongFederation,
    /// The message belongs to another round.
    WrongRound,
    /// The sequence number was used already, or is implausibly far ahead.
    Replay,
    /// The message is malformed (shape, values, figures, metrics).
    BadPayload,
    /// The round is not collecting soft labels.
    NotCollecting,
    /// The collection deadline passed.
    Late,
    /// The participant already contributed to (or abstained from) the round.
    Duplicate,
    /// The soft labels are for another public transfer set.
    WrongPublicSet,
    /// The soft labels are for other samples than the round named.
    WrongSamples,
    /// The participant is quarantined.
    Quarantined,
    /// A consistency proof cannot be produced for the sizes asked.
    BadProofRequest,
    /// A witness cosignature is refused.
    BadCosignature,
    /// The frame is invalid or of an unexpected kind.
    BadFrame,
    /// The frame did not arrive within the stream deadline.
    Timeout,
    /// The stream ended before the frame was complete.
    Truncated,
    /// The frame needs more buffer than the memory budget can ever grant.
    TooLarge,
    /// Reading the stream failed.
    Stream,
    /// The coordinator failed (for example its store); retry.
    Internal,
    /// The coordinator runs no task card (a catalog federation), or cannot serve the public set.
    NoTask,
    /// A request for a byte range outside the public set.
    BadRange,
    /// Secure aggregation: the round was already unmasked with the shares that came first; these are not
    /// needed (not an error of the sender's).
    NotNeeded,
    /// A code this build does not know (from a newer peer).
    Other(String),
}

impl RejectCode {
    const NAMED: [RejectCode; 25] = [
        RejectCode::Version,
        RejectCode::UnknownParticipant,
        RejectCode::SignerMismatch,
        RejectCode::BadSignature,
        RejectCode::WrongFederation,
        RejectCode::WrongRound,
        RejectCode::Replay,
        RejectCode::BadPayload,
        RejectCode::NotCollecting,
        RejectCode::Late,
        RejectCode::Duplicate,
        RejectCode::WrongPublicSet,
        RejectCode::WrongSamples,
        RejectCode::Quarantined,
        RejectCode::BadProofRequest,
        RejectCode::BadCosignature,
        RejectCode::BadFrame,
        RejectCode::Timeout,
        RejectCode::Truncated,
        RejectCode::TooLarge,
        RejectCode::Stream,
        RejectCode::Internal,
        RejectCode::NoTask,
        RejectCode::BadRange,
        RejectCode::NotNeeded,
    ];

    /// The stable name (`late`, `duplicate`, ...).
    pub fn as_str(&self) -> &str {
        match self {
            RejectCode::Version => "version",
            RejectCode::UnknownParticipant => "unknown_participant",
            RejectCode::SignerMismatch => "signer_mismatch",
            RejectCode::BadSignature => "bad_signature",
            RejectCode::WrongFederation => "wrong_federation",
            RejectCode::WrongRound => "wrong_round",
            RejectCode::Replay => "replay",
            RejectCode::BadPayload => "bad_payload",
            RejectCode::NotCollecting => "not_collecting",
            RejectCode::Late => "late",
            RejectCode::Duplicate => "duplicate",
            RejectCode::WrongPublicSet => "wrong_public_set",
            RejectCode::WrongSamples => "wrong_samples",
            RejectCode::Quarantined => "quarantined",
            RejectCode::BadProofRequest => "bad_proof_request",
            RejectCode::BadCosignature => "bad_cosignature",
            RejectCode::BadFrame => "bad_frame",
            RejectCode::Timeout => "timeout",
            RejectCode::Truncated => "truncated",
            RejectCode::TooLarge => "too_large",
            RejectCode::Stream => "stream",
            RejectCode::Internal => "internal",
            RejectCode::NoTask => "no_task",
            RejectCode::BadRange => "bad_range",
            RejectCode::NotNeeded => "not_needed",
            RejectCode::Other(s) => s,
        }
    }

    /// The code with this name ([`RejectCode::Other`] for a name this build does not know).
    pub fn parse(name: &str) -> RejectCode {
        Self::NAMED
            .iter()
            .find(|c| c.as_str() == name)
            .cloned()
            .unwrap_or_else(|| RejectCode::Other(name.to_string()))
    }
}

impl From<&crate::crypto::SignError> for RejectCode {
    fn from(e: &crate::crypto::SignError) -> Self {
        use crate::crypto::SignError;
        match e {
            SignError::SignerMismatch { .. } => RejectCode::SignerMismatch,
            SignError::WrongRound { .. } => RejectCode::WrongRound,
            SignError::Replay { .. } | SignError::SeqTooFarAhead { .. } => RejectCode::Replay,
            SignError::WrongFederation { .. } => RejectCode::WrongFederation,
            SignError::BadSignature { .. } => RejectCode::BadSignature,
            SignError::Payload(_) => RejectCode::BadPayload,
        }
    }
}

impl std::fmt::Display for RejectCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for RejectCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for RejectCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Ok(RejectCode::parse(&name))
    }
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
        code: RejectCode,
        /// What was wrong.
        message: String,
    },
    /// A consistency proof (RFC 6962 node hashes).
    Proof {
        /// Hashes of the proof, in order.
        hashes: Vec<Digest>,
    },
    /// The federation's signed task card (appended last: older variants keep their tags).
    Task(Signed<TaskAnnouncement>),
    /// Bytes of the public transfer set file.
    PublicChunk {
        /// Size of the whole file.
        total: u64,
        /// Offset of `bytes` in the file.
        offset: u64,
        /// The bytes (empty at or past the end).
        #[serde(with = "crate::wire::frame::bytes")]
        bytes: Vec<u8>,
    },
    /// The operator-signed roster file the coordinator admits participants by, exactly as loaded.
    Roster {
        /// The signed roster (TOML).
        toml: String,
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
    /// Secure aggregation: the round's key adverts (U1).
    SecAggRoster(Signed<crate::wire::secagg::SecAggRoster>),
    /// Secure aggregation: the shares addressed to this participant, and who shared (U2).
    SecAggDelivery(Signed<crate::wire::secagg::SecAggDelivery>),
    /// Secure aggregation: which shares to reveal.
    SecAggUnmask(Signed<crate::wire::secagg::SecAggUnmask>),
}

/// Most sample ids one round may name; a decoded [`RoundOpen`] naming more is refused before it is expanded.
pub const MAX_ROUND_SAMPLES: u64 = 1 << 22;

/// Serde adapter that writes a list of sample ids as runs of consecutive ids, each `(first, count)`, and
/// expands them when reading. Order and repetitions are kept exactly; `[5, 6, 7, 0, 1]` is `[(5, 3), (0, 2)]`.
/// Decoding refuses an empty run, a run past `u64::MAX` and more than [`MAX_ROUND_SAMPLES`] ids in total,
/// so a small frame cannot make the receiver allocate a large list.
pub mod sample_id_runs {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::MAX_ROUND_SAMPLES;

    /// The runs of `ids`: maximal stretches where each id is its predecessor plus one.
    pub fn runs(ids: &[u64]) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for &id in ids {
            match out.last_mut() {
                Some((first, count)) if first.checked_add(*count) == Some(id) => *count += 1,
                _ => out.push((id, 1)),
            }
        }
        out
    }

    /// Expands runs back into ids, refusing what a well-formed encoder never writes.
    pub fn expand(runs: &[(u64, u64)]) -> Result<Vec<u64>, String> {
        let mut total = 0u64;
        for (i, &(first, count)) in runs.iter().enumerate() {
            if count == 0 {
                return Err(format!("sample-id run {i} is empty"));
            }
            if first.checked_add(count - 1).is_none() {
                return Err(format!("sample-id run {i} ({first}, {count}) runs past the largest id"));
            }
            total = total.saturating_add(count);
            if total > MAX_ROUND_SAMPLES {
                return Err(format!("the round names more than {MAX_ROUND_SAMPLES} sample ids"));
            }
        }
        let mut ids = Vec::with_capacity(total as usize);
        for &(first, count) in runs {
            ids.extend(first..=first + (count - 1));
        }
        Ok(ids)
    }

    /// Serializes `ids` as its runs.
    pub fn serialize<S: Serializer>(ids: &[u64], s: S) -> Result<S::Ok, S::Error> {
        runs(ids).serialize(s)
    }

    /// Deserializes runs and expands them.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
        let runs = Vec::<(u64, u64)>::deserialize(d)?;
        expand(&runs).map_err(D::Error::custom)
    }
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

/// Protocol version spoken by this build. Version 2: `RoundOpen.sample_ids` travels as runs of consecutive ids.
/// Version 3: envelope signatures cover the signer's identity (`crypto::envelope_signing_bytes`).
/// Version 4: `RoundOpen.secure` (secure aggregation's parameters) and the secure-aggregation messages.
pub const PROTOCOL_VERSION: u16 = 4;

#[cfg(test)]
mod tests {
    #[test]
    fn reject_codes_travel_as_their_names_and_unknown_names_survive() {
        use crate::wire::frame::{decode_payload, encode_payload};
        for code in RejectCode::NAMED
            .iter()
            .chain([&RejectCode::Other("from_the_future".into())])
        {
            let reply = Reply::Reject {
                code: code.clone(),
                message: "m".into(),
            };
            let bytes = encode_payload(&reply).expect("encode");
            // The same bytes as the string-typed reply of protocol 2.
            #[derive(Serialize)]
            enum Before {
                #[allow(dead_code)]
                Ack,
                #[allow(dead_code)]
                Welcome {
                    round: RoundId,
                    finished: bool,
                },
                Reject {
                    code: String,
                    message: String,
                },
            }
            let before = encode_payload(&Before::Reject {
                code: code.as_str().to_string(),
                message: "m".into(),
            })
            .expect("encode");
            assert_eq!(bytes, before, "{code}");
            let Reply::Reject { code: back, .. } = decode_payload::<Reply>(&bytes).expect("decode") else {
                panic!("not a reject")
            };
            assert_eq!(&back, code);
            assert_eq!(RejectCode::parse(code.as_str()), *code);
        }
    }

    use super::*;
    use crate::wire::frame::{decode_payload, encode_payload, WireError};

    fn open(sample_ids: Vec<u64>) -> RoundOpen {
        RoundOpen {
            round: RoundId(3),
            total_rounds: 10,
            public_digest: Digest::of(b"public"),
            sample_ids_digest: sample_ids_digest(&sample_ids),
            sample_ids,
            temperature: 2.0,
            rule: AggregationRule::Mean,
            deadline_ms: 1000,
            quorum: 2,
            classes: 10,
            secure: None,
        }
    }

    #[test]
    fn sample_ids_travel_as_runs_and_come_back_exactly() {
        let wrapped: Vec<u64> = (59_000..60_000).chain(0..400).collect();
        assert_eq!(sample_id_runs::runs(&wrapped), vec![(59_000, 1000), (0, 400)]);
        let scattered = vec![7, 3, 4, 4, 9, u64::MAX - 1, u64::MAX, 0];
        assert_eq!(
            sample_id_runs::runs(&scattered),
            vec![(7, 1), (3, 2), (4, 1), (9, 1), (u64::MAX - 1, 2), (0, 1)]
        );
        for ids in [wrapped.clone(), scattered, Vec::new()] {
            let msg = open(ids);
            let bytes = encode_payload(&msg).unwrap();
            assert_eq!(decode_payload::<RoundOpen>(&bytes).unwrap(), msg);
        }
        // 1,400 ids in two runs: the whole opening is well under 200 bytes instead of ~4 KB of varints.
        let bytes = encode_payload(&open(wrapped)).unwrap();
        assert!(bytes.len() < 200, "{} bytes", bytes.len());
    }

    #[test]
    fn hostile_runs_are_refused_before_expansion() {
        // Encode a valid opening, then splice in a run list by re-encoding the tuple form by hand.
        let mut msg = open(vec![1]);
        let hostile: Vec<Vec<(u64, u64)>> = vec![
            vec![(0, MAX_ROUND_SAMPLES + 1)],
            vec![(0, MAX_ROUND_SAMPLES), (5, 1)],
            vec![(0, 0)],
            vec![(u64::MAX, 2)],
        ];
        for runs in hostile {
            msg.sample_ids = vec![1];
            let good = encode_payload(&msg).unwrap();
            let single = encode_payload(&vec![(1u64, 1u64)]).unwrap();
            let pos = good.windows(single.len()).position(|w| w == single.as_slice()).unwrap();
            let mut bad = good[..pos].to_vec();
            bad.extend(encode_payload(&runs).unwrap());
            bad.extend(&good[pos + single.len()..]);
            match decode_payload::<RoundOpen>(&bad) {
                Err(WireError::Malformed(m)) => assert!(m.contains("sample"), "{runs:?}: {m}"),
                other => panic!("{runs:?} was not refused: {other:?}"),
            }
        }
    }

    /// The typed reason travels as the string it was before the type existed, byte for byte, and a name
    /// this build does not know is refused when decoding, with the known names in the error.
    #[test]
    fn an_abstention_reason_is_its_name_on_the_wire_and_unknown_names_are_refused() {
        #[derive(Serialize)]
        struct Before {
            round: RoundId,
            reason: String,
            figures: Vec<(String, f64)>,
        }
        let figures = vec![("epsilon_budget".to_string(), 5.0)];
        for reason in AbstainReason::ALL {
            let msg = Abstain {
                round: RoundId(4),
                reason,
                figures: figures.clone(),
            };
            let bytes = encode_payload(&msg).unwrap();
            let before = Before {
                round: RoundId(4),
                reason: reason.as_str().to_string(),
                figures: figures.clone(),
            };
            assert_eq!(bytes, encode_payload(&before).unwrap(), "{reason}");
            assert_eq!(decode_payload::<Abstain>(&bytes).unwrap(), msg);
            assert_eq!(AbstainReason::parse(reason.as_str()), Ok(reason));
        }
        assert_eq!(ABSTAIN_BUDGET_EXHAUSTED, "budget_exhausted");
        assert_eq!(AbstainReason::BudgetExhausted, "budget_exhausted");
        for unknown in ["guard_regression", "", "Budget_Exhausted"] {
            let bytes = encode_payload(&Before {
                round: RoundId(4),
                reason: unknown.into(),
                figures: Vec::new(),
            })
            .unwrap();
            match decode_payload::<Abstain>(&bytes) {
                Err(WireError::Malformed(m)) => assert!(
                    m.contains(&format!("unknown abstention reason `{unknown}`")) && m.contains("budget_exhausted"),
                    "{m}"
                ),
                other => panic!("{unknown:?} was not refused: {other:?}"),
            }
        }
    }

    #[test]
    fn a_round_report_carries_its_privacy_spend_typed() {
        let spend = PrivacySpend {
            epsilon_round: 0.75,
            epsilon_total: 2.5,
            delta: 1e-5,
        };
        let report = RoundReport {
            round: RoundId(2),
            metrics: vec![("accuracy".into(), 0.9), ("dp_epsilon_round".into(), 0.75)],
            student_digest: Digest::of(b"student"),
            guard_accepted: false,
            guard_reason: "accuracy fell".into(),
            privacy_spend: Some(spend),
        };
        let back = decode_payload::<RoundReport>(&encode_payload(&report).unwrap()).unwrap();
        assert_eq!(back, report);
        assert_eq!(back.privacy_spend.unwrap().check(), Ok(()));
        assert_eq!(back.guard_decision().to_string(), "reject: accuracy fell");
        let zero = PrivacySpend {
            epsilon_round: 0.0,
            epsilon_total: 0.0,
            ..spend
        };
        assert_eq!(zero.check(), Ok(()));
        for bad in [
            PrivacySpend {
                epsilon_round: -0.1,
                ..spend
            },
            PrivacySpend {
                epsilon_total: f64::INFINITY,
                ..spend
            },
            PrivacySpend {
                epsilon_round: f64::NAN,
                ..spend
            },
            PrivacySpend { delta: 0.0, ..spend },
            PrivacySpend { delta: 1.0, ..spend },
            PrivacySpend {
                delta: f64::NAN,
                ..spend
            },
        ] {
            let err = bad.check().expect_err("refused");
            assert!(err.starts_with("privacy spend:"), "{err}");
        }
    }
}
