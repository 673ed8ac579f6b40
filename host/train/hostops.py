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
from contract.opcount import host_slot, merge_host

F32, F64 = np.float32, np.float64


# -- the host's work, counted (contract/opcount.py's host slots) --------------------------------
# Each function below has a ``*_work`` beside it that counts its numpy passes from the sizes it
# runs on (the op table, host/train/ops.py, sums them per op). The rule:
# - a pass is one numpy call over an array (a ufunc, a reduction, a cast, a copy, a gather or a
#   scatter, a matrix product): one ``call``, as one thread makes it (contract/parallel.py splits
#   some in two, the same passes);
# - it reads the bytes of each distinct array it takes in and writes the bytes of the array it
#   produces, at their dtypes (float64 8, float32 4, int64 8, int32 4, int16 2, int8 and bool 1);
#   a view is free, a broadcast operand smaller than the pass (a per-channel vector, a scalar) is
#   not counted;
# - a flop is one arithmetic result per element (add, subtract, multiply, divide, max/min,
#   compare, floor, sign, exp/tanh, a shift, a select) in the dtype the loop computes in (every
#   integer width is "int"), a reduction one per element read, a matrix product two per
#   multiply-add; a cast or a copy is memory only.
# Left out: O(channels) bookkeeping (batch statistics, exponents and shifts, the accumulation of
# parameter gradients, the running statistics), the SLU gates' one value per image (draws, masks,
# picks, dL/dp), the rare branches (fma32's halfway ties, a master renormalized past 2**30),
# Python itself; and what no op does: the batches' augmentation and normalization
# (host/data/datasets.py), the driver's register writes and cache maintenance.

def passes(n: int, *table: tuple, calls: int | None = None) -> dict:
    """The host slot of numpy passes over ``n`` elements each; a pass is (bytes read, bytes
    written, flops, flop dtype) per element and one call (``calls``: another count)."""
    flops: dict = {}
    for _, _, f, kind in table:
        flops[kind] = flops.get(kind, 0) + n * f
    return host_slot(n * sum(p[0] for p in table), n * sum(p[1] for p in table), flops,
                     len(table) if calls is None else calls)


CAST_64 = (4, 8, 0, "f64")  # float32 -> float64 copy
CAST_32 = (8, 4, 0, "f64")  # float64 -> float32 copy
COPY_32 = (4, 4, 0, "f32")
F32_MAP = (4, 4, 1, "f32")  # a float32 op with one array operand (or a scalar): y = f(x)
F32_BIN = (8, 4, 1, "f32")  # a float32 op of two arrays: z = x (op) y
F64_MAP, F64_BIN = (8, 8, 1, "f64"), (16, 8, 1, "f64")


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


def fma32_work(n: int) -> dict:
    """fma32 of n-element x and c (a scalar or per-channel a): the casts, the product, TwoSum's
    six sums, the rounding and its check."""
    return passes(n, CAST_64, F64_MAP, CAST_64, *[F64_BIN] * 6, CAST_32, CAST_64, F64_BIN, (8, 1, 1, "f64"),
                  (8, 1, 1, "f64"), (2, 1, 1, "int"), (1, 0, 1, "int"))


def sgd_work(n: int) -> dict:
    """The trainer's SGD step of one n-element host parameter (EngineTrainer._update): the zero
    gradient it makes ready, d = fma(p, wd, g), buf = mu buf + d (and its copy), p = fma(buf, -lr, p)."""
    return merge_host(passes(n, (0, 4, 0, "f32")), fma32_work(n), passes(n, F32_MAP, F32_BIN, COPY_32),
                      fma32_work(n))


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


def relu_work(n: int) -> dict:
    return passes(n, F32_MAP)


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


def bn_train_work(n: int) -> dict:
    """bn_train of n elements: the two sums (x, x * x: one array read), - mean, *= invstd,
    * gamma, += beta."""
    return passes(n, (4, 0, 1, "f64"), (4, 0, 2, "f64"), F32_MAP, F32_MAP, F32_MAP, F32_MAP)


def bn_backward(g, xhat, invstd, gamma, dx: bool = True):
    """dx = a * (m g - dbeta - xhat dgamma) with a = gamma invstd / m, in this order (the
    reference's), each step in place; the sums, then the batch's halves, on two threads.
    Without ``dx`` (the input gets no gradient) the sums alone: (None, dgamma, dbeta)."""
    shape = (1, -1) + (1,) * (g.ndim - 2)
    m = g.size // g.shape[1]
    s1, s2 = parallel.pair(lambda: channel_sum(g), lambda: channel_sum(g, xhat), g.size)
    dbeta, dgamma = s1.astype(F32), s2.astype(F32)
    if not dx:
        return None, dgamma, dbeta
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


