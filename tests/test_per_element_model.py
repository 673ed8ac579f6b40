"""bench/per_element_model.py on the PYNQ-Z2: contract v2's schedule of STATS and APPLY against
today's step, every printed line there, the figures consistent with the models they come from."""
import importlib.util
import json
import os

import pytest

from contract import cycles, opcount, regmap
from hls import estimate as est

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("per_element_model", os.path.join(ROOT, "bench", "per_element_model.py"))
pem = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pem)


def test_the_schedule_of_resnet20():
    """Per BatchNorm: forward STATS (SQUARE) and APPLY (ReLU, int8 out; the block's second one takes
    the shortcut: an int8 activation, or a projection's int32 output); backward APPLY (mask, int32
    out, two gradients aligned where the activation has two consumers), STATS (PRODUCT), APPLY
    (int16 out). A projection's BatchNorm: STATS forward, STATS and APPLY backward."""
    r = regmap.load()
    calls = pem.schedule(pem.resnet20_plan("pynq-z2", 128))
    by = {}
    for k in calls:
        by.setdefault(k["bn"], []).append((k["phase"], k["op"], k["mode"]))
    assert len(by) == 21 and len(calls) == 19 * 5 + 2 * 3
    tail = [("bwd_data", "stats", 1), ("bwd_data", "apply", r.apply_mode("int32", out_bits=16))]
    assert by["bn1"] == [("fwd", "stats", 0), ("fwd", "apply", r.apply_mode(relu=True)),
                         ("bwd_data", "apply", r.apply_mode("int32", mask=True, out_bits=32))] + tail
    assert by["blocks.1.bn2"][1] == ("fwd", "apply", r.apply_mode("int8", relu=True))
    assert by["blocks.3.bn2"][1] == ("fwd", "apply", r.apply_mode("int32", relu=True))
    assert by["blocks.3.bn1"][2] == ("bwd_data", "apply", r.apply_mode(mask=True, out_bits=32))
    assert by["blocks.8.bn2"][2] == ("bwd_data", "apply", r.apply_mode(mask=True, out_bits=32))  # into the pool
    assert by["blocks.3.downsample.1"] == [("fwd", "stats", 0)] + tail
    stem = next(k for k in calls if k["bn"] == "bn1" and k["op"] == "apply")
    assert stem["shape"] == (128, 16, 32, 32) and stem["products"] == 128 * 16 * 32 * 32


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
        m = json.load(f)["models"][0]
    cols = m["columns"]
    today, v2, beats = cols["today"], cols["v2"], cols["v2_beats"]
    assert v2["host_share"] < today["host_share"] and beats["host_share"] < today["host_share"]
    assert v2["step_s"] < today["step_s"] and v2["mj_per_image"] < today["mj_per_image"]
    assert beats["engine_s"] < v2["engine_s"] and beats["host_s"] == pytest.approx(v2["host_s"])
    # today's column is e2t estimate's; v2's engine is the same convs plus the STATS / APPLY calls
    plan = pem.resnet20_plan("pynq-z2", 128)
    e = est.estimate(plan)
    assert today["step_s"] == e["whole_board"]["time"]["seconds"]
    assert today["engine_s"] == pytest.approx(e["cycles_per_step"] / 100e6)
    calls = pem.schedule(plan)
    added = sum(cycles.elementwise_cycles(k["op"], *k["shape"], k["mode"], plan.board) for k in calls)
    assert m["per_element_s"]["v2"] == pytest.approx(added / 100e6)
    assert v2["engine_s"] == pytest.approx(today["engine_s"] + added / 100e6)
    moved = sum(sum(cycles.elementwise_bytes(k["op"], *k["shape"], k["mode"])) for k in calls)
    assert v2["ddr_bytes"]["engine"] == pytest.approx(opcount.sum_layers(e["per_layer"])["all"]["bytes"] + moved)
    assert v2["ddr_bytes"]["host"] < 0.05 * today["ddr_bytes"]["host"]
    # the host's BatchNorm rules by hand: bn_forward 35 and apply_plan 250 + 9 C (with a second
    # source's range: the int8 shortcut) forward; backward the two gradients' alignment (apply_plan
    # again), bn_backward 43 and the input gradient's apply_plan; a mask alone (blocks.3.bn1) none
    per = {}
    for k in calls:
        per[k["bn"], k["phase"]] = per.get((k["bn"], k["phase"]), 0) + pem.coefficient_calls(k)
    assert per["blocks.1.bn2", "fwd"] == 35 + 250 + 9 * 16 and per["blocks.1.bn2", "bwd_data"] == 2 * (250 + 144) + 43
    assert per["blocks.3.bn1", "fwd"] == 35 + 250 + 6 * 32 and per["blocks.3.bn1", "bwd_data"] == 43 + 250 + 9 * 32
    assert per["blocks.6.downsample.1", "fwd"] == 35  # its APPLY is its block's
    assert m["bn_rules_s"]["v2"] > sum(per.values()) * 30e-6  # host.call_s, and the plane extremes' reductions
    for r in m["roofline"]:
        assert all(0 < r[op]["share"] <= 1 for op in ("conv_fwd", "conv_wgrad"))
