"""The on-engine trainer (``e2t train --backend emu``, ``--backend pynq`` on a board).

From a plan (built from the model name, or ``--init DIR``), layer by layer: every conv on the
engine (host/engine/session.py), the rest on the host (host/train/ops.py's op table). E2-Train's savings: SMD
on the host (a dropped batch makes no engine call), SLU on the host (a gated block's engine
ops run on the images whose gate is on), PSG in the engine. ``--train-from`` and ``--train``
(host/train/trainable.py) freeze layers: a frozen conv makes no CONV_WGRAD or UPDATE call, and no
backward work runs below the lowest trained layer. Same run folder, config.json and
metrics.jsonl as the reference trainer, plus the engine's counters and the host's counted work
(``ops.host``, host/train/hostwork.py); an atomic checkpoint (``checkpoint.npz``: every DDR
array, the host's parameters and momentum) after every epoch,
and ``--resume`` continues to the same weights as an uninterrupted run. At the end the
trained network is written as a plan (``plan.json`` + ``weights.bin``) in the run folder.
"""
from __future__ import annotations

import io
import json
import os
import sys
import time

import numpy as np

from contract import boards, numerics as nx
from contract.errors import E2TError
from contract.jsonfile import parse
from contract.opcount import add_host, sum_host_layers, sum_layers, total_macs
from contract.runs import RunDir, check_arrays, check_position, epoch_line
from host.data.datasets import batches_per_epoch, load_dataset, preprocess, train_batches
from host.engine.session import PHASES, EngineSession
from host.plan import finetune, planbuild, schema as planmod, weightsfile

from . import hostops, intops
from .config import TrainConfig, lr_at
from .forward import evaluate
from .hostwork import update_work
from .progress import Progress
from .schedule import cost_sign, cost_weights, gate_draws, smd_drops
from .trainable import Trainable
from .trainstep import Step
from .walk import TABLE, HostTally

CHECKPOINT = "checkpoint.npz"


