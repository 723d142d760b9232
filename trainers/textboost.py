"""TextBoost (Park, Kim, Shim 2024; methods.md §2): one-shot personalisation through the text encoder.

Trainable: a LoRA on the text encoder (default q, k, v, out, fc1, fc2 of every layer, rank 4, as the
paper's first version), the instance token's vectors and, when on, one token per image augmentation.
Loss per step, batch b:

    L = || eps - eps_theta(z_t, t, E_phi(y_aug)) ||^2  +  lambda * mean_{b,l} [1 - cos(E_phi(c)_l, E_phi0(c)_l)]

with y_aug the augmented image's caption (its augmentation tokens included), c a batch of prior
captions (10% empty, 10% "a photo of a <class>", else everyday captions), E_phi0 the original
encoder (the same modules with the LoRA switched off), and t drawn with p(t) ∝ max log SNR - log SNR(t)
(what the paper says; the reference code's inverted flag made its runs uniform).
After each step a new token's vector norm is clipped to the mean norm of the original vocabulary.
"""
import contextlib
import os
import random

import torch
import torch.nn.functional as F

from . import engine
from .augment import TOKENS, render
from .comfy_adapter import Diffusion, TextEncoder, trainable_session
from .lora import TextLora
from .textual_inversion import MARKER, initial_vectors
from .timesteps import TimestepSampler

PRIOR_CAPTIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "captions", "everyday.txt")
PRIOR_NULL_P, PRIOR_CLASS_P = 0.1, 0.1
CLASS_TEMPLATES = ["a photo of a {}", "a {}", "a picture of a {}", "a close-up photo of a {}"]


def aug_marker(name: str) -> str:
    """The marker word that stands for augmentation token `name` in training captions."""
    return "texttuneaug" + name.replace("-", "")


def load_prior_captions(user_text: str | None = None) -> list[str]:
    """The user's captions (one per line) or the pack's everyday caption set."""
    if user_text and user_text.strip():
        lines = [ln.strip() for ln in user_text.splitlines() if ln.strip()]
    else:
        with open(PRIOR_CAPTIONS, encoding="utf-8") as f:
            lines = [ln.strip() for ln in f if ln.strip()]
    if not lines:
        raise ValueError("The prior caption list is empty: give one everyday caption per line, or leave the input "
                         "empty to use TextTune's own set.")
    return lines


def check_kp_weight(kp_weight: float) -> float:
    if kp_weight < 0:
        raise ValueError(f"kp_weight {kp_weight} is negative: use 0 (off) or more (TextBoost uses 0.1).")
    return kp_weight


