"""The numeric contract (docs/numerics.md) in PyTorch: quantized convs, PSG and the
integer sign-momentum update.

An independent implementation of contract/numerics.py (which only supplies the constants
and formats): integers live in int64 tensors, convolutions run in float64 on
integer-valued tensors (exact: every sum is below 2**53), and tests require both to give
the same integers. ``QConv2d`` drops into ``CifarResNet(conv=...)``:

- ``mode="fixed"``: float master weights quantized per step, float SGD on the exact
  integer weight gradient (the fixed-point baseline without PSG);
- ``mode="psg"``: integer master weights, 4-bit-MSB predictor + selective full
  gradient, only sign(G) leaves the layer, ``PSGUpdater`` applies the integer update.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.grad import conv2d_input

from contract import numerics as nx

F64 = torch.float64


# -- primitives (torch twins of contract/numerics.py) -----------------------------------------

def rshift_round(v: torch.Tensor, s) -> torch.Tensor:
    """floor(v / 2**s + 1/2) for s > 0, v * 2**-s for s <= 0 (s broadcasts)."""
    if isinstance(s, int):  # one shift for the whole tensor: no shift tensors
        return (v + (1 << (s - 1))) >> s if s > 0 else v << -s
    s = torch.as_tensor(s, dtype=torch.int64)
    pos = s.clamp(min=0)
    half = torch.where(pos > 0, torch.ones_like(pos) << (pos - 1).clamp(min=0), torch.zeros_like(pos))
    return torch.where(s > 0, (v + half) >> pos, v << (-s).clamp(min=0))


def saturate(q: torch.Tensor, fmt: nx.Fmt) -> tuple[torch.Tensor, int]:
    n = int(((q < fmt.lo) | (q > fmt.hi)).sum())
    return q.clamp(fmt.lo, fmt.hi), n


def quantize_tensor(x: torch.Tensor, fmt: nx.Fmt) -> tuple[torch.Tensor, int, int]:
    """Per-tensor power-of-two quantization of a float32 tensor: (int64 q, e, saturations)."""
    e = nx.exponent_for(float(x.detach().abs().max()) if x.numel() else 0.0, fmt)
    q = torch.floor(torch.ldexp(x.detach().to(F64), torch.tensor(-e, dtype=F64)) + 0.5).to(torch.int64)
    q, sat = saturate(q, fmt)
    return q, e, sat


def to_float(q: torch.Tensor, e) -> torch.Tensor:
    """Integers at exponent(s) e -> float32 (through float64, as the host does)."""
    return torch.ldexp(q.to(F64), torch.as_tensor(e, dtype=F64)).to(torch.float32)


def weights_for_use(w_master: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Master mantissas -> (W_q, per-channel shifts s); channel o's exponent is e_w + s[o]."""
    amax = w_master.abs().flatten(1).amax(1)
    s = (torch.tensor([a.bit_length() for a in amax.tolist()], dtype=torch.int64) - (nx.WGT.bits - 1)).clamp(min=0)
    s = s + (rshift_round(amax, s) > nx.WGT.hi).to(torch.int64)
    return rshift_round(w_master, s.view(-1, 1, 1, 1)), s


