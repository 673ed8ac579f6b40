"""Training speed of the emulated engine against the PyTorch trainers, measured side by side.

    python bench/emu_speed.py [--model resnet20] [--dataset mnist5k] [--iterations 8] [--rounds 2]
                              [--warm-epochs 2] [--measure-epochs 3]

Images per second through forward and backward (the images of the kept batches: a batch SMD
drops costs nothing and is not counted) of the trainers on the same model, data and batch:
the emulated on-engine trainer with E2-Train's savings (SMD 0.5, SLU 0.6, PSG with threshold
0), the emulated trainer with none (fixed point, full weight gradient), both again with the
per-element work on the engine (``--elementwise engine``, contract v2), the PyTorch float trainer and the reference's fixed + PSG mode.
The emulated rows run whole epochs (after the warm-up), so their epoch time counts every
iteration, the ones SMD drops included, with SMD's drops as drawn for each epoch; the last lines
compare the E2-Train rows' epochs with the no-savings ones, as measured (the mean of the
epochs measured, each with the share of its batches SMD dropped) and at SMD's rate (the kept
steps' time times 1 - p: a dropped batch costs its data only). One epoch's drops are 31 coin
flips on mnist5k (their share's standard deviation 9 points), so an E2-Train row measures
``--measure-epochs`` consecutive epochs (default 3; a no-savings epoch costs the same each
time: one). An E2-Train row's warm-up is ``--warm-epochs`` whole epochs of training (default
2), as a run's first epochs: SLU's gates start open (95 % of the blocks run) and reach the
target's 60 % within them, so the epochs measured are the run's steady ones; their executed
fraction is printed with them (``--warm-epochs 0``: one iteration, the gates still open). The
other rows warm up with one iteration (their steps cost the same in every epoch). Each runs ``--iterations``
iterations per round (the emulated rows: a whole epoch), in a process of its own (the emulated rows without torch, as
``e2t train --backend emu`` runs: torch's OpenMP runtime would otherwise serve the engine's CPU
build too); rounds alternate the trainers, and the best round counts. Ratios are against the
PyTorch float trainer of the same run, so machines compare by ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from host.data.datasets import batches_per_epoch  # noqa: E402
from host.train.config import PRESETS, TrainConfig  # noqa: E402

E2TRAIN = PRESETS["e2train"]
ROWS = {
    "emu E2-Train (SMD+SLU+PSG)": ("emu", E2TRAIN),
    "emu, no savings (fixed, full gradient)": ("emu", {"precision": "fixed"}),
    "emu v2 E2-Train (elementwise engine)": ("emu", {**E2TRAIN, "elementwise": "engine"}),
    "emu v2, no savings (elementwise engine)": ("emu", {"precision": "fixed", "elementwise": "engine"}),
    "PyTorch float": ("torch", {}),
    "reference fixed + PSG": ("torch", {"precision": "fixed", "psg": True, "psg_tau": 0.0}),
}
FLOAT = "PyTorch float"
EPOCHS = (("emu E2-Train (SMD+SLU+PSG)", "emu, no savings (fixed, full gradient)"),
          ("emu v2 E2-Train (elementwise engine)", "emu v2, no savings (elementwise engine)"))
E2T_ROWS = {e2t for e2t, _ in EPOCHS}


def make(name: str, args, folder: str):
    backend, overrides = ROWS[name]
    cfg = TrainConfig(backend=backend, model=args.model, dataset=args.dataset, epochs=1, batch_size=args.batch,
                      **overrides)
    if backend == "emu":
        from host.train.trainer import EngineTrainer
        return EngineTrainer(cfg, folder, data_dir=args.data_dir, progress=False, log=lambda m: None)
    from reference.train import Trainer
    return Trainer(cfg, folder, data_dir=args.data_dir, progress=False, log=lambda m: None, device="cpu")


def measure(name: str, args, root: str, round_: int) -> dict:
    """Of one row, measured in a fresh process (``--row``): ``images_per_s``, ``engine`` (the share of
    the time in engine calls: None for the PyTorch trainers), ``s_per_iteration`` (dropped ones
    included), ``kept`` (the share of iterations kept), ``executed`` (SLU's executed fraction) and the
    ``epoch`` measured."""
    cmd = [sys.executable, os.path.abspath(__file__), "--row", name, "--root", root, "--round", str(round_),
           "--model", args.model, "--dataset", args.dataset, "--batch", str(args.batch),
           "--iterations", str(args.iterations), "--warm-epochs", str(args.warm_epochs),
           "--measure-epochs", str(args.measure_epochs)] + (
        ["--data-dir", args.data_dir] if args.data_dir else [])
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"emu_speed: the row '{name}' failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_here(name: str, args, root: str, round_: int) -> dict:
    """``measure`` in this process: an epoch (an E2-Train row: ``args.measure_epochs`` of them; the
    PyTorch rows: ``args.iterations`` iterations) after the warm-up; ``epochs``: each epoch measured
    as (its number, seconds, share of its iterations kept)."""
    folder = os.path.join(root, f"{round_}-{len(os.listdir(root))}")
    t = make(name, args, folder)
    whole = batches_per_epoch(t.ds, args.batch) if ROWS[name][0] == "emu" else args.iterations
    warm, count = (args.warm_epochs, args.measure_epochs) if name in E2T_ROWS else (0, 1)
    if warm:  # the run's first epochs: the gates learn to skip (builds, caches, first calls too)
        t.total_iterations = whole * (warm + count)
        for _ in range(warm):
            t.train_epoch()
    else:
        t.iters_per_epoch = 1
        t.train_epoch()  # warm-up: builds, caches, first-call costs
        t.epoch, t.iters_per_epoch = 1, whole  # epoch 1's data order and SMD draws
    epochs, kept, engine, executed = [], 0, 0.0, []
    for _ in range(count):
        start = time.perf_counter()
        record = t.train_epoch()
        epochs.append((record["epoch"], time.perf_counter() - start, record["kept_iterations"] / whole))
        kept += record["kept_iterations"]
        engine += sum(record["engine_seconds"].values()) if "engine_seconds" in record else 0.0
        executed.append(record.get("executed_fraction"))
    seconds = sum(e[1] for e in epochs)
    shutil.rmtree(folder, ignore_errors=True)
    return {"images_per_s": kept * args.batch / seconds if kept else 0.0,
            "engine": engine / seconds if "engine_seconds" in record else None,
            "s_per_iteration": seconds / (whole * count), "kept": kept / (whole * count),
            "executed": None if None in executed else sum(executed) / count, "epochs": epochs, "iterations": whole}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet20")
    p.add_argument("--dataset", default="mnist5k")
    p.add_argument("--data-dir")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--iterations", type=int, default=8)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--warm-epochs", type=int, default=2, help="whole epochs an E2-Train row trains before the one "
                   "measured (default 2: SLU's gates have reached their target by then)")
    p.add_argument("--measure-epochs", type=int, default=3, help="consecutive epochs an E2-Train row measures "
                   "(default 3: one epoch's SMD draws are 31 coin flips on mnist5k)")
    p.add_argument("--json", help="also write the figures here")
    p.add_argument("--row", choices=sorted(ROWS), help=argparse.SUPPRESS)  # one row, in its own process
    p.add_argument("--root", help=argparse.SUPPRESS)
    p.add_argument("--round", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.measure_epochs < 1 or args.warm_epochs < 0:
        p.error("--measure-epochs takes 1 or more, --warm-epochs 0 or more")
    if args.row:
        print(json.dumps(measure_here(args.row, args, args.root, args.round)))
        return
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; {args.model} on {args.dataset}, "
          f"batch {args.batch}, {args.iterations} iterations per round, best of {args.rounds} rounds, each row "
          f"in a process of its own", flush=True)
    best, engine, per_it = {n: 0.0 for n in ROWS}, {n: None for n in ROWS}, {n: float("inf") for n in ROWS}
    got, fastest = {}, {}  # each row's last round's measurement, and its round of the fewest s/iteration
    with tempfile.TemporaryDirectory() as root:
        for r in range(args.rounds):
            for name in ROWS:
                got[name] = m = measure(name, args, root, r)
                if m["images_per_s"] > best[name]:
                    best[name], engine[name] = m["images_per_s"], m["engine"]
                if m["s_per_iteration"] < per_it[name]:
                    per_it[name], fastest[name] = m["s_per_iteration"], m
                print(f"  round {r + 1}: {name}: {best[name]:.1f} img/s", flush=True)
    print(f"\n{'trainer':<42}{'img/s':>9}{'x float':>9}{'s/iteration':>13}{'engine calls':>14}{'host':>8}")
    for name, v in best.items():
        split = f"{100 * engine[name]:>13.0f}%{100 * (1 - engine[name]):>7.0f}%" if engine[name] is not None else ""
        print(f"{name:<42}{v:>9.1f}{v / best[FLOAT]:>9.2f}{per_it[name]:>13.3f}{split}")
    print("(engine calls: the share of the emulated trainers' time in the engine's CPU build, driver and "
          "emulated overlay included; host: the numpy ops, data and bookkeeping)")
    e2t, ref = best["emu E2-Train (SMD+SLU+PSG)"], best["reference fixed + PSG"]
    print(f"\nemulated E2-Train / reference fixed + PSG: {e2t / ref:.2f}x; emulated with no savings / PyTorch float: "
          f"{best['emu, no savings (fixed, full gradient)'] / best[FLOAT]:.2f}x (target >= 1.0x)")
    v2 = best["emu v2, no savings (elementwise engine)"]
    print(f"emulated with no savings, elementwise engine / PyTorch float: {v2 / best[FLOAT]:.2f}x (target >= 1.0x)")
    smd = E2TRAIN["smd"]
    for e2t_row, plain in EPOCHS:
        at_rate, m = (1 - smd) * args.batch / best[e2t_row] / per_it[plain], fastest[e2t_row]
        epoch = per_it[plain] * m["iterations"]  # a no-savings epoch, as measured
        each = ", ".join(f"{sec / epoch:.2f}x" for _, sec, _ in m["epochs"])
        dropped = ", ".join(f"{100 * (1 - kept):.0f} %" for _, _, kept in m["epochs"])
        first, last = m["epochs"][0][0], m["epochs"][-1][0]
        print(f"E2-Train epoch / no-savings epoch ({e2t_row} / {plain}): {per_it[e2t_row] / per_it[plain]:.2f}x "
              f"measured, the mean of epoch{'s' if last > first else ''} {first}{f'-{last}' if last > first else ''} "
              f"({each}; {dropped} of their batches dropped), {at_rate:.2f}x at SMD's rate {smd:g} (target <= 0.6x; "
              f"SLU executing {100 * m['executed']:.0f} % of the gated blocks)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"images_per_s": best, "engine_share": engine, "s_per_iteration": per_it, "last_round": got,
                       "fastest_round": fastest,
                       "args": vars(args)},
                      f, indent=1)


if __name__ == "__main__":
    main()
