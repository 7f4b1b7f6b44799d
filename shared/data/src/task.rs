// Over 800 lines: about 330 of them are the tests of every contradiction a card can hold.
//! The task card: the TOML file a federation operator writes once to declare what every
//! institution's own files must hold (label and classes, feature columns or image shape), how
//! cells are imputed and scaled (with statistics from the PUBLIC transfer set, never from private
//! rows), and which public file the federation distils on. Model sizes derive from it, so it is
//! the one contract between the operator, the data stewards and the participants. See
//! docs/data.md, "Task card and own files".

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::DataError;

/// The only card format version this build reads and writes.
pub const CARD_VERSION: u32 = 1;

/// Domain-separation prefix of the card digest (see `TaskCard::digest`).
pub const CARD_DIGEST_TAG: &[u8] = b"fedistill/task-card/v1\n";

/// Name suffix of the implicit extra level of a categorical feature with `unknown = "other"`.
pub const OTHER_LEVEL: &str = "<other>";

/// A declared learning task. Build one with `TaskCard::from_toml_str`, `TaskCard::load` or
/// `infer_card`; all three return a validated card in canonical form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskCard {
    /// Task name (printed, and the name of every `Dataset` read against the card).
    pub name: String,
    /// Card format version; must be `CARD_VERSION`.
    pub version: u32,
    /// The label column and the classes.
    pub label: Label,
    /// Tabular tasks: the feature columns, in model input order. Empty for image tasks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<Feature>,
    /// Tabular tasks: the features grouped into modality blocks (measurement types such as a protein
    /// assay and the demographics), each block a run of `[[features]]` in their order. A file may lack a
    /// whole block; the encoded row then says so (one presence input per block, docs/data.md,
    /// "Modality blocks"). Empty: no blocks, and cards without them read and hash as before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modalities: Vec<Modality>,
    /// Image tasks: the image shape. Absent for tabular tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageShape>,
    /// Sequence tasks (time series): channels, length and normalization. Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<SequenceShape>,
    /// Tabular tasks: imputation, scaling and their statistics. Absent for image tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preprocessing: Option<Preprocessing>,
    /// The public transfer set the card's statistics come from.
    pub public: PublicSet,
    /// A shared labelled benchmark set every node evaluates on instead of its own holdout (optional; for
    /// an `idx` benchmark the SHA-256 is of the images file, its labels file lies beside it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub benchmark: Option<PublicSet>,
    /// Image and sequence tasks: how every participant augments the public rows of each round,
    /// identically (seeded by the public set's digest, the round and the row), so a public row revisited
    /// in a later round is a fresh view of it. Absent: the rows are used as read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub augment: Option<Augment>,
    /// Regression tasks: the label column holds a number to predict (standardized with the card's
    /// statistics), its physical bounds and the monotone constraints the model should keep. Absent for
    /// classification; a regression card declares no `[label] classes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regression: Option<Regression>,
}

/// `[regression]`: a tabular task whose label is a real number (docs/data.md, "Regression tasks").
/// Teachers' predictions travel standardized, `(y - mean) / std`, so one soft label is one value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Regression {
    /// Mean of the target (stated in the card, usually the public set's): the standardization centre.
    pub mean: f64,
    /// Standard deviation of the target (> 0): the standardization unit.
    pub std: f64,
    /// Lowest physically possible target (a row below it is refused when read, never clipped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Highest physically possible target (a row above it is refused when read, never clipped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Monotone constraints: the target rises (or falls) with a numeric or ordinal feature, the
    /// other inputs held fixed (`[[regression.monotone]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub monotone: Vec<Monotone>,
}

/// One `[[regression.monotone]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Monotone {
    /// A numeric or ordinal feature of the card.
    pub feature: String,
    /// Whether the target rises or falls with it.
    pub direction: MonotoneDirection,
}

/// The direction of a monotone constraint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MonotoneDirection {
    /// The target does not fall when the feature rises.
    Increasing,
    /// The target does not rise when the feature rises.
    Decreasing,
}

impl MonotoneDirection {
    /// +1 for increasing, -1 for decreasing.
    pub fn sign(self) -> f32 {
        match self {
            MonotoneDirection::Increasing => 1.0,
            MonotoneDirection::Decreasing => -1.0,
        }
    }
}

impl Regression {
    /// `(y - mean) / std`.
    pub fn standardize(&self, y: f64) -> f32 {
        ((y - self.mean) / self.std) as f32
    }

    /// `z * std + mean`.
    pub fn destandardize(&self, z: f32) -> f64 {
        f64::from(z) * self.std + self.mean
    }

    /// Whether `y` lies within the declared bounds.
    pub fn in_bounds(&self, y: f64) -> bool {
        self.min.is_none_or(|m| y >= m) && self.max.is_none_or(|m| y <= m)
    }

    /// The bounds as text (`[0, 120]`, `>= 0`, `unbounded`).
    pub fn bounds_text(&self) -> String {
        match (self.min, self.max) {
            (Some(a), Some(b)) => format!("[{a}, {b}]"),
            (Some(a), None) => format!(">= {a}"),
            (None, Some(b)) => format!("<= {b}"),
            (None, None) => "unbounded".into(),
        }
    }
}

/// `[augment]`: the public-set augmentation of an image task (`shift`, `flip`) or of a sequence task
/// (`jitter`, `scaling`, `magnitude_warp`, `time_warp`, `slice`: Um et al. 2017; docs/data.md,
/// "Public-set augmentation"). Every field defaults to "off".
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Augment {
    /// Images: largest translation in pixels, each axis uniform in `[-shift, shift]`; the uncovered
    /// border is 0.
    #[serde(default, skip_serializing_if = "is_zero_usize")]
    pub shift: usize,
    /// Images: mirror left-right with probability 1/2.
    #[serde(default, skip_serializing_if = "is_false")]
    pub flip: bool,
    /// Sequences: standard deviation of Gaussian noise added to every value (in the series' units after
    /// normalization).
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub jitter: f64,
    /// Sequences: standard deviation of one Gaussian factor around 1 per channel that multiplies it.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub scaling: f64,
    /// Sequences: standard deviation of a smooth random curve around 1 (a cubic interpolation of four
    /// knots) that multiplies each channel.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub magnitude_warp: f64,
    /// Sequences: standard deviation of the knots of a smooth random speed curve around 1 that resamples
    /// the time axis (the series is read faster or slower in places, end points fixed).
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub time_warp: f64,
    /// Sequences: fraction of the length kept by a random window (`0.5 <= slice < 1`), stretched back to
    /// the full length by linear interpolation; 0 = off.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub slice: f64,
}

fn is_zero_usize(v: &usize) -> bool {
    *v == 0
}

fn is_zero_f64(v: &f64) -> bool {
    *v == 0.0
}

fn is_false(v: &bool) -> bool {
    !*v
}

impl Augment {
    /// Whether any sequence augmentation is on.
    pub fn has_sequence_fields(&self) -> bool {
        [
            self.jitter,
            self.scaling,
            self.magnitude_warp,
            self.time_warp,
            self.slice,
        ]
        .iter()
        .any(|v| *v != 0.0)
    }

    /// Whether any image augmentation is on.
    pub fn has_image_fields(&self) -> bool {
        self.shift != 0 || self.flip
    }

    /// Refuses an augmentation that changes nothing or shifts `shape` by more than a quarter of its smaller
    /// side, or that names sequence augmentations: `(card field, problem)`.
    pub fn check(&self, shape: ImageShape) -> Result<(), (&'static str, String)> {
        if self.has_sequence_fields() {
            return Err((
                "augment",
                "jitter, scaling, magnitude_warp, time_warp and slice augment sequences, not images".into(),
            ));
        }
        if self.shift == 0 && !self.flip {
            return Err((
                "augment",
                "[augment] with shift = 0 and flip = false changes nothing: remove it or set one".into(),
            ));
        }
        let limit = shape.height.min(shape.width) / 4;
        if self.shift > limit {
            return Err((
                "augment.shift",
                format!(
                    "a shift of {} pixels moves a {}x{} image by more than a quarter of its side (at most {limit})",
                    self.shift, shape.height, shape.width
                ),
            ));
        }
        Ok(())
    }

    /// Refuses a sequence augmentation that changes nothing, names image augmentations, or has a value out
    /// of its range: `(card field, problem)`.
    pub fn check_sequence(&self, shape: &SequenceShape) -> Result<(), (&'static str, String)> {
        if self.has_image_fields() {
            return Err(("augment", "shift and flip augment images, not sequences".into()));
        }
        if !self.has_sequence_fields() {
            return Err((
                "augment",
                "[augment] sets none of jitter, scaling, magnitude_warp, time_warp, slice: remove it or set one".into(),
            ));
        }
        for (field, v) in [
            ("augment.jitter", self.jitter),
            ("augment.scaling", self.scaling),
            ("augment.magnitude_warp", self.magnitude_warp),
            ("augment.time_warp", self.time_warp),
        ] {
            if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
                return Err((field, format!("{v} is not a standard deviation in [0, 1]")));
            }
        }
        if self.slice != 0.0 && !(self.slice.is_finite() && (0.5..1.0).contains(&self.slice)) {
            return Err((
                "augment.slice",
                format!("{} is not a fraction of the length in [0.5, 1) (0 = off)", self.slice),
            ));
        }
        if (self.time_warp != 0.0 || self.slice != 0.0) && shape.length < 4 {
            return Err((
                "augment",
                format!(
                    "time_warp and slice need series of at least 4 steps, the card says {}",
                    shape.length
                ),
            ));
        }
        Ok(())
    }
}

