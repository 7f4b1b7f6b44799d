//! Grouped bar charts of the `fedistill bench` reports (PNG + SVG), drawn with the font, palette and file
//! writer of [`super::chart`].

use std::path::{Path, PathBuf};

use anyhow::bail;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::chart::{
    format_tick, plot_err, register_font, round_significant, write_png_and_svg, FixedTicks, FONT_FAMILY, PALETTE,
};

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
    super::check_name("chart file stem", stem)?;
    let max = bar_max(chart)?;
    register_font()?;
    write_png_and_svg(
        dir,
        stem,
        |root| draw_bars(root, chart, max),
        |root| draw_bars(root, chart, max),
    )
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::chart::tests::png_size;
    use crate::report::CHART_SIZE;

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
}
