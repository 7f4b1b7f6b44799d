//! Unit tests of the mixture-of-experts student: routing, the balancing loss, growth, training, config checks.

use super::*;
use crate::distill::{InputNorm, SoftTargets};
use crate::loss::LossSpec;
use crate::optim::{AdamWParams, FusedAdamW};
use crate::progress::Progress;

fn cfg(experts: usize, top_k: usize) -> MoeConfig {
    MoeConfig {
        experts,
        hidden: 6,
        top_k,
        balance_weight: 0.01,
        freeze_old: true,
    }
}

/// `n` samples of 5 features, deterministic and varied.
fn inputs(n: usize) -> Vec<f32> {
    (0..n * 5)
        .map(|i| ((i * 7919 % 101) as f32 / 101.0) * 4.0 - 2.0)
        .collect()
}

fn tensor(v: Vec<f32>, rows: usize, cols: usize) -> Tensor {
    Tensor::from_vec(v, (rows, cols), &Device::Cpu).expect("shape matches by construction")
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("f32 tensor")
}

fn var_values(s: &MoeStudent, name: &str) -> Vec<f32> {
    let data = s.varmap().data().lock().expect("lock");
    values(data.get(name).expect("tensor exists").as_tensor())
}

/// Top-1: every sample has exactly one non-zero expert weight, equal to its largest gate probability, and
/// the logits are that expert's logits times the weight.
#[test]
fn top1_routes_each_sample_to_exactly_one_expert() -> Result<()> {
    let s = MoeStudent::new(&cfg(3, 1), 5, 4, 7)?;
    let n = 40;
    let x = tensor(inputs(n), n, 5);
    let out = s.forward_standardized(&x)?;
    let (w, p, logits) = (values(&out.weights), values(&out.probs), values(&out.logits));
    let experts: Vec<Vec<f32>> = s.experts.iter().map(|e| values(&e.forward(&x).expect("fwd"))).collect();
    let mut used = [false; 3];
    for i in 0..n {
        let row = &w[i * 3..(i + 1) * 3];
        let nonzero: Vec<usize> = (0..3).filter(|&k| row[k] != 0.0).collect();
        assert_eq!(nonzero.len(), 1, "sample {i}: weights {row:?}");
        let k = nonzero[0];
        used[k] = true;
        let prow = &p[i * 3..(i + 1) * 3];
        assert_eq!(k, crate::model::argmax(prow));
        assert!((row[k] - prow[k]).abs() < 1e-6);
        for c in 0..4 {
            let want = prow[k] * experts[k][i * 4 + c];
            assert!(
                (logits[i * 4 + c] - want).abs() < 1e-5,
                "{} vs {want}",
                logits[i * 4 + c]
            );
        }
    }
    // The random gate spreads these inputs over more than one expert, so the check above saw real routing.
    assert!(used.iter().filter(|&&u| u).count() >= 2, "{used:?}");
    assert_eq!(s.assignments(&inputs(n), n)?.len(), n);
    Ok(())
}

/// Top-2: exactly two experts per sample, weights renormalised to sum to 1.
#[test]
fn top2_weights_two_experts_renormalised() -> Result<()> {
    let s = MoeStudent::new(&cfg(3, 2), 5, 4, 8)?;
    let (_, w) = s.logits_and_routing(&inputs(20), 20)?;
    for row in w.chunks_exact(3) {
        assert_eq!(row.iter().filter(|&&v| v > 0.0).count(), 2, "{row:?}");
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{row:?}");
    }
    Ok(())
}

