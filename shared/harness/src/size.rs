// Over 800 lines: 750 lines of code and its unit tests; the sizing suite's grid, measurement, choice and report read best in one file.
//! `fedistill size`, device-aware sizing: distills candidate MLP students (several widths and depths) from one
//! teacher on the split `fedistill local` uses, quantizes each in every profile, measures all of them on this
//! machine (batch-1 latency, interleaved; inference memory), picks the most accurate one within a latency and
//! memory budget, measures it again from its exported file, and writes its student config and the report.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use serde::Serialize;

use fedistill_shared::data::{load, Dataset, LoadOptions};
use fedistill_shared::ml::local::{default_distill, default_train, distill_local, prepare_local, LocalOptions};
use fedistill_shared::ml::metrics::accuracy;
use fedistill_shared::ml::model::argmax;
use fedistill_shared::ml::quant::export::{export_bytes, file_extension};
use fedistill_shared::ml::quant::table::{evaluate_quantized, time_interleaved, LogitsFn};
use fedistill_shared::ml::quant::{load_student, quantize, Arch, PtqOptions, QuantizedModel};
use fedistill_shared::ml::sizing::{
    architectures, choose, inference_memory, kb, none_fits_message, student_toml, Budget, Candidate, Choice, KB,
    PROFILES,
};
use fedistill_shared::ml::{Model, ModelConfig, Progress};

use crate::report::{markdown_table, write_chart, write_report, Chart, Series};

/// Largest `--latency-us` accepted (10 s for one sample is no inference budget).
pub const MAX_LATENCY_US: f64 = 1e7;
/// Largest `--memory-kb` accepted (16 GiB).
pub const MAX_MEMORY_KB: f64 = 16.0 * 1024.0 * 1024.0;
/// Largest `--threads` accepted.
pub const MAX_THREADS: usize = 1024;
/// Candidates named in the error when none fits.
pub const CLOSEST_SHOWN: usize = 3;
/// Teacher and distillation epochs of `--quick` (fewer when the dataset kind's defaults are fewer).
pub const QUICK_EPOCHS: usize = 15;
/// Calibration rows of the quantized profiles (the public part, as `fedistill local`'s table).
const CALIBRATION_ROWS: usize = 512;

/// What the `--memory-kb` budget bounds, as the report states it.
pub const MEMORY_DEFINITION: &str = "stored weights and biases in the profile's format (padded to 32 inputs, \
     QuantizedModel::weight_bytes) + the activations one batch-1 forward needs (a layer's input and output as two \
     f32 vectors as wide as the widest layer, the int8 input of the widest Q8_0 layer with its scales, the \
     logits); 1 KB = 1024 bytes";

/// Options of `fedistill size` (the flags, unvalidated).
#[derive(Debug, Clone, clap::Args)]
pub struct SizeOptions {
    /// Batch-1 p50 inference latency budget, microseconds (> 0).
    #[arg(long, value_name = "US", allow_negative_numbers = true)]
    pub latency_us: f64,
    /// Inference memory budget in KB (1024 bytes): stored weights + peak activations of a batch-1 forward.
    #[arg(long, value_name = "KB", allow_negative_numbers = true)]
    pub memory_kb: f64,
    /// Compute threads of the measurement (and of the whole run).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Catalog dataset name.
    #[arg(long, default_value = "mnist-10k")]
    pub dataset: String,
    /// Directory with the dataset files instead of the embedded copies.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Seed of the split, inits and batch orders (as `fedistill local --seed`).
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Write the chosen student config TOML here (loadable by `fedistill local --student`).
    #[arg(long, value_name = "FILE.toml")]
    pub out: Option<PathBuf>,
    /// Write size.json, size.md and the accuracy-vs-latency and accuracy-vs-memory plots to this directory.
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
    /// Fewer candidates and epochs (tests, CI).
    #[arg(long)]
    pub quick: bool,
}

