"""Reward models: differentiable scores of images and their prompts, for reward fine-tuning
(TextCraftor, research/methods.md §1) and for scoring images in a graph.

A `Reward` maps images [B, 3, H, W] in 0..1 and prompts (one per image, or one for all) to [B]:
- `score`: the number as the model's authors report it;
- `raw`: the value training pushes up (the same, except CLIP score: the plain cosine);
- `objective`: `scale · raw`, with TextCraftor's fixed loss scale s (its loss is −Σ γ·s·R).
Gradients reach the images only: weights are frozen (eval mode, requires_grad off) and text
features are computed without gradient (and remembered per prompt). Preprocessing runs on tensors
inside the autograd graph, in float32, as each model's official pipeline does it:

- aesthetic (LAION aesthetic predictor v2: MLP file + CLIP ViT-L/14 folder): shortest side to 224
  bicubic, centre crop (torchvision's rounding), OpenAI mean/std; score MLP(e/|e|); s = 3.
- pickscore (CLIPModel folder): as its processor: shortest side bicubic, centre crop (transformers'
  floor), its mean/std; score exp(logit_scale)·cos; s = 1.
- hps (open_clip ViT-H-14 `{'state_dict': ...}`): longest side to 224 bicubic, zero padding to a
  centred square (HPS's ResizeMaxSize), OpenAI mean/std; score cos; s = 100.
- clip_score (CLIPModel folder): as its processor; score max(100·cos, 0) (torchmetrics), raw cos;
  s = 100.

Resizing is `F.interpolate(bicubic, antialias=True)` on float tensors (what torchvision does for
tensors); the official pipelines resize 8-bit PIL images, so scores differ from theirs by small
amounts (research/rewards-and-ecosystem.md A.6): these are training-time values.

Models run on ComfyUI's compute device in its preferred precision, each held by a ComfyUI
ModelPatcher so ComfyUI can move it off the GPU when other models need the room (`patchers`).

Kinds are registered by name (`register_kind`), so another custom node can add one (the tests add
a ShapeWorld reward). ImageReward is not supported: see README.md "Reward models".
"""
import dataclasses
import math
import os
import sys
import types
from typing import Callable

import torch
import torch.nn.functional as F

import comfy.model_management as mm
import comfy.model_patcher

from . import files, openclip
from .comfy_adapter import deinference_

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
CLIP_FOLDER_FILES = ("config.json and model.safetensors (or model.safetensors.index.json with its shards); "
                     "optional: preprocessor_config.json, vocab.json + merges.txt")
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
_RESAMPLE = {2: "bilinear", 3: "bicubic"}          # PIL resample codes in preprocessor_config.json


# ---------------------------------------------------------------------------------------------
# preprocessing
def _resize(x: torch.Tensor, height: int, width: int, mode: str) -> torch.Tensor:
    if tuple(x.shape[-2:]) == (height, width):
        return x
    return F.interpolate(x, size=(height, width), mode=mode, antialias=True, align_corners=False)


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """Images [B, 3, H, W] in 0..1 -> a model's normalised input [B, 3, crop, crop]."""
    size: int = 224                    # shortest side after resizing (letterbox: longest side)
    crop: int = 224
    letterbox: bool = False            # HPS: fit the longest side, pad with 0 (black) to a centred square
    crop_offset: str = "round"         # torchvision's CenterCrop rounds (h-c)/2; transformers floors it
    mode: str = "bicubic"
    mean: tuple = OPENAI_MEAN
    std: tuple = OPENAI_STD

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float()
        x = self._letterbox(x) if self.letterbox else self._resize_crop(x)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def _resize_crop(self, x):
        h, w = x.shape[-2:]
        short, long = min(h, w), max(h, w)
        new_long = int(self.size * long / short)
        nh, nw = (self.size, new_long) if h <= w else (new_long, self.size)
        x = _resize(x, nh, nw, self.mode)
        if self.crop > min(nh, nw):
            raise ValueError(f"Preprocessing crops {self.crop} px from a {nh}x{nw} resize: the model's "
                             f"preprocessor_config.json has a crop larger than its size.")
        offset = (lambda d: int(round(d / 2.0))) if self.crop_offset == "round" else (lambda d: d // 2)
        top, left = offset(nh - self.crop), offset(nw - self.crop)
        return x[..., top:top + self.crop, left:left + self.crop]

    def _letterbox(self, x):
        h, w = x.shape[-2:]
        scale = self.size / max(h, w)
        nh, nw = round(h * scale), round(w * scale)
        x = _resize(x, nh, nw, self.mode)
        ph, pw = self.size - nh, self.size - nw
        return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), value=0.0)


