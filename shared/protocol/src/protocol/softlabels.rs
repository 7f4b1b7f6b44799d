//! Soft-label payload encodings (f32, f16, 8-bit with a per-row scale, top-k sparse) and their validation.
//!
//! A payload is `n` rows of `classes` probabilities. Encoding is lossy for all but f32; decoding is
//! deterministic and renormalises each row, so the coordinator, the participants and an offline auditor
//! obtain bit-identical distributions from the same bytes (the auditor recomputes aggregates from them).

pub use crate::wire::enums::{Encoding, EncodingError};

/// Tolerance on a row sum for a payload to count as a probability distribution.
pub const ROW_SUM_TOLERANCE: f32 = 1e-3;

/// The largest magnitude of a regression soft label. A task with one output is a regression task
/// (`[regression]` in the task card): each row is one real value, the teacher's prediction standardized
/// with the card's statistics, so honest values lie within a few units of zero; anything beyond this many
/// standard deviations is refused as a malformed payload.
pub const VALUE_LIMIT: f32 = 1_000.0;

impl Encoding {
    /// Checks that the encoding can carry rows of `classes` probabilities (k in range, class ids fit), or,
    /// with one output, real values: only `f32` and `f16` can.
    pub fn check_shape(&self, classes: usize) -> Result<(), SoftLabelError> {
        if classes == 1 && !matches!(self, Encoding::F32 | Encoding::F16 | Encoding::MaskedU64) {
            return Err(SoftLabelError::NotForValues { encoding: self.name() });
        }
        match *self {
            Encoding::TopK { k } | Encoding::QTopK { k } if k == 0 || usize::from(k) > classes => {
                Err(SoftLabelError::BadTopK { k, classes })
            }
            Encoding::Argmax | Encoding::QTopK { .. } if classes > 256 => Err(SoftLabelError::TooManyClasses {
                encoding: self.name(),
                classes,
            }),
            Encoding::MaskedU64 => Err(SoftLabelError::Masked),
            _ => Ok(()),
        }
    }
}

/// A masked input's bytes: every value as little-endian u64.
pub fn masked_payload(masked: &[u64]) -> Vec<u8> {
    masked.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Reads a `masked_u64` payload of `rows` x `classes` values (only its length can be checked: every u64 is
/// a valid masked value).
pub fn decode_masked(bytes: &[u8], rows: usize, classes: usize) -> Result<Vec<u64>, SoftLabelError> {
    let expected = Encoding::MaskedU64.payload_len(rows, classes);
    if bytes.len() != expected {
        return Err(SoftLabelError::WrongLength {
            got: bytes.len(),
            expected,
            rows,
            classes,
        });
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
        .collect())
}

/// Why a soft-label payload was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SoftLabelError {
    /// `masked_u64` carries a secure-aggregation masked input, not probabilities.
    #[error("the masked_u64 encoding carries a secure-aggregation masked input, not probabilities")]
    Masked,
    /// The encoding name is not one of f32, f16, int8, topk:K, argmax, qtopk:K.
    #[error("unknown soft-label encoding {0:?} (expected f32, f16, int8, topk:K or qtopk:K with K >= 1, or argmax)")]
    UnknownEncoding(String),
    /// The payload length does not match rows x classes for the encoding.
    #[error("soft-label payload has {got} bytes, expected {expected} for {rows} rows x {classes} classes")]
    WrongLength {
        /// Bytes received.
        got: usize,
        /// Bytes the shape implies.
        expected: usize,
        /// Rows expected.
        rows: usize,
        /// Classes expected.
        classes: usize,
    },
    /// Top-k with k = 0 or k > classes.
    #[error("top-k encoding with k = {k} is invalid for {classes} classes")]
    BadTopK {
        /// The k on the wire.
        k: u16,
        /// Number of classes.
        classes: usize,
    },
    /// A value is NaN or infinite.
    #[error("row {row}, class {class}: value is not finite")]
    NotFinite {
        /// Row index.
        row: usize,
        /// Class index.
        class: usize,
    },
    /// A value lies outside [0, 1].
    #[error("row {row}, class {class}: probability {value} is outside [0, 1]")]
    OutOfRange {
        /// Row index.
        row: usize,
        /// Class index.
        class: usize,
        /// The offending value.
        value: f32,
    },
    /// A regression value is beyond [`VALUE_LIMIT`] in magnitude.
    #[error(
        "row {row}: value {value} is beyond the limit of +-{VALUE_LIMIT} standard deviations of a regression target"
    )]
    ValueOutOfRange {
        /// Row index.
        row: usize,
        /// The offending value.
        value: f32,
    },
    /// An encoding that only probabilities fit was used for a regression task's values.
    #[error(
        "the {encoding} encoding carries class probabilities; a regression task's soft labels (one value per row) \
         travel as f32 or f16"
    )]
    NotForValues {
        /// The encoding's name.
        encoding: String,
    },
    /// A row does not sum to one.
    #[error("row {row} sums to {sum}, not 1 (tolerance {ROW_SUM_TOLERANCE})")]
    NotADistribution {
        /// Row index.
        row: usize,
        /// The row's sum.
        sum: f32,
    },
    /// The argmax and qtopk encodings name a class in one byte: at most 256 classes.
    #[error("the {encoding} encoding supports at most 256 classes, not {classes}")]
    TooManyClasses {
        /// The encoding's name.
        encoding: String,
        /// Number of classes.
        classes: usize,
    },
    /// A top-k class index is outside the class range or repeated.
    #[error("row {row}: top-k class index {class} is out of range or repeated")]
    BadClassIndex {
        /// Row index.
        row: usize,
        /// The offending class index.
        class: u16,
    },
}

