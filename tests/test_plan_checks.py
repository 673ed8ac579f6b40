"""Issue 21, the plan's side: loading refuses, with the field named, every plan the trainer
cannot run exactly as written; JSON nested past Python's recursion, and numbers no layer
computes with in weights.bin, are one-line errors; the plan states its preprocessing."""
import copy
import json

import numpy as np
import pytest

from contract.errors import E2TError
from contract.runs import RunDir
from e2t.cli import main
from host.data.datasets import load_dataset, normalize, preprocess
from host.plan import planbuild, schema as pm, weightsfile

DEEP = "[" * 100_000 + "]" * 100_000  # valid JSON that json.loads cannot parse with Python's recursion


@pytest.fixture(scope="module")
def r8():
    """resnet8 with SLU gates for the digits: (plan, weights.bin, arrays)."""
    return planbuild.from_model("resnet8", 1, 10, 32, "pynq-z2", 16, seed=2, slu=True, dataset="digits")


def _op(d, name):
    return next(i for i, op in enumerate(d["ops"]) if op["name"] == name)


def _param(d, name):
    return next(i for i, e in enumerate(d["params"]) if e["name"] == name)


def _buffer(d, name):
    return next(e for e in d["ddr"]["buffers"] if e["name"] == name)


def _gate_block(d):
    d["ops"][_op(d, "gate.0")]["block"] = 5


def _rename_momentum(d):
    e = d["params"][_param(d, "fc.weight.momentum_buffer")]
    e["name"] = "bn1.running_mean.momentum_buffer"
    e["shape"], e["bytes"] = [16], 64


def _op_after_loss(d):
    d["ops"].append({"type": "relu", "name": "fc.relu", "inputs": ["fc"], "output": "fc.relu"})
    d["tensors"]["fc.relu"] = [10]


