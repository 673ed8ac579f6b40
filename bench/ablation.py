"""E2-Train ablation: baseline / SMD / SMD+SLU / SMD+SLU+PSG, accuracy vs counted work.

    python bench/ablation.py [--model resnet20] [--dataset mnist5k] [--epochs 60] [--jobs N]
                             [--only NAME ...] [--backend torch|emu] [--out bench/out/ablation]

Trains each configuration with the reference trainer (same seed and schedule), then prints
test accuracy, the MACs and DDR bytes counted over the whole run (contract/opcount.py) and
their ratios to the float baseline, and writes the table as JSON next to the run folders.
Counts are operations, not joules: the energy model turns them into modeled energy.

All rows share one schedule (60 epochs, lr steps at 50 % and 75 % of the iterations, SMD's
dropped iterations counted in it). The float baseline saturates within 15 epochs on mnist5k,
the gated SLU network does not: at 15 / 30 / 60 epochs SMD+SLU (target 0.6) reached about
94 / 97.5 / 98.1 % on one thread, against 98.0 / 98.6 / 98.8 % for SMD alone.

With ``--backend emu`` every row trains on the emulated engine (host/train/trainer.py) in fixed point:
the baseline is then the engine's full weight gradient with the sign update (no savings), and
MACs and bytes are counted from the engine calls made.

Every configuration trains in its own process on one thread (``--jobs`` at a time, longest
first), so the table does not depend on the machine's core count: PyTorch's CPU kernels sum
in a different order with a different thread count, which moves a 1,000-image test accuracy
by a few tenths of a point.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from host.train.config import TrainConfig, preset  # noqa: E402
from host.train.trainer import EngineTrainer  # noqa: E402
from reference.train import Trainer  # noqa: E402

E2TRAIN = preset("e2train")  # E2-Train's settings, taken apart row by row
PSG = ("precision", "psg", "psg_tau")
SLU = {k: v for k, v in E2TRAIN.items() if k not in PSG}
CONFIGS = {
    "baseline": {},
    "smd": {"smd": E2TRAIN["smd"]},
    "smd+slu": SLU,
    # every weight-gradient sign from the 4-bit predictor (threshold 0): nothing is recomputed
    "smd+slu+psg": E2TRAIN,
    # the adaptive threshold: entries under 5 % of max|G_msb| are recomputed, tile by tile
    "smd+slu+psg-ratio": {**SLU, "precision": "fixed", "psg": True, "psg_ratio": 0.05},
}
DEFAULT = ("baseline", "smd", "smd+slu", "smd+slu+psg")  # the rows run unless --only names others
SLOW = ("smd+slu+psg", "smd+slu+psg-ratio")  # the reference's PSG runs about 5x slower: start them first


def run(name: str, overrides: dict, args) -> dict:
    """Train one configuration on one thread; returns its table row."""
    torch.set_num_threads(1)
    if args.backend == "emu":
        overrides = {**overrides, "backend": "emu", "precision": "fixed"}
    cfg = TrainConfig(model=args.model, dataset=args.dataset, epochs=args.epochs, seed=args.seed, **overrides)
    out = os.path.join(args.out, name)
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    cls = EngineTrainer if args.backend == "emu" else Trainer
    records = cls(cfg, out, data_dir=args.data_dir, progress=False,
                  log=lambda m: print(f"  [{name}] {m}", flush=True)).fit()
    widths: dict = {}
    for r in records:
        for width, macs in r["ops"]["total"]["all"]["macs"].items():
            widths[width] = widths.get(width, 0) + macs
    last = records[-1]
    return {"name": name, "config": cfg.to_dict(), "test_acc": last["test_acc"],
            "macs": sum(r["macs"] for r in records), "macs_by_width": widths,
            "bytes": sum(r["ops"]["total"]["all"]["bytes"] for r in records),
            "kept_iterations": sum(r["kept_iterations"] for r in records),
            "executed_fraction": last.get("executed_fraction"),
            "psg_predicted_fraction": last.get("psg_predicted_fraction"),
            "seconds": time.perf_counter() - start}


def table(rows: list[dict]) -> str:
    base = rows[0]
    lines = [f"{'config':<14}{'test acc':>10}{'d acc':>8}{'MACs':>12}{'MACs/base':>11}{'bytes/base':>12}"
             f"{'kept it':>9}{'exec':>7}{'pred':>7}{'time':>8}"]
    for r in rows:
        fmt = lambda v: "-" if v is None else f"{100 * v:.0f}%"  # noqa: E731
        lines.append(f"{r['name']:<14}{100 * r['test_acc']:>9.2f}%{100 * (r['test_acc'] - base['test_acc']):>+8.2f}"
                     f"{r['macs']:>12.3g}{r['macs'] / base['macs']:>11.3f}{r['bytes'] / base['bytes']:>12.3f}"
                     f"{r['kept_iterations']:>9}{fmt(r['executed_fraction']):>7}{fmt(r['psg_predicted_fraction']):>7}"
                     f"{r['seconds']:>7.0f}s")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet20")
    p.add_argument("--dataset", default="mnist5k")
    p.add_argument("--data-dir")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=min(len(DEFAULT), os.cpu_count() or 1),
                   help="configurations trained at once, one thread each (default: one per core, at most "
                        f"{len(DEFAULT)})")
    p.add_argument("--only", nargs="*", choices=list(CONFIGS),
                   help=f"run these instead of {', '.join(DEFAULT[1:])} (baseline always runs)")
    p.add_argument("--backend", choices=("torch", "emu"), default="torch",
                   help="torch: the reference trainer; emu: the emulated on-engine trainer, fixed point")
    p.add_argument("--out", default="bench/out/ablation")
    args = p.parse_args()
    if args.jobs < 1:
        p.error(f"--jobs must be at least 1, got {args.jobs}")
    names = ["baseline"] + [n for n in CONFIGS if n != "baseline" and n in (args.only or DEFAULT)]
    order = sorted(names, key=lambda n: n not in SLOW)
    print(f"training {', '.join(order)} ({args.jobs} at a time, one thread each) ...", flush=True)
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
        futures = {n: pool.submit(run, n, CONFIGS[n], args) for n in order}
        rows = [futures[n].result() for n in names]
    text = table(rows)
    print(f"\n{args.model} on {args.dataset}, {args.epochs} epochs, backend {args.backend} (exec: gated blocks run in training, "
          f"last epoch; pred: PSG weight-gradient entries decided by the 4-bit predictor)\n{text}")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "ablation.json"), "w") as f:
        json.dump({"rows": rows, "table": text}, f, indent=2)


if __name__ == "__main__":
    main()
