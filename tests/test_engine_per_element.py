"""STATS and APPLY (docs/numerics.md, section 9) on every engine build of tests/engines.py against the
numeric contract (contract/numerics.py: channel_stats, apply_elementwise): integers and exact counters,
never tolerances.

Random shapes go through the numpy-level calls (Engine.stats, Engine.apply); the boundary walk of every
register the two ops read goes through the register interface on sentinel buffers
(test_engine_boundary.call: an accepted op writes only the heads of its outputs, a refused one nothing,
with every counter 0; inputs carry sentinels past their ends, so reading past a plane, a channel's
coefficients or the tensor gives other integers, and a coefficient sentinel is past every limit):
each shape register at 1, at its maximum and past it, shift and shift2 at 62 and 63, each coefficient at
its limit and past it, every mode field's refused value and the bits above the fields, the extreme
operands (the widest sums, the largest |v|) and the saturation counts.

The whole largest tensor (N = max_batch, C = max_c, H = W = max: 2^24 elements) runs on the native
kernel build and the fast build's automatic path only (the ap build would take about half a minute a
call, the aarch64 builds copy every buffer through qemu); every build runs the widest sums, at
m = N H W = 2^18 elements a channel.
"""
import numpy as np
import pytest

from engines import BUILDS, IDS, make_engine
from hls import boards, regmap
from contract import numerics as nx
from contract import regmap as cregmap
from test_engine_boundary import U32, U64, call, status

BOARD = boards.board(boards.DEFAULT_BOARD)
MAXN, MAXC, MAXH, MAXW = BOARD.max_batch, BOARD.max_c, BOARD.max_h, BOARD.max_w
OK, BAD_SHAPE, BAD_ARG = (regmap.STATUS[k] for k in ("OK", "BAD_SHAPE", "BAD_ARG"))
STATS, APPLY = regmap.OPS["STATS"], regmap.OPS["APPLY"]
SQUARE, PRODUCT = regmap.STATS_MODES["SQUARE"], regmap.STATS_MODES["PRODUCT"]
MAP = cregmap.load()
I32_LO, I32_HI = nx.OUT.lo, nx.OUT.hi
M_MAX, B_MAX = (1 << nx.COEF_M_BITS) - 1, (1 << nx.COEF_B_BITS) - 1
DST = {8: "dst8", 16: "dst16", 32: "out"}
SHAPE_REGS = ("batch", "c_in", "h_in", "w_in")


@pytest.fixture(scope="module", params=BUILDS, ids=IDS)
def engine(request):
    return make_engine(request.param)


# -- operands and calls ------------------------------------------------------------------------

def int32s(rng, shape, bits=31):
    return rng.integers(-(1 << bits), 1 << bits, shape).astype(np.int32)


def int8s(rng, shape):
    """int8 values, the mask's edges (-128, -1, 0, 1, 127) one in two."""
    x = rng.integers(-128, 128, shape)
    return np.where(rng.integers(0, 2, shape) == 1, rng.choice([-128, -1, 0, 1, 127], shape), x).astype(np.int8)


def coefs(rng, c, m_bits=nx.COEF_M_BITS, b_bits=nx.COEF_B_BITS):
    """M1, M2 below 2^m_bits, B below 2^b_bits in magnitude; the limits themselves one in four."""
    m, b = (1 << m_bits) - 1, (1 << b_bits) - 1
    out = np.stack([rng.integers(-m, m + 1, c), rng.integers(-m, m + 1, c), rng.integers(-b, b + 1, c)], axis=1)
    edge = rng.integers(0, 4, (c, 3)) == 0
    return np.where(edge, np.array([m, m, b]) * rng.choice([-1, 1], (c, 3)), out)


def elem_regs(op: int, shape, **extra) -> dict:
    n, c, h, w = shape
    return {"op": op, "batch": n, "c_in": c, "h_in": h, "w_in": w, **extra}


def stats_at(engine, a, t, b=None, u=0, **extra):
    """STATS through the registers on sentinel buffers: equal to the contract, saturations counted."""
    want, sat = nx.channel_stats(a, t, b, u)
    data = {"src1": a} if b is None else {"src1": a, "src2": b}
    regs = elem_regs(STATS, a.shape, mode=SQUARE if b is None else PRODUCT, shift=t, shift2=u, **extra)
    st, bufs = call(engine, regs, data, {"stats": want.size})
    assert st == status(sat=sat), (engine.variant, a.shape, t, u, st, sat)
    assert np.array_equal(bufs["stats"].reshape(want.shape), want), (engine.variant, a.shape, t, u)
    return want, sat


