//! Settings both kinds of node share: the dataset and seeded split that define the public transfer set.
//! Every node of a federation must use the same values, or the public-set digests will not match.

use std::path::PathBuf;

use serde::Deserialize;

/// The dataset and seeded split every node derives the public transfer set from.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSettings {
    /// Catalog name (`mnist-10k`, `fashion-mnist`, `credit`, ...).
    pub dataset: String,
    /// Directory for datasets read from files (fashion-mnist).
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// Number of private shards in the split.
    pub participants: usize,
    /// `iid`, `dirichlet` (with `alpha`), `classes` (with `classes_per_node`) or `quantity` (with `alpha`).
    #[serde(default = "default_partition")]
    pub partition: String,
    /// Dirichlet concentration.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Classes per node for the `classes` partition.
    #[serde(default = "default_k")]
    pub classes_per_node: usize,
    /// Split seed (must be the same on every node).
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Fraction of the data held out as the test set.
    #[serde(default = "default_fraction")]
    pub test_fraction: f64,
    /// Fraction of the data used as the public transfer set.
    #[serde(default = "default_fraction")]
    pub public_fraction: f64,
}

fn default_partition() -> String {
    "dirichlet".into()
}
fn default_alpha() -> f64 {
    0.5
}
fn default_k() -> usize {
    2
}
fn default_seed() -> u64 {
    42
}
fn default_fraction() -> f64 {
    0.2
}

impl DataSettings {
    /// The split configuration these settings describe.
    pub fn split_config(&self) -> Result<crate::data::SplitConfig, SettingsError> {
        use crate::data::Partition;
        let partition = match self.partition.as_str() {
            "iid" => Partition::Iid,
            "dirichlet" => Partition::Dirichlet { alpha: self.alpha },
            "classes" => Partition::ClassesPerNode {
                k: self.classes_per_node,
            },
            "quantity" => Partition::QuantitySkew { alpha: self.alpha },
            other => return Err(SettingsError::Partition(other.to_string())),
        };
        Ok(crate::data::SplitConfig {
            participants: self.participants,
            partition,
            test_fraction: self.test_fraction,
            public_fraction: self.public_fraction,
            seed: self.seed,
        })
    }

    /// Loads the dataset and computes the seeded split.
    pub fn load_split(&self) -> Result<crate::data::FederatedSplit, SettingsError> {
        let opts = crate::data::LoadOptions {
            data_dir: self.data_dir.clone(),
        };
        let ds = crate::data::load(&self.dataset, &opts)?;
        Ok(crate::data::split(&ds, &self.split_config()?)?)
    }
}

/// Why data settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The partition name is unknown.
    #[error("unknown partition {0:?} (expected iid, dirichlet, classes or quantity)")]
    Partition(String),
    /// Loading or splitting the dataset failed.
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
}
