//! Device-aware sizing of the student (`fedistill size`): the candidate grid, the inference-memory model of a
//! batch-1 forward, the pure choice of the most accurate measured candidate within a latency and memory
//! budget (or the closest ones when none fits), and the student config file the choice is written as.
//!
//! The measuring itself (distillation, quantization, interleaved timing) is the harness's; everything here is
//! deterministic so the choice can be tested on hand-made figures.

use serde::{Deserialize, Serialize};

use crate::error::{MlError, Result};
use crate::model::ModelConfig;
use crate::quant::{LayerFormat, Profile, QuantizedModel};

/// Bytes in one KB of `--memory-kb` (KiB, as device memory is quoted).
pub const KB: f64 = 1024.0;

/// Profiles every architecture is measured in, in the order candidates are listed (and ties broken).
pub const PROFILES: [Profile; 4] = Profile::ALL;

/// Hidden widths of the candidate MLP students, input side first: one hidden layer of several widths and two
/// layers `[w, w/2]`; `quick` is a small grid for tests.
pub fn architectures(quick: bool) -> Vec<Vec<usize>> {
    if quick {
        vec![vec![16], vec![32], vec![32, 16]]
    } else {
        vec![
            vec![16],
            vec![32],
            vec![64],
            vec![128],
            vec![256],
            vec![64, 32],
            vec![128, 64],
        ]
    }
}

/// A latency and memory budget.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    /// Largest batch-1 median (p50) latency, microseconds.
    pub latency_us: f64,
    /// Largest inference memory (see [`inference_memory`]), bytes.
    pub memory_bytes: f64,
}

/// One measured candidate: an architecture in one quantization profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// `mlp [64, 32] int8`.
    pub name: String,
    /// Hidden widths.
    pub hidden: Vec<usize>,
    /// Quantization profile.
    pub profile: Profile,
    /// Trainable parameters of the architecture.
    pub params: usize,
    /// Validation accuracy through the batch-1 kernel of this profile: what the choice ranks by (a seeded
    /// half of the split's test rows, never the rows `test_accuracy` is measured on).
    pub accuracy: f64,
    /// Accuracy on the other half of the test rows (held out from the choice), through the same kernel.
    pub test_accuracy: f64,
    /// Test accuracy of the same distilled student in f32 (before quantization), on all the split's test
    /// rows, as `fedistill local --student` reports it.
    pub accuracy_f32: f64,
    /// Batch-1 median latency, microseconds.
    pub latency_p50_us: f64,
    /// Batch-1 99th-percentile latency, microseconds.
    pub latency_p99_us: f64,
    /// Samples per second at batch 128.
    pub throughput: f64,
    /// Stored weights and biases in this profile's format (padded layout).
    pub weight_bytes: usize,
    /// Peak activation buffers of a batch-1 forward.
    pub activation_bytes: usize,
    /// `weight_bytes + activation_bytes`: what the memory budget is compared with.
    pub memory_bytes: usize,
    /// Bytes of the exported file (GGUF or safetensors, header included).
    pub file_bytes: usize,
}

impl Candidate {
    /// The display name of an architecture in a profile.
    pub fn name_of(hidden: &[usize], profile: Profile) -> String {
        let widths: Vec<String> = hidden.iter().map(usize::to_string).collect();
        format!("mlp [{}] {}", widths.join(", "), profile.name())
    }

    /// Whether the median latency is within the budget (a NaN latency never is).
    pub fn meets_latency(&self, b: &Budget) -> bool {
        self.latency_p50_us <= b.latency_us
    }

    /// Whether the inference memory is within the budget.
    pub fn meets_memory(&self, b: &Budget) -> bool {
        self.memory_bytes as f64 <= b.memory_bytes
    }

    /// Both budgets met.
    pub fn meets(&self, b: &Budget) -> bool {
        self.meets_latency(b) && self.meets_memory(b)
    }

