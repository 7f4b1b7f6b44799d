//! One human-readable line per record, for timelines (`fedistill audit show`).

use super::{Metric, Record};
use crate::ids::Digest;
use crate::ParticipantId;

impl Record {
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
            Record::TaskDeclared {
                name,
                card_digest,
                public_digest,
                public_rows,
            } => format!(
                "TASK {name:?}: card {}, public set {} ({public_rows} rows)",
                card_digest.to_hex(),
                public_digest.to_hex()
            ),
            Record::SecureAggregation {
                round,
                transcript_digest,
                threshold,
                neighbours,
                survivors,
                dropped,
            } => {
                let names = |l: &[ParticipantId]| l.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", ");
                format!(
                    "round {round}: SECURE aggregation of [{}] (dropped [{}]), threshold {threshold}, {} graph, transcript {}",
                    names(survivors),
                    names(dropped),
                    if *neighbours == 0 { "complete".to_string() } else { format!("{neighbours}-regular") },
                    transcript_digest.to_hex()
                )
            }
        }
    }
}
