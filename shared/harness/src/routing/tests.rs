//! Unit tests of `fedistill bench routing`: option checks, stable names, statistics and the task split.

use super::*;

fn opts() -> RoutingOptions {
    RoutingOptions {
        top_k: 1,
        ..RoutingOptions::default()
    }
}

fn err(o: RoutingOptions) -> String {
    match plan(&o) {
        Ok(p) => panic!("expected an error, got {p:?}"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn defaults_and_quick_plan() {
    let p = plan(&opts()).expect("defaults");
    assert_eq!(p.seeds, vec![1, 2, 3]);
    assert_eq!(p.sequences, vec![Sequence::SplitMnist, Sequence::MnistFashion]);
    assert_eq!((p.replay, p.epochs, p.caps), (REPLAY, EPOCHS, None));
    assert_eq!((p.experts(), p.expert_hidden()), ((1, 2), 64));
    let q = plan(&RoutingOptions {
        quick: true,
        top_k: 2,
        ..opts()
    })
    .expect("quick");
    assert_eq!(
        (q.seeds.clone(), q.sequences.clone()),
        (vec![1], vec![Sequence::SplitMnist])
    );
    assert_eq!((q.experts(), q.expert_hidden()), ((2, 3), 42));
    assert!(q.caps.is_some());
    let named = plan(&RoutingOptions {
        sequences: vec!["mnist-fashion".into()],
        seeds: vec![7],
        replay: Some(5),
        epochs: Some(2),
        ..opts()
    })
    .expect("named");
    assert_eq!(
        (named.sequences, named.seeds, named.replay, named.epochs),
        (vec![Sequence::MnistFashion], vec![7], 5, 2)
    );
}

/// Each bad flag is refused with a message naming it.
#[test]
fn bad_options_are_named() {
    for k in [0, 3] {
        assert!(err(RoutingOptions { top_k: k, ..opts() }).contains("--top-k must be 1 or 2"));
    }
    let e = err(RoutingOptions {
        seeds: vec![1, 2, 1],
        ..opts()
    });
    assert!(e.contains("seed 1 is given twice"), "{e}");
    let e = err(RoutingOptions {
        sequences: vec!["cifar".into()],
        ..opts()
    });
    assert!(
        e.contains("unknown sequence \"cifar\"") && e.contains("split-mnist"),
        "{e}"
    );
    let e = err(RoutingOptions {
        sequences: vec!["split-mnist".into(), "split-mnist".into()],
        ..opts()
    });
    assert!(e.contains("split-mnist is given twice"), "{e}");
    assert!(err(RoutingOptions {
        replay: Some(0),
        ..opts()
    })
    .contains("--replay"));
    for e in [0, 1001] {
        assert!(err(RoutingOptions {
            epochs: Some(e),
            ..opts()
        })
        .contains("--epochs"));
    }
}

#[test]
fn stats_and_stable_names() {
    let s = Stat::of(&[0.5, 0.7]);
    assert!((s.mean - 0.6).abs() < 1e-12 && (s.sd - 0.141_421_356).abs() < 1e-6);
    assert_eq!(Stat::of(&[0.3]).sd, 0.0);
    assert_eq!(s.pct(2), "60.0 ± 14.1");
    for m in Method::ALL {
        assert_eq!(serde_json::to_value(m).expect("json"), m.name());
    }
    for q in Sequence::ALL {
        assert_eq!(serde_json::to_value(q).expect("json"), q.name());
        assert_eq!(Sequence::parse(q.name()).expect("parse"), q);
    }
}

/// The split keeps every class's share and the tasks of split-MNIST hold only their digits.
#[test]
fn split_mnist_tasks_hold_their_digits() {
    let mnist = load("mnist-10k", &LoadOptions::default()).expect("embedded");
    let p = plan(&RoutingOptions { quick: true, ..opts() }).expect("plan");
    let [a, b] = tasks(Sequence::SplitMnist, 1, &p, &mnist, None).expect("tasks");
    assert!(a.train.labels.iter().chain(&a.test.labels).all(|&y| y < 5));
    assert!(b.train.labels.iter().chain(&b.test.labels).all(|&y| y >= 5));
    assert_eq!((a.train.n, a.test.n), (QUICK_TRAIN, QUICK_TEST));
    // Every digit of the task is present in its capped test set.
    assert!(a.test.class_counts()[..5].iter().all(|&c| c > 0));
    let full = Plan { caps: None, ..p };
    let [a, b] = tasks(Sequence::SplitMnist, 2, &full, &mnist, None).expect("tasks");
    assert_eq!(a.train.n + a.test.n + b.train.n + b.test.n, mnist.n);
    assert!(tasks(Sequence::MnistFashion, 1, &full, &mnist, None).is_err());
}
