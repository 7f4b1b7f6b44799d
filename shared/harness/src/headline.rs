//! The student against its teacher in the terms people quote (issue 18): `fedistill local --report`'s
//! `headline` object — accuracy kept, batch-1 speed-up (f32 and int8), weight memory saved, int8 size
//! against the f32 teacher, and each model's peak resident memory in inference, measured in a process of
//! its own (`fedistill probe-inference`, hidden) so that one model's pages never count for another.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use fedistill_shared::data::Dataset;
use fedistill_shared::ml::quant::table::{time_interleaved, LogitsFn, QuantRow};
use fedistill_shared::ml::quant::{load_student, quantize, Arch, Profile, PtqOptions, QuantizedModel};
use fedistill_shared::ml::{Model, ModelConfig};
use serde::{Deserialize, Serialize};

/// Batch-1 inferences each memory probe runs before it reads its peak RSS.
pub const PROBE_PASSES: usize = 2_000;

/// The student against the teacher, every figure measured in the same run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Headline {
    /// f32 student accuracy / teacher accuracy (test set).
    pub accuracy_ratio: f64,
    /// int8 student accuracy / teacher accuracy.
    pub int8_accuracy_ratio: f64,
    /// f32 student accuracy minus int8 student accuracy, percentage points.
    pub int8_points_lost: f64,
    /// Teacher batch-1 p50 latency / f32 student batch-1 p50 latency.
    pub speedup_f32_batch1: f64,
    /// Teacher batch-1 p50 latency / int8 student batch-1 p50 latency.
    pub speedup_int8_batch1: f64,
    /// `1 - f32 student weight bytes / f32 teacher weight bytes`.
    pub memory_reduction: f64,
    /// f32 teacher weight bytes / int8 student file bytes (GGUF).
    pub int8_size_ratio_vs_teacher: f64,
    /// Teacher batch-1 p50 latency, ms (the faster of its two f32 kernels).
    pub teacher_latency_ms: f64,
    /// f32 student batch-1 p50 latency, ms (the faster of its two f32 kernels).
    pub student_f32_latency_ms: f64,
    /// int8 student batch-1 p50 latency, ms (the kernel `Kernel::Auto` picks at batch 1).
    pub student_int8_latency_ms: f64,
    /// f32 teacher weight bytes (safetensors checkpoint).
    pub teacher_bytes: usize,
    /// f32 student weight bytes (safetensors checkpoint).
    pub student_f32_bytes: usize,
    /// int8 student file bytes (GGUF).
    pub student_int8_bytes: usize,
    /// Peak RSS in inference, per model and for a probe that loads none (`None` where it cannot be
    /// measured: not Linux, a CNN, no binary to probe with).
    pub peak_rss: Option<PeakRss>,
}

/// Peak resident set of a process that loads one model and runs [`PROBE_PASSES`] batch-1 inferences.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeakRss {
    /// The same probe with no model: the process's own floor.
    pub baseline_kib: u64,
    /// Loading and running the f32 teacher.
    pub teacher_kib: u64,
    /// Loading and running the f32 student.
    pub student_f32_kib: u64,
    /// Loading and running the int8 student.
    pub student_int8_kib: u64,
    /// `1 - (student_int8 - baseline) / (teacher - baseline)`: the inference memory saved beyond the floor.
    pub int8_reduction_over_baseline: f64,
}

/// Everything [`measure`] reads.
pub struct HeadlineInputs<'a> {
    /// The trained teacher.
    pub teacher: &'a Model,
    /// The distilled f32 student.
    pub student: &'a Model,
    /// The student's quantization table (its `f32` and `int8` rows give accuracies and file bytes).
    pub quant_rows: &'a [QuantRow],
    /// Test set (timed inputs).
    pub test: &'a Dataset,
    /// Calibration rows for the int8 student (the public transfer set), and their count.
    pub calib: (&'a [f32], usize),
    /// The `fedistill` binary that runs the memory probes (`None`: no memory figures).
    pub probe_exe: Option<PathBuf>,
}