def _side(value, what: str, path: str) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        if "shortest_edge" in value:
            return int(value["shortest_edge"])
        if value.get("height") == value.get("width") and value.get("height"):
            return int(value["height"])
    raise ValueError(f"{path}: unsupported {what} {value!r} in preprocessor_config.json (expected a number, "
                     f"{{'shortest_edge': n}} or a square {{'height': n, 'width': n}}).")


def processor_preprocess(folder: str, image_size: int) -> Preprocess:
    """The folder's preprocessor_config.json (a transformers CLIPImageProcessor) as a `Preprocess`;
    without one, CLIPImageProcessor's defaults (= the LAION ViT-H processor PickScore uses)."""
    path = os.path.join(folder, "preprocessor_config.json")
    if not os.path.isfile(path):
        return Preprocess(size=image_size, crop=image_size, crop_offset="floor")
    cfg = files.read_json(path)
    if cfg.get("do_resize") is False or cfg.get("do_center_crop") is False or cfg.get("do_normalize") is False:
        raise ValueError(f"{path}: only processors that resize, centre-crop and normalise (CLIP's) are supported.")
    resample = cfg.get("resample", 3)
    if resample not in _RESAMPLE:
        raise ValueError(f"{path}: resample {resample} is not supported (2 bilinear, 3 bicubic).")
    return Preprocess(size=_side(cfg.get("size", image_size), "size", path),
                      crop=_side(cfg.get("crop_size", image_size), "crop_size", path), crop_offset="floor",
                      mode=_RESAMPLE[resample], mean=tuple(cfg.get("image_mean", OPENAI_MEAN)),
                      std=tuple(cfg.get("image_std", OPENAI_STD)))


# ---------------------------------------------------------------------------------------------
# prompts and devices
def batch_prompts(images: torch.Tensor, prompts) -> list[str]:
    """One prompt per image: a list of B prompts, or one prompt (a string or a list of one) for all."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"Rewards take images shaped [B, 3, H, W] in 0..1; got {list(images.shape)}.")
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    b = images.shape[0]
    if len(prompts) == 1:
        return prompts * b
    if len(prompts) != b:
        raise ValueError(f"{len(prompts)} prompts for {b} images: give one prompt per image, or one for all.")
    return prompts


def compute_dtype(precision: str = "auto", device=None) -> torch.dtype:
    """"auto": ComfyUI's choice for the device (fp16 where it is fast and safe, else bf16, else fp32)."""
    if precision != "auto":
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r}: use auto, {', '.join(PRECISIONS)}.")
        return PRECISIONS[precision]
    device = device or mm.get_torch_device()
    if mm.should_use_fp16(device):
        return torch.float16
    if mm.should_use_bf16(device):
        return torch.bfloat16
    return torch.float32


class _Holder(torch.nn.Module):
    """What ComfyUI's model management moves between devices (it sets `.device`, which transformers
    models do not allow)."""
    def __init__(self, **parts):
        super().__init__()
        for name, part in parts.items():
            setattr(self, name, part)


