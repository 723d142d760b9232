"""`make demo`: learn a word for a shape the ShapeWorld model can draw but has no word for (a ring,
which its captions only ever called "an object"), in a real, headless ComfyUI; then draw with the
new word, alone and with colours asked for, and let the ShapeWorld classifier say what was drawn.
Everything goes to demo-output/ in the repo (git-ignored):

    demo-output/models/checkpoints/shapeworld.safetensors   the demo model (shapeworld/weights/)
    demo-output/input/demo-ring/*.png                       the bundled images (assets/demo/)
    demo-output/models/embeddings/demo-ring.safetensors
    demo-output/output/texttune/demo-ring/                  run folder: config, metrics, checkpoints, loss.png
    demo-output/output/texttune-demo/                       the images drawn with embedding:demo-ring
    demo-output/comfyui.log                                 the server's log

The graph goes through ComfyUI's HTTP API (/prompt, /history), as any client would send it.
"""
import filecmp
import os
import shutil
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = os.path.join(REPO, "demo-output")
ASSETS = os.path.join(REPO, "assets", "demo")
sys.path.insert(0, os.path.join(REPO, "tests"))

from comfyui_server import ComfyError, ComfyServer  # noqa: E402

TOKEN = "demo-ring"
RUN = "demo-ring"
DATASET = "demo-ring"          # folder under input/
KIND = "ring"                  # what the classifier should read in the drawn images
STEPS = 200
PROMPTS = {"alone": f"a photo of a embedding:{TOKEN}",
           "green on yellow": f"a green embedding:{TOKEN} on a yellow background"}
IMAGES_PER_PROMPT = 4


# -- the demo model: the one place that says which checkpoint the demo uses -----------------
CHECKPOINT = "shapeworld.safetensors"


def write_checkpoint(path: str):
    """ShapeWorld: trained by shapeworld/train_model.py, registered by tests/custom_nodes/texttune_test_models.
    Copied when `path` is missing or differs from the committed file (a pull that retrains the model)."""
    source = os.path.join(REPO, "shapeworld", "weights", CHECKPOINT)
    if os.path.exists(path) and filecmp.cmp(source, path, shallow=False):
        return
    print(f"writing the demo model {path}")
    shutil.copyfile(source, path + ".partial")
    os.replace(path + ".partial", path)
# ---------------------------------------------------------------------------------------------


def graph() -> dict:
    ckpt, data, train = ["1", 0], ["2", 0], "3"
    g = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
        "2": {"class_type": "LoadImageDataSetFromFolder", "inputs": {"folder": DATASET}},
        train: {"class_type": "TextTuneTrainTextualInversion", "inputs": {
            "model": ckpt, "clip": ["1", 1], "vae": ["1", 2], "images": data,
            "token_name": TOKEN, "init_words": "object", "vectors": 1, "template_set": "custom",
            "custom_templates": "a {}\na photo of a {}",
            "steps": STEPS, "learning_rate": 1e-3, "lr_schedule": "constant", "batch_size": 4,
            "resolution": 64, "flip": False, "seed": 0, "save_every": 50, "run_name": RUN}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": [train, 0]}},
        "6": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": IMAGES_PER_PROMPT}},
        "10": {"class_type": "LossGraphNode", "inputs": {"loss": [train, 2], "filename_prefix": "texttune-demo/loss"}},
    }
    for i, (label, text) in enumerate(PROMPTS.items()):
        enc, sample, decode, save = (str(20 + 4 * i + k) for k in range(4))
        g[enc] = {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": [train, 0]}}
        g[sample] = {"class_type": "KSampler", "inputs": {
            "model": ckpt, "seed": i, "steps": 20, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal",
            "positive": [enc, 0], "negative": ["5", 0], "latent_image": ["6", 0], "denoise": 1.0}}
        g[decode] = {"class_type": "VAEDecode", "inputs": {"samples": [sample, 0], "vae": ["1", 2]}}
        g[save] = {"class_type": "SaveImage", "inputs": {
            "images": [decode, 0], "filename_prefix": f"texttune-demo/{TOKEN}-{label.replace(' ', '-')}"}}
    return g


def save_nodes() -> dict:
    return {label: str(20 + 4 * i + 3) for i, label in enumerate(PROMPTS)}


def read_back(paths: list[str]) -> list[dict]:
    """What the ShapeWorld classifier reads in the saved images."""
    from comfy_host import setup_in_process
    setup_in_process()
    import numpy as np
    import torch
    from PIL import Image
    from texttune.shapeworld import classifier
    images = torch.from_numpy(np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])).float() / 255
    return classifier.predict(classifier.load(), images)


