"""Fine-tuning on the board: what to train, with and without E2-Train's savings, accuracy vs cost.

    python bench/finetune.py [--model resnet20] [--pretrain mnist5k] [--pretrain-epochs 6]
                             [--finetune digits] [--finetune-classes 0-3] [--epochs 3] [--jobs N]
                             [--only full last bn fc] [--tolerance 2] [--quick] [--out bench/out/finetune]

Pretrains ``--model`` on ``--pretrain`` with the reference (PyTorch, float) trainer, as on a
workstation, exports it (``e2t export``'s code: ONNX, then an engine plan), and fine-tunes that
plan on the emulated engine on ``--finetune`` (another data set, or ``--finetune-classes`` of one:
a folder data set of those classes; another class count puts a new head on the network) at
fine-tuning's default lr. One row per choice of what trains (everything; the last stage,
``--train-from blocks.N``; ``--train bn``; the classifier alone, ``--train-from fc``), each without
and with E2-Train's savings (``--preset e2train``: SMD, SLU gates added open, PSG with threshold
0): test accuracy before (epoch 0: the exported network, with its head or a fresh one) and
after, the engine's MACs and DDR bytes counted over the run, and the modeled whole-board time and
energy of the board (the run folder's energy/energy.json, ``whole_board``). It ends with the
choice to make: the least whole-board energy within ``--tolerance`` points of full fine-tuning's
accuracy.

The defaults (resnet20, mnist5k -> the 8x8 digits scaled to 32 x 32, 6 + 3 epochs, 8 rows) take
about 5 minutes on 2 cores, 3 of them pretraining; ``--quick`` (resnet8, 1 + 1 epochs, 4 rows)
about 30 seconds. The pretraining and every fine-tuning run in processes of their own on one
thread each (``--jobs`` runs at a time), so the table does not depend on the machine's core count.
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

import numpy as np  # noqa: E402

from contract.errors import E2TError  # noqa: E402
from contract.models import MODELS  # noqa: E402
from host.data.datasets import DATASETS, load_dataset  # noqa: E402
from host.train import trainable  # noqa: E402
from host.train.config import FINETUNE_LR, TrainConfig, as_flags, preset  # noqa: E402

E2TRAIN = preset("e2train")  # psg_tau 0: every weight-gradient sign from the 4-bit predictor
CHOICES = ("full", "last", "bn", "fc")  # what trains, in the table's order
SAVINGS = {"": {}, "+e2train": E2TRAIN}
QUICK = {"model": "resnet8", "pretrain_epochs": 1, "epochs": 1, "only": ["full", "fc"]}
DEFAULTS = {"model": "resnet20", "pretrain_epochs": 6, "epochs": 3, "only": list(CHOICES)}


def runs(model: str, choices: list[str]) -> dict:
    """name -> (TrainConfig settings, e2t train flags) of every row: each choice of what trains
    (``last``: the first block of the last stage on), without and with E2-Train's savings."""
    last = f"blocks.{2 * trainable.model_blocks(model) // 3}"
    trains = {"full": {}, "last": {"train_from": last}, "bn": {"train": "bn"}, "fc": {"train_from": "fc"}}
    return {c + s: ({**trains[c], **savings}, as_flags(trains[c]) + ["--preset", "e2train"] * bool(savings))
            for c in CHOICES if c == "full" or c in choices for s, savings in SAVINGS.items()}


def parse_classes(text: str) -> list[int]:
    """``0-3`` or ``1,4,7`` (or both: ``0-2,7``) as a sorted list of distinct labels."""
    labels: set[int] = set()
    for part in text.split(","):
        lo, sep, hi = part.partition("-")
        if not lo.strip().isdigit() or (sep and not hi.strip().isdigit()):
            raise argparse.ArgumentTypeError(f"'{text}' is not a list of classes such as 0-3 or 1,4,7")
        labels.update(range(int(lo), int(hi if sep else lo) + 1))
    return sorted(labels)


