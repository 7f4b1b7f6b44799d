//! `fedistill data`: list the dataset catalog and describe seeded federated splits.

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// List the datasets this build knows.
    List,
}

pub fn run(cmd: DataCommand) -> anyhow::Result<()> {
    match cmd {
        DataCommand::List => Ok(()),
    }
}
