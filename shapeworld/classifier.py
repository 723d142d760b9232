"""The ShapeWorld classifier: a small CNN that reads, from a one-shape image, the shape's kind
(the unnamed kinds included), the shape's colour and the background colour.

It is the yardstick of bench/quality and of the quality tests: "the image shows a green ring on
a yellow background" becomes three argmaxes. Trained by shapeworld/train_classifier.py.
"""
import os

import torch
from torch import nn

from . import world

WEIGHTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights", "classifier.safetensors")
HEADS = {"kind": world.KINDS, "colour": world.COLOUR_NAMES, "background": world.COLOUR_NAMES}


def _block(c_in, c_out):
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(),
                         nn.Conv2d(c_out, c_out, 3, padding=1, stride=2), nn.BatchNorm2d(c_out), nn.ReLU())


class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(_block(3, 32), _block(32, 64), _block(64, 96), _block(96, 128))
        self.heads = nn.ModuleDict({name: nn.Linear(128 * 2, len(labels)) for name, labels in HEADS.items()})

    def forward(self, images: torch.Tensor) -> dict:
        """images: (B, 3, H, W) in 0..1 -> logits per head."""
        f = self.features(images * 2 - 1)
        f = torch.cat([f.mean((2, 3)), f.amax((2, 3))], 1)
        return {name: head(f) for name, head in self.heads.items()}


def load(path: str = WEIGHTS, device="cpu") -> Classifier:
    import safetensors.torch
    if not os.path.exists(path):
        raise FileNotFoundError(f"no ShapeWorld classifier at {path}: run shapeworld/train_classifier.py")
    net = Classifier()
    net.load_state_dict(safetensors.torch.load_file(path))
    return net.to(device).eval()


@torch.no_grad()
def predict(net: Classifier, images: torch.Tensor) -> list:
    """images: ComfyUI IMAGE (B, H, W, 3) in 0..1 -> one dict per image: {"kind": ..., "colour": ..., "background": ...}."""
    p = next(net.parameters())
    x = images.to(p.device, p.dtype).movedim(-1, 1)
    if x.shape[-2:] != (world.SIZE, world.SIZE):
        x = torch.nn.functional.interpolate(x, size=(world.SIZE, world.SIZE), mode="area")
    logits = net(x.clamp(0, 1))
    picks = {name: logits[name].argmax(1).tolist() for name in HEADS}
    return [{name: HEADS[name][picks[name][i]] for name in HEADS} for i in range(x.shape[0])]


def labels(scene: world.Scene) -> dict:
    s = scene.shapes[0]
    return {"kind": s.kind, "colour": s.colour, "background": scene.background}
