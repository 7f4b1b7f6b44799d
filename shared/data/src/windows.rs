//! Windows cut from long series: a CSV with one row per time step (and optionally an entity column, one
//! series per entity) becomes labelled fixed-length windows, as a sequence card's `[sequence.windows]`
//! says: channel columns, a transform, a stride, and a label rule computed from what happens after each
//! window (docs/data.md, "Windows cut from long series").

use std::cmp::Ordering;
use std::path::Path;

use csv::ByteRecord;

use crate::bytes::{maybe_gunzip, read_file};
use crate::private::{csv_reader, next_record, read_header, LoadReport};
use crate::task::{SequenceShape, TaskCard, Transform, WindowLabel, Windows};
use crate::ts::err;
use crate::{DataError, DataKind, Dataset};

/// A time cell as an ordered key: a number, or a calendar date (`2004-01-31`, optionally followed by a
/// time compared as text, or `1/31/2004`).
#[derive(Debug, Clone, PartialEq)]
enum TimeKey {
    Number(f64),
    Date(i64, u32, u32, String),
}

impl TimeKey {
    fn parse(cell: &str) -> Option<TimeKey> {
        if let Ok(v) = cell.parse::<f64>() {
            return v.is_finite().then_some(TimeKey::Number(v));
        }
        let date = |y: &str, m: &str, d: &str, rest: &str| -> Option<TimeKey> {
            let (y, m, d) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
            ((1..=12).contains(&m) && (1..=31).contains(&d)).then(|| TimeKey::Date(y, m, d, rest.to_string()))
        };
        if cell.len() >= 10 && cell.as_bytes().get(4) == Some(&b'-') && cell.as_bytes().get(7) == Some(&b'-') {
            return date(&cell[..4], &cell[5..7], &cell[8..10], &cell[10..]);
        }
        let mut parts = cell.split('/');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(m), Some(d), Some(y), None) if y.len() == 4 => date(y, m, d, ""),
            _ => None,
        }
    }

    fn cmp(&self, other: &TimeKey) -> Option<Ordering> {
        match (self, other) {
            (TimeKey::Number(a), TimeKey::Number(b)) => a.partial_cmp(b),
            (TimeKey::Date(y, m, d, r), TimeKey::Date(y2, m2, d2, r2)) => Some((y, m, d, r).cmp(&(y2, m2, d2, r2))),
            _ => None,
        }
    }
}

/// One entity's rows: channel values per step, the label column per step, and each step's line.
struct Series {
    name: String,
    channels: Vec<Vec<f64>>,
    label: Vec<f64>,
    lines: Vec<u64>,
    last_time: Option<(TimeKey, String)>,
}

/// Per entity of a long-series file (in order of first appearance): its name (empty without an entity
/// column), its rows, and the windows cut from them.
pub type WindowCounts = Vec<(String, usize, usize)>;

