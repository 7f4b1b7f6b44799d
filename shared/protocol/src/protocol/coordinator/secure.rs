//! The secure round's phases of [`CoordinatorRound`]: key adverts, shares, masked inputs and the unmasking,
//! each closed when everyone it waits for answered or at its deadline (see `protocol::secagg::server`).

use super::super::secagg::{decode_fixed, SecureRound};
use super::super::softlabels;
use super::{AcceptedContribution, CoordinatorRound, Millis, OutMessage, Output, Phase, Rejection};
use crate::crypto::{ParticipantId, RoundId, Signer, Verified};
use crate::wire::enums::{AggregationRule, Encoding};
use crate::wire::messages::SoftLabels;
use crate::wire::secagg::{SecAggKeys, SecAggReveal, SecAggShares};

fn signer_is(signer: &Signer, from: &ParticipantId) -> Result<(), Rejection> {
    match signer {
        Signer::Participant(p) if p == from => Ok(()),
        other => Err(Rejection::SignerMismatch {
            signer: other.to_string(),
            connection: from.clone(),
        }),
    }
}

impl CoordinatorRound {
    fn secure_phase(&mut self, got: RoundId, want: &'static str) -> Result<(Millis, &mut SecureRound), Rejection> {
        let deadline = match (&self.phase, want) {
            (Phase::Keying { deadline }, "keying")
            | (Phase::Sharing { deadline }, "sharing")
            | (Phase::Unmasking { deadline }, "unmasking")
            | (Phase::Collecting { deadline }, "collecting") => *deadline,
            _ => {
                return Err(Rejection::NotCollecting {
                    got,
                    current: self.round,
                    phase: self.phase.name(),
                })
            }
        };
        if got != self.round {
            return Err(Rejection::WrongRound {
                got,
                current: self.round,
            });
        }
        match self.secure.as_mut() {
            Some(s) => Ok((deadline, s)),
            None => Err(Rejection::BadPayload(format!(
                "round {} does not use secure aggregation",
                self.round
            ))),
        }
    }

    /// A verified key advert for the open secure round.
    pub fn handle_secagg_keys(
        &mut self,
        now: Millis,
        from: &ParticipantId,
        msg: Verified<SecAggKeys>,
    ) -> Result<(), Rejection> {
        signer_is(msg.signer(), from)?;
        if self.quarantined.contains(from) {
            return Err(Rejection::Quarantined(from.clone()));
        }
        let round = msg.value().round;
        let (deadline, secure) = self.secure_phase(round, "keying")?;
        if now > deadline {
            return Err(Rejection::Late {
                round,
                late_ms: now.0 - deadline.0,
            });
        }
        secure.handle_keys(from, msg).map_err(Rejection::BadPayload)?;
        self.expected.insert(from.clone());
        self.drive(now);
        Ok(())
    }

    /// A verified shares message for the open secure round.
    pub fn handle_secagg_shares(
        &mut self,
        now: Millis,
        from: &ParticipantId,
        msg: Verified<SecAggShares>,
    ) -> Result<(), Rejection> {
        signer_is(msg.signer(), from)?;
        let round = msg.value().round;
        let (deadline, secure) = self.secure_phase(round, "sharing")?;
        if now > deadline {
            return Err(Rejection::Late {
                round,
                late_ms: now.0 - deadline.0,
            });
        }
        if secure.has_shares(from) {
            return Err(Rejection::Duplicate {
                participant: from.clone(),
                round,
            });
        }
        secure.handle_shares(from, msg).map_err(Rejection::BadPayload)?;
        self.drive(now);
        Ok(())
    }

