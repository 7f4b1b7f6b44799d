//! CSV reader driven by a small per-dataset schema: numeric columns parsed as numbers, categorical
//! columns one-hot encoded over a FIXED vocabulary declared in the schema (never learned from the
//! rows, so no test row influences the encoding), missing values kept as NaN for `split()` to
//! impute, and the label column mapped to class ids.

use crate::bytes::maybe_gunzip;
use crate::{DataError, DataKind, Dataset};

/// Cell texts that mean "missing" in a tabular CSV.
pub const MISSING: &[&str] = &["", "NA"];

/// One CSV column of a schema.
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    /// A number; becomes one feature.
    Numeric(String),
    /// A category; becomes `levels.len()` one-hot features, in `levels` order.
    Categorical {
        /// Column name.
        name: String,
        /// Every allowed value; any other text is an error.
        levels: Vec<String>,
    },
    /// The class label; `values[i]` is the text of class id `i`.
    Label {
        /// Column name.
        name: String,
        /// The text of each class id, in id order.
        values: Vec<String>,
    },
}

impl Column {
    fn name(&self) -> &str {
        match self {
            Column::Numeric(n) => n,
            Column::Categorical { name, .. } | Column::Label { name, .. } => name,
        }
    }
}

/// What the first line of the CSV holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// No header: the first line is data.
    None,
    /// The column names, which must equal the schema's, in order.
    Names,
    /// scikit-learn's `n_samples,n_features,class_name_0,class_name_1,...`; checked against the
    /// schema and the row count.
    Sklearn,
}

/// A contiguous block of encoded features that came from one CSV column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeatureBlock {
    /// One numeric feature at `index`.
    Numeric {
        /// Feature index in the encoded row.
        index: usize,
        /// CSV column name.
        name: String,
    },
    /// `len` one-hot features starting at `start` (all NaN when the cell was missing).
    OneHot {
        /// First feature index.
        start: usize,
        /// Number of levels.
        len: usize,
        /// CSV column name.
        name: String,
    },
}

