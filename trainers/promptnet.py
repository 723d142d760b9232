"""PromptNet (ProFusion, Zhou et al. 2023; research/methods.md §3.1): an encoder that turns a reference
image into one word embedding S* of the text encoder, recomputed at every denoising step.

    S* = PromptNet(x0_ref, t, vision_tokens(image), x_t)            [B, n, text width], n = 1 at 512 px

The network is the encoder half (down blocks + mid block) of an SD2-base-shaped UNet. The clean
reference latent enters through `conv_in`; the noisy latent x_t through `promptnet_cond_embedding`
(conv3x3, SiLU, conv3x3), added to it. Cross-attention reads the vision tower's `last_hidden_state`
projected by `vision_embedding`. Six maps (after conv_in, after each down block, after the mid
block) are projected by strided convolutions onto one grid, concatenated and merged by
`region_prompt_output` into the word embedding(s).

Module and parameter names are those of the official `PromptNetModel` (the repository's forked
diffusers), so a released `promptnet/` state dict loads with no missing or unexpected keys: ResNet
blocks, down-samplers and time embedding are written here under diffusers' names; the
transformer blocks are ComfyUI's `SpatialTransformer`, whose parameter names are diffusers'
`Transformer2DModel` names. Differences from the official forward, none of which changes S*:
its ControlNet-style residual heads (`use_res`) are built, so their weights load, but not computed
(the pipeline calls the UNet with `res_scale=0`, so it never used them either).

Around the network:
- `PromptNet`: a loaded PromptNet with its vision tower (transformers `CLIPVisionModel`), each held by a
  ComfyUI ModelPatcher; read from the released layout (`load_release`) or from our own file
  (`load_file`, written by `save_file`).
- `PlaceholderPrompt`: a prompt whose placeholder word is replaced by S*. ComfyUI adds the position
  embedding after token embeddings, the official code overwrites token + position: so S* − pos[slot]
  goes in, and S* comes out of the embedding layer.
- `SStar`: S* inside fusion sampling (trainers/fusion.py): the reference image encoded once, S*
  recomputed from the current x_t and t at every model evaluation of the concept prompt.
- `PromptNetTraining`: per-image fine-tuning on the shared engine (PromptNet, optionally a LoRA on the
  UNet's attention q/k/v).
"""
from __future__ import annotations

import contextlib
import json
import math
import os

import torch
import torch.nn.functional as F
from torch import nn

import comfy.conds
import comfy.model_management as mm
import comfy.model_patcher
import comfy.ops
from comfy.ldm.modules.attention import SpatialTransformer

from . import engine, files, formats
from .comfy_adapter import Diffusion, TextEncoder, trainable_session
from .openclip import fill_position_ids
from .rewards import Preprocess, compute_dtype
from .timesteps import TimestepSampler

ops = comfy.ops.disable_weight_init      # no random init: weights come from a file (or `init_random_`)

# ---------------------------------------------------------------------------------------------
# configuration (the official PromptNetModel's constructor arguments, as its config.json holds them)
DEFAULTS = {
    "in_channels": 4,
    "block_out_channels": [160, 320, 640, 640],
    "res_block_out_channels": [160, 320, 640, 640],
    "layers_per_block": 2,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "attention_head_dim": 8,            # diffusers' old name: the number of heads per block
    "cross_attention_dim": 1024,
    "use_linear_projection": False,
    "upcast_attention": False,
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1.0,
    "conv_in_kernel": 3,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "region_kernel_size": 8,
    "region_proj_channel": 128,
    "prompt_channel": 1024,             # the text width: S* is a word of this width
    "use_clip_vision_embeds": False,    # official: vision_embedding reads 1280 (True) or 1024 features
    "use_res": True,
    "with_noise": False,                # True (every release): x_t is the second input; else x0_ref again
    "vision_width": None,               # ours: the vision tower's width, when not implied by the above
}
# arguments the official class accepts that this implementation does not: value it must have
_ONLY = {"act_fn": "silu", "time_embedding_type": "positional", "class_embed_type": None, "num_class_embeds": None,
         "dual_cross_attention": False, "only_cross_attention": False, "resnet_time_scale_shift": "default",
         "timestep_post_act": None, "time_cond_proj_dim": None, "center_input_sample": False}
BLOCK_TYPES = ("CrossAttnDownBlock2D", "DownBlock2D")
MID_TYPES = ("UNetMidBlock2DCrossAttn", None)
UNUSED_PREFIXES = ("residual_projections.", "residual_projections_2.", "mid_residual_projection.",
                   "mid_residual_projection_2.")


def sd2_base_config() -> dict:
    """The shape of the released PromptNet (train.py: SD2-base's UNet config with use_res, with_noise,
    use_clip_vision_embeds and 1024-wide words)."""
    return read_config({"block_out_channels": [320, 640, 1280, 1280], "res_block_out_channels": [320, 640, 1280, 1280],
                        "attention_head_dim": [5, 10, 20, 20], "use_linear_projection": True,
                        "use_clip_vision_embeds": True, "with_noise": True, "prompt_channel": 1024,
                        "cross_attention_dim": 1024, "sample_size": 64})


