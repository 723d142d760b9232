"""ProFusion's fusion sampling (trainers/fusion.py, nodes/fusion.py) on TinySD, in process.

The central check rebuilds research/methods.md §3.2 in ᾱ/DDPM space on the raw UNet, with its own
loop and the same noise draws, and compares the whole trajectory of the ComfyUI guider with it.
"""
import math
import os
from dataclasses import asdict

import pytest
import safetensors.torch
import torch

import comfy.k_diffusion.sampling
import comfy.sample
import comfy.samplers
import folder_paths
from comfy_extras.nodes_custom_sampler import SamplerCustomAdvanced
from comfy_extras.nodes_model_advanced import ModelSamplingDiscrete, ModelSamplingSD3, RescaleCFG
from nodes import KSampler
from texttune.nodes.fusion import ConceptPrompt, FusionGuider, KSamplerFusion
from texttune.trainers import fusion
from texttune.trainers.fusion import FusionSettings

CONCEPT = "fz-concept"
PROMPT = f"a photo of embedding:{CONCEPT} on a beach"
REFERENCE = "a photo of a toy on a beach"
CONCEPT_POSITIONS = [4, 5]          # <start> a photo of <vector 0> <vector 1> on a beach
NODE_DEFAULTS = asdict(FusionSettings())


@pytest.fixture(scope="module")
def models(tiny):
    emb_dir = folder_paths.get_folder_paths("embeddings")[0]
    vectors = torch.randn(2, tiny.WIDTH, generator=torch.Generator().manual_seed(7))
    safetensors.torch.save_file({"emb_params": vectors}, os.path.join(emb_dir, CONCEPT + ".safetensors"))
    return tiny.make_model(), tiny.make_clip([emb_dir])


@pytest.fixture(scope="module")
def conds(models):
    _, clip = models
    return {"positive": fusion.encode_concept(clip, PROMPT, f"embedding:{CONCEPT}"),
            "negative": encode(clip, ""), "reference": encode(clip, REFERENCE)}


def encode(clip, text):
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))


def v_prediction(model):
    return ModelSamplingDiscrete().patch(model, "v_prediction", False)[0]


def noise_for(seed=0, batch=1):
    return comfy.sample.prepare_noise(torch.zeros(batch, 4, 8, 8), seed)


def run_guider(model, conds, settings, sigmas, reference=True, seed=0, callback=None, batch=1, sampler="ddim"):
    guider = fusion.make_guider(model, conds["positive"], conds["negative"],
                                conds["reference"] if reference else None, settings)
    with torch.inference_mode():
        return guider.sample(noise_for(seed, batch), torch.zeros(batch, 4, 8, 8),
                             comfy.samplers.sampler_object(sampler), sigmas, callback=callback, seed=seed)


def ksampler_fusion(model, conds, reference=True, steps=4, scheduler="ddim_uniform", **kw):
    with torch.inference_mode():
        return KSamplerFusion.execute(model=model, seed=0, steps=steps, scheduler=scheduler,
                                      positive=conds["positive"], negative=conds["negative"],
                                      latent_image={"samples": torch.zeros(1, 4, 8, 8)}, denoise=1.0,
                                      reference=conds["reference"] if reference else None,
                                      **{**NODE_DEFAULTS, **kw})[0]["samples"]


def relative_error(a, b) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp(min=1.0))


# ---------------------------------------------------------------------------------------------
# the update (pure)
def test_coefficients_are_the_ddpm_space_equations_in_sigma_space():
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        sigma = torch.rand((), generator=g, dtype=torch.float64) * 20 + 0.03
        sigma_next = sigma * torch.rand((), generator=g, dtype=torch.float64)
        eta = float(torch.rand((), generator=g))
        a, b = 1 / (1 + sigma ** 2), 1 / (1 + sigma_next ** 2)
        s2 = eta ** 2 * (1 - b) / (1 - a) * (1 - a / b)
        c_eps = s2 * (1 - a).sqrt() / (1 - b)                                   # methods.md §3.2, on x_ddpm
        c_noise = s2.sqrt() * ((1 - a) * (2 - 2 * b - s2)).sqrt() / (1 - b)
        got_eps, got_noise = fusion.fusion_coefficients(sigma, sigma_next, eta)
        # x_ddpm = sqrt(a)·x_k and eps is the same, so the x_k coefficients are the DDPM ones over sqrt(a)
        assert torch.allclose(got_eps, c_eps / a.sqrt(), rtol=1e-10, atol=0)
        assert torch.allclose(got_noise, c_noise / a.sqrt(), rtol=1e-10, atol=1e-14)


