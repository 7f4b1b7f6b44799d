//! rustls mutual-TLS configurations built from PEM bytes. Their quinn wrappers (`quic_server_config`,
//! `quic_client_config`, `QuicTuning`, the close codes) live with the drivers, in `fedistill_transport::quic`.
//!
//! Every config is built with the ring provider passed explicitly (`builder_with_provider`) and TLS 1.3
//! only, so no process-level provider is ever needed. The server always requires a client certificate
//! chaining to the federation CA and checks it against the CRLs; the client pins the federation CA.
//! Session tickets, resumption and 0-RTT are off on both sides. Anything weaker lives in [`dangerous`].

pub mod dangerous;

use crate::crypto::Digest;
use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName};
use std::sync::Arc;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The one ALPN protocol id fedistill speaks.
pub const ALPN: &[u8] = b"fedistill/1";

/// Errors building TLS configurations.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM input held no item of the required type.
    #[error("no {0} found in PEM input")]
    Missing(&'static str),
    /// PEM input could not be parsed.
    #[error("bad PEM: {0}")]
    Pem(String),
    /// rustls refused the configuration (bad key, unusable certificate, bad CRL, ...).
    #[error("TLS configuration rejected: {0}")]
    Rustls(String),
    /// The server name is not a valid DNS name or IP address.
    #[error("invalid server name {0:?}")]
    ServerName(String),
    /// QUIC refused the TLS configuration (raised by `fedistill_transport::quic`).
    #[error("QUIC configuration rejected: {0}")]
    Quic(String),
    /// A client certificate is not usable for client authentication: it does not parse, or it has no
    /// extended key usage extension listing `id-kp-clientAuth` (see [`require_client_auth_eku`]).
    #[error("{0}")]
    ClientEku(String),
}

/// The ring provider, used for every config in the project.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// SHA-256 of a certificate's DER encoding: the roster's certificate fingerprint.
pub fn cert_fingerprint(der: &[u8]) -> Digest {
    Digest::of(der)
}

/// All certificates in a PEM document, in order.
pub fn parse_certs_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem(format!("certificate: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::Missing("certificate"));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, SEC1 or PKCS#1) in a PEM document.
pub fn parse_key_pem(pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::Missing("private key"),
        e => TlsError::Pem(format!("private key: {e}")),
    })
}

/// All CRLs in a PEM document (possibly none).
pub fn parse_crls_pem(pem: &[u8]) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    CertificateRevocationListDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem(format!("CRL: {e}")))
}

/// Requires that a (DER) client certificate carries an extended key usage extension that lists
/// `id-kp-clientAuth` (1.3.6.1.5.5.7.3.2).
///
/// The TLS verifier (webpki) checks the EKU only when the extension is present: a certificate without
/// one counts as valid for every purpose. docs/protocol.md requires `clientAuth` on participant
/// certificates, so the coordinator checks it explicitly after the handshake. `anyExtendedKeyUsage`
/// alone does not satisfy this rule.
pub fn require_client_auth_eku(cert_der: &[u8]) -> Result<(), TlsError> {
    let (_, cert) = X509Certificate::from_der(cert_der)
        .map_err(|e| TlsError::ClientEku(format!("client certificate does not parse: {e}")))?;
    match cert.extended_key_usage() {
        Ok(Some(eku)) if eku.value.client_auth => Ok(()),
        Ok(Some(_)) => Err(TlsError::ClientEku(
            "extended key usage does not include clientAuth".into(),
        )),
        Ok(None) => Err(TlsError::ClientEku(
            "no extended key usage extension; clientAuth is required".into(),
        )),
        Err(e) => Err(TlsError::ClientEku(format!("bad extended key usage extension: {e}"))),
    }
}

fn roots(ca_pem: &[u8]) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in parse_certs_pem(ca_pem)? {
        store.add(cert).map_err(|e| TlsError::Rustls(e.to_string()))?;
    }
    Ok(Arc::new(store))
}

/// The coordinator's rustls config: TLS 1.3 only, client certificate required and chained to the CA in
/// `ca_pem`, revocation checked against every CRL in `crl_pem` (end-entity certificates), ALPN
/// `fedistill/1`, no session tickets, no early data.
pub fn server_config(
    ca_pem: &[u8],
    cert_chain_pem: &[u8],
    key_pem: &[u8],
    crl_pem: &[u8],
) -> Result<rustls::ServerConfig, TlsError> {
    let provider = provider();
    let crls = parse_crls_pem(crl_pem)?;
    let mut verifier = WebPkiClientVerifier::builder_with_provider(roots(ca_pem)?, provider.clone());
    if !crls.is_empty() {
        verifier = verifier.with_crls(crls).only_check_end_entity_revocation();
    }
    let verifier = verifier.build().map_err(|e| TlsError::Rustls(e.to_string()))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(parse_certs_pem(cert_chain_pem)?, parse_key_pem(key_pem)?)
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    cfg.send_tls13_tickets = 0;
    cfg.max_early_data_size = 0;
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(cfg)
}

