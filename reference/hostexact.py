"""The host's float ops in PyTorch, rounded exactly as the on-engine trainer's numpy code rounds
them (host/trainstep.py), for the reference's ``--precision fixed`` runs.

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
    """BatchNorm2d with host/trainstep.py's arithmetic in training; PyTorch's in inference
    (which host/hostops.py reproduces). Same parameters and buffers as nn.BatchNorm2d."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        y, mean, var = _BNTrain.apply(x, self.weight, self.bias, self.eps)
        m = x.numel() // x.shape[1]
        with torch.no_grad():
            self.num_batches_tracked += 1
            if m > 1:
                mom = torch.tensor(self.momentum, dtype=x.dtype)
                keep = torch.tensor(1, dtype=x.dtype) - mom
                self.running_mean.copy_(keep * self.running_mean + mom * mean.to(x.dtype))
                self.running_var.copy_(keep * self.running_var + mom * (var * m / (m - 1)).to(x.dtype))
        return y


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
    """Swap every BatchNorm2d for ExactBatchNorm2d and the classifier for ExactLinear, in place
    (the same parameters and buffers, so checkpoints load either way)."""
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
    return model