def test_a_full_eta_pass_is_an_ancestral_step_then_renoise():
    for sigma, sigma_next in [(14.6, 9.0), (3.0, 1.2), (0.5, 0.03)]:
        sigma, sigma_next = torch.tensor(sigma, dtype=torch.float64), torch.tensor(sigma_next, dtype=torch.float64)
        down, up = comfy.k_diffusion.sampling.get_ancestral_step(sigma, sigma_next, eta=1.0)
        c_eps, c_noise = fusion.fusion_coefficients(sigma, sigma_next, 1.0)
        assert torch.allclose(c_eps, sigma - down)                              # x + (σ_down − σ)·ε
        assert torch.allclose(c_noise ** 2, up ** 2 + sigma ** 2 - sigma_next ** 2)   # + σ_up·z1 + √Δ·z2


def test_the_last_step_is_the_limit_and_predicts_then_renoises():
    sigma = torch.tensor(0.8, dtype=torch.float64)
    for eta in (0.3, 1.0):
        at_zero = fusion.fusion_coefficients(sigma, torch.tensor(0.0, dtype=torch.float64), eta)
        near = fusion.fusion_coefficients(sigma, torch.tensor(1e-7, dtype=torch.float64), eta)
        assert all(torch.allclose(p, q, atol=1e-9) for p, q in zip(at_zero, near))
    x, d, z = torch.randn(3, 2, 4, 4, dtype=torch.float64).unbind(0)
    out = fusion.fusion_update(x, d, sigma, torch.tensor(0.0, dtype=torch.float64), 1.0, z)
    assert torch.allclose(out, d + sigma * z)


def test_fusion_window_counts_steps():
    assert list(fusion.fusion_window(4, 0.0, 1.0)) == [0, 1, 2, 3]
    assert list(fusion.fusion_window(4, 0.0, 0.5)) == [0, 1]
    assert list(fusion.fusion_window(10, 0.3, 0.7)) == [3, 4, 5, 6]
    assert list(fusion.fusion_window(4, 0.55, 1.0)) == [3]
    assert list(fusion.fusion_window(3, 0.0, 0.5)) == [0, 1]          # step 1 starts at 1/3 < 0.5
    assert list(fusion.fusion_window(4, 0.9, 1.0)) == []


def test_guidance_evaluates_only_predictions_it_uses():
    s = FusionSettings()
    assert fusion.refinement_guidance(s, True).names == ["positive", "negative", "reference"]
    assert fusion.refinement_guidance(s, False).names == ["positive", "negative"]
    assert fusion.refinement_guidance(FusionSettings(omega_2=0.0), True).names == ["positive", "negative"]
    assert fusion.refinement_guidance(FusionSettings(omega_1=1.0, omega_2=0.0), True).names == ["positive"]
    assert fusion.fusion_guidance(s).names == ["concept", "negative"]
    assert fusion.fusion_guidance(FusionSettings(omega_f=1.0)).names == ["concept"]
    assert fusion.fusion_guidance(FusionSettings(omega_f=0.0)).names == ["negative"]
    pred = {"positive": torch.tensor(2.0), "negative": torch.tensor(1.0), "reference": torch.tensor(5.0)}
    assert float(fusion.refinement_guidance(FusionSettings(omega_1=3.0, omega_2=0.5), True).combine(pred)) == 6.0
    assert float(fusion.refinement_guidance(FusionSettings(omega_1=0.75, omega_2=0.25), True).combine(pred)) == 2.75