    /// A verified reveal for the open secure round.
    pub fn handle_secagg_reveal(
        &mut self,
        now: Millis,
        from: &ParticipantId,
        msg: Verified<SecAggReveal>,
    ) -> Result<(), Rejection> {
        signer_is(msg.signer(), from)?;
        let round = msg.value().round;
        if round == self.round && matches!(self.phase, Phase::Committing | Phase::Reporting { .. }) {
            return Err(Rejection::NotNeeded { round });
        }
        let (deadline, secure) = self.secure_phase(round, "unmasking")?;
        if now > deadline {
            return Err(Rejection::Late {
                round,
                late_ms: now.0 - deadline.0,
            });
        }
        if secure.has_revealed(from) {
            return Err(Rejection::Duplicate {
                participant: from.clone(),
                round,
            });
        }
        secure.handle_reveal(from, msg).map_err(Rejection::BadPayload)?;
        self.drive(now);
        Ok(())
    }

    /// A masked input (soft labels in the `masked_u64` encoding) for the open secure round.
    pub(super) fn handle_masked(
        &mut self,
        now: Millis,
        from: &ParticipantId,
        labels: Verified<SoftLabels>,
    ) -> Result<(), Rejection> {
        let body = labels.value();
        let round = body.round;
        let rows = self.open.as_ref().map_or(0, |o| o.sample_ids.len());
        let ids_digest = self.open.as_ref().map(|o| o.sample_ids_digest);
        let (classes, public_digest, max_payload) = (self.cfg.classes, self.cfg.public_digest, self.cfg.max_payload);
        let duplicate = self.contributions.contains_key(from);
        let (deadline, secure) = self.secure_phase(round, "collecting")?;
        if now > deadline {
            return Err(Rejection::Late {
                round,
                late_ms: now.0 - deadline.0,
            });
        }
        if duplicate {
            return Err(Rejection::Duplicate {
                participant: from.clone(),
                round,
            });
        }
        if body.public_digest != public_digest {
            return Err(Rejection::WrongPublicSet {
                expected: public_digest,
                got: body.public_digest,
            });
        }
        if Some(body.sample_ids_digest) != ids_digest {
            return Err(Rejection::WrongSamples {
                expected: ids_digest.unwrap_or(body.sample_ids_digest),
                got: body.sample_ids_digest,
            });
        }
        if body.encoding != Encoding::MaskedU64 {
            return Err(Rejection::BadPayload(format!(
                "round {round} aggregates securely: soft labels must be a masked_u64 input, not {}",
                body.encoding.name()
            )));
        }
        if body.rows as usize != rows || body.classes != classes {
            return Err(Rejection::BadPayload(format!(
                "shape {}x{} but the round asks for {rows}x{classes}",
                body.rows, body.classes
            )));
        }
        if body.payload.len() > max_payload.saturating_mul(2) {
            return Err(Rejection::BadPayload(format!(
                "{} bytes exceed the cap of {} for a masked input",
                body.payload.len(),
                max_payload.saturating_mul(2)
            )));
        }
        let masked = softlabels::decode_masked(&body.payload, rows, classes as usize)
            .map_err(|e| Rejection::BadPayload(e.to_string()))?;
        secure.handle_masked(from, masked).map_err(Rejection::BadPayload)?;
        // A masked input: the coordinator keeps no probabilities, only the envelope its record needs.
        let accepted = AcceptedContribution::accepted(from, labels, Vec::new());
        self.contributions.insert(from.clone(), accepted);
        self.drive(now);
        Ok(())
    }

    /// Ends the round without an aggregate; the next one opens.
    fn fail_secure_round(&mut self, reason: String) -> bool {
        self.outputs.push_back(Output::RoundFailed {
            round: self.round,
            reason,
        });
        self.phase = Phase::Waiting;
        self.open = None;
        self.secure = None;
        self.contributions.clear();
        self.abstained.clear();
        self.reports.clear();
        true
    }

    pub(super) fn try_close_keys(&mut self, now: Millis, deadline: Millis) -> bool {
        let Some(secure) = self.secure.as_mut() else {
            return false;
        };
        let everyone = !self.expected.is_empty()
            && self
                .expected
                .iter()
                .all(|p| self.abstained.contains(p) || secure.advertised().any(|a| a == p));
        if !everyone && now < deadline {
            return false;
        }
        match secure.close_keys() {
            Ok(adverts) => {
                self.expected = secure.members().iter().cloned().collect();
                self.outputs.push_back(Output::Broadcast(OutMessage::SecAggRoster {
                    round: self.round,
                    adverts,
                }));
                self.phase = Phase::Sharing {
                    deadline: now.plus(self.cfg.collect_timeout),
                };
                true
            }
            Err(e) => self.fail_secure_round(e),
        }
    }

