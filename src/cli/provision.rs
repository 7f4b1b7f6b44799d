//! `fedistill provision ...`: the operator's commands: create a federation, enrol participants (directly
//! or from a CSR), revoke them, and show the verified roster. Formats are in docs/security.md.

use anyhow::Context;
use clap::Subcommand;
use fedistill_shared::crypto::{FederationId, ParticipantId, PublicKey};
use fedistill_shared::provision::{self, fsutil, FederationLayout};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum ProvisionCommand {
    /// Create a federation directory: private CA, coordinator certificate and ed25519 key, operator key,
    /// empty signed roster and CRL.
    Init {
        /// Federation name ([a-z0-9][a-z0-9._-]*, at most 64 bytes).
        #[arg(long)]
        federation: String,
        /// Name participants dial, `host[:port]` (default port 4433); repeat for more SANs. Kits get the first.
        #[arg(long = "coordinator-host", required = true)]
        coordinator_hosts: Vec<String>,
        /// Address the coordinator listens on (default 0.0.0.0:<port of the first host>).
        #[arg(long)]
        bind: Option<SocketAddr>,
        /// Federation directory to create.
        #[arg(long)]
        out: PathBuf,
    },
    /// Enrol a participant with keys generated here; writes its startup kit to DIR/kits/NAME.
    AddParticipant {
        /// Participant name.
        name: String,
        /// Federation directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a participant's CSR (from `fedistill participant enroll`); writes only public files to
    /// DIR/kits/NAME and adds the participant to the roster.
    Sign {
        /// Participant name.
        name: String,
        /// The CSR file (client.csr.pem).
        csr: PathBuf,
        /// The participant's ed25519 public key file (signing.pub.pem).
        #[arg(long)]
        signing_key: PathBuf,
        /// Federation directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Revoke a participant: marks it revoked in the roster and issues a new CRL. A running coordinator
    /// picks both up within a second (or on SIGHUP) and closes its connections.
    Revoke {
        /// Participant name.
        name: String,
        /// Federation directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the verified roster.
    Roster {
        /// Federation directory.
        #[arg(long)]
        out: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn name(s: &str) -> anyhow::Result<ParticipantId> {
    fedistill_shared::crypto::validate_name(s).with_context(|| format!("participant name {s:?}"))?;
    Ok(ParticipantId::new(s))
}

pub fn run(cmd: ProvisionCommand) -> anyhow::Result<()> {
    let now = provision::now_utc();
    match cmd {
        ProvisionCommand::Init {
            federation,
            coordinator_hosts,
            bind,
            out,
        } => {
            let fed =
                FederationId::new(federation.clone()).with_context(|| format!("federation name {federation:?}"))?;
            let rep = provision::init(&out, &fed, &coordinator_hosts, bind, now)
                .with_context(|| format!("initialising federation in {}", out.display()))?;
            println!("federation {fed} created in {}", out.display());
            println!("  participants dial: {}", rep.config.coordinator_endpoints.join(", "));
            println!(
                "  coordinator binds: {} (edit {})",
                rep.bind,
                rep.layout.coordinator_config().display()
            );
            println!("  CA key: {} (keep offline)", rep.layout.ca_key().display());
            Ok(())
        }
        ProvisionCommand::AddParticipant { name: n, out } => {
            let id = name(&n)?;
            let kit = provision::add_participant(&out, &id, now).with_context(|| format!("adding participant {n}"))?;
            println!("participant {id} enrolled; startup kit: {}", kit.display());
            Ok(())
        }
        ProvisionCommand::Sign {
            name: n,
            csr,
            signing_key,
            out,
        } => {
            let id = name(&n)?;
            let csr_pem = fsutil::read_string(&csr).context("reading the CSR")?;
            let key = PublicKey::from_pem(&fsutil::read_string(&signing_key).context("reading the signing key")?)
                .with_context(|| format!("parsing {}", signing_key.display()))?;
            let kit = provision::sign_csr(&out, &id, &csr_pem, key, now)
                .with_context(|| format!("signing the CSR of {n}"))?;
            println!(
                "participant {id} enrolled from its CSR; certificate and public files: {}",
                kit.display()
            );
            println!("copy them into the participant's enrolment directory to complete its kit");
            Ok(())
        }
        ProvisionCommand::Revoke { name: n, out } => {
            let id = name(&n)?;
            provision::revoke(&out, &id, now).with_context(|| format!("revoking {n}"))?;
            println!("participant {id} revoked; CRL and roster updated in {}", out.display());
            Ok(())
        }
        ProvisionCommand::Roster { out, json } => {
            let layout = FederationLayout::new(&out);
            let cfg = layout.load_config().context("reading federation.toml")?;
            let roster = layout.load_roster(&cfg.federation).context("loading the roster")?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&roster).context("serializing the roster")?
                );
            } else {
                println!("federation {} roster version {}", roster.federation, roster.version);
                for e in &roster.participants {
                    println!(
                        "{:<24} {:<8} cert {} key {}",
                        e.id,
                        format!("{:?}", e.status).to_lowercase(),
                        e.cert_sha256,
                        e.signing_key
                    );
                }
            }
            Ok(())
        }
    }
}
