"""Live progress and preview pictures of the trainers, in process on TinySD: what the browser is
sent (nodes/progress.py), what the route returns to a reconnecting page, and that pictures drawn
during training leave the training itself exactly as it is without them."""
import asyncio
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import folder_paths
from texttune.nodes import progress
from texttune.nodes.reward_training import TrainRewardLoRA, TrainRewardTextEncoder
from texttune.nodes.textboost import TrainTextBoost
from texttune.nodes.textual_inversion import TrainTextualInversion
from texttune.shapeworld import reward as shapeworld_reward
from texttune.trainers import files
from texttune.trainers.comfy_adapter import Diffusion, TextEncoder
from texttune.trainers.preview import Preview
from texttune.trainers.runs import RunFolder
from texttune.trainers.textual_inversion import TextualInversion

TI = dict(init_words="dog", vectors=2, template_set="object", steps=6, learning_rate=5e-2, lr_schedule="constant",
          batch_size=2, resolution=64, flip=True, seed=3, save_every=0, run_name="")
TB = dict(class_word="dog", lora_rank=2, lora_targets="q, v", augmentation_tokens=True, kp_weight=0.1,
          snr_timesteps=True, steps=4, batch_size=2, lora_learning_rate=1e-3, token_learning_rate=1e-3,
          template_set="textboost", resolution=64, seed=0, save_every=0, run_name="")


REWARD = dict(prompts="a red circle\na blue star", prompt_file="", steps=3, learning_rate=1e-3, batch_size=1,
              sampling_steps=3, grad_steps=1, cfg=5.0, resolution=64, seed=0, save_every=0)


class FakeServer:
    last_prompt_id = "prompt-1"

    def __init__(self):
        self.sent = []

    def send_sync(self, event, data, sid=None):
        json.dumps(data, allow_nan=False)               # what the socket sends must be plain JSON
        self.sent.append((event, data))

    def of(self, event):
        return [d for e, d in self.sent if e == event]


@pytest.fixture()
def server(monkeypatch):
    srv = FakeServer()
    monkeypatch.setattr(progress, "_server", lambda: srv)
    return srv


@pytest.fixture()
def models(tiny):
    emb_dir = folder_paths.get_folder_paths("embeddings")[0]
    return tiny.make_model(), tiny.make_clip([emb_dir]), tiny.make_vae()


def images(n=3, seed=0):
    return torch.rand(n, 64, 64, 3, generator=torch.Generator().manual_seed(seed))


def run_dir(name):
    return os.path.join(folder_paths.get_output_directory(), "texttune", name)


