//! `fedistill bench load`: how fast an institution's own files load, measured in one run on one
//! generated file: a bare `csv`-crate read loop (the baseline: every record split, nothing
//! encoded), `read_private_csv`, `read_private_parquet` on the same rows written as Parquet, and
//! the steward's `check_csv`; plus the peak resident memory of a real `fedistill data check`
//! process on the CSV (or on a larger one, `--check-gb`). The rows are the embedded lending-club
//! rows drawn at random with their numbers varied, against the card `task infer` drafts from the
//! real file. Build with --release for meaningful figures.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use fedistill_shared::data::{self, CsvOptions, Feature, InferOptions, TaskCard};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::scale::probe::{clock_ticks_per_second, ProcSample};

/// Default size of the generated CSV, MB (10^6 bytes).
pub const DEFAULT_SIZE_MB: f64 = 200.0;
/// Size with `--quick`, MB.
pub const QUICK_SIZE_MB: f64 = 20.0;
/// The peak resident memory `fedistill data check` must stay under, MB, whatever the file size.
pub const CHECK_RSS_TARGET_MB: f64 = 300.0;
/// How often the child's VmHWM is sampled.
const RSS_SAMPLE: Duration = Duration::from_millis(5);
/// Rows generated (and written to Parquet) per batch.
const CHUNK_ROWS: usize = 16_384;

/// Options of `fedistill bench load`.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadOptions {
    /// A ~20 MB file instead of ~200 MB.
    #[arg(long)]
    pub quick: bool,
    /// Size of the generated CSV in MB (overrides the default and --quick).
    #[arg(long)]
    pub size_mb: Option<f64>,
    /// Measure `fedistill data check`'s peak RSS on a generated CSV of this many GB instead.
    #[arg(long)]
    pub check_gb: Option<f64>,
    /// Write load.json, load.md and load-throughput.png/.svg (rows/s per method) to this directory.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// The `fedistill` binary, run as `fedistill data check` for the memory measurement (not a flag: the
    /// dispatch sets it).
    #[arg(skip)]
    pub exe: PathBuf,
    /// The command line, as the report records it (not a flag: the dispatch sets it).
    #[arg(skip)]
    pub command: String,
}

/// What was measured (stable names, used in the report).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoadMethod {
    /// The `csv` crate's `read_byte_record` over the file: every record split, nothing decoded.
    CsvBaseline,
    /// `read_private_csv`: every cell checked, imputed, scaled and one-hot encoded.
    ReadPrivateCsv,
    /// `read_private_parquet` on the same rows as Parquet (Snappy).
    ReadPrivateParquet,
    /// `check_csv`: the steward's check, counters only.
    CheckCsv,
}

impl LoadMethod {
    /// The stable name.
    pub fn name(self) -> &'static str {
        match self {
            LoadMethod::CsvBaseline => "csv-baseline",
            LoadMethod::ReadPrivateCsv => "read-private-csv",
            LoadMethod::ReadPrivateParquet => "read-private-parquet",
            LoadMethod::CheckCsv => "check-csv",
        }
    }
}

/// One measured method.
#[derive(Debug, Clone, Serialize)]
pub struct MethodRow {
    /// What ran.
    pub method: LoadMethod,
    /// `csv` or `parquet`: the file it read.
    pub file: &'static str,
    /// Bytes of that file.
    pub bytes: u64,
    /// Data rows it read.
    pub rows: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// File MB (10^6 bytes) per second.
    pub mb_per_s: f64,
    /// Data rows per second.
    pub rows_per_s: f64,
    /// `rows_per_s` over the baseline's.
    pub vs_baseline: f64,
}

/// Peak resident memory of one `fedistill data check` process.
#[derive(Debug, Clone, Serialize)]
pub struct CheckMemory {
    /// The CSV it checked, bytes.
    pub file_bytes: u64,
    /// Highest VmHWM seen, MB (10^6 bytes); `None` when the process ended before the first sample.
    pub peak_rss_mb: Option<f64>,
    /// `CHECK_RSS_TARGET_MB`.
    pub target_mb: f64,
    /// Sampling period of /proc/PID/status, ms (the peak is a lower bound at this resolution).
    pub sampled_every_ms: u64,
    /// Seconds the check took.
    pub seconds: f64,
}

