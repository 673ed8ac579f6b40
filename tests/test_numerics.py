"""contract/numerics.py against plain-integer models of docs/numerics.md: integers, not tolerances."""
import math

import numpy as np
import pytest

import naive
from contract import numerics as nx

SHAPES = [  # (n, c_in, c_out, h, w, k, stride, pad)
    (1, 1, 1, 1, 1, 1, 1, 0), (2, 3, 4, 5, 7, 3, 1, 1), (3, 4, 2, 7, 6, 3, 2, 1),
    (1, 5, 3, 8, 8, 1, 2, 0), (2, 2, 5, 9, 5, 3, 2, 0), (4, 3, 3, 6, 6, 3, 1, 0),
    (2, 16, 8, 4, 4, 3, 1, 1), (1, 6, 7, 11, 9, 1, 1, 0),
]


def rand_int(rng, fmt, shape, full_range=True):
    return rng.integers(fmt.lo if full_range else fmt.lo // 4, fmt.hi + 1, size=shape, dtype=np.int64)


def test_rshift_round_is_round_half_up():
    rng = np.random.default_rng(0)
    v = np.concatenate([rng.integers(-2**40, 2**40, 2000), np.array([-3, -2, -1, 0, 1, 2, 3, 5, -5])])
    for s in range(0, 21):
        got = nx.rshift_round(v, s)
        assert got.tolist() == [naive.rshift_round(int(a), s) for a in v]
        assert got[-9:].tolist() == [math.floor(int(a) / 2**s + 0.5) for a in v[-9:]]
    assert nx.rshift_round(np.array([5, -5, 6]), 1).tolist() == [3, -2, 3]  # ties go up
    assert nx.rshift_round(np.array([3]), -2).tolist() == [12]


def test_exponent_is_tightest_without_saturation():
    rng = np.random.default_rng(1)
    for fmt in (nx.ACT, nx.GRAD):
        for amax in np.concatenate([10.0 ** rng.uniform(-12, 6, 300), [127.5, 127.49999, 1.0, 2**-20]]):
            e = nx.exponent_for(float(amax), fmt)
            assert amax * 2.0**-e < fmt.hi + 0.5 <= amax * 2.0**-(e - 1)
            q, sat = nx.quantize(np.array([amax, -amax], dtype=np.float64), e, fmt)
            assert sat == 0 and q[0] <= fmt.hi
    assert nx.exponent_for(0.0, nx.ACT) == 0


def test_quantize_rounds_half_up_and_counts_saturation():
    x = np.array([2.5, -2.5, 1.49999, -0.5, 0.5, 200.0, -300.0], dtype=np.float32)
    q, sat = nx.quantize(x, 0, nx.ACT)
    assert q.tolist() == [3, -2, 1, 0, 1, 127, -128]
    assert sat == 2
    # the largest float32 below 0.5 must not round up (float32 + 0.5 would give 1)
    q, _ = nx.quantize(np.array([np.nextafter(np.float32(0.5), np.float32(0))]), 0, nx.ACT)
    assert q.tolist() == [0]


def test_weights_for_use_minimal_shift_no_saturation():
    rng = np.random.default_rng(2)
    w = rng.integers(-2**30, 2**30, size=(6, 3, 3, 3)) >> rng.integers(0, 30, size=(6, 1, 1, 1))
    w[0] = 0
    w[1] = 0
    w[1, 0, 0, 0] = 255  # 255 >> 1 rounds to 128: needs s = 2
    q, s = nx.weights_for_use(w)
    assert np.abs(q).max() <= 127 and s[0] == 0 and s[1] == 2
    for o in range(6):
        assert q[o].ravel().tolist() == [naive.rshift_round(int(a), int(s[o])) for a in w[o].ravel()]
        if s[o] > 0:  # one bit less would overflow int8
            assert naive.rshift_round(int(np.abs(w[o]).max()), int(s[o]) - 1) > 127


@pytest.mark.parametrize("shape", SHAPES)
def test_conv_ops_equal_plain_integer_loops(shape):
    n, c, o, h, w, k, stride, pad = shape
    rng = np.random.default_rng(hash(shape) % 2**32)
    x = rand_int(rng, nx.ACT, (n, c, h, w))
    wq = rand_int(rng, nx.WGT, (o, c, k, k))
    y, r = nx.conv_fwd(x, wq, stride, pad)
    assert r == 0 and np.array_equal(y, naive.conv_acc(x, wq, stride, pad))

    g = rand_int(rng, nx.GRAD, y.shape)
    e = rng.integers(-20, -5, size=o)
    gx, r, e_ref = nx.conv_bwd_data(g, wq, e, stride, pad, (h, w))
    w_al = np.array([[[[naive.rshift_round(int(v), int(e_ref - e[i])) for v in row] for row in ch] for ch in wq[i]]
                     for i in range(o)])
    ref = naive.conv_bwd_acc(g, w_al, stride, pad, (h, w))
    assert e_ref == e.max() - nx.ALIGN_BITS
    assert np.array_equal(gx, np.vectorize(lambda v: naive.rshift_round(int(v), r))(ref))
    assert np.abs(gx).max() <= nx.OUT.hi

    for x_in, x_max in ((x, 128), (nx.msb(x), 8)):
        assert np.array_equal(nx.conv_wgrad(x_in, g, k, stride, pad, x_max), naive.wgrad_acc(x_in, g, k, stride, pad))


def test_bwd_data_output_shift_keeps_32_bits():
    # all terms at their extremes: 64 channels x 3x3 x 32768 x 128 > 2**31 needs r = 1
    g = np.full((1, 64, 4, 4), nx.GRAD.lo, dtype=np.int64)
    w = np.full((64, 2, 3, 3), nx.WGT.lo, dtype=np.int64)
    gx, r, e_ref = nx.conv_bwd_data(g, w, np.full(64, 0), 1, 1, (4, 4))
    assert r >= 1 and np.abs(gx).max() <= nx.OUT.hi


def test_msb_rounds_and_saturates():
    x = np.array([-128, -9, -8, -1, 0, 7, 8, 23, 24, 119, 120, 127])
    assert nx.msb(x).tolist() == [-8, -1, 0, 0, 0, 0, 1, 1, 2, 7, 7, 7]


def test_psg_threshold_extremes():
    rng = np.random.default_rng(3)
    g_msb = rng.integers(-50, 50, size=(4, 3, 3, 3))
    g_full = rng.integers(-800, 800, size=(4, 3, 3, 3))
    sign, sure = nx.psg_select(g_msb, g_full, T=nx.threshold_abs(0.0, -7, -20))
    assert sure.all() and np.array_equal(sign, np.sign(g_msb))
    sign, sure = nx.psg_select(g_msb, g_full, T=nx.threshold_abs(math.inf, -7, -20))
    assert not sure.any() and np.array_equal(sign, np.sign(g_full))
    sign, sure = nx.psg_select(g_msb, g_full, R=nx.ratio_fixed(0.5))
    assert np.array_equal(sure, np.abs(g_msb) * 2 >= np.abs(g_msb).max())


def test_absolute_threshold_in_integer_terms():
    # tau = 1e-3, G_msb LSB = 2**(e_x + 4 + e_g) = 2**-14: |G| >= 1e-3 <=> |q| >= ceil(16.384) = 17
    assert nx.threshold_abs(1e-3, -8, -10) == 17
    sign, sure = nx.psg_select(np.array([16, 17, -17, -16]), np.array([-1, -1, 1, 1]), T=17)
    assert sure.tolist() == [False, True, True, False] and sign.tolist() == [-1, 1, -1, 1]


def test_uncertain_tiles_hand_count():
    sure = np.ones((5, 3, 3, 3), dtype=bool)
    sure[0, 0, 1, 1] = False  # tile (0, 0)
    sure[4, 2, 0, 0] = False  # tile (2, 1) with 2x2 tiles over a 5x3 grid
    assert nx.uncertain_tiles(sure, 2, 2) == (3 * 2, 2, 4 + 1)  # the (2, 1) edge tile holds 1 pair
    assert nx.uncertain_tiles(sure, 16, 16) == (1, 1, 15)
    assert nx.uncertain_tiles(np.ones((4, 4, 1, 1), bool), 2, 2) == (4, 0, 0)


def plain_update(w, e_w, buf, sign, k):
    """The update of docs/numerics.md with Python ints, element by element."""
    out_w, out_b = [], []
    for wi, bi, si in zip(w.ravel().tolist(), buf.ravel().tolist(), sign.ravel().tolist()):
        d = si * 2**24 + naive.rshift_round(k.WD * wi, 8 - e_w)
        b = max(-2**31, min(2**31 - 1, naive.rshift_round(k.MU * bi, 16) + d))
        wn = max(-2**31, min(2**31 - 1, wi - naive.rshift_round(k.LR * b, 56 + e_w)))
        out_w.append(wn)
        out_b.append(b)
    return np.array(out_w).reshape(w.shape), np.array(out_b).reshape(w.shape)


@pytest.mark.parametrize("e_w", [-48, -24, -16, -3])
def test_sign_update_equals_plain_ints(e_w):
    rng = np.random.default_rng(e_w + 100)
    w = rng.integers(-2**30, 2**30, size=(4, 3, 3, 3))
    buf = rng.integers(-2**31, 2**31, size=w.shape)
    buf.ravel()[:4] = [2**31 - 1, -2**31, 2**31 - 2**20, 0]  # extremes of the momentum format
    w.ravel()[:2] = [-2**31 + 10, 2**31 - 10]  # ... pushing the weights past theirs
    sign = rng.integers(-1, 2, size=w.shape)
    k = nx.UpdateConstants.from_floats(0.1, 1e-4, 0.9)
    w2, b2, sat = nx.sign_update(w, e_w, buf, sign, k)
    pw, pb = plain_update(w, e_w, buf, sign, k)
    assert np.array_equal(w2, pw) and np.array_equal(b2, pb)
    assert sat >= 2  # both edge weights saturate, and are counted


def test_update_constants_and_master_format():
    k = nx.UpdateConstants.from_floats(0.1, 1e-4, 0.9)
    assert (k.LR, k.WD, k.MU) == (429496730, 429497, 58982)
    with pytest.raises(ValueError):
        nx.UpdateConstants.from_floats(0.5, 1e-4, 0.9)
    w = np.array([[0.5, -0.25], [0.125, 0.0]], dtype=np.float32)
    q, e = nx.master_from_float(w)
    assert np.abs(q).max() < 2**23 and np.array_equal(np.ldexp(q.astype(np.float64), e), w)
    assert nx.master_from_float(np.zeros(3))[1] == nx.MASTER_EXP_MIN
    big, e2 = nx.renormalize(np.array([2**30, -3]), -20)
    assert big.tolist() == [2**29, -1] and e2 == -19


def test_float32_quantize_tensor_rounds_as_the_float64_path():
    """quantize_tensor rounds float32 tensors in float32: the same integers as quantize's float64
    rounding, on random values, on exact halves and on the float32 neighbours of halves."""
    rng = np.random.default_rng(5)
    halves = np.arange(-127, 128, dtype=np.float32) + np.float32(0.5)
    near = np.concatenate([np.nextafter(halves, np.float32(np.inf)), np.nextafter(halves, np.float32(-np.inf)),
                           np.float32([0.49999997, -0.49999997, -0.5, 0.5, 0.0, -0.0, 1e-30, -1e-30])])
    for fmt in (nx.ACT, nx.GRAD):
        for x in (rng.standard_normal(10_000).astype(np.float32) * np.float32(3e-3),
                  np.concatenate([halves, near, np.float32([127.4, -127.4])])):
            q, e, sat = nx.quantize_tensor(x, fmt)
            want, sat64 = nx.quantize(x, e, fmt)
            assert q.dtype == np.int64 and np.array_equal(q, want) and sat == sat64 == 0


def test_dequantize_rounds_once_as_the_float64_path():
    rng = np.random.default_rng(6)
    q = np.concatenate([rng.integers(-2**31, 2**31, 5000), rng.integers(-2**24, 2**24, 5000),
                        np.array([0, 1, -1, 2**24 + 1, -(2**24 + 3), 2**31 - 1, -2**31])])
    for e in (-126, -60, -30, 0, 17, 96, -140, 100):
        want = np.ldexp(q.astype(np.float64), e).astype(np.float32)
        assert np.array_equal(nx.dequantize(q, e), want, equal_nan=True), e
    per = rng.integers(-40, 10, 7).reshape(1, -1, 1)
    qq = rng.integers(-2**31, 2**31, (3, 7, 5))
    assert np.array_equal(nx.dequantize(qq, per), np.ldexp(qq.astype(np.float64), per).astype(np.float32))