    /// `yes`, or which budget it misses: `no: latency`, `no: memory`, `no: both`.
    pub fn fits(&self, b: &Budget) -> &'static str {
        match (self.meets_latency(b), self.meets_memory(b)) {
            (true, true) => "yes",
            (false, true) => "no: latency",
            (true, false) => "no: memory",
            (false, false) => "no: both",
        }
    }

    /// `mlp [16] int8 (3.2 us, 14.1 KB, 3.5x over)`.
    pub fn describe(&self, b: &Budget) -> String {
        format!(
            "{} ({:.1} us, {:.1} KB, {:.1}x over)",
            self.name,
            self.latency_p50_us,
            kb(self.memory_bytes),
            self.overshoot(b)
        )
    }

    /// How far over budget: the larger of latency/budget and memory/budget (at most 1 when it fits);
    /// infinite for a NaN latency.
    pub fn overshoot(&self, b: &Budget) -> f64 {
        let lat = self.latency_p50_us / b.latency_us;
        let mem = self.memory_bytes as f64 / b.memory_bytes;
        let lat = if lat.is_nan() { f64::INFINITY } else { lat };
        lat.max(mem)
    }
}

/// The outcome of [`choose`]: indices into the candidate slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// The most accurate candidate within the budget.
    Chosen(usize),
    /// None fits; the closest ones, smallest overshoot first.
    NoneFits {
        /// At most the requested number of candidates, closest first.
        closest: Vec<usize>,
    },
}

/// Picks the most accurate candidate meeting both budgets. Ties on accuracy go to the smaller memory, then the
/// fewer parameters, then the earlier candidate (latency is a noisy measurement, so it never breaks a tie).
/// When none fits, returns up to `closest` candidates ordered by [`Candidate::overshoot`] (ties by order).
pub fn choose(candidates: &[Candidate], budget: &Budget, closest: usize) -> Choice {
    let best = candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| c.meets(budget))
        .min_by(|(i, a), (j, b)| {
            b.accuracy
                .total_cmp(&a.accuracy)
                .then(a.memory_bytes.cmp(&b.memory_bytes))
                .then(a.params.cmp(&b.params))
                .then(i.cmp(j))
        });
    match best {
        Some((i, _)) => Choice::Chosen(i),
        None => {
            let mut order: Vec<usize> = (0..candidates.len()).collect();
            order.sort_by(|&i, &j| {
                candidates[i]
                    .overshoot(budget)
                    .total_cmp(&candidates[j].overshoot(budget))
                    .then(i.cmp(&j))
            });
            order.truncate(closest);
            Choice::NoneFits { closest: order }
        }
    }
}

/// Bytes in KB (1024).
pub fn kb(bytes: usize) -> f64 {
    bytes as f64 / KB
}

/// The error of a budget nothing meets, naming the budget as the flags `--latency-us` and `--memory-kb` and the
/// `closest` candidates (indices into `candidates`, as [`choose`] returns them).
pub fn none_fits_message(candidates: &[Candidate], closest: &[usize], b: &Budget) -> String {
    let mut named = closest.iter().filter_map(|&i| candidates.get(i)).map(|c| c.describe(b));
    let first = named.next().unwrap_or_else(|| "none measured".into());
    let rest: Vec<String> = named.collect();
    let mut msg = format!(
        "no candidate meets --latency-us {} --memory-kb {}: the closest is {first}",
        b.latency_us,
        b.memory_bytes / KB
    );
    if !rest.is_empty() {
        msg.push_str(&format!("; then {}", rest.join(", ")));
    }
    msg
}

/// Activation bytes one batch-1 forward needs, from the stored (padded) layer dims and formats: a layer's
/// input and output alive at once as two f32 vectors as wide as the widest layer input or output, the input
/// of the widest Q8_0 layer quantized on the fly (one byte per value plus an f32 scale per 32 values), and the
/// logits. A model of what the forward needs, not a reading of one kernel's allocations (the row kernel
/// may hold its quantized input wider, e.g. as i16, and for float layers too).
pub fn activation_bytes(padded_dims: &[(usize, usize)], formats: &[LayerFormat], classes: usize) -> usize {
    let widest = padded_dims.iter().map(|&(i, o)| i.max(o)).max().unwrap_or(0);
    let q8 = padded_dims
        .iter()
        .zip(formats)
        .filter(|(_, f)| **f == LayerFormat::Q8_0)
        .map(|(&(i, _), _)| i + i / 32 * 4)
        .max()
        .unwrap_or(0);
    2 * 4 * widest + q8 + 4 * classes
}