/// E * sum f_i P_i: 1 for balanced routing with uniform mean probabilities, E * P_i when collapsed.
#[test]
fn balancing_loss_is_one_when_balanced_and_larger_when_collapsed() -> Result<()> {
    let loss = |v: Vec<f32>, n, e| -> Result<f32> { Ok(load_balancing_loss(&tensor(v, n, e))?.to_scalar::<f32>()?) };
    // Two experts, each the first choice of half the batch, mean probabilities (0.5, 0.5).
    let balanced = loss(vec![0.6, 0.4, 0.4, 0.6, 0.7, 0.3, 0.3, 0.7], 4, 2)?;
    assert!((balanced - 1.0).abs() < 1e-6, "{balanced}");
    // Four experts, uniform probabilities.
    let uniform = loss(vec![0.25; 16], 4, 4)?;
    assert!((uniform - 1.0).abs() < 1e-6, "{uniform}");
    // Collapsed on expert 0 with mean probability 0.9: 2 * 0.9.
    let collapsed = loss(vec![0.9, 0.1, 0.95, 0.05, 0.85, 0.15, 0.9, 0.1], 4, 2)?;
    assert!((collapsed - 1.8).abs() < 1e-5, "{collapsed}");
    assert!(collapsed > balanced);
    // Its gradient pushes the over-used expert's probability down.
    let p = Var::from_tensor(&tensor(vec![0.9, 0.1, 0.8, 0.2], 2, 2))?;
    let g = load_balancing_loss(p.as_tensor())?.backward()?;
    let gp = values(g.get(p.as_tensor()).expect("gradient"));
    assert!(gp[0] > 0.0 && gp[1] == 0.0, "{gp:?}");
    assert!(matches!(
        load_balancing_loss(&Tensor::zeros((0, 2), DType::F32, &Device::Cpu)?),
        Err(MlError::InvalidInput(_))
    ));
    Ok(())
}

/// `add_expert` adds one expert's parameters plus a gate row, keeps every old weight, freezes the old experts
/// and leaves the gate trainable.
#[test]
fn add_expert_grows_the_student_and_keeps_the_old_weights() -> Result<()> {
    let c = cfg(1, 1);
    let mut s = MoeStudent::new(&c, 5, 4, 9)?;
    let before = s.params();
    assert_eq!(before, c.expert_params(5, 4) + 5 + 1);
    let names = [
        "experts.0.layers.0.weight",
        "experts.0.layers.0.bias",
        "experts.0.layers.1.weight",
        "experts.0.layers.1.bias",
    ];
    let old: Vec<Vec<f32>> = names.iter().map(|n| var_values(&s, n)).collect();
    let old_gate = (var_values(&s, "gate.weight"), var_values(&s, "gate.bias"));
    assert_eq!(s.add_expert()?, 1);
    assert_eq!(s.experts(), 2);
    assert_eq!(s.params(), before + c.expert_params(5, 4) + 5 + 1);
    for (n, v) in names.iter().zip(&old) {
        assert_eq!(&var_values(&s, n), v, "{n} changed");
    }
    let gate = (var_values(&s, "gate.weight"), var_values(&s, "gate.bias"));
    assert_eq!(gate.0.len(), 10);
    assert_eq!(&gate.0[..5], &old_gate.0[..]);
    assert_eq!(gate.1[0], old_gate.1[0]);
    assert!(s.is_frozen(0) && !s.is_frozen(1));
    let trainable: Vec<String> = s.trainable_vars().into_iter().map(|(n, _)| n).collect();
    assert!(trainable.iter().all(|n| !n.starts_with("experts.0.")), "{trainable:?}");
    assert!(trainable.contains(&"gate.weight".to_string()));
    assert_eq!(s.trainable_params(), c.expert_params(5, 4) + 2 * 6);
    // The forward pass uses the new gate: two routing weights per sample.
    assert_eq!(s.logits_and_routing(&inputs(3), 3)?.1.len(), 6);
    // Without freeze_old the old expert keeps training.
    let mut t = MoeStudent::new(&MoeConfig { freeze_old: false, ..c }, 5, 4, 9)?;
    t.add_expert()?;
    assert!(!t.is_frozen(0));
    Ok(())
}

