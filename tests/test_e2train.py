"""Full E2-Train in the reference trainer: PSG layers, integer update, op counts, resume."""
import pytest

from contract.errors import E2TError
from contract.opcount import total_macs
from host.train.config import TrainConfig
from reference.quant import QConv2d
from reference.train import Trainer

from conftest import assert_same_state, interrupted_and_resumed

E2T = dict(model="resnet8", dataset="digits", batch_size=128, epochs=2, lr=0.05, seed=4, smd=0.5,
           slu_target=0.6, slu_beta=1e-3, precision="fixed", psg=True, psg_ratio=0.05)


def test_e2train_resumes_bit_exactly_and_counts_ops(tmp_path, monkeypatch):
    records, resumed, a, b = interrupted_and_resumed(TrainConfig(**E2T), tmp_path, monkeypatch)
    assert_same_state(a, b)
    assert resumed[1]["ops"] == records[1]["ops"]
    r = records[1]
    assert 0 < r["psg_predicted_fraction"] < 1
    assert r["saturations"]["update"] == 0
    ops = r["ops"]
    assert ops["iterations"]["kept"] == r["kept_iterations"] and ops["iterations"]["dropped"] == r["dropped_iterations"]
    assert {"int8x8", "int16x8", "int4x16", "int8x16", "int32", "fp32"} <= set(ops["total"]["all"]["macs"])
    assert r["macs"] == total_macs(ops["total"])
    # the predictor runs on every weight, the full gradient only on recomputed tiles
    assert ops["total"]["bwd_w_full"]["macs"]["int8x16"] <= ops["total"]["bwd_w_pred"]["macs"]["int4x16"]
    assert any(k.endswith("w_master") for k in a["model"])


def test_psg_layers_and_float_parameters_are_split(tmp_path):
    trainer = Trainer(TrainConfig(**dict(E2T, epochs=1)), str(tmp_path / "r"), progress=False, log=lambda m: None)
    convs = [m for m in trainer.model.modules() if isinstance(m, QConv2d)]
    assert convs and all(m.mode == "psg" for m in convs)
    assert len(trainer.psg.layers) == len(convs)  # stem, block convs, projections, gate 1x1 convs
    signed = {id(p) for p in trainer.psg.parameters()}
    in_sgd = {id(p) for g in trainer.opt.param_groups for p in g["params"]}
    assert not signed & in_sgd and signed | in_sgd == {id(p) for p in trainer.model.parameters()}


@pytest.mark.parametrize("kwargs,match", [
    ({"psg": True}, "add --precision fixed"),
    ({"precision": "int4"}, "unknown --precision"),
    ({"psg": True, "precision": "fixed", "lr": 0.5}, "lr < 0.5"),
    ({"predictive_forward": True}, "--predictive-forward is part of PSG"),
    ({"psg": True, "precision": "fixed", "psg_ratio": 2.0}, "--psg-ratio"),
])
def test_bad_psg_settings(kwargs, match):
    with pytest.raises(E2TError, match=match):
        TrainConfig(**kwargs)


def test_fixed_precision_without_psg_trains(tmp_path):
    cfg = TrainConfig(**dict(E2T, epochs=1, psg=False, psg_ratio=None, smd=0.0, slu_target=None))
    r = Trainer(cfg, str(tmp_path / "r"), progress=False, log=lambda m: None).fit()[-1]
    assert r["ops"]["total"]["fwd"]["macs"].keys() == {"int8x8", "fp32"}
    assert "int4x16" not in r["ops"]["total"]["all"]["macs"] and r["train_loss"] < 2.4