def read_config(raw: dict, where: str = "the PromptNet config") -> dict:
    """The official config (or ours) -> a complete, checked config of the fields used here."""
    bad = [f"{k}={raw[k]!r} (supported: {v!r})" for k, v in _ONLY.items() if k in raw and raw[k] != v]
    if bad:
        raise ValueError(f"{where} asks for {', '.join(bad)}, which this PromptNet implementation does not build.")
    cfg = {k: raw.get(k, v) for k, v in DEFAULTS.items()}
    for k in ("block_out_channels", "res_block_out_channels", "down_block_types"):
        cfg[k] = list(cfg[k])
    n = len(cfg["down_block_types"])
    heads = cfg["attention_head_dim"]
    cfg["attention_head_dim"] = [heads] * n if isinstance(heads, int) else list(heads)
    if cfg["vision_width"] is None:
        cfg["vision_width"] = 1280 if cfg["use_clip_vision_embeds"] else 1024
    problems = []
    if not n or len(cfg["block_out_channels"]) != n or len(cfg["res_block_out_channels"]) != n \
            or len(cfg["attention_head_dim"]) != n:
        problems.append("down_block_types, block_out_channels, res_block_out_channels and attention_head_dim "
                        "need one entry per block")
    unknown = [t for t in cfg["down_block_types"] if t not in BLOCK_TYPES]
    if unknown:
        problems.append(f"down block types {unknown} (supported: {', '.join(BLOCK_TYPES)})")
    if cfg["mid_block_type"] not in MID_TYPES:
        problems.append(f"mid_block_type {cfg['mid_block_type']!r} (supported: UNetMidBlock2DCrossAttn or null)")
    for c, h in zip(cfg["block_out_channels"], cfg["attention_head_dim"]):
        if c % 32 or c % cfg["norm_num_groups"] or c % h:
            problems.append(f"block width {c} must be a multiple of 32, of norm_num_groups and of its {h} heads")
    if cfg["conv_in_kernel"] % 2 != 1:
        problems.append(f"conv_in_kernel {cfg['conv_in_kernel']} must be odd")
    if problems:
        raise ValueError(f"{where} does not describe a PromptNet this implementation builds: {'; '.join(problems)}.")
    return cfg


def first_downsize(cfg: dict) -> int:
    """Kernel (= stride) of the projection after conv_in: the grid the six maps are projected onto is
    the latent divided by this."""
    return max(2 ** (len(cfg["down_block_types"]) - 1), 8)


