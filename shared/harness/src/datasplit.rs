//! `fedistill data split`: a catalog dataset's seeded split written as a deployment's files
//! ([`crate::files::write_split`]) into a new or empty directory, with what the command prints about them.

use std::path::{Path, PathBuf};

use anyhow::Context;
use fedistill_shared::data::{self, Dataset, FederatedSplit, LoadOptions, SplitConfig, TaskCard};

use crate::files::{write_split, SplitFiles};

/// What [`write_catalog_split`] wrote.
pub struct WrittenSplit {
    /// The catalog dataset.
    pub dataset: Dataset,
    /// Its split.
    pub split: FederatedSplit,
    /// The names of the files written.
    pub files: SplitFiles,
    /// The task card written to `OUT/task.toml`, as read back.
    pub card: TaskCard,
    /// Each participant's directory `OUT/nodes/pI` and the names of its files, sorted.
    pub nodes: Vec<(PathBuf, Vec<String>)>,
}

/// Loads the catalog dataset `dataset` (from `data_dir` if given), splits it per `cfg` and writes the split
/// into `out` (created; it must be new or empty).
pub fn write_catalog_split(
    dataset: &str,
    cfg: &SplitConfig,
    data_dir: Option<PathBuf>,
    out: &Path,
) -> anyhow::Result<WrittenSplit> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    anyhow::ensure!(
        std::fs::read_dir(out)
            .with_context(|| format!("listing {}", out.display()))?
            .next()
            .is_none(),
        "--out {} is not empty; give a new or empty directory",
        out.display()
    );
    let ds = data::load(dataset, &LoadOptions { data_dir }).with_context(|| format!("loading dataset `{dataset}`"))?;
    let fed = data::split(&ds, cfg).with_context(|| format!("splitting `{dataset}` with seed {}", cfg.seed))?;
    let files = write_split(out, &fed, None).with_context(|| format!("writing the split to {}", out.display()))?;
    let card = TaskCard::load(&out.join("task.toml"))?;
    let mut nodes = Vec::with_capacity(fed.shards.len());
    for i in 0..fed.shards.len() {
        let node = out.join("nodes").join(format!("p{i}"));
        let names = names_in(&node)?;
        nodes.push((node, names));
    }
    Ok(WrittenSplit {
        dataset: ds,
        split: fed,
        files,
        card,
        nodes,
    })
}

/// The file names in `dir`, sorted (a written node's directory).
fn names_in(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}