impl SizeOptions {
    /// Checks the flags that need no file system or data: the budget and the thread count.
    pub fn validate(&self) -> anyhow::Result<Budget> {
        let check = |flag: &str, v: f64, max: f64| -> anyhow::Result<()> {
            if !v.is_finite() {
                bail!("{flag} must be a finite number, got {v}");
            }
            if v <= 0.0 {
                bail!("{flag} must be > 0, got {v}");
            }
            if v > max {
                bail!("{flag} {v} is absurd: at most {max}");
            }
            Ok(())
        };
        check("--latency-us", self.latency_us, MAX_LATENCY_US)?;
        check("--memory-kb", self.memory_kb, MAX_MEMORY_KB)?;
        if self.threads == 0 {
            bail!("--threads must be at least 1, got 0");
        }
        if self.threads > MAX_THREADS {
            bail!("--threads {} is absurd: at most {MAX_THREADS}", self.threads);
        }
        Ok(Budget {
            latency_us: self.latency_us,
            memory_bytes: self.memory_kb * KB,
        })
    }
}

/// The budget as the report states it.
#[derive(Debug, Clone, Serialize)]
pub struct BudgetReport {
    /// `--latency-us`.
    pub latency_us: f64,
    /// `--memory-kb`.
    pub memory_kb: f64,
    /// `--memory-kb` in bytes.
    pub memory_bytes: f64,
}

/// One candidate row of the report: the measured figures and whether they fit.
#[derive(Debug, Clone, Serialize)]
pub struct CandidateRow {
    /// The measured candidate.
    #[serde(flatten)]
    pub candidate: Candidate,
    /// `memory_bytes / 1024`.
    pub memory_kb: f64,
    /// p50 latency within `--latency-us`.
    pub meets_latency: bool,
    /// Memory within `--memory-kb`.
    pub meets_memory: bool,
    /// Both.
    pub meets_budget: bool,
}

/// The chosen candidate measured again, from its exported file read back.
#[derive(Debug, Clone, Serialize)]
pub struct Remeasured {
    /// Batch-1 median latency, microseconds.
    pub latency_p50_us: f64,
    /// Batch-1 99th-percentile latency, microseconds.
    pub latency_p99_us: f64,
    /// Stored weights and biases, bytes.
    pub weight_bytes: usize,
    /// Peak activation buffers of a batch-1 forward, bytes.
    pub activation_bytes: usize,
    /// Their sum, bytes.
    pub memory_bytes: usize,
    /// `memory_bytes / 1024`.
    pub memory_kb: f64,
    /// Accuracy of the read-back file on the held-out half of the test rows (the candidate's
    /// `test_accuracy`, if the file holds the same model).
    pub accuracy: f64,
    /// Bytes of the exported file.
    pub file_bytes: usize,
}

/// The teacher every candidate is distilled from.
#[derive(Debug, Clone, Serialize)]
pub struct TeacherSummary {
    /// Architecture (the dataset kind's default teacher of `fedistill local`).
    pub config: ModelConfig,
    /// Training epochs (at most; early stopping may end sooner).
    pub epochs: usize,
    /// Test accuracy.
    pub accuracy: f64,
}

/// `size.json`.
#[derive(Debug, Clone, Serialize)]
pub struct SizeReport {
    /// Dataset name.
    pub dataset: String,
    /// Seed of the split, inits and batch orders.
    pub seed: u64,
    /// `--quick`.
    pub quick: bool,
    /// Compute threads the run used (`--threads`).
    pub threads: usize,
    /// Whether the binary was built with optimizations (debug figures are not the device's).
    pub release_build: bool,
    /// The budget.
    pub budget: BudgetReport,
    /// What the memory figures count.
    pub memory_definition: String,
    /// Rows the teacher was trained on.
    pub private_samples: usize,
    /// Public rows the students were distilled on.
    pub public_samples: usize,
    /// Transfer rows including the shifted copies of images.
    pub transfer_samples: usize,
    /// Test rows every accuracy is measured on.
    pub test_samples: usize,
    /// The teacher.
    pub teacher: TeacherSummary,
    /// Distillation epochs of every candidate.
    pub distill_epochs: usize,
    /// Every candidate, in grid order (architectures, then profiles f32, f16, sandwich, int8).
    pub candidates: Vec<CandidateRow>,
    /// Name of the chosen candidate (`null` when none fits).
    pub chosen: Option<String>,
    /// The closest candidates when none fits, closest first (empty otherwise).
    pub closest: Vec<String>,
    /// The chosen candidate measured again from its exported file (`null` when none fits).
    pub remeasured: Option<Remeasured>,
    /// The chosen candidate's remeasured latency and memory are both within the budget.
    pub meets_budget: bool,
    /// The written student config (`null` when none fits).
    pub config_toml: Option<String>,
    /// Where it was written (`null` without `--out`).
    pub out: Option<String>,
    /// Wall-clock seconds of the run.
    pub seconds: f64,
}

