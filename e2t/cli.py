"""The ``e2t`` command line.

``e2t train`` trains a CIFAR ResNet on a built-in or user-supplied data set;
``e2t info`` prints a model's parameters and MACs. Backends load lazily, so the
board (no torch) can run the CLI for the backends it has.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

from contract import backends
from contract.boards import DEFAULT_BOARD, board, check_fit
from contract.errors import E2TError
from contract.jsonfile import parse
from host.data.datasets import DATASETS
from host.data.folderdata import LAYOUT
from host.train.config import (BACKENDS, FINETUNE_LR, MODELS, PRECISIONS, PRESETS, SLU_WEIGHTINGS, TrainConfig,
                               as_flags, check_seed, flag, preset)
from host.train.trainable import ALIASES

def _floats(text: str) -> tuple:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got '{text}'") from None


class Help(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" where there is a default to show: not on a required option, a
    flag's False or a None (whose meaning, if any, its help says)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.required or action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def _given(text: str) -> str:
    """A string value as given; an empty one is refused (it would read as "not given" further on)."""
    if not text:
        raise argparse.ArgumentTypeError("the value is empty: give one (an option left out takes its default)")
    return text


class Parser(argparse.ArgumentParser):
    """argparse with the project's one-line errors: its own (and its subcommands', which
    add_subparsers makes of this class) raise an E2TError naming the subcommand, which main prints
    as ``e2t: error: <msg>`` (exit 2). Every value without a type of its own goes through
    ``_given``. Its help shows defaults the Help way."""

    def __init__(self, *args, formatter_class=Help, **kwargs):
        super().__init__(*args, formatter_class=formatter_class, **kwargs)
        self.register("type", None, _given)  # argument groups share this registry

    def add_subparsers(self, **kwargs):
        action = super().add_subparsers(**kwargs)
        action.type = str  # argparse passes a subcommand's words through it: its own parser checks them
        return action

    def error(self, message: str):
        where = self.prog.partition(" ")[2]  # "e2t energy report" -> "energy report"
        raise E2TError(f"{where}: {message}" if where else message)

    def parse_args(self, args=None, namespace=None) -> argparse.Namespace:
        """argparse's, with the subcommand named where an argument is unknown to it."""
        known, extra = self.parse_known_args(args, namespace)
        if extra:
            where = [getattr(known, dest, None) for dest in ("command", "energy_command")]
            raise E2TError(" ".join(filter(None, where)) + f": unrecognized arguments: {' '.join(extra)}")
        return known


