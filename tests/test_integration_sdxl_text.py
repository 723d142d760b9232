"""SDXL-shaped text side (two encoders, tiny widths): the learned word gets rows in both."""
import torch

import comfy.sd
import comfy.sdxl_clip
import comfy.supported_models_base
from texttune.trainers import formats
from texttune.trainers.comfy_adapter import TextEncoder, trainable_session
from texttune.trainers.textual_inversion import MARKER, initial_vectors


def tiny_sdxl_clip(tiny):
    small = lambda w: {"hidden_size": w, "intermediate_size": 2 * w, "num_attention_heads": 2,  # noqa: E731
                       "num_hidden_layers": 3, "projection_dim": w}
    target = comfy.supported_models_base.ClipTarget(comfy.sdxl_clip.SDXLTokenizer, comfy.sdxl_clip.SDXLClipModel)
    clip = comfy.sd.CLIP(target, model_options={"dtype": torch.float32, "clip_l_model_config": small(32),
                                                "clip_g_model_config": small(64)})
    tiny.init_weights_(clip.cond_stage_model, 5)
    return clip


def test_sdxl_word_trains_rows_of_both_encoders(tiny):
    clip = tiny_sdxl_clip(tiny)
    text = TextEncoder(clip)
    assert sorted(text.keys) == ["g", "l"] and text.output_width == 96
    with torch.inference_mode(False):
        vecs = initial_vectors(text, "dog", 3)
        assert vecs["clip_l"].shape == (3, 32) and vecs["clip_g"].shape == (3, 64)
        params = {k: torch.nn.Parameter(v) for k, v in vecs.items()}
        with trainable_session([], [clip]):
            tokens = text.tokens_with_vectors(f"a photo of a {MARKER}", MARKER,
                                              {"l": params["clip_l"], "g": params["clip_g"]})
            assert all(len(tokens[k][0]) == 77 for k in tokens)
            cond, pooled = text.encode(tokens)
            assert cond.shape == (1, 77, 96) and pooled.shape == (1, 64)
            cond.square().mean().backward()
        assert params["clip_l"].grad.abs().sum() > 0 and params["clip_g"].grad.abs().sum() > 0
    layout = formats.embedding_tensors(vecs)
    assert set(layout) == {"clip_l", "clip_g"}