def word_count(cfg: dict, height: int, width: int) -> int:
    """How many word embeddings S* has for a latent of this size (1 for SD2-base at 512 px)."""
    d, k = first_downsize(cfg), cfg["region_kernel_size"]
    if height // d < k or width // d < k:
        raise ValueError(f"This PromptNet needs latents of at least {d * k}x{d * k} (images of {d * k * 8} px "
                         f"with an 8x VAE); got a {height}x{width} latent. Use a larger image size.")
    return (height // d // k) * (width // d // k)


# ---------------------------------------------------------------------------------------------
# the network, under the official module names
def timestep_features(t: torch.Tensor, dim: int, flip_sin_to_cos: bool, shift: float) -> torch.Tensor:
    """diffusers' sinusoidal timestep features (`Timesteps`), float32."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / (half - shift))
    angles = t.float()[:, None] * freqs[None]
    sin, cos = torch.sin(angles), torch.cos(angles)
    out = torch.cat([cos, sin] if flip_sin_to_cos else [sin, cos], dim=-1)
    return F.pad(out, (0, 1)) if dim % 2 else out


class ResnetBlock2D(nn.Module):
    def __init__(self, cin, cout, temb, groups, eps, scale=1.0, device=None):
        super().__init__()
        self.norm1 = ops.GroupNorm(groups, cin, eps=eps, affine=True, device=device)
        self.conv1 = ops.Conv2d(cin, cout, 3, padding=1, device=device)
        self.time_emb_proj = ops.Linear(temb, cout, device=device)
        self.norm2 = ops.GroupNorm(groups, cout, eps=eps, affine=True, device=device)
        self.conv2 = ops.Conv2d(cout, cout, 3, padding=1, device=device)
        self.conv_shortcut = ops.Conv2d(cin, cout, 1, device=device) if cin != cout else None
        self.scale = scale

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        skip = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return (skip + h) / self.scale


class Downsample2D(nn.Module):
    def __init__(self, channels, padding, device=None):
        super().__init__()
        self.padding = padding
        self.conv = ops.Conv2d(channels, channels, 3, stride=2, padding=padding, device=device)

    def forward(self, x):
        if self.padding == 0:
            x = F.pad(x, (0, 1, 0, 1))
        return self.conv(x)


def _transformer(channels: int, heads: int, cfg: dict, device):
    extra = {"attn_precision": torch.float32} if cfg["upcast_attention"] else {}
    return SpatialTransformer(channels, heads, channels // heads, depth=1, context_dim=cfg["cross_attention_dim"],
                              use_linear=cfg["use_linear_projection"], use_checkpoint=False, device=device,
                              operations=ops, **extra)


class DownBlock(nn.Module):
    """CrossAttnDownBlock2D (resnet, transformer per layer) or DownBlock2D (resnets only), then a
    stride-2 convolution unless it is the last block."""

    def __init__(self, cin, cout, cfg, temb, heads, cross, downsample, device=None):
        super().__init__()
        groups, eps, layers = cfg["norm_num_groups"], cfg["norm_eps"], cfg["layers_per_block"]
        self.resnets = nn.ModuleList([ResnetBlock2D(cin if i == 0 else cout, cout, temb, groups, eps, device=device)
                                      for i in range(layers)])
        self.attentions = nn.ModuleList([_transformer(cout, heads, cfg, device) for _ in range(layers)]) \
            if cross else None
        self.downsamplers = nn.ModuleList([Downsample2D(cout, cfg["downsample_padding"], device)]) \
            if downsample else None

    def forward(self, h, temb, context):
        for i, resnet in enumerate(self.resnets):
            h = resnet(h, temb)
            if self.attentions is not None:
                h = self.attentions[i](h, context=context, transformer_options={})
        if self.downsamplers is not None:
            h = self.downsamplers[0](h)
        return h


class MidBlock(nn.Module):
    """UNetMidBlock2DCrossAttn: resnet, transformer, resnet."""

    def __init__(self, channels, cfg, temb, heads, device=None):
        super().__init__()
        groups, eps, scale = cfg["norm_num_groups"], cfg["norm_eps"], cfg["mid_block_scale_factor"]
        self.resnets = nn.ModuleList([ResnetBlock2D(channels, channels, temb, groups, eps, scale, device)
                                      for _ in range(2)])
        self.attentions = nn.ModuleList([_transformer(channels, heads, cfg, device)])

    def forward(self, h, temb, context):
        h = self.resnets[0](h, temb)
        h = self.attentions[0](h, context=context, transformer_options={})
        return self.resnets[1](h, temb)


class TimestepEmbedding(nn.Module):
    def __init__(self, cin, dim, device=None):
        super().__init__()
        self.linear_1 = ops.Linear(cin, dim, device=device)
        self.linear_2 = ops.Linear(dim, dim, device=device)

    def forward(self, x):
        return self.linear_2(F.silu(self.linear_1(x)))


class PromptEmbedding(nn.Module):
    """The noisy-latent branch: conv3x3, SiLU, conv3x3 into the first block's channels."""

    def __init__(self, cin, cout, device=None):
        super().__init__()
        self.conv_in = ops.Conv2d(cin, cout, 3, padding=1, device=device)
        self.conv_out = ops.Conv2d(cout, cout, 3, padding=1, device=device)

    def forward(self, x):
        return self.conv_out(F.silu(self.conv_in(x)))


def _residual_heads(cin, cout, device):
    """One ControlNet-style head of the official model (use_res): loaded, never computed."""
    return ops.Conv2d(cin, cout, 1, device=device), ops.Conv2d(cout, cout, 1, bias=False, device=device)


class PromptNetModel(nn.Module):
    """The official PromptNetModel's parameters and S* computation. `forward` returns [B, n, prompt_channel]."""

    def __init__(self, cfg: dict, device=None):
        super().__init__()
        self.cfg = cfg = read_config(cfg)
        chans, res = cfg["block_out_channels"], cfg["res_block_out_channels"]
        cin, rp, temb = cfg["in_channels"], cfg["region_proj_channel"], chans[0] * 4
        k = cfg["conv_in_kernel"]
        self.conv_in = ops.Conv2d(cin, chans[0], k, padding=(k - 1) // 2, device=device)
        self.time_embedding = TimestepEmbedding(chans[0], temb, device)
        self.promptnet_cond_embedding = PromptEmbedding(cin, chans[0], device)
        self.vision_embedding = ops.Linear(cfg["vision_width"], cfg["cross_attention_dim"], device=device)
        self.down_blocks = nn.ModuleList()
        self.down_prompt_projections = nn.ModuleList()
        if cfg["use_res"]:
            self.residual_projections, self.residual_projections_2 = nn.ModuleList(), nn.ModuleList()

        def add_residual(c_in, c_out):
            if cfg["use_res"]:
                a, b = _residual_heads(c_in, c_out, device)
                self.residual_projections.append(a)
                self.residual_projections_2.append(b)

        down = first_downsize(cfg)
        self.first_prompt_projection = ops.Conv2d(chans[0], rp, down, stride=down, device=device)
        add_residual(chans[0], res[0])
        n = len(chans)
        for i, kind in enumerate(cfg["down_block_types"]):
            final = i == n - 1
            c_prev = chans[i - 1] if i else chans[0]
            self.down_blocks.append(DownBlock(c_prev, chans[i], cfg, temb, cfg["attention_head_dim"][i],
                                              kind == "CrossAttnDownBlock2D", not final, device))
            if not final:
                down //= 2
            self.down_prompt_projections.append(ops.Conv2d(chans[i], rp, down, stride=down, device=device))
            for _ in range(cfg["layers_per_block"] + (0 if final else 1)):
                add_residual(chans[i], res[i])
        maps = 1 + n
        if cfg["mid_block_type"] is not None:
            self.mid_block = MidBlock(chans[-1], cfg, temb, cfg["attention_head_dim"][-1], device)
            self.mid_prompt_projection = ops.Conv2d(chans[-1], rp, down, stride=down, device=device)
            maps += 1
            if cfg["use_res"]:
                self.mid_residual_projection, self.mid_residual_projection_2 = \
                    _residual_heads(chans[-1], res[-1], device)
        else:
            self.mid_block = None
        rk = cfg["region_kernel_size"]
        self.region_prompt_output = ops.Conv2d(maps * rp, cfg["prompt_channel"], rk, stride=rk, device=device)

    @property
    def dtype(self):
        return next(self.parameters()).dtype

    def get_dtype(self):                 # what ComfyUI's ModelPatcher asks
        return self.dtype

    def forward(self, ref_latent, timestep, image_tokens, noisy_latent):
        """ref_latent [1|B, 4, h, w] (clean, model space), timestep [B] (DDPM t), image_tokens [1|B, S, V]
        (vision last_hidden_state), noisy_latent [B, 4, h, w] (x_t in DDPM scale) -> S* [B, n, D]."""
        cfg, dtype = self.cfg, self.dtype
        b = noisy_latent.shape[0]
        ref = ref_latent.to(dtype).expand(b, -1, -1, -1)
        t = timestep.reshape(-1).expand(b) if timestep.numel() == 1 else timestep.reshape(b)
        temb = self.time_embedding(timestep_features(t, cfg["block_out_channels"][0], cfg["flip_sin_to_cos"],
                                                     cfg["freq_shift"]).to(dtype))
        second = noisy_latent.to(dtype) if cfg["with_noise"] else ref
        h = self.conv_in(ref) + self.promptnet_cond_embedding(second)
        context = self.vision_embedding(image_tokens.to(dtype).expand(b, -1, -1))
        maps = [self.first_prompt_projection(h)]
        for block, projection in zip(self.down_blocks, self.down_prompt_projections):
            h = block(h, temb, context)
            maps.append(projection(h))
        if self.mid_block is not None:
            h = self.mid_block(h, temb, context)
            maps.append(self.mid_prompt_projection(h))
        words = self.region_prompt_output(torch.cat(maps, dim=1))
        return words.flatten(2).transpose(1, 2)


def init_random_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Fan-in scaled random weights, norm scales 1 (ComfyUI ops skip initialisation): for tests and
    from-scratch experiments."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / max(1, math.prod(p.shape[1:])) ** 0.5)
            elif name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    return model


def build(cfg: dict, state_dict: dict, where: str, dtype=None) -> PromptNetModel:
    """A PromptNetModel holding `state_dict` (official key names), every key used and every weight set."""
    with torch.device("meta"):
        model = PromptNetModel(cfg, device="meta")
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state_dict) if tuple(state_dict[k].shape) != expected[k])
    if missing or unexpected or wrong:
        detail = "; ".join(part for part in (
            f"missing {len(missing)} (e.g. {missing[:3]})" if missing else "",
            f"unexpected {len(unexpected)} (e.g. {unexpected[:3]})" if unexpected else "",
            f"shapes differ from the config for {wrong[:3]}" if wrong else "") if part)
        raise ValueError(f"The weights in {where} do not fit the PromptNet its config describes: {detail}.")
    model.load_state_dict({k: v.to(dtype) if dtype is not None else v for k, v in state_dict.items()},
                          strict=True, assign=True)
    return model.requires_grad_(False).eval()