def apply_at(engine, a, coef, shift, b=None, relu=False, mask=None, out_bits=8, **extra):
    """APPLY through the registers on sentinel buffers: z, the plane sums and the saturations of the contract."""
    z, planes, sat = nx.apply_elementwise(a, coef, shift, b, relu, mask, out_bits)
    src2 = "none" if b is None else {np.dtype(np.int32): "int32", np.dtype(np.int8): "int8"}[b.dtype]
    data = {"src1": a, "coef": coef}
    if b is not None:
        data["src2" if src2 == "int32" else "act"] = b
    if mask is not None:
        data["mask"] = mask
    regs = elem_regs(APPLY, a.shape, mode=MAP.apply_mode(src2, relu, mask is not None, out_bits), shift=shift, **extra)
    st, bufs = call(engine, regs, data, {DST[out_bits]: z.size, "stats": planes.size})
    what = (engine.variant, a.shape, shift, src2, relu, mask is not None, out_bits)
    assert st == status(sat=sat), (*what, st, sat)
    assert np.array_equal(bufs[DST[out_bits]].reshape(z.shape), z), what
    assert np.array_equal(bufs["stats"].reshape(planes.shape), planes), what
    return z, planes, sat


def refuse(engine, op: int, shape, code: int, data: dict | None = None, **extra) -> None:
    """A STATS or APPLY call the engine must refuse with ``code`` (nothing written, counters 0), its
    buffers sized for the shape as if it ran (registers far past the limits are capped)."""
    rng = np.random.default_rng(sum(shape) & 0xFFFF)
    n, c, h, w = (max(1, min(v, cap)) for v, cap in zip(shape, (MAXN + 1, MAXC + 1, MAXH + 1, MAXW + 1)))
    size = n * c * h * w
    base = {"src1": int32s(rng, size), "src2": int32s(rng, size), "act": int8s(rng, size), "mask": int8s(rng, size),
            "coef": coefs(rng, c)}
    base.update(data or {})
    st, _ = call(engine, elem_regs(op, shape, **extra), base,
                 {"dst8": size, "dst16": size, "out": size, "stats": max(4 * c, 3 * n * c)})
    assert st == status(code), (engine.variant, op, shape, extra, st)


def every_apply_mode():
    for src2 in ("none", "int32", "int8"):
        for relu in (False, True):
            for mask in (False, True):
                for out_bits in (8, 16, 32):
                    yield src2, relu, mask, out_bits


# -- random shapes through Engine.stats / Engine.apply --------------------------------------------

def random_shapes(rng, count: int):
    """(N, C, H, W): planes of 1 pixel, of whole and partial beats of every element width, channels off
    the array grid, then random ones."""
    yield from [(1, 1, 1, 1), (2, 3, 1, 7), (3, 5, 2, 4), (1, 9, 8, 8), (2, 17, 5, 3), (1, 2, 32, 32), (2, 4, 2, 1)]
    for _ in range(count):
        yield (int(rng.integers(1, 5)), int(rng.integers(1, 21)), int(rng.integers(1, 13)), int(rng.integers(1, 13)))


@pytest.mark.parametrize("seed", [1, 2])
def test_stats_equal_the_contract(engine, seed):
    rng = np.random.default_rng(seed)
    clipped = 0
    for shape in random_shapes(rng, 6):
        for bits in (12, 31):
            a, b = int32s(rng, shape, bits), int32s(rng, shape, int(rng.integers(8, 32)))
            t, u = int(rng.integers(0, bits - 8)), int(rng.integers(0, 18))
            got, st = engine.stats(a, t)
            want, sat = nx.channel_stats(a, t)
            assert st == status(sat=sat) and np.array_equal(got, want), (engine.variant, shape, t)
            got, st = engine.stats(a, t, b, u)
            want, sat = nx.channel_stats(a, t, b, u)
            assert st == status(sat=sat) and np.array_equal(got, want), (engine.variant, shape, t, u)
            clipped += sat
    assert clipped > 0


