//! `participant.toml` node settings (distinct from the kit's `participant.toml` transport file, which lives
//! in the kit directory): where the kit and work directory are, which private data to use, the models and
//! the training settings. Parsed in two steps (raw TOML, then validated). Documented in docs/operations.md.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use fedistill_shared::ml::codistill::RefreshConfig;
use fedistill_shared::ml::distill::DistillConfig;
use fedistill_shared::ml::{ModelConfig, TrainConfig};
use fedistill_shared::protocol::Encoding;
pub use fedistill_shared::settings::DataSettings;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    kit: PathBuf,
    workdir: PathBuf,
    #[serde(default = "default_encoding")]
    encoding: String,
    #[serde(default)]
    shard: Option<usize>,
    #[serde(default)]
    data: Option<DataSettings>,
    #[serde(default)]
    task: Option<RawTask>,
    #[serde(default)]
    private: Option<RawPrivate>,
    #[serde(default)]
    public: Option<RawPublic>,
    #[serde(default)]
    benchmark: Option<RawBenchmark>,
    #[serde(default)]
    teacher: Option<ModelConfig>,
    #[serde(default)]
    student: Option<ModelConfig>,
    #[serde(default)]
    train: Option<TrainConfig>,
    #[serde(default)]
    distill: Option<DistillConfig>,
    #[serde(default = "default_guard_metrics")]
    guard_metrics: Vec<String>,
    #[serde(default = "default_guard_drop")]
    guard_max_relative_drop: f64,
    #[serde(default = "default_student_seed")]
    student_seed: u64,
    #[serde(default = "default_max_frame")]
    max_frame_bytes: usize,
    #[serde(default)]
    privacy: Option<fedistill_shared::privacy::PrivacyToml>,
    #[serde(default)]
    refresh: Option<RefreshConfig>,
    #[serde(default)]
    personalize: Option<crate::personalize::PersonalizeConfig>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    regression: Option<crate::regression::RegressionSettings>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTask {
    card: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrivate {
    path: PathBuf,
    #[serde(default)]
    format: Option<fedistill_shared::data::PrivateFormat>,
    #[serde(default = "default_delimiter")]
    delimiter: String,
    #[serde(default)]
    columns: std::collections::BTreeMap<String, String>,
    #[serde(default = "default_holdout")]
    holdout: f64,
    #[serde(default = "default_validation")]
    validation: f64,
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    unlabeled: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPublic {
    #[serde(default)]
    path: Option<PathBuf>,
    #[serde(default)]
    labels: Option<PathBuf>,
    #[serde(default = "default_max_public")]
    max_bytes: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBenchmark {
    path: PathBuf,
}

fn default_delimiter() -> String {
    ",".into()
}
fn default_holdout() -> f64 {
    0.2
}
/// `[private] validation`'s default: a tenth of the node's rows.
pub const DEFAULT_VALIDATION: f64 = 0.1;
fn default_validation() -> f64 {
    DEFAULT_VALIDATION
}
fn default_max_public() -> u64 {
    8 << 30
}

/// Where this node's data comes from.
#[derive(Debug, Clone)]
pub enum DataSource {
    /// This institution's own files read against the federation's task card (the deployment path).
    Own(OwnData),
    /// A catalog dataset and this node's shard of a seeded split every node derives alike (simulations and
    /// older configs).
    Catalog {
        /// Which private shard of the split this node holds.
        shard: usize,
        /// Dataset and split (must match the coordinator's).
        data: DataSettings,
    },
}

/// `[task]`, `[private]` and `[public]`: an institution's own files.
#[derive(Debug, Clone)]
pub struct OwnData {
    /// The task card the data steward checked the files against; its digest must equal the coordinator's.
    pub card: PathBuf,
    /// The private data: a CSV or Parquet file, an image folder, or an IDX image file beside its labels.
    pub private: PathBuf,
    /// Its format; `None`: told from the path (`.csv`, `.parquet`, a directory, `.idx3-ubyte`...).
    pub format: Option<fedistill_shared::data::PrivateFormat>,
    /// How the private CSV is read (delimiter; card column name -> local header).
    pub csv: fedistill_shared::data::CsvOptions,
    /// Share of the private rows held out (seeded) as this node's own test set (its final reports only).
    pub holdout: f64,
    /// Share of the private rows held out (seeded, disjoint from the test holdout) as this node's
    /// validation set: the degradation guard and the accuracy reported for early stopping are measured on
    /// it (`[private] validation`, default [`DEFAULT_VALIDATION`], in (0, 1) for a node). 0 holds none out
    /// and measures those on the test rows: only for `fedistill bench`'s in-process experiments, which run
    /// no guard and report to no coordinator.
    pub validation: f64,
    /// Seed of the holdout and validation split and of the teacher.
    pub seed: u64,
    /// The public transfer set as the operator placed it; `None`: fetched from the coordinator into the
    /// work directory and verified against the card.
    pub public: Option<PathBuf>,
    /// Largest public set this node accepts to fetch.
    pub max_public_bytes: u64,
    /// Labels of an unlabelled (IDX) public set, an IDX1 file, for reporting the consensus' accuracy only.
    pub public_labels: Option<PathBuf>,
    /// The shared labelled benchmark set the card declares (`[benchmark] path`): this node tests on it
    /// instead of holding out its own rows.
    pub benchmark: Option<PathBuf>,
    /// Unlabelled private rows of the task (`[private] unlabeled`; image tasks: an IDX images file; series
    /// tasks: a `.ts` file, its labels if any ignored): the
    /// student pseudo-labels them for the teacher refresh (`[refresh] pseudo_threshold`); they never leave
    /// the node.
    pub unlabeled: Option<PathBuf>,
}

fn default_encoding() -> String {
    "f16".into()
}
pub(crate) fn default_guard_metrics() -> Vec<String> {
    vec!["accuracy".into(), "macro_f1".into(), "roc_auc".into()]
}
fn default_guard_drop() -> f64 {
    0.05
}
fn default_student_seed() -> u64 {
    7
}
fn default_max_frame() -> usize {
    fedistill_shared::wire::DEFAULT_MAX_FRAME
}

/// Validated participant settings.
#[derive(Debug, Clone)]
pub struct ParticipantSettings {
    /// Startup kit directory (certificates, keys, coordinator endpoint).
    pub kit: PathBuf,
    /// Work directory: teacher, students per round, model cards, witness state, results.
    pub workdir: PathBuf,
    /// Soft-label encoding on the wire.
    pub encoding: Encoding,
    /// This node's data: its own files against the task card, or a catalog shard.
    pub source: DataSource,
    /// Teacher architecture (default per data kind).
    pub teacher: Option<ModelConfig>,
    /// Shared student architecture (default per data kind).
    pub student: Option<ModelConfig>,
    /// Teacher training settings.
    pub train: Option<TrainConfig>,
    /// Distillation settings.
    pub distill: Option<DistillConfig>,
    /// Metrics the degradation guard checks.
    pub guard_metrics: Vec<String>,
    /// Largest relative drop the guard tolerates.
    pub guard_max_relative_drop: f64,
    /// Seed of the student's initial weights (the same across the federation).
    pub student_seed: u64,
    /// Largest frame accepted from the coordinator.
    pub max_frame_bytes: usize,
    /// Differential privacy (`[privacy]`, docs/privacy.md): noise on the released soft labels and/or
    /// DP-SGD training of the teacher (`[privacy.teacher]`); None: off.
    pub privacy: Option<fedistill_shared::privacy::PrivacySettings>,
    /// Teacher refresh after each round (`[refresh]`, co-distillation; docs/ml.md); `epochs = 0` is off.
    pub refresh: RefreshConfig,
    /// A personalized student after every `every`-th round (`[personalize]`, docs/ml.md); none: off.
    pub personalize: Option<crate::personalize::PersonalizeConfig>,
    /// Loopback address of this node's read-only status page (`status = "127.0.0.1:9200"`; none: off).
    pub status: Option<std::net::SocketAddr>,
    /// How a regression task's teacher and student are fitted (`[regression]`; defaults when absent).
    pub regression: Option<crate::regression::RegressionSettings>,
}

impl ParticipantSettings {
    /// Reads and validates a settings file; relative paths resolve against its directory.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text, path.parent().unwrap_or(Path::new(".")))
            .with_context(|| format!("invalid participant config {}", path.display()))
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str, base: &Path) -> anyhow::Result<Self> {
        let raw: RawSettings = toml::from_str(text)?;
        let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        let encoding = Encoding::parse(&raw.encoding)?;
        let source = match (raw.task, raw.private, raw.shard, raw.data) {
            (Some(task), Some(private), None, None) => {
                anyhow::ensure!(
                    private.holdout > 0.0 && private.holdout < 1.0,
                    "[private] holdout = {} must be in (0, 1): the share of your rows kept aside to test on",
                    private.holdout
                );
                anyhow::ensure!(
                    private.validation > 0.0 && private.validation < 1.0,
                    "[private] validation = {} must be in (0, 1): the share of your rows kept aside for the \
                     degradation guard and the accuracy reported for early stopping",
                    private.validation
                );
                // With a shared benchmark set the node keeps no test holdout of its own.
                anyhow::ensure!(
                    raw.benchmark.is_some() || private.holdout + private.validation < 1.0,
                    "[private] holdout = {} and validation = {} keep {} of your rows aside: nothing is left to \
                     train on (their sum must be below 1)",
                    private.holdout,
                    private.validation,
                    private.holdout + private.validation
                );
                let columns: Vec<String> = private.columns.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let csv = fedistill_shared::data::CsvOptions::from_args(&private.delimiter, &columns)
                    .map_err(|e| anyhow::anyhow!("[private] {e}"))?;
                let public = raw.public.unwrap_or(RawPublic {
                    path: None,
                    labels: None,
                    max_bytes: default_max_public(),
                });
                anyhow::ensure!(public.max_bytes > 0, "[public] max_bytes must be positive");
                DataSource::Own(OwnData {
                    card: resolve(task.card),
                    private: resolve(private.path),
                    format: private.format,
                    csv,
                    holdout: private.holdout,
                    validation: private.validation,
                    seed: private.seed,
                    public: public.path.map(resolve),
                    max_public_bytes: public.max_bytes,
                    public_labels: public.labels.map(resolve),
                    benchmark: raw.benchmark.map(|b| resolve(b.path)),
                    unlabeled: private.unlabeled.map(resolve),
                })
            }
            (None, None, Some(shard), Some(mut data)) => {
                anyhow::ensure!(
                    raw.public.is_none() && raw.benchmark.is_none(),
                    "[public] and [benchmark] belong to own files ([task] and [private]), not to a catalog [data] split"
                );
                anyhow::ensure!(
                    shard < data.participants,
                    "shard {shard} does not exist: the split has {} shards (0..{})",
                    data.participants,
                    data.participants
                );
                data.split_config()?;
                data.data_dir = data.data_dir.map(resolve);
                DataSource::Catalog { shard, data }
            }
            (task, private, shard, data) => anyhow::bail!(
                "{}",
                data_source_error(task.is_some(), private.is_some(), shard.is_some(), data.is_some())
            ),
        };
        fedistill_shared::ml::lifecycle::GuardConfig::new(raw.guard_metrics.clone(), raw.guard_max_relative_drop)?;
        if let Some(d) = &raw.distill {
            d.validate()?;
        }
        if let Some(t) = &raw.train {
            t.validate()?;
        }
        let privacy = match &raw.privacy {
            Some(p) => p.validate_settings()?,
            None => None,
        };
        if let (Some(t), Some(p)) = (&raw.teacher, &privacy) {
            let kind = match t {
                ModelConfig::Mlp { .. } => None,
                ModelConfig::Cnn { .. } | ModelConfig::Cnn1d { .. } => Some("a CNN"),
                ModelConfig::Fused { .. } => Some("a fused model"),
            };
            if let Some(kind) = kind {
                anyhow::ensure!(
                    p.teacher.is_none(),
                    "[privacy.teacher] (DP-SGD) supports MLP teachers only, but [teacher] is {kind}: use kind = \"mlp\""
                );
            }
        }
        let refresh = raw.refresh.unwrap_or_default();
        refresh.validate().map_err(|e| anyhow::anyhow!("[refresh] {e}"))?;
        if refresh.epochs > 0 {
            anyhow::ensure!(
                privacy.as_ref().is_none_or(|p| p.teacher.is_none()),
                "[refresh] epochs = {} retrains the teacher on private data without noise, which would void the \
                 DP-SGD guarantee of [privacy.teacher]: set [refresh] epochs = 0 or drop [privacy.teacher]",
                refresh.epochs
            );
        }
        let unlabeled = matches!(&source, DataSource::Own(o) if o.unlabeled.is_some());
        match (unlabeled, refresh.pseudo_threshold) {
            (true, None) => anyhow::bail!(
                "[private] unlabeled names rows nothing would use: set [refresh] pseudo_threshold (with epochs > 0) \
                 or remove it"
            ),
            (false, Some(_)) => anyhow::bail!(
                "[refresh] pseudo_threshold needs unlabelled rows: name their file in [private] unlabeled"
            ),
            (true, Some(_)) if refresh.epochs == 0 => anyhow::bail!(
                "[refresh] pseudo_threshold labels rows for the teacher refresh, which epochs = 0 turns off: set \
                 [refresh] epochs"
            ),
            _ => {}
        }
        if let Some(p) = &raw.personalize {
            p.validate()?;
        }
        if let Some(r) = &raw.regression {
            r.configs(0)?;
        }
        let status = match &raw.status {
            None => None,
            Some(s) => {
                let addr: std::net::SocketAddr = s
                    .parse()
                    .map_err(|e| anyhow::anyhow!("status = {s:?} is not an address like 127.0.0.1:9200: {e}"))?;
                anyhow::ensure!(
                    addr.ip().is_loopback(),
                    "status = {s:?}: the participant page has no credential, so it binds to loopback only \
                     (use 127.0.0.1 or [::1] and an SSH tunnel to reach it from elsewhere)"
                );
                Some(addr)
            }
        };
        Ok(Self {
            kit: resolve(raw.kit),
            workdir: resolve(raw.workdir),
            encoding,
            source,
            teacher: raw.teacher,
            student: raw.student,
            train: raw.train,
            distill: raw.distill,
            guard_metrics: raw.guard_metrics,
            guard_max_relative_drop: raw.guard_max_relative_drop,
            student_seed: raw.student_seed,
            max_frame_bytes: raw.max_frame_bytes,
            privacy,
            refresh,
            personalize: raw.personalize,
            status,
            regression: raw.regression,
        })
    }
}

/// What is wrong with a config's choice of data, in words.
fn data_source_error(task: bool, private: bool, shard: bool, data: bool) -> String {
    let own = task || private;
    let catalog = shard || data;
    if own && catalog {
        "own files ([task] and [private]) and a catalog split (shard and [data]) are both set: a node reads one".into()
    } else if own {
        format!(
            "own files need both [task] card = \"task.toml\" and [private] path = \"your.csv\" ({} is missing)",
            if task { "[private]" } else { "[task]" }
        )
    } else if catalog {
        format!(
            "a catalog split needs both shard = N and [data] ({} is missing)",
            if shard { "[data]" } else { "shard" }
        )
    } else {
        "no data: set [task] card and [private] path (your own files), or shard and [data] (a catalog split)".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
kit = "kit"
workdir = "work"
shard = 1
encoding = "int8"
[data]
dataset = "mnist-10k"
participants = 3
"#;

    #[test]
    fn parses_with_defaults() {
        let s = ParticipantSettings::parse(GOOD, Path::new("/srv")).unwrap();
        assert_eq!(s.kit, Path::new("/srv/kit"));
        assert_eq!(s.encoding, Encoding::Int8);
        assert_eq!(s.guard_metrics, vec!["accuracy", "macro_f1", "roc_auc"]);
        assert!(s.privacy.is_none());
        assert!(s.status.is_none());
        let with_page = GOOD.replace("shard = 1", "shard = 1\nstatus = \"127.0.0.1:9200\"");
        let s = ParticipantSettings::parse(&with_page, Path::new("/srv")).unwrap();
        assert_eq!(s.status, Some("127.0.0.1:9200".parse().unwrap()));
        let dp = format!("{GOOD}[privacy]\nepsilon_per_round = 1.0\ndelta = 1e-5\nbudget_epsilon = 8.0\n");
        let p = ParticipantSettings::parse(&dp, Path::new("/srv"))
            .unwrap()
            .privacy
            .unwrap();
        let labels = p.labels.unwrap();
        assert!(labels.noise_multiplier > 1.0 && p.budget_epsilon == 8.0, "{p:?}");
        assert!(p.teacher.is_none());
        let dpsgd = format!(
            "{GOOD}[privacy]\ndelta = 1e-5\nbudget_epsilon = 8.0\n[privacy.teacher]\nnoise_multiplier = 1.1\nclip = 1.0\nbatch = 64\n"
        );
        let p = ParticipantSettings::parse(&dpsgd, Path::new("/srv"))
            .unwrap()
            .privacy
            .unwrap();
        assert!(p.labels.is_none());
        assert_eq!(p.teacher.map(|t| (t.batch, t.clip)), Some((64, 1.0)));
    }

    /// Unlabelled rows and the pseudo-label threshold come together, with the refresh on; each half alone is a
    /// config that does nothing, refused naming what is missing.
    #[test]
    fn unlabelled_rows_need_the_pseudo_threshold_and_the_refresh() {
        let own = "kit = \"kit\"\nworkdir = \"work\"\n[task]\ncard = \"task.toml\"\n[private]\npath = \"images\"\n";
        let with = |private: &str, refresh: &str| {
            ParticipantSettings::parse(&format!("{own}{private}{refresh}"), Path::new("/srv"))
        };
        let s = with(
            "unlabeled = \"u.idx3-ubyte\"\n",
            "[refresh]\nepochs = 1\npseudo_threshold = 0.9\n",
        )
        .unwrap();
        let DataSource::Own(o) = s.source else {
            panic!("own data")
        };
        assert_eq!(o.unlabeled, Some(PathBuf::from("/srv/u.idx3-ubyte")));
        assert_eq!(s.refresh.pseudo_threshold, Some(0.9));
        for (private, refresh, want) in [
            ("unlabeled = \"u.idx3-ubyte\"\n", "", "set [refresh] pseudo_threshold"),
            (
                "",
                "[refresh]\nepochs = 1\npseudo_threshold = 0.9\n",
                "name their file in [private] unlabeled",
            ),
            (
                "unlabeled = \"u.idx3-ubyte\"\n",
                "[refresh]\npseudo_threshold = 0.9\n",
                "epochs = 0 turns off",
            ),
            (
                "unlabeled = \"u.idx3-ubyte\"\n",
                "[refresh]\nepochs = 1\npseudo_threshold = 1.5\n",
                "pseudo_threshold 1.5",
            ),
        ] {
            let e = format!("{:#}", with(private, refresh).expect_err(want));
            assert!(e.contains(want), "{private}{refresh}: {e}");
        }
    }

    #[test]
    fn refresh_is_off_by_default_and_parses() {
        let s = ParticipantSettings::parse(GOOD, Path::new("/srv")).unwrap();
        assert_eq!(s.refresh.epochs, 0);
        let s = ParticipantSettings::parse(&format!("{GOOD}[refresh]\nepochs = 2\n"), Path::new("/srv")).unwrap();
        assert_eq!(s.refresh.epochs, 2);
        assert_eq!(s.refresh.lr, RefreshConfig::default().lr);
    }

    #[test]
    fn refuses_bad_settings() {
        let cases = [
            (GOOD.replace("shard = 1", "shard = 3"), "shard 3 does not exist"),
            (GOOD.replace("int8", "int4"), "unknown soft-label encoding"),
            (
                GOOD.replace("shard = 1", "shard = 1\nguard_metrics = [\"speed\"]"),
                "speed",
            ),
            (GOOD.replace("shard = 1", "shard = 1\nbogus = true"), "bogus"),
            (
                format!("{GOOD}[privacy]\nnoise_multiplier = 0.0\ndelta = 1e-5\nbudget_epsilon = 8.0\n"),
                "noise_multiplier 0 must be > 0",
            ),
            (
                format!("{GOOD}[privacy]\nepsilon_per_round = 0.0\ndelta = 1e-5\nbudget_epsilon = 8.0\n"),
                "epsilon_per_round 0 must be",
            ),
            (
                format!("{GOOD}[privacy]\nnoise_multiplier = 1.0\ndelta = 1.0\nbudget_epsilon = 8.0\n"),
                "delta 1 must be in (0, 1)",
            ),
            (
                format!("{GOOD}[privacy]\nnoise_multiplier = 1.0\ndelta = 0.0\nbudget_epsilon = 8.0\n"),
                "delta 0 must be in (0, 1)",
            ),
            (
                format!("{GOOD}[privacy]\ndelta = 1e-5\nbudget_epsilon = 8.0\n[privacy.teacher]\nnoise_multiplier = 0.0\nclip = 1.0\nbatch = 64\n"),
                "[privacy.teacher] noise_multiplier 0 must be",
            ),
            (
                format!("{GOOD}[privacy]\ndelta = 1e-5\nbudget_epsilon = 8.0\n[privacy.teacher]\nnoise_multiplier = 1.0\nclip = -1.0\nbatch = 64\n"),
                "[privacy.teacher] clip -1 must be",
            ),
            (
                format!("{GOOD}[privacy]\ndelta = 1.5\nbudget_epsilon = 8.0\n[privacy.teacher]\nnoise_multiplier = 1.0\nclip = 1.0\nbatch = 64\n"),
                "delta 1.5 must be in (0, 1)",
            ),
            (
                format!("{GOOD}[privacy]\ndelta = 1e-5\nbudget_epsilon = 0.0\n[privacy.teacher]\nnoise_multiplier = 1.0\nclip = 1.0\nbatch = 64\n"),
                "budget_epsilon 0 must be",
            ),
            (
                format!("{GOOD}[privacy]\ndelta = 1e-5\nbudget_epsilon = 8.0\n[privacy.teacher]\nnoise_multiplier = 1.0\nclip = 1.0\nbatch = 64\nepochs = 3\n"),
                "epochs",
            ),
            (
                format!("{}[privacy]\ndelta = 1e-5\nbudget_epsilon = 8.0\n[privacy.teacher]\nnoise_multiplier = 1.0\nclip = 1.0\nbatch = 64\n",
                    GOOD.replace("[data]", "[teacher]\nkind = \"cnn\"\nchannels = [8]\nhidden = 16\n[data]")),
                "MLP teachers only",
            ),
            (
                format!("{GOOD}[refresh]\nepochs = 2\nlr = 0.0\n"),
                "[refresh] invalid hyper-parameter: teacher refresh lr 0",
            ),
            (format!("{GOOD}[refresh]\nepochs = 2\nrate = 1.0\n"), "rate"),
            (GOOD.replace("shard = 1", "shard = 1\nstatus = \"0.0.0.0:9200\""), "loopback only"),
            (GOOD.replace("shard = 1", "shard = 1\nstatus = \"localhost\""), "not an address"),
            (
                format!("{GOOD}[refresh]\nepochs = 2\n[privacy]\ndelta = 1e-5\nbudget_epsilon = 8.0\n[privacy.teacher]\nnoise_multiplier = 1.0\nclip = 1.0\nbatch = 64\n"),
                "would void the DP-SGD guarantee",
            ),
        ];
        for (text, needle) in cases {
            let err = format!("{:#}", ParticipantSettings::parse(&text, Path::new(".")).unwrap_err());
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn refuses_dp_sgd_for_a_cnn1d_teacher() {
        let teacher = "[teacher]\nkind = \"cnn1d\"\nchannels = [8]\nhidden = 16\n[data]";
        let privacy = "[privacy]\ndelta = 1e-5\nbudget_epsilon = 8.0\n[privacy.teacher]\nnoise_multiplier = 1.0\nclip = 1.0\nbatch = 64\n";
        let text = format!("{}{privacy}", GOOD.replace("[data]", teacher));
        let err = format!("{:#}", ParticipantSettings::parse(&text, Path::new(".")).unwrap_err());
        assert!(err.contains("MLP teachers only"), "{err}");
        // Without DP-SGD the 1-D teacher is accepted as written.
        let s = ParticipantSettings::parse(&GOOD.replace("[data]", teacher), Path::new(".")).unwrap();
        assert_eq!(
            s.teacher,
            Some(ModelConfig::Cnn1d {
                in_channels: 1,
                channels: vec![8],
                hidden: 16,
                kernel: 5
            })
        );
    }

    #[test]
    fn refuses_dp_sgd_for_a_fused_teacher_and_reads_one_without_blocks() {
        let teacher = "[teacher]\nkind = \"fused\"\nembed = 8\nhidden = 8\n[data]";
        let privacy = "[privacy]\ndelta = 1e-5\nbudget_epsilon = 8.0\n[privacy.teacher]\nnoise_multiplier = 1.0\nclip = 1.0\nbatch = 64\n";
        let text = format!("{}{privacy}", GOOD.replace("[data]", teacher));
        let err = format!("{:#}", ParticipantSettings::parse(&text, Path::new(".")).unwrap_err());
        assert!(
            err.contains("MLP teachers only, but [teacher] is a fused model"),
            "{err}"
        );
        // Without DP-SGD: the blocks are left to the task card, the dropout to its default.
        let s = ParticipantSettings::parse(&GOOD.replace("[data]", teacher), Path::new(".")).unwrap();
        assert_eq!(
            s.teacher,
            Some(ModelConfig::Fused {
                embed: 8,
                hidden: 8,
                blocks: Vec::new(),
                dropout: fedistill_shared::ml::model::DropRate(0.2),
            })
        );
    }

    const OWN: &str = r#"
kit = "kit"
workdir = "work"
[task]
card = "task.toml"
[private]
path = "data/bank.csv"
delimiter = ";"
columns = { Class = "outcome" }
holdout = 0.25
seed = 3
"#;

    #[test]
    fn own_files_resolve_and_fetch_the_public_set_by_default() {
        let s = ParticipantSettings::parse(OWN, Path::new("/srv/bank")).unwrap();
        let DataSource::Own(o) = &s.source else {
            panic!("expected own files, got {:?}", s.source);
        };
        assert_eq!(o.card, Path::new("/srv/bank/task.toml"));
        assert_eq!(o.private, Path::new("/srv/bank/data/bank.csv"));
        assert_eq!(o.csv.delimiter, b';');
        assert_eq!(o.csv.columns.get("Class").map(String::as_str), Some("outcome"));
        assert_eq!((o.holdout, o.seed), (0.25, 3));
        assert_eq!(o.validation, DEFAULT_VALIDATION);
        let s = ParticipantSettings::parse(&OWN.replace("seed = 3", "seed = 3\nvalidation = 0.15"), Path::new("."))
            .unwrap();
        let DataSource::Own(o) = &s.source else { panic!() };
        assert_eq!(o.validation, 0.15);
        assert_eq!(o.public, None, "fetched from the coordinator");
        let placed = format!("{OWN}[public]\npath = \"public.csv\"\nmax_bytes = 1000\n");
        let s = ParticipantSettings::parse(&placed, Path::new("/srv/bank")).unwrap();
        let DataSource::Own(o) = &s.source else { panic!() };
        assert_eq!(o.public.as_deref(), Some(Path::new("/srv/bank/public.csv")));
        assert_eq!(o.max_public_bytes, 1000);
    }

    #[test]
    fn a_node_reads_either_its_own_files_or_a_catalog_shard() {
        let cases = [
            (format!("{OWN}shard = 1\n").replace("shard = 1\n", ""), ""),
            (format!("shard = 1\n{OWN}"), "both set"),
            (OWN.replace("[task]\ncard = \"task.toml\"\n", ""), "[task] is missing"),
            (
                OWN.split("[private]").next().unwrap_or_default().to_string(),
                "[private] is missing",
            ),
            ("kit = \"k\"\nworkdir = \"w\"\n".to_string(), "no data"),
            (
                OWN.replace("holdout = 0.25", "holdout = 1.0"),
                "holdout = 1 must be in (0, 1)",
            ),
            (
                OWN.replace("seed = 3", "seed = 3\nvalidation = 0.0"),
                "[private] validation = 0 must be in (0, 1)",
            ),
            (
                OWN.replace("seed = 3", "seed = 3\nvalidation = 1.5"),
                "[private] validation = 1.5 must be in (0, 1)",
            ),
            (
                OWN.replace("seed = 3", "seed = 3\nvalidation = 0.75"),
                "[private] holdout = 0.25 and validation = 0.75 keep 1 of your rows aside",
            ),
            (
                OWN.replace("seed = 3", "seed = 3\nvalidation = \"a tenth\""),
                "validation",
            ),
            (OWN.replace("delimiter = \";\"", "delimiter = \";;\""), "[private]"),
            (OWN.replace("seed = 3", "seed = 3\nshard = 2"), "bogus-free"),
            (
                format!("{GOOD}[public]\npath = \"p.csv\"\n"),
                "[benchmark] belong to own files",
            ),
        ];
        for (text, needle) in cases {
            let parsed = ParticipantSettings::parse(&text, Path::new("."));
            if needle.is_empty() {
                parsed.unwrap();
                continue;
            }
            if needle == "bogus-free" {
                // `shard` inside [private] is an unknown key there, named as such.
                let err = format!("{:#}", parsed.unwrap_err());
                assert!(err.contains("shard"), "{err}");
                continue;
            }
            let err = format!("{:#}", parsed.unwrap_err());
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }
}
