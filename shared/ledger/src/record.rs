//! Log records and their versioned canonical byte encoding (hand-written, no serde, so the bytes
//! that are hashed into the Merkle tree never change with a library upgrade).
//!
//! Layout (all integers big-endian), documented in docs/protocol.md "Update log record encoding":
//! `version:u8 kind:u8 field*` where a field is a fixed-width integer, an f64 as its IEEE-754 bits
//! in a u64, a 32-byte digest or key, or a `u32 length || bytes` string/byte string, and a list is
//! `u32 count || item*`. Decoding is bounded, refuses trailing bytes, unknown versions and kinds,
//! non-UTF-8 strings and non-canonical metric lists, so `encode(decode(b)) == b` for every accepted `b`.

use crate::ids::{Digest, ParticipantId, RoundId};

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
        /// Aggregation rule name (as `shared::protocol` spells it).
        rule: String,
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
        /// Payload encoding name (`f32`, `f16`, `int8`, `topk:K`).
        encoding: String,
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
        rule: String,
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
        /// Degradation-guard decision (`accept`, `rollback`, …).
        guard: String,
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
        }
    }

    /// The round the record belongs to, if any.
    pub fn round(&self) -> Option<RoundId> {
        match self {
            Record::FederationCreated { .. } | Record::RosterChange { .. } => None,
            Record::RoundOpened { round, .. }
            | Record::Contribution { round, .. }
            | Record::Aggregate { round, .. }
            | Record::RoundReport { round, .. }
            | Record::Quarantine { round, .. }
            | Record::PrivacySpend { round, .. }
            | Record::Abstention { round, .. }
            | Record::QuarantineRelease { round, .. } => Some(*round),
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
                w.string("rule", rule)?;
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
                w.string("encoding", encoding)?;
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
                w.string("rule", rule)?;
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
                w.string("guard", guard)?;
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
                rule: r.string("rule")?,
                deadline_unix_ms: r.u64("deadline_unix_ms")?,
                quorum: r.u32("quorum")?,
            },
            RecordKind::Contribution => Record::Contribution {
                round: RoundId(r.u64("round")?),
                participant: ParticipantId(r.string("participant")?),
                encoding: r.string("encoding")?,
                payload_digest: Digest(r.array("payload_digest")?),
                sequence: r.u64("sequence")?,
                signature: r.bytes("signature")?,
            },
            RecordKind::Aggregate => {
                let round = RoundId(r.u64("round")?);
                let digest = Digest(r.array("digest")?);
                let rule = r.string("rule")?;
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
                guard: r.string("guard")?,
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
        };
        if !r.buf.is_empty() {
            return Err(RecordError::Trailing(r.buf.len()));
        }
        Ok(record)
    }

    /// One human-readable line for timelines (`fedistill audit show`).
    pub fn summary(&self) -> String {
        fn short(d: &Digest) -> String {
            d.to_hex()[..12].to_string()
        }
        fn metrics(m: &[Metric]) -> String {
            m.iter()
                .map(|m| format!("{}={}", m.name, m.value))
                .collect::<Vec<_>>()
                .join(" ")
        }
        match self {
            Record::FederationCreated {
                federation_id,
                created_unix,
                config_digest,
                ..
            } => format!(
                "federation {federation_id:?} created at {created_unix} (config {})",
                short(config_digest)
            ),
            Record::RosterChange {
                participant,
                action,
                reason,
                ..
            } => {
                format!("roster: {} {participant} ({reason})", action.name())
            }
            Record::RoundOpened {
                round,
                rule,
                temperature,
                quorum,
                deadline_unix_ms,
                ..
            } => format!(
                "round {round} opened: rule {rule}, T={temperature}, quorum {quorum}, deadline {deadline_unix_ms} ms"
            ),
            Record::Contribution {
                round,
                participant,
                encoding,
                payload_digest,
                sequence,
                ..
            } => format!(
                "round {round}: contribution from {participant} ({encoding}, payload {}, seq {sequence})",
                short(payload_digest)
            ),
            Record::Aggregate {
                round,
                digest,
                rule,
                contributors,
                ..
            } => format!(
                "round {round}: aggregate {} by {rule} over [{}]",
                short(digest),
                contributors.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ")
            ),
            Record::RoundReport {
                round,
                participant,
                metrics: m,
                student_digest,
                guard,
                ..
            } => format!(
                "round {round}: report from {participant}: {} student {} guard {guard}",
                metrics(m),
                short(student_digest)
            ),
            Record::Quarantine {
                round,
                participant,
                reason,
                evidence,
            } => format!(
                "round {round}: QUARANTINE {participant}: {reason} [{}]",
                metrics(evidence)
            ),
            Record::PrivacySpend {
                round,
                participant,
                epsilon,
                delta,
            } => {
                format!("round {round}: privacy spend by {participant}: epsilon={epsilon} delta={delta}")
            }
            Record::Abstention {
                round,
                participant,
                reason,
                figures,
                ..
            } => format!(
                "round {round}: ABSTENTION by {participant}: {reason} [{}]",
                metrics(figures)
            ),
            Record::QuarantineRelease {
                round,
                participant,
                quarantined_round,
                after_rounds,
                reason,
            } => format!(
                "round {round}: RELEASE {participant} from the quarantine of round {quarantined_round} after {after_rounds} round(s): {reason}"
            ),
        }
    }
}

