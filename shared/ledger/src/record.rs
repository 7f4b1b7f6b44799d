// Over 800 lines: every record kind's canonical encoding and decoding side by side, so each byte layout is checked against its decoder in one place (tests in record/tests.rs).
//! Log records and their versioned canonical byte encoding (hand-written, no serde, so the bytes
//! that are hashed into the Merkle tree never change with a library upgrade).
//!
//! Layout (all integers big-endian), documented in docs/protocol.md "Update log record encoding":
//! `version:u8 kind:u8 field*` where a field is a fixed-width integer, an f64 as its IEEE-754 bits
//! in a u64, a 32-byte digest or key, or a `u32 length || bytes` string/byte string, and a list is
//! `u32 count || item*`. Decoding is bounded, refuses trailing bytes, unknown versions and kinds,
//! non-UTF-8 strings, non-canonical metric lists, malformed rule or encoding names and unknown guard
//! decisions ([`RuleName`], [`EncodingName`], [`GuardDecision`]), so `encode(decode(b)) == b` for every
//! accepted `b`.

use crate::ids::{Digest, ParticipantId, RoundId};

mod codec;
mod fields;
#[cfg(test)]
mod proptests;
mod summary;
#[cfg(test)]
pub(crate) mod tests;

use codec::{check_metrics, Reader, Writer};
pub use fields::{EncodingName, GuardDecision, RuleName, MAX_NAME_LEN};

/// The record encoding version this build writes and reads.
pub const RECORD_VERSION: u8 = 1;
/// Largest encoded record accepted.
pub const MAX_RECORD_LEN: usize = 1 << 20;
/// Longest string field (ids, rule names, reasons, metric names), in bytes.
pub const MAX_STRING_LEN: usize = 1024;
/// Longest byte-string field (signatures), in bytes.
pub const MAX_BYTES_LEN: usize = 1024;
/// Most items in a list field (contributors, metrics, evidence).
pub const MAX_LIST_LEN: usize = 65_536;

/// Domain tag that prefixes the statement the coordinator signs for an [`Record::Aggregate`].
pub const STATEMENT_DOMAIN: &[u8] = b"fedistill/ledger/v1/statement\0";

/// The kind byte of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RecordKind {
    /// The federation was created (always the first record).
    FederationCreated = 1,
    /// A participant was enrolled, re-keyed or revoked.
    RosterChange = 2,
    /// The coordinator opened a round.
    RoundOpened = 3,
    /// A participant's verified soft-label contribution.
    Contribution = 4,
    /// The coordinator's aggregate for a round.
    Aggregate = 5,
    /// A participant's signed round report.
    RoundReport = 6,
    /// A participant was quarantined.
    Quarantine = 7,
    /// Differential-privacy budget spent by a participant in a round.
    PrivacySpend = 8,
    /// A participant's signed statement that it does not contribute to a round (e.g. budget exhausted).
    Abstention = 9,
    /// A quarantined participant was readmitted.
    QuarantineRelease = 10,
    /// The task the federation learns was declared (its signed card's digest).
    TaskDeclared = 11,
    /// A secure round's key agreement, shares and unmasking (the transcript stored beside the log).
    SecureAggregation = 12,
}

impl RecordKind {
    fn from_byte(b: u8) -> Option<RecordKind> {
        Some(match b {
            1 => RecordKind::FederationCreated,
            2 => RecordKind::RosterChange,
            3 => RecordKind::RoundOpened,
            4 => RecordKind::Contribution,
            5 => RecordKind::Aggregate,
            6 => RecordKind::RoundReport,
            7 => RecordKind::Quarantine,
            8 => RecordKind::PrivacySpend,
            9 => RecordKind::Abstention,
            10 => RecordKind::QuarantineRelease,
            11 => RecordKind::TaskDeclared,
            12 => RecordKind::SecureAggregation,
            _ => return None,
        })
    }

