"""BatchNorm, the residual and the quantization in integers: the host's O(channels) rules
(docs/numerics.md, section 10) that turn the engine's exact STATS sums into APPLY's
coefficients and the exponent of the tensor APPLY writes.

Everything here is float64 arithmetic on per-channel vectors, in one fixed order, and Python
integers where a bound must be exact; every implementation (the board's host, the reference
trainer) calls these functions, so they all give APPLY the same integers.
"""
from __future__ import annotations

import numpy as np

from . import numerics as nx
from .errors import E2TError

STAT_HI = (1 << (nx.STAT_BITS - 1)) - 1  # the largest STATS operand that does not clip
M_LIMIT = float((1 << nx.COEF_M_BITS) - 1) + 0.5  # |x| below these round (half up) into the bounds
B_LIMIT = float((1 << nx.COEF_B_BITS) - 1) + 0.5


def stat_shift(bound: int) -> int:
    """The smallest ``t >= 0`` with ``rshift_round(bound, t) <= 2^17 - 1``: a STATS operand whose
    magnitude is at most ``bound`` never clips (``bound`` a non-negative integer)."""
    bound, t = int(bound), 0
    while ((bound + ((1 << t) >> 1)) >> t) > STAT_HI:
        t += 1
    return t


def round_half_up(x) -> np.ndarray:
    """``floor(x + 1/2)`` of float64 values as int64, exactly (``x + 0.5`` itself can round)."""
    x = np.asarray(x, np.float64)
    f = np.floor(x)
    return (f + (x - f >= 0.5)).astype(np.int64)


