//! The update-log records of the participant messages a coordinator accepts between commits: an abstention
//! (`abstention`) and a round report (`round_report`, followed by `privacy_spend` when the report carries a
//! spend). [`CoordinatorRound::handle_abstain`] and [`CoordinatorRound::handle_report`] check a message with
//! [`abstention_figures`] / [`report_metrics`] before anything changes and return what these functions
//! assemble once it is accepted, so the coordinator driver and the simulator append the same records. The
//! round's own records come from [`RoundCommit::records`]; the anomaly tracker's quarantine and release
//! records from [`QuarantineDecision::record`] and [`ReleaseDecision::record`].
//!
//! [`CoordinatorRound::handle_abstain`]: super::coordinator::CoordinatorRound::handle_abstain
//! [`CoordinatorRound::handle_report`]: super::coordinator::CoordinatorRound::handle_report
//! [`RoundCommit::records`]: super::coordinator::RoundCommit::records
//! [`QuarantineDecision::record`]: super::robust::QuarantineDecision::record
//! [`ReleaseDecision::record`]: super::robust::ReleaseDecision::record

use crate::crypto::{Digest, ParticipantId, Verified};
use crate::ledger::{Metric, Record};
use crate::wire::messages::{Abstain, RoundReport};

/// What an accepted participant message puts in the update log: its records in log order, each with the
/// participant's own envelope signature, and the signed message bytes stored beside them under their
/// digest (the records' `message_digest`).
#[derive(Debug, Clone, PartialEq)]
pub struct MessageRecords {
    /// Records in log order.
    pub records: Vec<Record>,
    /// (digest, bytes) of the signed message payload.
    pub payload: (Digest, Vec<u8>),
}

/// An abstention's figures in the log's canonical order, or why they cannot be logged (an empty or
/// repeated name), in the words the coordinator refuses the message with.
pub fn abstention_figures(a: &Abstain) -> Result<Vec<Metric>, String> {
    Metric::canonical(a.figures.iter().map(|(n, v)| (n.clone(), *v))).map_err(|e| e.to_string())
}

/// A report's metrics in the log's canonical order, after checking its privacy spend
/// (`PrivacySpend::check`), or why it cannot be logged, in the words the coordinator refuses it with.
pub fn report_metrics(r: &RoundReport) -> Result<Vec<Metric>, String> {
    let metrics = Metric::canonical(r.metrics.iter().map(|(n, v)| (n.clone(), *v)))
        .map_err(|e| format!("report metrics: {e}"))?;
    if let Some(spend) = &r.privacy_spend {
        spend.check()?;
    }
    Ok(metrics)
}

/// The `abstention` record of `participant`'s accepted abstention, its `figures` from
/// [`abstention_figures`], and the signed message as its payload.
pub fn abstention_records(
    participant: &ParticipantId,
    msg: &Verified<Abstain>,
    figures: Vec<Metric>,
) -> MessageRecords {
    let body = msg.value();
    let digest = msg.payload_digest();
    MessageRecords {
        records: vec![Record::Abstention {
            round: body.round,
            participant: participant.clone(),
            reason: body.reason.as_str().to_string(),
            figures,
            message_digest: digest,
            sequence: msg.seq(),
            signature: msg.envelope().signature.clone(),
        }],
        payload: (digest, msg.envelope().payload.clone()),
    }
}

