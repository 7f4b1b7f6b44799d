// Over 800 lines: the round state machine's phases, handlers and commit assembly read together (issue #17).
//! The coordinator's round state machine (sans-IO).
//!
//! Inputs arrive through `handle_*(now, ..)`; effects leave through [`CoordinatorRound::poll_output`]. The
//! driver owns sockets, signing keys and the durable store: it signs what [`Output::Broadcast`] and
//! [`Output::Send`] carry, persists [`Output::Commit`] in one transaction before calling
//! [`CoordinatorRound::handle_committed`], and only then are aggregates published. Phases:
//! `Waiting -> Collecting -> Committing -> Reporting -> (next round | Finished)`; a secure round (see
//! `protocol::secagg`) runs `Waiting -> Keying -> Sharing -> Collecting (masked inputs) -> Unmasking ->
//! Committing -> Reporting`, and closes without an aggregate when fewer than its threshold remain.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

mod secure;
pub mod stop;
pub use secure::consensus_from_sum;

use serde::{Deserialize, Serialize};

pub use super::abstain::{check_abstain, MAX_ABSTAIN_FIGURES, MAX_ABSTAIN_REASON};
use super::aggregate::{aggregate, distance_to_consensus, AggregationRule, ContributionView};
use super::records::{self, MessageRecords};
use super::robust::{QuarantineDecision, ReleaseDecision};
use super::softlabels;
use super::softlabels::Encoding;
use super::Millis;
use crate::crypto::{Digest, FederationId, ParticipantId, RoundId, Signed, Verified};
use crate::wire::messages::{
    sample_ids_digest, Abstain, AggregateLabels, RejectCode, RoundOpen, RoundReport, SoftLabels,
};

/// Static parameters of a federation run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoordinatorConfig {
    /// Federation id.
    pub federation: FederationId,
    /// Rounds to run.
    pub rounds: u64,
    /// Participants that must be connected before round 1 opens.
    pub min_participants: usize,
    /// Minimum contributions for a round to aggregate.
    pub quorum: usize,
    /// How long a round collects soft labels.
    pub collect_timeout: Millis,
    /// How long the coordinator waits for reports after publishing an aggregate.
    pub report_timeout: Millis,
    /// Size of the public transfer set.
    pub public_len: u64,
    /// Public samples labelled per round (rounds walk the public set in chunks, wrapping around).
    pub samples_per_round: u64,
    /// Digest of the public transfer set.
    pub public_digest: Digest,
    /// Number of classes.
    pub classes: u32,
    /// Aggregation rule.
    pub rule: AggregationRule,
    /// Teacher temperature announced to participants.
    pub temperature: f32,
    /// Largest accepted soft-label payload in bytes.
    pub max_payload: usize,
    /// Secure aggregation (masked inputs, the coordinator learns only their sum); `None` in the clear.
    #[serde(default)]
    pub secure: Option<crate::wire::secagg::SecAggParams>,
    /// Finish before `rounds` once the reported accuracy stops improving; `None`: run every round.
    #[serde(default)]
    pub stop: Option<stop::StopRule>,
}

/// Why an input was refused. `code()` is what metrics count and what the peer's `Reject` carries.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejection {
    /// No round is collecting soft labels right now.
    #[error("round {got} is not collecting soft labels (current round {current}, phase {phase})")]
    NotCollecting {
        /// Round named in the message.
        got: RoundId,
        /// The coordinator's current round.
        current: RoundId,
        /// The current phase.
        phase: &'static str,
    },
    /// The message names another round than the open one.
    #[error("message for round {got}, but round {current} is open")]
    WrongRound {
        /// Round named in the message.
        got: RoundId,
        /// The open round.
        current: RoundId,
    },
    /// The collection deadline had passed when the message arrived.
    #[error("soft labels for round {round} arrived {late_ms} ms after the deadline")]
    Late {
        /// The round.
        round: RoundId,
        /// How late, in milliseconds.
        late_ms: u64,
    },
    /// The sender already contributed (or reported) in this round.
    #[error("{participant} already sent this for round {round}")]
    Duplicate {
        /// The sender.
        participant: ParticipantId,
        /// The round.
        round: RoundId,
    },
    /// The sender holds another public set than the federation.
    #[error("public-set digest {got} does not match the federation's {expected}")]
    WrongPublicSet {
        /// Expected digest.
        expected: Digest,
        /// Digest in the message.
        got: Digest,
    },
    /// The sample ids labelled are not this round's.
    #[error("sample-id digest {got} does not match round's {expected}")]
    WrongSamples {
        /// Expected digest.
        expected: Digest,
        /// Digest in the message.
        got: Digest,
    },
    /// Shape, size or content of the payload is invalid.
    #[error("invalid soft-label payload: {0}")]
    BadPayload(String),
    /// The figures, metrics or privacy spend of an abstention or a report cannot be logged (the message
    /// says why, and is the refusal's whole text).
    #[error("{0}")]
    Malformed(String),
    /// The sender is quarantined for persistent anomalous contributions.
    #[error("{0} is quarantined: its contributions are excluded")]
    Quarantined(ParticipantId),
    /// A secure round's reveal arrived after the round was unmasked with the shares that came first.
    #[error("round {round} was already unmasked with the shares that came first; these are not needed")]
    NotNeeded {
        /// The round.
        round: RoundId,
    },
    /// The signer of the envelope is not the participant on this connection.
    #[error("message signed by {signer} arrived on the connection of {connection}")]
    SignerMismatch {
        /// Envelope signer.
        signer: String,
        /// Connection identity.
        connection: ParticipantId,
    },
}

impl Rejection {
    /// The stable code the participant is sent.
    pub fn code(&self) -> RejectCode {
        match self {
            Rejection::NotCollecting { .. } => RejectCode::NotCollecting,
            Rejection::WrongRound { .. } => RejectCode::WrongRound,
            Rejection::Late { .. } => RejectCode::Late,
            Rejection::NotNeeded { .. } => RejectCode::NotNeeded,
            Rejection::Duplicate { .. } => RejectCode::Duplicate,
            Rejection::WrongPublicSet { .. } => RejectCode::WrongPublicSet,
            Rejection::WrongSamples { .. } => RejectCode::WrongSamples,
            Rejection::BadPayload(_) | Rejection::Malformed(_) => RejectCode::BadPayload,
            Rejection::Quarantined(_) => RejectCode::Quarantined,
            Rejection::SignerMismatch { .. } => RejectCode::SignerMismatch,
        }
    }
}