/// The whole result (load.json).
#[derive(Debug, Clone, Serialize)]
pub struct LoadBench {
    /// The command that produced it.
    pub command: String,
    /// `release` or `debug`.
    pub build: &'static str,
    /// The task card's name, columns and model inputs.
    pub task: String,
    /// Card columns (features + label).
    pub columns: usize,
    /// Model inputs per row.
    pub inputs: usize,
    /// Data rows in both files.
    pub rows: u64,
    /// Bytes of the CSV.
    pub csv_bytes: u64,
    /// Bytes of the Parquet file (Snappy).
    pub parquet_bytes: u64,
    /// Whether `read_private_parquet` returned exactly the dataset `read_private_csv` returned.
    pub parquet_matches_csv: bool,
    /// One line per method, the baseline first.
    pub methods: Vec<MethodRow>,
    /// `fedistill data check`'s peak memory.
    pub check_memory: CheckMemory,
}

/// Runs the suite, prints its table and writes the report.
pub fn run(opts: &LoadOptions) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        eprintln!("warning: debug build; figures are only meaningful with --release");
    }
    let size_mb = opts
        .size_mb
        .unwrap_or(if opts.quick { QUICK_SIZE_MB } else { DEFAULT_SIZE_MB });
    ensure!(
        size_mb > 0.0 && size_mb.is_finite(),
        "--size-mb must be a positive number, not {size_mb}"
    );
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let source = Source::lending_club(dir.path())?;
    let card_path = dir.path().join("task.toml");
    std::fs::write(&card_path, source.card.to_toml_string()).context("writing the task card")?;

    let csv = dir.path().join("own.csv");
    let pq = dir.path().join("own.parquet");
    eprintln!("generating {size_mb} MB of lending-club rows as CSV and Parquet ...");
    let rows = source.generate(&csv, Some(&pq), (size_mb * 1e6) as u64, 1)?;
    let (csv_bytes, parquet_bytes) = (file_size(&csv)?, file_size(&pq)?);

    let card = &source.card;
    let copts = CsvOptions::default();
    let mut methods = Vec::new();
    let mut time = |method: LoadMethod, file: &'static str, bytes: u64, f: &mut dyn FnMut() -> anyhow::Result<u64>| {
        eprintln!("  {} ...", method.name());
        let start = Instant::now();
        let rows = f()?;
        let seconds = start.elapsed().as_secs_f64().max(1e-9);
        methods.push(MethodRow {
            method,
            file,
            bytes,
            rows,
            seconds,
            mb_per_s: bytes as f64 / 1e6 / seconds,
            rows_per_s: rows as f64 / seconds,
            vs_baseline: 1.0,
        });
        anyhow::Ok(())
    };
    time(LoadMethod::CsvBaseline, "csv", csv_bytes, &mut || baseline(&csv))?;
    let mut from_csv = None;
    time(LoadMethod::ReadPrivateCsv, "csv", csv_bytes, &mut || {
        let (ds, _) = data::read_private_csv(&csv, card, &copts)?;
        let n = ds.n as u64;
        from_csv = Some(ds);
        Ok(n)
    })?;
    let mut parquet_matches_csv = false;
    time(LoadMethod::ReadPrivateParquet, "parquet", parquet_bytes, &mut || {
        let (ds, _) = data::read_private_parquet(&pq, card, &copts)?;
        parquet_matches_csv = from_csv.as_ref() == Some(&ds);
        Ok(ds.n as u64)
    })?;
    drop(from_csv);
    time(LoadMethod::CheckCsv, "csv", csv_bytes, &mut || {
        let r = data::check_csv(&csv, card, &copts, data::DEFAULT_MAX_PROBLEMS);
        ensure!(r.usable(), "the generated CSV does not pass the check:\n{r}");
        Ok(r.rows)
    })?;
    let base = methods[0].rows_per_s;
    for m in &mut methods {
        m.vs_baseline = m.rows_per_s / base;
    }
    if !parquet_matches_csv {
        eprintln!("warning: read_private_parquet returned other values than read_private_csv on the same rows");
    }

    let checked = match opts.check_gb {
        Some(gb) => {
            ensure!(
                gb > 0.0 && gb.is_finite(),
                "--check-gb must be a positive number, not {gb}"
            );
            let big = dir.path().join("own-big.csv");
            eprintln!("generating {gb} GB of CSV for the memory measurement ...");
            source.generate(&big, None, (gb * 1e9) as u64, 2)?;
            big
        }
        None => csv.clone(),
    };
    eprintln!("  fedistill data check (peak RSS) ...");
    let check_memory = check_peak_rss(&opts.exe, &card_path, &checked, dir.path())?;

    let result = LoadBench {
        command: opts.command.clone(),
        build: if cfg!(debug_assertions) { "debug" } else { "release" },
        task: card.name.clone(),
        columns: card.features.len() + 1,
        inputs: card.input_dim(),
        rows,
        csv_bytes,
        parquet_bytes,
        parquet_matches_csv,
        methods,
        check_memory,
    };
    print!("{}", format_table(&result));
    if let Some(dir) = &opts.report {
        write_report(dir, &result)?;
        eprintln!("report written to {}", dir.display());
    }
    Ok(())
}