BAD = [  # (what, edit, the message after "plan.json: ")
    ("region ddr -> host", lambda d: d["params"][_param(d, "blocks.0.conv1.master")].update(region="host"),
     r"params\[\d+\]\.region: 'host' for 'blocks.0.conv1.master', which is a DDR buffer loaded from weights.bin"),
    ("region unknown", lambda d: d["params"][_param(d, "fc.bias")].update(region="flash"),
     r"params\[\d+\]\.region: 'flash' is not one of ddr, host"),
    ("init runtime", lambda d: _buffer(d, "conv1.wgt").update(init="runtime"),
     r"ddr.buffers\[0\]\.init: 'runtime' for a wgt buffer: wgt, wshift, master, mom come from weights.bin"),
    ("init unknown", lambda d: _buffer(d, "conv1.act").update(init="zeros"),
     r"ddr.buffers\[\d+\]\.init: 'zeros' is not one of weights.bin, runtime"),
    ("buffer role", lambda d: _buffer(d, "shared.grad").update(role="out"),
     r"ddr.buffers\[\d+\]\.format: 'grad' is not 'out', the format of a out buffer"),
    ("gate without block", lambda d: d["ops"][_op(d, "gate.0")].pop("block"), r"ops\[12\]\.block: missing"),
    ("two gates, one block", lambda d: d["ops"][_op(d, "gate.1")].update(block=1),
     r"ops\[25\]\.block: block 1 has a gate already"),
    ("gate block not its convs'", _gate_block, r"ops\[15\]\.block: 1 is not block 5, which gate 0 decides"),
    ("gates differ", lambda d: d["ops"][_op(d, "gate.1")]["params"].update(proj_bias="fc.bias"),
     r"ops\[25\]: its hidden size or params differ from gate 0's: the gates share one LSTM"),
    ("no loss", lambda d: d["ops"].pop(), r"ops: the last op is not a loss"),
    ("loss not last", _op_after_loss, r"ops\[38\]: the loss is not the last op"),
    ("duplicate name", lambda d: d["ops"][2].update(name="bn1"), r"ops\[2\]\.name: 'bn1' names an earlier op too"),
    ("conv named unlike its buffers", lambda d: d["ops"][0].update(name="stem"),
     r"ops\[0\]\.buffers\.wgt: 'conv1.wgt' is not 'stem.wgt': each conv has its own wgt buffer"),
    ("two convs, one master", lambda d: d["ops"][_op(d, "blocks.0.conv2")]["buffers"].update(
        master="blocks.0.conv1.master"),
     r"ops\[6\]\.buffers\.master: 'blocks.0.conv1.master' is not 'blocks.0.conv2.master'"),
    ("out buffer is a master", lambda d: d["ops"][0]["buffers"].update(out="blocks.1.conv1.master"),
     r"ops\[0\]\.buffers\.out: 'blocks.1.conv1.master' is a master buffer"),
    ("reshaped shared buffer", lambda d: _buffer(d, "shared.out").update(shape=[512, 512]),
     r"ops\[0\]\.buffers\.out: 'shared.out' has shape \[512, 512\]: the shared out buffer is one-dimensional"),
    ("momentum -inf", lambda d: d["ops"][1].update(momentum=float("-inf")),
     r"ops\[1\]\.momentum: -inf is not a finite number"),
    ("momentum 2", lambda d: d["ops"][1].update(momentum=2), r"ops\[1\]\.momentum: 2 is not in \[0, 1\]"),
    ("eps huge int", lambda d: d["ops"][1].update(eps=10 ** 400), r"ops\[1\]\.eps: \d+ is not a finite number"),
    ("version true", lambda d: d.update(version=True), r"version: plan schema version True is not supported"),
    ("missing momentum buffer", lambda d: d["params"].pop(_param(d, "fc.weight.momentum_buffer")),
     r"params: 'fc.weight.momentum_buffer' is missing: the SGD step of 'fc.weight' needs it"),
    ("momentum of a running mean", _rename_momentum,
     r"params\[\d+\]: 'bn1.running_mean.momentum_buffer' is a host array that no op uses"),
    ("two BNs, one weight", lambda d: d["ops"][_op(d, "blocks.0.bn2")]["params"].update(weight="blocks.0.bn1.weight"),
     r"ops\[7\]\.params\.weight: 'blocks.0.bn1.weight' is already the weight of a batchnorm"),
    ("input_grad off mid-network", lambda d: d["ops"][3].update(input_grad=False),
     r"ops\[3\]\.input_grad: False is not true"),
    ("a BN of two inputs", lambda d: d["ops"][1]["inputs"].append("x"), r"ops\[1\]\.inputs: a batchnorm takes 1 input"),
    ("mix without gate", lambda d: d["ops"][_op(d, "blocks.1.bn2.add.relu.mix")].pop("gate"),
     r"ops\[22\]\.gate: missing: a mix picks per image by its gate"),
    ("gated tensor unmixed", lambda d: d["ops"][23].update(inputs=["blocks.1.bn2.add.relu"]),
     r"ops\[23\]\.inputs: tensor 'blocks.1.bn2.add.relu' holds only the images gate 0 runs: a mix must join it"),
    ("weights elsewhere", lambda d: d["weights"].update(file="../../w.bin"),
     r"weights\.file: '../../w.bin' is not one of weights.bin"),
    ("crc32 text", lambda d: d["params"][0].update(crc32="abc"), r"params\[0\]\.crc32: 'abc' is not a CRC-32"),
    ("preprocess of 3 channels", lambda d: d["network"].update(preprocess=dict(
        preprocess(load_dataset("digits")), mean=[0.1, 0.2, 0.3])),
     r"network.preprocess.mean: \[0.1, 0.2, 0.3\] is not a list of 1 numbers"),
]


@pytest.mark.parametrize("what, edit, message", BAD, ids=[b[0] for b in BAD])
def test_the_loader_refuses_what_the_trainer_cannot_run_as_written(r8, what, edit, message):
    data = copy.deepcopy(r8[0].data)
    pm.Plan(copy.deepcopy(data))  # the plan as built passes
    edit(data)
    with pytest.raises(E2TError, match="^plan.json: " + message):
        pm.Plan(data)


def _saved(r8, folder, edit=None, arrays=None):
    """The plan saved in ``folder`` after ``edit`` (of plan.json's object) or with ``arrays``
    changed and weights.bin packed again: its checksums are right."""
    data = copy.deepcopy(r8[0].data)
    named = {**r8[2], **(arrays or {})}
    weights = weightsfile.pack(data["params"], named)
    data["weights"] = weightsfile.describe(weights)
    if edit:
        edit(data)
    folder.mkdir()
    (folder / "plan.json").write_text(json.dumps(data))
    (folder / "weights.bin").write_bytes(weights)
    return str(folder)