/// How one dataset's CSV is read and encoded.
#[derive(Debug, Clone, PartialEq)]
pub struct TabularSchema {
    /// Catalog name given to the resulting `Dataset`.
    pub dataset: String,
    /// What the first line holds.
    pub header: Header,
    /// The columns, in file order; exactly one is a `Label`.
    pub columns: Vec<Column>,
    /// Class names, in class-id order.
    pub class_names: Vec<String>,
    /// `Tabular`, or `Image` for grey-level pixel tables (digits): then missing cells are errors
    /// and every value must lie in `0..=scale`.
    pub kind: DataKind,
    /// Numeric values are divided by this (16 for the 0..16 grey levels of digits, else 1).
    pub scale: f32,
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn numeric(names: &[&str]) -> Vec<Column> {
    names.iter().map(|n| Column::Numeric(n.to_string())).collect()
}

fn cat(name: &str, levels: &[&str]) -> Column {
    Column::Categorical {
        name: name.to_string(),
        levels: strs(levels),
    }
}

/// The 50 US states plus DC: the domain of `addr_state` (the file happens to lack IA).
const US_STATES: &[&str] = &[
    "AK", "AL", "AR", "AZ", "CA", "CO", "CT", "DC", "DE", "FL", "GA", "HI", "IA", "ID", "IL", "IN", "KS", "KY", "LA",
    "MA", "MD", "ME", "MI", "MN", "MO", "MS", "MT", "NC", "ND", "NE", "NH", "NJ", "NM", "NV", "NY", "OH", "OK", "OR",
    "PA", "RI", "SC", "SD", "TN", "TX", "UT", "VA", "VT", "WA", "WI", "WV", "WY",
];

impl TabularSchema {
    /// The schema of a catalog dataset read from CSV (`digits`, `credit`, `lending-club`,
    /// `breast-cancer`), or `None`.
    pub fn for_dataset(name: &str) -> Option<TabularSchema> {
        match name {
            "digits" => {
                let mut columns: Vec<Column> = (0..64)
                    .map(|i| Column::Numeric(format!("pixel_{}_{}", i / 8, i % 8)))
                    .collect();
                let classes: Vec<String> = (0..10).map(|d| d.to_string()).collect();
                columns.push(Column::Label {
                    name: "target".into(),
                    values: classes.clone(),
                });
                Some(TabularSchema {
                    dataset: "digits".into(),
                    header: Header::None,
                    columns,
                    class_names: classes,
                    kind: DataKind::Image { height: 8, width: 8 },
                    scale: 16.0,
                })
            }
            "breast-cancer" => {
                let stats = [
                    "radius",
                    "texture",
                    "perimeter",
                    "area",
                    "smoothness",
                    "compactness",
                    "concavity",
                    "concave points",
                    "symmetry",
                    "fractal dimension",
                ];
                let mut columns = Vec::new();
                for prefix in ["mean ", "", "worst "] {
                    for s in stats {
                        let name = if prefix.is_empty() {
                            format!("{s} error")
                        } else {
                            format!("{prefix}{s}")
                        };
                        columns.push(Column::Numeric(name));
                    }
                }
                columns.push(Column::Label {
                    name: "target".into(),
                    values: strs(&["0", "1"]),
                });
                Some(TabularSchema {
                    dataset: "breast-cancer".into(),
                    header: Header::Sklearn,
                    columns,
                    class_names: strs(&["malignant", "benign"]),
                    kind: DataKind::Tabular,
                    scale: 1.0,
                })
            }
            "credit" => {
                let mut columns = vec![
                    Column::Label {
                        name: "Status".into(),
                        values: strs(&["good", "bad"]),
                    },
                    Column::Numeric("Seniority".into()),
                    cat("Home", &["ignore", "other", "owner", "parents", "priv", "rent"]),
                    Column::Numeric("Time".into()),
                    Column::Numeric("Age".into()),
                    cat("Marital", &["divorced", "married", "separated", "single", "widow"]),
                    cat("Records", &["no", "yes"]),
                    cat("Job", &["fixed", "freelance", "others", "partime"]),
                ];
                columns.extend(numeric(&["Expenses", "Income", "Assets", "Debt", "Amount", "Price"]));
                Some(TabularSchema {
                    dataset: "credit".into(),
                    header: Header::Names,
                    columns,
                    class_names: strs(&["good", "bad"]),
                    kind: DataKind::Tabular,
                    scale: 1.0,
                })
            }
            "lending-club" => {
                let sub_grades: Vec<String> = ["A", "B", "C", "D", "E", "F", "G"]
                    .iter()
                    .flat_map(|g| (1..=5).map(move |k| format!("{g}{k}")))
                    .collect();
                let mut emp = vec!["emp_lt_1".to_string()];
                emp.extend((1..=9).map(|k| format!("emp_{k}")));
                emp.extend(strs(&["emp_ge_10", "emp_unk"]));
                let mut columns = vec![
                    Column::Numeric("funded_amnt".into()),
                    cat("term", &["term_36", "term_60"]),
                    Column::Numeric("int_rate".into()),
                    Column::Categorical {
                        name: "sub_grade".into(),
                        levels: sub_grades,
                    },
                    cat("addr_state", US_STATES),
                    cat("verification_status", &["Not_Verified", "Source_Verified", "Verified"]),
                    Column::Numeric("annual_inc".into()),
                    Column::Categorical {
                        name: "emp_length".into(),
                        levels: emp,
                    },
                ];
                columns.extend(numeric(&[
                    "delinq_2yrs",
                    "inq_last_6mths",
                    "revol_util",
                    "acc_now_delinq",
                    "open_il_6m",
                    "open_il_12m",
                    "open_il_24m",
                    "total_bal_il",
                    "all_util",
                    "inq_fi",
                    "inq_last_12m",
                    "delinq_amnt",
                    "num_il_tl",
                    "total_il_high_credit_limit",
                ]));
                columns.push(Column::Label {
                    name: "Class".into(),
                    values: strs(&["good", "bad"]),
                });
                Some(TabularSchema {
                    dataset: "lending-club".into(),
                    header: Header::Names,
                    columns,
                    class_names: strs(&["good", "bad"]),
                    kind: DataKind::Tabular,
                    scale: 1.0,
                })
            }
            _ => None,
        }
    }

