"""What the example workflows need to run on a test server: the test model and files in place of the
user's (a checkpoint, an image folder and an image, a fine-tuned text encoder, a PromptNet), and the
inputs swapped for tiny sizes and the test reward (the ShapeWorld kind that tests/custom_nodes
registers, which reads no file). Shared by the examples' server test and the browser test."""
import glob
import os
import shutil

from comfyui_server import REPO

EXAMPLES = sorted(glob.glob(os.path.join(REPO, "example_workflows", "*.json")))
CKPT = "tinysd.safetensors"
TEXT_ENCODER = "tiny-tuned.safetensors"
SUBJECT = "ring_0.png"                           # one image in input/, for Load Image
PROMPTNET = "tiny/"                              # a release folder in models/promptnet/ (tests/tiny_promptnet.py)

# input name -> test value, for every widget of that name in an example
TINY = {"ckpt_name": CKPT, "folder": "concept", "steps": 3, "resolution": 64, "width": 64, "height": 64,
        "save_every": 2,
        "sampling_steps": 2, "grad_steps": 1}          # reward trainers: a short sampling chain
# node type -> {input name -> test value}
BY_NODE = {
    # the test reward instead of the user's downloaded model files
    "TextTuneLoadRewardModel": {"kind": "shapeworld", "model": "none", "clip_model": "none"},
    # an encoder of the test model's shape
    "TextTuneLoadTextEncoder": {"file": TEXT_ENCODER},
    # a PromptNet at TinySD's text width instead of ProFusion's release, and the subject image
    "TextTuneLoadPromptNet": {"promptnet": PROMPTNET},
    "LoadImage": {"image": SUBJECT},
}


def prepare_base(base: str, tiny) -> str:
    """Models and inputs the examples read, under a server's base folder (`tiny`: tests/tinysd.py)."""
    import safetensors.torch
    ckpts = os.path.join(base, "models", "checkpoints")
    os.makedirs(ckpts, exist_ok=True)
    tiny.save_checkpoint(os.path.join(ckpts, CKPT), seed=0)
    concept = os.path.join(base, "input", "concept")
    os.makedirs(concept, exist_ok=True)
    for name in sorted(os.listdir(os.path.join(REPO, "assets", "demo")))[:3]:
        shutil.copy(os.path.join(REPO, "assets", "demo", name), os.path.join(concept, name))
    # A "fine-tuned" encoder: another tiny CLIP in HF CLIPTextModel keys (what Save CLIP writes).
    te = os.path.join(base, "models", "text_encoders")
    os.makedirs(te, exist_ok=True)
    prefix = "clip_l.transformer."
    sd = {k[len(prefix):]: v.detach().contiguous() for k, v in tiny.make_clip(seed=7).cond_stage_model.state_dict().items()
          if k.startswith(prefix)}
    safetensors.torch.save_file(sd, os.path.join(te, TEXT_ENCODER))
    shutil.copy(os.path.join(REPO, "assets", "demo", SUBJECT), os.path.join(base, "input", SUBJECT))
    from tiny_promptnet import write_release
    write_release(os.path.join(base, "models", "promptnet", PROMPTNET.rstrip("/")))
    return base


def swap(graph: dict) -> dict:
    """An API-format example graph with the test values in place (links are left alone)."""
    for node in graph.values():
        for key, value in {**TINY, **BY_NODE.get(node["class_type"], {})}.items():
            if key in node["inputs"] and not isinstance(node["inputs"][key], list):
                node["inputs"][key] = value
    return graph
