"""The PyTorch reference trainer (``e2t train --backend torch``).

Seeds everything, keys the learning-rate schedule on iterations, writes the run folder
(config.json, metrics.jsonl, checkpoint.pt written atomically after every epoch) and
resumes from it to the same weights as an uninterrupted run: all randomness of an epoch
is drawn from (seed, epoch), so an epoch replays identically whatever ran before it.
Runs on a GPU when one is present, and data-parallel under ``torchrun``.

E2-Train's data and model levels are here: SMD (``cfg.smd``) drops whole iterations,
SLU (``cfg.slu_target``) trains a ``GatedResNet`` with the cost loss of reference/slu.py,
and the algorithm level, PSG (``cfg.psg``), swaps every conv for the integer ``QConv2d``
of reference/quant.py with its sign-momentum ``PSGUpdater``. ``cfg.elementwise`` engine (with
``--precision fixed``) computes BatchNorm, ReLU, the residual add and the quantizations as the
engine's STATS and APPLY do (contract v2, reference/intnet.py), the twin of the on-engine
trainer's ``--elementwise engine``. Every kept iteration is
counted per layer and phase (contract/opcount.py) into the epoch's ``ops`` record, with the
host's work and the engine's modeled cycles of the same steps on the board (reference/boardcount.py).
"""
from __future__ import annotations

import io
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from contract import numerics as nx
from contract.errors import E2TError
from contract.opcount import total_macs
from contract.runs import RunDir, check_arrays, check_position, epoch_line as summary
from host.data.datasets import batches_per_epoch, load_dataset, test_batches, train_batches
from host.train.config import TrainConfig, lr_at
from host.train.progress import Progress
from host.plan.planbuild import resnet_ops
from host.train.schedule import cost_sign, gate_draws, smd_drops
from host.train.trainable import Trainable

from . import boardcount
from .distributed import World, close_world, init_world, use_global_batchnorm
from .geometry import layer_geometry
from .hostexact import cross_entropy as exact_cross_entropy, use_exact_host_ops
from .intnet import use_contract_v2
from .models import GatedResNet, build_model, residual_macs
from .quant import PSGConfig, PSGUpdater, QConv2d, conv_factory, sync_masters
from .slu import cost_loss, cost_weights

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
    needed = {"model", "optimizer", "psg", "epoch", "iteration", "config"}
    if not isinstance(state, dict) or not needed <= set(state) or not isinstance(state["model"], dict):
        raise E2TError(f"checkpoint {path} is not an e2t torch checkpoint (needs {sorted(needed)})")
    return state


def _numpy(where: str, tensors: dict) -> dict:
    """The tensors of a state as numpy arrays, for contract.runs.check_arrays (other values left out)."""
    out = {}
    for name, t in tensors.items():
        if torch.is_tensor(t):
            try:
                out[name] = t.detach().cpu().numpy()
            except TypeError:  # bfloat16 and the like: no run of this trainer holds them
                raise E2TError(f"{where}: {name} is {t.dtype}, not a type this run holds") from None
    return out


