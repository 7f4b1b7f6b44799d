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
    shard: usize,
    data: DataSettings,
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
    status: Option<String>,
}

fn default_encoding() -> String {
    "f16".into()
}
fn default_guard_metrics() -> Vec<String> {
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
    /// Which private shard of the split this institution holds.
    pub shard: usize,
    /// Dataset and split (must match the coordinator's).
    pub data: DataSettings,
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
    /// Loopback address of this node's read-only status page (`status = "127.0.0.1:9200"`; none: off).
    pub status: Option<std::net::SocketAddr>,
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
        anyhow::ensure!(
            raw.shard < raw.data.participants,
            "shard {} does not exist: the split has {} shards (0..{})",
            raw.shard,
            raw.data.participants,
            raw.data.participants
        );
        raw.data.split_config()?;
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
        if let (Some(ModelConfig::Cnn { .. }), Some(p)) = (&raw.teacher, &privacy) {
            anyhow::ensure!(
                p.teacher.is_none(),
                "[privacy.teacher] (DP-SGD) supports MLP teachers only, but [teacher] is a CNN: use kind = \"mlp\""
            );
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
        let mut data = raw.data;
        data.data_dir = data.data_dir.map(resolve);
        Ok(Self {
            kit: resolve(raw.kit),
            workdir: resolve(raw.workdir),
            encoding,
            shard: raw.shard,
            data,
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
            status,
        })
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
}
