//! Provisioning a federation: the private CA, the coordinator's certificate and keys, the operator's
//! roster key, participant startup kits (directly or from a CSR), revocation with a CRL, and the signed
//! roster. Used by `fedistill provision ...` and `fedistill participant enroll`, and by tests that need
//! real certificates. Layout and formats are documented in docs/security.md.

pub mod fsutil;
pub mod kit;
pub mod pki;
pub mod roster;

use crate::crypto::{validate_name, FederationId, KeyError, NameError, ParticipantId, PublicKey, SigningIdentity};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use kit::KitConfig;
pub use pki::{Ca, IssuedCert};
pub use roster::{Roster, RosterEntry, Status};

pub use time::OffsetDateTime;

/// The current UTC time, for callers that do not depend on `time` themselves.
pub fn now_utc() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// Default UDP port of the coordinator when a host is given without one.
pub const DEFAULT_PORT: u16 = 4433;

/// Errors from provisioning.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// Reading or writing a file failed.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error text.
        reason: String,
    },
    /// A config file could not be parsed.
    #[error("{path}: {reason}")]
    Config {
        /// The file.
        path: PathBuf,
        /// Parser message.
        reason: String,
    },
    /// Certificate or CRL generation failed.
    #[error("certificate operation failed: {0}")]
    Pki(String),
    /// The CSR is malformed or its self-signature does not verify.
    #[error("invalid certificate signing request: {0}")]
    Csr(String),
    /// A key file is malformed.
    #[error("key error: {0}")]
    Key(#[from] KeyError),
    /// The roster is malformed or inconsistent.
    #[error("roster: {0}")]
    Roster(String),
    /// The roster signature does not verify under the operator key.
    #[error("roster signature does not verify under the operator key")]
    RosterSignature,
    /// A participant or federation name is invalid.
    #[error("invalid name: {0}")]
    Name(#[from] NameError),
    /// A coordinator host is not `host[:port]`.
    #[error("invalid coordinator host {0:?}: expected host[:port]")]
    Host(String),
    /// The federation directory already exists.
    #[error("{0} already holds a federation; refusing to overwrite it")]
    AlreadyInitialized(PathBuf),
    /// The participant is already in the roster.
    #[error("participant {0} is already enrolled")]
    AlreadyEnrolled(ParticipantId),
    /// The signing key is already enrolled for another participant.
    #[error(
        "signing key {key} is already enrolled for participant {holder} ({status}); every participant needs its own signing key"
    )]
    SigningKeyEnrolled {
        /// The key, hex.
        key: String,
        /// The participant whose roster entry holds it.
        holder: ParticipantId,
        /// That entry's status (`active` or `revoked`).
        status: String,
    },
    /// The participant is not in the roster.
    #[error("participant {0} is not enrolled")]
    NotEnrolled(ParticipantId),
    /// Refusing to overwrite existing key material.
    #[error("{0} already exists; refusing to overwrite key material")]
    WouldOverwrite(PathBuf),
}

/// `federation.toml` at the root of the federation directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FederationConfig {
    /// Federation name.
    pub federation: FederationId,
    /// Endpoints (`host:port`) participants may dial; kits get the first.
    pub coordinator_endpoints: Vec<String>,
    /// TLS server name written into kits (host part of the first endpoint).
    pub server_name: String,
}

/// Paths of everything in a federation directory (the operator's tree).
#[derive(Debug, Clone)]
pub struct FederationLayout {
    /// Root directory.
    pub root: PathBuf,
}

