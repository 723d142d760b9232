"""The ShapeWorld reward: "the shape is large and centred", computed from the pixels alone.

A test and benchmark reward kind with a known right answer (registered by the test-only custom
node tests/custom_nodes/texttune_test_models, never by the pack). For an image x in 0..1:

    b     = the per-channel median of the image's 1-pixel border (the background colour)
    f(p)  = 1 - exp(-|x(p) - b|^2 / TAU^2)               soft foreground mask, TAU = 0.15
    w(p)  = exp(-(u^2 + v^2) / (2 SIGMA^2))               centred window, u, v in [-1, 1], SIGMA = 0.35
    R     = sum_p f(p) w(p) / sum_p w(p)                  in 0..1

Background pixels count 0 and shape pixels about 1 (ShapeWorld's closest colours, blue and purple,
are 0.43 apart: f = 0.9997), and the window weighs the middle most, so a large centred shape
scores highest and a small shape in a corner lowest. Prompts are ignored. Differentiable in x
(the median passes its gradient to the chosen border pixel).
"""
import torch

from ..trainers.rewards import Reward, RewardKind

TAU = 0.15
SIGMA = 0.35


def large_and_centred(images: torch.Tensor) -> torch.Tensor:
    """images [B, 3, H, W] in 0..1 -> [B] in 0..1."""
    x = images.float()
    h, w = x.shape[-2:]
    border = torch.cat([x[..., 0, :], x[..., -1, :], x[..., 1:-1, 0], x[..., 1:-1, -1]], dim=-1)
    background = border.median(dim=-1).values[..., None, None]                       # [B, 3, 1, 1]
    foreground = 1 - torch.exp(-((x - background) ** 2).sum(1) / TAU ** 2)           # [B, H, W]
    v = (torch.arange(h, device=x.device) + 0.5) / h * 2 - 1
    u = (torch.arange(w, device=x.device) + 0.5) / w * 2 - 1
    window = torch.exp(-(v[:, None] ** 2 + u[None, :] ** 2) / (2 * SIGMA ** 2))
    return (foreground * window).sum((-2, -1)) / window.sum()


class LargeAndCentred(Reward):
    label = "ShapeWorld large+centred"

    def compute(self, images, prompts):
        return large_and_centred(images)


KIND = RewardKind("shapeworld", "ShapeWorld: large and centred shape", "nothing",
                  "nothing (computed from the image)", lambda path, clip_path, precision: LargeAndCentred())
