//! Seeded federated split: test set, public transfer set, private shards per participant; for
//! tabular data, the parts' raw rows kept as they are, and imputation and standardization fitted on
//! the public transfer set only (exactly as `infer_card` fits a task card's statistics from the
//! public file) and applied to every part. No private row moves any statistic.

use serde::{Deserialize, Serialize};

use crate::digest::public_digest;
use crate::partition::{assign, Partition};
use crate::rng::SplitRng;
use crate::stats::fit_numeric;
use crate::tabular::{Column, TabularSchema};
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
    /// Tabular datasets: every part's rows as the source holds them, before imputation and scaling
    /// (NaN for a missing cell, a one-hot block per categorical, all NaN when missing), row for row
    /// with `test`, `public` and `shards`. The simulation writes these as the participants' files
    /// (`tabular::write_csv`). `None` for image and sequence datasets, whose parts are their raw rows.
    pub raw: Option<RawParts>,
}

/// The parts of a tabular split before preprocessing (see [`FederatedSplit::raw`]).
#[derive(Debug, Clone)]
pub struct RawParts {
    /// The test set's raw rows.
    pub test: Dataset,
    /// The public set's raw rows.
    pub public: Dataset,
    /// Each shard's raw rows.
    pub shards: Vec<Dataset>,
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
/// the raw parts are kept (`raw`), and the imputation (median / mode) and standardization statistics
/// are fitted on the public set alone, as `infer_card` fits them from the public file a node gets,
/// and applied to test, public and shards; the public digest is taken last.
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
    let mut raw = None;
    if ds.kind == DataKind::Tabular {
        raw = Some(RawParts {
            test: test.clone(),
            public: public.clone(),
            shards: shards.clone(),
        });
        let prep = Preprocessor::fit(&public, &TabularSchema::of_dataset(ds));
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
        raw,
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

/// The value a node reads for a raw cell: the file holds the shortest text of the `f32`
/// (`tabular::write_csv`), which the card's reader parses as an `f64`. Fitting and scaling this value,
/// not the widened `f32`, keeps a split's parts bit for bit what the nodes read from their files.
fn text_value(v: f32) -> f64 {
    format!("{v}").parse::<f64>().unwrap_or(f64::from(v))
}

struct Preprocessor(Vec<Fitted>);

impl Preprocessor {
    /// Fits medians, modes, means and standard deviations on the rows of `fit_on` (the public set)
    /// only, as `infer_card` does on the public file: numeric columns by `stats::fit_numeric` over the
    /// values in row order; a categorical's fill is its most frequent level, ties to the level whose
    /// text sorts first (the card drafts its levels in byte order).
    fn fit(fit_on: &Dataset, schema: &TabularSchema) -> Preprocessor {
        let rows = || (0..fit_on.n).map(|i| fit_on.row(i));
        let mut fitted = Vec::new();
        let mut at = 0;
        for c in &schema.columns {
            match c {
                Column::Numeric(_) => {
                    let index = at;
                    at += 1;
                    let values: Vec<f64> = rows()
                        .map(|r| {
                            if r[index].is_nan() {
                                f64::NAN
                            } else {
                                text_value(r[index])
                            }
                        })
                        .collect();
                    let fit = fit_numeric(&values, Impute::Median);
                    fitted.push(Fitted::Numeric {
                        index,
                        median: fit.fill,
                        mean: fit.mean,
                        std: fit.std,
                    });
                }
                Column::Categorical { levels, .. } => {
                    let (start, len) = (at, levels.len());
                    at += len;
                    let mut counts = vec![0usize; len];
                    for r in rows() {
                        if let Some(k) = (0..len).find(|&k| r[start + k] == 1.0) {
                            counts[k] += 1;
                        }
                    }
                    let mode = (0..len)
                        .max_by(|&a, &b| counts[a].cmp(&counts[b]).then(levels[b].cmp(&levels[a])))
                        .unwrap_or(0);
                    fitted.push(Fitted::OneHot { start, len, mode });
                }
                Column::Label { .. } => {}
            }
        }
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
                        let v = if row[index].is_nan() {
                            imputed += 1;
                            median
                        } else {
                            text_value(row[index])
                        };
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
    fn tabular_stats_come_from_the_public_set_only() {
        // One numeric feature whose raw value is the sample id (samples 3 and 4 missing). The expected
        // statistics are recomputed here from the raw values of the public ids only; if test or private
        // rows leaked into the fit, no part would match.
        let n = 100;
        let f: Vec<f32> = (0..n)
            .map(|i| if i == 3 || i == 4 { f32::NAN } else { i as f32 })
            .collect();
        let l: Vec<u32> = (0..n).map(|i| (i % 2) as u32).collect();
        let ds = Dataset::new(
            "unknown-tabular",
            f.clone(),
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
        let missing = |i: u64| i == 3 || i == 4;
        let mut present: Vec<f64> = s
            .public_ids
            .iter()
            .filter(|&&i| !missing(i))
            .map(|&i| i as f64)
            .collect();
        present.sort_by(f64::total_cmp);
        let k = present.len();
        let median = if k % 2 == 1 {
            present[k / 2]
        } else {
            (present[k / 2 - 1] + present[k / 2]) / 2.0
        };
        let vals: Vec<f64> = s
            .public_ids
            .iter()
            .map(|&i| if missing(i) { median } else { i as f64 })
            .collect();
        let mean = vals.iter().sum::<f64>() / vals.len() as f64;
        let std = (vals.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / vals.len() as f64).sqrt();
        let scaled = |id: u64| {
            let raw = if missing(id) { median } else { id as f64 };
            ((raw - mean) / std) as f32
        };
        for (part, ids) in [(&s.public, &s.public_ids), (&s.test, &s.test_ids)]
            .into_iter()
            .chain(s.shards.iter().zip(&s.shard_ids))
        {
            for (row, &id) in ids.iter().enumerate() {
                assert_eq!(part.row(row)[0], scaled(id), "sample {id}");
            }
        }
        assert_eq!(s.imputed, 2);
        // The raw parts are the same rows before any preprocessing.
        let raw = s.raw.as_ref().expect("a tabular split keeps its raw rows");
        for (part, ids) in [(&raw.public, &s.public_ids), (&raw.test, &s.test_ids)]
            .into_iter()
            .chain(raw.shards.iter().zip(&s.shard_ids))
        {
            let want: Vec<u32> = ids.iter().map(|&i| f[i as usize].to_bits()).collect();
            let got: Vec<u32> = part.features.iter().map(|v| v.to_bits()).collect();
            assert_eq!(got, want);
        }

        // Whatever the private rows hold, no part moves: only the public rows are fitted on.
        let mut g = f.clone();
        for &i in s.shard_ids.iter().flatten() {
            g[i as usize] = if i % 3 == 0 { f32::NAN } else { 1e6 + i as f32 };
        }
        let other = split(
            &Dataset {
                features: g,
                ..ds.clone()
            },
            &cfg,
        )
        .expect("valid");
        assert_eq!(other.public.features, s.public.features);
        assert_eq!(other.test.features, s.test.features);
    }

    #[test]
    fn a_categorical_fill_is_the_public_mode_ties_to_the_first_text() {
        // lending-club's `emp_length` is the one-hot block at 94..106, levels emp_lt_1, emp_1, ...: the
        // schema's order is not the byte order (`emp_1` < `emp_lt_1`), in which `infer_card` lists a
        // card's levels and breaks ties. Public rows with one of each fill a missing cell with `emp_1`.
        let schema = TabularSchema::for_dataset("lending-club").expect("catalog schema");
        let dim = schema.dim();
        let mut features = vec![0.0f32; 4 * dim];
        for (i, emp) in [Some(0), Some(1), None, None].into_iter().enumerate() {
            let row = &mut features[i * dim..(i + 1) * dim];
            // term, sub_grade, addr_state and verification_status at their first level.
            for start in [1, 4, 39, 90] {
                row[start] = 1.0;
            }
            match emp {
                Some(k) => row[94 + k] = 1.0,
                None => row[94..106].fill(f32::NAN),
            }
        }
        let mut public = Dataset::new(
            "lending-club",
            features,
            vec![0, 1, 0, 1],
            dim,
            DataKind::Tabular,
            schema.class_names.clone(),
        )
        .expect("consistent");
        let prep = Preprocessor::fit(&public, &schema);
        assert_eq!(prep.apply(&mut public), 2);
        for i in [2, 3] {
            assert_eq!(&public.row(i)[94..97], &[0.0, 1.0, 0.0]);
        }
    }
}
