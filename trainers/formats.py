"""File formats the pack writes and reads, in the layouts the ecosystem loads."""
import os

import torch

from . import files

TEXTTUNE_FORMAT = "texttune"


def embedding_tensors(vectors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """{embedding_key: [n, width]} -> the file layout: one encoder `{"emb_params"}` (A1111/kohya,
    read by ComfyUI as the first value), two encoders `{"clip_l", "clip_g"}` (SDXL)."""
    if len(vectors) == 1:
        return {"emb_params": next(iter(vectors.values())).detach().float()}
    return {k: v.detach().float() for k, v in vectors.items()}


def save_embedding(path: str, vectors: dict[str, torch.Tensor], metadata: dict) -> str:
    if os.path.exists(path):
        _, meta = files.load_safetensors(path)
        if meta.get("format") != TEXTTUNE_FORMAT or meta.get("token") != metadata.get("token"):
            raise ValueError(f"An embedding file {path} already exists and was not made by this TextTune token; "
                             f"choose another token name or move that file away.")
    return files.save_safetensors(embedding_tensors(vectors), path, {**metadata, "format": TEXTTUNE_FORMAT})
