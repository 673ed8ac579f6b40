"""e2t estimate --elementwise engine: contract v2's STATS and APPLY calls of a step from its plan
(host/train/elementwise.py) are the calls a one-step run of the on-engine trainer makes and
records (frozen layers and SLU gates too), the estimate counts them with the convs' and the host's
work from the v2 op table, and the command prints them; without the flag nothing changes."""
import pytest

from contract import cycles, opcount, regmap
from e2t.cli import main
from energy import model as energy_model, steptime
from hls import estimate as est
from host.data.datasets import shape_of
from host.plan import planbuild
from host.train import intops
from host.train.config import TrainConfig
from host.train.elementwise import elementwise_calls, elementwise_counts
from host.train.hostwork import step_work
from host.train.trainable import Trainable
from host.train.trainer import EngineTrainer

N = 16


def _one_step(tmp_path, **kw):
    cfg = TrainConfig(**{**dict(backend="emu", model="resnet8", dataset="digits", epochs=1, batch_size=N,
                                precision="fixed", lr=0.05, elementwise="engine", psg=True), **kw})
    t = EngineTrainer(cfg, str(tmp_path / "run"), progress=False, log=lambda m: None)
    t.iters_per_epoch = 1
    return t, t.train_epoch()


def test_the_calls_of_resnet20():
    """Forward: each BatchNorm's STATS (SQUARE), each ReLU's APPLY (ReLU, int8 out; the block's
    second takes the shortcut: an int8 activation, or a projection's int32 output); backward: each
    ReLU's APPLY (mask, int32 out, two gradients aligned where the activation has two consumers),
    each BatchNorm's STATS (PRODUCT) and APPLY (int16 out). A projection's BatchNorm: STATS forward,
    STATS and APPLY backward."""
    r = regmap.load()
    plan = planbuild.from_model("resnet20", 3, 10, 32, "pynq-z2", 128, 0, False, None, "cifar10")[0]
    every = elementwise_calls(plan)
    calls = [k for k in every if k["phase"] != "update"]
    by = {}
    for k in calls:
        by.setdefault(k["layer"], []).append((k["phase"], k["op"], k["mode"]))
    assert len(calls) == 21 * 3 + 19 * 2 and len(by) == 21 + 19
    assert every[:len(calls)] == calls and len(every) == len(calls) + 4 * len(plan.convs())
    tail = [("bwd_data", "stats", 1), ("bwd_data", "apply", r.apply_mode("int32", out_bits=16))]
    assert by["bn1"] == [("fwd", "stats", 0)] + tail and by["blocks.3.downsample.1"] == by["bn1"]
    assert by["bn1.relu"] == [("fwd", "apply", r.apply_mode(relu=True)),
                              ("bwd_data", "apply", r.apply_mode("int32", mask=True, out_bits=32))]
    assert by["blocks.1.bn2.add.relu"][0] == ("fwd", "apply", r.apply_mode("int8", relu=True))
    assert by["blocks.3.bn2.add.relu"][0] == ("fwd", "apply", r.apply_mode("int32", relu=True))
    assert by["blocks.3.bn1.relu"][1] == ("bwd_data", "apply", r.apply_mode(mask=True, out_bits=32))
    assert by["blocks.8.bn2.add.relu"][1] == ("bwd_data", "apply", r.apply_mode(mask=True, out_bits=32))  # the pool's
    stem = next(k for k in calls if k["layer"] == "bn1.relu")
    assert stem["shape"] == (128, 16, 32, 32) and stem["macs"] == 128 * 16 * 32 * 32 and stem["width"] == "int32x24"
    assert [k["layer"] for k in calls[:3]] == ["bn1", "bn1.relu", "blocks.0.bn1"]  # in the order they run
    assert calls[-2:] == [dict(calls[-2], layer="bn1", op="stats"), dict(calls[-1], layer="bn1", op="apply")]


