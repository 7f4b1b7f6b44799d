//! One federated experiment of `fedistill bench accuracy|communication`, in process: split a dataset
//! into a federation, train each participant's private teacher (the local-only baseline), train the
//! teacher architecture on the pooled private data (the centralized upper bound), then run federated
//! distillation under each aggregation rule and FedAvg on the same student architecture, recording the
//! student's test accuracy and the bytes exchanged after every round.
//!
//! The split is written as a deployment's files and read back by the participants' own loader (see
//! `crate::files`), so each participant learns from exactly what its node would read. The distillation
//! rounds run the participants' own learner (participant/src/learner.rs) through its
//! seam: every participant labels the round's public rows with its teacher at the federation
//! temperature, encodes them with the soft-label codec, the coordinator aggregates the decoded rows with
//! the rule, and every participant refreshes its teacher (when on) and distills the same student from the
//! consensus (with the same seed, so one student, distilled by participant 0, stands for all of them).
//! Bytes are the sizes of the real signed wire messages (RoundOpen, SoftLabels, AggregateLabels; FedAvg's
//! model down- and uploads are framed the same way), measured by `Exchange`. The round loop is
//! `run_rounds`; `fedistill bench personalize` runs it too, with every participant distilling on its own
//! holdout, and keeps the learners after the last round.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use fedistill_participant::learner::{Learner, LearnerParts, ModelLearner};
use fedistill_shared::crypto::{Digest, RoundId};
use fedistill_shared::data::{split, Dataset, FederatedSplit, Partition, SplitConfig};
use fedistill_shared::ml::codistill::RefreshConfig;
use fedistill_shared::ml::distill::{DistillConfig, Distiller};
use fedistill_shared::ml::fedavg::{local_update, weighted_average, LocalUpdate};
use fedistill_shared::ml::lifecycle::GuardConfig;
use fedistill_shared::ml::local::{default_distill, default_train, LocalOptions};
use fedistill_shared::ml::model::argmax;
use fedistill_shared::ml::{train_teacher, InputNorm, Model, ModelConfig, Progress, TrainConfig};
use fedistill_shared::protocol::{aggregate, round_sample_ids, AggregationRule, ContributionView, Encoding};

use crate::exchange::Exchange;

/// Everything that defines one experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentConfig {
    /// Dataset name from the catalog.
    pub dataset: String,
    /// Participants (K).
    pub participants: usize,
    /// How the private pool is dealt.
    pub partition: Partition,
    /// Seed of the split and every model.
    pub seed: u64,
    /// Share of the dataset held out for testing.
    pub test_fraction: f64,
    /// Share of the dataset in the public transfer set.
    pub public_fraction: f64,
    /// Distillation rounds; each labels `samples_per_round` public rows, walking the public set in epochs as
    /// the coordinator does (`round_sample_ids`).
    pub rounds: usize,
    /// Public rows per round; `None`: `public / rounds` (one pass over the public set).
    #[serde(default)]
    pub samples_per_round: Option<usize>,
    /// The task card's public-set augmentation (`[augment]`, image datasets): every revisit of a public row
    /// is a fresh view of it, the same on every participant.
    #[serde(default)]
    pub augment: Option<fedistill_shared::data::Augment>,
    /// Share of each participant's private rows whose labels are dropped (seeded): the teacher trains on
    /// the rest, and the rows reach the node as `[private] unlabeled` for the semi-supervised refresh
    /// (`refresh.pseudo_threshold`). 0: every row labelled.
    #[serde(default)]
    pub unlabeled_fraction: f64,
    /// The coordinator's `[stop]` rule applied to the distillation rounds (the student's accuracy after each
    /// round stands for the participants' reports): the rounds end once it has converged, and the curve and
    /// the bytes are those of the rounds that ran. `None`: every one of `rounds`.
    #[serde(default)]
    pub stop: Option<fedistill_shared::protocol::coordinator::stop::StopRule>,
    /// FedAvg rounds.
    pub fedavg_rounds: usize,
    /// Teacher (and centralized) architecture.
    pub teacher: ModelConfig,
    /// Student architecture (the federated model of both FD and FedAvg).
    pub student: ModelConfig,
    /// Teacher training.
    pub train: TrainConfig,
    /// Student distillation.
    pub distill: DistillConfig,
    /// Teacher refresh after each round (co-distillation; epochs 0 = off).
    #[serde(default)]
    pub refresh: RefreshConfig,
    /// FedAvg local update.
    pub local: LocalUpdate,
    /// Temperature of the released soft labels.
    pub temperature: f32,
    /// Soft-label encodings: every rule runs once per encoding (teachers are shared); the coordinator packs
    /// the consensus with the same encoding (`aggregate_encoding`).
    pub encodings: Vec<Encoding>,
    /// Aggregation rules to run.
    pub rules: Vec<AggregationRule>,
    /// Whether to run FedAvg.
    pub fedavg: bool,
    /// Whether to train the centralized baseline.
    pub centralized: bool,
    /// Whether to also distill the student from the centralized model (method `kd:centralized`): every
    /// participant's teacher replaced by it, no refresh, the same rounds, public rows and encoding as the
    /// federation. What distillation on this public set reaches with the best teacher the pooled private data
    /// gives: the ceiling of the federated student's accuracy with this student and public set.
    #[serde(default)]
    pub ceiling: bool,
}