class ClipTower:
    """A frozen transformers CLIPModel (plus any head) under ComfyUI's model management: normalised
    image features with gradient to the pixels, text features without (remembered per prompt)."""
    MAX_REMEMBERED = 10000

    def __init__(self, clip, tokenizer, dtype, **heads):
        self.dtype, self.tokenizer = dtype, tokenizer
        self.module = _Holder(clip=clip, **heads).to(dtype).eval().requires_grad_(False)
        self.patcher = comfy.model_patcher.ModelPatcher(self.module, load_device=mm.get_torch_device(),
                                                        offload_device=mm.text_encoder_offload_device())
        self.context = clip.config.text_config.max_position_embeddings
        self._texts = {}

    @property
    def device(self):
        return self.patcher.load_device

    def ready(self):
        mm.load_models_gpu([self.patcher], force_full_load=True)
        if torch.is_grad_enabled() and not torch.is_inference_mode_enabled():
            deinference_(self.module)          # loaded inside a node's inference mode (research T1)
        return self.module

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        clip = self.ready().clip
        out = clip.vision_model(pixel_values=pixels.to(self.device, self.dtype))
        return F.normalize(clip.visual_projection(out.pooler_output).float(), dim=-1)

    def text_features(self, prompts: list[str]) -> torch.Tensor:
        new = [p for p in dict.fromkeys(prompts) if p not in self._texts]
        if new:
            if len(self._texts) + len(new) > self.MAX_REMEMBERED:
                self._texts.clear()
            clip = self.ready().clip
            ids = self.tokenizer(new, padding="max_length", max_length=self.context, truncation=True,
                                 return_tensors="pt").input_ids
            with torch.no_grad():
                out = clip.text_model(input_ids=ids.to(self.device))
                feats = F.normalize(clip.text_projection(out.pooler_output).float(), dim=-1)
            feats = feats.to(mm.intermediate_device())            # off the GPU while remembered
            self._texts.update(zip(new, feats))
        return torch.stack([self._texts[p] for p in prompts]).to(self.device)

    def logit_scale(self) -> torch.Tensor:
        return self.ready().clip.logit_scale.detach().float().exp()

    def check_prompts(self, prompts: list[str], label: str):
        """Each reward reads the prompt text with its own tokenizer (the official TextCraftor code fed SD's
        CLIP-L token ids to every reward model, which works only because they share OpenAI's BPE); a
        prompt longer than this text tower's context would be cut, and the reward would judge another
        prompt than the one drawn."""
        for i, p in enumerate(prompts):
            n = len(self.tokenizer(p, truncation=False, verbose=False)["input_ids"])
            if n > self.context:
                raise ValueError(f"Prompt {i + 1} ({p[:60]!r}{'…' if len(p) > 60 else ''}) is {n} tokens for the "
                                 f"tokenizer of {label}, whose text model reads {self.context}: it would score a "
                                 f"cut prompt. Shorten the prompt.")


# ---------------------------------------------------------------------------------------------
# rewards
class Reward:
    """A differentiable image reward (see the module docstring)."""
    label = "reward"
    scale = 1.0            # TextCraftor's loss scale s
    patchers = ()          # ComfyUI ModelPatchers of the models it runs

    def compute(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        raise NotImplementedError

    def raw(self, images, prompts) -> torch.Tensor:
        return self.compute(images, batch_prompts(images, prompts)).to(images.device)

    def score_from(self, raw: torch.Tensor) -> torch.Tensor:
        return raw

    def score(self, images, prompts) -> torch.Tensor:
        return self.score_from(self.raw(images, prompts))

    def objective(self, images, prompts) -> torch.Tensor:
        return self.scale * self.raw(images, prompts)

    def terms(self, images, prompts) -> list[tuple["Reward", float, torch.Tensor]]:
        """[(reward, γ, raw [B])]: the parts whose Σ γ·s·raw is `objective`, each model run once."""
        return [(self, 1.0, self.raw(images, prompts))]

    def parts(self, images, prompts) -> dict:
        """{label: [B] scores} for display."""
        return {self.label: self.score(images, prompts)}

    def check_prompts(self, prompts: list[str]) -> None:
        """Raise if this reward would not read a prompt whole (its text tower cuts long prompts)."""


class ClipSimilarity(Reward):
    """cos(image, text) of a CLIP (HPS v2); PickScore multiplies it by the model's logit scale."""

    def __init__(self, tower: ClipTower, preprocess: Preprocess, label: str, scale: float, logit_scaled=False):
        self.tower, self.preprocess, self.label, self.scale = tower, preprocess, label, scale
        self.logit_scaled = logit_scaled
        self.patchers = (tower.patcher,)

    def compute(self, images, prompts):
        img = self.tower.image_features(self.preprocess(images.to(self.tower.device)))
        cos = (img * self.tower.text_features(prompts)).sum(-1)
        return cos * self.tower.logit_scale() if self.logit_scaled else cos

    def check_prompts(self, prompts):
        self.tower.check_prompts(prompts, self.label)


class ClipScore(ClipSimilarity):
    """torchmetrics' CLIP score max(100·cos, 0) for display; training uses the plain cosine."""

    def score_from(self, raw):
        return (100 * raw).clamp(min=0)


class AestheticHead(torch.nn.Module):
    """LAION aesthetic predictor v2's MLP: five linear layers with dropout and no activation."""
    DROPOUT = (0.2, 0.2, 0.1)

    def __init__(self, dims: list[int]):
        super().__init__()
        layers = []
        for i, (a, b) in enumerate(zip(dims, dims[1:])):
            layers.append(torch.nn.Linear(a, b))
            if i < len(self.DROPOUT):
                layers.append(torch.nn.Dropout(self.DROPOUT[i]))
        self.layers = torch.nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)


