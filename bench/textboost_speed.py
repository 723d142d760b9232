"""Speed of one TextBoost training step against one textual-inversion step at the same batch.

Both nodes run in this process, side by side, on the committed ShapeWorld model (fp32), from the
same single image, batch 8:

- `TextTuneTrainTextualInversion`: one vector, the ShapeWorld TI settings (shapeworld/evaluate.py);
- `TextTuneTrainTextBoost`: its defaults (LoRA rank 4 on q, k, v, out, fc1, fc2; augmentation
  tokens; knowledge preservation on 8 prior captions per step; SNR-weighted timesteps).

Set-up (image preparation, TextBoost's augmentation pool and its VAE encoding) is excluded from
the step figure and reported apart: each step is timed by a global progress hook, runs alternate
for several rounds, and each trainer's figure is the lower quartile of its pooled timed steps
after the warm-up (bench/ti_speed.py's method). Goal: TextBoost step <= 1.3 x TI step.

What TextBoost adds is text-encoder work (the LoRA, 8 prior captions through the tuned and the
original encoder), so the ratio depends on how large the text encoder is next to the UNet. The
bench counts forward FLOPs per sample with torch's FlopCounterMode: SD1.5's CLIP-L and its UNet at
512 px (built on the meta device, no weights), and ShapeWorld's encoder and UNet at each
resolution. Two rows are timed:
- the resolution (a multiple of 8 from 64 to 512 px) where ShapeWorld's text-encoder/UNet FLOP
  ratio is closest to SD1.5's at 512 px: the row the goal is judged on;
- 64 px (8x8 latents, ShapeWorld's native size), where the text encoder costs about a quarter of
  the UNet: the worst case.

Run: `$(cat .host/python) bench/textboost_speed.py` from the repository root.
"""
import argparse
import math
import statistics
import time

import common  # bench/common.py: host set-up; must come before ComfyUI and TextTune imports

import torch  # noqa: E402

import comfy.utils  # noqa: E402
from ti_speed import StepClock, cleanup, quartile1, summarise  # noqa: E402

from texttune.shapeworld import evaluate  # noqa: E402
from tinysd import SD15_UNET  # noqa: E402

GOAL = 1.3


def sd15_text_to_unet_flops() -> float:
    """CLIP-L (77 tokens) over SD1.5's UNet at 512 px, per sample, forward."""
    import comfy.ops
    import comfy.sd1_clip
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    unet = UNetModel(**SD15_UNET, device="meta", operations=comfy.ops.disable_weight_init, dtype=torch.float32)
    u = common.count_flops(lambda: unet(torch.randn(1, 4, 64, 64, device="meta"), torch.tensor([500.0], device="meta"),
                                        context=torch.randn(1, 77, 768, device="meta")))
    clip = comfy.sd1_clip.SDClipModel(device="meta", dtype=torch.float32)
    c = common.count_flops(lambda: clip.transformer(torch.zeros(1, 77, dtype=torch.long, device="meta"), dtype=torch.float32))
    return c / u


def shapeworld_text_to_unet_flops(mdl, clip, resolution: int) -> float:
    tokens = clip.tokenize("a red star on a blue background")
    c = common.count_flops(lambda: clip.encode_from_tokens(tokens))
    cond = clip.encode_from_tokens(tokens)
    lat = resolution // 8
    u = common.count_flops(lambda: mdl.model.apply_model(torch.randn(1, 4, lat, lat), torch.tensor([5.0]), c_crossattn=cond))
    return c / u


def timed(run, clock):
    comfy.utils.set_progress_bar_global_hook(clock)
    t0 = time.perf_counter()
    try:
        run()
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
    first = clock.marks[1][1] if len(clock.marks) > 1 else time.perf_counter()
    return first - t0          # set-up and the first step


