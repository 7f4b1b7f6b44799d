//! End-to-end tests of the identity layer and the mutually authenticated QUIC transport on real loopback
//! sockets with real certificates made on the fly: good kits connect and are identified by their roster
//! entry; every bad input (TLS identity, framing, signatures, replays, slow peers) is rejected with a clear
//! error, and after each one the server still serves a good participant.

use fedistill_coordinator::transport::{
    FederationFiles, PeerConnection, Rejection, ReloadOutcome, Server, ServerError, ServerOptions,
};
use fedistill_participant::transport::{connect_with_backoff, is_permanent_rejection, Kit};
use fedistill_shared::crypto::{
    FederationId, ParticipantId, ReplayGuard, RoundId, SignError, Signed, SignedMessage, Signer, SigningIdentity,
};
use fedistill_shared::provision::{self, fsutil, pki, Ca, FederationLayout};
use fedistill_shared::tls;
use fedistill_shared::wire::{decode_frame, encode_frame, FrameKind, WireError};
use fedistill_transport::{
    close_code, quic_client_config, read_frame, recv_message, send_message, write_frame, QuicTuning, TransportError,
};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const MAX: usize = 64 * 1024;
const K_PING: FrameKind = FrameKind(200);
const K_REPLY: FrameKind = FrameKind(201);
const WAIT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Ping {
    text: String,
}
impl SignedMessage for Ping {
    const DOMAIN: &'static str = "fedistill/test-ping";
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Reply {
    Ok { participant: String, text: String },
    Err(String),
}

#[derive(Debug)]
enum Failure {
    Transport(TransportError),
    Sign(SignError),
    SignerMismatch(#[allow(dead_code)] Signer),
}

#[derive(Debug)]
enum Event {
    Accepted(ParticipantId),
    Rejected(Rejection),
    StreamFailed(ParticipantId, Failure),
}

struct Harness {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    server: Arc<Server>,
    addr: SocketAddr,
    events: mpsc::UnboundedReceiver<Event>,
    seq: u64,
}

fn fed() -> FederationId {
    FederationId::new("acme").expect("valid name")
}

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// Provisions a federation whose kits name the port of a socket reserved here, then serves on it.
async fn harness(names: &[&str], mut opts: ServerOptions, stream_timeout: Duration) -> Harness {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("fed");
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("reserve port");
    let addr = socket.local_addr().expect("addr");
    provision::init(&dir, &fed(), &[format!("127.0.0.1:{}", addr.port())], None, now()).expect("init");
    for n in names {
        provision::add_participant(&dir, &ParticipantId::new(*n), now()).expect("add");
    }
    opts.reload_poll = Duration::from_millis(100);
    let files = FederationFiles::from_federation_dir(&dir).expect("files");
    let server = Arc::new(Server::bind_socket(socket, &files, opts).expect("bind"));
    let (tx, events) = mpsc::unbounded_channel();
    tokio::spawn(serve(server.clone(), tx, stream_timeout));
    Harness {
        _tmp: tmp,
        dir,
        server,
        addr,
        events,
        seq: 0,
    }
}

/// A tiny service built from the library parts exactly as the coordinator uses them: one signed frame
/// in, one reply frame out, per bidirectional stream.
async fn serve(server: Arc<Server>, tx: mpsc::UnboundedSender<Event>, timeout: Duration) {
    let guard = Arc::new(Mutex::new(ReplayGuard::new(fed())));
    while let Some(r) = server.accept().await {
        match r {
            Err(rej) => {
                let _ = tx.send(Event::Rejected(rej));
            }
            Ok(peer) => {
                let _ = tx.send(Event::Accepted(peer.participant.clone()));
                let (tx, guard) = (tx.clone(), guard.clone());
                tokio::spawn(async move {
                    while let Ok((send, recv)) = peer.conn.accept_bi().await {
                        tokio::spawn(serve_stream(
                            peer.clone(),
                            send,
                            recv,
                            tx.clone(),
                            guard.clone(),
                            timeout,
                        ));
                    }
                });
            }
        }
    }
}

async fn serve_stream(
    peer: PeerConnection,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    tx: mpsc::UnboundedSender<Event>,
    guard: Arc<Mutex<ReplayGuard>>,
    timeout: Duration,
) {
    let reply = match handle(&peer, &mut recv, &guard, timeout).await {
        Ok(text) => Reply::Ok {
            participant: peer.participant.to_string(),
            text,
        },
        Err(f) => {
            let msg = format!("{f:?}");
            let _ = tx.send(Event::StreamFailed(peer.participant.clone(), f));
            Reply::Err(msg)
        }
    };
    let _ = send_message(&mut send, K_REPLY, &reply).await;
    let _ = send.finish();
}

async fn handle(
    peer: &PeerConnection,
    recv: &mut quinn::RecvStream,
    guard: &Mutex<ReplayGuard>,
    timeout: Duration,
) -> Result<String, Failure> {
    let frame = read_frame(recv, MAX, timeout).await.map_err(Failure::Transport)?;
    let env: Signed<Ping> = decode_frame(&frame, MAX)
        .map_err(|e| Failure::Transport(e.into()))?
        .value;
    if env.signer != Signer::Participant(peer.participant.clone()) {
        return Err(Failure::SignerMismatch(env.signer));
    }
    let mut g = guard.lock().unwrap_or_else(|p| p.into_inner());
    let v = env
        .verify(
            &peer.roster_entry.signing_key,
            &Signer::Participant(peer.participant.clone()),
            &g,
            RoundId(1),
        )
        .map_err(Failure::Sign)?;
    g.accept(v.fresh());
    Ok(v.into_inner().text)
}

impl Harness {
    fn kit_dir(&self, name: &str) -> PathBuf {
        FederationLayout::new(&self.dir).kit(&ParticipantId::new(name))
    }

