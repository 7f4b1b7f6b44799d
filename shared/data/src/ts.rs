//! Series in the `.ts` text format of sktime and aeon (the UCR/UEA archives' distribution format), read
//! against a sequence task card (`[sequence]`), and written back for the demo's files.
//!
//! A file is `#` comment lines, `@` header lines (`@problemName`, `@timeStamps`, `@missing`,
//! `@univariate`, `@dimensions`, `@equalLength`, `@seriesLength`, `@classLabel true|false LABELS...`),
//! then `@data` and one series per line: its dimensions separated by `:`, each a comma-separated list of
//! values, and with `@classLabel true` the class text after the last `:`. Every series must have the
//! card's channels and length (a ragged series, a missing value `?` or `NaN`, time stamps and regression
//! targets are refused with the line that holds them); values are stored channel-major and normalized as
//! the card says.

use std::fmt::Write as _;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::bytes::{maybe_gunzip, read_file};
use crate::private::LoadReport;
use crate::task::{Label, PublicFormat, PublicSet, SequenceShape, SeriesNorm, TaskCard, CARD_VERSION};
use crate::{DataError, DataKind, Dataset};

/// Largest number of series one file may hold (bounds memory before values are parsed).
pub const MAX_SERIES: usize = 10_000_000;

/// What a `.ts` file holds, before it is checked against a card.
#[derive(Debug, Clone, PartialEq)]
pub struct TsFile {
    /// `@problemName`, when given.
    pub problem: Option<String>,
    /// The class texts `@classLabel true` lists (empty when the file has no labels).
    pub header_classes: Vec<String>,
    /// Whether the series carry a class label.
    pub labelled: bool,
    /// Per series: its dimensions (each a list of values) and its label text (when labelled), with the
    /// 1-based line it is on.
    pub series: Vec<TsSeries>,
}

/// One series of a `.ts` file.
#[derive(Debug, Clone, PartialEq)]
pub struct TsSeries {
    /// 1-based line number in the file.
    pub line: u64,
    /// One list of values per dimension (channel).
    pub dims: Vec<Vec<f32>>,
    /// The class text after the last `:` (labelled files).
    pub label: Option<String>,
}

/// A `DataError::Series` (the series readers' error: file, line, what was expected, what was found).
pub(crate) fn err(file: &str, line: u64, expected: impl Into<String>, found: impl Into<String>) -> DataError {
    DataError::Series {
        file: file.to_string(),
        line,
        expected: expected.into(),
        found: found.into(),
    }
}

fn flag(file: &str, line: u64, tag: &str, value: Option<&str>) -> Result<bool, DataError> {
    match value.map(str::to_ascii_lowercase).as_deref() {
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        other => Err(err(
            file,
            line,
            format!("`{tag} true` or `{tag} false`"),
            format!("`{tag} {}`", other.unwrap_or("")),
        )),
    }
}

