//! Configurations WITHOUT client authentication. Only for tests and for the plain-QUIC baseline of the
//! transport benchmark; no production path builds these.

use super::{parse_certs_pem, parse_key_pem, provider, TlsError, ALPN};
use rustls::client::Resumption;
use rustls::RootCertStore;
use std::sync::Arc;

/// A server config that accepts any client without a certificate (TLS 1.3, ALPN `fedistill/1`).
pub fn server_config_no_client_auth(cert_chain_pem: &[u8], key_pem: &[u8]) -> Result<rustls::ServerConfig, TlsError> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(parse_certs_pem(cert_chain_pem)?, parse_key_pem(key_pem)?)
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    cfg.send_tls13_tickets = 0;
    Ok(cfg)
}

/// A client config that trusts `ca_pem` (e.g. a self-signed server cert) and presents no certificate.
pub fn client_config_no_client_auth(ca_pem: &[u8]) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in parse_certs_pem(ca_pem)? {
        roots.add(cert).map_err(|e| TlsError::Rustls(e.to_string()))?;
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_root_certificates(Arc::new(roots))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    cfg.resumption = Resumption::disabled();
    Ok(cfg)
}
