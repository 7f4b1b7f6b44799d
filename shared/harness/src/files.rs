//! A catalog split written as a deployment's files: the task card, the public set, and per participant
//! its private rows and the shared test set, in its own directory. `fedistill demo` runs its nodes on
//! these files, and the in-process experiments of `fedistill bench` read them back exactly as a node does
//! (`participant::owndata::load`), so every benchmark participant learns from what a real node would read.

use std::path::Path;

use anyhow::Context;

use fedistill_participant::config::OwnData;
use fedistill_participant::learner::NodeData;
use fedistill_shared::data::{FederatedSplit, TaskCard};

/// File names a written split has (relative to a node's directory, or to the split's for `public`).
pub struct SplitFiles {
    /// The public set, in the directory written to.
    pub public: String,
    /// A node's private rows, in `nodes/p<i>/`.
    pub private: String,
    /// The shared test set (the card's benchmark), in `nodes/p<i>/`.
    pub benchmark: String,
    /// Labels of an IDX public set (reporting only), in `nodes/p<i>/`.
    pub public_labels: Option<String>,
}

/// Writes a catalog split as a deployment's files: `task.toml` and the public set in `dir`, and in
/// `dir/nodes/p<i>/` a copy of the card, the node's private rows and the shared test set (the card's
/// benchmark). Image datasets go to IDX files (the public set unlabelled, with its labels beside each node
/// for reporting), sequence datasets to `.ts` files (the public set unlabelled). Tabular datasets go to CSV
/// files holding each part's RAW rows (`split.raw`: the source's values, an empty cell where one is
/// missing, categorical levels as texts, the catalog's column names), and the card is drafted from the
/// written public file by `infer_schema_card` (`fedistill task infer`'s `infer_card`, reviewed against the
/// catalog schema): its imputation and scaling statistics come from the public rows alone, and every node
/// imputes and scales its own rows with them as it reads its files, so no participant's rows move another's
/// features. `augment` goes into the card as its `[augment]` (image and sequence datasets).
pub fn write_split(
    dir: &Path,
    split: &fedistill_shared::data::FederatedSplit,
    augment: Option<fedistill_shared::data::Augment>,
) -> anyhow::Result<SplitFiles> {
    use fedistill_shared::data::tabular::{write_csv, TabularSchema};
    use fedistill_shared::data::{idx::write_idx, sha256_file, DataKind, Dataset};
    let write =
        |path: &Path, bytes: &[u8]| std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()));
    let sha = |path: &Path| -> anyhow::Result<String> { Ok(hex::encode(sha256_file(path)?.0)) };
    let classes: Vec<String> = split.public.class_names.iter().map(|c| format!("{c:?}")).collect();
    let image = match split.public.kind {
        DataKind::Image { height, width } => Some((height, width)),
        DataKind::Tabular | DataKind::Sequence { .. } => None,
    };
    let sequence = match split.public.kind {
        DataKind::Sequence { channels, length } => Some((channels, length)),
        _ => None,
    };
    let pixels = |d: &Dataset| -> Vec<u8> {
        d.features
            .iter()
            .map(|&v| (v * 255.0).round().clamp(0.0, 255.0) as u8)
            .collect()
    };
    let labels = |d: &Dataset| -> Vec<u8> { d.labels.iter().map(|&l| l as u8).collect() };
    // Tabular parts are written as their raw rows; image and sequence parts hold theirs already.
    let (test_set, public_set, shard_sets) = match (image, sequence) {
        (None, None) => {
            let raw = split.raw.as_ref().context(
                "a tabular split without its raw rows (FederatedSplit::raw) cannot be written as a deployment's files",
            )?;
            (&raw.test, &raw.public, raw.shards.as_slice())
        }
        _ => (&split.test, &split.public, split.shards.as_slice()),
    };
    let schema = TabularSchema::of_dataset(public_set);
    let csv = |d: &Dataset| -> anyhow::Result<String> {
        write_csv(d, &schema, true).with_context(|| format!("writing the raw rows of {}", d.name))
    };
    let (public, private, benchmark, public_labels) = match (image, sequence) {
        (Some(_), _) => (
            "public-images.idx3-ubyte",
            "private-images.idx3-ubyte",
            "test-images.idx3-ubyte",
            Some("public-labels.idx1-ubyte"),
        ),
        (None, Some(_)) => ("public.ts", "private.ts", "test.ts", None),
        (None, None) => ("public.csv", "private.csv", "test.csv", None),
    };
    let problem = &split.public.name;
    let write_set = |path: &Path, d: &Dataset| -> anyhow::Result<()> {
        match (image, sequence) {
            (Some((h, w)), _) => {
                write(path, &write_idx(&[d.n, h, w], &pixels(d)))?;
                let labels_path = fedistill_shared::data::idx_labels_path(path);
                write(&labels_path, &write_idx(&[d.n], &labels(d)))
            }
            (None, Some(_)) => write(path, fedistill_shared::data::write_ts(d, problem, true)?.as_bytes()),
            (None, None) => write(path, csv(d)?.as_bytes()),
        }
    };
    let public_path = dir.join(public);
    match (image, sequence) {
        (Some((h, w)), _) => write(&public_path, &write_idx(&[public_set.n, h, w], &pixels(public_set)))?,
        // The public series travel unlabelled, like the public images: the teachers label them.
        (None, Some(_)) => write(
            &public_path,
            fedistill_shared::data::write_ts(public_set, problem, false)?.as_bytes(),
        )?,
        (None, None) => write(&public_path, csv(public_set)?.as_bytes())?,
    }
    let test_path = dir.join(benchmark);
    write_set(&test_path, test_set)?;
    let format = match (image, sequence) {
        (Some(_), _) => "idx",
        (None, Some(_)) => "ts",
        (None, None) => "csv",
    };
    let card = match (image, sequence) {
        (None, None) => {
            // Drafted from the public file exactly as `fedistill task infer` drafts an operator's card.
            let mut card = fedistill_shared::data::infer_schema_card(&public_path, &schema)
                .with_context(|| format!("drafting the task card from {}", public_path.display()))?;
            card.benchmark = Some(fedistill_shared::data::PublicSet {
                sha256: sha(&test_path)?,
                rows: test_set.n as u64,
                format: fedistill_shared::data::PublicFormat::Csv,
            });
            card.augment = augment;
            card.to_toml_string()
        }
        _ => {
            let mut card = format!("name = {:?}\nversion = 1\n[label]\n", split.public.name);
            match (image, sequence) {
                (Some((h, w)), _) => card.push_str(&format!(
                    "classes = [{}]\n[image]\nheight = {h}\nwidth = {w}\nchannels = 1\n",
                    classes.join(", ")
                )),
                // Values as the split holds them (`normalize = "none"`).
                (None, Some((c, l))) => card.push_str(&format!(
                    "classes = [{}]\n[sequence]\nchannels = {c}\nlength = {l}\n",
                    classes.join(", ")
                )),
                (None, None) => {}
            }
            card.push_str(&format!(
                "[public]\nsha256 = \"{}\"\nrows = {}\nformat = \"{format}\"\n[benchmark]\nsha256 = \"{}\"\nrows = {}\nformat = \"{format}\"\n",
                sha(&public_path)?,
                public_set.n,
                sha(&test_path)?,
                test_set.n
            ));
            if let Some(a) = augment {
                card.push_str("[augment]\n");
                card.push_str(&toml::to_string(&a).context("writing the card's [augment]")?);
            }
            card
        }
    };
    // Checked like any card an operator writes.
    let card = fedistill_shared::data::TaskCard::from_toml_str(&card, "the demo's task card")?.to_toml_string();
    write(&dir.join("task.toml"), card.as_bytes())?;
    for (i, shard) in shard_sets.iter().enumerate() {
        let node = dir.join("nodes").join(format!("p{i}"));
        std::fs::create_dir_all(&node).with_context(|| format!("creating {}", node.display()))?;
        write(&node.join("task.toml"), card.as_bytes())?;
        write_set(&node.join(private), shard)?;
        write_set(&node.join(benchmark), test_set)?;
        if let Some(l) = public_labels {
            write(&node.join(l), &write_idx(&[public_set.n], &labels(public_set)))?;
        }
    }
    std::fs::remove_file(&test_path).ok();
    if image.is_some() {
        std::fs::remove_file(fedistill_shared::data::idx_labels_path(&test_path)).ok();
    }
    Ok(SplitFiles {
        public: public.into(),
        private: private.into(),
        benchmark: benchmark.into(),
        public_labels: public_labels.map(str::to_string),
    })
}

