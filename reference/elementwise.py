"""Contract v2's per-element arithmetic in PyTorch integers (``--elementwise engine``;
docs/numerics.md, sections 9 and 10): the engine's STATS and APPLY on int64 tensors, the tensors
between them with their exponents and ranges, and how gradients meet (joined by an APPLY, or
scattered back from a gated block's images).

An independent implementation of contract/numerics.py's ``channel_stats`` and
``apply_elementwise``: the same integers, tensor-wide in torch. The host's O(channels) rules that
turn their sums into coefficients and exponents are contract/bncoef.py's, which every
implementation calls (numpy, on per-channel vectors), so all hand APPLY the same integers.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from contract import bncoef, numerics as nx

STAT_LO, STAT_HI = -(1 << (nx.STAT_BITS - 1)), (1 << (nx.STAT_BITS - 1)) - 1
PLANE = (2, 3)  # a plane's pixels of an NCHW tensor


def shift_round(v: torch.Tensor, s: int) -> torch.Tensor:
    """``rshift_round`` by one shift ``s >= 0``: add half an LSB, shift right arithmetically."""
    return (v + ((1 << s) >> 1)) >> s


def stats(a: torch.Tensor, t: int, b: torch.Tensor | None = None, u: int = 0) -> np.ndarray:
    """STATS of int64 NCHW ``a``: per channel ``(sum a_t, sum a_t b_t, min a, max a)`` as int64 [C][4],
    ``a_t = sat18(rshift_round(a, t))`` and ``b_t`` that of ``b`` by ``u`` (PRODUCT) or ``a_t`` (SQUARE)."""
    at = shift_round(a, t).clamp(STAT_LO, STAT_HI)
    bt = at if b is None else shift_round(b, u).clamp(STAT_LO, STAT_HI)
    every = (0, *PLANE)
    return torch.stack([at.sum(every), (at * bt).sum(every), a.amin(every), a.amax(every)], 1).cpu().numpy()


def planes_of(z: torch.Tensor) -> torch.Tensor:
    """Each plane's (sum, min, max) of an NCHW tensor: int64 [N][C][3]."""
    return torch.stack([z.sum(PLANE), z.amin(PLANE), z.amax(PLANE)], 2)


def apply(a: torch.Tensor, coef: np.ndarray, shift: int, b: torch.Tensor | None = None, relu: bool = False,
          mask: torch.Tensor | None = None, fmt: nx.Fmt = nx.ACT) -> tuple[torch.Tensor, torch.Tensor]:
    """APPLY: ``z = rshift_round(M1[c] a + M2[c] b + B[c], S)`` (exact in int64: below 2^62), then
    ``max(z, 0)`` (``relu``), 0 where ``mask <= 0``, clipped to ``fmt`` (bncoef's coefficients never
    clip). Returns (z, its plane statistics)."""
    m1, m2, off = torch.from_numpy(np.asarray(coef, np.int64)).to(a.device).T.reshape(3, 1, -1, 1, 1)
    v = m1 * a + off if b is None else m1 * a + m2 * b + off
    z = shift_round(v, shift)
    if relu:
        z = z.clamp(min=0)
    if mask is not None:
        z = torch.where(mask > 0, z, 0)
    z = z.clamp(fmt.lo, fmt.hi)
    return z, planes_of(z)


@dataclass(eq=False)
class Fixed:
    """An engine tensor of the real values ``q 2^e``: int64 NCHW ``q``, per-channel exponents ``e``
    (numpy; an activation or a gradient has one for all), each channel's least and greatest value
    ``lo``, ``hi`` (numpy, once known), the plane statistics ``planes`` of the APPLY that wrote it,
    ``bound`` on ``|q|`` known before the data (a conv output's). ``wants``: whether it gets a
    gradient (PyTorch's requires_grad); ``grads``: the gradients its consumers gave it, in the order
    the backward pass reached them; ``taken``: (the whole batch's tensor, its images) for a gated
    block's rows."""

    q: torch.Tensor
    e: np.ndarray
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None
    planes: torch.Tensor | None = None
    bound: int | None = None
    wants: bool = True
    grads: list = field(default_factory=list)
    taken: tuple | None = None

    @property
    def exponent(self) -> int:
        return int(self.e[0])

    def box(self) -> np.ndarray:
        """Each channel's (least, greatest) value, C x 2."""
        return np.stack([self.lo, self.hi], 1)


def box_of(planes: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Each channel's least and greatest value from plane statistics [N][C][3]."""
    return planes[:, :, 1].amin(0).cpu().numpy(), planes[:, :, 2].amax(0).cpu().numpy()


def written(z: torch.Tensor, planes: torch.Tensor, e: int, wants: bool = True) -> Fixed:
    """The tensor ``z`` an APPLY wrote at exponent ``e``, its range from its plane statistics."""
    return Fixed(z, np.full(z.shape[1], e, np.int64), *box_of(planes), planes, wants=wants)


@dataclass(eq=False)
class Affine:
    """A BatchNorm's output (a residual add's: two terms), not yet written: per channel
    ``sum m_i term_i + b0`` of the terms' real values (float64 ``m``), the first term int32."""

    terms: list
    b0: np.ndarray
    wants: bool = True
    grads: list = field(default_factory=list)
    taken: tuple | None = None


def rows(v, picks: torch.Tensor):
    """A gated block's input ``v`` (Fixed or Affine) for the images ``picks``: an int8 tensor's range
    from their planes, a conv output's (its statistics) the whole batch's."""
    if isinstance(v, Affine):
        return Affine([(rows(a, picks), m) for a, m in v.terms], v.b0, v.wants, taken=(v, picks))
    planes = v.planes[picks] if v.planes is not None else None
    lo, hi = box_of(planes) if planes is not None else (v.lo, v.hi)
    return Fixed(v.q[picks], v.e, lo, hi, planes, v.bound, v.wants, taken=(v, picks))


def give(target, g: Fixed) -> None:
    """Gradient ``g`` to ``target`` where it wants one; a gated block's rows scatter it into a
    batch of zeros of the whole tensor (range widened to take in 0)."""
    if not target.wants:
        return
    if target.taken is not None:
        target, picks = target.taken
        n = len(target.q) if isinstance(target, Fixed) else len(target.terms[0][0].q)
        q = g.q.new_zeros((n, *g.q.shape[1:]))
        q[picks] = g.q
        g = Fixed(q, g.e, np.minimum(g.lo, 0), np.maximum(g.hi, 0))
    target.grads.append(g)


def join(parts: list, mask: Fixed | None = None) -> Fixed:
    """One or two gradients at their own exponents added by an APPLY into int32 (``mask``: 0 where
    it is <= 0, ReLU's backward), at the exponent their ranges need."""
    a, b = parts[0], parts[1] if len(parts) > 1 else None
    c = a.q.shape[1]
    m1 = np.full(c, np.ldexp(1.0, a.exponent))
    m2 = np.full(c, np.ldexp(1.0, b.exponent)) if b else np.zeros(c)
    e, coef, shift = bncoef.apply_plan(m1, m2, np.zeros(c), nx.OUT, a.box(), b.box() if b else None)
    return written(*apply(a.q, coef, shift, b.q if b else None, mask=mask.q if mask else None, fmt=nx.OUT), e)


def reduce(parts: list, keep: int) -> list:
    """The gradients ``parts`` joined two at a time, first ones first, until at most ``keep`` remain."""
    while len(parts) > keep:
        parts = [join(parts[:2])] + parts[2:]
    return parts
