"""STATS and APPLY of the numeric contract (docs/numerics.md, section 9): contract/numerics.py against the
plain-integer loops of tests/naive.py on random shapes and on every boundary, the refusals, APPLY's mode
register (contract/regmap.py) and the Python call surface of the CPU engines (hls/csim.py)."""
import numpy as np
import pytest

import naive
from contract import numerics as nx
from contract import regmap as cregmap
from contract.errors import E2TError
from hls import csim
from hls import regmap as hregmap

I32_LO, I32_HI = nx.OUT.lo, nx.OUT.hi
M_MAX, B_MAX = (1 << nx.COEF_M_BITS) - 1, (1 << nx.COEF_B_BITS) - 1
SHAPES = [(1, 1, 1, 1), (2, 3, 4, 5), (3, 2, 1, 7), (1, 5, 3, 3), (4, 1, 2, 2)]
OUT_FMTS = {8: nx.ACT, 16: nx.GRAD, 32: nx.OUT}


def same_stats(a, t, b=None, u=0):
    """numpy's STATS equals the loops'; returns them."""
    got, want = nx.channel_stats(a, t, b, u), naive.channel_stats(a, t, b, u)
    assert got[0].dtype == np.int64 and got[0].shape == (a.shape[1], 4)
    assert np.array_equal(got[0], want[0]) and got[1] == want[1]
    return got


def same_apply(a, coef, shift, **kw):
    """numpy's APPLY equals the loops'; returns them."""
    got, want = nx.apply_elementwise(a, coef, shift, **kw), naive.apply_elementwise(a, coef, shift, **kw)
    assert got[0].dtype == np.dtype(f"int{kw.get('out_bits', 8)}") and got[0].shape == a.shape
    assert got[1].dtype == np.int64 and got[1].shape == a.shape[:2] + (3,)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1]) and got[2] == want[2]
    return got


def int32s(rng, shape, bits=31):
    return rng.integers(-(1 << bits), 1 << bits, shape).astype(np.int32)


# -- STATS ----------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES)
def test_stats_random(shape):
    rng = np.random.default_rng(sum(shape))
    for bits in (8, 20, 31):
        a, b = int32s(rng, shape, bits), int32s(rng, shape, rng.integers(4, 32))
        for t in (0, max(0, bits - 17), max(0, bits - 16), int(rng.integers(0, 63))):
            same_stats(a, t)
            same_stats(a, t, b, int(rng.integers(0, 20)))


def test_stats_sat18_edges_and_counts():
    e, t = 1 << (nx.STAT_BITS - 1), 3  # a_t clips outside [-2^17, 2^17 - 1]
    # after the shift: 2^17 - 1, 2^17 (clip), -2^17, -2^17 - 1 (clip); then the rounding edges around them
    v = [(e - 1) << t, e << t, -e << t, (-e - 1) << t, (e << t) - 5, (e << t) - 4, (-e << t) - 4, (-e << t) - 5]
    at = [e - 1, e - 1, -e, -e, e - 1, e - 1, -e, -e]
    a = np.array(v, np.int32).reshape(2, 1, 2, 2)
    stats, sat = same_stats(a, t)
    assert sat == 4  # 2^17, -2^17 - 1, and the two rounding to them
    assert stats[0].tolist() == [sum(at), sum(x * x for x in at), min(v), max(v)]
    # PRODUCT: a clip of a_t and one of b_t count 2 on one element; SQUARE counts it once
    b = np.array([(1 << 17) << 2] * 8, np.int32).reshape(a.shape)
    stats, sat = same_stats(a, t, b, 2)
    assert sat == 4 + 8 and stats[0, 1] == sum(at) * ((1 << 17) - 1)


def test_stats_int32_extremes_and_shift_limits():
    a = np.array([I32_LO, I32_HI, I32_LO, I32_HI, 0, -1], np.int32).reshape(1, 2, 3, 1)
    b = np.array([I32_HI, I32_LO, I32_LO, I32_HI, 1, -1], np.int32).reshape(a.shape)
    for t in (0, 1, 13, 14, 15, 31, 32, 62):
        for u in (0, 14, 62):
            same_stats(a, t)
            same_stats(a, t, b, u)
    stats, sat = nx.channel_stats(a, 62, b, 62)  # everything rounds to 0 (2^31 + 2^61 < 2^62)
    assert sat == 0 and stats[:, :2].tolist() == [[0, 0], [0, 0]]
    assert stats[:, 2:].tolist() == [[I32_LO, I32_HI], [-1, I32_HI]]  # min / max of the raw a
    stats, sat = nx.channel_stats(a, 14)  # -2^31 -> -2^17 fits, 2^31 - 1 -> 2^17 clips
    assert sat == 2 and stats[0, 0] == -(1 << 17) + (1 << 17) - 1 + -(1 << 17)
    assert nx.channel_stats(a, 0)[1] == 4