    fn kit(&self, name: &str) -> Kit {
        Kit::load(self.kit_dir(name)).expect("kit loads")
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Waits for the next event that is not an `Accepted`.
    async fn next_failure(&mut self) -> Event {
        loop {
            match tokio::time::timeout(WAIT, self.events.recv()).await {
                Ok(Some(Event::Accepted(_))) => continue,
                Ok(Some(e)) => return e,
                Ok(None) => panic!("server task ended"),
                Err(_) => panic!("no failure event within {WAIT:?}"),
            }
        }
    }

    async fn next_accepted(&mut self) -> ParticipantId {
        match tokio::time::timeout(WAIT, self.events.recv()).await {
            Ok(Some(Event::Accepted(p))) => p,
            Ok(Some(other)) => panic!("expected an accepted participant, got {other:?}"),
            Ok(None) => panic!("server task ended"),
            Err(_) => panic!("no connection accepted within {WAIT:?}"),
        }
    }

    /// Connects `name` from its kit, pings once, and checks the server identified it.
    async fn assert_serves(&mut self, name: &str) -> quinn::Connection {
        let kit = self.kit(name);
        let conn = connect_with_backoff(&kit, &CancellationToken::new())
            .await
            .expect("connects");
        let seq = self.next_seq();
        let reply = ping(&conn, &kit, seq).await.expect("ping answered");
        assert_eq!(
            reply,
            Reply::Ok {
                participant: name.into(),
                text: format!("hello {seq}")
            }
        );
        assert_eq!(self.next_accepted().await.as_str(), name);
        conn
    }

    async fn raw_connect(&self, cfg: rustls::ClientConfig) -> Result<quinn::Connection, TransportError> {
        let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr"))?;
        ep.set_default_client_config(quic_client_config(cfg, &QuicTuning::default()).expect("quic cfg"));
        let connecting = ep
            .connect(self.addr, "127.0.0.1")
            .map_err(|e| TransportError::Connect(e.to_string()))?;
        Ok(connecting.await?)
    }

    fn ca_pem(&self) -> Vec<u8> {
        fsutil::read_bytes(&FederationLayout::new(&self.dir).ca_cert()).expect("ca")
    }
}

fn signed_ping(kit: &Kit, key: &SigningIdentity, seq: u64) -> Signed<Ping> {
    Signed::sign(
        key,
        Signer::Participant(kit.participant().clone()),
        kit.federation().clone(),
        RoundId(1),
        seq,
        &Ping {
            text: format!("hello {seq}"),
        },
    )
    .expect("sign")
}

async fn ping(conn: &quinn::Connection, kit: &Kit, seq: u64) -> Result<Reply, TransportError> {
    send_raw(
        conn,
        &encode_frame(K_PING, &signed_ping(kit, &kit.signing, seq)).expect("encode"),
    )
    .await
}

/// Sends raw bytes as one stream and reads the one reply frame.
async fn send_raw(conn: &quinn::Connection, bytes: &[u8]) -> Result<Reply, TransportError> {
    let (mut send, mut recv) = conn.open_bi().await?;
    write_frame(&mut send, bytes).await?;
    let _ = send.finish();
    let (kind, reply) = recv_message::<Reply>(&mut recv, MAX, WAIT).await?;
    assert_eq!(kind, K_REPLY);
    Ok(reply)
}

/// Connect with a hand-made TLS identity and try one stream; the server must refuse it.
async fn assert_refused(h: &mut Harness, cfg: rustls::ClientConfig) -> String {
    let kit = h.kit("bank-a");
    let outcome = match h.raw_connect(cfg).await {
        Ok(conn) => ping(&conn, &kit, 1_000_000).await.map(|_| ()),
        Err(e) => Err(e),
    };
    let client_err = outcome.expect_err("a refused client must not get a reply");
    let server_side = match h.next_failure().await {
        Event::Rejected(Rejection::Handshake { reason, .. }) => reason,
        other => panic!("expected a handshake rejection, got {other:?}"),
    };
    // After every refusal the server keeps serving a good participant.
    h.assert_serves("bank-a").await;
    format!("server: {server_side}; client: {client_err}")
}

fn issue_client(
    ca: &Ca,
    name: &str,
    not_before: time::OffsetDateTime,
    not_after: time::OffsetDateTime,
) -> (String, String) {
    let key = pki::generate_tls_key().expect("key");
    let cert = ca
        .issue_client_with_validity(name, &key, not_before, not_after)
        .expect("issue");
    (cert.pem, key.serialize_pem())
}

fn federation_ca(dir: &Path) -> Ca {
    let l = FederationLayout::new(dir);
    Ca::from_pem(
        &fsutil::read_string(&l.ca_cert()).expect("ca cert"),
        &fsutil::read_string(&l.ca_key()).expect("ca key"),
        "acme",
    )
    .expect("ca")
}

async fn default_harness() -> Harness {
    harness(&["bank-a"], ServerOptions::default(), Duration::from_secs(5)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_provisioned_kits_connect_and_are_identified_by_roster_entry() {
    let mut h = harness(
        &["bank-a", "bank-b", "hospital-c"],
        ServerOptions::default(),
        Duration::from_secs(5),
    )
    .await;
    for name in ["bank-a", "bank-b", "hospital-c"] {
        let conn = h.assert_serves(name).await;
        assert!(h.server.connected().iter().any(|p| p.as_str() == name));
        let entry = h
            .server
            .roster()
            .by_id(&ParticipantId::new(name))
            .cloned()
            .expect("in roster");
        assert_eq!(entry.signing_key, h.kit(name).signing.public_key());
        conn.close(0u32.into(), b"done");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_certificate_is_refused() {
    let mut h = default_harness().await;
    let cfg = tls::dangerous::client_config_no_client_auth(&h.ca_pem()).expect("cfg");
    let why = assert_refused(&mut h, cfg).await;
    assert!(why.to_lowercase().contains("certificate"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_from_another_ca_is_refused() {
    let mut h = default_harness().await;
    let (other_ca_cert, other_ca_key) = pki::create_ca("evil", now()).expect("other ca");
    let other = Ca::from_pem(&other_ca_cert.pem, &other_ca_key, "evil").expect("ca");
    let (cert, key) = issue_client(
        &other,
        "bank-a",
        now() - time::Duration::hours(1),
        now() + time::Duration::days(1),
    );
    let cfg = tls::client_config(&h.ca_pem(), cert.as_bytes(), key.as_bytes()).expect("cfg");
    let why = assert_refused(&mut h, cfg).await;
    assert!(why.contains("UnknownIssuer"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_certificate_is_refused() {
    let mut h = default_harness().await;
    let ca = federation_ca(&h.dir);
    let (cert, key) = issue_client(
        &ca,
        "late",
        now() - time::Duration::days(10),
        now() - time::Duration::days(1),
    );
    let cfg = tls::client_config(&h.ca_pem(), cert.as_bytes(), key.as_bytes()).expect("cfg");
    let why = assert_refused(&mut h, cfg).await;
    assert!(why.contains("certificate expired"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_auth_only_certificate_used_as_client_is_refused() {
    let mut h = default_harness().await;
    let l = FederationLayout::new(&h.dir);
    let cfg = tls::client_config(
        &h.ca_pem(),
        &fsutil::read_bytes(&l.server_cert()).expect("cert"),
        &fsutil::read_bytes(&l.server_key()).expect("key"),
    )
    .expect("cfg");
    let why = assert_refused(&mut h, cfg).await;
    assert!(why.contains("extended key usage for client authentication"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_alpn_is_refused() {
    let mut h = default_harness().await;
    let kit_dir = h.kit_dir("bank-a");
    let cfg = tls::client_config_with_alpn(
        &h.ca_pem(),
        &fsutil::read_bytes(&kit_dir.join("client.crt.pem")).expect("cert"),
        &fsutil::read_bytes(&kit_dir.join("client.key.pem")).expect("key"),
        b"other/1",
    )
    .expect("cfg");
    let why = assert_refused(&mut h, cfg).await;
    assert!(why.contains("peer doesn't support any known protocol"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_certificate_not_in_roster_is_closed_with_a_reason() {
    let mut h = default_harness().await;
    let ca = federation_ca(&h.dir);
    let (cert, key) = issue_client(
        &ca,
        "ghost",
        now() - time::Duration::hours(1),
        now() + time::Duration::days(1),
    );
    let cfg = tls::client_config(&h.ca_pem(), cert.as_bytes(), key.as_bytes()).expect("cfg");
    // The handshake itself succeeds (the certificate is genuine); the roster check closes it.
    let conn = h.raw_connect(cfg).await.expect("handshake completes");
    let kit = h.kit("bank-a");
    let err = ping(&conn, &kit, 999_999).await.expect_err("closed");
    assert_eq!(
        err.application_close().map(|(c, _)| c),
        Some(u64::from(close_code::UNKNOWN_PARTICIPANT)),
        "{err}"
    );
    let closed = conn.closed().await;
    assert!(is_permanent_rejection(&closed), "{closed}");
    assert!(matches!(
        h.next_failure().await,
        Event::Rejected(Rejection::UnknownCertificate { .. })
    ));
    h.assert_serves("bank-a").await;
}

/// Connects bank-a, sends `bytes` as a stream and returns the server-side failure.
async fn send_bad_frame(h: &mut Harness, bytes: &[u8]) -> Failure {
    let conn = h.assert_serves("bank-a").await;
    let reply = send_raw(&conn, bytes).await;
    // The stream is either answered with an error reply or stopped; it is never answered Ok.
    assert!(!matches!(reply, Ok(Reply::Ok { .. })), "{reply:?}");
    let failure = match h.next_failure().await {
        Event::StreamFailed(p, f) => {
            assert_eq!(p.as_str(), "bank-a");
            f
        }
        other => panic!("expected a stream failure, got {other:?}"),
    };
    // Same connection keeps working, and so does a fresh one.
    let kit = h.kit("bank-a");
    let seq = h.next_seq();
    assert!(matches!(ping(&conn, &kit, seq).await, Ok(Reply::Ok { .. })));
    h.assert_serves("bank-a").await;
    failure
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_larger_than_the_cap_is_rejected_before_reading_it() {
    let mut h = default_harness().await;
    let mut bytes = fedistill_shared::wire::encode_header(K_PING, 1 << 20)
        .expect("header")
        .to_vec();
    bytes.extend_from_slice(&[0u8; 1000]);
    let f = send_bad_frame(&mut h, &bytes).await;
    assert!(
        matches!(f, Failure::Transport(TransportError::Wire(WireError::TooLarge { len, max })) if len == 1 << 20 && max == MAX),
        "{f:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_frame_is_rejected() {
    let mut h = default_harness().await;
    let kit = h.kit("bank-a");
    let full = encode_frame(K_PING, &signed_ping(&kit, &kit.signing, 77)).expect("encode");
    let f = send_bad_frame(&mut h, &full[..full.len() / 2]).await;
    assert!(
        matches!(f, Failure::Transport(TransportError::Truncated { got, expected }) if got == full.len() / 2 && expected == full.len()),
        "{f:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_are_rejected() {
    use rand::{RngCore, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
    let mut bytes = vec![0u8; 200];
    rng.fill_bytes(&mut bytes);
    bytes[0] = b'x'; // guarantee the magic is wrong whatever the seed produced
    let mut h = default_harness().await;
    let f = send_bad_frame(&mut h, &bytes).await;
    assert!(
        matches!(f, Failure::Transport(TransportError::Wire(WireError::BadMagic(_)))),
        "{f:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_frame_of_an_unknown_version_is_rejected() {
    let mut h = default_harness().await;
    let kit = h.kit("bank-a");
    let mut frame = encode_frame(K_PING, &signed_ping(&kit, &kit.signing, 78)).expect("encode");
    frame[4] = 2;
    let f = send_bad_frame(&mut h, &frame).await;
    assert!(
        matches!(
            f,
            Failure::Transport(TransportError::Wire(WireError::UnsupportedVersion { got: 2 }))
        ),
        "{f:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signature_is_rejected() {
    let mut h = default_harness().await;
    let kit = h.kit("bank-a");
    let mut env = signed_ping(&kit, &kit.signing, 500);
    env.signature[0] ^= 0x01;
    let f = send_bad_frame(&mut h, &encode_frame(K_PING, &env).expect("encode")).await;
    assert!(
        matches!(f, Failure::Sign(SignError::BadSignature { seq: 500, .. })),
        "{f:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signature_by_a_key_not_in_the_roster_is_rejected() {
    let mut h = default_harness().await;
    let kit = h.kit("bank-a");
    let stranger = SigningIdentity::generate().expect("key");
    let env = signed_ping(&kit, &stranger, 501);
    let f = send_bad_frame(&mut h, &encode_frame(K_PING, &env).expect("encode")).await;
    assert!(matches!(f, Failure::Sign(SignError::BadSignature { .. })), "{f:?}");
    // Claiming to be another participant over bank-a's TLS identity is refused before any key lookup.
    let mut env = signed_ping(&kit, &kit.signing, 502);
    env.signer = Signer::Participant(ParticipantId::new("bank-b"));
    let f = send_bad_frame(&mut h, &encode_frame(K_PING, &env).expect("encode")).await;
    assert!(matches!(f, Failure::SignerMismatch(_)), "{f:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_message_is_rejected() {
    let mut h = default_harness().await;
    let kit = h.kit("bank-a");
    let frame = encode_frame(K_PING, &signed_ping(&kit, &kit.signing, 10_000)).expect("encode");
    let conn = h.assert_serves("bank-a").await;
    assert!(matches!(send_raw(&conn, &frame).await, Ok(Reply::Ok { .. })));
    h.seq = 10_000; // later pings from the harness continue above the replayed number
    let f = send_bad_frame(&mut h, &frame).await;
    assert!(
        matches!(f, Failure::Sign(SignError::Replay { seq: 10_000, .. })),
        "{f:?}"
    );
    // A message of another federation is refused the same way.
    let foreign = Signed::sign(
        &kit.signing,
        Signer::Participant(kit.participant().clone()),
        FederationId::new("other").expect("valid"),
        RoundId(1),
        20_000,
        &Ping { text: "x".into() },
    )
    .expect("sign");
    let f = send_bad_frame(&mut h, &encode_frame(K_PING, &foreign).expect("encode")).await;
    assert!(matches!(f, Failure::Sign(SignError::WrongFederation { .. })), "{f:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_peer_is_timed_out_and_its_stream_slot_freed() {
    let mut opts = ServerOptions::default();
    opts.tuning.max_bidi_streams = 1;
    let mut h = harness(&["bank-a"], opts, Duration::from_millis(300)).await;
    let conn = h.assert_serves("bank-a").await;
    let (mut send, _recv) = conn.open_bi().await.expect("open");
    // Three bytes of a header, then silence: QUIC only announces a stream once it carries data.
    send.write_all(b"FDS").await.expect("write");
    let code = tokio::time::timeout(WAIT, send.stopped())
        .await
        .expect("server stops the stream")
        .expect("stopped");
    assert_eq!(code, Some(close_code::STREAM_TIMEOUT.into()));
    match h.next_failure().await {
        Event::StreamFailed(_, Failure::Transport(TransportError::Timeout(d))) => {
            assert_eq!(d, Duration::from_millis(300))
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    drop(send); // quinn answers STOP_SENDING with RESET_STREAM, releasing the only stream slot
    let kit = h.kit("bank-a");
    let seq = h.next_seq();
    let reply = tokio::time::timeout(WAIT, ping(&conn, &kit, seq))
        .await
        .expect("slot was freed");
    assert!(matches!(reply, Ok(Reply::Ok { .. })), "{reply:?}");
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participant_added_and_revoked_while_the_server_runs() {
    let mut h = default_harness().await;
    let a = h.assert_serves("bank-a").await;
    provision::add_participant(&h.dir, &ParticipantId::new("late-b"), now()).expect("add");
    let server = h.server.clone();
    wait_until("the roster reload", || {
        server.roster().by_id(&ParticipantId::new("late-b")).is_some()
    })
    .await;
    let b = h.assert_serves("late-b").await;

    // Revoking bank-a closes its live connection with a reason, without touching late-b.
    provision::revoke(&h.dir, &ParticipantId::new("bank-a"), now()).expect("revoke");
    let closed = tokio::time::timeout(WAIT, a.closed())
        .await
        .expect("revoked connection closed");
    match &closed {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(c.error_code, close_code::REVOKED.into());
            assert_eq!(&c.reason[..], b"participant revoked");
        }
        other => panic!("expected an application close, got {other:?}"),
    }
    assert!(is_permanent_rejection(&closed));
    let kit_b = h.kit("late-b");
    let seq = h.next_seq();
    assert!(matches!(ping(&b, &kit_b, seq).await, Ok(Reply::Ok { .. })));

    // A new connection with the revoked kit is refused at the handshake by the reloaded CRL.
    let kit_a = h.kit("bank-a");
    let outcome = match fedistill_participant::transport::connect(&kit_a, &Default::default()).await {
        Ok(conn) => ping(&conn, &kit_a, 1).await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(outcome.is_err());
    match h.next_failure().await {
        Event::Rejected(Rejection::Handshake { reason, .. }) => assert!(reason.contains("Revoked"), "{reason}"),
        other => panic!("expected a handshake rejection, got {other:?}"),
    }
    h.assert_serves("late-b").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csr_enrolled_participant_connects_with_locally_generated_keys() {
    let mut h = default_harness().await;
    let local = h._tmp.path().join("hospital-local");
    let name = ParticipantId::new("hospital-d");
    let enrolled = provision::enroll(&local, &name).expect("enroll");
    let csr = std::fs::read_to_string(&enrolled.csr).expect("csr");
    let issued = provision::sign_csr(&h.dir, &name, &csr, enrolled.signing_key, now()).expect("sign");
    assert!(
        !issued.join("client.key.pem").exists(),
        "the operator never holds the private key"
    );
    for entry in std::fs::read_dir(&issued).expect("kit") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), local.join(entry.file_name())).expect("copy");
    }
    let server = h.server.clone();
    wait_until("the roster reload", || server.roster().by_id(&name).is_some()).await;
    let kit = Kit::load(&local).expect("completed kit loads");
    let conn = connect_with_backoff(&kit, &CancellationToken::new())
        .await
        .expect("connects");
    let reply = ping(&conn, &kit, 1).await.expect("reply");
    assert_eq!(
        reply,
        Reply::Ok {
            participant: "hospital-d".into(),
            text: "hello 1".into()
        }
    );
    assert_eq!(h.next_accepted().await, name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_with_backoff_waits_for_a_coordinator_that_starts_later_and_stops_on_cancel() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("fed");
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("reserve");
    let port = socket.local_addr().expect("addr").port();
    provision::init(&dir, &fed(), &[format!("127.0.0.1:{port}")], None, now()).expect("init");
    let kit_dir = provision::add_participant(&dir, &ParticipantId::new("bank-a"), now()).expect("add");
    let kit = Kit::load(&kit_dir).expect("kit");
    // Nothing is serving yet: cancellation ends the retry loop with a clear error.
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    let k2 = kit.clone();
    let retrying = tokio::spawn(async move { connect_with_backoff(&k2, &c2).await });
    cancel.cancel();
    assert!(matches!(retrying.await.expect("join"), Err(TransportError::Cancelled)));
    // Start the coordinator while a participant is retrying: it gets in.
    let cancel = CancellationToken::new();
    let k3 = kit.clone();
    let c3 = cancel.clone();
    let retrying = tokio::spawn(async move { connect_with_backoff(&k3, &c3).await });
    let files = FederationFiles::from_federation_dir(&dir).expect("files");
    let server = Server::bind_socket(socket, &files, ServerOptions::default()).expect("bind");
    // Packets of the cancelled attempt waited in the reserved socket; the server turns that abandoned
    // handshake away and then admits the live one.
    let accepted = tokio::time::timeout(WAIT, async {
        loop {
            match server.accept().await {
                Some(Ok(peer)) => return peer,
                Some(Err(rej)) => assert!(matches!(rej, Rejection::Handshake { .. }), "{rej}"),
                None => panic!("server closed"),
            }
        }
    })
    .await
    .expect("accepted in time");
    let conn = tokio::time::timeout(WAIT, retrying)
        .await
        .expect("connected in time")
        .expect("join")
        .expect("conn");
    assert_eq!(accepted.participant.as_str(), "bank-a");
    conn.close(0u32.into(), b"bye");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_signed_roster_is_not_rolled_back_onto_a_running_server() {
    let mut h = harness(&["bank-a", "bank-b"], ServerOptions::default(), Duration::from_secs(5)).await;
    let layout = FederationLayout::new(&h.dir);
    let old_roster = std::fs::read(layout.roster()).expect("roster");
    let old_crl = std::fs::read(layout.crl()).expect("crl");
    provision::revoke(&h.dir, &ParticipantId::new("bank-b"), now()).expect("revoke");
    let reload = h.server.reload_handle();
    assert!(matches!(
        reload.reload(),
        Ok(ReloadOutcome::Reloaded { roster_version: 4, .. })
    ));
    // Someone with write access to the directory (but not the operator key) restores the old files.
    std::fs::write(layout.roster(), &old_roster).expect("restore roster");
    std::fs::write(layout.crl(), &old_crl).expect("restore crl");
    match reload.reload() {
        Err(ServerError::RosterRollback { found: 3, in_force: 4 }) => {}
        other => panic!("expected a rollback refusal, got {other:?}"),
    }
    assert_eq!(h.server.roster().version, 4);
    // bank-b stays refused (the CRL in force still lists it), bank-a is still served.
    let kit_b = h.kit("bank-b");
    let outcome = match fedistill_participant::transport::connect(&kit_b, &Default::default()).await {
        Ok(conn) => ping(&conn, &kit_b, 1).await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(outcome.is_err());
    assert!(matches!(
        h.next_failure().await,
        Event::Rejected(Rejection::Handshake { .. })
    ));
    h.assert_serves("bank-a").await;
}
