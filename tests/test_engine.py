"""The engine's CPU builds (ap_types kernel, native kernel, fast GEMM path) against the
numeric contract (contract/numerics.py, and plain loops in tests/naive.py): integers, not tolerances."""
import numpy as np
import pytest

import naive
from engines import BUILDS, IDS, make_engine
from hls import boards, regmap
from hls.csim import EngineError
from contract import numerics as nx

TILE = boards.board(boards.DEFAULT_BOARD)


@pytest.fixture(scope="module", params=BUILDS, ids=IDS)
def engine(request):
    return make_engine(request.param)


def random_shapes(seed: int, count: int):
    """(n, c, o, h, w, k, stride, pad): odd sizes, channels off the tile grid, 1x1 and FC cases."""
    rng = np.random.default_rng(seed)
    fixed = [(1, 1, 1, 1, 1, 1, 1, 0), (3, 20, 10, 1, 1, 1, 1, 0), (2, 9, 17, 7, 5, 3, 2, 1), (1, 5, 3, 8, 8, 1, 2, 0)]
    for shape in fixed:
        yield shape
    for _ in range(count):
        k = int(rng.choice([1, 3]))
        pad = int(rng.integers(0, 2)) if k == 3 else 0
        yield (int(rng.integers(1, 9)), int(rng.integers(1, 19)), int(rng.integers(1, 19)), int(rng.integers(k, 12)),
               int(rng.integers(k, 12)), k, int(rng.integers(1, 3)), pad)


def operands(rng, n, c, o, h, w, k, stride, pad):
    x = rng.integers(-128, 128, (n, c, h, w))
    wq = rng.integers(-128, 128, (o, c, k, k))
    ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    g = rng.integers(-32768, 32768, (n, o, ho, wo))
    return x, wq, g


@pytest.mark.parametrize("seed", [1, 2])
def test_conv_ops_equal_the_contract(engine, seed):
    rng = np.random.default_rng(seed)
    for n, c, o, h, w, k, stride, pad in random_shapes(seed, 8):
        x, wq, g = operands(rng, n, c, o, h, w, k, stride, pad)
        y, r, st = engine.conv_fwd(x, wq, stride, pad)
        y_ref, r_ref = nx.conv_fwd(x, wq, stride, pad)
        assert (r, st["saturations"]) == (r_ref, 0) and np.array_equal(y, y_ref)
        shifts = rng.integers(0, 20, o)
        gx, r, _ = engine.conv_bwd_data(g, wq, shifts, stride, pad, (h, w))
        gx_ref, r_ref, _ = nx.conv_bwd_data(g, wq, shifts, stride, pad, (h, w))
        assert r == r_ref and np.array_equal(gx, gx_ref)
        G, none, _ = engine.conv_wgrad(x, g, k, stride, pad, "full")
        assert none is None and np.array_equal(G, nx.conv_wgrad(x, g, k, stride, pad, 128))


def test_small_shapes_equal_plain_loops(engine):
    rng = np.random.default_rng(5)
    for n, c, o, h, w, k, stride, pad in [(2, 3, 4, 5, 7, 3, 2, 1), (1, 2, 3, 6, 5, 1, 1, 0)]:
        x, wq, g = operands(rng, n, c, o, h, w, k, stride, pad)
        assert np.array_equal(engine.conv_fwd(x, wq, stride, pad, shift=0)[0], naive.conv_acc(x, wq, stride, pad))
        assert np.array_equal(engine.conv_wgrad(x, g, k, stride, pad)[0], naive.wgrad_acc(x, g, k, stride, pad))


