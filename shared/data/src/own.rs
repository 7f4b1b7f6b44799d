//! Which reader an institution's own file goes to: `PrivateFormat` (CSV, Parquet, image folder,
//! IDX pair), told from the path or named in a config, and the two entry points a participant
//! and a data steward call whatever the format (`read_private`, `check_private`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::imagefolder::{read_idx_private, read_image_folder};
use crate::parquet::{check_parquet, read_private_parquet};
use crate::private::{check_csv, read_private_csv, CheckReport, CsvOptions, LoadReport};
use crate::task::TaskCard;
use crate::{DataError, Dataset};

/// The format of an institution's own data (stable names, used in configs and flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PrivateFormat {
    /// A CSV with a header row (gzip-compressed or not): `read_private_csv`.
    Csv,
    /// A Parquet file: `read_private_parquet`.
    Parquet,
    /// A folder with one sub-folder of PNG/JPEG images per class: `read_image_folder`.
    ImageFolder,
    /// An IDX3 image file whose IDX1 label file lies beside it: `read_idx_private`.
    Idx,
    /// A `.ts` series file (sktime/aeon text format): `read_private_ts`.
    Ts,
}

impl PrivateFormat {
    /// Every format, in the order of their names in messages.
    pub const ALL: [PrivateFormat; 5] = [
        PrivateFormat::Csv,
        PrivateFormat::Parquet,
        PrivateFormat::ImageFolder,
        PrivateFormat::Idx,
        PrivateFormat::Ts,
    ];

    /// The stable name (`csv`, `parquet`, `image-folder`, `idx`, `ts`).
    pub fn name(self) -> &'static str {
        match self {
            PrivateFormat::Csv => "csv",
            PrivateFormat::Parquet => "parquet",
            PrivateFormat::ImageFolder => "image-folder",
            PrivateFormat::Idx => "idx",
            PrivateFormat::Ts => "ts",
        }
    }

    /// Tells the format from the path: a folder is an image folder; a file name ending in
    /// `.csv`, `.tsv` (optionally `.gz`) is CSV, `.parquet` or `.pq` Parquet, `.ts` (optionally `.gz`)
    /// a series file, and a name holding `idx3-ubyte` (optionally `.gz`) an IDX image file. Anything else is an error asking for
    /// the format by name.
    pub fn detect(path: &Path) -> Result<PrivateFormat, DataError> {
        if path.is_dir() {
            return Ok(PrivateFormat::ImageFolder);
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        let stem = name.strip_suffix(".gz").unwrap_or(&name);
        if stem.ends_with(".csv") || stem.ends_with(".tsv") {
            Ok(PrivateFormat::Csv)
        } else if name.ends_with(".parquet") || name.ends_with(".pq") {
            Ok(PrivateFormat::Parquet)
        } else if stem.contains("idx3-ubyte") {
            Ok(PrivateFormat::Idx)
        } else if stem.ends_with(".ts") {
            Ok(PrivateFormat::Ts)
        } else {
            Err(DataError::InvalidOption {
                what: format!("file `{}`", path.display()),
                problem: format!(
                    "cannot tell its format from the name (.csv, .csv.gz, .parquet, a folder, *-idx3-ubyte[.gz], .ts); \
                     name the format ({})",
                    names()
                ),
            })
        }
    }
}

fn names() -> String {
    PrivateFormat::ALL.map(PrivateFormat::name).join(", ")
}

impl fmt::Display for PrivateFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PrivateFormat {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PrivateFormat::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| DataError::InvalidOption {
                what: format!("format `{s}`"),
                problem: format!("expected one of {}", names()),
            })
    }
}

/// The IDX1 label file of an IDX3 image file: the same name with `images` -> `labels` and
/// `idx3` -> `idx1` (`train-images-idx3-ubyte.gz` -> `train-labels-idx1-ubyte.gz`).
pub fn idx_labels_path(images: &Path) -> PathBuf {
    let name = images
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    images.with_file_name(name.replace("images", "labels").replace("idx3", "idx1"))
}

