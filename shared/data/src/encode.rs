// Over 800 lines: 750 lines of code and its unit tests; the one row encoder of every tabular reader, in one file so CSV and Parquet cannot drift apart.
//! The one row encoder every reader of an institution's own tabular files shares (CSV and
//! Parquet): the task card laid over a file's column names (`Plan`), and the encoding of one row's
//! cells into model inputs with the CARD's imputation and scaling. Readers only hand it cells
//! (`RowSource`), so a CSV text `"12.5"` and a Parquet double `12.5` become the same input, a
//! missing cell is imputed the same way in both, and both report problems with the same kinds.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::error::Position;
use crate::private::{CsvOptions, ProblemKind, HEADER, OUT_OF_RANGE_STDS};
use crate::task::{is_missing, Feature, Impute, Scale, TaskCard, UnknownLevel};
use crate::DataError;

/// One cell as a reader hands it to the encoder.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Cell<'a> {
    /// Text, trimmed (a CSV cell, a Parquet string); `""` and `NA` are missing.
    Text(&'a str),
    /// A value of a typed numeric column (Parquet integers and floats). A categorical, ordinal or
    /// label column holding numbers compares their decimal text (`3`, not `3.0`) with the levels.
    Number(f64),
    /// A null (Parquet): missing.
    Null,
    /// Bytes that are not UTF-8 (CSV).
    NotUtf8,
}

/// The current row of a reader: its width and its cells by field index (the index of the column
/// in the names `Plan::new` was given).
pub(crate) trait RowSource {
    /// Fields in this row; a CSV row may have more or fewer than the header (ragged).
    fn width(&self) -> usize;
    /// The cell of field `field` (< `width()`).
    fn cell(&mut self, field: usize) -> Cell<'_>;
}

/// How one card column's cell becomes model inputs.
#[derive(Debug)]
enum Encode {
    /// One input: `(x - shift) / div`; `range` = (mean, std) for the out-of-range count.
    Number {
        fill: f64,
        shift: f64,
        div: f64,
        range: Option<(f64, f64)>,
    },
    /// One input: the rank, imputed and scaled like a number.
    Rank {
        ranks: HashMap<String, usize>,
        fill: f64,
        shift: f64,
        div: f64,
    },
    /// `width` one-hot inputs; `other` is the implicit level's index, `fill` a missing cell's.
    OneHot {
        levels: HashMap<String, usize>,
        width: usize,
        other: Option<usize>,
        fill: Option<usize>,
    },
}

/// One card feature column located in the file.
#[derive(Debug)]
pub(crate) struct Slot {
    /// The card's name of the column.
    pub(crate) card: String,
    /// The file's name of it.
    pub(crate) local: String,
    /// `numeric`, `categorical` or `ordinal`.
    pub(crate) kind: &'static str,
    /// Its field index in the file.
    pub(crate) field: usize,
    offset: usize,
    encode: Encode,
    /// The levels for messages (`a|b|c`).
    levels_text: String,
}

impl Slot {
    /// Whether unknown levels go to `<other>` (and are counted).
    pub(crate) fn has_other(&self) -> bool {
        matches!(self.encode, Encode::OneHot { other: Some(_), .. })
    }

    /// Whether values are checked against the card's mean and std.
    pub(crate) fn has_range(&self) -> bool {
        matches!(self.encode, Encode::Number { range: Some(_), .. })
    }
}

/// A modality block of the card as one file holds it: whole, or not at all.
#[derive(Debug)]
pub(crate) struct BlockPlan {
    /// The block's name.
    pub(crate) name: String,
    /// Its model inputs (0 when the file lacks the block).
    inputs: std::ops::Range<usize>,
    /// Its presence input (1 or 0).
    indicator: usize,
    /// Whether the file has the block's columns.
    pub(crate) present: bool,
}

