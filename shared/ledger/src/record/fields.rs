//! Typed record fields whose canonical encoding is a string: the aggregation rule and soft-label encoding
//! names ([`RuleName`], [`EncodingName`]) and the degradation-guard decision ([`GuardDecision`]).
//!
//! Each encodes to exactly the string earlier builds wrote into the same field, so a log written before
//! these types existed re-encodes bit for bit (the Merkle leaf is the canonical encoding). Decoding refuses
//! a string that is not one of them with [`RecordError::InvalidName`] or [`RecordError::UnknownGuard`].
//!
//! The ledger cannot see the protocol crate (the dependency goes the other way), so the names are
//! validated for shape here and converted at the call sites from `AggregationRule::name()` and
//! `Encoding::name()`; what a name means (and whether a build can recompute with it) is the protocol's.

use std::fmt;

use super::RecordError;

/// Longest rule or encoding name, in bytes (`trimmed_mean:` and an `f32` printed in full fit well below).
pub const MAX_NAME_LEN: usize = 128;

/// Checks the shape every rule and encoding name has: `head` or `head:arg`, where `head` is a lowercase
/// ASCII letter followed by lowercase letters, digits and `_`, and `arg` is one or more ASCII letters,
/// digits, `.`, `_`, `+` or `-` (a number as Rust prints it: `5`, `0.2`, `1e-7`).
fn check_name(field: &'static str, s: &str) -> Result<(), RecordError> {
    let bad = |why: &str| {
        Err(RecordError::InvalidName {
            field,
            value: s.chars().take(MAX_NAME_LEN).collect(),
            why: why.to_string(),
        })
    };
    if s.is_empty() {
        return bad("empty");
    }
    if s.len() > MAX_NAME_LEN {
        return bad(&format!("longer than {MAX_NAME_LEN} bytes"));
    }
    let (head, arg) = match s.split_once(':') {
        Some((h, a)) => (h, Some(a)),
        None => (s, None),
    };
    let mut head_chars = head.chars();
    if !head_chars.next().is_some_and(|c| c.is_ascii_lowercase()) {
        return bad("must start with a lowercase ASCII letter");
    }
    if !head_chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
        return bad("the name may hold only lowercase ASCII letters, digits and '_'");
    }
    if let Some(arg) = arg {
        if arg.is_empty()
            || !arg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-'))
        {
            return bad("the parameter after ':' must be ASCII letters, digits, '.', '_', '+' or '-'");
        }
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Validates the shape of `name` (see the module docs).
            pub fn new(name: impl Into<String>) -> Result<$name, RecordError> {
                let name = name.into();
                check_name($field, &name)?;
                Ok($name(name))
            }

            /// Same as [`Self::new`] for a borrowed name.
            pub fn parse(name: &str) -> Result<$name, RecordError> {
                Self::new(name)
            }

            /// The name as logged.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

name_type!(
    /// An aggregation rule's name as the protocol spells it (`AggregationRule::name()`): `mean`,
    /// `sample_weighted`, `confidence_weighted`, `median`, `era:T`, `trimmed_mean:F`.
    RuleName,
    "rule"
);

name_type!(
    /// A soft-label encoding's name as the protocol spells it (`Encoding::name()`): `f32`, `f16`, `int8`,
    /// `argmax`, `topk:K`, `qtopk:K`.
    EncodingName,
    "encoding"
);

/// The degradation guard's decision on a round's candidate student, as a participant reported it.
///
/// In the log it is the string `accept`, or `reject: ` followed by the guard's reason (the only two forms
/// any build has written); see [`GuardDecision::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GuardDecision {
    /// The candidate replaced the served student.
    Accept,
    /// The candidate was rolled back; the participant keeps serving its previous student.
    Reject {
        /// The guard's reason, as the participant reported it (free text, may be empty).
        reason: String,
    },
}

impl GuardDecision {
    /// The logged prefix of a rejection: `reject: ` then the reason.
    pub const REJECT_PREFIX: &'static str = "reject: ";