/// Parses the text of a `.ts` file (`file` names it in errors). Structure only: shapes are checked by
/// [`series_dataset`] against a card.
pub fn parse_ts(text: &str, file: &str) -> Result<TsFile, DataError> {
    let mut problem = None;
    let mut header_classes = Vec::new();
    let mut labelled = None;
    let mut in_data = false;
    let mut series = Vec::new();
    for (k, raw) in text.lines().enumerate() {
        let line = k as u64 + 1;
        let t = raw.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if !in_data {
            let mut words = t.split_whitespace();
            let tag = words.next().unwrap_or("").to_ascii_lowercase();
            match tag.as_str() {
                "@problemname" => problem = words.next().map(str::to_string),
                "@timestamps" => {
                    if flag(file, line, "@timeStamps", words.next())? {
                        return Err(err(
                            file,
                            line,
                            "series without time stamps (`@timeStamps false`)",
                            "`@timeStamps true`: time-stamped series are not supported; resample them to equal steps",
                        ));
                    }
                }
                "@classlabel" => {
                    labelled = Some(flag(file, line, "@classLabel", words.next())?);
                    header_classes = words.map(str::to_string).collect();
                }
                "@targetlabel" => {
                    if flag(file, line, "@targetLabel", words.next())? {
                        return Err(err(
                            file,
                            line,
                            "a classification file (`@classLabel true ...`)",
                            "`@targetLabel true`: regression targets are not a class",
                        ));
                    }
                }
                "@missing" | "@univariate" | "@equallength" | "@serieslength" | "@dimensions" | "@dimension" => {}
                "@data" => in_data = true,
                _ => {
                    return Err(err(
                        file,
                        line,
                        "a `#` comment, an `@` header line or `@data`",
                        format!("`{}`", truncate(t)),
                    ))
                }
            }
            continue;
        }
        if series.len() >= MAX_SERIES {
            return Err(err(file, line, format!("at most {MAX_SERIES} series"), "more"));
        }
        let labelled = labelled.unwrap_or(false);
        let mut fields: Vec<&str> = t.split(':').collect();
        let label = if labelled {
            let l = fields.pop().unwrap_or("").trim();
            if l.is_empty() || fields.is_empty() {
                return Err(err(
                    file,
                    line,
                    "values, then `:` and the class label",
                    "no class label",
                ));
            }
            Some(l.to_string())
        } else {
            None
        };
        let mut dims = Vec::with_capacity(fields.len());
        for (d, field) in fields.iter().enumerate() {
            let mut values = Vec::new();
            for (step, cell) in field.split(',').enumerate() {
                let cell = cell.trim();
                let v = match cell {
                    "?" | "NaN" | "nan" | "" => {
                        return Err(err(
                            file,
                            line,
                            format!("a value at step {step} of dimension {d}"),
                            format!(
                                "{}: missing values are not supported, fill or drop the series",
                                if cell.is_empty() {
                                    "an empty cell"
                                } else {
                                    "a missing value"
                                }
                            ),
                        ))
                    }
                    _ => cell.parse::<f32>().ok().filter(|v| v.is_finite()).ok_or_else(|| {
                        err(
                            file,
                            line,
                            format!("a finite number at step {step} of dimension {d}"),
                            format!("`{}`", truncate(cell)),
                        )
                    })?,
                };
                values.push(v);
            }
            dims.push(values);
        }
        series.push(TsSeries { line, dims, label });
    }
    if !in_data {
        return Err(err(file, 0, "an `@data` line before the series", "none"));
    }
    Ok(TsFile {
        problem,
        header_classes,
        labelled: labelled.unwrap_or(false),
        series,
    })
}

fn truncate(s: &str) -> String {
    if s.chars().count() > 60 {
        format!("{}...", s.chars().take(60).collect::<String>())
    } else {
        s.to_string()
    }
}

/// Reads and parses a `.ts` file (gzip-compressed or not).
pub fn read_ts(path: &Path) -> Result<TsFile, DataError> {
    let file = path.display().to_string();
    let bytes = read_file(path)?;
    let bytes = maybe_gunzip(&bytes, &file)?;
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        err(
            &file,
            0,
            "UTF-8 text",
            format!("invalid UTF-8 at byte {}", e.valid_up_to()),
        )
    })?;
    parse_ts(text, &file)
}

fn sequence_shape(card: &TaskCard, file: &str) -> Result<SequenceShape, DataError> {
    if card.sequence.as_ref().is_some_and(|s| s.windows.is_some()) {
        return Err(DataError::Card {
            file: file.to_string(),
            field: "sequence.windows".into(),
            problem: format!(
                "task `{}` cuts windows from CSV files of long series, not .ts files",
                card.name
            ),
        });
    }
    card.sequence.clone().ok_or_else(|| DataError::Card {
        file: file.to_string(),
        field: "sequence".into(),
        problem: format!(
            "`{}` is a series file, but task `{}` declares no [sequence]",
            file, card.name
        ),
    })
}