/// The card laid over one file's column names.
#[derive(Debug)]
pub(crate) struct Plan {
    /// The card's feature columns the file holds (all of them, unless it lacks a modality block).
    pub(crate) slots: Vec<Slot>,
    /// The card's modality blocks (empty without `[[modalities]]`).
    pub(crate) blocks: Vec<BlockPlan>,
    /// The label's field; `None` for unlabelled rows (`CsvOptions::unlabelled`: every label is 0).
    pub(crate) label_field: Option<usize>,
    /// The label's local name (empty for unlabelled rows).
    pub(crate) label_local: String,
    classes: HashMap<String, u32>,
    classes_text: String,
    /// A regression task's target rule (the label cell is then a number, within the bounds).
    regression: Option<crate::task::Regression>,
    pub(crate) headers: Vec<String>,
    pub(crate) ignored: Vec<String>,
    pub(crate) dim: usize,
}

fn levels_text(levels: &[String]) -> String {
    const SHOWN: usize = 12;
    let mut t = levels.iter().take(SHOWN).cloned().collect::<Vec<_>>().join("|");
    if levels.len() > SHOWN {
        t.push_str(&format!("|... ({} levels)", levels.len()));
    }
    t
}

/// Refuses empty and duplicated column names (already trimmed); `at` is where the names are (line 1
/// of a CSV, the schema of a Parquet file).
pub(crate) fn check_names(names: &[String], file: &str, at: Position) -> Result<(), DataError> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (k, name) in names.iter().enumerate() {
        if name.is_empty() {
            return Err(Problem::new(
                at,
                &format!("field {}", k + 1),
                ProblemKind::Header,
                "a header name is empty".into(),
            )
            .into_error(file));
        }
        if let Some(first) = seen.insert(name, k) {
            return Err(Problem::new(
                at,
                name,
                ProblemKind::Header,
                format!(
                    "column `{name}` appears twice in the header (fields {} and {})",
                    first + 1,
                    k + 1
                ),
            )
            .into_error(file));
        }
    }
    Ok(())
}

