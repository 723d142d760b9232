"""Textual inversion (Gal et al. 2022): learn the vectors of one new word, everything else frozen.

v* = argmin_v E ||eps - eps_theta(z_t, t, c(y; v))||^2 with y a random template holding the word,
t uniform and a 50% horizontal flip (methods.md §4), here in the model's own prediction space.
"""
import torch

from . import engine
from .comfy_adapter import Diffusion, TextEncoder, trainable_session
from .timesteps import TimestepSampler

MARKER = "texttuneplaceholder"


def initial_vectors(text: TextEncoder, init_words: str, n_vectors: int) -> dict[str, torch.Tensor]:
    """Per encoder key: n vectors spread over the initializer's tokens (A1111: vec[i] = emb[i*len/n])."""
    out = {}
    for key in text.keys:
        ids = text.word_ids(key, init_words)
        if not ids:
            raise ValueError(f"The initializer words {init_words!r} give no tokens; use one or more ordinary "
                             f"words close to the concept, e.g. 'dog' or 'toy'.")
        rows = text.token_vectors(key, ids)
        out[text.embedding_key(key)] = torch.stack([rows[i * len(ids) // n_vectors] for i in range(n_vectors)])
    return out


class TextualInversion(engine.Method):
    def __init__(self, diffusion: Diffusion, text: TextEncoder, latents: torch.Tensor, flipped: torch.Tensor,
                 masks, templates: list[str], init_words: str, n_vectors: int, batch_size: int,
                 flip: bool = True, timesteps: str = "uniform"):
        self.diffusion, self.text = diffusion, text
        self.latents, self.flipped, self.masks = latents, flipped, masks
        self.templates, self.batch_size, self.flip = templates, batch_size, flip
        self.sampler = TimestepSampler(diffusion.sampling.sigmas, timesteps)
        device = diffusion.device
        self.params = {k: torch.nn.Parameter(v.to(device)) for k, v in
                       initial_vectors(text, init_words, n_vectors).items()}
        self._key_of = {text.embedding_key(k): k for k in text.keys}

    def trainable(self):
        return self.params

    def session(self):
        return trainable_session([self.diffusion.patcher], [self.text.clip])

    def grad_scaling_device(self):
        return self.diffusion.device if self.diffusion.model.get_dtype() == torch.float16 else None

    def vectors(self) -> dict[str, torch.Tensor]:
        """{embedding_key: [n, width]} — what the embedding file holds."""
        return {k: p.detach() for k, p in self.params.items()}

    def encode(self, templates: list[str]):
        vectors = {self._key_of[k]: p for k, p in self.params.items()}
        tokens = [self.text.tokens_with_vectors(t.format(MARKER), {MARKER: vectors}) for t in templates]
        return self.text.encode_batch(tokens)

    def loss(self, step, g):
        n, b, device = self.latents.shape[0], self.batch_size, self.diffusion.device
        idx = torch.randint(0, n, (b,), generator=g)
        flip = (torch.rand(b, generator=g) < 0.5) & self.flip
        x0 = torch.where(flip.view(-1, 1, 1, 1), self.flipped[idx], self.latents[idx]).to(device)
        mask = None
        if self.masks is not None:
            m = self.masks[idx]
            mask = torch.where(flip.view(-1, 1, 1, 1), m.flip(-1), m).to(device)
        templates = [self.templates[i] for i in torch.randint(0, len(self.templates), (b,), generator=g)]
        sigma = self.sampler.sigma(self.sampler.sample(b, g)).to(device)
        noise = torch.randn(x0.shape, generator=g).to(device)
        cond, pooled = self.encode(templates)
        return self.diffusion.loss(x0, noise, sigma, cond, pooled, mask), {}

    def preview_context(self):
        return self.encode([self.templates[0].format(MARKER), ""])