    /// Stable snake_case name, used in reports and in signed statements.
    pub fn name(self) -> &'static str {
        match self {
            RecordKind::FederationCreated => "federation_created",
            RecordKind::RosterChange => "roster_change",
            RecordKind::RoundOpened => "round_opened",
            RecordKind::Contribution => "contribution",
            RecordKind::Aggregate => "aggregate",
            RecordKind::RoundReport => "round_report",
            RecordKind::Quarantine => "quarantine",
            RecordKind::PrivacySpend => "privacy_spend",
            RecordKind::Abstention => "abstention",
            RecordKind::QuarantineRelease => "quarantine_release",
            RecordKind::TaskDeclared => "task_declared",
            RecordKind::SecureAggregation => "secure_aggregation",
        }
    }
}

/// What a roster change does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RosterAction {
    /// A new participant joins with the given keys.
    Enrol = 1,
    /// An enrolled participant's keys are replaced.
    Rekey = 2,
    /// The participant is revoked; its later contributions are invalid.
    Revoke = 3,
}

impl RosterAction {
    fn from_byte(b: u8) -> Option<RosterAction> {
        Some(match b {
            1 => RosterAction::Enrol,
            2 => RosterAction::Rekey,
            3 => RosterAction::Revoke,
            _ => return None,
        })
    }

    /// Stable lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            RosterAction::Enrol => "enrol",
            RosterAction::Rekey => "rekey",
            RosterAction::Revoke => "revoke",
        }
    }
}

/// A named measurement (`accuracy`, `kl`, a guard score…). Lists of metrics are canonical: sorted
/// by name (bytewise), names unique and non-empty; build them with [`Metric::canonical`].
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// Metric name.
    pub name: String,
    /// Value; any f64 bit pattern round-trips exactly.
    pub value: f64,
}

impl Metric {
    /// Sorts `(name, value)` pairs into the canonical order, refusing empty or duplicate names.
    pub fn canonical<I, S>(pairs: I) -> Result<Vec<Metric>, RecordError>
    where
        I: IntoIterator<Item = (S, f64)>,
        S: Into<String>,
    {
        let mut out: Vec<Metric> = pairs
            .into_iter()
            .map(|(n, value)| Metric { name: n.into(), value })
            .collect();
        out.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        check_metrics(&out)?;
        Ok(out)
    }
}

