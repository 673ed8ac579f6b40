"""CIFAR ResNets (He et al. 2016): 3 stages of BasicBlocks with 16/32/64 channels.

ResNet-N has (N - 2) / 6 blocks per stage. Shortcuts that change shape are option-B
projections (1x1 conv, stride 2, + BN), as in E2-Train. Every conv is built by a
``conv`` factory so that later layers (quantized, PSG) slot in without a rewrite.
``GatedResNet`` adds the SLU gates (reference/slu.py) to the same backbone.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn
import torch.nn.functional as F

from contract.errors import E2TError
from contract.models import MODELS

from .geometry import count_macs
from .hostexact import fanout
from .slu import RecurrentGate, decide, gated_block, gathered_block, global_avgpool

WIDTHS = (16, 32, 64)


def conv3x3(conv, c_in: int, c_out: int, stride: int = 1) -> nn.Module:
    """A bias-free 3x3 convolution with padding 1 from the ``conv`` factory."""
    return conv(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus shortcut, then ReLU.

    ``residual`` and ``shortcut`` are separate so that a gate can skip the residual
    branch while the projection shortcut still runs.
    """

    def __init__(self, c_in: int, c_out: int, stride: int, conv=nn.Conv2d):
        super().__init__()
        self.conv1 = conv3x3(conv, c_in, c_out, stride)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = conv3x3(conv, c_out, c_out)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                conv(c_in, c_out, kernel_size=1, stride=stride, padding=0, bias=False),
                nn.BatchNorm2d(c_out),
            )

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.downsample is None else self.downsample(x)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))

    def branches(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(block output, shortcut output): the two results an SLU gate chooses between."""
        short = self.shortcut(x)
        return F.relu(self.residual(x) + short), short

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.branches(x)[0]


def he_init(module: nn.Module) -> None:
    """He init for convs (fan_out), BN to identity; other layers keep PyTorch's defaults."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class CifarResNet(nn.Module):
    """Stem conv (16 ch), 3 stages of ``blocks_per_stage`` BasicBlocks, avgpool, linear.
    ``contract_v2``: reference/intnet.py's forward where set (``--elementwise engine``)."""

    contract_v2 = None

    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 3, conv=nn.Conv2d):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise E2TError(f"ResNet depth {depth} is not 6n+2 >= 8 (known: {', '.join(MODELS)})")
        self.depth = depth
        n = (depth - 2) // 6
        self.conv1 = conv3x3(conv, in_channels, WIDTHS[0])
        self.bn1 = nn.BatchNorm2d(WIDTHS[0])
        blocks, c_in = [], WIDTHS[0]
        for stage, width in enumerate(WIDTHS):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(c_in, width, stride, conv))
                c_in = width
        self.blocks = nn.ModuleList(blocks)
        self.fc = nn.Linear(WIDTHS[-1], num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-initialise every layer (``he_init``)."""
        he_init(self)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn1(self.conv1(x)))

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(global_avgpool(x), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.contract_v2 is not None:
            return self.contract_v2(self, x)
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


class GatedResNet(CifarResNet):
    """A CifarResNet whose blocks after the first are gated per sample (SLU).

    The backbone is built and initialised exactly as the plain model's (same seed, same
    weights); the gates come after it. Each forward pass leaves ``gate_masks`` (gates, batch),
    the straight-through decisions for the cost loss, and ``last_gates`` (blocks, batch), the
    detached decisions with 1 for the always-run first block: block i ran on
    ``last_gates[i].sum()`` samples.
    """

    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 3, conv=nn.Conv2d,
                 gate_init: float | None = None):
        super().__init__(depth, num_classes, in_channels, conv)
        self.gate = RecurrentGate([b.bn2.num_features for b in self.blocks[:-1]], conv)
        he_init(self.gate)
        if gate_init is not None:
            self.gate.start_open(gate_init)
        self.gate_masks = self.last_gates = None
        self.gather_rng = None  # a numpy Generator: train as the engine does (gathered blocks, its gate draws)
        self.frozen_gates = 0  # the first gates, below --train-from's line: they decide, without gradient

    @property
    def num_gates(self) -> int:
        return len(self.blocks) - 1

    def forward(self, x: torch.Tensor, gates: str | None = None) -> torch.Tensor:
        """``gates``: ``sampled`` or ``deterministic``; by default sampled in training, else deterministic."""
        if self.contract_v2 is not None:
            return self.contract_v2(self, x, gates)
        mode = gates or ("sampled" if self.training else "deterministic")
        gather = self.gather_rng is not None and self.training  # the engine's SLU (slu_exec gather)
        x = self.blocks[0](self.stem(x))
        state, masks = None, []
        for j, block in enumerate(self.blocks[1:]):
            # gathered, x has three uses whose gradients are summed in float64, as the engine's
            x_gate, x_res, x_short = fanout(x, 3) if gather else (x, x, x)
            with torch.no_grad() if j < self.frozen_gates else contextlib.nullcontext():
                p, state = self.gate(j, x_gate, state)  # frozen: no gradient to its decision or the state
            masks.append(decide(p, mode, self.gather_rng if gather else None))
            x = gathered_block(block, x_res, x_short, masks[-1]) if gather else gated_block(block, x, masks[-1])
        self.gate_masks = torch.stack(masks)
        self.last_gates = torch.cat([torch.ones_like(self.gate_masks[:1]), self.gate_masks]).detach()
        return self.head(x)


def build_model(name: str, num_classes: int, in_channels: int, conv=nn.Conv2d, slu: bool = False,
                gate_init: float | None = None) -> CifarResNet:
    """``resnet20`` etc. -> a freshly initialised model (seed torch before calling); ``slu`` adds
    gates, started open with probability ``gate_init`` when given."""
    if name not in MODELS:
        raise E2TError(f"unknown model '{name}' (known: {', '.join(MODELS)})")
    depth = int(name[len("resnet"):])
    if slu:
        return GatedResNet(depth, num_classes, in_channels, conv, gate_init)
    return CifarResNet(depth, num_classes, in_channels, conv)


def count_params(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def describe(name: str, num_classes: int, in_channels: int, size: int) -> str:
    """One line on a model: parameters and MACs per image (`e2t info`, through its entry point)."""
    for flag, value, what in (("--num-classes", num_classes, "the classifier's outputs"),
                              ("--in-channels", in_channels, "the input's channels"),
                              ("--size", size, "the input's height and width in pixels")):
        if value < 1:
            raise E2TError(f"{flag} {value}: {what} must be at least 1")
    model = build_model(name, num_classes, in_channels)
    macs = count_macs(model, in_channels, size)
    return (f"{name}: {count_params(model):,} parameters, {sum(macs.values()) / 1e6:.2f} M MACs "
            f"per {in_channels}x{size}x{size} image ({len(macs)} conv/linear layers)")


def residual_macs(model: CifarResNet, in_channels: int, size: int = 32) -> list[int]:
    """MACs per image of each block's residual branch: what skipping the block saves."""
    macs = count_macs(model, in_channels, size)
    return [macs[f"blocks.{i}.conv1"] + macs[f"blocks.{i}.conv2"] for i in range(len(model.blocks))]
