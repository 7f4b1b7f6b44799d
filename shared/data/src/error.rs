//! `DataError`: every way loading or splitting a dataset can fail, each naming the file, where in
//! it, and what was expected, so that a bad file or flag yields a clear message instead of a panic.

use std::path::PathBuf;

use crate::private::ProblemKind;

/// An error from reading, decoding, cataloguing or splitting a dataset.
///
/// `file` fields name where the bytes came from: a filesystem path, or `embedded:<file>` for the
/// copies compiled into the binary.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file could not be opened or read (missing, unreadable).
    #[error("{file}: cannot read: {source}")]
    Io {
        /// The path that was being read.
        file: String,
        /// The operating-system error.
        #[source]
        source: std::io::Error,
    },

    /// A gzip stream (detected by its magic bytes 1f 8b) is truncated or corrupt, or inflates past
    /// the size cap.
    #[error("{file}: gzip stream broken after {decompressed} decompressed bytes: {detail}")]
    Gzip {
        /// The file holding the gzip stream.
        file: String,
        /// How many bytes had been decompressed when the error occurred.
        decompressed: u64,
        /// What went wrong.
        detail: String,
    },

    /// An IDX file (MNIST format) does not match the format or the expected shape.
    #[error("{file}: IDX byte offset {offset}: expected {expected}, found {found}")]
    Idx {
        /// The IDX file.
        file: String,
        /// Byte offset in the (decompressed) IDX stream where the problem was found.
        offset: u64,
        /// What the reader expected there.
        expected: String,
        /// What it found instead.
        found: String,
    },

    /// A CSV file does not match its dataset's schema (field count, header, number, category, label).
    #[error("{file}: line {line}: expected {expected}, found {found}")]
    Csv {
        /// The CSV file.
        file: String,
        /// 1-based line number (line 1 is the header when there is one).
        line: u64,
        /// What the schema expected.
        expected: String,
        /// What the file holds instead.
        found: String,
    },

    /// A `.ts` series file does not match its format or the task card (ragged or missing values, an
    /// unknown class, a wrong number of dimensions). Line 0 means the file as a whole.
    #[error("{file}: line {line}: expected {expected}, found {found}")]
    Series {
        /// The series file.
        file: String,
        /// 1-based line number (0: the whole file).
        line: u64,
        /// What the card or the format expected.
        expected: String,
        /// What the file holds instead.
        found: String,
    },

    /// Two files that must describe the same samples disagree (e.g. image and label counts).
    #[error("{file}: {detail}")]
    Mismatch {
        /// The file found inconsistent with its partner.
        file: String,
        /// What disagrees.
        detail: String,
    },

    /// The dataset name is not in the catalog.
    #[error("unknown dataset `{name}`; known datasets: {}", known.join(", "))]
    UnknownDataset {
        /// The name that was asked for.
        name: String,
        /// Every name the catalog knows.
        known: Vec<String>,
    },

    /// A dataset that is installed rather than embedded was not found on disk.
    #[error("dataset `{name}`: {missing} not found in {}; {hint}", dir.display())]
    NotInstalled {
        /// The dataset name.
        name: String,
        /// The directory that was searched.
        dir: PathBuf,
        /// The first file that is missing.
        missing: String,
        /// How to install it (an exact command).
        hint: String,
    },

    /// Split or partition arguments that cannot be satisfied (too many participants, alpha <= 0,
    /// k > classes, fractions outside (0,1), ...).
    #[error("invalid split: {0}")]
    InvalidSplit(String),

    /// A task card whose fields contradict each other (or a card unfit for the operation).
    #[error("{file}: task card field `{field}`: {problem}")]
    Card {
        /// The card file (or `task card` when it has no file).
        file: String,
        /// The offending field, as a TOML path (`features[2].levels`, `public.sha256`).
        field: String,
        /// What is wrong with it.
        problem: String,
    },

    /// A task card that is not valid TOML or holds keys or values the card format does not have.
    #[error("{file}: not a valid task card: {detail}")]
    CardSyntax {
        /// The card file.
        file: String,
        /// The TOML parser's message (with line and column).
        detail: String,
    },

    /// A header, row or cell of an institution's own CSV or Parquet file that does not fit the
    /// task card.
    #[error("{file}:{at}:{column}: {detail}")]
    Row {
        /// The CSV or Parquet file.
        file: String,
        /// Where: a CSV line, a Parquet data row, or a Parquet file's schema.
        at: Position,
        /// The column as the file names it; `header` for a header (schema) problem, `*` for the
        /// whole row or file.
        column: String,
        /// The kind of problem (stable name).
        kind: ProblemKind,
        /// What is wrong, with the offending text.
        detail: String,
    },

    /// A file that is not readable Parquet (bad magic, footer or page, a codec this build lacks).
    #[error("{file}: not readable as Parquet: {detail}")]
    Parquet {
        /// The Parquet file.
        file: String,
        /// The Parquet or Arrow reader's message.
        detail: String,
    },

    /// An image (or a folder) of an institution's own image folder that cannot be read or does
    /// not fit the task card's shape and classes.
    #[error("{file}: expected {expected}, found {found}")]
    Image {
        /// The image file or folder.
        file: String,
        /// What the card requires there.
        expected: String,
        /// What the file or folder holds instead.
        found: String,
    },

    /// An option of a reader (delimiter, column mapping) that cannot be used.
    #[error("{what}: {problem}")]
    InvalidOption {
        /// The option and its value.
        what: String,
        /// Why it cannot be used.
        problem: String,
    },

    /// A `Dataset` whose fields are inconsistent (e.g. `features.len() != n * dim`).
    #[error("invalid dataset `{name}`: {detail}")]
    InvalidDataset {
        /// The dataset's name.
        name: String,
        /// Which invariant is broken.
        detail: String,
    },
}

/// Where in an own file a problem is: CSV files are counted in lines, columnar files (Parquet) in
/// data rows, and a Parquet file's column names and types are its schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Position {
    /// 1-based line of a CSV file where the record starts (line 1 is the header); shown as `N`.
    Line(u64),
    /// 1-based data row of a Parquet file (the first data row is row 1); shown as `row N`.
    Row(u64),
    /// The schema (column names and types) of a Parquet file; shown as `schema`.
    Schema,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Position::Line(n) => write!(f, "{n}"),
            Position::Row(n) => write!(f, "row {n}"),
            Position::Schema => f.write_str("schema"),
        }
    }
}
