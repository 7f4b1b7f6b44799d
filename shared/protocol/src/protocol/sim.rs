// Over 800 lines: test-only (`#[cfg(test)] mod sim`); the simulator and its scenarios read together (issue #17).
//! A deterministic network simulator with a virtual clock that drives the real coordinator and participant
//! state machines through scenario tests: dropouts, rejoins, duplicates, late and wrong-round messages,
//! seeded loss, partitions, a coordinator restart from its durable snapshot, and participants that abstain
//! (budget exhausted) or stay silent. It keeps the update log the coordinator driver would append, from the
//! same assembly: the records the state machine returns for abstentions and reports, a commit's
//! `RoundCommit::records`, and the quarantine and release records of `apply_quarantine` / `apply_release`.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::abstain::budget_exhausted_message;
use super::coordinator::{AcceptedContribution, CoordinatorConfig, CoordinatorRound, OutMessage, Output, Snapshot};
use super::participant::{ParticipantOutput, ParticipantSession};
use super::records::MessageRecords;
use super::robust::{QuarantineDecision, ReleaseDecision};
use super::{softlabels, AggregationRule, Encoding, Millis};
use crate::crypto::{
    Digest, FederationId, ParticipantId, PublicKey, ReplayGuard, RoundId, Signed, Signer, SigningIdentity,
};
use crate::ledger::Record;
use crate::wire::messages::{Abstain, AggregateLabels, PrivacySpend, RejectCode, RoundOpen, RoundReport, SoftLabels};

const CLASSES: usize = 4;
const PUBLIC_LEN: u64 = 40;

#[derive(Debug, Clone)]
enum Packet {
    Open(Signed<RoundOpen>),
    Aggregate(Signed<AggregateLabels>),
    Labels(Signed<SoftLabels>),
    Report(Signed<RoundReport>),
    Abstain(Signed<Abstain>),
    Ack(RoundId),
    Reject(RejectCode),
    Finished,
}

/// A scheduled delivery: (time, tie-breaking sequence, from, to, packet index).
type Delivery = (Millis, u64, Node, Node, usize);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Node {
    Coordinator,
    P(usize),
}

/// Per-participant misbehaviour for a scenario.
#[derive(Debug, Clone, Default)]
struct Behaviour {
    send_twice: bool,
    wrong_round: bool,
    /// From this round on, send a signed `Abstain` instead of labels (budget exhausted).
    abstain_from: Option<u64>,
    /// From this round on, send nothing at all (what a participant out of budget did before `Abstain`).
    silent_from: Option<u64>,
    /// After abstaining, also send labels for the same round (must be refused as a duplicate).
    labels_after_abstain: bool,
    /// Report this differential-privacy spend with every round (a participant running with DP).
    privacy_spend: Option<PrivacySpend>,
}

struct Part {
    id: ParticipantId,
    key: SigningIdentity,
    session: ParticipantSession,
    seq: u64,
    behaviour: Behaviour,
    rejections: Vec<RejectCode>,
    distilled: Vec<RoundId>,
    /// Per round, the signature of the soft-label envelope sent for it (the last one when sent again).
    signed_labels: BTreeMap<RoundId, Vec<u8>>,
}

struct Sim {
    now: Millis,
    rng: ChaCha8Rng,
    loss: f64,
    delay: BTreeMap<Node, Millis>,
    partitioned: BTreeSet<usize>,
    queue: BinaryHeap<Reverse<Delivery>>,
    packets: Vec<Packet>,
    next: u64,
    coord: CoordinatorRound,
    coord_key: SigningIdentity,
    coord_seq: u64,
    guard: ReplayGuard,
    part_guards: Vec<ReplayGuard>,
    roster: BTreeMap<ParticipantId, PublicKey>,
    parts: Vec<Part>,
    disk: Option<Snapshot>,
    committed: Vec<(RoundId, Vec<ParticipantId>, Vec<ParticipantId>)>,
    /// Per commit: the round, its abstainers and the virtual time of the commit.
    abstentions: Vec<(RoundId, Vec<ParticipantId>, Millis)>,
    /// Quarantine (`true`) or release (`false`) decisions to apply when committing a round, as the
    /// coordinator's driver does with the anomaly tracker's decisions.
    policy_actions: Vec<(RoundId, bool, ParticipantId)>,
    closed: Vec<(RoundId, usize)>,
    finished: bool,
    /// Who was refused, with which code, in order.
    coord_rejections: Vec<(ParticipantId, RejectCode)>,
    /// The update log as the coordinator driver appends it (the aggregates unsigned).
    log: Vec<Record>,
    /// The payloads stored beside the log, by digest.
    payloads: BTreeMap<Digest, Vec<u8>>,
    /// How the coordinator packs the consensus (`aggregate_encoding`).
    aggregate_encoding: crate::protocol::Encoding,
    /// Test hook: the aggregate claims `int8` but carries the f32 bytes (a malformed aggregate).
    aggregate_mislabelled: bool,
}

fn federation() -> FederationId {
    FederationId::new("sim").expect("static name is valid")
}

fn pid(s: &str) -> ParticipantId {
    ParticipantId::new(s)
}

fn config(rounds: u64, quorum: usize) -> CoordinatorConfig {
    CoordinatorConfig {
        federation: federation(),
        rounds,
        min_participants: 3,
        quorum,
        collect_timeout: Millis(1_000),
        report_timeout: Millis(1_000),
        public_len: PUBLIC_LEN,
        samples_per_round: 10,
        public_digest: Digest::of(b"public"),
        classes: CLASSES as u32,
        rule: AggregationRule::Median,
        temperature: 2.0,
        max_payload: 1 << 20,
        secure: None,
        stop: None,
    }
}

/// A synthetic teacher: mostly right about `id % classes`, a little different per participant.
fn teacher(participant: usize, ids: &[u64]) -> Vec<f32> {
    let mut p = Vec::with_capacity(ids.len() * CLASSES);
    for id in ids {
        let right = (*id as usize) % CLASSES;
        let confidence = 0.6 + 0.1 * (participant % 3) as f32;
        let rest = (1.0 - confidence) / (CLASSES - 1) as f32;
        p.extend((0..CLASSES).map(|c| if c == right { confidence } else { rest }));
    }
    p
}

