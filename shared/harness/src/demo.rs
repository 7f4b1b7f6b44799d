// Over 800 lines: the two ways to set a federation up (a catalog split written as files, or the user's own files), the process supervision and the report read best together.
//! `fedistill demo`: a whole federation on this machine. It provisions a federation, starts the
//! coordinator and K participants as separate processes of this binary talking mutually authenticated QUIC
//! over loopback, follows the rounds, computes the local-only and centralized baselines, exports and
//! verifies the audit bundle, and prints and writes the report (documented in docs/demo.md).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use fedistill_participant::lifecycle::RoundRecord;
use fedistill_participant::service::ParticipantResult;
use fedistill_shared::crypto::{FederationId, ParticipantId};
use fedistill_shared::ml::{Progress, ProgressMode};
use fedistill_shared::settings::DataSettings;

/// Options of `fedistill demo` (the flags, and the binary its nodes run as).
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Number of participants (institutions).
    pub participants: usize,
    /// Federated rounds.
    pub rounds: u64,
    /// Dataset from the catalog.
    pub dataset: String,
    /// Dirichlet label-skew concentration (smaller = more non-IID).
    pub alpha: f64,
    /// Seed of the split and of every model.
    pub seed: u64,
    /// Aggregation rule.
    pub rule: String,
    /// Secure aggregation (`secure_aggregation = true` in the coordinator's config).
    pub secure_aggregation: bool,
    /// Soft-label encoding participants send.
    pub encoding: String,
    /// How the coordinator packs the consensus it sends back.
    pub aggregate_encoding: String,
    /// Teacher refresh epochs per round (co-distillation, participant `[refresh]`; 0 = off).
    pub refresh_epochs: usize,
    /// FedAvg rounds run on the same split after the federation (0 = none): the time-to-accuracy baseline.
    pub fedavg_rounds: usize,
    /// Write the JSON report here.
    pub report: Option<PathBuf>,
    /// Keep everything (kits, store, artifacts, audit bundle, trust file) in this directory.
    pub workdir: Option<PathBuf>,
    /// Directory of file-based datasets (fashion-mnist).
    pub data_dir: Option<PathBuf>,
    /// The `fedistill` binary the coordinator, the participants and the audit commands run as.
    pub exe: PathBuf,
    /// Run on the user's own files instead of a catalog split (one participant per private file).
    pub own: Option<OwnFiles>,
    /// The catalog split's task card gets this `[augment]` (image datasets).
    pub augment: Option<fedistill_shared::data::Augment>,
    /// The coordinator's `[stop]`: finish once the median reported accuracy has not improved for this many
    /// rounds.
    pub stop_patience: Option<u64>,
    /// `[stop] min_delta` (default 0.001).
    pub stop_min_delta: Option<f64>,
    /// Every participant's teacher architecture (`[teacher]`; default: `federation_defaults`); also the
    /// centralized baseline's.
    pub teacher: Option<fedistill_shared::ml::ModelConfig>,
    /// The shared student architecture (`[student]`; default: `federation_defaults`).
    pub student: Option<fedistill_shared::ml::ModelConfig>,
    /// A regression task's constraint-loss weight on the student (participant `[regression]
    /// constraint_weight`; default: the participants' own, 1).
    pub constraint_weight: Option<f32>,
}

/// `fedistill demo --task CARD --public FILE --private FILE...`: a federation on the user's own files,
/// every node configured as a real deployment would be (a task card, its own private file, the public set
/// fetched from the coordinator).
#[derive(Debug, Clone)]
pub struct OwnFiles {
    /// The task card.
    pub card: PathBuf,
    /// The public transfer set the card names.
    pub public: PathBuf,
    /// One private file per participant.
    pub private: Vec<PathBuf>,
}

/// What the two kinds of demo differ in: the coordinator's task section, each participant's data
/// section, the public set's size, and the data of the centralized baseline.
struct Setup {
    coordinator_task: String,
    participant_data: Vec<String>,
    public_n: usize,
    /// Training rows (pooled) and the rows to test on, for the centralized baseline.
    baseline: (fedistill_shared::data::Dataset, fedistill_shared::data::Dataset),
    /// The dataset or task, as the report names it.
    dataset: String,
    /// The catalog split, kept for the FedAvg baseline (`--fedavg-rounds`).
    split: Option<fedistill_shared::data::FederatedSplit>,
    /// Input widths of the task card's modality blocks (empty without `[[modalities]]`).
    blocks: Vec<usize>,
    /// The card's regression task, when it has `[regression]`.
    regression: Option<fedistill_participant::regression::RegressionTask>,
}

/// A catalog split, written as a deployment's files (`files::write_split`): every node reads its own.
fn catalog_setup(args: &DemoOptions, dir: &Path) -> anyhow::Result<Setup> {
    let data = DataSettings {
        dataset: args.dataset.clone(),
        data_dir: args.data_dir.clone(),
        participants: args.participants,
        partition: "dirichlet".into(),
        alpha: args.alpha,
        classes_per_node: 2,
        seed: args.seed,
        test_fraction: 0.2,
        public_fraction: 0.3,
    };
    let split = data.load_split().context("loading and splitting the dataset")?;
    for (i, s) in split.shards.iter().enumerate() {
        let counts = s.class_counts();
        println!("  participant p{i}: {} private samples, class counts {:?}", s.n, counts);
    }
    println!(
        "  public transfer set: {} samples (labels unused), test set: {} samples",
        split.public.n, split.test.n
    );
    // Every node is configured as a real deployment: the demo writes each participant's shard as its own
    // files in its own directory, the public set and the test set as files, and a task card naming them
    // (docs/demo.md); no node derives anything from the catalog.
    let files = crate::files::write_split(dir, &split, args.augment)?;
    // The centralized and FedAvg baselines learn from the rows as the nodes read them: a tabular dataset's
    // files are raw, imputed and scaled with the card's statistics (the public file's), never with
    // statistics of the pooled private rows.
    let split = crate::files::parts_as_read(dir, &files, &split)?;
    let participant_data = (0..args.participants)
        .map(|i| {
            let node = format!("nodes/p{i}");
            let labels = files
                .public_labels
                .as_ref()
                .map(|l| format!("[public]\nlabels = \"{node}/{l}\"\n"))
                .unwrap_or_default();
            format!(
                "[task]\ncard = \"{node}/task.toml\"\n[private]\npath = \"{node}/{}\"\nseed = {}\n[benchmark]\npath = \"{node}/{}\"\n{labels}",
                files.private,
                args.seed + i as u64,
                files.benchmark
            )
        })
        .collect();
    Ok(Setup {
        coordinator_task: format!("[task]\ncard = \"task.toml\"\npublic = \"{}\"\n", files.public),
        participant_data,
        public_n: split.public.n,
        baseline: (pooled(&split.shards.iter().collect::<Vec<_>>()), split.test.clone()),
        dataset: args.dataset.clone(),
        split: (args.fedavg_rounds > 0).then_some(split),
        blocks: Vec::new(),
        regression: None,
    })
}