/// A contribution accepted into the open round, with what its log record needs kept from the one time it
/// was verified and decoded: the envelope (its payload is stored beside the log, its signature goes into
/// the `contribution` record) and the soft labels' encoding.
///
/// Its serde form is the one earlier builds stored (the envelope as its encoded bytes, no encoding): a
/// store written before the envelope was kept whole still reads, the encoding recovered from the envelope
/// then (see `AcceptedContributionRepr`).
#[derive(Debug, Clone)]
pub struct AcceptedContribution {
    /// Who sent it.
    pub participant: ParticipantId,
    /// Decoded probabilities (rows x classes).
    pub probabilities: Vec<f32>,
    /// Private sample count claimed by the sender.
    pub samples: u64,
    /// The soft labels' encoding (`masked_u64` in a secure round), as the `contribution` record logs it.
    pub encoding: Encoding,
    /// The signed envelope as received: its payload goes to the payload store, its signature to the log.
    pub envelope: Signed<SoftLabels>,
    /// SHA-256 of the envelope's payload bytes.
    pub payload_digest: Digest,
    /// The sender's sequence number.
    pub seq: u64,
}

/// The serde form of an [`AcceptedContribution`], as builds before the envelope was kept decoded stored
/// it (bincode under the legacy contribution key, JSON inside older round snapshots).
#[derive(Serialize, Deserialize)]
struct AcceptedContributionRepr {
    participant: ParticipantId,
    probabilities: Vec<f32>,
    samples: u64,
    /// The signed envelope's encoded bytes.
    envelope: Vec<u8>,
    payload_digest: Digest,
    seq: u64,
}

impl Serialize for AcceptedContribution {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        AcceptedContributionRepr {
            participant: self.participant.clone(),
            probabilities: self.probabilities.clone(),
            samples: self.samples,
            envelope: crate::wire::encode_payload(&self.envelope).map_err(serde::ser::Error::custom)?,
            payload_digest: self.payload_digest,
            seq: self.seq,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for AcceptedContribution {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let r = AcceptedContributionRepr::deserialize(d)?;
        let envelope: Signed<SoftLabels> = crate::wire::decode_payload(&r.envelope)
            .map_err(|e| D::Error::custom(format!("the contribution envelope of {}: {e}", r.participant)))?;
        let body: SoftLabels = crate::wire::decode_payload(&envelope.payload)
            .map_err(|e| D::Error::custom(format!("the soft labels of {}: {e}", r.participant)))?;
        Ok(AcceptedContribution {
            participant: r.participant,
            probabilities: r.probabilities,
            samples: r.samples,
            encoding: body.encoding,
            envelope,
            payload_digest: r.payload_digest,
            seq: r.seq,
        })
    }
}

/// An accepted contribution as a driver stores it until its round commits, without the bytes it keeps
/// elsewhere: the signed payload goes to the content-addressed payload store (where the round's commit
/// records it), and the probabilities are decoded from it again. [`AcceptedContribution::to_stored`] splits
/// a contribution, [`AcceptedContribution::from_stored`] puts it back together, envelope byte for byte.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredContribution {
    /// Who sent it (the envelope's signer).
    pub participant: ParticipantId,
    /// Private sample count claimed by the sender.
    pub samples: u64,
    /// SHA-256 of the envelope's payload bytes (the payload's key in the payload store).
    pub payload_digest: Digest,
    /// The sender's sequence number.
    pub seq: u64,
    /// The envelope's signature.
    pub signature: Vec<u8>,
}

impl AcceptedContribution {
    /// A contribution of `participant` accepted from its verified `envelope`, with the `probabilities`
    /// decoded from it (empty for a secure round's masked input).
    fn accepted(participant: &ParticipantId, labels: Verified<SoftLabels>, probabilities: Vec<f32>) -> Self {
        let payload_digest = labels.payload_digest();
        let (body, envelope) = labels.into_parts();
        AcceptedContribution {
            participant: participant.clone(),
            probabilities,
            samples: body.samples,
            encoding: body.encoding,
            seq: envelope.seq,
            envelope,
            payload_digest,
        }
    }

    /// What a driver stores for this contribution until its round commits, and the signed payload to store
    /// beside it under `payload_digest`.
    pub fn to_stored(&self) -> (StoredContribution, Vec<u8>) {
        let stored = StoredContribution {
            participant: self.participant.clone(),
            samples: self.samples,
            payload_digest: self.payload_digest,
            seq: self.seq,
            signature: self.envelope.signature.clone(),
        };
        (stored, self.envelope.payload.clone())
    }

    /// Rebuilds a contribution of `round` in `federation` from [`AcceptedContribution::to_stored`]'s parts
    /// (they come from the driver's own store, which accepted it). The payload must hash to the stored
    /// digest and decode to soft labels.
    pub fn from_stored(
        stored: StoredContribution,
        payload: Vec<u8>,
        federation: &FederationId,
        round: RoundId,
    ) -> Result<Self, CommitError> {
        let bad = |reason: String| CommitError::Contribution {
            participant: stored.participant.clone(),
            reason,
        };
        if Digest::of(&payload) != stored.payload_digest {
            return Err(bad(format!("the payload does not hash to {}", stored.payload_digest)));
        }
        let body: SoftLabels = crate::wire::decode_payload(&payload).map_err(|e| bad(e.to_string()))?;
        let probabilities = if body.encoding == Encoding::MaskedU64 {
            // A masked input: only its length means anything, and secure rounds are not resumed.
            softlabels::decode_masked(&body.payload, body.rows as usize, body.classes as usize)
                .map_err(|e| bad(e.to_string()))?;
            Vec::new()
        } else {
            softlabels::decode(&body.payload, body.rows as usize, body.classes as usize, body.encoding)
                .map_err(|e| bad(e.to_string()))?
        };
        let envelope = Signed::<SoftLabels>::from_parts(
            crate::crypto::Signer::Participant(stored.participant.clone()),
            federation.clone(),
            round,
            stored.seq,
            payload,
            stored.signature,
        );
        Ok(AcceptedContribution {
            participant: stored.participant,
            probabilities,
            samples: stored.samples,
            encoding: body.encoding,
            envelope,
            payload_digest: stored.payload_digest,
            seq: stored.seq,
        })
    }
}

