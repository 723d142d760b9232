"""Reward models (issue 5, item 1): each loader on tiny random models saved in the official
formats, checked against a reference computation on the same weights (transformers' own CLIPModel
methods, open_clip itself for HPS, torchvision and transformers' processor for preprocessing);
gradients reach the images only; missing files are named; the nodes' round trip in-process and in
the real server; the ShapeWorld reward's ordering."""
import argparse
import importlib.util
import math
import os
import shutil

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms as T
import torchvision.transforms.functional as TF

import folder_paths
from texttune.nodes import rewards as reward_nodes
from texttune.nodes.rewards import CombineRewards, LoadRewardModel, ScoreImages
from texttune.shapeworld import reward as shapeworld_reward
from texttune.shapeworld import world
from texttune.trainers import files, rewards
from texttune.trainers.rewards import Preprocess

TESTS = os.path.dirname(os.path.abspath(__file__))
MEAN, STD = rewards.OPENAI_MEAN, rewards.OPENAI_STD
PROMPTS = ["a photo of a red star", "a blue ring on a green background", "an object"]
# LAION CLIP-ViT-H-14's preprocessor_config.json (the processor PickScore's README uses)
LAION_PROCESSOR = {"crop_size": 224, "do_center_crop": True, "do_normalize": True, "do_resize": True,
                   "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": list(MEAN),
                   "image_std": list(STD), "resample": 3, "size": 224}


# ---------------------------------------------------------------------------------------------
# tiny models in the official formats
def reward_dir() -> str:
    return folder_paths.get_folder_paths("reward_models")[0]


def sd1_tokenizer_dir() -> str:
    import comfy.sd1_clip
    return os.path.join(os.path.dirname(comfy.sd1_clip.__file__), "sd1_tokenizer")


