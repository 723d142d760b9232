"""End to end: the real ComfyUI server as a subprocess, workflows through /prompt.

Learns a word with TextTuneTrainTextualInversion from images loaded by core nodes, draws with
`embedding:<token>` in the same graph, checks every file the run wrote, then checks that a bad
token name fails with the rule, writes nothing, and leaves the server serving, and that a
cancelled run keeps a resumable checkpoint.
"""
import json
import os
import shutil
import time

import pytest
from safetensors import safe_open

from comfyui_server import REPO, ComfyError, ComfyServer, comfyui_path

TOKEN = "e2e-star"
CKPT = "tinysd.safetensors"
SHAPEWORLD = "shapeworld.safetensors"
IMAGES = ["ring_0.png", "ring_1.png", "ring_2.png"]   # assets/demo/


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny):
    base = tmp_path_factory.mktemp("server") / "base"
    (base / "models" / "checkpoints").mkdir(parents=True)
    tiny.save_checkpoint(str(base / "models" / "checkpoints" / CKPT), seed=0)
    shutil.copy(os.path.join(REPO, "shapeworld", "weights", SHAPEWORLD), base / "models" / "checkpoints" / SHAPEWORLD)
    (base / "input").mkdir()
    for name in IMAGES:
        shutil.copy(os.path.join(REPO, "assets", "demo", name), base / "input" / name)
    srv = ComfyServer(str(base)).start()
    yield srv
    srv.stop()


def train_graph(token: str, steps: int, save_every: int, run_name: str = "", draw: bool = True,
                batch_size: int = 3) -> dict:
    """CheckpointLoaderSimple + LoadImage x3 batched -> TI trainer [-> CLIPTextEncode -> KSampler ->
    VAEDecode -> SaveImage] and the core loss-graph node."""
    g = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
        "img0": {"class_type": "LoadImage", "inputs": {"image": IMAGES[0]}},
        "img1": {"class_type": "LoadImage", "inputs": {"image": IMAGES[1]}},
        "img2": {"class_type": "LoadImage", "inputs": {"image": IMAGES[2]}},
        "batch01": {"class_type": "ImageBatch", "inputs": {"image1": ["img0", 0], "image2": ["img1", 0]}},
        "batch": {"class_type": "ImageBatch", "inputs": {"image1": ["batch01", 0], "image2": ["img2", 0]}},
        "train": {"class_type": "TextTuneTrainTextualInversion", "inputs": {
            "model": ["ckpt", 0], "clip": ["ckpt", 1], "vae": ["ckpt", 2], "images": ["batch", 0],
            "token_name": token, "init_words": "star", "vectors": 2, "template_set": "object",
            "steps": steps, "learning_rate": 5e-3, "lr_schedule": "constant", "batch_size": batch_size,
            "resolution": 64, "flip": True, "seed": 0, "save_every": save_every, "run_name": run_name}},
        "lossgraph": {"class_type": "LossGraphNode", "inputs": {"loss": ["train", 2], "filename_prefix": "e2e/loss"}},
    }
    if draw:
        g.update({
            "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": f"a photo of embedding:{token}",
                                                                "clip": ["train", 0]}},
            "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["train", 0]}},
            "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "sample": {"class_type": "KSampler", "inputs": {
                "model": ["ckpt", 0], "seed": 0, "steps": 3, "cfg": 5.0, "sampler_name": "euler",
                "scheduler": "normal", "positive": ["pos", 0], "negative": ["neg", 0],
                "latent_image": ["latent", 0], "denoise": 1.0}},
            "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["ckpt", 2]}},
            "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": "e2e/gen"}},
        })
    return g


def files_named(root, prefix):
    hits = []
    for folder, dirs, names in os.walk(root):        # does not follow the custom_nodes/texttune link
        hits += [os.path.join(folder, n) for n in dirs + names if n.lower().startswith(prefix)]
    return hits