/// Checks `ts` against `card` and returns its series as a dataset (channel-major, normalized as the card
/// says). `need_labels`: refuse a file without class labels (private and benchmark files); otherwise every
/// label of an unlabelled file is 0 and the second value is `false`.
pub fn series_dataset(
    ts: &TsFile,
    card: &TaskCard,
    file: &str,
    need_labels: bool,
) -> Result<(Dataset, bool), DataError> {
    let shape = sequence_shape(card, file)?;
    if need_labels && !ts.labelled {
        return Err(err(
            file,
            0,
            "labelled series (`@classLabel true ...`)",
            "a file without class labels",
        ));
    }
    for c in &ts.header_classes {
        if !card.classes().contains(c) {
            return Err(err(
                file,
                0,
                format!("classes among the card's ({})", card.classes().join(", ")),
                format!("class `{c}` in `@classLabel`"),
            ));
        }
    }
    if ts.series.is_empty() {
        return Err(err(file, 0, "at least one series after `@data`", "none"));
    }
    let (channels, length) = (shape.channels, shape.length);
    let mut features = Vec::with_capacity(ts.series.len().saturating_mul(channels * length));
    let mut labels = Vec::with_capacity(ts.series.len());
    for s in &ts.series {
        if s.dims.len() != channels {
            return Err(err(
                file,
                s.line,
                format!("{channels} dimension(s) as the task card says"),
                format!("{} dimension(s)", s.dims.len()),
            ));
        }
        for (d, values) in s.dims.iter().enumerate() {
            if values.len() != length {
                return Err(err(
                    file,
                    s.line,
                    format!("{length} values in dimension {d}, the task card's series length"),
                    format!("{} values (a ragged series)", values.len()),
                ));
            }
            let start = features.len();
            features.extend_from_slice(values);
            shape.normalize_channel(d, &mut features[start..]);
        }
        let label = match &s.label {
            Some(text) => card.classes().iter().position(|c| c == text).ok_or_else(|| {
                err(
                    file,
                    s.line,
                    format!("a class of the card ({})", card.classes().join(", ")),
                    format!("class `{text}`"),
                )
            })? as u32,
            None => 0,
        };
        labels.push(label);
    }
    let ds = Dataset::new(
        card.name.clone(),
        features,
        labels,
        channels * length,
        DataKind::Sequence { channels, length },
        card.classes().to_vec(),
    )?;
    Ok((ds, ts.labelled))
}

/// Reads an institution's own labelled series file against a sequence card.
pub fn read_private_ts(path: &Path, card: &TaskCard) -> Result<(Dataset, LoadReport), DataError> {
    let file = path.display().to_string();
    sequence_shape(card, &file)?;
    let ts = read_ts(path)?;
    let (ds, _) = series_dataset(&ts, card, &file, true)?;
    let report = LoadReport::for_classes(file, card.classes(), &ds.labels);
    Ok((ds, report))
}

/// Reads the public set of a sequence card (labels optional: returns whether they are real).
pub fn read_public_ts(path: &Path, card: &TaskCard) -> Result<(Dataset, bool), DataError> {
    let file = path.display().to_string();
    sequence_shape(card, &file)?;
    let ts = read_ts(path)?;
    series_dataset(&ts, card, &file, false)
}

/// Writes `ds` (a sequence dataset) as `.ts` text; `labelled` adds each series' class text. Values are
/// written in Rust's shortest round-trip form, so reading the text back gives the same `f32`s.
pub fn write_ts(ds: &Dataset, problem: &str, labelled: bool) -> Result<String, DataError> {
    let DataKind::Sequence { channels, length } = ds.kind else {
        return Err(DataError::InvalidDataset {
            name: ds.name.clone(),
            detail: "only a sequence dataset can be written as .ts".into(),
        });
    };
    let mut out = String::new();
    let problem: String = problem.chars().filter(|c| !c.is_whitespace()).collect();
    let _ = writeln!(out, "@problemName {problem}");
    let _ = writeln!(out, "@timeStamps false\n@missing false");
    let _ = writeln!(out, "@univariate {}", channels == 1);
    if channels > 1 {
        let _ = writeln!(out, "@dimensions {channels}");
    }
    let _ = writeln!(out, "@equalLength true\n@seriesLength {length}");
    if labelled {
        let _ = writeln!(out, "@classLabel true {}", ds.class_names.join(" "));
    } else {
        let _ = writeln!(out, "@classLabel false");
    }
    out.push_str("@data\n");
    for i in 0..ds.n {
        let row = ds.row(i);
        for c in 0..channels {
            if c > 0 {
                out.push(':');
            }
            for (t, v) in row[c * length..(c + 1) * length].iter().enumerate() {
                if t > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{v}");
            }
        }
        if labelled {
            out.push(':');
            out.push_str(&ds.class_names[ds.labels[i] as usize]);
        }
        out.push('\n');
    }
    Ok(out)
}