/// A tabular split written to `dir` by [`write_split`], every part as the nodes read its file: the public
/// set and each participant's whole private file read against the card (imputed and scaled with the card's
/// statistics, which come from the public file alone), and the shared test set. The in-process baselines
/// (`fedistill demo`'s centralized model and FedAvg) train and test on these, so no figure depends on
/// statistics of pooled private rows. Image and sequence splits come back as they are (their files hold the
/// parts' values; no statistic is fitted).
pub(crate) fn parts_as_read(dir: &Path, files: &SplitFiles, split: &FederatedSplit) -> anyhow::Result<FederatedSplit> {
    if split.raw.is_none() {
        return Ok(split.clone());
    }
    use fedistill_shared::data::{read_private, read_public, CsvOptions};
    let card = TaskCard::load(&dir.join("task.toml"))?;
    let node = |i: usize| dir.join("nodes").join(format!("p{i}"));
    let read = |path: &Path| -> anyhow::Result<fedistill_shared::data::Dataset> {
        Ok(read_private(path, &card, &CsvOptions::default())
            .with_context(|| format!("reading {} against the task card", path.display()))?
            .0)
    };
    let (public, _) = read_public(&dir.join(&files.public), &card)?;
    let shards = (0..split.shards.len())
        .map(|i| read(&node(i).join(&files.private)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(FederatedSplit {
        test: read(&node(0).join(&files.benchmark))?,
        public_digest: fedistill_shared::data::public_digest(&public, &split.public_ids),
        public,
        shards,
        ..split.clone()
    })
}

/// Reads participant `i`'s data back from a split written to `dir`, as its node would: the card, the
/// public set (checked against the card), its private rows and the shared test set.
pub fn node_data(dir: &Path, files: &SplitFiles, i: usize, seed: u64) -> anyhow::Result<NodeData> {
    node_data_with(dir, files, i, seed, None)
}

/// [`node_data`], with the node's unlabelled rows (`[private] unlabeled`) at `unlabeled` in its directory.
fn node_data_with(
    dir: &Path,
    files: &SplitFiles,
    i: usize,
    seed: u64,
    unlabeled: Option<&str>,
) -> anyhow::Result<NodeData> {
    let node = dir.join("nodes").join(format!("p{i}"));
    let card = TaskCard::load(&node.join("task.toml"))?;
    let own = OwnData {
        card: node.join("task.toml"),
        private: node.join(&files.private),
        format: None,
        csv: fedistill_shared::data::CsvOptions::default(),
        holdout: 0.2,
        // In-process experiments run no guard and report to no coordinator: no validation rows.
        validation: 0.0,
        seed,
        public: Some(dir.join(&files.public)),
        max_public_bytes: u64::MAX,
        public_labels: files.public_labels.as_ref().map(|l| node.join(l)),
        benchmark: Some(node.join(&files.benchmark)),
        unlabeled: unlabeled.map(|u| node.join(u)),
    };
    fedistill_participant::owndata::load(&own, &card, &dir.join(&files.public))
}

/// Participant `i`'s data read back from a split written to `dir` as a node with its own files reads it: the
/// card without a shared benchmark set, so the node holds out a seeded `holdout` share of its own rows to test
/// on (`[private] holdout`, participant/src/owndata.rs).
pub(crate) fn node_with_holdout(
    dir: &Path,
    files: &SplitFiles,
    i: usize,
    holdout: f64,
    seed: u64,
) -> anyhow::Result<NodeData> {
    let node = dir.join("nodes").join(format!("p{i}"));
    let mut card = TaskCard::load(&node.join("task.toml"))?;
    card.benchmark = None;
    let own = OwnData {
        card: node.join("task.toml"),
        private: node.join(&files.private),
        format: None,
        csv: fedistill_shared::data::CsvOptions::default(),
        holdout,
        // In-process experiments run no guard and report to no coordinator: no validation rows.
        validation: 0.0,
        seed,
        public: Some(dir.join(&files.public)),
        max_public_bytes: u64::MAX,
        public_labels: files.public_labels.as_ref().map(|l| node.join(l)),
        benchmark: None,
        unlabeled: None,
    };
    fedistill_participant::owndata::load(&own, &card, &dir.join(&files.public))
        .with_context(|| format!("reading participant {i}'s files with a holdout of {holdout}"))
}

/// Writes `split` to `dir` (its card with `augment`) and reads every participant's data back as its node
/// would. `unlabeled[i]`, when given and not empty, is written as participant `i`'s unlabelled rows (an
/// IDX images file for images, a `.ts` file for series, a CSV without the label for tabular rows, which
/// must then be raw rows like `split.raw`'s) and read back through `[private] unlabeled`.
pub fn through_files(
    dir: &Path,
    split: &FederatedSplit,
    seed: u64,
    augment: Option<fedistill_shared::data::Augment>,
    unlabeled: &[fedistill_shared::data::Dataset],
) -> anyhow::Result<Vec<NodeData>> {
    const UNLABELED: &str = "unlabeled-images.idx3-ubyte";
    const UNLABELED_SERIES: &str = "unlabeled.ts";
    const UNLABELED_CSV: &str = "unlabeled.csv";
    let files = write_split(dir, split, augment)?;
    (0..split.shards.len())
        .map(|i| {
            let extra = match unlabeled.get(i).filter(|u| u.n > 0) {
                Some(u) => {
                    let node = dir.join("nodes").join(format!("p{i}"));
                    let (name, bytes) = match u.kind {
                        fedistill_shared::data::DataKind::Image { height, width } => {
                            let pixels: Vec<u8> = u
                                .features
                                .iter()
                                .map(|&v| (v * 255.0).round().clamp(0.0, 255.0) as u8)
                                .collect();
                            (
                                UNLABELED,
                                fedistill_shared::data::idx::write_idx(&[u.n, height, width], &pixels),
                            )
                        }
                        fedistill_shared::data::DataKind::Sequence { .. } => (
                            UNLABELED_SERIES,
                            fedistill_shared::data::write_ts(u, &u.name, false)?.into_bytes(),
                        ),
                        // The raw rows under the card's column names, without the label column.
                        fedistill_shared::data::DataKind::Tabular => {
                            let schema = fedistill_shared::data::tabular::TabularSchema::of_dataset(u);
                            let text = fedistill_shared::data::tabular::write_csv(u, &schema, false)
                                .with_context(|| format!("writing participant {i}'s unlabelled rows"))?;
                            (UNLABELED_CSV, text.into_bytes())
                        }
                    };
                    let path = node.join(name);
                    std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
                    Some(name)
                }
                None => None,
            };
            node_data_with(dir, &files, i, seed, extra).with_context(|| format!("reading participant {i}'s files"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedistill_shared::data::{
        infer_card, load, read_private, split, CsvOptions, Dataset, InferOptions, LoadOptions, Partition, SplitConfig,
    };

    fn bits(ds: &Dataset) -> Vec<u32> {
        ds.features.iter().map(|v| v.to_bits()).collect()
    }

    fn credit_split(ds: &Dataset) -> FederatedSplit {
        let cfg = SplitConfig {
            participants: 3,
            partition: Partition::Dirichlet { alpha: 0.5 },
            seed: 5,
            ..SplitConfig::default()
        };
        split(ds, &cfg).expect("valid split")
    }

    /// Participant `i`'s whole private file read against the card its directory holds.
    fn private_as_read(dir: &Path, files: &SplitFiles, i: usize) -> Dataset {
        let node = dir.join("nodes").join(format!("p{i}"));
        let card = TaskCard::load(&node.join("task.toml")).expect("card");
        read_private(&node.join(&files.private), &card, &CsvOptions::default())
            .expect("the node's file reads")
            .0
    }

    #[test]
    fn a_tabular_card_states_the_public_files_statistics_not_the_pooled_private_ones() {
        let ds = load("credit", &LoadOptions::default()).expect("embedded");
        let fs = credit_split(&ds);
        let dir = tempfile::tempdir().expect("temp dir");
        let files = write_split(dir.path(), &fs, None).expect("writes");
        let card = TaskCard::load(&dir.path().join("task.toml")).expect("card");
        // The statistics are those `fedistill task infer` drafts from the public file alone.
        let draft = infer_card(&dir.path().join(&files.public), "Status", &InferOptions::default()).expect("draft");
        assert_eq!(card.preprocessing, draft.preprocessing);
        let prep = card.preprocessing.as_ref().expect("preprocessing");
        assert_eq!(
            (prep.impute, prep.scale),
            (
                fedistill_shared::data::Impute::Median,
                fedistill_shared::data::Scale::Standard
            )
        );
        assert_eq!(card.classes(), ["good", "bad"]);
        assert_eq!(card.input_dim(), ds.dim);

        // Pooled-private statistics of `Income` (22nd input; 381 missing cells in the file) differ.
        let income = 21;
        let raw = fs.raw.as_ref().expect("raw parts");
        let mut present: Vec<f64> = raw
            .shards
            .iter()
            .flat_map(|s| (0..s.n).map(move |i| s.row(i)[income]))
            .filter(|v| !v.is_nan())
            .map(f64::from)
            .collect();
        present.sort_by(f64::total_cmp);
        let pooled_median = present[present.len() / 2];
        let stats = card.stats_for("Income").expect("Income statistics");
        let public: Vec<f64> = (0..raw.public.n)
            .map(|i| raw.public.row(i)[income])
            .filter(|v| !v.is_nan())
            .map(f64::from)
            .collect();
        let public_mean_present = public.iter().sum::<f64>() / public.len() as f64;
        let pooled_mean_present = present.iter().sum::<f64>() / present.len() as f64;
        assert_ne!(stats.fill, Some(pooled_median));
        assert!(
            (public_mean_present - pooled_mean_present).abs() > 1e-3,
            "{public_mean_present} vs {pooled_mean_present}"
        );
        assert_ne!(stats.mean, Some(pooled_mean_present));

        // The files are raw: the catalog's column names, missing cells empty, levels as texts.
        let text = std::fs::read_to_string(dir.path().join("nodes/p0").join(&files.private)).expect("read");
        assert!(
            text.starts_with(
                "Status,Seniority,Home,Time,Age,Marital,Records,Job,Expenses,Income,Assets,Debt,Amount,Price\n"
            ),
            "{}",
            &text[..200]
        );
        let public_text = std::fs::read_to_string(dir.path().join(&files.public)).expect("read");
        assert!(public_text.contains(",,") && public_text.contains(",rent,"));

        // Every part, as a node reads its file, is what the split holds (its statistics are the card's), and
        // the baselines' read-back copy is the same.
        let as_read = parts_as_read(dir.path(), &files, &fs).expect("reads back");
        for i in 0..fs.shards.len() {
            let node = private_as_read(dir.path(), &files, i);
            assert_eq!(bits(&node), bits(&fs.shards[i]), "participant {i}");
            assert_eq!(bits(&as_read.shards[i]), bits(&fs.shards[i]));
        }
        assert_eq!(bits(&as_read.public), bits(&fs.public));
        assert_eq!(bits(&as_read.test), bits(&fs.test));
        assert_eq!(as_read.public_digest, fs.public_digest);
    }

    #[test]
    fn in_the_simulation_one_participants_rows_move_no_other_participants_features() {
        let ds = load("credit", &LoadOptions::default()).expect("embedded");
        let before = credit_split(&ds);
        // Participant 0's rows (and only those) change wildly: every number x 1000, a third of them missing.
        let mut changed = ds.clone();
        let numeric = [0usize, 7, 8, 20, 21, 22, 23, 24, 25];
        for (k, &id) in before.shard_ids[0].iter().enumerate() {
            let row = &mut changed.features[id as usize * ds.dim..(id as usize + 1) * ds.dim];
            for &j in &numeric {
                row[j] = if k % 3 == 0 { f32::NAN } else { row[j] * 1000.0 + 7.0 };
            }
        }
        let after = credit_split(&changed);
        // The partition deals by label only: the same ids go to the same participants.
        assert_eq!(after.shard_ids, before.shard_ids);
        let (a, b) = (
            tempfile::tempdir().expect("temp dir"),
            tempfile::tempdir().expect("temp dir"),
        );
        let files_a = write_split(a.path(), &before, None).expect("writes");
        let files_b = write_split(b.path(), &after, None).expect("writes");
        // The card (statistics, digests) is the same file.
        let card = |d: &Path| std::fs::read(d.join("task.toml")).expect("card");
        assert_eq!(card(a.path()), card(b.path()));
        for i in 1..before.shards.len() {
            let (x, y) = (
                private_as_read(a.path(), &files_a, i),
                private_as_read(b.path(), &files_b, i),
            );
            assert_eq!(bits(&x), bits(&y), "participant {i}'s features moved");
            let (x, y) = (
                node_data(a.path(), &files_a, i, 9).expect("node"),
                node_data(b.path(), &files_b, i, 9).expect("node"),
            );
            assert_eq!(bits(&x.private), bits(&y.private));
            assert_eq!(bits(&x.test), bits(&y.test));
        }
        let (x, y) = (
            private_as_read(a.path(), &files_a, 0),
            private_as_read(b.path(), &files_b, 0),
        );
        assert_ne!(bits(&x), bits(&y), "participant 0's own rows did change");
        // So do the in-memory parts every baseline uses.
        assert_eq!(bits(&after.public), bits(&before.public));
        assert_eq!(bits(&after.test), bits(&before.test));
        assert_eq!(bits(&after.shards[1]), bits(&before.shards[1]));
    }
}