impl Sim {
    fn new(n: usize, rounds: u64, quorum: usize, seed: u64) -> Self {
        let coord_key = SigningIdentity::from_seed([0xC0; 32]);
        let mut parts = Vec::new();
        let mut roster = BTreeMap::new();
        for i in 0..n {
            let key = SigningIdentity::from_seed([i as u8 + 1; 32]);
            let id = ParticipantId::new(format!("p{i}"));
            roster.insert(id.clone(), key.public_key());
            parts.push(Part {
                id,
                key,
                session: ParticipantSession::new(Digest::of(b"public"), PUBLIC_LEN, CLASSES as u32, RoundId(0)),
                seq: 0,
                behaviour: Behaviour::default(),
                rejections: Vec::new(),
                distilled: Vec::new(),
                signed_labels: BTreeMap::new(),
            });
        }
        Sim {
            now: Millis(0),
            rng: ChaCha8Rng::seed_from_u64(seed),
            loss: 0.0,
            delay: BTreeMap::new(),
            partitioned: BTreeSet::new(),
            queue: BinaryHeap::new(),
            packets: Vec::new(),
            next: 0,
            coord: CoordinatorRound::new(config(rounds, quorum)),
            coord_key,
            coord_seq: 0,
            guard: ReplayGuard::new(federation()),
            part_guards: (0..n).map(|_| ReplayGuard::new(federation())).collect(),
            roster,
            parts,
            disk: None,
            committed: Vec::new(),
            abstentions: Vec::new(),
            policy_actions: Vec::new(),
            closed: Vec::new(),
            finished: false,
            aggregate_encoding: crate::protocol::Encoding::F32,
            aggregate_mislabelled: false,
            coord_rejections: Vec::new(),
            log: Vec::new(),
            payloads: BTreeMap::new(),
        }
    }

    fn send(&mut self, from: Node, to: Node, packet: Packet) {
        let p = match (from, to) {
            (Node::P(i), _) | (_, Node::P(i)) => i,
            _ => return,
        };
        if self.partitioned.contains(&p) || (self.loss > 0.0 && self.rng.random::<f64>() < self.loss) {
            return;
        }
        let delay = self.delay.get(&Node::P(p)).copied().unwrap_or(Millis(10));
        self.packets.push(packet);
        self.queue.push(Reverse((
            self.now.plus(delay),
            self.next,
            from,
            to,
            self.packets.len() - 1,
        )));
        self.next += 1;
    }

    fn connect(&mut self, i: usize) {
        self.partitioned.remove(&i);
        let id = self.parts[i].id.clone();
        self.coord.handle_connected(self.now, id);
        self.pump_coordinator();
    }

    fn disconnect(&mut self, i: usize) {
        self.partitioned.insert(i);
        let id = self.parts[i].id.clone();
        self.coord.handle_disconnected(self.now, &id);
        self.pump_coordinator();
    }

    fn sign<T: crate::crypto::SignedMessage>(
        key: &SigningIdentity,
        signer: Signer,
        round: RoundId,
        seq: &mut u64,
        m: &T,
    ) -> Signed<T> {
        *seq += 1;
        Signed::sign(key, signer, federation(), round, *seq, m).expect("encoding a message cannot fail")
    }

    fn pump_coordinator(&mut self) {
        while let Some(out) = self.coord.poll_output() {
            match out {
                Output::Broadcast(m) | Output::Send(_, m) if matches!(m, OutMessage::Finished) => {
                    for i in 0..self.parts.len() {
                        self.send(Node::Coordinator, Node::P(i), Packet::Finished);
                    }
                }
                Output::Broadcast(OutMessage::Open(open)) => {
                    let s = Self::sign(
                        &self.coord_key,
                        Signer::Coordinator,
                        open.round,
                        &mut self.coord_seq,
                        &open,
                    );
                    let targets: Vec<usize> = self.coord.connected().filter_map(|p| self.index(p)).collect();
                    for i in targets {
                        self.send(Node::Coordinator, Node::P(i), Packet::Open(s.clone()));
                    }
                }
                Output::Send(p, OutMessage::Open(open)) => {
                    let s = Self::sign(
                        &self.coord_key,
                        Signer::Coordinator,
                        open.round,
                        &mut self.coord_seq,
                        &open,
                    );
                    if let Some(i) = self.index(&p) {
                        self.send(Node::Coordinator, Node::P(i), Packet::Open(s));
                    }
                }
                Output::Broadcast(OutMessage::Finished) | Output::Send(_, OutMessage::Finished) => {}
                Output::Commit(c) => {
                    // The same assembly as the coordinator driver: records (checked below) and the message.
                    let assembled = c.records(&federation(), 0).expect("commit records");
                    assert!(matches!(assembled.records.last(), Some(Record::Aggregate { .. })));
                    self.log.extend(assembled.records.iter().cloned());
                    self.payloads.extend(assembled.payloads.iter().cloned());
                    let mut agg = c
                        .aggregate_message(self.aggregate_encoding, String::new())
                        .expect("aggregate message");
                    assert_eq!(agg.aggregate_digest, assembled.aggregate_digest);
                    if self.aggregate_mislabelled {
                        agg.encoding = crate::protocol::Encoding::Int8;
                    }
                    // The tracker's decisions, quarantines first, logged in the commit as the driver does.
                    let actions: Vec<(bool, ParticipantId)> = self
                        .policy_actions
                        .iter()
                        .filter(|(r, ..)| *r == c.round)
                        .map(|(_, q, p)| (*q, p.clone()))
                        .collect();
                    for (_, p) in actions.iter().filter(|(q, _)| *q) {
                        let decision = QuarantineDecision {
                            round: c.round,
                            participant: p.clone(),
                            reason: "scripted by the scenario".into(),
                            evidence: vec![("strikes".into(), 3.0), ("ewma_score".into(), 1.5)],
                        };
                        let record = self.coord.apply_quarantine(&decision).expect("loggable evidence");
                        self.log.push(record);
                    }
                    for (_, p) in actions.iter().filter(|(q, _)| !*q) {
                        let release = ReleaseDecision {
                            round: c.round,
                            participant: p.clone(),
                            quarantined_round: RoundId(c.round.0.saturating_sub(1)),
                            after_rounds: 1,
                            reason: "served".into(),
                        };
                        self.log.push(self.coord.apply_release(&release));
                    }
                    self.coord.handle_committed(self.now, c.round);
                    self.disk = Some(self.coord.snapshot());
                    self.committed
                        .push((c.round, agg.contributors.clone(), c.absent.clone()));
                    self.abstentions.push((c.round, c.abstained.clone(), self.now));
                    let s = Self::sign(&self.coord_key, Signer::Coordinator, c.round, &mut self.coord_seq, &agg);
                    let targets: Vec<usize> = agg.contributors.iter().filter_map(|p| self.index(p)).collect();
                    for i in targets {
                        self.send(Node::Coordinator, Node::P(i), Packet::Aggregate(s.clone()));
                    }
                }
                Output::RoundClosed { round, reports, .. } => {
                    self.closed.push((round, reports.len()));
                    self.disk = Some(self.coord.snapshot());
                }
                Output::QuorumNotMet { .. } => {}
                // The simulator runs rounds in the clear (secure rounds: coordinator/secure.rs's tests).
                Output::RoundFailed { .. }
                | Output::Broadcast(
                    OutMessage::SecAggRoster { .. } | OutMessage::SecAggDelivery(_) | OutMessage::SecAggUnmask(_),
                )
                | Output::Send(
                    _,
                    OutMessage::SecAggRoster { .. } | OutMessage::SecAggDelivery(_) | OutMessage::SecAggUnmask(_),
                ) => {}
                Output::Finished => self.finished = true,
                Output::Converged(_) => {}
            }
        }
        self.disk = Some(self.coord.snapshot());
    }