/// What the driver must make durable, as one transaction, before the aggregate is published.
#[derive(Debug, Clone)]
pub struct RoundCommit {
    /// The round.
    pub round: RoundId,
    /// The round's opening parameters.
    pub open: RoundOpen,
    /// Contributions, in participant-id order.
    pub contributions: Vec<AcceptedContribution>,
    /// Expected participants that did not contribute and did not abstain.
    pub absent: Vec<ParticipantId>,
    /// Participants that abstained from the round (signed `Abstain`, logged when received).
    pub abstained: Vec<ParticipantId>,
    /// The consensus probabilities.
    pub aggregate: Vec<f32>,
    /// A secure round's transcript (its contributions are masked inputs); `None` in the clear.
    pub secure: Option<super::secagg::SecureTranscript>,
    /// Per-contributor distance to the consensus (anomaly score), in contributor order.
    pub anomaly: Vec<(ParticipantId, f64)>,
}

/// The canonical bytes of a consensus: every probability as little-endian f32, row-major. The log's
/// aggregate digest and `AggregateLabels.aggregate_digest` cover exactly these bytes; the coordinator, the
/// simulator and the auditor all compute them here.
pub fn canonical_aggregate_bytes(aggregate: &[f32]) -> Vec<u8> {
    aggregate.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Why a round's commit could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// A stored contribution envelope does not decode.
    #[error("stored contribution of {participant} does not decode: {reason}")]
    Contribution {
        /// Whose contribution.
        participant: ParticipantId,
        /// The decoding error.
        reason: String,
    },
    /// A secure round's transcript could not be encoded.
    #[error("secure transcript: {0}")]
    Transcript(String),
    /// A record could not be encoded.
    #[error("round record: {0}")]
    Record(#[from] crate::ledger::RecordError),
    /// The consensus could not be packed in the requested encoding.
    #[error("encoding the aggregate: {0}")]
    Encode(#[from] softlabels::SoftLabelError),
}

/// What a round's commit puts in the update log, unsigned: the records in log order (the round opening,
/// each contribution, the aggregate with an empty signature) and the payloads stored beside them.
#[derive(Debug, Clone)]
pub struct CommitRecords {
    /// Records in log order; the last is the [`crate::ledger::Record::Aggregate`].
    pub records: Vec<crate::ledger::Record>,
    /// (digest, bytes) of every contribution's signed payload and of the canonical aggregate.
    pub payloads: Vec<(Digest, Vec<u8>)>,
    /// SHA-256 of [`canonical_aggregate_bytes`].
    pub aggregate_digest: Digest,
    /// The exact bytes the coordinator signs for the aggregate record ([`crate::ledger::Record::statement`]).
    pub statement: Vec<u8>,
}

impl CommitRecords {
    /// Puts the coordinator's signature over [`CommitRecords::statement`] into the aggregate record.
    pub fn sign_aggregate(&mut self, signature: Vec<u8>) {
        if let Some(crate::ledger::Record::Aggregate { signature: s, .. }) = self.records.last_mut() {
            *s = signature;
        }
    }
}

impl RoundCommit {
    /// The contributors, in participant-id order.
    pub fn contributors(&self) -> Vec<ParticipantId> {
        self.contributions.iter().map(|c| c.participant.clone()).collect()
    }

    /// The round's log records and payloads, the aggregate unsigned (see [`CommitRecords::sign_aggregate`]).
    /// `deadline_unix_ms` is the collection deadline on the wall clock, which only the driver knows.
    pub fn records(&self, federation: &FederationId, deadline_unix_ms: u64) -> Result<CommitRecords, CommitError> {
        use crate::ledger::Record;
        let mut records = vec![Record::RoundOpened {
            round: self.round,
            public_set_digest: self.open.public_digest,
            sample_ids_digest: self.open.sample_ids_digest,
            temperature: f64::from(self.open.temperature),
            rule: crate::ledger::RuleName::new(self.open.rule.name())?,
            deadline_unix_ms,
            quorum: self.open.quorum,
        }];
        let mut payloads = Vec::new();
        for c in &self.contributions {
            // What the contribution kept from its verification: nothing is decoded a second time.
            records.push(Record::Contribution {
                round: self.round,
                participant: c.participant.clone(),
                encoding: crate::ledger::EncodingName::new(c.encoding.name())?,
                payload_digest: c.payload_digest,
                sequence: c.seq,
                signature: c.envelope.signature.clone(),
            });
            payloads.push((c.payload_digest, c.envelope.payload.clone()));
        }
        if let Some(t) = &self.secure {
            let transcript = crate::wire::encode_payload(t).map_err(|e| CommitError::Transcript(e.to_string()))?;
            let transcript_digest = Digest::of(&transcript);
            let members = t.members();
            records.push(Record::SecureAggregation {
                round: self.round,
                transcript_digest,
                threshold: t.params.threshold,
                neighbours: t.params.neighbours,
                survivors: self.contributors(),
                dropped: t
                    .dropped
                    .iter()
                    .filter_map(|&i| members.get(i as usize).cloned())
                    .collect(),
            });
            payloads.push((transcript_digest, transcript));
        }
        let bytes = canonical_aggregate_bytes(&self.aggregate);
        let aggregate_digest = Digest::of(&bytes);
        let aggregate = Record::Aggregate {
            round: self.round,
            digest: aggregate_digest,
            rule: crate::ledger::RuleName::new(self.open.rule.name())?,
            contributors: self.contributors(),
            signature: Vec::new(),
        };
        // An aggregate record always has a statement; `unwrap_or_default` only satisfies the type.
        let statement = aggregate.statement(federation.as_str())?.unwrap_or_default();
        records.push(aggregate);
        payloads.push((aggregate_digest, bytes));
        Ok(CommitRecords {
            records,
            payloads,
            aggregate_digest,
            statement,
        })
    }

    /// The `AggregateLabels` message for the participants, unsigned: the consensus packed in `encoding`
    /// (f32 is the canonical bytes themselves), its canonical digest and the checkpoint that covers the
    /// round's records.
    pub fn aggregate_message(&self, encoding: Encoding, checkpoint: String) -> Result<AggregateLabels, CommitError> {
        Ok(aggregate_labels_message(
            self.round,
            self.open.rule,
            self.contributors(),
            self.absent.clone(),
            &self.aggregate,
            self.open.classes as usize,
            encoding,
            checkpoint,
        )?)
    }
}

/// An `AggregateLabels` message (unsigned) for `consensus` (rows of `classes` probabilities): packed in
/// `encoding` (f32 is the canonical bytes themselves) with the digest of [`canonical_aggregate_bytes`].
/// [`RoundCommit::aggregate_message`] and the benchmarks' message exchange both build it here.
#[allow(clippy::too_many_arguments)]
pub fn aggregate_labels_message(
    round: RoundId,
    rule: super::aggregate::AggregationRule,
    contributors: Vec<ParticipantId>,
    absent: Vec<ParticipantId>,
    consensus: &[f32],
    classes: usize,
    encoding: Encoding,
    checkpoint: String,
) -> Result<AggregateLabels, softlabels::SoftLabelError> {
    let canonical = canonical_aggregate_bytes(consensus);
    let aggregate_digest = Digest::of(&canonical);
    let rows = consensus.len() / classes.max(1);
    let probabilities = if encoding == Encoding::F32 {
        canonical
    } else {
        softlabels::encode(consensus, rows, classes, encoding)?
    };
    Ok(AggregateLabels {
        round,
        rule,
        contributors,
        absent,
        rows: rows as u32,
        classes: classes as u32,
        encoding,
        probabilities,
        aggregate_digest,
        checkpoint,
    })
}

/// Effects for the driver to carry out, in order.
#[derive(Debug, Clone)]
pub enum Output {
    /// Sign and send to every connected participant.
    Broadcast(OutMessage),
    /// Sign and send to one participant (a late joiner catching up).
    Send(ParticipantId, OutMessage),
    /// Make these records durable, then call [`CoordinatorRound::handle_committed`].
    Commit(Box<RoundCommit>),
    /// Reports of a round are complete (or timed out): log them.
    RoundClosed {
        /// The round.
        round: RoundId,
        /// Verified reports received, in participant order.
        reports: Vec<(ParticipantId, RoundReport)>,
        /// Contributors that did not report in time.
        missing: Vec<ParticipantId>,
    },
    /// A round could not reach quorum by its deadline; collection goes on with a new deadline.
    QuorumNotMet {
        /// The round.
        round: RoundId,
        /// Contributions so far.
        have: usize,
        /// Contributions needed.
        need: usize,
    },
    /// A secure round closed without an aggregate (fewer than its threshold remained); the next round opens.
    RoundFailed {
        /// The round.
        round: RoundId,
        /// Why.
        reason: String,
    },
    /// The reports of a round showed convergence (`stop`): no round opens after it; `Finished` follows.
    Converged(stop::Converged),
    /// All rounds are done.
    Finished,
}

/// A message body the driver signs and sends.
#[derive(Debug, Clone)]
pub enum OutMessage {
    /// Open a round.
    Open(RoundOpen),
    /// The federation finished.
    Finished,
    /// A secure round's key adverts (the driver adds its roster's digest).
    SecAggRoster {
        /// The round.
        round: RoundId,
        /// The adverts, in participant-id order.
        adverts: Vec<crate::crypto::Signed<crate::wire::secagg::SecAggKeys>>,
    },
    /// The shares addressed to one participant.
    SecAggDelivery(crate::wire::secagg::SecAggDelivery),
    /// The unmasking request.
    SecAggUnmask(crate::wire::secagg::SecAggUnmask),
}

/// The phase of the current round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Phase {
    /// Waiting for enough participants to open round 1 (or the next round).
    Waiting,
    /// Collecting soft labels until the deadline.
    Collecting {
        /// Absolute deadline.
        deadline: Millis,
    },
    /// A secure round collects key adverts until the deadline.
    Keying {
        /// Absolute deadline.
        deadline: Millis,
    },
    /// A secure round collects encrypted shares until the deadline.
    Sharing {
        /// Absolute deadline.
        deadline: Millis,
    },
    /// A secure round collects revealed shares until the deadline.
    Unmasking {
        /// Absolute deadline.
        deadline: Millis,
    },
    /// The aggregate is being made durable by the driver.
    Committing,
    /// Collecting reports until the deadline.
    Reporting {
        /// Absolute deadline.
        deadline: Millis,
    },
    /// All rounds ran.
    Finished,
}

impl Phase {
    /// The phase's name, as the snapshot and `/status` write it.
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Waiting => "waiting",
            Phase::Collecting { .. } => "collecting",
            Phase::Keying { .. } => "keying",
            Phase::Sharing { .. } => "sharing",
            Phase::Unmasking { .. } => "unmasking",
            Phase::Committing => "committing",
            Phase::Reporting { .. } => "reporting",
            Phase::Finished => "finished",
        }
    }
}

