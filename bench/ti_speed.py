"""Speed of one textual-inversion training step against one step of ComfyUI's core LoRA trainer.

Both trainers run in this process, side by side, on the same TinySD model (tests/tinysd.py), the
same four 64 px images (8x8 latents), batch size 4 and fp32:

- TextTune: `TextTuneTrainTextualInversion` (texttune.nodes.textual_inversion);
- core: `TrainLoraNode` (comfy_extras/nodes_train.py), LoRA rank 8, AdamW, MSE, with and without
  its gradient checkpointing (on by default in the node).

Both node classes are called through `execute` with list inputs (is_input_list=True) inside
`torch.inference_mode()` as ComfyUI's executor does. The core node gets four one-image LATENT
dicts: a single LATENT hits the 0.3.75 `multi_res` UnboundLocalError (research/comfyui.md §7).

Set-up is excluded: both loops update a `comfy.utils.ProgressBar` after every optimiser step, so
a global progress hook timestamps each step. Runs of the trainers alternate (TI, core, core
with checkpointing, ...) for several rounds; each trainer's figure is the lower quartile of its
timed steps pooled over the rounds (after the warm-up steps), so that noise on a small machine
does not decide the ratio. `--profile` adds a breakdown of the TI step (not written to the
result file).

Run: `make bench`, or `$(cat .host/python) bench/ti_speed.py` from the repository root.
"""
import argparse
import gc
import os
import shutil
import statistics
import time

import common  # bench/common.py: host set-up; must come before ComfyUI and TextTune imports

import torch  # noqa: E402

import comfy.model_management as mm  # noqa: E402
import comfy.utils  # noqa: E402

GOAL = 1.0          # TI step time over core LoRA step time must not exceed this
CAPTION = "a photo of a dog"


# ---------------------------------------------------------------------------------------------
class StepClock:
    """Progress hook recording when each training step finished."""

    def __init__(self, on_first_step=None):
        self.marks = []                 # (step value, perf_counter)
        self.on_first_step = on_first_step
        self.weight_wrappers = None     # live weight wrappers in the model at the first step

    def __call__(self, value, total, preview=None, node_id=None):
        now = time.perf_counter()
        if value >= 1 and self.on_first_step is not None:
            cb, self.on_first_step = self.on_first_step, None
            cb()
        self.marks.append((value, now))

    def step_seconds(self, warmup: int) -> list[float]:
        """Durations of the steps after `warmup` steps (step k lasts from mark k-1 to mark k)."""
        out = []
        for (v0, t0), (v1, t1) in zip(self.marks, self.marks[1:]):
            if v1 == v0 + 1 and v0 >= warmup:
                out.append(t1 - t0)
        return out


def count_weight_wrappers(model) -> int:
    """Modules of the diffusion model with live weight wrappers (LoRA adapters) right now."""
    return sum(1 for m in model.modules() if getattr(m, "weight_function", None))


def fresh_models(emb_dir):
    """A new TinySD model, CLIP and VAE, made in inference mode like a loader node's outputs."""
    import tinysd
    with torch.inference_mode():
        return tinysd.make_model(), tinysd.make_clip([emb_dir]), tinysd.make_vae()


def cleanup():
    mm.unload_all_models()
    gc.collect()


# ---------------------------------------------------------------------------------------------
def run_ti(images, steps, args, tag, emb_dir, clock):
    from texttune.nodes.textual_inversion import TrainTextualInversion
    model, clip, vae = fresh_models(emb_dir)
    clock.on_first_step = _record_wrappers(clock, model)
    comfy.utils.set_progress_bar_global_hook(clock)
    try:
        with torch.inference_mode():
            TrainTextualInversion.execute(
                model=[model], clip=[clip], vae=[vae], images=[images], token_name=[f"bench-{tag}"],
                init_words=["dog"], vectors=[args.vectors], template_set=["object"], steps=[steps],
                learning_rate=[5e-3], lr_schedule=["constant"], batch_size=[args.batch_size],
                resolution=[args.resolution], flip=[True], seed=[0], save_every=[0], run_name=[f"bench-{tag}"])
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
    return clock


