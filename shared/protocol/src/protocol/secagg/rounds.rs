//! The steps of a secure-aggregation round as pure functions: share keys, open shares, masked input, reveal
//! and (on the coordinator or an auditor) unmask.
//!
//! Participant `u`'s masked input is, mod 2^64,
//!
//! ```text
//! y_u = x_u + PRG(b_u) + sum_{v in U2 ∩ N(u), v > u} PRG(s_uv) - sum_{v in U2 ∩ N(u), v < u} PRG(s_uv)
//! ```
//!
//! Pairwise masks of two survivors cancel in the sum; unmasking removes the self masks of survivors (from
//! their reconstructed `b`) and the pairwise masks that survivors share with dropped participants (from the
//! dropped participants' reconstructed mask secrets).

use std::collections::{BTreeMap, BTreeSet};

use chacha20::rand_core::SeedableRng as _;
use rand::CryptoRng;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, Zeroizing};

use super::keys::{apply_mask, open, pairwise_seed, seal, self_mask_key, share_key, NONCE_LEN};
use super::shamir::{self, reconstruct, x_coordinate, SHARE_LEN};
use super::{Context, Graph, PublicKeys, RoundSecrets, SecAggError};

/// Bytes of a decrypted share message: the self-seed share, then the mask-secret share.
pub const SHARE_PLAINTEXT_LEN: usize = 2 * SHARE_LEN;

pub use crate::wire::secagg::{EncryptedShares, RevealedShare, ShareKind};

/// One owner's pair of shares held by a holder; wiped on drop.
#[derive(Clone)]
struct HeldPair {
    self_seed: [u8; SHARE_LEN],
    mask_secret: [u8; SHARE_LEN],
}

impl Drop for HeldPair {
    fn drop(&mut self) {
        self.self_seed.zeroize();
        self.mask_secret.zeroize();
    }
}

/// The decrypted shares a holder keeps until unmasking, by owner index (its own included).
#[derive(Clone)]
pub struct HeldShares {
    holder: usize,
    shares: BTreeMap<usize, HeldPair>,
}

impl HeldShares {
    /// The holder these shares were opened by.
    pub fn holder(&self) -> usize {
        self.holder
    }

    /// Owners whose shares are held, in increasing order: the set this holder reports as received (its view
    /// of U2).
    pub fn owners(&self) -> Vec<usize> {
        self.shares.keys().copied().collect()
    }

    /// Whether a share pair of `owner` is held.
    pub fn contains(&self, owner: usize) -> bool {
        self.shares.contains_key(&owner)
    }

    /// Number of owners whose shares are held.
    pub fn len(&self) -> usize {
        self.shares.len()
    }

    /// Whether no shares are held.
    pub fn is_empty(&self) -> bool {
        self.shares.is_empty()
    }
}

impl std::fmt::Debug for HeldShares {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldShares")
            .field("holder", &self.holder)
            .field("owners", &self.owners())
            .finish()
    }
}

