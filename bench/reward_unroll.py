"""Memory and speed of one reward fine-tuning iteration (TextCraftor's unroll), side by side.

Memory: the peak memory of one training iteration (the chain, the decode with gradients, the
reward, backward, AdamW) for K = 1, 2, 5, 10 gradient steps, with gradient checkpointing (the
trainers' way) and without it, for
- TinySD (tests/tinysd.py) at 64 px (8x8 latents);
- SD1.5's UNet and CLIP-L with random weights (tests/tinysd.make_sd15_model; the SD1 CLIP) at 64 px
  (8x8 latents: small enough for a 2-core CPU), a TAESD-architecture decoder, fp32.
Both stages are measured: `textcraftor` (the text encoder trains) and `lora` (a rank-4 LoRA on the
UNet's attention layers trains). Sampling steps N = 10 (K ≤ N), batch 1, CFG 7.5, the ShapeWorld
"large and centred" reward (a pixel formula: the reward model's memory is not what is measured).

The proxy for GPU memory is CPU RAM: each configuration runs in a fresh process with glibc's mmap
threshold fixed at 64 KiB (big buffers go back to the system when freed, so RSS follows live
memory). The process loads the models and creates AdamW's state (one step on zero gradients, which
changes no weight); the kernel's peak-RSS mark is reset (`/proc/self/clear_refs` 5), one iteration
runs, and the figure is that peak minus the RSS just before it: what the iteration itself needs on
top of the loaded models and optimiser state. Goal: with checkpointing, peak at K=10 <= 1.3 x peak at K=1
(SD1.5 size); without it, the peak grows with K.

Speed: seconds of one training iteration against plain sampling of the same chain (N = 25 steps,
no gradient, decode and reward included), alternating for several rounds in one process; the
figure is the median per kind. ShapeWorld (the committed model, 64 px) and SD1.5 size (128 px).
Goal: iteration <= 3 x plain sampling for K = 5 at 25 steps.

Run: `$(cat .host/python) bench/reward_unroll.py` from the repository root (~25 min on 2 cores).
`--only memory|speed`, `--threads`, `--no-write`.
"""
import argparse
import contextlib
import json
import os
import statistics
import time

import common  # bench/common.py: host set-up; must come before ComfyUI and TextTune imports

import torch  # noqa: E402

KS = (1, 2, 5, 10)
MEMORY_STEPS = 10
GOAL_MEMORY = 1.3
GOAL_SPEED = 3.0
SIZES = {"tinysd": 64, "sd15": 64}


# ---------------------------------------------------------------------------------------------
# the models and methods
def sd15_models():
    """SD1.5's UNet and CLIP-L (the SD1 CLIP) with random weights, fp32, and a TAESD-architecture VAE."""
    import comfy.sd
    import comfy.supported_models
    import tinysd
    with torch.inference_mode():
        model = tinysd.make_sd15_model("cpu")
        target = comfy.supported_models.SD15(dict(tinysd.SD15_UNET)).clip_target()
        clip = comfy.sd.CLIP(target, model_options={"dtype": torch.float32})
        tinysd.init_weights_(clip.cond_stage_model, 1)
        return model, clip, tinysd.make_vae()


def build(size: str, stage: str, grad_steps: int, sampling_steps: int, checkpointing: bool = True,
          resolution: int | None = None, batch_size: int = 1):
    """(method, optimiser) of one configuration, models freshly made (inference tensors, as loaders do)."""
    import tinysd
    from texttune.shapeworld import evaluate
    from texttune.shapeworld.reward import LargeAndCentred
    from texttune.trainers.comfy_adapter import Diffusion, TextEncoder
    from texttune.trainers.lora import UnetLora
    from texttune.trainers.textcraftor import RewardLora, TextCraftor
    tinysd.register()
    with torch.inference_mode():
        if size == "tinysd":
            model, clip, vae = tinysd.make_model(), tinysd.make_clip(), tinysd.make_vae()
        elif size == "sd15":
            model, clip, vae = sd15_models()
        elif size == "shapeworld":
            model, clip, vae = evaluate.load_checkpoint()
        else:
            raise ValueError(size)
    args = dict(batch_size=batch_size, sampling_steps=sampling_steps, grad_steps=grad_steps, cfg=7.5,
                resolution=resolution or SIZES.get(size, 64), seed=0, checkpointing=checkpointing)
    prompts = ["a red circle", "a blue square", "a green star"]
    with torch.inference_mode(False):
        if stage == "textcraftor":
            method = TextCraftor(Diffusion(model), TextEncoder(clip), vae, LargeAndCentred(), prompts, **args)
            wd = 1e-2
        else:
            lora = UnetLora(model, ["to_q", "to_k", "to_v", "to_out"], 4, seed=0, device=model.load_device)
            method = RewardLora(Diffusion(model), TextEncoder(clip), vae, LargeAndCentred(), prompts, lora, **args)
            wd = 0.1
        opt = torch.optim.AdamW(list(method.trainable().values()), lr=1e-6, weight_decay=wd)
    return method, opt


