//! The coordinator's side of one secure round (sans-IO): it collects the signed key adverts (U1), the
//! encrypted shares (U2), the masked inputs (U3) and the revealed shares, relays what each participant needs,
//! and unmasks the sum. [`crate::protocol::CoordinatorRound`] drives it through its phases and deadlines;
//! every refusal names the participant and what was wrong.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{unmask, Context, EncryptedShares, Graph, PublicKeys, RevealedShare, ShareKind, SHARE_LEN};
use crate::crypto::{Digest, FederationId, ParticipantId, RoundId, Signed, Signer, Verified};
use crate::wire::secagg::{
    SecAggDelivery, SecAggKeys, SecAggParams, SecAggReveal, SecAggShares, SecAggUnmask, MAX_SECURE_PARTICIPANTS,
};

/// Bytes of one sealed share pair: nonce, the two 33-byte shares, the tag.
pub const SEALED_SHARES_LEN: usize = super::NONCE_LEN + super::SHARE_PLAINTEXT_LEN + super::TAG_LEN;

/// Where a secure round stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Collecting key adverts.
    Keys,
    /// Collecting encrypted shares.
    Shares,
    /// Collecting masked inputs.
    Masked,
    /// Collecting revealed shares.
    Unmask,
}

/// A signed message of the transcript, kept by digest: the participant's envelope signature covers the
/// payload digest, so an auditor checks it without the (encrypted) payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedDigest {
    /// The signer.
    pub participant: ParticipantId,
    /// The envelope's sequence number.
    pub seq: u64,
    /// SHA-256 of the signed payload.
    pub payload_digest: Digest,
    /// The participant's envelope signature.
    #[serde(with = "crate::codec::bytes")]
    pub signature: Vec<u8>,
}

/// What the update log keeps of a secure round besides the masked inputs (which are its contributions):
/// enough for an auditor to check every signature and recompute the unmasked sum bit for bit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecureTranscript {
    /// The round's parameters.
    pub params: SecAggParams,
    /// The key adverts of U1, in participant-id order (a participant's index is its position).
    pub adverts: Vec<Signed<SecAggKeys>>,
    /// The shares messages of U2, by digest, in index order.
    pub shares: Vec<SignedDigest>,
    /// U2: indices whose shares were relayed, ascending.
    pub u2: Vec<u32>,
    /// U3: indices whose masked inputs arrived, ascending.
    pub survivors: Vec<u32>,
    /// U2 \ U3, ascending.
    pub dropped: Vec<u32>,
    /// The reveal messages used to unmask, in index order.
    pub reveals: Vec<Signed<SecAggReveal>>,
}

impl SecureTranscript {
    /// The transcript's participants in index order.
    pub fn members(&self) -> Vec<ParticipantId> {
        self.adverts
            .iter()
            .filter_map(|a| match &a.signer {
                Signer::Participant(p) => Some(p.clone()),
                _ => None,
            })
            .collect()
    }
}

/// The graph of a round of `n` members under `params`: complete when `neighbours` is 0 or covers everyone,
/// else the SecAgg+ Harary graph.
pub fn round_graph(params: &SecAggParams, n: usize) -> Result<Graph, super::SecAggError> {
    let t = params.threshold as usize;
    let k = params.neighbours as usize;
    if k == 0 || k + 1 >= n {
        Graph::complete(n, t)
    } else {
        Graph::harary(n, k, t)
    }
}

/// Checks a secure round's parameters against the participants that may take part.
pub fn check_params(params: &SecAggParams, max_participants: usize) -> Result<(), String> {
    if params.threshold < 2 {
        return Err(format!(
            "secure aggregation needs a threshold of at least 2 (got {})",
            params.threshold
        ));
    }
    if max_participants > MAX_SECURE_PARTICIPANTS {
        return Err(format!(
            "secure aggregation shares secrets over GF(2^8): at most {MAX_SECURE_PARTICIPANTS} participants, \
             the roster has {max_participants}"
        ));
    }
    if params.neighbours != 0 && (!params.neighbours.is_multiple_of(2) || params.neighbours < 2) {
        return Err(format!(
            "the SecAgg+ neighbourhood must be an even number of at least 2 (got {})",
            params.neighbours
        ));
    }
    if params.neighbours != 0 && params.threshold > params.neighbours {
        return Err(format!(
            "threshold {} exceeds the SecAgg+ neighbourhood of {}",
            params.threshold, params.neighbours
        ));
    }
    Ok(())
}

