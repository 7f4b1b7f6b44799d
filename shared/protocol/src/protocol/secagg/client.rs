//! A participant's side of one secure round (sans-IO): fresh secrets and the key advert, the shares for its
//! holders once the coordinator relays the round's adverts, the masked input once its shares arrive, and one
//! reveal. The driver checks every signature (the adverts against the operator-signed roster) before it
//! hands a message here; this side checks everything else the coordinator controls, and refuses to reveal
//! twice, or both secrets of one peer.

use std::collections::HashSet;

use super::server::round_graph;
use super::{
    masked_input, open_shares, reveal, reveal_request, share_keys, Context, Graph, HeldShares, PublicKeys, RoundSecrets,
};
use crate::crypto::{FederationId, ParticipantId, RoundId};
use crate::wire::secagg::{
    SecAggDelivery, SecAggKeys, SecAggParams, SecAggReveal, SecAggShares, SecAggUnmask, MAX_SECURE_PARTICIPANTS,
};

/// Why this participant refused a secure-round message from the coordinator.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("secure round {round}: {reason}")]
pub struct ClientError {
    /// The round.
    pub round: RoundId,
    /// What was wrong.
    pub reason: String,
}

/// A participant's state for one secure round.
pub struct SecureClient {
    params: SecAggParams,
    federation: FederationId,
    round: RoundId,
    me: ParticipantId,
    secrets: RoundSecrets,
    input: Vec<u64>,
    index: Option<usize>,
    keys: Vec<PublicKeys>,
    graph: Option<Graph>,
    held: Option<HeldShares>,
    u2: Vec<usize>,
    masked_sent: bool,
    revealed: bool,
}

impl std::fmt::Debug for SecureClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecureClient")
            .field("round", &self.round)
            .field("me", &self.me)
            .field("index", &self.index)
            .field("masked_sent", &self.masked_sent)
            .field("revealed", &self.revealed)
            .finish_non_exhaustive()
    }
}

impl SecureClient {
    /// Fresh secrets for `round` over `input` (the fixed-point values, already scaled and noised); returns the
    /// key advert to sign and send.
    pub fn new(
        params: SecAggParams,
        federation: FederationId,
        round: RoundId,
        me: ParticipantId,
        input: Vec<u64>,
        rng: &mut impl rand::CryptoRng,
    ) -> (Self, SecAggKeys) {
        let secrets = RoundSecrets::generate(rng);
        let advert = SecAggKeys {
            round,
            keys: secrets.public(),
        };
        let client = Self {
            params,
            federation,
            round,
            me,
            secrets,
            input,
            index: None,
            keys: Vec::new(),
            graph: None,
            held: None,
            u2: Vec::new(),
            masked_sent: false,
            revealed: false,
        };
        (client, advert)
    }

    /// The round.
    pub fn round(&self) -> RoundId {
        self.round
    }

    /// The indices whose keys this participant uses when the round has `n` members and it is index `me`:
    /// its share holders (its neighbours and itself), the only adverts whose signatures it needs to check
    /// (under SecAgg+ a handful, not all `n`).
    pub fn used_indices(&self, n: usize, me: usize) -> Result<Vec<usize>, ClientError> {
        let graph = round_graph(&self.params, n).map_err(|e| self.err(e.to_string()))?;
        if me >= n {
            return Err(self.err(format!("index {me} is outside the round's {n} members")));
        }
        Ok(graph.holders(me))
    }

    fn err(&self, reason: impl Into<String>) -> ClientError {
        ClientError {
            round: self.round,
            reason: reason.into(),
        }
    }