def test_train_draw_reject_cancel(server):
    base = server.base
    t0 = time.monotonic()

    # 1. Train 6 steps (checkpoint every 3) and draw with the new word, in one graph.
    entry = server.run(train_graph(TOKEN, steps=6, save_every=3), timeout=180)

    emb = os.path.join(base, "models", "embeddings", f"{TOKEN}.safetensors")
    with safe_open(emb, framework="pt") as f:
        assert list(f.keys()) == ["emb_params"]
        assert list(f.get_tensor("emb_params").shape) == [2, 32]       # [vectors, TinySD text width]
        assert f.metadata()["token"] == TOKEN

    run = os.path.join(base, "output", "texttune", f"ti-{TOKEN}")      # default run name
    with open(os.path.join(run, "config.json")) as fh:
        assert json.load(fh)["token_name"] == TOKEN
    with open(os.path.join(run, "metrics.jsonl")) as fh:
        rows = [json.loads(line) for line in fh]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert all(r["loss"] == r["loss"] for r in rows)                   # finite, not NaN
    assert sorted(os.listdir(os.path.join(run, "checkpoints"))) == ["step_0000003.safetensors",
                                                                    "step_0000006.safetensors"]
    assert os.path.getsize(os.path.join(run, "loss.png")) > 0
    assert server.output_files(entry, "train") == [os.path.join(run, "loss.png")]

    generated = server.output_files(entry, "save")
    assert len(generated) == 1 and generated[0].endswith(".png") and os.path.getsize(generated[0]) > 0
    assert all(os.path.isfile(p) for p in server.output_files(entry, "lossgraph"))
    # CLIPTextEncode found the new embedding through the trainer's CLIP output.
    with open(server.log_path, encoding="utf-8", errors="replace") as fh:
        assert f"embedding:{TOKEN} does not exist" not in fh.read()
    t_train = time.monotonic()

    # 2. A bad token name fails with the rule, writes nothing, and the server keeps serving.
    with pytest.raises(ComfyError) as err:
        server.run(train_graph("../evil", steps=6, save_every=3), timeout=120)
    message = str(err.value)
    assert "TextTuneTrainTextualInversion" in message
    assert "'../evil' is not allowed" in message and "letters, digits" in message
    assert files_named(os.path.dirname(base), "evil") == []

    after = server.run(train_graph("after-evil", steps=2, save_every=0, draw=False), timeout=120)
    assert os.path.isfile(os.path.join(base, "models", "embeddings", "after-evil.safetensors"))
    assert after["status"]["status_str"] == "success"
    t_bad = time.monotonic()

    # 3. Interrupting a long run stops it and keeps a resumable checkpoint of what it did.
    cancel_run = os.path.join(base, "output", "texttune", "e2e-cancel")
    pid = server.post_prompt(train_graph("e2e-cancel", steps=100000, save_every=0, run_name="e2e-cancel",
                                         draw=False, batch_size=1))
    deadline = time.monotonic() + 60
    while not os.path.exists(os.path.join(cancel_run, "config.json")):
        assert time.monotonic() < deadline, "the long run never started"
        time.sleep(0.1)
    time.sleep(1.0)
    server.interrupt()
    with pytest.raises(ComfyError, match="Interrupted at TextTuneTrainTextualInversion"):
        server.wait(pid, timeout=60)
    ckpts = os.listdir(os.path.join(cancel_run, "checkpoints"))
    assert len(ckpts) == 1 and ckpts[0].startswith("step_")
    saved_step = int(ckpts[0][len("step_"):-len(".safetensors")])
    metrics = os.path.join(cancel_run, "metrics.jsonl")
    rows = open(metrics).read().splitlines() if os.path.exists(metrics) else []
    assert len(rows) == saved_step

    # Nothing leaked into the ComfyUI install itself.
    comfy = comfyui_path()
    for kind in ("models/embeddings", "output"):
        folder = os.path.join(comfy, kind)
        if os.path.isdir(folder):
            assert not [n for n in os.listdir(folder) if "e2e" in n or "evil" in n]
    print(f"\ne2e timings: train+draw {t_train - t0:.1f} s, bad input + recovery {t_bad - t_train:.1f} s, "
          f"cancel {time.monotonic() - t_bad:.1f} s")


def test_shapeworld_loads_and_draws_in_the_server(server):
    """The test-only node registers ShapeWorld in the server: the core loader reads the committed
    checkpoint and the core sampler draws what the prompt asks for."""
    g = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": SHAPEWORLD}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a yellow square on a blue background", "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["ckpt", 1]}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 2}},
        "sample": {"class_type": "KSampler", "inputs": {
            "model": ["ckpt", 0], "seed": 0, "steps": 20, "cfg": 5.0, "sampler_name": "euler",
            "scheduler": "normal", "positive": ["pos", 0], "negative": ["neg", 0],
            "latent_image": ["latent", 0], "denoise": 1.0}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["ckpt", 2]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": "e2e/shapeworld"}},
    }
    entry = server.run(g, timeout=120)
    paths = server.output_files(entry, "save")
    assert len(paths) == 2
    import numpy as np
    from PIL import Image
    for p in paths:
        img = np.asarray(Image.open(p).convert("RGB")).astype(float)
        corners = img[[0, 0, -1, -1], [0, -1, 0, -1]].mean(0)
        assert corners[2] > 150 and corners[0] < 120, corners          # a blue background
        assert ((img[..., 0] > 170) & (img[..., 1] > 150) & (img[..., 2] < 120)).mean() > 0.03   # yellow pixels