/// Training steps lower the KD loss towards a fixed teacher (top-1 and top-2); after `add_expert` the frozen
/// experts' weights do not move while the new one's do.
#[test]
fn training_steps_lower_the_loss_and_leave_frozen_experts_alone() -> Result<()> {
    let n = 32;
    let x = tensor(inputs(n), n, 5);
    // A fixed random MLP is the teacher: its logits are a smooth function of the input, so they can be fitted.
    let teacher = crate::model::Model::new(&crate::model::ModelConfig::Mlp { hidden: vec![8] }, 5, 4, 99)?;
    let teacher_logits: Vec<f32> = teacher.logits(&inputs(n), n)?.iter().map(|v| v * 3.0).collect();
    let spec = LossSpec {
        classes: 4,
        teacher_probs: crate::model::softmax_rows(&teacher_logits, 4, 2.0),
        weights: Vec::new(),
        hard: Vec::new(),
        temperature: 2.0,
        w_kd: 1.0,
        w_ce: 0.0,
    };
    let optimizer = |s: &MoeStudent| -> Result<FusedAdamW> {
        let vars = s.trainable_vars().into_iter().map(|(_, v)| v).collect();
        let params = AdamWParams {
            lr: 0.01,
            ..AdamWParams::default()
        };
        FusedAdamW::new(vars, params)
    };
    for top_k in [1, 2] {
        let mut s = MoeStudent::new(&cfg(2, top_k), 5, 4, 11)?;
        let mut opt = optimizer(&s)?;
        let gate_before = var_values(&s, "gate.weight");
        let first = train_step(&s, &x, &spec, None, &mut opt)?;
        // The gate learns from the task loss (weight decay alone would scale every weight by the same factor).
        let gate_after = var_values(&s, "gate.weight");
        let ratios: Vec<f32> = gate_after.iter().zip(&gate_before).map(|(a, b)| a / b).collect();
        assert!(
            ratios.iter().any(|r| (r - ratios[0]).abs() > 1e-4),
            "top-{top_k}: the gate got no gradient"
        );
        let mut last = first;
        for _ in 0..60 {
            last = train_step(&s, &x, &spec, None, &mut opt)?;
        }
        assert!(first.total.is_finite() && first.balance >= 1.0 - 1e-6);
        assert!(last.kd < 0.3 * first.kd, "top-{top_k}: {first:?} -> {last:?}");

        s.add_expert()?;
        let names = [
            "experts.0.layers.0.weight",
            "experts.1.layers.1.bias",
            "experts.2.layers.0.weight",
        ];
        let before: Vec<Vec<f32>> = names.iter().map(|n| var_values(&s, n)).collect();
        let mut opt = optimizer(&s)?;
        for _ in 0..3 {
            train_step(&s, &x, &spec, None, &mut opt)?;
        }
        assert_eq!(
            var_values(&s, names[0]),
            before[0],
            "top-{top_k}: frozen expert 0 moved"
        );
        assert_eq!(
            var_values(&s, names[1]),
            before[1],
            "top-{top_k}: frozen expert 1 moved"
        );
        // The new expert trains whenever a sample is routed to it; with top-2 over three experts at least
        // some are, with top-1 only if the gate picks it, so the check is for top-2.
        if top_k == 2 {
            assert_ne!(var_values(&s, names[2]), before[2], "the new expert did not train");
        }
    }
    Ok(())
}

