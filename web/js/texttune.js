// TextTune live training panel: on every trainer node (category "TextTune/train"), while it runs,
// a panel inside the node shows the loss curve (one line per logged metric), step / total, speed
// and time left, and the latest preview picture; it ends with the run's final loss plot.
// The server sends throttled "texttune.*" events (nodes/progress.py); a page that loads or
// reconnects during a run asks GET /texttune/runs for the runs in progress and redraws them.
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";

const TRAIN_CATEGORY = "TextTune/train";
const PANEL = "texttune_panel";
const CURVE_HEIGHT = 150;
const PREVIEW_HEIGHT = 200;
const MAX_POINTS = 4000;                 // per run; older points are thinned beyond
const COLOURS = ["#4fa3f7", "#f7754f", "#5fd38d", "#c78bf7", "#f7c84f", "#4ff0e8"];

const pending = new Map();               // node id -> run history not yet shown (node not loaded yet)
let retryTimer = null;
let loads = 0;                           // history requests so far

function fmtTime(s) {
  if (s == null || !isFinite(s) || s < 0) return "?";
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = Math.round(s % 60);
  return h ? `${h}h ${m}m` : m ? `${m}m ${r}s` : `${r}s`;
}

function fmtValue(v) {
  if (v == null || !isFinite(v)) return "?";
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e4) ? v.toExponential(2) : v.toPrecision(4);
}

function viewUrl(image) {
  const q = new URLSearchParams({ filename: image.filename, subfolder: image.subfolder ?? "",
                                  type: image.type ?? "output" });
  return api.apiURL(`/view?${q}`);
}

function trainerNode(id) {
  const node = app.graph?.getNodeById?.(Number(id));
  return node && node.constructor?.texttuneTrainer ? node : null;
}

// -- state ---------------------------------------------------------------------------------
function freshState(run) {
  return { run, step: 0, total: 0, rate: null, eta: null, rows: new Map(), preview: null,
           plot: null, ended: null };
}

function addRows(st, rows) {
  for (const row of rows || []) {
    if (row && typeof row.step === "number") st.rows.set(row.step, row);
  }
  if (st.rows.size > MAX_POINTS) {       // keep every other point (the last always)
    const steps = [...st.rows.keys()].sort((a, b) => a - b);
    steps.forEach((s, i) => { if (i % 2 === 1 && i !== steps.length - 1) st.rows.delete(s); });
  }
}

function series(st) {
  const steps = [...st.rows.keys()].sort((a, b) => a - b);
  const names = [];
  for (const s of steps) for (const k of Object.keys(st.rows.get(s))) {
    if (k !== "step" && !names.includes(k)) names.push(k);
  }
  names.sort((a, b) => (a === "loss" ? -1 : b === "loss" ? 1 : 0));
  return names.map((name) => ({ name, points: steps.filter((s) => name in st.rows.get(s))
                                                 .map((s) => [s, st.rows.get(s)[name]]) }));
}