/// Times teacher and students interleaved, then probes each model's memory in a child process.
pub fn measure(inp: &HeadlineInputs<'_>) -> anyhow::Result<Headline> {
    let row = |name: &str| {
        inp.quant_rows
            .iter()
            .find(|r| r.profile == name)
            .with_context(|| format!("the quantization table has no {name} row"))
    };
    let (f32_row, int8_row) = (row("f32")?, row("int8")?);
    let (test, d) = (inp.test, inp.test.dim);
    let teacher_logits = inp.teacher.logits(&test.features, test.n)?;
    let teacher_accuracy = accuracy(&teacher_logits, &test.labels, test.num_classes);
    if teacher_accuracy <= 0.0 {
        bail!("the teacher classified no test sample correctly; no ratio to report");
    }

    // A CNN teacher has no folded layout: its candle forward is then its only f32 kernel.
    let teacher_folded = QuantizedModel::from_model(inp.teacher, Profile::F32).ok();
    let student_folded = QuantizedModel::from_model(inp.student, Profile::F32)?;
    let (int8, _) = quantize(
        inp.student,
        Profile::Int8,
        inp.calib.0,
        inp.calib.1,
        &PtqOptions::default(),
    )?;
    let tc = |x: &[f32], n: usize| inp.teacher.logits(x, n);
    let tf = |x: &[f32], n: usize| match &teacher_folded {
        Some(f) => f.logits_with(x, n, false),
        None => inp.teacher.logits(x, n),
    };
    let sc = |x: &[f32], n: usize| inp.student.logits(x, n);
    let sf = |x: &[f32], n: usize| student_folded.logits_with(x, n, false);
    let si = |x: &[f32], n: usize| int8.logits(x, n);
    let fns: [LogitsFn<'_>; 5] = [&tc, &tf, &sc, &sf, &si];
    let t = time_interleaved(&fns, &test.features, test.n, d)?;
    let teacher_us = t[0].0.min(t[1].0);
    let student_us = t[2].0.min(t[3].0);
    let int8_us = t[4].0;

    let teacher_bytes = inp.teacher.serialized_size()?;
    let student_f32_bytes = inp.student.serialized_size()?;
    let peak_rss = match &inp.probe_exe {
        Some(exe) => probe_all(exe, inp.teacher, inp.student, &int8)?,
        None => None,
    };
    Ok(Headline {
        accuracy_ratio: f32_row.accuracy / teacher_accuracy,
        int8_accuracy_ratio: int8_row.accuracy / teacher_accuracy,
        int8_points_lost: 100.0 * (f32_row.accuracy - int8_row.accuracy),
        speedup_f32_batch1: teacher_us / student_us,
        speedup_int8_batch1: teacher_us / int8_us,
        memory_reduction: 1.0 - student_f32_bytes as f64 / teacher_bytes as f64,
        int8_size_ratio_vs_teacher: teacher_bytes as f64 / int8_row.bytes as f64,
        teacher_latency_ms: teacher_us / 1e3,
        student_f32_latency_ms: student_us / 1e3,
        student_int8_latency_ms: int8_us / 1e3,
        teacher_bytes,
        student_f32_bytes,
        student_int8_bytes: int8_row.bytes,
        peak_rss,
    })
}

fn accuracy(logits: &[f32], labels: &[u32], classes: usize) -> f64 {
    let hits = logits
        .chunks_exact(classes)
        .zip(labels)
        .filter(|(row, &l)| fedistill_shared::ml::model::argmax(row) == l as usize)
        .count();
    hits as f64 / labels.len().max(1) as f64
}

/// The four probes (none, teacher, f32 student, int8 student), each a fresh process on files in a temp dir.
fn probe_all(exe: &Path, teacher: &Model, student: &Model, int8: &QuantizedModel) -> anyhow::Result<Option<PeakRss>> {
    if !cfg!(target_os = "linux") {
        return Ok(None);
    }
    let (Ok(ta), Ok(sa)) = (
        Arch::from_config(teacher.config(), teacher.in_dim(), teacher.classes()),
        Arch::from_config(student.config(), student.in_dim(), student.classes()),
    ) else {
        return Ok(None);
    };
    let dir = tempfile::tempdir().context("temp dir for the memory probes")?;
    let tpath = dir.path().join("teacher.safetensors");
    let spath = dir.path().join("student.safetensors");
    let qpath = dir.path().join("student-int8.gguf");
    teacher.save(&tpath)?;
    student.save(&spath)?;
    let gguf = fedistill_shared::ml::quant::export::to_gguf(int8)?;
    std::fs::write(&qpath, gguf).with_context(|| format!("writing {}", qpath.display()))?;
    let baseline = run_probe(exe, None, &sa)?;
    let t = run_probe(exe, Some(&tpath), &ta)?;
    let s = run_probe(exe, Some(&spath), &sa)?;
    let q = run_probe(exe, Some(&qpath), &sa)?;
    let over = |v: u64| v.saturating_sub(baseline) as f64;
    Ok(Some(PeakRss {
        baseline_kib: baseline,
        teacher_kib: t,
        student_f32_kib: s,
        student_int8_kib: q,
        int8_reduction_over_baseline: if over(t) > 0.0 {
            1.0 - over(q) / over(t)
        } else {
            f64::NAN
        },
    }))
}

fn run_probe(exe: &Path, model: Option<&Path>, arch: &Arch) -> anyhow::Result<u64> {
    let hidden: Vec<String> = arch.hidden.iter().map(usize::to_string).collect();
    let mut cmd = Command::new(exe);
    cmd.arg("probe-inference")
        .arg("--in-dim")
        .arg(arch.in_dim.to_string())
        .arg("--classes")
        .arg(arch.classes.to_string())
        .arg("--hidden")
        .arg(hidden.join(","))
        .arg("--passes")
        .arg(PROBE_PASSES.to_string());
    if let Some(m) = model {
        cmd.arg("--model").arg(m);
    }
    let out = cmd
        .output()
        .with_context(|| format!("running {} probe-inference", exe.display()))?;
    if !out.status.success() {
        bail!(
            "probe-inference failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let report: ProbeReport = serde_json::from_slice(&out.stdout).context("reading probe-inference's report")?;
    Ok(report.peak_rss_kib)
}

/// What `fedistill probe-inference` prints on stdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeReport {
    /// `VmHWM` of the probe process after its passes, KiB.
    pub peak_rss_kib: u64,
    /// Batch-1 inferences run.
    pub passes: usize,
    /// Sum of every logit produced (keeps the work observable; also a cheap check that it ran).
    pub checksum: f64,
}

/// The body of `fedistill probe-inference`: load `model` (or nothing), run `passes` batch-1 inferences on
/// seeded inputs, report the process's peak RSS.
pub fn probe(model: Option<&Path>, arch: &Arch, passes: usize) -> anyhow::Result<ProbeReport> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x9E37_79B9);
    let x: Vec<f32> = (0..arch.in_dim).map(|_| rng.random_range(0.0..1.0)).collect();
    let loaded = match model {
        Some(p) => Some(load_student(p, arch).with_context(|| format!("loading {}", p.display()))?),
        None => None,
    };
    let mut checksum = 0f64;
    if let Some(q) = &loaded {
        for _ in 0..passes {
            checksum += q.logits(&x, 1)?.iter().map(|&v| f64::from(v)).sum::<f64>();
        }
    }
    Ok(ProbeReport {
        peak_rss_kib: peak_rss_kib()?,
        passes: if loaded.is_some() { passes } else { 0 },
        checksum,
    })
}