fn check_metrics(m: &[Metric]) -> Result<(), RecordError> {
    for (i, metric) in m.iter().enumerate() {
        if metric.name.is_empty() {
            return Err(RecordError::Metrics(format!("metric {i} has an empty name")));
        }
        if i > 0 && m[i - 1].name.as_bytes() >= metric.name.as_bytes() {
            return Err(RecordError::Metrics(format!(
                "{:?} does not sort strictly after {:?}",
                metric.name,
                m[i - 1].name
            )));
        }
    }
    Ok(())
}

#[derive(Default)]
struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn raw(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }
    fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.raw(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.raw(&v.to_be_bytes());
    }
    fn f64(&mut self, v: f64) {
        self.u64(v.to_bits());
    }
    fn len_prefix(&mut self, field: &'static str, len: usize, max: usize) -> Result<(), RecordError> {
        if len > max {
            return Err(RecordError::TooLong { field, len, max });
        }
        // `max` is far below u32::MAX, so the cast is exact.
        self.u32(len as u32);
        Ok(())
    }
    fn string(&mut self, field: &'static str, s: &str) -> Result<(), RecordError> {
        self.len_prefix(field, s.len(), MAX_STRING_LEN)?;
        self.raw(s.as_bytes());
        Ok(())
    }
    fn bytes(&mut self, field: &'static str, b: &[u8]) -> Result<(), RecordError> {
        self.len_prefix(field, b.len(), MAX_BYTES_LEN)?;
        self.raw(b);
        Ok(())
    }
    fn count(&mut self, field: &'static str, n: usize) -> Result<(), RecordError> {
        self.len_prefix(field, n, MAX_LIST_LEN)
    }
    fn metrics(&mut self, m: &[Metric]) -> Result<(), RecordError> {
        check_metrics(m)?;
        self.count("metrics", m.len())?;
        for metric in m {
            self.string("metric name", &metric.name)?;
            self.f64(metric.value);
        }
        Ok(())
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl Reader<'_> {
    fn take(&mut self, field: &'static str, n: usize) -> Result<&[u8], RecordError> {
        if self.buf.len() < n {
            return Err(RecordError::Truncated(field));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], RecordError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(field, N)?);
        Ok(out)
    }
    fn u8(&mut self, field: &'static str) -> Result<u8, RecordError> {
        Ok(self.array::<1>(field)?[0])
    }
    fn u32(&mut self, field: &'static str) -> Result<u32, RecordError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }
    fn u64(&mut self, field: &'static str) -> Result<u64, RecordError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }
    fn f64(&mut self, field: &'static str) -> Result<f64, RecordError> {
        Ok(f64::from_bits(self.u64(field)?))
    }
    fn len(&mut self, field: &'static str, max: usize) -> Result<usize, RecordError> {
        let len = self.u32(field)? as usize;
        if len > max {
            return Err(RecordError::TooLong { field, len, max });
        }
        Ok(len)
    }
    fn string(&mut self, field: &'static str) -> Result<String, RecordError> {
        let len = self.len(field, MAX_STRING_LEN)?;
        let b = self.take(field, len)?;
        String::from_utf8(b.to_vec()).map_err(|_| RecordError::Utf8(field))
    }
    fn bytes(&mut self, field: &'static str) -> Result<Vec<u8>, RecordError> {
        let len = self.len(field, MAX_BYTES_LEN)?;
        Ok(self.take(field, len)?.to_vec())
    }
    fn count(&mut self, field: &'static str) -> Result<usize, RecordError> {
        self.len(field, MAX_LIST_LEN)
    }
    fn metrics(&mut self, field: &'static str) -> Result<Vec<Metric>, RecordError> {
        let n = self.count(field)?;
        let mut out = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            let name = self.string("metric name")?;
            let value = self.f64("metric value")?;
            out.push(Metric { name, value });
        }
        check_metrics(&out)?;
        Ok(out)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One record of every kind, with distinctive field values.
    pub(crate) fn samples() -> Vec<Record> {
        let p = |s: &str| ParticipantId::new(s);
        vec![
            Record::FederationCreated {
                federation_id: "fed-1".into(),
                coordinator_key: [7; 32],
                created_unix: 1_700_000_000,
                config_digest: Digest::of(b"config"),
            },
            Record::RosterChange {
                participant: p("bank-a"),
                action: RosterAction::Enrol,
                signing_key: [9; 32],
                cert_fingerprint: Digest::of(b"cert"),
                reason: "initial roster".into(),
            },
            Record::RoundOpened {
                round: RoundId(3),
                public_set_digest: Digest::of(b"public"),
                sample_ids_digest: Digest::of(b"ids"),
                temperature: 2.5,
                rule: "trimmed_mean:0.1".into(),
                deadline_unix_ms: 1_700_000_123_456,
                quorum: 2,
            },
            Record::Contribution {
                round: RoundId(3),
                participant: p("bank-a"),
                encoding: "topk:5".into(),
                payload_digest: Digest::of(b"payload"),
                sequence: 42,
                signature: vec![1; 64],
            },
            Record::Aggregate {
                round: RoundId(3),
                digest: Digest::of(b"agg"),
                rule: "mean".into(),
                contributors: vec![p("bank-a"), p("hospital-b")],
                signature: vec![2; 64],
            },
            Record::RoundReport {
                round: RoundId(3),
                participant: p("hospital-b"),
                metrics: Metric::canonical([("f1", 0.5), ("accuracy", 0.875)]).expect("distinct names"),
                student_digest: Digest::of(b"student"),
                guard: "accept".into(),
                message_digest: Digest::of(b"report message"),
                sequence: 43,
                signature: vec![3; 64],
            },
            Record::Quarantine {
                round: RoundId(4),
                participant: p("bank-c"),
                reason: "outlier".into(),
                evidence: Metric::canonical([("z_score", 9.25)]).expect("one name"),
            },
            Record::PrivacySpend {
                round: RoundId(4),
                participant: p("bank-a"),
                epsilon: 0.5,
                delta: 1e-5,
            },
            Record::Abstention {
                round: RoundId(5),
                participant: p("bank-a"),
                reason: "budget_exhausted".into(),
                figures: Metric::canonical([("epsilon_spent", 8.0), ("epsilon_budget", 10.0)]).expect("distinct"),
                message_digest: Digest::of(b"abstain message"),
                sequence: 44,
                signature: vec![4; 64],
            },
            Record::QuarantineRelease {
                round: RoundId(9),
                participant: p("bank-c"),
                quarantined_round: RoundId(4),
                after_rounds: 5,
                reason: "served".into(),
            },
        ]
    }

    #[test]
    fn every_kind_round_trips_byte_for_byte() {
        for r in samples() {
            let bytes = r.encode().expect("sample encodes");
            assert_eq!(bytes[0], RECORD_VERSION);
            assert_eq!(bytes[1], r.kind() as u8);
            let back = Record::decode(&bytes).expect("own encoding decodes");
            assert_eq!(back, r);
            assert_eq!(back.encode().expect("re-encodes"), bytes);
        }
    }

    #[test]
    fn privacy_spend_layout_is_exactly_as_documented() {
        // Expected bytes written by hand from the layout in docs/protocol.md.
        let r = Record::PrivacySpend {
            round: RoundId(1),
            participant: ParticipantId::new("ab"),
            epsilon: 1.0,
            delta: 0.0,
        };
        let mut want = vec![1u8, 8];
        want.extend_from_slice(&1u64.to_be_bytes());
        want.extend_from_slice(&[0, 0, 0, 2, b'a', b'b']);
        want.extend_from_slice(&[0x3f, 0xf0, 0, 0, 0, 0, 0, 0]);
        want.extend_from_slice(&[0; 8]);
        assert_eq!(r.encode().expect("encodes"), want);
    }

    #[test]
    fn quarantine_release_layout_is_exactly_as_documented() {
        // Expected bytes written by hand from the layout in docs/protocol.md.
        let r = Record::QuarantineRelease {
            round: RoundId(7),
            participant: ParticipantId::new("ab"),
            quarantined_round: RoundId(4),
            after_rounds: 3,
            reason: "r".into(),
        };
        let mut want = vec![1u8, 10];
        want.extend_from_slice(&7u64.to_be_bytes());
        want.extend_from_slice(&[0, 0, 0, 2, b'a', b'b']);
        want.extend_from_slice(&4u64.to_be_bytes());
        want.extend_from_slice(&[0, 0, 0, 3]);
        want.extend_from_slice(&[0, 0, 0, 1, b'r']);
        assert_eq!(r.encode().expect("encodes"), want);
        assert_eq!(Record::decode(&want).expect("decodes"), r);
    }

    #[test]
    fn every_truncation_is_refused_without_panic() {
        for r in samples() {
            let bytes = r.encode().expect("encodes");
            for cut in 0..bytes.len() {
                assert!(Record::decode(&bytes[..cut]).is_err(), "{:?} cut at {cut}", r.kind());
            }
        }
    }

    #[test]
    fn trailing_bytes_wrong_version_and_kind_are_refused() {
        let mut bytes = samples()[0].encode().expect("encodes");
        bytes.push(0);
        assert_eq!(Record::decode(&bytes), Err(RecordError::Trailing(1)));
        let mut v2 = samples()[0].encode().expect("encodes");
        v2[0] = 2;
        assert_eq!(Record::decode(&v2), Err(RecordError::Version(2)));
        let mut k = samples()[0].encode().expect("encodes");
        k[1] = 99;
        assert_eq!(Record::decode(&k), Err(RecordError::Kind(99)));
    }

    #[test]
    fn huge_declared_lengths_are_refused_before_allocating() {
        let mut bytes = vec![1u8, 1];
        bytes.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            Record::decode(&bytes),
            Err(RecordError::TooLong {
                field: "federation_id",
                ..
            })
        ));
    }

    #[test]
    fn metric_lists_must_be_canonical() {
        assert!(Metric::canonical([("a", 1.0), ("a", 2.0)]).is_err());
        assert!(Metric::canonical([("", 1.0)]).is_err());
        let unsorted = Record::Quarantine {
            round: RoundId(1),
            participant: ParticipantId::new("x"),
            reason: String::new(),
            evidence: vec![
                Metric {
                    name: "b".into(),
                    value: 1.0,
                },
                Metric {
                    name: "a".into(),
                    value: 1.0,
                },
            ],
        };
        assert!(matches!(unsorted.encode(), Err(RecordError::Metrics(_))));
    }

    #[test]
    fn statement_excludes_the_signature_and_binds_the_federation() {
        let c = samples()[4].clone();
        let s1 = c.statement("fed-1").expect("encodes").expect("aggregates are signed");
        let mut c2 = c.clone();
        if let Record::Aggregate { signature, .. } = &mut c2 {
            *signature = vec![0xee; 64];
        }
        assert_eq!(c2.statement("fed-1").expect("encodes"), Some(s1.clone()));
        assert_ne!(c.statement("fed-2").expect("encodes"), Some(s1.clone()));
        assert!(s1.starts_with(STATEMENT_DOMAIN));
        assert_eq!(samples()[0].statement("fed-1").expect("encodes"), None);
        assert_eq!(samples()[3].statement("fed-1").expect("encodes"), None);
    }
}

#[cfg(test)]
mod proptests {
    use super::tests::samples;
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, rng_seed: proptest::test_runner::RngSeed::Fixed(7), ..ProptestConfig::default() })]

        /// Arbitrary bytes never panic the decoder, and anything it accepts is canonical.
        #[test]
        fn arbitrary_bytes_decode_canonically_or_fail(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(r) = Record::decode(&bytes) {
                prop_assert_eq!(r.encode().expect("decoded records encode"), bytes);
            }
        }

        /// Mutating one byte of a valid record either fails to decode or yields a record whose
        /// encoding is exactly the mutated bytes (never a silent re-spelling).
        #[test]
        fn mutated_records_stay_canonical(which in 0usize..10, pos in any::<prop::sample::Index>(), flip in 1u8..=255) {
            let mut bytes = samples()[which].encode().expect("encodes");
            let i = pos.index(bytes.len());
            bytes[i] ^= flip;
            if let Ok(r) = Record::decode(&bytes) {
                prop_assert_eq!(r.encode().expect("encodes"), bytes);
            }
        }
    }
}