/// `(weight_bytes, activation_bytes)` of a student: its stored weights and biases
/// ([`QuantizedModel::weight_bytes`]) and [`activation_bytes`]. Their sum is the inference memory the
/// `--memory-kb` budget bounds.
pub fn inference_memory(q: &QuantizedModel) -> (usize, usize) {
    let act = activation_bytes(&q.arch().padded_dims(), &q.layer_formats(), q.classes());
    (q.weight_bytes(), act)
}

/// The `[model]` table alone: every other table of a [`crate::local::StudentFile`] is optional.
#[derive(Serialize)]
struct ModelOnly<'a> {
    model: &'a ModelConfig,
}

/// The student config file of a chosen architecture: `comment` as `#` lines, then `[model]` (a
/// [`crate::local::StudentFile`], what `fedistill local --student` reads; no other table, so the defaults apply).
pub fn student_toml(model: &ModelConfig, comment: &str) -> Result<String> {
    let body =
        toml::to_string(&ModelOnly { model }).map_err(|e| MlError::InvalidConfig(format!("student config: {e}")))?;
    let mut out = String::new();
    for line in comment.lines() {
        out.push_str(if line.is_empty() { "#" } else { "# " });
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(&body);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::{parse_toml, StudentFile};
    use crate::model::Model;

    fn cand(name: &str, accuracy: f64, latency: f64, memory: usize, params: usize) -> Candidate {
        Candidate {
            name: name.into(),
            hidden: vec![params],
            profile: Profile::Int8,
            params,
            accuracy,
            test_accuracy: accuracy,
            accuracy_f32: accuracy,
            latency_p50_us: latency,
            latency_p99_us: latency * 2.0,
            throughput: 1.0,
            weight_bytes: memory / 2,
            activation_bytes: memory - memory / 2,
            memory_bytes: memory,
            file_bytes: memory,
        }
    }

    const BUDGET: Budget = Budget {
        latency_us: 10.0,
        memory_bytes: 1000.0,
    };

    #[test]
    fn picks_the_most_accurate_within_both_budgets() {
        let c = vec![
            cand("small", 0.80, 2.0, 200, 10),
            cand("best but slow", 0.99, 11.0, 500, 20),
            cand("best but big", 0.98, 5.0, 1001, 30),
            cand("fits", 0.90, 10.0, 1000, 40),
            cand("nan latency", 0.995, f64::NAN, 100, 50),
        ];
        // Exactly on the budget fits; over it by a hair (latency or memory) or a NaN latency does not.
        assert_eq!(choose(&c, &BUDGET, 3), Choice::Chosen(3));
        let loose = Budget {
            latency_us: 100.0,
            memory_bytes: 1e6,
        };
        assert_eq!(choose(&c, &loose, 3), Choice::Chosen(1));
    }

    #[test]
    fn ties_go_to_smaller_memory_then_fewer_params_then_order() {
        let c = vec![
            cand("a", 0.9, 1.0, 600, 10),
            cand("b", 0.9, 9.0, 500, 30),
            cand("c", 0.9, 2.0, 500, 20),
            cand("d", 0.9, 0.5, 500, 20),
        ];
        // b, c, d share the smallest memory; c and d the fewest params; c comes first. d's lower latency
        // does not matter: latency never breaks a tie.
        assert_eq!(choose(&c, &BUDGET, 3), Choice::Chosen(2));
        // Reversed, d comes before c: only the order separates them.
        let r: Vec<Candidate> = c.iter().rev().cloned().collect();
        assert_eq!(choose(&r, &BUDGET, 3), Choice::Chosen(0));
        assert_eq!(r[0].name, "d");
        // A strictly more accurate candidate wins over any tie-break.
        let mut more = c.clone();
        more[0].accuracy = 0.9000001;
        assert_eq!(choose(&more, &BUDGET, 3), Choice::Chosen(0));
    }

    #[test]
    fn none_within_budget_gives_the_closest_first() {
        let c = vec![
            cand("3x memory", 0.9, 1.0, 3000, 10),
            cand("2x latency", 0.9, 20.0, 100, 10),
            cand("4x both", 0.9, 40.0, 4000, 10),
            cand("1.5x latency", 0.5, 15.0, 900, 10),
            cand("nan", 0.5, f64::NAN, 10, 10),
        ];
        assert_eq!(choose(&c, &BUDGET, 2), Choice::NoneFits { closest: vec![3, 1] });
        assert_eq!(
            choose(&c, &BUDGET, 10),
            Choice::NoneFits {
                closest: vec![3, 1, 0, 2, 4]
            }
        );
        assert!((c[2].overshoot(&BUDGET) - 4.0).abs() < 1e-12);
        assert_eq!(c[2].fits(&BUDGET), "no: both");
        assert_eq!(c[1].fits(&BUDGET), "no: latency");
        assert_eq!(c[0].fits(&BUDGET), "no: memory");
        assert_eq!(choose(&[], &BUDGET, 3), Choice::NoneFits { closest: vec![] });
    }

    #[test]
    fn none_fits_message_names_the_budget_and_the_closest() {
        let c = vec![
            cand("mlp [16] int8", 0.5, 3.2, 14_438, 1),
            cand("mlp [32] int8", 0.5, 5.0, 30_000, 1),
        ];
        let b = Budget {
            latency_us: 1.0,
            memory_bytes: 4.0 * KB,
        };
        assert_eq!(
            none_fits_message(&c, &[0, 1], &b),
            "no candidate meets --latency-us 1 --memory-kb 4: the closest is mlp [16] int8 (3.2 us, 14.1 KB, \
             3.5x over); then mlp [32] int8 (5.0 us, 29.3 KB, 7.3x over)"
        );
        let half = Budget {
            latency_us: 0.001,
            memory_bytes: 0.5 * KB,
        };
        assert!(none_fits_message(&c, &[1], &half).starts_with(
            "no candidate meets --latency-us 0.001 --memory-kb 0.5: the closest is mlp [32] int8 (5.0 us"
        ));
    }

    #[test]
    fn activation_bytes_follow_the_memory_model() {
        // 784 -> 64 -> 10, int8: widest vector 800 (784 padded), Q8 input of the first layer 800 + 25 * 4.
        let dims = [(800, 64), (64, 10)];
        let q8 = [LayerFormat::Q8_0, LayerFormat::Q8_0];
        assert_eq!(activation_bytes(&dims, &q8, 10), 8 * 800 + 800 + 100 + 40);
        let f32s = [LayerFormat::F32, LayerFormat::F32];
        assert_eq!(activation_bytes(&dims, &f32s, 10), 8 * 800 + 40);
        // Sandwich: only the output layer is Q8_0, its 64-wide input is the quantized buffer.
        let sandwich = [LayerFormat::F16, LayerFormat::Q8_0];
        assert_eq!(activation_bytes(&dims, &sandwich, 10), 8 * 800 + 64 + 8 + 40);
        // A real student: weights as stored, activations from its padded dims.
        let m = Model::new(&ModelConfig::Mlp { hidden: vec![64] }, 784, 10, 1).expect("model");
        let q = QuantizedModel::from_model(&m, Profile::Int8).expect("q");
        let (w, a) = inference_memory(&q);
        assert_eq!(w, 800 * 64 / 32 * 34 + 64 * 4 + 64 * 10 / 32 * 34 + 10 * 4);
        assert_eq!(a, 8 * 800 + 800 + 100 + 40);
        let f = QuantizedModel::from_model(&m, Profile::F32).expect("f32");
        assert_eq!(inference_memory(&f).0, (800 * 64 + 64 + 64 * 10 + 10) * 4);
    }

    #[test]
    fn student_toml_loads_as_a_student_file() {
        let cfg = ModelConfig::Mlp { hidden: vec![64, 32] };
        let text = student_toml(&cfg, "chosen by fedistill size\n\nprofile: int8").expect("toml");
        assert!(
            text.starts_with("# chosen by fedistill size\n#\n# profile: int8\n"),
            "{text}"
        );
        let back: StudentFile = parse_toml(&text, "written").expect("parses");
        assert_eq!(back.model, cfg);
        assert_eq!(back.distill, None);
        assert!(text.ends_with("[model]\nkind = \"mlp\"\nhidden = [64, 32]\n"), "{text}");
    }

    #[test]
    fn grid_names_are_distinct() {
        for quick in [true, false] {
            let mut names: Vec<String> = architectures(quick)
                .iter()
                .flat_map(|h| PROFILES.iter().map(move |p| Candidate::name_of(h, *p)))
                .collect();
            let n = names.len();
            names.sort();
            names.dedup();
            assert_eq!(names.len(), n);
        }
        assert_eq!(Candidate::name_of(&[64, 32], Profile::Int8), "mlp [64, 32] int8");
    }
}
