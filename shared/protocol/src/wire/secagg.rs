//! Secure aggregation's messages (Bonawitz et al. 2017, with the SecAgg+ graph of Bell et al. 2020): the
//! per-round key adverts, the encrypted Shamir shares relayed by the coordinator, the unmasking request and
//! the revealed shares. The masked input itself travels as [`super::messages::SoftLabels`] in the
//! `masked_u64` encoding. What the fields mean, and the checks each side makes, is implemented in
//! `protocol::secagg`; the flow is in docs/protocol.md ("Secure aggregation").

use serde::{Deserialize, Serialize};

use crate::crypto::{Digest, RoundId, Signed, SignedMessage};

/// Most participants in one secure round: Shamir shares over GF(2^8) have x-coordinates 1..=255.
pub const MAX_SECURE_PARTICIPANTS: usize = 255;

/// A round's secure-aggregation parameters, announced in its [`super::messages::RoundOpen`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecAggParams {
    /// Shares needed to rebuild a secret (t of the neighbourhood).
    pub threshold: u32,
    /// Neighbourhood size of the SecAgg+ graph; 0 = everyone is everyone's neighbour (classic SecAgg).
    pub neighbours: u32,
    /// Variance of the discrete Gaussian noise each participant adds to its fixed-point input, in squared
    /// fixed-point units (0 = no noise): the sum carries `participants x` this.
    pub noise_sigma2: u64,
}

/// A participant's two x25519 public keys for one round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PublicKeys {
    /// Key agreement for encrypting shares to this participant.
    pub enc: [u8; 32],
    /// Key agreement for the pairwise mask seeds.
    pub mask: [u8; 32],
}

/// A participant's signed key advert for a round (its ed25519 identity signs the x25519 keys).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecAggKeys {
    /// The round.
    pub round: RoundId,
    /// The round's public keys.
    pub keys: PublicKeys,
}

impl SignedMessage for SecAggKeys {
    const DOMAIN: &'static str = "fedistill/secagg-keys";
}

/// The coordinator's list of the round's key adverts (U1), each still signed by its participant; a
/// participant's index in the round is its position here (adverts sorted by participant id).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecAggRoster {
    /// The round.
    pub round: RoundId,
    /// The adverts, in participant-id order.
    pub adverts: Vec<Signed<SecAggKeys>>,
    /// SHA-256 of the operator-signed roster file the coordinator admits participants by; a participant
    /// checks the adverts' signatures against that roster (fetched with `GetRoster`).
    pub roster_digest: Digest,
}

impl SignedMessage for SecAggRoster {
    const DOMAIN: &'static str = "fedistill/secagg-roster";
}

/// One Shamir share pair (self-mask seed and mask secret of `from`) encrypted for `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedShares {
    /// Index of the owner of the shared secrets.
    pub from: u32,
    /// Index of the holder the shares are encrypted for.
    pub to: u32,
    /// AEAD ciphertext.
    #[serde(with = "crate::wire::frame::bytes")]
    pub ciphertext: Vec<u8>,
}

/// A participant's encrypted shares for its neighbours.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecAggShares {
    /// The round.
    pub round: RoundId,
    /// One entry per neighbour.
    pub shares: Vec<EncryptedShares>,
}

impl SignedMessage for SecAggShares {
    const DOMAIN: &'static str = "fedistill/secagg-shares";
}

/// The coordinator relays to one participant the shares its neighbours encrypted for it; the senders are
/// the round's U2 (those whose shares reached the coordinator), listed in full.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecAggDelivery {
    /// The round.
    pub round: RoundId,
    /// Indices of every participant whose shares the coordinator received (U2), ascending.
    pub senders: Vec<u32>,
    /// The shares addressed to this participant.
    pub shares: Vec<EncryptedShares>,
}

impl SignedMessage for SecAggDelivery {
    const DOMAIN: &'static str = "fedistill/secagg-delivery";
}

/// The coordinator asks the survivors to reveal shares: of the self-mask seed of each survivor, and of the
/// mask secret of each participant that shared its keys but sent no masked input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecAggUnmask {
    /// The round.
    pub round: RoundId,
    /// Indices whose masked inputs arrived (U3), ascending.
    pub survivors: Vec<u32>,
    /// Indices in U2 whose masked inputs did not arrive, ascending.
    pub dropped: Vec<u32>,
}

impl SignedMessage for SecAggUnmask {
    const DOMAIN: &'static str = "fedistill/secagg-unmask";
}

/// Which secret a revealed share belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ShareKind {
    /// The owner's self-mask seed (revealed for survivors).
    SelfSeed,
    /// The owner's mask key-agreement secret (revealed for dropped participants).
    MaskSecret,
}

/// One decrypted share a holder reveals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevealedShare {
    /// Index of the holder (the Shamir x-coordinate is `holder + 1`).
    pub holder: u32,
    /// Index of the secret's owner.
    pub owner: u32,
    /// Which of the owner's secrets.
    pub kind: ShareKind,
    /// The share's bytes.
    #[serde(with = "crate::wire::frame::bytes")]
    pub share: Vec<u8>,
}

/// A participant's answer to [`SecAggUnmask`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecAggReveal {
    /// The round.
    pub round: RoundId,
    /// The shares revealed.
    pub shares: Vec<RevealedShare>,
}

impl SignedMessage for SecAggReveal {
    const DOMAIN: &'static str = "fedistill/secagg-reveal";
}
