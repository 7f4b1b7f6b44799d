//! FedAvg (McMahan et al. 2017), the weight-averaging baseline of `fedistill bench accuracy`: a client's
//! local update (a few epochs of AdamW on its private shard, starting from the global weights) and the
//! server's sample-weighted average of the clients' weights. It uses the same models, the same fused
//! training step and the same optimizer as teacher training, so the comparison with federated
//! distillation changes only what crosses the network.

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

/// Hyper-parameters of one client's local update.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalUpdate {
    /// Passes over the private shard per round (FedAvg's E).
    pub epochs: usize,
    /// Samples per step (FedAvg's B).
    pub batch_size: usize,
    /// AdamW learning rate (a fresh optimizer every round, as clients keep no state between rounds).
    pub lr: f64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Seed of the batch order.
    pub seed: u64,
}

impl Default for LocalUpdate {
    fn default() -> Self {
        LocalUpdate {
            epochs: 2,
            batch_size: 64,
            lr: 1e-3,
            weight_decay: 1e-4,
            seed: 0,
        }
    }
}

impl LocalUpdate {
    /// Checks every field's range.
    pub fn validate(&self) -> Result<()> {
        check_step_ranges(
            self.epochs,
            1..=usize::MAX,
            self.batch_size,
            (self.lr, self.weight_decay),
            || {
                format!(
                    "local update needs epochs >= 1 and batch_size >= 1, got {} and {}",
                    self.epochs, self.batch_size
                )
            },
            || {
                format!(
                    "local update lr {} / weight decay {} out of range",
                    self.lr, self.weight_decay
                )
            },
        )
    }
}

/// Trains `model` in place on `n` labelled samples (raw features; the model's stored input
/// standardization is applied and left unchanged). Returns the mean training loss of the last epoch.
pub fn local_update(model: &Model, x: &[f32], labels: &[u32], n: usize, cfg: &LocalUpdate) -> Result<f32> {
    cfg.validate()?;
    let dim = model.in_dim();
    let classes = model.classes();
    check_features(x, n, dim)?;
    check_labels(labels, n, classes)?;
    if n == 0 {
        return Err(MlError::InvalidInput("local update on an empty shard".into()));
    }
    let xs = model.standardize(x, n)?;
    let vars = model.trainable_vars().into_iter().map(|(_, v)| v).collect();
    let mut opt = FusedAdamW::new(
        vars,
        AdamWParams {
            lr: cfg.lr,
            weight_decay: cfg.weight_decay,
            ..AdamWParams::default()
        },
    )?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0xFEDA_5600);
    let mut order: Vec<usize> = (0..n).collect();
    let mut last = f32::NAN;
    for epoch in 0..cfg.epochs {
        order.shuffle(&mut rng);
        let (mut sum, mut steps) = (0f64, 0usize);
        for (step, batch) in order.chunks(cfg.batch_size).enumerate() {
            let bx = Tensor::from_vec(gather_rows(&xs, dim, batch), (batch.len(), dim), &Device::Cpu)?;
            let spec = LossSpec {
                classes,
                teacher_probs: Vec::new(),
                weights: Vec::new(),
                hard: batch.iter().map(|&i| Some(labels[i])).collect(),
                temperature: 1.0,
                w_kd: 0.0,
                w_ce: 1.0,
            };
            let lv = train_step(model, &bx, &spec, &mut opt)?;
            if !lv.is_finite() {
                return Err(MlError::Diverged { epoch, step, loss: lv });
            }
            sum += f64::from(lv);
            steps += 1;
        }
        last = (sum / steps.max(1) as f64) as f32;
    }
    Ok(last)
}