def measure(a, mdl, clip, vae, resolution: int) -> dict:
    kind = "ring"
    trainers = {
        "textual_inversion": lambda tag: evaluate.learn(mdl, clip, vae, kind, a.steps, images=1, batch_size=a.batch_size,
                                                        resolution=resolution, run_name=f"speed-ti-{tag}"),
        "textboost": lambda tag: evaluate.boost(mdl, clip, vae, kind, a.steps, batch_size=a.batch_size,
                                                resolution=resolution, tag=f"speed-{tag}", run_name=f"speed-tb-{tag}"),
    }
    runs = {k: [] for k in trainers}
    setup = {k: [] for k in trainers}
    ratios = []
    for rnd in range(a.rounds):
        order = list(trainers) if rnd % 2 == 0 else list(reversed(trainers))
        for name in order:
            cleanup()
            clock = StepClock()
            setup[name].append(timed(lambda: trainers[name](f"{resolution}-{rnd}"), clock))
            secs = clock.step_seconds(a.warmup)
            runs[name].append({"steps_s": secs, "weight_wrappers": None})
            print(f"{resolution} px round {rnd + 1}/{a.rounds} {name:18s} lower quartile {quartile1(secs) * 1e3:8.2f} "
                  f"ms/step, median {statistics.median(secs) * 1e3:8.2f} ({len(secs)} steps)", flush=True)
        ratios.append(quartile1(runs["textboost"][-1]["steps_s"]) / quartile1(runs["textual_inversion"][-1]["steps_s"]))
    summary = {k: {kk: vv for kk, vv in summarise(v).items() if kk != "weight_wrappers_during_training"}
               for k, v in runs.items()}
    ratio = summary["textboost"]["seconds_per_step"] / summary["textual_inversion"]["seconds_per_step"]
    print(f"{resolution} px: TextBoost / TI step time {ratio:.3f} (per round {', '.join(f'{r:.3f}' for r in ratios)})")
    return {"trainers": summary, "ratio": ratio, "ratio_per_round": ratios,
            "text_to_unet_forward_flops": shapeworld_text_to_unet_flops(mdl, clip, resolution),
            "setup_and_first_step_seconds": {k: [round(x, 3) for x in v] for k, v in setup.items()}}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--goal-resolution", type=int, default=0,
                    help="0: the resolution whose text/UNet FLOP ratio is closest to SD1.5 at 512 px")
    ap.add_argument("--worst-resolution", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    common.redirect_folders()
    mdl, clip, vae = evaluate.load_checkpoint()
    sd15 = sd15_text_to_unet_flops()
    if not a.goal_resolution:
        a.goal_resolution = min(range(64, 513, 8), key=lambda r: abs(math.log(
            shapeworld_text_to_unet_flops(mdl, clip, r) / sd15)))
    rows = {str(r): measure(a, mdl, clip, vae, r) for r in (a.goal_resolution, a.worst_resolution)}
    goal_row = rows[str(a.goal_resolution)]
    result = {
        "benchmark": "textboost_speed",
        "what": "TextBoost step time over textual-inversion step time, same batch, ShapeWorld, fp32; the goal row "
                "is the resolution whose text-encoder/UNet FLOP ratio matches SD1.5 at 512 px",
        "batch_size": a.batch_size, "steps": a.steps, "warmup": a.warmup, "rounds": a.rounds,
        "sd15_512px_text_to_unet_forward_flops": sd15,
        "by_resolution": rows, "goal_resolution": a.goal_resolution,
        "ratio": goal_row["ratio"], "goal": GOAL, "goal_met": goal_row["ratio"] <= GOAL,
        "worst_case_ratio": rows[str(a.worst_resolution)]["ratio"],
        "machine": common.machine(), "command": common.command(),
    }
    print(f"SD1.5 at 512 px text/UNet FLOPs {sd15:.4f}; ShapeWorld at {a.goal_resolution} px "
          f"{goal_row['text_to_unet_forward_flops']:.4f}: TextBoost / TI {goal_row['ratio']:.3f} (goal <= {GOAL}); "
          f"at {a.worst_resolution} px {result['worst_case_ratio']:.3f}")
    if not a.no_write:
        print("wrote", common.write_result("textboost_speed", result))


if __name__ == "__main__":
    main()