/// `[label]`: where the class is and which classes exist.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Label {
    /// The label column of a CSV (required for tabular tasks; unused for images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// Class texts as they appear in the label column; class id = index. Empty for a regression
    /// task (`[regression]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<String>,
}

/// One `[[features]]` entry: a CSV column and how it is encoded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Feature {
    /// A number; one input feature, imputed and scaled with its statistics.
    Numeric {
        /// Column name.
        name: String,
    },
    /// A category; one-hot over `levels` (plus one implicit `<other>` level with
    /// `unknown = "other"`). One-hot values are never scaled.
    Categorical {
        /// Column name.
        name: String,
        /// Every known level, in one-hot order.
        levels: Vec<String>,
        /// What a cell holding none of `levels` does.
        #[serde(default)]
        unknown: UnknownLevel,
    },
    /// An ordered category; one input feature, its rank (0-based index in `levels`), imputed and
    /// scaled like a number. An unknown level is always refused.
    Ordinal {
        /// Column name.
        name: String,
        /// The levels, lowest first.
        levels: Vec<String>,
    },
}

impl Feature {
    /// The column name.
    pub fn name(&self) -> &str {
        match self {
            Feature::Numeric { name } | Feature::Categorical { name, .. } | Feature::Ordinal { name, .. } => name,
        }
    }

    /// Number of model inputs this column becomes.
    pub fn width(&self) -> usize {
        match self {
            Feature::Numeric { .. } | Feature::Ordinal { .. } => 1,
            Feature::Categorical { levels, unknown, .. } => levels.len() + usize::from(*unknown == UnknownLevel::Other),
        }
    }

    /// The stable kind name used in the card (`numeric`, `categorical`, `ordinal`).
    pub fn kind_name(&self) -> &'static str {
        match self {
            Feature::Numeric { .. } => "numeric",
            Feature::Categorical { .. } => "categorical",
            Feature::Ordinal { .. } => "ordinal",
        }
    }
}

/// One `[[modalities]]` entry: a block of feature columns measured together (one assay, one
/// questionnaire), which an institution's file holds whole or not at all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Modality {
    /// The block's name (`csf`, `clinical`): unique, non-empty.
    pub name: String,
    /// The card feature columns of the block, in `[[features]]` order.
    pub features: Vec<String>,
}

/// Where a modality block lies in the encoded row (see [`TaskCard::modality_ranges`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModalityRange {
    /// The block's name.
    pub name: String,
    /// Its model inputs (a categorical column is several one-hot inputs): one contiguous range.
    pub inputs: std::ops::Range<usize>,
    /// The index of its presence input (1: the row holds the block, 0: the file lacks it), after every
    /// feature input.
    pub indicator: usize,
}

impl ModalityRange {
    /// Model inputs of the block.
    pub fn width(&self) -> usize {
        self.inputs.len()
    }
}

/// Name of the presence input of modality block `name` in [`TaskCard::feature_names`].
pub fn presence_input_name(name: &str) -> String {
    format!("<present:{name}>")
}

/// What a categorical cell outside the declared levels does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownLevel {
    /// The row is refused (an error naming file, line and column).
    #[default]
    Refuse,
    /// The cell goes to an extra implicit level `<other>`, the last one-hot input of the column.
    Other,
}

/// `[image]`: the shape of every image; inputs are `height * width * channels` values, row-major
/// with the channel last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageShape {
    /// Rows of pixels.
    pub height: usize,
    /// Columns of pixels.
    pub width: usize,
    /// Values per pixel (1 grey, 3 RGB).
    pub channels: usize,
}

/// `[sequence]`: every series of a sequence task (time series); inputs are `channels * length`
/// values, channel-major (value `c * length + t` is channel `c` at time `t`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SequenceShape {
    /// Values per time step (the `.ts` format's dimensions; 1 = univariate).
    pub channels: usize,
    /// Time steps; every series must have exactly this many (a ragged series is refused).
    pub length: usize,
    /// How each series is normalized when read.
    #[serde(default)]
    pub normalize: SeriesNorm,
    /// `normalize = "standard"`: each channel's mean (from the public set, or stated), one per channel.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mean: Vec<f64>,
    /// `normalize = "standard"`: each channel's standard deviation (finite, > 0), one per channel.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub std: Vec<f64>,
    /// Windows cut from long series in CSV files (`[sequence.windows]`); absent: `.ts` files of
    /// ready-made series.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub windows: Option<Windows>,
}

/// `[sequence.windows]`: how a CSV of long series (one row per time step) becomes labelled windows
/// (docs/data.md, "Windows cut from long series").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Windows {
    /// The time column; rows must be in strictly increasing time order (per entity). Numbers, ISO dates
    /// (`2004-01-31`) or US dates (`1/31/2004`).
    pub time: String,
    /// An entity column (a ticker, a branch): one series per value, and no window crosses two. Absent:
    /// the whole file is one series.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity: Option<String>,
    /// The columns that become the channels, in channel order (`[sequence] channels` of them).
    pub columns: Vec<String>,
    /// What each channel holds: the values, their differences, or their log returns (`ln(x_t / x_{t-1})`,
    /// which needs positive values).
    #[serde(default)]
    pub transform: Transform,
    /// Steps between the starts of two windows (>= 1).
    pub stride: usize,
    /// The label of each window.
    pub label: WindowLabel,
}

/// A channel transform of `[sequence.windows]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transform {
    /// The values as read.
    #[default]
    None,
    /// `x_t - x_{t-1}` (the series loses its first step).
    Diff,
    /// `ln(x_t / x_{t-1})` (the series loses its first step).
    LogReturn,
}

/// `[sequence.windows.label]`: the label rule of a window, computed from a column's values after the
/// window's last step (so the label is what happens next, never what the window shows).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "kebab-case", deny_unknown_fields)]
pub enum WindowLabel {
    /// `up` when `column` `horizon` steps after the window's last step is above its value at that step,
    /// else `down`. Classes `["down", "up"]`.
    Direction {
        /// The column whose future decides.
        column: String,
        /// Steps ahead (>= 1).
        horizon: usize,
    },
    /// `high` when the standard deviation of `column`'s log returns over the `horizon` steps after the
    /// window is above `threshold`, else `low`. Classes `["low", "high"]`. State the threshold (for
    /// example the public set's median), never a private set's.
    Volatility {
        /// The column (positive values: prices).
        column: String,
        /// Steps ahead (>= 2).
        horizon: usize,
        /// The volatility that separates `low` from `high` (finite, > 0).
        threshold: f64,
    },
}

impl Windows {
    /// Refuses windows that contradict the card's `channels` or `classes`: `(card field, problem)`.
    pub fn check(&self, channels: usize, classes: &[String]) -> Result<(), (String, String)> {
        let field = |f: &str| format!("sequence.windows.{f}");
        if self.columns.len() != channels {
            return Err((
                field("columns"),
                format!(
                    "{} columns for {channels} channels: name one column per channel",
                    self.columns.len()
                ),
            ));
        }
        let mut seen = BTreeSet::new();
        for c in &self.columns {
            if c.trim().is_empty() || padded(c) {
                return Err((
                    field("columns"),
                    format!("`{c}` is not a column name (empty or padded)"),
                ));
            }
            if !seen.insert(c.as_str()) {
                return Err((field("columns"), format!("column `{c}` is named twice")));
            }
            if *c == self.time || self.entity.as_deref() == Some(c) {
                return Err((field("columns"), format!("`{c}` is the time or entity column")));
            }
        }
        if self.time.trim().is_empty() || padded(&self.time) {
            return Err((field("time"), "the time column's name is empty or padded".into()));
        }
        if let Some(e) = &self.entity {
            if e.trim().is_empty() || padded(e) || *e == self.time {
                return Err((field("entity"), format!("`{e}` is empty, padded or the time column")));
            }
        }
        if self.stride == 0 {
            return Err((field("stride"), "must be at least 1".into()));
        }
        let min_horizon = match self.label {
            WindowLabel::Direction { .. } => 1,
            WindowLabel::Volatility { threshold, .. } => {
                if !(threshold.is_finite() && threshold > 0.0) {
                    return Err((
                        field("label.threshold"),
                        format!("{threshold} is not a finite number > 0"),
                    ));
                }
                2
            }
        };
        if self.label.horizon() < min_horizon {
            return Err((
                field("label.horizon"),
                format!(
                    "{} steps ahead; this rule needs at least {min_horizon}",
                    self.label.horizon()
                ),
            ));
        }
        if self.label.column().trim().is_empty() || *self.label.column() == self.time {
            return Err((
                field("label.column"),
                "name the column whose future decides the label".into(),
            ));
        }
        let want = self.label.classes();
        if classes.len() != 2 || classes[0] != want[0] || classes[1] != want[1] {
            return Err((
                "label.classes".into(),
                format!(
                    "the `{}` rule labels windows {:?}: declare classes = [\"{}\", \"{}\"]",
                    match self.label {
                        WindowLabel::Direction { .. } => "direction",
                        WindowLabel::Volatility { .. } => "volatility",
                    },
                    want,
                    want[0],
                    want[1]
                ),
            ));
        }
        Ok(())
    }
}

impl WindowLabel {
    /// The column the rule reads.
    pub fn column(&self) -> &str {
        match self {
            WindowLabel::Direction { column, .. } | WindowLabel::Volatility { column, .. } => column,
        }
    }

    /// Steps after a window the rule looks at.
    pub fn horizon(&self) -> usize {
        match self {
            WindowLabel::Direction { horizon, .. } | WindowLabel::Volatility { horizon, .. } => *horizon,
        }
    }