impl FederationLayout {
    /// The layout rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
    /// `federation.toml`.
    pub fn config(&self) -> PathBuf {
        self.root.join("federation.toml")
    }
    /// CA certificate.
    pub fn ca_cert(&self) -> PathBuf {
        self.root.join("ca/ca.crt.pem")
    }
    /// CA private key (0600).
    pub fn ca_key(&self) -> PathBuf {
        self.root.join("ca/ca.key.pem")
    }
    /// Coordinator TLS certificate.
    pub fn server_cert(&self) -> PathBuf {
        self.root.join("coordinator/server.crt.pem")
    }
    /// Coordinator TLS key (0600).
    pub fn server_key(&self) -> PathBuf {
        self.root.join("coordinator/server.key.pem")
    }
    /// Coordinator ed25519 signing key (0600).
    pub fn coordinator_signing_key(&self) -> PathBuf {
        self.root.join("coordinator/signing.key.pem")
    }
    /// Coordinator ed25519 public key.
    pub fn coordinator_signing_pub(&self) -> PathBuf {
        self.root.join("coordinator/signing.pub.pem")
    }
    /// Coordinator settings template (`bind`).
    pub fn coordinator_config(&self) -> PathBuf {
        self.root.join("coordinator/coordinator.toml")
    }
    /// Operator ed25519 key (0600).
    pub fn operator_key(&self) -> PathBuf {
        self.root.join("operator/operator.key.pem")
    }
    /// Operator ed25519 public key.
    pub fn operator_pub(&self) -> PathBuf {
        self.root.join("operator/operator.pub.pem")
    }
    /// `operator/console.token`: the bearer token of the coordinator's web console when its status address
    /// is not loopback (mode 0600; docs/operations.md, "Web console").
    pub fn console_token(&self) -> PathBuf {
        self.root.join("operator/console.token")
    }
    /// Signed roster.
    pub fn roster(&self) -> PathBuf {
        self.root.join("roster.toml")
    }
    /// Current CRL.
    pub fn crl(&self) -> PathBuf {
        self.root.join("crl.pem")
    }
    /// A participant's kit directory.
    pub fn kit(&self, name: &ParticipantId) -> PathBuf {
        self.root.join("kits").join(name.as_str())
    }

    /// Reads `federation.toml`.
    pub fn load_config(&self) -> Result<FederationConfig, ProvisionError> {
        let path = self.config();
        let text = fsutil::read_string(&path)?;
        toml::from_str(&text).map_err(|e| ProvisionError::Config {
            path,
            reason: e.to_string(),
        })
    }

    /// Reads and verifies the roster with the operator public key.
    pub fn load_roster(&self, federation: &FederationId) -> Result<Roster, ProvisionError> {
        let op = PublicKey::from_pem(&fsutil::read_string(&self.operator_pub())?)?;
        Roster::from_signed_toml(&fsutil::read_string(&self.roster())?, &op, federation)
    }

    fn load_ca(&self, federation: &FederationId) -> Result<Ca, ProvisionError> {
        Ca::from_pem(
            &fsutil::read_string(&self.ca_cert())?,
            &fsutil::read_string(&self.ca_key())?,
            federation.as_str(),
        )
    }

    fn operator(&self) -> Result<SigningIdentity, ProvisionError> {
        Ok(SigningIdentity::from_pkcs8_pem(&fsutil::read_string(
            &self.operator_key(),
        )?)?)
    }
}

/// Splits `host[:port]` (IPv6 as `[addr]:port` or a bare address) into host and port.
pub fn parse_host(s: &str) -> Result<(String, u16), ProvisionError> {
    let bad = || ProvisionError::Host(s.to_string());
    let s = s.trim();
    if s.is_empty() {
        return Err(bad());
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad())?,
            None if after.is_empty() => DEFAULT_PORT,
            None => return Err(bad()),
        };
        return Ok((host.to_string(), port));
    }
    if s.matches(':').count() > 1 {
        // A bare IPv6 address.
        s.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
        return Ok((s.to_string(), DEFAULT_PORT));
    }
    match s.split_once(':') {
        Some((h, p)) if !h.is_empty() => Ok((h.to_string(), p.parse().map_err(|_| bad())?)),
        Some(_) => Err(bad()),
        None => Ok((s.to_string(), DEFAULT_PORT)),
    }
}

fn endpoint(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// What `init` produced.
#[derive(Debug, Clone)]
pub struct InitReport {
    /// The directory layout.
    pub layout: FederationLayout,
    /// The federation config written.
    pub config: FederationConfig,
    /// The coordinator bind address written into `coordinator/coordinator.toml`.
    pub bind: SocketAddr,
}

/// The console token of `layout` (`operator/console.token`), created (32 random bytes, hex, mode 0600)
/// when missing. Surrounding whitespace is ignored; a token shorter than 16 characters is refused.
pub fn ensure_console_token(layout: &FederationLayout) -> Result<String, ProvisionError> {
    let path = layout.console_token();
    if path.exists() {
        let text = fsutil::read_string(&path)?;
        let token = text.trim().to_string();
        if token.len() < 16 || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ProvisionError::Io {
                path,
                reason: "the console token must be at least 16 printable characters".into(),
            });
        }
        return Ok(token);
    }
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(|e| ProvisionError::Io {
        path: path.clone(),
        reason: format!("no OS randomness for the console token: {e}"),
    })?;
    let token = hex::encode(bytes);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| ProvisionError::Io {
            path: parent.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    fsutil::write_private(&path, format!("{token}\n").as_bytes())?;
    Ok(token)
}

