"""ShapeWorld quality benchmark: does the base model follow prompts, and does a learned word draw
an unnamed concept (fidelity) and still take colours from the prompt (editability)?

Everything runs in this process on the committed ShapeWorld checkpoint, through ComfyUI's own
nodes for generation (CLIPTextEncode, KSampler euler/normal 20 steps, cfg 5, VAEDecode) and
through TextTune's trainer nodes as the executor calls them. The ShapeWorld classifier reads kind,
colour and background from every image. Seeds are fixed.

Sections (`--sections`, all by default):
- following: "a <colour> <kind> on a <background> background" over the six named kinds and six
  colours; right = kind, colour and background all read back;
- ti: per unnamed concept (ring, crescent, hourglass), textual inversion on 5 rendered images of it
  (various colours, backgrounds, sizes, positions), then
    fidelity    = share of "a photo of a <word>" images classified as the concept,
    editability = share of "a <colour> <word> on a <background> background" images with the concept
                  AND both asked colours,
  and the same two numbers for the plain word "object" (baseline) and for the concept's private code
  word (world.CODE_WORDS: what the model was trained to draw it from, so the most a learned word
  can hope for);
- personalisation: the same figures from ONE image of a concept, for one-image textual inversion,
  TextBoost (the prompt words are "<word> object", as TextBoost prompts with its class word) and
  TextBoost without each of its parts (augmentation tokens, knowledge preservation, SNR-weighted
  timesteps); each kind is learnt from several different single images (`--one-image-seeds`),
  because one image decides much (bench/README.md: per block of renders, TextBoost's fidelity against
  TI's went from -0.18 to +0.14). Rows run in separate processes (`--rows`) join in the file;
- fusion: ProFusion's fusion sampling against plain CFG with a deliberately over-fitted textual-
  inversion word (one image, FUSION_TI: a high learning rate and many steps, no regularisation;
  each kind from several single renders, `--fusion-seeds`, which join across processes), both
  with DDIM over ddim_uniform sigmas at the same steps; plain CFG at cfg = omega_1. The reference
  prompt puts "object" in the word's place. A sweep over omega_2 and gamma;
- reward: TextCraftor (text encoder) and its UNet-LoRA stage, each trained through its node on
  REWARD_TRAIN_PROMPTS for ShapeWorld's "large and centred" reward; on held-out prompts (the
  following section's prompts, with backgrounds and all six named kinds) the mean reward and
  prompt following before and after, and the reward against the blend weight w of base and
  tuned encoders (Blend Text Encoders with weights 1-w, w; the dial of issue 6).

Run: `$(cat .host/python) bench/quality.py` from the repository root; writes
bench/results/quality.json. Sections run alone replace only their own part of that file (parts
measured on another checkpoint are dropped).
"""
import argparse
import contextlib
import hashlib
import json
import os
import statistics
import tempfile
import time

import common  # bench/common.py: host set-up; must come before ComfyUI and TextTune imports

from texttune.shapeworld import classifier, evaluate, model, world  # noqa: E402

GOALS = {"prompt_following_all_three": 0.8, "ti_fidelity": 0.8, "ti_editability": 0.6, "ti_steps_max": 300,
         "textboost_editability_gain_over_one_image_ti": 0.15,
         "fusion_editability_gain_over_plain": 0.1, "fusion_fidelity_loss_max": 0.05}
SECTIONS = ("following", "ti", "personalisation", "fusion", "reward")
# the over-fitted word of the fusion section: one image, five times the benchmark's TI learning rate,
# 1,000 steps, no regularisation
FUSION_TI = {"images": 1, "steps": 1000, "learning_rate": 5e-3}
FUSION_SAMPLING = {"steps": 20, "scheduler": "ddim_uniform"}
FUSION_OMEGA_1 = evaluate.SAMPLER["cfg"]
FUSION_SWEEP = [(w2, g) for w2 in (0.0, 2.5, 5.0, 7.5, 10.0) for g in (0.3, 0.6, 1.0)]
# reward training: three named kinds in three colours, no backgrounds; held out: the following prompts
REWARD_TRAIN_PROMPTS = [f"a {c} {k}" for k in ("circle", "square", "triangle") for c in ("red", "yellow", "blue")]
REWARD_TRAINING = {"batch_size": 3, "sampling_steps": 25, "grad_steps": 5, "cfg": evaluate.SAMPLER["cfg"],
                   "resolution": world.SIZE, "seed": 0, "save_every": 0}
