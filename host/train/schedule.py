"""E2-Train's per-iteration decisions that every backend shares: which mini-batches SMD drops
and the sign and weights of the SLU cost loss (numpy only; the reference imports them)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def gate_draws(seed: int, epoch: int) -> np.random.Generator:
    """The SLU gates' uniform draws of an epoch (u in m = 1[p > u]), in gate order per kept
    batch: one generator for the on-engine trainer and the reference's ``--slu-exec gather``."""
    return np.random.default_rng([seed, epoch, 2])


def smd_drops(p: float, seed: int, epoch: int, iterations: int) -> np.ndarray:
    """Which iterations of an epoch SMD drops (bool per iteration).

    One uniform draw per iteration, in order, from ``default_rng([seed, epoch, 1])``: seeded,
    independent of the backend and of the data order, so a resumed epoch drops the same batches.
    """
    return np.random.default_rng([seed, epoch, 1]).random(iterations) < p


def cost_sign(executed_fraction: float, target: float, band: float = 0.0) -> float:
    """-1 (reward executing) while at or below the target, +1 (reward skipping) above it.

    With ``band`` > 0 the sign is proportional near the target: (fraction - target) / band,
    clipped to [-1, 1]. The step (band 0, the authors' rule) pushes every gate's logit the full
    beta one way or the other on every batch, even at the target; the ramp lets it settle.
    """
    if band == 0:
        return -1.0 if executed_fraction <= target else 1.0
    return max(-1.0, min(1.0, (executed_fraction - target) / band))


def cost_weights(block_macs: Sequence[int], weighting: str) -> np.ndarray:
    """w_l per gated block: all 1 (``uniform``) or proportional to its MACs, mean 1 (``macs``)."""
    w = np.array([float(v) for v in block_macs], np.float32)
    return np.ones_like(w) if weighting == "uniform" else w / w.mean()