/// The coordinator's state for one secure round.
#[derive(Debug)]
pub struct SecureRound {
    params: SecAggParams,
    federation: FederationId,
    round: RoundId,
    step: Step,
    adverts: BTreeMap<ParticipantId, Signed<SecAggKeys>>,
    members: Vec<ParticipantId>,
    keys: Vec<PublicKeys>,
    graph: Option<Graph>,
    shares: BTreeMap<usize, (Vec<EncryptedShares>, SignedDigest)>,
    u2: Vec<usize>,
    masked: BTreeMap<usize, Vec<u64>>,
    survivors: Vec<usize>,
    dropped: Vec<usize>,
    reveals: BTreeMap<usize, Signed<SecAggReveal>>,
    revealed: Vec<RevealedShare>,
}

impl SecureRound {
    /// A secure round opening.
    pub fn new(params: SecAggParams, federation: FederationId, round: RoundId) -> Self {
        Self {
            params,
            federation,
            round,
            step: Step::Keys,
            adverts: BTreeMap::new(),
            members: Vec::new(),
            keys: Vec::new(),
            graph: None,
            shares: BTreeMap::new(),
            u2: Vec::new(),
            masked: BTreeMap::new(),
            survivors: Vec::new(),
            dropped: Vec::new(),
            reveals: BTreeMap::new(),
            revealed: Vec::new(),
        }
    }

    /// The current step.
    pub fn step(&self) -> Step {
        self.step
    }

    /// The round's parameters.
    pub fn params(&self) -> &SecAggParams {
        &self.params
    }