    fn index(&self, p: &ParticipantId) -> Option<usize> {
        self.parts.iter().position(|x| &x.id == p)
    }

    /// What the coordinator driver does with a participant's envelope: verify it against the connection's
    /// identity, hand it to the state machine, and record its sequence number only once it was accepted.
    fn deliver_signed<T: crate::crypto::SignedMessage, R>(
        &mut self,
        id: &ParticipantId,
        key: &PublicKey,
        s: Signed<T>,
        handle: impl FnOnce(
            &mut CoordinatorRound,
            Millis,
            &ParticipantId,
            crate::crypto::Verified<T>,
        ) -> Result<R, super::coordinator::Rejection>,
    ) -> Result<R, RejectCode> {
        let round = self.coord.round();
        let v = s
            .verify(key, &Signer::Participant(id.clone()), &self.guard, round)
            .map_err(|e| RejectCode::from(&e))?;
        let fresh = v.fresh();
        let out = handle(&mut self.coord, self.now, id, v).map_err(|e| e.code())?;
        self.guard.accept(fresh);
        Ok(out)
    }

    /// Appends what an accepted abstention or report puts in the log, as the driver does before its `Ack`.
    fn append(&mut self, logged: MessageRecords) {
        self.log.extend(logged.records);
        let (digest, bytes) = logged.payload;
        self.payloads.insert(digest, bytes);
    }

    fn deliver(&mut self, from: Node, to: Node, packet: Packet) {
        match to {
            Node::Coordinator => {
                let Node::P(i) = from else { return };
                let id = self.parts[i].id.clone();
                let key = self.roster[&id];
                let round = self.coord.round();
                let reply = match packet {
                    Packet::Labels(s) => self.deliver_signed(&id, &key, s, CoordinatorRound::handle_soft_labels),
                    Packet::Abstain(s) => self
                        .deliver_signed(&id, &key, s, CoordinatorRound::handle_abstain)
                        .map(|logged| self.append(logged)),
                    Packet::Report(s) => self
                        .deliver_signed(&id, &key, s, CoordinatorRound::handle_report)
                        .map(|logged| self.append(logged)),
                    _ => return,
                };
                match reply {
                    Ok(()) => self.send(Node::Coordinator, from, Packet::Ack(round)),
                    Err(code) => {
                        self.coord_rejections.push((id.clone(), code.clone()));
                        self.send(Node::Coordinator, from, Packet::Reject(code));
                    }
                }
                self.pump_coordinator();
            }
            Node::P(i) => {
                let ck = self.coord_key.public_key();
                let part = &mut self.parts[i];
                let guard = &mut self.part_guards[i];
                match packet {
                    Packet::Open(s) => {
                        let round = s.round;
                        if let Ok(v) = s.verify(&ck, &Signer::Coordinator, guard, round) {
                            let fresh = v.fresh();
                            if part.session.handle_open(v).is_ok() {
                                guard.accept(fresh);
                            }
                        }
                    }
                    Packet::Aggregate(s) => {
                        let round = s.round;
                        if let Ok(v) = s.verify(&ck, &Signer::Coordinator, guard, round) {
                            let fresh = v.fresh();
                            if part.session.handle_aggregate(v).is_ok() {
                                guard.accept(fresh);
                            }
                        }
                    }
                    Packet::Ack(round) => part.session.handle_labels_sent(round),
                    Packet::Reject(code) => {
                        if code == RejectCode::Duplicate {
                            // The coordinator already holds our labels (e.g. after its restart).
                            let r = self.coord.round();
                            part.session.handle_labels_sent(r);
                        }
                        part.rejections.push(code);
                    }
                    Packet::Finished => part.session.handle_finished(),
                    _ => {}
                }
                self.pump_participant(i);
            }
        }
    }

