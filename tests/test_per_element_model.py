"""bench/per_element_model.py on the PYNQ-Z2: contract v2's step (``e2t estimate --elementwise
engine``'s) against today's, every printed line there, the figures consistent with the models
they come from."""
import importlib.util
import json
import os

import pytest

from contract import cycles, opcount
from energy import model as energy_model, steptime
from hls import estimate as est
from host.train import hostops, hostwork, intops
from host.train.elementwise import elementwise_calls

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("per_element_model", os.path.join(ROOT, "bench", "per_element_model.py"))
pem = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pem)


def test_main_on_the_pynq_z2(capsys, tmp_path):
    out = tmp_path / "pem.json"
    assert pem.main(["--boards", "pynq-z2", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    for line in ("step time (modeled)", "engine-only time (modeled)", "of it STATS / APPLY (modeled)",
                 "host time (modeled)", "step / engine-only (modeled)", "host share (modeled)",
                 "DDR bytes per step (modeled)", "engine / host", "DDR floor (modeled)", "whole-board energy (modeled)",
                 "of it bncoef.py's rules (modeled)", "step <= 1.25 x engine-only", "host <= 10 % of the step",
                 "the engine with the per-element unit (hls/resources.py, modeled)", "the model leaves out:"):
        assert line in text, line
    assert text.startswith("ResNet-20 on CIFAR-10") and "modeled, not measured" in text.splitlines()[0]
    for label in ("16>16, 32, 3/1 x6", "32>32, 16, 3/1 x5", "64>64, 8, 3/1 x5", "3>16, 32, 3/1 x1"):
        assert label in text
    with open(out) as f:
        report = json.load(f)
    m = report["models"][0]
    cols = m["columns"]
    today, v2, beats = cols["today"], cols["v2"], cols["v2_beats"]
    assert v2["host_share"] < today["host_share"] and beats["host_share"] < today["host_share"]
    assert v2["step_s"] < today["step_s"] and v2["mj_per_image"] < today["mj_per_image"]
    assert beats["engine_s"] < v2["engine_s"] and beats["host_s"] == pytest.approx(v2["host_s"])
    # today's column is e2t estimate's, v2's e2t estimate --elementwise engine's: the same convs plus
    # the STATS / APPLY calls, the host the contract v2 op table's
    plan = pem.resnet20_plan("pynq-z2", 128)
    e, e2 = est.estimate(plan), est.estimate(plan, elementwise="engine")
    assert today["step_s"] == e["whole_board"]["time"]["seconds"]
    assert v2["step_s"] == e2["whole_board"]["time"]["seconds"]
    assert v2["mj_per_image"] == pytest.approx(e2["whole_board"]["j"] / 128 * 1e3)
    assert today["engine_s"] == pytest.approx(e["cycles_per_step"] / 100e6)
    calls = elementwise_calls(plan)
    assert m["calls"] == len(calls) == 101 + 4 * 21  # BatchNorms, ReLUs; each conv's weights refreshed
    added = sum(cycles.elementwise_cycles(k["op"], *k["shape"], k["mode"], plan.board) for k in calls)
    assert m["per_element_s"]["v2"] == pytest.approx(added / 100e6)
    assert v2["engine_s"] == pytest.approx(today["engine_s"] + added / 100e6)
    bound = sum(cycles.elementwise_beats(k["op"], *k["shape"], k["mode"], plan.board) for k in calls)
    assert beats["engine_s"] == pytest.approx(today["engine_s"] + bound / 100e6)
    moved = sum(sum(cycles.elementwise_bytes(k["op"], *k["shape"], k["mode"])) for k in calls)
    assert v2["ddr_bytes"]["engine"] == pytest.approx(opcount.sum_layers(e["per_layer"])["all"]["bytes"] + moved)
    em = energy_model.load("pynq-z2")
    host = hostwork.step_work(plan, psg=True, table=intops.INT_OPS)
    assert v2["host_s"] == pytest.approx(sum(steptime.host_seconds(s, em.host) for per in host["per_layer"].values()
                                             for s in per.values()))
    assert v2["ddr_bytes"]["host"] < 0.05 * today["ddr_bytes"]["host"]
    # bncoef.py's rules, counted from the code (hostops.bncoef_work): per BatchNorm (21) bn_forward 22
    # calls, bn_backward 26, the input gradient's apply_plan 36; per ReLU (19) its forward apply_plan 34
    # (the box's top alone), its backward's 36
    # (the weights' refresh calls of the update: their rules are the convs' own work, hostops.refresh_on_engine_work)
    bn = [k for k in calls if k["phase"] != "update"]
    assert sum(pem.rules_work(k)["calls"] for k in bn) == 21 * (22 + 26 + 36) + 19 * (34 + 36)
    assert m["bn_rules_s"]["v2"] == pytest.approx(sum(steptime.host_seconds(pem.rules_work(k), em.host) for k in bn))
    assert report["bncoef_calls"] == {rule: hostops.bncoef_work(1, rule)["calls"] for rule in hostops.BNCOEF}
    for r in m["roofline"]:
        assert all(0 < r[op]["share"] <= 1 for op in ("conv_fwd", "conv_wgrad"))
