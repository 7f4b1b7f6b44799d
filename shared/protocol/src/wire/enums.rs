//! The enums the wire carries in its messages, with their stable names, parsing and parameter validation:
//! the aggregation rule ([`AggregationRule`], in `RoundOpen` and the round's log records) and the
//! soft-label encoding ([`Encoding`], in `SoftLabels` and `AggregateLabels`). The reject code
//! (`RejectCode`) lives with the replies in [`super::messages`].
//!
//! What the variants mean is implemented above the wire: the aggregation maths in
//! `protocol::aggregate`, packing and unpacking soft labels in `protocol::softlabels` (both re-export these
//! types, so `protocol::AggregationRule` and `protocol::Encoding` name the same types). The serde
//! representation is part of the wire format and of the coordinator's round snapshot: keep the derive
//! attributes as they are.

use serde::{Deserialize, Serialize};

/// How contributions are combined. The default is the coordinate-wise median, robust to a minority of
/// poisoned contributors (see docs/protocol.md).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AggregationRule {
    /// Plain average of the probabilities.
    Mean,
    /// Average weighted by each contributor's private sample count.
    SampleWeighted,
    /// Per sample, each contributor weighted by its confidence (max probability) on that sample.
    ConfidenceWeighted,
    /// DS-FL's entropy-reduction aggregation: the mean, sharpened by `softmax(mean / temperature)`.
    Era {
        /// Sharpening temperature in (0, 1]; DS-FL uses 0.1.
        temperature: f32,
    },
    /// Coordinate-wise median, then renormalised.
    #[default]
    Median,
    /// Coordinate-wise mean after dropping the `trim` fraction of highest and lowest values, renormalised.
    TrimmedMean {
        /// Fraction dropped at each end, in [0, 0.5).
        trim: f32,
    },
}

/// Why a rule name or a rule parameter was refused (`protocol::AggregateError` has the same two variants
/// and converts from this).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// The rule name is not known.
    #[error("unknown aggregation rule {0:?} (expected mean, sample_weighted, confidence_weighted, era[:T], median, trimmed_mean[:F])")]
    UnknownRule(String),
    /// A rule parameter is out of range.
    #[error("invalid aggregation parameter: {0}")]
    BadParameter(String),
}

impl AggregationRule {
    /// Stable name used in configs, reports and log records.
    pub fn name(&self) -> String {
        match self {
            AggregationRule::Mean => "mean".into(),
            AggregationRule::SampleWeighted => "sample_weighted".into(),
            AggregationRule::ConfidenceWeighted => "confidence_weighted".into(),
            AggregationRule::Era { temperature } => format!("era:{temperature}"),
            AggregationRule::Median => "median".into(),
            AggregationRule::TrimmedMean { trim } => format!("trimmed_mean:{trim}"),
        }
    }

    /// Parses the names produced by [`AggregationRule::name`]; `era` and `trimmed_mean` take defaults
    /// (0.1 and 0.2) without a parameter.
    pub fn parse(s: &str) -> Result<AggregationRule, RuleError> {
        let (head, arg) = match s.split_once(':') {
            Some((h, a)) => (h, Some(a)),
            None => (s, None),
        };
        let num = |default: f32| -> Result<f32, RuleError> {
            match arg {
                None => Ok(default),
                Some(a) => a.parse::<f32>().map_err(|_| RuleError::UnknownRule(s.to_string())),
            }
        };
        let rule = match head {
            "mean" if arg.is_none() => AggregationRule::Mean,
            "sample_weighted" if arg.is_none() => AggregationRule::SampleWeighted,
            "confidence_weighted" if arg.is_none() => AggregationRule::ConfidenceWeighted,
            "median" if arg.is_none() => AggregationRule::Median,
            "era" => AggregationRule::Era { temperature: num(0.1)? },
            "trimmed_mean" => AggregationRule::TrimmedMean { trim: num(0.2)? },
            _ => return Err(RuleError::UnknownRule(s.to_string())),
        };
        rule.validate()?;
        Ok(rule)
    }

    /// Refuses parameters outside their meaningful range.
    pub fn validate(&self) -> Result<(), RuleError> {
        match *self {
            AggregationRule::Era { temperature } if !(temperature > 0.0 && temperature <= 1.0) => Err(
                RuleError::BadParameter(format!("era temperature {temperature} must be in (0, 1]")),
            ),
            AggregationRule::TrimmedMean { trim } if !(0.0..0.5).contains(&trim) => Err(RuleError::BadParameter(
                format!("trim fraction {trim} must be in [0, 0.5)"),
            )),
            _ => Ok(()),
        }
    }
}

