//! The auditor's trust file: the log's origin and key, the witnesses and the quorum, obtained
//! independently of the bundle (docs/security.md, "Running an audit").

use super::AuditError;
use crate::crypto::PublicKey;
use crate::ledger::note::{check_key_name, Trust};
use crate::ledger::{LogVerifier, WitnessKey};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustFile {
    origin: String,
    coordinator_key: String,
    quorum: usize,
    #[serde(default)]
    witness: Vec<TrustWitness>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustWitness {
    name: String,
    key: String,
}

fn parse_key(what: &str, hex_key: &str) -> Result<ed25519_dalek::VerifyingKey, AuditError> {
    let bytes: [u8; 32] = hex::decode(hex_key.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| AuditError::Trust(format!("{what}: a key is 64 hex characters (32 bytes)")))?;
    // Through PublicKey so weak keys are refused the same way as everywhere else.
    PublicKey::from_bytes(&bytes).map_err(|e| AuditError::Trust(format!("{what}: {e}")))?;
    ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|e| AuditError::Trust(format!("{what}: {e}")))
}

/// Parses a trust file (TOML; keys in docs/security.md):
/// `origin`, `coordinator_key` (hex), `quorum`, and `[[witness]]` tables with `name` and `key`.
pub fn parse_trust(text: &str) -> Result<Trust, AuditError> {
    let t: TrustFile = toml::from_str(text).map_err(|e| AuditError::Trust(e.to_string()))?;
    check_key_name(&t.origin).map_err(|e| AuditError::Trust(format!("origin: {e}")))?;
    let log = LogVerifier {
        origin: t.origin,
        key: parse_key("coordinator_key", &t.coordinator_key)?,
    };
    let mut witnesses: Vec<WitnessKey> = Vec::new();
    for w in t.witness {
        check_key_name(&w.name).map_err(|e| AuditError::Trust(format!("witness: {e}")))?;
        if witnesses.iter().any(|o| o.name == w.name) {
            return Err(AuditError::Trust(format!("witness {} listed twice", w.name)));
        }
        let key = parse_key(&format!("witness {}", w.name), &w.key)?;
        witnesses.push(WitnessKey { name: w.name, key });
    }
    if t.quorum > witnesses.len() {
        return Err(AuditError::Trust(format!(
            "quorum {} exceeds the {} witnesses listed",
            t.quorum,
            witnesses.len()
        )));
    }
    let trust = Trust {
        log,
        witnesses,
        quorum: t.quorum,
    };
    // One key listed under two names is one witness; refuse the file rather than guess.
    trust
        .check_distinct_witness_keys()
        .map_err(|e| AuditError::Trust(e.to_string()))?;
    Ok(trust)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;

    #[test]
    fn trust_files_are_validated() {
        let k = |s: u8| hex::encode(key(s).verifying_key().to_bytes());
        let ok = format!(
            "origin = \"{ORIGIN}\"\ncoordinator_key = \"{}\"\nquorum = 1\n[[witness]]\nname = \"w-a\"\nkey = \"{}\"\n",
            k(1),
            k(31)
        );
        let t = parse_trust(&ok).expect("valid");
        assert_eq!(t.quorum, 1);
        assert_eq!(t.log.origin, ORIGIN);
        for bad in [
            ok.replace("quorum = 1", "quorum = 2"),
            ok.replace(&k(1), "abcd"),
            ok.replace("origin = ", "extra = 1\norigin = "),
            ok.replace("\"w-a\"", "\"w a\""),
            format!("{ok}[[witness]]\nname = \"w-a\"\nkey = \"{}\"\n", k(32)),
        ] {
            assert!(parse_trust(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_trust_file_listing_one_key_under_two_names_is_refused() {
        let k = |s: u8| hex::encode(key(s).verifying_key().to_bytes());
        let text = format!(
            "origin = \"{ORIGIN}\"\ncoordinator_key = \"{}\"\nquorum = 2\n[[witness]]\nname = \"w-a\"\nkey = \"{}\"\n[[witness]]\nname = \"w-b\"\nkey = \"{}\"\n",
            k(1),
            k(31),
            k(31)
        );
        let err = parse_trust(&text).expect_err("same key twice");
        let msg = err.to_string();
        assert!(msg.contains("witnesses w-a and w-b have the same public key"), "{msg}");
        assert!(parse_trust(&text.replacen(&k(31), &k(32), 1)).is_ok());
    }

    #[test]
    fn a_parsed_trust_file_verifies_the_fixture() {
        let k = |s: u8| hex::encode(key(s).verifying_key().to_bytes());
        let text = format!(
            "origin = \"{ORIGIN}\"\ncoordinator_key = \"{}\"\nquorum = 2\n[[witness]]\nname = \"w-a\"\nkey = \"{}\"\n[[witness]]\nname = \"w-b\"\nkey = \"{}\"\n",
            k(1),
            k(31),
            k(32)
        );
        let t = parse_trust(&text).expect("valid");
        let r = verify(&good(), &t, Some(&ProtocolRecompute));
        assert!(r.ok(), "{:?}", r.failures);
        // The messages name what is wrong.
        let e = parse_trust(&text.replace(&k(1), "zz"))
            .expect_err("not hex")
            .to_string();
        assert_eq!(e, "trust file: coordinator_key: a key is 64 hex characters (32 bytes)");
        let e = parse_trust(&text.replace("quorum = 2", "quorum = 3"))
            .expect_err("quorum")
            .to_string();
        assert_eq!(e, "trust file: quorum 3 exceeds the 2 witnesses listed");
    }
}
