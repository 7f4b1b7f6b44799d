//! `coordinator.toml`: what an operator configures for a coordinator, parsed in two steps (raw TOML, then
//! a validated [`CoordinatorSettings`]). Every key is documented in docs/operations.md.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use fedistill_shared::protocol::AggregationRule;
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
    #[serde(default = "default_max_frame")]
    max_frame_bytes: usize,
    #[serde(default = "default_stream_timeout")]
    stream_timeout_ms: u64,
    data: DataSettings,
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
fn default_temperature() -> f32 {
    3.0
}
fn default_max_frame() -> usize {
    fedistill_shared::wire::DEFAULT_MAX_FRAME
}
fn default_stream_timeout() -> u64 {
    10_000
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
    /// Largest accepted frame payload.
    pub max_frame_bytes: usize,
    /// How long a peer may take to send a whole frame on a stream.
    pub stream_timeout_ms: u64,
    /// Dataset and split.
    pub data: DataSettings,
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
        anyhow::ensure!(raw.samples_per_round >= 1, "samples_per_round must be at least 1");
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
        let rule = AggregationRule::parse(&raw.rule)?;
        let mut data = raw.data;
        data.data_dir = data.data_dir.map(resolve);
        data.split_config()?;
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
            max_frame_bytes: raw.max_frame_bytes,
            stream_timeout_ms: raw.stream_timeout_ms,
            data,
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
    fn parses_and_resolves_paths() {
        let s = CoordinatorSettings::parse(GOOD, Path::new("/etc/fedistill")).unwrap();
        assert_eq!(s.store, Path::new("/etc/fedistill/coordinator.sqlite"));
        assert_eq!(s.federation_dir, Path::new("/etc/fedistill/fed"));
        assert_eq!(s.min_participants, 2);
        assert_eq!(s.rule, AggregationRule::TrimmedMean { trim: 0.2 });
        assert_eq!(s.data.alpha, 0.5);
    }

    #[test]
    fn refuses_bad_settings_with_the_key_named() {
        let cases = [
            (GOOD.replace("127.0.0.1:4433", "nowhere"), "bind"),
            (GOOD.replace("rounds = 3", "rounds = 0"), "rounds"),
            (GOOD.replace("trimmed_mean:0.2", "average"), "unknown aggregation rule"),
            (GOOD.replace("quorum = 2", "quorum = 2\nbogus = 1"), "bogus"),
            (
                GOOD.replace("participants = 3", "participants = 3\npartition = \"zipf\""),
                "partition",
            ),
        ];
        for (text, needle) in cases {
            let err = format!("{:#}", CoordinatorSettings::parse(&text, Path::new(".")).unwrap_err());
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }
}
