"""The network plan: one trainable network for the engine, as data (docs/plan.md).

A plan is ``plan.json`` (this module: schema, checks, load and save) plus ``weights.bin``
(host/plan/weightsfile.py). It lists the ordered forward ops (engine convs and host ops), the
per-image shape of every host tensor, every parameter's place in weights.bin, and the DDR
layout of every engine buffer, so the host allocates once and the engine's AXI masters see
aligned bursts. Backward runs the same list in reverse. Loading checks every field against
the schema and the board's limits (contract/boards.py, the data the engine's checks are generated
from) and names the first wrong one: ``plan.json: ops[12].stride: 3 is not 1 or 2``. A plan
that loads is one the trainer runs exactly as written (docs/plan.md, "Checks").
"""
from __future__ import annotations

import json
import math
import os

from contract import boards, numerics as nx
from contract.errors import E2TError
from contract.jsonfile import read_json
from host.data.datasets import PIXEL_MAX

from . import weightsfile

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
SHARED = ("out", "grad", "scratch")  # the buffers every conv uses in turn (one each, 1-D)
INITS = (weightsfile.FILE, "runtime")  # a DDR buffer's initial contents
RUNNING = ("running_mean", "running_var")  # host parameters that SGD does not step (no momentum buffer)
MOMENTUM = ".momentum_buffer"  # <param><MOMENTUM>: the SGD momentum of a trainable host parameter
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


def _finite(v) -> bool:
    """A number finite as a float (an integer too large for one is not)."""
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


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

    def num(self, d: dict, key: str, path: str, lo: float | None = None, hi: float | None = None) -> float:
        """A finite number, in [lo, hi] where given."""
        v = self.field(d, key, path)
        where = f"{path}.{key}" if path else key
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not _finite(v):
            self.fail(where, f"{v!r} is not a finite number")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            self.fail(where, f"{v!r} is not in [{lo}, {hi}]")
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


