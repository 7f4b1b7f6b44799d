//! The participant's session state machine (sans-IO).
//!
//! It decides what a participant does with each verified push from the coordinator: label a round's
//! samples once, refuse stale or foreign rounds, distill from an aggregate only for the round it
//! contributed to, and report once. The driver runs the teacher and the distillation on blocking threads
//! and feeds the results back through `handle_*`.

use std::collections::VecDeque;

use crate::crypto::{Digest, ParticipantId, RoundId, Verified};
use crate::wire::messages::{AggregateLabels, RoundOpen, RoundReport};

/// Effects for the driver.
#[derive(Debug, Clone, PartialEq)]
pub enum ParticipantOutput {
    /// Run the teacher on these public samples and call `handle_labels_ready`.
    ComputeSoftLabels {
        /// The round.
        round: RoundId,
        /// Public sample ids.
        sample_ids: Vec<u64>,
        /// Teacher temperature.
        temperature: f32,
    },
    /// Distill from this consensus and call `handle_distilled`.
    Distill {
        /// The round.
        round: RoundId,
        /// Sample ids of the round, matching the probability rows.
        sample_ids: Vec<u64>,
        /// Consensus probabilities (rows x classes).
        probabilities: Vec<f32>,
        /// Total rounds (for schedules).
        total_rounds: u64,
        /// The rule that formed the consensus (the round opening's): ERA's sharpening is undone for the
        /// teacher refresh (`aggregate::refresh_targets`).
        rule: super::AggregationRule,
        /// Size of the encoded consensus as received.
        payload_bytes: u64,
    },
    /// Sign and send this report.
    SendReport(RoundReport),
    /// The coordinator finished all rounds.
    Finished,
}

/// Why a push was ignored.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SessionError {
    /// The round is older than one already handled.
    #[error("round {got} is stale: round {seen} was already handled")]
    Stale {
        /// Round in the message.
        got: RoundId,
        /// Latest round handled.
        seen: RoundId,
    },
    /// The participant holds another public set.
    #[error("round announces public set {announced}, this participant holds {held}")]
    WrongPublicSet {
        /// Digest announced.
        announced: Digest,
        /// Digest held.
        held: Digest,
    },
    /// An aggregate arrived for a round the participant did not label.
    #[error("aggregate for round {0}, which this participant did not contribute to")]
    NotContributed(RoundId),
    /// The aggregate is malformed.
    #[error("aggregate for round {round} is malformed: {reason}")]
    BadAggregate {
        /// The round.
        round: RoundId,
        /// What is wrong.
        reason: String,
    },
    /// A sample id is outside the public set.
    #[error("sample id {id} is outside the public set of {len} samples")]
    BadSampleId {
        /// The id.
        id: u64,
        /// Public set size.
        len: u64,
    },
}

#[derive(Debug, Clone)]
struct Pending {
    open: RoundOpen,
    labelled: bool,
}

/// The participant's session.
#[derive(Debug)]
pub struct ParticipantSession {
    public_digest: Digest,
    public_len: u64,
    classes: u32,
    last_done: RoundId,
    pending: Option<Pending>,
    outputs: VecDeque<ParticipantOutput>,
}

impl ParticipantSession {
    /// A session for a participant holding the public set `public_digest` of `public_len` samples. Rounds
    /// up to `last_done` (persisted by the driver) are not redone after a restart.
    pub fn new(public_digest: Digest, public_len: u64, classes: u32, last_done: RoundId) -> Self {
        Self {
            public_digest,
            public_len,
            classes,
            last_done,
            pending: None,
            outputs: VecDeque::new(),
        }
    }

    /// Last round fully handled (reported).
    pub fn last_done(&self) -> RoundId {
        self.last_done
    }

