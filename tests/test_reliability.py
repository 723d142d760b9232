"""Reliability and security (issue 9), through the real server: a bad-input matrix over every
TextTune node; isolation of the inputs (bit-identical MODEL and CLIP after every node, queued runs,
memory); cancel and resume of every trainer, and a server killed in the middle of a save;
numerical faults (NaN loss, out of memory); loading safety (malicious pickles).

One ComfyUI server (tests/comfyui_server.py) with TinySD, a wider model family (ShapeWorld's
architecture, random weights: the "other SD version"), damaged and malicious model files, and the
test-only nodes of tests/reliability_nodes.py (odd tensors, fault hooks, probes).

Every bad-input case checks that the server answers with an error of the node under test (refused
at /prompt by ComfyUI's validation, or raised by the node when it runs) whose message names the
problem and the fix; that the server then runs the next prompt; that no file appeared outside
the server's ComfyUI folders; and that no partial file is left anywhere. The count of cases and of
passes, per node, is printed at the end of the pytest run.
"""
import dataclasses
import json
import os
import random
import re
import shutil
import signal
import time

import psutil
import pytest
import safetensors.torch
import torch

from comfyui_server import REPO, TESTS, ComfyServer, comfyui_path
from example_inputs import CKPT, TEXT_ENCODER, prepare_base

MARK = "ttesc"                       # in every name a bad input would write with
WIDE = "wide.safetensors"            # another model family: text width 64 where TinySD has 32
IMAGE = "ring_0.png"
POLL = 0.05
RUN_ERRORS = ("ValueError", "FileNotFoundError", "TrainingStopped")   # what a node may raise at a user


