//! Whole rounds of secure aggregation run in memory (every participant, the coordinator's relaying and the
//! unmasking), with and without dropouts, on the complete and the Harary graph; then one bad-input test per
//! input surface of each step.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use super::keys::{seal, share_key};
use super::*;

fn ctx() -> Context<'static> {
    Context {
        federation: b"fedistill-test",
        round: 42,
    }
}

/// Everything a round produced, up to and including the revealed shares.
struct Sim {
    graph: Graph,
    secrets: Vec<RoundSecrets>,
    keys: Vec<PublicKeys>,
    inputs: Vec<Vec<f32>>,
    encoded: Vec<Vec<u64>>,
    sent: Vec<EncryptedShares>,
    held: Vec<HeldShares>,
    u2: Vec<usize>,
    u3: Vec<usize>,
    masked: Vec<(usize, Vec<u64>)>,
    revealed: Vec<RevealedShare>,
}

impl Sim {
    /// A round on `graph` with `dims`-long soft labels in which `dropped` go silent after sharing their keys
    /// (so they are in U2 but send no masked input and reveal nothing).
    fn run(graph: Graph, dims: usize, dropped: &[usize], seed: u64) -> Sim {
        let n = graph.len();
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let secrets: Vec<RoundSecrets> = (0..n).map(|_| RoundSecrets::generate(&mut rng)).collect();
        let keys: Vec<PublicKeys> = secrets.iter().map(RoundSecrets::public).collect();
        let sent: Vec<EncryptedShares> = (0..n)
            .flat_map(|u| share_keys(&ctx(), u, &secrets[u], &keys, &graph, &mut rng).unwrap())
            .collect();
        let u2: Vec<usize> = (0..n).collect();
        let held: Vec<HeldShares> = (0..n)
            .map(|v| open_shares(&ctx(), v, &secrets[v], &keys, &inbox(&sent, v)).unwrap())
            .collect();
        let inputs: Vec<Vec<f32>> = (0..n)
            .map(|_| (0..dims).map(|_| rng.random::<f32>()).collect())
            .collect();
        let encoded: Vec<Vec<u64>> = inputs.iter().map(|x| encode_fixed(x).unwrap()).collect();
        let u3: Vec<usize> = u2.iter().copied().filter(|u| !dropped.contains(u)).collect();
        let masked = u3
            .iter()
            .map(|&u| {
                (
                    u,
                    masked_input(&ctx(), u, &secrets[u], &keys, &graph, &u2, &encoded[u]).unwrap(),
                )
            })
            .collect();
        let revealed = u3
            .iter()
            .flat_map(|&h| {
                let req = reveal_request(&graph, h, &u2, &u3);
                reveal(h, &held[h], &req.survivors, &req.dropped).unwrap()
            })
            .collect();
        Sim {
            graph,
            secrets,
            keys,
            inputs,
            encoded,
            sent,
            held,
            u2,
            u3,
            masked,
            revealed,
        }
    }

    fn unmask(&self) -> Result<Vec<u64>, SecAggError> {
        unmask(&ctx(), &self.keys, &self.graph, &self.u2, &self.masked, &self.revealed)
    }

    /// The plain ring sum of the survivors' encoded inputs.
    fn expected_sum(&self) -> Vec<u64> {
        let mut sum = vec![0u64; self.encoded[0].len()];
        for &u in &self.u3 {
            for (s, e) in sum.iter_mut().zip(&self.encoded[u]) {
                *s = s.wrapping_add(*e);
            }
        }
        sum
    }

    /// Unmasks, and checks the sum bit for bit and the decoded mean against the f32 mean.
    fn assert_unmasks_exactly(&self) {
        let sum = self.unmask().unwrap();
        assert_eq!(sum, self.expected_sum());
        let k = self.u3.len() as f64;
        for (j, d) in decode_fixed(&sum).iter().enumerate() {
            let mean = self.u3.iter().map(|&u| f64::from(self.inputs[u][j])).sum::<f64>() / k;
            let err = (d / k - mean).abs();
            assert!(
                err <= fixed_point_error_bound() * (1.0 + 1e-9),
                "element {j}: error {err}"
            );
        }
    }

    /// Position of a revealed share in `revealed`.
    fn find(&self, holder: usize, owner: usize, kind: ShareKind) -> usize {
        self.revealed
            .iter()
            .position(|r| (r.holder as usize, r.owner as usize, r.kind) == (holder, owner, kind))
            .unwrap()
    }
}