def prepare():
    ckpt_path = os.path.join(BASE, "models", "checkpoints", CHECKPOINT)
    os.makedirs(os.path.dirname(ckpt_path), exist_ok=True)
    write_checkpoint(ckpt_path)
    images = sorted(f for f in os.listdir(ASSETS) if f.endswith(".png"))
    if not images:
        raise SystemExit(f"No demo images in {ASSETS}: run scripts/make_demo_images.py.")
    dataset = os.path.join(BASE, "input", DATASET)
    shutil.rmtree(dataset, ignore_errors=True)
    os.makedirs(dataset)
    for f in images:
        shutil.copy2(os.path.join(ASSETS, f), dataset)
    # A fresh run each time (queueing an existing run folder would resume it instead).
    shutil.rmtree(os.path.join(BASE, "output", "texttune", RUN), ignore_errors=True)
    return len(images)


def main() -> int:
    t0 = time.monotonic()
    n = prepare()
    log = os.path.join(BASE, "comfyui.log")
    if os.path.exists(log):
        os.remove(log)
    print(f"starting ComfyUI headless (log: {log})")
    server = ComfyServer(BASE, log_path=log)
    try:
        server.start()
        t_ready = time.monotonic()
        print(f"server ready at {server.url} after {t_ready - t0:.1f} s; training '{TOKEN}' on {n} images "
              f"for {STEPS} steps, then drawing with it")
        entry = server.run(graph(), timeout=1800)
        t_done = time.monotonic()
    except ComfyError as e:
        print(f"\nDEMO FAILED: {e}\n(server log: {log})", file=sys.stderr)
        return 1
    finally:
        server.stop()

    embedding = os.path.join(BASE, "models", "embeddings", f"{TOKEN}.safetensors")
    drawn = {label: server.output_files(entry, node) for label, node in save_nodes().items()}
    generated = [p for paths in drawn.values() for p in paths]
    run_plot = server.output_files(entry, "3")
    graph_plot = server.output_files(entry, "10")
    missing = [p for p in [embedding, *generated, *run_plot, *graph_plot] if not os.path.isfile(p)]
    if missing or not generated or not run_plot:
        print(f"\nDEMO FAILED: the workflow finished but files are missing: {missing or 'no image reported'}",
              file=sys.stderr)
        return 1
    if graph_plot:
        # The core loss-graph node only previews into temp/, which the next server start wipes.
        kept = os.path.join(os.path.dirname(generated[0]), "loss-graph-core.png")
        shutil.copyfile(graph_plot[0], kept)
        graph_plot = [kept]
    print()
    print(f"embedding        {embedding}")
    all_reads = iter(read_back(generated))       # one classifier load for every image
    for label, paths in drawn.items():
        reads = [next(all_reads) for _ in paths]
        hits = sum(r["kind"] == KIND for r in reads)
        print(f"'{PROMPTS[label]}': {len(paths)} images in {os.path.dirname(paths[0])}")
        seen = ", ".join(f"{r['colour']} {r['kind']} on {r['background']}" for r in reads)
        print(f"    the classifier reads: {seen}  ({hits}/{len(reads)} {KIND}s)")
    print(f"loss plot        {run_plot[0]}")
    if graph_plot:
        print(f"loss plot (core) {graph_plot[0]}")
    print(f"run folder       {os.path.dirname(run_plot[0])}")
    print(f"took {t_done - t0:.1f} s in all ({t_ready - t0:.1f} s start-up, {t_done - t_ready:.1f} s workflow)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
