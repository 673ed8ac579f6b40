"""ONNX graph -> network plan, in named steps (FINN's habit): each step's result is kept for
inspection and its time recorded.

    graph    read and check the ONNX file (opsets ``OPSETS``, finite float32 initializers, a float32
             input); nodes, initializers, per-image tensor shapes, the preprocessing it states
    tidy     drop what only reshapes or computes shapes, fold constants, recognise the
             straight-through gate decision and the SLU mix ``m * block + (1 - m) * shortcut``
    map      ONNX nodes -> plan ops (conv, batchnorm, relu, add, avgpool, linear, gate, mix); an
             attribute it does not read (``ATTRS``) is refused, and every output shape must be ONNX's
    formats  conv weights -> the engine's integers: exact master mantissas where the graph
             carries them (``Cast(int32) * 2^e``), else the fixed-point quantization of the floats
    layout   DDR layout and weights.bin (host/plan/layout.py)
    board    the board's limits, node by node, then the whole plan's checks (host/plan/schema.py)

Only this module reads ONNX; the plan it writes is read on the board with numpy alone.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from contract import boards, jsonfile
from contract.errors import E2TError
from host.plan import planbuild, schema as planmod

PASS_THROUGH = ("Identity", "Flatten", "Squeeze", "Unsqueeze", "Reshape", "Cast", "Dropout")
SHAPE_OPS = ("Shape", "Gather", "Concat", "Unsqueeze", "Squeeze", "Slice", "Cast", "Reshape")
MAPPED = ("Conv", "BatchNormalization", "Relu", "Add", "GlobalAveragePool", "ReduceMean", "Gemm", "LSTM",
          "Sigmoid", "Greater", "Mix")
# The attributes the map step reads, with the one value it supports (None: the values step_map handles)
ATTRS = {"Conv": {"auto_pad": None, "dilations": [1, 1], "group": 1, "kernel_shape": None, "pads": None,
                  "strides": None},
         "BatchNormalization": {"epsilon": None, "momentum": None, "training_mode": None},
         "ReduceMean": {"axes": None, "keepdims": None, "noop_with_empty_axes": 0},
         "Gemm": {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": None},
         "LSTM": {"hidden_size": None, "direction": "forward", "layout": 0, "input_forget": 0,
                  "activations": ["Sigmoid", "Tanh", "Tanh"]}}
OPSETS = range(13, 22)  # the default domain's versions whose semantics of these ops this importer was checked with
META_PREPROCESS = "e2t.preprocess"  # model.onnx's metadata_props key: host/data/datasets.py's preprocess, as JSON
ZERO = "<zero>"
PREFIX = "net."  # the exported module's parameters are net.<module>.<param> (reference/export.py)
MANTISSA = ".mantissa"  # int32 initializer of exact master weights: <param>.mantissa


@dataclass
class Node:
    op: str
    name: str
    inputs: list
    outputs: list
    attrs: dict = field(default_factory=dict)


@dataclass
class StepRecord:
    """One named, timed step of an export (steps.json): its summary and what it returned."""

    name: str
    seconds: float
    summary: dict
    result: object = None


class Export:
    """The steps run so far (``steps``) and what they share (``ctx``)."""

    def __init__(self, where: str = "model.onnx"):
        self.where, self.steps, self.ctx = where, [], {}

    def run(self, name: str, fn, *args) -> object:
        start = time.perf_counter()
        result, summary = fn(self, *args)
        self.steps.append(StepRecord(name, time.perf_counter() - start, summary, result))
        return result

    def fail(self, node: Node | None, msg: str):
        raise E2TError(f"{self.where}: " + (f"node '{node.name}' ({node.op}): " if node else "") + msg)

    def table(self) -> list[dict]:
        return [{"step": s.name, "seconds": round(s.seconds, 4), **s.summary} for s in self.steps]


# -- graph --------------------------------------------------------------------------------

def _attrs(n) -> dict:
    """A node's attributes by name; strings (bytes in protobuf) as str."""
    def text(v):
        if isinstance(v, list):
            return [text(x) for x in v]
        return v.decode(errors="replace") if isinstance(v, bytes) else v
    return {a.name: text(onnx.helper.get_attribute_value(a)) for a in n.attribute}