/// The user's own files: the coordinator runs from the card and serves the public file; each participant
/// reads its private file against the card, holds out a fifth of its rows to test on, and fetches the
/// public set over its mTLS connection.
fn own_setup(args: &DemoOptions, own: &OwnFiles) -> anyhow::Result<Setup> {
    use fedistill_participant::config::OwnData;
    anyhow::ensure!(
        own.private.len() >= 2,
        "give at least two --private files (one per participant; got {})",
        own.private.len()
    );
    let abs = |p: &Path| std::fs::canonicalize(p).with_context(|| format!("{}: cannot open", p.display()));
    let (card_path, public_path) = (abs(&own.card)?, abs(&own.public)?);
    let card = fedistill_shared::data::TaskCard::load(&card_path)?;
    let mut trains = Vec::new();
    let mut tests = Vec::new();
    let mut participant_data = Vec::new();
    for (i, file) in own.private.iter().enumerate() {
        let file = abs(file)?;
        // Read exactly as the node will (it stops on the first bad row): a bad file fails here, by name.
        let node = OwnData {
            card: card_path.clone(),
            private: file.clone(),
            format: None,
            csv: fedistill_shared::data::CsvOptions::default(),
            holdout: 0.2,
            validation: fedistill_participant::config::DEFAULT_VALIDATION,
            seed: args.seed + i as u64,
            public: None,
            max_public_bytes: u64::MAX,
            public_labels: None,
            benchmark: None,
            unlabeled: None,
        };
        let data = fedistill_participant::owndata::load(&node, &card, &public_path)?;
        if data.private.is_regression() {
            println!(
                "  participant p{i}: {} ({} training rows, {} held out), target mean {:.2}",
                file.display(),
                data.private.n,
                data.test.n,
                data.private.targets.iter().map(|&t| f64::from(t)).sum::<f64>() / data.private.n.max(1) as f64
            );
        } else {
            println!(
                "  participant p{i}: {} ({} training rows, {} held out), class counts {:?}",
                file.display(),
                data.private.n,
                data.test.n,
                data.private.class_counts()
            );
        }
        participant_data.push(format!(
            "[task]\ncard = {:?}\n[private]\npath = {:?}\nholdout = 0.2\nseed = {}\n",
            card_path.display().to_string(),
            file.display().to_string(),
            args.seed + i as u64
        ));
        trains.push(data.private);
        tests.push(data.test);
    }
    println!(
        "  public transfer set: {} samples (labels unused), fetched by every participant from the coordinator",
        card.public.rows
    );
    Ok(Setup {
        coordinator_task: format!(
            "[task]\ncard = {:?}\npublic = {:?}\n",
            card_path.display().to_string(),
            public_path.display().to_string()
        ),
        participant_data,
        public_n: card.public.rows as usize,
        baseline: (
            pooled(&trains.iter().collect::<Vec<_>>()),
            pooled(&tests.iter().collect::<Vec<_>>()),
        ),
        dataset: format!("task {}", card.name),
        split: None,
        blocks: card.modality_ranges().iter().map(|m| m.width()).collect(),
        regression: fedistill_participant::regression::RegressionTask::from_card(&card)?,
    })
}

/// The rows of `parts` in one dataset.
fn pooled(parts: &[&fedistill_shared::data::Dataset]) -> fedistill_shared::data::Dataset {
    let mut all = parts[0].clone();
    for s in &parts[1..] {
        all.features.extend_from_slice(&s.features);
        all.labels.extend_from_slice(&s.labels);
        all.targets.extend_from_slice(&s.targets);
        all.n += s.n;
    }
    all
}

/// The demo's JSON report.
#[derive(Debug, Serialize)]
pub struct DemoReport {
    /// Dataset name.
    pub dataset: String,
    /// Participants.
    pub participants: usize,
    /// Rounds.
    pub rounds: u64,
    /// Dirichlet alpha.
    pub alpha: f64,
    /// Aggregation rule.
    pub rule: String,
    /// Whether the rounds aggregated securely (the coordinator saw masked inputs and only their sum).
    pub secure_aggregation: bool,
    /// Soft-label encoding.
    pub encoding: String,
    /// Per round, averaged over participants.
    pub per_round: Vec<RoundRow>,
    /// Final results (`final` in JSON).
    #[serde(rename = "final")]
    pub final_: FinalRow,
    /// Baselines computed in the same run.
    pub baselines: Baselines,
    /// The audit result.
    pub audit: AuditRow,
    /// Per participant.
    pub per_participant: Vec<ParticipantResult>,
    /// Wall-clock seconds of the whole demo.
    pub seconds: f64,
    /// Where the artifacts are (absent when a temporary directory was used).
    pub workdir: Option<String>,
    /// FedAvg on the same split (`--fedavg-rounds`): its curve with each round's seconds since its start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fedavg: Option<crate::experiment::MethodRun>,
}

/// One round of the report.
#[derive(Debug, Serialize)]
pub struct RoundRow {
    /// Round number.
    pub round: u64,
    /// Soft-label bytes sent by all participants.
    pub bytes_up: u64,
    /// Aggregate bytes received by all participants.
    pub bytes_down: u64,
    /// Accuracy of the consensus labels on the round's public samples.
    pub consensus_accuracy: f64,
    /// Mean test accuracy of the participants' students.
    pub student_accuracy: f64,
    /// Each participant's student test accuracy.
    pub participant_accuracy: Vec<f64>,
    /// Mean seconds per participant from round open to report.
    pub seconds: f64,
    /// Seconds from the demo's start until the last participant distilled the round.
    pub elapsed_s: f64,
    /// Mean seconds per participant in each phase of its round (`label`, `upload_wait`, `refresh`,
    /// `distill`, `evaluate`, `quantize`, `export`, `guard`, `save`; see `RoundRecord::phases`).
    pub participant_phases: std::collections::BTreeMap<String, f64>,
    /// The coordinator's phases of the round (`collect`, `assemble`, `commit`, `send`), from its `/status`.
    pub coordinator_phases: std::collections::BTreeMap<String, f64>,
    /// The coordinator's own count of the round's soft-label bytes received (`/status`; equals `bytes_up`
    /// when every participant contributed).
    pub coordinator_bytes_up: Option<u64>,
    /// The coordinator's own count of the aggregate bytes it sent (`/status`; equals `bytes_down`).
    pub coordinator_bytes_down: Option<u64>,
}

