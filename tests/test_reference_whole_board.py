"""The reference trainer's steps counted as the board runs them (issue 23): each kept step's host
work is hostwork.step_work's on the images each gate let through (which the on-engine trainer's
walk records), each conv's cycles contract/cycles.py's for its shapes, OpCounter's counts
unchanged; so its records price whole-board."""
import pytest

from contract import cycles
from contract.errors import E2TError
from contract.opcount import OpCounter, Precision
from energy import wholeboard
from host.plan import planbuild
from host.train.config import TrainConfig
from host.train.hostwork import step_work, update_work
from host.train.trainer import EngineTrainer
from reference.boardcount import BoardCounter
from reference.geometry import layer_geometry
from reference.models import build_model
from reference.train import Trainer

N = 8  # images per step


def _cfg(**kw):
    return TrainConfig(**{**dict(model="resnet8", dataset="digits", epochs=1, batch_size=N, lr=0.05, seed=1), **kw})


def _one_step(trainer_class, cfg, tmp_path):
    t = trainer_class(cfg, str(tmp_path / "run"), progress=False, log=lambda m: None)
    t.iters_per_epoch = 1  # one kept step
    return t, t.train_epoch()


def _gated(record) -> dict:
    """Gate index -> the images it let through in a one-step record."""
    return {j: round(f * N) for j, f in enumerate(record["block_executed"][1:])}


def _without_cycles(per_layer: dict) -> dict:
    return {name: {ph: {k: v for k, v in slot.items() if k != "cycles"} for ph, slot in per.items()}
            for name, per in per_layer.items()}


def test_step_work_with_every_gate_on_is_its_default():
    plan = planbuild.from_model("resnet8", 1, 10, 32, "pynq-z2", N, slu=True)[0]
    assert step_work(plan, N, executed={0: N, 1: N}) == step_work(plan) == step_work(plan, executed={})
    assert step_work(plan, executed={0: 3}) != step_work(plan)


@pytest.mark.parametrize("gate_init", [0.5, 0.02])  # some images through each gate; none through one
def test_step_work_on_each_gate_s_images_is_what_the_engine_walk_records(tmp_path, gate_init):
    t, r = _one_step(EngineTrainer, _cfg(backend="emu", precision="fixed", psg=True, slu_target=0.5,
                                         slu_gate_init=gate_init), tmp_path)
    executed = _gated(r)
    assert all(0 < k < N for k in executed.values()) if gate_init == 0.5 else 0 in executed.values()
    assert r["ops"]["host"] == step_work(t.plan, N, psg=True, executed=executed)


def test_a_reference_step_is_counted_as_the_board_runs_it(tmp_path):
    t, r = _one_step(Trainer, _cfg(precision="fp32"), tmp_path)
    plan, ops = t.counter.plan, r["ops"]
    assert wholeboard.missing([r]) is None
    assert ops["host"] == step_work(plan, N, psg=False)
    for op in plan.convs():  # the fixed-point engine's cycles, a full weight gradient (no PSG)
        want = cycles.phase_cycles(cycles.conv_shape(op, N), plan.board, psg=False, input_grad=op["input_grad"])
        assert {ph: slot["cycles"] for ph, slot in ops["per_layer"][op["name"]].items()} == want
    assert all("cycles" not in slot for slot in ops["per_layer"]["fc"].values())  # the host's linear op
    plain = OpCounter(layer_geometry(t.model, t.ds.in_channels), Precision("fp32"))
    plain.add_iteration(N)
    assert _without_cycles(ops["per_layer"]) == plain.per_layer


def test_a_reference_slu_step_counts_each_gated_op_on_its_images(tmp_path):
    t, r = _one_step(Trainer, _cfg(precision="fp32", slu_target=0.5, slu_gate_init=0.5), tmp_path)
    plan, executed = t.counter.plan, _gated(r)
    assert any(0 < k < N for k in executed.values())
    assert r["ops"]["host"] == step_work(plan, N, psg=False, executed=executed)
    for op in plan.convs():
        n, slot = executed.get(op.get("gate"), N), r["ops"]["per_layer"][op["name"]]
        if n:
            assert slot["fwd"]["cycles"] == cycles.conv_fwd(cycles.conv_shape(op, n), plan.board)
        else:  # a block no image ran: its convs' UPDATE only
            assert list(slot) == ["update"]


def _counter(psg: bool) -> BoardCounter:
    plan = planbuild.from_model("resnet8", 1, 10, 32, "pynq-z2", N)[0]
    return BoardCounter(layer_geometry(build_model("resnet8", 10, 1), 1), Precision("fixed", psg), plan)


def test_a_coasted_step_counts_the_update_only_and_a_dropped_one_nothing():
    c = _counter(psg=True)
    c.add_iteration(N, kept=False)
    assert not any(c.record()["host"]["per_layer"].values())
    c.add_iteration(N, kept=False, coast=True)
    host = c.record()["host"]["per_layer"]
    assert {name: per["update"] for name, per in host.items() if per} == update_work(c.plan)
    assert all(list(per) == ["update"] for per in host.values() if per)
    for op in c.plan.convs():
        assert c.per_layer[op["name"]]["update"]["cycles"] == cycles.update(op["c_out"] * op["c_in"] * op["k"] ** 2,
                                                                             c.plan.board)


def test_psg_cycles_recompute_the_tiles_the_reference_counted():
    c, name = _counter(psg=True), "blocks.2.conv2"  # 64 x 64 channels
    op = next(o for o in c.plan.convs() if o["name"] == name)
    s = cycles.conv_shape(op, N)
    board_tiles = cycles.tiles(s, c.plan.board)
    c.add_iteration(N, psg_stats={name: {"tiles": board_tiles, "tiles_recomputed": 3}})
    c.add_iteration(N, psg_stats={name: {"tiles": 4 * board_tiles, "tiles_recomputed": 5}})  # a tile 1/2 the board's
    got = c.per_layer[name]["bwd_w_pred"]["cycles"]
    assert got == cycles.conv_wgrad(s, c.plan.board, True, 3) + cycles.conv_wgrad(s, c.plan.board, True, 2)
    assert "cycles" not in c.per_layer[name]["bwd_w_full"]  # the recompute's cycles are the call's


def test_a_plan_of_another_model_is_refused():
    plan = planbuild.from_model("resnet20", 1, 10, 32, "pynq-z2", N)[0]
    with pytest.raises(E2TError, match="does not match the model's layers"):
        BoardCounter(layer_geometry(build_model("resnet8", 10, 1), 1), Precision("fp32"), plan)
