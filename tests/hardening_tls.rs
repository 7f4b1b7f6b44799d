//! Hardening of the TLS identity layer (issue #16, finding 5): a participant certificate must carry the
//! `clientAuth` extended key usage.
//!
//! webpki treats a certificate without an EKU extension as valid for every purpose, so a leaf issued by the
//! federation CA with no EKU (for example by an operator who signed a CSR with `openssl x509 -req` and no
//! extension file) passes the TLS handshake. The coordinator checks the EKU itself after the handshake and
//! closes such a connection with `NO_CERTIFICATE` and `Rejection::BadEku`, while a kit made by
//! `fedistill provision` keeps connecting.

use fedistill_coordinator::transport::{FederationFiles, PeerConnection, Rejection, Server, ServerOptions};
use fedistill_participant::transport::{connect, connect_with_backoff, is_permanent_rejection, ConnectOptions, Kit};
use fedistill_shared::crypto::{Digest, FederationId, ParticipantId, SigningIdentity};
use fedistill_shared::provision::{self, fsutil, kit, FederationLayout};
use fedistill_shared::tls;
use fedistill_transport::close_code;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(15);

fn fed() -> FederationId {
    FederationId::new("acme").expect("valid name")
}

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// What the attacker does with the federation CA key (and, to pin the certificate, the operator key):
/// re-issues `name`'s client certificate for the kit's own TLS key with **no** EKU extension, puts the new
/// certificate into the kit and its fingerprint into the signed roster.
fn swap_in_certificate_without_eku(fed_dir: &Path, name: &ParticipantId) -> Digest {
    let layout = FederationLayout::new(fed_dir);
    let kit_dir = layout.kit(name);
    let ca_key = rcgen::KeyPair::from_pem(&fsutil::read_string(&layout.ca_key()).expect("ca key")).expect("ca key");
    let issuer = rcgen::Issuer::from_ca_cert_pem(&fsutil::read_string(&layout.ca_cert()).expect("ca cert"), ca_key)
        .expect("ca issuer");
    let leaf_key = rcgen::KeyPair::from_pem(&fsutil::read_string(&kit_dir.join(kit::files::CLIENT_KEY)).expect("key"))
        .expect("kit TLS key");

    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, name.as_str());
    params.distinguished_name.push(rcgen::DnType::OrganizationName, "acme");
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = Vec::new(); // the point: no EKU extension at all
    params.not_before = now() - time::Duration::hours(1);
    params.not_after = now() + time::Duration::days(30);
    params.use_authority_key_identifier_extension = true;
    let serial = [0x5a; 16];
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    let cert = params.signed_by(&leaf_key, &issuer).expect("issue");

    // The certificate really has no EKU, and it chains to the federation CA.
    assert!(tls::require_client_auth_eku(cert.der()).is_err());
    let fingerprint = tls::cert_fingerprint(cert.der());

    let mut roster = layout.load_roster(&fed()).expect("roster");
    let entry = roster
        .participants
        .iter_mut()
        .find(|e| &e.id == name)
        .expect("enrolled");
    entry.cert_sha256 = fingerprint;
    entry.cert_serial = serial.iter().map(|b| format!("{b:02x}")).collect();
    roster.version += 1;
    let operator = SigningIdentity::from_pkcs8_pem(&fsutil::read_string(&layout.operator_key()).expect("operator key"))
        .expect("operator key");
    fsutil::write_public(
        &layout.roster(),
        roster.to_signed_toml(&operator).expect("sign roster").as_bytes(),
    )
    .expect("write roster");
    fsutil::write_public(&kit_dir.join(kit::files::CLIENT_CERT), cert.pem().as_bytes()).expect("write cert");
    fingerprint
}

async fn next_event(
    events: &mut mpsc::UnboundedReceiver<Result<PeerConnection, Rejection>>,
) -> Result<PeerConnection, Rejection> {
    match tokio::time::timeout(WAIT, events.recv()).await {
        Ok(Some(e)) => e,
        Ok(None) => panic!("server task ended"),
        Err(_) => panic!("no connection event within {WAIT:?}"),
    }
}