REWARD_DIAL = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25)
GOALS.update({"reward_gain_min": 0.2, "reward_following_drop_max": 0.02})
# one-image personalisation rows: name -> (trainer, node settings over evaluate.TI / evaluate.TEXTBOOST,
# a short tag for its run and file names)
PERSONALISATION = {
    "textual_inversion_1_image": ("ti", {}, "ti1"),
    "textboost": ("textboost", {}, "tb"),
    "textboost_without_augmentation_tokens": ("textboost", {"augmentation_tokens": False}, "tb-noaug"),
    "textboost_without_knowledge_preservation": ("textboost", {"kp_weight": 0.0}, "tb-nokp"),
    "textboost_with_uniform_timesteps": ("textboost", {"snr_timesteps": False}, "tb-uniform"),
}


def mean_of(scores: list[dict]) -> dict:
    """Mean fidelity and editability of several concept_scores results."""
    return {k: sum(s[k] for s in scores) / len(scores) for k in ("fidelity", "editability")}


def run_following(a, mdl, clip, vae, net):
    f = evaluate.prompt_following(mdl, clip, vae, n=a.following, seed=0, net=net)
    print(f"prompt following: {f['all_three']:.3f} (kind {f['kind']:.3f}, colour {f['colour']:.3f}, "
          f"background {f['background']:.3f})", flush=True)
    return {"scores": {k: f[k] for k in ("all_three", "kind", "colour", "background")}, "images": a.following,
            "sampler": evaluate.SAMPLER, "goal": GOALS["prompt_following_all_three"],
            "goal_met": f["all_three"] >= GOALS["prompt_following_all_three"]}


def run_ti(a, kinds, mdl, clip, vae, net):
    concepts = {}
    for kind in kinds:
        t = time.time()
        ti_clip, words = evaluate.learn(mdl, clip, vae, kind, a.ti_steps)
        minutes = (time.time() - t) / 60
        learned = evaluate.concept_scores(mdl, ti_clip, vae, words, kind, net, a.images, seed=1000)
        baseline = evaluate.concept_scores(mdl, clip, vae, world.UNNAMED_WORD, kind, net, a.images, seed=1000)
        code = evaluate.concept_scores(mdl, clip, vae, world.CODE_WORDS[kind], kind, net, a.images, seed=1000)
        concepts[kind] = {"textual_inversion": learned, "plain_word_object": baseline, "private_code_word": code,
                          "ti_minutes": round(minutes, 2)}
        print(f"{kind}: TI fidelity {learned['fidelity']:.2f} editability {learned['editability']:.2f} | "
              f"'object' {baseline['fidelity']:.2f} / {baseline['editability']:.2f} | "
              f"code word '{world.CODE_WORDS[kind]}' {code['fidelity']:.2f} / {code['editability']:.2f} "
              f"({minutes:.1f} min TI)", flush=True)
    mean = mean_of([c["textual_inversion"] for c in concepts.values()])
    return {"steps": a.ti_steps, "settings": evaluate.TI, "images_per_concept": 5, "concepts": concepts,
            "mean": mean, "object_word_mean": mean_of([c["plain_word_object"] for c in concepts.values()]),
            "code_word_mean": mean_of([c["private_code_word"] for c in concepts.values()]),
            "goals_met": {"fidelity": mean["fidelity"] >= GOALS["ti_fidelity"],
                          "editability": mean["editability"] >= GOALS["ti_editability"]}}