def _data_flags(p: argparse.ArgumentParser, where: str) -> None:
    """--data-dir (``where``: what it holds for the built-in sets) and a folder data set's --size, --channels."""
    p.add_argument("--data-dir", help=f"{where}; for --dataset folder: {LAYOUT}")
    b = board(DEFAULT_BOARD)
    p.add_argument("--size", type=int, dest="image_size", metavar="N",
                   help="--dataset folder: resize every image to N x N (needed when sizes differ or are not square; "
                        f"the engine takes at most {b.max_h} x {b.max_w} on {b.name}, the board's max_h x max_w)")
    p.add_argument("--channels", type=int, dest="image_channels", choices=(1, 3),
                   help="--dataset folder: 1 (grayscale) or 3 (RGB); default: 1 if every image is grayscale")


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = Parser(prog="e2t", description="Energy-efficient on-device CNN training (E2-Train).")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model; writes a run folder",
                       argument_default=argparse.SUPPRESS)
    t.add_argument("--preset", help=f"start from a named set of settings ({', '.join(PRESETS)}: "
                                    f"{' '.join(as_flags(PRESETS['e2train']))}); flags given as well override it")
    t.add_argument("--backend", help=f"where the arithmetic runs: {', '.join(BACKENDS)} (default {d.backend})")
    t.add_argument("--board", help=f"emu, pynq: the board whose engine runs the convs (default {d.board})")
    t.add_argument("--engine", help="emu: the engine's CPU build, fast, native or ap (default fast)")
    t.add_argument("--bitfile", help="pynq: the overlay's .bit (its .hwh beside it)")
    t.add_argument("--init", metavar="PLAN_DIR",
                   help="emu, pynq: start from this plan and its weights (e2t export, a run folder or e2t plan) "
                        "instead of fresh weights: fine-tuning. Prints and records its test accuracy first (epoch 0); "
                        "a data set of another class count gets a new classifier head, --slu-target adds SLU gates "
                        "(open: --slu-gate-init default 0.95) to a plan without them; the convs keep their weights")
    t.add_argument("--model", help=f"{', '.join(MODELS)} (default {d.model})")
    t.add_argument("--dataset", help=f"{', '.join(DATASETS)} (default {d.dataset})")
    _data_flags(t, "folder with cifar-10-python.tar.gz / cifar-100-python.tar.gz (or their extracted folders), "
                   "or mnist_5k.csv.gz / digits.csv.gz")
    t.add_argument("--epochs", type=int, help=f"default {d.epochs}")
    t.add_argument("--batch-size", type=int, help=f"global mini-batch (default {d.batch_size})")
    t.add_argument("--lr", type=float, help=f"default {d.lr}; {FINETUNE_LR} with --init of a trained plan "
                                            f"(fine-tuning: a larger rate undoes what it learned)")
    t.add_argument("--momentum", type=float, help=f"default {d.momentum}")
    t.add_argument("--weight-decay", type=float, help=f"default {d.weight_decay}")
    t.add_argument("--lr-milestones", type=_floats,
                   help=f"fractions of all iterations where lr is multiplied by --lr-gamma "
                        f"(default {','.join(map(str, d.lr_milestones))})")
    t.add_argument("--lr-gamma", type=float, help=f"default {d.lr_gamma}")
    t.add_argument("--seed", type=int, help=f"default {d.seed}")
    t.add_argument("--smd", type=float, metavar="P",
                   help=f"stochastic mini-batch dropping: skip each batch with probability P (default {d.smd})")
    t.add_argument("--smd-coast", action="store_true",
                   help="on a dropped batch still step SGD with zero gradients (momentum and weight decay "
                        "move the weights, as in the authors' code)")
    t.add_argument("--slu-target", type=float, metavar="F",
                   help="selective layer update: gate the residual blocks and aim at executing this "
                        "fraction of them (default: no gates)")
    t.add_argument("--slu-beta", type=float, help=f"weight of the SLU cost loss (default {d.slu_beta})")
    t.add_argument("--slu-band", type=float, metavar="B",
                   help="SLU: the cost loss's sign ramps linearly from -1 to +1 as the executed fraction "
                        "goes from target - B to target + B, instead of flipping at the target "
                        f"(default {d.slu_band}: flip)")
    t.add_argument("--slu-weighting", help=f"SLU cost per block: {', '.join(SLU_WEIGHTINGS)} "
                                           f"(default {d.slu_weighting})")
    t.add_argument("--slu-exec", help="SLU: mask (run gated blocks on the whole batch and mask, the authors' way; "
                                      "the torch backend's default) or gather (run them on the gated-on images only, "
                                      "as the engine does; emu and pynq)")
    t.add_argument("--slu-gate-init", type=float, metavar="P",
                   help="SLU: start the gates open, running each block with probability P (default: "
                        "as initialised, about 0.5; 0.95 for gates added to a gateless --init plan)")
    t.add_argument("--precision", help=f"conv arithmetic: {', '.join(PRECISIONS)} (docs/numerics.md; default: "
                                       f"fixed on emu and pynq, whose engine computes in fixed point, fp32 on torch)")
    t.add_argument("--psg", action="store_true",
                   help="predictive sign gradients: 4-bit predictor, full gradient only where unsure, "
                        "integer sign-momentum update (needs --precision fixed). With the default --psg-tau "
                        "nearly every tile holds an unsure entry and is recomputed, so the predictor's MACs "
                        "come on top and --psg alone costs energy: --psg-tau 0 (as in --preset e2train) saves")
    t.add_argument("--psg-tau", type=float,
                   help=f"PSG absolute threshold: signs come from the predictor where |G_msb| >= tau, the rest "
                        f"from a full recompute of their tile; 0 takes every sign from the predictor, the setting "
                        f"that saves energy (default {d.psg_tau}, which recomputes nearly every tile and costs "
                        f"more than no PSG)")
    t.add_argument("--psg-ratio", type=float,
                   help="PSG adaptive threshold: tau = ratio * max|G_msb| per layer and step (overrides --psg-tau); "
                        "a ratio such as 0.05 still leaves an unsure entry in nearly every tile, so it costs "
                        "energy, as the default --psg-tau does")
    t.add_argument("--psg-tile", type=int, help="PSG recompute tile, N x N channels (default: the board's engine tile)")
    t.add_argument("--predictive-forward", action="store_true",
                   help="PSG: zero conv outputs the 4-bit forward predicts negative (PredictiveNet)")
    t.add_argument("--train-from", metavar="LAYER",
                   help="freeze the layers below LAYER: blocks.N (the stem and blocks 0..N-1 frozen: no weight "
                        "gradient, no update, no backward pass below block N) or fc / head (the classifier alone "
                        "trains); SLU gates train with the blocks they decide (default: everything trains)")
    t.add_argument("--train", metavar="MODE",
                   help=f"what trains from --train-from's layer up: all, or bn (the BatchNorms' scale and shift and "
                        f"the classifier; the convs frozen, the backward-data pass still runs) (default {d.train})")
    t.add_argument("--elementwise", metavar="WHERE",
                   help=f"emu, pynq: where BatchNorm, ReLU, the residual add and the quantization run: host (float32 "
                        f"numpy on the CPU) or engine (the engine's STATS and APPLY, contract v2, docs/numerics.md "
                        f"sections 9-10; torch with --precision fixed: the reference's twin of it) "
                        f"(default {d.elementwise})")
    t.add_argument("--out", help="run folder (default runs/<model>-<dataset>-<time>)")
    t.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint, with its saved config")
    t.add_argument("--device", help="auto (GPU if present), cpu, cuda, cuda:N (default auto)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")

    pl = sub.add_parser("plan", help="a network plan with fresh weights, for training on the engine (numpy only)")
    pl.add_argument("--model", default=d.model, help=", ".join(MODELS))
    pl.add_argument("--dataset", default=d.dataset, help=f"{', '.join(DATASETS)}: sets the input channels and classes")
    _data_flags(pl, "only --dataset folder reads data (the built-in sets' shapes are known)")
    pl.add_argument("--board", default=DEFAULT_BOARD, help="a board of bitstreams/<board>/board.json")
    pl.add_argument("--batch", type=int, default=d.batch_size, help="the largest batch the DDR layout holds")
    pl.add_argument("--slu", action="store_true", help="add SLU gates before every block after the first")
    pl.add_argument("--gate-init", type=float, default=None, metavar="P",
                    help="SLU gates start running blocks with probability P")
    pl.add_argument("--seed", type=int, default=d.seed, help="seed of the fresh weights")
    pl.add_argument("--out", required=True, help="folder for plan.json and weights.bin")

    x = sub.add_parser("export", help="run or checkpoint -> model.onnx + plan + HLS project; "
                                      "a plan folder -> PyTorch checkpoint + inference ONNX (workstation)")
    x.add_argument("source", help="a run folder or checkpoint.pt (forward), or a folder with plan.json (back)")
    x.add_argument("--board", default=DEFAULT_BOARD, help="the board the plan is for (forward export)")
    x.add_argument("--batch", type=int, default=None, help="the plan's batch (default: the run's batch size)")
    x.add_argument("--data-dir", help="where the run's data set is (CIFAR), for the checks on test images")
    x.add_argument("--out", required=True, help="output folder")
    x.add_argument("--quiet", action="store_true", help="no step log on stderr")

    es = sub.add_parser("estimate", help="modeled resources, speed and energy of a network on a board (workstation)")
    es.add_argument("--board", default=None, help=f"a board of bitstreams/<board>/board.json (default {DEFAULT_BOARD}, "
                                                  "or the plan's)")
    es.add_argument("--model", default=d.model, help=", ".join(MODELS))
    es.add_argument("--dataset", default=d.dataset, help=f"{', '.join(DATASETS)}: the input shape and classes")
    _data_flags(es, "only --dataset folder reads data (the built-in sets' shapes are known)")
    es.add_argument("--batch", type=int, default=d.batch_size, help="the images of one training step")
    es.add_argument("--slu", action="store_true", help="with SLU gates (their 1x1 convs run on the engine too)")
    es.add_argument("--plan", metavar="DIR", help="estimate this plan (e2t plan / e2t export) instead of --model")
    es.add_argument("--energy-model", metavar="FILE", help="an energy model file (default: the board's)")
    es.add_argument("--elementwise", metavar="WHERE", default=d.elementwise,
                    help="where BatchNorm, ReLU, the residual add and the quantization run in the modeled step: host "
                         "(float32 numpy on the board's CPU) or engine (the engine's STATS and APPLY, contract v2, as "
                         "e2t train --elementwise engine; with --slu every gate on)")

    dp = sub.add_parser("deploy", help="a bundle (folder + tarball) that installs and trains on a board")
    dp.add_argument("--board", default=DEFAULT_BOARD, help="a board of bitstreams/<board>/board.json")
    dp.add_argument("--plan", metavar="DIR", help="the plan and weights to train (default: fresh ones of --model)")
    dp.add_argument("--model", default=d.model, help=", ".join(MODELS))
    dp.add_argument("--dataset", default=d.dataset, help=", ".join(DATASETS))
    _data_flags(dp, "where the data set is (CIFAR, folder; built-in sets are found without it); it is copied "
                    "into the bundle")
    dp.add_argument("--batch", type=int, default=d.batch_size,
                    help="train.sh's batch size and a fresh plan's batch (with --plan: at most the plan's)")
    dp.add_argument("--epochs", type=int, default=15, help="train.sh's epochs (at least 1)")
    dp.add_argument("--no-slu", action="store_true", help="a fresh plan without SLU gates")
    dp.add_argument("--out", required=True, help="the bundle folder (new or empty); BUNDLE.tar.gz (new too) is "
                                                  "written beside it")

    en = sub.add_parser("energy", help="energy reports of run folders (modeled from the run's counts)")
    esub = en.add_subparsers(dest="energy_command", required=True)
    er = esub.add_parser("report", help="write RUN_DIR/energy/: energy.json, energy.csv, report.html with plots "
                                        "(RUN_DIR/energy-<board>/ priced for another board, "
                                        "RUN_DIR/energy-<file name>/ by a --model file)")
    er.add_argument("run_dir", help="a run folder (e2t train)")
    er.add_argument("--board", help="the board whose energy model prices the run (default: the run's)")
    er.add_argument("--model", help="an energy model file instead of bitstreams/<board>/energy.json")
    er.add_argument("--force", action="store_true",
                    help="replace a report folder that another energy model priced (one of the same model is "
                         "always re-written)")
    ec = esub.add_parser("compare", help="the savings table of runs against the first (the baseline)")
    ec.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders, the baseline first")
    ec.add_argument("--board", help="the board whose energy model prices the runs (default: the first run's)")
    ec.add_argument("--model", help="an energy model file instead of bitstreams/<board>/energy.json")
    ec.add_argument("--out", help="also write the table as JSON to this new file")
    ec.add_argument("--force", action="store_true",
                    help="compare runs that train different models or data sets than the baseline")
    ecal = esub.add_parser("calibrate", help="fit the board's energy model to measured segments (least squares)")
    ecal.add_argument("--board", default=DEFAULT_BOARD, help="the board whose energy model is fitted")
    src = ecal.add_mutually_exclusive_group(required=True)
    src.add_argument("--segments", help="JSON list of segments: {macs: {width: n}, bytes, host_seconds, seconds, "
                                        "joules} measured on the board (host_seconds: the host CPU's busy seconds)")
    src.add_argument("--run", action="store_true", help="run the engine and host micro-benchmarks "
                                                        "(e2t/microbench.py) while recording rails, then fit; the "
                                                        "host's timed rates go into the fitted model")
    ecal.add_argument("--backend", choices=("pynq", "emu"), default="pynq",
                      help="--run: pynq (a board: its rails or --meter-log) or emu (the emulated engine with a "
                           "modeled rail: a check that the fit gives the model back, the host rates of this "
                           "machine; writes only with --out)")
    ecal.add_argument("--bitfile", help="--run --backend pynq: the overlay's .bit")
    ecal.add_argument("--meter-log", help="--run: an external meter's CSV (timestamp in Unix seconds, watts) that "
                                          "covered the run, for boards without rails (PYNQ-Z2)")
    ecal.add_argument("--calls", type=int, default=8, help="--run: calls per benchmark (and twice as many)")
    ecal.add_argument("--out", help="the fitted model file (default: bitstreams/<board>/energy.fitted.json)")
    ecal.add_argument("--force", action="store_true", help="replace an existing fitted model file")

    i = sub.add_parser("info", help="parameters and MACs per image of a model")
    i.add_argument("--model", default=d.model, help=", ".join(MODELS))
    i.add_argument("--in-channels", type=int, default=3, help="channels of the input images")
    i.add_argument("--num-classes", type=int, default=10, help="outputs of the classifier")
    i.add_argument("--size", type=int, default=32, help="input height and width")
    return p


