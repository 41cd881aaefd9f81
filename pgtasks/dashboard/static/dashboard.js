// pgtasks dashboard: CSRF header on every htmx request, the live event stream, and the charts.
// No build step: plain browser JavaScript over the vendored htmx and uPlot.
(function () {
  "use strict";
  const meta = (name) => document.querySelector(`meta[name="${name}"]`).content;
  const base = meta("pgtasks-base");
  const csrf = meta("pgtasks-csrf");
  const TOPICS = ["jobs", "queues", "workers", "leader"];

  htmx.config.responseHandling = [
    { code: "204", swap: false },
    { code: "[23]..", swap: true },
    { code: "[45]..", swap: true, error: true },  // show the server's explanation, not nothing
  ];
  document.body.addEventListener("htmx:configRequest", (e) => {
    e.detail.headers["X-CSRF-Token"] = csrf;
  });
  // A live refresh that failed (the database is down, say) keeps the region it has: its error
  // page has no #live to select, and swapping it in would leave nothing to refresh later.
  document.body.addEventListener("htmx:beforeSwap", (e) => {
    if (e.detail.elt && e.detail.elt.id === "live" && e.detail.xhr.status >= 400) {
      e.detail.shouldSwap = false;
      const status = document.getElementById("live-status");
      if (status) status.textContent = `live: the last refresh failed (HTTP ${e.detail.xhr.status}); retrying on the next change`;
    }
  });

  // A live refresh would reset ticked checkboxes: hold it while anything is selected.
  function selectionActive() {
    return document.querySelector('#live input[name="ids"]:checked') !== null;
  }
  document.body.addEventListener("htmx:beforeRequest", (e) => {
    if (e.detail.elt && e.detail.elt.id === "live" && selectionActive()) {
      e.preventDefault();
      stale = true;
    }
  });
  document.body.addEventListener("change", (e) => {
    const t = e.target;
    if (t.id === "select-all") {
      document.querySelectorAll('#live input[name="ids"]').forEach((box) => { box.checked = t.checked; });
    }
    const note = document.getElementById("selection-note");
    if (note) note.hidden = !selectionActive();
    if (!selectionActive() && stale) { stale = false; refresh(TOPICS); }
  });

  // -- live updates: one EventSource per tab, closed while the tab is hidden ----------------
  let source = null;
  let greeted = false;
  let stale = false;
  const status = document.getElementById("live-status");
  // A change that arrives while the live region is being fetched would be lost: htmx queues its
  // request on the element that fetch replaces, and drops it with that element. Hold such changes
  // and refresh again once the new region has settled (only then does it listen for changes).
  let refreshing = false;
  const missed = new Set();
  function refresh(topics) {
    if (refreshing) { topics.forEach((topic) => missed.add(topic)); return; }
    topics.forEach((topic) => htmx.trigger(document.body, "pgtasks-" + topic));
  }
  function refreshed(e) {
    if (!e.detail.elt || e.detail.elt.id !== "live") return;
    refreshing = false;
    if (missed.size) { const topics = [...missed]; missed.clear(); refresh(topics); }
  }
  document.body.addEventListener("htmx:beforeRequest", (e) => {
    if (!e.defaultPrevented && e.detail.elt && e.detail.elt.id === "live") refreshing = true;
  });
  // Settled after a swap; the others end a fetch that swaps nothing.
  ["htmx:afterSettle", "htmx:sendError", "htmx:timeout", "htmx:sendAbort"].forEach((name) => {
    document.body.addEventListener(name, refreshed);
  });
  function open() {
    if (source) return;
    source = new EventSource(base + "/events");
    source.addEventListener("hello", (e) => {
      if (status) status.textContent = JSON.parse(e.data);
      // A reconnect (the server restarted, the network blinked): what changed meanwhile was never sent.
      if (greeted) refresh(TOPICS);
      greeted = true;
    });
    source.addEventListener("change", (e) => refresh(JSON.parse(e.data)));
    source.onerror = () => { if (status) status.textContent = "live: reconnecting…"; };
  }
  function close() {
    if (source) { source.close(); source = null; }
    if (status) status.textContent = "live: paused while the tab is hidden";
  }
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) { close(); } else { open(); refresh(TOPICS); }
  });
  if (!document.hidden) open();
  window.addEventListener("pagehide", close);

  // -- charts ------------------------------------------------------------------------------
  const SERIES = [
    { label: "completed", stroke: "#2f9e44", fill: "rgba(47,158,68,0.08)" },
    { label: "retried", stroke: "#e8590c" },
    { label: "discarded", stroke: "#c92a2a" },
  ];
  const charts = {};
  function drawCharts() {
    const holder = document.getElementById("chart-data");
    if (!holder) return;
    const data = JSON.parse(holder.textContent);
    document.querySelectorAll(".chart[data-series]").forEach((el) => {
      const d = data[el.dataset.series];
      const columns = [d.t, d.completed, d.retried, d.discarded];
      const old = charts[el.id];
      if (old && old.root.isConnected) { old.setData(columns); return; }
      el.innerHTML = "";
      charts[el.id] = new uPlot({
        width: Math.max(el.clientWidth, 300), height: 200,
        series: [{}, ...SERIES.map((s) => ({ ...s, width: 1.5 }))],
        axes: [{}, { label: "jobs / min", size: 60 }],
        scales: { y: { range: (u, min, max) => [0, Math.max(1, max)] } },
      }, columns, el);
    });
  }
  document.body.addEventListener("htmx:afterSettle", drawCharts);
  window.addEventListener("resize", () => {
    Object.entries(charts).forEach(([id, chart]) => {
      const el = document.getElementById(id);
      if (el) chart.setSize({ width: Math.max(el.clientWidth, 300), height: 200 });
    });
  });
  drawCharts();
  window.pgtasksDashboard = { charts, refresh, open, close };
})();
