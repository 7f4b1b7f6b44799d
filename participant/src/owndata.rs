// Over 800 lines: with its tests; the loader itself is under 500 lines, and its tests read the files it reads.
//! A node on its institution's own files (`[task]`, `[private]`, `[public]`): the task card is checked
//! against the coordinator's signed one, the public transfer set is taken from where the operator placed
//! it or fetched from the coordinator over the mTLS connection (chunked, resumable, size-bounded) and
//! verified against the card's SHA-256 before any use, and the private file is read against the card and
//! split (seeded, disjoint) into the rows it trains on, a validation set (the degradation guard and the
//! accuracy it reports for early stopping) and a test holdout (its final reports). Nothing is half-loaded:
//! any bad row stops the node before it labels anything. docs/data.md, "Task card and own files".

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
    download_public(card, ann.public_bytes, dest, max_bytes, |offset| async move {
        let ask = ToCoordinator::GetPublic {
            offset,
            max_len: MAX_PUBLIC_CHUNK,
        };
        Ok(exchange(conn, &ask, max_frame).await?.0)
    })
    .await
}

/// [`fetch_public`]'s work, with `get(offset)` answering each `GetPublic` from `offset` (the coordinator
/// over the connection; a stand-in in the tests) and `total` the size the coordinator's signed
/// announcement gives.
async fn download_public<F, Fut>(
    card: &TaskCard,
    total: u64,
    dest: &Path,
    max_bytes: u64,
    mut get: F,
) -> anyhow::Result<()>
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Reply>>,
{
    let want = card.public.sha256.to_ascii_lowercase();
    if dest.exists() && sha256_hex(dest)? == want {
        info!(path = %dest.display(), "public set already here and verified");
        return Ok(());
    }
    anyhow::ensure!(
        total <= max_bytes,
        "the coordinator's public set is {total} bytes, more than [public] max_bytes = {max_bytes}: nothing \
         fetched (raise max_bytes, or place the file yourself and name it in [public] path)"
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
        match get(have).await? {
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

/// How a node's own rows are dealt ([`split_rows`]): indices into the file's rows, disjoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowSplit {
    /// The rows the teacher trains on.
    pub train: Vec<usize>,
    /// The rows the degradation guard and the accuracy reported for early stopping are measured on.
    pub validation: Vec<usize>,
    /// The test holdout (the final reports); empty when the card's shared benchmark set tests instead.
    pub test: Vec<usize>,
}

/// Deals `n` rows of `file` by one seeded shuffle: the first `round(n * holdout)` are the test holdout
/// (`holdout` is `None` when the card declares a shared benchmark set), the next `round(n * validation)`
/// the validation rows, the rest train. The same seed and `n` give the same split, and the test holdout
/// is the one a node kept before it held out validation rows. Refused, naming the key, when a part would
/// be empty; `validation = 0` (in-process experiments only, see [`OwnData::validation`]) holds none out.
pub fn split_rows(file: &Path, n: usize, holdout: Option<f64>, validation: f64, seed: u64) -> anyhow::Result<RowSplit> {
    let share = |s: f64| ((n as f64) * s).round() as usize;
    let tests = holdout.map_or(0, share);
    if let Some(h) = holdout {
        anyhow::ensure!(
            tests >= 1 && tests < n,
            "{}: {n} rows cannot keep a holdout of {h} ({tests} of them) and still train",
            file.display()
        );
    }
    let checks = share(validation);
    anyhow::ensure!(
        (checks >= 1 || validation == 0.0) && tests + checks < n,
        "{}: {n} rows cannot keep [private] validation = {validation} ({checks} of them){} and still train",
        file.display(),
        if tests > 0 {
            format!(" beside a test holdout of {tests}")
        } else {
            String::new()
        }
    );
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    Ok(RowSplit {
        test: order[..tests].to_vec(),
        validation: order[tests..tests + checks].to_vec(),
        train: order[tests + checks..].to_vec(),
    })
}

/// For a classification file: re-deals `split`'s validation rows class by class from the rows outside the
/// test holdout, so a small or skewed file does not lose a rare class to its validation split. Each class
/// gives its share of the validation count (largest remainder, lower class first on ties) and keeps at least
/// one training row; the rows keep the seeded shuffle's order, so the result is as seeded as `split`.
pub fn stratify_validation(split: RowSplit, labels: &[u32]) -> RowSplit {
    let checks = split.validation.len();
    if checks == 0 {
        return split;
    }
    let pool: Vec<usize> = split.validation.iter().chain(&split.train).copied().collect();
    let mut by_class: std::collections::BTreeMap<u32, Vec<usize>> = std::collections::BTreeMap::new();
    for &r in &pool {
        by_class.entry(labels[r]).or_default().push(r);
    }
    let classes: Vec<&Vec<usize>> = by_class.values().collect();
    let exact: Vec<f64> = classes
        .iter()
        .map(|rows| rows.len() as f64 * checks as f64 / pool.len() as f64)
        .collect();
    let mut quota: Vec<usize> = classes
        .iter()
        .zip(&exact)
        .map(|(rows, e)| (e.floor() as usize).min(rows.len().saturating_sub(1)))
        .collect();
    let mut by_remainder: Vec<usize> = (0..classes.len()).collect();
    by_remainder.sort_by(|&a, &b| {
        let (ra, rb) = (exact[a] - exact[a].floor(), exact[b] - exact[b].floor());
        rb.partial_cmp(&ra).unwrap_or(std::cmp::Ordering::Equal).then(a.cmp(&b))
    });
    let mut left = checks.saturating_sub(quota.iter().sum());
    while left > 0 {
        let before = left;
        for &c in &by_remainder {
            if left > 0 && quota[c] + 1 < classes[c].len() {
                quota[c] += 1;
                left -= 1;
            }
        }
        if left == before {
            break;
        }
    }
    let chosen: std::collections::HashSet<usize> = classes
        .iter()
        .zip(&quota)
        .flat_map(|(rows, &q)| rows[..q].iter().copied())
        .collect();
    RowSplit {
        validation: pool.iter().copied().filter(|r| chosen.contains(r)).collect(),
        train: pool.iter().copied().filter(|r| !chosen.contains(r)).collect(),
        test: split.test,
    }
}

/// Reads the node's files against `card`: the public set (its SHA-256 must be the card's, checked before
/// any row is read) and the private file, split (seeded, [`split_rows`]) into training rows, validation
/// rows and a test holdout (or, when the card declares one, the shared benchmark set to test on).
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
    let (private, validation, test) = match (&card.benchmark, &own.benchmark) {
        // The card's shared benchmark set: every row of this node but its validation rows trains.
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
            let split = split_rows(&own.private, rows.n, None, own.validation, own.seed)?;
            let split = if rows.is_regression() {
                split
            } else {
                stratify_validation(split, &rows.labels)
            };
            let validation = (!split.validation.is_empty()).then(|| rows.subset(&split.validation));
            (rows.subset(&split.train), validation, bench)
        }
        (Some(_), None) => anyhow::bail!(
            "the task card declares a benchmark set: name it in [benchmark] path = \"...\" (every node tests on it)"
        ),
        (None, Some(path)) => anyhow::bail!(
            "[benchmark] path = {:?}: the task card declares no benchmark set",
            path.display().to_string()
        ),
        (None, None) => {
            let split = split_rows(&own.private, rows.n, Some(own.holdout), own.validation, own.seed)?;
            let split = if rows.is_regression() {
                split
            } else {
                stratify_validation(split, &rows.labels)
            };
            let validation = (!split.validation.is_empty()).then(|| rows.subset(&split.validation));
            (rows.subset(&split.train), validation, rows.subset(&split.test))
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
        validation = validation.as_ref().map_or(0, |v| v.n),
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
        validation,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use fedistill_shared::wire::messages::RejectCode;

    /// A labelled `.ts` series file of `rows` rows of length 3, each row its own (`[i, 2i, i^2]`).
    fn series(rows: usize, labelled: bool) -> String {
        let mut text = format!(
            "@problemName t\n@classLabel {}\n@data\n",
            if labelled { "true a b" } else { "false" }
        );
        for k in 0..rows {
            let i = k as f32;
            text.push_str(&format!("{},{},{}", i, 2.0 * i, i * i));
            if labelled {
                text.push_str(if k.is_multiple_of(2) { ":a" } else { ":b" });
            }
            text.push('\n');
        }
        text
    }

    /// A series card whose public set is `public` (its SHA-256 and rows).
    fn card_for(public: &[u8], rows: usize) -> TaskCard {
        let sha = hex::encode(fedistill_shared::crypto::Digest::of(public).0);
        TaskCard::from_toml_str(
            &format!(
                "name = \"t\"\nversion = 1\n[label]\nclasses = [\"a\", \"b\"]\n[sequence]\nchannels = 1\nlength = 3\n\
                 [public]\nsha256 = \"{sha}\"\nrows = {rows}\nformat = \"ts\"\n"
            ),
            "card",
        )
        .expect("a series card")
    }

    fn own(dir: &Path, validation: f64, seed: u64) -> OwnData {
        OwnData {
            card: dir.join("task.toml"),
            private: dir.join("own.ts"),
            format: None,
            csv: fedistill_shared::data::CsvOptions::default(),
            holdout: 0.2,
            validation,
            seed,
            public: Some(dir.join("public.ts")),
            max_public_bytes: u64::MAX,
            public_labels: None,
            benchmark: None,
            unlabeled: None,
        }
    }

    #[test]
    fn the_rows_split_three_ways_disjoint_and_seeded() {
        let f = Path::new("own.csv");
        let s = split_rows(f, 100, Some(0.2), 0.1, 7).expect("split");
        assert_eq!((s.train.len(), s.validation.len(), s.test.len()), (70, 10, 20));
        let all: BTreeSet<usize> = s.train.iter().chain(&s.validation).chain(&s.test).copied().collect();
        assert_eq!(all, (0..100).collect(), "every row in exactly one part");
        // Seeded: the same seed deals the same rows, another seed others.
        assert_eq!(split_rows(f, 100, Some(0.2), 0.1, 7).expect("split"), s);
        let other = split_rows(f, 100, Some(0.2), 0.1, 8).expect("split");
        assert_ne!(other.validation, s.validation);
        // The test holdout is the one a node kept before validation rows were held out (the same shuffle,
        // its first rows): adding the validation split moved no row into or out of anyone's test set.
        let mut order: Vec<usize> = (0..100).collect();
        order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(7));
        assert_eq!(s.test, order[..20]);
        // With a shared benchmark set there is no test holdout; the validation rows still come out.
        let b = split_rows(f, 100, None, 0.1, 7).expect("split");
        assert_eq!((b.train.len(), b.validation.len(), b.test.len()), (90, 10, 0));
        // `validation = 0` (in-process experiments, never a node's config) holds none out.
        let none = split_rows(f, 3, Some(0.34), 0.0, 7).expect("split");
        assert_eq!((none.train.len(), none.validation.len(), none.test.len()), (2, 0, 1));
        // A part that would be empty is refused, naming the key.
        let err = split_rows(f, 4, Some(0.25), 0.1, 7).expect_err("no validation row");
        assert_eq!(
            err.to_string(),
            "own.csv: 4 rows cannot keep [private] validation = 0.1 (0 of them) beside a test holdout of 1 and \
             still train"
        );
        let err = split_rows(f, 10, Some(0.5), 0.5, 7).expect_err("nothing trains");
        assert!(
            err.to_string().contains("[private] validation = 0.5 (5 of them)"),
            "{err}"
        );
        let err = split_rows(f, 3, Some(0.1), 0.5, 7).expect_err("no test row");
        assert!(
            err.to_string().contains("cannot keep a holdout of 0.1 (0 of them)"),
            "{err}"
        );
    }

    /// A skewed classification file keeps its rare class in training: the validation rows are dealt class by
    /// class (same count, disjoint, seeded), never a class's last training row.
    #[test]
    fn validation_rows_are_dealt_by_class_and_keep_a_rare_class_training() {
        let f = Path::new("p.csv");
        // 15 rows, two of class 0: a plain 2-row validation draw may take both.
        let labels: Vec<u32> = (0..15).map(|i| u32::from(i >= 2)).collect();
        for seed in 0..50 {
            let plain = split_rows(f, 15, None, 0.1, seed).expect("split");
            let s = stratify_validation(plain.clone(), &labels);
            assert_eq!(s.validation.len(), plain.validation.len(), "seed {seed}");
            assert!(
                s.train.iter().filter(|&&r| labels[r] == 0).count() == 2,
                "seed {seed}: {s:?}"
            );
            let mut all: Vec<usize> = s.train.iter().chain(&s.validation).chain(&s.test).copied().collect();
            all.sort_unstable();
            assert_eq!(all, (0..15).collect::<Vec<_>>(), "seed {seed}");
            assert_eq!(stratify_validation(plain, &labels), s, "seeded");
        }
        // Balanced classes: each gives its share.
        let labels: Vec<u32> = (0..100).map(|i| i % 2).collect();
        let s = stratify_validation(split_rows(f, 100, Some(0.2), 0.1, 3).expect("split"), &labels);
        assert_eq!(s.validation.iter().filter(|&&r| labels[r] == 0).count(), 5);
        assert_eq!(s.validation.iter().filter(|&&r| labels[r] == 1).count(), 5);
    }

    /// `load` deals the file's rows into training, validation and test rows: disjoint, covering the file,
    /// sized by `holdout` and `validation`, the same for the same seed.
    #[test]
    fn a_node_reads_its_rows_into_disjoint_seeded_train_validation_and_test_sets() {
        let dir = tempfile::tempdir().expect("dir");
        let d = dir.path();
        let public = series(4, false);
        std::fs::write(d.join("public.ts"), &public).expect("public");
        std::fs::write(d.join("own.ts"), series(20, true)).expect("own");
        let card = card_for(public.as_bytes(), 4);
        let rows = |ds: &fedistill_shared::data::Dataset| -> Vec<Vec<u32>> {
            (0..ds.n)
                .map(|i| ds.row(i).iter().map(|v| v.to_bits()).collect())
                .collect()
        };
        let held = |data: &NodeData| data.validation.clone().expect("validation rows held out");
        let data = load(&own(d, 0.1, 3), &card, &d.join("public.ts")).expect("loads");
        let validation = held(&data);
        assert_eq!((data.private.n, validation.n, data.test.n), (14, 2, 4));
        let all: BTreeSet<Vec<u32>> = [&data.private, &validation, &data.test]
            .into_iter()
            .flat_map(rows)
            .collect();
        assert_eq!(all.len(), 20, "the three parts are disjoint and cover the file");
        let again = load(&own(d, 0.1, 3), &card, &d.join("public.ts")).expect("loads");
        assert_eq!(rows(&held(&again)), rows(&validation));
        assert_eq!(rows(&again.test), rows(&data.test));
        let reseeded = load(&own(d, 0.1, 4), &card, &d.join("public.ts")).expect("loads");
        assert_ne!(rows(&reseeded.test), rows(&data.test));
        // More validation rows come out of the training rows, not the test holdout.
        let wider = load(&own(d, 0.25, 3), &card, &d.join("public.ts")).expect("loads");
        assert_eq!((wider.private.n, held(&wider).n), (11, 5));
        // `validation = 0` (in-process experiments) holds none out: the test rows serve.
        let none = load(&own(d, 0.0, 3), &card, &d.join("public.ts")).expect("loads");
        assert!(none.validation.is_none());
        assert_eq!((none.private.n, none.test.n), (16, 4));
        assert_eq!(rows(&wider.test), rows(&data.test));
        // A placed public file whose SHA-256 is not the card's is refused before any row is read.
        std::fs::write(d.join("public.ts"), series(5, false)).expect("another public file");
        let err = load(&own(d, 0.1, 3), &card, &d.join("public.ts"))
            .err()
            .expect("refused");
        assert!(
            err.to_string().contains("differs from the task card's public set"),
            "{err}"
        );
    }

    /// A stand-in coordinator serving `bytes` in chunks of `chunk`, announcing `total` in every chunk and
    /// counting the requests.
    fn serve(
        bytes: Vec<u8>,
        total: u64,
        chunk: usize,
        asked: &AtomicUsize,
    ) -> impl FnMut(u64) -> std::future::Ready<anyhow::Result<Reply>> + '_ {
        move |offset| {
            asked.fetch_add(1, Ordering::SeqCst);
            let start = (offset as usize).min(bytes.len());
            let end = (start + chunk).min(bytes.len());
            std::future::ready(Ok(Reply::PublicChunk {
                total,
                offset,
                bytes: bytes[start..end].to_vec(),
            }))
        }
    }

    fn run<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn a_fetched_public_set_is_kept_only_when_its_sha256_is_the_cards() {
        let dir = tempfile::tempdir().expect("dir");
        let dest = dir.path().join("public.ts");
        let part = dir.path().join("public.ts.part");
        let good = series(6, false).into_bytes();
        let card = card_for(&good, 6);
        let total = good.len() as u64;
        let asked = AtomicUsize::new(0);
        // Other bytes of the same size: fetched whole, found not to be the card's, discarded.
        let mut bad = good.clone();
        let last = bad.len() - 2;
        bad[last] = b'7';
        let err = run(download_public(
            &card,
            total,
            &dest,
            u64::MAX,
            serve(bad, total, 7, &asked),
        ))
        .expect_err("another file");
        let want = card.public.sha256.to_ascii_lowercase();
        let text = err.to_string();
        assert!(
            text.starts_with("the public set from the coordinator has sha256 ")
                && text.ends_with(&format!("the task card declares {want}: discarded")),
            "{text}"
        );
        assert!(!dest.exists() && !part.exists(), "nothing of it is kept");
        // A stale file in the destination is not the card's either: fetched again and replaced.
        std::fs::write(&dest, b"stale").expect("stale");
        run(download_public(
            &card,
            total,
            &dest,
            u64::MAX,
            serve(good.clone(), total, 7, &asked),
        ))
        .expect("fetched");
        assert_eq!(std::fs::read(&dest).expect("dest"), good);
        assert!(!part.exists());
        // Once verified in place, nothing more is asked.
        let before = asked.load(Ordering::SeqCst);
        run(download_public(
            &card,
            total,
            &dest,
            u64::MAX,
            serve(Vec::new(), total, 7, &asked),
        ))
        .expect("kept");
        assert_eq!(asked.load(Ordering::SeqCst), before);
    }

    #[test]
    fn a_public_set_above_max_bytes_or_changing_size_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let dest = dir.path().join("public.ts");
        let part = dir.path().join("public.ts.part");
        let good = series(6, false).into_bytes();
        let card = card_for(&good, 6);
        let total = good.len() as u64;
        let asked = AtomicUsize::new(0);
        // Larger than [public] max_bytes: refused before a byte is asked for or written.
        let err = run(download_public(
            &card,
            total,
            &dest,
            total - 1,
            serve(good.clone(), total, 7, &asked),
        ))
        .expect_err("too large");
        assert_eq!(
            err.to_string(),
            format!(
                "the coordinator's public set is {total} bytes, more than [public] max_bytes = {}: nothing fetched \
                 (raise max_bytes, or place the file yourself and name it in [public] path)",
                total - 1
            )
        );
        assert_eq!(asked.load(Ordering::SeqCst), 0);
        assert!(!part.exists() && !dest.exists());
        // Exactly max_bytes is fine.
        run(download_public(
            &card,
            total,
            &dest,
            total,
            serve(good.clone(), total, 7, &asked),
        ))
        .expect("fits");
        std::fs::remove_file(&dest).expect("remove");
        // A chunk announcing another size than the signed announcement: refused mid-way.
        let err = run(download_public(
            &card,
            total,
            &dest,
            u64::MAX,
            serve(good.clone(), total + 1, 7, &asked),
        ))
        .expect_err("size changed");
        assert!(
            err.to_string().contains(&format!(
                "the public set changed size during the download ({total} then {} bytes)",
                total + 1
            )),
            "{err}"
        );
        assert!(!dest.exists());
        // The coordinator refusing to serve (its file changed on disk) stops the fetch with its message.
        std::fs::remove_file(&part).ok();
        let refuse = |_offset: u64| {
            std::future::ready(Ok(Reply::Reject {
                code: RejectCode::NoTask,
                message: "public.ts changed on disk".into(),
            }))
        };
        let err = run(download_public(&card, total, &dest, u64::MAX, refuse)).expect_err("refused");
        assert_eq!(
            err.to_string(),
            "the coordinator refused the public set (no_task): public.ts changed on disk"
        );
        assert!(!dest.exists());
    }
}