impl From<EncodingError> for SoftLabelError {
    fn from(e: EncodingError) -> Self {
        match e {
            EncodingError::UnknownEncoding(s) => SoftLabelError::UnknownEncoding(s),
        }
    }
}

/// Checks that `p` holds `rows` probability distributions over `classes` classes, or with one output (a
/// regression task) `rows` finite values within [`VALUE_LIMIT`].
pub fn validate_distributions(p: &[f32], rows: usize, classes: usize) -> Result<(), SoftLabelError> {
    if p.len() != rows * classes {
        return Err(SoftLabelError::WrongLength {
            got: p.len() * 4,
            expected: rows * classes * 4,
            rows,
            classes,
        });
    }
    if classes == 1 {
        for (row, &value) in p.iter().enumerate() {
            if !value.is_finite() {
                return Err(SoftLabelError::NotFinite { row, class: 0 });
            }
            if value.abs() > VALUE_LIMIT {
                return Err(SoftLabelError::ValueOutOfRange { row, value });
            }
        }
        return Ok(());
    }
    for (row, r) in p.chunks_exact(classes.max(1)).enumerate() {
        let mut sum = 0.0f32;
        for (class, &v) in r.iter().enumerate() {
            if !v.is_finite() {
                return Err(SoftLabelError::NotFinite { row, class });
            }
            if !(0.0..=1.0).contains(&v) {
                return Err(SoftLabelError::OutOfRange { row, class, value: v });
            }
            sum += v;
        }
        if (sum - 1.0).abs() > ROW_SUM_TOLERANCE {
            return Err(SoftLabelError::NotADistribution { row, sum });
        }
    }
    Ok(())
}

/// A participant's `SoftLabels` message (unsigned) for the round's `sample_ids`: `probabilities` (one row of
/// `classes` per sample id) packed in `encoding`, with the digests that bind it to the public set and to the
/// round's samples. The participant driver, the benchmarks, the simulator and the tests' hand-driven clients
/// all build the message here; a secure round's masked input is [`secure_soft_labels_message`].
pub fn soft_labels_message(
    round: crate::crypto::RoundId,
    public_digest: crate::crypto::Digest,
    sample_ids: &[u64],
    probabilities: &[f32],
    classes: usize,
    encoding: Encoding,
    samples: u64,
) -> Result<crate::wire::messages::SoftLabels, SoftLabelError> {
    let rows = sample_ids.len();
    Ok(crate::wire::messages::SoftLabels {
        round,
        public_digest,
        sample_ids_digest: crate::wire::messages::sample_ids_digest(sample_ids),
        encoding,
        rows: rows as u32,
        classes: classes as u32,
        samples,
        payload: encode(probabilities, rows, classes, encoding)?,
    })
}