def run_personalisation(a, kinds, mdl, clip, vae, net):
    """Each row learns each kind from each of `a.one_image_seeds`' single images (world.concept_scenes
    with n=1: one colour, background, size and position per seed; the trainer's seed is the same number)."""
    seeds = [int(x) for x in a.one_image_seeds.split(",")]
    rows = {name: {} for name in a.rows.split(",")}
    for kind in kinds:
        for seed in seeds:
            for name in rows:
                trainer, settings, short = PERSONALISATION[name]
                t = time.time()
                if trainer == "ti":
                    tuned, words = evaluate.learn(mdl, clip, vae, kind, a.ti_steps, seed=seed, images=1,
                                                  tag=f"s{seed}", **settings)
                else:
                    tuned, words = evaluate.boost(mdl, clip, vae, kind, a.tb_steps, seed=seed,
                                                  tag=f"{short}-s{seed}", **settings)
                minutes = (time.time() - t) / 60
                s = evaluate.concept_scores(mdl, tuned, vae, words, kind, net, a.images, seed=1000)
                if trainer == "textboost":          # its LoRA changes the encoder for every prompt
                    s["following"] = evaluate.prompt_following(mdl, tuned, vae, n=a.tb_following, net=net)["all_three"]
                rows[name].setdefault(kind, {})[str(seed)] = {**s, "minutes": round(minutes, 2)}
                print(f"{kind} image {seed} {name}: fidelity {s['fidelity']:.2f} editability "
                      f"{s['editability']:.2f} ({minutes:.1f} min)", flush=True)
    base = evaluate.prompt_following(mdl, clip, vae, n=a.tb_following, net=net)["all_three"]
    return {"images_per_concept": 1, "one_image_seeds": seeds, "ti_steps": a.ti_steps, "textboost_steps": a.tb_steps,
            "following_prompts": a.tb_following, "base_following": base,
            "ti_settings": evaluate.TI, "textboost_settings": evaluate.TEXTBOOST,
            "rows": {name: {"per_concept": per, "settings": PERSONALISATION[name][1]} for name, per in rows.items()}}


def summarise_personalisation(section: dict, earlier: dict | None) -> dict:
    """Trials (one row's run on one kind from one render) of `earlier` (the file's personalisation
    section) measured the same way join this run's, so rows and renders can run in separate
    processes; then each row's means, and TextBoost against one-image TI and against each ablation,
    paired over the trials both rows have (mean difference and its standard error)."""
    same = ("ti_steps", "textboost_steps", "ti_settings", "textboost_settings", "images_per_figure", "kinds")
    if earlier and all(earlier.get(k) == section.get(k) for k in same):
        rows = {}
        for name in PERSONALISATION:
            old = earlier.get("rows", {}).get(name, {}).get("per_concept", {})
            new = section["rows"].get(name, {}).get("per_concept", {})
            if old or new:
                rows[name] = {"per_concept": {kind: {**old.get(kind, {}), **new.get(kind, {})}
                                              for kind in section["kinds"] if kind in old or kind in new},
                              "settings": PERSONALISATION[name][1]}
        section["rows"] = rows
        section["one_image_seeds"] = sorted({int(seed) for row in rows.values()
                                             for by_seed in row["per_concept"].values() for seed in by_seed})
    for row in section["rows"].values():
        row["per_kind_mean"] = {kind: mean_of(list(by_seed.values())) for kind, by_seed in row["per_concept"].items()}
        trials = [s for by_seed in row["per_concept"].values() for s in by_seed.values()]
        row["trials"] = len(trials)
        row["mean"] = mean_of(trials)
        if all("following" in s for s in trials):
            row["mean"]["following"] = sum(s["following"] for s in trials) / len(trials)
    rows = section["rows"]
    section.pop("textboost_vs_ti", None)
    section.pop("ablation_costs", None)
    if "textboost" in rows and "textual_inversion_1_image" in rows:
        vs = paired(rows["textboost"], rows["textual_inversion_1_image"])
        vs["goal_met"] = (vs["editability"] >= GOALS["textboost_editability_gain_over_one_image_ti"]
                          and vs["fidelity"] >= 0)
        section["textboost_vs_ti"] = vs
    if "textboost" in rows:
        section["ablation_costs"] = {name: paired(rows["textboost"], row) for name, row in rows.items()
                                     if name.startswith("textboost_without") or name.startswith("textboost_with_")}
    return section


def paired(a: dict, b: dict) -> dict:
    """Row a minus row b over the trials (kind, render) both have: mean difference of each figure
    and its standard error."""
    keys = [(kind, seed) for kind, by_seed in a["per_concept"].items() for seed in by_seed
            if seed in b["per_concept"].get(kind, {})]
    return paired_rows([a["per_concept"][k][s] for k, s in keys], [b["per_concept"][k][s] for k, s in keys])


def paired_rows(a: list[dict], b: list[dict]) -> dict:
    """Mean difference a - b of each figure over matched trials, and its standard error."""
    out = {"trials": len(a)}
    for metric in ("fidelity", "editability", "following"):
        diffs = [x[metric] - y[metric] for x, y in zip(a, b) if metric in x and metric in y]
        if len(diffs) > 1:
            out[metric] = statistics.mean(diffs)
            out[f"{metric}_standard_error"] = statistics.stdev(diffs) / len(diffs) ** 0.5
    return out


