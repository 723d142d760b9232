"""What each TextTune trainer needs with SD1.5 at its node defaults on a GPU: an estimate made from
measurements on this CPU (there is no GPU here), and how it is made.

Each trainer's training step runs on SD1.5's UNet and CLIP-L with random weights (the shapes of the
real ones; tests/tinysd.py), fp32, torch's scaled_dot_product_attention (ComfyUI's choice on NVIDIA
GPUs), at small probe sizes: batch 1 and 2 at 128 px and at 256 px, one fresh process each. Per
probe (bench/reward_unroll.step_memory): the step's peak RAM over the RAM just before it (models
loaded, AdamW's state made) less the trainable parameters' gradients, and what autograd saved for
backward (bytes of distinct storages, exact); then the FLOPs of one more step (torch's
FlopCounterMode, forward and backward, checkpoint recomputation included).

Both figures are fitted as c + batch * (t + k * size(px)): a fixed part, a per-sample part that does
not grow with the image (the text encoder's work on the captions) and one that does, with size(px)
= px^2 for memory (attention memory is linear in the tokens with scaled_dot_product_attention) and
the UNet's forward FLOPs per sample at px (counted on the meta device) for FLOPs. Three probes fit
c, t and k; the fourth (batch 2 at 256 px) is read against the fit, which says how well it holds.
Memory is the saved activations (c is the frozen weights they reference) times the largest probe's
peak RAM over its saved activations (the backward's transient buffers). The estimate for the node's
defaults (batch B at 512 px) then assumes:
- on the GPU the activations are float16 (ComfyUI loads SD1.5 in float16 on most cards): half the
  fitted float32 bytes;
- the frozen models sit in float16, trainable parameters in float32 with their gradient and two
  AdamW moments (16 bytes each), and CUDA's own context takes about 0.4 GB;
- for the reward trainers (checkpointed: the peak comes in the backward's recomputation, which
  autograd's saved tensors do not show) the step's peak RAM is fitted instead, and where that fit
  misses the fourth probe by more than 20 %, the largest probe's peak is scaled by batch and pixels,
  nothing subtracted (the high side);
- time is given as "sampling-step equivalents": the step's FLOPs over the FLOPs of one SD1.5
  sampling step at 512 px with CFG (two UNet evaluations), so a card's known sampling speed
  (ComfyUI prints it/s) converts it. Reward trainers are probed with the K gradient steps only
  (the peak is the same with the no-grad steps before them); their N - K no-grad CFG steps are
  added by count.

Reward trainers are probed with the ShapeWorld pixel reward and a TAESD decoder; the reward models a
user picks (e.g. PickScore, a ViT-H/14 of ~1 B parameters) and a full VAE decoder add their own
weights and activations, which this estimate leaves out.

Run: `$(cat .host/python) bench/sd15_budget.py` from the repository root (~40 min on one core);
writes bench/results/sd15_budget.json. `--trainers`, `--threads`, `--reuse-probes`,
`--no-write`.
"""
import argparse
import json
import os

import common  # bench/common.py: host set-up; must come before ComfyUI and TextTune imports

import torch  # noqa: E402

PROBES = [(1, 128), (2, 128), (1, 256), (2, 256)]   # (batch, px): the first three fit, the fourth checks
TARGET_PX = 512
CUDA_CONTEXT_GB = 0.4
# the node defaults that decide memory and time (nodes/*.py)
TRAINERS = {
    "textual_inversion": {"node": "TextTuneTrainTextualInversion", "batch_size": 4, "steps": 500, "vectors": 4},
    "textboost": {"node": "TextTuneTrainTextBoost", "batch_size": 8, "steps": 250, "lora_rank": 4,
                  "lora_targets": "q, k, v, out, fc1, fc2"},
    "reward_text_encoder": {"node": "TextTuneTrainRewardTextEncoder", "batch_size": 1, "steps": 1000,
                            "sampling_steps": 25, "grad_steps": 5},
    "reward_lora": {"node": "TextTuneTrainRewardLoRA", "batch_size": 1, "steps": 500, "sampling_steps": 25,
                    "grad_steps": 5, "lora_rank": 4, "lora_targets": "to_q, to_k, to_v, to_out"},
}


