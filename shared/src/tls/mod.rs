//! rustls mutual-TLS configurations built from PEM bytes, and their QUIC wrappers.
//!
//! Every config is built with the ring provider passed explicitly (`builder_with_provider`) and TLS 1.3
//! only, so no process-level provider is ever needed. The server always requires a client certificate
//! chaining to the federation CA and checks it against the CRLs; the client pins the federation CA.
//! Session tickets, resumption and 0-RTT are off on both sides. Anything weaker lives in [`dangerous`].

pub mod dangerous;
pub mod quic;

use crate::crypto::Digest;
use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use std::sync::Arc;

pub use quic::{
    close_code, negotiated_alpn, peer_leaf_certificate, quic_client_config, quic_server_config, QuicTuning,
};

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
    /// QUIC refused the TLS configuration.
    #[error("QUIC configuration rejected: {0}")]
    Quic(String),
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
    let certs = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Missing("certificate"));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, SEC1 or PKCS#1) in a PEM document.
pub fn parse_key_pem(pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    rustls_pemfile::private_key(&mut &pem[..])
        .map_err(|e| TlsError::Pem(e.to_string()))?
        .ok_or(TlsError::Missing("private key"))
}

/// All CRLs in a PEM document (possibly none).
pub fn parse_crls_pem(pem: &[u8]) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    rustls_pemfile::crls(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem(e.to_string()))
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
    }
}
