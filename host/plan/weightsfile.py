"""weights.bin: the arrays of a plan at the offsets its ``params`` give, with a CRC-32 per
array and a SHA-256 of the file in plan.json, so a corrupted or truncated file is refused
with the array named; so are numbers no layer can compute with, checksums or not."""
from __future__ import annotations

import hashlib
import os
import zlib

import numpy as np

from contract import numerics as nx
from contract.errors import E2TError

FILE = "weights.bin"


def pack(params: list[dict], arrays: dict[str, np.ndarray]) -> bytes:
    """The file's bytes; fills in each entry's ``crc32``. Zero bytes between arrays."""
    end = max(e["offset"] + e["bytes"] for e in params)
    buf = bytearray(end)
    for e in params:
        a = np.ascontiguousarray(arrays[e["name"]], dtype=e["dtype"])
        if list(a.shape or [1]) != e["shape"]:
            raise ValueError(f"{e['name']}: array of shape {list(a.shape)}, the plan says {e['shape']}")
        raw = a.tobytes()
        buf[e["offset"]:e["offset"] + len(raw)] = raw
        e["crc32"] = zlib.crc32(raw)
    return bytes(buf)


def describe(data: bytes) -> dict:
    """The plan's ``weights`` object for the file's bytes."""
    return {"file": FILE, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def unpack(data: bytes, plan, path: str = FILE) -> dict[str, np.ndarray]:
    """Every array of ``plan`` from the file's bytes, after the size, SHA-256 and CRC checks."""
    w = plan.data["weights"]
    if len(data) != w["bytes"]:
        raise E2TError(f"{path}: {len(data)} bytes, the plan says {w['bytes']}: the file is truncated or "
                       f"not this plan's (nothing was loaded)")
    arrays = {}
    for e in plan.data["params"]:
        raw = data[e["offset"]:e["offset"] + e["bytes"]]
        if "crc32" in e and zlib.crc32(raw) != e["crc32"]:
            raise E2TError(f"{path}: '{e['name']}' fails its CRC-32 check: the file is corrupted "
                           f"(nothing was loaded)")
        arrays[e["name"]] = np.frombuffer(raw, dtype=e["dtype"]).reshape(e["shape"]).copy()
    if hashlib.sha256(data).hexdigest() != w["sha256"]:
        raise E2TError(f"{path}: the SHA-256 differs from the plan's: the file is corrupted (nothing was loaded)")
    check_values(arrays, plan, path)
    return arrays


def check_values(arrays: dict[str, np.ndarray], plan, where: str) -> None:
    """Refuse, naming the array, what training or evaluation cannot compute with: a NaN or
    infinite float, a negative BatchNorm running variance, a weight shift outside [0, WSHIFT_MAX]."""
    running_var = {op["params"]["running_var"] for op in plan.ops if op["type"] == "batchnorm"}
    wshift = {op["buffers"]["wshift"] for op in plan.ops if op["type"] == "conv"}
    for name, a in arrays.items():
        bad = None
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            bad = "NaN" if np.isnan(a).any() else "an infinite value"
        elif name in running_var and (a < 0).any():
            bad = f"a negative running variance ({a.min():g})"
        elif name in wshift and ((a < 0) | (a > nx.WSHIFT_MAX)).any():
            bad = f"a weight shift outside [0, {nx.WSHIFT_MAX}]"
        if bad:
            raise E2TError(f"{where}: '{name}' holds {bad}: no layer computes with it (nothing was loaded)")


def read(folder: str, plan) -> dict[str, np.ndarray]:
    """The arrays of ``plan`` from folder/weights.bin."""
    path = os.path.join(folder, plan.data["weights"]["file"])
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise E2TError(f"{path}: cannot read the plan's weights ({e.strerror})") from None
    return unpack(data, plan, path)
