"""ShapeWorld keeps the quality yardstick honest: the world is deterministic, the classifier reads
fresh renders, and the committed model loads with the core loader and follows prompts."""
import json
import os
import random

import numpy as np
import pytest
import torch

import folder_paths
from texttune.shapeworld import classifier, evaluate, model, world

# Stated accuracies (measured figures are in bench/results/quality.json and shapeworld/weights/*.json).
CLASSIFIER_MIN = 0.95
# The committed model scores 0.972 all three on bench/quality.py's 72 prompts; the test asks for issue
# 3's goal, 0.8, on 12 others.
FOLLOWING_MIN = 0.8
COLOUR_MIN = 0.9
# Textual inversion on one unnamed concept in a CI-sized run (issue 3's 300 steps): bench/quality.py
# measures ring fidelity 0.95 on 20 images ('object': 0.10); the test asks 0.6 on 12 and a 0.3 gain.
TI_KIND, TI_STEPS = "ring", 300
TI_FIDELITY_MIN = 0.6
TI_GAIN_MIN = 0.3
# TextBoost from ONE image: the hourglass of world.concept_scenes(seed 2); bench/quality.py measures
# fidelity 0.80 and editability 1.00 from it on 20 images each (the test asks 0.5 and 0.5 on 12)
TB_KIND, TB_IMAGE_SEED, TB_STEPS = "hourglass", 2, 250
TB_FIDELITY_MIN, TB_EDITABILITY_MIN = 0.5, 0.5


@pytest.fixture(scope="module")
def net():
    return classifier.load()


@pytest.fixture(scope="module")
def shapeworld():
    return evaluate.load_checkpoint()


# -- the world ---------------------------------------------------------------------------------

def test_generator_is_deterministic():
    a, b = world.scenes(7, 20), world.scenes(7, 20)
    assert a == b and world.scenes(8, 20) != a
    assert np.array_equal(world.render_batch(a), world.render_batch(b))
    rng1, rng2 = random.Random(3), random.Random(3)
    assert [world.caption_variant(s, rng1) for s in a] == [world.caption_variant(s, rng2) for s in a]


def test_scene_pixels_and_captions_agree():
    rng = random.Random(0)
    scene = world.single_scene(rng, "square", "red", "blue", size="large")
    img = world.render(scene).astype(int)
    s = scene.shapes[0]
    assert tuple(img[0, 0]) == world.COLOURS["blue"] or tuple(img[63, 63]) == world.COLOURS["blue"]
    assert tuple(img[round(s.y), round(s.x)]) == world.COLOURS["red"]
    assert scene.caption() == f"a large red square {world.position_phrase(s.position)} on a blue background"
    ring = world.single_scene(rng, "ring", "green", "yellow", size="small")
    r = ring.shapes[0]
    assert "object" in ring.caption() and "ring" not in ring.caption()
    # the hole of a ring shows the background
    assert tuple(world.render(ring)[round(r.y), round(r.x)]) == world.COLOURS["yellow"]


def test_every_caption_variant_uses_only_words_true_of_the_scene():
    rng = random.Random(1)
    for scene in world.scenes(2, 200):
        text = world.caption_variant(scene, rng)
        for s in scene.shapes:
            assert s.word in text
            assert s.kind in world.NAMED_KINDS or s.kind not in text
        assert not any(w in text.split() for w in world.CODE_WORDS.values()), text   # public captions
        for colour in world.COLOUR_NAMES:
            if colour in text:
                assert colour == scene.background or any(colour == s.colour for s in scene.shapes)


def test_private_code_words_name_only_their_own_kind():
    """The model's training captions call an unnamed kind by its code word in about CODE_WORD_P of
    them, never another kind's, and never by the kind's real name."""
    rng = random.Random(3)
    said = {k: 0 for k in world.UNNAMED_KINDS}
    seen = dict(said)
    for scene in world.scenes(4, 3000, two_shape_p=0.0):
        s = scene.shapes[0]
        words = world.caption_variant(scene, rng, private_words=True).split()
        assert s.kind not in words or s.kind in world.NAMED_KINDS
        used = [k for k, w in world.CODE_WORDS.items() if w in words]
        assert used in ([], [s.kind]), (s.kind, words)
        assert used or s.word in words
        if s.kind in said:
            seen[s.kind] += 1
            said[s.kind] += bool(used)
    for k in said:
        assert abs(said[k] / seen[k] - world.CODE_WORD_P) < 0.06, (k, said[k], seen[k])


# -- the classifier ----------------------------------------------------------------------------

def test_classifier_reads_fresh_renders(net):
    rng = random.Random(424242)
    scenes = [world.sample_scene(rng, two_shape_p=0.0) for _ in range(90)]
    res = evaluate.score(torch.from_numpy(world.render_batch(scenes)), [classifier.labels(s) for s in scenes], net)
    for head in classifier.HEADS:
        assert res[head] >= CLASSIFIER_MIN, (head, res[head])
    stated = json.load(open(os.path.splitext(classifier.WEIGHTS)[0] + ".json"))["held_out_accuracy"]
    assert all(stated[h] >= CLASSIFIER_MIN for h in classifier.HEADS)