def _check_loaded(c: _Check, params: dict, buffers: dict) -> None:
    """Where each array lives: every buffer's role, format and ``init``; the buffers loaded from
    weights.bin (a conv's wgt, wshift, master, mom) are the params of region ddr, byte for byte,
    and the rest of weights.bin is the host's (region host)."""
    for i, (name, e) in enumerate(buffers.items()):
        p = f"ddr.buffers[{i}]"
        role = c.str(e, "role", p, tuple(CONV_BUFFERS))
        if e.get("format") != CONV_BUFFERS[role][1]:
            c.fail(f"{p}.format", f"{e.get('format')!r} is not '{CONV_BUFFERS[role][1]}', the format of a {role} "
                                  f"buffer")
        init = c.str(e, "init", p, INITS)
        if (init == weightsfile.FILE) != (role in CONV_PARAMS):
            c.fail(f"{p}.init", f"'{init}' for a {role} buffer: {', '.join(CONV_PARAMS)} come from weights.bin, "
                                f"the others are made at run time")
        q = params.get(name)
        if init == weightsfile.FILE and (q is None or q["offset"] != e["offset"] or q["bytes"] != e["bytes"]):
            c.fail(p, f"'{name}' is loaded from weights.bin but its params entry differs in offset or size")
    for i, (name, e) in enumerate(params.items()):
        p = f"params[{i}]"
        region = c.str(e, "region", p, ("ddr", "host"))
        loaded = buffers.get(name, {}).get("init") == weightsfile.FILE
        if (region == "ddr") != loaded:
            c.fail(f"{p}.region", f"'{region}' for '{name}', which is {'' if loaded else 'not '}a DDR buffer loaded "
                                  f"from weights.bin")
        if "crc32" in e and (type(e["crc32"]) is not int or not 0 <= e["crc32"] < 1 << 32):
            c.fail(f"{p}.crc32", f"{e['crc32']!r} is not a CRC-32")


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
    if type(version) is not int or version != VERSION:  # true == 1 in Python: not a version
        c.fail("version", f"plan schema version {version!r} is not supported: this e2t reads version {VERSION} "
                          f"(re-run e2t plan / e2t export with this e2t)")
    board = boards.board(c.str(d, "board", ""))
    fmts = c.obj(c.field(d, "formats", ""), "formats")
    for f in nx.FORMATS:
        got = c.obj(c.field(fmts, f.name, "formats"), f"formats.{f.name}").get("bits")
        if type(got) is not int or got != f.bits:
            c.fail(f"formats.{f.name}.bits", f"{got!r} is not this e2t's {f.bits} (docs/numerics.md, section 2)")
    net = c.obj(c.field(d, "network", ""), "network")
    c.str(net, "model", "network")
    c.int(net, "in_channels", "network", 1, board.max_c, f"the board's max_c {board.max_c}")
    c.int(net, "num_classes", "network", 2)
    c.int(net, "height", "network", 1, board.max_h, f"the board's max_h {board.max_h}")
    c.int(net, "width", "network", 1, board.max_w, f"the board's max_w {board.max_w}")
    gates = c.int(net, "gates", "network", 0)
    if not isinstance(net.get("dataset", ""), str):
        c.fail("network.dataset", f"{net['dataset']!r} is not a data set name")
    if "preprocess" in net:
        _check_preprocess(c, net)
    batch = c.int(d, "batch", "", 1, board.max_batch, f"the board's max_batch {board.max_batch} ({board.name})")
    tensors = c.obj(c.field(d, "tensors", ""), "tensors")
    for name, shape in tensors.items():
        c.shape(shape, f"tensors.{name}")
    weights = c.obj(c.field(d, "weights", ""), "weights")
    c.str(weights, "file", "weights", (weightsfile.FILE,))
    wbytes = c.int(weights, "bytes", "weights", 1)
    sha = c.str(weights, "sha256", "weights")
    if len(sha) != 64 or sha.strip("0123456789abcdef"):
        c.fail("weights.sha256", f"{sha!r} is not a SHA-256 (64 hexadecimal digits)")
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
    _check_loaded(c, params, buffers)
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
    if ops[-1]["inputs"] != [d["output"]]:
        c.fail(f"ops[{len(ops) - 1}].inputs", f"the loss takes {ops[-1]['inputs']}, not the plan's output "
                                              f"'{d['output']}'")
    return board


def _check_preprocess(c: _Check, net: dict) -> None:
    """``network.preprocess`` (optional: older plans lack it): how an image becomes the input,
    host/data/datasets.py's ``preprocess``."""
    pre = c.obj(net["preprocess"], "network.preprocess")
    p, ch = "network.preprocess", net["in_channels"]
    c.str(pre, "layout", p, ("NCHW",))
    c.str(pre, "channel_order", p, ("gray",) if ch == 1 else ("RGB",))
    if [c.int(pre, "height", p), c.int(pre, "width", p)] != [net["height"], net["width"]]:
        c.fail(p, f"images of {pre['height']} x {pre['width']}, the network takes {net['height']} x {net['width']}")
    if c.num(pre, "divisor", p) != PIXEL_MAX:
        c.fail(f"{p}.divisor", f"{pre['divisor']!r} is not {PIXEL_MAX}: this e2t's data sets divide pixels by "
                               f"{PIXEL_MAX}")
    c.str(pre, "formula", p)
    for key in ("mean", "std"):
        v = c.field(pre, key, p)
        if not isinstance(v, list) or len(v) != ch:
            c.fail(f"{p}.{key}", f"{v!r} is not a list of {ch} numbers (one per channel)")
        for i, x in enumerate(v):
            if not isinstance(x, (int, float)) or isinstance(x, bool) or not _finite(x) or key == "std" and x <= 0:
                c.fail(f"{p}.{key}[{i}]", f"{x!r} is not a finite{' positive' * (key == 'std')} number")


