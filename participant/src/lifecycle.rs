// Over 800 lines: about 430 of them are the unit tests that drive the lifecycle through the learner seam.
//! The participant's round lifecycle, synchronous and without I/O beyond its work directory: it feeds the
//! verified pushes to the sans-IO [`ParticipantSession`], runs the [`Learner`] for what the session asks
//! (label, distill), applies the privacy budget, keeps the node's persistent state (`state.json`,
//! `privacy.json`) and yields the complete, unsigned messages to send. The async driver
//! (`crate::service`) only verifies, signs, sends, witnesses and times; it calls [`RoundLifecycle::next`]
//! on a blocking thread.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use fedistill_shared::crypto::{ParticipantId, RoundId, Verified};
use fedistill_shared::files::{replace, Durability};
use fedistill_shared::privacy::{ParticipantPrivacy, PrivacySettings, Release};
use fedistill_shared::protocol::secagg::SecureClient;
use fedistill_shared::protocol::{
    budget_exhausted_message, softlabels, Encoding, ParticipantOutput, ParticipantSession, SessionError,
};
use fedistill_shared::wire::messages::{Abstain, AggregateLabels, RoundOpen, RoundReport, SoftLabels};

use crate::learner::Learner;

/// What a secure round's masked input goes out with (`softlabels::secure_soft_labels_message`), fixed when
/// its key advert is made: the labelled rows, the public set, the shape and the node's sample count.
#[derive(Debug, Clone)]
struct MaskedInput {
    public_digest: fedistill_shared::crypto::Digest,
    sample_ids: Vec<u64>,
    classes: usize,
    samples: u64,
}

/// One round as this participant saw it (a line of `rounds.jsonl`, and part of `result.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundRecord {
    /// Round number.
    pub round: u64,
    /// Bytes of the signed soft-label message sent (what the coordinator counts as this node's upload).
    pub bytes_up: u64,
    /// Bytes of the aggregate's frame received (what the coordinator counts as sent to this node).
    pub bytes_down: u64,
    /// Test accuracy of this round's distilled student (f32), on the node's test rows.
    pub student_accuracy: f64,
    /// Test accuracy of its INT8 version.
    pub int8_accuracy: f64,
    /// Its accuracy on the node's validation rows: what the guard decided on and the round report
    /// carried (absent in records written before the validation split).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_accuracy: Option<f64>,
    /// Agreement of the aggregate with the true labels of the round's public samples (for reporting only;
    /// the labels are never used for training). Unknown (NaN, `null` in JSON) when the public set is
    /// unlabelled (an IDX image file).
    #[serde(serialize_with = "nan_as_null", deserialize_with = "null_as_nan")]
    pub consensus_accuracy: f64,
    /// Whether the guard accepted the candidate.
    pub guard_accepted: bool,
    /// Seconds from receiving the round opening to sending the report.
    pub seconds: f64,
    /// Contributors of the round.
    pub contributors: usize,
    /// Where the round's time went on this node, in seconds: `label` (teacher inference, privacy, encoding),
    /// `upload_wait` (from the labels' acknowledgement to the aggregate: the other nodes and the
    /// coordinator), then the learner's phases (`refresh`, `distill`, `evaluate`, `quantize`, `export`,
    /// `guard`, `save`).
    #[serde(default)]
    pub phases: BTreeMap<String, f64>,
    /// Wall clock (ms since the Unix epoch) when the round was distilled.
    #[serde(default)]
    pub finished_unix_ms: u64,
    /// Test accuracy of the round's personalized student (`[personalize]`), when one was built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub personalized_accuracy: Option<f64>,
}

fn nan_as_null<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.is_nan() {
        s.serialize_none()
    } else {
        s.serialize_f64(*v)
    }
}

fn null_as_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// What the node keeps across restarts (`state.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeState {
    /// Last round fully handled (distilled and reported).
    pub last_done: u64,
    /// Last sequence number signed (sequence numbers only grow, across restarts too).
    pub seq: u64,
    /// Sequence numbers up to this one may be signed without saving this state first; a restart continues
    /// above it ([`SEQ_RESERVE_MICROS`]).
    #[serde(default)]
    pub seq_reserved: u64,
    /// Validation metrics of the student that serves now (empty before the first round): what the guard
    /// compares each candidate with.
    pub accepted_metrics: BTreeMap<String, f64>,
    /// Test metrics of the student that serves now, for the final reports (empty before the first round,
    /// and in a state written before the validation split: [`NodeState::serving_test_metrics`]).
    #[serde(default)]
    pub accepted_test_metrics: BTreeMap<String, f64>,
    /// Test INT8 accuracy of the serving student.
    pub accepted_int8_accuracy: f64,
    /// INT8 export size of the serving student.
    pub accepted_int8_bytes: usize,
    /// Every round handled.
    pub rounds: Vec<RoundRecord>,
    /// Checkpoints cosigned.
    pub cosigned: u64,
    /// The opening of the round whose soft labels this node released and has not distilled yet: saved
    /// before the labels go out, so that after a restart an aggregate naming this node as a contributor is
    /// still distilled and reported (the acknowledgement may have been lost with the process).
    #[serde(default)]
    pub labelled_open: Option<fedistill_shared::wire::messages::RoundOpen>,
}

impl NodeState {
    /// The serving student's test metrics (the final reports); a state written before the validation
    /// split measured `accepted_metrics` on the test rows, so those stand in when no test metrics are kept.
    pub fn serving_test_metrics(&self) -> &BTreeMap<String, f64> {
        if self.accepted_test_metrics.is_empty() {
            &self.accepted_metrics
        } else {
            &self.accepted_test_metrics
        }
    }
}

/// A complete, unsigned message for the driver to sign and send.
#[derive(Debug, Clone, PartialEq)]
pub enum Outgoing {
    /// This round's soft labels; call [`RoundLifecycle::labels_delivered`] once the coordinator holds them.
    SoftLabels(SoftLabels),
    /// A secure round: this node's key advert (its labels leave later, masked, see
    /// [`RoundLifecycle::on_secagg_delivery`]).
    SecAggKeys(fedistill_shared::wire::secagg::SecAggKeys),
    /// A signed refusal to contribute (the privacy budget is spent).
    Abstain(Abstain),
    /// The round's report.
    Report(RoundReport),
    /// The coordinator finished all rounds.
    Finished,
}

/// How far ahead of a sequence number `state.json` reserves: signing saves the state only when a number
/// passes the reservation (about once a minute of wall clock, not once per message), and a restarted node
/// continues above the reservation, so no number is used twice even if the clock went back. Far below the
/// hour a receiver accepts ahead of its clock (`MAX_SEQ_AHEAD_MICROS`).
pub const SEQ_RESERVE_MICROS: u64 = 60_000_000;

