"""open_clip CLIP state dicts (HPS v2/v2.1 checkpoints) as transformers `CLIPModel`s, so the pack
needs no open_clip at run time.

The two implementations compute the same function once the weights are renamed:
- attention: open_clip's fused `attn.in_proj_weight` [3W, W] (and bias) is q, k, v stacked in that
  order; each becomes `self_attn.{q,k,v}_proj`. Scale 1/sqrt(head width) in both;
- MLP: `mlp.c_fc` / `mlp.c_proj` -> `mlp.fc1` / `mlp.fc2`; activation exact GELU (open_clip's
  `nn.GELU` unless the model is a "-quickgelu" one, which HPS's ViT-H-14 is not);
- layer norms: eps 1e-5 in both (`nn.LayerNorm` default, transformers' `layer_norm_eps`);
- image tower: conv patch embedding without bias, class token + learned positions, `ln_pre`
  (transformers' `pre_layrnorm`), the class token after `ln_post` (`post_layernorm`; a layer
  norm acts per token, so normalising all tokens then taking the first equals taking it first),
  projection `x @ visual.proj` = `visual_projection(x)` with weight `proj.T`;
- text tower: token + learned positions, causal mask, `ln_final` (`final_layer_norm`), the
  feature at the end-of-text token, projection `x @ text_projection` = `text_projection(x)` with
  weight `text_projection.T`.
Head counts are not stored in a state dict: they follow open_clip's model configs (text: width/64
heads; image: 16 heads from width 1280 up — ViT-H/g/bigG/e use head widths 80/88/104/112 — else
width/64).
"""
import re

import torch

# open_clip block names -> transformers names, inside one residual block
_BLOCK = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "attn.out_proj": "self_attn.out_proj",
          "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
_TOWERS = {"visual.transformer.resblocks.": "vision_model.encoder.layers.",
           "transformer.resblocks.": "text_model.encoder.layers."}
_PLAIN = {
    "logit_scale": "logit_scale",
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
}
_TRANSPOSED = {"visual.proj": "visual_projection.weight", "text_projection": "text_projection.weight"}
_IGNORED = {"attn_mask"}          # the causal mask, a buffer some versions saved; rebuilt by transformers


def is_open_clip(sd: dict) -> bool:
    return "visual.conv1.weight" in sd and "token_embedding.weight" in sd and "visual.proj" in sd


def _layers(sd: dict, prefix: str) -> int:
    found = {int(m.group(1)) for k in sd if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    if found != set(range(len(found))):
        raise ValueError(f"open_clip state dict: the blocks under {prefix} are not numbered 0..n-1.")
    return len(found)


def vision_heads(width: int) -> int:
    return 16 if width >= 1280 else max(1, width // 64)


def text_heads(width: int) -> int:
    return max(1, width // 64)


def clip_config(sd: dict):
    """A transformers CLIPConfig for an open_clip CLIP state dict (shapes from the weights)."""
    from transformers import CLIPConfig
    conv = sd["visual.conv1.weight"]
    v_width, patch = conv.shape[0], conv.shape[-1]
    grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    t_width = sd["token_embedding.weight"].shape[1]
    v_layers = _layers(sd, "visual.transformer.resblocks.")
    t_layers = _layers(sd, "transformer.resblocks.")
    common = dict(hidden_act="gelu", layer_norm_eps=1e-5, attention_dropout=0.0)
    vision = dict(hidden_size=v_width, num_hidden_layers=v_layers, num_attention_heads=vision_heads(v_width),
                  intermediate_size=sd["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
                  patch_size=patch, image_size=grid * patch, **common)
    text = dict(hidden_size=t_width, num_hidden_layers=t_layers, num_attention_heads=text_heads(t_width),
                intermediate_size=sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
                vocab_size=sd["token_embedding.weight"].shape[0],
                max_position_embeddings=sd["positional_embedding"].shape[0],
                bos_token_id=49406, eos_token_id=49407, pad_token_id=1, **common)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=sd["visual.proj"].shape[1])


def to_transformers(sd: dict) -> dict:
    """Rename (and split or transpose) an open_clip CLIP state dict into transformers CLIPModel keys."""
    out, unknown = {}, []
    for key, value in sd.items():
        if key in _IGNORED:
            continue
        if key in _PLAIN:
            out[_PLAIN[key]] = value
            continue
        if key in _TRANSPOSED:
            out[_TRANSPOSED[key]] = value.t().contiguous()
            continue
        tower = next((p for p in _TOWERS if key.startswith(p)), None)
        if tower is None:
            unknown.append(key)
            continue
        index, rest = key[len(tower):].split(".", 1)
        head = _TOWERS[tower] + index + "."
        if rest.startswith("attn.in_proj_"):                      # in_proj_weight / in_proj_bias
            kind = rest[len("attn.in_proj_"):]
            for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                out[f"{head}self_attn.{name}.{kind}"] = part.contiguous()
            continue
        module, _, param = rest.rpartition(".")
        if module not in _BLOCK:
            unknown.append(key)
            continue
        out[f"{head}{_BLOCK[module]}.{param}"] = value
    if unknown:
        raise ValueError(f"Not a plain open_clip CLIP state dict: unexpected keys such as {unknown[:3]} (only "
                         f"ViT image towers with the standard text tower, as in HPS v2, are read).")
    return out


def clip_model(sd: dict):
    """A transformers CLIPModel holding an open_clip CLIP state dict's weights (built without
    random initialisation: on the meta device, then the weights assigned)."""
    from transformers import CLIPModel
    config = clip_config(sd)
    with torch.device("meta"):
        model = CLIPModel(config)
    weights = to_transformers(sd)
    expected = set(model.state_dict())
    missing, extra = sorted(expected - set(weights)), sorted(set(weights) - expected)
    if missing or extra:
        raise ValueError(f"open_clip state dict does not fit a CLIP model: missing {missing[:3]}, "
                         f"unexpected {extra[:3]}.")
    model.load_state_dict(weights, strict=True, assign=True)
    return fill_position_ids(model).eval()


def fill_position_ids(model: torch.nn.Module) -> torch.nn.Module:
    """A transformers CLIP built on the meta device and loaded with assign=True keeps its
    non-persistent `position_ids` buffers on meta: give them their values (0..n-1)."""
    for module in model.modules():
        for name, buf in list(module._buffers.items()):
            if buf is not None and buf.is_meta:
                if name != "position_ids":
                    raise ValueError(f"CLIP loading: no value for buffer {name}.")
                module._buffers[name] = torch.arange(buf.shape[-1]).expand(buf.shape).clone()
    return model