/// Durable state the driver persists after every accepted input, and restores after a restart.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    /// Current round (0 before the first opened).
    pub round: RoundId,
    /// The open round's parameters, if one is open.
    pub open: Option<RoundOpen>,
    /// Phase name: `waiting`, `collecting`, `committing`, `reporting`, `finished`.
    pub phase: String,
    /// Accepted contributions of the open round. Empty in [`CoordinatorRound::snapshot_without_payloads`],
    /// whose driver stores each contribution once, under its own key, as it is accepted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contributions: Vec<AcceptedContribution>,
    /// Participants whose contributions to the open round were accepted, in id order.
    #[serde(default)]
    pub contribution_ids: Vec<ParticipantId>,
    /// Reports received for the round in the reporting phase.
    pub reports: Vec<(ParticipantId, RoundReport)>,
    /// Contributors of the last aggregated round.
    pub contributors: Vec<ParticipantId>,
    /// Quarantined participants.
    pub quarantined: Vec<ParticipantId>,
    /// Participants the open round waits for (connected when it opened or joined since).
    #[serde(default)]
    pub expected: Vec<ParticipantId>,
    /// Participants that abstained from the open round.
    #[serde(default)]
    pub abstained: Vec<ParticipantId>,
    /// What the stopping rule has seen (`stop`).
    #[serde(default)]
    pub convergence: stop::Convergence,
}