# ---------------------------------------------------------------------------------------------
# files: damaged, foreign and malicious models
class WritesAFile:
    """Unpickling this calls open(path, "w"), which creates the file: the code a malicious model
    file would run."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


def write_malicious(path: str, marker: str):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save({"weight": torch.zeros(2), "payload": WritesAFile(marker)}, path)


def truncated(src: str, dst: str):
    with open(src, "rb") as f:
        data = f.read()
    with open(dst, "wb") as f:
        f.write(data[:len(data) // 2])


def save(tensors: dict, path: str, metadata=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    safetensors.torch.save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata=metadata)


UNET_KEYS = {"input_blocks.0.0.weight": torch.zeros(32, 4, 3, 3), "input_blocks.0.0.bias": torch.zeros(32),
             "middle_block.0.in_layers.0.weight": torch.ones(64)}


def kohya_te_lora(rank=2, width=32):
    key = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
    return {f"{key}.lora_down.weight": torch.zeros(rank, width), f"{key}.lora_up.weight": torch.zeros(width, rank),
            f"{key}.alpha": torch.tensor(float(rank))}


def prepare(base: str, root: str, tiny):
    """The server's models and inputs: TinySD and its test encoder (tests/example_inputs.py), a
    wider checkpoint, and a bad file for each loader."""
    from tiny_promptnet import write_release
    from texttune.shapeworld import model as shapeworld
    prepare_base(base, tiny)
    models = os.path.join(base, "models")
    patcher, clip, taesd = shapeworld.build(seed=3)
    save(shapeworld.checkpoint_state_dict(patcher, clip, taesd, dtype=torch.float32),
         os.path.join(models, "checkpoints", WIDE))
    prefix = "clip_l.transformer."
    wide_te = {k[len(prefix):]: v for k, v in clip.cond_stage_model.state_dict().items() if k.startswith(prefix)}

    inp = os.path.join(base, "input")
    for i in range(3):
        shutil.copy(os.path.join(REPO, "assets", "demo", f"ring_{i}.png"), os.path.join(inp, f"ring_{i}.png"))
    open(os.path.join(inp, "empty.txt"), "w").close()
    with open(os.path.join(inp, "binary.txt"), "wb") as f:
        f.write(b"\xff\xfe\x00\x81 not text \xc3\x28")

    def pwned(name):
        return os.path.join(root, f"pwned-{name}")

    te = os.path.join(models, "text_encoders")
    truncated(os.path.join(te, TEXT_ENCODER), os.path.join(te, "trunc.safetensors"))
    open(os.path.join(te, "empty.safetensors"), "w").close()
    write_malicious(os.path.join(te, "evil.pth"), pwned("te"))
    save(UNET_KEYS, os.path.join(te, "unet.safetensors"))
    save(kohya_te_lora(), os.path.join(te, "kohya-lora.safetensors"))
    save(wide_te, os.path.join(te, "wide-te.safetensors"))
    adapter = os.path.join(te, "evil-adapter")
    write_malicious(os.path.join(adapter, "adapter_model.bin"), pwned("adapter"))
    with open(os.path.join(adapter, "adapter_config.json"), "w") as f:
        json.dump({"peft_type": "LORA", "r": 2, "lora_alpha": 2}, f)

    save({"emb_params": torch.randn(1, 32)}, os.path.join(models, "embeddings", "foreign.safetensors"))
    loras = os.path.join(models, "loras")
    save({"lora_unet_x.alpha": torch.tensor(1.0)}, os.path.join(loras, "tb-unet.safetensors"))
    save(kohya_te_lora(), os.path.join(loras, "tb-noword.safetensors"))
    truncated(os.path.join(loras, "tb-noword.safetensors"), os.path.join(loras, "tb-trunc.safetensors"))
    write_malicious(os.path.join(loras, "tb-evil.pt"), pwned("textboost"))
    save(kohya_te_lora(), os.path.join(loras, "tb-ok.safetensors"), {"class_word": "ring"})
    save({"emb_params": torch.randn(1, 32)}, os.path.join(models, "embeddings", "tb-ok.safetensors"))

    rm = os.path.join(models, "reward_models")
    write_malicious(os.path.join(rm, "hps-evil.pt"), pwned("hps"))
    truncated(os.path.join(te, TEXT_ENCODER), os.path.join(rm, "hps-trunc.safetensors"))
    save(UNET_KEYS, os.path.join(rm, "hps-unet.safetensors"))
    save(UNET_KEYS, os.path.join(rm, "notafolder.safetensors"))

    pn = os.path.join(models, "promptnet")
    write_release(os.path.join(pn, "tiny"))
    for name in ("evil-release", "trunc-release", "noclip-release"):
        os.makedirs(os.path.join(pn, name, "promptnet"))
        shutil.copy(os.path.join(pn, "tiny", "promptnet", "config.json"), os.path.join(pn, name, "promptnet"))
        if name != "noclip-release":
            shutil.copytree(os.path.join(pn, "tiny", "openclip"), os.path.join(pn, name, "openclip"))
    good = os.path.join(pn, "tiny", "promptnet", "diffusion_pytorch_model.safetensors")
    write_malicious(os.path.join(pn, "evil-release", "promptnet", "diffusion_pytorch_model.bin"), pwned("promptnet"))
    truncated(good, os.path.join(pn, "trunc-release", "promptnet", "diffusion_pytorch_model.safetensors"))
    shutil.copy(good, os.path.join(pn, "noclip-release", "promptnet"))
    save(UNET_KEYS, os.path.join(pn, "stranger.safetensors"))


# ---------------------------------------------------------------------------------------------
# the server
@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("reliability"))


def start(base: str) -> ComfyServer:
    """A server on `base` with the test nodes of tests/reliability_nodes.py."""
    nodes_dir = os.path.join(base, "custom_nodes")
    os.makedirs(nodes_dir, exist_ok=True)
    src, dst = os.path.join(TESTS, "reliability_nodes.py"), os.path.join(nodes_dir, "texttune_reliability_nodes.py")
    if not os.path.lexists(dst):
        try:
            os.symlink(src, dst)
        except OSError:
            shutil.copy(src, dst)
    return ComfyServer(base).start()


@pytest.fixture(scope="module")
def server(root, tiny):
    base = os.path.join(root, "base")
    prepare(base, root, tiny)
    srv = start(base)
    yield srv
    srv.stop()


def link(node, index=0):
    return [node, index]


# Upstream nodes a case graph may link to; `build` adds the ones it uses.
COMMON = {
    "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
    "wide": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": WIDE}},
    "img": {"class_type": "LoadImage", "inputs": {"image": IMAGE}},
    "reward": {"class_type": "TextTuneLoadRewardModel",
               "inputs": {"kind": "shapeworld", "model": "none", "clip_model": "none", "precision": "auto"}},
    "pn": {"class_type": "TextTuneLoadPromptNet", "inputs": {"promptnet": "tiny/"}},
    "pos": {"class_type": "TextTuneConceptPrompt",
            "inputs": {"clip": link("ckpt", 1), "text": "a photo of sks ring", "concept": "sks"}},
    "plain": {"class_type": "CLIPTextEncode", "inputs": {"clip": link("ckpt", 1), "text": "a photo of a ring"}},
    "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": link("ckpt", 1), "text": ""}},
    "widepos": {"class_type": "CLIPTextEncode", "inputs": {"clip": link("wide", 1), "text": "a ring"}},
    "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
}
MODELS = {"model": link("ckpt", 0), "clip": link("ckpt", 1), "vae": link("ckpt", 2)}
FUSION = {"omega_1": 7.0, "omega_2": 5.0, "omega_f": 7.0, "gamma": 0.6, "fusion_passes": 1, "eta": 1.0,
          "fusion_start_percent": 0.0, "fusion_end_percent": 1.0}
UNROLL = {**MODELS, "reward": link("reward"), "prompts": "a red ring", "prompt_file": "", "steps": 1,
          "batch_size": 1, "sampling_steps": 2, "grad_steps": 1, "cfg": 5.0, "resolution": 64, "seed": 0,
          "save_every": 0, "run_name": ""}
# Tiny, valid settings of every node; a case changes some of them.
DEFAULTS = {
    "TextTuneTrainTextualInversion": {
        **MODELS, "images": link("img"), "token_name": "ok-ti", "init_words": "ring", "vectors": 1,
        "template_set": "object", "steps": 2, "learning_rate": 5e-3, "lr_schedule": "constant", "batch_size": 1,
        "resolution": 64, "flip": True, "seed": 0, "save_every": 0, "run_name": ""},
    "TextTuneTrainTextBoost": {
        **MODELS, "images": link("img"), "token_name": "ok-tb", "class_word": "ring", "lora_rank": 2,
        "lora_targets": "q, v", "augmentation_tokens": True, "kp_weight": 0.1, "snr_timesteps": True, "steps": 2,
        "batch_size": 1, "lora_learning_rate": 1e-4, "token_learning_rate": 1e-3, "template_set": "object",
        "resolution": 64, "seed": 0, "save_every": 0, "run_name": ""},
    "TextTuneLoadTextBoost": {"clip": link("ckpt", 1), "lora_name": "tb-ok.safetensors", "strength": 1.0},
    "TextTuneLoadTextEncoder": {"clip": link("ckpt", 1), "file": TEXT_ENCODER, "strength": 1.0, "encoder": "auto"},
    "TextTuneBlendTextEncoders": {"text": "a red ring", "clip_a": link("ckpt", 1), "clip_b": link("ckpt", 1),
                                  "weights": "0.5, 0.5", "start_percent": 0.0, "end_percent": 1.0},
    "TextTuneConceptPrompt": {"clip": link("ckpt", 1), "text": "a photo of sks ring", "concept": "sks"},
    "TextTuneFusionGuider": {"model": link("ckpt", 0), "positive": link("pos"), "negative": link("neg"), **FUSION},
    "TextTuneKSamplerFusion": {"model": link("ckpt", 0), "seed": 0, "steps": 2, "scheduler": "ddim_uniform",
                               "positive": link("pos"), "negative": link("neg"), "latent_image": link("latent"),
                               "denoise": 1.0, **FUSION},
    "TextTuneLoadRewardModel": {"kind": "hps", "model": "none", "clip_model": "none", "precision": "auto"},
    "TextTuneCombineRewards": {"reward_a": link("reward"), "weight_a": 1.0, "reward_b": link("reward"),
                               "weight_b": 1.0},
    "TextTuneScoreImages": {"images": link("img"), "reward": link("reward"), "prompts": ""},
    "TextTuneTrainRewardTextEncoder": {**UNROLL, "encoder_name": "ok-tc", "learning_rate": 1e-6},
    "TextTuneTrainRewardLoRA": {**UNROLL, "lora_name": "ok-rl", "lora_rank": 2, "lora_targets": "to_q, to_v",
                                "learning_rate": 1e-3},
    "TextTuneLoadPromptNet": {"promptnet": "tiny/"},
    "TextTuneTrainPromptNet": {
        "promptnet": link("pn"), **MODELS, "images": link("img"), "name": "ok-pn", "prompt": "a photo of holder",
        "placeholder": "holder", "steps": 1, "learning_rate": 2e-5, "train_lora": False, "lora_rank": 2,
        "lora_learning_rate": 1e-4, "batch_size": 1, "resolution": 64, "flip": True, "seed": 0, "save_every": 0,
        "run_name": ""},
}
SINK = {"TextTuneTrainTextualInversion": 1, "TextTuneTrainTextBoost": 1, "TextTuneTrainRewardTextEncoder": 1,
        "TextTuneTrainRewardLoRA": 1, "TextTuneTrainPromptNet": 2, "TextTuneScoreImages": None}


def tensor(shape: str, value="0.5") -> dict:
    return {"class_type": "TextTuneTestTensor", "inputs": {"shape": shape, "value": str(value)}}


def build(class_type: str, inputs: dict, extra: dict | None = None, sink=True) -> dict:
    """A graph: the node `node` of `class_type` with `inputs`, `extra` nodes, a PreviewAny of its
    output (output nodes need none) and the COMMON nodes they link to."""
    graph = {"node": {"class_type": class_type, "inputs": inputs}, **(extra or {})}
    out = SINK.get(class_type, 0)
    if sink and out is not None:
        graph["sink"] = {"class_type": "PreviewAny", "inputs": {"source": link("node", out)}}
    todo = [v[0] for n in list(graph.values()) for v in n["inputs"].values() if isinstance(v, list)]
    while todo:
        name = todo.pop()
        if name not in graph:
            graph[name] = COMMON[name]
            todo += [v[0] for v in graph[name]["inputs"].values() if isinstance(v, list)]
    return graph


# ---------------------------------------------------------------------------------------------
# the cases
@dataclasses.dataclass
class Case:
    node: str
    name: str
    problem: str                     # regexes the error message must match
    fix: str
    inputs: dict = dataclasses.field(default_factory=dict)
    extra: dict = dataclasses.field(default_factory=dict)
    refused: bool = False            # by ComfyUI's validation at /prompt; else the node fails when it runs
    at: str = "node"                 # the node the error belongs to
    writes_nothing: tuple = ()       # paths (under the base folder) that must not exist afterwards

    @property
    def id(self):
        return f"{self.node.removeprefix('TextTune')}-{self.name}"

    def graph(self, root: str) -> dict:
        inputs = {**DEFAULTS[self.node], **self.inputs}
        inputs = {k: v.replace("{ROOT}", root) if isinstance(v, str) else v for k, v in inputs.items()}
        return build(self.node, inputs, self.extra)


def C(node, name, problem, fix, **kw):
    return Case("TextTune" + node, name, problem, fix, **kw)


def names(node, field, label, slug):
    """The four bad names of a name input: a ../ path, an absolute path, a NUL byte, 300 characters."""
    rule, fix = rf"{label} .+ is not allowed", r"use 1-64 characters from letters, digits"
    return [C(node, f"{field} ../", rule, fix, inputs={field: f"../../../../{MARK}-{slug}"}),
            C(node, f"{field} absolute path", rule, fix, inputs={field: f"{{ROOT}}/{MARK}-abs-{slug}"}),
            C(node, f"{field} NUL byte", rule, fix, inputs={field: f"{MARK}\x00{slug}"}),
            C(node, f"{field} very long", rule, fix, inputs={field: MARK + "x" * 300})]


def refused(node, name, problem, fix, **kw):
    return C(node, name, problem, fix, refused=True, **kw)


MIN, MAX = r"smaller than min of", r"bigger than max of"
MISMATCH = r"Return type mismatch between linked nodes"
# ComfyUI 0.3.75 does not check the value of a V3 node's combo input against its list at /prompt:
# such a value (a path, a kind) reaches the node, which must refuse it itself.
NAN_PIXELS = (r"holds NaN or infinite pixel values", r"check the node that made it")
EMPTY = (r"The IMAGE input is empty", r"connect at least one image")
CHANNELS = (r"Expected IMAGE tensors shaped \[batch, height, width, channels\] with 1, 3 or 4 channels, got "
            r"\(1, 64, 64, 2\)", r"connect an image output")
WIDER = (r"The MODEL expects text features of width 32 but the CLIP gives 64",
         r"Connect the MODEL and CLIP of the same checkpoint")
FOREIGN = (r"already exists and was not made by", r"choose another .*or move that file away")
UNREADABLE = (r"is not a readable safetensors file", r"Replace it with a complete copy")
PICKLE = (r"was refused: it is not a plain weights file .*nothing in it was run",
          r"Use a \.safetensors version of it")
PROMPT_FILE_OUT = (r"is outside ComfyUI's input folder", r"Put the file there")


def bad_tensor(shape, value="0.5", out=0):
    return {"extra": {"bad": tensor(shape, value)}, "out": link("bad", out)}


def with_tensor(node, name, field, shape, problem, fix, value="0.5", out=0, **kw):
    t = bad_tensor(shape, value, out)
    return C(node, name, problem, fix, inputs={field: t["out"], **kw.pop("inputs", {})}, extra=t["extra"], **kw)


def run_dir(name):
    return os.path.join("output", "texttune", name)


CASES = [
    # -- textual inversion --------------------------------------------------------------------
    *names("TrainTextualInversion", "token_name", "Token name", "ti"),
    C("TrainTextualInversion", "run_name ../", r"Run name .+ is not allowed", r"use 1-64 characters",
      inputs={"run_name": f"../../{MARK}-run"}),
    with_tensor("TrainTextualInversion", "empty batch", "images", "0,64,64,3", *EMPTY),
    with_tensor("TrainTextualInversion", "2-channel images", "images", "1,64,64,2", *CHANNELS),
    with_tensor("TrainTextualInversion", "NaN pixels", "images", "1,64,64,3", *NAN_PIXELS, value="nan"),
    with_tensor("TrainTextualInversion", "empty mask", "mask", "1,64,64", r"The MASK is empty \(all zero\)",
                r"Paint the subject white", value="0", out=1),
    refused("TrainTextualInversion", "steps 0", MIN, r"min of 1.*steps", inputs={"steps": 0}),
    refused("TrainTextualInversion", "learning rate infinity", MAX, r"max of 1\.0.*learning_rate",
            inputs={"learning_rate": float("inf")}),
    C("TrainTextualInversion", "learning rate NaN", r"A learning rate of nan cannot train",
      r"set the node's learning rate\(s\) to a positive number", inputs={"learning_rate": float("nan")}),
    refused("TrainTextualInversion", "steps not a number", r"Failed to convert an input value to a INT value",
            r"steps, many", inputs={"steps": "many"}),
    refused("TrainTextualInversion", "MODEL into images", MISMATCH, r"images, received_type\(MODEL\) mismatch "
            r"input_type\(IMAGE\)", inputs={"images": link("ckpt", 0)}),
    C("TrainTextualInversion", "CLIP of another model family", *WIDER, inputs={"clip": link("wide", 1)}),
    C("TrainTextualInversion", "empty init words", r"The initializer words '   ' give no tokens",
      r"use one or more ordinary words", inputs={"init_words": "   "}),
    C("TrainTextualInversion", "template without {}", r"Each custom template needs exactly one \{\}",
      r"these do not", inputs={"template_set": "custom", "custom_templates": "a photo"}),
    C("TrainTextualInversion", "unknown LR schedule", r"Unknown LR schedule 'bogus'",
      r"choose constant, cosine or linear", inputs={"lr_schedule": "bogus"}),
    C("TrainTextualInversion", "resolution not a multiple of 8", r"Resolution 100 is not a multiple of 8",
      r"pick e\.g\. 96", inputs={"resolution": 100}),
    C("TrainTextualInversion", "a user's file has the token's name", *FOREIGN, inputs={"token_name": "foreign"},
      writes_nothing=(run_dir("ti-foreign"),)),

    # -- TextBoost ----------------------------------------------------------------------------
    *names("TrainTextBoost", "token_name", "Token name", "tb"),
    C("TrainTextBoost", "run_name NUL byte", r"Run name .+ is not allowed", r"use 1-64 characters",
      inputs={"run_name": "run\x00x"}),
    C("TrainTextBoost", "empty class word", r"The class word is empty", r"say what the subject is",
      inputs={"class_word": "  "}),
    C("TrainTextBoost", "unknown LoRA target", r"LoRA targets 'q, zz': unknown zz", r"Valid targets: q, k, v",
      inputs={"lora_targets": "q, zz"}),
    C("TrainTextBoost", "unknown template set", r"Unknown template set 'bogus'",
      r"choose object, style, textboost or custom", inputs={"template_set": "bogus"}),
    C("TrainTextBoost", "empty custom templates", r"The custom template list is empty",
      r"write one caption per line", inputs={"template_set": "custom", "custom_templates": " \n "}),
    with_tensor("TrainTextBoost", "empty batch", "images", "0,64,64,3", *EMPTY),
    refused("TrainTextBoost", "negative kp_weight", MIN, r"min of 0.*kp_weight", inputs={"kp_weight": -1.0}),
    refused("TrainTextBoost", "lora_rank 0", MIN, r"min of 1.*lora_rank", inputs={"lora_rank": 0}),
    C("TrainTextBoost", "CLIP of another model family", *WIDER, inputs={"clip": link("wide", 1)}),
    C("TrainTextBoost", "a user's LoRA has the token's name", *FOREIGN, inputs={"token_name": "tb-unet"},
      writes_nothing=(run_dir("textboost-tb-unet"),)),

    # -- Load TextBoost -------------------------------------------------------------------------
    C("LoadTextBoost", "../ file name", r"LoRA '\.\./\.\./\.\./etc/passwd' is not in", r"put the TextBoost file "
      r"there, then refresh the node list", inputs={"lora_name": "../../../etc/passwd"}),
    C("LoadTextBoost", "UNet LoRA", r"has no text-encoder LoRA keys", r"Pick the file a TextBoost run saved",
      inputs={"lora_name": "tb-unet.safetensors"}),
    C("LoadTextBoost", "truncated safetensors", *UNREADABLE, inputs={"lora_name": "tb-trunc.safetensors"}),
    C("LoadTextBoost", "malicious pickle", r"tb-evil\.pt is not a \.safetensors file \(it was not opened\)",
      r"Pick that file", inputs={"lora_name": "tb-evil.pt"}),
    C("LoadTextBoost", "its word is missing", r"The word of tb-noword\.safetensors is missing",
      r"copy it there", inputs={"lora_name": "tb-noword.safetensors"}),
    refused("LoadTextBoost", "strength 11", MAX, r"max of 10.*strength", inputs={"strength": 11.0}),
    refused("LoadTextBoost", "MODEL into clip", MISMATCH, r"clip, received_type\(MODEL\)",
            inputs={"clip": link("ckpt", 0)}),

    # -- Load Fine-Tuned Text Encoder -------------------------------------------------------------
    C("LoadTextEncoder", "../ file name", r"Text encoder '\.\./\.\./\.\./etc/passwd' was not found",
      r"Put text-encoder files .* then refresh the node list", inputs={"file": "../../../etc/passwd"}),
    C("LoadTextEncoder", "absolute file name", r"Text encoder '/etc/passwd' was not found",
      r"Put text-encoder files .* then refresh the node list", inputs={"file": "/etc/passwd"}),
    C("LoadTextEncoder", "unknown encoder choice", r"has no clip_x encoder", r"choose encoder=L or auto",
      inputs={"encoder": "X"}),
    C("LoadTextEncoder", "truncated safetensors", *UNREADABLE, inputs={"file": "trunc.safetensors"}),
    C("LoadTextEncoder", "empty file", *UNREADABLE, inputs={"file": "empty.safetensors"}),
    C("LoadTextEncoder", "malicious pickle", *PICKLE, inputs={"file": "evil.pth"}),
    C("LoadTextEncoder", "malicious peft adapter", *PICKLE, inputs={"file": "evil-adapter/"}),
    C("LoadTextEncoder", "UNet file", r"'unet\.safetensors' is not a text encoder: it is a diffusion model",
      r"load it with Load Diffusion Model or Load Checkpoint", inputs={"file": "unet.safetensors"}),
    C("LoadTextEncoder", "LoRA file", r"is not a text encoder: it is a LoRA", r"load it with the core Load LoRA",
      inputs={"file": "kohya-lora.safetensors"}),
    C("LoadTextEncoder", "encoder of another model family", r"Shape mismatch: 'wide-te\.safetensors' is a CLIP "
      r"text encoder \(width 64, 4 layers\)", r"Load a file made for this model's encoder",
      inputs={"file": "wide-te.safetensors"}),
    C("LoadTextEncoder", "SDXL encoder choice on SD1", r"has no clip_g encoder \(it has clip_l\)",
      r"choose encoder=L or auto", inputs={"encoder": "G"}),
    refused("LoadTextEncoder", "strength 5", MAX, r"max of 2.*strength", inputs={"strength": 5.0}),

    # -- Blend Text Encoders ----------------------------------------------------------------------
    C("BlendTextEncoders", "weight not a number", r"Weight 'abc' is not a number",
      r"write one number per connected CLIP", inputs={"weights": "0.5, abc"}),
    C("BlendTextEncoders", "weight NaN", r"Weight 'nan' is not a finite number",
      r"write one number per connected CLIP", inputs={"weights": "nan, 1"}),
    C("BlendTextEncoders", "no weights", r"No weights given", r"write one number per connected CLIP",
      inputs={"weights": " "}),
    C("BlendTextEncoders", "fewer weights than CLIPs", r"2 CLIPs are connected .* but only 1 weight",
      r"write one weight per CLIP", inputs={"weights": "1"}),
    C("BlendTextEncoders", "empty step window", r"Step window \[0\.8, 0\.2\] is empty",
      r"start_percent must be below end_percent", inputs={"start_percent": 0.8, "end_percent": 0.2}),
    C("BlendTextEncoders", "CLIPs of two model families", r"The CLIPs have different architectures",
      r"Blend only text encoders of the same model family", inputs={"clip_b": link("wide", 1)}),
    C("BlendTextEncoders", "clip_d without clip_c", r"clip_d is connected but clip_c is not",
      r"connect the CLIPs in order", inputs={"clip_d": link("ckpt", 1)}),
    refused("BlendTextEncoders", "MODEL into clip_b", MISMATCH, r"clip_b, received_type\(MODEL\)",
            inputs={"clip_b": link("ckpt", 0)}),
    refused("BlendTextEncoders", "start_percent 1.5", MAX, r"max of 1.*start_percent",
            inputs={"start_percent": 1.5}),

    # -- Concept Prompt ---------------------------------------------------------------------------
    C("ConceptPrompt", "empty concept", r"The concept is empty", r"write the word\(s\) of the prompt",
      inputs={"concept": " "}),
    C("ConceptPrompt", "concept not in the prompt", r"does not contain the concept 'dax'",
      r"write the concept into the prompt", inputs={"concept": "dax"}),
    C("ConceptPrompt", "missing embedding", rf"'embedding:{MARK}-gone' names an embedding that was not found",
      rf"put {MARK}-gone\.safetensors", inputs={"concept": f"embedding:{MARK}-gone",
                                                "text": f"a photo of embedding:{MARK}-gone"}),
    C("ConceptPrompt", "embedding name with ../", r"names an embedding that was not found",
      r"\.safetensors \(or \.pt\) in", inputs={"concept": "embedding:../../../../etc/passwd",
                                               "text": "a photo of embedding:../../../../etc/passwd"}),
    refused("ConceptPrompt", "VAE into clip", MISMATCH, r"clip, received_type\(VAE\)",
            inputs={"clip": link("ckpt", 2)}),

    # -- Fusion Guider ----------------------------------------------------------------------------
    C("FusionGuider", "positive without the concept mark", r"does not say where the concept is",
      r"encode the prompt with the Concept Prompt \(TextTune\) node, or set gamma to 1",
      inputs={"positive": link("plain")}),
    C("FusionGuider", "vae without a PromptNet", r"vae is only used with a PromptNet",
      r"connect Load PromptNet to promptnet, or disconnect", inputs={"vae": link("ckpt", 2)}),
    C("FusionGuider", "empty fusion window", r"The fusion step window \[0\.9, 0\.1\] is empty",
      r"fusion_start_percent must be below fusion_end_percent",
      inputs={"fusion_start_percent": 0.9, "fusion_end_percent": 0.1}),
    C("FusionGuider", "gamma NaN", r"gamma is nan", r"give a finite number", inputs={"gamma": float("nan")}),
    refused("FusionGuider", "eta 2", MAX, r"max of 1.*eta", inputs={"eta": 2.0}),
    C("FusionGuider", "conditioning of another model family", r"The negative conditioning has token features "
      r"of width 64 but the MODEL reads width 32", r"encode it with the CLIP of the same checkpoint",
      inputs={"negative": link("widepos")}),
    C("FusionGuider", "sampler other than ddim", r"takes the SAMPLER 'ddim' \(or 'euler'",
      r"from KSamplerSelect", at="sca", extra={
          "noise": {"class_type": "RandomNoise", "inputs": {"noise_seed": 0}},
          "sampler": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "dpmpp_2m"}},
          "sigmas": {"class_type": "BasicScheduler", "inputs": {"model": link("ckpt", 0), "scheduler": "normal",
                                                                "steps": 2, "denoise": 1.0}},
          "sca": {"class_type": "SamplerCustomAdvanced", "inputs": {
              "noise": link("noise"), "guider": link("node"), "sampler": link("sampler"), "sigmas": link("sigmas"),
              "latent_image": link("latent")}},
          "scaout": {"class_type": "PreviewAny", "inputs": {"source": link("sca")}}}),

    # -- KSampler Fusion --------------------------------------------------------------------------
    with_tensor("KSamplerFusion", "8-channel latent", "latent_image", "1,8,8,8",
                r"The latent_image has shape \[1, 8, 8, 8\], but this MODEL denoises batches of 4-channel",
                r"make it with Empty Latent Image", out=2),
    with_tensor("KSamplerFusion", "empty latent batch", "latent_image", "0,4,8,8",
                r"The latent_image has shape \[0, 4, 8, 8\]", r"batch_size 1 or more", out=2),
    with_tensor("KSamplerFusion", "NaN latent", "latent_image", "1,4,8,8",
                r"The latent_image holds NaN or infinite values", r"check the node that made it", value="nan",
                out=2),
    C("KSamplerFusion", "conditioning of another model family", r"The positive conditioning has token features "
      r"of width 64", r"encode it with the CLIP of the same checkpoint",
      inputs={"positive": link("widepos"), "gamma": 1.0}),
    refused("KSamplerFusion", "steps 0", MIN, r"min of 1.*steps", inputs={"steps": 0}),
    refused("KSamplerFusion", "denoise 2", MAX, r"max of 1.*denoise", inputs={"denoise": 2.0}),
    C("KSamplerFusion", "unknown scheduler", r"Unknown scheduler 'bogus'", r"choose one of simple, sgm_uniform",
      inputs={"scheduler": "bogus"}),
    refused("KSamplerFusion", "IMAGE into latent_image", MISMATCH, r"latent_image, received_type\(IMAGE\)",
            inputs={"latent_image": link("img")}),

    # -- Load Reward Model ------------------------------------------------------------------------
    C("LoadRewardModel", "no file", r"HPS v2 / v2\.1 needs a file", r"Put it in .*then refresh the node list"),
    C("LoadRewardModel", "malicious pickle", *PICKLE, inputs={"model": "hps-evil.pt"}),
    C("LoadRewardModel", "truncated safetensors", *UNREADABLE, inputs={"model": "hps-trunc.safetensors"}),
    C("LoadRewardModel", "UNet file as HPS", r"hps-unet\.safetensors is not an HPS v2 checkpoint",
      r"expected an open_clip ViT-H-14 state dict", inputs={"model": "hps-unet.safetensors"}),
    C("LoadRewardModel", "file where a folder belongs", r"PickScore needs a folder", r"the folder PickScore_v1/",
      inputs={"kind": "pickscore", "model": "notafolder.safetensors"}),
    C("LoadRewardModel", "unknown kind", r"Unknown reward kind 'bogus'", r"choose one of aesthetic, pickscore",
      inputs={"kind": "bogus"}),
    C("LoadRewardModel", "../ file name", r"'\.\./\.\./\.\./etc/passwd' is not in",
      r"put it there, then refresh the node list", inputs={"model": "../../../etc/passwd"}),
    C("LoadRewardModel", "unknown precision", r"precision 'fp8'", r"use auto, ",
      inputs={"kind": "shapeworld", "precision": "fp8"}),

    # -- Combine Rewards --------------------------------------------------------------------------
    C("CombineRewards", "reward_d without reward_c", r"reward_d is connected but reward_c is not",
      r"connect the rewards in order", inputs={"reward_d": link("reward"), "weight_d": 1.0}),
    C("CombineRewards", "weight NaN", r"Reward weight nan is not a finite number",
      r"give each reward a weight such as 1", inputs={"weight_a": float("nan")}),
    refused("CombineRewards", "weight 1000", MAX, r"max of 100.*weight_a", inputs={"weight_a": 1000.0}),
    refused("CombineRewards", "CLIP into reward_a", MISMATCH, r"reward_a, received_type\(CLIP\)",
            inputs={"reward_a": link("ckpt", 1)}),

    # -- Score Images -----------------------------------------------------------------------------
    C("ScoreImages", "more prompt lines than images", r"3 prompt lines for 1 images",
      r"write one line per image, or one line for all", inputs={"prompts": "a\nb\nc"}),
    with_tensor("ScoreImages", "empty batch", "images", "0,64,64,3", *EMPTY),
    with_tensor("ScoreImages", "2-channel images", "images", "1,64,64,2", *CHANNELS),
    with_tensor("ScoreImages", "NaN pixels", "images", "1,64,64,3", *NAN_PIXELS, value="nan"),
    refused("ScoreImages", "CLIP into reward", MISMATCH, r"reward, received_type\(CLIP\)",
            inputs={"reward": link("ckpt", 1)}),

    # -- Train Text Encoder on Rewards --------------------------------------------------------------
    *names("TrainRewardTextEncoder", "encoder_name", "Encoder name", "tc"),
    C("TrainRewardTextEncoder", "run_name absolute path", r"Run name .+ is not allowed", r"use 1-64 characters",
      inputs={"run_name": f"{{ROOT}}/{MARK}-run"}),
    C("TrainRewardTextEncoder", "no prompts", r"No prompts", r"write one prompt per line", inputs={"prompts": " "}),
    C("TrainRewardTextEncoder", "prompt file ../", *PROMPT_FILE_OUT,
      inputs={"prompt_file": "../../../../etc/passwd"}),
    C("TrainRewardTextEncoder", "prompt file absolute path", *PROMPT_FILE_OUT, inputs={"prompt_file": "/etc/passwd"}),
    C("TrainRewardTextEncoder", "prompt file NUL byte", r"has control characters \(such as NUL\) in its name",
      r"give the file's path inside ComfyUI's input folder", inputs={"prompt_file": "prompts\x00.txt"}),
    C("TrainRewardTextEncoder", "empty prompt file", r"Prompt file 'empty\.txt' holds no prompts",
      r"write one prompt per line", inputs={"prompt_file": "empty.txt"}),
    C("TrainRewardTextEncoder", "binary prompt file", r"Prompt file 'binary\.txt' is not UTF-8 text",
      r"save it as UTF-8 text", inputs={"prompt_file": "binary.txt"}),
    C("TrainRewardTextEncoder", "missing prompt file", rf"Prompt file '{MARK}\.txt' was not found",
      r"put a text file there", inputs={"prompt_file": f"{MARK}.txt"}),
    C("TrainRewardTextEncoder", "prompt over 77 tokens", r"Prompt 1 \('ring ring .*is \d+ tokens",
      r"Shorten it", inputs={"prompts": "ring " * 100}),
    C("TrainRewardTextEncoder", "grad_steps above sampling_steps", r"grad_steps K = 3 with 2 sampling steps",
      r"use 1 to 2", inputs={"grad_steps": 3}),
    C("TrainRewardTextEncoder", "CLIP of another model family", *WIDER, inputs={"clip": link("wide", 1)}),
    C("TrainRewardTextEncoder", "a user's file has the encoder's name", *FOREIGN, inputs={"encoder_name": "unet"},
      writes_nothing=(run_dir("textcraftor-unet"),)),
    refused("TrainRewardTextEncoder", "CLIP into reward", MISMATCH, r"reward, received_type\(CLIP\)",
            inputs={"reward": link("ckpt", 1)}),

    # -- Train UNet LoRA on Rewards ------------------------------------------------------------------
    *names("TrainRewardLoRA", "lora_name", "LoRA name", "rl"),
    C("TrainRewardLoRA", "unknown LoRA target", r"LoRA targets 'bogus': unknown bogus",
      r"Valid targets: to_q, to_k, to_v, to_out", inputs={"lora_targets": "bogus"}),
    C("TrainRewardLoRA", "empty prompt file", r"holds no prompts", r"write one prompt per line",
      inputs={"prompt_file": "empty.txt"}),
    C("TrainRewardLoRA", "MODEL of another model family", r"The MODEL expects text features of width 64 but the CLIP "
      r"gives 32", WIDER[1], inputs={"model": link("wide", 0)}),
    C("TrainRewardLoRA", "a user's LoRA has the LoRA's name", *FOREIGN, inputs={"lora_name": "tb-unet"},
      writes_nothing=(run_dir("reward-lora-tb-unet"),)),
    refused("TrainRewardLoRA", "lora_rank 0", MIN, r"min of 1.*lora_rank", inputs={"lora_rank": 0}),

    # -- Load PromptNet -----------------------------------------------------------------------------
    C("LoadPromptNet", "malicious pickle", *PICKLE, inputs={"promptnet": "evil-release/"}),
    C("LoadPromptNet", "truncated safetensors", *UNREADABLE, inputs={"promptnet": "trunc-release/"}),
    C("LoadPromptNet", "release without its vision tower", r"has no openclip/ folder \(the vision tower\)",
      r"A ProFusion PromptNet folder holds promptnet/config\.json", inputs={"promptnet": "noclip-release/"}),
    C("LoadPromptNet", "another model's file", r"stranger\.safetensors is not a PromptNet file saved by TextTune",
      r"ProFusion's released PromptNet is a folder", inputs={"promptnet": "stranger.safetensors"}),
    C("LoadPromptNet", "../ name", r"The PromptNet folder '\.\./\.\./\.\./tmp/' is not in",
      r"put ProFusion's released folder there", inputs={"promptnet": "../../../tmp/"}),
    C("LoadPromptNet", "nothing chosen", r"No PromptNet chosen", r"put ProFusion's released folder",
      inputs={"promptnet": "none"}),

    # -- Train PromptNet ----------------------------------------------------------------------------
    *names("TrainPromptNet", "name", "PromptNet name", "pn"),
    C("TrainPromptNet", "prompt without the placeholder", r"does not contain the placeholder word 'holder'",
      r"Write it into the prompt", inputs={"prompt": "a photo of a ring"}),
    C("TrainPromptNet", "empty placeholder", r"The placeholder '' gives no tokens", r"use a word, e.g\. holder",
      inputs={"placeholder": " "}),
    with_tensor("TrainPromptNet", "empty batch", "images", "0,64,64,3", *EMPTY),
    C("TrainPromptNet", "model of another width than the PromptNet", r"makes words of width 32 but the MODEL reads "
      r"text of width 64", r"use a PromptNet made for this model",
      inputs={"model": link("wide", 0), "clip": link("wide", 1), "vae": link("wide", 2)}),
    C("TrainPromptNet", "a user's file has the PromptNet's name", *FOREIGN, inputs={"name": "stranger"},
      writes_nothing=(run_dir("promptnet-stranger"),)),
    refused("TrainPromptNet", "MODEL into promptnet", MISMATCH, r"promptnet, received_type\(MODEL\)",
            inputs={"promptnet": link("ckpt", 0)}),
]
PICKLE_MARKERS = {"LoadTextEncoder-malicious pickle": "te", "LoadTextEncoder-malicious peft adapter": "adapter",
                  "LoadTextBoost-malicious pickle": "textboost", "LoadRewardModel-malicious pickle": "hps",
                  "LoadPromptNet-malicious pickle": "promptnet"}
RESULTS: dict[str, bool] = {}          # case id -> passed, for every case run


@pytest.fixture(scope="module", autouse=True)
def report(summaries):
    """Count of cases and passes per node, printed at the end of the run."""
    yield
    by_node: dict[str, list] = {}
    for c in CASES:
        by_node.setdefault(c.node, []).append(c.id)

    def row(label, ids):
        run, passed = sum(i in RESULTS for i in ids), sum(RESULTS.get(i, False) for i in ids)
        return f"{label:<{width}}  {len(ids):>5}  {run:>3}  {passed:>6}"
    width = max(map(len, by_node))
    lines = ["", "test_reliability: bad-input matrix through the server's /prompt",
             f"{'node':<{width}}  cases  run  passed"]
    lines += [row(n, ids) for n, ids in by_node.items()]
    lines.append(row(f"all {len(by_node)} nodes", [c.id for c in CASES]))
    summaries.append("\n".join(lines))


# ---------------------------------------------------------------------------------------------
# the checks of every case
def ping(server, n: int):
    """The server still runs TextTune nodes: a prompt it has not seen, run to the end."""
    graph = build("TextTuneConceptPrompt", {**DEFAULTS["TextTuneConceptPrompt"], "text": f"a photo of sks ping {n}"})
    entry = server.wait(server.post_prompt(graph), timeout=60, poll=POLL)
    assert entry["status"]["status_str"] == "success"


def watched_paths(root: str) -> set[str]:
    """Everything under this module's temporary folder but the server's base folder, and the
    ComfyUI install's own data folders: where an escaped name would land."""
    base = os.path.join(root, "base")
    found = set()
    tops = [os.path.dirname(root)] + [os.path.join(comfyui_path(), d)
                                      for d in ("models", "output", "input", "temp", "user")]
    for top in tops:
        for folder, dirs, names in os.walk(top):
            dirs[:] = [d for d in dirs if os.path.join(folder, d) != base]
            found.update(os.path.join(folder, n) for n in dirs + names)
    for top in (REPO, TESTS, "/tmp", os.getcwd()):                      # names with the mark, one level
        found.update(os.path.join(top, n) for n in os.listdir(top) if MARK in n)
    return found


