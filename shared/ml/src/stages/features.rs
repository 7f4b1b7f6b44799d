//! Stage 1's losses: the FitNets hint loss through a learned projector (Romero et al. 2015) and attention
//! transfer between conv blocks of the same spatial size (Zagoruyko and Komodakis 2017); a 1-D CNN's blocks
//! (series) the same way as a 2-D CNN's maps, with one position axis instead of two.
//!
//! Both are composed from stock candle ops, so candle's autograd differentiates them into the student's layers
//! up to the deepest one a loss reaches and into the projector.

use candle_core::{DType, Device, Tensor, Var, D};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{MlError, Result};
use crate::model::FeatureShape;

/// Floor under the norm of an attention map, so an all-zero map (every unit of a block dead) stays zero
/// instead of dividing by zero.
const MAP_NORM_FLOOR: f64 = 1e-12;

/// Largest projector accepted (weights), so a flattened conv block against a wide teacher layer cannot
/// allocate without bound.
pub const MAX_PROJECTOR_WEIGHTS: usize = 1 << 24;

/// How the student's guided layer is mapped onto the teacher's hint layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProjectorKind {
    /// Both layers are conv blocks of the same side (or 1-D blocks of the same length): a 1x1 convolution
    /// from the student's channels to the teacher's, applied at every position.
    Conv1x1 {
        /// Student channels.
        from: usize,
        /// Teacher channels.
        to: usize,
    },
    /// Otherwise: a linear map of the flattened student activation onto the flattened teacher activation.
    Linear {
        /// Student values per sample.
        from: usize,
        /// Teacher values per sample.
        to: usize,
    },
}

impl ProjectorKind {
    /// The projector between a student layer and a teacher layer, or why there is none: two conv blocks of
    /// different sides or two 1-D blocks of different lengths (a 1x1 convolution keeps the spatial size), or
    /// more than [`MAX_PROJECTOR_WEIGHTS`].
    pub fn between(student: FeatureShape, teacher: FeatureShape) -> Result<ProjectorKind> {
        let kind = match (student, teacher) {
            (FeatureShape::Spatial { channels: cs, side: ss }, FeatureShape::Spatial { channels: ct, side: st }) => {
                if ss != st {
                    return Err(MlError::InvalidConfig(format!(
                        "[stages] feature_alignment: the projector cannot match a student layer of {student} \
                         to a teacher layer of {teacher}: a 1x1 convolution keeps the spatial size ({ss} vs \
                         {st}); pick layers of the same side or a flat layer"
                    )));
                }
                ProjectorKind::Conv1x1 { from: cs, to: ct }
            }
            (
                FeatureShape::Sequence {
                    channels: cs,
                    length: ls,
                },
                FeatureShape::Sequence {
                    channels: ct,
                    length: lt,
                },
            ) => {
                if ls != lt {
                    return Err(MlError::InvalidConfig(format!(
                        "[stages] feature_alignment: the projector cannot match a student layer of {student} \
                         to a teacher layer of {teacher}: a 1x1 convolution keeps the spatial size ({ls} vs \
                         {lt} steps); pick layers of the same length or a flat layer"
                    )));
                }
                ProjectorKind::Conv1x1 { from: cs, to: ct }
            }
            _ => ProjectorKind::Linear {
                from: student.numel(),
                to: teacher.numel(),
            },
        };
        let weights = match kind {
            ProjectorKind::Conv1x1 { from, to } | ProjectorKind::Linear { from, to } => from.saturating_mul(to),
        };
        if weights > MAX_PROJECTOR_WEIGHTS {
            return Err(MlError::InvalidConfig(format!(
                "[stages] feature_alignment: a projector from {student} to {teacher} would hold {weights} \
                 weights, more than {MAX_PROJECTOR_WEIGHTS}; pick narrower layers"
            )));
        }
        Ok(kind)
    }
}

/// The learned map from the student's guided layer to the teacher's hint layer (trained in stage 1 only,
/// then dropped: it is no part of the student).
pub struct Projector {
    kind: ProjectorKind,
    weight: Var,
    bias: Var,
}

impl Projector {
    /// A projector with PyTorch's default init (uniform +- 1/sqrt(fan_in)) drawn from `seed`.
    pub fn new(kind: ProjectorKind, seed: u64) -> Result<Projector> {
        let (from, to) = match kind {
            ProjectorKind::Conv1x1 { from, to } | ProjectorKind::Linear { from, to } => (from, to),
        };
        let bound = 1.0 / (from.max(1) as f32).sqrt();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let w: Vec<f32> = (0..from * to).map(|_| rng.random_range(-bound..bound)).collect();
        let b: Vec<f32> = (0..to).map(|_| rng.random_range(-bound..bound)).collect();
        let weight = match kind {
            ProjectorKind::Conv1x1 { .. } => Tensor::from_vec(w, (to, from, 1, 1), &Device::Cpu)?,
            ProjectorKind::Linear { .. } => Tensor::from_vec(w, (to, from), &Device::Cpu)?,
        };
        Self::from_tensors(kind, &weight, &Tensor::from_vec(b, to, &Device::Cpu)?)
    }