def run_core(images, steps, args, checkpointing, emb_dir, clock):
    from comfy_extras.nodes_train import TrainLoraNode
    model, clip, vae = fresh_models(emb_dir)
    with torch.inference_mode():
        latent = vae.encode(images[:, :, :, :3])
        latents = [{"samples": latent[i:i + 1]} for i in range(latent.shape[0])]
        positive = clip.encode_from_tokens_scheduled(clip.tokenize(CAPTION))
    clock.on_first_step = _record_wrappers(clock, model)
    comfy.utils.set_progress_bar_global_hook(clock)
    try:
        with torch.inference_mode():
            TrainLoraNode.execute(
                model=[model], latents=latents, positive=[positive], batch_size=[args.batch_size],
                steps=[steps], grad_accumulation_steps=[1], learning_rate=[5e-4], rank=[8],
                optimizer=["AdamW"], loss_function=["MSE"], seed=[0], training_dtype=["fp32"],
                lora_dtype=["fp32"], algorithm=["LoRA"], gradient_checkpointing=[checkpointing],
                existing_lora=["[None]"])
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
    return clock


def _record_wrappers(clock, patcher):
    def cb():
        clock.weight_wrappers = count_weight_wrappers(patcher.model)
    return cb


# ---------------------------------------------------------------------------------------------
def quartile1(values) -> float:
    """Lower quartile: the step cost with most of the other processes' interference left out
    (a step's work is the same every step; interference only ever adds time)."""
    return statistics.quantiles(values, n=4, method="inclusive")[0]


def summarise(runs: list[dict]) -> dict:
    pooled = [x for r in runs for x in r["steps_s"]]
    return {
        "seconds_per_step": quartile1(pooled),
        "median_seconds_per_step": statistics.median(pooled),
        "min_seconds_per_step": min(pooled),
        "timed_steps": len(pooled),
        "per_round_lower_quartile_seconds": [round(quartile1(r["steps_s"]), 6) for r in runs],
        "per_round_median_seconds": [round(statistics.median(r["steps_s"]), 6) for r in runs],
        "per_round_mean_seconds": [round(statistics.fmean(r["steps_s"]), 6) for r in runs],
        "weight_wrappers_during_training": runs[0]["weight_wrappers"],
    }


def measure(args, images, emb_dir):
    trainers = {
        "ti": lambda tag, clock: run_ti(images, args.steps, args, tag, emb_dir, clock),
        "core_lora": lambda tag, clock: run_core(images, args.steps, args, False, emb_dir, clock),
        "core_lora_checkpointing": lambda tag, clock: run_core(images, args.steps, args, True, emb_dir, clock),
    }
    runs = {k: [] for k in trainers}
    ratios, ratios_ckpt = [], []
    for rnd in range(args.rounds):
        order = list(trainers) if rnd % 2 == 0 else list(reversed(trainers))
        for name in order:
            cleanup()
            clock = StepClock()
            trainers[name](f"{name}-{rnd}", clock)
            secs = clock.step_seconds(args.warmup)
            if len(secs) < 4:
                raise SystemExit(f"{name}: only {len(secs)} timed steps; raise --steps above --warmup.")
            runs[name].append({"steps_s": secs, "weight_wrappers": clock.weight_wrappers})
            print(f"round {rnd + 1}/{args.rounds} {name:24s} lower quartile {quartile1(secs) * 1e3:8.2f} ms/step, "
                  f"median {statistics.median(secs) * 1e3:8.2f}, mean {statistics.fmean(secs) * 1e3:8.2f} "
                  f"({len(secs)} steps)", flush=True)
        ti_q = quartile1(runs["ti"][-1]["steps_s"])
        ratios.append(ti_q / quartile1(runs["core_lora"][-1]["steps_s"]))
        ratios_ckpt.append(ti_q / quartile1(runs["core_lora_checkpointing"][-1]["steps_s"]))
    return {k: summarise(v) for k, v in runs.items()}, ratios, ratios_ckpt


