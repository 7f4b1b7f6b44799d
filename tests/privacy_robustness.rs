//! DP and robustness end to end, in-process: the attack harness at small scale on MNIST-10k (robust rules
//! hold, the mean breaks under collusion, DP costs accuracy and stays within its budget), and an update
//! log carrying `Quarantine` and `PrivacySpend` records produced by the real policy and accountant that
//! `audit::verify` accepts (and rejects once tampered).

use fedistill_harness::attack::{Attack, Harness, HarnessConfig, Outcome, RobustTable, Scenario};
use fedistill_shared::audit::{parse_trust, verify, Bundle, ExportInput, ProtocolRecompute, SOFT_LABELS_DOMAIN};
use fedistill_shared::crypto::{signing_bytes, Digest, FederationId, ParticipantId, RoundId, SigningIdentity};
use fedistill_shared::data::{load, LoadOptions};
use fedistill_shared::ledger::{EncodingName, LogSigner, MemoryTree, Metric, Record, RosterAction, RuleName};
use fedistill_shared::ml::{InputNorm, ModelConfig};
use fedistill_shared::privacy::{ParticipantPrivacy, PrivacyConfig, PrivacyMode, Release};
use fedistill_shared::protocol::aggregate::{aggregate, distance_to_consensus, ContributionView};
use fedistill_shared::protocol::robust::{AnomalyTracker, QuarantinePolicy};
use fedistill_shared::protocol::{softlabels, AggregationRule, Encoding};
use fedistill_shared::wire::messages::SoftLabels;
use rand::SeedableRng;

/// The quick harness, shrunk so the whole table test runs in well under a minute in a debug build.
fn small_config() -> HarnessConfig {
    let mut c = HarnessConfig::quick(11);
    c.private_per_participant = 300;
    c.public_len = 800;
    c.test_len = 800;
    c.train.epochs = 10;
    c.distill.epochs_per_round = 8;
    c.distill.input_norm = InputNorm::Global;
    c
}

fn run(h: &Harness, rule: AggregationRule, attack: Option<Attack>, epsilon: Option<f64>) -> Outcome {
    h.run(&Scenario {
        rule,
        attack,
        epsilon,
        quarantine: false,
    })
    .expect("scenario runs")
}

#[test]
fn robust_rules_hold_against_one_attacker_and_the_mean_breaks_under_collusion() {
    let ds = load("mnist-10k", &LoadOptions::default()).expect("embedded mnist-10k");
    let h = Harness::build(&ds, small_config()).expect("teachers train");
    let trimmed = AggregationRule::TrimmedMean { trim: 0.2 };
    let clean_mean = run(&h, AggregationRule::Mean, None, None).accuracy;
    let clean_median = run(&h, AggregationRule::Median, None, None).accuracy;
    let clean_trimmed = run(&h, trimmed, None, None).accuracy;
    // The student learns: far above chance (10%) and near the teachers.
    let best_teacher = h.teacher_accuracy().iter().copied().fold(0.0, f64::max);
    assert!(
        clean_median > 0.7 && clean_median > best_teacher - 0.1,
        "clean {clean_median}, teachers {best_teacher}"
    );
    // One attacker of five, every single-attacker attack: median and trimmed mean within 2 points.
    for a in [Attack::LabelFlip, Attack::RandomLabels, Attack::Sharpen] {
        let m = run(&h, AggregationRule::Median, Some(a), None).accuracy;
        let t = run(&h, trimmed, Some(a), None).accuracy;
        assert!(
            clean_median - m <= 0.02,
            "{}: median {m} vs clean {clean_median}",
            a.name()
        );
        assert!(
            clean_trimmed - t <= 0.02,
            "{}: trimmed {t} vs clean {clean_trimmed}",
            a.name()
        );
    }
    // The strongest attack (two colluders sending the same permuted, sharpened labels) drags the plain
    // mean down by far more than 2 points, and by far more than the median.
    let mean_collude = run(&h, AggregationRule::Mean, Some(Attack::Collude), None).accuracy;
    let median_collude = run(&h, AggregationRule::Median, Some(Attack::Collude), None).accuracy;
    let mean_drop = clean_mean - mean_collude;
    let median_drop = clean_median - median_collude;
    assert!(mean_drop > 0.05, "mean drops {mean_drop}");
    assert!(
        mean_drop > median_drop + 0.03,
        "mean drop {mean_drop} vs median drop {median_drop}"
    );
    // With the quarantine policy the colluders are identified under the median and excluded.
    let q = h
        .run(&Scenario {
            rule: AggregationRule::Median,
            attack: Some(Attack::Collude),
            epsilon: None,
            quarantine: true,
        })
        .expect("runs");
    let mut who: Vec<usize> = q.quarantined.iter().map(|(p, _)| *p).collect();
    who.sort_unstable();
    assert_eq!(
        who,
        vec![3, 4],
        "quarantined {:?}, distances {:?}",
        q.quarantined,
        q.mean_distance
    );
    // DP: the accountant's spend stays within the target, and noise costs accuracy.
    let dp = run(&h, AggregationRule::Median, None, Some(8.0));
    let spent = dp.epsilon_spent.expect("DP run reports its spend");
    assert!(spent <= 8.0 && spent > 7.9, "spent {spent}");
    assert!(dp.accuracy < clean_median, "dp {} vs clean {clean_median}", dp.accuracy);
}

