"""The weights' refresh after an update as engine calls (contract v2, docs/numerics.md section
10.4): the host's O(channels) rules around one STATS and three APPLY calls that give exactly what
numerics.renormalize, weights_for_use, fwd_bound and bwd_data_bound give on the host.

1. STATS of the master viewed as [1][O][H][W] (``row_view``): each output channel's least and
   greatest master integer, so its largest magnitude.
2. The host: the shifts s[o] (numerics.shifts_for) and APPLY's coefficients 2^(S - s[o]) at
   S = max s (``row_coefficients``); APPLY of the master into the int8 weights as used.
3. Two APPLY calls over those int8 weights viewed as [O][C][k][k] (the second source; the first,
   the master, weighted 0), ReLU of +w and of -w (``ABS_SIGNS``): their plane sums add up to
   sum |W_q[o, c]| over the taps, from which the host takes both bounds (``bounds``).

Where the engine cannot take a layer (its taps fit no H x W, shifts 24 or more apart) or the master
has reached 2^30 (renormalize: rare), the caller refreshes on the host as contract v1 does; the
results are the same integers either way.
"""
from __future__ import annotations

import numpy as np

from . import numerics as nx
from .bncoef import stat_shift

STAT_T = stat_shift((1 << 31) - 1)  # STATS's operand shift for an int32 master: no clip (its sums are unused)
ABS_SIGNS = (1, -1)  # APPLY's second-source multiplier of the two passes whose ReLU'd plane sums add to sum |w|


def row_view(c_out: int, taps: int, board) -> tuple[int, int] | None:
    """(H, W) with H W = ``taps`` (a row of C_in k^2 weights) within the board's plane, the widest W
    first; None where no such plane exists or ``c_out`` passes the engine's channels."""
    if c_out > board.max_c:
        return None
    for w in range(min(taps, board.max_w), 0, -1):
        if taps % w == 0:
            return (taps // w, w) if taps // w <= board.max_h else None
    return None


def tap_view(op: dict, board) -> tuple[int, int, int, int] | None:
    """The [O][C][k][k] view of the bound passes (the output channels as images), None where it
    passes the engine's limits."""
    ok = op["c_out"] <= board.max_batch and op["c_in"] <= board.max_c and op["k"] <= min(board.max_h, board.max_w)
    return (op["c_out"], op["c_in"], op["k"], op["k"]) if ok else None


def views(op: dict, board) -> tuple[tuple, tuple] | None:
    """The (N, C, H, W) views of a conv's weights for its refresh on the engine: the rows' (STATS and
    the weights' APPLY) and the taps' (the bound passes); None where the engine cannot take them."""
    rows, taps = row_view(op["c_out"], op["c_in"] * op["k"] ** 2, board), tap_view(op, board)
    return ((1, op["c_out"], *rows), taps) if rows and taps else None


def needs_renormalize(lo, hi) -> bool:
    """Whether a master of per-channel least ``lo`` and greatest ``hi`` has reached 2^30."""
    return bool(len(lo)) and max(-int(np.min(lo)), int(np.max(hi))) >= 1 << nx.MASTER_RENORM_BITS


def row_coefficients(lo, hi) -> tuple[np.ndarray, int, np.ndarray] | None:
    """(shifts s[o], APPLY's shift S, coefficients [O][3]) that write ``rshift_round(master[o], s[o])``:
    ``2^(S - s[o]) a`` rounded by S is ``a`` rounded by s[o]. None where the shifts lie 24 or more
    apart (a multiplier would pass 2^24)."""
    amax = np.maximum(-np.asarray(lo, np.int64), np.asarray(hi, np.int64))
    s = nx.shifts_for(amax)
    if not s.size:
        return s, 0, np.zeros((0, 3), np.int64)
    top = int(s.max())
    if top - int(s.min()) >= nx.COEF_M_BITS:
        return None
    coef = np.zeros((len(s), 3), np.int64)
    coef[:, 0] = np.left_shift(np.int64(1), top - s)
    return s, top, coef


def abs_coefficients(c_in: int, sign: int) -> np.ndarray:
    """APPLY's [C][3] coefficients of a bound pass: the int8 weights times ``sign``, the master 0."""
    coef = np.zeros((c_in, 3), np.int64)
    coef[:, 1] = sign
    return coef


def bounds(abs_sums, s, wgt) -> tuple[int, int, int]:
    """(forward bound, backward bound per unit of |g|, e_ref) of int8 weights ``wgt`` [O][C][k][k]
    with shifts ``s`` from ``abs_sums`` [O][C] (sum |W_q[o, c]| over the taps), as
    numerics.fwd_bound and numerics.bwd_data_bound of numerics.aligned_weights give them. A channel
    aligned by a right shift (more than ALIGN_BITS below the largest: rare) is summed from ``wgt``."""
    a = np.asarray(abs_sums, np.int64)
    s = np.asarray(s, np.int64)
    fwd = (-nx.ACT.lo) * int(a.sum(1).max(initial=0))
    e_ref = int(s.max()) - nx.ALIGN_BITS if s.size else 0
    d = e_ref - s
    aligned = np.left_shift(a, np.maximum(-d, 0)[:, None])
    for o in np.flatnonzero(d > 0):
        aligned[o] = np.abs(nx.rshift_round(wgt[o], d[o])).reshape(a.shape[1], -1).sum(1)
    return fwd, int(aligned.sum(0).max(initial=0)), e_ref
