"""Where every array of a plan lives: the DDR layout of the engine's buffers and the byte
layout of weights.bin (docs/plan.md, "DDR layout").

DDR holds, in this order, each conv's persistent buffers (``wgt``, ``wshift``, ``master``,
``mom``: the bytes of weights.bin's first part, so loading is one copy), each conv's
per-step buffers (``act``: its quantized input, kept for the weight gradient; ``sgn``), and
three buffers every conv shares in turn (``out``, ``grad``, ``scratch``), each aligned to the
board's ``ddr_align``. weights.bin continues after the DDR part with the host's float
parameters and their SGD momentum.
"""
from __future__ import annotations

import numpy as np

from .schema import CONV_BUFFERS, CONV_PARAMS, DTYPES, SHARED


def _align(n: int, align: int) -> int:
    return -(-n // align) * align


def _entry(name: str, dtype: str, shape, offset: int, **extra) -> dict:
    shape = [int(s) for s in shape]
    return {"name": name, "dtype": dtype, "shape": shape, "offset": offset,
            "bytes": int(np.prod(shape)) * DTYPES[dtype], **extra}


def conv_buffer_names(name: str) -> dict:
    """The DDR buffer of each role for the conv op ``name``."""
    return {role: f"shared.{role}" if role in SHARED else f"{name}.{role}" for role in CONV_BUFFERS}


def lay_out(ops: list[dict], host_params: list[tuple[str, np.ndarray]], batch: int, align: int) -> tuple[list, dict]:
    """(params entries of weights.bin, the plan's ``ddr`` object) for ``ops`` at ``batch``.

    ``host_params`` are the float arrays after the DDR part, in order. Each conv op gets its
    ``buffers`` map here."""
    convs = [op for op in ops if op["type"] == "conv"]
    buffers, off = [], 0

    def put(name, role, dtype, shape, init):
        nonlocal off
        buffers.append(_entry(name, dtype, shape, off, role=role, format=CONV_BUFFERS[role][1], init=init))
        off = _align(off + buffers[-1]["bytes"], align)

    for op in convs:
        w = [op["c_out"], op["c_in"], op["k"], op["k"]]
        for role, shape in zip(CONV_PARAMS, (w, [op["c_out"]], w, w)):
            put(f"{op['name']}.{role}", role, CONV_BUFFERS[role][0], shape, "weights.bin")
    params = [{k: b[k] for k in ("name", "dtype", "shape", "offset", "bytes")} | {"region": "ddr"} for b in buffers]
    for op in convs:
        put(f"{op['name']}.act", "act", "int8", [batch, op["c_in"], op["h"], op["w"]], "runtime")
        put(f"{op['name']}.sgn", "sgn", "int8", [op["c_out"], op["c_in"], op["k"], op["k"]], "runtime")
        op["buffers"] = conv_buffer_names(op["name"])
    out = max(batch * max(op["c_out"] * op["ho"] * op["wo"], op["c_in"] * op["h"] * op["w"] * op["input_grad"])
              for op in convs)
    put("shared.out", "out", "int32", [out], "runtime")
    put("shared.grad", "grad", "int16", [max(batch * op["c_out"] * op["ho"] * op["wo"] for op in convs)], "runtime")
    put("shared.scratch", "scratch", "int64", [max(op["c_out"] * op["c_in"] * op["k"] ** 2 for op in convs)], "runtime")
    ddr = {"align": align, "bytes": off, "buffers": buffers}
    woff = _align(params[-1]["offset"] + params[-1]["bytes"], align) if params else 0
    for name, a in host_params:
        params.append(_entry(name, "float32", a.shape or [1], woff, region="host"))
        woff = _align(woff + params[-1]["bytes"], align)
    return params, ddr