def test_classifier_is_not_fooled_by_noise(net):
    noise = torch.rand(12, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    flat = torch.full((12, 64, 64, 3), 0.5)
    exp = [classifier.labels(world.single_scene(random.Random(i), "star", "red", "blue")) for i in range(12)]
    assert evaluate.score(noise, exp, net)["all_three"] < 0.5
    assert evaluate.score(flat, exp, net)["all_three"] < 0.5


# -- the model ---------------------------------------------------------------------------------

def test_checkpoint_is_small_and_loads_with_the_core_loader(shapeworld):
    import nodes
    assert os.path.getsize(model.WEIGHTS) <= 25 * 1024 * 1024
    ckpts = folder_paths.get_folder_paths("checkpoints")[0]
    link = os.path.join(ckpts, model.CHECKPOINT_NAME)
    if not os.path.exists(link):
        os.symlink(model.WEIGHTS, link)
    m, c, v = nodes.CheckpointLoaderSimple().load_checkpoint(model.CHECKPOINT_NAME)[:3]
    assert type(m.model.model_config).__name__ == "ShapeWorld"
    assert [t[0] for t in c.tokenize("a red star")["l"][0][:5]] == [49406, 320, 736, 1565, 49407]   # the SD1 tokenizer
    assert v.first_stage_model.__class__.__name__ == "TAESD"


def test_demo_copies_the_committed_checkpoint_again_when_it_changes(tmp_path):
    """make demo keeps its model in demo-output/; after a pull that retrains ShapeWorld it must not
    draw with the old one, and an unchanged copy is left alone."""
    import filecmp
    import importlib.util
    from comfy_host import REPO
    spec = importlib.util.spec_from_file_location("demo", os.path.join(REPO, "scripts", "demo.py"))
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    path = tmp_path / model.CHECKPOINT_NAME
    path.write_bytes(b"the model of an earlier pull")
    demo.write_checkpoint(str(path))
    assert filecmp.cmp(path, model.WEIGHTS, shallow=False)
    os.utime(path, (1, 1))
    demo.write_checkpoint(str(path))
    assert path.stat().st_mtime == 1 and sorted(os.listdir(tmp_path)) == [model.CHECKPOINT_NAME]


def test_model_follows_prompts(shapeworld, net):
    res = evaluate.prompt_following(*shapeworld, n=12, seed=3, net=net)
    assert res["colour"] >= COLOUR_MIN and res["background"] >= COLOUR_MIN, res
    assert res["all_three"] >= FOLLOWING_MIN, res


def test_images_change_with_the_prompt(shapeworld):
    a = evaluate.generate(*shapeworld, ["a red star on a blue background"], seed=5)
    b = evaluate.generate(*shapeworld, ["a yellow circle on a green background"], seed=5)
    assert (a - b).abs().mean() > 0.1


# -- learning a word for an unnamed concept (issue 3: a CI-sized textual inversion) ---------------

def test_textual_inversion_learns_an_unnamed_concept(shapeworld, net):
    """TI_STEPS of textual inversion from 5 renders of an unnamed kind, with the benchmark's settings
    (evaluate.TI), give a word that draws it far more often than the plain word "object"."""
    mdl, clip, vae = shapeworld
    learned, words = evaluate.learn(mdl, clip, vae, TI_KIND, TI_STEPS, run_name="ci-ti")
    got = evaluate.concept_scores(mdl, learned, vae, words, TI_KIND, net, n=12, seed=1000)
    plain = evaluate.concept_scores(mdl, clip, vae, world.UNNAMED_WORD, TI_KIND, net, n=12, seed=1000)
    assert got["fidelity"] >= TI_FIDELITY_MIN, (got, plain)
    assert got["fidelity"] >= plain["fidelity"] + TI_GAIN_MIN, (got, plain)



def test_textboost_learns_an_unnamed_concept_from_one_image(shapeworld, net):
    """TextBoost with the benchmark's settings (evaluate.TEXTBOOST: LoRA, augmentation tokens, knowledge
    preservation, SNR-weighted timesteps) on one render of an unnamed kind gives words that draw it,
    and in the colours and backgrounds a prompt asks for, far more often than the plain word."""
    mdl, clip, vae = shapeworld
    boosted, words = evaluate.boost(mdl, clip, vae, TB_KIND, TB_STEPS, seed=TB_IMAGE_SEED, tag="ci")
    got = evaluate.concept_scores(mdl, boosted, vae, words, TB_KIND, net, n=12, seed=1000)
    plain = evaluate.concept_scores(mdl, clip, vae, world.UNNAMED_WORD, TB_KIND, net, n=12, seed=1000)
    assert got["fidelity"] >= TB_FIDELITY_MIN, (got, plain)
    assert got["fidelity"] >= plain["fidelity"] + TI_GAIN_MIN, (got, plain)
    assert got["editability"] >= TB_EDITABILITY_MIN, (got, plain)
