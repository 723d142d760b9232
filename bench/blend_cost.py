"""Extra cost of blending text encoders over one plain text encode, in a 20-step sampling run on TinySD.

Ways to make the positive conditioning are timed side by side in this process, each followed by the
same sampling (the core KSampler function `nodes.common_ksampler`, euler / normal, CFG 7, 20 steps;
the negative prompt "" through the core CLIP Text Encode node with the base CLIP):

- `single`: the core CLIP Text Encode node with the base CLIP (the reference);
- `blend`: TextTune Blend Text Encoders of the base CLIP and the base CLIP with a fine-tuned encoder
  loaded by TextTune Load Fine-Tuned Text Encoder (strength 1), weights 0.5, 0.5;
- `blend_window`: the same with TextCraftor's step window [0.4, 1.0] (two conditioning entries);
- `core_average`: the same two CLIPs through two core CLIP Text Encode nodes and the core
  Conditioning Average node (0.5), i.e. what core nodes cost for the same job;
- `blend_separate`: the blend of two separately built CLIPs (the fine-tuned one as its own model,
  a second full copy in memory, as the core Load CLIP node would give).

A run is: encode the positive and the negative prompt, then sample. Nothing is cached between runs
(ComfyUI's executor skips the encodes when only the seed changes, so this is the worst case). The
base CLIP and the loaded one share one encoder module, so ComfyUI swaps the fine-tuned weight
patches in for clip_b's encode and out again for the negative's: that is part of the cost measured
(`blend_separate` shows the blend without it). Variants alternate every round (order reversed every
other round); the first rounds are warm-up. Each variant's figure is the lower quartile of its run
times, so that other processes on a shared machine do not decide the result (medians are in the
JSON). Goal: blend run / single-encode run - 1 < 5%, judged at TinySD's own size: 256 px, the 32x32
latents its UNet is configured for (image_size 32). 64 px, the size of the demo and the tests, is
measured too as the stress case: there a sampling step costs ~12 ms while ComfyUI's swap of the 37
patched weights (99% of their numbers in the 49408 x 32 token table) costs the same as at any size.

Run: `$(cat .host/python) bench/blend_cost.py` from the repository root.
"""
import argparse
import os
import statistics
import time

import common  # bench/common.py: host set-up; must come before ComfyUI and TextTune imports

import torch  # noqa: E402

import comfy.utils  # noqa: E402

GOAL = 0.05
PROMPT = "a photo of a dog on a hill at (golden hour:1.2), detailed"
VARIANTS = ("single", "blend", "blend_window", "core_average", "blend_separate")


def quartile1(values) -> float:
    return statistics.quantiles(values, n=4, method="inclusive")[0]


def build():
    """TinySD model, base CLIP, the base CLIP with a 'fine-tuned' encoder (another seed's weights,
    from a file in HF CLIPTextModel keys) and that other CLIP as its own model."""
    import tinysd
    from texttune.nodes.text_encoders import LoadTextEncoder
    from texttune.trainers import files
    tinysd.register()
    with torch.inference_mode():               # made like a loader node's outputs
        model, base, other = tinysd.make_model(0), tinysd.make_clip(seed=1), tinysd.make_clip(seed=11)
    prefix = "clip_l.transformer."
    tuned = {k[len(prefix):]: v for k, v in other.cond_stage_model.state_dict().items() if k.startswith(prefix)}
    name = "bench-tuned.safetensors"
    files.save_safetensors(tuned, os.path.join(common.folder_paths.get_folder_paths("text_encoders")[0], name))
    with torch.inference_mode():
        fine = LoadTextEncoder.execute(clip=base, file=name, strength=1.0, encoder="auto")[0]
    return model, base, fine, other, len(tuned)


def positive(variant, base, fine, other):
    import nodes
    from texttune.nodes.text_encoders import BlendTextEncoders
    if variant == "single":
        return nodes.CLIPTextEncode().encode(base, PROMPT)[0]
    if variant == "core_average":
        enc = nodes.CLIPTextEncode()
        return nodes.ConditioningAverage().addWeighted(enc.encode(fine, PROMPT)[0], enc.encode(base, PROMPT)[0],
                                                       0.5)[0]
    clip_b = other if variant == "blend_separate" else fine
    start = 0.4 if variant == "blend_window" else 0.0
    return BlendTextEncoders.execute(text=PROMPT, clip_a=base, clip_b=clip_b, weights="0.5, 0.5",
                                     start_percent=start, end_percent=1.0)[0]


