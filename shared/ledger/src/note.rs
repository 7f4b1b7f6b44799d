//! Checkpoints in the C2SP signed-note format (c2sp.org/signed-note, c2sp.org/tlog-checkpoint),
//! signed by the coordinator's ed25519 key, and witness cosignatures per c2sp.org/tlog-cosignature
//! (Ed25519 `cosignature/v1`, a timestamped signature).
//!
//! The checkpoint body is built and parsed by `tlog_tiles::Checkpoint`. The note envelope (signature
//! lines) is written here rather than with the `signed_note` crate: that crate (0.2) verifies with
//! ed25519-dalek 2's non-strict `verify` and has no cosignature type, and fedistill requires
//! `verify_strict` on every signature (ed25519-dalek 3, already in the tree). Parsing is strict:
//! anything that is not exactly what this module writes is refused, so a bundle has one spelling.

use crate::ids::Digest;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};

/// Largest signed note accepted.
pub const MAX_NOTE_LEN: usize = 64 * 1024;
/// Most signature lines accepted on one note.
pub const MAX_SIGNATURES: usize = 64;
/// signed-note signature type byte for Ed25519 (used in the log key's key id).
pub const ALG_ED25519: u8 = 0x01;
/// tlog-cosignature type byte for Ed25519 `cosignature/v1` (used in witness key ids).
pub const ALG_COSIGNATURE_V1: u8 = 0x04;
const DASH: &str = "\u{2014} ";

/// Why a note, checkpoint or signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// The bytes are not a well-formed signed note / checkpoint.
    #[error("malformed signed note: {0}")]
    Malformed(String),
    /// The checkpoint names a different log.
    #[error("checkpoint origin {got:?} is not the trusted origin {want:?}")]
    Origin {
        /// Origin line of the checkpoint.
        got: String,
        /// Trusted origin.
        want: String,
    },
    /// No signature line from the coordinator's key.
    #[error("checkpoint is not signed by the log key {0}")]
    MissingLogSignature(String),
    /// A signature (log or witness) does not verify.
    #[error("bad signature from {name} (key id {key_id})")]
    BadSignature {
        /// Key name on the signature line.
        name: String,
        /// Key id, hex.
        key_id: String,
    },
    /// A signature line from a key the verifier does not trust.
    #[error("signature from an unknown key {name} (key id {key_id})")]
    UnknownSigner {
        /// Key name on the signature line.
        name: String,
        /// Key id, hex.
        key_id: String,
    },
    /// Two signature lines from the same key.
    #[error("duplicate signature from {0}")]
    Duplicate(String),
    /// A key name is empty or contains whitespace or '+'.
    #[error("invalid key name {0:?}")]
    KeyName(String),
    /// Two trusted witnesses share one public key (a key counts once toward a quorum).
    #[error("witnesses {first} and {second} have the same public key; list each witness key once")]
    DuplicateWitnessKey {
        /// The name listed first.
        first: String,
        /// The later name with the same key.
        second: String,
    },
}

fn malformed(m: impl Into<String>) -> NoteError {
    NoteError::Malformed(m.into())
}

/// Checks a key name per c2sp.org/signed-note: non-empty, no Unicode whitespace, no '+'.
pub fn check_key_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty() || name.chars().any(char::is_whitespace) || name.contains('+') {
        return Err(NoteError::KeyName(name.to_string()));
    }
    Ok(())
}

/// `SHA-256(name || 0x0A || alg || public key)[:4]`.
pub fn key_id(name: &str, alg: u8, key: &VerifyingKey) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([alg]);
    h.update(key.as_bytes());
    let out = h.finalize();
    [out[0], out[1], out[2], out[3]]
}

/// A tree head: the origin (log name), the tree size and the root hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Log identity (first line).
    pub origin: String,
    /// Number of leaves.
    pub size: u64,
    /// RFC 6962 root hash.
    pub root: Digest,
}