/// How a participant packs its soft labels on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// 4 bytes per probability, exact.
    F32,
    /// IEEE half precision, 2 bytes per probability.
    F16,
    /// One byte per probability plus one f32 scale per row (`p ~= q * scale`, `scale = max(row) / 255`).
    Int8,
    /// The `k` largest probabilities per row as (u16 class, f16 value); the remaining mass is spread evenly
    /// over the other classes when decoding.
    TopK {
        /// Entries kept per row, `1 <= k <= classes`.
        k: u16,
    },
    /// Hard labels: one byte per row, the class of the largest probability (lowest id on ties), decoded
    /// as a one-hot row. At most 256 classes. Aggregated, the rows of several participants become vote
    /// shares, as in PATE.
    Argmax,
    /// Compact top-k: the `k` largest probabilities per row as (u8 class, u8 value) pairs, the value being
    /// `round(p * 255)`; the remaining mass is spread evenly over the other classes when decoding. Two bytes
    /// per entry, so `qtopk:1` keeps the teacher's confidence in its answer at two bytes per row. At most
    /// 256 classes.
    QTopK {
        /// Entries kept per row, `1 <= k <= classes`.
        k: u16,
    },
    /// A secure-aggregation masked input: every value in fixed point (`protocol::secagg::FRAC_BITS`
    /// fractional bits) plus the round's masks, as little-endian u64 in Z_2^64, 8 bytes per value. Not
    /// probabilities: only the sum of a round's masked inputs means anything. Never a participant's choice;
    /// a secure round asks for it.
    MaskedU64,
}

/// Why an encoding name was refused (`protocol::SoftLabelError` has the same variant and converts from
/// this).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodingError {
    /// The encoding name is not one of f32, f16, int8, topk:K, argmax, qtopk:K.
    #[error("unknown soft-label encoding {0:?} (expected f32, f16, int8, topk:K or qtopk:K with K >= 1, or argmax)")]
    UnknownEncoding(String),
}

impl Encoding {
    /// Stable one-byte tag used in canonical log records.
    pub fn tag(&self) -> u8 {
        match self {
            Encoding::F32 => 1,
            Encoding::F16 => 2,
            Encoding::Int8 => 3,
            Encoding::TopK { .. } => 4,
            Encoding::Argmax => 5,
            Encoding::QTopK { .. } => 6,
            Encoding::MaskedU64 => 7,
        }
    }

    /// Human-readable name (`f32`, `f16`, `int8`, `topk:K`, `argmax`, `qtopk:K`), also accepted by
    /// [`Encoding::parse`].
    pub fn name(&self) -> String {
        match self {
            Encoding::F32 => "f32".into(),
            Encoding::F16 => "f16".into(),
            Encoding::Int8 => "int8".into(),
            Encoding::TopK { k } => format!("topk:{k}"),
            Encoding::Argmax => "argmax".into(),
            Encoding::QTopK { k } => format!("qtopk:{k}"),
            Encoding::MaskedU64 => "masked_u64".into(),
        }
    }

    /// Parses `f32`, `f16`, `int8`, `topk:K`, `argmax` or `qtopk:K`.
    pub fn parse(s: &str) -> Result<Encoding, EncodingError> {
        match s {
            "f32" => Ok(Encoding::F32),
            "f16" => Ok(Encoding::F16),
            "int8" => Ok(Encoding::Int8),
            "argmax" => Ok(Encoding::Argmax),
            "masked_u64" => Ok(Encoding::MaskedU64),
            other => {
                let k_of = |rest: Option<&str>| {
                    rest.and_then(|k| k.parse::<u16>().ok())
                        .filter(|k| *k > 0)
                        .ok_or_else(|| EncodingError::UnknownEncoding(other.to_string()))
                };
                if let Some(rest) = other.strip_prefix("qtopk:") {
                    Ok(Encoding::QTopK { k: k_of(Some(rest))? })
                } else {
                    Ok(Encoding::TopK {
                        k: k_of(other.strip_prefix("topk:"))?,
                    })
                }
            }
        }
    }

