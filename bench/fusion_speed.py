"""Speed of fusion sampling (TextTune KSampler Fusion) against plain CFG (the core KSampler) per run.

Both run in this process, side by side, on the same model, latent, seed, prompts, steps and
scheduler (ddim_uniform), fp32, batch 1:

- `core_cfg`: the core KSampler with the `ddim` sampler (the same step family), cfg 7:
  2 UNet sample-evaluations per step;
- `fusion_ref_all`: TextTune KSampler Fusion with its defaults (ω1 7, ω2 5, ω_f 7, γ 0.6, one pass,
  η 1) and a reference prompt, the fusion stage on every step: 5 evaluations per step;
- `fusion_noref_all`: the same without the reference: 4 per step;
- `fusion_ref_half`, `fusion_noref_half`: the fusion stage on the first 50% of the steps only:
  (5 + 3)/2 and (4 + 2)/2 per step.

The evaluation counts are the floor of the time ratio (when a UNet evaluation is the whole cost);
the goal is to stay within 10% of it. They are counted in each set-up (a UNet wrapper on an untimed
run records every call's batch size) and written next to the times. A batch of 3 need not cost 1.5x
a batch of 2 (on a CPU, attention over 32x32 latents outgrows the cache), so the bench also times
one UNet call per batch size and reports what each run's UNet calls alone cost over CFG's: the
ratio the sampling loop itself cannot go below. Everything is measured with two attention functions
(`--attention`): `host`, the one ComfyUI picks on this machine (sub-quadratic attention on a CPU,
whose chunking makes a batch of 3 cost about 2x a batch of 2 at 32x32 latents), and `pytorch`
(`attention_pytorch`, torch's scaled_dot_product_attention, which ComfyUI picks on NVIDIA GPUs with
torch 2, i.e. what most users run). Models: TinySD (tests/tinysd.py, with a 2-vector embedding as the
concept) and the committed ShapeWorld model; each at its 64 px native size (8x8 latents) and at
256 px (32x32 latents), where the UNet outweighs the per-call Python work more as it does on real
models. Conditioning is encoded once, outside the timing. Times are the process's CPU seconds (one
torch thread), so time spent descheduled by other processes on a shared machine does not count.
Variants alternate every round (the order reversed every other round); the first rounds are
warm-up. A variant's ratio is the median over rounds of its run over the core run of the same round.

Run: `$(cat .host/python) bench/fusion_speed.py` from the repository root (1 torch thread by default).
"""
import argparse
import os
import statistics
import time

import common  # bench/common.py: host set-up; must come before ComfyUI and TextTune imports

import safetensors.torch  # noqa: E402
import torch  # noqa: E402

import comfy.model_management as mm  # noqa: E402
import comfy.utils  # noqa: E402

NODE = dict(omega_1=7.0, omega_2=5.0, omega_f=7.0, gamma=0.6, fusion_passes=1, eta=1.0, fusion_start_percent=0.0)
VARIANTS = {                       # name: (with reference, fusion_end_percent); None: the core KSampler
    "core_cfg": None,
    "fusion_ref_all": (True, 1.0), "fusion_noref_all": (False, 1.0),
    "fusion_ref_half": (True, 0.5), "fusion_noref_half": (False, 0.5),
}
MARGIN = 1.1                       # goal: within 10% of the evaluation-count floor


def quartile1(values) -> float:
    return statistics.quantiles(values, n=4, method="inclusive")[0]


def tinysd_setup():
    import tinysd
    from texttune.trainers import fusion
    tinysd.register()
    emb_dir = common.folder_paths.get_folder_paths("embeddings")[0]
    vectors = torch.randn(2, tinysd.WIDTH, generator=torch.Generator().manual_seed(7))
    safetensors.torch.save_file({"emb_params": vectors}, os.path.join(emb_dir, "bench-concept.safetensors"))
    with torch.inference_mode():
        model, clip = tinysd.make_model(0), tinysd.make_clip([emb_dir])
        conds = {"positive": fusion.encode_concept(clip, "a photo of embedding:bench-concept on a beach",
                                                   "embedding:bench-concept"),
                 "reference": encode(clip, "a photo of a toy on a beach"), "negative": encode(clip, "")}
    return model, conds


