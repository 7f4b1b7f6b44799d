//! Drafting a task card from the PUBLIC transfer set (`fedistill task infer`): column kinds,
//! levels, classes and the imputation/scaling statistics all come from that one public file, with
//! its SHA-256 and row count, so the operator starts from a card every participant can check.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use csv::ByteRecord;
use sha2::{Digest, Sha256};

use crate::private::{csv_reader, next_record, open_csv, read_header, row_error, ProblemKind, HEADER, WHOLE};
use crate::stats::{fit_numeric, mode};
use crate::tabular::{Column, TabularSchema};
use crate::task::{
    is_missing, Feature, FeatureStats, Impute, Label, Preprocessing, PublicFormat, PublicSet, Regression, Scale,
    TaskCard, UnknownLevel, CARD_VERSION,
};
use crate::{CsvOptions, DataError};

/// Default cap on the distinct values of a categorical column (and on the classes).
pub const DEFAULT_MAX_LEVELS: usize = 64;

/// How `infer_card` reads the public file and which preprocessing it declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InferOptions {
    /// Field delimiter.
    pub delimiter: u8,
    /// A text column with more distinct values than this is refused (naming the column).
    pub max_levels: usize,
    /// How fills are computed (and declared in the card).
    pub impute: Impute,
    /// How numeric and ordinal inputs are scaled (declared in the card).
    pub scale: Scale,
    /// The label is a number to predict: the card gets `[regression]` with the public targets' mean and
    /// standard deviation (bounds and monotone constraints are the operator's to add) and no classes.
    pub regression: bool,
}

impl Default for InferOptions {
    fn default() -> Self {
        InferOptions {
            delimiter: b',',
            max_levels: DEFAULT_MAX_LEVELS,
            impute: Impute::Median,
            scale: Scale::Standard,
            regression: false,
        }
    }
}

impl InferOptions {
    /// The defaults with a delimiter flag parsed by `CsvOptions::parse_delimiter`.
    pub fn from_args(delimiter: &str) -> Result<InferOptions, DataError> {
        Ok(InferOptions {
            delimiter: CsvOptions::parse_delimiter(delimiter)?,
            ..InferOptions::default()
        })
    }
}

/// Feeds every byte read through it into SHA-256.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// What one column looked like so far.
#[derive(Debug, Default)]
struct ColumnScan {
    /// Every value in row order (NaN = missing) while the column is still numeric.
    values: Option<Vec<f64>>,
    /// Distinct texts and their counts, up to the cap.
    levels: BTreeMap<String, usize>,
    /// More distinct texts than the cap.
    overflow: bool,
    /// The first cell that is not a finite number (line, text).
    first_text: Option<(u64, String)>,
}

impl ColumnScan {
    fn new() -> ColumnScan {
        ColumnScan {
            values: Some(Vec::new()),
            ..ColumnScan::default()
        }
    }

    fn observe(&mut self, cell: &str, line: u64, max_levels: usize) {
        if is_missing(cell) {
            if let Some(v) = self.values.as_mut() {
                v.push(f64::NAN);
            }
            return;
        }
        if let Some(v) = self.values.as_mut() {
            match cell.parse::<f64>() {
                Ok(x) if x.is_finite() => v.push(x),
                _ => {
                    self.values = None;
                    self.first_text = Some((line, cell.to_string()));
                }
            }
        }
        if !self.overflow {
            *self.levels.entry(cell.to_string()).or_insert(0) += 1;
            if self.levels.len() > max_levels {
                self.overflow = true;
                self.levels.clear();
            }
        }
    }

    fn present(&self) -> bool {
        !self.levels.is_empty() || self.overflow || self.values.as_ref().is_some_and(|v| v.iter().any(|x| !x.is_nan()))
    }
}

