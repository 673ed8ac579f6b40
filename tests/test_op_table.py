"""host/train/ops.py: one op table that training and inference both walk; a toy op type added
to it runs in a training step (forward and backward) and in inference, written once."""
from types import SimpleNamespace

import numpy as np
import pytest

from contract.errors import E2TError
from host.train import ops
from host.train.forward import NumpyEngine, forward
from host.train.trainstep import Step

F32 = np.float32


class Double(ops.Op):
    """The toy op: y = 2x, dx = 2 dy; it counts its calls."""

    def __init__(self):
        self.calls = []

    def forward(self, w, op, ins):
        self.calls.append(("forward", w.training))
        return ins[0] * F32(2)

    def backward(self, w, op, g):
        self.calls.append(("backward", w.training))
        return [g * F32(2)]


def _plan(doubled: bool):
    """x (4 features) -> [double] -> linear (3 classes) -> loss: a plan-like object."""
    ops_ = [{"type": "double", "name": "twice", "inputs": ["x"], "output": "x2"}] if doubled else []
    ops_ += [{"type": "linear", "name": "fc", "inputs": ["x2" if doubled else "x"], "output": "logits",
              "params": {"weight": "fc.weight", "bias": "fc.bias"}},
             {"type": "loss", "name": "loss", "inputs": ["logits"], "output": "losses"}]
    tensors = {"x": [4], "x2": [4], "logits": [3], "losses": [1]}
    return SimpleNamespace(ops=ops_, tensors=tensors, batch=8, data={"input": "x", "output": "logits"})


def _params():
    rng = np.random.default_rng(1)
    return {"fc.weight": rng.standard_normal((3, 4)).astype(F32), "fc.bias": rng.standard_normal(3).astype(F32)}


def test_a_toy_op_added_to_the_table_runs_in_training_and_in_inference(monkeypatch):
    toy = Double()
    monkeypatch.setitem(ops.OPS, "double", toy)
    x = np.random.default_rng(2).standard_normal((5, 4)).astype(F32)
    y = np.array([0, 1, 2, 1, 0])

    step = Step(_plan(True), None, _params(), None, None, np.random.default_rng(0))
    loss, logits = step.forward(x, y)
    step.backward()
    plain = Step(_plan(False), None, _params(), None, None, np.random.default_rng(0))  # the same net on 2x
    want_loss, want_logits = plain.forward(x * F32(2), y)
    plain.backward()
    assert loss == want_loss and np.array_equal(logits, want_logits)
    assert set(step.grads) == {"fc.weight", "fc.bias"}
    assert all(np.array_equal(step.grads[k], plain.grads[k]) for k in plain.grads)

    t = forward(_plan(True), _params(), x, NumpyEngine())
    assert np.array_equal(t["logits"], want_logits) and t["gates"].shape == (0, 5)
    assert toy.calls == [("forward", True), ("backward", True), ("forward", False)]


def test_an_op_type_not_in_the_table_is_refused_by_both():
    x = np.zeros((2, 4), F32)
    with pytest.raises(E2TError, match="op type 'double' is not known"):
        Step(_plan(True), None, _params(), None, None, np.random.default_rng(0)).forward(x, np.zeros(2, int))
    with pytest.raises(E2TError, match="op type 'double' is not known"):
        forward(_plan(True), _params(), x, NumpyEngine())