def shapeworld_setup():
    from texttune.shapeworld import evaluate
    from texttune.trainers import fusion
    with torch.inference_mode():
        model, clip, _ = evaluate.load_checkpoint()
        conds = {"positive": fusion.encode_concept(clip, "a red star on a blue background", "star"),
                 "reference": encode(clip, "a red object on a blue background"), "negative": encode(clip, "")}
    return model, conds


def encode(clip, text):
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))


def run(variant, model, conds, latent, steps, seed):
    import nodes
    from texttune.nodes.fusion import KSamplerFusion
    spec = VARIANTS[variant]
    with torch.inference_mode():
        t0 = time.process_time()
        if spec is None:
            nodes.KSampler().sample(model, seed, steps, NODE["omega_1"], "ddim", "ddim_uniform", conds["positive"],
                                    conds["negative"], latent)
        else:
            reference, end = spec
            KSamplerFusion.execute(model=model, seed=seed, steps=steps, scheduler="ddim_uniform",
                                   positive=conds["positive"], negative=conds["negative"], latent_image=latent,
                                   denoise=1.0, reference=conds["reference"] if reference else None,
                                   fusion_end_percent=end, **NODE)
        return time.process_time() - t0


def unet_calls(variant, model, conds, latent, steps) -> list[int]:
    """Batch size of every UNet call of one run, recorded by a UNet wrapper on a clone."""
    calls = []

    def wrapper(apply_model, args):
        calls.append(args["input"].shape[0])
        return apply_model(args["input"], args["timestep"], **args["c"])
    counted = model.clone()
    counted.set_model_unet_function_wrapper(wrapper)
    run(variant, counted, conds, latent, steps, seed=0)
    return calls


def unet_seconds(model, cond, side: int, batches, rounds: int) -> dict:
    """Lower-quartile CPU seconds of one UNet call (apply_model) per batch size, interleaved."""
    times = {b: [] for b in batches}
    for rnd in range(rounds):
        for b in batches:
            x, sigma = torch.randn(b, 4, side, side), torch.full((b,), 3.0)
            with torch.inference_mode():
                t0 = time.process_time()
                model.model.apply_model(x, sigma, c_crossattn=cond.repeat(b, 1, 1))
                if rnd:
                    times[b].append(time.process_time() - t0)
    return {b: quartile1(t) for b, t in times.items()}


