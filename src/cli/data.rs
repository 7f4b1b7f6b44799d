//! `fedistill data`: list the dataset catalog and describe seeded federated splits
//! (shapes, per-shard class counts, test/public sizes, the public transfer-set digest); check an
//! institution's own files against a task card; write a catalog split as a deployment's files (each
//! participant's own directory, the public file and the task card) for tests and rehearsals.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use fedistill_shared::data::{self, Dataset, FederatedSplit, LoadOptions, Partition, SplitConfig};
use fedistill_shared::ml::Progress;
use serde_json::json;

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// List the datasets this build knows.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Load a dataset, split it into a federation with a seed and print per-shard class counts.
    Describe {
        /// Dataset name (see `fedistill data list`).
        name: String,
        #[command(flatten)]
        split: SplitArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Check own files (CSV, Parquet, images) against a task card as a participant reads them; sends nothing.
    Check(CheckArgs),
    /// Write a catalog dataset's seeded split as a deployment's files: the task card and the public set for
    /// the coordinator, and per participant its own directory (`nodes/pI/`: the card, its private rows, the
    /// shared test set). For tests and rehearsals; a real institution brings its own files.
    Split(SplitFilesArgs),
}

/// `fedistill data split`.
#[derive(Debug, Args)]
pub struct SplitFilesArgs {
    /// Dataset name (see `fedistill data list`).
    #[arg(long)]
    dataset: String,
    /// Number of participants (one directory each).
    #[arg(long, default_value_t = 3)]
    participants: usize,
    /// How the private rows are dealt: `iid`, `dirichlet:A` (label skew), `classes:K` (K classes per
    /// participant) or `quantity:A` (shard sizes skewed, labels IID).
    #[arg(long, default_value = "dirichlet:0.5")]
    partition: String,
    /// Seed of the split (ChaCha20); the same seed gives the same files.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Share of samples held out as the shared test set (the card's benchmark), in (0, 1).
    #[arg(long, default_value_t = 0.2)]
    test_fraction: f64,
    /// Share of samples in the public transfer set, in (0, 1).
    #[arg(long, default_value_t = 0.2)]
    public_fraction: f64,
    /// Read the dataset's files from DIR instead of the embedded copy / default install directory.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Directory to write (created; must be new or empty).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The task card (TOML).
    #[arg(long, value_name = "FILE")]
    task: PathBuf,
    /// Field delimiter: one character, or `tab`.
    #[arg(long, default_value = ",")]
    delimiter: String,
    /// Card column CARD is the local column LOCAL (repeatable).
    #[arg(long = "column", value_name = "CARD=LOCAL")]
    columns: Vec<String>,
    /// Problems listed per file.
    #[arg(long, default_value_t = data::DEFAULT_MAX_PROBLEMS)]
    max_problems: usize,
    /// Format of every FILE (csv, parquet, image-folder, idx, ts); default: told from each name.
    #[arg(long)]
    format: Option<data::PrivateFormat>,
    /// The files (or image folders) to check.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

/// Flags that choose a dataset's files and its federated split; reusable by other commands.
#[derive(Debug, Clone, Args)]
pub struct SplitArgs {
    /// Number of participants (private shards).
    #[arg(long, default_value_t = 3)]
    pub participants: usize,
    /// Dirichlet label skew with this concentration (the default partition, alpha 0.5).
    #[arg(long, group = "partition")]
    pub alpha: Option<f64>,
    /// IID shards of equal size.
    #[arg(long, group = "partition")]
    pub iid: bool,
    /// Each participant holds K classes.
    #[arg(long, value_name = "K", group = "partition")]
    pub classes_per_node: Option<usize>,
    /// Quantity skew: shard sizes from Dirichlet(A), labels IID.
    #[arg(long, value_name = "A", group = "partition")]
    pub quantity_skew: Option<f64>,
    /// Seed of the split (ChaCha20); the same seed gives the same split everywhere.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Share of samples held out for testing, in (0, 1).
    #[arg(long, default_value_t = 0.2)]
    pub test_fraction: f64,
    /// Share of samples in the public transfer set, in (0, 1).
    #[arg(long, default_value_t = 0.2)]
    pub public_fraction: f64,
    /// Read the dataset's files from DIR instead of the embedded copy / default install directory.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

impl SplitArgs {
    /// The split configuration these flags describe.
    pub fn config(&self) -> SplitConfig {
        let partition = if self.iid {
            Partition::Iid
        } else if let Some(k) = self.classes_per_node {
            Partition::ClassesPerNode { k }
        } else if let Some(alpha) = self.quantity_skew {
            Partition::QuantitySkew { alpha }
        } else {
            Partition::Dirichlet {
                alpha: self.alpha.unwrap_or(0.5),
            }
        };
        SplitConfig {
            participants: self.participants,
            partition,
            test_fraction: self.test_fraction,
            public_fraction: self.public_fraction,
            seed: self.seed,
        }
    }

