//! Reading an institution's OWN Parquet files against a task card (`read_private_parquet`, and the
//! steward's `check_parquet`). Only the card's columns are read (a projection), in record batches
//! of `PARQUET_BATCH_ROWS` rows, and every row goes through the same row encoder as a CSV row
//! (`encode.rs`): typed cells instead of text, but the same imputation, scaling, checks, problem
//! kinds and all-or-nothing rule. Positions are 1-based data rows (`row N`); columns whose
//! Parquet type cannot hold their card column are refused before any row is read (`schema`), every
//! one of them (and any missing column) named in one error.

use std::fs::File;
use std::path::Path;

use ::parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use ::parquet::arrow::ProjectionMask;
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float16Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type,
    UInt64Type, UInt8Type,
};
use arrow_array::{AnyDictionaryArray, Array, LargeStringArray, StringArray, StringViewArray};
use arrow_schema::DataType;

use crate::encode::{check_names, Cell, Plan, Problem, RowSource};
use crate::error::Position;
use crate::private::{
    check_scan, load_scan, tabular_card, CheckReport, CsvOptions, LoadReport, ProblemKind, RowStream, Scan,
};
use crate::task::TaskCard;
use crate::{DataError, Dataset};

/// Rows per record batch read from a Parquet file: memory for the batch is bounded by this many
/// rows of the card's columns, whatever the file's row-group size.
pub const PARQUET_BATCH_ROWS: usize = 8192;

/// Reads an institution's own Parquet file against `card`: the card's columns found by name (any
/// order, renamed through `opts.columns`; `opts.delimiter` is not used), numeric features from any
/// integer or float column, categorical and ordinal features and the label from string columns
/// (`Utf8`, `LargeUtf8`, `Utf8View`, dictionary-encoded strings) or integer columns (compared as
/// their decimal text). Nulls, like empty and `NA` strings, are missing and imputed with the card's
/// statistics exactly as `read_private_csv` does. On the first bad cell the whole read fails with
/// an error naming file, `row N` (1-based data row) and column; no partial dataset is returned.
pub fn read_private_parquet(
    path: &Path,
    card: &TaskCard,
    opts: &CsvOptions,
) -> Result<(Dataset, LoadReport), DataError> {
    load_scan(open_private_parquet(path, card, opts, PARQUET_BATCH_ROWS)?, card)
}

/// Reads `path` exactly as `read_private_parquet` would, but keeps going after a problem (see
/// `check_csv`). A schema problem or a page that does not decode is fatal.
pub fn check_parquet(path: &Path, card: &TaskCard, opts: &CsvOptions, max_problems: usize) -> CheckReport {
    check_scan(
        open_private_parquet(path, card, opts, PARQUET_BATCH_ROWS),
        path,
        card,
        max_problems,
    )
}

/// Whether a column of this type holds numbers the encoder reads as such.
fn is_number(t: &DataType) -> bool {
    t.is_integer() || matches!(t, DataType::Float16 | DataType::Float32 | DataType::Float64)
}

/// Whether a column of this type holds strings.
fn is_text(t: &DataType) -> bool {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, values) => {
            matches!(**values, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
        }
        _ => false,
    }
}

/// A card column the file holds in a Parquet type that cannot hold it.
struct WrongType {
    /// The file's name of the column.
    local: String,
    /// Its Parquet (Arrow) type.
    found: DataType,
    /// What the card column is (`a numeric feature`, `the label`...).
    what: &'static str,
    /// What it needs (`an integer or float`, `a string or integer`).
    needs: &'static str,
}

