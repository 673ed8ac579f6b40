"""A plan's forward pass in inference mode: convs on an engine, the rest on the host.

Each conv quantizes its float input per tensor (docs/numerics.md, section 3), runs CONV_FWD on
the engine and scales the int32 result back to float32; BatchNorm uses its running statistics
and the SLU gates decide deterministically (p > threshold). ``engine`` is anything with
``conv_fwd(x_q, w_q, stride, pad) -> (y int32, r, status)``: the engine's CPU builds
(hls/csim.py on a workstation) or ``NumpyEngine`` (contract/numerics.py); or an object with
``conv_layer(op, x_q) -> (y, r)`` that runs the layer on weights it holds (the trainer's
engine session on a board or the emulated overlay).

A gated block runs on the samples whose gate is on (``slu="gather"``, what the engine does:
fewer images per call), or on the whole batch with the result selected per sample
(``slu="mask"``, the reference trainer's semantics). They differ only in the per-tensor
exponents inside gated blocks, which the gathered sub-batch chooses from fewer images.
"""
from __future__ import annotations

import numpy as np

from contract import numerics as nx
from contract.errors import E2TError

from . import hostops

SLU_MODES = ("gather", "mask")


class NumpyEngine:
    """CONV_FWD by the numeric contract's numpy code, for a host with no engine build."""

    def conv_fwd(self, x_q, w_q, stride: int, pad: int):
        y, r = nx.conv_fwd(x_q, w_q, stride, pad)
        return y.astype(np.int32), r, {"status": 0}


def conv_forward(op: dict, arrays: dict, x: np.ndarray, engine, record: dict | None = None) -> np.ndarray:
    """One conv op on float32 NCHW ``x``: quantize, CONV_FWD, scale back."""
    x_q, e_x, _ = nx.quantize_tensor(x, nx.ACT, np.int8)
    name = op["name"]
    if hasattr(engine, "conv_layer"):  # an engine session: the layer's weights are in its DDR
        y, r = engine.conv_layer(op, x_q)
    else:
        y, r, _ = engine.conv_fwd(x_q, arrays[f"{name}.wgt"], op["stride"], op["pad"])
    if record is not None:
        record[name] = y
    e = e_x + op["wq_exp"] + arrays[f"{name}.wshift"].astype(np.int64) + r
    return nx.dequantize(y, e.reshape(1, -1, 1, 1))


def forward(plan, arrays: dict, x: np.ndarray, engine, slu: str = "gather", record: dict | None = None) -> dict:
    """Run ``x`` (N images, N <= the plan's batch) through the plan. Returns every tensor by
    name (``plan.data['output']`` holds the logits) plus ``gates``: the decisions (gates, N).
    ``record``, if given, receives each conv's int32 output by op name."""
    if slu not in SLU_MODES:
        raise E2TError(f"unknown SLU mode '{slu}' (known: {', '.join(SLU_MODES)})")
    x = np.asarray(x, np.float32)
    want = [len(x)] + plan.tensors[plan.data["input"]]
    if list(x.shape) != want or not 1 <= len(x) <= plan.batch:
        raise E2TError(f"forward: input of shape {list(x.shape)}, the plan takes [N] + {want[1:]} with "
                       f"1 <= N <= {plan.batch} (its batch)")
    t = {plan.data["input"]: x}
    sub = {}  # tensor -> gate whose sub-batch it holds (gather mode)
    picks, decisions, state = {}, [], None
    for op in plan.ops:
        kind, gate = op["type"], op.get("gate")
        gathered = slu == "gather" and gate is not None and kind != "mix"

        def arg(name):
            v = t[name]
            if gathered and sub.get(name) != gate:
                return v[picks[gate]]
            return v
        ins = [arg(n) for n in op["inputs"]]
        if gathered and len(ins[0]) == 0:
            out = np.zeros((0, *plan.tensors[op["output"]]), np.float32)
        elif kind == "conv":
            out = conv_forward(op, arrays, ins[0], engine, record)
        elif kind == "batchnorm":
            p = op["params"]
            out = hostops.batchnorm_eval(ins[0], arrays[p["weight"]], arrays[p["bias"]], arrays[p["running_mean"]],
                                         arrays[p["running_var"]], op["eps"])
        elif kind == "relu":
            out = hostops.relu(ins[0])
        elif kind == "add":
            out = ins[0] + ins[1]
        elif kind == "avgpool":
            out = hostops.avgpool(ins[0])
        elif kind == "linear":
            out = hostops.linear(ins[0], arrays[op["params"]["weight"]], arrays[op["params"]["bias"]])
        elif kind == "gate":
            p = op["params"]
            state = hostops.lstm_step(ins[0].reshape(len(ins[0]), -1), state, arrays[p["weight_ih"]],
                                      arrays[p["weight_hh"]], arrays[p["bias_ih"]], arrays[p["bias_hh"]])[:2]
            prob = hostops.sigmoid(hostops.linear(state[0], arrays[p["proj_weight"]], arrays[p["proj_bias"]]))
            out = (prob > np.float32(op["threshold"])).astype(np.float32)
            picks[op["index"]] = np.flatnonzero(out[:, 0])
            decisions.append(out[:, 0])
        elif kind == "mix":
            mask, block, short = ins
            if slu == "gather":
                out = short.copy()
                out[picks[gate]] = block
            else:
                out = np.where(mask.reshape(-1, 1, 1, 1) > 0, block, short)
        elif kind == "loss":
            out = np.zeros((len(ins[0]), 1), np.float32)  # needs labels: see ``evaluate``
        else:
            raise E2TError(f"forward: op type '{kind}' is not known to this e2t")
        if gathered:
            sub[op["output"]] = gate
        t[op["output"]] = out
    t["gates"] = np.array(decisions, np.float32).reshape(len(decisions), len(x))
    return t


def evaluate(plan, arrays: dict, images: np.ndarray, labels: np.ndarray, engine, batch: int | None = None,
             slu: str = "gather") -> dict:
    """Test metrics of the plan on (images, labels), in batches of ``batch`` (the plan's by
    default): ``test_loss``, ``test_acc``, ``test_executed_fraction`` (gated nets) and the
    predictions."""
    batch = batch or plan.batch
    preds, loss, executed = [], 0.0, 0.0
    for i in range(0, len(images), batch):
        t = forward(plan, arrays, images[i:i + batch], engine, slu)
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
