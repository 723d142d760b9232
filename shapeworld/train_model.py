"""Train the ShapeWorld model and write shapeworld/weights/shapeworld.safetensors (float16, the
UNet, CLIP and VAE under ComfyUI's SD1 prefixes) and shapeworld.json (seed, steps, minutes per
stage, the VAE's reconstruction accuracy as the classifier reads it).

    .host/venv/bin/python shapeworld/train_model.py          # 44.3 minutes on 2 CPU cores (weights/shapeworld.json)

Three stages, all from SEED:
1. the TAESD-architecture autoencoder on rendered scenes (mostly on 32 px crops, which is four
   times cheaper and teaches the same local code, then on whole images), with a little noise on
   the latents so the decoder forgives a diffusion model's small errors. Its reconstructions are
   checked with the classifier before going on (shapes must come back with their kinds). Under
   bf16 autocast with float32 weights, which halves its steps on the CPU;
2. latents of a fixed training set (encoded under bf16 autocast), and the VAE's scale and shift so the UNet sees unit-variance
   latents after SD1's 0.18215;
3. the UNet and the CLIP text encoder jointly (as LDM trained its text encoder), eps-prediction
   on SD1's noise schedule through ComfyUI's own model code, min-SNR-5 weighting, AdamW, an
   exponential moving average of the weights (saved), captions with attributes left out at
   random (often enough that bare prompts such as "a photo of a dax" are 3% of them: rarer, and
   the model drew half-formed shapes from such prompts; world.caption_variant), the unnamed
   kinds' private code words (world.CODE_WORDS) in 60% of their captions, and 10% empty captions
   for classifier-free guidance. The token-embedding table stays at its seeded init (the world
   uses about forty words; its dense gradient, AdamW and EMA cost a fifth of every step) and the
   forward runs under bf16 autocast with float32 weights (fused AdamW).

`--eval-every N` measures the EMA weights' prompt following every N steps (a diagnostic: it adds
time and is not part of the committed run).
"""
import argparse
import json
import math
import os
import random
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests"))
from comfy_host import setup_in_process  # noqa: E402

setup_in_process()
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from texttune.shapeworld import classifier, evaluate, model, world  # noqa: E402
from texttune.trainers.comfy_adapter import Diffusion, trainable_session  # noqa: E402

SEED = 0
VAE_CROP_STEPS = 800
VAE_FULL_STEPS = 50
VAE_BATCH = 32
DATASET = 12_000
DIFFUSION_STEPS = 6800
DIFFUSION_BATCH = 48
LR = 1e-3
LATENT_NOISE = 0.1
CAPTION_DROP = 0.1
MIN_SNR = 5.0
EMA = 0.999


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def pixels(batch) -> torch.Tensor:
    return torch.from_numpy(world.render_batch(batch)).movedim(-1, 1)


# -- stage 1: the autoencoder ----------------------------------------------------------------

def edge_loss(y, x):
    """L1 between image gradients: the edges carry a shape's kind, and are few pixels."""
    dy = lambda t: t[..., 1:, :] - t[..., :-1, :]  # noqa: E731
    dx = lambda t: t[..., :, 1:] - t[..., :, :-1]  # noqa: E731
    return (dy(y) - dy(x)).abs().mean() + (dx(y) - dx(x)).abs().mean()


def train_vae(taesd, rng: random.Random, crop_steps: int, full_steps: int, batch: int):
    g = torch.Generator().manual_seed(SEED)
    params = list(taesd.taesd_encoder.parameters()) + list(taesd.taesd_decoder.parameters())
    total = crop_steps + full_steps
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=total, pct_start=0.05)
    taesd.train()
    for step in range(total):
        crop = step < crop_steps
        x = pixels([world.sample_scene(rng) for _ in range(batch)])
        if crop:   # a random 32x32 window of each image, on the 8 px latent grid
            i, j = (8 * torch.randint(0, 5, (2,), generator=g)).tolist()
            x = x[:, :, i:i + 32, j:j + 32]
        with torch.autocast(x.device.type, dtype=torch.bfloat16):   # fp32 weights; halves the step on the CPU
            e = taesd.taesd_encoder(x)
            y = taesd.taesd_decoder(e + LATENT_NOISE * torch.randn(e.shape, generator=g))
        e, y = e.float(), y.float()
        loss = (y - x).abs().mean() + F.mse_loss(y, x) + edge_loss(y, x) + 1e-4 * e.pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % 50 == 0 or step == total - 1:
            log(f"vae step {step}/{total} {'crop' if crop else 'full'} loss {loss.item():.4f}")
    taesd.eval()