/// A participant's masked input in a secure round as its `SoftLabels` message (unsigned): `masked` (one row
/// of `classes` fixed-point values per sample id, as `SecureClient::on_delivery` returns it) in the
/// `masked_u64` encoding ([`masked_payload`]), with the same digests as [`soft_labels_message`] and the
/// sender's `samples` (the divisor of the sample-weighted rule). A length that is not `sample_ids` x
/// `classes` values is refused. The participant lifecycle and the tests' secure clients build it here.
pub fn secure_soft_labels_message(
    round: crate::crypto::RoundId,
    public_digest: crate::crypto::Digest,
    sample_ids: &[u64],
    masked: &[u64],
    classes: usize,
    samples: u64,
) -> Result<crate::wire::messages::SoftLabels, SoftLabelError> {
    let rows = sample_ids.len();
    let payload = masked_payload(masked);
    decode_masked(&payload, rows, classes)?;
    Ok(crate::wire::messages::SoftLabels {
        round,
        public_digest,
        sample_ids_digest: crate::wire::messages::sample_ids_digest(sample_ids),
        encoding: Encoding::MaskedU64,
        rows: rows as u32,
        classes: classes as u32,
        samples,
        payload,
    })
}

/// Encodes `rows` x `classes` probabilities (validated first).
pub fn encode(p: &[f32], rows: usize, classes: usize, encoding: Encoding) -> Result<Vec<u8>, SoftLabelError> {
    validate_distributions(p, rows, classes)?;
    encoding.check_shape(classes)?;
    let mut out = Vec::with_capacity(encoding.payload_len(rows, classes));
    match encoding {
        Encoding::F32 => p.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        Encoding::F16 => p
            .iter()
            .for_each(|v| out.extend_from_slice(&half::f16::from_f32(*v).to_le_bytes())),
        Encoding::Int8 => {
            for r in p.chunks_exact(classes) {
                let max = r.iter().copied().fold(0.0f32, f32::max);
                let scale = if max > 0.0 { max / 255.0 } else { 1.0 };
                out.extend_from_slice(&scale.to_le_bytes());
                for v in r {
                    out.push((v / scale).round().clamp(0.0, 255.0) as u8);
                }
            }
        }
        Encoding::Argmax => {
            for r in p.chunks_exact(classes) {
                // Lowest class id on ties, like `ml::model::argmax`.
                let best = (0..classes).fold(0, |b, c| if r[c] > r[b] { c } else { b });
                out.push(best as u8);
            }
        }
        Encoding::TopK { k } | Encoding::QTopK { k } => {
            let mut idx: Vec<usize> = (0..classes).collect();
            for r in p.chunks_exact(classes) {
                idx.iter_mut().enumerate().for_each(|(i, c)| *c = i);
                // Stable order: larger probability first, lower class id on ties.
                idx.sort_by(|&a, &b| r[b].total_cmp(&r[a]).then(a.cmp(&b)));
                for &c in idx.iter().take(usize::from(k)) {
                    if matches!(encoding, Encoding::QTopK { .. }) {
                        out.push(c as u8);
                        out.push((r[c] * 255.0).round().clamp(0.0, 255.0) as u8);
                    } else {
                        out.extend_from_slice(&(c as u16).to_le_bytes());
                        out.extend_from_slice(&half::f16::from_f32(r[c]).to_le_bytes());
                    }
                }
            }
        }
        Encoding::MaskedU64 => return Err(SoftLabelError::Masked),
    }
    Ok(out)
}