def test_stats_sums_exact_at_the_largest_buffer():
    """m = 256 x 32 x 32 = 2^18 elements per channel, every a_t at -2^17: sums of 2^35 and 2^52."""
    shape = (256, 64, 32, 32)
    a = np.full(shape, I32_LO, np.int32)
    a[-1, :, -1, -1] = I32_HI  # 2^17 after the shift: one clip per channel
    stats, sat = nx.channel_stats(a, 14)
    m = 1 << 18
    assert sat == 64
    assert stats[:, 0].tolist() == [-(1 << 17) * (m - 1) + (1 << 17) - 1] * 64
    assert stats[:, 1].tolist() == [(1 << 34) * (m - 1) + ((1 << 17) - 1) ** 2] * 64
    assert stats[:, 2].tolist() == [I32_LO] * 64 and stats[:, 3].tolist() == [I32_HI] * 64
    stats, sat = nx.channel_stats(a, 14, a, 14)
    assert sat == 2 * 64 and stats[:, 1].tolist() == [(1 << 34) * (m - 1) + ((1 << 17) - 1) ** 2] * 64
    a[...] = I32_LO
    stats, sat = nx.channel_stats(a, 14)
    assert sat == 0 and stats[:, 0].tolist() == [-(1 << 35)] * 64 and stats[:, 1].tolist() == [1 << 52] * 64


@pytest.mark.parametrize("args, what", [
    (dict(t=63), "t = 63"), (dict(t=-1), "t = -1"), (dict(t=1.0), "t = 1.0"), (dict(t=True), "t = True"),
    (dict(u=63), "u = 63"),  # u is checked in mode SQUARE too
    (dict(b=np.zeros((2, 3, 4, 5), np.int32), u=63), "u = 63"),
    (dict(a=np.zeros((2, 3, 4, 5), np.float32)), "a must hold integers"),
    (dict(a=np.zeros((3, 4, 5), np.int32)), "N x C x H x W"),
    (dict(a=np.zeros((0, 3, 4, 5), np.int32)), "non-empty"),
    (dict(a=np.full((2, 3, 4, 5), 1 << 31)), "outside int32"),
    (dict(a=np.full((2, 3, 4, 5), I32_LO - 1)), "outside int32"),
    (dict(b=np.zeros((2, 3, 5, 4), np.int32)), "has shape (2, 3, 5, 4)"),
    (dict(b=np.zeros((2, 3, 4, 5), np.float64)), "b must hold integers"),
    (dict(b=np.full((2, 3, 4, 5), 1 << 31, np.uint32)), "b has values outside int32"),
])
def test_stats_refusals(args, what):
    kw = dict(a=np.zeros((2, 3, 4, 5), np.int32), t=0) | args
    with pytest.raises(E2TError) as e:
        nx.channel_stats(**kw)
    assert what in str(e.value) and "\n" not in str(e.value)




# -- APPLY ----------------------------------------------------------------------------------

def random_coef(rng, c, m_bits, b_bits):
    return np.stack([rng.integers(-(1 << m_bits) + 1, 1 << m_bits, c), rng.integers(-(1 << m_bits) + 1, 1 << m_bits, c),
                     rng.integers(-(1 << b_bits) + 1, 1 << b_bits, c)], axis=1)


def test_int32_values_of_any_integer_dtype_are_accepted():
    rng = np.random.default_rng(5)
    a = int32s(rng, (2, 3, 2, 2))
    coef = random_coef(rng, 3, 24, 56)
    for dtype in (np.int64, np.uint64, np.uint32, np.int16):
        x = (a if dtype in (np.int64, np.int16) else a & 0x7FFFFFFF).astype(dtype)
        same_stats(x, 9)
        same_stats(a, 9, x, 3)
        same_apply(x, coef, 30, b=a, out_bits=32)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("src2", ["none", "int32", "int8"])