    fn pump_participant(&mut self, i: usize) {
        while let Some(out) = self.parts[i].session.poll_output() {
            let part = &mut self.parts[i];
            match out {
                ParticipantOutput::ComputeSoftLabels { round, sample_ids, .. } => {
                    if part.behaviour.silent_from.is_some_and(|r| round.0 >= r) {
                        continue;
                    }
                    if part.behaviour.abstain_from.is_some_and(|r| round.0 >= r) {
                        let abstain = budget_exhausted_message(round, 5.0, 4.0, 8.0);
                        let s = Self::sign(
                            &part.key,
                            Signer::Participant(part.id.clone()),
                            round,
                            &mut part.seq,
                            &abstain,
                        );
                        let again = part.behaviour.labels_after_abstain;
                        self.send(Node::P(i), Node::Coordinator, Packet::Abstain(s));
                        if !again {
                            continue;
                        }
                    }
                    let part = &mut self.parts[i];
                    let probs = teacher(i, &sample_ids);
                    let round_named = if part.behaviour.wrong_round {
                        RoundId(round.0 + 1)
                    } else {
                        round
                    };
                    let labels = softlabels::soft_labels_message(
                        round_named,
                        Digest::of(b"public"),
                        &sample_ids,
                        &probs,
                        CLASSES,
                        Encoding::F16,
                        100 + i as u64,
                    )
                    .expect("valid");
                    let s = Self::sign(
                        &part.key,
                        Signer::Participant(part.id.clone()),
                        round_named,
                        &mut part.seq,
                        &labels,
                    );
                    let twice = part.behaviour.send_twice;
                    part.signed_labels.insert(round_named, s.signature.clone());
                    self.send(Node::P(i), Node::Coordinator, Packet::Labels(s.clone()));
                    if twice {
                        // The same envelope again (a replay) and a freshly signed duplicate.
                        self.send(Node::P(i), Node::Coordinator, Packet::Labels(s));
                        let part = &mut self.parts[i];
                        let s2 = Self::sign(
                            &part.key,
                            Signer::Participant(part.id.clone()),
                            round,
                            &mut part.seq,
                            &labels,
                        );
                        self.send(Node::P(i), Node::Coordinator, Packet::Labels(s2));
                    }
                }
                ParticipantOutput::Distill {
                    round, probabilities, ..
                } => {
                    assert!(probabilities.iter().all(|v| v.is_finite()));
                    part.distilled.push(round);
                    part.session.handle_distilled(RoundReport {
                        round,
                        metrics: vec![("accuracy".into(), 0.9)],
                        student_digest: Digest::of(b"student"),
                        guard_accepted: true,
                        guard_reason: String::new(),
                        privacy_spend: part.behaviour.privacy_spend,
                    });
                }
                ParticipantOutput::SendReport(r) => {
                    let s = Self::sign(
                        &part.key,
                        Signer::Participant(part.id.clone()),
                        r.round,
                        &mut part.seq,
                        &r,
                    );
                    self.send(Node::P(i), Node::Coordinator, Packet::Report(s));
                }
                ParticipantOutput::Finished => {}
            }
        }
    }

    /// Runs until `until` (virtual time) or until the federation finished and the network is quiet.
    fn run_until(&mut self, until: Millis) {
        loop {
            let next_packet = self.queue.peek().map(|Reverse((t, ..))| *t);
            let next_timer = self.coord.poll_timeout();
            let next = match (next_packet, next_timer) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) => a,
                (None, Some(b)) => b,
                (None, None) => break,
            };
            if next > until {
                break;
            }
            self.now = self.now.max(next);
            if next_packet == Some(next) {
                let Some(Reverse((_, _, from, to, idx))) = self.queue.pop() else {
                    break;
                };
                let packet = self.packets[idx].clone();
                self.deliver(from, to, packet);
            } else {
                self.coord.handle_timeout(self.now);
                self.pump_coordinator();
            }
        }
        self.now = self.now.max(until);
    }

    fn restart_coordinator(&mut self) {
        let mut snap = self.disk.clone().expect("the coordinator persisted a snapshot");
        // The coordinator's store keeps each contribution split, its payload apart; it comes back whole.
        let round = snap.round;
        snap.contributions = std::mem::take(&mut snap.contributions)
            .into_iter()
            .map(|c| {
                let (stored, payload) = c.to_stored();
                AcceptedContribution::from_stored(stored, payload, &federation(), round).expect("and is rebuilt")
            })
            .collect();
        let last: Vec<(Signer, u64)> = snap
            .contributions
            .iter()
            .map(|c| (Signer::Participant(c.participant.clone()), c.seq))
            .collect();
        self.coord = CoordinatorRound::restore(self.coord.config().clone(), snap, self.now);
        self.guard = ReplayGuard::with_state(federation(), last);
        // In-flight packets to the dead process are lost; everyone reconnects.
        self.queue.retain(|Reverse((_, _, _, to, _))| *to != Node::Coordinator);
        for i in 0..self.parts.len() {
            if !self.partitioned.contains(&i) {
                self.connect(i);
            }
        }
    }
}

#[test]
fn happy_path_runs_every_round_with_everyone() {
    let mut sim = Sim::new(3, 3, 2, 1);
    (0..3).for_each(|i| sim.connect(i));
    sim.run_until(Millis(60_000));
    assert!(
        sim.finished,
        "committed {:?} closed {:?} rejections {:?} phase {:?} parts {:?}",
        sim.committed,
        sim.closed,
        sim.coord_rejections,
        sim.coord.phase(),
        sim.parts
            .iter()
            .map(|p| (&p.rejections, &p.distilled))
            .collect::<Vec<_>>()
    );
    assert_eq!(sim.committed.len(), 3);
    for (r, (round, contributors, absent)) in sim.committed.iter().enumerate() {
        assert_eq!(round.0, r as u64 + 1);
        assert_eq!(contributors.len(), 3);
        assert!(absent.is_empty());
    }
    assert_eq!(sim.closed.iter().map(|(_, n)| *n).collect::<Vec<_>>(), vec![3, 3, 3]);
    for p in &sim.parts {
        assert_eq!(p.distilled, vec![RoundId(1), RoundId(2), RoundId(3)]);
    }
    assert!(sim.coord_rejections.is_empty(), "{:?}", sim.coord_rejections);
}

#[test]
fn a_lossy_aggregate_encoding_reaches_every_participant() {
    for enc in [
        crate::protocol::Encoding::F16,
        crate::protocol::Encoding::Int8,
        crate::protocol::Encoding::TopK { k: 2 },
    ] {
        let mut sim = Sim::new(3, 3, 2, 1);
        sim.aggregate_encoding = enc;
        (0..3).for_each(|i| sim.connect(i));
        sim.run_until(Millis(60_000));
        assert!(
            sim.finished,
            "{enc:?}: rejections {:?}",
            sim.parts.iter().map(|p| &p.rejections).collect::<Vec<_>>()
        );
        for p in &sim.parts {
            assert_eq!(p.distilled, vec![RoundId(1), RoundId(2), RoundId(3)], "{enc:?}");
            assert!(p.rejections.is_empty(), "{enc:?}: {:?}", p.rejections);
        }
    }
}

#[test]
fn an_aggregate_whose_bytes_do_not_match_its_encoding_is_not_distilled() {
    let mut sim = Sim::new(3, 2, 2, 1);
    sim.aggregate_mislabelled = true;
    (0..3).for_each(|i| sim.connect(i));
    sim.run_until(Millis(60_000));
    for p in &sim.parts {
        assert!(
            p.distilled.is_empty(),
            "distilled {:?} from a malformed aggregate",
            p.distilled
        );
    }
}

