"""BatchNorm, the residual and the quantization in integers: the host's O(channels) rules
(docs/numerics.md, section 10) that turn the engine's exact STATS sums into APPLY's
coefficients and the exponent of the tensor APPLY writes.

Everything here is float64 arithmetic on per-channel vectors, in one fixed order, and exact
integers where a bound must be exact (int64 where the bounds keep every value below 2^62, Python
integers for scalars); every implementation (the board's host, the reference trainer) calls
these functions, so they all give APPLY the same integers. A numpy call costs the board's ARM
tens of microseconds (host.call_s in bitstreams/*/energy.json): each rule is a few whole-vector
calls, no loop over channels (host/train/hostops.py's ``bncoef_work`` counts them).
"""
from __future__ import annotations

import math

import numpy as np

from . import numerics as nx
from .errors import E2TError

STAT_HI = (1 << (nx.STAT_BITS - 1)) - 1  # the largest STATS operand that does not clip
M_LIMIT = float((1 << nx.COEF_M_BITS) - 1) + 0.5  # |x| below these round (half up) into the bounds
B_LIMIT = float((1 << nx.COEF_B_BITS) - 1) + 0.5


def stat_shift(bound: int) -> int:
    """The smallest ``t >= 0`` with ``rshift_round(bound, t) <= 2^17 - 1``: a STATS operand whose
    magnitude is at most ``bound`` never clips (``bound`` a non-negative integer)."""
    bound = int(bound)
    t = max(0, bound.bit_length() - (nx.STAT_BITS - 1))  # below it the operand keeps 18 bits: it clips
    while ((bound + ((1 << t) >> 1)) >> t) > STAT_HI:  # at most once: a rounding up to 2^17
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
    q = np.asarray(stats, np.int64)[:, :2].astype(np.float64) / m  # mean_t, E[a_t^2]
    mean_t = q[:, 0]
    var_t = np.maximum(q[:, 1] - mean_t * mean_t, 0.0)
    return np.ldexp(mean_t, t), np.ldexp(var_t, 2 * t)


def _map(m1, m2, b0) -> np.ndarray:
    """The real map's per-channel ``(m1, m2, b0)`` as one float64 [C][3] array."""
    return np.array([m1, m2, b0], np.float64).T.copy()


def _shift(top_m: float, top_b: float) -> int:
    """The largest ``S <= 62`` with ``top_m 2^S < M_LIMIT`` and ``top_b 2^S < B_LIMIT`` (negative where none):
    ``x 2^S`` reaches ``2^k``, above a limit of frexp exponent ``k``, once ``S`` passes ``k`` less
    ``x``'s frexp exponent; from that bound the exact test steps down at most once."""
    s = nx.SHIFT_MAX
    for top, limit in ((top_m, M_LIMIT), (top_b, B_LIMIT)):
        if top > 0:
            s = min(s, math.frexp(limit)[1] - math.frexp(top)[1])
    while s >= 0 and (math.ldexp(top_m, s) >= M_LIMIT or math.ldexp(top_b, s) >= B_LIMIT):
        s -= 1
    return s


def _coefficients(x: np.ndarray, e_out: int) -> tuple[np.ndarray, int]:
    """``coefficients`` of the map ``x`` (``_map``'s [C][3])."""
    c = np.ldexp(x, -e_out)
    top_m1, top_m2, top_b = tops = np.abs(c).max(0, initial=0.0).tolist()  # a NaN or an infinity tops its column
    if not all(map(math.isfinite, tops)):
        raise E2TError("a BatchNorm coefficient is not finite (a NaN or infinite scale, shift or statistic)")
    s = _shift(max(top_m1, top_m2), top_b)
    if s < 0:
        raise E2TError(f"APPLY coefficients do not fit at output exponent {e_out}: the largest multiplier "
                       f"{max(top_m1, top_m2):.3g} needs |M| < 2^{nx.COEF_M_BITS} (the output exponent is too small)")
    return round_half_up(np.ldexp(c, s)), s


def coefficients(m1, m2, b0, e_out: int) -> tuple[np.ndarray, int]:
    """APPLY's ``coef`` ([C][3] int64) and shift ``S`` for the real map ``m1 a + m2 b + b0`` written at
    exponent ``e_out``: the largest ``S <= 62`` that keeps every ``|M| < 2^24`` and ``|B| < 2^56`` after
    rounding half up."""
    return _coefficients(_map(m1, m2, b0), e_out)


