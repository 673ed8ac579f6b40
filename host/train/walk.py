"""One walk of a plan through the op table (host/train/ops.py): the forward pass, in training
or in inference, and training's backward pass, in reverse op order.

SLU: an op of gate j runs on the images whose gate j is on (``slu="gather"``: the block's
inputs gathered once for all its ops, its tensors hold the sub-batch, the mix scatters it back;
the images it skips make no engine call, and a block no image takes runs nothing). Their gate
gets no task gradient (the block's output does not exist for them), only the cost loss's.
Inference can instead run a block on the whole batch and select per image (``slu="mask"``).

What trains (``trainable``, host/train/trainable.py): the backward pass gives a gradient only to
the tensors that depend on a parameter that trains (none below the lowest trained layer), and
each op computes the gradients of its parameters only where they train.

Counting (``host``, training): each op's host work (its ``work``, host/train/ops.py) on the images
it ran on, the gathers of a block's inputs and the scatters of their gradients to the op that
takes them, and each tensor's ``gradient_sum`` to the op that made it.
"""
from __future__ import annotations

import numpy as np

from contract import parallel
from contract.errors import E2TError
from contract.opcount import add_host, merge_host

from . import hostops
from .hostops import CAST_32, CAST_64, COPY_32, F32_BIN, passes
from .ops import OPS, per_image
from .trainable import EVERYTHING

F32, F64 = np.float32, np.float64


def gradient_sum(parts: list | None) -> np.ndarray | None:
    """A tensor's gradient from its consumers: two float32 terms added (a float64 sum would
    round to the same), three or more summed in float64 and rounded once, so that the order in
    which they arrive (which differs between this and PyTorch's autograd) does not matter."""
    if not parts:
        return None
    if len(parts) <= 2:
        return parts[0] if len(parts) == 1 else parts[0] + parts[1]
    flat = [np.ascontiguousarray(g, F32).reshape(-1) for g in parts]
    out = np.empty(parts[0].shape, F32)
    o = out.reshape(-1)

    def part(lo, hi):  # element by element the same sum, in a cached buffer
        buf = np.empty(min(hi - lo, hostops.CHUNK), F64)
        for s in range(lo, hi, hostops.CHUNK):
            b = buf[:min(hi - s, hostops.CHUNK)]
            np.copyto(b, flat[0][s:s + len(b)])
            for g in flat[1:]:
                np.add(b, g[s:s + len(b)], out=b)
            np.copyto(o[s:s + len(b)], b, casting="same_kind")

    parallel.halves(part, o.size, o.size)
    return out


