//! `fedistill task infer`: draft a task card from the public transfer set (the operator's step).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use fedistill_shared::data::{infer_card, infer_ts_card, InferOptions, PrivateFormat};

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
}

pub fn run(cmd: TaskCommand) -> anyhow::Result<()> {
    let TaskCommand::Infer(a) = cmd;
    if a.out.exists() && !a.force {
        anyhow::bail!("{} exists; --force replaces it", a.out.display());
    }
    let series = matches!(PrivateFormat::detect(&a.public), Ok(PrivateFormat::Ts));
    let card = match (series, &a.label) {
        (true, None) => infer_ts_card(&a.public)?,
        (true, Some(_)) => anyhow::bail!(
            "--label names a CSV column; {} is a .ts series file, whose labels follow the last `:` of each line",
            a.public.display()
        ),
        (false, Some(label)) => infer_card(&a.public, label, &InferOptions::from_args(&a.delimiter)?)?,
        (false, None) => anyhow::bail!(
            "--label COLUMN is required for a CSV public set ({})",
            a.public.display()
        ),
    };
    std::fs::write(&a.out, card.to_toml_string()).with_context(|| format!("writing {}", a.out.display()))?;
    println!("wrote {}: {}", a.out.display(), card.summary());
    Ok(())
}
