"""TextBoost on TinySD, in process, through the nodes' execute as the executor calls them; the LoRA
and augmentation parts on their own."""
import os

import pytest
import torch

import comfy.model_management as mm
import comfy.sd
import comfy.sd1_clip
import folder_paths
from interrupts import interrupt_at
from texttune.nodes.textboost import LoadTextBoost, TrainTextBoost
from texttune.trainers import augment, files
from texttune.trainers.comfy_adapter import Diffusion, TextEncoder, trainable_session
from texttune.trainers.lora import TextLora, parse_targets
from texttune.trainers.textboost import TextBoost, aug_marker, load_prior_captions
from texttune.trainers.textual_inversion import MARKER

DEFAULTS = dict(class_word="dog", lora_rank=4, lora_targets="q, k, v, out, fc1, fc2", augmentation_tokens=True,
                kp_weight=0.1, snr_timesteps=True, steps=4, batch_size=2, lora_learning_rate=1e-3,
                token_learning_rate=1e-3, template_set="textboost", resolution=64, seed=0, save_every=2, run_name="")


def image(seed=0):
    return torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(seed))


@pytest.fixture()
def models(tiny):
    emb_dir = folder_paths.get_folder_paths("embeddings")[0]
    return tiny.make_model(), tiny.make_clip([emb_dir]), tiny.make_vae()


def train(models, name, **kw):
    m, c, v = models
    args = {**DEFAULTS, "token_name": name, **kw}
    with torch.inference_mode():
        return TrainTextBoost.execute(model=[m], clip=[c], vae=[v], images=[args.pop("images", image())],
                                      **{k: [val] for k, val in args.items()})


def saved(kind, name):
    return os.path.join(folder_paths.get_folder_paths(kind)[0], name + ".safetensors")


def run_dir(name):
    return os.path.join(folder_paths.get_output_directory(), "texttune", name)


def encode(clip, text):
    with torch.inference_mode():
        return clip.encode_from_tokens(clip.tokenize(text))


class _Clip:
    def __init__(self, cond_stage_model):
        self.cond_stage_model = cond_stage_model


def test_trainable_count_for_real_clip_l_shapes():
    # CLIP-L (12 layers, width 768, MLP 3072) with random weights, no download
    real = comfy.sd1_clip.SD1ClipModel(device="cpu", dtype=torch.float16)
    lora = TextLora(_Clip(real), parse_targets("q, k, v, out, fc1, fc2"), rank=4)
    assert lora.count() == 663_552
    assert len(lora.modules) == 12 * 6
    assert TextLora(_Clip(real), parse_targets("q,k,v"), rank=4).count() == 12 * 3 * 4 * (768 + 768)


@pytest.mark.parametrize("targets,match", [("q, z", "unknown z"), ("", "none given")])
def test_unknown_targets_list_the_valid_ones(targets, match):
    with pytest.raises(ValueError, match=f"{match}.*Valid targets: q, k, v, out, fc1, fc2"):
        parse_targets(targets)


