//! Shared report writer of the `fedistill bench` suites: Markdown tables, the JSON + Markdown report files,
//! and the generated section of docs/benchmarks.md between `<!-- bench-SUITE:begin/end -->` markers; the
//! line and grouped bar charts (PNG + SVG) live in [`chart`].

mod bars;
mod chart;

pub use bars::{write_bar_chart, BarChart};
pub use chart::{write_chart, Chart, Series, CHART_SIZE};

use std::path::Path;

use anyhow::{anyhow, bail, Context};

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

#[cfg(test)]
mod tests {
    use super::*;

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
