// kiln dashboard: live updates over SSE, charts (uPlot), actions with confirmation.
// Server-rendered HTML is the source of truth: on an event the page asks the server for its
// sections again and swaps them in, so the browser never re-implements the views.
"use strict";

(function () {
  const body = document.body;
  const page = body.dataset.page;
  const csrf = (document.querySelector('meta[name="kiln-csrf"]') || {}).content || "";
  const live = document.getElementById("live");
  const notice = document.getElementById("notice");
  // For the benchmark and tests: when each event id was first shown (ms since epoch).
  window.kilnSeen = window.kilnSeen || {};

  function say(text, kind) {
    notice.textContent = text;
    notice.className = "notice " + (kind || "");
    notice.hidden = false;
  }

  async function getJSON(url) {
    const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (response.status === 401) { window.location.href = "/ui/login"; throw new Error("signed out"); }
    const data = await response.json();
    if (!response.ok) throw new Error((data.error && data.error.message) || response.statusText);
    return data;
  }

  function swap(sections) {
    for (const [name, html] of Object.entries(sections)) {
      const el = document.querySelector('[data-section="' + name + '"]');
      if (el && el.innerHTML !== html) el.innerHTML = html;
    }
  }

  function markSeen() {
    const now = Date.now();
    document.querySelectorAll("[data-event-id]").forEach(function (el) {
      const id = el.dataset.eventId;
      if (!(id in window.kilnSeen)) window.kilnSeen[id] = now;
    });
  }

  // One refresh at a time; events arriving meanwhile ask for one more after it.
  function refresher(load) {
    let running = false, again = false;
    async function run() {
      if (running) { again = true; return; }
      running = true;
      try { await load(); } catch (err) { console.warn("refresh failed", err); }
      running = false;
      if (again) { again = false; run(); }
    }
    return run;
  }

  function follow(url, onEvent) {
    const source = new EventSource(url);
    source.onopen = function () { live.classList.add("on"); live.title = "live"; };
    source.onerror = function () { live.classList.remove("on"); live.title = "reconnecting…"; };
    source.onmessage = function (message) { onEvent(JSON.parse(message.data)); };
    source.addEventListener("error", function (message) {
      if (message.data) say(JSON.parse(message.data).error.message, "error");
    });
    return source;
  }

  // --- overview -----------------------------------------------------------------------
  if (page === "overview") {
    const refresh = refresher(async function () {
      swap((await getJSON("/ui/data/overview")).html);
    });
    follow("/ui/events", refresh);
    setInterval(refresh, 5000);  // request rates move without events
    return;
  }
  if (page !== "app") return;

  // --- app page -----------------------------------------------------------------------
  const env = body.dataset.env, app = body.dataset.app;
  const base = "/ui/data/apps/" + encodeURIComponent(env) + "/" + encodeURIComponent(app);
  markSeen();

  const refresh = refresher(async function () {
    const data = await getJSON(base);
    swap(data.html);
    markSeen();
  });
  follow("/ui/events?env=" + encodeURIComponent(env) + "&app=" + encodeURIComponent(app) +
         "&after=" + (body.dataset.lastEvent || "0"), refresh);
  setInterval(refresh, 10000);  // ages and anything that changes without an event

  // Logs
  const logs = document.getElementById("logs");
  const refreshLogs = refresher(async function () {
    const data = await getJSON(base + "/logs?tail=100");
    const atBottom = logs.scrollTop + logs.clientHeight >= logs.scrollHeight - 4;
    logs.textContent = data.lines.map(function (l) {
      return (l.at || "").slice(11, 19) + " " + (l.instance || "").slice(0, 12) + " " + l.text;
    }).join("\n") || "(no log lines)";
    if (atBottom) logs.scrollTop = logs.scrollHeight;
  });
  refreshLogs();
  setInterval(refreshLogs, 3000);

  // Charts: one line per release in each of the three charts.
  const palette = ["#2563eb", "#f97316", "#16a34a", "#9333ea", "#dc2626", "#0891b2"];
  const charts = {};
  let chartReleases = "";
  function chartWidth(el) { return Math.max(240, el.clientWidth); }
  function makeChart(id, releases, t, values, scale) {
    const el = document.getElementById(id);
    el.innerHTML = "";
    const series = [{}].concat(releases.map(function (r, i) {
      return { label: "release " + r, stroke: palette[i % palette.length], width: 2, spanGaps: false,
               value: function (u, v) { return v == null ? "—" : v.toFixed(scale === "pct" ? 2 : 1); } };
    }));
    const opts = { width: chartWidth(el), height: 180, series: series,
                   scales: { x: { time: true } }, axes: [{}, { size: 50 }], legend: { live: true } };
    return new window.uPlot(opts, [t].concat(values), el);
  }
  const drawCharts = refresher(async function () {
    const data = await getJSON(base + "/series");
    const releases = Object.keys(data.releases).map(Number).sort(function (a, b) { return a - b; });
    document.getElementById("chart-legend").textContent = releases.length
      ? releases.map(function (r) { return "release " + r + ": " + data.releases[r].requests + " requests"; }).join(" · ")
      : "no requests counted yet";
    body.dataset.chartReleases = releases.join(",");
    body.dataset.chartPoints = String(data.t.length);
    if (!window.uPlot) {
      document.getElementById("chart-note").textContent = "charts need uPlot: run scripts/bootstrap.sh";
      return;
    }
    const pick = function (field, factor) {
      return releases.map(function (r) {
        return data.releases[r][field].map(function (v) { return v == null ? null : v * factor; });
      });
    };
    const sets = {
      "chart-rate": pick("rate", 1), "chart-errors": pick("error_rate", 100), "chart-p95": pick("p95_ms", 1),
    };
    const key = releases.join(",");
    for (const [id, values] of Object.entries(sets)) {
      if (key !== chartReleases || !charts[id]) {
        if (charts[id]) charts[id].destroy();
        charts[id] = makeChart(id, releases, data.t, values, id === "chart-errors" ? "pct" : "");
      } else {
        charts[id].setData([data.t].concat(values));
      }
    }
    chartReleases = key;
  });
  window.addEventListener("load", drawCharts);
  setInterval(drawCharts, 2000);
  window.addEventListener("resize", function () {
    for (const [id, chart] of Object.entries(charts)) {
      chart.setSize({ width: chartWidth(document.getElementById(id)), height: 180 });
    }
  });

  // Actions: confirm, then POST with the session's CSRF token; the API's refusal is shown as is.
  const dialog = document.getElementById("confirm");
  let pending = null;
  document.querySelectorAll("[data-action]").forEach(function (button) {
    button.addEventListener("click", function () {
      pending = button;
      let text = button.dataset.confirm;
      if (button.dataset.action === "scale") {
        text = "Scale " + app + " to " + document.getElementById("scale-n").value + " instances?";
      }
      document.getElementById("confirm-text").textContent = text;
      dialog.showModal();
    });
  });
  dialog.addEventListener("close", async function () {
    const button = pending;
    pending = null;
    if (dialog.returnValue !== "ok" || !button) return;
    const action = button.dataset.action;
    const payload = {};
    if (button.dataset.full) payload.full = true;
    if (action === "scale") payload.instances = Number(document.getElementById("scale-n").value);
    say(action + "…", "");
    try {
      const response = await fetch("/ui/actions/" + encodeURIComponent(env) + "/" + encodeURIComponent(app) + "/" + action, {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-Kiln-CSRF": csrf },
        body: JSON.stringify(payload),
      });
      const data = await response.json();
      if (response.ok) say(data.message, "ok");
      else say(action + " refused: " + ((data.error && data.error.message) || response.statusText), "error");
    } catch (err) {
      say(action + " failed: " + err, "error");
    }
    refresh();
  });
})();