/// The `round_report` record of `participant`'s accepted report, its `metrics` from [`report_metrics`],
/// then, when the report carries the participant's differential-privacy spend, its `privacy_spend` record
/// (epsilon = `epsilon_round`; the `dp_*` metrics beside it are for people, the log takes the typed
/// figures); the signed message is the payload.
pub fn report_records(
    participant: &ParticipantId,
    msg: &Verified<RoundReport>,
    metrics: Vec<Metric>,
) -> MessageRecords {
    let body = msg.value();
    let digest = msg.payload_digest();
    let mut records = vec![Record::RoundReport {
        round: body.round,
        participant: participant.clone(),
        metrics,
        student_digest: body.student_digest,
        guard: body.guard_decision(),
        message_digest: digest,
        sequence: msg.seq(),
        signature: msg.envelope().signature.clone(),
    }];
    if let Some(spend) = body.privacy_spend {
        records.push(Record::PrivacySpend {
            round: body.round,
            participant: participant.clone(),
            epsilon: spend.epsilon_round,
            delta: spend.delta,
        });
    }
    MessageRecords {
        records,
        payload: (digest, msg.envelope().payload.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{FederationId, ReplayGuard, RoundId, Signed, SignedMessage, Signer, SigningIdentity};
    use crate::ledger::GuardDecision;
    use crate::wire::messages::{AbstainReason, PrivacySpend};

    fn verified<T: SignedMessage>(body: &T) -> Verified<T> {
        let key = SigningIdentity::from_seed([7; 32]);
        let fed = FederationId::new("records").expect("valid");
        let me = Signer::Participant(ParticipantId::new("p1"));
        let s = Signed::sign(&key, me.clone(), fed.clone(), RoundId(2), 41, body).expect("sign");
        s.verify(&key.public_key(), &me, &ReplayGuard::new(fed), RoundId(2))
            .expect("verify")
    }

    #[test]
    fn an_abstention_is_logged_with_its_reason_name_canonical_figures_and_signature() {
        let msg = Abstain {
            round: RoundId(2),
            reason: AbstainReason::BudgetExhausted,
            figures: vec![("epsilon_spent".into(), 4.0), ("epsilon_budget".into(), 5.0)],
        };
        let figures = abstention_figures(&msg).expect("unique names");
        assert_eq!(
            figures.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            ["epsilon_budget", "epsilon_spent"]
        );
        let v = verified(&msg);
        let out = abstention_records(&ParticipantId::new("p1"), &v, figures.clone());
        assert_eq!(
            out.records,
            vec![Record::Abstention {
                round: RoundId(2),
                participant: ParticipantId::new("p1"),
                reason: "budget_exhausted".into(),
                figures,
                message_digest: v.payload_digest(),
                sequence: 41,
                signature: v.envelope().signature.clone(),
            }]
        );
        assert_eq!(out.payload, (v.payload_digest(), v.envelope().payload.clone()));
        assert_eq!(Digest::of(&out.payload.1), out.payload.0);

        let twice = Abstain {
            figures: vec![("x".into(), 1.0), ("x".into(), 2.0)],
            ..msg
        };
        assert!(abstention_figures(&twice).is_err());
    }

    #[test]
    fn a_report_is_logged_with_its_privacy_spend_after_it() {
        let spend = PrivacySpend {
            epsilon_round: 0.5,
            epsilon_total: 1.5,
            delta: 1e-5,
        };
        let report = RoundReport {
            round: RoundId(2),
            metrics: vec![("int8_accuracy".into(), 0.8), ("accuracy".into(), 0.9)],
            student_digest: Digest::of(b"student"),
            guard_accepted: false,
            guard_reason: "accuracy fell".into(),
            privacy_spend: Some(spend),
        };
        let metrics = report_metrics(&report).expect("valid");
        assert_eq!(
            metrics.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            ["accuracy", "int8_accuracy"]
        );
        let v = verified(&report);
        let out = report_records(&ParticipantId::new("p1"), &v, metrics.clone());
        assert_eq!(
            out.records,
            vec![
                Record::RoundReport {
                    round: RoundId(2),
                    participant: ParticipantId::new("p1"),
                    metrics,
                    student_digest: Digest::of(b"student"),
                    guard: GuardDecision::from_report(false, "accuracy fell"),
                    message_digest: v.payload_digest(),
                    sequence: 41,
                    signature: v.envelope().signature.clone(),
                },
                Record::PrivacySpend {
                    round: RoundId(2),
                    participant: ParticipantId::new("p1"),
                    epsilon: 0.5,
                    delta: 1e-5,
                },
            ]
        );
        assert_eq!(out.payload, (v.payload_digest(), v.envelope().payload.clone()));

        // Without a spend: the report alone.
        let plain = RoundReport {
            privacy_spend: None,
            ..report.clone()
        };
        let out = report_records(&ParticipantId::new("p1"), &verified(&plain), Vec::new());
        assert!(matches!(out.records.as_slice(), [Record::RoundReport { .. }]));

        // Refusals, in the words of the reply.
        let bad_spend = RoundReport {
            privacy_spend: Some(PrivacySpend { delta: 0.0, ..spend }),
            ..report.clone()
        };
        assert!(report_metrics(&bad_spend).is_err_and(|e| e.starts_with("privacy spend:")));
        let bad_metrics = RoundReport {
            metrics: vec![(String::new(), 1.0)],
            ..report
        };
        assert!(report_metrics(&bad_metrics).is_err_and(|e| e.starts_with("report metrics:")));
    }
}