/// Step "share keys": participant `me` splits its self seed `b` and mask secret `s`, each `t`-of-`h` where the
/// `h` holders are its neighbours and itself, and seals each holder's pair under a key derived from
/// `X25519(enc_secret_me, enc_public_holder)`, the [`Context`] and `(me, holder)`.
///
/// The output holds one [`EncryptedShares`] per holder in increasing `to` order, `me`'s own among them: the
/// driver routes it like any other (through the coordinator, or straight back into [`open_shares`]), so a
/// participant holds a share of its own secrets as Bonawitz et al. have it. Each ciphertext gets a fresh random
/// nonce from `rng`: the key is already unique per (context, from, to), but a retried call with the same
/// [`RoundSecrets`] would otherwise seal new shares under a repeated (key, nonce).
pub fn share_keys(
    ctx: &Context,
    me: usize,
    secrets: &RoundSecrets,
    keys: &[PublicKeys],
    graph: &Graph,
    rng: &mut impl CryptoRng,
) -> Result<Vec<EncryptedShares>, SecAggError> {
    check_keys(keys, graph)?;
    graph.check_index(me)?;
    check_own_keys(me, secrets, keys)?;
    let holders = graph.holders(me);
    let t = graph.threshold();

    let mut seed = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(&mut *seed);
    let mut coefficients = chacha20::ChaCha20Rng::from_seed(*seed);
    let b = Zeroizing::new(secrets.self_seed());
    let s = Zeroizing::new(secrets.mask_secret_bytes());
    let b_shares = Zeroizing::new(shamir::split(&b, t, &holders, &mut coefficients)?);
    let s_shares = Zeroizing::new(shamir::split(&s, t, &holders, &mut coefficients)?);

    let mut out = Vec::with_capacity(holders.len());
    for (i, &to) in holders.iter().enumerate() {
        let key = share_key(ctx, secrets, &keys[to].enc, to, me, to)?;
        let mut plaintext = Zeroizing::new([0u8; SHARE_PLAINTEXT_LEN]);
        plaintext[..SHARE_LEN].copy_from_slice(&b_shares[i]);
        plaintext[SHARE_LEN..].copy_from_slice(&s_shares[i]);
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let ciphertext = seal(ctx, &key, nonce, me, to, &*plaintext)?;
        out.push(EncryptedShares {
            from: me as u32,
            to: to as u32,
            ciphertext,
        });
    }
    Ok(out)
}

/// Decrypts and checks the shares `me` received (one [`EncryptedShares`] per sender, its own included).
///
/// Rejects, each with its own error: a share addressed to someone else ([`SecAggError::WrongRecipient`]), from
/// an index outside `keys` ([`SecAggError::UnknownSender`]), a second share from one sender
/// ([`SecAggError::DuplicateSender`]), a ciphertext that fails authentication — tampered, truncated, relabelled
/// or from another context ([`SecAggError::Decryption`]) — a plaintext of the wrong length
/// ([`SecAggError::BadPlaintextLength`]) and shares whose x-coordinate is not `me + 1`
/// ([`SecAggError::ShareIdentifierMismatch`]). The first problem found fails the whole batch.
///
/// The graph is not an input, so a share from a non-neighbour is kept; only that sender can produce one, and
/// [`unmask`] refuses a revealed share from a holder outside the owner's neighbourhood.
pub fn open_shares(
    ctx: &Context,
    me: usize,
    secrets: &RoundSecrets,
    keys: &[PublicKeys],
    received: &[EncryptedShares],
) -> Result<HeldShares, SecAggError> {
    let n = keys.len();
    if me >= n {
        return Err(SecAggError::IndexOutOfRange { index: me, n });
    }
    check_own_keys(me, secrets, keys)?;
    let x = x_coordinate(me)?;
    let mut shares = BTreeMap::new();
    for e in received {
        if e.to as usize != me {
            return Err(SecAggError::WrongRecipient {
                from: e.from,
                to: e.to,
                me,
            });
        }
        let from = e.from as usize;
        if from >= n {
            return Err(SecAggError::UnknownSender { from: e.from, n });
        }
        if shares.contains_key(&from) {
            return Err(SecAggError::DuplicateSender { from: e.from });
        }
        let key = share_key(ctx, secrets, &keys[from].enc, from, from, me)?;
        let plaintext = open(ctx, &key, from, me, &e.ciphertext)?;
        if plaintext.len() != SHARE_PLAINTEXT_LEN {
            return Err(SecAggError::BadPlaintextLength {
                from: e.from,
                len: plaintext.len(),
                expected: SHARE_PLAINTEXT_LEN,
            });
        }
        for found in [plaintext[0], plaintext[SHARE_LEN]] {
            if found != x {
                return Err(SecAggError::ShareIdentifierMismatch {
                    from: e.from,
                    found,
                    expected: x,
                });
            }
        }
        let mut pair = HeldPair {
            self_seed: [0; SHARE_LEN],
            mask_secret: [0; SHARE_LEN],
        };
        pair.self_seed.copy_from_slice(&plaintext[..SHARE_LEN]);
        pair.mask_secret.copy_from_slice(&plaintext[SHARE_LEN..]);
        shares.insert(from, pair);
    }
    Ok(HeldShares { holder: me, shares })
}

