//! `coordinator.toml`: what an operator configures for a coordinator, parsed in two steps (raw TOML, then
//! a validated [`CoordinatorSettings`]). Every key is documented in docs/operations.md.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use fedistill_shared::protocol::robust::QuarantinePolicy;
use fedistill_shared::protocol::{AggregationRule, Encoding};
pub use fedistill_shared::settings::DataSettings;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    federation_dir: PathBuf,
    bind: String,
    store: PathBuf,
    #[serde(default)]
    status: Option<String>,
    rounds: u64,
    #[serde(default)]
    min_participants: Option<usize>,
    quorum: usize,
    #[serde(default = "default_collect")]
    collect_timeout_ms: u64,
    #[serde(default = "default_report")]
    report_timeout_ms: u64,
    #[serde(default = "default_samples")]
    samples_per_round: u64,
    #[serde(default = "default_rule")]
    rule: String,
    #[serde(default = "default_temperature")]
    temperature: f32,
    #[serde(default = "default_aggregate_encoding")]
    aggregate_encoding: String,
    #[serde(default = "default_max_frame")]
    max_frame_bytes: usize,
    #[serde(default = "default_stream_timeout")]
    stream_timeout_ms: u64,
    #[serde(default = "default_frame_budget")]
    frame_budget_bytes: usize,
    #[serde(default)]
    data: Option<DataSettings>,
    #[serde(default)]
    task: Option<TaskFiles>,
    #[serde(default)]
    quarantine: Option<RawQuarantine>,
    #[serde(default)]
    stop: Option<RawStop>,
    #[serde(default)]
    secure_aggregation: bool,
    #[serde(default)]
    secagg_threshold: Option<u32>,
    #[serde(default)]
    secagg_neighbours: Option<u32>,
    #[serde(default)]
    secagg_noise_stddev: Option<f64>,
}

/// `[task]`: the federation learns the task a card declares, on the public file it names (the
/// deployment path: the coordinator names no dataset and no partition; each participant reads its own
/// files). docs/data.md, "Task card and own files".
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskFiles {
    /// The task card (TOML).
    pub card: PathBuf,
    /// The public transfer set file the card names (its SHA-256 must match the card).
    pub public: PathBuf,
}

/// Where the task and the public transfer set come from.
#[derive(Debug, Clone)]
pub enum TaskSource {
    /// A task card and its public file (`[task]`).
    Card(TaskFiles),
    /// A catalog dataset and a seeded split shared by every node (`[data]`; simulations and older configs).
    Catalog(DataSettings),
}

/// `[stop]`: finish before `rounds` once the median reported accuracy stops improving (docs/operations.md,
/// "Stopping on convergence").
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStop {
    patience: u64,
    #[serde(default = "default_min_delta")]
    min_delta: f64,
    #[serde(default = "default_min_rounds")]
    min_rounds: u64,
}

fn default_min_delta() -> f64 {
    0.001
}

fn default_min_rounds() -> u64 {
    1
}

/// `[quarantine]`: every key optional, defaults from [`QuarantinePolicy::default`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuarantine {
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    decay: Option<f64>,
    #[serde(default)]
    factor: Option<f64>,
    #[serde(default)]
    floor: Option<f64>,
    #[serde(default)]
    consecutive: Option<u32>,
    #[serde(default)]
    min_contributors: Option<usize>,
    #[serde(default)]
    release_after_rounds: Option<u32>,
}

/// The validated `[quarantine]` table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuarantineSettings {
    /// Whether anomaly scores are tracked and quarantine decisions taken at all.
    pub enabled: bool,
    /// The policy (validated).
    pub policy: QuarantinePolicy,
}

impl Default for QuarantineSettings {
    fn default() -> Self {
        QuarantineSettings {
            enabled: true,
            policy: QuarantinePolicy::default(),
        }
    }
}

impl RawQuarantine {
    fn validate(self) -> anyhow::Result<QuarantineSettings> {
        let d = QuarantinePolicy::default();
        let policy = QuarantinePolicy {
            decay: self.decay.unwrap_or(d.decay),
            factor: self.factor.unwrap_or(d.factor),
            floor: self.floor.unwrap_or(d.floor),
            consecutive: self.consecutive.unwrap_or(d.consecutive),
            min_contributors: self.min_contributors.unwrap_or(d.min_contributors),
            release_after_rounds: self.release_after_rounds,
        };
        // The policy's own messages name the key (`decay 0 must be in (0, 1]`).
        policy.validate().map_err(|e| anyhow::anyhow!("[quarantine] {e}"))?;
        Ok(QuarantineSettings {
            enabled: self.enabled.unwrap_or(true),
            policy,
        })
    }
}

