//! Teacher refresh (co-distillation, as in FedMD and DS-FL): after a round, a participant fine-tunes its
//! private teacher on its own labelled data plus the round's public rows with the federation's
//! consensus as soft targets, so the labels it releases next round carry what the other participants
//! know (classes it never saw, under label skew). Only the consensus enters; no other participant's
//! data or weights. Not compatible with a DP-SGD teacher (the refresh touches private data without
//! noise); the participant refuses that combination at start.

use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{MlError, Result};
use crate::loss::LossSpec;
use crate::model::{check_features, Model};
use crate::optim::{AdamWParams, FusedAdamW};
use crate::step::{check_step_ranges, train_step};
use crate::train::{check_labels, gather_rows};

/// Hyper-parameters of a teacher refresh.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RefreshConfig {
    /// Passes over (private + round public rows) per round; 0 turns the refresh off.
    pub epochs: usize,
    /// Samples per step.
    pub batch_size: usize,
    /// AdamW learning rate (fresh optimizer per round).
    pub lr: f64,
    /// Weight of the KD term on the public rows (the CE term on private rows has weight 1).
    pub w_kd: f32,
    /// Semi-supervised refresh: the node's unlabelled private rows whose student prediction is at least this
    /// confident join the private rows with that class as their label (`None`: off; in (0, 1]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pseudo_threshold: Option<f32>,
}

impl Default for RefreshConfig {
    fn default() -> Self {
        RefreshConfig {
            epochs: 0,
            batch_size: 128,
            lr: 5e-4,
            w_kd: 1.0,
            pseudo_threshold: None,
        }
    }
}

impl RefreshConfig {
    /// Checks every field's range.
    pub fn validate(&self) -> Result<()> {
        // 0 epochs is allowed: it turns the refresh off.
        check_step_ranges(
            self.epochs,
            0..=1000,
            self.batch_size,
            (self.lr, f64::from(self.w_kd)),
            || {
                format!(
                    "teacher refresh epochs {} (at most 1000) / batch_size {} (at least 1)",
                    self.epochs, self.batch_size
                )
            },
            || format!("teacher refresh lr {} / w_kd {} out of range", self.lr, self.w_kd),
        )?;
        if let Some(t) = self.pseudo_threshold {
            if !(t > 0.0 && t <= 1.0) {
                return Err(MlError::InvalidConfig(format!(
                    "teacher refresh pseudo_threshold {t} must be in (0, 1]"
                )));
            }
        }
        Ok(())
    }
}

/// Rows a refresh trains on: private labelled rows and public rows with consensus probabilities
/// (given at `temperature`, the federation's release temperature).
pub struct RefreshData<'a> {
    /// Private features, `n_private * dim`.
    pub private_x: &'a [f32],
    /// Private labels.
    pub private_y: &'a [u32],
    /// Public features of the round, `n_public * dim`.
    pub public_x: &'a [f32],
    /// Consensus probabilities of those rows, `n_public * classes`.
    pub consensus: &'a [f32],
    /// Temperature the consensus was formed at.
    pub temperature: f32,
}

