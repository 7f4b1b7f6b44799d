//! End-to-end tests of `fedistill provision ...` and `fedistill participant enroll` as real processes:
//! files, permissions, the signed roster, CSR enrolment, revocation, clear errors for bad input, and a
//! participant that connects from a CLI-made kit alone.

use fedistill_coordinator::transport::{FederationFiles, Server, ServerOptions};
use fedistill_participant::transport::{connect, ConnectOptions, Kit};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

fn fedistill(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fedistill"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run fedistill")
}

fn ok(args: &[&str]) -> String {
    let out = fedistill(args);
    assert!(
        out.status.success(),
        "fedistill {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails(args: &[&str]) -> String {
    let out = fedistill(args);
    assert!(!out.status.success(), "fedistill {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn roster_json(dir: &Path) -> serde_json::Value {
    let s = ok(&["provision", "roster", "--out", dir.to_str().expect("utf8"), "--json"]);
    serde_json::from_str(&s).expect("roster json")
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).expect("meta").permissions().mode() & 0o777
}

#[test]
fn provision_three_participants_csr_enrolment_and_revocation() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("fed");
    let d = dir.to_str().expect("utf8");
    ok(&[
        "provision",
        "init",
        "--federation",
        "acme",
        "--coordinator-host",
        "coord.acme.example:7443",
        "--coordinator-host",
        "10.0.0.5",
        "--bind",
        "0.0.0.0:7443",
        "--out",
        d,
    ]);
    for n in ["bank-a", "bank-b", "hospital-c"] {
        ok(&["provision", "add-participant", n, "--out", d]);
        let kit = dir.join("kits").join(n);
        let cfg = std::fs::read_to_string(kit.join("participant.toml")).expect("config");
        assert!(cfg.contains("coordinator = \"coord.acme.example:7443\""), "{cfg}");
        assert!(cfg.contains("server_name = \"coord.acme.example\""), "{cfg}");
        for f in [
            "ca.crt.pem",
            "client.crt.pem",
            "coordinator.pub.pem",
            "operator.pub.pem",
            "README.md",
        ] {
            assert!(kit.join(f).is_file(), "{n}: {f}");
        }
        #[cfg(unix)]
        for f in ["client.key.pem", "signing.key.pem"] {
            assert_eq!(mode(&kit.join(f)), 0o600, "{n}: {f}");
        }
    }
    let coord = std::fs::read_to_string(dir.join("coordinator/coordinator.toml")).expect("coordinator.toml");
    assert!(coord.contains("bind = \"0.0.0.0:7443\""), "{coord}");
    let r = roster_json(&dir);
    assert_eq!(r["version"], 4); // init = 1, then one bump per participant
    assert_eq!(r["participant"].as_array().map(|a| a.len()), Some(3));

    // CSR enrolment: keys stay in the participant's directory.
    let local = tmp.path().join("local-d");
    let l = local.to_str().expect("utf8");
    ok(&["participant", "enroll", "clinic-d", "--out", l]);
    #[cfg(unix)]
    assert_eq!(mode(&local.join("client.key.pem")), 0o600);
    let csr = local.join("client.csr.pem");
    let pubkey = local.join("signing.pub.pem");
    ok(&[
        "provision",
        "sign",
        "clinic-d",
        csr.to_str().expect("utf8"),
        "--signing-key",
        pubkey.to_str().expect("utf8"),
        "--out",
        d,
    ]);
    let issued = dir.join("kits/clinic-d");
    assert!(issued.join("client.crt.pem").is_file());
    assert!(!issued.join("client.key.pem").exists());
    assert!(!issued.join("signing.key.pem").exists());

    ok(&["provision", "revoke", "bank-b", "--out", d]);
    let r = roster_json(&dir);
    let statuses: Vec<(String, String)> = r["participant"]
        .as_array()
        .expect("array")
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap_or("").to_string(),
                e["status"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert!(statuses.contains(&("bank-b".into(), "revoked".into())), "{statuses:?}");
    assert!(statuses.contains(&("clinic-d".into(), "active".into())), "{statuses:?}");
    let crl = std::fs::read_to_string(dir.join("crl.pem")).expect("crl");
    assert!(crl.contains("BEGIN X509 CRL"));

    // A tampered roster is refused on load.
    let roster_path = dir.join("roster.toml");
    let text = std::fs::read_to_string(&roster_path).expect("roster");
    std::fs::write(&roster_path, text.replace("revoked", "active")).expect("tamper");
    let err = fails(&["provision", "roster", "--out", d]);
    assert!(err.contains("roster signature does not verify"), "{err}");
}

#[test]
fn bad_input_is_refused_with_a_clear_error() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("fed");
    let d = dir.to_str().expect("utf8");
    let err = fails(&[
        "provision",
        "init",
        "--federation",
        "Bad Name",
        "--coordinator-host",
        "x",
        "--out",
        d,
    ]);
    assert!(err.contains("federation name"), "{err}");
    let err = fails(&[
        "provision",
        "init",
        "--federation",
        "acme",
        "--coordinator-host",
        "host:notaport",
        "--out",
        d,
    ]);
    assert!(err.contains("invalid coordinator host"), "{err}");
    ok(&[
        "provision",
        "init",
        "--federation",
        "acme",
        "--coordinator-host",
        "127.0.0.1:9",
        "--out",
        d,
    ]);
    let err = fails(&[
        "provision",
        "init",
        "--federation",
        "acme",
        "--coordinator-host",
        "127.0.0.1:9",
        "--out",
        d,
    ]);
    assert!(err.contains("refusing to overwrite"), "{err}");
    let err = fails(&["provision", "add-participant", "../escape", "--out", d]);
    assert!(err.contains("participant name"), "{err}");
    ok(&["provision", "add-participant", "bank-a", "--out", d]);
    let err = fails(&["provision", "add-participant", "bank-a", "--out", d]);
    assert!(
        err.contains("already exists") || err.contains("already enrolled"),
        "{err}"
    );
    let err = fails(&["provision", "revoke", "nobody", "--out", d]);
    assert!(err.contains("not enrolled"), "{err}");
    let junk = tmp.path().join("junk.csr");
    std::fs::write(&junk, "not a csr").expect("write");
    let key = dir.join("kits/bank-a/signing.pub.pem");
    let err = fails(&[
        "provision",
        "sign",
        "bank-z",
        junk.to_str().expect("utf8"),
        "--signing-key",
        key.to_str().expect("utf8"),
        "--out",
        d,
    ]);
    assert!(err.contains("invalid certificate signing request"), "{err}");
    // The failed sign left the roster alone.
    assert_eq!(roster_json(&dir)["participant"].as_array().map(|a| a.len()), Some(1));
}

