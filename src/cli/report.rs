//! Shared report writer of the `fedistill bench` suites: line and grouped bar charts (PNG + SVG with
//! plotters, drawn with a font embedded in the binary so no system font is needed), Markdown tables, the
//! JSON + Markdown report files, and the generated section of docs/benchmarks.md between
//! `<!-- bench-SUITE:begin/end -->` markers.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context};
use plotters::coord::ranged1d::{AsRangedCoord, DefaultFormatting, KeyPointHint, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// DejaVu Sans (assets/fonts/, license in assets/fonts/LICENSE-DejaVu.txt), registered with plotters'
/// `ab_glyph` font table so rendering is identical on every machine and needs no fontconfig.
static FONT_BYTES: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
/// The family name every text style of a chart uses; it is the one the embedded font is registered under.
const FONT_FAMILY: &str = "sans-serif";
/// Line colours in series order (matplotlib's "tab10": distinct, and readable on white, unlike yellow).
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];
/// Pixel size of the PNG and of the SVG canvas.
pub const CHART_SIZE: (u32, u32) = (1000, 600);

/// One line of a chart: a name for the legend and its (x, y) points, drawn in the given order.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A line chart with markers, a legend and axis labels; `log_x` draws the x axis on a log10 scale
/// (then every x must be > 0).
#[derive(Debug, Clone, Copy)]
pub struct Chart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub series: &'a [Series],
    pub log_x: bool,
}

/// Writes DIR/STEM.png and DIR/STEM.svg (creating DIR); returns both paths.
pub fn write_chart(dir: &Path, stem: &str, chart: &Chart<'_>) -> anyhow::Result<Vec<PathBuf>> {
    check_name("chart file stem", stem)?;
    let bounds = Bounds::of(chart)?;
    register_font()?;
    write_png_and_svg(
        dir,
        stem,
        |root| draw(root, chart, &bounds),
        |root| draw(root, chart, &bounds),
    )
}

/// A grouped bar chart: one cluster per category along the x axis (its name under it, wrapped to the
/// cluster's width), one bar per group in each cluster in group order and colour, a legend naming the
/// groups, and each bar's value above it when it fits. The y axis starts at 0, so every value must be
/// finite and >= 0; every group has exactly one value per category.
#[derive(Debug, Clone, Copy)]
pub struct BarChart<'a> {
    pub title: &'a str,
    pub y_label: &'a str,
    pub categories: &'a [String],
    /// (legend name, one value per category in `categories` order).
    pub groups: &'a [(String, Vec<f64>)],
}

/// Writes DIR/STEM.png and DIR/STEM.svg (creating DIR) of a grouped bar chart; returns both paths. Bad input
/// (no categories or groups, a group whose length differs from the categories, a value that is not finite
/// or is negative) is refused before any file is written.
pub fn write_bar_chart(dir: &Path, stem: &str, chart: &BarChart<'_>) -> anyhow::Result<Vec<PathBuf>> {
    check_name("chart file stem", stem)?;
    let max = bar_max(chart)?;
    register_font()?;
    write_png_and_svg(
        dir,
        stem,
        |root| draw_bars(root, chart, max),
        |root| draw_bars(root, chart, max),
    )
}

/// Creates DIR, draws DIR/STEM.png and DIR/STEM.svg with the two (identical) drawing functions and checks
/// both files are there and non-empty.
fn write_png_and_svg(
    dir: &Path,
    stem: &str,
    draw_png: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> anyhow::Result<()>,
    draw_svg: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let png = dir.join(format!("{stem}.png"));
    let svg = dir.join(format!("{stem}.svg"));
    {
        let root = BitMapBackend::new(&png, CHART_SIZE).into_drawing_area();
        draw_png(&root).with_context(|| format!("drawing {}", png.display()))?;
    }
    {
        let root = SVGBackend::new(&svg, CHART_SIZE).into_drawing_area();
        draw_svg(&root).with_context(|| format!("drawing {}", svg.display()))?;
    }
    // plotters reports some write failures only through a log line on drop; make sure both files are there.
    for p in [&png, &svg] {
        let len = std::fs::metadata(p)
            .with_context(|| format!("checking {}", p.display()))?
            .len();
        if len == 0 {
            bail!("{} was written empty", p.display());
        }
    }
    Ok(vec![png, svg])
}

/// GitHub Markdown table; numbers are pre-formatted strings. Columns whose every non-empty cell parses as
/// a number are right-aligned. A `|` inside a cell is escaped and a newline becomes a space; a row shorter
/// than the header is padded with empty cells (and a longer one widens the table) so the table stays valid.
pub fn markdown_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let width = rows.iter().map(Vec::len).chain([headers.len()]).max().unwrap_or(0);
    let cell = |s: &str| s.replace('|', "\\|").replace(['\r', '\n'], " ");
    let numeric: Vec<bool> = (0..width)
        .map(|c| {
            let mut cells = rows
                .iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.trim())
                .filter(|s| !s.is_empty());
            let mut any = false;
            let all = cells.all(|s| {
                any = true;
                s.parse::<f64>().is_ok()
            });
            any && all
        })
        .collect();
    let mut out = String::new();
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = String>| {
        out.push('|');
        for c in cells {
            out.push(' ');
            out.push_str(&c);
            out.push_str(" |");
        }
        out.push('\n');
    };
    line(
        &mut out,
        &mut (0..width).map(|c| cell(headers.get(c).copied().unwrap_or(""))),
    );
    line(
        &mut out,
        &mut numeric.iter().map(|&n| if n { "---:" } else { "---" }.to_string()),
    );
    for r in rows {
        line(
            &mut out,
            &mut (0..width).map(|c| cell(r.get(c).map(String::as_str).unwrap_or(""))),
        );
    }
    out
}