    /// A verified round opening.
    pub fn handle_open(&mut self, open: Verified<RoundOpen>) -> Result<(), SessionError> {
        let open = open.into_inner();
        if open.round <= self.last_done {
            return Err(SessionError::Stale {
                got: open.round,
                seen: self.last_done,
            });
        }
        if let Some(p) = &self.pending {
            if p.open.round == open.round && p.labelled && open.secure.is_none() {
                // Re-announcement after a coordinator restart: the labels were already sent. A secure round
                // is run again from its key adverts with fresh secrets, so it is labelled (and masked) again.
                return Ok(());
            }
        }
        if open.public_digest != self.public_digest {
            return Err(SessionError::WrongPublicSet {
                announced: open.public_digest,
                held: self.public_digest,
            });
        }
        if let Some(&id) = open.sample_ids.iter().find(|&&id| id >= self.public_len) {
            return Err(SessionError::BadSampleId {
                id,
                len: self.public_len,
            });
        }
        self.outputs.push_back(ParticipantOutput::ComputeSoftLabels {
            round: open.round,
            sample_ids: open.sample_ids.clone(),
            temperature: open.temperature,
        });
        self.pending = Some(Pending { open, labelled: false });
        Ok(())
    }

    /// The driver computed and sent (and got an ack or a duplicate notice for) the round's labels.
    pub fn handle_labels_sent(&mut self, round: RoundId) {
        if let Some(p) = self.pending.as_mut() {
            if p.open.round == round {
                p.labelled = true;
            }
        }
    }

    /// The opening of the round in hand (labelled or being labelled), if any.
    pub fn pending_open(&self) -> Option<&RoundOpen> {
        self.pending.as_ref().map(|p| &p.open)
    }

    /// After a restart: the round whose labels this participant released before it stopped (`open`, kept
    /// by the driver). Whether the coordinator holds them is unknown, so nothing is recomputed until a push
    /// says: a re-announcement of the round labels it again (the coordinator answers that it already holds
    /// them), an aggregate that names this participant among its contributors is distilled
    /// ([`ParticipantSession::handle_aggregate_for`]).
    pub fn resume(&mut self, open: RoundOpen) {
        if open.round > self.last_done {
            self.pending = Some(Pending { open, labelled: false });
        }
    }

    /// A verified aggregate.
    pub fn handle_aggregate(&mut self, agg: Verified<AggregateLabels>) -> Result<(), SessionError> {
        self.handle_aggregate_for(agg, None)
    }

    /// A verified aggregate, received by participant `me`: besides a round whose labels were acknowledged,
    /// the coordinator's signed list of contributors naming `me` shows it holds this participant's labels
    /// (an acknowledgement lost to a restart).
    pub fn handle_aggregate_for(
        &mut self,
        agg: Verified<AggregateLabels>,
        me: Option<&ParticipantId>,
    ) -> Result<(), SessionError> {
        let agg = agg.into_inner();
        let named = me.is_some_and(|m| agg.contributors.contains(m));
        if agg.round <= self.last_done {
            return Err(SessionError::Stale {
                got: agg.round,
                seen: self.last_done,
            });
        }
        let Some(p) = self
            .pending
            .as_ref()
            .filter(|p| p.open.round == agg.round && (p.labelled || named))
        else {
            return Err(SessionError::NotContributed(agg.round));
        };
        let rows = p.open.sample_ids.len();
        let classes = self.classes as usize;
        if agg.rows as usize != rows
            || agg.classes != self.classes
            || agg.probabilities.len() != agg.encoding.payload_len(rows, classes)
        {
            return Err(SessionError::BadAggregate {
                round: agg.round,
                reason: format!(
                    "shape {}x{} with {} bytes of {}, expected {rows}x{classes}",
                    agg.rows,
                    agg.classes,
                    agg.probabilities.len(),
                    agg.encoding.name()
                ),
            });
        }
        // The digest is of the canonical f32 aggregate the log records: checkable here when that is what
        // was sent; a lossy encoding is bound by the coordinator's signature and re-encodable by auditors.
        if agg.encoding == super::Encoding::F32 && Digest::of(&agg.probabilities) != agg.aggregate_digest {
            return Err(SessionError::BadAggregate {
                round: agg.round,
                reason: "aggregate digest does not match its bytes".into(),
            });
        }
        let probabilities =
            super::softlabels::decode(&agg.probabilities, rows, classes, agg.encoding).map_err(|e| {
                SessionError::BadAggregate {
                    round: agg.round,
                    reason: e.to_string(),
                }
            })?;
        self.outputs.push_back(ParticipantOutput::Distill {
            round: agg.round,
            sample_ids: p.open.sample_ids.clone(),
            probabilities,
            total_rounds: p.open.total_rounds,
            rule: p.open.rule,
            payload_bytes: agg.probabilities.len() as u64,
        });
        Ok(())
    }