def metrics(name):
    with open(os.path.join(run_dir(name), "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def train(node, models, imgs, **args):
    m, c, v = models
    with torch.inference_mode():                       # as the executor calls nodes
        return node.execute(model=[m], clip=[c], vae=[v], images=[imgs], **{k: [val] for k, val in args.items()})


def test_ti_previews_leave_training_unchanged_and_reach_the_browser(models, server):
    train(TrainTextualInversion, models, images(), token_name="pv-off", **TI)
    plain = metrics("ti-pv-off")
    off_events = list(server.sent)
    server.sent.clear()
    train(TrainTextualInversion, models, images(), token_name="pv-on", preview_every=2, **TI)
    watched = metrics("ti-pv-on")

    # the same run, step for step, with or without pictures
    assert [r["loss"] for r in watched] == [r["loss"] for r in plain]
    emb = lambda t: files.load_safetensors(os.path.join(folder_paths.get_folder_paths("embeddings")[0],  # noqa: E731
                                                        t + ".safetensors"))[0]["emb_params"]
    assert torch.equal(emb("pv-on"), emb("pv-off"))

    samples = os.path.join(run_dir("ti-pv-on"), "samples")
    assert sorted(os.listdir(samples)) == ["step_0000002.png", "step_0000004.png", "step_0000006.png"]
    assert Image.open(os.path.join(samples, "step_0000006.png")).size == (64, 64)
    assert not os.path.exists(os.path.join(run_dir("ti-pv-off"), "samples"))

    previews = server.of(progress.PREVIEW_EVENT)
    assert [p["step"] for p in previews] == [2, 4, 6]
    assert previews[-1]["image"] == {"filename": "step_0000006.png", "subfolder": "texttune/ti-pv-on/samples",
                                     "type": "output"}
    # throttled, yet every row arrives; the last event is the end of a finished run
    rows = [r for d in server.of(progress.EVENT) for r in d["rows"]]
    assert [r["step"] for r in rows] == list(range(1, 7)) and [r["loss"] for r in rows] == [r["loss"] for r in plain]
    assert all(set(r) == {"step", "loss"} for r in rows)
    assert server.sent[-1] == (progress.END_EVENT, {"node": None, "run": "ti-pv-on", "step": 6, "total": 6,
                                                    "finished": True})
    assert [e for e, _ in off_events].count(progress.PREVIEW_EVENT) == 0
    assert all(r["run"] != "ti-pv-on" for r in progress.active_runs())      # no longer in progress


def test_textboost_previews_leave_training_unchanged(models, server):
    img = images(1, seed=5)
    train(TrainTextBoost, models, img, token_name="tbpv-off", **TB)
    train(TrainTextBoost, models, img, token_name="tbpv-on", preview_every=3, **TB)
    assert metrics("textboost-tbpv-on") == [{**r, "time": w["time"]} for r, w in
                                            zip(metrics("textboost-tbpv-off"), metrics("textboost-tbpv-on"))]
    assert os.listdir(os.path.join(run_dir("textboost-tbpv-on"), "samples")) == ["step_0000003.png"]
    assert "kp" in server.of(progress.EVENT)[-1]["rows"][-1]      # one curve per logged metric


@pytest.mark.parametrize("node,own", [(TrainRewardTextEncoder, {"encoder_name": "pv"}),
                                      (TrainRewardLoRA, {"lora_name": "pv", "lora_rank": 2, "lora_targets": "to_q, to_v"})])
def test_reward_trainer_previews_leave_training_unchanged(tiny, server, node, own):
    def run(name, **kw):
        with torch.inference_mode():
            m, c, v = tiny.make_model(), tiny.make_clip(), tiny.make_vae()
            node.execute(model=m, clip=c, vae=v, reward=shapeworld_reward.LargeAndCentred(),
                         **{**own, list(own)[0]: name}, run_name=name, **REWARD, **kw)
        return [{k: v for k, v in r.items() if k != "time"} for r in metrics(name)]
    key = node.__name__.lower()
    plain = run(f"{key}-off")
    assert run(f"{key}-on", preview_every=2) == plain
    assert os.listdir(os.path.join(run_dir(f"{key}-on"), "samples")) == ["step_0000002.png"]
    last = server.of(progress.EVENT)[-1]["rows"][-1]
    assert set(last) == {"step", "loss", *[k for k in plain[-1] if k not in ("step", "loss", "lr")]}
    assert len(last) > 2                                 # each reward's score is a curve of its own


def test_preview_draws_with_the_current_weights_and_the_same_noise(models, tmp_path):
    m, c, v = models
    diffusion, text = Diffusion(m), TextEncoder(c)
    with torch.inference_mode(False):
        lat = diffusion.to_model_latents(torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1)))
        method = TextualInversion(diffusion, text, lat, lat, None, ["a photo of a {}"], "dog", 2, 2)
        preview = Preview(diffusion, v, method.preview_context, 64, seed=9, folder=str(tmp_path))
        with method.session():
            first, again = preview.image(), preview.image()
            with torch.no_grad():
                for p in method.trainable().values():
                    p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(2)).to(p) * 5)
            moved = preview.image()
    assert first.shape == (64, 64, 3) and 0 <= float(first.min()) and float(first.max()) <= 1
    assert torch.equal(first, again)
    assert not torch.equal(first, moved)


def test_history_route_returns_the_rows_of_runs_in_progress(tmp_path, server):
    run = RunFolder(str(tmp_path), "watched", {"method": "test"})
    run.append_metrics([{"step": s, "loss": 1.0 / s, "lr": 0.1, "time": 0.01 * s, "reward": float(s)}
                        for s in range(1, 4)])
    reporter = progress.Reporter("12", run)
    reporter(3, 10, {"step": 3, "loss": 1 / 3, "lr": 0.1, "time": 0.03, "reward": 3.0})

    class Routes(list):
        def get(self, path):
            def add(handler):
                self.append((path, handler))
                return handler
            return add

    class WithRoutes:
        routes = Routes()
    assert progress.register_routes(WithRoutes) and not progress.register_routes(WithRoutes)
    (path, handler), = WithRoutes.routes
    assert path == "/texttune/runs"
    body = json.loads(asyncio.run(handler(None)).text)
    (got,) = [r for r in body["runs"] if r["run"] == "watched"]
    assert got["node"] == "12" and got["step"] == 3 and got["total"] == 10 and got["prompt_id"] == "prompt-1"
    assert got["rows"] == [{"step": s, "loss": 1.0 / s, "reward": float(s)} for s in range(1, 4)]
    reporter.close()
    assert server.sent[-1][0] == progress.END_EVENT and server.sent[-1][1]["finished"] is False
    assert all(r["run"] != "watched" for r in progress.active_runs())


def test_thin_keeps_at_most_the_limit_and_the_last_row():
    rows = [{"step": s} for s in range(1, 10_001)]
    out = progress.thin(rows, 2000)
    assert len(out) <= 2001 and out[0]["step"] == 1 and out[-1]["step"] == 10_000
    steps = np.diff([r["step"] for r in out[:-1]])
    assert steps.min() == steps.max()                   # evenly spread
    assert progress.thin(rows[:5], 2000) == rows[:5]


def test_non_finite_metrics_are_not_sent():
    assert progress.plotted({"step": 1, "loss": 0.5, "lr": 1e-3, "time": 2.0, "bad": float("nan"),
                             "worse": float("inf"), "label": "x"}) == {"step": 1, "loss": 0.5}