def run_fusion(a, kinds, mdl, clip, vae, net):
    """Per kind and render (`a.fusion_seeds`, as in the personalisation section: world.concept_scenes
    with n=1, the trainer's seed the same number): the over-fitted word, then plain CFG and the sweep."""
    plain_sampler = {"sampler_name": "ddim", "scheduler": FUSION_SAMPLING["scheduler"],
                     "steps": FUSION_SAMPLING["steps"], "cfg": FUSION_OMEGA_1}
    per_kind = {}
    for kind in kinds:
        for seed in [int(x) for x in a.fusion_seeds.split(",")]:
            t = time.time()
            tuned, words = evaluate.learn(mdl, clip, vae, kind, FUSION_TI["steps"], seed=seed,
                                          images=FUSION_TI["images"], learning_rate=FUSION_TI["learning_rate"],
                                          tag=f"overfit-s{seed}", run_name=f"quality-overfit-{kind}-s{seed}")
            row = {"ti_minutes": round((time.time() - t) / 60, 2),
                   "plain_cfg": evaluate.concept_scores(mdl, tuned, vae, words, kind, net, a.images, seed=1000,
                                                        sampler=plain_sampler)}
            for w2, g in fusion_sweep(a.fusion_sweep):
                settings = {**FUSION_SAMPLING, "omega_1": FUSION_OMEGA_1, "omega_2": w2, "gamma": g}
                row[fusion_name(w2, g)] = evaluate.concept_scores(mdl, tuned, vae, words, kind, net, a.images,
                                                                  seed=1000, fusion=settings)
            per_kind.setdefault(kind, {})[str(seed)] = row
            print(f"{kind} image {seed} over-fitted word: " + ", ".join(
                f"{k} {v['fidelity']:.2f}/{v['editability']:.2f}" for k, v in row.items() if isinstance(v, dict)),
                flush=True)
    return {"overfit_ti": FUSION_TI, "sampling": {**FUSION_SAMPLING, "omega_1": FUSION_OMEGA_1},
            "per_concept": per_kind}


def fusion_sweep(text: str) -> list[tuple[float, float]]:
    """"all" -> FUSION_SWEEP; "7.5:0.6,10:1" -> those (omega_2, gamma) settings."""
    if text == "all":
        return FUSION_SWEEP
    return [(float(w2), float(g)) for w2, g in (pair.split(":") for pair in text.split(","))]


def fusion_name(omega_2: float, gamma: float) -> str:
    return f"fusion_omega2_{omega_2}_gamma_{gamma}"


def summarise_fusion(section: dict, earlier: dict | None) -> dict:
    """Trials (one kind from one render) of `earlier` (the file's fusion section, measured the same
    way) join this run's, setting by
    setting, so parts of the sweep can run in separate processes; then per setting the mean over its
    trials, the paired difference from plain CFG with its standard error, and the settings measured
    on every trial that meet issue 7's goal on those means."""
    same = ("overfit_ti", "sampling", "images_per_figure")
    if earlier and all(earlier.get(k) == section.get(k) for k in same):
        for kind, by_seed in earlier.get("per_concept", {}).items():
            new = section["per_concept"].setdefault(kind, {})
            for seed, row in by_seed.items():
                new[seed] = {**row, **new.get(seed, {})}
    trials = [row for by_seed in section["per_concept"].values() for row in by_seed.values()]
    names = ["plain_cfg"] + [fusion_name(w2, g) for w2, g in FUSION_SWEEP
                             if any(fusion_name(w2, g) in row for row in trials)]
    section["sweep_omega2_gamma"] = [[w2, g] for w2, g in FUSION_SWEEP if fusion_name(w2, g) in names]
    section["kinds"] = [k for k in world.UNNAMED_KINDS if k in section["per_concept"]]
    section["fusion_seeds"] = sorted({int(s) for by_seed in section["per_concept"].values() for s in by_seed})
    section["trials"] = len(trials)
    section["mean"] = {name: {**mean_of([row[name] for row in trials if name in row]),
                              "trials": sum(name in row for row in trials)} for name in names}
    section["over_plain_cfg"] = {
        name: paired_rows([row[name] for row in trials if name in row], [row["plain_cfg"] for row in trials if name in row])
        for name in names[1:]}
    means, plain = section["mean"], section["mean"]["plain_cfg"]
    section["settings_meeting_goal"] = [
        name for name in names[1:] if means[name]["trials"] == len(trials)
        and means[name]["editability"] >= plain["editability"] + GOALS["fusion_editability_gain_over_plain"]
        and means[name]["fidelity"] >= plain["fidelity"] - GOALS["fusion_fidelity_loss_max"]]
    section["goal_met"] = bool(section["settings_meeting_goal"])
    return section


