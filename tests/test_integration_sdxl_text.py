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
            tokens = text.tokens_with_vectors(f"a photo of a {MARKER}",
                                              {MARKER: {"l": params["clip_l"], "g": params["clip_g"]}})
            assert all(len(tokens[k][0]) == 77 for k in tokens)
            cond, pooled = text.encode(tokens)
            assert cond.shape == (1, 77, 96) and pooled.shape == (1, 64)
            cond.square().mean().backward()
        assert params["clip_l"].grad.abs().sum() > 0 and params["clip_g"].grad.abs().sum() > 0
    layout = formats.embedding_tensors(vecs)
    assert set(layout) == {"clip_l", "clip_g"}


def tiny_sdxl_model(tiny, context_dim=96, pooled_dim=64):
    import comfy.model_base
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models
    unet = {**tiny.UNET, "context_dim": context_dim, "adm_in_channels": pooled_dim + 6 * 256,
            "num_classes": "sequential", "use_linear_in_transformer": True}
    cfg = comfy.supported_models.SDXL(unet)
    cfg.unet_config.update(num_heads=2, num_head_channels=-1)
    cfg.set_inference_dtype(torch.float32, None)
    model = comfy.model_base.SDXL(cfg, device=torch.device("cpu"))
    tiny.init_weights_(model.diffusion_model, 3)
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())


def test_sdxl_textual_inversion_trains_through_the_unet_with_pooled_conditioning(tiny, tmp_path):
    from texttune.trainers import engine
    from texttune.trainers.comfy_adapter import Diffusion
    from texttune.trainers.runs import RunFolder
    from texttune.trainers.textual_inversion import TextualInversion
    clip, mp = tiny_sdxl_clip(tiny), tiny_sdxl_model(tiny)
    diffusion, text = Diffusion(mp), TextEncoder(clip)
    assert diffusion.context_dim == text.output_width == 96
    with torch.inference_mode(False):
        lat = diffusion.to_model_latents(torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)))
        method = TextualInversion(diffusion, text, lat, lat.flip(-1), None, ["a photo of a {}"], "dog", 2, 2)
        start = {k: v.detach().clone() for k, v in method.vectors().items()}
        res = engine.train(method, RunFolder(str(tmp_path), "sdxl", {"m": "ti"}), steps=3,
                           schedule=engine.Schedule(1e-2, 3), seed=0)
    assert len(res.losses) == 3 and all(torch.isfinite(torch.tensor(res.losses)))
    end = method.vectors()
    assert set(end) == {"clip_l", "clip_g"}
    assert not torch.equal(start["clip_l"], end["clip_l"]) and not torch.equal(start["clip_g"], end["clip_g"])


def _batched_equals_one_by_one(clip):
    text = TextEncoder(clip)
    vec = {k: torch.randn(2, text.width(k)) for k in text.keys}
    prompts = [f"a photo of a {MARKER}", "", "a red bicycle on a long road", f"{MARKER} in the snow"]
    tokens = [text.tokens_with_vectors(p, {MARKER: vec}) for p in prompts]
    with torch.inference_mode(False), trainable_session([], [clip]):
        cond, pooled = text.encode_batch(tokens)
        assert text._encode_batched(tokens) is not None
        one = [text.encode(t) for t in tokens]
    assert cond.shape[0] == len(prompts)
    assert torch.allclose(cond.cpu(), torch.cat([c for c, _ in one]).cpu(), atol=1e-5)
    if pooled is not None:
        assert torch.allclose(pooled.cpu(), torch.cat([p for _, p in one]).cpu(), atol=1e-5)
    # prompt weights take the one-by-one path, as CLIP.encode_from_tokens weights them
    weighted = text.clip.tokenize("a (red:1.3) bicycle")
    assert text._encode_batched([weighted]) is None


def test_batched_caption_encoding_equals_one_by_one_sdxl(tiny):
    _batched_equals_one_by_one(tiny_sdxl_clip(tiny))


def test_batched_caption_encoding_equals_one_by_one_sd1(tiny):
    _batched_equals_one_by_one(tiny.make_clip())


def test_textboost_lora_on_sdxl_uses_kohya_te1_te2_and_comfy_applies_it(tiny):
    from texttune.trainers.lora import TextLora, parse_targets
    clip = tiny_sdxl_clip(tiny)
    lora = TextLora(clip, parse_targets("q, k, v, out, fc1, fc2"), rank=2)
    sd = lora.kohya_state_dict()
    assert {k.split("_text_model")[0] for k in sd} == {"lora_te1", "lora_te2"}
    _, patched = comfy.sd.load_lora_for_models(None, clip, sd, 0.0, 1.0)
    assert len(patched.patcher.patches) == 2 * 3 * 6            # two encoders x 3 layers x 6 targets


def test_sdxl_textboost_trains_lora_and_words_of_both_encoders(tiny, tmp_path):
    from texttune.trainers import engine
    from texttune.trainers.comfy_adapter import Diffusion
    from texttune.trainers.lora import TextLora, parse_targets
    from texttune.trainers.runs import RunFolder
    from texttune.trainers.textboost import TextBoost
    from texttune.trainers import augment
    clip, mp = tiny_sdxl_clip(tiny), tiny_sdxl_model(tiny)
    diffusion, text = Diffusion(mp), TextEncoder(clip)
    with torch.inference_mode(False):
        lat = diffusion.to_model_latents(torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)))
        lora = TextLora(clip, parse_targets("q, v"), rank=2)
        edits = [[augment.Edit("zoom-in", "prefix")], []]
        method = TextBoost(diffusion, text, lat, edits, ["a {}"], "dog", "dog", ["a cat on a sofa", "a red car"],
                           lora, 2, lora_lr=1e-2, token_lr=1e-2)
        res = engine.train(method, RunFolder(str(tmp_path), "sdxl-tb", {"m": "tb"}), steps=3,
                           schedule=engine.Schedule(1e-2, 3), seed=0, max_grad_norm=1.0)
    assert len(res.losses) == 3 and all(torch.isfinite(torch.tensor(res.losses)))
    assert set(method.instance_vectors()) == {"clip_l", "clip_g"}
    moved = {n for n, p in lora.parameters().items() if n.endswith("lora_up") and float(p.abs().max()) > 0}
    unused = {n for n in lora.parameters() if n.endswith("lora_up") and n not in moved}
    # SDXL reads clip_l's penultimate layer, so only clip_l's last layer gets no gradient
    assert unused == {f"lora_te1_text_model_encoder_layers_2_self_attn_{t}_proj.lora_up" for t in "qv"}, unused
    assert any(n.startswith("lora_te2_") for n in moved)
