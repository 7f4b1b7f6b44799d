//! Domain-separated signed envelopes: `Signed<T>` travels, only `Verified<T>` comes out of verification.
//!
//! The signature covers [`signing_bytes`]: a fixed context string, the message kind's domain tag, the
//! federation, the round, the sender's sequence number and the SHA-256 of the exact payload bytes that
//! travel in the envelope. Verification hashes the bytes as received (never a re-encoding), checks with
//! `verify_strict`, and only then decodes the payload. A [`ReplayGuard`] rejects old sequence numbers,
//! other rounds and other federations. The layout is in docs/protocol.md ("Signed envelope").

use super::ids::{Digest, FederationId, ParticipantId, RoundId};
use super::keys::{PublicKey, SigningIdentity, SIGNATURE_LEN};
use crate::wire::frame::{decode_payload, encode_payload, WireError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;

/// Context string that opens every signed byte string; bump the suffix if the layout ever changes.
pub const SIGNING_CONTEXT: &[u8] = b"fedistill/signed/v1";

/// A message type that travels inside [`Signed`]. `DOMAIN` must be unique per message kind, e.g.
/// `"fedistill/soft-labels"`, so a signature for one kind never verifies as another.
pub trait SignedMessage: Serialize + DeserializeOwned {
    /// Domain-separation tag for this message kind.
    const DOMAIN: &'static str;
}

/// Errors from signing or verifying envelopes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// The signature does not verify (wrong key, tampered payload or header, wrong domain, non-canonical).
    #[error("bad signature from {signer} on {domain} (round {round}, seq {seq})")]
    BadSignature {
        /// Claimed signer.
        signer: Signer,
        /// Domain tag the verifier expected.
        domain: &'static str,
        /// Round in the envelope.
        round: RoundId,
        /// Sequence number in the envelope.
        seq: u64,
    },
    /// The envelope belongs to another federation.
    #[error("message for federation {got}, expected {expected}")]
    WrongFederation {
        /// Federation this verifier serves.
        expected: FederationId,
        /// Federation named in the envelope.
        got: FederationId,
    },
    /// The envelope belongs to another round.
    #[error("message for round {got}, expected round {expected}")]
    WrongRound {
        /// Round the verifier accepts.
        expected: RoundId,
        /// Round named in the envelope.
        got: RoundId,
    },
    /// The sequence number is not above the last one accepted from this signer.
    #[error("replayed message from {signer}: seq {seq} <= last accepted {last}")]
    Replay {
        /// Signer of the replayed envelope.
        signer: Signer,
        /// Sequence number in the envelope.
        seq: u64,
        /// Highest sequence number accepted so far from this signer.
        last: u64,
    },
    /// The signed payload bytes do not decode as the expected message type.
    #[error("signed payload is malformed: {0}")]
    Payload(WireError),
}

/// Who signed an envelope. The claim is checked by verifying with the key the roster holds for it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Signer {
    /// The federation's coordinator.
    Coordinator,
    /// An enrolled participant.
    Participant(ParticipantId),
}

impl fmt::Display for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Signer::Coordinator => f.write_str("coordinator"),
            Signer::Participant(p) => write!(f, "participant {p}"),
        }
    }
}

/// The exact bytes an ed25519 signature covers (public so auditors can re-verify offline):
///
/// `SIGNING_CONTEXT | u16 BE len | domain | u16 BE len | federation | round u64 BE | seq u64 BE | digest[32]`.
pub fn signing_bytes(
    domain: &str,
    federation: &FederationId,
    round: RoundId,
    seq: u64,
    payload_digest: &Digest,
) -> Vec<u8> {
    let d = domain.as_bytes();
    let f = federation.as_str().as_bytes();
    let mut out = Vec::with_capacity(SIGNING_CONTEXT.len() + 4 + d.len() + f.len() + 16 + 32);
    out.extend_from_slice(SIGNING_CONTEXT);
    // Domains are short literals and federation ids are at most 64 bytes, so u16 always fits.
    out.extend_from_slice(&(d.len().min(u16::MAX as usize) as u16).to_be_bytes());
    out.extend_from_slice(&d[..d.len().min(u16::MAX as usize)]);
    out.extend_from_slice(&(f.len() as u16).to_be_bytes());
    out.extend_from_slice(f);
    out.extend_from_slice(&round.0.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&payload_digest.0);
    out
}