async fn assert_kit_connects(
    fed_dir: &Path,
    name: &str,
    server: &Server,
    events: &mut mpsc::UnboundedReceiver<Result<PeerConnection, Rejection>>,
) -> quinn::Connection {
    let kit = Kit::load(FederationLayout::new(fed_dir).kit(&ParticipantId::new(name))).expect("kit loads");
    let conn = connect_with_backoff(&kit, &CancellationToken::new())
        .await
        .expect("connects");
    match next_event(events).await {
        Ok(peer) => assert_eq!(peer.participant.as_str(), name),
        Err(rej) => panic!("{name} was refused: {rej}"),
    }
    assert!(server.connected().iter().any(|p| p.as_str() == name));
    conn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_signed_certificate_without_client_auth_eku_is_refused_after_the_handshake() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("fed");
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("reserve port");
    let addr = socket.local_addr().expect("addr");
    provision::init(&dir, &fed(), &[format!("127.0.0.1:{}", addr.port())], None, now()).expect("init");
    provision::add_participant(&dir, &ParticipantId::new("bank-a"), now()).expect("add bank-a");
    let mallory = ParticipantId::new("mallory");
    provision::add_participant(&dir, &mallory, now()).expect("add mallory");
    let fingerprint = swap_in_certificate_without_eku(&dir, &mallory);

    let files = FederationFiles::from_federation_dir(&dir).expect("files");
    let server = Arc::new(Server::bind_socket(socket, &files, ServerOptions::default()).expect("bind"));
    // The roster in force pins the EKU-less certificate: only the EKU check can refuse it.
    let entry = server
        .roster()
        .by_fingerprint(&fingerprint)
        .cloned()
        .expect("pinned in the roster");
    assert_eq!(entry.id, mallory);
    let (tx, mut events) = mpsc::unbounded_channel();
    let srv = server.clone();
    tokio::spawn(async move {
        while let Some(r) = srv.accept().await {
            if tx.send(r).is_err() {
                break;
            }
        }
    });

    let good = assert_kit_connects(&dir, "bank-a", &server, &mut events).await;

    // The handshake itself succeeds (webpki accepts a missing EKU); the coordinator then closes it.
    let kit = Kit::load(FederationLayout::new(&dir).kit(&mallory)).expect("mallory's kit loads");
    let close = match connect(&kit, &ConnectOptions::default()).await {
        Ok(conn) => match tokio::time::timeout(WAIT, conn.closed()).await {
            Ok(e) => {
                assert!(is_permanent_rejection(&e), "{e}");
                match e {
                    quinn::ConnectionError::ApplicationClosed(c) => c.error_code.into_inner(),
                    other => panic!("expected an application close, got {other}"),
                }
            }
            Err(_) => panic!("the coordinator kept a connection whose certificate has no clientAuth EKU"),
        },
        Err(e) => e
            .application_close()
            .map(|(code, _)| code)
            .unwrap_or_else(|| panic!("expected an application close, got {e}")),
    };
    assert_eq!(close, u64::from(close_code::NO_CERTIFICATE));
    match next_event(&mut events).await {
        Err(Rejection::BadEku { reason, .. }) => {
            assert!(reason.contains("no extended key usage"), "{reason}")
        }
        Err(other) => panic!("expected Rejection::BadEku, got {other}"),
        Ok(peer) => panic!(
            "{} was admitted with a certificate that has no clientAuth EKU",
            peer.participant
        ),
    }
    assert!(!server.connected().contains(&mallory));

    // The good participant's connection is untouched and a new one is admitted.
    assert!(good.close_reason().is_none());
    assert_kit_connects(&dir, "bank-a", &server, &mut events).await;
    server.close().await;
}