/// The continual loop: task 2 replays task 1's samples, grows the student, and reports what it did.
#[test]
fn continual_learning_replays_the_first_task() -> Result<()> {
    let s = MoeStudent::new(&cfg(1, 1), 5, 4, 3)?;
    let dc = MoeDistillConfig {
        epochs: 2,
        batch_size: 8,
        replay_capacity: 10,
        seed: 5,
        ..MoeDistillConfig::default()
    };
    let mut m = ContinualMoe::new(s, dc)?;
    let x = inputs(24);
    let t1 = SoftTargets::Logits((0..96).map(|i| (i % 4) as f32).collect());
    let a = m.learn_task(&x, 24, &t1, &Progress::hidden())?;
    assert_eq!(
        (a.task, a.replayed, a.experts, a.task_experts.clone()),
        (0, 0, 1, vec![0])
    );
    assert_eq!(m.replays().len(), 1);
    assert_eq!(m.replays()[0].len(), 10);
    m.add_expert()?;
    let b = m.learn_task(&x[..40], 8, &t1, &Progress::hidden());
    // Soft labels of the wrong size are refused before anything trains.
    assert!(matches!(b, Err(MlError::InvalidInput(_))), "{b:?}");
    let t2 = SoftTargets::Logits((0..32).map(|i| (i % 3) as f32).collect());
    let b = m.learn_task(&x[..40], 8, &t2, &Progress::hidden())?;
    assert_eq!((b.task, b.samples, b.replayed, b.experts), (1, 8, 10, 2));
    assert_eq!(b.task_experts, vec![1]);
    assert_eq!(m.task_experts(), &[vec![0], vec![1]]);
    assert!(b.final_loss.kd.is_finite());
    assert_eq!(m.tasks_done(), 2);
    // The capacity is now shared by the two tasks' reservoirs.
    assert_eq!(m.replays().iter().map(|r| r.len()).collect::<Vec<_>>(), vec![5, 5]);
    // A third task without a new expert shares the second task's expert.
    let c = m.learn_task(&x[..40], 8, &t2, &Progress::hidden())?;
    assert_eq!((c.task_experts, c.replayed), (vec![1], 10));
    let bad = m.learn_task(
        &[f32::NAN; 5],
        1,
        &SoftTargets::Logits(vec![0.0; 4]),
        &Progress::hidden(),
    );
    assert!(matches!(bad, Err(MlError::InvalidInput(_))), "{bad:?}");
    Ok(())
}

/// With the routing term, the gate learns to send each task's inputs to that task's expert: two tasks on
/// inputs the gate can tell apart (opposite signs of the first feature), top-1.
#[test]
fn routing_term_teaches_the_gate_each_task_expert() -> Result<()> {
    let n = 64;
    let task_inputs = |sign: f32| -> Vec<f32> {
        let mut x = inputs(n);
        for row in x.chunks_exact_mut(5) {
            row[0] = sign * (1.0 + row[0].abs());
        }
        x
    };
    let (x1, x2) = (task_inputs(1.0), task_inputs(-1.0));
    let targets =
        |shift: usize| SoftTargets::Logits((0..n * 4).map(|i| if i % 4 == shift { 3.0 } else { 0.0 }).collect());
    let share_on = |m: &ContinualMoe, x: &[f32], expert: usize| -> Result<f64> {
        let a = m.student().assignments(x, n)?;
        Ok(a.iter().filter(|&&e| e == expert).count() as f64 / n as f64)
    };
    let mut shares = Vec::new();
    for route_weight in [0.0, 1.0] {
        let dc = MoeDistillConfig {
            epochs: 30,
            batch_size: 16,
            lr: 0.01,
            replay_capacity: n,
            route_weight,
            seed: 2,
            input_norm: InputNorm::Keep,
            ..MoeDistillConfig::default()
        };
        let mut m = ContinualMoe::new(MoeStudent::new(&cfg(1, 1), 5, 4, 4)?, dc)?;
        m.learn_task(&x1, n, &targets(0), &Progress::hidden())?;
        m.add_expert()?;
        let stats = m.learn_task(&x2, n, &targets(1), &Progress::hidden())?;
        shares.push((share_on(&m, &x1, 0)?, share_on(&m, &x2, 1)?, stats.final_loss.route));
    }
    let (off, on) = (shares[0], shares[1]);
    assert!(on.0 > 0.95 && on.1 > 0.95, "with the routing term: {on:?}");
    assert!(on.2 < 0.2, "routing loss {on:?}");
    assert_eq!(off.2, 0.0, "no routing term when its weight is 0");
    Ok(())
}