/// The coordinator's round state machine.
#[derive(Debug)]
pub struct CoordinatorRound {
    cfg: CoordinatorConfig,
    round: RoundId,
    phase: Phase,
    open: Option<RoundOpen>,
    opened_at: Millis,
    connected: BTreeSet<ParticipantId>,
    expected: BTreeSet<ParticipantId>,
    contributions: BTreeMap<ParticipantId, AcceptedContribution>,
    abstained: BTreeSet<ParticipantId>,
    contributors: Vec<ParticipantId>,
    reports: BTreeMap<ParticipantId, RoundReport>,
    quarantined: BTreeSet<ParticipantId>,
    outputs: VecDeque<Output>,
    secure: Option<super::secagg::SecureRound>,
    convergence: stop::Convergence,
}

impl CoordinatorRound {
    /// A fresh federation run, before round 1.
    pub fn new(cfg: CoordinatorConfig) -> Self {
        Self {
            cfg,
            round: RoundId(0),
            phase: Phase::Waiting,
            open: None,
            opened_at: Millis(0),
            connected: BTreeSet::new(),
            expected: BTreeSet::new(),
            contributions: BTreeMap::new(),
            abstained: BTreeSet::new(),
            contributors: Vec::new(),
            reports: BTreeMap::new(),
            quarantined: BTreeSet::new(),
            outputs: VecDeque::new(),
            secure: None,
            convergence: stop::Convergence::default(),
        }
    }

    /// Rebuilds the machine from a snapshot after a restart. A round that was collecting resumes with a
    /// fresh deadline counted from `now`; one that was committing is committed again (the driver's store
    /// makes that idempotent); one that was reporting resumes collecting reports.
    pub fn restore(cfg: CoordinatorConfig, snap: Snapshot, now: Millis) -> Self {
        let mut m = Self::new(cfg);
        m.round = snap.round;
        m.open = snap.open;
        m.quarantined = snap.quarantined.into_iter().collect();
        m.contributors = snap.contributors;
        m.opened_at = now;
        for c in snap.contributions {
            m.expected.insert(c.participant.clone());
            m.contributions.insert(c.participant.clone(), c);
        }
        m.expected.extend(snap.expected);
        m.abstained = snap.abstained.into_iter().collect();
        m.reports = snap.reports.into_iter().collect();
        m.convergence = snap.convergence;
        m.phase = match (snap.phase.as_str(), m.open.is_some()) {
            ("finished", _) => Phase::Finished,
            ("collecting", true) => Phase::Collecting {
                deadline: now.plus(m.cfg.collect_timeout),
            },
            ("committing", true) => Phase::Collecting { deadline: now },
            ("reporting", true) => Phase::Reporting {
                deadline: now.plus(m.cfg.report_timeout),
            },
            _ => Phase::Waiting,
        };
        if m.cfg.secure.is_some() && matches!(m.phase, Phase::Collecting { .. })
            || snap.phase == "keying"
            || snap.phase == "sharing"
            || snap.phase == "unmasking"
        {
            // A secure round's secrets lived only in memory: it runs again, from its key adverts, with fresh ones.
            m.round = RoundId(m.round.0.saturating_sub(1));
            m.open = None;
            m.contributions.clear();
            m.abstained.clear();
            m.phase = Phase::Waiting;
        }
        m
    }

