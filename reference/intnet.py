"""The reference trainer's twin of contract v2 (``e2t train --backend torch --precision fixed
--elementwise engine``): a CifarResNet or GatedResNet computed as the on-engine trainer computes it
with the per-element work on the engine (host/train/intops.py; docs/numerics.md, sections 9 and
10), so both give the same integers step for step.

Every conv (QConv2d) takes the int8 output of the APPLY before it (the stem: the images quantized)
and writes int32; each BatchNorm takes its input's exact STATS sums, and the ReLU after it runs
BatchNorm's map, the residual's second term and the int8 quantization in one APPLY
(reference/elementwise.py) whose plane sums give the pooled features. Coefficients and exponents
come from contract/bncoef.py. A gated block runs on the images its gate lets through, and its mix
writes the shortcut for the others at the block's exponent. The backward pass is explicit: each
op records its backward beside its forward on a ``Tape`` (ReLU: an APPLY of the gradients that
reach it, masked; BatchNorm: STATS PRODUCT and an APPLY into int16; the conv: CONV_BWD_DATA and
PSG's weight gradient), and a tensor's gradients are joined in the order the backward pass
reaches its consumers, the later op first, as the engine trainer joins them.

The float parts stay the reference's, computed with autograd and its exact host ops
(reference/hostexact.py): the classifier and the loss, SLU's gates (their 1x1 convs, LSTM and
output layer) and the cost loss, and the update. The network between two gates is one autograd
node (``_Stretch``), so autograd runs the stretches' and the gates' backward passes in the order
the engine trainer does: a stretch once the next one and its gate are done.
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch

from contract import bncoef, numerics as nx

from .elementwise import Affine, Fixed, apply, give, join, planes_of, reduce, rows, shift_round, stats, written
from .quant import aligned_weights, bwd_data_bound, conv_bwd_data, conv_fwd, fwd_bound, quantize_tensor
from .slu import decide

F32, F64 = np.float32, np.float64


class Tape:
    """One stretch's ops in forward order, each with its backward (called with the gradients its
    output got, when it got any); the parameter gradients (by ``id``) and dL/dm its backward gave."""

    def __init__(self):
        self.ops, self.grads, self.dm = [], {}, None

    def record(self, out, backward) -> None:
        self.ops.append((out, backward))

    def backward(self) -> None:
        for out, backward in reversed(self.ops):
            if out.grads:
                backward(out.grads)
        self.ops = []


def _exponents(c: int, e: int) -> np.ndarray:
    return np.full(c, e, np.int64)


def conv(tape: Tape, layer, x: Fixed) -> Fixed:
    """CONV_FWD of the int8 ``x`` into int32, with its exponents and bound; backward, CONV_BWD_DATA of
    BatchNorm's int16 gradient (its bound from the gradient's range) and the weight's gradient."""
    w_q, e_w = layer.weights_q()
    stride, pad = layer.stride[0], layer.padding[0]
    y, r = conv_fwd(x.q, w_q, stride, pad)
    layer.stats = {"act_saturations": 0, "out_shift": r}
    out = Fixed(y, x.exponent + e_w.cpu().numpy() + r, bound=int(nx.rshift_round(fwd_bound(w_q), r)),
                wants=x.wants or layer.weight.requires_grad)

    def backward(parts):
        (g,) = parts  # BatchNorm's, the conv's one consumer
        layer.stats["grad_saturations"] = 0
        if x.wants:
            gx, r, e_ref = conv_bwd_data(g.q, w_q, e_w, stride, pad, x.q.shape)
            top = int(nx.rshift_round(bwd_data_bound(max(-int(g.lo.min()), int(g.hi.max())),
                                                     aligned_weights(w_q, e_w)[0]), r))
            c = x.q.shape[1]
            give(x, Fixed(gx, _exponents(c, g.exponent + e_ref + r), np.full(c, -top), np.full(c, top)))
        if layer.weight.requires_grad:
            tape.grads[id(layer.weight)] = layer.weight_grad(x.q, x.exponent, g.q, g.exponent)

    tape.record(out, backward)
    return out


