//! The participant startup kit: its config file (`participant.toml`, paths relative to the kit) and the
//! README written next to it.

use super::ProvisionError;
use crate::crypto::{FederationId, ParticipantId};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// File names inside a kit directory.
pub mod files {
    /// The kit's config file.
    pub const CONFIG: &str = "participant.toml";
    /// Federation CA certificate (the only trust anchor for the coordinator).
    pub const CA_CERT: &str = "ca.crt.pem";
    /// The participant's TLS client certificate.
    pub const CLIENT_CERT: &str = "client.crt.pem";
    /// The participant's TLS private key (mode 0600).
    pub const CLIENT_KEY: &str = "client.key.pem";
    /// The CSR written by `participant enroll`.
    pub const CLIENT_CSR: &str = "client.csr.pem";
    /// The participant's ed25519 signing key (mode 0600).
    pub const SIGNING_KEY: &str = "signing.key.pem";
    /// The participant's ed25519 public key.
    pub const SIGNING_PUB: &str = "signing.pub.pem";
    /// The coordinator's ed25519 public key.
    pub const COORDINATOR_PUB: &str = "coordinator.pub.pem";
    /// The operator's ed25519 public key (verifies the roster).
    pub const OPERATOR_PUB: &str = "operator.pub.pem";
    /// Human instructions.
    pub const README: &str = "README.md";
}

/// `participant.toml`: everything a participant needs to reach and authenticate the coordinator.
/// Relative paths are resolved against the kit directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KitConfig {
    /// Federation name.
    pub federation: FederationId,
    /// This participant's name.
    pub participant: ParticipantId,
    /// Coordinator endpoint, `host:port`.
    pub coordinator: String,
    /// TLS server name to verify the coordinator certificate against (a SAN of its certificate).
    pub server_name: String,
    /// Federation CA certificate.
    pub ca_cert: PathBuf,
    /// TLS client certificate.
    pub client_cert: PathBuf,
    /// TLS client private key.
    pub client_key: PathBuf,
    /// ed25519 signing key.
    pub signing_key: PathBuf,
    /// Coordinator's ed25519 public key.
    pub coordinator_signing_key: PathBuf,
    /// Operator's ed25519 public key.
    pub operator_key: PathBuf,
}

impl KitConfig {
    /// The default config for a kit, using the standard file names.
    pub fn standard(
        federation: FederationId,
        participant: ParticipantId,
        coordinator: String,
        server_name: String,
    ) -> Self {
        Self {
            federation,
            participant,
            coordinator,
            server_name,
            ca_cert: files::CA_CERT.into(),
            client_cert: files::CLIENT_CERT.into(),
            client_key: files::CLIENT_KEY.into(),
            signing_key: files::SIGNING_KEY.into(),
            coordinator_signing_key: files::COORDINATOR_PUB.into(),
            operator_key: files::OPERATOR_PUB.into(),
        }
    }

    /// Reads `participant.toml` from a kit directory.
    pub fn load(dir: &Path) -> Result<Self, ProvisionError> {
        let path = dir.join(files::CONFIG);
        let text = super::fsutil::read_string(&path)?;
        toml::from_str(&text).map_err(|e| ProvisionError::Config {
            path,
            reason: e.to_string(),
        })
    }

    /// Resolves a configured path against the kit directory.
    pub fn resolve(dir: &Path, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            dir.join(p)
        }
    }

    /// The TOML text with a header comment.
    pub fn to_toml(&self) -> Result<String, ProvisionError> {
        let body = toml::to_string(self).map_err(|e| ProvisionError::Roster(e.to_string()))?;
        Ok(format!(
            "# fedistill participant kit. Paths are relative to this directory.\n\
             # `coordinator` is where the participant dials (host:port); `server_name` must be a SAN of the\n\
             # coordinator certificate.\n{body}"
        ))
    }
}

/// README text for a kit.
pub fn readme(cfg: &KitConfig, csr_enrolled: bool) -> String {
    let keys = if csr_enrolled {
        "This kit was issued from a CSR: it holds NO private keys. Copy every file here into the directory\n\
         where you ran `fedistill participant enroll` (which holds `client.key.pem` and `signing.key.pem`);\n\
         that directory is then a complete kit."
    } else {
        "`client.key.pem` and `signing.key.pem` are private (mode 0600). Keep them on this host only."
    };
    format!(
        "# fedistill startup kit for `{p}` (federation `{f}`)\n\n\
         {keys}\n\n\
         | file | what |\n|---|---|\n\
         | participant.toml | config: coordinator `{c}`, server name `{s}`, paths to the files below |\n\
         | ca.crt.pem | federation CA; the only authority trusted for the coordinator |\n\
         | client.crt.pem | your TLS client certificate (clientAuth) |\n\
         | client.key.pem | your TLS private key |\n\
         | signing.key.pem | your ed25519 key; signs your soft labels and reports |\n\
         | coordinator.pub.pem | coordinator's ed25519 key; verifies round openings and aggregates |\n\
         | operator.pub.pem | operator's ed25519 key; verifies the roster |\n\n\
         The participant only dials out: allow outbound UDP to {c}. Nothing listens on this host.\n",
        p = cfg.participant,
        f = cfg.federation,
        c = cfg.coordinator,
        s = cfg.server_name,
    )
}