def build(name: str, batch: int, px: int):
    """(method, optimiser) of trainer `name` on SD1.5-size models at batch x px."""
    import reward_unroll
    from texttune.trainers import augment
    from texttune.trainers.comfy_adapter import Diffusion, TextEncoder
    from texttune.trainers.lora import TextLora, parse_targets
    from texttune.trainers.textboost import TextBoost, load_prior_captions
    from texttune.trainers.textual_inversion import TextualInversion
    d = TRAINERS[name]
    if name.startswith("reward_"):
        stage = "textcraftor" if name == "reward_text_encoder" else "lora"
        # only the K gradient steps: the peak is the same with the no-grad steps before them (their FLOPs are
        # added in estimate())
        method, opt = reward_unroll.build("sd15", stage, d["grad_steps"], d["grad_steps"], resolution=px,
                                          batch_size=batch)
        return method, opt
    model, clip, _ = reward_unroll.sd15_models()
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode(False):
        diffusion, text = Diffusion(model), TextEncoder(clip)
        if name == "textual_inversion":
            latents = torch.randn(4, 4, px // 8, px // 8, generator=g)
            method = TextualInversion(diffusion, text, latents, latents.flip(-1), None, ["a photo of a {}"],
                                      "object", d["vectors"], batch)
        else:
            _, edits = augment.augmented_pool(torch.rand(1, px, px, 3, generator=g), 16, 0)
            latents = torch.randn(len(edits), 4, px // 8, px // 8, generator=g)
            lora = TextLora(clip, parse_targets(d["lora_targets"]), d["lora_rank"], seed=0, device=diffusion.device)
            method = TextBoost(diffusion, text, latents, edits, ["a photo of a {}"], "dog", "dog",
                               load_prior_captions(), lora, batch)
        opt = torch.optim.AdamW(list(method.trainable().values()), lr=1e-6)
    return method, opt


def probe(name: str, batch: int, px: int) -> dict:
    """One probe, in this (fresh) process."""
    import reward_unroll
    common.use_attention("pytorch")
    method, opt = build(name, batch, px)
    row = reward_unroll.step_memory(method, opt)
    trainable = list(method.trainable().values())
    row["trainable_parameters"] = sum(p.numel() for p in trainable)
    row["gradients_mb"] = round(sum(p.numel() * p.element_size() for p in trainable) / 2**20, 2)
    with torch.inference_mode(False), method.session():
        row["step_flops"] = common.count_flops(lambda: reward_unroll.iteration(method, opt, 2), grad=True)
    return {"trainer": name, "batch": batch, "px": px, **row}


def run_probes(names, threads: int) -> list[dict]:
    rows = []
    for name in names:
        for batch, px in PROBES:
            row = common.in_fresh_process(__file__, [name, batch, px], threads)
            print(f"  {name:20s} batch {batch} at {px} px: step peak {row['iteration_peak_mb']:8.1f} MB "
                  f"(gradients {row['gradients_mb']} MB, saved for backward {row['saved_for_backward_mb']} MB), "
                  f"{row['step_flops'] / 1e12:.2f} TFLOP, {row['seconds']} s", flush=True)
            rows.append(row)
    return rows


# CLIP models that rewards and PromptNet load (layers, width, heads of the vision and the text tower, output
# width): ViT-L/14 (OpenAI; CLIP score, the aesthetic predictor's backbone) and ViT-H/14 (LAION; PickScore,
# HPS v2, PromptNet's image encoder)
REWARD_TOWERS = {"clip_vit_l14": ((24, 1024, 16), (12, 768, 12), 768),
                 "clip_vit_h14": ((32, 1280, 16), (24, 1024, 16), 1024)}


def clip_tower(vision, text, projection):
    """A transformers CLIPModel of that shape on the meta device (no weights: parameters and FLOPs counted)."""
    from transformers import CLIPConfig, CLIPModel
    (vl, vw, vh), (tl, tw, th) = vision, text
    cfg = CLIPConfig(vision_config={"num_hidden_layers": vl, "hidden_size": vw, "num_attention_heads": vh,
                                    "intermediate_size": 4 * vw, "patch_size": 14, "image_size": 224},
                     text_config={"num_hidden_layers": tl, "hidden_size": tw, "num_attention_heads": th,
                                  "intermediate_size": 4 * tw},
                     projection_dim=projection)
    with torch.device("meta"):
        return CLIPModel(cfg)


def sizes() -> dict:
    """Parameter counts and forward FLOPs (the UNet's per sample at 128, 256 and 512 px), on the meta device."""
    import comfy.ops
    import comfy.sd1_clip
    import comfy.taesd.taesd
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    from tinysd import SD15_UNET
    from texttune.trainers import promptnet
    unet = UNetModel(**SD15_UNET, device="meta", operations=comfy.ops.disable_weight_init, dtype=torch.float32)
    clip = comfy.sd1_clip.SDClipModel(device="meta", dtype=torch.float32)
    with torch.device("meta"):
        taesd = comfy.taesd.taesd.TAESD(latent_channels=4)
    net = promptnet.PromptNetModel(promptnet.sd2_base_config(), device="meta")
    towers = {name: clip_tower(*shape) for name, shape in REWARD_TOWERS.items()}

    def count(m):
        return sum(p.numel() for p in m.parameters())

    def unet_flops(px):
        return common.count_flops(lambda: unet(torch.randn(1, 4, px // 8, px // 8, device="meta"),
                                               torch.tensor([500.0], device="meta"),
                                               context=torch.randn(1, 77, 768, device="meta")))
    return {"unet_parameters": count(unet), "clip_l_parameters": count(clip),
            "taesd_decoder_parameters": count(taesd.taesd_decoder),
            "promptnet_release_parameters": count(net),
            **{f"{name}_parameters": count(m) for name, m in towers.items()},
            "openclip_vit_h14_vision_parameters": count(towers["clip_vit_h14"].vision_model),
            "clip_vit_h14_image_forward_flops": common.count_flops(
                lambda: towers["clip_vit_h14"].get_image_features(pixel_values=torch.zeros(1, 3, 224, 224, device="meta"))),
            "clip_l_forward_flops": common.count_flops(
                lambda: clip.transformer(torch.zeros(1, 77, dtype=torch.long, device="meta"), dtype=torch.float32)),
            **{f"unet_forward_flops_{px}px": unet_flops(px) for px in (128, 256, TARGET_PX)}}


def fit(rows: list[dict], value, size) -> dict:
    """value(row) = c + batch * (t + k * size(px)) through the first three probes (a fixed part, a per-
    sample part that does not grow with the image, e.g. the text encoder's, and one that does); the
    fourth probe read against it."""
    (a, b, d, check) = rows
    assert (a["batch"], b["batch"], d["batch"]) == (1, 2, 1) and a["px"] == b["px"] != d["px"]
    va, vb, vd = value(a), value(b), value(d)
    k = (vd - va) / (size(d["px"]) - size(a["px"]))
    t = (vb - va) - k * size(a["px"])
    c = va - t - k * size(a["px"])

    def predict(batch, px):
        return c + batch * (t + k * size(px))
    predicted = predict(check["batch"], check["px"])
    return {"predict": predict, "fixed": c, "per_sample": t, "per_sample_per_size": k,
            "check_probe_predicted": predicted, "check_probe_measured": value(check),
            "check_probe_error": round(predicted / value(check) - 1, 3)}


def estimate(name: str, rows: list[dict], s: dict) -> dict:
    """Memory and compute of trainer `name` at its node defaults on SD1.5 at TARGET_PX."""
    d = TRAINERS[name]
    batch = d["batch_size"]
    unet = {px: s[f"unet_forward_flops_{px}px"] for px in (128, 256, TARGET_PX)}
    flops = fit(rows, lambda r: r["step_flops"], lambda px: unet[px])
    peak = fit(rows, lambda r: r["iteration_peak_mb"] - r["gradients_mb"], lambda px: px * px)
    if name.startswith("reward_"):
        # checkpointed: autograd saves only the K calls' inputs in the forward; the peak comes in the
        # backward's recomputation, so the step's peak RAM itself is what is scaled. Where its fit does
        # not hold, the largest probe's peak is scaled by batch and pixels (nothing subtracted: high side)
        mem = peak
        if abs(peak["check_probe_error"]) <= 0.2:
            act_fp32_mb = peak["predict"](batch, TARGET_PX)
            memory_basis = "the fit of the step's peak RAM"
        else:
            largest = rows[3]
            act_fp32_mb = ((largest["iteration_peak_mb"] - largest["gradients_mb"]) * batch / largest["batch"]
                           * (TARGET_PX / largest["px"]) ** 2)
            memory_basis = (f"the largest probe's peak RAM scaled by batch and pixels (the fit of the peak missed "
                            f"the fourth probe by {peak['check_probe_error']:+.0%})")
    else:
        # what autograd saves is exactly c + batch * (t + k * px^2); the peak adds the backward's
        # transient buffers: scaled by the peak over the saved activations of the largest probe
        mem = fit(rows, lambda r: r["saved_for_backward_mb"], lambda px: px * px)
        largest = rows[3]
        saved_act = mem["predict"](largest["batch"], largest["px"]) - mem["fixed"]
        factor = max(1.0, (largest["iteration_peak_mb"] - largest["gradients_mb"]) / saved_act)
        act_fp32_mb = (mem["predict"](batch, TARGET_PX) - mem["fixed"]) * factor
        memory_basis = (f"autograd's saved activations (fitted; the fixed part is the frozen weights) times "
                        f"{factor:.2f}, the largest probe's peak RAM over its saved activations")
    frozen = {"unet_fp16_gb": s["unet_parameters"] * 2 / 2**30,
              "clip_l_fp16_gb": s["clip_l_parameters"] * 2 / 2**30}
    if name.startswith("reward_"):
        frozen["taesd_fp16_gb"] = s["taesd_decoder_parameters"] * 2 / 2**30
    trainable = rows[0]["trainable_parameters"]
    memory = {**{k: round(v, 3) for k, v in frozen.items()},
              "trainable_parameters": trainable,
              "trainable_fp32_with_gradient_and_adamw_gb": round(trainable * 16 / 2**30, 3),
              "activations_fp16_gb": round(act_fp32_mb / 2 / 1024, 3),
              "cuda_context_gb": CUDA_CONTEXT_GB}
    memory["total_gb"] = round(sum(v for k, v in memory.items() if k.endswith("_gb")), 2)
    step_flops = flops["predict"](batch, TARGET_PX)
    if name.startswith("reward_"):           # the probes sample only the K gradient steps; the rest: CFG, no grad
        step_flops += (d["sampling_steps"] - d["grad_steps"]) * 2 * batch * unet[TARGET_PX]
    sampling_step = 2 * unet[TARGET_PX]
    return {"defaults": d,
            "memory_basis": memory_basis,
            "peak_ram_fit_check_error": peak["check_probe_error"],
            "memory_fit": {"fixed_mb": round(mem["fixed"], 1), "per_sample_mb": round(mem["per_sample"], 1),
                           "per_sample_megapixel_mb": round(mem["per_sample_per_size"] * 2**20, 1),
                           "check_probe_predicted_mb": round(mem["check_probe_predicted"], 1),
                           "check_probe_measured_mb": round(mem["check_probe_measured"], 1),
                           "check_probe_error": mem["check_probe_error"]},
            "flops_fit": {"check_probe_predicted_tflop": round(flops["check_probe_predicted"] / 1e12, 3),
                          "check_probe_measured_tflop": round(flops["check_probe_measured"] / 1e12, 3),
                          "check_probe_error": flops["check_probe_error"]},
            "memory": memory,
            "step_tflops": round(step_flops / 1e12, 2),
            "step_in_sampling_step_equivalents": round(step_flops / sampling_step, 1),
            "run_in_sampling_step_equivalents": round(d["steps"] * step_flops / sampling_step)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trainers", default=",".join(TRAINERS))
    ap.add_argument("--threads", type=int, default=max(1, os.cpu_count() or 1))
    ap.add_argument("--reuse-probes", action="store_true",
                    help="take the probe rows from bench/results/sd15_budget.json (recount sizes, re-estimate)")
    ap.add_argument("--no-write", action="store_true")
    common.add_fresh_process_option(ap)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    common.redirect_folders()
    if common.answer_fresh_process(a, probe):      # one probe, for in_fresh_process
        return
    names = a.trainers.split(",")
    s = sizes()
    print("sizes:", json.dumps(s), flush=True)
    probes_run = {}
    if a.reuse_probes:
        with open(os.path.join(common.RESULTS, "sd15_budget.json"), encoding="utf-8") as f:
            earlier = json.load(f)
        rows = [r for r in earlier["rows"] if r["trainer"] in names]
        probes_run = {"probes_machine": earlier.get("probes_machine", earlier["machine"]),
                      "probes_command": earlier.get("probes_command", earlier["command"])}
    else:
        rows = run_probes(names, a.threads)
    estimates = {}
    for name in names:
        e = estimates[name] = estimate(name, [r for r in rows if r["trainer"] == name], s)
        m = e["memory"]
        print(f"{name:20s} batch {e['defaults']['batch_size']} at {TARGET_PX} px: ~{m['total_gb']} GB "
              f"(activations {m['activations_fp16_gb']} GB; fit checks: memory "
              f"{e['memory_fit']['check_probe_error']:+.1%}, FLOPs {e['flops_fit']['check_probe_error']:+.1%}); "
              f"{e['step_tflops']} TFLOP per step = {e['step_in_sampling_step_equivalents']} sampling steps; "
              f"{e['defaults']['steps']} steps = {e['run_in_sampling_step_equivalents']} sampling steps", flush=True)
    result = {"benchmark": "sd15_budget",
              "what": "estimated GPU memory and compute of each trainer with SD1.5 at its node defaults, fitted to "
                      "probes of the real step on SD1.5-size random-weight models on this CPU (see the docstring "
                      "for the assumptions)",
              "probes": PROBES, "target_px": TARGET_PX, "sizes": s, "rows": rows, "estimates": estimates,
              "machine": common.machine(), "command": common.command(), **probes_run}
    if not a.no_write:
        print("wrote", common.write_result("sd15_budget", result))


if __name__ == "__main__":
    main()
