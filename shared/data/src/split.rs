//! Seeded federated split: test set, public transfer set, private shards per participant; for
//! tabular data, imputation and standardization fitted on the pooled private shards only and
//! applied to every part.

use serde::{Deserialize, Serialize};

use crate::digest::public_digest;
use crate::partition::{assign, Partition};
use crate::rng::SplitRng;
use crate::stats::{fit_numeric, mode};
use crate::tabular::{FeatureBlock, TabularSchema};
use crate::task::Impute;
use crate::{DataError, DataKind, Dataset};

/// How to split a dataset into a federation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SplitConfig {
    /// Number of participants (private shards), >= 1.
    pub participants: usize,
    /// How the private pool is dealt to participants.
    pub partition: Partition,
    /// Share of all samples held out as the test set, in (0, 1).
    pub test_fraction: f64,
    /// Share of all samples in the public transfer set, in (0, 1); `test + public < 1`.
    pub public_fraction: f64,
    /// Seed of the ChaCha20 stream that drives the whole split.
    pub seed: u64,
}

impl Default for SplitConfig {
    fn default() -> Self {
        SplitConfig {
            participants: 3,
            partition: Partition::Dirichlet { alpha: 0.5 },
            test_fraction: 0.2,
            public_fraction: 0.2,
            seed: 42,
        }
    }
}

/// A dataset split into a federation.
#[derive(Debug, Clone)]
pub struct FederatedSplit {
    /// Held-out test samples (labelled).
    pub test: Dataset,
    /// The public transfer set. Its labels are kept ONLY for evaluation; participants must treat it
    /// as unlabeled.
    pub public: Dataset,
    /// Sample ids (row indices in the loaded dataset) of `public`, in its row order.
    pub public_ids: Vec<u64>,
    /// One private shard per participant, each non-empty.
    pub shards: Vec<Dataset>,
    /// `public_digest(&public, &public_ids)`.
    pub public_digest: [u8; 32],
    /// Missing cells imputed, over all parts (a missing categorical cell counts once).
    pub imputed: usize,
    /// Sample ids of `test`, in its row order.
    pub test_ids: Vec<u64>,
    /// Sample ids of each shard, in its row order.
    pub shard_ids: Vec<Vec<u64>>,
}

impl FederatedSplit {
    /// The public digest as lowercase hex.
    pub fn public_digest_hex(&self) -> String {
        hex::encode(self.public_digest)
    }
}

/// Splits `ds` per `cfg`. The same dataset, config and seed give the same split on every machine.
///
/// Steps: shuffle all sample ids with ChaCha20(seed); the first `round(n * test_fraction)` are the
/// test set, the next `round(n * public_fraction)` the public set, the rest the private pool, dealt
/// to participants by `cfg.partition` (drawing further from the same stream). For tabular datasets
/// the imputation (median / mode) and standardization statistics are then fitted on the pooled
/// private shards and applied to test, public and shards; the public digest is taken last.
pub fn split(ds: &Dataset, cfg: &SplitConfig) -> Result<FederatedSplit, DataError> {
    ds.validate()?;
    let invalid = |m: String| Err(DataError::InvalidSplit(m));
    for (what, f) in [("test", cfg.test_fraction), ("public", cfg.public_fraction)] {
        if !(f.is_finite() && f > 0.0 && f < 1.0) {
            return invalid(format!("{what} fraction {f} is outside (0, 1)"));
        }
    }
    if cfg.test_fraction + cfg.public_fraction >= 1.0 {
        return invalid(format!(
            "test fraction {} + public fraction {} leave no private samples (the sum must be < 1)",
            cfg.test_fraction, cfg.public_fraction
        ));
    }
    if cfg.participants == 0 {
        return invalid("at least one participant is needed".into());
    }
    cfg.partition.validate(ds.num_classes)?;
    let n = ds.n;
    let n_test = (n as f64 * cfg.test_fraction).round() as usize;
    let n_public = (n as f64 * cfg.public_fraction).round() as usize;
    if n_test == 0 || n_public == 0 {
        return invalid(format!(
            "{n} samples give an empty {} set at fraction {}",
            if n_test == 0 { "test" } else { "public" },
            if n_test == 0 {
                cfg.test_fraction
            } else {
                cfg.public_fraction
            }
        ));
    }
    let n_private = n.saturating_sub(n_test + n_public);
    if n_private < cfg.participants {
        return invalid(format!(
            "more participants ({}) than private samples ({n_private} of {n} after test {n_test} and public {n_public})",
            cfg.participants
        ));
    }

    let mut rng = SplitRng::new(cfg.seed);
    let mut perm: Vec<usize> = (0..n).collect();
    rng.shuffle(&mut perm);
    let test_idx = &perm[..n_test];
    let public_idx = &perm[n_test..n_test + n_public];
    let pool = &perm[n_test + n_public..];
    let pool_labels: Vec<u32> = pool.iter().map(|&i| ds.labels[i]).collect();
    let positions = assign(&pool_labels, ds.num_classes, cfg.participants, &cfg.partition, &mut rng)?;
    let shard_idx: Vec<Vec<usize>> = positions
        .iter()
        .map(|ps| ps.iter().map(|&p| pool[p]).collect())
        .collect();

    let mut test = ds.subset(test_idx);
    let mut public = ds.subset(public_idx);
    let mut shards: Vec<Dataset> = shard_idx.iter().map(|idx| ds.subset(idx)).collect();

    let mut imputed = 0;
    if ds.kind == DataKind::Tabular {
        let prep = Preprocessor::fit(&shards, &blocks_for(ds));
        imputed += prep.apply(&mut test);
        imputed += prep.apply(&mut public);
        for s in &mut shards {
            imputed += prep.apply(s);
        }
    }
    let ids = |idx: &[usize]| idx.iter().map(|&i| i as u64).collect::<Vec<u64>>();
    let public_ids = ids(public_idx);
    let digest = public_digest(&public, &public_ids);
    Ok(FederatedSplit {
        test,
        public,
        public_ids,
        shards,
        public_digest: digest,
        imputed,
        test_ids: ids(test_idx),
        shard_ids: shard_idx.iter().map(|s| ids(s)).collect(),
    })
}