/// The DP-SGD table of `fedistill bench robust` at small scale: teachers trained with DP-SGD at two
/// per-private-sample epsilons on the same split, each costing at most (and within 0.1% of) its target by
/// the Sampled Gaussian accountant; more epsilon, less noise; the table renders with a row per epsilon
/// and the no-DP row; at epsilon 8 the student is far above chance (10%).
#[test]
fn dp_sgd_teacher_table_is_produced_at_small_scale() {
    let ds = load("mnist-10k", &LoadOptions::default()).expect("embedded mnist-10k");
    // Narrower teachers and fewer DP-SGD epochs than the bench keep this test to seconds.
    let mut cfg = small_config();
    cfg.teacher = ModelConfig::Mlp { hidden: vec![32] };
    cfg.dp_sgd.epochs = 10;
    let h = Harness::build(&ds, cfg.clone()).expect("teachers train");
    let clean = run(&h, AggregationRule::Median, None, None);
    let mut table = RobustTable {
        config: cfg,
        teacher_accuracy: h.teacher_accuracy().to_vec(),
        clean: vec![clean],
        privacy: Vec::new(),
        attacks: Vec::new(),
        attacks_quarantine: Vec::new(),
        dp_sgd: Vec::new(),
    };
    table
        .run_dp_sgd(&ds, &[AggregationRule::Median], &[1.0, 8.0])
        .expect("DP-SGD rows");
    assert_eq!(table.dp_sgd.len(), 2);
    for row in &table.dp_sgd {
        assert!(
            row.cost.epsilon <= row.epsilon && row.cost.epsilon > 0.999 * row.epsilon,
            "{:?}",
            row.cost
        );
        assert_eq!(row.outcomes.len(), 1);
        assert_eq!(row.teacher_accuracy.len(), 5);
    }
    let (low, high) = (&table.dp_sgd[0], &table.dp_sgd[1]);
    assert!(low.cost.noise_multiplier > high.cost.noise_multiplier);
    assert!(
        high.outcomes[0].accuracy > 0.3,
        "epsilon 8 student {}",
        high.outcomes[0].accuracy
    );
    let md = table.to_markdown();
    assert!(
        md.contains("Student accuracy (%) vs per-private-sample epsilon (DP-SGD teachers"),
        "{md}"
    );
    for needle in ["| 1 | ", "| 8 | ", "| no DP | - | - |"] {
        assert!(md.contains(needle), "{needle} missing in {md}");
    }
}

const ORIGIN: &str = "fedistill.test/fed-dp";
const FED: &str = "fed-dp";

