"""The shared training loop: optimiser and LR schedule, progress and cancel, run folder,
checkpoints with optimiser state, exact resume, NaN and out-of-memory handling.

A method plugs in as a `Method`: what is trainable, how a step's randomness becomes a loss, and
what the finished run saves. The loop itself lives only here.
"""
import json
import math
import os
import time
from dataclasses import dataclass, field

import torch

import comfy.model_management as mm
import comfy.utils

from .runs import RunFolder

# Test hooks (reliability tests force numerical faults with them): make the loss NaN at this
# step, or raise an out-of-memory error at it, as a GPU would.
NAN_AT_STEP_ENV = "TEXTTUNE_TEST_NAN_AT_STEP"
OOM_AT_STEP_ENV = "TEXTTUNE_TEST_OOM_AT_STEP"


class TrainingStopped(RuntimeError):
    """A run ended early for a reason the user must act on; its checkpoint is kept."""


@dataclass
class Schedule:
    lr: float
    steps: int
    kind: str = "constant"          # constant | cosine | linear
    warmup: int = 0

    def __post_init__(self):
        if self.kind not in ("constant", "cosine", "linear"):
            raise ValueError(f"Unknown LR schedule {self.kind!r}: choose constant, cosine or linear.")

    def factor(self, step: int) -> float:
        if self.warmup and step < self.warmup:
            return (step + 1) / self.warmup
        if self.kind == "constant":
            return 1.0
        progress = (step - self.warmup) / max(1, self.steps - self.warmup)
        if self.kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return max(0.0, 1.0 - progress)                # linear