def _one_line(capsys, pattern):
    import re
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("e2t: error: "), err
    assert re.search(pattern, err), err


TRAIN = ["train", "--backend", "emu", "--precision", "fixed", "--dataset", "digits", "--quiet"]


@pytest.mark.parametrize("what, edit, arrays, message", [
    ("two convs, one master", lambda d: d["ops"][6]["buffers"].update(master="blocks.0.conv1.master"), None,
     r"plan.json: ops\[6\]\.buffers\.master: 'blocks.0.conv1.master' is not 'blocks.0.conv2.master'"),
    ("NaN weight", None, {"bn1.weight": np.full(16, np.nan, np.float32)},
     r"weights.bin: 'bn1.weight' holds NaN: no layer computes with it \(nothing was loaded\)"),
    ("infinite weight", None, {"fc.weight": np.full((10, 64), np.inf, np.float32)},
     r"weights.bin: 'fc.weight' holds an infinite value"),
    ("negative running variance", None, {"blocks.2.bn1.running_var": -np.ones(64, np.float32)},
     r"weights.bin: 'blocks.2.bn1.running_var' holds a negative running variance \(-1\)"),
    ("weight shift past 31", None, {"conv1.wshift": np.full(16, 40, np.int8)},
     r"weights.bin: 'conv1.wshift' holds a weight shift outside \[0, 31\]"),
])
def test_train_init_refuses_a_bad_plan_with_one_line_and_writes_nothing(r8, tmp_path, capsys, what, edit, arrays,
                                                                      message):
    src = _saved(r8, tmp_path / "plan", edit, arrays)
    out = tmp_path / "run"
    assert main(TRAIN + ["--init", src, "--out", str(out)]) == 2
    _one_line(capsys, message)
    assert not out.exists()


def test_deeply_nested_plan_json_is_one_line(r8, tmp_path, capsys):
    src = _saved(r8, tmp_path / "plan")
    (tmp_path / "plan" / "plan.json").write_text(DEEP)
    message = r"plan.json: cannot read it as a JSON plan \(nested too deeply"
    assert main(TRAIN + ["--init", src, "--out", str(tmp_path / "run")]) == 2
    _one_line(capsys, message)
    assert main(["export", src, "--out", str(tmp_path / "back"), "--quiet"]) == 2
    _one_line(capsys, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan"]


def test_deeply_nested_config_and_metrics_are_one_line_errors(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(DEEP)
    (run / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(E2TError, match="config.json is corrupt \\(nested too deeply"):
        RunDir(str(run), "").load_config()
    assert main(["train", "--resume", "--out", str(run)]) == 2
    _one_line(capsys, r"config.json is corrupt \(nested too deeply")
    assert main(["energy", "report", str(run)]) == 2
    _one_line(capsys, r"cannot read the run's records \(nested too deeply")
    (run / "config.json").write_text("{}")
    (run / "metrics.jsonl").write_text(DEEP + "\n")
    assert main(["energy", "report", str(run)]) == 2
    _one_line(capsys, r"cannot read the run's records \(nested too deeply")
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "metrics.jsonl"]


def test_preprocess_states_what_normalize_does():
    ds = load_dataset("digits")
    pre = preprocess(ds)
    assert (pre["channel_order"], pre["layout"], pre["height"], pre["width"]) == ("gray", "NCHW", 32, 32)
    x = ds.test_x[:8]
    mean, std = (np.asarray(pre[k], np.float32).reshape(1, -1, 1, 1) for k in ("mean", "std"))
    by_hand = (x.astype(np.float32) / np.float32(pre["divisor"]) - mean) / std
    assert np.array_equal(by_hand, normalize(ds, x))


def test_the_engine_trainer_s_plan_states_its_preprocessing(tmp_path):
    from host.train.config import TrainConfig
    from host.train.trainer import EngineTrainer
    cfg = TrainConfig(model="resnet8", dataset="digits", backend="emu", precision="fixed", batch_size=16, epochs=1)
    t = EngineTrainer(cfg, str(tmp_path / "run"), progress=False, log=lambda m: None)
    t.save_plan()
    assert pm.load(str(tmp_path / "run")).network["preprocess"] == preprocess(t.ds)