# ---------------------------------------------------------------------------------------------
def profile_ti(args, images, emb_dir):
    """Where a TI step goes, over the steps after the warm-up: first one run with wall-clock
    timers around the parts of the step (TextTune functions, backward, optimiser), then one run
    under cProfile (which slows Python-heavy parts, so its numbers are only relative)."""
    import cProfile
    import pstats

    from texttune.trainers import comfy_adapter, engine
    from texttune.trainers import textual_inversion as ti_mod

    steps = args.warmup + args.profile_steps
    totals, counting = {}, [False]

    def timed(owner, name, label):
        orig = getattr(owner, name)

        def wrapper(*a, **kw):
            if not counting[0]:
                return orig(*a, **kw)
            t = time.perf_counter()
            try:
                return orig(*a, **kw)
            finally:
                totals[label] = totals.get(label, 0.0) + time.perf_counter() - t
        setattr(owner, name, wrapper)
        return owner, name, orig

    top = ["TextualInversion.loss (forward)", "loss.backward", "AdamW.step"]
    patches = [
        timed(ti_mod.TextualInversion, "loss", top[0]),
        timed(ti_mod.TextualInversion, "encode", "  TextualInversion.encode (prompts -> cond)"),
        timed(comfy_adapter.TextEncoder, "tokens_with_vectors", "    TextEncoder.tokens_with_vectors"),
        timed(comfy_adapter.TextEncoder, "encode_batch", "    TextEncoder.encode_batch (CLIP fwd)"),
        timed(comfy_adapter.Diffusion, "loss", "  Diffusion.loss (UNet fwd + loss)"),
        timed(torch.Tensor, "backward", top[1]),
        timed(torch.optim.AdamW, "step", top[2]),
        timed(engine.RunFolder, "append_metrics", "run.append_metrics"),
    ]
    clock = StepClock()

    def timer_hook(value, total, preview=None, node_id=None):
        clock(value, total, preview, node_id)
        counting[0] = args.warmup <= value < steps
    try:
        run_ti_with_hook(images, steps, args, emb_dir, timer_hook, "bench-profile-timers")
    finally:
        for owner, name, orig in reversed(patches):
            setattr(owner, name, orig)
    secs = clock.step_seconds(args.warmup)
    total, n = sum(secs), len(secs)
    print(f"\nTI step breakdown over {n} steps after {args.warmup} warm-up steps "
          f"(mean {total / n * 1e3:.2f} ms/step, median {statistics.median(secs) * 1e3:.2f}):")
    for label, t in totals.items():
        print(f"  {label:46s} {t / n * 1e3:8.2f} ms/step  {100 * t / total:5.1f} %")
    rest = total - sum(totals.get(k, 0.0) for k in top)
    print(f"  {'rest of the loop (zero_grad, lr, metrics, ...)':46s} {rest / n * 1e3:8.2f} ms/step  "
          f"{100 * rest / total:5.1f} %")

    prof = cProfile.Profile()

    def prof_hook(value, total, preview=None, node_id=None):
        if value == args.warmup:
            prof.enable()
        elif value == steps:
            prof.disable()
    run_ti_with_hook(images, steps, args, emb_dir, prof_hook, "bench-profile-cprofile")
    print(f"\ncProfile over {args.profile_steps} TI steps, top functions by own time (tottime):")
    stats = pstats.Stats(prof)
    stats.sort_stats("tottime").print_stats(20)
    print("cProfile, TextTune and comfy functions by cumulative time:")
    stats.sort_stats("cumulative").print_stats(r"texttune|comfy/", 30)


def run_ti_with_hook(images, steps, args, emb_dir, hook, run_name):
    from texttune.nodes.textual_inversion import TrainTextualInversion
    model, clip, vae = fresh_models(emb_dir)
    comfy.utils.set_progress_bar_global_hook(hook)
    try:
        with torch.inference_mode():
            TrainTextualInversion.execute(
                model=[model], clip=[clip], vae=[vae], images=[images], token_name=[run_name],
                init_words=["dog"], vectors=[args.vectors], template_set=["object"], steps=[steps],
                learning_rate=[5e-3], lr_schedule=["constant"], batch_size=[args.batch_size],
                resolution=[args.resolution], flip=[True], seed=[0], save_every=[0], run_name=[run_name])
    finally:
        comfy.utils.set_progress_bar_global_hook(None)


