//! Small helpers for the self-contained HTML pages fedistill serves or writes (the coordinator's console,
//! the participant's page, `fedistill audit report`): escaping, one embedded style sheet and inline SVG
//! line charts. Nothing here loads anything from elsewhere.

/// The style sheet every page embeds in a `<style>` element.
pub const STYLE: &str = include_str!("html/style.css");

/// `s` escaped for HTML text and double-quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// One line of a chart.
pub struct Series<'a> {
    /// Legend name.
    pub name: &'a str,
    /// CSS colour.
    pub color: &'a str,
    /// (x, y) points, x ascending; non-finite values are skipped.
    pub points: Vec<(f64, f64)>,
}

/// `v` in a short human form (k, M, G suffixes for large values, up to 3 significant decimals).
pub fn short_number(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.1}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// An inline SVG line chart (with point markers, y range from the data unless `y_range`, axis labels
/// at the extremes and a legend), wrapped in `<figure class="chart" id="{id}">` with `title` as caption.
/// Without points it says so.
pub fn line_chart(id: &str, title: &str, x_label: &str, series: &[Series<'_>], y_range: Option<(f64, f64)>) -> String {
    const W: f64 = 420.0;
    const H: f64 = 190.0;
    const L: f64 = 52.0;
    const R: f64 = 10.0;
    const T: f64 = 10.0;
    const B: f64 = 42.0;
    let pts: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    let mut out = format!(
        "<figure class=\"chart\" id=\"{}\"><figcaption>{}</figcaption><svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{}\">",
        esc(id),
        esc(title),
        esc(title)
    );
    out.push_str(&format!(
        "<rect x=\"{L}\" y=\"{T}\" width=\"{}\" height=\"{}\" fill=\"#fbfcfd\" stroke=\"#d7dde3\"/>",
        W - L - R,
        H - T - B
    ));
    if pts.is_empty() {
        out.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#5b6670\" font-size=\"12\">no data yet</text></svg></figure>",
            (W + L - R) / 2.0,
            (H - B + T) / 2.0
        ));
        return out;
    }
    let (mut x0, mut x1) = pts
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (mut y0, mut y1) = y_range.unwrap_or_else(|| {
        let (a, b) = pts
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.1), b.max(p.1)));
        // Headroom above the largest value, so its marker sits inside the frame.
        (a.min(0.0), b + 0.05 * (b - a.min(0.0)).abs())
    });
    if x1 <= x0 {
        x0 -= 1.0;
        x1 += 1.0;
    }
    if y1 <= y0 {
        y1 = y0 + 1.0;
        y0 -= 0.0;
    }
    let sx = |x: f64| L + (x - x0) / (x1 - x0) * (W - L - R);
    let sy = |y: f64| H - B - (y - y0) / (y1 - y0) * (H - T - B);
    // Axis labels: y extremes, x extremes.
    let small = "font-size=\"10\" fill=\"#5b6670\"";
    out.push_str(&format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" {small}>{}</text><text x=\"{}\" y=\"{}\" text-anchor=\"end\" {small}>{}</text>",
        L - 4.0,
        T + 9.0,
        esc(&short_number(y1)),
        L - 4.0,
        H - B,
        esc(&short_number(y0))
    ));
    out.push_str(&format!(
        "<text x=\"{L}\" y=\"{}\" text-anchor=\"start\" {small}>{}</text><text x=\"{}\" y=\"{}\" text-anchor=\"end\" {small}>{}</text><text x=\"{}\" y=\"{}\" text-anchor=\"middle\" {small}>{}</text>",
        H - B + 13.0,
        esc(&short_number(x0)),
        W - R,
        H - B + 13.0,
        esc(&short_number(x1)),
        (W + L - R) / 2.0,
        H - B + 13.0,
        esc(x_label)
    ));
    let mut legend_x = L;
    for s in series {
        let p: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        let color = esc(s.color);
        if p.len() > 1 {
            let path: Vec<String> = p.iter().map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y))).collect();
            out.push_str(&format!(
                "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
                path.join(" ")
            ));
        }
        for &(x, y) in &p {
            out.push_str(&format!(
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{color}\"><title>{}: {} at {}</title></circle>",
                sx(x),
                sy(y),
                esc(s.name),
                esc(&short_number(y)),
                esc(&short_number(x))
            ));
        }
        out.push_str(&format!(
            "<rect x=\"{legend_x}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{color}\"/><text x=\"{}\" y=\"{}\" font-size=\"11\" fill=\"#1d232a\">{}</text>",
            H - 14.0,
            legend_x + 14.0,
            H - 5.0,
            esc(s.name)
        ));
        legend_x += 22.0 + 7.0 * s.name.chars().count() as f64;
    }
    out.push_str("</svg></figure>");
    out
}

/// A complete HTML document: `title`, the embedded style sheet, `body` and an optional inline script.
pub fn page(title: &str, body: &str, script: Option<&str>) -> String {
    let script = script.map(|s| format!("<script>{s}</script>")).unwrap_or_default();
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{}</title><style>{STYLE}</style></head><body>{body}{script}</body></html>\n",
        esc(title)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_draws() {
        assert_eq!(esc("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
        let c = line_chart(
            "c",
            "bytes <up>",
            "round",
            &[Series {
                name: "up",
                color: "#123",
                points: vec![(1.0, 10.0), (2.0, f64::NAN), (3.0, 30.0)],
            }],
            None,
        );
        assert!(
            c.contains("<polyline") && c.contains("bytes &lt;up&gt;") && !c.contains("NaN"),
            "{c}"
        );
        assert_eq!(c.matches("<circle").count(), 2);
        let empty = line_chart("e", "t", "round", &[], None);
        assert!(empty.contains("no data yet"));
        assert!(page("t", "<p>x</p>", Some("1")).starts_with("<!doctype html>"));
    }
}
