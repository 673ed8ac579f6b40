"""Analytical cycle model of e2t_engine (hls/src/e2t_engine.cpp): its loop nest, loop by loop.

Every function below mirrors one of the kernel's, in the same order of loops and calls:

- a pipelined loop costs ``trips * II + depth`` cycles (``DEPTH``: the pipeline's fill and, for
  the DDR loops, the AXI round trip; estimates until a synthesis report replaces them), a loop
  with no trips costs nothing; every call of a non-inlined function adds ``CALL`` cycles;
- a step (load a slice of the next image || compute a block on the array || write the previous
  block) costs the longest of its calls plus ``STEP``: the kernel hands them disjoint buffers so
  that the schedule runs them at once; two loads on the read bundle add up;
- loads and writes move one AXI beat (board ``axi_bits``) per cycle when the run is beat-aligned,
  one element otherwise, as the kernel's loops do.

``Trace`` records the entries and iterations of every pipelined loop under the kernel's labels;
tests/test_cycles.py compares them with a build of the kernel that counts them (-DE2T_TRIPS),
and checks the cycles by hand on small shapes. The figures are a model, not a measurement: they
say so wherever they are printed. ``python -m contract.cycles --board pynq-z2`` prints ResNet-20.

Plain Python in the contract: the board side records the modeled cycles of every engine call it
makes (host/engine/session.py), and ``e2t estimate`` those of a plan's step (hls/estimate.py).
"""
from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass, field

from . import regmap
from .boards import DEFAULT_BOARD, Board, board as get_board, names, pixel_lanes_built, wgp_pack
from .errors import E2TError

# Pipeline depths (cycles) by loop kind; "rd" loops read DDR, "wr" loops write it.
DEPTH = {"mul": 2, "rd": 24, "wr": 8, "wpre": 4, "fwd": 12, "bwd": 12, "wgrad": 10, "wgp": 12, "update": 24,
         "small": 2, "elem": 12}
CALL = 2          # start / done handshake of a non-inlined function
STEP = 2          # a step's state transitions around its parallel calls
CHECK_TOP = 4     # the top function's register reads and check branches

# Kernel constants (hls/src/e2t_engine.cpp)
PB = 128          # pixels of an output block
DMIN = 16         # shortest forward / backward sweep
GS_DEPTH = 1024   # G store entries per array row


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class ConvShape:
    """The shape registers of one conv call."""

    n: int
    c: int
    h: int
    w: int
    o: int
    k: int
    stride: int
    pad: int

    @property
    def ho(self) -> int:
        return (self.h + 2 * self.pad - self.k) // self.stride + 1

    @property
    def wo(self) -> int:
        return (self.w + 2 * self.pad - self.k) // self.stride + 1

    @property
    def macs(self) -> int:
        return self.n * self.o * self.c * self.k * self.k * self.ho * self.wo


def conv_shape(op: dict, n: int) -> ConvShape:
    """The shape of a call of the plan's conv op ``op`` on ``n`` images."""
    return ConvShape(n, op["c_in"], op["h"], op["w"], op["c_out"], op["k"], op["stride"], op["pad"])


@dataclass
class Trace:
    """Entries and iterations of the kernel's pipelined loops (its labels), as the model walks them."""

    entries: Counter = field(default_factory=Counter)
    trips: Counter = field(default_factory=Counter)

    def loop(self, label: str, trips: int, depth: str, ii: int = 1) -> int:
        """One run of a pipelined loop: its cycles."""
        self.entries[label] += 1
        self.trips[label] += trips
        return trips * ii + DEPTH[depth] if trips > 0 else 0

    def counts(self) -> dict:
        return {k: (self.entries[k], self.trips[k]) for k in sorted(self.entries)}

    def repeat(self, walk, times: int) -> int:
        """``times`` identical runs of ``walk(trace) -> cycles`` (the middle images of a call),
        walked once: their cycles, their entries and trips added ``times`` over."""
        if times <= 0:
            return 0
        once = Trace()
        cycles = walk(once)
        for k in once.entries:
            self.entries[k] += times * once.entries[k]
            self.trips[k] += times * once.trips[k]
        return times * cycles