CONFIG_FLAGS = frozenset(TrainConfig.__dataclass_fields__)


def _settings(args: argparse.Namespace) -> dict:
    """The config settings the command line gives: its --preset's, then the flags given."""
    given = preset(args.preset) if getattr(args, "preset", None) else {}
    given.update({k: v for k, v in vars(args).items() if k in CONFIG_FLAGS})
    if given.get("init"):
        given["init"] = os.path.abspath(given["init"])  # the run can be resumed from anywhere
    return given


def config_from_args(args: argparse.Namespace, notes: list | None = None) -> TrainConfig:
    """A new run's config: the preset and flags given, defaults for the rest; with --init, the
    plan's model and board (a --model or --board given must be the plan's), and without --lr
    fine-tuning's FINETUNE_LR if the plan is trained (not a fresh e2t plan's, which trains from
    scratch), said in a line appended to ``notes`` (printed once the run's settings passed)."""
    given = _settings(args)
    cfg = TrainConfig(**given)
    if cfg.init is None:
        return cfg
    from host.plan.schema import load
    plan = load(cfg.init)
    own = {"model": plan.network["model"], "board": plan.board.name}
    for key, value in own.items():
        if given.get(key, value) != value:
            raise E2TError(f"{flag(key)} {given[key]}: the --init plan {args.init} is "
                           f"{'a ' + value if key == 'model' else 'for ' + value} (leave {flag(key)} out)")
    prov = plan.data.get("provenance")  # the schema does not check it
    fresh = isinstance(prov, dict) and prov.get("source") == "init"  # e2t plan's fresh weights
    if "lr" not in given and not fresh:
        own["lr"] = FINETUNE_LR
        if notes is not None:
            notes.append(f"--init: lr {FINETUNE_LR:g} for fine-tuning (give --lr to choose)")
    return dataclasses.replace(cfg, **own)