def batchnorm(tape: Tape, bn, y: Fixed, training: bool) -> Affine:
    """STATS SQUARE of the conv's output (in inference too: its range sets the next exponent), then
    the batch statistics (training: the running ones updated, reference/hostexact.py) or the
    running ones as an Affine; backward, STATS PRODUCT of the gradient and the input, the parameter
    gradients, and APPLY of the input gradient ``p g + q y + r`` into int16."""
    t = bncoef.stat_shift(y.bound)
    st = stats(y.q, t)
    y.lo, y.hi = st[:, 2], st[:, 3]
    gamma, beta = (p.detach().cpu().numpy() for p in (bn.weight, bn.bias))
    if not training:
        inv = 1.0 / np.sqrt(bn.running_var.cpu().numpy().astype(F64) + bn.eps)
        m1 = gamma.astype(F64) * inv
        return Affine([(y, m1 * np.ldexp(1.0, y.e))], beta.astype(F64) - m1 * bn.running_mean.cpu().numpy().astype(F64))
    m = y.q.numel() // y.q.shape[1]
    f = bncoef.bn_forward(st, t, m, y.e, gamma, beta, bn.eps)
    bn.track(torch.from_numpy(f["mean"]), torch.from_numpy(f["var"]), m)
    out = Affine([(y, f["m1"])], f["b0"], y.wants or bn.weight.requires_grad)

    def backward(parts):
        (g,) = reduce(parts, 1)  # a projection's BatchNorm: its block's add and the mix
        tg = bncoef.stat_shift(max(-int(g.lo.min()), int(g.hi.max())))
        sums = stats(g.q, tg, y.q, t)
        b = bncoef.bn_backward(sums, tg, t, m, g.exponent, y.e, f, gamma)
        if bn.weight.requires_grad:
            tape.grads[id(bn.weight)] = torch.from_numpy(b["dgamma"].astype(F32))
            tape.grads[id(bn.bias)] = torch.from_numpy(b["dbeta"].astype(F32))
        if y.wants:
            e, coef, shift = bncoef.apply_plan(b["p"], b["q"], b["r"], nx.GRAD, sums[:, 2:4], y.box())
            give(y, written(*apply(g.q, coef, shift, y.q, fmt=nx.GRAD), e))

    tape.record(out, backward)
    return out


def relu(tape: Tape, v: Affine, least: int | None = None) -> Fixed:
    """APPLY of the map ``v`` (BatchNorm's, with the residual's second term), ReLU and the int8
    quantization at the exponent its range needs, at least ``least`` (a gated block's output: its
    shortcut's); backward, the gradients that reach it joined two at a time down to two, then one
    APPLY adds them into int32, masked where the output is 0."""
    (a, m1), second = v.terms[0], v.terms[1] if len(v.terms) > 1 else (None, np.zeros(len(v.b0)))
    b, m2 = second
    e, coef, shift = bncoef.apply_plan(m1, m2, v.b0, nx.ACT, a.box(), b.box() if b else None, relu=True)
    if least is not None and e < least:
        e, (coef, shift) = least, bncoef.coefficients(m1, m2, v.b0, least)
    out = written(*apply(a.q, coef, shift, b.q if b else None, relu=True), e, v.wants)
    tape.record(out, lambda parts: give(v, join(reduce(parts, 2), mask=out)))
    return out


def add(tape: Tape, r: Affine, short) -> Affine:
    """The residual add: BatchNorm's map and the shortcut's (a projection's BatchNorm, or the int8
    block input at its exponent) joined for the ReLU's APPLY, nothing run; backward, the gradient to both."""
    if isinstance(short, Affine):
        out = Affine(r.terms + short.terms, r.b0 + short.b0, r.wants or short.wants)
    else:
        out = Affine(r.terms + [(short, np.ldexp(1.0, short.e))], r.b0, r.wants or short.wants)

    def backward(parts):
        (g,) = parts
        give(r, g)
        give(short, g)

    tape.record(out, backward)
    return out


def shortcut_exponent(short) -> int:
    """The exponent of a gated block's shortcut in int8: the block input's own, a projection's
    BatchNorm the one its range needs. The block's output takes at least it, its mix's."""
    if isinstance(short, Fixed):
        return short.exponent
    (a, m1), = short.terms
    return bncoef.apply_plan(m1, np.zeros(len(m1)), short.b0, nx.ACT, a.box())[0]