    /// The schema of the tabular rows of `ds`: its catalog schema when the name and the width match, else
    /// every feature a numeric column (`x0`, `x1`, ...) followed by a label column `label` whose texts are
    /// the class names.
    pub fn of_dataset(ds: &Dataset) -> TabularSchema {
        match TabularSchema::for_dataset(&ds.name) {
            Some(s) if s.kind == DataKind::Tabular && s.dim() == ds.dim => s,
            _ => {
                let mut columns: Vec<Column> = (0..ds.dim).map(|k| Column::Numeric(format!("x{k}"))).collect();
                columns.push(Column::Label {
                    name: "label".into(),
                    values: ds.class_names.clone(),
                });
                TabularSchema {
                    dataset: ds.name.clone(),
                    header: Header::Names,
                    columns,
                    class_names: ds.class_names.clone(),
                    kind: DataKind::Tabular,
                    scale: 1.0,
                }
            }
        }
    }

    /// The label column's name (`None` for a schema without one).
    pub fn label_column(&self) -> Option<&str> {
        self.columns.iter().find_map(|c| match c {
            Column::Label { name, .. } => Some(name.as_str()),
            _ => None,
        })
    }

    /// The encoded feature blocks, in feature order.
    pub fn blocks(&self) -> Vec<FeatureBlock> {
        let mut out = Vec::new();
        let mut at = 0;
        for c in &self.columns {
            match c {
                Column::Numeric(name) => {
                    out.push(FeatureBlock::Numeric {
                        index: at,
                        name: name.clone(),
                    });
                    at += 1;
                }
                Column::Categorical { name, levels } => {
                    out.push(FeatureBlock::OneHot {
                        start: at,
                        len: levels.len(),
                        name: name.clone(),
                    });
                    at += levels.len();
                }
                Column::Label { .. } => {}
            }
        }
        out
    }

    /// Number of encoded features per row.
    pub fn dim(&self) -> usize {
        self.columns
            .iter()
            .map(|c| match c {
                Column::Numeric(_) => 1,
                Column::Categorical { levels, .. } => levels.len(),
                Column::Label { .. } => 0,
            })
            .sum()
    }