fn file_size(path: &Path) -> anyhow::Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("reading the size of {}", path.display()))?
        .len())
}

/// The baseline: the csv crate splits every record of the file, and nothing more. Data rows.
fn baseline(path: &Path) -> anyhow::Result<u64> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(BufReader::new(f));
    let mut rec = csv::ByteRecord::new();
    let (mut records, mut fields) = (0u64, 0u64);
    while rdr.read_byte_record(&mut rec).context("splitting a record")? {
        records += 1;
        fields += rec.len() as u64;
    }
    // Keeps the loop from being optimised into nothing; every row has the header's width.
    ensure!(fields >= records, "records without fields");
    Ok(records.saturating_sub(1))
}

/// The lending-club rows the generator draws from, and the card drafted from them.
struct Source {
    card: TaskCard,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    /// Per column: numeric (varied and written as Float64) or text (kept, written as Utf8).
    numeric: Vec<bool>,
    /// Per numeric column: decimals its cells are written with (0 for integer columns).
    decimals: Vec<usize>,
}

impl Source {
    fn lending_club(dir: &Path) -> anyhow::Result<Source> {
        let bytes = data::embedded("lending_club.csv").context("lending_club.csv is not embedded in this build")?;
        let public = dir.join("lending_club.csv");
        std::fs::write(&public, bytes).context("writing the public lending-club file")?;
        let card = data::infer_card(&public, "Class", &InferOptions::default()).context("drafting the task card")?;
        let mut rdr = csv::Reader::from_reader(bytes);
        let header: Vec<String> = rdr
            .headers()
            .context("lending_club.csv header")?
            .iter()
            .map(str::to_string)
            .collect();
        let rows = rdr
            .records()
            .map(|r| r.map(|r| r.iter().map(str::to_string).collect::<Vec<_>>()))
            .collect::<Result<Vec<_>, _>>()
            .context("reading lending_club.csv")?;
        let numeric: Vec<bool> = header
            .iter()
            .map(|h| {
                card.features
                    .iter()
                    .any(|f| matches!(f, Feature::Numeric { name } if name == h))
            })
            .collect();
        let decimals = (0..header.len())
            .map(|k| {
                rows.iter()
                    .filter_map(|r| r[k].split_once('.').map(|(_, d)| d.len()))
                    .max()
                    .unwrap_or(0)
                    .min(4)
            })
            .collect();
        ensure!(!rows.is_empty(), "lending_club.csv has no rows");
        Ok(Source {
            card,
            header,
            rows,
            numeric,
            decimals,
        })
    }