@torch.no_grad()
def encode(taesd, batch_scenes, chunk=250) -> torch.Tensor:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return torch.cat([taesd.taesd_encoder(pixels(batch_scenes[i:i + chunk])).float()
                          for i in range(0, len(batch_scenes), chunk)])


@torch.no_grad()
def reconstruction_accuracy(taesd, n=500) -> dict:
    """The classifier's accuracy on VAE reconstructions of held-out one-shape scenes."""
    rng = random.Random(2_000_000)
    held = [world.sample_scene(rng, two_shape_p=0.0) for _ in range(n)]
    recon = torch.cat([taesd.taesd_decoder(taesd.taesd_encoder(pixels(held[i:i + 100]))) for i in range(0, n, 100)])
    res = evaluate.score(recon.clamp(0, 1).movedim(1, -1), [classifier.labels(s) for s in held])
    return {k: v for k, v in res.items() if k != "predictions"}


# -- stage 3: UNet and text encoder ----------------------------------------------------------

class Captions:
    """Caption text -> token ids (cached: the world's vocabulary is small)."""

    def __init__(self, clip):
        self.clip, self.cache = clip, {}

    def ids(self, text: str) -> list:
        if text not in self.cache:
            self.cache[text] = [t[0] for t in self.clip.tokenize(text)["l"][0]]
        return self.cache[text]


def evaluate_now(patcher, clip, taesd, n: int = 36) -> dict:
    """Prompt following of the weights as they are now (written to a temporary checkpoint and read
    back through ComfyUI's loader, so it is measured exactly as the benchmark measures it)."""
    import tempfile
    import safetensors.torch
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "shapeworld.safetensors")
        safetensors.torch.save_file(model.checkpoint_state_dict(patcher, clip, taesd), path)
        mdl, c, vae = evaluate.load_checkpoint(path)
        res = evaluate.prompt_following(mdl, c, vae, n=n, seed=0)
    return {k: round(res[k], 3) for k in ("all_three", "kind", "colour", "background")}


def train_diffusion(patcher, clip, z: torch.Tensor, data_scenes, rng: random.Random, steps: int, batch: int,
                    eval_every: int = 0, taesd=None) -> list:
    g = torch.Generator().manual_seed(SEED + 1)
    diffusion = Diffusion(patcher)
    sigmas = diffusion.sampling.sigmas.float()
    text = clip.cond_stage_model.clip_l
    captions = Captions(clip)
    with trainable_session([patcher], [clip], memory_required=0):
        # The token table (49408 x 64, a third of all weights) stays at its seeded init: the world
        # uses about forty words, and a frozen table spares its dense gradient, AdamW and EMA, which
        # took a fifth of every step. The transformer learns to read the fixed random codes.
        params = list(patcher.model.diffusion_model.parameters()) + [
            p for n, p in text.named_parameters() if "token_embedding" not in n]
        for p in params:
            p.requires_grad_(True)
        ema = [p.detach().clone() for p in params]
        opt = torch.optim.AdamW(params, lr=LR, weight_decay=0.01, betas=(0.9, 0.99), fused=True)
        warm = 200

        def lr_at(step):
            if step < warm:
                return (step + 1) / warm
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
        curve = []
        t0 = time.time()
        for step in range(steps):
            idx = torch.randint(0, z.shape[0], (batch,), generator=g)
            texts = ["" if rng.random() < CAPTION_DROP else world.caption_variant(data_scenes[i], rng, private_words=True)
                     for i in idx.tolist()]
            x0 = z[idx].to(diffusion.device)
            t = torch.randint(0, len(sigmas), (batch,), generator=g)
            sigma = sigmas[t].to(diffusion.device)
            noise = torch.randn(x0.shape, generator=g).to(diffusion.device)
            snr = 1.0 / sigma ** 2
            # bf16 autocast (fp32 weights and optimiser): a quarter off each step on AVX512-BF16 CPUs
            with torch.autocast(diffusion.device.type, dtype=torch.bfloat16):
                cond, _ = text([captions.ids(t) for t in texts])
                loss = diffusion.loss(x0, noise, sigma, cond, sample_weight=snr.clamp(max=MIN_SNR) / snr)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            decay = min(EMA, (1 + step) / (10 + step))
            with torch.no_grad():
                torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - decay)
            if step % 100 == 0 or step == steps - 1:
                rate = (time.time() - t0) / (step + 1)
                log(f"diffusion step {step}/{steps} loss {loss.item():.4f} {rate:.2f}s/step, {rate * (steps - step - 1) / 60:.1f} min left")
            if eval_every and (step + 1) % eval_every == 0:       # diagnostic: the EMA weights' prompt following
                with torch.no_grad():
                    live = [p.detach().clone() for p in params]
                    for p, e in zip(params, ema):
                        p.copy_(e)
                curve.append({"step": step + 1, **evaluate_now(patcher, clip, taesd)})
                log(f"prompt following at step {step + 1}: {curve[-1]}")
                with torch.no_grad():
                    for p, v in zip(params, live):
                        p.copy_(v)
        with torch.no_grad():
            for p, e in zip(params, ema):
                p.copy_(e)
                p.requires_grad_(False)
    return curve