/// A fitted per-column transform.
#[derive(Debug, Clone, PartialEq)]
enum Fitted {
    /// Missing -> `median`, then `(x - mean) / std`.
    Numeric {
        index: usize,
        median: f64,
        mean: f64,
        std: f64,
    },
    /// Missing -> one-hot of level `mode`; values otherwise unchanged (0/1).
    OneHot { start: usize, len: usize, mode: usize },
}

/// The feature blocks of a tabular dataset: its catalog schema when the name and width match,
/// otherwise every feature is treated as numeric.
fn blocks_for(ds: &Dataset) -> Vec<FeatureBlock> {
    match TabularSchema::for_dataset(&ds.name) {
        Some(s) if s.kind == DataKind::Tabular && s.dim() == ds.dim => s.blocks(),
        _ => (0..ds.dim)
            .map(|index| FeatureBlock::Numeric {
                index,
                name: format!("x{index}"),
            })
            .collect(),
    }
}

struct Preprocessor(Vec<Fitted>);

impl Preprocessor {
    /// Fits medians, modes, means and standard deviations on the rows of `fit_on` only.
    fn fit(fit_on: &[Dataset], blocks: &[FeatureBlock]) -> Preprocessor {
        let rows = || fit_on.iter().flat_map(|d| (0..d.n).map(move |i| d.row(i)));
        let fitted = blocks
            .iter()
            .map(|b| match *b {
                FeatureBlock::Numeric { index, .. } => {
                    let values: Vec<f64> = rows().map(|r| f64::from(r[index])).collect();
                    let fit = fit_numeric(&values, Impute::Median);
                    Fitted::Numeric {
                        index,
                        median: fit.fill,
                        mean: fit.mean,
                        std: fit.std,
                    }
                }
                FeatureBlock::OneHot { start, len, .. } => {
                    let mut counts = vec![0usize; len];
                    for r in rows() {
                        if let Some(k) = (0..len).find(|&k| r[start + k] == 1.0) {
                            counts[k] += 1;
                        }
                    }
                    let mode = mode(&counts);
                    Fitted::OneHot { start, len, mode }
                }
            })
            .collect();
        Preprocessor(fitted)
    }