impl ExperimentConfig {
    /// The defaults for a dataset kind, with the given federation shape: the teacher and student
    /// architectures are `fedistill local`'s and a participant's ([`LocalOptions::defaults_for`], defined
    /// once; image datasets: MLP 512-256 teachers and a 128-wide student; tabular: 64-32 teachers, 8-wide
    /// student).
    pub fn defaults(ds: &Dataset, participants: usize, partition: Partition, seed: u64) -> Self {
        let image = matches!(ds.kind, fedistill_shared::data::DataKind::Image { .. });
        let local = LocalOptions::defaults_for(ds, seed);
        let (teacher, student) = (local.teacher.model, local.student.model);
        let mut distill = default_distill(&ds.kind, seed);
        distill.input_norm = if image {
            InputNorm::Global
        } else {
            InputNorm::PerFeature
        };
        ExperimentConfig {
            dataset: ds.name.clone(),
            participants,
            partition,
            seed,
            test_fraction: 0.2,
            public_fraction: 0.2,
            rounds: 10,
            samples_per_round: None,
            augment: None,
            unlabeled_fraction: 0.0,
            stop: None,
            fedavg_rounds: 30,
            teacher,
            student,
            train: default_train(&ds.kind, seed),
            distill,
            // Co-distillation as the demo runs it: under label skew it is worth several points
            // (docs/benchmarks.md).
            refresh: RefreshConfig {
                epochs: 2,
                ..RefreshConfig::default()
            },
            local: LocalUpdate {
                epochs: 2,
                batch_size: 64,
                lr: 1e-3,
                weight_decay: 1e-4,
                seed,
            },
            temperature: 2.0,
            encodings: vec![Encoding::F16],
            rules: vec![AggregationRule::ConfidenceWeighted],
            fedavg: true,
            centralized: true,
            ceiling: false,
        }
    }
}

/// The method name of [`ExperimentConfig::ceiling`]'s run.
pub const CEILING_METHOD: &str = "kd:centralized";

/// One point of a learning curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// Round (1-based).
    pub round: usize,
    /// Student test accuracy after the round, in [0, 1].
    pub accuracy: f64,
    /// Bytes exchanged by the whole federation up to and including this round.
    pub bytes: u64,
    /// Seconds from the method's start to the end of this round (its evaluation included).
    #[serde(default)]
    pub elapsed_s: f64,
}

