"""PromptNet (trainers/promptnet.py, nodes/promptnet.py, its inputs on the fusion nodes) on TinySD.

The official module tree (ProFusion's diffusers fork, models/promptnet.py, read with its
unet_2d_blocks / resnet / transformer_2d / attention / embeddings) is written out below as
parameter names and shapes for any config (`official_keys`), independently of the model code, and
compared with our model at tiny size and at the released SD2-base size.
"""
import json
import os

import pytest
import safetensors.torch
import torch

import comfy.samplers
import folder_paths
from texttune.nodes import promptnet as promptnet_nodes
from texttune.nodes.fusion import ConceptPrompt, FusionGuider, KSamplerFusion
from texttune.nodes.promptnet import LoadPromptNet, TrainPromptNet
from texttune.trainers import engine, fusion
from texttune.trainers import promptnet as pn
from texttune.trainers.comfy_adapter import Diffusion
from texttune.trainers.lora import UnetLora
from texttune.trainers.runs import RunFolder
from tiny_promptnet import TINY, tiny_net, write_release

PROMPT = "a photo of holder on a beach"
SLOT = 4                                        # <start> a photo of holder
NODE_DEFAULTS = {"omega_1": 7.0, "omega_2": 5.0, "omega_f": 7.0, "gamma": 0.6, "fusion_passes": 1, "eta": 1.0,
                 "fusion_start_percent": 0.0, "fusion_end_percent": 1.0}


# ---------------------------------------------------------------------------------------------
# the official module tree, as names and shapes
def official_keys(cfg: dict) -> dict:
    chans, res, layers = cfg["block_out_channels"], cfg["res_block_out_channels"], cfg["layers_per_block"]
    cin, ctx, vision = cfg.get("in_channels", 4), cfg["cross_attention_dim"], cfg["vision_width"]
    rp, rk, words = cfg["region_proj_channel"], cfg["region_kernel_size"], cfg["prompt_channel"]
    linear_proj, temb, types = cfg["use_linear_projection"], chans[0] * 4, cfg["down_block_types"]
    keys = {}

    def conv(name, o, i, k, bias=True):
        keys[name + ".weight"] = (o, i, k, k)
        if bias:
            keys[name + ".bias"] = (o,)

    def linear(name, o, i, bias=True):
        keys[name + ".weight"] = (o, i)
        if bias:
            keys[name + ".bias"] = (o,)

    def norm(name, c):
        keys[name + ".weight"], keys[name + ".bias"] = (c,), (c,)

    def resnet(name, i, o):                              # resnet.py ResnetBlock2D
        norm(name + ".norm1", i)
        conv(name + ".conv1", o, i, 3)
        linear(name + ".time_emb_proj", o, temb)
        norm(name + ".norm2", o)
        conv(name + ".conv2", o, o, 3)
        if i != o:
            conv(name + ".conv_shortcut", o, i, 1)

    def transformer(name, c):                            # transformer_2d.py + attention.py, one block
        norm(name + ".norm", c)
        for p in ("proj_in", "proj_out"):
            (linear(f"{name}.{p}", c, c) if linear_proj else conv(f"{name}.{p}", c, c, 1))
        block = name + ".transformer_blocks.0"
        for n in ("norm1", "norm2", "norm3"):
            norm(f"{block}.{n}", c)
        for attn, kv in (("attn1", c), ("attn2", ctx)):
            linear(f"{block}.{attn}.to_q", c, c, bias=False)
            linear(f"{block}.{attn}.to_k", c, kv, bias=False)
            linear(f"{block}.{attn}.to_v", c, kv, bias=False)
            linear(f"{block}.{attn}.to_out.0", c, c)
        linear(f"{block}.ff.net.0.proj", 8 * c, c)       # GEGLU: inner 4c, doubled
        linear(f"{block}.ff.net.2", c, 4 * c)

    conv("conv_in", chans[0], cin, 3)
    linear("time_embedding.linear_1", temb, chans[0])
    linear("time_embedding.linear_2", temb, temb)
    conv("promptnet_cond_embedding.conv_in", chans[0], cin, 3)
    conv("promptnet_cond_embedding.conv_out", chans[0], chans[0], 3)
    linear("vision_embedding", ctx, vision)
    down = max(2 ** (len(types) - 1), 8)
    conv("first_prompt_projection", rp, chans[0], down)
    heads = [(chans[0], res[0])]
    for i, kind in enumerate(types):
        final = i == len(types) - 1
        for j in range(layers):
            resnet(f"down_blocks.{i}.resnets.{j}", (chans[i - 1] if i else chans[0]) if j == 0 else chans[i], chans[i])
            if kind == "CrossAttnDownBlock2D":
                transformer(f"down_blocks.{i}.attentions.{j}", chans[i])
        if not final:
            conv(f"down_blocks.{i}.downsamplers.0.conv", chans[i], chans[i], 3)
            down //= 2
        conv(f"down_prompt_projections.{i}", rp, chans[i], down)
        heads += [(chans[i], res[i])] * (layers + (0 if final else 1))
    for j, (a, b) in enumerate(heads):
        conv(f"residual_projections.{j}", b, a, 1)
        conv(f"residual_projections_2.{j}", b, b, 1, bias=False)
    for j in range(2):
        resnet(f"mid_block.resnets.{j}", chans[-1], chans[-1])
    transformer("mid_block.attentions.0", chans[-1])
    conv("mid_prompt_projection", rp, chans[-1], down)
    conv("mid_residual_projection", res[-1], chans[-1], 1)
    conv("mid_residual_projection_2", res[-1], res[-1], 1, bias=False)
    conv("region_prompt_output", words, (len(types) + 2) * rp, rk)
    return keys