/// One architecture in one profile, kept for the timing, the export and the remeasurement.
struct Measured {
    student_index: usize,
    q: QuantizedModel,
    candidate: Candidate,
}

/// Runs `fedistill size`: validates, measures, chooses, prints the table, writes the config and the report.
/// An error when no candidate fits or when the chosen one misses the budget on its second measurement (after
/// the report is written).
pub fn run(args: &SizeOptions) -> anyhow::Result<()> {
    let start = Instant::now();
    let budget = args.validate()?;
    if let Some(out) = &args.out {
        check_writable(out)?;
    }
    if let Some(dir) = &args.report {
        if dir.exists() && !dir.is_dir() {
            bail!("--report {} is not a directory", dir.display());
        }
        std::fs::create_dir_all(dir)
            .with_context(|| format!("--report {}: cannot create the directory", dir.display()))?;
    }
    if cfg!(debug_assertions) {
        eprintln!("warning: debug build; latency figures are only meaningful with --release");
    }
    #[allow(clippy::needless_update)]
    let lo = LoadOptions {
        data_dir: args.data_dir.clone(),
        ..LoadOptions::default()
    };
    let ds = load(&args.dataset, &lo).with_context(|| format!("--dataset {}: loading", args.dataset))?;
    let progress = Progress::auto();
    // `fedistill local`'s pipeline (its split, defaults and seeds): one teacher, then each architecture
    // distilled from it exactly as `fedistill local --student` would.
    let mut lo = LocalOptions::defaults_for(&ds, args.seed);
    let mut train_cfg = default_train(&ds.kind, args.seed);
    let mut distill_cfg = default_distill(&ds.kind, args.seed);
    if args.quick {
        train_cfg.epochs = train_cfg.epochs.min(QUICK_EPOCHS);
        distill_cfg.epochs_per_round = distill_cfg.epochs_per_round.min(QUICK_EPOCHS);
    }
    lo.teacher.train = Some(train_cfg.clone());
    lo.student.distill = Some(distill_cfg.clone());
    let prepared = prepare_local(&ds, &lo, &progress).context("training the teacher")?;
    let (private_samples, public, test) = (
        prepared.split.shards.first().map_or(0, |s| s.n),
        &prepared.split.public,
        &prepared.split.test,
    );
    // The choice ranks candidates on one seeded half of the test rows and reports them on the other, so the
    // chosen candidate's reported accuracy is not the maximum it was picked for.
    let (validation, held_out) = halves(test, args.seed);
    let n_calib = public.n.min(CALIBRATION_ROWS);
    let calib = &public.features[..n_calib * public.dim];

    let archs = architectures(args.quick);
    let mut teacher_accuracy = f64::NAN;
    let mut students = Vec::with_capacity(archs.len());
    let mut measured = Vec::with_capacity(archs.len() * PROFILES.len());
    for (i, hidden) in archs.iter().enumerate() {
        progress.println(&format!("candidate {}/{}: mlp {hidden:?}", i + 1, archs.len()));
        lo.student.model = ModelConfig::Mlp { hidden: hidden.clone() };
        let (local, student) =
            distill_local(&ds, &prepared, &lo, &progress).with_context(|| format!("distilling mlp {hidden:?}"))?;
        teacher_accuracy = local.teacher.metrics.accuracy;
        let accuracy_f32 = local.student.metrics.accuracy;
        for profile in PROFILES {
            let (q, _) = quantize(&student, profile, calib, n_calib, &PtqOptions::default())
                .with_context(|| format!("quantizing mlp {hidden:?} to {profile}"))?;
            let (weight_bytes, activation_bytes) = inference_memory(&q);
            let file_bytes = export_bytes(&q, Some(&student))?.len();
            let candidate = Candidate {
                name: Candidate::name_of(hidden, profile),
                hidden: hidden.clone(),
                profile,
                params: student.params(),
                accuracy: quantized_accuracy(&q, &validation)?,
                test_accuracy: quantized_accuracy(&q, &held_out)?,
                accuracy_f32,
                latency_p50_us: f64::NAN,
                latency_p99_us: f64::NAN,
                throughput: f64::NAN,
                weight_bytes,
                activation_bytes,
                memory_bytes: weight_bytes + activation_bytes,
                file_bytes,
            };
            measured.push(Measured {
                student_index: i,
                q,
                candidate,
            });
        }
        students.push(student);
    }

    // Every candidate timed in one interleaved pass (table.rs), so load from other processes hits all alike.
    progress.println(&format!(
        "timing {} candidates (batch-1 p50, interleaved, {} thread(s))",
        measured.len(),
        args.threads
    ));
    let closures: Vec<_> = measured
        .iter()
        .map(|m| move |x: &[f32], n: usize| m.q.logits(x, n))
        .collect();
    let fns: Vec<LogitsFn<'_>> = closures.iter().map(|f| f as LogitsFn<'_>).collect();
    let timings = time_interleaved(&fns, &test.features, test.n, test.dim).context("timing the candidates")?;
    drop(fns);
    drop(closures);
    for (m, (p50, p99, tp)) in measured.iter_mut().zip(timings) {
        m.candidate.latency_p50_us = p50;
        m.candidate.latency_p99_us = p99;
        m.candidate.throughput = tp;
    }
    let candidates: Vec<Candidate> = measured.iter().map(|m| m.candidate.clone()).collect();
    let choice = choose(&candidates, &budget, CLOSEST_SHOWN);
    let chosen_index = match &choice {
        Choice::Chosen(i) => Some(*i),
        Choice::NoneFits { .. } => None,
    };
    print_table(&candidates, &budget, chosen_index);

    let mut report = SizeReport {
        dataset: ds.name.clone(),
        seed: args.seed,
        quick: args.quick,
        threads: args.threads,
        release_build: !cfg!(debug_assertions),
        budget: BudgetReport {
            latency_us: budget.latency_us,
            memory_kb: args.memory_kb,
            memory_bytes: budget.memory_bytes,
        },
        memory_definition: MEMORY_DEFINITION.into(),
        private_samples,
        public_samples: public.n,
        transfer_samples: prepared.transfer_n,
        test_samples: test.n,
        teacher: TeacherSummary {
            config: lo.teacher.model.clone(),
            epochs: train_cfg.epochs,
            accuracy: teacher_accuracy,
        },
        distill_epochs: distill_cfg.epochs_per_round,
        candidates: candidates
            .iter()
            .map(|c| CandidateRow {
                candidate: c.clone(),
                memory_kb: c.memory_bytes as f64 / KB,
                meets_latency: c.meets_latency(&budget),
                meets_memory: c.meets_memory(&budget),
                meets_budget: c.meets(&budget),
            })
            .collect(),
        chosen: None,
        closest: Vec::new(),
        remeasured: None,
        meets_budget: false,
        config_toml: None,
        out: None,
        seconds: 0.0,
    };

    let i = match choice {
        Choice::Chosen(i) => i,
        Choice::NoneFits { closest } => {
            report.closest = closest.iter().map(|&i| candidates[i].name.clone()).collect();
            report.seconds = start.elapsed().as_secs_f64();
            if let Some(dir) = &args.report {
                write_size_report(dir, &report, args)?;
            }
            bail!("{}", none_fits_message(&candidates, &closest, &budget));
        }
    };
    let m = &measured[i];
    let chosen = &m.candidate;
    let remeasured =
        remeasure(&m.q, &students[m.student_index], &held_out).context("remeasuring the chosen candidate")?;
    let meets_latency = remeasured.latency_p50_us <= budget.latency_us;
    let meets_memory = remeasured.memory_bytes as f64 <= budget.memory_bytes;
    let comment = config_comment(args, chosen, &remeasured, &ds.name);
    let toml = student_toml(
        &ModelConfig::Mlp {
            hidden: chosen.hidden.clone(),
        },
        &comment,
    )?;
    println!();
    println!(
        "chosen: {} (validation accuracy {:.4}, held-out test {:.4}); remeasured from its {} file: p50 {:.1} us, \
         memory {:.1} KB -> {}",
        chosen.name,
        chosen.accuracy,
        chosen.test_accuracy,
        file_extension(chosen.profile),
        remeasured.latency_p50_us,
        remeasured.memory_kb,
        if meets_latency && meets_memory {
            "meets the budget"
        } else {
            "OVER the budget"
        }
    );
    println!();
    print!("{toml}");
    if let Some(out) = &args.out {
        std::fs::write(out, &toml).with_context(|| format!("writing --out {}", out.display()))?;
        eprintln!("student config written to {}", out.display());
    }
    report.chosen = Some(chosen.name.clone());
    report.meets_budget = meets_latency && meets_memory;
    report.config_toml = Some(toml);
    report.out = args.out.as_ref().map(|p| p.display().to_string());
    report.seconds = start.elapsed().as_secs_f64();
    let first_p50 = chosen.latency_p50_us;
    let remeasured_p50 = remeasured.latency_p50_us;
    report.remeasured = Some(remeasured);
    if let Some(dir) = &args.report {
        write_size_report(dir, &report, args)?;
    }
    if !meets_latency {
        bail!(
            "the chosen {} measured {remeasured_p50:.1} us on its second measurement, over --latency-us {} (first \
             {first_p50:.1} us): too close to the budget to be sure on this machine now; the config and report \
             were written and say meets_budget = false",
            chosen.name,
            budget.latency_us
        );
    }
    if !meets_memory {
        bail!(
            "the chosen {} read back from its file is over --memory-kb {}",
            chosen.name,
            args.memory_kb
        );
    }
    Ok(())
}

