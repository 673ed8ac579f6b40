"""The host's float ops in PyTorch, rounded exactly as the on-engine trainer's numpy code rounds
them (host/train/ops.py, hostops.py and walk.py), for the reference's ``--precision fixed`` runs.

PyTorch's own BatchNorm, linear layer and cross-entropy sum in orders of their own, so their
float32 results differ from numpy's in the last bits, and a last bit decides an integer after
the next quantization. Here every sum is taken in float64 and rounded once, and every
elementwise step is the same float32 operation in the same order as on the host, so the
reference and the engine trainer see the same integers step after step.
"""
from __future__ import annotations

import torch
from torch import nn

F64 = torch.float64


class _BNTrain(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        x64 = x.to(F64)
        mean = x64.mean((0, 2, 3))
        var = ((x64 * x64).mean((0, 2, 3)) - mean * mean).clamp(min=0)
        invstd = (1.0 / torch.sqrt(var + eps)).to(x.dtype)
        xhat = (x - mean.to(x.dtype).view(1, -1, 1, 1)) * invstd.view(1, -1, 1, 1)
        ctx.save_for_backward(xhat, invstd, weight)
        ctx.mark_non_differentiable(mean, var)
        return xhat * weight.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1), mean, var

    @staticmethod
    def backward(ctx, g, _mean, _var):
        xhat, invstd, weight = ctx.saved_tensors
        m = g.numel() // g.shape[1]
        dbeta = g.to(F64).sum((0, 2, 3)).to(g.dtype)
        dgamma = (g.to(F64) * xhat.to(F64)).sum((0, 2, 3)).to(g.dtype)
        a = (weight * invstd).view(1, -1, 1, 1) / m
        dx = a * (m * g - dbeta.view(1, -1, 1, 1) - xhat * dgamma.view(1, -1, 1, 1))
        return dx, dgamma, dbeta, None


class ExactBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d with host/train/hostops.py's arithmetic in training; PyTorch's in inference
    (which host/train/hostops.py reproduces). Same parameters and buffers as nn.BatchNorm2d."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        y, mean, var = _BNTrain.apply(x, self.weight, self.bias, self.eps)
        self.track(mean, var, x.numel() // x.shape[1])
        return y

    @torch.no_grad()
    def track(self, mean: torch.Tensor, var: torch.Tensor, m: int) -> None:
        """The running statistics after a batch of ``m`` elements a channel of float64 ``mean`` and
        biased ``var``, in float32 as the host updates them (host/train/ops.py, update_running)."""
        self.num_batches_tracked += 1
        if m > 1:
            dtype = self.running_mean.dtype
            mom = torch.tensor(self.momentum, dtype=dtype)
            keep = torch.tensor(1, dtype=dtype) - mom
            self.running_mean.copy_(keep * self.running_mean + mom * mean.to(dtype))
            self.running_var.copy_(keep * self.running_var + mom * (var * m / (m - 1)).to(dtype))


class _Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        return (x.to(F64) @ weight.to(F64).T + bias.to(F64)).to(x.dtype)

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        g64 = g.to(F64)
        return (g64 @ weight.to(F64)).to(g.dtype), (g64.T @ x.to(F64)).to(g.dtype), g64.sum(0).to(g.dtype)


class ExactLinear(nn.Linear):
    """nn.Linear with float64 sums rounded once to float32, forward and backward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _Linear.apply(x, self.weight, self.bias)


class _CrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, y):
        z = logits.to(F64) - logits.max(1, keepdim=True).values.to(F64)
        e = torch.exp(z)
        s = e.sum(1, keepdim=True)
        ctx.save_for_backward(e / s, y)
        return (torch.log(s[:, 0]) - z[torch.arange(len(y)), y]).mean().to(logits.dtype)

    @staticmethod
    def backward(ctx, g):
        prob, y = ctx.saved_tensors
        prob = prob.clone()
        prob[torch.arange(len(y)), y] -= 1
        return (prob / len(y) * g.to(F64)).to(g.dtype), None


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean softmax cross-entropy; its gradient (softmax - one-hot) / N in float64, rounded once."""
    return _CrossEntropy.apply(logits, y)


def use_exact_host_ops(model: nn.Module) -> nn.Module:
    """Swap every BatchNorm2d for ExactBatchNorm2d and the classifier for ExactLinear, and
    compute SLU gates as the host does, in place (the same parameters and buffers, so
    checkpoints load either way)."""
    for name, mod in list(model.named_modules()):
        for child_name, child in list(mod.named_children()):
            if type(child) is nn.BatchNorm2d:
                new = ExactBatchNorm2d(child.num_features, child.eps, child.momentum)
            elif type(child) is nn.Linear and (name, child_name) == ("", "fc"):
                new = ExactLinear(child.in_features, child.out_features)
            else:
                continue
            new.load_state_dict(child.state_dict())
            setattr(mod, child_name, new)
    if hasattr(model, "gate"):
        model.gate.exact = True
    return model



def _sig(x: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(x.to(F64)).to(torch.float32)


def _tanh(x: torch.Tensor) -> torch.Tensor:
    return torch.tanh(x.to(F64)).to(torch.float32)


def _mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.to(F64) @ b.to(F64)).to(torch.float32)


class _GateStep(torch.autograd.Function):
    """One SLU gate as host/train/hostops.py's lstm_step, linear and sigmoid compute it, with
    host/train/ops.py's backward: float64 sums and activations rounded once."""

    @staticmethod
    def forward(ctx, e, h0, c0, w_ih, w_hh, b_ih, b_hh, pw, pb):
        z = e.to(F64) @ w_ih.to(F64).T + (b_ih.to(F64) + b_hh.to(F64))
        if h0 is not None:
            z = z + h0.to(F64) @ w_hh.to(F64).T
        i, f, g, o = z.to(torch.float32).chunk(4, 1)
        i, f, g, o = _sig(i), _sig(f), _tanh(g), _sig(o)
        c = i * g
        if c0 is not None:
            c = c + f * c0
        tc = _tanh(c)
        h = o * tc
        prob = _sig((h.to(F64) @ pw.to(F64).T + pb.to(F64)).to(torch.float32))[:, 0]
        ctx.save_for_backward(e, h0, c0, w_ih, w_hh, pw, i, f, g, o, tc, h, prob)
        return prob, h, c

    @staticmethod
    def backward(ctx, dp, dh_next, dc_next):
        e, h0, c0, w_ih, w_hh, pw, i, f, g, o, tc, h, prob = ctx.saved_tensors
        dz = (dp * prob * (1 - prob)).reshape(-1, 1)
        d_pw, d_pb = _mm(dz.T, h), dz.to(F64).sum(0).to(torch.float32)
        dh = dz * pw
        dc = torch.zeros_like(tc)
        if dh_next is not None:
            dh = dh + dh_next
        if dc_next is not None:
            dc = dc + dc_next
        do = dh * tc
        dc = dc + dh * o * (1 - tc * tc)
        di, dg = dc * g, dc * i
        df = dc * c0 if c0 is not None else torch.zeros_like(dc)
        d4 = torch.cat([di * i * (1 - i), df * f * (1 - f), dg * (1 - g * g), do * o * (1 - o)], 1)
        db = d4.to(F64).sum(0).to(torch.float32)
        d_h0 = _mm(d4, w_hh) if h0 is not None else None
        d_c0 = dc * f if c0 is not None else None
        d_whh = _mm(d4.T, h0) if h0 is not None else None  # the first gate has no state: no gradient
        return _mm(d4, w_ih), d_h0, d_c0, _mm(d4.T, e), d_whh, db, db.clone(), d_pw, d_pb


def gate_step(e: torch.Tensor, state, lstm: nn.LSTM, proj: nn.Linear) -> tuple[torch.Tensor, tuple]:
    """(p per sample, (h, c)) of one gate on its embedding ``e`` (N, hidden), state None or (h, c)."""
    h0, c0 = state if state is not None else (None, None)
    p, h, c = _GateStep.apply(e, h0, c0, lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0,
                              proj.weight, proj.bias)
    return p, (h, c)


class _Fanout(torch.autograd.Function):
    """``k`` uses of one tensor whose gradients are summed in float64 and rounded once, in
    any order (host/train/walk.py sums a tensor's three or more gradients so)."""

    @staticmethod
    def forward(ctx, x, k):
        return tuple(x.view_as(x) for _ in range(k))

    @staticmethod
    def backward(ctx, *grads):
        parts = [g for g in grads if g is not None]
        total = parts[0].to(F64)
        for g in parts[1:]:
            total = total + g
        return total.to(parts[0].dtype), None


def fanout(x: torch.Tensor, k: int) -> tuple:
    return _Fanout.apply(x, k)


class _Mix(torch.autograd.Function):
    """SLU's mix on gathered images, as the engine computes it: ``short`` with the rows
    ``idx`` replaced by ``block``; dL/dm is sum(g * (block - short)) on those rows (float64,
    rounded once) and 0 elsewhere (a skipped block's output does not exist)."""

    @staticmethod
    def forward(ctx, m, block, short, idx):
        out = short.clone()
        out[idx] = block
        ctx.save_for_backward(block, short, idx)
        return out

    @staticmethod
    def backward(ctx, g):
        block, short, idx = ctx.saved_tensors
        g_short = g.clone()
        g_short[idx] = 0
        dm = torch.zeros(len(g), dtype=g.dtype)
        if len(idx):
            dm[idx] = (g[idx].to(F64) * (block - short[idx]).to(F64)).reshape(len(idx), -1).sum(1).to(g.dtype)
        return dm, g[idx], g_short, None


def mix(m: torch.Tensor, block: torch.Tensor, short: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return _Mix.apply(m, block, short, idx)