def resume_config(args: argparse.Namespace, saved: dict, source: str = "config") -> TrainConfig:
    """The saved config of a run (from ``source``); flags that contradict it are an error, not a silent change."""
    cfg = TrainConfig.from_dict(saved, source)
    for key, value in _settings(args).items():
        if key == "train_from":
            value = ALIASES.get(value, value)  # "head" is stored as "fc"
        if value != getattr(cfg, key):
            raise E2TError(f"{flag(key)} {value} differs from the run's saved {getattr(cfg, key)}: "
                           f"--resume continues the saved config (drop {flag(key)} or start a new --out)")
    return cfg


def cmd_train(args: argparse.Namespace) -> int:
    from energy import model as emodel

    from contract.runs import CONFIG, RunDir

    resume, notes = getattr(args, "resume", False), []
    if resume:
        if not hasattr(args, "out"):
            raise E2TError("--resume needs --out RUN_FOLDER (the run to continue)")
        cfg = resume_config(args, RunDir(args.out, "").load_config(), os.path.join(args.out, CONFIG))
    else:
        cfg = config_from_args(args, notes)
    emodel.load(cfg.board)  # the end-of-run energy report's model: checked before the first epoch
    out = getattr(args, "out", None) or os.path.join(
        "runs", f"{cfg.model}-{cfg.dataset}-{time.strftime('%Y%m%d-%H%M%S')}")
    progress = not getattr(args, "quiet", False)
    if cfg.backend == "torch":
        Trainer = backends.load("torch", "the torch backend")
        trainer = Trainer(cfg, out, resume=resume, data_dir=getattr(args, "data_dir", None),
                          device=getattr(args, "device", "auto"), progress=progress)
    else:
        from host.train.trainer import EngineTrainer
        trainer = EngineTrainer(cfg, out, resume=resume, data_dir=getattr(args, "data_dir", None),
                                engine=getattr(args, "engine", "fast"), bitfile=getattr(args, "bitfile", None),
                                progress=progress)
    for note in notes:  # the settings passed every check: bad input stays one line
        print(note, file=sys.stderr)
    try:
        with trainer.run.guard():  # stopped before its first checkpoint, the run leaves nothing behind
            if cfg.backend != "torch":
                trainer.meter = rail_meter(cfg.backend)  # after the settings were checked: bad input stays one line
            records = trainer.fit()
    except KeyboardInterrupt:
        raise E2TError(trainer.run.left(interrupted=True)) from None
    except E2TError as e:
        raise E2TError(f"{e}; {trainer.run.left(interrupted=False)}") from None
    if records:
        last = records[-1]
        if cfg.backend != "torch":
            print(run_summary(records))
        print(f"{cfg.model} on {cfg.dataset}: test accuracy {100 * last['test_acc']:.2f} % after "
              f"{last['epoch']} epoch{'s' * (last['epoch'] != 1)}; run folder {out}")
        print(energy_line(out))
    return 0


