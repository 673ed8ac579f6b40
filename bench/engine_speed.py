"""Engine speed on this CPU: GMAC/s of every op for every CPU build vs PyTorch float32.

    python bench/engine_speed.py [--batch 128] [--slow-batch 2] [--builds fast native ap] [--json out.json]

Shapes are ResNet-20's conv layers. The fast build and PyTorch run at ``--batch``; the kernel
builds (native, ap) loop like the hardware and run at ``--slow-batch`` (GMAC/s is a rate, so
the figures compare; the ratio column says how each build does against PyTorch on the same op).
Target of the engine issue: fast build >= 0.5x PyTorch float conv on these shapes.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hls.csim import Engine  # noqa: E402
from host import numerics as nx  # noqa: E402

SHAPES = ((16, 16, 32, 3, 1), (16, 32, 32, 3, 2), (16, 32, 32, 1, 2), (32, 32, 16, 3, 1), (32, 64, 16, 3, 2),
          (64, 64, 8, 3, 1))  # (c_in, c_out, h = w, k, stride)
OPS = ("fwd", "bwd_data", "wgrad", "wgrad_psg")


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def engine_calls(eng: Engine, rng, n, c, o, h, k, stride) -> dict:
    pad = (k - 1) // 2
    x = rng.integers(-128, 128, (n, c, h, h)).astype(np.int8)
    w = rng.integers(-128, 128, (o, c, k, k)).astype(np.int8)
    ho = (h + 2 * pad - k) // stride + 1
    g = rng.integers(-32768, 32768, (n, o, ho, ho)).astype(np.int16)
    shifts = rng.integers(0, 3, o)
    R = nx.ratio_fixed(0.05)
    return {"fwd": lambda: eng.conv_fwd(x, w, stride, pad),
            "bwd_data": lambda: eng.conv_bwd_data(g, w, shifts, stride, pad, (h, h)),
            "wgrad": lambda: eng.conv_wgrad(x, g, k, stride, pad, "full"),
            "wgrad_psg": lambda: eng.conv_wgrad(x, g, k, stride, pad, "ratio", R)}


def torch_calls(n, c, o, h, k, stride) -> dict:
    import torch
    from torch.nn.grad import conv2d_input, conv2d_weight
    pad = (k - 1) // 2
    x = torch.randn(n, c, h, h)
    w = torch.randn(o, c, k, k)
    g = torch.randn(n, o, (h + 2 * pad - k) // stride + 1, (h + 2 * pad - k) // stride + 1)
    return {"fwd": lambda: torch.nn.functional.conv2d(x, w, stride=stride, padding=pad),
            "bwd_data": lambda: conv2d_input(x.shape, w, g, stride=stride, padding=pad),
            "wgrad": lambda: conv2d_weight(x, w.shape, g, stride=stride, padding=pad)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--slow-batch", type=int, default=2, help="batch of the kernel builds (native, ap)")
    p.add_argument("--builds", nargs="+", default=["fast", "native", "ap"], choices=["fast", "native", "ap"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json")
    args = p.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    rng = np.random.default_rng(0)
    engines = {b: Engine(b) for b in args.builds}
    rows = []
    print(f"GMAC/s on this CPU ({args.threads} threads); torch and fast at batch {args.batch}, "
          f"native and ap at batch {args.slow_batch}; ratio = build / torch float32 on the same op")
    head = f"{'shape c>o h k/s':<18}{'op':<11}{'torch':>8}" + "".join(f"{b:>9}{'ratio':>7}" for b in args.builds)
    print(head)
    for c, o, h, k, stride in SHAPES:
        ho = (h + 2 * ((k - 1) // 2) - k) // stride + 1
        macs_per_image = c * o * k * k * ho * ho
        tcalls = torch_calls(args.batch, c, o, h, k, stride)
        ecalls = {b: engine_calls(e, rng, args.slow_batch if b != "fast" else args.batch, c, o, h, k, stride)
                  for b, e in engines.items()}
        for op in OPS:
            t_op = "wgrad" if op == "wgrad_psg" else op
            torch_rate = args.batch * macs_per_image / best_time(tcalls[t_op], args.repeats) / 1e9
            row = {"shape": [c, o, h, k, stride], "op": op, "torch": torch_rate}
            for b in args.builds:
                n = args.slow_batch if b != "fast" else args.batch
                reps = args.repeats if b == "fast" else 1
                row[b] = n * macs_per_image / best_time(ecalls[b][op], reps) / 1e9
            rows.append(row)
            print(f"{f'{c}>{o} {h} {k}/{stride}':<18}{op:<11}{torch_rate:>8.2f}"
                  + "".join(f"{row[b]:>9.2f}{row[b] / torch_rate:>7.3f}" for b in args.builds), flush=True)
    for b in args.builds:
        for op in OPS:
            ratios = [r[b] / r["torch"] for r in rows if r["op"] == op]
            print(f"{b:<7} {op:<10} ratio to torch: geometric mean {float(np.exp(np.mean(np.log(ratios)))):.3f}, "
                  f"min {min(ratios):.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"batch": args.batch, "slow_batch": args.slow_batch, "threads": args.threads, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