/// Final results.
#[derive(Debug, Serialize)]
pub struct FinalRow {
    /// Mean test accuracy of the served federated students.
    pub student_accuracy: f64,
    /// Mean test accuracy of their INT8 versions.
    pub int8_accuracy: f64,
    /// Size of an exported INT8 student in bytes.
    pub int8_bytes: usize,
    /// Student parameters.
    pub student_params: usize,
    /// Mean ROC AUC of the served students (absent unless every participant's is defined).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub student_auc: Option<f64>,
    /// Regression tasks: the served students' metrics (`r2`, `rmse`, `mae`, `violation_rate`, their
    /// `int8_` versions, ...), mean over participants. For a regression the `*_accuracy` fields hold R².
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub student_metrics: std::collections::BTreeMap<String, f64>,
}

/// Baselines.
#[derive(Debug, Serialize)]
pub struct Baselines {
    /// Mean test accuracy of the participants' teachers trained on their own data only.
    pub local_only_accuracy: f64,
    /// Each participant's local-only accuracy.
    pub local_only: Vec<f64>,
    /// Test accuracy of the teacher architecture trained on the pooled private data (upper bound).
    pub centralized_accuracy: f64,
    /// Mean ROC AUC of the local-only teachers (absent unless every participant's is defined).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_only_auc: Option<f64>,
    /// ROC AUC of the pooled teacher (absent when not defined on the test rows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub centralized_auc: Option<f64>,
    /// Regression tasks: the local-only teachers' metrics, mean over participants.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub local_only_metrics: std::collections::BTreeMap<String, f64>,
    /// Regression tasks: the pooled teacher's metrics.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub centralized_metrics: std::collections::BTreeMap<String, f64>,
}

/// The audit result.
#[derive(Debug, Serialize)]
pub struct AuditRow {
    /// Whether `fedistill audit verify` accepted the exported bundle.
    pub verified: bool,
    /// Its report.
    pub output: String,
}

fn free_udp_port() -> anyhow::Result<u16> {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").context("finding a free UDP port")?;
    Ok(s.local_addr()?.port())
}

fn free_tcp_port() -> anyhow::Result<u16> {
    let s = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free TCP port")?;
    Ok(s.local_addr()?.port())
}

struct Children(Vec<(String, Child)>);