def check_state(where: str, state: dict, model: torch.nn.Module, psg: PSGUpdater, params: list) -> None:
    """A decoded checkpoint against the run's model, before any of it is loaded: every tensor
    of the model (names, dtype, shape, finite), each conv's master exponent, PSG's momentum and
    SGD's momentum buffers (shapes of their parameters)."""
    expected = model.state_dict()
    check_arrays(where, _numpy(where, state["model"]), _numpy(where, expected))
    for name, value in expected.items():
        if not torch.is_tensor(value):  # a QConv2d's extra state: {"w_exp": int}
            got = state["model"].get(name)
            e = got.get("w_exp") if isinstance(got, dict) and set(got) == set(value) else None
            if not isinstance(e, int) or isinstance(e, bool) or not nx.MASTER_EXP_MIN <= e <= nx.MASTER_EXP_MAX:
                raise E2TError(f"{where}: {name} is not {{'w_exp': an exponent in "
                               f"[{nx.MASTER_EXP_MIN}, {nx.MASTER_EXP_MAX}]}}")
    saved = state["psg"]
    if not isinstance(saved, dict) or not isinstance(saved.get("buffers"), list):
        raise E2TError(f"{where}: psg is not the PSG update's state (its momentum buffers)")
    want = psg.state_dict()["buffers"]
    check_arrays(where, _numpy(where, {f"psg.buffers.{i}": b for i, b in enumerate(saved["buffers"])}),
                 _numpy(where, {f"psg.buffers.{i}": b for i, b in enumerate(want)}))
    opt = state["optimizer"]
    moments = opt.get("state") if isinstance(opt, dict) else None
    if not isinstance(moments, dict) or not all(isinstance(i, int) and 0 <= i < len(params) for i in moments):
        raise E2TError(f"{where}: optimizer is not the SGD state of this model's {len(params)} parameters")
    check_arrays(where, _numpy(where, {f"optimizer.{i}": s.get("momentum_buffer") if isinstance(s, dict) else s
                                       for i, s in moments.items()}),
                 _numpy(where, {f"optimizer.{i}": params[i] for i in moments}))


def evaluate(model: torch.nn.Module, ds, device: torch.device, batch_size: int = 500) -> dict:
    """Test-split metrics: ``test_loss`` and ``test_acc``.

    A ``GatedResNet`` is measured with deterministic gates (p > 0.5) for those, and again with
    sampled gates (``test_loss_sampled``, ``test_acc_sampled``); ``test_executed_fraction[_sampled]``
    is the fraction of gated blocks run per test image.
    """
    gated = isinstance(model, GatedResNet)
    passes = (("deterministic", ""), ("sampled", "_sampled")) if gated else ((None, ""),)
    record, n = {}, len(ds.test_y)
    model.eval()
    with torch.no_grad():
        for mode, suffix in passes:
            loss_sum = correct = executed = 0.0
            for x, y in test_batches(ds, batch_size):
                x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
                logits = model(x, gates=mode) if gated else model(x)
                loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
                correct += (logits.argmax(1) == y).sum().item()
                if gated:
                    executed += model.last_gates[1:].sum().item()
            record["test_loss" + suffix], record["test_acc" + suffix] = loss_sum / n, correct / n
            if gated:
                record["test_executed_fraction" + suffix] = executed / (n * model.num_gates)
    model.train()
    return record


def freeze(model: torch.nn.Module, trainable: Trainable) -> None:
    """``requires_grad`` off for the parameters that do not train (host/train/trainable.py, of the
    model's plan ops, named as its modules): a conv's weight by its layer, the rest as the plan's
    host parameters; the gates below the line decide without gradient (GatedResNet.frozen_gates).
    The optimizers leave them out, autograd computes no gradient for them, and none below them."""
    for name, p in model.named_parameters():
        p.requires_grad_(name in trainable.params or name.rpartition(".")[0] in trainable.trained)
    if isinstance(model, GatedResNet):
        model.frozen_gates = trainable.frozen_gates