def partial_files(root: str) -> list[str]:
    hits = []
    for folder, _, names in os.walk(root):                         # does not follow the texttune link
        hits += [os.path.join(folder, n) for n in names if n.endswith(".partial") or n.startswith(".texttune-")]
    return hits


def node_error(server, graph: dict) -> tuple[bool, str, str, str]:
    """(refused at /prompt?, id of the node the error belongs to, exception type, message) of a
    graph that must fail."""
    status, body = server.submit(graph)
    if status != 200 or body.get("node_errors"):
        errors = body.get("node_errors") or {}
        assert errors, f"refused without a node error (HTTP {status}): {body}"
        node_id, ne = next(iter(errors.items()))
        text = "; ".join(f"{e.get('message')}: {e.get('details')}" for e in ne["errors"])
        return True, node_id, "validation", text
    entry = server.finish(body["prompt_id"], timeout=120, poll=POLL)
    messages = entry["status"].get("messages", [])
    failed = [data for event, data in messages if event == "execution_error"]
    assert failed, f"the prompt did not fail: {entry['status']}"
    return False, failed[0]["node_id"], failed[0]["exception_type"], failed[0]["exception_message"]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(server, root, case):
    RESULTS[case.id] = False
    before = watched_paths(root)
    was_refused, node_id, kind, message = node_error(server, case.graph(root))
    where = "refused at /prompt" if was_refused else "raised while running"
    assert (was_refused, node_id) == (case.refused, case.at), f"{where} by node {node_id}: {message}"
    if not was_refused:
        assert kind.rsplit(".", 1)[-1] in RUN_ERRORS, f"a raw {kind} reached the user: {message}"
    assert re.search(case.problem, message, re.S), f"the problem is not named: {message}"
    assert re.search(case.fix, message, re.S), f"the fix is not named: {message}"

    ping(server, len(RESULTS))                                       # the server serves the next prompt
    assert watched_paths(root) - before == set(), "files appeared outside ComfyUI's folders"
    assert partial_files(root) == []
    for rel in case.writes_nothing:
        assert not os.path.exists(os.path.join(server.base, rel)), f"{rel} was written before the refusal"
    if case.id in PICKLE_MARKERS:
        assert not os.path.exists(os.path.join(root, f"pwned-{PICKLE_MARKERS[case.id]}")), "the pickle ran"
    RESULTS[case.id] = True