def rail_meter(backend: str):
    """A recorder of this machine's power rails for the on-engine trainer (None when it has
    none): on a board (``pynq``) also pynq.get_rails(); the missing sources say so in one line
    each. $E2T_HWMON_ROOT and $E2T_POWERCAP_ROOT point it at other trees."""
    from energy import rails
    found = rails.probe(os.environ.get("E2T_HWMON_ROOT", "/sys/class/hwmon"),
                        os.environ.get("E2T_POWERCAP_ROOT", "/sys/class/powercap"),
                        log=lambda m: print(m, file=sys.stderr), pynq=backend == "pynq")
    return rails.meter(found)


def energy_line(run_dir: str, board: str | None = None, model: str | None = None, force: bool = False) -> str:
    """Write the run's energy report; one line saying where it is and what it found."""
    from energy import report
    path, total = report.write(run_dir, board, model, force)
    wb = total["whole_board"]
    figures = (f"{wb['j']:.4g} J modeled for the whole board over {wb['seconds']:.4g} s of board time (the host busy "
               f"{100 * wb['host_share']:.0f} % of it), the engine's dynamic {total['total_j']:.4g} J" if wb["priced"] else
               f"{total['total_j']:.4g} J modeled for the engine (dynamic), the whole board not priced (the report "
               f"says why)")
    return f"energy: {figures} ({total['table']}; {total['model']}), report {path}"