    /// Writes random source rows, numbers scaled by a factor in [0.8, 1.2), to `csv` (and the same
    /// values to `parquet`) until the CSV holds at least `bytes`. Returns the data rows written.
    fn generate(&self, csv_path: &Path, parquet: Option<&Path>, bytes: u64, seed: u64) -> anyhow::Result<u64> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let out = File::create(csv_path).with_context(|| format!("creating {}", csv_path.display()))?;
        let mut csv_out = csv::Writer::from_writer(Counting {
            inner: BufWriter::with_capacity(1 << 20, out),
            bytes: 0,
        });
        csv_out.write_record(&self.header).context("writing the header")?;
        let mut pq = match parquet {
            Some(p) => {
                let f = File::create(p).with_context(|| format!("creating {}", p.display()))?;
                let schema = Arc::new(arrow_schema_of(&self.header, &self.numeric));
                let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
                Some(ArrowWriter::try_new(f, schema, Some(props)).context("starting the Parquet file")?)
            }
            None => None,
        };
        let mut rows = 0u64;
        let mut cells: Vec<String> = vec![String::new(); self.header.len()];
        let mut done = false;
        while !done {
            let mut numbers: Vec<Vec<Option<f64>>> =
                self.header.iter().map(|_| Vec::with_capacity(CHUNK_ROWS)).collect();
            let mut texts: Vec<Vec<Option<String>>> =
                self.header.iter().map(|_| Vec::with_capacity(CHUNK_ROWS)).collect();
            for _ in 0..CHUNK_ROWS {
                let src = &self.rows[rng.random_range(0..self.rows.len())];
                for (k, cell) in src.iter().enumerate() {
                    let missing = cell.is_empty() || cell == "NA";
                    if self.numeric[k] {
                        let v = if missing {
                            cells[k].clear();
                            None
                        } else {
                            let x: f64 = cell.parse().with_context(|| format!("`{cell}` in a numeric column"))?;
                            cells[k] = format!("{:.*}", self.decimals[k], x * rng.random_range(0.8..1.2));
                            // The Parquet value is what the CSV text reads back as.
                            Some(cells[k].parse::<f64>().context("a formatted number")?)
                        };
                        numbers[k].push(v);
                    } else {
                        cells[k].clone_from(cell);
                        texts[k].push((!missing).then(|| cell.clone()));
                    }
                }
                csv_out.write_record(&cells).context("writing a row")?;
                rows += 1;
                // Counts what the csv writer has passed on (it buffers a few kB).
                if csv_out.get_ref().bytes >= bytes {
                    done = true;
                    break;
                }
            }
            if let Some(w) = pq.as_mut() {
                let columns: Vec<(String, ArrayRef)> = self
                    .header
                    .iter()
                    .enumerate()
                    .map(|(k, h)| {
                        let a: ArrayRef = if self.numeric[k] {
                            Arc::new(Float64Array::from(std::mem::take(&mut numbers[k])))
                        } else {
                            Arc::new(StringArray::from(std::mem::take(&mut texts[k])))
                        };
                        (h.clone(), a)
                    })
                    .collect();
                let batch = RecordBatch::try_from_iter(columns).context("building a Parquet batch")?;
                w.write(&batch).context("writing Parquet")?;
            }
        }
        csv_out.flush().context("writing the CSV")?;
        if let Some(w) = pq {
            w.close().context("finishing the Parquet file")?;
        }
        Ok(rows)
    }
}

/// Counts the bytes written through it.
struct Counting<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn arrow_schema_of(header: &[String], numeric: &[bool]) -> Schema {
    Schema::new(
        header
            .iter()
            .zip(numeric)
            .map(|(h, &n)| Field::new(h, if n { DataType::Float64 } else { DataType::Utf8 }, true))
            .collect::<Vec<_>>(),
    )
}