/// What the coordinator relays to `v`.
fn inbox(sent: &[EncryptedShares], v: usize) -> Vec<EncryptedShares> {
    sent.iter().filter(|e| e.to as usize == v).cloned().collect()
}

#[test]
fn complete_graph_round_without_dropouts_unmasks_the_exact_sum() {
    let sim = Sim::run(Graph::complete(5, 3).unwrap(), 40, &[], 1);
    assert_eq!(sim.u3, vec![0, 1, 2, 3, 4]);
    // Everyone holds everyone's shares, its own included, and nothing of a mask secret was revealed.
    assert!(sim.held.iter().all(|h| h.owners() == vec![0, 1, 2, 3, 4]));
    assert!(sim.revealed.iter().all(|r| r.kind == ShareKind::SelfSeed));
    assert_eq!(sim.revealed.len(), 25);
    sim.assert_unmasks_exactly();
}

#[test]
fn complete_graph_round_with_a_dropout_after_share_keys_unmasks_the_survivors_sum() {
    // Participant 2 drops after sharing its keys: survivors above and below it hold +PRG and -PRG terms with it.
    let sim = Sim::run(Graph::complete(5, 3).unwrap(), 40, &[2], 2);
    assert_eq!(sim.u3, vec![0, 1, 3, 4]);
    let mask_shares = sim.revealed.iter().filter(|r| r.kind == ShareKind::MaskSecret).count();
    assert_eq!(mask_shares, 4, "every survivor reveals its share of 2's mask secret");
    assert!(sim
        .revealed
        .iter()
        .all(|r| (r.kind == ShareKind::MaskSecret) == (r.owner == 2)));
    sim.assert_unmasks_exactly();

    // Without the dropped participant's mask secret its pairwise masks stay in: unmasking must say so.
    let mut short = Sim::run(Graph::complete(5, 3).unwrap(), 8, &[2], 2);
    short.revealed.retain(|r| r.kind == ShareKind::SelfSeed);
    assert_eq!(
        short.unmask(),
        Err(SecAggError::NotEnoughShares {
            owner: 2,
            kind: ShareKind::MaskSecret,
            have: 0,
            need: 3
        })
    );
}

#[test]
fn harary_round_with_and_without_dropouts_unmasks_the_exact_sum() {
    let graph = Graph::harary(10, 4, 3).unwrap();
    let sim = Sim::run(graph.clone(), 30, &[], 3);
    assert!(sim.held.iter().enumerate().all(|(v, h)| h.owners() == graph.holders(v)));
    sim.assert_unmasks_exactly();

    let sim = Sim::run(graph.clone(), 30, &[3], 4);
    assert_eq!(sim.u3.len(), 9);
    // Only 3's holders (1, 2, 4, 5) hold and reveal shares of its mask secret.
    let mut revealers: Vec<u32> = sim
        .revealed
        .iter()
        .filter(|r| r.kind == ShareKind::MaskSecret)
        .map(|r| r.holder)
        .collect();
    revealers.sort_unstable();
    assert_eq!(revealers, vec![1, 2, 4, 5]);
    sim.assert_unmasks_exactly();

    // Two dropouts, one of them a neighbour of the other's neighbours: still exact.
    Sim::run(graph, 30, &[3, 6], 5).assert_unmasks_exactly();
}

#[test]
fn noise_added_before_masking_survives_unmasking_exactly() {
    let mut sim = Sim::run(Graph::complete(5, 3).unwrap(), 16, &[1], 6);
    let mut draws = (0..).map(|i: i64| (i * 7919) % 201 - 100);
    for u in sim.u3.clone() {
        let mut noisy = sim.encoded[u].clone();
        add_discrete_gaussian_noise(&mut noisy, 100, || draws.next().unwrap());
        sim.masked.retain(|(w, _)| *w != u);
        sim.masked.push((
            u,
            masked_input(&ctx(), u, &sim.secrets[u], &sim.keys, &sim.graph, &sim.u2, &noisy).unwrap(),
        ));
        sim.encoded[u] = noisy;
    }
    assert_eq!(sim.unmask().unwrap(), sim.expected_sum());
}

#[test]
fn unmasking_is_deterministic_and_independent_of_message_order() {
    let sim = Sim::run(Graph::harary(10, 4, 3).unwrap(), 12, &[7], 7);
    let first = sim.unmask().unwrap();
    let mut revealed = sim.revealed.clone();
    revealed.reverse();
    let mut masked = sim.masked.clone();
    masked.rotate_left(3);
    let u2: Vec<usize> = sim.u2.iter().rev().copied().collect();
    assert_eq!(
        unmask(&ctx(), &sim.keys, &sim.graph, &u2, &masked, &revealed).unwrap(),
        first
    );
    assert_eq!(sim.unmask().unwrap(), first);
}

