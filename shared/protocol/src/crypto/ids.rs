//! Identifier newtypes: the federation id, name validation, and (re-exported from the ledger crate so the
//! project has one type each) `Digest`, `RoundId` and `ParticipantId`.
//!
//! Participant names double as directory names in the provisioning tree and as roster keys, so
//! provisioning and roster loading run [`validate_name`] on them: a file or flag can never smuggle `../`
//! into a path. `FederationId` validates on construction and deserialization.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Longest accepted participant or federation name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name was empty.
    #[error("name is empty")]
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`] bytes.
    #[error("name is {0} bytes long; at most {MAX_NAME_LEN} are allowed")]
    TooLong(usize),
    /// The name holds a character outside `[a-z0-9._-]` or starts with `.`/`-`.
    #[error("name {0:?} must be lowercase ASCII letters, digits, '.', '_' or '-' and start with a letter or digit")]
    BadCharacter(String),
}

/// Checks a participant or federation name: `[a-z0-9][a-z0-9._-]*`, at most 64 bytes.
pub fn validate_name(s: &str) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty);
    }
    if s.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong(s.len()));
    }
    let first_ok = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok = s
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if !first_ok || !rest_ok {
        return Err(NameError::BadCharacter(s.to_string()));
    }
    Ok(())
}

macro_rules! name_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps a name (`[a-z0-9][a-z0-9._-]*`, at most 64 bytes).
            pub fn new(s: impl Into<String>) -> Result<Self, NameError> {
                let s = s.into();
                validate_name(&s)?;
                Ok(Self(s))
            }

            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, NameError> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::new(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_newtype!(
    /// A federation's name; it is bound into every signature so messages cannot cross federations.
    FederationId
);

pub use fedistill_ledger::{Digest, ParticipantId, RoundId};

/// Why a hex string was refused as a digest or key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HexError {
    /// Not valid hexadecimal.
    #[error("not hexadecimal: {0}")]
    NotHex(String),
    /// Decoded to the wrong number of bytes.
    #[error("expected {expected} bytes, got {got}")]
    WrongLength {
        /// Bytes required.
        expected: usize,
        /// Bytes found.
        got: usize,
    },
}

pub(crate) fn hex_to_array<const N: usize>(s: &str) -> Result<[u8; N], HexError> {
    let bytes = hex::decode(s.trim()).map_err(|e| HexError::NotHex(e.to_string()))?;
    let got = bytes.len();
    bytes.try_into().map_err(|_| HexError::WrongLength { expected: N, got })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!(validate_name("bank-a").is_ok());
        assert!(validate_name("h0.ward_1").is_ok());
        assert_eq!(validate_name(""), Err(NameError::Empty));
        assert!(matches!(validate_name("../etc"), Err(NameError::BadCharacter(_))));
        assert!(matches!(validate_name("Bank"), Err(NameError::BadCharacter(_))));
        assert!(matches!(validate_name("-x"), Err(NameError::BadCharacter(_))));
        assert_eq!(FederationId::new("a".repeat(65)), Err(NameError::TooLong(65)));
    }

    #[test]
    fn invalid_federation_ids_are_rejected_when_deserialized() {
        assert!(serde_json::from_str::<FederationId>("\"a/b\"").is_err());
        let ok: FederationId = serde_json::from_str("\"ok-1\"").expect("valid name");
        assert_eq!(ok.as_str(), "ok-1");
    }

    #[test]
    fn hex_arrays_check_length() {
        assert_eq!(hex_to_array::<2>("abcd"), Ok([0xab, 0xcd]));
        assert!(matches!(
            hex_to_array::<32>("abcd"),
            Err(HexError::WrongLength { expected: 32, got: 2 })
        ));
        assert!(matches!(hex_to_array::<2>("zz"), Err(HexError::NotHex(_))));
    }
}