    /// Names of the encoded features (`column=level` for one-hot features).
    pub fn feature_names(&self) -> Vec<String> {
        let mut out = Vec::new();
        for c in &self.columns {
            match c {
                Column::Numeric(name) => out.push(name.clone()),
                Column::Categorical { name, levels } => out.extend(levels.iter().map(|l| format!("{name}={l}"))),
                Column::Label { .. } => {}
            }
        }
        out
    }
}

/// Parses a CSV (gzip or raw) with `schema` into a `Dataset` whose missing cells are NaN.
/// Nothing is fitted here: standardization and imputation happen in `split()`.
pub fn read_csv(bytes: &[u8], file: &str, schema: &TabularSchema) -> Result<Dataset, DataError> {
    let raw = maybe_gunzip(bytes, file)?;
    let err = |line: u64, expected: String, found: String| DataError::Csv {
        file: file.to_string(),
        line,
        expected,
        found,
    };
    let image = matches!(schema.kind, DataKind::Image { .. });
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(raw.as_ref());
    let ncols = schema.columns.len();
    let dim = schema.dim();
    let mut features: Vec<f32> = Vec::new();
    let mut labels: Vec<u32> = Vec::new();
    let mut expected_rows: Option<(usize, u64)> = None;
    let mut last_line = 0u64;
    let mut first = true;
    for rec in reader.records() {
        let rec = rec.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line());
            err(line, "a well-formed UTF-8 CSV record".into(), e.to_string())
        })?;
        let line = rec.position().map_or(0, |p| p.line());
        last_line = line;
        if first && schema.header != Header::None {
            first = false;
            match schema.header {
                Header::Names => {
                    let want: Vec<&str> = schema.columns.iter().map(Column::name).collect();
                    let got: Vec<&str> = rec.iter().collect();
                    if want != got {
                        return Err(err(
                            line,
                            format!("header `{}`", want.join(",")),
                            format!("`{}`", got.join(",")),
                        ));
                    }
                }
                Header::Sklearn => {
                    let nfeat = schema.columns.len() - 1;
                    let want = format!("n_samples,{nfeat},{}", schema.class_names.join(","));
                    let got: Vec<&str> = rec.iter().collect();
                    let n = got.first().and_then(|s| s.parse::<usize>().ok());
                    let ok = n.is_some()
                        && got.get(1) == Some(&nfeat.to_string().as_str())
                        && got[2..] == schema.class_names.iter().map(String::as_str).collect::<Vec<_>>()[..];
                    match (ok, n) {
                        (true, Some(n)) => expected_rows = Some((n, line)),
                        _ => {
                            return Err(err(
                                line,
                                format!("scikit-learn header `{want}`"),
                                format!("`{}`", got.join(",")),
                            ))
                        }
                    }
                }
                Header::None => {}
            }
            continue;
        }
        first = false;
        if rec.len() != ncols {
            return Err(err(line, format!("{ncols} fields"), format!("{} fields", rec.len())));
        }
        let mut label = None;
        for (j, (col, cell)) in schema.columns.iter().zip(rec.iter()).enumerate() {
            let cell = cell.trim();
            let missing = MISSING.contains(&cell);
            match col {
                Column::Numeric(name) => {
                    if missing {
                        if image {
                            return Err(err(
                                line,
                                format!("a grey level for column {} (`{name}`)", j + 1),
                                "an empty cell".into(),
                            ));
                        }
                        features.push(f32::NAN);
                        continue;
                    }
                    let v = match cell.parse::<f32>() {
                        Ok(v) if v.is_finite() => v,
                        _ => {
                            return Err(err(
                                line,
                                format!("a finite number in column {} (`{name}`)", j + 1),
                                format!("`{cell}`"),
                            ))
                        }
                    };
                    if image && !(0.0..=schema.scale).contains(&v) {
                        return Err(err(
                            line,
                            format!("a grey level in 0..={} in column {} (`{name}`)", schema.scale, j + 1),
                            format!("`{cell}`"),
                        ));
                    }
                    features.push(v / schema.scale);
                }
                Column::Categorical { name, levels } => {
                    if missing {
                        features.extend(std::iter::repeat_n(f32::NAN, levels.len()));
                        continue;
                    }
                    match levels.iter().position(|l| l == cell) {
                        Some(k) => features.extend((0..levels.len()).map(|i| if i == k { 1.0 } else { 0.0 })),
                        None => {
                            return Err(err(
                                line,
                                format!(
                                    "one of {} in column {} (`{name}`) or an empty cell",
                                    levels.join("|"),
                                    j + 1
                                ),
                                format!("`{cell}`"),
                            ))
                        }
                    }
                }
                Column::Label { name, values } => match values.iter().position(|v| v == cell) {
                    Some(k) => label = Some(k as u32),
                    None => {
                        return Err(err(
                            line,
                            format!("a label in {} in column {} (`{name}`)", values.join("|"), j + 1),
                            format!("`{cell}`"),
                        ))
                    }
                },
            }
        }
        match label {
            Some(l) => labels.push(l),
            None => {
                return Err(err(
                    line,
                    "a schema with one label column".into(),
                    "no label column".into(),
                ))
            }
        }
    }
    if let Some((n, header_line)) = expected_rows {
        if n != labels.len() {
            return Err(err(
                header_line,
                format!("{n} data rows as the header declares"),
                format!("{} data rows (file ends at line {last_line})", labels.len()),
            ));
        }
    }
    if labels.is_empty() {
        return Err(err(last_line, "at least one data row".into(), "none".into()));
    }
    debug_assert_eq!(features.len(), labels.len() * dim);
    Dataset::new(
        schema.dataset.clone(),
        features,
        labels,
        dim,
        schema.kind,
        schema.class_names.clone(),
    )
}

