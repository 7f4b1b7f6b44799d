//! The operator's web console at `/` of the status server: one server-rendered, read-only HTML page built
//! from the same [`Status`] as `/status` (federation, round and phase with progress and deadline, one row
//! per participant, round-history charts as inline SVG, log size and checkpoints), plus a little embedded
//! JavaScript that polls `/status` (docs/operations.md, "Web console"). Also the operator credential that
//! guards the server when it is bound beyond loopback.

use fedistill_shared::html::{esc, line_chart, page, short_number, Series};

use crate::metrics::Status;

/// The console's script (embedded; nothing is loaded from elsewhere).
pub const SCRIPT: &str = include_str!("console/console.js");

/// Name of the cookie that carries the console token after `/?token=...`.
pub const COOKIE: &str = "fedistill_console";

/// Who may read the status server.
#[derive(Clone, Debug)]
pub enum Access {
    /// Bound to loopback: everyone who can connect.
    Open,
    /// Bound beyond loopback: requests must carry this bearer token (header or cookie).
    Token(String),
}

/// What a request presented.
pub enum Presented {
    /// Allowed.
    Ok,
    /// `?token=` on `/` with the right token: set the cookie and redirect to `/`.
    SetCookie,
    /// No or a wrong credential.
    Refused,
}

fn same(a: &[u8], b: &[u8]) -> bool {
    // Constant time in the token's length: no early exit on the first differing byte.
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Access {
    /// Checks `Authorization: Bearer T`, the `fedistill_console` cookie, or (only when `query_ok`) a
    /// `token=T` query parameter.
    pub fn check(&self, headers: &axum::http::HeaderMap, query: Option<&str>, query_ok: bool) -> Presented {
        let Access::Token(token) = self else {
            return Presented::Ok;
        };
        let t = token.as_bytes();
        let bearer = headers
            .get_all(axum::http::header::AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.strip_prefix("Bearer "))
            .any(|v| same(v.trim().as_bytes(), t));
        let cookie = headers
            .get_all(axum::http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .any(|(k, v)| k == COOKIE && same(v.as_bytes(), t));
        if bearer || cookie {
            return Presented::Ok;
        }
        if query_ok {
            let q = query
                .unwrap_or("")
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .any(|(k, v)| k == "token" && same(v.as_bytes(), t));
            if q {
                return Presented::SetCookie;
            }
        }
        Presented::Refused
    }
}

/// The 401 body.
pub const REFUSED: &str = "401 Unauthorized: this fedistill status server is bound beyond loopback and needs the \
operator's console token (operator/console.token in the federation directory): send `Authorization: Bearer <token>`, \
or open /?token=<token> once in a browser (see docs/operations.md, \"Web console\").\n";

fn age(now_ms: u64, t: Option<u64>) -> String {
    match t {
        None => "not since start".into(),
        Some(t) => {
            let s = now_ms.saturating_sub(t) as f64 / 1000.0;
            if s < 2.0 {
                "now".into()
            } else if s < 120.0 {
                format!("{s:.0} s ago")
            } else {
                format!("{:.0} min ago", s / 60.0)
            }
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The console page for `s`.
pub fn render(s: &Status) -> String {
    let now = now_ms();
    let mut b = String::new();
    b.push_str(&format!(
        "<main id=\"console\" data-round=\"{}\" data-phase=\"{}\"><header><h1>fedistill console: <span id=\"federation\">{}</span></h1><p id=\"task\">{}</p></header>",
        s.round,
        esc(&s.phase),
        esc(&s.federation),
        esc(&s.task)
    ));

    // Round and phase.
    let (got, exp) = (s.received.len(), s.expected.len());
    let pct = if exp > 0 {
        (100.0 * got as f64 / exp as f64).min(100.0)
    } else {
        0.0
    };
    let phase_class = match s.phase.as_str() {
        "finished" => "ok",
        "collecting" | "reporting" | "committing" => "warn",
        _ => "muted",
    };
    let deadline = match s.deadline_ms {
        Some(ms) => format!(
            "<span id=\"deadline\" data-ms=\"{ms}\">deadline in {:.1} s</span>",
            ms as f64 / 1000.0
        ),
        None => "<span id=\"deadline\">no deadline running</span>".into(),
    };
    b.push_str(&format!(
        "<section id=\"round\"><h2>Round <span id=\"round-number\">{}</span> of <span id=\"rounds\">{}</span> &middot; phase <span id=\"phase\" class=\"badge {phase_class}\">{}</span>{}</h2>\
         <div class=\"progress\"><div id=\"progress-bar\" style=\"width: {pct:.0}%\"></div></div>\
         <p><span id=\"progress-text\">{got} of {exp} contributions received (quorum {})</span> &middot; {deadline}</p>\
         <p class=\"muted\">received: {} &middot; waiting for: {}</p></section>",
        s.round,
        s.rounds,
        esc(&s.phase),
        if s.finished { " &middot; all rounds ran" } else { "" },
        s.quorum,
        esc(&list(&s.received)),
        esc(&list(
            &s.expected
                .iter()
                .filter(|p| !s.received.contains(p))
                .cloned()
                .collect::<Vec<_>>()
        )),
    ));

    // Participants.
    b.push_str(
        "<section id=\"participants\"><h2>Participants</h2><table><thead><tr><th>participant</th><th>state</th><th>connected</th><th>last seen</th>\
         <th class=\"num\">contributions</th><th class=\"num\">abstentions</th><th class=\"num\">reports</th><th>quarantine</th>\
         <th class=\"num\">&epsilon; spent</th><th class=\"num\">last accuracy</th></tr></thead><tbody>",
    );
    if s.participants.is_empty() {
        b.push_str("<tr><td colspan=\"10\" class=\"muted\">no participant enrolled yet</td></tr>");
    }
    for p in &s.participants {
        let state = if p.revoked {
            "<span class=\"badge bad\">revoked</span>"
        } else if p.quarantined {
            "<span class=\"badge warn\">quarantined</span>"
        } else {
            "<span class=\"badge ok\">active</span>"
        };
        let quarantine = if p.quarantined {
            format!(
                "<span class=\"warn\">quarantined</span> ({} decision(s))",
                p.quarantines
            )
        } else if p.quarantines > 0 {
            format!("released ({} decision(s))", p.quarantines)
        } else {
            "none".into()
        };
        b.push_str(&format!(
            "<tr id=\"participant-{}\" data-participant=\"{}\" data-state=\"{}\" class=\"{}\"><td><code>{}</code></td><td class=\"state\">{state}</td><td>{}</td><td>{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{quarantine}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            esc(&p.name),
            esc(&p.name),
            if p.revoked { "revoked" } else if p.quarantined { "quarantined" } else { "active" },
            if p.revoked { "revoked" } else { "" },
            esc(&p.name),
            if p.connected { "<span class=\"ok\">yes</span>" } else { "<span class=\"muted\">no</span>" },
            esc(&age(now, p.last_seen_unix_ms)),
            p.contributions,
            p.abstentions,
            p.reports,
            if p.epsilon_spent > 0.0 { format!("{:.3}", p.epsilon_spent) } else { "0".into() },
            p.last_accuracy.map(|a| format!("{:.2}%", 100.0 * a)).unwrap_or_else(|| "&ndash;".into()),
        ));
    }
    b.push_str("</tbody></table></section>");

    // Log and checkpoints.
    let cp = |c: &Option<crate::metrics::CheckpointStatus>, id: &str| match c {
        None => format!("<dd id=\"{id}\" class=\"muted\">none yet</dd>"),
        Some(c) => format!(
            "<dd id=\"{id}\">size {} root <code>{}</code> &middot; cosigned by {}</dd>",
            c.size,
            esc(&c.root[..c.root.len().min(16)]),
            if c.cosigners.is_empty() {
                "<span class=\"muted\">no witness yet</span>".to_string()
            } else {
                format!("<span class=\"ok\">{}</span>", esc(&c.cosigners.join(", ")))
            }
        ),
    };
    b.push_str(&format!(
        "<section id=\"log\"><h2>Update log</h2><dl class=\"kv\"><dt>records</dt><dd id=\"log-size\">{}</dd><dt>latest checkpoint</dt>{}<dt>newest cosigned</dt>{}</dl></section>",
        s.log_size,
        cp(&s.checkpoint, "checkpoint"),
        cp(&s.cosigned_checkpoint, "cosigned-checkpoint"),
    ));

    // History charts and table.
    let rounds = |f: &dyn Fn(&crate::metrics::RoundStatus) -> f64| -> Vec<(f64, f64)> {
        s.history.iter().map(|h| (h.round as f64, f(h))).collect()
    };
    let bytes = line_chart(
        "chart-bytes",
        "Bytes per round",
        "round",
        &[
            Series {
                name: "soft labels up",
                color: "#0b5cad",
                points: rounds(&|h| h.bytes_up as f64),
            },
            Series {
                name: "aggregate down",
                color: "#8250df",
                points: rounds(&|h| h.bytes_down as f64),
            },
        ],
        None,
    );
    let latency = line_chart(
        "chart-latency",
        "Round latency (open to commit, s)",
        "round",
        &[Series {
            name: "seconds",
            color: "#9a6700",
            points: rounds(&|h| h.seconds),
        }],
        None,
    );
    let acc = line_chart(
        "chart-accuracy",
        "Participant-reported student accuracy",
        "round",
        &[
            Series {
                name: "mean",
                color: "#1a7f37",
                points: s.reports.iter().map(|r| (r.round as f64, r.accuracy_mean)).collect(),
            },
            Series {
                name: "min",
                color: "#b42318",
                points: s.reports.iter().map(|r| (r.round as f64, r.accuracy_min)).collect(),
            },
        ],
        Some((0.0, 1.0)),
    );
    b.push_str(&format!(
        "<section id=\"history\"><h2>Round history</h2><div class=\"charts\">{bytes}{latency}{acc}</div>\
         <table><thead><tr><th class=\"num\">round</th><th>contributors</th><th>absent</th><th>abstained</th><th class=\"num\">bytes up</th><th class=\"num\">bytes down</th><th class=\"num\">seconds</th></tr></thead><tbody>"
    ));
    if s.history.is_empty() {
        b.push_str("<tr><td colspan=\"7\" class=\"muted\">no round aggregated by this process yet</td></tr>");
    }
    for h in s.history.iter().rev() {
        b.push_str(&format!(
            "<tr><td class=\"num\">{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{:.2}</td></tr>",
            h.round,
            esc(&list(&h.contributors)),
            esc(&list(&h.absent)),
            esc(&list(&h.abstained)),
            short_number(h.bytes_up as f64),
            short_number(h.bytes_down as f64),
            h.seconds
        ));
    }
    b.push_str("</tbody></table></section>");
    b.push_str(
        "<footer><span id=\"live\" data-live=\"pending\">server-rendered; live updates start when the script runs</span> &middot; read-only &middot; \
         <a href=\"status\">/status</a> &middot; <a href=\"metrics\">/metrics</a></footer></main>",
    );
    page(&format!("fedistill console: {}", s.federation), &b, Some(SCRIPT))
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{ParticipantStatus, RoundStatus};

    #[test]
    fn renders_rows_states_and_escapes() {
        let s = Status {
            federation: "fed<1>".into(),
            round: 3,
            rounds: 5,
            phase: "collecting".into(),
            expected: vec!["a".into(), "b".into()],
            received: vec!["a".into()],
            deadline_ms: Some(1500),
            participants: vec![
                ParticipantStatus {
                    name: "a".into(),
                    connected: true,
                    ..Default::default()
                },
                ParticipantStatus {
                    name: "b".into(),
                    revoked: true,
                    ..Default::default()
                },
            ],
            history: vec![RoundStatus {
                round: 1,
                contributors: vec!["a".into()],
                absent: vec![],
                abstained: vec![],
                bytes_up: 10,
                bytes_down: 20,
                seconds: 0.5,
                phases: Default::default(),
            }],
            ..Default::default()
        };
        let html = render(&s);
        assert!(html.contains("fed&lt;1&gt;") && !html.contains("fed<1>"));
        assert!(html.contains("id=\"participant-a\"") && html.contains("data-state=\"revoked\""));
        assert!(html.contains("1 of 2 contributions received"));
        assert!(html.contains("data-ms=\"1500\""));
        assert!(
            !html.contains("src=\"http") && !html.contains("href=\"http"),
            "nothing loaded from elsewhere"
        );
    }

    #[test]
    fn token_by_header_cookie_or_query() {
        let a = Access::Token("0123456789abcdef0123".into());
        let mut h = axum::http::HeaderMap::new();
        assert!(matches!(a.check(&h, None, true), Presented::Refused));
        assert!(matches!(
            a.check(&h, Some("token=0123456789abcdef0123"), true),
            Presented::SetCookie
        ));
        assert!(matches!(
            a.check(&h, Some("token=0123456789abcdef0123"), false),
            Presented::Refused
        ));
        assert!(matches!(
            a.check(&h, Some("token=0123456789abcdef0124"), true),
            Presented::Refused
        ));
        h.insert(
            axum::http::header::AUTHORIZATION,
            "Bearer 0123456789abcdef0123".parse().unwrap(),
        );
        assert!(matches!(a.check(&h, None, false), Presented::Ok));
        let mut h = axum::http::HeaderMap::new();
        h.insert(
            axum::http::header::COOKIE,
            "x=1; fedistill_console=0123456789abcdef0123".parse().unwrap(),
        );
        assert!(matches!(a.check(&h, None, false), Presented::Ok));
        assert!(matches!(
            Access::Open.check(&axum::http::HeaderMap::new(), None, false),
            Presented::Ok
        ));
    }
}