def test_saturation_edges(engine):
    """Extreme operands: the widest sums the accumulators allow, and outputs clipped when the
    host passes a shift too small for them (counted, as the contract says)."""
    n, c, o, h, w, k = 2, 64, 64, 6, 6, 3
    x = np.full((n, c, h, w), -128)
    wq = np.full((o, c, k, k), -128)
    g = np.full((n, o, h, w), -32768)
    y, r, _ = engine.conv_fwd(x, wq, 1, 1)
    assert np.array_equal(y, nx.conv_fwd(x, wq, 1, 1)[0]) and y.max() == 128 * 128 * c * k * k
    shifts = np.zeros(o, dtype=np.int64)
    shifts[0] = 12  # channel 0 has the largest exponent: aligned up by 2^12, |W_al| = 2^19
    gx, r, _ = engine.conv_bwd_data(g, wq, shifts, 1, 1, (h, w))
    assert r > 0 and np.array_equal(gx, nx.conv_bwd_data(g, wq, shifts, 1, 1, (h, w))[0])
    gx0, _, st = engine.conv_bwd_data(g, wq, shifts, 1, 1, (h, w), shift=0)
    w_al, _ = nx.aligned_weights(wq, shifts)
    clipped, count = nx.OUT.saturate(naive.conv_bwd_acc(g, w_al, 1, 1, (h, w)))
    assert count > 0 and st["saturations"] == count and np.array_equal(gx0, clipped)
    G, _, _ = engine.conv_wgrad(x, g, k, 1, 1)
    assert np.array_equal(G, nx.conv_wgrad(x, g, k, 1, 1, 128))


@pytest.mark.parametrize("seed", [3, 4])
def test_psg_equals_the_contract(engine, seed):
    rng = np.random.default_rng(seed)
    for n, c, o, h, w, k, stride, pad in random_shapes(seed, 5):
        x, _, g = operands(rng, n, c, o, h, w, k, stride, pad)
        g_msb = nx.conv_wgrad(nx.msb(x), g, k, stride, pad, 8)
        g_full = nx.conv_wgrad(x, g, k, stride, pad, 128)
        T = int(np.median(np.abs(g_msb)))
        for mode, thr, ref in (("abs", T, {"T": T}), ("ratio", nx.ratio_fixed(0.3), {"R": nx.ratio_fixed(0.3)})):
            G, sign, st = engine.conv_wgrad(x, g, k, stride, pad, mode, thr)
            want, sure = nx.psg_select(g_msb, g_full, **ref)
            tiles, recomputed, _ = nx.uncertain_tiles(sure, TILE.tile_o, TILE.tile_i)
            assert np.array_equal(G, g_msb) and np.array_equal(sign, want)
            assert (st["psg_sure"], st["psg_tiles"], st["psg_recomputed"]) == (int(sure.sum()), tiles, recomputed)


def test_psg_threshold_extremes(engine):
    """T = 0: every entry is the predictor's sign, nothing recomputed; T = 2^62 ("infinite"):
    every entry is sign(G_full), every tile recomputed."""
    rng = np.random.default_rng(9)
    x, _, g = operands(rng, 3, 11, 13, 6, 6, 3, 1, 1)
    g_msb = nx.conv_wgrad(nx.msb(x), g, 3, 1, 1, 8)
    _, sign, st = engine.conv_wgrad(x, g, 3, 1, 1, "abs", 0)
    assert np.array_equal(sign, np.sign(g_msb)) and st["psg_recomputed"] == 0 and st["psg_sure"] == g_msb.size
    _, sign, st = engine.conv_wgrad(x, g, 3, 1, 1, "abs", nx.threshold_abs(float("inf"), 0, 0))
    assert np.array_equal(sign, np.sign(nx.conv_wgrad(x, g, 3, 1, 1, 128)))
    assert st["psg_sure"] == 0 and st["psg_recomputed"] == st["psg_tiles"] == 2 * 2


@pytest.mark.parametrize("e_w", [-48, -30, -12])
def test_update_equals_the_contract(engine, e_w):
    w, buf, sign = naive.update_operands(e_w + 100, 1000)
    k = nx.UpdateConstants.from_floats(0.1, 1e-4, 0.9)
    w_ref, buf_ref, sat_ref = nx.sign_update(w, e_w, buf, sign, k)
    master, mom = w.astype(np.int32), buf.astype(np.int32)
    sat = engine.update(master, mom, sign, e_w, k)
    assert sat == sat_ref > 0 and np.array_equal(master, w_ref) and np.array_equal(mom, buf_ref)


