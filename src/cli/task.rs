//! `fedistill task infer`: draft a task card from the public transfer set (the operator's step;
//! `fedistill_shared::data::draft_card` drafts it).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use fedistill_shared::data::{draft_card, DraftOptions};

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

pub fn run(cmd: TaskCommand) -> anyhow::Result<()> {
    let TaskCommand::Infer(a) = cmd;
    if a.out.exists() && !a.force {
        anyhow::bail!("{} exists; --force replaces it", a.out.display());
    }
    let opts = DraftOptions {
        label: a.label,
        delimiter: a.delimiter,
        regression: a.regression,
        modalities: a.modalities,
    };
    let card = draft_card(&a.public, &opts)?;
    std::fs::write(&a.out, card.to_toml_string()).with_context(|| format!("writing {}", a.out.display()))?;
    println!("wrote {}: {}", a.out.display(), card.summary());
    Ok(())
}
