//! `fedistill audit export|verify|show|report`: export the coordinator's update log as a bundle, verify a
//! bundle offline against pinned keys, print a bundle's timeline, write the verification as an HTML report
//! (rendered by `shared::audit::report`).

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use fedistill_coordinator::store::{Store, StoreError};
use fedistill_shared::audit::export::{self, LogSource};
use fedistill_shared::audit::{self, Bundle, ProtocolRecompute, VerifyOptions};
use fedistill_shared::ledger::{Digest, SignedCheckpoint};
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Export the update log from the coordinator's store as a bundle directory.
    Export(ExportArgs),
    /// Verify a bundle offline: signatures, proofs, witness quorum, roster, aggregates.
    Verify(VerifyArgs),
    /// Print a bundle's records and checkpoints as a timeline (does not verify).
    Show(ShowArgs),
    /// Verify a bundle as `verify` does and write the outcome as one self-contained HTML file: verdict,
    /// every check, checkpoints and cosigners, per-round contributions, abstentions, quarantines and
    /// aggregates, plots. Exits 1 (after writing the file) when the bundle does not verify.
    Report(ReportArgs),
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub verify: VerifyArgs,
    /// The HTML file to write.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The coordinator's log database (opened read-only; the coordinator may keep running).
    #[arg(long)]
    pub store: PathBuf,
    /// Output directory (created; must not exist or be empty).
    #[arg(long)]
    pub out: PathBuf,
    /// Include the payloads (signed soft-label messages) so aggregates can be recomputed.
    #[arg(long)]
    pub payloads: bool,
    /// Export up to the checkpoint of this size (default: the newest checkpoint that has at
    /// least one witness cosignature, or the newest checkpoint if none has).
    #[arg(long)]
    pub size: Option<u64>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The bundle directory.
    pub bundle: PathBuf,
    /// Trust file: coordinator key and origin, witness keys and quorum (see docs/security.md).
    #[arg(long)]
    pub trust: PathBuf,
    /// A signed checkpoint note obtained independently of the bundle (from a witness, or the head of
    /// an earlier audit; same format as the bundle's `checkpoints/*.note`). Its log signature must
    /// verify and the bundle must extend it (same or larger tree whose first records hash to its root).
    /// Without it, a bundle cut back to an earlier signed checkpoint verifies.
    #[arg(long, value_name = "FILE")]
    pub expect_checkpoint: Option<PathBuf>,
    /// Fail unless every contribution, round report and abstention has its payload in the bundle
    /// (so every aggregate is recomputed and every abstention compared with its signed message).
    #[arg(long)]
    pub require_payloads: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The bundle directory.
    pub bundle: PathBuf,
}

pub fn run(cmd: AuditCommand) -> anyhow::Result<()> {
    match cmd {
        AuditCommand::Export(a) => export(a),
        AuditCommand::Verify(a) => verify(a),
        AuditCommand::Report(a) => report(a),
        AuditCommand::Show(a) => {
            let bundle =
                Bundle::read_dir(&a.bundle).with_context(|| format!("reading bundle {}", a.bundle.display()))?;
            print!("{}", audit::timeline(&bundle));
            Ok(())
        }
    }
}

/// The coordinator's store as the log an export reads (`audit::export::LogSource`).
struct StoreLog(Store);

impl LogSource for StoreLog {
    type Error = StoreError;
    fn checkpoint_sizes(&self) -> Result<Vec<u64>, StoreError> {
        self.0.checkpoint_sizes()
    }
    fn checkpoint(&self, size: u64) -> Result<Option<SignedCheckpoint>, StoreError> {
        self.0.checkpoint(size)
    }
    fn records_raw(&self, range: std::ops::Range<u64>) -> Result<Vec<Vec<u8>>, StoreError> {
        self.0.records_raw(range)
    }
    fn payload(&self, digest: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
        self.0.payload(digest)
    }
}