#[test]
fn a_single_masked_vector_reveals_nothing_of_its_input() {
    let sim = Sim::run(Graph::complete(5, 3).unwrap(), 1000, &[], 8);
    let (u, y) = &sim.masked[0];
    let x = &sim.encoded[*u];
    let differ = x.iter().zip(y).filter(|(a, b)| a != b).count();
    assert!(differ > 990, "only {differ} of 1000 elements changed");
    let decoded = decode_fixed(y);
    let far = decoded
        .iter()
        .zip(&sim.inputs[*u])
        .filter(|(d, v)| (**d - f64::from(**v)).abs() > 1.0)
        .count();
    assert!(far > 990, "only {far} of 1000 decoded elements are off by more than 1");
    // Pearson correlation between input and masked ring element (as a fraction of 2^64) is near zero.
    let a: Vec<f64> = sim.inputs[*u].iter().map(|&v| f64::from(v)).collect();
    let b: Vec<f64> = y.iter().map(|&v| v as f64 / 2f64.powi(64)).collect();
    let (ma, mb) = (a.iter().sum::<f64>() / 1000.0, b.iter().sum::<f64>() / 1000.0);
    let cov: f64 = a.iter().zip(&b).map(|(p, q)| (p - ma) * (q - mb)).sum();
    let (va, vb): (f64, f64) = (
        a.iter().map(|p| (p - ma).powi(2)).sum(),
        b.iter().map(|q| (q - mb).powi(2)).sum(),
    );
    let r = cov / (va * vb).sqrt();
    assert!(r.abs() < 0.1, "correlation {r}");
}

#[test]
fn shares_messages_survive_the_wire_codec() {
    let sim = Sim::run(Graph::complete(3, 2).unwrap(), 2, &[], 9);
    let bytes = crate::codec::encode_payload(&sim.sent).unwrap();
    assert_eq!(
        crate::codec::decode_payload::<Vec<EncryptedShares>>(&bytes).unwrap(),
        sim.sent
    );
    let bytes = crate::codec::encode_payload(&sim.revealed).unwrap();
    assert_eq!(
        crate::codec::decode_payload::<Vec<RevealedShare>>(&bytes).unwrap(),
        sim.revealed
    );
    let bytes = crate::codec::encode_payload(&sim.keys).unwrap();
    assert_eq!(
        crate::codec::decode_payload::<Vec<PublicKeys>>(&bytes).unwrap(),
        sim.keys
    );
    assert_eq!(sim.sent[0].ciphertext.len(), NONCE_LEN + SHARE_PLAINTEXT_LEN + TAG_LEN);
}

// ---- open_shares: one test per rejection --------------------------------------------------------------------

