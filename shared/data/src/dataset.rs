//! `Dataset`: an in-memory labelled sample matrix (row-major f32), the one type every reader
//! produces and every split, model and evaluation consumes.

use serde::{Deserialize, Serialize};

use crate::DataError;

/// What the feature vector of a sample is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum DataKind {
    /// An image stored row-major, values scaled to [0, 1]; `dim == height * width * channels`
    /// with the channel last (`r g b r g b ...`): grey images (the catalog's, IDX files) have one
    /// channel, `dim == height * width`. Channels = `dim / (height * width)`.
    Image {
        /// Rows of pixels.
        height: usize,
        /// Columns of pixels.
        width: usize,
    },
    /// Tabular data: numeric columns and one-hot blocks (see `tabular::TabularSchema`). Before
    /// `split()` missing values are NaN and nothing is standardized; the parts `split()` returns
    /// are imputed and standardized.
    Tabular,
    /// Equal-length series: `dim == channels * length`, channel-major (value `c * length + t` is
    /// channel `c` at time `t`), normalized as the task card says (`[sequence] normalize`).
    Sequence {
        /// Values per time step (1: a univariate series).
        channels: usize,
        /// Time steps of every series.
        length: usize,
    },
}

/// A labelled dataset held in memory.
#[derive(Clone, PartialEq)]
pub struct Dataset {
    /// Catalog name (e.g. `mnist-10k`); subsets keep their parent's name.
    pub name: String,
    /// `n * dim` features, row-major.
    pub features: Vec<f32>,
    /// `n` class ids, each `< num_classes`.
    pub labels: Vec<u32>,
    /// Number of samples.
    pub n: usize,
    /// Features per sample.
    pub dim: usize,
    /// Number of classes (class ids are `0..num_classes`).
    pub num_classes: usize,
    /// Image or tabular.
    pub kind: DataKind,
    /// Human-readable class names, `num_classes` of them.
    pub class_names: Vec<String>,
    /// Regression tasks: the `n` targets in the label's units (every label is then 0 and the one
    /// "class" is the target's name). Empty for classification.
    pub targets: Vec<f32>,
}

impl std::fmt::Debug for Dataset {
    // The feature vector can hold tens of millions of values: print the shape, not the data.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataset")
            .field("name", &self.name)
            .field("n", &self.n)
            .field("dim", &self.dim)
            .field("num_classes", &self.num_classes)
            .field("kind", &self.kind)
            .field("class_names", &self.class_names)
            .field("regression", &self.is_regression())
            .finish_non_exhaustive()
    }
}

impl Dataset {
    /// Builds a dataset after checking that its fields agree (`features.len() == n * dim`, every
    /// label `< class_names.len()`, image `dim` a whole number of `height * width` channels).
    pub fn new(
        name: impl Into<String>,
        features: Vec<f32>,
        labels: Vec<u32>,
        dim: usize,
        kind: DataKind,
        class_names: Vec<String>,
    ) -> Result<Dataset, DataError> {
        let ds = Dataset {
            name: name.into(),
            n: labels.len(),
            num_classes: class_names.len(),
            features,
            labels,
            dim,
            kind,
            class_names,
            targets: Vec::new(),
        };
        ds.validate()?;
        Ok(ds)
    }

    /// The same rows as a regression dataset: `targets` (one finite value per row) replace the labels,
    /// and the one output is named `target`.
    pub fn with_targets(mut self, target: &str, targets: Vec<f32>) -> Result<Dataset, DataError> {
        self.labels = vec![0; self.n];
        self.num_classes = 1;
        self.class_names = vec![target.to_string()];
        self.targets = targets;
        self.validate()?;
        Ok(self)
    }

    /// Whether the rows carry regression targets.
    pub fn is_regression(&self) -> bool {
        !self.targets.is_empty()
    }

    /// Checks the invariants `new` establishes; useful for datasets built field by field.
    pub fn validate(&self) -> Result<(), DataError> {
        let bad = |detail: String| DataError::InvalidDataset {
            name: self.name.clone(),
            detail,
        };
        if self.labels.len() != self.n {
            return Err(bad(format!("{} labels for n = {}", self.labels.len(), self.n)));
        }
        if Some(self.features.len()) != self.n.checked_mul(self.dim) {
            return Err(bad(format!(
                "{} features for n * dim = {} * {}",
                self.features.len(),
                self.n,
                self.dim
            )));
        }
        if self.class_names.len() != self.num_classes {
            return Err(bad(format!(
                "{} class names for {} classes",
                self.class_names.len(),
                self.num_classes
            )));
        }
        if let Some((i, &l)) = self
            .labels
            .iter()
            .enumerate()
            .find(|(_, &l)| l as usize >= self.num_classes)
        {
            return Err(bad(format!("label {l} of sample {i} is not < {}", self.num_classes)));
        }
        if !self.targets.is_empty() {
            if self.targets.len() != self.n || self.num_classes != 1 {
                return Err(bad(format!(
                    "{} targets for n = {} (a regression dataset has one target per row and one output, not {})",
                    self.targets.len(),
                    self.n,
                    self.num_classes
                )));
            }
            if let Some(i) = self.targets.iter().position(|t| !t.is_finite()) {
                return Err(bad(format!("target of sample {i} is not finite")));
            }
        }
        if let DataKind::Image { height, width } = self.kind {
            let pixels = height.checked_mul(width);
            let whole_channels = pixels.is_some_and(|p| self.dim > 0 && self.dim.checked_rem(p) == Some(0));
            if !whole_channels && pixels != Some(self.dim) {
                return Err(bad(format!("image {height}x{width} does not match dim {}", self.dim)));
            }
        }
        if let DataKind::Sequence { channels, length } = self.kind {
            if channels == 0 || channels.checked_mul(length) != Some(self.dim) {
                return Err(bad(format!(
                    "sequence of {channels} channels x {length} steps does not match dim {}",
                    self.dim
                )));
            }
        }
        Ok(())
    }