def _check_array(ex: Export, node, what: str, a: np.ndarray) -> None:
    """A constant's numbers: float32 where float (the plan's and the input's type), all finite."""
    if a.dtype.kind == "f" and a.dtype != np.float32:
        ex.fail(node, f"{what} is {a.dtype}: the plan computes in float32, like its input (convert the model to fp32)")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        ex.fail(node, f"{what} holds {'NaN' if np.isnan(a).any() else 'an infinite value'}")


def step_graph(ex: Export, data: bytes):
    try:
        model = onnx.load_from_string(data)
    except Exception as e:  # protobuf raises DecodeError and others for a file that is not ONNX
        ex.fail(None, f"not an ONNX model ({type(e).__name__})")
    if not model.graph.node:
        ex.fail(None, "not an ONNX model (no graph nodes)")
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset not in OPSETS:
        ex.fail(None, f"opset {opset}: this importer was checked with opsets {OPSETS[0]}..{OPSETS[-1]} of the "
                      f"default domain: export with one of them")
    other = next((n for n in model.graph.node if n.domain not in ("", "ai.onnx")), None)
    if other is not None:
        ex.fail(None, f"node '{other.name}' ({other.op_type}) is in domain '{other.domain}': only the default "
                      f"ONNX domain is understood")
    try:
        onnx.checker.check_model(model)
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except Exception as e:
        ex.fail(None, f"the ONNX checker refuses it: {str(e).splitlines()[0]}")
    g = model.graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for name, a in inits.items():
        _check_array(ex, None, f"initializer '{name}'", a)
    shapes = {}
    for v in list(g.value_info) + list(g.input) + list(g.output):
        dims = v.type.tensor_type.shape.dim
        shapes[v.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    inputs = [i for i in g.input if i.name not in inits]
    if len(inputs) != 1 or len(g.output) != 1:
        ex.fail(None, f"the graph has {len(inputs)} inputs and {len(g.output)} outputs: a plan takes one image "
                      f"batch in and gives one tensor of logits out")
    nodes = [Node(n.op_type, n.name or f"{n.op_type}_{i}", list(n.input), list(n.output), _attrs(n))
             for i, n in enumerate(g.node)]
    ex.ctx.update(inits=inits, shapes=shapes, input=inputs[0].name, output=g.output[0].name, opset=opset,
                  preprocess=_preprocess_of(ex, model))
    elem = inputs[0].type.tensor_type.elem_type
    if elem != onnx.TensorProto.FLOAT:
        ex.fail(None, f"input '{inputs[0].name}' is {onnx.TensorProto.DataType.Name(elem)}, not FLOAT: the plan takes "
                      f"float32 images")
    x = shapes.get(inputs[0].name, [])
    if len(x) != 4 or None in x[1:]:
        ex.fail(None, f"input '{inputs[0].name}' has shape {x}: a plan takes NCHW images of a fixed size")
    return nodes, {"nodes": len(nodes), "initializers": len(inits), "opset": ex.ctx["opset"], "input": x[1:]}


def _preprocess_of(ex: Export, model) -> dict | None:
    """The preprocessing the model's metadata states (``META_PREPROCESS``), if any; the plan's
    checks (host/plan/schema.py) check its fields."""
    text = next((p.value for p in model.metadata_props if p.key == META_PREPROCESS), None)
    if text is None:
        return None
    try:
        return jsonfile.parse(text)
    except ValueError as e:
        ex.fail(None, f"metadata_props '{META_PREPROCESS}' is not JSON ({e})")


def set_preprocess(model, pre: dict | None) -> None:
    """State in ``model``'s metadata_props how an image becomes its input (host/data/datasets.py's
    ``preprocess``), so nobody has to guess the normalization."""
    if pre is None:
        return
    for p in [p for p in model.metadata_props if p.key == META_PREPROCESS]:
        model.metadata_props.remove(p)
    entry = model.metadata_props.add()
    entry.key, entry.value = META_PREPROCESS, json.dumps(pre)


# -- tidy ---------------------------------------------------------------------------------

def step_tidy(ex: Export, nodes: list[Node]):
    inits, consts = ex.ctx["inits"], {}
    alias, exact, shape_like = {}, {}, set()
    out = []

    def src(t):
        while t in alias:
            t = alias[t]
        return t

    def value(t):
        t = src(t)
        return consts.get(t, inits.get(t))

    for n in nodes:
        ins = [src(i) if i else "" for i in n.inputs]
        if n.op == "Constant":
            consts[n.outputs[0]] = numpy_helper.to_array(n.attrs["value"]) if "value" in n.attrs else \
                np.array(n.attrs["value_float"], np.float32) if "value_float" in n.attrs else \
                np.array(n.attrs.get("value_int"))
            _check_array(ex, n, "its value", consts[n.outputs[0]])
            continue
        if n.op == "Shape" or (n.op in SHAPE_OPS and any(i in shape_like for i in ins if i)):
            shape_like.update(n.outputs)
            continue
        if n.op == "ConstantOfShape":
            fill = numpy_helper.to_array(n.attrs["value"]) if "value" in n.attrs else np.zeros(1)
            if np.any(fill != 0):
                ex.fail(n, "only zero-filled ConstantOfShape (an initial LSTM state) is understood")
            alias[n.outputs[0]] = ZERO
            continue
        if n.op == "Cast" and ins[0] in inits and inits[ins[0]].dtype.kind == "i":
            exact[n.outputs[0]] = ins[0]  # an integer mantissa, scaled by the Mul that follows
            continue
        if n.op == "Mul" and ins[0] in exact and value(ins[1]) is not None:
            scale = float(np.asarray(value(ins[1])).reshape(-1)[0])
            m, e = np.frexp(scale)
            if m != 0.5 or np.asarray(value(ins[1])).size != 1:
                ex.fail(n, f"an integer weight scaled by {scale}, which is not one power of two")
            exact[n.outputs[0]] = (exact.pop(ins[0]), int(e) - 1)
            continue
        if n.op in PASS_THROUGH or (n.op == "Gather" and np.asarray(value(ins[1])).size == 1
                                    and int(np.asarray(value(ins[1])).reshape(-1)[0]) == 0):
            if n.op == "Cast" and ins[0] in consts:
                consts[n.outputs[0]] = consts[ins[0]]
                continue
            if n.op == "Cast" and n.attrs.get("to") not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE):
                ex.fail(n, f"a cast to {onnx.TensorProto.DataType.Name(n.attrs.get('to', 0))}: the plan computes in "
                           f"float32 (float64 where the host sums)")
            alias[n.outputs[0]] = ins[0]
            continue
        if n.op == "Sub" and ins[0] == ins[1]:
            alias[n.outputs[0]] = ZERO  # p - p.detach(): the straight-through estimator's zero
            continue
        if n.op == "Add" and ZERO in ins:
            alias[n.outputs[0]] = ins[1] if ins[0] == ZERO else ins[0]
            continue
        out.append(Node(n.op, n.name, ins, list(n.outputs), n.attrs))
    # the SLU mix: Mul(m, a), Sub(1, m), Mul(1 - m, b), Add -> Mix(m, a, b)
    by_out = {o: n for n in out for o in n.outputs}
    mixed, drop = [], set()
    for n in out:
        if n.op == "Add":
            a, b = (by_out.get(i) for i in n.inputs)
            if a and b and a.op == b.op == "Mul":
                sub = by_out.get(b.inputs[0])
                if sub and sub.op == "Sub" and np.all(value(sub.inputs[0]) == 1) and sub.inputs[1] == a.inputs[0]:
                    drop.update({a.name, b.name, sub.name})
                    mixed.append(Node("Mix", n.name, [a.inputs[0], a.inputs[1], b.inputs[1]], n.outputs))
                    continue
        mixed.append(n)
    mixed = [n for n in mixed if n.name not in drop]
    for n in mixed:
        n.inputs = [src(i) if i else "" for i in n.inputs]
        if n.op not in MAPPED:
            ex.fail(n, "the engine and the host have no such op (they run Conv, BatchNormalization, Relu, Add, "
                       "GlobalAveragePool, Gemm and the SLU gate's LSTM, Sigmoid, Greater)")
        known = ATTRS.get(n.op, {})
        for key, v in n.attrs.items():
            if key not in known:
                ex.fail(n, f"attribute {key}={v!r} is not supported (the {n.op}s mapped here take "
                           f"{', '.join(known) or 'no attributes'})")
            if known[key] is not None and v != known[key]:
                ex.fail(n, f"attribute {key}={v!r} is not supported (only {known[key]!r})")
    ex.ctx.update(consts=consts, exact=exact, alias=alias, value=value, src=src)
    ex.ctx["output"] = src(ex.ctx["output"])
    kinds = {}
    for n in mixed:
        kinds[n.op] = kinds.get(n.op, 0) + 1
    return mixed, {"nodes": len(mixed), "ops": kinds, "exact_weights": len(exact)}