class TextBoost(engine.Method):
    def __init__(self, diffusion: Diffusion, text: TextEncoder, latents: torch.Tensor, edits: list,
                 templates: list[str], class_word: str, init_words: str, prior_captions: list[str],
                 lora: TextLora, batch_size: int, aug_tokens: bool = True, kp_weight: float = 0.1,
                 timesteps: str = "snr", lora_lr: float = 1e-4, token_lr: float = 1e-3):
        check_kp_weight(kp_weight)
        self.diffusion, self.text, self.lora = diffusion, text, lora
        self.latents, self.edits, self.templates = latents, edits, templates
        self.class_word, self.prior = class_word, prior_captions
        self.batch_size, self.aug_tokens, self.kp_weight = batch_size, aug_tokens, kp_weight
        self.lora_lr, self.token_lr = lora_lr, token_lr
        self.sampler = TimestepSampler(diffusion.sampling.sigmas, timesteps)
        device = diffusion.device
        n_init = len(text.word_ids(text.keys[0], init_words))
        self.tokens: dict[str, dict[str, torch.nn.Parameter]] = {
            MARKER: self._params(initial_vectors(text, init_words, max(1, n_init)), device)}
        if aug_tokens:
            for t in TOKENS.values():
                n = len(text.word_ids(text.keys[0], t.init_words))
                self.tokens[aug_marker(t.name)] = self._params(initial_vectors(text, t.init_words, n), device)
        self.words = {name: (aug_marker(name) if aug_tokens else t.plain) for name, t in TOKENS.items()}
        self.vocab_norm = {k: float(text.encoders[k].transformer.get_input_embeddings().weight.float().norm(dim=1).mean())
                           for k in text.keys}
        self._key_of = {text.embedding_key(k): k for k in text.keys}

    @staticmethod
    def _params(vectors: dict[str, torch.Tensor], device) -> dict[str, torch.nn.Parameter]:
        return {k: torch.nn.Parameter(v.to(device)) for k, v in vectors.items()}

    # -- what trains --------------------------------------------------------------------------
    def token_params(self) -> dict[str, torch.nn.Parameter]:
        return {f"token.{marker}.{ek}": p for marker, per in self.tokens.items() for ek, p in per.items()}

    def trainable(self):
        return {**self.lora.parameters(), **self.token_params()}

    def param_groups(self):
        return [{"params": list(self.lora.parameters()), "lr": self.lora_lr},
                {"params": list(self.token_params()), "lr": self.token_lr}]

    def session(self):
        stack = contextlib.ExitStack()
        stack.enter_context(trainable_session([self.diffusion.patcher], [self.text.clip]))
        stack.enter_context(self.lora.applied())
        return stack

    def grad_scaling_device(self):
        return self.diffusion.device if self.diffusion.model.get_dtype() == torch.float16 else None

    # -- the step -----------------------------------------------------------------------------
    def instance_caption(self, template: str, edits) -> str:
        return render(template.format(f"{MARKER} {self.class_word}"), edits, self.words)

    def _vectors(self) -> dict[str, dict[str, torch.Tensor]]:
        return {marker: {self._key_of[ek]: p for ek, p in per.items()} for marker, per in self.tokens.items()}

    def encode(self, captions: list[str]):
        vectors = self._vectors()
        return self.text.encode_batch([self.text.tokens_with_vectors(c, vectors) for c in captions])

    def prior_batch(self, g: torch.Generator) -> list[str]:
        rng = random.Random(int(torch.randint(0, 2**31 - 1, (), generator=g)))
        out = []
        for _ in range(self.batch_size):
            r = rng.random()
            if r < PRIOR_NULL_P:
                out.append("")
            elif r < PRIOR_NULL_P + PRIOR_CLASS_P:
                out.append(rng.choice(CLASS_TEMPLATES).format(self.class_word))
            else:
                out.append(rng.choice(self.prior))
        return out

    def kp_loss(self, captions: list[str], tuned: torch.Tensor | None = None) -> torch.Tensor:
        """mean over captions and tokens of 1 - cos(E_ft, E_orig); `tuned` = E_ft when already encoded."""
        if tuned is None:
            tuned, _ = self.encode(captions)
        with torch.no_grad(), self.lora.disabled():
            orig, _ = self.encode(captions)
        return (1 - F.cosine_similarity(tuned.float(), orig.float(), dim=-1)).mean()

    def loss(self, step, g):
        b, device = self.batch_size, self.diffusion.device
        idx = torch.randint(0, self.latents.shape[0], (b,), generator=g)
        x0 = self.latents[idx].to(device)
        tpl = torch.randint(0, len(self.templates), (b,), generator=g)
        captions = [self.instance_caption(self.templates[t], self.edits[i]) for t, i in zip(tpl.tolist(), idx.tolist())]
        sigma = self.sampler.sigma(self.sampler.sample(b, g)).to(device)
        noise = torch.randn(x0.shape, generator=g).to(device)
        prior = self.prior_batch(g) if self.kp_weight > 0 else []
        cond, pooled = self.encode(captions + prior)       # the tuned encoder, one batch for both
        diffusion_loss = self.diffusion.loss(x0, noise, sigma, cond[:b], None if pooled is None else pooled[:b])
        metrics = {"diffusion": float(diffusion_loss.detach())}
        loss = diffusion_loss
        if prior:
            kp = self.kp_loss(prior, tuned=cond[b:])
            loss = loss + self.kp_weight * kp
            metrics["kp"] = float(kp.detach())
        return loss, metrics

    def after_step(self, step):
        with torch.no_grad():                       # keep new tokens at the vocabulary's scale
            for per in self.tokens.values():
                for ek, p in per.items():
                    limit = self.vocab_norm[self._key_of[ek]]
                    norms = p.norm(dim=-1, keepdim=True)
                    p.mul_(torch.where(norms > limit, limit / norms.clamp_min(1e-12), torch.ones_like(norms)))

    def preview_context(self):
        return self.encode([self.templates[0].format(f"{MARKER} {self.class_word}"), ""])

    # -- what is saved ------------------------------------------------------------------------
    def instance_vectors(self) -> dict[str, torch.Tensor]:
        """{embedding_key: [n, width]}: the embedding file of the instance token."""
        return {ek: p.detach() for ek, p in self.tokens[MARKER].items()}

    def augmentation_vectors(self) -> dict[str, torch.Tensor]:
        return {f"{name}.{ek}": p.detach() for name in TOKENS if aug_marker(name) in self.tokens
                for ek, p in self.tokens[aug_marker(name)].items()}
