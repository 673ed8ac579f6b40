"""A reference run's steps counted as the board would run them (issue 23), so that the energy
report and ``e2t energy compare`` price the PyTorch trainer's runs whole-board too.

``BoardCounter`` is contract/opcount.py's OpCounter (its counts unchanged) that adds, for the
same steps (kept ones; an SMD-coasted one: the update only), what the on-engine trainer records
for them: ``ops["host"]``, the host's work of each plan op (host/train/hostwork.py, on the
images each SLU gate let through), and the modeled engine ``cycles`` (contract/cycles.py) of
each plan conv's calls on the images it ran on, PSG's recompute on the tiles the reference's
statistics say were recomputed. The plan is built for the run's model, board and batch as the
engine trainer builds its own (planbuild.from_model); its convs are named as the model's modules.

A contract v2 run (``--elementwise engine``, reference/intnet.py) is counted as the engine trainer
runs contract v2: the host's work of its op table (host/train/intops.py) and the modeled counts of
its STATS and APPLY calls (host/train/elementwise.py) in the layers and phases that make them.

What trains (``--train-from``, ``--train``; host/train/trainable.py) is counted as the engine
trainer runs it: ``trained_layers`` marks the layers that are frozen and those whose input gets no
gradient, and the host's work and the cycles follow the same choice.

The cycles and the host's work are the fixed-point engine's whatever the run's precision: an
fp32 run is priced as fp32 training on the same fabric (its MACs and bytes at fp32, the time
of the engine that exists). The classifier and the gates' output layer are the host's (the
plan's linear and gate ops): their OpCounter slots get no cycles.
"""
from __future__ import annotations

import dataclasses
from collections import Counter

from contract import cycles as cycle_model
from contract.errors import E2TError
from contract.opcount import LayerGeom, OpCounter, Precision, add_host, host_slot, sum_host_layers
from host.plan import planbuild
from host.train.elementwise import elementwise_calls, elementwise_counts
from host.train.hostwork import count_step, update_work
from host.train.intops import INT_OPS
from host.train.trainable import EVERYTHING
from host.train.walk import TABLE, HostTally

MODEL = {"fwd": cycle_model.conv_fwd, "bwd_data": cycle_model.conv_bwd_data, "wgrad": cycle_model.conv_wgrad,
         "update": cycle_model.update}  # each engine call's cycle model