#[test]
fn open_shares_rejects_misaddressed_unknown_duplicated_and_tampered_shares() {
    let sim = Sim::run(Graph::complete(5, 3).unwrap(), 1, &[], 10);
    let open = |me: usize, msgs: &[EncryptedShares]| open_shares(&ctx(), me, &sim.secrets[me], &sim.keys, msgs);
    let mut mine = inbox(&sim.sent, 1);

    let mut wrong_to = mine.clone();
    wrong_to[2].to = 3;
    assert_eq!(
        open(1, &wrong_to).unwrap_err(),
        SecAggError::WrongRecipient { from: 2, to: 3, me: 1 }
    );

    let mut unknown = mine.clone();
    unknown[0].from = 99;
    assert_eq!(
        open(1, &unknown).unwrap_err(),
        SecAggError::UnknownSender { from: 99, n: 5 }
    );

    let mut duplicated = mine.clone();
    duplicated.push(mine[3].clone());
    assert_eq!(
        open(1, &duplicated).unwrap_err(),
        SecAggError::DuplicateSender { from: 3 }
    );

    let mut tampered = mine.clone();
    tampered[4].ciphertext[NONCE_LEN + 5] ^= 0x01;
    assert_eq!(open(1, &tampered).unwrap_err(), SecAggError::Decryption { from: 4 });

    let mut truncated = mine.clone();
    truncated[0].ciphertext.truncate(NONCE_LEN + TAG_LEN - 1);
    assert_eq!(open(1, &truncated).unwrap_err(), SecAggError::Decryption { from: 0 });

    // A share relabelled as another sender's (a share "for the wrong owner") fails authentication.
    let mut relabelled = mine.clone();
    relabelled[2].from = 0;
    relabelled.remove(0);
    assert_eq!(open(1, &relabelled).unwrap_err(), SecAggError::Decryption { from: 0 });

    // The same shares in another round (or federation) do not open.
    let next = Context { round: 43, ..ctx() };
    assert_eq!(
        open_shares(&next, 1, &sim.secrets[1], &sim.keys, &mine).unwrap_err(),
        SecAggError::Decryption { from: 0 }
    );

    // A well-authenticated plaintext of the wrong length, and one carrying someone else's x-coordinate.
    let key = share_key(&ctx(), sim.secrets[4].enc_secret(), &sim.keys[1].enc, 1, 4, 1).unwrap();
    mine[4].ciphertext = seal(&ctx(), &key, [7; NONCE_LEN], 4, 1, &[2u8; SHARE_PLAINTEXT_LEN - 1]).unwrap();
    assert_eq!(
        open(1, &mine).unwrap_err(),
        SecAggError::BadPlaintextLength {
            from: 4,
            len: SHARE_PLAINTEXT_LEN - 1,
            expected: SHARE_PLAINTEXT_LEN
        }
    );
    mine[4].ciphertext = seal(&ctx(), &key, [7; NONCE_LEN], 4, 1, &[3u8; SHARE_PLAINTEXT_LEN]).unwrap();
    assert_eq!(
        open(1, &mine).unwrap_err(),
        SecAggError::ShareIdentifierMismatch {
            from: 4,
            found: 3,
            expected: 2
        }
    );

    // The wrong index for one's own secrets is caught before anything is decrypted.
    assert_eq!(
        open_shares(&ctx(), 2, &sim.secrets[1], &sim.keys, &inbox(&sim.sent, 2)).unwrap_err(),
        SecAggError::OwnKeyMismatch { me: 2 }
    );
}

// ---- masked_input -------------------------------------------------------------------------------------------

#[test]
fn masked_input_checks_its_position_u2_and_peer_keys() {
    let sim = Sim::run(Graph::harary(10, 4, 3).unwrap(), 4, &[], 11);
    let x = &sim.encoded[0];
    let call = |me: usize, keys: &[PublicKeys], u2: &[usize]| {
        masked_input(&ctx(), me, &sim.secrets[0], keys, &sim.graph, u2, x)
    };
    assert_eq!(
        call(0, &sim.keys, &[1, 2, 3]).unwrap_err(),
        SecAggError::NotInU2 { me: 0 }
    );
    assert_eq!(
        call(0, &sim.keys, &[0, 1, 5, 6]).unwrap_err(),
        SecAggError::TooFewSurvivors { have: 2, need: 3 }
    );
    assert_eq!(
        call(0, &sim.keys, &[0, 1, 1]).unwrap_err(),
        SecAggError::DuplicateIndex { index: 1 }
    );
    assert_eq!(
        call(0, &sim.keys, &[0, 10]).unwrap_err(),
        SecAggError::IndexOutOfRange { index: 10, n: 10 }
    );
    assert_eq!(
        call(3, &sim.keys, &sim.u2).unwrap_err(),
        SecAggError::OwnKeyMismatch { me: 3 }
    );
    assert_eq!(
        call(0, &sim.keys[..9], &sim.u2).unwrap_err(),
        SecAggError::KeyCountMismatch { keys: 9, graph: 10 }
    );
    let mut low_order = sim.keys.clone();
    low_order[9].mask = [0; 32];
    assert_eq!(
        call(0, &low_order, &sim.u2).unwrap_err(),
        SecAggError::NonContributoryKey { peer: 9 }
    );
    // A peer outside U2 is simply not masked with.
    assert!(call(0, &low_order, &[0, 1, 2, 8]).is_ok());
}

// ---- reveal -------------------------------------------------------------------------------------------------