// -- the panel (a DOM widget, not saved with the workflow) ---------------------------------
function ensurePanel(node) {
  if (node.texttunePanel) return node.texttunePanel;
  const el = document.createElement("div");
  el.className = "texttune-panel";
  el.style.cssText = "display:flex;flex-direction:column;gap:3px;font:11px sans-serif;color:#ddd;" +
                     "background:#1b1b1b;border-radius:6px;padding:4px;box-sizing:border-box;overflow:hidden;";
  const head = document.createElement("div");
  head.className = "texttune-head";
  head.style.cssText = "flex:none;line-height:14px;height:14px;white-space:nowrap;overflow:hidden;" +
                       "text-overflow:ellipsis;";
  const canvas = document.createElement("canvas");
  canvas.className = "texttune-curve";
  canvas.style.cssText = `flex:none;width:100%;height:${CURVE_HEIGHT}px;display:block;`;
  const plot = document.createElement("img");
  plot.className = "texttune-plot";
  plot.style.cssText = `flex:none;width:100%;height:${CURVE_HEIGHT}px;object-fit:contain;display:none;` +
                       "background:#fff;";
  const legend = document.createElement("div");
  legend.className = "texttune-legend";
  legend.style.cssText = "flex:none;display:flex;flex-wrap:wrap;gap:0 8px;line-height:14px;min-height:14px;";
  const preview = document.createElement("img");
  preview.className = "texttune-preview";
  preview.style.cssText = `flex:1 1 ${PREVIEW_HEIGHT}px;min-height:0;width:100%;object-fit:contain;display:none;`;
  el.append(head, canvas, plot, legend, preview);

  const panel = { el, head, canvas, plot, legend, preview, state: freshState(null), frame: 0 };
  // padding, head, curve and legend (with the gaps between them), and the preview when there is one
  const height = () => 8 + 14 + 3 + CURVE_HEIGHT + 3 + 28 + (panel.state.preview ? 3 + PREVIEW_HEIGHT : 0);
  const widget = node.addDOMWidget(PANEL, "texttune-panel", el,
                                   { serialize: false, hideOnZoom: false, getMinHeight: height,
                                     getMaxHeight: height });
  widget.serialize = false;              // not in widgets_values: saved workflows stay as they were
  panel.widget = widget;
  node.texttunePanel = panel;
  panel.resize = () => {
    const size = node.computeSize?.() ?? node.size;
    node.setSize?.([Math.max(node.size[0], 360), Math.max(node.size[1], size[1])]);
    node.setDirtyCanvas?.(true, true);
  };
  panel.resize();
  return panel;
}

function render(node) {
  const panel = node.texttunePanel;
  if (!panel || panel.frame) return;
  panel.frame = requestAnimationFrame(() => { panel.frame = 0; draw(node, panel); });
}

function draw(node, panel) {
  const st = panel.state;
  const lines = series(st);
  const points = Math.max(0, ...lines.map((l) => l.points.length));
  const status = st.ended === "finished" ? "done" : st.ended === "stopped" ? "stopped" : "running";
  let text = `${st.run ?? ""} · step ${st.step} / ${st.total || "?"}`;
  if (status === "running") {
    text += st.rate ? ` · ${st.rate >= 1 ? st.rate.toFixed(2) + " steps/s" : (1 / st.rate).toFixed(1) + " s/step"}`
                      + ` · ${fmtTime(st.eta)} left` : " · starting";
  } else {
    text += status === "done" ? " · done" : " · stopped (saved; queue again to resume)";
  }
  panel.head.textContent = text;
  const first = st.rows.size ? Math.min(...st.rows.keys()) : "";
  Object.assign(panel.el.dataset, { run: st.run ?? "", step: String(st.step), total: String(st.total),
                                    first: String(first), points: String(points), state: status,
                                    preview: st.preview ?? "", plot: st.plot ?? "" });

  // curve: each line scaled to its own range, so losses and rewards of any size all show
  const showPlot = Boolean(st.plot);
  panel.canvas.style.display = showPlot ? "none" : "block";
  panel.plot.style.display = showPlot ? "block" : "none";
  if (showPlot && panel.plot.getAttribute("src") !== st.plot) panel.plot.src = st.plot;
  if (!showPlot) {
    const c = panel.canvas, dpr = window.devicePixelRatio || 1;
    const w = Math.max(200, c.clientWidth || 320), h = CURVE_HEIGHT;
    c.width = Math.round(w * dpr); c.height = Math.round(h * dpr);
    const ctx = c.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = "#111"; ctx.fillRect(0, 0, w, h);
    ctx.strokeStyle = "#333"; ctx.strokeRect(0.5, 0.5, w - 1, h - 1);
    const allSteps = lines.flatMap((l) => l.points.map((p) => p[0]));
    const x0 = Math.min(...allSteps, st.step), x1 = Math.max(st.total || 0, ...allSteps, x0 + 1);
    const pad = 6;
    lines.forEach((line, i) => {
      if (!line.points.length) return;
      const vs = line.points.map((p) => p[1]);
      const lo = Math.min(...vs), hi = Math.max(...vs), span = hi - lo || 1;
      ctx.strokeStyle = COLOURS[i % COLOURS.length]; ctx.lineWidth = 1.5; ctx.beginPath();
      line.points.forEach(([s, v], j) => {
        const x = pad + ((s - x0) / (x1 - x0)) * (w - 2 * pad);
        const y = h - pad - ((v - lo) / span) * (h - 2 * pad);
        j ? ctx.lineTo(x, y) : ctx.moveTo(x, y);
      });
      if (line.points.length === 1) ctx.arc(pad, h / 2, 2, 0, 2 * Math.PI);
      ctx.stroke();
    });
  }
  panel.legend.replaceChildren(...lines.map((line, i) => {
    const span = document.createElement("span");
    const last = line.points.length ? line.points[line.points.length - 1][1] : null;
    span.textContent = `● ${line.name} ${fmtValue(last)}`;
    span.style.color = COLOURS[i % COLOURS.length];
    return span;
  }));

  if (st.preview) {
    if (panel.preview.getAttribute("src") !== st.preview) panel.preview.src = st.preview;
    if (panel.preview.style.display === "none") { panel.preview.style.display = "block"; panel.resize(); }
  }
}

