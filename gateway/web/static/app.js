// The gateway's status page: polls api/status every second (the daemon rebuilds it once a second,
// so the page is at most ~2 s behind), sparklines every history step (>= 5 s), one series' points on a click.
// Hand-written SVG, no library, no build step. Every text from the gateway goes through
// textContent (device names and errors come from the field, never trusted as HTML).
"use strict";

const STATUS_EVERY_MS = 1000;
const SPARK_EVERY_MS = 5000;
const TIMEOUT_MS = 1500;
const SVGNS = "http://www.w3.org/2000/svg";

let status = null;          // last status received
let lastOk = 0;             // Date.now() of the last answer
let sparks = { series: {} };
let plotting = null;        // {id, source, device, quantity, unit, range}

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v; else if (k.startsWith("on")) el.addEventListener(k.slice(2), v); else el.setAttribute(k, v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : String(c));
  return el;
}

function s(tag, attrs) {
  const el = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  return el;
}

async function getJSON(url) {
  const ctrl = new AbortController();
  const timer = setTimeout(() => ctrl.abort(), TIMEOUT_MS);
  try {
    const r = await fetch(url, { signal: ctrl.signal, cache: "no-store" });
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    return await r.json();
  } finally { clearTimeout(timer); }
}

// --- formatting -------------------------------------------------------------

function ago(ns) {
  if (!ns) return "never";
  return dur((Date.now() * 1e6 - ns) / 1e9) + " ago";
}
function dur(sec) {
  if (sec === null || sec === undefined) return "–";
  sec = Math.max(0, sec);
  if (sec < 90) return `${Math.round(sec)} s`;
  if (sec < 5400) return `${Math.round(sec / 60)} min`;
  if (sec < 172800) return `${(sec / 3600).toFixed(1)} h`;
  return `${(sec / 86400).toFixed(1)} d`;
}
function clock(ns) { return ns ? new Date(ns / 1e6).toLocaleTimeString() : "–"; }
function num(v) {
  if (typeof v !== "number") return String(v);
  const a = Math.abs(v);
  return a !== 0 && (a >= 1e6 || a < 1e-3) ? v.toExponential(3) : String(Math.round(v * 1000) / 1000);
}
function bytes(n) { return n >= 1e6 ? `${(n / 1e6).toFixed(1)} MB` : n >= 1e3 ? `${(n / 1e3).toFixed(1)} kB` : `${n} B`; }
function pct(r) { return r === null || r === undefined ? "–" : `${(r * 100).toFixed(r < 1 && r > 0.99 ? 1 : 0)} %`; }
// SenML unit names as a technician writes them.
const UNIT = { Cel: "°C", "ug/m3": "µg/m³", "/": "", "%RH": "% RH", m3: "m³", "m3/h": "m³/h", deg: "°", lon: "° lon", lat: "° lat" };
function unit(u) { return u in UNIT ? UNIT[u] : u; }
const STATE_CLASS = { up: "green", running: "green", ok: "green", down: "red", failing: "red", restarting: "amber" };

// --- charts -----------------------------------------------------------------

// A polyline of [t_ms, value] points scaled into w x h; returns the element and how many points it drew.
function line(points, x0, x1, w, h, pad) {
  let lo = Infinity, hi = -Infinity;
  for (const [, v] of points) { if (v < lo) lo = v; if (v > hi) hi = v; }
  if (lo === hi) { lo -= 1; hi += 1; }
  const sx = (w - 2 * pad) / Math.max(1, x1 - x0), sy = (h - 2 * pad) / (hi - lo);
  const pts = points.map(([t, v]) => `${(pad + (t - x0) * sx).toFixed(1)},${(h - pad - (v - lo) * sy).toFixed(1)}`);
  return { el: s("polyline", { points: pts.join(" ") }), lo, hi };
}

function sparkline(id) {
  const svg = s("svg", { class: "spark", width: 110, height: 30, viewBox: "0 0 110 30", "data-series": id });
  const pts = sparks.series[id] || [];
  svg.setAttribute("data-points", pts.length);
  // The x axis starts at the first point: a gateway up for 5 minutes shows those 5 minutes, not a dot.
  if (pts.length) svg.append(line(pts, Math.max(sparks.from_ms, pts[0][0]), sparks.to_ms, 110, 30, 2).el);
  return svg;
}