fn export(a: ExportArgs) -> anyhow::Result<()> {
    let store = Store::open_read_only(&a.store).with_context(|| format!("opening log store {}", a.store.display()))?;
    let log = StoreLog(store);
    let head = export::choose_head(&log, a.size)?;
    if !head.cosigned {
        eprintln!(
            "note: no checkpoint has a witness cosignature yet; exporting up to size {}",
            head.size
        );
    }
    let input = export::collect(&log, head.size, a.payloads)?;
    let n_payloads = input.payloads.as_ref().map_or(0, Vec::len);
    let n_checkpoints = input.checkpoints.len();
    let bundle = Bundle::build(input)?;
    bundle
        .write_dir(&a.out)
        .with_context(|| format!("writing bundle {}", a.out.display()))?;
    println!(
        "exported {} records, {n_checkpoints} checkpoints, {n_payloads} payloads of log {} to {}",
        head.size,
        log.0.origin(),
        a.out.display()
    );
    Ok(())
}

fn report(a: ReportArgs) -> anyhow::Result<()> {
    let (bundle, trust, report) = load_and_verify(&a.verify)?;
    let name = a.verify.bundle.display().to_string();
    let html = fedistill_shared::audit::report::render(
        &bundle,
        &trust,
        &report,
        &name,
        a.verify.expect_checkpoint.is_some(),
        a.verify.require_payloads,
    );
    std::fs::write(&a.out, html).with_context(|| format!("writing {}", a.out.display()))?;
    if report.ok() {
        println!("OK: report written to {}", a.out.display());
        return Ok(());
    }
    println!(
        "FAILED: {} problem(s); report written to {}",
        report.failures.len(),
        a.out.display()
    );
    match report.failures.first() {
        Some(f) => bail!("bundle does not verify; first offending item: {}: {}", f.item, f.reason),
        None => bail!("bundle does not verify"),
    }
}

/// Reads the trust file, the optional expected checkpoint and the bundle of `a`, and verifies.
fn load_and_verify(a: &VerifyArgs) -> anyhow::Result<(Bundle, fedistill_shared::ledger::note::Trust, audit::Report)> {
    let trust_text =
        std::fs::read_to_string(&a.trust).with_context(|| format!("reading trust file {}", a.trust.display()))?;
    let trust = audit::parse_trust(&trust_text).with_context(|| format!("trust file {}", a.trust.display()))?;
    let expect_checkpoint = match &a.expect_checkpoint {
        None => None,
        Some(path) => {
            let note =
                std::fs::read(path).with_context(|| format!("reading expected checkpoint {}", path.display()))?;
            Some(SignedCheckpoint::parse(&note).with_context(|| format!("expected checkpoint {}", path.display()))?)
        }
    };
    let bundle = Bundle::read_dir(&a.bundle).with_context(|| format!("reading bundle {}", a.bundle.display()))?;
    let opts = VerifyOptions {
        expect_checkpoint,
        require_payloads: a.require_payloads,
    };
    let report = audit::verify_with(&bundle, &trust, Some(&ProtocolRecompute), &opts);
    Ok((bundle, trust, report))
}

fn verify(a: VerifyArgs) -> anyhow::Result<()> {
    let (_bundle, trust, report) = load_and_verify(&a)?;
    for n in &report.notes {
        println!("note: {n}");
    }
    if report.ok() {
        let head = report
            .head
            .as_ref()
            .map_or_else(String::new, |h| format!("{} root {}", h.size, h.root));
        println!(
            "OK: {} records, {} checkpoints (head size {head}), cosigned by [{}] (quorum {}), {} record signatures, {} aggregates recomputed bit for bit",
            report.records,
            report.checkpoints,
            report.head_cosigners.join(", "),
            trust.quorum,
            report.record_signatures,
            report.aggregates_recomputed
        );
        if let Some((name, card)) = &report.task {
            println!("task {name:?}: card {}", card.to_hex());
        }
        if let Some(e) = &report.extends {
            println!("extends the expected checkpoint: size {} root {}", e.size, e.root);
        }
        if let Some(n) = report.payloads_present {
            println!("all {n} record payloads present");
        }
        return Ok(());
    }
    println!("FAILED: {} problem(s)", report.failures.len());
    for f in &report.failures {
        println!("  {}: {}", f.item, f.reason);
    }
    match report.failures.first() {
        Some(f) => bail!("bundle does not verify; first offending item: {}: {}", f.item, f.reason),
        None => bail!("bundle does not verify"),
    }
}
