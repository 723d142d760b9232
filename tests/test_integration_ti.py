"""Textual inversion on TinySD, in process, through the node's execute as the executor calls it."""
import os

import pytest
import torch

import comfy.model_management as mm
import comfy.sd
import comfy.sd1_clip
import folder_paths
from texttune.nodes.textual_inversion import TrainTextualInversion
from interrupts import interrupt_at
from texttune.trainers import engine, files
from texttune.trainers.comfy_adapter import Diffusion, TextEncoder
from texttune.trainers.textual_inversion import TextualInversion

DEFAULTS = dict(init_words="dog", vectors=2, template_set="object", steps=6, learning_rate=5e-3,
                lr_schedule="constant", batch_size=2, resolution=64, flip=True, seed=0, save_every=2, run_name="")


def images(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 64, 64, 3, generator=g)


@pytest.fixture()
def models(tiny):
    emb_dir = folder_paths.get_folder_paths("embeddings")[0]
    return tiny.make_model(), tiny.make_clip([emb_dir]), tiny.make_vae()


def train(models, token, imgs=None, **kw):
    m, c, v = models
    args = {**DEFAULTS, "token_name": token, **kw}
    with torch.inference_mode():
        imgs = [images()] if imgs is None else (imgs if isinstance(imgs, list) else [imgs])   # as the executor passes
        return TrainTextualInversion.execute(model=[m], clip=[c], vae=[v], images=imgs,
                                             **{k: [val] for k, val in args.items()})


def emb_path(token):
    return os.path.join(folder_paths.get_folder_paths("embeddings")[0], token + ".safetensors")


def run_dir(name):
    return os.path.join(folder_paths.get_output_directory(), "texttune", name)


def probe(models):
    """Outputs of the input MODEL and CLIP on fixed inputs."""
    m, c, _ = models
    with torch.inference_mode():
        cond = c.encode_from_tokens(c.tokenize("a photo of a dog"))
        mm.load_models_gpu([m])
        x = torch.linspace(-1, 1, 4 * 8 * 8).view(1, 4, 8, 8).to(m.load_device)
        out = m.model.apply_model(x, torch.tensor([2.0], device=x.device), c_crossattn=cond.to(x.device))
    return cond.clone(), out.cpu().clone()


def test_fixed_batch_loss_goes_down(models):
    m, c, v = models
    diffusion, text = Diffusion(m), TextEncoder(c)
    with torch.inference_mode(False):
        lat = diffusion.to_model_latents(torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(1)))
        method = TextualInversion(diffusion, text, lat, lat.flip(-1), None, ["a photo of a {}"], "dog", 2, 3)
        fixed = engine.step_generator(123, 0)
        state = fixed.get_state()

        def fixed_loss():
            fixed.set_state(state)
            with torch.no_grad():
                return float(method.loss(0, fixed)[0])

        opt = torch.optim.Adam(method.trainable().values(), lr=2e-2)
        with method.session():
            before = fixed_loss()
            for _ in range(40):
                fixed.set_state(state)
                loss, _ = method.loss(0, fixed)
                opt.zero_grad()
                loss.backward()
                opt.step()
            after = fixed_loss()
    assert after < before * 0.97, (before, after)


def test_train_writes_embedding_that_comfy_loads_and_changes_conditioning(models):
    before = probe(models)
    out = train(models, "tok-a", steps=6)
    clip_out, name, loss_map = out.result
    assert name == "tok-a" and len(loss_map["loss"]) == 6
    tensors, meta = files.load_safetensors(emb_path("tok-a"))
    assert list(tensors) == ["emb_params"] and tensors["emb_params"].shape == (2, 32)
    assert meta["token"] == "tok-a" and meta["steps"] == "6"
    loaded = comfy.sd1_clip.load_embed("tok-a", folder_paths.get_folder_paths("embeddings"), 32, "clip_l")
    assert torch.equal(loaded, tensors["emb_params"])
    with torch.inference_mode():
        with_tok = clip_out.encode_from_tokens(clip_out.tokenize("a photo of embedding:tok-a"))
        plain = clip_out.encode_from_tokens(clip_out.tokenize("a photo of dog"))
    assert with_tok.shape == (1, 77, 32)
    assert not torch.allclose(with_tok, plain)
    # the inputs are untouched for other branches of the graph
    after = probe(models)
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])
    run = run_dir("ti-tok-a")
    assert {"config.json", "metrics.jsonl", "loss.png", "checkpoints"} <= set(os.listdir(run))
    assert not [f for f in os.listdir(os.path.dirname(emb_path("tok-a"))) if f.endswith(".partial")]


