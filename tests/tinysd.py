"""TinySD: a tiny SD1-shaped model family for tests and benchmarks (never shipped as a node).

UNet, CLIP text model with the real SD1 tokenizer (49408 tokens, hidden width 32) and a
TAESD-architecture VAE, built deterministically from a seed in well under a second. A
registered model config (`register`) makes `comfy.sd.load_checkpoint_guess_config`, and so
the core `CheckpointLoaderSimple`, recognise a checkpoint written by `save_checkpoint`.
Import only after `comfy.cli_args.args.cpu` has been decided (see tests/conftest.py).
"""
import functools
import math

import torch

import comfy.model_base
import comfy.model_management as mm
import comfy.model_patcher
import comfy.sd
import comfy.sd1_clip
import comfy.supported_models
import comfy.supported_models_base

WIDTH = 32  # text hidden size == UNet context_dim

UNET = {
    "use_checkpoint": False, "image_size": 32, "in_channels": 4, "out_channels": 4,
    "model_channels": 32,                       # GroupNorm(32, C): channels are multiples of 32
    "num_res_blocks": [1, 1], "channel_mult": [1, 2],
    "transformer_depth": [1, 1], "transformer_depth_output": [1, 1, 1, 1], "transformer_depth_middle": 1,
    "use_spatial_transformer": True, "use_linear_in_transformer": False,
    "context_dim": WIDTH, "legacy": False, "adm_in_channels": None,
    "use_temporal_attention": False, "use_temporal_resblock": False,
}
CLIP = {"hidden_size": WIDTH, "intermediate_size": 64, "num_attention_heads": 2,
        "num_hidden_layers": 2, "projection_dim": WIDTH}

# SD1.5's UNet layout (random weights or the meta device: benchmarks and layout tests at real size)
SD15_UNET = {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
             "legacy": False, "adm_in_channels": None, "in_channels": 4, "model_channels": 320,
             "num_res_blocks": [2, 2, 2, 2], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "channel_mult": [1, 2, 4, 4],
             "transformer_depth_middle": 1, "use_linear_in_transformer": False, "context_dim": 768, "num_heads": 8,
             "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], "use_temporal_attention": False,
             "use_temporal_resblock": False}


def init_weights_(module, seed):
    """comfy ops skip reset_parameters(), so weights start as torch.empty garbage."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim >= 2:                     # fan-in scaled, so every layer passes signal on
                p.copy_(torch.randn(p.shape, generator=g) / max(1, math.prod(p.shape[1:])) ** 0.5)
            elif name.endswith("weight"):       # GroupNorm / LayerNorm scales: 1, or the context is ignored
                p.fill_(1.0)
            else:
                p.zero_()


class TinySDTokenizer(comfy.sd1_clip.SD1Tokenizer):
    """The real SD1 tokenizer, with embedding files expected at the tiny width."""
    def __init__(self, embedding_directory=None, tokenizer_data={}):
        tok = functools.partial(comfy.sd1_clip.SDTokenizer, embedding_size=WIDTH)
        super().__init__(embedding_directory=embedding_directory, tokenizer_data=tokenizer_data, tokenizer=tok)


class TinySDClipModel(comfy.sd1_clip.SD1ClipModel):
    def __init__(self, device="cpu", dtype=None, model_options={}, **kwargs):
        model_options = {**model_options, "clip_l_model_config": dict(CLIP)}
        super().__init__(device=device, dtype=dtype, model_options=model_options, **kwargs)


class TinySD(comfy.supported_models.SD15):
    """Detected from a checkpoint by its tiny UNet; SD15 in everything else."""
    unet_config = {"context_dim": WIDTH, "model_channels": 32, "use_linear_in_transformer": False,
                   "adm_in_channels": None, "use_temporal_attention": False}
    unet_extra_config = {"num_heads": 2, "num_head_channels": -1}

    def clip_target(self, state_dict={}):
        return comfy.supported_models_base.ClipTarget(TinySDTokenizer, TinySDClipModel)


def register():
    if TinySD not in comfy.supported_models.models:
        comfy.supported_models.models.insert(0, TinySD)


def make_model(seed=0):
    cfg = TinySD(dict(UNET))
    cfg.set_inference_dtype(torch.float32, None)
    model = comfy.model_base.BaseModel(cfg, model_type=comfy.model_base.ModelType.EPS, device=torch.device("cpu"))
    init_weights_(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())


def make_sd15_model(device="meta", seed=0):
    """A UNet MODEL of SD1.5's size: on the meta device (layout only, no memory) or with random weights."""
    cfg = comfy.supported_models.SD15(dict(SD15_UNET))
    cfg.set_inference_dtype(torch.float32, None)
    model = comfy.model_base.BaseModel(cfg, model_type=comfy.model_base.ModelType.EPS, device=torch.device(device))
    if device == "meta":
        return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("meta"),
                                                offload_device=torch.device("meta"))
    init_weights_(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())


def make_clip(embedding_directory=None, seed=1):
    target = TinySD({}).clip_target()
    clip = comfy.sd.CLIP(target, embedding_directory=embedding_directory, model_options={"dtype": torch.float32})
    init_weights_(clip.cond_stage_model, seed)
    return clip


def make_vae(seed=2):
    import comfy.taesd.taesd
    t = comfy.taesd.taesd.TAESD(latent_channels=4)
    init_weights_(t, seed)
    with torch.no_grad():
        t.vae_scale.fill_(1.0)
        t.vae_shift.fill_(0.0)
    return comfy.sd.VAE(sd={k: v.clone() for k, v in t.state_dict().items()})


def save_checkpoint(path, seed=0):
    """Write a checkpoint that CheckpointLoaderSimple loads once `register()` ran."""
    import safetensors.torch
    model, clip, vae = make_model(seed), make_clip(seed=seed + 1), make_vae(seed + 2)
    sd = model.model.state_dict_for_saving(clip.get_sd(), vae.get_sd(), None)
    safetensors.torch.save_file({k: v.contiguous() for k, v in sd.items()}, path)
    return path