def run(variant, models, latent, steps, seed):
    """(encode seconds, sampling seconds) of one run."""
    import nodes
    model, base, fine, other = models
    with torch.inference_mode():
        t0 = time.perf_counter()
        pos = positive(variant, base, fine, other)
        neg = nodes.CLIPTextEncode().encode(base, "")[0]
        t1 = time.perf_counter()
        nodes.common_ksampler(model, seed, steps, 7.0, "euler", "normal", pos, neg, latent)
        t2 = time.perf_counter()
    return t1 - t0, t2 - t1


def summarise(times: list[tuple[float, float]]) -> dict:
    total = [a + b for a, b in times]
    return {
        "run_seconds": round(quartile1(total), 6),
        "median_run_seconds": round(statistics.median(total), 6),
        "encode_seconds": round(quartile1([a for a, _ in times]), 6),
        "sampling_seconds": round(quartile1([b for _, b in times]), 6),
        "timed_runs": len(times),
    }


def measure(models, resolution, args) -> dict:
    side = resolution // 8
    latent = {"samples": torch.zeros(args.batch_size, 4, side, side)}
    times = {v: [] for v in VARIANTS}
    for rnd in range(args.rounds):
        order = VARIANTS if rnd % 2 == 0 else tuple(reversed(VARIANTS))
        this = {v: run(v, models, latent, args.steps, seed=rnd) for v in order}
        if rnd >= args.warmup:
            for v in VARIANTS:
                times[v].append(this[v])
    s = {v: summarise(times[v]) for v in VARIANTS}
    single = s["single"]["run_seconds"]

    def paired(v, ref="single"):
        """Median over rounds of (v's run / ref's run in the same round) - 1: slow drifts of the machine cancel."""
        return round(statistics.median((a + b) / sum(times[ref][i]) for i, (a, b) in enumerate(times[v])) - 1, 4)

    def over(v, ref="single", what="run_seconds"):
        return round(s[v][what] / s[ref][what], 4)
    out = {
        "resolution_px": resolution, "latent_size": side,
        "blend_run_over_single_encode_run": over("blend"),
        "blend_extra_cost_over_single_encode_run": round(s["blend"]["run_seconds"] / single - 1, 4),
        "blend_window_extra_cost_over_single_encode_run": round(s["blend_window"]["run_seconds"] / single - 1, 4),
        "blend_extra_cost_paired_median": paired("blend"),
        "core_average_extra_cost_paired_median": paired("core_average"),
        "blend_separate_extra_cost_over_single_encode_run": round(s["blend_separate"]["run_seconds"] / single - 1,
                                                                  4),
        "core_average_extra_cost_over_single_encode_run": round(s["core_average"]["run_seconds"] / single - 1, 4),
        "blend_run_over_core_average_run": over("blend", "core_average"),
        "blend_encode_extra_seconds_over_single_encode": round(s["blend"]["encode_seconds"]
                                                               - s["single"]["encode_seconds"], 6),
        "blend_encode_extra_over_single_encode_run": round((s["blend"]["encode_seconds"]
                                                            - s["single"]["encode_seconds"]) / single, 4),
        "blend_window_sampling_over_single_encode_sampling": over("blend_window", what="sampling_seconds"),
        "details": s,
    }
    out["goal_met"] = out["blend_extra_cost_over_single_encode_run"] < GOAL
    print(f"\n{resolution} px ({side}x{side} latents), {len(times['single'])} timed runs per variant:")
    for v in VARIANTS:
        d = s[v]
        print(f"  {v:15s} run {d['run_seconds'] * 1e3:8.2f} ms (encode {d['encode_seconds'] * 1e3:6.2f}, "
              f"sampling {d['sampling_seconds'] * 1e3:8.2f}), extra over single "
              f"{(d['run_seconds'] / single - 1) * 100:+6.2f}% (paired median {paired(v) * 100:+6.2f}%)")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=40, help="alternating rounds of the variants per resolution")
    ap.add_argument("--warmup", type=int, default=3, help="first rounds left out of the timing")
    ap.add_argument("--steps", type=int, default=20, help="sampling steps")
    ap.add_argument("--resolutions", type=int, nargs="+", default=[256, 64],
                    help="image sizes in pixels (latent = size / 8); the first is the headline and judges the goal. "
                         "256: TinySD's configured 32x32 latents; 64: the size the demo and tests use (stress case)")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: steadier on a small shared machine; 0: torch's default)")
    ap.add_argument("--no-write", action="store_true", help="do not write bench/results/blend_cost.json")
    args = ap.parse_args()
    if args.rounds < args.warmup + 4:
        raise SystemExit("too few timed rounds: raise --rounds above --warmup + 4")

    if args.threads:
        torch.set_num_threads(args.threads)
    common.redirect_folders()
    comfy.utils.set_progress_bar_enabled(False)
    import texttune  # noqa: F401  (the pack, from ComfyUI/custom_nodes)
    model, base, fine, other, patched = build()

    t_start, load_before = time.perf_counter(), os.getloadavg()[0]
    results = [measure((model, base, fine, other), r, args) for r in args.resolutions]
    head = results[0]
    result = {
        "benchmark": "blend_cost",
        "what": "Seconds of a 20-step sampling run on TinySD (positive + negative encode, then KSampler) with the "
                "positive prompt made by TextTune Blend Text Encoders (2 CLIPs) and by one core CLIP Text Encode, "
                "measured side by side in one run; *_over_* keys are ratios, *_extra_cost_* keys are ratio - 1. "
                f"Headline keys (and goal_met) are for {head['resolution_px']} px; by_resolution has every size, "
                "goal_met_by_resolution the goal at each.",
        "blend_run_over_single_encode_run": head["blend_run_over_single_encode_run"],
        "blend_extra_cost_over_single_encode_run": head["blend_extra_cost_over_single_encode_run"],
        "blend_window_extra_cost_over_single_encode_run": head["blend_window_extra_cost_over_single_encode_run"],
        "blend_run_over_core_average_run": head["blend_run_over_core_average_run"],
        "goal": f"blend_extra_cost_over_single_encode_run < {GOAL}",
        "goal_met": head["goal_met"],
        "goal_met_by_resolution": {str(r["resolution_px"]): r["goal_met"] for r in results},
        "by_resolution": {str(r["resolution_px"]): r for r in results},
        "statistic": "each variant's run/encode/sampling seconds are lower quartiles of its timed runs (warm-up "
                     "rounds left out); variants alternate every round, in reversed order every other round. "
                     "encode covers the positive and the negative encode, sampling the KSampler call. *_paired_median: the "
                     "median over rounds of the ratio of two variants' runs in the same round, minus 1.",
        "settings": {
            "model": "TinySD (tests/tinysd.py): SD1-shaped UNet (32 channels, 2 levels), CLIP width 32, 2 layers, "
                     "real SD1 tokenizer and vocabulary (token embedding 49408 x 32)",
            "fine_tuned_encoder": "another seed's TinySD CLIP saved with HF CLIPTextModel keys, loaded at strength 1 "
                                  f"by TextTuneLoadTextEncoder as {patched} weight patches on a clone of the base CLIP",
            "prompt": PROMPT, "negative": "", "blend_weights": [0.5, 0.5], "blend_window": [0.4, 1.0],
            "sampler": "euler", "scheduler": "normal", "cfg": 7.0, "steps": args.steps,
            "batch_size": args.batch_size, "rounds": args.rounds, "warmup_rounds": args.warmup, "dtype": "fp32",
        },
        "machine": {**common.machine(), "load_average_1min_before_after": [round(load_before, 2),
                                                                          round(os.getloadavg()[0], 2)]},
        "command": common.command(),
        "wall_seconds": round(time.perf_counter() - t_start, 1),
    }
    for r in results:
        x = r["blend_extra_cost_over_single_encode_run"]
        print(f"{r['resolution_px']} px: blend extra cost over a single encode {x * 100:+.2f}% (goal < "
              f"{GOAL * 100:.0f}%: {'met' if x < GOAL else 'NOT met'}); blend / core average "
              f"{r['blend_run_over_core_average_run']:.3f}")
    if not args.no_write:
        print("wrote", common.write_result("blend_cost", result))


if __name__ == "__main__":
    main()