def test_lora_file_loads_in_comfy_and_changes_exactly_the_targeted_weights(models):
    m, c, _ = models
    before = encode(c, "a photo of a dog")
    out = train(models, "tb-a", steps=4)
    clip_out, name, words, losses = out.result
    assert (name, words) == ("tb-a", "embedding:tb-a dog")
    assert set(losses) == {"loss", "diffusion", "kp"} and len(losses["loss"]) == 4
    sd, meta = files.load_safetensors(saved("loras", "tb-a"))
    assert meta["ss_network_dim"] == "4" and meta["class_word"] == "dog"
    assert all(k.startswith("lora_te_text_model_encoder_layers_") for k in sd)
    assert len(sd) == 2 * 6 * 3                              # TinySD: 2 layers x 6 targets x (down, up, alpha)
    assert any(float(v.abs().max()) > 0 for k, v in sd.items() if k.endswith("lora_up.weight"))

    # the core loader's path (LoraLoader with strength_model 0) patches exactly the targeted weights
    _, lora_clip = comfy.sd.load_lora_for_models(None, c, sd, 0.0, 1.0)
    patched = set(lora_clip.patcher.patches)
    targets = {f"clip_l.transformer.text_model.encoder.layers.{i}.{t}.weight" for i in range(2)
               for t in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
                         "mlp.fc1", "mlp.fc2")}
    assert patched == targets

    # ... and gives the encoder the training saw: the node's output CLIP equals the core-loaded one
    plain = "a photo of a dog on the beach"
    assert torch.allclose(encode(clip_out, plain), encode(lora_clip, plain), atol=1e-6)
    assert not torch.allclose(encode(clip_out, plain), encode(c, plain), atol=1e-4)
    emb, _ = files.load_safetensors(saved("embeddings", "tb-a"))
    assert list(emb) == ["emb_params"] and emb["emb_params"].shape == (1, 32)
    with_word = encode(clip_out, "a photo of embedding:tb-a dog")
    assert not torch.allclose(with_word, encode(clip_out, "a photo of a dog"))
    # the input CLIP is untouched
    assert torch.equal(before, encode(c, "a photo of a dog"))
    # the run folder keeps the augmentation tokens too
    run, _ = files.load_safetensors(os.path.join(run_dir("textboost-tb-a"), "textboost.safetensors"))
    assert {f"token.{n}.clip_l" for n in augment.TOKENS} <= set(run)

    # the loader node applies both files in one step
    loaded, words2 = LoadTextBoost.execute(clip=c, lora_name="tb-a.safetensors", strength=1.0).result
    assert words2 == "embedding:tb-a dog"
    assert torch.allclose(encode(loaded, "a photo of embedding:tb-a dog"), with_word, atol=1e-6)


def test_training_encoder_equals_lora_applied_by_comfy(models):
    """The LoRA as trained (forward wrappers) and as ComfyUI applies the saved file give one encoder."""
    _, c, _ = models
    lora = TextLora(c, parse_targets("q, v, fc2"), rank=2, seed=3)
    with torch.no_grad():
        for p in lora.parameters().values():
            p.normal_(0, 0.2)
    text = TextEncoder(c)
    with torch.inference_mode(False), trainable_session([], [c]), lora.applied():
        ours, _ = text.encode(c.tokenize("a red bicycle"))
    _, comfy_clip = comfy.sd.load_lora_for_models(None, c, lora.kohya_state_dict(), 0.0, 1.0)
    assert torch.allclose(ours.detach().cpu(), encode(comfy_clip, "a red bicycle"), atol=1e-5)


def test_kp_loss_is_zero_at_start_and_grows_when_the_encoder_moves(models):
    m, c, _ = models
    diffusion, text = Diffusion(m), TextEncoder(c)
    with torch.inference_mode(False):
        lat = torch.randn(2, 4, 8, 8)
        lora = TextLora(c, parse_targets("q, k, v, out, fc1, fc2"), rank=4)
        method = TextBoost(diffusion, text, lat, [[], []], ["a {}"], "dog", "dog", ["a cat on a sofa"], lora, 2)
        caps = ["a cat on a sofa", "", "a photo of a dog"]
        with method.session():
            start = float(method.kp_loss(caps).detach())
            with torch.no_grad():
                for p in lora.parameters().values():
                    p.normal_(0, 0.3)
            moved = float(method.kp_loss(caps).detach())
    assert start < 1e-6
    assert moved > 1e-3


