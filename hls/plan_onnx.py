"""A plan as an inference ONNX model that computes what the engine and the host compute.

Every conv quantizes its input per tensor as docs/numerics.md says (exponent from the
max-abs, round half up, int8 clip), convolves the integers in float32 (exact: every sum stays
below 2^24), applies the output shift and scales back in float64, as host/train/forward.py does with
the engine. BatchNorm runs as float64 ``x * alpha + beta`` rounded once to float32 (the host's
fused multiply-add; they differ only where float64 rounding lands on a float32 tie), pooling
as a float64 mean. A gated block runs on the whole batch, but its convs take their exponents
from the samples whose gate is on (the others are masked out of the max-abs), so the samples
that keep the block's output get the gathered sub-batch's numbers (host/train/forward.py,
``slu="gather"``); ``Where`` then picks block or shortcut per sample. Exponents depend on the
batch, so onnxruntime matches the host when both see the same batches.
"""
from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from contract import numerics as nx
from host.train import hostops

OPSET = 17
F, D = TensorProto.FLOAT, TensorProto.DOUBLE


class _Graph:
    def __init__(self):
        self.nodes, self.inits, self.n = [], [], 0

    def const(self, value, dtype=np.float32) -> str:
        name = f"c{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def op(self, kind: str, *inputs: str, name: str | None = None, **attrs) -> str:
        self.n += 1
        out = name or f"t{self.n}"
        self.nodes.append(helper.make_node(kind, list(inputs), [out], name=f"{kind}_{self.n}", **attrs))
        return out


def _exponent(g: _Graph, amax: str) -> str:
    """The smallest e with amax < 127.5 * 2^e (0 for amax = 0), as a float64 scalar."""
    limit = nx.ACT.hi + 0.5
    a = g.op("Cast", amax, to=D)
    two, lim, one = g.const(2.0, np.float64), g.const(limit, np.float64), g.const(1.0, np.float64)
    e = g.op("Add", g.op("Floor", g.op("Div", g.op("Log", g.op("Div", a, lim)), g.const(math.log(2), np.float64))), one)
    up = g.op("Cast", g.op("GreaterOrEqual", a, g.op("Mul", lim, g.op("Pow", two, e))), to=D)
    e = g.op("Add", e, up)
    down = g.op("Cast", g.op("Less", a, g.op("Mul", lim, g.op("Pow", two, g.op("Sub", e, one)))), to=D)
    e = g.op("Sub", e, down)
    return g.op("Where", g.op("Equal", a, g.const(0.0, np.float64)), g.const(0.0, np.float64), e)


def _conv(g: _Graph, op: dict, arrays: dict, x: str, mask: str | None) -> str:
    name = op["name"]
    wq = arrays[f"{name}.wgt"].astype(np.int64)
    r = nx.out_shift(nx.fwd_bound(wq))
    mag = g.op("Abs", x)
    if mask is not None:
        mag = g.op("Mul", mag, mask)
    e = _exponent(g, g.op("ReduceMax", mag, keepdims=0))
    two = g.const(2.0, np.float64)
    scaled = g.op("Mul", g.op("Cast", x, to=D), g.op("Pow", two, g.op("Neg", e)))
    q = g.op("Clip", g.op("Floor", g.op("Add", scaled, g.const(0.5, np.float64))),
             g.const(float(nx.ACT.lo), np.float64), g.const(float(nx.ACT.hi), np.float64))
    y = g.op("Conv", g.op("Cast", q, to=F), g.const(wq.astype(np.float32)), kernel_shape=[op["k"]] * 2,
             strides=[op["stride"]] * 2, pads=[op["pad"]] * 4, name=f"{name}.int")
    y = g.op("Cast", y, to=D)
    if r:
        y = g.op("Floor", g.op("Add", g.op("Mul", y, g.const(2.0 ** -r, np.float64)), g.const(0.5, np.float64)))
    chan = np.ldexp(1.0, op["wq_exp"] + arrays[f"{name}.wshift"].astype(np.int64) + r).reshape(1, -1, 1, 1)
    return g.op("Cast", g.op("Mul", g.op("Mul", y, g.op("Pow", two, e)), g.const(chan, np.float64)), to=F)


