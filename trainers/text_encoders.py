"""Fine-tuned text encoders as weight patches on a CLIP.

Files read (only through trainers/files.py: safetensors, or torch.load(weights_only=True)):
- HF `CLIPTextModel` state dicts (`text_model.…`, optional `text_projection.weight`): what the core
  CLIPSave node writes, and TextTune's reward-tuned encoders;
- TextCraftor checkpoints: the same keys behind DDP's `module.` prefix, in a `.pth`;
- peft LoRA adapters: a folder with `adapter_config.json` + `adapter_model.safetensors` (TexForce,
  TextBoost), keys `[base_model.model.]text_model.….lora_A/lora_B.weight`.

A file becomes patches on a clone of the CLIP (ComfyUI's ModelPatcher), so the input CLIP and its
weights stay as they are and no second encoder is built. With strength s:
- full weights F: W' = (1 − s)·W + s·F (ComfyUI's merge patch), so s = 0 is W and s = 1 is F exactly;
- a LoRA adapter (B, A, scale): W' = W + s·scale·B·A, i.e. s·(merged − W) on top of W.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

import torch

from . import files

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
STRENGTH_RANGE = (-1.0, 2.0)

_LAYER = re.compile(r"text_model\.encoder\.layers\.(\d+)\.")
_CLIP_PREFIX = re.compile(r"^(.*?)transformer\.text_model\.encoder\.layers\.\d+\.")
# Weights of HF CLIP files that carry nothing for the text conditioning.
_IGNORED = re.compile(r"^(text_model\.embeddings\.position_ids|logit_scale|vision_model\..*|visual_projection\..*)$")
_KNOWN = {(768, 12): "CLIP-L", (1024, 23): "OpenCLIP-H", (1024, 24): "OpenCLIP-H", (1280, 32): "OpenCLIP-bigG"}
_UNPREFIXED = ("embeddings.", "encoder.layers.", "final_layer_norm.")


def hf_text_key(key: str) -> str:
    """HF CLIPTextModel key in the classic layout: transformers 5 saves CLIPTextModel without the
    `text_model.` prefix (`encoder.layers.0.…`), earlier versions and CLIPSave with it."""
    return "text_model." + key if key.startswith(_UNPREFIXED) else key


# ---------------------------------------------------------------------------------------------
# architectures
@dataclass(frozen=True)
class EncoderSpec:
    """The shape of one CLIP text encoder."""
    width: int
    layers: int
    positions: int | None = None
    vocab: int | None = None

    def describe(self) -> str:
        name = _KNOWN.get((self.width, self.layers))
        shape = f"width {self.width}, {self.layers} layers"
        return f"{name} ({shape})" if name else f"a CLIP text encoder ({shape})"

    def mismatch(self, other: "EncoderSpec") -> str:
        """What differs, beyond width and layers (which describe() names)."""
        extra = [f"{what} {a} vs {b}" for what, a, b in (("positions", self.positions, other.positions),
                                                          ("vocabulary", self.vocab, other.vocab))
                 if a is not None and b is not None and a != b]
        return f" ({', '.join(extra)})" if extra else ""


def spec_from_shapes(shapes: dict, prefix: str = "") -> EncoderSpec | None:
    """EncoderSpec of the HF-keyed text encoder under `prefix` in {key: shape}, None if absent."""
    def shape(k):
        s = shapes.get(prefix + k)
        return None if s is None else tuple(s)
    layers = {int(m.group(1)) for k in shapes if k.startswith(prefix)
              for m in [_LAYER.match(k[len(prefix):])] if m}
    if not layers:
        return None
    tok = shape("text_model.embeddings.token_embedding.weight")
    pos = shape("text_model.embeddings.position_embedding.weight")
    width = None
    if tok is not None:
        width = tok[1]
    else:
        for k in ("text_model.final_layer_norm.weight", f"text_model.encoder.layers.{min(layers)}.layer_norm1.weight"):
            if shape(k) is not None:
                width = shape(k)[0]
                break
    if width is None:
        q = shape(f"text_model.encoder.layers.{min(layers)}.self_attn.q_proj.weight")
        width = q[1] if q is not None else 0
    return EncoderSpec(width=width, layers=max(layers) + 1, positions=pos[0] if pos else None,
                       vocab=tok[0] if tok else None)


def clip_encoders(clip) -> dict[str, tuple[str, EncoderSpec]]:
    """{"clip_l": (state-dict prefix, spec), ...}: the CLIP text encoders inside a ComfyUI CLIP."""
    shapes = {k: v.shape for k, v in clip.cond_stage_model.state_dict().items()}
    return encoders_from_shapes(shapes)


def encoders_from_shapes(shapes: dict) -> dict[str, tuple[str, EncoderSpec]]:
    prefixes = sorted({m.group(1) for k in shapes for m in [_CLIP_PREFIX.match(k)] if m})
    out = {}
    for p in prefixes:
        name = p.rstrip(".") or "clip"
        out[name] = (p, spec_from_shapes(shapes, p + "transformer."))
    return out


def describe_clip(encoders: dict[str, tuple[str, EncoderSpec]]) -> str:
    if not encoders:
        return "no CLIP text encoder"
    return "; ".join(f"{name}: {spec.describe()}" for name, (_, spec) in encoders.items())


# ---------------------------------------------------------------------------------------------
# what a file holds
@dataclass
class FullWeights:
    """A whole (or partial) text encoder in HF CLIPTextModel keys."""
    name: str
    tensors: dict[str, torch.Tensor]
    spec: EncoderSpec
    format: str                       # "hf" or "textcraftor"


@dataclass
class LoraModule:
    up: torch.Tensor                  # peft lora_B [out, r]
    down: torch.Tensor                # peft lora_A [r, in]
    scale: float                      # lora_alpha / r (or / sqrt(r) with rsLoRA)


@dataclass
class PeftAdapter:
    """A peft LoRA adapter of a CLIPTextModel: {HF module name: LoraModule}."""
    name: str
    modules: dict[str, LoraModule]
    base_model: str | None

    @property
    def width(self) -> int | None:
        for m, mod in self.modules.items():
            if m.endswith(("q_proj", "k_proj", "v_proj", "out_proj", "fc1")):
                return mod.down.shape[1]
        return None

    def describe(self) -> str:
        w = self.width
        name = {768: "CLIP-L", 1024: "OpenCLIP-H", 1280: "OpenCLIP-bigG"}.get(w)
        made = f"a LoRA adapter for {name} (width {w})" if name else f"a LoRA adapter for a text encoder of width {w}"
        return made + (f", base model '{self.base_model}'" if self.base_model else "")


def is_peft_folder(path: str) -> bool:
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, ADAPTER_CONFIG)) and \
        any(os.path.isfile(os.path.join(path, w)) for w in ADAPTER_WEIGHTS)


def peft_folder_of(path: str) -> str | None:
    """The adapter folder if `path` is one, or is the weights file inside one."""
    if is_peft_folder(path):
        return path
    if os.path.basename(path) in ADAPTER_WEIGHTS and is_peft_folder(os.path.dirname(path)):
        return os.path.dirname(path)
    return None


def read(path: str, device=None) -> FullWeights | PeftAdapter:
    """What the text-encoder file or peft adapter folder at `path` holds; raise naming anything else."""
    folder = peft_folder_of(path)
    if folder is not None:
        return read_peft_adapter(folder, device)
    if os.path.isdir(path):
        raise ValueError(f"'{os.path.basename(path)}' is a folder without a peft adapter: a peft text-encoder adapter "
                         f"folder holds {ADAPTER_CONFIG} and adapter_model.safetensors.")
    name = os.path.basename(path)
    return full_weights(files.load_weights(path, device), name)


def _strip_common(keys, prefix):
    return bool(keys) and all(k.startswith(prefix) for k in keys)


def not_a_text_encoder(keys: list[str]) -> str | None:
    """What a state dict is instead of a CLIP text encoder ("a LoRA …"), or None if it may be one."""
    def any_key(pred):
        return any(pred(k) for k in keys)
    if any_key(lambda k: re.search(r"(lora_(up|down|A|B|mid)|lora\.(up|down)|hada_w|lokr_w|(^|[._])oft_|\.alpha$|"
                                   r"lora_linear_layer|\.dora_scale$)", k)):
        return ("a LoRA (keys such as lora_up/lora_down or lora_A/lora_B): load it with the core Load LoRA node, "
                "or, for a peft text-encoder adapter, put its whole folder (with adapter_config.json) in "
                "models/text_encoders/ or models/loras/ and choose the folder here")
    if any_key(lambda k: k.startswith("model.diffusion_model.")):
        return ("a full checkpoint (diffusion model + text encoder + VAE): load it with Load Checkpoint; to use its "
                "text encoder here, save it first with the core Save CLIP node (CLIPSave)")
    if any_key(lambda k: k.startswith(("input_blocks.", "middle_block.", "output_blocks.", "down_blocks.",
                                       "up_blocks.", "mid_block.", "double_blocks.", "single_blocks.",
                                       "joint_blocks.", "diffusion_model.", "time_embed.", "time_embedding."))):
        return "a diffusion model (UNet) file: load it with Load Diffusion Model or Load Checkpoint"
    if any_key(lambda k: k.startswith(("encoder.down.", "decoder.up.", "decoder.conv_in.", "first_stage_model.",
                                       "taesd_decoder.", "encoder.down_blocks.", "decoder.up_blocks."))):
        return "a VAE: load it with Load VAE"
    if keys and set(keys) <= {"emb_params", "string_to_param", "string_to_token", "name", "step", "clip_l",
                              "clip_g", "sd_checkpoint", "sd_checkpoint_name"} or \
            any_key(lambda k: k.startswith("string_to_param.")):
        return ("a textual-inversion embedding: put it in models/embeddings/ and write embedding:<file name> in "
                "the prompt")
    if any_key(lambda k: k.startswith(("encoder.block.", "shared.weight"))):
        return "a T5 text encoder: this node replaces CLIP text encoders (L, G or H) only"
    if not any_key(lambda k: k.startswith("text_model.")) and \
            any_key(lambda k: k.startswith("vision_model.") or "patch_embedding" in k):
        return "a CLIP vision (image) encoder: load it with Load CLIP Vision"
    return None


def full_weights(state_dict: dict[str, torch.Tensor], name: str) -> FullWeights:
    """Recognise and convert a full text-encoder state dict to HF CLIPTextModel keys."""
    keys = list(state_dict)
    fmt = "hf"
    if _strip_common(keys, "module."):           # TextCraftor: torch.save(DDP(text_encoder).state_dict())
        state_dict = {k[len("module."):]: v for k, v in state_dict.items()}
        keys, fmt = list(state_dict), "textcraftor"
    what = not_a_text_encoder(keys)
    if what:
        raise ValueError(f"'{name}' is not a text encoder: it is {what}.")
    tensors = {}
    unexpected = []
    for k, v in state_dict.items():
        k = hf_text_key(k)
        if _IGNORED.match(k):
            continue
        if k == "text_projection":               # old CLIPSave files: [width, projection], transposed
            tensors["text_projection.weight"] = v.transpose(0, 1).contiguous()
        elif k.startswith("text_model.") or k == "text_projection.weight":
            tensors[k] = v
        else:
            unexpected.append(k)
    spec = spec_from_shapes({k: v.shape for k, v in tensors.items()})
    if spec is None:
        shown = ", ".join(keys[:4]) + (", …" if len(keys) > 4 else "")
        raise ValueError(f"No CLIP text-encoder weights found in '{name}' (its keys: {shown or 'none'}). Expected a "
                         f"HF CLIPTextModel state dict with keys such as text_model.encoder.layers.0.self_attn.q_proj."
                         f"weight (the core Save CLIP node writes these), a TextCraftor .pth (the same keys behind "
                         f"'module.'), or a peft adapter folder.")
    if unexpected:
        shown = ", ".join(unexpected[:4]) + (", …" if len(unexpected) > 4 else "")
        raise ValueError(f"'{name}' holds weights that are not part of a CLIP text encoder: {shown}. "
                         f"Save the text encoder alone (e.g. with the core Save CLIP node).")
    return FullWeights(name=name, tensors=tensors, spec=spec, format=fmt)


# ---------------------------------------------------------------------------------------------
# peft adapters
_PEFT_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[A-Za-z0-9_\-]+)?\.weight$")


def _pattern_value(patterns: dict, module: str, default):
    # peft's rule (peft.utils.other.get_pattern_key): the first pattern that matches the end of the name
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def read_peft_adapter(folder: str, device=None) -> PeftAdapter:
    name = os.path.basename(os.path.normpath(folder)) + "/"
    cfg = files.read_json(os.path.join(folder, ADAPTER_CONFIG))
    if not isinstance(cfg, dict):
        raise ValueError(f"{ADAPTER_CONFIG} of '{name}' is not a JSON object.")
    kind = cfg.get("peft_type", "LORA")
    if str(kind).upper() != "LORA":
        raise ValueError(f"'{name}' is a peft {kind} adapter; only LoRA adapters are supported.")
    refused = [(field, why) for field, why in (
        ("use_dora", "DoRA"), ("lora_bias", "LoRA biases"), ("modules_to_save", "fully trained extra modules"),
        ("trainable_token_indices", "trainable token rows"), ("layer_replication", "layer replication"),
        ("target_parameters", "parameter targets"), ("fan_in_fan_out", "fan_in_fan_out weights"),
        ("use_qalora", "QALoRA"), ("use_bdlora", "block-diagonal LoRA"), ("alora_invocation_tokens", "aLoRA"),
        ("arrow_config", "Arrow routing"), ("monteclora_config", "MonteCLoRA"), ("kasa_config", "KaSA"))
        if cfg.get(field)]
    init = str(cfg.get("init_lora_weights", "")).lower()
    if init.startswith(("pissa", "olora", "corda", "loftq", "lora_ga")):
        # these also change the base weights, so the adapter alone is not base + B·A
        refused.append(("init_lora_weights", f"{init} initialisation (convert it to a plain LoRA with peft first)"))
    if cfg.get("bias", "none") not in (None, "none"):
        refused.append(("bias", "trained biases"))
    if refused:
        raise ValueError(f"'{name}' uses {', '.join(w for _, w in refused)} ({', '.join(f for f, _ in refused)} in "
                         f"{ADAPTER_CONFIG}), which this node does not read; only plain LoRA adapters are supported.")
    for field in ("r", "lora_alpha"):
        if not isinstance(cfg.get(field), (int, float)) or isinstance(cfg.get(field), bool):
            raise ValueError(f"{ADAPTER_CONFIG} of '{name}' has no number '{field}'.")
    path = next(os.path.join(folder, w) for w in ADAPTER_WEIGHTS if os.path.isfile(os.path.join(folder, w)))
    state = files.load_weights(path, device)
    parts: dict[str, dict[str, torch.Tensor]] = {}
    bad = []
    for k, v in state.items():
        m = _PEFT_KEY.match(k)
        if m is None or v.ndim != 2:
            bad.append(k)
            continue
        parts.setdefault(m.group("module"), {})[m.group("ab")] = v
    if bad:
        shown = ", ".join(bad[:4]) + (", …" if len(bad) > 4 else "")
        raise ValueError(f"'{name}' has weights that are not LoRA matrices of linear layers: {shown}. Only plain "
                         f"LoRA adapters (lora_A / lora_B of linear layers) are supported.")
    if not parts:
        raise ValueError(f"'{name}' holds no LoRA weights.")
    modules = {}
    for module, ab in sorted(parts.items()):
        if set(ab) != {"A", "B"}:
            raise ValueError(f"'{name}': {module} has lora_{next(iter(ab))} without its partner matrix.")
        down, up = ab["A"], ab["B"]
        rank = down.shape[0]
        if up.shape[1] != rank:
            raise ValueError(f"'{name}': {module} has lora_A of rank {rank} but lora_B of rank {up.shape[1]}.")
        r = _pattern_value(cfg.get("rank_pattern"), module, cfg["r"])
        if int(r) != rank:
            raise ValueError(f"'{name}': {ADAPTER_CONFIG} gives rank {r} for {module}, its weights have rank {rank}.")
        alpha = float(_pattern_value(cfg.get("alpha_pattern"), module, cfg["lora_alpha"]))
        scale = alpha / math.sqrt(rank) if cfg.get("use_rslora") else alpha / rank
        modules[hf_text_key(module)] = LoraModule(up=up, down=down, scale=scale)   # peft matched patterns on `module`
    return PeftAdapter(name=name, modules=modules, base_model=cfg.get("base_model_name_or_path") or None)


# ---------------------------------------------------------------------------------------------
# patches on a CLIP
ENCODER_CHOICES = ["auto", "L", "G", "H"]


def choose_encoder(encoders: dict[str, tuple[str, EncoderSpec]], loaded, choice: str, clip_label="the CLIP"):
    """(name, prefix, spec) of the encoder the file replaces; raise naming both architectures on a mismatch."""
    if not encoders:
        raise ValueError(f"{clip_label} has no CLIP text encoder (L, G or H) for '{loaded.name}' to replace.")
    if choice != "auto":
        name = f"clip_{choice.lower()}"
        if name not in encoders:
            raise ValueError(f"{clip_label} has no {name} encoder (it has {', '.join(encoders)}): choose "
                             f"encoder={' or '.join(n[len('clip_'):].upper() for n in encoders)} or auto.")
        candidates = {name: encoders[name]}
    else:
        candidates = encoders
    fitting = {n: e for n, e in candidates.items() if fits(loaded, e[1])}
    if len(fitting) == 1:
        name, (prefix, spec) = next(iter(fitting.items()))
        return name, prefix, spec
    made = loaded.describe() if isinstance(loaded, PeftAdapter) else loaded.spec.describe()
    if not fitting:
        clip_side = "; ".join(f"the CLIP's {n} is {s.describe()}"
                              + (s.mismatch(loaded.spec) if isinstance(loaded, FullWeights) else "")
                              for n, (_, s) in candidates.items())
        raise ValueError(f"Shape mismatch: '{loaded.name}' is {made}, but {clip_side}. Load a file made for this "
                         f"model's encoder" + (" or choose the other encoder (L or G) for SDXL." if len(encoders) > 1
                                               else "."))
    raise ValueError(f"'{loaded.name}' fits more than one encoder of {clip_label} ({', '.join(fitting)}): choose "
                     f"which one it replaces with encoder=" + " or ".join(n[len('clip_'):].upper() for n in fitting))


def fits(loaded, spec: EncoderSpec) -> bool:
    if isinstance(loaded, FullWeights):
        s = loaded.spec
        return s.width == spec.width and s.layers == spec.layers and \
            all(a is None or b is None or a == b for a, b in ((s.positions, spec.positions), (s.vocab, spec.vocab)))
    return loaded.width in (None, spec.width) and all(
        (m := _LAYER.match(mod)) is None or int(m.group(1)) < spec.layers for mod in loaded.modules)


def patches(loaded, prefix: str, target: dict[str, torch.Tensor]) -> dict:
    """{ComfyUI weight key: patch} for the encoder under `prefix` of a CLIP whose state dict is `target`."""
    import comfy.weight_adapter
    out = {}
    missing = []
    if isinstance(loaded, FullWeights):
        for k, v in loaded.tensors.items():
            key = f"{prefix}transformer.{k}"
            weight = target.get(key)
            if weight is None or weight.shape != v.shape:
                missing.append((k, tuple(v.shape), None if weight is None else tuple(weight.shape)))
                continue
            if v.is_floating_point() and weight.is_floating_point() and v.element_size() > weight.element_size() \
                    and weight.element_size() >= 2:
                v = v.to(weight.dtype)       # hold no wider copy than the encoder's own (fp16/bf16) weights
            out[key] = (v,)
    else:
        for module, m in loaded.modules.items():
            key = f"{prefix}transformer.{module}.weight"
            weight = target.get(key)
            shape = (m.up.shape[0], m.down.shape[1])
            if weight is None or tuple(weight.shape) != shape:
                missing.append((module, shape, None if weight is None else tuple(weight.shape)))
                continue
            # ComfyUI's LoRA patch adds strength * (alpha / rank) * up @ down
            rank = m.down.shape[0]
            out[key] = comfy.weight_adapter.LoRAAdapter(set(), (m.up, m.down, m.scale * rank, None, None, None))
    if missing:
        k, have, want = missing[0]
        where = "has no such weight" if want is None else f"has shape {list(want)}"
        raise ValueError(f"'{loaded.name}' does not fit this encoder: {len(missing)} weight(s) have no place, e.g. "
                         f"{k} {list(have)} (the encoder {where}).")
    return out


def check_strength(strength: float) -> float:
    lo, hi = STRENGTH_RANGE
    if not isinstance(strength, (int, float)) or not math.isfinite(strength) or not lo <= strength <= hi:
        raise ValueError(f"strength {strength} is outside [{lo:g}, {hi:g}]: 0 keeps the input encoder, 1 gives the "
                         f"file's encoder, values between interpolate and values outside extrapolate.")
    return float(strength)


def apply(clip, loaded, strength: float, choice: str = "auto"):
    """A clone of `clip` whose chosen encoder is base + strength·(file − base), as weight patches."""
    strength = check_strength(strength)
    encoders = clip_encoders(clip)
    name, prefix, _ = choose_encoder(encoders, loaded, choice)
    patch = patches(loaded, prefix, clip.cond_stage_model.state_dict())
    out = clip.clone()
    if isinstance(loaded, FullWeights):
        added = out.add_patches(patch, strength, 1.0 - strength)
    else:
        added = out.add_patches(patch, strength)
    if len(added) != len(patch):
        raise RuntimeError(f"Only {len(added)} of {len(patch)} weights of '{loaded.name}' were patched into {name}.")
    return out