/// Drafts a card from the public CSV `public_csv` whose label column is `label`.
///
/// - Every other column is a feature: `numeric` when every present cell parses as a finite
///   number, else `categorical` with its distinct texts as levels (sorted by bytes,
///   `unknown = "refuse"`), refused when there are more than `max_levels`. Ordinal columns are
///   never inferred: the operator edits the card.
/// - Classes: the distinct label texts, sorted numerically when all are numbers, else by bytes.
/// - Statistics (fill per `opts.impute`, mean and population std after imputation) are computed
///   from this file only, exactly as `split()` fits them; categorical fills are the most frequent
///   level.
/// - `[public]`: the file's SHA-256 and data row count; the task name is the file stem.
///
/// The file is streamed once; numeric columns keep their values for the median.
pub fn infer_card(public_csv: &Path, label: &str, opts: &InferOptions) -> Result<TaskCard, DataError> {
    let file = public_csv.display().to_string();
    let f = File::open(public_csv).map_err(|source| DataError::Io {
        file: file.clone(),
        source,
    })?;
    let hashing = Hashing {
        inner: f,
        hasher: Sha256::new(),
    };
    let mut rdr = csv_reader(open_csv(hashing, &file)?, opts.delimiter);
    let headers = read_header(&mut rdr, &file)?;
    let label_field = headers.iter().position(|h| h == label).ok_or_else(|| {
        row_error(
            &file,
            1,
            HEADER,
            ProblemKind::Header,
            format!("no label column `{label}` in the header ({})", headers.join(", ")),
        )
    })?;
    let mut cols: Vec<ColumnScan> = headers.iter().map(|_| ColumnScan::new()).collect();
    let mut rec = ByteRecord::new();
    let mut rows = 0u64;
    let mut last_line = 1;
    while let Some(line) = next_record(&mut rdr, &mut rec, &file)? {
        last_line = line;
        if rec.len() != headers.len() {
            let column = headers.get(rec.len()).map_or(WHOLE, String::as_str);
            return Err(row_error(
                &file,
                line,
                column,
                ProblemKind::RaggedRow,
                format!("the row has {} fields, the header {}", rec.len(), headers.len()),
            ));
        }
        for (k, raw) in rec.iter().enumerate() {
            let cell = std::str::from_utf8(raw)
                .map_err(|_| {
                    row_error(
                        &file,
                        line,
                        &headers[k],
                        ProblemKind::NotUtf8,
                        "the cell is not UTF-8".into(),
                    )
                })?
                .trim();
            if k == label_field && is_missing(cell) {
                return Err(row_error(
                    &file,
                    line,
                    &headers[k],
                    ProblemKind::MissingLabel,
                    "the label is missing".into(),
                ));
            }
            cols[k].observe(cell, line, opts.max_levels);
        }
        rows += 1;
    }
    if rows == 0 {
        return Err(row_error(
            &file,
            last_line + 1,
            WHOLE,
            ProblemKind::NoRows,
            "no data rows after the header".into(),
        ));
    }
    // The digest covers every byte of the file, also any the parser did not need.
    let mut rest = rdr.into_inner();
    std::io::copy(&mut rest, &mut std::io::sink()).map_err(|source| DataError::Io {
        file: file.clone(),
        source,
    })?;
    let sha256 = hex::encode(rest.into_inner().hasher.finalize());

    let too_many = |k: usize, col: &ColumnScan, what: &str| {
        let (line, text) = col.first_text.clone().unwrap_or((1, String::new()));
        row_error(
            &file,
            line,
            &headers[k],
            ProblemKind::TooManyLevels,
            format!(
                "{what} `{}` is not numeric (this line holds `{text}`) and has more than {} distinct values; \
                 fix the cell or drop the column",
                headers[k], opts.max_levels
            ),
        )
    };
    let label_col = &cols[label_field];
    let regression = match (&label_col.values, opts.regression) {
        (Some(values), true) => {
            let fit = fit_numeric(values, Impute::Mean);
            Some(Regression {
                mean: fit.mean,
                std: if fit.std > 0.0 { fit.std } else { 1.0 },
                min: None,
                max: None,
                monotone: Vec::new(),
            })
        }
        (None, true) => {
            let (line, text) = label_col.first_text.clone().unwrap_or((1, String::new()));
            return Err(row_error(
                &file,
                line,
                label,
                ProblemKind::NotANumber,
                format!("the regression target `{label}` holds `{text}`, which is not a number"),
            ));
        }
        (_, false) => None,
    };
    if label_col.overflow && regression.is_none() {
        return Err(too_many(label_field, label_col, "the label column"));
    }
    let mut classes: Vec<String> = match regression {
        Some(_) => Vec::new(),
        None => label_col.levels.keys().cloned().collect(),
    };
    if classes.iter().all(|c| c.parse::<f64>().is_ok()) {
        classes.sort_by(|a, b| {
            let (x, y) = (a.parse::<f64>().unwrap_or(0.0), b.parse::<f64>().unwrap_or(0.0));
            x.total_cmp(&y).then_with(|| a.cmp(b))
        });
    }

    let mut features = Vec::new();
    let mut stats = Vec::new();
    for (k, col) in cols.iter().enumerate() {
        if k == label_field {
            continue;
        }
        let name = headers[k].clone();
        if !col.present() {
            return Err(row_error(
                &file,
                1,
                &name,
                ProblemKind::Header,
                "every cell of this column is missing: drop it or declare it in the card by hand".into(),
            ));
        }
        if let Some(values) = &col.values {
            let fit = fit_numeric(values, opts.impute);
            features.push(Feature::Numeric { name: name.clone() });
            stats.push(FeatureStats {
                name,
                fill: Some(fit.fill),
                mean: Some(fit.mean),
                std: Some(fit.std),
                fill_level: None,
            });
        } else if col.overflow {
            return Err(too_many(k, col, "column"));
        } else {
            let levels: Vec<String> = col.levels.keys().cloned().collect();
            let counts: Vec<usize> = col.levels.values().copied().collect();
            if opts.impute != Impute::Zero {
                stats.push(FeatureStats {
                    name: name.clone(),
                    fill: None,
                    mean: None,
                    std: None,
                    fill_level: Some(levels[mode(&counts)].clone()),
                });
            }
            features.push(Feature::Categorical {
                name,
                levels,
                unknown: UnknownLevel::Refuse,
            });
        }
    }
    let card = TaskCard {
        name: public_csv
            .file_stem()
            .map_or_else(|| "task".to_string(), |s| s.to_string_lossy().into_owned()),
        version: CARD_VERSION,
        label: Label {
            column: Some(label.to_string()),
            classes,
        },
        features,
        modalities: Vec::new(),
        image: None,
        sequence: None,
        benchmark: None,
        augment: None,
        regression,
        preprocessing: Some(Preprocessing {
            impute: opts.impute,
            scale: opts.scale,
            stats,
        }),
        public: PublicSet {
            sha256,
            rows,
            format: PublicFormat::Csv,
        },
    };
    card.check(&format!("card inferred from {file}"))?;
    Ok(card)
}