function bigPlot(data, range) {
  const W = 900, H = 320, P = 40, L = 70;  // L: room for the value labels left of the y axis
  const svg = s("svg", { class: "plot", viewBox: `0 0 ${W} ${H}`, "data-points": data.points.length,
                         "data-from": data.from, "data-to": data.to });
  const x1 = Math.floor(data.to / 1e6);
  const x0 = data.points.length ? Math.max(Math.floor(data.from / 1e6), data.points[0][0]) : Math.floor(data.from / 1e6);
  svg.append(s("line", { class: "axis", x1: L, y1: H - P, x2: W - P, y2: H - P }),
             s("line", { class: "axis", x1: L, y1: P, x2: L, y2: H - P }));
  if (data.points.length) {
    const { el, lo, hi } = line(data.points, x0, x1, W - L + P, H, P);
    el.setAttribute("transform", `translate(${L - P},0)`);
    svg.append(el);
    const fmt = x1 - x0 < 600000 ? { hour: "2-digit", minute: "2-digit", second: "2-digit" } : { hour: "2-digit", minute: "2-digit" };
    const label = (x, y, text, anchor) => { const t = s("text", { x, y, "text-anchor": anchor || "start" }); t.textContent = text; return t; };
    svg.append(label(4, P + 4, num(hi)), label(4, H - P, num(lo)));
    for (let i = 0; i <= 4; i++) {
      const t = x0 + (x1 - x0) * i / 4;
      svg.append(label(L + (W - L - P) * i / 4, H - P + 18, new Date(t).toLocaleTimeString([], fmt), "middle"));
    }
  }
  return svg;
}

async function openPlot(series, range) {
  plotting = { ...series, range: range || (plotting && plotting.id === series.id ? plotting.range : 3600) };
  const to = Date.now() * 1e6, from = to - plotting.range * 1e9;
  document.getElementById("modal-title").textContent = `${series.device} · ${series.quantity} (${unit(series.unit)})`;
  for (const b of document.querySelectorAll("#zoom button")) b.classList.toggle("on", Number(b.dataset.range) === plotting.range);
  document.getElementById("modal").hidden = false;
  const q = new URLSearchParams({ source: series.source, device: series.device, quantity: series.quantity, from, to });
  const plot = document.getElementById("plot"), note = document.getElementById("plot-note");
  try {
    const data = await getJSON(`api/series/points?${q}`);
    plot.replaceChildren(bigPlot(data, plotting.range));
    note.textContent = `${data.points.length} points from the ${data.origin}`;
  } catch (e) {
    note.textContent = `cannot load the points: ${e.message}`;
  }
}

// --- rendering --------------------------------------------------------------

function renderHeader(st) {
  const ov = document.getElementById("overall");
  ov.className = `pill ${st.overall.state}`;
  ov.textContent = { green: "all good", amber: "attention", red: "problem" }[st.overall.state];
  document.getElementById("site").textContent = st.site;
  document.getElementById("gw").textContent = `gateway ${st.gateway}`;
  const clockText = st.clock_synchronized === false ? "NOT synchronised" : st.clock_synchronized ? "synchronised" : "unknown";
  document.getElementById("facts").replaceChildren(
    h("span", {}, `version ${st.version}`), h("span", {}, `up ${dur(st.uptime_s)}`),
    h("span", { class: st.clock_synchronized === false ? "t-amber" : "" }, `clock ${clockText}`),
    h("span", { id: "updated" }, `updated ${clock(st.now_ns)}`));
  document.getElementById("reasons").replaceChildren(...st.overall.reasons.map((r) => h("li", {}, r)));
}

function renderSources(st) {
  const list = st.sources.map((src) => h("div", { class: "source", "data-source": src.name },
    h("div", { class: "title" }, `${src.name} `, h("span", { class: "muted" }, `(${src.driver})`), " ",
      h("span", { class: `badge ${STATE_CLASS[src.state] || "grey"}` }, src.state)),
    h("div", { class: "muted" },
      `last reading ${ago(src.last_reading_ns)} · poll latency ${src.poll_latency_s === null ? "–" : (src.poll_latency_s * 1000).toFixed(0) + " ms"}`
      + ` · restarts ${src.restarts}`),
    src.error ? h("div", { class: "err" }, src.error) : null,
    src.devices.map((dev) => renderDevice(src, dev))));
  document.getElementById("source-list").replaceChildren(...(list.length ? list : [h("p", { class: "muted" }, "no sources configured")]));
}

function renderDevice(src, dev) {
  const since = dev.state === "down" && dev.down_since_ns ? ` since ${clock(dev.down_since_ns)} (${ago(dev.down_since_ns)})` : "";
  return h("div", { class: "device", "data-device": dev.name, "data-state": dev.state },
    h("div", { class: "row" },
      h("b", {}, dev.name),
      h("span", { class: `badge ${STATE_CLASS[dev.state] || "grey"}` }, dev.state + since),
      h("span", { class: "muted" }, `available ${pct(dev.availability)} (1 h)`),
      h("span", { class: "muted" }, `last reading ${ago(dev.last_reading_ns)}`),
      dev.error ? h("span", { class: "err" }, dev.error) : null),
    h("div", { class: "series" }, dev.series.map((q) => {
      const item = { id: q.id, source: src.name, device: dev.name, quantity: q.quantity, unit: q.unit };
      return h("div", { class: "q", tabindex: 0, "data-series": q.id, title: "click for a larger plot",
                        onclick: () => openPlot(item), onkeydown: (e) => { if (e.key === "Enter") openPlot(item); } },
        h("span", { class: "name" }, q.quantity),
        sparkline(q.id),
        h("span", {}, h("span", { class: `val ${q.quality === "good" ? "" : "t-amber"}` }, num(q.value)), ` ${unit(q.unit)}`,
          q.quality === "good" ? null : h("span", { class: "t-amber" }, ` (${q.quality})`)),
        h("span", { class: "age" }, ago(q.ts_ns)));
    })));
}