def mix(tape: Tape, inner: Fixed | None, short, picks: torch.Tensor, least: int, mask_wants: bool) -> Fixed:
    """SLU's mix at the block's exponent (``least`` where no image ran it): the shortcut written
    whole (a projection's BatchNorm by APPLY, the int8 input shifted) and the block's images ``picks``
    (``inner``) put in; backward, the gradient's rows to the block, a copy with them zeroed to the
    shortcut, and dL/dm per image as an exact integer sum of g (block - shortcut)."""
    k = len(picks)
    e = inner.exponent if k else least
    if isinstance(short, Affine):
        (a, m1), = short.terms
        q, planes = apply(a.q, *bncoef.coefficients(m1, np.zeros(len(m1)), short.b0, e))
    else:  # rounded half up by e - e_x >= 0; from 9 bits on every int8 rounds to 0
        q = shift_round(short.q, min(e - short.exponent, 9))
        planes = planes_of(q)
    kept = q[picks]  # the shortcut of the block's images, for dL/dm
    if k:
        q[picks], planes[picks] = inner.q, inner.planes
    out = written(q, planes, e)

    def backward(parts):
        (g,) = reduce(parts, 1)
        if short.wants:
            q_short = g.q.clone()
            q_short[picks] = 0
            give(short, Fixed(q_short, g.e, np.minimum(g.lo, 0), np.maximum(g.hi, 0)))
        on = g.q[picks]
        if k:
            give(inner, Fixed(on, g.e, g.lo, g.hi))
        if mask_wants:
            tape.dm = torch.zeros(len(g.q))
            if k:  # |g| < 2^31, |block - shortcut| < 2^8: exact in int64
                sums = (on * (inner.q - kept)).flatten(1).sum(1)
                tape.dm[picks] = (sums.double() * 2.0 ** (g.exponent + e)).float()

    tape.record(out, backward)
    return out


def basic_block(tape: Tape, block, x: Fixed, training: bool, gate: tuple | None = None) -> Fixed:
    """A BasicBlock: its shortcut (a projection conv and BatchNorm, or ``x``) on every image, its
    residual branch and the ReLU after the add; ``gate``: (the images its SLU gate let through,
    whether the gate's decision gets a gradient), the branch on those images only, then the mix."""
    short = x
    if block.downsample is not None:
        short = batchnorm(tape, block.downsample[1], conv(tape, block.downsample[0], x), training)
    if gate is None:
        return _residual(tape, block, x, short, training)
    picks, mask_wants = gate
    least = shortcut_exponent(short)
    inner = _residual(tape, block, rows(x, picks), rows(short, picks), training, least) if len(picks) else None
    return mix(tape, inner, short, picks, least, mask_wants)


def _residual(tape: Tape, block, x, short, training: bool, least: int | None = None) -> Fixed:
    h = relu(tape, batchnorm(tape, block.bn1, conv(tape, block.conv1, x), training))
    return relu(tape, add(tape, batchnorm(tape, block.bn2, conv(tape, block.conv2, h), training), short), least)


def pooled(x: Fixed) -> torch.Tensor:
    """The global average pool from the plane sums of the APPLY that wrote ``x``: float64, rounded once."""
    n, c, h, w = x.q.shape
    return (x.planes[:, :, 0].double() * 2.0 ** x.exponent / (h * w)).float().view(n, c, 1, 1)


def pool_gradient(g: torch.Tensor, x: Fixed) -> Fixed:
    """The pooled features' gradient ``g`` divided by the pixels, quantized to int32 and broadcast
    to every pixel of ``x`` (a per-element pass the host makes)."""
    n, c, h, w = x.q.shape
    gv = g.reshape(n, c).double() / (h * w)
    e = nx.exponent_for(float(gv.abs().max()) if gv.numel() else 0.0, nx.OUT)
    q = torch.floor(gv * 2.0 ** -e + 0.5).long()
    return Fixed(q.view(n, c, 1, 1).expand(n, c, h, w), _exponents(c, e), q.amin(0).cpu().numpy(),
                 q.amax(0).cpu().numpy())