def _at_corners(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The map ``x`` ([C][3]: m1, m2, b0 per channel) as ``m1 a + m2 b + b0`` at each channel's four
    corners of the boxes ``a``, ``b`` ([C][2]): [C][2][2]."""
    return (x[:, :1] * a)[:, :, None] + (x[:, 1:2] * b)[:, None, :] + x[:, 2:, None]


def _extremes(coef: np.ndarray, shift: int, a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """``corners`` of int64 ``coef`` ([C][3]) and int64 boxes ``a``, ``b`` ([C][2]). ``|M| < 2^24``,
    ``|a|, |b| <= 2^31`` and ``|B| < 2^56`` keep each corner below 2^57 in int64; the rounding shift
    is non-decreasing, so the extremes of the rounded corners are the rounded extremes."""
    z = _at_corners(coef, a, b)
    half = (1 << shift) >> 1
    return (int(z.min()) + half) >> shift, (int(z.max()) + half) >> shift


def _boxes(a_range, b_range) -> tuple[np.ndarray, np.ndarray]:
    """The per-channel (min, max) ranges as int64 [C][2] arrays (zeros for no second source)."""
    a = np.asarray(a_range, np.int64)
    return a, np.zeros_like(a) if b_range is None else np.asarray(b_range, np.int64)


def corners(coef, shift: int, a_range, b_range=None) -> tuple[int, int]:
    """The least and greatest ``rshift_round(M1 a + M2 b + B, S)`` over each channel's box
    ``a_range`` x ``b_range`` (per-channel (min, max) pairs, ``b_range`` None for no second source),
    exact: the map is affine in a and b, so its extremes are at the corners."""
    return _extremes(np.asarray(coef, np.int64), shift, *_boxes(a_range, b_range))


def apply_plan(m1, m2, b0, fmt: nx.Fmt, a_range, b_range=None, relu: bool = False) -> tuple[int, np.ndarray, int]:
    """(e_out, coef, S): the output exponent, coefficients and shift of an APPLY of the real map
    ``m1 a + m2 b + b0`` (then ReLU when ``relu``) into ``fmt`` with no clip. ``a_range``, ``b_range``:
    each channel's (min, max) of the operands, from STATS or APPLY's plane statistics. The exponent
    is the section-3 rule applied to the map's largest magnitude over the box, raised where a
    multiplier would not fit in 24 bits at it (operands whose exponents lie far apart), then while
    the rounded integer coefficients would still clip at a corner. A channel whose operand is 0
    throughout (its box) takes multiplier 0 for it."""
    x = _map(m1, m2, b0)
    a, b = _boxes(a_range, b_range)
    x[:, :2] *= np.stack([a.any(1), b.any(1)], 1)  # an operand that is 0 in a channel adds nothing: no multiplier
    z = _at_corners(x, a, b).reshape(-1, 4)
    top = max(z.max(0).tolist())  # each corner's extreme over the channels, then the corners' (a NaN as Python sees it)
    e = nx.exponent_for(max(top, 0.0) if relu else max(top, -min(z.min(0).tolist())), fmt)
    tops = np.abs(x).max(0, initial=0.0).tolist()  # |m1|, |m2|, |b0| at their largest
    while math.isfinite(sum(tops)) and _shift(math.ldexp(max(tops[:2]), -e), math.ldexp(tops[2], -e)) < 0:
        e += 1  # no finer than the multipliers allow (operands of very different exponents): the fine ones round
    while True:
        coef, s = _coefficients(x, e)
        lo, hi = _extremes(coef, s, a, b)
        if hi <= fmt.hi and (relu or lo >= fmt.lo):
            return e, coef, s
        e += 1


def bn_forward(stats, t: int, m: int, e_y, gamma, beta, eps: float) -> dict:
    """BatchNorm in training from STATS SQUARE sums of its input ``y`` (int32 units at per-channel
    exponents ``e_y``): the real affine ``out = m1 y + b0`` per channel, and the batch mean, variance
    and ``invstd`` in real units (what the backward pass and the running statistics need)."""
    mean_u, var_u = moments(stats, t, m)
    scale = np.ldexp(1.0, np.asarray(e_y, np.int64))
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
    sums = np.ldexp(np.asarray(gstats, np.int64)[:, :2].astype(np.float64), (t, t + u))
    g1, g2 = sums[:, 0], sums[:, 1]                      # sum g, in g's units; sum g y, in g's and y's
    scale = np.ldexp(1.0, np.asarray(e_y, np.int64))
    inv, mu = fwd["invstd"], fwd["mean_units"]
    centred = g2 - mu * g1                               # sum g (y - mean), in units
    gi = np.asarray(gamma, np.float64) * inv
    p = np.ldexp(gi, e_g)
    k = np.ldexp(gi * inv * inv * scale * scale * centred / m, e_g)
    return {"p": p, "q": -k, "r": k * mu - p * g1 / m,
            "dgamma": np.ldexp(inv * scale * centred, e_g), "dbeta": np.ldexp(g1, e_g)}