def task(name: str, data_dir: str | None, classes: list[int] | None, size: int | None, path: str) -> dict:
    """A data set as the trainers take it (``dataset``, ``data_dir``, ``image_size``) and its
    shape; ``classes`` of it (labels 0..k-1 in their order) are ``arrays`` to write to ``path``
    as a folder .npz."""
    folder = name == "folder"
    ds = load_dataset(name, data_dir, size if folder else None)
    spec = {"dataset": name, "data_dir": data_dir, "image_size": size if folder else None,
            "classes": ds.num_classes, "shape": list(ds.test_x.shape[1:]), "source": name}
    if classes is None:
        return spec
    if len(classes) < 2 or classes[-1] >= ds.num_classes:
        raise E2TError(f"classes {classes} of {name}: need at least 2 of its labels 0..{ds.num_classes - 1}")
    x, y = np.concatenate([ds.train_x, ds.test_x]), np.concatenate([ds.train_y, ds.test_y])
    keep = np.isin(y, classes)
    return {**spec, "dataset": "folder", "data_dir": path, "image_size": None, "classes": len(classes),
            "source": f"{name} classes {','.join(map(str, classes))}",
            "arrays": {"x": x[keep], "y": np.searchsorted(classes, y[keep])}}


def pretrain(args, spec: dict) -> dict:
    """The workstation's part: the reference trainer on one thread, then the export to a plan."""
    import torch

    from reference import export as rx
    from reference.train import Trainer
    torch.set_num_threads(1)
    out, plan = os.path.join(args.out, "pretrain"), os.path.join(args.out, "plan")
    for folder in (out, plan):
        shutil.rmtree(folder, ignore_errors=True)
    cfg = TrainConfig(model=args.model, board=args.board, dataset=spec["dataset"], image_size=spec["image_size"],
                      epochs=args.pretrain_epochs, seed=args.seed)
    start = time.perf_counter()
    log = lambda m: print(f"  [pretrain] {m}", flush=True)  # noqa: E731
    records = Trainer(cfg, out, data_dir=spec["data_dir"], progress=False, log=log).fit()
    rx.export_checkpoint(out, args.board, plan, args.batch_size, spec["data_dir"], log)
    return {"config": cfg.to_dict(), "test_acc": records[-1]["test_acc"], "plan": plan,
            "seconds": time.perf_counter() - start}


def finetune(name: str, overrides: dict, flags: list[str], args, spec: dict, plan: str) -> dict:
    """Fine-tune the plan on the emulated engine; returns its table row, priced by its energy report."""
    from energy import report
    from host.train.trainer import EngineTrainer
    cfg = TrainConfig(backend="emu", model=args.model, board=args.board, dataset=spec["dataset"],
                      image_size=spec["image_size"], epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                      seed=args.seed, init=plan, **overrides)
    out = os.path.join(args.out, name)
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    records = EngineTrainer(cfg, out, data_dir=spec["data_dir"], progress=False,
                            log=lambda m: print(f"  [{name}] {m}", flush=True)).fit()
    wb = report.write(out)[1]["whole_board"]
    if not wb["priced"]:
        raise E2TError(f"{name}: the whole board is not priced: {wb['why']}")
    return {"name": name, "flags": flags, "config": cfg.to_dict(), "init_test_acc": records[0]["init_test_acc"],
            "test_acc": records[-1]["test_acc"],
            "macs": sum(r["macs"] for r in records), "bytes": sum(r["ops"]["total"]["all"]["bytes"] for r in records),
            "board_seconds": wb["seconds"], "board_j": wb["j"], "seconds": time.perf_counter() - start}


def choose(rows: list[dict], tolerance: float) -> dict:
    """The least whole-board energy among the rows within ``tolerance`` points of full fine-tuning's
    accuracy (full fine-tuning itself when none is cheaper), and the most accurate row."""
    full = rows[0]
    near = [r for r in rows if 100 * (full["test_acc"] - r["test_acc"]) <= tolerance]
    return {"tolerance": tolerance, "pick": min(near, key=lambda r: r["board_j"])["name"],
            "most_accurate": max(rows, key=lambda r: r["test_acc"])["name"]}