def bn_backward_work(n: int, dx: bool = True) -> dict:
    """bn_backward of n elements: the sums of g and g * xhat; with ``dx`` m g, -= dbeta,
    xhat * dgamma, -= it, *= a."""
    return passes(n, (4, 0, 1, "f64"), (8, 0, 2, "f64"), *[F32_MAP, F32_MAP, F32_MAP, F32_BIN, F32_MAP] * dx)


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


def avgpool_work(n: int, c: int, hw: int) -> dict:
    """avgpool of n images of c channels of hw pixels, a chunk at a time: the float64 copy and
    its mean, then the means' division and their store."""
    chunks = -(-n // max(1, CHUNK // max(1, c * hw)))
    return merge_host(passes(n * c * hw, CAST_64, (8, 0, 1, "f64"), calls=2 * chunks),
                      passes(n * c, F64_MAP, CAST_32, calls=2 * chunks))


def linear(x, weight, bias) -> np.ndarray:
    """x W^T + b with float64 sums, rounded once to float32 (as reference/hostexact.py)."""
    x64 = np.asarray(x, F32).reshape(len(x), -1).astype(F64)
    return (x64 @ np.asarray(weight, F64).T + np.asarray(bias, F64)).astype(F32)


def product_work(m: int, k: int, n: int) -> dict:
    """One float64 matrix product (m, k) @ (k, n)."""
    return host_slot(8 * (m * k + k * n), 8 * m * n, {"f64": 2 * m * k * n}, 1)


def linear_work(n: int, i: int, o: int) -> dict:
    """linear of n rows of i features into o: x and W to float64, the product, + b, the rounding."""
    return merge_host(passes(n * i, CAST_64), passes(o * i, CAST_64), product_work(n, i, o),
                      passes(n * o, F64_MAP, CAST_32))


def sigmoid(x) -> np.ndarray:
    """float32 sigmoid computed in float64 and rounded once (so any float64 library agrees)."""
    with np.errstate(over="ignore"):  # exp overflows to inf for x < -709: the result is 0, as it should be
        return (1.0 / (1.0 + np.exp(-np.asarray(x, F32).astype(F64)))).astype(F32)


def sigmoid_work(n: int) -> dict:
    return passes(n, CAST_64, F64_MAP, F64_MAP, F64_MAP, F64_MAP, CAST_32)


def tanh(x) -> np.ndarray:
    """float32 tanh computed in float64 and rounded once."""
    return np.tanh(np.asarray(x, F32).astype(F64)).astype(F32)


def tanh_work(n: int) -> dict:
    return passes(n, CAST_64, F64_MAP, CAST_32)


def matmul(a, b) -> np.ndarray:
    """float32 ``a @ b`` with float64 sums (exact products), rounded once."""
    return (np.asarray(a, F32).astype(F64) @ np.asarray(b, F32).astype(F64)).astype(F32)


def matmul_work(m: int, k: int, n: int) -> dict:
    """matmul of (m, k) and (k, n): both to float64, the product, the rounding."""
    return merge_host(passes(m * k, CAST_64), passes(k * n, CAST_64), product_work(m, k, n), passes(m * n, CAST_32))


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


def lstm_step_work(n: int, i: int, h: int, state: bool) -> dict:
    """lstm_step on n rows of i features, h hidden (``state``: with the previous h, c)."""
    g = 4 * h
    parts = [passes(n * i, CAST_64), passes(g * i, CAST_64), product_work(n, i, g), passes(n * g, F64_MAP)]
    if state:
        parts += [passes(n * h, CAST_64), passes(g * h, CAST_64), product_work(n, h, g), passes(n * g, F64_BIN)]
    parts += [passes(n * g, CAST_32), sigmoid_work(n * h), sigmoid_work(n * h), tanh_work(n * h), sigmoid_work(n * h),
              passes(n * h, *[F32_BIN] * (3 if state else 1)), tanh_work(n * h), passes(n * h, F32_BIN)]
    return merge_host(*parts)


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


def softmax_cross_entropy_work(n: int, k: int) -> dict:
    """softmax_cross_entropy with its gradient, n rows of k logits: to float64, the max, - it,
    exp, the sum, the softmax, / N, the rounding (the per-row loss terms are left out)."""
    return passes(n * k, CAST_64, (8, 0, 1, "f64"), F64_MAP, F64_MAP, (8, 0, 1, "f64"), F64_MAP, F64_MAP, CAST_32)


# -- the host's passes of the engine ops' host side (contract/numerics.py, host/engine/session.py)
RSHIFT_ROUND = ((8, 8, 1, "int"), (8, 8, 1, "int"), (8, 8, 1, "int"), (16, 8, 1, "int"))  # + half, >>, <<, where


def quantize_work(n: int, qbytes: int) -> dict:
    """numerics.quantize_tensor of n float32 values into qbytes-wide integers: max, min, the
    scaling, then _round_half_up32's floor, fraction, store, >= 1/2 and the integer add."""
    return passes(n, (4, 0, 1, "f32"), (4, 0, 1, "f32"), F32_MAP, F32_MAP, (8, 4, 1, "f32"), (4, qbytes, 0, "int"),
                  (4, 1, 1, "f32"), (qbytes + 1, qbytes, 1, "int"))


def dequantize_work(n: int) -> dict:
    """numerics.dequantize of n int32 values: the float32 cast and the scaling."""
    return passes(n, (4, 4, 0, "f32"), F32_MAP)


def fwd_bound_work(weights: int) -> dict:
    """numerics.fwd_bound of int8 weights: to int64, abs, the row sums."""
    return passes(weights, (1, 8, 0, "int"), (8, 8, 1, "int"), (8, 0, 1, "int"))


def weight_bounds_work(weights: int) -> dict:
    """EngineSession.weight_bounds, once the weights change: fwd_bound, numerics.aligned_weights of
    the int8 weights (to int64, rshift_round), then bwd_data_bound's abs, transposed copy and sums."""
    return merge_host(fwd_bound_work(weights),
                      passes(weights, (1, 8, 0, "int"), *RSHIFT_ROUND, (8, 8, 1, "int"), (8, 8, 0, "int"),
                             (8, 0, 1, "int")))


def grad_range_work(g: int) -> dict:
    """EngineSession.conv_bwd_data's bound: the int16 gradient's min and max."""
    return passes(g, (2, 0, 1, "int"), (2, 0, 1, "int"))


def signs_work(weights: int) -> dict:
    """Without PSG, the signs of G_full: np.sign of the int64 gradient, stored into the int8 sgn buffer."""
    return passes(weights, (8, 8, 1, "int"), (8, 1, 0, "int"))


def refresh_on_engine_work(c_out: int, c_in: int) -> dict:
    """EngineSession.refresh_on_engine's host side (contract/weightrefresh.py) for a layer of
    ``c_out`` x ``c_in`` channels: per output channel, the renormalization test, the shifts
    (numerics.shifts_for) and the coefficients; per channel pair, the two bound passes' plane sums
    copied out and added, the row sums, the aligned column sums and their maxima; per input channel,
    the bound passes' coefficients."""
    pairs = c_out * c_in
    return merge_host(
        passes(c_out, (8, 0, 1, "int"), (8, 0, 1, "int"), (8, 8, 1, "int"), (16, 8, 1, "int"), (8, 8, 0, "f64"),
               (8, 16, 1, "f64"), (8, 8, 1, "int"), (8, 8, 1, "int"), *RSHIFT_ROUND, (8, 1, 1, "int"),
               (9, 8, 1, "int"), (8, 0, 1, "int"), (8, 0, 1, "int"), (0, 24, 0, "int"), (8, 8, 1, "int"),
               (8, 8, 0, "int"), (8, 0, 1, "int"), (8, 8, 1, "int"), (8, 8, 1, "int"), (8, 0, 1, "int"),
               (8, 8, 0, "int")),
        passes(pairs, (24, 24, 0, "int"), (24, 24, 0, "int"), (16, 8, 1, "int"), (8, 0, 1, "int"), (8, 8, 1, "int"),
               (8, 0, 1, "int")),
        passes(c_in, (0, 24, 0, "int"), (0, 8, 0, "int"), (0, 24, 0, "int"), (0, 8, 0, "int"), (8, 0, 1, "int")))


def refresh_work(weights: int) -> dict:
    """EngineSession.refresh_weights: numerics.renormalize (the int32 master to int64, abs, max),
    weights_for_use (to int64 again, abs and the row maxima, rshift_round) and the int8 store."""
    return passes(weights, (4, 8, 0, "int"), (8, 8, 1, "int"), (8, 0, 1, "int"), (4, 8, 0, "int"), (8, 8, 1, "int"),
                  (8, 0, 1, "int"), *RSHIFT_ROUND, (8, 1, 0, "int"))


# -- contract v2's O(channels) rules (contract/bncoef.py), per element of their C-vectors -----------
# Each numpy call of the code as written, a C-vector's bytes and flops per channel ([C][2] ranges,
# [C][3] coefficients, [C][2][2] corners: 2, 3, 4 values a channel); an ``asarray`` of an array
# already of its dtype and a ``tolist`` of a few values are a call and no bytes (``VIEW``).
# stat_shift is Python integers (none); apply_plan's loop that raises the exponent runs once (a
# second round, a rounded coefficient clipping at a corner, is rare and left out).
VIEW = (0, 0, 0, "int")
_BOX = ((24, 24, 0, "f64"), (24, 24, 0, "f64"), VIEW, VIEW,  # apply_plan: the map [C][3], the int64 boxes
        (24, 16, 2, "f64"), (24, 16, 2, "f64"), (32, 32, 4, "f64"), (40, 32, 4, "f64"),  # its corners
        (32, 0, 4, "f64"), VIEW,  # their top (and its tolist)
        (16, 1, 2, "int"), (16, 1, 2, "int"), (2, 2, 0, "int"), (18, 16, 2, "f64"),  # a 0 operand's multiplier to 0
        (24, 24, 3, "f64"), (24, 0, 3, "f64"), VIEW)  # the largest |m|, |b0| (the exponent the multipliers allow)
_COEFFICIENTS = ((24, 24, 3, "f64"), (24, 24, 3, "f64"), (24, 0, 3, "f64"), VIEW, (24, 24, 3, "f64"),  # 2^-e, |.|,
                 VIEW, (24, 24, 3, "f64"), (48, 24, 3, "f64"), (24, 3, 3, "f64"), (27, 24, 3, "f64"),  # tops, 2^S;
                 (24, 24, 0, "int"))  # round_half_up
_CORNERS = ((24, 16, 2, "int"), (24, 16, 2, "int"), (32, 32, 4, "int"), (40, 32, 4, "int"), (32, 0, 4, "int"),
            (32, 0, 4, "int"))  # the integer corners, their least and greatest
BNCOEF = {
    "bn_forward": (VIEW, (16, 16, 0, "f64"), (16, 16, 2, "f64"), F64_MAP, F64_BIN, F64_MAP, F64_MAP, F64_MAP,  # moments
                   VIEW, F64_MAP, F64_BIN, F64_BIN, F64_BIN, F64_MAP, F64_MAP, F64_MAP,  # 2^e_y, mean, var, invstd
                   CAST_64, F64_BIN, F64_BIN, CAST_64, F64_BIN, F64_BIN),  # m1, b0
    "bn_backward": (VIEW, (16, 16, 0, "f64"), (16, 16, 2, "f64"), VIEW, F64_MAP, F64_BIN, F64_BIN,  # G, 2^e_y, centred
                    CAST_64, F64_BIN, F64_MAP, *[F64_BIN] * 5, F64_MAP, F64_MAP, F64_MAP,  # p, k, q
                    F64_BIN, F64_BIN, F64_MAP, F64_BIN, F64_BIN, F64_BIN, F64_MAP, F64_MAP),  # r, dgamma, dbeta
    "apply_plan": _BOX + ((32, 0, 4, "f64"), VIEW) + _COEFFICIENTS + _CORNERS,  # both ends of the box
    "apply_plan, relu": _BOX + _COEFFICIENTS + _CORNERS,  # its top alone
    # host/train/intops.py's BatchNorm in inference: 1 / sqrt(running_var + eps), m1 = gamma invstd, the
    # per-channel scale 2^e_y and m1 times it, b0 = beta - m1 running_mean
    "running_affine": (CAST_64, F64_MAP, F64_MAP, F64_MAP, CAST_64, F64_BIN, F64_MAP, F64_BIN, CAST_64, CAST_64,
                       F64_BIN, F64_BIN),
}
BNCOEF_KINDS = {"fwd": ("bn_forward", "apply_plan, relu"), "bwd": ("bn_backward", "apply_plan"),
                "relu_bwd": ("apply_plan",), "eval": ("running_affine", "apply_plan, relu")}


def bncoef_work(c: int, kind: str) -> dict:
    """The coefficient rules of one BatchNorm pass over ``c`` channels (contract/bncoef.py), by
    ``kind``: "fwd" (stat_shift, bn_forward, apply_plan of its ReLU), "bwd" (stat_shift,
    bn_backward, apply_plan to int16), "relu_bwd" (apply_plan of the gradients' alignment), "eval"
    (inference: the running statistics' affine, apply_plan); or one rule of ``BNCOEF`` alone."""
    return passes(c, *(p for rule in BNCOEF_KINDS.get(kind, (kind,)) for p in BNCOEF[rule]))