class Method:
    """The per-method part of a trainer."""
    oom_advice = "lower the batch size or the resolution"      # nodes name their own inputs: engine.lower

    def trainable(self) -> dict[str, torch.nn.Parameter]:
        raise NotImplementedError

    def param_groups(self) -> list[dict]:
        """Optimiser groups as {"params": [names], "lr": float, ...}; default: one group."""
        return [{"params": list(self.trainable())}]

    def loss(self, step: int, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def grad_scaling_device(self):
        """A torch.device when gradients pass through fp16 weights and need loss scaling, else None."""
        return None

    def after_step(self, step: int):
        """Called after each optimiser step (e.g. to project parameters)."""

    def session(self):
        """Context manager around the whole loop (model loading, autograd fixes)."""
        raise NotImplementedError

    def preview_context(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(embeddings [2, T, D] of a fixed prompt and of the empty prompt, pooled [2, P] or None) with
        the weights as trained now: what trainers/preview.py draws with. Called inside `session()`."""
        raise NotImplementedError(f"{type(self).__name__} draws no preview pictures: set preview_every to 0.")


@dataclass
class Result:
    steps_done: int
    resumed_from: int | None
    losses: list[float] = field(default_factory=list)


def step_generator(seed: int, step: int) -> torch.Generator:
    """All randomness of one step comes from here, so a resumed run repeats it exactly."""
    return torch.Generator(device="cpu").manual_seed((seed * 1_000_003 + step) % (2**63 - 1))


def lower(inputs: dict, also: str = "") -> str:
    """Out-of-memory advice that names a node's own inputs with their values, e.g.
    lower({"batch_size": 8, "resolution": 512}) -> "lower batch_size (now 8) or resolution (now 512)"."""
    named = [f"{name} (now {value})" for name, value in inputs.items()]
    text = "lower " + (", ".join(named[:-1]) + " or " + named[-1] if len(named) > 1 else named[0])
    return f"{text}, or {also}" if also else text


def train(method: Method, run: RunFolder, *, steps: int, schedule: Schedule, seed: int,
          save_every: int = 0, weight_decay: float = 0.0, betas=(0.9, 0.999), max_grad_norm: float = 0.0,
          on_step=None, node_id=None, oom_advice: str | None = None) -> Result:
    """Run `method` to `steps` total steps in `run`, resuming from its latest checkpoint.
    `max_grad_norm` > 0 clips the global gradient norm before each optimiser step. `oom_advice` (from
    `lower`, naming the node's inputs) replaces the method's general advice on running out of memory."""
    params = method.trainable()
    param_list = list(params.values())
    groups = []
    for g in method.param_groups():
        names = g["params"]
        lr = g.get("lr", schedule.lr)
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"A learning rate of {lr} cannot train: set the node's learning rate(s) to a positive "
                             f"number, e.g. 1e-4.")
        groups.append({**g, "params": [params[n] for n in names], "lr": lr, "initial_lr": lr})
    optimizer = torch.optim.AdamW(groups, lr=schedule.lr, weight_decay=weight_decay, betas=betas)

    scale_device = method.grad_scaling_device()
    scaler = torch.amp.GradScaler(torch.device(scale_device).type) if scale_device is not None else None

    start = run.latest_step() or 0
    resumed = None
    if start:
        meta = run.load_checkpoint(start, params, optimizer)
        if scaler is not None and "grad_scaler" in meta:
            scaler.load_state_dict(json.loads(meta["grad_scaler"]))
        run.truncate_metrics(start)
        resumed = start
    losses = [r["loss"] for r in run.read_metrics()]
    nan_at = int(os.environ.get(NAN_AT_STEP_ENV, "-1"))
    oom_at = int(os.environ.get(OOM_AT_STEP_ENV, "-1"))
    pbar = comfy.utils.ProgressBar(steps, node_id=node_id)
    pbar.update_absolute(min(start, steps))
    done, t0 = start, time.perf_counter()

    def checkpoint():
        if run.latest_step() is None or done > run.latest_step():
            extra = {"grad_scaler": json.dumps(scaler.state_dict())} if scaler is not None else None
            run.save_checkpoint(done, params, optimizer, extra)

    with method.session():
        try:
            for step in range(start, steps):
                mm.throw_exception_if_processing_interrupted()
                for g in optimizer.param_groups:
                    g["lr"] = g["initial_lr"] * schedule.factor(step)
                if step == oom_at:
                    raise torch.OutOfMemoryError(f"out of memory (forced by {OOM_AT_STEP_ENV})")
                loss, metrics = method.loss(step, step_generator(seed, step))
                if step == nan_at:
                    loss = loss * float("nan")
                if not torch.isfinite(loss):
                    checkpoint()
                    raise TrainingStopped(
                        f"The loss became {float(loss.detach())} at step {step + 1}; training stopped and the last good "
                        f"state (step {done}) is saved in {run.ckpt_dir}. Lower the learning rate "
                        f"(now {schedule.lr:g}) and run again; the run resumes from step {done}.")
                optimizer.zero_grad(set_to_none=True)
                if scaler is None:
                    loss.backward()
                    if max_grad_norm:
                        torch.nn.utils.clip_grad_norm_(param_list, max_grad_norm)
                    optimizer.step()
                else:                                  # fp16 weights: scale so small gradients survive
                    scaler.scale(loss).backward()
                    if max_grad_norm:
                        scaler.unscale_(optimizer)
                        torch.nn.utils.clip_grad_norm_(param_list, max_grad_norm)
                    scaler.step(optimizer)
                    scaler.update()
                method.after_step(step)
                done = step + 1
                row = {"step": done, "loss": float(loss.detach()), "lr": optimizer.param_groups[0]["lr"],
                       "time": round(time.perf_counter() - t0, 4), **metrics}
                run.append_metrics([row])            # live: nothing is lost if no browser watches
                losses.append(row["loss"])
                if save_every and done % save_every == 0 and done < steps:
                    checkpoint()
                if on_step is not None:
                    on_step(done, steps, row)
                pbar.update_absolute(done)          # also the server's cancel point
        except torch.OutOfMemoryError as e:
            checkpoint()
            raise TrainingStopped(
                f"Out of memory at step {done + 1}: {oom_advice or method.oom_advice}. The last good state (step {done}) is "
                f"saved in {run.ckpt_dir} and the run resumes from it.") from e
        except BaseException:                        # cancel, or any failure: keep what is done
            checkpoint()
            raise
        checkpoint()
    return Result(steps_done=done, resumed_from=resumed, losses=losses)