fn config_error(c: MoeConfig) -> String {
    match c.validate() {
        Err(MlError::InvalidConfig(m)) => m,
        other => panic!("expected InvalidConfig for {c:?}, got {other:?}"),
    }
}

#[test]
fn config_validation_names_the_bad_field() {
    assert!(cfg(2, 2).validate().is_ok());
    assert!(MoeConfig::default().validate().is_ok());
    assert!(config_error(cfg(2, 3)).contains("top_k must be 1 or 2"));
    assert!(config_error(cfg(2, 0)).contains("top_k must be 1 or 2"));
    assert!(config_error(cfg(1, 2)).contains("top_k 2 is more than the 1 expert"));
    assert!(config_error(cfg(0, 1)).contains("experts 0"));
    assert!(config_error(cfg(65, 1)).contains("experts 65"));
    assert!(config_error(MoeConfig { hidden: 0, ..cfg(1, 1) }).contains("hidden width 0"));
    for w in [-0.1, f32::NAN, f32::INFINITY] {
        let m = config_error(MoeConfig {
            balance_weight: w,
            ..cfg(1, 1)
        });
        assert!(m.contains("balance_weight"), "{m}");
    }
    // The constructor refuses the same configs and bad dimensions before allocating.
    assert!(matches!(
        MoeStudent::new(&cfg(1, 2), 5, 4, 0),
        Err(MlError::InvalidConfig(_))
    ));
    assert!(matches!(
        MoeStudent::new(&cfg(1, 1), 0, 4, 0),
        Err(MlError::InvalidConfig(_))
    ));
    assert!(matches!(
        MoeStudent::new(&cfg(1, 1), 5, 1, 0),
        Err(MlError::InvalidConfig(_))
    ));
}

#[test]
fn distill_config_validation_names_the_bad_field() -> Result<()> {
    let bad = |c: MoeDistillConfig| match c.validate() {
        Err(MlError::InvalidHyperParameter(m)) => m,
        other => panic!("expected InvalidHyperParameter, got {other:?}"),
    };
    let d = MoeDistillConfig::default();
    assert!(d.validate().is_ok());
    assert!(bad(MoeDistillConfig { epochs: 0, ..d.clone() }).contains("epochs 0"));
    assert!(bad(MoeDistillConfig {
        batch_size: 0,
        ..d.clone()
    })
    .contains("batch_size 0"));
    assert!(bad(MoeDistillConfig {
        lr: f64::NAN,
        ..d.clone()
    })
    .contains("lr"));
    assert!(bad(MoeDistillConfig {
        weight_decay: -1.0,
        ..d.clone()
    })
    .contains("weight_decay"));
    assert!(bad(MoeDistillConfig {
        route_weight: f32::NAN,
        ..d.clone()
    })
    .contains("route_weight"));
    assert!(bad(MoeDistillConfig {
        temperature: 0.0,
        ..d.clone()
    })
    .contains("temperature"));
    // ContinualMoe refuses a bad config at construction.
    let s = MoeStudent::new(&cfg(1, 1), 5, 4, 0)?;
    assert!(ContinualMoe::new(s, MoeDistillConfig { epochs: 0, ..d }).is_err());
    Ok(())
}

/// The same seed gives the same weights; another seed different ones (as for `Model::new`).
#[test]
fn construction_is_seeded() -> Result<()> {
    let a = MoeStudent::new(&cfg(2, 1), 5, 4, 1)?;
    let b = MoeStudent::new(&cfg(2, 1), 5, 4, 1)?;
    let c = MoeStudent::new(&cfg(2, 1), 5, 4, 2)?;
    let x = inputs(4);
    assert_eq!(a.logits(&x, 4)?, b.logits(&x, 4)?);
    assert_ne!(a.logits(&x, 4)?, c.logits(&x, 4)?);
    Ok(())
}
