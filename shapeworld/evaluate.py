"""Measure a ShapeWorld model with the classifier: generate with ComfyUI's own nodes (CLIPTextEncode,
KSampler, VAEDecode) in-process, then read what was drawn.

Shared by bench/quality.py, the quality tests and shapeworld/train_model.py's report.
Import after ComfyUI is set up in-process (tests/comfy_host.setup_in_process).
"""
import random

import torch

from . import classifier, model, world

SAMPLER = {"steps": 20, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal"}
# Textual inversion settings of the quality benchmark and tests (templates in ShapeWorld's own words).
TI = dict(init_words="object", vectors=1, template_set="custom", custom_templates="a {}\na photo of a {}",
          learning_rate=1e-3, lr_schedule="constant", batch_size=4, resolution=64, flip=False,
          save_every=0, run_name="")
# TextBoost settings of the quality benchmark and tests: one image, the world's own word "object" as
# the class word, the same caption templates as textual inversion, and (in `boost`) the world's own
# captions as the knowledge-preservation set: ShapeWorld's "everyday captions".
TEXTBOOST = dict(class_word="object", lora_rank=4, lora_targets="q, k, v, out, fc1, fc2", augmentation_tokens=True,
                 kp_weight=0.1, snr_timesteps=True, batch_size=8, lora_learning_rate=1e-3, token_learning_rate=1e-3,
                 template_set="custom", custom_templates="a {}\na photo of a {}", resolution=64, save_every=0,
                 run_name="")


def load_checkpoint(path: str = model.WEIGHTS):
    """(MODEL, CLIP, VAE) of the committed ShapeWorld checkpoint, as CheckpointLoaderSimple gives them."""
    import comfy.sd
    model.register()
    m, c, v, _ = comfy.sd.load_checkpoint_guess_config(path, output_vae=True, output_clip=True)
    return m, c, v


def prompt(kind_word: str, colour: str | None = None, background: str | None = None) -> str:
    words = ["a"] + ([colour] if colour else []) + [kind_word]
    if background:
        words.append(f"on a {background} background")
    text = " ".join(words)
    return "an" + text[1:] if text.startswith("a object") else text


def following_cases(n: int, seed: int = 0) -> list:
    """n (prompt, expected labels) pairs over the named kinds, cycling kinds and colours evenly."""
    rng = random.Random(seed)
    cases = []
    for i in range(n):
        kind = world.NAMED_KINDS[i % len(world.NAMED_KINDS)]
        colour = world.COLOUR_NAMES[(i // len(world.NAMED_KINDS)) % len(world.COLOUR_NAMES)]
        bg = rng.choice([c for c in world.COLOUR_NAMES if c != colour])
        cases.append((prompt(kind, colour, bg), {"kind": kind, "colour": colour, "background": bg}))
    return cases


def concept_images(kind: str, n: int = 5, seed: int = 0) -> torch.Tensor:
    """IMAGE of `world.concept_scenes`: training images for learning a word for `kind`."""
    return torch.from_numpy(world.render_batch(world.concept_scenes(kind, n, seed)))


def generate(mdl, clip, vae, prompts, seed: int = 0, per_prompt: int = 1, negative: str = "", encode=None,
             **sampler) -> torch.Tensor:
    """IMAGE (len(prompts)*per_prompt, 64, 64, 3): prompt i gets seed `seed + i`. `encode(text)` makes
    the positive CONDITIONING (default: CLIP Text Encode with `clip`, which always encodes the negative)."""
    import nodes
    opts = {**SAMPLER, **sampler}

    def sample(i, pos, neg, latent):
        return nodes.common_ksampler(mdl, seed + i, opts["steps"], opts["cfg"], opts["sampler_name"],
                                     opts["scheduler"], pos, neg, latent)[0]
    return _generate(clip, vae, prompts, per_prompt, negative, encode, sample)


def _generate(clip, vae, prompts, per_prompt, negative, encode, sample) -> torch.Tensor:
    """Encode each prompt (`encode`, default CLIP Text Encode), `sample(i, positive, negative, latent)`
    an empty latent, decode; inside inference mode, as ComfyUI's executor runs nodes."""
    import nodes
    with torch.inference_mode():
        neg = nodes.CLIPTextEncode().encode(clip, negative)[0]
        out = []
        for i, text in enumerate(prompts):
            pos = encode(text) if encode else nodes.CLIPTextEncode().encode(clip, text)[0]
            latent = nodes.EmptyLatentImage().generate(world.SIZE, world.SIZE, per_prompt)[0]
            out.append(nodes.VAEDecode().decode(vae, sample(i, pos, neg, latent))[0])
        return torch.cat(out)


def score(images: torch.Tensor, expected: list, net=None) -> dict:
    """Per-head accuracy and 'all_three' of `images` against `expected` label dicts
    (a dict may name only some heads; 'all_three' then checks those it names)."""
    net = net or classifier.load()
    got = classifier.predict(net, images)
    heads = list(classifier.HEADS)
    out = {}
    for h in heads:
        pairs = [(g[h], e[h]) for g, e in zip(got, expected) if h in e]
        if pairs:
            out[h] = sum(a == b for a, b in pairs) / len(pairs)
    out["all_three"] = sum(all(g[h] == e[h] for h in heads if h in e) for g, e in zip(got, expected)) / len(expected)
    out["predictions"] = got
    return out


def prompt_following(mdl, clip, vae, n: int = 36, seed: int = 0, net=None) -> dict:
    cases = following_cases(n, seed)
    images = generate(mdl, clip, vae, [p for p, _ in cases], seed=seed)
    res = score(images, [e for _, e in cases], net)
    res["cases"] = [p for p, _ in cases]
    return res


def learn(mdl, clip, vae, kind: str, steps: int, seed: int = 0, images: int = 5, tag: str = "", **settings):
    """Textual inversion of `kind` from `images` renders through the node (TI settings, overridden by
    `settings`; `tag` tells runs of one kind apart); returns (CLIP, the words for prompts: 'embedding:<name>')."""
    token = f"sw-{kind}-{images}" + (f"-{tag}" if tag else "")
    args = {**TI, "run_name": f"quality-{token}-{steps}", **settings, "token_name": token, "steps": steps, "seed": seed}
    from ..nodes.textual_inversion import TrainTextualInversion
    with torch.inference_mode():
        out = TrainTextualInversion.execute(model=[mdl], clip=[clip], vae=[vae],
                                            images=[concept_images(kind, n=images, seed=seed)],
                                            **{k: [v] for k, v in args.items()})
    return out.result[0], f"embedding:{out.result[1]}"


def world_captions(n: int = 1000, seed: int = 7) -> str:
    """Captions of `n` random scenes, one per line (with attributes left out as in training)."""
    rng = random.Random(seed)
    return "\n".join(world.caption_variant(sc, rng) for sc in world.scenes(seed, n))


def boost(mdl, clip, vae, kind: str, steps: int, seed: int = 0, images: int = 1, tag: str = "textboost", **settings):
    """TextBoost on `kind` from `images` renders through the node (TEXTBOOST settings, overridden by
    `settings`); returns (CLIP, the words for prompts: 'embedding:<name> object')."""
    name = f"sw-{tag}-{kind}"
    settings.setdefault("prior_captions", world_captions())
    args = {**TEXTBOOST, "run_name": f"quality-{tag}-{kind}-{steps}", **settings, "token_name": name,
            "steps": steps, "seed": seed}
    from ..nodes.textboost import TrainTextBoost
    with torch.inference_mode():
        out = TrainTextBoost.execute(model=[mdl], clip=[clip], vae=[vae],
                                     images=[concept_images(kind, n=images, seed=seed)],
                                     **{k: [v] for k, v in args.items()})
    return out.result[0], out.result[2]


def edit_cases(n: int, seed: int) -> list:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        colour = rng.choice(world.COLOUR_NAMES)
        out.append((colour, rng.choice([c for c in world.COLOUR_NAMES if c != colour])))
    return out


def generate_fusion(mdl, clip, vae, prompts, concept: str, references, seed: int = 0, per_prompt: int = 1,
                    steps: int = 20, scheduler: str = "ddim_uniform", **settings) -> torch.Tensor:
    """As `generate`, with ProFusion's fusion sampling (trainers/fusion, as TextTuneKSamplerFusion runs
    it): prompt i marks `concept` and is refined towards `references[i]` (None: omega_2 unused);
    `settings` are FusionSettings fields. Prompt i gets seed `seed + i`."""
    import nodes
    from ..trainers import fusion
    opts = fusion.check_settings(fusion.FusionSettings(**settings))

    def sample(i, pos, neg, latent):
        ref = nodes.CLIPTextEncode().encode(clip, references[i])[0] if references[i] else None
        return fusion.ksampler(mdl, seed + i, steps, scheduler, pos, neg, latent, 1.0, opts, ref)
    return _generate(clip, vae, prompts, per_prompt, "", lambda text: fusion.encode_concept(clip, text, concept),
                     sample)


def concept_scores(mdl, clip, vae, word: str, kind: str, net, n: int, seed: int, sampler: dict | None = None,
                   fusion: dict | None = None) -> dict:
    """Fidelity and editability of `word` (an `embedding:` name, perhaps with a class word, or a plain
    word) for `kind`. Learned words get "a", as in their training captions. `sampler` overrides
    SAMPLER's KSampler settings; with `fusion` (FusionSettings fields, plus steps and scheduler), the
    images come from fusion sampling with `word` as the concept and the prompt with "object" in its
    place as the reference."""
    article = "an" if word[0] in "aeiou" and not word.startswith("embedding:") else "a"
    cases = edit_cases(n, seed + 1)
    fid_prompt, fid_reference = f"a photo of {article} {word}", "a photo of " + prompt(world.UNNAMED_WORD)
    prompts = [f"a {c} {word} on a {bg} background" for c, bg in cases]
    references = [prompt(world.UNNAMED_WORD, c, bg) for c, bg in cases]

    def draw(texts, refs, seed, per_prompt=1):
        if fusion is None:
            return generate(mdl, clip, vae, texts, seed=seed, per_prompt=per_prompt, **(sampler or {}))
        return generate_fusion(mdl, clip, vae, texts, word, refs, seed=seed, per_prompt=per_prompt, **fusion)
    fid = draw([fid_prompt], [fid_reference], seed, per_prompt=n)
    fidelity = score(fid, [{"kind": kind}] * n, net)["kind"]
    imgs = draw(prompts, references, seed + 100)
    ed = score(imgs, [{"kind": kind, "colour": c, "background": bg} for c, bg in cases], net)
    return {"fidelity": fidelity, "editability": ed["all_three"],
            "editability_parts": {h: ed[h] for h in classifier.HEADS}}
