//! Datasets: readers (IDX, schema-driven CSV), the catalog with embedded copies, seeded federated
//! splits, non-IID partitioners and the public transfer-set digest. See docs/data.md.
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
mod error;
pub mod idx;
mod partition;
mod rng;
mod split;
pub mod tabular;

pub use bytes::{maybe_gunzip, read_file, GZIP_MAGIC, MAX_DECOMPRESSED};
pub use catalog::{
    catalog, load, load_fashion_mnist, CatalogEntry, LoadOptions, FASHION_MNIST_DIR, FASHION_MNIST_FILES,
    FASHION_MNIST_INSTALL,
};
pub use dataset::{DataKind, Dataset};
pub use digest::{public_digest, PUBLIC_DIGEST_TAG};
pub use error::DataError;
pub use partition::Partition;
pub use split::{split, FederatedSplit, SplitConfig};
