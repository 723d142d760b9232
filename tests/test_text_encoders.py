"""Loading, blending and interpolating fine-tuned text encoders (issue 6), on TinySD and a tiny
SDXL-shaped CLIP, through the nodes' execute as the executor calls it."""
import glob
import json
import math
import os
import shutil

import pytest
import safetensors.torch
import torch

import comfy.model_management as mm
import folder_paths
from texttune.nodes.text_encoders import BlendTextEncoders, LoadTextEncoder, file_choices
from texttune.trainers import files, text_encoders
from texttune.trainers.text_encoders import EncoderSpec, FullWeights

PROMPT = "a photo of a (dog:1.3) on a hill"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------------------------
# helpers
def te_dir():
    return folder_paths.get_folder_paths("text_encoders")[0]


def lora_dir():
    return folder_paths.get_folder_paths("loras")[0]


def hf_state_dict(clip, encoder="clip_l"):
    """One encoder of a CLIP in HF CLIPTextModel keys (the layout the core Save CLIP node writes)."""
    p = f"{encoder}.transformer."
    return {k[len(p):]: v.detach().clone() for k, v in clip.cond_stage_model.state_dict().items() if k.startswith(p)}


def weights(clip):
    """The weights a CLIP encodes with (its patches applied)."""
    mm.load_models_gpu([clip.load_model()], force_patch_weights=True)
    return {k: v.detach().clone() for k, v in clip.cond_stage_model.state_dict().items()}


def encode(clip, text=PROMPT):
    import nodes
    with torch.inference_mode():
        out = nodes.CLIPTextEncode().encode(clip, text)[0]
    assert len(out) == 1
    return out


def load(clip, name, strength=1.0, encoder="auto"):
    with torch.inference_mode():
        return LoadTextEncoder.execute(clip=clip, file=name, strength=strength, encoder=encoder)[0]


def blend_node(clips, weights_text, text=PROMPT, start=0.0, end=1.0):
    kw = dict(zip(["clip_a", "clip_b", "clip_c", "clip_d"], clips))
    with torch.inference_mode():
        return BlendTextEncoders.execute(text=text, weights=weights_text, start_percent=start, end_percent=end,
                                         **kw)[0]


def sample(model, positive, negative, steps=20, seed=3):
    import nodes
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    with torch.inference_mode():
        return nodes.common_ksampler(model, seed, steps, 5.0, "euler", "normal", positive, negative,
                                     latent)[0]["samples"].clone()


def save(tensors, name, folder=None):
    path = os.path.join(folder or te_dir(), name)
    if name.endswith(".safetensors"):
        files.save_safetensors(tensors, path)
    else:
        torch.save(tensors, path)
    return name


def sdxl_clip(tiny, seed):
    from test_integration_sdxl_text import tiny_sdxl_clip
    clip = tiny_sdxl_clip(tiny)
    tiny.init_weights_(clip.cond_stage_model, seed)
    return clip


@pytest.fixture()
def base(tiny):
    return tiny.make_clip([folder_paths.get_folder_paths("embeddings")[0]], seed=1)


@pytest.fixture()
def tuned(tiny):
    """(file name, the CLIP it came from): a 'fine-tuned' encoder = another TinySD CLIP's weights."""
    other = tiny.make_clip([folder_paths.get_folder_paths("embeddings")[0]], seed=11)
    return save(hf_state_dict(other), "tuned.safetensors"), other


# ---------------------------------------------------------------------------------------------
# loading
def test_strength_0_is_the_base_and_1_the_file_bit_for_bit(base, tuned):
    name, other = tuned
    base_w, base_e = weights(base), encode(base)
    zero, one = load(base, name, 0.0), load(base, name, 1.0)
    assert len(zero.patcher.patches) == len(one.patcher.patches) == len(hf_state_dict(other))
    w0, w1, other_w = weights(zero), weights(one), weights(other)
    assert all(torch.equal(w0[k], base_w[k]) for k in base_w)
    assert all(torch.equal(w1[k], other_w[k]) for k in other_w)
    e0, e1, eo = encode(zero), encode(one), encode(other)
    assert torch.equal(e0[0][0], base_e[0][0]) and torch.equal(e0[0][1]["pooled_output"], base_e[0][1]["pooled_output"])
    assert torch.equal(e1[0][0], eo[0][0]) and torch.equal(e1[0][1]["pooled_output"], eo[0][1]["pooled_output"])
    assert not torch.allclose(e1[0][0], base_e[0][0], atol=1e-3)
    # the input CLIP is left as it was
    assert not base.patcher.patches
    assert torch.equal(encode(base)[0][0], base_e[0][0])
    assert all(torch.equal(v, base_w[k]) for k, v in weights(base).items())


