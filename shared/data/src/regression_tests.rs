//! Regression tasks (`[regression]`): the card's checks and the reader's targets, bounds and bad cells.

use crate::private::tests::file;
use crate::{read_private_csv, CsvOptions, DataError, MonotoneDirection, TaskCard};

/// A two-feature strength card: `cement` (numeric), `mix` (categorical), target `strength` in [0, 100].
fn card_text() -> String {
    format!(
        r#"
name = "strength"
version = 1

[label]
column = "strength"

[[features]]
name = "cement"
kind = "numeric"

[[features]]
name = "mix"
kind = "categorical"
levels = ["a", "b"]

[[features]]
name = "water"
kind = "numeric"

[preprocessing]
impute = "mean"
scale = "standard"

[[preprocessing.stats]]
name = "cement"
fill = 300.0
mean = 300.0
std = 100.0

[[preprocessing.stats]]
name = "mix"
fill_level = "a"

[[preprocessing.stats]]
name = "water"
fill = 180.0
mean = 180.0
std = 20.0

[public]
sha256 = "{}"
rows = 3
format = "csv"

[regression]
mean = 35.0
std = 15.0
min = 0.0
max = 100.0

[[regression.monotone]]
feature = "cement"
direction = "increasing"

[[regression.monotone]]
feature = "water"
direction = "decreasing"
"#,
        "a".repeat(64)
    )
}

fn card() -> TaskCard {
    TaskCard::from_toml_str(&card_text(), "card.toml").expect("valid regression card")
}

/// The card error's field and problem.
fn refused(edit: impl Fn(String) -> String) -> (String, String) {
    match TaskCard::from_toml_str(&edit(card_text()), "card.toml") {
        Err(DataError::Card { field, problem, .. }) => (field, problem),
        other => panic!("expected a card error, got {other:?}"),
    }
}

#[test]
fn a_regression_card_has_one_output_named_after_its_target_and_round_trips() {
    let c = card();
    assert!(c.is_regression());
    assert_eq!(c.classes(), ["strength"]);
    let r = c.regression.as_ref().expect("regression");
    assert_eq!(r.monotone[1].direction, MonotoneDirection::Decreasing);
    assert_eq!(r.standardize(50.0), 1.0);
    assert_eq!(r.destandardize(-1.0), 20.0);
    // Model inputs: cement 0, mix one-hot 1..3, water 3.
    assert_eq!(c.numeric_input("cement"), Some(0));
    assert_eq!(c.numeric_input("water"), Some(3));
    assert_eq!(c.numeric_input("mix"), None);
    let again = TaskCard::from_toml_str(&c.to_toml_string(), "again.toml").expect("canonical text reads back");
    assert_eq!(again, c);
    assert_eq!(again.digest(), c.digest());
    assert!(!c.to_toml_string().contains("classes"), "{}", c.to_toml_string());
}

#[test]
fn contradictory_regression_cards_name_the_field() {
    type Edit = Box<dyn Fn(String) -> String>;
    let cases: Vec<(Edit, &str, &str)> = vec![
        (
            Box::new(|c| c.replace("feature = \"cement\"", "feature = \"slag\"")),
            "regression.monotone[0].feature",
            "`slag` is not a feature of the card",
        ),
        (
            Box::new(|c| c.replace("feature = \"cement\"", "feature = \"mix\"")),
            "regression.monotone[0].feature",
            "`mix` is categorical",
        ),
        (
            Box::new(|c| c.replace("feature = \"water\"", "feature = \"cement\"")),
            "regression.monotone[1].feature",
            "constrained twice",
        ),
        (
            Box::new(|c| c.replace("std = 15.0", "std = 0.0")),
            "regression.std",
            "not a finite number > 0",
        ),
        (
            Box::new(|c| c.replace("max = 100.0", "max = -1.0")),
            "regression.max",
            "not above min",
        ),
        (
            Box::new(|c| {
                c.replace(
                    "column = \"strength\"",
                    "column = \"strength\"\nclasses = [\"lo\", \"hi\"]",
                )
            }),
            "label.classes",
            "declares no classes",
        ),
    ];
    for (edit, field, problem) in cases {
        let (f, p) = refused(edit);
        assert_eq!(f, field, "{p}");
        assert!(p.contains(problem), "{field}: {p}");
    }
    // A classification card still needs two classes: [regression] is what allows none.
    let (f, _) = refused(|c| c.split("[regression]").next().unwrap_or_default().to_string());
    assert_eq!(f, "label.classes");
    // Unknown fields in the section are refused by name.
    let err = TaskCard::from_toml_str(&card_text().replace("min = 0.0", "minimum = 0.0"), "card.toml")
        .expect_err("unknown field");
    assert!(err.to_string().contains("minimum"), "{err}");
}

#[test]
fn targets_are_read_as_numbers_in_the_files_order() {
    let (_d, p) = file(
        "plant.csv",
        b"water,strength,mix,cement\n170,40.5,a,310\n200,12,b,\n190,\"77.25\",a,280\n",
    );
    let (ds, report) = read_private_csv(&p, &card(), &CsvOptions::default()).expect("reads");
    assert!(ds.is_regression());
    assert_eq!((ds.n, ds.dim, ds.num_classes), (3, 4, 1));
    assert_eq!(ds.targets, vec![40.5, 12.0, 77.25]);
    assert_eq!(ds.labels, vec![0, 0, 0]);
    assert_eq!(report.class_counts, vec![3]);
    // cement imputed with the card's fill (300 -> 0 once standardized), water scaled by the card.
    assert_eq!(ds.row(1), &[0.0, 0.0, 1.0, 1.0]);
    // A subset keeps the targets beside their rows.
    assert_eq!(ds.subset(&[2, 0]).targets, vec![77.25, 40.5]);
}

#[test]
fn bad_targets_are_refused_with_file_line_and_column() {
    let read = |rows: &str| {
        let text = format!("cement,mix,water,strength\n{rows}");
        let (_d, p) = file("plant.csv", text.as_bytes());
        read_private_csv(&p, &card(), &CsvOptions::default())
            .expect_err("refused")
            .to_string()
    };
    let e = read("300,a,180,40\n300,a,180,strong\n");
    assert!(
        e.contains(":3:strength:") && e.contains("`strong` is not a number"),
        "{e}"
    );
    let e = read("300,a,180,\n");
    assert!(e.contains(":2:strength:") && e.contains("target is missing"), "{e}");
    // Bounds the data already violates are reported, not clipped.
    let e = read("300,a,180,40\n300,a,180,130.5\n");
    assert!(
        e.contains(":3:strength:") && e.contains("130.5 is outside the card's bounds [0, 100]"),
        "{e}"
    );
    let e = read("300,a,180,-2\n");
    assert!(
        e.contains("out-of-bounds") || e.contains("outside the card's bounds"),
        "{e}"
    );
    let e = read("300,a,180,inf\n");
    assert!(e.contains("not a finite number"), "{e}");
}

#[test]
fn datasets_refuse_targets_that_do_not_fit_their_rows() {
    let ds = crate::Dataset::new(
        "x",
        vec![0.0; 4],
        vec![0, 0],
        2,
        crate::DataKind::Tabular,
        vec!["y".into()],
    )
    .expect("two rows");
    assert!(ds.clone().with_targets("y", vec![1.0]).is_err());
    assert!(ds.clone().with_targets("y", vec![1.0, f32::NAN]).is_err());
    let ok = ds.with_targets("y", vec![1.0, 2.0]).expect("fits");
    assert_eq!(ok.class_names, vec!["y".to_string()]);
}
