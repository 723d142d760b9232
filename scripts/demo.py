"""`make demo`: learn a new word from the bundled star images in a real, headless ComfyUI, then
draw with it. Everything goes to demo-output/ in the repo (git-ignored):

    demo-output/models/checkpoints/<checkpoint>     the demo model (written once)
    demo-output/input/demo-star/*.png               the bundled images (assets/demo/)
    demo-output/models/embeddings/demo-star.safetensors
    demo-output/output/texttune/demo-star/          run folder: config, metrics, checkpoints, loss.png
    demo-output/output/texttune-demo/               the image drawn with embedding:demo-star
    demo-output/comfyui.log                         the server's log

The graph goes through ComfyUI's HTTP API (/prompt, /history), as any client would send it.
"""
import os
import shutil
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = os.path.join(REPO, "demo-output")
ASSETS = os.path.join(REPO, "assets", "demo")
sys.path.insert(0, os.path.join(REPO, "tests"))

from comfyui_server import ComfyError, ComfyServer  # noqa: E402

TOKEN = "demo-star"
RUN = "demo-star"
DATASET = "demo-star"          # folder under input/
STEPS = 200


# -- the demo model: the one place that says which checkpoint the demo uses -----------------
CHECKPOINT = "tinysd.safetensors"


def write_checkpoint(path: str):
    """TinySD: random weights, SD1-shaped, registered by tests/custom_nodes/texttune_test_models."""
    from comfy_host import setup_in_process
    setup_in_process()
    import tinysd
    tmp = path + ".partial"
    tinysd.save_checkpoint(tmp, seed=0)
    os.replace(tmp, path)
# ---------------------------------------------------------------------------------------------


def graph() -> dict:
    ckpt, data, train = ["1", 0], ["2", 0], "3"
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
        "2": {"class_type": "LoadImageDataSetFromFolder", "inputs": {"folder": DATASET}},
        train: {"class_type": "TextTuneTrainTextualInversion", "inputs": {
            "model": ckpt, "clip": ["1", 1], "vae": ["1", 2], "images": data,
            "token_name": TOKEN, "init_words": "star", "vectors": 4, "template_set": "object",
            "steps": STEPS, "learning_rate": 5e-3, "lr_schedule": "constant", "batch_size": 4,
            "resolution": 64, "flip": True, "seed": 0, "save_every": 50, "run_name": RUN}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": f"a photo of embedding:{TOKEN}", "clip": [train, 0]}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": [train, 0]}},
        "6": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "7": {"class_type": "KSampler", "inputs": {
            "model": ckpt, "seed": 0, "steps": 20, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal",
            "positive": ["4", 0], "negative": ["5", 0], "latent_image": ["6", 0], "denoise": 1.0}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["1", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": f"texttune-demo/{TOKEN}"}},
        "10": {"class_type": "LossGraphNode", "inputs": {"loss": [train, 2], "filename_prefix": "texttune-demo/loss"}},
    }


def prepare():
    ckpt_path = os.path.join(BASE, "models", "checkpoints", CHECKPOINT)
    os.makedirs(os.path.dirname(ckpt_path), exist_ok=True)
    if not os.path.exists(ckpt_path):
        print(f"writing the demo model {ckpt_path}")
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
              f"for {STEPS} steps, then drawing 'a photo of embedding:{TOKEN}'")
        entry = server.run(graph(), timeout=1800)
        t_done = time.monotonic()
    except ComfyError as e:
        print(f"\nDEMO FAILED: {e}\n(server log: {log})", file=sys.stderr)
        return 1
    finally:
        server.stop()

    embedding = os.path.join(BASE, "models", "embeddings", f"{TOKEN}.safetensors")
    generated = server.output_files(entry, "9")
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
    print(f"generated image  {generated[0]}")
    print(f"loss plot        {run_plot[0]}")
    if graph_plot:
        print(f"loss plot (core) {graph_plot[0]}")
    print(f"run folder       {os.path.dirname(run_plot[0])}")
    print(f"took {t_done - t0:.1f} s in all ({t_ready - t0:.1f} s start-up, {t_done - t_ready:.1f} s workflow)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