def tiny_clip(seed: int, projection: int = 16, logit_scale: float = math.log(100.0)):
    """A transformers CLIPModel with the real CLIP vocabulary and tiny towers, random weights."""
    from transformers import CLIPConfig, CLIPModel
    torch.manual_seed(seed)
    cfg = CLIPConfig(text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=2, max_position_embeddings=77),
                     vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=2, image_size=224, patch_size=32),
                     projection_dim=projection)
    model = CLIPModel(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():      # norms and biases away from 1 and 0, so they count
            if p.ndim == 1:
                p.add_(torch.randn_like(p) * 0.1)
        model.logit_scale.fill_(logit_scale)
    return model.eval()


def save_clip_folder(name: str, model, tokenizer=True, processor=None, root=None) -> str:
    """model.save_pretrained (config.json + model.safetensors) [+ the CLIP BPE files] [+ processor]."""
    folder = os.path.join(root or reward_dir(), name)
    model.save_pretrained(folder)
    if tokenizer:
        for f in os.listdir(sd1_tokenizer_dir()):
            shutil.copy(os.path.join(sd1_tokenizer_dir(), f), folder)
    if processor is not None:
        files.write_json(processor, os.path.join(folder, "preprocessor_config.json"))
    return folder


def tiny_open_clip(seed: int):
    """An open_clip CLIP in HPS's architecture family (ViT image tower, GELU, text tower), tiny."""
    import open_clip
    torch.manual_seed(seed)
    model = open_clip.CLIP(embed_dim=16,
                           vision_cfg=dict(layers=2, width=128, head_width=64, patch_size=32, image_size=224),
                           text_cfg=dict(context_length=77, vocab_size=49408, width=128, heads=2, layers=2))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim <= 1 and name != "logit_scale":
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def save_hps(model, name="HPS_v2_compressed.pt") -> str:
    """HPS's released format: torch.save({'state_dict': fp16 tensors})."""
    path = os.path.join(reward_dir(), name)
    torch.save({"state_dict": {k: v.half() for k, v in model.state_dict().items()}}, path)
    return path


AESTHETIC_DIMS = [16, 32, 8, 8, 4, 1]          # the real one: 768, 1024, 128, 64, 16, 1


def aesthetic_reference_mlp(dims=AESTHETIC_DIMS):
    """The MLP of improved-aesthetic-predictor's simple_inference.py, written out."""
    a, b, c, d, e, f = dims
    layers = torch.nn.Sequential(torch.nn.Linear(a, b), torch.nn.Dropout(0.2), torch.nn.Linear(b, c),
                                 torch.nn.Dropout(0.2), torch.nn.Linear(c, d), torch.nn.Dropout(0.1),
                                 torch.nn.Linear(d, e), torch.nn.Linear(e, f))
    holder = torch.nn.Module()
    holder.layers = layers
    return holder


def save_aesthetic(name: str, seed=3) -> tuple[str, torch.nn.Module]:
    torch.manual_seed(seed)
    mlp = aesthetic_reference_mlp()
    sd = {k: v.detach().clone() for k, v in mlp.state_dict().items()}
    path = os.path.join(reward_dir(), name)
    if name.endswith(".safetensors"):
        files.save_safetensors(sd, path)
    else:
        torch.save(sd, path)                                   # an OrderedDict of tensors, as released
    return path, mlp.eval()


def image_features(model, pixels):
    out = model.get_image_features(pixel_values=pixels)
    return out if isinstance(out, torch.Tensor) else out.pooler_output     # transformers 4 / 5


def text_features(model, ids):
    out = model.get_text_features(input_ids=ids)
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def token_ids(tokenizer_dir, prompts):
    from transformers import CLIPTokenizer
    tok = CLIPTokenizer.from_pretrained(tokenizer_dir)
    return tok(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids


def torchvision_clip_preprocess(images):
    """OpenAI CLIP's preprocess (Resize(224, bicubic) + CenterCrop + Normalize) on tensors."""
    return T.Compose([T.Resize(224, interpolation=T.InterpolationMode.BICUBIC, antialias=True), T.CenterCrop(224),
                      T.Normalize(MEAN, STD)])(images)


def hps_preprocess(images, size=224):
    """HPS's val transform on tensors: ResizeMaxSize(224) (bicubic resize of the longest side, then
    zero padding split as [w//2, h//2, w - w//2, h - h//2]) and Normalize, as its open_clip copy does."""
    h, w = images.shape[-2:]
    scale = size / max(h, w)
    nh, nw = round(h * scale), round(w * scale)
    x = TF.resize(images, [nh, nw], T.InterpolationMode.BICUBIC, antialias=True)
    ph, pw = size - nh, size - nw
    x = TF.pad(x, [pw // 2, ph // 2, pw - pw // 2, ph - ph // 2], fill=0)
    return TF.normalize(x, MEAN, STD)


def processor_pixels(images):
    """transformers' CLIPImageProcessor with LAION ViT-H's settings, on float images in 0..1."""
    from transformers import CLIPImageProcessor
    return CLIPImageProcessor(**LAION_PROCESSOR)(images=list(images), do_rescale=False,
                                                 return_tensors="pt").pixel_values


def random_images(b=3, h=64, w=65, seed=0):
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def assert_image_gradient_only(reward, images, prompts):
    """The score, after checking that the training value's gradient reaches the images and no weight."""
    x = images.clone().requires_grad_(True)
    raw = reward.raw(x, prompts)
    assert raw.shape == (images.shape[0],) and raw.dtype == torch.float32
    raw.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for p in reward.patchers:
        assert all(not w.requires_grad and w.grad is None for w in p.model.parameters())
    return reward.score_from(raw.detach())


# ---------------------------------------------------------------------------------------------
# preprocessing
@pytest.mark.parametrize("h,w", [(64, 65), (97, 131), (300, 200), (224, 224)])
def test_preprocessing_matches_torchvision_transformers_and_hps(h, w):
    x = random_images(2, h, w)
    torch.testing.assert_close(Preprocess(crop_offset="round")(x), torchvision_clip_preprocess(x), rtol=0, atol=1e-6)
    torch.testing.assert_close(Preprocess(crop_offset="floor")(x), processor_pixels(x), rtol=0, atol=1e-6)
    box = Preprocess(letterbox=True)(x)
    torch.testing.assert_close(box, hps_preprocess(x), rtol=0, atol=1e-6)
    if h != w:                       # the padding is black before normalisation
        edge = box[:, :, :, 0] if h > w else box[:, :, 0, :]
        black = (-torch.tensor(MEAN) / torch.tensor(STD)).view(1, 3, 1)
        torch.testing.assert_close(edge, black.expand_as(edge))


def test_offsets_differ_where_the_crop_rounds():
    x = random_images(1, 64, 65)             # 64x65 -> 224x227: 3 columns to drop, 1 or 2 on the left
    assert not torch.allclose(Preprocess(crop_offset="round")(x), Preprocess(crop_offset="floor")(x))


# ---------------------------------------------------------------------------------------------
# each kind against a reference on the same weights
def test_pickscore_is_logit_scale_times_cosine():
    model = tiny_clip(1)
    folder = save_clip_folder("PickScore_v1", model, processor=LAION_PROCESSOR)
    reward = rewards.load("pickscore", folder)
    images = random_images()
    got = assert_image_gradient_only(reward, images, PROMPTS)
    with torch.no_grad():
        pixels = processor_pixels(images)
        img = F.normalize(image_features(model, pixels), dim=-1)
        txt = F.normalize(text_features(model, token_ids(folder, PROMPTS)), dim=-1)
        ref = model.logit_scale.exp() * (img * txt).sum(-1)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    assert reward.scale == 1.0 and torch.equal(reward.objective(images, PROMPTS), reward.raw(images, PROMPTS))
    # one prompt for all images == the same prompt repeated
    torch.testing.assert_close(reward.score(images, PROMPTS[0]), reward.score(images, [PROMPTS[0]] * 3))
    with pytest.raises(ValueError, match="2 prompts for 3 images"):
        reward.score(images, PROMPTS[:2])


def test_clip_score_is_torchmetrics_formula_and_uses_comfys_clip_tokenizer():
    model = tiny_clip(2, logit_scale=2.0)
    folder = save_clip_folder("clip-tiny", model, tokenizer=False)          # no tokenizer, no processor files
    reward = rewards.load("clip_score", folder)
    images = random_images(seed=1)
    got = assert_image_gradient_only(reward, images, PROMPTS)
    with torch.no_grad():
        img = F.normalize(image_features(model, processor_pixels(images)), dim=-1)
        txt = F.normalize(text_features(model, token_ids(sd1_tokenizer_dir(), PROMPTS)), dim=-1)
        cos = (img * txt).sum(-1)
    torch.testing.assert_close(got, (100 * cos).clamp(min=0), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(reward.raw(images, PROMPTS), cos, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(reward.objective(images, PROMPTS), 100 * cos, rtol=1e-5, atol=1e-4)
    assert (cos < 0).any() and (got[cos < 0] == 0).all()         # the clamp is exercised


@pytest.mark.parametrize("mlp_file", ["sac+logos+ava1-l14-linearMSE.pth", "aesthetic.safetensors"])
def test_aesthetic_is_the_mlp_on_the_normalised_clip_embedding(mlp_file):
    model = tiny_clip(4)
    folder = save_clip_folder("clip-vit-tiny", model)
    path, mlp = save_aesthetic(mlp_file)
    reward = rewards.load("aesthetic", path, folder)
    images = random_images(seed=2)
    got = assert_image_gradient_only(reward, images, [""])
    with torch.no_grad():
        emb = image_features(model, torchvision_clip_preprocess(images))
        ref = mlp.layers(emb / torch.linalg.vector_norm(emb, dim=-1, keepdim=True)).squeeze(-1)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    assert not reward.tower.module.head.training                      # dropout off: repeatable
    torch.testing.assert_close(reward.score(images, "other text"), got)
    torch.testing.assert_close(reward.objective(images, ""), 3 * got, rtol=1e-6, atol=1e-6)


def test_aesthetic_refuses_wrong_files():
    folder = save_clip_folder("clip-wide", tiny_clip(5, projection=24))
    path, _ = save_aesthetic("mlp16.pth")
    with pytest.raises(ValueError, match=r"reads 16-d CLIP image embeddings, but clip-wide gives 24-d"):
        rewards.load("aesthetic", path, folder)
    other = os.path.join(reward_dir(), "not-aesthetic.safetensors")
    files.save_safetensors({"linear.weight": torch.zeros(1, 16)}, other)
    with pytest.raises(ValueError, match=r"not the LAION aesthetic predictor v2 MLP: expected exactly the keys "
                                         r"layers.0.weight"):
        rewards.load("aesthetic", other, folder)


def test_hps_matches_open_clip_on_the_same_checkpoint():
    import open_clip
    reference = tiny_open_clip(6)
    path = save_hps(reference)
    # open_clip's own model, loaded from the saved file as HPS's img_score.py loads it
    reference.load_state_dict({k: v.float() for k, v in torch.load(path, weights_only=True)["state_dict"].items()})
    reward = rewards.load("hps", path)
    images = random_images(3, 100, 150, seed=3)                      # not square: the letterbox matters
    got = assert_image_gradient_only(reward, images, PROMPTS)
    tokens = open_clip.get_tokenizer("ViT-H-14")(PROMPTS)
    with torch.no_grad():
        img = reference.encode_image(hps_preprocess(images), normalize=True)
        txt = reference.encode_text(tokens, normalize=True)
        ref = torch.diagonal(img @ txt.T)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    assert reward.scale == 100.0
    # the tokenizers agree up to the end-of-text token; after it open_clip pads 0, ComfyUI's 49407
    ours = token_ids(sd1_tokenizer_dir(), PROMPTS)
    for a, b in zip(tokens, ours):
        end = int(a.argmax())
        assert torch.equal(a[:end + 1], b[:end + 1]) and b[end] == 49407 and (a[end + 1:] == 0).all()


def test_hps_refuses_training_checkpoints_and_other_models():
    sd = {k: v.half() for k, v in tiny_open_clip(7).state_dict().items()}
    full = os.path.join(reward_dir(), "HPS_v2.pt")
    torch.save({"state_dict": sd, "args": argparse.Namespace(lr=1e-5)}, full)     # not weights-only
    with pytest.raises(ValueError, match=r"(?s)^For HPS use HPS_v2_compressed.pt or HPS_v2.1_compressed.pt.*"
                                         r"HPS_v2.pt was refused"):
        rewards.load("hps", full)
    other = os.path.join(reward_dir(), "not-hps.pt")
    torch.save({"state_dict": {"weight": torch.zeros(2)}}, other)
    with pytest.raises(ValueError, match="not-hps.pt is not an HPS v2 checkpoint"):
        rewards.load("hps", other)


def test_precision_choice_sets_the_weights_dtype():
    folder = save_clip_folder("clip-bf16", tiny_clip(8))
    assert rewards.compute_dtype("auto", torch.device("cpu")) == torch.float32
    reward = rewards.load("clip_score", folder, precision="bf16")
    assert {p.dtype for p in reward.tower.module.parameters()} == {torch.bfloat16}
    full = rewards.load("clip_score", folder).raw(random_images(), PROMPTS)
    torch.testing.assert_close(reward.raw(random_images(), PROMPTS), full, rtol=0, atol=0.05)


# ---------------------------------------------------------------------------------------------
# combining
def test_combined_is_textcraftor_weighted_sum():
    pick = rewards.load("pickscore", save_clip_folder("pick-c", tiny_clip(9)))
    clip = rewards.load("clip_score", save_clip_folder("clip-c", tiny_clip(10)))
    path, _ = save_aesthetic("aes-c.pth")
    aes = rewards.load("aesthetic", path, save_clip_folder("vit-c", tiny_clip(11)))
    images = random_images(seed=4)
    out = CombineRewards.execute(reward_a=clip, weight_a=0.5, reward_b=aes, weight_b=1.0, reward_c=pick,
                                 weight_c=2.0)[0]
    expected = 0.5 * 100 * clip.raw(images, PROMPTS) + 3 * aes.raw(images, PROMPTS) + 2 * pick.raw(images, PROMPTS)
    x = images.clone().requires_grad_(True)
    total = out.score(x, PROMPTS)
    torch.testing.assert_close(total.detach(), expected, rtol=1e-5, atol=1e-4)
    total.sum().backward()
    assert x.grad.abs().sum() > 0
    parts = out.parts(images, PROMPTS)
    assert list(parts) == [clip.label, aes.label, pick.label, "total Σγ·s·R"]
    torch.testing.assert_close(parts[clip.label], clip.score(images, PROMPTS))
    torch.testing.assert_close(parts["total Σγ·s·R"], expected, rtol=1e-5, atol=1e-4)
    assert len(out.patchers) == 3
    with pytest.raises(ValueError, match="reward_d is connected but reward_c is not"):
        CombineRewards.execute(reward_a=clip, weight_a=1.0, reward_b=aes, weight_b=1.0, reward_d=pick, weight_d=1.0)


# ---------------------------------------------------------------------------------------------
# files, errors and nodes
def test_listing_shows_files_and_model_folders():
    save_clip_folder("listed-folder", tiny_clip(12))
    save_aesthetic("listed-mlp.pth")
    os.makedirs(os.path.join(reward_dir(), "sub"), exist_ok=True)
    save_hps(tiny_open_clip(13), os.path.join("sub", "HPS_v2.1_compressed.pt"))
    with open(os.path.join(reward_dir(), "notes.txt"), "w") as f:
        f.write("not a model")
    choices = reward_nodes.model_choices()
    assert {"listed-folder/", "listed-mlp.pth", "sub/HPS_v2.1_compressed.pt"} <= set(choices)
    assert not any(c.startswith("listed-folder/") and c != "listed-folder/" for c in choices)
    assert "notes.txt" not in choices
    schema = LoadRewardModel.define_schema()
    opts = {i.id: i.options for i in schema.inputs if hasattr(i, "options")}
    assert {"aesthetic", "pickscore", "hps", "clip_score"} <= set(opts["kind"])
    assert opts["model"][0] == "none" and "listed-mlp.pth" in opts["model"]
    assert "listed-folder/" in opts["clip_model"] and "listed-mlp.pth" not in opts["clip_model"]
    for node in (LoadRewardModel, CombineRewards, ScoreImages):
        schema = node.define_schema()
        assert schema.category == "TextTune/rewards" and all(i.tooltip for i in schema.inputs)
        assert os.path.isfile(os.path.join(os.path.dirname(TESTS), "web", "docs", schema.node_id + ".md"))


def test_missing_files_name_the_folder():
    where = reward_dir()
    with pytest.raises(FileNotFoundError) as e:
        LoadRewardModel.execute(kind="pickscore", model="none")
    assert where in str(e.value) and "config.json" in str(e.value) and "model.safetensors" in str(e.value)
    with pytest.raises(FileNotFoundError) as e:
        LoadRewardModel.execute(kind="hps", model="gone.pt")
    assert f"'gone.pt' is not in {where}" in str(e.value)
    half = os.path.join(where, "half-folder")
    os.makedirs(half, exist_ok=True)
    tiny_clip(14).config.save_pretrained(half)                            # config.json, no weights
    with pytest.raises(FileNotFoundError) as e:
        LoadRewardModel.execute(kind="pickscore", model="half-folder/")
    assert f"{half} has no model.safetensors" in str(e.value)
    path, _ = save_aesthetic("mlp-alone.pth")
    with pytest.raises(FileNotFoundError) as e:
        LoadRewardModel.execute(kind="aesthetic", model="mlp-alone.pth", clip_model="none")
    assert where in str(e.value) and "clip-vit-large-patch14" in str(e.value)
    with pytest.raises(FileNotFoundError, match="HPS v2 / v2.1 needs a file"):
        rewards.load("hps", where)
    with pytest.raises(ValueError, match="Unknown reward kind 'imagereward'"):
        rewards.load("imagereward", where)


def test_node_round_trip_and_gradients_after_inference_mode_loading():
    save_clip_folder("pick-node", tiny_clip(15), processor=LAION_PROCESSOR)
    images = random_images(2, 64, 64, seed=5).movedim(1, -1)                 # ComfyUI IMAGE [B, H, W, 3]
    with torch.inference_mode():                                             # as the executor runs nodes
        reward = LoadRewardModel.execute(kind="pickscore", model="pick-node/", clip_model="none")[0]
        out = ScoreImages.execute(images=images, reward=reward, prompts="a red star\n\na blue ring\n")
    text, plot_image = out[0], out[1]
    lines = text.splitlines()
    assert lines[0].split()[:2] == ["image", "PickScore"] and [r.split()[0] for r in lines[1:]] == ["1", "2", "mean"]
    scores = reward.score(images.movedim(-1, 1), ["a red star", "a blue ring"])
    assert [float(r.split()[-1]) for r in lines[1:3]] == pytest.approx(scores.tolist(), abs=1e-4)
    assert plot_image.shape[0] == 1 and plot_image.shape[-1] == 3 and 0 <= plot_image.min() <= plot_image.max() <= 1
    assert out.ui["text"] == (text,) and len(out.ui["images"]) == 1
    # weights made by a node under inference mode still carry gradients to images (research T1)
    x = images.movedim(-1, 1).clone().requires_grad_(True)
    reward.score(x, "a red star").sum().backward()
    assert x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="3 prompt lines for 2 images"):
        ScoreImages.execute(images=images, reward=reward, prompts="a\nb\nc")


# ---------------------------------------------------------------------------------------------
# ShapeWorld
def scene(size, position, kind="circle", colour="red", background="blue"):
    grid = world.GRID[size]
    row, c = {"top left": (0, 0), "center": (1, 1), "bottom right": (2, 2), "top right": (0, 2)}[position]
    return world.Scene(background, (world.Shape(kind, colour, size, grid[c], grid[row], position),))


def render(scenes):
    return torch.from_numpy(world.render_batch(scenes)).movedim(-1, 1)


@pytest.mark.parametrize("kind,colour,background", [("circle", "red", "blue"), ("square", "purple", "blue"),
                                                    ("star", "white", "yellow"), ("ring", "green", "white")])
def test_shapeworld_reward_prefers_large_and_centred(kind, colour, background):
    order = [("large", "center"), ("small", "center"), ("large", "top left"), ("small", "bottom right")]
    x = render([scene(s, p, kind, colour, background) for s, p in order]).requires_grad_(True)
    r = shapeworld_reward.large_and_centred(x)
    large_c, small_c, large_corner, small_corner = r.tolist()
    assert large_c > small_c > small_corner and large_c > large_corner > small_corner
    assert 0 <= small_corner and large_c <= 1
    r.sum().backward()
    assert x.grad.abs().sum() > 0
    empty = render([world.Scene(background, ())])
    assert shapeworld_reward.large_and_centred(empty).item() == pytest.approx(0.0, abs=1e-6)


def test_test_node_registers_shapeworld_kind_for_the_loader():
    spec = importlib.util.spec_from_file_location(
        "texttune_test_models", os.path.join(TESTS, "custom_nodes", "texttune_test_models", "__init__.py"))
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    opts = {i.id: i.options for i in LoadRewardModel.define_schema().inputs if hasattr(i, "options")}
    assert "shapeworld" in opts["kind"]
    with torch.inference_mode():
        reward = LoadRewardModel.execute(kind="shapeworld", model="none", clip_model="none")[0]
    images = render([scene("large", "center"), scene("small", "top left")])
    torch.testing.assert_close(reward.score(images, "anything"), shapeworld_reward.large_and_centred(images))


# ---------------------------------------------------------------------------------------------
# the real server: the test node's kind reaches the pack (loaded there under another module name)
def test_server_loads_combines_and_scores(tmp_path):
    import numpy as np
    from PIL import Image
    from comfyui_server import REPO, ComfyServer

    base = tmp_path / "base"
    folder = save_clip_folder("pick-e2e", tiny_clip(16), processor=LAION_PROCESSOR,
                              root=str(base / "models" / "reward_models"))
    (base / "input").mkdir(parents=True)
    shutil.copy(os.path.join(REPO, "assets", "demo", "ring_0.png"), base / "input" / "ring_0.png")
    graph = {
        "img": {"class_type": "LoadImage", "inputs": {"image": "ring_0.png"}},
        "sw": {"class_type": "TextTuneLoadRewardModel", "inputs": {"kind": "shapeworld", "model": "none",
                                                                   "clip_model": "none", "precision": "auto"}},
        "pick": {"class_type": "TextTuneLoadRewardModel", "inputs": {"kind": "pickscore", "model": "pick-e2e/",
                                                                     "clip_model": "none", "precision": "auto"}},
        "comb": {"class_type": "TextTuneCombineRewards", "inputs": {"reward_a": ["sw", 0], "weight_a": 1.0,
                                                                    "reward_b": ["pick", 0], "weight_b": 0.5}},
        "score": {"class_type": "TextTuneScoreImages", "inputs": {"images": ["img", 0], "reward": ["comb", 0],
                                                                  "prompts": "a green ring"}},
    }
    with ComfyServer(str(base)) as server:
        opts = server.object_info("TextTuneLoadRewardModel")["TextTuneLoadRewardModel"]["input"]["required"]
        assert "shapeworld" in opts["kind"][1]["options"] and "pick-e2e/" in opts["model"][1]["options"]
        entry = server.run(graph, timeout=120)
        text = entry["outputs"]["score"]["text"][0]
        [plot_png] = server.output_files(entry, "score")
        assert os.path.getsize(plot_png) > 0
    header, row = text.splitlines()[:2]
    assert "ShapeWorld" in header and "PickScore" in header and "total" in header
    pixels = torch.from_numpy(np.asarray(Image.open(base / "input" / "ring_0.png").convert("RGB"),
                                         dtype=np.float32) / 255.0).movedim(-1, 0)[None]
    sw = shapeworld_reward.large_and_centred(pixels).item()
    pick = rewards.load("pickscore", folder).score(pixels, "a green ring").item()
    assert [float(v) for v in row.split()[1:]] == pytest.approx([sw, pick, sw + 0.5 * pick], abs=2e-4)