def held_out(mdl, clip, vae, net, n: int, encode=None) -> dict:
    """Mean ShapeWorld reward and prompt following of images from the held-out prompts."""
    from texttune.shapeworld import reward
    cases = evaluate.following_cases(n, seed=0)
    images = evaluate.generate(mdl, clip, vae, [p for p, _ in cases], seed=0, encode=encode)
    f = evaluate.score(images, [e for _, e in cases], net)
    return {"reward": reward.large_and_centred(images.movedim(-1, 1)).mean().item(), "following": f["all_three"]}


def run_reward(a, mdl, clip, vae, net):
    from texttune.nodes.reward_training import TrainRewardLoRA, TrainRewardTextEncoder
    from texttune.nodes.text_encoders import BlendTextEncoders
    from texttune.shapeworld import reward
    from texttune.trainers.lora import ALL_UNET_TARGETS
    shapes = reward.LargeAndCentred()
    args = {**REWARD_TRAINING, "prompts": "\n".join(REWARD_TRAIN_PROMPTS), "prompt_file": "", "steps": a.reward_steps}
    before = held_out(mdl, clip, vae, net, a.following)
    out = {"training": {**args, "learning_rates": {"text_encoder": a.reward_lr, "lora": a.reward_lora_lr}},
           "held_out_prompts": a.following, "before": before}
    t = time.time()
    with common.torch.inference_mode():
        tuned = TrainRewardTextEncoder.execute(model=mdl, clip=clip, vae=vae, reward=shapes, encoder_name="sw-reward",
                                               learning_rate=a.reward_lr, run_name="quality-reward-te", **args)[0]
    out["text_encoder"] = {**held_out(mdl, tuned, vae, net, a.following), "minutes": round((time.time() - t) / 60, 2)}
    t = time.time()
    with common.torch.inference_mode():
        lora_model = TrainRewardLoRA.execute(model=mdl, clip=clip, vae=vae, reward=shapes, lora_name="sw-reward",
                                             lora_rank=4, lora_targets=ALL_UNET_TARGETS,
                                             learning_rate=a.reward_lora_lr, run_name="quality-reward-lora",
                                             **args)[0]
    out["unet_lora"] = {**held_out(lora_model, clip, vae, net, a.following), "minutes": round((time.time() - t) / 60, 2)}
    for name in ("text_encoder", "unet_lora"):
        r = out[name]
        r["reward_gain"] = r["reward"] / before["reward"] - 1
        r["following_change"] = r["following"] - before["following"]
        r["goal_met"] = (r["reward_gain"] >= GOALS["reward_gain_min"]
                         and r["following_change"] >= -GOALS["reward_following_drop_max"])
        print(f"reward {name}: reward {before['reward']:.3f} -> {r['reward']:.3f} ({100 * r['reward_gain']:+.0f}%), "
              f"following {before['following']:.3f} -> {r['following']:.3f}", flush=True)

    def blended(w):
        def encode(text):
            return BlendTextEncoders.execute(text=text, clip_a=clip, clip_b=tuned, weights=f"{1 - w}, {w}")[0]
        return encode
    dial = {str(w): held_out(mdl, clip, vae, net, a.following, encode=blended(w)) for w in REWARD_DIAL}
    rewards = [dial[str(w)]["reward"] for w in REWARD_DIAL]
    out["dial"] = {"weights": REWARD_DIAL, "by_weight": dial,
                   "monotone_increasing": all(x < y for x, y in zip(rewards, rewards[1:]))}
    print("dial: " + ", ".join(f"w={w}: {r:.3f}" for w, r in zip(REWARD_DIAL, rewards)), flush=True)
    return out