    /// The durable state to persist, contributions included.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            contributions: self.contributions.values().cloned().collect(),
            ..self.snapshot_without_payloads()
        }
    }

    /// The durable state without the contributions themselves (only their senders' ids): its size does not
    /// grow with the payloads, so a driver can write it after every message and store each contribution
    /// once. [`CoordinatorRound::restore`] needs the contributions put back into `contributions`.
    pub fn snapshot_without_payloads(&self) -> Snapshot {
        Snapshot {
            round: self.round,
            open: self.open.clone(),
            phase: self.phase.name().to_string(),
            contributions: Vec::new(),
            contribution_ids: self.contributions.keys().cloned().collect(),
            reports: self.reports.iter().map(|(p, r)| (p.clone(), r.clone())).collect(),
            contributors: self.contributors.clone(),
            quarantined: self.quarantined.iter().cloned().collect(),
            expected: self.expected.iter().cloned().collect(),
            abstained: self.abstained.iter().cloned().collect(),
            convergence: self.convergence,
        }
    }

    /// The accepted contribution of `p` to the open round.
    pub fn contribution(&self, p: &ParticipantId) -> Option<&AcceptedContribution> {
        self.contributions.get(p)
    }

    /// Participants the open round waits for, in id order.
    pub fn expected(&self) -> impl Iterator<Item = &ParticipantId> {
        self.expected.iter()
    }

    /// Participants whose contributions to the open round were accepted, in id order.
    pub fn contribution_ids(&self) -> impl Iterator<Item = &ParticipantId> {
        self.contributions.keys()
    }

    /// Whether `p` contributed to the round whose reports are being collected but has not reported
    /// (a participant that reconnects then needs the round's aggregate again).
    pub fn awaits_report_from(&self, p: &ParticipantId) -> bool {
        matches!(self.phase, Phase::Reporting { .. }) && self.contributors.contains(p) && !self.reports.contains_key(p)
    }

    /// The configuration.
    pub fn config(&self) -> &CoordinatorConfig {
        &self.cfg
    }

    /// Current round (0 before the first).
    pub fn round(&self) -> RoundId {
        self.round
    }

    /// Current phase.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// Connected participants.
    pub fn connected(&self) -> impl Iterator<Item = &ParticipantId> {
        self.connected.iter()
    }

    /// The open round's parameters.
    pub fn open_round(&self) -> Option<&RoundOpen> {
        self.open.as_ref()
    }

    /// Excludes a participant's future contributions (quarantine policy decided by the driver).
    pub fn quarantine(&mut self, p: ParticipantId) {
        self.quarantined.insert(p);
    }

    /// Readmits a quarantined participant (release decided by the driver); it is expected from the next
    /// round that opens.
    pub fn release(&mut self, p: &ParticipantId) {
        self.quarantined.remove(p);
    }

    /// Applies the anomaly tracker's quarantine decision ([`CoordinatorRound::quarantine`]) and returns its
    /// `quarantine` record for the round's commit. Evidence that cannot be logged changes nothing.
    pub fn apply_quarantine(
        &mut self,
        d: &QuarantineDecision,
    ) -> Result<crate::ledger::Record, crate::ledger::RecordError> {
        let record = d.record()?;
        self.quarantine(d.participant.clone());
        Ok(record)
    }

    /// Applies the anomaly tracker's release ([`CoordinatorRound::release`]) and returns its
    /// `quarantine_release` record for the round's commit.
    pub fn apply_release(&mut self, r: &ReleaseDecision) -> crate::ledger::Record {
        self.release(&r.participant);
        r.record()
    }

    /// Quarantined participants, in id order.
    pub fn quarantined(&self) -> impl Iterator<Item = &ParticipantId> {
        self.quarantined.iter()
    }

    /// Participants that abstained from the open round, in id order.
    pub fn abstained(&self) -> impl Iterator<Item = &ParticipantId> {
        self.abstained.iter()
    }

    /// A participant connected (or reconnected). If a round is collecting it is sent the opening.
    pub fn handle_connected(&mut self, now: Millis, p: ParticipantId) {
        self.connected.insert(p.clone());
        match (&self.phase, &self.open) {
            (Phase::Collecting { .. }, Some(open))
                if self.secure.is_none() && !self.contributions.contains_key(&p) && !self.abstained.contains(&p) =>
            {
                // A quarantined participant is told about the round but never waited for.
                if !self.quarantined.contains(&p) {
                    self.expected.insert(p.clone());
                }
                self.outputs.push_back(Output::Send(p, OutMessage::Open(open.clone())));
            }
            (Phase::Keying { .. }, Some(open))
                if !self.secure.as_ref().is_some_and(|s| s.advertised().any(|a| a == &p))
                    && !self.abstained.contains(&p) =>
            {
                // A quarantined participant is told about the round but never waited for.
                if !self.quarantined.contains(&p) {
                    self.expected.insert(p.clone());
                }
                self.outputs.push_back(Output::Send(p, OutMessage::Open(open.clone())));
            }
            (Phase::Finished, _) => self.outputs.push_back(Output::Send(p, OutMessage::Finished)),
            _ => {}
        }
        self.drive(now);
    }

    /// A participant's connection closed. It stays expected in the open round until the deadline.
    pub fn handle_disconnected(&mut self, now: Millis, p: &ParticipantId) {
        self.connected.remove(p);
        self.drive(now);
    }

    /// Verified soft labels from the participant on connection `from`.
    pub fn handle_soft_labels(
        &mut self,
        now: Millis,
        from: &ParticipantId,
        labels: Verified<SoftLabels>,
    ) -> Result<(), Rejection> {
        match labels.signer() {
            crate::crypto::Signer::Participant(p) if p == from => {}
            other => {
                return Err(Rejection::SignerMismatch {
                    signer: other.to_string(),
                    connection: from.clone(),
                })
            }
        }
        if self.secure.is_some() {
            return self.handle_masked(now, from, labels);
        }
        let body = labels.value();
        let (deadline, open) = match (&self.phase, &self.open) {
            (Phase::Collecting { deadline }, Some(open)) => (*deadline, open),
            _ => {
                return Err(Rejection::NotCollecting {
                    got: body.round,
                    current: self.round,
                    phase: self.phase.name(),
                })
            }
        };
        if body.round != self.round {
            return Err(Rejection::WrongRound {
                got: body.round,
                current: self.round,
            });
        }
        if now > deadline {
            return Err(Rejection::Late {
                round: body.round,
                late_ms: now.0 - deadline.0,
            });
        }
        if self.contributions.contains_key(from) || self.abstained.contains(from) {
            return Err(Rejection::Duplicate {
                participant: from.clone(),
                round: body.round,
            });
        }
        if self.quarantined.contains(from) {
            return Err(Rejection::Quarantined(from.clone()));
        }
        if body.public_digest != self.cfg.public_digest {
            return Err(Rejection::WrongPublicSet {
                expected: self.cfg.public_digest,
                got: body.public_digest,
            });
        }
        if body.sample_ids_digest != open.sample_ids_digest {
            return Err(Rejection::WrongSamples {
                expected: open.sample_ids_digest,
                got: body.sample_ids_digest,
            });
        }
        let rows = open.sample_ids.len();
        if body.rows as usize != rows || body.classes != self.cfg.classes {
            return Err(Rejection::BadPayload(format!(
                "shape {}x{} but the round asks for {}x{}",
                body.rows, body.classes, rows, self.cfg.classes
            )));
        }
        if body.payload.len() > self.cfg.max_payload {
            return Err(Rejection::BadPayload(format!(
                "{} bytes exceed the cap of {}",
                body.payload.len(),
                self.cfg.max_payload
            )));
        }
        let probabilities = softlabels::decode(&body.payload, rows, self.cfg.classes as usize, body.encoding)
            .map_err(|e| Rejection::BadPayload(e.to_string()))?;
        let accepted = AcceptedContribution::accepted(from, labels, probabilities);
        self.expected.insert(from.clone());
        self.contributions.insert(from.clone(), accepted);
        self.drive(now);
        Ok(())
    }

    /// A verified abstention from the participant on connection `from`: it does not contribute to the open
    /// round, so the round no longer waits for it. Returns its `abstention` record (figures in canonical
    /// order) and payload for the driver to append with the round state; a refused abstention changes
    /// nothing.
    pub fn handle_abstain(
        &mut self,
        now: Millis,
        from: &ParticipantId,
        msg: Verified<Abstain>,
    ) -> Result<MessageRecords, Rejection> {
        let figures = records::abstention_figures(msg.value()).map_err(Rejection::Malformed)?;
        match msg.signer() {
            crate::crypto::Signer::Participant(p) if p == from => {}
            other => {
                return Err(Rejection::SignerMismatch {
                    signer: other.to_string(),
                    connection: from.clone(),
                })
            }
        }
        let body = msg.value();
        let deadline = match &self.phase {
            Phase::Collecting { deadline } if self.open.is_some() && self.secure.is_none() => *deadline,
            Phase::Keying { deadline } if self.open.is_some() => *deadline,
            _ => {
                return Err(Rejection::NotCollecting {
                    got: body.round,
                    current: self.round,
                    phase: self.phase.name(),
                })
            }
        };
        if body.round != self.round {
            return Err(Rejection::WrongRound {
                got: body.round,
                current: self.round,
            });
        }
        if now > deadline {
            return Err(Rejection::Late {
                round: body.round,
                late_ms: now.0 - deadline.0,
            });
        }
        if self.contributions.contains_key(from) || self.abstained.contains(from) {
            return Err(Rejection::Duplicate {
                participant: from.clone(),
                round: body.round,
            });
        }
        check_abstain(body).map_err(Rejection::BadPayload)?;
        self.abstained.insert(from.clone());
        let logged = records::abstention_records(from, &msg, figures);
        self.drive(now);
        Ok(logged)
    }

    /// A verified round report from the participant on connection `from`. Returns its `round_report` record
    /// (and `privacy_spend` after it when the report carries a spend) and payload for the driver to append
    /// with the round state; a report whose metrics or spend cannot be logged is refused before anything
    /// changes.
    pub fn handle_report(
        &mut self,
        now: Millis,
        from: &ParticipantId,
        report: Verified<RoundReport>,
    ) -> Result<MessageRecords, Rejection> {
        let metrics = records::report_metrics(report.value()).map_err(Rejection::Malformed)?;
        let body = report.value();
        if body.round != self.round || !matches!(self.phase, Phase::Reporting { .. }) {
            return Err(Rejection::WrongRound {
                got: body.round,
                current: self.round,
            });
        }
        if self.reports.contains_key(from) {
            return Err(Rejection::Duplicate {
                participant: from.clone(),
                round: body.round,
            });
        }
        self.reports.insert(from.clone(), body.clone());
        let logged = records::report_records(from, &report, metrics);
        self.drive(now);
        Ok(logged)
    }

    /// The driver made the round's commit durable and published it.
    pub fn handle_committed(&mut self, now: Millis, round: RoundId) {
        if round != self.round || self.phase != Phase::Committing {
            return;
        }
        self.phase = Phase::Reporting {
            deadline: now.plus(self.cfg.report_timeout),
        };
        self.drive(now);
    }

    /// Time passed; the driver calls this at [`CoordinatorRound::poll_timeout`] (or any time).
    pub fn handle_timeout(&mut self, now: Millis) {
        self.drive(now);
    }

    /// The next deadline the driver should wake up for.
    pub fn poll_timeout(&self) -> Option<Millis> {
        match self.phase {
            Phase::Collecting { deadline }
            | Phase::Reporting { deadline }
            | Phase::Keying { deadline }
            | Phase::Sharing { deadline }
            | Phase::Unmasking { deadline } => Some(deadline),
            _ => None,
        }
    }

    /// The next effect to carry out.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Advances phases as far as the inputs so far allow.
    fn drive(&mut self, now: Millis) {
        loop {
            let progressed = match self.phase.clone() {
                Phase::Waiting => self.try_open(now),
                Phase::Collecting { deadline } if self.secure.is_some() => self.try_close_masked(now, deadline),
                Phase::Collecting { deadline } => self.try_aggregate(now, deadline),
                Phase::Keying { deadline } => self.try_close_keys(now, deadline),
                Phase::Sharing { deadline } => self.try_close_shares(now, deadline),
                Phase::Unmasking { deadline } => self.try_unmask(now, deadline),
                Phase::Committing | Phase::Finished => false,
                Phase::Reporting { deadline } => self.try_close(now, deadline),
            };
            if !progressed {
                break;
            }
        }
    }

    fn try_open(&mut self, now: Millis) -> bool {
        let first = self.round.0 == 0;
        if first && self.connected.len() < self.cfg.min_participants.max(self.cfg.quorum) {
            return false;
        }
        if self.round.0 >= self.cfg.rounds || self.convergence.converged_at.is_some() {
            self.phase = Phase::Finished;
            self.open = None;
            self.outputs.push_back(Output::Broadcast(OutMessage::Finished));
            self.outputs.push_back(Output::Finished);
            return false;
        }
        let round = RoundId(self.round.0 + 1);
        let open = self.cfg.round_open(round);
        self.round = round;
        self.open = Some(open.clone());
        self.opened_at = now;
        self.contributions.clear();
        self.abstained.clear();
        self.reports.clear();
        self.expected = self
            .connected
            .iter()
            .filter(|p| !self.quarantined.contains(*p))
            .cloned()
            .collect();
        self.phase = Phase::Collecting {
            deadline: now.plus(self.cfg.collect_timeout),
        };
        self.secure = None;
        if let Some(params) = self.cfg.secure {
            self.secure = Some(super::secagg::SecureRound::new(
                params,
                self.cfg.federation.clone(),
                round,
            ));
            self.phase = Phase::Keying {
                deadline: now.plus(self.cfg.collect_timeout),
            };
        }
        self.outputs.push_back(Output::Broadcast(OutMessage::Open(open)));
        true
    }

    fn try_aggregate(&mut self, now: Millis, deadline: Millis) -> bool {
        let have = self.contributions.len();
        let everyone = !self.expected.is_empty()
            && self
                .expected
                .iter()
                .all(|p| self.contributions.contains_key(p) || self.abstained.contains(p));
        let timed_out = now >= deadline;
        if !(everyone && have >= self.cfg.quorum || timed_out) {
            return false;
        }
        if have < self.cfg.quorum.max(1) {
            // Below quorum at the deadline: keep collecting with a new deadline; the driver logs it.
            self.outputs.push_back(Output::QuorumNotMet {
                round: self.round,
                have,
                need: self.cfg.quorum,
            });
            self.phase = Phase::Collecting {
                deadline: now.plus(self.cfg.collect_timeout),
            };
            return false;
        }
        let Some(open) = self.open.clone() else {
            return false;
        };
        let contributions: Vec<AcceptedContribution> = self.contributions.values().cloned().collect();
        let views: Vec<ContributionView<'_>> = contributions
            .iter()
            .map(|c| ContributionView {
                probabilities: &c.probabilities,
                samples: c.samples,
            })
            .collect();
        let rows = open.sample_ids.len();
        let classes = self.cfg.classes as usize;
        let consensus = match aggregate(self.cfg.rule, &views, rows, classes) {
            Ok(c) => c,
            Err(_) => {
                // Every contribution was validated on entry, so this cannot happen; keep collecting.
                return false;
            }
        };
        let anomaly = contributions
            .iter()
            .map(|c| {
                (
                    c.participant.clone(),
                    distance_to_consensus(&c.probabilities, &consensus, classes),
                )
            })
            .collect();
        self.push_commit(open, contributions, consensus, anomaly, None);
        true
    }

    /// Ends collection: the round's commit for the driver, with the expected participants that neither
    /// contributed nor abstained as absent. Rounds in the clear and secure rounds both end here.
    fn push_commit(
        &mut self,
        open: RoundOpen,
        contributions: Vec<AcceptedContribution>,
        aggregate: Vec<f32>,
        anomaly: Vec<(ParticipantId, f64)>,
        secure: Option<super::secagg::SecureTranscript>,
    ) {
        let absent: Vec<ParticipantId> = self
            .expected
            .iter()
            .filter(|p| !self.contributions.contains_key(*p) && !self.abstained.contains(*p))
            .cloned()
            .collect();
        let abstained = self.abstained.iter().cloned().collect();
        self.contributors = contributions.iter().map(|c| c.participant.clone()).collect();
        self.phase = Phase::Committing;
        self.outputs.push_back(Output::Commit(Box::new(RoundCommit {
            round: self.round,
            open,
            contributions,
            absent,
            abstained,
            aggregate,
            anomaly,
            secure,
        })));
    }

    fn try_close(&mut self, now: Millis, deadline: Millis) -> bool {
        let all = self.contributors.iter().all(|p| self.reports.contains_key(p));
        if !all && now < deadline {
            return false;
        }
        let missing = self
            .contributors
            .iter()
            .filter(|p| !self.reports.contains_key(*p))
            .cloned()
            .collect();
        let reports = self.reports.iter().map(|(p, r)| (p.clone(), r.clone())).collect();
        self.outputs.push_back(Output::RoundClosed {
            round: self.round,
            reports,
            missing,
        });
        if let Some(rule) = self.cfg.stop {
            let median = stop::median_accuracy(self.reports.values());
            if let Some(done) = self.convergence.observe(&rule, self.round.0, median) {
                self.outputs.push_back(Output::Converged(done));
            }
        }
        self.phase = Phase::Waiting;
        self.open = None;
        self.contributions.clear();
        self.abstained.clear();
        self.reports.clear();
        true
    }
}

