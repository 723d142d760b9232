import math

import pytest
import torch

from texttune.trainers import data, engine, timesteps


def test_prepare_pixels_any_size_to_square():
    imgs = [torch.rand(1, 80, 64, 3), torch.rand(2, 64, 120, 4)]   # mixed sizes, RGBA dropped to RGB
    px = data.prepare_pixels(imgs, 64)
    assert px.shape == (3, 64, 64, 3) and 0 <= px.min() and px.max() <= 1


def test_prepare_pixels_errors():
    with pytest.raises(ValueError, match="empty"):
        data.prepare_pixels([], 64)
    with pytest.raises(ValueError, match="multiple of 8"):
        data.prepare_pixels(torch.rand(1, 64, 64, 3), 60)


def test_masks_become_latent_loss_weights():
    m = torch.zeros(1, 64, 64)
    m[:, :, :32] = 1
    w = data.prepare_masks(m, 3, 64, 8)
    assert w.shape == (3, 1, 8, 8)
    assert torch.allclose(w[0, 0, :, :4], torch.ones(8, 4)) and w[0, 0, :, 4:].sum() == 0
    with pytest.raises(ValueError, match="all zero"):
        data.prepare_masks(torch.zeros(1, 64, 64), 1, 64, 8)
    with pytest.raises(ValueError, match="one per image"):
        data.prepare_masks(torch.ones(2, 64, 64), 3, 64, 8)


def sd_sigmas():
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    ac = torch.cumprod(1 - betas, 0)
    return ((1 - ac) / ac) ** 0.5


def test_snr_sampling_matches_closed_form_for_sd_schedule():
    sig = sd_sigmas()
    p = timesteps.snr_weights(sig)
    logsnr = torch.log(1 / sig ** 2)
    closed = (logsnr.max() - logsnr) / (logsnr.max() - logsnr).sum()
    assert torch.allclose(p, closed)
    assert abs(float(p[500:].sum()) - 0.62) < 0.01
    s = timesteps.TimestepSampler(sig, "snr")
    draws = s.sample(20000, torch.Generator().manual_seed(0))
    assert abs(float((draws >= 500).float().mean()) - float(p[500:].sum())) < 0.015


def test_uniform_sampling_and_unknown_kind():
    s = timesteps.TimestepSampler(sd_sigmas().float(), "uniform")
    d = s.sample(20000, torch.Generator().manual_seed(0))
    assert d.min() >= 0 and d.max() <= 999 and abs(float((d >= 500).float().mean()) - 0.5) < 0.015
    with pytest.raises(ValueError, match="uniform"):
        timesteps.TimestepSampler(sd_sigmas(), "cosine")


def test_schedules():
    c = engine.Schedule(1.0, 100, "cosine", warmup=10)
    assert c.factor(0) == pytest.approx(0.1) and c.factor(10) == pytest.approx(1.0)
    assert c.factor(55) == pytest.approx(0.5) and c.factor(100) == pytest.approx(0.0, abs=1e-9)
    assert engine.Schedule(1.0, 100, "linear").factor(50) == pytest.approx(0.5)
    assert engine.Schedule(1.0, 100).factor(99) == 1.0
    assert math.isfinite(engine.Schedule(1.0, 1, "cosine").factor(0))