class Aesthetic(Reward):
    scale = 3.0

    def __init__(self, tower: ClipTower, preprocess: Preprocess, label: str):
        self.tower, self.preprocess, self.label = tower, preprocess, label
        self.patchers = (tower.patcher,)

    def compute(self, images, prompts):
        emb = self.tower.image_features(self.preprocess(images.to(self.tower.device)))
        return self.tower.module.head(emb.to(self.tower.dtype)).float().squeeze(-1)


class Combined(Reward):
    """Σ γ_i · s_i · R_i: TextCraftor's sum of rewards (its loss is the negative)."""

    def __init__(self, rewards: list, weights: list[float]):
        if len(rewards) != len(weights) or not rewards:
            raise ValueError("Combine rewards: give one weight per reward.")
        self.rewards, self.weights = list(rewards), [float(w) for w in weights]
        bad = [w for w in self.weights if not math.isfinite(w)]
        if bad:
            raise ValueError(f"Reward weight {bad[0]} is not a finite number: give each reward a weight such as 1 or "
                             f"0.5.")
        self.label = " + ".join(f"{w:g}·{r.label}" for r, w in zip(self.rewards, self.weights))
        self.patchers = tuple(p for r in self.rewards for p in r.patchers)

    def compute(self, images, prompts):
        return sum(w * r.scale * raw for r, w, raw in self.terms(images, prompts))

    def terms(self, images, prompts):
        return [(r, w, r.raw(images, prompts)) for r, w in zip(self.rewards, self.weights)]

    def parts(self, images, prompts):
        out, total = {}, 0
        for (r, w, raw), name in zip(self.terms(images, prompts), part_names(self.rewards)):
            out[name] = r.score_from(raw)
            total = total + w * r.scale * raw
        out["total Σγ·s·R"] = total
        return out

    def check_prompts(self, prompts):
        for r in self.rewards:
            r.check_prompts(prompts)


def part_names(rewards: list) -> list[str]:
    """The rewards' labels, made unique ("label #2") for tables and loss maps."""
    out = []
    for r in rewards:
        name, n = r.label, 2
        while name in out:
            name, n = f"{r.label} #{n}", n + 1
        out.append(name)
    return out


# ---------------------------------------------------------------------------------------------
# loading
def clip_tokenizer(folder: str | None, vocab_size: int):
    """The folder's CLIP tokenizer (vocab.json + merges.txt), else the CLIP BPE ComfyUI ships for SD1
    (comfy/sd1_tokenizer): OpenAI CLIP, LAION's OpenCLIP, PickScore and HPS share its 49,408 tokens."""
    from transformers import CLIPTokenizer
    if folder and all(os.path.isfile(os.path.join(folder, f)) for f in ("vocab.json", "merges.txt")):
        return CLIPTokenizer.from_pretrained(folder, local_files_only=True)
    if vocab_size != 49408:
        raise FileNotFoundError(f"{folder}: its text model has {vocab_size} tokens, not CLIP's 49408; put its "
                                f"tokenizer files vocab.json and merges.txt in that folder.")
    import comfy.sd1_clip
    return CLIPTokenizer.from_pretrained(os.path.join(os.path.dirname(comfy.sd1_clip.__file__), "sd1_tokenizer"))


