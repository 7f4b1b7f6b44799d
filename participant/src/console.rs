//! The participant's read-only status page (`status = "127.0.0.1:PORT"` in the node config; loopback only):
//! what this node sent and received per round, its privacy budget, its degradation guard's decisions and
//! its student's metrics. Everything comes from what the participant already writes to its work directory
//! (`state.json`, `result.json`, `privacy.json`, `teacher-dp.json`, `round-NNNN/guard.json`), read at
//! each request, so the page never holds a lock the service needs. `/status.json` serves the same data.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use fedistill_shared::html::{esc, line_chart, page, short_number, Series};

use crate::config::ParticipantSettings;

/// What the page shows, as `/status.json` serves it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeStatus {
    /// Participant id.
    pub participant: String,
    /// Whether the federation finished (`result.json` exists).
    pub finished: bool,
    /// Last round distilled.
    pub last_done: u64,
    /// Checkpoints cosigned as a witness.
    pub cosigned: u64,
    /// Rounds as this node saw them (`state.json`), with the guard's reason when it kept a decision.
    pub rounds: Vec<Value>,
    /// Metrics of the served (accepted) student.
    pub student_metrics: Value,
    /// Privacy: `budget_epsilon`, `delta`, `rounds_released`, `epsilon_spent`, `teacher_epsilon`; null when off.
    pub privacy: Value,
}

