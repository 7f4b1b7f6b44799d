//! `fedistill participant ...`: commands run on a participant's host. `enroll` generates the TLS key,
//! a CSR and the ed25519 key locally so private keys never leave the host.

use anyhow::Context;
use clap::Subcommand;
use fedistill_shared::crypto::ParticipantId;
use fedistill_shared::provision;
use std::path::PathBuf;

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

pub fn run(cmd: ParticipantCommand) -> anyhow::Result<()> {
    match cmd {
        ParticipantCommand::Enroll { name, out } => {
            fedistill_shared::crypto::validate_name(&name).with_context(|| format!("participant name {name:?}"))?;
            let r = provision::enroll(&out, &ParticipantId::new(name.clone()))
                .with_context(|| format!("enrolling {name} in {}", out.display()))?;
            println!("keys generated in {} (private keys mode 0600)", out.display());
            println!("send to the operator: {} and {}", r.csr.display(), r.signing_pub.display());
            println!(
                "operator runs: fedistill provision sign {name} {} --signing-key {} --out <federation dir>",
                r.csr.display(),
                r.signing_pub.display()
            );
            Ok(())
        }
    }
}
