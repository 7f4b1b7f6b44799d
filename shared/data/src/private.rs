// Over 800 lines: the CSV reader, the load and check drivers every tabular reader shares, and about 440 lines of bad-input tests.
//! Reading an institution's OWN CSV files against a task card: the participant's loader
//! (`read_private_csv`, all or nothing) and the data steward's check (`check_csv`, which reads the
//! file exactly the same way but keeps going to list problems). Both stream the file record by
//! record through the shared row encoder (`encode.rs`, also used by the Parquet reader), and
//! impute and scale with the CARD's statistics only, so no file's rows ever change how another
//! file is preprocessed. `load_scan` and `check_scan` are the drivers both formats run.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use csv::ByteRecord;
use serde::Serialize;

use crate::encode::{check_names, Cell, Plan, Problem, RowSource, Slot, Tally};
use crate::error::Position;
use crate::task::TaskCard;
use crate::{DataError, DataKind, Dataset, GZIP_MAGIC};

/// A numeric cell further than this many card standard deviations from the card mean is counted
/// as out of range by `check_csv` (a warning for the steward, not an error).
pub const OUT_OF_RANGE_STDS: f64 = 10.0;

/// Default number of problems `check_csv` lists per file (the CLI's `--max-problems`).
pub const DEFAULT_MAX_PROBLEMS: usize = 20;

/// How to read an institution's CSV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvOptions {
    /// Field delimiter (one ASCII byte; `,` by default). Fields may be quoted with `"`.
    pub delimiter: u8,
    /// Card column name -> local header, for columns the file names differently (the others
    /// are looked up under the card's name).
    pub columns: BTreeMap<String, String>,
    /// Rows without labels (`[private] unlabeled`): the label column need not be there (when it is, it is
    /// ignored) and every row's label is 0. CSV only.
    pub unlabelled: bool,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            delimiter: b',',
            columns: BTreeMap::new(),
            unlabelled: false,
        }
    }
}

impl CsvOptions {
    /// Parses a delimiter flag: one ASCII character other than `"` and line breaks, or `tab`.
    pub fn parse_delimiter(text: &str) -> Result<u8, DataError> {
        match text {
            "tab" | "\\t" | "\t" => Ok(b'\t'),
            _ => match text.as_bytes() {
                [b] if b.is_ascii() && !matches!(b, b'"' | b'\n' | b'\r') => Ok(*b),
                _ => Err(DataError::InvalidOption {
                    what: format!("delimiter `{text}`"),
                    problem: "must be one ASCII character (or `tab`), not a quote or a line break".into(),
                }),
            },
        }
    }

    /// Builds options from a delimiter flag and `card=local` mapping flags.
    pub fn from_args(delimiter: &str, columns: &[String]) -> Result<CsvOptions, DataError> {
        let mut map = BTreeMap::new();
        for arg in columns {
            let bad = |problem: &str| DataError::InvalidOption {
                what: format!("column mapping `{arg}`"),
                problem: problem.into(),
            };
            let (card, local) = arg.split_once('=').ok_or_else(|| bad("expected CARD=LOCAL"))?;
            let (card, local) = (card.trim(), local.trim());
            if card.is_empty() || local.is_empty() {
                return Err(bad("expected CARD=LOCAL with both names non-empty"));
            }
            if map.insert(card.to_string(), local.to_string()).is_some() {
                return Err(bad("this card column is mapped twice"));
            }
        }
        Ok(CsvOptions {
            delimiter: CsvOptions::parse_delimiter(delimiter)?,
            columns: map,
            unlabelled: false,
        })
    }
}

/// What is wrong with a header, row or cell (stable names, used in reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemKind {
    /// Empty file, no header, duplicated or missing columns, or a mapping that does not fit.
    Header,
    /// A header but no data row.
    NoRows,
    /// A record that the CSV parser cannot split.
    Malformed,
    /// A row with more or fewer fields than the header.
    RaggedRow,
    /// A cell that is not UTF-8.
    NotUtf8,
    /// Text in a numeric column.
    NotANumber,
    /// NaN or infinity (or a value that overflows f32 once scaled).
    NotFinite,
    /// A categorical or ordinal value outside the card's levels.
    UnknownLevel,
    /// A label outside the card's classes.
    UnknownClass,
    /// An empty or `NA` label cell (labels are never imputed).
    MissingLabel,
    /// A column of a public file that is neither numeric nor a category with few levels.
    TooManyLevels,
    /// A typed (Parquet) column whose type cannot hold its card column: text or a boolean for a
    /// numeric feature, a float for a categorical, ordinal or label column.
    WrongType,
    /// A regression target outside the card's `[regression]` bounds (refused, never clipped).
    OutOfBounds,
}

impl ProblemKind {
    /// The stable name (`ragged-row`, `not-a-number`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ProblemKind::Header => "header",
            ProblemKind::NoRows => "no-rows",
            ProblemKind::Malformed => "malformed",
            ProblemKind::RaggedRow => "ragged-row",
            ProblemKind::NotUtf8 => "not-utf8",
            ProblemKind::NotANumber => "not-a-number",
            ProblemKind::NotFinite => "not-finite",
            ProblemKind::UnknownLevel => "unknown-level",
            ProblemKind::UnknownClass => "unknown-class",
            ProblemKind::MissingLabel => "missing-label",
            ProblemKind::TooManyLevels => "too-many-levels",
            ProblemKind::WrongType => "wrong-type",
            ProblemKind::OutOfBounds => "out-of-bounds",
        }
    }
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The column name used for problems that concern the header.
pub(crate) const HEADER: &str = "header";
/// The column name used for problems that concern a whole row or file.
pub(crate) const WHOLE: &str = "*";