/// Step "masked input": `y = x + PRG(b) ± PRG(s_uv)` for every neighbour `v` in `u2` (plus if `v > me`, minus
/// if `v < me`), mod 2^64.
///
/// `s_uv = HKDF(X25519(mask_secret_me, mask_public_v), ctx, min, max)`, `PRG` the ChaCha20 keystream as
/// little-endian `u64`s, and the self mask is keyed by `HKDF(b, ctx, me)`. `u2` is the set whose shares were
/// confirmed (the coordinator's list, the same for everyone) and must contain `me`; at least `t` of `me`'s
/// holders must be in it, or its self seed could not be rebuilt and the round must stop
/// ([`SecAggError::TooFewSurvivors`]).
pub fn masked_input(
    ctx: &Context,
    me: usize,
    secrets: &RoundSecrets,
    keys: &[PublicKeys],
    graph: &Graph,
    u2: &[usize],
    x: &[u64],
) -> Result<Vec<u64>, SecAggError> {
    check_keys(keys, graph)?;
    graph.check_index(me)?;
    check_own_keys(me, secrets, keys)?;
    let u2 = index_set(u2, graph.len())?;
    if !u2.contains(&me) {
        return Err(SecAggError::NotInU2 { me });
    }
    let live_holders = graph.holders(me).iter().filter(|h| u2.contains(h)).count();
    if live_holders < graph.threshold() {
        return Err(SecAggError::TooFewSurvivors {
            have: live_holders,
            need: graph.threshold(),
        });
    }
    let mut y = x.to_vec();
    let b = Zeroizing::new(secrets.self_seed());
    let self_key = self_mask_key(ctx, &b, me)?;
    apply_mask(&mut y, &self_key, true)?;
    for &v in graph.neighbours(me) {
        if u2.contains(&v) {
            let seed = pairwise_seed(ctx, secrets.mask_secret(), &keys[v].mask, me, v)?;
            apply_mask(&mut y, &seed, v > me)?;
        }
    }
    Ok(y)
}

/// Step "unmasking" on a holder: reveals the self-seed shares of `survivors` and the mask-secret shares of
/// `dropped`, in that order.
///
/// Refuses, before revealing anything: an index in both lists ([`SecAggError::BothSharesRequested`], the
/// check the protocol's privacy rests on: both shares of one participant would unmask its input), its own
/// index among the dropped ([`SecAggError::OwnMaskSecretRequested`]: it is evidently alive), an index twice in
/// one list ([`SecAggError::DuplicateRequest`]) and an owner whose shares it does not hold, which covers every
/// non-neighbour ([`SecAggError::NoShareHeld`]). `held` must have been opened by `me`.
pub fn reveal(
    me: usize,
    held: &HeldShares,
    survivors: &[usize],
    dropped: &[usize],
) -> Result<Vec<RevealedShare>, SecAggError> {
    if held.holder != me {
        return Err(SecAggError::HolderMismatch {
            held_by: held.holder,
            me,
        });
    }
    if let Some(&peer) = dropped.iter().find(|p| survivors.contains(p)) {
        return Err(SecAggError::BothSharesRequested { peer });
    }
    if dropped.contains(&me) {
        return Err(SecAggError::OwnMaskSecretRequested { me });
    }
    for list in [survivors, dropped] {
        let mut seen = BTreeSet::new();
        if let Some(&peer) = list.iter().find(|&&p| !seen.insert(p)) {
            return Err(SecAggError::DuplicateRequest { peer });
        }
    }
    let requests = survivors
        .iter()
        .map(|&o| (o, ShareKind::SelfSeed))
        .chain(dropped.iter().map(|&o| (o, ShareKind::MaskSecret)));
    let mut out = Vec::with_capacity(survivors.len() + dropped.len());
    for (owner, kind) in requests {
        let pair = held.shares.get(&owner).ok_or(SecAggError::NoShareHeld { owner })?;
        let share = match kind {
            ShareKind::SelfSeed => pair.self_seed.to_vec(),
            ShareKind::MaskSecret => pair.mask_secret.to_vec(),
        };
        out.push(RevealedShare {
            holder: me as u32,
            owner: owner as u32,
            kind,
            share,
        });
    }
    Ok(out)
}