class BoardCounter(OpCounter):
    """OpCounter over ``layers`` that also counts the host's work and the engine's cycles of
    ``plan``'s ops for every step it counts (``record()["host"]``, ``cycles`` in the slots), of
    what ``trainable`` trains (a trainable.Trainable; the layers' flags say the same); ``contract_v2``:
    with the per-element work on the engine."""

    def __init__(self, layers: list[LayerGeom], precision: Precision, plan, trainable=EVERYTHING,
                 contract_v2: bool = False):
        self.plan, self.convs, self.trainable = plan, {op["name"]: op for op in plan.convs()}, trainable
        missing = sorted(set(self.convs) - {g.name for g in layers})
        unknown = [g.name for g in layers if g.name not in self.convs and g.name + ".weight" not in plan.params]
        if missing or unknown:
            raise E2TError(f"the {plan.network['model']} plan does not match the model's layers: plan convs not "
                           f"among them {missing}, layers neither a plan conv nor a host parameter {unknown}")
        self.gates = {op["block"]: op["index"] for op in plan.ops if op["type"] == "gate"}  # block -> its gate
        self.table = INT_OPS if contract_v2 else TABLE
        self.tally, self.update_slots = HostTally(plan), update_work(plan, trainable, self.table)
        self._cycles, self._elementwise = {}, {}
        super().__init__(layers, precision)

    def reset(self) -> None:
        super().reset()
        self.steps, self.updates = Counter(), 0  # (batch, ((gate, images), ...)) -> kept steps; steps updated

    def add_iteration(self, batch: int, executed: dict[int, int] | None = None,
                      psg_stats: dict[str, dict] | None = None, kept: bool = True,
                      coast: bool = False) -> None:
        """OpCounter's iteration, and the same step's host work and engine cycles."""
        super().add_iteration(batch, executed, psg_stats, kept, coast)
        if not (kept or coast):
            return
        executed, psg_stats = executed or {}, psg_stats or {}
        self.updates += 1
        if kept:
            self.steps[batch, tuple((j, executed[b]) for b, j in self.gates.items() if b in executed)] += 1
        for g in self.layers:
            if g.name in self.convs:
                n = 0 if not kept else executed.get(g.block, batch) if g.role == "residual" else batch
                self._add_cycles(self.convs[g.name], g, n, psg_stats.get(g.name, {}))
        if self.table is INT_OPS:
            gated = {j: executed[b] for b, j in self.gates.items() if b in executed} if kept else {}
            elementwise_counts(self._elementwise_calls(batch, gated, kept), self.per_layer)

    def _elementwise_calls(self, batch: int, gated: dict, kept: bool) -> list[dict]:
        """A step's STATS and APPLY calls (a coasted step: its update's), once per distinct step."""
        key = (batch, tuple(sorted(gated.items())), kept)
        if key not in self._elementwise:
            calls = elementwise_calls(self.plan, batch, self.trainable, gated)
            self._elementwise[key] = calls if kept else [c for c in calls if c["phase"] == "update"]
        return self._elementwise[key]

    def _add_cycles(self, op: dict, g: LayerGeom, n: int, stats: dict) -> None:
        """The modeled cycles of ``op``'s engine calls on ``n`` images (none: its UPDATE only)
        into its slots; CONV_WGRAD's whole in its first phase, as the engine session counts it;
        a frozen layer (``g``) makes no CONV_WGRAD and no UPDATE, and no CONV_BWD_DATA where its
        input gets no gradient."""
        mine, b, psg = self.per_layer[op["name"]], self.plan.board, self.precision.psg
        calls = [("update", "update", op["c_out"] * op["c_in"] * op["k"] ** 2, ())] if g.trains else []
        if n:
            s = cycle_model.conv_shape(op, n)
            calls.append(("fwd", "fwd", s, ()))
            if g.trains:
                calls.append(("wgrad", "bwd_w_pred" if psg else "bwd_w_full", s,
                              (psg, self._recomputed(s, stats) if psg else None)))
            if op["input_grad"] and g.input_grad:
                calls.append(("bwd_data", "bwd_data", s, ()))
        for kind, phase, shape, extra in calls:
            key = (kind, shape, *extra)
            if key not in self._cycles:  # the model walks the kernel's loops in Python: once per call shape
                self._cycles[key] = MODEL[kind](shape, b, *extra)
            mine[phase]["cycles"] = mine[phase].get("cycles", 0) + self._cycles[key]

    def _recomputed(self, s, stats: dict) -> int | None:
        """The board's PSG tiles recomputed: the reference's count where its tiles are the board's,
        else the same share of the board's tiles (rounded up); None (all) without statistics."""
        if "tiles_recomputed" not in stats:
            return None
        board_tiles = cycle_model.tiles(s, self.plan.board)
        if stats["tiles"] == board_tiles:
            return stats["tiles_recomputed"]
        return -(-stats["tiles_recomputed"] * board_tiles // stats["tiles"])

    def host(self) -> dict:
        """The host's counts of the steps counted: each distinct step (batch, images per gate)
        counted once (hostwork.count_step), times its steps; the update's, times the steps updated."""
        per_layer = {op["name"]: {} for op in self.plan.ops}
        for (n, gated), times in self.steps.items():
            self.tally.reset()  # its counts per op and size are kept
            count_step(self.tally, n, self.precision.psg, dict(gated), self.trainable, self.table)
            for name, per in self.tally.per_layer.items():
                for phase, slot in per.items():
                    add_host(per_layer[name], phase, _times(slot, times) if times > 1 else slot)
        if self.updates:
            for name, slot in self.update_slots.items():
                add_host(per_layer[name], "update", _times(slot, self.updates))
        return {"total": sum_host_layers(per_layer), "per_layer": per_layer}

    def record(self) -> dict:
        return {**super().record(), "host": self.host()}


def _times(slot: dict, k: int) -> dict:
    """The host slot of ``k`` times ``slot``'s work."""
    return host_slot(k * slot["read"], k * slot["written"], {f: k * v for f, v in slot["flops"].items()},
                     k * slot["calls"])


def trained_layers(layers: list[LayerGeom], trainable) -> list[LayerGeom]:
    """``layers`` with what ``trainable`` (of the model's plan ops) says of each: whether it trains
    and whether its input gets a gradient. The gates' output layer (no plan op of its own) goes
    with the gates: it trains, and passes a gradient on, while any of them trains."""
    ops = {op["name"]: op for op in trainable.ops}
    gates = any(trainable.gates.values())
    out = []
    for g in layers:
        op = ops.get(g.name)
        trains, grad = (trainable.trains(op), trainable.wants(op["inputs"][0])) if op else (gates, gates)
        out.append(dataclasses.replace(g, trains=trains, input_grad=grad))
    return out


def counter(cfg, layers: list[LayerGeom], ds, log, trainable=EVERYTHING) -> OpCounter:
    """The run's counter: a BoardCounter on the plan of ``cfg``'s model, board and batch for
    ``ds``'s images, or, where the board cannot hold that plan, OpCounter alone (said in ``log``:
    its records are then priced by their dynamic energy only); ``trainable``: what trains (the
    ``layers`` marked by ``trained_layers``)."""
    precision = Precision(cfg.precision, cfg.psg)
    try:
        plan = planbuild.from_model(cfg.model, ds.in_channels, ds.num_classes, ds.test_x.shape[2], cfg.board,
                                    cfg.batch_size, slu=cfg.slu_target is not None, dataset=cfg.dataset)[0]
    except E2TError as e:
        log(f"no whole-board counts for this run (its records price its dynamic energy only): {e}")
        return OpCounter(layers, precision)
    return BoardCounter(layers, precision, plan, trainable, cfg.elementwise == "engine")
