"""The PyTorch reference trainer (``e2t train --backend torch``).

Seeds everything, keys the learning-rate schedule on iterations, writes the run folder
(config.json, metrics.jsonl, checkpoint.pt written atomically after every epoch) and
resumes from it to the same weights as an uninterrupted run: all randomness of an epoch
is drawn from (seed, epoch), so an epoch replays identically whatever ran before it.
Runs on a GPU when one is present, and data-parallel under ``torchrun``.
"""
from __future__ import annotations

import io
import sys
import time

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from host.config import TrainConfig, lr_at
from host.datasets import batches_per_epoch, load_dataset, test_batches, train_batches
from host.errors import E2TError
from host.progress import Progress
from host.runs import RunDir

from .distributed import World, close_world, init_world, use_global_batchnorm
from .models import build_model

CHECKPOINT = "checkpoint.pt"


def pick_device(name: str) -> torch.device:
    """``auto`` -> the GPU when one is present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise E2TError(f"--device {name}: no CUDA GPU is visible to PyTorch here")
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise E2TError(f"--device {name}: {e}") from None


def encode_checkpoint(state: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def decode_checkpoint(data: bytes, path: str) -> dict:
    """Load a checkpoint's bytes; a corrupt or truncated file gives one clear error."""
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for damaged archives
        raise E2TError(f"checkpoint {path} is corrupt or truncated "
                       f"({type(e).__name__}); nothing was changed") from None
    needed = {"model", "optimizer", "epoch", "iteration", "config"}
    if not isinstance(state, dict) or not needed <= set(state):
        raise E2TError(f"checkpoint {path} is not an e2t torch checkpoint (needs {sorted(needed)})")
    return state


def evaluate(model: torch.nn.Module, ds, device: torch.device, batch_size: int = 500) -> tuple[float, float]:
    """(mean loss, accuracy) on the test split."""
    model.eval()
    loss_sum, correct = 0.0, 0
    with torch.no_grad():
        for x, y in test_batches(ds, batch_size):
            x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
            logits = model(x)
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
    model.train()
    n = len(ds.test_y)
    return loss_sum / n, correct / n


class Trainer:
    """One run: model, optimizer and run folder; ``fit()`` trains to ``cfg.epochs``."""

    def __init__(self, cfg: TrainConfig, out: str, *, resume: bool = False, data_dir: str | None = None,
                 device: str = "auto", progress: bool = True, log=None):
        self.cfg = cfg
        self.device = pick_device(device)
        self.world = init_world(self.device)
        self.log = log if log is not None else (lambda msg: print(msg, file=sys.stderr))
        self.progress = progress and self.world.is_main
        self.ds = load_dataset(cfg.dataset, data_dir)
        self.world.shard(cfg.batch_size)  # fail early if the batch does not split
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg.model, self.ds.num_classes, self.ds.in_channels).to(self.device)
        if self.world.size > 1:
            use_global_batchnorm(self.model)
            self.net = DistributedDataParallel(self.model)
        else:
            self.net = self.model
        self.opt = torch.optim.SGD(self.model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                   weight_decay=cfg.weight_decay)
        self.run = RunDir(out, CHECKPOINT)
        self.epoch = self.iteration = 0
        self.iters_per_epoch = batches_per_epoch(self.ds, cfg.batch_size)
        self.total_iterations = self.iters_per_epoch * cfg.epochs
        if resume:
            self._restore()
        elif self.world.is_main:
            self.run.create(cfg.to_dict())
        self.world.barrier()

    def _restore(self) -> None:
        state = decode_checkpoint(self.run.read_checkpoint(), self.run.checkpoint)
        if state["config"] != self.cfg.to_dict():
            raise E2TError(f"checkpoint {self.run.checkpoint} belongs to a different config")
        try:
            self.model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            first = str(e).strip().splitlines()[0]
            raise E2TError(f"checkpoint {self.run.checkpoint} does not fit {self.cfg.model}: {first}") from None
        self.epoch, self.iteration = state["epoch"], state["iteration"]
        if self.world.is_main:
            self.run.truncate_metrics(self.epoch)
        self.log(f"resuming {self.run.path} after epoch {self.epoch} (iteration {self.iteration})")

    def _checkpoint(self) -> None:
        if self.world.is_main:
            self.run.write_checkpoint(encode_checkpoint({
                "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "epoch": self.epoch, "iteration": self.iteration, "config": self.cfg.to_dict()}))

    def train_epoch(self) -> dict:
        """One epoch over the training split; returns its metrics record."""
        cfg, world = self.cfg, self.world
        torch.manual_seed(cfg.seed * 100_003 + self.epoch)  # torch-side randomness of this epoch
        self.net.train()
        start = time.perf_counter()
        loss_sum = correct = seen = 0.0
        part = world.shard(cfg.batch_size)
        with Progress(self.iters_per_epoch, f"epoch {self.epoch + 1}/{cfg.epochs}", enabled=self.progress) as bar:
            for x, y in train_batches(self.ds, cfg.batch_size, cfg.seed, self.epoch):
                lr = lr_at(cfg, self.iteration, self.total_iterations)
                for group in self.opt.param_groups:
                    group["lr"] = lr
                x = torch.from_numpy(x[part]).to(self.device)
                y = torch.from_numpy(y[part]).to(self.device)
                logits = self.net(x)
                loss = F.cross_entropy(logits, y)
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()
                self.iteration += 1
                loss_sum += loss.item() * len(y)
                correct += (logits.argmax(1) == y).sum().item()
                seen += len(y)
                bar.update(loss=loss.item(), lr=lr)
        loss_sum, correct, seen = world.sum([loss_sum, correct, seen])
        seconds = time.perf_counter() - start
        self.epoch += 1
        return {"epoch": self.epoch, "iteration": self.iteration, "lr": lr,
                "train_loss": loss_sum / seen, "train_acc": correct / seen,
                "seconds": seconds, "images_per_s": seen / seconds}

    def fit(self) -> list[dict]:
        """Train the remaining epochs; checkpoint and log after each. Returns all records."""
        try:
            while self.epoch < self.cfg.epochs:
                record = self.train_epoch()
                if self.world.is_main:
                    record["test_loss"], record["test_acc"] = evaluate(self.model, self.ds, self.device)
                    self._checkpoint()
                    self.run.append_metrics(record)
                    self.log(f"epoch {record['epoch']}: train loss {record['train_loss']:.4f} "
                             f"acc {100 * record['train_acc']:.2f} %, test acc "
                             f"{100 * record['test_acc']:.2f} % ({record['seconds']:.1f} s, "
                             f"{record['images_per_s']:.0f} img/s)")
                self.world.barrier()
            return self.run.metrics() if self.world.is_main else []
        finally:
            close_world(self.world)