# ---------------------------------------------------------------------------------------------
# the vision tower (openclip/: a transformers CLIPModel or CLIPVisionModel folder)
VISION_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                "pytorch_model.bin.index.json")
PROMPTNET_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
RELEASE_LAYOUT = ("promptnet/config.json with promptnet/diffusion_pytorch_model.safetensors (or .bin), and "
                  "openclip/config.json with openclip/model.safetensors (or pytorch_model.bin)")


def _first_file(folder: str, names) -> str | None:
    return next((os.path.join(folder, n) for n in names if os.path.isfile(os.path.join(folder, n))), None)


def _missing(folder: str, what: str) -> FileNotFoundError:
    return FileNotFoundError(f"{folder} has no {what}. A ProFusion PromptNet folder holds {RELEASE_LAYOUT} "
                             f"(the released pipeline folder, as its README links it).")


def _vision_weights(folder: str, path: str) -> dict:
    """The `vision_model.*` tensors of a (possibly sharded) transformers weights file."""
    if path.endswith(".index.json"):
        shards = sorted({f for k, f in files.read_json(path).get("weight_map", {}).items()
                         if k.startswith("vision_model.")})
        out = {}
        for shard in shards:
            out.update({k: v for k, v in files.load_weights(os.path.join(folder, shard)).items()
                        if k.startswith("vision_model.")})
        return out
    return {k: v for k, v in files.load_weights(path).items() if k.startswith("vision_model.")}


def load_vision(folder: str):
    """A frozen transformers CLIPVisionModel from a CLIPModel (or CLIPVisionModel) folder, only its
    vision half read (built on the meta device, then the weights assigned: no random initialisation)."""
    from transformers import CLIPVisionConfig, CLIPVisionModel
    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        raise _missing(folder, "config.json")
    weights = _first_file(folder, VISION_FILES)
    if weights is None:
        raise _missing(folder, "weights (model.safetensors or pytorch_model.bin)")
    raw = files.read_json(config_path)
    if "vision_config" in raw:
        raw = raw["vision_config"]
    elif raw.get("model_type") != "clip_vision_model":
        raise ValueError(f"{config_path} is not a CLIP model config (no vision_config): openclip/ must hold the "
                         f"transformers CLIPModel of ProFusion's release.")
    config = CLIPVisionConfig.from_dict(raw)
    with torch.device("meta"):
        model = CLIPVisionModel(config)
    expected = {k for k in model.state_dict() if not k.endswith("position_ids")}   # a buffer older files saved
    prefix = "" if any(k.startswith("vision_model.") for k in expected) else "vision_model."   # transformers 5
    sd = {k[len(prefix):]: v for k, v in _vision_weights(folder, weights).items() if not k.endswith("position_ids")}
    missing, extra = sorted(expected - set(sd)), sorted(set(sd) - expected)
    if missing or extra:
        raise ValueError(f"The vision weights in {folder} do not fit its config.json (missing {missing[:3]}, "
                         f"unexpected {extra[:3]}).")
    model.load_state_dict(sd, strict=False, assign=True)
    return fill_position_ids(model).requires_grad_(False).eval()