impl Drop for Children {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            if let Ok(None) = c.try_wait() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// Starts a node; `threads` is its compute threads (`RAYON_NUM_THREADS`, as a deployment's unit file sets).
fn spawn(exe: &Path, args: &[&str], log: &Path, name: &str, threads: usize) -> anyhow::Result<(String, Child)> {
    let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone()?;
    let child = Command::new(exe)
        .args(args)
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
        .env("RAYON_NUM_THREADS", threads.to_string())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    Ok((name.to_string(), child))
}

/// Runs the demo.
pub fn run(args: &DemoOptions) -> anyhow::Result<()> {
    let started = Instant::now();
    anyhow::ensure!(
        args.participants >= 2,
        "--participants must be at least 2 (got {})",
        args.participants
    );
    anyhow::ensure!(args.rounds >= 1, "--rounds must be at least 1");
    anyhow::ensure!(args.alpha > 0.0, "--alpha must be > 0 (got {})", args.alpha);
    let rule = fedistill_shared::protocol::AggregationRule::parse(&args.rule)?;
    anyhow::ensure!(
        !args.secure_aggregation
            || matches!(
                rule,
                fedistill_shared::protocol::AggregationRule::Mean
                    | fedistill_shared::protocol::AggregationRule::SampleWeighted
            ),
        "--rule {} needs every participant's own soft labels, which --secure-aggregation hides from the \
         coordinator: use --rule mean or --rule sample_weighted",
        args.rule
    );
    fedistill_shared::protocol::Encoding::parse(&args.encoding)?;
    fedistill_shared::protocol::Encoding::parse(&args.aggregate_encoding).context("--aggregate-encoding")?;
    let temp;
    let dir = match &args.workdir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            anyhow::ensure!(
                std::fs::read_dir(d)?.next().is_none(),
                "--workdir {} is not empty; give a new or empty directory",
                d.display()
            );
            std::fs::canonicalize(d)?
        }
        None => {
            temp = tempfile::tempdir().context("creating a temporary directory")?;
            temp.path().to_path_buf()
        }
    };
    let exe = &args.exe;
    let participants = args.own.as_ref().map_or(args.participants, |o| o.private.len());
    match &args.own {
        None => println!(
            "fedistill demo: {} participants, {} rounds, {} (Dirichlet alpha {}), rule {}, encoding {}",
            args.participants, args.rounds, args.dataset, args.alpha, args.rule, args.encoding
        ),
        Some(o) => println!(
            "fedistill demo: {participants} participants on their own files, task card {}, {} rounds, rule {}, encoding {}",
            o.card.display(),
            args.rounds,
            args.rule,
            args.encoding
        ),
    }
    println!("  working directory: {}", dir.display());
    let setup = match &args.own {
        None => catalog_setup(args, &dir)?,
        Some(o) => own_setup(args, o)?,
    };
    let public_n = setup.public_n;
    if setup.regression.is_some() {
        anyhow::ensure!(
            matches!(args.encoding.as_str(), "f32" | "f16")
                && matches!(args.aggregate_encoding.as_str(), "f32" | "f16"),
            "the task is a regression: its soft labels are real values, which travel as f32 or f16 (--encoding {}, \
             --aggregate-encoding {})",
            args.encoding,
            args.aggregate_encoding
        );
        fedistill_shared::protocol::aggregate::check_rule_for_values(rule).context("--rule")?;
        anyhow::ensure!(
            !args.secure_aggregation,
            "--secure-aggregation supports classification tasks only"
        );
        println!(
            "  regression task: real-valued soft labels, no teacher refresh (participant [refresh] is for classes)"
        );
    } else {
        anyhow::ensure!(
            args.constraint_weight.is_none(),
            "--constraint-weight applies to a regression task card ([regression]); this task classifies"
        );
    }
    // An architecture that cannot take this task's rows fails here, naming the flag, before any node starts.
    let rows = &setup.baseline.0;
    for (flag, model) in [("--teacher", &args.teacher), ("--student", &args.student)] {
        if let Some(m) = model {
            m.clone()
                .with_blocks(&setup.blocks)
                .validate(rows.dim, rows.num_classes)
                .with_context(|| format!("{flag}: {} inputs and {} classes", rows.dim, rows.num_classes))?;
        }
    }

    // 1. Provision: CA, coordinator certificate and keys, one startup kit per participant.
    let port = free_udp_port()?;
    let fed_dir = dir.join("federation");
    let federation = FederationId::new("demo")?;
    let now = fedistill_shared::provision::now_utc();
    fedistill_shared::provision::init(
        &fed_dir,
        &federation,
        &[format!("127.0.0.1:{port}")],
        Some(std::net::SocketAddr::from(([127, 0, 0, 1], port))),
        now,
    )?;
    let names: Vec<String> = (0..participants).map(|i| format!("p{i}")).collect();
    for n in &names {
        fedistill_shared::provision::add_participant(&fed_dir, &ParticipantId::new(n.clone()), now)?;
    }
    println!(
        "  provisioned federation 'demo': CA, coordinator certificate, {} startup kits",
        names.len()
    );

    // 2. Configs.
    let status_port = free_tcp_port()?;
    let samples_per_round = (public_n as u64).div_ceil(2).max(1);
    let coordinator_cfg = dir.join("coordinator.toml");
    std::fs::write(
        &coordinator_cfg,
        format!(
            "federation_dir = \"federation\"\nbind = \"127.0.0.1:{port}\"\nstore = \"coordinator.sqlite\"\nstatus = \"127.0.0.1:{status_port}\"\nrounds = {}\nmin_participants = {}\nquorum = {}\ncollect_timeout_ms = 120000\nreport_timeout_ms = 120000\nsamples_per_round = {samples_per_round}\nrule = {:?}\naggregate_encoding = {:?}\ntemperature = 2.0\n{}",
            args.rounds,
            participants,
            (participants / 2 + 1),
            args.rule,
            args.aggregate_encoding,
            {
                let stop = args
                    .stop_patience
                    .map(|p| {
                        let delta = args
                            .stop_min_delta
                            .map(|d| format!("min_delta = {d:?}\n"))
                            .unwrap_or_default();
                        format!("[stop]\npatience = {p}\n{delta}")
                    })
                    .unwrap_or_default();
                let task = if args.secure_aggregation {
                    format!("secure_aggregation = true\n{}", setup.coordinator_task)
                } else {
                    setup.coordinator_task.clone()
                };
                // `[stop]` is a table: it goes after every top-level key of the task part.
                format!("{task}{stop}")
            }
        ),
    )?;
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let mut participant_cfgs = Vec::new();
    let mut models = String::new();
    for (table, model) in [("teacher", &args.teacher), ("student", &args.student)] {
        if let Some(m) = model {
            models.push_str(&format!(
                "[{table}]\n{}",
                toml::to_string(m).context("writing the participants' model sections")?
            ));
        }
    }
    let refresh_epochs = if setup.regression.is_some() {
        0
    } else {
        args.refresh_epochs
    };
    if let Some(w) = args.constraint_weight {
        models.push_str(&format!("[regression]\nconstraint_weight = {w:?}\n"));
    }
    for (i, n) in names.iter().enumerate() {
        let cfg = dir.join(format!("participant-{n}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "kit = \"federation/kits/{n}\"\nworkdir = \"work/{n}\"\nencoding = {:?}\n{}\n[refresh]\nepochs = {}\n{models}",
                args.encoding, setup.participant_data[i], refresh_epochs
            ),
        )?;
        participant_cfgs.push(cfg);
    }

    // 3. Processes. They share this machine, so each participant gets its share of the compute threads
    // (RAYON_NUM_THREADS, default the CPUs), as an operator co-hosting nodes would set in their unit files:
    // more threads than cores only spin at candle's barriers (docs/ml.md, "Where a round's time goes").
    let threads = (fedistill_shared::ml::init_compute_threads() / participants).max(1);
    let mut children = Children(Vec::new());
    let c = coordinator_cfg.display().to_string();
    children.0.push(spawn(
        exe,
        &["coordinator", "--config", &c],
        &logs.join("coordinator.log"),
        "coordinator",
        threads,
    )?);
    for (n, cfg) in names.iter().zip(&participant_cfgs) {
        let c = cfg.display().to_string();
        children.0.push(spawn(
            exe,
            &["participant", "--config", &c],
            &logs.join(format!("{n}.log")),
            n,
            threads,
        )?);
    }
    println!("  started the coordinator (udp 127.0.0.1:{port}, status http://127.0.0.1:{status_port}/status) and {} participant processes", names.len());
    println!("  operator console: http://127.0.0.1:{status_port}/ (open it in a browser while the demo runs)");
    println!("  logs: {}", logs.display());

    // 4. Follow progress until every process exits: the round lines on stdout as each participant reports,
    // and on stderr a bar over the rounds with the coordinator's phase (a line per round when stderr is not
    // a terminal).
    let progress = Progress::auto();
    progress.start("rounds", args.rounds);
    let mut shown_rounds = 0u64;
    let mut shown_msg = String::new();
    let mut announced = false;
    let mut reported = vec![0usize; names.len()];
    let mut last_status: Option<serde_json::Value> = None;
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        for (i, n) in names.iter().enumerate() {
            let state = dir.join("work").join(n).join("state.json");
            if let Ok(bytes) = std::fs::read(&state) {
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) {
                    let rounds = v["rounds"].as_array().cloned().unwrap_or_default();
                    for r in rounds.iter().skip(reported[i]) {
                        progress.suspend(|| {
                            println!(
                                "  [{:>6.1}s] {n}: round {} distilled, student accuracy {:.4} (int8 {:.4}), consensus {:.4}",
                                started.elapsed().as_secs_f64(),
                                r["round"], r["student_accuracy"].as_f64().unwrap_or(0.0),
                                r["int8_accuracy"].as_f64().unwrap_or(0.0),
                                r["consensus_accuracy"].as_f64().unwrap_or(0.0)
                            )
                        });
                    }
                    reported[i] = rounds.len().max(reported[i]);
                }
            }
        }
        // Rounds every participant has distilled; the phase as the coordinator's /status tells it.
        let distilled = (reported.iter().copied().min().unwrap_or(0) as u64).min(args.rounds);
        let status = poll_status(status_port);
        if status.is_some() {
            last_status = status.clone();
        }
        let msg = round_message(distilled, args.rounds, status.as_ref());
        if progress.mode() == ProgressMode::Bar {
            // On a terminal the bar follows every phase.
            if distilled > shown_rounds || msg != shown_msg {
                progress.advance("rounds", distilled, args.rounds, &msg);
            }
        } else {
            // Off a terminal: a line when the coordinator first answers (the participants are training their
            // teachers), then one line per round distilled by every participant.
            if !announced && status.is_some() && distilled == 0 {
                progress.advance("rounds", 0, args.rounds, &msg);
                announced = true;
            }
            for r in shown_rounds + 1..distilled {
                progress.advance("rounds", r, args.rounds, &round_message(r, args.rounds, None));
            }
            if distilled > shown_rounds {
                progress.advance("rounds", distilled, args.rounds, &msg);
            }
        }
        shown_rounds = shown_rounds.max(distilled);
        shown_msg = msg;
        let mut all_done = true;
        for (name, child) in &mut children.0 {
            match child.try_wait()? {
                Some(status) if !status.success() => {
                    anyhow::bail!(
                        "{name} exited with {status}; see {}",
                        logs.join(format!("{name}.log")).display()
                    )
                }
                Some(_) => {}
                None => all_done = false,
            }
        }
        if all_done {
            progress.finish(
                "rounds",
                &format!("{shown_rounds} rounds distilled by every participant"),
            );
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the federation did not finish within 30 minutes; see {}",
            logs.display()
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // 5. Results, baselines, audit.
    let mut results = Vec::new();
    for n in &names {
        let p = dir.join("work").join(n).join("result.json");
        let r: ParticipantResult =
            serde_json::from_slice(&std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?)
                .with_context(|| format!("decoding {}", p.display()))?;
        results.push(r);
    }
    progress
        .suspend(|| println!("  federation finished; training the centralized baseline on the pooled private data"));
    // The comparison stages after the federation: the centralized baseline, the audit export and its check.
    const STAGES: u64 = 3;
    progress.start("compare", STAGES);
    progress.advance("compare", 0, STAGES, "training the centralized baseline");
    // Its epochs show as a bar on a terminal; plain output stays one line per stage.
    let epochs = match progress.mode() {
        ProgressMode::Bar => progress.child(),
        _ => Progress::hidden(),
    };
    let (centralized_accuracy, centralized_auc, centralized_metrics) = match &setup.regression {
        Some(task) => {
            let m = regression_baseline(&setup.baseline.0, &setup.baseline.1, task, args.teacher.as_ref())?;
            (m.r2, None, m.to_map())
        }
        None => {
            let (a, auc) = centralized_baseline(
                &setup.baseline.0,
                &setup.baseline.1,
                args.teacher.as_ref(),
                &setup.blocks,
                &epochs,
            )?;
            (a, auc, Default::default())
        }
    };
    let fedavg = match &setup.split {
        Some(split) => {
            progress.suspend(|| {
                println!(
                    "  FedAvg baseline: {} rounds on the same split, same student, in this process over loopback mTLS QUIC",
                    args.fedavg_rounds
                )
            });
            Some(fedavg_baseline(args, split, &epochs)?)
        }
        None => None,
    };
    progress.advance(
        "compare",
        1,
        STAGES,
        &format!("centralized baseline trained ({centralized_accuracy:.4}); exporting the audit bundle"),
    );

    let bundle = dir.join("audit-bundle");
    let store = dir.join("coordinator.sqlite");
    let export = Command::new(exe)
        .args(["audit", "export", "--store"])
        .arg(&store)
        .arg("--out")
        .arg(&bundle)
        .arg("--payloads")
        .output()
        .context("running fedistill audit export")?;
    anyhow::ensure!(
        export.status.success(),
        "audit export failed: {}",
        String::from_utf8_lossy(&export.stderr)
    );
    progress.advance("compare", 2, STAGES, "audit bundle exported; verifying it");
    let trust = dir.join("trust.toml");
    write_trust(&trust, &fed_dir, &federation, &names)?;
    let verify = Command::new(exe)
        .args(["audit", "verify"])
        .arg(&bundle)
        .arg("--trust")
        .arg(&trust)
        .output()
        .context("running fedistill audit verify")?;
    let audit_output = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    let audit = AuditRow {
        verified: verify.status.success(),
        output: audit_output.trim().to_string(),
    };
    progress.advance(
        "compare",
        3,
        STAGES,
        if audit.verified {
            "audit verify OK"
        } else {
            "audit verify FAILED"
        },
    );
    progress.finish("compare", "baseline, audit export and verification");

    let seen = Observed {
        dataset: &setup.dataset,
        started,
        status: last_status.as_ref(),
        workdir: args.workdir.as_ref().map(|_| dir.display().to_string()),
    };
    let mut report = build_report(args, seen, results, (centralized_accuracy, centralized_auc), audit);
    report.fedavg = fedavg;
    report.baselines.centralized_metrics = centralized_metrics;
    progress.suspend(|| print_report(&report));
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("report written to {}", path.display());
        if let Some(f) = &report.fedavg {
            write_time_chart(path, &report, f)?;
        }
    }
    if let Some(d) = &args.workdir {
        println!(
            "artifacts kept in {}; re-verify with: fedistill audit verify {}/audit-bundle --trust {}/trust.toml",
            d.display(),
            d.display(),
            d.display()
        );
    }
    anyhow::ensure!(
        report.audit.verified,
        "the audit bundle did not verify:\n{}",
        report.audit.output
    );
    Ok(())
}

