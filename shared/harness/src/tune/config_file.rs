//! The TOML `fedistill tune --out` writes: the coordinator's top-level keys, then the participant's tables,
//! each part under a marker line, so an operator pastes the first part into `coordinator.toml` and the second
//! into every `participant.toml`. Every table is written whole (a table that names only some keys would take
//! the generic defaults for the others, not the dataset kind's), and the text is read back through the real
//! parsers (`CoordinatorSettings::parse`, `ParticipantSettings::parse`) before it is written: a file that
//! would not load, or would load as something else, is an error here, never at a node.

use anyhow::{bail, Context};
use serde_json::Value;

use fedistill_coordinator::config::CoordinatorSettings;
use fedistill_participant::config::ParticipantSettings;

use crate::experiment::ExperimentConfig;

/// The line that opens the coordinator's part.
pub const COORDINATOR_MARKER: &str = "# --- coordinator.toml: top-level keys ---";
/// The line that opens the participant's part (everything after it).
pub const PARTICIPANT_MARKER: &str = "# --- participant.toml: tables ---";

/// The tuned configuration as TOML: `comments` first (each gets a `# `), then the coordinator's `rounds`,
/// `temperature`, `rule` and `samples_per_round` (one pass over `public_rows` public rows, as the simulation
/// made), then `[student]`, `[teacher]`, `[train]`, `[distill]` and `[refresh]`.
pub fn tuned_toml(cfg: &ExperimentConfig, public_rows: usize, comments: &[String]) -> anyhow::Result<String> {
    let rule = cfg
        .rules
        .first()
        .context("the tuned configuration names no aggregation rule")?;
    anyhow::ensure!(cfg.rounds > 0, "the tuned configuration has no rounds");
    let max = fedistill_shared::wire::messages::MAX_ROUND_SAMPLES as usize;
    let per_round = cfg.samples_per_round.unwrap_or(public_rows / cfg.rounds).clamp(1, max);
    let mut out = String::new();
    for line in comments
        .iter()
        .flat_map(|c| if c.is_empty() { vec![""] } else { c.lines().collect() })
    {
        out.push_str(if line.is_empty() { "#\n" } else { "# " });
        if !line.is_empty() {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push('\n');
    out.push_str(COORDINATOR_MARKER);
    out.push('\n');
    out.push_str(&format!("rounds = {}\n", cfg.rounds));
    out.push_str(&format!("temperature = {}\n", float(f64::from(cfg.temperature))?));
    out.push_str("# The rule the simulation aggregated with (not tuned).\n");
    out.push_str(&format!("rule = {}\n", string(&rule.name())));
    out.push_str(&format!(
        "# One pass over the public set: {public_rows} public rows / {} rounds.\n",
        cfg.rounds
    ));
    out.push_str(&format!("samples_per_round = {per_round}\n\n"));
    out.push_str(PARTICIPANT_MARKER);
    out.push('\n');
    out.push_str(
        "# The same [student] and [distill] on every participant; [train] and [refresh] are each one's own.\n",
    );
    for (name, value) in [
        ("student", serde_json::to_value(&cfg.student)?),
        ("teacher", serde_json::to_value(&cfg.teacher)?),
        ("train", serde_json::to_value(&cfg.train)?),
        ("distill", serde_json::to_value(&cfg.distill)?),
        ("refresh", serde_json::to_value(&cfg.refresh)?),
    ] {
        out.push_str(&table(name, &value)?);
        out.push('\n');
    }
    Ok(out)
}

/// The coordinator's and the participant's parts of a written file.
pub fn parts(text: &str) -> anyhow::Result<(&str, &str)> {
    let c = text.find(COORDINATOR_MARKER).context("no coordinator marker line")?;
    let p = text.find(PARTICIPANT_MARKER).context("no participant marker line")?;
    anyhow::ensure!(c < p, "the participant part comes before the coordinator part");
    Ok((&text[c..p], &text[p..]))
}

/// Reads `text` back through the coordinator's and the participant's own parsers (wrapped in the keys a node's
/// file has besides, for the catalog `dataset` with `participants`) and checks it says what `cfg` says.
pub fn check(text: &str, cfg: &ExperimentConfig, dataset: &str, participants: usize) -> anyhow::Result<()> {
    let (coordinator, participant) = parts(text)?;
    let data = format!("[data]\ndataset = {}\nparticipants = {participants}\n", string(dataset));
    let c = format!(
        "federation_dir = \"federation\"\nbind = \"127.0.0.1:4433\"\nstore = \"coordinator.sqlite\"\nquorum = 1\n\
         {coordinator}\n{data}"
    );
    let c = CoordinatorSettings::parse(&c, std::path::Path::new("."))
        .context("the tuned coordinator keys do not load as a coordinator.toml")?;
    let p = format!("kit = \"kit\"\nworkdir = \"work\"\nshard = 0\n{participant}\n{data}");
    let p = ParticipantSettings::parse(&p, std::path::Path::new("."))
        .context("the tuned tables do not load as a participant.toml")?;
    let same = c.rounds == cfg.rounds as u64
        && c.temperature == cfg.temperature
        && cfg.rules.first() == Some(&c.rule)
        && p.student.as_ref() == Some(&cfg.student)
        && p.teacher.as_ref() == Some(&cfg.teacher)
        && p.train.as_ref() == Some(&cfg.train)
        && p.distill.as_ref() == Some(&cfg.distill)
        && p.refresh == cfg.refresh;
    if !same {
        bail!("the tuned TOML loads, but not as the tuned configuration (a value did not survive the round trip)");
    }
    Ok(())
}

/// `[name]` with one `key = value` line per field of a JSON object (null fields left out).
fn table(name: &str, v: &Value) -> anyhow::Result<String> {
    let Value::Object(m) = v else {
        bail!("[{name}] is not a table");
    };
    let mut out = format!("[{name}]\n");
    for (k, v) in kind_first(m) {
        out.push_str(&format!("{k} = {}\n", value(v)?));
    }
    Ok(out)
}

/// The non-null fields of an object, a tagged enum's `kind` first (as the docs write `kind = "mlp"`).
fn kind_first(m: &serde_json::Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut fields: Vec<(&String, &Value)> = m.iter().filter(|(_, v)| !v.is_null()).collect();
    fields.sort_by_key(|(k, _)| k.as_str() != "kind");
    fields
}

/// A JSON value as a TOML value (objects as inline tables).
fn value(v: &Value) -> anyhow::Result<String> {
    Ok(match v {
        Value::Null => bail!("TOML has no null"),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => u.to_string(),
            (_, Some(i), _) => i.to_string(),
            (_, _, Some(f)) => float(f)?,
            _ => bail!("number {n} has no TOML form"),
        },
        Value::String(s) => string(s),
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(value).collect::<anyhow::Result<Vec<_>>>()?.join(", ")
        ),
        Value::Object(m) => {
            let fields: Vec<String> = kind_first(m)
                .into_iter()
                .map(|(k, v)| Ok(format!("{k} = {}", value(v)?)))
                .collect::<anyhow::Result<_>>()?;
            format!("{{ {} }}", fields.join(", "))
        }
    })
}