/// A method's curve and final figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodRun {
    /// `fd:<rule>` (`fd:<rule>@<encoding>` when several encodings run) or `fedavg`.
    pub method: String,
    /// Per round.
    pub curve: Vec<CurvePoint>,
    /// Accuracy after the last round.
    pub accuracy: f64,
    /// Bytes of the whole run.
    pub bytes: u64,
    /// Seconds spent (training and aggregation; the teachers are shared and not included).
    pub seconds: f64,
}

impl MethodRun {
    /// Bytes spent until the curve first reaches `accuracy` (None: never).
    pub fn bytes_to_reach(&self, accuracy: f64) -> Option<(usize, u64)> {
        self.curve
            .iter()
            .find(|p| p.accuracy >= accuracy)
            .map(|p| (p.round, p.bytes))
    }
}

/// The result of one experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentRun {
    /// The configuration.
    pub config: ExperimentConfig,
    /// Private samples per participant.
    pub shard_sizes: Vec<usize>,
    /// Public rows and test rows.
    pub public_rows: usize,
    /// Test rows.
    pub test_rows: usize,
    /// Each teacher's test accuracy (local-only baseline).
    pub local_only: Vec<f64>,
    /// Mean of `local_only`.
    pub local_only_mean: f64,
    /// The teacher architecture on the pooled private data (None when not run).
    pub centralized: Option<f64>,
    /// Federated distillation, one run per rule, then FedAvg when run.
    pub methods: Vec<MethodRun>,
    /// Student parameters.
    pub student_params: usize,
    /// Seconds of the whole experiment.
    pub seconds: f64,
}

/// Accuracy of `model` on `ds`.
pub fn accuracy(model: &Model, ds: &Dataset) -> anyhow::Result<f64> {
    let logits = model.logits(&ds.features, ds.n)?;
    let correct = logits
        .chunks_exact(ds.num_classes)
        .zip(&ds.labels)
        .filter(|(r, &y)| argmax(r) as u32 == y)
        .count();
    Ok(correct as f64 / ds.n.max(1) as f64)
}

fn pooled(shards: &[Dataset]) -> anyhow::Result<Dataset> {
    let first = shards.first().context("no shards")?;
    let mut features = Vec::new();
    let mut labels = Vec::new();
    for s in shards {
        features.extend_from_slice(&s.features);
        labels.extend_from_slice(&s.labels);
    }
    let mut d = first.clone();
    d.n = labels.len();
    d.features = features;
    d.labels = labels;
    Ok(d)
}