def _param(c: _Check, params: dict, op: dict, key: str, path: str, dtype: str, shape: list) -> None:
    refs = c.obj(c.field(op, "params", path), f"{path}.params")
    name = c.str(refs, key, f"{path}.params")
    e = params.get(name)
    if e is None:
        c.fail(f"{path}.params.{key}", f"'{name}' is not in params")
    if e["dtype"] != dtype or e["shape"] != shape:
        c.fail(f"{path}.params.{key}", f"'{name}' is {e['dtype']} {e['shape']}, not {dtype} {shape}")


def _check_conv(c: _Check, op: dict, p: str, tensors: dict, params: dict, buffers: dict, b: boards.Board,
                batch: int, inp: str) -> None:
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
    if op.get("block") is not None:
        c.int(op, "block", p, 0)
    c.int(op, "w_exp", p, nx.MASTER_EXP_MIN, nx.MASTER_EXP_MAX)
    c.int(op, "wq_exp", p, -1000, 1000)
    x = op["inputs"][0]
    if c.field(op, "input_grad", p) is not (x != inp):
        c.fail(f"{p}.input_grad", f"{op['input_grad']!r} is not {str(x != inp).lower()}: a conv passes a gradient "
                                  f"to its input unless that is the network's input '{inp}'")
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
        if role not in SHARED and name != f"{op['name']}.{role}":
            c.fail(f"{p}.buffers.{role}", f"'{name}' is not '{op['name']}.{role}': each conv has its own {role} "
                                          f"buffer, named after the conv")
        if e["role"] != role:
            c.fail(f"{p}.buffers.{role}", f"'{name}' is a {e['role']} buffer")
        if role in SHARED and len(e["shape"]) != 1:
            c.fail(f"{p}.buffers.{role}", f"'{name}' has shape {e['shape']}: the shared {role} buffer is "
                                          f"one-dimensional")
        need = {"out": batch * max(co * ho * wo, ci * h * w if op["input_grad"] else 0),
                "grad": batch * co * ho * wo, "scratch": co * ci * k * k}.get(role)
        if sizes[role] is not None and e["shape"] != sizes[role]:
            c.fail(f"{p}.buffers.{role}", f"'{name}' is {e['shape']}, not {sizes[role]}")
        if need is not None and _prod(e["shape"]) < need:
            c.fail(f"{p}.buffers.{role}", f"'{name}' holds {_prod(e['shape'])} elements, the op needs {need}")
        if role in CONV_PARAMS:
            _param(c, params, {"params": {role: name}}, role, p, dtype, e["shape"])


ARITY = {"conv": 1, "batchnorm": 1, "relu": 1, "add": 2, "avgpool": 1, "linear": 1, "gate": 1, "mix": 3, "loss": 1}


class _HostParams:
    """The host's parameters the ops use: each belongs to one op (the gates share one LSTM),
    and weights.bin's host region holds exactly them and the SGD momentum of the trainable ones."""

    def __init__(self, c: _Check, params: dict):
        self.c, self.params, self.uses = c, params, {}  # name -> (op type, key)

    def use(self, op: dict, kind: str, p: str, key: str, shape: list) -> None:
        c = self.c
        _param(c, self.params, op, key, p, "float32", shape)
        name = op["params"][key]
        if self.params[name]["region"] != "host" or name.endswith(MOMENTUM):
            c.fail(f"{p}.params.{key}", f"'{name}' is not a host parameter (region host, a name not ending in "
                                        f"{MOMENTUM})")
        if name in self.uses and (kind != "gate" or self.uses[name] != (kind, key)):
            c.fail(f"{p}.params.{key}", f"'{name}' is already the {self.uses[name][1]} of a {self.uses[name][0]}: ops "
                                        f"do not share parameters (only the gates share their LSTM)")
        self.uses[name] = (kind, key)

    def check_all(self) -> None:
        want = {}  # host array -> the parameter it is the momentum of (None: a parameter)
        for name, (_, key) in self.uses.items():
            want[name] = None
            if key not in RUNNING:
                want[name + MOMENTUM] = name
        for i, (name, e) in enumerate(self.params.items()):
            if e["region"] != "host":
                continue
            if name not in want:
                self.c.fail(f"params[{i}]", f"'{name}' is a host array that no op uses (nor the SGD momentum of one)")
            of = self.params[want[name]] if want[name] else e
            if (e["dtype"], e["shape"]) != (of["dtype"], of["shape"]):
                self.c.fail(f"params[{i}]", f"'{name}' is {e['dtype']} {e['shape']}, not {of['dtype']} {of['shape']} "
                                            f"like '{want[name]}'")
        for name, of in want.items():
            if name not in self.params:
                self.c.fail("params", f"'{name}' is missing: the SGD step of '{of}' needs it")


