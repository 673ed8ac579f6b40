"""A fine-tuning start: an ``--init`` plan fitted to the run's classes and savings, with numpy
alone, keeping what it learned.

``adapt`` builds a fresh plan of the init's network for the run's class count and gates
(``planbuild.from_model``: the initialisers of a fresh plan, seeded by the run's seed) and
carries over every array of the init whose name and shape match, with each conv's exponents.
A new classifier head (another class count) and SLU gates added to a gateless plan start fresh;
every conv and BatchNorm keeps its trained weights, statistics and momentum. Plans of
``e2t plan``, of an engine run and of ``e2t export`` name their arrays alike (the reference
model's module names), so all three adapt.
"""
from __future__ import annotations

import numpy as np

from contract.errors import E2TError
from contract.models import MODELS

from . import planbuild, schema as planmod

GEOMETRY = ("c_in", "c_out", "k", "stride", "pad", "h", "w", "ho", "wo", "role")
OPEN_GATES = 0.95  # added gates start running each block with this probability unless --slu-gate-init says


def _names(op: dict) -> set[str]:
    """The plan arrays of a host op's parameters (with momentum buffers) or of a conv."""
    if op["type"] == "conv":
        return {f"{op['name']}.{k}" for k in ("master", "mom", "wgt", "wshift")}
    params = [p for p in op.get("params", {}).values() if isinstance(p, str)]  # an unknown key's value is no name
    return set(params) | {p + planmod.MOMENTUM for p in params}


def adapt(init: planmod.Plan, arrays: dict[str, np.ndarray], num_classes: int, add_gates: bool,
          gate_init: float | None, seed: int, dataset: str, where: str) -> tuple[planmod.Plan, dict]:
    """(plan, arrays) of the init's network with ``num_classes`` outputs and, with ``add_gates``,
    SLU gates starting at ``gate_init``; every other array is the init's. One line naming
    ``where`` if the init is not a network ``from_model`` builds."""
    net = init.network
    if net["model"] not in MODELS or net["height"] != net["width"]:
        raise E2TError(f"{where}: a new head or added gates need a plan of one of e2t's ResNets ({', '.join(MODELS)}) "
                       f"on square images; this one is a {net['model']} on {net['height']} x {net['width']} images")
    plan, _, fresh = planbuild.from_model(net["model"], net["in_channels"], num_classes, net["height"],
                                          init.board.name, init.batch, seed, add_gates or net["gates"] > 0,
                                          gate_init, dataset)
    head = net["num_classes"] != num_classes
    new = set()
    for op in plan.ops:
        if (head and op["type"] == "linear") or (add_gates and (op["type"] == "gate" or op.get("role") == "gate")):
            new |= _names(op)
    old_head = set().union(*(_names(op) for op in init.ops if op["type"] == "linear")) if head else set()
    init_convs = {op["name"]: op for op in init.convs()}

    def not_this(why: str):
        raise E2TError(f"{where}: the plan is not a {net['model']} as e2t builds it ({why}); a new head or added "
                       f"gates need one")

    out = {}
    for name, a in fresh.items():
        if name in new:
            out[name] = a
            continue
        got = arrays.get(name)
        if got is None:
            not_this(f"it has no {name}")
        if got.shape != a.shape or got.dtype != a.dtype:
            not_this(f"its {name} is {got.dtype} {list(got.shape)}, the network's {a.dtype} {list(a.shape)}")
        out[name] = got
    left = sorted(set(arrays) - set(out) - old_head)
    if left:
        not_this(f"the network has no place for its {left[0]}")
    for op in plan.convs():
        if f"{op['name']}.master" in new:
            continue
        was = init_convs.get(op["name"], {})
        if any(was.get(k) != op[k] for k in GEOMETRY):
            not_this(f"its conv {op['name']} differs in shape or role")
        op["w_exp"], op["wq_exp"] = was["w_exp"], was["wq_exp"]
    return plan, out