# ---------------------------------------------------------------------------------------------
# a loaded PromptNet (the TEXTTUNE_PROMPTNET value)
class PromptNet:
    """PromptNet and its vision tower under ComfyUI's model management. `source` is the name it was
    loaded under; `vision_source` the release folder (in models/promptnet/) whose openclip/ it uses."""

    def __init__(self, net: PromptNetModel, vision_patcher, source: str, vision_source: str):
        self.net, self.config = net, net.cfg
        self.source, self.vision_source = source, vision_source
        self.patcher = comfy.model_patcher.ModelPatcher(net, load_device=mm.get_torch_device(),
                                                        offload_device=mm.unet_offload_device())
        self.vision_patcher = vision_patcher
        size = vision_patcher.model["vision"].config.image_size
        self.preprocess = Preprocess(size=size, crop=size)        # train.py: bicubic to 224, OpenAI mean/std
        width = vision_patcher.model["vision"].config.hidden_size
        if width != self.config["vision_width"]:
            raise ValueError(f"The vision tower of {vision_source} is {width} wide but the PromptNet {source} reads "
                             f"{self.config['vision_width']}-wide image tokens: they are not from the same release.")

    @classmethod
    def from_modules(cls, net: PromptNetModel, vision, source: str, vision_source: str) -> "PromptNet":
        device = mm.get_torch_device()
        net = net.to(mm.unet_dtype(device))
        vision = vision.to(compute_dtype("auto", device))
        holder = nn.ModuleDict({"vision": vision})               # ModelPatcher sets .device on what it holds
        patcher = comfy.model_patcher.ModelPatcher(holder, load_device=device,
                                                   offload_device=mm.text_encoder_offload_device())
        return cls(net, patcher, source, vision_source)

    def with_net(self, net: PromptNetModel, source: str) -> "PromptNet":
        """Another PromptNet with the same vision tower (same patcher: it is frozen, and shared safely)."""
        return PromptNet(net.to(self.net.dtype), self.vision_patcher, source, self.vision_source)

    @property
    def text_width(self) -> int:
        return self.config["prompt_channel"]

    def __repr__(self):
        return f"PromptNet({self.source}, words of width {self.text_width})"

    def image_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """IMAGE [B, H, W, C] in 0..1 -> the vision tower's last_hidden_state [B, S, V], float32, on
        ComfyUI's intermediate device."""
        mm.load_models_gpu([self.vision_patcher], force_full_load=True)
        vision = self.vision_patcher.model["vision"]
        device, dtype = self.vision_patcher.load_device, next(vision.parameters()).dtype
        pixels = self.preprocess(images[..., :3].movedim(-1, 1).to(device))
        with torch.no_grad():
            out = vision(pixel_values=pixels.to(dtype)).last_hidden_state
        return out.float().to(mm.intermediate_device())

    def state_dict(self) -> dict:
        """Official key names, float32, on ComfyUI's intermediate device."""
        return {k: v.detach().to(mm.intermediate_device(), torch.float32).contiguous()
                for k, v in self.net.state_dict().items()}

    def trainable_copy(self, device) -> PromptNetModel:
        """A float32 copy on `device` with normal (not inference-mode) tensors, for training."""
        with torch.inference_mode(False):
            sd = {k: v.detach().to(device=device, dtype=torch.float32, copy=True)
                  for k, v in self.net.state_dict().items()}
            net = build(self.config, sd, self.source)
            for name, p in net.named_parameters():
                p.requires_grad_(not name.startswith(UNUSED_PREFIXES))
        return net


def check_model(model_patcher, promptnet: PromptNet):
    """The MODEL reads text features of the width S* has."""
    config = getattr(model_patcher.model.model_config, "unet_config", {}) or {}
    width = config.get("context_dim")
    if width is not None and width != promptnet.text_width:
        raise ValueError(f"The PromptNet {promptnet.source} makes words of width {promptnet.text_width} but the "
                         f"MODEL reads text of width {width} (SD1: 768, SD2: 1024): use a PromptNet made for this "
                         f"model (ProFusion's release is for SD2-base, 1024).")


# ---------------------------------------------------------------------------------------------
# files
def load_release(folder: str, source: str) -> PromptNet:
    """ProFusion's released layout: <folder>/promptnet/ (diffusers config + weights) and <folder>/openclip/."""
    pn_dir, vision_dir = os.path.join(folder, "promptnet"), os.path.join(folder, "openclip")
    config_path = os.path.join(pn_dir, "config.json")
    if not os.path.isfile(config_path):
        raise _missing(pn_dir, "config.json")
    weights = _first_file(pn_dir, PROMPTNET_FILES)
    if weights is None:
        raise _missing(pn_dir, "diffusion_pytorch_model.safetensors (or diffusion_pytorch_model.bin)")
    if not os.path.isdir(vision_dir):
        raise _missing(folder, "openclip/ folder (the vision tower)")
    raw, sd = files.read_json(config_path), files.load_weights(weights)
    if "vision_width" not in raw and "vision_embedding.weight" in sd:   # the weights say what the flag implies
        raw = {**raw, "vision_width": int(sd["vision_embedding.weight"].shape[1])}
    cfg = read_config(raw, config_path)
    net = build(cfg, sd, weights)
    return PromptNet.from_modules(net, load_vision(vision_dir), source, source)


KIND = "promptnet"


def save_file(path: str, promptnet_sd: dict, config: dict, metadata: dict) -> str:
    """Our layout: one safetensors file, the official PromptNetModel state dict (float32) as tensors;
    metadata: format "texttune", kind "promptnet", promptnet_config (JSON), vision (release folder of
    the vision tower), name; plus what the trainer records."""
    formats.check_overwrite(path, metadata.get("name"), "A PromptNet", key="name")
    meta = {**metadata, "kind": KIND, "promptnet_config": json.dumps(config), "format": formats.TEXTTUNE_FORMAT}
    return files.save_safetensors({k: v.float() for k, v in promptnet_sd.items()}, path, meta)