/// Writes tabular rows as `read_csv` returns them (a number per numeric column, NaN when missing; a
/// one-hot block per categorical column, all NaN when missing) back as CSV text: a header with the schema's
/// column names in its order, then per row each number as the shortest text that reads back to the same
/// `f32` (times the schema's `scale`), each categorical as its level's text, a missing cell empty, and the
/// label as its class name; `labelled = false` leaves the label column out. A row that is not raw (a
/// one-hot block that is neither one level nor missing, an infinite number) is refused, so preprocessed
/// features are never written as if they were an institution's values.
pub fn write_csv(ds: &Dataset, schema: &TabularSchema, labelled: bool) -> Result<String, DataError> {
    let bad = |detail: String| DataError::InvalidDataset {
        name: ds.name.clone(),
        detail,
    };
    if ds.dim != schema.dim() {
        return Err(bad(format!(
            "{} features per row, the schema of `{}` encodes {}",
            ds.dim,
            schema.dataset,
            schema.dim()
        )));
    }
    let columns: Vec<&Column> = schema
        .columns
        .iter()
        .filter(|c| labelled || !matches!(c, Column::Label { .. }))
        .collect();
    let mut out = csv::WriterBuilder::new().from_writer(Vec::new());
    let csv_error = |e: csv::Error| bad(format!("writing CSV: {e}"));
    out.write_record(columns.iter().map(|c| c.name())).map_err(csv_error)?;
    let mut cells: Vec<String> = Vec::with_capacity(columns.len());
    for i in 0..ds.n {
        let row = ds.row(i);
        let mut at = 0;
        cells.clear();
        for c in &columns {
            match c {
                Column::Numeric(name) => {
                    let v = row[at];
                    at += 1;
                    if v.is_nan() {
                        cells.push(String::new());
                    } else if v.is_finite() {
                        cells.push(format!("{}", v * schema.scale));
                    } else {
                        return Err(bad(format!("row {i}, column `{name}`: {v} is not a finite number")));
                    }
                }
                Column::Categorical { name, levels } => {
                    let block = &row[at..at + levels.len()];
                    at += levels.len();
                    if block.iter().all(|v| v.is_nan()) {
                        cells.push(String::new());
                        continue;
                    }
                    let ones: Vec<usize> = (0..block.len()).filter(|&k| block[k] == 1.0).collect();
                    match ones[..] {
                        [k] if block.iter().all(|&v| v == 0.0 || v == 1.0) => cells.push(levels[k].clone()),
                        _ => {
                            return Err(bad(format!(
                                "row {i}, column `{name}`: {block:?} is not one level of {} (preprocessed rows?)",
                                levels.join("|")
                            )))
                        }
                    }
                }
                Column::Label { name, .. } => {
                    let label = ds.labels[i] as usize;
                    match ds.class_names.get(label) {
                        Some(class) => cells.push(class.clone()),
                        None => return Err(bad(format!("row {i}, column `{name}`: class id {label} out of range"))),
                    }
                }
            }
        }
        out.write_record(&cells).map_err(csv_error)?;
    }
    let bytes = out.into_inner().map_err(|e| bad(format!("writing CSV: {e}")))?;
    String::from_utf8(bytes).map_err(|e| bad(format!("writing CSV: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credit_header() -> String {
        "Status,Seniority,Home,Time,Age,Marital,Records,Job,Expenses,Income,Assets,Debt,Amount,Price".to_string()
    }

    fn credit(rows: &[&str]) -> Result<Dataset, DataError> {
        let mut text = credit_header();
        for r in rows {
            text.push('\n');
            text.push_str(r);
        }
        let schema = TabularSchema::for_dataset("credit").expect("credit schema exists");
        read_csv(text.as_bytes(), "c.csv", &schema)
    }

    #[test]
    fn encodes_one_hot_and_keeps_missing_as_nan() {
        let ds = credit(&[
            "good,9,rent,60,30,married,no,freelance,73,129,0,0,800,846",
            "bad,10,,36,46,married,yes,freelance,90,,3000,0,2000,2985",
        ])
        .expect("valid rows");
        let schema = TabularSchema::for_dataset("credit").expect("exists");
        assert_eq!(ds.dim, schema.dim());
        assert_eq!(ds.dim, 9 + 6 + 5 + 2 + 4);
        assert_eq!(ds.labels, vec![0, 1]);
        // Row 0: Seniority 9, Home=rent is the 6th level.
        let r0 = ds.row(0);
        assert_eq!(r0[0], 9.0);
        assert_eq!(&r0[1..7], &[0.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
        // Row 1: Home missing -> six NaN; Income (feature 1+6+2+5+2+4+1 = 21) missing -> NaN.
        let r1 = ds.row(1);
        assert!(r1[1..7].iter().all(|v| v.is_nan()));
        let names = schema.feature_names();
        assert_eq!(names[21], "Income");
        assert!(r1[21].is_nan());
        assert_eq!(r1[22], 3000.0);
    }

    #[test]
    fn wrong_field_count_names_line_and_counts() {
        let msg = credit(&[
            "good,9,rent,60,30,married,no,freelance,73,129,0,0,800,846",
            "good,9,rent,60,30,married,no,freelance,73,129,0,0,800",
        ])
        .expect_err("bad input must be refused")
        .to_string();
        assert_eq!(msg, "c.csv: line 3: expected 14 fields, found 13 fields");
    }

    #[test]
    fn label_outside_schema_is_rejected() {
        let msg = credit(&["meh,9,rent,60,30,married,no,freelance,73,129,0,0,800,846"])
            .expect_err("bad input must be refused")
            .to_string();
        assert_eq!(
            msg,
            "c.csv: line 2: expected a label in good|bad in column 1 (`Status`), found `meh`"
        );
    }

    #[test]
    fn unknown_category_and_bad_number_are_rejected() {
        let msg = credit(&["good,9,castle,60,30,married,no,freelance,73,129,0,0,800,846"])
            .expect_err("bad input must be refused")
            .to_string();
        assert!(
            msg.starts_with("c.csv: line 2: expected one of ignore|other|owner|parents|priv|rent in column 3 (`Home`)"),
            "{msg}"
        );
        let msg = credit(&["good,nine,rent,60,30,married,no,freelance,73,129,0,0,800,846"])
            .expect_err("bad input must be refused")
            .to_string();
        assert_eq!(
            msg,
            "c.csv: line 2: expected a finite number in column 2 (`Seniority`), found `nine`"
        );
        let msg = credit(&["good,inf,rent,60,30,married,no,freelance,73,129,0,0,800,846"])
            .expect_err("bad input must be refused")
            .to_string();
        assert!(msg.contains("found `inf`"), "{msg}");
    }

    #[test]
    fn wrong_header_is_rejected() {
        let schema = TabularSchema::for_dataset("credit").expect("exists");
        let msg = read_csv(b"Status,Age\ngood,1\n", "h.csv", &schema)
            .expect_err("bad input must be refused")
            .to_string();
        assert!(
            msg.starts_with("h.csv: line 1: expected header `Status,Seniority,"),
            "{msg}"
        );
        let msg = read_csv(credit_header().as_bytes(), "e.csv", &schema)
            .expect_err("bad input must be refused")
            .to_string();
        assert!(msg.contains("expected at least one data row"), "{msg}");
    }

    #[test]
    fn sklearn_header_checks_row_count_and_classes() {
        let schema = TabularSchema::for_dataset("breast-cancer").expect("exists");
        let row = format!("{}0", "1.5,".repeat(30));
        let text = format!("2,30,malignant,benign\n{row}\n");
        let msg = read_csv(text.as_bytes(), "b.csv", &schema)
            .expect_err("bad input must be refused")
            .to_string();
        assert_eq!(
            msg,
            "b.csv: line 1: expected 2 data rows as the header declares, found 1 data rows (file ends at line 2)"
        );
        let text = format!("1,30,benign,malignant\n{row}\n");
        let msg = read_csv(text.as_bytes(), "b.csv", &schema)
            .expect_err("bad input must be refused")
            .to_string();
        assert!(
            msg.contains("expected scikit-learn header `n_samples,30,malignant,benign`"),
            "{msg}"
        );
        let text = format!("1,30,malignant,benign\n{row}\n");
        let ds = read_csv(text.as_bytes(), "b.csv", &schema).expect("valid");
        assert_eq!((ds.n, ds.dim, ds.labels[0]), (1, 30, 0));
    }

    #[test]
    fn digits_grey_levels_are_scaled_and_range_checked() {
        let schema = TabularSchema::for_dataset("digits").expect("exists");
        let row = format!("{}16,3", "8,".repeat(63));
        let ds = read_csv(row.as_bytes(), "d.csv", &schema).expect("valid");
        assert_eq!(ds.kind, DataKind::Image { height: 8, width: 8 });
        assert_eq!((ds.row(0)[0], ds.row(0)[63], ds.labels[0]), (0.5, 1.0, 3));
        let row = format!("{}17,3", "8,".repeat(63));
        let msg = read_csv(row.as_bytes(), "d.csv", &schema)
            .expect_err("bad input must be refused")
            .to_string();
        assert!(
            msg.contains("line 1: expected a grey level in 0..=16 in column 64"),
            "{msg}"
        );
        let row = format!("{},3", "8,".repeat(63));
        let msg = read_csv(row.as_bytes(), "d.csv", &schema)
            .expect_err("bad input must be refused")
            .to_string();
        assert!(msg.contains("found an empty cell"), "{msg}");
    }

    /// Features compared bit for bit (NaN marks a missing cell, and NaN != NaN).
    fn bits(ds: &Dataset) -> Vec<u32> {
        ds.features.iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    fn written_raw_rows_read_back_to_the_same_rows() {
        for name in ["credit", "lending-club"] {
            let ds = crate::load(name, &crate::LoadOptions::default()).expect("embedded dataset");
            let schema = TabularSchema::of_dataset(&ds);
            assert_eq!(schema, TabularSchema::for_dataset(name).expect("catalog schema"));
            let text = write_csv(&ds, &schema, true).expect("raw rows write");
            let back = read_csv(text.as_bytes(), "w.csv", &schema).expect("written rows read");
            assert_eq!((back.n, back.dim, &back.labels), (ds.n, ds.dim, &ds.labels));
            assert_eq!(bits(&back), bits(&ds), "{name}");
        }
        // Missing cells are empty, levels their text, the label its class name; without the label column.
        let ds = credit(&["bad,10,,36,46,married,yes,freelance,90,,3000,0,2000,2985"]).expect("valid row");
        let schema = TabularSchema::of_dataset(&ds);
        let text = write_csv(&ds, &schema, true).expect("writes");
        assert_eq!(
            text,
            format!(
                "{}\nbad,10,,36,46,married,yes,freelance,90,,3000,0,2000,2985\n",
                credit_header()
            )
        );
        let text = write_csv(&ds, &schema, false).expect("writes");
        assert!(
            text.ends_with("\n10,,36,46,married,yes,freelance,90,,3000,0,2000,2985\n"),
            "{text}"
        );
    }

    #[test]
    fn preprocessed_rows_are_refused_and_unknown_datasets_are_all_numeric() {
        let mut ds = credit(&["good,9,rent,60,30,married,no,freelance,73,129,0,0,800,846"]).expect("valid row");
        let schema = TabularSchema::of_dataset(&ds);
        // An imputed-and-standardized look: a one-hot block that is no level.
        ds.features[1..7].copy_from_slice(&[0.5, 0.5, 0.0, 0.0, 0.0, 0.0]);
        let msg = write_csv(&ds, &schema, true).expect_err("not raw").to_string();
        assert!(
            msg.contains("column `Home`") && msg.contains("preprocessed rows?"),
            "{msg}"
        );
        let classes = vec!["no".into(), "yes".into()];
        let other = Dataset::new("mine", vec![1.5, f32::NAN], vec![1], 2, DataKind::Tabular, classes).expect("valid");
        let schema = TabularSchema::of_dataset(&other);
        assert_eq!(schema.label_column(), Some("label"));
        assert_eq!(
            write_csv(&other, &schema, true).expect("writes"),
            "x0,x1,label\n1.5,,yes\n"
        );
    }
}