#[test]
fn no_round_opens_before_enough_participants() {
    let mut sim = Sim::new(3, 2, 2, 1);
    sim.connect(0);
    sim.connect(1);
    sim.run_until(Millis(5_000));
    assert!(sim.committed.is_empty());
    assert_eq!(sim.coord.round(), RoundId(0));
    sim.connect(2);
    sim.run_until(Millis(60_000));
    assert!(sim.finished);
}

#[test]
fn dropout_mid_round_is_absent_and_rejoins_next_round() {
    let mut sim = Sim::new(3, 3, 2, 1);
    (0..3).for_each(|i| sim.connect(i));
    // Round 1 is open; participant 2 drops before its labels go out.
    sim.delay.insert(Node::P(2), Millis(500));
    sim.run_until(Millis(5));
    sim.disconnect(2);
    sim.run_until(Millis(1_005));
    assert_eq!(sim.committed.len(), 1, "round 1 aggregated at its deadline");
    assert_eq!(sim.committed[0].1.len(), 2, "round 1 aggregated on quorum");
    assert_eq!(sim.committed[0].2, vec![ParticipantId::new("p2")], "p2 recorded absent");
    sim.delay.remove(&Node::P(2));
    sim.connect(2);
    sim.run_until(Millis(60_000));
    assert!(sim.finished);
    let last = sim.committed.last().expect("rounds ran");
    assert_eq!(
        last.1.len(),
        3,
        "p2 took part again after rejoining: {:?} {:?} {:?}",
        sim.committed,
        sim.coord_rejections,
        sim.parts[2].rejections
    );
}

#[test]
fn duplicates_and_replays_are_rejected_without_harm() {
    let mut sim = Sim::new(3, 2, 2, 1);
    sim.parts[1].behaviour.send_twice = true;
    (0..3).for_each(|i| sim.connect(i));
    sim.run_until(Millis(60_000));
    assert!(sim.finished);
    assert!(
        sim.coord_rejections.contains(&(pid("p1"), RejectCode::Replay)),
        "{:?}",
        sim.coord_rejections
    );
    assert!(
        sim.coord_rejections.contains(&(pid("p1"), RejectCode::Duplicate)),
        "{:?}",
        sim.coord_rejections
    );
    assert!(sim.committed.iter().all(|c| c.1.len() == 3));
}

#[test]
fn late_labels_are_rejected_and_the_round_completes_on_quorum() {
    let mut sim = Sim::new(3, 1, 2, 1);
    sim.delay.insert(Node::P(2), Millis(1_500));
    (0..3).for_each(|i| sim.connect(i));
    sim.run_until(Millis(60_000));
    assert!(sim.finished);
    assert_eq!(sim.committed[0].1.len(), 2);
    assert!(
        sim.coord_rejections.iter().any(|(p, _)| p == &pid("p2")),
        "{:?}",
        sim.coord_rejections
    );
    assert!(
        sim.parts[2]
            .rejections
            .iter()
            .any(|c| [RejectCode::Late, RejectCode::NotCollecting].contains(c)),
        "{:?}",
        sim.parts[2].rejections
    );
}

#[test]
fn wrong_round_is_rejected() {
    let mut sim = Sim::new(3, 1, 2, 1);
    sim.parts[0].behaviour.wrong_round = true;
    (0..3).for_each(|i| sim.connect(i));
    sim.run_until(Millis(60_000));
    assert!(
        sim.coord_rejections.contains(&(pid("p0"), RejectCode::WrongRound)),
        "{:?}",
        sim.coord_rejections
    );
    assert_eq!(sim.committed[0].2, vec![ParticipantId::new("p0")]);
}

#[test]
fn coordinator_restart_mid_round_keeps_acknowledged_contributions() {
    let mut sim = Sim::new(3, 2, 3, 1);
    sim.delay.insert(Node::P(2), Millis(300));
    (0..3).for_each(|i| sim.connect(i));
    sim.run_until(Millis(100));
    // p0 and p1 were acknowledged; p2's labels are still in flight when the coordinator dies.
    assert_eq!(sim.disk.as_ref().map(|d| d.contributions.len()), Some(2));
    sim.restart_coordinator();
    sim.delay.remove(&Node::P(2));
    sim.run_until(Millis(60_000));
    assert!(sim.finished);
    assert_eq!(
        sim.committed[0].1.len(),
        3,
        "all three contributions, none lost: {:?}",
        sim.committed
    );
    assert_eq!(sim.committed.len(), 2);
}

#[test]
fn a_stored_contribution_is_rebuilt_byte_for_byte_and_a_wrong_payload_is_refused() {
    let mut sim = Sim::new(3, 2, 3, 1);
    sim.delay.insert(Node::P(2), Millis(300));
    (0..3).for_each(|i| sim.connect(i));
    sim.run_until(Millis(100));
    let snap = sim.disk.clone().expect("persisted");
    let c = snap.contributions.first().expect("an accepted contribution");
    let (stored, payload) = c.to_stored();
    assert_eq!(Digest::of(&payload), c.payload_digest);
    let back = AcceptedContribution::from_stored(stored.clone(), payload.clone(), &federation(), snap.round)
        .expect("rebuilds");
    let bytes = |c: &AcceptedContribution| crate::wire::encode_payload(&c.envelope).expect("encodes");
    assert_eq!(bytes(&back), bytes(c), "the envelope, byte for byte");
    assert_eq!(back.encoding, Encoding::F16);
    assert_eq!(back.probabilities, c.probabilities);
    // Its serde form is still the one earlier builds stored (the envelope as encoded bytes, no encoding),
    // and reading that form back recovers the encoding from the envelope.
    #[derive(serde::Serialize)]
    struct Before {
        participant: ParticipantId,
        probabilities: Vec<f32>,
        samples: u64,
        envelope: Vec<u8>,
        payload_digest: Digest,
        seq: u64,
    }
    let before = Before {
        participant: c.participant.clone(),
        probabilities: c.probabilities.clone(),
        samples: c.samples,
        envelope: bytes(c),
        payload_digest: c.payload_digest,
        seq: c.seq,
    };
    let legacy = crate::wire::encode_payload(&before).expect("encodes");
    assert_eq!(crate::wire::encode_payload(c).expect("encodes"), legacy);
    assert_eq!(
        serde_json::to_value(c).expect("json"),
        serde_json::to_value(&before).expect("json")
    );
    let read: AcceptedContribution = crate::wire::decode_payload(&legacy).expect("the legacy form reads");
    assert_eq!((bytes(&read), read.encoding), (bytes(c), Encoding::F16));
    let garbage = Before {
        envelope: vec![1, 2, 3],
        ..before
    };
    let err =
        crate::wire::decode_payload::<AcceptedContribution>(&crate::wire::encode_payload(&garbage).expect("encodes"))
            .expect_err("an envelope that does not decode");
    assert!(err.to_string().contains("the contribution envelope of p0"), "{err}");
    assert_eq!(
        (&back.participant, back.samples, back.payload_digest, back.seq),
        (&c.participant, c.samples, c.payload_digest, c.seq)
    );
    let mut other = payload.clone();
    other[0] ^= 1;
    let err = AcceptedContribution::from_stored(stored.clone(), other, &federation(), snap.round).unwrap_err();
    assert!(err.to_string().contains("does not hash to"), "{err}");
    let mut forged = stored;
    forged.payload_digest = Digest::of(b"not soft labels");
    let err =
        AcceptedContribution::from_stored(forged, b"not soft labels".to_vec(), &federation(), snap.round).unwrap_err();
    let err = err.to_string();
    assert!(err.contains("does not decode: malformed payload"), "{err}");
}