def cmd_energy(args: argparse.Namespace) -> int:
    if args.energy_command == "report":
        print(energy_line(args.run_dir, args.board, args.model, args.force))
        return 0
    if args.energy_command == "calibrate":
        return cmd_calibrate(args)
    from contract.runs import refuse_existing, write_file
    from energy import report
    if len(args.runs) < 2:
        raise E2TError("e2t energy compare needs a baseline run and at least one more")
    if args.out is not None:
        refuse_existing(args.out, folder=False)
    text, data = report.compare(args.runs, args.board, args.model, args.force)
    print(text)
    if args.out is not None:
        write_file(args.out, (json.dumps(data, indent=1) + "\n").encode())
    return 0


def run_summary(records: list[dict]) -> str:
    """What an on-engine run did, over all its epochs (from metrics.jsonl's records)."""
    kept = sum(r["kept_iterations"] for r in records)
    dropped = sum(r["dropped_iterations"] for r in records)
    engine, macs = {}, {}
    for r in records:
        for k, v in r["engine"].items():
            engine[k] = engine.get(k, 0) + v
        for k, v in r["ops"]["total"].get("all", {"macs": {}})["macs"].items():
            macs[k] = macs.get(k, 0) + v
    ops = sum(v for k, v in engine.items() if k.startswith("ops_"))
    seconds = sum(r["seconds"] for r in records)
    eng_s = sum(sum(r["engine_seconds"].values()) for r in records)
    lines = [f"  batches: {kept} trained, {dropped} dropped by SMD ({100 * dropped / max(kept + dropped, 1):.0f} %)",
             f"  engine: {ops:,} calls, {sum(macs.values()) / 1e9:.1f} G MACs ("
             + ", ".join(f"{k} {v / 1e9:.1f} G" for k, v in sorted(macs.items())) + f"), "
             f"{engine.get('bytes', 0) / 2**30:.1f} GiB moved, {eng_s:.0f} s in engine calls of {seconds:.0f} s training"]
    if records[-1].get("executed_fraction") is not None:
        lines.append(f"  SLU: {100 * records[-1]['executed_fraction']:.1f} % of gated blocks run (last epoch)")
    if records[-1].get("psg_predicted_fraction") is not None:
        lines.append(f"  PSG: {100 * records[-1]['psg_predicted_fraction']:.1f} % of weight-gradient signs from the "
                     f"4-bit predictor (last epoch)")
    return "\n".join(lines)