@pytest.mark.parametrize("seed", [3, 4])
def test_apply_equals_the_contract_in_every_mode(engine, seed):
    """Every second source, RELU, MASK and output width, each on a random shape, with a shift around
    the one that fits the output format (some values clip)."""
    rng = np.random.default_rng(seed)
    shapes, clipped = random_shapes(rng, 36), 0
    for src2, relu, use_mask, out_bits in every_apply_mode():
        shape = next(shapes)
        a_bits, m_bits = int(rng.integers(4, 32)), int(rng.integers(1, nx.COEF_M_BITS + 1))
        a = int32s(rng, shape, a_bits)
        b = {"none": None, "int32": int32s(rng, shape, int(rng.integers(4, 32))), "int8": int8s(rng, shape)}[src2]
        mask = int8s(rng, shape) if use_mask else None
        coef = coefs(rng, shape[1], m_bits, int(rng.integers(1, nx.COEF_B_BITS + 1)))
        shift = int(np.clip(a_bits + m_bits - out_bits + rng.integers(-2, 3), 0, nx.SHIFT_MAX))
        z, planes, st = engine.apply(a, coef, shift, b, relu, mask, out_bits)
        z_ref, planes_ref, sat = nx.apply_elementwise(a, coef, shift, b, relu, mask, out_bits)
        what = (engine.variant, shape, src2, relu, use_mask, out_bits, shift)
        assert z.dtype == z_ref.dtype and np.array_equal(z, z_ref) and np.array_equal(planes, planes_ref), what
        assert st == status(sat=sat), (*what, st, sat)
        clipped += sat
    assert clipped > 0


@pytest.mark.parametrize("h, w", [(1, 1), (1, 2), (1, 3), (2, 2), (1, 5), (3, 3), (2, 4), (4, 4), (1, MAXW),
                                  (MAXH, 1), (MAXH - 1, MAXW - 1), (MAXH, MAXW - 1), (MAXH, MAXW)])
def test_plane_sizes(engine, h, w):
    """Planes of whole and partial AXI beats (2 int32, 4 int16, 8 int8 a beat on this board), up to a
    whole map: every tensor and output width."""
    rng = np.random.default_rng(h * 64 + w)
    shape = (2, 3, h, w)
    a, b = int32s(rng, shape), int32s(rng, shape)
    stats_at(engine, a, 14, b, 15)
    coef = coefs(rng, 3, 20)
    apply_at(engine, a, coef, 40, b.astype(np.int8), True, int8s(rng, shape), 8)
    apply_at(engine, a, coef, 33, b, False, int8s(rng, shape), 16)
    apply_at(engine, a, coef, 25, None, True, None, 32)


# -- shape registers -----------------------------------------------------------------------------

def run_both(engine, shape, seed):
    """STATS in both modes and APPLY with every source, RELU, MASK and int16 outputs on ``shape``."""
    rng = np.random.default_rng(seed)
    a, b = int32s(rng, shape), int32s(rng, shape)
    stats_at(engine, a, 13)
    stats_at(engine, a, 14, b, 13)
    coef = coefs(rng, shape[1], 22)
    apply_at(engine, a, coef, 38, b, True, int8s(rng, shape), 16)
    apply_at(engine, a, coef, 30, int8s(rng, shape), False, None, 16)


@pytest.mark.parametrize("reg", SHAPE_REGS)
def test_shape_register_limits(engine, reg):
    """Each shape register at 1 and at its maximum (the others small) computed; its maximum + 1, 0,
    2^31 and 2^32 - 1 refused by both ops in every mode, whatever the other registers hold."""
    i = SHAPE_REGS.index(reg)
    limit = (MAXN, MAXC, MAXH, MAXW)[i]
    for v in (1, limit):
        shape = [2, 3, 3, 2]
        shape[i] = v
        run_both(engine, tuple(shape), seed=v + i)
    for v in (limit + 1, 0, 1 << 31, U32):
        shape = [2, 3, 3, 2]
        shape[i] = v
        for op, mode in ((STATS, SQUARE), (STATS, PRODUCT), (APPLY, 0),
                         (APPLY, MAP.apply_mode("int8", True, True, 32))):
            refuse(engine, op, shape, BAD_SHAPE, mode=mode, shift=5, shift2=7)