    /// The classes the rule produces, in class-id order.
    pub fn classes(&self) -> [&'static str; 2] {
        match self {
            WindowLabel::Direction { .. } => ["down", "up"],
            WindowLabel::Volatility { .. } => ["low", "high"],
        }
    }
}

/// How a sequence task's series are normalized when read (no statistics from private rows either way).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeriesNorm {
    /// Values are used as read.
    #[default]
    None,
    /// Each channel of each series is z-normalized on its own (mean 0, standard deviation 1; a
    /// constant channel becomes 0), the usual preparation of the UCR archive. It erases each series'
    /// level and scale: not for tasks about them (volatility).
    Series,
    /// Each channel is standardized with the card's `mean` and `std` for it (statistics of the public set,
    /// or stated), the same numbers on every node.
    Standard,
}

impl SequenceShape {
    /// Normalizes the `length` values of channel `c` of one series in place, as the card says.
    pub fn normalize_channel(&self, c: usize, x: &mut [f32]) {
        match self.normalize {
            SeriesNorm::None => {}
            SeriesNorm::Series => {
                let n = x.len() as f64;
                let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
                let sd = (x.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n).sqrt();
                for v in x.iter_mut() {
                    *v = if sd > 1e-12 {
                        ((f64::from(*v) - mean) / sd) as f32
                    } else {
                        0.0
                    };
                }
            }
            SeriesNorm::Standard => {
                let (mean, sd) = (self.mean[c], self.std[c]);
                for v in x.iter_mut() {
                    *v = ((f64::from(*v) - mean) / sd) as f32;
                }
            }
        }
    }
}

/// How a missing cell's fill value is chosen from the public set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Impute {
    /// Numeric/ordinal: mean of the present public values; categorical: the most frequent level.
    Mean,
    /// Numeric/ordinal: median of the present public values; categorical: the most frequent level.
    Median,
    /// Numeric/ordinal: 0 (raw units, before scaling); categorical: an all-zero one-hot block.
    Zero,
}

/// How numeric and ordinal inputs are scaled after imputation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scale {
    /// `(x - mean) / std` with the card's statistics.
    #[serde(rename = "standard")]
    Standard,
    /// Values are passed as they are.
    #[serde(rename = "none")]
    Unchanged,
}

/// `[preprocessing]`: the imputation and scaling every participant applies, with fixed statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preprocessing {
    /// How the fills were chosen (and, for `zero`, what they must be).
    pub impute: Impute,
    /// Scaling of numeric and ordinal inputs.
    pub scale: Scale,
    /// Per-feature statistics (canonical order: the features' order).
    #[serde(default)]
    pub stats: Vec<FeatureStats>,
}

/// `[[preprocessing.stats]]`: the statistics of one feature column.
///
/// Numeric and ordinal features need `fill`, and with `scale = "standard"` also `mean` and `std`;
/// categorical features need `fill_level` unless `impute = "zero"`, and nothing else.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureStats {
    /// The feature column.
    pub name: String,
    /// Numeric/ordinal: what a missing cell becomes, in raw units (ordinal: a rank).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fill: Option<f64>,
    /// Numeric/ordinal: mean after imputation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean: Option<f64>,
    /// Numeric/ordinal: standard deviation after imputation, finite and > 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std: Option<f64>,
    /// Categorical: the level a missing cell becomes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fill_level: Option<String>,
}

/// `[public]`: the public transfer set the statistics were computed from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicSet {
    /// SHA-256 of the public file's bytes, 64 lowercase hex digits.
    pub sha256: String,
    /// Number of data rows (samples) in it, >= 1.
    pub rows: u64,
    /// Its file format.
    pub format: PublicFormat,
}

impl PublicSet {
    /// The declared SHA-256 as bytes (`None` when `sha256` is not 64 hex digits; a validated card always
    /// has them).
    pub fn digest(&self) -> Option<[u8; 32]> {
        let text = self.sha256.as_bytes();
        if text.len() != 64 {
            return None;
        }
        let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        let mut out = [0u8; 32];
        for (k, pair) in text.chunks_exact(2).enumerate() {
            out[k] = nibble(pair[0])? << 4 | nibble(pair[1])?;
        }
        Some(out)
    }
}

/// File format of the public transfer set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PublicFormat {
    /// A CSV with a header row (tabular tasks).
    Csv,
    /// An IDX image file (image tasks).
    Idx,
    /// A folder of images, one sub-folder per class (image tasks).
    ImageFolder,
    /// A `.ts` text file of series (sktime/aeon format; sequence tasks).
    Ts,
}

impl PublicFormat {
    /// The card's name of the format (`csv`, `idx`, `image-folder`, `ts`).
    pub fn name(self) -> &'static str {
        match self {
            PublicFormat::Csv => "csv",
            PublicFormat::Idx => "idx",
            PublicFormat::ImageFolder => "image-folder",
            PublicFormat::Ts => "ts",
        }
    }
}

/// Text cells that mean "missing" (shared with the catalog reader).
pub(crate) fn is_missing(cell: &str) -> bool {
    crate::tabular::MISSING.contains(&cell)
}

impl TaskCard {
    /// Parses and validates a card; `source` names it in errors (usually the path). The result
    /// is canonical: statistics are reordered to follow the features.
    pub fn from_toml_str(text: &str, source: &str) -> Result<TaskCard, DataError> {
        let card: TaskCard = toml::from_str(text).map_err(|e| DataError::CardSyntax {
            file: source.to_string(),
            detail: e.to_string().trim_end().to_string(),
        })?;
        card.check(source)?;
        Ok(card.canonical())
    }

