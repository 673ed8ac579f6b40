"""What trains (issue 25): ``--train-from`` freezes the layers below a block (or all but the
classifier), ``--train bn`` trains only BatchNorms and the classifier. Counted at the emulated
overlay: a frozen conv makes no CONV_WGRAD and no UPDATE, and no CONV_BWD_DATA runs below the
lowest trained layer; frozen weights, BN parameters and momentum stay bit-identical; the op counts
are the calls made, and the plan's estimate (hostwork.step_work) and the reference's counter
count the same. Bad names are refused in one line. (The step-for-step agreement with the
reference trainer with frozen layers: tests/test_engine_training.py.)"""
import json
from collections import Counter

import numpy as np
import pytest

from contract.errors import E2TError
from contract.opcount import LayerGeom, Precision, layer_ops
from e2t.cli import main
from host.train.config import TrainConfig
from host.train.hostwork import step_work
from host.train.trainable import Trainable
from host.train.trainer import EngineTrainer

N = 8  # images per step
STEM = ["conv1", "blocks.0.conv1", "blocks.0.conv2"]
BLOCK1 = ["blocks.1.downsample.0", "blocks.1.conv1", "blocks.1.conv2"]
BLOCK2 = ["blocks.2.downsample.0", "blocks.2.conv1", "blocks.2.conv2"]
CALLS = {"CONV_FWD": "fwd", "CONV_BWD_DATA": "bwd_data", "CONV_WGRAD": "bwd_w_pred", "UPDATE": "update"}


def _cfg(**kw):
    return TrainConfig(**{**dict(backend="emu", model="resnet8", dataset="digits", epochs=1, batch_size=N,
                                 precision="fixed", psg=True, lr=0.05), **kw})


def _one_logged_step(cfg, tmp_path):
    """One kept step; (trainer, record, engine calls by (kind, layer), arrays before, arrays after)."""
    t = EngineTrainer(cfg, str(tmp_path / "run"), progress=False, log=lambda m: None)
    t.iters_per_epoch = 1
    calls, start = Counter(), t.session.ip.start

    def logged(what, regs, addresses, **kw):  # "CONV_WGRAD of layer blocks.1.conv1"
        kind, _, layer = what.partition(" of layer ")
        calls[kind, layer] += 1
        return start(what, regs, addresses, **kw)
    t.session.ip.start = logged
    before = {**t.session.arrays(), **{k: v.copy() for k, v in t.params.items()}}
    r = t.train_epoch()
    after = {**t.session.arrays(), **t.params}
    assert sum(calls.values()) == t.overlay.e2t_engine_0.calls  # every call the overlay ran is logged
    return t, r, calls, before, after


# (settings, convs with CONV_WGRAD and UPDATE, convs with CONV_BWD_DATA), by hand from resnet8's graph
CASES = {
    "blocks.1": (dict(train_from="blocks.1"), BLOCK1 + BLOCK2, ["blocks.1.conv2"] + BLOCK2),
    "head": (dict(train_from="head"), [], []),
    "bn": (dict(train="bn"), [], STEM[1:] + BLOCK1 + BLOCK2),
    "slu+blocks.2": (dict(train_from="blocks.2", slu_target=0.5, slu_gate_init=0.95),
                     ["gate.embeds.1"] + BLOCK2, ["blocks.2.conv2"]),
}


@pytest.mark.parametrize("case", CASES)
def test_frozen_layers_make_no_weight_gradient_update_or_backward_below_the_line(tmp_path, case):
    """Engine calls counted at the overlay: CONV_WGRAD and UPDATE exactly for the trained convs,
    CONV_BWD_DATA only down to the lowest trained layer (its input made by frozen layers gets
    none; with --train bn down to the lowest BatchNorm). Frozen convs' weights, master and momentum
    and frozen BatchNorms' scale, shift and momentum are bit-identical after the step; their
    running statistics update (training mode, as PyTorch's). Below the line the SLU gate decides
    without gradient: its 1x1 conv is frozen, the LSTM trains through the gate above it."""
    settings, trained, backward = CASES[case]
    t, r, calls, before, after = _one_logged_step(_cfg(**settings), tmp_path)
    convs = [op["name"] for op in t.plan.convs()]
    assert {layer for (kind, layer) in calls if kind == "CONV_FWD"} == set(convs)
    for kind, want in (("CONV_WGRAD", trained), ("UPDATE", trained), ("CONV_BWD_DATA", backward)):
        assert sorted(layer for (k, layer) in calls if k == kind) == sorted(want), kind
    assert all(n == 1 for (kind, _), n in calls.items() if kind != "CONV_FWD")

    for name in convs:
        same = [np.array_equal(before[f"{name}.{a}"], after[f"{name}.{a}"]) for a in ("wgt", "wshift", "master", "mom")]
        assert all(same) if name not in trained else not same[3], name  # trained: its momentum moved
    for op in t.plan.ops:
        if op["type"] != "batchnorm":
            continue
        p = op["params"]
        moved = [not np.array_equal(before[k], after[k])
                 for k in (p["weight"], p["bias"], p["weight"] + ".momentum_buffer", p["bias"] + ".momentum_buffer")]
        assert all(moved) if t.trainable.trains(op) else not any(moved), op["name"]
        assert not np.array_equal(before[p["running_mean"]], after[p["running_mean"]]), op["name"]
    if "slu_target" in settings:
        assert not np.array_equal(before["gate.proj.weight"], after["gate.proj.weight"])

    # the op counts are the calls made, and the plan's estimate (hostwork.step_work) counts the same
    per = r["ops"]["per_layer"]
    for name in convs:  # PSG's recomputed tiles: bwd_w_full beside the CONV_WGRAD call's bwd_w_pred
        got, want = set(per.get(name, {})), {CALLS[k] for (k, layer) in calls if layer == name}
        assert got - {"bwd_w_full"} == want and ("bwd_w_full" not in got or "bwd_w_pred" in want), name
    assert r["engine"].get("ops_conv_wgrad", 0) == r["engine"].get("ops_update", 0) == len(trained)
    assert r["engine"].get("ops_conv_bwd_data", 0) == len(backward)
    executed = {j: round(f * N) for j, f in enumerate(r.get("block_executed", [])[1:])}
    assert r["ops"]["host"] == step_work(t.plan, N, psg=True, executed=executed, trainable=t.trainable)
    assert step_work(t.plan, N, psg=True, executed=executed)["total"]["all"]["bytes"] > \
        r["ops"]["host"]["total"]["all"]["bytes"]  # the frozen layers' host backward and SGD are gone