#[test]
fn lossy_network_still_finishes_and_is_deterministic() {
    let run = |seed| {
        let mut sim = Sim::new(5, 4, 3, seed);
        sim.loss = 0.05;
        (0..5).for_each(|i| sim.connect(i));
        sim.run_until(Millis(120_000));
        (sim.finished, sim.committed.clone())
    };
    let (finished, a) = run(7);
    assert!(finished);
    assert_eq!(a.len(), 4);
    assert_eq!(run(7).1, a, "same seed, same trace");
}

#[test]
fn restart_keeps_waiting_for_expected_participants() {
    // Quorum 2 of 3: p0 and p1 are acknowledged, p2 is slow; after a restart the round must still wait for
    // p2 until the deadline instead of aggregating at once.
    let mut sim = Sim::new(3, 1, 2, 1);
    sim.delay.insert(Node::P(2), Millis(400));
    (0..3).for_each(|i| sim.connect(i));
    sim.run_until(Millis(100));
    assert_eq!(sim.disk.as_ref().map(|d| d.contributions.len()), Some(2));
    assert_eq!(sim.disk.as_ref().map(|d| d.expected.len()), Some(3));
    sim.restart_coordinator();
    sim.run_until(Millis(60_000));
    assert!(sim.finished);
    assert_eq!(sim.committed[0].1.len(), 3, "p2 was waited for: {:?}", sim.committed);
}

/// Three rounds, quorum 2 of 3, where p2 is out of budget from round 2: with `Abstain` every round
/// aggregates as soon as p0 and p1 contributed (well before the 1 s deadline, virtual time); the same
/// participant staying silent holds rounds 2 and 3 until their deadlines.
#[test]
fn an_abstaining_participant_does_not_hold_the_round() {
    let run = |abstain: bool| {
        let mut sim = Sim::new(3, 3, 2, 1);
        if abstain {
            sim.parts[2].behaviour.abstain_from = Some(2);
        } else {
            sim.parts[2].behaviour.silent_from = Some(2);
        }
        (0..3).for_each(|i| sim.connect(i));
        // Each round takes a few 10 ms hops when nobody is waited for; 3 rounds fit in 900 ms only if no
        // round waits for its 1 000 ms deadline.
        sim.run_until(Millis(900));
        sim
    };
    let sim = run(true);
    assert!(sim.finished, "{:?} {:?}", sim.committed, sim.coord_rejections);
    assert_eq!(sim.committed.len(), 3);
    assert_eq!(sim.committed[0].1.len(), 3, "p2 contributed to round 1");
    for (round, contributors, absent) in &sim.committed[1..] {
        assert_eq!(
            contributors,
            &[ParticipantId::new("p0"), ParticipantId::new("p1")],
            "round {round}"
        );
        assert!(absent.is_empty(), "an abstainer is not absent: {absent:?}");
    }
    let abstained: Vec<(u64, Vec<ParticipantId>)> = sim.abstentions.iter().map(|(r, a, _)| (r.0, a.clone())).collect();
    assert_eq!(
        abstained,
        vec![
            (1, vec![]),
            (2, vec![ParticipantId::new("p2")]),
            (3, vec![ParticipantId::new("p2")])
        ]
    );
    assert!(sim.coord_rejections.is_empty(), "{:?}", sim.coord_rejections);
    assert_eq!(
        sim.parts[2].distilled,
        vec![RoundId(1)],
        "the abstainer distils only what it contributed to"
    );

    let silent = run(false);
    assert!(
        !silent.finished,
        "a silent participant holds each round until the deadline"
    );
    assert_eq!(silent.committed.len(), 1, "{:?}", silent.committed);
}

#[test]
fn labels_after_an_abstention_and_a_second_abstention_are_duplicates() {
    let mut sim = Sim::new(3, 2, 2, 1);
    sim.parts[1].behaviour.abstain_from = Some(1);
    sim.parts[1].behaviour.labels_after_abstain = true;
    (0..3).for_each(|i| sim.connect(i));
    sim.run_until(Millis(60_000));
    assert!(sim.finished);
    assert!(
        sim.coord_rejections.contains(&(pid("p1"), RejectCode::Duplicate)),
        "{:?}",
        sim.coord_rejections
    );
    for (_, contributors, _) in &sim.committed {
        assert!(!contributors.contains(&ParticipantId::new("p1")));
    }
}

#[test]
fn an_abstention_survives_a_coordinator_restart() {
    // p2 abstains at once, p0 contributes, p1 is slow; the coordinator restarts before p1 arrives. The
    // restored round must still count p2 as abstained and aggregate when p1 arrives, not at the deadline.
    let mut sim = Sim::new(3, 1, 2, 1);
    sim.parts[2].behaviour.abstain_from = Some(1);
    sim.delay.insert(Node::P(1), Millis(300));
    (0..3).for_each(|i| sim.connect(i));
    sim.run_until(Millis(100));
    assert_eq!(
        sim.disk.as_ref().map(|d| d.abstained.clone()),
        Some(vec![ParticipantId::new("p2")])
    );
    sim.restart_coordinator();
    sim.delay.remove(&Node::P(1));
    sim.run_until(Millis(60_000));
    assert!(sim.finished);
    let (round, abstained, at) = &sim.abstentions[0];
    assert_eq!((round.0, abstained.clone()), (1, vec![ParticipantId::new("p2")]));
    assert!(
        at.0 < 1_100,
        "committed at {} ms: the restored round waited for its deadline",
        at.0
    );
    assert_eq!(sim.committed[0].1.len(), 2);
}