    /// Reads and validates a card file.
    pub fn load(path: &Path) -> Result<TaskCard, DataError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| DataError::Io {
            file: file.clone(),
            source,
        })?;
        TaskCard::from_toml_str(&text, &file)
    }

    /// The card as TOML, fields in declaration order.
    pub fn to_toml_string(&self) -> String {
        toml::to_string(self).expect("a TaskCard holds only strings, numbers, arrays and tables, which TOML encodes")
    }

    /// SHA-256 over `CARD_DIGEST_TAG` followed by the UTF-8 bytes of `to_toml_string()` of the
    /// canonical card (statistics in feature order). Two files that differ only in comments,
    /// whitespace, key order or statistics order have the same digest; any change of a value
    /// changes it. Meant for a validated card.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(CARD_DIGEST_TAG);
        h.update(self.canonical().to_toml_string().as_bytes());
        h.finalize().into()
    }

    /// `digest()` as lowercase hex.
    pub fn digest_hex(&self) -> String {
        hex::encode(self.digest())
    }

    /// Number of model inputs: the sum of the features' widths (plus one presence input per modality
    /// block), or `height * width * channels`, or `channels * length`.
    pub fn input_dim(&self) -> usize {
        match (self.image, self.sequence.as_ref()) {
            (Some(s), _) => s.height.saturating_mul(s.width).saturating_mul(s.channels),
            (None, Some(s)) => s.channels.saturating_mul(s.length),
            (None, None) => self.features.iter().map(Feature::width).sum::<usize>() + self.modalities.len(),
        }
    }

    /// Each modality block's name, model input range and presence input, in `[[modalities]]` order;
    /// empty when the card declares no blocks. The blocks' inputs follow each other in that order, then
    /// come the presence inputs, one per block in the same order (a validated card; on one that is not,
    /// a block's range spans its features' first to last input).
    pub fn modality_ranges(&self) -> Vec<ModalityRange> {
        let mut at = BTreeMap::new();
        let mut offset = 0;
        for f in &self.features {
            at.insert(f.name(), (offset, offset + f.width()));
            offset += f.width();
        }
        self.modalities
            .iter()
            .enumerate()
            .map(|(k, m)| {
                let spans: Vec<(usize, usize)> =
                    m.features.iter().filter_map(|f| at.get(f.as_str()).copied()).collect();
                let start = spans.iter().map(|s| s.0).min().unwrap_or(0);
                let end = spans.iter().map(|s| s.1).max().unwrap_or(start);
                ModalityRange {
                    name: m.name.clone(),
                    inputs: start..end,
                    indicator: offset + k,
                }
            })
            .collect()
    }

    /// The class texts, class id = index. A regression task has one output, named after its label
    /// column (a model with one output predicts the standardized target).
    pub fn classes(&self) -> &[String] {
        match (&self.regression, &self.label.column) {
            (Some(_), Some(column)) => std::slice::from_ref(column),
            _ => &self.label.classes,
        }
    }

    /// Whether the task predicts a number (`[regression]`).
    pub fn is_regression(&self) -> bool {
        self.regression.is_some()
    }

    /// The model input of a numeric or ordinal feature column (`None` for a categorical one or an
    /// unknown name).
    pub fn numeric_input(&self, name: &str) -> Option<usize> {
        let mut offset = 0;
        for f in &self.features {
            if f.name() == name {
                return (!matches!(f, Feature::Categorical { .. })).then_some(offset);
            }
            offset += f.width();
        }
        None
    }

    /// One name per model input: `column` for numeric and ordinal features, `column=level` for
    /// one-hot inputs (`column=<other>` for the implicit level), then `<present:block>` for each
    /// modality block's presence input, `pixel_Y_X` (or `pixel_Y_X_cC`
    /// with several channels) for images, `tT` (or `cC_tT` with several channels) for sequences.
    pub fn feature_names(&self) -> Vec<String> {
        if let Some(s) = self.image {
            let mut out = Vec::with_capacity(self.input_dim());
            for y in 0..s.height {
                for x in 0..s.width {
                    for c in 0..s.channels {
                        out.push(if s.channels == 1 {
                            format!("pixel_{y}_{x}")
                        } else {
                            format!("pixel_{y}_{x}_c{c}")
                        });
                    }
                }
            }
            return out;
        }
        if let Some(s) = &self.sequence {
            let mut out = Vec::with_capacity(self.input_dim());
            for c in 0..s.channels {
                for t in 0..s.length {
                    out.push(if s.channels == 1 {
                        format!("t{t}")
                    } else {
                        format!("c{c}_t{t}")
                    });
                }
            }
            return out;
        }
        let mut out = Vec::new();
        for f in &self.features {
            match f {
                Feature::Numeric { name } | Feature::Ordinal { name, .. } => out.push(name.clone()),
                Feature::Categorical { name, levels, unknown } => {
                    out.extend(levels.iter().map(|l| format!("{name}={l}")));
                    if *unknown == UnknownLevel::Other {
                        out.push(format!("{name}={OTHER_LEVEL}"));
                    }
                }
            }
        }
        out.extend(self.modalities.iter().map(|m| presence_input_name(&m.name)));
        out
    }

    /// One line for people: name, shape, classes, public set and the card digest.
    pub fn summary(&self) -> String {
        let shape = match (self.image, self.sequence.as_ref()) {
            (Some(s), _) => format!("image {}x{}x{}", s.height, s.width, s.channels),
            (None, Some(s)) => format!("sequence {}x{}", s.channels, s.length),
            (None, None) if self.modalities.is_empty() => format!("{} columns", self.features.len()),
            (None, None) => format!(
                "{} columns in {} modality blocks",
                self.features.len(),
                self.modalities.len()
            ),
        };
        let target = match &self.regression {
            Some(r) => format!(
                "regression of {} (bounds {}, {} monotone)",
                self.classes().join(""),
                r.bounds_text(),
                r.monotone.len()
            ),
            None => format!("classes {}", self.classes().join("|")),
        };
        format!(
            "task `{}`: {shape} ({} inputs), {target}, public set {} rows, card sha256:{}",
            self.name,
            self.input_dim(),
            self.public.rows,
            self.digest_hex()
        )
    }

    /// The statistics of feature `name`, if the card states them.
    pub fn stats_for(&self, name: &str) -> Option<&FeatureStats> {
        self.preprocessing.as_ref()?.stats.iter().find(|s| s.name == name)
    }

    /// This card with `modalities` as its `[[modalities]]`, its `[[features]]` reordered block by block
    /// (each block's features in the order the block lists them), validated: how a drafted card (from
    /// `infer_card`, in the public file's column order) gets its blocks. The refusals are `validate`'s.
    pub fn with_modalities(mut self, modalities: Vec<Modality>) -> Result<TaskCard, DataError> {
        let mut features = std::mem::take(&mut self.features);
        let mut ordered = Vec::with_capacity(features.len());
        for f in modalities.iter().flat_map(|m| &m.features) {
            if let Some(k) = features.iter().position(|x| x.name() == f) {
                ordered.push(features.remove(k));
            }
        }
        // Features no block names stay after the blocks' (and are refused by the check below).
        ordered.append(&mut features);
        self.features = ordered;
        self.modalities = modalities;
        self.check("task card")?;
        Ok(self.canonical())
    }

    /// Refuses a card whose fields contradict each other; the error names the field.
    pub fn validate(&self) -> Result<(), DataError> {
        self.check("task card")
    }

    /// The same card with statistics in feature order (unknown names last, as they were).
    fn canonical(&self) -> TaskCard {
        let mut card = self.clone();
        if let Some(p) = card.preprocessing.as_mut() {
            let pos = |s: &FeatureStats| {
                self.features
                    .iter()
                    .position(|f| f.name() == s.name)
                    .unwrap_or(usize::MAX)
            };
            p.stats.sort_by_key(pos);
        }
        card
    }

    /// `validate` with `file` naming the card in errors.
    pub(crate) fn check(&self, file: &str) -> Result<(), DataError> {
        let bad = |field: String, problem: String| {
            Err(DataError::Card {
                file: file.to_string(),
                field,
                problem,
            })
        };
        if self.version != CARD_VERSION {
            return bad(
                "version".into(),
                format!(
                    "version {} is not supported (this build reads version {CARD_VERSION})",
                    self.version
                ),
            );
        }
        if self.name.trim().is_empty() {
            return bad("name".into(), "the task name is empty".into());
        }
        let classes = &self.label.classes;
        if let Some(r) = &self.regression {
            self.check_regression(r, file)?;
        } else if classes.len() < 2 {
            return bad(
                "label.classes".into(),
                format!("{} classes declared; a task needs at least two", classes.len()),
            );
        }
        if let Some(k) = classes.iter().position(|c| c.is_empty()) {
            return bad(format!("label.classes[{k}]"), "a class text is empty".into());
        }
        if let Some(k) = classes.iter().position(|c| padded(c)) {
            return bad(format!("label.classes[{k}]"), PADDED.into());
        }
        if let Some(d) = first_duplicate(classes) {
            return bad("label.classes".into(), format!("class `{d}` is declared twice"));
        }
        if !self.modalities.is_empty() && (self.image.is_some() || self.sequence.is_some()) {
            return bad(
                "modalities".into(),
                "[[modalities]] groups the [[features]] of a tabular card; image and sequence cards have none".into(),
            );
        }
        let kinds = usize::from(self.image.is_some())
            + usize::from(self.sequence.is_some())
            + usize::from(!self.features.is_empty());
        if kinds > 1 {
            return bad(
                if self.image.is_some() { "image" } else { "sequence" }.into(),
                "a card declares one of [image], [sequence] or [[features]], not several".into(),
            );
        }
        if kinds == 0 {
            return bad(
                "features".into(),
                "a tabular card needs at least one [[features]] entry (or declare [image] or [sequence])".into(),
            );
        }
        if let Some(shape) = self.image {
            for (field, v) in [
                ("image.height", shape.height),
                ("image.width", shape.width),
                ("image.channels", shape.channels),
            ] {
                if v == 0 {
                    return bad(field.into(), "must be at least 1".into());
                }
            }
            if shape
                .height
                .checked_mul(shape.width)
                .and_then(|p| p.checked_mul(shape.channels))
                .is_none()
            {
                return bad("image".into(), "height * width * channels overflows".into());
            }
            if self.preprocessing.is_some() {
                return bad(
                    "preprocessing".into(),
                    "image cards take no [preprocessing]: pixels are scaled to [0, 1]".into(),
                );
            }
            if matches!(self.public.format, PublicFormat::Csv | PublicFormat::Ts) {
                return bad(
                    "public.format".into(),
                    format!(
                        "an image task's public set is `idx` or `image-folder`, not `{}`",
                        self.public.format.name()
                    ),
                );
            }
            if let Some(a) = self.augment {
                if let Err((field, problem)) = a.check(shape) {
                    return bad(field.into(), problem);
                }
            }
        } else if let Some(shape) = &self.sequence {
            if shape.channels == 0 {
                return bad("sequence.channels".into(), "must be at least 1".into());
            }
            if shape.length < 2 {
                return bad("sequence.length".into(), "a series needs at least 2 time steps".into());
            }
            if shape.channels.checked_mul(shape.length).is_none_or(|d| d > 1 << 24) {
                return bad(
                    "sequence".into(),
                    "channels * length is more than 16777216 inputs".into(),
                );
            }
            if self.preprocessing.is_some() {
                return bad(
                    "preprocessing".into(),
                    "sequence cards take no [preprocessing]: set [sequence] normalize".into(),
                );
            }
            if shape.normalize == SeriesNorm::Standard {
                for (field, v) in [("sequence.mean", &shape.mean), ("sequence.std", &shape.std)] {
                    if v.len() != shape.channels {
                        return bad(
                            field.into(),
                            format!(
                                "normalize = \"standard\" needs one value per channel ({}), got {}",
                                shape.channels,
                                v.len()
                            ),
                        );
                    }
                }
                if let Some(m) = shape.mean.iter().find(|m| !m.is_finite()) {
                    return bad("sequence.mean".into(), format!("{m} is not a finite number"));
                }
                if let Some(sd) = shape.std.iter().find(|sd| !(sd.is_finite() && **sd > 0.0)) {
                    return bad("sequence.std".into(), format!("{sd} is not a finite number > 0"));
                }
            } else if !shape.mean.is_empty() || !shape.std.is_empty() {
                return bad(
                    "sequence.mean".into(),
                    "mean and std are the statistics of normalize = \"standard\" only".into(),
                );
            }
            let want = if shape.windows.is_some() {
                PublicFormat::Csv
            } else {
                PublicFormat::Ts
            };
            if self.public.format != want {
                return bad(
                    "public.format".into(),
                    format!(
                        "a sequence task's public set is `{}` ({}), not `{}`",
                        want.name(),
                        if shape.windows.is_some() {
                            "long series cut into windows"
                        } else {
                            "series files"
                        },
                        self.public.format.name()
                    ),
                );
            }
            if let Some(w) = &shape.windows {
                if let Err((field, problem)) = w.check(shape.channels, classes) {
                    return bad(field, problem);
                }
            }
            if let Some(a) = self.augment {
                if let Err((field, problem)) = a.check_sequence(shape) {
                    return bad(field.into(), problem);
                }
            }
        } else {
            if self.augment.is_some() {
                return bad(
                    "augment".into(),
                    "[augment] applies to image and sequence tasks only (tabular rows are used as read)".into(),
                );
            }
            self.check_tabular(file)?;
        }
        if self.public.sha256.len() != 64
            || !self
                .public
                .sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return bad(
                "public.sha256".into(),
                format!("`{}` is not 64 lowercase hex digits", self.public.sha256),
            );
        }
        if self.public.rows == 0 {
            return bad("public.rows".into(), "the public set must hold at least one row".into());
        }
        if let Some(b) = &self.benchmark {
            let hex = b.sha256.len() == 64
                && b.sha256
                    .bytes()
                    .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c));
            if !hex {
                return bad(
                    "benchmark.sha256".into(),
                    format!("`{}` is not 64 lowercase hex digits", b.sha256),
                );
            }
            if b.rows == 0 {
                return bad(
                    "benchmark.rows".into(),
                    "the benchmark set must hold at least one row".into(),
                );
            }
            let want = if self.image.is_some() {
                PublicFormat::Idx
            } else if let Some(seq) = &self.sequence {
                if seq.windows.is_some() {
                    PublicFormat::Csv
                } else {
                    PublicFormat::Ts
                }
            } else {
                PublicFormat::Csv
            };
            if b.format != want {
                return bad(
                    "benchmark.format".into(),
                    format!("this task's benchmark set is one `{}` file", want.name()),
                );
            }
        }
        Ok(())
    }

    /// `[regression]`: a tabular card without classes, finite statistics, ordered bounds, monotone
    /// constraints on numeric or ordinal features only, each named once.
    fn check_regression(&self, r: &Regression, file: &str) -> Result<(), DataError> {
        let bad = |field: String, problem: String| {
            Err(DataError::Card {
                file: file.to_string(),
                field,
                problem,
            })
        };
        if !self.label.classes.is_empty() {
            return bad(
                "label.classes".into(),
                "a regression task ([regression]) predicts a number and declares no classes".into(),
            );
        }
        if self.image.is_some() || self.sequence.is_some() {
            return bad(
                "regression".into(),
                "[regression] applies to tabular tasks ([[features]]) only".into(),
            );
        }
        if !r.mean.is_finite() {
            return bad("regression.mean".into(), format!("{} is not a finite number", r.mean));
        }
        if !(r.std.is_finite() && r.std > 0.0) {
            return bad("regression.std".into(), format!("{} is not a finite number > 0", r.std));
        }
        for (field, v) in [("regression.min", r.min), ("regression.max", r.max)] {
            if let Some(v) = v.filter(|v| !v.is_finite()) {
                return bad(field.into(), format!("{v} is not a finite number"));
            }
        }
        if let (Some(lo), Some(hi)) = (r.min, r.max) {
            if lo >= hi {
                return bad("regression.max".into(), format!("max {hi} is not above min {lo}"));
            }
        }
        let mut seen = BTreeSet::new();
        for (i, m) in r.monotone.iter().enumerate() {
            let field = format!("regression.monotone[{i}].feature");
            match self.features.iter().find(|f| f.name() == m.feature) {
                None => {
                    return bad(field, format!("`{}` is not a feature of the card", m.feature));
                }
                Some(Feature::Categorical { .. }) => {
                    return bad(
                        field,
                        format!(
                            "`{}` is categorical: a monotone constraint needs a numeric or ordinal feature",
                            m.feature
                        ),
                    );
                }
                Some(_) => {}
            }
            if !seen.insert(m.feature.as_str()) {
                return bad(field, format!("`{}` is constrained twice", m.feature));
            }
        }
        Ok(())
    }

    fn check_tabular(&self, file: &str) -> Result<(), DataError> {
        let bad = |field: String, problem: String| {
            Err(DataError::Card {
                file: file.to_string(),
                field,
                problem,
            })
        };
        let label = match self.label.column.as_deref() {
            Some(c) if padded(c) => return bad("label.column".into(), PADDED.into()),
            Some(c) if !c.trim().is_empty() => c,
            _ => return bad("label.column".into(), "a tabular card names its label column".into()),
        };
        let mut seen = BTreeSet::new();
        for (i, f) in self.features.iter().enumerate() {
            let field = |what: &str| format!("features[{i}].{what}");
            if f.name().trim().is_empty() {
                return bad(field("name"), "a feature name is empty".into());
            }
            if padded(f.name()) {
                return bad(field("name"), PADDED.into());
            }
            if f.name() == label {
                return bad(
                    field("name"),
                    format!("`{label}` is the label column; it cannot also be a feature"),
                );
            }
            if !seen.insert(f.name()) {
                return bad(field("name"), format!("column `{}` is declared twice", f.name()));
            }
            if let Feature::Categorical { levels, .. } | Feature::Ordinal { levels, .. } = f {
                if levels.is_empty() {
                    return bad(field("levels"), format!("`{}` declares no levels", f.name()));
                }
                if let Some(d) = first_duplicate(levels) {
                    return bad(
                        field("levels"),
                        format!("level `{d}` of `{}` is declared twice", f.name()),
                    );
                }
                if let Some(m) = levels.iter().find(|l| is_missing(l)) {
                    return bad(
                        field("levels"),
                        format!("`{m}` means a missing cell and cannot be a level of `{}`", f.name()),
                    );
                }
                if let Some(k) = levels.iter().position(|l| padded(l)) {
                    return bad(format!("features[{i}].levels[{k}]"), PADDED.into());
                }
            }
        }
        self.check_modalities(file)?;
        if self.public.format != PublicFormat::Csv {
            return bad("public.format".into(), "a tabular task's public set is `csv`".into());
        }
        let Some(prep) = &self.preprocessing else {
            return bad(
                "preprocessing".into(),
                "a tabular card needs [preprocessing] (impute, scale and the statistics)".into(),
            );
        };
        let mut stats: BTreeMap<&str, (usize, &FeatureStats)> = BTreeMap::new();
        for (i, s) in prep.stats.iter().enumerate() {
            let field = format!("preprocessing.stats[{i}].name");
            if !self.features.iter().any(|f| f.name() == s.name) {
                return bad(field, format!("`{}` is not a feature of the card", s.name));
            }
            if stats.insert(&s.name, (i, s)).is_some() {
                return bad(field, format!("statistics for `{}` are given twice", s.name));
            }
        }
        let mut missing = Vec::new();
        for f in &self.features {
            let needs_stats = !matches!(f, Feature::Categorical { .. }) || prep.impute != Impute::Zero;
            let Some(&(i, s)) = stats.get(f.name()) else {
                if needs_stats {
                    missing.push(format!("`{}`", f.name()));
                }
                continue;
            };
            let field = |what: &str| format!("preprocessing.stats[{i}].{what}");
            match f {
                Feature::Categorical { levels, .. } => {
                    for (what, v) in [("fill", s.fill), ("mean", s.mean), ("std", s.std)] {
                        if v.is_some() {
                            return bad(
                                field(what),
                                format!("`{}` is categorical: it takes only `fill_level`", f.name()),
                            );
                        }
                    }
                    match (&s.fill_level, prep.impute) {
                        (Some(_), Impute::Zero) => {
                            return bad(
                                field("fill_level"),
                                "with impute = \"zero\" a missing category is an all-zero block; drop fill_level"
                                    .into(),
                            )
                        }
                        (None, Impute::Mean | Impute::Median) => {
                            return bad(field("fill_level"), format!("no fill level for `{}`", f.name()))
                        }
                        (Some(l), _) if !levels.contains(l) => {
                            return bad(field("fill_level"), format!("`{l}` is not a level of `{}`", f.name()))
                        }
                        _ => {}
                    }
                }
                Feature::Numeric { .. } | Feature::Ordinal { .. } => {
                    if s.fill_level.is_some() {
                        return bad(
                            field("fill_level"),
                            format!("`{}` is {}: it takes `fill`, `mean` and `std`", f.name(), f.kind_name()),
                        );
                    }
                    let fill = match s.fill {
                        Some(v) if v.is_finite() => v,
                        Some(v) => return bad(field("fill"), format!("{v} is not a finite number")),
                        None => return bad(field("fill"), format!("no fill value for `{}`", f.name())),
                    };
                    if prep.impute == Impute::Zero && fill != 0.0 {
                        return bad(field("fill"), format!("impute = \"zero\" but the fill is {fill}"));
                    }
                    if let Feature::Ordinal { levels, .. } = f {
                        if fill < 0.0 || fill > (levels.len() - 1) as f64 {
                            return bad(
                                field("fill"),
                                format!("{fill} is not a rank of `{}` (0..={})", f.name(), levels.len() - 1),
                            );
                        }
                    }
                    if let Some(m) = s.mean {
                        if !m.is_finite() {
                            return bad(field("mean"), format!("{m} is not a finite number"));
                        }
                    }
                    if let Some(sd) = s.std {
                        if !(sd.is_finite() && sd > 0.0) {
                            return bad(field("std"), format!("{sd} is not a finite number > 0"));
                        }
                    }
                    if prep.scale == Scale::Standard {
                        for (what, v) in [("mean", s.mean), ("std", s.std)] {
                            if v.is_none() {
                                return bad(
                                    field(what),
                                    format!("scale = \"standard\" needs the {what} of `{}`", f.name()),
                                );
                            }
                        }
                    }
                }
            }
        }
        if !missing.is_empty() {
            return bad(
                "preprocessing.stats".into(),
                format!("no statistics for {}", missing.join(", ")),
            );
        }
        Ok(())
    }
}

