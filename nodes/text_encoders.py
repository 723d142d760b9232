"""TextTuneLoadTextEncoder and TextTuneBlendTextEncoders: use fine-tuned text encoders and dial
between them (TextCraftor's inference-time interpolation)."""
import os

import folder_paths
from comfy_api.latest import io

from ..trainers import blend, text_encoders
from . import common

FILE_HELP = ("models/text_encoders/ (or models/clip/): a .safetensors with HF CLIPTextModel keys (Save CLIP output, "
             "TextTune's reward-tuned encoders) or a TextCraftor .pth checkpoint; peft LoRA adapters (a folder with "
             "adapter_config.json + adapter_model.safetensors, e.g. TexForce) inside models/text_encoders/ are listed "
             "as '<folder>/', inside models/loras/ as 'loras/<folder>/'.")


# ---------------------------------------------------------------------------------------------
# which files the loader offers
def _adapter_dir(kind: str, name: str) -> str | None:
    """'<folder>/' if `name` (as listed for `kind`) is the weights file of a peft adapter folder."""
    head, base = os.path.split(name)
    if not head or base not in text_encoders.ADAPTER_WEIGHTS:
        return None
    full = folder_paths.get_full_path(kind, name)
    if full and text_encoders.is_peft_folder(os.path.dirname(full)):
        return head.replace(os.sep, "/") + "/"
    return None


def file_choices() -> list[str]:
    names = set()
    for name in folder_paths.get_filename_list("text_encoders"):
        names.add(_adapter_dir("text_encoders", name) or name)
    for name in folder_paths.get_filename_list("loras"):
        folder = _adapter_dir("loras", name)
        if folder:
            names.add("loras/" + folder)
    return sorted(names)


def resolve_file(name: str) -> str:
    """Path of a file or adapter folder named as `file_choices` names it."""
    if name.endswith("/"):
        rel = name.rstrip("/")
        tries = [("text_encoders", rel)] + ([("loras", rel[len("loras/"):])] if rel.startswith("loras/") else [])
        for kind, r in tries:
            for root in folder_paths.get_folder_paths(kind):
                path = common.inside(root, r)
                if path and text_encoders.is_peft_folder(path):
                    return path
    else:
        path = folder_paths.get_full_path("text_encoders", name)
        if path:
            return path
    where = ", ".join(folder_paths.get_folder_paths("text_encoders"))
    loras = ", ".join(folder_paths.get_folder_paths("loras"))
    raise ValueError(f"Text encoder '{name}' was not found. Put text-encoder files (and peft adapter folders) in "
                     f"{where}, or peft adapter folders in {loras}, then refresh the node list (press R).")