/// A real log of three median rounds with five participants, one of them sending permuted labels:
/// contributions signed by the participants, aggregates signed by the coordinator, the quarantine
/// decided by `AnomalyTracker` and the spends by each participant's `ParticipantPrivacy`.
fn dp_log(tamper: bool) -> (Bundle, String) {
    let coordinator = SigningIdentity::from_seed([1; 32]);
    let fed = FederationId::new(FED).expect("valid id");
    let parts: Vec<(ParticipantId, SigningIdentity)> = (0..5u8)
        .map(|i| {
            (
                ParticipantId::new(format!("bank-{i}")),
                SigningIdentity::from_seed([20 + i; 32]),
            )
        })
        .collect();
    let mut records = vec![Record::FederationCreated {
        federation_id: FED.into(),
        coordinator_key: coordinator.public_key().to_bytes(),
        created_unix: 1_700_000_000,
        config_digest: Digest::of(b"config"),
    }];
    for (p, k) in &parts {
        records.push(Record::RosterChange {
            participant: p.clone(),
            action: RosterAction::Enrol,
            signing_key: k.public_key().to_bytes(),
            cert_fingerprint: Digest::of(p.as_str().as_bytes()),
            reason: "initial roster".into(),
        });
    }
    let cfg = PrivacyConfig {
        mode: PrivacyMode::Soft,
        noise_multiplier: 0.2,
        delta: 1e-5,
        clip: 1.0,
        budget_epsilon: 1000.0,
    };
    let (rows, classes) = (4usize, 3usize);
    let mut dp: Vec<ParticipantPrivacy> = (0..5).map(|_| ParticipantPrivacy::new(cfg, classes, 0)).collect();
    let mut tracker = AnomalyTracker::new(QuarantinePolicy::default()).expect("default policy");
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(4);
    let mut payloads = Vec::new();
    let mut quarantines = 0;
    for r in 1..=3u64 {
        let round = RoundId(r);
        let ids = Digest::of(format!("ids-{r}").as_bytes());
        records.push(Record::RoundOpened {
            round,
            public_set_digest: Digest::of(b"public"),
            sample_ids_digest: ids,
            temperature: 2.0,
            rule: RuleName::parse("median").expect("valid rule"),
            deadline_unix_ms: 1_700_000_060_000 + r,
            quorum: 5,
        });
        // Honest teachers agree on class (row % 3); bank-4 permutes the classes.
        let mut probs: Vec<Vec<f32>> = Vec::new();
        let mut spends = Vec::new();
        for (i, state) in dp.iter_mut().enumerate() {
            let honest: Vec<f32> = (0..rows)
                .flat_map(|row| (0..classes).map(move |c| if c == (row + i / 4) % classes { 0.8 } else { 0.1 }))
                .collect();
            let Ok(Release::Send { labels, spend }) = state.handle_round(r, &honest, rows, classes, &mut rng) else {
                panic!("budget allows the round")
            };
            probs.push(labels);
            spends.push(spend);
        }
        let mut contributions = Vec::new();
        for (i, (p, k)) in parts.iter().enumerate() {
            let msg = SoftLabels {
                round,
                public_digest: Digest::of(b"public"),
                sample_ids_digest: ids,
                encoding: Encoding::F32,
                rows: rows as u32,
                classes: classes as u32,
                samples: 100,
                payload: softlabels::encode(&probs[i], rows, classes, Encoding::F32).expect("distributions"),
            };
            let payload = fedistill_shared::wire::encode_payload(&msg).expect("encodes");
            let d = Digest::of(&payload);
            let sig = k.sign_raw(&signing_bytes(SOFT_LABELS_DOMAIN, &fed, round, r, &d));
            records.push(Record::Contribution {
                round,
                participant: p.clone(),
                encoding: EncodingName::parse("f32").expect("valid encoding"),
                payload_digest: d,
                sequence: r,
                signature: sig.to_vec(),
            });
            payloads.push((d, payload));
            contributions.push(softlabels::decode(&msg.payload, rows, classes, Encoding::F32).expect("decodes"));
        }
        let views: Vec<ContributionView<'_>> = contributions
            .iter()
            .map(|c| ContributionView {
                probabilities: c,
                samples: 100,
            })
            .collect();
        let agg = aggregate(AggregationRule::Median, &views, rows, classes).expect("aggregates");
        let bytes: Vec<u8> = agg.iter().flat_map(|v| v.to_le_bytes()).collect();
        let digest = Digest::of(&bytes);
        let mut rec = Record::Aggregate {
            round,
            digest,
            rule: RuleName::parse("median").expect("valid rule"),
            contributors: parts.iter().map(|(p, _)| p.clone()).collect(),
            signature: Vec::new(),
        };
        let stmt = rec.statement(FED).expect("encodes").expect("aggregates are signed");
        if let Record::Aggregate { signature, .. } = &mut rec {
            *signature = coordinator.sign_raw(&stmt).to_vec();
        }
        records.push(rec);
        payloads.push((digest, bytes));
        let scores: Vec<(ParticipantId, f64)> = parts
            .iter()
            .zip(&contributions)
            .map(|((p, _), c)| (p.clone(), distance_to_consensus(c, &agg, classes)))
            .collect();
        for q in tracker.handle_round(round, &scores) {
            quarantines += 1;
            records.push(Record::Quarantine {
                round: q.round,
                participant: q.participant,
                reason: q.reason,
                evidence: Metric::canonical(q.evidence).expect("unique names"),
            });
        }
        for ((p, _), s) in parts.iter().zip(&spends) {
            records.push(Record::PrivacySpend {
                round,
                participant: p.clone(),
                epsilon: s.epsilon_round,
                delta: s.delta,
            });
        }
    }
    assert_eq!(quarantines, 1, "the permuting participant is quarantined in round 3");
    assert!(records
        .iter()
        .any(|r| matches!(r, Record::Quarantine { participant, .. } if participant.as_str() == "bank-4")));
    let mut encoded: Vec<Vec<u8>> = records.iter().map(|r| r.encode().expect("encodes")).collect();
    let mut tree = MemoryTree::new();
    for e in &encoded {
        tree.push(e);
    }
    let size = tree.size();
    let signer = LogSigner::new(ORIGIN, coordinator.to_dalek()).expect("origin");
    let checkpoint = signer.sign(size, tree.root(size).expect("root")).expect("signs");
    if tamper {
        // Rewrite the quarantine's evidence after the log was signed.
        let i = records
            .iter()
            .position(|r| matches!(r, Record::Quarantine { .. }))
            .expect("has one");
        if let Record::Quarantine { evidence, .. } = &mut records[i] {
            evidence[0].value *= 0.5;
        }
        encoded[i] = records[i].encode().expect("encodes");
    }
    let bundle = Bundle::build(ExportInput {
        records: encoded,
        checkpoints: vec![checkpoint],
        payloads: Some(payloads),
    })
    .expect("bundle builds");
    let trust = format!(
        "origin = \"{ORIGIN}\"\ncoordinator_key = \"{}\"\nquorum = 0\n",
        hex_of(&coordinator.public_key().to_bytes())
    );
    (bundle, trust)
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn audit_verifies_a_log_with_quarantine_and_privacy_spend_records() {
    let (bundle, trust) = dp_log(false);
    let trust = parse_trust(&trust).expect("trust parses");
    let report = verify(&bundle, &trust, Some(&ProtocolRecompute));
    assert!(report.ok(), "{report:#?}");
    let (tampered, _) = dp_log(true);
    let report = verify(&tampered, &trust, Some(&ProtocolRecompute));
    assert!(!report.ok(), "a rewritten quarantine record must not verify");
}

/// `fedistill participant --config` refuses unusable `[privacy]` settings at start, before touching the
/// kit or the data, with the reason on stderr.
#[test]
fn participant_refuses_bad_privacy_settings_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let base = "kit = \"kit\"\nworkdir = \"work\"\nshard = 0\n[data]\ndataset = \"mnist-10k\"\nparticipants = 3\n";
    let cases = [
        (
            "noise_multiplier = 0.0\ndelta = 1e-5\nbudget_epsilon = 8.0",
            "noise_multiplier 0 must be > 0",
        ),
        (
            "epsilon_per_round = -1.0\ndelta = 1e-5\nbudget_epsilon = 8.0",
            "epsilon_per_round -1 must be",
        ),
        (
            "noise_multiplier = 1.0\ndelta = 0.0\nbudget_epsilon = 8.0",
            "delta 0 must be in (0, 1)",
        ),
        (
            "noise_multiplier = 1.0\ndelta = 1.5\nbudget_epsilon = 8.0",
            "delta 1.5 must be in (0, 1)",
        ),
        (
            "delta = 1e-5\nbudget_epsilon = 8.0\n[privacy.teacher]\nnoise_multiplier = 0.0\nclip = 1.0\nbatch = 64",
            "[privacy.teacher] noise_multiplier 0 must be",
        ),
        (
            "delta = 1e-5\nbudget_epsilon = 8.0\n[privacy.teacher]\nnoise_multiplier = 1.0\nclip = 0.0\nbatch = 64",
            "[privacy.teacher] clip 0 must be",
        ),
        (
            "delta = 1e-5\nbudget_epsilon = -1.0\n[privacy.teacher]\nnoise_multiplier = 1.0\nclip = 1.0\nbatch = 64",
            "budget_epsilon -1 must be",
        ),
    ];
    for (i, (privacy, needle)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("p{i}.toml"));
        std::fs::write(&path, format!("{base}[privacy]\n{privacy}\n")).expect("write config");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_fedistill"))
            .args(["participant", "--config"])
            .arg(&path)
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{privacy}: accepted");
        assert!(stderr.contains(needle), "{privacy}: stderr {stderr}");
    }
}

