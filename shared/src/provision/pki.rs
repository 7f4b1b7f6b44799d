//! X.509 operations with rcgen: the federation CA, the coordinator's server certificate, participant
//! client certificates (directly or from a CSR), and CRLs. Callers pass `now` so tests can mint expired
//! certificates deterministically.

use super::ProvisionError;
use crate::crypto::Digest;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertificateSigningRequestParams,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevocationReason, RevokedCertParams, SerialNumber,
};
use time::{Duration, OffsetDateTime};

/// Validity of the federation CA.
pub const CA_VALIDITY: Duration = Duration::days(3650);
/// Validity of issued leaf certificates.
pub const LEAF_VALIDITY: Duration = Duration::days(825);
/// How far in the past `not_before` is set, to tolerate clock skew between hosts.
pub const BACKDATE: Duration = Duration::hours(1);

fn pki(e: rcgen::Error) -> ProvisionError {
    ProvisionError::Pki(e.to_string())
}

/// A PEM certificate with its SHA-256 fingerprint and serial number.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// The certificate in PEM.
    pub pem: String,
    /// SHA-256 of the DER encoding.
    pub fingerprint: Digest,
    /// Serial number, lowercase hex of its big-endian bytes.
    pub serial_hex: String,
}

/// A fresh TLS key pair (ECDSA P-256) and its PKCS#8 PEM.
pub fn generate_tls_key() -> Result<KeyPair, ProvisionError> {
    KeyPair::generate().map_err(pki)
}

fn random_serial() -> Result<SerialNumber, ProvisionError> {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b).map_err(|e| ProvisionError::Pki(format!("random source: {e}")))?;
    b[0] &= 0x7f; // keep it positive
    b[0] |= 0x01; // and without a leading zero byte, so DER encodes all 16 bytes
    Ok(SerialNumber::from_slice(&b))
}

fn dn(cn: &str, org: &str) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    d.push(DnType::CommonName, cn);
    d.push(DnType::OrganizationName, org);
    d
}

fn finish(cert: rcgen::Certificate, serial: &SerialNumber) -> IssuedCert {
    IssuedCert {
        pem: cert.pem(),
        fingerprint: Digest::of(cert.der()),
        serial_hex: hex::encode(serial.to_bytes()),
    }
}

/// Creates a self-signed federation CA. Returns the certificate and its key PEM.
pub fn create_ca(federation: &str, now: OffsetDateTime) -> Result<(IssuedCert, String), ProvisionError> {
    let key = generate_tls_key()?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(pki)?;
    params.distinguished_name = dn(&format!("fedistill {federation} federation CA"), federation);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - BACKDATE;
    params.not_after = now + CA_VALIDITY;
    let serial = random_serial()?;
    params.serial_number = Some(serial.clone());
    params.key_identifier_method = KeyIdMethod::Sha256;
    let cert = params.self_signed(&key).map_err(pki)?;
    Ok((finish(cert, &serial), key.serialize_pem()))
}

/// The CA as an rcgen issuer, loaded from its certificate and key PEM.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    org: String,
}

impl Ca {
    /// Loads the CA from PEM text.
    pub fn from_pem(cert_pem: &str, key_pem: &str, federation: &str) -> Result<Self, ProvisionError> {
        let key = KeyPair::from_pem(key_pem).map_err(pki)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(pki)?;
        Ok(Self {
            issuer,
            org: federation.to_string(),
        })
    }

    fn leaf_params(
        &self,
        cn: &str,
        sans: Vec<String>,
        eku: ExtendedKeyUsagePurpose,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<(CertificateParams, SerialNumber), ProvisionError> {
        let mut params = CertificateParams::new(sans).map_err(pki)?;
        params.distinguished_name = dn(cn, &self.org);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![eku];
        params.not_before = not_before;
        params.not_after = not_after;
        params.use_authority_key_identifier_extension = true;
        let serial = random_serial()?;
        params.serial_number = Some(serial.clone());
        Ok((params, serial))
    }

    /// A server certificate (serverAuth EKU only) for the given DNS names / IP addresses.
    pub fn issue_server(
        &self,
        hosts: &[String],
        key: &KeyPair,
        now: OffsetDateTime,
    ) -> Result<IssuedCert, ProvisionError> {
        let (params, serial) = self.leaf_params(
            "fedistill coordinator",
            hosts.to_vec(),
            ExtendedKeyUsagePurpose::ServerAuth,
            now - BACKDATE,
            now + LEAF_VALIDITY,
        )?;
        Ok(finish(params.signed_by(key, &self.issuer).map_err(pki)?, &serial))
    }

    /// A client certificate (clientAuth EKU only) for participant `name`, valid over the given window.
    pub fn issue_client_with_validity(
        &self,
        name: &str,
        public_key: &impl rcgen::PublicKeyData,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<IssuedCert, ProvisionError> {
        let (params, serial) = self.leaf_params(
            name,
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
            not_before,
            not_after,
        )?;
        Ok(finish(
            params.signed_by(public_key, &self.issuer).map_err(pki)?,
            &serial,
        ))
    }

    /// A client certificate for `name` valid from now for [`LEAF_VALIDITY`].
    pub fn issue_client(
        &self,
        name: &str,
        public_key: &impl rcgen::PublicKeyData,
        now: OffsetDateTime,
    ) -> Result<IssuedCert, ProvisionError> {
        self.issue_client_with_validity(name, public_key, now - BACKDATE, now + LEAF_VALIDITY)
    }

    /// Signs a CSR's public key into a client certificate for `name`. Only the key is taken from the
    /// CSR (whose self-signature rcgen checks); subject, EKU and validity are the operator's.
    pub fn issue_client_from_csr(
        &self,
        name: &str,
        csr_pem: &str,
        now: OffsetDateTime,
    ) -> Result<IssuedCert, ProvisionError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| ProvisionError::Csr(e.to_string()))?;
        self.issue_client(name, &csr.public_key, now)
    }

    /// A CRL listing `revoked_serials_hex`, numbered `crl_number`.
    pub fn crl(
        &self,
        crl_number: u64,
        revoked_serials_hex: &[String],
        now: OffsetDateTime,
    ) -> Result<String, ProvisionError> {
        let revoked_certs = revoked_serials_hex
            .iter()
            .map(|s| {
                let bytes = hex::decode(s).map_err(|e| ProvisionError::Pki(format!("bad serial {s:?}: {e}")))?;
                Ok(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&bytes),
                    revocation_time: now,
                    reason_code: Some(RevocationReason::CessationOfOperation),
                    invalidity_date: None,
                })
            })
            .collect::<Result<Vec<_>, ProvisionError>>()?;
        let params = CertificateRevocationListParams {
            this_update: now - BACKDATE,
            next_update: now + Duration::days(365),
            crl_number: SerialNumber::from(crl_number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params.signed_by(&self.issuer).map_err(pki)?.pem().map_err(pki)
    }
}

/// A certificate signing request for participant `name` over `key`.
pub fn create_csr(name: &str, key: &KeyPair) -> Result<String, ProvisionError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(pki)?;
    params.distinguished_name = dn(name, "fedistill participant");
    params.serialize_request(key).map_err(pki)?.pem().map_err(pki)
}