def test_apply_random(shape, src2):
    rng = np.random.default_rng(sum(shape) + len(src2))
    for out_bits in (8, 16, 32):
        for relu in (False, True):
            for use_mask in (False, True):
                a_bits, m_bits = int(rng.integers(4, 32)), int(rng.integers(1, 25))
                a = int32s(rng, shape, a_bits)
                b = {"none": None, "int32": int32s(rng, shape, int(rng.integers(4, 32))),
                     "int8": rng.integers(-128, 128, shape).astype(np.int8)}[src2]
                mask = rng.integers(-128, 128, shape).astype(np.int8) if use_mask else None
                coef = random_coef(rng, shape[1], m_bits, int(rng.integers(1, 57)))
                shift = int(np.clip(a_bits + m_bits - out_bits + rng.integers(-2, 3), 0, nx.SHIFT_MAX))
                same_apply(a, coef, shift, b=b, relu=relu, mask=mask, out_bits=out_bits)


def test_apply_largest_v_at_the_coefficient_limits():
    """|v| up to (2^24 - 1) 2^31 x 2 + 2^56 - 1 < 2^57: exact, at every shift from 0 to 62."""
    a = np.array([I32_LO, I32_HI, I32_LO, I32_HI, -1, 0], np.int32).reshape(1, 6, 1, 1)
    b = np.array([I32_LO, I32_HI, I32_HI, I32_LO, 1, 0], np.int32).reshape(a.shape)
    coef = np.array([[M_MAX, M_MAX, -B_MAX], [M_MAX, M_MAX, B_MAX], [-M_MAX, M_MAX, B_MAX],
                     [-M_MAX, -M_MAX, -B_MAX], [M_MAX, -M_MAX, B_MAX], [-M_MAX, M_MAX, -B_MAX]])
    exact = [int(m1) * int(x) + int(m2) * int(y) + int(off) for (m1, m2, off), x, y in zip(coef, a.ravel(), b.ravel())]
    assert max(abs(v) for v in exact) < 1 << 57
    for shift in (0, 1, 25, 26, 27, 40, 56, 57, 61, 62):
        for out_bits in (8, 16, 32):
            same_apply(a, coef, shift, b=b.astype(np.int8), out_bits=out_bits, relu=True)
            same_apply(a, coef, shift, out_bits=out_bits)
            z, _, sat = same_apply(a, coef, shift, b=b, out_bits=out_bits)
            want = [naive.saturate(naive.rshift_round(v, shift), out_bits) for v in exact]
            assert z.ravel().tolist() == [w for w, _ in want] and sat == sum(k for _, k in want)


@pytest.mark.parametrize("out_bits", [8, 16, 32])
def test_apply_output_saturation_edges(out_bits):
    """z lands on hi - 1 .. hi + 2 and lo - 2 .. lo + 1, also through the rounding half (shift 1)."""
    fmt = OUT_FMTS[out_bits]
    a = np.arange(-2, 3, dtype=np.int32).reshape(1, 1, 1, 5).repeat(4, axis=1)
    coef = np.array([[1, 0, fmt.hi], [1, 0, fmt.lo], [1, 0, 2 * fmt.hi], [1, 0, 2 * fmt.lo]])
    z, stats, sat = same_apply(a[:, :2], coef[:2], 0, out_bits=out_bits)  # hi + a, lo + a
    assert z[0, 0, 0].tolist() == [fmt.hi - 2, fmt.hi - 1, fmt.hi, fmt.hi, fmt.hi]
    assert z[0, 1, 0].tolist() == [fmt.lo, fmt.lo, fmt.lo, fmt.lo + 1, fmt.lo + 2] and sat == 4
    z, stats, sat = same_apply(a[:, 2:], coef[2:], 1, out_bits=out_bits)
    # (2 hi + a + 1) >> 1: hi - 1, hi, hi, hi + 1 (clip), hi + 1 (clip); (2 lo + a + 1) >> 1: lo - 1 (clip), lo, lo, lo + 1, lo + 1
    assert z[0, 0, 0].tolist() == [fmt.hi - 1, fmt.hi, fmt.hi, fmt.hi, fmt.hi] and sat == 3
    assert z[0, 1, 0].tolist() == [fmt.lo, fmt.lo, fmt.lo, fmt.lo + 1, fmt.lo + 1]
    assert stats[0].tolist() == [[5 * fmt.hi - 1, fmt.hi - 1, fmt.hi], [5 * fmt.lo + 2, fmt.lo, fmt.lo + 1]]
    assert same_apply(a, coef, 0, out_bits=out_bits)[2] == 2 + 2 + 5 + 5  # 2 hi + a, 2 lo + a clip throughout