/// The windows of a CSV of long series, read against a card with `[sequence.windows]`: channel-major
/// windows of `length` steps (normalized as the card says), each labelled by the card's rule. Returns the
/// dataset and how many rows each entity had and how many windows it gave.
pub fn read_windows(path: &Path, card: &TaskCard) -> Result<(Dataset, WindowCounts), DataError> {
    let file = path.display().to_string();
    let (shape, w) = match &card.sequence {
        Some(s) => match &s.windows {
            Some(w) => (s.clone(), w.clone()),
            None => {
                return Err(DataError::Card {
                    file: file.clone(),
                    field: "sequence.windows".into(),
                    problem: format!(
                        "`{file}` is a CSV of long series, but task `{}` reads .ts series files",
                        card.name
                    ),
                })
            }
        },
        None => {
            return Err(DataError::Card {
                file: file.clone(),
                field: "sequence".into(),
                problem: format!("task `{}` is not a sequence task", card.name),
            })
        }
    };
    let bytes = read_file(path)?;
    let bytes = maybe_gunzip(&bytes, &file)?;
    let text: &[u8] = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    let mut rdr = csv_reader(text, b',');
    let headers = read_header(&mut rdr, &file)?;
    let find = |name: &str, what: &str| -> Result<usize, DataError> {
        headers.iter().position(|h| h == name).ok_or_else(|| {
            err(
                &file,
                1,
                format!("the {what} column `{name}` the task card names"),
                format!("columns {}", headers.join(", ")),
            )
        })
    };
    let time = find(&w.time, "time")?;
    let entity = w.entity.as_deref().map(|e| find(e, "entity")).transpose()?;
    let channels: Vec<usize> = w.columns.iter().map(|c| find(c, "channel")).collect::<Result<_, _>>()?;
    let label_col = find(w.label.column(), "label")?;
    let mut series: Vec<Series> = Vec::new();
    let mut rec = ByteRecord::new();
    while let Some(line) = next_record(&mut rdr, &mut rec, &file)? {
        if rec.len() != headers.len() {
            return Err(err(
                &file,
                line,
                format!("{} fields as the header", headers.len()),
                format!("{} fields", rec.len()),
            ));
        }
        let cell = |k: usize| -> Result<&str, DataError> {
            std::str::from_utf8(&rec[k]).map(str::trim).map_err(|_| {
                err(
                    &file,
                    line,
                    format!("UTF-8 text in column `{}`", headers[k]),
                    "other bytes",
                )
            })
        };
        let number = |k: usize| -> Result<f64, DataError> {
            let c = cell(k)?;
            if crate::task::is_missing(c) {
                return Err(err(
                    &file,
                    line,
                    format!("a value in column `{}`", headers[k]),
                    "a missing cell: fill the series before cutting windows",
                ));
            }
            c.parse::<f64>().ok().filter(|v| v.is_finite()).ok_or_else(|| {
                err(
                    &file,
                    line,
                    format!("a finite number in column `{}`", headers[k]),
                    format!("`{c}`"),
                )
            })
        };
        let name = match entity {
            Some(k) => cell(k)?.to_string(),
            None => String::new(),
        };
        let t_text = cell(time)?.to_string();
        let t = TimeKey::parse(&t_text).ok_or_else(|| {
            err(
                &file,
                line,
                format!("a time in column `{}` (a number, 2004-01-31 or 1/31/2004)", w.time),
                format!("`{t_text}`"),
            )
        })?;
        let pos = match series.iter().position(|s| s.name == name) {
            Some(p) => p,
            None => {
                series.push(Series {
                    name: name.clone(),
                    channels: vec![Vec::new(); channels.len()],
                    label: Vec::new(),
                    lines: Vec::new(),
                    last_time: None,
                });
                series.len() - 1
            }
        };
        let s = &mut series[pos];
        if let Some((prev, prev_text)) = &s.last_time {
            if prev.cmp(&t) != Some(Ordering::Less) {
                return Err(err(
                    &file,
                    line,
                    format!(
                        "a time after the previous row's `{prev_text}`{} (rows sorted by time)",
                        if name.is_empty() {
                            String::new()
                        } else {
                            format!(" of `{name}`")
                        }
                    ),
                    format!("`{t_text}`"),
                ));
            }
        }
        s.last_time = Some((t, t_text));
        for (c, &k) in channels.iter().enumerate() {
            let v = number(k)?;
            if w.transform == Transform::LogReturn && v <= 0.0 {
                return Err(err(
                    &file,
                    line,
                    format!(
                        "a positive value in column `{}` (transform = \"log-return\")",
                        headers[k]
                    ),
                    format!("{v}"),
                ));
            }
            s.channels[c].push(v);
        }
        let lv = number(label_col)?;
        if matches!(w.label, WindowLabel::Volatility { .. }) && lv <= 0.0 {
            return Err(err(
                &file,
                line,
                format!(
                    "a positive value in column `{}` (the volatility rule takes log returns)",
                    w.label.column()
                ),
                format!("{lv}"),
            ));
        }
        s.label.push(lv);
        s.lines.push(line);
    }
    let length = shape.length;
    let mut features = Vec::new();
    let mut labels = Vec::new();
    let mut counts = Vec::new();
    for s in &series {
        let before = labels.len();
        cut(s, &w, &shape, &mut features, &mut labels);
        counts.push((s.name.clone(), s.label.len(), labels.len() - before));
    }
    if labels.is_empty() {
        let rows = series.iter().map(|s| s.label.len()).max().unwrap_or(0);
        let need = length + w.label.horizon() + usize::from(w.transform != Transform::None);
        return Err(err(
            &file,
            0,
            format!(
                "a series of at least {need} rows (a window of {length} steps{}, then {} steps for its label)",
                if w.transform == Transform::None {
                    ""
                } else {
                    " after the transform's first row"
                },
                w.label.horizon()
            ),
            format!("at most {rows} rows per series"),
        ));
    }
    let ds = Dataset::new(
        card.name.clone(),
        features,
        labels,
        shape.channels * length,
        DataKind::Sequence {
            channels: shape.channels,
            length,
        },
        card.classes().to_vec(),
    )?;
    Ok((ds, counts))
}

