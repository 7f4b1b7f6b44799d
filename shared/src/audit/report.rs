//! The HTML behind `fedistill audit report`: the auditor's record as one self-contained HTML file (embedded style, inline
//! SVG, no script, nothing loaded from elsewhere). The verdict and the failures are the verifier's own
//! [`Report`] (`shared::audit::verify_with`, nothing re-verified here); the per-round tables and plots are
//! read from the bundle's records, which the verdict covers.

use std::collections::BTreeMap;

use crate::audit::{self, Bundle, Report, CHECKPOINTS_DIR, PAYLOADS_DIR, RECORDS_FILE};
use crate::html::{esc, line_chart, page, Series};
use crate::ledger::note::Trust;
use crate::ledger::{GuardDecision, Record, RuleName, SignedCheckpoint};

/// The groups of checks `audit verify` runs, by the item names its failures carry.
const CHECKS: &[(&str, &str)] = &[
    (
        "manifest",
        "bundle manifest: format, file list and SHA-256 of every file",
    ),
    ("records.bin", "records decode as canonical update-log records"),
    (
        "checkpoints",
        "checkpoint log signatures (coordinator key) and witness cosignatures",
    ),
    (
        "proofs",
        "Merkle proofs: every checkpoint's root and consistency between checkpoints",
    ),
    (
        "record ",
        "record signatures, roster, round order, quarantine and abstention rules, aggregates recomputed",
    ),
    (
        "payloads/",
        "stored payloads match their digests and the records that name them",
    ),
    (
        "expected checkpoint",
        "the bundle extends the expected checkpoint (--expect-checkpoint)",
    ),
    (
        "payloads",
        "every contribution, report and abstention payload present (--require-payloads)",
    ),
];

#[derive(Default)]
struct Round {
    opened: Option<(RuleName, u32)>,
    contributions: Vec<String>,
    abstentions: Vec<String>,
    quarantines: Vec<String>,
    releases: Vec<String>,
    reports: Vec<(String, Option<f64>, GuardDecision)>,
    aggregate: Option<(usize, String, Vec<String>)>,
    epsilon: f64,
}

fn category(item: &str) -> usize {
    // "payloads" exactly is the --require-payloads check; "payloads/…" one payload.
    if item == "payloads" {
        return 7;
    }
    CHECKS
        .iter()
        .position(|(p, _)| *p != "payloads" && item.starts_with(p))
        .unwrap_or(CHECKS.len())
}