/// Runs `fedistill` with `args` in `dir`, returning (success, stdout + stderr).
fn fedistill(dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fedistill"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Kills the spawned processes if the test fails midway.
struct Procs(Vec<std::process::Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A real federation (processes, mTLS QUIC) with DP on: `fedistill demo` provisions it, then it is re-run
/// with `[privacy]` for every participant; p2's budget covers one round only. Asserts the privatized
/// rounds, p2's refusal to send in round 2, the PrivacySpend records, and that the log still verifies.
#[test]
#[ignore = "slow (about 3 minutes in a debug build: two federations with teacher training); run with --ignored"]
fn federation_with_dp_logs_spends_and_respects_the_budget() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let d = tmp.path().join("fed");
    let ds = d.display().to_string();
    let (ok, out) = fedistill(
        tmp.path(),
        &[
            "demo",
            "--rounds",
            "2",
            "--participants",
            "3",
            "--rule",
            "median",
            "--workdir",
            &ds,
        ],
    );
    assert!(ok, "demo failed: {out}");
    for p in ["coordinator.sqlite", "coordinator.sqlite-wal", "coordinator.sqlite-shm"] {
        let _ = std::fs::remove_file(d.join(p));
    }
    std::fs::remove_dir_all(d.join("work")).expect("work dir");
    let coord = std::fs::read_to_string(d.join("coordinator.toml")).expect("coordinator config");
    let coord = coord
        .lines()
        .map(|l| {
            if l.starts_with("collect_timeout_ms") {
                "collect_timeout_ms = 15000"
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(d.join("coordinator.toml"), coord + "\n").expect("write");
    for (p, budget) in [("p0", 10.0), ("p1", 10.0), ("p2", 5.0)] {
        let path = d.join(format!("participant-{p}.toml"));
        let mut text = std::fs::read_to_string(&path).expect("participant config");
        text.push_str(&format!(
            "[privacy]\nepsilon_per_round = 4.0\ndelta = 1e-5\nbudget_epsilon = {budget}\n"
        ));
        std::fs::write(&path, text).expect("write");
    }
    let logs = d.join("logs");
    let spawn = |args: &[&str], log: &str| {
        let f = std::fs::File::create(logs.join(log)).expect("log file");
        std::process::Command::new(env!("CARGO_BIN_EXE_fedistill"))
            .args(args)
            .current_dir(&d)
            .stdout(f.try_clone().expect("dup"))
            .stderr(f)
            .spawn()
            .expect("spawns")
    };
    let mut procs = Procs(vec![spawn(
        &["coordinator", "--config", "coordinator.toml"],
        "dp-coordinator.log",
    )]);
    for p in ["p0", "p1", "p2"] {
        let cfg = format!("participant-{p}.toml");
        procs
            .0
            .push(spawn(&["participant", "--config", &cfg], &format!("dp-{p}.log")));
    }
    let start = std::time::Instant::now();
    for c in &mut procs.0 {
        loop {
            if let Some(status) = c.try_wait().expect("wait") {
                assert!(status.success(), "a process failed; logs in {}", logs.display());
                break;
            }
            assert!(start.elapsed().as_secs() < 300, "federation did not finish in 300 s");
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
    let p2 = std::fs::read_to_string(logs.join("dp-p2.log")).expect("p2 log");
    assert!(p2.contains("privacy budget would be exceeded"), "{p2}");
    let (ok, out) = fedistill(
        &d,
        &[
            "audit",
            "export",
            "--store",
            "coordinator.sqlite",
            "--out",
            "dp-bundle",
            "--payloads",
        ],
    );
    assert!(ok, "{out}");
    let (ok, out) = fedistill(&d, &["audit", "verify", "dp-bundle", "--trust", "trust.toml"]);
    assert!(ok && out.contains("OK"), "{out}");
    let (ok, show) = fedistill(&d, &["audit", "show", "dp-bundle"]);
    assert!(ok, "{show}");
    let spends: Vec<&str> = show.lines().filter(|l| l.contains("privacy spend by")).collect();
    for needle in [
        "round 1: privacy spend by p0: epsilon=4",
        "round 1: privacy spend by p2: epsilon=4",
        "round 2: privacy spend by p0",
    ] {
        assert!(
            spends.iter().any(|l| l.contains(needle)),
            "{needle} missing: {spends:?}"
        );
    }
    assert!(
        !spends.iter().any(|l| l.contains("round 2: privacy spend by p2")),
        "{spends:?}"
    );
    assert!(
        show.lines()
            .any(|l| l.contains("round 2: aggregate") && l.contains("[p0, p1]")),
        "{show}"
    );
}
