"""The host's float32 ops (docs/numerics.md, section 3), rounded as the reference's PyTorch
ops round on the CPU, so the integers the engine sees next are the reference's.

- BatchNorm in inference: ``alpha = weight * (1 / sqrt(var + eps))`` in float32, then
  ``beta = fma(-mean, alpha, bias)`` and ``y = fma(x, alpha, beta)``: one rounding each, as
  PyTorch's vectorized CPU kernel computes them. ``fma32`` rounds exactly once.
- BatchNorm in training: batch statistics summed in float64 and rounded once, and its
  backward in the reference's order.
- Global average pooling: the mean in float64, rounded once to float32 (the reference pools
  the same way, reference/models.py), so the summation order does not matter.
- The classifier ``x W^T + b`` in float64, rounded once (the reference's fixed-point runs
  compute it so too, reference/hostexact.py).
- The SLU gate: one LSTM step (PyTorch's gate order i, f, g, o), a linear layer, a sigmoid
  and ``p > threshold``, with float64 sums and activations rounded once (the reference's
  fixed-point runs compute them so too, reference/hostexact.py). PyTorch's own LSTM differs
  from them in the last bits.
"""
from __future__ import annotations

import numpy as np

from contract import parallel

F32, F64 = np.float32, np.float64


def fma32(x, a, c) -> np.ndarray:
    """float32 ``x * a + c`` rounded once (a fused multiply-add), for float32 operands.

    The product is exact in float64; the float64 sum's rounding error is recovered exactly
    (TwoSum) and decides the one case where rounding the float64 sum to float32 would differ:
    a sum that lands exactly halfway between two float32 values.
    """
    x, a, c = (np.asarray(v, F32) for v in (x, a, c))
    p = x.astype(F64) * a.astype(F64)
    c64 = c.astype(F64)
    s = p + c64
    bb = s - p
    err = (p - (s - bb)) + (c64 - bb)
    r = s.astype(F32)
    d = s - r.astype(F64)
    tie = (d != 0) & (err != 0)
    if tie.any():
        other = np.nextafter(r, np.where(d > 0, F32(np.inf), F32(-np.inf))).astype(F32)
        tie &= s == (r.astype(F64) + other.astype(F64)) / 2
        r = np.where(tie & (np.sign(err) == np.sign(d)), other, r)
    return r