@pytest.mark.parametrize("strength", [0.5, 0.25, -1.0, 2.0])
def test_strength_interpolates_and_extrapolates_the_weights(base, tuned, strength):
    name, other = tuned
    base_w, other_w = weights(base), weights(other)
    w = weights(load(base, name, strength))
    for k in hf_state_dict(other):
        k = "clip_l.transformer." + k
        expected = (base_w[k] + other_w[k]) / 2 if strength == 0.5 else base_w[k] + strength * (other_w[k] - base_w[k])
        torch.testing.assert_close(w[k], expected)
    assert not torch.equal(w["clip_l.transformer.text_model.encoder.layers.0.mlp.fc1.weight"],
                           base_w["clip_l.transformer.text_model.encoder.layers.0.mlp.fc1.weight"])


def test_textcraftor_checkpoint_loads(base):
    g = torch.Generator().manual_seed(5)
    hf = {k: v for k, v in hf_state_dict(base).items() if k.startswith("text_model.")}   # CLIPTextModel, no projection
    sd = {"module." + k: torch.randn(v.shape, generator=g) * 0.05 for k, v in hf.items()}
    sd["module.text_model.embeddings.position_ids"] = torch.arange(77).unsqueeze(0)   # older transformers saved it
    name = save(sd, "tc_text_e_0_iter_10000.pth")
    loaded = text_encoders.read(os.path.join(te_dir(), name))
    assert isinstance(loaded, FullWeights) and loaded.format == "textcraftor" and len(loaded.tensors) == len(hf)
    base_w = weights(base)
    w = weights(load(base, name, 1.0))
    for k in hf:
        assert torch.equal(w["clip_l.transformer." + k], sd["module." + k])
    proj = "clip_l.transformer.text_projection.weight"
    assert torch.equal(w[proj], base_w[proj])                  # not in the file: stays the base's


def test_save_clip_output_loads(base, tiny):
    from comfy_extras.nodes_model_merging import CLIPSave
    other = tiny.make_clip(seed=12)
    with torch.inference_mode():
        CLIPSave().save(other, "clip/tt-saved")
    [path] = glob.glob(os.path.join(folder_paths.get_output_directory(), "clip", "tt-saved_clip_l_*.safetensors"))
    shutil.copy(path, os.path.join(te_dir(), "saved-by-clipsave.safetensors"))
    out = load(base, "saved-by-clipsave.safetensors", 1.0)
    assert torch.equal(encode(out)[0][0], encode(other)[0][0])


def hf_text_model(clip, tiny):
    """A transformers CLIPTextModel with the TinySD CLIP's weights (transformers 5 keys drop the
    `text_model.` prefix that earlier versions and CLIPSave files have)."""
    from transformers import CLIPTextConfig, CLIPTextModel
    cfg = CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, hidden_act="quick_gelu",
                         bos_token_id=49406, eos_token_id=49407, pad_token_id=1, **tiny.CLIP)
    model = CLIPTextModel(cfg)
    prefixed = any(k.startswith("text_model.") for k in model.state_dict())
    sd = {(k if prefixed else k[len("text_model."):]): v
          for k, v in hf_state_dict(clip).items() if k.startswith("text_model.")}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected and all(k.endswith("position_ids") for k in missing)
    return model.eval()


def classic_keys(sd):
    """{text_model.…: tensor} whatever layout transformers used."""
    return {(k if k.startswith("text_model.") else "text_model." + k): v for k, v in sd.items()
            if not k.endswith("position_ids")}


