"""The shared engine on a toy method: resume is exact, cancel and NaN keep a usable checkpoint."""
import contextlib
import json
import os

import pytest
import torch

import comfy.model_management as mm
from interrupts import interrupt_at
from texttune.trainers import engine, files
from texttune.trainers.runs import RunFolder


class Toy(engine.Method):
    def __init__(self):
        self.p = {"w": torch.nn.Parameter(torch.full((4,), 3.0)), "b": torch.nn.Parameter(torch.ones(2))}

    def trainable(self):
        return self.p

    def param_groups(self):
        return [{"params": ["w"]}, {"params": ["b"], "lr": 0.05}]

    def session(self):
        return contextlib.nullcontext()

    def loss(self, step, g):
        target = torch.randn(4, generator=g)
        return ((self.p["w"] - target) ** 2).sum() + (self.p["b"] ** 2).sum(), {"target0": float(target[0])}


def run(tmp, name, steps, **kw):
    m = Toy()
    folder = RunFolder(str(tmp), name, {"method": "toy", "steps": steps})
    res = engine.train(m, folder, steps=steps, schedule=engine.Schedule(0.1, steps, "cosine"), seed=7, **kw)
    return m, folder, res


def test_loss_goes_down_and_metrics_are_written(tmp_path):
    m, folder, res = run(tmp_path, "plain", 30, save_every=10)
    rows = folder.read_metrics()
    assert [r["step"] for r in rows] == list(range(1, 31))
    assert sum(res.losses[-5:]) < 0.5 * sum(res.losses[:5])
    assert folder.latest_step() == 30
    assert sorted(os.listdir(folder.ckpt_dir)) == ["step_0000020.safetensors", "step_0000030.safetensors"]


def test_cancel_saves_and_resume_equals_uninterrupted(tmp_path):
    ref, ref_folder, _ = run(tmp_path, "ref", 12, save_every=4)
    with interrupt_at(6), pytest.raises(mm.InterruptProcessingException):
        run(tmp_path, "cut", 12, save_every=4)
    cut = RunFolder(str(tmp_path), "cut", {"method": "toy", "steps": 12})
    assert cut.latest_step() == 6
    m, folder, res = run(tmp_path, "cut", 12, save_every=4)
    assert res.resumed_from == 6 and res.steps_done == 12
    for k in ref.p:
        assert torch.allclose(ref.p[k], m.p[k], atol=1e-6, rtol=0)
    a, _ = files.load_safetensors(ref_folder.checkpoint_path(12))
    b, _ = files.load_safetensors(folder.checkpoint_path(12))
    assert set(a) == set(b) and any(k.startswith("optim.") for k in a)
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6, rtol=0), k
    assert [r["step"] for r in folder.read_metrics()] == list(range(1, 13))


def test_optimizer_state_is_restored_exactly(tmp_path):
    with interrupt_at(5), pytest.raises(mm.InterruptProcessingException):
        run(tmp_path, "opt", 10)
    folder = RunFolder(str(tmp_path), "opt", {"method": "toy", "steps": 10})
    m = Toy()
    saved, _ = files.load_safetensors(folder.checkpoint_path(5))
    opt = torch.optim.AdamW([{"params": [m.p["w"]]}, {"params": [m.p["b"]]}])
    folder.load_checkpoint(5, m.p, opt)
    assert torch.equal(opt.state[m.p["w"]]["exp_avg"], saved["optim.0.exp_avg"])
    assert torch.equal(m.p["b"].detach(), saved["param.b"])
    assert opt.param_groups[1]["lr"] == pytest.approx(saved and json.loads(
        files.load_safetensors(folder.checkpoint_path(5))[1]["param_groups"])[1]["lr"])


def test_nan_loss_stops_with_advice_and_keeps_last_good_state(tmp_path, monkeypatch):
    monkeypatch.setenv(engine.NAN_AT_STEP_ENV, "4")
    with pytest.raises(engine.TrainingStopped, match="Lower the learning rate") as e:
        run(tmp_path, "nan", 10, save_every=2)
    assert "step 4" in str(e.value)
    folder = RunFolder(str(tmp_path), "nan", {"method": "toy", "steps": 10})
    assert folder.latest_step() == 4
    t, _ = files.load_safetensors(folder.checkpoint_path(4))
    assert all(torch.isfinite(v).all() for v in t.values())


def test_changed_settings_refuse_to_resume(tmp_path):
    run(tmp_path, "cfg", 3)
    with pytest.raises(ValueError, match="other settings"):
        RunFolder(str(tmp_path), "cfg", {"method": "other", "steps": 3})
    RunFolder(str(tmp_path), "cfg", {"method": "toy", "steps": 50})   # more steps: allowed, resumes


class ScaledToy(Toy):
    def grad_scaling_device(self):
        return torch.device("cpu")


def test_grad_scaling_path_trains_and_resumes_exactly(tmp_path):
    def go(name, **kw):
        m = ScaledToy()
        folder = RunFolder(str(tmp_path), name, {"method": "toy", "steps": 8})
        return m, engine.train(m, folder, steps=8, schedule=engine.Schedule(0.1, 8), seed=3, **kw), folder

    ref, res, ref_folder = go("s-ref")
    assert sum(res.losses[-3:]) < sum(res.losses[:3])
    with interrupt_at(4), pytest.raises(mm.InterruptProcessingException):
        go("s-cut")
    m, res2, folder = go("s-cut")
    assert res2.resumed_from == 4
    assert "grad_scaler" in files.load_safetensors(folder.checkpoint_path(8))[1]
    for k in ref.p:
        assert torch.allclose(ref.p[k], m.p[k], atol=1e-6, rtol=0)


class OomToy(Toy):
    oom_advice = "lower the batch size"

    def loss(self, step, g):
        if step == 3:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return super().loss(step, g)


def test_out_of_memory_becomes_advice_and_keeps_checkpoint(tmp_path):
    folder = RunFolder(str(tmp_path), "oom", {"method": "toy", "steps": 8})
    with pytest.raises(engine.TrainingStopped, match="lower the batch size") as e:
        engine.train(OomToy(), folder, steps=8, schedule=engine.Schedule(0.1, 8), seed=0)
    assert "step 3" in str(e.value) and folder.latest_step() == 3
    assert [r["step"] for r in folder.read_metrics()] == [1, 2, 3]