def test_paired_augmentation_pairs_image_and_caption():
    x = torch.rand(1, 3, 32, 32)
    seen = {}
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        y, edits = augment.augment_one(x, g)
        names = [e.name for e in edits]
        for n in names:
            seen[n] = seen.get(n, 0) + 1
        if names == ["hflip"]:
            assert torch.allclose(y, x.flip(-1))
        if "grayscale" in names:
            assert torch.allclose(y[:, 0], y[:, 1]) and torch.allclose(y[:, 1], y[:, 2])
    assert set(seen) == set(augment.TOKENS)
    words = {n: aug_marker(n) for n in augment.TOKENS}
    cap = augment.render("a dog", [augment.Edit("zoom-in", "prefix"), augment.Edit("grayscale", "suffix")], words)
    assert cap == "texttuneaugzoomin a dog, texttuneauggrayscale"
    plain = augment.render("a dog", [augment.Edit("left", "suffix", " ")], {n: t.plain for n, t in augment.TOKENS.items()})
    assert plain == "a dog on the left"
    src = torch.rand(2, 32, 32, 3)
    a, ea = augment.augmented_pool(src, 6, seed=5)
    b, eb = augment.augmented_pool(src, 6, seed=5)
    assert a.shape == (6, 32, 32, 3) and torch.equal(a, b) and ea == eb


def test_augmentation_tokens_get_vectors_and_captions_use_them(models):
    m, c, _ = models
    diffusion, text = Diffusion(m), TextEncoder(c)
    with torch.inference_mode(False):
        lora = TextLora(c, ["q"], rank=1)
        on = TextBoost(diffusion, text, torch.zeros(1, 4, 8, 8), [[]], ["a {}"], "dog", "red dog", ["x"], lora, 1)
        off = TextBoost(diffusion, text, torch.zeros(1, 4, 8, 8), [[]], ["a {}"], "dog", "dog", ["x"], lora, 1,
                        aug_tokens=False)
    assert on.tokens[MARKER]["clip_l"].shape == (2, 32)                      # one vector per init word piece
    assert on.tokens[aug_marker("zoom-in")]["clip_l"].shape[0] == len(text.word_ids("l", "zoom in"))
    assert set(off.tokens) == {MARKER}
    edits = [augment.Edit("crop", "prefix")]
    assert on.instance_caption("a {}", edits) == f"{aug_marker('crop')} a {MARKER} dog"
    assert off.instance_caption("a {}", edits) == f"cropped a {MARKER} dog"


def test_cancel_saves_and_resume_matches_uninterrupted(models):
    train(models, "tb-r", steps=6, save_every=3, run_name="tb-ref")
    ref = files.load_safetensors(os.path.join(run_dir("tb-ref"), "checkpoints", "step_0000006.safetensors"))[0]
    with interrupt_at(2), pytest.raises(mm.InterruptProcessingException):
        train(models, "tb-r", steps=6, save_every=3, run_name="tb-cut")
    assert os.path.exists(saved("loras", "tb-r")) and os.path.exists(saved("embeddings", "tb-r"))
    train(models, "tb-r", steps=6, save_every=3, run_name="tb-cut")
    got = files.load_safetensors(os.path.join(run_dir("tb-cut"), "checkpoints", "step_0000006.safetensors"))[0]
    assert set(ref) == set(got)
    for k in ref:
        assert torch.allclose(ref[k].float(), got[k].float(), atol=1e-6, rtol=0), k


@pytest.mark.parametrize("kw,match", [
    (dict(kp_weight=-0.1), "kp_weight -0.1 is negative"),
    (dict(lora_rank=0), "lora_rank 0 is below 1"),
    (dict(lora_targets="q, attn"), "Valid targets"),
    (dict(class_word="  "), "class word is empty"),
    (dict(template_set="custom", custom_templates="no slot"), "exactly one"),
])
def test_bad_input_is_named_and_writes_nothing(models, kw, match):
    with pytest.raises(ValueError, match=match):
        train(models, "tb-bad", **kw)
    assert not os.path.exists(saved("loras", "tb-bad")) and not os.path.exists(saved("embeddings", "tb-bad"))
    assert not os.path.isdir(run_dir("textboost-tb-bad"))


def test_prior_captions_ship_with_the_pack_and_user_lists_replace_them():
    ours = load_prior_captions()
    assert len(ours) >= 1000 and len(set(ours)) == len(ours)
    assert load_prior_captions("a cat\n\n a dog \n") == ["a cat", "a dog"]
