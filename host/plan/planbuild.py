"""Building a plan: the ops of a CIFAR ResNet from its name, fresh weights with numpy, and
the assembly of ops + arrays into a checked plan.json and weights.bin.

``e2t plan`` (and the on-engine trainer) build a plan here with numpy alone, so a board with
no workstation trains from scratch; the exporter (hls/export.py) maps an ONNX graph onto the
same ops and calls ``assemble`` too, so both give the same plan for the same network.

Names follow the reference model's modules (``conv1``, ``blocks.3.bn2``, ``gate.embeds.1``,
``fc``); an op without a module (ReLU, add, pool, mix) is named ``<its first input>.<type>``.
A tensor has the name of the op that makes it.
"""
from __future__ import annotations

import math
import os

import numpy as np

from contract import boards, numerics as nx
from contract.errors import E2TError
from contract.models import MODELS
from contract.runs import atomic_write, write_folder

from . import schema as planmod, weightsfile
from .layout import lay_out

WIDTHS = (16, 32, 64)
GATE_HIDDEN = 10
BN_EPS = 1e-5
BN_MOMENTUM = 0.1
GATE_THRESHOLD = 0.5
INPUT = "x"


def depth_of(model: str) -> int:
    if model not in MODELS:
        raise E2TError(f"unknown model '{model}' (known: {', '.join(MODELS)})")
    return int(model[len("resnet"):])


class _Ops:
    """Appends ops and their output tensors' shapes."""

    def __init__(self, in_shape):
        self.ops, self.tensors = [], {INPUT: list(in_shape)}

    def add(self, kind: str, inputs: list, shape, name: str | None = None, gate=None, **fields) -> str:
        name = name or f"{inputs[0] if kind != 'mix' else inputs[1]}.{kind}"
        op = {"type": kind, "name": name, "inputs": list(inputs), "output": name, **fields}
        if gate is not None:
            op["gate"] = gate
        self.ops.append(op)
        self.tensors[name] = list(shape)
        return name

    def conv(self, name, x, c_out, k, stride, pad, role, block=None, gate=None, input_grad=True) -> str:
        c, h, w = self.tensors[x]
        ho, wo = planmod.conv_out(h, k, stride, pad), planmod.conv_out(w, k, stride, pad)
        return self.add("conv", [x], [c_out, ho, wo], name, gate, c_in=c, c_out=c_out, k=k, stride=stride, pad=pad,
                        h=h, w=w, ho=ho, wo=wo, role=role, block=block, input_grad=input_grad, w_exp=0, wq_exp=0)

    def bn(self, name, x, gate=None) -> str:
        return self.add("batchnorm", [x], self.tensors[x], name, gate, channels=self.tensors[x][0], eps=BN_EPS,
                        momentum=BN_MOMENTUM, params=bn_params(name))


def bn_params(name: str) -> dict:
    return {k: f"{name}.{k}" for k in ("weight", "bias", "running_mean", "running_var")}


def gate_params() -> dict:
    return {"weight_ih": "gate.lstm.weight_ih_l0", "weight_hh": "gate.lstm.weight_hh_l0",
            "bias_ih": "gate.lstm.bias_ih_l0", "bias_hh": "gate.lstm.bias_hh_l0",
            "proj_weight": "gate.proj.weight", "proj_bias": "gate.proj.bias"}


def resnet_ops(model: str, in_channels: int, num_classes: int, size: int, slu: bool) -> tuple[list, dict]:
    """(ops, tensors) of ``model`` (resnet8 ... resnet110) on ``in_channels x size x size``
    images, with SLU gates before every block after the first when ``slu``."""
    n = (depth_of(model) - 2) // 6
    g = _Ops([in_channels, size, size])
    x = g.conv("conv1", INPUT, WIDTHS[0], 3, 1, 1, "stem", input_grad=False)
    x = g.add("relu", [g.bn("bn1", x)], g.tensors[x])
    i = 0
    for stage, width in enumerate(WIDTHS):
        for b in range(n):
            stride = 2 if stage > 0 and b == 0 else 1
            gate = None
            if slu and i > 0:
                gate = i - 1
                pooled = g.add("avgpool", [x], [g.tensors[x][0], 1, 1])
                e = g.conv(f"gate.embeds.{gate}", pooled, GATE_HIDDEN, 1, 1, 0, "gate")
                mask = g.add("gate", [e], [1], f"gate.{gate}", index=gate, hidden=GATE_HIDDEN,
                             threshold=GATE_THRESHOLD, block=i, params=gate_params())
            p = f"blocks.{i}"
            short = x
            if stride != 1 or g.tensors[x][0] != width:
                short = g.bn(f"{p}.downsample.1", g.conv(f"{p}.downsample.0", x, width, 1, stride, 0, "shortcut", i))
            r = g.conv(f"{p}.conv1", x, width, 3, stride, 1, "residual", i, gate)
            r = g.add("relu", [g.bn(f"{p}.bn1", r, gate)], g.tensors[r], gate=gate)
            r = g.bn(f"{p}.bn2", g.conv(f"{p}.conv2", r, width, 3, 1, 1, "residual", i, gate), gate)
            out = g.add("relu", [g.add("add", [r, short], g.tensors[r], gate=gate)], g.tensors[r], gate=gate)
            x = out if gate is None else g.add("mix", [mask, out, short], g.tensors[out], gate=gate, block=i)
            i += 1
    pooled = g.add("avgpool", [x], [WIDTHS[-1], 1, 1])
    logits = g.add("linear", [pooled], [num_classes], "fc", in_features=WIDTHS[-1], out_features=num_classes,
                   params={"weight": "fc.weight", "bias": "fc.bias"})
    g.add("loss", [logits], [1], "loss", loss="softmax_cross_entropy")
    return g.ops, g.tensors


