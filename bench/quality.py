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
  and the same two numbers for the plain word "object" (baseline);
- personalisation: the same figures from ONE image of each concept, for one-image textual
  inversion, TextBoost (the prompt words are "<word> object", as TextBoost prompts with its class
  word) and TextBoost without each of its parts (augmentation tokens, knowledge preservation,
  SNR-weighted timesteps).

Run: `$(cat .host/python) bench/quality.py` from the repository root; writes
bench/results/quality.json. Sections run alone replace only their own part of that file (parts
measured on another checkpoint are dropped).
"""
import argparse
import hashlib
import json
import os
import time

import common  # bench/common.py: host set-up; must come before ComfyUI and TextTune imports

from texttune.shapeworld import classifier, evaluate, model, world  # noqa: E402

GOALS = {"prompt_following_all_three": 0.8, "ti_fidelity": 0.8, "ti_editability": 0.6, "ti_steps_max": 300,
         "textboost_editability_gain_over_one_image_ti": 0.15}
SECTIONS = ("following", "ti", "personalisation")
# one-image personalisation rows: name -> (trainer, node settings over evaluate.TI / evaluate.TEXTBOOST)
PERSONALISATION = {
    "textual_inversion_1_image": ("ti", {}),
    "textboost": ("textboost", {}),
    "textboost_without_augmentation_tokens": ("textboost", {"augmentation_tokens": False}),
    "textboost_without_knowledge_preservation": ("textboost", {"kp_weight": 0.0}),
    "textboost_with_uniform_timesteps": ("textboost", {"snr_timesteps": False}),
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
        concepts[kind] = {"textual_inversion": learned, "plain_word_object": baseline, "ti_minutes": round(minutes, 2)}
        print(f"{kind}: TI fidelity {learned['fidelity']:.2f} editability {learned['editability']:.2f} | "
              f"'object' fidelity {baseline['fidelity']:.2f} editability {baseline['editability']:.2f} "
              f"({minutes:.1f} min TI)", flush=True)
    mean = mean_of([c["textual_inversion"] for c in concepts.values()])
    return {"steps": a.ti_steps, "settings": evaluate.TI, "images_per_concept": 5, "concepts": concepts,
            "mean": mean, "object_word_mean": mean_of([c["plain_word_object"] for c in concepts.values()]),
            "goals_met": {"fidelity": mean["fidelity"] >= GOALS["ti_fidelity"],
                          "editability": mean["editability"] >= GOALS["ti_editability"]}}


def run_personalisation(a, kinds, mdl, clip, vae, net):
    rows = {name: {} for name in a.rows.split(",")}
    for kind in kinds:
        for name in rows:
            trainer, settings = PERSONALISATION[name]
            t = time.time()
            if trainer == "ti":
                tuned, words = evaluate.learn(mdl, clip, vae, kind, a.ti_steps, images=1, **settings)
            else:
                tuned, words = evaluate.boost(mdl, clip, vae, kind, a.tb_steps, tag=name, **settings)
            minutes = (time.time() - t) / 60
            s = evaluate.concept_scores(mdl, tuned, vae, words, kind, net, a.images, seed=1000)
            rows[name][kind] = {**s, "minutes": round(minutes, 2)}
            print(f"{kind} {name}: fidelity {s['fidelity']:.2f} editability {s['editability']:.2f} "
                  f"({minutes:.1f} min)", flush=True)
    means = {name: mean_of(list(per.values())) for name, per in rows.items()}
    out = {"images_per_concept": 1, "ti_steps": a.ti_steps, "textboost_steps": a.tb_steps,
           "ti_settings": evaluate.TI, "textboost_settings": evaluate.TEXTBOOST,
           "rows": {name: {"per_concept": per, "mean": means[name], "settings": PERSONALISATION[name][1]}
                    for name, per in rows.items()}}
    tb, ti = means.get("textboost"), means.get("textual_inversion_1_image")
    if tb and ti:
        gain = tb["editability"] - ti["editability"]
        out["textboost_vs_ti"] = {"editability_gain": gain, "fidelity_difference": tb["fidelity"] - ti["fidelity"],
                                  "goal_met": gain >= GOALS["textboost_editability_gain_over_one_image_ti"]
                                  and tb["fidelity"] >= ti["fidelity"]}
    if tb:
        out["ablation_costs"] = {name: {k: tb[k] - m[k] for k in m} for name, m in means.items()
                                 if name.startswith("textboost_without") or name.startswith("textboost_with_")}
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
    ap.add_argument("--images", type=int, default=20, help="images per fidelity / editability figure")
    ap.add_argument("--kinds", default=",".join(world.UNNAMED_KINDS))
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
               "personalisation": lambda: run_personalisation(a, kinds, mdl, clip, vae, net)}
    path = os.path.join(common.RESULTS, "quality.json")
    result = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            result = json.load(f)
    if result.get("checkpoint") != checkpoint:
        result = {}
    result.update({"benchmark": "quality", "checkpoint": checkpoint, "goals": GOALS,
                   "what": "ShapeWorld classifier accuracy of generated images: prompt following of the base model; "
                           "learned words for the unnamed concepts (textual inversion from 5 images against the "
                           "plain word 'object'; one-image personalisation by TextBoost, its ablations and "
                           "textual inversion)"})
    for name in a.sections.split(","):
        t0 = time.time()
        section = runners[name]()
        section.update({"minutes": round((time.time() - t0) / 60, 1), "images_per_figure": a.images,
                        "kinds": kinds, "machine": common.machine(), "command": common.command()})
        result[name] = section
    print(json.dumps({k: v for k, v in result.items() if k in SECTIONS}, indent=1)[:4000])
    if not a.no_write:
        print("wrote", common.write_result("quality", result))


if __name__ == "__main__":
    main()