# -- map ----------------------------------------------------------------------------------

def _module(param: str) -> str:
    name = param[len(PREFIX):] if param.startswith(PREFIX) else param
    return name.rsplit(".", 1)[0] if "." in name else name


def _lstm_torch_order(w: np.ndarray, hidden: int) -> np.ndarray:
    """ONNX's gate order (i, o, f, c) -> PyTorch's (i, f, g, o), on the first axis."""
    i, o, f, c = np.split(w, 4, axis=0)
    assert i.shape[0] == hidden
    return np.concatenate([i, f, c, o])


def step_map(ex: Export, nodes: list[Node]):
    ctx, inits, exact = ex.ctx, ex.ctx["inits"], ex.ctx["exact"]
    x_shape = ctx["shapes"][ctx["input"]][1:]
    b = planbuild._Ops(x_shape)
    names = {ctx["input"]: planbuild.INPUT}  # onnx tensor -> plan tensor
    producer, nodes_of = {}, {}  # plan tensor -> op index; plan op name -> onnx node
    floats, exact_w = {}, {}
    gate_state, gate_p, gates = {}, {}, []

    def plan_in(n: Node, i: int = 0) -> str:
        t = n.inputs[i]
        if t not in names:
            ex.fail(n, f"input '{t}' is not an image tensor the plan computes (a weight or constant where an "
                       f"activation was expected?)")
        return names[t]

    def param(n: Node, i: int) -> np.ndarray:
        t = n.inputs[i]
        if t in exact:  # integer master mantissas, scaled by a power of two
            return inits[exact[t][0]]
        v = inits[t] if t in inits else ctx["value"](t)
        if v is None:
            ex.fail(n, f"input {i} ('{t}') must be a constant (an initializer)")
        if np.asarray(v).dtype != np.float32:
            ex.fail(n, f"input {i} ('{t}') is {np.asarray(v).dtype}, not float32 like the images")
        return np.asarray(v)

    def emit(n: Node, name: str):
        want = ctx["shapes"].get(n.outputs[0], [])[1:]
        if None not in want and len(want) == len(b.tensors[name]) and want != b.tensors[name]:
            ex.fail(n, f"ONNX infers an output of {want} per image, the plan's op makes {b.tensors[name]}")
        names[n.outputs[0]] = name
        producer[name] = len(b.ops) - 1
        nodes_of[name] = n

    for n in nodes:
        a = n.attrs
        if n.op == "Conv":
            w = param(n, 1)
            if len(n.inputs) > 2 and n.inputs[2] and np.any(param(n, 2) != 0):
                ex.fail(n, "a conv with a bias: the engine's convs have none (a BatchNormalization follows each)")
            k = list(a.get("kernel_shape", w.shape[2:]))
            pads, strides = list(a.get("pads", [0] * 4)), list(a.get("strides", [1, 1]))
            auto = a.get("auto_pad", "NOTSET")
            if auto != "NOTSET":
                if "pads" in a:
                    ex.fail(n, f"auto_pad {auto} and pads {pads} together: ONNX allows one of them")
                pads = _auto_pads(ex, n, auto, b.tensors[plan_in(n)][1:], k, strides)
            if len(k) != 2 or k[0] != k[1] or strides[0] != strides[1] or len(set(pads)) != 1:
                ex.fail(n, f"kernel {k}, strides {strides}, pads {pads}"
                           + (f" (from auto_pad {auto})" if auto != "NOTSET" else "")
                           + ": the engine runs square kernels with equal strides and pads")
            wname = n.inputs[1] if n.inputs[1] in inits else exact.get(n.inputs[1], (n.name,))[0]
            name = _module(wname.replace(MANTISSA, "")) if wname != n.name else n.name
            x = plan_in(n)
            if list(w.shape[1:]) != [b.tensors[x][0], *k]:
                ex.fail(n, f"weight '{n.inputs[1]}' of shape {list(w.shape)} does not fit a {k[0]} x {k[1]} kernel on "
                           f"{b.tensors[x][0]} input channels")
            role, block = _conv_role(name, x, k[0], strides[0])
            name = b.conv(name, x, int(w.shape[0]), int(k[0]), int(strides[0]), int(pads[0]), role, block,
                          input_grad=x != planbuild.INPUT)
            if n.inputs[1] in exact:
                exact_w[name] = (inits[exact[n.inputs[1]][0]], exact[n.inputs[1]][1])
            else:
                floats[name] = np.asarray(w, np.float32)
            emit(n, name)
        elif n.op == "BatchNormalization":
            if a.get("training_mode", 0):
                ex.fail(n, "exported in training mode: export the model in eval mode")
            eps, mom = a.get("epsilon", 1e-5), a.get("momentum", 0.9)
            if not (np.isfinite(eps) and eps > 0 and 0 <= mom <= 1):
                ex.fail(n, f"epsilon {eps} and momentum {mom}: a BatchNorm needs epsilon > 0 and momentum in [0, 1]")
            if (param(n, 4) < 0).any():
                ex.fail(n, f"its running variance '{n.inputs[4]}' has negative values")
            name = _module(n.inputs[1])
            x = plan_in(n)
            name = b.bn(name, x)
            op = b.ops[-1]
            op["eps"] = float(f"{eps:.7g}")  # float32 in ONNX; the plan keeps 7 digits
            op["momentum"] = round(1 - float(mom), 6)
            for i, key in enumerate(("weight", "bias", "running_mean", "running_var"), start=1):
                floats[op["params"][key]] = np.asarray(param(n, i), np.float32)
            emit(n, name)
        elif n.op in ("Relu", "Add"):
            ins = [plan_in(n, i) for i in range(len(n.inputs))]
            emit(n, b.add(n.op.lower(), ins, b.tensors[ins[0]]))
        elif n.op in ("GlobalAveragePool", "ReduceMean"):
            x = plan_in(n)
            if n.op == "ReduceMean":
                axes = a.get("axes", ctx["value"](n.inputs[1]) if len(n.inputs) > 1 else None)
                if axes is None or sorted(int(v) for v in np.asarray(axes).reshape(-1)) != [2, 3]:
                    ex.fail(n, f"a mean over axes {axes}: only the global average pool (axes 2, 3) is supported")
            emit(n, b.add("avgpool", [x], [b.tensors[x][0], 1, 1]))
        elif n.op == "Gemm":
            if n.inputs[0] in gate_state:  # the gate's output layer
                gate_p[n.outputs[0]] = (gate_state[n.inputs[0]], param(n, 1), param(n, 2))
                continue
            x = plan_in(n)
            w = param(n, 1)
            if not a.get("transB", 0):
                w = w.T
            bias = param(n, 2) if len(n.inputs) > 2 and n.inputs[2] else np.zeros(w.shape[0], np.float32)
            name = _module(n.inputs[1])
            emit(n, b.add("linear", [x], [int(w.shape[0])], name, in_features=int(w.shape[1]),
                          out_features=int(w.shape[0]), params={"weight": f"{name}.weight", "bias": f"{name}.bias"}))
            floats[f"{name}.weight"], floats[f"{name}.bias"] = np.asarray(w, np.float32), np.asarray(bias, np.float32)
        elif n.op == "LSTM":
            hidden = int(a["hidden_size"])
            if len(n.inputs) > 4 and n.inputs[4] or len(n.inputs) > 7 and n.inputs[7]:
                ex.fail(n, "only an LSTM without sequence lengths or peepholes (SkipNet's recurrent gate) is supported")
            prev = gates[-1]["state"] if gates else ZERO
            init = [n.inputs[i] if len(n.inputs) > i and n.inputs[i] else ZERO for i in (5, 6)]
            if init != [prev[0], prev[1]] if gates else init != [ZERO, ZERO]:
                ex.fail(n, "the LSTM's initial state must be zero for the first gate and the previous gate's "
                           "final state after it")
            wts = [param(n, i)[0] for i in (1, 2)] + list(np.split(param(n, 3)[0], 2))
            wts = [_lstm_torch_order(np.asarray(v, np.float32), hidden) for v in wts]
            gates.append({"x": plan_in(n), "hidden": hidden, "weights": wts, "node": n,
                          "state": (n.outputs[1], n.outputs[2])})
            gate_state[n.outputs[0]] = len(gates) - 1
        elif n.op == "Sigmoid":
            if n.inputs[0] not in gate_p:
                ex.fail(n, "a sigmoid outside an SLU gate")
            gate_p[n.outputs[0]] = gate_p[n.inputs[0]]
        elif n.op == "Greater":
            if n.inputs[0] not in gate_p:
                ex.fail(n, "a comparison outside an SLU gate")
            j, pw, pb = gate_p[n.inputs[0]]
            g = gates[j]
            thr = float(np.asarray(ctx["value"](n.inputs[1])).reshape(-1)[0])
            params = planbuild.gate_params()
            floats.update({params["weight_ih"]: g["weights"][0], params["weight_hh"]: g["weights"][1],
                           params["bias_ih"]: g["weights"][2], params["bias_hh"]: g["weights"][3],
                           params["proj_weight"]: np.asarray(pw, np.float32).reshape(1, -1),
                           params["proj_bias"]: np.asarray(pb, np.float32).reshape(1)})
            emit(n, b.add("gate", [g["x"]], [1], f"gate.{j}", index=j, hidden=g["hidden"], threshold=thr,
                          block=None, params=params))
        elif n.op == "Mix":
            mask, out, short = (plan_in(n, i) for i in range(3))
            j = b.ops[producer[mask]]["index"]
            block = _gate_branch(b, producer, out, short, j)
            b.ops[producer[mask]]["block"] = block
            emit(n, b.add("mix", [mask, out, short], b.tensors[out], gate=j, block=block))
    if ctx["output"] not in names or b.ops[producer[names[ctx["output"]]]]["type"] != "linear":
        ex.fail(None, "the graph's output is not the classifier (a Gemm after the global average pool)")
    logits = names[ctx["output"]]
    b.add("loss", [logits], [1], "loss", loss="softmax_cross_entropy")
    ctx.update(floats=floats, exact_w=exact_w, nodes_of=nodes_of, logits=logits)
    return (b.ops, b.tensors), {"ops": len(b.ops), "convs": sum(o["type"] == "conv" for o in b.ops),
                                "gates": len(gates)}


