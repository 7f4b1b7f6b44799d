//! ed25519 identities and domain-separated signed envelopes (`Signed<T>` -> `Verified<T>`).

pub mod ids;
pub mod keys;
pub mod signed;

pub use ids::{validate_name, Digest, FederationId, HexError, NameError, ParticipantId, RoundId};
pub use keys::{KeyError, PublicKey, SigningIdentity, SIGNATURE_LEN};
pub use signed::{
    signing_bytes, ReplayGuard, SequenceCounter, SignError, Signed, SignedMessage, Signer, Verified, SIGNING_CONTEXT,
};
