"""SLU, selective layer update (E2-Train section 2): SkipNet's recurrent gate and its cost loss.

Block i's output feeds a gate that decides, per sample, whether block i + 1 runs; the first
block always runs. Each gate pools its input over the whole feature map, embeds it with a
bias-free 1x1 conv (from the model's ``conv`` factory, so quantized convs apply to it too),
and one LSTM shared by all gates carries its state from gate to gate (reset every forward
pass); a linear layer and a sigmoid give the probability p of running the block.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from host.train import schedule

from .hostexact import gate_step, mix

GATE_MODES = ("sampled", "deterministic")


class RecurrentGate(nn.Module):
    """Gates for blocks whose inputs have ``channels[j]`` channels; ``forward`` is one gate."""

    def __init__(self, channels: Sequence[int], conv=nn.Conv2d, hidden: int = 10):
        super().__init__()
        self.embeds = nn.ModuleList(conv(c, hidden, kernel_size=1, stride=1, padding=0, bias=False)
                                    for c in channels)
        self.lstm = nn.LSTM(hidden, hidden)
        self.proj = nn.Linear(hidden, 1)

    @torch.no_grad()
    def start_open(self, p: float) -> None:
        """Bias the gates to run every block with probability about ``p`` at the start: the
        output bias becomes logit(p) and the output weights shrink tenfold."""
        self.proj.bias.fill_(math.log(p / (1 - p)))
        self.proj.weight.mul_(0.1)

    exact = False  # True: the host's arithmetic (reference/hostexact.py), set for --precision fixed

    def forward(self, j: int, x: torch.Tensor, state=None) -> tuple[torch.Tensor, tuple]:
        """Gate ``j`` on feature map ``x``: (p per sample, LSTM state for gate j + 1)."""
        return self.step(j, global_avgpool(x), state)

    def step(self, j: int, pooled: torch.Tensor, state=None) -> tuple[torch.Tensor, tuple]:
        """Gate ``j`` on its feature map's average ``pooled`` (N x C x 1 x 1): ``forward``'s result."""
        e = torch.flatten(self.embeds[j](pooled), 1)
        if self.exact:
            return gate_step(e, state, self.lstm, self.proj)
        out, state = self.lstm(e[None], state)
        return torch.sigmoid(self.proj(out[0]))[:, 0], state


def global_avgpool(x: torch.Tensor) -> torch.Tensor:
    """NCHW -> NC11: the mean in float64, rounded once to float32, so that the host's numpy
    pooling (host/train/hostops.py) gives the same floats whatever order either sums in."""
    return x.double().mean((2, 3), keepdim=True).to(x.dtype)


def straight_through(p: torch.Tensor, threshold: torch.Tensor | float) -> torch.Tensor:
    """Hard decision 1[p > threshold] in the forward pass, gradient passed to p unchanged."""
    hard = (p > threshold).to(p.dtype)
    return hard + (p - p.detach())  # exactly hard: p - p.detach() is 0


def decide(p: torch.Tensor, mode: str, rng=None) -> torch.Tensor:
    """``sampled``: m = 1[p > u], u ~ U(0, 1) from torch's RNG, or from the numpy Generator
    ``rng`` as float32 (the on-engine trainer's draws); ``deterministic``: m = 1[p > 0.5]."""
    if mode == "sampled":
        u = torch.rand_like(p) if rng is None else torch.from_numpy(rng.random(len(p)).astype("float32"))
        return straight_through(p, u)
    if mode == "deterministic":
        return straight_through(p, 0.5)
    raise ValueError(f"unknown gate mode '{mode}' (known: {', '.join(GATE_MODES)})")


def gated_block(block: nn.Module, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """m * block(x) + (1 - m) * shortcut(x) per sample.

    The residual branch runs on the whole batch and is masked (the authors' semantics, and
    what carries the straight-through gradient to the gate); hardware runs it only on the
    samples with m = 1. A skipped down-sampling block still applies its projection.
    """
    out, short = block.branches(x)
    m = m[:, None, None, None]
    return m * out + (1 - m) * short


def gathered_block(block: nn.Module, x_res: torch.Tensor, x_short: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """The engine's SLU: the residual branch runs on the samples with m = 1 only (gathered from
    ``x_res``), the shortcut on all (``x_short``: the same tensor, a separate use); the output
    is the block's on those rows and the shortcut's elsewhere (reference/hostexact.py's mix)."""
    short = block.shortcut(x_short)
    idx = torch.nonzero(m.detach() > 0.5)[:, 0]
    if len(idx) == 0:
        return mix(m, short[:0], short, idx)
    return mix(m, F.relu(block.residual(x_res[idx]) + short[idx]), short, idx)


def cost_weights(block_macs: Sequence[int], weighting: str) -> torch.Tensor:
    """w_l per gated block (host/train/schedule.py) as a tensor."""
    return torch.from_numpy(schedule.cost_weights(block_macs, weighting))


def cost_loss(masks: torch.Tensor, weights: torch.Tensor, sign: float, beta: float) -> torch.Tensor:
    """s * beta * sum_l w_l * sum_batch m_l for masks of shape (gates, batch)."""
    return sign * beta * (weights.to(masks)[:, None] * masks).sum()