def test_refusal_precedence(engine):
    """BAD_SHAPE before BAD_ARG (a bad mode, shift, shift2 or coefficient), as check_call orders them."""
    bad_coef = {"coef": np.array([[M_MAX + 1, 0, 0]] * 4)}
    for shape in ((1, MAXC + 1, 2, 2), (0, 2, 2, 2), (1, 2, MAXH + 1, 2)):
        refuse(engine, STATS, shape, BAD_SHAPE, mode=2, shift=63, shift2=U32)
        refuse(engine, APPLY, shape, BAD_SHAPE, bad_coef, mode=U32, shift=63)
    refuse(engine, APPLY, (1, 2, 2, 2), BAD_ARG, bad_coef, mode=0, shift=3)


# -- the largest buffers and the widest sums ------------------------------------------------------

@pytest.fixture(scope="module", params=[("native", None), ("fast", "auto")], ids=["native", "fast-auto"])
def large(request):
    return make_engine(request.param)


def test_largest_buffers(large):
    """N = max_batch, C = max_c, H = W = max: 2^24 elements of every tensor, both ops."""
    rng = np.random.default_rng(90)
    shape = (MAXN, MAXC, MAXH, MAXW)
    a, b = int32s(rng, shape), int32s(rng, shape)
    stats_at(large, a, 14, b, 13)
    coef = coefs(rng, MAXC)
    apply_at(large, a, coef, 36, b, True, int8s(rng, shape), 32)
    apply_at(large, a, coef, 50, int8s(rng, shape), False, None, 8)


def test_widest_stats_sums(engine):
    """m = N H W = 2^18 elements a channel at a_t = b_t = -2^17: sum a_t = -2^35 and sum a_t b_t = +2^52
    (a 54-bit sum); with b_t clipped at 2^17 - 1, and with every a_t (and b_t) clipped, each counted."""
    shape = (MAXN, 2, MAXH, MAXW)
    m = MAXN * MAXH * MAXW
    assert m == 1 << 18
    lo, hi = np.full(shape, I32_LO, np.int32), np.full(shape, I32_HI, np.int32)
    want, sat = stats_at(engine, lo, 14)
    assert sat == 0 and want.tolist() == [[-(1 << 35), 1 << 52, I32_LO, I32_LO]] * 2
    want, sat = stats_at(engine, lo, 14, lo, 14)
    assert sat == 0 and want[:, 1].tolist() == [1 << 52] * 2
    want, sat = stats_at(engine, lo, 14, hi, 14)  # 2^31 - 1 rounds to 2^17: clipped
    assert sat == 2 * m and want[:, 1].tolist() == [-(1 << 17) * ((1 << 17) - 1) * m] * 2
    want, sat = stats_at(engine, hi, 0)
    assert sat == 2 * m and want.tolist() == [[((1 << 17) - 1) * m, ((1 << 17) - 1) ** 2 * m, I32_HI, I32_HI]] * 2
    want, sat = stats_at(engine, hi, 0, lo, 0)
    assert sat == 4 * m and want[:, 1].tolist() == [-((1 << 17) - 1) * (1 << 17) * m] * 2


def test_widest_plane_sums(engine):
    """A whole map of int32 outputs at I32_LO (plane sum -2^41) and, clipped, at I32_HI."""
    shape = (2, 2, MAXH, MAXW)
    a = np.full(shape, I32_LO, np.int32)
    _, planes, sat = apply_at(engine, a, np.array([[1, 0, 0]] * 2), 0, out_bits=32)
    assert sat == 0 and planes.tolist() == [[[-(1 << 41), I32_LO, I32_LO]] * 2] * 2
    _, planes, sat = apply_at(engine, a, np.array([[-M_MAX, M_MAX, B_MAX]] * 2), 0, out_bits=32)
    assert sat == a.size and planes.tolist() == [[[I32_HI * MAXH * MAXW, I32_HI, I32_HI]] * 2] * 2


