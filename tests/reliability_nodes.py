"""Test-only nodes for tests/test_reliability.py, loaded only by that module's server (linked into
its <base>/custom_nodes/): inputs no real node makes, fault injection, and probes of the MODEL and
CLIP that re-run on every prompt. Never installed for users.

- TextTuneTestTensor: an IMAGE / MASK / LATENT of any shape and value (empty batches, wrong
  channel counts, NaN pixels).
- TextTuneTestFaults: arms the engine's test hooks (trainers/engine.py: NaN loss, out of memory at
  a step) in the server process for the runs that follow; -1 disarms. `slow_saves` makes every
  safetensors write in the process stop half-written for a while, so a test can kill the server in
  the middle of a save. Passes the MODEL through so a graph can order it before a trainer.
- TextTuneTestProbe: bit-exact digests of what the MODEL and CLIP compute (a fixed prompt's
  conditioning and a 2-step sample) and passes both through unchanged, so a graph can probe the
  inputs of its trainers before and after them.
"""
import hashlib
import json
import os
import time

import safetensors.torch
import torch

import nodes
from comfy.comfy_types import IO

# The names of trainers/engine.py's hooks (test_reliability checks they match).
NAN_AT_STEP_ENV = "TEXTTUNE_TEST_NAN_AT_STEP"
OOM_AT_STEP_ENV = "TEXTTUNE_TEST_OOM_AT_STEP"
PROBE_TEXT = "a red ring on a blue background"
SLOW_SAVE_SECONDS = 1.0
_save_file = safetensors.torch.save_file


def _slow_save_file(tensors, filename, metadata=None):
    """safetensors.torch.save_file that leaves the file half-written for SLOW_SAVE_SECONDS, then completes it."""
    _save_file(tensors, filename, metadata=metadata)
    with open(filename, "rb") as f:
        data = f.read()
    with open(filename, "wb") as f:
        f.write(data[:len(data) // 2])
    time.sleep(SLOW_SAVE_SECONDS)
    with open(filename, "wb") as f:
        f.write(data)


def _digest(*tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        if t is not None:
            t = t.detach().to("cpu").contiguous()
            h.update(str((t.dtype, tuple(t.shape))).encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class TextTuneTestTensor:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"shape": ("STRING", {"default": "1,64,64,3"}),
                             "value": ("STRING", {"default": "0.5"})}}

    RETURN_TYPES = ("IMAGE", "MASK", "LATENT")
    FUNCTION = "make"
    CATEGORY = "_for_testing/texttune"

    def make(self, shape, value):
        dims = [int(d) for d in shape.split(",")]
        t = torch.full(dims, float(value))
        return t, t, {"samples": t}


class TextTuneTestFaults:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",),
                             "nan_at_step": ("INT", {"default": -1, "min": -1, "max": 100000}),
                             "oom_at_step": ("INT", {"default": -1, "min": -1, "max": 100000})},
                "optional": {"slow_saves": ("BOOLEAN", {"default": False})}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "arm"
    CATEGORY = "_for_testing/texttune"

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")                  # never cached: arming is the point

    def arm(self, model, nan_at_step, oom_at_step, slow_saves=False):
        for name, step in ((NAN_AT_STEP_ENV, nan_at_step), (OOM_AT_STEP_ENV, oom_at_step)):
            if step < 0:
                os.environ.pop(name, None)
            else:
                os.environ[name] = str(step)
        safetensors.torch.save_file = _slow_save_file if slow_saves else _save_file
        return (model,)


class TextTuneTestProbe:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "clip": ("CLIP",)},
                "optional": {"after": (IO.ANY, {"tooltip": "Anything: the probe runs after the node that made it."})}}

    RETURN_TYPES = ("MODEL", "CLIP")
    FUNCTION = "probe"
    OUTPUT_NODE = True
    CATEGORY = "_for_testing/texttune"

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")                  # re-run on every prompt, on the same cached inputs

    def probe(self, model, clip, after=None):
        cond, pooled = clip.encode_from_tokens(clip.tokenize(PROBE_TEXT), return_pooled=True)
        uncond, upooled = clip.encode_from_tokens(clip.tokenize(""), return_pooled=True)
        latent = {"samples": torch.zeros(1, 4, 8, 8)}
        sample = nodes.common_ksampler(model, 0, 2, 5.0, "euler", "normal", [[cond, {"pooled_output": pooled}]],
                                       [[uncond, {"pooled_output": upooled}]], latent)[0]["samples"]
        digests = {"clip": _digest(cond, pooled), "model": _digest(sample)}
        return {"ui": {"text": [json.dumps(digests)]}, "result": (model, clip)}


NODE_CLASS_MAPPINGS = {"TextTuneTestTensor": TextTuneTestTensor, "TextTuneTestFaults": TextTuneTestFaults,
                       "TextTuneTestProbe": TextTuneTestProbe}
