"""Build example_workflows/*.json (ComfyUI UI format, shown in the template browser) from the
readable API graphs below, using the node definitions of a real server (widget order, outputs).

    $(cat .host/python) scripts/build_example_workflows.py
"""
import json
import os
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))

from comfyui_server import ComfyServer  # noqa: E402
from workflow_format import api_to_ui  # noqa: E402

CHECKPOINT = "v1-5-pruned-emaonly.safetensors"

EXAMPLES = {
    "textual_inversion": {
        "notes": [
            "Textual inversion: learn a new word from 3-5 images, then draw with it.\n\n"
            "1. Put your checkpoint in models/checkpoints/ and pick it in Load Checkpoint (SD1.5 here; "
            "for SDXL set resolution 1024).\n"
            "2. Put 3-5 images of your subject in a folder input/my-concept/ (any sizes) and pick it in the "
            "dataset loader.\n"
            "3. Set token_name, and init_words to a word close to your subject. Queue.\n\n"
            "The word is saved as models/embeddings/<token_name>.safetensors: write embedding:<token_name> "
            "in any prompt. The run folder output/texttune/<run_name>/ holds the loss curve and checkpoints; "
            "cancel saves, and queueing the same run again resumes it.",
        ],
        "graph": {
            "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
            "data": {"class_type": "LoadImageDataSetFromFolder", "inputs": {"folder": "my-concept"}},
            "train": {"class_type": "TextTuneTrainTextualInversion", "inputs": {
                "model": ["ckpt", 0], "clip": ["ckpt", 1], "vae": ["ckpt", 2], "images": ["data", 0],
                "token_name": "my-concept", "init_words": "toy", "vectors": 4, "template_set": "object",
                "steps": 500, "learning_rate": 0.005, "lr_schedule": "constant", "batch_size": 4,
                "resolution": 512, "flip": True, "seed": 0, "save_every": 100, "run_name": "",
                "custom_templates": ""}},
            "pos": {"class_type": "CLIPTextEncode",
                    "inputs": {"text": "a photo of embedding:my-concept on a beach", "clip": ["train", 0]}},
            "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry, low quality", "clip": ["train", 0]}},
            "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
            "sample": {"class_type": "KSampler", "inputs": {
                "model": ["ckpt", 0], "seed": 0, "steps": 25, "cfg": 7.0, "sampler_name": "euler",
                "scheduler": "normal", "positive": ["pos", 0], "negative": ["neg", 0],
                "latent_image": ["latent", 0], "denoise": 1.0}},
            "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["ckpt", 2]}},
            "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": "texttune"}},
            "plot": {"class_type": "LossGraphNode", "inputs": {"loss": ["train", 2], "filename_prefix": "loss"}},
        },
    },
}


def main():
    with tempfile.TemporaryDirectory() as base, ComfyServer(base) as srv:
        info = srv.object_info()
    out_dir = os.path.join(REPO, "example_workflows")
    os.makedirs(out_dir, exist_ok=True)
    for name, ex in EXAMPLES.items():
        graph = {k: v for k, v in ex["graph"].items()}
        path = os.path.join(out_dir, name + ".json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(api_to_ui(graph, info, ex["notes"]), f, indent=1)
        print("wrote", path)


if __name__ == "__main__":
    main()
