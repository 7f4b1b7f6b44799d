//! The federation roster: who may connect (certificate fingerprint), with which ed25519 key they sign,
//! and whether they are active or revoked, in a TOML envelope signed by the operator key.
//!
//! File format (`roster.toml`, see docs/security.md):
//! ```toml
//! format = "fedistill-roster/1"
//! signature = "<128 hex digits>"   # ed25519 over signing_bytes("fedistill/roster", federation, 0, version, sha256(body))
//! body = '''<the roster TOML, verbatim>'''
//! ```
//! The signature covers the exact body bytes; the body is parsed only after `verify_strict` succeeded.

use super::ProvisionError;
use crate::crypto::{
    signing_bytes, validate_name, Digest, FederationId, ParticipantId, PublicKey, RoundId, SigningIdentity,
};
use serde::{Deserialize, Serialize};

/// Domain tag of the roster signature.
pub const ROSTER_DOMAIN: &str = "fedistill/roster";
/// Value of the envelope's `format` key.
pub const ROSTER_FORMAT: &str = "fedistill-roster/1";

/// Whether a participant may connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Enrolled and allowed.
    Active,
    /// Revoked: its certificate is on the CRL and connections are refused.
    Revoked,
}

impl Status {
    /// As written in the roster: `active` or `revoked`.
    pub fn name(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Revoked => "revoked",
        }
    }
}

/// One enrolled participant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterEntry {
    /// Participant name (also the certificate's common name).
    pub id: ParticipantId,
    /// SHA-256 of the client certificate's DER, lowercase hex.
    pub cert_sha256: Digest,
    /// The certificate's serial number (hex), for the CRL.
    pub cert_serial: String,
    /// The participant's ed25519 public key (hex) that signs its protocol messages.
    pub signing_key: PublicKey,
    /// Active or revoked.
    pub status: Status,
}

/// The roster contents (the signed body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roster {
    /// Federation this roster belongs to.
    pub federation: FederationId,
    /// Monotonic version, bumped on every change; also the CRL number.
    pub version: u64,
    /// Enrolled participants.
    #[serde(default, rename = "participant")]
    pub participants: Vec<RosterEntry>,
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    format: String,
    signature: String,
    body: String,
}

impl Roster {
    /// An empty roster at version 0.
    pub fn new(federation: FederationId) -> Self {
        Self {
            federation,
            version: 0,
            participants: Vec::new(),
        }
    }

    /// The entry whose certificate has this fingerprint.
    pub fn by_fingerprint(&self, fp: &Digest) -> Option<&RosterEntry> {
        self.participants.iter().find(|e| &e.cert_sha256 == fp)
    }

    /// The entry for a participant name.
    pub fn by_id(&self, id: &ParticipantId) -> Option<&RosterEntry> {
        self.participants.iter().find(|e| &e.id == id)
    }

    /// The entry (active or revoked) that holds this ed25519 signing key.
    pub fn by_signing_key(&self, key: &PublicKey) -> Option<&RosterEntry> {
        self.participants.iter().find(|e| &e.signing_key == key)
    }

    /// Refuses a new participant whose name is taken or whose signing key is already enrolled (by
    /// an active or a revoked entry): one key under two names would let one signer pass as two
    /// participants, and as two witnesses toward a quorum.
    pub fn check_new_participant(&self, id: &ParticipantId, signing_key: &PublicKey) -> Result<(), ProvisionError> {
        if self.by_id(id).is_some() {
            return Err(ProvisionError::AlreadyEnrolled(id.clone()));
        }
        if let Some(holder) = self.by_signing_key(signing_key) {
            return Err(ProvisionError::SigningKeyEnrolled {
                key: signing_key.to_string(),
                holder: holder.id.clone(),
                status: holder.status.name().to_string(),
            });
        }
        Ok(())
    }

    /// Serial numbers of every revoked certificate.
    pub fn revoked_serials(&self) -> Vec<String> {
        self.participants
            .iter()
            .filter(|e| e.status == Status::Revoked)
            .map(|e| e.cert_serial.clone())
            .collect()
    }

    /// Serializes and signs the roster with the operator key.
    pub fn to_signed_toml(&self, operator: &SigningIdentity) -> Result<String, ProvisionError> {
        let body = toml::to_string(self).map_err(|e| ProvisionError::Roster(e.to_string()))?;
        let msg = signing_bytes(
            ROSTER_DOMAIN,
            &self.federation,
            RoundId(0),
            self.version,
            &Digest::of(body.as_bytes()),
        );
        let env = Envelope {
            format: ROSTER_FORMAT.to_string(),
            signature: hex::encode(operator.sign_raw(&msg)),
            body,
        };
        toml::to_string(&env).map_err(|e| ProvisionError::Roster(e.to_string()))
    }

