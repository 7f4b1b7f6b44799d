//! Datasets: readers (IDX, schema-driven CSV), the catalog with embedded copies, seeded federated
//! splits, non-IID partitioners and the public transfer-set digest; the task card and the
//! readers of an institution's own files against it (CSV, Parquet, image folders, IDX, `.ts`
//! series; one row encoder for the tabular ones). See docs/data.md.
//!
//! ```no_run
//! use fedistill_data::{load, split, LoadOptions, SplitConfig};
//! let ds = load("mnist-10k", &LoadOptions::default())?;
//! let fed = split(&ds, &SplitConfig { participants: 5, seed: 7, ..SplitConfig::default() })?;
//! println!("{}", fed.public_digest_hex());
//! # Ok::<(), fedistill_data::DataError>(())
//! ```

mod bytes;
mod catalog;
mod dataset;
mod digest;
mod draft;
mod encode;
mod error;
pub mod idx;
mod imagefolder;
mod infer;
mod own;
mod parquet;
mod partition;
mod partition_spec;
mod private;
mod rng;
mod split;
mod stats;
pub mod tabular;
mod task;
mod ts;
mod windows;

#[cfg(test)]
mod regression_tests;

pub use crate::parquet::{check_parquet, read_private_parquet, PARQUET_BATCH_ROWS};
pub use bytes::{maybe_gunzip, read_file, GZIP_MAGIC, MAX_DECOMPRESSED};
pub use catalog::{
    catalog, embedded, load, load_fashion_mnist, CatalogEntry, LoadOptions, FASHION_MNIST_DIR, FASHION_MNIST_FILES,
    FASHION_MNIST_INSTALL,
};
pub use dataset::{DataKind, Dataset};
pub use digest::{public_digest, sha256_file, PUBLIC_DIGEST_TAG};
pub use draft::{draft_card, DraftError, DraftOptions};
pub use error::{DataError, Position};
pub use imagefolder::{read_idx_private, read_image_folder, read_public_idx, IMAGE_EXTENSIONS};
pub use infer::infer_schema_card;
pub use infer::{infer_card, InferOptions, DEFAULT_MAX_LEVELS};
pub use own::{check_private, idx_labels_path, read_private, read_private_as, read_public, PrivateFormat};
pub use partition::Partition;
pub use partition_spec::ParsePartitionError;
pub use private::{
    check_csv, read_private_csv, CheckReport, ColumnCheck, CsvOptions, LoadReport, ProblemKind, DEFAULT_MAX_PROBLEMS,
    OUT_OF_RANGE_STDS,
};
pub use split::{split, FederatedSplit, RawParts, SplitConfig};
pub use task::{
    presence_input_name, Augment, Feature, FeatureStats, ImageShape, Impute, Label, Modality, ModalityRange, Monotone,
    MonotoneDirection, Preprocessing, PublicFormat, PublicSet, Regression, Scale, SequenceShape, SeriesNorm, TaskCard,
    Transform, UnknownLevel, WindowLabel, Windows, CARD_DIGEST_TAG, CARD_VERSION, OTHER_LEVEL,
};
pub use ts::{
    infer_ts_card, parse_ts, read_private_ts, read_public_ts, read_ts, series_dataset, write_ts, TsFile, TsSeries,
    MAX_SERIES,
};
pub use windows::{read_private_windows, read_windows, WindowCounts};