def test_apply_relu_then_mask_then_saturation():
    a = np.array([-300, -5, 0, 5, 300, -300, 300, 7], np.int32).reshape(1, 1, 2, 4)
    mask = np.array([1, 1, 1, 1, 1, -128, 0, 127], np.int8).reshape(a.shape)
    coef = [[1, 0, 0]]
    assert nx.apply_elementwise(a, coef, 0)[0].ravel().tolist() == [-128, -5, 0, 5, 127, -128, 127, 7]
    z, stats, sat = same_apply(a, coef, 0, relu=True)
    assert z.ravel().tolist() == [0, 0, 0, 5, 127, 0, 127, 7] and sat == 2  # clips of the values ReLU kept
    z, stats, sat = same_apply(a, coef, 0, mask=mask)
    assert z.ravel().tolist() == [-128, -5, 0, 5, 127, 0, 0, 7] and sat == 2  # masked values never clip
    z, stats, sat = same_apply(a, coef, 0, relu=True, mask=mask)
    assert z.ravel().tolist() == [0, 0, 0, 5, 127, 0, 0, 7] and sat == 1
    assert stats.tolist() == [[[139, 0, 127]]]
    mask_all = np.full(a.shape, -1, np.int8)
    z, stats, sat = same_apply(a, coef, 0, mask=mask_all)
    assert not z.any() and stats.tolist() == [[[0, 0, 0]]] and sat == 0


def test_apply_second_sources():
    """b = 0 without a second source (M2 ignored), int32 src2 at its extremes, int8 act at -128 / 127."""
    a = np.array([1, -1, 3, 0], np.int32).reshape(1, 1, 2, 2)
    coef = [[2, 3, 1]]
    b32 = np.array([I32_LO, I32_HI, 7, -7], np.int32).reshape(a.shape)
    b8 = np.array([-128, 127, 7, -7], np.int8).reshape(a.shape)
    assert same_apply(a, coef, 0, out_bits=32)[0].ravel().tolist() == [3, -1, 7, 1]
    assert same_apply(a, coef, 0, b=b32, out_bits=32)[0].ravel().tolist() == [I32_LO, I32_HI, 28, -20]
    assert same_apply(a, coef, 0, b=b8, out_bits=16)[0].ravel().tolist() == [-381, 380, 28, -20]
    assert same_apply(a, coef, 0, b=b8, out_bits=32)[2] == 0 and same_apply(a, coef, 0, b=b32, out_bits=32)[2] == 2


def test_apply_plane_sums_are_the_average_pool():
    """The plane sums of a ReLU'd int8 output are numpy's sums of it: the global average pool times P."""
    rng = np.random.default_rng(9)
    a = int32s(rng, (8, 16, 8, 8), 20)
    z, stats, _ = nx.apply_elementwise(a, random_coef(rng, 16, 10, 30), 24, b=rng.integers(-128, 128, a.shape).astype(np.int8),
                                       relu=True, out_bits=8)
    assert z.min() == 0 and z.max() > 0
    assert np.array_equal(stats[..., 0], z.sum(axis=(2, 3), dtype=np.int64))
    assert np.array_equal(stats[..., 1], z.min(axis=(2, 3))) and np.array_equal(stats[..., 2], z.max(axis=(2, 3)))
    assert np.array_equal(stats[..., 0] / 64, z.astype(np.float64).mean(axis=(2, 3)))


def test_apply_largest_buffer():
    """N = 256, C = 64, 32 x 32: numpy's planes equal the loops' on a sample of them."""
    rng = np.random.default_rng(11)
    shape = (256, 64, 32, 32)
    a = int32s(rng, shape)
    b = rng.integers(-128, 128, shape).astype(np.int8)
    coef = random_coef(rng, 64, 24, 56)
    coef[0], coef[-1] = [M_MAX, -M_MAX, B_MAX], [-M_MAX, M_MAX, -B_MAX]
    z, stats, sat = nx.apply_elementwise(a, coef, 40, b=b, relu=True, mask=b, out_bits=16)
    for n, c in [(0, 0), (255, 63), (17, 31)]:
        sl = (slice(n, n + 1), slice(c, c + 1))
        zs, ss, _ = naive.apply_elementwise(a[sl], coef[c:c + 1], 40, b=b[sl], relu=True, mask=b[sl], out_bits=16)
        assert np.array_equal(z[sl], zs) and np.array_equal(stats[sl], ss)
    assert 0 < sat < a.size