def init_arrays(ops: list, seed: int, gate_init: float | None = None) -> dict[str, np.ndarray]:
    """Fresh float32 parameters for ``ops``, with the reference model's initialisers: He normal
    (fan out) for convs, BN as identity, PyTorch's uniform defaults for the classifier and the
    gate's LSTM and output layer (``gate_init``: the gates start running blocks with that
    probability). Conv weights are under ``<conv>.weight``."""
    rng = np.random.default_rng(seed)
    a = {}

    def uniform(shape, bound):
        return rng.uniform(-bound, bound, shape).astype(np.float32)

    for op in ops:
        if op["type"] == "conv":
            fan_out = op["c_out"] * op["k"] ** 2
            shape = (op["c_out"], op["c_in"], op["k"], op["k"])
            a[f"{op['name']}.weight"] = (rng.standard_normal(shape) * math.sqrt(2.0 / fan_out)).astype(np.float32)
        elif op["type"] == "batchnorm":
            ch, p = op["channels"], op["params"]
            a[p["weight"]], a[p["bias"]] = np.ones(ch, np.float32), np.zeros(ch, np.float32)
            a[p["running_mean"]], a[p["running_var"]] = np.zeros(ch, np.float32), np.ones(ch, np.float32)
        elif op["type"] == "linear":
            bound = 1 / math.sqrt(op["in_features"])
            a[op["params"]["weight"]] = uniform((op["out_features"], op["in_features"]), bound)
            a[op["params"]["bias"]] = uniform((op["out_features"],), bound)
        elif op["type"] == "gate" and op["params"]["weight_ih"] not in a:
            h, p = op["hidden"], op["params"]
            for key, shape in (("weight_ih", (4 * h, h)), ("weight_hh", (4 * h, h)), ("bias_ih", (4 * h,)),
                               ("bias_hh", (4 * h,))):
                a[p[key]] = uniform(shape, 1 / math.sqrt(h))
            a[p["proj_weight"]], a[p["proj_bias"]] = uniform((1, h), 1 / math.sqrt(h)), uniform((1,), 1 / math.sqrt(h))
            if gate_init is not None:
                a[p["proj_bias"]][:] = math.log(gate_init / (1 - gate_init))
                a[p["proj_weight"]] *= np.float32(0.1)
    return a


def set_conv_from_master(op: dict, arrays: dict, master: np.ndarray, e_w: int, mom: np.ndarray | None = None) -> None:
    """A conv's engine arrays from its master weights: ``wgt`` and ``wshift`` as used
    (docs/numerics.md, section 6), ``wq_exp = w_exp``; momentum zero unless given."""
    wq, s = nx.weights_for_use(master)
    name = op["name"]
    arrays[f"{name}.master"] = np.asarray(master, np.int32)
    arrays[f"{name}.mom"] = np.zeros(master.shape, np.int32) if mom is None else np.asarray(mom, np.int32)
    arrays[f"{name}.wgt"], arrays[f"{name}.wshift"] = wq.astype(np.int8), s.astype(np.int8)
    op["w_exp"], op["wq_exp"] = int(e_w), int(e_w)


def set_conv_from_float(op: dict, arrays: dict, w: np.ndarray) -> None:
    """A conv's engine arrays from float weights: the master by ``master_from_float``, and the
    weights as used are the fixed-point mode's (``weights_for_use_from_float``, section 7), so
    the engine's forward equals the reference's ``--precision fixed`` forward."""
    master, e_w = nx.master_from_float(w)
    set_conv_from_master(op, arrays, master, e_w)
    wq, e = nx.weights_for_use_from_float(w)
    base = int(e.min())
    if int(e.max()) - base > nx.WSHIFT_MAX:
        raise E2TError(f"{op['name']}: its channels' weight exponents span {int(e.max()) - base} bits, more than the "
                       f"engine's per-channel shifts hold ({nx.WSHIFT_MAX})")
    arrays[f"{op['name']}.wgt"], arrays[f"{op['name']}.wshift"] = wq.astype(np.int8), (e - base).astype(np.int8)
    op["wq_exp"] = base


