"""Board facts, read from the one file per board, ``bitstreams/<board>/board.json``.

The engine's ``engine_config.h`` (hls/boards.py), the plan's checks (host/plan/schema.py) and the
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
FAMILIES = ("zynq7", "zynqmp")


@dataclass(frozen=True)
class Board:
    """What the engine and the host need to know about one board."""

    name: str
    part: str
    clock_mhz: float
    tile_o: int          # output channels per PSG tile (the unit of weight-gradient recompute)
    tile_i: int          # input channels per PSG tile
    array_o: int         # rows of the engine's multiplier array (DSP slices; output channels)
    array_i: int         # columns of the array (input channels): array_o x array_i DSPs, one shared array
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
    family: str          # zynq7 (Zynq-7000, PS7) or zynqmp (Zynq UltraScale+ MPSoC)
    board_part: str      # Vivado board part (its PS preset)
    ps: str              # the PS IP of the block design
    axi_lite_port: str   # the PS master port the engine's control registers hang on
    hp_ports: list       # the PS slave ports the engine's DDR traffic may use
    pl_clock: str        # the PS clock that drives the PL
    dsp: int             # fabric budget: DSP slices, 18 Kb BRAMs, LUTs, flip-flops
    bram18: int
    lut: int
    ff: int
    rails: list          # power rails the board's own sensors report (empty: none)
    pynq_image: str      # the PYNQ image the board side runs on
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
    for key in ("name", "part", "board_part", "ps", "axi_lite_port", "pl_clock", "pynq_image"):
        if not isinstance(d[key], str) or not d[key]:
            raise E2TError(f"{path}: {key}: {d[key]!r} is not a name")
    for key in ("hp_ports", "rails"):
        if not isinstance(d[key], list) or not all(isinstance(v, str) and v for v in d[key]):
            raise E2TError(f"{path}: {key}: {d[key]!r} is not a list of names")
    if not d["hp_ports"]:
        raise E2TError(f"{path}: hp_ports: the engine needs at least one port to DDR")
    if d["family"] not in FAMILIES:
        raise E2TError(f"{path}: family: {d['family']!r} is not one of {', '.join(FAMILIES)}")
    for key in ("ddr_align", "array_o", "array_i"):
        if d[key] & (d[key] - 1):
            raise E2TError(f"{path}: {key}: {d[key]} is not a power of two")
    if d["array_o"] * d["array_i"] > d["dsp"]:
        raise E2TError(f"{path}: array_o x array_i = {d['array_o'] * d['array_i']} DSPs exceeds dsp {d['dsp']}")
    if d["pl_ddr_bytes"] > d["ddr_bytes"]:
        raise E2TError(f"{path}: pl_ddr_bytes: {d['pl_ddr_bytes']} exceeds ddr_bytes {d['ddr_bytes']}")
    return Board(**d)


def pixel_lanes_built(b: Board) -> bool:
    """Whether the engine on ``b`` has the pixel-lane weight gradient (the stem's, E2T_WGP_PIX): on the
    boards with a 128-bit port (UltraScale+). On a 64-bit port the stem's g stream bounds it anyway,
    and the XC7Z020 has no LUTs for it beside the per-element unit: the channel sweep runs instead
    (the same numbers; docs/engine.md, "The XC7Z020's trim")."""
    return b.axi_bits >= 128


def wgp_pack(b: Board) -> bool:
    """Whether the pixel-lane weight gradient's predictor packs two entries a DSP (E2T_WGP_PACK):
    on the boards with a 128-bit port (UltraScale+), where the lanes are built. On a 64-bit port
    the stem's predictor pass waits on its g stream either way (docs/engine.md)."""
    return b.axi_bits >= 128


def check_fit(b: Board, batch: int, batch_flag: str, size: int | None = None) -> None:
    """Before any work: the batch that ``batch_flag`` gave and the image side that --size gave
    (None: none) are ones ``b``'s engine takes, named by the flag (not as a plan's fields)."""
    if batch < 1:
        raise E2TError(f"{batch_flag} must be at least 1, got {batch}")
    if batch > b.max_batch:
        raise E2TError(f"{batch_flag} {batch} exceeds the {b.name} engine's largest batch {b.max_batch}")
    if size is not None and size > min(b.max_h, b.max_w):
        raise E2TError(f"--size {size} exceeds the {b.name} engine's largest image {b.max_h} x {b.max_w}")


def check_images(b: Board, h: int, w: int, dataset: str) -> None:
    """The images of ``dataset`` (h x w pixels, as loaded) are ones ``b``'s engine takes."""
    if h > b.max_h or w > b.max_w:
        raise E2TError(f"the images of --dataset {dataset} are {h} x {w} pixels, more than the {b.name} engine's "
                       f"largest {b.max_h} x {b.max_w}: give --size {min(b.max_h, b.max_w)} (or less)")


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
