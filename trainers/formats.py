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


def check_overwrite(path: str, token: str, what: str, key: str = "token"):
    """Refuse to replace a file that this TextTune token (or named result: `key`) did not write (a
    user's own model, say)."""
    if os.path.exists(path):
        _, meta = files.load_safetensors(path)
        if meta.get("format") != TEXTTUNE_FORMAT or meta.get(key) != token:
            who, choose = ("this TextTune token", "token name") if key == "token" else (f"TextTune as this {key}", key)
            raise ValueError(f"{what} file {path} already exists and was not made by {who}; choose another {choose} "
                             f"or move that file away.")


def save_embedding(path: str, vectors: dict[str, torch.Tensor], metadata: dict) -> str:
    check_overwrite(path, metadata.get("token"), "An embedding")
    return files.save_safetensors(embedding_tensors(vectors), path, {**metadata, "format": TEXTTUNE_FORMAT})


def save_lora(path: str, tensors: dict[str, torch.Tensor], metadata: dict, key: str = "token") -> str:
    """A kohya-layout LoRA (`lora_te…` or `lora_unet_…` keys) with kohya's ss_* fields, so tools that
    list them show rank and alpha; `metadata[key]` owns the file."""
    check_overwrite(path, metadata.get(key), "A LoRA", key=key)
    alpha = next((float(v) for k, v in tensors.items() if k.endswith(".alpha")), None)
    rank = next((v.shape[0] for k, v in tensors.items() if k.endswith(".lora_down.weight")), None)
    only = "train_unet_only" if all(k.startswith("lora_unet_") for k in tensors) else "train_text_encoder_only"
    ss = {"ss_network_module": "networks.lora", "ss_network_dim": rank, "ss_network_alpha": alpha,
          "ss_network_args": f'{{"{only}": true}}'}
    return files.save_safetensors(tensors, path, {**ss, **metadata, "format": TEXTTUNE_FORMAT})


def save_text_encoder(path: str, tensors: dict[str, torch.Tensor], metadata: dict) -> str:
    """A whole text encoder in HF CLIPTextModel keys (`text_model.…`, `text_projection.weight`), the
    layout of the core Save CLIP node, which CLIPLoader loads; `metadata["name"]` owns the file."""
    check_overwrite(path, metadata.get("name"), "A text-encoder", key="name")
    return files.save_safetensors(tensors, path, {**metadata, "format": TEXTTUNE_FORMAT})