def host_params(ops: list, arrays: dict) -> list[tuple[str, np.ndarray]]:
    """The host's float parameters in op order, each trainable one followed by its SGD
    momentum buffer (``<name>.momentum_buffer``, zero unless ``arrays`` has it)."""
    out, seen = [], set()
    for op in ops:
        if op["type"] not in ("batchnorm", "linear", "gate"):
            continue
        for key, name in op["params"].items():
            if name in seen:
                continue
            seen.add(name)
            out.append((name, np.asarray(arrays[name], np.float32)))
            if key not in planmod.RUNNING:
                buf = arrays.get(name + planmod.MOMENTUM)
                out.append((name + planmod.MOMENTUM, np.zeros_like(out[-1][1]) if buf is None
                            else np.asarray(buf, np.float32)))
    return out


def assemble(network: dict, board: boards.Board, batch: int, ops: list, tensors: dict, arrays: dict,
             output: str = "fc", provenance: dict | None = None) -> tuple[dict, bytes, dict]:
    """plan.json's object (not yet checked: ``plan.Plan(data)`` checks it) and weights.bin's
    bytes, from ops whose convs have their engine arrays in ``arrays``. Returns (data, weights
    bytes, every plan array by name)."""
    hp = host_params(ops, arrays)
    params, ddr = lay_out(ops, hp, batch, board.ddr_align)
    named = {**arrays, **dict(hp)}
    data = weightsfile.pack(params, named)
    plan = {"format": planmod.FORMAT, "version": planmod.VERSION, "board": board.name,
            "network": network, "batch": batch, "provenance": provenance or {},
            "formats": planmod.formats(), "input": INPUT, "output": output, "tensors": tensors, "ops": ops,
            "params": params, "ddr": ddr, "weights": weightsfile.describe(data)}
    return plan, data, {e["name"]: named[e["name"]] for e in params}


def network_info(model: str, in_channels: int, num_classes: int, size: int, gates: int, dataset: str) -> dict:
    return {"model": model, "dataset": dataset, "in_channels": in_channels, "num_classes": num_classes,
            "height": size, "width": size, "gates": gates}


def from_model(model: str, in_channels: int, num_classes: int, size: int, board: str, batch: int, seed: int = 0,
               slu: bool = False, gate_init: float | None = None, dataset: str = "") -> tuple[planmod.Plan, bytes, dict]:
    """A plan with freshly initialised weights, with numpy alone (``e2t plan``); images larger
    than the board's engine takes are refused naming ``dataset``, not the plan's fields."""
    b = boards.board(board)
    boards.check_images(b, size, size, dataset)
    ops, tensors = resnet_ops(model, in_channels, num_classes, size, slu)
    floats = init_arrays(ops, seed, gate_init)
    arrays = dict(floats)  # the convs' float weights are not plan arrays: assemble leaves them out
    for op in ops:
        if op["type"] == "conv":
            master, e_w = nx.master_from_float(floats[f"{op['name']}.weight"])
            set_conv_from_master(op, arrays, master, e_w)
    gates = sum(op["type"] == "gate" for op in ops)
    info = network_info(model, in_channels, num_classes, size, gates, dataset)
    data, weights, named = assemble(info, b, batch, ops, tensors, arrays,
                                    provenance={"source": "init", "seed": seed, "gate_init": gate_init})
    return planmod.Plan(data), weights, named


def files(plan: planmod.Plan, weights: bytes, extra: dict[str, bytes] | None = None) -> dict[str, bytes]:
    """A plan folder's files by name: plan.json, weights.bin and the ``extra`` ones."""
    return {planmod.PLAN_FILE: plan.to_json(), weightsfile.FILE: weights, **(extra or {})}


def save(out: str, plan: planmod.Plan, weights: bytes, extra: dict[str, bytes] | None = None) -> None:
    """Write the new plan folder ``out`` (``files``), whole or not at all; an existing one is
    refused, never written over (contract.runs.write_folder)."""
    write_folder(out, files(plan, weights, extra))


def save_into(folder: str, plan: planmod.Plan, weights: bytes) -> None:
    """Write plan.json and weights.bin into a run folder, each file atomically (the trainer's
    own plan of the run, re-written as it trains)."""
    for name, data in files(plan, weights).items():
        atomic_write(os.path.join(folder, name), data)