impl Checkpoint {
    /// The note body: `origin\nsize\nbase64(root)\n` (no extension lines).
    pub fn body(&self) -> Result<Vec<u8>, NoteError> {
        if self.origin.chars().any(|c| c.is_control()) {
            return Err(malformed("origin contains a control character"));
        }
        tlog_tiles::Checkpoint::new(&self.origin, self.size, tlog_tiles::Hash(self.root.0), "")
            .map(|c| c.to_bytes())
            .map_err(|_| malformed("origin must not be empty"))
    }

    /// Parses a note body as written by [`Checkpoint::body`]; extension lines are refused.
    pub fn parse_body(body: &[u8]) -> Result<Checkpoint, NoteError> {
        let c = tlog_tiles::Checkpoint::from_bytes(body).map_err(|_| malformed("bad checkpoint body"))?;
        if !c.extension().is_empty() {
            return Err(malformed("checkpoint extension lines are not used by fedistill"));
        }
        let cp = Checkpoint {
            origin: c.origin().to_string(),
            size: c.size(),
            root: Digest(c.hash().0),
        };
        // One spelling only (base64 of the root, decimal size).
        if cp.body()? != body {
            return Err(malformed("checkpoint body is not in canonical form"));
        }
        Ok(cp)
    }
}

/// One signature line of a note: `— <name> base64(key id || signature bytes)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    /// Key name.
    pub name: String,
    /// 4-byte key id.
    pub key_id: [u8; 4],
    /// Signature bytes after the key id (64 for the log, 8 + 64 for a cosignature).
    pub sig: Vec<u8>,
}

impl NoteSignature {
    fn line(&self) -> String {
        let mut blob = self.key_id.to_vec();
        blob.extend_from_slice(&self.sig);
        format!("{DASH}{} {}\n", self.name, B64.encode(blob))
    }

    fn parse_line(line: &str) -> Result<NoteSignature, NoteError> {
        let rest = line
            .strip_prefix(DASH)
            .ok_or_else(|| malformed("signature line must start with an em dash"))?;
        let (name, b64) = rest
            .split_once(' ')
            .ok_or_else(|| malformed("signature line has no key name"))?;
        check_key_name(name)?;
        let blob = B64
            .decode(b64)
            .map_err(|_| malformed("signature is not canonical base64"))?;
        if blob.len() < 5 {
            return Err(malformed("signature too short"));
        }
        let key_id = [blob[0], blob[1], blob[2], blob[3]];
        Ok(NoteSignature {
            name: name.to_string(),
            key_id,
            sig: blob[4..].to_vec(),
        })
    }

    /// `name+keyidhex` for messages.
    pub fn label(&self) -> String {
        format!("{}+{}", self.name, hex::encode(self.key_id))
    }
}

/// A checkpoint with its signature lines (the log's and any witnesses').
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// The signed tree head.
    pub checkpoint: Checkpoint,
    /// Signature lines in note order.
    pub signatures: Vec<NoteSignature>,
}

impl SignedCheckpoint {
    /// The full signed note: body, blank line, signature lines.
    pub fn to_note(&self) -> Result<Vec<u8>, NoteError> {
        let mut out = self.checkpoint.body()?;
        out.push(b'\n');
        for s in &self.signatures {
            check_key_name(&s.name)?;
            out.extend_from_slice(s.line().as_bytes());
        }
        Ok(out)
    }

    /// Parses a signed note strictly (see the module docs). Signatures are not verified here.
    pub fn parse(note: &[u8]) -> Result<SignedCheckpoint, NoteError> {
        if note.len() > MAX_NOTE_LEN {
            return Err(malformed(format!(
                "note is {} bytes, more than {MAX_NOTE_LEN}",
                note.len()
            )));
        }
        let text = std::str::from_utf8(note).map_err(|_| malformed("note is not UTF-8"))?;
        if text.chars().any(|c| c.is_control() && c != '\n') {
            return Err(malformed("note contains a control character"));
        }
        let (body, sigs) = text
            .rsplit_once("\n\n")
            .ok_or_else(|| malformed("no blank line before signatures"))?;
        let body = format!("{body}\n");
        let checkpoint = Checkpoint::parse_body(body.as_bytes())?;
        let sigs = sigs
            .strip_suffix('\n')
            .ok_or_else(|| malformed("note must end with a newline"))?;
        let mut signatures = Vec::new();
        for line in sigs.split('\n') {
            if signatures.len() == MAX_SIGNATURES {
                return Err(malformed(format!("more than {MAX_SIGNATURES} signatures")));
            }
            let s = NoteSignature::parse_line(line)?;
            if signatures
                .iter()
                .any(|o: &NoteSignature| o.name == s.name && o.key_id == s.key_id)
            {
                return Err(NoteError::Duplicate(s.label()));
            }
            signatures.push(s);
        }
        Ok(SignedCheckpoint { checkpoint, signatures })
    }