/// A problem at a CSV line.
pub(crate) fn row_error(file: &str, line: u64, column: &str, kind: ProblemKind, detail: String) -> DataError {
    DataError::Row {
        file: file.to_string(),
        at: Position::Line(line),
        column: column.to_string(),
        kind,
        detail,
    }
}

/// A CSV reader with the project's settings: no header handling by the crate (the header is read
/// and checked here), rows of any length (ragged rows are reported by us, with the column).
pub(crate) fn csv_reader<R: Read>(inner: R, delimiter: u8) -> csv::Reader<R> {
    csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .flexible(true)
        .from_reader(inner)
}

/// Reads the next record into `rec`; `Ok(None)` at the end, else the 1-based line it starts on.
pub(crate) fn next_record<R: Read>(
    rdr: &mut csv::Reader<R>,
    rec: &mut ByteRecord,
    file: &str,
) -> Result<Option<u64>, DataError> {
    match rdr.read_byte_record(rec) {
        Ok(false) => Ok(None),
        Ok(true) => Ok(Some(rec.position().map_or(0, |p| p.line()))),
        Err(e) => {
            let line = e.position().map_or(0, |p| p.line());
            match e.into_kind() {
                csv::ErrorKind::Io(source) => Err(DataError::Io {
                    file: file.to_string(),
                    source,
                }),
                other => Err(row_error(
                    file,
                    line,
                    WHOLE,
                    ProblemKind::Malformed,
                    format!("cannot split the record: {other:?}"),
                )),
            }
        }
    }
}

/// The UTF-8 byte order mark some tools write before the first header.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Buffers `inner` for streaming, past a UTF-8 BOM if the stream starts with one.
pub(crate) fn open_csv<R: Read>(inner: R, file: &str) -> Result<BufReader<R>, DataError> {
    let mut r = BufReader::new(inner);
    let io = |source| DataError::Io {
        file: file.to_string(),
        source,
    };
    if r.fill_buf().map_err(io)?.starts_with(BOM) {
        r.consume(BOM.len());
    }
    Ok(r)
}

/// Reads the header row: trims names, refuses an empty file, non-UTF-8 or
/// empty names and duplicated names.
pub(crate) fn read_header<R: Read>(rdr: &mut csv::Reader<R>, file: &str) -> Result<Vec<String>, DataError> {
    let mut rec = ByteRecord::new();
    let Some(line) = next_record(rdr, &mut rec, file)? else {
        return Err(row_error(
            file,
            1,
            HEADER,
            ProblemKind::Header,
            "empty file: a header row naming the columns is required".into(),
        ));
    };
    let mut names = Vec::with_capacity(rec.len());
    for (k, raw) in rec.iter().enumerate() {
        let name = std::str::from_utf8(raw).map_err(|_| {
            row_error(
                file,
                line,
                &format!("field {}", k + 1),
                ProblemKind::NotUtf8,
                "the header name is not UTF-8".into(),
            )
        })?;
        names.push(name.trim().to_string());
    }
    check_names(&names, file, Position::Line(line))?;
    Ok(names)
}
/// The data rows of an open own file (CSV or Parquet), in file order.
pub(crate) trait RowStream {
    /// Calls `visit` with each data row and its position until `visit` returns false or the rows
    /// end. An error is a problem that ends the reading (unreadable bytes, a record the parser
    /// cannot split, a Parquet page that does not decode).
    fn for_each_row(&mut self, visit: &mut dyn FnMut(&mut dyn RowSource, Position) -> bool) -> Result<(), DataError>;

    /// Where "no data rows" is reported.
    fn end(&self) -> Position;
}

/// An open own file with its column names laid over the card.
pub(crate) struct Scan<S> {
    pub(crate) file: String,
    pub(crate) plan: Plan,
    pub(crate) rows: S,
}

impl<S: RowStream> Scan<S> {
    fn no_rows(&self) -> Problem {
        let at = self.rows.end();
        let detail = match at {
            Position::Line(_) => "no data rows after the header",
            _ => "no data rows",
        };
        Problem::new(at, WHOLE, ProblemKind::NoRows, detail.into())
    }

    /// `counts` per card column name, for the slots `keep` selects.
    fn count_map(&self, counts: &[u64], keep: fn(&Slot) -> bool) -> BTreeMap<String, u64> {
        self.plan
            .slots
            .iter()
            .zip(counts)
            .filter(|(s, _)| keep(s))
            .map(|(s, &c)| (s.card.clone(), c))
            .collect()
    }
}

/// Refuses an image card where tabular files are read; `what` names the reader's format.
pub(crate) fn tabular_card(card: &TaskCard, what: &str) -> Result<(), DataError> {
    card.validate()?;
    if card.image.is_some() {
        return Err(DataError::Card {
            file: "task card".into(),
            field: "image".into(),
            problem: format!(
                "task `{}` is an image task; its files are not read as {what}",
                card.name
            ),
        });
    }
    Ok(())
}

/// The rows of a CSV file, after its header.
struct CsvRows {
    file: String,
    rdr: csv::Reader<BufReader<Box<dyn Read>>>,
    rec: ByteRecord,
    last_line: u64,
}

/// One CSV record as cells.
struct CsvRow<'r>(&'r ByteRecord);

impl RowSource for CsvRow<'_> {
    fn width(&self) -> usize {
        self.0.len()
    }

    fn cell(&mut self, field: usize) -> Cell<'_> {
        match std::str::from_utf8(self.0.get(field).unwrap_or_default()) {
            Ok(t) => Cell::Text(t.trim()),
            Err(_) => Cell::NotUtf8,
        }
    }
}