/// Fine-tunes `teacher` in place (its input standardization is kept); returns the last epoch's mean loss,
/// or None when `cfg.epochs == 0`.
pub fn refresh_teacher(teacher: &Model, data: &RefreshData<'_>, cfg: &RefreshConfig, seed: u64) -> Result<Option<f32>> {
    cfg.validate()?;
    if cfg.epochs == 0 {
        return Ok(None);
    }
    crate::model::check_temperature(data.temperature)?;
    let (dim, classes) = (teacher.in_dim(), teacher.classes());
    let n_priv = data.private_y.len();
    check_features(data.private_x, n_priv, dim)?;
    check_labels(data.private_y, n_priv, classes)?;
    let n_pub = data.consensus.len() / classes.max(1);
    check_features(data.public_x, n_pub, dim)?;
    crate::distill::validate_probabilities(data.consensus, n_pub, classes)?;
    let n = n_priv + n_pub;
    if n == 0 {
        return Err(MlError::InvalidInput("teacher refresh without any rows".into()));
    }
    let mut x = Vec::with_capacity(n * dim);
    x.extend_from_slice(data.private_x);
    x.extend_from_slice(data.public_x);
    let xs = teacher.standardize(&x, n)?;
    let uniform = 1.0 / classes as f32;
    let mut probs = vec![uniform; n_priv * classes];
    probs.extend_from_slice(data.consensus);
    let hard: Vec<Option<u32>> = data
        .private_y
        .iter()
        .map(|&y| Some(y))
        .chain(std::iter::repeat_n(None, n_pub))
        .collect();
    // KD applies to the public rows only; the private rows train through the hard-label term.
    let kd_weight: Vec<f32> = std::iter::repeat_n(0.0, n_priv)
        .chain(std::iter::repeat_n(1.0, n_pub))
        .collect();
    let vars = teacher.trainable_vars().into_iter().map(|(_, v)| v).collect();
    let mut opt = FusedAdamW::new(
        vars,
        AdamWParams {
            lr: cfg.lr,
            ..AdamWParams::default()
        },
    )?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xC0D1_5711);
    let mut order: Vec<usize> = (0..n).collect();
    let mut last = f32::NAN;
    for epoch in 0..cfg.epochs {
        order.shuffle(&mut rng);
        let (mut sum, mut steps) = (0f64, 0usize);
        for (step, batch) in order.chunks(cfg.batch_size).enumerate() {
            let bx = Tensor::from_vec(gather_rows(&xs, dim, batch), (batch.len(), dim), &Device::Cpu)?;
            let spec = LossSpec {
                classes,
                teacher_probs: gather_rows(&probs, classes, batch),
                weights: batch.iter().map(|&i| kd_weight[i]).collect(),
                hard: batch.iter().map(|&i| hard[i]).collect(),
                temperature: data.temperature,
                w_kd: cfg.w_kd,
                w_ce: 1.0,
            };
            let lv = train_step(teacher, &bx, &spec, &mut opt)?;
            if !lv.is_finite() {
                return Err(MlError::Diverged { epoch, step, loss: lv });
            }
            sum += f64::from(lv);
            steps += 1;
        }
        last = (sum / steps.max(1) as f64) as f32;
    }
    Ok(Some(last))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{argmax, ModelConfig};

    /// Two features; the class is which of them is larger.
    fn rows(n: usize, offset: usize) -> (Vec<f32>, Vec<u32>) {
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..n {
            let a = ((i + offset) * 7 % 11) as f32 / 11.0;
            let b = ((i + offset) * 5 % 13) as f32 / 13.0;
            x.extend([a, b]);
            y.push(u32::from(b > a));
        }
        (x, y)
    }

    #[test]
    fn refresh_learns_a_class_the_teacher_never_saw_from_the_consensus() {
        // The teacher's private data holds only class 0; the consensus on the public rows is the truth.
        let (px, py) = rows(200, 0);
        let keep: Vec<usize> = (0..200).filter(|&i| py[i] == 0).collect();
        let priv_x: Vec<f32> = keep.iter().flat_map(|&i| px[i * 2..i * 2 + 2].to_vec()).collect();
        let priv_y: Vec<u32> = keep.iter().map(|_| 0).collect();
        let (pub_x, pub_y) = rows(200, 1000);
        let consensus: Vec<f32> = pub_y
            .iter()
            .flat_map(|&y| if y == 1 { [0.05, 0.95] } else { [0.95, 0.05] })
            .collect();
        let t = Model::new(&ModelConfig::Mlp { hidden: vec![16] }, 2, 2, 3).unwrap();
        t.fit_input_normalization(&pub_x, 200, true).unwrap();
        let acc = |m: &Model| {
            let (tx, ty) = rows(300, 5000);
            let l = m.logits(&tx, 300).unwrap();
            l.chunks_exact(2)
                .zip(&ty)
                .filter(|(r, &y)| argmax(r) as u32 == y)
                .count() as f64
                / 300.0
        };
        let before = acc(&t);
        let data = RefreshData {
            private_x: &priv_x,
            private_y: &priv_y,
            public_x: &pub_x,
            consensus: &consensus,
            temperature: 1.0,
        };
        let cfg = RefreshConfig {
            epochs: 80,
            batch_size: 32,
            lr: 1e-2,
            w_kd: 1.0,
            pseudo_threshold: None,
        };
        let loss = refresh_teacher(&t, &data, &cfg, 1).unwrap().unwrap();
        assert!(loss.is_finite());
        let after = acc(&t);
        assert!(after > 0.9, "accuracy after refresh {after} (before {before})");
    }

    #[test]
    fn zero_epochs_is_a_no_op_and_bad_input_is_refused() {
        let t = Model::new(&ModelConfig::Mlp { hidden: vec![4] }, 2, 2, 3).unwrap();
        let before = t.to_safetensors().unwrap();
        let data = RefreshData {
            private_x: &[0.0, 1.0],
            private_y: &[1],
            public_x: &[1.0, 0.0],
            consensus: &[0.5, 0.5],
            temperature: 2.0,
        };
        assert_eq!(refresh_teacher(&t, &data, &RefreshConfig::default(), 1).unwrap(), None);
        assert_eq!(t.to_safetensors().unwrap(), before);
        let on = RefreshConfig {
            epochs: 1,
            ..RefreshConfig::default()
        };
        let bad_label = RefreshData {
            private_y: &[7],
            ..data
        };
        assert!(refresh_teacher(&t, &bad_label, &on, 1).is_err());
        let bad_probs = RefreshData {
            private_x: &[0.0, 1.0],
            private_y: &[1],
            public_x: &[1.0, 0.0],
            consensus: &[0.9, 0.9],
            temperature: 2.0,
        };
        assert!(refresh_teacher(&t, &bad_probs, &on, 1).is_err());
        let bad_cfg = RefreshConfig {
            epochs: 1,
            lr: -1.0,
            ..RefreshConfig::default()
        };
        let ok = RefreshData {
            private_x: &[0.0, 1.0],
            private_y: &[1],
            public_x: &[1.0, 0.0],
            consensus: &[0.5, 0.5],
            temperature: 2.0,
        };
        assert!(refresh_teacher(&t, &ok, &bad_cfg, 1).is_err());
    }

    /// The messages of a bad refresh config, as `validate` wrote them before the range checks moved to
    /// `step::check_step_ranges` (copied from that code): epochs over 1000 or batch 0 name the counts,
    /// a bad lr or w_kd the rates; 0 epochs (refresh off) and 1000 are accepted.
    #[test]
    fn refresh_config_rejects_each_bad_range_with_its_message() {
        let msg = |cfg: RefreshConfig| crate::step::invalid_hyper_parameter(cfg.validate());
        let ok = RefreshConfig::default();
        assert!(ok.validate().is_ok());
        assert!(RefreshConfig {
            epochs: 1000,
            ..ok.clone()
        }
        .validate()
        .is_ok());
        assert_eq!(
            msg(RefreshConfig {
                epochs: 1001,
                ..ok.clone()
            }),
            "teacher refresh epochs 1001 (at most 1000) / batch_size 128 (at least 1)"
        );
        assert_eq!(
            msg(RefreshConfig {
                batch_size: 0,
                ..ok.clone()
            }),
            "teacher refresh epochs 0 (at most 1000) / batch_size 0 (at least 1)"
        );
        assert_eq!(
            msg(RefreshConfig { lr: 0.0, ..ok.clone() }),
            "teacher refresh lr 0 / w_kd 1 out of range"
        );
        assert_eq!(
            msg(RefreshConfig {
                w_kd: f32::NAN,
                ..ok.clone()
            }),
            "teacher refresh lr 0.0005 / w_kd NaN out of range"
        );
        for bad in [0.0, -0.5, 1.5, f32::NAN] {
            let e = RefreshConfig {
                pseudo_threshold: Some(bad),
                ..ok.clone()
            }
            .validate()
            .unwrap_err()
            .to_string();
            assert!(e.contains("pseudo_threshold"), "{bad}: {e}");
        }
        assert!(RefreshConfig {
            pseudo_threshold: Some(1.0),
            ..ok.clone()
        }
        .validate()
        .is_ok());
        assert_eq!(
            msg(RefreshConfig { w_kd: -0.5, ..ok }),
            "teacher refresh lr 0.0005 / w_kd -0.5 out of range"
        );
    }
}