/// The card's columns present in the file (found by name, through `opts.columns`) whose Parquet type
/// cannot hold them, in the card's order (features, then the label).
fn wrong_types(
    card: &TaskCard,
    opts: &CsvOptions,
    headers: &[String],
    fields: &arrow_schema::Fields,
) -> Vec<WrongType> {
    let label = card.label.column.clone().unwrap_or_default();
    let features = card.features.iter().map(|f| {
        let needs = match f {
            crate::task::Feature::Numeric { .. } => Need::Number("a numeric feature"),
            crate::task::Feature::Categorical { .. } => Need::TextOrInteger("a categorical feature"),
            crate::task::Feature::Ordinal { .. } => Need::TextOrInteger("an ordinal feature"),
        };
        (f.name(), needs)
    });
    let target = if card.is_regression() {
        Need::Target
    } else {
        Need::TextOrInteger("the label")
    };
    let label = (!opts.unlabelled).then_some((label.as_str(), target));
    features
        .chain(label)
        .filter_map(|(name, needs)| {
            let local = opts.columns.get(name).map_or(name, String::as_str);
            let field = headers.iter().position(|h| h == local)?;
            let t = fields[field].data_type();
            let (fits, what, needs) = match needs {
                Need::Number(what) => (is_number(t), what, "an integer or float"),
                Need::Target => (t.is_numeric(), "a regression target", "an integer or float"),
                Need::TextOrInteger(what) => (is_text(t) || t.is_integer(), what, "a string or integer"),
            };
            (!fits && *t != DataType::Null).then(|| WrongType {
                local: local.to_string(),
                found: t.clone(),
                what,
                needs,
            })
        })
        .collect()
}