/// A signed envelope as it travels. Fields are public for logging and storage; trust comes only from
/// [`Signed::verify`].
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Signed<T> {
    /// Claimed signer.
    pub signer: Signer,
    /// Federation the message belongs to.
    pub federation: FederationId,
    /// Round the message belongs to (0 outside rounds).
    pub round: RoundId,
    /// Per-signer sequence number, strictly increasing across all message kinds of that signer.
    pub seq: u64,
    /// The encoded message; the signature covers the SHA-256 of exactly these bytes.
    #[serde(with = "crate::wire::frame::bytes")]
    pub payload: Vec<u8>,
    /// ed25519 signature over [`signing_bytes`].
    #[serde(with = "crate::wire::frame::bytes")]
    pub signature: Vec<u8>,
    #[serde(skip)]
    _kind: PhantomData<fn() -> T>,
}

impl<T> Clone for Signed<T> {
    fn clone(&self) -> Self {
        Self {
            signer: self.signer.clone(),
            federation: self.federation.clone(),
            round: self.round,
            seq: self.seq,
            payload: self.payload.clone(),
            signature: self.signature.clone(),
            _kind: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Signed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signed")
            .field("signer", &self.signer)
            .field("federation", &self.federation)
            .field("round", &self.round)
            .field("seq", &self.seq)
            .field("payload_len", &self.payload.len())
            .field("payload_digest", &self.payload_digest())
            .finish()
    }
}

impl<T> Signed<T> {
    /// SHA-256 of the payload bytes as carried.
    pub fn payload_digest(&self) -> Digest {
        Digest::of(&self.payload)
    }
}

impl<T: SignedMessage> Signed<T> {
    /// Encodes `message` and signs it.
    pub fn sign(
        identity: &SigningIdentity,
        signer: Signer,
        federation: FederationId,
        round: RoundId,
        seq: u64,
        message: &T,
    ) -> Result<Self, SignError> {
        let payload = encode_payload(message).map_err(SignError::Payload)?;
        let digest = Digest::of(&payload);
        let signature = identity
            .sign_raw(&signing_bytes(T::DOMAIN, &federation, round, seq, &digest))
            .to_vec();
        Ok(Self {
            signer,
            federation,
            round,
            seq,
            payload,
            signature,
            _kind: PhantomData,
        })
    }

    fn check_signature(&self, key: &PublicKey) -> Result<Digest, SignError> {
        let digest = self.payload_digest();
        let msg = signing_bytes(T::DOMAIN, &self.federation, self.round, self.seq, &digest);
        if self.signature.len() != SIGNATURE_LEN || !key.verify_strict(&msg, &self.signature) {
            return Err(SignError::BadSignature {
                signer: self.signer.clone(),
                domain: T::DOMAIN,
                round: self.round,
                seq: self.seq,
            });
        }
        Ok(digest)
    }

    /// Online verification: federation and round must match, the signature must verify under `key`
    /// (the roster's key for `self.signer`), the sequence number must be fresh, and the payload must
    /// decode. The guard records the sequence number only when everything passed.
    pub fn verify(
        self,
        key: &PublicKey,
        guard: &mut ReplayGuard,
        expected_round: RoundId,
    ) -> Result<Verified<T>, SignError> {
        if self.federation != guard.federation {
            return Err(SignError::WrongFederation {
                expected: guard.federation.clone(),
                got: self.federation,
            });
        }
        if self.round != expected_round {
            return Err(SignError::WrongRound {
                expected: expected_round,
                got: self.round,
            });
        }
        guard.check(&self.signer, self.seq)?;
        let digest = self.check_signature(key)?;
        let value = decode_payload(&self.payload).map_err(SignError::Payload)?;
        guard.record(&self.signer, self.seq);
        Ok(Verified {
            value,
            digest,
            envelope: self,
        })
    }

    /// Offline verification (auditors re-checking a log): federation and signature, no replay state.
    pub fn verify_offline(self, key: &PublicKey, federation: &FederationId) -> Result<Verified<T>, SignError> {
        if &self.federation != federation {
            return Err(SignError::WrongFederation {
                expected: federation.clone(),
                got: self.federation,
            });
        }
        let digest = self.check_signature(key)?;
        let value = decode_payload(&self.payload).map_err(SignError::Payload)?;
        Ok(Verified {
            value,
            digest,
            envelope: self,
        })
    }
}

/// A message whose signature, federation, round and freshness have been checked. Only
/// [`Signed::verify`] and [`Signed::verify_offline`] construct it.
#[derive(Debug)]
pub struct Verified<T> {
    value: T,
    digest: Digest,
    envelope: Signed<T>,
}

impl<T> Verified<T> {
    /// The decoded message.
    pub fn value(&self) -> &T {
        &self.value
    }
    /// The authenticated signer.
    pub fn signer(&self) -> &Signer {
        &self.envelope.signer
    }
    /// The round the message was signed for.
    pub fn round(&self) -> RoundId {
        self.envelope.round
    }
    /// The signer's sequence number.
    pub fn seq(&self) -> u64 {
        self.envelope.seq
    }
    /// SHA-256 of the exact payload bytes that were signed (what goes into the update log).
    pub fn payload_digest(&self) -> Digest {
        self.digest
    }
    /// The envelope as received, for storing in the log.
    pub fn envelope(&self) -> &Signed<T> {
        &self.envelope
    }
    /// Splits into the message and the original envelope.
    pub fn into_parts(self) -> (T, Signed<T>) {
        (self.value, self.envelope)
    }
    /// The decoded message, dropping the envelope.
    pub fn into_inner(self) -> T {
        self.value
    }
}

/// Per-federation replay state: the highest sequence number accepted from each signer.
#[derive(Debug, Clone)]
pub struct ReplayGuard {
    federation: FederationId,
    last_seq: HashMap<Signer, u64>,
}

impl ReplayGuard {
    /// An empty guard for `federation`.
    pub fn new(federation: FederationId) -> Self {
        Self {
            federation,
            last_seq: HashMap::new(),
        }
    }

