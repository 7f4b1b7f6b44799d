//! A node on its institution's own files (`[task]`, `[private]`, `[public]`): the task card is checked
//! against the coordinator's signed one, the public transfer set is taken from where the operator placed
//! it or fetched from the coordinator over the mTLS connection (chunked, resumable, size-bounded) and
//! verified against the card's SHA-256 before any use, and the private file is read against the card with
//! a seeded holdout of its own rows to test on. Nothing is half-loaded: any bad row stops the node before
//! it labels anything. docs/data.md, "Task card and own files".

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use fedistill_shared::crypto::{Digest, Signer};
use fedistill_shared::data::{read_private, read_private_as, read_public, TaskCard};
use fedistill_shared::ml::{Progress, ProgressMode};
use fedistill_shared::wire::messages::{RejectCode, Reply, TaskAnnouncement, ToCoordinator, MAX_PUBLIC_CHUNK};

use crate::config::OwnData;
use crate::driver::exchange;
use crate::learner::NodeData;
use crate::transport::{connect_with_backoff, Kit};

/// Work-directory name of a fetched public set in `format`.
pub fn public_file_name(format: fedistill_shared::data::PublicFormat) -> &'static str {
    match format {
        fedistill_shared::data::PublicFormat::Idx => "public.idx3-ubyte",
        fedistill_shared::data::PublicFormat::Ts => "public.ts",
        fedistill_shared::data::PublicFormat::Csv | fedistill_shared::data::PublicFormat::ImageFolder => "public.csv",
    }
}

/// Why the coordinator's task is not this node's: the node stops (retrying cannot help).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TaskMismatch(pub String);

/// Asks the coordinator for its signed task card and checks it is `card` (the one this node's files were
/// checked against): the signature under the kit's coordinator key and federation, the card's own digest,
/// and the digest `card` has.
pub async fn check_task(
    conn: &quinn::Connection,
    kit: &Kit,
    card_digest: Digest,
    max_frame: usize,
) -> anyhow::Result<TaskAnnouncement> {
    let (reply, _, _) = exchange(conn, &ToCoordinator::GetTask, max_frame).await?;
    let signed = match reply {
        Reply::Task(s) => s,
        Reply::Reject {
            code: RejectCode::NoTask,
            message,
        } => {
            return Err(TaskMismatch(format!(
                "this node reads its own files against a task card, but the coordinator has none: {message}"
            ))
            .into())
        }
        other => anyhow::bail!("unexpected reply to the task request: {other:?}"),
    };
    anyhow::ensure!(
        signed.signer == Signer::Coordinator,
        "the task announcement is signed by {:?}, not the coordinator",
        signed.signer
    );
    let ann = signed
        .verify_offline(&kit.coordinator_key, kit.federation())
        .context("the coordinator's task announcement does not verify under the kit's coordinator key")?
        .into_inner();
    let theirs = TaskCard::from_toml_str(&ann.card, "the coordinator's task card")?;
    anyhow::ensure!(
        Digest(theirs.digest()) == ann.card_digest,
        "the coordinator's task card does not hash to the digest it announces"
    );
    if ann.card_digest != card_digest {
        return Err(TaskMismatch(format!(
            "the coordinator's task card {} (task {:?}) is not this node's card {}: ask the operator for the \
             federation's card and check your files against it (fedistill data check)",
            ann.card_digest.to_hex(),
            theirs.name,
            card_digest.to_hex()
        ))
        .into());
    }
    Ok(ann)
}

/// Prepares a node's own files before it joins: loads its card, checks it against the coordinator's, and
/// returns the card with the path of a public set whose SHA-256 matches it (placed by the operator, or
/// fetched into `workdir`).
pub async fn prepare(
    kit: &Kit,
    own: &OwnData,
    workdir: &Path,
    max_frame: usize,
    cancel: &CancellationToken,
) -> anyhow::Result<(TaskCard, PathBuf)> {
    let card = TaskCard::load(&own.card)?;
    let conn = tokio::select! {
        _ = cancel.cancelled() => anyhow::bail!("cancelled"),
        c = connect_with_backoff(kit, cancel) => c.map_err(|e| anyhow::anyhow!("cannot reach the coordinator: {e}"))?,
    };
    let ann = check_task(&conn, kit, Digest(card.digest()), max_frame).await?;
    info!(task = %card.name, card = %ann.card_digest.to_hex(), "the coordinator's task card is this node's");
    let path = match &own.public {
        Some(p) => p.clone(),
        None => {
            let dest = workdir.join(public_file_name(card.public.format));
            fetch_public(&conn, &card, &ann, &dest, own.max_public_bytes, max_frame).await?;
            dest
        }
    };
    conn.close(0u32.into(), b"prepared");
    Ok((card, path))
}