/// The report for `bundle` verified against `trust` (`report` is what `verify_with` returned).
pub fn render(
    bundle: &Bundle,
    trust: &Trust,
    report: &Report,
    bundle_name: &str,
    opts_expect: bool,
    opts_require: bool,
) -> String {
    let ok = report.ok();
    let mut b = String::new();
    b.push_str(&format!(
        "<main id=\"audit-report\" data-verdict=\"{}\"><header><h1>fedistill audit report</h1><p>bundle <code>{}</code> &middot; log <code>{}</code> &middot; generated {}</p></header>",
        if ok { "ok" } else { "failed" },
        esc(bundle_name),
        esc(&trust.log.origin),
        esc(&now_utc())
    ));
    // Verdict.
    let head = report
        .head
        .as_ref()
        .map(|h| format!("head size {} root <code>{}</code>", h.size, esc(&h.root.to_hex())))
        .unwrap_or_else(|| "no verified checkpoint".into());
    if ok {
        b.push_str(&format!(
            "<section id=\"verdict\"><p class=\"verdict ok\">VERIFIED: the bundle verifies against the trust file</p>\
             <p>{} records, {} checkpoints ({head}), cosigned by {} (quorum {}), {} record signatures, {} aggregates recomputed bit for bit{}{}</p>",
            report.records,
            report.checkpoints,
            esc(&report.head_cosigners.join(", ")),
            trust.quorum,
            report.record_signatures,
            report.aggregates_recomputed,
            report
                .extends
                .as_ref()
                .map(|e| format!("; extends the expected checkpoint of size {} root <code>{}</code>", e.size, esc(&e.root.to_hex())))
                .unwrap_or_default(),
            report.payloads_present.map(|n| format!("; all {n} record payloads present")).unwrap_or_default(),
        ));
    } else {
        let first = report.failures.first();
        b.push_str(&format!(
            "<section id=\"verdict\"><p class=\"verdict bad\">FAILED: {} problem(s)</p><p>first offending item: <code>{}</code>: {}</p>",
            report.failures.len(),
            esc(first.map_or("", |f| f.item.as_str())),
            esc(first.map_or("", |f| f.reason.as_str())),
        ));
    }
    for n in &report.notes {
        b.push_str(&format!("<p class=\"muted\">note: {}</p>", esc(n)));
    }
    b.push_str("</section>");

    // Checks.
    let mut by_check: BTreeMap<usize, Vec<&audit::Failure>> = BTreeMap::new();
    for f in &report.failures {
        by_check.entry(category(&f.item)).or_default().push(f);
    }
    b.push_str("<section id=\"checks\"><h2>Checks</h2><table><thead><tr><th>check</th><th>result</th><th>failures</th></tr></thead><tbody>");
    for (i, (_, what)) in CHECKS.iter().enumerate() {
        let ran = match i {
            6 => opts_expect,
            7 => opts_require,
            _ => true,
        };
        let fails = by_check.get(&i).map(Vec::as_slice).unwrap_or(&[]);
        let result = if !ran {
            "<span class=\"muted\">not requested</span>"
        } else if fails.is_empty() {
            "<span class=\"ok\">pass</span>"
        } else {
            "<span class=\"bad\">FAIL</span>"
        };
        b.push_str(&format!(
            "<tr><td>{}</td><td>{result}</td><td>{}</td></tr>",
            esc(what),
            failures_list(fails)
        ));
    }
    if let Some(other) = by_check.get(&CHECKS.len()) {
        b.push_str(&format!(
            "<tr><td>other</td><td><span class=\"bad\">FAIL</span></td><td>{}</td></tr>",
            failures_list(other)
        ));
    }
    b.push_str("</tbody></table></section>");

    // Checkpoints and cosigners.
    let mut cps: Vec<SignedCheckpoint> = bundle
        .files
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("{CHECKPOINTS_DIR}/")))
        .filter_map(|(_, v)| SignedCheckpoint::parse(v).ok())
        .collect();
    cps.sort_by_key(|c| c.checkpoint.size);
    b.push_str(&format!(
        "<section id=\"checkpoints\"><h2>Checkpoints and cosigners</h2><p>trusted witnesses: {} (quorum {})</p><table><thead><tr><th class=\"num\">size</th><th>root</th><th>cosigners</th></tr></thead><tbody>",
        esc(&trust.witnesses.iter().map(|w| w.name.as_str()).collect::<Vec<_>>().join(", ")),
        trust.quorum
    ));
    for c in &cps {
        let cosigners: Vec<&str> = c
            .signatures
            .iter()
            .filter(|s| s.name != c.checkpoint.origin)
            .map(|s| s.name.as_str())
            .collect();
        b.push_str(&format!(
            "<tr><td class=\"num\">{}</td><td><code>{}</code></td><td>{}</td></tr>",
            c.checkpoint.size,
            esc(&c.checkpoint.root.to_hex()),
            if cosigners.is_empty() {
                "<span class=\"muted\">none</span>".to_string()
            } else {
                esc(&cosigners.join(", "))
            }
        ));
    }
    b.push_str("</tbody></table></section>");

    // Rounds.
    let mut rounds: BTreeMap<u64, Round> = BTreeMap::new();
    for (i, raw) in records(bundle).iter().enumerate() {
        let Ok(r) = Record::decode(raw) else { continue };
        match r {
            Record::RoundOpened {
                round, rule, quorum, ..
            } => rounds.entry(round.0).or_default().opened = Some((rule, quorum)),
            Record::Contribution { round, participant, .. } => rounds
                .entry(round.0)
                .or_default()
                .contributions
                .push(participant.to_string()),
            Record::Abstention {
                round,
                participant,
                reason,
                ..
            } => rounds
                .entry(round.0)
                .or_default()
                .abstentions
                .push(format!("{participant} ({reason})")),
            Record::Quarantine {
                round,
                participant,
                reason,
                ..
            } => rounds
                .entry(round.0)
                .or_default()
                .quarantines
                .push(format!("{participant}: {reason}")),
            Record::QuarantineRelease { round, participant, .. } => rounds
                .entry(round.0)
                .or_default()
                .releases
                .push(participant.to_string()),
            Record::RoundReport {
                round,
                participant,
                metrics,
                guard,
                ..
            } => {
                let acc = metrics.iter().find(|m| m.name == "accuracy").map(|m| m.value);
                rounds
                    .entry(round.0)
                    .or_default()
                    .reports
                    .push((participant.to_string(), acc, guard))
            }
            Record::Aggregate {
                round,
                digest,
                contributors,
                ..
            } => {
                rounds.entry(round.0).or_default().aggregate =
                    Some((i, digest.to_hex(), contributors.iter().map(|p| p.to_string()).collect()))
            }
            Record::PrivacySpend { round, epsilon, .. } => rounds.entry(round.0).or_default().epsilon += epsilon,
            _ => {}
        }
    }
    let has_payloads = bundle.files.keys().any(|k| k.starts_with(&format!("{PAYLOADS_DIR}/")));
    b.push_str(
        "<section id=\"rounds\"><h2>Rounds</h2><table><thead><tr><th class=\"num\">round</th><th>rule</th><th>contributions</th><th>abstentions</th>\
         <th>quarantines</th><th>reports (accuracy, guard)</th><th>aggregate</th><th>recomputed</th></tr></thead><tbody>",
    );
    for (n, r) in &rounds {
        let recomputed = match &r.aggregate {
            None => "<span class=\"muted\">no aggregate</span>".to_string(),
            Some((i, _, _)) => {
                let failed = report
                    .failures
                    .iter()
                    .any(|f| f.item.starts_with(&format!("record {i} ")) || f.item == format!("record {i}"));
                if failed {
                    "<span class=\"bad\">FAILED</span>".into()
                } else if !has_payloads {
                    "<span class=\"muted\">no payloads in the bundle</span>".into()
                } else if ok {
                    "<span class=\"ok\">bit for bit</span>".into()
                } else {
                    "<span class=\"muted\">bundle failed elsewhere</span>".into()
                }
            }
        };
        let reports: Vec<String> = r
            .reports
            .iter()
            .map(|(p, a, g)| {
                format!(
                    "{p} {} {g}",
                    a.map(|a| format!("{:.2}%", 100.0 * a)).unwrap_or_else(|| "-".into())
                )
            })
            .collect();
        let mut quarantine: Vec<String> = r.quarantines.clone();
        quarantine.extend(r.releases.iter().map(|p| format!("{p} released")));
        b.push_str(&format!(
            "<tr data-round=\"{n}\"><td class=\"num\">{n}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{recomputed}</td></tr>",
            esc(&r.opened.as_ref().map(|(rule, q)| format!("{rule} (quorum {q})")).unwrap_or_default()),
            esc(&list(&r.contributions)),
            esc(&list(&r.abstentions)),
            esc(&list(&quarantine)),
            esc(&list(&reports)),
            r.aggregate
                .as_ref()
                .map(|(_, d, c)| format!("<code>{}</code> of {}", esc(&d[..16.min(d.len())]), esc(&c.join(", "))))
                .unwrap_or_default(),
        ));
    }
    if rounds.is_empty() {
        b.push_str("<tr><td colspan=\"8\" class=\"muted\">no round in the bundle</td></tr>");
    }
    b.push_str("</tbody></table>");

    // Plots.
    let pts = |f: &dyn Fn(&Round) -> Option<f64>| -> Vec<(f64, f64)> {
        rounds
            .iter()
            .filter_map(|(n, r)| f(r).map(|v| (*n as f64, v)))
            .collect()
    };
    let counts = line_chart(
        "chart-participation",
        "Participation per round",
        "round",
        &[
            Series {
                name: "contributions",
                color: "#0b5cad",
                points: pts(&|r| Some(r.contributions.len() as f64)),
            },
            Series {
                name: "abstentions",
                color: "#9a6700",
                points: pts(&|r| Some(r.abstentions.len() as f64)),
            },
            Series {
                name: "quarantines",
                color: "#b42318",
                points: pts(&|r| Some(r.quarantines.len() as f64)),
            },
        ],
        None,
    );
    let mean = |v: Vec<f64>| {
        if v.is_empty() {
            None
        } else {
            Some(v.iter().sum::<f64>() / v.len() as f64)
        }
    };
    let acc = line_chart(
        "chart-accuracy",
        "Reported student accuracy (mean of round reports)",
        "round",
        &[Series {
            name: "accuracy",
            color: "#1a7f37",
            points: pts(&|r| mean(r.reports.iter().filter_map(|x| x.1).collect())),
        }],
        Some((0.0, 1.0)),
    );
    let eps = line_chart(
        "chart-epsilon",
        "Privacy spend recorded per round (sum of epsilon)",
        "round",
        &[Series {
            name: "epsilon",
            color: "#8250df",
            points: pts(&|r| Some(r.epsilon)),
        }],
        None,
    );
    b.push_str(&format!("<div class=\"charts\">{counts}{acc}{eps}</div></section>"));
    b.push_str("<footer>Written by <code>fedistill audit report</code>; the verdict is <code>fedistill audit verify</code>'s. Self-contained: no script, nothing loaded from elsewhere.</footer></main>");
    page(
        &format!("fedistill audit report: {}", if ok { "VERIFIED" } else { "FAILED" }),
        &b,
        None,
    )
}

/// The record bytes of `records.bin` (u32 big-endian length, then the record), in log order; a cut-off
/// tail is left out (the verifier's failures already name it).
fn records(bundle: &Bundle) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let bytes = bundle.files.get(RECORDS_FILE).map(Vec::as_slice).unwrap_or(&[]);
    let mut off = 0usize;
    while let Some(len) = bytes.get(off..off + 4) {
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let Some(body) = bytes.get(off + 4..off + 4 + len) else {
            break;
        };
        out.push(body);
        off += 4 + len;
    }
    out
}

fn failures_list(fails: &[&audit::Failure]) -> String {
    if fails.is_empty() {
        return String::new();
    }
    let items: Vec<String> = fails
        .iter()
        .map(|f| format!("<li><code>{}</code>: {}</li>", esc(&f.item), esc(&f.reason)))
        .collect();
    format!("<ul class=\"bad\">{}</ul>", items.join(""))
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "-".into()
    } else {
        v.join(", ")
    }
}

fn now_utc() -> String {
    let t = crate::provision::now_utc();
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}
