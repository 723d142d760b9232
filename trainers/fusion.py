"""ProFusion's Fusion Sampling (Zhou et al. 2023; research/methods.md §3.2) in ComfyUI's sigma space.

The official pipeline works in DDPM space at DDIM timesteps t → t−1 with a = ᾱ_t, b = ᾱ_{t−1}:

    fusion pass (× fusion_passes), s² = η²·(1−b)/(1−a)·(1 − a/b), ε_f = ε_∅ + ω_f(ε_γ − ε_∅):
        x ← x − ε_f · s²·√(1−a)/(1−b) + s·z·√((1−a)(2 − 2b − s²))/(1−b)
    refinement: ε̂ = ε_∅ + ω1(ε_c − ε_∅) + ω2(ε_ref − ε_∅), then the scheduler's DDIM step with the
        pipeline's `eta` (default 0: deterministic; refine_eta η only enters the fusion passes)

ComfyUI samples x = x0 + σ·ε. With ᾱ = 1/(1+σ²), x_ddpm = √ᾱ·x and √((1−ᾱ)/ᾱ) = σ. Write σ = σ_i,
σ' = σ_{i+1} (the next sigma of whatever schedule is given), Δ = σ² − σ'². Then
s² = η²·σ'²Δ / (σ²(1+σ'²)), and dividing both coefficients by √a gives the update of x:

    fusion pass:  x ← x − η²·(Δ/σ)·ε_f + η·√Δ·√(2 − η²Δ/σ²)·z,     ε_f = (x − D_f)/σ
    refinement:   x ← x + (σ' − σ)·(x − D̂)/σ                        (DDIM with η = 0 = Euler in σ)

where D are the model's denoised predictions (guidance is affine, so mixing D with weights ω is the same
as mixing ε). With η = 1 a fusion pass is k-diffusion's ancestral step to σ' (σ_down = σ'²/σ) followed
by re-noising back to σ (+√Δ·z): noise variance σ'²Δ/σ² + Δ = (σ⁴ − σ'⁴)/σ². At σ' = 0 (the last step)
the formula is the limit of the official one (whose 0/0 form is singular there):
x ← x − η²σ·ε_f + ησ√(2−η²)·z, i.e. for η = 1 "predict x0, re-noise to σ". Only the model's noise parameterisation
x = x0 + σ·ε is used, so eps, v-prediction (and EDM, x0) models and any scheduler work; flow models
(x = (1−σ)x0 + σε) do not and are refused.

Pure part: `FusionSettings`, the coefficients, `Guidance` (which predictions a stage needs and how they
mix) and the loop `sample`. ComfyUI part: marking the concept in a prompt (`encode_concept`), the
γ-scaled concept conditioning, and `FusionGuider`, a CFGGuider that runs the loop (see its docstring).
With a PromptNet (trainers/promptnet.py), the concept word is PromptNet's S*, recomputed from the
current x_t and t before every model evaluation of the concept prompts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import torch
from tqdm.auto import trange

import comfy.k_diffusion.sampling
import comfy.model_management
import comfy.model_sampling
import comfy.sample
import comfy.samplers
import comfy.utils
import folder_paths
import latent_preview

from . import promptnet as promptnet_lib
from . import sampling

CONCEPT_KEY = "texttune_concept"   # CONDITIONING extras key: {"positions", "concept", "text", "clip"}
ORDER = ("concept", "positive", "negative", "reference")   # cond before uncond, as the core guider


# ---------------------------------------------------------------------------------------------
# settings
@dataclass(frozen=True)
class FusionSettings:
    """The settings, named as the nodes' inputs."""
    omega_1: float = 7.0               # ω1: guidance of the prompt with the concept (refinement)
    omega_2: float = 5.0               # ω2: guidance of the reference prompt (refinement)
    omega_f: float = 7.0               # ω_f: guidance of the γ-scaled concept prompt (fusion stage)
    gamma: float = 0.6                 # γ: scale of the concept tokens' output embeddings (fusion stage)
    fusion_passes: int = 1             # per step (the pipeline's refine_step); 0: no fusion stage
    eta: float = 1.0                   # η of the fusion passes' stochastic step (refine_eta)
    fusion_start_percent: float = 0.0  # the fusion stage runs on the steps i with start <= i/steps < end
    fusion_end_percent: float = 1.0


