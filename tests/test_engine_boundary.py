"""Boundary walk of every register the engine accepts, on its three CPU builds ("ap", "native",
"fast"): each largest accepted value computed right and the next one refused with the right status
code, integers and exact counters only, never tolerances.

Every call goes through the register interface (``Engine.call``) on sentinel-filled buffers that
are longer than the op needs (``call``): an accepted op may write only the heads of its own
outputs, a refused one nothing at all (and leaves every counter at 0). Inputs carry sentinels past
their ends too, so a build reading beyond a buffer gets other integers. The limits are those of
the default board (hls/boards.py, checked by hls/src/e2t_checks.h); results are compared with the
numeric contract (contract/numerics.py) and, on small shapes, with the plain loops of tests/naive.py.

The ap build is the slowest by far: it gets the smallest shapes that still reach each limit, the
native and fast builds the largest buffers the board accepts.

The registers of the per-element ops (STATS, APPLY) are walked in tests/test_engine_per_element.py,
on the same sentinel buffers (``call``).
"""
import numpy as np
import pytest

import naive
from engines import BUILDS, IDS, make_engine
from hls import boards, regmap
from hls.csim import Engine
from contract import numerics as nx

BOARD = boards.board(boards.DEFAULT_BOARD)
OPS, MODES, STATUS = regmap.OPS, regmap.WGRAD_MODES, regmap.STATUS
NOP, FWD, BWD, WGRAD, UPDATE, STATS, APPLY = (OPS[k] for k in ("NOP", "CONV_FWD", "CONV_BWD_DATA", "CONV_WGRAD",
                                                                "UPDATE", "STATS", "APPLY"))
OK, BAD_OP, BAD_SHAPE, BAD_ARG = (STATUS[k] for k in ("OK", "BAD_OP", "BAD_SHAPE", "BAD_ARG"))
FULL, ABS, RATIO = (MODES[k] for k in ("FULL", "PSG_ABS", "PSG_RATIO"))
U32, U64 = (1 << 32) - 1, (1 << 64) - 1
MAXC, MAXH, MAXW, MAXK, MAXPAD = BOARD.max_c, BOARD.max_h, BOARD.max_w, BOARD.max_k, BOARD.max_pad
MAXN = BOARD.max_batch
MAXHO, MAXWO = BOARD.max_ho, BOARD.max_wo
MARGIN = 4096  # elements past the end of every buffer, all sentinels

PORTS = {r.name: nx.C_TYPES[r.ctype] for r in regmap.REGISTERS if r.kind == "ptr"}
SENTINEL = {np.int8: 0x5A, np.int16: 0x5A5A, np.int32: 0x5A5A5A5A, np.int64: 0x5A5A5A5A5A5A5A5A}
# The sentinels are no valid weight shift (90 > WSHIFT_MAX) nor sign: a build that reads wshift
# past c_out entries, or signs past count, refuses the call, which the tests would see.
assert SENTINEL[np.int8] > nx.WSHIFT_MAX


def test_board_is_the_one_these_limits_describe():
    assert (MAXC, MAXH, MAXW, MAXHO, MAXWO, MAXK, MAXPAD, MAXN) == (64, 32, 32, 32, 32, 3, 1, 256)
    assert (BOARD.tile_o, BOARD.tile_i) == (8, 8)


@pytest.fixture(scope="module", params=BUILDS, ids=IDS)
def engine(request):
    return make_engine(request.param)


def small(engine) -> bool:
    return engine.variant == "ap"


# -- calls on sentinel buffers -------------------------------------------------------------

def status(code=OK, sat=0, sure=0, tiles=0, recomputed=0) -> dict:
    return {"status": code, "saturations": sat, "psg_sure": sure, "psg_tiles": tiles, "psg_recomputed": recomputed}


def written_by(regs: dict) -> tuple:
    """The buffers an accepted op writes."""
    op = regs.get("op", 0)
    if op in (FWD, BWD):
        return ("out",)
    if op == WGRAD:
        return ("scratch",) if regs.get("mode", 0) == FULL else ("scratch", "sgn")
    if op == UPDATE:
        return ("master", "mom")
    if op == STATS:
        return ("stats",)
    if op == APPLY:
        out = (regs.get("mode", 0) >> regmap.APPLY_FIELDS["OUT"][0]) & 3
        return ("dst8", "dst16", "out")[out], "stats"
    return ()


def call(engine, regs: dict, data: dict | None = None, sizes: dict | None = None) -> tuple[dict, dict]:
    """One engine call. Every port gets max(sizes[name], len(data[name])) elements (data at the
    head, sentinels elsewhere) plus MARGIN sentinels. Asserts that only the heads of the op's
    outputs changed (nothing at all when refused, with all counters 0). Returns (status
    registers, {port: head after the call})."""
    data, sizes = data or {}, dict(sizes or {})
    bufs = {}
    for name, dt in PORTS.items():
        head = None if name not in data else np.asarray(data[name]).ravel()
        n = max(sizes.get(name, 0), 0 if head is None else head.size)
        sizes[name] = n
        a = np.full(n + MARGIN, SENTINEL[dt], dt)
        if head is not None:
            assert head.size == 0 or (head.min() >= np.iinfo(dt).min and head.max() <= np.iinfo(dt).max), name
            a[:head.size] = head
        bufs[name] = a
    before = {k: v.copy() for k, v in bufs.items()}
    st = engine.call(regs, bufs)
    outputs = written_by(regs) if st["status"] == OK else ()
    for name, a in bufs.items():
        start = sizes[name] if name in outputs else 0
        changed = np.flatnonzero(a[start:] != before[name][start:])
        assert changed.size == 0, (f"{engine.variant}: {name}[{start + changed[0]}] written ({changed.size} elements) "
                                   f"by {regs} -> {st}")
    if st["status"] != OK:
        assert st == status(st["status"]), st
    return st, {k: v[:sizes[k]] for k, v in bufs.items()}


def conv_regs(op: int, shape, **extra) -> dict:
    n, c, o, h, w, k, s, p = shape
    return {"op": op, "batch": n, "c_in": c, "h_in": h, "w_in": w, "c_out": o, "kernel": k, "stride": s, "pad": p,
            **extra}