/// A participant's rustls config: TLS 1.3 only, trusts only the federation CA in `ca_pem`, presents the
/// client certificate, offers ALPN `fedistill/1`, no resumption, no early data.
pub fn client_config(ca_pem: &[u8], cert_chain_pem: &[u8], key_pem: &[u8]) -> Result<rustls::ClientConfig, TlsError> {
    client_config_with_alpn(ca_pem, cert_chain_pem, key_pem, ALPN)
}

/// [`client_config`] with a chosen ALPN id (tests use this to present a wrong one).
pub fn client_config_with_alpn(
    ca_pem: &[u8],
    cert_chain_pem: &[u8],
    key_pem: &[u8],
    alpn: &[u8],
) -> Result<rustls::ClientConfig, TlsError> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_root_certificates(roots(ca_pem)?)
        .with_client_auth_cert(parse_certs_pem(cert_chain_pem)?, parse_key_pem(key_pem)?)
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    cfg.alpn_protocols = vec![alpn.to_vec()];
    cfg.resumption = Resumption::disabled();
    cfg.enable_early_data = false;
    Ok(cfg)
}

/// Checks that `name` is usable as a TLS server name (DNS name or IP address).
pub fn check_server_name(name: &str) -> Result<(), TlsError> {
    ServerName::try_from(name.to_string())
        .map(|_| ())
        .map_err(|_| TlsError::ServerName(name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_pem_is_a_clear_error() {
        assert!(matches!(
            parse_certs_pem(b"nothing here"),
            Err(TlsError::Missing("certificate"))
        ));
        assert!(matches!(parse_key_pem(b""), Err(TlsError::Missing("private key"))));
        assert!(parse_crls_pem(b"").expect("empty is fine").is_empty());
        assert!(check_server_name("coordinator.example").is_ok());
        assert!(check_server_name("127.0.0.1").is_ok());
        assert!(check_server_name("bad name!").is_err());
        // A broken section names what was being parsed.
        let broken = b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        match parse_certs_pem(broken) {
            Err(TlsError::Pem(msg)) => assert!(msg.starts_with("certificate: "), "{msg}"),
            other => panic!("expected a PEM error, got {other:?}"),
        }
        let unterminated = b"-----BEGIN PRIVATE KEY-----\nAAAA\n";
        match parse_key_pem(unterminated) {
            Err(TlsError::Pem(msg)) => assert!(msg.starts_with("private key: "), "{msg}"),
            other => panic!("expected a PEM error, got {other:?}"),
        }
    }

    #[test]
    fn pem_documents_with_several_items_parse_in_order() {
        let a = rcgen::generate_simple_self_signed(vec!["a.example".into()]).expect("cert a");
        let b = rcgen::generate_simple_self_signed(vec!["b.example".into()]).expect("cert b");
        // Other sections (here the key) between certificates are skipped.
        let pem = format!("{}{}{}", a.cert.pem(), a.signing_key.serialize_pem(), b.cert.pem());
        let certs = parse_certs_pem(pem.as_bytes()).expect("certs");
        assert_eq!(certs.len(), 2);
        assert_eq!(certs[0].as_ref(), a.cert.der().as_ref());
        assert_eq!(certs[1].as_ref(), b.cert.der().as_ref());
        let key = parse_key_pem(pem.as_bytes()).expect("key");
        assert_eq!(key.secret_der(), a.signing_key.serialized_der());
    }

    fn leaf_with_eku(eku: Vec<rcgen::ExtendedKeyUsagePurpose>) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.extended_key_usages = eku;
        params.self_signed(&key).expect("cert").der().to_vec()
    }

    #[test]
    fn client_auth_eku_is_required() {
        use rcgen::ExtendedKeyUsagePurpose as Eku;
        assert!(require_client_auth_eku(&leaf_with_eku(vec![Eku::ClientAuth])).is_ok());
        assert!(require_client_auth_eku(&leaf_with_eku(vec![Eku::ServerAuth, Eku::ClientAuth])).is_ok());
        let none = require_client_auth_eku(&leaf_with_eku(Vec::new())).expect_err("no EKU");
        assert!(none.to_string().contains("no extended key usage"), "{none}");
        let server = require_client_auth_eku(&leaf_with_eku(vec![Eku::ServerAuth])).expect_err("serverAuth");
        assert!(server.to_string().contains("does not include clientAuth"), "{server}");
        assert!(require_client_auth_eku(&leaf_with_eku(vec![Eku::Any])).is_err());
        assert!(matches!(
            require_client_auth_eku(b"not a certificate"),
            Err(TlsError::ClientEku(_))
        ));
    }
}