def _auto_pads(ex: Export, n: Node, auto: str, hw: list, k: list, strides: list) -> list:
    """The pads (begin h, begin w, end h, end w) ONNX's ``auto_pad`` implies: none for VALID;
    for SAME_UPPER / SAME_LOWER those that give ceil(size / stride) outputs, the odd one at the
    end / the beginning."""
    if auto == "VALID":
        return [0] * 4
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        ex.fail(n, f"attribute auto_pad={auto!r} is not supported (NOTSET, VALID, SAME_UPPER, SAME_LOWER)")
    total = [max((-(-size // s) - 1) * s + kk - size, 0) for size, kk, s in zip(hw, k, strides)]
    begin = [t // 2 if auto == "SAME_UPPER" else t - t // 2 for t in total]
    return begin + [t - b for t, b in zip(total, begin)]


def _conv_role(name: str, x: str, k: int, stride: int) -> tuple[str, int | None]:
    """The conv's role and block from its module name (reference/geometry.py's names)."""
    parts = name.split(".")
    block = int(parts[1]) if len(parts) > 2 and parts[0] == "blocks" and parts[1].isdigit() else None
    if x == planbuild.INPUT:
        return "stem", None
    if parts[0] == "gate":
        return "gate", None
    if "downsample" in parts or (k == 1 and block is None):
        return "shortcut", block
    return "residual", block


def _gate_branch(b, producer: dict, out: str, short: str, j: int) -> int | None:
    """Mark the ops of the residual branch that ends in ``out`` as gated by gate ``j``: the
    ancestors of ``out`` that are not ``short`` or its ancestors. Returns the block index."""
    def ancestors(t, seen):
        stack = [t]
        while stack:
            t = stack.pop()
            if t in seen or t not in producer:
                continue
            seen.add(t)
            stack.extend(b.ops[producer[t]]["inputs"])
        return seen
    keep = ancestors(short, set())
    block = None
    for t in ancestors(out, set()) - keep:
        op = b.ops[producer[t]]
        op["gate"] = j
        if op["type"] == "conv" and op.get("block") is not None:
            block = op["block"]
    return block


# -- formats, layout, board -----------------------------------------------------------------

def step_formats(ex: Export, ops_tensors, state: dict | None):
    """Conv weights to the engine's integers; ``state`` may carry what ONNX does not: the PSG
    momentum (``<conv>.mom``) and the host's SGD momentum (``<param>.momentum_buffer``)."""
    ops, _ = ops_tensors
    arrays = dict(ex.ctx["floats"])
    state = state or {}
    exact_n = float_n = 0
    for op in ops:
        if op["type"] != "conv":
            continue
        if op["name"] in ex.ctx["exact_w"]:
            m, e = ex.ctx["exact_w"][op["name"]]
            planbuild.set_conv_from_master(op, arrays, np.asarray(m, np.int64), e, state.get(f"{op['name']}.mom"))
            exact_n += 1
        else:
            planbuild.set_conv_from_float(op, arrays, ex.ctx["floats"][op["name"]])
            float_n += 1
    arrays.update({k: v for k, v in state.items() if k.endswith(".momentum_buffer")})
    return arrays, {"exact_masters": exact_n, "from_float": float_n}


def step_layout(ex: Export, ops_tensors, arrays: dict, network: dict, board: boards.Board, batch: int,
                provenance: dict):
    ops, tensors = ops_tensors
    data, weights, named = planbuild.assemble(network, board, batch, ops, tensors, arrays, ex.ctx["logits"],
                                              provenance)
    ex.ctx["weights"], ex.ctx["arrays"] = weights, named
    return data, {"ddr_bytes": data["ddr"]["bytes"], "weights_bytes": len(weights),
                  "buffers": len(data["ddr"]["buffers"])}


def step_board(ex: Export, data: dict, board: boards.Board):
    nodes_of = ex.ctx["nodes_of"]
    limits = (("c_in", "max_c"), ("c_out", "max_c"), ("h", "max_h"), ("w", "max_w"), ("ho", "max_ho"),
              ("wo", "max_wo"), ("k", "max_k"), ("pad", "max_pad"))
    for op in data["ops"]:
        if op["type"] != "conv":
            continue
        node = nodes_of.get(op["name"])
        for key, limit in limits:
            if op[key] > getattr(board, limit):
                ex.fail(node, f"conv {op['name']}: {key} {op[key]} exceeds {board.name}'s {limit} "
                              f"{getattr(board, limit)}")
        if op["stride"] not in (1, 2):
            ex.fail(node, f"conv {op['name']}: stride {op['stride']} is not 1 or 2")
    if data["batch"] > board.max_batch:
        ex.fail(None, f"batch {data['batch']} exceeds {board.name}'s max_batch {board.max_batch}")
    if data["ddr"]["bytes"] > board.pl_ddr_bytes:
        ex.fail(None, f"the DDR footprint at batch {data['batch']}, {data['ddr']['bytes'] / 2**20:.1f} MiB, exceeds the "
                      f"{board.pl_ddr_bytes / 2**20:.0f} MiB {board.name} gives the engine: use a smaller --batch")
    plan = planmod.Plan(data, f"{ex.where} (the plan made from it)")
    return plan, {"board": board.name, "ddr_used": f"{data['ddr']['bytes'] / board.pl_ddr_bytes:.1%}"}


def export(onnx_bytes: bytes, board: str, batch: int, dataset: str = "", state: dict | None = None,
           provenance: dict | None = None, where: str = "model.onnx") -> Export:
    """Every step from ONNX bytes to a checked plan: ``ex.ctx['plan']``, ``ex.ctx['weights']``
    (weights.bin's bytes), ``ex.ctx['arrays']``; ``ex.steps`` holds each step's result and time."""
    b = boards.board(board)
    ex = Export(where)
    nodes = ex.run("graph", step_graph, onnx_bytes)
    nodes = ex.run("tidy", step_tidy, nodes)
    ops_tensors = ex.run("map", step_map, nodes)
    arrays = ex.run("formats", step_formats, ops_tensors, state)
    ops, tensors = ops_tensors
    x = tensors[planbuild.INPUT]
    if x[1] != x[2]:
        ex.fail(None, f"input images are {x[1]} x {x[2]}: the plan's networks take square images")
    network = planbuild.network_info("", x[0], tensors[ex.ctx["logits"]][0], x[1],
                                     sum(op["type"] == "gate" for op in ops), dataset)
    network["model"] = (provenance or {}).get("model") or f"onnx-{sum(op['type'] == 'conv' for op in ops)}conv"
    if ex.ctx["preprocess"] is not None:
        network["preprocess"] = ex.ctx["preprocess"]
    data = ex.run("layout", step_layout, ops_tensors, arrays, network, b, batch, provenance or {})
    ex.ctx["plan"] = ex.run("board", step_board, data, b)
    return ex


def sized_board(plan: planmod.Plan) -> boards.Board:
    """The plan's board with the engine's maxima cut down to this network (engine_config.h)."""
    import dataclasses
    convs = plan.convs()
    return dataclasses.replace(
        plan.board, max_c=max(max(o["c_in"], o["c_out"]) for o in convs), max_h=max(o["h"] for o in convs),
        max_w=max(o["w"] for o in convs), max_ho=max(o["ho"] for o in convs), max_wo=max(o["wo"] for o in convs),
        max_k=max(o["k"] for o in convs), max_pad=max(o["pad"] for o in convs), max_batch=plan.batch)


def layer_costs(plan: planmod.Plan, psg: bool = True) -> list[dict]:
    """Per conv, the MACs and modeled engine cycles of one training step at the plan's batch:
    forward, backward to the input (not the stem's), weight gradient (PSG worst case: every
    tile recomputed) and update, from contract/cycles.py."""
    from contract import cycles
    rows = []
    for op in plan.convs():
        s = cycles.conv_shape(op, plan.batch)
        est = [e for e in cycles.estimate_layer(s, plan.board, psg) if e.op != "conv_bwd_data" or op["input_grad"]]
        rows.append({"name": op["name"], "shape": f"{op['c_in']}>{op['c_out']}, {op['h']}x{op['w']}, "
                                                 f"{op['k']}/{op['stride']}",
                     "macs": sum(e.macs for e in est), "cycles": sum(e.cycles for e in est)})
    return rows


def engine_cycles(plan: planmod.Plan, psg: bool = True) -> tuple[int, int]:
    """(MACs, modeled engine cycles) of one training step (``layer_costs`` summed)."""
    rows = layer_costs(plan, psg)
    return sum(r["macs"] for r in rows), sum(r["cycles"] for r in rows)


def config_text(plan: planmod.Plan) -> str:
    """engine_config.h for this network: the board's configuration with its maxima cut down."""
    from .boards import config_header
    return config_header(sized_board(plan), f"`e2t export` ({plan.board.name}, sized to {plan.network['model']} at "
                                            f"batch {plan.batch})")


def summary(plan: planmod.Plan) -> dict:
    """The export's summary: layers, MACs and modeled engine cycles per training step, DDR."""
    layers = layer_costs(plan)
    macs, cyc = sum(r["macs"] for r in layers), sum(r["cycles"] for r in layers)
    kinds = {}
    for op in plan.ops:
        kinds[op["type"]] = kinds.get(op["type"], 0) + 1
    convs = plan.convs()
    return {"model": plan.network["model"], "board": plan.board.name, "batch": plan.batch,
            "convs": len(convs), "host_ops": len(plan.ops) - len(convs), "gates": plan.network["gates"],
            "engine_weights": sum(o["c_out"] * o["c_in"] * o["k"] ** 2 for o in convs),
            "macs_per_step": macs, "ddr_bytes": plan.data["ddr"]["bytes"], "pl_ddr_bytes": plan.board.pl_ddr_bytes,
            "weights_bytes": plan.data["weights"]["bytes"], "cycles_per_step": cyc,
            "seconds_per_step": cyc / (plan.board.clock_mhz * 1e6), "ops": kinds, "layers": layers}


def layers_text(s: dict) -> str:
    """The per-layer table of ``summary``: MACs and modeled cycles of one training step."""
    w = max(len(r["name"]) for r in s["layers"])
    lines = [f"{'conv':<{w}}  {'c>o, h x w, k/s':<20}{'MACs/step':>14}{'cycles/step (modeled)':>24}"]
    lines += [f"{r['name']:<{w}}  {r['shape']:<20}{r['macs']:>14,}{r['cycles']:>24,}" for r in s["layers"]]
    return "\n".join(lines)


def summary_text(s: dict) -> str:
    rows = [("network", f"{s['model']}: {s['convs']} engine convs, {s['host_ops']} host ops, {s['gates']} SLU gates"),
            ("board", f"{s['board']}, batch {s['batch']}"),
            ("engine weights", f"{s['engine_weights']:,}"),
            ("MACs per training step", f"{s['macs_per_step'] / 1e9:.2f} G (forward, backward-data, PSG weight "
                                       f"gradient with every tile recomputed)"),
            ("DDR footprint", f"{s['ddr_bytes'] / 2**20:.1f} MiB of {s['pl_ddr_bytes'] / 2**20:.0f} MiB"),
            ("weights.bin", f"{s['weights_bytes'] / 2**20:.2f} MiB"),
            ("engine cycles per step", f"{s['cycles_per_step']:,} = {s['seconds_per_step']:.2f} s "
                                       f"(modeled, contract/cycles.py; not synthesized)")]
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)