impl TaskCard {
    /// `[[modalities]]` of a tabular card whose features passed their checks: at least two blocks, unique
    /// non-empty names, every named column a feature, no feature in two blocks, every feature in one, and
    /// the blocks listing the features in `[[features]]` order, block after block (so each block is one
    /// run of model inputs).
    fn check_modalities(&self, file: &str) -> Result<(), DataError> {
        let bad = |field: String, problem: String| {
            Err(DataError::Card {
                file: file.to_string(),
                field,
                problem,
            })
        };
        if self.modalities.is_empty() {
            return Ok(());
        }
        if self.modalities.len() < 2 {
            return bad(
                "modalities".into(),
                format!(
                    "one modality block (`{}`) declared; declare at least two, or none",
                    self.modalities[0].name
                ),
            );
        }
        let mut names = BTreeSet::new();
        let mut owner: BTreeMap<&str, &str> = BTreeMap::new();
        for (i, m) in self.modalities.iter().enumerate() {
            if m.name.trim().is_empty() {
                return bad(format!("modalities[{i}].name"), "a modality name is empty".into());
            }
            if padded(&m.name) {
                return bad(format!("modalities[{i}].name"), PADDED.into());
            }
            if !names.insert(m.name.as_str()) {
                return bad(
                    format!("modalities[{i}].name"),
                    format!("modality `{}` is declared twice", m.name),
                );
            }
            if m.features.is_empty() {
                return bad(
                    format!("modalities[{i}].features"),
                    format!("modality `{}` names no feature", m.name),
                );
            }
            for (j, f) in m.features.iter().enumerate() {
                let field = format!("modalities[{i}].features[{j}]");
                if !self.features.iter().any(|x| x.name() == f) {
                    return bad(field, format!("`{f}` is not a feature of the card"));
                }
                if let Some(other) = owner.insert(f, &m.name) {
                    return bad(
                        field,
                        if other == m.name {
                            format!("`{f}` is named twice in modality `{}`", m.name)
                        } else {
                            format!(
                                "overlapping modality blocks: `{f}` is in both `{other}` and `{}`",
                                m.name
                            )
                        },
                    );
                }
            }
        }
        let outside: Vec<String> = self
            .features
            .iter()
            .filter(|f| !owner.contains_key(f.name()))
            .map(|f| format!("`{}`", f.name()))
            .collect();
        if !outside.is_empty() {
            return bad(
                "modalities".into(),
                format!(
                    "features outside every modality block: {} (every feature belongs to exactly one block)",
                    outside.join(", ")
                ),
            );
        }
        let listed = self
            .modalities
            .iter()
            .enumerate()
            .flat_map(|(i, m)| m.features.iter().enumerate().map(move |(j, f)| (i, j, f)));
        for ((i, j, f), (k, feature)) in listed.zip(self.features.iter().enumerate()) {
            if f != feature.name() {
                return bad(
                    format!("modalities[{i}].features[{j}]"),
                    format!(
                        "`{f}` comes where features[{k}] (`{}`) is: the blocks list the [[features]] in their \
                         order, block after block (reorder [[features]] or the blocks)",
                        feature.name()
                    ),
                );
            }
        }
        Ok(())
    }
}

