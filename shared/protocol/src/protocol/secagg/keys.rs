//! Key material of one round and the symmetric primitives built on it: X25519 agreement, HKDF-SHA256 key
//! derivation bound to the round [`Context`], the ChaCha20 mask generator and ChaCha20-Poly1305 share sealing.
//!
//! Every derived key is `HKDF-SHA256(salt = "fedistill/secagg/v1", ikm, info)` with
//! `info = len(label) || label || len(federation) as u64 LE || federation || round as u64 LE || a as u32 LE ||
//! b as u32 LE`, where `(a, b)` is `(from, to)` for share encryption, `(min(u, v), max(u, v))` for a pairwise
//! mask and `(u, u)` for a self mask. Distinct labels and the context keep every key single-purpose and
//! single-round.

use chacha20::cipher::{KeyIvInit, StreamCipher};
use chacha20::ChaCha20;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::ChaCha20Poly1305;
use hkdf::Hkdf;
use rand::{CryptoRng, SeedableRng};
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::SecAggError;

/// HKDF salt and AAD prefix: the protocol and its version.
const DOMAIN: &[u8] = b"fedistill/secagg/v1";

/// Bytes of the random nonce that leads every share ciphertext.
pub const NONCE_LEN: usize = 12;

/// Bytes of the Poly1305 tag that ends every share ciphertext.
pub const TAG_LEN: usize = 16;

/// Context bound into every key derivation and every share encryption: the federation's id bytes and the round
/// number, so that no key, mask or ciphertext of one round or federation is valid in another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Context<'a> {
    /// The federation's identifier, as bytes the caller fixes (for example its name in UTF-8).
    pub federation: &'a [u8],
    /// The round number.
    pub round: u64,
}

pub use crate::wire::secagg::PublicKeys;

/// A participant's secrets for one round: the X25519 secret keys behind [`PublicKeys`] and the self-mask seed
/// `b`. Fresh every round; the secret keys, the seed and the remembered share-encryption agreements are wiped
/// from memory on drop.
pub struct RoundSecrets {
    enc: StaticSecret,
    mask: StaticSecret,
    self_seed: Zeroizing<[u8; 32]>,
    /// `X25519(enc, peer's enc)` by peer key: sealing shares to a holder and opening that holder's shares use
    /// the same agreement, so the second costs a lookup instead of a scalar multiplication.
    enc_agreements: Agreements,
}

impl Clone for RoundSecrets {
    fn clone(&self) -> Self {
        RoundSecrets {
            enc: self.enc.clone(),
            mask: self.mask.clone(),
            self_seed: self.self_seed.clone(),
            enc_agreements: Agreements::default(),
        }
    }
}

/// Remembered X25519 agreements, each entry `peer public key || shared secret`, wiped on drop. The vector is
/// never left to reallocate (which would free the old buffer unwiped): when full, its entries move to a new,
/// larger zeroizing vector and the old one is wiped as it drops.
#[derive(Default)]
struct Agreements(std::sync::Mutex<Zeroizing<Vec<[u8; 64]>>>);

impl Agreements {
    fn find(&self, peer_public: &[u8; 32]) -> Option<Zeroizing<[u8; 32]>> {
        let held = self.0.lock().ok()?;
        let entry = held.iter().find(|e| e[..32] == peer_public[..])?;
        let mut shared = Zeroizing::new([0u8; 32]);
        shared.copy_from_slice(&entry[32..]);
        Some(shared)
    }

    fn remember(&self, peer_public: &[u8; 32], shared: &[u8; 32]) {
        // A poisoned lock only loses the shortcut.
        let Ok(mut held) = self.0.lock() else { return };
        if held.len() == held.capacity() {
            let mut grown = Zeroizing::new(Vec::with_capacity((2 * held.capacity()).max(16)));
            grown.extend_from_slice(&held);
            *held = grown;
        }
        let mut entry = Zeroizing::new([0u8; 64]);
        entry[..32].copy_from_slice(peer_public);
        entry[32..].copy_from_slice(shared);
        held.push(*entry);
    }
}