@pytest.mark.parametrize("bad, message", [
    (dict(eta=1.5), "eta 1.5 is outside"), (dict(eta=-0.1), "eta -0.1 is outside"),
    (dict(fusion_passes=-1), "fusion_passes -1"),
    (dict(fusion_start_percent=0.6, fusion_end_percent=0.4), "fusion_start_percent must be below"),
    (dict(omega_1=float("nan")), "omega_1 is nan")])
def test_bad_settings_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        fusion.check_settings(FusionSettings(**bad))


# ---------------------------------------------------------------------------------------------
# against the equations in DDPM space
def ddpm_reference(model, kind, conds, ts, t_end, noise, s: FusionSettings, seed):
    """methods.md §3.2 on the raw UNet in ᾱ space: x_ddpm before each step's DDIM step, then the end.
    t_end None: the last step goes to ᾱ = 1 (sigma 0)."""
    unet = model.model.diffusion_model
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2   # SD1's schedule
    abar = torch.cumprod(1 - betas, 0)
    text = {k: v[0][0] for k, v in conds.items()}
    text["concept"] = text["positive"].clone()
    text["concept"][:, CONCEPT_POSITIONS] *= s.gamma                                # S*·γ at the output

    def eps(x, t, name):
        out = unet(x.float(), torch.tensor([float(t)]), context=text[name]).double()
        a = abar[t]
        return a.sqrt() * out + (1 - a).sqrt() * x if kind == "v" else out    # ε from v: √ᾱ·v + √(1−ᾱ)·x

    gen = torch.Generator().manual_seed(seed + 1)
    window = fusion.fusion_window(len(ts), s.fusion_start_percent, s.fusion_end_percent)
    x, trajectory = noise.double(), []
    for i, t in enumerate(ts):
        a = abar[t]
        if i + 1 < len(ts):
            b = abar[ts[i + 1]]
        else:
            b = abar[t_end] if t_end is not None else torch.tensor(1.0, dtype=torch.float64)
        if i in window:
            sig2 = s.eta ** 2 * (1 - b) / (1 - a) * (1 - a / b)
            for _ in range(s.fusion_passes):
                z = torch.randn(x.shape, generator=gen).double()
                e_u = eps(x, t, "negative")
                e_f = e_u + s.omega_f * (eps(x, t, "concept") - e_u)
                x = x - e_f * sig2 * (1 - a).sqrt() / (1 - b) \
                    + sig2.sqrt() * z * ((1 - a) * (2 - 2 * b - sig2)).sqrt() / (1 - b)
        e_u = eps(x, t, "negative")
        e = e_u + s.omega_1 * (eps(x, t, "positive") - e_u) + s.omega_2 * (eps(x, t, "reference") - e_u)
        trajectory.append(x)
        x0 = (x - (1 - a).sqrt() * e) / a.sqrt()
        x = b.sqrt() * x0 + (1 - b).sqrt() * e                                  # DDIM, η = 0
    return trajectory + [x]


@pytest.mark.parametrize("kind", ["eps", "v"])
@pytest.mark.parametrize("ends_at_zero", [False, True], ids=["ends-above-0", "ends-at-0"])
def test_trajectory_matches_the_ddpm_space_equations(models, conds, kind, ends_at_zero):
    model, _ = models
    model = v_prediction(model) if kind == "v" else model
    ms = model.get_model_object("model_sampling")
    ts = [999, 749, 499, 249]
    # The official ε formula is 0/0 at ᾱ = 1, so with a last step to sigma 0 the fusion stage stays off it
    # (its limit there is tested above); ending above 0, every step fuses, with 2 passes.
    s = FusionSettings(omega_1=3.0, omega_2=2.0, omega_f=4.0, gamma=0.6, fusion_passes=1 if ends_at_zero else 2,
                       eta=1.0 if ends_at_zero else 0.7, fusion_end_percent=0.75 if ends_at_zero else 1.0)
    t_end = None if ends_at_zero else 49
    sigmas = torch.cat([ms.sigmas[ts], torch.zeros(1) if ends_at_zero else ms.sigmas[[t_end]]])
    seen = []
    out = run_guider(model, conds, s, sigmas, seed=3, callback=lambda i, d, x, n: seen.append(x.clone()))
    with torch.no_grad():
        expected = ddpm_reference(model, kind, conds, ts, t_end, noise_for(3), s, seed=3)
    abar = 1 / (1 + sigmas.double() ** 2)
    end = model.model.process_latent_in(out)                   # the guider returns the VAE's latent scale
    ours = [x.double() * abar[i].sqrt() for i, x in enumerate(seen + [end])]
    assert len(ours) == len(expected) == 5
    errors = [relative_error(a, b) for a, b in zip(ours, expected)]
    assert max(errors) < 1e-4, errors
    assert not torch.allclose(expected[1], expected[2])                         # the trajectory moves


