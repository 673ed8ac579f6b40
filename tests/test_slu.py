"""SLU, selective layer update: the recurrent gate, straight-through decisions, cost loss, training."""
import json
import math
import os

import pytest
import torch
import torch.nn.functional as F

from contract.errors import E2TError
from e2t.cli import main
from host.train.config import TrainConfig
from host.train.schedule import cost_sign
from reference.models import CifarResNet, GatedResNet, build_model, residual_macs
from reference.slu import cost_loss, cost_weights, decide, gated_block, straight_through
from reference.train import Trainer

from conftest import assert_same_state, interrupted_and_resumed
from test_train import final_state

TINY = dict(model="resnet8", dataset="digits", batch_size=64, epochs=2, lr=0.05, seed=3)


def constant_gates(model: GatedResNet, p: float) -> None:
    """Make every gate output probability ``p`` whatever its input."""
    with torch.no_grad():
        model.gate.proj.weight.zero_()
        model.gate.proj.bias.fill_(math.log(p / (1 - p)))


def test_straight_through_passes_the_gradient_of_m_to_p():
    torch.manual_seed(0)
    p, u, a = torch.rand(1000, requires_grad=True), torch.rand(1000), torch.randn(1000)
    m = straight_through(p, u)
    assert torch.equal(m, (p > u).float())  # exactly 0 or 1 in the forward pass
    (m * a).sum().backward()
    assert torch.equal(p.grad, a)


def test_deterministic_gates_use_p_above_one_half():
    p = torch.tensor([0.2, 0.5, 0.51, 0.9])
    assert decide(p, "deterministic").tolist() == [0.0, 0.0, 1.0, 1.0]
    model = build_model("resnet8", 10, 1, slu=True).eval()
    x = torch.randn(64, 1, 32, 32)
    for p, expected in ((0.6, 1.0), (0.4, 0.0)):
        constant_gates(model, p)
        model(x)
        assert torch.all(model.last_gates[1:] == expected)
    torch.manual_seed(0)
    model(x, gates="sampled")
    assert 0.25 < model.last_gates[1:].mean().item() < 0.55  # sampled at p = 0.4


@pytest.mark.parametrize("name,blocks", [("resnet8", 3), ("resnet20", 9), ("resnet110", 54)])
def test_one_gate_per_block_after_the_first(name, blocks):
    model = build_model(name, 10, 3, slu=True)
    assert len(model.blocks) == blocks
    assert model.num_gates == len(model.gate.embeds) == blocks - 1
    assert sum(isinstance(m, torch.nn.LSTM) for m in model.modules()) == 1  # one LSTM shared by all gates


def test_first_block_always_runs_and_skipped_blocks_are_their_shortcuts():
    model = build_model("resnet8", 10, 1, slu=True).eval()
    constant_gates(model, 0.01)
    x = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        logits = model(x)
        assert model.last_gates.shape == (3, 4)
        assert model.last_gates[0].tolist() == [1.0] * 4 and not model.last_gates[1:].any()
        h = model.blocks[0](model.stem(x))
        for block in model.blocks[1:]:
            h = block.shortcut(h)
        assert torch.equal(logits, model.head(h))


def test_gated_downsampling_block_mixes_per_sample():
    block = build_model("resnet8", 10, 3, slu=True).blocks[1]  # stride 2, 16 -> 32: projection shortcut
    x = torch.randn(2, 16, 32, 32)
    with torch.no_grad():
        out = gated_block(block, x, torch.tensor([1.0, 0.0]))
        assert torch.equal(out[0], block(x)[0])
        assert torch.equal(out[1], block.shortcut(x)[1])


def test_gate_learns_through_the_task_loss():
    model = build_model("resnet8", 10, 1, slu=True).train()
    torch.manual_seed(1)
    F.cross_entropy(model(torch.randn(8, 1, 32, 32)), torch.arange(8)).backward()
    for name in ("gate.embeds.0.weight", "gate.lstm.weight_ih_l0", "gate.proj.weight"):
        assert model.get_parameter(name).grad.abs().sum() > 0, name


def test_gates_can_start_open():
    torch.manual_seed(0)
    closed_ish = build_model("resnet20", 10, 1, slu=True)
    torch.manual_seed(0)
    opened = build_model("resnet20", 10, 1, slu=True, gate_init=0.95)
    x = torch.randn(64, 1, 32, 32)
    torch.manual_seed(1)
    closed_ish(x)
    torch.manual_seed(1)
    opened(x)
    assert opened.gate_masks.mean() > 0.85 > closed_ish.gate_masks.mean()
    assert torch.equal(opened.conv1.weight, closed_ish.conv1.weight)  # the backbone is untouched


