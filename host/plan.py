"""The network plan: one trainable network for the engine, as data (docs/plan.md).

A plan is ``plan.json`` (this module: schema, checks, load and save) plus ``weights.bin``
(host/weightsfile.py). It lists the ordered forward ops (engine convs and host ops), the
per-image shape of every host tensor, every parameter's place in weights.bin, and the DDR
layout of every engine buffer, so the host allocates once and the engine's AXI masters see
aligned bursts. Backward runs the same list in reverse. Loading checks every field against
the schema and the board's limits (host/boards.py, the data the engine's checks are generated
from) and names the first wrong one: ``plan.json: ops[12].stride: 3 is not 1 or 2``.
"""
from __future__ import annotations

import json
import os

from . import boards, numerics as nx
from .errors import E2TError
from .jsonfile import read_json

FORMAT = "e2t-plan"
VERSION = 1
PLAN_FILE = "plan.json"
OP_TYPES = ("conv", "batchnorm", "relu", "add", "avgpool", "linear", "gate", "mix", "loss")
ROLES = ("stem", "residual", "shortcut", "gate")
DTYPES = {"int8": 1, "int16": 2, "int32": 4, "int64": 8, "float32": 4}
CONV_BUFFERS = {  # role -> (dtype, numerics format): what each conv's engine calls use
    "wgt": ("int8", "wgt"), "wshift": ("int8", "wgt"), "master": ("int32", "master"), "mom": ("int32", "mom"),
    "act": ("int8", "act"), "sgn": ("int8", "sign"), "out": ("int32", "out"), "grad": ("int16", "grad"),
    "scratch": ("int64", "out")}
CONV_PARAMS = ("wgt", "wshift", "master", "mom")  # the buffers that live in weights.bin
EXPONENTS = {  # the exponent rule of each format (docs/numerics.md, section 2)
    "act": "per tensor, from the float tensor's max-abs (section 3)",
    "wgt": "per output channel: wq_exp + wshift[o] (section 6)",
    "grad": "per tensor, from the float gradient's max-abs",
    "msb": "e_x + 4, formed in the engine from act (section 5)",
    "out": "y: e_x + wq_exp + wshift[o] + r; g_x: e_g + wq_exp + e_ref + r; G: e_x + e_g (section 4)",
    "master": "per layer: w_exp (block floating point, section 6)",
    "mom": f"fixed: {nx.MOM_EXP}",
    "sign": "none: values in {-1, 0, +1}"}


def formats() -> dict:
    """The ``formats`` table of a plan, from the numeric contract."""
    return {f.name: {"bits": f.bits, "exponent": EXPONENTS[f.name], "doc": f.doc} for f in nx.FORMATS}


def conv_out(size: int, k: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - k) // stride + 1


class _Check:
    """Field checks that raise one E2TError naming the file, the field's path and the problem."""

    def __init__(self, where: str):
        self.where = where

    def fail(self, path: str, msg: str):
        raise E2TError(f"{self.where}: {path}: {msg}")

    def obj(self, d, path: str) -> dict:
        if not isinstance(d, dict):
            self.fail(path, f"{type(d).__name__} is not an object")
        return d

    def field(self, d: dict, key: str, path: str):
        if key not in d:
            self.fail(f"{path}.{key}" if path else key, "missing")
        return d[key]

    def int(self, d: dict, key: str, path: str, lo: int | None = None, hi: int | None = None,
            limit: str = "") -> int:
        v = self.field(d, key, path)
        where = f"{path}.{key}" if path else key
        if not isinstance(v, int) or isinstance(v, bool):
            self.fail(where, f"{v!r} is not an integer")
        if lo is not None and v < lo:
            self.fail(where, f"{v} is below {lo}")
        if hi is not None and v > hi:
            self.fail(where, f"{v} exceeds {limit or hi}")
        return v

    def num(self, d: dict, key: str, path: str) -> float:
        v = self.field(d, key, path)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v != v:
            self.fail(f"{path}.{key}", f"{v!r} is not a number")
        return float(v)

    def str(self, d: dict, key: str, path: str, choices=None) -> str:
        v = self.field(d, key, path)
        where = f"{path}.{key}" if path else key
        if not isinstance(v, str) or not v:
            self.fail(where, f"{v!r} is not a name")
        if choices is not None and v not in choices:
            self.fail(where, f"'{v}' is not one of {', '.join(choices)}")
        return v

    def shape(self, v, path: str) -> list:
        if not isinstance(v, list) or not v or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0
                                                       for s in v):
            self.fail(path, f"{v!r} is not a shape (a list of positive integers)")
        return v