/// Runs one experiment; `exchange` moves (and counts) every message; `progress` shows the teachers
/// trained and each method's rounds (a bar on a terminal, plain lines otherwise). `centralized_known`
/// is the centralized accuracy of an earlier experiment on the same pooled data (same dataset, seed and
/// fractions: the partition only deals the pool), reused instead of training it again.
pub fn run(
    ds: &Dataset,
    cfg: &ExperimentConfig,
    exchange: &mut dyn Exchange,
    progress: &Progress,
    centralized_known: Option<f64>,
) -> anyhow::Result<ExperimentRun> {
    let started = Instant::now();
    anyhow::ensure!(cfg.rounds > 0, "rounds must be at least 1");
    anyhow::ensure!(
        !cfg.rules.is_empty() || cfg.fedavg,
        "nothing to run: no rule and no FedAvg"
    );
    let mut fs = split_for(ds, cfg)?;
    // Every participant learns from what its node would read: the split is written as a deployment's
    // files (task card, public set, each participant's private rows, the shared test set) and read back
    // through the participant's own loader (participant/src/owndata.rs).
    let files = tempfile::tempdir().context("creating a directory for the participants' files")?;
    let unlabeled = drop_labels(&mut fs, cfg.unlabeled_fraction, cfg.seed)?;
    let nodes = crate::files::through_files(files.path(), &fs, cfg.seed, cfg.augment, &unlabeled)?;
    let first = nodes.first().context("no participants")?;
    let augment = first.augment;
    let unlabeled: Vec<Option<Arc<Dataset>>> = nodes.iter().map(|n| n.unlabeled.clone().map(Arc::new)).collect();
    fs.public = first.public.clone();
    fs.public_digest = first.public_digest.0;
    fs.test = first.test.clone();
    fs.shards = nodes.into_iter().map(|n| n.private).collect();
    let classes = ds.num_classes;
    let quiet = Progress::hidden();

    // Teachers: each participant's private model (the local-only baseline).
    let mut teachers = Vec::with_capacity(cfg.participants);
    let mut local_only = Vec::with_capacity(cfg.participants);
    // The ceiling needs the centralized model itself, not only its accuracy.
    let train_centralized = cfg.ceiling || (cfg.centralized && centralized_known.is_none());
    let total_models = (cfg.participants + usize::from(train_centralized)) as u64;
    progress.start("teachers", total_models);
    for (p, shard) in fs.shards.iter().enumerate() {
        let t = participant_teacher(cfg, p, shard, &quiet)?;
        local_only.push(accuracy(&t, &fs.test)?);
        progress.advance(
            "teachers",
            p as u64 + 1,
            total_models,
            &format!(
                "participant {p}: {} samples, local-only {:.1}%",
                shard.n,
                local_only[p] * 100.0
            ),
        );
        teachers.push(t);
    }
    let local_only_mean = local_only.iter().sum::<f64>() / local_only.len().max(1) as f64;
    if !train_centralized {
        progress.finish("teachers", "done");
    }
    let mut central_model = None;
    let centralized = if !train_centralized {
        centralized_known.filter(|_| cfg.centralized)
    } else {
        let pool = pooled(&fs.shards)?;
        let t = train_teacher(&cfg.teacher, &pool, &cfg.train, &quiet).context("training the centralized model")?;
        let a = accuracy(&t, &fs.test)?;
        progress.advance(
            "teachers",
            total_models,
            total_models,
            &format!("centralized {:.1}%", a * 100.0),
        );
        progress.finish("teachers", "done");
        central_model = Some(Arc::new(t));
        Some(a)
    };

    // Every participant is the real participant's learner (participant/src/learner.rs), driven through the
    // learner seam (see `run_rounds`); all of them evaluate on the split's shared test set.
    let test = Arc::new(fs.test.clone());
    let federation = Federation {
        public: Arc::new(fs.public.clone()),
        public_digest: Digest(fs.public_digest),
        shards: fs.shards.iter().map(|s| Arc::new(s.clone())).collect(),
        tests: vec![test; cfg.participants],
        teachers: teachers.into_iter().map(Arc::new).collect(),
        local_only: local_only.clone(),
        augment,
        unlabeled,
    };
    let artifacts = tempfile::tempdir().context("creating a directory for the participants' artifacts")?;

    let mut methods = Vec::new();
    anyhow::ensure!(
        !cfg.encodings.is_empty() || cfg.rules.is_empty(),
        "no soft-label encoding given"
    );
    let runs: Vec<(AggregationRule, Encoding)> = cfg
        .rules
        .iter()
        .flat_map(|r| cfg.encodings.iter().map(move |e| (*r, *e)))
        .collect();
    for (m, (rule, encoding)) in runs.iter().enumerate() {
        let label = if cfg.encodings.len() > 1 {
            format!("fd:{}@{}", rule.name(), encoding.name())
        } else {
            format!("fd:{}", rule.name())
        };
        let method = Method {
            rule: *rule,
            encoding: *encoding,
            label: &label,
            distilling: Distilling::FirstForAll,
        };
        let workdir = artifacts.path().join(format!("method-{m}"));
        let rounds = run_rounds(cfg, &federation, &method, &workdir, exchange, progress)?;
        methods.push(rounds.into_method(label));
        exchange.reset();
    }

    if let (true, Some(central)) = (cfg.ceiling, central_model) {
        // The same rounds with the centralized model as every participant's teacher, unrefreshed.
        let ceiling_cfg = ExperimentConfig {
            refresh: RefreshConfig {
                epochs: 0,
                ..cfg.refresh.clone()
            },
            ..cfg.clone()
        };
        let ceiling = Federation {
            teachers: vec![central; cfg.participants],
            ..federation
        };
        let label = CEILING_METHOD.to_string();
        let method = Method {
            rule: AggregationRule::Mean,
            encoding: cfg.encodings.first().copied().unwrap_or(Encoding::F16),
            label: &label,
            distilling: Distilling::FirstForAll,
        };
        let workdir = artifacts.path().join("ceiling");
        let rounds = run_rounds(&ceiling_cfg, &ceiling, &method, &workdir, exchange, progress)?;
        methods.push(rounds.into_method(label));
        exchange.reset();
    }

    if cfg.fedavg {
        methods.push(run_fedavg(cfg, &fs, exchange, progress)?);
        exchange.reset();
    }

    let student_params = Model::new(&cfg.student, ds.dim, classes, 0)?.params();
    Ok(ExperimentRun {
        config: cfg.clone(),
        shard_sizes: fs.shards.iter().map(|s| s.n).collect(),
        public_rows: fs.public.n,
        test_rows: fs.test.n,
        local_only,
        local_only_mean,
        centralized,
        methods,
        student_params,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Moves a seeded `fraction` of every shard's rows out of it: they come back, without their labels'
/// use, as the participants' unlabelled rows (one per shard; all empty when `fraction` is 0; a tabular
/// split's are raw rows, taken from `fs.raw` with the same rows).
fn drop_labels(fs: &mut FederatedSplit, fraction: f64, seed: u64) -> anyhow::Result<Vec<Dataset>> {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    anyhow::ensure!(
        (0.0..1.0).contains(&fraction),
        "the unlabelled fraction {fraction} must be in [0, 1)"
    );
    if fraction == 0.0 {
        return Ok(Vec::new());
    }
    let mut out = Vec::with_capacity(fs.shards.len());
    for (p, shard) in fs.shards.iter_mut().enumerate() {
        let mut order: Vec<usize> = (0..shard.n).collect();
        order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(
            seed ^ 0x55_4e4c ^ (p as u64) << 40,
        ));
        let cut = ((shard.n as f64) * fraction).round() as usize;
        anyhow::ensure!(
            shard.n - cut >= 2,
            "participant {p}: {} rows leave fewer than 2 labelled ones at an unlabelled fraction of {fraction}",
            shard.n
        );
        // A tabular shard's files hold its raw rows: the same rows leave those too, and the unlabelled
        // ones go out raw (the node imputes and scales them with the card, like its labelled rows).
        match fs.raw.as_mut().and_then(|r| r.shards.get_mut(p)) {
            Some(raw) => {
                out.push(raw.subset(&order[..cut]));
                *raw = raw.subset(&order[cut..]);
            }
            None => out.push(shard.subset(&order[..cut])),
        }
        *shard = shard.subset(&order[cut..]);
    }
    Ok(out)
}

/// The experiment's split of `ds` (its participants, partition, fractions and seed).
pub(crate) fn split_for(ds: &Dataset, cfg: &ExperimentConfig) -> anyhow::Result<FederatedSplit> {
    split(
        ds,
        &SplitConfig {
            participants: cfg.participants,
            partition: cfg.partition,
            test_fraction: cfg.test_fraction,
            public_fraction: cfg.public_fraction,
            seed: cfg.seed,
        },
    )
    .with_context(|| format!("splitting {} for {} participants", ds.name, cfg.participants))
}

/// Participant `p`'s private teacher, trained on `shard` with the experiment's teacher training and a seed of
/// its own.
pub(crate) fn participant_teacher(
    cfg: &ExperimentConfig,
    p: usize,
    shard: &Dataset,
    progress: &Progress,
) -> anyhow::Result<Model> {
    let tc = TrainConfig {
        seed: cfg.seed.wrapping_add(p as u64 + 1),
        ..cfg.train.clone()
    };
    train_teacher(&cfg.teacher, shard, &tc, progress).with_context(|| format!("training participant {p}'s teacher"))
}

/// What the distillation rounds of a method start from: every participant's data as its node read it and its
/// trained teacher.
pub(crate) struct Federation {
    /// The public transfer set.
    pub(crate) public: Arc<Dataset>,
    /// Its digest, as the round openings announce it.
    pub(crate) public_digest: Digest,
    /// Each participant's private training rows.
    pub(crate) shards: Vec<Arc<Dataset>>,
    /// The rows each participant evaluates on: the split's shared test set, or the node's own holdout.
    pub(crate) tests: Vec<Arc<Dataset>>,
    /// Each participant's teacher as trained (every method starts from these).
    pub(crate) teachers: Vec<Arc<Model>>,
    /// Each teacher's accuracy on its participant's test rows.
    pub(crate) local_only: Vec<f64>,
    /// The task card's public-set augmentation, as the nodes read it.
    pub(crate) augment: Option<fedistill_shared::ml::augment::PublicAugment>,
    /// Each participant's unlabelled private rows, when it has any.
    pub(crate) unlabeled: Vec<Option<Arc<Dataset>>>,
}

/// Who distills the shared student each round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Distilling {
    /// Participant 0 distills it for all (the student is the same everywhere: same consensus, same seed, no
    /// guard), the others only refresh their teachers; the curve is participant 0's accuracy.
    FirstForAll,
    /// Every participant distills its own copy, as every node of a deployment does; the curve is the mean of
    /// their accuracies on their own test rows, and every learner holds the student after the last round.
    Everyone,
}

/// One method of the rounds: the rule and encoding of the exchange, its label, who distills.
pub(crate) struct Method<'a> {
    /// Aggregation rule of the coordinator.
    pub(crate) rule: AggregationRule,
    /// Soft-label encoding, both ways.
    pub(crate) encoding: Encoding,
    /// The progress label (`fd:<rule>`).
    pub(crate) label: &'a str,
    /// Who distills.
    pub(crate) distilling: Distilling,
}