def file_digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sections", default=",".join(SECTIONS))
    ap.add_argument("--following", type=int, default=72, help="prompt-following prompts (one image each)")
    ap.add_argument("--ti-steps", type=int, default=300)
    ap.add_argument("--tb-steps", type=int, default=250)
    ap.add_argument("--rows", default=",".join(PERSONALISATION), help="personalisation rows to run")
    ap.add_argument("--one-image-seeds", default="0,1,2",
                    help="personalisation: learn each kind from each of these seeds' single image")
    ap.add_argument("--fusion-seeds", default="0,1,2",
                    help="fusion: over-fit a word on each of these seeds' single image of each kind")
    ap.add_argument("--fusion-sweep", default="all",
                    help="fusion: the (omega_2:gamma) settings to run, e.g. 7.5:1,10:1 (default all of FUSION_SWEEP)")
    ap.add_argument("--tb-following", type=int, default=18,
                    help="personalisation: prompt-following prompts drawn with each TextBoost encoder")
    ap.add_argument("--images", type=int, default=20, help="images per fidelity / editability figure")
    ap.add_argument("--kinds", default=",".join(world.UNNAMED_KINDS))
    ap.add_argument("--reward-steps", type=int, default=70, help="reward-training steps (each stage)")
    ap.add_argument("--reward-lr", type=float, default=3e-5, help="TextCraftor's learning rate on ShapeWorld")
    ap.add_argument("--reward-lora-lr", type=float, default=3e-4, help="the UNet LoRA's learning rate")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (tiny models: one thread avoids oversubscription stalls on a shared CPU)")
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    common.torch.set_num_threads(a.threads)
    common.redirect_folders()
    mdl, clip, vae = evaluate.load_checkpoint()
    net = classifier.load()
    kinds = a.kinds.split(",")
    checkpoint = {"file": os.path.relpath(model.WEIGHTS, common.REPO), "sha256_16": file_digest(model.WEIGHTS)}
    runners = {"following": lambda: run_following(a, mdl, clip, vae, net),
               "ti": lambda: run_ti(a, kinds, mdl, clip, vae, net),
               "personalisation": lambda: run_personalisation(a, kinds, mdl, clip, vae, net),
               "fusion": lambda: run_fusion(a, kinds, mdl, clip, vae, net),
               "reward": lambda: run_reward(a, mdl, clip, vae, net)}
    header = {"benchmark": "quality", "checkpoint": checkpoint, "goals": GOALS,
              "what": "ShapeWorld classifier accuracy of generated images: prompt following of the base model; "
                      "learned words for the unnamed concepts (textual inversion from 5 images against the "
                      "plain word 'object'; one-image personalisation by TextBoost, its ablations and "
                      "textual inversion; fusion sampling against plain CFG with an over-fitted word; reward "
                      "fine-tuning on held-out prompts and the blend dial)"}
    for name in a.sections.split(","):
        t0 = time.time()
        section = runners[name]()
        section.update({"minutes": round((time.time() - t0) / 60, 1), "images_per_figure": a.images,
                        "kinds": kinds, "machine": common.machine(), "command": common.command()})
        with results_lock():   # sections run side by side read, merge and write one file
            if name == "personalisation":
                section = summarise_personalisation(section, None if a.no_write else saved_section(header, name))
            if name == "fusion":
                section = summarise_fusion(section, None if a.no_write else saved_section(header, name))
            print(json.dumps(section, indent=1)[:4000])
            if not a.no_write:
                print("wrote", save_section(header, name, section))


@contextlib.contextmanager
def results_lock():
    """An exclusive lock on bench/results/quality.json between processes of this benchmark (POSIX)."""
    try:
        import fcntl
    except ImportError:     # Windows: run sections one at a time there
        yield
        return
    with open(os.path.join(tempfile.gettempdir(), "texttune-quality.lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def saved_section(header: dict, name: str) -> dict | None:
    """Section `name` of bench/results/quality.json if it was measured on this checkpoint."""
    path = os.path.join(common.RESULTS, "quality.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        result = json.load(f)
    return result.get(name) if result.get("checkpoint") == header["checkpoint"] else None


def save_section(header: dict, name: str, section: dict) -> str:
    """Merge one finished section into bench/results/quality.json as it is now (so runs of other
    sections, even at the same time, keep theirs); parts measured on another checkpoint are dropped."""
    path = os.path.join(common.RESULTS, "quality.json")
    result = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            result = json.load(f)
    if result.get("checkpoint") != header["checkpoint"]:
        result = {}
    result.update(header)
    result[name] = section
    return common.write_result("quality", result)


if __name__ == "__main__":
    main()