/// Where the share-encryption agreement with a peer comes from: a bare secret key computes it, a round's
/// [`RoundSecrets`] computes it once per peer.
pub(crate) trait EncAgreement {
    /// `X25519(own enc secret, peer_public)`, refusing a non-contributory result (see [`agree`]).
    fn enc_agreement(&self, peer_public: &[u8; 32], peer: usize) -> Result<Zeroizing<[u8; 32]>, SecAggError>;
}

impl EncAgreement for StaticSecret {
    fn enc_agreement(&self, peer_public: &[u8; 32], peer: usize) -> Result<Zeroizing<[u8; 32]>, SecAggError> {
        agree(self, peer_public, peer)
    }
}

impl EncAgreement for RoundSecrets {
    fn enc_agreement(&self, peer_public: &[u8; 32], peer: usize) -> Result<Zeroizing<[u8; 32]>, SecAggError> {
        if let Some(shared) = self.enc_agreements.find(peer_public) {
            return Ok(shared);
        }
        let shared = agree(self.enc_secret(), peer_public, peer)?;
        self.enc_agreements.remember(peer_public, &shared);
        Ok(shared)
    }
}

impl RoundSecrets {
    /// Draws both secret keys and the self-mask seed from `rng` (96 bytes, in the order enc, mask, seed).
    /// (rand 0.9's `CryptoRng` has `RngCore` as its supertrait, so this is `RngCore + CryptoRng`.)
    pub fn generate(rng: &mut impl CryptoRng) -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut *bytes);
        let enc = StaticSecret::from(*bytes);
        rng.fill_bytes(&mut *bytes);
        let mask = StaticSecret::from(*bytes);
        let mut self_seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut *self_seed);
        RoundSecrets {
            enc,
            mask,
            self_seed,
            enc_agreements: Agreements::default(),
        }
    }

    /// [`RoundSecrets::generate`] from a ChaCha20 generator seeded with `seed`: the same seed gives the same
    /// secrets (for simulators and for a driver that persists one seed per round instead of three keys).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        RoundSecrets::generate(&mut rand_chacha::ChaCha20Rng::from_seed(seed))
    }

    /// The public keys to advertise.
    pub fn public(&self) -> PublicKeys {
        PublicKeys {
            enc: PublicKey::from(&self.enc).to_bytes(),
            mask: PublicKey::from(&self.mask).to_bytes(),
        }
    }

    /// The self-mask seed `b` (secret-shared; revealed only for survivors).
    pub fn self_seed(&self) -> [u8; 32] {
        *self.self_seed
    }

    /// The mask secret key's bytes `s` (secret-shared; revealed only for dropped participants).
    pub fn mask_secret_bytes(&self) -> [u8; 32] {
        self.mask.to_bytes()
    }

    pub(crate) fn enc_secret(&self) -> &StaticSecret {
        &self.enc
    }

    pub(crate) fn mask_secret(&self) -> &StaticSecret {
        &self.mask
    }
}

impl std::fmt::Debug for RoundSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoundSecrets")
            .field("public", &self.public())
            .finish_non_exhaustive()
    }
}

/// What a derived key is for; each purpose has its own HKDF label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// Key of the AEAD that carries shares from `a` to `b`.
    ShareEncryption,
    /// Seed of the pairwise mask between `a < b`.
    PairwiseMask,
    /// Seed of the self mask of `a` (= `b`).
    SelfMask,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::ShareEncryption => b"share-encryption",
            Purpose::PairwiseMask => b"pairwise-mask",
            Purpose::SelfMask => b"self-mask",
        }
    }
}

/// The context-bound encoding of `(purpose, ctx, a, b)` used as HKDF info and (for shares) AEAD associated data.
fn binding(purpose: Purpose, ctx: &Context, a: usize, b: usize) -> Vec<u8> {
    let label = purpose.label();
    let mut info = Vec::with_capacity(1 + label.len() + 8 + ctx.federation.len() + 16);
    info.push(label.len() as u8);
    info.extend_from_slice(label);
    info.extend_from_slice(&(ctx.federation.len() as u64).to_le_bytes());
    info.extend_from_slice(ctx.federation);
    info.extend_from_slice(&ctx.round.to_le_bytes());
    info.extend_from_slice(&(a as u32).to_le_bytes());
    info.extend_from_slice(&(b as u32).to_le_bytes());
    info
}