fn default_collect() -> u64 {
    60_000
}
fn default_report() -> u64 {
    60_000
}
fn default_samples() -> u64 {
    2_000
}
fn default_rule() -> String {
    "median".into()
}
fn default_aggregate_encoding() -> String {
    "f32".into()
}

fn default_temperature() -> f32 {
    3.0
}
fn default_max_frame() -> usize {
    fedistill_shared::wire::DEFAULT_MAX_FRAME
}
fn default_stream_timeout() -> u64 {
    10_000
}
/// 256 MiB: eight participants' worth of two full-size frames each at the default cap.
fn default_frame_budget() -> usize {
    256 * 1024 * 1024
}

/// Validated coordinator settings.
#[derive(Debug, Clone)]
pub struct CoordinatorSettings {
    /// The operator's federation directory (certificates, keys, roster, CRL).
    pub federation_dir: PathBuf,
    /// UDP address to listen on (separate from the endpoint written into kits).
    pub bind: SocketAddr,
    /// SQLite store path.
    pub store: PathBuf,
    /// Local HTTP address for `/metrics` and `/status` (none: disabled).
    pub status: Option<SocketAddr>,
    /// Rounds to run.
    pub rounds: u64,
    /// Participants that must be connected before round 1.
    pub min_participants: usize,
    /// Contributions needed to aggregate.
    pub quorum: usize,
    /// Soft-label collection window per round.
    pub collect_timeout_ms: u64,
    /// Report window per round.
    pub report_timeout_ms: u64,
    /// Public samples per round.
    pub samples_per_round: u64,
    /// Aggregation rule.
    pub rule: AggregationRule,
    /// Teacher temperature.
    pub temperature: f32,
    /// How the consensus is packed for the participants (`f32` exact; `f16`, `int8`, `topk:K` smaller).
    pub aggregate_encoding: Encoding,
    /// Largest accepted frame payload.
    pub max_frame_bytes: usize,
    /// How long a peer may take to send a whole frame on a stream.
    pub stream_timeout_ms: u64,
    /// Memory all request frames being received or decoded may hold together (each participant also has
    /// its own budget of two full-size frames; docs/security.md, "Memory per connection").
    pub frame_budget_bytes: usize,
    /// The task: a card and its public file, or a catalog dataset and split.
    pub task: TaskSource,
    /// Anomaly scores and the quarantine policy (`[quarantine]`, docs/operations.md).
    pub quarantine: QuarantineSettings,
    /// Secure aggregation (`secure_aggregation = true`): the coordinator sees masked inputs and unmasks only
    /// their sum. `None` in the clear.
    pub secure: Option<fedistill_shared::wire::secagg::SecAggParams>,
    /// Stopping on convergence (`[stop]`); `None`: every one of `rounds` runs.
    pub stop: Option<fedistill_shared::protocol::coordinator::stop::StopRule>,
}