/// Runs `fedistill data check --task CARD CSV` and samples its VmHWM until it exits.
fn check_peak_rss(exe: &Path, card: &Path, csv: &Path, dir: &Path) -> anyhow::Result<CheckMemory> {
    let log = dir.join("check.log");
    let stderr = File::create(&log).context("creating the check's log")?;
    let start = Instant::now();
    let mut child = Command::new(exe)
        .args(["data", "check", "--task"])
        .arg(card)
        .arg(csv)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("starting {} data check", exe.display()))?;
    let clk = clock_ticks_per_second();
    let mut peak_kib: Option<u64> = None;
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for data check")? {
            break status;
        }
        // The process may end between try_wait and the read: a failed read is not an error.
        if let Ok(s) = ProcSample::read(child.id(), clk) {
            peak_kib = Some(peak_kib.unwrap_or(0).max(s.hwm_kib));
        }
        std::thread::sleep(RSS_SAMPLE);
    };
    let seconds = start.elapsed().as_secs_f64();
    if !status.success() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        bail!("fedistill data check failed ({status}) on the generated CSV:\n{text}");
    }
    Ok(CheckMemory {
        file_bytes: file_size(csv)?,
        peak_rss_mb: peak_kib.map(|k| k as f64 * 1024.0 / 1e6),
        target_mb: CHECK_RSS_TARGET_MB,
        sampled_every_ms: RSS_SAMPLE.as_millis() as u64,
        seconds,
    })
}

/// The printed table and the memory line.
pub fn format_table(r: &LoadBench) -> String {
    let mut out = format!(
        "task `{}`: {} columns, {} inputs; {} rows: CSV {:.1} MB, Parquet (Snappy) {:.1} MB; {} build\n",
        r.task,
        r.columns,
        r.inputs,
        r.rows,
        r.csv_bytes as f64 / 1e6,
        r.parquet_bytes as f64 / 1e6,
        r.build
    );
    out.push_str(&format!(
        "{:<22} {:<8} {:>9} {:>10} {:>9} {:>9} {:>12} {:>12}\n",
        "method", "file", "MB", "rows", "seconds", "MB/s", "rows/s", "vs baseline"
    ));
    for m in &r.methods {
        out.push_str(&format!(
            "{:<22} {:<8} {:>9.1} {:>10} {:>9.3} {:>9.1} {:>12.0} {:>11.2}x\n",
            m.method.name(),
            m.file,
            m.bytes as f64 / 1e6,
            m.rows,
            m.seconds,
            m.mb_per_s,
            m.rows_per_s,
            m.vs_baseline
        ));
    }
    out.push_str(&format!(
        "parquet rows equal csv rows: {}\n",
        if r.parquet_matches_csv { "yes" } else { "NO" }
    ));
    out.push_str(&memory_line(&r.check_memory));
    out.push('\n');
    out
}

fn memory_line(m: &CheckMemory) -> String {
    let peak = m.peak_rss_mb.map_or_else(
        || "not measured (it ended before the first sample)".to_string(),
        |p| format!("{p:.1} MB"),
    );
    let verdict = match m.peak_rss_mb {
        Some(p) if p < m.target_mb => "within",
        Some(_) => "OVER",
        None => "?",
    };
    format!(
        "fedistill data check on {:.1} MB of CSV: peak RSS {peak} ({verdict} the {:.0} MB target; sampled every {} ms), {:.2} s",
        m.file_bytes as f64 / 1e6,
        m.target_mb,
        m.sampled_every_ms,
        m.seconds
    )
}