def moments(stats, t: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and (biased) variance, in the operand's integer units, from STATS SQUARE
    sums ``stats`` ([C][4]) of operands rounded by ``t`` over ``m`` elements a channel."""
    s = np.asarray(stats, np.int64)
    mean_t = s[:, 0].astype(np.float64) / m
    var_t = np.maximum(s[:, 1].astype(np.float64) / m - mean_t * mean_t, 0.0)
    return np.ldexp(mean_t, t), np.ldexp(var_t, 2 * t)


def coefficients(m1, m2, b0, e_out: int) -> tuple[np.ndarray, int]:
    """APPLY's ``coef`` ([C][3] int64) and shift ``S`` for the real map ``m1 a + m2 b + b0`` written at
    exponent ``e_out``: the largest ``S <= 62`` that keeps every ``|M| < 2^24`` and ``|B| < 2^56`` after
    rounding half up."""
    cols = [np.ldexp(np.asarray(v, np.float64), -e_out) for v in (m1, m2, b0)]
    if not all(np.isfinite(c).all() for c in cols):
        raise E2TError("a BatchNorm coefficient is not finite (a NaN or infinite scale, shift or statistic)")
    top = [float(np.max(np.abs(c), initial=0.0)) for c in cols]
    s = nx.SHIFT_MAX
    while s >= 0 and (np.ldexp(max(top[0], top[1]), s) >= M_LIMIT or np.ldexp(top[2], s) >= B_LIMIT):
        s -= 1
    if s < 0:
        raise E2TError(f"APPLY coefficients do not fit at output exponent {e_out}: the largest multiplier "
                       f"{max(top[0], top[1]):.3g} needs |M| < 2^{nx.COEF_M_BITS} (the output exponent is too small)")
    return np.stack([round_half_up(np.ldexp(c, s)) for c in cols], 1), s


def corners(coef, shift: int, a_range, b_range=None) -> tuple[int, int]:
    """The least and greatest ``rshift_round(M1 a + M2 b + B, S)`` over each channel's box
    ``a_range`` x ``b_range`` (per-channel (min, max) pairs, ``b_range`` None for no second source),
    in Python integers: the map is affine in a and b, so its extremes are at the corners."""
    lo = hi = None
    b_range = [(0, 0)] * len(coef) if b_range is None else b_range
    for (m1, m2, b), ar, br in zip(np.asarray(coef).tolist(), a_range, b_range):
        for a in ar:
            for bb in br:
                z = (m1 * int(a) + m2 * int(bb) + b + ((1 << shift) >> 1)) >> shift
                lo, hi = (z, z) if lo is None else (min(lo, z), max(hi, z))
    return lo, hi


def apply_plan(m1, m2, b0, fmt: nx.Fmt, a_range, b_range=None, relu: bool = False) -> tuple[int, np.ndarray, int]:
    """(e_out, coef, S): the output exponent, coefficients and shift of an APPLY of the real map
    ``m1 a + m2 b + b0`` (then ReLU when ``relu``) into ``fmt`` with no clip. ``a_range``, ``b_range``:
    each channel's (min, max) of the operands, from STATS or APPLY's plane statistics. The exponent
    is the section-3 rule applied to the map's largest magnitude over the box, then raised while the
    rounded integer coefficients would still clip at a corner."""
    m1, m2, b0 = (np.asarray(v, np.float64) for v in (m1, m2, b0))
    ar = np.asarray(a_range, np.float64)
    br = np.zeros_like(ar) if b_range is None else np.asarray(b_range, np.float64)
    z = [m1 * ar[:, i] + m2 * br[:, j] + b0 for i in (0, 1) for j in (0, 1)]
    top = max(float(np.max(v)) for v in z)
    amax = max(top, 0.0) if relu else max(top, -min(float(np.min(v)) for v in z))
    e = nx.exponent_for(amax, fmt)
    while True:
        coef, s = coefficients(m1, m2, b0, e)
        lo, hi = corners(coef, s, a_range, b_range)
        if hi <= fmt.hi and (relu or lo >= fmt.lo):
            return e, coef, s
        e += 1


def bn_forward(stats, t: int, m: int, e_y, gamma, beta, eps: float) -> dict:
    """BatchNorm in training from STATS SQUARE sums of its input ``y`` (int32 units at per-channel
    exponents ``e_y``): the real affine ``out = m1 y + b0`` per channel, and the batch mean, variance
    and ``invstd`` in real units (what the backward pass and the running statistics need)."""
    mean_u, var_u = moments(stats, t, m)
    scale = np.ldexp(np.ones(len(mean_u)), np.asarray(e_y, np.int64))
    mean, var = mean_u * scale, var_u * scale * scale
    inv = 1.0 / np.sqrt(var + eps)
    m1 = np.asarray(gamma, np.float64) * inv * scale
    return {"m1": m1, "b0": np.asarray(beta, np.float64) - m1 * mean_u, "mean": mean, "var": var, "invstd": inv,
            "mean_units": mean_u}


def bn_backward(gstats, t: int, u: int, m: int, e_g: int, e_y, fwd: dict, gamma) -> dict:
    """BatchNorm's backward from STATS PRODUCT sums (``a = g`` rounded by ``t``, the gradient at its
    output at exponent ``e_g``; ``b = y`` rounded by ``u``, its input): the input gradient's real
    affine ``dy = p g + q y + r`` per channel, and the parameter gradients ``dgamma``, ``dbeta``.
    ``fwd``: bn_forward's result for the same batch."""
    s = np.asarray(gstats, np.int64)
    g1 = np.ldexp(s[:, 0].astype(np.float64), t)        # sum g, in g's units
    g2 = np.ldexp(s[:, 1].astype(np.float64), t + u)    # sum g y, in g's and y's units
    scale = np.ldexp(np.ones(len(g1)), np.asarray(e_y, np.int64))
    inv, mu = fwd["invstd"], fwd["mean_units"]
    centred = g2 - mu * g1                               # sum g (y - mean), in units
    gi = np.asarray(gamma, np.float64) * inv
    p = np.ldexp(gi, e_g)
    k = np.ldexp(gi * inv * inv * scale * scale * centred / m, e_g)
    return {"p": p, "q": -k, "r": k * mu - p * g1 / m,
            "dgamma": np.ldexp(inv * scale * centred, e_g), "dbeta": np.ldexp(g1, e_g)}
