//! Crash-test helper: appends to a log store in a loop and prints every acknowledged checkpoint
//! (`acked <size> <root hex>`), so a test can SIGKILL it mid-append and check that nothing
//! acknowledged was lost. Usage: `append_loop <db path> <appends>`.

use ed25519_dalek::SigningKey;
use fedistill_coordinator::store::Store;
use fedistill_shared::ledger::{Digest, ParticipantId, Record, RoundId};
use std::io::Write;

/// Origin of the test log.
pub const ORIGIN: &str = "fedistill.test/crash";

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: append_loop <db> <appends>"))?;
    let appends: u64 = args.next().unwrap_or_else(|| "1000000".into()).parse()?;
    let mut store = Store::open(std::path::Path::new(&path), SigningKey::from_bytes(&[1; 32]), ORIGIN)?;
    if store.size() == 0 {
        store.append(
            &[Record::FederationCreated {
                federation_id: "crash".into(),
                coordinator_key: SigningKey::from_bytes(&[1; 32]).verifying_key().to_bytes(),
                created_unix: 0,
                config_digest: Digest::of(b"crash"),
            }],
            &[],
        )?;
    }
    let mut out = std::io::stdout().lock();
    for _ in 0..appends {
        let n = store.size();
        // Batches of 1 to 3 records, each with a payload and a state update.
        let batch: Vec<Record> = (0..1 + n % 3)
            .map(|i| Record::PrivacySpend {
                round: RoundId(n),
                participant: ParticipantId::new(format!("p{i}")),
                epsilon: n as f64,
                delta: 0.0,
            })
            .collect();
        let payload = format!("payload {n}").into_bytes();
        let cp = store.append_with_state(
            &batch,
            &[(Digest::of(&payload), payload)],
            &[("last".into(), n.to_be_bytes().to_vec())],
        )?;
        writeln!(out, "acked {} {}", cp.checkpoint.size, cp.checkpoint.root)?;
        out.flush()?;
    }
    Ok(())
}
