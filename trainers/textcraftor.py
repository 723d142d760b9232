"""TextCraftor (Li et al., CVPR 2024; methods.md §1.1): fine-tune the text encoder against image rewards.

As the released code does it, per iteration with a batch of prompts p and noise z_T:

    E0 = [T_φ0(p), T_φ0("")]        the original encoder, no gradient
    E  = [T_φ(p),  T_φ("")]         the trainable encoder (cond AND the empty-prompt uncond)
    DDIM (eta 0, CFG w) over N steps from z_T: steps 1..N-K with E0 and no gradient, the last K with
    E, each UNet call under gradient checkpointing; the gradient runs through z across those K steps
    x̂ = VAE decoder(z_0)                       with gradient (the VAE is frozen)
    loss = −Σ γ·s·mean(R(x̂, p))                the reward's objective (rewards.py)
    AdamW (torch defaults, weight decay 0.01) on φ only, constant LR, no gradient clipping (the
    official clip_grad_norm_(…, 0.1) is commented out).

φ is every weight of the text model (embeddings and final layer norm included), as float32 master
weights (comfy_adapter.EncoderCopy); the CLIP's own weights stay the frozen φ0. The UNet, the VAE
and the reward models are never trained. Timesteps are the official "leading" DDIM ones (25 steps:
999, 959, ..., 39); the last step ends on the clean prediction (σ = 0, as ComfyUI's samplers) where
the official scheduler stops at ᾱ_0 (σ ≈ 0.03). Where the official code hard-codes 25 steps, K here
counts from the end of any number of steps. Prompts are drawn as epochs of a seeded shuffle, noise
from the engine's per-step generator, so a resumed run repeats exactly.
"""
import functools

import torch
import torch.utils.checkpoint

import comfy.model_management as mm

from . import engine, sampling
from .comfy_adapter import Diffusion, EncoderCopy, TextEncoder, decode, encoder_prefixes, trainable_session
from .rewards import part_names

OOM_ADVICE = ("lower grad_steps (K: each step that keeps its gradient stores a UNet call's inputs and replays it "
              "in the backward pass), the batch size or the resolution")


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


class TextCraftor(engine.Method):
    oom_advice = OOM_ADVICE

    def __init__(self, diffusion: Diffusion, text: TextEncoder, vae, reward, prompts: list[str], *,
                 batch_size: int = 1, sampling_steps: int = 25, grad_steps: int = 5, cfg: float = 7.5,
                 resolution: int = 512, seed: int = 0):
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
        self.grad_steps = grad_steps
        self.latent_shape = (channels, resolution // factor, resolution // factor)
        self.sigmas = sampling.ddim_sigmas(diffusion.sampling.sigmas, sampling_steps)
        self.encoder = EncoderCopy(text.clip, prefixes[0], device=text.clip.patcher.load_device)

    # -- what trains --------------------------------------------------------------------------
    def trainable(self):
        return self.encoder.params

    def session(self):
        return trainable_session([self.diffusion.patcher, self.vae.patcher, *self.reward.patchers], [self.text.clip])

    def grad_scaling_device(self):
        dtypes = [self.diffusion.model.get_dtype(), self.vae.vae_dtype]
        dtypes += [p.model_dtype() for p in self.reward.patchers]
        return self.diffusion.device if torch.float16 in dtypes else None

    # -- the step -----------------------------------------------------------------------------
    def embeddings(self, prompts: list[str], tuned: bool) -> torch.Tensor:
        """[cond; uncond] [2B, T, D] of the trainable (`tuned`, with gradient) or the original encoder."""
        tokens = [self.text.tokenize(p) for p in prompts + [""]]
        if tuned:
            with self.encoder.swapped():
                cond, _ = self.text.encode_batch(tokens)
        else:
            with torch.no_grad():
                cond, _ = self.text.encode_batch(tokens)
        b = len(prompts)
        return torch.cat([cond[:b], cond[b:].expand(b, -1, -1)])

    def _step(self, x, context, sigma, sigma_next):
        den = self.diffusion.denoise(torch.cat([x, x]), sigma.expand(2 * x.shape[0]), context)
        cond, uncond = den.chunk(2)
        return sampling.ddim_step(x, sampling.guided(cond, uncond, self.cfg), sigma, sigma_next)

    def latents(self, prompts: list[str], noise: torch.Tensor, grad_steps: int | None = None) -> torch.Tensor:
        """z_0 of the DDIM chain from `noise`: the first N-K steps with the original encoder and no
        gradient, the last K with the trainable encoder, each UNet call checkpointed."""
        k = self.grad_steps if grad_steps is None else grad_steps
        sigmas = self.sigmas.to(self.diffusion.device)
        n = len(sigmas) - 1
        x = self.diffusion.start(noise.to(self.diffusion.device), sigmas[0])
        frozen = self.embeddings(prompts, tuned=False) if k < n else None
        tuned = self.embeddings(prompts, tuned=True) if k > 0 else None
        for i in range(n):
            mm.throw_exception_if_processing_interrupted()
            if i < n - k:
                with torch.no_grad():
                    x = self._step(x, frozen, sigmas[i], sigmas[i + 1])
            else:
                x = torch.utils.checkpoint.checkpoint(self._step, x, tuned, sigmas[i], sigmas[i + 1],
                                                      use_reentrant=False)
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

    # -- what is saved ------------------------------------------------------------------------
    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """The trained encoder in HF CLIPTextModel keys (CLIPLoader and Load Fine-Tuned Text Encoder read it)."""
        return self.encoder.hf_state_dict()