def check_settings(s: FusionSettings) -> FusionSettings:
    for f in fields(s):
        value = getattr(s, f.name)
        if not math.isfinite(value):
            raise ValueError(f"{f.name} is {value}: give a finite number.")
    if not 0.0 <= s.eta <= 1.0:
        raise ValueError(f"eta {s.eta} is outside [0, 1]: it scales the DDIM variance of the fusion passes "
                         f"(1: a full stochastic DDPM step, ProFusion's default; 0: the passes do nothing).")
    if s.fusion_passes < 0 or int(s.fusion_passes) != s.fusion_passes:
        raise ValueError(f"fusion_passes {s.fusion_passes} must be a whole number >= 0 (ProFusion uses 1; 0 turns "
                         f"the fusion stage off).")
    if not 0.0 <= s.fusion_start_percent < s.fusion_end_percent <= 1.0:
        raise ValueError(f"The fusion step window [{s.fusion_start_percent}, {s.fusion_end_percent}] is empty or "
                         f"outside [0, 1]: fusion_start_percent must be below fusion_end_percent (0 and 1: every "
                         f"step; 0 and 0.5: the first half). To run no fusion passes, set fusion_passes to 0.")
    return replace(s, fusion_passes=int(s.fusion_passes))


def fusion_window(steps: int, start: float, end: float) -> range:
    """Indices i of the steps whose start i/steps lies in [start, end)."""
    first = max(0, math.ceil(start * steps - 1e-9))
    stop = min(steps, math.ceil(end * steps - 1e-9))
    return range(first, max(first, stop))


# ---------------------------------------------------------------------------------------------
# the update in sigma space
def fusion_coefficients(sigma, sigma_next, eta: float):
    """(c_eps, c_noise) of one fusion pass x ← x − c_eps·ε_f + c_noise·z from sigma to sigma_next."""
    delta = sigma ** 2 - sigma_next ** 2
    c_eps = eta ** 2 * delta / sigma
    c_noise = eta * delta.clamp(min=0).sqrt() * (2 - eta ** 2 * delta / sigma ** 2).clamp(min=0).sqrt()
    return c_eps, c_noise


def fusion_update(x, denoised, sigma, sigma_next, eta: float, z):
    c_eps, c_noise = fusion_coefficients(sigma, sigma_next, eta)
    return x - c_eps * ((x - denoised) / sigma) + c_noise * z


@dataclass(frozen=True)
class Guidance:
    """D_∅ + Σ w·(D_name − D_∅) over the terms with w ≠ 0. The unconditional prediction ("negative") is
    left out when its own weight 1 − Σw is 0: then the mix is Σ w·D_name."""
    terms: tuple          # ((cond name, weight), ...)
    uses_base: bool

    @classmethod
    def of(cls, *terms) -> "Guidance":
        kept = tuple((n, float(w)) for n, w in terms if w != 0)
        base_weight = 1.0 - sum(w for _, w in kept)
        return cls(kept, not math.isclose(base_weight, 0.0, abs_tol=1e-9))

    @property
    def names(self) -> list[str]:
        names = {n for n, _ in self.terms} | ({"negative"} if self.uses_base else set())
        return [n for n in ORDER if n in names]

    def combine(self, pred: dict):
        if self.uses_base:
            out = pred["negative"]
            for name, w in self.terms:
                out = out + (pred[name] - pred["negative"]) * w
            return out
        out = None
        for name, w in self.terms:
            out = pred[name] * w if out is None else out + pred[name] * w
        return out


def refinement_guidance(s: FusionSettings, has_reference: bool) -> Guidance:
    return Guidance.of(("positive", s.omega_1), ("reference", s.omega_2 if has_reference else 0.0))


def fusion_guidance(s: FusionSettings) -> Guidance:
    return Guidance.of(("concept", s.omega_f))


