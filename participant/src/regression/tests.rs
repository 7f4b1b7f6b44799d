use super::*;

fn card() -> TaskCard {
    TaskCard::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/concrete-plants/task.toml"))
        .expect("the worked example's card")
}

#[test]
fn the_cards_constraints_land_on_the_model_inputs_with_standardized_bounds() {
    let task = RegressionTask::from_card(&card())
        .expect("maps")
        .expect("a regression card");
    // cement is input 0, water 3, age 7; increasing, increasing, decreasing in the card's order.
    assert_eq!(task.constraints.monotone, vec![(0, 1.0), (7, 1.0), (3, -1.0)]);
    let (lo, hi) = (task.constraints.min.expect("min"), task.constraints.max.expect("max"));
    assert!((task.spec.destandardize(lo) - 0.0).abs() < 1e-4, "{lo}");
    assert!((task.spec.destandardize(hi) - 120.0).abs() < 1e-3, "{hi}");
    let mut classes = card();
    classes.regression = None;
    classes.label.classes = vec!["weak".into(), "strong".into()];
    assert!(RegressionTask::from_card(&classes).expect("reads").is_none());
}

#[test]
fn regression_settings_parse_with_defaults_and_refuse_bad_values() {
    let s: RegressionSettings = toml::from_str("loss = \"mse\"\nconstraint_weight = 0.0\n").expect("parses");
    let (teacher, student) = s.configs(7).expect("valid");
    assert_eq!(teacher.loss, RegressionLoss::Mse);
    assert_eq!((teacher.constraint_weight, student.constraint_weight), (0.0, 0.0));
    assert_eq!((teacher.epochs, student.epochs), (150, 20));
    let (_, student) = RegressionSettings::default().configs(7).expect("defaults");
    assert_eq!(student.loss, RegressionLoss::Huber { delta: 1.0 });
    assert_eq!(student.constraint_weight, 1.0);
    for (text, want) in [
        ("loss = \"l1\"", "expected \"mse\" or \"huber\""),
        ("constraint_weight = -1.0", "constraint_weight"),
        ("huber_delta = 0.0", "huber delta"),
        ("epochs_per_round = 0", "epochs"),
        ("constraint_step = 0.0", "step"),
    ] {
        let s: RegressionSettings = toml::from_str(text).expect("parses");
        let e = s.configs(0).expect_err(text).to_string();
        assert!(e.contains(want), "{text}: {e}");
    }
    assert!(
        toml::from_str::<RegressionSettings>("weight = 1.0").is_err(),
        "unknown fields are refused"
    );
}
