//! The cryptographic core of secure aggregation: the coordinator learns the sum of the participants' soft
//! labels, never one participant's, even when some participants drop out mid-round.
//!
//! This is the protocol of Bonawitz et al., "Practical Secure Aggregation for Privacy-Preserving Machine
//! Learning" (CCS 2017), with the sparse SecAgg+ graph of Bell et al., "Secure Single-Server Aggregation with
//! (Poly)Logarithmic Overhead" (CCS 2020) as an option, and distributed discrete Gaussian noise after Kairouz,
//! Liu & Steinke (ICML 2021). Sans-IO: no networking, files or clock; randomness comes in as
//! `&mut impl rand::CryptoRng` (rand 0.9, whose `CryptoRng` implies `RngCore`) or 32-byte seeds.
//!
//! # A round
//!
//! Participants are indexed `0..n` by their position in the round's sorted participant list; the Shamir
//! x-coordinate of index `i` is `i + 1`, so `n <= 255`.
//!
//! 1. **Advertise keys.** Each participant makes fresh [`RoundSecrets`] and advertises (signed, by the driver)
//!    their [`PublicKeys`]. Everyone builds the same `keys: Vec<PublicKeys>` and [`Graph`].
//! 2. **Share keys** ([`share_keys`]). `u` splits its self seed `b_u` and mask secret `s_u` `t`-of-`h` among
//!    its holders (its neighbours and itself) and seals each holder's pair of shares. The coordinator relays
//!    each [`EncryptedShares`] to its `to`; U2 is the set whose shares went out.
//! 3. **Masked input** ([`open_shares`], [`masked_input`]). Each holder opens what it received; each member of
//!    U2 sends `y_u = x_u + PRG(b_u) ± PRG(s_uv)` for its neighbours `v` in U2. U3 is the set whose `y` arrived.
//! 4. **Unmasking** ([`reveal_request`], [`reveal`], [`unmask`]). The coordinator asks each live holder for the
//!    self-seed shares of survivors (U3) and the mask-secret shares of the dropped (U2 \ U3); a holder refuses
//!    to give both for one peer. With `t` shares of each needed secret, [`unmask`] returns the exact ring sum of
//!    the survivors' inputs, and [`decode_fixed`] turns it into reals.
//!
//! Inputs are fixed point ([`encode_fixed`], [`FRAC_BITS`]), optionally noised before masking
//! ([`add_discrete_gaussian_noise`]).
//!
//! # Primitives
//!
//! X25519 (x25519-dalek 3) for both key pairs; HKDF-SHA256 (hkdf 0.13 over sha2 0.11) for every derived key,
//! bound to the [`Context`] (federation id, round) and the participant indices; ChaCha20 (chacha20 0.10,
//! RFC 8439) as the mask PRG, keystream read as little-endian `u64`s; ChaCha20-Poly1305 (chacha20poly1305
//! 0.11, which builds on the same chacha20 0.10) for shares in transit; Shamir over GF(256) with the AES
//! polynomial from vsss-rs 6 (`default-features = false`, `alloc` only: no curves, no bigints), checked against
//! the published vector of IETF draft-mcgrew-tss-03. Secret keys, seeds, held shares and plaintext buffers are
//! zeroized when dropped.
//!
//! # Security model and what the driver must add
//!
//! Against an honest-but-curious coordinator colluding with fewer than `t` participants, the sum is all it
//! learns. Against an active coordinator, Bonawitz et al. add signatures on every message and a consistency
//! round in which survivors sign U3; this module has no signing and no such round, so the driver must (a) sign
//! the key adverts and the U2/U3 lists it relays, (b) never call [`reveal`] for two different requests in one
//! round, and (c) prefer a graph with [`Graph::majority_threshold`], so that two disjoint holder sets can never
//! both reach `t`. With a sparse graph, a holder is asked only about owners whose shares it holds
//! ([`reveal`] refuses any other): the coordinator sends each holder its [`reveal_request`], or a holder given
//! the full U3 and U2 \ U3 lists computes its own with [`reveal_request`].
//!
//! # Decisions and changes against the agreed API
//!
//! The signatures of the brief are kept, with these additions and choices:
//!
//! - **Own share.** [`share_keys`] also outputs the caller's share of its own secrets (`to == me`), sealed like
//!   the others; the driver routes or loops it back into [`open_shares`]. Holders of `u` are `N(u) ∪ {u}`, so
//!   classic SecAgg is `t`-of-`n` and SecAgg+ `t`-of-`(k + 1)`.
//! - **Nonce.** Share ciphertexts are `random 12-byte nonce || ciphertext || tag`, not an all-zero nonce: the
//!   key is unique per (context, from, to), yet a retried [`share_keys`] with the same secrets would reuse it.
//! - **Share bytes.** A share is 33 bytes, `x || y_0..y_31` (vsss-rs's and the draft's layout, see
//!   [`SHARE_LEN`]); a share plaintext is the self-seed share then the mask-secret share.
//! - **Extra checks.** Every step verifies that `keys[me]` is the caller's own ([`SecAggError::OwnKeyMismatch`]);
//!   [`masked_input`] and [`unmask`] stop with fewer than `t` live holders or survivors
//!   ([`SecAggError::TooFewSurvivors`]); [`reveal`] refuses the caller's own mask secret; [`unmask`] checks a
//!   rebuilt mask secret against the owner's public key and shares beyond `t` against the first `t`.
//! - **Neighbourhoods in [`open_shares`].** It has no graph parameter, so it keeps shares from any known
//!   sender; only that sender can produce them, and [`unmask`] rejects a revealed share from a non-holder.
//! - **Harary clamp.** [`Graph::harary`] with `k >= n - 1` returns the complete graph; odd `k` is an error.
//! - **Noise.** [`add_discrete_gaussian_noise`] takes the caller's sampler `impl FnMut() -> i64` (an exact
//!   discrete Gaussian of the given variance) in place of an RNG; zero variance draws nothing.
//! - **Helpers** beyond the brief: [`RoundSecrets::from_seed`], [`Graph::holders`], [`Graph::is_neighbour`],
//!   [`Graph::is_empty`], [`Graph::majority_threshold`], [`reveal_request`] / [`RevealRequest`],
//!   [`HeldShares`] accessors, [`fixed_variance`], [`MAX_ABS_VALUE`], [`MAX_PARTICIPANTS`] and the length
//!   constants.

mod client;
mod error;
mod fixed;
mod graph;
mod keys;
mod rounds;
mod server;
mod shamir;
#[cfg(test)]
mod tests;

pub use client::{ClientError, SecureClient};
pub use error::SecAggError;
pub use fixed::{
    add_discrete_gaussian_noise, decode_fixed, encode_fixed, fixed_point_error_bound, fixed_variance, FRAC_BITS,
    MAX_ABS_VALUE,
};
pub use graph::{reveal_request, Graph, RevealRequest, MAX_PARTICIPANTS};
pub use keys::{Context, PublicKeys, RoundSecrets, NONCE_LEN, TAG_LEN};
pub use rounds::{
    masked_input, open_shares, reveal, share_keys, unmask, EncryptedShares, HeldShares, RevealedShare, ShareKind,
    SHARE_PLAINTEXT_LEN,
};
pub use server::{
    check_params, recompute_sum, round_graph, SecureRound, SecureTranscript, SignedDigest, Step, TranscriptError,
    SEALED_SHARES_LEN,
};
pub use shamir::{SECRET_LEN, SHARE_LEN};
