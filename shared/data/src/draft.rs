//! `fedistill task infer`: a task card drafted from the public transfer set, a CSV (with its label column,
//! optionally a regression target and modality blocks) or a `.ts` series file. The errors name the command's
//! flags, as the operator wrote them.

use std::path::Path;

use crate::{infer_card, infer_ts_card, DataError, InferOptions, Modality, PrivateFormat, TaskCard};

/// What to draft a card with (the flags of `fedistill task infer`).
#[derive(Debug, Clone, Default)]
pub struct DraftOptions {
    /// The label column (CSV only; a `.ts` file carries its labels).
    pub label: Option<String>,
    /// Field delimiter: one character, or `tab` (CSV).
    pub delimiter: String,
    /// The label is a number to predict (CSV only).
    pub regression: bool,
    /// Modality blocks, `NAME=COL,COL,...` or `NAME=rest` (CSV only).
    pub modalities: Vec<String>,
}

/// Why no card was drafted.
#[derive(Debug, thiserror::Error)]
pub enum DraftError {
    /// Reading or inferring the card failed.
    #[error(transparent)]
    Data(#[from] DataError),
    /// A flag that does not apply to this kind of public set, or is missing.
    #[error("{0}")]
    Flags(String),
    /// The modality blocks do not fit the card.
    #[error("--modality")]
    Modalities(#[source] DataError),
}

/// Drafts the task card of the public set `public` (a `.ts` file is told by its name, anything else is a
/// CSV).
pub fn draft_card(public: &Path, opts: &DraftOptions) -> Result<TaskCard, DraftError> {
    let flags = |m: String| Err(DraftError::Flags(m));
    let series = matches!(PrivateFormat::detect(public), Ok(PrivateFormat::Ts));
    match (series, &opts.label) {
        (true, None) if !opts.modalities.is_empty() => {
            flags("--modality groups the columns of a CSV public set; a .ts series file has none".into())
        }
        (true, _) if opts.regression => {
            flags("--regression applies to a CSV public set; a .ts series file carries class labels".into())
        }
        (true, None) => Ok(infer_ts_card(public)?),
        (true, Some(_)) => flags(format!(
            "--label names a CSV column; {} is a .ts series file, whose labels follow the last `:` of each line",
            public.display()
        )),
        (false, Some(label)) => {
            let infer = InferOptions {
                regression: opts.regression,
                ..InferOptions::from_args(&opts.delimiter)?
            };
            let card = infer_card(public, label, &infer)?;
            if opts.modalities.is_empty() {
                return Ok(card);
            }
            let blocks = modality_blocks(&card, &opts.modalities)?;
            card.with_modalities(blocks).map_err(DraftError::Modalities)
        }
        (false, None) => flags(format!(
            "--label COLUMN is required for a CSV public set ({})",
            public.display()
        )),
    }
}

/// The `--modality` flags as blocks of the drafted `card`'s features (`rest`: those no other block names).
fn modality_blocks(card: &TaskCard, specs: &[String]) -> Result<Vec<Modality>, DraftError> {
    let mut blocks: Vec<(String, Option<Vec<String>>)> = Vec::new();
    for f in specs {
        let (name, cols) = f
            .split_once('=')
            .ok_or_else(|| DraftError::Flags(format!("--modality {f:?}: expected NAME=COL,COL,... or NAME=rest")))?;
        let cols = cols.trim();
        blocks.push((
            name.trim().to_string(),
            (cols != "rest").then(|| cols.split(',').map(|c| c.trim().to_string()).collect()),
        ));
    }
    if blocks.iter().filter(|(_, c)| c.is_none()).count() > 1 {
        return Err(DraftError::Flags(
            "--modality: only one block can take the rest of the features".into(),
        ));
    }
    let named: Vec<&String> = blocks.iter().filter_map(|(_, c)| c.as_ref()).flatten().collect();
    let rest: Vec<String> = card
        .features
        .iter()
        .map(|f| f.name().to_string())
        .filter(|n| !named.contains(&n))
        .collect();
    Ok(blocks
        .into_iter()
        .map(|(name, cols)| Modality {
            name,
            features: cols.unwrap_or_else(|| rest.clone()),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("writes");
        path
    }

    fn opts(label: Option<&str>, modalities: &[&str]) -> DraftOptions {
        DraftOptions {
            label: label.map(str::to_string),
            delimiter: ",".into(),
            regression: false,
            modalities: modalities.iter().map(|m| m.to_string()).collect(),
        }
    }

    #[test]
    fn a_csv_card_is_drafted_in_modality_blocks_and_bad_flags_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let csv = write(dir.path(), "public.csv", "a,b,c,y\n1,2,3,x\n4,5,6,z\n7,8,9,x\n");
        let card = draft_card(&csv, &opts(Some("y"), &["first=c", "second=rest"])).expect("drafts");
        let names: Vec<&str> = card.features.iter().map(|f| f.name()).collect();
        assert_eq!(names, ["c", "a", "b"]);
        let err = |o: DraftOptions| draft_card(&csv, &o).expect_err("refused").to_string();
        assert_eq!(
            err(opts(None, &[])),
            format!("--label COLUMN is required for a CSV public set ({})", csv.display())
        );
        assert_eq!(
            err(opts(Some("y"), &["x"])),
            "--modality \"x\": expected NAME=COL,COL,... or NAME=rest"
        );
        assert_eq!(
            err(opts(Some("y"), &["p=rest", "q=rest"])),
            "--modality: only one block can take the rest of the features"
        );
    }

    #[test]
    fn a_series_file_takes_neither_a_label_nor_modalities_nor_regression() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ts = write(dir.path(), "public.ts", "");
        let err = |o: DraftOptions| draft_card(&ts, &o).expect_err("refused").to_string();
        assert!(err(opts(Some("y"), &[])).starts_with("--label names a CSV column;"));
        assert!(err(opts(None, &["a=rest"])).starts_with("--modality groups the columns"));
        let regression = DraftOptions {
            regression: true,
            ..opts(None, &[])
        };
        assert!(err(regression).starts_with("--regression applies to a CSV public set"));
    }
}