def test_the_matrix_covers_every_texttune_node(server):
    from texttune.nodes import NODES
    ids = {n.define_schema().node_id for n in NODES}
    listed = {k for k, v in server.object_info().items() if v.get("category", "").startswith("TextTune/")}
    assert ids == listed
    counts = {n: sum(c.node == n for c in CASES) for n in ids}
    assert min(counts.values()) >= 4, counts
    assert len({c.id for c in CASES}) == len(CASES)


# ---------------------------------------------------------------------------------------------
# isolation
def probe(after=None, model=link("ckpt", 0), clip=link("ckpt", 1)) -> dict:
    inputs = {"model": model, "clip": clip, **({"after": after} if after else {})}
    return {"class_type": "TextTuneTestProbe", "inputs": inputs}


def digests(entry, node_id) -> dict:
    return json.loads(entry["outputs"][node_id]["text"][0])


def every_node_graph() -> dict:
    """Every trainer, loader and sampler of the pack on the inputs probed by `probe0`, each
    followed by a probe of the same inputs."""
    m, c = link("probe0", 0), link("probe0", 1)
    tiny = {"model": m, "clip": c, "vae": link("ckpt", 2)}
    runs = {
        "ti": ("TextTuneTrainTextualInversion", {**DEFAULTS["TextTuneTrainTextualInversion"], **tiny,
                                                 "token_name": "iso-ti"}, 1),
        "tb": ("TextTuneTrainTextBoost", {**DEFAULTS["TextTuneTrainTextBoost"], **tiny, "token_name": "iso-tb"}, 1),
        "tc": ("TextTuneTrainRewardTextEncoder", {**DEFAULTS["TextTuneTrainRewardTextEncoder"], **tiny,
                                                  "encoder_name": "iso-tc"}, 1),
        "rl": ("TextTuneTrainRewardLoRA", {**DEFAULTS["TextTuneTrainRewardLoRA"], **tiny, "lora_name": "iso-rl"}, 1),
        "pnt": ("TextTuneTrainPromptNet", {**DEFAULTS["TextTuneTrainPromptNet"], **tiny, "name": "iso-pn",
                                           "train_lora": True}, 2),
        "lte": ("TextTuneLoadTextEncoder", {**DEFAULTS["TextTuneLoadTextEncoder"], "clip": c}, 0),
        "ltb": ("TextTuneLoadTextBoost", {**DEFAULTS["TextTuneLoadTextBoost"], "clip": c}, 0),
        "blend": ("TextTuneBlendTextEncoders", {**DEFAULTS["TextTuneBlendTextEncoders"], "clip_a": c,
                                                "clip_b": link("lte")}, 0),
        "concept": ("TextTuneConceptPrompt", {**DEFAULTS["TextTuneConceptPrompt"], "clip": c}, 0),
        "ksf": ("TextTuneKSamplerFusion", {**DEFAULTS["TextTuneKSamplerFusion"], "model": m,
                                           "positive": link("concept")}, 0),
        "guider": ("TextTuneFusionGuider", {**DEFAULTS["TextTuneFusionGuider"], "model": m,
                                            "positive": link("concept")}, 0),
    }
    graph = build("TextTuneTestProbe", probe()["inputs"], sink=False)
    graph["probe0"] = graph.pop("node")
    for name, (class_type, inputs, out) in runs.items():
        graph[name] = {"class_type": class_type, "inputs": inputs}
        graph[f"probe-{name}"] = probe(after=link(name, out))
    graph.update({
        "noise": {"class_type": "RandomNoise", "inputs": {"noise_seed": 0}},
        "ddim": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "ddim"}},
        "sigmas": {"class_type": "BasicScheduler", "inputs": {"model": m, "scheduler": "normal", "steps": 2,
                                                              "denoise": 1.0}},
        "sca": {"class_type": "SamplerCustomAdvanced", "inputs": {
            "noise": link("noise"), "guider": link("guider"), "sampler": link("ddim"), "sigmas": link("sigmas"),
            "latent_image": link("latent")}},
        "probe-sca": probe(after=link("sca")),
        # controls: a probe sees a changed MODEL (the reward LoRA's output) and CLIP (the loaded encoder's)
        "control-model": probe(model=link("rl", 0)),
        "control-clip": probe(clip=link("lte", 0)),
        "neg": {**COMMON["neg"], "inputs": {**COMMON["neg"]["inputs"], "clip": c}},
    })
    for name in ("img", "reward", "pn", "latent"):
        graph[name] = COMMON[name]
    return graph


