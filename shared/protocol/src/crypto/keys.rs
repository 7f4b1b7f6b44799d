//! ed25519 signing identities and public keys: generation from OS randomness, PKCS#8 / SPKI PEM,
//! hex, and strict verification.
//!
//! Only this module touches `ed25519_dalek` key types directly, so the rest of the code base sees
//! [`SigningIdentity`] and [`PublicKey`] and cannot pick the non-strict verifier by accident.

use super::ids::{hex_to_array, HexError};
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::spki::{DecodePublicKey, EncodePublicKey};
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, KeypairBytes};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// Length of an ed25519 signature in bytes.
pub const SIGNATURE_LEN: usize = 64;

/// Errors from key handling.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The operating system's random source failed.
    #[error("OS random source failed: {0}")]
    Random(String),
    /// A private key PEM could not be parsed as an ed25519 PKCS#8 document.
    #[error("not an ed25519 PKCS#8 private key PEM: {0}")]
    PrivatePem(String),
    /// A public key PEM could not be parsed as an ed25519 SubjectPublicKeyInfo.
    #[error("not an ed25519 public key PEM: {0}")]
    PublicPem(String),
    /// The 32 bytes are not a valid, non-weak ed25519 point.
    #[error("invalid ed25519 public key")]
    InvalidPublicKey,
    /// Encoding a key failed.
    #[error("could not encode key: {0}")]
    Encode(String),
    /// A hex-encoded key was malformed.
    #[error("bad hex key: {0}")]
    Hex(#[from] HexError),
}

/// A private ed25519 signing key. Debug output never shows key material.
pub struct SigningIdentity {
    key: SigningKey,
}

impl SigningIdentity {
    /// A new key from 32 bytes of OS randomness (`getrandom`).
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Self::from_seed(seed))
    }

    /// A key from a fixed 32-byte seed; tests and deterministic fixtures only.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// The underlying ed25519-dalek key, for the ledger's checkpoint and cosignature signers.
    pub fn to_dalek(&self) -> SigningKey {
        self.key.clone()
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.key.verifying_key())
    }

    /// Signs `message` as-is. Protocol code signs through [`super::Signed`], which adds domain separation.
    pub fn sign_raw(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.key.sign(message).to_bytes()
    }

    /// RFC 8410 PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), LF line endings: a version-0 (v1)
    /// `PrivateKeyInfo` holding only the 32-byte seed, no public key, the form `openssl genpkey -algorithm
    /// ed25519`, OpenSSL 3.0's `openssl pkey` and Python's `cryptography` read and write. (ed25519-dalek's own
    /// encoder writes a version-1 `OneAsymmetricKey` with the public key embedded, which those tools refuse.)
    pub fn to_pkcs8_pem(&self) -> Result<String, KeyError> {
        KeypairBytes {
            secret_key: self.key.to_bytes(),
            public_key: None,
        }
        .to_pkcs8_pem(LineEnding::LF)
        .map(|z| z.to_string())
        .map_err(|e| KeyError::Encode(e.to_string()))
    }

    /// Parses a PKCS#8 PEM private key, either form: RFC 8410 v1 (seed only, what [`Self::to_pkcs8_pem`]
    /// writes) or RFC 5958 v2 with the public key embedded (what earlier versions wrote), in which case the
    /// contained public key must match the private one.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, KeyError> {
        SigningKey::from_pkcs8_pem(pem)
            .map(|key| Self { key })
            .map_err(|e| KeyError::PrivatePem(e.to_string()))
    }
}

impl fmt::Debug for SigningIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningIdentity(public {})", self.public_key())
    }
}

