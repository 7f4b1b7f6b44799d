//! Unit tests of signed envelopes, verification and the replay guard.

use super::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Labels {
    values: Vec<f32>,
}
impl SignedMessage for Labels {
    const DOMAIN: &'static str = "fedistill/test-labels";
}
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Report {
    values: Vec<f32>,
}
impl SignedMessage for Report {
    const DOMAIN: &'static str = "fedistill/test-report";
}

fn fed() -> FederationId {
    FederationId::new("fed").expect("valid")
}
fn alice() -> Signer {
    Signer::Participant(ParticipantId::new("alice"))
}
fn sign(id: &SigningIdentity, round: u64, seq: u64) -> Signed<Labels> {
    Signed::sign(
        id,
        alice(),
        fed(),
        RoundId(round),
        seq,
        &Labels { values: vec![0.5, 0.5] },
    )
    .expect("sign")
}

#[test]
fn signing_bytes_layout() {
    let d = Digest([0xAB; 32]);
    let b = signing_bytes("dom", &fed(), RoundId(2), 5, &d);
    let mut expect = SIGNING_CONTEXT_V1.to_vec();
    expect.extend_from_slice(&[0, 3]);
    expect.extend_from_slice(b"dom");
    expect.extend_from_slice(&[0, 3]);
    expect.extend_from_slice(b"fed");
    expect.extend_from_slice(&2u64.to_be_bytes());
    expect.extend_from_slice(&5u64.to_be_bytes());
    expect.extend_from_slice(&[0xAB; 32]);
    assert_eq!(b, expect);
}

#[test]
fn envelope_signing_bytes_layout_names_the_signer() {
    let d = Digest([0xAB; 32]);
    let b = envelope_signing_bytes("dom", &alice(), &fed(), RoundId(2), 5, &d);
    let mut expect = SIGNING_CONTEXT.to_vec();
    expect.extend_from_slice(&[0, 3]);
    expect.extend_from_slice(b"dom");
    expect.push(1);
    expect.extend_from_slice(&[0, 5]);
    expect.extend_from_slice(b"alice");
    expect.extend_from_slice(&[0, 3]);
    expect.extend_from_slice(b"fed");
    expect.extend_from_slice(&2u64.to_be_bytes());
    expect.extend_from_slice(&5u64.to_be_bytes());
    expect.extend_from_slice(&[0xAB; 32]);
    assert_eq!(b, expect);
    let c = envelope_signing_bytes("dom", &Signer::Coordinator, &fed(), RoundId(2), 5, &d);
    assert_eq!(&c[SIGNING_CONTEXT.len() + 5..SIGNING_CONTEXT.len() + 8], &[0, 0, 0]);
    assert_ne!(b, signing_bytes("dom", &fed(), RoundId(2), 5, &d));
}

/// The attack of issue #16: mallory signs with its own key but names alice as the signer, with a
/// sequence number near the top. It must not verify for either identity, and alice's guard stays put.
#[test]
fn a_forged_signer_field_is_refused_and_moves_no_guard() {
    let mallory_key = SigningIdentity::from_seed([7; 32]);
    let alice_key = SigningIdentity::from_seed([1; 32]);
    let mallory = Signer::Participant(ParticipantId::new("mallory"));
    let guard = ReplayGuard::new(fed()).with_ceiling(SeqCeiling::Fixed(u64::MAX));
    let forged = Signed::sign(
        &mallory_key,
        alice(),
        fed(),
        RoundId(1),
        u64::MAX - 1,
        &Labels { values: vec![1.0] },
    )
    .expect("sign");
    // Arriving on mallory's connection: the claimed signer is not the connection's participant.
    let err = forged
        .clone()
        .verify(&mallory_key.public_key(), &mallory, &guard, RoundId(1))
        .expect_err("mismatch");
    assert!(matches!(err, SignError::SignerMismatch { .. }), "{err}");
    // Even checked against alice's own key the signature fails: it does not cover "alice".
    let err = forged
        .clone()
        .verify(&alice_key.public_key(), &alice(), &guard, RoundId(1))
        .expect_err("bad signature");
    assert!(matches!(err, SignError::BadSignature { .. }), "{err}");
    // Rewriting the signer field of mallory's own valid envelope breaks its signature too.
    let mut own = Signed::sign(
        &mallory_key,
        mallory.clone(),
        fed(),
        RoundId(1),
        3,
        &Labels { values: vec![] },
    )
    .expect("sign");
    own.signer = alice();
    assert!(matches!(
        own.verify_offline(&mallory_key.public_key(), &fed()),
        Err(SignError::BadSignature { .. })
    ));
    assert_eq!(guard.last_seq(&alice()), None);
    assert!(sign(&alice_key, 1, 1)
        .verify(&alice_key.public_key(), &alice(), &guard, RoundId(1))
        .is_ok());
}