def shapes(module) -> dict:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("linear_proj", [True, False], ids=["linear-proj", "conv-proj"])
def test_tiny_model_has_the_official_names_and_shapes(linear_proj):
    cfg = pn.read_config({**TINY, "use_linear_projection": linear_proj, "vision_width": 24})
    model = pn.PromptNetModel(cfg, device="meta")
    assert shapes(model) == official_keys(cfg)


def test_released_sd2_base_layout_has_the_official_names_and_shapes():
    cfg = pn.sd2_base_config()
    model = pn.PromptNetModel(cfg, device="meta")
    expected = official_keys(cfg)
    assert shapes(model) == expected
    # the release's tell-tale shapes: 1280-wide OpenCLIP-H tokens, six 128-channel maps -> one 1024-d word
    assert expected["vision_embedding.weight"] == (1024, 1280)
    assert expected["region_prompt_output.weight"] == (1024, 6 * 128, 8, 8)
    assert expected["first_prompt_projection.weight"] == (128, 320, 8, 8)
    assert expected["down_prompt_projections.3.weight"] == (128, 1280, 1, 1)
    assert pn.word_count(cfg, 64, 64) == 1


# ---------------------------------------------------------------------------------------------
# fixtures: a tiny release folder in a redirected models/promptnet/
@pytest.fixture(scope="module")
def models_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("promptnet_models"))
    saved = folder_paths.folder_names_and_paths.get("promptnet")
    folder_paths.folder_names_and_paths["promptnet"] = ([root], set(promptnet_nodes.EXTENSIONS))
    yield root
    folder_paths.folder_names_and_paths["promptnet"] = saved


@pytest.fixture(scope="module")
def release(models_root):
    return write_release(os.path.join(models_root, "tiny-release"))


@pytest.fixture(scope="module")
def promptnet(release):
    with torch.inference_mode():
        return LoadPromptNet.execute("tiny-release/")[0]


@pytest.fixture(scope="module")
def models(tiny):
    return tiny.make_model(), tiny.make_clip(), tiny.make_vae()


def image(seed, size=64):
    return torch.rand(1, size, size, 3, generator=torch.Generator().manual_seed(seed))


def encode(clip, text):
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))