    /// Exact payload size in bytes for `n` rows of `classes` probabilities.
    pub fn payload_len(&self, n: usize, classes: usize) -> usize {
        match self {
            Encoding::F32 => n * classes * 4,
            Encoding::F16 => n * classes * 2,
            Encoding::Int8 => n * (classes + 4),
            Encoding::TopK { k } => n * usize::from(*k) * 4,
            Encoding::Argmax => n,
            Encoding::QTopK { k } => n * usize::from(*k) * 2,
            Encoding::MaskedU64 => n * classes * 8,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode_payload, encode_payload};

    /// The serde representation is wire format (messages) and storage format (the coordinator's round
    /// snapshot): pin it, in bincode and in JSON.
    #[test]
    fn serde_representation_is_pinned() {
        let rules = [
            (AggregationRule::Mean, vec![0u8], r#""mean""#),
            (AggregationRule::SampleWeighted, vec![1], r#""sample_weighted""#),
            (AggregationRule::ConfidenceWeighted, vec![2], r#""confidence_weighted""#),
            (
                AggregationRule::Era { temperature: 0.5 },
                vec![3, 0, 0, 0, 0x3f],
                r#"{"era":{"temperature":0.5}}"#,
            ),
            (AggregationRule::Median, vec![4], r#""median""#),
            (
                AggregationRule::TrimmedMean { trim: 0.25 },
                vec![5, 0, 0, 0x80, 0x3e],
                r#"{"trimmed_mean":{"trim":0.25}}"#,
            ),
        ];
        for (rule, bin, json) in rules {
            assert_eq!(encode_payload(&rule).expect("encode"), bin, "{rule:?}");
            assert_eq!(decode_payload::<AggregationRule>(&bin).expect("decode"), rule);
            assert_eq!(serde_json::to_string(&rule).expect("json"), json);
            assert_eq!(serde_json::from_str::<AggregationRule>(json).expect("json"), rule);
        }
        let encodings = [
            (Encoding::F32, vec![0u8], r#""f32""#),
            (Encoding::F16, vec![1], r#""f16""#),
            (Encoding::Int8, vec![2], r#""int8""#),
            (
                Encoding::TopK { k: 300 },
                vec![3, 251, 0x2c, 0x01],
                r#"{"top_k":{"k":300}}"#,
            ),
            (Encoding::Argmax, vec![4], r#""argmax""#),
            (Encoding::QTopK { k: 2 }, vec![5, 2], r#"{"q_top_k":{"k":2}}"#),
        ];
        for (enc, bin, json) in encodings {
            assert_eq!(encode_payload(&enc).expect("encode"), bin, "{enc:?}");
            assert_eq!(decode_payload::<Encoding>(&bin).expect("decode"), enc);
            assert_eq!(serde_json::to_string(&enc).expect("json"), json);
            assert_eq!(serde_json::from_str::<Encoding>(json).expect("json"), enc);
        }
    }

    #[test]
    fn names_round_trip_and_bad_names_say_why() {
        for rule in [
            AggregationRule::Mean,
            AggregationRule::SampleWeighted,
            AggregationRule::ConfidenceWeighted,
            AggregationRule::Era { temperature: 0.1 },
            AggregationRule::Era { temperature: 0.25 },
            AggregationRule::Median,
            AggregationRule::TrimmedMean { trim: 0.2 },
        ] {
            assert_eq!(AggregationRule::parse(&rule.name()), Ok(rule));
        }
        assert_eq!(
            AggregationRule::parse("era"),
            Ok(AggregationRule::Era { temperature: 0.1 })
        );
        assert_eq!(AggregationRule::parse("avg"), Err(RuleError::UnknownRule("avg".into())));
        assert_eq!(
            AggregationRule::parse("mean:1"),
            Err(RuleError::UnknownRule("mean:1".into()))
        );
        assert!(matches!(
            AggregationRule::parse("era:2"),
            Err(RuleError::BadParameter(_))
        ));
        for enc in [
            Encoding::F32,
            Encoding::F16,
            Encoding::Int8,
            Encoding::TopK { k: 3 },
            Encoding::Argmax,
            Encoding::QTopK { k: 1 },
        ] {
            assert_eq!(Encoding::parse(&enc.name()), Ok(enc));
        }
        assert_eq!(
            Encoding::parse("topk:0"),
            Err(EncodingError::UnknownEncoding("topk:0".into()))
        );
        assert_eq!(
            Encoding::parse("bf16"),
            Err(EncodingError::UnknownEncoding("bf16".into()))
        );
        for bad in ["qtopk:0", "qtopk:"] {
            assert_eq!(Encoding::parse(bad), Err(EncodingError::UnknownEncoding(bad.into())));
        }
    }
}
