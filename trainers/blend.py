"""Blending the conditioning of several text encoders (TextCraftor's inference-time interpolation).

Each CLIP encodes the prompt as the core CLIP Text Encode node does (its own tokenizer, so `(word:1.2)`
weights and `embedding:` names work); the blend is Σ wᵢ·Eᵢ for the token features and for the
pooled output, with the weights as given (no normalisation, so extrapolation works). An optional
step window [start, end] puts the blend inside it and the first CLIP's conditioning outside it, as
separate CONDITIONING entries with start_percent / end_percent, the keys the core
ConditioningSetTimestepRange node sets, so samplers and other conditioning nodes treat them as usual.
"""
from __future__ import annotations

import math
import re

from . import text_encoders


def parse_weights(text: str) -> list[float]:
    """'0.25, 0.75' -> [0.25, 0.75]: numbers separated by commas, semicolons or spaces."""
    parts = [p for p in re.split(r"[,;\s]+", str(text).replace("\u2212", "-").strip()) if p]
    if not parts:
        raise ValueError("No weights given: write one number per connected CLIP, in order, e.g. '0.5, 0.5'.")
    out = []
    for p in parts:
        try:
            w = float(p)
        except ValueError:
            raise ValueError(f"Weight {p!r} is not a number: write one number per connected CLIP, e.g. "
                             f"'0.25, 0.75'.") from None
        if not math.isfinite(w):
            raise ValueError(f"Weight {p!r} is not a finite number: write one number per connected CLIP, e.g. "
                             f"'0.25, 0.75'.")
        out.append(w)
    return out


def check_window(start: float, end: float):
    if not (0.0 <= start < end <= 1.0):
        raise ValueError(f"Step window [{start}, {end}] is empty or outside [0, 1]: start_percent must be below "
                         f"end_percent, e.g. 0.4 and 1.0 for the last 60% of the steps.")


def check_count(labels: list[str], weights: list[float]):
    if len(labels) > len(weights):
        raise ValueError(f"{len(labels)} CLIPs are connected ({', '.join(labels)}) but only {len(weights)} weight(s) "
                         f"are given: write one weight per CLIP, in order.")
    if len(labels) < len(weights):
        raise ValueError(f"{len(weights)} weights are given but only {len(labels)} CLIPs are connected "
                         f"({', '.join(labels)}): connect a CLIP for each weight or remove the extra weights.")


def check_same_architecture(clips: list, labels: list[str]):
    """All CLIPs must have the same encoders (names and shapes); the error names the ones that differ."""
    archs = [text_encoders.clip_encoders(c) for c in clips]
    sigs = [{n: s for n, (_, s) in a.items()} or type(c.cond_stage_model).__name__ for a, c in zip(archs, clips)]
    for i in range(1, len(clips)):
        if sigs[i] != sigs[0]:
            def show(k):
                return text_encoders.describe_clip(archs[k]) if archs[k] else type(clips[k].cond_stage_model).__name__
            raise ValueError(f"The CLIPs have different architectures: {labels[0]} has {show(0)}, but {labels[i]} "
                             f"has {show(i)}. Blend only text encoders of the same model family.")


def encode(clip, text: str) -> list:
    """[cond, extras] as the core CLIPTextEncode node makes it (tokenize + encode_from_tokens_scheduled)."""
    out = clip.encode_from_tokens_scheduled(clip.tokenize(text))
    if len(out) != 1:
        raise ValueError("A CLIP with scheduled hooks gives several conditionings per prompt; the blend needs one "
                         "per CLIP. Remove the CLIP's hook schedule before blending.")
    return out[0]


def weighted_sum(entries: list, weights: list[float], labels: list[str]) -> list:
    """[Σ wᵢ·condᵢ, extras of the first entry with pooled_output = Σ wᵢ·pooledᵢ]."""
    conds = [e[0] for e in entries]
    for label, c in zip(labels[1:], conds[1:]):
        if c.shape != conds[0].shape:
            raise ValueError(f"{label} encodes the prompt to shape {list(c.shape)} but {labels[0]} to "
                             f"{list(conds[0].shape)}: the prompt is split differently, e.g. an embedding: name is "
                             f"known to one CLIP and not the other.")
    cond = sum(w * c.float() for w, c in zip(weights, conds)).to(conds[0].dtype)
    extras = dict(entries[0][1])
    pooled = [e[1].get("pooled_output") for e in entries]
    if all(p is not None for p in pooled):
        extras["pooled_output"] = sum(w * p.float() for w, p in zip(weights, pooled)).to(pooled[0].dtype)
    elif any(p is not None for p in pooled):
        raise ValueError("Some CLIPs give a pooled output and others do not; blend CLIPs of one model family.")
    return [cond, extras]


def windowed(blended: list, first: list, start: float, end: float) -> list:
    """CONDITIONING: the blend on [start, end] and `first` on the rest of the steps; the plain blend
    (no range keys) for the full window [0, 1]."""
    if start <= 0.0 and end >= 1.0:
        return [[blended[0], dict(blended[1])]]
    out = []
    if start > 0.0:
        out.append([first[0], {**first[1], "start_percent": 0.0, "end_percent": start}])
    out.append([blended[0], {**blended[1], "start_percent": start, "end_percent": end}])
    if end < 1.0:
        out.append([first[0], {**first[1], "start_percent": end, "end_percent": 1.0}])
    return out


def blend(clips: list, labels: list[str], weights: list[float], text: str, start: float = 0.0,
          end: float = 1.0) -> list:
    """CONDITIONING of `text`: Σ wᵢ·Eᵢ(text) inside the step window, the first CLIP's outside it."""
    check_count(labels, weights)
    check_window(start, end)
    check_same_architecture(clips, labels)
    entries = [encode(c, text) for c in clips]
    return windowed(weighted_sum(entries, weights, labels), entries[0], start, end)
