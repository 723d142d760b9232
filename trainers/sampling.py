"""Deterministic DDIM in k-diffusion space (x = x0 + sigma * eps), as plain tensor maths.

With eta = 0, DDIM from sigma to sigma' keeps the predicted noise and moves x along it:
x' = D + sigma' * (x - D) / sigma, which is the core Euler step. The same line serves eps,
v-prediction and flow models, since D (the denoised prediction) comes from the model's own
`model_sampling`.
"""
import torch


def leading_timesteps(steps: int, train_steps: int = 1000) -> list[int]:
    """TextCraftor's DDIM timesteps, high to low: "leading" spacing ending at t = train_steps - 1
    (25 of 1000: 999, 959, ..., 39). Its scheduler's `set_timesteps(steps, lead=999)`."""
    if not 1 <= steps <= train_steps:
        raise ValueError(f"{steps} sampling steps: use 1 to {train_steps} (the model's schedule has "
                         f"{train_steps} timesteps).")
    ratio = train_steps // steps
    offset = train_steps - 1 - ratio * (steps - 1)
    return [max(1, offset + ratio * i) for i in reversed(range(steps))]


def ddim_sigmas(table: torch.Tensor, steps: int) -> torch.Tensor:
    """The sigmas of `steps` DDIM steps over a model's discrete schedule `table` (sigma per
    timestep, low to high), then 0: the last step lands on the clean prediction, as ComfyUI's
    samplers end."""
    ts = leading_timesteps(steps, len(table))
    return torch.cat([table.detach().float().cpu()[ts], torch.zeros(1)])


def ddim_step(x: torch.Tensor, denoised: torch.Tensor, sigma, sigma_next) -> torch.Tensor:
    """Deterministic DDIM from sigma to sigma_next, computed as the core Euler sampler does (same
    arithmetic order, so a sampler built on it can equal the core one bit for bit)."""
    d = (x - denoised) / sigma
    return x + d * (sigma_next - sigma)


def guided(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: uncond + scale * (cond - uncond) (linear, so the same in x0 and eps)."""
    return uncond + scale * (cond - uncond)