def test_the_weights_refresh_calls():
    """The update: per trained conv, in plan order, STATS of the master's rows (the widest plane that
    holds a row) and APPLY to the int8 weights, then the two bound passes over them as [O][C][k][k]."""
    r = regmap.load()
    plan = planbuild.from_model("resnet20", 3, 10, 32, "pynq-z2", 128, 0, False, None, "cifar10")[0]
    update = [k for k in elementwise_calls(plan) if k["phase"] == "update"]
    assert [k["layer"] for k in update[::4]] == [op["name"] for op in plan.convs()]
    by = {k["layer"]: [] for k in update}
    for k in update:
        by[k["layer"]].append((k["op"], k["mode"], k["shape"], k["src2"]))
    bound = ("apply", r.apply_mode("int8", relu=True), (64, 64, 3, 3), "int8")
    assert by["blocks.8.conv2"] == [("stats", 0, (1, 64, 18, 32), "none"), ("apply", r.apply_mode(), (1, 64, 18, 32), "none"),
                                    bound, bound]
    assert by["conv1"][0][2] == (1, 16, 1, 27) and by["conv1"][2][2] == (16, 3, 3, 3)
    assert by["blocks.6.downsample.0"][0][2] == (1, 64, 1, 32) and by["blocks.6.downsample.0"][3][2] == (64, 32, 1, 1)
    frozen = elementwise_calls(plan, trainable=Trainable(plan.ops, "blocks.8"))
    assert {k["layer"] for k in frozen if k["phase"] == "update"} == {"blocks.8.conv1", "blocks.8.conv2"}


@pytest.mark.parametrize("kw", [{}, {"train_from": "blocks.1"}, {"train_from": "blocks.2", "train": "bn"},
                                {"slu_target": 0.5, "psg_tau": 0.0}, {"slu_target": 0.5, "slu_gate_init": 0.02},
                                {"slu_target": 0.5, "slu_gate_init": 0.02, "train_from": "blocks.2"}])
def test_a_one_step_run_records_what_the_estimate_counts(tmp_path, kw):
    """The run's engine counts of its BatchNorm, ReLU and mix layers (MACs by width, bytes, cycles,
    by phase) are elementwise_calls' of its plan, with what trains and each gate's images (some
    blocks no image took), its calls as many; the estimate's host is the run's."""
    t, r = _one_step(tmp_path, **kw)
    executed = {op["index"]: round(r["block_executed"][op["index"] + 1] * N) for op in t.plan.ops
                if op["type"] == "gate"}
    assert 0 in executed.values() or "slu_gate_init" not in kw
    calls = elementwise_calls(t.plan, N, t.trainable, executed)
    mine, got = elementwise_counts(calls), r["ops"]["per_layer"]
    for op in filter(t.trainable.trains, t.plan.convs()):  # its update slot: UPDATE's counts and the refresh's
        count = op["c_out"] * op["c_in"] * op["k"] ** 2
        update = {"macs": {"int32": 3 * count}, "bytes": 17.0 * count, "cycles": cycles.update(count, t.plan.board)}
        refresh = mine.pop(op["name"])["update"]
        assert got[op["name"]]["update"] == {"macs": {**update["macs"], **refresh["macs"]},
                                             "bytes": update["bytes"] + refresh["bytes"],
                                             "cycles": update["cycles"] + refresh["cycles"]}, op["name"]
    assert mine == {name: got[name] for name in got if name in mine} and mine
    assert all(op["type"] == "conv" for op in t.plan.ops if op["name"] in got and op["name"] not in mine)
    assert r["engine"]["ops_stats"] + r["engine"]["ops_apply"] == len(calls)
    if not kw:
        e = est.estimate(t.plan, elementwise="engine")
        assert {name: e["per_layer"][name] for name in mine} == mine
        for op in t.plan.convs():  # UPDATE's signs are int8 in both (the engine's sgn port)
            assert e["per_layer"][op["name"]]["update"] == got[op["name"]]["update"], op["name"]
        assert e["elementwise"] == {"calls": len(calls), "cycles": sum(k["cycles"] for k in calls),
                                    "macs": sum(k["macs"] for k in calls)}
        assert r["ops"]["host"] == step_work(t.plan, N, table=intops.INT_OPS)
        em = energy_model.load(t.plan.board.name)
        assert e["whole_board"]["time"]["host_s"] == pytest.approx(
            sum(steptime.host_seconds(s, em.host) for per in r["ops"]["host"]["per_layer"].values()
                for s in per.values()))