def _check_ops(c: _Check, ops: list, tensors: dict, params: dict, buffers: dict, b: boards.Board, batch: int,
               inp: str, gates: int) -> None:
    defined, names = {inp}, set()
    held = {inp: None}  # tensor -> the gate whose images alone it holds (None: the whole batch)
    gate_ops = []  # gate j's op
    host = _HostParams(c, params)
    for i, op in enumerate(ops):
        p = f"ops[{i}]"
        c.obj(op, p)
        kind = c.str(op, "type", p, OP_TYPES)
        name = c.str(op, "name", p)
        if name in names:
            c.fail(f"{p}.name", f"'{name}' names an earlier op too: op names are unique")
        names.add(name)
        ins = c.field(op, "inputs", p)
        if not isinstance(ins, list) or not ins or not all(isinstance(t, str) for t in ins):
            c.fail(f"{p}.inputs", f"{ins!r} is not a list of tensor names")
        if len(ins) != ARITY[kind]:
            c.fail(f"{p}.inputs", f"a {kind} takes {ARITY[kind]} input(s), got {len(ins)}")
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
        if kind == "loss" and i != len(ops) - 1:
            c.fail(p, "the loss is not the last op: the backward pass starts at the loss")
        gate = op.get("gate")
        if gate is not None and (type(gate) is not int or not 0 <= gate < len(gate_ops) or kind in ("gate", "loss")):
            c.fail(f"{p}.gate", f"{gate!r} is not a gate an earlier op decides" if kind not in ("gate", "loss")
                   else f"a {kind} op is in no gated branch")
        _check_images(c, op, kind, p, gate, held, gate_ops)
        held[out] = None if kind == "mix" else gate
        shape_in, shape_out = tensors[ins[0]], tensors[out]
        if kind == "conv":
            _check_conv(c, op, p, tensors, params, buffers, b, batch, inp)
            if gate is not None and op["role"] == "residual" and op.get("block") != gate_ops[gate]["block"]:
                c.fail(f"{p}.block", f"{op.get('block')!r} is not block {gate_ops[gate]['block']}, which gate {gate} "
                                     f"decides (the SLU cost counts the block's MACs)")
        elif kind == "batchnorm":
            ch = c.int(op, "channels", p, 1)
            if shape_in[0] != ch or shape_out != shape_in:
                c.fail(p, f"channels {ch} do not match tensors {shape_in} -> {shape_out}")
            if not c.num(op, "eps", p) > 0:
                c.fail(f"{p}.eps", "must be > 0")
            c.num(op, "momentum", p, 0, 1)
            for key in ("weight", "bias") + RUNNING:
                host.use(op, kind, p, key, [ch])
        elif kind in ("relu", "add"):
            if any(tensors[t] != shape_out for t in ins):
                c.fail(p, f"input shapes {[tensors[t] for t in ins]} differ from the output's {shape_out}")
        elif kind == "avgpool":
            if len(shape_in) != 3 or shape_out != [shape_in[0], 1, 1]:
                c.fail(f"{p}.output", f"a global average pool of {shape_in} is [{shape_in[0]}, 1, 1], not {shape_out}")
        elif kind == "linear":
            fi, fo = c.int(op, "in_features", p, 1), c.int(op, "out_features", p, 1)
            if _prod(shape_in) != fi or shape_out != [fo]:
                c.fail(p, f"in_features {fi} / out_features {fo} do not match tensors {shape_in} -> {shape_out}")
            host.use(op, kind, p, "weight", [fo, fi])
            host.use(op, kind, p, "bias", [fo])
        elif kind == "gate":
            _check_gate(c, op, p, shape_in, shape_out, gate_ops, gates)
            hid = op["hidden"]
            for key, shape in (("weight_ih", [4 * hid, hid]), ("weight_hh", [4 * hid, hid]), ("bias_ih", [4 * hid]),
                               ("bias_hh", [4 * hid]), ("proj_weight", [1, hid]), ("proj_bias", [1])):
                host.use(op, kind, p, key, shape)
            gate_ops.append(op)
        elif kind == "mix":
            if tensors[ins[0]] != [1] or tensors[ins[1]] != shape_out or tensors[ins[2]] != shape_out:
                c.fail(f"{p}.inputs", "a mix takes [gate mask, block output, shortcut] of matching shapes")
            if c.int(op, "block", p, 0) != gate_ops[gate]["block"]:
                c.fail(f"{p}.block", f"{op['block']} is not block {gate_ops[gate]['block']}, which gate {gate} decides")
        elif kind == "loss":
            c.str(op, "loss", p, ("softmax_cross_entropy",))
            if len(shape_in) != 1 or shape_out != [1]:
                c.fail(p, f"a loss maps logits [classes] to [1], not {shape_in} -> {shape_out}")
        defined.add(out)
    if ops[-1]["type"] != "loss":
        c.fail("ops", "the last op is not a loss: a plan trains on the softmax_cross_entropy of its logits")
    if len(gate_ops) != gates:
        c.fail("ops", f"{len(gate_ops)} gate ops, but network.gates is {gates}")
    host.check_all()