    /// Adds (or replaces) a witness cosignature line.
    pub fn add_cosignature(&mut self, c: &Cosignature) {
        let line = c.to_note_signature();
        self.signatures
            .retain(|s| !(s.name == line.name && s.key_id == line.key_id));
        self.signatures.push(line);
    }

    /// The checkpoint with only the log's signature lines (drops cosignatures), given the log name.
    pub fn without_cosignatures(&self) -> SignedCheckpoint {
        SignedCheckpoint {
            checkpoint: self.checkpoint.clone(),
            signatures: self
                .signatures
                .iter()
                .filter(|s| s.name == self.checkpoint.origin)
                .cloned()
                .collect(),
        }
    }
}

/// The coordinator's checkpoint signer. The key name is the log origin.
pub struct LogSigner {
    origin: String,
    key: SigningKey,
}

impl LogSigner {
    /// A signer for the log `origin` (a valid key name: no spaces, no '+').
    pub fn new(origin: &str, key: SigningKey) -> Result<LogSigner, NoteError> {
        check_key_name(origin)?;
        Ok(LogSigner {
            origin: origin.to_string(),
            key,
        })
    }

    /// Log origin.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The matching verifier.
    pub fn verifier(&self) -> LogVerifier {
        LogVerifier {
            origin: self.origin.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// Signs a tree head of this log.
    pub fn sign(&self, size: u64, root: Digest) -> Result<SignedCheckpoint, NoteError> {
        let checkpoint = Checkpoint {
            origin: self.origin.clone(),
            size,
            root,
        };
        let body = checkpoint.body()?;
        let sig: Signature = self.key.sign(&body);
        Ok(SignedCheckpoint {
            signatures: vec![NoteSignature {
                name: self.origin.clone(),
                key_id: key_id(&self.origin, ALG_ED25519, &self.key.verifying_key()),
                sig: sig.to_bytes().to_vec(),
            }],
            checkpoint,
        })
    }
}

/// Verifies the coordinator's checkpoint signatures for one log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogVerifier {
    /// Trusted origin (also the key name).
    pub origin: String,
    /// The coordinator's public key.
    pub key: VerifyingKey,
}

impl LogVerifier {
    /// The key id this log's signature lines carry.
    pub fn key_id(&self) -> [u8; 4] {
        key_id(&self.origin, ALG_ED25519, &self.key)
    }

    /// Checks the origin and the log's signature (`verify_strict`). Other signature lines are
    /// left to the caller (see [`Trust::verify`] for the strict all-lines check).
    pub fn verify(&self, sc: &SignedCheckpoint) -> Result<(), NoteError> {
        if sc.checkpoint.origin != self.origin {
            return Err(NoteError::Origin {
                got: sc.checkpoint.origin.clone(),
                want: self.origin.clone(),
            });
        }
        let id = self.key_id();
        let line = sc
            .signatures
            .iter()
            .find(|s| s.name == self.origin && s.key_id == id)
            .ok_or_else(|| NoteError::MissingLogSignature(format!("{}+{}", self.origin, hex::encode(id))))?;
        let bad = || NoteError::BadSignature {
            name: line.name.clone(),
            key_id: hex::encode(line.key_id),
        };
        let sig_bytes: [u8; 64] = line.sig.as_slice().try_into().map_err(|_| bad())?;
        let body = sc.checkpoint.body()?;
        self.key
            .verify_strict(&body, &Signature::from_bytes(&sig_bytes))
            .map_err(|_| bad())
    }
}

/// A witness's cosignature on a checkpoint (c2sp.org/tlog-cosignature, Ed25519 `cosignature/v1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cosignature {
    /// Witness key name.
    pub name: String,
    /// Witness key id (type byte 0x04).
    pub key_id: [u8; 4],
    /// Seconds since the Unix epoch when the witness signed.
    pub timestamp: u64,
    /// Ed25519 signature over the cosigned message.
    pub signature: [u8; 64],
}

