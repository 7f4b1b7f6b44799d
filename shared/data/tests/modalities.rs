//! Modality blocks on the real Alzheimer's data of data/ad_data.csv.gz (333 patients; CSF proteins, tau,
//! p_tau and Ab_42 as one block, age, sex and APOE genotype as the other): the card drafted from the file
//! gets its blocks, and a hospital's file without the protein assay reads with that block absent.

use std::io::Read;
use std::path::Path;

use fedistill_data::{infer_card, read_private_csv, CsvOptions, InferOptions, Modality, TaskCard};

/// The study's CSV, inflated from data/.
fn ad_csv() -> String {
    let gz = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/ad_data.csv.gz")).expect("data/");
    let mut text = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut text)
        .expect("gzip text");
    text
}

const CLINICAL: [&str; 3] = ["age", "male", "Genotype"];

/// The card drafted from the whole file (as the public set), in the blocks `csf` and `clinical`.
fn ad_card(dir: &Path) -> TaskCard {
    let path = dir.join("ad_data.csv");
    std::fs::write(&path, ad_csv()).expect("write");
    let card = infer_card(&path, "Class", &InferOptions::default()).expect("infer");
    let csf: Vec<String> = card
        .features
        .iter()
        .map(|f| f.name().to_string())
        .filter(|n| !CLINICAL.contains(&n.as_str()))
        .collect();
    card.with_modalities(vec![
        Modality {
            name: "csf".into(),
            features: csf,
        },
        Modality {
            name: "clinical".into(),
            features: CLINICAL.iter().map(|s| s.to_string()).collect(),
        },
    ])
    .expect("valid blocks")
}

/// The file with only the columns `keep` selects (the label always kept).
fn columns(text: &str, keep: impl Fn(&str) -> bool) -> String {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    let idx: Vec<usize> = (0..header.len())
        .filter(|&k| header[k] == "Class" || keep(header[k]))
        .collect();
    let mut out = String::new();
    for line in std::iter::once(header.join(",")).chain(lines.map(str::to_string)) {
        let cells: Vec<&str> = line.split(',').collect();
        out.push_str(&idx.iter().map(|&k| cells[k]).collect::<Vec<_>>().join(","));
        out.push('\n');
    }
    out
}

#[test]
fn a_hospital_without_the_protein_assay_reads_with_the_csf_block_absent() {
    let dir = tempfile::tempdir().expect("tmp");
    let card = ad_card(dir.path());
    let ranges = card.modality_ranges();
    // 124 proteins + tau, p_tau, Ab_42; age, male and six APOE genotypes; two presence inputs.
    assert_eq!(
        ranges.iter().map(|r| (r.name.as_str(), r.width())).collect::<Vec<_>>(),
        [("csf", 127), ("clinical", 8)]
    );
    assert_eq!(card.input_dim(), 137);
    let whole = dir.path().join("whole.csv");
    std::fs::write(&whole, ad_csv()).expect("write");
    let (all, report) = read_private_csv(&whole, &card, &CsvOptions::default()).expect("every column");
    assert_eq!((all.n, all.dim), (333, 137));
    assert_eq!(card.classes(), ["Control", "Impaired"]);
    assert_eq!(all.class_counts(), [242, 91]);
    assert!(report.absent_modalities.is_empty());
    let no_csf = dir.path().join("hospital-c.csv");
    std::fs::write(&no_csf, columns(&ad_csv(), |c| CLINICAL.contains(&c))).expect("write");
    let (c, report) = read_private_csv(&no_csf, &card, &CsvOptions::default()).expect("csf absent");
    assert_eq!(report.absent_modalities, ["csf"]);
    for (row, full) in c.features.chunks_exact(137).zip(all.features.chunks_exact(137)) {
        assert!(row[ranges[0].inputs.clone()].iter().all(|&v| v == 0.0));
        assert_eq!(row[ranges[1].inputs.clone()], full[ranges[1].inputs.clone()]);
        assert_eq!((row[ranges[0].indicator], row[ranges[1].indicator]), (0.0, 1.0));
        assert_eq!((full[ranges[0].indicator], full[ranges[1].indicator]), (1.0, 1.0));
    }
    assert_eq!(c.labels, all.labels);
    // Part of the assay (tau and p_tau without the proteins) is refused, naming what is missing.
    let partial = dir.path().join("partial.csv");
    std::fs::write(
        &partial,
        columns(&ad_csv(), |c| CLINICAL.contains(&c) || c == "tau" || c == "p_tau"),
    )
    .expect("write");
    let err = read_private_csv(&partial, &card, &CsvOptions::default())
        .expect_err("part of a block")
        .to_string();
    assert!(
        err.contains("`Ab_42`") && err.contains("modality `csf` has 2 of its 127 columns"),
        "{err}"
    );
}