@pytest.mark.parametrize("args, what", [
    (dict(coef=[[1 << 24, 0, 0]] * 3), "coefficient M1 of channel 0 is 16777216"),
    (dict(coef=[[0, 0, 0], [0, -(1 << 24), 0], [0, 0, 0]]), "M2 of channel 1"),  # checked without src2 too
    (dict(coef=[[0, 0, 0]] * 2 + [[0, 0, 1 << 56]]), "B of channel 2"),
    (dict(coef=[[0, 0, -(1 << 56)]] * 3), "|B| must be below 2^56"),
    (dict(coef=np.array([[0, 0, 1 << 63]] * 3, np.uint64)), "B of channel 0"),
    (dict(coef=[[0, 0]] * 3), "shape (3, 3)"), (dict(coef=[[0, 0, 0]] * 4), "shape (3, 3)"),
    (dict(coef=np.zeros((3, 3), np.float64)), "coef must be integers"),
    (dict(shift=63), "shift = 63"), (dict(shift=-1), "shift = -1"),
    (dict(out_bits=4), "out_bits = 4"), (dict(out_bits=64), "out_bits = 64"),
    (dict(b=np.zeros((2, 3, 4, 5), np.int16)), "not int16"), (dict(b=np.zeros((2, 3, 4, 5), np.int64)), "not int64"),
    (dict(b=np.zeros((2, 3, 4, 4), np.int8)), "b has shape"), (dict(b=np.zeros((2, 3, 4, 4), np.int32)), "b has shape"),
    (dict(mask=np.zeros((2, 3, 4, 5), np.int32)), "mask must be int8"),
    (dict(mask=np.zeros((1, 3, 4, 5), np.int8)), "mask has shape"),
    (dict(a=np.zeros((2, 3, 4, 5), np.float32)), "a must hold integers"),
    (dict(a=np.full((2, 3, 4, 5), I32_HI + 1)), "outside int32"),
])
def test_apply_refusals(args, what):
    kw = dict(a=np.zeros((2, 3, 4, 5), np.int32), coef=[[1, 1, 0]] * 3, shift=0) | args
    with pytest.raises(E2TError) as e:
        nx.apply_elementwise(**kw)
    assert what in str(e.value) and "\n" not in str(e.value)


def test_apply_accepts_the_coefficient_limits():
    a = np.zeros((1, 3, 1, 1), np.int32)
    for coef in ([[M_MAX, -M_MAX, B_MAX]] * 3, [[-M_MAX, M_MAX, -B_MAX]] * 3, np.array([[M_MAX, M_MAX, B_MAX]] * 3, np.uint64)):
        z, _, sat = nx.apply_elementwise(a, coef, 30, out_bits=32)
        assert z.ravel().tolist() == [naive.rshift_round(int(np.asarray(coef)[0, 2]), 30)] * 3 and sat == 0


# -- the mode register and the engine's call surface ------------------------------------------

def test_apply_mode_packs_the_register_maps_fields():
    rm = cregmap.load()
    f = hregmap.APPLY_FIELDS
    assert rm.stats_modes == hregmap.STATS_MODES
    for src2 in ("none", "int32", "int8"):
        for relu in (False, True):
            for mask in (False, True):
                for out_bits in (8, 16, 32):
                    want = (f["SRC2"][2][src2.upper()] << f["SRC2"][0] | relu << f["RELU"][0] | mask << f["MASK"][0]
                            | f["OUT"][2][f"INT{out_bits}"] << f["OUT"][0])
                    assert rm.apply_mode(src2, relu, mask, out_bits) == want < 1 << hregmap.APPLY_MODE_BITS
    assert rm.apply_mode() == 0 and rm.apply_mode("int8", True, True, 32) == 2 | 4 | 8 | 32
    for bad in (dict(src2="int16"), dict(out_bits=64)):
        with pytest.raises(E2TError):
            rm.apply_mode(**bad)