    fn ctx(&self) -> Context<'_> {
        Context {
            federation: self.federation.as_str().as_bytes(),
            round: self.round.0,
        }
    }

    /// The round's adverts (U1), each already checked to be signed by the participant it names under the
    /// operator-signed roster, in the order the coordinator relayed them. Returns this participant's shares.
    pub fn on_roster(
        &mut self,
        adverts: &[(ParticipantId, SecAggKeys)],
        rng: &mut impl rand::CryptoRng,
    ) -> Result<SecAggShares, ClientError> {
        if self.index.is_some() {
            return Err(self.err("the coordinator relayed the round's adverts twice"));
        }
        let n = adverts.len();
        if n > MAX_SECURE_PARTICIPANTS {
            return Err(self.err(format!("{n} adverts, at most {MAX_SECURE_PARTICIPANTS}")));
        }
        if n < self.params.threshold as usize {
            return Err(self.err(format!("{n} adverts, the threshold is {}", self.params.threshold)));
        }
        if adverts.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(self.err("the adverts are not in strictly ascending participant order"));
        }
        let mut seen = HashSet::new();
        for (p, a) in adverts {
            if a.round != self.round {
                return Err(self.err(format!("the advert of {p} is for round {}", a.round)));
            }
            if !seen.insert(a.keys) {
                return Err(self.err(format!("the advert of {p} repeats another participant's keys")));
            }
        }
        let me = adverts
            .iter()
            .position(|(p, _)| p == &self.me)
            .ok_or_else(|| self.err("this participant's advert is missing from the round"))?;
        if adverts[me].1.keys != self.secrets.public() {
            return Err(self.err("the advert under this participant's name carries other keys"));
        }
        let keys: Vec<PublicKeys> = adverts.iter().map(|(_, a)| a.keys).collect();
        let graph = round_graph(&self.params, n).map_err(|e| self.err(e.to_string()))?;
        let shares =
            share_keys(&self.ctx(), me, &self.secrets, &keys, &graph, rng).map_err(|e| self.err(e.to_string()))?;
        self.index = Some(me);
        self.keys = keys;
        self.graph = Some(graph);
        Ok(SecAggShares {
            round: self.round,
            shares,
        })
    }

    /// The shares addressed to this participant and U2; returns the masked input.
    pub fn on_delivery(&mut self, d: &SecAggDelivery) -> Result<Vec<u64>, ClientError> {
        let (Some(me), Some(graph)) = (self.index, self.graph.as_ref()) else {
            return Err(self.err("shares arrived before the round's adverts"));
        };
        if self.masked_sent {
            return Err(self.err("the coordinator relayed shares twice"));
        }
        if d.round != self.round {
            return Err(self.err(format!("shares for round {}", d.round)));
        }
        let u2: Vec<usize> = d.senders.iter().map(|&i| i as usize).collect();
        if u2.windows(2).any(|w| w[0] >= w[1]) || u2.last().is_some_and(|&i| i >= self.keys.len()) {
            return Err(self.err("the list of senders is not ascending within the round"));
        }
        if u2.binary_search(&me).is_err() {
            return Err(self.err("this participant is missing from the senders it is told about"));
        }
        if u2.len() < self.params.threshold as usize {
            return Err(self.err(format!(
                "{} senders, the threshold is {}",
                u2.len(),
                self.params.threshold
            )));
        }
        let held =
            open_shares(&self.ctx(), me, &self.secrets, &self.keys, &d.shares).map_err(|e| self.err(e.to_string()))?;
        for &s in &u2 {
            let should_hold = graph.holders(s).contains(&me);
            if should_hold != held.contains(s) {
                return Err(self.err(format!(
                    "index {s} is a sender, but its share for this participant is {}",
                    if should_hold { "missing" } else { "unexpected" }
                )));
            }
        }
        let masked = masked_input(&self.ctx(), me, &self.secrets, &self.keys, graph, &u2, &self.input)
            .map_err(|e| self.err(e.to_string()))?;
        self.held = Some(held);
        self.u2 = u2;
        self.masked_sent = true;
        Ok(masked)
    }

    /// The coordinator's unmasking request; answered once per round, and only when it is consistent: U3 and
    /// the dropped partition U2, and no peer is asked for in both.
    pub fn on_unmask(&mut self, u: &SecAggUnmask) -> Result<Option<SecAggReveal>, ClientError> {
        let (Some(me), Some(graph), Some(held)) = (self.index, self.graph.as_ref(), self.held.as_ref()) else {
            return Err(self.err("an unmasking request before this participant sent its masked input"));
        };
        if u.round != self.round {
            return Err(self.err(format!("unmasking request for round {}", u.round)));
        }
        if self.revealed {
            return Err(self.err("a second unmasking request: this participant reveals once per round"));
        }
        let survivors: Vec<usize> = u.survivors.iter().map(|&i| i as usize).collect();
        let dropped: Vec<usize> = u.dropped.iter().map(|&i| i as usize).collect();
        if let Some(&both) = survivors.iter().find(|i| dropped.contains(i)) {
            return Err(self.err(format!(
                "the coordinator asks for both the self-mask seed and the mask secret of index {both}"
            )));
        }
        let mut union: Vec<usize> = survivors.iter().chain(&dropped).copied().collect();
        union.sort_unstable();
        if union != self.u2 {
            return Err(self.err("survivors and dropped do not partition the senders this participant masked against"));
        }
        if survivors.len() < self.params.threshold as usize {
            return Err(self.err(format!(
                "{} survivors, the threshold is {}",
                survivors.len(),
                self.params.threshold
            )));
        }
        if survivors.binary_search(&me).is_err() {
            // Counted as dropped: nothing to reveal (revealing now could expose this node's own input).
            self.revealed = true;
            return Ok(None);
        }
        let req = reveal_request(graph, me, &self.u2, &survivors);
        let shares = reveal(me, held, &req.survivors, &req.dropped).map_err(|e| self.err(e.to_string()))?;
        self.revealed = true;
        Ok(Some(SecAggReveal {
            round: self.round,
            shares,
        }))
    }
}

