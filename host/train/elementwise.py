"""Contract v2's engine calls of one training step from a plan, without running it (``e2t estimate
--elementwise engine``, bench/per_element_model.py): the STATS and APPLY calls host/train/intops.py's
op table makes beside the convs, each with what EngineSession records of it (host/engine/session.py:
its products at the op's multiplier width, its DDR bytes, its modeled cycles; in its layer and phase).

The walk is the op table's, on shapes: forward, each BatchNorm's STATS (SQUARE) of its conv's int32
output and each ReLU's APPLY of the affine map before it (the residual add's second term, an int8
shortcut or a projection's int32 output, is APPLY's second source), ReLU, int8 out; backward, each
ReLU's APPLY of the gradients that reach its output (masked, int32 out, two in one call; a third and
more joined first by APPLYs without a mask), each BatchNorm's STATS (PRODUCT) of its gradient and its
input and, where its input gets a gradient, its APPLY to int16 (of one gradient: more joined first).
SLU: a gated block's calls on the images its gate lets through; its mix writes a projection's
shortcut by an APPLY (an int8 shortcut the host shifts) and joins its gradients into one. The
update: each trained conv's weights refreshed by one STATS and three APPLY calls
(contract/weightrefresh.py).
"""
from __future__ import annotations

import math

from contract import cycles, regmap, weightrefresh
from contract.opcount import add_count
from host.engine.session import ELEMENT_MACS

from .intops import INT_OPS, KEEP, join_steps
from .trainable import EVERYTHING
from .walk import gathered, taken_inputs


def elementwise_calls(plan, n: int | None = None, trainable=EVERYTHING, executed: dict | None = None) -> list[dict]:
    """The STATS and APPLY calls of one training step at batch ``n`` (default the plan's) of what
    ``trainable`` trains (host/train/trainable.py; default everything), an op of gate j on the
    ``executed[j]`` images its gate let through (every gate on where absent), in the order they run, each
    ``{"layer", "phase", "op", "mode", "shape", "src2", "width", "macs", "bytes", "cycles"}``: the plan op
    whose work it is, its accounting phase ("fwd", "bwd_data"), "stats" or "apply", its mode
    register, (N, C, H, W), APPLY's second source ("none", "int8", "int32"), and its counts
    (contract/cycles.py on the plan's board)."""
    r, n, executed = regmap.load(), plan.batch if n is None else n, executed or {}
    out = []

    def rows(op: dict) -> int:
        return executed.get(op["gate"], n) if gathered(op, INT_OPS[op["type"]]) else n

    def call(op: dict, phase: str, kind: str, tensor: str | tuple, mode: int, src2: str = "none") -> None:
        shape = tensor if isinstance(tensor, tuple) else (rows(op), *plan.tensors[tensor])
        read, written = cycles.elementwise_bytes(kind, *shape, mode)
        out.append({"layer": op["name"], "phase": phase, "op": kind, "mode": mode, "shape": shape, "src2": src2,
                    "width": ELEMENT_MACS[kind.upper()], "macs": (1 + (src2 != "none")) * math.prod(shape),
                    "bytes": read + written, "cycles": cycles.elementwise_cycles(kind, *shape, mode, plan.board)})

    terms: dict = {}  # an affine map's tensor (a BatchNorm's, an add's) -> its terms' dtypes, the int32 first
    empty = {op["name"] for op in plan.ops if not rows(op)}  # a gated block no image took: nothing runs
    for op in plan.ops:
        if op["name"] in empty:
            continue
        if op["type"] == "batchnorm":
            call(op, "fwd", "stats", op["inputs"][0], r.stats_modes["SQUARE"])
            terms[op["output"]] = ["int32"]
        elif op["type"] == "add":
            joined = [d for t in op["inputs"] for d in terms.get(t, ["int8"])]  # a ReLU's output: int8
            terms[op["output"]] = sorted(joined, key=lambda d: d != "int32")
        elif op["type"] == "relu":
            src2 = (terms[op["inputs"][0]] + ["none"])[1]
            call(op, "fwd", "apply", op["output"], r.apply_mode(src2, relu=True, out_bits=8), src2)
        elif op["type"] == "mix" and op["inputs"][2] in terms:  # a projection's BatchNorm: its shortcut
            call(op, "fwd", "apply", op["output"], r.apply_mode(out_bits=8))
    grads = {plan.ops[-1]["output"]: [("ints",)]}  # tensor -> the gradient parts that reach it (intops.part_kind)
    outside = taken_inputs(plan, INT_OPS)
    for op in reversed(plan.ops):
        kinds = tuple(grads.pop(op["output"], ()))
        if not kinds or op["name"] in empty:
            continue
        if op["type"] in KEEP:
            for step in join_steps(kinds, KEEP[op["type"]]):
                if step[0] == "apart":  # a Masked and a Spread: an APPLY of each on its own rows
                    mode = r.apply_mode(mask=step[2], out_bits=32)
                    call(op, "bwd_data", "apply", op["output"], mode)
                    call(op, "bwd_data", "apply", (step[1], *plan.tensors[op["output"]]), mode)
                elif step[0] == "join":
                    src2 = "int32" if step[1] == 2 else "none"
                    call(op, "bwd_data", "apply", op["output"], r.apply_mode(src2, mask=step[2], out_bits=32), src2)
            if op["type"] == "batchnorm":
                call(op, "bwd_data", "stats", op["output"], r.stats_modes["PRODUCT"])
                if trainable.wants(op["inputs"][0]):
                    call(op, "bwd_data", "apply", op["output"], r.apply_mode("int32", out_bits=16), "int32")
        for i, name in enumerate(op["inputs"]):
            if name != plan.data["input"] and op.get("input_grad", True) and trainable.wants(name):
                on = executed.get(op["gate"], n) if op.get("gate") is not None else None
                grads.setdefault(name, []).append(INT_OPS.part_kind(op, i, name in outside.get(op["name"], ()), on))
    for op in filter(trainable.trains, plan.convs()):  # the update: each conv's weights refreshed
        views = weightrefresh.views(op, plan.board)
        if views:
            call(op, "update", "stats", views[0], r.stats_modes["SQUARE"])
            call(op, "update", "apply", views[0], r.apply_mode(out_bits=8))
            for _ in weightrefresh.ABS_SIGNS:
                call(op, "update", "apply", views[1], r.apply_mode("int8", relu=True, out_bits=8), "int8")
    return out


def elementwise_counts(calls: list[dict], per: dict | None = None) -> dict:
    """``calls``' counts by layer and phase (contract/opcount.py's slots), as EngineSession.per_layer
    holds them, added to ``per`` (the convs' counts, say) where given."""
    per = {} if per is None else per
    for k in calls:
        add_count(per.setdefault(k["layer"], {}), k["phase"], k["width"], k["macs"], k["bytes"], k["cycles"])
    return per