/// Fails unless `path` can be written as a file (without leaving a new empty file behind).
pub(crate) fn check_writable(path: &Path) -> anyhow::Result<()> {
    if path.is_dir() {
        bail!("--out {} is a directory, expected a file path", path.display());
    }
    let existed = path.exists();
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .with_context(|| format!("--out {} is not writable", path.display()))?;
    if !existed {
        // Written for real only once a candidate is chosen.
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

fn predictions(logits: &[f32], classes: usize) -> Vec<u32> {
    logits.chunks_exact(classes).map(|r| argmax(r) as u32).collect()
}

/// Accuracy through the row kernel: the kernel batch-1 inference runs, so accuracy and latency match.
fn quantized_accuracy(q: &QuantizedModel, test: &Dataset) -> anyhow::Result<f64> {
    let logits = q.logits_rows(&test.features, test.n)?;
    Ok(accuracy(&test.labels, &predictions(&logits, q.classes())))
}

/// The split's test rows in two seeded halves: (validation, held out).
fn halves(test: &Dataset, seed: u64) -> (Dataset, Dataset) {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let mut idx: Vec<usize> = (0..test.n).collect();
    idx.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5A1D_4A7E));
    let (v, t) = idx.split_at(test.n / 2);
    (test.subset(v), test.subset(t))
}