/// The card of a simulated tabular task (`fedistill demo`, the benchmarks) drafted from the public CSV
/// the simulation wrote: `infer_card` with the default options (median fills, standard scaling), so every
/// statistic comes from that file's rows and nothing else, then reviewed against the dataset's `schema`
/// the way an operator reviews a draft: the columns must come out with the schema's names and kinds, each
/// categorical then lists the schema's whole vocabulary in the schema's order (a level the public rows
/// happen to lack is still a level), the classes follow the schema's order, and the task is named after
/// the dataset. The statistics are the inferred ones, untouched.
pub fn infer_schema_card(public_csv: &Path, schema: &TabularSchema) -> Result<TaskCard, DataError> {
    let file = format!("card inferred from {}", public_csv.display());
    let card_error = |field: String, problem: String| DataError::Card {
        file: file.clone(),
        field,
        problem,
    };
    let label = schema.label_column().ok_or_else(|| {
        card_error(
            "label.column".into(),
            format!("the schema of `{}` has no label column", schema.dataset),
        )
    })?;
    let mut card = infer_card(public_csv, label, &InferOptions::default())?;
    let mut features = Vec::with_capacity(card.features.len());
    for column in &schema.columns {
        let (name, levels) = match column {
            Column::Numeric(name) => (name, None),
            Column::Categorical { name, levels } => (name, Some(levels)),
            Column::Label { .. } => continue,
        };
        let k = features.len();
        let inferred = card.features.get(k);
        match (inferred, levels) {
            (Some(Feature::Numeric { name: got }), None) if got == name => {
                features.push(Feature::Numeric { name: name.clone() })
            }
            (
                Some(Feature::Categorical {
                    name: got,
                    levels: seen,
                    ..
                }),
                Some(levels),
            ) if got == name => {
                if let Some(level) = seen.iter().find(|l| !levels.contains(l)) {
                    return Err(card_error(
                        format!("features[{k}].levels"),
                        format!("`{level}` is not a level of `{name}` ({})", levels.join("|")),
                    ));
                }
                features.push(Feature::Categorical {
                    name: name.clone(),
                    levels: levels.clone(),
                    unknown: UnknownLevel::Refuse,
                });
            }
            (got, _) => {
                return Err(card_error(
                    format!("features[{k}]"),
                    format!(
                        "the schema of `{}` has the {} column `{name}` here, the public file gives {}",
                        schema.dataset,
                        if levels.is_some() { "categorical" } else { "numeric" },
                        got.map_or_else(
                            || "none".to_string(),
                            |f| format!("the {} column `{}`", f.kind_name(), f.name())
                        )
                    ),
                ))
            }
        }
    }
    if card.features.len() != features.len() {
        return Err(card_error(
            "features".into(),
            format!(
                "the public file has {} feature columns, the schema of `{}` {}",
                card.features.len(),
                schema.dataset,
                features.len()
            ),
        ));
    }
    if let Some(class) = card.label.classes.iter().find(|c| !schema.class_names.contains(c)) {
        return Err(card_error(
            "label.classes".into(),
            format!(
                "`{class}` is not a class of `{}` ({})",
                schema.dataset,
                schema.class_names.join("|")
            ),
        ));
    }
    card.features = features;
    card.label.classes = schema.class_names.clone();
    card.name = schema.dataset.clone();
    card.check(&file)?;
    Ok(card)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{check_csv, read_private_csv};

    fn file(name: &str, text: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write temp file");
        (dir, path)
    }

    const PUBLIC: &str = "age,city,score,y\n\
                          30,Oslo,1.5,10\n\
                          ,Bergen,2.5,2\n\
                          50,Oslo,NA,10\n\
                          40,,3.5,2\n";

    #[test]
    fn infers_kinds_classes_statistics_and_digest() {
        let (_dir, path) = file("clinic_public.csv", PUBLIC.as_bytes());
        let card = infer_card(&path, "y", &InferOptions::default()).expect("valid public file");
        assert_eq!(card.name, "clinic_public");
        // Numeric sort of numeric class texts: 2 before 10.
        assert_eq!(card.classes(), ["2", "10"]);
        assert_eq!(
            card.features,
            vec![
                Feature::Numeric { name: "age".into() },
                Feature::Categorical {
                    name: "city".into(),
                    levels: vec!["Bergen".into(), "Oslo".into()],
                    unknown: UnknownLevel::Refuse
                },
                Feature::Numeric { name: "score".into() },
            ]
        );
        let age = card.stats_for("age").expect("numeric stats");
        // Median of 30, 50, 40 is 40; imputed values 30, 40, 50, 40: mean 40, std sqrt(50).
        assert_eq!(
            (age.fill, age.mean, age.std),
            (Some(40.0), Some(40.0), Some(50f64.sqrt()))
        );
        assert_eq!(
            card.stats_for("city").and_then(|s| s.fill_level.as_deref()),
            Some("Oslo")
        );
        assert_eq!(card.public.rows, 4);
        assert_eq!(card.public.sha256, hex::encode(Sha256::digest(PUBLIC.as_bytes())));
        assert_eq!(card.input_dim(), 4);
        // Round trip through TOML.
        let text = card.to_toml_string();
        assert_eq!(
            TaskCard::from_toml_str(&text, "t.toml").expect("own output parses"),
            card
        );
        // The public file reads against its own card.
        let (ds, report) = read_private_csv(&path, &card, &CsvOptions::default()).expect("reads");
        assert_eq!((ds.n, report.imputed), (4, 3));
    }

    #[test]
    fn zero_impute_and_unscaled() {
        let (_dir, path) = file("p.csv", PUBLIC.as_bytes());
        let opts = InferOptions {
            impute: Impute::Zero,
            scale: Scale::Unchanged,
            ..InferOptions::default()
        };
        let card = infer_card(&path, "y", &opts).expect("valid");
        assert_eq!(card.stats_for("age").and_then(|s| s.fill), Some(0.0));
        assert!(card.stats_for("city").is_none());
        let (ds, _) = read_private_csv(&path, &card, &CsvOptions::default()).expect("reads");
        // Unscaled, zero-filled: row 1 is age 0, city Bergen, score 2.5.
        assert_eq!(ds.row(1), &[0.0, 1.0, 0.0, 2.5]);
        // Row 3's city is missing: an all-zero block.
        assert_eq!(ds.row(3), &[40.0, 0.0, 0.0, 3.5]);
    }

    #[test]
    fn unusable_public_files_are_refused_with_file_line_column() {
        let cases: [(&str, &str, &str); 7] = [
            (
                "a,y\n1,0\n2,1\n",
                "label",
                "p.csv:1:header: no label column `label` in the header (a, y)",
            ),
            ("a,y\n1,0\n2\n", "y", "p.csv:3:y: the row has 1 fields, the header 2"),
            ("a,y\n1,0\n2,\n", "y", "p.csv:3:y: the label is missing"),
            ("a,y\n", "y", "p.csv:2:*: no data rows after the header"),
            (
                "a,b,y\n1,,0\n2,NA,1\n",
                "y",
                "p.csv:1:b: every cell of this column is missing",
            ),
            ("", "y", "p.csv:1:header: empty file"),
            ("a,y\n1,0\n", "y", "task card field `label.classes`: 1 classes declared"),
        ];
        for (text, label, want) in cases {
            let (_dir, path) = file("p.csv", text.as_bytes());
            let msg = infer_card(&path, label, &InferOptions::default())
                .expect_err("bad input must be refused")
                .to_string()
                .replace(&format!("{}", path.display()), "p.csv");
            assert!(msg.contains(want), "for {text:?}: {msg}");
        }
        // A text column with too many distinct values names the first non-number.
        let mut text = String::from("id,y\n");
        for i in 0..70 {
            text.push_str(&format!("{}{i},{}\n", if i == 5 { "x" } else { "" }, i % 2));
        }
        let (_dir, path) = file("p.csv", text.as_bytes());
        let msg = infer_card(&path, "y", &InferOptions::default())
            .expect_err("too many levels")
            .to_string();
        assert!(
            msg.ends_with("p.csv:7:id: column `id` is not numeric (this line holds `x5`) and has more than 64 distinct values; fix the cell or drop the column"),
            "{msg}"
        );
    }

    fn lending_club() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/lending_club.csv")
    }

    #[test]
    fn lending_club_card_reads_the_file_reordered_and_renamed() {
        let path = lending_club();
        let card = infer_card(&path, "Class", &InferOptions::default()).expect("the real file is a valid public set");
        assert_eq!(card.name, "lending_club");
        assert_eq!(card.classes(), ["bad", "good"]);
        assert_eq!(card.public.rows, 9857);
        let kinds: Vec<&str> = card.features.iter().map(Feature::kind_name).collect();
        assert_eq!(kinds.iter().filter(|k| **k == "categorical").count(), 5);
        assert_eq!(kinds.iter().filter(|k| **k == "numeric").count(), 17);
        let text = card.to_toml_string();
        assert_eq!(TaskCard::from_toml_str(&text, "lc.toml").expect("round trip"), card);

        // Independent check of one statistic: funded_amnt has no missing cells; its mean is the
        // plain average of the first field.
        let raw = std::fs::read_to_string(&path).expect("read data file");
        let amounts: Vec<f64> = raw
            .lines()
            .skip(1)
            .map(|l| {
                l.split(',')
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("numeric first field")
            })
            .collect();
        let mean = amounts.iter().sum::<f64>() / amounts.len() as f64;
        let stats = card.stats_for("funded_amnt").expect("stats");
        assert!(
            (stats.mean.expect("mean") - mean).abs() < 1e-6 * mean,
            "{stats:?} vs {mean}"
        );

        let (direct, report) = read_private_csv(&path, &card, &CsvOptions::default()).expect("reads itself");
        assert_eq!(direct.n, 9857);
        assert_eq!(direct.dim, card.input_dim());
        assert_eq!(report.class_counts.iter().sum::<u64>(), 9857);

        // The same rows with the columns reversed, `;`-separated and the label renamed.
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_path(&path)
            .expect("open");
        let mut wtr = csv::WriterBuilder::new().delimiter(b';').from_writer(Vec::new());
        for (k, rec) in rdr.records().enumerate() {
            let rec = rec.expect("record");
            let mut fields: Vec<&str> = rec.iter().rev().collect();
            if k == 0 {
                fields[0] = "outcome";
            }
            wtr.write_record(&fields).expect("write");
        }
        let bytes = wtr.into_inner().expect("flush");
        let (_dir, moved) = file("mine.csv", &bytes);
        let opts = CsvOptions::from_args(";", &["Class=outcome".into()]).expect("valid flags");
        let (mine, _) = read_private_csv(&moved, &card, &opts).expect("reordered file reads");
        assert_eq!(mine, direct);
        let check = check_csv(&moved, &card, &opts, 5);
        assert!(check.usable(), "{check}");
        assert_eq!(check.rows, 9857);
    }

    /// Features compared bit for bit.
    fn bits(ds: &crate::Dataset) -> Vec<u32> {
        ds.features.iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    fn a_simulated_card_is_the_public_files_and_its_parts_read_as_split_holds_them() {
        use crate::tabular::write_csv;
        for name in ["credit", "lending-club", "breast-cancer"] {
            let ds = crate::load(name, &crate::LoadOptions::default()).expect("embedded dataset");
            let s = crate::split(&ds, &crate::SplitConfig::default()).expect("valid split");
            let raw = s.raw.as_ref().expect("raw parts");
            let schema = TabularSchema::of_dataset(&ds);
            let dir = tempfile::tempdir().expect("temp dir");
            let write = |file: &str, part: &crate::Dataset| {
                let path = dir.path().join(file);
                std::fs::write(&path, write_csv(part, &schema, true).expect("raw rows")).expect("write");
                path
            };
            let public = write("public.csv", &raw.public);
            let card = infer_schema_card(&public, &schema).expect("the public file drafts a card");
            let draft =
                infer_card(&public, schema.label_column().expect("label"), &InferOptions::default()).expect("draft");
            // Every statistic is the plain draft's, from the public file alone.
            assert_eq!(card.preprocessing, draft.preprocessing, "{name}");
            assert_eq!(
                (card.public.rows, &card.public.sha256),
                (raw.public.n as u64, &draft.public.sha256)
            );
            assert_eq!(card.classes(), ds.class_names.as_slice());
            assert_eq!(card.input_dim(), ds.dim);
            assert_eq!(card.name, name);
            // Read against the card, each written part is bit for bit what split() holds.
            let read = |path: &Path| read_private_csv(path, &card, &CsvOptions::default()).expect("reads").0;
            let back = read(&public);
            assert_eq!(
                (bits(&back), &back.labels),
                (bits(&s.public), &s.public.labels),
                "{name} public"
            );
            let back = read(&write("test.csv", &raw.test));
            assert_eq!(
                (bits(&back), &back.labels),
                (bits(&s.test), &s.test.labels),
                "{name} test"
            );
            for (i, shard) in raw.shards.iter().enumerate() {
                let back = read(&write(&format!("p{i}.csv"), shard));
                assert_eq!(bits(&back), bits(&s.shards[i]), "{name} shard {i}");
            }
        }
    }
}