    /// A guard restored from persisted high-water marks (e.g. after a coordinator restart).
    pub fn with_state(federation: FederationId, last_seq: impl IntoIterator<Item = (Signer, u64)>) -> Self {
        Self {
            federation,
            last_seq: last_seq.into_iter().collect(),
        }
    }

    /// The federation this guard serves.
    pub fn federation(&self) -> &FederationId {
        &self.federation
    }

    /// Highest accepted sequence number for `signer`, if any.
    pub fn last_seq(&self, signer: &Signer) -> Option<u64> {
        self.last_seq.get(signer).copied()
    }

    fn check(&self, signer: &Signer, seq: u64) -> Result<(), SignError> {
        match self.last_seq.get(signer) {
            Some(&last) if seq <= last => Err(SignError::Replay {
                signer: signer.clone(),
                seq,
                last,
            }),
            _ => Ok(()),
        }
    }

    fn record(&mut self, signer: &Signer, seq: u64) {
        self.last_seq.insert(signer.clone(), seq);
    }
}

/// A sender's strictly increasing sequence counter. Start it above anything sent before (for example
/// from a persisted value, or microseconds since the epoch passed in by the caller) so a restarted sender
/// is not mistaken for a replay.
#[derive(Debug, Clone)]
pub struct SequenceCounter {
    next: u64,
}

impl SequenceCounter {
    /// A counter whose first value is `start`.
    pub fn new(start: u64) -> Self {
        Self { next: start }
    }

