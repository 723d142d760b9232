"""A small picture drawn with the weights being trained, for watching a run.

Every call draws the same thing: one image of the method's preview prompt (`Method.preview_context`)
from the same noise (its own generator, seeded once), with a few deterministic DDIM steps at the
training resolution, so successive pictures differ only by what was learnt. Nothing here touches
the engine's per-step generator or any trainable value, so a run with previews trains exactly as
one without.
"""
import os

import torch
from PIL import Image

import comfy.model_management as mm

from . import files, sampling
from .comfy_adapter import Diffusion, decode

PREVIEW_STEPS = 12
PREVIEW_CFG = 7.0


class Preview:
    """`preview(step)` draws with `context()` ([prompt; empty prompt] embeddings and pooled, or None)
    and saves `<run>/samples/step_<step>.png`; returns its path."""

    def __init__(self, diffusion: Diffusion, vae, context, resolution: int, seed: int, folder: str,
                 steps: int = PREVIEW_STEPS, cfg: float = PREVIEW_CFG):
        factor = vae.downscale_ratio
        if not isinstance(factor, int) or resolution % factor:
            raise ValueError(f"Resolution {resolution} is not a multiple of the VAE's scale factor {factor}.")
        self.diffusion, self.vae, self.context = diffusion, vae, context
        self.folder, self.cfg = folder, cfg
        channels = diffusion.model.latent_format.latent_channels
        noise_gen = torch.Generator(device="cpu").manual_seed(int(seed) % (2**63 - 1))
        self.noise = torch.randn((1, channels, resolution // factor, resolution // factor), generator=noise_gen)
        self.sigmas = sampling.ddim_sigmas(diffusion.sampling.sigmas, steps)

    def path(self, step: int) -> str:
        return os.path.join(self.folder, f"step_{step:07d}.png")

    @torch.no_grad()
    def image(self) -> torch.Tensor:
        """[H, W, 3] in 0..1 on the CPU, drawn with the current weights."""
        d = self.diffusion
        cond, pooled = self.context()
        sigmas = self.sigmas.to(d.device)
        x = d.start(self.noise.to(d.device), sigmas[0])
        for i in range(len(sigmas) - 1):
            mm.throw_exception_if_processing_interrupted()
            den = d.denoise(torch.cat([x, x]), sigmas[i].expand(2), cond, pooled)
            c, u = den.float().chunk(2)
            x = sampling.ddim_step(x, sampling.guided(c, u, self.cfg).to(x.dtype), sigmas[i], sigmas[i + 1])
        # The VAE joins what is loaded, all of it in full: the models being trained stay as they are.
        loaded = [m.model for m in mm.current_loaded_models if m.model is not None]
        mm.load_models_gpu(loaded + [self.vae.patcher], force_full_load=True)
        return decode(self.vae, d, x)[0].movedim(0, -1).clamp(0, 1).float().cpu()

    def __call__(self, step: int) -> str:
        pixels = (self.image().numpy() * 255.0).round().astype("uint8")
        os.makedirs(self.folder, exist_ok=True)
        return files.atomic_write(self.path(step), lambda tmp: Image.fromarray(pixels).save(tmp, format="PNG"))