/// Quarantine decided at round 1's commit, release at round 2's (as the driver applies the tracker's
/// decisions): round 2 does not wait for p2 and refuses its labels; from round 3 it contributes again.
#[test]
fn quarantine_excludes_and_release_readmits() {
    let mut sim = Sim::new(3, 3, 2, 1);
    let p2 = ParticipantId::new("p2");
    sim.policy_actions = vec![(RoundId(1), true, p2.clone()), (RoundId(2), false, p2.clone())];
    (0..3).for_each(|i| sim.connect(i));
    sim.run_until(Millis(60_000));
    assert!(sim.finished);
    let contributors: Vec<usize> = sim.committed.iter().map(|(_, c, _)| c.len()).collect();
    assert_eq!(contributors, vec![3, 2, 3], "{:?}", sim.committed);
    assert!(!sim.committed[1].1.contains(&p2));
    assert!(
        sim.committed[1].2.is_empty(),
        "a quarantined participant is not expected, so not absent"
    );
    // p2's round-2 labels are refused: `quarantined`, or `not_collecting` when the round already
    // aggregated without waiting for it.
    assert_eq!(sim.coord_rejections.len(), 1, "{:?}", sim.coord_rejections);
    assert!(
        [
            (p2.clone(), RejectCode::Quarantined),
            (p2.clone(), RejectCode::NotCollecting)
        ]
        .contains(&sim.coord_rejections[0]),
        "{:?}",
        sim.coord_rejections
    );
    // Round 2 did not wait for its 1 s deadline (rounds are a few 10 ms hops apart).
    assert!(
        sim.abstentions[1].2 .0 < 1_000,
        "round 2 committed at {:?}",
        sim.abstentions[1].2
    );
    // Both decisions are logged through the state machine, each right after its round's aggregate.
    let after_aggregate = |round: u64| {
        let at = sim
            .log
            .iter()
            .position(|r| matches!(r, Record::Aggregate { round: a, .. } if a.0 == round))
            .expect("the round's aggregate");
        sim.log[at + 1].clone()
    };
    let Record::Quarantine {
        round,
        participant,
        evidence,
        ..
    } = after_aggregate(1)
    else {
        panic!("no quarantine after round 1's aggregate: {:?}", sim.log)
    };
    assert_eq!((round, &participant), (RoundId(1), &p2));
    assert_eq!(
        evidence.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
        ["ewma_score", "strikes"]
    );
    assert_eq!(
        after_aggregate(2),
        Record::QuarantineRelease {
            round: RoundId(2),
            participant: p2.clone(),
            quarantined_round: RoundId(1),
            after_rounds: 1,
            reason: "served".into(),
        }
    );
}

/// The log the simulator keeps is the one the driver appends, from the same assembly: p2 abstains from
/// round 2 (an `abstention` record with the reason's name, the figures in canonical order and p2's own
/// signature, its signed message stored beside the log), p1 runs with DP (each `round_report` followed by
/// its `privacy_spend`), and every contribution is logged with the encoding and signature it arrived with.
#[test]
fn abstentions_reports_and_privacy_spends_are_logged_as_the_driver_appends_them() {
    use crate::crypto::{envelope_signing_bytes, SignedMessage};
    let mut sim = Sim::new(3, 2, 2, 1);
    sim.parts[2].behaviour.abstain_from = Some(2);
    let spend = PrivacySpend {
        epsilon_round: 0.5,
        epsilon_total: 1.0,
        delta: 1e-5,
    };
    sim.parts[1].behaviour.privacy_spend = Some(spend);
    (0..3).for_each(|i| sim.connect(i));
    sim.run_until(Millis(60_000));
    assert!(sim.finished, "{:?}", sim.coord_rejections);
    let signed_by = |p: &ParticipantId, domain: &str, round, seq, digest: &Digest, sig: &[u8]| {
        let bytes = envelope_signing_bytes(
            domain,
            &Signer::Participant(p.clone()),
            &federation(),
            round,
            seq,
            digest,
        );
        sim.roster[p].verify_strict(&bytes, sig)
    };

    let abstentions: Vec<&Record> = sim
        .log
        .iter()
        .filter(|r| matches!(r, Record::Abstention { .. }))
        .collect();
    let [Record::Abstention {
        round,
        participant,
        reason,
        figures,
        message_digest,
        sequence,
        signature,
    }] = abstentions.as_slice()
    else {
        panic!("one abstention expected: {:?}", sim.log)
    };
    assert_eq!(
        (round, participant, reason.as_str()),
        (&RoundId(2), &pid("p2"), "budget_exhausted")
    );
    let figures: Vec<(&str, f64)> = figures.iter().map(|m| (m.name.as_str(), m.value)).collect();
    assert_eq!(
        figures,
        [
            ("epsilon_budget", 5.0),
            ("epsilon_spent", 4.0),
            ("epsilon_would_reach", 8.0)
        ]
    );
    assert!(signed_by(
        participant,
        Abstain::DOMAIN,
        *round,
        *sequence,
        message_digest,
        signature
    ));
    let stored: Abstain = crate::wire::decode_payload(&sim.payloads[message_digest]).expect("stored message");
    assert_eq!(stored, budget_exhausted_message(RoundId(2), 5.0, 4.0, 8.0));
    // Logged when accepted, before the round's commit.
    let opened_2 = sim
        .log
        .iter()
        .position(|r| matches!(r, Record::RoundOpened { round, .. } if round.0 == 2))
        .expect("round 2 committed");
    assert!(sim.log[..opened_2]
        .iter()
        .any(|r| matches!(r, Record::Abstention { .. })));

    // Reports: p1's each followed by its spend, nobody else's.
    let mut reports = 0;
    for (i, r) in sim.log.iter().enumerate() {
        let Record::RoundReport {
            round,
            participant,
            message_digest,
            sequence,
            signature,
            ..
        } = r
        else {
            continue;
        };
        reports += 1;
        assert!(signed_by(
            participant,
            RoundReport::DOMAIN,
            *round,
            *sequence,
            message_digest,
            signature
        ));
        let next = sim.log.get(i + 1);
        if participant == &pid("p1") {
            assert_eq!(
                next,
                Some(&Record::PrivacySpend {
                    round: *round,
                    participant: pid("p1"),
                    epsilon: 0.5,
                    delta: 1e-5,
                }),
                "{:?}",
                sim.log
            );
        } else {
            assert!(!matches!(next, Some(Record::PrivacySpend { .. })), "{:?}", sim.log);
        }
    }
    assert_eq!(
        reports,
        3 + 2,
        "three reports for round 1, two for round 2 (p2 abstained)"
    );

    // Contributions: the encoding and the signature of the envelope each participant sent.
    let mut contributions = 0;
    for r in &sim.log {
        if let Record::Contribution {
            round,
            participant,
            encoding,
            signature,
            ..
        } = r
        {
            contributions += 1;
            assert_eq!(encoding.as_str(), "f16");
            let part = &sim.parts[sim.index(participant).expect("a participant")];
            assert_eq!(
                Some(signature),
                part.signed_labels.get(round),
                "{participant} round {round}"
            );
        }
    }
    assert_eq!(contributions, 3 + 2);
}

