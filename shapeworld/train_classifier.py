"""Train the ShapeWorld classifier and write shapeworld/weights/classifier.safetensors and
classifier.json (held-out accuracy per head, the seed, the time it took).

    .host/venv/bin/python shapeworld/train_classifier.py

Training images are fresh one-shape scenes every step (seed 0 onwards); the held-out set is
3,000 scenes from seed 1_000_000, never seen in training. Mild blur, noise and colour jitter
make it read generated images, which are never as clean as the renders.
"""
import json
import os
import random
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from shapeworld import classifier, world  # noqa: E402

SEED = 0
STEPS = 1500
BATCH = 64
HELD_OUT_SEED = 1_000_000
HELD_OUT = 3000


def one_shape_batch(rng: random.Random, n: int):
    batch = [world.sample_scene(rng, two_shape_p=0.0) for _ in range(n)]
    x = torch.from_numpy(world.render_batch(batch)).movedim(-1, 1)
    y = {name: torch.tensor([labels.index(classifier.labels(s)[name]) for s in batch])
         for name, labels in classifier.HEADS.items()}
    return x, y


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    blur = torch.rand(n, 1, 1, 1, generator=g) < 0.5
    soft = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    x = torch.where(blur, soft, x)
    small = F.interpolate(F.interpolate(x, scale_factor=0.5, mode="area"), size=x.shape[-2:], mode="bilinear")
    x = torch.where(torch.rand(n, 1, 1, 1, generator=g) < 0.25, small, x)
    x = x * (1 + 0.08 * (torch.rand(n, 3, 1, 1, generator=g) - 0.5)) + 0.05 * (torch.rand(n, 1, 1, 1, generator=g) - 0.5)
    x = x + 0.03 * torch.rand(n, 1, 1, 1, generator=g) * torch.randn(x.shape, generator=g)
    return x.clamp(0, 1)


@torch.no_grad()
def accuracy(net, seed=HELD_OUT_SEED, n=HELD_OUT) -> dict:
    net.eval()
    rng = random.Random(seed)
    right = {name: 0 for name in classifier.HEADS}
    all_right = 0
    for start in range(0, n, 250):
        x, y = one_shape_batch(rng, min(250, n - start))
        logits = net(x)
        ok = {name: logits[name].argmax(1) == y[name] for name in classifier.HEADS}
        for name in right:
            right[name] += int(ok[name].sum())
        all_right += int(torch.stack(list(ok.values())).all(0).sum())
    out = {name: right[name] / n for name in right}
    out["all_three"] = all_right / n
    return out


def main():
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    torch.manual_seed(SEED)
    g = torch.Generator().manual_seed(SEED)
    rng = random.Random(SEED)
    net = classifier.Classifier()
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=STEPS, pct_start=0.1)
    t0 = time.time()
    for step in range(STEPS):
        net.train()
        x, y = one_shape_batch(rng, BATCH)
        logits = net(augment(x, g))
        loss = sum(F.cross_entropy(logits[k], y[k]) for k in classifier.HEADS)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == STEPS - 1:
            print(f"step {step} loss {loss.item():.4f} {time.time() - t0:.0f}s", flush=True)
    minutes = (time.time() - t0) / 60
    acc = accuracy(net)
    print(acc)
    import safetensors.torch
    os.makedirs(os.path.dirname(classifier.WEIGHTS), exist_ok=True)
    tmp = classifier.WEIGHTS + ".partial"
    safetensors.torch.save_file({k: v.contiguous() for k, v in net.state_dict().items()}, tmp)
    os.replace(tmp, classifier.WEIGHTS)
    with open(os.path.splitext(classifier.WEIGHTS)[0] + ".json", "w", encoding="utf-8") as f:
        json.dump({"held_out_accuracy": acc, "held_out_images": HELD_OUT, "held_out_seed": HELD_OUT_SEED,
                   "train_seed": SEED, "steps": STEPS, "batch": BATCH, "train_minutes": round(minutes, 1),
                   "torch_threads": torch.get_num_threads(), "command": "python shapeworld/train_classifier.py"},
                  f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