    fn ctx(&self) -> Context<'_> {
        Context {
            federation: self.federation.as_str().as_bytes(),
            round: self.round.0,
        }
    }

    fn index_of(&self, p: &ParticipantId) -> Option<usize> {
        self.members.binary_search(p).ok()
    }

    /// Participants whose adverts arrived.
    pub fn advertised(&self) -> impl Iterator<Item = &ParticipantId> {
        self.adverts.keys()
    }

    /// Whether `p` is in U2 (its shares were relayed), so its masked input is awaited.
    pub fn in_u2(&self, p: &ParticipantId) -> bool {
        self.index_of(p).is_some_and(|i| self.u2.binary_search(&i).is_ok())
    }

    /// Members of U2, by id.
    pub fn u2_members(&self) -> Vec<ParticipantId> {
        self.u2.iter().filter_map(|&i| self.members.get(i).cloned()).collect()
    }

    /// Members of U3, by id.
    pub fn survivor_members(&self) -> Vec<ParticipantId> {
        self.survivors
            .iter()
            .filter_map(|&i| self.members.get(i).cloned())
            .collect()
    }

    /// Members that shared their keys, by id (U1 after the keys closed).
    pub fn members(&self) -> &[ParticipantId] {
        &self.members
    }

    /// Whether `p` already sent its shares.
    pub fn has_shares(&self, p: &ParticipantId) -> bool {
        self.index_of(p).is_some_and(|i| self.shares.contains_key(&i))
    }

    /// Whether `p` already sent its reveal.
    pub fn has_revealed(&self, p: &ParticipantId) -> bool {
        self.index_of(p).is_some_and(|i| self.reveals.contains_key(&i))
    }

    fn expect_step(&self, want: Step, what: &str) -> Result<(), String> {
        if self.step != want {
            return Err(format!(
                "round {} is not collecting {what} (secure step {:?})",
                self.round, self.step
            ));
        }
        Ok(())
    }

    /// A verified key advert from `from`.
    pub fn handle_keys(&mut self, from: &ParticipantId, msg: Verified<SecAggKeys>) -> Result<(), String> {
        self.expect_step(Step::Keys, "key adverts")?;
        if msg.value().round != self.round {
            return Err(format!(
                "key advert for round {}, this is round {}",
                msg.value().round,
                self.round
            ));
        }
        if self.adverts.contains_key(from) {
            return Err(format!("{from} already advertised its keys for round {}", self.round));
        }
        if self
            .adverts
            .values()
            .any(|a| crate::wire::decode_payload::<SecAggKeys>(&a.payload).is_ok_and(|k| k.keys == msg.value().keys))
        {
            return Err(format!("{from} advertised keys another participant already advertised"));
        }
        self.adverts.insert(from.clone(), msg.envelope().clone());
        Ok(())
    }

    /// Closes the key step: fixes U1 and the graph. Returns the adverts to relay (participant-id order).
    pub fn close_keys(&mut self) -> Result<Vec<Signed<SecAggKeys>>, String> {
        let n = self.adverts.len();
        let t = self.params.threshold as usize;
        if n < t {
            return Err(format!("{n} participants advertised keys, the threshold is {t}"));
        }
        let mut keys = Vec::with_capacity(n);
        for (p, a) in &self.adverts {
            let k: SecAggKeys = crate::wire::decode_payload(&a.payload)
                .map_err(|e| format!("the stored key advert of {p} does not decode: {e}"))?;
            keys.push(k.keys);
        }
        let graph = round_graph(&self.params, n).map_err(|e| e.to_string())?;
        self.members = self.adverts.keys().cloned().collect();
        self.keys = keys;
        self.graph = Some(graph);
        self.step = Step::Shares;
        Ok(self.adverts.values().cloned().collect())
    }

    /// A verified shares message from `from`: one sealed pair for each of its holders, itself included.
    pub fn handle_shares(&mut self, from: &ParticipantId, msg: Verified<SecAggShares>) -> Result<(), String> {
        self.expect_step(Step::Shares, "shares")?;
        let body = msg.value();
        if body.round != self.round {
            return Err(format!("shares for round {}, this is round {}", body.round, self.round));
        }
        let me = self
            .index_of(from)
            .ok_or_else(|| format!("{from} sent no key advert for round {}", self.round))?;
        if self.shares.contains_key(&me) {
            return Err(format!("{from} already sent its shares for round {}", self.round));
        }
        let graph = self.graph.as_ref().ok_or("the round has no graph yet")?;
        let holders: BTreeSet<usize> = graph.holders(me).into_iter().collect();
        let mut seen = BTreeSet::new();
        for (i, s) in body.shares.iter().enumerate() {
            if s.from as usize != me {
                return Err(format!("share {i} names owner {} but {from} is index {me}", s.from));
            }
            if !holders.contains(&(s.to as usize)) {
                return Err(format!(
                    "share {i} is addressed to {}, not a holder of index {me}",
                    s.to
                ));
            }
            if !seen.insert(s.to) {
                return Err(format!("share {i} repeats holder {}", s.to));
            }
            if s.ciphertext.len() != SEALED_SHARES_LEN {
                return Err(format!(
                    "share {i} has {} bytes, a sealed share pair has {SEALED_SHARES_LEN}",
                    s.ciphertext.len()
                ));
            }
        }
        if seen.len() != holders.len() {
            return Err(format!(
                "{from} sent shares for {} holders, index {me} has {}",
                seen.len(),
                holders.len()
            ));
        }
        let record = SignedDigest {
            participant: from.clone(),
            seq: msg.seq(),
            payload_digest: msg.payload_digest(),
            signature: msg.envelope().signature.clone(),
        };
        self.shares.insert(me, (body.shares.clone(), record));
        Ok(())
    }

    /// Closes the share step: U2 is whoever sent shares. Returns each U2 member's delivery.
    pub fn close_shares(&mut self) -> Result<Vec<(ParticipantId, SecAggDelivery)>, String> {
        let t = self.params.threshold as usize;
        let u2: Vec<usize> = self.shares.keys().copied().collect();
        if u2.len() < t {
            return Err(format!(
                "{} participants sent their shares, the threshold is {t}",
                u2.len()
            ));
        }
        let senders: Vec<u32> = u2.iter().map(|&i| i as u32).collect();
        let mut out = Vec::with_capacity(u2.len());
        for &v in &u2 {
            let shares: Vec<EncryptedShares> = self
                .shares
                .values()
                .flat_map(|(s, _)| s.iter().filter(|e| e.to as usize == v).cloned())
                .collect();
            out.push((
                self.members[v].clone(),
                SecAggDelivery {
                    round: self.round,
                    senders: senders.clone(),
                    shares,
                },
            ));
        }
        self.u2 = u2;
        self.step = Step::Masked;
        Ok(out)
    }

    /// A masked input from `from` (already shape-checked by the caller): `masked` values in Z_2^64.
    pub fn handle_masked(&mut self, from: &ParticipantId, masked: Vec<u64>) -> Result<(), String> {
        self.expect_step(Step::Masked, "masked inputs")?;
        let me = self
            .index_of(from)
            .filter(|i| self.u2.binary_search(i).is_ok())
            .ok_or_else(|| format!("{from} is not in this round's U2 (its shares were not relayed)"))?;
        if self.masked.contains_key(&me) {
            return Err(format!("{from} already sent its masked input"));
        }
        self.masked.insert(me, masked);
        Ok(())
    }

    /// Forgets `from`'s masked input (the caller refused the message after all).
    pub fn withdraw_masked(&mut self, from: &ParticipantId) {
        if let Some(i) = self.index_of(from) {
            self.masked.remove(&i);
        }
    }

    /// Closes the masked-input step: U3 is whoever sent one. Returns the unmasking request.
    pub fn close_masked(&mut self) -> Result<SecAggUnmask, String> {
        let t = self.params.threshold as usize;
        let survivors: Vec<usize> = self.masked.keys().copied().collect();
        if survivors.len() < t {
            return Err(format!(
                "{} masked inputs arrived, the threshold is {t}: the round cannot be unmasked",
                survivors.len()
            ));
        }
        let dropped: Vec<usize> = self
            .u2
            .iter()
            .copied()
            .filter(|i| !self.masked.contains_key(i))
            .collect();
        self.survivors = survivors;
        self.dropped = dropped;
        self.step = Step::Unmask;
        Ok(SecAggUnmask {
            round: self.round,
            survivors: self.survivors.iter().map(|&i| i as u32).collect(),
            dropped: self.dropped.iter().map(|&i| i as u32).collect(),
        })
    }

    /// A verified reveal from a survivor.
    pub fn handle_reveal(&mut self, from: &ParticipantId, msg: Verified<SecAggReveal>) -> Result<(), String> {
        self.expect_step(Step::Unmask, "revealed shares")?;
        let body = msg.value();
        if body.round != self.round {
            return Err(format!("reveal for round {}, this is round {}", body.round, self.round));
        }
        let me = self
            .index_of(from)
            .filter(|i| self.survivors.binary_search(i).is_ok())
            .ok_or_else(|| format!("{from} is not a survivor of round {}", self.round))?;
        if self.reveals.contains_key(&me) {
            return Err(format!("{from} already revealed its shares"));
        }
        let graph = self.graph.as_ref().ok_or("the round has no graph")?;
        let mut seen = BTreeSet::new();
        for (i, s) in body.shares.iter().enumerate() {
            let owner = s.owner as usize;
            if s.holder as usize != me {
                return Err(format!(
                    "revealed share {i} names holder {}, {from} is index {me}",
                    s.holder
                ));
            }
            let wanted = match s.kind {
                ShareKind::SelfSeed => self.survivors.binary_search(&owner).is_ok(),
                ShareKind::MaskSecret => self.dropped.binary_search(&owner).is_ok(),
            };
            if !wanted {
                return Err(format!(
                    "revealed share {i} ({:?} of {owner}) was not asked for",
                    s.kind
                ));
            }
            if !graph.holders(owner).contains(&me) {
                return Err(format!("index {me} holds no share of {owner}"));
            }
            if s.share.len() != SHARE_LEN {
                return Err(format!(
                    "revealed share {i} has {} bytes, a share has {SHARE_LEN}",
                    s.share.len()
                ));
            }
            if !seen.insert(owner) {
                return Err(format!("revealed share {i} repeats owner {owner}"));
            }
        }
        self.revealed.extend(body.shares.iter().cloned());
        self.reveals.insert(me, msg.envelope().clone());
        Ok(())
    }

    /// Whether every needed secret has `t` revealed shares.
    pub fn ready_to_unmask(&self) -> bool {
        let t = self.params.threshold as usize;
        let count = |owner: usize, kind: ShareKind| {
            self.revealed
                .iter()
                .filter(|s| s.owner as usize == owner && s.kind == kind)
                .count()
        };
        self.survivors.iter().all(|&u| count(u, ShareKind::SelfSeed) >= t)
            && self.dropped.iter().all(|&v| count(v, ShareKind::MaskSecret) >= t)
    }

    /// Whether every survivor answered (no more shares can come).
    pub fn all_revealed(&self) -> bool {
        self.survivors.iter().all(|i| self.reveals.contains_key(i))
    }

    /// The unmasked sum of the survivors' inputs in Z_2^64.
    pub fn unmask(&self) -> Result<Vec<u64>, String> {
        let graph = self.graph.as_ref().ok_or("the round has no graph")?;
        let masked: Vec<(usize, Vec<u64>)> = self.masked.iter().map(|(i, m)| (*i, m.clone())).collect();
        unmask(&self.ctx(), &self.keys, graph, &self.u2, &masked, &self.revealed).map_err(|e| e.to_string())
    }

    /// What the log keeps of the round.
    pub fn transcript(&self) -> SecureTranscript {
        SecureTranscript {
            params: self.params,
            adverts: self.adverts.values().cloned().collect(),
            shares: self
                .u2
                .iter()
                .filter_map(|i| self.shares.get(i).map(|(_, d)| d.clone()))
                .collect(),
            u2: self.u2.iter().map(|&i| i as u32).collect(),
            survivors: self.survivors.iter().map(|&i| i as u32).collect(),
            dropped: self.dropped.iter().map(|&i| i as u32).collect(),
            reveals: self.reveals.values().cloned().collect(),
        }
    }
}