#[test]
fn reveal_refuses_both_shares_of_one_peer_and_other_bad_requests() {
    let sim = Sim::run(Graph::harary(10, 4, 3).unwrap(), 1, &[], 12);
    let held = &sim.held[0];
    assert_eq!(
        reveal(0, held, &[0, 1, 2], &[9, 2]).unwrap_err(),
        SecAggError::BothSharesRequested { peer: 2 }
    );
    assert_eq!(
        reveal(0, held, &[1, 2], &[0]).unwrap_err(),
        SecAggError::OwnMaskSecretRequested { me: 0 }
    );
    assert_eq!(
        reveal(0, held, &[1, 2, 1], &[]).unwrap_err(),
        SecAggError::DuplicateRequest { peer: 1 }
    );
    assert_eq!(
        reveal(0, held, &[1], &[8, 8]).unwrap_err(),
        SecAggError::DuplicateRequest { peer: 8 }
    );
    assert_eq!(
        reveal(0, held, &[1], &[5]).unwrap_err(),
        SecAggError::NoShareHeld { owner: 5 }
    );
    assert_eq!(
        reveal(1, held, &[1], &[]).unwrap_err(),
        SecAggError::HolderMismatch { held_by: 0, me: 1 }
    );
    let out = reveal(0, held, &[0, 9], &[1]).unwrap();
    let kinds: Vec<(u32, ShareKind)> = out.iter().map(|r| (r.owner, r.kind)).collect();
    assert_eq!(
        kinds,
        vec![
            (0, ShareKind::SelfSeed),
            (9, ShareKind::SelfSeed),
            (1, ShareKind::MaskSecret)
        ]
    );
    assert!(out
        .iter()
        .all(|r| r.holder == 0 && r.share.len() == SHARE_LEN && r.share[0] == 1));
}

// ---- unmask -------------------------------------------------------------------------------------------------

#[test]
fn unmask_needs_t_shares_of_every_survivor_seed() {
    let mut sim = Sim::run(Graph::complete(5, 3).unwrap(), 4, &[4], 13);
    // Survivor 0's self-seed shares from holders 1 and 3 are lost: two remain, three are needed.
    for holder in [1, 3] {
        let at = sim.find(holder, 0, ShareKind::SelfSeed);
        sim.revealed.remove(at);
    }
    assert_eq!(
        sim.unmask(),
        Err(SecAggError::NotEnoughShares {
            owner: 0,
            kind: ShareKind::SelfSeed,
            have: 2,
            need: 3
        })
    );
}

#[test]
fn unmask_rejects_duplicated_misattributed_and_malformed_shares() {
    let sim = Sim::run(Graph::complete(5, 3).unwrap(), 4, &[4], 14);
    let with = |edit: &dyn Fn(&mut Vec<RevealedShare>)| {
        let mut revealed = sim.revealed.clone();
        edit(&mut revealed);
        unmask(&ctx(), &sim.keys, &sim.graph, &sim.u2, &sim.masked, &revealed)
    };
    let at = sim.find(1, 0, ShareKind::SelfSeed);

    let dup = sim.revealed[at].clone();
    assert_eq!(
        with(&|r| r.push(dup.clone())),
        Err(SecAggError::DuplicateShare {
            holder: 1,
            owner: 0,
            kind: ShareKind::SelfSeed
        })
    );
    // Holder 1's share of 0 passed off as its share of 3: four shares of 3 no longer lie on one polynomial.
    let genuine_3 = sim.find(1, 3, ShareKind::SelfSeed);
    assert_eq!(
        with(&|r| {
            r[genuine_3].share = r[at].share.clone();
        }),
        Err(SecAggError::InconsistentShares {
            owner: 3,
            kind: ShareKind::SelfSeed
        })
    );
    // ... and relabelled as owner 3 outright, it duplicates holder 1's genuine share of 3.
    assert_eq!(
        with(&|r| r[at].owner = 3),
        Err(SecAggError::DuplicateShare {
            holder: 1,
            owner: 3,
            kind: ShareKind::SelfSeed
        })
    );
    assert_eq!(
        with(&|r| r[at].kind = ShareKind::MaskSecret),
        Err(SecAggError::UnexpectedShare {
            holder: 1,
            owner: 0,
            kind: ShareKind::MaskSecret
        })
    );
    let s4 = sim.find(0, 4, ShareKind::MaskSecret);
    assert_eq!(
        with(&|r| r[s4].kind = ShareKind::SelfSeed),
        Err(SecAggError::UnexpectedShare {
            holder: 0,
            owner: 4,
            kind: ShareKind::SelfSeed
        })
    );
    assert_eq!(
        with(&|r| r[at].holder = 2),
        Err(SecAggError::MalformedShare {
            holder: 2,
            owner: 0,
            kind: ShareKind::SelfSeed
        })
    );
    assert_eq!(
        with(&|r| r[at].share.truncate(SHARE_LEN - 1)),
        Err(SecAggError::MalformedShare {
            holder: 1,
            owner: 0,
            kind: ShareKind::SelfSeed
        })
    );
    assert_eq!(
        with(&|r| r[at].holder = 77),
        Err(SecAggError::IndexOutOfRange { index: 77, n: 5 })
    );
}