/// Decodes a payload into `rows` x `classes` probabilities, validating everything a peer controls.
pub fn decode(bytes: &[u8], rows: usize, classes: usize, encoding: Encoding) -> Result<Vec<f32>, SoftLabelError> {
    encoding.check_shape(classes)?;
    let expected = encoding.payload_len(rows, classes);
    if bytes.len() != expected {
        return Err(SoftLabelError::WrongLength {
            got: bytes.len(),
            expected,
            rows,
            classes,
        });
    }
    let mut p = vec![0.0f32; rows * classes];
    match encoding {
        Encoding::F32 => {
            for (v, b) in p.iter_mut().zip(bytes.chunks_exact(4)) {
                *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        Encoding::F16 => {
            for (v, b) in p.iter_mut().zip(bytes.chunks_exact(2)) {
                *v = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        Encoding::Int8 => {
            for (row, (r, b)) in p
                .chunks_exact_mut(classes)
                .zip(bytes.chunks_exact(classes + 4))
                .enumerate()
            {
                let scale = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                if !scale.is_finite() || scale <= 0.0 {
                    return Err(SoftLabelError::NotFinite { row, class: 0 });
                }
                for (v, q) in r.iter_mut().zip(&b[4..]) {
                    *v = f32::from(*q) * scale;
                }
            }
        }
        Encoding::Argmax => {
            for (row, (r, &c)) in p.chunks_exact_mut(classes).zip(bytes).enumerate() {
                let ci = usize::from(c);
                if ci >= classes {
                    return Err(SoftLabelError::BadClassIndex {
                        row,
                        class: u16::from(c),
                    });
                }
                r[ci] = 1.0;
            }
        }
        Encoding::TopK { k } | Encoding::QTopK { k } => {
            let k = usize::from(k);
            let entry = if matches!(encoding, Encoding::QTopK { .. }) {
                2
            } else {
                4
            };
            for (row, (r, b)) in p
                .chunks_exact_mut(classes)
                .zip(bytes.chunks_exact(k * entry))
                .enumerate()
            {
                let mut seen = vec![false; classes];
                let mut mass = 0.0f32;
                for e in b.chunks_exact(entry) {
                    let (c, v) = if entry == 2 {
                        (u16::from(e[0]), f32::from(e[1]) / 255.0)
                    } else {
                        (
                            u16::from_le_bytes([e[0], e[1]]),
                            half::f16::from_le_bytes([e[2], e[3]]).to_f32(),
                        )
                    };
                    let ci = usize::from(c);
                    if ci >= classes || seen[ci] {
                        return Err(SoftLabelError::BadClassIndex { row, class: c });
                    }
                    if !v.is_finite() {
                        return Err(SoftLabelError::NotFinite { row, class: ci });
                    }
                    if !(0.0..=1.0).contains(&v) {
                        return Err(SoftLabelError::OutOfRange {
                            row,
                            class: ci,
                            value: v,
                        });
                    }
                    seen[ci] = true;
                    r[ci] = v;
                    mass += v;
                }
                let rest = classes - k;
                if rest > 0 {
                    let fill = ((1.0 - mass).max(0.0)) / rest as f32;
                    for (ci, v) in r.iter_mut().enumerate() {
                        if !seen[ci] {
                            *v = fill;
                        }
                    }
                }
            }
        }
        Encoding::MaskedU64 => return Err(SoftLabelError::Masked),
    }
    if classes == 1 {
        // Real values (a regression task): finite and within the limit, nothing to renormalise.
        validate_distributions(&p, rows, 1)?;
        return Ok(p);
    }
    // Quantized encodings only approximate a distribution: renormalise, then check what the peer sent.
    for (row, r) in p.chunks_exact_mut(classes.max(1)).enumerate() {
        let mut sum = 0.0f32;
        for (class, v) in r.iter().enumerate() {
            if !v.is_finite() {
                return Err(SoftLabelError::NotFinite { row, class });
            }
            if !(0.0..=1.0 + ROW_SUM_TOLERANCE).contains(v) {
                return Err(SoftLabelError::OutOfRange { row, class, value: *v });
            }
            sum += v;
        }
        let tolerance = match encoding {
            Encoding::F32 => ROW_SUM_TOLERANCE,
            // Each 8-bit / f16 value may be off by half a step; a row of `classes` of them by that much each.
            _ => 0.02 + classes as f32 * 2e-3,
        };
        if (sum - 1.0).abs() > tolerance || sum <= 0.0 {
            return Err(SoftLabelError::NotADistribution { row, sum });
        }
        if encoding != Encoding::F32 {
            r.iter_mut().for_each(|v| *v /= sum);
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Digest, RoundId};

    fn rows() -> Vec<f32> {
        vec![
            0.7, 0.2, 0.1, 0.0, //
            0.25, 0.25, 0.25, 0.25, //
            0.0, 0.0, 0.0, 1.0,
        ]
    }

    #[test]
    fn f32_round_trip_is_exact() {
        let p = rows();
        let b = encode(&p, 3, 4, Encoding::F32).unwrap();
        assert_eq!(b.len(), 48);
        assert_eq!(decode(&b, 3, 4, Encoding::F32).unwrap(), p);
    }

    #[test]
    fn lossy_encodings_stay_close_and_normalised() {
        let p = rows();
        for enc in [Encoding::F16, Encoding::Int8, Encoding::TopK { k: 4 }] {
            let b = encode(&p, 3, 4, enc).unwrap();
            assert_eq!(b.len(), enc.payload_len(3, 4), "{enc:?}");
            let q = decode(&b, 3, 4, enc).unwrap();
            for (a, b) in p.iter().zip(&q) {
                assert!((a - b).abs() < 5e-3, "{enc:?}: {a} vs {b}");
            }
            validate_distributions(&q, 3, 4).unwrap();
        }
    }

    #[test]
    fn top_k_spreads_the_remaining_mass() {
        let p = rows();
        let b = encode(&p, 3, 4, Encoding::TopK { k: 1 }).unwrap();
        assert_eq!(b.len(), 12);
        let q = decode(&b, 3, 4, Encoding::TopK { k: 1 }).unwrap();
        // Row 0: 0.7 kept, 0.3 spread over 3 classes (0.1 each, up to f16 rounding of 0.7).
        assert!((q[0] - 0.7).abs() < 1e-3 && (q[1] - 0.1).abs() < 1e-3 && (q[3] - 0.1).abs() < 1e-3);
        // Row 1 ties: the lowest class id wins.
        assert!((q[4] - 0.25).abs() < 1e-3);
    }

    #[test]
    fn argmax_sends_one_byte_per_row_and_decodes_one_hot() {
        let p = rows();
        let b = encode(&p, 3, 4, Encoding::Argmax).unwrap();
        // Row 0: class 0; row 1 (a four-way tie): the lowest id; row 2: class 3.
        assert_eq!(b, vec![0, 0, 3]);
        let q = decode(&b, 3, 4, Encoding::Argmax).unwrap();
        assert_eq!(q, vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
        // A class the round does not have, a short payload, and more classes than a byte can name.
        assert_eq!(
            decode(&[0, 4, 1], 3, 4, Encoding::Argmax),
            Err(SoftLabelError::BadClassIndex { row: 1, class: 4 })
        );
        assert!(matches!(
            decode(&[0, 1], 3, 4, Encoding::Argmax),
            Err(SoftLabelError::WrongLength {
                got: 2,
                expected: 3,
                ..
            })
        ));
        let wide = vec![1.0 / 300.0; 300];
        assert_eq!(
            encode(&wide, 1, 300, Encoding::Argmax),
            Err(SoftLabelError::TooManyClasses {
                encoding: "argmax".into(),
                classes: 300
            })
        );
        assert_eq!(
            decode(&[0], 1, 300, Encoding::Argmax),
            Err(SoftLabelError::TooManyClasses {
                encoding: "argmax".into(),
                classes: 300
            })
        );
    }

    #[test]
    fn compact_top_k_sends_two_bytes_per_entry() {
        let p = rows();
        let enc = Encoding::QTopK { k: 1 };
        let b = encode(&p, 3, 4, enc).unwrap();
        // (class, round(p * 255)) per row: 0.7 -> 179, the tie -> class 0 at 64, the one-hot -> 255.
        assert_eq!(b, vec![0, 179, 0, 64, 3, 255]);
        let q = decode(&b, 3, 4, enc).unwrap();
        // Row 0: 179/255 kept, the rest spread evenly; every row renormalised.
        assert!((q[0] - 179.0 / 255.0).abs() < 1e-6, "{}", q[0]);
        assert!((q[1] - (1.0 - 179.0 / 255.0) / 3.0).abs() < 1e-6);
        assert_eq!(&q[8..12], &[0.0, 0.0, 0.0, 1.0]);
        validate_distributions(&q, 3, 4).unwrap();
        // Two entries keep the second class too.
        let b2 = encode(&p, 3, 4, Encoding::QTopK { k: 2 }).unwrap();
        assert_eq!(b2.len(), 12);
        let q2 = decode(&b2, 3, 4, Encoding::QTopK { k: 2 }).unwrap();
        assert!((q2[1] - 0.2).abs() < 3e-3 && (q2[2] - 0.05).abs() < 3e-3, "{q2:?}");
        // What a peer controls: class ids out of range or repeated, mass above one, shape.
        assert_eq!(
            decode(&[4, 10, 0, 64, 3, 255], 3, 4, enc),
            Err(SoftLabelError::BadClassIndex { row: 0, class: 4 })
        );
        assert_eq!(
            decode(
                &[0, 100, 0, 100, 0, 64, 1, 64, 3, 200, 3, 10],
                3,
                4,
                Encoding::QTopK { k: 2 }
            ),
            Err(SoftLabelError::BadClassIndex { row: 0, class: 0 })
        );
        assert!(matches!(
            decode(&[0, 200, 1, 200], 1, 4, Encoding::QTopK { k: 2 }),
            Err(SoftLabelError::NotADistribution { row: 0, .. })
        ));
        assert!(matches!(
            decode(&b[..5], 3, 4, enc),
            Err(SoftLabelError::WrongLength {
                got: 5,
                expected: 6,
                ..
            })
        ));
        assert_eq!(
            decode(&[], 1, 4, Encoding::QTopK { k: 5 }),
            Err(SoftLabelError::BadTopK { k: 5, classes: 4 })
        );
        let wide = vec![1.0 / 300.0; 300];
        assert_eq!(
            encode(&wide, 1, 300, enc),
            Err(SoftLabelError::TooManyClasses {
                encoding: "qtopk:1".into(),
                classes: 300
            })
        );
    }

    #[test]
    fn the_soft_labels_builders_bind_the_round_samples_and_shape() {
        let ids = [4u64, 5, 9];
        let probs: Vec<f32> = ids.iter().flat_map(|_| [0.25f32, 0.75]).collect();
        let plain = soft_labels_message(RoundId(2), Digest::of(b"pub"), &ids, &probs, 2, Encoding::F16, 30).unwrap();
        assert_eq!(
            (
                plain.round,
                plain.public_digest,
                plain.rows,
                plain.classes,
                plain.samples
            ),
            (RoundId(2), Digest::of(b"pub"), 3, 2, 30)
        );
        assert_eq!(plain.sample_ids_digest, crate::wire::messages::sample_ids_digest(&ids));
        assert_eq!(plain.encoding, Encoding::F16);
        assert_eq!(plain.payload, encode(&probs, 3, 2, Encoding::F16).unwrap());

        let masked: Vec<u64> = (0..6).map(|i| u64::MAX - i).collect();
        let secure = secure_soft_labels_message(RoundId(2), Digest::of(b"pub"), &ids, &masked, 2, 30).unwrap();
        assert_eq!(
            secure,
            crate::wire::messages::SoftLabels {
                round: RoundId(2),
                public_digest: Digest::of(b"pub"),
                sample_ids_digest: crate::wire::messages::sample_ids_digest(&ids),
                rows: 3,
                classes: 2,
                encoding: Encoding::MaskedU64,
                samples: 30,
                payload: masked_payload(&masked),
            }
        );
        assert_eq!(decode_masked(&secure.payload, 3, 2).unwrap(), masked);
        // One value short of 3 x 2.
        assert!(matches!(
            secure_soft_labels_message(RoundId(2), Digest::of(b"pub"), &ids, &masked[1..], 2, 30),
            Err(SoftLabelError::WrongLength {
                expected: 48,
                got: 40,
                ..
            })
        ));
    }

    #[test]
    fn rejects_bad_payloads() {
        let p = rows();
        let b = encode(&p, 3, 4, Encoding::F32).unwrap();
        assert!(matches!(
            decode(&b[..47], 3, 4, Encoding::F32),
            Err(SoftLabelError::WrongLength {
                got: 47,
                expected: 48,
                ..
            })
        ));
        let mut nan = b.clone();
        nan[0..4].copy_from_slice(&f32::NAN.to_le_bytes());
        assert_eq!(
            decode(&nan, 3, 4, Encoding::F32),
            Err(SoftLabelError::NotFinite { row: 0, class: 0 })
        );
        let mut big = b.clone();
        big[0..4].copy_from_slice(&3.0f32.to_le_bytes());
        assert!(matches!(
            decode(&big, 3, 4, Encoding::F32),
            Err(SoftLabelError::OutOfRange { row: 0, .. })
        ));
        let mut unnorm = b;
        unnorm[0..4].copy_from_slice(&0.2f32.to_le_bytes());
        assert!(matches!(
            decode(&unnorm, 3, 4, Encoding::F32),
            Err(SoftLabelError::NotADistribution { row: 0, .. })
        ));
        assert!(matches!(
            encode(&[0.5, 0.6], 1, 2, Encoding::F32),
            Err(SoftLabelError::NotADistribution { .. })
        ));
        assert_eq!(
            decode(&[], 1, 4, Encoding::TopK { k: 5 }),
            Err(SoftLabelError::BadTopK { k: 5, classes: 4 })
        );
        // Repeated top-k class index.
        let mut dup = encode(&p, 3, 4, Encoding::TopK { k: 2 }).unwrap();
        dup[4..6].copy_from_slice(&0u16.to_le_bytes());
        assert!(matches!(
            decode(&dup, 3, 4, Encoding::TopK { k: 2 }),
            Err(SoftLabelError::BadClassIndex { row: 0, class: 0 })
        ));
    }
}