function renderBuffer(st) {
  const b = st.buffer;
  if (!b) { document.getElementById("buffer-body").replaceChildren(h("p", { class: "muted" }, "no buffer statistics yet")); return; }
  const item = { id: b.series_id, source: "gateway", device: "buffer", quantity: "buffer_depth", unit: "readings" };
  document.getElementById("buffer-body").replaceChildren(h("div", { class: "q", tabindex: 0, "data-series": b.series_id,
      onclick: () => openPlot(item), title: "click for a larger plot" },
    h("span", {}, h("span", { class: "val" }, `${b.readings}`), ` readings · ${bytes(b.bytes)} · oldest ${dur(b.oldest_age_s)}`),
    sparkline(b.series_id),
    h("span", { class: b.dropped_recently ? "err" : "muted" },
      `dropped ${b.dropped_oldest_total + b.dropped_newest_total} ever (${b.dropped_recently} in 10 min) · dead letters ${b.dead_letters_total}`)));
}

function renderSinks(st) {
  const rows = st.sinks.map((k) => h("tr", { "data-sink": k.name },
    h("td", {}, h("b", {}, k.name), ` (${k.type})`),
    h("td", {}, h("span", { class: `badge ${STATE_CLASS[k.state] || "grey"}` }, k.state === "ok" ? "delivering" : k.state)),
    h("td", { class: "num" }, k.sent_per_s === null ? "–" : k.sent_per_s.toFixed(1)),
    h("td", { class: "num" }, k.backlog === null || k.backlog === undefined ? "–" : `${k.backlog}` + (k.lag_s >= 1 ? ` (${dur(k.lag_s)} behind)` : "")),
    h("td", { class: "num" }, k.drain_s === null ? "not draining" : k.drain_s === 0 ? "keeping up" : dur(k.drain_s)),
    h("td", { class: "num" }, k.dead_letters),
    h("td", { class: k.error ? "err" : "muted" }, k.error || `last delivery ${ago(k.last_success_ns)}`)));
  document.getElementById("sink-body").replaceChildren(h("table", {},
    h("thead", {}, h("tr", {}, ["sink", "state", "sent/s", "backlog", "time to drain", "dead letters", "last error"].map((t) => h("th", {}, t)))),
    h("tbody", {}, rows)));
}

function render(st) {
  renderHeader(st); renderSources(st); renderBuffer(st); renderSinks(st);
}

function renderStale() {
  const banner = document.getElementById("stale");
  banner.hidden = false;
  banner.textContent = `The gateway is not answering since ${new Date(lastOk || Date.now()).toLocaleTimeString()}`
    + (status ? ` — the values below are from then (${dur((Date.now() - lastOk) / 1000)} old).` : ".")
    + " Is the daemon running? (systemctl status gateway)";
  const ov = document.getElementById("overall");
  ov.className = "pill grey"; ov.textContent = "no contact";
  document.body.dataset.stale = "1";
}

async function refresh() {
  try {
    status = await getJSON("api/status");
    lastOk = Date.now();
    document.getElementById("stale").hidden = true;
    delete document.body.dataset.stale;
    render(status);
  } catch (e) {
    renderStale();
  }
}

async function refreshSparks() {
  try { sparks = await getJSON("api/sparklines"); if (status) render(status); } catch (e) { /* the status poll reports it */ }
}

document.getElementById("modal-close").addEventListener("click", () => { document.getElementById("modal").hidden = true; plotting = null; });
document.getElementById("modal").addEventListener("click", (e) => { if (e.target.id === "modal") { e.target.hidden = true; plotting = null; } });
for (const b of document.querySelectorAll("#zoom button")) b.addEventListener("click", () => plotting && openPlot(plotting, Number(b.dataset.range)));
document.addEventListener("keydown", (e) => { if (e.key === "Escape") { document.getElementById("modal").hidden = true; plotting = null; } });

// Sparklines change once per history step (10 s by default): fetch them that often, at most every 5 s.
async function sparkLoop() {
  await refreshSparks();
  setTimeout(sparkLoop, Math.max(SPARK_EVERY_MS, (sparks.step_s || 0) * 1000));
}

sparkLoop();
refresh();
setInterval(refresh, STATUS_EVERY_MS);
