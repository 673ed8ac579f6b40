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
