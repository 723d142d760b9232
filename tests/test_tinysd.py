"""TinySD is deterministic, properly initialised and loads through ComfyUI's checkpoint loader."""
import torch

import comfy.sd


def test_same_seed_same_weights_and_norm_scales_are_one(tiny):
    a, b, c = tiny.make_model(seed=4), tiny.make_model(seed=4), tiny.make_model(seed=5)
    sa, sb, sc = (m.model.diffusion_model.state_dict() for m in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)
    norms = [v for k, v in sa.items() if k.endswith("norm.weight") or ".norm" in k and k.endswith("weight")
             and v.ndim == 1]
    assert norms and all(torch.all(v == 1) for v in norms)


def test_checkpoint_loads_through_comfy_detection(tiny, tmp_path):
    path = tiny.save_checkpoint(str(tmp_path / "tinysd.safetensors"), seed=0)
    model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(path, embedding_directory=[str(tmp_path)])
    assert isinstance(model.model.model_config, tiny.TinySD)
    assert clip.tokenizer.clip_l.embedding_size == tiny.WIDTH
    ref = tiny.make_model(seed=0).model.diffusion_model.state_dict()
    got = model.model.diffusion_model.state_dict()
    assert all(torch.equal(ref[k], got[k].to(ref[k].dtype)) for k in ref)
    with torch.inference_mode():
        img = vae.decode(torch.zeros(1, 4, 8, 8))
    assert img.shape[-3:] == (64, 64, 3)
