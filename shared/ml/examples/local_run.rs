//! Runs the local pipeline on a catalog dataset (same code as `fedistill local`), for quick checks
//! of the ML crate without building the whole binary: `cargo run --release -p fedistill-ml --example local_run -- mnist-10k`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let name = std::env::args().nth(1).unwrap_or_else(|| "digits".to_string());
    let ds = fedistill_data::load(&name, &fedistill_data::LoadOptions::default())?;
    let opts = fedistill_ml::local::LocalOptions::defaults_for(&ds, 7);
    let progress = fedistill_ml::Progress::with_mode(fedistill_ml::ProgressMode::Lines);
    let (report, _, _) = fedistill_ml::local::run_local(&ds, &opts, &progress)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
