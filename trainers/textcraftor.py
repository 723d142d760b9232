"""Reward fine-tuning through an unrolled, checkpointed sampler (methods.md §1.1).

`RewardUnroll` is the shared part. As TextCraftor's released code does it, per iteration with a
batch of prompts p and noise z_T:

    DDIM (eta 0, CFG w) over N steps from z_T: steps 1..N-K without gradient, the last K with
    gradient, each of those UNet calls under gradient checkpointing; the gradient runs through z
    across those K steps
    x̂ = VAE decoder(z_0)                       with gradient (the VAE is frozen)
    loss = −Σ γ·s·mean(R(x̂, p))                the reward's objective (rewards.py)

Timesteps are the official "leading" DDIM ones (25 steps: 999, 959, ..., 39); the last step ends
on the clean prediction (σ = 0, as ComfyUI's samplers) where the official scheduler stops at ᾱ_0
(σ ≈ 0.03). Where the official code hard-codes 25 steps, K here counts from the end of any number
of steps. Prompts are drawn as epochs of a seeded shuffle, noise from the engine's per-step
generator, so a resumed run repeats exactly. The UNet's weights, the VAE and the reward models are
never trained.

What trains differs:

- `TextCraftor` (stage 1): the text encoder. Steps 1..N-K are conditioned by the original
  encoder T_φ0, the last K by the trainable T_φ ([T_φ(p), T_φ("")]: cond AND the empty-prompt
  uncond). φ is every weight of the text model (embeddings and final layer norm included), as
  float32 master weights (comfy_adapter.EncoderCopy); the CLIP's own weights stay φ0. AdamW (torch
  defaults, weight decay 0.01), constant LR 1e-6, no gradient clipping (the official
  clip_grad_norm_(…, 0.1) is commented out).
- `RewardLora` (stage 2, AlignProp-style): a LoRA on the UNet's attention projections, used at
  every step (the model being tuned draws the whole chain), gradients from the last K; the text
  encoder is frozen (connect stage 1's CLIP to tune on top of it). TextCraftor's own second stage
  trains the full UNet at 1e-6; a LoRA is what AlignProp trains (rank 4, AdamW at 1e-3, weight decay
  0.1, gradient norm clipped) and what every SD tool loads.
"""
import contextlib
import functools

import torch
import torch.utils.checkpoint

import comfy.model_management as mm

from . import engine, sampling
from .comfy_adapter import Diffusion, EncoderCopy, TextEncoder, decode, encoder_prefixes, trainable_session
from .lora import UnetLora
from .rewards import part_names


def parse_prompts(text: str | None) -> list[str]:
    """One prompt per non-empty line."""
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


def check_prompt_lengths(text: TextEncoder, prompts: list[str]):
    """The batch is encoded as one tensor with the empty prompt: each prompt must fit one 77-token
    section (the official code cut longer ones to 77)."""
    for i, p in enumerate(prompts):
        tokens = text.tokenize(p)
        for key in text.keys:
            if len(tokens[key]) > 1:
                n = len(text.word_ids(key, p))
                raise ValueError(f"Prompt {i + 1} ({p[:60]!r}{'…' if len(p) > 60 else ''}) is {n} tokens; the text "
                                 f"encoder reads 75 per pass (77 with start and end) and training encodes each "
                                 f"prompt in one pass. Shorten it.")


@functools.lru_cache(maxsize=4)
def _epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed((seed * 7_919 + epoch) % (2**63 - 1))
    return torch.randperm(n, generator=g).tolist()