/// Appends the windows of one series.
fn cut(s: &Series, w: &Windows, shape: &SequenceShape, features: &mut Vec<f32>, labels: &mut Vec<u32>) {
    let length = shape.length;
    let offset = usize::from(w.transform != Transform::None);
    let channels: Vec<Vec<f64>> = s
        .channels
        .iter()
        .map(|x| match w.transform {
            Transform::None => x.clone(),
            Transform::Diff => x.windows(2).map(|p| p[1] - p[0]).collect(),
            Transform::LogReturn => x.windows(2).map(|p| (p[1] / p[0]).ln()).collect(),
        })
        .collect();
    let raw = s.label.len();
    let horizon = w.label.horizon();
    let mut start = 0;
    // The window covers transformed steps start..start + length, i.e. raw rows up to `end`.
    while start + length + offset + horizon <= raw {
        let end = start + length - 1 + offset;
        for (c, x) in channels.iter().enumerate() {
            let from = features.len();
            features.extend(x[start..start + length].iter().map(|&v| v as f32));
            shape.normalize_channel(c, &mut features[from..]);
        }
        let y = &s.label;
        let class = match &w.label {
            WindowLabel::Direction { .. } => u32::from(y[end + horizon] > y[end]),
            WindowLabel::Volatility { threshold, .. } => {
                let r: Vec<f64> = (end + 1..=end + horizon).map(|k| (y[k] / y[k - 1]).ln()).collect();
                let mean = r.iter().sum::<f64>() / r.len() as f64;
                let sd = (r.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / r.len() as f64).sqrt();
                u32::from(sd > *threshold)
            }
        };
        labels.push(class);
        start += w.stride;
    }
}