fn write_report(dir: &Path, r: &LoadBench) -> anyhow::Result<()> {
    let rows: Vec<Vec<String>> = r
        .methods
        .iter()
        .map(|m| {
            vec![
                m.method.name().to_string(),
                m.file.to_string(),
                format!("{:.1}", m.bytes as f64 / 1e6),
                m.rows.to_string(),
                format!("{:.3}", m.seconds),
                format!("{:.1}", m.mb_per_s),
                format!("{:.0}", m.rows_per_s),
                format!("{:.2}", m.vs_baseline),
            ]
        })
        .collect();
    let md =
        format!(
        "Command: `{}` ({} build). Task `{}` ({} columns, {} inputs), {} rows; every method in the same run on the \
         same rows.\n\n{}\n{}.\n\n![Rows per second of each loading method](load-throughput.png)\n",
        r.command,
        r.build,
        r.task,
        r.columns,
        r.inputs,
        r.rows,
        crate::report::markdown_table(
            &["method", "file", "MB", "rows", "seconds", "MB/s", "rows/s", "× baseline"],
            &rows
        ),
        memory_line(&r.check_memory)
    );
    crate::report::write_report(dir, "load", r, &md)?;
    let categories: Vec<String> = r.methods.iter().map(|m| m.method.name().to_string()).collect();
    let groups = [("rows/s".to_string(), r.methods.iter().map(|m| m.rows_per_s).collect())];
    let title = format!(
        "Own-file loading, {:.0} MB CSV / {:.1} MB Parquet ({} build)",
        r.csv_bytes as f64 / 1e6,
        r.parquet_bytes as f64 / 1e6,
        r.build
    );
    crate::report::write_bar_chart(
        dir,
        "load-throughput",
        &crate::report::BarChart {
            title: &title,
            y_label: "rows/s",
            categories: &categories,
            groups: &groups,
        },
    )
    .context("plotting the loading throughput")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_rows_pass_the_card_and_parquet_matches_csv() {
        let dir = tempfile::tempdir().expect("temp dir");
        let source = Source::lending_club(dir.path()).expect("embedded source");
        let (csv, pq) = (dir.path().join("g.csv"), dir.path().join("g.parquet"));
        // More than one batch of rows (about 130 bytes each), and stopping near the target size.
        let target = 3_000_000;
        let rows = source.generate(&csv, Some(&pq), target, 7).expect("generates");
        assert!(rows > CHUNK_ROWS as u64, "{rows} rows");
        let size = file_size(&csv).expect("size");
        assert!((target..target + 100_000).contains(&size), "{size} bytes");
        let opts = CsvOptions::default();
        let (a, _) = data::read_private_csv(&csv, &source.card, &opts).expect("the CSV fits the card");
        let (b, _) = data::read_private_parquet(&pq, &source.card, &opts).expect("the Parquet fits the card");
        assert_eq!(a.n as u64, rows);
        assert_eq!(a, b);
        assert_eq!(baseline(&csv).expect("baseline"), rows);
        // Deterministic for a seed.
        let again = dir.path().join("h.csv");
        source.generate(&again, None, target, 7).expect("generates");
        assert_eq!(std::fs::read(&csv).expect("read"), std::fs::read(&again).expect("read"));
    }

    #[test]
    fn the_table_names_every_method_and_the_target() {
        let m = |method, rows_per_s| MethodRow {
            method,
            file: "csv",
            bytes: 2_000_000,
            rows: 100,
            seconds: 0.5,
            mb_per_s: 4.0,
            rows_per_s,
            vs_baseline: rows_per_s / 200.0,
        };
        let r = LoadBench {
            command: "fedistill bench load".into(),
            build: "debug",
            task: "lending_club".into(),
            columns: 23,
            inputs: 120,
            rows: 100,
            csv_bytes: 2_000_000,
            parquet_bytes: 500_000,
            parquet_matches_csv: true,
            methods: vec![m(LoadMethod::CsvBaseline, 200.0), m(LoadMethod::ReadPrivateCsv, 100.0)],
            check_memory: CheckMemory {
                file_bytes: 2_000_000,
                peak_rss_mb: Some(12.5),
                target_mb: CHECK_RSS_TARGET_MB,
                sampled_every_ms: 5,
                seconds: 0.2,
            },
        };
        let t = format_table(&r);
        assert!(t.contains("csv-baseline"), "{t}");
        assert!(t.contains("read-private-csv"), "{t}");
        assert!(t.contains("0.50x"), "{t}");
        assert!(t.contains("peak RSS 12.5 MB (within the 300 MB target"), "{t}");
        let json = serde_json::to_value(&r).expect("serializes");
        assert_eq!(json["methods"][0]["method"], "csv-baseline");
    }
}
