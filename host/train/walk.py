"""One walk of a plan through the op table (host/train/ops.py): the forward pass, in training
or in inference, and training's backward pass, in reverse op order.

SLU: an op of gate j runs on the images whose gate j is on (``slu="gather"``: the block's
inputs gathered once for all its ops, its tensors hold the sub-batch, the mix scatters it back;
the images it skips make no engine call, and a block no image takes runs nothing). Their gate
gets no task gradient (the block's output does not exist for them), only the cost loss's.
Inference can instead run a block on the whole batch and select per image (``slu="mask"``).
"""
from __future__ import annotations

import numpy as np

from contract import parallel
from contract.errors import E2TError

from . import hostops
from .ops import OPS

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


class Walk:
    """One pass over ``plan``: ``layers`` runs the convs (an EngineSession, or
    forward.OnArrays), ``p`` holds the host's parameters by name. Training draws the gates
    from ``rng`` and keeps what the backward needs; ``labels`` (set before ``run``) feed the
    loss. The backward collects the host gradients in ``grads`` and the convs that got a
    weight gradient in ``updated``."""

    def __init__(self, plan, layers, p: dict, training: bool, rng=None, slu: str = "gather",
                 record: dict | None = None, psg: dict | None = None, slu_cost: dict | None = None):
        self.plan, self.layers, self.p, self.training, self.rng = plan, layers, p, training, rng
        self.slu, self.record, self.psg, self.slu_cost = slu, record, psg, slu_cost
        self.labels = self.losses = self.state = self.carry = None
        self.t, self.sub, self.cache, self.picks, self.decisions = {}, {}, {}, {}, []
        self.empty, self.grads, self.updated = set(), {}, set()

    def acc(self, name: str, g: np.ndarray) -> None:
        """Add ``g`` to the gradient of host parameter ``name``."""
        self.grads[name] = self.grads.get(name, 0) + g

    def _gathered(self, op: dict, kind) -> bool:
        return self.slu == "gather" and op.get("gate") is not None and kind.gathered

    def run(self, x: np.ndarray) -> dict:
        """The forward pass of ``x``: every tensor by name."""
        t, sub, taken = {self.plan.data["input"]: x}, self.sub, {}
        for op in self.plan.ops:
            kind, gate = OPS.get(op["type"]), op.get("gate")
            if kind is None:
                raise E2TError(f"op type '{op['type']}' is not known to this e2t")
            gathered = self._gathered(op, kind)
            ins = []
            for n in op["inputs"]:
                if gathered and sub.get(n) != gate:  # a block's input, gathered once for all its ops
                    if (n, gate) not in taken:
                        taken[n, gate] = parallel.take(t[n], self.picks[gate])
                    ins.append(taken[n, gate])
                else:
                    ins.append(t[n])
            if gathered and len(ins[0]) == 0:
                out = np.zeros((0, *self.plan.tensors[op["output"]]), F32)
                self.empty.add(op["name"])
            else:
                out = kind.forward(self, op, ins)
            if gathered:
                sub[op["output"]] = gate
            t[op["output"]] = out
        self.t = t
        return t

    def backward(self) -> None:
        """From dL/dL = 1 at the loss (the plan's last op) back to the input, each tensor's
        gradient summed from its consumers (``gradient_sum``), a gathered op's scattered back."""
        grads = {self.plan.ops[-1]["output"]: [F32(1)]}
        for op in reversed(self.plan.ops):
            g = gradient_sum(grads.pop(op["output"], None))
            if g is None or op["name"] in self.empty:
                continue
            kind, gate = OPS[op["type"]], op.get("gate")
            gathered = self._gathered(op, kind)
            for name, gi in zip(op["inputs"], kind.backward(self, op, g)):
                if gi is None:
                    continue
                if gathered and self.sub.get(name) != gate:
                    gi = parallel.scatter(gi, self.picks[gate], len(self.t[name]))
                grads.setdefault(name, []).append(gi)
