"""Layer geometry of a reference model: for the operation accounting (contract/opcount.py)
and the MACs per image that ``e2t info`` prints."""
from __future__ import annotations

import re

import torch
from torch import nn

from contract.opcount import LayerGeom

_RESIDUAL = re.compile(r"^blocks\.(\d+)\.conv[12]$")
_SHORTCUT = re.compile(r"^blocks\.\d+\.downsample\.0$")


def role_of(name: str) -> tuple[str, int | None]:
    """(role, gated block index) of a conv/linear layer, from its module name."""
    m = _RESIDUAL.match(name)
    if m:
        return "residual", int(m.group(1))
    if _SHORTCUT.match(name):
        return "shortcut", None
    if name == "conv1":
        return "stem", None
    if name == "fc":
        return "classifier", None
    return "gate", None


def layer_geometry(model: nn.Module, in_channels: int, size: int = 32) -> list[LayerGeom]:
    """Every conv and linear layer in execution order, from one forward pass on zeros."""
    found: dict[str, LayerGeom] = {}
    hooks = []
    for name, mod in model.named_modules():
        if not isinstance(mod, (nn.Conv2d, nn.Linear)):
            continue

        def hook(m, inputs, out, name=name):
            x = inputs[0]
            role, block = role_of(name)
            if isinstance(m, nn.Linear):
                geom = LayerGeom(name, role, m.in_features, m.out_features, 1, 1, 1, 1, 1, block)
            else:
                geom = LayerGeom(name, role, m.in_channels, m.out_channels, m.kernel_size[0],
                                 x.shape[2], x.shape[3], out.shape[2], out.shape[3], block)
            found.setdefault(name, geom)
        hooks.append(mod.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(2, in_channels, size, size))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return list(found.values())


def count_macs(model: nn.Module, in_channels: int, size: int = 32) -> dict[str, int]:
    """Multiply-accumulates per image of one forward pass, per conv/linear layer, in order."""
    return {g.name: g.macs_per_sample() for g in layer_geometry(model, in_channels, size)}