def _check_images(c: _Check, op: dict, kind: str, p: str, gate: int | None, held: dict, gate_ops: list) -> None:
    """Which images each input holds: an op of gate j runs on the images whose gate j is on, so
    it takes whole-batch tensors (gathered) or gate j's own; a mix joins gate j's block output
    with a whole-batch shortcut by gate j's decision."""
    ins = op["inputs"]
    if kind == "mix":
        if gate is None:
            c.fail(f"{p}.gate", "missing: a mix picks per image by its gate")
        if ins[0] != gate_ops[gate]["output"] or held[ins[1]] != gate or held[ins[2]] is not None:
            c.fail(f"{p}.inputs", f"a mix of gate {gate} takes [gate {gate}'s decision '{gate_ops[gate]['output']}', "
                                  f"a tensor of gate {gate}'s ops, a tensor of the whole batch], not {ins}")
        return
    for t in ins:
        if held[t] not in (None, gate):
            why = f", not those of gate {gate}" if gate is not None else ": a mix must join it first"
            c.fail(f"{p}.inputs", f"tensor '{t}' holds only the images gate {held[t]} runs{why}")


def _check_gate(c: _Check, op: dict, p: str, shape_in: list, shape_out: list, gate_ops: list, gates: int) -> None:
    """An SLU gate: its index in order, its own block, one LSTM (hidden size and parameters) for all."""
    j = c.int(op, "index", p, 0, gates - 1 if gates else -1)
    if j != len(gate_ops):
        c.fail(f"{p}.index", f"gate {j} comes where gate {len(gate_ops)} is expected")
    hid = c.int(op, "hidden", p, 1)
    if shape_in != [hid, 1, 1] or shape_out != [1]:
        c.fail(p, f"a gate maps [{hid}, 1, 1] to [1], not {shape_in} -> {shape_out}")
    if not 0 < c.num(op, "threshold", p) < 1:
        c.fail(f"{p}.threshold", "is not in (0, 1)")
    block = c.int(op, "block", p, 0)
    if any(g["block"] == block for g in gate_ops):
        c.fail(f"{p}.block", f"block {block} has a gate already")
    c.obj(c.field(op, "params", p), f"{p}.params")
    if gate_ops and (hid, op["params"]) != (gate_ops[0]["hidden"], gate_ops[0]["params"]):
        c.fail(p, "its hidden size or params differ from gate 0's: the gates share one LSTM")
