"""The cycle model of STATS and APPLY (contract/cycles.py, contract v2): hand counts of the beats
of every stream kind and output width, a one-element call, planes off the beat, the streams'
bound and bytes, and the kernel's own loop counts (a -DE2T_TRIPS build) on every mode."""
import shutil

import numpy as np
import pytest

from contract import cycles, regmap
from contract.errors import E2TError
from hls import boards, csim
from test_cycles import CALL, D, KMUL, STEP, _kernel_trips, _trip_build, loop

B = boards.board("pynq-z2")  # 64-bit beats: 2 int32, 4 int16, 8 int8, 1 int64 a beat
R = regmap.load()
SQUARE, PRODUCT = R.stats_modes["SQUARE"], R.stats_modes["PRODUCT"]
SETUP = cycles.CHECK_TOP + KMUL  # the checks' top, P = H W


def apply_setup(c):
    """APPLY's coef_ok (one coefficient a cycle) and COEF_LOAD (one int64 a trip), 3 C each."""
    return 3 * c + D["rd"] + loop(3 * c, "rd") + CALL


def load(*trips):
    """elem_load: one read loop a stream of the plane (``trips`` each), one after the other."""
    return sum(loop(t, "rd") for t in trips) + CALL


def sweep(p, lanes=2):
    """elem_plane: ELEM_SWEEP over one plane, ``lanes`` elements a trip."""
    return loop(-(-p // lanes), "elem") + CALL


def store(trips):
    """elem_store: APPLY's output (ELEM_STORE) and its three plane sums, single writes."""
    return loop(trips, "wr") + 3 + D["wr"] + CALL


def stream(planes, ld, work):
    """The first plane's loads, then a step a plane: the next plane's loads beside this one's sweep
    (and store), the longer of the two, plus the plane's state; the last step loads nothing."""
    return ld + (planes - 1) * (max(ld, work) + STEP) + work + STEP


def test_stats_by_hand():
    """N = 2, C = 3, 4 x 4: six planes of 16 int32 = 8 beats each (34 cycles a load) beside their
    sweeps two lanes a trip (22): the loads bound the steps; the 3 x 4 sums written one int64 a
    trip. PRODUCT reads src2 as well: 8 more beats a plane."""
    assert load(8) == 34 and sweep(16) == 22
    want = SETUP + stream(6, load(8), sweep(16)) + loop(12, "wr")
    assert cycles.elementwise_cycles("stats", 2, 3, 4, 4, SQUARE, B) == want == 24 + 34 + 5 * 36 + 24 + 20
    assert (cycles.elementwise_cycles("stats", 2, 3, 4, 4, PRODUCT, B)
            == SETUP + stream(6, load(8, 8), sweep(16)) + loop(12, "wr") == 474)


@pytest.mark.parametrize("out_bits, beats", [(8, 2), (16, 4), (32, 8)])
def test_apply_output_widths_by_hand(out_bits, beats):
    """N = 1, C = 2, 4 x 4, no second source: 16 outputs a plane are 2 int8, 4 int16 or 8 int32
    beats, stored after the plane's sweep while the next plane loads."""
    want = SETUP + apply_setup(2) + stream(2, load(8), sweep(16) + store(beats))
    assert cycles.elementwise_cycles("apply", 1, 2, 4, 4, R.apply_mode(out_bits=out_bits), B) == want


@pytest.mark.parametrize("src2, mask, extra", [
    ("none", False, ()), ("int32", False, (8,)), ("int8", False, (2,)), ("none", True, (2,)),
    ("int32", True, (8, 2)), ("int8", True, (2, 2))])
def test_apply_second_sources_and_mask_by_hand(src2, mask, extra):
    """Each read stream is its own burst a plane: an int32 src2 8 beats, an int8 act or mask 2;
    RELU costs nothing."""
    for relu in (False, True):
        mode = R.apply_mode(src2, relu=relu, mask=mask, out_bits=8)
        want = SETUP + apply_setup(2) + stream(2, load(8, *extra), sweep(16) + store(2))
        assert cycles.elementwise_cycles("apply", 1, 2, 4, 4, mode, B) == want


def test_one_element_by_hand():
    """N = C = H = W = 1: no stream fills a beat, every loop runs once, nothing overlaps."""
    assert (cycles.elementwise_cycles("stats", 1, 1, 1, 1, SQUARE, B)
            == SETUP + load(1) + sweep(1) + STEP + loop(4, "wr"))
    mode = R.apply_mode("int32", mask=True, out_bits=16)
    assert (cycles.elementwise_cycles("apply", 1, 1, 1, 1, mode, B)
            == SETUP + apply_setup(1) + load(1, 1, 1) + sweep(1) + store(1) + STEP == 196)
    assert cycles.elementwise_beats("apply", 1, 1, 1, 1, mode, B) == max(3, 1 + 3)  # the plane sums on gmem_wr
    assert cycles.elementwise_bytes("apply", 1, 1, 1, 1, mode) == (4 + 4 + 1 + 24, 2 + 24)


def test_planes_off_the_beat_by_hand():
    """3 x 3 planes: 9 elements fill no int32, int16 or int8 beat, so every DDR loop moves one a
    trip; the sweep still takes two lanes a trip (5 trips)."""
    mode = R.apply_mode("int8", out_bits=16)
    want = SETUP + apply_setup(1) + stream(2, load(9, 9), sweep(9) + store(9))
    assert cycles.elementwise_cycles("apply", 2, 1, 3, 3, mode, B) == want


def test_the_wider_port_by_hand():
    """ZCU104, 128-bit beats: 4 int32 a beat and 4 lanes a trip, 16 int8 a beat; the coefficients
    still one int64 a trip."""
    z = boards.board("zcu104")
    want = SETUP + apply_setup(2) + stream(2, load(4, 1), sweep(16, 4) + store(1))
    assert cycles.elementwise_cycles("apply", 1, 2, 4, 4, R.apply_mode("int8", relu=True), z) == want
    assert cycles.elementwise_beats("apply", 1, 2, 4, 4, R.apply_mode("int8", relu=True), z) == 2 * 4  # src1; act on gmem_wr


def test_the_streaming_overlap_by_hand():
    """A first-stage plane (32 x 32: 512 int32 beats) on the PYNQ-Z2: APPLY with an int8 shortcut
    and int8 out loads 512 + 128 beats while the previous plane sweeps 512 trips and stores 128
    beats; in series (before the overlap) a plane took the sum of the three."""
    mode = R.apply_mode("int8", relu=True, out_bits=8)
    ld, work = load(512, 128), sweep(1024) + store(128)
    assert ld == 536 + 152 + CALL and work == 526 + 147 + CALL
    got = cycles.elementwise_cycles("apply", 128, 16, 32, 32, mode, B)
    assert got == SETUP + apply_setup(16) + stream(128 * 16, ld, work)
    assert got < 0.55 * (SETUP + apply_setup(16) + 128 * 16 * (ld + work + STEP))


def test_the_beat_bound_and_bytes():
    """The busiest channel's beats: reads add up on gmem_rd but act's, on gmem_wr's read channel,
    the output and plane sums on gmem_wr's write channel. The kernel's pass (a plane's loads
    beside the previous plane's sweep and store, with its loops' depths; act's load after src1's)
    costs more than the bound, less than 1.25 times it (with act's beats) on a first-stage layer."""
    m = 128 * 16 * 32 * 32
    mode = R.apply_mode("int8", relu=True, out_bits=8)
    assert cycles.elementwise_bytes("apply", 128, 16, 32, 32, mode) == (5 * m + 24 * 16, m + 24 * 128 * 16)
    assert cycles.elementwise_beats("apply", 128, 16, 32, 32, mode, B) == m // 2  # src1; act and y on gmem_wr
    assert cycles.elementwise_bytes("stats", 128, 16, 32, 32, PRODUCT) == (8 * m, 8 * 4 * 16)
    assert cycles.elementwise_beats("stats", 128, 16, 32, 32, PRODUCT, B) == m  # two int32 streams, one bundle
    assert cycles.elementwise_beats("apply", 128, 16, 32, 32, R.apply_mode(out_bits=32), B) == m // 2 + 3 * 128 * 16
    for op, mode, after in (("stats", SQUARE, 0), ("apply", mode, m // 8)):  # elem_load reads act after src1
        bound = cycles.elementwise_beats(op, 128, 16, 32, 32, mode, B)
        assert bound < cycles.elementwise_cycles(op, 128, 16, 32, 32, mode, B) < 1.25 * (bound + after)


@pytest.mark.parametrize("op, mode", [("stats", 2), ("apply", 3), ("apply", 3 << 4), ("apply", 1 << 6), ("conv", 0)])
def test_refused_modes_are_named(op, mode):
    with pytest.raises(E2TError, match="refuses|not a per-element op"):
        cycles.elementwise_cycles(op, 1, 1, 1, 1, mode, B)


SHAPES = [(1, 1, 1, 1), (2, 3, 4, 4), (2, 5, 3, 3), (1, 2, 8, 8), (3, 4, 5, 7), (1, 64, 8, 8), (2, 16, 32, 32)]
MODES = [("stats", SQUARE), ("stats", PRODUCT)] + [
    ("apply", R.apply_mode(src2, relu, mask, bits)) for src2 in ("none", "int32", "int8")
    for relu, mask in ((False, False), (True, True), (False, True)) for bits in (8, 16, 32)]


@pytest.mark.parametrize("name", ["pynq-z2", "zcu104"])
def test_the_model_walks_the_kernels_loops(name, tmp_path):
    """Every pipelined loop of STATS and APPLY, entered and iterated as often as the model says:
    a build of hls/src/e2t_engine.cpp with -DE2T_TRIPS counts them, on every mode and output
    width, planes on and off the beat, one element and a whole first-stage layer."""
    if shutil.which(csim.CXX) is None:
        pytest.skip(f"{csim.CXX} is not installed")
    lib, b = _trip_build(name, tmp_path), boards.board(name)
    rng = np.random.default_rng(5)
    for n, c, h, w in SHAPES:
        m = n * c * h * w
        ports = {"src1": rng.integers(-2**20, 2**20, m).astype(np.int32),
                 "src2": rng.integers(-2**20, 2**20, m).astype(np.int32),
                 "act": rng.integers(-128, 128, m).astype(np.int8), "mask": rng.integers(-1, 2, m).astype(np.int8),
                 "coef": np.tile(np.array([3, -2, 5], np.int64), c), "dst8": np.zeros(m, np.int8),
                 "dst16": np.zeros(m, np.int16), "out": np.zeros(m, np.int32),
                 "stats": np.zeros(max(4 * c, 3 * n * c), np.int64)}
        regs = {"batch": n, "c_in": c, "h_in": h, "w_in": w, "shift": 3, "shift2": 1}
        for op, mode in MODES:
            status, got = _kernel_trips(lib, {**regs, "op": R.ops[op.upper()], "mode": mode}, ports)
            tr = cycles.Trace()
            cycles.elementwise_cycles(op, n, c, h, w, mode, b, tr)
            assert status == 0 and got == tr.counts(), ((n, c, h, w), op, mode)