fn write_trust(path: &Path, fed_dir: &Path, federation: &FederationId, names: &[String]) -> anyhow::Result<()> {
    let layout = fedistill_shared::provision::FederationLayout::new(fed_dir);
    let coordinator_pub = std::fs::read_to_string(layout.coordinator_signing_pub())?;
    let coordinator = fedistill_shared::crypto::PublicKey::from_pem(&coordinator_pub)?;
    let roster = layout.load_roster(federation)?;
    let mut text = format!(
        "# Auditor trust file for federation {fed}: the coordinator's log key and the witnesses (k of n).\norigin = \"fedistill/{fed}\"\ncoordinator_key = \"{}\"\nquorum = {}\n",
        hex(&coordinator.to_bytes()),
        names.len() / 2 + 1,
        fed = federation.as_str()
    );
    for n in names {
        let entry = roster
            .by_id(&ParticipantId::new(n.clone()))
            .ok_or_else(|| anyhow::anyhow!("{n} is missing from the roster"))?;
        text.push_str(&format!(
            "\n[[witness]]\nname = \"fedistill-witness/{n}\"\nkey = \"{}\"\n",
            hex(&entry.signing_key.to_bytes())
        ));
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The coordinator's `/status` (JSON) at `127.0.0.1:port`, or None if it does not answer within a second
/// (not yet listening, or already gone): progress text only, never an error.
fn poll_status(port: u16) -> Option<serde_json::Value> {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(1))).ok()?;
    s.write_all(b"GET /status HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8(buf).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    if !head.contains(" 200") {
        return None;
    }
    // The JSON object, whatever framing surrounds it.
    let body = &body[body.find('{')?..=body.rfind('}')?];
    serde_json::from_str(body).ok()
}