def file_metadata(path: str) -> dict:
    """The metadata of our PromptNet file `path` (checked to be one)."""
    import safetensors
    try:
        with safetensors.safe_open(path, framework="pt") as f:        # metadata only
            meta = f.metadata() or {}
    except Exception as e:  # not safetensors at all
        raise files.unreadable_safetensors(path, e) from e
    if meta.get("kind") != KIND or "promptnet_config" not in meta:
        raise ValueError(f"{os.path.basename(path)} is not a PromptNet file saved by TextTune (its metadata has no "
                         f"promptnet_config). ProFusion's released PromptNet is a folder: {RELEASE_LAYOUT}.")
    if not meta.get("vision"):
        raise ValueError(f"{os.path.basename(path)} does not say which vision tower it uses (metadata 'vision').")
    return meta


def load_file(path: str, source: str, release_folder: str) -> PromptNet:
    """Our own file, with the vision tower of the release folder its metadata names (`release_folder`:
    that name resolved to a path)."""
    meta = file_metadata(path)
    vision_dir = os.path.join(release_folder, "openclip")
    if not os.path.isdir(vision_dir):
        raise _missing(release_folder, f"openclip/ folder (the vision tower {os.path.basename(path)} was made with)")
    tensors, _ = files.load_safetensors(path)
    cfg = read_config(json.loads(meta["promptnet_config"]), path)
    net = build(cfg, tensors, path)
    return PromptNet.from_modules(net, load_vision(vision_dir), source, meta["vision"])


# ---------------------------------------------------------------------------------------------
# S* into a prompt
def _entry_size(token, width: int) -> int:
    """How many positions a token-row entry takes when ComfyUI encodes it."""
    if isinstance(token, torch.Tensor):
        return token.numel() // width
    if isinstance(token, dict) and isinstance(token.get("data"), torch.Tensor):
        return token["data"].numel() // width
    return 1


class PlaceholderPrompt:
    """A prompt, tokenized once, whose placeholder word is replaced by S* at every encode: the vector
    goes in as S* − pos_emb[slot] (ComfyUI adds the position embedding to spliced embeddings), so the
    encoder reads S*, as the official code overwrites token + position embedding with it."""

    def __init__(self, clip, text: str, placeholder: str):
        self.text_encoder = enc = TextEncoder(clip)
        if len(enc.keys) != 1:
            raise ValueError(f"PromptNet puts S* into one text encoder; this CLIP has {len(enc.keys)} "
                             f"({', '.join(enc.keys)}). Use an SD1.x or SD2.x model (ProFusion: SD2-base).")
        self.key = key = enc.keys[0]
        self.width = enc.width(key)
        tok = enc.tokenizers[key]
        self.end, self.pad = tok.end_token, tok.pad_token
        placeholder = " ".join(str(placeholder).split())
        self.ids = enc.word_ids(key, placeholder) if placeholder else []
        if not self.ids:
            raise ValueError(f"The placeholder {placeholder!r} gives no tokens: use a word, e.g. holder (ProFusion's).")
        self.rows = [list(r) for r in clip.tokenize(text)[key]]
        self.sites = set()
        for r, row in enumerate(self.rows):
            ints = [t[0] if isinstance(t[0], int) else None for t in row]
            for j in range(len(ints) - len(self.ids) + 1):
                if ints[j:j + len(self.ids)] == self.ids:
                    self.sites.add((r, j))
        if not self.sites:
            raise ValueError(f"The prompt {text!r} does not contain the placeholder word {placeholder!r}: PromptNet's "
                             f"S* goes where it stands. Write it into the prompt (e.g. 'a photo of {placeholder} on a "
                             f"beach') or set placeholder to the word you used.")
        self.text, self.placeholder = text, placeholder

    @property
    def clip(self):
        return self.text_encoder.clip

    def position_embedding(self, device) -> torch.Tensor:
        w = self.text_encoder.encoders[self.key].transformer.text_model.embeddings.position_embedding.weight
        return w.detach().to(device=device, dtype=torch.float32)

    def tokens(self, word: torch.Tensor, pos: torch.Tensor):
        """Token rows with `word` [n, D] at every placeholder, and the slots (positions in the encoded
        sequence, rows one after another) that hold it."""
        n, length = word.shape[0], pos.shape[0]
        rows, slots = [], []
        for r, row in enumerate(self.rows):
            out, seq, j, grow = [], 0, 0, 0
            while j < len(row):
                if (r, j) in self.sites:
                    if seq + n > length:
                        raise ValueError(f"The prompt {self.text!r} is too long for S*'s {n} word(s) at its "
                                         f"placeholder: shorten it.")
                    out.append((word - pos[seq:seq + n], row[j][1]))
                    slots.extend(r * length + seq + i for i in range(n))
                    seq, j, grow = seq + n, j + len(self.ids), grow + n - len(self.ids)
                    continue
                out.append(row[j])
                seq += _entry_size(row[j][0], self.width)
                j += 1
            if grow > 0:                                    # keep the row's length: drop padding
                # the first end token closes the prompt (SD1 pads with it too); what follows is padding
                end_at = next((i for i, t in enumerate(out) if i and isinstance(t[0], int) and t[0] == self.end),
                              len(out))
                if any(i <= end_at or not isinstance(out[i][0], int) or out[i][0] != self.pad
                       for i in range(len(out) - grow, len(out))):
                    raise ValueError(f"The prompt {self.text!r} is too long for S*'s {n} word(s): shorten it.")
                out = out[:-grow]
            elif grow < 0:
                out.extend([(self.pad, 1.0)] * -grow)
            rows.append(out)
        return {self.key: rows}, slots

    def encode(self, words: torch.Tensor):
        """(cond [B, T, D], slots) of the prompt with words[b] ([B, n, D]) for image b; differentiable."""
        pos = self.position_embedding(words.device)
        token_list, slots = [], None
        for b in range(words.shape[0]):
            tokens, slots = self.tokens(words[b].float(), pos)
            token_list.append(tokens)
        cond, _ = self.text_encoder.encode_batch(token_list)
        return cond, slots