/// Reads an institution's own data in the format told from the path (`PrivateFormat::detect`).
/// `opts` (column mapping, delimiter) applies to CSV and Parquet (the mapping only) files.
pub fn read_private(path: &Path, card: &TaskCard, opts: &CsvOptions) -> Result<(Dataset, LoadReport), DataError> {
    read_private_as(path, card, opts, PrivateFormat::detect(path)?)
}

/// Reads an institution's own data in the given format (a config's explicit choice).
pub fn read_private_as(
    path: &Path,
    card: &TaskCard,
    opts: &CsvOptions,
    format: PrivateFormat,
) -> Result<(Dataset, LoadReport), DataError> {
    let windows = card.sequence.as_ref().is_some_and(|s| s.windows.is_some());
    match format {
        PrivateFormat::Csv if windows => crate::windows::read_private_windows(path, card),
        PrivateFormat::Parquet | PrivateFormat::ImageFolder | PrivateFormat::Idx | PrivateFormat::Ts if windows => {
            Err(DataError::Card {
                file: path.display().to_string(),
                field: "sequence.windows".into(),
                problem: format!(
                    "task `{}` cuts windows from CSV files of long series; `{}` is read as {format}",
                    card.name,
                    path.display()
                ),
            })
        }
        PrivateFormat::Csv => read_private_csv(path, card, opts),
        PrivateFormat::Parquet => read_private_parquet(path, card, opts),
        PrivateFormat::ImageFolder => read_image_folder(path, card),
        PrivateFormat::Idx => read_idx_private(path, &idx_labels_path(path), card),
        PrivateFormat::Ts => crate::ts::read_private_ts(path, card),
    }
}

/// The data steward's check of `path` in `format`, or when `None` the format told from its name:
/// CSV and Parquet files are checked row by row (`check_csv`, `check_parquet`); image folders and
/// IDX pairs are read whole, and the report holds their rows and classes or the first problem as
/// `fatal`.
pub fn check_private(
    path: &Path,
    card: &TaskCard,
    opts: &CsvOptions,
    max_problems: usize,
    format: Option<PrivateFormat>,
) -> CheckReport {
    let format = match format.map_or_else(|| PrivateFormat::detect(path), Ok) {
        Ok(f) => f,
        Err(e) => return CheckReport::fatal(path, card, e.to_string()),
    };
    let windows = card.sequence.as_ref().is_some_and(|s| s.windows.is_some());
    match format {
        PrivateFormat::Csv if windows => match read_private_as(path, card, opts, format) {
            Ok((_, loaded)) => CheckReport::loaded(path, card, &loaded),
            Err(e) => CheckReport::fatal(path, card, e.to_string()),
        },
        PrivateFormat::Csv => check_csv(path, card, opts, max_problems),
        PrivateFormat::Parquet => check_parquet(path, card, opts, max_problems),
        PrivateFormat::ImageFolder | PrivateFormat::Idx | PrivateFormat::Ts => {
            match read_private_as(path, card, opts, format) {
                Ok((_, loaded)) => CheckReport::loaded(path, card, &loaded),
                Err(e) => CheckReport::fatal(path, card, e.to_string()),
            }
        }
    }
}

