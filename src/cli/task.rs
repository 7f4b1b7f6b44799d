//! `fedistill task infer`: draft a task card from the public transfer set (the operator's step).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use fedistill_shared::data::{infer_card, infer_ts_card, InferOptions, Modality, PrivateFormat, TaskCard};

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Draft a task card from the public CSV (column kinds, classes, statistics) or `.ts` series file
    /// (channels, length, classes), with its sha256.
    Infer(InferArgs),
}

#[derive(Debug, Args)]
pub struct InferArgs {
    /// The public transfer set: a CSV with a header row, or a `.ts` series file.
    #[arg(long, value_name = "FILE")]
    public: PathBuf,
    /// The label column (CSV; a `.ts` file carries its labels after the last `:`).
    #[arg(long, value_name = "COLUMN")]
    label: Option<String>,
    /// Where to write the card (TOML).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Field delimiter: one character, or `tab`.
    #[arg(long, default_value = ",")]
    delimiter: String,
    /// Replace --out when it exists.
    #[arg(long)]
    force: bool,
    /// The label is a number to predict (CSV only): the card gets `[regression]` with the public targets'
    /// mean and standard deviation; add the bounds and monotone constraints by hand.
    #[arg(long)]
    regression: bool,
    /// A modality block (`[[modalities]]`, CSV only): `NAME=COL,COL,...`, or `NAME=rest` for every feature
    /// no other block names. Repeat for each block (at least two); the features are reordered block by block.
    #[arg(long = "modality", value_name = "NAME=COLUMNS")]
    modalities: Vec<String>,
}

/// The `--modality` flags as blocks of the drafted `card`'s features (`rest`: those no other block names).
fn modality_blocks(card: &TaskCard, flags: &[String]) -> anyhow::Result<Vec<Modality>> {
    let mut blocks: Vec<(String, Option<Vec<String>>)> = Vec::new();
    for f in flags {
        let (name, cols) = f
            .split_once('=')
            .with_context(|| format!("--modality {f:?}: expected NAME=COL,COL,... or NAME=rest"))?;
        let cols = cols.trim();
        blocks.push((
            name.trim().to_string(),
            (cols != "rest").then(|| cols.split(',').map(|c| c.trim().to_string()).collect()),
        ));
    }
    let rests = blocks.iter().filter(|(_, c)| c.is_none()).count();
    anyhow::ensure!(
        rests <= 1,
        "--modality: only one block can take the rest of the features"
    );
    let named: Vec<&String> = blocks.iter().filter_map(|(_, c)| c.as_ref()).flatten().collect();
    let rest: Vec<String> = card
        .features
        .iter()
        .map(|f| f.name().to_string())
        .filter(|n| !named.contains(&n))
        .collect();
    Ok(blocks
        .into_iter()
        .map(|(name, cols)| Modality {
            name,
            features: cols.unwrap_or_else(|| rest.clone()),
        })
        .collect())
}

pub fn run(cmd: TaskCommand) -> anyhow::Result<()> {
    let TaskCommand::Infer(a) = cmd;
    if a.out.exists() && !a.force {
        anyhow::bail!("{} exists; --force replaces it", a.out.display());
    }
    let series = matches!(PrivateFormat::detect(&a.public), Ok(PrivateFormat::Ts));
    let card = match (series, &a.label) {
        (true, None) if !a.modalities.is_empty() => {
            anyhow::bail!("--modality groups the columns of a CSV public set; a .ts series file has none")
        }
        (true, _) if a.regression => {
            anyhow::bail!("--regression applies to a CSV public set; a .ts series file carries class labels")
        }
        (true, None) => infer_ts_card(&a.public)?,
        (true, Some(_)) => anyhow::bail!(
            "--label names a CSV column; {} is a .ts series file, whose labels follow the last `:` of each line",
            a.public.display()
        ),
        (false, Some(label)) => {
            let opts = InferOptions {
                regression: a.regression,
                ..InferOptions::from_args(&a.delimiter)?
            };
            let card = infer_card(&a.public, label, &opts)?;
            if a.modalities.is_empty() {
                card
            } else {
                let blocks = modality_blocks(&card, &a.modalities)?;
                card.with_modalities(blocks).context("--modality")?
            }
        }
        (false, None) => anyhow::bail!(
            "--label COLUMN is required for a CSV public set ({})",
            a.public.display()
        ),
    };
    std::fs::write(&a.out, card.to_toml_string()).with_context(|| format!("writing {}", a.out.display()))?;
    println!("wrote {}: {}", a.out.display(), card.summary());
    Ok(())
}