def cmd_plan(args: argparse.Namespace) -> int:
    from contract.runs import refuse_existing
    from host.data.datasets import shape_of
    from host.plan import planbuild

    refuse_existing(args.out)
    if args.gate_init is not None and not (args.slu and 0 < args.gate_init < 1):
        raise E2TError("--gate-init needs --slu and a probability in (0, 1)")
    check_seed(args.seed)
    check_fit(board(args.board), args.batch, "--batch", args.image_size)
    in_channels, classes, size = shape_of(args.dataset, args.data_dir, args.image_size, args.image_channels)
    data = args.dataset if args.dataset != "folder" else \
        f"folder {args.data_dir} ({in_channels} x {size} x {size} images, {classes} classes)"
    plan, weights, _ = planbuild.from_model(args.model, in_channels, classes, size, args.board, args.batch,
                                            args.seed, args.slu, args.gate_init, args.dataset)
    planbuild.save(args.out, plan, weights)
    print(f"{args.model} for {data} on {plan.board.name}: {len(plan.convs())} engine convs, "
          f"{len(plan.ops) - len(plan.convs())} host ops, DDR {plan.data['ddr']['bytes'] / 2**20:.1f} MiB at batch "
          f"{plan.batch}; wrote {os.path.join(args.out, 'plan.json')} and weights.bin")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    return backends.load("export", "e2t export")(args)


def cmd_deploy(args: argparse.Namespace) -> int:
    from .deploy import deploy
    deploy(args.board, args.out, args.plan, args.model, args.dataset, args.data_dir, args.batch, args.epochs,
           not args.no_slu, log=lambda m: print(m, file=sys.stderr), image_size=args.image_size,
           image_channels=args.image_channels)
    return 0


