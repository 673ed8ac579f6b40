"""The engine's modeled cycles in the counts (issue 23): every engine call of a run records the
cycle model's figure for its shape (contract/cycles.py), a PSG weight gradient with the tiles it
really recomputed; ``e2t estimate``'s per-layer counts carry the cycles of hls/export.py's costs."""
import itertools

import numpy as np

from contract import cycles, numerics as nx, opcount
from host.engine.emulated import EmulatedOverlay
from host.engine.session import EngineSession
from host.plan import planbuild
from host.train import trainer as trainer_mod
from host.train.config import TrainConfig

from hls import estimate as est, export

QUIET = dict(progress=False, log=lambda m: None)


def _one_step_record(tmp_path, monkeypatch, **kw):
    """The metrics record of an epoch of one training step on the emulated engine."""
    real = trainer_mod.train_batches
    monkeypatch.setattr(trainer_mod, "train_batches", lambda *a, **k: itertools.islice(real(*a, **k), 1))
    cfg = TrainConfig(**{**dict(backend="emu", model="resnet8", dataset="digits", epochs=1, batch_size=8,
                                precision="fixed", lr=0.05, smd=0.0), **kw})
    t = trainer_mod.EngineTrainer(cfg, str(tmp_path / "run"), **QUIET)
    return t.plan, t.train_epoch()


def test_a_training_step_records_the_model_s_cycles_of_every_call(tmp_path, monkeypatch):
    """Without PSG: per conv, CONV_FWD, CONV_BWD_DATA (not the stem's), CONV_WGRAD (FULL) and
    UPDATE at the step's batch, each in its phase; the totals are their sums."""
    plan, r = _one_step_record(tmp_path, monkeypatch, psg=False)
    b, per = plan.board, r["ops"]["per_layer"]
    want_total = 0
    for op in plan.convs():
        s = cycles.conv_shape(op, 8)
        want = {"fwd": cycles.conv_fwd(s, b), "bwd_w_full": cycles.conv_wgrad(s, b),
                "update": cycles.update(op["c_out"] * op["c_in"] * op["k"] ** 2, b)}
        if op["input_grad"]:
            want["bwd_data"] = cycles.conv_bwd_data(s, b)
        assert {phase: slot["cycles"] for phase, slot in per[op["name"]].items()} == want, op["name"]
        want_total += sum(want.values())
    assert r["ops"]["total"]["all"]["cycles"] == want_total > 0


def test_a_psg_weight_gradient_records_its_recomputed_tiles_in_the_predictor_s_phase():
    plan, _, arrays = planbuild.from_model("resnet8", 1, 10, 32, "pynq-z2", 8, seed=2)
    s = EngineSession(plan, arrays, EmulatedOverlay("pynq-z2", log=lambda m: None))
    op = next(o for o in plan.convs() if o["name"] == "blocks.1.conv1")  # stride 2, 16 -> 32: 8 PSG tiles
    rng = np.random.default_rng(0)
    n, shape = 5, cycles.conv_shape(op, 5)
    s.conv_fwd(op, rng.integers(-128, 128, (n, op["c_in"], op["h"], op["w"])))
    g_q = rng.integers(-30, 30, (n, op["c_out"], op["ho"], op["wo"]))
    g_q[:, :8] *= 1000  # the first tile row's gradients are large: its entries sure, its tiles not recomputed
    s.set_grad(op, g_q)
    st = s.conv_wgrad(op, n, "abs", 1 << 12)
    assert 0 < st["psg_recomputed"] < st["psg_tiles"] == cycles.tiles(shape, plan.board)
    slots = s.per_layer[op["name"]]
    assert slots["bwd_w_pred"]["cycles"] == cycles.conv_wgrad(shape, plan.board, True, st["psg_recomputed"])
    assert slots["bwd_w_full"]["cycles"] == 0 and slots["fwd"]["cycles"] == cycles.conv_fwd(shape, plan.board)
    s.update(op, nx.UpdateConstants.from_floats(0.1, 1e-4, 0.9))
    assert slots["update"]["cycles"] == cycles.update(s.buffer(op, "master").size, plan.board)


def test_the_estimate_s_per_layer_cycles_are_the_export_s():
    """Per conv in plan order, at the plan's batch, PSG's worst case: the layer costs of
    hls/export.py, and in all export.engine_cycles."""
    plan = planbuild.from_model("resnet8", 1, 10, 8, "zcu104", 16, 0)[0]
    per = est.conv_counts(plan, opcount.Precision("fixed", psg=True))
    assert list(per) == [op["name"] for op in plan.convs()]
    layer_cycles = [sum(slot["cycles"] for slot in phases.values()) for phases in per.values()]
    assert layer_cycles == [row["cycles"] for row in export.layer_costs(plan)]
    assert opcount.sum_layers(per)["all"]["cycles"] == export.engine_cycles(plan)[1]
    stem = per[plan.convs()[0]["name"]]
    assert "bwd_data" not in stem and stem["bwd_w_full"]["cycles"] == 0 < stem["bwd_w_pred"]["cycles"]
    no_psg = est.conv_counts(plan, opcount.Precision("fixed"))
    assert opcount.sum_layers(no_psg)["all"]["cycles"] == export.engine_cycles(plan, psg=False)[1]