def bn_affine(weight, bias, mean, var, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """(alpha, beta) per channel of a BatchNorm in inference."""
    alpha = np.asarray(weight, F32) * (F32(1) / np.sqrt(np.asarray(var, F32) + F32(eps)))
    return alpha, fma32(-np.asarray(mean, F32), alpha, bias)


def batchnorm_eval(x, weight, bias, mean, var, eps: float) -> np.ndarray:
    """BatchNorm of an NCHW (or NC) float32 tensor with the running statistics."""
    alpha, beta = bn_affine(weight, bias, mean, var, eps)
    shape = (1, -1) + (1,) * (np.ndim(x) - 2)
    return fma32(x, alpha.reshape(shape), beta.reshape(shape))


def relu(x) -> np.ndarray:
    """max(x, 0), the images on two threads (contract/parallel.py)."""
    return parallel.ufunc(np.maximum, x, F32(0), np.result_type(x, F32))


def channel_sum(x: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
    """Per-channel (axis 1) float64 sums of ``x``, or of ``x * y`` with exact products, over
    every other axis of an NCHW or NC float32 tensor (no float64 copy of the tensor: at
    these sizes a fresh one costs more in page faults than the sum)."""
    n, c = x.shape[:2]
    a = x.reshape(n, c, -1)
    if y is None:
        return a.sum((0, 2), dtype=F64)
    return np.einsum("nci,nci->c", a, y.reshape(n, c, -1), dtype=F64)


def bn_train(x, gamma, beta, eps):
    """BatchNorm with batch statistics: mean and E[x^2] summed in float64 (exact products),
    var = E[x^2] - mean^2, each statistic rounded once to float32 where it meets the data.
    The two sums, then the two halves of the batch, on two threads (contract/parallel.py)."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    m = x.size // x.shape[1]
    s1, s2 = parallel.pair(lambda: channel_sum(x), lambda: channel_sum(x, x), x.size)
    mean = s1 / m
    var = np.maximum(s2 / m - mean * mean, 0.0)
    invstd = (1.0 / np.sqrt(var + eps)).astype(F32)
    m32, inv, gm, bt = (v.reshape(shape) for v in (mean.astype(F32), invstd, gamma, beta))
    xhat = np.empty(x.shape, np.result_type(x, m32))
    out = np.empty(x.shape, np.result_type(xhat, gm, bt))

    def part(a, b):
        xh, o = xhat[a:b], out[a:b]
        np.subtract(x[a:b], m32, out=xh)
        xh *= inv
        np.multiply(xh, gm, out=o)
        o += bt

    parallel.halves(part, len(x), x.size)
    return out, xhat, invstd, mean, var


def bn_backward(g, xhat, invstd, gamma):
    """dx = a * (m g - dbeta - xhat dgamma) with a = gamma invstd / m, in this order (the
    reference's), each step in place; the sums, then the batch's halves, on two threads."""
    shape = (1, -1) + (1,) * (g.ndim - 2)
    m = g.size // g.shape[1]
    s1, s2 = parallel.pair(lambda: channel_sum(g), lambda: channel_sum(g, xhat), g.size)
    dbeta, dgamma = s1.astype(F32), s2.astype(F32)
    db, dg, a = dbeta.reshape(shape), dgamma.reshape(shape), ((gamma * invstd) / F32(m)).reshape(shape)
    dx = np.empty(g.shape, np.result_type(g, F32))

    def part(i, j):
        d = dx[i:j]
        np.multiply(g[i:j], F32(m), out=d)
        d -= db
        d -= xhat[i:j] * dg
        d *= a

    parallel.halves(part, len(g), g.size)
    return dx, dgamma, dbeta


CHUNK = 1 << 16  # elements of float64 work at a time: a buffer that stays in cache, no page faults


def avgpool(x) -> np.ndarray:
    """Global average pooling NCHW -> NC11: float64 mean, one rounding to float32; a few images
    at a time (each image's means are the same computation either way)."""
    x = np.asarray(x)
    n, c = x.shape[:2]
    step = max(1, CHUNK // max(1, x[0].size))
    out = np.empty((n, c, 1, 1), F32)

    def part(a, b):
        for i in range(a, b, step):
            j = min(b, i + step)
            out[i:j] = np.asarray(x[i:j], F64).mean(axis=(2, 3), keepdims=True)

    parallel.halves(part, n, x.size)
    return out


def linear(x, weight, bias) -> np.ndarray:
    """x W^T + b with float64 sums, rounded once to float32 (as reference/hostexact.py)."""
    x64 = np.asarray(x, F32).reshape(len(x), -1).astype(F64)
    return (x64 @ np.asarray(weight, F64).T + np.asarray(bias, F64)).astype(F32)


def sigmoid(x) -> np.ndarray:
    """float32 sigmoid computed in float64 and rounded once (so any float64 library agrees)."""
    with np.errstate(over="ignore"):  # exp overflows to inf for x < -709: the result is 0, as it should be
        return (1.0 / (1.0 + np.exp(-np.asarray(x, F32).astype(F64)))).astype(F32)


def tanh(x) -> np.ndarray:
    """float32 tanh computed in float64 and rounded once."""
    return np.tanh(np.asarray(x, F32).astype(F64)).astype(F32)


def matmul(a, b) -> np.ndarray:
    """float32 ``a @ b`` with float64 sums (exact products), rounded once."""
    return (np.asarray(a, F32).astype(F64) @ np.asarray(b, F32).astype(F64)).astype(F32)


def lstm_step(x, state, w_ih, w_hh, b_ih, b_hh) -> tuple[np.ndarray, np.ndarray, tuple]:
    """One LSTM step on x (N, in); ``state`` (h, c) or None for zeros. Returns (h, c, and the
    activated gates i, f, g, o with tanh(c), which the backward pass needs). The gate inputs
    are float64 sums rounded once, the activations float64 rounded once, the cell's products
    and sum float32 (reference/hostexact.py computes the same)."""
    z = np.asarray(x, F32).astype(F64) @ np.asarray(w_ih, F64).T + (np.asarray(b_ih, F64) + np.asarray(b_hh, F64))
    if state is not None:
        z += state[0].astype(F64) @ np.asarray(w_hh, F64).T
    i, f, gg, o = np.split(z.astype(F32), 4, axis=1)
    i, f, gg, o = sigmoid(i), sigmoid(f), tanh(gg), sigmoid(o)
    c = i * gg
    if state is not None:
        c = c + f * state[1]
    tc = tanh(c)
    return o * tc, c, (i, f, gg, o, tc)


def softmax_cross_entropy(logits, y, grad: bool = False):
    """Per-sample cross-entropy of float32 logits against integer labels (float64 inside);
    with ``grad`` also the float32 gradient of their mean, (softmax - one-hot) / N."""
    z = np.asarray(logits, F64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1, keepdims=True)
    rows, y = np.arange(len(z)), np.asarray(y)
    losses = np.log(s[:, 0]) - z[rows, y]
    if not grad:
        return losses
    prob = e / s
    prob[rows, y] -= 1
    return losses, (prob / len(z)).astype(F32)