def cmd_estimate(args: argparse.Namespace) -> int:
    return backends.load("estimate", "e2t estimate")(args)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from energy import calibrate
    if args.out is not None or not (args.run and args.backend == "emu"):  # what is written is checked before the fit
        calibrate.target(args.board, args.out, args.force)
    host = None  # the host's rates: measured by --run, else the default model's
    if args.run:
        from e2t import microbench
        segments, source, host = microbench.calibration_segments(args.board, args.backend, args.calls, args.bitfile,
                                                                 args.meter_log, lambda: rail_meter("pynq"),
                                                                 log=lambda m: print(m, file=sys.stderr))
    else:
        source = args.segments
        try:
            with open(args.segments) as f:
                segments = parse(f.read())
        except (OSError, ValueError) as e:
            raise E2TError(f"{args.segments}: not a JSON list of segments ({e})") from None
    try:
        widths = sorted({w for s in segments for w, n in s["macs"].items() if n})
    except (KeyError, TypeError, AttributeError) as e:
        raise E2TError(f"{source}: not a JSON list of segments with macs, bytes, host_seconds, seconds and joules "
                       f"({e})") from None
    fitted = calibrate.fit(segments, widths)
    if args.run and args.backend == "emu":
        from energy import model as emodel
        m = emodel.load(args.board)
        watts = m.power_w
        want = {**{k: (v, m.mac_pj[k]) for k, v in fitted["mac_pj"].items()},
                "ddr": (fitted["ddr_pj_per_byte"], m.ddr_pj_per_byte),
                "host": (fitted["host_w"], watts["ps_busy"] - watts["ps_idle"]),
                "constant": (fitted["constant_w"], watts["pl_static"] + watts["ps_idle"] + watts["board_rest"])}
        worst = max(abs(got - model) / max(abs(model), 1e-30) for got, model in want.values())
        print(f"pipeline check on the emulated engine (modeled rail, not a measurement): the fit gives the model's "
              f"coefficients back within {100 * worst:.2g} %: pJ per MAC, DDR {fitted['ddr_pj_per_byte']:.4g} pJ/byte "
              f"(model {m.ddr_pj_per_byte:g}), host {fitted['host_w']:.4g} W above idle (model "
              f"{want['host'][1]:.4g}), constant {fitted['constant_w']:.4g} W (model {want['constant'][1]:.4g})")
        if not args.out:
            return 0
    path = calibrate.write_fitted(args.board, fitted, f"{len(segments)} segments from {source}", args.out, args.force,
                                  host, log=lambda m: print(m, file=sys.stderr))
    for w, v in fitted["mac_pj"].items():
        print(f"  {w:<8} {v:8.4g} pJ per MAC")
    print(f"  DDR      {fitted['ddr_pj_per_byte']:8.4g} pJ per byte\n  host     {fitted['host_w']:8.4g} W busy above "
          f"idle\n  constant {fitted['constant_w']:8.4g} W (PL static, PS idle, the rest of the board)")
    if host:
        print("  host rates measured here: " + ", ".join(f"{k} {v['value']:.4g}" for k, v in host.items()
                                                      if k != "cpu"))
    print(f"fit: RMS residual {100 * fitted['rms_relative']:.2f} % of the measured joules, condition number "
          f"{fitted['condition']:.3g}; wrote {path} (the default model is unchanged)")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    describe = backends.load("info", "e2t info")
    print(describe(args.model, args.num_classes, args.in_channels, args.size))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``e2t`` console script; returns the exit code. A reader of stdout that
    went away (``e2t estimate | head -1``) ends it quietly with 141, the status of a filter that
    SIGPIPE stopped (what ``set -o pipefail`` sees of ``yes | head``): not 0, since output was lost."""
    try:
        args = build_parser().parse_args(argv)
        code = {"train": cmd_train, "info": cmd_info, "plan": cmd_plan, "export": cmd_export,
                "estimate": cmd_estimate, "deploy": cmd_deploy,
                "energy": cmd_energy}[args.command](args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except E2TError as e:
        print(f"e2t: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        return 141
    except KeyboardInterrupt:
        print("e2t: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