# ---------------------------------------------------------------------------------------------
# against the core sampler
def test_without_fusion_it_is_exactly_core_cfg_with_ddim(models, conds):
    """ω2 = 0 and no fusion passes leave ε_∅ + ω1(ε_c − ε_∅) and a DDIM step: the same calc_cond_batch
    call with the same batch order, the same arithmetic, the same step as core Euler/DDIM. So the result
    is bit-identical, not just close."""
    model, _ = models
    settings = FusionSettings(omega_1=5.0, omega_2=0.0, fusion_passes=0)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", 6)
    ours = run_guider(model, conds, settings, sigmas, reference=True, batch=2)
    core = comfy.samplers.CFGGuider(model)
    core.set_conds(conds["positive"], conds["negative"])
    core.set_cfg(5.0)
    with torch.inference_mode():
        theirs = core.sample(noise_for(0, 2), torch.zeros(2, 4, 8, 8), comfy.samplers.sampler_object("ddim"),
                             sigmas, seed=0)
    assert torch.equal(ours, theirs)

    node = ksampler_fusion(model, conds, steps=5, scheduler="karras", omega_1=5.0, omega_2=0.0, fusion_passes=0)
    with torch.inference_mode():
        core_node = KSampler().sample(model, 0, 5, 5.0, "ddim", "karras", conds["positive"], conds["negative"],
                                      {"samples": torch.zeros(1, 4, 8, 8)})[0]["samples"]
    assert torch.equal(node, core_node)


def test_guider_in_core_sampler_custom_advanced_equals_the_ksampler_node(models, conds):
    model, _ = models
    guider = FusionGuider.execute(model=model, positive=conds["positive"], negative=conds["negative"],
                                  reference=conds["reference"], **NODE_DEFAULTS)[0]
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "ddim_uniform", 4)
    from comfy_extras.nodes_custom_sampler import Noise_RandomNoise
    with torch.inference_mode():
        out = SamplerCustomAdvanced.execute(Noise_RandomNoise(0), guider, comfy.samplers.sampler_object("euler"),
                                            sigmas, {"samples": torch.zeros(1, 4, 8, 8)})[0]["samples"]
    assert torch.equal(out, ksampler_fusion(model, conds, steps=4))


@pytest.mark.parametrize("kind", ["eps", "v"])
def test_eps_and_v_prediction_models_sample(models, conds, kind):
    model, _ = models
    model = v_prediction(model) if kind == "v" else model
    before = conds["positive"][0][0].clone()
    fused = ksampler_fusion(model, conds)
    plain = ksampler_fusion(model, conds, omega_2=0.0, fusion_passes=0)
    assert fused.shape == (1, 4, 8, 8) and torch.isfinite(fused).all()
    assert relative_error(fused, plain) > 1e-3                                  # the fusion stage did something
    assert torch.equal(conds["positive"][0][0], before)                         # inputs are not changed


# ---------------------------------------------------------------------------------------------
# cost
def counting(model):
    """A clone of `model` that records (sigma, batch size) of every UNet call."""
    calls = []

    def wrapper(apply_model, args):
        calls.append((round(float(args["timestep"][0]), 4), args["input"].shape[0]))
        return apply_model(args["input"], args["timestep"], **args["c"])
    m = model.clone()
    m.set_model_unet_function_wrapper(wrapper)
    return m, calls