/// A method's rounds, and the participants' learners after the last one.
pub(crate) struct Rounds {
    /// Per round.
    pub(crate) curve: Vec<CurvePoint>,
    /// Bytes of the whole run.
    pub(crate) bytes: u64,
    /// Seconds of the rounds (the learners built, labelling, aggregation, refresh, distillation).
    pub(crate) seconds: f64,
    /// Every participant's learner after the last round.
    pub(crate) learners: Vec<ModelLearner>,
    /// The teachers the learners hold (refreshed in place after each round when refresh is on).
    pub(crate) teachers: Vec<Arc<Model>>,
}

impl Rounds {
    /// The method's report line: its curve, the accuracy after its last round, bytes and seconds.
    fn into_method(self, label: String) -> MethodRun {
        MethodRun {
            method: label,
            accuracy: self.curve.last().map(|p| p.accuracy).unwrap_or(0.0),
            curve: self.curve,
            bytes: self.bytes,
            seconds: self.seconds,
        }
    }
}

/// The distillation rounds of one method: one real participant learner per participant (participant/src/
/// learner.rs), driven through the learner seam: every teacher labels the round's public rows, `exchange`
/// carries the soft labels up and the consensus down, and the learners refresh their teachers (when on) and
/// distill the shared student as `method.distilling` says. `workdir` receives each learner's artifacts in
/// `p<i>/`.
pub(crate) fn run_rounds(
    cfg: &ExperimentConfig,
    fed: &Federation,
    method: &Method<'_>,
    workdir: &std::path::Path,
    exchange: &mut dyn Exchange,
    progress: &Progress,
) -> anyhow::Result<Rounds> {
    anyhow::ensure!(cfg.rounds > 0, "rounds must be at least 1");
    anyhow::ensure!(
        fed.shards.len() == cfg.participants
            && fed.tests.len() == cfg.participants
            && fed.teachers.len() == cfg.participants
            && fed.local_only.len() == cfg.participants,
        "the federation does not have {} participants",
        cfg.participants
    );
    let t0 = Instant::now();
    let (dim, classes) = (fed.public.dim, fed.public.num_classes);
    let samples: Vec<u64> = fed.shards.iter().map(|s| s.n as u64).collect();
    let per_round = cfg.samples_per_round.unwrap_or(fed.public.n / cfg.rounds).max(1) as u64;
    // With refresh on, every method starts from the teachers as trained and refreshes its own copies.
    let refreshing = cfg.refresh.epochs > 0;
    let mut learners = Vec::with_capacity(cfg.participants);
    let mut teachers = Vec::with_capacity(cfg.participants);
    for (p, shard) in fed.shards.iter().enumerate() {
        let teacher = if refreshing {
            Arc::new(Model::from_safetensors(
                &cfg.teacher,
                dim,
                classes,
                &fed.teachers[p].to_safetensors()?,
            )?)
        } else {
            fed.teachers[p].clone()
        };
        teachers.push(teacher.clone());
        let student = Model::new(&cfg.student, dim, classes, cfg.seed.wrapping_add(1000))?;
        let dir = workdir.join(format!("p{p}"));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        learners.push(ModelLearner::from_parts(LearnerParts {
            public: fed.public.clone(),
            public_digest: fed.public_digest,
            test: fed.tests[p].clone(),
            // No guard and no coordinator here: the curves are the test rows' figures, as before.
            validation: fed.tests[p].clone(),
            teacher,
            shard: shard.clone(),
            distiller: Distiller::new(student, cfg.distill.clone()),
            guard: GuardConfig::default(),
            refresh: cfg.refresh.clone(),
            refresh_seed: cfg.seed ^ (p as u64) << 32,
            workdir: dir,
            local_only_accuracy: fed.local_only[p],
            augment: fed.augment,
            unlabeled: fed.unlabeled.get(p).cloned().flatten(),
        }));
    }
    // No guard here: every candidate is kept.
    let serving = std::collections::BTreeMap::new();
    let mut curve = Vec::with_capacity(cfg.rounds);
    let label = method.label;
    progress.start(label, cfg.rounds as u64);
    let mut bytes = 0u64;
    let total = cfg.rounds as u64;
    let mut convergence = fedistill_shared::protocol::coordinator::stop::Convergence::default();
    let mut finished = "done".to_string();
    for r in 0..cfg.rounds {
        let round = RoundId(r as u64 + 1);
        // Sample ids are positions in the public set, as the coordinator announces them.
        let ids = round_sample_ids(round, per_round, fed.public.n as u64);
        let rows = ids.len();
        let uploads: Vec<Vec<f32>> = learners
            .iter_mut()
            .map(|l| l.label(round, &ids, cfg.temperature))
            .collect::<Result<_, _>>()?;
        let decoded = exchange.labels_up(round.0, &ids, &uploads, classes, method.encoding)?;
        let views: Vec<ContributionView<'_>> = decoded
            .iter()
            .zip(&samples)
            .map(|(p, &s)| ContributionView {
                probabilities: p,
                samples: s,
            })
            .collect();
        let consensus = aggregate(method.rule, &views, rows, classes).context("aggregating")?;
        let consensus = exchange.labels_down(round.0, method.rule, &consensus, rows, classes, method.encoding)?;
        let reported = |d: &fedistill_participant::learner::Distilled| {
            d.metrics
                .get("accuracy")
                .copied()
                .context("the learner reported no accuracy")
        };
        let a = match method.distilling {
            Distilling::FirstForAll => {
                let (first, others) = learners.split_first_mut().context("no participants")?;
                for l in others {
                    l.refresh(round, &ids, &consensus, total, method.rule, Some(first.student()))?;
                }
                reported(&first.distill(round, &ids, &consensus, total, method.rule, &serving)?)?
            }
            Distilling::Everyone => {
                let mut sum = 0.0;
                for l in learners.iter_mut() {
                    sum += reported(&l.distill(round, &ids, &consensus, total, method.rule, &serving)?)?;
                }
                sum / learners.len().max(1) as f64
            }
        };
        bytes = exchange.bytes();
        curve.push(CurvePoint {
            round: r + 1,
            accuracy: a,
            bytes,
            // The teachers are trained once before every method and shared: not counted here.
            elapsed_s: t0.elapsed().as_secs_f64(),
        });
        progress.advance(
            label,
            r as u64 + 1,
            cfg.rounds as u64,
            &format!("student {:.1}%", a * 100.0),
        );
        if let Some(rule) = &cfg.stop {
            if let Some(done) = convergence.observe(rule, round.0, Some(a)) {
                finished = format!(
                    "converged after round {} (best {:.1}% at round {})",
                    done.round,
                    done.best * 100.0,
                    done.best_round
                );
                break;
            }
        }
    }
    progress.finish(label, &finished);
    Ok(Rounds {
        curve,
        bytes,
        seconds: t0.elapsed().as_secs_f64(),
        learners,
        teachers,
    })
}