/// `VmHWM` of this process, KiB.
fn peak_rss_kib() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM line in /proc/self/status")
}

/// The architecture a probe is told, from its flags.
pub fn probe_arch(in_dim: usize, classes: usize, hidden: &[usize]) -> anyhow::Result<Arch> {
    Ok(Arch::from_config(
        &ModelConfig::Mlp {
            hidden: hidden.to_vec(),
        },
        in_dim,
        classes,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_reports_a_peak_that_grows_with_the_model() {
        let dir = tempfile::tempdir().expect("temp dir");
        let arch = probe_arch(64, 3, &[512, 512]).expect("arch");
        let m = Model::new(&ModelConfig::Mlp { hidden: vec![512, 512] }, 64, 3, 1).expect("model");
        let path = dir.path().join("m.safetensors");
        m.save(&path).expect("save");
        let none = probe(None, &arch, 10).expect("baseline probe");
        assert_eq!(none.passes, 0);
        let one = probe(Some(&path), &arch, 10).expect("probe");
        assert_eq!(one.passes, 10);
        assert!(one.checksum.is_finite() && one.checksum != 0.0, "{one:?}");
        // VmHWM only grows within a process: the second reading cannot be below the first.
        assert!(one.peak_rss_kib >= none.peak_rss_kib && none.peak_rss_kib > 0);
    }

    #[test]
    fn a_probe_of_a_model_that_does_not_match_its_arch_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let m = Model::new(&ModelConfig::Mlp { hidden: vec![8] }, 16, 3, 1).expect("model");
        let path = dir.path().join("m.safetensors");
        m.save(&path).expect("save");
        let err = probe(Some(&path), &probe_arch(16, 3, &[9]).expect("arch"), 1).expect_err("wrong arch");
        assert!(format!("{err:#}").contains("m.safetensors"), "{err:#}");
    }
}