/// A TOML float that reads back as the same value: an f32 field's value in its short f32 form (0.1, not
/// 0.10000000149011612), always with a point or an exponent.
fn float(x: f64) -> anyhow::Result<String> {
    if !x.is_finite() {
        bail!("{x} has no TOML form a config may hold");
    }
    let short = x as f32;
    Ok(if f64::from(short) == x {
        format!("{short:?}")
    } else {
        format!("{x:?}")
    })
}

/// A TOML basic string (JSON's escapes are a subset of TOML's).
pub(crate) fn string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedistill_shared::data::{load, LoadOptions, Partition};
    use fedistill_shared::ml::distill::{ConfidenceWeighting, TemperatureSchedule};

    fn config(kind: &str) -> ExperimentConfig {
        let ds = load(kind, &LoadOptions::default()).unwrap();
        ExperimentConfig::defaults(&ds, 3, Partition::Dirichlet { alpha: 0.5 }, 1)
    }

    #[test]
    fn written_file_reads_back_through_both_parsers_as_the_same_configuration() {
        for dataset in ["digits", "breast-cancer"] {
            let mut cfg = config(dataset);
            cfg.temperature = 3.7;
            cfg.rounds = 15;
            cfg.distill.schedule = TemperatureSchedule::Cosine { start: 6.1, end: 1.3 };
            cfg.distill.confidence = ConfidenceWeighting::Entropy;
            cfg.distill.lr = 0.0023;
            cfg.refresh.w_kd = 0.61;
            cfg.train.weight_decay = 3.2e-5;
            let text = tuned_toml(&cfg, 359, &["Tuned by a test.".into(), "".into(), "Second line".into()]).unwrap();
            check(&text, &cfg, dataset, 3).unwrap_or_else(|e| panic!("{e:#}\n{text}"));
            assert!(text.starts_with("# Tuned by a test.\n#\n# Second line\n"), "{text}");
            assert!(text.contains("samples_per_round = 23\n"), "359 / 15 rows: {text}");
            assert!(text.contains("rule = \"confidence_weighted\"\n"), "{text}");
            assert!(
                text.contains("w_kd = 0.61\n") && text.contains("lr = 0.0023\n"),
                "{text}"
            );
            assert!(text.contains("schedule = { kind = \"cosine\", "), "{text}");
            assert!(text.contains("[student]\nkind = \"mlp\"\n"), "{text}");
            // Another value than the configuration's is caught.
            let mut other = cfg.clone();
            other.refresh.epochs += 1;
            assert!(format!("{:#}", check(&text, &other, dataset, 3).unwrap_err()).contains("round trip"));
        }
    }

    #[test]
    fn a_broken_file_is_refused_with_the_parser_reason() {
        let cfg = config("digits");
        let text = tuned_toml(&cfg, 359, &[]).unwrap();
        let e = check(&text.replace("[refresh]", "[refresh]\nbogus = 1"), &cfg, "digits", 3).unwrap_err();
        assert!(format!("{e:#}").contains("participant.toml"), "{e:#}");
        let e = check(&text.replace("rounds = 10", "rounds = 0"), &cfg, "digits", 3).unwrap_err();
        assert!(format!("{e:#}").contains("coordinator.toml"), "{e:#}");
        assert!(check(&text.replace(PARTICIPANT_MARKER, "#"), &cfg, "digits", 3).is_err());
    }

    #[test]
    fn floats_keep_their_short_form_and_their_value() {
        assert_eq!(float(f64::from(0.1f32)).unwrap(), "0.1");
        assert_eq!(float(2.0).unwrap(), "2.0");
        assert_eq!(float(0.003).unwrap(), "0.003");
        assert_eq!(float(1e-5).unwrap(), "1e-5");
        assert!(float(f64::NAN).is_err());
        assert_eq!(string("a \"b\""), "\"a \\\"b\\\"\"");
    }
}
