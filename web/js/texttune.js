// TextTune: show step, loss and time left on a training node while it runs.
// The server sends throttled "texttune.progress" events (nodes/progress.py).
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

function fmtTime(s) {
  if (!isFinite(s) || s < 0) return "?";
  const m = Math.floor(s / 60), r = Math.round(s % 60);
  return m ? `${m}m ${r}s` : `${r}s`;
}

app.registerExtension({
  name: "texttune.progress",
  async setup() {
    api.addEventListener("texttune.progress", (ev) => {
      const d = ev.detail;
      const node = app.graph?.getNodeById?.(Number(d.node)) ?? app.graph?.getNodeById?.(d.node);
      if (!node) return;
      const perStep = d.elapsed / Math.max(1, d.step);
      const left = perStep * (d.total - d.step);
      node.texttuneStatus = `step ${d.step}/${d.total} · loss ${d.loss.toFixed(4)} · ${fmtTime(left)} left`;
      node.setDirtyCanvas?.(true, false);
    });
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData.name?.startsWith("TextTuneTrain")) return;
    const draw = nodeType.prototype.onDrawForeground;
    nodeType.prototype.onDrawForeground = function (ctx) {
      draw?.apply(this, arguments);
      if (!this.texttuneStatus || this.flags?.collapsed) return;
      ctx.save();
      ctx.font = "12px sans-serif";
      ctx.fillStyle = "#8fd18f";
      ctx.fillText(this.texttuneStatus, 8, this.size[1] - 8);
      ctx.restore();
    };
  },
});