/// Creates a federation directory: CA, coordinator certificate (SANs = `hosts`, serverAuth), coordinator
/// and operator ed25519 keys, an empty signed roster, an empty CRL and the coordinator settings template.
/// `bind` defaults to `0.0.0.0:<port of the first host>`.
pub fn init(
    dir: &Path,
    federation: &FederationId,
    hosts: &[String],
    bind: Option<SocketAddr>,
    now: OffsetDateTime,
) -> Result<InitReport, ProvisionError> {
    let layout = FederationLayout::new(dir);
    if layout.config().exists() {
        return Err(ProvisionError::AlreadyInitialized(dir.to_path_buf()));
    }
    if hosts.is_empty() {
        return Err(ProvisionError::Host(String::new()));
    }
    let parsed = hosts.iter().map(|h| parse_host(h)).collect::<Result<Vec<_>, _>>()?;
    for (h, _) in &parsed {
        crate::tls::check_server_name(h).map_err(|_| ProvisionError::Host(h.clone()))?;
    }
    let mut sans: Vec<String> = parsed.iter().map(|(h, _)| h.clone()).collect();
    sans.dedup();
    let (first_host, first_port) = parsed[0].clone();
    let bind = bind.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], first_port)));

    let (ca_cert, ca_key) = pki::create_ca(federation.as_str(), now)?;
    fsutil::write_public(&layout.ca_cert(), ca_cert.pem.as_bytes())?;
    fsutil::write_private(&layout.ca_key(), ca_key.as_bytes())?;
    let ca = layout.load_ca(federation)?;

    let server_key = pki::generate_tls_key()?;
    let server = ca.issue_server(&sans, &server_key, now)?;
    fsutil::write_public(&layout.server_cert(), server.pem.as_bytes())?;
    fsutil::write_private(&layout.server_key(), server_key.serialize_pem().as_bytes())?;

    let coord = SigningIdentity::generate()?;
    fsutil::write_private(&layout.coordinator_signing_key(), coord.to_pkcs8_pem()?.as_bytes())?;
    fsutil::write_public(
        &layout.coordinator_signing_pub(),
        coord.public_key().to_pem()?.as_bytes(),
    )?;
    let operator = SigningIdentity::generate()?;
    fsutil::write_private(&layout.operator_key(), operator.to_pkcs8_pem()?.as_bytes())?;
    fsutil::write_public(&layout.operator_pub(), operator.public_key().to_pem()?.as_bytes())?;
    ensure_console_token(&layout)?;

    let mut roster = Roster::new(federation.clone());
    roster.version = 1;
    fsutil::write_public(&layout.crl(), ca.crl(roster.version, &[], now)?.as_bytes())?;
    fsutil::write_public(&layout.roster(), roster.to_signed_toml(&operator)?.as_bytes())?;
    fsutil::write_public(
        &layout.coordinator_config(),
        format!("# Coordinator listen address; independent of the endpoints written into kits.\nbind = \"{bind}\"\n")
            .as_bytes(),
    )?;

    let config = FederationConfig {
        federation: federation.clone(),
        coordinator_endpoints: parsed.iter().map(|(h, p)| endpoint(h, *p)).collect(),
        server_name: first_host,
    };
    let text = toml::to_string(&config).map_err(|e| ProvisionError::Roster(e.to_string()))?;
    fsutil::write_public(&layout.config(), text.as_bytes())?;
    Ok(InitReport { layout, config, bind })
}

fn write_roster_and_crl(layout: &FederationLayout, roster: &Roster, now: OffsetDateTime) -> Result<(), ProvisionError> {
    let ca = layout.load_ca(&roster.federation)?;
    // CRL first: a coordinator that notices the roster change reloads both.
    fsutil::write_public(
        &layout.crl(),
        ca.crl(roster.version, &roster.revoked_serials(), now)?.as_bytes(),
    )?;
    fsutil::write_public(&layout.roster(), roster.to_signed_toml(&layout.operator()?)?.as_bytes())
}