def load_clip_folder(folder: str, title: str):
    """A transformers CLIPModel from a local folder (safetensors only; every weight must be in it)."""
    from transformers import CLIPModel
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{title} needs a folder, and {folder} is not one. Expected in it: "
                                f"{CLIP_FOLDER_FILES}.")
    lacking = [] if os.path.isfile(os.path.join(folder, "config.json")) else ["config.json"]
    if not any(os.path.isfile(os.path.join(folder, f)) for f in _WEIGHTS):
        lacking.append("model.safetensors")
    if lacking:
        raise FileNotFoundError(f"{title}: {folder} has no {' and no '.join(lacking)}. Expected a transformers "
                                f"CLIPModel folder: {CLIP_FOLDER_FILES}.")
    model_type = files.read_json(os.path.join(folder, "config.json")).get("model_type")
    if model_type != "clip":
        raise ValueError(f"{title}: {folder} holds a {model_type!r} model, not a CLIP model (model_type 'clip').")
    model, info = CLIPModel.from_pretrained(folder, local_files_only=True, use_safetensors=True,
                                            output_loading_info=True)
    missing = sorted(k for k in info["missing_keys"] if not k.endswith("position_ids"))
    if missing or info.get("mismatched_keys"):
        raise ValueError(f"{title}: the weights in {folder} do not fill its CLIP model (missing {missing[:3]}, "
                         f"mismatched {sorted(info.get('mismatched_keys') or [])[:3]}).")
    return model


def _name(path: str) -> str:
    return os.path.basename(os.path.normpath(path))


def _clip_folder_reward(path, precision, title, make):
    model = load_clip_folder(path, title)
    tower = ClipTower(model, clip_tokenizer(path, model.config.text_config.vocab_size), compute_dtype(precision))
    return make(tower, processor_preprocess(path, model.config.vision_config.image_size), f"{title} ({_name(path)})")


def load_pickscore(path, clip_path=None, precision="auto"):
    return _clip_folder_reward(path, precision, "PickScore",
                               lambda tower, pre, label: ClipSimilarity(tower, pre, label, 1.0, logit_scaled=True))


def load_clip_score(path, clip_path=None, precision="auto"):
    return _clip_folder_reward(path, precision, "CLIP score",
                               lambda tower, pre, label: ClipScore(tower, pre, label, 100.0))


def load_hps(path, clip_path=None, precision="auto"):
    """HPS v2/v2.1: its open_clip ViT-H-14 converted to a transformers CLIPModel (trainers/openclip.py).
    Tokens: the CLIP BPE that ComfyUI ships. open_clip pads with 0 after the end-of-text token (49407,
    the highest id) and pools at argmax(ids); this tokenizer pads with 49407 and transformers pools
    at the first 49407: the same position, and under the causal mask no later token reaches it, so
    the padding changes nothing. Both lower-case and clean text alike for plain prompts (open_clip
    also runs ftfy and HTML unescaping)."""
    try:
        sd = files.load_weights(path)
    except ValueError as e:
        raise ValueError(f"For HPS use HPS_v2_compressed.pt or HPS_v2.1_compressed.pt (weights only; the 8 GB "
                         f"HPS_v2.pt training checkpoint holds other objects). {e}") from e
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    if not openclip.is_open_clip(sd):
        raise ValueError(f"{_name(path)} is not an HPS v2 checkpoint: expected an open_clip ViT-H-14 state dict "
                         f"(keys visual.conv1.weight, token_embedding.weight, ...), as in HPS_v2_compressed.pt.")
    model = openclip.clip_model(sd)
    tower = ClipTower(model, clip_tokenizer(None, model.config.text_config.vocab_size), compute_dtype(precision))
    size = model.config.vision_config.image_size
    pre = Preprocess(size=size, crop=size, letterbox=True)
    return ClipSimilarity(tower, pre, f"HPS ({_name(path)})", scale=100.0)


AESTHETIC_KEYS = [f"layers.{i}.{p}" for i in (0, 2, 4, 6, 7) for p in ("weight", "bias")]