/// Writes DIR/SUITE.json (pretty) and DIR/SUITE.md; creates DIR.
pub fn write_report<T: serde::Serialize>(dir: &Path, suite: &str, value: &T, markdown: &str) -> anyhow::Result<()> {
    check_name("suite name", suite)?;
    let mut json = serde_json::to_string_pretty(value).with_context(|| format!("serializing the {suite} report"))?;
    json.push('\n');
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let jp = dir.join(format!("{suite}.json"));
    std::fs::write(&jp, json).with_context(|| format!("writing {}", jp.display()))?;
    let mp = dir.join(format!("{suite}.md"));
    let mut md = markdown.to_string();
    if !md.ends_with('\n') {
        md.push('\n');
    }
    std::fs::write(&mp, md).with_context(|| format!("writing {}", mp.display()))?;
    Ok(())
}

/// Replaces the text between `<!-- bench-SUITE:begin -->` and `<!-- bench-SUITE:end -->` in a Markdown file
/// (appends the marked section when absent). The begin marker may carry a note before its `-->` (as
/// `bench robust` writes it); the markers and everything outside them are kept byte for byte. The file
/// must exist; a begin marker without its end marker (or the other way round) is an error, not a second
/// section.
pub fn replace_docs_section(path: &Path, suite: &str, body: &str) -> anyhow::Result<()> {
    check_name("suite name", suite)?;
    let begin_prefix = format!("<!-- bench-{suite}:begin");
    let end_marker = format!("<!-- bench-{suite}:end -->");
    if body.contains(&begin_prefix) || body.contains(&end_marker) {
        bail!("the generated {suite} section must not itself contain the bench-{suite} markers");
    }
    let old = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let inner = format!("\n\n{}\n\n", body.trim_matches('\n'));
    let new = match (old.find(&begin_prefix), old.find(&end_marker)) {
        (Some(b), Some(e)) => {
            let line = old[b..].split('\n').next().unwrap_or_default();
            let begin_end = line.find("-->").map(|i| b + i + "-->".len()).ok_or_else(|| {
                anyhow!(
                    "{}: the bench-{suite} begin marker is not closed by --> on its line",
                    path.display()
                )
            })?;
            if e < begin_end {
                bail!(
                    "{}: the bench-{suite} end marker comes before its begin marker",
                    path.display()
                );
            }
            if old[e + end_marker.len()..].contains(&begin_prefix) || old[begin_end..e].contains(&begin_prefix) {
                bail!("{}: more than one bench-{suite} section", path.display());
            }
            format!("{}{inner}{}", &old[..begin_end], &old[e..])
        }
        (None, None) => {
            let sep = if old.trim_end().is_empty() { "" } else { "\n\n" };
            format!("{}{sep}{begin_prefix} -->{inner}{end_marker}\n", old.trim_end())
        }
        (Some(_), None) => bail!("{}: bench-{suite} begin marker without its end marker", path.display()),
        (None, Some(_)) => bail!("{}: bench-{suite} end marker without its begin marker", path.display()),
    };
    std::fs::write(path, new).with_context(|| format!("writing {}", path.display()))
}

/// Suite names and file stems become file names and marker names: keep them to `[A-Za-z0-9_-]+`.
fn check_name(what: &str, name: &str) -> anyhow::Result<()> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        bail!("{what} {name:?} must be non-empty and use only letters, digits, '_' and '-'");
    }
    Ok(())
}

fn register_font() -> anyhow::Result<()> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, FONT_BYTES)
                .map_err(|_| "the embedded DejaVu Sans font could not be parsed".to_string())
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

/// The drawn ranges of both axes, validated and padded.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Bounds {
    x0: f64,
    x1: f64,
    y0: f64,
    y1: f64,
}

