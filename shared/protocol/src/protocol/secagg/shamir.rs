//! Shamir t-of-n sharing of 32-byte secrets over GF(256) (the AES field, x^8 + x^4 + x^3 + x + 1), byte by byte,
//! through vsss-rs's `Gf256`.
//!
//! A share is `x || f_0(x) || ... || f_31(x)` (33 bytes), where `f_i` is the random polynomial of degree `t - 1`
//! whose constant term is secret byte `i` and `x = holder index + 1`. This is the layout of vsss-rs and of the
//! IETF draft-mcgrew-tss, whose published test vector the tests reconstruct.

use chacha20::ChaCha20Rng;
use vsss_rs::{Gf256, IdentifierGf256};
use zeroize::Zeroize;

use super::{SecAggError, ShareKind};

/// Bytes in a shared secret (an X25519 secret key or a self-mask seed).
pub const SECRET_LEN: usize = 32;

/// Bytes in one share: the x-coordinate, then one y byte per secret byte.
pub const SHARE_LEN: usize = SECRET_LEN + 1;

/// The Shamir x-coordinate of participant `index`: `index + 1`.
pub(crate) fn x_coordinate(index: usize) -> Result<u8, SecAggError> {
    u8::try_from(index + 1).map_err(|_| SecAggError::TooManyParticipants { n: index + 1, max: 255 })
}

/// Splits `secret` `t`-of-`holders.len()`, one share per holder (in the order given), with coefficients drawn
/// from `rng`.
pub(crate) fn split(
    secret: &[u8; SECRET_LEN],
    t: usize,
    holders: &[usize],
    rng: &mut ChaCha20Rng,
) -> Result<Vec<[u8; SHARE_LEN]>, SecAggError> {
    let ids = holders
        .iter()
        .map(|&h| x_coordinate(h).map(|x| IdentifierGf256(Gf256(x))))
        .collect::<Result<Vec<_>, _>>()?;
    let mut raw = Gf256::split_bytes_with_participant_ids_iter(t, holders.len(), secret, rng, ids)
        .map_err(|e| SecAggError::Shamir { detail: e.to_string() })?;
    let mut out = Vec::with_capacity(raw.len());
    for share in &mut raw {
        let mut fixed = [0u8; SHARE_LEN];
        if share.len() != SHARE_LEN {
            return Err(SecAggError::Shamir {
                detail: format!("share of {} bytes", share.len()),
            });
        }
        fixed.copy_from_slice(share);
        share.zeroize();
        out.push(fixed);
    }
    Ok(out)
}

/// Lagrange interpolation at zero of byte shares (`x || y...`), any secret length, all shares used.
pub(crate) fn combine_bytes(shares: &[&[u8]]) -> Result<Vec<u8>, SecAggError> {
    let owned: Vec<Vec<u8>> = shares.iter().map(|s| s.to_vec()).collect();
    let result = Gf256::combine_array(&owned).map_err(|e| SecAggError::Shamir { detail: e.to_string() });
    for mut s in owned {
        s.zeroize();
    }
    result
}