    /// The driver distilled, quantized, evaluated and guarded the student for `report.round`.
    pub fn handle_distilled(&mut self, report: RoundReport) {
        if self.pending.as_ref().is_some_and(|p| p.open.round == report.round) {
            self.last_done = report.round;
            self.pending = None;
            self.outputs.push_back(ParticipantOutput::SendReport(report));
        }
    }

    /// The coordinator finished.
    pub fn handle_finished(&mut self) {
        self.outputs.push_back(ParticipantOutput::Finished);
    }

    /// Whether [`ParticipantSession::poll_output`] has something to give (a driver asks before it hands the
    /// next effect to a blocking thread).
    pub fn has_output(&self) -> bool {
        !self.outputs.is_empty()
    }

    /// The next effect.
    pub fn poll_output(&mut self) -> Option<ParticipantOutput> {
        self.outputs.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{FederationId, ReplayGuard, Signed, Signer, SigningIdentity};
    use crate::wire::messages::sample_ids_digest;
    use crate::wire::secagg::SecAggParams;

    fn open(secure: Option<SecAggParams>, seq: u64) -> Verified<RoundOpen> {
        let fed = FederationId::new("session-tests").expect("valid");
        let key = SigningIdentity::from_seed([3; 32]);
        let body = RoundOpen {
            round: RoundId(1),
            total_rounds: 2,
            public_digest: Digest::of(b"public"),
            sample_ids: vec![0, 1],
            sample_ids_digest: sample_ids_digest(&[0, 1]),
            temperature: 2.0,
            rule: crate::wire::enums::AggregationRule::Mean,
            deadline_ms: 1000,
            quorum: 1,
            classes: 3,
            secure,
        };
        Signed::sign(&key, Signer::Coordinator, fed.clone(), RoundId(1), seq, &body)
            .expect("sign")
            .verify(
                &key.public_key(),
                &Signer::Coordinator,
                &ReplayGuard::new(fed),
                RoundId(1),
            )
            .expect("verify")
    }

    fn labels_asked(s: &mut ParticipantSession) -> usize {
        std::iter::from_fn(|| s.poll_output())
            .filter(|o| matches!(o, ParticipantOutput::ComputeSoftLabels { .. }))
            .count()
    }

    #[test]
    fn a_re_announced_round_is_labelled_again_only_when_it_is_secure() {
        let secure = SecAggParams {
            threshold: 2,
            neighbours: 0,
            noise_sigma2: 0,
        };
        for (params, again) in [(None, 0), (Some(secure), 1)] {
            let mut s = ParticipantSession::new(Digest::of(b"public"), 10, 3, RoundId(0));
            assert!(!s.has_output());
            s.handle_open(open(params, 1)).expect("open");
            assert!(s.has_output());
            assert_eq!(labels_asked(&mut s), 1);
            assert!(!s.has_output(), "every effect was polled");
            s.handle_labels_sent(RoundId(1));
            // The coordinator restarted and announces the round again.
            s.handle_open(open(params, 2)).expect("re-announced");
            assert_eq!(labels_asked(&mut s), again, "secure: {}", params.is_some());
        }
    }
}