def test_regmap_from_before_contract_v2_still_loads():
    data = dict(cregmap.load().data)
    for key in ("stats_modes", "apply_fields"):
        data.pop(key)
    rm = cregmap.RegMap(data)
    assert rm.modes == hregmap.WGRAD_MODES and rm.stats_modes == {} and rm.offset("shift") == 0x060
    with pytest.raises(E2TError, match="no APPLY"):
        rm.apply_mode()


class Recorder(csim.Engine):
    """Engine's numpy-level methods without a build: ``call`` records what it is given."""

    def __init__(self):
        self.board, self.calls = csim.boards.board(csim.boards.DEFAULT_BOARD), []

    def call(self, regs, ports):
        csim._marshal(regs, ports)
        self.calls.append((regs, ports))
        return {"status": 0, "saturations": 0, "psg_sure": 0, "psg_tiles": 0, "psg_recomputed": 0}


def test_engine_stats_and_apply_registers_and_buffers():
    e = Recorder()
    a = np.arange(2 * 3 * 4 * 5, dtype=np.int64).reshape(2, 3, 4, 5)
    shape_regs = {"batch": 2, "c_in": 3, "h_in": 4, "w_in": 5}
    stats, _ = e.stats(a, 7)
    regs, ports = e.calls[-1]
    assert regs == {"op": 5, "mode": 0, "shift": 7, "shift2": 0, **shape_regs} and set(ports) == {"src1", "stats"}
    assert ports["src1"].dtype == np.int32 and ports["stats"] is stats and stats.shape == (3, 4)
    e.stats(a, 7, a, 62)
    regs, ports = e.calls[-1]
    assert regs["mode"] == 1 and regs["shift2"] == 62 and ports["src2"].dtype == np.int32
    coef = [[1, 2, 3]] * 3
    for b, port, src2 in ((None, None, 0), (a.astype(np.int32), "src2", 1), (a.astype(np.int8), "act", 2)):
        for out_bits, dst in ((8, "dst8"), (16, "dst16"), (32, "out")):
            z, st, _ = e.apply(a, coef, 9, b=b, relu=True, mask=a.astype(np.int8), out_bits=out_bits)
            regs, ports = e.calls[-1]
            assert regs == {"op": 6, "mode": src2 | 4 | 8 | {8: 0, 16: 1, 32: 2}[out_bits] << 4, "shift": 9, **shape_regs}
            assert set(ports) == {"src1", "coef", dst, "stats", "mask"} | ({port} if port else set())
            assert ports[dst] is z and z.dtype == np.dtype(f"int{out_bits}") and z.shape == a.shape
            assert ports["stats"] is st and st.shape == (2, 3, 3) and ports["coef"].dtype == np.int64
    assert e.apply(a, coef, 0)[0].dtype == np.int8 and e.calls[-1][0]["mode"] == 0


@pytest.mark.parametrize("call, what", [
    (lambda e, a: e.stats(a, 0, a[:, :2]), "b has shape"),
    (lambda e, a: e.stats(a[0], 0), "N x C x H x W"),
    (lambda e, a: e.stats(a.astype(np.int64) << 32, 0), "outside the 32-bit range"),
    (lambda e, a: e.apply(a, [[1, 1, 0]] * 2, 0), "coef has shape"),
    (lambda e, a: e.apply(a, [[1, 1, 0]] * 3, 0, b=a.astype(np.int16)), "int32 (src2) or int8 (act)"),
    (lambda e, a: e.apply(a, [[1, 1, 0]] * 3, 0, b=a[:1].astype(np.int8)), "b has shape"),
    (lambda e, a: e.apply(a, [[1, 1, 0]] * 3, 0, mask=a[:, :, :1].astype(np.int8)), "mask has shape"),
    (lambda e, a: e.apply(a, [[1, 1, 0]] * 3, 0, mask=a * 1000), "outside the 8-bit range"),
    (lambda e, a: e.apply(a, [[1, 1, 0]] * 3, 0, out_bits=12), "output width 12"),
])
def test_engine_refuses_operands_before_calling(call, what):
    e = Recorder()
    with pytest.raises(E2TError) as err:
        call(e, np.ones((2, 3, 4, 5), np.int32))
    assert what in str(err.value) and not e.calls