#[test]
fn sequence_numbers_far_ahead_of_the_clock_are_refused() {
    let id = SigningIdentity::from_seed([1; 32]);
    let guard = ReplayGuard::new(fed());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_micros() as u64;
    assert!(sign(&id, 1, now)
        .verify(&id.public_key(), &alice(), &guard, RoundId(1))
        .is_ok());
    let err = sign(&id, 1, now + 2 * MAX_SEQ_AHEAD_MICROS)
        .verify(&id.public_key(), &alice(), &guard, RoundId(1))
        .expect_err("too far ahead");
    assert!(matches!(err, SignError::SeqTooFarAhead { .. }), "{err}");
    let err = sign(&id, 1, u64::MAX - 1)
        .verify(&id.public_key(), &alice(), &guard, RoundId(1))
        .expect_err("too far ahead");
    assert!(matches!(err, SignError::SeqTooFarAhead { .. }), "{err}");
    let fixed = ReplayGuard::new(fed()).with_ceiling(SeqCeiling::Fixed(10));
    assert!(sign(&id, 1, 10)
        .verify(&id.public_key(), &alice(), &fixed, RoundId(1))
        .is_ok());
    assert!(sign(&id, 1, 11)
        .verify(&id.public_key(), &alice(), &fixed, RoundId(1))
        .is_err());
}

#[test]
fn good_message_verifies_once() {
    let id = SigningIdentity::from_seed([1; 32]);
    let mut guard = ReplayGuard::new(fed());
    let v = sign(&id, 1, 10)
        .verify(&id.public_key(), &alice(), &guard, RoundId(1))
        .expect("verifies");
    assert_eq!(v.value().values, vec![0.5, 0.5]);
    assert_eq!(v.signer(), &alice());
    assert_eq!(v.payload_digest(), Digest::of(&v.envelope().payload));
    // Verification alone changes nothing; the caller records the message once it accepted it.
    assert_eq!(guard.last_seq(&alice()), None);
    guard.accept(v.fresh());
    assert_eq!(guard.last_seq(&alice()), Some(10));
    // Replay of the same envelope.
    let err = sign(&id, 1, 10)
        .verify(&id.public_key(), &alice(), &guard, RoundId(1))
        .expect_err("replay");
    assert_eq!(
        err,
        SignError::Replay {
            signer: alice(),
            seq: 10,
            last: 10
        }
    );
    let err = sign(&id, 1, 9)
        .verify(&id.public_key(), &alice(), &guard, RoundId(1))
        .expect_err("old");
    assert!(matches!(err, SignError::Replay { .. }));
    let v = sign(&id, 1, 11)
        .verify(&id.public_key(), &alice(), &guard, RoundId(1))
        .expect("fresh");
    guard.accept(v.fresh());
    assert_eq!(guard.last_seq(&alice()), Some(11));
}

#[test]
fn other_round_other_federation_rejected() {
    let id = SigningIdentity::from_seed([1; 32]);
    let guard = ReplayGuard::new(fed());
    let err = sign(&id, 2, 1)
        .verify(&id.public_key(), &alice(), &guard, RoundId(1))
        .expect_err("round");
    assert_eq!(
        err,
        SignError::WrongRound {
            expected: RoundId(1),
            got: RoundId(2)
        }
    );
    let other = ReplayGuard::new(FederationId::new("other").expect("valid"));
    let err = sign(&id, 1, 1)
        .verify(&id.public_key(), &alice(), &other, RoundId(1))
        .expect_err("fed");
    assert!(matches!(err, SignError::WrongFederation { .. }));
    // Rejections must not advance the guard.
    assert_eq!(guard.last_seq(&alice()), None);
}