# ---------------------------------------------------------------------------------------------
# S* inside fusion sampling
PROMPTNET_KEY = "texttune_promptnet"     # CONDITIONING extras key: {"prompt": index, "gamma": float}


class SStar:
    """S* for the fusion sampler: the reference image (VAE latent and vision tokens) is encoded once
    per run; at every model evaluation that needs the concept prompt, S* is computed from the current
    x_t and t and put into the prompt's placeholder (the γ-scaled concept prompt as well)."""

    def __init__(self, model_patcher, promptnet: PromptNet, image: torch.Tensor, vae, placeholder: str = "holder"):
        if promptnet is None or image is None or vae is None:
            missing = [n for n, v in (("promptnet", promptnet), ("promptnet_image", image), ("vae", vae)) if v is None]
            raise ValueError(f"PromptNet sampling needs a PROMPTNET, the reference IMAGE and the VAE that encodes it; "
                             f"connect {', '.join(missing)} (or disconnect all three for plain fusion sampling).")
        check_model(model_patcher, promptnet)
        self.promptnet, self.image, self.vae, self.placeholder = promptnet, image, vae, placeholder
        self.prompts: list[PlaceholderPrompt] = []
        self.ref_latent = self.tokens = None

    def conditioning(self, positive: list, mark_key: str, gamma: float):
        """(positive, concept) CONDITIONING whose marked entries are re-encoded with S* at every
        evaluation; `mark_key` holds Concept Prompt's mark (with the CLIP and the text)."""
        pos_out, concept_out = [], []
        self.prompts = []
        for cond, extras in positive:
            mark = extras.get(mark_key)
            if mark is None or mark.get("clip") is None:
                pos_out.append([cond, extras])
                concept_out.append([cond, {k: v for k, v in extras.items() if k != mark_key}])
                continue
            prompt = PlaceholderPrompt(mark["clip"], mark["text"], self.placeholder)
            if prompt.width != self.promptnet.text_width:
                raise ValueError(f"The PromptNet {self.promptnet.source} makes words of width "
                                 f"{self.promptnet.text_width} but the CLIP's text encoder is {prompt.width} wide.")
            self.prompts.append(prompt)
            models = list(extras.get("additional_models", [])) + [self.promptnet.patcher, prompt.clip.patcher]
            tag = {"prompt": len(self.prompts) - 1}
            pos_out.append([cond, {**extras, PROMPTNET_KEY: {**tag, "gamma": 1.0}, "additional_models": models}])
            rest = {k: v for k, v in extras.items() if k != mark_key}
            concept_out.append([cond, {**rest, PROMPTNET_KEY: {**tag, "gamma": float(gamma)}}])
        if not self.prompts:
            raise ValueError("With a PromptNet, encode the positive prompt with Concept Prompt (TextTune), with the "
                             f"placeholder word ('{self.placeholder}') in it: the sampler re-encodes that prompt with "
                             f"S* at every step. This positive has no Concept Prompt mark.")
        return pos_out, concept_out

    def prepare(self, model_patcher, latent_shape):
        """Encode the reference image for latents of `latent_shape` [B, C, h, w]."""
        b, _, h, w = latent_shape
        word_count(self.promptnet.config, h, w)
        n = self.image.shape[0]
        if n not in (1, b):
            raise ValueError(f"The PromptNet reference IMAGE has {n} images for a batch of {b} latents: give one "
                             f"image, or one per latent.")
        factor = self.vae.downscale_ratio
        if not isinstance(factor, int):
            raise ValueError("This VAE's downscale factor is not a plain number; use an SD1/SD2 VAE for the "
                             "PromptNet reference image.")
        pixels = torch.stack([_cover(img[..., :3], h * factor, w * factor) for img in self.image])
        latent = self.vae.encode(pixels).float()
        self.ref_latent = model_patcher.model.process_latent_in(latent).to(mm.intermediate_device())
        self.tokens = self.promptnet.image_tokens(self.image)

    def words(self, model, x, sigma) -> torch.Tensor:
        """S* [B, n, D] at x_t = x (k-diffusion space), noise level sigma [B]."""
        ms = model.model_sampling
        t = ms.timestep(sigma).float()
        x_in = ms.calculate_input(sigma, x)                     # DDPM scale: √ᾱ·x
        net, device = self.promptnet.net, self.promptnet.patcher.load_device   # loaded with the MODEL
        with torch.no_grad():
            out = net(self.ref_latent.to(device), t.to(device), self.tokens.to(device), x_in.to(device))
        return out.float().to(x.device)

    def apply(self, model, cond_lists: list, x, sigma) -> list:
        """The conds of one calc_cond_batch call with S* (for this x and sigma) in the tagged ones."""
        if not any(PROMPTNET_KEY in c for conds in cond_lists for c in conds):
            return cond_lists
        words = self.words(model, x, sigma)
        encoded, out = {}, []
        for conds in cond_lists:
            new = []
            for c in conds:
                tag = c.get(PROMPTNET_KEY)
                if tag is None:
                    new.append(c)
                    continue
                if tag["prompt"] not in encoded:
                    with torch.no_grad():
                        encoded[tag["prompt"]] = self.prompts[tag["prompt"]].encode(words)
                cond, slots = encoded[tag["prompt"]]
                cond = scale_slots(cond, slots, tag["gamma"]).to(x.device)
                new.append({**c, "cross_attn": cond,
                            "model_conds": {**c["model_conds"], "c_crossattn": comfy.conds.CONDCrossAttn(cond)}})
            out.append(new)
        return out