def test_cost_loss_sign_flips_at_the_target():
    assert cost_sign(0.6, 0.6) == -1.0 and cost_sign(0.59, 0.6) == -1.0 and cost_sign(0.61, 0.6) == 1.0
    # with a band the sign ramps through 0 at the target and saturates at target +- band
    assert [cost_sign(f, 0.6, band=0.05) for f in (0.5, 0.55, 0.575, 0.6, 0.625, 0.65, 0.9)] == \
        pytest.approx([-1.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.0])
    masks = torch.ones(2, 5, requires_grad=True)
    weights = torch.tensor([1.0, 3.0])
    for sign in (-1.0, 1.0):
        masks.grad = None
        loss = cost_loss(masks, weights, sign, beta=1e-5)
        loss.backward()
        assert loss.item() == pytest.approx(sign * 1e-5 * 20)
        assert torch.allclose(masks.grad, sign * 1e-5 * weights[:, None].expand(2, 5))


def test_cost_weights():
    model = build_model("resnet20", 10, 3)
    macs = residual_macs(model, 3)[1:]
    w = cost_weights(macs, "macs")
    assert w.mean().item() == pytest.approx(1.0)
    assert torch.allclose(w / w[0], torch.tensor(macs, dtype=torch.float) / macs[0])
    assert w[2] < w[0]  # blocks.3 downsamples: its residual branch is cheaper
    assert torch.equal(cost_weights(macs, "uniform"), torch.ones(8))


def test_no_target_is_the_plain_model(tmp_path):
    trainer = Trainer(TrainConfig(**TINY), str(tmp_path / "run"), progress=False, log=lambda m: None)
    torch.manual_seed(TINY["seed"])
    plain = build_model("resnet8", 10, 1).state_dict()
    torch.manual_seed(TINY["seed"])
    gated = build_model("resnet8", 10, 1, slu=True).state_dict()
    assert type(trainer.model) is CifarResNet and trainer.model.state_dict().keys() == plain.keys()
    assert all(torch.equal(v, plain[k]) for k, v in trainer.model.state_dict().items())
    assert all(torch.equal(v, plain[k]) for k, v in gated.items() if not k.startswith("gate."))  # same backbone


@pytest.mark.parametrize("kwargs,match", [
    ({"slu_target": 0.0}, "--slu-target"),
    ({"slu_target": 1.5}, "--slu-target"),
    ({"slu_beta": -1.0}, "--slu-beta"),
    ({"slu_band": -0.1}, "--slu-band"),
    ({"slu_band": 1.0}, "--slu-band"),
    ({"slu_weighting": "flops"}, "unknown --slu-weighting 'flops'"),
    ({"slu_gate_init": 1.0}, "--slu-gate-init"),
])
def test_bad_slu_settings(kwargs, match):
    with pytest.raises(E2TError, match=match):
        TrainConfig(**kwargs)


def test_resume_with_smd_and_slu_reaches_same_weights(tmp_path, monkeypatch):
    cfg = TrainConfig(**TINY, smd=0.5, smd_coast=True, slu_target=0.6, slu_beta=1e-3, slu_weighting="macs")
    records, resumed, a, b = interrupted_and_resumed(cfg, tmp_path, monkeypatch)
    assert [r["epoch"] for r in resumed] == [1, 2]
    assert resumed[1]["block_executed"] == records[1]["block_executed"]
    for r in records:
        assert 0 < r["dropped_iterations"] < r["kept_iterations"] + r["dropped_iterations"] == 1438 // 64
        assert 0 < r["executed_fraction"] <= 1 and len(r["block_executed"]) == 3 and r["block_executed"][0] == 1
        assert r["executed_fraction"] == pytest.approx(sum(r["block_executed"][1:]) / 2)
        for key in ("test_acc", "test_acc_sampled", "test_executed_fraction", "test_executed_fraction_sampled"):
            assert 0 <= r[key] <= 1, key

    assert_same_state(a, b)
    assert any(k.startswith("gate.") for k in a["model"])


def test_cli_flags_reach_the_run_config(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["train", "--model", "resnet8", "--dataset", "digits", "--epochs", "1", "--quiet",
                 "--smd", "0.5", "--smd-coast", "--slu-target", "0.6", "--slu-beta", "2e-5",
                 "--slu-band", "0.05", "--slu-weighting", "macs", "--slu-gate-init", "0.9", "--out", out]) == 0
    with open(os.path.join(out, "config.json")) as f:
        saved = json.load(f)
    assert (saved["smd"], saved["smd_coast"], saved["slu_target"], saved["slu_beta"], saved["slu_weighting"],
            saved["slu_gate_init"], saved["slu_band"]) == (0.5, True, 0.6, 2e-5, "macs", 0.9, 0.05)
    capsys.readouterr()
    assert main(["train", "--resume", "--out", out, "--smd", "0.25"]) == 2
    assert "--smd 0.25 differs" in capsys.readouterr().err