def label(r: dict) -> tuple[str, str]:
    """A row's (what trains, savings) as e2t train flags."""
    saves = "--preset" in r["flags"]
    return " ".join(r["flags"][:-2] if saves else r["flags"]) or "everything", "e2train" if saves else "-"


def table(rows: list[dict]) -> str:
    full = rows[0]
    lines = [f"{'what trains':<23}{'savings':<9}{'before':>8}{'after':>8}{'d acc':>8}{'MACs':>11}{'DDR bytes':>11}"
             f"{'board s':>9}{'board J':>9}{'J/full':>8}"]
    for r in rows:
        trains, saves = label(r)
        lines.append(f"{trains:<23}{saves:<9}{100 * r['init_test_acc']:>7.2f}%{100 * r['test_acc']:>7.2f}%"
                     f"{100 * (r['test_acc'] - full['test_acc']):>+8.2f}{r['macs']:>11.3g}{r['bytes']:>11.3g}"
                     f"{r['board_seconds']:>9.1f}{r['board_j']:>9.1f}{r['board_j'] / full['board_j']:>8.3f}")
    return "\n".join(lines)


def command(r: dict) -> str:
    return " ".join(["e2t train --backend emu --init PLAN"] + r["flags"]) if r["flags"] else "full fine-tuning"


def advice(rows: list[dict], choice: dict) -> str:
    """The choice in words, from the table's numbers."""
    by, full = {r["name"]: r for r in rows}, rows[0]
    pick, best = by[choice["pick"]], by[choice["most_accurate"]]
    if pick is full:
        text = (f"choose full fine-tuning: no cheaper choice comes within {choice['tolerance']:g} points of its "
                f"{100 * full['test_acc']:.2f} %")
    else:
        text = (f"choose {command(pick)}: {100 * pick['board_j'] / full['board_j']:.0f} % of full fine-tuning's "
                f"whole-board energy ({pick['board_j']:.1f} J of {full['board_j']:.1f} J) at "
                f"{100 * pick['test_acc']:.2f} % test accuracy, within {choice['tolerance']:g} points of full "
                f"fine-tuning's {100 * full['test_acc']:.2f} %")
    if best is not pick:
        text += (f"\nthe most accurate, {command(best)}: {100 * best['test_acc']:.2f} % for {best['board_j']:.1f} J "
                 f"({best['board_j'] / full['board_j']:.2f} x full fine-tuning's)")
    return text


