"""A tiny PromptNet for TinySD (words of its text width, 32), in ProFusion's released folder layout:
promptnet/ (diffusers config.json + weights) and openclip/ (a transformers CLIPModel folder).
Shared by tests/test_promptnet.py and the example workflows' test set-up (tests/example_inputs.py).
Import after the ComfyUI host is set up (tests/conftest.py)."""
import json
import os

import safetensors.torch
import torch

from texttune.trainers import promptnet as pn

TINY = {"block_out_channels": [32, 64], "res_block_out_channels": [32, 64], "layers_per_block": 1,
        "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"], "attention_head_dim": [2, 2],
        "cross_attention_dim": 32, "use_linear_projection": True, "prompt_channel": 32, "region_proj_channel": 8,
        "region_kernel_size": 1, "with_noise": True, "use_res": True}
VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
          "image_size": 32, "patch_size": 8}
TEXT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
        "max_position_embeddings": 77, "vocab_size": 49408}


def tiny_net(cfg=None, seed=0) -> pn.PromptNetModel:
    cfg = pn.read_config(cfg or {**TINY, "vision_width": VISION["hidden_size"]})
    return pn.init_random_(pn.PromptNetModel(cfg), seed)


def write_release(folder, weights="safetensors", seed=0, vision=True):
    """ProFusion's layout at tiny size: promptnet/ (diffusers config.json + weights), openclip/ (a
    transformers CLIPModel folder). Returns the PromptNet state dict written."""
    from transformers import CLIPConfig, CLIPModel
    os.makedirs(os.path.join(folder, "promptnet"), exist_ok=True)
    net = tiny_net(seed=seed)
    sd = {k: v.contiguous() for k, v in net.state_dict().items()}
    config = {"_class_name": "PromptNetModel", "_diffusers_version": "0.14.0", "sample_size": 8, "act_fn": "silu",
              "center_input_sample": False, "flip_sin_to_cos": True, "freq_shift": 0, "norm_num_groups": 32,
              "norm_eps": 1e-5, "use_clip_vision_embeds": True, **TINY}
    with open(os.path.join(folder, "promptnet", "config.json"), "w") as f:
        json.dump(config, f)
    if weights == "safetensors":
        safetensors.torch.save_file(sd, os.path.join(folder, "promptnet", "diffusion_pytorch_model.safetensors"))
    else:
        torch.save(sd, os.path.join(folder, "promptnet", "diffusion_pytorch_model.bin"))
    if vision:
        torch.manual_seed(seed)
        clip = CLIPModel(CLIPConfig(text_config=TEXT, vision_config=VISION, projection_dim=16))
        os.makedirs(os.path.join(folder, "openclip"), exist_ok=True)
        clip.config.to_json_file(os.path.join(folder, "openclip", "config.json"))
        vision_sd = {k: v.contiguous() for k, v in clip.state_dict().items()}
        if weights == "safetensors":
            safetensors.torch.save_file(vision_sd, os.path.join(folder, "openclip", "model.safetensors"))
        else:
            torch.save(vision_sd, os.path.join(folder, "openclip", "pytorch_model.bin"))
    return sd
