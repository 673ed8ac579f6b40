"""One training step of a plan: the forward pass and the backward pass of one mini-batch
through the op table (host/train/ops.py, walked by host/train/walk.py), convs on the engine
(through an EngineSession), everything else on the host in numpy float32.

BatchNorm uses batch statistics (summed in float64, rounded once) and updates the running
ones; each SLU gate draws its decision ``p > u`` from the step's ``rng`` and gets the
straight-through gradient plus the cost loss's (``slu_cost``); PSG (``psg``) picks the
engine's CONV_WGRAD mode; ``trainable`` (host/train/trainable.py) what trains.
"""
from __future__ import annotations

import numpy as np

from .trainable import EVERYTHING
from .walk import Walk


class Step(Walk):
    """Forward and backward of one mini-batch; collects host gradients in ``grads`` (and counts
    the host's work into ``host``, a walk.HostTally, when given)."""

    def __init__(self, plan, session, params: dict, psg: dict | None, slu_cost: dict | None, rng,
                 host=None, trainable=EVERYTHING, table=None):
        super().__init__(plan, session, params, True, rng, psg=psg, slu_cost=slu_cost, host=host, trainable=trainable,
                         table=table)

    def forward(self, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        """(mean cross-entropy, logits)."""
        self.labels = y
        t = self.run(x)
        return float(self.losses.mean()), t[self.plan.ops[-1]["inputs"][0]]