def test_largest_v(engine):
    """|v| = 2 (2^24 - 1) 2^31 + 2^56 - 1 = 2^57 - 2^32 - 1, the largest the limits allow, of both
    signs and every mix of int32 extremes, int8 second sources, at shifts from 0 (every output
    clipped) to 62 (every output 0)."""
    a = np.array([I32_LO, I32_LO, I32_HI, I32_LO, I32_HI, -1, 0, I32_LO], np.int32).reshape(1, 8, 1, 1)
    a = np.repeat(a, 3, axis=3)  # partial beats of every width
    b = np.array([I32_LO, I32_LO, I32_HI, I32_HI, I32_LO, 1, 0, I32_HI], np.int32).reshape(1, 8, 1, 1).repeat(3, axis=3)
    coef = np.array([[-M_MAX, -M_MAX, B_MAX], [M_MAX, M_MAX, -B_MAX], [M_MAX, M_MAX, B_MAX], [M_MAX, -M_MAX, -B_MAX],
                     [-M_MAX, M_MAX, -B_MAX], [M_MAX, -M_MAX, B_MAX], [0, 0, -B_MAX], [-M_MAX, M_MAX, 0]])
    v = [int(m1) * int(x) + int(m2) * int(y) + int(off)
         for (m1, m2, off), x, y in zip(coef, a[0, :, 0, 0], b[0, :, 0, 0])]
    assert max(v) == (1 << 57) - (1 << 32) - 1 == -min(v)
    for shift in (0, 1, 24, 25, 26, 33, 41, 49, 55, 56, 57, 58, 61, 62):
        for out_bits in (8, 16, 32):
            z, _, sat = apply_at(engine, a, coef, shift, b, out_bits=out_bits)
            if shift == 0:
                assert sat == a.size  # every |v| >= 2^55 - 2^31
            if shift == 62:
                assert sat == 0 and not z.any()
        apply_at(engine, a, coef, shift, np.clip(b, -128, 127).astype(np.int8), True, None, 16)


# -- shift, shift2, coefficients and mode -----------------------------------------------------------

def rounding_operands(rng, shape):
    """int32 values of every magnitude, the extremes, and ties of the rounding at small shifts."""
    a = int32s(rng, shape)
    flat = a.reshape(-1)
    bits = rng.integers(0, 32, flat.size)
    flat[:] = np.clip(flat.astype(np.int64) >> bits, I32_LO, I32_HI)
    flat[:8] = [I32_LO, I32_HI, -1, 1, 0, -3, 3, -(1 << 16)]
    return a


def test_shift_registers_round_every_shift(engine):
    """t, u (STATS) and S (APPLY) at every value 0..62; APPLY does not read shift2."""
    rng = np.random.default_rng(7)
    shape = (2, 4, 3, 5)
    a, b = rounding_operands(rng, shape), rounding_operands(rng, shape)
    coef = np.array([[1, 0, 0], [M_MAX, -M_MAX, B_MAX], [3, 5, -(1 << 40) - 1], [-M_MAX, 1, 1 << 55]])
    for s in range(nx.SHIFT_MAX + 1):
        stats_at(engine, a, s, u=nx.SHIFT_MAX - s)
        stats_at(engine, a, (s * 7) % (nx.SHIFT_MAX + 1), b, s)
        apply_at(engine, a, coef, s, b, out_bits=32, shift2=U32)


@pytest.mark.parametrize("bad", [nx.SHIFT_MAX + 1, nx.SHIFT_MAX + 2, 1 << 31, U32])
def test_shift_registers_past_62_are_refused(engine, bad):
    """shift past 62: both ops; shift2 past 62: STATS in both modes (SQUARE checks it too)."""
    shape = (2, 3, 4, 4)
    for mode in (SQUARE, PRODUCT):
        refuse(engine, STATS, shape, BAD_ARG, mode=mode, shift=bad)
        refuse(engine, STATS, shape, BAD_ARG, mode=mode, shift2=bad)
        refuse(engine, STATS, shape, BAD_ARG, mode=mode, shift=nx.SHIFT_MAX, shift2=bad)
    for src2, relu, mask, out_bits in (("none", False, False, 8), ("int32", True, True, 32)):
        refuse(engine, APPLY, shape, BAD_ARG, mode=MAP.apply_mode(src2, relu, mask, out_bits), shift=bad)


LIMITS = {0: M_MAX, 1: M_MAX, 2: B_MAX}  # M1, M2, B