impl CoordinatorSettings {
    /// Reads and validates a config file; relative paths resolve against the file's directory.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text, path.parent().unwrap_or(Path::new(".")))
            .with_context(|| format!("invalid coordinator config {}", path.display()))
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str, base: &Path) -> anyhow::Result<Self> {
        let raw: RawSettings = toml::from_str(text)?;
        let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        let bind: SocketAddr = raw
            .bind
            .parse()
            .map_err(|e| anyhow::anyhow!("bind = {:?} is not an address like 0.0.0.0:4433: {e}", raw.bind))?;
        let status = match raw.status {
            Some(s) if !s.is_empty() => Some(
                s.parse()
                    .map_err(|e| anyhow::anyhow!("status = {s:?} is not an address like 127.0.0.1:9100: {e}"))?,
            ),
            _ => None,
        };
        anyhow::ensure!(raw.rounds >= 1, "rounds must be at least 1");
        anyhow::ensure!(raw.quorum >= 1, "quorum must be at least 1");
        let min_participants = raw.min_participants.unwrap_or(raw.quorum);
        anyhow::ensure!(
            min_participants >= raw.quorum,
            "min_participants ({min_participants}) must be >= quorum ({})",
            raw.quorum
        );
        anyhow::ensure!(raw.collect_timeout_ms >= 100, "collect_timeout_ms must be at least 100");
        anyhow::ensure!(
            (1..=fedistill_shared::wire::messages::MAX_ROUND_SAMPLES).contains(&raw.samples_per_round),
            "samples_per_round must be between 1 and {} (got {})",
            fedistill_shared::wire::messages::MAX_ROUND_SAMPLES,
            raw.samples_per_round
        );
        anyhow::ensure!(
            raw.temperature.is_finite() && raw.temperature > 0.0,
            "temperature must be > 0 (got {})",
            raw.temperature
        );
        anyhow::ensure!(
            (1024..=fedistill_shared::wire::ABSOLUTE_MAX_FRAME).contains(&raw.max_frame_bytes),
            "max_frame_bytes must be between 1024 and {}",
            fedistill_shared::wire::ABSOLUTE_MAX_FRAME
        );
        let one_participant = 2 * (raw.max_frame_bytes + fedistill_shared::wire::HEADER_LEN);
        anyhow::ensure!(
            raw.frame_budget_bytes >= one_participant && raw.frame_budget_bytes <= u32::MAX as usize,
            "frame_budget_bytes must be between {one_participant} (two frames of max_frame_bytes) and {} (got {})",
            u32::MAX,
            raw.frame_budget_bytes
        );
        let rule = AggregationRule::parse(&raw.rule)?;
        let aggregate_encoding =
            Encoding::parse(&raw.aggregate_encoding).map_err(|e| anyhow::anyhow!("aggregate_encoding: {e}"))?;
        let stop = match raw.stop {
            Some(r) => {
                let rule = fedistill_shared::protocol::coordinator::stop::StopRule {
                    patience: r.patience,
                    min_delta: r.min_delta,
                    min_rounds: r.min_rounds,
                };
                rule.validate().map_err(|e| anyhow::anyhow!("[stop] {e}"))?;
                anyhow::ensure!(
                    rule.min_rounds <= raw.rounds,
                    "[stop] min_rounds {} is more than rounds {}: the rule could never stop anything",
                    rule.min_rounds,
                    raw.rounds
                );
                Some(rule)
            }
            None => None,
        };
        let quarantine = match raw.quarantine {
            Some(q) => q.validate()?,
            // Anomaly scores need each participant's labels, which a secure round never shows.
            None if raw.secure_aggregation => QuarantineSettings {
                enabled: false,
                ..QuarantineSettings::default()
            },
            None => QuarantineSettings::default(),
        };
        let secure = if raw.secure_aggregation {
            anyhow::ensure!(
                matches!(rule, AggregationRule::Mean | AggregationRule::SampleWeighted),
                "rule = {:?} needs every participant's own soft labels, which secure aggregation hides from the \
                 coordinator (it learns only their sum): use rule = \"mean\" or \"sample_weighted\" with \
                 secure_aggregation = true",
                raw.rule
            );
            anyhow::ensure!(
                !quarantine.enabled,
                "[quarantine] scores each participant's soft labels against the consensus, which secure \
                 aggregation hides from the coordinator: set [quarantine] enabled = false (or leave [quarantine] out) \
                 with secure_aggregation = true"
            );
            let threshold = raw.secagg_threshold.unwrap_or((min_participants / 2 + 1).max(2) as u32);
            anyhow::ensure!(
                threshold as usize <= min_participants,
                "secagg_threshold = {threshold} exceeds min_participants = {min_participants}: a round could never \
                 unmask"
            );
            // Distributed noise: each participant adds a share so that any `threshold` survivors together
            // carry a variance of stddev^2 on every value of the sum (fixed-point units).
            let noise_sigma2 = match raw.secagg_noise_stddev {
                None => 0,
                Some(s) => {
                    anyhow::ensure!(
                        rule == AggregationRule::Mean,
                        "secagg_noise_stddev needs rule = \"mean\": under sample_weighted a participant's row is \
                         scaled by its own sample count, so the sensitivity of the sum has no bound the noise could \
                         be set for"
                    );
                    anyhow::ensure!(
                        s.is_finite() && s > 0.0 && s <= 1e3,
                        "secagg_noise_stddev must be in (0, 1000] (got {s})"
                    );
                    let fixed = s * f64::from(1u32 << fedistill_shared::protocol::secagg::FRAC_BITS);
                    (fixed * fixed / f64::from(threshold)).ceil() as u64
                }
            };
            let params = fedistill_shared::wire::secagg::SecAggParams {
                threshold,
                neighbours: raw.secagg_neighbours.unwrap_or(0),
                noise_sigma2,
            };
            fedistill_shared::protocol::secagg::check_params(&params, min_participants)
                .map_err(|e| anyhow::anyhow!("secure aggregation: {e}"))?;
            Some(params)
        } else {
            anyhow::ensure!(
                raw.secagg_threshold.is_none() && raw.secagg_neighbours.is_none() && raw.secagg_noise_stddev.is_none(),
                "secagg_threshold, secagg_neighbours and secagg_noise_stddev only apply with secure_aggregation = true"
            );
            None
        };
        let task = match (raw.task, raw.data) {
            (Some(t), None) => TaskSource::Card(TaskFiles {
                card: resolve(t.card),
                public: resolve(t.public),
            }),
            (None, Some(mut data)) => {
                data.data_dir = data.data_dir.map(resolve);
                data.split_config()?;
                TaskSource::Catalog(data)
            }
            (Some(_), Some(_)) => anyhow::bail!(
                "[task] and [data] are both set: a federation learns either the task of a card ([task] card, public) \
                 or a catalog dataset ([data]), not both"
            ),
            (None, None) => anyhow::bail!(
                "no task: set [task] card = \"task.toml\" and public = \"public.csv\" (or [data] for a catalog dataset)"
            ),
        };
        Ok(Self {
            federation_dir: resolve(raw.federation_dir),
            bind,
            store: resolve(raw.store),
            status,
            rounds: raw.rounds,
            min_participants,
            quorum: raw.quorum,
            collect_timeout_ms: raw.collect_timeout_ms,
            report_timeout_ms: raw.report_timeout_ms,
            samples_per_round: raw.samples_per_round,
            rule,
            temperature: raw.temperature,
            aggregate_encoding,
            max_frame_bytes: raw.max_frame_bytes,
            stream_timeout_ms: raw.stream_timeout_ms,
            frame_budget_bytes: raw.frame_budget_bytes,
            task,
            quarantine,
            stop,
            secure,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
federation_dir = "fed"
bind = "127.0.0.1:4433"
store = "coordinator.sqlite"
status = "127.0.0.1:9100"
rounds = 3
quorum = 2
rule = "trimmed_mean:0.2"
[data]
dataset = "mnist-10k"
participants = 3
"#;

    #[test]
    fn secure_aggregation_turns_quarantine_off_and_defaults_to_a_majority_threshold() {
        let text = GOOD
            .replace(
                "rule = \"trimmed_mean:0.2\"",
                "rule = \"sample_weighted\"\nsecure_aggregation = true",
            )
            .replace("quorum = 2", "quorum = 2\nmin_participants = 5");
        let s = CoordinatorSettings::parse(&text, Path::new(".")).unwrap();
        let p = s.secure.expect("secure aggregation on");
        assert_eq!((p.threshold, p.neighbours, p.noise_sigma2), (3, 0, 0));
        assert!(!s.quarantine.enabled, "anomaly scores need individual labels");
        // Distributed noise: any `threshold` survivors' shares add up to the chosen variance.
        let noisy = GOOD
            .replace(
                "rule = \"trimmed_mean:0.2\"",
                "rule = \"mean\"\nsecure_aggregation = true\nsecagg_noise_stddev = 0.5",
            )
            .replace("quorum = 2", "quorum = 2\nmin_participants = 5");
        let p = CoordinatorSettings::parse(&noisy, Path::new("."))
            .unwrap()
            .secure
            .expect("secure");
        let per_participant = (0.5f64 * 16_777_216.0).powi(2) / 3.0;
        assert_eq!(p.noise_sigma2, per_participant.ceil() as u64);
        assert!(CoordinatorSettings::parse(GOOD, Path::new("."))
            .unwrap()
            .secure
            .is_none());
    }

    #[test]
    fn parses_and_resolves_paths() {
        let s = CoordinatorSettings::parse(GOOD, Path::new("/etc/fedistill")).unwrap();
        assert_eq!(s.store, Path::new("/etc/fedistill/coordinator.sqlite"));
        assert_eq!(s.federation_dir, Path::new("/etc/fedistill/fed"));
        assert_eq!(s.min_participants, 2);
        assert_eq!(s.rule, AggregationRule::TrimmedMean { trim: 0.2 });
        assert_eq!(s.aggregate_encoding, Encoding::F32, "exact by default");
        assert!(matches!(&s.task, TaskSource::Catalog(d) if d.alpha == 0.5));
        assert_eq!(s.quarantine, QuarantineSettings::default());
        assert!(s.quarantine.enabled);
        assert_eq!(s.quarantine.policy.release_after_rounds, None, "permanent by default");
    }

    #[test]
    fn a_task_card_replaces_the_catalog_and_exactly_one_is_required() {
        let head = GOOD.split("[data]").next().expect("head");
        let card = format!("{head}[task]\ncard = \"task.toml\"\npublic = \"public/transfer.csv\"\n");
        let s = CoordinatorSettings::parse(&card, Path::new("/srv/fed")).unwrap();
        match &s.task {
            TaskSource::Card(t) => {
                assert_eq!(t.card, Path::new("/srv/fed/task.toml"));
                assert_eq!(t.public, Path::new("/srv/fed/public/transfer.csv"));
            }
            other => panic!("expected a card, got {other:?}"),
        }
        let both = format!("{GOOD}[task]\ncard = \"task.toml\"\npublic = \"p.csv\"\n");
        let e = CoordinatorSettings::parse(&both, Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(e.contains("[task] and [data] are both set"), "{e}");
        let e = CoordinatorSettings::parse(head, Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no task"), "{e}");
        let typo = format!("{head}[task]\ncard = \"task.toml\"\npublik = \"p.csv\"\n");
        let e = format!("{:#}", CoordinatorSettings::parse(&typo, Path::new(".")).unwrap_err());
        assert!(e.contains("publik"), "{e}");
    }

    #[test]
    fn parses_the_stop_table_and_names_its_bad_values() {
        let s = CoordinatorSettings::parse(&format!("{GOOD}[stop]\npatience = 2\n"), Path::new(".")).unwrap();
        let rule = s.stop.expect("[stop] set");
        assert_eq!((rule.patience, rule.min_delta, rule.min_rounds), (2, 0.001, 1));
        assert_eq!(CoordinatorSettings::parse(GOOD, Path::new(".")).unwrap().stop, None);
        for (table, want) in [
            ("[stop]\npatience = 0\n", "stop.patience must be at least 1"),
            ("[stop]\npatience = 2\nmin_delta = 1.5\n", "stop.min_delta 1.5"),
            (
                "[stop]\npatience = 2\nmin_rounds = 4\n",
                "min_rounds 4 is more than rounds 3",
            ),
            ("[stop]\nmin_delta = 0.1\n", "patience"),
            ("[stop]\npatience = 2\nmetric = \"loss\"\n", "metric"),
        ] {
            let e = CoordinatorSettings::parse(&format!("{GOOD}{table}"), Path::new("."))
                .expect_err(table)
                .to_string();
            assert!(e.contains(want), "{table}: {e}");
        }
    }

    #[test]
    fn parses_the_quarantine_table() {
        let text = format!(
            "{GOOD}[quarantine]\nenabled = true\ndecay = 0.25\nfactor = 4.0\nfloor = 0.2\nconsecutive = 2\nmin_contributors = 5\nrelease_after_rounds = 3\n"
        );
        let s = CoordinatorSettings::parse(&text, Path::new(".")).unwrap();
        assert_eq!(
            s.quarantine.policy,
            QuarantinePolicy {
                decay: 0.25,
                factor: 4.0,
                floor: 0.2,
                consecutive: 2,
                min_contributors: 5,
                release_after_rounds: Some(3),
            }
        );
        // Keys left out keep their defaults; `enabled = false` switches the policy off.
        let s = CoordinatorSettings::parse(
            &format!("{GOOD}[quarantine]\nenabled = false\nfactor = 5.0\n"),
            Path::new("."),
        )
        .unwrap();
        assert!(!s.quarantine.enabled);
        assert_eq!(
            s.quarantine.policy,
            QuarantinePolicy {
                factor: 5.0,
                ..QuarantinePolicy::default()
            }
        );
    }

    #[test]
    fn refuses_bad_quarantine_values_with_the_key_named() {
        let cases = [
            ("decay = 0.0", "decay"),
            ("decay = 1.5", "decay"),
            ("factor = 1.0", "factor"),
            ("factor = inf", "factor"),
            ("floor = -0.1", "floor"),
            ("floor = nan", "floor"),
            ("consecutive = 0", "consecutive"),
            ("consecutive = -1", "consecutive"),
            ("min_contributors = 2", "min_contributors"),
            ("release_after_rounds = 0", "release_after_rounds"),
            ("release_after_rounds = -3", "release_after_rounds"),
            ("enabled = \"yes\"", "enabled"),
            ("strikes = 3", "strikes"),
        ];
        for (line, needle) in cases {
            let text = format!("{GOOD}[quarantine]\n{line}\n");
            let err = format!("{:#}", CoordinatorSettings::parse(&text, Path::new(".")).unwrap_err());
            assert!(err.contains(needle), "{line}: {err}");
        }
    }

    #[test]
    fn refuses_bad_settings_with_the_key_named() {
        let cases = [
            (GOOD.replace("127.0.0.1:4433", "nowhere"), "bind"),
            (GOOD.replace("rounds = 3", "rounds = 0"), "rounds"),
            (GOOD.replace("trimmed_mean:0.2", "average"), "unknown aggregation rule"),
            (
                GOOD.replace("rule = ", "aggregate_encoding = \"f12\"\nrule = "),
                "aggregate_encoding",
            ),
            (GOOD.replace("quorum = 2", "quorum = 2\nbogus = 1"), "bogus"),
            (
                GOOD.replace("quorum = 2", "quorum = 2\nsamples_per_round = 0"),
                "samples_per_round",
            ),
            (
                GOOD.replace("quorum = 2", "quorum = 2\nsamples_per_round = 4194305"),
                "samples_per_round must be between 1 and 4194304",
            ),
            (
                GOOD.replace("participants = 3", "participants = 3\npartition = \"zipf\""),
                "partition",
            ),
            // Less than two frames of the default cap: one participant could never receive a full frame.
            (
                GOOD.replace("quorum = 2", "quorum = 2\nframe_budget_bytes = 1048576"),
                "frame_budget_bytes must be between",
            ),
            (
                GOOD.replace("quorum = 2", "quorum = 2\nframe_budget_bytes = 8589934592"),
                "frame_budget_bytes must be between",
            ),
            // Secure aggregation hides individual labels: rules and quarantine that need them are refused.
            (
                GOOD.replace("quorum = 2", "quorum = 2\nsecure_aggregation = true"),
                "needs every participant's own soft labels",
            ),
            (
                GOOD.replace(
                    "rule = \"trimmed_mean:0.2\"",
                    "rule = \"mean\"\nsecure_aggregation = true\n[quarantine]\nenabled = true",
                ),
                "[quarantine] scores each participant's soft labels",
            ),
            (
                GOOD.replace(
                    "rule = \"trimmed_mean:0.2\"",
                    "rule = \"mean\"\nsecure_aggregation = true\nsecagg_threshold = 3",
                ),
                "secagg_threshold = 3 exceeds min_participants = 2",
            ),
            (
                GOOD.replace(
                    "rule = \"trimmed_mean:0.2\"",
                    "rule = \"mean\"\nsecure_aggregation = true\nsecagg_threshold = 1",
                ),
                "threshold of at least 2",
            ),
            (
                GOOD.replace(
                    "rule = \"trimmed_mean:0.2\"",
                    "rule = \"mean\"\nsecure_aggregation = true\nsecagg_neighbours = 3",
                ),
                "even number",
            ),
            (
                GOOD.replace("rule = \"trimmed_mean:0.2\"", "rule = \"mean\"\nsecagg_threshold = 2"),
                "only apply with secure_aggregation = true",
            ),
            (
                GOOD.replace(
                    "rule = \"trimmed_mean:0.2\"",
                    "rule = \"sample_weighted\"\nsecure_aggregation = true\nsecagg_noise_stddev = 0.1",
                ),
                "secagg_noise_stddev needs rule = \"mean\"",
            ),
            (
                GOOD.replace(
                    "rule = \"trimmed_mean:0.2\"",
                    "rule = \"mean\"\nsecure_aggregation = true\nsecagg_noise_stddev = -1",
                ),
                "secagg_noise_stddev must be in (0, 1000]",
            ),
        ];
        for (text, needle) in cases {
            let err = format!("{:#}", CoordinatorSettings::parse(&text, Path::new(".")).unwrap_err());
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }
}
