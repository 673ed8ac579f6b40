"""The host's O(channels) rules of contract v2 (contract/bncoef.py): the shifts and coefficients
at their bounds, and BatchNorm forward and backward through STATS and APPLY (the numpy contract)
against float64 BatchNorm on the same integers."""
import math
from fractions import Fraction

import numpy as np
import pytest

from contract import bncoef, numerics as nx
from contract.errors import E2TError


@pytest.mark.parametrize("bound", [0, 1, bncoef.STAT_HI, bncoef.STAT_HI + 1, 2 ** 18 - 2, 2 ** 18 - 1, 2 ** 24 - 1,
                                   2 ** 31, 2 ** 31 - 1, 123456789])
def test_stat_shift_is_the_smallest_shift_that_does_not_clip(bound):
    t = bncoef.stat_shift(bound)
    assert int(nx.rshift_round(bound, t)) <= bncoef.STAT_HI
    assert t == 0 or int(nx.rshift_round(bound, t - 1)) > bncoef.STAT_HI


def test_round_half_up_is_exact_at_ties_and_just_below():
    xs = [0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49999999999999994, -0.49999999999999994, 2 ** 52 + 1.0, -7.0, 3.4999999]
    want = [math.floor(Fraction(x) + Fraction(1, 2)) for x in xs]
    assert bncoef.round_half_up(xs).tolist() == want


def test_coefficients_take_the_largest_shift_within_the_bounds():
    m1, m2, b0 = np.array([1.3, -0.02]), np.array([0.0, 2.0 ** -8]), np.array([5.0, -3.5])
    coef, s = bncoef.coefficients(m1, m2, b0, -3)
    assert np.abs(coef[:, :2]).max() < 2 ** nx.COEF_M_BITS and np.abs(coef[:, 2]).max() < 2 ** nx.COEF_B_BITS
    assert s == 62 or np.abs(np.ldexp(m1, s + 1 + 3)).max() >= bncoef.M_LIMIT
    assert coef[1, 1] == 2 ** (s - 8 + 3)  # a power of two stays exact


def test_coefficients_refuse_a_map_that_cannot_fit():
    with pytest.raises(E2TError, match="do not fit"):
        bncoef.coefficients(np.array([2.0 ** 30]), np.zeros(1), np.zeros(1), 0)
    with pytest.raises(E2TError, match="not finite"):
        bncoef.coefficients(np.array([np.nan]), np.zeros(1), np.zeros(1), 0)


def _conv_like(rng, n, c, hw, spread):
    """int32 'conv outputs' with a per-channel offset and scale."""
    base = rng.normal(0, 1, (n, c, hw, hw)) * rng.uniform(0.3, 3, (1, c, 1, 1)) + rng.normal(0, 1, (1, c, 1, 1))
    return np.round(base * spread).astype(np.int32)


@pytest.mark.parametrize("residual", [None, "int8", "int32"])
def test_batchnorm_forward_through_stats_and_apply_matches_float(residual):
    rng = np.random.default_rng(7)
    n, c, hw = 6, 5, 7
    y = _conv_like(rng, n, c, hw, 2 ** 13)
    e_y = rng.integers(-20, -14, c)
    gamma, beta = rng.uniform(0.5, 1.5, c), rng.normal(0, 0.2, c)
    t = bncoef.stat_shift(int(np.abs(y).max()))
    stats, sat = nx.channel_stats(y, t)
    assert sat == 0
    f = bncoef.bn_forward(stats, t, n * hw * hw, e_y, gamma, beta, 1e-5)
    m2, b, br, extra = np.zeros(c), None, None, 0.0
    if residual == "int8":
        b = rng.integers(-128, 128, (n, c, hw, hw)).astype(np.int8)
        m2 = np.full(c, 2.0 ** -6)
        extra = b.astype(np.float64) * 2.0 ** -6
    elif residual == "int32":
        b = _conv_like(rng, n, c, hw, 2 ** 12)
        ts = bncoef.stat_shift(int(np.abs(b).max()))
        fs = bncoef.bn_forward(nx.channel_stats(b, ts)[0], ts, n * hw * hw, e_y - 1, gamma[::-1], beta, 1e-5)
        m2, f["b0"] = fs["m1"], f["b0"] + fs["b0"]
        extra = fs["m1"].reshape(1, -1, 1, 1) * b + fs["b0"].reshape(1, -1, 1, 1)
    if b is not None:
        br = np.stack([b.min((0, 2, 3)), b.max((0, 2, 3))], 1)
    ar = np.stack([y.min((0, 2, 3)), y.max((0, 2, 3))], 1)
    e, coef, s = bncoef.apply_plan(f["m1"], m2, f["b0"], nx.ACT, ar, br, relu=True)
    z, planes, sat = nx.apply_elementwise(y, coef, s, b=b, relu=True)
    assert sat == 0 and z.dtype == np.int8
    # float64 BatchNorm (two-pass statistics) on the same integers, ReLU, quantized at e
    yr = y * np.ldexp(1.0, e_y).reshape(1, -1, 1, 1)
    mean, var = yr.mean((0, 2, 3)), yr.var((0, 2, 3))
    ref = (yr - mean.reshape(1, -1, 1, 1)) / np.sqrt(var + 1e-5).reshape(1, -1, 1, 1)
    ref = ref * gamma.reshape(1, -1, 1, 1) + beta.reshape(1, -1, 1, 1) + extra
    ref = np.maximum(ref, 0)
    assert e <= nx.exponent_for(ref.max(), nx.ACT) + 1  # the box bound wastes at most a bit here
    assert np.abs(z - np.floor(ref * 2.0 ** -e + 0.5)).max() <= 1
    assert (planes[..., 0] == z.astype(np.int64).sum((2, 3))).all()


