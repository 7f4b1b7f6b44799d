//! `fedistill participant ...`: commands run on a participant's host. `enroll` generates the TLS key,
//! a CSR and the ed25519 key locally so private keys never leave the host.

use anyhow::Context;
use clap::Subcommand;
use fedistill_shared::crypto::ParticipantId;
use fedistill_shared::provision;
use std::path::PathBuf;

/// `fedistill participant --config FILE` runs the participant service; `fedistill participant enroll`
/// prepares keys for a CSR enrollment.
#[derive(Debug, clap::Args)]
#[command(
    args_conflicts_with_subcommands = true,
    subcommand_required = false,
    arg_required_else_help = true
)]
pub struct ParticipantArgs {
    /// Participant settings (TOML; see docs/operations.md): run the participant service.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<ParticipantCommand>,
}

#[derive(Debug, Subcommand)]
pub enum ParticipantCommand {
    /// Generate this participant's TLS key, CSR and ed25519 signing key in DIR; send the CSR and
    /// signing.pub.pem to the operator (`fedistill provision sign`).
    Enroll {
        /// Participant name (must match what the operator signs).
        name: String,
        /// Directory for the keys and the CSR (becomes the kit once the signed files are copied in).
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run_args(args: ParticipantArgs) -> anyhow::Result<()> {
    match (args.command, args.config) {
        (Some(cmd), _) => run(cmd),
        (None, Some(config)) => super::node::run_participant(config),
        (None, None) => anyhow::bail!("give --config FILE to run the participant, or a subcommand (see --help)"),
    }
}

pub fn run(cmd: ParticipantCommand) -> anyhow::Result<()> {
    match cmd {
        ParticipantCommand::Enroll { name, out } => {
            fedistill_shared::crypto::validate_name(&name).with_context(|| format!("participant name {name:?}"))?;
            let r = provision::enroll(&out, &ParticipantId::new(name.clone()))
                .with_context(|| format!("enrolling {name} in {}", out.display()))?;
            println!("keys generated in {} (private keys mode 0600)", out.display());
            println!(
                "send to the operator: {} and {}",
                r.csr.display(),
                r.signing_pub.display()
            );
            println!(
                "operator runs: fedistill provision sign {name} {} --signing-key {} --out <federation dir>",
                r.csr.display(),
                r.signing_pub.display()
            );
            Ok(())
        }
    }
}