@pytest.mark.parametrize("where,rslora", [("text_encoders", False), ("loras", True)])
def test_peft_adapter_matches_peft_merged_model(base, tiny, where, rslora):
    import peft
    hf = hf_text_model(base, tiny)
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "out_proj", "fc1"],
                          rank_pattern={"fc1": 2}, alpha_pattern={"v_proj": 2}, use_rslora=rslora,
                          init_lora_weights=False)
    model = peft.get_peft_model(hf, cfg)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    folder = os.path.join(te_dir() if where == "text_encoders" else lora_dir(), f"texforce-{where}")
    model.save_pretrained(folder)
    ids = torch.tensor([[t for t, _ in base.tokenize("a photo of a dog")["l"][0]]])
    merged = model.merge_and_unload()
    with torch.no_grad():
        ref = merged(input_ids=ids)
    merged_sd = {k: v.detach().clone() for k, v in classic_keys(merged.state_dict()).items()}

    name = f"texforce-{where}/" if where == "text_encoders" else f"loras/texforce-{where}/"
    choices = file_choices()
    assert name in choices and not any(c.endswith("adapter_model.safetensors") for c in choices)
    out = load(base, name, 1.0)
    w = weights(out)
    for k, v in merged_sd.items():
        torch.testing.assert_close(w["clip_l.transformer." + k], v, rtol=1e-5, atol=1e-6)
    cond = encode(out, "a photo of a dog")[0]
    torch.testing.assert_close(cond[0], ref.last_hidden_state, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(cond[1]["pooled_output"], ref.pooler_output, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(cond[0], encode(base, "a photo of a dog")[0][0], atol=1e-2)   # the adapter acts
    # half strength: half of peft's weight change
    half = weights(load(base, name, 0.5))
    base_w = weights(base)
    q = "text_model.encoder.layers.1.self_attn.q_proj.weight"
    torch.testing.assert_close(half["clip_l.transformer." + q],
                               (base_w["clip_l.transformer." + q] + merged_sd[q]) / 2, rtol=1e-5, atol=1e-6)
    # the merged model saved by transformers itself (its own key layout) loads as full weights
    merged.save_pretrained(os.path.join(te_dir(), f"hf-merged-{where}"))
    w = weights(load(base, f"hf-merged-{where}/model.safetensors", 1.0))
    assert all(torch.equal(w["clip_l.transformer." + k], v) for k, v in merged_sd.items())


def test_sdxl_file_replaces_the_chosen_encoder(tiny):
    base, other = sdxl_clip(tiny, 5), sdxl_clip(tiny, 9)
    name = save(hf_state_dict(other, "clip_g"), "sdxl-g.safetensors")
    base_w, other_w = weights(base), weights(other)
    for choice in ("auto", "G"):
        w = weights(load(base, name, 1.0, choice))
        assert all(torch.equal(w[k], other_w[k] if k.startswith("clip_g.transformer.") else base_w[k]) for k in w)
    with pytest.raises(ValueError, match=r"Shape mismatch: 'sdxl-g.safetensors' is a CLIP text encoder \(width 64, "
                                         r"3 layers\), but the CLIP's clip_l is a CLIP text encoder \(width 32, "
                                         r"3 layers\).*\(L or G\)"):
        load(base, name, 1.0, "L")


def test_shape_mismatch_names_both_architectures(base, tiny):
    name = save(hf_state_dict(sdxl_clip(tiny, 9), "clip_g"), "for-sdxl-g.safetensors")
    with pytest.raises(ValueError, match=r"is a CLIP text encoder \(width 64, 3 layers\), but the CLIP's clip_l "
                                         r"is a CLIP text encoder \(width 32, 2 layers\)"):
        load(base, name, 1.0)
    assert not base.patcher.patches
    # the real families by name (shapes only, no weights needed)
    file = FullWeights("big-g.safetensors", {}, EncoderSpec(1280, 32, 77, 49408), "hf")
    encoders = {"clip_l": ("clip_l.", EncoderSpec(768, 12, 77, 49408))}
    with pytest.raises(ValueError, match=r"is OpenCLIP-bigG \(width 1280, 32 layers\), but the CLIP's clip_l is "
                                         r"CLIP-L \(width 768, 12 layers\)"):
        text_encoders.choose_encoder(encoders, file, "auto")
    long_clip = FullWeights("long.safetensors", {}, EncoderSpec(768, 12, 248, 49408), "hf")
    with pytest.raises(ValueError, match=r"CLIP-L \(width 768, 12 layers\) \(positions 77 vs 248\)"):
        text_encoders.choose_encoder(encoders, long_clip, "auto")


# ---------------------------------------------------------------------------------------------
# blending
@pytest.mark.parametrize("ws", ["0.3, 0.7", "0.5, 0.25, 0.25", "0.1 0.2 0.3 0.4"])
def test_blend_of_identical_encoders_equals_one_of_them(base, ws):
    n = len(ws.replace(",", " ").split())
    out = blend_node([base] + [base.clone() for _ in range(n - 1)], ws)
    ref = encode(base)
    assert len(out) == 1 and "start_percent" not in out[0][1]
    torch.testing.assert_close(out[0][0], ref[0][0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out[0][1]["pooled_output"], ref[0][1]["pooled_output"], rtol=1e-6, atol=1e-6)


def test_blend_is_the_weighted_sum_with_prompt_weights_and_embeddings(base, tuned):
    name, _ = tuned
    emb = os.path.join(folder_paths.get_folder_paths("embeddings")[0], "blendword.safetensors")
    files.save_safetensors({"emb_params": torch.randn(2, 32, generator=torch.Generator().manual_seed(4))}, emb)
    text = "a photo of embedding:blendword wearing a (red:1.4) hat"
    assert sum(not isinstance(t, int) for t, _ in base.tokenize(text)["l"][0]) == 2       # the embedding is in
    fine = load(base, name, 1.0)
    out = blend_node([base, fine], "-0.25, 1.25", text)
    ea, eb = encode(base, text), encode(fine, text)
    torch.testing.assert_close(out[0][0], -0.25 * ea[0][0] + 1.25 * eb[0][0])
    torch.testing.assert_close(out[0][1]["pooled_output"],
                               -0.25 * ea[0][1]["pooled_output"] + 1.25 * eb[0][1]["pooled_output"])
    assert not torch.allclose(out[0][0], eb[0][0], atol=1e-3)


def test_step_window_gives_entries_with_timestep_ranges(base, tuned):
    fine = load(base, tuned[0], 1.0)
    ea, plain = encode(base), blend_node([base, fine], "0.4, 0.6")
    out = blend_node([base, fine], "0.4, 0.6", start=0.4, end=1.0)
    assert [(e[1]["start_percent"], e[1]["end_percent"]) for e in out] == [(0.0, 0.4), (0.4, 1.0)]
    assert torch.equal(out[0][0], ea[0][0]) and torch.equal(out[0][1]["pooled_output"], ea[0][1]["pooled_output"])
    assert torch.equal(out[1][0], plain[0][0]) and torch.equal(out[1][1]["pooled_output"],
                                                               plain[0][1]["pooled_output"])
    middle = blend_node([base, fine], "0.4, 0.6", start=0.2, end=0.6)
    assert [(e[1]["start_percent"], e[1]["end_percent"]) for e in middle] == [(0.0, 0.2), (0.2, 0.6), (0.6, 1.0)]
    assert torch.equal(middle[2][0], ea[0][0])


def test_sampling_with_full_window_equals_plain_blend_and_a_window_composes_like_core_nodes(base, tuned, tiny):
    import nodes
    model, fine = tiny.make_model(), load(base, tuned[0], 1.0)
    ea, eb, negative = encode(base), encode(fine), encode(base, "")
    plain = [[0.5 * ea[0][0] + 0.5 * eb[0][0],
              {"pooled_output": 0.5 * ea[0][1]["pooled_output"] + 0.5 * eb[0][1]["pooled_output"]}]]
    full = sample(model, blend_node([base, fine], "0.5, 0.5", start=0.0, end=1.0), negative)
    torch.testing.assert_close(full, sample(model, plain, negative), rtol=1e-6, atol=1e-6)
    window = sample(model, blend_node([base, fine], "0.5, 0.5", start=0.4, end=1.0), negative)
    rng = nodes.ConditioningSetTimestepRange()
    core = nodes.ConditioningCombine().combine(rng.set_range(ea, 0.0, 0.4)[0], rng.set_range(plain, 0.4, 1.0)[0])[0]
    torch.testing.assert_close(window, sample(model, core, negative), rtol=1e-6, atol=1e-6)
    assert not torch.allclose(window, full, atol=1e-3)                  # the window changes the result
    assert not torch.allclose(window, sample(model, ea, negative), atol=1e-3)


# ---------------------------------------------------------------------------------------------
# bad input
class NotWeights:
    pass


def bad_files(tiny):
    lora = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
    return {
        "checkpoint": lambda path: tiny.save_checkpoint(path),
        "unet": lambda path: files.save_safetensors(tiny.make_model().model.diffusion_model.state_dict(), path),
        "lora": lambda path: files.save_safetensors({f"{lora}.lora_up.weight": torch.zeros(32, 4),
                                                     f"{lora}.lora_down.weight": torch.zeros(4, 32),
                                                     f"{lora}.alpha": torch.tensor(4.0)}, path),
        "vae": lambda path: files.save_safetensors(tiny.make_vae().get_sd(), path),
        "embedding": lambda path: files.save_safetensors({"emb_params": torch.zeros(2, 32)}, path),
        "other": lambda path: files.save_safetensors({"foo.weight": torch.zeros(3)}, path),
        "pickle": lambda path: torch.save({"x": NotWeights()}, path),
    }


@pytest.mark.parametrize("kind,match", [
    ("checkpoint", r"is not a text encoder: it is a full checkpoint .*Load Checkpoint"),
    ("unet", r"is not a text encoder: it is a diffusion model \(UNet\) file"),
    ("lora", r"is not a text encoder: it is a LoRA .*Load LoRA"),
    ("vae", r"is not a text encoder: it is a VAE"),
    ("embedding", r"is not a text encoder: it is a textual-inversion embedding.*models/embeddings"),
    ("other", r"No CLIP text-encoder weights found in 'other.safetensors' \(its keys: foo.weight\)"),
    ("pickle", r"other.pth was refused: it is not a plain weights file"),
])
def test_files_that_are_not_text_encoders_are_named(base, tiny, kind, match):
    name = ("other.pth" if kind == "pickle" else f"{kind}.safetensors")
    bad_files(tiny)[kind](os.path.join(te_dir(), name))
    with pytest.raises(ValueError, match=match):
        load(base, name)
    assert not base.patcher.patches


def test_missing_file_and_bad_strength_are_refused(base, tuned):
    with pytest.raises(ValueError, match=r"Text encoder 'nope.safetensors' was not found\. Put .* in .*text_encoders"):
        load(base, "nope.safetensors")
    for s in (-1.5, 2.5, math.nan):
        with pytest.raises(ValueError, match=r"strength .* is outside \[-1, 2\]"):
            load(base, tuned[0], s)
    for s in (-1.0, 2.0):
        assert load(base, tuned[0], s).patcher.patches


def test_unsupported_peft_adapters_are_refused(base):
    folder = os.path.join(te_dir(), "dora-adapter")
    os.makedirs(folder, exist_ok=True)
    key = "base_model.model.text_model.encoder.layers.0.self_attn.q_proj"
    safetensors.torch.save_file({f"{key}.lora_A.weight": torch.zeros(4, 32), f"{key}.lora_B.weight": torch.zeros(32, 4),
                                 f"{key}.lora_magnitude_vector": torch.ones(32)},
                                os.path.join(folder, "adapter_model.safetensors"))
    with open(os.path.join(folder, "adapter_config.json"), "w") as f:
        json.dump({"peft_type": "LORA", "r": 4, "lora_alpha": 4, "use_dora": True}, f)
    with pytest.raises(ValueError, match=r"'dora-adapter/' uses DoRA \(use_dora in adapter_config.json\)"):
        load(base, "dora-adapter/")
    with open(os.path.join(folder, "adapter_config.json"), "w") as f:
        json.dump({"peft_type": "LORA", "r": 4, "lora_alpha": 4}, f)
    with pytest.raises(ValueError, match=r"not LoRA matrices of linear layers: .*lora_magnitude_vector"):
        load(base, "dora-adapter/")


def test_blend_bad_inputs_are_named(base, tiny):
    with pytest.raises(ValueError, match=r"3 CLIPs are connected \(clip_a, clip_b, clip_c\) but only 2 weight"):
        blend_node([base, base, base], "0.5, 0.5")
    with pytest.raises(ValueError, match=r"3 weights are given but only 2 CLIPs are connected"):
        blend_node([base, base], "0.2, 0.3, 0.5")
    with pytest.raises(ValueError, match=r"clip_d is connected but clip_c is not"):
        with torch.inference_mode():
            BlendTextEncoders.execute(text="x", clip_a=base, clip_b=base, clip_d=base, weights="1, 1, 1",
                                      start_percent=0.0, end_percent=1.0)
    with pytest.raises(ValueError, match=r"Weight 'abc' is not a number"):
        blend_node([base, base], "0.5, abc")
    with pytest.raises(ValueError, match=r"Step window \[0.6, 0.4\] is empty"):
        blend_node([base, base], "0.5, 0.5", start=0.6, end=0.4)
    with pytest.raises(ValueError, match=r"different architectures: clip_a has clip_l: a CLIP text encoder \(width "
                                         r"32, 2 layers\), but clip_b has clip_g: .*width 64.*; clip_l: .*width 32, "
                                         r"3 layers"):
        blend_node([base, sdxl_clip(tiny, 5)], "0.5, 0.5")


def test_nodes_are_registered_with_tooltips_and_doc_pages():
    from texttune.nodes import NODES
    for node in (LoadTextEncoder, BlendTextEncoders):
        assert node in NODES
        schema = node.define_schema()
        assert schema.category == "TextTune/encoders"
        assert all(i.tooltip for i in schema.inputs), [i.id for i in schema.inputs if not i.tooltip]
        assert os.path.isfile(os.path.join(REPO, "web", "docs", schema.node_id + ".md"))
