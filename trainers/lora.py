"""Trainable LoRA on linear layers, saved in kohya's layout that ComfyUI's core LoraLoader (and
A1111, Forge, kohya) apply to the same weights:

- `TextLora`: the text encoder(s) of a CLIP, keys `lora_te_…` (`lora_te1_`/`lora_te2_` for SDXL);
- `UnetLora`: the attention projections of a UNet, keys `lora_unet_…` in kohya's diffusers-style
  names (`lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q`).

delta W = up @ down * (alpha / rank), with down [rank, in] ~ N(0, 1/rank) and up [out, rank] = 0
(peft's "gaussian" init, as TextBoost uses), so training starts from the unchanged model.
The LoRA runs as a temporary forward wrapper on the targeted linear layers inside `applied()`;
the model's own weights and modules are never changed, and `disabled()` gives the original
model (TextBoost's frozen copy for the knowledge-preservation loss) at no memory cost.
Every key is checked against ComfyUI's own LoRA key map when the LoRA is built.
"""
import contextlib
import re

import torch
import torch.nn.functional as F

import comfy.lora
import comfy.utils

# target name -> the module inside each text-encoder layer
TARGETS = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
           "out": "self_attn.out_proj", "fc1": "mlp.fc1", "fc2": "mlp.fc2"}
ALL_TARGETS = "q, k, v, out, fc1, fc2"
# target name -> the module inside each UNet attention block (attn1: self-, attn2: cross-attention)
UNET_TARGETS = {"to_q": "to_q", "to_k": "to_k", "to_v": "to_v", "to_out": "to_out.0"}
ALL_UNET_TARGETS = "to_q, to_k, to_v, to_out"
_LAYER = re.compile(r"(?:^|\.)encoder\.layers\.(\d+)\.(.+)$")
_ATTENTION = re.compile(r"\.transformer_blocks\.\d+\.attn[12]\.(.+)$")


def parse_targets(text: str, table: dict = TARGETS) -> list[str]:
    """"q, k, v" -> ["q", "k", "v"]; unknown names are an error listing the valid ones of `table`."""
    names = [t.strip().lower() for t in re.split(r"[,\s]+", text or "") if t.strip()]
    bad = [n for n in names if n not in table]
    if not names or bad:
        example = ALL_TARGETS if table is TARGETS else ALL_UNET_TARGETS
        raise ValueError(f"LoRA targets {text!r}: {'unknown ' + ', '.join(bad) if bad else 'none given'}. "
                         f"Valid targets: {', '.join(table)} (comma-separated), e.g. '{example}'.")
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


class LinearLora:
    """LoRA modules on a set of linear layers, each under its kohya name (filled in by subclasses)."""
    what = "model"

    def __init__(self, rank: int, alpha: float | None, seed: int):
        if rank < 1:
            raise ValueError(f"lora_rank {rank} is below 1: use 1 or more (TextBoost and AlignProp use 4).")
        self.rank, self.alpha, self.enabled = rank, float(rank if alpha is None else alpha), True
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        self.modules: dict[str, tuple[torch.nn.Module, LoraModule]] = {}     # kohya name -> (linear, lora)

    def _add(self, kohya: str, model_key: str, key_map: dict, linear: torch.nn.Module, device):
        if key_map.get(kohya) != model_key:
            raise RuntimeError(f"ComfyUI would not apply LoRA key {kohya} to {model_key}; this {self.what} "
                               f"layout is not supported for LoRA training.")
        self.modules[kohya] = (linear, LoraModule(linear, self.rank, self.alpha, self.generator,
                                                  device or linear.weight.device))

    def _check_found(self, targets: list[str], table: dict):
        if not self.modules:
            raise ValueError(f"LoRA targets {', '.join(targets)} match no layer of this {self.what}. "
                             f"Valid targets: {', '.join(table)}.")

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
        """The original model, for as long as the block runs."""
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


class TextLora(LinearLora):
    """LoRA modules on the `targets` of every layer of every text encoder of `clip`."""
    what = "text encoder"

    def __init__(self, clip, targets: list[str], rank: int, alpha: float | None = None, seed: int = 0, device=None):
        super().__init__(rank, alpha, seed)
        cond_model = clip.cond_stage_model
        keys = [k for k in ("l", "g", "h") if hasattr(cond_model, f"clip_{k}")]
        key_map = comfy.lora.model_lora_keys_clip(cond_model, {})
        wanted = {TARGETS[t] for t in targets}
        for key in keys:
            encoder = getattr(cond_model, f"clip_{key}")
            for name, m in encoder.named_modules():
                hit = _LAYER.search(name)
                if not hit or hit.group(2) not in wanted or not hasattr(m, "weight"):
                    continue
                inner = name.split("transformer.", 1)[1] if name.startswith("transformer.") else name
                self._add(kohya_prefix(key, keys) + inner.replace(".", "_"), f"clip_{key}.{name}.weight", key_map,
                          m, device)
        self._check_found(targets, TARGETS)


class UnetLora(LinearLora):
    """LoRA modules on the `targets` of every attention block (self and cross) of a UNet MODEL,
    named as kohya names SD UNets (from diffusers' module names), as AlignProp trains them."""
    what = "diffusion model"

    def __init__(self, model, targets: list[str], rank: int, alpha: float | None = None, seed: int = 0,
                 device=None):
        super().__init__(rank, alpha, seed)
        base = model.model                                # comfy.model_base.BaseModel
        unet = getattr(base, "diffusion_model", None)
        config = getattr(base.model_config, "unet_config", {}) or {}
        to_diffusers = {v: k for k, v in comfy.utils.unet_to_diffusers(config).items()}   # comfy key -> diffusers
        if unet is None or not to_diffusers:
            raise ValueError(f"{type(base).__name__} is not a UNet model (SD1.x, SD2.x or SDXL): a UNet LoRA can "
                             f"only be trained on those.")
        key_map = comfy.lora.model_lora_keys_unet(base, {})
        wanted = {UNET_TARGETS[t] for t in targets}
        for name, m in unet.named_modules():
            hit = _ATTENTION.search(name)
            if not hit or hit.group(1) not in wanted or not isinstance(getattr(m, "weight", None), torch.Tensor) \
                    or m.weight.dim() != 2:
                continue
            diffusers = to_diffusers.get(f"{name}.weight")
            if diffusers is None:
                raise RuntimeError(f"UNet layer {name} has no diffusers name; this UNet layout is not supported "
                                   f"for LoRA training.")
            kohya = "lora_unet_" + diffusers[:-len(".weight")].replace(".", "_")
            self._add(kohya, f"diffusion_model.{name}.weight", key_map, m, device)
        self._check_found(targets, UNET_TARGETS)