# ---------------------------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=6, help="alternating rounds of the trainers")
    ap.add_argument("--steps", type=int, default=30, help="training steps per run")
    ap.add_argument("--warmup", type=int, default=6, help="first steps of each run left out of the timing")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--vectors", type=int, default=4, help="TI vectors per token (the node's default)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--profile", action="store_true", help="also print where a TI step spends its time")
    ap.add_argument("--profile-steps", type=int, default=60, help="TI steps profiled after the warm-up")
    ap.add_argument("--profile-only", action="store_true", help="only the TI profile, no comparison")
    ap.add_argument("--no-write", action="store_true", help="do not write bench/results/ti_speed.json")
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    base = common.redirect_folders()
    emb_dir = common.folder_paths.get_folder_paths("embeddings")[0]
    comfy.utils.set_progress_bar_enabled(False)      # no tqdm output from the core loop
    torch.manual_seed(0)
    images = torch.rand(args.images, args.resolution, args.resolution, 3, generator=torch.Generator().manual_seed(0))
    import texttune  # noqa: F401  (the pack, from ComfyUI/custom_nodes)

    if args.profile_only:
        profile_ti(args, images, emb_dir)
        shutil.rmtree(base, ignore_errors=True)
        return
    t0, load_before = time.perf_counter(), os.getloadavg()[0]
    summary, ratios, ratios_ckpt = measure(args, images, emb_dir)
    ti, core, core_ckpt = summary["ti"], summary["core_lora"], summary["core_lora_checkpointing"]
    ratio = ti["seconds_per_step"] / core["seconds_per_step"]
    ratio_ckpt = ti["seconds_per_step"] / core_ckpt["seconds_per_step"]
    result = {
        "benchmark": "ti_speed",
        "what": "Seconds per training step (set-up excluded) of TextTune textual inversion and of ComfyUI's "
                "core TrainLoraNode, measured side by side in one run; ratios are TI over core.",
        "ti_seconds_per_step": round(ti["seconds_per_step"], 6),
        "core_lora_seconds_per_step": round(core["seconds_per_step"], 6),
        "core_lora_checkpointing_seconds_per_step": round(core_ckpt["seconds_per_step"], 6),
        "ti_step_over_core_lora_step": round(ratio, 4),
        "ti_step_over_core_lora_checkpointing_step": round(ratio_ckpt, 4),
        "goal": f"ti_step_over_core_lora_step <= {GOAL}",
        "goal_met": ratio <= GOAL,
        "ti_step_over_core_lora_step_per_round": [round(r, 4) for r in ratios],
        "ti_step_over_core_lora_checkpointing_step_per_round": [round(r, 4) for r in ratios_ckpt],
        "statistic": "step times come from a comfy.utils.ProgressBar hook called after each optimiser step "
                     "(set-up and the warm-up steps left out); *_seconds_per_step is the lower quartile of all "
                     "timed steps of a trainer pooled over the alternating rounds, which keeps other processes "
                     "on a shared machine from deciding the result (medians and means are in details). "
                     "Per-round ratios use each run's lower quartile. core_lora is TrainLoraNode without gradient checkpointing (the strict "
                     "comparison: TI does not checkpoint); core_lora_checkpointing uses the node's default "
                     "gradient_checkpointing=True.",
        "details": {"ti": ti, "core_lora": core, "core_lora_checkpointing": core_ckpt},
        "settings": {
            "model": "TinySD (tests/tinysd.py): SD1-shaped UNet (32 channels, 2 levels), CLIP width 32, 2 layers",
            "images": args.images, "resolution_px": args.resolution, "latent_size": args.resolution // 8,
            "batch_size": args.batch_size, "dtype": "fp32", "steps_per_run": args.steps,
            "warmup_steps": args.warmup, "rounds": args.rounds,
            "ti": {"node": "TextTuneTrainTextualInversion", "vectors": args.vectors, "init_words": "dog",
                   "template_set": "object", "learning_rate": 5e-3, "optimizer": "AdamW", "flip": True,
                   "save_every": 0},
            "core_lora": {"node": "TrainLoraNode", "rank": 8, "algorithm": "LoRA", "optimizer": "AdamW",
                          "learning_rate": 5e-4, "loss_function": "MSE", "training_dtype": "fp32",
                          "lora_dtype": "fp32", "grad_accumulation_steps": 1, "caption": CAPTION,
                          "latents": f"{args.images} one-image LATENT dicts (0.3.75 single-LATENT bug)"},
        },
        "machine": {**common.machine(), "load_average_1min_before_after": [round(load_before, 2),
                                                                          round(os.getloadavg()[0], 2)]},
        "command": common.command(),
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }
    print(f"\nTI {ti['seconds_per_step'] * 1e3:.2f} ms/step, core LoRA {core['seconds_per_step'] * 1e3:.2f} ms/step "
          f"(with checkpointing {core_ckpt['seconds_per_step'] * 1e3:.2f}); TI/core = {ratio:.3f} "
          f"(goal <= {GOAL}: {'met' if ratio <= GOAL else 'NOT met'}), TI/core-checkpointing = {ratio_ckpt:.3f}")
    if not args.no_write:
        print("wrote", common.write_result("ti_speed", result))
    if args.profile:
        profile_ti(args, images, emb_dir)
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
