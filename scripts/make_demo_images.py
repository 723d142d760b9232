"""Draw the bundled demo images: ShapeWorld's unnamed "ring" concept (the demo model has no word
for it) in five colours on varied backgrounds, sizes and positions. 64x64 PNGs, deterministic.

    python scripts/make_demo_images.py [folder]      # default: assets/demo/
"""
import os
import sys

from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "shapeworld"))
import world  # noqa: E402  (shapeworld/world.py needs only numpy and Pillow)

KIND = "ring"
N = 5


def main(folder: str):
    os.makedirs(folder, exist_ok=True)
    for f in os.listdir(folder):
        if f.endswith(".png"):
            os.remove(os.path.join(folder, f))
    for i, scene in enumerate(world.concept_scenes(KIND, N, seed=0)):
        Image.fromarray(world.render(scene)).save(os.path.join(folder, f"{KIND}_{i}.png"))
        print(f"{KIND}_{i}.png: {scene.caption()}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(REPO, "assets", "demo"))
