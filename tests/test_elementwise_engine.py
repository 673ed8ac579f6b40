"""Training with the per-element work on the engine (``--elementwise engine``, contract v2:
host/train/intops.py): a step agrees with the float32 host path on what it computes, runs
STATS and APPLY on the engine with their cycles and MACs counted, records the host work its
plan gives, is deterministic, and refuses what it does not run yet."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from host.train import intops, walk
from host.train.config import TrainConfig
from host.train.hostwork import step_work
from host.train.trainer import EngineTrainer
from host.train.trainstep import Step

N = 16
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cfg(**kw):
    return TrainConfig(**{**dict(backend="emu", model="resnet8", dataset="digits", epochs=1, batch_size=N,
                                 precision="fixed", lr=0.05, elementwise="engine"), **kw})


def _one_step(cfg, tmp_path):
    t = EngineTrainer(cfg, str(tmp_path / "run"), progress=False, log=lambda m: None)
    t.iters_per_epoch = 1
    return t, t.train_epoch()


def _cos(a, b):
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_a_step_agrees_with_the_host_path(tmp_path):
    """The same weights and batch through both op tables: the loss, the classifier's gradient and
    the convs' full weight gradients agree up to what the two arithmetics round differently (the
    int8 activations' exponents, ReLU's mask from the int8 output, the int16 gradients'
    exponents). Per-channel sums such as BatchNorm's bias gradient cancel and differ more."""
    t = EngineTrainer(_cfg(psg=False), str(tmp_path / "run"), progress=False, log=lambda m: None)
    from host.data.datasets import normalize
    x, y = normalize(t.ds, t.ds.train_x[:N].astype(np.float32)), t.ds.train_y[:N]
    got = {}
    for name, table in (("host", walk.TABLE), ("engine", intops.INT_OPS)):
        params = {k: v.copy() for k, v in t.params.items()}
        step = Step(t.plan, t.session, params, None, None, np.random.default_rng(0), table=table)
        loss = step.forward(x, y)[0]
        step.backward()
        t.session.wait()
        got[name] = (loss, step.grads, {op["name"]: np.array(t.session.wgrad_result(op)) for op in t.plan.convs()})
    (l0, g0, w0), (l1, g1, w1) = got["host"], got["engine"]
    assert abs(l0 - l1) < 0.02 * abs(l0)
    assert set(g0) == set(g1)
    assert _cos(g0["fc.weight"], g1["fc.weight"]) > 0.98 and _cos(g0["fc.bias"], g1["fc.bias"]) > 0.98
    assert np.mean([_cos(g0[k], g1[k]) for k in g0 if k.endswith("weight")]) > 0.9
    assert min(_cos(w0[k], w1[k]) for k in w0) > 0.7 and np.mean([_cos(w0[k], w1[k]) for k in w0]) > 0.8


@pytest.mark.parametrize("psg", [True, False])
def test_a_step_runs_stats_and_apply_and_records_its_plans_host_work(tmp_path, psg):
    t, r = _one_step(_cfg(psg=psg), tmp_path)
    counts = r["engine"]
    bns = sum(op["type"] == "batchnorm" for op in t.plan.ops)
    relus = sum(op["type"] == "relu" for op in t.plan.ops)
    convs = len(t.plan.convs())  # each conv's weights refreshed: one STATS and three APPLY calls
    assert counts["ops_stats"] == 2 * bns + convs  # forward SQUARE and backward PRODUCT of each BatchNorm
    assert counts["ops_apply"] == 2 * relus + bns + 3 * convs  # each ReLU forward and backward, each BatchNorm's backward
    total = r["ops"]["total"]
    assert total["fwd"]["macs"]["int18x18"] > 0 and total["bwd_data"]["macs"]["int32x24"] > 0
    elementwise = [op["name"] for op in t.plan.ops if op["type"] in ("batchnorm", "relu")]
    assert all(slot["cycles"] > 0 for name in elementwise for slot in r["ops"]["per_layer"][name].values())
    got = r["ops"]["host"]
    assert got == step_work(t.plan, N, psg=psg, table=intops.INT_OPS)
    host_v1 = step_work(t.plan, N, psg=psg)
    assert got["total"]["all"]["bytes"] < 0.2 * host_v1["total"]["all"]["bytes"]


def test_slu_gated_blocks_run_on_their_images_and_count_what_the_plan_gives(tmp_path):
    t, r = _one_step(_cfg(slu_target=0.5, psg=True, psg_tau=0.0), tmp_path)
    gates = [op for op in t.plan.ops if op["type"] == "gate"]
    assert gates and 0 <= r["executed_fraction"] <= 1
    executed = {op["index"]: int(round(r["block_executed"][op["index"] + 1] * N)) for op in gates}
    got = r["ops"]["host"]
    assert got == step_work(t.plan, N, psg=True, executed=executed, table=intops.INT_OPS)
    mixes = [op["name"] for op in t.plan.ops if op["type"] == "mix"]
    assert all("fwd" in got["per_layer"][m] for m in mixes)


def test_training_is_deterministic_and_learns(tmp_path):
    cfg = _cfg(epochs=4, batch_size=32, psg=True, psg_tau=0.0, smd=0.5)  # the host path: 56 % after 4 epochs
    acc, arrays = [], []
    for i in range(2):
        t = EngineTrainer(cfg, str(tmp_path / f"run{i}"), progress=False, log=lambda m: None)
        for _ in range(cfg.epochs):
            t.train_epoch()
        acc.append(t.evaluate()["test_acc"])
        arrays.append({**t.session.arrays(), **t.params})
    assert acc[0] == acc[1] and acc[0] > 0.45
    for k in arrays[0]:
        np.testing.assert_array_equal(arrays[0][k], arrays[1][k])


def _e2t(*args):
    return subprocess.run([sys.executable, "-c", "import sys; from e2t.cli import main; sys.exit(main(sys.argv[1:]))",
                           *args], capture_output=True, text=True, cwd=ROOT)


@pytest.mark.parametrize("flags, message", [
    (["--backend", "torch"], "--elementwise engine runs on the engine"),
    (["--backend", "emu", "--elementwise", "fabric"], "unknown --elementwise 'fabric'"),
])
def test_what_it_does_not_run_is_refused_in_one_line(tmp_path, flags, message):
    args = ["train", "--model", "resnet8", "--dataset", "digits", "--epochs", "1", "--out", str(tmp_path / "r")]
    if "--elementwise" not in flags:
        args += ["--elementwise", "engine"]
    done = _e2t(*args, *flags)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "r").exists()


def test_a_run_prices_the_new_ops_in_its_energy_report(tmp_path):
    out = tmp_path / "r"
    done = _e2t("train", "--model", "resnet8", "--dataset", "digits", "--backend", "emu", "--epochs", "1",
                "--batch-size", "32", "--elementwise", "engine", "--out", str(out), "--quiet")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "int18x18" in done.stdout and "int32x24" in done.stdout and "for the whole board" in done.stdout
    summary = json.loads((out / "energy" / "energy.json").read_text())
    assert summary["total_j"] > 0 and (out / "energy" / "report.html").exists()
    config = json.loads((out / "config.json").read_text())
    assert config["elementwise"] == "engine"