/// The progress text of the federation: rounds every participant distilled, and the coordinator's round,
/// phase and contributions received of expected when its `/status` answered.
fn round_message(distilled: u64, rounds: u64, status: Option<&serde_json::Value>) -> String {
    let mut msg = format!("{distilled} of {rounds} rounds distilled by every participant");
    if let Some(st) = status {
        let round = st["round"].as_u64().unwrap_or(0);
        let phase = st["phase"].as_str().unwrap_or("");
        let received = st["received"].as_array().map_or(0, Vec::len);
        let expected = st["expected"].as_array().map_or(0, Vec::len);
        if st["finished"].as_bool() == Some(true) {
            msg.push_str("; coordinator: finished");
        } else if round == 0 {
            msg.push_str("; coordinator waiting for the participants (training their teachers)");
        } else {
            msg.push_str(&format!("; coordinator: round {round} {phase}"));
            if expected > 0 {
                msg.push_str(&format!(", {received}/{expected} contributions"));
            }
        }
    }
    msg
}

/// The teacher architecture trained on the pooled private rows, tested on `test`.
/// FedAvg on the demo's split with the benchmark's student and local update (2 epochs, AdamW), models
/// carried over a loopback mTLS QUIC link so its bytes are real frames.
fn fedavg_baseline(
    args: &DemoOptions,
    split: &fedistill_shared::data::FederatedSplit,
    progress: &Progress,
) -> anyhow::Result<crate::experiment::MethodRun> {
    let mut cfg = crate::experiment::ExperimentConfig::defaults(
        &split.test,
        args.participants,
        fedistill_shared::data::Partition::Dirichlet { alpha: args.alpha },
        args.seed,
    );
    cfg.fedavg_rounds = args.fedavg_rounds;
    let link = crate::exchange::Link::start(args.participants)?;
    let mut exchange = crate::exchange::WireExchange::new(args.participants, Some(link))?;
    crate::experiment::run_fedavg(&cfg, split, &mut exchange, progress)
}

fn centralized_baseline(
    pooled: &fedistill_shared::data::Dataset,
    test: &fedistill_shared::data::Dataset,
    teacher: Option<&fedistill_shared::ml::ModelConfig>,
    blocks: &[usize],
    progress: &Progress,
) -> anyhow::Result<(f64, Option<f64>)> {
    use fedistill_shared::ml::local::{default_train, LocalOptions};
    // The participants' default teacher for the task (fused over the card's blocks when it has some), or the
    // one they were given, with the card's blocks where a fused one leaves them out.
    let opts = LocalOptions::defaults_for(pooled, 42).with_modality_blocks(blocks);
    let tc = default_train(&pooled.kind, 42);
    let arch = &teacher.unwrap_or(&opts.teacher.model).clone().with_blocks(blocks);
    let m = fedistill_shared::ml::train_teacher(arch, pooled, &tc, progress)?;
    let metrics = fedistill_shared::ml::evaluate(&m, test, None)?;
    Ok((metrics.accuracy, Some(metrics.roc_auc).filter(|a| a.is_finite())))
}

/// A regression task's centralized baseline: the participants' default regression teacher (or `teacher`)
/// fitted on the pooled private rows, its metrics on the pooled held-out rows.
fn regression_baseline(
    pooled: &fedistill_shared::data::Dataset,
    test: &fedistill_shared::data::Dataset,
    task: &fedistill_participant::regression::RegressionTask,
    teacher: Option<&fedistill_shared::ml::ModelConfig>,
) -> anyhow::Result<fedistill_shared::ml::regression::RegressionMetrics> {
    use fedistill_shared::ml::regression::{fit_regressor, predict, regression_metrics, Constraints};
    let settings = fedistill_participant::regression::RegressionSettings::default();
    let (fit, student_fit) = settings.configs(42)?;
    let arch = teacher
        .cloned()
        .unwrap_or_else(|| fedistill_participant::regression::default_models().0);
    let m = fedistill_shared::ml::Model::new(&arch, pooled.dim, 1, 42)?;
    m.fit_input_normalization(&pooled.features, pooled.n, true)?;
    let spec = &task.spec;
    let y: Vec<f32> = pooled.targets.iter().map(|&t| spec.standardize(f64::from(t))).collect();
    fit_regressor(&m, &pooled.features, &y, pooled.n, &fit, &Constraints::default())?;
    Ok(regression_metrics(
        &|x, n| predict(&m, x, n),
        &test.features,
        &test.targets,
        test.dim,
        &|z| spec.destandardize(z),
        &task.constraints,
        student_fit.step,
    )?)
}

/// The mean of each named metric over `maps` (a name missing from one is left out).
fn mean_metrics<'a>(
    maps: impl Iterator<Item = &'a std::collections::BTreeMap<String, f64>> + Clone,
) -> std::collections::BTreeMap<String, f64> {
    let Some(first) = maps.clone().next() else {
        return Default::default();
    };
    first
        .keys()
        .filter_map(|k| {
            let v: Option<Vec<f64>> = maps.clone().map(|m| m.get(k).copied()).collect();
            v.map(|v| (k.clone(), mean(&v)))
        })
        .collect()
}

