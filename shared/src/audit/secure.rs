//! A secure round's aggregate, recomputed offline: every signature of its transcript checked under the
//! log's roster, the masked inputs of the survivors unmasked with the revealed shares, and the consensus
//! rebuilt exactly as the coordinator did (`protocol::coordinator::consensus_from_sum`).

use super::aggregates::{AggregateInput, SecureRound};
use crate::crypto::{envelope_signing_bytes, FederationId, ParticipantId, PublicKey, SignedMessage, Signer};
use crate::protocol::secagg::{recompute_sum, SecureTranscript};
use crate::protocol::{softlabels, AggregationRule, Encoding};
use crate::wire::messages::SoftLabels;
use crate::wire::secagg::SecAggShares;

fn key_of(round: &SecureRound<'_>, p: &ParticipantId) -> Result<PublicKey, String> {
    let k = round
        .keys
        .get(p)
        .ok_or_else(|| format!("{p} signs in the transcript but is not an enrolled participant here"))?;
    PublicKey::from_bytes(&k.to_bytes()).map_err(|e| format!("the key of {p}: {e}"))
}

/// Checks the transcript's signatures and lists, unmasks, and returns the canonical aggregate bytes.
pub(super) fn recompute(round: &SecureRound<'_>, inputs: &[AggregateInput<'_>]) -> Result<Vec<u8>, String> {
    let federation = FederationId::new(round.federation.to_string()).map_err(|e| format!("federation id: {e}"))?;
    let t: SecureTranscript =
        crate::wire::decode_payload(round.transcript).map_err(|e| format!("the transcript does not decode: {e}"))?;
    let members = t.members();
    if members.len() != t.adverts.len() || members.windows(2).any(|w| w[0] >= w[1]) {
        return Err("the transcript's adverts are not from distinct participants in id order".into());
    }
    for a in &t.adverts {
        let Signer::Participant(p) = &a.signer else {
            return Err("a key advert is not signed by a participant".into());
        };
        let v = a
            .clone()
            .verify_offline(&key_of(round, p)?, &federation)
            .map_err(|e| format!("the key advert of {p}: {e}"))?;
        if v.round() != round.round {
            return Err(format!("the key advert of {p} is for round {}", v.round()));
        }
    }
    for s in &t.shares {
        let key = round
            .keys
            .get(&s.participant)
            .ok_or_else(|| format!("{} sent shares but is not enrolled", s.participant))?;
        let msg = envelope_signing_bytes(
            SecAggShares::DOMAIN,
            &Signer::Participant(s.participant.clone()),
            &federation,
            round.round,
            s.seq,
            &s.payload_digest,
        );
        let sig = ed25519_dalek::Signature::from_slice(&s.signature)
            .map_err(|_| format!("the shares signature of {} is malformed", s.participant))?;
        key.verify_strict(&msg, &sig)
            .map_err(|_| format!("the shares signature of {} does not verify", s.participant))?;
    }
    for r in &t.reveals {
        let Signer::Participant(p) = &r.signer else {
            return Err("a reveal is not signed by a participant".into());
        };
        r.clone()
            .verify_offline(&key_of(round, p)?, &federation)
            .map_err(|e| format!("the reveal of {p}: {e}"))?;
    }
    let names = |idx: &[u32]| -> Result<Vec<ParticipantId>, String> {
        idx.iter()
            .map(|&i| {
                members
                    .get(i as usize)
                    .cloned()
                    .ok_or_else(|| format!("index {i} is not a member"))
            })
            .collect()
    };
    if names(&t.survivors)? != round.survivors || names(&t.dropped)? != round.dropped {
        return Err("the transcript's survivors or dropped differ from the log record's".into());
    }
    let mut masked = Vec::with_capacity(inputs.len());
    let mut samples = 0u64;
    let mut classes = 0usize;
    for input in inputs {
        let sl: SoftLabels =
            crate::wire::decode_payload(input.payload).map_err(|e| format!("payload of {}: {e}", input.participant))?;
        if sl.encoding != Encoding::MaskedU64 {
            return Err(format!(
                "the contribution of {} in a secure round is not masked",
                input.participant
            ));
        }
        let idx = members
            .iter()
            .position(|p| p == input.participant)
            .ok_or_else(|| format!("{} contributed but advertised no keys", input.participant))?;
        classes = sl.classes as usize;
        samples = samples.saturating_add(sl.samples);
        let m = softlabels::decode_masked(&sl.payload, sl.rows as usize, classes)
            .map_err(|e| format!("payload of {}: {e}", input.participant))?;
        masked.push((idx, m));
    }
    let sum = recompute_sum(&federation, round.round, &t, &masked).map_err(|e| e.to_string())?;
    let rule = AggregationRule::parse(round.rule).map_err(|e| e.to_string())?;
    let divisor = match rule {
        AggregationRule::SampleWeighted => samples as f64,
        _ => inputs.len() as f64,
    };
    let consensus = crate::protocol::coordinator::consensus_from_sum(&sum, divisor, classes);
    Ok(crate::protocol::canonical_aggregate_bytes(&consensus))
}