/// Sets `target`'s trainable weights to the average of `clients`' weights, weighted by the given
/// non-negative weights (FedAvg uses each client's sample count). Every client must have `target`'s
/// architecture; the input standardization of `target` is kept.
pub fn weighted_average(target: &Model, clients: &[(&Model, f64)]) -> Result<()> {
    let total: f64 = clients.iter().map(|(_, w)| *w).sum();
    let negative = clients.iter().any(|(_, w)| w.is_nan() || *w < 0.0);
    if clients.is_empty() || !(total > 0.0 && total.is_finite()) || negative {
        return Err(MlError::InvalidInput(format!(
            "weighted average over {} clients with total weight {total}",
            clients.len()
        )));
    }
    let target_vars = target.trainable_vars();
    let client_vars: Vec<Vec<(String, candle_core::Var)>> = clients.iter().map(|(m, _)| m.trainable_vars()).collect();
    for (i, (name, var)) in target_vars.iter().enumerate() {
        let mut acc = vec![0f64; var.elem_count()];
        for (cv, (_, w)) in client_vars.iter().zip(clients) {
            let Some((cname, cvar)) = cv.get(i) else {
                return Err(MlError::InvalidInput(format!("a client model has no tensor {name}")));
            };
            if cname != name || cvar.dims() != var.dims() {
                return Err(MlError::InvalidInput(format!(
                    "client tensor {cname} {:?} does not match {name} {:?}",
                    cvar.dims(),
                    var.dims()
                )));
            }
            let values = cvar.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            for (a, v) in acc.iter_mut().zip(values) {
                *a += w / total * f64::from(v);
            }
        }
        let avg: Vec<f32> = acc.into_iter().map(|v| v as f32).collect();
        var.set(&Tensor::from_vec(avg, var.dims(), &Device::Cpu)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelConfig;

    fn tiny() -> Model {
        Model::new(&ModelConfig::Mlp { hidden: vec![4] }, 3, 2, 7).unwrap()
    }

    fn weights(m: &Model) -> Vec<Vec<f32>> {
        m.trainable_vars()
            .iter()
            .map(|(_, v)| v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap())
            .collect()
    }

    #[test]
    fn average_is_the_weighted_mean_of_each_weight() {
        let (a, b) = (
            tiny(),
            Model::new(&ModelConfig::Mlp { hidden: vec![4] }, 3, 2, 8).unwrap(),
        );
        let target = tiny();
        weighted_average(&target, &[(&a, 1.0), (&b, 3.0)]).unwrap();
        // Expected value computed here independently, element by element: 0.25 a + 0.75 b.
        for ((t, wa), wb) in weights(&target).iter().zip(weights(&a)).zip(weights(&b)) {
            for ((t, a), b) in t.iter().zip(wa).zip(wb) {
                assert!((t - (0.25 * a + 0.75 * b)).abs() < 1e-6);
            }
        }
        assert_ne!(weights(&a), weights(&b));
    }

    #[test]
    fn average_refuses_no_clients_zero_weight_and_other_architectures() {
        let t = tiny();
        assert!(weighted_average(&t, &[]).is_err());
        assert!(weighted_average(&t, &[(&tiny(), 0.0)]).is_err());
        let other = Model::new(&ModelConfig::Mlp { hidden: vec![5] }, 3, 2, 7).unwrap();
        let err = weighted_average(&t, &[(&other, 1.0)]).unwrap_err().to_string();
        assert!(err.contains("does not match"), "{err}");
    }

    #[test]
    fn local_update_fits_a_separable_problem_and_keeps_normalization() {
        let m = tiny();
        // Class = sign of the first feature.
        let n = 64;
        let x: Vec<f32> = (0..n * 3).map(|i| ((i * 37 % 17) as f32 - 8.0) / 4.0).collect();
        let y: Vec<u32> = (0..n).map(|i| u32::from(x[i * 3] > 0.0)).collect();
        m.fit_input_normalization(&x, n, true).unwrap();
        let before = m.standardize(&x, n).unwrap();
        let cfg = LocalUpdate {
            epochs: 60,
            lr: 1e-2,
            ..LocalUpdate::default()
        };
        let loss = local_update(&m, &x, &y, n, &cfg).unwrap();
        assert!(loss < 0.3, "loss {loss}");
        assert_eq!(m.standardize(&x, n).unwrap(), before);
        let correct = m
            .logits(&x, n)
            .unwrap()
            .chunks_exact(2)
            .zip(&y)
            .filter(|(r, &y)| crate::model::argmax(r) as u32 == y)
            .count();
        assert!(correct >= 60, "{correct}/64");
    }

    #[test]
    fn local_update_refuses_bad_input() {
        let m = tiny();
        let bad = LocalUpdate {
            epochs: 0,
            ..LocalUpdate::default()
        };
        assert!(local_update(&m, &[0.0; 3], &[0], 1, &bad).is_err());
        assert!(local_update(&m, &[0.0; 3], &[5], 1, &LocalUpdate::default()).is_err());
        assert!(local_update(&m, &[0.0; 2], &[0], 1, &LocalUpdate::default()).is_err());
    }

    /// The messages of a bad local update, as `validate` wrote them before the range checks moved to
    /// `step::check_step_ranges` (copied from that code): 0 epochs or batch 0 name the counts, a bad lr or
    /// weight decay the rates.
    #[test]
    fn local_update_rejects_each_bad_range_with_its_message() {
        let msg = |cfg: LocalUpdate| crate::step::invalid_hyper_parameter(cfg.validate());
        let ok = LocalUpdate::default();
        assert!(ok.validate().is_ok());
        assert_eq!(
            msg(LocalUpdate {
                epochs: 0,
                ..ok.clone()
            }),
            "local update needs epochs >= 1 and batch_size >= 1, got 0 and 64"
        );
        assert_eq!(
            msg(LocalUpdate {
                batch_size: 0,
                ..ok.clone()
            }),
            "local update needs epochs >= 1 and batch_size >= 1, got 2 and 0"
        );
        assert_eq!(
            msg(LocalUpdate {
                lr: f64::INFINITY,
                ..ok.clone()
            }),
            "local update lr inf / weight decay 0.0001 out of range"
        );
        assert_eq!(
            msg(LocalUpdate {
                weight_decay: -1.0,
                ..ok
            }),
            "local update lr 0.001 / weight decay -1 out of range"
        );
    }
}