    /// The features of sample `i`.
    ///
    /// # Panics
    /// If `i >= self.n` (like slice indexing).
    pub fn row(&self, i: usize) -> &[f32] {
        &self.features[i * self.dim..(i + 1) * self.dim]
    }

    /// A new dataset holding the samples `idx` in that order (repeats allowed), same name/kind/classes.
    ///
    /// # Panics
    /// If an index is `>= self.n` (like slice indexing).
    pub fn subset(&self, idx: &[usize]) -> Dataset {
        let mut features = Vec::with_capacity(idx.len() * self.dim);
        let mut labels = Vec::with_capacity(idx.len());
        for &i in idx {
            features.extend_from_slice(self.row(i));
            labels.push(self.labels[i]);
        }
        let targets = if self.targets.is_empty() {
            Vec::new()
        } else {
            idx.iter().map(|&i| self.targets[i]).collect()
        };
        Dataset {
            name: self.name.clone(),
            features,
            labels,
            n: idx.len(),
            dim: self.dim,
            num_classes: self.num_classes,
            kind: self.kind,
            class_names: self.class_names.clone(),
            targets,
        }
    }

    /// Samples per class, `num_classes` entries (labels out of range are ignored).
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0usize; self.num_classes];
        for &l in &self.labels {
            if let Some(c) = counts.get_mut(l as usize) {
                *c += 1;
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Dataset {
        Dataset::new(
            "tiny",
            vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
            vec![0, 1, 1],
            2,
            DataKind::Tabular,
            vec!["a".into(), "b".into()],
        )
        .expect("consistent by construction")
    }

    #[test]
    fn row_subset_and_counts() {
        let ds = tiny();
        assert_eq!(ds.row(1), &[2.0, 3.0]);
        let s = ds.subset(&[2, 0]);
        assert_eq!(s.n, 2);
        assert_eq!(s.features, vec![4.0, 5.0, 0.0, 1.0]);
        assert_eq!(s.labels, vec![1, 0]);
        assert_eq!(ds.class_counts(), vec![1, 2]);
        assert_eq!(s.name, "tiny");
    }

    #[test]
    fn new_rejects_inconsistent_fields() {
        let err = Dataset::new("x", vec![0.0; 5], vec![0, 0, 0], 2, DataKind::Tabular, vec!["a".into()])
            .expect_err("bad input must be refused");
        assert!(err.to_string().contains("5 features for n * dim = 3 * 2"), "{err}");
        let err = Dataset::new("x", vec![0.0; 2], vec![3], 2, DataKind::Tabular, vec!["a".into()])
            .expect_err("bad input must be refused");
        assert!(err.to_string().contains("label 3 of sample 0"), "{err}");
        let err = Dataset::new(
            "x",
            vec![0.0; 4],
            vec![0],
            4,
            DataKind::Image { height: 3, width: 3 },
            vec!["a".into()],
        )
        .expect_err("bad input must be refused");
        assert!(err.to_string().contains("3x3 does not match dim 4"), "{err}");
        // Three channels (RGB) of a 2x2 image.
        Dataset::new(
            "x",
            vec![0.0; 12],
            vec![0],
            12,
            DataKind::Image { height: 2, width: 2 },
            vec!["a".into()],
        )
        .expect("12 = 2 * 2 * 3 channels");
        let err = Dataset::new(
            "x",
            vec![0.0; 6],
            vec![0],
            6,
            DataKind::Sequence { channels: 2, length: 4 },
            vec!["a".into()],
        )
        .expect_err("bad input must be refused");
        assert!(
            err.to_string().contains("2 channels x 4 steps does not match dim 6"),
            "{err}"
        );
        Dataset::new(
            "x",
            vec![0.0; 6],
            vec![0],
            6,
            DataKind::Sequence { channels: 2, length: 3 },
            vec!["a".into()],
        )
        .expect("6 = 2 channels x 3 steps");
    }
}