def fusion_active(s: FusionSettings) -> bool:
    return s.fusion_passes > 0 and s.eta > 0        # η = 0 makes a pass the identity: nothing to evaluate


# ---------------------------------------------------------------------------------------------
# the loop
@torch.no_grad()
def sample(refine, fuse, x, sigmas, settings: FusionSettings, noise_sampler, callback=None, disable_pbar=True):
    """Fusion sampling of `x` (at sigmas[0]) down the schedule `sigmas`.

    refine(x, sigma) -> D̂ and fuse(x, sigma) -> D_f are the guided denoised predictions of the two
    stages (sigma as a [batch] tensor); noise_sampler(sigma, sigma_next) draws z; callback(i, D̂, x,
    steps) is called once per step before its DDIM step, as the core samplers do (and, unless
    disable_pbar, a console progress bar)."""
    steps = len(sigmas) - 1
    window = fusion_window(steps, settings.fusion_start_percent, settings.fusion_end_percent) \
        if fusion_active(settings) else range(0)
    s_in = x.new_ones([x.shape[0]])
    for i in trange(steps, disable=disable_pbar):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        if i in window:
            for _ in range(settings.fusion_passes):
                z = noise_sampler(sigma, sigma_next)
                x = fusion_update(x, fuse(x, sigma * s_in), sigma, sigma_next, settings.eta, z)
        denoised = refine(x, sigma * s_in)
        if callback is not None:
            callback(i, denoised, x, steps)
        x = sampling.ddim_step(x, denoised, sigma, sigma_next)
    return x