/// An ed25519 public key. Displays and (in TOML/JSON) serializes as 64 hex digits; 32 bytes in bincode.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Parses 32 bytes; rejects points that are not on the curve and weak (small-order) keys.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| KeyError::InvalidPublicKey)?;
        if key.is_weak() {
            return Err(KeyError::InvalidPublicKey);
        }
        Ok(Self(key))
    }

    /// The 32 raw bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`).
    pub fn to_pem(&self) -> Result<String, KeyError> {
        self.0
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| KeyError::Encode(e.to_string()))
    }

    /// Parses a SubjectPublicKeyInfo PEM.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let key = VerifyingKey::from_public_key_pem(pem).map_err(|e| KeyError::PublicPem(e.to_string()))?;
        Self::from_bytes(&key.to_bytes())
    }

    /// Strict ed25519 verification (`verify_strict`: rejects non-canonical and small-order components).
    pub fn verify_strict(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(sig) = <[u8; SIGNATURE_LEN]>::try_from(signature) else {
            return false;
        };
        self.0.verify_strict(message, &Signature::from_bytes(&sig)).is_ok()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0.to_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        Self::from_bytes(&hex_to_array::<32>(s)?)
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_string())
        } else {
            self.0.to_bytes().serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            String::deserialize(d)?.parse().map_err(de::Error::custom)
        } else {
            let bytes = <[u8; 32]>::deserialize(d)?;
            Self::from_bytes(&bytes).map_err(de::Error::custom)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trips() {
        let id = SigningIdentity::from_seed([7u8; 32]);
        let pem = id.to_pkcs8_pem().expect("encode");
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let back = SigningIdentity::from_pkcs8_pem(&pem).expect("decode");
        assert_eq!(back.public_key(), id.public_key());
        let pub_pem = id.public_key().to_pem().expect("encode pub");
        assert_eq!(PublicKey::from_pem(&pub_pem).expect("decode pub"), id.public_key());
        let hex = id.public_key().to_string();
        assert_eq!(hex.parse::<PublicKey>().expect("hex"), id.public_key());
    }

    /// The seed-only RFC 8410 form, byte for byte (RFC 8410 section 10.3 layout): version 0, no public key.
    #[test]
    fn private_key_pem_is_rfc8410_pkcs8_v1() {
        let id = SigningIdentity::from_seed([7u8; 32]);
        let pem = id.to_pkcs8_pem().expect("encode");
        assert_eq!(
            pem,
            "-----BEGIN PRIVATE KEY-----\n\
             MC4CAQAwBQYDK2VwBCIEIAcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcH\n\
             -----END PRIVATE KEY-----\n"
        );
    }

    /// Keys written by earlier versions (ed25519-dalek's PKCS#8 v2 with the public key) still load, and
    /// a v2 document whose public key does not match its seed is refused.
    #[test]
    fn previous_pkcs8_v2_keys_still_load() {
        let v2 = "-----BEGIN PRIVATE KEY-----\n\
                  MFECAQEwBQYDK2VwBCIEIAcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcH\n\
                  gSEA6kpsY+KcUgq+9VB7Ey7F+ZVHdq6+vnuSQh7qaRRG0iw=\n\
                  -----END PRIVATE KEY-----\n";
        let id = SigningIdentity::from_pkcs8_pem(v2).expect("v2 still loads");
        assert_eq!(id.public_key(), SigningIdentity::from_seed([7u8; 32]).public_key());
        // The same document with the last public key byte changed (0x2c -> 0x2d).
        let mismatched = v2.replace("0iw=", "0i0=");
        assert!(SigningIdentity::from_pkcs8_pem(&mismatched).is_err());
    }

    #[test]
    fn generated_keys_differ_and_sign() {
        let a = SigningIdentity::generate().expect("rng");
        let b = SigningIdentity::generate().expect("rng");
        assert_ne!(a.public_key(), b.public_key());
        let sig = a.sign_raw(b"msg");
        assert!(a.public_key().verify_strict(b"msg", &sig));
        assert!(!a.public_key().verify_strict(b"msg2", &sig));
        assert!(!b.public_key().verify_strict(b"msg", &sig));
        assert!(!a.public_key().verify_strict(b"msg", &sig[..63]));
    }

    #[test]
    fn garbage_is_rejected() {
        assert!(SigningIdentity::from_pkcs8_pem("not a pem").is_err());
        assert!(PublicKey::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").is_err());
        // The identity point (0x01 followed by zeros) is a small-order, weak key.
        let mut weak = [0u8; 32];
        weak[0] = 1;
        assert!(matches!(PublicKey::from_bytes(&weak), Err(KeyError::InvalidPublicKey)));
    }
}
