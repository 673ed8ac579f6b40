"""The numeric contract (docs/numerics.md) as numpy code: formats, constants and every
integer operation of the engine, in the plainest form that is still fast enough for tests.

This module is the one machine-readable source of the contract: the PyTorch reference
(reference/quant.py) and the HLS C++ (through the generated ``e2t_numerics.h``) follow it,
and tests require their integers to equal the ones computed here.

Conventions: a quantity is an integer array ``q`` with a power-of-two exponent ``e``; its
value is ``q * 2**e``. Rounding is round-half-up (add half an LSB, arithmetic shift right);
saturation clips to the format's range and is counted. Integer work is done in int64;
convolutions run as im2col + float64 matrix products, exact because every sum stays below
2**53 (checked by ``_exact``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import parallel
from .errors import E2TError


@dataclass(frozen=True)
class Fmt:
    """A signed two's-complement integer format of ``bits`` bits."""

    name: str
    bits: int
    doc: str

    @property
    def lo(self) -> int:
        return -(1 << (self.bits - 1))

    @property
    def hi(self) -> int:
        return (1 << (self.bits - 1)) - 1

    def saturate(self, q: np.ndarray) -> tuple[np.ndarray, int]:
        """Clip to the range; returns (clipped int64 array, number of clipped entries)."""
        q = np.asarray(q, dtype=np.int64)
        n = int(np.count_nonzero((q < self.lo) | (q > self.hi)))
        return np.clip(q, self.lo, self.hi), n


# The C integer types of the engine's pointer ports (the register map's "type") as numpy dtypes.
C_TYPES = {"int8_t": np.int8, "int16_t": np.int16, "int32_t": np.int32, "int64_t": np.int64}

ACT = Fmt("act", 8, "conv input activations x_q, per-tensor exponent")
WGT = Fmt("wgt", 8, "weights as used by the engine, per-output-channel exponent")
GRAD = Fmt("grad", 16, "output gradients g_q, per-tensor exponent")
MSB = Fmt("msb", 4, "x_msb: the 4 most significant bits of x_q (rounded), for the PSG predictor")
OUT = Fmt("out", 32, "conv outputs and input gradients as written to DDR")
MASTER = Fmt("master", 32, "master weights, per-layer exponent (block floating point)")
MOM = Fmt("mom", 32, "momentum buffer, fixed exponent MOM_EXP")
SIGN = Fmt("sign", 2, "sign gradient in {-1, 0, +1}, stored as int8")
FORMATS = (ACT, WGT, GRAD, MSB, OUT, MASTER, MOM, SIGN)

MSB_SHIFT = ACT.bits - MSB.bits  # x_msb = sat4(round(x_q / 2**MSB_SHIFT))
MOM_EXP = -24                    # momentum LSB is 2**-24: |buf| <= (1 + wd|W|) / (1 - mu) < 2**7
MU_FRAC = 16                     # momentum factor as MU / 2**16
WD_FRAC = 32                     # weight decay as WD / 2**32
LR_FRAC = 32                     # learning rate as LR / 2**32 (so lr < 0.5)
RATIO_FRAC = 16                  # adaptive PSG threshold ratio as R / 2**16
MASTER_INIT_BITS = 24            # a fresh layer's largest weight fits in 24 bits ...
MASTER_RENORM_BITS = 30          # ... and a layer whose weights reach 2**30 is shifted right
MASTER_EXP_MIN = -48             # keeps the update's shift (56 + e_w) positive ...
MASTER_EXP_MAX = 7               # ... and below 64, as the weight-decay shift 8 - e_w is above 0
ALIGN_BITS = 12                  # backward-data aligns channel weights within 2**12 of the largest
WSHIFT_MAX = 31                  # per-channel weight shifts s[o] lie in [0, 31] (int32 masters give <= 25)
ACC_BITS = 64                    # accumulators of this model; docs/numerics.md bounds each op
STAT_BITS = 18                   # STATS operands: sat18(rshift_round(v, t)) (docs/numerics.md, section 9)
COEF_M_BITS = 24                 # APPLY multipliers: |M1|, |M2| < 2**24 ...
COEF_B_BITS = 56                 # ... and offsets |B| < 2**56, so v = M1 a + M2 b + B stays below 2**57
SHIFT_MAX = 62                   # the largest rounding shift an op accepts
CONSTANTS = ("MSB_SHIFT", "MOM_EXP", "MU_FRAC", "WD_FRAC", "LR_FRAC", "RATIO_FRAC",
             "MASTER_INIT_BITS", "MASTER_RENORM_BITS", "MASTER_EXP_MIN", "MASTER_EXP_MAX", "ALIGN_BITS", "WSHIFT_MAX",
             "STAT_BITS", "COEF_M_BITS", "COEF_B_BITS", "SHIFT_MAX")


