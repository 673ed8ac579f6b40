"""Images/s of float ResNet training on this CPU: the baseline the emulator is compared to.

    python bench/train_speed.py [--model resnet20] [--batch-size 128] [--steps 10] [--json out.json]

Times full training steps (forward, backward, SGD update) on random 3x32x32 inputs after
warm-up steps, and prints images/s and GMAC/s (3x the forward MACs per image).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from reference.geometry import count_macs  # noqa: E402
from reference.models import build_model  # noqa: E402


def measure(model_name: str, batch_size: int, steps: int, warmup: int = 2) -> dict:
    torch.manual_seed(0)
    model = build_model(model_name, 10, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(batch_size, 3, 32, 32)
    y = torch.randint(0, 10, (batch_size,))
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - start
    images_per_s = steps * batch_size / seconds
    fwd_macs = sum(count_macs(model, 3).values())
    return {"model": model_name, "batch_size": batch_size, "threads": torch.get_num_threads(),
            "images_per_s": images_per_s, "train_gmac_per_s": images_per_s * 3 * fwd_macs / 1e9}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet20")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args()
    r = measure(args.model, args.batch_size, args.steps)
    print(f"float training, {r['model']}, batch {r['batch_size']}, {r['threads']} threads: "
          f"{r['images_per_s']:.1f} images/s, {r['train_gmac_per_s']:.2f} GMAC/s (fwd+bwd)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=2)


if __name__ == "__main__":
    main()