/// One entry of the update log.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// The federation was created; the first record of every log.
    FederationCreated {
        /// Federation identifier (also bound into every signed statement).
        federation_id: String,
        /// The coordinator's ed25519 public key.
        coordinator_key: [u8; 32],
        /// Creation time, seconds since the Unix epoch.
        created_unix: u64,
        /// SHA-256 of the federation configuration the operator signed off.
        config_digest: Digest,
    },
    /// Enrolment, re-keying or revocation of a participant.
    RosterChange {
        /// Who.
        participant: ParticipantId,
        /// What happens.
        action: RosterAction,
        /// The participant's ed25519 key that signs its statements (zero for a revocation).
        signing_key: [u8; 32],
        /// SHA-256 of the participant's TLS certificate (DER).
        cert_fingerprint: Digest,
        /// Operator's free-text reason.
        reason: String,
    },
    /// The coordinator opened a round.
    RoundOpened {
        /// Round number.
        round: RoundId,
        /// Digest of the public transfer set.
        public_set_digest: Digest,
        /// Digest of the sample ids used this round.
        sample_ids_digest: Digest,
        /// Distillation temperature.
        temperature: f64,
        /// Aggregation rule name (as `AggregationRule::name()` spells it).
        rule: RuleName,
        /// Deadline, milliseconds since the Unix epoch.
        deadline_unix_ms: u64,
        /// Contributions needed to aggregate.
        quorum: u32,
    },
    /// A verified soft-label contribution. `payload_digest` is the SHA-256 of the exact message
    /// bytes the participant signed (its `SoftLabels` wire message); those bytes are stored beside
    /// the log under that digest, and `signature` is the participant's envelope signature over
    /// `shared::crypto::envelope_signing_bytes("fedistill/soft-labels", participant, federation, round,
    /// sequence, payload_digest)` (logs written by protocol 2 used `signing_bytes`, without the participant).
    Contribution {
        /// Round number.
        round: RoundId,
        /// Contributor.
        participant: ParticipantId,
        /// Payload encoding name (`f32`, `f16`, `int8`, `topk:K`, … as `Encoding::name()` spells it).
        encoding: EncodingName,
        /// SHA-256 of the signed message bytes (stored beside the log under this digest).
        payload_digest: Digest,
        /// The participant's message sequence number (replay protection).
        sequence: u64,
        /// The participant's ed25519 envelope signature (see the variant docs).
        signature: Vec<u8>,
    },
    /// The aggregate of a round.
    Aggregate {
        /// Round number.
        round: RoundId,
        /// SHA-256 of the aggregate soft-label bytes.
        digest: Digest,
        /// Aggregation rule name.
        rule: RuleName,
        /// Contributors, in the order their payloads were fed to the rule.
        contributors: Vec<ParticipantId>,
        /// The coordinator's ed25519 signature over [`Record::statement`].
        signature: Vec<u8>,
    },
    /// A participant's report after distilling the round's student. Like a contribution, it
    /// carries the participant's envelope signature over `envelope_signing_bytes("fedistill/round-report",
    /// participant, federation, round, sequence, message_digest)`; the message bytes may be stored as a
    /// payload.
    RoundReport {
        /// Round number.
        round: RoundId,
        /// Reporter.
        participant: ParticipantId,
        /// Metrics, canonical order.
        metrics: Vec<Metric>,
        /// SHA-256 of the quantized student.
        student_digest: Digest,
        /// Degradation-guard decision, logged as `accept` or `reject: <reason>`.
        guard: GuardDecision,
        /// SHA-256 of the signed `RoundReport` message bytes.
        message_digest: Digest,
        /// The participant's message sequence number.
        sequence: u64,
        /// The participant's ed25519 envelope signature.
        signature: Vec<u8>,
    },
    /// A participant was quarantined.
    Quarantine {
        /// Round in which it was decided.
        round: RoundId,
        /// Who.
        participant: ParticipantId,
        /// Why, in words.
        reason: String,
        /// Scores that triggered it, canonical order.
        evidence: Vec<Metric>,
    },
    /// Differential-privacy budget spent.
    PrivacySpend {
        /// Round number.
        round: RoundId,
        /// Who spent it.
        participant: ParticipantId,
        /// Epsilon spent this round.
        epsilon: f64,
        /// Delta spent this round.
        delta: f64,
    },
    /// A participant said, signed, that it does not contribute to a round. Like a contribution it carries
    /// the participant's envelope signature over `envelope_signing_bytes("fedistill/abstain", participant,
    /// federation, round, sequence, message_digest)`; the signed `Abstain` message bytes are stored as a
    /// payload.
    Abstention {
        /// Round number.
        round: RoundId,
        /// Who abstains.
        participant: ParticipantId,
        /// Reason code (`budget_exhausted`).
        reason: String,
        /// The figures behind it (for `budget_exhausted`: `epsilon_budget`, `epsilon_spent`,
        /// `epsilon_would_reach`), canonical order.
        figures: Vec<Metric>,
        /// SHA-256 of the signed `Abstain` message bytes.
        message_digest: Digest,
        /// The participant's message sequence number.
        sequence: u64,
        /// The participant's ed25519 envelope signature.
        signature: Vec<u8>,
    },
    /// A quarantined participant was readmitted after the aggregate of `round` (policy
    /// `release_after_rounds`); it may contribute again from the next round.
    QuarantineRelease {
        /// Round after whose aggregate it was decided.
        round: RoundId,
        /// Who.
        participant: ParticipantId,
        /// Round of the quarantine that ends.
        quarantined_round: RoundId,
        /// The policy's `release_after_rounds` (`round >= quarantined_round + after_rounds`).
        after_rounds: u32,
        /// Why, in words.
        reason: String,
    },
    /// The task card the federation learns (appended right after `FederationCreated` when the coordinator
    /// runs from a card): every round's public-set digest must equal `public_digest`.
    TaskDeclared {
        /// The card's task name.
        name: String,
        /// Digest of the card (`TaskCard::digest`: domain-tagged SHA-256 of its canonical TOML).
        card_digest: Digest,
        /// SHA-256 of the public transfer set file the card names.
        public_digest: Digest,
        /// Rows of the public transfer set.
        public_rows: u64,
    },
    /// A secure round (secure aggregation): the coordinator saw only masked inputs (its `Contribution`
    /// records, encoding `masked_u64`) and unmasked their sum. `transcript_digest` is the SHA-256 of the
    /// transcript stored beside the log (the signed key adverts, the shares messages by digest and signature,
    /// U2, U3 and the signed reveals), from which an auditor recomputes the aggregate bit for bit.
    SecureAggregation {
        /// Round number.
        round: RoundId,
        /// SHA-256 of the stored transcript.
        transcript_digest: Digest,
        /// Shares needed to rebuild a secret.
        threshold: u32,
        /// SecAgg+ neighbourhood size (0 = everyone).
        neighbours: u32,
        /// Participants whose masked inputs were summed (U3), in id order.
        survivors: Vec<ParticipantId>,
        /// Participants that shared keys but sent no masked input (U2 \ U3), in id order.
        dropped: Vec<ParticipantId>,
    },
}

