//! `fedistill task infer`: draft a task card from the public transfer set (the operator's step).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use fedistill_shared::data::{infer_card, InferOptions};

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Draft a task card from the public CSV: column kinds, classes, statistics, its sha256.
    Infer(InferArgs),
}

#[derive(Debug, Args)]
pub struct InferArgs {
    /// The public transfer set (CSV with a header row).
    #[arg(long, value_name = "FILE")]
    public: PathBuf,
    /// The label column.
    #[arg(long, value_name = "COLUMN")]
    label: String,
    /// Where to write the card (TOML).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Field delimiter: one character, or `tab`.
    #[arg(long, default_value = ",")]
    delimiter: String,
    /// Replace --out when it exists.
    #[arg(long)]
    force: bool,
}

pub fn run(cmd: TaskCommand) -> anyhow::Result<()> {
    let TaskCommand::Infer(a) = cmd;
    if a.out.exists() && !a.force {
        anyhow::bail!("{} exists; --force replaces it", a.out.display());
    }
    let card = infer_card(&a.public, &a.label, &InferOptions::from_args(&a.delimiter)?)?;
    std::fs::write(&a.out, card.to_toml_string()).with_context(|| format!("writing {}", a.out.display()))?;
    println!("wrote {}: {}", a.out.display(), card.summary());
    Ok(())
}