    /// Where to load files from.
    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            data_dir: self.data_dir.clone(),
        }
    }

    /// Loads `name` and splits it per these flags.
    pub fn load_and_split(&self, name: &str) -> anyhow::Result<(Dataset, FederatedSplit)> {
        let ds = data::load(name, &self.load_options()).with_context(|| format!("loading dataset `{name}`"))?;
        let cfg = self.config();
        let fed = data::split(&ds, &cfg).with_context(|| format!("splitting `{name}` with seed {}", cfg.seed))?;
        Ok((ds, fed))
    }
}

pub fn run(cmd: DataCommand) -> anyhow::Result<()> {
    match cmd {
        DataCommand::List { json } => {
            list(json);
            Ok(())
        }
        DataCommand::Describe { name, split, json } => describe(&name, &split, json),
        DataCommand::Check(args) => check(&args),
        DataCommand::Split(args) => split_files(&args),
    }
}

fn split_files(a: &SplitFilesArgs) -> anyhow::Result<()> {
    let cfg = SplitConfig {
        participants: a.participants,
        partition: a
            .partition
            .parse()
            .with_context(|| format!("--partition {:?}", a.partition))?,
        test_fraction: a.test_fraction,
        public_fraction: a.public_fraction,
        seed: a.seed,
    };
    let out = &a.out;
    let w = fedistill_harness::datasplit::write_catalog_split(&a.dataset, &cfg, a.data_dir.clone(), out)?;
    let (files, fed) = (&w.files, &w.split);
    println!(
        "split        {}: {} participants, {}, seed {}, test {}, public {}",
        w.dataset.name, cfg.participants, cfg.partition, cfg.seed, cfg.test_fraction, cfg.public_fraction
    );
    println!(
        "task card    {} (digest {})",
        out.join("task.toml").display(),
        w.card.digest_hex()
    );
    println!(
        "coordinator  {}, {} ({} rows, sha256 {})",
        out.join("task.toml").display(),
        out.join(&files.public).display(),
        fed.public.n,
        w.card.public.sha256
    );
    for (i, (shard, (node, names))) in fed.shards.iter().zip(&w.nodes).enumerate() {
        println!(
            "p{i:<11} {}: {} ({} private rows, class counts {:?})",
            node.display(),
            names.join(", "),
            shard.n,
            shard.class_counts()
        );
    }
    let labels = files
        .public_labels
        .as_ref()
        .map(|l| format!("\n  [public]\n  labels = \"{l}\"   # optional, rehearsals only: the consensus' accuracy"))
        .unwrap_or_default();
    println!(
        "\nEach participant's node.toml (paths relative to its own directory nodes/pI/, as its operator places \
         them):\n  [task]\n  card = \"task.toml\"\n  [private]\n  path = \"{}\"\n  [benchmark]\n  path = \"{}\"{labels}\n\
         The coordinator's coordinator.toml:\n  [task]\n  card = \"task.toml\"\n  public = \"{}\"\n\
         Check a participant's files: fedistill data check --task {p0}/task.toml {p0}/{}\n\
         These files come from a catalog dataset, for tests and rehearsals; a real institution brings its own \
         (docs/operations.md, \"Joining with your own data\").",
        files.private,
        files.benchmark,
        files.public,
        files.private,
        p0 = out.join("nodes").join("p0").display()
    );
    Ok(())
}

fn check(a: &CheckArgs) -> anyhow::Result<()> {
    let card = data::TaskCard::load(&a.task)?;
    let opts = data::CsvOptions::from_args(&a.delimiter, &a.columns)?;
    println!("task        {}\n", card.summary());
    // Per file on stderr (a bar on a terminal, `data check: DONE/TOTAL ...` lines otherwise): which file is
    // being read, then its rows; the reports on stdout are the same either way.
    const LABEL: &str = "data check";
    let progress = Progress::auto();
    let total = a.files.len() as u64;
    progress.start(LABEL, total);
    let mut unusable = 0;
    for (done, file) in (0u64..).zip(&a.files) {
        progress.advance(LABEL, done, total, &format!("reading {}", file.display()));
        let report = data::check_private(file, &card, &opts, a.max_problems, a.format);
        let rows = format!(
            "{}: {} rows read, {} without problems{}",
            file.display(),
            report.rows,
            report.rows_ok,
            if report.fatal.is_some() { ", stopped" } else { "" }
        );
        progress.suspend(|| println!("{report}"));
        progress.advance(LABEL, done + 1, total, &rows);
        unusable += usize::from(!report.usable());
    }
    progress.finish(LABEL, &format!("{} of {total} files usable", a.files.len() - unusable));
    if unusable > 0 {
        anyhow::bail!("{unusable} of {} files cannot be used", a.files.len());
    }
    Ok(())
}

