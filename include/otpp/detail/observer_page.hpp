#pragma once
// The observer's page: one self-contained document (no script or style from
// elsewhere: it works with no network, and nothing third-party runs beside
// the action buttons). Data arrive as JSON from /api/snapshot each sample
// period and go into the DOM as text, never as markup.

#include <string_view>

namespace otpp::detail {

inline constexpr std::string_view observer_page = R"otpp_page(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>otpp observer</title>
<style>
:root { --bg:#f6f7f9; --card:#fff; --ink:#1d2330; --mute:#6b7385; --line:#e2e5eb; --accent:#4b5bdc; --bad:#c0392b; --ok:#2e8b57; --warn:#d68910; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; background:var(--bg); color:var(--ink); }
header { display:flex; align-items:baseline; gap:1.5em; padding:.7em 1.2em; background:#1d2330; color:#fff; flex-wrap:wrap; }
header h1 { font-size:1.15em; margin:0; letter-spacing:.02em; }
header .stat { color:#c9cede; } header .stat b { color:#fff; font-weight:600; }
#conn { margin-left:auto; font-size:.85em; padding:.1em .6em; border-radius:1em; background:var(--ok); }
#conn.down { background:var(--bad); }
main { display:grid; grid-template-columns: minmax(320px, 1fr) minmax(420px, 1.3fr); gap:1em; padding:1em 1.2em; }
.card { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:.8em 1em; min-width:0; }
.card h2 { font-size:.95em; margin:.1em 0 .6em; color:var(--mute); font-weight:600; text-transform:uppercase; letter-spacing:.04em; }
.wide { grid-column: 1 / -1; }
ul.tree, ul.tree ul { list-style:none; margin:0; padding-left:1.1em; }
ul.tree { padding-left:0; }
ul.tree li { margin:.1em 0; }
.node { cursor:pointer; padding:.05em .35em; border-radius:4px; white-space:nowrap; }
.node:hover { background:#eef0fb; }
.node.sel { background:#dfe3fb; }
.tog { display:inline-block; width:1.1em; color:var(--mute); cursor:pointer; user-select:none; }
.pid { font-family:ui-monospace, Menlo, Consolas, monospace; color:var(--mute); font-size:.9em; }
.badge { font-size:.75em; padding:0 .45em; border-radius:1em; margin-left:.35em; background:#eceff4; color:var(--mute); }
.badge.restarts { background:#fdebd0; color:#9c640c; }
.badge.queue { background:#fadbd8; color:var(--bad); }
.badge.sup { background:#e3e7fd; color:var(--accent); }
.charts { display:grid; grid-template-columns: 1fr 1fr; gap:.8em; }
.chart h3 { font-size:.85em; margin:0 0 .2em; font-weight:600; }
.chart canvas { width:100%; height:130px; display:block; }
table { border-collapse:collapse; width:100%; font-size:.92em; }
th, td { text-align:left; padding:.3em .6em; border-bottom:1px solid var(--line); white-space:nowrap; }
th { cursor:pointer; user-select:none; color:var(--mute); font-weight:600; position:sticky; top:0; background:var(--card); }
th.num, td.num { text-align:right; font-variant-numeric: tabular-nums; }
th.sorted::after { content:" \25BE"; } th.sorted.asc::after { content:" \25B4"; }
tbody tr { cursor:pointer; } tbody tr:hover { background:#f3f4fb; } tbody tr.sel { background:#dfe3fb; }
.tablewrap { max-height:420px; overflow:auto; }
#detail { position:fixed; top:0; right:0; bottom:0; width:min(440px, 95vw); background:var(--card); border-left:1px solid var(--line); box-shadow:-4px 0 16px rgba(0,0,0,.08); padding:1em 1.2em; overflow:auto; }
#detail[hidden] { display:none; }
#detail h2 { margin:.1em 0 .5em; font-size:1.1em; }
#detail dl { display:grid; grid-template-columns:auto 1fr; gap:.2em .9em; margin:.4em 0 .8em; }
#detail dt { color:var(--mute); } #detail dd { margin:0; word-break:break-word; }
#detail pre { background:#f4f5f8; padding:.6em; border-radius:6px; white-space:pre-wrap; word-break:break-word; max-height:260px; overflow:auto; }
a.pidlink { color:var(--accent); cursor:pointer; text-decoration:none; font-family:ui-monospace, Menlo, Consolas, monospace; }
button { font:inherit; padding:.35em .9em; border-radius:6px; border:1px solid var(--line); background:#fff; cursor:pointer; }
button.danger { background:var(--bad); border-color:var(--bad); color:#fff; }
#close { float:right; }
#action-status { margin-left:.6em; color:var(--mute); }
#d-actions button + button { margin-left:.5em; }
details pre { max-height:360px; overflow:auto; font-size:.85em; background:#f4f5f8; padding:.6em; border-radius:6px; }
.muted { color:var(--mute); }
</style>
</head>
<body>
<header>
  <h1>otpp observer</h1>
  <span class="stat">processes <b id="ov-processes">-</b></span>
  <span class="stat">workers <b id="ov-workers">-</b></span>
  <span class="stat">threads <b id="ov-threads">-</b></span>
  <span class="stat">timers <b id="ov-timers">-</b></span>
  <span class="stat">restarts <b id="ov-restarts">-</b></span>
  <span class="stat">up <b id="ov-uptime">-</b></span>
  <span id="conn">connecting</span>
</header>
<main>
  <section class="card">
    <h2>Supervision trees</h2>
    <ul class="tree" id="tree"></ul>
  </section>
  <section class="card">
    <h2>Over time</h2>
    <div class="charts">
      <div class="chart"><h3>Scheduler utilisation (%)</h3><canvas id="c-util"></canvas></div>
      <div class="chart"><h3>Messages / s</h3><canvas id="c-msgs"></canvas></div>
      <div class="chart"><h3>Restarts</h3><canvas id="c-restarts"></canvas></div>
      <div class="chart"><h3>Processes</h3><canvas id="c-procs"></canvas></div>
    </div>
  </section>
  <section class="card wide">
    <h2>Processes</h2>
    <div class="tablewrap"><table id="procs">
      <thead><tr>
        <th data-key="pid">pid</th><th data-key="label">name</th><th data-key="type">type</th><th data-key="status">status</th>
        <th class="num" data-key="queue">mailbox</th><th class="num" data-key="memory">memory</th>
        <th class="num" data-key="handled">handled</th><th class="num" data-key="restarts">restarts</th>
      </tr></thead>
      <tbody></tbody>
    </table></div>
  </section>
  <section class="card wide">
    <details id="metrics-box"><summary>Metrics (Prometheus text, as served on <a href="/metrics">/metrics</a>)</summary><pre id="metrics"></pre></details>
  </section>
</main>
<aside id="detail" hidden>
  <button id="close" title="close">&#x2715;</button>
  <h2 id="d-title"></h2>
  <dl id="d-fields"></dl>
  <div id="d-children"></div>
  <h3>State</h3>
  <pre id="d-state"></pre>
  <div id="d-actions"><button id="suspend">Suspend</button><button id="resume">Resume</button><button class="danger" id="kill">Kill</button><span id="action-status"></span></div>
</aside>
<script>
"use strict";
const token = new URLSearchParams(location.hash.slice(1)).get("token");
let snap = null, selected = null, sortKey = "queue", sortAsc = false, looseOpen = false;
const collapsed = new Set();

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const k of kids) if (k !== null && k !== undefined) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return e;
}
function shortType(t) { return (t || "").replace(/^.*::/, ""); }
function label(p) { return p.id || p.name || shortType(p.type) || p.pid; }
function bytes(n) { return n < 1024 ? n + " B" : n < 1048576 ? (n / 1024).toFixed(1) + " KiB" : (n / 1048576).toFixed(1) + " MiB"; }
function duration(s) { s = Math.floor(s); return s < 60 ? s + " s" : s < 3600 ? Math.floor(s / 60) + " min " + (s % 60) + " s" : Math.floor(s / 3600) + " h " + Math.floor(s % 3600 / 60) + " min"; }

async function refresh() {
  try {
    const r = await fetch("/api/snapshot", {cache: "no-store"});
    if (!r.ok) throw new Error(r.status);
    snap = await r.json();
    document.getElementById("conn").textContent = "live";
    document.getElementById("conn").className = "";
    render();
  } catch (e) {
    document.getElementById("conn").textContent = "disconnected";
    document.getElementById("conn").className = "down";
  }
  setTimeout(refresh, snap ? Math.max(250, snap.overview.sample_every) : 1000);
}

function render() {
  const o = snap.overview;
  for (const k of ["processes", "workers", "threads", "timers", "restarts"]) document.getElementById("ov-" + k).textContent = o[k];
  document.getElementById("ov-uptime").textContent = duration(o.uptime);
  renderTree(); renderTable(); renderCharts();
  if (selected) loadDetail(selected);
  if (document.getElementById("metrics-box").open) loadMetrics();
  document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes || 0) + 1);
}

function renderTree() {
  const byPid = new Map(snap.processes.map(p => [p.pid, p]));
  const kids = new Map();
  for (const p of snap.processes) {
    const parent = p.parent && byPid.has(p.parent) ? p.parent : "";
    if (!kids.has(parent)) kids.set(parent, []);
    kids.get(parent).push(p);
  }
  const node = p => {
    const children = kids.get(p.pid) || [];
    const li = el("li", {"data-pid": p.pid, "data-label": label(p), "data-restarts": p.restarts});
    const open = !collapsed.has(p.pid);
    li.append(el("span", {class: "tog", onclick: () => { open ? collapsed.add(p.pid) : collapsed.delete(p.pid); renderTree(); }},
                 children.length ? (open ? "\u25BE" : "\u25B8") : ""));
    li.append(el("span", {class: "node" + (p.pid === selected ? " sel" : ""), onclick: () => select(p.pid)},
                 label(p), " ", el("span", {class: "pid"}, p.pid),
                 p.supervisor ? el("span", {class: "badge sup"}, "supervisor") : null,
                 p.restarts ? el("span", {class: "badge restarts"}, p.restarts + " restart" + (p.restarts > 1 ? "s" : "")) : null,
                 p.queue ? el("span", {class: "badge queue"}, p.queue + " queued") : null,
                 p.status === "busy" ? el("span", {class: "badge queue"}, "busy") : null));
    if (children.length && open) li.append(el("ul", {}, ...children.map(node)));
    return li;
  };
  const roots = kids.get("") || [];
  const trees = roots.filter(p => (kids.get(p.pid) || []).length);
  const loose = roots.filter(p => !(kids.get(p.pid) || []).length);
  const ul = document.getElementById("tree");
  ul.replaceChildren(...trees.map(node));
  if (loose.length) {
    const li = el("li", {}, el("span", {class: "tog", onclick: () => { looseOpen = !looseOpen; renderTree(); }}, looseOpen ? "\u25BE" : "\u25B8"),
                  el("span", {class: "muted"}, loose.length + " processes outside any tree"));
    if (looseOpen) li.append(el("ul", {}, ...loose.map(node)));
    ul.append(li);
  }
}

function renderTable() {
  const rows = snap.processes.map(p => Object.assign({label: label(p), memory: 0, handled: 0}, p));
  rows.sort((a, b) => {
    const x = a[sortKey] ?? "", y = b[sortKey] ?? "";
    const c = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y), undefined, {numeric: true});
    return sortAsc ? c : -c;
  });
  for (const th of document.querySelectorAll("#procs th"))
    th.className = (th.classList.contains("num") ? "num " : "") + (th.dataset.key === sortKey ? "sorted" + (sortAsc ? " asc" : "") : "");
  document.querySelector("#procs tbody").replaceChildren(...rows.slice(0, 1000).map(p =>
    el("tr", {"data-pid": p.pid, class: p.pid === selected ? "sel" : "", onclick: () => select(p.pid)},
       el("td", {class: "pid"}, p.pid), el("td", {}, p.label), el("td", {}, p.type || ""), el("td", {}, p.status),
       el("td", {class: "num"}, p.queue + (p.capacity ? " / " + p.capacity : "")), el("td", {class: "num"}, bytes(p.memory)),
       el("td", {class: "num"}, p.handled), el("td", {class: "num"}, p.restarts))));
}

function drawChart(id, series, opts) {
  const c = document.getElementById(id), dpr = window.devicePixelRatio || 1;
  const w = c.clientWidth, h = c.clientHeight;
  c.width = w * dpr; c.height = h * dpr;
  const g = c.getContext("2d");
  g.scale(dpr, dpr);
  g.clearRect(0, 0, w, h);
  const pad = {l: 44, r: 6, t: 6, b: 16};
  let max = opts.max || 0;
  for (const s of series) for (const v of s.values) max = Math.max(max, v);
  if (max <= 0) max = 1;
  const n = Math.max(2, ...series.map(s => s.values.length));
  const x = i => pad.l + (w - pad.l - pad.r) * i / (n - 1);
  const y = v => pad.t + (h - pad.t - pad.b) * (1 - v / max);
  g.strokeStyle = "#e2e5eb"; g.fillStyle = "#6b7385"; g.font = "11px system-ui, sans-serif"; g.lineWidth = 1;
  for (const f of [0, 0.5, 1]) {
    g.beginPath(); g.moveTo(pad.l, y(max * f)); g.lineTo(w - pad.r, y(max * f)); g.stroke();
    const v = max * f;
    g.fillText(v >= 1e6 ? (v / 1e6).toFixed(1) + "M" : v >= 1e4 ? (v / 1e3).toFixed(0) + "k" : String(Math.round(v * 10) / 10), 2, y(v) + 4);
  }
  g.fillText(opts.span, pad.l, h - 3);
  for (const s of series) {
    g.strokeStyle = s.color; g.lineWidth = 1.6; g.beginPath();
    s.values.forEach((v, i) => { const px = x(i + n - s.values.length), py = y(v); i ? g.lineTo(px, py) : g.moveTo(px, py); });
    g.stroke();
  }
}

function renderCharts() {
  const h = snap.history;
  const span = h.length ? "last " + duration(h[h.length - 1].t - h[0].t) : "waiting for samples";
  const colors = ["#4b5bdc", "#2e8b57", "#d68910", "#c0392b", "#8e44ad", "#16a085", "#7f8c8d", "#e67e22"];
  const nsched = h.length ? h[h.length - 1].utilisation.length : 0;
  const util = [];
  for (let i = 0; i < nsched; ++i) util.push({color: colors[i % colors.length], values: h.map(s => 100 * (s.utilisation[i] || 0))});
  drawChart("c-util", util, {max: 100, span});
  drawChart("c-msgs", [{color: colors[0], values: h.map(s => s.messages_per_s)}], {span});
  drawChart("c-restarts", [{color: colors[3], values: h.map(s => s.restarts)}], {span, max: 1});
  drawChart("c-procs", [{color: colors[1], values: h.map(s => s.processes)}], {span});
}

function select(pid) {
  selected = pid;
  document.getElementById("action-status").textContent = "";
  loadDetail(pid);
  renderTree(); renderTable();
}

async function loadDetail(pid) {
  let d;
  try {
    const r = await fetch("/api/process?pid=" + encodeURIComponent(pid), {cache: "no-store"});
    d = await r.json();
    if (!r.ok) d = {pid, status: "exited", error: d.error};
  } catch (e) { return; }
  if (pid !== selected) return;
  const pane = document.getElementById("detail");
  pane.hidden = false;
  pane.dataset.pid = pid;
  document.getElementById("d-title").textContent = (d.name || shortType(d.type) || "process") + " " + pid;
  const link = p => p ? el("a", {class: "pidlink", onclick: () => select(p)}, p) : "none";
  const f = [["status", d.status], ["type", d.type], ["parent", d.type ? link(d.parent) : ""],
             ["mailbox", d.queue === undefined ? "" : d.queue + (d.capacity ? " of " + d.capacity + ", " + d.dropped + " dropped" : "")],
             ["memory", d.memory === undefined ? "" : bytes(d.memory)], ["handled", d.handled],
             ["links", d.links ? (d.links.length ? el("span", {}, ...d.links.flatMap((l, i) => i ? [", ", link(l)] : [link(l)])) : "none") : ""],
             ["monitors", d.monitoring === undefined ? "" : d.monitoring + " held, " + d.monitored_by + " on it"],
             ["traps exits", d.trap_exit === undefined ? "" : (d.trap_exit ? "yes" : "no")]];
  if (d.error) f.push(["note", d.error]);
  document.getElementById("d-fields").replaceChildren(...f.filter(([, v]) => v !== "" && v !== undefined)
    .flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  const ch = document.getElementById("d-children");
  ch.replaceChildren(...(d.children && d.children.length ? [el("h3", {}, "Children"),
    el("ul", {}, ...d.children.map(c => el("li", {"data-id": c.id}, c.id + " ", c.pid ? link(c.pid) : el("span", {class: "muted"}, c.state))))] : []));
  document.getElementById("d-state").textContent = d.state === undefined ? "" : d.state === null ? "(no fmt formatter for this server's state)" : d.state;
  document.getElementById("d-actions").hidden = !(snap && snap.overview.actions && token) || d.status === "exited";
  document.getElementById("suspend").hidden = d.status === "suspended";
  document.getElementById("resume").hidden = d.status !== "suspended";
}

// kill, suspend or resume the selected process; the answer names it.
async function act(action, done) {
  const pid = selected, status = document.getElementById("action-status");
  status.textContent = action + " " + pid + "...";
  try {
    const r = await fetch("/api/" + action + "?pid=" + encodeURIComponent(pid), {method: "POST", headers: {"X-Otpp-Token": token || ""}});
    const d = await r.json();
    status.textContent = r.ok ? done + " " + d[done] : "refused: " + d.error;
    status.dataset.result = r.ok ? done : "refused";
    if (r.ok && action !== "kill") loadDetail(pid);
  } catch (e) { status.textContent = "failed: " + e; }
}

async function loadMetrics() {
  try { document.getElementById("metrics").textContent = await (await fetch("/metrics", {cache: "no-store"})).text(); } catch (e) {}
}

for (const th of document.querySelectorAll("#procs th"))
  th.addEventListener("click", () => { if (sortKey === th.dataset.key) sortAsc = !sortAsc; else { sortKey = th.dataset.key; sortAsc = false; } renderTable(); });
document.getElementById("close").addEventListener("click", () => { selected = null; document.getElementById("detail").hidden = true; renderTree(); renderTable(); });
document.getElementById("kill").addEventListener("click", () => act("kill", "killed"));
document.getElementById("suspend").addEventListener("click", () => act("suspend", "suspended"));
document.getElementById("resume").addEventListener("click", () => act("resume", "resumed"));
document.getElementById("metrics-box").addEventListener("toggle", e => { if (e.target.open) loadMetrics(); });
refresh();
</script>
</body>
</html>
)otpp_page";

}  // namespace otpp::detail
