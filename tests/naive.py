"""Plain-integer models of docs/numerics.md for tests: Python ints and loops, no BLAS."""
import numpy as np


def rshift_round(v: int, s: int) -> int:
    return (v + (1 << (s - 1))) >> s if s > 0 else v << -s


def conv_acc(x, w, stride, pad):
    """Exact int64 convolution sums by loops over output positions."""
    n, c, h, wd = x.shape
    o, _, k, _ = w.shape
    xp = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho, wo = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
    y = np.zeros((n, o, ho, wo), dtype=np.int64)
    w = w.astype(np.int64)
    for i in range(ho):
        for j in range(wo):
            patch = xp[:, :, i * stride:i * stride + k, j * stride:j * stride + k]
            y[:, :, i, j] = np.einsum("nckl,ockl->no", patch, w)
    return y


def conv_bwd_acc(g, w, stride, pad, in_hw):
    """Exact transposed convolution: scatter every output gradient back over its window."""
    n, o, ho, wo = g.shape
    _, c, k, _ = w.shape
    h, wd = in_hw
    gx = np.zeros((n, c, h + 2 * pad, wd + 2 * pad), dtype=np.int64)
    g, w = g.astype(np.int64), w.astype(np.int64)
    for i in range(ho):
        for j in range(wo):
            gx[:, :, i * stride:i * stride + k, j * stride:j * stride + k] += np.einsum("no,ockl->nckl", g[:, :, i, j], w)
    return gx[:, :, pad:pad + h, pad:pad + wd]


def wgrad_acc(x, g, k, stride, pad):
    """Exact weight gradient: sum over batch and positions of x-window * g."""
    n, c, h, wd = x.shape
    _, o, ho, wo = g.shape
    xp = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    gw = np.zeros((o, c, k, k), dtype=np.int64)
    for i in range(ho):
        for j in range(wo):
            patch = xp[:, :, i * stride:i * stride + k, j * stride:j * stride + k]
            gw += np.einsum("nckl,no->ockl", patch, g[:, :, i, j].astype(np.int64))
    return gw


def update_operands(seed: int, count: int):
    """Random master weights, momenta and signs for update tests, with saturating values first."""
    rng = np.random.default_rng(seed)
    w = rng.integers(-2**31, 2**31, count)
    buf = rng.integers(-2**31, 2**31, count)
    sign = rng.integers(-1, 2, count)
    w[:2], buf[:2], sign[:2] = [-2**31 + 5, 2**31 - 5], [2**31 - 1, -2**31], [1, -1]
    return w, buf, sign


def saturate(v: int, bits: int) -> tuple[int, int]:
    """Clip to a signed ``bits``-bit integer: (value, 1 if clipped else 0)."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return min(max(v, lo), hi), int(v < lo or v > hi)


def channel_stats(a, t, b=None, u=0):
    """STATS (docs/numerics.md 9.2) one element at a time: ([C][4] sums, min, max; clips)."""
    n, c, h, w = a.shape
    a, b = a.tolist(), None if b is None else b.tolist()
    stats, clips = [], 0
    for ch in range(c):
        s1 = s2 = 0
        lo = hi = a[0][ch][0][0]
        for i in range(n):
            for y in range(h):
                for x in range(w):
                    v = a[i][ch][y][x]
                    at, k = saturate(rshift_round(v, t), 18)
                    bt, kb = (at, 0) if b is None else saturate(rshift_round(b[i][ch][y][x], u), 18)
                    s1, s2, lo, hi, clips = s1 + at, s2 + at * bt, min(lo, v), max(hi, v), clips + k + kb
        stats.append([s1, s2, lo, hi])
    return np.array(stats, dtype=np.int64), clips


def apply_elementwise(a, coef, shift, b=None, relu=False, mask=None, out_bits=8):
    """APPLY (docs/numerics.md 9.3) one element at a time: (z, [N][C][3] plane sum/min/max, clips)."""
    n, c, h, w = a.shape
    al, coef = a.tolist(), [[int(v) for v in row] for row in coef]
    bl, ml = (None if x is None else x.tolist() for x in (b, mask))
    z = np.zeros(a.shape, dtype=f"int{out_bits}")
    stats, clips = np.zeros((n, c, 3), dtype=np.int64), 0
    for i in range(n):
        for ch in range(c):
            m1, m2, off = coef[ch]
            plane = []
            for y in range(h):
                for x in range(w):
                    v = m1 * al[i][ch][y][x] + (0 if bl is None else m2 * bl[i][ch][y][x]) + off
                    out = rshift_round(v, shift)
                    if relu:
                        out = max(out, 0)
                    if ml is not None and ml[i][ch][y][x] <= 0:
                        out = 0
                    out, k = saturate(out, out_bits)
                    z[i, ch, y, x], clips = out, clips + k
                    plane.append(out)
            stats[i, ch] = sum(plane), min(plane), max(plane)
    return z, stats, clips