def test_status_names_the_problem(engine):
    x = np.zeros((1, 65, 4, 4), np.int64)
    with pytest.raises(EngineError, match="BAD_SHAPE"):
        engine.conv_fwd(x, np.zeros((2, 65, 3, 3)), 1, 1)
    with pytest.raises(EngineError, match="BAD_SHAPE"):  # stride 3
        engine.conv_fwd(x[:, :4], np.zeros((2, 4, 3, 3)), 3, 1)
    with pytest.raises(EngineError, match="BAD_ARG"):  # a weight shift outside [0, WSHIFT_MAX]
        engine.conv_bwd_data(np.zeros((1, 2, 4, 4)), np.zeros((2, 4, 3, 3)), [0, nx.WSHIFT_MAX + 1], 1, 1, (4, 4))
    with pytest.raises(EngineError, match="BAD_ARG"):  # ratio above 1
        engine.conv_wgrad(x[:, :4], np.zeros((1, 2, 4, 4)), 3, 1, 1, "ratio", (1 << 16) + 1)
    assert engine.call({"op": 9}, {})["status"] == regmap.STATUS["BAD_OP"]
    assert engine.call({"op": regmap.OPS["NOP"]}, {})["status"] == regmap.STATUS["OK"]
    with pytest.raises(EngineError, match="8-bit range"):
        engine.conv_fwd(x[:, :4] + 200, np.zeros((2, 4, 3, 3)), 1, 1)
    with pytest.raises(EngineError, match="unknown register"):
        engine.call({"opp": 1}, {})


def test_narrow_maps_equal_the_contract(engine):
    """Output maps whose width divides the vector lanes (1, 2, 4, 8, 16 columns): the fast build
    packs whole rows into one vector there; odd heights leave a partial last group."""
    rng = np.random.default_rng(11)
    for wo in (1, 2, 4, 8, 16):
        for k, stride, pad in ((3, 1, 1), (3, 2, 1), (1, 2, 0), (2, 1, 0), (2, 2, 1), (1, 1, 0)):
            w_in = (wo - 1) * stride + k - 2 * pad
            if w_in < 1 or w_in > 32:
                continue
            h_in = int(rng.integers(max(1, k - 2 * pad), 12))
            n, c, o = int(rng.integers(1, 4)), int(rng.integers(1, 6)), int(rng.integers(1, 20))
            x, wq, g = operands(rng, n, c, o, h_in, w_in, k, stride, pad)
            assert g.shape[3] == wo
            y, r, _ = engine.conv_fwd(x, wq, stride, pad)
            assert np.array_equal(y, nx.conv_fwd(x, wq, stride, pad)[0]), (wo, k, stride, pad)
            shifts = rng.integers(0, 5, o)
            gx, _, _ = engine.conv_bwd_data(g, wq, shifts, stride, pad, (h_in, w_in))
            assert np.array_equal(gx, nx.conv_bwd_data(g, wq, shifts, stride, pad, (h_in, w_in))[0])


def test_persistent_ports_are_checked_once_and_found_again_by_their_arrays(engine):
    """``call(..., persistent=True)`` (the emulated overlay's views): the first call checks the
    buffers as any call does; the same arrays again run on their kept Ports (new contents, the
    same answer as a plain call); another array is a new set."""
    regs = {"op": regmap.OPS["UPDATE"], "count": 8, "e_w": -30, "lr": 1 << 10, "wd": 0, "mu": 1 << 14}
    master, mom, sgn = np.zeros(8, np.int32), np.zeros(8, np.int32), np.ones(8, np.int8)
    with pytest.raises(EngineError, match="buffer 'master'"):
        engine.call(regs, {"master": master.astype(np.int64), "mom": mom, "sgn": sgn}, persistent=True)
    ports = {"master": master, "mom": mom, "sgn": sgn}
    engine.call(regs, ports, persistent=True)
    sgn[:] = -1
    engine.call(regs, ports, persistent=True)
    w2, m2 = np.zeros(8, np.int32), np.zeros(8, np.int32)
    engine.call(regs, {"master": w2, "mom": m2, "sgn": np.ones(8, np.int8)})
    engine.call(regs, {"master": w2, "mom": m2, "sgn": -np.ones(8, np.int8)})
    assert np.array_equal(master, w2) and np.array_equal(mom, m2) and master.any()
    other = {"master": master.copy(), "mom": mom.copy(), "sgn": sgn}
    engine.call(regs, other, persistent=True)
    assert not np.array_equal(other["master"], master)  # its own arrays were updated, not the first set's