impl RowStream for CsvRows {
    fn for_each_row(&mut self, visit: &mut dyn FnMut(&mut dyn RowSource, Position) -> bool) -> Result<(), DataError> {
        while let Some(line) = next_record(&mut self.rdr, &mut self.rec, &self.file)? {
            self.last_line = line;
            if !visit(&mut CsvRow(&self.rec), Position::Line(line)) {
                break;
            }
        }
        Ok(())
    }

    fn end(&self) -> Position {
        Position::Line(self.last_line + 1)
    }
}

/// Opens a CSV (gzip-compressed when it starts with the gzip magic) and lays its header over the card.
fn open_private_csv(path: &Path, card: &TaskCard, opts: &CsvOptions) -> Result<Scan<CsvRows>, DataError> {
    tabular_card(card, "CSV")?;
    let file = path.display().to_string();
    let io = |source| DataError::Io {
        file: file.clone(),
        source,
    };
    let mut raw = BufReader::new(File::open(path).map_err(io)?);
    let inner: Box<dyn Read> = if raw.fill_buf().map_err(io)?.starts_with(&GZIP_MAGIC) {
        Box::new(flate2::read::MultiGzDecoder::new(raw))
    } else {
        Box::new(raw)
    };
    let mut rdr = csv_reader(open_csv(inner, &file)?, opts.delimiter);
    let headers = read_header(&mut rdr, &file)?;
    let plan = Plan::new(card, opts, headers, &file, Position::Line(1))?;
    Ok(Scan {
        rows: CsvRows {
            file: file.clone(),
            rdr,
            rec: ByteRecord::new(),
            last_line: 1,
        },
        file,
        plan,
    })
}

/// What `read_private_csv` (or another own-file reader) read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadReport {
    /// The file (a folder for an image folder).
    pub file: String,
    /// Data rows (images) loaded (= `Dataset::n`).
    pub rows: usize,
    /// Rows per class, in class-id order.
    pub class_counts: Vec<u64>,
    /// Classes of the card without any row, in class-id order. An image folder lacking a class's
    /// sub-folder (or with an empty one) still loads; the class is listed here.
    pub absent_classes: Vec<String>,
    /// Missing cells (empty, `NA` or null) per card feature column, all imputed with the card's fill.
    pub missing_per_column: BTreeMap<String, u64>,
    /// Cells mapped to the implicit `<other>` level, per categorical column with `unknown = "other"`.
    pub other_per_column: BTreeMap<String, u64>,
    /// Numeric cells beyond `OUT_OF_RANGE_STDS` card standard deviations, per numeric column.
    pub out_of_range_per_column: BTreeMap<String, u64>,
    /// Local columns not used by the card, in file order.
    pub ignored_columns: Vec<String>,
    /// Missing cells imputed in total.
    pub imputed: u64,
    /// The card's modality blocks the file lacks (every column absent), in card order: their inputs are
    /// 0 and their presence input 0 in every row. Empty without `[[modalities]]`.
    pub absent_modalities: Vec<String>,
}

impl LoadReport {
    /// A report with only the file, the rows per class and the absent classes filled in (image readers).
    pub(crate) fn for_classes(file: String, classes: &[String], labels: &[u32]) -> LoadReport {
        let mut class_counts = vec![0u64; classes.len()];
        for &l in labels {
            if let Some(c) = class_counts.get_mut(l as usize) {
                *c += 1;
            }
        }
        LoadReport {
            file,
            rows: labels.len(),
            absent_classes: absent(classes, &class_counts),
            class_counts,
            missing_per_column: BTreeMap::new(),
            other_per_column: BTreeMap::new(),
            out_of_range_per_column: BTreeMap::new(),
            ignored_columns: Vec::new(),
            imputed: 0,
            absent_modalities: Vec::new(),
        }
    }
}

fn absent(classes: &[String], counts: &[u64]) -> Vec<String> {
    classes
        .iter()
        .zip(counts)
        .filter(|(_, &n)| n == 0)
        .map(|(c, _)| c.clone())
        .collect()
}

/// Reads an institution's own CSV against `card`: every card column found in the header (any
/// order, renamed through `opts.columns`), every cell checked, missing cells imputed and numbers
/// scaled with the card's statistics. The file is streamed (gzip-compressed files are inflated on
/// the fly, recognised by their magic bytes); on the first bad cell the whole read fails with an
/// error naming file, line and column, and no partial dataset is returned.
pub fn read_private_csv(path: &Path, card: &TaskCard, opts: &CsvOptions) -> Result<(Dataset, LoadReport), DataError> {
    load_scan(open_private_csv(path, card, opts)?, card)
}

/// Reads every row of an opened own file through the shared encoder: all rows or an error.
pub(crate) fn load_scan<S: RowStream>(mut scan: Scan<S>, card: &TaskCard) -> Result<(Dataset, LoadReport), DataError> {
    let dim = scan.plan.dim;
    let mut row = vec![0f32; dim];
    let mut tally = Tally::new(&scan.plan, card.classes().len());
    let mut problems = Vec::new();
    let mut features = Vec::new();
    let mut labels = Vec::new();
    let mut targets = Vec::new();
    let plan = &scan.plan;
    scan.rows.for_each_row(&mut |src, at| {
        tally.rows += 1;
        match plan.decode(src, at, &mut row, &mut tally, &mut problems) {
            Some(label) => {
                features.extend_from_slice(&row);
                labels.push(label);
                if card.is_regression() {
                    targets.push(tally.target);
                }
                tally.class_counts[label as usize] += 1;
                true
            }
            None => false,
        }
    })?;
    if let Some(first) = problems.into_iter().next() {
        return Err(first.into_error(&scan.file));
    }
    if labels.is_empty() {
        return Err(scan.no_rows().into_error(&scan.file));
    }
    let ds = Dataset::new(
        card.name.clone(),
        features,
        labels,
        dim,
        DataKind::Tabular,
        card.classes().to_vec(),
    )?;
    // Unlabelled rows of a regression task carry no targets (every one would be NaN).
    let ds = match card.regression.is_some() && plan_labelled(&scan.plan) {
        true => ds.with_targets(&card.classes()[0], targets)?,
        false => ds,
    };
    let report = LoadReport {
        file: scan.file.clone(),
        rows: ds.n,
        absent_classes: absent(card.classes(), &tally.class_counts),
        class_counts: tally.class_counts,
        missing_per_column: scan.count_map(&tally.missing, |_| true),
        other_per_column: scan.count_map(&tally.other, Slot::has_other),
        out_of_range_per_column: scan.count_map(&tally.out_of_range, Slot::has_range),
        ignored_columns: scan.plan.ignored.clone(),
        imputed: tally.imputed,
        absent_modalities: scan.plan.absent_blocks(),
    };
    Ok((ds, report))
}