    pub(super) fn try_close_shares(&mut self, now: Millis, deadline: Millis) -> bool {
        let Some(secure) = self.secure.as_mut() else {
            return false;
        };
        let everyone = secure.members().iter().all(|p| secure.has_shares(p));
        if !everyone && now < deadline {
            return false;
        }
        match secure.close_shares() {
            Ok(deliveries) => {
                self.expected = secure.u2_members().into_iter().collect();
                for (p, d) in deliveries {
                    self.outputs.push_back(Output::Send(p, OutMessage::SecAggDelivery(d)));
                }
                self.phase = Phase::Collecting {
                    deadline: now.plus(self.cfg.collect_timeout),
                };
                true
            }
            Err(e) => self.fail_secure_round(e),
        }
    }

    pub(super) fn try_close_masked(&mut self, now: Millis, deadline: Millis) -> bool {
        let everyone = self.expected.iter().all(|p| self.contributions.contains_key(p));
        let quorum = self.cfg.quorum.max(1);
        if !(everyone && self.contributions.len() >= quorum || now >= deadline) {
            return false;
        }
        if self.contributions.len() < quorum {
            let reason = format!(
                "{} masked inputs arrived, the quorum is {quorum}",
                self.contributions.len()
            );
            return self.fail_secure_round(reason);
        }
        let Some(secure) = self.secure.as_mut() else {
            return false;
        };
        match secure.close_masked() {
            Ok(unmask) => {
                for p in secure.survivor_members() {
                    self.outputs
                        .push_back(Output::Send(p, OutMessage::SecAggUnmask(unmask.clone())));
                }
                self.phase = Phase::Unmasking {
                    deadline: now.plus(self.cfg.collect_timeout),
                };
                true
            }
            Err(e) => self.fail_secure_round(e),
        }
    }

    pub(super) fn try_unmask(&mut self, now: Millis, deadline: Millis) -> bool {
        let Some(secure) = self.secure.as_ref() else {
            return false;
        };
        if !secure.ready_to_unmask() {
            if now >= deadline || secure.all_revealed() {
                let reason = format!(
                    "too few shares were revealed to unmask round {} (threshold {})",
                    self.round,
                    secure.params().threshold
                );
                return self.fail_secure_round(reason);
            }
            return false;
        }
        let sum = match secure.unmask() {
            Ok(s) => s,
            Err(e) => return self.fail_secure_round(format!("unmasking round {}: {e}", self.round)),
        };
        let transcript = secure.transcript();
        let Some(open) = self.open.clone() else {
            return false;
        };
        let contributions: Vec<AcceptedContribution> = self.contributions.values().cloned().collect();
        let divisor = match self.cfg.rule {
            AggregationRule::SampleWeighted => contributions.iter().map(|c| c.samples as f64).sum::<f64>(),
            _ => contributions.len() as f64,
        };
        let consensus = consensus_from_sum(&sum, divisor, self.cfg.classes as usize);
        self.push_commit(open, contributions, consensus, Vec::new(), Some(transcript));
        true
    }
}