/// `HKDF-SHA256(salt = DOMAIN, ikm, info = binding(purpose, ctx, a, b))`, 32 bytes.
pub(crate) fn derive_key(
    purpose: Purpose,
    ikm: &[u8],
    ctx: &Context,
    a: usize,
    b: usize,
) -> Result<Zeroizing<[u8; 32]>, SecAggError> {
    let hk = Hkdf::<Sha256>::new(Some(DOMAIN), ikm);
    let mut okm = Zeroizing::new([0u8; 32]);
    hk.expand(&binding(purpose, ctx, a, b), &mut *okm)
        .map_err(|_| SecAggError::KeyDerivation)?;
    Ok(okm)
}

/// X25519 of `secret` with `peer`'s public key, refusing the all-zero output of a low-order point.
pub(crate) fn agree(
    secret: &StaticSecret,
    peer_public: &[u8; 32],
    peer: usize,
) -> Result<Zeroizing<[u8; 32]>, SecAggError> {
    let shared = secret.diffie_hellman(&PublicKey::from(*peer_public));
    if !shared.was_contributory() {
        return Err(SecAggError::NonContributoryKey { peer });
    }
    Ok(Zeroizing::new(shared.to_bytes()))
}

/// The pairwise mask seed `s_uv` from `u`'s mask secret and `v`'s mask public key (symmetric in `u`, `v`).
pub(crate) fn pairwise_seed(
    ctx: &Context,
    mask_secret_u: &StaticSecret,
    mask_public_v: &[u8; 32],
    u: usize,
    v: usize,
) -> Result<Zeroizing<[u8; 32]>, SecAggError> {
    let shared = agree(mask_secret_u, mask_public_v, v)?;
    derive_key(Purpose::PairwiseMask, &*shared, ctx, u.min(v), u.max(v))
}

/// The self mask key of `u` from its self seed `b_u`.
pub(crate) fn self_mask_key(ctx: &Context, self_seed: &[u8; 32], u: usize) -> Result<Zeroizing<[u8; 32]>, SecAggError> {
    derive_key(Purpose::SelfMask, self_seed, ctx, u, u)
}

/// Adds (`add`) or subtracts the mask `PRG(key)` to `acc`, mod 2^64.
///
/// `PRG(key)` is the ChaCha20 keystream (RFC 8439: 96-bit all-zero nonce, block counter from 0) read as
/// consecutive little-endian `u64`s. Every key is used for exactly one mask stream, so the fixed nonce is safe.
pub(crate) fn apply_mask(acc: &mut [u64], key: &[u8; 32], add: bool) -> Result<(), SecAggError> {
    const WORDS: usize = 64;
    let mut cipher = ChaCha20::new(&(*key).into(), &[0u8; 12].into());
    let mut buf = Zeroizing::new([0u8; WORDS * 8]);
    let len = acc.len();
    for chunk in acc.chunks_mut(WORDS) {
        let bytes = &mut buf[..chunk.len() * 8];
        bytes.fill(0);
        cipher
            .try_apply_keystream(bytes)
            .map_err(|_| SecAggError::MaskTooLong { len })?;
        for (a, word) in chunk.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut le = [0u8; 8];
            le.copy_from_slice(word);
            let m = u64::from_le_bytes(le);
            *a = if add { a.wrapping_add(m) } else { a.wrapping_sub(m) };
        }
    }
    Ok(())
}

/// The key that encrypts shares from `from` to `to`: HKDF of `X25519(enc_secret_from, enc_public_to)`, bound
/// to the context and the ordered pair (either end computes it).
pub(crate) fn share_key<A: EncAgreement + ?Sized>(
    ctx: &Context,
    own_enc_secret: &A,
    peer_enc_public: &[u8; 32],
    peer: usize,
    from: usize,
    to: usize,
) -> Result<Zeroizing<[u8; 32]>, SecAggError> {
    let shared = own_enc_secret.enc_agreement(peer_enc_public, peer)?;
    derive_key(Purpose::ShareEncryption, &*shared, ctx, from, to)
}

/// Associated data of the share ciphertext from `from` to `to`.
fn share_aad(ctx: &Context, from: usize, to: usize) -> Vec<u8> {
    [DOMAIN, &binding(Purpose::ShareEncryption, ctx, from, to)].concat()
}