def gradient_sum_work(parts: int, size: int) -> dict:
    """gradient_sum of ``parts`` gradients of ``size`` elements: nothing for one, a float32 add
    for two, else a chunk at a time the float64 copy, the adds and the rounding."""
    if parts < 3:
        return passes(size, F32_BIN) if parts == 2 else {}
    return passes(size, CAST_64, *[(12, 8, 1, "f64")] * (parts - 1), CAST_32,
                  calls=-(-size // hostops.CHUNK) * (parts + 1))


def gather_work(k: int, size: int) -> dict:
    """A block's input of ``size`` elements per image taken for its ``k`` images (parallel.take)."""
    return passes(k * size, COPY_32)


def scatter_work(k: int, n: int, size: int) -> dict:
    """The gradient of ``k`` images scattered into ``n`` zeroed ones (parallel.scatter)."""
    return merge_host(passes(n * size, (0, 4, 0, "f32")), passes(k * size, COPY_32))


class OpTable:
    """An op table (``ops``: plan op type -> Op, read as it stands: a type registered later is in it)
    with the rules around its ops: how the gradients that reach one tensor join (``gradient_sum``),
    how a gated block's inputs are taken for its images and their gradients scattered back
    (``take``, ``scatter``), and the host work of each."""

    def __init__(self, ops: dict):
        self.ops = ops

    @staticmethod
    def kind_of(part) -> tuple:
        """``part_kind``'s answer for a part as it arrives."""
        return ("ints",)

    def __getitem__(self, kind: str):
        return self.ops[kind]

    def get(self, kind: str):
        return self.ops.get(kind)

    def gradient_sum(self, parts: list | None):
        return gradient_sum(parts)

    def gradient_sum_work(self, parts: int, size: int) -> dict:
        return gradient_sum_work(parts, size)

    def take(self, w, name: str, value, picks: np.ndarray):
        """Tensor ``name``'s ``value`` for the images ``picks`` (a gated block's input)."""
        return parallel.take(value, picks)

    def take_work(self, plan, name: str, k: int) -> dict:
        return gather_work(k, per_image(plan, name))

    def scatter(self, w, name: str, value, picks: np.ndarray, n: int):
        """The gradient ``value`` of the images ``picks`` into a batch of ``n`` (zero elsewhere)."""
        return parallel.scatter(value, picks, n)

    def scatter_work(self, plan, name: str, k: int, n: int) -> dict:
        return scatter_work(k, n, per_image(plan, name))

    def part_kind(self, op: dict, index: int, spread: bool, on: int | None) -> tuple:
        """What input ``index`` of ``op`` gets as a gradient part, for ``parts_work`` (``spread``:
        scattered from its gated block, ``on``: the gate's images); here every part is written."""
        return ("ints",)

    def parts_work(self, plan, op: dict, kinds: tuple, n: int) -> dict:
        """The host's work on parts not yet written (``part_kind``) as ``op``'s backward joins them."""
        return {}


TABLE = OpTable(OPS)  # the host path's: float32 tensors between the engine's convs


def gathered(op: dict, kind) -> bool:
    """Whether ``op`` runs on its gate's images (with ``slu="gather"``)."""
    return op.get("gate") is not None and kind.gathered


def taken_inputs(plan, table) -> dict:
    """Op name -> the inputs a gathered op takes from outside its gated block, in input order:
    gathered for its gate's images, their gradients scattered back (``table``: the op table)."""
    made, out = {}, {}  # tensor -> the gate whose gathered op made it
    for op in plan.ops:
        if gathered(op, table[op["type"]]):
            out[op["name"]] = [name for name in op["inputs"] if made.get(name) != op["gate"]]
            made[op["output"]] = op["gate"]
    return out


class HostTally:
    """The host's work of training steps: ``per_layer``, every plan op in order -> phase -> host
    slot (contract/opcount.py). Each distinct count is computed once (steps repeat their sizes),
    so counting costs a dict update per op call."""

    def __init__(self, plan):
        self.plan, self._known = plan, {}
        self.reset()

    def reset(self) -> None:
        """Start counting anew (a new ``per_layer``; the counts already computed are kept)."""
        self.per_layer = {op["name"]: {} for op in self.plan.ops}

    def add(self, name: str, phase: str, key: tuple, work) -> None:
        """Add ``work()`` (a host slot), computed once per ``key``, to op ``name``'s ``phase``."""
        slot = self._known.get(key)
        if slot is None:
            slot = self._known[key] = work()
        if slot:
            add_host(self.per_layer[name], phase, slot)


class Walk:
    """One pass over ``plan``: ``layers`` runs the convs (an EngineSession, or
    forward.OnArrays), ``p`` holds the host's parameters by name. Training draws the gates
    from ``rng`` and keeps what the backward needs; ``labels`` (set before ``run``) feed the
    loss. The backward collects the host gradients in ``grads`` and the convs that got a
    weight gradient in ``updated``, of what ``trainable`` trains (a trainable.Trainable; default
    everything). ``host`` (a HostTally) counts the host's work when given. ``table``: the OpTable
    (``TABLE``, the host path's, by default; host/train/intops.py's INT_OPS for contract v2)."""

    def __init__(self, plan, layers, p: dict, training: bool, rng=None, slu: str = "gather",
                 record: dict | None = None, psg: dict | None = None, slu_cost: dict | None = None,
                 host: HostTally | None = None, trainable=EVERYTHING, table=None):
        self.plan, self.layers, self.p, self.training, self.rng = plan, layers, p, training, rng
        self.slu, self.record, self.psg, self.slu_cost, self.host = slu, record, psg, slu_cost, host
        self.trainable, self.table = trainable, TABLE if table is None else table
        self.labels = self.losses = self.state = self.carry = None
        self.t, self.sub, self.cache, self.picks, self.decisions = {}, {}, {}, {}, []
        self.empty, self.grads, self.updated = set(), {}, set()

    def acc(self, name: str, g: np.ndarray) -> None:
        """Add ``g`` to the gradient of host parameter ``name``."""
        self.grads[name] = self.grads.get(name, 0) + g

    def _gathered(self, op: dict, kind) -> bool:
        return self.slu == "gather" and gathered(op, kind)

    def _count(self, op: dict, phase: str, key: tuple, work) -> None:
        """When counting: ``work()`` into ``op``'s ``phase``; ``key``: the sizes it depends on."""
        if self.host is not None:
            self.host.add(op["name"], phase, (op["name"], phase, *key), work)

    def _count_op(self, kind, op: dict, n: int, phase: str) -> None:
        """The op's own work on ``n`` images (a mix's: and its gate's picks)."""
        on, psg = len(self.picks[op["gate"]]) if op.get("gate") in self.picks else None, self.psg is not None
        self._count(op, phase, (n, on, psg),
                    lambda: kind.work(self.plan, op, n, phase, psg=psg, on=on, trainable=self.trainable))

    def run(self, x: np.ndarray) -> dict:
        """The forward pass of ``x``: every tensor by name."""
        t, sub, taken = {self.plan.data["input"]: x}, self.sub, {}
        self.t = t  # the tensors so far, for an op that looks at an earlier one
        for op in self.plan.ops:
            kind, gate = self.table.get(op["type"]), op.get("gate")
            if kind is None:
                raise E2TError(f"op type '{op['type']}' is not known to this e2t")
            gathered = self._gathered(op, kind)
            ins = []
            for n in op["inputs"]:
                if gathered and sub.get(n) != gate:  # a block's input, gathered once for all its ops
                    if (n, gate) not in taken:
                        taken[n, gate] = self.table.take(self, n, t[n], self.picks[gate])
                        k = len(self.picks[gate])
                        self._count(op, "fwd", ("take", n, k), lambda: self.table.take_work(self.plan, n, k))
                    ins.append(taken[n, gate])
                else:
                    ins.append(t[n])
            if gathered and len(ins[0]) == 0:
                out = np.zeros((0, *self.plan.tensors[op["output"]]), F32)
                self.empty.add(op["name"])
            else:
                out = kind.forward(self, op, ins)
                self._count_op(kind, op, len(out), "fwd")
            if gathered:
                sub[op["output"]] = gate
            t[op["output"]] = out
        return t

    def backward(self) -> None:
        """From dL/dL = 1 at the loss (the plan's last op) back to the input, each tensor's
        gradient summed from its consumers (``gradient_sum``), a gathered op's scattered back;
        a tensor that gets no gradient (``trainable``) takes none."""
        grads = {self.plan.ops[-1]["output"]: [F32(1)]}
        for op in reversed(self.plan.ops):
            parts = grads.pop(op["output"], None)
            g = self.table.gradient_sum(parts)
            if g is None or op["name"] in self.empty:
                continue
            kind, gate = self.table[op["type"]], op.get("gate")
            gathered = self._gathered(op, kind)
            m, size = len(parts), np.size(g) if isinstance(g, (np.ndarray, np.generic)) else len(g)
            self._count(op, "bwd_data", ("sum", m, size),
                        lambda: self.table.gradient_sum_work(m, size))
            kinds = tuple(map(self.table.kind_of, parts))
            if any(k != ("ints",) for k in kinds):  # parts not yet written: their work where they join
                rows = len(self.t[op["output"]])
                self._count(op, "bwd_data", ("parts", kinds, rows), lambda: self.table.parts_work(self.plan, op, kinds, rows))
            back = kind.backward(self, op, g)
            self._count_op(kind, op, len(self.t[op["output"]]), "bwd_data")
            for name, gi in zip(op["inputs"], back):
                if gi is None or not self.trainable.wants(name):
                    continue
                if gathered and self.sub.get(name) != gate:
                    gi = self.table.scatter(self, name, gi, self.picks[gate], len(self.t[name]))
                    k, n = len(self.picks[gate]), len(self.t[name])
                    self._count(op, "bwd_data", ("scatter", name, k, n), lambda: self.table.scatter_work(self.plan, name, k, n))
                grads.setdefault(name, []).append(gi)