/// Why a recorded secure round does not recompute.
#[derive(Debug, thiserror::Error)]
pub enum TranscriptError {
    /// A part of the transcript is malformed.
    #[error("secure transcript: {0}")]
    Malformed(String),
    /// Unmasking failed.
    #[error("unmasking the recorded inputs: {0}")]
    Unmask(#[from] super::SecAggError),
}

/// Recomputes a recorded round's unmasked sum from its transcript and the survivors' masked inputs (index,
/// values), as the coordinator did: what `audit verify` runs. Signatures are the caller's to check.
pub fn recompute_sum(
    federation: &FederationId,
    round: RoundId,
    t: &SecureTranscript,
    masked: &[(usize, Vec<u64>)],
) -> Result<Vec<u64>, TranscriptError> {
    let mut keys = Vec::with_capacity(t.adverts.len());
    for (i, a) in t.adverts.iter().enumerate() {
        let k: SecAggKeys = crate::wire::decode_payload(&a.payload)
            .map_err(|e| TranscriptError::Malformed(format!("advert {i} does not decode: {e}")))?;
        if k.round != round {
            return Err(TranscriptError::Malformed(format!(
                "advert {i} is for round {}",
                k.round
            )));
        }
        keys.push(k.keys);
    }
    let graph = round_graph(&t.params, keys.len())?;
    let mut revealed = Vec::new();
    for (i, r) in t.reveals.iter().enumerate() {
        let body: SecAggReveal = crate::wire::decode_payload(&r.payload)
            .map_err(|e| TranscriptError::Malformed(format!("reveal {i} does not decode: {e}")))?;
        revealed.extend(body.shares);
    }
    let u2: Vec<usize> = t.u2.iter().map(|&i| i as usize).collect();
    let ctx = Context {
        federation: federation.as_str().as_bytes(),
        round: round.0,
    };
    Ok(unmask(&ctx, &keys, &graph, &u2, masked, &revealed)?)
}