    /// A projector with the given weight (`[to, from]`, or `[to, from, 1, 1]` for a 1x1 convolution) and bias
    /// (`[to]`).
    pub fn from_tensors(kind: ProjectorKind, weight: &Tensor, bias: &Tensor) -> Result<Projector> {
        let (from, to, dims) = match kind {
            ProjectorKind::Conv1x1 { from, to } => (from, to, vec![to, from, 1, 1]),
            ProjectorKind::Linear { from, to } => (from, to, vec![to, from]),
        };
        if weight.dims() != dims.as_slice() || bias.dims() != [to] {
            return Err(MlError::InvalidInput(format!(
                "projector {from} -> {to}: weight {:?} and bias {:?}, expected {dims:?} and [{to}]",
                weight.dims(),
                bias.dims()
            )));
        }
        Ok(Projector {
            kind,
            weight: Var::from_tensor(&weight.to_dtype(DType::F32)?)?,
            bias: Var::from_tensor(&bias.to_dtype(DType::F32)?)?,
        })
    }

    /// The trainable tensors (weight, bias).
    pub fn vars(&self) -> Vec<Var> {
        vec![self.weight.clone(), self.bias.clone()]
    }

    /// Maps a batch of student activations onto the teacher layer's shape: `[n, to, side, side]` for a 1x1
    /// convolution (`[n, to, length]` on a 1-D block), `[n, to]` for a linear projector (the student
    /// activation flattened first).
    pub fn forward(&self, hs: &Tensor) -> Result<Tensor> {
        if let (ProjectorKind::Conv1x1 { .. }, 3) = (self.kind, hs.rank()) {
            // A 1-D block as maps of height 1: the same 1x1 convolution at every step.
            return Ok(self.forward(&hs.unsqueeze(2)?)?.squeeze(2)?);
        }
        Ok(match self.kind {
            ProjectorKind::Conv1x1 { to, .. } => hs
                .conv2d(self.weight.as_tensor(), 0, 1, 1, 1)?
                .broadcast_add(&self.bias.as_tensor().reshape((1, to, 1, 1))?)?,
            ProjectorKind::Linear { .. } => hs
                .flatten_from(1)?
                .matmul(&self.weight.as_tensor().t()?)?
                .broadcast_add(self.bias.as_tensor())?,
        })
    }
}

/// FitNets' hint loss: the mean squared error between the projected student activation and the teacher's
/// hint activation, over every value of the batch. Shapes may differ only in how they are flattened.
pub fn hint_loss(projected: &Tensor, teacher: &Tensor) -> Result<Tensor> {
    let n = projected.dim(0)?;
    let p = projected.reshape((n, ()))?;
    let t = teacher.reshape((n, ()))?;
    if p.dims() != t.dims() {
        return Err(MlError::InvalidInput(format!(
            "hint loss: projected student {:?} vs teacher {:?}",
            projected.dims(),
            teacher.dims()
        )));
    }
    Ok(p.sub(&t)?.sqr()?.mean_all()?)
}

/// The attention map of a conv block's activation `[n, c, s, s]` (or a 1-D block's `[n, c, length]`): the
/// mean over channels of the squared activations, flattened to `[n, s*s]` (`[n, length]`) and L2-normalised
/// per sample (an all-zero map stays zero).
pub fn attention_map(a: &Tensor) -> Result<Tensor> {
    let q = if a.rank() == 3 {
        a.sqr()?.mean(1)?
    } else {
        let (n, _c, h, w) = a.dims4()?;
        a.sqr()?.mean(1)?.reshape((n, h * w))?
    };
    let norm = q
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .affine(1.0, MAP_NORM_FLOOR * MAP_NORM_FLOOR)?
        .sqrt()?;
    Ok(q.broadcast_div(&norm)?)
}

/// Attention transfer between one student block and one teacher block of the same side: the mean over the
/// batch of the L2 distance (not squared, as in Zagoruyko and Komodakis) between the two normalised maps.
pub fn attention_loss(student: &Tensor, teacher: &Tensor) -> Result<Tensor> {
    let (qs, qt) = (attention_map(student)?, attention_map(teacher)?);
    if qs.dims() != qt.dims() {
        return Err(MlError::InvalidInput(format!(
            "attention transfer: student block {:?} vs teacher block {:?} (different spatial sizes)",
            student.dims(),
            teacher.dims()
        )));
    }
    // A tiny constant under the root keeps the gradient finite where the maps already agree.
    Ok(qs
        .sub(&qt)?
        .sqr()?
        .sum(D::Minus1)?
        .affine(1.0, 1e-12)?
        .sqrt()?
        .mean_all()?)
}