/// Exports the chosen candidate, reads the file back as a deployment would, and measures it afresh.
fn remeasure(q: &QuantizedModel, student: &Model, test: &Dataset) -> anyhow::Result<Remeasured> {
    let bytes = export_bytes(q, Some(student))?;
    let dir = tempfile::tempdir().context("a temporary directory for the exported student")?;
    let path = dir.path().join(format!("chosen.{}", file_extension(q.profile())));
    std::fs::write(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
    let arch: &Arch = q.arch();
    let back = load_student(&path, arch).context("reading the exported student back")?;
    let metrics = evaluate_quantized(&back, test, None)?;
    let (weight_bytes, activation_bytes) = inference_memory(&back);
    let memory_bytes = weight_bytes + activation_bytes;
    Ok(Remeasured {
        latency_p50_us: metrics.latency_p50_us,
        latency_p99_us: metrics.latency_p99_us,
        weight_bytes,
        activation_bytes,
        memory_bytes,
        memory_kb: memory_bytes as f64 / KB,
        accuracy: metrics.accuracy,
        file_bytes: bytes.len(),
    })
}

/// `mlp [512, 256]` (or the config's JSON for another kind).
fn describe_model(cfg: &ModelConfig) -> String {
    match cfg {
        ModelConfig::Mlp { hidden } => {
            let widths: Vec<String> = hidden.iter().map(usize::to_string).collect();
            format!("mlp [{}]", widths.join(", "))
        }
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

fn config_comment(args: &SizeOptions, c: &Candidate, r: &Remeasured, dataset: &str) -> String {
    format!(
        "Student config chosen by `fedistill size --latency-us {} --memory-kb {} --threads {} --dataset {dataset} \
         --seed {}{}`.\n\
         Chosen: {} -- validation accuracy {:.4}, held-out test accuracy {:.4} ({:.4} in f32 on all test rows);\n\
         batch-1 p50 {:.1} us (remeasured {:.1} us);\n\
         memory {:.1} KB = weights {:.1} KB + activations {:.1} KB (remeasured {:.1} KB), on the machine it ran on.\n\
         Quantization profile: {}. A student file has no key for it (unknown keys are refused):\n\
         export the trained student in that profile with `fedistill quantize --profile {}`; a participant\n\
         quantizes its student to int8 itself. In a participant's node.toml use the [model] table as [student].\n\
         No other table: `fedistill local`'s defaults for the dataset kind apply{}.",
        args.latency_us,
        args.memory_kb,
        args.threads,
        args.seed,
        if args.quick { " --quick" } else { "" },
        c.name,
        c.accuracy,
        c.test_accuracy,
        c.accuracy_f32,
        c.latency_p50_us,
        r.latency_p50_us,
        kb(c.memory_bytes),
        kb(c.weight_bytes),
        kb(c.activation_bytes),
        r.memory_kb,
        c.profile.name(),
        c.profile.name(),
        if args.quick {
            " (size --quick distilled with fewer epochs)"
        } else {
            ""
        },
    )
}

fn table_rows(candidates: &[Candidate], b: &Budget, chosen: Option<usize>) -> Vec<Vec<String>> {
    candidates
        .iter()
        .enumerate()
        .map(|(i, c)| {
            vec![
                format!("{}{}", c.name, if chosen == Some(i) { " *" } else { "" }),
                c.params.to_string(),
                format!("{:.4}", c.accuracy),
                format!("{:.4}", c.test_accuracy),
                format!("{:.4}", c.accuracy_f32),
                format!("{:.1}", c.latency_p50_us),
                format!("{:.1}", c.latency_p99_us),
                format!("{:.1}", kb(c.weight_bytes)),
                format!("{:.1}", kb(c.activation_bytes)),
                format!("{:.1}", kb(c.memory_bytes)),
                c.fits(b).to_string(),
            ]
        })
        .collect()
}

const HEADERS: [&str; 11] = [
    "candidate",
    "params",
    "val_acc",
    "test_acc",
    "acc_f32",
    "p50_us",
    "p99_us",
    "weights_KB",
    "act_KB",
    "memory_KB",
    "fits",
];

fn print_table(candidates: &[Candidate], b: &Budget, chosen: Option<usize>) {
    println!(
        "budget: batch-1 p50 <= {} us, memory <= {:.1} KB; * = chosen",
        b.latency_us,
        b.memory_bytes / KB
    );
    println!(
        "{:<22} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>10} {:>8} {:>9}  {}",
        HEADERS[0],
        HEADERS[1],
        HEADERS[2],
        HEADERS[3],
        HEADERS[4],
        HEADERS[5],
        HEADERS[6],
        HEADERS[7],
        HEADERS[8],
        HEADERS[9],
        HEADERS[10]
    );
    for r in table_rows(candidates, b, chosen) {
        println!(
            "{:<22} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>10} {:>8} {:>9}  {}",
            r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10]
        );
    }
}

/// size.json, size.md and the two plots (accuracy against latency and against memory, budget marked).
fn write_size_report(dir: &Path, r: &SizeReport, args: &SizeOptions) -> anyhow::Result<()> {
    let candidates: Vec<Candidate> = r.candidates.iter().map(|c| c.candidate.clone()).collect();
    let budget = Budget {
        latency_us: r.budget.latency_us,
        memory_bytes: r.budget.memory_bytes,
    };
    let chosen = r
        .chosen
        .as_ref()
        .and_then(|n| candidates.iter().position(|c| &c.name == n));
    let command = format!(
        "fedistill size --latency-us {} --memory-kb {} --threads {} --dataset {} --seed {}{}",
        args.latency_us,
        args.memory_kb,
        args.threads,
        r.dataset,
        r.seed,
        if r.quick { " --quick" } else { "" }
    );
    let mut md = format!(
        "Command: `{command}` ({} build). Teacher {} ({} epochs, test accuracy {:.4}) trained on {} private rows; \
         every candidate distilled {} epochs on {} transfer rows ({} public), ranked on one seeded half of the {} \
         test rows (`val_acc`) and reported on the other (`test_acc`; `acc_f32`: the f32 student on all of them).\n\n\
         Latency: batch-1 median through the kernel batch-1 inference runs (`Kernel::Auto`), every candidate \
         timed in one interleaved pass. Memory: {}.\n\n{}\n",
        if r.release_build { "release" } else { "debug" },
        describe_model(&r.teacher.config),
        r.teacher.epochs,
        r.teacher.accuracy,
        r.private_samples,
        r.distill_epochs,
        r.transfer_samples,
        r.public_samples,
        r.test_samples,
        r.memory_definition,
        markdown_table(&HEADERS, &table_rows(&candidates, &budget, chosen)),
    );
    match (&r.chosen, &r.remeasured) {
        (Some(name), Some(re)) => md.push_str(&format!(
            "\nChosen: **{name}**. Remeasured from its exported file ({} bytes): p50 {:.1} us, p99 {:.1} us, memory \
             {:.1} KB, accuracy {:.4}; meets the budget: **{}**.\n",
            re.file_bytes, re.latency_p50_us, re.latency_p99_us, re.memory_kb, re.accuracy, r.meets_budget
        )),
        _ => md.push_str(&format!(
            "\nNo candidate meets the budget; the closest: {}.\n",
            r.closest.join(", ")
        )),
    }
    md.push_str(
        "\n![Accuracy against batch-1 latency, budget marked](size-latency.png)\n\n\
         ![Accuracy against inference memory, budget marked](size-memory.png)\n",
    );
    write_report(dir, "size", r, &md)?;
    plot(dir, &candidates, &budget, chosen, true).context("plotting accuracy against latency")?;
    plot(dir, &candidates, &budget, chosen, false).context("plotting accuracy against memory")?;
    eprintln!("report written to {}", dir.display());
    Ok(())
}

/// Accuracy (%) against latency (µs) or memory (KB), one line per profile (in order of x), the budget as a
/// vertical line and the chosen candidate as its own point.
fn plot(dir: &Path, cands: &[Candidate], b: &Budget, chosen: Option<usize>, latency: bool) -> anyhow::Result<()> {
    let x_of = |c: &Candidate| {
        if latency {
            c.latency_p50_us
        } else {
            kb(c.memory_bytes)
        }
    };
    let point = |c: &Candidate| (x_of(c), 100.0 * c.accuracy);
    let ok = |p: &(f64, f64)| p.0.is_finite() && p.0 > 0.0 && p.1.is_finite();
    let mut series: Vec<Series> = Vec::new();
    for profile in PROFILES {
        let mut points: Vec<(f64, f64)> = cands
            .iter()
            .filter(|c| c.profile == profile)
            .map(point)
            .filter(ok)
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        if !points.is_empty() {
            series.push(Series {
                name: profile.name().into(),
                points,
            });
        }
    }
    let ys: Vec<f64> = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).collect();
    let (lo, hi) = ys
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &y| (l.min(y), h.max(y)));
    let limit = if latency { b.latency_us } else { b.memory_bytes / KB };
    if lo.is_finite() {
        series.push(Series {
            name: format!("budget {limit} {}", if latency { "us" } else { "KB" }),
            points: vec![(limit, lo), (limit, hi)],
        });
    }
    if let Some(c) = chosen.and_then(|i| cands.get(i)) {
        let p = point(c);
        if ok(&p) {
            series.push(Series {
                name: format!("chosen: {}", c.name),
                points: vec![p],
            });
        }
    }
    if series.is_empty() {
        return Ok(());
    }
    let title = if latency {
        "Candidate students: accuracy against batch-1 p50 latency"
    } else {
        "Candidate students: accuracy against inference memory"
    };
    let x_label = if latency {
        "batch-1 p50 latency (us, log scale)"
    } else {
        "inference memory (KB, log scale)"
    };
    write_chart(
        dir,
        if latency { "size-latency" } else { "size-memory" },
        &Chart {
            title,
            x_label,
            y_label: "validation accuracy (%)",
            series: &series,
            log_x: true,
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(latency_us: f64, memory_kb: f64, threads: usize) -> SizeOptions {
        SizeOptions {
            latency_us,
            memory_kb,
            threads,
            dataset: "digits".into(),
            data_dir: None,
            seed: 1,
            out: None,
            report: None,
            quick: true,
        }
    }

    #[test]
    fn bad_budgets_and_threads_are_named_errors() {
        let cases = [
            (opts(0.0, 10.0, 1), "--latency-us must be > 0, got 0"),
            (opts(-5.0, 10.0, 1), "--latency-us must be > 0, got -5"),
            (opts(f64::NAN, 10.0, 1), "--latency-us must be a finite number, got NaN"),
            (opts(f64::INFINITY, 10.0, 1), "--latency-us must be a finite number"),
            (opts(1e8, 10.0, 1), "--latency-us 100000000 is absurd"),
            (opts(10.0, 0.0, 1), "--memory-kb must be > 0"),
            (opts(10.0, -1.0, 1), "--memory-kb must be > 0, got -1"),
            (opts(10.0, f64::NAN, 1), "--memory-kb must be a finite number"),
            (opts(10.0, 1e12, 1), "--memory-kb 1000000000000 is absurd"),
            (opts(10.0, 10.0, 0), "--threads must be at least 1, got 0"),
            (opts(10.0, 10.0, 100_000), "--threads 100000 is absurd"),
        ];
        for (o, want) in cases {
            let e = format!("{:#}", o.validate().expect_err(want));
            assert!(e.contains(want), "{e} lacks {want}");
        }
        let b = opts(10.0, 2.0, 4).validate().expect("valid");
        assert_eq!(b.latency_us, 10.0);
        assert_eq!(b.memory_bytes, 2048.0);
    }

    #[test]
    fn out_must_be_a_writable_file_and_is_not_left_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = format!("{:#}", check_writable(dir.path()).expect_err("a directory"));
        assert!(e.contains("is a directory"), "{e}");
        let missing = dir.path().join("no").join("such").join("x.toml");
        let e = format!("{:#}", check_writable(&missing).expect_err("no parent"));
        assert!(e.contains("--out") && e.contains("not writable"), "{e}");
        let fresh = dir.path().join("s.toml");
        check_writable(&fresh).expect("writable");
        assert!(!fresh.exists(), "the probe must not leave an empty file");
        std::fs::write(&fresh, "keep").expect("write");
        check_writable(&fresh).expect("existing file");
        assert_eq!(std::fs::read_to_string(&fresh).expect("read"), "keep");
    }
}