# ---------------------------------------------------------------------------------------------
class LoadTextEncoder(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        lo, hi = text_encoders.STRENGTH_RANGE
        return io.Schema(
            node_id="TextTuneLoadTextEncoder",
            display_name="Load Fine-Tuned Text Encoder (TextTune)",
            category="TextTune/encoders",
            description="Puts a fine-tuned text encoder (TextCraftor, TexForce, Save CLIP output, TextTune) into a "
                        "CLIP at a strength: base + strength x (file - base), as patches on a copy of the CLIP.",
            inputs=[
                io.Clip.Input("clip", tooltip="The CLIP of the checkpoint the encoder was fine-tuned from. It is not "
                                              "changed: the output is a patched copy."),
                io.Combo.Input("file", options=file_choices(),
                               tooltip="The fine-tuned text encoder, from " + FILE_HELP),
                io.Float.Input("strength", default=1.0, min=lo, max=hi, step=0.05,
                               tooltip="0 keeps the CLIP's own encoder, 1 gives the file's; between interpolates, "
                                       "below 0 or above 1 extrapolates (allowed: -1 to 2)."),
                io.Combo.Input("encoder", options=list(text_encoders.ENCODER_CHOICES), default="auto",
                               tooltip="Which encoder of the CLIP the file replaces. auto: the one whose shape fits "
                                       "(SD1: L, SD2: H). For SDXL pick L or G to say which one the file is for."),
            ],
            outputs=[io.Clip.Output(display_name="CLIP", tooltip="The CLIP with the fine-tuned encoder at the "
                                                                 "given strength.")],
        )

    @classmethod
    def execute(cls, clip, file, strength, encoder="auto") -> io.NodeOutput:
        if clip is None:
            raise ValueError("The clip input is empty: connect the CLIP of your checkpoint loader.")
        strength = text_encoders.check_strength(strength)
        loaded = text_encoders.read(resolve_file(file), device=clip.patcher.offload_device)
        return io.NodeOutput(text_encoders.apply(clip, loaded, strength, encoder))


class BlendTextEncoders(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TextTuneBlendTextEncoders",
            display_name="Blend Text Encoders (TextTune)",
            category="TextTune/encoders",
            description="Encodes a prompt with 2-4 CLIPs and blends the results: sum of weight x conditioning, "
                        "optionally only inside a window of the sampling steps (the first CLIP's conditioning "
                        "outside it). TextCraftor's dial: base and fine-tuned CLIP with weights 1-w, w.",
            inputs=[
                io.String.Input("text", multiline=True, dynamic_prompts=True,
                                tooltip="The prompt. (word:1.2) weights and embedding:<name> work as in CLIP Text "
                                        "Encode; every CLIP reads the same text."),
                io.Clip.Input("clip_a", tooltip="First CLIP: usually the base encoder. Its conditioning is used "
                                                "outside the step window."),
                io.Clip.Input("clip_b", tooltip="Second CLIP, e.g. the base CLIP through Load Fine-Tuned Text "
                                                "Encoder. Must be the same architecture as clip_a."),
                io.String.Input("weights", default="0.5, 0.5",
                                tooltip="One number per connected CLIP in the order a, b, c, d, separated by commas "
                                        "(e.g. '0.25, 0.75'). Any real numbers: they are not normalised, so "
                                        "'-0.25, 1.25' extrapolates past clip_b."),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Start of the step window where the blend is used (0 = first step). "
                                       "TextCraftor: 0.4 (fine-tuned encoder on the last 15 of 25 steps)."),
                io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="End of the step window (1 = last step). Outside the window the output is "
                                       "clip_a's conditioning; 0 to 1 gives the plain blend everywhere."),
                io.Clip.Input("clip_c", optional=True, tooltip="Optional third CLIP (needs a third weight)."),
                io.Clip.Input("clip_d", optional=True, tooltip="Optional fourth CLIP (needs clip_c and a fourth "
                                                               "weight)."),
            ],
            outputs=[io.Conditioning.Output(display_name="CONDITIONING",
                                            tooltip="The blended conditioning (one entry, or one per part of the "
                                                    "step window); use it like CLIP Text Encode's output.")],
        )

    @classmethod
    def execute(cls, text, clip_a, clip_b, weights, start_percent=0.0, end_percent=1.0, clip_c=None,
                clip_d=None) -> io.NodeOutput:
        if clip_d is not None and clip_c is None:
            raise ValueError("clip_d is connected but clip_c is not: connect the CLIPs in order (a, b, c, d).")
        named = [("clip_a", clip_a), ("clip_b", clip_b), ("clip_c", clip_c), ("clip_d", clip_d)]
        named = [(n, c) for n, c in named if c is not None or n in ("clip_a", "clip_b")]
        for n, c in named:
            if c is None:
                raise ValueError(f"The {n} input is empty: connect a CLIP (a checkpoint without a text encoder "
                                 f"gives none).")
        labels, clips = [n for n, _ in named], [c for _, c in named]
        conditioning = blend.blend(clips, labels, blend.parse_weights(weights), text, start_percent, end_percent)
        return io.NodeOutput(conditioning)
