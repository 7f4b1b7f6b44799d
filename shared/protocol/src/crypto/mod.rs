//! ed25519 identities and domain-separated signed envelopes (`Signed<T>` -> `Verified<T>`).

pub mod ids;
pub mod keys;
pub mod signed;

pub use ids::{validate_name, Digest, FederationId, HexError, NameError, ParticipantId, RoundId};
pub use keys::{KeyError, PublicKey, SigningIdentity, SIGNATURE_LEN};
pub use signed::{
    envelope_signing_bytes, signing_bytes, Fresh, ReplayGuard, SeqCeiling, SequenceCounter, SignError,
    SignatureChecked, Signed, SignedMessage, Signer, Verified, MAX_SEQ_AHEAD_MICROS, SIGNING_CONTEXT,
    SIGNING_CONTEXT_V1,
};
