//! Fixed-point encoding of soft labels into Z_2^64 (the ring the masks live in) and the distributed discrete
//! Gaussian noise participants add before masking.
//!
//! Masks cancel only under exact ring arithmetic, so inputs are integers: `round(v * 2^FRAC_BITS)` as a
//! two's-complement `u64`. Sums wrap mod 2^64 and decode correctly as long as the true integer sum stays in
//! `i64` range (see [`encode_fixed`]).

use super::SecAggError;

/// Fractional bits of the fixed-point encoding: `v` is carried as `round(v * 2^FRAC_BITS)`.
pub const FRAC_BITS: u32 = 24;

/// `2^FRAC_BITS` as a float.
const SCALE: f64 = (1u64 << FRAC_BITS) as f64;

/// Exclusive bound on `|v|` accepted by [`encode_fixed`]: `2^(62 - FRAC_BITS)`.
pub const MAX_ABS_VALUE: f64 = (1u64 << (62 - FRAC_BITS)) as f64;

/// Encodes finite values as `round(v * 2^FRAC_BITS)` (ties away from zero) in two's complement mod 2^64.
///
/// Rejects NaN and infinities ([`SecAggError::NonFinite`]) and `|v| >= 2^(62 - FRAC_BITS)`
/// ([`SecAggError::OutOfRange`]), so each encoded value has magnitude below 2^62.
///
/// Headroom: a sum of `n` encodings decodes correctly while `|sum of v| * 2^FRAC_BITS < 2^63`. The per-value
/// bound alone guarantees that only for `n <= 2`; callers bound their real range instead. Soft labels are
/// probabilities in `[0, 1]`, so `n <= 255` participants sum to at most `255 * 2^24`, far from 2^63, and even
/// discrete Gaussian noise with a standard deviation of millions leaves ample room.
pub fn encode_fixed(values: &[f32]) -> Result<Vec<u64>, SecAggError> {
    values
        .iter()
        .enumerate()
        .map(|(index, &value)| {
            if !value.is_finite() {
                return Err(SecAggError::NonFinite { index });
            }
            let v = f64::from(value);
            if v.abs() >= MAX_ABS_VALUE {
                return Err(SecAggError::OutOfRange {
                    index,
                    value,
                    limit: MAX_ABS_VALUE,
                });
            }
            // Exact: an f32 times a power of two fits an f64, and |v * 2^24| < 2^62 fits an i64.
            Ok((v * SCALE).round() as i64 as u64)
        })
        .collect()
}

/// Decodes ring elements (for example an unmasked sum) as two's-complement `i64` divided by `2^FRAC_BITS`.
pub fn decode_fixed(sum: &[u64]) -> Vec<f64> {
    sum.iter().map(|&s| s as i64 as f64 / SCALE).collect()
}

/// Bound on `|decode_fixed(sum) / n - mean|` per element for `n` inputs encoded with [`encode_fixed`]:
/// `0.5 / 2^FRAC_BITS`.
///
/// Each encoding is off by at most half a unit in the last place (`0.5 / 2^FRAC_BITS`); the ring sum is exact,
/// so the sum is off by at most `n` times that and the mean by at most the bound itself, whatever `n` is. The
/// final `f64` division adds a relative error of at most 2^-53, far below it. Noise added with
/// [`add_discrete_gaussian_noise`] comes on top and is not part of this bound.
pub fn fixed_point_error_bound() -> f64 {
    0.5 / SCALE
}

/// The variance, in fixed-point units squared, of noise with standard deviation `sigma` in real units:
/// `round((sigma * 2^FRAC_BITS)^2)`, the value to hand [`add_discrete_gaussian_noise`] and its sampler.
pub fn fixed_variance(sigma: f64) -> Result<u128, SecAggError> {
    let scaled = sigma * SCALE;
    // (2^63)^2 = 2^126 still fits a u128; beyond that the noise alone would overflow the decode range anyway.
    if !(0.0..9.223_372_036_854_776e18).contains(&scaled) {
        return Err(SecAggError::BadNoiseScale { sigma });
    }
    Ok((scaled * scaled).round() as u128)
}