@pytest.mark.parametrize("reference", [True, False], ids=["with-reference", "without-reference"])
def test_model_evaluations_per_step(models, conds, reference):
    model, calls = counting(models[0])
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "ddim_uniform", 4)
    run_guider(model, conds, FusionSettings(fusion_end_percent=0.5), sigmas, reference=reference)
    per_step = {}
    for sigma, batch in calls:
        per_step.setdefault(sigma, []).append(batch)
    assert [round(float(s), 4) for s in sigmas[:-1]] == list(per_step)
    refine = 3 if reference else 2
    # inside the window: one batched call for the fusion pass (∅, concept·γ), one for the refinement
    assert list(per_step.values()) == [[2, refine], [2, refine], [refine], [refine]]
    assert [sum(v) for v in per_step.values()] == [refine + 2, refine + 2, refine, refine]


def test_reference_of_another_token_length_is_padded_like_comfyui(models, conds):
    """A reference longer than 77 tokens is batched with the 77-token prompts (ComfyUI repeats the shorter
    context); the result is what evaluating every prompt on its own gives."""
    model, clip = models
    long_conds = {**conds, "reference": encode(clip, "a photo of a small toy on a sunny beach, " * 8)}
    assert long_conds["reference"][0][0].shape[1] == 154
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "ddim_uniform", 3)
    counted, calls = counting(model)
    batched = run_guider(counted, long_conds, FusionSettings(), sigmas)
    assert [b for _, b in calls] == [2, 3] * 3

    def one_by_one(args):
        return [comfy.samplers.calc_cond_batch(args["model"], [c], args["input"], args["sigma"],
                                               args["model_options"])[0] for c in args["conds"]]
    alone = model.clone()
    alone.set_model_sampler_calc_cond_batch_function(one_by_one)
    assert relative_error(batched, run_guider(alone, long_conds, FusionSettings(), sigmas)) < 1e-5


def test_noise_mask_keeps_the_unmasked_latent(models, conds):
    model, _ = models
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4] = 1.0                                                         # denoise the left half only
    with torch.inference_mode():
        out = KSamplerFusion.execute(model=model, seed=0, steps=4, scheduler="normal", positive=conds["positive"],
                                     negative=conds["negative"], reference=conds["reference"],
                                     latent_image={"samples": latent, "noise_mask": mask}, denoise=1.0,
                                     **NODE_DEFAULTS)[0]["samples"]
    assert torch.allclose(out[..., 4:], latent[..., 4:], atol=1e-4)
    assert not torch.allclose(out[..., :4], latent[..., :4], atol=1e-1)


# ---------------------------------------------------------------------------------------------
# the concept in the prompt
def test_concept_positions_of_embeddings_and_words(models):
    _, clip = models
    assert fusion.concept_positions(clip, PROMPT, f"embedding:{CONCEPT}") == tuple(CONCEPT_POSITIONS)
    assert fusion.concept_positions(clip, "a sks dog and a sks dog", "sks dog") == (2, 3, 6, 7)
    assert fusion.concept_positions(clip, f"(embedding:{CONCEPT}:1.2) in snow", f"embedding:{CONCEPT}") == (1, 2)
    marked = ConceptPrompt.execute(clip, PROMPT, f" embedding:{CONCEPT} ")[0]
    assert marked[0][1][fusion.CONCEPT_KEY]["positions"] == tuple(CONCEPT_POSITIONS)
    assert torch.equal(marked[0][0], encode(clip, PROMPT)[0][0])             # CLIP Text Encode's tensor
    scaled = fusion.concept_conditioning(marked, 0.5)
    assert torch.equal(scaled[0][0][:, CONCEPT_POSITIONS], marked[0][0][:, CONCEPT_POSITIONS] * 0.5)
    others = [i for i in range(77) if i not in CONCEPT_POSITIONS]
    assert torch.equal(scaled[0][0][:, others], marked[0][0][:, others])
    assert fusion.CONCEPT_KEY not in scaled[0][1]