def test_inputs_are_bit_identical_after_every_node(server):
    alone = server.run({"p": probe(), **{k: COMMON[k] for k in ("ckpt",)}}, timeout=60)
    entry = server.run(every_node_graph(), timeout=300)
    first = digests(entry, "probe0")
    assert first == digests(alone, "p")                              # the same in a prompt of its own
    probed = {k[len("probe-"):]: digests(entry, k) for k in entry["outputs"] if k.startswith("probe-")}
    assert set(probed) == {"ti", "tb", "tc", "rl", "pnt", "lte", "ltb", "blend", "concept", "ksf", "guider", "sca"}
    changed = {name: d for name, d in probed.items() if d != first}
    assert changed == {}, f"inputs changed after {sorted(changed)}"
    model_control, clip_control = digests(entry, "control-model"), digests(entry, "control-clip")
    assert model_control["model"] != first["model"] and model_control["clip"] == first["clip"]
    assert clip_control["clip"] != first["clip"]
    again = server.run({"p": probe(), "ckpt": COMMON["ckpt"]}, timeout=60)
    assert digests(again, "p") == first                              # and in the next prompt


def ti_graph(token: str, seed=0, steps=4, save_every=2, model=link("ckpt", 0), extra=None) -> dict:
    inputs = {**DEFAULTS["TextTuneTrainTextualInversion"], "model": model, "token_name": token, "seed": seed,
              "steps": steps, "save_every": save_every, "batch_size": 2}
    return build("TextTuneTrainTextualInversion", inputs, extra)


