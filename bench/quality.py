"""ShapeWorld quality benchmark: does the base model follow prompts, and does a learned word draw
an unnamed concept (fidelity) and still take colours from the prompt (editability)?

Everything runs in this process on the committed ShapeWorld checkpoint, through ComfyUI's own
nodes for generation (CLIPTextEncode, KSampler euler/normal 20 steps, cfg 5, VAEDecode) and
through TextTune's Train Textual Inversion node as the executor calls it. The ShapeWorld
classifier reads kind, colour and background from every image. Seeds are fixed.

- prompt following: "a <colour> <kind> on a <background> background" over the six named kinds
  and six colours; right = kind, colour and background all read back;
- per unnamed concept (ring, crescent, hourglass): textual inversion on 5 rendered images of it
  (various colours, backgrounds, sizes, positions), then
  fidelity    = share of "a photo of a <word>" images classified as the concept,
  editability = share of "a <colour> <word> on a <background> background" images with the concept
                AND both asked colours;
  the same two numbers with the plain word "object" in place of the learned word (baseline).

Run: `$(cat .host/python) bench/quality.py` from the repository root (about 10 minutes on 2 CPU
cores); writes bench/results/quality.json.
"""
import argparse
import time

import common  # bench/common.py: host set-up; must come before ComfyUI and TextTune imports

from texttune.shapeworld import classifier, evaluate, world  # noqa: E402

GOALS = {"prompt_following_all_three": 0.8, "ti_fidelity": 0.8, "ti_editability": 0.6, "ti_steps_max": 300}
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--following", type=int, default=72, help="prompt-following prompts (one image each)")
    ap.add_argument("--ti-steps", type=int, default=300)
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
    t0 = time.time()
    following = evaluate.prompt_following(mdl, clip, vae, n=a.following, seed=0, net=net)
    print(f"prompt following: {following['all_three']:.3f} (kind {following['kind']:.3f}, colour "
          f"{following['colour']:.3f}, background {following['background']:.3f})", flush=True)
    concepts = {}
    for kind in a.kinds.split(","):
        t = time.time()
        ti_clip, name = evaluate.learn(mdl, clip, vae, kind, a.ti_steps)
        minutes = (time.time() - t) / 60
        learned = evaluate.concept_scores(mdl, ti_clip, vae, f"embedding:{name}", kind, net, a.images, seed=1000)
        baseline = evaluate.concept_scores(mdl, clip, vae, world.UNNAMED_WORD, kind, net, a.images, seed=1000)
        concepts[kind] = {"textual_inversion": learned, "plain_word_object": baseline, "ti_minutes": round(minutes, 2)}
        print(f"{kind}: TI fidelity {learned['fidelity']:.2f} editability {learned['editability']:.2f} | "
              f"'object' fidelity {baseline['fidelity']:.2f} editability {baseline['editability']:.2f} "
              f"({minutes:.1f} min TI)", flush=True)
    mean = {k: sum(c["textual_inversion"][k] for c in concepts.values()) / len(concepts) for k in ("fidelity", "editability")}
    base = {k: sum(c["plain_word_object"][k] for c in concepts.values()) / len(concepts) for k in ("fidelity", "editability")}
    result = {
        "benchmark": "quality",
        "what": "ShapeWorld classifier accuracy of generated images: prompt following of the base model, "
                "and textual inversion on the unnamed concepts against the plain word 'object'",
        "prompt_following": {k: following[k] for k in ("all_three", "kind", "colour", "background")},
        "prompt_following_images": a.following,
        "ti_steps": a.ti_steps, "ti_settings": evaluate.TI, "images_per_figure": a.images,
        "concepts": concepts,
        "ti_mean": mean, "object_word_mean": base,
        "goals": GOALS,
        "goals_met": {"prompt_following": following["all_three"] >= GOALS["prompt_following_all_three"],
                      "ti_fidelity": mean["fidelity"] >= GOALS["ti_fidelity"],
                      "ti_editability": mean["editability"] >= GOALS["ti_editability"]},
        "sampler": evaluate.SAMPLER, "minutes": round((time.time() - t0) / 60, 1),
        "machine": common.machine(), "command": common.command(),
    }
    print({k: result[k] for k in ("prompt_following", "ti_mean", "object_word_mean", "goals_met")})
    if not a.no_write:
        print("wrote", common.write_result("quality", result))


if __name__ == "__main__":
    main()