/// Reads the public transfer set a `card` names, in the card's public format: a CSV read like a private
/// file (its label column gives labels, for reporting only), an IDX3 image file (unlabelled: the
/// second value is `false` and every label is 0), or a `.ts` series file (labelled or not). Returns the
/// dataset and whether its labels are real.
pub fn read_public(path: &Path, card: &TaskCard) -> Result<(Dataset, bool), DataError> {
    match card.public.format {
        crate::task::PublicFormat::Csv if card.sequence.is_some() => {
            Ok((crate::windows::read_windows(path, card)?.0, true))
        }
        crate::task::PublicFormat::Csv => Ok((read_private_csv(path, card, &CsvOptions::default())?.0, true)),
        crate::task::PublicFormat::Idx => Ok((crate::imagefolder::read_public_idx(path, card)?, false)),
        crate::task::PublicFormat::Ts => crate::ts::read_public_ts(path, card),
        crate::task::PublicFormat::ImageFolder => Err(DataError::Card {
            file: path.display().to_string(),
            field: "public.format".into(),
            problem: "a public set travels as one file: use csv (tabular), idx (images) or ts (series)".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Arc;

    use ::parquet::arrow::ArrowWriter;
    use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray};

    use super::*;
    use crate::idx::write_idx;
    use crate::private::tests::{card, file, good_rows, GOOD};

    #[test]
    fn formats_are_told_from_the_path_or_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cases = [
            ("own.csv", PrivateFormat::Csv),
            ("OWN.CSV.GZ", PrivateFormat::Csv),
            ("own.tsv", PrivateFormat::Csv),
            ("own.parquet", PrivateFormat::Parquet),
            ("own.pq", PrivateFormat::Parquet),
            ("train-images-idx3-ubyte.gz", PrivateFormat::Idx),
            ("ItalyPowerDemand_TRAIN.ts", PrivateFormat::Ts),
            ("own.ts.gz", PrivateFormat::Ts),
        ];
        for (name, want) in cases {
            assert_eq!(PrivateFormat::detect(Path::new(name)).expect(name), want, "{name}");
        }
        assert_eq!(
            PrivateFormat::detect(dir.path()).expect("a folder"),
            PrivateFormat::ImageFolder
        );
        let err = PrivateFormat::detect(Path::new("own.xlsx"))
            .expect_err("unknown")
            .to_string();
        assert!(
            err.starts_with("file `own.xlsx`: cannot tell its format from the name")
                && err.ends_with("name the format (csv, parquet, image-folder, idx, ts)"),
            "{err}"
        );
        for f in PrivateFormat::ALL {
            assert_eq!(f.name().parse::<PrivateFormat>().expect("round trip"), f);
            let json = serde_json::to_string(&f).expect("serializes");
            assert_eq!(json, format!("\"{}\"", f.name()));
        }
        let err = "xlsx".parse::<PrivateFormat>().expect_err("unknown").to_string();
        assert_eq!(
            err,
            "format `xlsx`: expected one of csv, parquet, image-folder, idx, ts"
        );
        assert_eq!(
            idx_labels_path(Path::new("/d/train-images-idx3-ubyte.gz")),
            Path::new("/d/train-labels-idx1-ubyte.gz")
        );
    }

    #[test]
    fn read_private_dispatches_to_each_reader() {
        let c = card();
        let opts = CsvOptions::default();
        let (_d1, csv) = file("own.csv", GOOD.as_bytes());
        let (from_csv, _) = read_private(&csv, &c, &opts).expect("csv");
        assert_eq!(from_csv.features, good_rows());

        // Gzip-compressed CSV, recognised by its magic bytes.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(GOOD.as_bytes()).expect("compress");
        let (_d2, csv_gz) = file("own.csv.gz", &gz.finish().expect("compress"));
        assert_eq!(read_private(&csv_gz, &c, &opts).expect("csv.gz").0, from_csv);

        // Parquet.
        let col = |v: &[Option<&str>]| Arc::new(StringArray::from(v.to_vec())) as ArrayRef;
        let batch = RecordBatch::try_from_iter([
            (
                "amount",
                Arc::new(Float64Array::from(vec![Some(160.0), None, Some(80.0)])) as ArrayRef,
            ),
            ("home", col(&[Some("own"), Some("rent"), None])),
            ("purpose", col(&[Some("car"), Some("house"), None])),
            ("grade", col(&[Some("C"), Some("A"), None])),
            ("Class", col(&[Some("good"), Some("bad"), Some("good")])),
        ])
        .expect("columns");
        let (_d3, pq) = file("own.parquet", b"");
        let mut w =
            ArrowWriter::try_new(std::fs::File::create(&pq).expect("create"), batch.schema(), None).expect("writer");
        w.write(&batch).expect("write");
        w.close().expect("close");
        assert_eq!(read_private(&pq, &c, &opts).expect("parquet").0, from_csv);
        // The same bytes named explicitly, whatever the name.
        let renamed = pq.with_file_name("export.bin");
        std::fs::rename(&pq, &renamed).expect("rename");
        assert!(read_private(&renamed, &c, &opts).is_err());
        let (ds, _) = read_private_as(&renamed, &c, &opts, PrivateFormat::Parquet).expect("named format");
        assert_eq!(ds, from_csv);
        // And a CSV read as Parquet fails clearly.
        let err = read_private_as(&csv, &c, &opts, PrivateFormat::Parquet).expect_err("not parquet");
        assert!(matches!(err, DataError::Parquet { .. }), "{err}");
    }

    #[test]
    fn image_folders_and_idx_pairs_and_their_check() {
        let card = TaskCard::from_toml_str(
            &format!(
                "name = \"d\"\nversion = 1\n[label]\nclasses = [\"a\", \"b\"]\n[image]\nheight = 1\nwidth = 2\n\
                 channels = 1\n[public]\nsha256 = \"{}\"\nrows = 5\nformat = \"idx\"\n",
                "0".repeat(64)
            ),
            "d.toml",
        )
        .expect("valid card");
        let opts = CsvOptions::default();
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("own");
        std::fs::create_dir_all(root.join("b")).expect("mkdir");
        image::GrayImage::from_pixel(2, 1, image::Luma([255]))
            .save(root.join("b/1.png"))
            .expect("encode");
        let (ds, report) = read_private(&root, &card, &opts).expect("image folder");
        assert_eq!((ds.n, ds.features.clone()), (1, vec![1.0, 1.0]));
        assert_eq!(report.absent_classes, vec!["a".to_string()]);
        let r = check_private(&root, &card, &opts, 5, None);
        assert!(r.usable(), "{r}");
        assert_eq!(r.class_counts, vec![0, 1]);
        assert!(!r.to_string().contains("column"), "{r}");

        let img = dir.path().join("own-images-idx3-ubyte");
        std::fs::write(&img, write_idx(&[1, 1, 2], &[0, 255])).expect("write");
        std::fs::write(dir.path().join("own-labels-idx1-ubyte"), write_idx(&[1], &[0])).expect("write");
        let (ds, _) = read_private(&img, &card, &opts).expect("idx pair");
        assert_eq!((ds.features.clone(), ds.labels.clone()), (vec![0.0, 1.0], vec![0]));

        // A bad image makes the check fatal, with the loader's message.
        std::fs::write(root.join("b/2.png"), b"not a png").expect("write");
        let r = check_private(&root, &card, &opts, 5, None);
        assert!(!r.usable());
        let fatal = r.fatal.expect("fatal");
        assert!(fatal.contains("b/2.png: expected a PNG or JPEG image"), "{fatal}");
        let r = check_private(Path::new("own.xlsx"), &card, &opts, 5, None);
        assert!(r.fatal.is_some_and(|f| f.contains("cannot tell its format")));
        // Named explicitly, an IDX pair is checked whatever its name.
        let renamed = dir.path().join("own-images.bin");
        std::fs::rename(&img, &renamed).expect("rename");
        std::fs::rename(
            dir.path().join("own-labels-idx1-ubyte"),
            dir.path().join("own-labels.bin"),
        )
        .expect("rename");
        let r = check_private(&renamed, &card, &opts, 5, Some(PrivateFormat::Idx));
        assert!(r.usable(), "{r}");
    }
}