# -- primitives ---------------------------------------------------------------------------

def rshift_round(v, s):
    """Round-half-up shift: ``floor(v / 2**s + 1/2)`` for s > 0, ``v * 2**-s`` for s <= 0.

    ``s`` may be an array broadcasting against ``v`` (per-channel shifts).
    """
    v = np.asarray(v, dtype=np.int64)
    s = np.asarray(s, dtype=np.int64)
    pos = np.maximum(s, 0)
    half = np.where(pos > 0, np.left_shift(np.int64(1), np.maximum(pos - 1, 0)), 0)
    return np.where(s > 0, np.right_shift(v + half, pos), np.left_shift(v, np.maximum(-s, 0)))


def bitlen(n: int) -> int:
    """Bits of a non-negative integer (0 for 0)."""
    return int(n).bit_length()


def exponent_for(amax: float, fmt: Fmt) -> int:
    """Smallest exponent e with ``amax * 2**-e < fmt.hi + 1/2``: nothing saturates after
    round-half-up. 0 for an all-zero tensor. Exact: only powers of two scale floats."""
    amax = float(amax)
    if not amax > 0 or not math.isfinite(amax):
        if amax == 0:
            return 0
        raise ValueError(f"cannot choose an exponent for a tensor whose max |value| is {amax}")
    limit = fmt.hi + 0.5
    e = math.frexp(amax / limit)[1]
    while amax < math.ldexp(limit, e - 1):
        e -= 1
    while amax >= math.ldexp(limit, e):
        e += 1
    return e


def quantize(x, e: int, fmt: Fmt) -> tuple[np.ndarray, int]:
    """Float (float32) -> integers of ``fmt`` at exponent ``e``: round half up, saturate.

    Returns (int64 array, saturation count). float32 inputs scaled in float64 make
    ``v + 0.5`` exact, so every implementation rounds the same way.
    """
    v = np.ldexp(np.asarray(x, dtype=np.float64), -e)
    return fmt.saturate(np.floor(v + 0.5).astype(np.int64))


def quantize_tensor(x, fmt: Fmt, dtype=np.int64) -> tuple[np.ndarray, int, int]:
    """Per-tensor max-abs power-of-two quantization: (q as ``dtype``, e, saturations).

    The exponent leaves every |x * 2^-e| below hi + 1/2, so nothing saturates; a float32
    tensor is then rounded in float32 exactly (``_round_half_up32``), as ``quantize`` does."""
    x = np.asarray(x)
    hi, lo = parallel.pair(lambda: float(x.max()), lambda: float(x.min()), x.size) if x.size else (0.0, 0.0)
    e = exponent_for(max(hi, -lo), fmt)
    if x.dtype == np.float32:
        q = np.empty(x.shape, dtype)
        xa, qa = (x, q) if x.ndim else (x.reshape(1), q.reshape(1))

        def part(a, b):
            xs = xa[a:b]
            # x * 2^-e is ldexp's correctly rounded result; 2^-e must be a normal float32 itself
            v = xs * np.float32(2.0 ** -e) if -126 <= -e <= 127 else np.ldexp(xs, np.int32(-e))
            _round_half_up32(v, qa[a:b])

        parallel.halves(part, len(xa), x.size)  # elementwise: the same integers on either thread
        return q, e, 0
    q, sat = quantize(x, e, fmt)
    return q.astype(dtype, copy=False), e, sat


def _round_half_up32(v: np.ndarray, q: np.ndarray) -> None:
    """q = floor(v + 1/2) of float32 values below 2^23 in magnitude, exactly (``v`` is
    overwritten): floor(v), plus one where the fraction v - floor(v) (exact in float32, or
    rounded without crossing 1/2) is at least 1/2. ``v + 0.5`` itself would round in float32
    (0.49999997 + 0.5 = 1.0)."""
    f = np.floor(v)
    np.subtract(v, f, out=v)
    np.copyto(q, f, casting="unsafe")
    np.add(q, (v >= np.float32(0.5)).view(np.int8), out=q, casting="unsafe")  # integer adds: no bool-to-float pass