/// FedAvg on the split's shards with the experiment's student and local update: the server sends the
/// global weights, every client trains on its shard and uploads, the server averages by samples; each
/// round's test accuracy, bytes so far and seconds since the start.
pub fn run_fedavg(
    cfg: &ExperimentConfig,
    fs: &FederatedSplit,
    exchange: &mut dyn Exchange,
    progress: &Progress,
) -> anyhow::Result<MethodRun> {
    let ds = &fs.test;
    let classes = ds.num_classes;
    let samples: Vec<u64> = fs.shards.iter().map(|s| s.n as u64).collect();
    let t0 = Instant::now();
    let global = Model::new(&cfg.student, ds.dim, classes, cfg.seed.wrapping_add(1000))?;
    // The server fixes the input standardization once from the public (unlabelled) features, as
    // the distilled student does on its first round.
    global.fit_input_normalization(
        &fs.public.features,
        fs.public.n,
        !matches!(ds.kind, fedistill_shared::data::DataKind::Image { .. }),
    )?;
    let mut curve = Vec::with_capacity(cfg.fedavg_rounds);
    let mut bytes = 0u64;
    progress.start("fedavg", cfg.fedavg_rounds as u64);
    for r in 0..cfg.fedavg_rounds {
        let down = global.to_safetensors()?;
        let received = exchange.model_down(r as u64 + 1, &down, cfg.participants)?;
        let mut ups = Vec::with_capacity(cfg.participants);
        for (p, shard) in fs.shards.iter().enumerate() {
            let client = Model::from_safetensors(&cfg.student, ds.dim, classes, &received)?;
            let lu = LocalUpdate {
                seed: cfg.seed.wrapping_add((r * 1000 + p) as u64),
                ..cfg.local.clone()
            };
            local_update(&client, &shard.features, &shard.labels, shard.n, &lu)?;
            ups.push(client.to_safetensors()?);
        }
        let uploaded = exchange.models_up(r as u64 + 1, &ups)?;
        let clients: Vec<Model> = uploaded
            .iter()
            .map(|b| Model::from_safetensors(&cfg.student, ds.dim, classes, b))
            .collect::<Result<_, _>>()?;
        let weighted: Vec<(&Model, f64)> = clients.iter().zip(&samples).map(|(c, &s)| (c, s as f64)).collect();
        weighted_average(&global, &weighted)?;
        bytes = exchange.bytes();
        let a = accuracy(&global, &fs.test)?;
        curve.push(CurvePoint {
            round: r + 1,
            accuracy: a,
            bytes,
            elapsed_s: t0.elapsed().as_secs_f64(),
        });
        progress.advance(
            "fedavg",
            r as u64 + 1,
            cfg.fedavg_rounds as u64,
            &format!("global {:.1}%", a * 100.0),
        );
    }
    progress.finish("fedavg", "done");
    let accuracy = curve.last().map(|p| p.accuracy).unwrap_or(0.0);
    Ok(MethodRun {
        method: "fedavg".into(),
        curve,
        accuracy,
        bytes,
        seconds: t0.elapsed().as_secs_f64(),
    })
}