#[cfg(test)]
mod tests {
    //! What a participant refuses from a lying coordinator.
    use rand::SeedableRng;

    use super::*;
    use crate::wire::secagg::EncryptedShares;

    const PARAMS: SecAggParams = SecAggParams {
        threshold: 2,
        neighbours: 0,
        noise_sigma2: 0,
    };

    fn fed() -> FederationId {
        FederationId::new("client-tests").expect("valid")
    }

    /// Three clients of round 1 and their adverts, in id order.
    fn three() -> (
        Vec<SecureClient>,
        Vec<(ParticipantId, SecAggKeys)>,
        rand_chacha::ChaCha20Rng,
    ) {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(11);
        let mut clients = Vec::new();
        let mut adverts = Vec::new();
        for i in 0..3 {
            let id = ParticipantId::new(format!("p{i}"));
            let (c, a) = SecureClient::new(PARAMS, fed(), RoundId(1), id.clone(), vec![i as u64; 6], &mut rng);
            clients.push(c);
            adverts.push((id, a));
        }
        (clients, adverts, rng)
    }

    /// Runs the shares step for everyone; returns each client's delivery.
    fn deliveries(
        clients: &mut [SecureClient],
        adverts: &[(ParticipantId, SecAggKeys)],
        rng: &mut rand_chacha::ChaCha20Rng,
    ) -> Vec<SecAggDelivery> {
        let all: Vec<EncryptedShares> = clients
            .iter_mut()
            .flat_map(|c| c.on_roster(adverts, rng).expect("shares").shares)
            .collect();
        (0..clients.len())
            .map(|v| SecAggDelivery {
                round: RoundId(1),
                senders: vec![0, 1, 2],
                shares: all.iter().filter(|s| s.to as usize == v).cloned().collect(),
            })
            .collect()
    }

    #[test]
    fn a_node_uses_the_keys_of_its_holders_only() {
        let (clients, _, _) = three();
        assert_eq!(clients[1].used_indices(3, 1).expect("complete"), vec![0, 1, 2]);
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let sparse = SecAggParams {
            threshold: 2,
            neighbours: 2,
            noise_sigma2: 0,
        };
        let (c, _) = SecureClient::new(
            sparse,
            fed(),
            RoundId(1),
            ParticipantId::new("p5"),
            vec![0; 2],
            &mut rng,
        );
        let used = c.used_indices(10, 5).expect("harary");
        assert_eq!(used.len(), 3, "two neighbours and itself: {used:?}");
        assert!(used.contains(&5));
        assert!(c.used_indices(10, 10).is_err(), "an index outside the round");
    }