def iteration(method, opt, step: int, saved: dict | None = None):
    """One training step. With `saved`, also count what autograd keeps for the backward pass (bytes
    of distinct tensor storages): the memory that grows with K unless the UNet calls are checkpointed,
    exact and free of the allocator's noise."""
    from texttune.trainers import engine
    hooks = contextlib.nullcontext()
    if saved is not None:
        storages = {}

        def pack(t):
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t
        hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
    with hooks:
        loss, _ = method.loss(step, engine.step_generator(0, step))
    if saved is not None:
        saved["bytes"] = sum(storages.values())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def plain_sampling(method, step: int):
    """The same chain, decode and reward without any gradient (what drawing the images costs)."""
    from texttune.trainers import engine
    from texttune.trainers.textcraftor import prompt_batch
    prompts = prompt_batch(method.prompts, method.batch_size, step, method.seed)
    with torch.no_grad():
        images = method.images(prompts, method.noise(len(prompts), engine.step_generator(0, step)), grad_steps=0)
        method.reward.objective(images, prompts)


# ---------------------------------------------------------------------------------------------
# memory: one configuration per process
def rss_kib(field: str) -> int:
    with open("/proc/self/status", encoding="utf-8") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_one(size: str, stage: str, k: int, checkpointing: bool) -> dict:
    method, opt = build(size, stage, k, MEMORY_STEPS, checkpointing)
    return {"size": size, "stage": stage, "grad_steps": k, "checkpointing": checkpointing,
            **step_memory(method, opt)}