/// `provision sign` with a signing key another participant already holds is refused, naming that
/// participant, and leaves the roster and the kits untouched; a roster that lists one key twice does
/// not load.
#[test]
fn a_signing_key_already_in_the_roster_is_refused() {
    use fedistill_shared::crypto::{FederationId, SigningIdentity};
    use fedistill_shared::provision::FederationLayout;
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("fed");
    let d = dir.to_str().expect("utf8");
    ok(&[
        "provision",
        "init",
        "--federation",
        "acme",
        "--coordinator-host",
        "127.0.0.1:9",
        "--out",
        d,
    ]);
    ok(&["provision", "add-participant", "bank-a", "--out", d]);
    let roster_path = dir.join("roster.toml");
    let crl_path = dir.join("crl.pem");
    let (roster_before, crl_before) = (
        std::fs::read(&roster_path).expect("roster"),
        std::fs::read(&crl_path).expect("crl"),
    );
    // bank-b enrols properly (its own CSR) but hands in bank-a's public signing key.
    let local = tmp.path().join("local-b");
    ok(&[
        "participant",
        "enroll",
        "bank-b",
        "--out",
        local.to_str().expect("utf8"),
    ]);
    let csr = local.join("client.csr.pem");
    let a_key = dir.join("kits/bank-a/signing.pub.pem");
    let err = fails(&[
        "provision",
        "sign",
        "bank-b",
        csr.to_str().expect("utf8"),
        "--signing-key",
        a_key.to_str().expect("utf8"),
        "--out",
        d,
    ]);
    assert!(
        err.contains("is already enrolled for participant bank-a (active)"),
        "{err}"
    );
    assert_eq!(std::fs::read(&roster_path).expect("roster"), roster_before);
    assert_eq!(std::fs::read(&crl_path).expect("crl"), crl_before);
    assert!(!dir.join("kits/bank-b").exists());
    assert_eq!(roster_json(&dir)["participant"].as_array().map(|a| a.len()), Some(1));
    // With its own key it enrols.
    let b_key = local.join("signing.pub.pem");
    ok(&[
        "provision",
        "sign",
        "bank-b",
        csr.to_str().expect("utf8"),
        "--signing-key",
        b_key.to_str().expect("utf8"),
        "--out",
        d,
    ]);
    assert_eq!(roster_json(&dir)["participant"].as_array().map(|a| a.len()), Some(2));

    // A roster signed by the operator that gives bank-b bank-a's key is refused on load.
    let layout = FederationLayout::new(&dir);
    let fed = FederationId::new("acme").expect("valid");
    let mut roster = layout.load_roster(&fed).expect("roster");
    roster.participants[1].signing_key = roster.participants[0].signing_key;
    roster.version += 1;
    let operator =
        SigningIdentity::from_pkcs8_pem(&std::fs::read_to_string(layout.operator_key()).expect("operator key"))
            .expect("operator key parses");
    std::fs::write(&roster_path, roster.to_signed_toml(&operator).expect("sign")).expect("write roster");
    let err = fails(&["provision", "roster", "--out", d]);
    assert!(
        err.contains("participants bank-a and bank-b have the same signing key"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participant_connects_from_a_cli_made_kit_alone() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("fed");
    let d = dir.to_str().expect("utf8").to_string();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("reserve");
    let host = format!("127.0.0.1:{}", socket.local_addr().expect("addr").port());
    ok(&[
        "provision",
        "init",
        "--federation",
        "acme",
        "--coordinator-host",
        &host,
        "--out",
        &d,
    ]);
    ok(&["provision", "add-participant", "bank-a", "--out", &d]);
    // Move the kit elsewhere, as an operator would ship it; nothing else is needed on that side.
    let shipped = tmp.path().join("shipped-kit");
    std::fs::rename(dir.join("kits/bank-a"), &shipped).expect("move kit");
    let files = FederationFiles::from_federation_dir(&dir).expect("files");
    let server = Server::bind_socket(socket, &files, ServerOptions::default()).expect("bind");
    let kit = Kit::load(&shipped).expect("kit");
    let conn = connect(&kit, &ConnectOptions::default()).await.expect("connect");
    let peer = tokio::time::timeout(Duration::from_secs(15), server.accept())
        .await
        .expect("in time")
        .expect("some")
        .expect("identified");
    assert_eq!(peer.participant.as_str(), "bank-a");
    assert_eq!(peer.roster_entry.signing_key, kit.signing.public_key());
    conn.close(0u32.into(), b"bye");
}