class _Geo:
    """The board constants the kernel derives from engine_config.h."""

    def __init__(self, b: Board):
        self.ao, self.ai = b.array_o, b.array_i
        self.fo = 2 * self.ao
        self.nacc = max(self.fo, self.ai)
        beat = b.axi_bits // 8
        self.bw8, self.bw16, self.bw32, self.bw64 = beat, beat // 2, beat // 4, max(1, beat // 8)
        self.tile_o, self.tile_i = b.tile_o, b.tile_i
        self.dmin_w = 2 * self.ai
        self.half = self.ai // 2  # pixel-lane weight gradient: C limit, Wo floor, shortest group
        self.pack = wgp_pack(b)  # its predictor packs two entries a DSP (the kernel's WGP_PACK)
        xdepth = -(-b.max_c // self.ai) * b.max_h * b.max_w
        self.uch = min(self.nacc * PB, self.ai * xdepth)  # UPDATE chunk


# -- the kernel's helpers ----------------------------------------------------------------------

def _kmul(tr: Trace, times: int = 1) -> int:
    """``times`` calls of kmul (a * b by shift and add, 16 cycles)."""
    return sum(tr.loop("MUL16", 16, "mul") + CALL for _ in range(times))


def _kdiv(tr: Trace, times: int = 1) -> int:
    """``times`` calls of kdiv_ceil (restoring division, 16 cycles)."""
    return sum(tr.loop("DIV16", 16, "mul") + CALL for _ in range(times))


def _check(op: str, s: ConvShape | None, count: int = 0) -> int:
    """e2t_checks.h: shape_ok's products by mul16 (16 cycles each), wshift_ok, signs_ok."""
    cycles = CHECK_TOP
    mul = 16 + DEPTH["mul"]
    if op in ("fwd", "bwd"):
        cycles += 2 * mul
    elif op == "wgrad":
        cycles += 3 * mul
    if op == "bwd":
        cycles += s.o + DEPTH["rd"]
    if op == "update" and count:
        cycles += count + DEPTH["rd"]
    return cycles


def _make_call(tr: Trace) -> int:
    return _kmul(tr, 5)


def _load(tr: Trace, label: str, planes: int, plane: int, per: int) -> int:
    """load_x / load_g of ``planes`` planes of ``plane`` elements: beats of ``per`` when aligned."""
    if planes <= 0:
        return 0
    step = per if plane % per == 0 else 1
    return tr.loop(label, planes * plane // step, "rd") + CALL


def _drain(tr: Trace, g: _Geo, nch: int, npix: int, beats: bool) -> int:
    trips = npix // g.bw32 if beats else npix
    return sum(tr.loop("DRAIN", trips, "wr") for _ in range(nch)) + CALL


def _load_w(tr: Trace, s: ConvShape) -> int:
    return _kmul(tr, 2) + tr.loop("LOAD_W", s.o * s.c * s.k * s.k, "rd") + CALL


def _band_steps(tr: Trace, g: _Geo, s: ConvShape, groups: int, nb: int, stream: tuple, block, width, beats: bool) -> int:
    """The N x groups x bands steps of CONV_FWD and CONV_BWD_DATA, then the last drain: each step
    loads a slice of the next image's planes (``stream``: label, planes, ps a step, plane size,
    beat), runs ``block(trace, last band) -> (cycles, pixels)`` and drains the previous block
    (``width(group)`` channels) at once. The images between the first and the last step alike:
    one is walked for all of them."""
    label, planes, ps, plane, bw = stream

    def image(t: Trace, prev, nxt: bool):
        cycles, c0 = 0, 0
        for grp in range(groups):
            for bi in range(nb):
                c1 = min(planes, c0 + ps)
                load = _load(t, label, c1 - c0, plane, bw) if nxt and c0 < c1 else 0
                comp, npix = block(t, bi == nb - 1)
                drain = _drain(t, g, *prev, beats) if prev else 0
                cycles += max(load, comp, drain) + STEP
                c0 = c1
                prev = (width(grp), npix)
        return cycles, prev

    cycles, prev = image(tr, None, s.n > 1)  # the first image drains nothing before its first block
    if s.n > 2:
        cycles += tr.repeat(lambda t: image(t, prev, True)[0], s.n - 2)
    if s.n > 1:  # the last image loads nothing after it
        last, prev = image(tr, prev, False)
        cycles += last
    return cycles + _drain(tr, g, *prev, beats)


# -- CONV_FWD ----------------------------------------------------------------------------------

def _fwd_plan(s: ConvShape):
    rb = min(s.ho, PB // s.wo)
    nb = _ceil(s.ho, rb)
    return rb, nb, rb * s.wo, (s.ho - (nb - 1) * rb) * s.wo


def _fwd_block(tr: Trace, g: _Geo, s: ConvShape, npix: int) -> int:
    R = _ceil(s.c, g.ai) * s.k * s.k
    return (tr.loop("FWD_WPRE", g.fo, "wpre") + tr.loop("FWD_SWEEP", R * max(npix, DMIN), "fwd") + CALL)


def conv_fwd(s: ConvShape, b: Board, tr: Trace | None = None) -> int:
    """CONV_FWD: weights once, the first image, then N x B steps (B = output groups x bands)."""
    tr, g = tr or Trace(), _Geo(b)
    hw = s.h * s.w
    rb, nb, np_full, np_last = _fwd_plan(s)
    nogf = _ceil(s.o, g.fo)
    cycles = _check("fwd", s) + _make_call(tr) + _kdiv(tr, 2) + _kmul(tr, 6) + _load_w(tr, s)
    B = nogf * nb
    ps = _ceil(s.c, B)
    cycles += _kmul(tr, 2) + _kdiv(tr) + _kmul(tr)  # B, ps_e; ps; base0
    cycles += _load(tr, "LOAD_X", s.c, hw, g.bw8)

    def block(t: Trace, last: bool):
        npix = np_last if last else np_full
        return _fwd_block(t, g, s, npix), npix

    return cycles + _band_steps(tr, g, s, nogf, nb, ("LOAD_X", s.c, ps, hw, g.bw8), block,
                                lambda og: min(g.fo, s.o - og * g.fo), s.wo % g.bw32 == 0)


# -- CONV_BWD_DATA -----------------------------------------------------------------------------

def _bwd_plan(s: ConvShape):
    rb = min(s.h, PB // s.w)
    if s.stride == 2 and rb < s.h:
        rb &= ~1
    nb = _ceil(s.h, rb)
    return rb, nb, s.h - (nb - 1) * rb


def _bwd_classes(g: _Geo, s: ConvShape, rows: int):
    """(steps, pixels) of every parity class of a band of ``rows`` rows (plan_bwd)."""
    st, out = s.stride, []
    nog = _ceil(s.o, g.ao)
    for py in range(st):
        for px in range(st):
            kh0, kw0 = (py + s.pad) % st, (px + s.pad) % st
            nkh = _ceil(s.k - kh0, st) if s.k > kh0 else 0
            nkw = _ceil(s.k - kw0, st) if s.k > kw0 else 0
            steps = nog * nkh * nkw if nkh * nkw else 1
            nyc = _ceil(rows - py, st) if rows > py else 0
            nxc = _ceil(s.w - px, st) if s.w > px else 0
            out.append((steps, nyc * nxc))
    return out


def _bwd_block(tr: Trace, g: _Geo, s: ConvShape, classes) -> int:
    cycles = CALL
    for steps, npix in classes:
        if npix == 0:
            continue
        cycles += tr.loop("BWD_WPRE", g.ao, "wpre") + tr.loop("BWD_SWEEP", steps * max(npix, DMIN), "bwd")
    return cycles


def conv_bwd_data(s: ConvShape, b: Board, tr: Trace | None = None) -> int:
    """CONV_BWD_DATA: shifts, weights, the first image's g, then N x B steps (input groups x bands)."""
    tr, g = tr or Trace(), _Geo(b)
    howo = s.ho * s.wo
    rb, nb, last_rows = _bwd_plan(s)
    ncg = _ceil(s.c, g.ai)
    cycles = _check("bwd", s) + _make_call(tr) + tr.loop("BWD_SMAX", s.o, "rd")
    # plan_bwd: rb, nb; (nb - 1) rb, np_full, np_last, src_step; per class ntap (+ steps), per band kind np (+ tot)
    cycles += _kdiv(tr, 2) + _kmul(tr, 4)
    full, last = _bwd_classes(g, s, rb), _bwd_classes(g, s, last_rows)
    for ci in range(s.stride * s.stride):
        st = s.stride
        py, px = divmod(ci, st)
        kh0, kw0 = (py + s.pad) % st, (px + s.pad) % st
        ntap = (_ceil(s.k - kh0, st) if s.k > kh0 else 0) * (_ceil(s.k - kw0, st) if s.k > kw0 else 0)
        cycles += _kmul(tr) + (_kmul(tr) if ntap > 0 else 0)
        for cls in (full[ci], last[ci]):
            cycles += _kmul(tr) + (_kmul(tr) if cls[1] > 0 else 0)
    cycles += _load_w(tr, s)
    B = ncg * nb
    ps = _ceil(s.o, B)
    cycles += _kmul(tr, 2) + _kdiv(tr)
    cycles += _load(tr, "LOAD_G", s.o, howo, g.bw16)

    def block(t: Trace, lastb: bool):
        return _bwd_block(t, g, s, last if lastb else full), (last_rows if lastb else rb) * s.w

    return cycles + _band_steps(tr, g, s, ncg, nb, ("LOAD_G", s.o, ps, howo, g.bw16), block,
                                lambda cg: min(g.ai, s.c - cg * g.ai), s.w % g.bw32 == 0)


# -- CONV_WGRAD --------------------------------------------------------------------------------

def tiles(s: ConvShape, b: Board) -> int:
    """PSG tiles of the call (the psg_tiles counter): tile_o x tile_i, as board.json sets them."""
    return _ceil(s.o, b.tile_o) * _ceil(s.c, b.tile_i)


def pixel_lanes(s: ConvShape, b: Board) -> bool:
    """Whether CONV_WGRAD runs the pixel-lane sweep (the kernel's k.pix): on a board that builds it
    (``pixel_lanes_built``: 128-bit ports), at stride 1, C <= AI / 2 input channels, an output row
    of Wo >= AI / 2 pixels."""
    return pixel_lanes_built(b) and s.stride == 1 and 2 * s.c <= b.array_i and 2 * s.wo >= b.array_i


def tap_rows(s: ConvShape, b: Board) -> bool:
    """Whether CONV_WGRAD folds the kernel rows into the lanes (the kernel's k.fold): where the
    pixel lanes do not run, at k >= 2 and C k <= AI lanes. Lane c k + ky sweeps channel c's kernel
    row ky, from a plane of x the loads shift by ky - pad rows: k sweeps a tile instead of k^2, x
    read k times."""
    return not pixel_lanes(s, b) and s.k >= 2 and s.c * s.k <= b.array_i


def spare_lanes(s: ConvShape, b: Board) -> bool:
    """Whether the folded sweep's full pass puts kernel column k - 1 in its spare lanes (the
    kernel's k.sp): lanes C k.. through the predictor's port B, m = floor((AI - C k) / k) channels'
    k rows a sweep, enough for all C in the k - 1 sweeps of the other columns ((k - 1) m >= C)."""
    m = (b.array_i - s.c * s.k) // s.k if tap_rows(s, b) else 0
    return m >= 1 and (s.k - 1) * m >= s.c


def _load_x(tr: Trace, g: _Geo, s: ConvShape, c0: int, c1: int, fold: bool) -> int:
    """load_x of channels [c0, c1): folded, each channel read k times (once a kernel row)."""
    return _load(tr, "LOAD_X", (c1 - c0) * (s.k if fold else 1), s.h * s.w, g.bw8)


def _ck(s: ConvShape) -> tuple[int, int]:
    """Entries C k^2 of one output channel, and their pairs (the predictor's steps)."""
    ck = s.c * s.k * s.k
    return ck, (ck + 1) // 2


def _wg_groups(g: _Geo, s: ConvShape, pix: bool = False):
    nog, ncg = _ceil(s.o, g.ao), _ceil(s.c, g.ai)
    row_e = ncg * s.k * s.k * g.ai
    gr = min(nog, GS_DEPTH // row_e)
    if pix:  # the tiles of a pass also fit the output block (C k^2 entries a tile)
        gr = min(gr, PB // _ck(s)[0])
    return [(og0, min(nog, og0 + gr)) for og0 in range(0, nog, gr)]


def _wg_pass(tr: Trace, g: _Geo, s: ConvShape, og0: int, og1: int, pred: bool, only=None, pix: bool = False,
             fold: bool = False, spare: bool = False) -> int:
    ncg = _ceil(s.c, g.ai)
    gch = min(s.o, og1 * g.ao) - og0 * g.ao
    howo = s.ho * s.wo
    cycles = tr.loop("WG_COUNT", (og1 - og0) * ncg, "small")
    chosen = [(og, cg) for og in range(og0, og1) for cg in range(ncg) if only is None or (og, cg) in only]
    if not chosen:
        return cycles
    ntile = len(chosen)
    psx, psg = _ceil(s.c, ntile), _ceil(gch, ntile)
    cycles += _kdiv(tr, 2) + _kmul(tr, 2) + _kmul(tr, 2)  # psx, psg; psx_e, psg_e; total, g_first
    cycles += _kmul(tr) if fold else 0                   # the x planes of a slice
    # x on the write bundle's read channel, g on the read bundle: the two load at once
    cycles += max(_load_x(tr, g, s, 0, s.c, fold), _load(tr, "LOAD_G", gch, howo, g.bw16))
    taps = s.k if fold else s.k * s.k                    # a lane's taps
    steps = (taps + 1) // 2 if pred else taps - 1 if spare else taps
    total = steps * max(howo, g.dmin_w)
    if pix:  # groups of up to AI pixels of a row, max(entries or pairs, AI / 2) cycles each
        ck, ckh = _ck(s)
        total = s.ho * _ceil(s.wo, g.ai) * max(ckh if pred and g.pack else ck, g.half)

    def image(t: Trace, nxt: bool) -> int:  # every tile on one image, loading the next one's slices
        c = cx = cl = 0
        for _ in chosen:
            cx1, cl1 = min(s.c, cx + psx), min(gch, cl + psg)
            load = max(_load_x(t, g, s, cx, cx1, fold) if nxt and cx < cx1 else 0,
                       _load(t, "LOAD_G", cl1 - cl, howo, g.bw16) if nxt and cl < cl1 else 0)
            if pix:  # the first group's g, then the groups
                comp = t.loop("WGP_GPRE", g.half, "wpre") + t.loop("WGP_SWEEP", total, "wgp") + CALL
            else:
                comp = t.loop("WG_SWEEP", total, "wgrad") + CALL
            c += max(load, comp) + STEP
            cx, cl = cx1, cl1
        return c

    cycles += tr.repeat(lambda t: image(t, True), s.n - 1) + image(tr, False)  # all alike but the last
    if pix:  # the pass's sums, output block -> G store, one entry of every row a cycle
        return cycles + tr.loop("WGP_COPY", (og1 - og0) * _ck(s)[0], "wpre")
    return cycles + tr.loop("WG_SWEEP", 2 * g.ai if pred else g.ai, "wgrad") + CALL  # the last sweep's flush


def _entries_loop(tr: Trace, g: _Geo, s: ConvShape, label: str, rows_o: int, depth: str) -> int:
    ck = s.c * s.k * s.k
    per = g.bw64 if g.bw64 > 1 and ck % g.bw64 == 0 else 1
    return tr.loop(label, _ceil(rows_o * ck, per), depth)


def _recomputed_tiles(g: _Geo, s: ConvShape, b: Board, recomputed: int) -> set:
    """The array tiles the kernel recomputes when the first ``recomputed`` PSG tiles (row-major)
    hold an unsure entry: every array tile meeting one of them."""
    na, nb = _ceil(s.o, b.tile_o), _ceil(s.c, b.tile_i)
    flagged = [divmod(i, nb) for i in range(min(recomputed, na * nb))]
    out = set()
    for og in range(_ceil(s.o, g.ao)):
        for cg in range(_ceil(s.c, g.ai)):
            o0, o1 = og * g.ao, og * g.ao + g.ao - 1
            c0, c1 = cg * g.ai, cg * g.ai + g.ai - 1
            if any(o0 // b.tile_o <= a <= o1 // b.tile_o and c0 // b.tile_i <= bb <= c1 // b.tile_i for a, bb in flagged):
                out.add((og, cg))
    return out


def conv_wgrad(s: ConvShape, b: Board, psg: bool = False, recomputed: int | None = None,
               tr: Trace | None = None) -> int:
    """Pass 1 (G_full, or under PSG the predictor's G_msb, two taps a DSP) over G store groups,
    each written back; under PSG: the decision over every entry, then per group the recompute of
    the array tiles meeting a PSG tile with an unsure entry (``recomputed`` PSG tiles, the first
    ones row by row; all when not given: the worst case) and the signs."""
    tr, g = tr or Trace(), _Geo(b)
    nog, ncg = _ceil(s.o, g.ao), _ceil(s.c, g.ai)
    pix, fold, spare = pixel_lanes(s, b), tap_rows(s, b), spare_lanes(s, b)
    cycles = _check("wgrad", s) + _make_call(tr) + _kdiv(tr)
    if pix:  # C k^2, the groups of the map; the tiles a pass
        cycles += _kmul(tr, 2) + _kdiv(tr)
    if not pix and s.k >= 2:  # C k, and folded p W, the spare lanes' m (a division) and m k
        cycles += _kmul(tr, 3 if fold else 1) + (_kdiv(tr) if fold else 0)
    groups = _wg_groups(g, s, pix)
    for og0, og1 in groups:
        rows_o = min(s.o, og1 * g.ao) - og0 * g.ao
        cycles += _wg_pass(tr, g, s, og0, og1, psg, pix=pix, fold=fold, spare=spare)
        cycles += _kmul(tr, 3) + _entries_loop(tr, g, s, "WG_WRITEBACK", rows_o, "wr")
    if not psg:
        return cycles
    recomputed = tiles(s, b) if recomputed is None else recomputed
    only = _recomputed_tiles(g, s, b, recomputed)
    cycles += tr.loop("RATIO", 17, "small") + 1  # + the flags cleared (registers, one cycle)
    cycles += _kmul(tr, 2) + _entries_loop(tr, g, s, "PSG_DECIDE", s.o, "rd")
    cycles += _kmul(tr) + tr.loop("PSG_AFLAG", nog * ncg, "small")
    for og0, og1 in groups:
        rows_o = min(s.o, og1 * g.ao) - og0 * g.ao
        cycles += _wg_pass(tr, g, s, og0, og1, False, only, pix, fold, spare)
        cycles += _kmul(tr, 2) + _entries_loop(tr, g, s, "PSG_SIGN", rows_o, "rd")
    return cycles


# -- UPDATE ------------------------------------------------------------------------------------

def update(count: int, b: Board | None = None, tr: Trace | None = None) -> int:
    """UPDATE: the sign check, then chunks: master, momentum and signs in, two array calls an
    element (II = 2), master and momentum out."""
    tr, g = tr or Trace(), _Geo(b or get_board(DEFAULT_BOARD))
    cycles = _check("update", None, count) + _make_call(tr)
    for a0 in range(0, count, g.uch):
        n = min(g.uch, count - a0)
        p32 = g.bw32 if n % g.bw32 == 0 else 1
        p8 = g.bw8 if n % g.bw8 == 0 else 1
        cycles += sum(tr.loop("UPD_LOAD32", _ceil(n, p32), "rd") for _ in ("master", "mom"))
        cycles += tr.loop("UPD_LOADSGN", _ceil(n, p8), "rd") + tr.loop("UPD_STEP", n, "update", ii=2)
        cycles += sum(tr.loop("UPD_STORE32", _ceil(n, p32), "wr") for _ in ("master", "mom"))
        cycles += 6 * CALL
    return cycles


# -- STATS and APPLY (contract v2, docs/numerics.md section 9) ----------------------------------

ELEMENTWISE = ("stats", "apply")
SRC2_BYTES = {"NONE": 0, "INT32": 4, "INT8": 1}   # APPLY's second source: none, src2, act
OUT_BYTES = {"INT8": 1, "INT16": 2, "INT32": 4}   # its output: dst8, dst16, out
PLANE_STATS, CHANNEL_STATS, COEFS = 3, 4, 3        # int64s: APPLY per plane, STATS per channel, coef per channel


def _apply_field(mode: int, name: str) -> str:
    """The value name of APPLY's mode field ``name`` (the register map's apply_fields)."""
    fields = regmap.load().apply_fields
    f = fields[name]
    v = (mode >> f["shift"]) & ((1 << f["width"]) - 1)
    names = {val: key for key, val in f["values"].items()}
    if v not in names or mode >> max(g["shift"] + g["width"] for g in fields.values()):
        raise E2TError(f"APPLY mode 0x{mode:x}: the engine refuses it (docs/numerics.md, section 9.3)")
    return names[v]


def elementwise_streams(op: str, mode: int) -> tuple[tuple, tuple]:
    """Bytes per element of each DDR stream of a STATS or APPLY call: (reads, writes on gmem_wr).
    STATS: src1 and, PRODUCT (mode 1), src2; APPLY: src1, its second source (src2, or act: on
    gmem_wr's read channel), MASK's int8 mask, and the output the OUT field names. The other reads
    are on gmem_rd."""
    if op == "stats":
        if mode not in (0, 1):
            raise E2TError(f"STATS mode {mode}: the engine refuses it (0 SQUARE, 1 PRODUCT)")
        return (4, 4) if mode else (4,), ()
    if op != "apply":
        raise E2TError(f"'{op}' is not a per-element op ({', '.join(ELEMENTWISE)})")
    reads = (4, SRC2_BYTES[_apply_field(mode, "SRC2")], 1 if _apply_field(mode, "MASK") == "ON" else 0)
    return tuple(r for r in reads if r), (OUT_BYTES[_apply_field(mode, "OUT")],)


def elementwise_bytes(op: str, n: int, c: int, h: int, w: int, mode: int) -> tuple[int, int]:
    """DDR bytes (read, written) of one STATS or APPLY call: the streams, APPLY's coefficients
    and plane statistics, STATS's channel statistics."""
    reads, writes = elementwise_streams(op, mode)
    m = n * c * h * w
    if op == "stats":
        return m * sum(reads), 8 * CHANNEL_STATS * c
    return m * sum(reads) + 8 * COEFS * c, m * sum(writes) + 8 * PLANE_STATS * n * c


def _plane_run(p: int, size: int, b: Board) -> int:
    """Trips of a DDR loop over one plane of ``p`` elements of ``size`` bytes: whole beats when
    the plane is a multiple of a beat's elements, one element a trip otherwise."""
    per = max(1, b.axi_bits // 8 // size)
    return p // per if p % per == 0 else p


def elementwise_beats(op: str, n: int, c: int, h: int, w: int, mode: int, b: Board) -> int:
    """The streams' bound on a STATS or APPLY pass: the beats of the busiest channel (gmem_rd's
    reads add up; gmem_wr's reads, act, and its writes, the output and APPLY's plane statistics;
    the three run at once): what a pass whose loads, sweep and stores all overlapped would take.
    The kernel overlaps a plane's loads with the previous plane's sweep and store
    (``elementwise_cycles``)."""
    reads, writes = elementwise_streams(op, mode)
    planes, p = n * c, h * w
    act = op == "apply" and _apply_field(mode, "SRC2") == "INT8"  # reads[1]: act, on gmem_wr
    rd = planes * sum(_plane_run(p, size, b) for i, size in enumerate(reads) if not (act and i == 1))
    rd_wr = planes * _plane_run(p, 1, b) if act else 0
    wr = planes * (sum(_plane_run(p, size, b) for size in writes) + (PLANE_STATS if op == "apply" else 0))
    return max(rd, rd_wr, wr)


def elementwise_cycles(op: str, n: int, c: int, h: int, w: int, mode: int, b: Board,
                       tr: Trace | None = None) -> int:
    """STATS (``op`` "stats") or APPLY ("apply") on N x C x H x W with register ``mode``, as
    per_element runs it: the checks (APPLY: coef_ok, its 3 C coefficients one a cycle), APPLY's
    coefficients (COEF_LOAD, one int64 a trip), the plane's size P = H W (kmul); the first plane's
    loads (elem_load: ELEM_LOAD32, src1 and an int32 src2; ELEM_LOAD8, act and mask; one after the
    other); then a step a plane: the next plane's loads into the idle copy at
    the same time as this plane's sweep (elem_plane: ELEM_SWEEP, AXI / 32 lanes a trip) and, APPLY,
    its store (elem_store: ELEM_STORE and the three plane sums, single writes) after it, the step
    as long as the longer of the two plus the plane's state (its coefficients, STATS's channel
    sums: ``STEP``); after the last plane STATS writes its C x 4 sums (STATS_OUT). A plane's
    elements are in beats where the plane fills them, one a trip otherwise, as the kernel's DDR
    loops."""
    tr, g = tr or Trace(), _Geo(b)
    reads, writes = elementwise_streams(op, mode)
    p, apply = h * w, op == "apply"
    cycles = CHECK_TOP
    if apply:
        cycles += COEFS * c + DEPTH["rd"]  # e2t_checks.h's coef_ok, before anything is written
        cycles += tr.loop("COEF_LOAD", COEFS * c, "rd") + CALL
    cycles += _kmul(tr)

    def load(t: Trace) -> int:
        return sum(t.loop("ELEM_LOAD32" if size == 4 else "ELEM_LOAD8", _plane_run(p, size, b), "rd")
                   for size in reads) + CALL

    def plane(t: Trace, nxt: bool) -> int:
        cyc = t.loop("ELEM_SWEEP", _ceil(p, g.bw32), "elem") + CALL
        if apply:
            cyc += t.loop("ELEM_STORE", _plane_run(p, writes[0], b), "wr") + PLANE_STATS + DEPTH["wr"] + CALL
        return max(load(t) if nxt else 0, cyc) + STEP

    cycles += load(tr) + tr.repeat(lambda t: plane(t, True), n * c - 1) + plane(tr, False)
    if not apply:
        cycles += tr.loop("STATS_OUT", CHANNEL_STATS * c, "wr")
    return cycles


# -- peaks, estimates --------------------------------------------------------------------------

PRODUCTS_PER_DSP = {"fwd": 2, "bwd": 1, "wgrad_full": 1, "wgrad_pred": 2}


def peak_macs_per_cycle(b: Board, op: str | None = None) -> int:
    """MACs the array completes per cycle at its peak: its DSP slices, times the products one
    slice makes in ``op`` (forward and the PSG predictor pack two; None: the slices)."""
    return b.array_o * b.array_i * (PRODUCTS_PER_DSP[op] if op else 1)


@dataclass(frozen=True)
class Estimate:
    """Modeled cycles of one op on one board. ``busy``: the cycles the array needs for the op's
    MACs at its peak (their share of ``cycles`` is the utilization)."""

    op: str
    cycles: int
    macs: int
    board: Board
    busy: float = 0.0

    @property
    def seconds(self) -> float:
        return self.cycles / (self.board.clock_mhz * 1e6)

    @property
    def utilization(self) -> float:
        return self.busy / self.cycles if self.cycles else 0.0


def estimate_layer(s: ConvShape, b: Board, psg: bool = True, recomputed: int | None = None) -> list[Estimate]:
    """Forward, backward-to-input, weight gradient (with PSG: the predictor and the full-precision
    recompute of ``recomputed`` PSG tiles, all by default) and update of one conv layer."""
    weights = s.o * s.c * s.k * s.k
    recomputed = tiles(s, b) if recomputed is None else recomputed
    full = s.macs * recomputed // tiles(s, b) if psg else s.macs
    wg_macs = (s.macs + full) if psg else s.macs
    wg_busy = (s.macs / peak_macs_per_cycle(b, "wgrad_pred") if psg else 0) + full / peak_macs_per_cycle(b, "wgrad_full")
    return [Estimate("conv_fwd", conv_fwd(s, b), s.macs, b, s.macs / peak_macs_per_cycle(b, "fwd")),
            Estimate("conv_bwd_data", conv_bwd_data(s, b), s.macs, b, s.macs / peak_macs_per_cycle(b, "bwd")),
            Estimate("conv_wgrad", conv_wgrad(s, b, psg, recomputed), wg_macs, b, wg_busy),
            Estimate("update", update(weights, b), 0, b)]


def phase_cycles(s: ConvShape, b: Board, psg: bool = True, input_grad: bool = True) -> dict[str, int]:
    """``estimate_layer``'s cycles of one conv's training step by accounting phase (contract/opcount.py):
    the weight gradient's whole cycles in the phase of its first accounting (``bwd_w_pred`` with
    PSG, in its worst case, ``bwd_w_full`` without); no ``bwd_data`` without ``input_grad``."""
    phase = {"conv_fwd": "fwd", "conv_bwd_data": "bwd_data", "conv_wgrad": "bwd_w_pred" if psg else "bwd_w_full",
             "update": "update"}
    return {phase[e.op]: e.cycles for e in estimate_layer(s, b, psg) if input_grad or e.op != "conv_bwd_data"}


RESNET20_LAYERS = (  # (c, o, h, k, stride, count): stem, three stages, projections
    (3, 16, 32, 3, 1, 1), (16, 16, 32, 3, 1, 6), (16, 32, 32, 3, 2, 1), (32, 32, 16, 3, 1, 5), (16, 32, 32, 1, 2, 1),
    (32, 64, 16, 3, 2, 1), (64, 64, 8, 3, 1, 5), (32, 64, 16, 1, 2, 1))


def resnet20(b: Board, batch: int = 128):
    """(layer label, count, shape, estimates) for ResNet-20's convs at ``batch``, as training runs
    them: the stem (the first conv) has no input gradient, so no CONV_BWD_DATA (host/train/ops.py
    skips it where op["input_grad"] is false; hls/export.py's plan costs leave it out too)."""
    for i, (c, o, h, k, stride, count) in enumerate(RESNET20_LAYERS):
        s = ConvShape(batch, c, h, h, o, k, stride, (k - 1) // 2)
        ests = [e for e in estimate_layer(s, b) if i > 0 or e.op != "conv_bwd_data"]
        yield f"{c}>{o}, {h}, {k}/{stride}", count, s, ests


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--board", default=DEFAULT_BOARD, choices=names())
    p.add_argument("--batch", type=int, default=128)
    args = p.parse_args(argv)
    b = get_board(args.board)
    print(f"modeled (contract/cycles.py, not synthesized): e2t_engine on {b.name} at {b.clock_mhz:g} MHz, "
          f"{b.array_o}x{b.array_i} DSP array ({b.tile_o}x{b.tile_i} PSG tile, {b.axi_bits}-bit AXI beats), "
          f"batch {args.batch}, PSG worst case (every tile recomputed)")
    print(f"{'layer (c>o, h, k/s)':<24}{'op':<15}{'cycles':>14}{'ms':>10}{'array busy':>12}")
    total = 0.0
    for label, count, _, ests in resnet20(b, args.batch):
        for e in ests:
            total += count * e.seconds
            print(f"{f'{label} x{count}':<24}{e.op:<15}{e.cycles:>14,}{1e3 * e.seconds:>10.2f}"
                  f"{100 * e.utilization:>11.0f}%")
            if e.op == "conv_fwd" and not any(x.op == "conv_bwd_data" for x in ests):
                print(f"{f'{label} x{count}':<24}{'conv_bwd_data':<15}{'not run: the first conv has no input gradient':>47}")
    print(f"one training iteration of ResNet-20's convs: {total:.2f} s modeled")


if __name__ == "__main__":
    main()
