"""Run folder `output/texttune/<run>/`: config.json, metrics.jsonl, checkpoints, loss plot.

A checkpoint holds the trainable tensors and the optimiser state, so a run resumes at the exact
step it stopped at. Everything random in a step derives from (seed, step), so nothing else needs
saving for an identical continuation.
"""
import json
import os
import re

import torch

from . import files

# Settings that may change between a run and its resumption; every other config entry must match.
RESUMABLE_KEYS = ("steps", "save_every")
KEEP_CHECKPOINTS = 2
_CKPT = re.compile(r"^step_(\d{7})\.safetensors$")


class RunFolder:
    def __init__(self, root: str, name: str, config: dict):
        files.check_name(name, "Run name")
        self.name = name
        self.path = os.path.join(root, name)
        self.config = config
        self.ckpt_dir = os.path.join(self.path, "checkpoints")
        self.metrics_path = os.path.join(self.path, "metrics.jsonl")
        self.plot_path = os.path.join(self.path, "loss.png")
        cfg_path = os.path.join(self.path, "config.json")
        if os.path.exists(cfg_path):
            with open(cfg_path, encoding="utf-8") as f:
                old = json.load(f)
            diff = sorted(k for k in set(old) | set(config)
                          if k not in RESUMABLE_KEYS and old.get(k) != config.get(k))
            if diff and self.latest_step() is not None:
                raise ValueError(
                    f"Run '{name}' already exists in {self.path} with other settings ({', '.join(diff)}). "
                    f"Give this run another name, or delete that folder to start over.")
        os.makedirs(self.ckpt_dir, exist_ok=True)
        for folder in (self.path, self.ckpt_dir):          # left by a run killed while it saved
            files.remove_partials(folder)
        files.write_json(config, cfg_path)

    # -- checkpoints -----------------------------------------------------------------------
    def _steps(self):
        if not os.path.isdir(self.ckpt_dir):
            return []
        return sorted(int(m.group(1)) for m in map(_CKPT.match, os.listdir(self.ckpt_dir)) if m)

    def latest_step(self):
        steps = self._steps()
        return steps[-1] if steps else None

    def checkpoint_path(self, step: int) -> str:
        return os.path.join(self.ckpt_dir, f"step_{step:07d}.safetensors")

    def save_checkpoint(self, step: int, params: dict, optimizer: torch.optim.Optimizer, extra_meta=None):
        tensors = {f"param.{k}": v for k, v in params.items()}
        state = optimizer.state_dict()
        for idx, st in state["state"].items():
            for key, value in st.items():
                t = value if torch.is_tensor(value) else torch.tensor(value)
                tensors[f"optim.{idx}.{key}"] = t
        meta = {"step": step, "param_names": json.dumps(list(params)), "param_groups": json.dumps(state["param_groups"]),
                "format": "texttune-checkpoint-1"}
        meta.update(extra_meta or {})
        path = files.save_safetensors(tensors, self.checkpoint_path(step), meta)
        for old in self._steps()[:-KEEP_CHECKPOINTS]:
            os.remove(self.checkpoint_path(old))
        return path

    def load_checkpoint(self, step: int, params: dict, optimizer: torch.optim.Optimizer):
        """Copy saved values into `params` (same names) and restore the optimiser state."""
        tensors, meta = files.load_safetensors(self.checkpoint_path(step))
        names = json.loads(meta["param_names"])
        if sorted(names) != sorted(params):
            raise ValueError(f"Checkpoint {self.checkpoint_path(step)} holds other parameters than this run trains; "
                             f"delete the run folder {self.path} or choose another run name.")
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(tensors[f"param.{k}"].to(p.device, p.dtype))
        state = {"state": {}, "param_groups": json.loads(meta["param_groups"])}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, idx, name = key.split(".", 2)
                device = value.device if name == "step" else list(params.values())[0].device
                state["state"].setdefault(int(idx), {})[name] = value.to(device)
        optimizer.load_state_dict(state)
        return meta

    # -- metrics ---------------------------------------------------------------------------
    def append_metrics(self, rows: list[dict]):
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
            f.flush()

    def read_metrics(self, up_to_step=None) -> list[dict]:
        if not os.path.exists(self.metrics_path):
            return []
        rows = {}
        with open(self.metrics_path, encoding="utf-8") as f:
            for line in f:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:      # a line cut by a killed process
                    continue
                if up_to_step is None or row["step"] <= up_to_step:
                    rows[row["step"]] = row        # a resumed run rewrites the steps after its checkpoint
        return [rows[k] for k in sorted(rows)]

    def truncate_metrics(self, step: int):
        """Drop rows after `step` (written by a run that stopped before its next checkpoint)."""
        rows = self.read_metrics(up_to_step=step)
        def write(tmp):
            with open(tmp, "w", encoding="utf-8") as f:
                for row in rows:
                    f.write(json.dumps(row) + "\n")
        files.atomic_write(self.metrics_path, write)