/// Adds one participant's share of distributed discrete Gaussian noise (Kairouz, Liu & Steinke, ICML 2021) to
/// its encoded input, before masking.
///
/// `sample` must draw independently from the discrete Gaussian `N_Z(0, sigma2_per_participant_in_fixed_units)`
/// on every call; the caller builds it from its exact sampler (fedistill-shared's `privacy::discrete`) with the
/// same variance, because this crate sits below that one and cannot call it. The sum of `n` participants'
/// noise is then close to `N_Z(0, n * sigma2)` in fixed-point units, the distribution the privacy accounting
/// of the sum assumes. [`fixed_variance`] turns a real-unit standard deviation into `sigma2`.
///
/// Each draw is added mod 2^64 (a negative draw wraps to its two's complement), which is the ring the masks
/// and [`decode_fixed`] use, so noise and inputs decode together. A variance of zero leaves `x` unchanged
/// without calling `sample`.
pub fn add_discrete_gaussian_noise(
    x: &mut [u64],
    sigma2_per_participant_in_fixed_units: u128,
    mut sample: impl FnMut() -> i64,
) {
    if sigma2_per_participant_in_fixed_units == 0 {
        return;
    }
    for v in x.iter_mut() {
        *v = v.wrapping_add(sample() as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_rounds_to_the_nearest_unit_and_keeps_the_sign() {
        let unit = 1.0 / SCALE as f32;
        let enc = encode_fixed(&[0.0, 1.0, -1.0, 0.5, unit, -unit, 1.5 * unit, -1.5 * unit]).unwrap();
        assert_eq!(enc[0], 0);
        assert_eq!(enc[1], 1 << FRAC_BITS);
        assert_eq!(enc[2], (-(1i64 << FRAC_BITS)) as u64);
        assert_eq!(enc[3], 1 << (FRAC_BITS - 1));
        assert_eq!(enc[4], 1);
        assert_eq!(enc[5], u64::MAX);
        assert_eq!(enc[6], 2, "ties round away from zero");
        assert_eq!(enc[7], (-2i64) as u64);
        assert_eq!(decode_fixed(&enc[..4]), vec![0.0, 1.0, -1.0, 0.5]);
    }

    #[test]
    fn encoding_rejects_non_finite_and_out_of_range_values_by_index() {
        assert_eq!(encode_fixed(&[0.1, f32::NAN]), Err(SecAggError::NonFinite { index: 1 }));
        assert_eq!(encode_fixed(&[f32::INFINITY]), Err(SecAggError::NonFinite { index: 0 }));
        assert_eq!(
            encode_fixed(&[0.0, 0.0, f32::NEG_INFINITY]),
            Err(SecAggError::NonFinite { index: 2 })
        );
        let limit = MAX_ABS_VALUE as f32;
        assert!(matches!(
            encode_fixed(&[limit]),
            Err(SecAggError::OutOfRange { index: 0, .. })
        ));
        assert!(matches!(
            encode_fixed(&[1.0, -limit]),
            Err(SecAggError::OutOfRange { index: 1, .. })
        ));
        // The largest f32 below the limit is accepted and round-trips exactly.
        let below = f32::from_bits(limit.to_bits() - 1);
        let enc = encode_fixed(&[below, -below]).unwrap();
        assert_eq!(decode_fixed(&enc), vec![f64::from(below), -f64::from(below)]);
    }

    #[test]
    fn ring_sums_of_encodings_decode_to_the_mean_within_the_bound() {
        let values: Vec<Vec<f32>> = (0..7)
            .map(|i| {
                (0..50)
                    .map(|j| ((i * 50 + j) as f32 * 0.618_034).fract() - 0.3)
                    .collect()
            })
            .collect();
        let mut sum = vec![0u64; 50];
        for v in &values {
            for (s, e) in sum.iter_mut().zip(encode_fixed(v).unwrap()) {
                *s = s.wrapping_add(e);
            }
        }
        let decoded = decode_fixed(&sum);
        for j in 0..50 {
            let mean = values.iter().map(|v| f64::from(v[j])).sum::<f64>() / 7.0;
            let err = (decoded[j] / 7.0 - mean).abs();
            assert!(
                err <= fixed_point_error_bound() * (1.0 + 1e-9),
                "element {j}: error {err}"
            );
        }
    }

    #[test]
    fn noise_is_added_mod_2_64_and_zero_variance_draws_nothing() {
        let mut x = vec![5u64, 0, u64::MAX];
        let mut draws = vec![-7i64, -1, 3].into_iter();
        add_discrete_gaussian_noise(&mut x, 4, || draws.next().unwrap());
        assert_eq!(x, vec![(-2i64) as u64, u64::MAX, 2]);
        assert_eq!(decode_fixed(&x)[0], -2.0 / SCALE);

        let mut y = vec![1u64, 2];
        add_discrete_gaussian_noise(&mut y, 0, || panic!("no draw expected at variance 0"));
        assert_eq!(y, vec![1, 2]);
    }

    #[test]
    fn fixed_variance_scales_and_rejects_bad_sigmas() {
        assert_eq!(fixed_variance(0.0), Ok(0));
        assert_eq!(fixed_variance(1.0), Ok(1u128 << (2 * FRAC_BITS)));
        assert_eq!(fixed_variance(2.0 / SCALE), Ok(4));
        for bad in [f64::NAN, -1.0, f64::INFINITY, 1e300] {
            assert!(
                matches!(fixed_variance(bad), Err(SecAggError::BadNoiseScale { .. })),
                "{bad}"
            );
        }
    }
}