def scale_slots(cond: torch.Tensor, slots: list, gamma: float) -> torch.Tensor:
    """The text encoder's outputs at S*'s slots times γ (ProFusion's refine_emb_scale)."""
    if gamma == 1.0:
        return cond
    cond = cond.clone()
    cond[:, slots] = cond[:, slots] * gamma
    return cond


def _cover(img: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[H, W, C] scaled to cover height x width and centre-cropped to it."""
    x = img.movedim(-1, 0).unsqueeze(0).float()
    h, w = x.shape[-2:]
    scale = max(height / h, width / w)
    nh, nw = max(height, round(h * scale)), max(width, round(w * scale))
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    top, left = (nh - height) // 2, (nw - width) // 2
    return x[0, :, top:top + height, left:left + width].movedim(0, -1)


# ---------------------------------------------------------------------------------------------
# per-image fine-tuning
LORA_TARGETS = ["to_q", "to_k", "to_v"]


class PromptNetTraining(engine.Method):
    """Per-image fine-tuning (the ProFusion notebook's customisation): the reference image is also
    the target; loss = the diffusion loss of "a photo of S*" with S* = PromptNet(x0, t, image, x_t).
    PromptNet trains in float32 (a copy; the input PromptNet is unchanged), and optionally a LoRA on
    the UNet's attention q/k/v (`lora`, a trainers.lora.UnetLora) at its own learning rate."""

    def __init__(self, diffusion: Diffusion, prompt: PlaceholderPrompt, promptnet: PromptNet,
                 latents: torch.Tensor, flipped: torch.Tensor, tokens: torch.Tensor, tokens_flipped: torch.Tensor,
                 batch_size: int = 1, flip: bool = True, lora=None, lora_lr: float | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size {batch_size}: use 1 or more.")
        word_count(promptnet.config, *latents.shape[-2:])
        self.diffusion, self.prompt, self.promptnet = diffusion, prompt, promptnet
        self.latents, self.flipped, self.tokens, self.tokens_flipped = \
            (t.detach() for t in (latents, flipped, tokens, tokens_flipped))
        self.batch_size, self.flip, self.lora, self.lora_lr = batch_size, flip, lora, lora_lr
        self.sampler = TimestepSampler(diffusion.sampling.sigmas, "uniform")
        self.net = promptnet.trainable_copy(diffusion.device)
        self.params = {f"promptnet.{k}": p for k, p in self.net.named_parameters() if p.requires_grad}
        if lora is not None:
            self.params.update({f"lora.{k}": p for k, p in lora.parameters().items()})

    def trainable(self):
        return self.params

    def param_groups(self):
        groups = [{"params": [k for k in self.params if k.startswith("promptnet.")]}]
        if self.lora is not None:
            lora = {"params": [k for k in self.params if k.startswith("lora.")]}
            if self.lora_lr is not None:
                lora["lr"] = self.lora_lr
            groups.append(lora)
        return groups

    def session(self):
        stack = contextlib.ExitStack()
        stack.enter_context(trainable_session([self.diffusion.patcher], [self.prompt.clip]))
        if self.lora is not None:
            stack.enter_context(self.lora.applied())
        return stack

    def grad_scaling_device(self):
        return self.diffusion.device if self.diffusion.model.get_dtype() == torch.float16 else None

    def words(self, x0, tokens, x_t, sigma) -> torch.Tensor:
        ms = self.diffusion.sampling
        return self.net(x0, ms.timestep(sigma).float(), tokens, ms.calculate_input(sigma, x_t))

    def loss(self, step, g):
        n, b, device = self.latents.shape[0], self.batch_size, self.diffusion.device
        idx = torch.randint(0, n, (b,), generator=g)
        flip = ((torch.rand(b, generator=g) < 0.5) & self.flip).view(-1, 1, 1, 1)
        x0 = torch.where(flip, self.flipped[idx], self.latents[idx]).to(device)
        tokens = torch.where(flip.view(-1, 1, 1), self.tokens_flipped[idx], self.tokens[idx]).to(device)
        sigma = self.sampler.sigma(self.sampler.sample(b, g)).to(device)
        noise = torch.randn(x0.shape, generator=g).to(device)
        x_t = self.diffusion.noised(x0, noise, sigma)
        cond, _ = self.prompt.encode(self.words(x0, tokens, x_t, sigma))
        return self.diffusion.loss(x0, noise, sigma, cond), {}

    def state_dict(self) -> dict:
        """The whole PromptNet (official keys, float32), trained weights and the untrained heads."""
        return {k: v.detach().to(mm.intermediate_device(), torch.float32).contiguous()
                for k, v in self.net.state_dict().items()}

    def result(self, source: str) -> PromptNet:
        """The trained PromptNet as a new TEXTTUNE_PROMPTNET (inference copy; the vision tower shared)."""
        with torch.inference_mode(False):
            net = build(self.promptnet.config, self.state_dict(), source)
        return self.promptnet.with_net(net, source)