impl CoordinatorConfig {
    /// The opening of `round` under this configuration (unsigned): the round's public rows
    /// ([`round_sample_ids`]) and the federation's terms, assembled by [`round_open_message`].
    pub fn round_open(&self, round: RoundId) -> RoundOpen {
        round_open_message(
            round,
            self.rounds,
            self.public_digest,
            round_sample_ids(round, self.samples_per_round, self.public_len),
            self.temperature,
            self.rule,
            self.collect_timeout.0,
            self.quorum as u32,
            self.classes,
            self.secure,
        )
    }
}

/// A `RoundOpen` message (unsigned) for `sample_ids`, with their digest computed here so the ids and the
/// digest a participant checks always agree. [`CoordinatorConfig::round_open`] (the coordinator's state
/// machine) and the benchmarks' message exchange both build the opening here.
#[allow(clippy::too_many_arguments)]
pub fn round_open_message(
    round: RoundId,
    total_rounds: u64,
    public_digest: Digest,
    sample_ids: Vec<u64>,
    temperature: f32,
    rule: AggregationRule,
    deadline_ms: u64,
    quorum: u32,
    classes: u32,
    secure: Option<crate::wire::secagg::SecAggParams>,
) -> RoundOpen {
    RoundOpen {
        round,
        total_rounds,
        public_digest,
        sample_ids_digest: sample_ids_digest(&sample_ids),
        sample_ids,
        temperature,
        rule,
        deadline_ms,
        quorum,
        classes,
        secure,
    }
}

/// The public rows round `round` labels: `per_round` consecutive positions of a public set of `public_len`
/// rows (at most all of them), continuing where the previous round stopped and wrapping around, so round
/// after round walks the set in epochs (round 1 starts at row 0). With the task card's `[augment]`, a row
/// revisited in a later epoch is a fresh view of it (docs/protocol.md, "Round opening").
pub fn round_sample_ids(round: RoundId, per_round: u64, public_len: u64) -> Vec<u64> {
    let len = public_len.max(1);
    let n = per_round.min(len).max(1);
    let start = round.0.saturating_sub(1).wrapping_mul(n) % len;
    (0..n).map(|i| (start + i) % len).collect()
}