/// Work-directory file holding how many rounds the DP accountant has released.
pub const PRIVACY_FILE: &str = "privacy.json";
/// Work-directory file holding [`NodeState`].
pub const STATE_FILE: &str = "state.json";

/// Metrics a round report carries (besides `int8_accuracy` and the privacy figures): a classification
/// task's, or a regression task's (`r2`, `rmse`, `mae` and the constraint violation rates).
const REPORTED: [&str; 10] = [
    "accuracy",
    "macro_f1",
    "roc_auc",
    "log_loss",
    "ece",
    "r2",
    "rmse",
    "mae",
    "violation_rate",
    "bound_violation_rate",
];

/// Timing and traffic of a round in flight.
#[derive(Debug, Clone)]
struct InFlight {
    opened: Instant,
    bytes_up: u64,
    bytes_down: u64,
    contributors: usize,
    /// When the coordinator acknowledged the labels.
    delivered: Option<Instant>,
    phases: BTreeMap<String, f64>,
}

/// A participant's rounds: session, learner, privacy and persistent state.
pub struct RoundLifecycle<L: Learner> {
    session: ParticipantSession,
    learner: L,
    privacy: Option<ParticipantPrivacy>,
    state: NodeState,
    encoding: Encoding,
    workdir: PathBuf,
    in_flight: BTreeMap<u64, InFlight>,
    /// This node's participant id (aggregates name their contributors).
    me: Option<ParticipantId>,
    /// The secure round in progress: its client state and what its masked input's message says besides.
    secure: Option<(SecureClient, MaskedInput)>,
    federation: Option<fedistill_shared::crypto::FederationId>,
}

impl<L: Learner> RoundLifecycle<L> {
    /// Opens the lifecycle in `workdir`, restoring `state.json` and the privacy accountant's released
    /// rounds (so a restart neither redoes a round nor forgets what the budget spent). `teacher_dp` is the
    /// DP-SGD cost of the learner's teacher, when it was DP-trained.
    pub fn open(
        learner: L,
        workdir: &Path,
        encoding: Encoding,
        privacy: Option<&PrivacySettings>,
        teacher_dp: Option<fedistill_shared::privacy::DpSgdCost>,
    ) -> anyhow::Result<Self> {
        let state_path = workdir.join(STATE_FILE);
        let mut state: NodeState = match std::fs::read(&state_path) {
            Ok(b) => serde_json::from_slice(&b).with_context(|| format!("decoding {}", state_path.display()))?,
            Err(_) => NodeState::default(),
        };
        // Numbers up to the reservation may have been signed before the restart without being saved.
        state.seq = state.seq.max(state.seq_reserved);
        let privacy = match privacy {
            Some(cfg) => {
                let path = workdir.join(PRIVACY_FILE);
                let released = match std::fs::read(&path) {
                    Ok(b) => serde_json::from_slice::<serde_json::Value>(&b)
                        .ok()
                        .and_then(|v| v.get("rounds_released").and_then(|r| r.as_u64()))
                        .with_context(|| format!("{} has no rounds_released count", path.display()))?,
                    Err(_) => 0,
                };
                Some(ParticipantPrivacy::with_settings(
                    cfg,
                    teacher_dp,
                    learner.classes(),
                    released,
                ))
            }
            None => None,
        };
        let mut session = ParticipantSession::new(
            learner.public_digest(),
            learner.public_len(),
            learner.classes() as u32,
            RoundId(state.last_done),
        );
        if let Some(open) = state.labelled_open.clone() {
            info!(
                round = open.round.0,
                "resuming a round whose soft labels were released before the restart"
            );
            session.resume(open);
        }
        Ok(RoundLifecycle {
            session,
            learner,
            privacy,
            state,
            encoding,
            workdir: workdir.to_path_buf(),
            in_flight: BTreeMap::new(),
            me: None,
            secure: None,
            federation: None,
        })
    }

    /// Names this node's participant id: an aggregate whose signed contributors include it is distilled
    /// even when the acknowledgement of the labels was lost to a restart.
    pub fn set_participant(&mut self, me: ParticipantId) {
        self.me = Some(me);
    }

    /// Names the federation (bound into a secure round's key derivations).
    pub fn set_federation(&mut self, federation: fedistill_shared::crypto::FederationId) {
        self.federation = Some(federation);
    }

    fn secure_client(&mut self, round: RoundId) -> anyhow::Result<&mut (SecureClient, MaskedInput)> {
        match self.secure.as_mut() {
            Some(s) if s.0.round() == round => Ok(s),
            _ => anyhow::bail!("no secure round {} in progress on this node", round.0),
        }
    }

    /// The indices of the round's adverts whose keys this node uses (see `SecureClient::used_indices`).
    pub fn secure_used_indices(&mut self, round: RoundId, n: usize, me: usize) -> anyhow::Result<Vec<usize>> {
        let (client, _) = self.secure_client(round)?;
        Ok(client.used_indices(n, me)?)
    }

    /// A secure round's key adverts (U1), each already checked against the operator-signed roster:
    /// this node's encrypted shares for its holders.
    pub fn on_secagg_roster(
        &mut self,
        round: RoundId,
        adverts: &[(ParticipantId, fedistill_shared::wire::secagg::SecAggKeys)],
    ) -> anyhow::Result<fedistill_shared::wire::secagg::SecAggShares> {
        let mut rng = fedistill_shared::privacy::os_rng()?;
        let (client, _) = self.secure_client(round)?;
        Ok(client.on_roster(adverts, &mut rng)?)
    }

    /// The shares addressed to this node and U2: the masked input, as the soft labels to send. The opening
    /// is saved first, as for labels in the clear (see [`NodeState::labelled_open`]).
    pub fn on_secagg_delivery(
        &mut self,
        d: &fedistill_shared::wire::secagg::SecAggDelivery,
    ) -> anyhow::Result<SoftLabels> {
        let (client, input) = self.secure_client(d.round)?;
        let masked = client.on_delivery(d)?;
        let labels = softlabels::secure_soft_labels_message(
            d.round,
            input.public_digest,
            &input.sample_ids,
            &masked,
            input.classes,
            input.samples,
        )?;
        self.state.labelled_open = self.session.pending_open().filter(|o| o.round == d.round).cloned();
        self.save()?;
        Ok(labels)
    }

    /// The coordinator's unmasking request: the shares to reveal (`None` when this node is counted as
    /// dropped and reveals nothing).
    pub fn on_secagg_unmask(
        &mut self,
        u: &fedistill_shared::wire::secagg::SecAggUnmask,
    ) -> anyhow::Result<Option<fedistill_shared::wire::secagg::SecAggReveal>> {
        let (client, _) = self.secure_client(u.round)?;
        Ok(client.on_unmask(u)?)
    }

