"""--init as a fine-tuning start (issue 25): the accuracy it starts from (epoch 0), fine-tuning's
learning rate, a new classifier head for another class count and SLU gates added to a gateless
plan, the convs keeping their trained weights; the run's plan and its back-export carry both."""
import json
import math
import shutil

import numpy as np
import pytest

from contract.errors import E2TError
from e2t.cli import build_parser, config_from_args, main
from host.data.datasets import load_dataset
from host.plan import finetune, planbuild, schema as pm, weightsfile
from host.train.config import FINETUNE_LR, TrainConfig
from host.train.trainer import EngineTrainer

from conftest import kill_in_epoch_2
from test_cli import one_line_error

CONV = ("master", "mom", "wgt", "wshift")


def _digits_npz(path, classes):
    """scikit-learn's digits of ``classes`` (labels 0..k-1) as a --dataset folder .npz."""
    d = load_dataset("digits")
    x, y = np.concatenate([d.train_x, d.test_x])[:, 0], np.concatenate([d.train_y, d.test_y])
    keep = np.isin(y, classes)
    np.savez(path, x=x[keep], y=np.searchsorted(classes, y[keep]))
    return str(path)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A resnet8 trained by the reference on the ten digits at 8 x 8 (3 epochs, about 20 % on
    them: enough for features that transfer) and exported (ONNX -> plan); the data sets."""
    import torch

    from reference import export as rx
    from reference.train import Trainer
    root = tmp_path_factory.mktemp("finetune")
    ten, four = _digits_npz(root / "ten.npz", np.arange(10)), _digits_npz(root / "four.npz", np.arange(4, 8))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a small network on a shared machine: one thread is many times faster
    try:
        cfg = TrainConfig(model="resnet8", dataset="folder", image_size=8, epochs=3, batch_size=64, lr=0.1,
                          lr_milestones=(0.99,))
        Trainer(cfg, str(root / "ref"), data_dir=ten, progress=False, log=lambda m: None).fit()
    finally:
        torch.set_num_threads(threads)
    rx.export_checkpoint(str(root / "ref"), "pynq-z2", str(root / "plan"), 32, ten, lambda m: None)
    return root, str(root / "plan"), ten, four


def _cfg(init, **kw):
    return TrainConfig(**{**dict(backend="emu", model="resnet8", dataset="folder", image_size=8, epochs=1,
                                 batch_size=32, lr=FINETUNE_LR, init=init), **kw})


@pytest.fixture(scope="module")
def finetuned(exported):
    """The exported 10-class plan fine-tuned for one epoch on 4 other-labelled classes, with SLU
    gates added: (run folder, its records, its log)."""
    root, plan, _, four = exported
    log = []
    cfg = _cfg(plan, slu_target=0.6, slu_beta=1e-3, slu_band=0.05)
    records = EngineTrainer(cfg, str(root / "run"), data_dir=four, progress=False, log=log.append).fit()
    return str(root / "run"), records, log


def test_a_new_head_fine_tunes_from_an_exported_plan_above_chance(finetuned):
    """The acceptance test. 4 classes: a network that learned nothing scores about 1/4 (a constant
    answer: its class's share, about 25 %; a guess: 25 % +- 3.6 % on the 144 test images), and the
    fresh head starts there or below. After one epoch at fine-tuning's default lr the test accuracy
    is at least 50 %: chance + 25 points, 7 standard deviations above it (measured: 85 %)."""
    run, records, log = finetuned
    assert [r["epoch"] for r in records] == [1]
    assert "--init: new head, 10 -> 4 classes; the convs keep their trained weights" in log
    assert any(line.startswith("--init: SLU gates added to the gateless plan, started open (p 0.95") for line in log)
    start = next(i for i, line in enumerate(log) if line.startswith("epoch 0: "))
    assert log[start] == f"epoch 0: test acc {100 * records[0]['init_test_acc']:.2f} % (the --init network, " \
                         f"before training)" and log[start + 1].startswith("epoch 1: ")
    assert records[0]["init_test_acc"] <= 0.5 and records[0]["test_acc"] >= 0.5
    plan = pm.load(run)  # the run's plan carries the new head and the gates
    arrays = weightsfile.read(run, plan)
    assert (plan.network["num_classes"], plan.network["gates"]) == (4, 2) and arrays["fc.weight"].shape == (4, 64)


def test_the_run_s_plan_exports_back_with_its_head_and_gates(finetuned, exported, tmp_path):
    from reference import from_plan
    from reference.train import decode_checkpoint
    run, records, _ = finetuned
    figures = from_plan.export_plan(run, str(tmp_path / "back"), exported[3], lambda m: None)
    assert figures["onnx_acc"] == figures["host_acc"] == records[-1]["test_acc"]
    state = decode_checkpoint((tmp_path / "back" / "checkpoint.pt").read_bytes(), "checkpoint.pt")
    assert tuple(state["model"]["fc.weight"].shape) == (4, 64) and "gate.proj.bias" in state["model"]


@pytest.mark.parametrize("source", ["e2t plan", "engine run", "e2t export"])
def test_every_conv_and_batchnorm_keeps_its_arrays(source, exported, finetuned, tmp_path, capsys):
    """Plans of e2t plan, of an engine run (save_plan) and of e2t export name their arrays alike:
    adapted to another class count (and gates where it has none), every conv keeps its integers and
    exponents, every BatchNorm its parameters, statistics and momentum; the head and gates are fresh."""
    if source == "e2t plan":
        assert main(["plan", "--model", "resnet8", "--dataset", "digits", "--batch", "8",
                     "--out", str(tmp_path / "p")]) == 0
        folder = str(tmp_path / "p")
    else:
        folder = finetuned[0] if source == "engine run" else exported[1]
    init = pm.load(folder)
    arrays = weightsfile.read(folder, init)
    k, add = 3 if init.network["num_classes"] != 3 else 5, not init.network["gates"]
    plan, got = finetune.adapt(init, arrays, k, add, 0.95, 7, "folder", "--init x")
    before = {op["name"]: op for op in init.convs()}
    for op in plan.convs():
        if op["name"] in before:
            assert (op["w_exp"], op["wq_exp"]) == (before[op["name"]]["w_exp"], before[op["name"]]["wq_exp"])
            for key in CONV:
                assert np.array_equal(got[f"{op['name']}.{key}"], arrays[f"{op['name']}.{key}"]), op["name"]
        else:
            assert add and op["role"] == "gate"
    assert len(before) == len(plan.convs()) - (2 if add else 0)
    for name in [n for n in arrays if not n.startswith("fc.")]:
        assert np.array_equal(got[name], arrays[name]), name
    assert got["fc.weight"].shape == (k, 64) and plan.network["num_classes"] == k
    if add:
        p = 1 / (1 + math.exp(-float(got["gate.proj.bias"][0])))
        assert plan.network["gates"] == 2 and abs(p - 0.95) < 1e-6


def test_gates_added_to_a_gateless_plan_start_open(exported):
    """--slu-target on an exported plan without gates (the same classes: no new head): the engine's
    arrays are the plan's, every test image runs every block, so the accuracy it starts from is the
    gateless network's."""
    _, plan, ten, _ = exported
    arrays = weightsfile.read(plan, pm.load(plan))
    kw = dict(progress=False, log=lambda m: None, data_dir=ten)
    root = exported[0]
    gated = EngineTrainer(_cfg(plan, slu_target=0.6), str(root / "g"), **kw)
    plain = EngineTrainer(_cfg(plan), str(root / "p"), **kw)
    assert gated.plan.network["gates"] == 2 and not plain.plan.network["gates"]
    engine = gated.session.arrays()
    for op in plain.plan.convs():
        for key in CONV:
            assert np.array_equal(engine[f"{op['name']}.{key}"], arrays[f"{op['name']}.{key}"])
    assert all(np.array_equal(gated.params[n], arrays[n]) for n in plain.params)
    a, b = gated.evaluate(), plain.evaluate()
    assert a["test_executed_fraction"] == 1.0 and a["test_acc"] == b["test_acc"]


def test_the_fine_tuning_lr_is_the_default_only_with_a_trained_init_and_no_lr(exported, tmp_path, capsys):
    plan = exported[1]
    planbuild.save(str(tmp_path / "fresh"), *planbuild.from_model("resnet8", 1, 10, 32, "pynq-z2", 32)[:2])
    base = ["train", "--backend", "emu", "--dataset", "digits", "--out", str(tmp_path / "run")]
    note = f"--init: lr {FINETUNE_LR:g} for fine-tuning (give --lr to choose)"
    for extra, lr, said in ((["--init", plan], FINETUNE_LR, True), (["--init", plan, "--lr", "0.01"], 0.01, False),
                            (["--init", plan, "--preset", "e2train"], FINETUNE_LR, True),
                            (["--init", str(tmp_path / "fresh")], TrainConfig.lr, False), ([], TrainConfig.lr, False)):
        notes = []
        cfg = config_from_args(build_parser().parse_args(base + extra), notes)
        assert cfg.lr == lr and cfg.to_dict()["lr"] == lr  # config.json records it: --resume is exact
        assert notes == ([note] if said else []), extra
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert f"{FINETUNE_LR} with --init of a trained plan" in " ".join(capsys.readouterr().out.split())


def test_a_resumed_run_does_not_evaluate_the_start_again(tmp_path, monkeypatch):
    """Killed in epoch 2 and resumed: epoch 1's record holds the start, the resumed run neither
    evaluates it again nor writes it twice."""
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).integers(0, 256, (30, 8, 8), dtype=np.uint8),
             y=np.arange(30) % 3)
    planbuild.save(str(tmp_path / "p"), *planbuild.from_model("resnet8", 1, 3, 8, "pynq-z2", 8)[:2])
    cfg = _cfg(str(tmp_path / "p"), epochs=2, batch_size=8)
    log = []
    real = kill_in_epoch_2(EngineTrainer, monkeypatch)
    kw = dict(data_dir=str(tmp_path / "d.npz"), progress=False, log=log.append)
    with pytest.raises(KeyboardInterrupt):
        EngineTrainer(cfg, str(tmp_path / "run"), **kw).fit()
    assert sum(line.startswith("epoch 0: ") for line in log) == 1
    monkeypatch.setattr(EngineTrainer, "train_epoch", real)
    monkeypatch.setattr(EngineTrainer, "start_accuracy", lambda self: pytest.fail("evaluated the start again"))
    records = EngineTrainer(cfg, str(tmp_path / "run"), resume=True, **kw).fit()
    assert [r["epoch"] for r in records] == [1, 2]
    assert 0 <= records[0]["init_test_acc"] <= 1 and "init_test_acc" not in records[1]


