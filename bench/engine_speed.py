"""Engine speed on this CPU: GMAC/s of every op for every CPU build vs PyTorch float32.

    python bench/engine_speed.py [--batch 128] [--slow-batch 2] [--builds fast native ap]
                                 [--paths auto avx2] [--baseline OLD.so] [--json out.json]

Shapes are ResNet-20's conv layers. The fast build (once per CPU path in ``--paths``: ``auto``
takes the best one per call, the others are forced) and PyTorch run at ``--batch``; the kernel
builds (native, ap) loop like the hardware and run at ``--slow-batch`` (GMAC/s is a rate, so the
figures compare; the ratio column says how each build does against PyTorch on the same op).
``wgrad_psg`` is the PSG weight gradient (predictor, then the recompute of every tile holding an
unsure entry, adaptive threshold 0.05 on random data) against torch's plain weight gradient.
``--baseline`` times another build of the engine library (its ``e2t_call``; e.g. an older commit's
``build/hls/fast-*/libe2t_fast.so``) in the same rounds, as column ``baseline``, to compare
builds on this machine side by side.
Targets (engine issue): fast auto >= 1.0x torch as the geometric mean of fwd, of bwd_data and of
wgrad, no shape below 0.8x, wgrad_psg >= 0.6x.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from contract import numerics as nx  # noqa: E402
from hls.csim import Engine, Ports, Regs, Status  # noqa: E402

SHAPES = ((16, 16, 32, 3, 1), (16, 32, 32, 3, 2), (16, 32, 32, 1, 2), (32, 32, 16, 3, 1), (32, 64, 16, 3, 2),
          (64, 64, 8, 3, 1))  # (c_in, c_out, h = w, k, stride)
OPS = ("fwd", "bwd_data", "wgrad", "wgrad_psg")


def best_times(fns: dict, rounds: dict) -> dict:
    """Best wall time of each call, timed round-robin (one call of each per round, ``rounds[name]``
    rounds), so that a slow spell of the machine hits every contender alike. Each timed call follows
    an untimed one of the same contender: torch and the engine each bring an OpenMP runtime, and
    the previous contender's idle threads spin for a while, taking the cores of the next call."""
    for fn in fns.values():
        fn()  # warm-up
    best = {name: float("inf") for name in fns}
    for r in range(max(rounds.values())):
        for name, fn in fns.items():
            if r < rounds[name]:
                fn()
                t = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - t)
    return best


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


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo, else platform)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
    p.add_argument("--paths", nargs="+", default=["auto", "avx2"],
                   help="CPU paths of the fast build to time (auto = the best per call; others forced)")
    p.add_argument("--baseline", help="another engine library (.so with e2t_call) to time alongside")
    p.add_argument("--repeats", type=int, default=7, help="timed rounds per op (round-robin over the contenders)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json")
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    engines = {}
    for b in args.builds:
        if b != "fast":
            engines[b] = Engine(b)
            continue
        probe = Engine("fast")
        for path in args.paths:
            if not probe.cpu_paths().get(path):
                print(f"skipping fast path '{path}': not run by this CPU (it runs: "
                      f"{', '.join(n for n, ok in probe.cpu_paths().items() if ok)})")
                continue
            engines[f"fast:{path}"] = Engine("fast", cpu_path=path)
    if args.baseline:
        if not os.path.exists(args.baseline):
            sys.exit(f"engine_speed: error: --baseline {args.baseline}: no such file")
        base = Engine("fast")
        fn = ctypes.CDLL(os.path.abspath(args.baseline)).e2t_call
        fn.argtypes, fn.restype = [ctypes.POINTER(Regs), ctypes.POINTER(Ports), ctypes.POINTER(Status)], None
        base._fn = fn  # same registers and buffers, another library behind them
        engines["baseline"] = base
    names = list(engines)
    slow = lambda name: name in ("native", "ap")  # noqa: E731
    print(f"CPU: {cpu_model()} ({platform.machine()}); fast paths this CPU runs: "
          f"{', '.join(n for n, ok in Engine('fast').cpu_paths().items() if ok)}")
    print(f"GMAC/s on this CPU ({args.threads} threads, best of "
          f"{args.repeats} round-robin rounds); torch and fast at batch {args.batch}, "
          f"native and ap at batch {args.slow_batch}; ratio = build / torch float32 on the same op")
    head = f"{'shape c>o h k/s':<18}{'op':<11}{'torch':>8}" + "".join(f"{b:>13}{'ratio':>7}" for b in names)
    print(head + ("  auto took" if "fast:auto" in engines else ""))
    rows = []
    for c, o, h, k, stride in SHAPES:
        pad = (k - 1) // 2
        ho = (h + 2 * pad - k) // stride + 1
        macs_per_image = c * o * k * k * ho * ho
        tcalls = torch_calls(args.batch, c, o, h, k, stride)
        ecalls = {b: engine_calls(e, rng, args.slow_batch if slow(b) else args.batch, c, o, h, k, stride)
                  for b, e in engines.items()}
        for op in OPS:
            fns = {"torch": tcalls["wgrad" if op == "wgrad_psg" else op], **{b: ecalls[b][op] for b in names}}
            best = best_times(fns, {b: 1 if slow(b) else args.repeats for b in fns})
            torch_rate = args.batch * macs_per_image / best["torch"] / 1e9
            row = {"shape": [c, o, h, k, stride], "op": op, "torch": torch_rate}
            for b in names:
                row[b] = (args.slow_batch if slow(b) else args.batch) * macs_per_image / best[b] / 1e9
            took = ""
            if "fast:auto" in engines:
                regs = {"op": {"fwd": 1, "bwd_data": 2}.get(op, 3), "w_in": h, "kernel": k, "pad": pad,
                        "stride": stride, "c_out": o}
                took = row["took"] = engines["fast:auto"].path_taken(regs)
            rows.append(row)
            print(f"{f'{c}>{o} {h} {k}/{stride}':<18}{op:<11}{torch_rate:>8.2f}"
                  + "".join(f"{row[b]:>13.2f}{row[b] / torch_rate:>7.3f}" for b in names) + f"  {took}", flush=True)
    for b in names:
        for op in OPS:
            ratios = [r[b] / r["torch"] for r in rows if r["op"] == op]
            print(f"{b:<13} {op:<10} ratio to torch: geometric mean {float(np.exp(np.mean(np.log(ratios)))):.3f}, "
                  f"min {min(ratios):.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": cpu_model(), "machine": platform.machine(), "batch": args.batch,
                       "slow_batch": args.slow_batch, "threads": args.threads, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