    /// From a report's `guard_accepted` and `guard_reason` (the reason is dropped for an acceptance, as
    /// the log always did).
    pub fn from_report(accepted: bool, reason: &str) -> GuardDecision {
        if accepted {
            GuardDecision::Accept
        } else {
            GuardDecision::Reject {
                reason: reason.to_string(),
            }
        }
    }

    /// Stable short name of the decision: `accept` or `reject`.
    pub fn name(&self) -> &'static str {
        match self {
            GuardDecision::Accept => "accept",
            GuardDecision::Reject { .. } => "reject",
        }
    }

    /// Whether the candidate was accepted.
    pub fn is_accept(&self) -> bool {
        matches!(self, GuardDecision::Accept)
    }

    /// The exact string logged: `accept` or `reject: <reason>`.
    pub fn encoded(&self) -> String {
        match self {
            GuardDecision::Accept => "accept".to_string(),
            GuardDecision::Reject { reason } => format!("{}{reason}", Self::REJECT_PREFIX),
        }
    }

    /// Parses [`GuardDecision::encoded`]; any other string is refused with [`RecordError::UnknownGuard`].
    pub fn parse(s: &str) -> Result<GuardDecision, RecordError> {
        if s == "accept" {
            return Ok(GuardDecision::Accept);
        }
        match s.strip_prefix(Self::REJECT_PREFIX) {
            Some(reason) => Ok(GuardDecision::Reject {
                reason: reason.to_string(),
            }),
            None => Err(RecordError::UnknownGuard(s.chars().take(MAX_NAME_LEN).collect())),
        }
    }
}

impl fmt::Display for GuardDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuardDecision::Accept => f.write_str("accept"),
            GuardDecision::Reject { reason } => write!(f, "{}{reason}", Self::REJECT_PREFIX),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_the_protocol_writes_is_accepted() {
        for rule in [
            "mean",
            "sample_weighted",
            "confidence_weighted",
            "median",
            "era:0.1",
            "trimmed_mean:0.2",
            "trimmed_mean:0.000001",
        ] {
            assert_eq!(RuleName::parse(rule).expect(rule).as_str(), rule);
        }
        for encoding in ["f32", "f16", "int8", "argmax", "topk:5", "qtopk:65535"] {
            assert_eq!(EncodingName::parse(encoding).expect(encoding).to_string(), encoding);
        }
    }

    #[test]
    fn malformed_names_are_refused_with_the_field() {
        for bad in [
            "",
            "Mean",
            "1mean",
            "mean ",
            "era:",
            "era:0.1:2",
            "topk:5\n",
            "tri mmed",
            ":5",
            "é",
        ] {
            let err = RuleName::parse(bad).expect_err(bad);
            assert!(
                matches!(err, RecordError::InvalidName { field: "rule", .. }),
                "{bad:?}: {err}"
            );
        }
        assert!(EncodingName::parse(&"x".repeat(MAX_NAME_LEN + 1)).is_err());
        assert!(matches!(
            EncodingName::parse("F32"),
            Err(RecordError::InvalidName { field: "encoding", .. })
        ));
    }

    #[test]
    fn guard_decisions_encode_to_the_strings_the_log_always_held() {
        assert_eq!(GuardDecision::Accept.encoded(), "accept");
        assert_eq!(GuardDecision::from_report(true, "ignored"), GuardDecision::Accept);
        let r = GuardDecision::from_report(false, "accuracy fell by 0.02");
        assert_eq!(r.encoded(), "reject: accuracy fell by 0.02");
        assert_eq!(r.to_string(), r.encoded());
        assert_eq!(r.name(), "reject");
        for d in [
            GuardDecision::Accept,
            r,
            GuardDecision::Reject { reason: String::new() },
        ] {
            assert_eq!(GuardDecision::parse(&d.encoded()), Ok(d));
        }
    }

    #[test]
    fn unknown_guard_strings_are_refused_clearly() {
        for bad in ["", "Accept", "accept ", "reject", "reject:x", "rollback"] {
            let err = GuardDecision::parse(bad).expect_err(bad);
            assert_eq!(err, RecordError::UnknownGuard(bad.to_string()));
            assert!(err.to_string().contains("accept"), "{err}");
        }
    }
}
