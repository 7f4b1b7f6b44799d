//! The config file of `fedistill quantize` / `fedistill compare`: the student's `[model]` plus optional
//! `[qat]` and `[ptq]` tables, so that the student TOML of `fedistill local` can be passed as is.

use serde::Deserialize;

use crate::error::{MlError, Result};
use crate::model::ModelConfig;

use super::ptq::PtqOptions;
use super::qat::QatConfig;

/// Parsed quantization config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantizeFile {
    /// Student architecture (an MLP).
    pub model: ModelConfig,
    /// QAT settings (used with `--qat`).
    #[serde(default)]
    pub qat: Option<QatConfig>,
    /// PTQ settings.
    #[serde(default)]
    pub ptq: Option<PtqOptions>,
}

/// Parses the TOML text; top-level tables other than `model`, `qat`, `ptq` (e.g. a student file's
/// `[distill]`) are ignored, the three known ones are checked strictly. `what` names the file in errors.
pub fn parse_quantize_file(text: &str, what: &str) -> Result<QuantizeFile> {
    let bad = |e: String| MlError::InvalidConfig(format!("{what}: {e}"));
    let mut table: toml::Table = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
    table.retain(|k, _| k == "model" || k == "qat" || k == "ptq");
    QuantizeFile::deserialize(toml::Value::Table(table)).map_err(|e| bad(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn student_file_with_extra_tables_parses() {
        let f = parse_quantize_file(
            "[model]\nkind = \"mlp\"\nhidden = [128]\n[distill]\nepochs_per_round = 3\n[qat]\nepochs = 4\n",
            "s.toml",
        )
        .expect("parse");
        assert_eq!(f.model, ModelConfig::Mlp { hidden: vec![128] });
        assert_eq!(f.qat.map(|q| q.epochs), Some(4));
    }

    #[test]
    fn bad_files_name_the_problem() {
        let e = parse_quantize_file("[model]\nkind = \"mlp\"\nhiden = [1]\n", "s.toml").expect_err("typo");
        assert!(
            e.to_string().contains("s.toml") && e.to_string().contains("hiden"),
            "{e}"
        );
        let e = parse_quantize_file("[qat]\nepochs = 1\n", "s.toml").expect_err("no model");
        assert!(e.to_string().contains("model"), "{e}");
        let e = parse_quantize_file("[model]\nkind = \"mlp\"\nhidden = [8]\n[qat]\nepoch = 1\n", "s.toml")
            .expect_err("typo in qat");
        assert!(e.to_string().contains("epoch"), "{e}");
    }
}