/// Why bytes are not a canonical record, or a record cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The input ended inside a field.
    #[error("record truncated while reading {0}")]
    Truncated(&'static str),
    /// The version byte is not one this build reads.
    #[error("unsupported record version {0} (this build reads version {RECORD_VERSION})")]
    Version(u8),
    /// The kind byte is unknown.
    #[error("unknown record kind {0}")]
    Kind(u8),
    /// An enumerated field has an unknown value.
    #[error("invalid value {value} for {field}")]
    InvalidEnum {
        /// Field name.
        field: &'static str,
        /// Offending byte.
        value: u8,
    },
    /// A length or count exceeds its bound.
    #[error("{field} is too long ({len} > {max})")]
    TooLong {
        /// Field name.
        field: &'static str,
        /// Declared length.
        len: usize,
        /// Bound.
        max: usize,
    },
    /// A string field is not UTF-8.
    #[error("{0} is not valid UTF-8")]
    Utf8(&'static str),
    /// Bytes remain after the last field.
    #[error("{0} trailing bytes after the record")]
    Trailing(usize),
    /// A metric list is unsorted, has duplicates or an empty name.
    #[error("metric list is not canonical: {0}")]
    Metrics(String),
    /// A rule or encoding name does not have the shape of one (see [`RuleName`]).
    #[error("invalid {field} name {value:?}: {why}")]
    InvalidName {
        /// Field name (`rule` or `encoding`).
        field: &'static str,
        /// The offending string (at most [`MAX_NAME_LEN`] characters of it).
        value: String,
        /// What is wrong with it.
        why: String,
    },
    /// A round report's guard field is neither `accept` nor `reject: <reason>`.
    #[error("unknown guard decision {0:?} (expected \"accept\" or \"reject: <reason>\")")]
    UnknownGuard(String),
}

impl Record {
    /// The record's kind.
    pub fn kind(&self) -> RecordKind {
        match self {
            Record::FederationCreated { .. } => RecordKind::FederationCreated,
            Record::RosterChange { .. } => RecordKind::RosterChange,
            Record::RoundOpened { .. } => RecordKind::RoundOpened,
            Record::Contribution { .. } => RecordKind::Contribution,
            Record::Aggregate { .. } => RecordKind::Aggregate,
            Record::RoundReport { .. } => RecordKind::RoundReport,
            Record::Quarantine { .. } => RecordKind::Quarantine,
            Record::PrivacySpend { .. } => RecordKind::PrivacySpend,
            Record::Abstention { .. } => RecordKind::Abstention,
            Record::QuarantineRelease { .. } => RecordKind::QuarantineRelease,
            Record::TaskDeclared { .. } => RecordKind::TaskDeclared,
            Record::SecureAggregation { .. } => RecordKind::SecureAggregation,
        }
    }

    /// The round the record belongs to, if any.
    pub fn round(&self) -> Option<RoundId> {
        match self {
            Record::FederationCreated { .. } | Record::RosterChange { .. } | Record::TaskDeclared { .. } => None,
            Record::RoundOpened { round, .. }
            | Record::Contribution { round, .. }
            | Record::Aggregate { round, .. }
            | Record::RoundReport { round, .. }
            | Record::Quarantine { round, .. }
            | Record::PrivacySpend { round, .. }
            | Record::Abstention { round, .. }
            | Record::QuarantineRelease { round, .. }
            | Record::SecureAggregation { round, .. } => Some(*round),
        }
    }

    /// The participant the record is about, if any.
    pub fn participant(&self) -> Option<&ParticipantId> {
        match self {
            Record::RosterChange { participant, .. }
            | Record::Contribution { participant, .. }
            | Record::RoundReport { participant, .. }
            | Record::Quarantine { participant, .. }
            | Record::PrivacySpend { participant, .. }
            | Record::Abstention { participant, .. }
            | Record::QuarantineRelease { participant, .. } => Some(participant),
            _ => None,
        }
    }

    /// The embedded signature, for the kinds that carry one.
    pub fn signature(&self) -> Option<&[u8]> {
        match self {
            Record::Contribution { signature, .. }
            | Record::Aggregate { signature, .. }
            | Record::RoundReport { signature, .. }
            | Record::Abstention { signature, .. } => Some(signature),
            _ => None,
        }
    }

    /// For an [`Record::Aggregate`], the exact bytes the coordinator signs: [`STATEMENT_DOMAIN`],
    /// the federation id (u32 length-prefixed), then the canonical record with an empty signature
    /// field. `None` for other kinds (contributions and round reports carry the participant's wire
    /// envelope signature instead, see their docs).
    pub fn statement(&self, federation_id: &str) -> Result<Option<Vec<u8>>, RecordError> {
        let unsigned = match self {
            Record::Aggregate {
                round,
                digest,
                rule,
                contributors,
                ..
            } => Record::Aggregate {
                round: *round,
                digest: *digest,
                rule: rule.clone(),
                contributors: contributors.clone(),
                signature: Vec::new(),
            },
            _ => return Ok(None),
        };
        let mut w = Writer::default();
        w.raw(STATEMENT_DOMAIN);
        w.string("federation_id", federation_id)?;
        w.raw(&unsigned.encode()?);
        Ok(Some(w.buf))
    }

    /// Canonical bytes (the Merkle leaf data).
    pub fn encode(&self) -> Result<Vec<u8>, RecordError> {
        let mut w = Writer::default();
        w.u8(RECORD_VERSION);
        w.u8(self.kind() as u8);
        match self {
            Record::FederationCreated {
                federation_id,
                coordinator_key,
                created_unix,
                config_digest,
            } => {
                w.string("federation_id", federation_id)?;
                w.raw(coordinator_key);
                w.u64(*created_unix);
                w.raw(&config_digest.0);
            }
            Record::RosterChange {
                participant,
                action,
                signing_key,
                cert_fingerprint,
                reason,
            } => {
                w.string("participant", participant.as_str())?;
                w.u8(*action as u8);
                w.raw(signing_key);
                w.raw(&cert_fingerprint.0);
                w.string("reason", reason)?;
            }
            Record::RoundOpened {
                round,
                public_set_digest,
                sample_ids_digest,
                temperature,
                rule,
                deadline_unix_ms,
                quorum,
            } => {
                w.u64(round.0);
                w.raw(&public_set_digest.0);
                w.raw(&sample_ids_digest.0);
                w.f64(*temperature);
                w.string("rule", rule.as_str())?;
                w.u64(*deadline_unix_ms);
                w.u32(*quorum);
            }
            Record::Contribution {
                round,
                participant,
                encoding,
                payload_digest,
                sequence,
                signature,
            } => {
                w.u64(round.0);
                w.string("participant", participant.as_str())?;
                w.string("encoding", encoding.as_str())?;
                w.raw(&payload_digest.0);
                w.u64(*sequence);
                w.bytes("signature", signature)?;
            }
            Record::Aggregate {
                round,
                digest,
                rule,
                contributors,
                signature,
            } => {
                w.u64(round.0);
                w.raw(&digest.0);
                w.string("rule", rule.as_str())?;
                w.count("contributors", contributors.len())?;
                for c in contributors {
                    w.string("contributor", c.as_str())?;
                }
                w.bytes("signature", signature)?;
            }
            Record::RoundReport {
                round,
                participant,
                metrics,
                student_digest,
                guard,
                message_digest,
                sequence,
                signature,
            } => {
                w.u64(round.0);
                w.string("participant", participant.as_str())?;
                w.metrics(metrics)?;
                w.raw(&student_digest.0);
                w.string("guard", &guard.encoded())?;
                w.raw(&message_digest.0);
                w.u64(*sequence);
                w.bytes("signature", signature)?;
            }
            Record::Quarantine {
                round,
                participant,
                reason,
                evidence,
            } => {
                w.u64(round.0);
                w.string("participant", participant.as_str())?;
                w.string("reason", reason)?;
                w.metrics(evidence)?;
            }
            Record::PrivacySpend {
                round,
                participant,
                epsilon,
                delta,
            } => {
                w.u64(round.0);
                w.string("participant", participant.as_str())?;
                w.f64(*epsilon);
                w.f64(*delta);
            }
            Record::Abstention {
                round,
                participant,
                reason,
                figures,
                message_digest,
                sequence,
                signature,
            } => {
                w.u64(round.0);
                w.string("participant", participant.as_str())?;
                w.string("reason", reason)?;
                w.metrics(figures)?;
                w.raw(&message_digest.0);
                w.u64(*sequence);
                w.bytes("signature", signature)?;
            }
            Record::QuarantineRelease {
                round,
                participant,
                quarantined_round,
                after_rounds,
                reason,
            } => {
                w.u64(round.0);
                w.string("participant", participant.as_str())?;
                w.u64(quarantined_round.0);
                w.u32(*after_rounds);
                w.string("reason", reason)?;
            }
            Record::TaskDeclared {
                name,
                card_digest,
                public_digest,
                public_rows,
            } => {
                w.string("name", name)?;
                w.raw(&card_digest.0);
                w.raw(&public_digest.0);
                w.u64(*public_rows);
            }
            Record::SecureAggregation {
                round,
                transcript_digest,
                threshold,
                neighbours,
                survivors,
                dropped,
            } => {
                w.u64(round.0);
                w.raw(&transcript_digest.0);
                w.u32(*threshold);
                w.u32(*neighbours);
                for (field, list) in [("survivors", survivors), ("dropped", dropped)] {
                    w.count(field, list.len())?;
                    for p in list {
                        w.string("participant", p.as_str())?;
                    }
                }
            }
        }
        if w.buf.len() > MAX_RECORD_LEN {
            return Err(RecordError::TooLong {
                field: "record",
                len: w.buf.len(),
                max: MAX_RECORD_LEN,
            });
        }
        Ok(w.buf)
    }

    /// Parses canonical bytes; see the module docs for what is refused.
    pub fn decode(bytes: &[u8]) -> Result<Record, RecordError> {
        if bytes.len() > MAX_RECORD_LEN {
            return Err(RecordError::TooLong {
                field: "record",
                len: bytes.len(),
                max: MAX_RECORD_LEN,
            });
        }
        let mut r = Reader { buf: bytes };
        let version = r.u8("version")?;
        if version != RECORD_VERSION {
            return Err(RecordError::Version(version));
        }
        let kind_byte = r.u8("kind")?;
        let kind = RecordKind::from_byte(kind_byte).ok_or(RecordError::Kind(kind_byte))?;
        let record = match kind {
            RecordKind::FederationCreated => Record::FederationCreated {
                federation_id: r.string("federation_id")?,
                coordinator_key: r.array("coordinator_key")?,
                created_unix: r.u64("created_unix")?,
                config_digest: Digest(r.array("config_digest")?),
            },
            RecordKind::RosterChange => Record::RosterChange {
                participant: ParticipantId(r.string("participant")?),
                action: {
                    let b = r.u8("action")?;
                    RosterAction::from_byte(b).ok_or(RecordError::InvalidEnum {
                        field: "action",
                        value: b,
                    })?
                },
                signing_key: r.array("signing_key")?,
                cert_fingerprint: Digest(r.array("cert_fingerprint")?),
                reason: r.string("reason")?,
            },
            RecordKind::RoundOpened => Record::RoundOpened {
                round: RoundId(r.u64("round")?),
                public_set_digest: Digest(r.array("public_set_digest")?),
                sample_ids_digest: Digest(r.array("sample_ids_digest")?),
                temperature: r.f64("temperature")?,
                rule: RuleName::new(r.string("rule")?)?,
                deadline_unix_ms: r.u64("deadline_unix_ms")?,
                quorum: r.u32("quorum")?,
            },
            RecordKind::Contribution => Record::Contribution {
                round: RoundId(r.u64("round")?),
                participant: ParticipantId(r.string("participant")?),
                encoding: EncodingName::new(r.string("encoding")?)?,
                payload_digest: Digest(r.array("payload_digest")?),
                sequence: r.u64("sequence")?,
                signature: r.bytes("signature")?,
            },
            RecordKind::Aggregate => {
                let round = RoundId(r.u64("round")?);
                let digest = Digest(r.array("digest")?);
                let rule = RuleName::new(r.string("rule")?)?;
                let n = r.count("contributors")?;
                let mut contributors = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    contributors.push(ParticipantId(r.string("contributor")?));
                }
                Record::Aggregate {
                    round,
                    digest,
                    rule,
                    contributors,
                    signature: r.bytes("signature")?,
                }
            }
            RecordKind::RoundReport => Record::RoundReport {
                round: RoundId(r.u64("round")?),
                participant: ParticipantId(r.string("participant")?),
                metrics: r.metrics("metrics")?,
                student_digest: Digest(r.array("student_digest")?),
                guard: GuardDecision::parse(&r.string("guard")?)?,
                message_digest: Digest(r.array("message_digest")?),
                sequence: r.u64("sequence")?,
                signature: r.bytes("signature")?,
            },
            RecordKind::Quarantine => Record::Quarantine {
                round: RoundId(r.u64("round")?),
                participant: ParticipantId(r.string("participant")?),
                reason: r.string("reason")?,
                evidence: r.metrics("evidence")?,
            },
            RecordKind::PrivacySpend => Record::PrivacySpend {
                round: RoundId(r.u64("round")?),
                participant: ParticipantId(r.string("participant")?),
                epsilon: r.f64("epsilon")?,
                delta: r.f64("delta")?,
            },
            RecordKind::Abstention => Record::Abstention {
                round: RoundId(r.u64("round")?),
                participant: ParticipantId(r.string("participant")?),
                reason: r.string("reason")?,
                figures: r.metrics("figures")?,
                message_digest: Digest(r.array("message_digest")?),
                sequence: r.u64("sequence")?,
                signature: r.bytes("signature")?,
            },
            RecordKind::QuarantineRelease => Record::QuarantineRelease {
                round: RoundId(r.u64("round")?),
                participant: ParticipantId(r.string("participant")?),
                quarantined_round: RoundId(r.u64("quarantined_round")?),
                after_rounds: r.u32("after_rounds")?,
                reason: r.string("reason")?,
            },
            RecordKind::TaskDeclared => Record::TaskDeclared {
                name: r.string("name")?,
                card_digest: Digest(r.array("card_digest")?),
                public_digest: Digest(r.array("public_digest")?),
                public_rows: r.u64("public_rows")?,
            },
            RecordKind::SecureAggregation => {
                let round = RoundId(r.u64("round")?);
                let transcript_digest = Digest(r.array("transcript_digest")?);
                let threshold = r.u32("threshold")?;
                let neighbours = r.u32("neighbours")?;
                let mut lists = [Vec::new(), Vec::new()];
                for (field, list) in ["survivors", "dropped"].into_iter().zip(lists.iter_mut()) {
                    let n = r.count(field)?;
                    for _ in 0..n {
                        list.push(ParticipantId(r.string("participant")?));
                    }
                }
                let [survivors, dropped] = lists;
                Record::SecureAggregation {
                    round,
                    transcript_digest,
                    threshold,
                    neighbours,
                    survivors,
                    dropped,
                }
            }
        };
        if !r.buf.is_empty() {
            return Err(RecordError::Trailing(r.buf.len()));
        }
        Ok(record)
    }
}