/// Fetches the public set into `dest` unless a verified copy is there: appends to `dest.part` from where
/// an earlier attempt stopped, refuses a size above `max_bytes` or one that changes, and renames the
/// file into place only once its SHA-256 is the card's.
pub async fn fetch_public(
    conn: &quinn::Connection,
    card: &TaskCard,
    ann: &TaskAnnouncement,
    dest: &Path,
    max_bytes: u64,
    max_frame: usize,
) -> anyhow::Result<()> {
    let want = card.public.sha256.to_ascii_lowercase();
    if dest.exists() && sha256_hex(dest)? == want {
        info!(path = %dest.display(), "public set already here and verified");
        return Ok(());
    }
    let total = ann.public_bytes;
    anyhow::ensure!(
        total <= max_bytes,
        "the coordinator's public set is {total} bytes, more than [public] max_bytes = {max_bytes}"
    );
    let mut part_name = dest.file_name().unwrap_or_default().to_os_string();
    part_name.push(".part");
    let part = dest.with_file_name(part_name);
    let mut have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    if have > total {
        warn!(path = %part.display(), "partial public set longer than the file: starting over");
        std::fs::remove_file(&part).with_context(|| format!("removing {}", part.display()))?;
        have = 0;
    }
    if have > 0 {
        info!(bytes = have, total, "resuming the public set download");
    } else {
        info!(total, "fetching the public set from the coordinator");
    }
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&part)
        .with_context(|| format!("opening {}", part.display()))?;
    // A byte bar on a terminal; otherwise a plain `public set: DONE/TOTAL bytes (P%)` line on stderr at each
    // tenth of the file (chunks are up to 1 MiB, a line per chunk would flood the log).
    const LABEL: &str = "public set";
    let progress = Progress::auto();
    let bar = progress.mode() == ProgressMode::Bar;
    let percent = |have: u64| have.saturating_mul(100).checked_div(total).unwrap_or(100);
    progress.start_bytes(LABEL, total);
    if have > 0 {
        progress.advance(LABEL, have, total, &format!("bytes ({}%, resumed)", percent(have)));
    }
    let mut next_report = have + total / 10;
    while have < total {
        let ask = ToCoordinator::GetPublic {
            offset: have,
            max_len: MAX_PUBLIC_CHUNK,
        };
        let (reply, _, _) = exchange(conn, &ask, max_frame).await?;
        match reply {
            Reply::PublicChunk {
                total: t,
                offset,
                bytes,
            } => {
                anyhow::ensure!(
                    t == total,
                    "the public set changed size during the download ({total} then {t} bytes)"
                );
                anyhow::ensure!(offset == have, "chunk at offset {offset}, asked for {have}");
                anyhow::ensure!(
                    !bytes.is_empty() && bytes.len() as u64 <= total - have,
                    "chunk of {} bytes at offset {have} of {total}",
                    bytes.len()
                );
                out.write_all(&bytes)
                    .with_context(|| format!("writing {}", part.display()))?;
                have += bytes.len() as u64;
                if bar || have >= next_report || have == total {
                    progress.advance(LABEL, have, total, &format!("bytes ({}%)", percent(have)));
                    next_report = have + total / 10;
                }
            }
            Reply::Reject { code, message } => {
                anyhow::bail!("the coordinator refused the public set ({code}): {message}")
            }
            other => anyhow::bail!("unexpected reply to a public-set request: {other:?}"),
        }
    }
    out.sync_all().with_context(|| format!("syncing {}", part.display()))?;
    drop(out);
    let got = sha256_hex(&part)?;
    progress.finish(
        LABEL,
        if got == want {
            "sha256 matches the task card"
        } else {
            "sha256 differs from the task card"
        },
    );
    if got != want {
        std::fs::remove_file(&part).with_context(|| format!("removing {}", part.display()))?;
        anyhow::bail!("the public set from the coordinator has sha256 {got}, the task card declares {want}: discarded");
    }
    std::fs::rename(&part, dest).with_context(|| format!("moving the public set to {}", dest.display()))?;
    info!(path = %dest.display(), bytes = total, "public set fetched and verified");
    Ok(())
}

