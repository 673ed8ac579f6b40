"""The engine's register map: the one place its AXI-Lite offsets are defined.

    python -m hls.regmap          # regenerate the files below
    python -m hls.regmap --check  # exit 1 if any generated file is stale

From ``REGISTERS`` this module generates
- ``hls/include/e2t_regs.h``: offsets as constants, op and mode codes, and the C structs
  (registers in, buffer addresses, status out) of the emulation ABI ``e2t_call``;
- the INTERFACE pragma block inside ``hls/src/e2t_engine.cpp`` (between its markers), so
  Vitis HLS places every register at the offset written here;
- ``contract/e2t_engine_regmap.json``: the map the host driver reads (PYNQ register-map shape).

Layout follows Vitis HLS's s_axilite rules: 0x00-0x0C are the block-level control
registers (ap_ctrl_hs), a 32-bit argument takes a data word plus a control word, a 64-bit one
(scalars and m_axi addresses) two data words plus a control word.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass

from contract import numerics as nx

HERE = os.path.dirname(os.path.abspath(__file__))
HEADER = os.path.join(HERE, "include", "e2t_regs.h")
KERNEL = os.path.join(HERE, "src", "e2t_engine.cpp")
JSON = os.path.join(os.path.dirname(HERE), "contract", "e2t_engine_regmap.json")
VLNV = "e2t:hls:e2t_engine:1.0"
BUNDLE = "control"
BEGIN, END = "// BEGIN GENERATED INTERFACE (python -m hls.regmap)", "// END GENERATED INTERFACE"

OPS = {"NOP": 0, "CONV_FWD": 1, "CONV_BWD_DATA": 2, "CONV_WGRAD": 3, "UPDATE": 4, "STATS": 5, "APPLY": 6}
WGRAD_MODES = {"FULL": 0, "PSG_ABS": 1, "PSG_RATIO": 2}
STATS_MODES = {"SQUARE": 0, "PRODUCT": 1}
# APPLY's mode register (docs/numerics.md, section 9.3): field -> (lowest bit, width, values by name)
APPLY_FIELDS = {"SRC2": (0, 2, {"NONE": 0, "INT32": 1, "INT8": 2}), "RELU": (2, 1, {"OFF": 0, "ON": 1}),
                "MASK": (3, 1, {"OFF": 0, "ON": 1}), "OUT": (4, 2, {"INT8": 0, "INT16": 1, "INT32": 2})}
APPLY_MODE_BITS = 6  # bits above the fields must be 0
STATUS = {"OK": 0, "BAD_OP": 1, "BAD_SHAPE": 2, "BAD_ARG": 3}


@dataclass(frozen=True)
class Reg:
    """One argument of ``e2t_engine``: a scalar register (``in``/``out``) or a DDR buffer (``ptr``)."""

    name: str
    kind: str        # "in", "out" or "ptr"
    ctype: str       # C type of the scalar, or of the buffer's elements
    doc: str

    @property
    def bits(self) -> int:
        return 64 if self.kind == "ptr" or "64" in self.ctype else 32


REGISTERS = (
    Reg("op", "in", "uint32_t", "operation: " + ", ".join(f"{v} {k}" for k, v in OPS.items())),
    Reg("mode", "in", "uint32_t", "CONV_WGRAD result: " + ", ".join(f"{v} {k}" for k, v in WGRAD_MODES.items())),
    Reg("batch", "in", "uint32_t", "N, images in the batch"),
    Reg("c_in", "in", "uint32_t", "C, input channels of the conv"),
    Reg("h_in", "in", "uint32_t", "H, input height"),
    Reg("w_in", "in", "uint32_t", "W, input width"),
    Reg("c_out", "in", "uint32_t", "O, output channels"),
    Reg("kernel", "in", "uint32_t", "k, square kernel size"),
    Reg("stride", "in", "uint32_t", "stride, 1 or 2"),
    Reg("pad", "in", "uint32_t", "zero padding on each side"),
    Reg("shift", "in", "uint32_t", "r: output rounding shift of CONV_FWD / CONV_BWD_DATA"),
    Reg("threshold", "in", "uint64_t", "PSG: T (PSG_ABS) or R (PSG_RATIO, R / 2^16)"),
    Reg("count", "in", "uint32_t", "UPDATE: number of weights"),
    Reg("e_w", "in", "int32_t", "UPDATE: master weights' exponent"),
    Reg("lr", "in", "uint64_t", "UPDATE: LR = round(lr * 2^32)"),
    Reg("wd", "in", "uint64_t", "UPDATE: WD = round(weight decay * 2^32)"),
    Reg("mu", "in", "uint32_t", "UPDATE: MU = round(momentum * 2^16)"),
    Reg("act", "ptr", "int8_t", "x_q, N x C x H x W"),
    Reg("wgt", "ptr", "int8_t", "W_q, O x C x k x k"),
    Reg("wshift", "ptr", "int8_t", "CONV_BWD_DATA: per-output-channel weight shifts s[o]"),
    Reg("grad", "ptr", "int16_t", "g_q, N x O x Ho x Wo"),
    Reg("out", "ptr", "int32_t", "y (N x O x Ho x Wo) or g_x (N x C x H x W)"),
    Reg("sgn", "ptr", "int8_t", "sign gradient (O x C x k x k) out of CONV_WGRAD, into UPDATE"),
    Reg("scratch", "ptr", "int64_t", "CONV_WGRAD: G_full (mode FULL) or the predictor's G_msb"),
    Reg("master", "ptr", "int32_t", "UPDATE: master weights, updated in place"),
    Reg("mom", "ptr", "int32_t", "UPDATE: momentum, updated in place"),
    Reg("status", "out", "uint32_t", "0 OK, else: " + ", ".join(f"{v} {k}" for k, v in STATUS.items() if v)),
    Reg("saturations", "out", "uint32_t", "values clipped by this op"),
    Reg("psg_sure", "out", "uint32_t", "CONV_WGRAD PSG: entries decided by the predictor"),
    Reg("psg_tiles", "out", "uint32_t", "CONV_WGRAD PSG: weight-gradient tiles"),
    Reg("psg_recomputed", "out", "uint32_t", "CONV_WGRAD PSG: tiles recomputed at full precision"),
    Reg("shift2", "in", "uint32_t", "STATS: u, the rounding shift of the second operand"),
    Reg("src1", "ptr", "int32_t", "STATS, APPLY: first operand a, N x C x H x W"),
    Reg("src2", "ptr", "int32_t", "STATS (PRODUCT), APPLY (second source INT32): b, N x C x H x W"),
    Reg("mask", "ptr", "int8_t", "APPLY (MASK): z = 0 where mask <= 0, N x C x H x W"),
    Reg("coef", "ptr", "int64_t", "APPLY: per channel M1, M2, B (C x 3)"),
    Reg("dst8", "ptr", "int8_t", "APPLY (output INT8): z, N x C x H x W"),
    Reg("dst16", "ptr", "int16_t", "APPLY (output INT16): z, N x C x H x W"),
    Reg("stats", "ptr", "int64_t", "STATS: C x 4 sums; APPLY: N x C x 3 plane sums"),
)


def offsets() -> dict[str, int]:
    """Byte offset of every register in the s_axilite space."""
    out, at = {}, 0x10
    for r in REGISTERS:
        out[r.name] = at
        at += 0xC if r.bits == 64 else 0x8
    return out


# The engine's two AXI masters (docs/engine.md): what the kernel reads (weights, shifts,
# gradients, master weights, the per-element sources) on one, what it writes (outputs, signs,
# weight gradients, momentum) on the other, each one HP port's worth of beats (board axi_bits)
# a direction. A buffer an op both reads and writes stays on one bundle (master and mom in place,
# scratch and sgn read back). The activations are read on the write bundle's read channel, idle
# but for PSG's and UPDATE's read-backs: CONV_WGRAD loads x and g at once, each on its own port.
M_AXI_BUNDLES = {"act": "gmem_wr", "wgt": "gmem_rd", "wshift": "gmem_rd", "grad": "gmem_rd", "master": "gmem_rd",
                 "out": "gmem_wr", "sgn": "gmem_wr", "scratch": "gmem_wr", "mom": "gmem_wr",
                 "src1": "gmem_rd", "src2": "gmem_rd", "mask": "gmem_rd", "coef": "gmem_rd",
                 "dst8": "gmem_wr", "dst16": "gmem_wr", "stats": "gmem_wr"}


def pragma_block() -> str:
    """The INTERFACE pragmas of ``e2t_engine``, one per argument, offsets included."""
    off = offsets()
    lines = [BEGIN, f"#pragma HLS INTERFACE mode=s_axilite port=return bundle={BUNDLE}"]
    for r in REGISTERS:
        if r.kind == "ptr":
            lines.append(f"#pragma HLS INTERFACE mode=m_axi port={r.name} offset=slave bundle={M_AXI_BUNDLES[r.name]} "
                         f"depth=E2T_DEPTH_{r.name.upper()} max_widen_bitwidth=E2T_AXI_BITS")
        lines.append(f"#pragma HLS INTERFACE mode=s_axilite port={r.name} offset=0x{off[r.name]:03X} bundle={BUNDLE}")
    lines.append(END)
    return "\n".join("    " + ln for ln in lines)


def header_text() -> str:
    """The text of e2t_regs.h."""
    off = offsets()
    L = ["// Generated by `python -m hls.regmap`: the engine's register map and emulation ABI.",
         "// Do not edit: change hls/regmap.py and regenerate.",
         "#ifndef E2T_REGS_H", "#define E2T_REGS_H", "", "#include <stdint.h>", "",
         "// Operations, CONV_WGRAD modes and status codes."]
    L += [f"#define E2T_OP_{k} {v}" for k, v in OPS.items()]
    L += [f"#define E2T_WGRAD_{k} {v}" for k, v in WGRAD_MODES.items()]
    L += [f"#define E2T_STATS_{k} {v}" for k, v in STATS_MODES.items()]
    for field, (lo, width, values) in APPLY_FIELDS.items():
        L += [f"#define E2T_APPLY_{field}_SHIFT {lo}", f"#define E2T_APPLY_{field}_MASK 0x{(1 << width) - 1:x}"]
        L += [f"#define E2T_APPLY_{field}_{k} {v}" for k, v in values.items()]
    L += [f"#define E2T_APPLY_MODE_BITS {APPLY_MODE_BITS}"]
    L += [f"#define E2T_STATUS_{k} {v}" for k, v in STATUS.items()]
    L += ["", "// AXI-Lite byte offsets (0x00 ap_ctrl: bit 0 start, 1 done, 2 idle)."]
    L += [f"#define E2T_REG_{r.name.upper()} 0x{off[r.name]:03X}  // {r.doc}" for r in REGISTERS]
    for struct, kind, fmt in (("e2t_regs", "in", "{t} {n};"), ("e2t_ports", "ptr", "{t} *{n};"),
                              ("e2t_status", "out", "{t} {n};")):
        L += ["", f"struct {struct} {{"]
        L += [f"    {fmt.format(t=r.ctype, n=r.name)}  // {r.doc}" for r in REGISTERS if r.kind == kind]
        L += ["};"]
    L += ["", "// One engine call on host buffers: what the IP does after ap_start, as a C function.",
          "#ifdef __cplusplus", 'extern "C"', "#endif",
          "void e2t_call(const struct e2t_regs *regs, const struct e2t_ports *ports, struct e2t_status *status);",
          "", "#endif  // E2T_REGS_H", ""]
    return "\n".join(L)


def layout_digest() -> str:
    """A short digest of every register's name, offset, width and kind: the map's version,
    which the host driver compares with the one an overlay was built from."""
    import hashlib
    off = offsets()
    text = ";".join(f"{r.name}@{off[r.name]:x}/{r.bits}/{r.kind}/{r.ctype}" for r in REGISTERS)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def regmap_json() -> dict:
    """The register map as the host driver reads it."""
    off = offsets()
    regs = {}
    for r in REGISTERS:
        regs[r.name] = {"offset": off[r.name], "width": r.bits, "access": "read-only" if r.kind == "out" else "read-write",
                        "kind": {"in": "scalar", "out": "status", "ptr": "address"}[r.kind], "type": r.ctype,
                        "description": r.doc}
    return {"ip": "e2t_engine", "vlnv": VLNV, "version": layout_digest(), "control": {"offset": 0, "ap_start": 0, "ap_done": 1, "ap_idle": 2},
            "ops": OPS, "wgrad_modes": WGRAD_MODES, "stats_modes": STATS_MODES,
            "apply_fields": {k: {"shift": lo, "width": w, "values": v} for k, (lo, w, v) in APPLY_FIELDS.items()},
            "status": STATUS,
            "numerics": {name: getattr(nx, name) for name in nx.CONSTANTS},
            "registers": regs}


def kernel_text(current: str) -> str:
    """``current`` (e2t_engine.cpp) with its generated INTERFACE block replaced."""
    pattern = re.compile(r"[ \t]*" + re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    if not pattern.search(current):
        raise ValueError(f"{KERNEL} has no '{BEGIN}' ... '{END}' block")
    return pattern.sub(lambda _: pragma_block(), current, count=1)


def outputs() -> dict[str, str]:
    """Every generated file: path -> text."""
    with open(KERNEL) as f:
        kernel = f.read()
    return {HEADER: header_text(), KERNEL: kernel_text(kernel), JSON: json.dumps(regmap_json(), indent=1) + "\n"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 if a generated file is stale")
    args = p.parse_args(argv)
    stale = []
    for path, text in outputs().items():
        old = open(path).read() if os.path.exists(path) else None
        if old != text:
            stale.append(os.path.relpath(path))
            if not args.check:
                with open(path, "w") as f:
                    f.write(text)
    if args.check and stale:
        print("stale: " + ", ".join(stale) + " (run: python -m hls.regmap)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
