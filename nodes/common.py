"""Helpers shared by TextTune nodes: list inputs, destinations, result UI."""
import os

import folder_paths


def single(value, name: str):
    """The one value of an input of a list-input node (is_input_list=True)."""
    if isinstance(value, list):
        if len(value) != 1:
            raise ValueError(f"Input '{name}' got {len(value)} values; connect a single value.")
        return value[0]
    return value


def runs_root() -> str:
    return os.path.join(folder_paths.get_output_directory(), "texttune")


def models_dir(kind: str) -> str:
    """First registered folder of a model kind (embeddings, loras, text_encoders)."""
    return folder_paths.get_folder_paths(kind)[0]


def inside(root: str, rel: str) -> str | None:
    """root/rel as an absolute path if it stays inside root, else None."""
    root = os.path.abspath(root)
    path = os.path.abspath(os.path.join(root, rel))
    return path if os.path.commonpath([root, path]) == root else None


def output_image_ui(path: str) -> dict:
    """UI entry showing a PNG written under the output folder."""
    out = os.path.abspath(folder_paths.get_output_directory())
    rel = os.path.relpath(os.path.abspath(path), out)
    sub, name = os.path.split(rel)
    return {"images": [{"filename": name, "subfolder": sub, "type": "output"}]}


def check_model_clip_match(diffusion, text):
    if diffusion.context_dim is not None and diffusion.context_dim != text.output_width:
        raise ValueError(
            f"The MODEL expects text features of width {diffusion.context_dim} but the CLIP gives "
            f"{text.output_width} (SD1: 768, SD2: 1024, SDXL: 2048). Connect the MODEL and CLIP of the same "
            f"checkpoint.")