/// The message a `cosignature/v1` signs: `cosignature/v1\ntime <ts>\n` followed by the body.
pub fn cosigned_message(checkpoint: &Checkpoint, timestamp: u64) -> Result<Vec<u8>, NoteError> {
    let mut msg = format!("cosignature/v1\ntime {timestamp}\n").into_bytes();
    msg.extend_from_slice(&checkpoint.body()?);
    Ok(msg)
}

impl Cosignature {
    /// Cosigns `checkpoint` as witness `name` at `timestamp` (Unix seconds, at most 2^63-1).
    pub fn sign(
        checkpoint: &Checkpoint,
        name: &str,
        key: &SigningKey,
        timestamp: u64,
    ) -> Result<Cosignature, NoteError> {
        check_key_name(name)?;
        if timestamp > i64::MAX as u64 {
            return Err(malformed("cosignature timestamp exceeds 2^63-1"));
        }
        let sig: Signature = key.sign(&cosigned_message(checkpoint, timestamp)?);
        Ok(Cosignature {
            name: name.to_string(),
            key_id: key_id(name, ALG_COSIGNATURE_V1, &key.verifying_key()),
            timestamp,
            signature: sig.to_bytes(),
        })
    }

    /// As a note signature line (`timestamp || signature` after the key id).
    pub fn to_note_signature(&self) -> NoteSignature {
        let mut sig = self.timestamp.to_be_bytes().to_vec();
        sig.extend_from_slice(&self.signature);
        NoteSignature {
            name: self.name.clone(),
            key_id: self.key_id,
            sig,
        }
    }

    /// Reads a cosignature out of a signature line (shape only; see [`WitnessKey::verify`]).
    pub fn from_note_signature(s: &NoteSignature) -> Result<Cosignature, NoteError> {
        if s.sig.len() != 72 {
            return Err(malformed(format!(
                "cosignature from {} is {} bytes, not 72",
                s.label(),
                s.sig.len()
            )));
        }
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&s.sig[..8]);
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&s.sig[8..]);
        Ok(Cosignature {
            name: s.name.clone(),
            key_id: s.key_id,
            timestamp: u64::from_be_bytes(ts),
            signature,
        })
    }
}

/// A trusted witness: key name and ed25519 public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessKey {
    /// Key name (e.g. `fedistill-witness/bank-a`).
    pub name: String,
    /// Public key.
    pub key: VerifyingKey,
}

impl WitnessKey {
    /// Key id with the cosignature type byte 0x04.
    pub fn key_id(&self) -> [u8; 4] {
        key_id(&self.name, ALG_COSIGNATURE_V1, &self.key)
    }

    /// Verifies a cosignature of `checkpoint` by this witness (`verify_strict`), returning its timestamp.
    pub fn verify(&self, checkpoint: &Checkpoint, c: &Cosignature) -> Result<u64, NoteError> {
        let bad = || NoteError::BadSignature {
            name: c.name.clone(),
            key_id: hex::encode(c.key_id),
        };
        if c.name != self.name || c.key_id != self.key_id() || c.timestamp > i64::MAX as u64 {
            return Err(bad());
        }
        let msg = cosigned_message(checkpoint, c.timestamp)?;
        self.key
            .verify_strict(&msg, &Signature::from_bytes(&c.signature))
            .map_err(|_| bad())?;
        Ok(c.timestamp)
    }
}

/// What an auditor trusts: the log key and origin, the witnesses and how many must cosign.
#[derive(Debug, Clone)]
pub struct Trust {
    /// The coordinator's log key.
    pub log: LogVerifier,
    /// Trusted witnesses.
    pub witnesses: Vec<WitnessKey>,
    /// Distinct witnesses whose cosignature the head checkpoint needs.
    pub quorum: usize,
}

