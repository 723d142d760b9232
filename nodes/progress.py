"""Live training messages for the browser (`texttune.` events), throttled so fast runs do not
flood the socket, and the history of the runs in progress for a browser that (re)connects.

Events (PromptServer.send_sync, to every client):
- `texttune.progress` {node, run, prompt_id, step, total, loss, rows, elapsed, rate, eta}: `rows` are
  the metrics rows logged since the last event (step, loss and each metric the method logs), so a
  throttled stream still carries every point.
- `texttune.preview` {node, run, step, image: {filename, subfolder, type}}: a picture drawn with the
  current weights, saved in the run folder and served by /view.
- `texttune.end` {node, run, step, total, finished}: the run stopped (finished, cancelled or failed).

Route: GET /texttune/runs -> {"runs": [...]}: each run in progress with its rows so far (read from
the run folder's metrics.jsonl, where engine.train appends every step), its speed and its latest
preview. The same numbers are always in metrics.jsonl, so nothing is lost if no browser is open.
"""
import logging
import math
import os
import threading
import time

EVENT = "texttune.progress"
PREVIEW_EVENT = "texttune.preview"
END_EVENT = "texttune.end"
ROUTE = "/texttune/runs"
NOT_PLOTTED = ("lr", "time")          # engine metrics that are no curve
MAX_HISTORY_ROWS = 2000               # rows of one run the route returns (evenly thinned beyond)

log = logging.getLogger("texttune")

_active: dict[str, "Reporter"] = {}   # run name -> the reporter of that run while it trains
_lock = threading.Lock()


def plotted(row: dict) -> dict:
    """The numbers of a metrics row that the panel draws (step, loss and the method's metrics)."""
    return {k: v for k, v in row.items()
            if k not in NOT_PLOTTED and isinstance(v, (int, float)) and math.isfinite(v)}


def thin(rows: list, limit: int = MAX_HISTORY_ROWS) -> list:
    """At most `limit` rows, evenly spread, the last one always kept."""
    if len(rows) <= limit:
        return rows
    stride = -(-len(rows) // limit)
    out = rows[::stride]
    return out if out[-1] is rows[-1] else out + [rows[-1]]


def _server():
    try:
        from server import PromptServer
        return PromptServer.instance
    except Exception:            # no server (library or test use): metrics.jsonl only
        return None


class Reporter:
    """`on_step` of engine.train: sends the run's progress, and every `preview_every` steps a picture
    drawn by `preview(step)` (a path of a PNG under ComfyUI's output folder). Registered as a run in
    progress from creation until `close()` (common.train_and_save calls it)."""

    def __init__(self, node_id, run, min_interval: float = 0.25, preview=None, preview_every: int = 0):
        self.node_id, self.min_interval = node_id, min_interval
        self.run = None if isinstance(run, str) else run                    # a RunFolder, or just a name
        self.run_name = run if isinstance(run, str) else run.name
        self.preview, self.preview_every = preview, int(preview_every or 0)
        self.last, self.t0 = float("-inf"), time.perf_counter()
        self.first = None                      # (step, time) of the first step of this session
        self.step = self.total = 0
        self.pending: list[dict] = []
        self.last_preview = None
        self.server = _server()
        self.prompt_id = getattr(self.server, "last_prompt_id", None)
        with _lock:
            _active[self.run_name] = self

    # -- engine.train's on_step ------------------------------------------------------------------
    def __call__(self, step: int, total: int, row: dict):
        now = time.perf_counter()
        if self.first is None:                 # speed counts from here: model loading is no step
            self.first = (step, now)
        self.step, self.total = step, total
        self.pending.append(plotted(row))
        if self.preview is not None and self.preview_every and step % self.preview_every == 0:
            self._send_preview(step)
            now = time.perf_counter()
        if self.server is None or (now - self.last < self.min_interval and step < total):
            return
        self.last = now
        self._send_progress(now)

    def speed(self, now: float | None = None) -> tuple[float | None, float | None]:
        """(steps per second, seconds left) of this session's steps so far (None before two steps)."""
        now = time.perf_counter() if now is None else now
        if self.first is None or self.step <= self.first[0] or now <= self.first[1]:
            return None, None
        rate = (self.step - self.first[0]) / (now - self.first[1])
        return rate, (self.total - self.step) / rate

    def _send_progress(self, now: float):
        rows, self.pending = self.pending, []
        rate, eta = self.speed(now)
        loss = rows[-1].get("loss") if rows else None
        self.server.send_sync(EVENT, {"node": self.node_id, "run": self.run_name, "prompt_id": self.prompt_id,
                                      "step": self.step, "total": self.total, "loss": loss, "rows": rows,
                                      "elapsed": now - self.t0, "rate": rate, "eta": eta})

    def _send_preview(self, step: int):
        path = self.preview(step)
        self.last_preview = {"step": step, "image": view_entry(path)}
        if self.server is not None:
            self.server.send_sync(PREVIEW_EVENT, {"node": self.node_id, "run": self.run_name, **self.last_preview})

    def close(self):
        """The run stopped: send what is pending and the end, and drop it from the runs in progress."""
        with _lock:
            if _active.get(self.run_name) is self:
                del _active[self.run_name]
        if self.server is None:
            return
        if self.pending:
            self._send_progress(time.perf_counter())
        self.server.send_sync(END_EVENT, {"node": self.node_id, "run": self.run_name, "step": self.step,
                                          "total": self.total, "finished": bool(self.total) and self.step >= self.total})

    # -- history for a browser that (re)connects -------------------------------------------------
    def history(self) -> dict:
        rows = self.run.read_metrics() if self.run is not None else []
        rate, eta = self.speed()
        return {"node": self.node_id, "run": self.run_name, "prompt_id": self.prompt_id,
                "step": self.step, "total": self.total, "rate": rate, "eta": eta,
                "elapsed": time.perf_counter() - self.t0, "rows": thin([plotted(r) for r in rows]),
                "preview": self.last_preview}


def view_entry(path: str) -> dict:
    """{filename, subfolder, type} of a file under ComfyUI's output folder, as /view serves it."""
    import folder_paths
    out = os.path.abspath(folder_paths.get_output_directory())
    rel = os.path.relpath(os.path.abspath(path), out)
    if rel.startswith(os.pardir):
        raise ValueError(f"{path} is not inside ComfyUI's output folder {out}.")
    sub, name = os.path.split(rel)
    return {"filename": name, "subfolder": sub.replace(os.sep, "/"), "type": "output"}


def active_runs() -> list[dict]:
    with _lock:
        reporters = list(_active.values())
    return [r.history() for r in reporters]


def register_routes(server=None) -> bool:
    """Add GET /texttune/runs to the ComfyUI server (once); False when there is no server."""
    server = server or _server()
    routes = getattr(server, "routes", None)
    if routes is None or getattr(server, "_texttune_routes", False):
        return False
    from aiohttp import web

    @routes.get(ROUTE)
    async def texttune_runs(request):
        return web.json_response({"runs": active_runs()})

    server._texttune_routes = True
    return True


try:
    register_routes()
except Exception as e:          # the pack still trains; only the reload history is missing
    log.warning("TextTune: could not add the %s route (%s); a reloaded page will not show runs in progress.",
                ROUTE, e)