fn list(as_json: bool) {
    let entries = data::catalog();
    if as_json {
        let v: Vec<_> = entries
            .iter()
            .map(|e| {
                json!({
                    "name": e.name, "description": e.description, "source": e.source,
                    "licence": e.licence, "shape": e.shape, "embedded": e.embedded,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(v));
        return;
    }
    println!("{:<14} {:<9} {:<61} {:<13} source", "name", "where", "shape", "licence");
    for e in entries {
        let place = if e.embedded { "embedded" } else { "installed" };
        println!(
            "{:<14} {:<9} {:<61} {:<13} {}",
            e.name, place, e.shape, e.licence, e.source
        );
    }
    println!();
    for e in entries {
        println!("{:<14} {}", e.name, e.description);
    }
}

fn kind_text(ds: &Dataset) -> String {
    match ds.kind {
        data::DataKind::Image { height, width } => format!("image {height}x{width}"),
        data::DataKind::Tabular => "tabular".into(),
        data::DataKind::Sequence { channels, length } => format!("sequence {channels}x{length}"),
    }
}

fn describe(name: &str, args: &SplitArgs, as_json: bool) -> anyhow::Result<()> {
    let (ds, fed) = args.load_and_split(name)?;
    let cfg = args.config();
    let digest = fed.public_digest_hex();
    let total = fed.test.n + fed.public.n + fed.shards.iter().map(|s| s.n).sum::<usize>();
    if as_json {
        let part = |d: &Dataset| json!({ "size": d.n, "class_counts": d.class_counts() });
        let shards: Vec<_> = fed
            .shards
            .iter()
            .enumerate()
            .map(|(i, s)| json!({ "participant": i, "size": s.n, "class_counts": s.class_counts() }))
            .collect();
        let out = json!({
            "dataset": {
                "name": ds.name, "kind": ds.kind, "n": ds.n, "dim": ds.dim,
                "num_classes": ds.num_classes, "class_names": ds.class_names,
            },
            "config": cfg,
            "shards": shards,
            "public": { "size": fed.public.n, "class_counts": fed.public.class_counts(), "digest": digest },
            "test": part(&fed.test),
            "total": total,
            "imputed": fed.imputed,
        });
        println!("{}", serde_json::to_string_pretty(&out).context("encoding JSON")?);
        return Ok(());
    }

    println!(
        "dataset        {}: {} samples x {} features ({}), {} classes",
        ds.name,
        ds.n,
        ds.dim,
        kind_text(&ds),
        ds.num_classes
    );
    println!(
        "split          seed {}, {} participants, {}, test {}, public {}",
        cfg.seed, cfg.participants, cfg.partition, cfg.test_fraction, cfg.public_fraction
    );
    let width = ds
        .class_names
        .iter()
        .map(|c| c.len())
        .chain(std::iter::once(total.to_string().len()))
        .max()
        .unwrap_or(5)
        + 1;
    let mut header = format!("{:<12} {:>8}", "part", "total");
    for c in &ds.class_names {
        header.push_str(&format!(" {c:>width$}"));
    }
    println!("\n{header}");
    let row = |label: &str, counts: &[usize], n: usize| {
        let mut line = format!("{label:<12} {n:>8}");
        for c in counts {
            line.push_str(&format!(" {c:>width$}"));
        }
        println!("{line}");
    };
    for (i, s) in fed.shards.iter().enumerate() {
        row(&format!("shard {i}"), &s.class_counts(), s.n);
    }
    row("public", &fed.public.class_counts(), fed.public.n);
    row("test", &fed.test.class_counts(), fed.test.n);
    let mut sums = vec![0usize; ds.num_classes];
    for part in fed.shards.iter().chain([&fed.public, &fed.test]) {
        for (acc, c) in sums.iter_mut().zip(part.class_counts()) {
            *acc += c;
        }
    }
    row("total", &sums, total);
    println!();
    println!("public digest  sha256:{digest}");
    if ds.kind == data::DataKind::Tabular {
        println!(
            "imputed        {} missing values (median/mode fitted on the public set, as the card states)",
            fed.imputed
        );
    }
    Ok(())
}