/// Coordinator (and offline auditor) side: the sum mod 2^64 of the survivors' inputs `x`, from their masked
/// inputs (the survivors U3 are exactly the indices in `masked`), the revealed shares, the public keys, the
/// graph and the confirmed share set `u2`.
///
/// Rebuilds every survivor's self seed and every dropped participant's mask secret that a survivor's mask
/// depends on (`t` shares each, else [`SecAggError::NotEnoughShares`]), removes the survivors' self masks and
/// the pairwise masks `PRG(s_uv)` between each dropped `v` and its surviving neighbours `u`, recomputing
/// `s_uv = HKDF(X25519(s_v, mask_public_u))`. A rebuilt mask secret must match its owner's advertised key
/// ([`SecAggError::ReconstructedKeyMismatch`]) and shares beyond `t` must agree with the first `t`
/// ([`SecAggError::InconsistentShares`]).
///
/// Rejects masked inputs from outside `u2`, twice from one participant or of differing lengths, fewer than `t`
/// survivors, and any revealed share that is malformed, duplicated, from a non-holder or of the wrong kind for
/// its owner. Deterministic: a successful result depends only on the inputs as sets, not on their order.
pub fn unmask(
    ctx: &Context,
    keys: &[PublicKeys],
    graph: &Graph,
    u2: &[usize],
    masked: &[(usize, Vec<u64>)],
    revealed: &[RevealedShare],
) -> Result<Vec<u64>, SecAggError> {
    check_keys(keys, graph)?;
    let t = graph.threshold();
    let u2 = index_set(u2, graph.len())?;

    let expected = masked
        .first()
        .map(|(_, y)| y.len())
        .ok_or(SecAggError::NoMaskedInputs)?;
    let mut inputs: BTreeMap<usize, &[u64]> = BTreeMap::new();
    for (u, y) in masked {
        graph.check_index(*u)?;
        if !u2.contains(u) {
            return Err(SecAggError::MaskedInputOutsideU2 { participant: *u });
        }
        if y.len() != expected {
            return Err(SecAggError::VectorLength {
                participant: *u,
                len: y.len(),
                expected,
            });
        }
        if inputs.insert(*u, y).is_some() {
            return Err(SecAggError::DuplicateMaskedInput { participant: *u });
        }
    }
    if inputs.len() < t {
        return Err(SecAggError::TooFewSurvivors {
            have: inputs.len(),
            need: t,
        });
    }
    let dropped: BTreeSet<usize> = u2.iter().copied().filter(|v| !inputs.contains_key(v)).collect();
    let shares = sort_revealed(graph, &inputs, &dropped, revealed)?;

    let mut sum = vec![0u64; expected];
    for y in inputs.values() {
        for (s, v) in sum.iter_mut().zip(y.iter()) {
            *s = s.wrapping_add(*v);
        }
    }
    for &u in inputs.keys() {
        let b = Zeroizing::new(reconstruct(
            &shares_of(&shares, u, ShareKind::SelfSeed),
            t,
            u,
            ShareKind::SelfSeed,
        )?);
        let self_key = self_mask_key(ctx, &b, u)?;
        apply_mask(&mut sum, &self_key, false)?;
    }
    for &v in &dropped {
        let affected: Vec<usize> = graph
            .neighbours(v)
            .iter()
            .copied()
            .filter(|u| inputs.contains_key(u))
            .collect();
        if affected.is_empty() {
            continue;
        }
        let s = Zeroizing::new(reconstruct(
            &shares_of(&shares, v, ShareKind::MaskSecret),
            t,
            v,
            ShareKind::MaskSecret,
        )?);
        let secret = StaticSecret::from(*s);
        if PublicKey::from(&secret).to_bytes() != keys[v].mask {
            return Err(SecAggError::ReconstructedKeyMismatch { owner: v });
        }
        for u in affected {
            let seed = pairwise_seed(ctx, &secret, &keys[u].mask, v, u)?;
            // y_u carries +PRG(s_uv) when v > u and -PRG(s_uv) when v < u; take it back out.
            apply_mask(&mut sum, &seed, v < u)?;
        }
    }
    Ok(sum)
}