@pytest.mark.parametrize("field", [0, 1, 2], ids=["M1", "M2", "B"])
def test_coefficient_limits(engine, field):
    """Each coefficient at +-limit computed, +-(limit + 1) and farther refused in any channel, in every
    mode (all three are checked whatever the mode reads); the C x 3 coefficients past C are not read."""
    rng = np.random.default_rng(20 + field)
    shape = (2, 5, 3, 3)
    a, b, mask = int32s(rng, shape), int32s(rng, shape), int8s(rng, shape)
    lim = LIMITS[field]
    coef = coefs(rng, 5, 20, 50)
    coef[:, field] = [lim, -lim, lim, 0, -lim]
    apply_at(engine, a, coef, 50, b, False, mask, 8)
    apply_at(engine, a, coef, 47, b.astype(np.int8), True, None, 16)
    apply_at(engine, a, coef, 40, None, False, None, 32)
    for bad in (lim + 1, -lim - 1, lim + 2, 1 << 62, -(1 << 63), (1 << 63) - 1):
        for ch in (0, 2, 4):
            coef_bad = coefs(rng, 5, 20, 50)
            coef_bad[ch, field] = bad
            for mode in (MAP.apply_mode("none", False, False, 8), MAP.apply_mode("int32", True, True, 32),
                         MAP.apply_mode("int8", False, True, 16)):
                refuse(engine, APPLY, shape, BAD_ARG, {"coef": coef_bad}, mode=mode, shift=20)


def test_mode_registers(engine):
    """STATS: modes past PRODUCT refused. APPLY: the second source field at 3, the output field at 3,
    and each bit above the fields refused, on top of valid fields."""
    shape = (2, 3, 4, 3)
    for mode in (2, 3, 4, 1 << 31, U32):
        refuse(engine, STATS, shape, BAD_ARG, mode=mode, shift=3)
    src_shift, _, _ = regmap.APPLY_FIELDS["SRC2"]
    out_shift, _, _ = regmap.APPLY_FIELDS["OUT"]
    for valid in (MAP.apply_mode("none", False, False, 8), MAP.apply_mode("int8", True, True, 32)):
        refuse(engine, APPLY, shape, BAD_ARG, mode=valid | 3 << src_shift, shift=3)
        refuse(engine, APPLY, shape, BAD_ARG, mode=valid | 3 << out_shift, shift=3)
        for bit in range(regmap.APPLY_MODE_BITS, 32):
            refuse(engine, APPLY, shape, BAD_ARG, mode=valid | 1 << bit, shift=3)
    refuse(engine, APPLY, shape, BAD_ARG, mode=U32, shift=3)


def test_registers_the_ops_do_not_read_are_ignored(engine):
    """The conv and update registers at their largest values change neither op (nor shift2 APPLY)."""
    rng = np.random.default_rng(30)
    shape = (3, 5, 4, 6)
    junk = {"c_out": U32, "kernel": 99, "stride": 0, "pad": U32, "threshold": U64, "count": U32, "e_w": -(1 << 31),
            "lr": U64, "wd": U64, "mu": U32}
    a, b = int32s(rng, shape), int32s(rng, shape)
    stats_at(engine, a, 16, **junk)
    stats_at(engine, a, 16, b, 2, **junk)
    apply_at(engine, a, coefs(rng, 5, 18), 30, b, True, int8s(rng, shape), 16, shift2=U32, **junk)


def test_buffers_the_mode_does_not_name_are_ignored(engine):
    """STATS SQUARE ignores src2; APPLY ignores the second sources its mode does not name, and the mask
    without MASK: here a src2 of -2^31, an act of -128 and a mask of 0 that would change every output."""
    rng = np.random.default_rng(31)
    shape = (2, 3, 5, 4)
    a = int32s(rng, shape)
    coef = coefs(rng, 3, 20)
    unread = {"src2": np.full(a.size, I32_LO), "act": np.full(a.size, -128), "mask": np.zeros(a.size)}
    want, sat = nx.channel_stats(a, 15)
    st, bufs = call(engine, elem_regs(STATS, shape, mode=SQUARE, shift=15), {"src1": a, **unread}, {"stats": want.size})
    assert st == status(sat=sat) and np.array_equal(bufs["stats"].reshape(want.shape), want)
    for src2, b in (("none", None), ("int32", int32s(rng, shape)), ("int8", int8s(rng, shape))):
        z, planes, sat = nx.apply_elementwise(a, coef, 44, b, False, None, 16)
        data = {**unread, "src1": a, "coef": coef}
        if b is not None:
            data["src2" if src2 == "int32" else "act"] = b
        st, bufs = call(engine, elem_regs(APPLY, shape, mode=MAP.apply_mode(src2, False, False, 16), shift=44), data,
                        {"dst16": z.size, "stats": planes.size})
        assert st == status(sat=sat), (engine.variant, src2, st)
        assert np.array_equal(bufs["dst16"].reshape(shape), z), (engine.variant, src2)
        assert np.array_equal(bufs["stats"].reshape(planes.shape), planes), (engine.variant, src2)