def measure(model, conds, resolution, args) -> dict:
    side = resolution // 8
    latent = {"samples": torch.zeros(1, 4, side, side)}
    calls = {v: unet_calls(v, model, conds, latent, args.steps) for v in VARIANTS}
    evals = {v: sum(c) for v, c in calls.items()}
    per_batch = unet_seconds(model, conds["positive"][0][0], side, sorted({b for c in calls.values() for b in c}),
                             args.rounds * 2)
    unet = {v: sum(per_batch[b] for b in c) for v, c in calls.items()}     # the runs' UNet calls alone
    times = {v: [] for v in VARIANTS}
    names = list(VARIANTS)
    for rnd in range(args.rounds):
        for v in (names if rnd % 2 == 0 else names[::-1]):
            t = run(v, model, conds, latent, args.steps, seed=rnd)
            if rnd >= args.warmup:
                times[v].append(t)
    core = quartile1(times["core_cfg"])
    rows = {}
    for v in VARIANTS:
        floor = evals[v] / evals["core_cfg"]
        paired = [t / c for t, c in zip(times[v], times["core_cfg"])]      # runs of the same round
        ratio = statistics.median(paired)
        rows[v] = {"run_cpu_seconds": round(quartile1(times[v]), 6),
                   "median_run_cpu_seconds": round(statistics.median(times[v]), 6),
                   "timed_runs": len(times[v]), "unet_evaluations_per_run": evals[v],
                   "unet_calls_per_run": len(calls[v]), "unet_call_seconds_per_run": round(unet[v], 6)}
        if v != "core_cfg":
            rows[v].update({"run_over_core_cfg_run": round(ratio, 4),
                            "run_over_core_cfg_run_per_round": [round(r, 4) for r in paired],
                            "lower_quartile_run_over_lower_quartile_core_cfg_run": round(quartile1(times[v]) / core, 4),
                            "evaluations_over_core_cfg_evaluations": floor,
                            "run_over_core_cfg_run_over_evaluation_floor": round(ratio / floor, 4),
                            "unet_call_seconds_over_core_cfg_unet_call_seconds": round(unet[v] / unet["core_cfg"], 4),
                            "goal": round(MARGIN * floor, 4), "goal_met": ratio <= MARGIN * floor})
    print(f"  {resolution} px ({side}x{side} latents), {args.steps} steps, {len(times['core_cfg'])} timed runs each; "
          f"core KSampler ddim {core * 1e3:.1f} CPU ms/run; one UNet call: "
          + ", ".join(f"batch {b} {t * 1e3:.1f} ms" for b, t in per_batch.items()))
    for v, r in rows.items():
        if v != "core_cfg":
            print(f"    {v:18s} {r['run_cpu_seconds'] * 1e3:8.1f} ms  x{r['run_over_core_cfg_run']:.3f} of CFG "
                  f"(floor x{r['evaluations_over_core_cfg_evaluations']:.2f}, goal <= {r['goal']:.3f}: "
                  f"{'met' if r['goal_met'] else 'NOT met'}; its UNet calls alone "
                  f"x{r['unet_call_seconds_over_core_cfg_unet_call_seconds']:.3f})", flush=True)
    return {"resolution_px": resolution, "latent_size": side,
            "unet_call_seconds_by_batch": {str(b): round(t, 6) for b, t in per_batch.items()}, "variants": rows}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--resolutions", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--models", nargs="+", default=["tinysd", "shapeworld"], choices=["tinysd", "shapeworld"])
    ap.add_argument("--attention", nargs="+", default=["host", "pytorch"], choices=["host", "pytorch"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    comfy.utils.PROGRESS_BAR_ENABLED = False        # no console bars (both samplers honour it)
    common.redirect_folders()
    setups = {"tinysd": tinysd_setup, "shapeworld": shapeworld_setup}
    by_attention, functions = {}, {}
    for attn in a.attention:
        functions[attn] = common.use_attention(attn)
        by_model = by_attention[attn] = {}
        for name in a.models:
            print(f"{name}, attention {attn} ({functions[attn]}):", flush=True)
            model, conds = setups[name]()
            mm.load_models_gpu([model])
            by_model[name] = {str(r): measure(model, conds, r, a) for r in a.resolutions}
            mm.unload_all_models()
    met = {attn: all(row["goal_met"] for res in by_model.values() for r in res.values()
                     for v, row in r["variants"].items() if v != "core_cfg")
           for attn, by_model in by_attention.items()}
    result = {
        "benchmark": "fusion_speed",
        "what": "CPU seconds of one fusion-sampling run (TextTune KSampler Fusion) over one plain CFG run (core "
                "KSampler, ddim), same model, latent, seed, steps and scheduler, median over rounds; goal: each ratio "
                "within 10% of the ratio of UNet sample-evaluations",
        "steps": a.steps, "rounds": a.rounds, "warmup": a.warmup, "settings": NODE, "variants": {
            k: ("core KSampler ddim, cfg 7" if v is None else
                f"{'with' if v[0] else 'without'} reference, fusion stage on steps < {v[1]:.0%}")
            for k, v in VARIANTS.items()},
        "attention_functions": functions, "by_attention": by_attention, "all_goals_met": met,
        "machine": common.machine(), "command": common.command(),
    }
    if not a.no_write:
        print("wrote", common.write_result("fusion_speed", result))


if __name__ == "__main__":
    main()