    /// Imputes and standardizes `ds` in place; returns the number of missing cells imputed.
    fn apply(&self, ds: &mut Dataset) -> usize {
        let dim = ds.dim;
        let mut imputed = 0;
        for row in ds.features.chunks_mut(dim.max(1)) {
            for f in &self.0 {
                match *f {
                    Fitted::Numeric {
                        index,
                        median,
                        mean,
                        std,
                    } => {
                        let mut v = f64::from(row[index]);
                        if v.is_nan() {
                            v = median;
                            imputed += 1;
                        }
                        row[index] = ((v - mean) / std) as f32;
                    }
                    Fitted::OneHot { start, len, mode } => {
                        if row[start..start + len].iter().any(|v| v.is_nan()) {
                            for k in 0..len {
                                row[start + k] = if k == mode { 1.0 } else { 0.0 };
                            }
                            imputed += 1;
                        }
                    }
                }
            }
        }
        imputed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 200 samples, 4 classes, dim 3; feature 0 = label (so shards are checkable), 1 = id.
    fn toy() -> Dataset {
        let n = 200;
        let mut f = Vec::new();
        let mut l = Vec::new();
        for i in 0..n {
            let c = (i % 4) as u32;
            f.extend_from_slice(&[c as f32, i as f32, 1.0]);
            l.push(c);
        }
        Dataset::new(
            "toy",
            f,
            l,
            3,
            DataKind::Image { height: 1, width: 3 },
            (0..4).map(|c| c.to_string()).collect(),
        )
        .expect("consistent")
    }

    #[test]
    fn parts_are_disjoint_and_cover_everything() {
        let ds = toy();
        let s = split(&ds, &SplitConfig::default()).expect("valid");
        assert_eq!(s.test.n, 40);
        assert_eq!(s.public.n, 40);
        assert_eq!(s.shards.len(), 3);
        let mut all: Vec<u64> = s.test_ids.iter().chain(&s.public_ids).copied().collect();
        for ids in &s.shard_ids {
            all.extend(ids);
        }
        all.sort_unstable();
        assert_eq!(all, (0..200).collect::<Vec<u64>>());
        // Rows really are the samples the ids name (feature 1 holds the id).
        for (k, &id) in s.public_ids.iter().enumerate() {
            assert_eq!(s.public.row(k)[1], id as f32);
        }
        for (shard, ids) in s.shards.iter().zip(&s.shard_ids) {
            assert!(shard.n > 0);
            for (k, &id) in ids.iter().enumerate() {
                assert_eq!(shard.row(k)[1], id as f32);
            }
        }
        assert_eq!(s.public_digest, public_digest(&s.public, &s.public_ids));
        assert_eq!(s.imputed, 0);
    }

    #[test]
    fn bad_configs_are_refused() {
        let ds = toy();
        let with = |f: &dyn Fn(&mut SplitConfig)| {
            let mut c = SplitConfig::default();
            f(&mut c);
            split(&ds, &c).expect_err("bad input must be refused").to_string()
        };
        assert_eq!(
            with(&|c| c.test_fraction = 0.0),
            "invalid split: test fraction 0 is outside (0, 1)"
        );
        assert_eq!(
            with(&|c| c.public_fraction = 1.0),
            "invalid split: public fraction 1 is outside (0, 1)"
        );
        assert!(with(&|c| c.public_fraction = f64::NAN).contains("public fraction NaN is outside (0, 1)"));
        assert!(with(&|c| {
            c.test_fraction = 0.5;
            c.public_fraction = 0.5
        })
        .contains("leave no private samples"));
        assert_eq!(
            with(&|c| c.participants = 121),
            "invalid split: more participants (121) than private samples (120 of 200 after test 40 and public 40)"
        );
        assert_eq!(
            with(&|c| c.participants = 0),
            "invalid split: at least one participant is needed"
        );
        assert!(with(&|c| c.test_fraction = 0.001).contains("empty test set"));
        assert!(with(&|c| c.partition = Partition::ClassesPerNode { k: 5 }).contains("k must be in 1..=4"));
        assert!(with(&|c| c.partition = Partition::Dirichlet { alpha: -0.5 }).contains("alpha must be"));
        // 120 participants on 120 private samples is possible: one sample each.
        let ok = split(
            &ds,
            &SplitConfig {
                participants: 120,
                ..SplitConfig::default()
            },
        )
        .expect("valid");
        assert!(ok.shards.iter().all(|s| s.n == 1));
    }

    #[test]
    fn tabular_stats_come_from_private_shards_only() {
        // One numeric feature whose raw value is the sample id (sample 3 missing). The expected
        // statistics are recomputed here from the raw values of the private ids only; if test or
        // public rows leaked into the fit, the public rows would not match.
        let n = 100;
        let f: Vec<f32> = (0..n).map(|i| if i == 3 { f32::NAN } else { i as f32 }).collect();
        let l: Vec<u32> = (0..n).map(|i| (i % 2) as u32).collect();
        let ds = Dataset::new(
            "unknown-tabular",
            f,
            l,
            1,
            DataKind::Tabular,
            vec!["a".into(), "b".into()],
        )
        .expect("consistent");
        let cfg = SplitConfig {
            participants: 2,
            partition: Partition::Iid,
            ..SplitConfig::default()
        };
        let s = split(&ds, &cfg).expect("valid");
        let private: Vec<u64> = s.shard_ids.iter().flatten().copied().collect();
        let mut present: Vec<f64> = private.iter().filter(|&&i| i != 3).map(|&i| i as f64).collect();
        present.sort_by(f64::total_cmp);
        let k = present.len();
        let median = if k % 2 == 1 {
            present[k / 2]
        } else {
            (present[k / 2 - 1] + present[k / 2]) / 2.0
        };
        let vals: Vec<f64> = private
            .iter()
            .map(|&i| if i == 3 { median } else { i as f64 })
            .collect();
        let mean = vals.iter().sum::<f64>() / vals.len() as f64;
        let std = (vals.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / vals.len() as f64).sqrt();
        for (row, &id) in s.public_ids.iter().enumerate() {
            let raw = if id == 3 { median } else { id as f64 };
            assert_eq!(s.public.row(row)[0], ((raw - mean) / std) as f32);
        }
        for (row, &id) in s.test_ids.iter().enumerate() {
            let raw = if id == 3 { median } else { id as f64 };
            assert_eq!(s.test.row(row)[0], ((raw - mean) / std) as f32);
        }
        assert_eq!(s.imputed, 1);
    }
}