/// Cells and header names are trimmed when read, so a padded card text could never match.
const PADDED: &str = "has leading or trailing whitespace, which a trimmed cell or header never has";

fn padded(s: &str) -> bool {
    s.trim() != s
}

fn first_duplicate(items: &[String]) -> Option<&str> {
    let mut seen = BTreeSet::new();
    items.iter().find(|s| !seen.insert(s.as_str())).map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CARD: &str = r#"
name = "loans"
version = 1

[label]
column = "Class"
classes = ["good", "bad"]

[[features]]
name = "amount"
kind = "numeric"

[[features]]
name = "home"
kind = "categorical"
levels = ["own", "rent"]
unknown = "other"

[[features]]
name = "grade"
kind = "ordinal"
levels = ["A", "B", "C"]

[preprocessing]
impute = "median"
scale = "standard"

[[preprocessing.stats]]
name = "grade"
fill = 1.0
mean = 1.0
std = 0.5

[[preprocessing.stats]]
name = "amount"
fill = 100.0
mean = 120.0
std = 40.0

[[preprocessing.stats]]
name = "home"
fill_level = "rent"

[public]
sha256 = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
rows = 10
format = "csv"
"#;

    fn card() -> TaskCard {
        TaskCard::from_toml_str(CARD, "card.toml").expect("the test card is valid")
    }

    /// Applies `edit` to the test card's text and returns the error message.
    fn refused(edit: impl Fn(&str) -> String) -> String {
        TaskCard::from_toml_str(&edit(CARD), "card.toml")
            .expect_err("bad input must be refused")
            .to_string()
    }

    fn check(edit: impl Fn(&str) -> String, field: &str, problem: &str) {
        let msg = refused(edit);
        assert!(
            msg.starts_with(&format!("card.toml: task card field `{field}`: ")) && msg.contains(problem),
            "expected field `{field}` / `{problem}`, got: {msg}"
        );
    }

    #[test]
    fn sizes_names_and_canonical_stats_order() {
        let c = card();
        assert_eq!(c.input_dim(), 1 + 3 + 1);
        assert_eq!(c.classes(), ["good", "bad"]);
        assert_eq!(
            c.feature_names(),
            ["amount", "home=own", "home=rent", "home=<other>", "grade"]
        );
        let order: Vec<&str> = c
            .preprocessing
            .as_ref()
            .expect("tabular")
            .stats
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(order, ["amount", "home", "grade"]);
        assert_eq!(c.stats_for("amount").and_then(|s| s.std), Some(40.0));
    }

    #[test]
    fn toml_round_trip_and_digest() {
        let c = card();
        let text = c.to_toml_string();
        let again = TaskCard::from_toml_str(&text, "again.toml").expect("own output parses");
        assert_eq!(again, c);
        assert_eq!(again.to_toml_string(), text);
        // Comments and stats order do not change the digest; a value does.
        let commented = format!("# operator's note\n{CARD}");
        let d = TaskCard::from_toml_str(&commented, "c").expect("valid").digest();
        assert_eq!(d, c.digest());
        let mut expected = Sha256::new();
        expected.update(CARD_DIGEST_TAG);
        expected.update(text.as_bytes());
        assert_eq!(c.digest(), <[u8; 32]>::from(expected.finalize()));
        let changed = TaskCard::from_toml_str(&CARD.replace("mean = 120.0", "mean = 121.0"), "c").expect("valid");
        assert_ne!(changed.digest(), c.digest());
        // Golden value: a toml release that formats the canonical card differently would change
        // every federation's card digest; this catches it.
        assert_eq!(
            c.digest_hex(),
            "1a6b9d18df131a2306ee2fddba7b17f890b824eec2fd9ca3ddc65a276040c305"
        );
        assert_eq!(
            c.summary(),
            format!(
                "task `loans`: 3 columns (5 inputs), classes good|bad, public set 10 rows, card sha256:{}",
                c.digest_hex()
            )
        );
    }

    #[test]
    fn a_benchmark_set_is_checked_like_the_public_set_and_only_changes_the_digest_when_present() {
        let base = TaskCard::from_toml_str(CARD, "c.toml").expect("valid");
        let bench = |sha: &str, rows: u64, format: &str| {
            format!("{CARD}\n[benchmark]\nsha256 = \"{sha}\"\nrows = {rows}\nformat = \"{format}\"\n")
        };
        let sha = "ab".repeat(32);
        let b = TaskCard::from_toml_str(&bench(&sha, 7, "csv"), "c.toml").expect("valid benchmark");
        assert_eq!(b.benchmark.as_ref().map(|x| x.rows), Some(7));
        assert_eq!(b.benchmark.as_ref().and_then(|x| x.digest()), Some([0xab; 32]));
        assert_ne!(b.digest(), base.digest(), "the benchmark is part of the card");
        for (bad, field) in [
            (bench(&sha, 0, "csv"), "benchmark.rows"),
            (bench("xyz", 7, "csv"), "benchmark.sha256"),
            (bench(&sha, 7, "idx"), "benchmark.format"),
        ] {
            let e = TaskCard::from_toml_str(&bad, "c.toml")
                .expect_err("refused")
                .to_string();
            assert!(e.contains(field), "{field}: {e}");
        }
    }

    #[test]
    fn image_card() {
        let text = r#"
name = "digits"
version = 1
[label]
classes = ["0", "1", "2"]
[image]
height = 8
width = 8
channels = 1
[public]
sha256 = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
rows = 5
format = "idx"
"#;
        let c = TaskCard::from_toml_str(text, "img.toml").expect("valid");
        assert_eq!(c.input_dim(), 64);
        assert_eq!(c.feature_names()[9], "pixel_1_1");
        let zero = TaskCard::from_toml_str(&text.replace("width = 8", "width = 0"), "img.toml")
            .expect_err("bad input must be refused")
            .to_string();
        assert_eq!(zero, "img.toml: task card field `image.width`: must be at least 1");
        let csv = TaskCard::from_toml_str(&text.replace("\"idx\"", "\"csv\""), "img.toml")
            .expect_err("bad input must be refused")
            .to_string();
        assert!(csv.contains("`public.format`"), "{csv}");
        let both = format!("{text}\n[[features]]\nname = \"x\"\nkind = \"numeric\"\n");
        let msg = TaskCard::from_toml_str(&both, "img.toml")
            .expect_err("bad input must be refused")
            .to_string();
        assert!(msg.contains("field `image`"), "{msg}");
        // `[augment]`: kept in the card and its digest; refused where it changes nothing, shifts more than a
        // quarter of the side, or meets a tabular card.
        let aug = TaskCard::from_toml_str(&format!("{text}[augment]\nshift = 2\nflip = true\n"), "img.toml")
            .expect("valid augmentation");
        assert_eq!(
            aug.augment,
            Some(Augment {
                shift: 2,
                flip: true,
                ..Augment::default()
            })
        );
        assert_ne!(
            aug.digest(),
            c.digest(),
            "the augmentation is part of what the digest covers"
        );
        for (table, field, problem) in [
            ("[augment]\nshift = 0\n", "augment", "changes nothing"),
            (
                "[augment]\nshift = 1\njitter = 0.1\n",
                "augment",
                "augment sequences, not images",
            ),
            (
                "[augment]\nshift = 3\n",
                "augment.shift",
                "more than a quarter of its side (at most 2)",
            ),
        ] {
            let msg = TaskCard::from_toml_str(&format!("{text}{table}"), "img.toml")
                .expect_err("bad input must be refused")
                .to_string();
            assert!(
                msg.contains(&format!("field `{field}`")) && msg.contains(problem),
                "{table}: {msg}"
            );
        }
        check(
            |t| format!("{t}[augment]\nshift = 1\n"),
            "augment",
            "applies to image and sequence tasks only",
        );
    }

    #[test]
    fn sequence_card() {
        let text = r#"
name = "power"
version = 1
[label]
classes = ["1", "2"]
[sequence]
channels = 2
length = 24
normalize = "series"
[public]
sha256 = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
rows = 5
format = "ts"
"#;
        let c = TaskCard::from_toml_str(text, "seq.toml").expect("valid");
        assert_eq!(c.input_dim(), 48);
        assert_eq!(c.feature_names()[25], "c1_t1");
        assert!(c.summary().contains("sequence 2x24 (48 inputs)"), "{}", c.summary());
        assert_eq!(
            TaskCard::from_toml_str(&c.to_toml_string(), "again.toml").expect("round trip"),
            c
        );
        let plain = TaskCard::from_toml_str(&text.replace("normalize = \"series\"\n", ""), "seq.toml")
            .expect("normalize defaults to none");
        assert_eq!(plain.sequence.as_ref().map(|s| s.normalize), Some(SeriesNorm::None));
        assert_ne!(plain.digest(), c.digest());
        let refused = |edit: &dyn Fn(&str) -> String| {
            TaskCard::from_toml_str(&edit(text), "seq.toml")
                .expect_err("bad input must be refused")
                .to_string()
        };
        for (edit, field, problem) in [
            (
                Box::new(|t: &str| t.replace("length = 24", "length = 1")) as Box<dyn Fn(&str) -> String>,
                "sequence.length",
                "at least 2 time steps",
            ),
            (
                Box::new(|t: &str| t.replace("channels = 2", "channels = 0")),
                "sequence.channels",
                "at least 1",
            ),
            (
                Box::new(|t: &str| t.replace("\"ts\"", "\"csv\"")),
                "public.format",
                "is `ts` (series files), not `csv`",
            ),
            (
                Box::new(|t: &str| format!("{t}[image]\nheight = 2\nwidth = 2\nchannels = 1\n")),
                "image",
                "one of [image], [sequence] or [[features]]",
            ),
            (
                Box::new(|t: &str| format!("{t}[augment]\nshift = 1\n")),
                "augment",
                "shift and flip augment images",
            ),
            (Box::new(|t: &str| format!("{t}[augment]\n")), "augment", "sets none of"),
            (
                Box::new(|t: &str| format!("{t}[augment]\njitter = 2.0\n")),
                "augment.jitter",
                "in [0, 1]",
            ),
            (
                Box::new(|t: &str| format!("{t}[augment]\nslice = 0.3\n")),
                "augment.slice",
                "in [0.5, 1)",
            ),
            (
                Box::new(|t: &str| t.replace("normalize = \"series\"", "normalize = \"global\"")),
                "",
                "unknown variant `global`",
            ),
            (
                Box::new(|t: &str| t.replace("normalize = \"series\"", "normalize = \"standard\"\nmean = [0.0]")),
                "sequence.mean",
                "one value per channel (2), got 1",
            ),
            (
                Box::new(|t: &str| {
                    t.replace(
                        "normalize = \"series\"",
                        "normalize = \"standard\"\nmean = [0.0, 1.0]\nstd = [1.0, 0.0]",
                    )
                }),
                "sequence.std",
                "0 is not a finite number > 0",
            ),
            (
                Box::new(|t: &str| t.replace("normalize = \"series\"", "normalize = \"series\"\nmean = [0.0, 1.0]")),
                "sequence.mean",
                "statistics of normalize = \"standard\" only",
            ),
        ] {
            let msg = refused(&*edit);
            let named = if field.is_empty() {
                msg.contains("not a valid task card")
            } else {
                msg.contains(&format!("field `{field}`"))
            };
            assert!(named && msg.contains(problem), "{msg}");
        }
        let standard = TaskCard::from_toml_str(
            &text.replace(
                "normalize = \"series\"",
                "normalize = \"standard\"\nmean = [1.0, -2.0]\nstd = [2.0, 0.5]",
            ),
            "seq.toml",
        )
        .expect("standard with one statistic per channel");
        let shape = standard.sequence.as_ref().expect("a sequence card");
        let mut x = [3.0f32, 5.0];
        shape.normalize_channel(0, &mut x);
        assert_eq!(x, [1.0, 2.0]);
        let mut x = [-2.0f32, -1.0];
        shape.normalize_channel(1, &mut x);
        assert_eq!(x, [0.0, 2.0]);
        let aug = TaskCard::from_toml_str(
            &format!("{text}[augment]\njitter = 0.03\nmagnitude_warp = 0.2\ntime_warp = 0.2\nslice = 0.9\n"),
            "seq.toml",
        )
        .expect("a sequence augmentation");
        let a = aug.augment.expect("kept");
        assert_eq!((a.jitter, a.scaling, a.slice, a.shift), (0.03, 0.0, 0.9, 0));
        // Off fields are not written, so image cards keep their bytes and digests.
        assert!(!aug.to_toml_string().contains("scaling"), "{}", aug.to_toml_string());
    }

    #[test]
    fn contradictions_are_refused_naming_the_field() {
        check(|c| c.replace("version = 1", "version = 2"), "version", "not supported");
        check(
            |c| c.replace("name = \"grade\"\nkind", "name = \"amount\"\nkind"),
            "features[2].name",
            "declared twice",
        );
        check(
            |c| c.replace("name = \"grade\"\nkind", "name = \"Class\"\nkind"),
            "features[2].name",
            "is the label column",
        );
        check(
            |c| c.replace("classes = [\"good\", \"bad\"]", "classes = []"),
            "label.classes",
            "at least two",
        );
        check(
            |c| c.replace("classes = [\"good\", \"bad\"]", "classes = [\"good\", \"good\"]"),
            "label.classes",
            "`good` is declared twice",
        );
        check(
            |c| c.replace("[\"own\", \"rent\"]", "[\"own\", \"own\"]"),
            "features[1].levels",
            "`own`",
        );
        check(
            |c| c.replace("[\"own\", \"rent\"]", "[]"),
            "features[1].levels",
            "no levels",
        );
        check(
            |c| c.replace("[\"A\", \"B\", \"C\"]", "[\"A\", \"NA\"]"),
            "features[2].levels",
            "missing cell",
        );
        check(
            |c| c.replace("name = \"grade\"\nfill", "name = \"nope\"\nfill"),
            "preprocessing.stats[0].name",
            "`nope` is not a feature",
        );
        check(
            |c| c.replace("name = \"grade\"\nfill", "name = \"amount\"\nfill"),
            "preprocessing.stats[1].name",
            "given twice",
        );
        check(
            |c| c.replace("std = 40.0", "std = 0.0"),
            "preprocessing.stats[1].std",
            "not a finite number > 0",
        );
        check(
            |c| c.replace("std = 40.0", "std = -1.0"),
            "preprocessing.stats[1].std",
            "> 0",
        );
        check(
            |c| c.replace("std = 40.0", "std = nan"),
            "preprocessing.stats[1].std",
            "NaN",
        );
        check(
            |c| c.replace("mean = 120.0", "mean = inf"),
            "preprocessing.stats[1].mean",
            "inf",
        );
        check(
            |c| c.replace("fill = 100.0\n", ""),
            "preprocessing.stats[1].fill",
            "no fill value",
        );
        check(
            |c| c.replace("std = 40.0\n", ""),
            "preprocessing.stats[1].std",
            "needs the std",
        );
        check(
            |c| c.replace("fill = 1.0", "fill = 3.0"),
            "preprocessing.stats[0].fill",
            "not a rank",
        );
        check(
            |c| c.replace("fill_level = \"rent\"", "fill_level = \"castle\""),
            "preprocessing.stats[2].fill_level",
            "not a level",
        );
        check(
            |c| c.replace("fill_level = \"rent\"", "fill = 1.0"),
            "preprocessing.stats[2].fill",
            "categorical",
        );
        check(
            |c| c.replace("impute = \"median\"", "impute = \"zero\""),
            "preprocessing.stats[1].fill",
            "impute = \"zero\"",
        );
        check(
            |c| {
                c.replace(
                    "[[preprocessing.stats]]\nname = \"amount\"\nfill = 100.0\nmean = 120.0\nstd = 40.0\n",
                    "",
                )
            },
            "preprocessing.stats",
            "no statistics for `amount`",
        );
        check(
            |c| c.replace("rows = 10", "rows = 0"),
            "public.rows",
            "at least one row",
        );
        check(
            |c| c.replace("sha256 = \"00", "sha256 = \"0"),
            "public.sha256",
            "64 lowercase hex",
        );
        check(
            |c| c.replace("sha256 = \"00", "sha256 = \"ZZ"),
            "public.sha256",
            "64 lowercase hex",
        );
        check(
            |c| c.replace("column = \"Class\"\n", ""),
            "label.column",
            "names its label column",
        );
        check(|c| c.replace("name = \"loans\"", "name = \"\""), "name", "empty");
        check(
            |c| c.replace("\"rent\"]", "\"rent \"]"),
            "features[1].levels[1]",
            "whitespace",
        );
        check(|c| c.replace("\"bad\"]", "\" bad\"]"), "label.classes[1]", "whitespace");
        check(
            |c| c.replace("format = \"csv\"", "format = \"idx\""),
            "public.format",
            "`csv`",
        );
    }

    /// The test card in two modality blocks: `money` (amount, home: inputs 0..4) and `rating` (grade: 4).
    const BLOCKS: &str = r#"
[[modalities]]
name = "money"
features = ["amount", "home"]

[[modalities]]
name = "rating"
features = ["grade"]
"#;

    #[test]
    fn modality_blocks_add_presence_inputs_and_name_their_ranges() {
        let plain = card();
        assert!(plain.modality_ranges().is_empty());
        assert!(
            !plain.to_toml_string().contains("modalities"),
            "a card without blocks writes no key for them (its digest is unchanged)"
        );
        let c = TaskCard::from_toml_str(&format!("{CARD}{BLOCKS}"), "card.toml").expect("valid blocks");
        assert_eq!(c.input_dim(), plain.input_dim() + 2);
        let names = c.feature_names();
        assert_eq!(names[..5], plain.feature_names()[..]);
        assert_eq!(names[5..], ["<present:money>", "<present:rating>"]);
        let ranges = c.modality_ranges();
        assert_eq!(
            ranges,
            vec![
                ModalityRange {
                    name: "money".into(),
                    inputs: 0..4,
                    indicator: 5
                },
                ModalityRange {
                    name: "rating".into(),
                    inputs: 4..5,
                    indicator: 6
                },
            ]
        );
        assert_eq!(ranges.iter().map(ModalityRange::width).collect::<Vec<_>>(), [4, 1]);
        assert!(
            c.summary().contains("3 columns in 2 modality blocks"),
            "{}",
            c.summary()
        );
        // The blocks are part of the card: round trip, and a different digest from the card without them.
        let again = TaskCard::from_toml_str(&c.to_toml_string(), "again.toml").expect("own output parses");
        assert_eq!(again, c);
        assert_ne!(c.digest(), plain.digest());
        // `with_modalities` reorders the features block by block: grade first here.
        let reordered = plain
            .with_modalities(vec![
                Modality {
                    name: "rating".into(),
                    features: vec!["grade".into()],
                },
                Modality {
                    name: "money".into(),
                    features: vec!["amount".into(), "home".into()],
                },
            ])
            .expect("valid blocks");
        let order: Vec<&str> = reordered.features.iter().map(Feature::name).collect();
        assert_eq!(order, ["grade", "amount", "home"]);
        assert_eq!(reordered.modality_ranges()[1].inputs, 1..5);
    }

    #[test]
    fn bad_modality_blocks_are_refused_naming_the_field() {
        let with = |blocks: &'static str| move |c: &str| format!("{c}{blocks}");
        check(
            with("[[modalities]]\nname = \"a\"\nfeatures = [\"amount\", \"home\", \"grade\"]\n"),
            "modalities",
            "one modality block (`a`) declared; declare at least two",
        );
        check(
            with(concat!(
                "[[modalities]]\nname = \"a\"\nfeatures = [\"amount\", \"home\"]\n",
                "[[modalities]]\nname = \"b\"\nfeatures = [\"home\", \"grade\"]\n"
            )),
            "modalities[1].features[0]",
            "overlapping modality blocks: `home` is in both `a` and `b`",
        );
        check(
            with(concat!(
                "[[modalities]]\nname = \"a\"\nfeatures = [\"amount\", \"amount\"]\n",
                "[[modalities]]\nname = \"b\"\nfeatures = [\"home\", \"grade\"]\n"
            )),
            "modalities[0].features[1]",
            "`amount` is named twice in modality `a`",
        );
        check(
            with(concat!(
                "[[modalities]]\nname = \"a\"\nfeatures = [\"amount\", \"income\"]\n",
                "[[modalities]]\nname = \"b\"\nfeatures = [\"home\", \"grade\"]\n"
            )),
            "modalities[0].features[1]",
            "`income` is not a feature of the card",
        );
        check(
            with(concat!(
                "[[modalities]]\nname = \"a\"\nfeatures = [\"amount\", \"Class\"]\n",
                "[[modalities]]\nname = \"b\"\nfeatures = [\"home\", \"grade\"]\n"
            )),
            "modalities[0].features[1]",
            "`Class` is not a feature of the card",
        );
        check(
            with(concat!(
                "[[modalities]]\nname = \"a\"\nfeatures = [\"amount\"]\n",
                "[[modalities]]\nname = \"a\"\nfeatures = [\"home\", \"grade\"]\n"
            )),
            "modalities[1].name",
            "modality `a` is declared twice",
        );
        check(
            with(concat!(
                "[[modalities]]\nname = \"\"\nfeatures = [\"amount\"]\n",
                "[[modalities]]\nname = \"b\"\nfeatures = [\"home\", \"grade\"]\n"
            )),
            "modalities[0].name",
            "a modality name is empty",
        );
        check(
            with(concat!(
                "[[modalities]]\nname = \"a \"\nfeatures = [\"amount\"]\n",
                "[[modalities]]\nname = \"b\"\nfeatures = [\"home\", \"grade\"]\n"
            )),
            "modalities[0].name",
            PADDED,
        );
        check(
            with(concat!(
                "[[modalities]]\nname = \"a\"\nfeatures = []\n",
                "[[modalities]]\nname = \"b\"\nfeatures = [\"amount\", \"home\", \"grade\"]\n"
            )),
            "modalities[0].features",
            "modality `a` names no feature",
        );
        check(
            with(concat!(
                "[[modalities]]\nname = \"a\"\nfeatures = [\"amount\"]\n",
                "[[modalities]]\nname = \"b\"\nfeatures = [\"grade\"]\n"
            )),
            "modalities",
            "features outside every modality block: `home`",
        );
        check(
            with(concat!(
                "[[modalities]]\nname = \"a\"\nfeatures = [\"amount\", \"grade\"]\n",
                "[[modalities]]\nname = \"b\"\nfeatures = [\"home\"]\n"
            )),
            "modalities[0].features[1]",
            "`grade` comes where features[1] (`home`) is",
        );
        // Blocks group the columns of a tabular card only.
        let image = TaskCard::from_toml_str(
            &format!(
                "name = \"d\"\nversion = 1\n[label]\nclasses = [\"a\", \"b\"]\n[image]\nheight = 8\nwidth = 8\n\
                 channels = 1\n[public]\nsha256 = \"{}\"\nrows = 1\nformat = \"idx\"\n\
                 [[modalities]]\nname = \"a\"\nfeatures = [\"x\"]\n",
                "0".repeat(64)
            ),
            "card.toml",
        )
        .expect_err("blocks on an image card")
        .to_string();
        assert!(
            image.contains("field `modalities`") && image.contains("tabular card"),
            "{image}"
        );
        // `with_modalities` refuses what `validate` refuses.
        let err = card()
            .with_modalities(vec![Modality {
                name: "all".into(),
                features: vec!["amount".into(), "home".into(), "grade".into()],
            }])
            .expect_err("one block")
            .to_string();
        assert!(err.contains("declare at least two"), "{err}");
    }

    #[test]
    fn syntax_errors_and_unknown_keys_name_the_file() {
        let msg = refused(|c| c.replace("scale = \"standard\"", "scale = \"standard\"\nscaling = 2"));
        assert!(
            msg.starts_with("card.toml: not a valid task card:") && msg.contains("scaling"),
            "{msg}"
        );
        let msg = refused(|c| c.replace("kind = \"ordinal\"", "kind = \"fancy\""));
        assert!(msg.contains("fancy"), "{msg}");
        let msg = refused(|c| c.replace("[public]", "[public"));
        assert!(msg.starts_with("card.toml: not a valid task card:"), "{msg}");
        let err = TaskCard::load(Path::new("/nonexistent/task.toml")).expect_err("no such file");
        assert!(
            err.to_string().starts_with("/nonexistent/task.toml: cannot read"),
            "{err}"
        );
    }

    #[test]
    fn zero_impute_lets_categoricals_go_without_stats() {
        let text = CARD
            .replace("impute = \"median\"", "impute = \"zero\"")
            .replace("fill = 100.0", "fill = 0.0")
            .replace("fill = 1.0", "fill = 0.0")
            .replace("[[preprocessing.stats]]\nname = \"home\"\nfill_level = \"rent\"\n", "");
        let c = TaskCard::from_toml_str(&text, "z.toml").expect("valid");
        assert!(c.stats_for("home").is_none());
        let scale_none = CARD
            .replace("scale = \"standard\"", "scale = \"none\"")
            .replace("std = 40.0\n", "");
        let c = TaskCard::from_toml_str(&scale_none, "n.toml").expect("std is optional without scaling");
        assert_eq!(c.preprocessing.as_ref().map(|p| p.scale), Some(Scale::Unchanged));
    }
}