    /// The persistent state.
    pub fn state(&self) -> &NodeState {
        &self.state
    }

    /// The learner.
    pub fn learner(&self) -> &L {
        &self.learner
    }

    /// The privacy accountant, when `[privacy]` is on.
    pub fn privacy(&self) -> Option<&ParticipantPrivacy> {
        self.privacy.as_ref()
    }

    /// The next sequence number to sign with: the wall clock in microseconds, never below the last one.
    /// A number past the saved reservation extends it and saves the state before it is used, so a restart
    /// after the clock went back cannot reuse one ([`SEQ_RESERVE_MICROS`]).
    pub fn next_seq(&mut self, now_micros: u64) -> anyhow::Result<u64> {
        let seq = (self.state.seq + 1).max(now_micros);
        if seq > self.state.seq_reserved {
            let reserved = self.state.seq_reserved;
            self.state.seq_reserved = seq.saturating_add(SEQ_RESERVE_MICROS);
            if let Err(e) = self.save() {
                self.state.seq_reserved = reserved;
                return Err(e);
            }
        }
        self.state.seq = seq;
        Ok(seq)
    }

    /// Counts a cosigned checkpoint.
    pub fn note_cosigned(&mut self) {
        self.state.cosigned += 1;
    }

    /// A verified round opening; `Err` says why this node does not label the round.
    pub fn on_open(&mut self, open: Verified<RoundOpen>) -> Result<(), SessionError> {
        let round = open.value().round;
        self.session.handle_open(open)?;
        self.in_flight.insert(
            round.0,
            InFlight {
                opened: Instant::now(),
                bytes_up: 0,
                bytes_down: 0,
                contributors: 0,
                delivered: None,
                phases: BTreeMap::new(),
            },
        );
        Ok(())
    }

    /// A verified aggregate that arrived in a frame of `frame_bytes`; `Err` says why it is ignored.
    pub fn on_aggregate(&mut self, agg: Verified<AggregateLabels>, frame_bytes: u64) -> Result<(), SessionError> {
        let round = agg.value().round;
        let (bytes, contributors) = (frame_bytes, agg.value().contributors.len());
        self.session.handle_aggregate_for(agg, self.me.as_ref())?;
        if let Some(r) = self.in_flight.get_mut(&round.0) {
            r.bytes_down = bytes;
            r.contributors = contributors;
            if let Some(t) = r.delivered {
                r.phases.insert("upload_wait".into(), t.elapsed().as_secs_f64());
            }
        }
        Ok(())
    }

    /// The coordinator finished all rounds.
    pub fn on_finished(&mut self) {
        self.session.handle_finished();
    }

    /// The coordinator holds this round's soft labels (acknowledged, or already held).
    pub fn labels_delivered(&mut self, round: RoundId, bytes: u64) {
        self.session.handle_labels_sent(round);
        if let Some(r) = self.in_flight.get_mut(&round.0) {
            r.bytes_up = bytes;
            r.delivered = Some(Instant::now());
        }
    }

    /// Whether [`RoundLifecycle::step`] has an effect to run (cheap: no learner work); when it is `false`,
    /// `step` would return `None`.
    pub fn has_work(&self) -> bool {
        self.session.has_output()
    }

    /// Runs the learner for the session's next effect and returns the message it produced; `None` when
    /// nothing is left to do until the next push. Blocking (teacher inference, distillation, evaluation).
    pub fn step(&mut self) -> anyhow::Result<Option<Outgoing>> {
        while let Some(out) = self.session.poll_output() {
            match out {
                ParticipantOutput::ComputeSoftLabels {
                    round,
                    sample_ids,
                    temperature,
                } => return self.label(round, &sample_ids, temperature).map(Some),
                ParticipantOutput::Distill {
                    round,
                    sample_ids,
                    probabilities,
                    total_rounds,
                    rule,
                    ..
                } => {
                    let report = self.distill(round, &sample_ids, &probabilities, total_rounds, rule)?;
                    self.session.handle_distilled(report);
                }
                ParticipantOutput::SendReport(report) => return Ok(Some(Outgoing::Report(report))),
                ParticipantOutput::Finished => return Ok(Some(Outgoing::Finished)),
            }
        }
        Ok(None)
    }

    fn label(&mut self, round: RoundId, ids: &[u64], temperature: f32) -> anyhow::Result<Outgoing> {
        let started = Instant::now();
        let out = self.label_inner(round, ids, temperature)?;
        if let Some(r) = self.in_flight.get_mut(&round.0) {
            r.phases.insert("label".into(), started.elapsed().as_secs_f64());
        }
        Ok(out)
    }

    fn label_inner(&mut self, round: RoundId, ids: &[u64], temperature: f32) -> anyhow::Result<Outgoing> {
        let probs = self.learner.label(round, ids, temperature)?;
        let classes = self.learner.classes();
        let probs = match self.privacy.as_mut() {
            None => probs,
            Some(dp) => {
                let mut rng = fedistill_shared::privacy::os_rng()?;
                match dp.handle_round(round.0, &probs, ids.len(), classes, &mut rng)? {
                    Release::Send { labels, spend } => {
                        let released = serde_json::json!({ "rounds_released": dp.rounds_released() });
                        write_json(&self.workdir.join(PRIVACY_FILE), &released)?;
                        info!(
                            round = round.0,
                            epsilon_round = spend.epsilon_round,
                            epsilon_total = spend.epsilon_total,
                            delta = spend.delta,
                            "soft labels privatized"
                        );
                        labels
                    }
                    Release::BudgetExhausted {
                        would_reach,
                        budget,
                        spent,
                    } => {
                        // Out of budget: say so, signed, so the round does not wait for us (docs/privacy.md
                        // "When the budget runs out"). Every later round ends here too; the node stays
                        // connected until the federation finishes.
                        warn!(
                            round = round.0,
                            would_reach,
                            budget,
                            spent,
                            "privacy budget would be exceeded: abstaining from round {} (epsilon spent {spent:.3} of the budget {budget}; this round would reach {would_reach:.3}); no soft labels are sent from now on",
                            round.0
                        );
                        return Ok(Outgoing::Abstain(budget_exhausted_message(
                            round,
                            budget,
                            spent,
                            would_reach,
                        )));
                    }
                }
            }
        };
        if let Some(open) = self
            .session
            .pending_open()
            .filter(|o| o.round == round && o.secure.is_some())
        {
            return self.start_secure_round(open.clone(), ids, &probs);
        }
        let message = softlabels::soft_labels_message(
            round,
            self.learner.public_digest(),
            ids,
            &probs,
            classes,
            self.encoding,
            self.learner.private_samples(),
        )?;
        // Written ahead of the release: a restart after the coordinator took the labels still finishes the
        // round (see `NodeState::labelled_open`).
        self.state.labelled_open = self.session.pending_open().filter(|o| o.round == round).cloned();
        self.save()?;
        Ok(Outgoing::SoftLabels(message))
    }