class _Run:
    """One forward pass of a network over ``images``, stretch by stretch (stretch 0: the stem and
    block 0; stretch i: block i), and the backward pass of each; ``out[i]``: stretch i's output."""

    def __init__(self, model, images: torch.Tensor):
        self.model, self.images, self.out, self.tapes = model, images, [], []

    def forward(self, i: int, mask: torch.Tensor | None, x_wants: bool, mask_wants: bool, wants: bool):
        model, tape, training = self.model, Tape(), self.model.training
        if i == 0:
            q, e, _ = quantize_tensor(self.images, nx.ACT)
            x = Fixed(q, _exponents(q.shape[1], e), wants=False)
            x = relu(tape, batchnorm(tape, model.bn1, conv(tape, model.conv1, x), training))
        else:
            x = self.out[i - 1]
            x.wants = x_wants
        gate = None if mask is None else (torch.nonzero(mask > 0.5)[:, 0], mask_wants)
        out = basic_block(tape, model.blocks[i], x, training, gate)
        out.wants = wants
        self.out.append(out)
        self.tapes.append(tape)
        return pooled(out)

    def backward(self, i: int, g_pooled: torch.Tensor | None) -> Tape:
        """Stretch i's backward: its output's gradient from the pool (the first of its consumers,
        the last reached), then its tape."""
        if g_pooled is not None:
            give(self.out[i], pool_gradient(g_pooled, self.out[i]))
        tape = self.tapes[i]
        tape.backward()
        return tape


class _Stretch(torch.autograd.Function):
    """Stretch ``i`` of a ``_Run`` as one autograd node: inputs the previous stretch's ``link`` (a
    placeholder: the integer tensors and their gradients travel outside autograd), its SLU
    gate's mask and the stretch's parameters; outputs its own link and its pooled features. Its
    backward returns dL/dm and the parameters' gradients (PSG layers: sign(G))."""

    @staticmethod
    def forward(ctx, run, i, link, mask, *params):
        ctx.set_materialize_grads(False)
        ctx.run, ctx.i, ctx.params = run, i, params
        needs = ctx.needs_input_grad
        features = run.forward(i, mask, needs[2], needs[3], any(needs))
        return features.new_zeros(()), features

    @staticmethod
    def backward(ctx, _link, g_pooled):
        tape = ctx.run.backward(ctx.i, g_pooled)
        link = torch.zeros(()) if ctx.needs_input_grad[2] else None
        return (None, None, link, tape.dm, *(tape.grads.get(id(p)) for p in ctx.params))


def forward(model, images: torch.Tensor, gates: str | None = None) -> torch.Tensor:
    """The logits of a CifarResNet or GatedResNet (with ``use_exact_host_ops``) on ``images`` in
    contract v2. A gated block runs on its gate's images (``gates`` as GatedResNet.forward's; the
    gate draws from ``model.gather_rng`` in training), and the forward leaves the gates' masks as
    GatedResNet.forward does."""
    run, gated = _Run(model, images), hasattr(model, "gate")
    mode = gates or ("sampled" if model.training else "deterministic")
    state, masks, link = None, [], None
    for i, block in enumerate(model.blocks):
        params = [*model.conv1.parameters(), *model.bn1.parameters()] if i == 0 else []
        mask = None
        if gated and i > 0:
            with torch.no_grad() if i - 1 < model.frozen_gates else contextlib.nullcontext():
                p, state = model.gate.step(i - 1, features, state)
            mask = decide(p, mode, model.gather_rng if model.training else None)
            masks.append(mask)
        link, features = _Stretch.apply(run, i, link, mask, *params, *block.parameters())
    if gated:
        model.gate_masks = torch.stack(masks)
        model.last_gates = torch.cat([torch.ones_like(model.gate_masks[:1]), model.gate_masks]).detach()
    return model.fc(torch.flatten(features, 1))


def use_contract_v2(model) -> None:
    """Make ``model`` (its host ops already exact: reference/hostexact.py) compute in contract v2."""
    model.contract_v2 = forward