class Trainer:
    """One run: model, optimizer and run folder; ``fit()`` trains to ``cfg.epochs``."""

    def __init__(self, cfg: TrainConfig, out: str, *, resume: bool = False, data_dir: str | None = None,
                 device: str = "auto", progress: bool = True, log=None):
        self.cfg = cfg
        self.device = pick_device(device)
        self.world = init_world(self.device)
        self.log = log if log is not None else (lambda msg: print(msg, file=sys.stderr))
        self.progress = progress and self.world.is_main
        self.run = RunDir(out, CHECKPOINT)
        if not resume and self.world.is_main:
            self.run.check_new()  # before the data is read or the model built
        self.ds = load_dataset(cfg.dataset, data_dir, cfg.image_size, cfg.image_channels)
        self.world.shard(cfg.batch_size)  # fail early if the batch does not split
        if cfg.psg and self.world.size > 1:
            raise E2TError("--psg is not supported under torchrun yet: averaging sign gradients "
                           "over processes is not the single-process update")
        v2 = cfg.elementwise == "engine"
        if v2 and (self.world.size > 1 or cfg.predictive_forward):
            raise E2TError("--elementwise engine: the reference's twin runs in one process, without "
                           "--predictive-forward (as the engine trainer)")
        torch.manual_seed(cfg.seed)
        psg = PSGConfig(cfg.psg_tau, cfg.psg_ratio, *cfg.psg_tiles(), cfg.predictive_forward) \
            if cfg.psg else None
        self.model = build_model(cfg.model, self.ds.num_classes, self.ds.in_channels,
                                 conv=conv_factory(cfg.precision, psg), slu=cfg.slu_target is not None,
                                 gate_init=cfg.slu_gate_init)
        sync_masters(self.model)
        if cfg.precision == "fixed":  # the host's float ops rounded as on the engine trainer
            use_exact_host_ops(self.model)
        # gated blocks on their images as on the engine (slu_exec gather; always in contract v2), and
        # evaluation in the engine trainer's batches (contract v2's exponents come from each batch)
        self.gathered = cfg.slu_exec == "gather" or v2
        self.eval_batch = cfg.batch_size if v2 else 500
        self.loss_fn = exact_cross_entropy if cfg.precision == "fixed" else F.cross_entropy
        size = self.ds.test_x.shape[2]
        self.trainable = Trainable(resnet_ops(cfg.model, self.ds.in_channels, self.ds.num_classes, size,
                                              cfg.slu_target is not None)[0], cfg.train_from, cfg.train)
        freeze(self.model, self.trainable)  # --train-from, --train: before DDP registers what trains
        layers = boardcount.trained_layers(layer_geometry(self.model, self.ds.in_channels, size), self.trainable)
        self.counter = boardcount.counter(cfg, layers, self.ds, self.log, self.trainable)
        self.slu_weights = None  # cost weights w_l of the gated blocks when SLU is on
        if cfg.slu_target is not None:
            gated_macs = residual_macs(self.model, self.ds.in_channels)[1:]
            self.slu_weights = cost_weights(gated_macs, cfg.slu_weighting).to(self.device)
        if v2:  # after the layers' geometry, which hooks the modules' own forward passes
            use_contract_v2(self.model)
        self.model.to(self.device)
        if self.world.size > 1:
            use_global_batchnorm(self.model)
            self.net = DistributedDataParallel(self.model)
        else:
            self.net = self.model
        self.psg = PSGUpdater(self.model, cfg.weight_decay, cfg.momentum)
        signed = {id(p) for p in self.psg.parameters()}
        self.opt = torch.optim.SGD([p for p in self.model.parameters() if id(p) not in signed and p.requires_grad],
                                   lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        self.epoch = self.iteration = 0
        self.iters_per_epoch = batches_per_epoch(self.ds, cfg.batch_size)
        self.total_iterations = self.iters_per_epoch * cfg.epochs
        if resume:
            self._restore()
        elif self.world.is_main:
            self.run.create(cfg.to_dict())
        self.world.barrier()

    def _restore(self) -> None:
        """Continue from the checkpoint, checked against this run first (contract.runs, check_state);
        with none saved yet (killed in epoch 1) start from the beginning, as the config says."""
        if not os.path.lexists(self.run.checkpoint):
            self._resumed(None)
            self.log(f"resuming {self.run.path} from its start: no epoch was saved before it stopped")
            return
        where = f"checkpoint {self.run.checkpoint}"
        state = decode_checkpoint(self.run.read_checkpoint(), self.run.checkpoint)
        if TrainConfig.from_dict(state["config"], where) != self.cfg:
            raise E2TError(f"{where} belongs to a different config")
        check_position(where, state["epoch"], state["iteration"], self.cfg.epochs, self.iters_per_epoch)
        params = [p for group in self.opt.param_groups for p in group["params"]]
        check_state(where, state, self.model, self.psg, params)
        try:
            self.model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["optimizer"])
            self.psg.load_state_dict(state["psg"])
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            first = str(e).strip().splitlines()[0]
            raise E2TError(f"checkpoint {self.run.checkpoint} does not fit {self.cfg.model}: {first}") from None
        self.epoch, self.iteration = state["epoch"], state["iteration"]
        self._resumed(self.epoch)
        self.log(f"resuming {self.run.path} after epoch {self.epoch} (iteration {self.iteration})")

    def _resumed(self, epoch: int | None) -> None:
        if self.world.is_main:
            self.run.resume(epoch)  # metrics.jsonl and the folder's stale temporaries
        self.run.saved_epoch = epoch

    def _checkpoint(self) -> None:
        if self.world.is_main:
            self.run.write_checkpoint(encode_checkpoint({
                "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "psg": self.psg.state_dict(), "epoch": self.epoch, "iteration": self.iteration,
                "config": self.cfg.to_dict()}), self.epoch)
        self.run.saved_epoch = self.epoch  # every rank: the main one has written it

    def _coast(self, lr: float) -> None:
        """A dropped iteration under ``smd_coast``: an SGD step with zero gradients."""
        for p in self.model.parameters():
            p.grad = torch.zeros_like(p)
        self.step(lr)

    def step(self, lr: float) -> None:
        """Update: float SGD for BN, classifier and gates; the integer sign update for PSG convs."""
        self.opt.step()
        if self.psg.layers:
            self.psg.step(lr)

    def _count(self, batch: int, kept: bool) -> dict:
        """Count one iteration's operations; returns the PSG layers' statistics."""
        executed = None
        if kept and isinstance(self.model, GatedResNet):
            executed = {i: int(n) for i, n in enumerate(self.model.last_gates.sum(1).tolist())}
        stats = {name: m.stats for name, m in self.model.named_modules() if isinstance(m, QConv2d)} if kept else {}
        self.counter.add_iteration(batch, executed, stats, kept=kept, coast=self.cfg.smd_coast)
        return stats

    def _slu_cost(self) -> torch.Tensor:
        """The SLU cost loss of the last forward pass, signed by the global batch's executed fraction."""
        masks = self.model.gate_masks
        executed, count = self.world.sum([masks.detach().sum().item(), masks.numel()])
        sign = cost_sign(executed / count, self.cfg.slu_target, self.cfg.slu_band)
        # DDP averages gradients over ranks; the factor makes the sum run over the global batch
        return self.world.size * cost_loss(masks, self.slu_weights, sign, self.cfg.slu_beta)

    def train_epoch(self) -> dict:
        """One epoch over the training split; returns its metrics record.

        A batch that SMD drops is still drawn (the data order does not depend on p) and
        counts as an iteration of the lr schedule, but runs no forward, backward or update;
        with ``smd_coast`` it still steps SGD with zero gradients, so momentum and weight
        decay move the weights, as ``optimizer.step()`` did on PyTorch 1.x in the authors'
        code. train_loss (cross-entropy only) and train_acc average over the kept batches
        (None if all were dropped).
        """
        cfg, world = self.cfg, self.world
        torch.manual_seed(cfg.seed * 100_003 + self.epoch)  # torch-side randomness of this epoch
        if isinstance(self.model, GatedResNet) and self.gathered:
            self.model.gather_rng = gate_draws(cfg.seed, self.epoch)
        self.net.train()
        start = time.perf_counter()
        dropped = smd_drops(cfg.smd, cfg.seed, self.epoch, self.iters_per_epoch)
        gated = self.slu_weights is not None
        loss_sum = correct = seen = 0.0
        self.counter.reset()
        psg_tally: dict[str, list] = {}  # per QConv2d: predicted, entries, act and grad saturations
        block_runs = torch.zeros(len(self.model.blocks) if gated else 0, device=self.device)  # samples per block
        part = world.shard(cfg.batch_size)
        with Progress(self.iters_per_epoch, f"epoch {self.epoch + 1}/{cfg.epochs}", enabled=self.progress) as bar:
            for drop, (x, y) in zip(dropped, train_batches(self.ds, cfg.batch_size, cfg.seed, self.epoch)):
                lr = lr_at(cfg, self.iteration, self.total_iterations)
                for group in self.opt.param_groups:
                    group["lr"] = lr
                self.iteration += 1
                if drop:
                    if cfg.smd_coast:
                        self._coast(lr)
                    self._count(len(y[part]), kept=False)
                    bar.update(lr=lr)
                    continue
                x = torch.from_numpy(x[part]).to(self.device)
                y = torch.from_numpy(y[part]).to(self.device)
                logits = self.net(x)
                loss = self.loss_fn(logits, y)
                objective = loss + self._slu_cost() if gated else loss
                self.opt.zero_grad(set_to_none=True)
                objective.backward()
                if self.gathered:  # as on the engine: a block no image ran still takes its SGD step
                    for q in (q for group in self.opt.param_groups for q in group["params"]):
                        if q.grad is None:
                            q.grad = torch.zeros_like(q)
                self.step(lr)
                for name, st in self._count(len(y), kept=True).items():
                    tally = psg_tally.setdefault(name, [0, 0, 0, 0])
                    for j, key in enumerate(("predicted", "entries", "act_saturations", "grad_saturations")):
                        tally[j] += st.get(key, 0)
                loss_sum += loss.item() * len(y)
                correct += (logits.argmax(1) == y).sum().item()
                seen += len(y)
                if gated:
                    block_runs += self.model.last_gates.sum(1)
                bar.update(loss=loss.item(), lr=lr)
        loss_sum, correct, seen, *block_runs = world.sum([loss_sum, correct, seen, *block_runs.tolist()])
        seconds = time.perf_counter() - start
        self.epoch += 1

        def mean(total: float) -> float | None:
            return total / seen if seen else None

        kept = int((~dropped).sum())
        record = {"epoch": self.epoch, "iteration": self.iteration, "lr": lr,
                  "train_loss": mean(loss_sum), "train_acc": mean(correct),
                  "kept_iterations": kept, "dropped_iterations": len(dropped) - kept,
                  "seconds": seconds, "images_per_s": seen / seconds}
        record["ops"] = self.counter.record()
        record["macs"] = total_macs(record["ops"]["total"])
        if psg_tally:
            t = np.array(list(psg_tally.values()), dtype=np.float64)
            record["saturations"] = {"act": int(t[:, 2].sum()), "grad": int(t[:, 3].sum()),
                                     "update": self.psg.saturations}
            if cfg.psg:
                record["psg_predicted_fraction"] = float(t[:, 0].sum() / max(t[:, 1].sum(), 1))
                record["psg_predicted_per_layer"] = {n: v[0] / max(v[1], 1) for n, v in psg_tally.items()}
        if gated:
            record["executed_fraction"] = mean(sum(block_runs[1:]) / self.model.num_gates)
            record["block_executed"] = [mean(r) for r in block_runs]
        return record

    def fit(self) -> list[dict]:
        """Train the remaining epochs; after each its metrics record, then the checkpoint (a kill
        between them leaves a record that resuming drops), then the log line. Returns all records.
        Stopped before the first checkpoint, the run removes what it created (``RunDir.abandon``)."""
        try:
            with self.run.guard():
                while self.epoch < self.cfg.epochs:
                    record = self.train_epoch()
                    if self.world.is_main:
                        record.update(evaluate(self.model, self.ds, self.device, self.eval_batch))
                        self.run.append_metrics(record)
                    self._checkpoint()
                    if self.world.is_main:
                        self.log(summary(record))
                    self.world.barrier()
            return self.run.metrics() if self.world.is_main else []
        finally:
            close_world(self.world)
