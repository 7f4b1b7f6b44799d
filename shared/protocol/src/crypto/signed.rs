//! Domain-separated signed envelopes: `Signed<T>` travels, only `Verified<T>` comes out of verification.
//!
//! The signature covers [`envelope_signing_bytes`]: a fixed context string, the message kind's domain tag,
//! the signer's identity, the federation, the round, the sender's sequence number and the SHA-256 of the
//! exact payload bytes that travel in the envelope. Verification first checks that the envelope names the
//! identity the caller authenticated (the connection's participant), then hashes the bytes as received
//! (never a re-encoding), checks with `verify_strict`, and only then decodes the payload. It changes no
//! state: a [`ReplayGuard`] rejects old sequence numbers and numbers implausibly far ahead, and records
//! a sequence number only when the caller calls [`ReplayGuard::accept`] after the whole message was
//! accepted, so a message that is refused for any reason cannot move the guard. The layout is in
//! docs/protocol.md ("Signed envelope"); why the signer is inside the signed bytes is in docs/security.md
//! ("Message authentication").

use super::ids::{Digest, FederationId, ParticipantId, RoundId};
use super::keys::{PublicKey, SigningIdentity, SIGNATURE_LEN};
use crate::codec::{decode_payload, encode_payload, CodecError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;

/// Context string that opens every envelope's signed bytes (protocol 3 and later); bump the suffix if the
/// layout ever changes.
pub const SIGNING_CONTEXT: &[u8] = b"fedistill/signed/v2";
/// Context string of the earlier layout without the signer: operator-signed documents (the roster) use it,
/// and auditors accept it for envelopes logged by protocol version 2 coordinators.
pub const SIGNING_CONTEXT_V1: &[u8] = b"fedistill/signed/v1";
/// How far ahead of the verifier's wall clock a sequence number may be, in microseconds (senders number
/// their messages with the wall clock in microseconds): one hour of clock skew.
pub const MAX_SEQ_AHEAD_MICROS: u64 = 3_600_000_000;

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
    /// The envelope names a signer other than the identity the verifier authenticated (for example the
    /// participant of the mutually authenticated connection it arrived on).
    #[error("envelope names signer {claimed}, but the message arrived from {authenticated}")]
    SignerMismatch {
        /// The identity the verifier authenticated.
        authenticated: Signer,
        /// The signer named in the envelope.
        claimed: Signer,
    },
    /// The sequence number is implausibly far ahead (senders number messages with their wall clock).
    #[error("sequence number {seq} from {signer} is more than an hour ahead of this clock ({ceiling})")]
    SeqTooFarAhead {
        /// Signer of the envelope.
        signer: Signer,
        /// Sequence number in the envelope.
        seq: u64,
        /// Highest sequence number the guard accepts now.
        ceiling: u64,
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
    Payload(CodecError),
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

impl Signer {
    /// The signer's tag and name as they enter [`envelope_signing_bytes`]: tag 0 and an empty name for the
    /// coordinator, tag 1 and the participant id for a participant.
    fn signing_parts(&self) -> (u8, &str) {
        match self {
            Signer::Coordinator => (0, ""),
            Signer::Participant(p) => (1, p.as_str()),
        }
    }
}

/// Appends `u16 BE len | bytes`, truncating at `u16::MAX` (domains are short literals; federation and
/// participant ids are at most 64 bytes, so nothing real is ever truncated).
fn push_short(out: &mut Vec<u8>, bytes: &[u8]) {
    let b = &bytes[..bytes.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(b.len() as u16).to_be_bytes());
    out.extend_from_slice(b);
}

/// The exact bytes an envelope's ed25519 signature covers (public so auditors can re-verify offline):
///
/// `SIGNING_CONTEXT | u16 BE len | domain | signer tag u8 | u16 BE len | signer name | u16 BE len |
/// federation | round u64 BE | seq u64 BE | digest[32]`, where the tag is 0 for the coordinator (empty
/// name) and 1 for a participant (its id).
pub fn envelope_signing_bytes(
    domain: &str,
    signer: &Signer,
    federation: &FederationId,
    round: RoundId,
    seq: u64,
    payload_digest: &Digest,
) -> Vec<u8> {
    let (tag, name) = signer.signing_parts();
    let mut out = Vec::with_capacity(SIGNING_CONTEXT.len() + 7 + domain.len() + name.len() + 64 + 16 + 32);
    out.extend_from_slice(SIGNING_CONTEXT);
    push_short(&mut out, domain.as_bytes());
    out.push(tag);
    push_short(&mut out, name.as_bytes());
    push_short(&mut out, federation.as_str().as_bytes());
    out.extend_from_slice(&round.0.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&payload_digest.0);
    out
}

/// The earlier layout without the signer (`SIGNING_CONTEXT_V1`), for operator-signed documents (the
/// roster, whose only signer is the operator key) and for auditors re-verifying envelopes that a
/// protocol version 2 coordinator logged:
///
/// `SIGNING_CONTEXT_V1 | u16 BE len | domain | u16 BE len | federation | round u64 BE | seq u64 BE | digest[32]`.
pub fn signing_bytes(
    domain: &str,
    federation: &FederationId,
    round: RoundId,
    seq: u64,
    payload_digest: &Digest,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(SIGNING_CONTEXT_V1.len() + 4 + domain.len() + 64 + 16 + 32);
    out.extend_from_slice(SIGNING_CONTEXT_V1);
    push_short(&mut out, domain.as_bytes());
    push_short(&mut out, federation.as_str().as_bytes());
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
    #[serde(with = "crate::codec::bytes")]
    pub payload: Vec<u8>,
    /// ed25519 signature over [`envelope_signing_bytes`].
    #[serde(with = "crate::codec::bytes")]
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

    /// An envelope put back together from its parts, exactly as it was received, by a store that kept the
    /// payload apart from the rest (the coordinator's stored contribution, in the protocol layer above).
    /// It is not verified: only [`Signed::verify`] and [`Signed::verify_offline`] make a [`Verified`].
    pub fn from_parts(
        signer: Signer,
        federation: FederationId,
        round: RoundId,
        seq: u64,
        payload: Vec<u8>,
        signature: Vec<u8>,
    ) -> Self {
        Self {
            signer,
            federation,
            round,
            seq,
            payload,
            signature,
            _kind: PhantomData,
        }
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
            .sign_raw(&envelope_signing_bytes(
                T::DOMAIN,
                &signer,
                &federation,
                round,
                seq,
                &digest,
            ))
            .to_vec();
        Ok(Self::from_parts(signer, federation, round, seq, payload, signature))
    }

    fn check_signature(&self, key: &PublicKey) -> Result<Digest, SignError> {
        let digest = self.payload_digest();
        let msg = envelope_signing_bytes(T::DOMAIN, &self.signer, &self.federation, self.round, self.seq, &digest);
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

    /// Online verification, in this order: the envelope must name `authenticated` (the identity the
    /// caller established, e.g. the connection's participant), federation and round must match, the
    /// sequence number must be fresh under `guard` (above the last accepted, not implausibly far ahead),
    /// the signature must verify under `key` (the roster's key for `authenticated`), and the payload must
    /// decode. Nothing changes state: once the caller has accepted the whole message it records the
    /// sequence number with [`ReplayGuard::accept`].
    pub fn verify(
        self,
        key: &PublicKey,
        authenticated: &Signer,
        guard: &ReplayGuard,
        expected_round: RoundId,
    ) -> Result<Verified<T>, SignError> {
        self.check_context(authenticated, guard, expected_round)?;
        self.into_verified(key)
    }

    /// The first half of [`Signed::verify`], which needs no state: the signature under `key` (the roster's
    /// key of the identity the caller authenticated) and the payload's decoding. A receiver can run it in
    /// parallel, per connection, and finish with [`SignatureChecked::verify`] where its state lives.
    pub fn verify_signature(self, key: &PublicKey) -> Result<SignatureChecked<T>, SignError> {
        Ok(SignatureChecked {
            verified: self.into_verified(key)?,
            key: *key,
        })
    }

    /// The signature under `key` and the payload's decoding: the checks every verification shares.
    fn into_verified(self, key: &PublicKey) -> Result<Verified<T>, SignError> {
        let digest = self.check_signature(key)?;
        let value = decode_payload(&self.payload).map_err(SignError::Payload)?;
        Ok(Verified {
            value,
            digest,
            envelope: self,
        })
    }

    /// The checks of [`Signed::verify`] against the receiver's context: the envelope names `authenticated`,
    /// the federation and round are the receiver's, and the sequence number is fresh under `guard`.
    fn check_context(
        &self,
        authenticated: &Signer,
        guard: &ReplayGuard,
        expected_round: RoundId,
    ) -> Result<(), SignError> {
        if &self.signer != authenticated {
            return Err(SignError::SignerMismatch {
                authenticated: authenticated.clone(),
                claimed: self.signer.clone(),
            });
        }
        if self.federation != guard.federation {
            return Err(SignError::WrongFederation {
                expected: guard.federation.clone(),
                got: self.federation.clone(),
            });
        }
        if self.round != expected_round {
            return Err(SignError::WrongRound {
                expected: expected_round,
                got: self.round,
            });
        }
        guard.check(&self.signer, self.seq)
    }

    /// Offline verification (auditors re-checking a log): federation and signature, no replay state.
    pub fn verify_offline(self, key: &PublicKey, federation: &FederationId) -> Result<Verified<T>, SignError> {
        if &self.federation != federation {
            return Err(SignError::WrongFederation {
                expected: federation.clone(),
                got: self.federation,
            });
        }
        self.into_verified(key)
    }
}

/// A message whose signature verified under [`SignatureChecked::key`] and whose payload decoded
/// ([`Signed::verify_signature`]), not yet checked against the receiver's context. Only
/// [`SignatureChecked::verify`] turns it into a [`Verified`] message.
#[derive(Debug)]
pub struct SignatureChecked<T> {
    verified: Verified<T>,
    key: PublicKey,
}

impl<T: SignedMessage> SignatureChecked<T> {
    /// The key the signature verified under.
    pub fn key(&self) -> &PublicKey {
        &self.key
    }

    /// The envelope as received.
    pub fn envelope(&self) -> &Signed<T> {
        &self.verified.envelope
    }

    /// The rest of [`Signed::verify`]: the envelope must name `authenticated` (whose roster key the caller
    /// checked the signature under), the federation and round must match, and the sequence number must be
    /// fresh under `guard`. Nothing changes state (see [`ReplayGuard::accept`]).
    pub fn verify(
        self,
        authenticated: &Signer,
        guard: &ReplayGuard,
        expected_round: RoundId,
    ) -> Result<Verified<T>, SignError> {
        self.verified
            .envelope
            .check_context(authenticated, guard, expected_round)?;
        Ok(self.verified)
    }
}

/// The signer and sequence number of a verified envelope, to record in a [`ReplayGuard`] once the message
/// is accepted. Only [`Verified::fresh`] makes one, so only an authenticated envelope moves a guard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fresh {
    signer: Signer,
    seq: u64,
}

/// A message whose signature, federation, round and freshness have been checked. Only
/// [`Signed::verify`], [`SignatureChecked::verify`] and [`Signed::verify_offline`] construct it.
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
    /// What [`ReplayGuard::accept`] records once the caller accepted the message.
    pub fn fresh(&self) -> Fresh {
        Fresh {
            signer: self.envelope.signer.clone(),
            seq: self.envelope.seq,
        }
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

/// The highest sequence number a [`ReplayGuard`] accepts at the moment of checking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqCeiling {
    /// Senders number messages with their wall clock in microseconds: at most
    /// [`MAX_SEQ_AHEAD_MICROS`] ahead of this machine's clock (what the coordinator and participants use).
    WallClock,
    /// A fixed ceiling (simulations on a virtual clock, tests).
    Fixed(u64),
}

impl SeqCeiling {
    fn now(self) -> u64 {
        match self {
            SeqCeiling::WallClock => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros() as u64)
                .unwrap_or(0)
                .saturating_add(MAX_SEQ_AHEAD_MICROS),
            SeqCeiling::Fixed(c) => c,
        }
    }
}

/// Per-federation replay state: the highest sequence number accepted from each signer.
#[derive(Debug, Clone)]
pub struct ReplayGuard {
    federation: FederationId,
    last_seq: HashMap<Signer, u64>,
    ceiling: SeqCeiling,
}

impl ReplayGuard {
    /// An empty guard for `federation` whose senders number messages with the wall clock.
    pub fn new(federation: FederationId) -> Self {
        Self::with_state(federation, std::iter::empty())
    }

    /// A guard restored from persisted high-water marks (e.g. after a coordinator restart).
    pub fn with_state(federation: FederationId, last_seq: impl IntoIterator<Item = (Signer, u64)>) -> Self {
        Self {
            federation,
            last_seq: last_seq.into_iter().collect(),
            ceiling: SeqCeiling::WallClock,
        }
    }

    /// The same guard with another ceiling for sequence numbers.
    pub fn with_ceiling(mut self, ceiling: SeqCeiling) -> Self {
        self.ceiling = ceiling;
        self
    }

    /// Records the sequence number of a message the caller has accepted in full ([`Verified::fresh`]).
    /// Call it only after every check of the message (state machine, storage) passed, so a refused
    /// message never moves the guard.
    pub fn accept(&mut self, fresh: Fresh) {
        if self.last_seq(&fresh.signer).is_none_or(|last| fresh.seq > last) {
            self.last_seq.insert(fresh.signer, fresh.seq);
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
        if let Some(&last) = self.last_seq.get(signer) {
            if seq <= last {
                return Err(SignError::Replay {
                    signer: signer.clone(),
                    seq,
                    last,
                });
            }
        }
        let ceiling = self.ceiling.now();
        if seq > ceiling {
            return Err(SignError::SeqTooFarAhead {
                signer: signer.clone(),
                seq,
                ceiling,
            });
        }
        Ok(())
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
mod tests;