def test_sdxl_concept_in_both_encoders_and_sampling(tiny):
    """SDXL: the concept stands at the same positions for CLIP-L and CLIP-G; the scaled rows span both
    encoders' features; the model's pooled conditioning goes through."""
    from test_integration_sdxl_text import tiny_sdxl_clip, tiny_sdxl_model
    clip, model = tiny_sdxl_clip(tiny), tiny_sdxl_model(tiny)
    with torch.inference_mode():
        positive = ConceptPrompt.execute(clip, "a photo of a sks toy on a beach", "sks toy")[0]
        xl = {"positive": positive, "negative": encode(clip, ""), "reference": encode(clip, "a photo of a toy")}
    assert positive[0][1][fusion.CONCEPT_KEY]["positions"] == (5, 6)             # <start> a photo of a sks toy
    scaled = fusion.concept_conditioning(positive, 0.5)[0][0]
    assert scaled.shape[-1] == 96 and torch.equal(scaled[:, 5:7], positive[0][0][:, 5:7] * 0.5)
    out = ksampler_fusion(model, xl, steps=3)
    assert out.shape == (1, 4, 8, 8) and torch.isfinite(out).all()


@pytest.mark.parametrize("text, concept, message", [
    ("a photo of a dog", f"embedding:{CONCEPT}", "does not contain the concept"),
    (PROMPT, "embedding:no-such-word", r"no-such-word.safetensors \(or .pt\) in"),
    (PROMPT, "   ", "The concept is empty")])
def test_concept_errors(models, text, concept, message):
    _, clip = models
    with pytest.raises(ValueError, match=message):
        ConceptPrompt.execute(clip, text, concept)


# ---------------------------------------------------------------------------------------------
# bad input
def test_bad_inputs_fail_clearly(models, conds):
    model, clip = models
    with pytest.raises(ValueError, match="eta 1.2 is outside"):
        ksampler_fusion(model, conds, eta=1.2)
    with pytest.raises(ValueError, match="window .0.5, 0.5. is empty"):
        ksampler_fusion(model, conds, fusion_start_percent=0.5, fusion_end_percent=0.5)
    plain = {**conds, "positive": encode(clip, PROMPT)}
    with pytest.raises(ValueError, match="does not say where the concept is"):
        ksampler_fusion(model, plain)
    assert torch.isfinite(ksampler_fusion(model, plain, gamma=1.0)).all()      # γ = 1 needs no mark
    assert torch.isfinite(ksampler_fusion(model, plain, fusion_passes=0)).all()  # nor does no fusion stage
    flow = ModelSamplingSD3().patch(model, 3.0)[0]
    with pytest.raises(ValueError, match="flow matching"):
        ksampler_fusion(flow, conds)
    with pytest.raises(ValueError, match="CFG patches"):
        ksampler_fusion(RescaleCFG().patch(model, 0.7)[0], conds)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", 3)
    with pytest.raises(ValueError, match="takes the SAMPLER 'ddim'.*sample_dpmpp_2m"):
        run_guider(model, conds, FusionSettings(), sigmas, sampler="dpmpp_2m")


def test_every_input_has_a_tooltip():
    for node in (ConceptPrompt, FusionGuider, KSamplerFusion):
        schema = node.define_schema()
        assert schema.node_id.startswith("TextTune") and schema.category == "TextTune/sampling"
        missing = [i.id for i in schema.inputs if not i.tooltip]
        assert not missing, f"{schema.node_id}: no tooltip on {missing}"
        assert os.path.isfile(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "web",
                                           "docs", schema.node_id + ".md"))


def test_passes_that_change_nothing_are_not_evaluated(models, conds):
    """η = 0 makes a fusion pass the identity (nothing evaluated); ω_f = 1 needs no ∅ in the pass."""
    sigmas = comfy.samplers.calculate_sigmas(models[0].get_model_object("model_sampling"), "ddim_uniform", 2)
    model, calls = counting(models[0])
    run_guider(model, conds, FusionSettings(eta=0.0), sigmas)
    assert [b for _, b in calls] == [3, 3]
    calls.clear()
    run_guider(model, conds, FusionSettings(omega_f=1.0), sigmas)
    assert [b for _, b in calls] == [1, 3, 1, 3]