// -- updates ---------------------------------------------------------------------------------
function stateFor(node, run) {
  const panel = ensurePanel(node);
  if (panel.state.run !== run || panel.state.ended) {
    panel.state = freshState(run);
    panel.preview.style.display = "none";
    loadHistory();                       // a resumed run: the steps before this session
  }
  return panel.state;
}

function onProgress(d) {
  const node = trainerNode(d.node);
  if (!node) return;
  const st = stateFor(node, d.run);
  addRows(st, d.rows);
  Object.assign(st, { step: d.step, total: d.total, rate: d.rate, eta: d.eta });
  render(node);
}

function onPreview(d) {
  const node = trainerNode(d.node);
  if (!node) return;
  const st = stateFor(node, d.run);
  st.preview = viewUrl(d.image);
  render(node);
}

function onEnd(d) {
  const node = trainerNode(d.node);
  if (!node?.texttunePanel || node.texttunePanel.state.run !== d.run) return;
  const st = node.texttunePanel.state;
  Object.assign(st, { step: d.step, total: d.total, ended: d.finished ? "finished" : "stopped" });
  render(node);
}

function applyHistory(node, run) {
  const panel = ensurePanel(node);
  if (panel.state.run === run.run && panel.state.ended) return;     // it ended while the history came
  if (panel.state.run !== run.run) panel.state = freshState(run.run);
  const st = panel.state;
  addRows(st, run.rows);
  if (run.step >= st.step) Object.assign(st, { step: run.step, total: run.total, rate: run.rate, eta: run.eta });
  if (run.preview) st.preview = viewUrl(run.preview.image);
  render(node);
}

function applyPending() {
  for (const [id, run] of pending) {
    const node = trainerNode(id);
    if (node) { applyHistory(node, run); pending.delete(id); }
  }
  clearTimeout(retryTimer);
  if (pending.size) retryTimer = setTimeout(applyPending, 500);   // the workflow may still be loading
}

async function loadHistory() {
  try {
    const resp = await api.fetchApi("/texttune/runs");
    if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
    const { runs } = await resp.json();
    const generation = ++loads;
    pending.clear();
    for (const run of runs) pending.set(String(run.node), run);
    applyPending();
    setTimeout(() => { if (generation === loads) pending.clear(); }, 30000);   // stale after a while
  } catch (e) {
    console.warn("TextTune: could not load the runs in progress:", e);
  }
}

app.registerExtension({
  name: "texttune.progress",
  async setup() {
    api.addEventListener("texttune.progress", (ev) => onProgress(ev.detail));
    api.addEventListener("texttune.preview", (ev) => onPreview(ev.detail));
    api.addEventListener("texttune.end", (ev) => onEnd(ev.detail));
    api.addEventListener("reconnected", () => loadHistory());
    await loadHistory();
  },
  loadedGraphNode(node) {
    if (pending.has(String(node.id))) applyPending();
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!(nodeData.category === TRAIN_CATEGORY || nodeData.category?.startsWith(TRAIN_CATEGORY + "/"))) return;
    nodeType.texttuneTrainer = true;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      onExecuted?.apply(this, arguments);
      const image = output?.images?.[0];
      if (!image || !this.texttunePanel) return;
      const st = this.texttunePanel.state;
      st.plot = viewUrl(image);          // the run's loss.png: the final plot
      st.ended = "finished";
      render(this);
    };
  },
});
