"""Live training messages for the browser (`texttune.` events), throttled so fast runs do not
flood the socket. The same numbers are always in the run folder's metrics.jsonl."""
import time

EVENT = "texttune.progress"


class Reporter:
    def __init__(self, node_id, run_name: str, min_interval: float = 0.25):
        self.node_id, self.run_name, self.min_interval = node_id, run_name, min_interval
        self.last, self.t0 = float("-inf"), time.perf_counter()
        try:
            from server import PromptServer
            self.server = PromptServer.instance
        except Exception:            # no server (library or test use): metrics.jsonl only
            self.server = None

    def __call__(self, step: int, total: int, row: dict):
        now = time.perf_counter()
        if self.server is None or (now - self.last < self.min_interval and step < total):
            return
        self.last = now
        elapsed = now - self.t0
        self.server.send_sync(EVENT, {"node": self.node_id, "run": self.run_name, "step": step, "total": total,
                                      "loss": row["loss"], "elapsed": elapsed})