impl Plan {
    /// Finds every card column among `headers` (by name, through `opts.columns`); `at` is where
    /// the names are, for errors. With `[[modalities]]`, the columns of a whole block may be absent
    /// (the block's inputs are then 0 and its presence input 0); part of a block may not, and at least
    /// one block must be there.
    pub(crate) fn new(
        card: &TaskCard,
        opts: &CsvOptions,
        headers: Vec<String>,
        file: &str,
        at: Position,
    ) -> Result<Plan, DataError> {
        let header_error = |detail: String| Problem::new(at, HEADER, ProblemKind::Header, detail).into_error(file);
        let label = card.label.column.clone().unwrap_or_default();
        let card_columns: Vec<&str> = card
            .features
            .iter()
            .map(Feature::name)
            .chain((!opts.unlabelled).then_some(label.as_str()))
            .collect();
        if let Some(unknown) = opts.columns.keys().find(|k| !card_columns.contains(&k.as_str())) {
            return Err(header_error(format!(
                "the column mapping names `{unknown}`, which is not a column of task `{}`",
                card.name
            )));
        }
        let local_of = |c: &str| opts.columns.get(c).map_or(c, String::as_str).to_string();
        let mut used: BTreeMap<String, &str> = BTreeMap::new();
        let mut fields: Vec<Option<usize>> = Vec::with_capacity(card_columns.len());
        for c in &card_columns {
            let local = local_of(c);
            if let Some(other) = used.insert(local.clone(), c) {
                return Err(header_error(format!(
                    "card columns `{other}` and `{c}` are both mapped to the local column `{local}`"
                )));
            }
            fields.push(headers.iter().position(|h| *h == local));
        }
        // A modality block whose every column is absent is a block the file lacks, not missing columns.
        let field_of: HashMap<&str, Option<usize>> = card_columns.iter().copied().zip(fields.iter().copied()).collect();
        let mut blocks = Vec::with_capacity(card.modalities.len());
        let mut partial = Vec::new();
        for (m, r) in card.modalities.iter().zip(card.modality_ranges()) {
            let found = m
                .features
                .iter()
                .filter(|f| field_of.get(f.as_str()).copied().flatten().is_some())
                .count();
            if found > 0 && found < m.features.len() {
                partial.push(format!(
                    "modality `{}` has {found} of its {} columns",
                    m.name,
                    m.features.len()
                ));
            }
            blocks.push(BlockPlan {
                name: m.name.clone(),
                inputs: r.inputs,
                indicator: r.indicator,
                present: found > 0,
            });
        }
        let absent_feature: BTreeSet<&str> = card
            .modalities
            .iter()
            .zip(&blocks)
            .filter(|(_, b)| !b.present)
            .flat_map(|(m, _)| m.features.iter().map(String::as_str))
            .collect();
        let missing: Vec<String> = card_columns
            .iter()
            .zip(&fields)
            .filter(|(c, f)| f.is_none() && !absent_feature.contains(**c))
            .map(|(c, _)| {
                let local = local_of(c);
                if local == *c {
                    format!("`{c}`")
                } else {
                    format!("`{c}` (mapped to `{local}`)")
                }
            })
            .collect();
        if !missing.is_empty() {
            let hint = match at {
                Position::Line(n) if missing.len() == card_columns.len() => {
                    format!("; none of the card's columns is in line {n}: is the header row missing?")
                }
                _ if !partial.is_empty() => format!(
                    "; a file may lack a whole modality block, not part of one ({})",
                    partial.join(", ")
                ),
                _ => String::new(),
            };
            return Err(header_error(format!(
                "missing {} of task `{}`: {}{hint}",
                if missing.len() == 1 { "column" } else { "columns" },
                card.name,
                missing.join(", ")
            )));
        }
        if !blocks.is_empty() && blocks.iter().all(|b| !b.present) {
            return Err(header_error(format!(
                "none of the modality blocks of task `{}` is in the file ({}): it holds no feature column",
                card.name,
                blocks
                    .iter()
                    .map(|b| format!("`{}`", b.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let prep = card.preprocessing.as_ref();
        let standard = prep.is_some_and(|p| p.scale == Scale::Standard);
        let mut slots = Vec::with_capacity(card.features.len());
        let mut offset = 0;
        for (f, &field) in card.features.iter().zip(&fields) {
            let Some(field) = field else {
                // A column of a modality block the file lacks: its inputs stay 0.
                offset += f.width();
                continue;
            };
            let stats = card.stats_for(f.name());
            let fill = stats.and_then(|s| s.fill).unwrap_or(0.0);
            let (shift, div) = match (standard, stats.and_then(|s| s.mean), stats.and_then(|s| s.std)) {
                (true, Some(m), Some(s)) => (m, s),
                _ => (0.0, 1.0),
            };
            let (encode, text) = match f {
                Feature::Numeric { .. } => (
                    Encode::Number {
                        fill,
                        shift,
                        div,
                        range: stats.and_then(|s| Some((s.mean?, s.std?))),
                    },
                    String::new(),
                ),
                Feature::Ordinal { levels, .. } => (
                    Encode::Rank {
                        ranks: levels.iter().enumerate().map(|(k, l)| (l.clone(), k)).collect(),
                        fill,
                        shift,
                        div,
                    },
                    levels_text(levels),
                ),
                Feature::Categorical { levels, unknown, .. } => {
                    let fill = match prep.map(|p| p.impute) {
                        Some(Impute::Zero) | None => None,
                        Some(_) => stats
                            .and_then(|s| s.fill_level.as_ref())
                            .and_then(|l| levels.iter().position(|x| x == l)),
                    };
                    (
                        Encode::OneHot {
                            levels: levels.iter().enumerate().map(|(k, l)| (l.clone(), k)).collect(),
                            width: f.width(),
                            other: (*unknown == UnknownLevel::Other).then_some(levels.len()),
                            fill,
                        },
                        levels_text(levels),
                    )
                }
            };
            slots.push(Slot {
                card: f.name().to_string(),
                local: headers[field].clone(),
                kind: f.kind_name(),
                field,
                offset,
                encode,
                levels_text: text,
            });
            offset += f.width();
        }
        let label_field = if opts.unlabelled {
            None
        } else {
            Some(
                fields
                    .last()
                    .copied()
                    .flatten()
                    .expect("the label column is always among the card columns, and a missing one was refused"),
            )
        };
        let used_fields: BTreeSet<usize> = fields.iter().copied().flatten().collect();
        let ignored = headers
            .iter()
            .enumerate()
            .filter(|(k, _)| !used_fields.contains(k))
            .map(|(_, h)| h.clone())
            .collect();
        Ok(Plan {
            slots,
            blocks,
            label_local: label_field.map(|f| headers[f].clone()).unwrap_or_default(),
            label_field,
            classes: card
                .classes()
                .iter()
                .enumerate()
                .map(|(k, c)| (c.clone(), k as u32))
                .collect(),
            classes_text: levels_text(card.classes()),
            regression: card.regression.clone(),
            headers,
            ignored,
            dim: offset + card.modalities.len(),
        })
    }

    /// The modality blocks the file lacks, by name, in card order.
    pub(crate) fn absent_blocks(&self) -> Vec<String> {
        self.blocks
            .iter()
            .filter(|b| !b.present)
            .map(|b| b.name.clone())
            .collect()
    }

    /// Encodes one data row into `row` (`dim` values). Returns the class id, or `None` after
    /// pushing at least one problem. Counts missing, `<other>` and out-of-range cells in `tally`.
    pub(crate) fn decode(
        &self,
        src: &mut dyn RowSource,
        at: Position,
        row: &mut [f32],
        tally: &mut Tally,
        problems: &mut Vec<Problem>,
    ) -> Option<u32> {
        let before = problems.len();
        let width = src.width();
        if width != self.headers.len() {
            let (column, detail) = if width < self.headers.len() {
                (
                    self.headers[width].clone(),
                    format!(
                        "the row has {width} fields, the header {}: this column and those after it are absent",
                        self.headers.len()
                    ),
                )
            } else {
                (
                    format!("field {}", self.headers.len() + 1),
                    format!("the row has {width} fields, the header {}", self.headers.len()),
                )
            };
            problems.push(Problem {
                at,
                column,
                kind: ProblemKind::RaggedRow,
                detail,
            });
            return None;
        }
        for b in &self.blocks {
            if !b.present {
                row[b.inputs.clone()].fill(0.0);
            }
            row[b.indicator] = if b.present { 1.0 } else { 0.0 };
        }
        let mut push =
            |column: &str, kind: ProblemKind, detail: String| problems.push(Problem::new(at, column, kind, detail));
        // Numbers of typed columns in text columns compare as their decimal text.
        let mut number_text = String::new();
        for (s, slot) in self.slots.iter().enumerate() {
            let cell = src.cell(slot.field);
            let missing = match cell {
                Cell::Null => true,
                Cell::Text(t) => is_missing(t),
                Cell::Number(_) => false,
                Cell::NotUtf8 => {
                    push(&slot.local, ProblemKind::NotUtf8, "the cell is not UTF-8".into());
                    continue;
                }
            };
            if missing {
                tally.missing[s] += 1;
                tally.imputed += 1;
            }
            match &slot.encode {
                Encode::Number {
                    fill,
                    shift,
                    div,
                    range,
                } => {
                    let v = match cell {
                        _ if missing => *fill,
                        Cell::Number(v) if v.is_finite() => v,
                        Cell::Number(_) => {
                            push(
                                &slot.local,
                                ProblemKind::NotFinite,
                                format!("`{}` is not a finite number", shown(cell)),
                            );
                            continue;
                        }
                        Cell::Text(t) => match t.parse::<f64>() {
                            Ok(v) if v.is_finite() => v,
                            Ok(_) => {
                                push(
                                    &slot.local,
                                    ProblemKind::NotFinite,
                                    format!("`{t}` is not a finite number"),
                                );
                                continue;
                            }
                            Err(_) => {
                                push(&slot.local, ProblemKind::NotANumber, format!("`{t}` is not a number"));
                                continue;
                            }
                        },
                        Cell::Null | Cell::NotUtf8 => *fill,
                    };
                    if let (false, Some((mean, std))) = (missing, range) {
                        if (v - mean).abs() > OUT_OF_RANGE_STDS * std {
                            tally.out_of_range[s] += 1;
                        }
                    }
                    let x = ((v - shift) / div) as f32;
                    if !x.is_finite() {
                        push(
                            &slot.local,
                            ProblemKind::NotFinite,
                            format!("`{}` overflows a 32-bit float once scaled", shown(cell)),
                        );
                        continue;
                    }
                    row[slot.offset] = x;
                }
                Encode::Rank {
                    ranks,
                    fill,
                    shift,
                    div,
                } => {
                    let v = if missing {
                        *fill
                    } else {
                        let t = level_text(cell, &mut number_text);
                        match ranks.get(t) {
                            Some(&k) => k as f64,
                            None => {
                                push(
                                    &slot.local,
                                    ProblemKind::UnknownLevel,
                                    format!("`{t}` is not a level of `{}` ({})", slot.card, slot.levels_text),
                                );
                                continue;
                            }
                        }
                    };
                    row[slot.offset] = ((v - shift) / div) as f32;
                }
                Encode::OneHot {
                    levels,
                    width,
                    other,
                    fill,
                } => {
                    let hot = if missing {
                        *fill
                    } else {
                        let t = level_text(cell, &mut number_text);
                        match (levels.get(t), other) {
                            (Some(&k), _) => Some(k),
                            (None, Some(k)) => {
                                tally.other[s] += 1;
                                Some(*k)
                            }
                            (None, None) => {
                                push(
                                    &slot.local,
                                    ProblemKind::UnknownLevel,
                                    format!("`{t}` is not a level of `{}` ({})", slot.card, slot.levels_text),
                                );
                                continue;
                            }
                        }
                    };
                    let block = &mut row[slot.offset..slot.offset + width];
                    block.fill(0.0);
                    if let Some(k) = hot {
                        block[k] = 1.0;
                    }
                }
            }
        }
        let Some(label_field) = self.label_field else {
            return (problems.len() == before).then_some(0);
        };
        let label = match src.cell(label_field) {
            Cell::NotUtf8 => {
                push(&self.label_local, ProblemKind::NotUtf8, "the cell is not UTF-8".into());
                None
            }
            Cell::Null => {
                push(
                    &self.label_local,
                    ProblemKind::MissingLabel,
                    "the label is missing (labels are never imputed)".into(),
                );
                None
            }
            cell if self.regression.is_some() => self.target(cell, tally, &mut push),
            cell => {
                let t = level_text(cell, &mut number_text);
                match self.classes.get(t) {
                    Some(&k) => Some(k),
                    None if is_missing(t) => {
                        push(
                            &self.label_local,
                            ProblemKind::MissingLabel,
                            "the label is missing (labels are never imputed)".into(),
                        );
                        None
                    }
                    None => {
                        push(
                            &self.label_local,
                            ProblemKind::UnknownClass,
                            format!("`{t}` is not a class of the task ({})", self.classes_text),
                        );
                        None
                    }
                }
            }
        };
        if problems.len() > before {
            None
        } else {
            label
        }
    }
}

impl Plan {
    /// A regression target: a finite number within the card's bounds, kept in `tally.target`; label 0.
    fn target(
        &self,
        cell: Cell<'_>,
        tally: &mut Tally,
        push: &mut dyn FnMut(&str, ProblemKind, String),
    ) -> Option<u32> {
        let r = self.regression.as_ref()?;
        let v = match cell {
            Cell::Number(v) => v,
            Cell::Text(t) if is_missing(t) => {
                push(
                    &self.label_local,
                    ProblemKind::MissingLabel,
                    "the target is missing (targets are never imputed)".into(),
                );
                return None;
            }
            Cell::Text(t) => match t.trim().parse::<f64>() {
                Ok(v) => v,
                Err(_) => {
                    push(
                        &self.label_local,
                        ProblemKind::NotANumber,
                        format!("the target `{t}` is not a number (the task is a regression)"),
                    );
                    return None;
                }
            },
            Cell::Null | Cell::NotUtf8 => return None,
        };
        if !v.is_finite() || !(v as f32).is_finite() {
            push(
                &self.label_local,
                ProblemKind::NotFinite,
                format!("the target {} is not a finite number", shown(cell)),
            );
            return None;
        }
        if !r.in_bounds(v) {
            push(
                &self.label_local,
                ProblemKind::OutOfBounds,
                format!(
                    "the target {v} is outside the card's bounds {} (refused, never clipped)",
                    r.bounds_text()
                ),
            );
            return None;
        }
        tally.target = v as f32;
        Some(0)
    }
}

/// The text a level or class is looked up by: the cell's text, or a number's decimal text
/// (written into `buf`).
fn level_text<'a>(cell: Cell<'a>, buf: &'a mut String) -> &'a str {
    match cell {
        Cell::Text(t) => t,
        Cell::Number(v) => {
            buf.clear();
            buf.push_str(&v.to_string());
            buf
        }
        Cell::Null | Cell::NotUtf8 => "",
    }
}

/// A cell as messages quote it (`1e300`, not 301 digits).
fn shown(cell: Cell<'_>) -> String {
    match cell {
        Cell::Text(t) => t.to_string(),
        Cell::Number(v) => format!("{v:?}"),
        Cell::Null | Cell::NotUtf8 => String::new(),
    }
}

/// One problem found in a row, before it is tied to a file.
#[derive(Debug)]
pub(crate) struct Problem {
    pub(crate) at: Position,
    pub(crate) column: String,
    pub(crate) kind: ProblemKind,
    pub(crate) detail: String,
}

impl Problem {
    pub(crate) fn new(at: Position, column: &str, kind: ProblemKind, detail: String) -> Problem {
        Problem {
            at,
            column: column.to_string(),
            kind,
            detail,
        }
    }

    pub(crate) fn into_error(self, file: &str) -> DataError {
        DataError::Row {
            file: file.to_string(),
            at: self.at,
            column: self.column,
            kind: self.kind,
            detail: self.detail,
        }
    }
}

/// Counters kept while reading (never the rows themselves).
#[derive(Debug)]
pub(crate) struct Tally {
    pub(crate) rows: u64,
    pub(crate) rows_ok: u64,
    pub(crate) class_counts: Vec<u64>,
    pub(crate) missing: Vec<u64>,
    pub(crate) other: Vec<u64>,
    pub(crate) out_of_range: Vec<u64>,
    pub(crate) imputed: u64,
    /// The target of the row `Plan::decode` accepted last (regression tasks).
    pub(crate) target: f32,
}

impl Tally {
    pub(crate) fn new(plan: &Plan, classes: usize) -> Tally {
        let n = plan.slots.len();
        Tally {
            rows: 0,
            rows_ok: 0,
            class_counts: vec![0; classes],
            missing: vec![0; n],
            other: vec![0; n],
            out_of_range: vec![0; n],
            imputed: 0,
            target: f32::NAN,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::private::tests::{file, good_rows, CARD, GOOD};
    use crate::private::{check_csv, read_private_csv, CsvOptions};
    use crate::task::TaskCard;

    /// The loans card of the reader tests in two modality blocks: `loan` (amount, home, purpose: inputs
    /// 0..6) and `rating` (grade: input 6); presence inputs 7 and 8.
    fn blocks_card() -> TaskCard {
        let text = format!(
            "{CARD}\n[[modalities]]\nname = \"loan\"\nfeatures = [\"amount\", \"home\", \"purpose\"]\n\n\
             [[modalities]]\nname = \"rating\"\nfeatures = [\"grade\"]\n"
        );
        TaskCard::from_toml_str(&text, "card.toml").expect("valid blocks")
    }

    fn read(text: &str) -> Result<(crate::Dataset, crate::private::LoadReport), crate::DataError> {
        let (_dir, path) = file("h.csv", text.as_bytes());
        read_private_csv(&path, &blocks_card(), &CsvOptions::default())
    }

    /// `rows` of `dim` values, each with `extra` appended.
    fn with_presence(rows: &[f32], dim: usize, extra: &[f32]) -> Vec<f32> {
        rows.chunks_exact(dim)
            .flat_map(|r| r.iter().chain(extra).copied())
            .collect()
    }

    #[test]
    fn a_file_with_every_block_encodes_as_before_plus_presence_inputs() {
        let (ds, report) = read(GOOD).expect("every column present");
        assert_eq!(ds.dim, 7 + 2);
        assert_eq!(ds.features, with_presence(&good_rows(), 7, &[1.0, 1.0]));
        assert!(report.absent_modalities.is_empty());
    }

    #[test]
    fn a_file_without_a_whole_block_reads_with_zeros_and_presence_zero() {
        // No grade column: the `rating` block is absent.
        let text = "amount,home,purpose,Class\n160,own,car,good\n,rent,house,bad\n80,NA,,good\n";
        let (ds, report) = read(text).expect("a whole block may be absent");
        let expected: Vec<f32> = good_rows()
            .chunks_exact(7)
            .flat_map(|r| r[..6].iter().copied().chain([0.0, 1.0, 0.0]))
            .collect();
        assert_eq!(ds.features, expected);
        assert_eq!(report.absent_modalities, ["rating"]);
        assert!(
            !report.missing_per_column.contains_key("grade"),
            "an absent block is not counted as missing cells"
        );
        assert_eq!(report.imputed, 3);
        // Without the `loan` block (and a column the card does not use).
        let text = "grade,note,Class\nC,x,good\nA,y,bad\n";
        let (ds, report) = read(text).expect("the other block absent");
        assert_eq!(
            ds.features,
            vec![0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -2.0, 0.0, 1.0]
        );
        assert_eq!(report.absent_modalities, ["loan"]);
        assert_eq!(report.ignored_columns, ["note"]);
        // The steward's check says the same and calls the file usable.
        let (_dir, path) = file("h.csv", text.as_bytes());
        let check = check_csv(&path, &blocks_card(), &CsvOptions::default(), 10);
        assert!(check.usable(), "{check}");
        assert_eq!(check.absent_modalities, ["loan"]);
        assert!(check.to_string().contains("absent      modality loan"), "{check}");
    }

    #[test]
    fn part_of_a_block_or_no_block_at_all_is_refused() {
        // `home` and `purpose` absent, `amount` present: part of `loan`.
        let err = read("amount,grade,Class\n160,C,good\n")
            .expect_err("part of a block")
            .to_string();
        assert!(
            err.ends_with(
                "h.csv:1:header: missing columns of task `loans`: `home`, `purpose`; a file may lack a whole \
                 modality block, not part of one (modality `loan` has 1 of its 3 columns)"
            ),
            "{err}"
        );
        let err = read("note,Class\nx,good\n").expect_err("no block").to_string();
        assert!(
            err.contains("none of the modality blocks of task `loans` is in the file (`loan`, `rating`)"),
            "{err}"
        );
        // The label is never optional.
        let err = read("grade\nC\n").expect_err("no label").to_string();
        assert!(err.contains("missing column of task `loans`: `Class`"), "{err}");
        // Without [[modalities]] a missing column is refused as before.
        let (_dir, path) = file("h.csv", b"amount,home,purpose,Class\n160,own,car,good\n");
        let card = TaskCard::from_toml_str(CARD, "card.toml").expect("valid");
        let err = read_private_csv(&path, &card, &CsvOptions::default())
            .expect_err("no blocks: every column required")
            .to_string();
        assert!(err.ends_with("missing column of task `loans`: `grade`"), "{err}");
    }
}