/// Reads the node's files against `card`: the public set (its SHA-256 must be the card's, checked before
/// any row is read) and the private file, split (seeded) into training rows and a holdout to test on.
/// Blocking.
pub fn load(own: &OwnData, card: &TaskCard, public_path: &Path) -> anyhow::Result<NodeData> {
    let want = card.public.sha256.to_ascii_lowercase();
    let got = sha256_hex(public_path)?;
    anyhow::ensure!(
        got == want,
        "{}: sha256 {got} differs from the task card's public set {want}",
        public_path.display()
    );
    let (mut public, mut public_labelled) = read_public(public_path, card)?;
    anyhow::ensure!(
        public.n as u64 == card.public.rows,
        "{}: {} rows, the task card declares {}",
        public_path.display(),
        public.n,
        card.public.rows
    );
    if let Some(labels) = &own.public_labels {
        // Labels of an unlabelled public set, for reporting the consensus' accuracy only (never trained on).
        anyhow::ensure!(
            !public_labelled,
            "[public] labels: the public set carries its own labels"
        );
        let file = labels.display().to_string();
        let arr = fedistill_shared::data::idx::read_idx(&fedistill_shared::data::read_file(labels)?, &file, 1)?;
        anyhow::ensure!(
            arr.data.len() == public.n && arr.data.iter().all(|&l| (l as usize) < public.num_classes),
            "{file}: {} labels (each below {}) expected for the public set, found {} (or a label out of range)",
            public.n,
            public.num_classes,
            arr.data.len()
        );
        public.labels = arr.data.iter().map(|&l| u32::from(l)).collect();
        public_labelled = true;
    }
    let (rows, report) = match own.format {
        Some(f) => read_private_as(&own.private, card, &own.csv, f)?,
        None => read_private(&own.private, card, &own.csv)?,
    };
    if !report.ignored_columns.is_empty() {
        info!(
            file = %own.private.display(),
            columns = %report.ignored_columns.join(", "),
            "columns not in the task card are ignored"
        );
    }
    let (private, test) = match (&card.benchmark, &own.benchmark) {
        // The card's shared benchmark set: every row of this node trains.
        (Some(declared), Some(path)) => {
            let got = sha256_hex(path)?;
            anyhow::ensure!(
                got == declared.sha256,
                "{}: sha256 {got} differs from the task card's benchmark set {}",
                path.display(),
                declared.sha256
            );
            let (bench, _) = read_private(path, card, &fedistill_shared::data::CsvOptions::default())?;
            anyhow::ensure!(
                bench.n as u64 == declared.rows,
                "{}: {} rows, the task card declares {}",
                path.display(),
                bench.n,
                declared.rows
            );
            (rows, bench)
        }
        (Some(_), None) => anyhow::bail!(
            "the task card declares a benchmark set: name it in [benchmark] path = \"...\" (every node tests on it)"
        ),
        (None, Some(path)) => anyhow::bail!(
            "[benchmark] path = {:?}: the task card declares no benchmark set",
            path.display().to_string()
        ),
        (None, None) => {
            let holdout = ((rows.n as f64) * own.holdout).round() as usize;
            anyhow::ensure!(
                holdout >= 1 && holdout < rows.n,
                "{}: {} rows cannot keep a holdout of {} ({} of them) and still train",
                own.private.display(),
                rows.n,
                own.holdout,
                holdout
            );
            let mut order: Vec<usize> = (0..rows.n).collect();
            order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(own.seed));
            (rows.subset(&order[holdout..]), rows.subset(&order[..holdout]))
        }
    };
    let unlabeled = match &own.unlabeled {
        None => None,
        Some(path) => {
            let windows = card.sequence.as_ref().is_some_and(|s| s.windows.is_some());
            anyhow::ensure!(
                !windows,
                "[private] unlabeled = {:?}: this task's windows are cut from long series and labelled by what \
                 follows them, so there is no unlabelled window",
                path.display().to_string()
            );
            let rows = if card.image.is_some() {
                fedistill_shared::data::read_public_idx(path, card)
            } else if card.sequence.is_some() {
                fedistill_shared::data::read_public_ts(path, card).map(|(rows, _)| rows)
            } else {
                // A CSV read like the private file (same column mapping and delimiter), without its label.
                let opts = fedistill_shared::data::CsvOptions {
                    unlabelled: true,
                    ..own.csv.clone()
                };
                fedistill_shared::data::read_private_csv(path, card, &opts).map(|(rows, _)| rows)
            }
            .with_context(|| format!("[private] unlabeled: reading {}", path.display()))?;
            info!(file = %path.display(), rows = rows.n, "unlabelled private rows read against the task card");
            Some(rows)
        }
    };
    info!(
        file = %own.private.display(),
        train = private.n,
        test = test.n,
        classes = ?private.class_counts(),
        "private rows read against the task card"
    );
    Ok(NodeData {
        private,
        public,
        public_digest: Digest(
            card.public
                .digest()
                .context("the card's public sha256 is not 64 hex digits")?,
        ),
        public_labelled,
        test,
        seed: own.seed,
        index: 0,
        augment: fedistill_shared::ml::augment::PublicAugment::from_card(card),
        unlabeled,
        modalities: card.modality_ranges(),
    })
}

fn sha256_hex(path: &Path) -> anyhow::Result<String> {
    Ok(hex::encode(fedistill_shared::data::sha256_file(path)?.0))
}