/// The consensus rows from a secure round's unmasked fixed-point sum: divided by `divisor` (the survivors,
/// or their samples for the sample-weighted rule), each value clamped to [0, 1] and each row renormalised
/// (distributed noise can push a value outside; post-processing costs no privacy). The coordinator and the
/// auditor both compute it here, so the digest is reproducible bit for bit.
pub fn consensus_from_sum(sum: &[u64], divisor: f64, classes: usize) -> Vec<f32> {
    let divisor = if divisor > 0.0 { divisor } else { 1.0 };
    let mut out: Vec<f32> = decode_fixed(sum)
        .into_iter()
        .map(|v| (v / divisor).clamp(0.0, 1.0) as f32)
        .collect();
    for row in out.chunks_exact_mut(classes.max(1)) {
        let s: f32 = row.iter().sum();
        if s > 0.0 {
            row.iter_mut().for_each(|v| *v /= s);
        } else {
            let u = 1.0 / row.len() as f32;
            row.iter_mut().for_each(|v| *v = u);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    //! A whole secure round through [`CoordinatorRound`] and [`SecureClient`], in memory.
    use std::collections::BTreeMap;

    use rand::SeedableRng;

    use super::super::super::secagg::{encode_fixed, fixed_point_error_bound, recompute_sum, SecureClient};
    use super::super::{CoordinatorConfig, OutMessage, Output, RoundCommit};
    use super::*;
    use crate::crypto::{Digest, FederationId, ReplayGuard, Signed, SigningIdentity};
    use crate::wire::secagg::{SecAggParams, SecAggShares};

    const CLASSES: usize = 4;

    fn fed() -> FederationId {
        FederationId::new("secure-sim").expect("valid")
    }

    fn config(secure: SecAggParams, rule: AggregationRule) -> CoordinatorConfig {
        CoordinatorConfig {
            federation: fed(),
            rounds: 3,
            min_participants: 5,
            quorum: 3,
            collect_timeout: Millis(1_000),
            report_timeout: Millis(1_000),
            public_len: 100,
            samples_per_round: 6,
            public_digest: Digest::of(b"public"),
            classes: CLASSES as u32,
            rule,
            temperature: 2.0,
            max_payload: 1 << 20,
            secure: Some(secure),
            stop: None,
        }
    }

    struct Node {
        id: ParticipantId,
        key: SigningIdentity,
        seq: u64,
        probs: Vec<f32>,
        samples: u64,
        client: Option<SecureClient>,
    }

    impl Node {
        fn sign<T: crate::crypto::SignedMessage>(&mut self, round: RoundId, m: &T) -> Verified<T> {
            self.seq += 1;
            let s = Signed::sign(
                &self.key,
                Signer::Participant(self.id.clone()),
                fed(),
                round,
                self.seq,
                m,
            )
            .expect("sign");
            s.verify(
                &self.key.public_key(),
                &Signer::Participant(self.id.clone()),
                &ReplayGuard::new(fed()),
                round,
            )
            .expect("verify")
        }
    }

    fn probs(i: usize, rows: usize) -> Vec<f32> {
        (0..rows)
            .flat_map(|r| {
                let hot = (r + i) % CLASSES;
                (0..CLASSES).map(move |c| {
                    if c == hot {
                        0.55 + 0.05 * i as f32
                    } else {
                        (0.45 - 0.05 * i as f32) / 3.0
                    }
                })
            })
            .collect()
    }

    /// Runs one secure round; `drop_after_upload` never answers the unmasking request.
    fn run(params: SecAggParams, rule: AggregationRule, drop_after_upload: Option<usize>) -> (RoundCommit, Vec<Node>) {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        let mut m = CoordinatorRound::new(config(params, rule));
        let mut nodes: Vec<Node> = (0..5)
            .map(|i| Node {
                id: ParticipantId::new(format!("p{i}")),
                key: SigningIdentity::from_seed([i as u8 + 1; 32]),
                seq: 0,
                probs: probs(i, 6),
                samples: 10 * (i as u64 + 1),
                client: None,
            })
            .collect();
        let mut now = Millis(0);
        for n in &nodes {
            m.handle_connected(now, n.id.clone());
        }
        let mut commit = None;
        let mut steps = 0;
        while commit.is_none() {
            steps += 1;
            assert!(steps < 50, "the round never committed");
            let mut sent: Vec<(Option<ParticipantId>, OutMessage)> = Vec::new();
            while let Some(o) = m.poll_output() {
                match o {
                    Output::Broadcast(msg) => sent.push((None, msg)),
                    Output::Send(p, msg) => sent.push((Some(p), msg)),
                    Output::Commit(c) => commit = Some(*c),
                    Output::RoundFailed { reason, .. } => panic!("round failed: {reason}"),
                    _ => {}
                }
            }
            for (to, msg) in sent {
                for (i, node) in nodes.iter_mut().enumerate() {
                    if to.as_ref().is_some_and(|t| t != &node.id) {
                        continue;
                    }
                    let id = node.id.clone();
                    match &msg {
                        OutMessage::Open(open) => {
                            let input = if rule == AggregationRule::SampleWeighted {
                                let w = node.samples as f32;
                                encode_fixed(&node.probs.iter().map(|p| p * w).collect::<Vec<_>>())
                            } else {
                                encode_fixed(&node.probs)
                            }
                            .expect("encode");
                            let (client, advert) =
                                SecureClient::new(params, fed(), open.round, id.clone(), input, &mut rng);
                            node.client = Some(client);
                            let v = node.sign(open.round, &advert);
                            m.handle_secagg_keys(now, &id, v).expect("keys accepted");
                        }
                        OutMessage::SecAggRoster { round, adverts } => {
                            let list: Vec<(ParticipantId, SecAggKeys)> = adverts
                                .iter()
                                .map(|a| {
                                    let Signer::Participant(p) = &a.signer else {
                                        panic!("participant advert")
                                    };
                                    (p.clone(), crate::wire::decode_payload(&a.payload).expect("advert"))
                                })
                                .collect();
                            let shares: SecAggShares = node
                                .client
                                .as_mut()
                                .expect("client")
                                .on_roster(&list, &mut rng)
                                .expect("shares");
                            let v = node.sign(*round, &shares);
                            m.handle_secagg_shares(now, &id, v).expect("shares accepted");
                        }
                        OutMessage::SecAggDelivery(d) => {
                            let masked = node.client.as_mut().expect("client").on_delivery(d).expect("masked");
                            let open = m.open_round().expect("open").clone();
                            let labels = softlabels::secure_soft_labels_message(
                                d.round,
                                open.public_digest,
                                &open.sample_ids,
                                &masked,
                                CLASSES,
                                node.samples,
                            )
                            .expect("masked input");
                            let v = node.sign(d.round, &labels);
                            m.handle_soft_labels(now, &id, v).expect("masked accepted");
                        }
                        OutMessage::SecAggUnmask(u) => {
                            if drop_after_upload == Some(i) {
                                continue;
                            }
                            let reveal = node.client.as_mut().expect("client").on_unmask(u).expect("reveal");
                            if let Some(r) = reveal {
                                let v = node.sign(u.round, &r);
                                match m.handle_secagg_reveal(now, &id, v) {
                                    Ok(()) | Err(Rejection::NotNeeded { .. }) => {}
                                    Err(e) => panic!("reveal refused: {e}"),
                                }
                            }
                        }
                        OutMessage::Finished => {}
                    }
                }
            }
            now = now.plus(Millis(1));
            m.handle_timeout(now);
        }
        (commit.expect("committed"), nodes)
    }

    fn mean(nodes: &[Node], weighted: bool) -> Vec<f64> {
        let total: f64 = nodes
            .iter()
            .map(|n| if weighted { n.samples as f64 } else { 1.0 })
            .sum();
        (0..nodes[0].probs.len())
            .map(|j| {
                nodes
                    .iter()
                    .map(|n| f64::from(n.probs[j]) * if weighted { n.samples as f64 } else { 1.0 })
                    .sum::<f64>()
                    / total
            })
            .collect()
    }

    #[test]
    fn a_secure_round_with_a_dropout_after_upload_gives_the_plain_mean_and_an_auditable_transcript() {
        let params = SecAggParams {
            threshold: 3,
            neighbours: 0,
            noise_sigma2: 0,
        };
        let (commit, nodes) = run(params, AggregationRule::Mean, Some(4));
        assert_eq!(
            commit.contributions.len(),
            5,
            "the dropped node's masked input still counts"
        );
        let expected = mean(&nodes, false);
        for (got, want) in commit.aggregate.iter().zip(&expected) {
            assert!((f64::from(*got) - want).abs() < 1e-5, "{got} vs {want}");
        }
        // No individual probabilities in what the coordinator keeps.
        assert!(commit.contributions.iter().all(|c| c.probabilities.is_empty()));
        // The log's records carry the transcript; recomputing from it gives the same sum.
        let t = commit.secure.clone().expect("transcript");
        assert_eq!(t.survivors.len(), 5);
        assert!(t.dropped.is_empty());
        assert!(
            t.reveals.len() >= 3 && t.reveals.len() <= 4,
            "t reveals suffice; the dropped node sent none"
        );
        assert!(t
            .reveals
            .iter()
            .all(|r| r.signer != Signer::Participant(nodes[4].id.clone())));
        let members = t.members();
        let masked: Vec<(usize, Vec<u64>)> = commit
            .contributions
            .iter()
            .map(|c| {
                assert_eq!(c.encoding, Encoding::MaskedU64);
                let body: SoftLabels = crate::wire::decode_payload(&c.envelope.payload).expect("body");
                let idx = members.iter().position(|p| p == &c.participant).expect("member");
                (
                    idx,
                    softlabels::decode_masked(&body.payload, 6, CLASSES).expect("masked"),
                )
            })
            .collect();
        let sum = recompute_sum(&fed(), commit.round, &t, &masked).expect("recompute");
        let again = consensus_from_sum(&sum, 5.0, CLASSES);
        assert_eq!(again, commit.aggregate, "the auditor's recomputation is bit for bit");
        let records = commit.records(&fed(), 0).expect("records");
        assert!(records
            .records
            .iter()
            .any(|r| matches!(r, crate::ledger::Record::SecureAggregation { .. })));
        let _ = fixed_point_error_bound();
    }

    #[test]
    fn sample_weighted_secure_rounds_weigh_by_the_claimed_samples() {
        let params = SecAggParams {
            threshold: 2,
            neighbours: 2,
            noise_sigma2: 0,
        };
        let (commit, nodes) = run(params, AggregationRule::SampleWeighted, None);
        let expected = mean(&nodes, true);
        for (got, want) in commit.aggregate.iter().zip(&expected) {
            assert!((f64::from(*got) - want).abs() < 1e-5, "{got} vs {want}");
        }
    }

    #[test]
    fn masked_inputs_in_another_encoding_or_from_outside_u2_are_refused() {
        let params = SecAggParams {
            threshold: 3,
            neighbours: 0,
            noise_sigma2: 0,
        };
        let mut m = CoordinatorRound::new(config(params, AggregationRule::Mean));
        let key = SigningIdentity::from_seed([9; 32]);
        let id = ParticipantId::new("mallory");
        for i in 0..5 {
            m.handle_connected(Millis(0), ParticipantId::new(format!("p{i}")));
        }
        let open = m.open_round().expect("open").clone();
        let uniform = vec![1.0 / CLASSES as f32; open.sample_ids.len() * CLASSES];
        let labels = softlabels::soft_labels_message(
            open.round,
            open.public_digest,
            &open.sample_ids,
            &uniform,
            CLASSES,
            Encoding::F32,
            1,
        )
        .expect("labels");
        let s = Signed::sign(&key, Signer::Participant(id.clone()), fed(), open.round, 1, &labels).expect("sign");
        let v = s
            .verify(
                &key.public_key(),
                &Signer::Participant(id.clone()),
                &ReplayGuard::new(fed()),
                open.round,
            )
            .expect("verify");
        // Still keying: soft labels of any encoding are refused as not collecting.
        let err = m.handle_soft_labels(Millis(1), &id, v).expect_err("refused");
        assert_eq!(err.code(), crate::wire::messages::RejectCode::NotCollecting, "{err}");
        let _: BTreeMap<u8, u8> = BTreeMap::new();
    }
}