    #[test]
    fn adverts_that_omit_reorder_repeat_or_replace_this_node_are_refused() {
        let (mut clients, adverts, mut rng) = three();
        let mut missing = adverts.clone();
        missing.remove(0);
        let e = clients[0]
            .on_roster(&missing, &mut rng)
            .expect_err("own advert missing");
        assert!(e.reason.contains("advert is missing"), "{e}");
        let mut reordered = adverts.clone();
        reordered.swap(1, 2);
        let e = clients[0].on_roster(&reordered, &mut rng).expect_err("order");
        assert!(e.reason.contains("ascending"), "{e}");
        let mut repeated = adverts.clone();
        repeated[2].1.keys = repeated[1].1.keys;
        let e = clients[0].on_roster(&repeated, &mut rng).expect_err("repeat");
        assert!(e.reason.contains("repeats"), "{e}");
        let mut replaced = adverts.clone();
        replaced[0].1.keys = adverts[1].1.keys;
        replaced[1].1.keys = adverts[0].1.keys;
        let e = clients[0]
            .on_roster(&replaced, &mut rng)
            .expect_err("other keys under my name");
        assert!(e.reason.contains("other keys"), "{e}");
        let mut stale = adverts.clone();
        stale[1].1.round = RoundId(0);
        let e = clients[0].on_roster(&stale, &mut rng).expect_err("round");
        assert!(e.reason.contains("round 0"), "{e}");
        // The honest list still works afterwards, once.
        clients[0].on_roster(&adverts, &mut rng).expect("honest adverts");
        let e = clients[0].on_roster(&adverts, &mut rng).expect_err("twice");
        assert!(e.reason.contains("twice"), "{e}");
    }

    #[test]
    fn deliveries_with_a_tampered_missing_or_foreign_share_are_refused() {
        let (mut clients, adverts, mut rng) = three();
        let mut d = deliveries(&mut clients, &adverts, &mut rng);
        let mut tampered = d[0].clone();
        if let Some(b) = tampered.shares[1].ciphertext.get_mut(20) {
            *b ^= 1;
        }
        assert!(
            clients[0].on_delivery(&tampered).is_err(),
            "a flipped bit fails the tag"
        );
        let mut short = d[0].clone();
        short.shares.pop();
        let e = clients[0].on_delivery(&short).expect_err("a sender's share is missing");
        assert!(e.reason.contains("missing"), "{e}");
        let mut without_me = d[0].clone();
        without_me.senders = vec![1, 2];
        let e = clients[0].on_delivery(&without_me).expect_err("not in U2");
        assert!(e.reason.contains("missing from the senders"), "{e}");
        let masked = clients[0].on_delivery(&d.remove(0)).expect("honest delivery");
        assert_eq!(masked.len(), 6);
    }

    #[test]
    fn an_unmasking_request_for_both_secrets_of_a_peer_a_second_request_or_a_false_partition_is_refused() {
        let (mut clients, adverts, mut rng) = three();
        let d = deliveries(&mut clients, &adverts, &mut rng);
        for (c, d) in clients.iter_mut().zip(&d) {
            c.on_delivery(d).expect("masked");
        }
        let both = SecAggUnmask {
            round: RoundId(1),
            survivors: vec![0, 1, 2],
            dropped: vec![2],
        };
        let e = clients[0].on_unmask(&both).expect_err("both secrets of index 2");
        assert!(
            e.reason
                .contains("both the self-mask seed and the mask secret of index 2"),
            "{e}"
        );
        let partial = SecAggUnmask {
            round: RoundId(1),
            survivors: vec![0, 1],
            dropped: vec![],
        };
        let e = clients[0].on_unmask(&partial).expect_err("not a partition of U2");
        assert!(e.reason.contains("partition"), "{e}");
        let honest = SecAggUnmask {
            round: RoundId(1),
            survivors: vec![0, 1],
            dropped: vec![2],
        };
        let reveal = clients[0]
            .on_unmask(&honest)
            .expect("reveal")
            .expect("a survivor reveals");
        assert_eq!(reveal.shares.len(), 3, "b of 0 and 1, s of 2");
        let e = clients[0].on_unmask(&honest).expect_err("second request");
        assert!(e.reason.contains("reveals once"), "{e}");
        // Counted as dropped: nothing is revealed.
        let as_dropped = SecAggUnmask {
            round: RoundId(1),
            survivors: vec![0, 1],
            dropped: vec![2],
        };
        assert_eq!(clients[2].on_unmask(&as_dropped).expect("answered"), None);
    }
}