    /// Parses a signed roster, verifies the operator signature (`verify_strict` over the exact body
    /// bytes) and that it belongs to `federation`, then validates every entry.
    pub fn from_signed_toml(
        text: &str,
        operator: &PublicKey,
        federation: &FederationId,
    ) -> Result<Self, ProvisionError> {
        let env: Envelope = toml::from_str(text).map_err(|e| ProvisionError::Roster(format!("envelope: {e}")))?;
        if env.format != ROSTER_FORMAT {
            return Err(ProvisionError::Roster(format!(
                "unknown roster format {:?}, expected {ROSTER_FORMAT:?}",
                env.format
            )));
        }
        let sig = hex::decode(&env.signature).map_err(|_| ProvisionError::RosterSignature)?;
        // The version and federation are inside the signed body; parse them only to rebuild the signed
        // bytes, and trust nothing else until the signature verified.
        #[derive(Deserialize)]
        struct Head {
            federation: FederationId,
            version: u64,
        }
        let head: Head = toml::from_str(&env.body).map_err(|e| ProvisionError::Roster(format!("body: {e}")))?;
        let msg = signing_bytes(
            ROSTER_DOMAIN,
            &head.federation,
            RoundId(0),
            head.version,
            &Digest::of(env.body.as_bytes()),
        );
        if !operator.verify_strict(&msg, &sig) {
            return Err(ProvisionError::RosterSignature);
        }
        if &head.federation != federation {
            return Err(ProvisionError::Roster(format!(
                "roster is for federation {}, expected {federation}",
                head.federation
            )));
        }
        let roster: Roster = toml::from_str(&env.body).map_err(|e| ProvisionError::Roster(format!("body: {e}")))?;
        for (i, e) in roster.participants.iter().enumerate() {
            validate_name(e.id.as_str()).map_err(|err| ProvisionError::Roster(format!("entry {i}: {err}")))?;
            if roster.participants[..i]
                .iter()
                .any(|o| o.id == e.id || o.cert_sha256 == e.cert_sha256)
            {
                return Err(ProvisionError::Roster(format!(
                    "duplicate participant or certificate: {}",
                    e.id
                )));
            }
            if let Some(o) = roster.participants[..i].iter().find(|o| o.signing_key == e.signing_key) {
                return Err(ProvisionError::Roster(format!(
                    "participants {} and {} have the same signing key {}",
                    o.id, e.id, e.signing_key
                )));
            }
        }
        Ok(roster)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Roster {
        let mut r = Roster::new(FederationId::new("fed").expect("valid"));
        r.version = 3;
        r.participants.push(RosterEntry {
            id: ParticipantId::new("bank-a"),
            cert_sha256: Digest::of(b"cert"),
            cert_serial: "01ab".into(),
            signing_key: SigningIdentity::from_seed([9; 32]).public_key(),
            status: Status::Active,
        });
        r
    }

    #[test]
    fn signed_roster_round_trips() {
        let op = SigningIdentity::from_seed([1; 32]);
        let text = sample().to_signed_toml(&op).expect("sign");
        let back =
            Roster::from_signed_toml(&text, &op.public_key(), &FederationId::new("fed").expect("v")).expect("verify");
        assert_eq!(back, sample());
        assert_eq!(
            back.by_fingerprint(&Digest::of(b"cert")).map(|e| e.id.as_str()),
            Some("bank-a")
        );
    }

    #[test]
    fn tampered_or_foreign_roster_is_rejected() {
        let op = SigningIdentity::from_seed([1; 32]);
        let fed = FederationId::new("fed").expect("v");
        let text = sample().to_signed_toml(&op).expect("sign");
        let tampered = text.replace("active", "revoked");
        assert!(matches!(
            Roster::from_signed_toml(&tampered, &op.public_key(), &fed),
            Err(ProvisionError::RosterSignature)
        ));
        let other = SigningIdentity::from_seed([2; 32]);
        assert!(matches!(
            Roster::from_signed_toml(&text, &other.public_key(), &fed),
            Err(ProvisionError::RosterSignature)
        ));
        let wrong_fed = FederationId::new("other").expect("v");
        assert!(matches!(
            Roster::from_signed_toml(&text, &op.public_key(), &wrong_fed),
            Err(ProvisionError::Roster(_))
        ));
        assert!(Roster::from_signed_toml("garbage = ", &op.public_key(), &fed).is_err());
    }

    /// A (correctly signed) roster with one signing key under two participants is refused on load,
    /// naming both; a new participant with an enrolled key is refused naming the holder.
    #[test]
    fn one_signing_key_under_two_participants_is_refused() {
        let op = SigningIdentity::from_seed([1; 32]);
        let fed = FederationId::new("fed").expect("v");
        let mut r = sample();
        let mut twin = r.participants[0].clone();
        twin.id = ParticipantId::new("bank-b");
        twin.cert_sha256 = Digest::of(b"other cert");
        twin.cert_serial = "02cd".into();
        r.participants.push(twin);
        let text = r.to_signed_toml(&op).expect("sign");
        let err = Roster::from_signed_toml(&text, &op.public_key(), &fed).expect_err("same key twice");
        let msg = err.to_string();
        assert!(
            msg.contains("participants bank-a and bank-b have the same signing key"),
            "{msg}"
        );
        let s = sample();
        let key = s.participants[0].signing_key;
        assert!(matches!(
            s.check_new_participant(&ParticipantId::new("bank-b"), &key),
            Err(ProvisionError::SigningKeyEnrolled { ref holder, .. }) if holder.as_str() == "bank-a"
        ));
        assert!(matches!(
            s.check_new_participant(
                &ParticipantId::new("bank-a"),
                &SigningIdentity::from_seed([5; 32]).public_key()
            ),
            Err(ProvisionError::AlreadyEnrolled(_))
        ));
        s.check_new_participant(
            &ParticipantId::new("bank-b"),
            &SigningIdentity::from_seed([5; 32]).public_key(),
        )
        .expect("a new name with a new key");
    }
}