# ---------------------------------------------------------------------------------------------
# the concept in a prompt
def _same_token(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape \
            and torch.equal(a, b)
    return a == b


def _occurrences(rows: list, wanted: list) -> list[int]:
    """Positions (in the encoded sequence: rows one after another) of every occurrence of `wanted`."""
    found, offset = [], 0
    for row in rows:
        toks = [t[0] for t in row]
        for i in range(len(toks) - len(wanted) + 1):
            if all(_same_token(toks[i + j], w) for j, w in enumerate(wanted)):
                found.extend(offset + i + j for j in range(len(wanted)))
        offset += len(row)
    return found


def _words_of(clip, text: str) -> dict:
    """{encoder key: the tokens of `text` without start, end and padding}."""
    tokens = clip.tokenize(text, return_word_ids=True)
    return {k: [t[0] for row in rows for t in row if t[2] != 0] for k, rows in tokens.items()}


def _check_embeddings(clip, concept: str):
    for word in concept.split():
        if "embedding:" not in word:
            continue
        if not any(isinstance(t, torch.Tensor) for toks in _words_of(clip, word).values() for t in toks):
            where = ", ".join(folder_paths.get_folder_paths("embeddings"))
            name = word.split("embedding:", 1)[1].strip("()").split(":")[0]
            raise ValueError(f"The concept word {word!r} names an embedding that was not found: put "
                             f"{name}.safetensors (or .pt) in {where}, or connect the CLIP output of the TextTune "
                             f"trainer or Load TextBoost node that made it.")


def concept_positions(clip, text: str, concept: str) -> tuple:
    """Positions of the concept's tokens (an `embedding:<name>` word gives one position per vector) in
    the conditioning CLIP Text Encode makes of `text`; every occurrence counts."""
    concept = " ".join(str(concept).split())
    if not concept:
        raise ValueError("The concept is empty: write the word(s) of the prompt that name the concept, e.g. "
                         "embedding:my-subject.")
    _check_embeddings(clip, concept)
    wanted = _words_of(clip, concept)
    if not any(wanted.values()):
        raise ValueError(f"The concept {concept!r} gives no tokens: write the word(s) that name it, e.g. "
                         f"embedding:my-subject.")
    prompt = clip.tokenize(text, return_word_ids=True)
    positions = None
    for key, rows in prompt.items():
        found = tuple(_occurrences(rows, wanted[key]))
        if not found:
            raise ValueError(f"The prompt {text!r} does not contain the concept {concept!r}: write the concept "
                             f"into the prompt (e.g. 'a photo of {concept} on a beach').")
        if positions is not None and found != positions:
            raise ValueError(f"The concept {concept!r} stands at different positions for the encoders of this "
                             f"CLIP ({key}): {found} and {positions}.")
        positions = found
    return positions


def encode_concept(clip, text: str, concept: str) -> list:
    """CONDITIONING of `text` as CLIP Text Encode makes it, marked with where the concept stands (and
    with the CLIP and the text, so a PromptNet sampler can encode it again with S* in it)."""
    positions = concept_positions(clip, text, concept)
    conditioning = clip.encode_from_tokens_scheduled(clip.tokenize(text))
    mark = {"positions": positions, "concept": " ".join(concept.split()), "text": text, "clip": clip}
    return [[c, {**extras, CONCEPT_KEY: mark}] for c, extras in conditioning]


def concept_conditioning(positive: list, gamma: float) -> list:
    """The positive CONDITIONING with the concept tokens' output embeddings times γ (ProFusion's S*·γ)."""
    out, marked = [], 0
    for cond, extras in positive:
        mark = extras.get(CONCEPT_KEY)
        extras = {k: v for k, v in extras.items() if k != CONCEPT_KEY}
        if mark is not None:
            positions = list(mark["positions"])
            if max(positions) >= cond.shape[1]:
                raise ValueError(f"The positive conditioning has {cond.shape[1]} tokens but its concept mark "
                                 f"points at token {max(positions)}: it was changed after Concept Prompt "
                                 f"(TextTune) in a way that moved the tokens. Concat other conditioning after it.")
            cond = cond.clone()
            cond[:, positions] = cond[:, positions] * gamma
            marked += 1
        out.append([cond, extras])
    if not marked and gamma != 1.0:
        raise ValueError("The positive conditioning does not say where the concept is, so gamma cannot scale it: "
                         "encode the prompt with the Concept Prompt (TextTune) node, or set gamma to 1.")
    return out


# ---------------------------------------------------------------------------------------------
# ComfyUI: the guider that owns the loop
def check_model(model_patcher):
    ms = model_patcher.get_model_object("model_sampling")
    if not isinstance(ms, comfy.model_sampling.EPS):
        raise ValueError(f"Fusion sampling steps in the x = x0 + sigma*noise space of eps and v-prediction "
                         f"models (SD1, SD2, SDXL); this model samples as {type(ms).__name__} (e.g. flow "
                         f"matching), which it does not support.")


def check_sampler(sampler):
    if isinstance(sampler, comfy.samplers.KSAMPLER) \
            and sampler.sampler_function is comfy.k_diffusion.sampling.sample_euler \
            and not sampler.extra_options:
        return
    name = getattr(getattr(sampler, "sampler_function", None), "__name__", type(sampler).__name__)
    raise ValueError(f"Fusion sampling makes its own steps (fusion passes, then a DDIM step), so it takes the "
                     f"SAMPLER 'ddim' (or 'euler', the same deterministic step) from KSamplerSelect; got {name}.")


CFG_PATCHES = ("sampler_cfg_function", "sampler_pre_cfg_function", "sampler_post_cfg_function")


def check_cfg_patches(model_options: dict):
    found = [k for k in CFG_PATCHES if model_options.get(k)]
    if found:
        raise ValueError(f"The MODEL carries CFG patches ({', '.join(found)}, set by nodes such as RescaleCFG, "
                         f"PerpNeg or SAG) made for two-prompt CFG; fusion sampling mixes up to three predictions "
                         f"and cannot apply them. Sample with the MODEL before those nodes.")


def _calc(model, conds, x, timestep, model_options):
    if "sampler_calc_cond_batch_function" in model_options:
        args = {"conds": conds, "input": x, "sigma": timestep, "model": model, "model_options": model_options}
        return model_options["sampler_calc_cond_batch_function"](args)
    return comfy.samplers.calc_cond_batch(model, conds, x, timestep, model_options)


class _FusionPrediction:
    """The fusion stage's prediction, callable like a guider (for the core inpainting wrapper)."""

    def __init__(self, guider):
        self.guider, self.inner_model = guider, guider.inner_model

    def __call__(self, x, sigma, model_options={}, seed=None):
        return self.guider.predict_fusion(x, sigma, model_options)


class _FusionLoop(comfy.samplers.Sampler):
    """What runs in place of the SAMPLER: noise scaling, inpainting masks and model options as the core
    KSAMPLER handles them, with `sample` (above) as the steps."""

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        guider = model_wrap
        options, seed = extra_args["model_options"], extra_args.get("seed")
        check_cfg_patches(options)
        ms = guider.inner_model.model_sampling
        refine = comfy.samplers.KSamplerX0Inpaint(guider, sigmas)
        fuse = comfy.samplers.KSamplerX0Inpaint(_FusionPrediction(guider), sigmas)
        for m in (refine, fuse):
            m.latent_image, m.noise = latent_image, noise
        kw = {"denoise_mask": denoise_mask, "model_options": options, "seed": seed}
        x = ms.noise_scaling(sigmas[0], noise, latent_image, self.max_denoise(model_wrap, sigmas))
        # z of the fusion passes: independent of the initial noise, which the seed itself makes
        noise_sampler = comfy.k_diffusion.sampling.default_noise_sampler(x, seed=None if seed is None else seed + 1)
        x = sample(lambda v, s: refine(v, s, **kw), lambda v, s: fuse(v, s, **kw), x, sigmas, guider.settings,
                   noise_sampler, callback, disable_pbar)
        return ms.inverse_noise_scaling(sigmas[-1], x)


class FusionGuider(comfy.samplers.CFGGuider):
    """A GUIDER that runs ProFusion's fusion sampling over the SIGMAS it is given.

    Why a guider that owns the loop: a fusion pass moves x to the next sigma and back before the step's
    prediction, which a guider's predict_noise (one denoised value for the x it is handed) cannot
    express. So `sample` runs the whole loop, in place of the SAMPLER, inside the core CFGGuider
    machinery (model loading, condition processing, hooks, wrappers, inpainting masks, previews).
    That keeps it usable where any GUIDER goes: SamplerCustomAdvanced with NOISE, SIGMAS (any
    scheduler) and LATENT. The SAMPLER input is checked, not ignored: it must be 'ddim' or 'euler', the
    deterministic step the refinement stage makes. `predict_noise` gives the refinement stage's
    prediction (ε_∅ + ω1(ε_c − ε_∅) + ω2(ε_ref − ε_∅)), so anything that asks the guider for a
    prediction gets ProFusion's two-prompt guidance.

    Conds: "positive" (the prompt with the concept), "negative" (∅), "concept" (positive with the concept
    tokens' outputs times γ; only when fusion passes run) and, optionally, "reference" (the prompt with
    the class word instead).
    Each stage's needed predictions go through one calc_cond_batch call; predictions whose weight is 0
    are not computed.

    With a PromptNet (`sstar`, a trainers.promptnet.SStar), the positive and concept prompts hold its
    word S* at their placeholder: before each of those calls, S* is computed from the x and sigma of
    that call and the two prompts are encoded again with it (the concept one with S*'s outputs × γ).
    """

    def __init__(self, model_patcher, settings: FusionSettings, sstar=None):
        super().__init__(model_patcher)
        check_model(model_patcher)
        self.settings = check_settings(settings)
        self.refinement = refinement_guidance(self.settings, False)
        self.fusion = fusion_guidance(self.settings)
        self.sstar = sstar

    def set_conds(self, positive, negative, reference=None):
        conds = {"positive": positive, "negative": negative}
        if self.sstar is not None:
            conds["positive"], concept = self.sstar.conditioning(positive, CONCEPT_KEY, self.settings.gamma)
            if fusion_active(self.settings):
                conds["concept"] = concept
        elif fusion_active(self.settings):
            conds["concept"] = concept_conditioning(positive, self.settings.gamma)
        if reference is not None:
            conds["reference"] = reference
        self.refinement = refinement_guidance(self.settings, reference is not None)
        self.inner_set_conds(conds)

    def sample(self, noise, latent_image, sampler, sigmas, denoise_mask=None, callback=None, disable_pbar=False,
               seed=None):
        check_sampler(sampler)
        if self.sstar is not None:
            self.sstar.prepare(self.model_patcher, latent_image.shape)
        return super().sample(noise, latent_image, _FusionLoop(), sigmas, denoise_mask, callback,
                              disable_pbar, seed)

    def _guided(self, guidance: Guidance, x, timestep, model_options):
        names = guidance.names
        conds = [self.conds[n] for n in names]
        if self.sstar is not None:
            conds = self.sstar.apply(self.inner_model, conds, x, timestep)
        out = _calc(self.inner_model, conds, x, timestep, model_options)
        return guidance.combine(dict(zip(names, out)))

    def predict_noise(self, x, timestep, model_options={}, seed=None):
        return self._guided(self.refinement, x, timestep, model_options)

    def predict_fusion(self, x, timestep, model_options={}):
        return self._guided(self.fusion, x, timestep, model_options)


def check_conditioning(model_patcher, conds: dict):
    """Every conditioning has the token width the MODEL reads (another family's CLIP would fail deep in the UNet)."""
    width = getattr(model_patcher.model.model_config, "unet_config", {}).get("context_dim")
    for name, cond in conds.items():
        for c, _ in cond or []:
            if width is not None and c.shape[-1] != width:
                raise ValueError(f"The {name} conditioning has token features of width {c.shape[-1]} but the MODEL "
                                 f"reads width {width} (SD1: 768, SD2: 1024, SDXL: 2048): encode it with the CLIP of "
                                 f"the same checkpoint as the MODEL.")


def check_latent(model_patcher, samples: torch.Tensor):
    channels = model_patcher.get_model_object("latent_format").latent_channels
    if samples.ndim < 4 or samples.shape[0] == 0 or samples.shape[1] != channels:
        raise ValueError(f"The latent_image has shape {list(samples.shape)}, but this MODEL denoises batches of "
                         f"{channels}-channel latents: make it with Empty Latent Image (batch_size 1 or more) or with "
                         f"VAE Encode and the VAE of the same model.")
    if not bool(torch.isfinite(samples).all()):
        raise ValueError("The latent_image holds NaN or infinite values: check the node that made it.")


def make_guider(model, positive, negative, reference, settings: FusionSettings, promptnet=None) -> FusionGuider:
    """`promptnet`: None, or (PromptNet, reference IMAGE, VAE, placeholder word) to put S* into the
    positive prompt at every step."""
    check_conditioning(model, {"positive": positive, "negative": negative, "reference": reference})
    sstar = None if promptnet is None else promptnet_lib.SStar(model, *promptnet)
    guider = FusionGuider(model, settings, sstar)
    guider.set_conds(positive, negative, reference)
    return guider


def ksampler(model, seed: int, steps: int, scheduler: str, positive, negative, latent: dict, denoise: float,
             settings: FusionSettings, reference=None, promptnet=None) -> dict:
    """What the core KSampler node does (noise from the seed, the scheduler's sigmas with denoise,
    noise masks, previews), with fusion sampling in place of the sampler. Returns the LATENT."""
    known = comfy.samplers.KSampler.SCHEDULERS
    if scheduler not in known:
        raise ValueError(f"Unknown scheduler {scheduler!r}: choose one of {', '.join(known)}.")
    guider = make_guider(model, positive, negative, reference, settings, promptnet)
    samples = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
    check_latent(model, samples)
    noise = comfy.sample.prepare_noise(samples, seed, latent.get("batch_index"))
    sigmas = comfy.samplers.KSampler(model, steps=steps, device=model.load_device, sampler="ddim",
                                     scheduler=scheduler, denoise=denoise, model_options=model.model_options).sigmas
    callback = latent_preview.prepare_callback(model, steps)
    out = guider.sample(noise, samples, comfy.samplers.sampler_object("ddim"), sigmas,
                        denoise_mask=latent.get("noise_mask"), callback=callback,
                        disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
    return {**latent, "samples": out.to(comfy.model_management.intermediate_device())}