def epochs(n: int) -> str:
    return f"{n} epoch{'s' * (n != 1)}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: " + ", ".join(f"--{k.replace('_', '-')} {v if k != 'only' else ' '.join(v)}"
                                                    for k, v in QUICK.items()) + " (flags given override it)")
    p.add_argument("--model", choices=MODELS, help=f"default {DEFAULTS['model']}")
    p.add_argument("--board", default="pynq-z2")
    p.add_argument("--pretrain", default="mnist5k", choices=DATASETS, help="the workstation's data set")
    p.add_argument("--pretrain-dir", help="its --data-dir (CIFAR, folder)")
    p.add_argument("--pretrain-classes", type=parse_classes, help="pretrain on these classes only, e.g. 0-5")
    p.add_argument("--pretrain-epochs", type=int, help=f"default {DEFAULTS['pretrain_epochs']}")
    p.add_argument("--finetune", default="digits", choices=DATASETS, help="the board's data set")
    p.add_argument("--finetune-dir", help="its --data-dir (CIFAR, folder)")
    p.add_argument("--finetune-classes", type=parse_classes,
                   help="fine-tune on these classes only, e.g. 6-9 (another class count: a new head)")
    p.add_argument("--size", type=int, help="--size of the folder data sets (resize their images)")
    p.add_argument("--epochs", type=int, help=f"fine-tuning epochs (default {DEFAULTS['epochs']})")
    p.add_argument("--batch-size", type=int, default=32, help="fine-tuning batch (the exported plan's)")
    p.add_argument("--lr", type=float, default=FINETUNE_LR, help="fine-tuning's (default: e2t train --init's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", nargs="+", choices=CHOICES, help="what-trains choices to run (full always runs)")
    p.add_argument("--tolerance", type=float, default=2.0,
                   help="accuracy points below full fine-tuning a recommended choice may lose (default 2)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="fine-tuning runs at once, one thread each")
    p.add_argument("--out", default="bench/out/finetune")
    args = p.parse_args()
    for key, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.jobs < 1 or args.epochs < 1 or args.pretrain_epochs < 1 or args.tolerance < 0:
        p.error("--jobs, --epochs and --pretrain-epochs must be at least 1, --tolerance at least 0")
    try:
        pre = task(args.pretrain, args.pretrain_dir, args.pretrain_classes, args.size,
                   os.path.join(args.out, "data", "pretrain.npz"))
        fine = task(args.finetune, args.finetune_dir, args.finetune_classes, args.size,
                    os.path.join(args.out, "data", "finetune.npz"))
        TrainConfig(backend="emu", model=args.model, board=args.board, batch_size=args.batch_size, lr=args.lr,
                    seed=args.seed, **E2TRAIN)  # the fine-tuning settings, checked before any training
    except E2TError as e:
        p.error(str(e))
    if pre["shape"] != fine["shape"]:
        p.error(f"the pretrained network takes {' x '.join(map(str, pre['shape']))} images (C x H x W), "
                f"{fine['source']}'s are {' x '.join(map(str, fine['shape']))}: give --size for a folder set")
    rows_run = runs(args.model, args.only)
    for spec in (pre, fine):
        if "arrays" in spec:
            os.makedirs(os.path.dirname(spec["data_dir"]), exist_ok=True)
            np.savez(spec["data_dir"], **spec.pop("arrays"))
    threads = max(1, (os.cpu_count() or 1) // min(args.jobs, len(rows_run)))
    for var in ("OMP_NUM_THREADS", "E2T_HOST_THREADS"):  # the engine's CPU build, the host's numpy: bit-identical
        os.environ.setdefault(var, str(threads))
    ctx = get_context("spawn")
    print(f"pretraining {args.model} on {pre['source']} ({epochs(args.pretrain_epochs)}) ...",
          flush=True)
    with ProcessPoolExecutor(1, mp_context=ctx) as pool:  # torch's OpenMP runtime stays out of the engine's runs
        pretrained = pool.submit(pretrain, args, pre).result()
    print(f"fine-tuning {', '.join(rows_run)} ({args.jobs} at a time) ...", flush=True)
    with ProcessPoolExecutor(args.jobs, mp_context=ctx) as pool:
        futures = [pool.submit(finetune, n, settings, flags, args, fine, pretrained["plan"])
                   for n, (settings, flags) in rows_run.items()]
        rows = [f.result() for f in futures]
    text, choice = table(rows), choose(rows, args.tolerance)
    words = advice(rows, choice)
    print(f"\n{args.model} pretrained on {pre['source']} (reference trainer, {epochs(args.pretrain_epochs)}: "
          f"{100 * pretrained['test_acc']:.2f} % on its test set), fine-tuned on "
          f"{fine['source']} on the emulated engine ({epochs(args.epochs)}, batch {args.batch_size}, "
          f"lr {args.lr:g}); before: the exported network (epoch 0), board s and J: modeled whole board "
          f"({args.board})\n{text}\n\n{words}")
    with open(os.path.join(args.out, "finetune.json"), "w") as f:
        json.dump({"pretrain": pretrained, "pretrain_data": pre, "finetune_data": fine, "rows": rows,
                   "table": text, "choice": choice, "advice": words}, f, indent=2)


if __name__ == "__main__":
    main()