impl Bounds {
    fn of(chart: &Chart<'_>) -> anyhow::Result<Self> {
        if chart.series.is_empty() {
            bail!("chart {:?} has no series to draw", chart.title);
        }
        let (mut x0, mut x1, mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
        for s in chart.series {
            if s.points.is_empty() {
                bail!("chart {:?}: series {:?} has no points", chart.title, s.name);
            }
            for (i, &(x, y)) in s.points.iter().enumerate() {
                if !x.is_finite() || !y.is_finite() {
                    bail!(
                        "chart {:?}: series {:?} point {i} is not finite: ({x}, {y})",
                        chart.title,
                        s.name
                    );
                }
                if chart.log_x && x <= 0.0 {
                    bail!(
                        "chart {:?}: series {:?} point {i} has x = {x}, not > 0 on a log x axis",
                        chart.title,
                        s.name
                    );
                }
                x0 = x0.min(x);
                x1 = x1.max(x);
                y0 = y0.min(y);
                y1 = y1.max(y);
            }
        }
        if chart.log_x {
            // A margin of a quarter decade on each side keeps the end markers off the frame.
            let (lo, hi) = if x0 == x1 { (x0 / 2.0, x1 * 2.0) } else { (x0, x1) };
            let m = (hi / lo).powf(0.05);
            (x0, x1) = (lo / m, hi * m);
        } else {
            let pad = if x0 == x1 {
                x0.abs().max(1.0) * 0.5
            } else {
                (x1 - x0) * 0.05
            };
            (x0, x1) = (x0 - pad, x1 + pad);
        }
        let pad = if y0 == y1 {
            y0.abs().max(1.0) * 0.1
        } else {
            (y1 - y0) * 0.08
        };
        (y0, y1) = (y0 - pad, y1 + pad);
        Ok(Self { x0, x1, y0, y1 })
    }
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, chart: &Chart<'_>, b: &Bounds) -> anyhow::Result<()> {
    root.fill(&WHITE).map_err(plot_err)?;
    if chart.log_x {
        // plotters' own log axis labels only powers of ten; drawing log10(x) on a linear axis with ticks at
        // the data's x values (3, 10, 30, 100 participants) reads better.
        let mut ticks: Vec<f64> = chart
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0.log10()))
            .collect();
        ticks.sort_by(f64::total_cmp);
        ticks.dedup();
        let range = b.x0.log10()..b.x1.log10();
        let fmt = |v: &f64| format_tick(round_significant(10f64.powf(*v), 3));
        let ticks = if ticks.len() <= 12 { Some(ticks) } else { None };
        draw_on(root, chart, FixedTicks { range, ticks }, f64::log10, &fmt, b)?;
    } else {
        draw_on(root, chart, b.x0..b.x1, |x| x, &|v: &f64| format_tick(*v), b)?;
    }
    root.present().map_err(plot_err)
}