def test_the_reference_s_counter_skips_what_a_frozen_layer_does_not_run():
    g = LayerGeom("blocks.1.conv1", "residual", 16, 32, 3, 8, 8, 4, 4, block=1)
    p = Precision("fixed", psg=True)
    assert sorted(layer_ops(g, N, p)) == ["bwd_data", "bwd_w_full", "bwd_w_pred", "fwd", "update"]
    frozen = LayerGeom(**{**g.__dict__, "trains": False, "input_grad": False})
    assert sorted(layer_ops(frozen, N, p)) == ["fwd"] and layer_ops(frozen, 0, p) == {}
    bn_only = LayerGeom(**{**g.__dict__, "trains": False})  # --train bn: the gradient passes through
    assert layer_ops(bn_only, N, p)["bwd_data"] == layer_ops(g, N, p)["bwd_data"] and len(layer_ops(bn_only, N, p)) == 2


def test_the_line_is_a_block_or_the_head_and_gates_go_with_their_blocks():
    from host.plan import planbuild
    ops = planbuild.resnet_ops("resnet8", 1, 10, 8, slu=True)[0]
    every = Trainable(ops)
    assert every.trained == {op["name"] for op in ops if op["type"] in ("conv", "batchnorm", "linear", "gate")}
    assert every.frozen_gates == 0 and all(every.wants(op["output"]) for op in ops)
    head = Trainable(ops, "fc")
    assert head.trained == {"fc"} and head.params == {"fc.weight", "fc.bias"} and head.frozen_gates == 2
    b2 = Trainable(ops, "blocks.2")
    assert {"gate.1", "gate.embeds.1"} <= b2.trained and not {"gate.0", "gate.embeds.0"} & b2.trained
    assert "gate.lstm.weight_hh_l0" in b2.params and not b2.carries(next(op for op in ops if op["name"] == "gate.1"))
    bn = Trainable(ops, None, "bn")
    assert not {op["name"] for op in ops if op["type"] == "conv" and op["role"] != "gate"} & bn.trained
    assert "bn1.weight" in bn.params and not bn.wants("x") and not bn.wants("conv1") and bn.wants("bn1")


@pytest.mark.parametrize("kw,match", [
    (dict(train_from="blocks.3"), "unknown --train-from 'blocks.3' (known: blocks.0, blocks.1, blocks.2, fc (or head))"),
    (dict(train_from="layer4"), "unknown --train-from 'layer4' (known: blocks.0, blocks.1, blocks.2, fc (or head))"),
    (dict(train_from="blocks.01"), "unknown --train-from 'blocks.01'"),
    (dict(train="weights"), "unknown --train 'weights' (known: all, bn)"),
])
def test_bad_names_are_refused_in_one_line(kw, match):
    with pytest.raises(E2TError) as e:
        _cfg(**kw)
    assert match in str(e.value) and "\n" not in str(e.value)


def test_the_choice_is_saved_and_checked_before_any_work(tmp_path, capsys):
    cfg = _cfg(train_from="head", train="bn")
    assert cfg.train_from == "fc" and TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert TrainConfig.from_dict({k: v for k, v in cfg.to_dict().items() if k not in ("train_from", "train")}) == \
        _cfg()  # a run saved before these settings trains everything
    flags = ["train", "--backend", "emu", "--model", "resnet20", "--dataset", "digits", "--quiet"]
    assert main([*flags, "--train-from", "blocks.9", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown --train-from 'blocks.9' (known: blocks.0, blocks.1, " in err and "\n" not in err
    assert not (tmp_path / "bad").exists()
    EngineTrainer(_cfg(train_from="blocks.1"), str(tmp_path / "run"), progress=False, log=lambda m: None)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train_from"] == "blocks.1"
    assert main(["train", "--resume", "--out", str(tmp_path / "run"), "--train-from", "blocks.2"]) == 2
    assert "--train-from blocks.2 differs from the run's saved blocks.1" in capsys.readouterr().err
    from e2t.cli import build_parser, resume_config
    saved = _cfg(train_from="fc").to_dict()  # "head" is stored as "fc": giving it again on --resume is the same
    args = build_parser().parse_args(["train", "--resume", "--out", str(tmp_path / "run"), "--train-from", "head"])
    assert resume_config(args, saved).train_from == "fc"
