"""What trains in a run (``--train-from``, ``--train``), and what follows for the backward pass.

``--train-from`` draws a line in the network: ``blocks.N`` (the stem and blocks 0 .. N - 1 are
frozen) or ``fc`` (also ``head``: the classifier alone trains). ``--train bn`` trains, of the
layers from the line up, only the BatchNorms' scale and shift and the classifier, not the convs
(TinyTL's idea: the backward-data pass still runs down to the lowest BatchNorm). SLU's gates go
with the blocks they decide: the gate of a block from the line up trains (its 1x1 conv, and the
LSTM and output layer all gates share), a gate below it decides as before but its decision gets
no gradient, nor does the LSTM state it hands on.

A frozen op's parameters take no step (a conv: no CONV_WGRAD, no UPDATE; a BatchNorm or the
classifier: no SGD). A tensor gets a gradient only where it depends on a parameter that trains
(PyTorch's requires_grad), so the backward pass stops at the lowest trained layer: below it no
CONV_BWD_DATA and no host work. BatchNorms compute batch statistics and update their running
ones in training, frozen or not, as PyTorch's do in train() with requires_grad off.

Plain Python (no numpy): the CLI checks the names before a backend is imported.
"""
from __future__ import annotations

import re

from contract.errors import E2TError
from contract.models import MODELS

MODES = ("all", "bn")
HEAD, ALIASES = "fc", {"head": "fc"}
_BLOCK = re.compile(r"blocks\.(0|[1-9][0-9]*)")
_IN_BLOCK = re.compile(r"blocks\.([0-9]+)\.")
STATISTICS = ("running_mean", "running_var")  # a BatchNorm's params that no gradient moves


def model_blocks(model: str) -> int | None:
    """The residual blocks of a CIFAR ResNet by name (3 stages of (depth - 2) / 6); None for another name."""
    return 3 * ((int(model[len("resnet"):]) - 2) // 6) if model in MODELS else None


def _choices(blocks: int | None) -> str:
    if blocks is None:
        return "blocks.N, fc (or head)"
    names = [f"blocks.{i}" for i in range(blocks)]
    return ", ".join(names if blocks <= 10 else names[:2] + ["...", names[-1]]) + ", fc (or head)"


def check_name(name: str, blocks: int | None) -> str:
    """``--train-from NAME`` as a run stores it (``head`` is ``fc``); ``blocks``: the network's
    block count, where known."""
    canonical = ALIASES.get(name, name)
    m = _BLOCK.fullmatch(canonical)
    if canonical == HEAD or (m and (blocks is None or int(m.group(1)) < blocks)):
        return canonical
    raise E2TError(f"unknown --train-from '{name}' (known: {_choices(blocks)})")


def _has_params(op: dict, mode: str) -> bool:
    """Whether ``op`` has parameters that train in ``mode`` (bn: not the backbone's convs)."""
    if op["type"] == "conv":
        return mode == "all" or op["role"] == "gate"
    return bool(op.get("params"))


class Trainable:
    """What trains of a plan's ``ops`` (in plan order) from the line ``train_from`` (None: the
    whole network) in ``mode``: ``trains(op)``, the host ``params`` that take SGD steps,
    ``wants(tensor)`` (it gets a gradient), ``carries(gate)`` (the LSTM state it got from the
    gate before gets a gradient), ``frozen_gates`` (how many of the first gates do not train)."""

    def __init__(self, ops: list, train_from: str | None = None, mode: str = "all"):
        self.ops, line = ops, 0 if train_from is None else _line(ops, train_from)
        self.trained = {op["name"] for op in ops[line:] if _has_params(op, mode)}
        self.params = {name for op in ops if op["name"] in self.trained
                       for key, name in op.get("params", {}).items() if key not in STATISTICS}
        self.wanted: set = set()
        for op in ops:
            if op["name"] in self.trained or any(n in self.wanted for n in op["inputs"]):
                self.wanted.add(op["output"])
        self.gates = {op["index"]: op["name"] in self.trained for op in ops if op["type"] == "gate"}
        self.frozen_gates = sum(not t for t in self.gates.values())

    def trains(self, op: dict) -> bool:
        return op["name"] in self.trained

    def wants(self, tensor: str) -> bool:
        return tensor in self.wanted

    def carries(self, gate: dict) -> bool:
        return self.gates.get(gate["index"] - 1, False)


def _line(ops: list, name: str) -> int:
    """The index of the first op from the line ``name`` up: the classifier, or block N's first op
    (the 1x1 conv of the gate that decides it, where it has one)."""
    blocks = 1 + max((int(m.group(1)) for m in map(_IN_BLOCK.match, (op["name"] for op in ops)) if m), default=-1)
    name = check_name(name, blocks)
    if name == HEAD:
        return next(i for i, op in enumerate(ops) if op["type"] == "linear")
    block, where = int(name.split(".")[1]), {op["output"]: i for i, op in enumerate(ops)}
    first = next(i for i, op in enumerate(ops) if op["name"].startswith(name + "."))
    gates = [where[op["inputs"][0]] for op in ops if op["type"] == "gate" and op["block"] == block]
    return min([first] + gates)


class _Everything:
    """The whole network trains (the op table's default): every op, every tensor's gradient."""
    frozen_gates = 0

    def trains(self, op: dict) -> bool:
        return True

    def wants(self, tensor: str) -> bool:
        return True

    def carries(self, gate: dict) -> bool:
        return True


EVERYTHING = _Everything()