fn plan_labelled(plan: &crate::encode::Plan) -> bool {
    plan.label_field.is_some()
}

/// One card column as `check_csv` saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ColumnCheck {
    /// The card's name of the column.
    pub card: String,
    /// The file's header for it.
    pub local: String,
    /// `numeric`, `categorical`, `ordinal` or `label`.
    pub kind: String,
    /// Missing cells (imputed on load; for the label: refused).
    pub missing: u64,
    /// Cells that went to the implicit `<other>` level (categorical columns with
    /// `unknown = "other"` only).
    pub other: Option<u64>,
    /// Numeric cells more than `OUT_OF_RANGE_STDS` card standard deviations from the card mean.
    pub out_of_range: Option<u64>,
}

/// The data steward's view of one file: what the participant would load, or why it would refuse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// The file.
    pub file: String,
    /// Why nothing (or nothing more) could be read: unreadable file, bad header, columns missing.
    pub fatal: Option<String>,
    /// Data rows read.
    pub rows: u64,
    /// Rows without any problem (what would load if the file were fixed).
    pub rows_ok: u64,
    /// Class names, in class-id order.
    pub classes: Vec<String>,
    /// Problem-free rows per class.
    pub class_counts: Vec<u64>,
    /// The card's columns (features, then the label) with their counters.
    pub columns: Vec<ColumnCheck>,
    /// Local columns the card does not use.
    pub ignored_columns: Vec<String>,
    /// The first problems, each `file:line:column: message`.
    pub problems: Vec<String>,
    /// All problems found (also those not listed).
    pub problem_count: u64,
    /// Rows with problems, by the kind of their first problem.
    pub rows_refused: BTreeMap<ProblemKind, u64>,
    /// The card's modality blocks the file lacks (read as absent, not refused); left out of the JSON
    /// when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub absent_modalities: Vec<String>,
}

impl CheckReport {
    fn empty(path: &Path, card: &TaskCard) -> CheckReport {
        CheckReport {
            file: path.display().to_string(),
            fatal: None,
            rows: 0,
            rows_ok: 0,
            classes: card.classes().to_vec(),
            class_counts: vec![0; card.classes().len()],
            columns: Vec::new(),
            ignored_columns: Vec::new(),
            problems: Vec::new(),
            problem_count: 0,
            rows_refused: BTreeMap::new(),
            absent_modalities: Vec::new(),
        }
    }

    /// The report on a file that could not be read at all.
    pub(crate) fn fatal(path: &Path, card: &TaskCard, why: String) -> CheckReport {
        CheckReport {
            fatal: Some(why),
            ..CheckReport::empty(path, card)
        }
    }

    /// The report on a file read whole without a problem (image folders, IDX pairs).
    pub(crate) fn loaded(path: &Path, card: &TaskCard, loaded: &LoadReport) -> CheckReport {
        CheckReport {
            rows: loaded.rows as u64,
            rows_ok: loaded.rows as u64,
            class_counts: loaded.class_counts.clone(),
            ..CheckReport::empty(path, card)
        }
    }

    /// Whether the participant would load the file: it opened, every card column is there,
    /// it has data rows, and no cell has a problem.
    pub fn usable(&self) -> bool {
        self.fatal.is_none() && self.problem_count == 0 && self.rows_ok > 0
    }
}

/// Reads `path` exactly as `read_private_csv` would, but keeps going after a problem, listing the
/// first `max_problems` and counting all. Only counters are kept (never rows), so memory does not
/// grow with the file. Out-of-range values (beyond `OUT_OF_RANGE_STDS` card std) are counted, not
/// refused.
pub fn check_csv(path: &Path, card: &TaskCard, opts: &CsvOptions, max_problems: usize) -> CheckReport {
    check_scan(open_private_csv(path, card, opts), path, card, max_problems)
}