fn draw_on<DB, X>(
    root: &DrawingArea<DB, Shift>,
    chart: &Chart<'_>,
    x_range: X,
    x_map: fn(f64) -> f64,
    x_fmt: &dyn Fn(&f64) -> String,
    b: &Bounds,
) -> anyhow::Result<()>
where
    DB: DrawingBackend,
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
{
    let mut cc = ChartBuilder::on(root)
        .caption(chart.title, (FONT_FAMILY, 26))
        .margin(16)
        .x_label_area_size(52)
        .y_label_area_size(76)
        .build_cartesian_2d(x_range, b.y0..b.y1)
        .map_err(plot_err)?;
    let y_fmt = |v: &f64| format_tick(*v);
    cc.configure_mesh()
        .x_desc(chart.x_label)
        .y_desc(chart.y_label)
        .x_label_formatter(x_fmt)
        .y_label_formatter(&y_fmt)
        .axis_desc_style((FONT_FAMILY, 18))
        .label_style((FONT_FAMILY, 14))
        .light_line_style(RGBColor(238, 238, 238))
        .draw()
        .map_err(plot_err)?;
    for (i, s) in chart.series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()].to_rgba();
        let points: Vec<(f64, f64)> = s.points.iter().map(|&(x, y)| (x_map(x), y)).collect();
        cc.draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))
            .map_err(plot_err)?
            .label(s.name.as_str())
            .legend(move |(x, y)| {
                EmptyElement::at((x, y))
                    + PathElement::new(vec![(-8, 0), (12, 0)], color.stroke_width(2))
                    + Circle::new((2, 0), 4, color.filled())
            });
        cc.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))
            .map_err(plot_err)?;
    }
    cc.configure_series_labels()
        .label_font((FONT_FAMILY, 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(plot_err)
}

/// A linear axis with ticks at given points, else at plotters' evenly spaced points; tick labels come from
/// the mesh's formatter. Line charts with a log x use it over log10(x) with ticks at the data's x values
/// (when there are few); bar charts with a tick at the centre of each category.
struct FixedTicks {
    range: std::ops::Range<f64>,
    ticks: Option<Vec<f64>>,
}

impl Ranged for FixedTicks {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let span = self.range.end - self.range.start;
        let t = if span > 0.0 {
            (value - self.range.start) / span
        } else {
            0.5
        };
        limit.0 + (t * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        match &self.ticks {
            Some(t) => t.clone(),
            None => plotters::coord::types::RangedCoordf64::from(self.range.clone()).key_points(hint),
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.range.clone()
    }
}

/// The largest value of a bar chart (0 when every value is 0), after checking its shape and values.
fn bar_max(chart: &BarChart<'_>) -> anyhow::Result<f64> {
    if chart.categories.is_empty() {
        bail!("bar chart {:?} has no categories", chart.title);
    }
    if chart.groups.is_empty() {
        bail!("bar chart {:?} has no groups to draw", chart.title);
    }
    let mut max = 0.0f64;
    for (name, values) in chart.groups {
        if values.len() != chart.categories.len() {
            bail!(
                "bar chart {:?}: group {name:?} has {} values for {} categories",
                chart.title,
                values.len(),
                chart.categories.len()
            );
        }
        for (&v, category) in values.iter().zip(chart.categories) {
            if !v.is_finite() || v < 0.0 {
                bail!(
                    "bar chart {:?}: group {name:?} has {v} for {category:?}; bars need a finite value >= 0",
                    chart.title
                );
            }
            max = max.max(v);
        }
    }
    Ok(max)
}

fn draw_bars<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, chart: &BarChart<'_>, max: f64) -> anyhow::Result<()> {
    const MARGIN: u32 = 16;
    const Y_AREA: u32 = 76;
    /// Line height of the category names, pixels (14 px text).
    const LINE_H: u32 = 18;
    /// At most this many lines per category name; the rest is cut with an ellipsis.
    const MAX_LINES: usize = 3;
    root.fill(&WHITE).map_err(plot_err)?;
    let (w, h) = root.dim_in_pixel();
    let n = chart.categories.len();
    let label_style = TextStyle::from((FONT_FAMILY, 14).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    let caption_style = TextStyle::from((FONT_FAMILY, 26).into_font());
    let value_style = TextStyle::from((FONT_FAMILY, 12).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
    let text_w = |s: &str, style: &TextStyle| root.estimate_text_size(s, style).map(|d| d.0).map_err(plot_err);

    // Category names under their cluster, wrapped at spaces to the cluster's width.
    let plot_w = f64::from(w.saturating_sub(2 * MARGIN + Y_AREA));
    let cat_w = plot_w / n as f64;
    let names = chart
        .categories
        .iter()
        .map(|c| wrap_label(c, (cat_w * 0.94) as u32, MAX_LINES, |s| text_w(s, &label_style)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let lines = names.iter().map(Vec::len).max().unwrap_or(0).max(1) as u32;
    let x_area = 12 + lines * LINE_H;

    // Headroom above the tallest bar for its value and for the legend (top right), computed from the
    // plotting area's height as plotters lays it out: margin, then caption, then the label areas.
    let (_, title_h) = root.estimate_text_size(chart.title, &caption_style).map_err(plot_err)?;
    let title_area = title_h + 2 * (title_h / 2).min(5);
    let plot_h = f64::from(h.saturating_sub(2 * MARGIN + title_area + x_area).max(1));
    let legend_h = chart.groups.len() as f64 * 15.0 * 1.25 + 2.0 * 10.0 + 5.0 + 8.0;
    let usable = (plot_h - legend_h - 18.0).max(plot_h * 0.3);
    let y_top = if max > 0.0 { max } else { 1.0 } * plot_h / usable;

    let centres: Vec<f64> = (0..n).map(|i| i as f64 + 0.5).collect();
    let mut cc = ChartBuilder::on(root)
        .caption(chart.title, caption_style.clone())
        .margin(MARGIN)
        .x_label_area_size(x_area)
        .y_label_area_size(Y_AREA)
        .build_cartesian_2d(
            FixedTicks {
                range: 0.0..n as f64,
                ticks: Some(centres),
            },
            0.0..y_top,
        )
        .map_err(plot_err)?;
    let y_fmt = |v: &f64| format_tick(*v);
    let no_label = |_: &f64| String::new();
    cc.configure_mesh()
        .disable_x_mesh()
        .x_label_formatter(&no_label)
        .y_desc(chart.y_label)
        .y_label_formatter(&y_fmt)
        .axis_desc_style((FONT_FAMILY, 18))
        .label_style((FONT_FAMILY, 14))
        .light_line_style(RGBColor(238, 238, 238))
        .y_max_light_lines(1)
        .draw()
        .map_err(plot_err)?;

    // Each cluster fills 80% of its category; the bars of a cluster sit side by side with a small gap.
    let slot = 0.8 / chart.groups.len() as f64;
    let x0 = |i: usize, j: usize| i as f64 + 0.1 + j as f64 * slot;
    let values: Vec<Vec<String>> = chart
        .groups
        .iter()
        .map(|(_, vs)| vs.iter().map(|&v| format_bar_value(v)).collect())
        .collect();
    // Values are written above the bars only when every one fits in its bar's slot.
    let slot_px = f64::from(cc.plotting_area().dim_in_pixel().0) * slot / n as f64;
    let mut show_values = true;
    for v in values.iter().flatten() {
        show_values &= f64::from(text_w(v, &value_style)?) <= slot_px;
    }
    for (j, (name, vs)) in chart.groups.iter().enumerate() {
        let color = PALETTE[j % PALETTE.len()];
        let gap = slot * 0.06;
        cc.draw_series(
            vs.iter()
                .enumerate()
                .map(|(i, &v)| Rectangle::new([(x0(i, j) + gap, 0.0), (x0(i, j) + slot - gap, v)], color.filled())),
        )
        .map_err(plot_err)?
        .label(name.as_str())
        .legend(move |(x, y)| Rectangle::new([(x - 6, y - 6), (x + 10, y + 6)], color.filled()));
        if show_values {
            cc.draw_series(vs.iter().zip(&values[j]).enumerate().map(|(i, (&v, text))| {
                EmptyElement::at((x0(i, j) + slot / 2.0, v)) + Text::new(text.clone(), (0, -3), value_style.clone())
            }))
            .map_err(plot_err)?;
        }
    }
    let axis_y = cc.backend_coord(&(0.0, 0.0)).1;
    for (i, lines) in names.iter().enumerate() {
        let (x, _) = cc.backend_coord(&(i as f64 + 0.5, 0.0));
        for (k, line) in lines.iter().enumerate() {
            let y = axis_y + 10 + (k as u32 * LINE_H) as i32;
            root.draw(&Text::new(line.as_str(), (x, y), label_style.clone()))
                .map_err(plot_err)?;
        }
    }
    cc.configure_series_labels()
        .label_font((FONT_FAMILY, 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(plot_err)?;
    root.present().map_err(plot_err)
}

/// Splits `text` at spaces into lines no wider than `max_w` (as `width` measures them), at most `max_lines`
/// of them; a word wider than a line, or text left over after the last line, is cut with "…".
fn wrap_label(
    text: &str,
    max_w: u32,
    max_lines: usize,
    width: impl Fn(&str) -> anyhow::Result<u32>,
) -> anyhow::Result<Vec<String>> {
    let mut lines: Vec<String> = Vec::new();
    let mut cur = String::new();
    for word in text.split_whitespace() {
        let candidate = if cur.is_empty() {
            word.to_string()
        } else {
            format!("{cur} {word}")
        };
        if cur.is_empty() || width(&candidate)? <= max_w {
            cur = candidate;
        } else {
            lines.push(std::mem::replace(&mut cur, word.to_string()));
        }
    }
    if !cur.is_empty() {
        lines.push(cur);
    }
    let cut = lines.len() > max_lines;
    lines.truncate(max_lines);
    let n = lines.len();
    for (k, line) in lines.iter_mut().enumerate() {
        if (cut && k + 1 == n) || width(line)? > max_w {
            // Drop characters until the line with an ellipsis fits (down to the ellipsis alone).
            let mut s = line.clone();
            while !s.is_empty() && width(&format!("{}…", s.trim_end()))? > max_w {
                s.pop();
            }
            *line = format!("{}…", s.trim_end());
        }
    }
    Ok(lines)
}

/// A bar's value: 3 significant digits, thousands as k, millions as M, billions as G.
fn format_bar_value(v: f64) -> String {
    let a = v.abs();
    let (x, suffix) = if a >= 1e9 {
        (v / 1e9, "G")
    } else if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let x = round_significant(x, 3);
    let decimals = if x == 0.0 {
        0
    } else {
        (2 - x.abs().log10().floor() as i32).clamp(0, 6) as usize
    };
    format!("{x:.decimals$}{suffix}")
}

/// `v` rounded to `digits` significant digits (10^log10(x) does not give back exactly 30).
fn round_significant(v: f64, digits: i32) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    let scale = 10f64.powi(digits - 1 - v.abs().log10().floor() as i32);
    (v * scale).round() / scale
}

/// Tick labels: integers without decimals, otherwise up to 3 significant decimals, large values compact.
fn format_tick(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{v:.1e}")
    } else if (v - v.round()).abs() < 1e-9 * a.max(1.0) {
        format!("{}", v.round())
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn plot_err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("plotting: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_series() -> Vec<Series> {
        vec![
            Series {
                name: "federated (mean)".into(),
                points: vec![(3.0, 10.0), (10.0, 14.5), (30.0, 40.0)],
            },
            Series {
                name: "raw QUIC".into(),
                points: vec![(3.0, 1.0), (10.0, 2.0), (30.0, 6.0)],
            },
        ]
    }

    fn chart(series: &[Series], log_x: bool) -> Chart<'_> {
        Chart {
            title: "latency vs participants",
            x_label: "participants",
            y_label: "ms",
            series,
            log_x,
        }
    }

    /// Checks the PNG signature, reads the IHDR width and height (bytes 16..24, big-endian, PNG spec 11.2.2)
    /// and that the last chunk is IEND (the file was finished).
    fn png_size(bytes: &[u8]) -> (u32, u32) {
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
        assert_eq!(&bytes[12..16], b"IHDR");
        assert_eq!(&bytes[bytes.len() - 8..bytes.len() - 4], b"IEND");
        let w = u32::from_be_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
        let h = u32::from_be_bytes([bytes[20], bytes[21], bytes[22], bytes[23]]);
        (w, h)
    }

    #[test]
    fn chart_writes_png_and_svg() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("nested").join("plots");
        for log_x in [false, true] {
            let stem = if log_x { "log" } else { "linear" };
            let series = two_series();
            let paths = write_chart(&out, stem, &chart(&series, log_x)).expect("chart");
            assert_eq!(
                paths,
                vec![out.join(format!("{stem}.png")), out.join(format!("{stem}.svg"))]
            );
            let png = std::fs::read(&paths[0]).expect("png");
            assert_eq!(png_size(&png), CHART_SIZE);
            let svg = std::fs::read_to_string(&paths[1]).expect("svg");
            assert!(svg.starts_with("<svg"), "svg header: {}", &svg[..40.min(svg.len())]);
            for s in &series {
                assert!(svg.contains(&s.name), "svg lacks series {:?}", s.name);
            }
            assert!(svg.contains("participants") && svg.contains("latency vs participants"));
        }
    }

    #[test]
    fn chart_single_point_is_drawn() {
        // One point gives a zero-width range, which plotters cannot draw unless the bounds are padded.
        let dir = tempfile::tempdir().expect("tempdir");
        let series = vec![Series {
            name: "only".into(),
            points: vec![(5.0, 2.0)],
        }];
        let b = Bounds::of(&chart(&series, false)).expect("bounds");
        assert!(b.x0 < 5.0 && b.x1 > 5.0 && b.y0 < 2.0 && b.y1 > 2.0, "{b:?}");
        write_chart(dir.path(), "one", &chart(&series, true)).expect("chart");
        assert!(dir.path().join("one.png").exists() && dir.path().join("one.svg").exists());
    }

    #[test]
    fn chart_bad_inputs_are_clear_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = |series: &[Series], log_x: bool, stem: &str| {
            format!(
                "{:#}",
                write_chart(dir.path(), stem, &chart(series, log_x)).expect_err("must fail")
            )
        };
        assert!(err(&[], false, "c").contains("has no series"));
        let empty = vec![Series {
            name: "e".into(),
            points: vec![],
        }];
        assert!(err(&empty, false, "c").contains("series \"e\" has no points"));
        let nan = vec![Series {
            name: "n".into(),
            points: vec![(1.0, 2.0), (2.0, f64::NAN)],
        }];
        let e = err(&nan, false, "c");
        assert!(
            e.contains("series \"n\" point 1 is not finite") && e.contains("NaN"),
            "{e}"
        );
        let inf = vec![Series {
            name: "i".into(),
            points: vec![(f64::INFINITY, 2.0)],
        }];
        assert!(err(&inf, false, "c").contains("not finite"));
        let zero = vec![Series {
            name: "z".into(),
            points: vec![(0.0, 2.0), (10.0, 3.0)],
        }];
        assert!(err(&zero, true, "c").contains("not > 0 on a log x axis"));
        assert!(err(&two_series(), false, "../escape").contains("chart file stem"));
        assert!(err(&two_series(), false, "").contains("must be non-empty"));
        // Nothing was written for any of the rejected charts.
        assert_eq!(std::fs::read_dir(dir.path()).expect("read_dir").count(), 0);
    }

    fn bar_inputs() -> (Vec<String>, Vec<(String, Vec<f64>)>) {
        (
            vec![
                "teacher MLP 784-256-10, batch 128".into(),
                "distill MLP 784-256-10, batch 128".into(),
                "distill MLP 784-64-10, batch 128".into(),
            ],
            vec![
                ("plain candle-nn".into(), vec![45_300.0, 51_000.0, 0.0]),
                ("fused".into(), vec![98_765.0, 120_000.0, 310_500.0]),
            ],
        )
    }

    fn bars<'a>(categories: &'a [String], groups: &'a [(String, Vec<f64>)]) -> BarChart<'a> {
        BarChart {
            title: "training throughput",
            y_label: "samples/s",
            categories,
            groups,
        }
    }

    #[test]
    fn bar_chart_writes_png_and_svg() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("nested");
        let (categories, groups) = bar_inputs();
        let paths = write_bar_chart(&out, "throughput", &bars(&categories, &groups)).expect("bar chart");
        assert_eq!(paths, vec![out.join("throughput.png"), out.join("throughput.svg")]);
        let png = std::fs::read(&paths[0]).expect("png");
        assert_eq!(png_size(&png), CHART_SIZE);
        let svg = std::fs::read_to_string(&paths[1]).expect("svg");
        assert!(svg.starts_with("<svg"), "svg header: {}", &svg[..40.min(svg.len())]);
        assert!(svg.contains("training throughput") && svg.contains("samples/s"));
        for (name, _) in &groups {
            assert!(svg.contains(name.as_str()), "svg lacks the legend entry {name:?}");
        }
        // Every word of every category name is drawn (wrapped, not cut: three categories have room for
        // these names on at most 3 lines of 14 px text).
        for word in categories.iter().flat_map(|c| c.split_whitespace()) {
            assert!(svg.contains(word), "svg lacks the category word {word:?}");
        }
        // The values are written above the bars, formatted by format_bar_value (checked below); plotters
        // writes an SVG text's content on a line of its own.
        for v in ["45.3k", "98.8k", "311k", "0"] {
            assert!(svg.contains(&format!("\n{v}\n")), "svg lacks the value label {v}");
        }
        // One filled rectangle per bar (6) in the two group colours, plus the two legend swatches.
        for c in [PALETTE[0], PALETTE[1]] {
            let fill = format!("fill=\"#{:02X}{:02X}{:02X}\"", c.0, c.1, c.2);
            assert_eq!(svg.matches(&fill).count(), 4, "{fill}");
        }
    }

    #[test]
    fn bar_chart_all_zero_and_many_categories_are_drawn() {
        // All zeros give an empty value range; 30 categories leave too little room for the names and values.
        let dir = tempfile::tempdir().expect("tempdir");
        let categories = vec!["only".to_string()];
        let groups = vec![("g".to_string(), vec![0.0])];
        write_bar_chart(dir.path(), "zero", &bars(&categories, &groups)).expect("zero chart");
        let categories: Vec<String> = (0..30).map(|i| format!("category number {i}")).collect();
        let groups: Vec<(String, Vec<f64>)> = (0..4)
            .map(|g| {
                (
                    format!("group {g}"),
                    (0..30).map(|i| 1000.5 * f64::from(i + g)).collect(),
                )
            })
            .collect();
        write_bar_chart(dir.path(), "many", &bars(&categories, &groups)).expect("many chart");
        let svg = std::fs::read_to_string(dir.path().join("many.svg")).expect("svg");
        assert!(svg.contains('…'), "long names are cut with an ellipsis");
        // 1000.5 * 29 = 29014.5 is one of the values (group 3, category 26).
        assert!(
            !svg.contains("\n29.0k\n"),
            "values that do not fit their bar are not written"
        );
        for stem in ["zero", "many"] {
            assert_eq!(
                png_size(&std::fs::read(dir.path().join(format!("{stem}.png"))).expect("png")),
                CHART_SIZE
            );
        }
    }

    #[test]
    fn bar_chart_bad_inputs_are_clear_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (categories, groups) = bar_inputs();
        let err = |categories: &[String], groups: &[(String, Vec<f64>)], stem: &str| {
            format!(
                "{:#}",
                write_bar_chart(dir.path(), stem, &bars(categories, groups)).expect_err("must fail")
            )
        };
        assert!(err(&[], &[("g".into(), vec![])], "b").contains("has no categories"));
        assert!(err(&categories, &[], "b").contains("has no groups"));
        let short = vec![groups[0].clone(), ("fused".into(), vec![1.0, 2.0])];
        let e = err(&categories, &short, "b");
        assert!(e.contains("group \"fused\" has 2 values for 3 categories"), "{e}");
        for (bad, shown) in [(f64::NAN, "NaN"), (f64::INFINITY, "inf"), (-1.5, "-1.5")] {
            let g = vec![("fused".to_string(), vec![1.0, bad, 3.0])];
            let e = err(&categories, &g, "b");
            assert!(
                e.contains(&format!(
                    "group \"fused\" has {shown} for \"distill MLP 784-256-10, batch 128\""
                )) && e.contains("finite value >= 0"),
                "{e}"
            );
        }
        assert!(err(&categories, &groups, "../escape").contains("chart file stem"));
        assert!(err(&categories, &groups, "").contains("must be non-empty"));
        // Nothing was written for any of the rejected charts.
        assert_eq!(std::fs::read_dir(dir.path()).expect("read_dir").count(), 0);
    }

    #[test]
    fn wrap_label_wraps_at_spaces_and_cuts_with_an_ellipsis() {
        // A fake font 1 unit wide per character, so the expected lines can be counted by hand.
        let w = |s: &str| Ok(s.chars().count() as u32);
        let wrap = |text: &str, max_w: u32, max_lines: usize| wrap_label(text, max_w, max_lines, w).expect("wrap");
        assert_eq!(wrap("int8", 10, 3), ["int8"]);
        assert_eq!(wrap("", 10, 3), Vec::<String>::new());
        assert_eq!(
            wrap("teacher MLP 784-256-10, batch 128", 12, 3),
            ["teacher MLP", "784-256-10,", "batch 128"]
        );
        // Two lines allowed: the second is cut to fit with its ellipsis ("784-256-10," is 11 wide + 1).
        assert_eq!(
            wrap("teacher MLP 784-256-10, batch 128", 12, 2),
            ["teacher MLP", "784-256-10,…"]
        );
        // A word wider than the line is cut too, down to the ellipsis alone.
        assert_eq!(wrap("abcdefghij", 5, 3), ["abcd…"]);
        assert_eq!(wrap("abc", 0, 3), ["…"]);
    }

    #[test]
    fn bar_values_are_short() {
        // Expected strings worked out by hand: 3 significant digits, then a k/M/G suffix.
        let cases = [
            (0.0, "0"),
            (0.0123, "0.0123"),
            (1.0, "1.00"),
            (3.984, "3.98"),
            (45.26, "45.3"),
            (999.0, "999"),
            (45_300.0, "45.3k"),
            (310_500.0, "311k"),
            (2_500_000.0, "2.50M"),
            (7.0e9, "7.00G"),
        ];
        for (v, want) in cases {
            assert_eq!(format_bar_value(v), want, "{v}");
        }
    }

    #[test]
    fn markdown_table_shape() {
        let t = markdown_table(
            &["participants", "method", "ms"],
            &[
                vec!["3".into(), "fed|mean".into(), "1.50".into()],
                vec!["10".into(), "raw".into()],
            ],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines,
            vec![
                "| participants | method | ms |",
                "| ---: | --- | ---: |",
                "| 3 | fed\\|mean | 1.50 |",
                "| 10 | raw |  |",
            ]
        );
        // A row longer than the header widens the table rather than breaking its shape.
        let t = markdown_table(&["a"], &[vec!["x".into(), "y".into()]]);
        assert_eq!(t, "| a |  |\n| --- | --- |\n| x | y |\n");
        assert_eq!(markdown_table(&["a", "b"], &[]), "| a | b |\n| --- | --- |\n");
    }

    #[test]
    fn report_writes_json_and_markdown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("r");
        let value = serde_json::json!({ "suite": "scale", "rows": [1, 2] });
        write_report(&out, "scale", &value, "| a |\n| --- |").expect("report");
        let back: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("scale.json")).expect("json")).expect("parse");
        assert_eq!(back, value);
        assert_eq!(
            std::fs::read_to_string(out.join("scale.md")).expect("md"),
            "| a |\n| --- |\n"
        );
        let e = write_report(&out, "a/b", &value, "").expect_err("bad suite");
        assert!(format!("{e:#}").contains("suite name"));
    }

    #[test]
    fn docs_section_replaced_only_between_markers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("benchmarks.md");
        let before = "# Benchmarks\n\nprose about scale\n\n<!-- bench-scale:begin -->\nold table\n<!-- bench-scale:end -->\n\nafter | text\n";
        std::fs::write(&p, before).expect("write");
        replace_docs_section(&p, "scale", "new table\n").expect("replace");
        let got = std::fs::read_to_string(&p).expect("read");
        assert_eq!(
            got,
            "# Benchmarks\n\nprose about scale\n\n<!-- bench-scale:begin -->\n\nnew table\n\n<!-- bench-scale:end -->\n\nafter | text\n"
        );
        // Idempotent, and a begin marker with a note (as bench robust writes it) is kept as is.
        replace_docs_section(&p, "scale", "new table").expect("again");
        assert_eq!(std::fs::read_to_string(&p).expect("read"), got);
        let noted = "x\n<!-- bench-robust:begin (generated by `fedistill bench robust`) -->\nold\n<!-- bench-robust:end -->\ny\n";
        std::fs::write(&p, noted).expect("write");
        replace_docs_section(&p, "robust", "T").expect("robust");
        assert_eq!(
            std::fs::read_to_string(&p).expect("read"),
            "x\n<!-- bench-robust:begin (generated by `fedistill bench robust`) -->\n\nT\n\n<!-- bench-robust:end -->\ny\n"
        );
    }

    #[test]
    fn docs_section_appended_when_absent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("benchmarks.md");
        std::fs::write(
            &p,
            "# Benchmarks\n\n<!-- bench-robust:begin -->\nR\n<!-- bench-robust:end -->\n\n",
        )
        .expect("write");
        replace_docs_section(&p, "scale", "S").expect("append");
        assert_eq!(
            std::fs::read_to_string(&p).expect("read"),
            "# Benchmarks\n\n<!-- bench-robust:begin -->\nR\n<!-- bench-robust:end -->\n\n<!-- bench-scale:begin -->\n\nS\n\n<!-- bench-scale:end -->\n"
        );
    }

    #[test]
    fn docs_section_bad_inputs_are_clear_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("b.md");
        let e = replace_docs_section(&p, "scale", "x").expect_err("missing file");
        assert!(format!("{e:#}").contains("reading"));
        let cases = [
            ("<!-- bench-scale:begin -->\nno end\n", "begin marker without its end marker"),
            ("no begin\n<!-- bench-scale:end -->\n", "end marker without its begin marker"),
            ("<!-- bench-scale:end -->\n<!-- bench-scale:begin -->\n", "end marker comes before"),
            ("<!-- bench-scale:begin\n<!-- bench-scale:end -->\n", "not closed by -->"),
            (
                "<!-- bench-scale:begin -->\na\n<!-- bench-scale:end -->\n<!-- bench-scale:begin -->\nb\n<!-- bench-scale:end -->\n",
                "more than one",
            ),
        ];
        for (text, want) in cases {
            std::fs::write(&p, text).expect("write");
            let e = format!("{:#}", replace_docs_section(&p, "scale", "x").expect_err(want));
            assert!(e.contains(want), "{text:?}: {e}");
            // The file is left untouched.
            assert_eq!(std::fs::read_to_string(&p).expect("read"), text);
        }
        std::fs::write(&p, "").expect("write");
        let e = replace_docs_section(&p, "scale", "<!-- bench-scale:end -->").expect_err("marker in body");
        assert!(format!("{e:#}").contains("must not itself contain"));
        assert!(format!("{:#}", replace_docs_section(&p, "sc ale", "x").expect_err("name")).contains("suite name"));
    }
}
