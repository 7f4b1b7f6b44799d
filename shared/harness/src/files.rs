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
/// for reporting), sequence datasets to `.ts` files (the public set unlabelled), tabular ones to CSV with
/// the split's encoded features (`f0`, `f1`, ...) and the card passing them unchanged. `augment` goes
/// into the card as its `[augment]` (image and sequence datasets).
pub fn write_split(
    dir: &Path,
    split: &fedistill_shared::data::FederatedSplit,
    augment: Option<fedistill_shared::data::Augment>,
) -> anyhow::Result<SplitFiles> {
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
    let csv = |d: &Dataset| -> String {
        let mut out: Vec<String> = (0..d.dim).map(|k| format!("f{k}")).collect();
        out.push("label".into());
        let mut text = out.join(",");
        text.push('\n');
        for i in 0..d.n {
            let row: Vec<String> = d.row(i).iter().map(|v| format!("{v}")).collect();
            text.push_str(&row.join(","));
            text.push(',');
            text.push_str(&d.class_names[d.labels[i] as usize]);
            text.push('\n');
        }
        text
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
            (None, None) => write(path, csv(d).as_bytes()),
        }
    };
    let public_path = dir.join(public);
    match (image, sequence) {
        (Some((h, w)), _) => write(
            &public_path,
            &write_idx(&[split.public.n, h, w], &pixels(&split.public)),
        )?,
        // The public series travel unlabelled, like the public images: the teachers label them.
        (None, Some(_)) => write(
            &public_path,
            fedistill_shared::data::write_ts(&split.public, problem, false)?.as_bytes(),
        )?,
        (None, None) => write(&public_path, csv(&split.public).as_bytes())?,
    }
    let test_path = dir.join(benchmark);
    write_set(&test_path, &split.test)?;
    let format = match (image, sequence) {
        (Some(_), _) => "idx",
        (None, Some(_)) => "ts",
        (None, None) => "csv",
    };
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
        (None, None) => {
            card.push_str(&format!("column = \"label\"\nclasses = [{}]\n", classes.join(", ")));
            for k in 0..split.public.dim {
                card.push_str(&format!("[[features]]\nname = \"f{k}\"\nkind = \"numeric\"\n"));
            }
            card.push_str("[preprocessing]\nimpute = \"zero\"\nscale = \"none\"\n");
            for k in 0..split.public.dim {
                card.push_str(&format!("[[preprocessing.stats]]\nname = \"f{k}\"\nfill = 0.0\n"));
            }
        }
    }
    card.push_str(&format!(
        "[public]\nsha256 = \"{}\"\nrows = {}\nformat = \"{format}\"\n[benchmark]\nsha256 = \"{}\"\nrows = {}\nformat = \"{format}\"\n",
        sha(&public_path)?,
        split.public.n,
        sha(&test_path)?,
        split.test.n
    ));
    if let Some(a) = augment {
        card.push_str("[augment]\n");
        card.push_str(&toml::to_string(&a).context("writing the card's [augment]")?);
    }
    // Checked like any card an operator writes.
    let card = fedistill_shared::data::TaskCard::from_toml_str(&card, "the demo's task card")?.to_toml_string();
    write(&dir.join("task.toml"), card.as_bytes())?;
    for (i, shard) in split.shards.iter().enumerate() {
        let node = dir.join("nodes").join(format!("p{i}"));
        std::fs::create_dir_all(&node).with_context(|| format!("creating {}", node.display()))?;
        write(&node.join("task.toml"), card.as_bytes())?;
        write_set(&node.join(private), shard)?;
        write_set(&node.join(benchmark), &split.test)?;
        if let Some(l) = public_labels {
            write(&node.join(l), &write_idx(&[split.public.n], &labels(&split.public)))?;
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
/// IDX images file for images, a `.ts` file for series, a CSV without the label for tabular rows) and read
/// back through `[private] unlabeled`.
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
                        // The split's encoded features under the card's names, without the label column.
                        fedistill_shared::data::DataKind::Tabular => {
                            let mut text = (0..u.dim).map(|k| format!("f{k}")).collect::<Vec<_>>().join(",");
                            text.push('\n');
                            for i in 0..u.n {
                                let row: Vec<String> = u.row(i).iter().map(|v| format!("{v}")).collect();
                                text.push_str(&row.join(","));
                                text.push('\n');
                            }
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