/// Revealed shares by (owner, kind), then by holder, after checking each one's shape and provenance.
type SortedShares = BTreeMap<(usize, ShareKind), BTreeMap<usize, [u8; SHARE_LEN]>>;

fn sort_revealed(
    graph: &Graph,
    inputs: &BTreeMap<usize, &[u64]>,
    dropped: &BTreeSet<usize>,
    revealed: &[RevealedShare],
) -> Result<SortedShares, SecAggError> {
    let mut sorted = SortedShares::new();
    for r in revealed {
        let (holder, owner, kind) = (r.holder as usize, r.owner as usize, r.kind);
        graph.check_index(holder)?;
        graph.check_index(owner)?;
        let wanted = if inputs.contains_key(&owner) {
            Some(ShareKind::SelfSeed)
        } else if dropped.contains(&owner) {
            Some(ShareKind::MaskSecret)
        } else {
            None
        };
        if wanted != Some(kind) {
            return Err(SecAggError::UnexpectedShare { holder, owner, kind });
        }
        if holder != owner && !graph.is_neighbour(owner, holder) {
            return Err(SecAggError::NotAHolder { holder, owner });
        }
        if r.share.len() != SHARE_LEN || r.share[0] != x_coordinate(holder)? {
            return Err(SecAggError::MalformedShare { holder, owner, kind });
        }
        let mut share = [0u8; SHARE_LEN];
        share.copy_from_slice(&r.share);
        if sorted.entry((owner, kind)).or_default().insert(holder, share).is_some() {
            return Err(SecAggError::DuplicateShare { holder, owner, kind });
        }
    }
    Ok(sorted)
}

/// The shares of one secret in increasing holder order (empty if none were revealed).
fn shares_of(sorted: &SortedShares, owner: usize, kind: ShareKind) -> Zeroizing<Vec<[u8; SHARE_LEN]>> {
    Zeroizing::new(
        sorted
            .get(&(owner, kind))
            .map(|m| m.values().copied().collect())
            .unwrap_or_default(),
    )
}

fn check_keys(keys: &[PublicKeys], graph: &Graph) -> Result<(), SecAggError> {
    if keys.len() != graph.len() {
        return Err(SecAggError::KeyCountMismatch {
            keys: keys.len(),
            graph: graph.len(),
        });
    }
    Ok(())
}

/// The keys at `me` must be the caller's: catches an index that is not the caller's position in the list.
fn check_own_keys(me: usize, secrets: &RoundSecrets, keys: &[PublicKeys]) -> Result<(), SecAggError> {
    if keys.get(me) != Some(&secrets.public()) {
        return Err(SecAggError::OwnKeyMismatch { me });
    }
    Ok(())
}

/// `list` as a set of indices below `n`, refusing repeats.
fn index_set(list: &[usize], n: usize) -> Result<BTreeSet<usize>, SecAggError> {
    let mut set = BTreeSet::new();
    for &index in list {
        if index >= n {
            return Err(SecAggError::IndexOutOfRange { index, n });
        }
        if !set.insert(index) {
            return Err(SecAggError::DuplicateIndex { index });
        }
    }
    Ok(set)
}