def _edited(src, dst, **network):
    shutil.copytree(src, dst)
    data = json.loads((dst / "plan.json").read_text())
    data["network"].update(network)
    (dst / "plan.json").write_text(json.dumps(data))
    return str(dst)


def test_what_cannot_fine_tune_is_one_line_and_writes_nothing(exported, tmp_path, capsys):
    """Other image sizes and channels stay refused; a network that from_model does not build
    cannot take a new head or gates."""
    _, plan, ten, four = exported
    run = tmp_path / "run"
    argv = ["train", "--backend", "emu", "--dataset", "folder", "--data-dir", four, "--batch-size", "32",
            "--out", str(run)]
    one_line_error(capsys, argv + ["--init", plan, "--size", "16"],
                   "the plan takes images of 8 x 8 pixels, folder's are 16 x 16")
    one_line_error(capsys, argv + ["--init", plan, "--size", "8", "--channels", "3"],
                   "the plan takes 1-channel images, folder's are 3-channel")
    other = _edited(exported[0] / "plan", tmp_path / "onnx", model="onnx-9conv")
    one_line_error(capsys, argv + ["--init", other, "--size", "8"],
                   "a new head or added gates need a plan of one of e2t's ResNets (resnet8, resnet20, resnet38, "
                   "resnet74, resnet110) on square images; this one is a onnx-9conv on 8 x 8 images")
    wrong = _edited(exported[0] / "plan", tmp_path / "r20", model="resnet20")
    err = one_line_error(capsys, argv + ["--init", wrong, "--size", "8"],
                         "the plan is not a resnet20 as e2t builds it (")
    assert err.endswith("; a new head or added gates need one")
    assert not run.exists()
    with pytest.raises(E2TError, match="the plan is not a resnet20"):  # with gates added too, same classes
        EngineTrainer(_cfg(wrong, model="resnet20", slu_target=0.6), str(run), data_dir=ten, progress=False)
    assert not run.exists()