def main():
    started = time.time()
    ap = argparse.ArgumentParser()
    ap.add_argument("--vae-crop-steps", type=int, default=VAE_CROP_STEPS)
    ap.add_argument("--vae-full-steps", type=int, default=VAE_FULL_STEPS)
    ap.add_argument("--dataset", type=int, default=DATASET)
    ap.add_argument("--steps", type=int, default=DIFFUSION_STEPS)
    ap.add_argument("--out", default=model.WEIGHTS)
    ap.add_argument("--vae-from", help="take the VAE of this ShapeWorld checkpoint instead of training one (for trial runs)")
    ap.add_argument("--eval-every", type=int, default=0,
                    help="diagnostic: measure prompt following of the EMA weights every N steps (adds time)")
    ap.add_argument("--threads", type=int, default=max(1, os.cpu_count() or 1))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(SEED)
    model.register()
    minutes = {}
    patcher, clip, taesd = model.build(SEED)

    t = time.time()
    if a.vae_from:
        import comfy.utils
        sd = comfy.utils.load_torch_file(a.vae_from)
        taesd.load_state_dict({k.split(".", 1)[1]: v.float() for k, v in sd.items() if k.startswith("first_stage_model.")})
        a.vae_crop_steps = a.vae_full_steps = 0
    else:
        train_vae(taesd, random.Random(SEED), a.vae_crop_steps, a.vae_full_steps, VAE_BATCH)
    minutes["vae"] = (time.time() - t) / 60
    recon = reconstruction_accuracy(taesd)
    log(f"VAE reconstructions, classifier accuracy: {recon}")

    t = time.time()
    data_scenes = world.scenes(SEED + 1, a.dataset)
    e = encode(taesd, data_scenes)
    with torch.no_grad():   # decoder input = (latent - shift) * scale = e; model sees latent * 0.18215
        taesd.vae_scale.fill_(0.18215 * e.std().item())
        taesd.vae_shift.fill_(-e.mean().item() / taesd.vae_scale.item())
        z = Diffusion(patcher).to_model_latents(e / taesd.vae_scale + taesd.vae_shift)
    log(f"latents: {tuple(z.shape)} mean {z.mean():.3f} std {z.std():.3f}")
    minutes["latents"] = (time.time() - t) / 60

    t = time.time()
    curve = train_diffusion(patcher, clip, z, data_scenes, random.Random(SEED + 2), a.steps, DIFFUSION_BATCH,
                            a.eval_every, taesd)
    minutes["diffusion"] = (time.time() - t) / 60

    import safetensors.torch
    sd = model.checkpoint_state_dict(patcher, clip, taesd)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    tmp = a.out + ".partial"
    safetensors.torch.save_file(sd, tmp, metadata={"seed": str(SEED), "trained_by": "shapeworld/train_model.py"})
    os.replace(tmp, a.out)
    minutes = {k: round(v, 1) for k, v in minutes.items()}
    minutes["total"] = round(sum(minutes.values()), 1)
    info = {"seed": SEED, "vae_steps": [a.vae_crop_steps, a.vae_full_steps], "vae_batch": VAE_BATCH,
            "dataset_scenes": a.dataset, "diffusion_steps": a.steps, "diffusion_batch": DIFFUSION_BATCH,
            "minutes": minutes, "wall_minutes": round((time.time() - started) / 60, 1),
            "vae_reconstruction_accuracy": recon, "prompt_following_during_training": curve, "file_mb": round(os.path.getsize(a.out) / 1e6, 2),
            "torch_threads": torch.get_num_threads(), "cpu": _cpu(), "command": "python shapeworld/train_model.py"}
    with open(os.path.splitext(a.out)[0] + ".json", "w", encoding="utf-8") as f:
        json.dump(info, f, indent=1)
        f.write("\n")
    log(f"wrote {a.out}: {info}")


def _cpu():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), None)
    except OSError:
        return None


if __name__ == "__main__":
    main()
