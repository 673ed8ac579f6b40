"""The host's work of one training step from a plan, without running it (``e2t estimate``): the
counts the on-engine trainer records (host/train/walk.py's walk of the op table's ``work``, its
gathers, scatters and gradient sums; ``update_work`` after each step), with every SLU gate on or
the images each let through (a reference run's steps, reference/boardcount.py), of what trains
(host/train/trainable.py; default everything). contract/opcount.py's host slots;
host/train/hostops.py states the counting rule."""
from __future__ import annotations

import numpy as np

from contract.opcount import add_host, merge_host, sum_host_layers
from host.plan.schema import MOMENTUM

from . import hostops
from .ops import per_image
from .trainable import EVERYTHING
from .walk import TABLE, HostTally, gathered, taken_inputs


def update_work(plan, trainable=EVERYTHING, table=TABLE) -> dict:
    """Op name -> the host's work after a step (its "update" slot): the op's own (a trained conv's
    weight refresh) and the SGD (EngineTrainer._update) of each host parameter it is the first
    trained op to name."""
    out, seen = {}, set()
    for op in plan.ops:
        parts = [table[op["type"]].work(plan, op, 0, "update", trainable=trainable)]
        for name in op.get("params", {}).values() if trainable.trains(op) else ():
            if name in plan.params and name not in seen and name + MOMENTUM in plan.params:
                parts.append(hostops.sgd_work(int(np.prod(plan.params[name]["shape"]))))
            seen.add(name)
        slot = merge_host(*parts)
        if slot["calls"]:
            out[op["name"]] = slot
    return out


def count_step(tally: HostTally, n: int, psg: bool = True, executed: dict | None = None,
               trainable=EVERYTHING, table=TABLE) -> None:
    """One training step's forward and backward host work at batch ``n`` into ``tally`` (each
    distinct count computed once, under the walk's keys), as the walk counts it: an op of gate j
    on the ``executed[j]`` images its gate let through (every gate on where absent), the gathers
    and scatters of its block, a block no image took counting only its gathers; the backward of
    what ``trainable`` trains, down to the tensors that get a gradient; ``table``: the op table
    (contract v2's: host/train/intops.INT_OPS)."""
    plan, executed = tally.plan, executed or {}

    def count(op, phase, key, work):
        tally.add(op["name"], phase, (op["name"], phase, *key), work)

    def sizes(op, kind):  # (images the op runs on, its gate's images)
        on = executed.get(op["gate"], n) if op.get("gate") is not None else None
        return (on if gathered(op, kind) else n), on

    outside, taken, empty = taken_inputs(plan, table), set(), set()  # (tensor, gate) gathered
    for op in plan.ops:
        kind, gate = table[op["type"]], op.get("gate")
        rows, on = sizes(op, kind)
        for name in outside.get(op["name"], ()):
            if (name, gate) not in taken:
                taken.add((name, gate))
                count(op, "fwd", ("take", name, on), lambda: table.take_work(plan, name, on))
        if rows == 0:
            empty.add(op["name"])
            continue
        count(op, "fwd", (rows, on, psg), lambda: kind.work(plan, op, rows, "fwd", psg=psg, on=on))
    parts = {plan.ops[-1]["output"]: [("ints",)]}  # tensor -> the gradients it gets (table.part_kind)
    for op in reversed(plan.ops):
        kinds = tuple(parts.pop(op["output"], ()))
        k = len(kinds)
        if not k or op["name"] in empty:
            continue
        kind, gate = table[op["type"]], op.get("gate")
        rows, on = sizes(op, kind)
        count(op, "bwd_data", ("sum", k, rows), lambda: table.gradient_sum_work(k, rows * per_image(plan, op["output"])))
        if any(p != ("ints",) for p in kinds):
            count(op, "bwd_data", ("parts", kinds, rows), lambda: table.parts_work(plan, op, kinds, rows))
        count(op, "bwd_data", (rows, on, psg),
              lambda: kind.work(plan, op, rows, "bwd_data", psg=psg, on=on, trainable=trainable))
        for i, name in enumerate(op["inputs"]):
            if name == plan.data["input"] or not trainable.wants(name):
                continue  # the image (its conv passes no gradient, input_grad), a tensor frozen layers made
            spread = name in outside.get(op["name"], ())
            if spread:
                count(op, "bwd_data", ("scatter", name, on, n), lambda: table.scatter_work(plan, name, on, n))
            parts.setdefault(name, []).append(table.part_kind(op, i, spread, on))


def step_work(plan, n: int | None = None, psg: bool = True, executed: dict | None = None,
              trainable=EVERYTHING, table=TABLE) -> dict:
    """One training step's host counts at batch ``n`` (default the plan's), with or without PSG,
    ``executed``: gate index -> the images it let through (default every gate on), of what
    ``trainable`` trains (default everything), with the op table ``table``:
    ``{"per_layer": every plan op in order -> phase -> slot, "total": per phase and "all"}``,
    what a run of such a step records."""
    tally = HostTally(plan)
    count_step(tally, plan.batch if n is None else n, psg, executed, trainable, table)
    for name, slot in update_work(plan, trainable, table).items():
        add_host(tally.per_layer[name], "update", slot)
    return {"per_layer": tally.per_layer, "total": sum_host_layers(tally.per_layer)}