struct Source {
    workdir: PathBuf,
    participant: String,
    privacy: Option<fedistill_shared::privacy::PrivacySettings>,
    classes: usize,
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

impl Source {
    fn status(&self) -> NodeStatus {
        let state = read_json(&self.workdir.join("state.json")).unwrap_or(Value::Null);
        let finished = self.workdir.join("result.json").is_file();
        let rounds: Vec<Value> = state["rounds"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|mut r| {
                let n = r["round"].as_u64().unwrap_or(0);
                if let Some(g) = read_json(&self.workdir.join(format!("round-{n:04}")).join("guard.json")) {
                    r["guard_reason"] = g["reason"].clone();
                }
                r
            })
            .collect();
        let privacy = match &self.privacy {
            None => Value::Null,
            Some(p) => {
                let released = read_json(&self.workdir.join("privacy.json"))
                    .and_then(|v| v["rounds_released"].as_u64())
                    .unwrap_or(0);
                let teacher: Option<fedistill_shared::privacy::DpSgdCost> =
                    read_json(&self.workdir.join("teacher-dp.json")).and_then(|v| serde_json::from_value(v).ok());
                let acc =
                    fedistill_shared::privacy::ParticipantPrivacy::with_settings(p, teacher, self.classes, released);
                serde_json::json!({
                    "budget_epsilon": p.budget_epsilon,
                    "delta": p.delta,
                    "rounds_released": released,
                    "epsilon_spent": acc.epsilon_spent(),
                    "teacher_epsilon": teacher.map(|t| t.epsilon),
                })
            }
        };
        NodeStatus {
            participant: self.participant.clone(),
            finished,
            last_done: state["last_done"].as_u64().unwrap_or(0),
            cosigned: state["cosigned"].as_u64().unwrap_or(0),
            rounds,
            student_metrics: state["accepted_metrics"].clone(),
            privacy,
        }
    }
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn pct(v: &Value) -> String {
    v.as_f64()
        .map(|a| format!("{:.2}%", 100.0 * a))
        .unwrap_or_else(|| "&ndash;".into())
}

/// The page for `s`.
pub fn render(s: &NodeStatus) -> String {
    let mut b = format!(
        "<main id=\"participant-page\"><header><h1>fedistill participant: <span id=\"participant\">{}</span></h1>\
         <p>{} &middot; last round distilled <span id=\"last-done\">{}</span> &middot; {} checkpoint(s) cosigned as a witness &middot; read-only</p></header>",
        esc(&s.participant),
        if s.finished { "<span class=\"badge ok\">federation finished</span>" } else { "<span class=\"badge warn\">running</span>" },
        s.last_done,
        s.cosigned
    );
    // Privacy budget.
    b.push_str("<section id=\"privacy\"><h2>Privacy budget</h2>");
    if s.privacy.is_null() {
        b.push_str("<p class=\"muted\">no [privacy] in this node's config: soft labels are released without noise</p>");
    } else {
        let p = &s.privacy;
        let spent = num(&p["epsilon_spent"]);
        let budget = num(&p["budget_epsilon"]);
        let share = if budget > 0.0 {
            (spent / budget * 100.0).min(100.0)
        } else {
            0.0
        };
        b.push_str(&format!(
            "<p><span id=\"epsilon-spent\">&epsilon; {spent:.3}</span> of {budget} spent (&delta; {}), {} round(s) released{}</p>\
             <div class=\"progress\"><div style=\"width: {share:.0}%\"></div></div>",
            p["delta"],
            p["rounds_released"],
            p["teacher_epsilon"]
                .as_f64()
                .map(|e| format!(", DP-SGD teacher &epsilon; {e:.3}"))
                .unwrap_or_default()
        ));
    }
    b.push_str("</section>");
    // Charts.
    let pts = |key: &str| -> Vec<(f64, f64)> { s.rounds.iter().map(|r| (num(&r["round"]), num(&r[key]))).collect() };
    let acc = line_chart(
        "chart-accuracy",
        "Student accuracy per round",
        "round",
        &[
            Series {
                name: "student",
                color: "#1a7f37",
                points: pts("student_accuracy"),
            },
            Series {
                name: "int8",
                color: "#0b5cad",
                points: pts("int8_accuracy"),
            },
            Series {
                name: "consensus",
                color: "#9a6700",
                points: pts("consensus_accuracy"),
            },
        ],
        Some((0.0, 1.0)),
    );
    let bytes = line_chart(
        "chart-bytes",
        "Bytes per round",
        "round",
        &[
            Series {
                name: "sent (soft labels)",
                color: "#0b5cad",
                points: pts("bytes_up"),
            },
            Series {
                name: "received (aggregate)",
                color: "#8250df",
                points: pts("bytes_down"),
            },
        ],
        None,
    );
    b.push_str(&format!(
        "<section id=\"rounds\"><h2>Rounds</h2><div class=\"charts\">{acc}{bytes}</div><table><thead><tr><th class=\"num\">round</th>\
         <th class=\"num\">sent</th><th class=\"num\">received</th><th class=\"num\">student</th><th class=\"num\">int8</th>\
         <th class=\"num\">consensus</th><th>guard</th><th class=\"num\">seconds</th></tr></thead><tbody>"
    ));
    if s.rounds.is_empty() {
        b.push_str("<tr><td colspan=\"8\" class=\"muted\">no round distilled yet</td></tr>");
    }
    for r in s.rounds.iter().rev() {
        let accepted = r["guard_accepted"].as_bool().unwrap_or(false);
        let reason = r["guard_reason"].as_str().unwrap_or("");
        b.push_str(&format!(
            "<tr data-round=\"{}\"><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{} <span class=\"muted\">{}</span></td><td class=\"num\">{:.1}</td></tr>",
            r["round"],
            r["round"],
            short_number(num(&r["bytes_up"])),
            short_number(num(&r["bytes_down"])),
            pct(&r["student_accuracy"]),
            pct(&r["int8_accuracy"]),
            pct(&r["consensus_accuracy"]),
            if accepted { "<span class=\"ok\">accepted</span>" } else { "<span class=\"bad\">rolled back</span>" },
            esc(reason),
            num(&r["seconds"])
        ));
    }
    b.push_str("</tbody></table></section>");
    // Served student's metrics.
    b.push_str("<section id=\"student\"><h2>Served student</h2>");
    match s.student_metrics.as_object() {
        Some(m) if !m.is_empty() => {
            b.push_str("<dl class=\"kv\">");
            for (k, v) in m {
                b.push_str(&format!("<dt>{}</dt><dd>{}</dd>", esc(k), esc(&short_number(num(v)))));
            }
            b.push_str("</dl>");
        }
        _ => b.push_str("<p class=\"muted\">no student accepted yet</p>"),
    }
    b.push_str("</section><footer><a href=\"status.json\">/status.json</a> &middot; reload to update</footer></main>");
    page(&format!("fedistill participant: {}", s.participant), &b, None)
}

/// Starts the page on `settings.status` (if set) until `cancel` fires; returns the bound address.
pub async fn spawn(
    settings: &ParticipantSettings,
    participant: &str,
    classes: usize,
    cancel: &CancellationToken,
) -> anyhow::Result<Option<SocketAddr>> {
    use anyhow::Context;
    use axum::http::header;
    use axum::routing::get;
    let Some(addr) = settings.status else {
        return Ok(None);
    };
    let src = std::sync::Arc::new(Source {
        workdir: settings.workdir.clone(),
        participant: participant.to_string(),
        privacy: settings.privacy,
        classes,
    });
    let (s1, s2) = (src.clone(), src);
    let app = axum::Router::new()
        .route(
            "/",
            get(move || {
                let s = s1.clone();
                async move {
                    let html = tokio::task::spawn_blocking(move || render(&s.status()))
                        .await
                        .unwrap_or_default();
                    (
                        [
                            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                            (header::CACHE_CONTROL, "no-store"),
                        ],
                        html,
                    )
                }
            }),
        )
        .route(
            "/status.json",
            get(move || {
                let s = s2.clone();
                async move {
                    axum::Json(
                        tokio::task::spawn_blocking(move || s.status())
                            .await
                            .unwrap_or_default(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the participant page on {addr}"))?;
    let local = listener.local_addr()?;
    let cancel = cancel.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await;
    });
    tracing::info!(%local, "participant page listening");
    Ok(Some(local))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_rounds_guard_and_privacy() {
        let s = NodeStatus {
            participant: "bank-a".into(),
            last_done: 2,
            rounds: vec![
                serde_json::json!({"round": 1, "bytes_up": 100, "bytes_down": 400, "student_accuracy": 0.5, "int8_accuracy": 0.5, "consensus_accuracy": 0.7, "guard_accepted": true, "seconds": 1.0}),
                serde_json::json!({"round": 2, "bytes_up": 100, "bytes_down": 400, "student_accuracy": 0.4, "int8_accuracy": 0.4, "consensus_accuracy": 0.7, "guard_accepted": false, "guard_reason": "accuracy <dropped>", "seconds": 1.0}),
            ],
            student_metrics: serde_json::json!({"accuracy": 0.5}),
            privacy: serde_json::json!({"budget_epsilon": 8.0, "delta": 1e-5, "rounds_released": 2, "epsilon_spent": 2.5, "teacher_epsilon": null}),
            ..Default::default()
        };
        let html = render(&s);
        assert!(
            html.contains("rolled back") && html.contains("accuracy &lt;dropped&gt;"),
            "{html}"
        );
        assert!(html.contains("&epsilon; 2.500</span> of 8 spent"), "{html}");
        assert!(html.contains("data-round=\"2\""));
    }
}