fn write_kit_public(
    layout: &FederationLayout,
    cfg: &FederationConfig,
    name: &ParticipantId,
    cert: &IssuedCert,
    csr_enrolled: bool,
) -> Result<(PathBuf, KitConfig), ProvisionError> {
    let dir = layout.kit(name);
    let endpoint = cfg
        .coordinator_endpoints
        .first()
        .cloned()
        .ok_or_else(|| ProvisionError::Host(String::new()))?;
    let kit = KitConfig::standard(cfg.federation.clone(), name.clone(), endpoint, cfg.server_name.clone());
    fsutil::write_public(&dir.join(kit::files::CONFIG), kit.to_toml()?.as_bytes())?;
    fsutil::write_public(
        &dir.join(kit::files::README),
        kit::readme(&kit, csr_enrolled).as_bytes(),
    )?;
    fsutil::write_public(&dir.join(kit::files::CA_CERT), &fsutil::read_bytes(&layout.ca_cert())?)?;
    fsutil::write_public(&dir.join(kit::files::CLIENT_CERT), cert.pem.as_bytes())?;
    fsutil::write_public(
        &dir.join(kit::files::COORDINATOR_PUB),
        &fsutil::read_bytes(&layout.coordinator_signing_pub())?,
    )?;
    fsutil::write_public(
        &dir.join(kit::files::OPERATOR_PUB),
        &fsutil::read_bytes(&layout.operator_pub())?,
    )?;
    Ok((dir, kit))
}

fn enroll_entry(
    layout: &FederationLayout,
    name: &ParticipantId,
    issue: impl FnOnce(&Ca) -> Result<IssuedCert, ProvisionError>,
    signing_key: PublicKey,
    now: OffsetDateTime,
) -> Result<(FederationConfig, IssuedCert), ProvisionError> {
    validate_name(name.as_str())?;
    let cfg = layout.load_config()?;
    let mut roster = layout.load_roster(&cfg.federation)?;
    if roster.by_id(name).is_some() {
        return Err(ProvisionError::AlreadyEnrolled(name.clone()));
    }
    let ca = layout.load_ca(&cfg.federation)?;
    // The certificate exists only in memory until the roster is written below.
    let cert = issue(&ca)?;
    roster.check_new_participant(name, &signing_key)?;
    roster.version += 1;
    roster.participants.push(RosterEntry {
        id: name.clone(),
        cert_sha256: cert.fingerprint,
        cert_serial: cert.serial_hex.clone(),
        signing_key,
        status: Status::Active,
    });
    write_roster_and_crl(layout, &roster, now)?;
    Ok((cfg, cert))
}

/// Enrols `name` with keys generated here and writes its complete kit to `<dir>/kits/<name>`.
pub fn add_participant(dir: &Path, name: &ParticipantId, now: OffsetDateTime) -> Result<PathBuf, ProvisionError> {
    let layout = FederationLayout::new(dir);
    validate_name(name.as_str())?;
    let kit_dir = layout.kit(name);
    if kit_dir.exists() {
        return Err(ProvisionError::WouldOverwrite(kit_dir));
    }
    let tls_key = pki::generate_tls_key()?;
    let signing = SigningIdentity::generate()?;
    let (cfg, cert) = enroll_entry(
        &layout,
        name,
        |ca| ca.issue_client(name.as_str(), &tls_key, now),
        signing.public_key(),
        now,
    )?;
    let (dir, _) = write_kit_public(&layout, &cfg, name, &cert, false)?;
    fsutil::write_private(&dir.join(kit::files::CLIENT_KEY), tls_key.serialize_pem().as_bytes())?;
    fsutil::write_private(&dir.join(kit::files::SIGNING_KEY), signing.to_pkcs8_pem()?.as_bytes())?;
    fsutil::write_public(
        &dir.join(kit::files::SIGNING_PUB),
        signing.public_key().to_pem()?.as_bytes(),
    )?;
    Ok(dir)
}

/// Signs a participant's CSR: writes only public material (certificate, CA, public keys, config, README)
/// to `<dir>/kits/<name>` and adds the participant with `signing_key` to the roster.
pub fn sign_csr(
    dir: &Path,
    name: &ParticipantId,
    csr_pem: &str,
    signing_key: PublicKey,
    now: OffsetDateTime,
) -> Result<PathBuf, ProvisionError> {
    let layout = FederationLayout::new(dir);
    validate_name(name.as_str())?;
    let kit_dir = layout.kit(name);
    if kit_dir.exists() {
        return Err(ProvisionError::WouldOverwrite(kit_dir));
    }
    let (cfg, cert) = enroll_entry(
        &layout,
        name,
        |ca| ca.issue_client_from_csr(name.as_str(), csr_pem, now),
        signing_key,
        now,
    )?;
    let (dir, _) = write_kit_public(&layout, &cfg, name, &cert, true)?;
    Ok(dir)
}