/// What a card column needs of its Parquet type, and what the card column is (for the message).
enum Need {
    /// A numeric feature: an integer or float column.
    Number(&'static str),
    /// A regression target: any numeric column.
    Target,
    /// A categorical or ordinal feature or a class label: strings, or integers read as their decimal text.
    TextOrInteger(&'static str),
}

/// Wrong-typed columns as one clause: `2 columns of the wrong type: `amount` is Utf8 (a numeric feature
/// needs an integer or float column), ...`.
fn wrong_types_text(wrong: &[WrongType]) -> String {
    let each: Vec<String> = wrong
        .iter()
        .map(|w| format!("`{}` is {} ({} needs {} column)", w.local, w.found, w.what, w.needs))
        .collect();
    format!(
        "{} {} of the wrong type: {}",
        wrong.len(),
        if wrong.len() == 1 { "column" } else { "columns" },
        each.join(", ")
    )
}

pub(crate) fn open_private_parquet(
    path: &Path,
    card: &TaskCard,
    opts: &CsvOptions,
    batch_rows: usize,
) -> Result<Scan<ParquetRows>, DataError> {
    tabular_card(card, "Parquet")?;
    let file = path.display().to_string();
    let f = File::open(path).map_err(|source| DataError::Io {
        file: file.clone(),
        source,
    })?;
    let not_parquet = |e: &dyn std::fmt::Display| DataError::Parquet {
        file: file.clone(),
        detail: e.to_string(),
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(f).map_err(|e| not_parquet(&e))?;
    let fields = builder.schema().fields().clone();
    let headers: Vec<String> = fields.iter().map(|f| f.name().trim().to_string()).collect();
    check_names(&headers, &file, Position::Schema)?;
    // Every column whose type cannot hold its card column, found before the plan so that one error names
    // them all, with any missing columns.
    let wrong = wrong_types(card, opts, &headers, &fields);
    let plan = match Plan::new(card, opts, headers, &file, Position::Schema) {
        Ok(plan) => plan,
        Err(DataError::Row {
            file,
            at,
            column,
            kind: ProblemKind::Header,
            detail,
        }) if !wrong.is_empty() => {
            return Err(DataError::Row {
                file,
                at,
                column,
                kind: ProblemKind::Header,
                detail: format!("{detail}; and {}", wrong_types_text(&wrong)),
            })
        }
        Err(e) => return Err(e),
    };
    match wrong.as_slice() {
        [] => {}
        [w] => {
            let detail = format!(
                "column `{}` is {}; {} needs {} column",
                w.local, w.found, w.what, w.needs
            );
            return Err(Problem::new(Position::Schema, &w.local, ProblemKind::WrongType, detail).into_error(&file));
        }
        _ => {
            return Err(Problem::new(
                Position::Schema,
                crate::private::HEADER,
                ProblemKind::WrongType,
                wrong_types_text(&wrong),
            )
            .into_error(&file))
        }
    }
    // Unlabelled rows are read from CSV only (`CsvOptions::unlabelled`).
    let label_field = plan.label_field.ok_or_else(|| DataError::InvalidOption {
        what: format!("file `{file}`"),
        problem: "unlabelled rows are read from CSV files, not Parquet".into(),
    })?;
    let mut used: Vec<usize> = plan.slots.iter().map(|s| s.field).chain([label_field]).collect();
    used.sort_unstable();
    let mask = ProjectionMask::roots(builder.parquet_schema(), used.iter().copied());
    let reader = builder
        .with_projection(mask)
        .with_batch_size(batch_rows.max(1))
        .build()
        .map_err(|e| not_parquet(&e))?;
    Ok(Scan {
        rows: ParquetRows {
            file: file.clone(),
            width: plan.headers.len(),
            used,
            reader,
            rows: 0,
        },
        file,
        plan,
    })
}

/// The rows of a Parquet file, batch by batch.
pub(crate) struct ParquetRows {
    file: String,
    /// Columns in the file's schema (the field indices of the plan).
    width: usize,
    /// The schema fields read, ascending: batch column `j` is field `used[j]`.
    used: Vec<usize>,
    reader: ParquetRecordBatchReader,
    /// Data rows handed out so far.
    rows: u64,
}

impl RowStream for ParquetRows {
    fn for_each_row(&mut self, visit: &mut dyn FnMut(&mut dyn RowSource, Position) -> bool) -> Result<(), DataError> {
        for batch in &mut self.reader {
            let batch = batch.map_err(|e| DataError::Parquet {
                file: self.file.clone(),
                detail: format!("reading the rows after row {}: {e}", self.rows),
            })?;
            let mut columns: Vec<Option<Column<'_>>> = (0..self.width).map(|_| None).collect();
            for (j, &field) in self.used.iter().enumerate() {
                columns[field] = Some(Column::new(batch.column(j).as_ref()));
            }
            let mut row = BatchRow {
                columns: &columns,
                width: self.width,
                i: 0,
            };
            for i in 0..batch.num_rows() {
                self.rows += 1;
                row.i = i;
                if !visit(&mut row, Position::Row(self.rows)) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    fn end(&self) -> Position {
        Position::Row(self.rows + 1)
    }
}

/// Row `i` of one batch.
struct BatchRow<'b> {
    columns: &'b [Option<Column<'b>>],
    width: usize,
    i: usize,
}

impl RowSource for BatchRow<'_> {
    fn width(&self) -> usize {
        self.width
    }

    fn cell(&mut self, field: usize) -> Cell<'_> {
        match self.columns.get(field) {
            Some(Some(c)) => c.cell(self.i),
            // Only projected fields are asked for; anything else reads as missing.
            _ => Cell::Null,
        }
    }
}

/// One column of a batch, typed once per batch.
enum Column<'a> {
    /// The Arrow `Null` type: every cell missing.
    Null,
    /// Integers and floats, widened to f64.
    Number {
        array: &'a dyn Array,
        value: Box<dyn Fn(usize) -> f64 + 'a>,
    },
    /// Strings, possibly dictionary-encoded.
    Text(Text<'a>),
    /// A type `open_private_parquet` refused (never built for a used column).
    Other,
}

enum Text<'a> {
    Utf8(&'a StringArray),
    Large(&'a LargeStringArray),
    View(&'a StringViewArray),
    Dictionary {
        array: &'a dyn AnyDictionaryArray,
        keys: Vec<usize>,
        values: Box<Text<'a>>,
    },
}

impl<'a> Column<'a> {
    fn new(array: &'a dyn Array) -> Column<'a> {
        if *array.data_type() == DataType::Null {
            return Column::Null;
        }
        if let Some(t) = Text::new(array) {
            return Column::Text(t);
        }
        macro_rules! widen {
            ($($t:ty),*) => {$(
                if let Some(p) = array.as_primitive_opt::<$t>() {
                    return Column::Number { array, value: Box::new(move |i| p.value(i) as f64) };
                }
            )*};
        }
        widen!(
            Int8Type,
            Int16Type,
            Int32Type,
            Int64Type,
            UInt8Type,
            UInt16Type,
            UInt32Type,
            UInt64Type,
            Float32Type,
            Float64Type
        );
        if let Some(p) = array.as_primitive_opt::<Float16Type>() {
            return Column::Number {
                array,
                value: Box::new(move |i| p.value(i).to_f64()),
            };
        }
        Column::Other
    }

    fn cell(&self, i: usize) -> Cell<'a> {
        match self {
            Column::Null | Column::Other => Cell::Null,
            Column::Number { array, value } => {
                if array.is_null(i) {
                    Cell::Null
                } else {
                    Cell::Number(value(i))
                }
            }
            Column::Text(t) => t.cell(i),
        }
    }
}

impl<'a> Text<'a> {
    fn new(array: &'a dyn Array) -> Option<Text<'a>> {
        if let Some(a) = array.as_string_opt::<i32>() {
            return Some(Text::Utf8(a));
        }
        if let Some(a) = array.as_string_opt::<i64>() {
            return Some(Text::Large(a));
        }
        if let Some(a) = array.as_string_view_opt() {
            return Some(Text::View(a));
        }
        let dict = array.as_any_dictionary_opt()?;
        let values = Text::new(dict.values().as_ref())?;
        // `normalized_keys` panics on an empty dictionary, whose keys can then only be null.
        let keys = if dict.values().is_empty() {
            vec![0; dict.len()]
        } else {
            dict.normalized_keys()
        };
        Some(Text::Dictionary {
            array: dict,
            keys,
            values: Box::new(values),
        })
    }

    fn cell(&self, i: usize) -> Cell<'a> {
        match self {
            Text::Utf8(a) if !a.is_null(i) => Cell::Text(a.value(i).trim()),
            Text::Large(a) if !a.is_null(i) => Cell::Text(a.value(i).trim()),
            Text::View(a) if !a.is_null(i) => Cell::Text(a.value(i).trim()),
            Text::Dictionary { array, keys, values } if !array.is_null(i) => match keys.get(i) {
                Some(&k) if k < values.len() => values.cell(k),
                _ => Cell::Null,
            },
            _ => Cell::Null,
        }
    }

    fn len(&self) -> usize {
        match self {
            Text::Utf8(a) => a.len(),
            Text::Large(a) => a.len(),
            Text::View(a) => a.len(),
            Text::Dictionary { array, .. } => array.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ::parquet::arrow::ArrowWriter;
    use arrow_array::types::Int32Type;
    use arrow_array::{
        ArrayRef, BooleanArray, DictionaryArray, Float32Array, Float64Array, Int64Array, LargeStringArray, RecordBatch,
        StringArray, StringViewArray, UInt8Array,
    };

    use super::*;
    use crate::private::tests::{card, good_rows, GOOD};
    use crate::private::{read_private_csv, DEFAULT_MAX_PROBLEMS};

    fn col(a: impl Array + 'static) -> ArrayRef {
        Arc::new(a)
    }

    fn text(v: &[Option<&str>]) -> ArrayRef {
        col(StringArray::from(v.to_vec()))
    }

    /// Writes the columns as one Parquet file (row groups of `group` rows) in a fresh temp dir.
    fn parquet(columns: Vec<(&str, ArrayRef)>, group: usize) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("own.parquet");
        let batch = RecordBatch::try_from_iter(columns).expect("columns of one length");
        let props = ::parquet::file::properties::WriterProperties::builder()
            .set_max_row_group_row_count(Some(group))
            .build();
        let f = File::create(&path).expect("create");
        let mut w = ArrowWriter::try_new(f, batch.schema(), Some(props)).expect("writer");
        w.write(&batch).expect("write");
        w.close().expect("close");
        (dir, path)
    }

    /// GOOD as Parquet: shuffled columns, nulls and `NA`/"" as missing, several string encodings,
    /// and one column the card does not use.
    fn good_columns() -> Vec<(&'static str, ArrayRef)> {
        vec![
            ("Class", text(&[Some("good"), Some("bad"), Some("good")])),
            ("extra", col(BooleanArray::from(vec![true, false, true]))),
            (
                "grade",
                col(LargeStringArray::from(vec![Some("C"), Some("A"), Some("")])),
            ),
            (
                "purpose",
                col([Some("car"), Some("house"), None]
                    .into_iter()
                    .collect::<DictionaryArray<Int32Type>>()),
            ),
            ("amount", col(Float64Array::from(vec![Some(160.0), None, Some(80.0)]))),
            ("home", text(&[Some(" own "), Some("rent"), Some("NA")])),
        ]
    }

    fn refused(columns: Vec<(&str, ArrayRef)>) -> String {
        let (_dir, path) = parquet(columns, 1024);
        let msg = read_private_parquet(&path, &card(), &CsvOptions::default())
            .expect_err("bad input must be refused")
            .to_string();
        msg.replace(&path.display().to_string(), "own.parquet")
    }

    /// `good_columns` with column `name` replaced.
    fn with(name: &str, a: ArrayRef) -> Vec<(&'static str, ArrayRef)> {
        good_columns()
            .into_iter()
            .map(|(n, c)| (n, if n == name { a.clone() } else { c }))
            .collect()
    }

    #[test]
    fn reads_exactly_what_the_csv_reader_reads() {
        let (_dir, path) = parquet(good_columns(), 2);
        let (ds, report) = read_private_parquet(&path, &card(), &CsvOptions::default()).expect("valid file");
        assert_eq!(ds.features, good_rows());
        assert_eq!(ds.labels, vec![0, 1, 0]);
        assert_eq!(report.imputed, 4);
        assert_eq!(report.class_counts, vec![2, 1]);
        assert_eq!(report.ignored_columns, vec!["extra".to_string()]);
        let (_d, csv) = crate::private::tests::file("good.csv", GOOD.as_bytes());
        let (from_csv, csv_report) = read_private_csv(&csv, &card(), &CsvOptions::default()).expect("valid");
        assert_eq!(ds, from_csv);
        assert_eq!(report.missing_per_column, csv_report.missing_per_column);
        assert_eq!(report.out_of_range_per_column, csv_report.out_of_range_per_column);
    }

    #[test]
    fn any_integer_or_float_type_and_integer_labels() {
        for amount in [
            col(Int64Array::from(vec![Some(160), None, Some(80)])),
            col(UInt8Array::from(vec![Some(160), None, Some(80)])),
            col(Float32Array::from(vec![Some(160.0), None, Some(80.0)])),
        ] {
            let (_dir, path) = parquet(with("amount", amount), 1024);
            let (ds, _) = read_private_parquet(&path, &card(), &CsvOptions::default()).expect("valid");
            assert_eq!(ds.features, good_rows());
        }
        // String views, large strings and dictionaries of strings read like strings.
        for home in [
            col(StringViewArray::from(vec![Some("own"), Some("rent"), None])),
            col(LargeStringArray::from(vec![Some("own"), Some("rent"), Some("")])),
            col([Some("own"), Some("rent"), Some("NA")]
                .into_iter()
                .collect::<DictionaryArray<Int32Type>>()),
        ] {
            let (_dir, path) = parquet(with("home", home), 1024);
            let (ds, _) = read_private_parquet(&path, &card(), &CsvOptions::default()).expect("valid");
            assert_eq!(ds.features, good_rows());
        }
        // Integer classes and levels are compared as their decimal text.
        let toml = crate::private::tests::CARD
            .replace(r#"classes = ["good", "bad"]"#, r#"classes = ["0", "1"]"#)
            .replace(r#"levels = ["A", "B", "C"]"#, r#"levels = ["1", "2", "3"]"#);
        let c = TaskCard::from_toml_str(&toml, "c").expect("valid card");
        let mut cols = with("Class", col(Int64Array::from(vec![0, 1, 0])));
        cols = cols
            .into_iter()
            .map(|(n, a)| {
                (
                    n,
                    if n == "grade" {
                        col(Int64Array::from(vec![Some(3), Some(1), None]))
                    } else {
                        a
                    },
                )
            })
            .collect();
        let (_dir, path) = parquet(cols, 1024);
        let (ds, _) = read_private_parquet(&path, &c, &CsvOptions::default()).expect("valid");
        assert_eq!(ds.features, good_rows());
        assert_eq!(ds.labels, vec![0, 1, 0]);
    }

    #[test]
    fn renamed_columns_map_like_csv() {
        let cols = good_columns()
            .into_iter()
            .map(|(n, a)| (if n == "amount" { "Amt" } else { n }, a))
            .collect();
        let (_dir, path) = parquet(cols, 1024);
        let opts = CsvOptions::from_args(",", &["amount=Amt".into()]).expect("valid flags");
        let (ds, _) = read_private_parquet(&path, &card(), &opts).expect("valid");
        assert_eq!(ds.features, good_rows());
        let err = read_private_parquet(&path, &card(), &CsvOptions::default())
            .expect_err("amount is absent")
            .to_string();
        assert!(
            err.ends_with("own.parquet:schema:header: missing column of task `loans`: `amount`"),
            "{err}"
        );
        // A renamed column of the wrong type is named as the file names it.
        let cols = good_columns()
            .into_iter()
            .map(|(n, a)| match n {
                "amount" => ("Amt", text(&[Some("160"), None, Some("80")])),
                "purpose" => (n, col(Float64Array::from(vec![1.0, 2.0, 3.0]))),
                _ => (n, a),
            })
            .collect();
        let (_dir, path) = parquet(cols, 1024);
        let err = read_private_parquet(&path, &card(), &opts)
            .expect_err("wrong types")
            .to_string();
        assert!(
            err.ends_with(
                "own.parquet:schema:header: 2 columns of the wrong type: `Amt` is Utf8 (a numeric feature needs an \
                 integer or float column), `purpose` is Float64 (a categorical feature needs a string or integer \
                 column)"
            ),
            "{err}"
        );
    }

    #[test]
    fn every_bad_input_names_file_row_and_column() {
        let cases = [
            (
                with("amount", text(&[Some("160"), None, Some("80")])),
                "own.parquet:schema:amount: column `amount` is Utf8; a numeric feature needs an integer or float column",
            ),
            (
                with("grade", col(Float64Array::from(vec![1.0, 2.0, 3.0]))),
                "own.parquet:schema:grade: column `grade` is Float64; an ordinal feature needs a string or integer column",
            ),
            (
                with("Class", col(BooleanArray::from(vec![true, false, true]))),
                "own.parquet:schema:Class: column `Class` is Boolean; the label needs a string or integer column",
            ),
            (
                with("Class", text(&[Some("good"), None, Some("good")])),
                "own.parquet:row 2:Class: the label is missing (labels are never imputed)",
            ),
            (
                with("Class", text(&[Some("good"), Some("bad"), Some("meh")])),
                "own.parquet:row 3:Class: `meh` is not a class of the task (good|bad)",
            ),
            (
                with("home", text(&[Some("own"), Some("rent"), Some("castle")])),
                "own.parquet:row 3:home: `castle` is not a level of `home` (own|rent)",
            ),
            (
                with("grade", text(&[Some("Z"), Some("A"), Some("B")])),
                "own.parquet:row 1:grade: `Z` is not a level of `grade` (A|B|C)",
            ),
            (
                with("amount", col(Float64Array::from(vec![1.0, f64::NAN, 2.0]))),
                "own.parquet:row 2:amount: `NaN` is not a finite number",
            ),
            (
                with("amount", col(Float64Array::from(vec![1.0, 2.0, f64::NEG_INFINITY]))),
                "own.parquet:row 3:amount: `-inf` is not a finite number",
            ),
            (
                with("amount", col(Float64Array::from(vec![1e300, 2.0, 3.0]))),
                "own.parquet:row 1:amount: `1e300` overflows a 32-bit float once scaled",
            ),
            (
                good_columns().into_iter().filter(|(n, _)| *n != "grade" && *n != "home").collect(),
                "own.parquet:schema:header: missing columns of task `loans`: `home`, `grade`",
            ),
        ];
        for (columns, want) in cases {
            assert_eq!(refused(columns), want);
        }
        // Every column of the wrong type is named at once, in the card's order, not only the first.
        let cols = with("amount", text(&[Some("160"), None, Some("80")]))
            .into_iter()
            .map(|(n, a)| match n {
                "grade" => (n, col(Float64Array::from(vec![1.0, 2.0, 3.0]))),
                "Class" => (n, col(BooleanArray::from(vec![true, false, true]))),
                _ => (n, a),
            })
            .collect();
        assert_eq!(
            refused(cols),
            "own.parquet:schema:header: 3 columns of the wrong type: `amount` is Utf8 (a numeric feature needs an \
             integer or float column), `grade` is Float64 (an ordinal feature needs a string or integer column), \
             `Class` is Boolean (the label needs a string or integer column)"
        );
        // And with missing columns, one error names both kinds.
        let cols = with("amount", text(&[Some("160"), None, Some("80")]))
            .into_iter()
            .filter(|(n, _)| *n != "home")
            .collect();
        assert_eq!(
            refused(cols),
            "own.parquet:schema:header: missing column of task `loans`: `home`; and 1 column of the wrong type: \
             `amount` is Utf8 (a numeric feature needs an integer or float column)"
        );
        // No rows at all.
        let empty: Vec<(&str, ArrayRef)> = good_columns().into_iter().map(|(n, a)| (n, a.slice(0, 0))).collect();
        assert_eq!(refused(empty), "own.parquet:row 1:*: no data rows");
        // Not Parquet at all.
        let (_dir, path) = crate::private::tests::file("own.parquet", GOOD.as_bytes());
        let err = read_private_parquet(&path, &card(), &CsvOptions::default())
            .expect_err("a CSV is not Parquet")
            .to_string();
        assert!(
            err.starts_with(&format!("{}: not readable as Parquet: ", path.display())),
            "{err}"
        );
        // Truncated: the footer is gone.
        let (_dir, good) = parquet(good_columns(), 1024);
        let bytes = std::fs::read(&good).expect("read back");
        std::fs::write(&good, &bytes[..bytes.len() / 2]).expect("truncate");
        let err = read_private_parquet(&good, &card(), &CsvOptions::default()).expect_err("truncated");
        assert!(matches!(err, DataError::Parquet { .. }), "{err}");
        let err = read_private_parquet(Path::new("/nonexistent/own.parquet"), &card(), &CsvOptions::default())
            .expect_err("no such file");
        assert!(
            err.to_string().starts_with("/nonexistent/own.parquet: cannot read"),
            "{err}"
        );
    }

    #[test]
    fn rows_are_counted_across_batches_and_row_groups() {
        let n = 11;
        let mut home: Vec<Option<&str>> = vec![Some("own"); n];
        home[8] = Some("castle");
        let columns = vec![
            ("amount", col(Float64Array::from(vec![100.0; n]))),
            ("home", text(&home)),
            ("purpose", text(&vec![Some("car"); n])),
            ("grade", text(&vec![Some("B"); n])),
            ("Class", text(&vec![Some("good"); n])),
        ];
        let (_dir, path) = parquet(columns, 4);
        for batch_rows in [1, 3, PARQUET_BATCH_ROWS] {
            let scan = open_private_parquet(&path, &card(), &CsvOptions::default(), batch_rows).expect("opens");
            let err = load_scan(scan, &card()).expect_err("row 9 is bad");
            assert!(
                matches!(&err, DataError::Row { at: Position::Row(9), column, kind: ProblemKind::UnknownLevel, .. } if column == "home"),
                "batch {batch_rows}: {err}"
            );
        }
    }

    #[test]
    fn check_keeps_going_with_row_positions() {
        let columns = vec![
            (
                "amount",
                col(Float64Array::from(vec![Some(160.0), None, Some(9000.0), Some(1.0)])),
            ),
            ("home", text(&[Some("own"), Some("castle"), Some("own"), Some("rent")])),
            ("purpose", text(&[Some("car"), Some("car"), Some("boat"), None])),
            ("grade", text(&[Some("C"), Some("A"), Some("B"), Some("B")])),
            ("Class", text(&[Some("good"), Some("good"), Some("bad"), None])),
        ];
        let (_dir, path) = parquet(columns, 1024);
        let r = check_parquet(&path, &card(), &CsvOptions::default(), DEFAULT_MAX_PROBLEMS);
        let p = path.display();
        assert!(!r.usable());
        assert_eq!((r.rows, r.rows_ok), (4, 2));
        assert_eq!(
            r.problems,
            vec![
                format!("{p}:row 2:home: `castle` is not a level of `home` (own|rent)"),
                format!("{p}:row 4:Class: the label is missing (labels are never imputed)"),
            ]
        );
        assert_eq!(r.columns[0].out_of_range, Some(1));
        assert_eq!(r.columns[2].other, Some(1));
        // A schema problem is fatal.
        let (_dir, path) = parquet(with("amount", text(&[Some("1"), None, None])), 1024);
        let r = check_parquet(&path, &card(), &CsvOptions::default(), DEFAULT_MAX_PROBLEMS);
        assert!(
            r.fatal
                .as_deref()
                .is_some_and(|f| f.contains(":schema:amount: column `amount` is Utf8")),
            "{r}"
        );
    }

    #[test]
    fn image_cards_are_not_read_as_parquet() {
        let img = TaskCard::from_toml_str(
            "name = \"d\"\nversion = 1\n[label]\nclasses = [\"0\", \"1\"]\n[image]\nheight = 2\nwidth = 2\nchannels = 1\n\
             [public]\nsha256 = \"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\"\nrows = 5\nformat = \"idx\"\n",
            "img.toml",
        )
        .expect("valid");
        let (_dir, path) = parquet(good_columns(), 1024);
        let err = read_private_parquet(&path, &img, &CsvOptions::default())
            .expect_err("image card")
            .to_string();
        assert!(err.contains("not read as Parquet"), "{err}");
    }
}