/// Reads an institution's own long series against a windows card (`read_windows` with a load report).
pub fn read_private_windows(path: &Path, card: &TaskCard) -> Result<(Dataset, LoadReport), DataError> {
    let (ds, _) = read_windows(path, card)?;
    let report = LoadReport::for_classes(path.display().to_string(), card.classes(), &ds.labels);
    Ok((ds, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(windows: &str, classes: &str, length: usize, channels: usize, normalize: &str) -> TaskCard {
        TaskCard::from_toml_str(
            &format!(
                "name = \"bank\"\nversion = 1\n[label]\nclasses = {classes}\n[sequence]\nchannels = {channels}\n\
                 length = {length}\nnormalize = \"{normalize}\"\n[sequence.windows]\n{windows}\n[public]\nsha256 = \"{}\"\n\
                 rows = 3\nformat = \"csv\"\n",
                "ab".repeat(32)
            ),
            "bank.toml",
        )
        .expect("the test card is valid")
    }

    fn direction_card() -> TaskCard {
        card(
            "time = \"Date\"\ncolumns = [\"Close\"]\nstride = 1\nlabel = { rule = \"direction\", column = \"Close\", horizon = 1 }",
            "[\"down\", \"up\"]",
            2,
            1,
            "none",
        )
    }

    fn file(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("prices.csv");
        std::fs::write(&path, text).expect("write");
        (dir, path)
    }

    #[test]
    fn windows_are_cut_and_labelled_by_what_comes_next() {
        let (_d, path) = file("Date,Close\n2004-01-01,10\n2004-01-02,11\n2004-01-03,9\n2004-01-04,12\n2004-01-05,12\n");
        let (ds, counts) = read_windows(&path, &direction_card()).expect("reads");
        // Windows [10,11]->9 (down), [11,9]->12 (up), [9,12]->12 (not above: down).
        assert_eq!(ds.features, vec![10.0, 11.0, 11.0, 9.0, 9.0, 12.0]);
        assert_eq!(ds.labels, vec![0, 1, 0]);
        assert_eq!(counts, vec![(String::new(), 5, 3)]);
        assert_eq!(ds.kind, DataKind::Sequence { channels: 1, length: 2 });
    }

    #[test]
    fn log_returns_entities_stride_and_volatility() {
        let c = card(
            "time = \"t\"\nentity = \"bank\"\ncolumns = [\"p\", \"v\"]\ntransform = \"log-return\"\nstride = 2\n\
             label = { rule = \"volatility\", column = \"p\", horizon = 2, threshold = 0.1 }",
            "[\"low\", \"high\"]",
            2,
            2,
            "none",
        );
        let e = std::f64::consts::E;
        let mut text = String::from("t,bank,p,v\n");
        // Bank a: p = e^0, e^0, e^0, e^0, e^1, e^0.5: returns 0, 0, 0, 1, -0.5.
        for (t, p) in [0.0, 0.0, 0.0, 0.0, 1.0, 0.5].iter().enumerate() {
            text.push_str(&format!("{t},a,{},{}\n", e.powf(*p), 1.0 + t as f64));
        }
        // Bank b, interleaved rows are fine: constant prices.
        for t in 0..5 {
            text.push_str(&format!("{t},b,5,2\n"));
        }
        let (_d, path) = file(&text);
        let (ds, counts) = read_windows(&path, &c).expect("reads");
        // a: 6 rows -> 5 returns; window starts 0, 2 need start + 2 + 1 + 2 <= 6: only start 0 (end raw 2,
        // future returns at raw 3, 4: 0 and 1 -> sd 0.5 > 0.1: high).
        // b: 5 rows: start 0 needs 5 <= 5: one window, constant: low.
        assert_eq!(counts, vec![("a".into(), 6, 1), ("b".into(), 5, 1)]);
        assert_eq!(ds.labels, vec![1, 0]);
        // Channel-major: p's two returns, then v's two log returns ln(2/1), ln(3/2).
        let want = [0.0, 0.0, (2.0f64).ln() as f32, (1.5f64).ln() as f32];
        for (a, b) in ds.row(0).iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{:?}", ds.row(0));
        }
    }

    #[test]
    fn bad_series_are_refused_with_their_line() {
        let cases = [
            (
                "Date,Close\n2004-01-02,1\n2004-01-01,2\n2004-01-03,3\n",
                "line 3: expected a time after the previous row's `2004-01-02`",
            ),
            (
                "Date,Close\n1/2/2004,1\n1/1/2004,2\n",
                "line 3: expected a time after the previous row's `1/2/2004`",
            ),
            (
                "Date,Close\n2004-01-01,1\n2004-01-02,\n",
                "line 3: expected a value in column `Close`, found a missing cell",
            ),
            (
                "Date,Close\n2004-01-01,1\n2004-01-02,x\n",
                "expected a finite number in column `Close`, found `x`",
            ),
            ("Date,Close\nyesterday,1\n", "expected a time in column `Date`"),
            (
                "When,Close\n1,1\n",
                "line 1: expected the time column `Date` the task card names, found columns When, Close",
            ),
            (
                "Date,Close\n1,1\n2,2\n",
                "expected a series of at least 3 rows (a window of 2 steps, then 1 steps",
            ),
            (
                "Date,Close\n1,1,1\n",
                "line 2: expected 2 fields as the header, found 3 fields",
            ),
        ];
        for (text, want) in cases {
            let (_d, path) = file(text);
            let got = read_windows(&path, &direction_card()).expect_err(text).to_string();
            assert!(got.contains(want), "{text:?}: {got}");
        }
        let c = card(
            "time = \"Date\"\ncolumns = [\"Close\"]\ntransform = \"log-return\"\nstride = 1\n\
             label = { rule = \"direction\", column = \"Close\", horizon = 1 }",
            "[\"down\", \"up\"]",
            2,
            1,
            "none",
        );
        let (_d, path) = file("Date,Close\n1,1\n2,0\n3,2\n4,3\n");
        let got = read_windows(&path, &c).expect_err("a zero price").to_string();
        assert!(
            got.contains("line 3: expected a positive value in column `Close`"),
            "{got}"
        );
    }

    #[test]
    fn cards_with_contradicting_windows_are_refused() {
        let base = "time = \"Date\"\ncolumns = [\"Close\"]\nstride = 1\nlabel = { rule = \"direction\", column = \"Close\", horizon = 1 }";
        let refused = |windows: &str, classes: &str, channels: usize| {
            TaskCard::from_toml_str(
                &format!(
                    "name = \"bank\"\nversion = 1\n[label]\nclasses = {classes}\n[sequence]\nchannels = {channels}\n\
                     length = 4\n[sequence.windows]\n{windows}\n[public]\nsha256 = \"{}\"\nrows = 3\nformat = \"csv\"\n",
                    "ab".repeat(32)
                ),
                "bank.toml",
            )
            .expect_err(windows)
            .to_string()
        };
        let ud = "[\"down\", \"up\"]";
        for (windows, classes, channels, want) in [
            (
                base.to_string(),
                ud,
                2,
                "field `sequence.windows.columns`: 1 columns for 2 channels",
            ),
            (
                base.replace("stride = 1", "stride = 0"),
                ud,
                1,
                "field `sequence.windows.stride`: must be at least 1",
            ),
            (
                base.to_string(),
                "[\"up\", \"down\"]",
                1,
                "field `label.classes`: the `direction` rule",
            ),
            (
                base.replace("horizon = 1", "horizon = 0"),
                ud,
                1,
                "field `sequence.windows.label.horizon`",
            ),
            (
                base.replace("[\"Close\"]", "[\"Date\"]"),
                ud,
                1,
                "`Date` is the time or entity column",
            ),
            (
                base.replace("rule = \"direction\"", "rule = \"volatility\", threshold = -1.0"),
                "[\"low\", \"high\"]",
                1,
                "field `sequence.windows.label.threshold`",
            ),
        ] {
            let got = refused(&windows, classes, channels);
            assert!(got.contains(want), "{windows}: {got}");
        }
        // A windows card reads CSV, not .ts.
        let got = TaskCard::from_toml_str(
            &format!(
                "name = \"bank\"\nversion = 1\n[label]\nclasses = {ud}\n[sequence]\nchannels = 1\nlength = 4\n\
                 [sequence.windows]\n{base}\n[public]\nsha256 = \"{}\"\nrows = 3\nformat = \"ts\"\n",
                "ab".repeat(32)
            ),
            "bank.toml",
        )
        .expect_err("ts")
        .to_string();
        assert!(
            got.contains("public set is `csv` (long series cut into windows), not `ts`"),
            "{got}"
        );
    }

    /// The worked example's card reads its public file (rows and SHA-256 as declared) and every bank's
    /// file, and the period split gives the banks different label mixes.
    #[test]
    fn the_sp500_example_is_consistent() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/sp500-banks");
        let card = TaskCard::load(&dir.join("task.toml")).expect("the example card is valid");
        let public = dir.join("public.csv");
        let (ds, labelled) = crate::read_public(&public, &card).expect("the public set reads");
        assert!(labelled);
        assert_eq!(ds.n as u64, card.public.rows);
        assert_eq!(
            hex::encode(crate::sha256_file(&public).expect("hash").0),
            card.public.sha256
        );
        // The threshold is the public set's median (rounded to 0.0103): its classes are balanced.
        let counts = ds.class_counts();
        assert!(counts[0].abs_diff(counts[1]) <= 5, "{counts:?}");
        let mut high = Vec::new();
        for bank in ["bank-a.csv", "bank-b.csv", "bank-c.csv"] {
            let (rows, report) = crate::read_private(&dir.join(bank), &card, &crate::CsvOptions::default())
                .expect("a bank's file reads");
            assert_eq!(rows.n, 247, "{bank}");
            assert_eq!(report.rows, 247);
            high.push(rows.class_counts()[1]);
        }
        // 2004-2008 holds the 2008 crisis, 2014-2018 was calm.
        assert!(high[0] > high[2], "{high:?}");
    }
}
