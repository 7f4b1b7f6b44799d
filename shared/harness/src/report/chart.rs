//! Line charts of the `fedistill bench` reports, and the PNG + SVG writer every chart goes through: plotters,
//! drawn with a font embedded in the binary so no system font is needed.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context};
use plotters::coord::ranged1d::{AsRangedCoord, DefaultFormatting, KeyPointHint, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;

/// DejaVu Sans (assets/fonts/, license in assets/fonts/LICENSE-DejaVu.txt), registered with plotters'
/// `ab_glyph` font table so rendering is identical on every machine and needs no fontconfig.
static FONT_BYTES: &[u8] = include_bytes!("../../../../assets/fonts/DejaVuSans.ttf");
/// The family name every text style of a chart uses; it is the one the embedded font is registered under.
pub(super) const FONT_FAMILY: &str = "sans-serif";
/// Line colours in series order (matplotlib's "tab10": distinct, and readable on white, unlike yellow).
pub(super) const PALETTE: [RGBColor; 10] = [
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
    super::check_name("chart file stem", stem)?;
    let bounds = Bounds::of(chart)?;
    register_font()?;
    write_png_and_svg(
        dir,
        stem,
        |root| draw(root, chart, &bounds),
        |root| draw(root, chart, &bounds),
    )
}

/// Creates DIR, draws DIR/STEM.png and DIR/STEM.svg with the two (identical) drawing functions and checks
/// both files are there and non-empty.
pub(super) fn write_png_and_svg(
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

pub(super) fn register_font() -> anyhow::Result<()> {
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
pub(super) struct FixedTicks {
    pub(super) range: std::ops::Range<f64>,
    pub(super) ticks: Option<Vec<f64>>,
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

/// `v` rounded to `digits` significant digits (10^log10(x) does not give back exactly 30).
pub(super) fn round_significant(v: f64, digits: i32) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    let scale = 10f64.powi(digits - 1 - v.abs().log10().floor() as i32);
    (v * scale).round() / scale
}

/// Tick labels: integers without decimals, otherwise up to 3 significant decimals, large values compact.
pub(super) fn format_tick(v: f64) -> String {
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

pub(super) fn plot_err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("plotting: {e}")
}

#[cfg(test)]
pub(crate) mod tests {
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
    pub(crate) fn png_size(bytes: &[u8]) -> (u32, u32) {
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
}
