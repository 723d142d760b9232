"""Draw the bundled demo images: one concept (a yellow five-pointed star with an orange rim)
on varied backgrounds, positions, sizes and rotations. 64x64 PNGs, deterministic.

    python scripts/make_demo_images.py [folder]      # default: assets/demo/
"""
import math
import os
import sys

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZE = 64
SUPERSAMPLE = 4                      # draw large, then downscale: smooth edges
STAR_FILL = (250, 215, 40)
STAR_RIM = (235, 120, 20)

# (background top colour, background bottom colour, centre x, centre y, outer radius, rotation deg)
# Radii stay >= 16 px: smaller shapes come back from an 8x VAE as blobs (DESIGN.md, ShapeWorld).
SCENES = [
    ((40, 70, 160), (20, 30, 90), 32, 32, 22, 0),
    ((60, 140, 70), (30, 80, 40), 26, 36, 18, 14),
    ((120, 50, 130), (60, 20, 70), 38, 28, 19, -10),
    ((70, 70, 75), (150, 150, 160), 34, 38, 20, 25),
]


def star_points(cx, cy, outer, inner, rotation_deg, points=5):
    pts = []
    for i in range(points * 2):
        r = outer if i % 2 == 0 else inner
        a = math.radians(rotation_deg - 90 + i * 180 / points)
        pts.append((cx + r * math.cos(a), cy + r * math.sin(a)))
    return pts


def draw_scene(top, bottom, cx, cy, radius, rotation, seed) -> Image.Image:
    s = SIZE * SUPERSAMPLE
    t = np.linspace(0.0, 1.0, s)[:, None, None]
    bg = (1 - t) * np.array(top, float) + t * np.array(bottom, float)
    bg = np.broadcast_to(bg, (s, s, 3)).copy()
    bg += np.random.default_rng(seed).normal(0.0, 4.0, (s, s, 1))    # a little texture
    img = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    k = SUPERSAMPLE
    d.polygon(star_points(cx * k, cy * k, radius * k, radius * 0.45 * k, rotation), fill=STAR_FILL,
              outline=STAR_RIM, width=2 * k)
    return img.filter(ImageFilter.GaussianBlur(0.5 * k)).resize((SIZE, SIZE), Image.LANCZOS)


def make_images(folder: str) -> list[str]:
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i, scene in enumerate(SCENES):
        path = os.path.join(folder, f"star_{i}.png")
        draw_scene(*scene, seed=i).save(path, format="PNG", optimize=True)
        paths.append(path)
    return paths


if __name__ == "__main__":
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(repo, "assets", "demo")
    for p in make_images(out):
        print(p, os.path.getsize(p), "bytes")