/// `nonce || ChaCha20-Poly1305(key, nonce, aad = share_aad(ctx, from, to), plaintext)`.
pub(crate) fn seal(
    ctx: &Context,
    key: &[u8; 32],
    nonce: [u8; NONCE_LEN],
    from: usize,
    to: usize,
    plaintext: &[u8],
) -> Result<Vec<u8>, SecAggError> {
    let aead = ChaCha20Poly1305::new(&(*key).into());
    let aad = share_aad(ctx, from, to);
    let sealed = aead
        .encrypt(
            &nonce.into(),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .map_err(|_| SecAggError::Encryption)?;
    Ok([nonce.as_slice(), &sealed].concat())
}

/// Inverse of [`seal`]; any failure (short input, wrong key, context, direction or tampering) is
/// [`SecAggError::Decryption`] naming `from`.
pub(crate) fn open(
    ctx: &Context,
    key: &[u8; 32],
    from: usize,
    to: usize,
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, SecAggError> {
    let fail = SecAggError::Decryption { from: from as u32 };
    if ciphertext.len() < NONCE_LEN + TAG_LEN {
        return Err(fail);
    }
    let (nonce, body) = ciphertext.split_at(NONCE_LEN);
    let mut n = [0u8; NONCE_LEN];
    n.copy_from_slice(nonce);
    let aead = ChaCha20Poly1305::new(&(*key).into());
    let aad = share_aad(ctx, from, to);
    aead.decrypt(&n.into(), Payload { msg: body, aad: &aad })
        .map(Zeroizing::new)
        .map_err(|_| fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context<'static> {
        Context {
            federation: b"fed",
            round: 7,
        }
    }

    /// RFC 8439 appendix A.1, test vector #1: the ChaCha20 block with an all-zero key, all-zero nonce and block
    /// counter 0 begins `76 b8 e0 ad a0 f1 3d 90 40 5d 6a e5 53 86 bd 28`.
    #[test]
    fn the_mask_generator_is_the_rfc_8439_chacha20_keystream() {
        let mut acc = vec![0u64; 2];
        apply_mask(&mut acc, &[0; 32], true).unwrap();
        assert_eq!(
            acc[0],
            u64::from_le_bytes([0x76, 0xb8, 0xe0, 0xad, 0xa0, 0xf1, 0x3d, 0x90])
        );
        assert_eq!(
            acc[1],
            u64::from_le_bytes([0x40, 0x5d, 0x6a, 0xe5, 0x53, 0x86, 0xbd, 0x28])
        );
        // Subtracting the same stream cancels it, across the chunk boundary too.
        let mut long = (0..200u64).collect::<Vec<_>>();
        apply_mask(&mut long, &[9; 32], true).unwrap();
        assert_ne!(long[150], 150);
        apply_mask(&mut long, &[9; 32], false).unwrap();
        assert_eq!(long, (0..200u64).collect::<Vec<_>>());
        // The stream is a prefix-stable function of the key: a shorter vector gets the same first words.
        let mut short = vec![0u64; 70];
        let mut longer = vec![0u64; 130];
        apply_mask(&mut short, &[4; 32], true).unwrap();
        apply_mask(&mut longer, &[4; 32], true).unwrap();
        assert_eq!(short[..], longer[..70]);
    }

    #[test]
    fn pairwise_seeds_agree_on_both_ends_and_depend_on_the_context() {
        let a = RoundSecrets::from_seed([1; 32]);
        let b = RoundSecrets::from_seed([2; 32]);
        let ab = pairwise_seed(&ctx(), a.mask_secret(), &b.public().mask, 0, 3).unwrap();
        let ba = pairwise_seed(&ctx(), b.mask_secret(), &a.public().mask, 3, 0).unwrap();
        assert_eq!(*ab, *ba);
        let other_round = Context { round: 8, ..ctx() };
        assert_ne!(
            *ab,
            *pairwise_seed(&other_round, a.mask_secret(), &b.public().mask, 0, 3).unwrap()
        );
        let other_fed = Context {
            federation: b"fee",
            ..ctx()
        };
        assert_ne!(
            *ab,
            *pairwise_seed(&other_fed, a.mask_secret(), &b.public().mask, 0, 3).unwrap()
        );
        assert_ne!(
            *ab,
            *pairwise_seed(&ctx(), a.mask_secret(), &b.public().mask, 0, 4).unwrap()
        );
    }

    #[test]
    fn round_secrets_remember_share_agreements_without_changing_the_keys() {
        let a = RoundSecrets::from_seed([1; 32]);
        let peers: Vec<PublicKeys> = (2..40u8).map(|i| RoundSecrets::from_seed([i; 32]).public()).collect();
        for round in 0..2 {
            for (i, p) in peers.iter().enumerate() {
                // Sealing to and opening from each peer, twice over (the second pass from memory, past the
                // vector's growth): the same keys as from the bare secret key.
                for (from, to) in [(0, i + 1), (i + 1, 0)] {
                    let remembered = share_key(&ctx(), &a, &p.enc, i + 1, from, to).unwrap();
                    let computed = share_key(&ctx(), a.enc_secret(), &p.enc, i + 1, from, to).unwrap();
                    assert_eq!(*remembered, *computed, "pass {round}, peer {i}");
                }
            }
        }
        assert_eq!(a.enc_agreements.0.lock().unwrap().len(), peers.len());
        // A clone starts without the remembered agreements, and refusals are never remembered.
        assert!(a.clone().enc_agreements.0.lock().unwrap().is_empty());
        assert!(share_key(&ctx(), &a, &[0; 32], 7, 0, 7).is_err());
        assert!(share_key(&ctx(), &a, &[0; 32], 7, 0, 7).is_err());
        assert_eq!(a.enc_agreements.0.lock().unwrap().len(), peers.len());
    }

    #[test]
    fn low_order_public_keys_are_refused() {
        let a = RoundSecrets::from_seed([1; 32]);
        assert_eq!(
            pairwise_seed(&ctx(), a.mask_secret(), &[0; 32], 0, 5).unwrap_err(),
            SecAggError::NonContributoryKey { peer: 5 }
        );
    }

    #[test]
    fn sealed_shares_open_only_with_the_same_key_direction_and_context() {
        let key = [5u8; 32];
        let sealed = seal(&ctx(), &key, [1; NONCE_LEN], 2, 3, b"share bytes").unwrap();
        assert_eq!(sealed.len(), NONCE_LEN + 11 + TAG_LEN);
        assert_eq!(&open(&ctx(), &key, 2, 3, &sealed).unwrap()[..], b"share bytes");
        let fail = Err(SecAggError::Decryption { from: 2 });
        assert_eq!(open(&ctx(), &[6; 32], 2, 3, &sealed).map(|p| p.to_vec()), fail);
        assert_eq!(open(&ctx(), &key, 2, 4, &sealed).map(|p| p.to_vec()), fail);
        assert_eq!(
            open(&Context { round: 8, ..ctx() }, &key, 2, 3, &sealed).map(|p| p.to_vec()),
            fail
        );
        assert_eq!(open(&ctx(), &key, 2, 3, &sealed[..20]).map(|p| p.to_vec()), fail);
        let mut tampered = sealed.clone();
        tampered[NONCE_LEN + 3] ^= 1;
        assert_eq!(open(&ctx(), &key, 2, 3, &tampered).map(|p| p.to_vec()), fail);
    }

    #[test]
    fn round_secrets_are_reproducible_from_a_seed_and_debug_hides_them() {
        let a = RoundSecrets::from_seed([3; 32]);
        let b = RoundSecrets::from_seed([3; 32]);
        assert_eq!(a.public(), b.public());
        assert_eq!(a.self_seed(), b.self_seed());
        assert_ne!(a.public(), RoundSecrets::from_seed([4; 32]).public());
        assert_ne!(a.public().enc, a.public().mask);
        let shown = format!("{a:?}");
        assert!(!shown.contains(&format!("{:?}", a.self_seed())), "{shown}");
        // The mask secret's bytes rebuild the same key pair (what unmasking relies on).
        let rebuilt = StaticSecret::from(a.mask_secret_bytes());
        assert_eq!(PublicKey::from(&rebuilt).to_bytes(), a.public().mask);
    }
}