def open_overlay(backend: str, board: str, engine: str = "fast", bitfile: str | None = None, log=None):
    """The overlay a backend trains on: the emulated one, or pynq.Overlay on a board."""
    if backend == "emu":
        from host.engine.emulated import EmulatedOverlay
        return EmulatedOverlay(board, engine, log=log)
    from host.engine.driver import PynqOverlay, pynq_driver
    pynq_driver()
    if not bitfile or not os.path.isfile(bitfile):
        raise E2TError(f"--backend pynq needs --bitfile (the overlay's .bit with its .hwh beside it); got {bitfile}")
    try:
        import pynq
        overlay = pynq.Overlay(os.path.abspath(bitfile))
    except Exception as e:  # pynq raises many kinds off a board or on a bad overlay
        raise E2TError(f"cannot load the overlay {bitfile}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    return PynqOverlay(overlay)


def _exponents(v) -> bool:
    """A conv's [w_exp, wq_exp] as the plan checks them (host/plan/schema.py)."""
    return isinstance(v, list) and len(v) == 2 and all(isinstance(e, int) and not isinstance(e, bool) for e in v) \
        and nx.MASTER_EXP_MIN <= v[0] <= nx.MASTER_EXP_MAX and -1000 <= v[1] <= 1000


class EngineTrainer:
    """One run on the engine: ``fit()`` trains to ``cfg.epochs``."""

    def __init__(self, cfg: TrainConfig, out: str, *, resume: bool = False, data_dir: str | None = None,
                 overlay=None, engine: str = "fast", bitfile: str | None = None,
                 progress: bool = True, log=None, meter=None):
        if cfg.predictive_forward:
            raise E2TError(f"--predictive-forward is not implemented on --backend {cfg.backend} yet")
        b = boards.board(cfg.board)
        if cfg.psg_tile is not None and (cfg.psg_tile, cfg.psg_tile) != (b.tile_o, b.tile_i):
            raise E2TError(f"--psg-tile {cfg.psg_tile}: the engine of {cfg.board} recomputes tiles of "
                           f"{b.tile_o} x {b.tile_i} channels; leave --psg-tile out")
        self.cfg, self.progress, self.meter = cfg, progress, meter  # meter: start() / stop() -> rails
        self.log = log if log is not None else (lambda msg: print(msg, file=sys.stderr))
        self.run = RunDir(out, CHECKPOINT)
        if not resume:
            self.run.check_new()  # before the engine is built or the data read
        self.ds = load_dataset(cfg.dataset, data_dir, cfg.image_size, cfg.image_channels)
        h, w = self.ds.test_x.shape[2:]
        init, notes = cfg.init, []  # said once every check passed
        if init:
            self.plan = planmod.load(init)
            arrays = weightsfile.read(init, self.plan)
            if self.plan.batch < cfg.batch_size:
                raise E2TError(f"--init {init}: its plan holds batches of {self.plan.batch}, --batch-size is "
                               f"{cfg.batch_size}")
            net = self.plan.network
            if (net["model"], self.plan.board.name) != (cfg.model, cfg.board):
                raise E2TError(f"--init {init}: the plan is a {net['model']} for {self.plan.board.name}, the run's "
                               f"config a {cfg.model} for {cfg.board}")
            if net["in_channels"] != self.ds.in_channels:
                raise E2TError(f"--init {init}: the plan takes {net['in_channels']}-channel images, {cfg.dataset}'s "
                               f"are {self.ds.in_channels}-channel")
            if (net["height"], net["width"]) != (h, w):
                raise E2TError(f"--init {init}: the plan takes images of {net['height']} x {net['width']} pixels, "
                               f"{cfg.dataset}'s are {h} x {w}")
            classes, add_gates = net["num_classes"], cfg.slu_target is not None and not net["gates"]
            if classes != self.ds.num_classes or add_gates:  # a new head, SLU gates: the rest keeps its weights
                gate_init = finetune.OPEN_GATES if cfg.slu_gate_init is None else cfg.slu_gate_init
                self.plan, arrays = finetune.adapt(self.plan, arrays, self.ds.num_classes, add_gates, gate_init,
                                                   cfg.seed, cfg.dataset, f"--init {init}")
                if classes != self.ds.num_classes:
                    notes.append(f"--init: new head, {classes} -> {self.ds.num_classes} classes; the convs keep "
                                 f"their trained weights")
                if add_gates:
                    notes.append(f"--init: SLU gates added to the gateless plan, started open (p {gate_init:g}; "
                                 f"--slu-gate-init to choose); the convs keep their trained weights")
        else:
            boards.check_images(b, h, w, cfg.dataset)
            c, k, size = self.ds.in_channels, self.ds.num_classes, h
            self.plan, _, arrays = planbuild.from_model(cfg.model, c, k, size, cfg.board, cfg.batch_size, cfg.seed,
                                                        cfg.slu_target is not None, cfg.slu_gate_init, cfg.dataset)
        self.overlay = overlay or open_overlay(cfg.backend, cfg.board, engine, bitfile, self.log)
        self.session = EngineSession(self.plan, arrays, self.overlay)
        self.params = {k: v.copy() for k, v in arrays.items() if self.plan.params[k]["region"] == "host"}
        self.psg = {"tau": cfg.psg_tau, "ratio": cfg.psg_ratio} if cfg.psg else None
        gates = [op for op in self.plan.ops if op["type"] == "gate"]
        self.cost_weights = None
        if cfg.slu_target is not None:  # the plan has gates: fresh ones, the init's or added to it
            macs = {op["block"]: 0 for op in gates}
            for op in self.plan.convs():
                if op.get("gate") is not None and op["role"] == "residual":
                    macs[op["block"]] += op["c_out"] * op["c_in"] * op["k"] ** 2 * op["ho"] * op["wo"]
            self.cost_weights = cost_weights([macs[op["block"]] for op in gates], cfg.slu_weighting)
        self.trainable = Trainable(self.plan.ops, cfg.train_from, cfg.train)  # --train-from, --train
        self.table = TABLE
        if cfg.elementwise == "engine":
            self.table = intops.INT_OPS
        self.update_work = update_work(self.plan, self.trainable, self.table)
        self.host = HostTally(self.plan)  # the epoch's ops.host
        self.epoch = self.iteration = 0
        self.iters_per_epoch = batches_per_epoch(self.ds, cfg.batch_size)
        self.total_iterations = self.iters_per_epoch * cfg.epochs
        if resume:
            self._restore()
        else:
            self.run.create(cfg.to_dict())
            for note in notes:
                self.log(note)

    # -- checkpoints ----------------------------------------------------------------------
    def _state(self) -> bytes:
        arrays = {f"ddr/{k}": v for k, v in self.session.arrays().items()}
        arrays.update({f"host/{k}": v for k, v in self.params.items()})
        meta = {"epoch": self.epoch, "iteration": self.iteration, "config": self.cfg.to_dict(),
                "exps": {op["name"]: [op["w_exp"], op["wq_exp"]] for op in self.plan.convs()}}
        buf = io.BytesIO()
        np.savez(buf, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
        return buf.getvalue()

    def _restore(self) -> None:
        """Continue from the checkpoint, every part of it checked against the plan before anything
        changes; with none saved yet (killed in epoch 1) start from the beginning, as the config says."""
        path = self.run.checkpoint
        if not os.path.lexists(path):
            self.run.resume(None)
            self.log(f"resuming {self.run.path} from its start: no epoch was saved before it stopped")
            return
        where = f"checkpoint {path}"
        try:
            with np.load(path) as z:
                meta = parse(bytes(z["meta"]).decode())
                data = {k: z[k] for k in z.files if k != "meta"}
        except Exception as e:
            raise E2TError(f"{where} is corrupt or truncated ({type(e).__name__}); nothing was changed") from None
        if not isinstance(meta, dict) or sorted(meta) != ["config", "epoch", "exps", "iteration"]:
            raise E2TError(f"{where}: its meta is not an engine checkpoint's (config, epoch, exps, iteration)")
        if TrainConfig.from_dict(meta["config"], where) != self.cfg:
            raise E2TError(f"{where} belongs to a different config")
        check_position(where, meta["epoch"], meta["iteration"], self.cfg.epochs, self.iters_per_epoch)
        expected = {f"ddr/{k}": v for k, v in self.session.arrays().items()}
        expected.update({f"host/{k}": v for k, v in self.params.items()})
        check_arrays(where, data, expected)
        exps = meta["exps"]
        if not isinstance(exps, dict) or sorted(exps) != sorted(op["name"] for op in self.plan.convs()) or \
                not all(_exponents(v) for v in exps.values()):
            raise E2TError(f"{where}: exps does not hold the exponents [w_exp, wq_exp] of every conv of the plan")
        for key, value in data.items():
            region, name = key.split("/", 1)
            if region == "ddr":
                self.session.v[name][...] = value
            else:
                self.params[name] = value
        for op in self.plan.convs():
            op["w_exp"], op["wq_exp"] = meta["exps"][op["name"]]
        self.session.ddr.flush()
        self.epoch, self.iteration = meta["epoch"], meta["iteration"]
        self.run.resume(self.epoch)
        self.log(f"resuming {self.run.path} after epoch {self.epoch} (iteration {self.iteration})")

    def save_plan(self) -> None:
        """The trained network as a plan in the run folder (e2t export RUN gives it back out)."""
        arrays = {**self.session.arrays(), **self.params}
        data = json.loads(self.plan.to_json())
        data["provenance"] = {"source": "engine training", "epoch": self.epoch, "iteration": self.iteration,
                              "config": self.cfg.to_dict()}
        data["network"]["preprocess"] = preprocess(self.ds)  # how images become its input, as trained
        weights = weightsfile.pack(data["params"], arrays)
        data["weights"] = weightsfile.describe(weights)
        planbuild.save_into(self.run.path, planmod.Plan(data), weights)

    # -- training -------------------------------------------------------------------------
    def _update(self, step: Step | None, lr: float) -> int:
        """Engine UPDATE of every trained conv (sign 0 where no gradient came) and SGD of the
        host's trained parameters; frozen ones (``self.trainable``) take no step."""
        cfg = self.cfg
        k = nx.UpdateConstants.from_floats(lr, cfg.weight_decay, cfg.momentum)
        saturations = 0
        for op in filter(self.trainable.trains, self.plan.convs()):
            if step is None or op["name"] not in step.updated:
                self.session.buffer(op, "sgn")[...] = 0
            saturations += self.session.update(op, k)
            self.session.refresh_weights(op, on_engine=self.cfg.elementwise == "engine")
        grads = step.grads if step is not None else {}
        for name in [n for n in self.params if n in self.trainable.params and f"{n}.momentum_buffer" in self.params]:
            buf = f"{name}.momentum_buffer"
            # PyTorch's SGD step, rounded as it rounds: its add(alpha=...) is a fused multiply-add
            p = self.params[name]
            d = hostops.fma32(p, np.float32(cfg.weight_decay), grads.get(name, np.zeros_like(p)))
            self.params[buf] = (np.float32(cfg.momentum) * self.params[buf] + d).astype(np.float32)
            self.params[name] = hostops.fma32(self.params[buf], np.float32(-lr), p)
        for name, slot in self.update_work.items():
            add_host(self.host.per_layer[name], "update", slot)
        return saturations

    def train_epoch(self) -> dict:
        cfg = self.cfg
        start = time.perf_counter()
        dropped = smd_drops(cfg.smd, cfg.seed, self.epoch, self.iters_per_epoch)
        rng = gate_draws(cfg.seed, self.epoch)
        before = dict(self.session.counts), dict(self.session.seconds)
        self.session.per_layer = {}  # this epoch's accounting (evaluation's calls are not training's)
        self.host.reset()
        coasted = 0
        loss_sum = correct = seen = 0.0
        gates = self.plan.network["gates"]
        block_runs, saturations = np.zeros(gates), 0
        with Progress(self.iters_per_epoch, f"epoch {self.epoch + 1}/{cfg.epochs}", enabled=self.progress) as bar:
            for drop, (x, y) in zip(dropped, train_batches(self.ds, cfg.batch_size, cfg.seed, self.epoch)):
                lr = lr_at(cfg, self.iteration, self.total_iterations)
                self.iteration += 1
                if drop:
                    if cfg.smd_coast:
                        saturations += self._update(None, lr)
                        coasted += 1
                    bar.update(lr=lr)
                    continue
                cost = None
                if self.cost_weights is not None:
                    cost = {"beta": cfg.slu_beta, "weights": self.cost_weights, "sign": 0.0}
                step = Step(self.plan, self.session, self.params, self.psg, cost, rng, self.host, self.trainable,
                            self.table)
                loss, logits = step.forward(x, y)
                if cost is not None:
                    executed = float(np.mean(step.decisions)) if step.decisions else 1.0
                    cost["sign"] = cost_sign(executed, cfg.slu_target, cfg.slu_band)
                    block_runs += np.array([d.sum() for d in step.decisions])
                step.backward()
                saturations += self._update(step, lr)
                loss_sum += loss * len(y)
                correct += float((logits.argmax(1) == y).sum())
                seen += len(y)
                bar.update(loss=loss, lr=lr)
        self.epoch += 1
        seconds = time.perf_counter() - start
        kept = int((~dropped).sum())
        counts = {k: v - before[0].get(k, 0) for k, v in self.session.counts.items()}
        record = {"epoch": self.epoch, "iteration": self.iteration, "lr": lr,
                  "train_loss": loss_sum / seen if seen else None, "train_acc": correct / seen if seen else None,
                  "kept_iterations": kept, "dropped_iterations": len(dropped) - kept, "seconds": seconds,
                  "images_per_s": seen / seconds, "engine": counts,
                  "engine_seconds": {ph: self.session.seconds[ph] - before[1].get(ph, 0.0) for ph in PHASES},
                  "saturations": {"update": saturations, "engine": counts.get("saturations", 0)}}
        record["ops"] = {"backend": cfg.backend, "iterations": {"kept": kept, "dropped": len(dropped) - kept,
                                                                "coasted": coasted},
                         "total": sum_layers(self.session.per_layer), "per_layer": self.session.per_layer,
                         "host": {"total": sum_host_layers(self.host.per_layer), "per_layer": self.host.per_layer}}
        record["macs"] = total_macs(record["ops"]["total"])
        if cfg.psg and counts.get("psg_entries"):
            record["psg_predicted_fraction"] = counts["psg_sure"] / counts["psg_entries"]
        if gates and seen:
            record["block_executed"] = [1.0] + list(block_runs / seen)
            record["executed_fraction"] = float(block_runs.sum() / (seen * gates))
        return record

    def evaluate(self) -> dict:
        from host.data.datasets import normalize
        x = normalize(self.ds, self.ds.test_x)
        arrays = {**self.session.arrays(), **self.params}
        out = evaluate(self.plan, arrays, x, self.ds.test_y, self.session, self.cfg.batch_size, table=self.table)
        out.pop("predictions")
        return out

    def start_accuracy(self) -> dict:
        """The --init network's test accuracy and loss before training (its new head, gates
        included), for epoch 1's record (``init_test_acc``, ``init_test_loss``): a resumed run
        finds them there and does not evaluate again."""
        r = self.evaluate()
        self.log(f"epoch 0: test acc {100 * r['test_acc']:.2f} % (the --init network, before training)")
        return {"init_test_acc": r["test_acc"], "init_test_loss": r["test_loss"]}

    def fit(self) -> list[dict]:
        """Train the remaining epochs: after each, its metrics record, then the checkpoint (a kill
        between them leaves a record that resuming drops); with --init, first the accuracy it starts
        from (``start_accuracy``). Stopped before the first checkpoint, the run removes what it
        created (``RunDir.abandon``)."""
        with self.run.guard():
            start = self.start_accuracy() if self.cfg.init and self.epoch == 0 else {}
            while self.epoch < self.cfg.epochs:
                if self.meter is not None:
                    self.meter.start()
                record = self.train_epoch()
                if self.meter is not None:
                    record["rails"] = self.meter.stop()
                record.update(self.evaluate(), **start)
                start = {}
                self.run.append_metrics(record)
                self.run.write_checkpoint(self._state(), self.epoch)
                self.log(epoch_line(record))
            self.save_plan()
        return self.run.metrics()