def dequantize(q, e) -> np.ndarray:
    """Integers at exponent(s) ``e`` (an int, or per channel broadcasting against ``q``) ->
    float32, rounded once: ``q * 2^e`` (section 3). With every exponent in [-126, 96] the
    float32 product of float32(q) and 2^e is that rounding (scaling by a power of two is exact
    there); otherwise it is computed in float64."""
    e, q = np.asarray(e, np.int64), np.asarray(q)
    if e.size and -126 <= int(e.min()) and int(e.max()) <= 96:
        scale = np.ldexp(np.float32(1), e.astype(np.int32))
        out = np.empty(np.broadcast_shapes(q.shape, scale.shape), np.float32)
        if out.shape != q.shape or not q.ndim or (scale.ndim and scale.shape[0] != 1):
            np.multiply(q.astype(np.float32), scale, out=out)
        else:  # images split over two threads: the same product element by element
            parallel.halves(lambda a, b: np.multiply(q[a:b].astype(np.float32), scale, out=out[a:b]), len(q), q.size)
        return out
    return np.ldexp(np.asarray(q, np.float64), e).astype(np.float32)


# -- weights ------------------------------------------------------------------------------

def master_from_float(w) -> tuple[np.ndarray, int]:
    """Initial master weights of a layer: (int64 mantissas, exponent), largest < 2**23."""
    w = np.asarray(w, dtype=np.float32)
    amax = float(np.max(np.abs(w)))
    init = Fmt("master_init", MASTER_INIT_BITS, "")
    e = max(exponent_for(amax, init), MASTER_EXP_MIN) if amax > 0 else MASTER_EXP_MIN
    q, _ = quantize(w, e, MASTER)
    return q, e


def renormalize(w, e_w: int) -> tuple[np.ndarray, int]:
    """Shift a layer's master weights right (round half up) until all are below 2**30."""
    w = np.asarray(w, dtype=np.int64)
    limit = 1 << MASTER_RENORM_BITS
    while w.size and int(np.max(np.abs(w))) >= limit:
        w, e_w = rshift_round(w, 1), e_w + 1
    return w, e_w


def weight_shifts(w) -> np.ndarray:
    """Per output channel, the smallest s >= 0 with ``rshift_round(max|w[o]|, s) <= 127``."""
    w = np.asarray(w, dtype=np.int64)
    return shifts_for(np.abs(w.reshape(w.shape[0], -1)).max(axis=1))


def shifts_for(amax) -> np.ndarray:
    """``weight_shifts`` from each output channel's largest magnitude ``amax``."""
    amax = np.asarray(amax, dtype=np.int64)  # below 2**53: frexp's exponent of an integer is its bit length
    s = np.maximum(np.frexp(amax.astype(np.float64))[1].astype(np.int64) - (WGT.bits - 1), 0)
    s += rshift_round(amax, s) > WGT.hi
    return s


def weights_for_use(w_master) -> tuple[np.ndarray, np.ndarray]:
    """Master mantissas -> (int8-range weights W_q, per-channel shifts s); the exponent of
    channel o is ``e_w + s[o]``. Never saturates (``weight_shifts`` guarantees it)."""
    w = np.asarray(w_master, dtype=np.int64)
    s = weight_shifts(w)
    return rshift_round(w, s.reshape(-1, *([1] * (w.ndim - 1)))), s


def weights_for_use_from_float(w) -> tuple[np.ndarray, np.ndarray]:
    """Float weights -> (W_q, per-channel exponents): the fixed-point mode without PSG."""
    w = np.asarray(w, dtype=np.float32)
    e = np.array([exponent_for(float(np.max(np.abs(c))), WGT) for c in w], dtype=np.int64)
    q = np.floor(np.ldexp(w.astype(np.float64), -e.reshape(-1, *([1] * (w.ndim - 1)))) + 0.5)
    return q.astype(np.int64), e


# -- convolutions (exact integer sums) ----------------------------------------------------