def build(plan, arrays: dict, pre: dict | None = None) -> bytes:
    """The inference ONNX model of ``plan`` with ``arrays`` (input ``images``, output ``logits``),
    stating in its metadata how images become its input: ``pre``, else the plan's
    ``network.preprocess`` (hls/export.py, ``set_preprocess``)."""
    from .export import set_preprocess
    g = _Graph()
    t = {plan.data["input"]: "images"}
    masks, state = {}, None
    for op in plan.ops:
        kind, ins = op["type"], [t[n] for n in op["inputs"]]
        gate = op.get("gate")
        if kind == "conv":
            out = _conv(g, op, arrays, ins[0], masks.get(gate) if gate is not None else None)
        elif kind == "batchnorm":
            p = op["params"]
            alpha, beta = hostops.bn_affine(arrays[p["weight"]], arrays[p["bias"]], arrays[p["running_mean"]],
                                            arrays[p["running_var"]], op["eps"])
            shape = (1, -1, 1, 1)
            out = g.op("Cast", g.op("Add", g.op("Mul", g.op("Cast", ins[0], to=D), g.const(alpha.reshape(shape), np.float64)),
                                    g.const(beta.reshape(shape), np.float64)), to=F)
        elif kind == "relu":
            out = g.op("Relu", ins[0])
        elif kind == "add":
            out = g.op("Add", ins[0], ins[1])
        elif kind == "avgpool":
            out = g.op("Cast", g.op("ReduceMean", g.op("Cast", ins[0], to=D), axes=[2, 3], keepdims=1), to=F)
        elif kind == "linear":
            p = op["params"]
            out = g.op("Gemm", g.op("Flatten", ins[0], axis=1), g.const(arrays[p["weight"]]), g.const(arrays[p["bias"]]),
                       transB=1)
        elif kind == "gate":
            p = op["params"]
            x = g.op("Flatten", ins[0], axis=1)
            z = g.op("Gemm", x, g.const(arrays[p["weight_ih"]]), g.const(arrays[p["bias_ih"]] + arrays[p["bias_hh"]]),
                     transB=1)
            if state is not None:
                z = g.op("Add", z, g.op("MatMul", state[0], g.const(arrays[p["weight_hh"]].T.copy())))
            hid = op["hidden"]
            parts = [f"{op['name']}.{k}" for k in "ifgo"]
            g.nodes.append(helper.make_node("Split", [z, g.const(np.array([hid] * 4, np.int64), np.int64)], parts,
                                            axis=1, name=f"{op['name']}.split"))
            i, f, gg, o = parts
            c = g.op("Mul", g.op("Sigmoid", i), g.op("Tanh", gg))
            if state is not None:
                c = g.op("Add", c, g.op("Mul", g.op("Sigmoid", f), state[1]))
            h = g.op("Mul", g.op("Sigmoid", o), g.op("Tanh", c))
            state = (h, c)
            prob = g.op("Sigmoid", g.op("Gemm", h, g.const(arrays[p["proj_weight"]]), g.const(arrays[p["proj_bias"]]),
                                         transB=1))
            out = g.op("Cast", g.op("Greater", prob, g.const(np.float32(op["threshold"]))), to=F)
            masks[op["index"]] = g.op("Reshape", out, g.const(np.array([-1, 1, 1, 1], np.int64), np.int64))
        elif kind == "mix":
            on = g.op("Greater", masks[gate], g.const(np.float32(0)))
            out = g.op("Where", on, ins[1], ins[2])
        elif kind == "loss":
            continue
        else:
            raise ValueError(f"op type '{kind}' has no ONNX form here")
        t[op["output"]] = out
    logits = g.op("Identity", t[plan.data["output"]], name="logits")
    c, h, w = plan.tensors[plan.data["input"]]
    graph = helper.make_graph(g.nodes, "e2t_plan", [helper.make_tensor_value_info("images", F, ["batch", c, h, w])],
                              [helper.make_tensor_value_info(logits, F, ["batch", plan.network["num_classes"]])],
                              g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="e2t")
    model.doc_string = (f"e2t plan {plan.network['model']} for {plan.board.name}: the engine's fixed-point "
                        f"forward (docs/numerics.md) in ONNX ops")
    set_preprocess(model, plan.network.get("preprocess") if pre is None else pre)
    onnx.checker.check_model(model)
    return model.SerializeToString()
