"""Data-parallel training under ``torchrun``: process group, batch sharding, synced BN.

With W processes each rank takes its contiguous slice of every global batch; gradients
are averaged by DistributedDataParallel and BatchNorm statistics are reduced over the
whole global batch, so W processes follow one process with the same global batch up to
float rounding. PyTorch's SyncBatchNorm refuses CPU tensors, hence ``GlobalBatchNorm2d``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import nn

from contract.errors import E2TError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, batch_len: int) -> slice:
        """This rank's contiguous part of a global batch of ``batch_len`` samples."""
        if batch_len % self.size:
            raise E2TError(f"global batch {batch_len} does not split over {self.size} processes")
        part = batch_len // self.size
        return slice(self.rank * part, (self.rank + 1) * part)

    def sum(self, values: list[float]) -> list[float]:
        """Sum plain numbers over all ranks (metrics)."""
        if self.size == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t)
        return t.tolist()

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()


def init_world(device: torch.device) -> World:
    """Join the process group that ``torchrun`` describes in the environment, if any."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size())


def close_world(world: World) -> None:
    """Leave the process group once every rank has got here."""
    if world.size > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover the global batch of all ranks."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        c = x.shape[1]
        x64 = x.double()  # E[x^2] - mean^2 cancels badly in float32
        local = torch.cat([x64.sum((0, 2, 3)), (x64 * x64).sum((0, 2, 3)),
                           x64.new_full((1,), x.numel() // c)])
        total = dist_fn.all_reduce(local)
        n = total[-1]
        mean64 = total[:c] / n
        mean, var = mean64.to(x.dtype), (total[c:2 * c] / n - mean64 * mean64).to(x.dtype)
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(m * mean)
            self.running_var.mul_(1 - m).add_(m * var * n / (n - 1))
        scale = self.weight * torch.rsqrt(var + self.eps)
        return x * scale[:, None, None] + (self.bias - mean * scale)[:, None, None]


def use_global_batchnorm(model: nn.Module) -> nn.Module:
    """Turn every BatchNorm2d of ``model`` into a GlobalBatchNorm2d in place (same state)."""
    for m in model.modules():
        if type(m) is nn.BatchNorm2d:
            m.__class__ = GlobalBatchNorm2d
    return model