/// The mean when every value is there (and there is one), else `None`.
fn mean_of_all(v: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let v: Option<Vec<f64>> = v.collect();
    v.filter(|v| !v.is_empty()).map(|v| mean(&v))
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// What the demo observed besides the participants' results.
struct Observed<'a> {
    /// The dataset or task, as the report names it.
    dataset: &'a str,
    /// When the demo started.
    started: Instant,
    /// The coordinator's last `/status`.
    status: Option<&'a serde_json::Value>,
    /// The kept working directory, if any.
    workdir: Option<String>,
}

fn build_report(
    args: &DemoOptions,
    seen: Observed<'_>,
    results: Vec<ParticipantResult>,
    (centralized_accuracy, centralized_auc): (f64, Option<f64>),
    audit: AuditRow,
) -> DemoReport {
    let Observed {
        dataset,
        started,
        status,
        workdir,
    } = seen;
    let started_unix_ms = unix_ms().saturating_sub(started.elapsed().as_millis() as u64);
    let mut per_round = Vec::new();
    for r in 1..=args.rounds {
        let rows: Vec<&RoundRecord> = results
            .iter()
            .filter_map(|p| p.rounds.iter().find(|x| x.round == r))
            .collect();
        if rows.is_empty() {
            continue;
        }
        let logged = status
            .and_then(|s| s["history"].as_array())
            .and_then(|h| h.iter().find(|x| x["round"].as_u64() == Some(r)));
        per_round.push(RoundRow {
            round: r,
            bytes_up: rows.iter().map(|x| x.bytes_up).sum(),
            bytes_down: rows.iter().map(|x| x.bytes_down).sum(),
            consensus_accuracy: mean(&rows.iter().map(|x| x.consensus_accuracy).collect::<Vec<_>>()),
            student_accuracy: mean(&rows.iter().map(|x| x.student_accuracy).collect::<Vec<_>>()),
            participant_accuracy: rows.iter().map(|x| x.student_accuracy).collect(),
            seconds: mean(&rows.iter().map(|x| x.seconds).collect::<Vec<_>>()),
            elapsed_s: rows
                .iter()
                .map(|x| x.finished_unix_ms)
                .max()
                .unwrap_or(0)
                .saturating_sub(started_unix_ms) as f64
                / 1000.0,
            participant_phases: {
                let mut sum = std::collections::BTreeMap::<String, f64>::new();
                for x in &rows {
                    for (k, v) in &x.phases {
                        *sum.entry(k.clone()).or_default() += v / rows.len() as f64;
                    }
                }
                sum
            },
            coordinator_phases: logged
                .and_then(|x| x["phases"].as_object())
                .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_f64()?))).collect())
                .unwrap_or_default(),
            coordinator_bytes_up: logged.and_then(|x| x["bytes_up"].as_u64()),
            coordinator_bytes_down: logged.and_then(|x| x["bytes_down"].as_u64()),
        });
    }
    let local: Vec<f64> = results.iter().map(|r| r.local_only_accuracy).collect();
    DemoReport {
        dataset: dataset.to_string(),
        participants: results.len(),
        rounds: args.rounds,
        alpha: args.alpha,
        rule: args.rule.clone(),
        secure_aggregation: args.secure_aggregation,
        encoding: args.encoding.clone(),
        per_round,
        final_: FinalRow {
            student_accuracy: mean(&results.iter().map(|r| r.student_accuracy).collect::<Vec<_>>()),
            int8_accuracy: mean(&results.iter().map(|r| r.int8_accuracy).collect::<Vec<_>>()),
            int8_bytes: results.first().map(|r| r.int8_bytes).unwrap_or(0),
            student_params: results.first().map(|r| r.student_params).unwrap_or(0),
            student_auc: mean_of_all(results.iter().map(|r| r.student_auc)),
            student_metrics: mean_metrics(results.iter().map(|r| &r.student_metrics)),
        },
        baselines: Baselines {
            local_only_accuracy: mean(&local),
            local_only: local,
            centralized_accuracy,
            local_only_auc: mean_of_all(results.iter().map(|r| r.local_only_auc)),
            centralized_auc,
            local_only_metrics: mean_metrics(results.iter().map(|r| &r.local_only_metrics)),
            centralized_metrics: Default::default(),
        },
        audit,
        per_participant: results,
        seconds: started.elapsed().as_secs_f64(),
        workdir,
        fedavg: None,
    }
}

