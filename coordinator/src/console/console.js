// fedistill console: polls ./status every 2 s, updates the live figures and reloads the server-rendered
// page when anything else changed. Read-only; credentials travel as the same-origin cookie.
(function () {
  "use strict";
  var main = document.getElementById("console");
  var last = null;
  var deadlineAt = null;
  function text(id, v) { var e = document.getElementById(id); if (e) { e.textContent = v; } }
  function shape(s) {
    return JSON.stringify([s.round, s.phase, s.log_size, s.finished, s.connected, s.received, s.expected,
      (s.participants || []).map(function (p) { return [p.name, p.revoked, p.quarantined, p.contributions, p.abstentions, p.reports, p.epsilon_spent]; }),
      (s.history || []).length, (s.reports || []).length, s.checkpoint, s.cosigned_checkpoint]);
  }
  function tick() {
    var e = document.getElementById("deadline");
    if (!e) { return; }
    if (deadlineAt === null) { e.textContent = "no deadline running"; return; }
    var left = Math.max(0, deadlineAt - Date.now());
    e.textContent = "deadline in " + (left / 1000).toFixed(1) + " s";
  }
  function live(s) {
    text("round-number", s.round);
    text("phase", s.phase);
    var exp = (s.expected || []).length, got = (s.received || []).length;
    text("progress-text", got + " of " + exp + " contributions received (quorum " + s.quorum + ")");
    var bar = document.getElementById("progress-bar");
    if (bar) { bar.style.width = (exp > 0 ? Math.min(100, 100 * got / exp) : 0) + "%"; }
    deadlineAt = (s.deadline_ms === null || s.deadline_ms === undefined) ? null : Date.now() + s.deadline_ms;
    tick();
    var st = document.getElementById("live");
    if (st) { st.textContent = "live, updated " + new Date().toLocaleTimeString(); st.className = "ok"; st.setAttribute("data-live", "ok"); }
  }
  function reload() {
    return fetch("./", { credentials: "same-origin", cache: "no-store" }).then(function (r) {
      if (!r.ok) { throw new Error("HTTP " + r.status); }
      return r.text();
    }).then(function (html) {
      var doc = new DOMParser().parseFromString(html, "text/html");
      var fresh = doc.getElementById("console");
      if (fresh) { main.replaceWith(fresh); main = fresh; }
    });
  }
  function poll() {
    fetch("status", { credentials: "same-origin", cache: "no-store" }).then(function (r) {
      if (!r.ok) { throw new Error("HTTP " + r.status); }
      return r.json();
    }).then(function (s) {
      var sh = shape(s);
      var p = (last !== null && sh === last) ? Promise.resolve() : reload();
      last = sh;
      return p.then(function () { live(s); });
    }).catch(function (e) {
      var st = document.getElementById("live");
      if (st) { st.textContent = "not updating: " + e.message; st.className = "bad"; st.setAttribute("data-live", "error"); }
    });
  }
  var d = document.getElementById("deadline");
  if (d && d.getAttribute("data-ms")) { deadlineAt = Date.now() + Number(d.getAttribute("data-ms")); }
  setInterval(tick, 250);
  setInterval(poll, 2000);
  poll();
})();
