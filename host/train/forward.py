"""A plan's forward pass in inference mode, through the op table (host/train/ops.py) as
training walks it: convs on an engine, the rest on the host.

Each conv quantizes its float input per tensor (docs/numerics.md, section 3), runs CONV_FWD on
the engine and scales the int32 result back to float32; BatchNorm uses its running statistics
and the SLU gates decide deterministically (p > threshold). ``engine`` is the trainer's
EngineSession (the layers' weights in its DDR) or anything with
``conv_fwd(x_q, w_q, stride, pad) -> (y int32, r, status)`` run on the weights in ``arrays``
(``OnArrays``): the engine's CPU builds (hls/csim.py on a workstation) or ``NumpyEngine``
(contract/numerics.py).

A gated block runs on the samples whose gate is on (``slu="gather"``, what the engine does:
fewer images per call), or on the whole batch with the result selected per sample
(``slu="mask"``, the reference trainer's semantics). They differ only in the per-tensor
exponents inside gated blocks, which the gathered sub-batch chooses from fewer images.
"""
from __future__ import annotations

import numpy as np

from contract import numerics as nx
from contract.errors import E2TError
from host.engine.session import EngineSession

from . import hostops
from .walk import Walk

SLU_MODES = ("gather", "mask")


class NumpyEngine:
    """CONV_FWD by the numeric contract's numpy code, for a host with no engine build."""

    def conv_fwd(self, x_q, w_q, stride: int, pad: int):
        y, r = nx.conv_fwd(x_q, w_q, stride, pad)
        return y.astype(np.int32), r, {"status": 0}


class OnArrays:
    """An engine's CONV_FWD (``conv_fwd(x_q, w_q, stride, pad)``) on the weights in ``arrays``,
    with an EngineSession's interface to its layers (``conv_fwd(op, x_q)``, ``buffer(op, role)``)."""

    def __init__(self, engine, arrays: dict):
        self.engine, self.arrays = engine, arrays

    def conv_fwd(self, op: dict, x_q: np.ndarray) -> tuple[np.ndarray, int]:
        y, r, _ = self.engine.conv_fwd(x_q, self.buffer(op, "wgt"), op["stride"], op["pad"])
        return y, r

    def buffer(self, op: dict, role: str) -> np.ndarray:
        return self.arrays[f"{op['name']}.{role}"]


def forward(plan, arrays: dict, x: np.ndarray, engine, slu: str = "gather", record: dict | None = None,
            table=None) -> dict:
    """Run ``x`` (N images, N <= the plan's batch) through the plan. Returns every tensor by
    name (``plan.data['output']`` holds the logits) plus ``gates``: the decisions (gates, N).
    ``record``, if given, receives each conv's int32 output by op name. ``table``: the op table
    (walk.Walk's; contract v2's needs an EngineSession)."""
    if slu not in SLU_MODES:
        raise E2TError(f"unknown SLU mode '{slu}' (known: {', '.join(SLU_MODES)})")
    x = np.asarray(x, np.float32)
    want = [len(x)] + plan.tensors[plan.data["input"]]
    if list(x.shape) != want or not 1 <= len(x) <= plan.batch:
        raise E2TError(f"forward: input of shape {list(x.shape)}, the plan takes [N] + {want[1:]} with "
                       f"1 <= N <= {plan.batch} (its batch)")
    layers = engine if isinstance(engine, EngineSession) else OnArrays(engine, arrays)
    w = Walk(plan, layers, arrays, False, slu=slu, record=record, table=table)
    t = w.run(x)
    t["gates"] = np.array(w.decisions, np.float32).reshape(len(w.decisions), len(x))
    return t


def evaluate(plan, arrays: dict, images: np.ndarray, labels: np.ndarray, engine, batch: int | None = None,
             slu: str = "gather", table=None) -> dict:
    """Test metrics of the plan on (images, labels), in batches of ``batch`` (the plan's by
    default): ``test_loss``, ``test_acc``, ``test_executed_fraction`` (gated nets) and the
    predictions."""
    batch = batch or plan.batch
    preds, loss, executed = [], 0.0, 0.0
    for i in range(0, len(images), batch):
        t = forward(plan, arrays, images[i:i + batch], engine, slu, table=table)
        logits = t[plan.data["output"]]
        preds.append(logits.argmax(1))
        loss += float(hostops.softmax_cross_entropy(logits, labels[i:i + batch]).sum())
        executed += float(t["gates"].sum())
    preds = np.concatenate(preds)
    n, gates = len(images), plan.network["gates"]
    out = {"test_loss": loss / n, "test_acc": float((preds == labels).mean()), "predictions": preds}
    if gates:
        out["test_executed_fraction"] = executed / (n * gates)
    return out