def test_frozen_layers_make_fewer_calls():
    plan = planbuild.from_model("resnet8", 1, 10, 8, "pynq-z2", N, 0)[0]
    every, top = elementwise_calls(plan), elementwise_calls(plan, trainable=Trainable(plan.ops, "fc"))
    assert len(top) < len(every)
    assert [k for k in every if k["phase"] == "fwd"] == [k for k in top if k["phase"] == "fwd"]
    assert not [k for k in top if k["phase"] == "bwd_data"]  # the classifier alone: no gradient below the pool


def test_the_cli_with_and_without_the_flag(capsys):
    args = ["estimate", "--board", "pynq-z2", "--model", "resnet8", "--dataset", "digits", "--batch", str(N)]
    assert main(args) == 0
    host = capsys.readouterr().out
    assert main(args + ["--elementwise", "engine"]) == 0
    v2 = capsys.readouterr().out
    plan = planbuild.from_model("resnet8", *shape_of("digits"), "pynq-z2", N, 0, False, None, "digits")[0]
    e = est.estimate(plan, elementwise="engine")
    assert host.strip() == est.text(est.estimate(plan)) and v2.strip() == est.text(e)
    assert "contract v2 (--elementwise engine)" in v2.splitlines()[0] and "contract v2" not in host
    t = e["whole_board"]["time"]
    line = next(l for l in v2.splitlines() if l.startswith("DDR bytes per training step"))
    assert line.endswith(f"{sum(t['bytes'].values()) / 1e9:.2f} GB (engine {t['bytes']['engine'] / 1e9:.2f} GB, "
                         f"host {t['bytes']['host'] / 1e9:.2f} GB)") and "DDR bytes per training step" not in host
    engine = opcount.sum_layers(e["per_layer"])["all"]["bytes"]
    assert t["bytes"]["engine"] == engine and e["cycles_per_step"] == est.estimate(plan)["cycles_per_step"] + sum(
        k["cycles"] for k in elementwise_calls(plan))
    assert f"host share of the board step: {100 * t['host_s'] / t['seconds']:.0f} %" in v2


def test_gated_blocks_with_every_gate_on(capsys):
    """With --slu every gate is on (the host's count too): the blocks' calls on every image, each
    mix's APPLY of a projection's BatchNorm forward and its gradients joined backward."""
    plan = planbuild.from_model("resnet8", *shape_of("digits"), "pynq-z2", N, 0, True, None, "digits")[0]
    calls = elementwise_calls(plan)
    assert calls == elementwise_calls(plan, executed={0: N, 1: N})
    mixes = [(k["layer"], k["phase"], k["src2"], k["shape"][0]) for k in calls if k["layer"].endswith(".mix")]
    first = "blocks.1.bn2.add.relu.mix"  # into the next gate's pool, the next block's conv1 and its projection
    assert mixes == [(first, "fwd", "none", N), (first.replace("1", "2"), "fwd", "none", N)] + [
        (first, "bwd_data", "int32", N)] * 2
    fewer = [k for k in elementwise_calls(plan, executed={0: 0, 1: 3}) if k["phase"] != "update"]  # (every conv's refresh)
    assert {k["layer"] for k in fewer if k["layer"].startswith("blocks.1.")} == {"blocks.1.downsample.1", first}
    assert {k["shape"][0] for k in fewer if k["layer"].startswith("blocks.2.bn") and "mix" not in k["layer"]} == {3}
    assert main(["estimate", "--model", "resnet8", "--dataset", "digits", "--batch", str(N), "--slu",
                 "--elementwise", "engine"]) == 0
    assert f"STATS and APPLY: {sum(k['cycles'] for k in calls):,} in {len(calls)} calls" in capsys.readouterr().out


def test_an_unknown_place_is_refused_in_one_line(capsys):
    assert main(["estimate", "--model", "resnet8", "--dataset", "digits", "--elementwise", "fabric"]) == 2
    err = capsys.readouterr().err
    assert "unknown --elementwise 'fabric' (known: host, engine)" in err and len(err.strip().splitlines()) == 1