def _prod(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _check_regions(c: _Check, entries: list, path: str, total: int, align: int, what: str) -> dict:
    """Named byte ranges: aligned, inside ``total`` bytes, sized by dtype x shape, disjoint."""
    seen, spans = {}, []
    for i, e in enumerate(entries):
        p = f"{path}[{i}]"
        c.obj(e, p)
        name = c.str(e, "name", p)
        if name in seen:
            c.fail(f"{p}.name", f"'{name}' appears twice")
        dtype = c.str(e, "dtype", p, DTYPES)
        shape = c.shape(c.field(e, "shape", p), f"{p}.shape")
        off = c.int(e, "offset", p, 0)
        nbytes = c.int(e, "bytes", p, 1)
        if off % align:
            c.fail(f"{p}.offset", f"{off} is not a multiple of the {align}-byte alignment")
        if nbytes != _prod(shape) * DTYPES[dtype]:
            c.fail(f"{p}.bytes", f"{nbytes} is not {dtype} x {shape} = {_prod(shape) * DTYPES[dtype]}")
        if off + nbytes > total:
            c.fail(f"{p}", f"'{name}' ends at byte {off + nbytes}, past the {what}'s {total} bytes")
        seen[name] = e
        spans.append((off, off + nbytes, name))
    spans.sort()
    for (a0, a1, an), (b0, b1, bn) in zip(spans, spans[1:]):
        if b0 < a1:
            c.fail(path, f"'{an}' and '{bn}' overlap in the {what}")
    return seen


class Plan:
    """A checked plan: ``data`` is the JSON object; the accessors index it by name."""

    def __init__(self, data: dict, where: str = PLAN_FILE):
        self.data = data
        self.board = validate(data, where)
        self.ops = data["ops"]
        self.params = {e["name"]: e for e in data["params"]}
        self.buffers = {e["name"]: e for e in data["ddr"]["buffers"]}
        self.tensors = data["tensors"]

    @property
    def network(self) -> dict:
        return self.data["network"]

    @property
    def batch(self) -> int:
        return self.data["batch"]

    def convs(self) -> list[dict]:
        return [op for op in self.ops if op["type"] == "conv"]

    def to_json(self) -> bytes:
        """plan.json's bytes."""
        return (json.dumps(self.data, indent=1) + "\n").encode()


def load(folder_or_file: str) -> Plan:
    """Read and check a plan.json (or the one in a folder)."""
    path = os.path.join(folder_or_file, PLAN_FILE) if os.path.isdir(folder_or_file) else folder_or_file
    data = read_json(path, "it as a JSON plan", "no such plan (e2t plan or e2t export writes one)")
    return Plan(data, path)


def validate(d, where: str = PLAN_FILE) -> boards.Board:
    """Check a plan object field by field; returns its board. Raises E2TError naming the field."""
    c = _Check(where)
    c.obj(d, "plan")
    if d.get("format") != FORMAT:
        c.fail("format", f"{d.get('format')!r} is not '{FORMAT}': this is not an e2t plan")
    version = d.get("version")
    if version != VERSION:
        c.fail("version", f"plan schema version {version!r} is not supported: this e2t reads version {VERSION} "
                          f"(re-run e2t plan / e2t export with this e2t)")
    board = boards.board(c.str(d, "board", ""))
    fmts = c.obj(c.field(d, "formats", ""), "formats")
    for f in nx.FORMATS:
        got = c.obj(c.field(fmts, f.name, "formats"), f"formats.{f.name}").get("bits")
        if got != f.bits:
            c.fail(f"formats.{f.name}.bits", f"{got!r} is not this e2t's {f.bits} (docs/numerics.md, section 2)")
    net = c.obj(c.field(d, "network", ""), "network")
    c.str(net, "model", "network")
    c.int(net, "in_channels", "network", 1, board.max_c, f"the board's max_c {board.max_c}")
    c.int(net, "num_classes", "network", 2)
    c.int(net, "height", "network", 1, board.max_h, f"the board's max_h {board.max_h}")
    c.int(net, "width", "network", 1, board.max_w, f"the board's max_w {board.max_w}")
    gates = c.int(net, "gates", "network", 0)
    batch = c.int(d, "batch", "", 1, board.max_batch, f"the board's max_batch {board.max_batch} ({board.name})")
    tensors = c.obj(c.field(d, "tensors", ""), "tensors")
    for name, shape in tensors.items():
        c.shape(shape, f"tensors.{name}")
    weights = c.obj(c.field(d, "weights", ""), "weights")
    c.str(weights, "file", "weights")
    wbytes = c.int(weights, "bytes", "weights", 1)
    c.str(weights, "sha256", "weights")
    ddr = c.obj(c.field(d, "ddr", ""), "ddr")
    align = c.int(ddr, "align", "ddr", 1)
    if align & (align - 1) or align % board.ddr_align:
        c.fail("ddr.align", f"{align} is not a power-of-two multiple of the board's {board.ddr_align}-byte alignment")
    total = c.int(ddr, "bytes", "ddr", 1)
    if total > board.pl_ddr_bytes:
        c.fail("ddr.bytes", f"the DDR footprint {total / 2**20:.1f} MiB exceeds the {board.pl_ddr_bytes / 2**20:.0f} MiB "
                            f"{board.name} gives the engine (pl_ddr_bytes): use a smaller --batch")
    params = c.field(d, "params", "")
    if not isinstance(params, list):
        c.fail("params", "not a list")
    params = _check_regions(c, params, "params", wbytes, align, "weights file")
    buffers = c.field(ddr, "buffers", "ddr")
    if not isinstance(buffers, list):
        c.fail("ddr.buffers", "not a list")
    buffers = _check_regions(c, buffers, "ddr.buffers", total, align, "DDR layout")
    for name, e in buffers.items():
        if e.get("init") == "weights.bin":
            p = params.get(name)
            if p is None or p["offset"] != e["offset"] or p["bytes"] != e["bytes"]:
                c.fail(f"ddr.buffers.{name}", "is loaded from weights.bin but its params entry differs in offset or size")
    inp = c.str(d, "input", "")
    if tensors.get(inp) != [net["in_channels"], net["height"], net["width"]]:
        c.fail("input", f"tensor '{inp}' is not the network input {[net['in_channels'], net['height'], net['width']]}")
    ops = c.field(d, "ops", "")
    if not isinstance(ops, list) or not ops:
        c.fail("ops", "not a non-empty list")
    _check_ops(c, ops, tensors, params, buffers, board, batch, inp, gates)
    c.str(d, "output", "")
    if d["output"] not in tensors or tensors[d["output"]] != [net["num_classes"]]:
        c.fail("output", f"'{d['output']}' is not a tensor of {net['num_classes']} logits")
    return board


def _param(c: _Check, params: dict, op: dict, key: str, path: str, dtype: str, shape: list) -> None:
    refs = c.obj(c.field(op, "params", path), f"{path}.params")
    name = c.str(refs, key, f"{path}.params")
    e = params.get(name)
    if e is None:
        c.fail(f"{path}.params.{key}", f"'{name}' is not in params")
    if e["dtype"] != dtype or e["shape"] != shape:
        c.fail(f"{path}.params.{key}", f"'{name}' is {e['dtype']} {e['shape']}, not {dtype} {shape}")


def _check_conv(c: _Check, op: dict, p: str, tensors: dict, params: dict, buffers: dict, b: boards.Board,
                batch: int) -> None:
    ci = c.int(op, "c_in", p, 1, b.max_c, f"the board's max_c {b.max_c} ({b.name})")
    co = c.int(op, "c_out", p, 1, b.max_c, f"the board's max_c {b.max_c} ({b.name})")
    h = c.int(op, "h", p, 1, b.max_h, f"the board's max_h {b.max_h} ({b.name})")
    w = c.int(op, "w", p, 1, b.max_w, f"the board's max_w {b.max_w} ({b.name})")
    k = c.int(op, "k", p, 1, b.max_k, f"the board's max_k {b.max_k} ({b.name})")
    stride = c.int(op, "stride", p)
    if stride not in (1, 2):
        c.fail(f"{p}.stride", f"{stride} is not 1 or 2")
    pad = c.int(op, "pad", p, 0, b.max_pad, f"the board's max_pad {b.max_pad} ({b.name})")
    if k > h + 2 * pad or k > w + 2 * pad:
        c.fail(f"{p}.k", f"{k} is larger than the padded input {h + 2 * pad} x {w + 2 * pad}")
    ho, wo = conv_out(h, k, stride, pad), conv_out(w, k, stride, pad)
    c.int(op, "ho", p, ho, ho)
    c.int(op, "wo", p, wo, wo)
    if ho > b.max_ho or wo > b.max_wo:
        c.fail(p, f"output map {ho} x {wo} exceeds the board's {b.max_ho} x {b.max_wo} ({b.name})")
    if ci * k * k >= 1 << (b.acc_fwd_bits - 15) or co * k * k >= 1 << (b.acc_wide_bits - 35) \
            or batch * ho * wo >= 1 << (b.acc_wide_bits - 23):
        c.fail(p, f"exceeds the accumulators of {b.name} (docs/numerics.md, section 8.2)")
    c.str(op, "role", p, ROLES)
    c.int(op, "w_exp", p, nx.MASTER_EXP_MIN, nx.MASTER_EXP_MAX)
    c.int(op, "wq_exp", p, -1000, 1000)
    if not isinstance(c.field(op, "input_grad", p), bool):
        c.fail(f"{p}.input_grad", "is not true or false")
    x = op["inputs"][0]
    if len(op["inputs"]) != 1 or tensors[x] != [ci, h, w]:
        c.fail(f"{p}.inputs", f"a conv takes one tensor of [c_in, h, w] = {[ci, h, w]}, got {op['inputs']}")
    if tensors[op["output"]] != [co, ho, wo]:
        c.fail(f"{p}.output", f"tensor '{op['output']}' is {tensors[op['output']]}, not {[co, ho, wo]}")
    wshape = [co, ci, k, k]
    sizes = {"wgt": wshape, "wshift": [co], "master": wshape, "mom": wshape, "sgn": wshape,
             "act": [batch, ci, h, w], "out": None, "grad": None, "scratch": None}
    refs = c.obj(c.field(op, "buffers", p), f"{p}.buffers")
    for role, (dtype, _) in CONV_BUFFERS.items():
        name = c.str(refs, role, f"{p}.buffers")
        e = buffers.get(name)
        if e is None:
            c.fail(f"{p}.buffers.{role}", f"'{name}' is not in ddr.buffers")
        if e["dtype"] != dtype:
            c.fail(f"{p}.buffers.{role}", f"'{name}' is {e['dtype']}, not {dtype}")
        need = {"out": batch * max(co * ho * wo, ci * h * w if op["input_grad"] else 0),
                "grad": batch * co * ho * wo, "scratch": co * ci * k * k}.get(role)
        if sizes[role] is not None and e["shape"] != sizes[role]:
            c.fail(f"{p}.buffers.{role}", f"'{name}' is {e['shape']}, not {sizes[role]}")
        if need is not None and _prod(e["shape"]) < need:
            c.fail(f"{p}.buffers.{role}", f"'{name}' holds {_prod(e['shape'])} elements, the op needs {need}")
        if role in CONV_PARAMS:
            _param(c, params, {"params": {role: name}}, role, p, dtype, e["shape"])


def _check_ops(c: _Check, ops: list, tensors: dict, params: dict, buffers: dict, b: boards.Board, batch: int,
               inp: str, gates: int) -> None:
    defined = {inp}
    gate_seen = []
    for i, op in enumerate(ops):
        p = f"ops[{i}]"
        c.obj(op, p)
        kind = c.str(op, "type", p, OP_TYPES)
        c.str(op, "name", p)
        ins = c.field(op, "inputs", p)
        if not isinstance(ins, list) or not ins or not all(isinstance(t, str) for t in ins):
            c.fail(f"{p}.inputs", f"{ins!r} is not a list of tensor names")
        for t in ins:
            if t not in tensors:
                c.fail(f"{p}.inputs", f"tensor '{t}' is not in tensors")
            if t not in defined:
                c.fail(f"{p}.inputs", f"tensor '{t}' is used before an op makes it")
        out = c.str(op, "output", p)
        if out not in tensors:
            c.fail(f"{p}.output", f"tensor '{out}' is not in tensors")
        if out in defined:
            c.fail(f"{p}.output", f"tensor '{out}' is made twice")
        gate = op.get("gate")
        if gate is not None and (not isinstance(gate, int) or isinstance(gate, bool) or gate not in gate_seen):
            c.fail(f"{p}.gate", f"{gate!r} is not a gate an earlier op decides")
        shape_in, shape_out = tensors[ins[0]], tensors[out]
        if kind == "conv":
            _check_conv(c, op, p, tensors, params, buffers, b, batch)
        elif kind == "batchnorm":
            ch = c.int(op, "channels", p, 1)
            if shape_in[0] != ch or shape_out != shape_in:
                c.fail(p, f"channels {ch} do not match tensors {shape_in} -> {shape_out}")
            if not c.num(op, "eps", p) > 0:
                c.fail(f"{p}.eps", "must be > 0")
            c.num(op, "momentum", p)
            for key in ("weight", "bias", "running_mean", "running_var"):
                _param(c, params, op, key, p, "float32", [ch])
        elif kind in ("relu", "add"):
            if len(ins) != (2 if kind == "add" else 1):
                c.fail(f"{p}.inputs", f"{kind} takes {2 if kind == 'add' else 1} input(s), got {len(ins)}")
            if any(tensors[t] != shape_out for t in ins):
                c.fail(p, f"input shapes {[tensors[t] for t in ins]} differ from the output's {shape_out}")
        elif kind == "avgpool":
            if shape_out != [shape_in[0], 1, 1]:
                c.fail(f"{p}.output", f"a global average pool of {shape_in} is [{shape_in[0]}, 1, 1], not {shape_out}")
        elif kind == "linear":
            fi, fo = c.int(op, "in_features", p, 1), c.int(op, "out_features", p, 1)
            if _prod(shape_in) != fi or shape_out != [fo]:
                c.fail(p, f"in_features {fi} / out_features {fo} do not match tensors {shape_in} -> {shape_out}")
            _param(c, params, op, "weight", p, "float32", [fo, fi])
            _param(c, params, op, "bias", p, "float32", [fo])
        elif kind == "gate":
            j = c.int(op, "index", p, 0, gates - 1 if gates else -1)
            if j != len(gate_seen):
                c.fail(f"{p}.index", f"gate {j} comes where gate {len(gate_seen)} is expected")
            hid = c.int(op, "hidden", p, 1)
            if shape_in != [hid, 1, 1] or shape_out != [1]:
                c.fail(p, f"a gate maps [{hid}, 1, 1] to [1], not {shape_in} -> {shape_out}")
            if not 0 < c.num(op, "threshold", p) < 1:
                c.fail(f"{p}.threshold", "is not in (0, 1)")
            for key, shape in (("weight_ih", [4 * hid, hid]), ("weight_hh", [4 * hid, hid]), ("bias_ih", [4 * hid]),
                               ("bias_hh", [4 * hid]), ("proj_weight", [1, hid]), ("proj_bias", [1])):
                _param(c, params, op, key, p, "float32", shape)
            gate_seen.append(j)
        elif kind == "mix":
            if len(ins) != 3 or tensors[ins[0]] != [1] or tensors[ins[1]] != shape_out or tensors[ins[2]] != shape_out:
                c.fail(f"{p}.inputs", "a mix takes [gate mask, block output, shortcut] of matching shapes")
        elif kind == "loss":
            c.str(op, "loss", p, ("softmax_cross_entropy",))
            if len(shape_in) != 1 or shape_out != [1]:
                c.fail(p, f"a loss maps logits [classes] to [1], not {shape_in} -> {shape_out}")
        defined.add(out)
    if len(gate_seen) != gates:
        c.fail("ops", f"{len(gate_seen)} gate ops, but network.gates is {gates}")