    /// A secure round: the labels become a fixed-point input (times this node's samples under the
    /// sample-weighted rule), fresh secrets are made, and the key advert goes out first.
    fn start_secure_round(&mut self, open: RoundOpen, ids: &[u64], probs: &[f32]) -> anyhow::Result<Outgoing> {
        let Some(params) = open.secure else {
            anyhow::bail!("round {} is not a secure round", open.round.0)
        };
        let (Some(me), Some(federation)) = (self.me.clone(), self.federation.clone()) else {
            anyhow::bail!("a secure round needs the node's participant id and federation");
        };
        let samples = self.learner.private_samples();
        let values: Vec<f32> = if open.rule == fedistill_shared::protocol::AggregationRule::SampleWeighted {
            probs.iter().map(|p| p * samples as f32).collect()
        } else {
            probs.to_vec()
        };
        let mut input = fedistill_shared::protocol::secagg::encode_fixed(&values)?;
        let mut rng = fedistill_shared::privacy::os_rng()?;
        if params.noise_sigma2 > 0 {
            // This node's share of the distributed noise: the sum of any `threshold` survivors' shares has
            // the variance the federation chose (docs/privacy.md, "Secure aggregation with noise").
            let dg = fedistill_shared::privacy::discrete::DiscreteGaussian::new(u128::from(params.noise_sigma2));
            fedistill_shared::protocol::secagg::add_discrete_gaussian_noise(
                &mut input,
                u128::from(params.noise_sigma2),
                || dg.sample(&mut rng),
            );
        }
        let (client, advert) = SecureClient::new(params, federation, open.round, me, input, &mut rng);
        let input = MaskedInput {
            public_digest: self.learner.public_digest(),
            sample_ids: ids.to_vec(),
            classes: self.learner.classes(),
            samples,
        };
        info!(
            round = open.round.0,
            threshold = params.threshold,
            "secure round: key advert"
        );
        self.secure = Some((client, input));
        Ok(Outgoing::SecAggKeys(advert))
    }

    fn distill(
        &mut self,
        round: RoundId,
        ids: &[u64],
        consensus: &[f32],
        total_rounds: u64,
        rule: fedistill_shared::protocol::AggregationRule,
    ) -> anyhow::Result<RoundReport> {
        let d = self
            .learner
            .distill(round, ids, consensus, total_rounds, rule, &self.state.accepted_metrics)?;
        if d.accepted {
            self.state.accepted_metrics = d.metrics.clone();
            self.state.accepted_test_metrics = d.test_metrics.clone();
            self.state.accepted_int8_accuracy = d.test_int8_accuracy;
            self.state.accepted_int8_bytes = d.int8_bytes;
        }
        let flight = self.in_flight.remove(&round.0);
        // The round's score: accuracy, or R² for a regression task; on the test rows for the node's own
        // records, on the validation rows for the guard and the signed report (the coordinator's `[stop]`).
        let score = |m: &BTreeMap<String, f64>| m.get("accuracy").or_else(|| m.get("r2")).copied();
        let student_accuracy = score(&d.test_metrics).unwrap_or(0.0);
        let validation_accuracy = score(&d.metrics);
        let mut phases = flight.as_ref().map(|f| f.phases.clone()).unwrap_or_default();
        phases.extend(d.phases.iter().cloned());
        let finished_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|t| t.as_millis() as u64)
            .unwrap_or(0);
        let record = RoundRecord {
            round: round.0,
            bytes_up: flight.as_ref().map_or(0, |f| f.bytes_up),
            bytes_down: flight.as_ref().map_or(0, |f| f.bytes_down),
            student_accuracy,
            int8_accuracy: d.test_int8_accuracy,
            validation_accuracy,
            consensus_accuracy: d.consensus_accuracy,
            guard_accepted: d.accepted,
            seconds: flight.as_ref().map_or(0.0, |f| f.opened.elapsed().as_secs_f64()),
            contributors: flight.as_ref().map_or(0, |f| f.contributors),
            phases: phases.clone(),
            finished_unix_ms,
            personalized_accuracy: d.personalized_accuracy,
        };
        info!(
            round = round.0,
            student_accuracy,
            validation_accuracy = validation_accuracy.unwrap_or(f64::NAN),
            int8_accuracy = d.test_int8_accuracy,
            consensus_accuracy = d.consensus_accuracy,
            guard = if d.accepted { "accept" } else { "reject" },
            "round distilled"
        );
        self.state.rounds.push(record);
        self.state.last_done = round.0;
        self.state.labelled_open = None;
        self.save()?;
        let dp_metrics = self
            .privacy
            .as_ref()
            .map(|p| p.report_metrics(round.0))
            .unwrap_or_default();
        Ok(RoundReport {
            round,
            metrics: d
                .metrics
                .iter()
                .filter(|(k, _)| REPORTED.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), *v))
                .chain([("int8_accuracy".to_string(), d.int8_accuracy)])
                .chain(
                    d.personalized_accuracy
                        .map(|a| ("personalized_accuracy".to_string(), a)),
                )
                .chain(dp_metrics)
                // The phase times travel in the signed report (and so into the log): `phase_<name>_s`.
                .chain(phases.iter().map(|(k, v)| (format!("phase_{k}_s"), *v)))
                .collect(),
            student_digest: d.student_digest,
            guard_accepted: d.accepted,
            guard_reason: d.guard_reason,
            privacy_spend: self.privacy.as_ref().and_then(|p| p.report_spend(round.0)),
        })
    }

    /// Writes `state.json` (write and rename).
    pub fn save(&self) -> anyhow::Result<()> {
        write_json(&self.workdir.join(STATE_FILE), &self.state)
    }
}