/// Rebuilds `owner`'s 32-byte secret of kind `kind` from `shares` (distinct x-coordinates, [`SHARE_LEN`] bytes
/// each, sorted by the caller for determinism) with threshold `t`.
///
/// Interpolates the first `t` shares; every further share must lie on the same polynomial, checked by swapping
/// it in for the `t`-th share and interpolating again (a share off the polynomial moves the value at zero,
/// because no Lagrange coefficient at zero vanishes), else [`SecAggError::InconsistentShares`]. Fewer than `t`
/// shares: [`SecAggError::NotEnoughShares`].
pub(crate) fn reconstruct(
    shares: &[[u8; SHARE_LEN]],
    t: usize,
    owner: usize,
    kind: ShareKind,
) -> Result<[u8; SECRET_LEN], SecAggError> {
    if shares.len() < t || t < 2 {
        return Err(SecAggError::NotEnoughShares {
            owner,
            kind,
            have: shares.len(),
            need: t,
        });
    }
    let mut subset: Vec<&[u8]> = shares[..t].iter().map(|s| s.as_slice()).collect();
    let mut secret = combine_bytes(&subset)?;
    let mut consistent = secret.len() == SECRET_LEN;
    for extra in &shares[t..] {
        subset[t - 1] = extra.as_slice();
        let mut other = combine_bytes(&subset)?;
        consistent &= other == secret;
        other.zeroize();
    }
    if !consistent {
        secret.zeroize();
        return Err(SecAggError::InconsistentShares { owner, kind });
    }
    let mut out = [0u8; SECRET_LEN];
    out.copy_from_slice(&secret);
    secret.zeroize();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chacha20::rand_core::SeedableRng;
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// IETF draft-mcgrew-tss-03 ("Threshold Secret Sharing", McGrew, Patnala, Hoenes, March 2010), section 9,
    /// the one published test case: algorithm TSS, secret 7465737400, M = 2, N = 2, share index 1 -> share
    /// B9FA07E185, share index 2 -> share F5409B4511. The draft's field is GF(256) with the AES polynomial and
    /// its share format is `index || f(index, ...)`, so a vsss-rs share is the index byte followed by the
    /// draft's share bytes, with no other conversion.
    /// <https://datatracker.ietf.org/doc/html/draft-mcgrew-tss-03#section-9>
    #[test]
    fn reconstructs_the_secret_of_the_draft_mcgrew_tss_test_vector() {
        let share1 = [vec![0x01], hex("B9FA07E185")].concat();
        let share2 = [vec![0x02], hex("F5409B4511")].concat();
        let secret = hex("7465737400");
        assert_eq!(combine_bytes(&[&share1, &share2]).unwrap(), secret);
        assert_eq!(
            combine_bytes(&[&share2, &share1]).unwrap(),
            secret,
            "order does not matter"
        );
        // One share alone is no sharing at all; a flipped bit gives another secret.
        assert!(combine_bytes(&[&share1]).is_err());
        let mut forged = share2.clone();
        forged[3] ^= 1;
        assert_ne!(combine_bytes(&[&share1, &forged]).unwrap(), secret);
    }

    /// The field itself against two independent sources: HashiCorp Vault's `shamir` package tests
    /// (`mult(3, 7) == 9`, `div(6, 3) == 2`; github.com/hashicorp/vault, shamir/shamir_test.go) and the EXP table
    /// of draft-mcgrew-tss-03 section 3.1 (`EXP[i] = 3^i`; its first nine and last seven entries). Powers are
    /// taken by repeated multiplication: vsss-rs's own `Gf256::pow` multiplies as integers (it overflows on
    /// `3.pow(8)`), but Shamir sharing never calls it, only multiplication and inversion, checked here.
    #[test]
    fn gf256_arithmetic_matches_vault_and_the_draft_tables() {
        assert_eq!(Gf256(3) * Gf256(7), Gf256(9));
        assert_eq!(Gf256(6) / Gf256(3), Gf256(2));
        let exp: Vec<Gf256> = std::iter::successors(Some(Gf256(1)), |p| Some(*p * Gf256(3)))
            .take(255)
            .collect();
        let head = [0x01, 0x03, 0x05, 0x0f, 0x11, 0x33, 0x55, 0xff, 0x1a];
        let tail = [0x1c, 0x24, 0x6c, 0xb4, 0xc7, 0x52, 0xf6];
        assert_eq!(exp[..9].iter().map(|g| g.0).collect::<Vec<_>>(), head);
        assert_eq!(exp[248..].iter().map(|g| g.0).collect::<Vec<_>>(), tail);
        assert_eq!(exp[75], Gf256(8), "LOG[8] = 75");
        // 3 generates the multiplicative group, and inversion is EXP[255 - i] for every non-zero element.
        let mut seen: Vec<u8> = exp.iter().map(|g| g.0).collect();
        seen.sort_unstable();
        assert_eq!(seen, (1..=255).collect::<Vec<u8>>());
        for i in 1..255 {
            assert_eq!(Gf256(1) / exp[i], exp[255 - i], "inverse of 3^{i}");
        }
    }

    #[test]
    fn split_puts_the_holder_x_coordinate_first_and_validates_parameters() {
        let mut rng = ChaCha20Rng::from_seed([7; 32]);
        let shares = split(&[9; 32], 3, &[0, 4, 9, 254], &mut rng).unwrap();
        let xs: Vec<u8> = shares.iter().map(|s| s[0]).collect();
        assert_eq!(xs, vec![1, 5, 10, 255]);
        assert!(matches!(
            split(&[9; 32], 5, &[0, 1, 2, 3], &mut rng),
            Err(SecAggError::Shamir { .. })
        ));
        assert!(matches!(
            split(&[9; 32], 1, &[0, 1], &mut rng),
            Err(SecAggError::Shamir { .. })
        ));
        assert!(matches!(
            split(&[9; 32], 2, &[0, 255], &mut rng),
            Err(SecAggError::TooManyParticipants { .. })
        ));
    }

    #[test]
    fn extra_shares_off_the_polynomial_are_detected() {
        let mut rng = ChaCha20Rng::from_seed([3; 32]);
        let secret = [0x5a; 32];
        let mut shares = split(&secret, 3, &[0, 1, 2, 3, 4], &mut rng).unwrap();
        let kind = ShareKind::MaskSecret;
        assert_eq!(reconstruct(&shares, 3, 7, kind), Ok(secret));
        assert_eq!(
            reconstruct(&shares[..2], 3, 7, kind),
            Err(SecAggError::NotEnoughShares {
                owner: 7,
                kind,
                have: 2,
                need: 3
            })
        );
        shares[4][17] ^= 0x80;
        assert_eq!(
            reconstruct(&shares, 3, 7, kind),
            Err(SecAggError::InconsistentShares { owner: 7, kind })
        );
        assert_eq!(
            reconstruct(&shares[..4], 3, 7, kind),
            Ok(secret),
            "the forged share left out"
        );
    }

    /// `(n, t, holder indices, positions of t of them)`.
    fn sharing_setup() -> impl Strategy<Value = (usize, Vec<usize>, Vec<usize>)> {
        (2usize..=12).prop_flat_map(|n| {
            (
                2..=n,
                proptest::sample::subsequence((0..255usize).collect::<Vec<_>>(), n),
            )
                .prop_flat_map(move |(t, holders)| {
                    (
                        Just(t),
                        Just(holders),
                        proptest::sample::subsequence((0..n).collect::<Vec<_>>(), t),
                    )
                })
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn any_t_of_n_shares_reconstruct_and_t_minus_1_do_not(
            (t, holders, picked) in sharing_setup(),
            secret in any::<[u8; 32]>(),
            seed in any::<[u8; 32]>(),
        ) {
            let mut rng = ChaCha20Rng::from_seed(seed);
            let shares = split(&secret, t, &holders, &mut rng).unwrap();
            let chosen: Vec<[u8; SHARE_LEN]> = picked.iter().map(|&i| shares[i]).collect();
            let kind = ShareKind::SelfSeed;
            prop_assert_eq!(reconstruct(&chosen, t, 0, kind), Ok(secret));
            prop_assert_eq!(reconstruct(&shares, t, 0, kind), Ok(secret));

            let fewer = &chosen[..t - 1];
            let too_few = SecAggError::NotEnoughShares { owner: 0, kind, have: t - 1, need: t };
            prop_assert_eq!(reconstruct(fewer, t, 0, kind), Err(too_few));
            if fewer.len() >= 2 {
                // Interpolating t - 1 points gives a value independent of the secret (equal with chance 2^-256).
                let refs: Vec<&[u8]> = fewer.iter().map(|s| s.as_slice()).collect();
                prop_assert_ne!(combine_bytes(&refs).unwrap(), secret.to_vec());
            }
        }
    }
}