def test_batchnorm_backward_through_stats_and_apply_matches_float():
    rng = np.random.default_rng(11)
    n, c, hw = 5, 4, 6
    y = _conv_like(rng, n, c, hw, 2 ** 12)
    g = _conv_like(rng, n, c, hw, 2 ** 20)
    e_y, e_g = rng.integers(-20, -14, c), -30
    gamma = rng.uniform(0.5, 1.5, c)
    m = n * hw * hw
    t = bncoef.stat_shift(int(np.abs(y).max()))
    f = bncoef.bn_forward(nx.channel_stats(y, t)[0], t, m, e_y, gamma, np.zeros(c), 1e-5)
    tg = bncoef.stat_shift(int(np.abs(g).max()))
    gs, sat = nx.channel_stats(g, tg, y, t)
    assert sat == 0
    bwd = bncoef.bn_backward(gs, tg, t, m, e_g, e_y, f, gamma)
    ar = np.stack([gs[:, 2], gs[:, 3]], 1)
    yr_ = np.stack([y.min((0, 2, 3)), y.max((0, 2, 3))], 1)
    e, coef, s = bncoef.apply_plan(bwd["p"], bwd["q"], bwd["r"], nx.GRAD, ar, yr_)
    dy, _, sat = nx.apply_elementwise(g, coef, s, b=y, out_bits=16)
    assert sat == 0 and dy.dtype == np.int16
    # float64 BatchNorm backward on the same integers
    sc = np.ldexp(1.0, e_y).reshape(1, -1, 1, 1)
    yr, gr = y * sc, g * 2.0 ** e_g
    mean, var = yr.mean((0, 2, 3), keepdims=True), yr.var((0, 2, 3), keepdims=True)
    inv = 1 / np.sqrt(var + 1e-5)
    xhat = (yr - mean) * inv
    dgamma, dbeta = (gr * xhat).sum((0, 2, 3)), gr.sum((0, 2, 3))
    ref = gamma.reshape(1, -1, 1, 1) * inv / m * (m * gr - dbeta.reshape(1, -1, 1, 1) - xhat * dgamma.reshape(1, -1, 1, 1))
    assert np.abs(dy - ref * 2.0 ** -e).max() <= 2
    assert np.abs(ref).max() * 2.0 ** -e > 2 ** 13  # the bound leaves at most two bits unused
    np.testing.assert_allclose(bwd["dgamma"], dgamma, rtol=1e-4, atol=1e-6 * np.abs(dgamma).max())
    np.testing.assert_allclose(bwd["dbeta"], dbeta, rtol=1e-4)


def _corners_in_python_integers(coef, shift, a_range, b_range=None):
    """The definition, the independent model of bncoef.corners: every corner of every channel's box
    rounded by ``shift`` in Python integers, then the least and the greatest."""
    b_range = [(0, 0)] * len(coef) if b_range is None else b_range
    z = [(m1 * int(a) + m2 * int(b) + c + ((1 << shift) >> 1)) >> shift
         for (m1, m2, c), ar, br in zip(np.asarray(coef).tolist(), a_range, b_range)
         for a in ar for b in br]
    return min(z), max(z)


def _box(rng, c, lo, hi):
    return np.sort(rng.integers(lo, hi, (c, 2), endpoint=True), 1)