def embedding(server, token: str) -> torch.Tensor:
    return safetensors.torch.load_file(os.path.join(server.base, "models", "embeddings", token + ".safetensors"))[
        "emb_params"]


def metrics(server, run: str) -> list[dict]:
    with open(os.path.join(server.base, "output", "texttune", run, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def started_and_ended(entry) -> tuple[float, float]:
    times = {event: data["timestamp"] for event, data in entry["status"]["messages"]
             if event in ("execution_start", "execution_success")}
    return times["execution_start"], times["execution_success"]


def test_two_queued_trainings_run_one_after_the_other_unaffected(server):
    server.run(ti_graph("queue-solo", seed=0), timeout=120)
    first, second = server.post_prompt(ti_graph("queue-a", seed=1)), server.post_prompt(ti_graph("queue-b", seed=0))
    a, b = server.wait(first, timeout=120, poll=POLL), server.wait(second, timeout=120, poll=POLL)
    assert started_and_ended(a)[1] <= started_and_ended(b)[0]         # one after the other
    for run in ("ti-queue-a", "ti-queue-b"):
        assert [r["step"] for r in metrics(server, run)] == [1, 2, 3, 4]
    assert torch.equal(embedding(server, "queue-b"), embedding(server, "queue-solo"))   # as if run alone
    assert not torch.equal(embedding(server, "queue-a"), embedding(server, "queue-b"))


def test_memory_returns_after_a_run(server, summaries):
    proc = psutil.Process(server.proc.pid)
    server.run(ti_graph("memory-warm", steps=3), timeout=120)        # the first run's imports and caches
    before = proc.memory_info().rss
    server.run(ti_graph("memory", steps=3), timeout=120)
    after = proc.memory_info().rss
    summaries.append(f"test_reliability: server memory (RSS) around a training run: {before / 2**20:.0f} MB -> "
                     f"{after / 2**20:.0f} MB ({after / before - 1:+.1%}; allowed +10%)")
    assert after <= 1.10 * before, f"server memory {before / 2**20:.0f} MB -> {after / 2**20:.0f} MB"


NAMES = {"TextTuneTrainTextualInversion": "token_name", "TextTuneTrainTextBoost": "token_name",
         "TextTuneTrainRewardTextEncoder": "encoder_name", "TextTuneTrainRewardLoRA": "lora_name",
         "TextTuneTrainPromptNet": "name"}


def checkpoint(server, run: str, step: int) -> dict:
    return safetensors.torch.load_file(os.path.join(server.base, "output", "texttune", run, "checkpoints",
                                                    f"step_{step:07d}.safetensors"))


@pytest.mark.parametrize("trainer", NAMES, ids=lambda t: t.removeprefix("TextTuneTrain"))
def test_interrupt_keeps_a_checkpoint_and_the_resumed_run_equals_an_uninterrupted_one(server, trainer):
    """/interrupt during a run, once it has made a step count drawn at random (fixed per trainer, so a
    failure repeats): its checkpoint holds the steps done, and queueing the run again (with as many
    steps as the reference) ends with the reference's weights and optimiser state."""
    slug = trainer.removeprefix("TextTuneTrain").lower()
    at = random.Random(slug).randint(2, 8)

    def graph(run, steps):
        return build(trainer, {**DEFAULTS[trainer], NAMES[trainer]: f"int-{slug}", "run_name": run, "steps": steps,
                               "save_every": 0})
    cut = f"int-{slug}-cut"
    rows = os.path.join(server.base, "output", "texttune", cut, "metrics.jsonl")
    pid = server.post_prompt(graph(cut, 100000))
    deadline = time.monotonic() + 120
    while not (os.path.exists(rows) and len(open(rows).read().splitlines()) >= at):
        assert time.monotonic() < deadline, f"the run never made {at} steps\n" + server.log_tail()
        time.sleep(0.02)
    server.interrupt()
    entry = server.finish(pid, timeout=120, poll=POLL)
    assert any(event == "execution_interrupted" for event, _ in entry["status"]["messages"]), entry["status"]
    ckpts = os.listdir(os.path.join(server.base, "output", "texttune", cut, "checkpoints"))
    assert len(ckpts) == 1, ckpts
    done = int(ckpts[0][len("step_"):-len(".safetensors")])
    assert done >= at
    assert [r["step"] for r in metrics(server, cut)] == list(range(1, done + 1))
    assert any(k.startswith("optim.") for k in checkpoint(server, cut, done))

    ref = f"int-{slug}-ref"
    server.run(graph(cut, done + 2), timeout=180)                    # resumes at `done`
    server.run(graph(ref, done + 2), timeout=180)
    a, b = checkpoint(server, cut, done + 2), checkpoint(server, ref, done + 2)
    assert sorted(a) == sorted(b)
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6, rtol=0), k
    assert [r["loss"] for r in metrics(server, cut)] == [r["loss"] for r in metrics(server, ref)]


# ---------------------------------------------------------------------------------------------
# numerical faults
def arm(server, nan=-1, oom=-1):
    """Set (or with -1 clear) the engine's fault hooks in the server process, for the runs that follow."""
    graph = build("TextTuneTestFaults", {"model": link("ckpt", 0), "nan_at_step": nan, "oom_at_step": oom})
    server.run(graph, timeout=60)


@pytest.fixture()
def faults(server):
    yield
    arm(server)


def test_hook_names_match_the_engine():
    import reliability_nodes
    from texttune.trainers import engine
    assert (reliability_nodes.NAN_AT_STEP_ENV, reliability_nodes.OOM_AT_STEP_ENV) == \
        (engine.NAN_AT_STEP_ENV, engine.OOM_AT_STEP_ENV)


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(server, root, faults):
    arm(server, nan=3)                                               # the 4th step's loss is NaN
    was_refused, node_id, kind, message = node_error(server, ti_graph("nan-ti", steps=6, save_every=2))
    assert (was_refused, node_id, kind.rsplit(".", 1)[-1]) == (False, "node", "TrainingStopped")
    ckpt_dir = os.path.join(server.base, "output", "texttune", "ti-nan-ti", "checkpoints")
    assert message.startswith(f"The loss became nan at step 4; training stopped and the last good state (step 3) "
                              f"is saved in {ckpt_dir}. Lower the learning rate (now 0.005)"), message
    assert sorted(os.listdir(ckpt_dir)) == ["step_0000002.safetensors", "step_0000003.safetensors"]
    kept = safetensors.torch.load_file(os.path.join(ckpt_dir, "step_0000003.safetensors"))
    assert all(torch.isfinite(t).all() for t in kept.values())
    assert [r["step"] for r in metrics(server, "ti-nan-ti")] == [1, 2, 3]
    assert not os.path.exists(os.path.join(server.base, "models", "embeddings", "nan-ti.safetensors"))
    assert partial_files(root) == []

    arm(server)                                                      # run again: it resumes and finishes
    server.run(ti_graph("nan-ti", steps=6, save_every=2), timeout=120)
    assert [r["step"] for r in metrics(server, "ti-nan-ti")] == [1, 2, 3, 4, 5, 6]
    assert torch.isfinite(embedding(server, "nan-ti")).all()


OOM = {  # trainer -> (inputs, the node inputs the advice must name with their values, a further remedy)
    "TextTuneTrainTextualInversion": ({"token_name": "oom-ti", "batch_size": 2}, ["batch_size", "resolution"], ""),
    "TextTuneTrainTextBoost": ({"token_name": "oom-tb", "batch_size": 2}, ["batch_size", "resolution"], ""),
    "TextTuneTrainRewardTextEncoder": ({"encoder_name": "oom-tc", "grad_steps": 2},
                                       ["grad_steps", "batch_size", "resolution"], "connect a TAESD as vae"),
    "TextTuneTrainRewardLoRA": ({"lora_name": "oom-rl", "grad_steps": 2},
                                ["grad_steps", "batch_size", "resolution"], "connect a TAESD as vae"),
    "TextTuneTrainPromptNet": ({"name": "oom-pn", "batch_size": 2, "train_lora": True},
                               ["batch_size", "resolution"], "set train_lora to false"),
}


@pytest.mark.parametrize("trainer", OOM, ids=lambda t: t.removeprefix("TextTuneTrain"))
def test_out_of_memory_becomes_advice_naming_the_setting_to_lower(server, root, faults, trainer):
    inputs, names, remedy = OOM[trainer]
    arm(server, oom=1)                                               # the 2nd step runs out of memory
    values = {**DEFAULTS[trainer], **inputs, "steps": 3}
    was_refused, node_id, kind, message = node_error(server, build(trainer, values))
    assert (was_refused, node_id, kind.rsplit(".", 1)[-1]) == (False, "node", "TrainingStopped"), message
    m = re.match(r"Out of memory at step 2: (lower .*)\. The last good state \(step 1\) is saved in ", message)
    assert m, message
    advice = m.group(1)
    schema = server.object_info()[trainer]["input"]
    widgets = {**schema["required"], **schema.get("optional", {})}
    for name in names:                      # the node's own input names, as the user sees them, with the value run
        assert name in widgets and f"{name} (now {values[name]})" in advice, (name, advice)
    assert remedy in advice
    assert "resumes from it" in message
    assert partial_files(root) == []


# ---------------------------------------------------------------------------------------------
# loading safety
def test_the_malicious_pickles_would_run_code_if_loaded_unsafely(root, tmp_path):
    """The control of the matrix's pickle cases: unpickled the ordinary way, the payload writes its
    file, so their `nothing was run` checks can fail."""
    path, marker = str(tmp_path / "control.pt"), str(tmp_path / "control-ran")
    write_malicious(path, marker)
    torch.load(path, weights_only=False)
    assert os.path.exists(marker)
    from texttune.trainers import files
    os.remove(marker)
    with pytest.raises(ValueError, match="was refused"):
        files.load_weights(path)
    assert not os.path.exists(marker)


def _calls(tree):
    import ast
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            owner = f.value if isinstance(f, ast.Attribute) else None
            owner = getattr(owner, "id", getattr(owner, "attr", ""))
            yield name, owner, {k.arg: getattr(k.value, "value", None) for k in node.keywords}


def test_the_pack_reads_only_safetensors_or_weights_only_pickles():
    """Every way the pack's code could unpickle: torch.load only with weights_only=True, no pickle
    module, no ComfyUI loader that unpickles, transformers models only from safetensors."""
    import ast
    sources = [os.path.join(REPO, "__init__.py")] + [
        os.path.join(REPO, d, f) for d in ("nodes", "trainers") for f in sorted(os.listdir(os.path.join(REPO, d)))
        if f.endswith(".py")]
    found = []
    for path in sources:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert not any(m.split(".")[0] in ("pickle", "dill", "cloudpickle") for m in mods), path
        for name, owner, kw in _calls(tree):
            if name == "load" and owner == "torch":
                found.append(path)
                assert kw.get("weights_only") is True, f"torch.load without weights_only=True in {path}"
            assert name not in ("load_torch_file", "load_pickle"), f"{name} in {path}"
            if name == "from_pretrained" and owner.endswith("Model"):
                assert kw.get("use_safetensors") is True, f"{owner}.from_pretrained without safetensors in {path}"
    assert found == [os.path.join(REPO, "trainers", "files.py")]        # one home for pickles


# ---------------------------------------------------------------------------------------------
# a killed server
def test_sigkill_in_the_middle_of_a_save_corrupts_nothing_and_the_run_resumes_exactly(root, tiny):
    """The server is killed (SIGKILL) while a checkpoint is half-written: the files in place are
    whole, the half-written one is only a temporary file, and queueing the run again in a new
    server removes it, resumes from the last whole checkpoint and ends where an uninterrupted run
    ends."""
    base = os.path.join(root, "killed")
    prepare_base(base, tiny)
    shutil.copy(os.path.join(REPO, "assets", "demo", IMAGE), os.path.join(base, "input", IMAGE))
    ckpts = os.path.join(base, "output", "texttune", "ti-kill", "checkpoints")
    graph = ti_graph("kill", steps=6, save_every=1)
    srv = start(base)
    try:
        srv.run(build("TextTuneTestFaults", {"model": link("ckpt", 0), "nan_at_step": -1, "oom_at_step": -1,
                                             "slow_saves": True}), timeout=60)
        srv.post_prompt(graph)
        deadline = time.monotonic() + 120
        while not (os.path.exists(os.path.join(ckpts, "step_0000001.safetensors")) and partial_files(ckpts)):
            assert time.monotonic() < deadline, "no checkpoint save to kill\n" + srv.log_tail()
            time.sleep(0.02)
        os.kill(srv.proc.pid, signal.SIGKILL)
        srv.proc.wait(30)
    finally:
        srv.stop()
    half = partial_files(base)
    assert half and {os.path.dirname(p) for p in half} == {ckpts}, half     # killed mid-save
    whole = sorted(n for n in os.listdir(ckpts) if n.endswith(".safetensors"))
    assert whole == ["step_0000001.safetensors"]
    for name in whole:
        assert safetensors.torch.load_file(os.path.join(ckpts, name))                 # readable, complete

    srv = start(base)
    try:
        entry = srv.run(graph, timeout=120)
        assert entry["status"]["status_str"] == "success"
        assert partial_files(base) == []
        assert [r["step"] for r in metrics(srv, "ti-kill")] == [1, 2, 3, 4, 5, 6]
        srv.run(ti_graph("kill-ref", steps=6, save_every=1), timeout=120)
        resumed, straight = embedding(srv, "kill"), embedding(srv, "kill-ref")
        assert torch.allclose(resumed, straight, atol=1e-6, rtol=0), (resumed - straight).abs().max()
    finally:
        srv.stop()