#[test]
fn a_quarantined_participant_that_reconnects_mid_round_is_not_waited_for() {
    let mut sim = Sim::new(3, 2, 2, 1);
    let p2 = ParticipantId::new("p2");
    sim.policy_actions = vec![(RoundId(1), true, p2.clone())];
    (0..3).for_each(|i| sim.connect(i));
    // Round 2 opens once round 1 closed; p2 drops and comes back while it collects.
    sim.run_until(Millis(45));
    sim.disconnect(2);
    sim.delay.insert(Node::P(0), Millis(200));
    sim.run_until(Millis(60));
    sim.connect(2);
    assert_eq!(sim.coord.round(), RoundId(2));
    assert!(matches!(
        sim.coord.phase(),
        super::coordinator::Phase::Collecting { .. }
    ));
    assert!(
        !sim.coord.snapshot().expected.contains(&p2),
        "{:?}",
        sim.coord.snapshot().expected
    );
    sim.run_until(Millis(60_000));
    assert!(sim.finished);
    assert_eq!(sim.committed.len(), 2);
    assert!(!sim.committed[1].1.contains(&p2));
    assert!(sim.committed[1].2.is_empty(), "{:?}", sim.committed);
    assert!(
        sim.abstentions[1].2 .0 < 1_000,
        "round 2 waited for the quarantined participant"
    );
}

/// The opening the state machine broadcasts is [`CoordinatorConfig::round_open`], which is
/// `round_open_message` over the round's rows: the ids and their digest agree, the terms are the config's.
#[test]
fn the_round_opening_is_assembled_in_one_place() {
    use super::coordinator::{round_open_message, round_sample_ids};
    let cfg = config(5, 2);
    let mut m = CoordinatorRound::new(cfg.clone());
    (0..3).for_each(|i| m.handle_connected(Millis(0), pid(&format!("p{i}"))));
    let Some(Output::Broadcast(OutMessage::Open(open))) = m.poll_output() else {
        panic!("round 1 opens")
    };
    assert_eq!(open, cfg.round_open(RoundId(1)));
    let ids = round_sample_ids(RoundId(1), 10, PUBLIC_LEN);
    assert_eq!(
        open,
        RoundOpen {
            round: RoundId(1),
            total_rounds: 5,
            public_digest: Digest::of(b"public"),
            sample_ids_digest: crate::wire::messages::sample_ids_digest(&ids),
            sample_ids: ids.clone(),
            temperature: 2.0,
            rule: AggregationRule::Median,
            deadline_ms: 1_000,
            quorum: 2,
            classes: CLASSES as u32,
            secure: None,
        }
    );
    let other = round_open_message(
        RoundId(7),
        0,
        Digest::of(b"x"),
        vec![3, 1],
        1.5,
        AggregationRule::Mean,
        60_000,
        4,
        2,
        None,
    );
    assert_eq!(
        other.sample_ids_digest,
        crate::wire::messages::sample_ids_digest(&[3, 1])
    );
    assert_eq!(
        (
            other.round,
            other.sample_ids,
            other.quorum,
            other.classes,
            other.deadline_ms
        ),
        (RoundId(7), vec![3, 1], 4, 2, 60_000)
    );
}

/// Hand-worked: 10 public rows, 4 per round: rounds walk 0..4, 4..8, 8,9,0,1, 2..6 (the second epoch
/// begins inside round 3); a round never asks for more rows than the set has.
#[test]
fn round_sample_ids_walk_the_public_set_in_epochs() {
    use super::coordinator::round_sample_ids;
    let ids = |r: u64| round_sample_ids(RoundId(r), 4, 10);
    assert_eq!(ids(1), [0, 1, 2, 3]);
    assert_eq!(ids(2), [4, 5, 6, 7]);
    assert_eq!(ids(3), [8, 9, 0, 1]);
    assert_eq!(ids(4), [2, 3, 4, 5]);
    assert_eq!(round_sample_ids(RoundId(2), 50, 10), (0..10).collect::<Vec<u64>>());
    assert_eq!(round_sample_ids(RoundId(1), 0, 10), [0]);
}

/// `[stop]`: every participant reports the same accuracy, so with patience 2 the reports of round 3 decide
/// and no fourth round opens out of ten; the decision is durable (a restarted coordinator opens none either).
#[test]
fn a_converged_federation_finishes_before_its_last_round() {
    let mut sim = Sim::new(3, 10, 3, 1);
    let cfg = CoordinatorConfig {
        stop: Some(super::coordinator::stop::StopRule {
            patience: 2,
            min_delta: 0.001,
            min_rounds: 1,
        }),
        ..config(10, 3)
    };
    sim.coord = CoordinatorRound::new(cfg);
    (0..3).for_each(|i| sim.connect(i));
    sim.run_until(Millis(60_000));
    assert!(sim.finished, "closed {:?}", sim.closed);
    assert_eq!(sim.committed.len(), 3, "{:?}", sim.committed);
    let disk = sim.disk.clone().expect("persisted");
    assert_eq!(disk.convergence.converged_at, Some(3));
    assert_eq!(disk.convergence.best, Some((1, 0.9)));
    sim.finished = false;
    sim.restart_coordinator();
    sim.run_until(Millis(120_000));
    assert_eq!(sim.committed.len(), 3, "a round opened after the restart");
}
