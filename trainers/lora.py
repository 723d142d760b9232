"""Trainable LoRA on a CLIP text encoder, saved in kohya's `lora_te…` layout that ComfyUI's core
LoraLoader (and A1111, Forge, kohya) apply to the same weights.

delta W = up @ down * (alpha / rank), with down [rank, in] ~ N(0, 1/rank) and up [out, rank] = 0
(peft's "gaussian" init, as TextBoost uses), so training starts from the unchanged encoder.
The LoRA runs as a temporary forward wrapper on the targeted linear layers inside `applied()`;
the CLIP's own weights and modules are never changed, and `disabled()` gives the original encoder
(TextBoost's frozen copy for the knowledge-preservation loss) at no memory cost.
"""
import contextlib
import re

import torch
import torch.nn.functional as F

import comfy.lora

# target name -> the module inside each text-encoder layer
TARGETS = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
           "out": "self_attn.out_proj", "fc1": "mlp.fc1", "fc2": "mlp.fc2"}
ALL_TARGETS = "q, k, v, out, fc1, fc2"
_LAYER = re.compile(r"(?:^|\.)encoder\.layers\.(\d+)\.(.+)$")


def parse_targets(text: str) -> list[str]:
    """"q, k, v" -> ["q", "k", "v"]; unknown names are an error listing the valid ones."""
    names = [t.strip().lower() for t in re.split(r"[,\s]+", text or "") if t.strip()]
    bad = [n for n in names if n not in TARGETS]
    if not names or bad:
        raise ValueError(f"LoRA targets {text!r}: {'unknown ' + ', '.join(bad) if bad else 'none given'}. "
                         f"Valid targets: {', '.join(TARGETS)} (comma-separated), e.g. '{ALL_TARGETS}' or 'q, k, v'.")
    return list(dict.fromkeys(names))


def kohya_prefix(key: str, keys: list[str]) -> str:
    """kohya's prefix of text encoder `key`: lora_te_ with one encoder, lora_te1_/lora_te2_ for SDXL's L/G."""
    if len(keys) == 1:
        return "lora_te_"
    return {"l": "lora_te1_", "g": "lora_te2_"}[key]


class LoraModule(torch.nn.Module):
    def __init__(self, linear: torch.nn.Linear, rank: int, alpha: float, generator: torch.Generator, device):
        super().__init__()
        out_f, in_f = linear.weight.shape
        down = torch.randn(rank, in_f, generator=generator) / rank
        self.down = torch.nn.Parameter(down.to(device))
        self.up = torch.nn.Parameter(torch.zeros(out_f, rank, device=device))
        self.scale = alpha / rank

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(x.to(self.down.dtype), self.down), self.up) * self.scale


class TextLora:
    """LoRA modules on the `targets` of every layer of every text encoder of `clip`."""

    def __init__(self, clip, targets: list[str], rank: int, alpha: float | None = None, seed: int = 0, device=None):
        if rank < 1:
            raise ValueError(f"lora_rank {rank} is below 1: use 1 or more (TextBoost uses 4).")
        alpha = float(rank if alpha is None else alpha)
        cond_model = clip.cond_stage_model
        keys = [k for k in ("l", "g", "h") if hasattr(cond_model, f"clip_{k}")]
        key_map = comfy.lora.model_lora_keys_clip(cond_model, {})
        wanted = {TARGETS[t] for t in targets}
        g = torch.Generator(device="cpu").manual_seed(seed)
        self.rank, self.alpha, self.enabled = rank, alpha, True
        self.modules: dict[str, tuple[torch.nn.Module, LoraModule]] = {}     # kohya name -> (linear, lora)
        for key in keys:
            encoder = getattr(cond_model, f"clip_{key}")
            for name, m in encoder.named_modules():
                hit = _LAYER.search(name)
                if not hit or hit.group(2) not in wanted or not hasattr(m, "weight"):
                    continue
                inner = name.split("transformer.", 1)[1] if name.startswith("transformer.") else name
                kohya = kohya_prefix(key, keys) + inner.replace(".", "_")
                model_key = f"clip_{key}.{name}.weight"
                if key_map.get(kohya) != model_key:
                    raise RuntimeError(f"ComfyUI would not apply LoRA key {kohya} to {model_key}; this text "
                                       f"encoder layout is not supported for LoRA training.")
                self.modules[kohya] = (m, LoraModule(m, rank, alpha, g, device or m.weight.device))
        if not self.modules:
            raise ValueError(f"LoRA targets {', '.join(targets)} match no layer of this text encoder. "
                             f"Valid targets: {', '.join(TARGETS)}.")

    def parameters(self) -> dict[str, torch.nn.Parameter]:
        out = {}
        for kohya, (_, lora) in self.modules.items():
            out[f"{kohya}.lora_down"] = lora.down
            out[f"{kohya}.lora_up"] = lora.up
        return out

    def count(self) -> int:
        return sum(p.numel() for p in self.parameters().values())

    @contextlib.contextmanager
    def applied(self):
        """Inside, the targeted layers add their LoRA delta (while `enabled`)."""
        patched = []
        try:
            for linear, lora in self.modules.values():
                linear.forward = self._wrap(linear.forward, lora)
                patched.append(linear)
            yield self
        finally:
            for linear in patched:
                del linear.forward

    def _wrap(self, forward, lora: LoraModule):
        def lora_forward(x, *args, **kwargs):
            y = forward(x, *args, **kwargs)
            return y + lora.delta(x).to(y.dtype) if self.enabled else y
        return lora_forward

    @contextlib.contextmanager
    def disabled(self):
        """The original encoder, for as long as the block runs."""
        was, self.enabled = self.enabled, False
        try:
            yield
        finally:
            self.enabled = was

    def kohya_state_dict(self) -> dict[str, torch.Tensor]:
        """kohya layout: `<name>.lora_down.weight` [r,in], `.lora_up.weight` [out,r], `.alpha` (scale alpha/r)."""
        sd = {}
        for kohya, (_, lora) in self.modules.items():
            sd[f"{kohya}.lora_down.weight"] = lora.down.detach().float().cpu().contiguous()
            sd[f"{kohya}.lora_up.weight"] = lora.up.detach().float().cpu().contiguous()
            sd[f"{kohya}.alpha"] = torch.tensor(self.alpha)
        return sd