    /// The next sequence number.
    pub fn next_seq(&mut self) -> u64 {
        let v = self.next;
        self.next = self.next.saturating_add(1);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Labels {
        values: Vec<f32>,
    }
    impl SignedMessage for Labels {
        const DOMAIN: &'static str = "fedistill/test-labels";
    }
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Report {
        values: Vec<f32>,
    }
    impl SignedMessage for Report {
        const DOMAIN: &'static str = "fedistill/test-report";
    }

    fn fed() -> FederationId {
        FederationId::new("fed").expect("valid")
    }
    fn alice() -> Signer {
        Signer::Participant(ParticipantId::new("alice"))
    }
    fn sign(id: &SigningIdentity, round: u64, seq: u64) -> Signed<Labels> {
        Signed::sign(
            id,
            alice(),
            fed(),
            RoundId(round),
            seq,
            &Labels { values: vec![0.5, 0.5] },
        )
        .expect("sign")
    }

    #[test]
    fn signing_bytes_layout() {
        let d = Digest([0xAB; 32]);
        let b = signing_bytes("dom", &fed(), RoundId(2), 5, &d);
        let mut expect = SIGNING_CONTEXT.to_vec();
        expect.extend_from_slice(&[0, 3]);
        expect.extend_from_slice(b"dom");
        expect.extend_from_slice(&[0, 3]);
        expect.extend_from_slice(b"fed");
        expect.extend_from_slice(&2u64.to_be_bytes());
        expect.extend_from_slice(&5u64.to_be_bytes());
        expect.extend_from_slice(&[0xAB; 32]);
        assert_eq!(b, expect);
    }

    #[test]
    fn good_message_verifies_once() {
        let id = SigningIdentity::from_seed([1; 32]);
        let mut guard = ReplayGuard::new(fed());
        let v = sign(&id, 1, 10)
            .verify(&id.public_key(), &mut guard, RoundId(1))
            .expect("verifies");
        assert_eq!(v.value().values, vec![0.5, 0.5]);
        assert_eq!(v.signer(), &alice());
        assert_eq!(v.payload_digest(), Digest::of(&v.envelope().payload));
        assert_eq!(guard.last_seq(&alice()), Some(10));
        // Replay of the same envelope.
        let err = sign(&id, 1, 10)
            .verify(&id.public_key(), &mut guard, RoundId(1))
            .expect_err("replay");
        assert_eq!(
            err,
            SignError::Replay {
                signer: alice(),
                seq: 10,
                last: 10
            }
        );
        let err = sign(&id, 1, 9)
            .verify(&id.public_key(), &mut guard, RoundId(1))
            .expect_err("old");
        assert!(matches!(err, SignError::Replay { .. }));
        assert!(sign(&id, 1, 11)
            .verify(&id.public_key(), &mut guard, RoundId(1))
            .is_ok());
    }

    #[test]
    fn other_round_other_federation_rejected() {
        let id = SigningIdentity::from_seed([1; 32]);
        let mut guard = ReplayGuard::new(fed());
        let err = sign(&id, 2, 1)
            .verify(&id.public_key(), &mut guard, RoundId(1))
            .expect_err("round");
        assert_eq!(
            err,
            SignError::WrongRound {
                expected: RoundId(1),
                got: RoundId(2)
            }
        );
        let mut other = ReplayGuard::new(FederationId::new("other").expect("valid"));
        let err = sign(&id, 1, 1)
            .verify(&id.public_key(), &mut other, RoundId(1))
            .expect_err("fed");
        assert!(matches!(err, SignError::WrongFederation { .. }));
        // Rejections must not advance the guard.
        assert_eq!(guard.last_seq(&alice()), None);
    }

    #[test]
    fn tampering_and_wrong_key_rejected_without_advancing_guard() {
        let id = SigningIdentity::from_seed([1; 32]);
        let stranger = SigningIdentity::from_seed([2; 32]);
        let mut guard = ReplayGuard::new(fed());
        let err = sign(&stranger, 1, 1)
            .verify(&id.public_key(), &mut guard, RoundId(1))
            .expect_err("key");
        assert!(matches!(err, SignError::BadSignature { .. }));
        let mut s = sign(&id, 1, 1);
        let last = s.payload.len() - 1;
        s.payload[last] ^= 1;
        assert!(matches!(
            s.verify(&id.public_key(), &mut guard, RoundId(1)),
            Err(SignError::BadSignature { .. })
        ));
        let mut s = sign(&id, 1, 1);
        s.seq = 2; // header tampering
        assert!(matches!(
            s.verify(&id.public_key(), &mut guard, RoundId(1)),
            Err(SignError::BadSignature { .. })
        ));
        let mut s = sign(&id, 1, 1);
        s.signature.truncate(10);
        assert!(matches!(
            s.verify(&id.public_key(), &mut guard, RoundId(1)),
            Err(SignError::BadSignature { .. })
        ));
        assert_eq!(guard.last_seq(&alice()), None);
        assert!(sign(&id, 1, 1).verify(&id.public_key(), &mut guard, RoundId(1)).is_ok());
    }

    #[test]
    fn signature_for_one_domain_does_not_verify_as_another() {
        let id = SigningIdentity::from_seed([1; 32]);
        let s = sign(&id, 1, 1);
        // Same bytes, reinterpreted as a Report: the domain differs so the signature fails.
        let as_report: Signed<Report> = Signed {
            signer: s.signer.clone(),
            federation: s.federation.clone(),
            round: s.round,
            seq: s.seq,
            payload: s.payload.clone(),
            signature: s.signature.clone(),
            _kind: PhantomData,
        };
        assert!(matches!(
            as_report.verify_offline(&id.public_key(), &fed()),
            Err(SignError::BadSignature { .. })
        ));
    }

    #[test]
    fn envelope_survives_the_wire_and_offline_reverification_matches_signing_bytes() {
        use crate::wire::frame::{decode_frame, encode_frame, FrameKind};
        let id = SigningIdentity::from_seed([3; 32]);
        let s = sign(&id, 4, 7);
        let frame = encode_frame(FrameKind(1), &s).expect("encode");
        let back: Signed<Labels> = decode_frame(&frame, 1 << 20).expect("decode").value;
        // An auditor recomputes the signed bytes with the public helper.
        let msg = signing_bytes(
            Labels::DOMAIN,
            &back.federation,
            back.round,
            back.seq,
            &back.payload_digest(),
        );
        assert!(id.public_key().verify_strict(&msg, &back.signature));
        assert!(back.verify_offline(&id.public_key(), &fed()).is_ok());
    }

    #[test]
    fn sequence_counter_increments() {
        let mut c = SequenceCounter::new(5);
        assert_eq!((c.next_seq(), c.next_seq()), (5, 6));
    }
}