def prompt_batch(prompts: list[str], batch: int, step: int, seed: int) -> list[str]:
    """The prompts of `step`: consecutive places in epochs of seeded shuffles (each prompt once per epoch)."""
    n = len(prompts)
    return [prompts[_epoch_order(n, seed, j // n)[j % n]] for j in range(step * batch, (step + 1) * batch)]


def checkpointed(step, x: torch.Tensor, *args):
    """step(x, *args) under reentrant gradient checkpointing: its activations are recomputed and freed
    within the backward pass of that one step, so K steps with gradient hold what one does. (The
    non-reentrant variant kept about one UNet call's worth per step until the whole backward ended:
    on TinySD the LoRA stage's peak grew 1.38x from K = 1 to 10, against 1.02x this way.) Reentrant
    checkpointing passes gradients only through inputs that need them, so the first step after the
    no-gradient ones gets x as a leaf that does (its gradient is discarded)."""
    if not torch.is_grad_enabled():                 # e.g. a preview: nothing to recompute for
        return step(x, *args)
    if not x.requires_grad and not any(torch.is_tensor(a) and a.requires_grad for a in args):
        x = x.detach().requires_grad_()
    return torch.utils.checkpoint.checkpoint(step, x, *args, use_reentrant=True)


class RewardUnroll(engine.Method):
    """The unrolled, checkpointed sampling chain scored by a reward; subclasses say what trains."""

    def __init__(self, diffusion: Diffusion, text: TextEncoder, vae, reward, prompts: list[str], *,
                 batch_size: int = 1, sampling_steps: int = 25, grad_steps: int = 5, cfg: float = 7.5,
                 resolution: int = 512, seed: int = 0, checkpointing: bool = True):
        if not prompts:
            raise ValueError("No prompts: write one prompt per line, or give a prompt file in ComfyUI's input "
                             "folder.")
        if sampling_steps < 1:
            raise ValueError(f"sampling_steps {sampling_steps}: use 1 or more (TextCraftor: 25).")
        if not 1 <= grad_steps <= sampling_steps:
            raise ValueError(f"grad_steps K = {grad_steps} with {sampling_steps} sampling steps: K counts the last "
                             f"sampling steps that keep their gradient, so use 1 to {sampling_steps} "
                             f"(TextCraftor: 5 of 25).")
        if batch_size < 1:
            raise ValueError(f"batch_size {batch_size}: use 1 or more.")
        prefixes = encoder_prefixes(text.clip)
        if len(prefixes) != 1:
            names = ", ".join(p.rstrip(".") for p in prefixes)
            raise ValueError(f"This CLIP has {len(prefixes)} text encoders ({names}); reward fine-tuning here "
                             f"trains models with one CLIP text encoder (SD1.x, SD2.x), as TextCraftor does.")
        factor = vae.downscale_ratio
        if not isinstance(factor, int) or resolution % factor:
            raise ValueError(f"Resolution {resolution} is not a multiple of the VAE's scale factor {factor}.")
        channels = diffusion.model.latent_format.latent_channels
        if vae.latent_channels != channels:
            raise ValueError(f"The VAE decodes {vae.latent_channels}-channel latents but the MODEL makes {channels}: "
                             f"connect the VAE of the same model family.")
        check_prompt_lengths(text, prompts)
        reward.check_prompts(prompts)
        self.diffusion, self.text, self.vae, self.reward = diffusion, text, vae, reward
        self.prompts, self.batch_size, self.cfg, self.seed = prompts, batch_size, cfg, seed
        self.grad_steps, self.checkpointing = grad_steps, checkpointing
        self.prefix = prefixes[0]
        self.latent_shape = (channels, resolution // factor, resolution // factor)
        self.sigmas = sampling.ddim_sigmas(diffusion.sampling.sigmas, sampling_steps)

    # -- what the subclass decides --------------------------------------------------------------
    def contexts(self, prompts: list[str], k: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """[cond; uncond] embeddings of the steps without gradient and of the last k steps (None
        where there are no such steps)."""
        raise NotImplementedError

    def session(self):
        return trainable_session([self.diffusion.patcher, self.vae.patcher, *self.reward.patchers], [self.text.clip])

    def grad_scaling_device(self):
        dtypes = [self.diffusion.model.get_dtype(), self.vae.vae_dtype]
        dtypes += [p.model_dtype() for p in self.reward.patchers]
        return self.diffusion.device if torch.float16 in dtypes else None

    # -- the step -----------------------------------------------------------------------------
    def encode(self, prompts: list[str]) -> torch.Tensor:
        """[cond; uncond] [2B, T, D] of the CLIP's encoder as it is (callers choose grad or not)."""
        cond, _ = self.text.encode_batch([self.text.tokenize(p) for p in prompts + [""]])
        b = len(prompts)
        return torch.cat([cond[:b], cond[b:].expand(b, -1, -1)])

    def _step(self, x, context, sigma, sigma_next):
        den = self.diffusion.denoise(torch.cat([x, x]), sigma.expand(2 * x.shape[0]), context)
        cond, uncond = den.chunk(2)
        return sampling.ddim_step(x, sampling.guided(cond, uncond, self.cfg), sigma, sigma_next)

    def latents(self, prompts: list[str], noise: torch.Tensor, grad_steps: int | None = None) -> torch.Tensor:
        """z_0 of the DDIM chain from `noise`: the first N-K steps without gradient, the last K with
        it, each of those UNet calls checkpointed (recomputed in the backward pass)."""
        k = self.grad_steps if grad_steps is None else grad_steps
        sigmas = self.sigmas.to(self.diffusion.device)
        n = len(sigmas) - 1
        x = self.diffusion.start(noise.to(self.diffusion.device), sigmas[0])
        frozen, tuned = self.contexts(prompts, k)
        for i in range(n):
            mm.throw_exception_if_processing_interrupted()
            if i < n - k:
                with torch.no_grad():
                    x = self._step(x, frozen, sigmas[i], sigmas[i + 1])
            elif self.checkpointing:
                x = checkpointed(self._step, x, tuned, sigmas[i], sigmas[i + 1])
            else:
                x = self._step(x, tuned, sigmas[i], sigmas[i + 1])
        return x

    def images(self, prompts: list[str], noise: torch.Tensor, grad_steps: int | None = None) -> torch.Tensor:
        return decode(self.vae, self.diffusion, self.latents(prompts, noise, grad_steps))

    def noise(self, batch: int, g: torch.Generator) -> torch.Tensor:
        return torch.randn((batch, *self.latent_shape), generator=g)

    def loss(self, step, g):
        prompts = prompt_batch(self.prompts, self.batch_size, step, self.seed)
        images = self.images(prompts, self.noise(len(prompts), g))
        terms = self.reward.terms(images, prompts)
        objective = sum(w * r.scale * raw for r, w, raw in terms)
        metrics = {name: float(r.score_from(raw.detach()).float().mean())
                   for (r, _, raw), name in zip(terms, part_names([t[0] for t in terms]))}
        return -objective.mean(), metrics

    def preview_context(self):
        """The first prompt as every sampling step of the trained model sees it ([cond; uncond])."""
        _, tuned = self.contexts(self.prompts[:1], len(self.sigmas) - 1)
        return tuned, None


class TextCraftor(RewardUnroll):
    """Stage 1: the whole text encoder trains; the original encoder conditions the early steps."""

    def __init__(self, diffusion: Diffusion, text: TextEncoder, vae, reward, prompts: list[str], **kw):
        super().__init__(diffusion, text, vae, reward, prompts, **kw)
        self.encoder = EncoderCopy(text.clip, self.prefix, device=text.clip.patcher.load_device)

    def trainable(self):
        return self.encoder.params

    def embeddings(self, prompts: list[str], tuned: bool) -> torch.Tensor:
        """[cond; uncond] [2B, T, D] of the trainable (`tuned`, with gradient) or the original encoder."""
        if tuned:
            with self.encoder.swapped():
                return self.encode(prompts)
        with torch.no_grad():
            return self.encode(prompts)

    def contexts(self, prompts, k):
        n = len(self.sigmas) - 1
        return (self.embeddings(prompts, tuned=False) if k < n else None,
                self.embeddings(prompts, tuned=True) if k > 0 else None)

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """The trained encoder in HF CLIPTextModel keys (CLIPLoader and Load Fine-Tuned Text Encoder read it)."""
        return self.encoder.hf_state_dict()


class RewardLora(RewardUnroll):
    """Stage 2: a LoRA on the UNet trains (`lora`, a trainers.lora.UnetLora of the same MODEL); the
    text encoder is frozen and conditions every step."""

    def __init__(self, diffusion: Diffusion, text: TextEncoder, vae, reward, prompts: list[str], lora: UnetLora,
                 **kw):
        super().__init__(diffusion, text, vae, reward, prompts, **kw)
        self.lora = lora

    def trainable(self):
        return self.lora.parameters()

    def session(self):
        # The LoRA stays applied for the whole loop: checkpointed UNet calls rerun in the backward pass.
        stack = contextlib.ExitStack()
        stack.enter_context(super().session())
        stack.enter_context(self.lora.applied())
        return stack

    def contexts(self, prompts, k):
        with torch.no_grad():
            context = self.encode(prompts)
        return context, context