@pytest.mark.parametrize("seed", range(4))
def test_corners_are_the_python_integer_definition(seed):
    """int64 corners against Python integers: random coefficients of every magnitude up to the
    bounds (|M| < 2^24, |B| < 2^56), int32 and int8 boxes, shifts 0..62, and the extremes where
    the corners come nearest 2^57."""
    rng = np.random.default_rng(seed)
    m_max, b_max, lo32, hi32 = 2 ** nx.COEF_M_BITS - 1, 2 ** nx.COEF_B_BITS - 1, -2 ** 31, 2 ** 31 - 1
    for _ in range(150):
        c = int(rng.integers(1, 65))
        coef = np.stack([rng.integers(-m_max, m_max, c, endpoint=True) >> rng.integers(0, 24, c),
                         rng.integers(-m_max, m_max, c, endpoint=True) >> rng.integers(0, 24, c),
                         rng.integers(-b_max, b_max, c, endpoint=True) >> rng.integers(0, 56, c)], 1)
        a = _box(rng, c, lo32, hi32) >> int(rng.integers(0, 31))
        b = [None, _box(rng, c, -128, 127), _box(rng, c, lo32, hi32)][int(rng.integers(0, 3))]
        s = int(rng.choice([0, 1, 2, 61, 62, int(rng.integers(0, 63))]))
        assert bncoef.corners(coef, s, a, b) == _corners_in_python_integers(coef, s, a, b)
    full = np.array([[lo32, hi32]] * 4)
    coef = np.array([[m_max, m_max, b_max], [-m_max, -m_max, -b_max], [m_max, -m_max, 1 - b_max], [0, 0, 0]])
    for s in (0, 1, 31, 62):
        for b in (None, full, np.array([[-128, 127]] * 4)):
            got = bncoef.corners(coef, s, full, b)
            assert got == _corners_in_python_integers(coef, s, full, b)
    lo, hi = bncoef.corners(coef, 0, full, full)  # 2 |M| 2^31 + |B|: past int64 / 2^7
    assert 2 ** 56 < -lo < 2 ** 57 and 2 ** 56 < hi < 2 ** 57


def test_the_shift_is_the_scan_from_62_down():
    """coefficients' shift (from the operands' exponents, then one exact test) against the scan
    from S = 62 down, at the limits, just below and above them, and far from them."""
    def scan(tm, tb):
        s = nx.SHIFT_MAX
        with np.errstate(over="ignore"):  # 1e300 2^62: infinite, past the limit as it should be
            while s >= 0 and (np.ldexp(tm, s) >= bncoef.M_LIMIT or np.ldexp(tb, s) >= bncoef.B_LIMIT):
                s -= 1
        return s

    tops = [0.0, 5e-324, 1e-300, 2.0 ** -40, 0.25, 1.0, 3.0, 2.0 ** 30, 1e300]
    for limit in (bncoef.M_LIMIT, bncoef.B_LIMIT):
        for k in (-62, -40, -1, 0, 1, 7):
            x = math.ldexp(limit, k)
            tops += [x, math.nextafter(x, 0.0), math.nextafter(x, math.inf)]
    for tm in tops:
        for tb in tops:
            want = scan(tm, tb)
            if want < 0:
                with pytest.raises(E2TError, match="do not fit"):
                    bncoef.coefficients(np.array([tm]), np.array([-tm / 2]), np.array([tb]), 0)
            else:
                assert bncoef.coefficients(np.array([tm]), np.array([-tm / 2]), np.array([tb]), 0)[1] == want


def test_apply_plan_joins_operands_of_far_apart_exponents():
    """A gradient at exponent 0 beside one 2^40 finer: the output exponent is raised until the
    coarse one's multiplier fits 24 bits, and the fine one's, below 2^-24 of it, rounds (to 0 here:
    its contribution is lost, at most its own largest value); an operand that is 0 throughout a
    channel takes multiplier 0 whatever its exponent (a training run once stopped there)."""
    rng = np.random.default_rng(3)
    fine = rng.integers(-2 ** 20, 2 ** 20, (2, 3, 4, 4)).astype(np.int32)
    coarse = rng.integers(-3, 4, (2, 3, 4, 4)).astype(np.int32)
    box = lambda v: np.stack([v.min((0, 2, 3)), v.max((0, 2, 3))], 1)  # noqa: E731
    m1, m2 = np.full(3, 2.0 ** -40), np.full(3, 1.0)
    e, coef, s = bncoef.apply_plan(m1, m2, np.zeros(3), nx.OUT, box(fine), box(coarse))
    assert np.abs(coef[:, :2]).max() < 2 ** nx.COEF_M_BITS
    z, _, sat = nx.apply_elementwise(fine, coef, s, b=coarse, out_bits=32)
    want = fine * 2.0 ** -40 + coarse
    assert sat == 0 and np.abs(z * 2.0 ** e - want).max() <= np.abs(fine).max() * 2.0 ** -40 + 2.0 ** e
    zero = np.zeros_like(coarse)
    e, coef, s = bncoef.apply_plan(m1, np.full(3, 2.0 ** 40), np.zeros(3), nx.OUT, box(fine), box(zero))
    assert (coef[:, 1] == 0).all()
    z, _, sat = nx.apply_elementwise(fine, coef, s, b=zero, out_bits=32)
    assert sat == 0 and np.abs(z * 2.0 ** e - fine * 2.0 ** -40).max() <= 2.0 ** e