# ---------------------------------------------------------------------------------------------
# loading
@pytest.mark.parametrize("weights", ["safetensors", "bin"])
def test_released_folder_loads_through_the_node(models_root, weights):
    written = write_release(os.path.join(models_root, f"rel-{weights}"), weights, seed=3)
    assert f"rel-{weights}/" in promptnet_nodes.model_choices()
    with torch.inference_mode():
        loaded = LoadPromptNet.execute(f"rel-{weights}/")[0]
    got = loaded.state_dict()
    assert set(got) == set(written)                                    # no missing, no unexpected keys
    assert all(torch.equal(got[k], written[k]) for k in written)
    assert loaded.text_width == 32 and loaded.vision_source == f"rel-{weights}/"
    tokens = loaded.image_tokens(image(0))
    assert tokens.shape == (1, 1 + (32 // 8) ** 2, 32)                 # class token + 4x4 patches


def test_sstar_depends_on_reference_xt_and_t(promptnet):
    net = promptnet.net
    g = torch.Generator().manual_seed(0)
    ref, x1, x2 = (torch.randn(1, 4, 8, 8, generator=g) for _ in range(3))
    tokens = torch.randn(1, 17, 32, generator=g)
    with torch.no_grad():
        base = net(ref, torch.tensor([500.0]), tokens, x1)
        other_t = net(ref, torch.tensor([100.0]), tokens, x1)
        other_x = net(ref, torch.tensor([500.0]), tokens, x2)
        other_ref = net(ref + 1, torch.tensor([500.0]), tokens, x1)
        batch = net(ref, torch.tensor([500.0, 100.0]), tokens, torch.cat([x1, x1]))
    assert base.shape == (1, 1, 32)
    for other in (other_t, other_x, other_ref):
        assert (other - base).abs().max() > 1e-4
    assert torch.allclose(batch, torch.cat([base, other_t]), atol=1e-5)   # per-sample t and x_t


# ---------------------------------------------------------------------------------------------
# S* in the prompt
def test_injection_puts_sstar_where_the_encoder_reads_it(models):
    """S* − pos_emb[slot] goes in; after ComfyUI adds the position embedding the encoder reads S*
    itself at the slot and the plain prompt everywhere else, and the result is what encoding the
    same token rows by hand gives."""
    _, clip, _ = models
    prompt = pn.PlaceholderPrompt(clip, PROMPT, "holder")
    words = torch.randn(2, 1, 32, generator=torch.Generator().manual_seed(5))
    seen = []
    encoder = clip.cond_stage_model.clip_l.transformer.text_model.encoder
    hook = encoder.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    try:
        cond, slots = prompt.encode(words)
        plain = clip.encode_from_tokens(clip.tokenize(PROMPT))
    finally:
        hook.remove()
    injected, reference = seen[0], seen[-1]
    assert slots == [SLOT] and cond.shape == (2, 77, 32)
    assert torch.allclose(injected[:, SLOT], words[:, 0], atol=1e-5, rtol=0)
    others = [i for i in range(77) if i != SLOT]
    assert torch.equal(injected[:, others], reference.expand(2, -1, -1)[:, others])
    pos = clip.cond_stage_model.clip_l.transformer.text_model.embeddings.position_embedding.weight.float()
    for b in range(2):
        tokens = clip.tokenize(PROMPT)
        tokens["l"][0][SLOT] = (words[b, 0] - pos[SLOT], 1.0)
        assert torch.allclose(cond[b], clip.encode_from_tokens(tokens)[0], atol=1e-6)
    assert not torch.allclose(cond[0], plain[0], atol=1e-3)


def test_several_words_replace_the_placeholder_and_keep_77_tokens(models):
    _, clip, _ = models
    prompt = pn.PlaceholderPrompt(clip, PROMPT, "holder")
    pos = prompt.position_embedding("cpu")
    words = torch.randn(4, 32)
    tokens, slots = prompt.tokens(words, pos)
    assert slots == [SLOT, SLOT + 1, SLOT + 2, SLOT + 3]
    row = tokens["l"][0]
    assert sum(t[0].shape[0] if isinstance(t[0], torch.Tensor) else 1 for t in row) == 77
    assert [t[0] for t in row[SLOT + 1:SLOT + 4]] == [t[0] for t in clip.tokenize(PROMPT)["l"][0][SLOT + 1:SLOT + 4]]


# ---------------------------------------------------------------------------------------------
# S* in the fusion sampler
def ksampler(model, positive, negative, pn_inputs, steps=3, seed=0, **kw):
    with torch.inference_mode():
        return KSamplerFusion.execute(model=model, seed=seed, steps=steps, scheduler="ddim_uniform",
                                      positive=positive, negative=negative,
                                      latent_image={"samples": torch.zeros(1, 4, 8, 8)}, denoise=1.0,
                                      **pn_inputs, **{**NODE_DEFAULTS, **kw})[0]["samples"]


@pytest.fixture(scope="module")
def conds(models):
    _, clip, _ = models
    with torch.inference_mode():
        positive = ConceptPrompt.execute(clip, PROMPT, "holder")[0]
    return positive, encode(clip, "")


def test_sstar_is_recomputed_at_every_evaluation(models, conds, promptnet):
    model, _, vae = models
    positive, negative = conds
    calls = []

    def record(module, args, out):
        calls.append((args[1].clone(), args[3].clone(), out.clone()))
    hook = promptnet.net.register_forward_hook(record)
    try:
        out = ksampler(model, positive, negative, {"promptnet": promptnet, "promptnet_image": image(1), "vae": vae})
    finally:
        hook.remove()
    assert torch.isfinite(out).all()
    ms = model.get_model_object("model_sampling")
    sigmas = comfy.samplers.calculate_sigmas(ms, "ddim_uniform", 3)
    expected_t = [float(ms.timestep(s)) for s in sigmas[:-1] for _ in range(2)]   # fusion pass, refinement
    assert [float(t[0]) for t, _, _ in calls] == expected_t
    for (_, x_a, s_a), (_, x_b, s_b) in zip(calls, calls[1:]):
        assert not torch.equal(x_a, x_b)                                   # a new x_t each time ...
        assert (s_a - s_b).abs().max() > 1e-6                              # ... and a new S*


def test_output_follows_the_reference_image(models, conds, promptnet):
    model, _, vae = models
    positive, negative = conds
    runs = [ksampler(model, positive, negative, {"promptnet": promptnet, "promptnet_image": image(i), "vae": vae})
            for i in (1, 1, 2)]
    assert torch.equal(runs[0], runs[1])
    assert (runs[0] - runs[2]).abs().max() > 1e-4
    plain = ksampler(model, positive, negative, {})
    assert (runs[0] - plain).abs().max() > 1e-4


def test_one_reference_image_per_latent_of_the_batch(models, conds, promptnet):
    model, _, vae = models
    positive, negative = conds

    def run(images):
        with torch.inference_mode():
            return KSamplerFusion.execute(model=model, seed=0, steps=3, scheduler="ddim_uniform", positive=positive,
                                          negative=negative, latent_image={"samples": torch.zeros(2, 4, 8, 8)},
                                          denoise=1.0, promptnet=promptnet, promptnet_image=images, vae=vae,
                                          **NODE_DEFAULTS)[0]["samples"]
    same, mixed = run(torch.cat([image(1), image(1)])), run(torch.cat([image(1), image(2)]))
    assert torch.allclose(same[0], mixed[0], atol=1e-5)                  # S* of each latent from its own image
    assert (same[1] - mixed[1]).abs().max() > 1e-4
    with pytest.raises(ValueError, match="3 images for a batch of 2"):
        run(torch.cat([image(1)] * 3))


def test_guider_node_equals_the_ksampler_node_with_promptnet(models, conds, promptnet):
    from comfy_extras.nodes_custom_sampler import Noise_RandomNoise, SamplerCustomAdvanced
    model, _, vae = models
    positive, negative = conds
    inputs = {"promptnet": promptnet, "promptnet_image": image(1), "vae": vae}
    guider = FusionGuider.execute(model=model, positive=positive, negative=negative, **inputs, **NODE_DEFAULTS)[0]
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "ddim_uniform", 3)
    with torch.inference_mode():
        out = SamplerCustomAdvanced.execute(Noise_RandomNoise(0), guider, comfy.samplers.sampler_object("ddim"),
                                            sigmas, {"samples": torch.zeros(1, 4, 8, 8)})[0]["samples"]
    assert torch.equal(out, ksampler(model, positive, negative, inputs))


def test_gamma_scales_the_sstar_slot_of_the_concept_prompt(models, conds, promptnet):
    model, _, vae = models
    positive, _ = conds
    sstar = pn.SStar(model, promptnet, image(1), vae)
    pos, concept = sstar.conditioning(positive, fusion.CONCEPT_KEY, 0.5)
    assert pos[0][1][pn.PROMPTNET_KEY]["gamma"] == 1.0 and concept[0][1][pn.PROMPTNET_KEY]["gamma"] == 0.5
    assert fusion.CONCEPT_KEY not in concept[0][1]
    assert promptnet.patcher in pos[0][1]["additional_models"]
    cond = torch.randn(1, 77, 32)
    scaled = pn.scale_slots(cond, [SLOT], 0.5)
    assert torch.equal(scaled[:, SLOT], cond[:, SLOT] * 0.5)
    assert torch.equal(scaled[:, SLOT + 1:], cond[:, SLOT + 1:])


# ---------------------------------------------------------------------------------------------
# bad input
def wide_promptnet(promptnet) -> pn.PromptNet:
    """A PromptNet making 48-wide words (TinySD reads 32), sharing the tiny release's vision tower."""
    cfg = {**TINY, "prompt_channel": 48, "vision_width": 32}
    return pn.PromptNet(pn.build(pn.read_config(cfg), tiny_net(cfg).state_dict(), "test"), promptnet.vision_patcher,
                        "wide.safetensors", "tiny-release/")


def test_text_width_mismatch_names_both_widths(models, conds, promptnet):
    model, _, vae = models
    positive, negative = conds
    with pytest.raises(ValueError, match=r"width 48 .*text of width 32"):
        ksampler(model, positive, negative, {"promptnet": wide_promptnet(promptnet), "promptnet_image": image(1),
                                             "vae": vae})


def test_missing_files_name_the_folder_and_the_files(models_root):
    write_release(os.path.join(models_root, "no-vision"), vision=False)
    with pytest.raises(FileNotFoundError, match=r"no-vision has no openclip/ folder.*openclip/config\.json"):
        LoadPromptNet.execute("no-vision/")
    half = os.path.join(models_root, "no-weights", "promptnet")
    os.makedirs(half)
    with open(os.path.join(half, "config.json"), "w") as f:
        json.dump(TINY, f)
    with pytest.raises(FileNotFoundError, match=r"no-weights.promptnet has no diffusion_pytorch_model\.safetensors"):
        LoadPromptNet.execute("no-weights/")
    with pytest.raises(FileNotFoundError, match=r"'absent/' is not in .*promptnet_models"):
        LoadPromptNet.execute("absent/")


def test_placeholder_and_marks_are_required(models, conds, promptnet):
    model, clip, vae = models
    _, negative = conds
    inputs = {"promptnet": promptnet, "promptnet_image": image(1), "vae": vae}
    with torch.inference_mode():
        no_holder = ConceptPrompt.execute(clip, "a photo of a dog", "dog")[0]
    with pytest.raises(ValueError, match="does not contain the placeholder word 'holder'"):
        ksampler(model, no_holder, negative, inputs)
    with pytest.raises(ValueError, match="Concept Prompt"):
        ksampler(model, encode(clip, PROMPT), negative, inputs)
    with pytest.raises(ValueError, match="connect vae"):
        ksampler(model, conds[0], negative, {"promptnet": promptnet, "promptnet_image": image(1)})
    with pytest.raises(ValueError, match="only used with a PromptNet"):
        ksampler(model, conds[0], negative, {"promptnet_image": image(1)})


# ---------------------------------------------------------------------------------------------
# training
@pytest.mark.parametrize("with_lora, lr, factor", [(False, 3e-3, 1.0), (True, 1e-2, 0.9)],
                         ids=["promptnet", "promptnet+lora"])
def test_training_lowers_the_loss(models, promptnet, tmp_path, with_lora, lr, factor):
    """Mean loss over the very draws the steps make (same t, noise), before and after training. The
    tiny UNet reads its context weakly, so PromptNet alone moves the loss little (measured: −1.3 %),
    with the LoRA much more (−22 %)."""
    model, clip, vae = models
    diffusion = Diffusion(model)
    steps = 24
    with torch.inference_mode(False):
        pixels = image(4)
        latents = diffusion.to_model_latents(vae.encode(pixels).float()).clone()
        tokens = promptnet.image_tokens(pixels)
        lora = UnetLora(model, pn.LORA_TARGETS, 4, device=diffusion.device) if with_lora else None
        method = pn.PromptNetTraining(diffusion, pn.PlaceholderPrompt(clip, "a photo of holder", "holder"),
                                      promptnet, latents, latents, tokens, tokens, flip=False, lora=lora, lora_lr=lr)

        def mean_loss():
            with method.session(), torch.no_grad():
                return sum(float(method.loss(s, engine.step_generator(0, s))[0]) for s in range(steps)) / steps
        before = mean_loss()
        engine.train(method, RunFolder(str(tmp_path), "run", {}), steps=steps, schedule=engine.Schedule(lr, steps),
                     seed=0)
        after = mean_loss()
    assert after < factor * before, (before, after)
    trained, start = method.state_dict(), promptnet.state_dict()
    assert not torch.equal(trained["region_prompt_output.weight"], start["region_prompt_output.weight"])
    assert torch.equal(trained["residual_projections.0.weight"], start["residual_projections.0.weight"])


def train_node(models, promptnet, name, steps, run_name="", lora=True):
    model, clip, vae = models
    with torch.inference_mode():
        return TrainPromptNet.execute(promptnet=promptnet, model=model, clip=clip, vae=vae, images=image(4),
                                      name=name, prompt="a photo of holder", placeholder="holder", steps=steps,
                                      learning_rate=1e-3, train_lora=lora, lora_rank=4, lora_learning_rate=1e-3,
                                      batch_size=1, resolution=64, flip=True, seed=0, save_every=0,
                                      run_name=run_name)


def test_trainer_files_load_back(models, promptnet, models_root):
    import nodes
    model, clip, _ = models
    before = promptnet.state_dict()
    out = train_node(models, promptnet, "pn-files", 3)
    trained, out_model, name, losses = out[0], out[1], out[2], out[3]
    assert name == "pn-files" and len(losses["loss"]) == 3
    assert all(torch.equal(before[k], v) for k, v in promptnet.state_dict().items())      # input unchanged
    assert "pn-files.safetensors" in promptnet_nodes.model_choices()
    with torch.inference_mode():
        loaded = LoadPromptNet.execute("pn-files.safetensors")[0]
    assert loaded.vision_source == "tiny-release/"
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in trained.state_dict().items())
    assert any(not torch.equal(before[k], v) for k, v in trained.state_dict().items())
    lora_file = os.path.join(folder_paths.get_folder_paths("loras")[0], "pn-files.safetensors")
    lora_sd = safetensors.torch.load_file(lora_file)
    modules = {k.split(".")[0] for k in lora_sd}
    assert modules and all(k.startswith("lora_unet_") and k.endswith(("to_q", "to_k", "to_v")) for k in modules)
    core, _ = nodes.LoraLoader().load_lora(model, clip, "pn-files.safetensors", 1.0, 0.0)
    assert len(core.patches) == len(modules) and len(out_model.patches) == len(modules)
    assert not model.patches                                                              # input MODEL unchanged


