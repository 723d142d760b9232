"""The ShapeWorld model in ComfyUI's own classes: an SD1-shaped UNet, a CLIP text encoder with the
real SD1 tokenizer (width 64) and a TAESD-architecture VAE.

`register()` adds its model config to ComfyUI's detection list, so `CheckpointLoaderSimple` loads
`weights/shapeworld.safetensors` (the test-only custom node `texttune_test_models` calls it).
`build()` makes fresh, trainable parts for shapeworld/train_model.py.
Import only after ComfyUI's device choice is made (`comfy.cli_args.args.cpu`).
"""
import functools
import math
import os

import torch

import comfy.model_base
import comfy.model_management as mm
import comfy.model_patcher
import comfy.sd
import comfy.sd1_clip
import comfy.supported_models
import comfy.supported_models_base

WEIGHTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights", "shapeworld.safetensors")
CHECKPOINT_NAME = "shapeworld.safetensors"

WIDTH = 64  # text hidden size == UNet context_dim

UNET = {
    "use_checkpoint": False, "image_size": 8, "in_channels": 4, "out_channels": 4,
    "model_channels": 64, "num_res_blocks": [1, 1, 1], "channel_mult": [1, 1, 2],
    "transformer_depth": [1, 1, 1], "transformer_depth_output": [1] * 6, "transformer_depth_middle": 1,
    "use_spatial_transformer": True, "use_linear_in_transformer": False,
    "context_dim": WIDTH, "legacy": False, "adm_in_channels": None,
    "use_temporal_attention": False, "use_temporal_resblock": False,
}
CLIP = {"hidden_size": WIDTH, "intermediate_size": 4 * WIDTH, "num_attention_heads": 2,
        "num_hidden_layers": 4, "projection_dim": WIDTH}


class ShapeWorldTokenizer(comfy.sd1_clip.SD1Tokenizer):
    """The real SD1 tokenizer, with embedding files expected at ShapeWorld's width."""
    def __init__(self, embedding_directory=None, tokenizer_data={}):
        tok = functools.partial(comfy.sd1_clip.SDTokenizer, embedding_size=WIDTH)
        super().__init__(embedding_directory=embedding_directory, tokenizer_data=tokenizer_data, tokenizer=tok)


class ShapeWorldClipModel(comfy.sd1_clip.SD1ClipModel):
    def __init__(self, device="cpu", dtype=None, model_options={}, **kwargs):
        model_options = {**model_options, "clip_l_model_config": dict(CLIP)}
        super().__init__(device=device, dtype=dtype, model_options=model_options, **kwargs)


class ShapeWorld(comfy.supported_models.SD15):
    """Detected from a checkpoint by its UNet (64 channels, context 64); SD15 in everything else."""
    unet_config = {"context_dim": WIDTH, "model_channels": 64, "use_linear_in_transformer": False,
                   "adm_in_channels": None, "use_temporal_attention": False}
    unet_extra_config = {"num_heads": -1, "num_head_channels": 32}

    def clip_target(self, state_dict={}):
        return comfy.supported_models_base.ClipTarget(ShapeWorldTokenizer, ShapeWorldClipModel)


def register():
    if ShapeWorld not in comfy.supported_models.models:
        comfy.supported_models.models.insert(0, ShapeWorld)


# -- fresh parts for training -------------------------------------------------------------------

def _init_(module: torch.nn.Module, seed: int, zero=()):
    """comfy ops skip reset_parameters(): weights start as torch.empty garbage. Fan-in scaled
    normal weights, zero biases, unit norm scales, and zeros for the layers named in `zero`
    (each residual branch's last layer, as the original LDM code does), so training starts
    from an identity-like network."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if any(name.startswith(z) or f".{z}" in name for z in zero):
                p.zero_()
            elif p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / max(1, math.prod(p.shape[1:])) ** 0.5)
            elif name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.zero_()


def build(seed: int = 0):
    """(ModelPatcher, CLIP, TAESD module) with fresh float32 weights on the CPU."""
    import comfy.taesd.taesd
    cfg = ShapeWorld(dict(UNET))
    cfg.set_inference_dtype(torch.float32, None)
    model = comfy.model_base.BaseModel(cfg, model_type=comfy.model_base.ModelType.EPS, device=torch.device("cpu"))
    _init_(model.diffusion_model, seed, zero=("out.2.", "out_layers.3.", "proj_out."))
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                               offload_device=mm.unet_offload_device())
    clip = comfy.sd.CLIP(cfg.clip_target(), model_options={"dtype": torch.float32})
    _init_(clip.cond_stage_model, seed + 1)
    with torch.no_grad():   # token and position embeddings: small, as CLIP initialises them
        for name, p in clip.cond_stage_model.named_parameters():
            if "embedding" in name:
                p.mul_(0.02 * math.sqrt(p.shape[1]))
    taesd = comfy.taesd.taesd.TAESD(latent_channels=4)
    _init_(taesd, seed + 2)
    with torch.no_grad():
        taesd.vae_scale.fill_(1.0)
        taesd.vae_shift.fill_(0.0)
    return patcher, clip, taesd


def checkpoint_state_dict(patcher, clip, taesd, dtype=torch.float16) -> dict:
    """The single-file checkpoint (UNet, CLIP, VAE under ComfyUI's SD1 prefixes) in `dtype`."""
    vae_sd = {k: v.detach() for k, v in taesd.state_dict().items()}
    sd = patcher.model.state_dict_for_saving(clip.get_sd(), vae_sd, None)
    return {k: v.detach().to(dtype).contiguous() for k, v in sd.items()}
