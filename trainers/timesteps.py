"""Timestep samplers over a model's own discrete noise schedule (`model_sampling.sigmas`).

Both samplers return indices into that table, so they are right for any schedule the model
(or a ModelSampling* patch) uses.
"""
import torch


def log_snr(sigmas: torch.Tensor) -> torch.Tensor:
    """log SNR of k-diffusion sigmas: x = x0 + sigma * eps, so SNR = 1 / sigma^2."""
    return -2.0 * torch.log(sigmas.double())


def snr_weights(sigmas: torch.Tensor) -> torch.Tensor:
    """TextBoost's p(t) proportional to (max log SNR - log SNR(t)), normalised to sum 1."""
    w = log_snr(sigmas).max() - log_snr(sigmas)
    return w / w.sum()


class TimestepSampler:
    """`kind` is "uniform" or "snr" (TextBoost's SNR-weighted sampling)."""

    def __init__(self, sigmas: torch.Tensor, kind: str = "uniform"):
        if kind not in ("uniform", "snr"):
            raise ValueError(f"Unknown timestep sampling {kind!r}: choose 'uniform' or 'snr'.")
        self.sigmas = sigmas.detach().float().cpu()
        self.probs = None if kind == "uniform" else snr_weights(self.sigmas).float()

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        if self.probs is None:
            return torch.randint(0, len(self.sigmas), (n,), generator=generator)
        return torch.multinomial(self.probs, n, replacement=True, generator=generator)

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return self.sigmas[t]
