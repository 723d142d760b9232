"""Image-batch preparation: any-size images to square training pixels (and loss masks)."""
import hashlib

import torch
import torch.nn.functional as F


EMPTY_IMAGES = "The IMAGE input is empty: connect at least one image"


def as_image_list(images) -> list[torch.Tensor]:
    """IMAGE tensors [B,H,W,C] or lists of them (mixed sizes) -> list of [H,W,C] images."""
    if torch.is_tensor(images):
        images = [images]
    out = []
    for img in images:
        if img.ndim == 3:
            img = img.unsqueeze(0)
        if img.ndim != 4 or img.shape[-1] not in (1, 3, 4) or min(img.shape[1:3], default=0) < 1:
            raise ValueError(f"Expected IMAGE tensors shaped [batch, height, width, channels] with 1, 3 or 4 "
                             f"channels, got {tuple(img.shape)}: connect an image output (e.g. Load Image) here.")
        if img.numel() and not bool(torch.isfinite(img).all()):
            raise ValueError("The IMAGE holds NaN or infinite pixel values: check the node that made it (images "
                             "hold numbers from 0 to 1).")
        out.extend(img[i] for i in range(img.shape[0]))
    return out


def rgb(img_hwc: torch.Tensor) -> torch.Tensor:
    """[..., C] with 1, 3 or 4 channels -> [..., 3] (alpha dropped, grey expanded)."""
    return img_hwc[..., :3] if img_hwc.shape[-1] >= 3 else img_hwc.expand(*img_hwc.shape[:-1], 3)


def square_resize(img_hwc: torch.Tensor, resolution: int) -> torch.Tensor:
    """Scale the shorter side to `resolution` and centre-crop: [H,W,C] -> [resolution,resolution,C]."""
    x = img_hwc.permute(2, 0, 1).unsqueeze(0).float()
    h, w = x.shape[-2:]
    scale = resolution / min(h, w)
    nh, nw = max(resolution, round(h * scale)), max(resolution, round(w * scale))
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    top, left = (nh - resolution) // 2, (nw - resolution) // 2
    return x[0, :, top:top + resolution, left:left + resolution].permute(1, 2, 0)


def prepare_pixels(images, resolution: int) -> torch.Tensor:
    """-> [N, res, res, 3] in 0..1 (alpha dropped, grey expanded)."""
    if resolution % 8:
        raise ValueError(f"Resolution {resolution} is not a multiple of 8; pick e.g. {resolution // 8 * 8 or 8}.")
    imgs = as_image_list(images)
    if not imgs:
        raise ValueError(EMPTY_IMAGES + " (3-5 are typical).")
    return torch.stack([square_resize(rgb(img), resolution) for img in imgs])


def prepare_masks(masks, count: int, resolution: int, latent_size: int) -> torch.Tensor | None:
    """MASK [B,H,W] (one for all images, or one per image) -> loss weights [count,1,h,w] at latent size."""
    if masks is None:
        return None
    if torch.is_tensor(masks):
        masks = [masks]
    flat = []
    for m in masks:
        m = m if m.ndim == 3 else m.unsqueeze(0)
        flat.extend(m[i] for i in range(m.shape[0]))
    if len(flat) not in (1, count):
        raise ValueError(f"Got {len(flat)} masks for {count} images: give one mask for all images or one per image.")
    weights = []
    for m in flat:
        sq = square_resize(m.unsqueeze(-1), resolution)[..., 0]
        weights.append(F.interpolate(sq[None, None], size=(latent_size, latent_size), mode="area")[0])
    w = torch.stack(weights)
    if len(flat) == 1:
        w = w.expand(count, -1, -1, -1)
    if float(w.sum()) <= 0:
        raise ValueError("The MASK is empty (all zero): the loss would ignore every pixel. Paint the subject white.")
    return w.contiguous()


def digest(pixels: torch.Tensor) -> str:
    """Short fingerprint of prepared pixels (8-bit), so a run is not resumed on other images."""
    q = (pixels.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    return hashlib.sha256(q.numpy().tobytes()).hexdigest()[:16]