/// Marks `name` revoked in the roster and issues a CRL with its certificate serial.
pub fn revoke(dir: &Path, name: &ParticipantId, now: OffsetDateTime) -> Result<(), ProvisionError> {
    let layout = FederationLayout::new(dir);
    let cfg = layout.load_config()?;
    let mut roster = layout.load_roster(&cfg.federation)?;
    let entry = roster
        .participants
        .iter_mut()
        .find(|e| &e.id == name)
        .ok_or_else(|| ProvisionError::NotEnrolled(name.clone()))?;
    entry.status = Status::Revoked;
    roster.version += 1;
    write_roster_and_crl(&layout, &roster, now)
}

/// What `enroll` wrote.
#[derive(Debug, Clone)]
pub struct EnrollOutput {
    /// The CSR file to send to the operator.
    pub csr: PathBuf,
    /// The ed25519 public key file to send to the operator.
    pub signing_pub: PathBuf,
    /// The public key itself.
    pub signing_key: PublicKey,
}

/// Participant side of CSR enrolment: generates the TLS key, a CSR and the ed25519 key in `out`.
/// Private keys never leave this directory.
pub fn enroll(out: &Path, name: &ParticipantId) -> Result<EnrollOutput, ProvisionError> {
    validate_name(name.as_str())?;
    for f in [kit::files::CLIENT_KEY, kit::files::SIGNING_KEY] {
        let p = out.join(f);
        if p.exists() {
            return Err(ProvisionError::WouldOverwrite(p));
        }
    }
    let tls_key = pki::generate_tls_key()?;
    let csr = pki::create_csr(name.as_str(), &tls_key)?;
    let signing = SigningIdentity::generate()?;
    fsutil::write_private(&out.join(kit::files::CLIENT_KEY), tls_key.serialize_pem().as_bytes())?;
    fsutil::write_private(&out.join(kit::files::SIGNING_KEY), signing.to_pkcs8_pem()?.as_bytes())?;
    let csr_path = out.join(kit::files::CLIENT_CSR);
    fsutil::write_public(&csr_path, csr.as_bytes())?;
    let pub_path = out.join(kit::files::SIGNING_PUB);
    fsutil::write_public(&pub_path, signing.public_key().to_pem()?.as_bytes())?;
    Ok(EnrollOutput {
        csr: csr_path,
        signing_pub: pub_path,
        signing_key: signing.public_key(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_parse() {
        assert_eq!(
            parse_host("coord.example").expect("ok"),
            ("coord.example".into(), DEFAULT_PORT)
        );
        assert_eq!(
            parse_host("coord.example:7000").expect("ok"),
            ("coord.example".into(), 7000)
        );
        assert_eq!(parse_host("10.0.0.1:9").expect("ok"), ("10.0.0.1".into(), 9));
        assert_eq!(parse_host("[::1]:9").expect("ok"), ("::1".into(), 9));
        assert_eq!(parse_host("::1").expect("ok"), ("::1".into(), DEFAULT_PORT));
        assert!(parse_host("host:port").is_err());
        assert!(parse_host(":9").is_err());
        assert!(parse_host("").is_err());
    }

    #[test]
    fn init_add_revoke_keeps_roster_and_files_consistent() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("fed");
        let fed = FederationId::new("acme").expect("v");
        let now = OffsetDateTime::now_utc();
        let rep = init(&dir, &fed, &["coord.example:7000".into(), "10.1.2.3".into()], None, now).expect("init");
        assert_eq!(
            rep.config.coordinator_endpoints,
            vec!["coord.example:7000", "10.1.2.3:4433"]
        );
        assert_eq!(rep.bind, "0.0.0.0:7000".parse().expect("addr"));
        assert!(matches!(
            init(&dir, &fed, &["x".into()], None, now),
            Err(ProvisionError::AlreadyInitialized(_))
        ));

        let a = ParticipantId::new("bank-a");
        let kit = add_participant(&dir, &a, now).expect("add");
        assert!(matches!(
            add_participant(&dir, &a, now),
            Err(ProvisionError::WouldOverwrite(_))
        ));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for f in [kit::files::CLIENT_KEY, kit::files::SIGNING_KEY] {
                let mode = std::fs::metadata(kit.join(f)).expect("meta").permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{f}");
            }
            let mode = std::fs::metadata(rep.layout.ca_key())
                .expect("meta")
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(mode, 0o600);
        }
        let cfg = KitConfig::load(&kit).expect("kit config");
        assert_eq!(cfg.coordinator, "coord.example:7000");
        assert_eq!(cfg.server_name, "coord.example");
        let roster = rep.layout.load_roster(&fed).expect("roster");
        assert_eq!(roster.version, 2);
        let cert_pem = std::fs::read(kit.join(kit::files::CLIENT_CERT)).expect("cert");
        let der = crate::tls::parse_certs_pem(&cert_pem).expect("pem");
        let entry = roster
            .by_fingerprint(&crate::tls::cert_fingerprint(&der[0]))
            .expect("entry");
        assert_eq!(entry.id, a);
        assert_eq!(entry.status, Status::Active);

        revoke(&dir, &a, now).expect("revoke");
        let roster = rep.layout.load_roster(&fed).expect("roster");
        assert_eq!(roster.by_id(&a).map(|e| e.status), Some(Status::Revoked));
        let crl = crate::tls::parse_crls_pem(&std::fs::read(rep.layout.crl()).expect("crl")).expect("parse");
        assert_eq!(crl.len(), 1);
        assert!(matches!(
            revoke(&dir, &ParticipantId::new("nobody"), now),
            Err(ProvisionError::NotEnrolled(_))
        ));
        assert!(matches!(
            add_participant(&dir, &ParticipantId::new("../x"), now),
            Err(ProvisionError::Name(_))
        ));
    }

    #[test]
    fn csr_enrolment_keeps_private_keys_local() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("fed");
        let fed = FederationId::new("acme").expect("v");
        let now = OffsetDateTime::now_utc();
        init(&dir, &fed, &["127.0.0.1:5000".into()], None, now).expect("init");
        let local = tmp.path().join("local");
        let name = ParticipantId::new("hospital-b");
        let out = enroll(&local, &name).expect("enroll");
        assert!(matches!(enroll(&local, &name), Err(ProvisionError::WouldOverwrite(_))));
        let csr = std::fs::read_to_string(&out.csr).expect("csr");
        let kit = sign_csr(&dir, &name, &csr, out.signing_key, now).expect("sign");
        assert!(!kit.join(kit::files::CLIENT_KEY).exists());
        assert!(!kit.join(kit::files::SIGNING_KEY).exists());
        assert!(kit.join(kit::files::CLIENT_CERT).exists());
        let roster = FederationLayout::new(&dir).load_roster(&fed).expect("roster");
        assert_eq!(roster.by_id(&name).map(|e| e.signing_key), Some(out.signing_key));
        assert!(matches!(
            sign_csr(&dir, &ParticipantId::new("x"), "not a csr", out.signing_key, now),
            Err(ProvisionError::Csr(_))
        ));
    }

    /// A second participant with a signing key already in the roster is refused, by both enrolment
    /// paths, naming the holder; nothing is written.
    #[test]
    fn a_signing_key_already_enrolled_is_refused() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("fed");
        let fed = FederationId::new("acme").expect("v");
        let now = OffsetDateTime::now_utc();
        let layout = init(&dir, &fed, &["127.0.0.1:5000".into()], None, now)
            .expect("init")
            .layout;
        let a = ParticipantId::new("bank-a");
        add_participant(&dir, &a, now).expect("add");
        let a_key = layout
            .load_roster(&fed)
            .expect("roster")
            .by_id(&a)
            .expect("entry")
            .signing_key;
        let before = std::fs::read(layout.roster()).expect("roster bytes");
        let local = tmp.path().join("local");
        let b = ParticipantId::new("bank-b");
        let csr = std::fs::read_to_string(enroll(&local, &b).expect("enroll").csr).expect("csr");
        let err = sign_csr(&dir, &b, &csr, a_key, now).expect_err("key already enrolled");
        match &err {
            ProvisionError::SigningKeyEnrolled { holder, status, .. } => {
                assert_eq!(holder, &a);
                assert_eq!(status, "active");
            }
            other => panic!("unexpected error {other:?}"),
        }
        assert!(err.to_string().contains("participant bank-a"), "{err}");
        assert_eq!(std::fs::read(layout.roster()).expect("roster bytes"), before);
        assert!(!layout.kit(&b).exists());
        // A revoked holder still holds its key.
        revoke(&dir, &a, now).expect("revoke");
        let err = sign_csr(&dir, &b, &csr, a_key, now).expect_err("key of a revoked participant");
        assert!(err.to_string().contains("bank-a (revoked)"), "{err}");
    }
}
