//! A participant on a task card with modality blocks, through the own-file path: a hospital without the
//! protein assay (its file lacks every CSF column of data/ad_data.csv.gz) reads its rows with that block
//! absent, gets the fused teacher and student of the card's blocks by default, trains, labels public rows
//! without that block (its soft labels do not change whatever the public set holds in it) and distills,
//! quantizes and exports a round.

use std::collections::BTreeMap;
use std::path::Path;

use fedistill_shared::crypto::RoundId;
use fedistill_shared::data::{
    infer_card, maybe_gunzip, read_file, Feature, InferOptions, Modality, TaskCard, UnknownLevel,
};
use fedistill_shared::ml::{Model, ModelConfig};
use fedistill_shared::protocol::AggregationRule;

use fedistill_participant::config::{DataSource, ParticipantSettings};
use fedistill_participant::learner::ModelLearner;
use fedistill_participant::Learner;

const CLINICAL: [&str; 3] = ["age", "male", "Genotype"];

/// The study's lines (header first).
fn study() -> Vec<String> {
    let gz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/ad_data.csv.gz");
    let bytes = read_file(&gz).expect("data/ad_data.csv.gz");
    let text = String::from_utf8(maybe_gunzip(&bytes, "ad_data.csv.gz").expect("gzip").into_owned()).expect("utf8");
    text.lines().map(str::to_string).collect()
}

/// `lines` (header first) with only the columns `keep` selects, as CSV text.
fn columns(lines: &[String], keep: impl Fn(&str) -> bool) -> String {
    let header: Vec<&str> = lines[0].split(',').collect();
    let idx: Vec<usize> = (0..header.len()).filter(|&k| keep(header[k])).collect();
    let mut out = String::new();
    for line in lines {
        let cells: Vec<&str> = line.split(',').collect();
        out.push_str(&idx.iter().map(|&k| cells[k]).collect::<Vec<_>>().join(","));
        out.push('\n');
    }
    out
}

#[test]
fn a_hospital_without_the_protein_assay_takes_part_with_fused_models() {
    let dir = tempfile::tempdir().expect("tmp");
    let lines = study();
    // The public set: the first 100 patients, every column. The hospital: the other 233, no CSF column.
    let public = dir.path().join("public.csv");
    std::fs::write(&public, format!("{}\n", lines[..101].join("\n"))).expect("write");
    let mut card = infer_card(&public, "Class", &InferOptions::default()).expect("infer");
    // Two patients of the study carry APOE E2E2, none of them in the public set: a genotype the public set
    // lacks goes to `<other>` rather than refusing the hospital's file.
    for f in &mut card.features {
        if let Feature::Categorical { name, unknown, .. } = f {
            if name == "Genotype" {
                *unknown = UnknownLevel::Other;
            }
        }
    }
    let csf = card
        .features
        .iter()
        .map(|f| f.name().to_string())
        .filter(|n| !CLINICAL.contains(&n.as_str()))
        .collect();
    let card: TaskCard = card
        .with_modalities(vec![
            Modality {
                name: "csf".into(),
                features: csf,
            },
            Modality {
                name: "clinical".into(),
                features: CLINICAL.iter().map(|s| s.to_string()).collect(),
            },
        ])
        .expect("blocks");
    std::fs::write(dir.path().join("task.toml"), card.to_toml_string()).expect("write");
    let mut hospital = vec![lines[0].clone()];
    hospital.extend_from_slice(&lines[101..]);
    let no_csf = columns(&hospital, |c| c == "Class" || CLINICAL.contains(&c));
    std::fs::write(dir.path().join("hospital-c.csv"), no_csf).expect("write");
    let settings = ParticipantSettings::parse(
        "kit = \"kit\"\nworkdir = \"work\"\n[task]\ncard = \"task.toml\"\n[private]\npath = \"hospital-c.csv\"\n\
         holdout = 0.25\nseed = 3\n[public]\npath = \"public.csv\"\n",
        dir.path(),
    )
    .expect("settings");
    std::fs::create_dir_all(&settings.workdir).expect("workdir");
    let DataSource::Own(own) = &settings.source else {
        panic!("own files expected");
    };
    let data = fedistill_participant::owndata::load(own, &card, &public).expect("the node's files read");
    assert_eq!(data.modalities, card.modality_ranges());
    let d = card.input_dim();
    let blocks: Vec<usize> = card.modality_ranges().iter().map(|r| r.width()).collect();
    assert_eq!(blocks[0], 127, "124 proteins, tau, p_tau, Ab_42");
    let csf = &data.modalities[0];
    assert!(data
        .private
        .features
        .chunks_exact(d)
        .all(|r| r[csf.indicator] == 0.0 && r[csf.inputs.clone()].iter().all(|&v| v == 0.0)));
    assert!(data.public.features.chunks_exact(d).all(|r| r[csf.indicator] == 1.0));
    // The same public set with other values in every CSF input, for the check below.
    let mut altered = fedistill_participant::owndata::load(own, &card, &public).expect("read again");
    for row in altered.public.features.chunks_exact_mut(d) {
        for v in &mut row[csf.inputs.clone()] {
            *v = 3.0 - 2.0 * *v;
        }
    }
    let mut learner = ModelLearner::prepare(&settings, data).expect("teacher trained, student built");
    // The block the hospital's file lacks, as the reader reported it, is masked for its teacher.
    let (_, report) = fedistill_shared::data::read_private_csv(
        &dir.path().join("hospital-c.csv"),
        &card,
        &fedistill_shared::data::CsvOptions::default(),
    )
    .expect("the hospital's file reads");
    assert_eq!(report.absent_modalities, ["csf"]);
    assert_eq!(learner.absent_blocks().names(), report.absent_modalities);
    // The defaults: a fused teacher of the card's blocks, saved where a restart reloads it.
    let teacher = Model::load(
        &fedistill_shared::ml::local::FUSED_TEACHER.with_blocks(&blocks),
        d,
        2,
        &settings.workdir.join("teacher.safetensors"),
    )
    .expect("the saved teacher is the fused default");
    assert!(matches!(teacher.config(), ModelConfig::Fused { embed: 32, .. }));
    let summary = learner.summary();
    assert_eq!(summary.teacher_params, teacher.params());
    assert!(summary.local_only_accuracy > 0.5, "{summary:?}");
    // One round: label public rows (which hold both blocks), distill the fused student from them.
    let ids: Vec<u64> = (0..100).collect();
    let probs = learner.label(RoundId(1), &ids, 1.0).expect("labels");
    assert_eq!(probs.len(), 200);
    assert!(probs.chunks_exact(2).all(|p| (p[0] + p[1] - 1.0).abs() < 1e-4));
    // The teacher labels with what the hospital has: the public set's CSF values do not reach it. The second
    // learner reloads the same teacher from the work directory and labels the altered public set alike.
    let mut other = ModelLearner::prepare(&settings, altered).expect("the saved teacher reloads");
    assert_eq!(other.label(RoundId(1), &ids, 1.0).expect("labels"), probs);
    drop(other);
    let d = learner
        .distill(RoundId(1), &ids, &probs, 1, AggregationRule::Mean, &BTreeMap::new())
        .expect("a round distilled");
    assert!(d.accepted, "the first student serves");
    assert!(d.metrics.get("accuracy").is_some_and(|a| *a > 0.5), "{:?}", d.metrics);
    assert!(d.int8_accuracy > 0.5 && d.int8_bytes > 0, "{d:?}");
}
