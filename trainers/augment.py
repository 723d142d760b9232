"""TextBoost's paired augmentation (methods.md §2.1): every image augmentation edits the caption too,
with its own token (learnable when augmentation tokens are on, plain words when off).

Per image, in this order: one geometric op (zoom, crop, shift left/right, flip) with p=0.5, a photo
collage with p=0.5, grayscale with p=0.2. The ops run on tensors on ComfyUI's torch device through
kornia; their random parameters come from a CPU generator, so a seed gives the same images on any
device. Image op and caption edit live together in `augment_one`, the only place that pairs them.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F

import comfy.model_management as mm

GEOMETRIC_P, COLLAGE_P, COLOUR_P = 0.5, 0.5, 0.2
ZOOM_RANGE, ZOOM_OUT_BELOW, ZOOM_IN_ABOVE = (0.34, 1.4), 0.6, 1.2
SHIFT_RANGE = (0.15, 0.3)
CROP_AREA = (0.08, 1.0)


@dataclass(frozen=True)
class AugToken:
    name: str          # token name, e.g. "zoom-in"
    init_words: str    # the learnable token's vectors start from these words (one vector per word piece)
    plain: str         # the caption words used when augmentation tokens are off


# TextBoost's initialisers (its code at 0390854); "right" gets its own vectors (the code reused <right_0>).
TOKENS = {t.name: t for t in (
    AugToken("grayscale", "grayscale", "grayscale"),
    AugToken("zoom-in", "zoom in", "zoomed in"),
    AugToken("zoom-out", "far away", "far away"),
    AugToken("collage", "photo collage", "photo collage of"),
    AugToken("crop", "crop", "cropped"),
    AugToken("hflip", "ktn", "horizontally flipped"),
    AugToken("left", "pll", "on the left"),
    AugToken("right", "ucd", "on the right"),
)}


@dataclass(frozen=True)
class Edit:
    """Put token `name` before the caption, or after it joined by `sep`."""
    name: str
    where: str          # "prefix" | "suffix"
    sep: str = ", "


def render(caption: str, edits, words: dict[str, str]) -> str:
    """Apply `edits` to `caption`; `words` maps token names to what stands in the text."""
    for e in edits:
        w = words[e.name]
        caption = f"{w} {caption}" if e.where == "prefix" else f"{caption}{e.sep}{w}"
    return caption


def _uniform(g, lo, hi) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def _coin(g, p) -> bool:
    return float(torch.rand((), generator=g)) < p


def _kornia():
    try:
        import kornia
    except ImportError as e:
        raise RuntimeError("TextBoost's augmentations need the 'kornia' package: run "
                           "`pip install -r requirements.txt` in the TextTune folder (ComfyUI-Manager does this "
                           "when it installs the pack).") from e
    return kornia


def augment_one(x: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, list[Edit]]:
    """One paired augmentation of x [1,3,H,W] (0..1) -> (image, caption edits)."""
    kornia = _kornia()
    T = kornia.geometry.transform
    h, w = x.shape[-2:]
    edits = []
    if _coin(g, GEOMETRIC_P):
        op = int(torch.randint(0, 4, (), generator=g))
        if op == 0:                                         # zoom around the centre, edges extended
            s = _uniform(g, *ZOOM_RANGE)
            x = T.scale(x, torch.tensor([[s, s]], device=x.device, dtype=x.dtype), padding_mode="border")
            if s < ZOOM_OUT_BELOW:
                edits.append(Edit("zoom-out", "prefix"))
            elif s > ZOOM_IN_ABOVE:
                edits.append(Edit("zoom-in", "prefix"))
        elif op == 1:                                       # square random-resized crop
            side = max(1, round(min(h, w) * _uniform(g, *CROP_AREA) ** 0.5))
            top = int(torch.randint(0, h - side + 1, (), generator=g))
            left = int(torch.randint(0, w - side + 1, (), generator=g))
            x = T.resize(x[..., top:top + side, left:left + side], (h, w), interpolation="bicubic",
                         antialias=True).clamp(0, 1)
            edits.append(Edit("crop", "prefix" if _coin(g, 0.5) else "suffix"))
        elif op == 2:                                       # shift left or right, edges extended
            right = _coin(g, 0.5)
            dx = _uniform(g, *SHIFT_RANGE) * w * (1 if right else -1)
            x = T.translate(x, torch.tensor([[dx, 0.0]], device=x.device, dtype=x.dtype), padding_mode="border")
            edits.append(Edit("right" if right else "left", "suffix", " "))
        else:
            x = T.hflip(x)
            edits.append(Edit("hflip", "prefix" if _coin(g, 0.5) else "suffix"))
    if _coin(g, COLLAGE_P):                                 # 2x2 or 3x3 tiles with dark borders
        n = int(torch.randint(2, 4, (), generator=g))
        small = F.interpolate(x, size=(max(2, h // n), max(2, w // n)), mode="area").clone()
        small[..., 0, :] = 0
        small[..., -1, :] = 0
        small[..., :, 0] = 0
        small[..., :, -1] = 0
        x = T.resize(small.repeat(1, 1, n, n), (h, w), interpolation="bilinear")
        edits.append(Edit("collage", "prefix"))
    if _coin(g, COLOUR_P):
        x = kornia.color.rgb_to_grayscale(x).expand(-1, 3, -1, -1)
        edits.append(Edit("grayscale", "suffix"))
    return x.clamp(0, 1), edits


def augmented_pool(pixels: torch.Tensor, count: int, seed: int) -> tuple[torch.Tensor, list[list[Edit]]]:
    """`count` paired augmentations of pixels [N,H,W,3] (0..1), cycling over the images:
    -> (pixels [count,H,W,3] on the CPU, caption edits of each)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    device = mm.get_torch_device()
    src = pixels.movedim(-1, 1).to(device, torch.float32)
    out, edits = [], []
    with torch.no_grad():
        for i in range(count):
            x, e = augment_one(src[i % len(src)].unsqueeze(0), g)
            out.append(x.movedim(1, -1).cpu())
            edits.append(e)
    return torch.cat(out), edits