def weights_for_use_from_float(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Float weights -> (W_q, per-channel exponents), the fixed mode's weights."""
    e = torch.tensor([nx.exponent_for(float(c.abs().max()), nx.WGT) for c in w.detach()], dtype=torch.int64)
    q = torch.floor(torch.ldexp(w.detach().to(F64), (-e).to(F64).view(-1, 1, 1, 1)) + 0.5)
    return q.to(torch.int64), e


def msb(x_q: torch.Tensor) -> torch.Tensor:
    return saturate(rshift_round(x_q, nx.MSB_SHIFT), nx.MSB)[0]


# -- integer convolutions -----------------------------------------------------------------

def fwd_bound(w_q: torch.Tensor) -> int:
    """Largest possible |conv(x_q, W_q)| over int8 inputs: 128 max_o sum |W_q[o]|."""
    return -nx.ACT.lo * int(w_q.abs().flatten(1).sum(1).max())


def conv_fwd(x_q, w_q, stride, pad) -> tuple[torch.Tensor, int]:
    bound = fwd_bound(w_q)
    # float32 sums of integers are exact while every partial sum stays below 2**24
    dtype = torch.float32 if bound < 1 << 24 else F64
    acc = F.conv2d(x_q.to(dtype), w_q.to(dtype), stride=stride, padding=pad).to(torch.int64)
    r = nx.out_shift(bound)
    return rshift_round(acc, r), r


def aligned_weights(w_q, e) -> tuple[torch.Tensor, int]:
    """Weights of per-channel exponents ``e`` on one exponent e_ref = max(e) - ALIGN_BITS: (W_al, e_ref)."""
    e_ref = int(e.max()) - nx.ALIGN_BITS
    return rshift_round(w_q, (e_ref - e).view(-1, 1, 1, 1)), e_ref


def bwd_data_bound(g_max: int, w_al: torch.Tensor) -> int:
    """Largest possible |conv_transpose(g, W_al)| for |g| <= ``g_max``: g_max max_c sum_{o, taps} |W_al[o, c]|."""
    return g_max * int(w_al.abs().sum((0, 2, 3)).max())


def conv_bwd_data(g_q, w_q, e, stride, pad, in_shape) -> tuple[torch.Tensor, int, int]:
    w_al, e_ref = aligned_weights(w_q, e)
    bound = bwd_data_bound(int(g_q.abs().max()), w_al)
    acc = conv2d_input(in_shape, w_al.to(F64), g_q.to(F64), stride=stride, padding=pad).to(torch.int64)
    r = nx.out_shift(bound)
    return rshift_round(acc, r), r, e_ref


def conv_wgrad(x_q, g_q, w_shape, stride, pad) -> torch.Tensor:
    """Exact sum over batch and positions, a tap at a time: one float64 product of g (O x N Ho Wo)
    and the tap's window of x (N Ho Wo x C). Every partial sum is an integer below 2**53 (|x g| <=
    2**22, fewer than 2**31 terms), so any order of summation gives the same integers (on ResNet-8's
    digits three times faster on CPU than a batched im2col product, which was ten times faster
    than torch's float64 conv weight gradient)."""
    o, c, k, _ = w_shape
    ho, wo = g_q.shape[2], g_q.shape[3]
    xp = F.pad(x_q.to(F64), (pad, pad, pad, pad))
    g2 = g_q.to(F64).transpose(0, 1).reshape(o, -1)  # O, N Ho Wo
    out = torch.empty(o, c, k, k, dtype=F64)
    for ky in range(k):
        for kx in range(k):
            win = xp[:, :, ky:ky + stride * (ho - 1) + 1:stride, kx:kx + stride * (wo - 1) + 1:stride]
            out[:, :, ky, kx] = g2 @ win.transpose(0, 1).reshape(c, -1).T
    return out.to(torch.int64)


def psg_select(g_msb, full, T=None, R=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(sign, sure): the predictor's sign where |G_msb| clears the threshold, else the sign of
    the full gradient; ``full()`` computes that gradient and is called only if an entry is unsure."""
    a = g_msb.abs()
    sure = a >= T if T is not None else (a << nx.RATIO_FRAC) >= R * int(a.max())
    if bool(sure.all()):
        return g_msb.sign().to(torch.int8), sure
    return torch.where(sure, g_msb.sign(), full().sign()).to(torch.int8), sure


# -- the update ---------------------------------------------------------------------------

def sign_update(w, e_w: int, buf, sign, k: nx.UpdateConstants) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Integer sign-momentum step (see contract.numerics.sign_update for the formulas)."""
    d = sign.to(torch.int64) * (1 << -nx.MOM_EXP) + rshift_round(k.WD * w, nx.WD_FRAC + nx.MOM_EXP - e_w)
    buf, sat_b = saturate(rshift_round(k.MU * buf, nx.MU_FRAC) + d, nx.MOM)
    w, sat_w = saturate(w - rshift_round(k.LR * buf, nx.LR_FRAC - nx.MOM_EXP + e_w), nx.MASTER)
    return w, buf, sat_b + sat_w


def renormalize(w: torch.Tensor, e_w: int) -> tuple[torch.Tensor, int]:
    while w.numel() and int(w.abs().max()) >= 1 << nx.MASTER_RENORM_BITS:
        w, e_w = rshift_round(w, 1), e_w + 1
    return w, e_w


# -- the layer ----------------------------------------------------------------------------

@dataclass(frozen=True)
class PSGConfig:
    """PSG settings: absolute ``tau`` or adaptive ``ratio`` (tau = ratio * max|G_msb|), the
    engine's weight-gradient tile (out x in channels) and the optional predictive forward."""

    tau: float = 5e-5
    ratio: float | None = None
    tile_o: int = 16
    tile_i: int = 16
    predictive_forward: bool = False


class _IntConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, layer):
        x_q, e_x, sat_x = quantize_tensor(x, nx.ACT)
        w_q, e_o = layer.weights_q()
        y_q, r = conv_fwd(x_q, w_q, layer.stride[0], layer.padding[0])
        y = to_float(y_q, (e_x + e_o + r).view(1, -1, 1, 1))
        live = torch.ones((), dtype=torch.bool)
        if layer.psg.predictive_forward and layer.mode == "psg":
            y_msb, _ = conv_fwd(msb(x_q), w_q, layer.stride[0], layer.padding[0])
            live = y_msb >= 0  # PredictiveNet: the MSB pass predicts a negative output
            y = torch.where(live, y, torch.zeros_like(y))
        ctx.save_for_backward(x_q, w_q, e_o, live)
        ctx.e_x, ctx.layer, ctx.in_shape = e_x, layer, x.shape
        layer.stats = {"act_saturations": sat_x, "out_shift": r}
        return y

    @staticmethod
    def backward(ctx, g_y):
        x_q, w_q, e_o, live = ctx.saved_tensors
        layer, e_x = ctx.layer, ctx.e_x
        stride, pad = layer.stride[0], layer.padding[0]
        g_q, e_g, sat_g = quantize_tensor(g_y * live, nx.GRAD)
        layer.stats["grad_saturations"] = sat_g
        g_x = None
        if ctx.needs_input_grad[0]:
            gx_q, r, e_ref = conv_bwd_data(g_q, w_q, e_o, stride, pad, ctx.in_shape)
            g_x = to_float(gx_q, e_g + e_ref + r)
        if not ctx.needs_input_grad[1]:  # a frozen conv (--train-from, --train): no weight gradient
            return g_x, None, None
        return g_x, layer.weight_grad(x_q, e_x, g_q, e_g), None


class QConv2d(nn.Conv2d):
    """Conv2d that computes as the engine does (docs/numerics.md); no bias.

    ``weight`` stays a float Parameter: the master weights in fixed mode, and in PSG mode
    a float view of the integer master (``w_master * 2**w_exp``) that carries sign(G) as
    its ``.grad`` for ``PSGUpdater``.
    """

    def __init__(self, *args, mode: str = "fixed", psg: PSGConfig | None = None, **kwargs):
        if kwargs.get("bias"):
            raise ValueError("QConv2d has no bias (BN follows every conv)")
        super().__init__(*args, **kwargs)
        if mode not in ("fixed", "psg"):
            raise ValueError(f"QConv2d mode must be 'fixed' or 'psg', got {mode!r}")
        if self.groups != 1 or self.dilation != (1, 1) or self.stride[0] != self.stride[1] \
                or self.padding[0] != self.padding[1] or self.kernel_size[0] != self.kernel_size[1]:
            raise ValueError("QConv2d supports square kernels, equal strides/padding, groups=1")
        self.mode, self.psg = mode, psg or PSGConfig()
        self.stats: dict = {}
        self.register_buffer("w_master", torch.zeros(self.weight.shape, dtype=torch.int64), persistent=True)
        self.w_exp = 0
        self.load_master_from_float()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if hasattr(self, "w_master"):
            self.load_master_from_float()

    def load_master_from_float(self) -> None:
        """Take the float weight (after init or load) as the master: int mantissas + exponent."""
        if self.mode == "psg":
            q, e = nx.master_from_float(self.weight.detach().numpy())
            self.w_master.copy_(torch.from_numpy(q))
            self.set_master(self.w_master, e)

    def set_master(self, w: torch.Tensor, e_w: int) -> None:
        self.w_master.copy_(w)
        self.w_exp = int(e_w)
        with torch.no_grad():
            self.weight.copy_(to_float(w, e_w))

    def get_extra_state(self):
        return {"w_exp": self.w_exp}

    def set_extra_state(self, state):
        self.w_exp = int(state["w_exp"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _IntConv.apply(x, self.weight, self)

    def weights_q(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The weights as the engine uses them this step: (W_q, each output channel's exponent)."""
        if self.mode == "psg":
            w_q, s = weights_for_use(self.w_master)
            return w_q, self.w_exp + s
        return weights_for_use_from_float(self.weight)

    def weight_grad(self, x_q, e_x: int, g_q, e_g: int) -> torch.Tensor:
        """The weight's ``.grad`` from the step's int8 input ``x_q`` and int16 output gradient ``g_q``
        (exponents ``e_x``, ``e_g``): in PSG mode sign(G) (the 4-bit predictor's where sure, the full
        gradient's elsewhere; its statistics into ``stats``), in fixed mode the exact G as float."""
        k, stride, pad = self.kernel_size[0], self.stride[0], self.padding[0]
        shape = (self.out_channels, self.in_channels, k, k)
        full = functools.partial(conv_wgrad, x_q, g_q, shape, stride, pad)
        if self.mode != "psg":
            return to_float(full(), e_x + e_g)
        g_msb = conv_wgrad(msb(x_q), g_q, shape, stride, pad)
        cfg = self.psg
        if cfg.ratio is None:
            sign, sure = psg_select(g_msb, full, T=nx.threshold_abs(cfg.tau, e_x, e_g))
        else:
            sign, sure = psg_select(g_msb, full, R=nx.ratio_fixed(cfg.ratio))
        tiles, recomputed, pairs = nx.uncertain_tiles(sure.cpu().numpy(), cfg.tile_o, cfg.tile_i)
        self.stats.update(entries=sure.numel(), predicted=int(sure.sum()), tiles=tiles,
                          tiles_recomputed=recomputed, pairs_recomputed=pairs)
        return sign.to(torch.float32)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", mode={self.mode}"


class PSGUpdater:
    """Applies the integer sign-momentum update to every PSG layer of a model."""

    def __init__(self, model: nn.Module, weight_decay: float, momentum: float):
        self.layers = [m for m in model.modules() if isinstance(m, QConv2d) and m.mode == "psg"]
        self.weight_decay, self.momentum = weight_decay, momentum
        self.buffers = {id(m): torch.zeros_like(m.w_master) for m in self.layers}
        self.saturations = 0

    def parameters(self) -> list[nn.Parameter]:
        return [m.weight for m in self.layers]

    def step(self, lr: float) -> None:
        """One update; a layer without a gradient (skipped, or a coasting step) gets sign 0, a
        frozen one (``requires_grad`` off: --train-from, --train) none. Consumes the signs: every
        layer's ``weight.grad`` is None afterwards."""
        k = nx.UpdateConstants.from_floats(lr, self.weight_decay, self.momentum)
        for m in self.layers:
            if not m.weight.requires_grad:
                m.weight.grad = None
                continue
            sign = torch.zeros_like(m.w_master) if m.weight.grad is None else m.weight.grad.to(torch.int64)
            w, buf, sat = sign_update(m.w_master, m.w_exp, self.buffers[id(m)], sign, k)
            w, e_w = renormalize(w, m.w_exp)
            self.buffers[id(m)], self.saturations = buf, self.saturations + sat
            m.set_master(w, e_w)
            m.weight.grad = None  # consumed: signs must not accumulate into the next step

    def state_dict(self) -> dict:
        return {"buffers": [self.buffers[id(m)] for m in self.layers], "saturations": self.saturations}

    def load_state_dict(self, state: dict) -> None:
        if len(state["buffers"]) != len(self.layers):
            raise ValueError(f"PSG state has {len(state['buffers'])} layers, model has {len(self.layers)}")
        for m, b in zip(self.layers, state["buffers"]):
            self.buffers[id(m)] = b.clone()
        self.saturations = int(state["saturations"])


def conv_factory(precision: str, psg: PSGConfig | None):
    """The ``conv`` argument of CifarResNet for a precision ('fp32' | 'fixed') and PSG."""
    if precision == "fp32" and psg is None:
        return nn.Conv2d
    mode = "psg" if psg is not None else "fixed"

    def make(*args, **kwargs):
        return QConv2d(*args, mode=mode, psg=psg, **kwargs)
    return make


def sync_masters(model: nn.Module) -> None:
    """After the model's own weight init: take every PSG layer's float weight as its master."""
    for m in model.modules():
        if isinstance(m, QConv2d):
            m.load_master_from_float()