def load_aesthetic(path, clip_path=None, precision="auto"):
    if not clip_path:
        raise FileNotFoundError("The LAION aesthetic predictor also needs the CLIP ViT-L/14 image tower: choose "
                                "its folder (openai/clip-vit-large-patch14) as clip_model.")
    sd = files.load_weights(path)
    if sorted(sd) != sorted(AESTHETIC_KEYS):
        raise ValueError(f"{_name(path)} is not the LAION aesthetic predictor v2 MLP: expected exactly the keys "
                         f"{', '.join(AESTHETIC_KEYS)} (as in sac+logos+ava1-l14-linearMSE.pth).")
    dims = [sd["layers.0.weight"].shape[1]] + [sd[f"layers.{i}.weight"].shape[0] for i in (0, 2, 4, 6, 7)]
    head = AestheticHead(dims)
    head.load_state_dict({k: v.float() for k, v in sd.items()})
    model = load_clip_folder(clip_path, "The aesthetic predictor's CLIP")
    if model.config.projection_dim != dims[0]:
        raise ValueError(f"{_name(path)} reads {dims[0]}-d CLIP image embeddings, but {_name(clip_path)} gives "
                         f"{model.config.projection_dim}-d ones: use CLIP ViT-L/14 (openai/clip-vit-large-patch14).")
    tower = ClipTower(model, None, compute_dtype(precision), head=head)
    size = model.config.vision_config.image_size
    return Aesthetic(tower, Preprocess(size=size, crop=size), f"aesthetic ({_name(path)})")


# ---------------------------------------------------------------------------------------------
# kinds
@dataclasses.dataclass(frozen=True)
class RewardKind:
    name: str                      # the loader node's `kind` value
    title: str
    needs: str                     # "file", "folder" or "nothing"
    expects: str                   # the files it reads, as errors and tooltips say it
    load: Callable                 # load(path, clip_path, precision) -> Reward
    needs_clip: bool = False       # also a CLIP folder (the aesthetic predictor's image tower)


# ComfyUI imports a custom-node folder under a module name made from its path, while tests and
# other packs import this pack as `texttune`: this module can exist twice in one process. Both
# copies share one registry, kept under a fixed name.
_SHARED = "_texttune_reward_kinds"
KINDS: dict = sys.modules.setdefault(_SHARED, types.ModuleType(_SHARED)).__dict__.setdefault("kinds", {})


def register_kind(kind) -> None:
    """Add (or replace) a reward kind; the loader node offers it from then on."""
    KINDS[kind.name] = kind


def get_kind(name: str):
    if name not in KINDS:
        raise ValueError(f"Unknown reward kind {name!r}: choose one of {', '.join(KINDS)}.")
    return KINDS[name]


def load(kind: str, path: str | None = None, clip_path: str | None = None, precision: str = "auto") -> Reward:
    """A reward of a registered kind from local files (nothing is downloaded). Weights are made
    outside inference mode so training can backpropagate through them."""
    k = get_kind(kind)
    if k.needs == "file" and not (path and os.path.isfile(path)):
        raise FileNotFoundError(f"{k.title} needs a file ({k.expects}); {path!r} is not a file.")
    if k.needs == "folder" and not (path and os.path.isdir(path)):
        raise FileNotFoundError(f"{k.title} needs a folder ({k.expects}); {path!r} is not a folder.")
    with torch.inference_mode(False):
        return k.load(path, clip_path, precision)


for _kind in (
    RewardKind("aesthetic", "LAION aesthetic predictor v2", "file",
               "the MLP sac+logos+ava1-l14-linearMSE.pth (or a .safetensors of it), with the CLIP ViT-L/14 folder "
               "openai/clip-vit-large-patch14 as clip_model", load_aesthetic, needs_clip=True),
    RewardKind("pickscore", "PickScore", "folder",
               f"the folder PickScore_v1/ with {CLIP_FOLDER_FILES}", load_pickscore),
    RewardKind("hps", "HPS v2 / v2.1", "file", "HPS_v2_compressed.pt or HPS_v2.1_compressed.pt", load_hps),
    RewardKind("clip_score", "CLIP score", "folder",
               f"a CLIP model folder such as clip-vit-large-patch14/ with {CLIP_FOLDER_FILES}", load_clip_score),
):
    KINDS.setdefault(_kind.name, _kind)