/// Writes `value` as pretty JSON to `path`, atomically for readers and against the process dying (not
/// fsync'd): through its spare `.NAME.prev` and an exchange of the two names (`fedistill_shared::files`),
/// so that rewriting `state.json` every round allocates no inode.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    replace(path, &serde_json::to_vec_pretty(value)?, Durability::Cached)
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    //! The round lifecycle through the learner seam, with a scripted learner: no network, no model.
    use super::*;
    use crate::learner::{Distilled, LearnerSummary};
    use fedistill_shared::crypto::Digest;
    use fedistill_shared::crypto::{FederationId, ReplayGuard, Signed, Signer, SigningIdentity};
    use fedistill_shared::protocol::coordinator::aggregate_labels_message;
    use fedistill_shared::protocol::AggregationRule;
    use fedistill_shared::wire::messages::sample_ids_digest;
    use std::sync::{Arc, Mutex};

    const CLASSES: usize = 3;
    const PUBLIC: Digest = Digest([5; 32]);

    /// What the lifecycle asked of the learner.
    #[derive(Debug, Clone, PartialEq)]
    enum Call {
        Label {
            round: u64,
            ids: Vec<u64>,
            temperature: f32,
        },
        Distill {
            round: u64,
            consensus: Vec<f32>,
            serving: BTreeMap<String, f64>,
        },
    }

    /// Labels every row with a fixed distribution; accepts or refuses candidates as scripted.
    struct Scripted {
        calls: Arc<Mutex<Vec<Call>>>,
        /// Accuracy and guard verdict of the candidate of each round (round 1 first).
        candidates: Vec<(f64, bool)>,
    }

    impl Learner for Scripted {
        fn public_digest(&self) -> Digest {
            PUBLIC
        }
        fn public_len(&self) -> u64 {
            100
        }
        fn classes(&self) -> usize {
            CLASSES
        }
        fn private_samples(&self) -> u64 {
            42
        }
        fn label(&mut self, round: RoundId, ids: &[u64], temperature: f32) -> anyhow::Result<Vec<f32>> {
            self.calls.lock().expect("lock").push(Call::Label {
                round: round.0,
                ids: ids.to_vec(),
                temperature,
            });
            Ok(ids.iter().flat_map(|_| [0.7f32, 0.2, 0.1]).collect())
        }
        fn distill(
            &mut self,
            round: RoundId,
            _ids: &[u64],
            consensus: &[f32],
            _total_rounds: u64,
            _rule: fedistill_shared::protocol::AggregationRule,
            serving: &BTreeMap<String, f64>,
        ) -> anyhow::Result<Distilled> {
            self.calls.lock().expect("lock").push(Call::Distill {
                round: round.0,
                consensus: consensus.to_vec(),
                serving: serving.clone(),
            });
            let (accuracy, accepted) = self.candidates[(round.0 - 1) as usize];
            // The test rows score a tenth lower than the validation rows, so a figure that crossed over
            // from one to the other shows.
            Ok(Distilled {
                metrics: BTreeMap::from([("accuracy".into(), accuracy), ("train_seconds".into(), 1.0)]),
                int8_accuracy: accuracy - 0.01,
                test_metrics: BTreeMap::from([("accuracy".into(), accuracy - 0.1)]),
                test_int8_accuracy: accuracy - 0.11,
                int8_bytes: 1000 + round.0 as usize,
                accepted,
                guard_reason: if accepted { "kept" } else { "accuracy dropped" }.into(),
                student_digest: Digest([round.0 as u8; 32]),
                consensus_accuracy: 0.5,
                phases: vec![("distill".into(), 0.25)],
                personalized_accuracy: (round.0 == 2).then_some(accuracy + 0.02),
            })
        }
        fn summary(&self) -> LearnerSummary {
            LearnerSummary::default()
        }
    }

    struct Coordinator {
        key: SigningIdentity,
        federation: FederationId,
        guard: ReplayGuard,
        seq: u64,
    }

    impl Coordinator {
        fn new() -> Self {
            let federation = FederationId::new("lifecycle-test").expect("id");
            Coordinator {
                key: SigningIdentity::generate().expect("key"),
                guard: ReplayGuard::new(federation.clone()),
                federation,
                seq: 0,
            }
        }
        fn verified<T: fedistill_shared::crypto::SignedMessage + serde::de::DeserializeOwned>(
            &mut self,
            round: u64,
            body: &T,
        ) -> Verified<T> {
            self.seq += 1;
            let s = Signed::sign(
                &self.key,
                Signer::Coordinator,
                self.federation.clone(),
                RoundId(round),
                self.seq,
                body,
            )
            .expect("sign");
            let v = s
                .verify(
                    &self.key.public_key(),
                    &Signer::Coordinator,
                    &self.guard,
                    RoundId(round),
                )
                .expect("verify");
            self.guard.accept(v.fresh());
            v
        }
        fn open(&mut self, round: u64, ids: &[u64]) -> Verified<RoundOpen> {
            let body = RoundOpen {
                round: RoundId(round),
                total_rounds: 3,
                public_digest: PUBLIC,
                sample_ids: ids.to_vec(),
                sample_ids_digest: sample_ids_digest(ids),
                temperature: 2.5,
                rule: AggregationRule::Mean,
                deadline_ms: 1000,
                quorum: 1,
                classes: CLASSES as u32,
                secure: None,
            };
            self.verified(round, &body)
        }
        fn aggregate(&mut self, round: u64, consensus: &[f32]) -> Verified<AggregateLabels> {
            self.aggregate_from(round, consensus, Vec::new())
        }
        fn secure_open(
            &mut self,
            round: u64,
            ids: &[u64],
            params: fedistill_shared::wire::secagg::SecAggParams,
        ) -> Verified<RoundOpen> {
            let mut body = self.open(round, ids).into_inner();
            body.secure = Some(params);
            self.verified(round, &body)
        }
        fn aggregate_from(
            &mut self,
            round: u64,
            consensus: &[f32],
            contributors: Vec<ParticipantId>,
        ) -> Verified<AggregateLabels> {
            let body = aggregate_labels_message(
                RoundId(round),
                AggregationRule::Mean,
                contributors,
                Vec::new(),
                consensus,
                CLASSES,
                Encoding::F32,
                String::new(),
            )
            .expect("aggregate");
            self.verified(round, &body)
        }
    }

    fn lifecycle(dir: &Path, candidates: Vec<(f64, bool)>) -> (RoundLifecycle<Scripted>, Arc<Mutex<Vec<Call>>>) {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let learner = Scripted {
            calls: calls.clone(),
            candidates,
        };
        (
            RoundLifecycle::open(learner, dir, Encoding::F32, None, None).expect("open"),
            calls,
        )
    }

    fn take(calls: &Arc<Mutex<Vec<Call>>>) -> Vec<Call> {
        std::mem::take(&mut *calls.lock().expect("lock"))
    }

    /// Opens, labels, delivers and distills one round; returns the report.
    fn round(lc: &mut RoundLifecycle<Scripted>, c: &mut Coordinator, n: u64, ids: &[u64]) -> RoundReport {
        lc.on_open(c.open(n, ids)).expect("open");
        let Some(Outgoing::SoftLabels(labels)) = lc.step().expect("label") else {
            panic!("expected soft labels");
        };
        lc.labels_delivered(RoundId(n), labels.payload.len() as u64);
        let consensus: Vec<f32> = ids.iter().flat_map(|_| [0.6f32, 0.3, 0.1]).collect();
        lc.on_aggregate(c.aggregate(n, &consensus), 500).expect("aggregate");
        match lc.step().expect("distill") {
            Some(Outgoing::Report(r)) => r,
            other => panic!("expected a report, got {other:?}"),
        }
    }

    /// A secure round through the lifecycle against one scripted peer: the node's masked input, unmasked
    /// with the reveals, is its labels in fixed point plus its share of the distributed noise, of the
    /// variance the round announced.
    #[test]
    fn a_secure_round_masks_the_labels_and_adds_the_announced_share_of_noise() {
        use fedistill_shared::protocol::secagg::{decode_fixed, unmask, Context, Graph, SecureClient, FRAC_BITS};
        use fedistill_shared::wire::secagg::{SecAggDelivery, SecAggParams, SecAggUnmask};
        use rand::SeedableRng;
        let dir = tempfile::tempdir().expect("dir");
        let mut c = Coordinator::new();
        let (mut lc, _) = lifecycle(dir.path(), vec![(0.8, true)]);
        let (me, peer) = (ParticipantId::new("a".to_string()), ParticipantId::new("b".to_string()));
        lc.set_participant(me.clone());
        lc.set_federation(c.federation.clone());
        let stddev = 0.01;
        let sigma2 = ((stddev * f64::from(1u32 << FRAC_BITS)).powi(2)).ceil() as u64;
        let params = SecAggParams {
            threshold: 2,
            neighbours: 0,
            noise_sigma2: sigma2,
        };
        let ids: Vec<u64> = (0..100).collect();
        lc.on_open(c.secure_open(1, &ids, params)).expect("open");
        let Some(Outgoing::SecAggKeys(mine)) = lc.step().expect("label") else {
            panic!("a secure round starts with the key advert");
        };
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(3);
        let zeros = vec![0u64; ids.len() * CLASSES];
        let (mut other, theirs) =
            SecureClient::new(params, c.federation.clone(), RoundId(1), peer.clone(), zeros, &mut rng);
        let adverts = vec![(me.clone(), mine.clone()), (peer.clone(), theirs.clone())];
        let my_shares = lc.on_secagg_roster(RoundId(1), &adverts).expect("shares").shares;
        let their_shares = other.on_roster(&adverts, &mut rng).expect("peer shares").shares;
        let all: Vec<_> = my_shares.into_iter().chain(their_shares).collect();
        let to = |v: u32| SecAggDelivery {
            round: RoundId(1),
            senders: vec![0, 1],
            shares: all.iter().filter(|s| s.to == v).cloned().collect(),
        };
        let labels = lc.on_secagg_delivery(&to(0)).expect("masked input");
        assert_eq!(labels.encoding, Encoding::MaskedU64);
        assert_eq!(
            lc.state().labelled_open.as_ref().map(|o| o.round),
            Some(RoundId(1)),
            "saved before release"
        );
        let my_masked = softlabels::decode_masked(&labels.payload, ids.len(), CLASSES).expect("masked");
        let their_masked = other.on_delivery(&to(1)).expect("peer masked");
        let request = SecAggUnmask {
            round: RoundId(1),
            survivors: vec![0, 1],
            dropped: vec![],
        };
        let mut revealed = lc
            .on_secagg_unmask(&request)
            .expect("reveal")
            .expect("a survivor")
            .shares;
        revealed.extend(
            other
                .on_unmask(&request)
                .expect("peer reveal")
                .expect("survivor")
                .shares,
        );
        let keys = [mine.keys, theirs.keys];
        let ctx = Context {
            federation: c.federation.as_str().as_bytes(),
            round: 1,
        };
        let sum = unmask(
            &ctx,
            &keys,
            &Graph::complete(2, 2).expect("graph"),
            &[0, 1],
            &[(0, my_masked), (1, their_masked)],
            &revealed,
        )
        .expect("unmask");
        // The peer's input is zero: the sum is this node's noisy labels.
        let noise: Vec<f64> = decode_fixed(&sum)
            .iter()
            .zip([0.7f64, 0.2, 0.1].iter().cycle())
            .map(|(got, clear)| got - clear)
            .collect();
        let mean = noise.iter().sum::<f64>() / noise.len() as f64;
        let sd = (noise.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / noise.len() as f64).sqrt();
        assert!(
            (sd - stddev).abs() < 0.15 * stddev,
            "noise stddev {sd}, announced {stddev}"
        );
        assert!(
            mean.abs() < 4.0 * stddev / (noise.len() as f64).sqrt(),
            "noise mean {mean}"
        );
    }

    #[test]
    fn a_restart_after_releasing_labels_distills_the_aggregate_that_names_this_node() {
        let dir = tempfile::tempdir().expect("dir");
        let mut c = Coordinator::new();
        let ids = [1u64, 2];
        {
            let (mut lc, _) = lifecycle(dir.path(), vec![(0.8, true)]);
            lc.on_open(c.open(1, &ids)).expect("open");
            let Some(Outgoing::SoftLabels(_)) = lc.step().expect("label") else {
                panic!("expected soft labels");
            };
            // The process dies here: the labels went out, the acknowledgement never arrived.
            assert_eq!(lc.state().labelled_open.as_ref().map(|o| o.round), Some(RoundId(1)));
        }
        let saved: NodeState =
            serde_json::from_slice(&std::fs::read(dir.path().join(STATE_FILE)).expect("state")).expect("json");
        assert_eq!(saved.labelled_open.map(|o| o.sample_ids), Some(ids.to_vec()));
        let (mut lc, calls) = lifecycle(dir.path(), vec![(0.8, true)]);
        lc.set_participant(ParticipantId::new("p0".to_string()));
        let consensus: Vec<f32> = [0.6f32, 0.3, 0.1].repeat(2);
        // An aggregate that does not name this node is still not its to distill...
        assert!(matches!(
            lc.on_aggregate(
                c.aggregate_from(1, &consensus, vec![ParticipantId::new("p1".to_string())]),
                500
            ),
            Err(SessionError::NotContributed(_))
        ));
        // ...one whose signed contributors include it is: distilled on the saved opening's rows, reported.
        let named = vec![
            ParticipantId::new("p0".to_string()),
            ParticipantId::new("p1".to_string()),
        ];
        lc.on_aggregate(c.aggregate_from(1, &consensus, named), 500)
            .expect("aggregate");
        let Some(Outgoing::Report(report)) = lc.step().expect("distill") else {
            panic!("expected a report");
        };
        assert_eq!(report.round, RoundId(1));
        assert!(matches!(take(&calls).as_slice(), [Call::Distill { round: 1, .. }]));
        assert_eq!(lc.state().last_done, 1);
        assert_eq!(lc.state().labelled_open, None);
        // A re-announcement of a resumed round that was never acknowledged labels it again.
        let dir2 = tempfile::tempdir().expect("dir");
        {
            let (mut lc, _) = lifecycle(dir2.path(), vec![]);
            lc.on_open(c.open(1, &ids)).expect("open");
            lc.step().expect("label");
        }
        let (mut lc, calls) = lifecycle(dir2.path(), vec![]);
        lc.on_open(c.open(1, &ids)).expect("re-announced");
        assert!(matches!(lc.step().expect("label"), Some(Outgoing::SoftLabels(_))));
        assert!(matches!(take(&calls).as_slice(), [Call::Label { round: 1, .. }]));
    }

    #[test]
    fn a_round_labels_with_the_learner_then_distills_from_the_consensus_and_reports() {
        let dir = tempfile::tempdir().expect("dir");
        let (mut lc, calls) = lifecycle(dir.path(), vec![(0.8, true)]);
        let mut c = Coordinator::new();
        let ids = [3u64, 4, 9];
        lc.on_open(c.open(1, &ids)).expect("open");
        let Some(Outgoing::SoftLabels(labels)) = lc.step().expect("label") else {
            panic!("expected soft labels");
        };
        assert_eq!(
            take(&calls),
            vec![Call::Label {
                round: 1,
                ids: ids.to_vec(),
                temperature: 2.5
            }]
        );
        assert_eq!(
            (labels.round, labels.public_digest, labels.samples),
            (RoundId(1), PUBLIC, 42)
        );
        let sent = softlabels::decode(&labels.payload, 3, CLASSES, Encoding::F32).expect("decode");
        assert_eq!(sent, [0.7f32, 0.2, 0.1].repeat(3));
        // Nothing more until the coordinator holds the labels: an aggregate now is not ours to distill.
        assert_eq!(lc.step().expect("idle"), None);
        let consensus: Vec<f32> = [0.6f32, 0.3, 0.1].repeat(3);
        assert!(matches!(
            lc.on_aggregate(c.aggregate(1, &consensus), 500),
            Err(SessionError::NotContributed(_))
        ));
        lc.labels_delivered(RoundId(1), labels.payload.len() as u64);
        lc.on_aggregate(c.aggregate(1, &consensus), 500).expect("aggregate");
        let Some(Outgoing::Report(report)) = lc.step().expect("distill") else {
            panic!("expected a report");
        };
        assert_eq!(
            take(&calls),
            vec![Call::Distill {
                round: 1,
                consensus: consensus.clone(),
                serving: BTreeMap::new()
            }]
        );
        // The report carries the reported metrics only (not `train_seconds`), the INT8 accuracy, the phase
        // times (the learner's, and the lifecycle's label and upload wait), the digest and the guard.
        let names: Vec<&str> = report.metrics.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "accuracy",
                "int8_accuracy",
                "phase_distill_s",
                "phase_label_s",
                "phase_upload_wait_s"
            ]
        );
        assert_eq!(
            report.metrics[..3],
            [
                ("accuracy".into(), 0.8),
                ("int8_accuracy".into(), 0.8 - 0.01),
                ("phase_distill_s".into(), 0.25)
            ]
        );
        let rec_phases: Vec<&String> = lc.state().rounds[0].phases.keys().collect();
        assert_eq!(rec_phases, ["distill", "label", "upload_wait"]);
        assert_eq!(report.student_digest, Digest([1; 32]));
        assert_eq!((report.guard_accepted, report.guard_reason.as_str()), (true, "kept"));
        assert_eq!(report.privacy_spend, None);
        // The record counts the labels sent up and the consensus received down, each once.
        let rec = &lc.state().rounds[0];
        assert_eq!((rec.bytes_up, rec.bytes_down), (labels.payload.len() as u64, 500));
        assert_eq!(lc.state().last_done, 1);
        assert_eq!(lc.step().expect("idle"), None);
    }

    #[test]
    fn a_refused_candidate_keeps_the_serving_student_and_its_metrics() {
        let dir = tempfile::tempdir().expect("dir");
        let (mut lc, calls) = lifecycle(dir.path(), vec![(0.8, true), (0.5, false), (0.85, true)]);
        let mut c = Coordinator::new();
        round(&mut lc, &mut c, 1, &[0, 1]);
        let r2 = round(&mut lc, &mut c, 2, &[2, 3]);
        assert!(!r2.guard_accepted);
        assert_eq!(lc.state().accepted_metrics["accuracy"], 0.8);
        // A personalized student (scripted for round 2 only) is reported beside the shared one, and recorded.
        let personalized = |r: &RoundReport| {
            r.metrics
                .iter()
                .find(|(k, _)| k == "personalized_accuracy")
                .map(|(_, v)| *v)
        };
        assert_eq!(personalized(&r2), Some(0.5 + 0.02));
        assert_eq!(lc.state().rounds[1].personalized_accuracy, Some(0.5 + 0.02));
        assert_eq!(lc.state().rounds[0].personalized_accuracy, None);
        assert_eq!(lc.state().accepted_int8_bytes, 1001);
        round(&mut lc, &mut c, 3, &[4, 5]);
        // Round 3's candidate was judged against round 1's student, the one still serving.
        let serving: Vec<BTreeMap<String, f64>> = take(&calls)
            .into_iter()
            .filter_map(|c| match c {
                Call::Distill { serving, .. } => Some(serving),
                _ => None,
            })
            .collect();
        assert_eq!(serving.len(), 3);
        assert!(serving[0].is_empty());
        assert_eq!(serving[1]["accuracy"], 0.8);
        assert_eq!(serving[2]["accuracy"], 0.8);
        assert_eq!(lc.state().accepted_metrics["accuracy"], 0.85);
    }

    /// The candidate's validation figures are what the guard compares (the serving student's, passed back
    /// each round) and what the signed report carries (the coordinator's `[stop]` reads its `accuracy`); the
    /// node's own records and `result.json` keep the test figures, which the scripted learner puts a tenth
    /// lower.
    #[test]
    fn the_guard_and_the_report_see_validation_figures_and_the_records_test_figures() {
        let dir = tempfile::tempdir().expect("dir");
        let (mut lc, calls) = lifecycle(dir.path(), vec![(0.8, true), (0.5, false)]);
        let mut c = Coordinator::new();
        let reports = [round(&mut lc, &mut c, 1, &[0, 1]), round(&mut lc, &mut c, 2, &[2, 3])];
        let figure = |r: &RoundReport, name: &str| r.metrics.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
        assert_eq!(figure(&reports[0], "accuracy"), Some(0.8));
        assert_eq!(figure(&reports[0], "int8_accuracy"), Some(0.8 - 0.01));
        assert_eq!(figure(&reports[1], "accuracy"), Some(0.5));
        let serving: Vec<BTreeMap<String, f64>> = take(&calls)
            .into_iter()
            .filter_map(|c| match c {
                Call::Distill { serving, .. } => Some(serving),
                _ => None,
            })
            .collect();
        assert_eq!(serving[1]["accuracy"], 0.8, "the guard compares validation figures");
        let state = lc.state();
        assert_eq!(state.rounds[0].student_accuracy, 0.8 - 0.1);
        assert_eq!(state.rounds[0].int8_accuracy, 0.8 - 0.11);
        assert_eq!(state.rounds[0].validation_accuracy, Some(0.8));
        assert_eq!(state.rounds[1].student_accuracy, 0.5 - 0.1);
        // The refused round 2 left round 1's student serving: its figures, both kinds, stay.
        assert_eq!(state.accepted_metrics["accuracy"], 0.8);
        assert_eq!(state.serving_test_metrics()["accuracy"], 0.8 - 0.1);
        assert_eq!(state.accepted_int8_accuracy, 0.8 - 0.11);
        // A state saved before the validation split kept test figures in `accepted_metrics`.
        let old = NodeState {
            accepted_metrics: BTreeMap::from([("accuracy".to_string(), 0.6)]),
            ..NodeState::default()
        };
        assert_eq!(old.serving_test_metrics()["accuracy"], 0.6);
    }

    #[test]
    fn a_restart_restores_state_and_never_redoes_a_round() {
        let dir = tempfile::tempdir().expect("dir");
        let mut c = Coordinator::new();
        {
            let (mut lc, _) = lifecycle(dir.path(), vec![(0.8, true), (0.9, true)]);
            round(&mut lc, &mut c, 1, &[0, 1]);
            let first = lc.next_seq(10).expect("seq");
            assert!(first >= 10, "{first}");
            // Within the reservation nothing is saved: the next numbers only grow.
            let saved = std::fs::read(dir.path().join(STATE_FILE)).expect("state.json");
            assert_eq!(lc.next_seq(11).expect("seq"), first + 1);
            assert_eq!(lc.next_seq(5).expect("seq"), first + 2);
            assert_eq!(std::fs::read(dir.path().join(STATE_FILE)).expect("state.json"), saved);
            assert_eq!(lc.state().seq_reserved, first + SEQ_RESERVE_MICROS);
            // Past it, the reservation moves on and is saved first.
            let far = first + SEQ_RESERVE_MICROS + 7;
            assert_eq!(lc.next_seq(far).expect("seq"), far);
            assert_eq!(lc.state().seq_reserved, far + SEQ_RESERVE_MICROS);
            assert_ne!(std::fs::read(dir.path().join(STATE_FILE)).expect("state.json"), saved);
        }
        let (mut lc, calls) = lifecycle(dir.path(), vec![(0.8, true), (0.9, true)]);
        assert_eq!(lc.state().last_done, 1);
        assert_eq!(lc.state().accepted_metrics["accuracy"], 0.8);
        // Sequence numbers keep growing even if the clock went back: a restart continues above every number
        // the reservation allowed before it.
        let reserved = lc.state().seq_reserved;
        assert_eq!(lc.next_seq(5).expect("seq"), reserved + 1);
        // Round 1 again (a coordinator that restarted) is stale: nothing is labelled.
        assert!(matches!(
            lc.on_open(c.open(1, &[0, 1])),
            Err(SessionError::Stale { .. })
        ));
        assert_eq!(lc.step().expect("idle"), None);
        assert!(take(&calls).is_empty());
        let r2 = round(&mut lc, &mut c, 2, &[2, 3]);
        assert_eq!(r2.round, RoundId(2));
        assert_eq!(lc.state().rounds.len(), 2);
        lc.on_finished();
        assert_eq!(lc.step().expect("finished"), Some(Outgoing::Finished));
    }

    #[test]
    fn an_exhausted_privacy_budget_abstains_instead_of_sending_labels() {
        use fedistill_shared::privacy::{PrivacyConfig, PrivacyMode};
        let dir = tempfile::tempdir().expect("dir");
        let calls = Arc::new(Mutex::new(Vec::new()));
        let learner = Scripted {
            calls: calls.clone(),
            candidates: vec![(0.8, true); 3],
        };
        // A budget that one release already exceeds.
        let cfg = PrivacyConfig {
            mode: PrivacyMode::Soft,
            noise_multiplier: 1.0,
            delta: 1e-5,
            clip: 1.0,
            budget_epsilon: 0.01,
        };
        let settings = PrivacySettings {
            labels: Some(cfg),
            teacher: None,
            delta: 1e-5,
            budget_epsilon: 0.01,
        };
        let mut lc = RoundLifecycle::open(learner, dir.path(), Encoding::F32, Some(&settings), None).expect("open");
        let mut c = Coordinator::new();
        lc.on_open(c.open(1, &[0, 1])).expect("open");
        let Some(Outgoing::Abstain(a)) = lc.step().expect("abstain") else {
            panic!("expected an abstention");
        };
        assert_eq!(
            (a.round, a.reason),
            (
                RoundId(1),
                fedistill_shared::wire::messages::AbstainReason::BudgetExhausted
            )
        );
        let figure = |name: &str| a.figures.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
        assert_eq!(figure("epsilon_budget"), Some(0.01));
        assert!(figure("epsilon_would_reach").expect("would reach") > 0.01);
        // Nothing was released, so nothing was recorded as spent.
        assert_eq!(lc.privacy().expect("privacy").rounds_released(), 0);
        assert!(!dir.path().join(PRIVACY_FILE).exists());
    }

    #[test]
    fn an_unknown_consensus_accuracy_is_null_in_json_and_reads_back_unknown() {
        let rec = RoundRecord {
            round: 1,
            bytes_up: 1,
            bytes_down: 2,
            student_accuracy: 0.5,
            int8_accuracy: 0.5,
            validation_accuracy: None,
            consensus_accuracy: f64::NAN,
            guard_accepted: true,
            seconds: 1.0,
            contributors: 2,
            phases: BTreeMap::new(),
            finished_unix_ms: 0,
            personalized_accuracy: None,
        };
        let text = serde_json::to_string(&rec).expect("json");
        assert!(text.contains("\"consensus_accuracy\":null"), "{text}");
        let back: RoundRecord = serde_json::from_str(&text).expect("reads back");
        assert!(back.consensus_accuracy.is_nan());
        let known = RoundRecord {
            consensus_accuracy: 0.75,
            ..rec
        };
        let back: RoundRecord = serde_json::from_str(&serde_json::to_string(&known).expect("json")).expect("back");
        assert_eq!(back, known);
    }
}