/// The steward's check of an opened own file (or of the error opening it) through the shared encoder.
pub(crate) fn check_scan<S: RowStream>(
    opened: Result<Scan<S>, DataError>,
    path: &Path,
    card: &TaskCard,
    max_problems: usize,
) -> CheckReport {
    let mut scan = match opened {
        Ok(s) => s,
        Err(e) => return CheckReport::fatal(path, card, e.to_string()),
    };
    let mut report = CheckReport::empty(path, card);
    let mut row = vec![0f32; scan.plan.dim];
    let mut tally = Tally::new(&scan.plan, card.classes().len());
    let mut problems = Vec::new();
    let note = |report: &mut CheckReport, p: Problem, file: &str| {
        report.problem_count += 1;
        if report.problems.len() < max_problems {
            report.problems.push(p.into_error(file).to_string());
        }
    };
    let (plan, file) = (&scan.plan, scan.file.as_str());
    let read = scan.rows.for_each_row(&mut |src, at| {
        tally.rows += 1;
        match plan.decode(src, at, &mut row, &mut tally, &mut problems) {
            Some(label) => {
                tally.rows_ok += 1;
                tally.class_counts[label as usize] += 1;
            }
            None => {
                if let Some(first) = problems.first() {
                    *report.rows_refused.entry(first.kind).or_insert(0) += 1;
                }
                for p in problems.drain(..) {
                    note(&mut report, p, file);
                }
            }
        }
        true
    });
    if let Err(e) = read {
        report.fatal = Some(e.to_string());
    }
    if tally.rows == 0 && report.fatal.is_none() {
        note(&mut report, scan.no_rows(), &scan.file);
    }
    report.rows = tally.rows;
    report.rows_ok = tally.rows_ok;
    report.class_counts = tally.class_counts;
    report.ignored_columns = scan.plan.ignored.clone();
    report.absent_modalities = scan.plan.absent_blocks();
    report.columns = scan
        .plan
        .slots
        .iter()
        .enumerate()
        .map(|(s, slot)| ColumnCheck {
            card: slot.card.clone(),
            local: slot.local.clone(),
            kind: slot.kind.into(),
            missing: tally.missing[s],
            other: slot.has_other().then_some(tally.other[s]),
            out_of_range: slot.has_range().then_some(tally.out_of_range[s]),
        })
        .collect();
    let label_missing = report
        .rows_refused
        .get(&ProblemKind::MissingLabel)
        .copied()
        .unwrap_or(0);
    report.columns.push(ColumnCheck {
        card: card.label.column.clone().unwrap_or_default(),
        local: scan.plan.label_local.clone(),
        kind: "label".into(),
        missing: label_missing,
        other: None,
        out_of_range: None,
    });
    report
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "file        {}", self.file)?;
        let verdict = if self.usable() {
            "usable".to_string()
        } else if let Some(fatal) = &self.fatal {
            format!("NOT USABLE: {fatal}")
        } else {
            let bad_rows: u64 = self.rows_refused.values().sum();
            format!("NOT USABLE: {} problems in {bad_rows} rows", self.problem_count)
        };
        writeln!(f, "verdict     {verdict}")?;
        if self.fatal.is_some() && self.columns.is_empty() {
            return Ok(());
        }
        writeln!(f, "rows        {} read, {} without problems", self.rows, self.rows_ok)?;
        let classes: Vec<String> = self
            .classes
            .iter()
            .zip(&self.class_counts)
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        writeln!(f, "classes     {}", classes.join(", "))?;
        if !self.ignored_columns.is_empty() {
            writeln!(
                f,
                "ignored     {} (not in the task card)",
                self.ignored_columns.join(", ")
            )?;
        }
        if !self.absent_modalities.is_empty() {
            writeln!(
                f,
                "absent      modality {} (every column of the block absent: read as absent)",
                self.absent_modalities.join(", ")
            )?;
        }
        if self.columns.is_empty() {
            return Ok(());
        }
        let w = self
            .columns
            .iter()
            .flat_map(|c| [c.card.len(), c.local.len()])
            .chain([6])
            .max()
            .unwrap_or(6);
        writeln!(
            f,
            "\n{:<w$}  {:<w$}  {:<11}  {:>8}  {:>8}  {:>8}",
            "column",
            "in file",
            "kind",
            "missing",
            "other",
            format!(">{OUT_OF_RANGE_STDS} std")
        )?;
        for c in &self.columns {
            writeln!(
                f,
                "{:<w$}  {:<w$}  {:<11}  {:>8}  {:>8}  {:>8}",
                c.card,
                c.local,
                c.kind,
                c.missing,
                c.other.map_or("-".to_string(), |n| n.to_string()),
                c.out_of_range.map_or("-".to_string(), |n| n.to_string())
            )?;
        }
        if self.problem_count > 0 {
            writeln!(
                f,
                "\nproblems (first {} of {})",
                self.problems.len(),
                self.problem_count
            )?;
            for p in &self.problems {
                writeln!(f, "  {p}")?;
            }
            writeln!(f, "\nrows refused, by first problem")?;
            for (kind, n) in &self.rows_refused {
                writeln!(f, "  {:<16} {n}", kind.name())?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small loans card the tests of every tabular reader share.
    pub(crate) const CARD: &str = r#"
name = "loans"
version = 1

[label]
column = "Class"
classes = ["good", "bad"]

[[features]]
name = "amount"
kind = "numeric"

[[features]]
name = "home"
kind = "categorical"
levels = ["own", "rent"]

[[features]]
name = "purpose"
kind = "categorical"
levels = ["car", "house"]
unknown = "other"

[[features]]
name = "grade"
kind = "ordinal"
levels = ["A", "B", "C"]

[preprocessing]
impute = "median"
scale = "standard"

[[preprocessing.stats]]
name = "amount"
fill = 100.0
mean = 120.0
std = 40.0

[[preprocessing.stats]]
name = "home"
fill_level = "rent"

[[preprocessing.stats]]
name = "purpose"
fill_level = "car"

[[preprocessing.stats]]
name = "grade"
fill = 1.0
mean = 1.0
std = 0.5

[public]
sha256 = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
rows = 10
format = "csv"
"#;

    pub(crate) fn card() -> TaskCard {
        TaskCard::from_toml_str(CARD, "card.toml").expect("the test card is valid")
    }

    /// Writes `text` to `name` in a fresh temp dir; the dir lives as long as the returned guard.
    pub(crate) fn file(name: &str, text: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write temp file");
        (dir, path)
    }

    fn read(name: &str, text: &str, opts: &CsvOptions) -> Result<(Dataset, LoadReport), DataError> {
        let (_dir, path) = file(name, text.as_bytes());
        read_private_csv(&path, &card(), opts).map_err(|e| strip_dir(e, &path))
    }

    /// Errors name the full path; tests compare against the file name only.
    fn strip_dir(e: DataError, path: &Path) -> DataError {
        match e {
            DataError::Row {
                file,
                at,
                column,
                kind,
                detail,
            } => {
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
                assert_eq!(Some(file.as_str()), path.to_str(), "the error names the file read");
                DataError::Row {
                    file: name.unwrap_or(file),
                    at,
                    column,
                    kind,
                    detail,
                }
            }
            other => other,
        }
    }

    /// The error message for `text` read as `x.csv` with default options.
    fn refused(text: &str) -> String {
        read("x.csv", text, &CsvOptions::default())
            .expect_err("bad input must be refused")
            .to_string()
    }

    pub(crate) const GOOD: &str = "amount,home,purpose,grade,Class\n\
                        160,own,car,C,good\n\
                        ,rent,house,A,bad\n\
                        80,NA,,,good\n";

    /// What GOOD encodes to, computed by hand from the card's statistics.
    pub(crate) fn good_rows() -> Vec<f32> {
        #[rustfmt::skip]
        let rows = vec![
            1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 2.0,   // (160-120)/40, own, car, (2-1)/0.5
            -0.5, 0.0, 1.0, 0.0, 1.0, 0.0, -2.0, // fill 100 -> -0.5, rent, house, (0-1)/0.5
            -1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0,  // (80-120)/40, fill rent, fill car, fill rank 1
        ];
        rows
    }

    #[test]
    fn unlabelled_rows_read_with_or_without_the_label_column() {
        let c = card();
        let opts = CsvOptions {
            unlabelled: true,
            ..CsvOptions::default()
        };
        // With the label column: it is ignored (its text need not be a class).
        let with = GOOD.replace(",good\n", ",???\n");
        let (_d1, p1) = file("u1.csv", with.as_bytes());
        let (ds, report) = read_private_csv(&p1, &c, &opts).expect("labels ignored");
        assert_eq!(ds.features, good_rows());
        assert!(ds.labels.iter().all(|&l| l == 0));
        assert_eq!(report.ignored_columns, vec!["Class".to_string()]);
        // Without it: the same rows.
        let mut lines: Vec<String> = Vec::new();
        for line in GOOD.lines() {
            let (rest, _) = line.rsplit_once(',').expect("a last column");
            lines.push(rest.to_string());
        }
        assert!(GOOD.lines().next().is_some_and(|h| h.ends_with(",Class")));
        let (_d2, p2) = file("u2.csv", (lines.join("\n") + "\n").as_bytes());
        let (ds2, _) = read_private_csv(&p2, &c, &opts).expect("no label column");
        assert_eq!(ds2.features, ds.features);
        // A labelled read of the same file still needs the label.
        let err = read_private_csv(&p2, &c, &CsvOptions::default())
            .expect_err("label required")
            .to_string();
        assert!(err.contains("Class"), "{err}");
    }

    #[test]
    fn reads_and_imputes_with_the_card_statistics() {
        let (ds, report) = read("good.csv", GOOD, &CsvOptions::default()).expect("valid file");
        assert_eq!((ds.n, ds.dim, ds.num_classes), (3, 7, 2));
        assert_eq!(ds.dim, card().input_dim());
        assert_eq!(ds.features, good_rows());
        assert_eq!(ds.labels, vec![0, 1, 0]);
        assert_eq!(ds.name, "loans");
        assert_eq!(report.rows, 3);
        assert_eq!(report.class_counts, vec![2, 1]);
        assert_eq!(report.imputed, 4);
        let missing: Vec<u64> = report.missing_per_column.values().copied().collect();
        // BTreeMap order: amount, grade, home, purpose.
        assert_eq!(missing, vec![1, 1, 1, 1]);
        assert!(report.ignored_columns.is_empty());
    }

    #[test]
    fn any_column_order_bom_quotes_and_renamed_headers() {
        let shuffled = "\u{feff}Class,extra,grade,purpose,amount,home\n\
                        good,\"a, quoted \"\"note\"\"\",C,car,160,own\n\
                        bad,,A,house,,\"rent\"\n\
                        good,x,,,80,NA\n";
        let (ds, report) = read("s.csv", shuffled, &CsvOptions::default()).expect("valid file");
        assert_eq!(ds.features, good_rows());
        assert_eq!(report.ignored_columns, vec!["extra".to_string()]);

        let renamed = "status;Amt;home;purpose;grade\ngood;160;own;car;C\nbad;;rent;house;A\ngood;80;NA;;\n";
        let opts = CsvOptions::from_args(";", &["Class=status".into(), "amount = Amt".into()]).expect("valid flags");
        let (ds, _) = read("r.csv", renamed, &opts).expect("valid file");
        assert_eq!(ds.features, good_rows());
        assert_eq!(ds.labels, vec![0, 1, 0]);
    }

    #[test]
    fn unknown_level_goes_to_other_when_the_card_says_so() {
        let (ds, report) = read(
            "o.csv",
            "amount,home,purpose,grade,Class\n120,own,boat,B,bad\n",
            &CsvOptions::default(),
        )
        .expect("valid file");
        assert_eq!(ds.features, vec![0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
        let other: Vec<(&str, u64)> = report.other_per_column.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(other, vec![("purpose", 1)]);
        assert_eq!(report.out_of_range_per_column.keys().collect::<Vec<_>>(), ["amount"]);
    }

    #[test]
    fn every_bad_cell_names_file_line_and_column() {
        let h = "amount,home,purpose,grade,Class\n";
        let ok = "1,own,car,A,good\n";
        let cases = [
            (
                format!("{h}{ok}abc,own,car,A,good\n"),
                "x.csv:3:amount: `abc` is not a number",
            ),
            (
                format!("{h}NaN,own,car,A,good\n"),
                "x.csv:2:amount: `NaN` is not a finite number",
            ),
            (
                format!("{h}{ok}{ok}-inf,own,car,A,good\n"),
                "x.csv:4:amount: `-inf` is not a finite number",
            ),
            (
                format!("{h}1e300,own,car,A,good\n"),
                "x.csv:2:amount: `1e300` overflows a 32-bit float once scaled",
            ),
            (
                format!("{h}1,castle,car,A,good\n"),
                "x.csv:2:home: `castle` is not a level of `home` (own|rent)",
            ),
            (
                format!("{h}1,own,car,Z,good\n"),
                "x.csv:2:grade: `Z` is not a level of `grade` (A|B|C)",
            ),
            (
                format!("{h}1,own,car,A,meh\n"),
                "x.csv:2:Class: `meh` is not a class of the task (good|bad)",
            ),
            (
                format!("{h}1,own,car,A,NA\n"),
                "x.csv:2:Class: the label is missing (labels are never imputed)",
            ),
            (
                format!("{h}{ok}1,own,car\n"),
                "x.csv:3:grade: the row has 3 fields, the header 5: this column and those after it are absent",
            ),
            (
                format!("{h}1,own,car,A,good,7\n"),
                "x.csv:2:field 6: the row has 6 fields, the header 5",
            ),
            // A quoted field spanning two lines: the next record starts on line 4.
            (
                "amount,home,purpose,grade,Class,note\n1,own,car,A,good,\"two\nlines\"\nx,own,car,A,good,\n".into(),
                "x.csv:4:amount: `x` is not a number",
            ),
            (
                String::new(),
                "x.csv:1:header: empty file: a header row naming the columns is required",
            ),
            (h.to_string(), "x.csv:2:*: no data rows after the header"),
            (
                "1,own,car,A,good\n2,rent,car,B,bad\n".into(),
                "x.csv:1:header: missing columns of task `loans`: `amount`, `home`, `purpose`, `grade`, `Class`; \
                 none of the card's columns is in line 1: is the header row missing?",
            ),
            (
                "home,purpose,Class\nown,car,good\n".into(),
                "x.csv:1:header: missing columns of task `loans`: `amount`, `grade`",
            ),
            (
                "amount,home,purpose,grade,Class,home\n".into(),
                "x.csv:1:home: column `home` appears twice in the header (fields 2 and 6)",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(refused(&text), want, "for input {text:?}");
        }
        // Not UTF-8.
        let (_dir, path) = file("u.csv", b"amount,home,purpose,grade,Class\n1,\xff,car,A,good\n");
        let err = read_private_csv(&path, &card(), &CsvOptions::default()).expect_err("bad input must be refused");
        assert!(
            matches!(&err, DataError::Row { at: Position::Line(2), column, kind: ProblemKind::NotUtf8, .. } if column == "home"),
            "{err}"
        );
        // The error carries the path it read.
        assert!(
            err.to_string().starts_with(&format!("{}:2:home:", path.display())),
            "{err}"
        );
        let err = read_private_csv(Path::new("/nonexistent/own.csv"), &card(), &CsvOptions::default())
            .expect_err("no such file");
        assert!(
            err.to_string().starts_with("/nonexistent/own.csv: cannot read"),
            "{err}"
        );
    }

    #[test]
    fn bad_column_mappings_and_delimiters_are_refused() {
        let opts = CsvOptions::from_args(",", &["nope=x".into()]).expect("syntactically fine");
        let msg = read("m.csv", GOOD, &opts).expect_err("bad mapping").to_string();
        assert_eq!(
            msg,
            "m.csv:1:header: the column mapping names `nope`, which is not a column of task `loans`"
        );
        let opts = CsvOptions::from_args(",", &["amount=home".into()]).expect("syntactically fine");
        let msg = read("m.csv", GOOD, &opts).expect_err("bad mapping").to_string();
        assert_eq!(
            msg,
            "m.csv:1:header: card columns `amount` and `home` are both mapped to the local column `home`"
        );
        let opts = CsvOptions::from_args(",", &["amount=amt".into()]).expect("syntactically fine");
        let msg = read("m.csv", GOOD, &opts)
            .expect_err("renamed column absent")
            .to_string();
        assert_eq!(
            msg,
            "m.csv:1:header: missing column of task `loans`: `amount` (mapped to `amt`)"
        );
        for bad in [";;", "\"", "", "é"] {
            let err = CsvOptions::from_args(bad, &[]).expect_err("bad delimiter").to_string();
            assert!(
                err.starts_with(&format!("delimiter `{bad}`: must be one ASCII character")),
                "{err}"
            );
        }
        assert_eq!(CsvOptions::parse_delimiter("tab").expect("tab"), b'\t');
        let err = CsvOptions::from_args(",", &["amount".into()])
            .expect_err("no =")
            .to_string();
        assert_eq!(err, "column mapping `amount`: expected CARD=LOCAL");
        let err = CsvOptions::from_args(",", &["a=x".into(), "a=y".into()])
            .expect_err("twice")
            .to_string();
        assert_eq!(err, "column mapping `a=y`: this card column is mapped twice");
    }

    #[test]
    fn one_files_preprocessing_never_depends_on_another_files_rows() {
        let (_da, a) = file("a.csv", GOOD.as_bytes());
        // B: wildly different values and class balance.
        let mut b_text = String::from("amount,home,purpose,grade,Class\n");
        for i in 0..500 {
            b_text.push_str(&format!("{},rent,house,C,bad\n", 1_000_000 + i * 997));
        }
        let (_db, b) = file("b.csv", b_text.as_bytes());
        let c = card();
        let opts = CsvOptions::default();
        let (first, _) = read_private_csv(&a, &c, &opts).expect("valid");
        let (other, _) = read_private_csv(&b, &c, &opts).expect("valid");
        let (again, _) = read_private_csv(&a, &c, &opts).expect("valid");
        assert_eq!(first, again);
        assert_eq!(first.features, good_rows());
        // B's rows are scaled by the card, not by their own mean: the first is (1e6 - 120) / 40.
        assert_eq!(other.row(0)[0], ((1_000_000.0f64 - 120.0) / 40.0) as f32);
        // And the output moves exactly with the card's statistics.
        let shifted = TaskCard::from_toml_str(&CARD.replace("mean = 120.0", "mean = 80.0"), "c").expect("valid");
        let (moved, _) = read_private_csv(&a, &shifted, &opts).expect("valid");
        assert_eq!(moved.row(0)[0], 2.0);
        assert_eq!(moved.row(1)[0], 0.5);
        assert_eq!(moved.row(0)[1..], first.row(0)[1..]);
    }

    #[test]
    fn check_keeps_going_and_counts() {
        let text = "amount,home,purpose,grade,Class,extra\n\
                    160,own,car,C,good,1\n\
                    abc,castle,car,A,good,2\n\
                    9000,own,boat,B,bad,3\n\
                    ,own,car,B,meh,4\n\
                    1,own,car\n\
                    100,rent,house,A,bad,5\n";
        let (_dir, path) = file("steward.csv", text.as_bytes());
        let r = check_csv(&path, &card(), &CsvOptions::default(), 3);
        let p = path.display();
        assert!(!r.usable());
        assert_eq!(r.fatal, None);
        assert_eq!((r.rows, r.rows_ok), (6, 3));
        assert_eq!(r.class_counts, vec![1, 2]);
        assert_eq!(r.problem_count, 4);
        assert_eq!(
            r.problems,
            vec![
                format!("{p}:3:amount: `abc` is not a number"),
                format!("{p}:3:home: `castle` is not a level of `home` (own|rent)"),
                format!("{p}:5:Class: `meh` is not a class of the task (good|bad)"),
            ]
        );
        let refused: Vec<(ProblemKind, u64)> = r.rows_refused.iter().map(|(k, n)| (*k, *n)).collect();
        assert_eq!(
            refused,
            vec![
                (ProblemKind::RaggedRow, 1),
                (ProblemKind::NotANumber, 1),
                (ProblemKind::UnknownClass, 1)
            ]
        );
        let amount = &r.columns[0];
        // 9000 is (9000 - 120) / 40 = 222 std from the card mean.
        assert_eq!(
            (amount.card.as_str(), amount.missing, amount.out_of_range),
            ("amount", 1, Some(1))
        );
        assert_eq!(r.columns[2].other, Some(1));
        assert_eq!((r.columns[1].other, r.columns[1].out_of_range), (None, None));
        assert_eq!(r.columns[4].kind, "label");
        assert_eq!(r.ignored_columns, vec!["extra".to_string()]);
        let shown = r.to_string();
        assert!(shown.contains("NOT USABLE: 4 problems in 3 rows"), "{shown}");
        assert!(shown.contains("problems (first 3 of 4)"), "{shown}");
        assert!(shown.contains("rows        6 read, 3 without problems"), "{shown}");
        assert!(shown.contains("classes     good 1, bad 2"), "{shown}");
        assert!(shown.contains("ragged-row       1"), "{shown}");

        // The same file, fixed, is usable and loads exactly what the check counted.
        let (_dir2, fixed) = file("fixed.csv", GOOD.as_bytes());
        let r = check_csv(&fixed, &card(), &CsvOptions::default(), 3);
        assert!(r.usable(), "{r}");
        assert_eq!(r.rows_ok, 3);
        assert!(r.to_string().contains("verdict     usable"));
        let (ds, _) = read_private_csv(&fixed, &card(), &CsvOptions::default()).expect("usable file loads");
        assert_eq!(ds.n as u64, r.rows_ok);
    }

    #[test]
    fn check_reports_fatal_header_problems() {
        let (_dir, path) = file("h.csv", b"home,Class\nown,good\n");
        let r = check_csv(&path, &card(), &CsvOptions::default(), 10);
        assert!(!r.usable());
        let fatal = r.fatal.clone().expect("missing columns are fatal");
        assert!(
            fatal.ends_with("h.csv:1:header: missing columns of task `loans`: `amount`, `purpose`, `grade`"),
            "{fatal}"
        );
        assert!(r.to_string().contains("NOT USABLE"), "{r}");
        let (_dir, path) = file("e.csv", b"amount,home,purpose,grade,Class\n");
        let r = check_csv(&path, &card(), &CsvOptions::default(), 10);
        assert!(!r.usable());
        assert_eq!(r.problem_count, 1);
        assert!(
            r.problems[0].ends_with("e.csv:2:*: no data rows after the header"),
            "{:?}",
            r.problems
        );
    }

    #[test]
    fn image_cards_are_not_read_as_csv() {
        let text = r#"
name = "digits"
version = 1
[label]
classes = ["0", "1"]
[image]
height = 2
width = 2
channels = 1
[public]
sha256 = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
rows = 5
format = "idx"
"#;
        let img = TaskCard::from_toml_str(text, "img.toml").expect("valid");
        let (_dir, path) = file("i.csv", GOOD.as_bytes());
        let err = read_private_csv(&path, &img, &CsvOptions::default())
            .expect_err("image card")
            .to_string();
        assert!(
            err.contains("field `image`") && err.contains("not read as CSV"),
            "{err}"
        );
    }
}