#[test]
fn unmask_rejects_shares_from_outside_the_owners_neighbourhood() {
    let mut sim = Sim::run(Graph::harary(10, 4, 3).unwrap(), 4, &[], 15);
    let at = sim.find(1, 0, ShareKind::SelfSeed);
    sim.revealed[at].holder = 5;
    sim.revealed[at].share[0] = 6;
    assert_eq!(sim.unmask(), Err(SecAggError::NotAHolder { holder: 5, owner: 0 }));
}

#[test]
fn unmask_rejects_bad_masked_inputs() {
    let sim = Sim::run(Graph::complete(5, 3).unwrap(), 6, &[4], 16);
    let with =
        |masked: &[(usize, Vec<u64>)], u2: &[usize]| unmask(&ctx(), &sim.keys, &sim.graph, u2, masked, &sim.revealed);

    let mut short = sim.masked.clone();
    short[2].1.pop();
    assert_eq!(
        with(&short, &sim.u2),
        Err(SecAggError::VectorLength {
            participant: short[2].0,
            len: 5,
            expected: 6
        })
    );
    let mut twice = sim.masked.clone();
    twice.push(sim.masked[1].clone());
    assert_eq!(
        with(&twice, &sim.u2),
        Err(SecAggError::DuplicateMaskedInput {
            participant: sim.masked[1].0
        })
    );
    assert_eq!(
        with(&sim.masked, &[0, 1, 2, 4]),
        Err(SecAggError::MaskedInputOutsideU2 { participant: 3 })
    );
    assert_eq!(with(&[], &sim.u2), Err(SecAggError::NoMaskedInputs));
    assert_eq!(
        with(&sim.masked[..2], &sim.u2),
        Err(SecAggError::TooFewSurvivors { have: 2, need: 3 })
    );
    assert_eq!(
        with(&sim.masked, &[0, 1, 2, 2]),
        Err(SecAggError::DuplicateIndex { index: 2 })
    );
}

#[test]
fn unmask_checks_a_rebuilt_mask_secret_against_the_advertised_key() {
    let sim = Sim::run(Graph::complete(5, 3).unwrap(), 3, &[4], 17);
    let mut keys = sim.keys.clone();
    keys[4].mask = keys[0].mask;
    assert_eq!(
        unmask(&ctx(), &keys, &sim.graph, &sim.u2, &sim.masked, &sim.revealed),
        Err(SecAggError::ReconstructedKeyMismatch { owner: 4 })
    );
}

#[test]
fn share_keys_seals_one_share_pair_per_holder_including_itself() {
    let graph = Graph::harary(10, 4, 3).unwrap();
    let secrets: Vec<RoundSecrets> = (0..10u8).map(|i| RoundSecrets::from_seed([i; 32])).collect();
    let keys: Vec<PublicKeys> = secrets.iter().map(RoundSecrets::public).collect();
    let mut rng = ChaCha20Rng::seed_from_u64(18);
    let out = share_keys(&ctx(), 0, &secrets[0], &keys, &graph, &mut rng).unwrap();
    let to: Vec<u32> = out.iter().map(|e| e.to).collect();
    assert_eq!(to, vec![0, 1, 2, 8, 9]);
    assert!(out.iter().all(|e| e.from == 0));
    assert_eq!(
        share_keys(&ctx(), 1, &secrets[0], &keys, &graph, &mut rng).unwrap_err(),
        SecAggError::OwnKeyMismatch { me: 1 }
    );
    assert_eq!(
        share_keys(&ctx(), 10, &secrets[0], &keys, &graph, &mut rng).unwrap_err(),
        SecAggError::IndexOutOfRange { index: 10, n: 10 }
    );
    assert_eq!(
        share_keys(&ctx(), 0, &secrets[0], &keys[..5], &graph, &mut rng).unwrap_err(),
        SecAggError::KeyCountMismatch { keys: 5, graph: 10 }
    );
    // A retry seals fresh shares under fresh nonces; both open.
    let again = share_keys(&ctx(), 0, &secrets[0], &keys, &graph, &mut rng).unwrap();
    assert_ne!(again[1].ciphertext, out[1].ciphertext);
    for batch in [&out, &again] {
        let held = open_shares(&ctx(), 1, &secrets[1], &keys, &[batch[1].clone()]).unwrap();
        assert_eq!(held.owners(), vec![0]);
    }
}