impl Trust {
    /// Refuses a witness list that names one public key twice (under the same or different names):
    /// such a list would let one key's cosignatures count twice toward a quorum. Quorums count
    /// distinct keys regardless ([`Trust::verify_quorum`]); this is the load-time refusal.
    pub fn check_distinct_witness_keys(&self) -> Result<(), NoteError> {
        for (i, w) in self.witnesses.iter().enumerate() {
            if let Some(first) = self.witnesses[..i].iter().find(|o| o.key == w.key) {
                return Err(NoteError::DuplicateWitnessKey {
                    first: first.name.clone(),
                    second: w.name.clone(),
                });
            }
        }
        Ok(())
    }

    /// Verifies every signature line of `sc`: the log's signature must be present and valid, every
    /// other line must be a valid cosignature from a trusted witness (unknown signers are refused,
    /// so nothing in a bundle goes unchecked). Returns the names of the witnesses that cosigned.
    /// Names are not a quorum: one key listed under two names cosigns twice; count with
    /// [`Trust::verify_quorum`].
    pub fn verify(&self, sc: &SignedCheckpoint) -> Result<Vec<String>, NoteError> {
        Ok(self.verify_cosigners(sc)?.into_iter().map(|w| w.name.clone()).collect())
    }

    /// Verifies as [`Trust::verify`] and returns what counts toward the quorum: the cosigners'
    /// names and the number of **distinct public keys** among them.
    pub fn verify_quorum(&self, sc: &SignedCheckpoint) -> Result<Cosigners, NoteError> {
        let cosigners = self.verify_cosigners(sc)?;
        let mut keys: Vec<[u8; 32]> = cosigners.iter().map(|w| w.key.to_bytes()).collect();
        keys.sort_unstable();
        keys.dedup();
        let mut names: Vec<String> = cosigners.iter().map(|w| w.name.clone()).collect();
        names.sort();
        names.dedup();
        Ok(Cosigners {
            names,
            distinct_keys: keys.len(),
        })
    }

    /// Verifies every signature line (see [`Trust::verify`]); returns the trusted witness entry
    /// behind each verified cosignature, in note order.
    pub fn verify_cosigners(&self, sc: &SignedCheckpoint) -> Result<Vec<&WitnessKey>, NoteError> {
        self.log.verify(sc)?;
        let log_id = self.log.key_id();
        let mut cosigners = Vec::new();
        for line in &sc.signatures {
            if line.name == self.log.origin && line.key_id == log_id {
                continue;
            }
            let w = self
                .witnesses
                .iter()
                .find(|w| w.name == line.name && w.key_id() == line.key_id)
                .ok_or_else(|| NoteError::UnknownSigner {
                    name: line.name.clone(),
                    key_id: hex::encode(line.key_id),
                })?;
            let c = Cosignature::from_note_signature(line)?;
            w.verify(&sc.checkpoint, &c)?;
            cosigners.push(w);
        }
        Ok(cosigners)
    }
}

/// The witnesses whose cosignatures on one checkpoint verified.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cosigners {
    /// Their names, sorted, each once.
    pub names: Vec<String>,
    /// How many distinct public keys cosigned: what a quorum counts.
    pub distinct_keys: usize,
}