def step_memory(method, opt) -> dict:
    """Peak RAM of one training step of `method` over the RSS just before it (models loaded, AdamW's
    state made), the process's RSS then and at the peak, and what autograd saved for backward."""
    with torch.inference_mode(False), method.session():
        for p in method.trainable().values():              # AdamW's state exists before the measurement
            p.grad = torch.zeros_like(p)
        with torch.no_grad():
            saved = [p.detach().clone() for p in method.trainable().values()]
            opt.step()
            for p, q in zip(method.trainable().values(), saved):
                p.copy_(q)
        opt.zero_grad(set_to_none=True)
        del saved
        before = rss_kib("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:      # reset the peak-RSS mark to the current RSS
            f.write("5")
        t = time.perf_counter()
        saved = {}
        iteration(method, opt, 1, saved)
        seconds = time.perf_counter() - t
        peak = rss_kib("VmHWM")
    return {"iteration_peak_mb": round((peak - before) / 1024, 1), "rss_before_mb": round(before / 1024, 1),
            "process_peak_mb": round(peak / 1024, 1), "saved_for_backward_mb": round(saved["bytes"] / 2**20, 2),
            "seconds": round(seconds, 2)}


def memory_rows(threads: int, sizes) -> list[dict]:
    rows = []
    for size in sizes:
        for stage in ("textcraftor", "lora"):
            for checkpointing in (True, False):
                for k in KS:
                    row = common.in_fresh_process(__file__, [size, stage, k, checkpointing], threads)
                    print(f"  {size:7s} {stage:11s} K={k:2d} checkpointing={'on ' if checkpointing else 'off'}: "
                          f"{row['iteration_peak_mb']:8.1f} MB ({row['seconds']} s)", flush=True)
                    rows.append(row)
    return rows


def memory_summary(rows: list[dict], sizes) -> dict:
    out = {}
    for size in sizes:
        for stage in ("textcraftor", "lora"):
            def peak(k, ck, field="iteration_peak_mb"):
                return next(r[field] for r in rows if (r["size"], r["stage"], r["grad_steps"],
                                                       r["checkpointing"]) == (size, stage, k, ck))
            on = [peak(k, True) for k in KS]
            off = [peak(k, False) for k in KS]
            saved_on = [peak(k, True, "saved_for_backward_mb") for k in KS]
            saved_off = [peak(k, False, "saved_for_backward_mb") for k in KS]
            out[f"{size}_{stage}"] = {
                "checkpointing_k10_over_k1": round(on[-1] / on[0], 3),
                "no_checkpointing_k10_over_k1": round(off[-1] / off[0], 3),
                "saved_for_backward_checkpointing_k10_over_k1": round(saved_on[-1] / saved_on[0], 3),
                "saved_for_backward_no_checkpointing_k10_over_k1": round(saved_off[-1] / saved_off[0], 3),
                "no_checkpointing_grows_with_k": all(b > a for a, b in zip(off, off[1:])),
                "goal_met": on[-1] / on[0] <= GOAL_MEMORY and all(b > a for a, b in zip(off, off[1:])),
            }
    return out


# ---------------------------------------------------------------------------------------------
# speed: side by side in this process
def speed_rows(rounds: int) -> list[dict]:
    rows = []
    for size in ("shapeworld", "sd15"):
        for stage in ("textcraftor", "lora"):
            method, opt = build(size, stage, 5, 25)
            n = rounds if size == "shapeworld" else max(2, rounds // 3)
            times = {"iteration": [], "plain_sampling": []}
            with torch.inference_mode(False), method.session():
                iteration(method, opt, 0)                  # warm-up of both
                plain_sampling(method, 0)
                for r in range(n):
                    for kind, fn in (("iteration", lambda: iteration(method, opt, r + 1)),
                                     ("plain_sampling", lambda: plain_sampling(method, r + 1))):
                        t = time.perf_counter()
                        fn()
                        times[kind].append(time.perf_counter() - t)
            it, plain = statistics.median(times["iteration"]), statistics.median(times["plain_sampling"])
            row = {"size": size, "resolution": SIZES.get(size, 64), "stage": stage, "sampling_steps": 25,
                   "grad_steps": 5, "rounds": n, "iteration_s": round(it, 3), "plain_sampling_s": round(plain, 3),
                   "iteration_over_plain_sampling": round(it / plain, 3),
                   "goal_met": it / plain <= GOAL_SPEED, "all_s": {k: [round(x, 3) for x in v] for k, v in times.items()}}
            print(f"  {size:10s} {stage:11s}: iteration {it:.2f} s, plain sampling {plain:.2f} s, "
                  f"ratio {it / plain:.2f} (goal <= {GOAL_SPEED})", flush=True)
            rows.append(row)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=["memory", "speed"])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--threads", type=int, default=max(1, os.cpu_count() or 1))
    ap.add_argument("--sizes", default=",".join(SIZES), help="memory rows: tinysd, sd15 or both")
    ap.add_argument("--no-write", action="store_true")
    common.add_fresh_process_option(ap)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    common.redirect_folders()
    if common.answer_fresh_process(a, measure_one):      # one memory configuration, for in_fresh_process
        return
    result = {"settings": {"memory_sampling_steps": MEMORY_STEPS, "ks": list(KS), "resolutions": SIZES,
                           "batch": 1, "cfg": 7.5, "lora": "rank 4 on to_q, to_k, to_v, to_out",
                           "speed_sampling_steps": 25, "speed_grad_steps": 5, "dtype": "float32"},
              "goals": {"memory_checkpointing_k10_over_k1_at_most": GOAL_MEMORY,
                        "speed_iteration_over_plain_sampling_at_most": GOAL_SPEED}}
    if a.only in (None, "memory"):
        print("memory (one process per configuration):", flush=True)
        sizes = a.sizes.split(",")
        rows = memory_rows(a.threads, sizes)
        result["memory"] = {"rows": rows, "summary": memory_summary(rows, sizes)}
        print(json.dumps(result["memory"]["summary"], indent=1))
    if a.only in (None, "speed"):
        print("speed:", flush=True)
        result["speed"] = speed_rows(a.rounds)
    result.update(machine=common.machine(), command=common.command())
    if not a.no_write:
        name = "reward_unroll" if a.only is None else f"reward_unroll_{a.only}"
        print("wrote", common.write_result(name, result))


if __name__ == "__main__":
    main()
