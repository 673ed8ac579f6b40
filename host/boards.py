"""Board facts, read from the one file per board, ``bitstreams/<board>/board.json``.

The engine's ``engine_config.h`` (hls/boards.py), the plan's checks (host/plan.py) and the
cycle model all read these files, so a limit changed there changes the kernel's checks and
the host's together. Plain Python: the board side loads them without numpy or torch.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, fields

from .errors import E2TError
from .jsonfile import read_json

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bitstreams")
DEFAULT_BOARD = "pynq-z2"


@dataclass(frozen=True)
class Board:
    """What the engine and the host need to know about one board."""

    name: str
    part: str
    clock_mhz: float
    tile_o: int          # output channels per weight-gradient tile (unrolled)
    tile_i: int          # input channels per tile (unrolled)
    max_c: int           # channels, in and out
    max_h: int           # input height and width
    max_w: int
    max_ho: int          # output map height and width the on-chip tiles hold
    max_wo: int
    max_k: int           # kernel size
    max_pad: int         # zero padding per side
    max_batch: int
    acc_fwd_bits: int    # forward sums (docs/numerics.md, section 4)
    acc_wide_bits: int   # backward-to-input and weight-gradient sums
    axi_bits: int        # data width of the DDR ports (HP ports of the Zynq PS)
    ddr_bytes: int       # DDR on the board
    pl_ddr_bytes: int    # DDR the host may allocate for the engine (the image's contiguous memory)
    ddr_align: int       # byte alignment of every engine buffer
    sources: dict = dataclasses.field(default_factory=dict, compare=False)  # where the figures come from

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_INTS = {f.name for f in fields(Board) if f.type == "int"}


def _check(d: dict, path: str) -> Board:
    known = {f.name for f in fields(Board)}
    missing = sorted(known - set(d) - {"sources"})
    if missing:
        raise E2TError(f"{path}: missing field(s) {', '.join(missing)}")
    unknown = sorted(set(d) - known)
    if unknown:
        raise E2TError(f"{path}: unknown field(s) {', '.join(unknown)}")
    for key in sorted(_INTS):
        v = d[key]
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise E2TError(f"{path}: {key}: {v!r} is not a positive integer")
    if not isinstance(d["clock_mhz"], (int, float)) or not d["clock_mhz"] > 0:
        raise E2TError(f"{path}: clock_mhz: {d['clock_mhz']!r} is not a positive number")
    for key in ("name", "part"):
        if not isinstance(d[key], str) or not d[key]:
            raise E2TError(f"{path}: {key}: {d[key]!r} is not a name")
    if d["ddr_align"] & (d["ddr_align"] - 1):
        raise E2TError(f"{path}: ddr_align: {d['ddr_align']} is not a power of two")
    if d["pl_ddr_bytes"] > d["ddr_bytes"]:
        raise E2TError(f"{path}: pl_ddr_bytes: {d['pl_ddr_bytes']} exceeds ddr_bytes {d['ddr_bytes']}")
    return Board(**d)


def names() -> list[str]:
    """Boards with a board.json, sorted."""
    return sorted(n for n in os.listdir(DATA) if os.path.isfile(os.path.join(DATA, n, "board.json")))


def load(path: str) -> Board:
    """A board from a board.json file; every field is checked and named when wrong."""
    d = read_json(path, "the board file", "no such board file")
    if not isinstance(d, dict):
        raise E2TError(f"{path}: not a JSON object")
    board = _check(d, path)
    folder = os.path.basename(os.path.dirname(os.path.abspath(path)))
    if board.name != folder:
        raise E2TError(f"{path}: name: '{board.name}' differs from its folder '{folder}'")
    return board


def board(name: str) -> Board:
    """The named board; a clear error naming the known ones otherwise."""
    path = os.path.join(DATA, name, "board.json")
    if not os.path.isfile(path):
        raise E2TError(f"unknown board '{name}' (known: {', '.join(names())})")
    return load(path)