impl Cosigners {
    /// True when at least `quorum` distinct keys cosigned.
    pub fn meets(&self, quorum: usize) -> bool {
        self.distinct_keys >= quorum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    /// The Go `golang.org/x/mod/sumdb/note` documentation example (also in signed_note's docs):
    /// skey `PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz`
    /// signs the two-line text below to the signature line below. Ed25519 is deterministic, so our
    /// key id and signature line must match byte for byte.
    #[test]
    fn signature_line_matches_the_go_note_reference_example() {
        let skey = B64
            .decode("AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz")
            .expect("vector");
        assert_eq!(skey[0], ALG_ED25519);
        let seed: [u8; 32] = skey[1..].try_into().expect("32-byte seed");
        let k = SigningKey::from_bytes(&seed);
        assert_eq!(
            hex::encode(key_id("PeterNeumann", ALG_ED25519, &k.verifying_key())),
            "c74f20a3"
        );
        let text =
            "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
        let sig = k.sign(text.as_bytes());
        let line = NoteSignature {
            name: "PeterNeumann".into(),
            key_id: key_id("PeterNeumann", ALG_ED25519, &k.verifying_key()),
            sig: sig.to_bytes().to_vec(),
        }
        .line();
        assert_eq!(
            line,
            "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
        );
    }

    #[test]
    fn checkpoint_note_round_trips_and_verifies() {
        let signer = LogSigner::new("fedistill.test/fed-1", key(1)).expect("valid name");
        let sc = signer.sign(5, Digest::of(b"root")).expect("signs");
        let note = sc.to_note().expect("formats");
        let text = String::from_utf8(note.clone()).expect("utf8");
        assert!(text.starts_with("fedistill.test/fed-1\n5\n"), "{text}");
        let back = SignedCheckpoint::parse(&note).expect("parses");
        assert_eq!(back, sc);
        signer.verifier().verify(&back).expect("verifies");
    }

    #[test]
    fn other_key_wrong_origin_and_tampering_are_refused() {
        let signer = LogSigner::new("fed", key(1)).expect("valid name");
        let sc = signer.sign(5, Digest::of(b"root")).expect("signs");
        let other = LogSigner::new("fed", key(2))
            .expect("valid name")
            .sign(5, Digest::of(b"root"))
            .expect("signs");
        assert!(matches!(
            signer.verifier().verify(&other),
            Err(NoteError::MissingLogSignature(_))
        ));
        let mut bigger = sc.clone();
        bigger.checkpoint.size = 6;
        assert!(matches!(
            signer.verifier().verify(&bigger),
            Err(NoteError::BadSignature { .. })
        ));
        let v2 = LogVerifier {
            origin: "other".into(),
            key: key(1).verifying_key(),
        };
        assert!(matches!(v2.verify(&sc), Err(NoteError::Origin { .. })));
    }

    #[test]
    fn malformed_notes_are_refused() {
        let sc = LogSigner::new("fed", key(1))
            .expect("valid")
            .sign(5, Digest::of(b"r"))
            .expect("signs");
        let note = sc.to_note().expect("formats");
        for cut in 0..note.len() {
            assert!(SignedCheckpoint::parse(&note[..cut]).is_err(), "cut {cut}");
        }
        let text = String::from_utf8(note).expect("utf8");
        for bad in [
            text.replace("\n5\n", "\n05\n"),
            text.replace("\u{2014}", "-"),
            format!("{text}{}", text.lines().last().unwrap_or_default()) + "\n",
            text.replace("fed\n5", "fed\n5\next"),
        ] {
            assert!(SignedCheckpoint::parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert!(SignedCheckpoint::parse(&vec![b'a'; MAX_NOTE_LEN + 1]).is_err());
    }

    #[test]
    fn cosignatures_verify_and_strict_trust_refuses_unknown_or_forged_lines() {
        let signer = LogSigner::new("fed", key(1)).expect("valid");
        let mut sc = signer.sign(3, Digest::of(b"r")).expect("signs");
        let w1 = WitnessKey {
            name: "w1".into(),
            key: key(11).verifying_key(),
        };
        let w2 = WitnessKey {
            name: "w2".into(),
            key: key(12).verifying_key(),
        };
        let c1 = Cosignature::sign(&sc.checkpoint, "w1", &key(11), 1_700_000_000).expect("cosigns");
        sc.add_cosignature(&c1);
        let trust = Trust {
            log: signer.verifier(),
            witnesses: vec![w1.clone(), w2.clone()],
            quorum: 1,
        };
        let parsed = SignedCheckpoint::parse(&sc.to_note().expect("formats")).expect("parses");
        assert_eq!(trust.verify(&parsed).expect("verifies"), vec!["w1".to_string()]);
        assert_eq!(w1.verify(&sc.checkpoint, &c1), Ok(1_700_000_000));
        // A forged cosignature: right name and key id, signature by another key.
        let mut forged = Cosignature::sign(&sc.checkpoint, "w2", &key(99), 1_700_000_000).expect("cosigns");
        forged.key_id = w2.key_id();
        let mut f = sc.clone();
        f.add_cosignature(&forged);
        assert!(matches!(trust.verify(&f), Err(NoteError::BadSignature { .. })));
        // Same signature, different timestamp.
        let mut moved = c1.clone();
        moved.timestamp += 1;
        assert!(w1.verify(&sc.checkpoint, &moved).is_err());
        // Unknown witness.
        let mut u = sc.clone();
        u.add_cosignature(&Cosignature::sign(&sc.checkpoint, "w3", &key(13), 5).expect("cosigns"));
        assert!(matches!(trust.verify(&u), Err(NoteError::UnknownSigner { .. })));
    }

    /// One key listed under two names cosigns once per name; the quorum counts it once.
    #[test]
    fn a_quorum_counts_distinct_keys_not_names() {
        let signer = LogSigner::new("fed", key(1)).expect("valid");
        let mut sc = signer.sign(3, Digest::of(b"r")).expect("signs");
        let trust = Trust {
            log: signer.verifier(),
            witnesses: vec![
                WitnessKey {
                    name: "w1".into(),
                    key: key(11).verifying_key(),
                },
                WitnessKey {
                    name: "w1-alias".into(),
                    key: key(11).verifying_key(),
                },
                WitnessKey {
                    name: "w2".into(),
                    key: key(12).verifying_key(),
                },
            ],
            quorum: 2,
        };
        for name in ["w1", "w1-alias"] {
            sc.add_cosignature(&Cosignature::sign(&sc.checkpoint, name, &key(11), 7).expect("cosigns"));
        }
        // Both lines verify, so the names alone look like two witnesses...
        assert_eq!(trust.verify(&sc).expect("verifies").len(), 2);
        // ...but they are one key: no quorum of 2.
        let q = trust.verify_quorum(&sc).expect("verifies");
        assert_eq!(q.names, vec!["w1".to_string(), "w1-alias".to_string()]);
        assert_eq!(q.distinct_keys, 1);
        assert!(!q.meets(2) && q.meets(1));
        sc.add_cosignature(&Cosignature::sign(&sc.checkpoint, "w2", &key(12), 7).expect("cosigns"));
        let q = trust.verify_quorum(&sc).expect("verifies");
        assert_eq!(q.distinct_keys, 2);
        assert!(q.meets(2));
        // Such a witness list is refused where it is loaded, naming both names.
        let err = trust.check_distinct_witness_keys().expect_err("duplicate key");
        assert_eq!(
            err,
            NoteError::DuplicateWitnessKey {
                first: "w1".into(),
                second: "w1-alias".into()
            }
        );
        assert!(err.to_string().contains("w1 and w1-alias"), "{err}");
        let mut distinct = trust.clone();
        distinct.witnesses.remove(1);
        assert_eq!(distinct.check_distinct_witness_keys(), Ok(()));
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, rng_seed: proptest::test_runner::RngSeed::Fixed(11), ..ProptestConfig::default() })]

        /// Any single-byte change of a signed, cosigned note is refused by parsing or verification.
        #[test]
        fn a_changed_byte_never_verifies(pos in any::<prop::sample::Index>(), flip in 1u8..=255) {
            let signer = LogSigner::new("fed", SigningKey::from_bytes(&[1; 32])).expect("valid");
            let mut sc = signer.sign(42, Digest::of(b"root")).expect("signs");
            let wk = SigningKey::from_bytes(&[2; 32]);
            sc.add_cosignature(&Cosignature::sign(&sc.checkpoint, "w", &wk, 9).expect("cosigns"));
            let trust = Trust {
                log: signer.verifier(),
                witnesses: vec![WitnessKey { name: "w".into(), key: wk.verifying_key() }],
                quorum: 1,
            };
            let mut note = sc.to_note().expect("formats");
            let i = pos.index(note.len());
            note[i] ^= flip;
            if let Ok(parsed) = SignedCheckpoint::parse(&note) {
                prop_assert!(trust.verify(&parsed).is_err());
            }
        }

        /// Arbitrary bytes never panic the note parser.
        #[test]
        fn arbitrary_notes_do_not_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = SignedCheckpoint::parse(&bytes);
        }
    }
}