def test_cancel_saves_and_resume_is_exact(models, promptnet, models_root):
    import comfy.model_management as mm
    from interrupts import interrupt_at
    from texttune.trainers import files
    lora_file = os.path.join(folder_paths.get_folder_paths("loras")[0], "pn-cut.safetensors")
    with interrupt_at(2), pytest.raises(mm.InterruptProcessingException):
        train_node(models, promptnet, "pn-cut", 4, run_name="pn-cut")
    for path in (os.path.join(models_root, "pn-cut.safetensors"), lora_file):
        assert files.load_safetensors(path)[1]["steps"] == "2"                # cancel saved what was learnt
    resumed = train_node(models, promptnet, "pn-cut", 4, run_name="pn-cut")
    straight = train_node(models, promptnet, "pn-straight", 4, run_name="pn-straight")
    a, b = resumed[0].state_dict(), straight[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed[3]["loss"] == straight[3]["loss"]
    lora_a = safetensors.torch.load_file(lora_file)
    lora_b = safetensors.torch.load_file(lora_file.replace("pn-cut", "pn-straight"))
    assert all(torch.equal(lora_a[k], lora_b[k]) for k in lora_b)


def test_trainer_refuses_bad_input(models, promptnet, models_root):
    model, clip, vae = models

    def train(net=promptnet, placeholder="holder", resolution=64):
        with torch.inference_mode():
            TrainPromptNet.execute(promptnet=net, model=model, clip=clip, vae=vae, images=image(4), name="pn-bad",
                                   prompt="a photo of holder", placeholder=placeholder, steps=1, learning_rate=1e-3,
                                   train_lora=False, lora_rank=4, lora_learning_rate=1e-3, batch_size=1,
                                   resolution=resolution, flip=True, seed=0, save_every=0, run_name="")
    with pytest.raises(ValueError, match="does not contain the placeholder word 'sks'"):
        train(placeholder="sks")
    with pytest.raises(ValueError, match=r"width 48 .*text of width 32"):
        train(net=wide_promptnet(promptnet))
    with pytest.raises(ValueError, match=r"latents of at least 8x8 .*got a 4x4 latent"):
        train(resolution=32)
    assert not os.path.exists(os.path.join(models_root, "pn-bad.safetensors"))           # nothing half-made


# ---------------------------------------------------------------------------------------------
def test_every_input_has_a_tooltip_and_a_doc_page():
    docs = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "web", "docs")
    for node in (LoadPromptNet, TrainPromptNet, FusionGuider, KSamplerFusion):
        schema = node.define_schema()
        missing = [i.id for i in schema.inputs if not i.tooltip]
        assert not missing, f"{schema.node_id}: no tooltip on {missing}"
        assert os.path.isfile(os.path.join(docs, schema.node_id + ".md"))
    ids = [i.id for i in KSamplerFusion.define_schema().inputs]
    assert {"promptnet", "promptnet_image", "vae", "placeholder"} <= set(ids)
