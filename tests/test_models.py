import pytest
import torch

from contract.errors import E2TError
from reference.geometry import count_macs
from reference.models import build_model, count_params

# (params, MACs per 3x32x32 image) for option-B CIFAR ResNets with 10 classes.
KNOWN = {
    "resnet20": (0.27e6, 40.8e6),
    "resnet74": (1.15e6, 168.2e6),
    "resnet110": (1.73e6, 253.1e6),
}


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_params_and_macs_match_known_values(name):
    params, macs = KNOWN[name]
    model = build_model(name, 10, 3)
    assert abs(count_params(model) - params) / params < 0.01
    assert abs(sum(count_macs(model, 3).values()) - macs) / macs < 0.005


def test_resnet20_layer_structure():
    model = build_model("resnet20", 10, 1)
    assert len(model.blocks) == 9
    projections = [i for i, b in enumerate(model.blocks) if b.downsample is not None]
    assert projections == [3, 6]  # first block of stages 2 and 3 (option B)
    macs = count_macs(model, 1)
    assert macs["conv1"] == 16 * 32 * 32 * 1 * 9
    assert macs["blocks.3.downsample.0"] == 32 * 16 * 16 * 16
    assert macs["fc"] == 64 * 10


def test_any_channels_and_classes():
    model = build_model("resnet8", 100, 1)
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 100)


def test_skipped_residual_keeps_projection():
    block = build_model("resnet8", 10, 3).blocks[1]  # stride 2, 16 -> 32
    x = torch.randn(2, 16, 32, 32)
    assert block.shortcut(x).shape == block.residual(x).shape == (2, 32, 16, 16)


def test_unknown_model():
    with pytest.raises(E2TError, match="unknown model 'resnet19'"):
        build_model("resnet19", 10, 3)