def test_cancel_leaves_checkpoint_and_resume_matches_uninterrupted(models):
    train(models, "tok-r", steps=8, save_every=4, run_name="ref")
    ref = files.load_safetensors(os.path.join(run_dir("ref"), "checkpoints", "step_0000008.safetensors"))[0]
    with interrupt_at(3), pytest.raises(mm.InterruptProcessingException):
        train(models, "tok-r", steps=8, save_every=4, run_name="cut")
    ckpts = os.listdir(os.path.join(run_dir("cut"), "checkpoints"))
    assert ckpts == ["step_0000003.safetensors"]
    usable = files.load_safetensors(os.path.join(run_dir("cut"), "checkpoints", ckpts[0]))[0]
    assert usable["param.clip_l"].shape == (2, 32) and "optim.0.exp_avg" in usable
    cancelled, meta = files.load_safetensors(emb_path("tok-r"))     # cancel also leaves the word usable
    assert meta["steps"] == "3" and torch.equal(cancelled["emb_params"], usable["param.clip_l"])
    out = train(models, "tok-r", steps=8, save_every=4, run_name="cut")
    assert len(out.result[2]["loss"]) == 8
    got = files.load_safetensors(os.path.join(run_dir("cut"), "checkpoints", "step_0000008.safetensors"))[0]
    for k in ref:
        assert torch.allclose(ref[k].float(), got[k].float(), atol=1e-6, rtol=0), k


def test_nan_loss_stops_keeps_checkpoint_and_writes_no_embedding(models, monkeypatch):
    monkeypatch.setenv(engine.NAN_AT_STEP_ENV, "2")
    with pytest.raises(engine.TrainingStopped, match="last good state"):
        train(models, "tok-nan", steps=6)
    assert not os.path.exists(emb_path("tok-nan"))
    assert os.listdir(os.path.join(run_dir("ti-tok-nan"), "checkpoints")) == ["step_0000002.safetensors"]


def test_mixed_sizes_and_mask(models):
    imgs = [torch.rand(1, 96, 64, 3), torch.rand(2, 64, 80, 3)]
    out = train(models, "tok-mix", imgs=imgs, steps=2, mask=torch.ones(1, 64, 64))
    assert len(out.result[2]["loss"]) == 2


@pytest.mark.parametrize("kw,match", [
    (dict(token_name="my token"), "letters, digits"),
    (dict(token_name="../up"), "letters, digits"),
    (dict(init_words="   "), "give no tokens"),
    (dict(imgs=torch.zeros(0, 64, 64, 3)), "empty"),
    (dict(template_set="custom", custom_templates="no slot"), "exactly one"),
])
def test_bad_input_is_named_and_writes_nothing(models, kw, match):
    imgs = kw.pop("imgs", None)
    token = kw.pop("token_name", "tok-bad")
    with pytest.raises(ValueError, match=match):
        train(models, token, imgs=imgs, **kw)
    assert not os.path.exists(emb_path(token.replace("/", "_")))
    root = os.path.join(folder_paths.get_output_directory(), "texttune")
    assert "ti-tok-bad" not in (os.listdir(root) if os.path.isdir(root) else [])


def test_model_and_clip_of_different_families_are_refused(tiny, models):
    m, _, v = models
    wide = comfy.sd.CLIP(tiny.TinySD({}).clip_target(), model_options={"dtype": torch.float32})
    other = comfy.sd.CLIP(comfy.supported_models_base.ClipTarget(comfy.sd1_clip.SD1Tokenizer,
                                                                  comfy.sd1_clip.SD1ClipModel),
                          model_options={"dtype": torch.float32})
    assert wide is not None
    with pytest.raises(ValueError, match="same checkpoint"):
        train((m, other, v), "tok-mm")


def test_same_run_name_with_other_images_is_refused(models):
    train(models, "tok-img", steps=2, run_name="imgs")
    with pytest.raises(ValueError, match="other settings.*images_digest"):
        train(models, "tok-img", imgs=images(seed=9), steps=4, run_name="imgs")
