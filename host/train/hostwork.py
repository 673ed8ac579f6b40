"""The host's work of one training step from a plan, without running it (``e2t estimate``): the
counts the on-engine trainer records (host/train/walk.py's walk of the op table's ``work``, its
gathers, scatters and gradient sums; ``update_work`` after each step), every SLU gate on.
contract/opcount.py's host slots; host/train/hostops.py states the counting rule."""
from __future__ import annotations

import numpy as np

from contract.opcount import add_host, merge_host, sum_host_layers
from host.plan.schema import MOMENTUM

from . import hostops
from .ops import OPS, per_image
from .walk import gather_work, gathered, gradient_sum_work, scatter_work


def update_work(plan) -> dict:
    """Op name -> the host's work after a step (its "update" slot): the op's own (a conv's weight
    refresh) and the SGD (EngineTrainer._update) of each host parameter it is the first to name."""
    out, seen = {}, set()
    for op in plan.ops:
        parts = [OPS[op["type"]].work(plan, op, 0, "update")]
        for name in op.get("params", {}).values():
            if name not in seen and name + MOMENTUM in plan.params:
                parts.append(hostops.sgd_work(int(np.prod(plan.params[name]["shape"]))))
            seen.add(name)
        slot = merge_host(*parts)
        if slot["calls"]:
            out[op["name"]] = slot
    return out


def step_work(plan, n: int | None = None, psg: bool = True) -> dict:
    """One training step's host counts at batch ``n`` (default the plan's), every gate on, with
    or without PSG: ``{"per_layer": every plan op in order -> phase -> slot, "total": per phase
    and "all"}``, what a run of such a step records."""
    n = plan.batch if n is None else n
    per_layer = {op["name"]: {} for op in plan.ops}

    def count(op, phase, slot):
        if slot:
            add_host(per_layer[op["name"]], phase, slot)

    block, taken = {}, set()  # tensor -> the gate whose gathered op made it; (tensor, gate) gathered
    for op in plan.ops:
        kind, gate = OPS[op["type"]], op.get("gate")
        if gathered(op, kind):
            for name in op["inputs"]:
                if block.get(name) != gate and (name, gate) not in taken:
                    taken.add((name, gate))
                    count(op, "fwd", gather_work(n, per_image(plan, name)))
            block[op["output"]] = gate
        count(op, "fwd", kind.work(plan, op, n, "fwd", psg=psg))
    parts = {plan.ops[-1]["output"]: 1}  # tensor -> the gradients it gets
    for op in reversed(plan.ops):
        k = parts.pop(op["output"], 0)
        if not k:
            continue
        kind, gate = OPS[op["type"]], op.get("gate")
        count(op, "bwd_data", gradient_sum_work(k, n * per_image(plan, op["output"])))
        count(op, "bwd_data", kind.work(plan, op, n, "bwd_data", psg=psg))
        for name in op["inputs"]:
            if name == plan.data["input"]:
                continue  # the image: its conv passes no gradient (input_grad)
            if gathered(op, kind) and block.get(name) != gate:
                count(op, "bwd_data", scatter_work(n, n, per_image(plan, name)))
            parts[name] = parts.get(name, 0) + 1
    for name, slot in update_work(plan).items():
        add_host(per_layer[name], "update", slot)
    return {"per_layer": per_layer, "total": sum_host_layers(per_layer)}