#[test]
fn tampering_and_wrong_key_rejected_without_advancing_guard() {
    let id = SigningIdentity::from_seed([1; 32]);
    let stranger = SigningIdentity::from_seed([2; 32]);
    let guard = ReplayGuard::new(fed());
    let err = sign(&stranger, 1, 1)
        .verify(&id.public_key(), &alice(), &guard, RoundId(1))
        .expect_err("key");
    assert!(matches!(err, SignError::BadSignature { .. }));
    let mut s = sign(&id, 1, 1);
    let last = s.payload.len() - 1;
    s.payload[last] ^= 1;
    assert!(matches!(
        s.verify(&id.public_key(), &alice(), &guard, RoundId(1)),
        Err(SignError::BadSignature { .. })
    ));
    let mut s = sign(&id, 1, 1);
    s.seq = 2; // header tampering
    assert!(matches!(
        s.verify(&id.public_key(), &alice(), &guard, RoundId(1)),
        Err(SignError::BadSignature { .. })
    ));
    let mut s = sign(&id, 1, 1);
    s.signature.truncate(10);
    assert!(matches!(
        s.verify(&id.public_key(), &alice(), &guard, RoundId(1)),
        Err(SignError::BadSignature { .. })
    ));
    assert_eq!(guard.last_seq(&alice()), None);
    assert!(sign(&id, 1, 1)
        .verify(&id.public_key(), &alice(), &guard, RoundId(1))
        .is_ok());
}

#[test]
fn verification_split_in_two_checks_what_verify_checks() {
    let id = SigningIdentity::from_seed([1; 32]);
    let stranger = SigningIdentity::from_seed([2; 32]);
    let mut guard = ReplayGuard::new(fed());
    // The stateless half: the signature under the given key, and the payload.
    let err = sign(&stranger, 1, 1)
        .verify_signature(&id.public_key())
        .expect_err("key");
    assert!(matches!(err, SignError::BadSignature { .. }));
    let checked = sign(&id, 1, 10).verify_signature(&id.public_key()).expect("signature");
    assert_eq!(checked.key(), &id.public_key());
    assert_eq!(checked.envelope().seq, 10);
    // The stateful half: identity, federation, round, freshness; the same result as `verify`.
    let v = checked.verify(&alice(), &guard, RoundId(1)).expect("verifies");
    let whole = sign(&id, 1, 10)
        .verify(&id.public_key(), &alice(), &guard, RoundId(1))
        .expect("verifies");
    assert_eq!(
        (v.value(), v.payload_digest(), v.seq()),
        (whole.value(), whole.payload_digest(), whole.seq())
    );
    let bob = Signer::Participant(ParticipantId::new("bob"));
    let half = |seq| sign(&id, 1, seq).verify_signature(&id.public_key()).expect("signature");
    assert!(matches!(
        half(11).verify(&bob, &guard, RoundId(1)),
        Err(SignError::SignerMismatch { .. })
    ));
    assert!(matches!(
        half(11).verify(&alice(), &guard, RoundId(2)),
        Err(SignError::WrongRound { .. })
    ));
    let other = ReplayGuard::new(FederationId::new("other").expect("valid"));
    assert!(matches!(
        half(11).verify(&alice(), &other, RoundId(1)),
        Err(SignError::WrongFederation { .. })
    ));
    // Nothing moved the guard; once the caller accepts, the same number is a replay.
    assert_eq!(guard.last_seq(&alice()), None);
    guard.accept(v.fresh());
    assert!(matches!(
        half(10).verify(&alice(), &guard, RoundId(1)),
        Err(SignError::Replay { .. })
    ));
}

#[test]
fn signature_for_one_domain_does_not_verify_as_another() {
    let id = SigningIdentity::from_seed([1; 32]);
    let s = sign(&id, 1, 1);
    // Same bytes, reinterpreted as a Report: the domain differs so the signature fails.
    let as_report: Signed<Report> = Signed {
        signer: s.signer.clone(),
        federation: s.federation.clone(),
        round: s.round,
        seq: s.seq,
        payload: s.payload.clone(),
        signature: s.signature.clone(),
        _kind: PhantomData,
    };
    assert!(matches!(
        as_report.verify_offline(&id.public_key(), &fed()),
        Err(SignError::BadSignature { .. })
    ));
}

#[test]
fn envelope_survives_the_codec_and_offline_reverification_matches_signing_bytes() {
    let id = SigningIdentity::from_seed([3; 32]);
    let s = sign(&id, 4, 7);
    let bytes = encode_payload(&s).expect("encode");
    let back: Signed<Labels> = decode_payload(&bytes).expect("decode");
    // An auditor recomputes the signed bytes with the public helper.
    let msg = envelope_signing_bytes(
        Labels::DOMAIN,
        &back.signer,
        &back.federation,
        back.round,
        back.seq,
        &back.payload_digest(),
    );
    assert!(id.public_key().verify_strict(&msg, &back.signature));
    assert!(back.verify_offline(&id.public_key(), &fed()).is_ok());
}

#[test]
fn sequence_counter_increments() {
    let mut c = SequenceCounter::new(5);
    assert_eq!((c.next_seq(), c.next_seq()), (5, 6));
}
