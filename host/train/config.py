"""The training configuration every backend shares, and its learning-rate schedule.

Plain Python (no numpy, no torch), so the CLI can parse and check a run's settings on
any machine before it imports a backend.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from contract.errors import E2TError
from contract.models import MODELS

from . import trainable

BACKENDS = ("torch", "emu", "pynq")
ENGINE_BACKENDS = ("emu", "pynq")  # the board's engine: fixed point, the integer sign update for every conv
SLU_WEIGHTINGS = ("uniform", "macs")
SLU_EXECS = ("mask", "gather")
PRECISIONS = ("fp32", "fixed")
ELEMENTWISE = ("host", "engine")  # where BatchNorm, ReLU, the residual and the quantization run
# E2-Train as this project runs it (README, "The savings"): SMD drops half the batches, SLU aims at
# 60 % of the gated blocks (cost weight 1e-3, a +-5 % band, gates starting open at 0.95), PSG takes
# every weight-gradient sign from the 4-bit predictor (threshold 0). `e2t train --preset e2train`.
PRESETS = {
    "e2train": {"smd": 0.5, "slu_target": 0.6, "slu_beta": 1e-3, "slu_gate_init": 0.95, "slu_band": 0.05,
                "precision": "fixed", "psg": True, "psg_tau": 0.0},
}
SLU_SETTINGS = ("slu_target", "slu_beta", "slu_band", "slu_weighting", "slu_gate_init", "slu_exec")
# e2t train --init of a trained plan without --lr: fine-tuning's rate. Measured (resnet8, reference-trained on digits
# to 86.1 % on the engine, exported, 1 epoch on the emulated engine): lr 0.1 / 0.01 / 0.003 / 0.001 / 0.0003 gave
# 52.4 / 81.3 / 66.0 / 86.9 / 90.0 % on digits, 56.3 / 68.8 / 93.8 / 97.9 / 89.6 % with a new head on 4 of its classes,
# and with --preset e2train (SLU gates added) 22.6 / 19.2 / - / 86.1 / 81.6 % on digits.
FINETUNE_LR = 0.001
SEEDS = 2 ** 32  # seeds are 0 .. SEEDS - 1 (the torch backend seeds with seed * 100003 + epoch)
# what a setting of each annotated type may hold (a bool is no number); floats are stored as float
_TYPES = {"str": (str, "a name"), "int": (int, "an integer"), "float": ((int, float), "a number"),
          "bool": (bool, "true or false"), "tuple": ((int, float), "a list of numbers")}


def _finite(v) -> bool:
    try:
        return math.isfinite(v)
    except OverflowError:  # an integer beyond any float
        return False


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def flag(name: str) -> str:
    """The ``e2t train`` flag of a TrainConfig field."""
    return {"image_size": "--size", "image_channels": "--channels"}.get(name, "--" + name.replace("_", "-"))


def check_seed(seed: int) -> None:
    """--seed of e2t train and e2t plan: 0 .. SEEDS - 1."""
    if not 0 <= seed < SEEDS:
        raise E2TError(f"--seed must be 0 .. {SEEDS - 1}, got {seed}")


def preset(name: str, slu: bool = True) -> dict:
    """The settings of preset ``name`` (without the SLU ones if not ``slu``: a network with no gates)."""
    if name not in PRESETS:
        raise E2TError(f"unknown --preset '{name}' (known: {', '.join(PRESETS)})")
    return {k: v for k, v in PRESETS[name].items() if slu or k not in SLU_SETTINGS}


def as_flags(settings: dict) -> list[str]:
    """``e2t train`` flags that give ``settings`` (TrainConfig field -> value)."""
    flags = []
    for key, value in settings.items():
        if value is True:
            flags.append(flag(key))
        elif value is not False and value is not None:
            flags += [flag(key), f"{value:g}" if isinstance(value, float) else str(value)]
    return flags


@dataclass(frozen=True)
class TrainConfig:
    """What defines a run: two runs with equal configs train to the same weights."""

    backend: str = "torch"
    board: str = "pynq-z2"  # the board whose engine runs the convs (emu, pynq); the torch backend ignores it
    model: str = "resnet20"
    dataset: str = "mnist5k"
    image_size: int | None = None  # folder data sets: resize images to this side (None: as they are)
    image_channels: int | None = None  # folder data sets: 1 (grayscale) or 3 (RGB); None: from the images
    epochs: int = 15
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_milestones: tuple = (0.5, 0.75)
    lr_gamma: float = 0.1
    seed: int = 0
    smd: float = 0.0  # SMD: probability of dropping a mini-batch
    smd_coast: bool = False  # SMD: dropped iterations still step with zero gradients
    slu_target: float | None = None  # SLU: executed fraction of gated blocks aimed at; None = no gates
    slu_beta: float = 1e-5  # SLU: weight of the computational-cost loss
    slu_band: float = 0.0  # SLU: cost sign ramps from -1 to +1 over target +- band; 0 = the authors' step
    slu_weighting: str = "uniform"  # SLU: per-block cost weights, uniform or by MACs
    slu_gate_init: float | None = None  # SLU: gates start running blocks with this probability; None: p ~ 0.5
    slu_exec: str | None = None  # SLU: mask (the authors': whole batch, masked) or gather (the engine's); None: the backend's
    precision: str | None = None  # conv arithmetic: fp32 or fixed (docs/numerics.md); None: fixed on the engine
    init: str | None = None  # emu, pynq: the plan folder the run starts from (None: fresh weights of model, seed)
    psg: bool = False  # PSG: 4-bit predictor + selective full gradient, integer sign update
    psg_tau: float = 5e-5  # PSG: absolute threshold on |G_msb|
    psg_ratio: float | None = None  # PSG: adaptive threshold tau = ratio * max|G_msb| (overrides tau)
    psg_tile: int | None = None  # PSG: weight-gradient tile (N x N channels) recomputed whole; None: the board's
    predictive_forward: bool = False  # PSG: zero outputs the MSB forward predicts negative
    train_from: str | None = None  # the layers below this block (blocks.N, or fc) are frozen; None: all train
    train: str = "all"  # what trains from the line up: all, or bn (BatchNorm scale and shift, and the classifier)
    elementwise: str = "host"  # host (float32) or engine (contract v2: STATS and APPLY; torch: its fixed-point twin)

    def __post_init__(self):
        self._check_types()
        if self.model not in MODELS and self.init is None:  # an --init plan's network may have a name of its own
            raise E2TError(f"unknown model '{self.model}' (known: {', '.join(MODELS)})")
        if self.backend not in BACKENDS:
            raise E2TError(f"unknown backend '{self.backend}' (known: {', '.join(BACKENDS)})")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise E2TError(f"{flag(name)} must be at least 1, got {getattr(self, name)}")
        check_seed(self.seed)
        if self.image_size is not None and not 1 <= self.image_size <= 1024:
            raise E2TError(f"--size must be 1..1024 pixels, got {self.image_size}")
        if self.image_channels not in (None, 1, 3):
            raise E2TError(f"--channels must be 1 (grayscale) or 3 (RGB), got {self.image_channels}")
        if self.lr <= 0 or not 0 <= self.momentum < 1 or self.weight_decay < 0:
            raise E2TError(f"need lr > 0, 0 <= momentum < 1, weight decay >= 0; got "
                           f"{self.lr}, {self.momentum}, {self.weight_decay}")
        if not self.lr_gamma > 0:
            raise E2TError(f"--lr-gamma must be > 0 (lr is multiplied by it at each milestone), got {self.lr_gamma}")
        if not all(_finite(r) for r in self.rates()):
            raise E2TError(f"--lr {self.lr:g}, --lr-gamma {self.lr_gamma:g}: the learning rate overflows at a milestone")
        if any(not 0 < m < 1 for m in self.lr_milestones) or list(self.lr_milestones) != sorted(self.lr_milestones):
            raise E2TError(f"--lr-milestones must be increasing fractions of the run in (0, 1), "
                           f"got {self.lr_milestones}")
        if not 0 <= self.smd < 1:
            raise E2TError(f"--smd must be a drop probability in [0, 1), got {self.smd}")
        if self.slu_target is not None and not 0 < self.slu_target <= 1:
            raise E2TError(f"--slu-target must be an executed fraction in (0, 1], got {self.slu_target}")
        if self.slu_beta < 0:
            raise E2TError(f"--slu-beta must be >= 0, got {self.slu_beta}")
        if not 0 <= self.slu_band < 1:
            raise E2TError(f"--slu-band must be a fraction in [0, 1), got {self.slu_band}")
        if self.slu_gate_init is not None and not 0 < self.slu_gate_init < 1:
            raise E2TError(f"--slu-gate-init must be a probability in (0, 1), got {self.slu_gate_init}")
        if self.slu_exec not in (None,) + SLU_EXECS:
            raise E2TError(f"unknown --slu-exec '{self.slu_exec}' (known: {', '.join(SLU_EXECS)})")
        if self.slu_exec == "mask" and self.backend in ENGINE_BACKENDS:
            raise E2TError(f"--slu-exec mask: --backend {self.backend} runs a gated block on the gathered images "
                           f"only (gather)")
        if self.slu_weighting not in SLU_WEIGHTINGS:
            raise E2TError(f"unknown --slu-weighting '{self.slu_weighting}' (known: {', '.join(SLU_WEIGHTINGS)})")
        engine = self.backend in ENGINE_BACKENDS
        if self.precision is None:
            object.__setattr__(self, "precision", "fixed" if engine else "fp32")
        if self.precision not in PRECISIONS:
            raise E2TError(f"unknown --precision '{self.precision}' (known: {', '.join(PRECISIONS)})")
        if engine and self.precision != "fixed":
            raise E2TError(f"--precision {self.precision}: --backend {self.backend} computes in fixed point "
                           f"(leave --precision out, or give fixed)")
        if self.psg and self.precision != "fixed":
            raise E2TError("--psg computes in fixed point: add --precision fixed")
        if self.predictive_forward and not self.psg:
            raise E2TError("--predictive-forward is part of PSG: add --psg --precision fixed")
        if engine or self.psg:
            self._check_sign_update("--psg" if self.psg else f"--backend {self.backend}")
        if self.psg_tau < 0 or (self.psg_tile is not None and self.psg_tile < 1) or \
                (self.psg_ratio is not None and not 0 < self.psg_ratio <= 1):
            raise E2TError(f"need --psg-tau >= 0, --psg-tile >= 1, --psg-ratio in (0, 1]; got "
                           f"{self.psg_tau}, {self.psg_tile}, {self.psg_ratio}")
        self._check_board(engine)
        if self.train_from is not None:  # before any work; an --init plan's blocks again when the trainer reads it
            blocks = trainable.model_blocks(self.model)
            object.__setattr__(self, "train_from", trainable.check_name(self.train_from, blocks))
        if self.elementwise not in ELEMENTWISE:
            raise E2TError(f"unknown --elementwise '{self.elementwise}' (known: {', '.join(ELEMENTWISE)})")
        if self.elementwise == "engine" and not engine and self.precision != "fixed":
            raise E2TError(f"--elementwise engine runs on the engine (--backend emu or pynq) or as the reference's "
                           f"twin of it (--backend {self.backend} --precision fixed), not in {self.precision}")
        if self.elementwise == "engine" and self.slu_exec == "mask":
            raise E2TError("--slu-exec mask: --elementwise engine runs a gated block on its images only (gather)")
        if self.train not in trainable.MODES:
            raise E2TError(f"unknown --train '{self.train}' (known: {', '.join(trainable.MODES)})")

    def _check_types(self) -> None:
        """Every setting of its annotated type (a saved config.json may hold anything), every number
        finite; floats are stored as float, the milestones as a tuple of floats."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            kind, _, optional = f.type.partition(" | ")
            if value is None and optional:
                continue
            types, what = _TYPES[kind]
            listed = isinstance(value, (tuple, list))
            items = list(value) if kind == "tuple" and listed else [value]
            if (kind == "tuple" and not listed) or any(
                    not isinstance(v, types) or isinstance(v, bool) != (kind == "bool") for v in items):
                raise E2TError(f"{flag(f.name)} must be {what}, got {_shown(value)}")
            if kind in ("float", "tuple"):
                if not all(_finite(v) for v in items):
                    raise E2TError(f"{flag(f.name)} must be finite, got {_shown(value)}")
                floats = tuple(float(v) for v in items)
                object.__setattr__(self, f.name, floats if kind == "tuple" else floats[0])

    def _check_sign_update(self, who: str) -> None:
        """The limits of the integer sign update (contract/numerics.py UpdateConstants.from_floats) at
        every learning rate of the schedule, checked before the run rather than at its first step."""
        if not self.weight_decay < 0.5:
            raise E2TError(f"--weight-decay {self.weight_decay}: {who}'s integer update needs weight decay < 0.5")
        bad = [r for r in self.rates() if not 0 < r < 0.5]
        if bad:
            raise E2TError(f"--lr {self.lr:g}, --lr-gamma {self.lr_gamma:g}: {who}'s integer update needs "
                           f"0 < lr < 0.5 at every step, and the schedule reaches {bad[0]:g}")

    def _check_board(self, engine: bool) -> None:
        """The board exists (the energy report prices every run with it); an engine run fits its limits."""
        from contract.boards import board, check_fit
        b = board(self.board)
        if self.init is not None and not engine:
            raise E2TError(f"--init starts --backend emu or pynq from a plan; --backend {self.backend} "
                           f"starts from fresh weights (leave --init out)")
        if self.init == "":
            raise E2TError("--init needs a plan folder (e2t plan or e2t export writes one)")
        if not engine:
            return
        check_fit(b, self.batch_size, "--batch-size", self.image_size)

    def rates(self) -> list[float]:
        """The learning rates of the schedule, in order (``lr_at``'s values; inf where one overflows)."""
        try:
            return [self.lr * self.lr_gamma ** k for k in range(len(self.lr_milestones) + 1)]
        except OverflowError:
            return [math.inf]

    def psg_tiles(self) -> tuple[int, int]:
        """(output, input) channels of PSG's recompute tile: --psg-tile N x N, else the board's
        engine tile, so both backends count the same recomputed work (the signs never depend on it)."""
        if self.psg_tile is not None:
            return self.psg_tile, self.psg_tile
        from contract.boards import board
        b = board(self.board)
        return b.tile_o, b.tile_i

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["lr_milestones"] = list(self.lr_milestones)
        return d

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "TrainConfig":
        """A saved config (config.json, a checkpoint's); an error names ``source`` and the setting."""
        if not isinstance(d, dict):
            raise E2TError(f"{source}: {type(d).__name__} is not a config (a JSON object of settings)")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise E2TError(f"{source} has unknown settings: {', '.join(unknown)}")
        try:
            return cls(**d)
        except E2TError as e:
            raise E2TError(f"{source}: {e}") from None


def lr_at(cfg: TrainConfig, iteration: int, total_iterations: int) -> float:
    """Step schedule keyed on iterations: x lr_gamma at each milestone fraction of the run."""
    drops = sum(iteration >= round(m * total_iterations) for m in cfg.lr_milestones)
    return cfg.lr * cfg.lr_gamma ** drops