/// Drafts a sequence card from a public `.ts` file: channels and length from its first series (every
/// series must agree), classes from `@classLabel` (or the labels seen, sorted numerically when all are
/// numbers), `normalize = "none"`, and the file's SHA-256 and series count. The task name is the file's
/// `@problemName` or stem.
pub fn infer_ts_card(path: &Path) -> Result<TaskCard, DataError> {
    let file = path.display().to_string();
    let bytes = read_file(path)?;
    let sha = hex::encode(Sha256::digest(&bytes));
    let ts = read_ts(path)?;
    let first = ts
        .series
        .first()
        .ok_or_else(|| err(&file, 0, "at least one series after `@data`", "none"))?;
    let (channels, length) = (first.dims.len(), first.dims.first().map_or(0, Vec::len));
    let mut classes = ts.header_classes.clone();
    if classes.is_empty() {
        for s in &ts.series {
            if let Some(l) = &s.label {
                if !classes.contains(l) {
                    classes.push(l.clone());
                }
            }
        }
        if classes.iter().all(|c| c.parse::<f64>().is_ok()) {
            classes.sort_by(|a, b| {
                a.parse::<f64>()
                    .unwrap_or(0.0)
                    .total_cmp(&b.parse::<f64>().unwrap_or(0.0))
            });
        } else {
            classes.sort();
        }
    }
    let name = ts.problem.clone().unwrap_or_else(|| {
        let stem = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stem = stem.strip_suffix(".gz").unwrap_or(&stem).to_string();
        stem.strip_suffix(".ts").unwrap_or(&stem).to_string()
    });
    let card = TaskCard {
        name,
        version: CARD_VERSION,
        label: Label { column: None, classes },
        features: Vec::new(),
        modalities: Vec::new(),
        image: None,
        sequence: Some(SequenceShape {
            channels,
            length,
            normalize: SeriesNorm::None,
            mean: Vec::new(),
            std: Vec::new(),
            windows: None,
        }),
        preprocessing: None,
        public: PublicSet {
            sha256: sha,
            rows: ts.series.len() as u64,
            format: PublicFormat::Ts,
        },
        benchmark: None,
        augment: None,
        regression: None,
    };
    card.check(&file)?;
    // Every series must fit the drafted shape (and every label a class).
    series_dataset(&ts, &card, &file, false)?;
    Ok(card)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn card(channels: usize, length: usize, normalize: &str) -> TaskCard {
        TaskCard::from_toml_str(
            &format!(
                "name = \"power\"\nversion = 1\n[label]\nclasses = [\"1\", \"2\"]\n[sequence]\nchannels = {channels}\n\
                 length = {length}\nnormalize = \"{normalize}\"\n[public]\nsha256 = \"{}\"\nrows = 3\nformat = \"ts\"\n",
                "ab".repeat(32)
            ),
            "power.toml",
        )
        .expect("the test card is valid")
    }

    const TWO: &str = "# a comment\n@problemName Tiny\n@timeStamps false\n@univariate true\n@equalLength true\n\
                       @seriesLength 3\n@classLabel true 1 2\n@data\n1,2,3:1\n\n-1,0.5,2.25:2\n";

    #[test]
    fn reads_univariate_series_with_labels() {
        let ts = parse_ts(TWO, "tiny.ts").expect("parses");
        assert_eq!(ts.problem.as_deref(), Some("Tiny"));
        assert_eq!(ts.header_classes, vec!["1", "2"]);
        assert_eq!(ts.series.len(), 2);
        assert_eq!(ts.series[1].line, 11);
        let (ds, labelled) = series_dataset(&ts, &card(1, 3, "none"), "tiny.ts", true).expect("fits");
        assert!(labelled);
        assert_eq!(ds.features, vec![1.0, 2.0, 3.0, -1.0, 0.5, 2.25]);
        assert_eq!(ds.labels, vec![0, 1]);
        assert_eq!(ds.kind, DataKind::Sequence { channels: 1, length: 3 });
    }

    #[test]
    fn multivariate_series_are_channel_major_and_normalized_per_channel() {
        let text = "@classLabel true 1 2\n@data\n1,2,3:10,10,10:2\n";
        let ts = parse_ts(text, "m.ts").expect("parses");
        let (ds, _) = series_dataset(&ts, &card(2, 3, "series"), "m.ts", true).expect("fits");
        let s = (1.5f32).sqrt(); // (x - 2) / sqrt(2/3)
        let want = [-s, 0.0, s, 0.0, 0.0, 0.0];
        for (a, b) in ds.features.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{:?}", ds.features);
        }
        assert_eq!(ds.labels, vec![1]);
    }

    #[test]
    fn bad_series_are_refused_with_their_line() {
        let cases: [(&str, &str); 9] = [
            (
                "@classLabel true 1 2\n@data\n1,2,3:1\n1,2:1\n",
                "tiny.ts: line 4: expected 3 values in dimension 0, the task card's series length, found 2 values (a ragged series)",
            ),
            (
                "@classLabel true 1 2\n@data\n1,?,3:1\n",
                "line 3: expected a value at step 1 of dimension 0, found a missing value",
            ),
            ("@classLabel true 1 2\n@data\n1,x,3:1\n", "expected a finite number at step 1 of dimension 0, found `x`"),
            ("@classLabel true 1 2\n@data\n1,2,3:7\n", "expected a class of the card (1, 2), found class `7`"),
            ("@classLabel true 1 3\n@data\n1,2,3:1\n", "found class `3` in `@classLabel`"),
            ("@classLabel true 1 2\n@data\n1,2,3:1,2,3:1\n", "expected 1 dimension(s) as the task card says, found 2"),
            ("@timeStamps true\n@data\n", "time-stamped series are not supported"),
            ("@classLabel true 1 2\n1,2,3:1\n", "expected a `#` comment, an `@` header line or `@data`"),
            ("@classLabel true 1 2\n", "expected an `@data` line before the series"),
        ];
        for (text, want) in cases {
            let got = parse_ts(text, "tiny.ts")
                .and_then(|ts| series_dataset(&ts, &card(1, 3, "none"), "tiny.ts", true))
                .expect_err(text)
                .to_string();
            assert!(got.contains(want), "{text:?}: {got}");
        }
        // A private file must carry labels; the public set need not.
        let unlabelled = parse_ts("@classLabel false\n@data\n1,2,3\n", "p.ts").expect("parses");
        let got = series_dataset(&unlabelled, &card(1, 3, "none"), "p.ts", true)
            .expect_err("no labels")
            .to_string();
        assert!(got.contains("labelled series"), "{got}");
        let (ds, labelled) = series_dataset(&unlabelled, &card(1, 3, "none"), "p.ts", false).expect("public");
        assert!(!labelled);
        assert_eq!(ds.labels, vec![0]);
    }

    #[test]
    fn written_series_read_back_exactly() {
        let ts = parse_ts(TWO, "tiny.ts").expect("parses");
        let (ds, _) = series_dataset(&ts, &card(1, 3, "none"), "tiny.ts", true).expect("fits");
        let text = write_ts(&ds, "Tiny one", true).expect("a sequence");
        let back = parse_ts(&text, "back.ts").expect("parses");
        let (again, _) = series_dataset(&back, &card(1, 3, "none"), "back.ts", true).expect("fits");
        assert_eq!(again, ds);
        assert_eq!(back.problem.as_deref(), Some("Tinyone"));
        let text = write_ts(&ds, "Tiny", false).expect("a sequence");
        let (public, labelled) = series_dataset(
            &parse_ts(&text, "p.ts").expect("parses"),
            &card(1, 3, "none"),
            "p.ts",
            false,
        )
        .expect("fits");
        assert!(!labelled);
        assert_eq!(public.features, ds.features);
    }

    #[test]
    fn a_card_is_drafted_from_a_series_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("Tiny_TRAIN.ts");
        std::fs::write(&path, TWO).expect("write");
        let card = infer_ts_card(&path).expect("drafts");
        assert_eq!(card.name, "Tiny");
        assert_eq!(card.classes(), ["1", "2"]);
        assert_eq!(
            card.sequence,
            Some(SequenceShape {
                channels: 1,
                length: 3,
                normalize: SeriesNorm::None,
                mean: Vec::new(),
                std: Vec::new(),
                windows: None,
            })
        );
        assert_eq!(card.public.rows, 2);
        assert_eq!(card.public.sha256, hex::encode(Sha256::digest(TWO.as_bytes())));
        assert_eq!(card.input_dim(), 3);
        assert_eq!(card.feature_names(), ["t0", "t1", "t2"]);
        // The drafted card reads the file it came from.
        let (ds, labelled) = read_public_ts(&path, &card).expect("reads");
        assert!(labelled);
        assert_eq!(ds.n, 2);
        let ragged = dir.path().join("ragged.ts");
        std::fs::write(&ragged, "@classLabel true a b\n@data\n1,2,3:a\n1,2:b\n").expect("write");
        let got = infer_ts_card(&ragged).expect_err("ragged").to_string();
        assert!(got.contains("line 4") && got.contains("ragged"), "{got}");
    }
}