/// The two methods' (seconds, accuracy) curves: distillation from the demo's start (provisioning, process
/// starts and teacher training included), FedAvg from its own start.
fn time_curves(r: &DemoReport, f: &crate::experiment::MethodRun) -> [(&'static str, Vec<(f64, f64)>); 2] {
    [
        (
            "federated distillation (processes, QUIC)",
            r.per_round.iter().map(|p| (p.elapsed_s, p.student_accuracy)).collect(),
        ),
        (
            "FedAvg (in process)",
            f.curve.iter().map(|p| (p.elapsed_s, p.accuracy)).collect(),
        ),
    ]
}

fn print_time_to_accuracy(r: &DemoReport, f: &crate::experiment::MethodRun) {
    const TARGETS: [f64; 4] = [0.75, 0.80, 0.85, 0.87];
    println!();
    println!(
        "| method | rounds | final accuracy | bytes | {} |",
        TARGETS.map(|t| format!("s to {:.0}%", t * 100.0)).join(" | ")
    );
    println!("|---|---:|---:|---:|{}", "---:|".repeat(TARGETS.len()));
    let bytes = [
        r.per_round.iter().map(|p| p.bytes_up + p.bytes_down).sum::<u64>(),
        f.bytes,
    ];
    for ((name, curve), b) in time_curves(r, f).into_iter().zip(bytes) {
        let cells = TARGETS.map(|t| match curve.iter().find(|p| p.1 >= t) {
            Some(p) => format!("{:.1}", p.0),
            None => "not reached".into(),
        });
        println!(
            "| {name} | {} | {:.4} | {b} | {} |",
            curve.len(),
            curve.last().map_or(0.0, |p| p.1),
            cells.join(" | ")
        );
    }
}

/// Writes the time-to-accuracy chart beside the report (`STEM-time-to-accuracy.png` and `.svg`).
fn write_time_chart(report_path: &Path, r: &DemoReport, f: &crate::experiment::MethodRun) -> anyhow::Result<()> {
    use crate::report::{write_chart, Chart, Series};
    let series: Vec<Series> = time_curves(r, f)
        .into_iter()
        .map(|(name, c)| Series {
            name: name.into(),
            points: c.into_iter().map(|(t, a)| (t, a * 100.0)).collect(),
        })
        .collect();
    let dir = report_path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let stem = report_path.file_stem().and_then(|s| s.to_str()).unwrap_or("report");
    let title = format!("{}: student accuracy against wall clock", r.dataset);
    let paths = write_chart(
        dir,
        &format!("{stem}-time-to-accuracy"),
        &Chart {
            title: &title,
            x_label: "seconds since the start",
            y_label: "test accuracy (%)",
            series: &series,
            log_x: false,
        },
    )?;
    for p in paths {
        println!("chart written to {}", p.display());
    }
    Ok(())
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn print_report(r: &DemoReport) {
    println!();
    println!(
        "| round | elapsed s | bytes up | bytes down | consensus acc | student acc (mean) | per participant | s/round |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---|---:|");
    for row in &r.per_round {
        println!(
            "| {} | {:.1} | {} | {} | {:.4} | {:.4} | {} | {:.1} |",
            row.round,
            row.elapsed_s,
            row.bytes_up,
            row.bytes_down,
            row.consensus_accuracy,
            row.student_accuracy,
            row.participant_accuracy
                .iter()
                .map(|a| format!("{a:.4}"))
                .collect::<Vec<_>>()
                .join(" "),
            row.seconds
        );
    }
    // Where each round's time went: the participants' phases (mean) and the coordinator's.
    const P: [&str; 9] = [
        "label",
        "upload_wait",
        "refresh",
        "distill",
        "evaluate",
        "quantize",
        "export",
        "guard",
        "save",
    ];
    const C: [&str; 4] = ["collect", "assemble", "commit", "send"];
    println!();
    println!("| round | {} | coordinator: {} |", P.join(" | "), C.join(" | "));
    println!("|---:|{}", "---:|".repeat(P.len() + C.len()));
    for row in &r.per_round {
        let cell = |m: &std::collections::BTreeMap<String, f64>, k: &str| {
            m.get(k).map_or_else(|| "-".to_string(), |v| format!("{v:.2}"))
        };
        let p: Vec<String> = P.iter().map(|k| cell(&row.participant_phases, k)).collect();
        let c: Vec<String> = C.iter().map(|k| cell(&row.coordinator_phases, k)).collect();
        println!("| {} | {} | {} |", row.round, p.join(" | "), c.join(" | "));
    }
    if let Some(f) = &r.fedavg {
        print_time_to_accuracy(r, f);
    }
    if !r.final_.student_metrics.is_empty() {
        print_regression(r);
        return;
    }
    println!();
    println!("| model | test accuracy |");
    println!("|---|---:|");
    println!(
        "| federated student (f32, mean over participants) | {:.4} |",
        r.final_.student_accuracy
    );
    println!("| federated student (int8) | {:.4} |", r.final_.int8_accuracy);
    for (p, a) in r.per_participant.iter().zip(&r.baselines.local_only) {
        println!(
            "| local-only teacher of {} ({} samples) | {a:.4} |",
            p.participant, p.private_samples
        );
    }
    println!("| local-only (mean) | {:.4} |", r.baselines.local_only_accuracy);
    println!(
        "| centralized (pooled private data, upper bound) | {:.4} |",
        r.baselines.centralized_accuracy
    );
    println!();
    println!(
        "student: {} parameters, int8 export {} bytes; gain over local-only: {:+.2} points",
        r.final_.student_params,
        r.final_.int8_bytes,
        100.0 * (r.final_.student_accuracy - r.baselines.local_only_accuracy)
    );
    println!("audit verify: {}", if r.audit.verified { "OK" } else { "FAILED" });
    println!("finished in {:.1} s", r.seconds);
}

/// The final table of a regression task: R², RMSE, MAE and the constraint violation rates.
fn print_regression(r: &DemoReport) {
    let cols = ["r2", "rmse", "mae", "violation_rate", "bound_violation_rate"];
    let row = |name: &str, m: &std::collections::BTreeMap<String, f64>, prefix: &str| {
        let cells: Vec<String> = cols
            .iter()
            .map(|c| m.get(&format!("{prefix}{c}")).map_or("-".into(), |v| format!("{v:.4}")))
            .collect();
        println!("| {name} | {} |", cells.join(" | "));
    };
    println!();
    println!("| model | {} |", cols.join(" | "));
    println!("|---|{}", "---:|".repeat(cols.len()));
    row(
        "federated student (f32, mean over participants)",
        &r.final_.student_metrics,
        "",
    );
    row("federated student (int8)", &r.final_.student_metrics, "int8_");
    for p in &r.per_participant {
        row(
            &format!(
                "local-only teacher of {} ({} samples)",
                p.participant, p.private_samples
            ),
            &p.local_only_metrics,
            "",
        );
    }
    row("local-only (mean)", &r.baselines.local_only_metrics, "");
    row(
        "centralized (pooled private data, upper bound)",
        &r.baselines.centralized_metrics,
        "",
    );
    println!();
    println!(
        "student: {} parameters, int8 export {} bytes; R² gain over local-only: {:+.4}",
        r.final_.student_params,
        r.final_.int8_bytes,
        r.final_.student_accuracy - r.baselines.local_only_accuracy
    );
    println!("audit verify: {}", if r.audit.verified { "OK" } else { "FAILED" });
    println!("finished in {:.1} s", r.seconds);
}

#[cfg(test)]
mod tests {
    use super::round_message;

    #[test]
    fn round_message_tells_rounds_and_the_coordinators_phase() {
        assert_eq!(
            round_message(1, 3, None),
            "1 of 3 rounds distilled by every participant"
        );
        let waiting = serde_json::json!({"round": 0, "phase": "waiting", "finished": false});
        assert!(round_message(0, 3, Some(&waiting)).ends_with("(training their teachers)"));
        let collecting = serde_json::json!({
            "round": 2, "phase": "collecting", "finished": false,
            "expected": ["p0", "p1", "p2"], "received": ["p1"]
        });
        assert_eq!(
            round_message(1, 3, Some(&collecting)),
            "1 of 3 rounds distilled by every participant; coordinator: round 2 collecting, 1/3 contributions"
        );
        let done = serde_json::json!({"round": 3, "phase": "waiting", "finished": true});
        assert!(round_message(3, 3, Some(&done)).ends_with("coordinator: finished"));
    }
}