def _exact(bound: int, what: str) -> None:
    if bound >= 1 << 53:
        raise OverflowError(f"{what}: sums up to {bound} exceed 2**53; float64 would round")


def _cols(x, k: int, stride: int, pad: int) -> tuple[np.ndarray, int, int]:
    """im2col: (N*Ho*Wo, C*k*k) float64 patches of an NCHW integer tensor."""
    n, c, h, w = x.shape
    ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    xp = np.pad(np.asarray(x, dtype=np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    sn, sc, sh, sw = xp.strides
    patches = np.lib.stride_tricks.as_strided(
        xp, (n, ho, wo, c, k, k), (sn, sh * stride, sw * stride, sc, sh, sw), writeable=False)
    return patches.reshape(n * ho * wo, c * k * k), ho, wo


def out_shift(bound: int) -> int:
    """Smallest right shift r >= 0 after which every result within +-``bound`` fits the 32-bit
    output format: ``bound + 2**(r-1) < 2**(31+r)`` (the rounding half counts), so nothing the
    bound admits can saturate."""
    r = max(0, bitlen(bound) - (OUT.bits - 1))
    while r > 0 and bound + (1 << (r - 1)) >= 1 << (OUT.bits - 1 + r):
        r += 1
    return r


def fwd_bound(w_q) -> int:
    """Largest possible |conv(x_q, W_q)| over all int8 inputs: 128 * max_o sum |W_q[o]|."""
    w = np.abs(np.asarray(w_q, np.int64))
    return (-ACT.lo) * int(w.reshape(len(w), -1).sum(1).max(initial=0))


def bwd_data_bound(g_q, w_al) -> int:
    """Largest possible |conv_transpose(g_q, W_al)|: max|g_q| * max_c sum_{o,taps} |W_al[o, c]|."""
    w = np.abs(np.asarray(w_al, np.int64))
    g = np.asarray(g_q)
    gmax = max(-int(g.min()), int(g.max())) if g.size else 0  # no int64 copy of a large g
    return gmax * int(w.transpose(1, 0, 2, 3).reshape(w.shape[1], -1).sum(1).max(initial=0))


def conv_fwd(x_q, w_q, stride: int, pad: int) -> tuple[np.ndarray, int]:
    """y = conv(x_q, W_q): exact sum, then ``rshift_round`` by r so it fits 32 bits.

    Returns (int64 NCHW, r); channel o of y has exponent e_x + e_w + s[o] + r.
    """
    o, c, k, _ = w_q.shape
    bound = fwd_bound(w_q)
    _exact(bound, "conv_fwd")
    cols, ho, wo = _cols(x_q, k, stride, pad)
    acc = (cols @ np.asarray(w_q, np.float64).reshape(o, -1).T).astype(np.int64)
    r = out_shift(bound)
    y = rshift_round(acc, r).reshape(len(x_q), ho, wo, o).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(y), r


def aligned_weights(w_q, e) -> tuple[np.ndarray, int]:
    """Weights of per-channel exponents ``e[o]`` on one exponent ``e_ref``, for sums over
    output channels: e_ref = max(e) - ALIGN_BITS; W_q[o] * 2**(e[o] - e_ref), where a
    channel below e_ref is shifted right with rounding (it is < 2**-12 of the largest).
    Returns (aligned int64 weights, e_ref)."""
    e = np.asarray(e, dtype=np.int64)
    e_ref = int(e.max()) - ALIGN_BITS if e.size else 0
    return rshift_round(w_q, (e_ref - e).reshape(-1, 1, 1, 1)), e_ref


def conv_bwd_data(g_q, w_q, e, stride: int, pad: int, in_hw: tuple) -> tuple[np.ndarray, int, int]:
    """g_x = conv_transpose(g_q, W_q) on aligned weights (``aligned_weights``), then shift r
    so it fits 32 bits. ``e`` are the per-channel weight exponents (or shifts: only their
    differences matter). Returns (int64 NCHW g_x, r, e_ref); g_x's exponent is
    e_g + e_ref + r (with shifts s: e_g + e_w + e_ref + r).
    """
    w_al, e_ref = aligned_weights(w_q, e)
    o, c, k, _ = w_al.shape
    bound = bwd_data_bound(g_q, w_al)
    _exact(bound, "conv_bwd_data")
    n, _, ho, wo = g_q.shape
    h, w = in_hw
    # scatter-add of every output position's contribution: cols^T for the transposed conv
    contrib = np.asarray(g_q, np.float64).transpose(0, 2, 3, 1).reshape(-1, o) @ w_al.reshape(o, -1).astype(np.float64)
    contrib = contrib.reshape(n, ho, wo, c, k, k)
    gx = np.zeros((n, c, h + 2 * pad, w + 2 * pad), dtype=np.float64)
    for kh in range(k):
        for kw in range(k):
            gx[:, :, kh:kh + stride * ho:stride, kw:kw + stride * wo:stride] += contrib[:, :, :, :, kh, kw].transpose(0, 3, 1, 2)
    gx = gx[:, :, pad:pad + h, pad:pad + w].astype(np.int64)
    r = out_shift(bound)
    return rshift_round(gx, r), r, e_ref


def conv_wgrad(x_q, g_q, k: int, stride: int, pad: int, x_max: int) -> np.ndarray:
    """G[o, c, kh, kw] = sum over batch and positions of x * g, exact, int64.

    ``x_max`` bounds |x| (128 for x_q, 8 for x_msb): the sum must stay below 2**53.
    """
    n, o, ho, wo = g_q.shape
    _exact(x_max * (-GRAD.lo) * n * ho * wo, "conv_wgrad")
    cols, _, _ = _cols(x_q, k, stride, pad)
    g = np.asarray(g_q, np.float64).transpose(0, 2, 3, 1).reshape(-1, o)
    return (g.T @ cols).astype(np.int64).reshape(o, -1, k, k)


# -- PSG ----------------------------------------------------------------------------------

def msb(x_q) -> np.ndarray:
    """x_msb = sat4(rshift_round(x_q, 4)): the predictor's 4-bit activations (value x16)."""
    return MSB.saturate(rshift_round(x_q, MSB_SHIFT))[0]


def threshold_abs(tau: float, e_x: int, e_g: int) -> int:
    """Absolute threshold tau -> integer T on |G_msb| (exponent e_x + MSB_SHIFT + e_g)."""
    if math.isinf(tau):
        return 1 << 62
    return int(math.ceil(math.ldexp(tau, -(e_x + MSB_SHIFT + e_g))))


def ratio_fixed(r: float) -> int:
    """Adaptive threshold ratio r (tau = r * max|G_msb|) as R / 2**RATIO_FRAC."""
    return int(math.floor(math.ldexp(r, RATIO_FRAC) + 0.5))


def psg_select(g_msb, g_full, T: int | None = None, R: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sign gradient: sign(G_msb) where the predictor is sure, else sign(G_full).

    Sure means ``|G_msb| >= T`` (absolute) or ``|G_msb| * 2**16 >= R * max|G_msb|``
    (adaptive). Returns (sign as int8, mask of predictor-decided entries).
    """
    a = np.abs(np.asarray(g_msb, np.int64))
    if (T is None) == (R is None):
        raise ValueError("give exactly one of T (absolute) or R (adaptive)")
    sure = a >= T if T is not None else np.left_shift(a, RATIO_FRAC) >= R * int(a.max(initial=0))
    sign = np.where(sure, np.sign(g_msb), np.sign(g_full)).astype(np.int8)
    return sign, sure


def uncertain_tiles(sure, tile_o: int, tile_i: int) -> tuple[int, int, int]:
    """Tiles of the engine's weight-gradient loop over the (out, in) channel grid: returns
    (tiles, tiles with any unsure entry, channel pairs inside those tiles). The engine
    recomputes a tile at full precision, whole, when any of its entries is unsure."""
    o, c = sure.shape[:2]
    unsure = ~np.asarray(sure).reshape(o, c, -1).all(axis=2)
    to, ti = -(-o // tile_o), -(-c // tile_i)
    padded = np.zeros((to * tile_o, ti * tile_i), dtype=bool)
    padded[:o, :c] = unsure
    per_tile = padded.reshape(to, tile_o, ti, tile_i).any(axis=(1, 3))
    present = np.zeros_like(padded)
    present[:o, :c] = True
    pairs = int((present.reshape(to, tile_o, ti, tile_i).sum(axis=(1, 3)) * per_tile).sum())
    return to * ti, int(per_tile.sum()), pairs


# -- update -------------------------------------------------------------------------------

@dataclass(frozen=True)
class UpdateConstants:
    """The update's fixed-point registers for one step: LR, WD and MU as integers."""

    LR: int
    WD: int
    MU: int

    @classmethod
    def from_floats(cls, lr: float, weight_decay: float, momentum: float) -> "UpdateConstants":
        if not 0 < lr < 0.5 or not 0 <= weight_decay < 0.5 or not 0 <= momentum < 1:
            raise ValueError(f"sign update needs 0 < lr < 0.5, 0 <= wd < 0.5, 0 <= momentum < 1; "
                             f"got {lr}, {weight_decay}, {momentum}")
        fix = lambda v, frac: int(math.floor(math.ldexp(v, frac) + 0.5))  # noqa: E731
        return cls(fix(lr, LR_FRAC), fix(weight_decay, WD_FRAC), fix(momentum, MU_FRAC))


def sign_update(w, e_w: int, buf, sign, k: UpdateConstants) -> tuple[np.ndarray, np.ndarray, int]:
    """One sign-momentum step in integers (docs/numerics.md, "update"):

        d   = sign * 2**24 + rshift_round(WD * W, 8 - e_w)      # sign + wd * W, LSB 2**-24
        buf = sat32(rshift_round(MU * buf, 16) + d)
        W   = sat32(W - rshift_round(LR * buf, 56 + e_w))        # lr * buf in W's LSBs

    Returns (W, buf, saturations). The caller renormalizes W afterwards.
    """
    if not MASTER_EXP_MIN <= e_w <= MASTER_EXP_MAX:
        raise ValueError(f"master exponent {e_w} outside [{MASTER_EXP_MIN}, {MASTER_EXP_MAX}]: the update's shifts "
                         f"would leave 1..63")
    sign = np.asarray(sign, np.int64)
    if sign.size and (sign.min() < -1 or sign.max() > 1):
        raise ValueError("sign inputs of the update must lie in {-1, 0, +1}")
    w = np.asarray(w, np.int64)
    d = sign * (1 << -MOM_EXP) + rshift_round(k.WD * w, (WD_FRAC + MOM_EXP) - e_w)
    buf, sat_b = MOM.saturate(rshift_round(k.MU * np.asarray(buf, np.int64), MU_FRAC) + d)
    step = rshift_round(k.LR * buf, LR_FRAC - MOM_EXP + e_w)
    w, sat_w = MASTER.saturate(w - step)
    return w, buf, sat_b + sat_w


# -- per-element ops (docs/numerics.md, section 9) ----------------------------------------

_STAT = Fmt("stat", STAT_BITS, "STATS operands a_t, b_t")
_APPLY_OUT = {8: ACT, 16: GRAD, 32: OUT}  # APPLY's output formats by width
_COEFS = (("M1", COEF_M_BITS), ("M2", COEF_M_BITS), ("B", COEF_B_BITS))


def _shift(name: str, s) -> int:
    """A rounding shift register's value: an integer in 0..SHIFT_MAX."""
    if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 0 <= s <= SHIFT_MAX:
        raise E2TError(f"{name} = {s!r}: a rounding shift must be an integer in 0..{SHIFT_MAX}")
    return int(s)


def _int32_nchw(name: str, x, shape: tuple | None = None) -> np.ndarray:
    """An N x C x H x W integer tensor of int32 values (``shape``: the one it must have)."""
    x = np.asarray(x)
    if x.dtype.kind not in "iu":
        raise E2TError(f"{name} must hold integers (int32 values), not {x.dtype}")
    if shape is None and (x.ndim != 4 or 0 in x.shape):
        raise E2TError(f"{name} must be a non-empty N x C x H x W tensor, not of shape {x.shape}")
    if shape is not None and x.shape != shape:
        raise E2TError(f"{name} has shape {x.shape}, the first operand {shape}: they must match")
    if x.dtype.itemsize >= 4 and not (OUT.lo <= int(x.min()) and int(x.max()) <= OUT.hi):
        raise E2TError(f"{name} has values outside int32 [{OUT.lo}, {OUT.hi}]")
    return x.astype(np.int64) if x.dtype == np.uint64 else x  # uint64 times int64 would be float64


def channel_stats(a, t, b=None, u=0) -> tuple[np.ndarray, int]:
    """STATS (op 5, section 9.2): per channel ``(sum a_t, sum a_t b_t, min a, max a)`` over n, y, x,
    with ``a_t = sat18(rshift_round(a, t))`` and ``b_t = a_t`` (``b`` None: SQUARE) or
    ``sat18(rshift_round(b, u))`` (PRODUCT); ``u`` is checked in both modes. Returns (int64
    [C][4], saturations: the clips of a_t plus, in PRODUCT, those of b_t)."""
    a = _int32_nchw("a", a)
    t, u = _shift("t", t), _shift("u", u)
    at, sat = _STAT.saturate(rshift_round(a, t))
    bt = at
    if b is not None:
        bt, sat_b = _STAT.saturate(rshift_round(_int32_nchw("b", b, a.shape), u))
        sat += sat_b
    n, c = a.shape[:2]
    stats = np.empty((c, 4), np.int64)
    stats[:, 0] = at.reshape(n, c, -1).sum(axis=(0, 2))
    stats[:, 1] = (at * bt).reshape(n, c, -1).sum(axis=(0, 2))
    planes = a.reshape(n, c, -1)
    stats[:, 2], stats[:, 3] = planes.min(axis=(0, 2)), planes.max(axis=(0, 2))
    return stats, sat


def _coefficients(coef, c: int) -> np.ndarray:
    """APPLY's ``coef`` as int64 [C][3]: |M1|, |M2| < 2**COEF_M_BITS, |B| < 2**COEF_B_BITS."""
    coef = np.asarray(coef)
    if coef.dtype.kind not in "iu" or coef.shape != (c, 3):
        raise E2TError(f"coef must be integers of shape ({c}, 3) (M1, M2, B per channel), not {coef.dtype} {coef.shape}")
    for ch, row in enumerate(coef.tolist()):  # Python ints: exact for any integer dtype
        for v, (name, bits) in zip(row, _COEFS):
            if not -(1 << bits) < v < 1 << bits:
                raise E2TError(f"coefficient {name} of channel {ch} is {v}: |{name}| must be below 2^{bits}")
    return coef.astype(np.int64)


def apply_elementwise(a, coef, shift, b=None, relu=False, mask=None, out_bits=8) -> tuple[np.ndarray, np.ndarray, int]:
    """APPLY (op 6, section 9.3): ``z = rshift_round(M1[c] a + M2[c] b + B[c], shift)``, then
    max(z, 0) (``relu``), then 0 where ``mask <= 0`` (``mask``: int8), then saturation to
    int``out_bits`` (8, 16, 32), clips counted. ``b``: None, int32 (second source src2) or int8
    (act), by its dtype. Returns (z as int8/int16/int32, per-plane (sum, min, max) of z as int64
    [N][C][3], saturations)."""
    a = _int32_nchw("a", a)
    n, c = a.shape[:2]
    coef = _coefficients(coef, c)
    shift = _shift("shift", shift)
    if out_bits not in _APPLY_OUT:
        raise E2TError(f"out_bits = {out_bits!r}: APPLY writes 8, 16 or 32-bit outputs")
    if b is not None and np.asarray(b).dtype not in (np.int32, np.int8):
        raise E2TError(f"b must be int32 (second source src2) or int8 (act), not {np.asarray(b).dtype}")
    if mask is not None and np.asarray(mask).dtype != np.int8:
        raise E2TError(f"mask must be int8, not {np.asarray(mask).dtype}")
    m1, m2, off = (coef[:, j].reshape(1, c, 1, 1) for j in range(3))
    v = m1 * a
    if b is not None:
        v += m2 * _int32_nchw("b", b, a.shape)
    v += off
    z = rshift_round(v, shift)
    if relu:
        np.maximum(z, 0, out=z)
    if mask is not None:
        z[_int32_nchw("mask", mask, a.shape) <= 0] = 0
    z, sat = _APPLY_OUT[out_bits].saturate(z)
    z = z.astype(f"int{out_bits}")
    planes = z.reshape(n, c, -1)
    stats = np.stack([planes.sum(axis=2, dtype=np.int64), planes.min(axis=2), planes.max(axis=2)], axis=2)
    return z, stats.astype(np.int64, copy=False), sat