/// `openssl <args>`: its stdout, or a panic with its stderr.
fn openssl(args: &[&str]) -> String {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl (Debian/Ubuntu package `openssl`): {e}"));
    assert!(
        out.status.success(),
        "openssl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The public key `openssl pkey -pubout` derives from a private key file.
fn openssl_pubout(key: &Path) -> String {
    let key = key.to_str().expect("utf-8 path");
    openssl(&["pkey", "-in", key, "-noout"]);
    openssl(&["pkey", "-in", key, "-pubout"])
}

/// Issue #16: every private key the provisioning tools write (federation, coordinator, operator, a kit made
/// by `add-participant`, keys made locally by `participant enroll`) is a standard PKCS#8 `PRIVATE KEY` that
/// `openssl pkey` reads, and the public key OpenSSL derives from it is the one the project wrote next to it
/// (ed25519 `.pub.pem` files) or put into the matching certificate (TLS keys).
#[test]
fn every_private_key_file_is_pkcs8_that_openssl_reads() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("fed");
    provision::init(&dir, &fed(), &["127.0.0.1:4433".into()], None, now()).expect("init");
    let kit_dir = provision::add_participant(&dir, &ParticipantId::new("bank-a"), now()).expect("add");
    let local = tmp.path().join("enrolled");
    std::fs::create_dir_all(&local).expect("mkdir");
    provision::enroll(&local, &ParticipantId::new("bank-b")).expect("enroll");
    let layout = FederationLayout::new(&dir);

    // ed25519 signing keys and the public key files written with them.
    let signing = [
        (layout.coordinator_signing_key(), layout.coordinator_signing_pub()),
        (layout.operator_key(), layout.operator_pub()),
        (
            kit_dir.join(kit::files::SIGNING_KEY),
            kit_dir.join(kit::files::SIGNING_PUB),
        ),
        (local.join(kit::files::SIGNING_KEY), local.join(kit::files::SIGNING_PUB)),
    ];
    for (key, public) in &signing {
        let pem = fsutil::read_string(key).expect("key");
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{}", key.display());
        let text = openssl(&["pkey", "-in", key.to_str().expect("utf-8"), "-noout", "-text"]);
        assert!(text.contains("ED25519 Private-Key"), "{}: {text}", key.display());
        assert_eq!(
            openssl_pubout(key).trim(),
            fsutil::read_string(public).expect("pub").trim(),
            "{} does not match {}",
            key.display(),
            public.display()
        );
        // The project still reads what it wrote.
        SigningIdentity::from_pkcs8_pem(&pem).expect("reads its own key");
    }

    // TLS keys (ECDSA P-256, rcgen) and their certificates.
    let tls_keys = [
        (layout.ca_key(), Some(layout.ca_cert())),
        (layout.server_key(), Some(layout.server_cert())),
        (
            kit_dir.join(kit::files::CLIENT_KEY),
            Some(kit_dir.join(kit::files::CLIENT_CERT)),
        ),
        (local.join(kit::files::CLIENT_KEY), None),
    ];
    for (key, cert) in &tls_keys {
        let pem = fsutil::read_string(key).expect("key");
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{}", key.display());
        let derived = openssl_pubout(key);
        if let Some(cert) = cert {
            let from_cert = openssl(&["x509", "-in", cert.to_str().expect("utf-8"), "-noout", "-pubkey"]);
            assert_eq!(
                derived.trim(),
                from_cert.trim(),
                "{} vs {}",
                key.display(),
                cert.display()
            );
        }
        tls::parse_key_pem(pem.as_bytes()).expect("reads its own key");
    }
    // The locally enrolled TLS key is the one in its CSR.
    let csr = local.join(kit::files::CLIENT_CSR);
    let from_csr = openssl(&["req", "-in", csr.to_str().expect("utf-8"), "-noout", "-pubkey"]);
    assert_eq!(
        openssl_pubout(&local.join(kit::files::CLIENT_KEY)).trim(),
        from_csr.trim()
    );
}