def out_hw(shape) -> tuple[int, int]:
    n, c, o, h, w, k, s, p = shape
    return (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1


def refuse(engine, op: int, shape, code: int, rng=None, data: dict | None = None, **extra) -> None:
    """A conv call the engine must refuse with ``code``, on valid-looking operands in buffers
    sized for the shape as if it ran (register values far past the limits are capped)."""
    rng = rng or np.random.default_rng(0)
    n, c, o, h, w, k, s, p = (min(v, cap) for v, cap in zip(shape, (MAXN + 1, MAXC + 1, MAXC + 1, MAXH + 1,
                                                                     MAXW + 1, MAXK + 1, 3, MAXPAD + 1)))
    ho, wo = (max(1, v) for v in out_hw((n, c, o, h, w, k, max(s, 1), p)))
    img, pix, wts = n * c * h * w, n * o * ho * wo, o * c * k * k
    base = {"act": rng.integers(-128, 128, img), "wgt": rng.integers(-128, 128, wts), "wshift": rng.integers(0, 20, o),
            "grad": rng.integers(-32768, 32768, pix), "sgn": rng.integers(-1, 2, wts)}
    base.update(data or {})
    st, _ = call(engine, conv_regs(op, shape, **extra), base, {"out": max(img, pix), "scratch": wts})
    assert st == status(code), (engine.variant, shape, extra, st)


def refuse_all(engine, shape, code=BAD_SHAPE, **extra) -> None:
    """``shape`` refused by every conv op (all three weight-gradient modes)."""
    for op, more in ((FWD, {}), (BWD, {}), (WGRAD, {"mode": FULL}), (WGRAD, {"mode": ABS, "threshold": 5}),
                     (WGRAD, {"mode": RATIO, "threshold": 1 << 15})):
        refuse(engine, op, shape, code, **more, **extra)


# -- accepted convs against the contract --------------------------------------------------

def operands(rng, shape):
    n, c, o, h, w, k, s, p = shape
    ho, wo = out_hw(shape)
    x = rng.integers(-128, 128, (n, c, h, w))
    wq = rng.integers(-128, 128, (o, c, k, k))
    g = rng.integers(-32768, 32768, (n, o, ho, wo))
    return x, wq, g, rng.integers(0, 20, o)


def fwd(engine, shape, x, wq, shift=None, want=None, sat=0):
    """CONV_FWD through the registers: y equal to the contract (or ``want``) and ``sat`` clipped."""
    n, c, o, h, w, k, s, p = shape
    ho, wo = out_hw(shape)
    if shift is None:
        want, shift = nx.conv_fwd(x, wq, s, p)
    st, b = call(engine, conv_regs(FWD, shape, shift=shift), {"act": x, "wgt": wq}, {"out": n * o * ho * wo})
    assert st == status(sat=sat), (engine.variant, shape, st)
    assert np.array_equal(b["out"].reshape(n, o, ho, wo), want), (engine.variant, shape, shift)
    return want


def bwd(engine, shape, g, wq, shifts, shift=None, want=None, sat=0):
    """CONV_BWD_DATA through the registers: g_x equal to the contract (or ``want``)."""
    n, c, o, h, w, k, s, p = shape
    if shift is None:
        want, shift, _ = nx.conv_bwd_data(g, wq, shifts, s, p, (h, w))
    st, b = call(engine, conv_regs(BWD, shape, shift=shift), {"grad": g, "wgt": wq, "wshift": shifts},
                 {"out": n * c * h * w})
    assert st == status(sat=sat), (engine.variant, shape, st)
    assert np.array_equal(b["out"].reshape(n, c, h, w), want), (engine.variant, shape, shift)
    return want


def wgrad_full(engine, shape, x, g, threshold=0):
    n, c, o, h, w, k, s, p = shape
    want = nx.conv_wgrad(x, g, k, s, p, 128)
    st, b = call(engine, conv_regs(WGRAD, shape, mode=FULL, threshold=threshold), {"act": x, "grad": g},
                 {"scratch": want.size, "sgn": want.size})
    assert st == status(), (engine.variant, shape, st)
    assert np.array_equal(b["scratch"].reshape(want.shape), want), (engine.variant, shape)
    return want


def psg(engine, shape, x, g, mode, threshold, g_msb=None, g_full=None):
    """CONV_WGRAD in a PSG mode: scratch = G_msb, the contract's signs and the kernel's tile counts."""
    n, c, o, h, w, k, s, p = shape
    g_msb = nx.conv_wgrad(nx.msb(x), g, k, s, p, 8) if g_msb is None else g_msb
    g_full = nx.conv_wgrad(x, g, k, s, p, 128) if g_full is None else g_full
    want, sure = nx.psg_select(g_msb, g_full, **({"T": threshold} if mode == ABS else {"R": threshold}))
    tiles, recomputed, _ = nx.uncertain_tiles(sure, BOARD.tile_o, BOARD.tile_i)
    st, b = call(engine, conv_regs(WGRAD, shape, mode=mode, threshold=threshold), {"act": x, "grad": g},
                 {"scratch": g_msb.size, "sgn": g_msb.size})
    assert st == status(sure=int(sure.sum()), tiles=tiles, recomputed=recomputed), (engine.variant, shape, mode,
                                                                                    threshold, st)
    assert np.array_equal(b["scratch"].reshape(g_msb.shape), g_msb), (engine.variant, shape, mode)
    assert np.array_equal(b["sgn"].reshape(want.shape), want), (engine.variant, shape, mode, threshold)
    return sure


def check_conv(engine, shape, seed=0, loops=False):
    """Every conv op and weight-gradient mode on ``shape``, equal to the contract; with ``loops``
    the contract's integers are checked against the plain loops of tests/naive.py as well."""
    rng = np.random.default_rng(seed)
    n, c, o, h, w, k, s, p = shape
    x, wq, g, shifts = operands(rng, shape)
    y = fwd(engine, shape, x, wq)
    gx = bwd(engine, shape, g, wq, shifts)
    g_full = wgrad_full(engine, shape, x, g)
    g_msb = nx.conv_wgrad(nx.msb(x), g, k, s, p, 8)
    T = int(np.median(np.abs(g_msb)))
    psg(engine, shape, x, g, ABS, T, g_msb, g_full)
    psg(engine, shape, x, g, RATIO, nx.ratio_fixed(0.3), g_msb, g_full)
    if loops:
        r = nx.out_shift(nx.fwd_bound(wq))
        assert np.array_equal(y, nx.rshift_round(naive.conv_acc(x, wq, s, p), r))
        w_al, _ = nx.aligned_weights(wq, shifts)
        r = nx.out_shift(nx.bwd_data_bound(g, w_al))
        assert np.array_equal(gx, nx.rshift_round(naive.conv_bwd_acc(g, w_al, s, p, (h, w)), r))
        assert np.array_equal(g_full, naive.wgrad_acc(x, g, k, s, p))
        assert np.array_equal(g_msb, naive.wgrad_acc(nx.msb(x), g, k, s, p))


# -- NOP and op codes ---------------------------------------------------------------------

def test_nop_is_ok_and_writes_nothing(engine):
    st, _ = call(engine, {"op": NOP})
    assert st == status()
    garbage = {"op": NOP, "mode": U32, "batch": U32, "c_in": 0, "h_in": U32, "w_in": 0, "c_out": U32, "kernel": 99,
               "stride": 0, "pad": U32, "shift": U32, "threshold": U64, "count": 1000, "e_w": -(1 << 31),
               "lr": U64, "wd": U64, "mu": U32, "shift2": U32}
    st, _ = call(engine, garbage, {"sgn": np.full(1000, 7), "wshift": np.full(64, -1), "coef": np.full(3, -1 << 63)},
                 {"master": 1000, "mom": 1000, "out": 1000, "scratch": 1000, "dst8": 1000, "stats": 1000})
    assert st == status()


@pytest.mark.parametrize("op", [APPLY + 1, 255, 1 << 31, U32])
def test_unknown_op_is_refused(engine, op):
    refuse(engine, op, (1, 4, 2, 4, 4, 3, 1, 1), BAD_OP)
    refuse(engine, op, (MAXN + 1, MAXC + 1, 0, 0, MAXW + 1, 9, 3, 5), BAD_OP, shift=U32, mode=U32, threshold=U64,
           e_w=99)


def test_refusal_precedence(engine):
    """BAD_OP before BAD_SHAPE before BAD_ARG, as check_call orders them."""
    bad_shape = (1, MAXC + 1, 2, 4, 4, 3, 1, 1)
    refuse(engine, FWD, bad_shape, BAD_SHAPE, shift=63)
    refuse(engine, BWD, bad_shape, BAD_SHAPE, data={"wshift": np.full(2, nx.WSHIFT_MAX + 1)})
    refuse(engine, WGRAD, bad_shape, BAD_SHAPE, mode=3, threshold=U64)


# -- shape registers ------------------------------------------------------------------------

def test_batch_limit(engine):
    accepted = (MAXN, 1, 2, 2, 2, 3, 1, 1) if small(engine) else (MAXN, 9, 5, 4, 4, 3, 1, 1)
    check_conv(engine, accepted, seed=1)
    if not small(engine):  # the whole batch at the largest channel counts
        check_conv(engine, (MAXN, MAXC, MAXC, 2, 2, 3, 1, 1), seed=2)
    for n in (MAXN + 1, 0, 1 << 31, U32):
        refuse_all(engine, (n, 1, 1, 1, 1, 1, 1, 0))


def test_channel_limits(engine):
    h = 3 if small(engine) else 9
    for shape in ((1, MAXC, 3, h, h, 3, 1, 1), (1, 3, MAXC, h, h, 3, 1, 1), (1, MAXC, MAXC, 3, 3, 3, 1, 1)):
        check_conv(engine, shape, seed=shape[1] + shape[2])
    for c, o in ((MAXC + 1, 1), (1, MAXC + 1), (MAXC + 1, MAXC + 1), (0, 1), (1, 0), (U32, 1), (1, U32)):
        refuse_all(engine, (1, c, o, 3, 3, 3, 1, 1))


def test_height_and_width_limits(engine):
    """H and W up to 32 each (k = 3, pad 1: a 32-pixel output row or column), 33 refused even
    where stride 2 would keep the output map small."""
    c, o = (1, 1) if small(engine) else (5, 9)
    for h, w in ((MAXH, 3), (3, MAXW), (MAXH, MAXW)):
        for s in (1, 2):
            check_conv(engine, (1, c, o, h, w, 3, s, 1), seed=h + w + s, loops=small(engine))
    for h, w in ((MAXH + 1, 3), (3, MAXW + 1), (MAXH + 1, MAXW + 1), (0, 3), (3, 0), (U32, 3), (3, U32)):
        for s in (1, 2):
            refuse_all(engine, (1, c, o, h, w, 3, s, 1))


def test_kernel_limit(engine):
    for k in range(1, MAXK + 1):
        check_conv(engine, (2, 3, 4, 6, 5, k, 1, k // 2), seed=k, loops=True)
    for k in (MAXK + 1, 0, 1 << 31, U32):
        refuse_all(engine, (1, 2, 3, 8, 8, k, 1, 1))


def test_pad_limit(engine):
    for p in range(MAXPAD + 1):
        check_conv(engine, (2, 3, 4, 5, 4, 3, 1, p), seed=10 + p, loops=True)
    for p in (MAXPAD + 1, 1 << 31, U32):  # 4 x 4 at pad 2: a 6 x 6 output, only the pad is wrong
        refuse_all(engine, (1, 2, 3, 4, 4, 3, 1, p))


def test_stride_limit(engine):
    for s in (1, 2):
        check_conv(engine, (2, 3, 4, 7, 6, 3, s, 1), seed=20 + s, loops=True)
    for s in (0, 3, 4, 1 << 31, U32):
        refuse_all(engine, (1, 2, 3, 8, 8, 3, s, 1))


def test_kernel_larger_than_padded_input(engine):
    for shape in ((1, 2, 3, 1, 5, 3, 1, 0), (1, 2, 3, 5, 2, 3, 1, 0), (1, 2, 3, 1, 1, 2, 1, 0),
                  (1, 2, 3, 2, 2, 3, 2, 0), (1, 2, 3, 1, 4, 2, 2, 0)):
        refuse_all(engine, shape)
    # the window just fits the padded input: 1 x 1 or 2 x 2 outputs
    for h, w, k, s, p in ((1, 1, 3, 1, 1), (1, 1, 3, 2, 1), (2, 2, 2, 1, 0), (3, 3, 3, 2, 0), (1, 1, 2, 1, 1),
                          (1, 1, 1, 2, 1), (3, 3, 3, 1, 0)):
        check_conv(engine, (2, 3, 4, h, w, k, s, p), seed=h + w + k + s + p, loops=True)


# -- the output map ---------------------------------------------------------------------------

# (H, W, k, pad) whose stride-1 output map is exactly MAXHO x MAXWO, or one side of it.
AT_LIMIT = [(MAXH, MAXW, 3, 1), (MAXH - 1, MAXW - 1, 2, 1), (MAXH - 2, MAXW - 2, 1, 1), (MAXH, MAXW, 1, 0),
            (MAXH, 3, 3, 1), (2, MAXW - 1, 2, 1), (MAXH - 2, 1, 1, 1), (1, MAXW, 1, 0)]


@pytest.mark.parametrize("h, w, k, p", AT_LIMIT)
def test_output_map_at_the_limit_is_computed(engine, h, w, k, p):
    shape = (1, 3, 2, h, w, k, 1, p) if small(engine) else (2, 9, 11, h, w, k, 1, p)
    assert max(out_hw(shape)) == MAXHO
    check_conv(engine, shape, seed=h * 64 + w + k, loops=small(engine))


# (H, W, k, pad): one output side MAXHO + 1 (or MAXWO + 1) with H, W within their limits.
PAST_LIMIT = [(MAXH - 1, MAXW - 1, 1, 1), (MAXH - 1, 4, 1, 1), (4, MAXW - 1, 1, 1), (MAXH, MAXW, 2, 1), (MAXH, 3, 2, 1),
              (3, MAXW, 2, 1), (MAXH - 1, MAXW - 2, 1, 1), (MAXH, MAXW - 1, 2, 1)]


@pytest.mark.parametrize("h, w, k, p", PAST_LIMIT)
def test_output_map_past_the_limit_is_refused(engine, h, w, k, p):
    shape = (1, 1, 1, h, w, k, 1, p)
    assert max(out_hw(shape)) == MAXHO + 1 and h <= MAXH and w <= MAXW
    refuse_all(engine, shape)
    refuse_all(engine, (2, 9, 11, h, w, k, 1, p))
    # stride 2 halves the same map: accepted
    check_conv(engine, (1, 1, 1, h, w, k, 2, p), seed=h + w, loops=True)


def test_output_map_33_refused_32_computed(engine):
    refuse_all(engine, (1, 1, 1, 31, 31, 1, 1, 1))  # 33 x 33
    refuse_all(engine, (1, 1, 1, 32, 32, 2, 1, 1))  # k = 2, pad 1 at 32 x 32: 33 x 33
    check_conv(engine, (1, 1, 1, 30, 30, 1, 1, 1), seed=3, loops=True)  # 32 x 32
    check_conv(engine, (1, 1, 1, 31, 31, 2, 1, 1), seed=4, loops=True)  # 32 x 32


# -- even kernels ------------------------------------------------------------------------------

@pytest.mark.parametrize("s", [1, 2])
@pytest.mark.parametrize("p", [0, 1])
def test_even_kernel(engine, s, p):
    shapes = [(2, 3, 5, 7, 9, 2, s, p), (1, 9, 17, 5, 3, 2, s, p), (3, 1, 1, 2, 3, 2, s, p)]
    if not small(engine):
        shapes += [(2, 17, 9, 31, 29, 2, s, p), (2, MAXC, MAXC, MAXH - 1, MAXW - 1, 2, s, p)]
    for i, shape in enumerate(shapes):
        check_conv(engine, shape, seed=100 * s + 10 * p + i, loops=i < 3)


# -- the largest buffers and the widest sums -------------------------------------------------------

def test_largest_buffers(engine):
    """C = O = 64, H = W = 32, k = 3, pad 1, at stride 1 and 2: the largest buffers the board
    takes short of the full batch (native and fast: 4 images; ap: 1 image at stride 1, whose
    output map is the largest: its widths are those of native's arithmetic, which takes both)."""
    n = 1 if small(engine) else 4
    for s in (1,) if small(engine) else (1, 2):
        check_conv(engine, (n, MAXC, MAXC, MAXH, MAXW, MAXK, s, MAXPAD), seed=30 + s)


def test_widest_forward_sums(engine):
    """All -128 operands: every interior sum is 128 * 128 * C k^2, the forward accumulator's widest;
    at shift 0 the integers themselves come out, and never saturate."""
    shape = (1, MAXC, 8, 3, 3, 3, 1, 1) if small(engine) else (4, MAXC, MAXC, MAXH, MAXW, 3, 1, 1)
    n, c, o, h, w, k, s, p = shape
    x = np.full((n, c, h, w), -128)
    for wv in (-128, 127):  # the largest sums, then the most negative ones
        wq = np.full((o, c, k, k), wv)
        acc = naive.conv_acc(x, wq, s, p) if small(engine) else _fwd_sum(x, wq, s, p)
        assert np.abs(acc).max() == 128 * abs(wv) * c * k * k
        fwd(engine, shape, x, wq, shift=0, want=acc)
        fwd(engine, shape, x, wq)


def _fwd_sum(x, wq, s, p):
    """Exact int64 forward sums by im2col (the contract's, at shift 0)."""
    cols, ho, wo = nx._cols(x, wq.shape[2], s, p)
    acc = (cols @ wq.reshape(len(wq), -1).T.astype(np.float64)).astype(np.int64)
    return acc.reshape(len(x), ho, wo, len(wq)).transpose(0, 3, 1, 2)


@pytest.mark.parametrize("pattern", ["aligned", "tight", "mixed"])
def test_widest_backward_sums(engine, pattern):
    """g = -32768 on weights -128 aligned up by 2^12 (|W_al| = 2^19): the backward accumulator's
    widest sums. "tight": every product of one sign, W_al = -2^19 or 127 * 2^7, so the weights
    share only the factor 2^7 (the worst case for sums split into int32 chunks of W_al / 2^7, as
    the fast build does); "mixed": odd weights and spread shifts, no common factor. At shift 0
    every clipped value is counted."""
    shape = (1, 8, MAXC, 3, 3, 3, 1, 1) if small(engine) else (4, MAXC, MAXC, MAXH, MAXW, 3, 1, 1)
    n, c, o, h, w, k, s, p = shape
    ho, wo = out_hw(shape)
    g = np.full((n, o, ho, wo), -32768)
    wq = np.full((o, c, k, k), -128)
    shifts = np.full(o, 7)
    if pattern == "tight":
        wq[1::2], shifts[0::2], shifts[1::2], g[:, 1::2] = 127, 12, 7, 32767
    if pattern == "mixed":
        wq[1::3], wq[2::3] = 127, -127
        shifts = np.resize([19, 0, 5, 19, 7, 12, 0, 3], o)
    bwd(engine, shape, g, wq, shifts)
    w_al, _ = nx.aligned_weights(wq, shifts)
    acc = naive.conv_bwd_acc(g, w_al, s, p, (h, w)) if small(engine) else _bwd_sum(g, w_al, s, p, (h, w))
    if pattern == "aligned":
        assert np.abs(w_al).max() == 1 << 19 and acc.max() == 32768 * (1 << 19) * o * k * k
    clipped, count = nx.OUT.saturate(acc)
    assert count > 0
    bwd(engine, shape, g, wq, shifts, shift=0, want=clipped, sat=count)
    bwd(engine, shape, -g - 1, wq, shifts)  # 32767


def _bwd_sum(g, w_al, s, p, in_hw):
    """Exact transposed conv sums (the contract's scatter at shift 0; all below 2^53)."""
    n, o, ho, wo = g.shape
    _, c, k, _ = w_al.shape
    h, w = in_hw
    contrib = (g.transpose(0, 2, 3, 1).reshape(-1, o).astype(np.float64) @ w_al.reshape(o, -1).astype(np.float64))
    contrib = contrib.reshape(n, ho, wo, c, k, k)
    gx = np.zeros((n, c, h + 2 * p, w + 2 * p))
    for kh in range(k):
        for kw in range(k):
            gx[:, :, kh:kh + s * ho:s, kw:kw + s * wo:s] += contrib[..., kh, kw].transpose(0, 3, 1, 2)
    return gx[:, :, p:p + h, p:p + w].astype(np.int64)


def test_widest_weight_gradient_sums(engine):
    """x = -128, g = -32768 over the full batch at a 32 x 32 output map: N Ho Wo = 2^18 terms of
    2^22, weight-gradient sums of 2^40 (2^36 for the predictor), in every mode (ap: full, a
    predictor pass and a recompute of every tile; native is the same code at wider types)."""
    shape = (MAXN, 1, 1, MAXH, MAXW, 1, 1, 0) if small(engine) else (MAXN, 4, 4, MAXH, MAXW, 3, 1, 1)
    n, c, o, h, w, k, s, p = shape
    ho, wo = out_hw(shape)
    x, g = np.full((n, c, h, w), -128), np.full((n, o, ho, wo), -32768)
    g_full = wgrad_full(engine, shape, x, g)
    assert g_full.max() == 128 * 32768 * n * ho * wo == 1 << 40
    g_msb = nx.conv_wgrad(nx.msb(x), g, k, s, p, 8)
    assert g_msb.max() == 1 << 36
    modes = ((ABS, 1 << 36), (ABS, (1 << 36) + 1), (ABS, 1 << 62), (RATIO, 1 << 16), (RATIO, (1 << 16) - 1),
             (RATIO, 0))
    # ap: the sums' widths (a predictor pass with every entry sure at the edge, one with every tile
    # recomputed); the thresholds' other sides are the same code in every build
    for mode, thr in modes[:2] if small(engine) else modes:
        psg(engine, shape, x, g, mode, thr, g_msb, g_full)
    g = np.where(np.arange(ho * wo).reshape(ho, wo) % 2, 32767, -32768) * np.ones((n, o, 1, 1), np.int64)
    for xv in (-128,) if small(engine) else (-128, 127):
        x = np.full((n, c, h, w), xv)
        g_full = wgrad_full(engine, shape, x, g)
        psg(engine, shape, x, g, RATIO, nx.ratio_fixed(0.5), None, g_full)


# -- the shift register --------------------------------------------------------------------------

def test_shift_register_rounds_every_shift(engine):
    """Forward sums -128..127 and backward sums -2^27..2^27 (ties of every sign included) at every
    shift 0..62; 63 and above refused by both ops."""
    x = np.arange(-128, 128).reshape(1, 1, 16, 16)
    one = np.ones((1, 1, 1, 1), np.int64)
    g = np.arange(-32768, 32768, 256)
    g[1], g[2], g[-1] = -1, 1, 32767
    g = g.reshape(1, 1, 16, 16)
    shape = (1, 1, 1, 16, 16, 1, 1, 0)
    for r in range(63):
        want = np.array([naive.rshift_round(int(v), r) for v in x.ravel()]).reshape(x.shape)
        fwd(engine, shape, x, one, shift=r, want=want)
        want = np.array([naive.rshift_round(int(v) << 12, r) for v in g.ravel()]).reshape(g.shape)
        bwd(engine, shape, g, one, np.array([0]), shift=r, want=want)
    for r in (63, 64, 1 << 31, U32):
        refuse(engine, FWD, shape, BAD_ARG, shift=r)
        refuse(engine, BWD, shape, BAD_ARG, shift=r)


def test_shift_register_on_random_convs(engine):
    rng = np.random.default_rng(40)
    shape = (2, 9, 10, 5, 6, 3, 1, 1)
    x, wq, g, shifts = operands(rng, shape)
    acc = naive.conv_acc(x, wq, 1, 1)
    w_al, _ = nx.aligned_weights(wq, shifts)
    bacc = naive.conv_bwd_acc(g, w_al, 1, 1, (5, 6))
    for r in (0, 1, 2, 7, 15, 16, 23, 24, 30, 31, 32, 33, 47, 61, 62):
        fwd(engine, shape, x, wq, shift=r, want=nx.rshift_round(acc, r))
        clipped, count = nx.OUT.saturate(nx.rshift_round(bacc, r))
        bwd(engine, shape, g, wq, shifts, shift=r, want=clipped, sat=count)


def test_registers_an_op_does_not_read_are_ignored(engine):
    """shift, mode, threshold and the update registers at their largest values do not change a
    conv that does not read them; UPDATE ignores every conv register."""
    rng = np.random.default_rng(50)
    shape = (2, 3, 4, 5, 5, 3, 1, 1)
    x, wq, g, shifts = operands(rng, shape)
    junk = {"count": U32, "e_w": -(1 << 31), "lr": U64, "wd": U64, "mu": U32}
    y, r = nx.conv_fwd(x, wq, 1, 1)
    st, b = call(engine, conv_regs(FWD, shape, shift=r, mode=U32, threshold=U64, **junk), {"act": x, "wgt": wq},
                 {"out": y.size})
    assert st == status() and np.array_equal(b["out"], y.ravel())
    gx, r, _ = nx.conv_bwd_data(g, wq, shifts, 1, 1, (5, 5))
    st, b = call(engine, conv_regs(BWD, shape, shift=r, mode=U32, threshold=U64, **junk),
                 {"grad": g, "wgt": wq, "wshift": shifts}, {"out": gx.size})
    assert st == status() and np.array_equal(b["out"], gx.ravel())
    G = nx.conv_wgrad(x, g, 3, 1, 1, 128)
    st, b = call(engine, conv_regs(WGRAD, shape, mode=FULL, shift=U32, **junk), {"act": x, "grad": g},
                 {"scratch": G.size, "sgn": G.size})
    assert st == status() and np.array_equal(b["scratch"], G.ravel())
    w, buf, sign = naive.update_operands(51, 100)
    k = nx.UpdateConstants.from_floats(0.1, 1e-4, 0.9)
    w_ref, buf_ref, sat = nx.sign_update(w, -20, buf, sign, k)
    regs = {"op": UPDATE, "count": 100, "e_w": -20, "lr": k.LR, "wd": k.WD, "mu": k.MU, "mode": U32, "batch": 0,
            "c_in": U32, "h_in": 0, "w_in": U32, "c_out": 0, "kernel": 99, "stride": 0, "pad": U32, "shift": U32,
            "threshold": U64}
    st, b = call(engine, regs, {"master": w, "mom": buf, "sgn": sign})
    assert st == status(sat=sat) and np.array_equal(b["master"], w_ref) and np.array_equal(b["mom"], buf_ref)


# -- the weight-shift buffer of CONV_BWD_DATA -------------------------------------------------------

def test_weight_shifts(engine):
    rng = np.random.default_rng(60)
    shape = (2, 3, 6, 5, 4, 3, 1, 1)
    _, wq, g, _ = operands(rng, shape)
    S = nx.WSHIFT_MAX
    for shifts in ([0] * 6, [S] * 6, [S, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, S], [0, S, 12, 19, 13, 11],
                   [S, S - 12, S - 13, S - 19, S - 20, 0]):
        shifts = np.array(shifts)
        want = bwd(engine, shape, g, wq, shifts)
        w_al, _ = nx.aligned_weights(wq, shifts)
        r = nx.out_shift(nx.bwd_data_bound(g, w_al))
        assert np.array_equal(want, nx.rshift_round(naive.conv_bwd_acc(g, w_al, 1, 1, (5, 4)), r))
    for bad in (S + 1, -1, 127, -128):
        for at in (0, 5):
            shifts = np.zeros(6, np.int64)
            shifts[at] = bad
            refuse(engine, BWD, shape, BAD_ARG, data={"wshift": shifts})


# -- the threshold and mode registers of CONV_WGRAD ---------------------------------------------------

def test_psg_threshold_limits(engine):
    rng = np.random.default_rng(70)
    shape = (2, 11, 13, 6, 6, 3, 1, 1)
    x, _, g, _ = operands(rng, shape)
    g_msb = nx.conv_wgrad(nx.msb(x), g, 3, 1, 1, 8)
    g_full = nx.conv_wgrad(x, g, 3, 1, 1, 128)
    amax = int(np.abs(g_msb).max())
    for T in (0, 1, int(np.median(np.abs(g_msb))), amax, amax + 1, (1 << 62) - 1, 1 << 62):
        psg(engine, shape, x, g, ABS, T, g_msb, g_full)
    for R in (0, 1, 1 << 15, (1 << 16) - 1, 1 << 16):
        psg(engine, shape, x, g, RATIO, R, g_msb, g_full)
    wgrad_full(engine, shape, x, g, threshold=1 << 62)  # FULL reads no threshold, but checks its range
    for mode, thr in ((ABS, (1 << 62) + 1), (ABS, U64), (RATIO, (1 << 16) + 1), (RATIO, 1 << 62), (RATIO, U64),
                      (FULL, (1 << 62) + 1), (FULL, U64), (3, 0), (4, 5), (U32, 0)):
        refuse(engine, WGRAD, shape, BAD_ARG, mode=mode, threshold=thr)


def test_psg_with_a_silent_predictor(engine):
    """|x| <= 8 rounds to x_msb = 0: G_msb is all 0, so T = 0 and any ratio trust it (signs 0),
    T = 1 recomputes every tile."""
    rng = np.random.default_rng(80)
    shape = (2, 10, 9, 5, 5, 3, 1, 1)
    _, _, g, _ = operands(rng, shape)
    x = rng.integers(-8, 8, (2, 10, 5, 5))
    assert not nx.msb(x).any()
    g_full = nx.conv_wgrad(x, g, 3, 1, 1, 128)
    zero = np.zeros_like(g_full)
    assert psg(engine, shape, x, g, ABS, 0, zero, g_full).all()
    assert not psg(engine, shape, x, g, ABS, 1, zero, g_full).any()
    for R in (0, 1, 1 << 16):
        assert psg(engine, shape, x, g, RATIO, R, zero, g_full).all()


# -- UPDATE --------------------------------------------------------------------------------------

def update(engine, w, buf, sign, e_w, LR, WD, MU, count=None):
    k = nx.UpdateConstants(LR, WD, MU)
    w_ref, buf_ref, sat = nx.sign_update(w, e_w, buf, sign, k)
    regs = {"op": UPDATE, "count": len(w) if count is None else count, "e_w": e_w, "lr": LR, "wd": WD, "mu": MU}
    st, b = call(engine, regs, {"master": w, "mom": buf, "sgn": sign})
    assert st == status(sat=sat), (engine.variant, e_w, LR, WD, MU, st, sat)
    assert np.array_equal(b["master"], w_ref) and np.array_equal(b["mom"], buf_ref), (engine.variant, e_w, LR, WD, MU)
    return sat


LR_MAX, WD_MAX, MU_MAX = (1 << 31) - 1, (1 << 31) - 1, (1 << 16) - 1


@pytest.mark.parametrize("e_w", [nx.MASTER_EXP_MIN, nx.MASTER_EXP_MIN + 1, -24, 0, nx.MASTER_EXP_MAX - 1,
                                 nx.MASTER_EXP_MAX])
def test_update_exponent_and_constants_at_their_limits(engine, e_w):
    w, buf, sign = naive.update_operands(90 + e_w, 500)
    for LR, WD, MU in ((LR_MAX, WD_MAX, MU_MAX), (LR_MAX, 0, 0), (0, WD_MAX, 0), (0, 0, MU_MAX), (0, 0, 0), (1, 1, 1),
                       (429496730, 429497, 58982)):
        update(engine, w, buf, sign, e_w, LR, WD, MU)
    extremes = np.array([-2**31, 2**31 - 1, -2**31, 2**31 - 1, 0, -1, 1, -2**31, 2**31 - 1])
    buf_x = np.array([-2**31, 2**31 - 1, 2**31 - 1, -2**31, -2**31, 2**31 - 1, 0, 0, -1])
    for s in (-1, 0, 1):
        update(engine, extremes, buf_x, np.full(9, s), e_w, LR_MAX, WD_MAX, MU_MAX)


def test_update_register_refusals(engine):
    w, buf, sign = naive.update_operands(99, 64)
    ok = {"e_w": -24, "lr": 429496730, "wd": 429497, "mu": 58982}
    for bad in ({"e_w": nx.MASTER_EXP_MIN - 1}, {"e_w": nx.MASTER_EXP_MAX + 1}, {"e_w": -(1 << 31)},
                {"e_w": (1 << 31) - 1}, {"lr": 1 << 31}, {"lr": 1 << 32}, {"lr": U64}, {"wd": 1 << 31}, {"wd": U64},
                {"mu": 1 << 16}, {"mu": U32}):
        regs = {"op": UPDATE, "count": 64, **ok, **bad}
        st, _ = call(engine, regs, {"master": w, "mom": buf, "sgn": sign})  # call: master, mom unchanged
        assert st == status(BAD_ARG), (engine.variant, bad, st)


def test_update_count(engine):
    """count 0 writes nothing; count 1; more weights than the board's largest layer (where the
    fast build threads); a count below the buffers' length."""
    w, buf, sign = naive.update_operands(100, 300000)
    k = (429496730, 429497, 58982)
    st, b = call(engine, {"op": UPDATE, "count": 0, "e_w": -24, "lr": k[0], "wd": k[1], "mu": k[2]},
                 {"sgn": np.full(8, 2)}, {"master": 0, "mom": 0})  # nothing read: signs 2 are not seen
    assert st == status()
    update(engine, w[:1], buf[:1], sign[:1], -24, *k)
    assert update(engine, w, buf, sign, -24, *k) > 0
    # count below the buffers' length: the rest stays as it was, and signs past count are not read
    n = 37
    sign_bad_tail = np.concatenate([sign[:n], [2, -2, 127]])
    w_ref, buf_ref, sat = nx.sign_update(w[:n], -24, buf[:n], sign[:n], nx.UpdateConstants(*k))
    st, b = call(engine, {"op": UPDATE, "count": n, "e_w": -24, "lr": k[0], "wd": k[1], "mu": k[2]},
                 {"master": w[:n], "mom": buf[:n], "sgn": sign_bad_tail})
    assert st == status(sat=sat) and np.array_equal(b["master"], w_ref) and np.array_equal(b["mom"], buf_ref)


@pytest.mark.parametrize("bad", [-2, 2, 3, -3, 127, -128])
def test_update_refuses_signs_outside_minus_one_to_one(engine, bad):
    w, buf, sign = naive.update_operands(110, 300)
    for at in (0, 150, 299):
        s = sign.copy()
        s[at] = bad
        regs = {"op": UPDATE, "count": 300, "e_w": -24, "lr": LR_MAX, "wd": WD_MAX, "mu": MU_MAX}
        st, _ = call(engine, regs, {"master": w, "mom": buf, "sgn": s})  # call: master, mom unchanged
        assert st == status(BAD_ARG), (engine.variant, bad, at, st)


def test_update_accepts_every_valid_sign(engine):
    w, buf, _ = naive.update_operands(120, 3 * 200)
    sign = np.repeat([-1, 0, 1], 200)
    update(engine, w, buf, sign, -30, LR_MAX, WD_MAX, MU_MAX)


# -- out_shift counts the rounding half ---------------------------------------------------------------

def test_out_shift_counter_example(engine):
    """CONV_BWD_DATA N = C = H = W = k = 1, O = 2, W_q = [48, 3], shifts [12, 0], g = 21845: the sum
    is 2^32 - 1, exactly the bound; r = 1 would round it to 2^31 and saturate, r = 2 does not."""
    shape = (1, 1, 2, 1, 1, 1, 1, 0)
    wq = np.array([48, 3]).reshape(2, 1, 1, 1)
    shifts = np.array([12, 0])
    g = np.full((1, 2, 1, 1), 21845)
    w_al, _ = nx.aligned_weights(wq, shifts)
    bound = nx.bwd_data_bound(g, w_al)
    assert bound == (1 << 32) - 1 and nx.out_shift(bound) == 2
    bwd(engine, shape, g, wq, shifts, shift=2, want=np.full((1, 1, 1, 1), 1 << 30))
    bwd(engine, shape, g, wq, shifts, shift=1, want=np.full((1, 1, 1, 1), (1 << 31) - 1), sat=1)
    gx, r, st = engine.conv_bwd_data(g, wq, shifts, 1, 0, (1, 1))
    assert r == 2 and st["saturations"] == 0 and gx.tolist() == [[[[1 << 30]]]]
    gx, r, st = engine.conv_bwd_data(-g, wq, shifts, 1, 0, (1, 1))  # -(2^32 - 1) fits at r = 1 too; r stays 2
    assert r == 2 and st["saturations"] == 0 and gx.tolist() == [[[[-(1 << 30)]]]]


# -- random registers near the limits -------------------------------------------------------------

def accepted(shape) -> bool:
    """The board's shape rule (hls/src/e2t_checks.h), in Python: the accumulator-width checks
    never bind at this board's maxima, which the asserts say."""
    n, c, o, h, w, k, s, p = shape
    if not (1 <= n <= MAXN and 1 <= c <= MAXC and 1 <= o <= MAXC and 1 <= h <= MAXH and 1 <= w <= MAXW):
        return False
    if not (1 <= k <= MAXK and s in (1, 2) and 0 <= p <= MAXPAD and h + 2 * p >= k and w + 2 * p >= k):
        return False
    ho, wo = out_hw(shape)
    assert c * k * k < 1 << 17 and o * k * k < 1 << 13 and n * ho * wo < 1 << 25
    return ho <= MAXHO and wo <= MAXWO


def edge_shapes(rng, count: int, ap: bool):
    """Shapes with every register at, next to or just past a limit, mostly."""
    sizes = [1, 2, 3, 4, 5, 15, 16, 17, 29, 30, 31, 32, 33]
    chans = [1, 2, 7, 8, 9, 16, 17] + ([] if ap else [31, 63, 64, 65])
    for _ in range(count):
        yield (int(rng.choice([1, 2, 3])), int(rng.choice(chans)), int(rng.choice(chans)), int(rng.choice(sizes)),
               int(rng.choice(sizes)), int(rng.choice([1, 2, 3, 3, 4])), int(rng.choice([1, 1, 2, 2, 0, 3])),
               int(rng.choice([0, 1, 1, 2])))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_registers_near_the_limits(engine, seed):
    """Accepted exactly when the board's rule says so; BAD_SHAPE otherwise; accepted ones right."""
    rng = np.random.default_rng(200 + seed)
    runs = 0
    for i, shape in enumerate(edge_shapes(rng, 24 if small(engine) else 40, small(engine))):
        if accepted(shape):
            check_conv(engine, shape, seed=1000 * seed + i)
            runs += 1
        else:
            refuse_all(engine, shape)
    assert runs >= 5


def test_zero_weights_and_gradients(engine):
    """All-zero operands (bounds 0, shift 0) and weights that alignment rounds to 0."""
    shape = (2, 9, 10, 7, 6, 3, 2, 1)
    rng = np.random.default_rng(300)
    x, wq, g, _ = operands(rng, shape)
    y = fwd(engine, shape, x, np.zeros_like(wq))
    assert not y.any()
    gx = bwd(engine, shape, g, np.zeros_like(wq), np.zeros(10, np.int64))
    assert not gx.any()
    wz = wq.copy()
    wz[0] = 0  # the channel of the largest shift is all 0; every other one is shifted right by 31 - 12
    shifts = np.zeros(10, np.int64)
    shifts[0] = nx.WSHIFT_MAX
    w_al, _ = nx.aligned_weights(wz, shifts)
    assert not w_al.any()
    gx = bwd(engine, shape, g, wz, shifts)
    assert not gx.any()
    G = wgrad_full(engine, shape, x, np.zeros_like(g))
    assert not G.any()
    for mode, thr in ((ABS, 0), (ABS, 1), (RATIO, 0), (RATIO, 1 << 16)):
        psg(engine, shape, x, np.zeros_like(g), mode, thr)


@pytest.fixture(scope="module")
def fast_engine():
    return Engine("fast", log=lambda m: None)


def test_the_boards_largest_call(fast_engine):
    """N = 256, C = O = 64, H = W = 32, k = 3, pad 1, operands -128 and -32768: every buffer at
    its largest, against closed forms (the sums count the taps inside the map). The fast build
    only: the kernel builds would take tens of seconds (they run this shape at 4 images, in
    test_largest_buffers)."""
    engine = fast_engine
    n, c, o, h, w, k, s, p = shape = (MAXN, MAXC, MAXC, MAXH, MAXW, MAXK, 1, MAXPAD)
    taps_h = np.array([min(i + 1, h - 1) - max(i - 1, 0) + 1 for i in range(h)])  # rows of a 3-tap window inside
    taps_w = np.array([min(j + 1, w - 1) - max(j - 1, 0) + 1 for j in range(w)])
    inside = np.outer(taps_h, taps_w)
    x = np.full(n * c * h * w, -128, np.int8)
    wq = np.full(o * c * k * k, -128, np.int8)
    g = np.full(n * o * h * w, -32768, np.int16)
    # forward: 128 * 128 * C per tap inside, r = 0 (bound 2^14 * 576 < 2^31)
    r = nx.out_shift(nx.fwd_bound(wq.reshape(o, c, k, k)))
    assert r == 0
    st, b = call(engine, conv_regs(FWD, shape, shift=r), {"act": x, "wgt": wq}, {"out": n * o * h * w})
    assert st == status() and (b["out"].reshape(n * o, h, w) == (128 * 128 * c) * inside).all()
    # backward to the input: W_al = -2^19 (equal shifts), 2^15 * 2^19 * O per tap, r from the bound
    shifts = np.full(o, 3, np.int8)
    bound = 32768 * (1 << 19) * o * k * k
    r = nx.out_shift(bound)
    want = nx.rshift_round((32768 * (1 << 19) * o) * inside, r)
    st, b = call(engine, conv_regs(BWD, shape, shift=r), {"grad": g, "wgt": wq, "wshift": shifts},
                 {"out": n * c * h * w})
    assert st == status() and (b["out"].reshape(n * c, h, w) == want).all()
    # weight gradient: 2^22 per pixel where tap (kh, kw) lands inside, N (H - |kh - 1|)(W - |kw - 1|) pixels
    rows = np.array([h - abs(kh - 1) for kh in range(k)])
    cols = np.array([w - abs(kw - 1) for kw in range(k)])
    G = (1 << 22) * n * np.outer(rows, cols)
    st, b = call(engine, conv_regs(WGRAD, shape, mode=FULL), {"act": x, "grad": g}, {"scratch": o * c * k * k,
                                                                                     "sgn": o * c * k * k})
    assert st == status() and (b["scratch"].reshape(o * c, k, k) == G).all()
    G_msb = G >> 4  # x_msb = -8
    for mode, thr, sure in ((ABS, int(G_msb.max()), G_msb == G_msb.max()), (RATIO, 1 << 16, G_msb == G_msb.max()),
                            (RATIO, 0, G_msb >= 0)):
        st, b = call(engine, conv_regs(WGRAD, shape, mode=mode, threshold=thr), {"act": x, "grad": g},
                     {"scratch": o * c * k * k, "sgn": o * c * k * k})
        per_entry = int(sure.sum())
        tiles = (o // BOARD.tile_o) * (c // BOARD.tile_i)
        assert st == status(sure=per_entry * o * c, tiles=tiles, recomputed=0 if sure.all() else tiles), (mode, st)
        assert (b["scratch"].reshape(o * c, k, k) == G_msb).all() and (b["sgn"] == 1).all()
