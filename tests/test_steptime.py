"""The whole-board time model (energy/steptime.py) and joules (energy/wholeboard.py) against
hand-computed cases: an engine-bound, a host-bound and a DDR-bound step, the overlap of the
weight gradient with the host's segment below it, and the joules adding up to their parts."""
from types import SimpleNamespace

import pytest

from energy import steptime, wholeboard

# a CPU of round numbers: 1 GB/s stream, 1 G f32 / 0.5 G f64 / 2 G int ops per second, 10 us a call
HOST = {"cpu": "test", "stream_bytes_per_s": 1e9, "f32_per_s": 1e9, "f64_per_s": 5e8, "int_per_s": 2e9, "call_s": 1e-5}
MHZ = 100.0  # 1e8 cycles per second


def hslot(nbytes=0.0, f32=0.0, f64=0.0, calls=0):
    return {"bytes": nbytes, "read": nbytes / 2, "written": nbytes / 2, "flops": {"f32": f32, "f64": f64, "int": 0},
            "calls": calls}


def eslot(cycles, nbytes=0.0):
    return {"macs": {"int8x8": 1}, "bytes": nbytes, "cycles": cycles}


def test_host_seconds_is_a_roofline_per_slot_plus_calls():
    assert steptime.host_seconds(hslot(2e6, f32=1e6, calls=3), HOST) == pytest.approx(3e-5 + 2e-3)  # memory-bound
    assert steptime.host_seconds(hslot(1e3, f32=1e6, f64=1e6), HOST) == pytest.approx(1e-3 + 2e-3)  # compute-bound
    assert steptime.host_seconds({}, HOST) == 0.0


def _net(conv_cycles, host_bytes):
    """A two-conv chain: c1 -> bn1 -> c2 -> bn2 -> loss, in plan order (host work per op)."""
    engine = {name: {"fwd": eslot(c["fwd"]), "bwd_data": eslot(c.get("bwd_data", 0)), "bwd_w_full": eslot(c["wgrad"]),
                     "update": eslot(c["update"])} for name, c in conv_cycles.items()}
    host = {name: {"fwd": hslot(b), "bwd_data": hslot(b), "update": hslot(0)} for name, b in host_bytes.items()}
    return engine, host


def test_engine_bound_step_by_hand():
    # engine: c1 fwd 1 ms, wgrad 5 ms, update 1 ms (the stem: no bwd_data); c2 fwd 2 ms, bwd_data 2 ms,
    # wgrad 4 ms, update 1 ms; host: 0.1 ms of bytes per op and phase (1e5 bytes at 1 GB/s)
    engine, host = _net({"c1": {"fwd": 1e5, "wgrad": 5e5, "update": 1e5},
                         "c2": {"fwd": 2e5, "bwd_data": 2e5, "wgrad": 4e5, "update": 1e5}},
                        {"c1": 1e5, "bn1": 1e5, "c2": 1e5, "bn2": 1e5, "loss": 1e5})
    t = steptime.step_time(engine, host, HOST, 1e12, MHZ)
    fwd = 1e-3 + 2e-3 + 5 * 1e-4
    # backward: loss and bn2 serial (0.2 ms); c2: bwd_data 2 ms, then max(wgrad 4 ms, host c2 + bn1 0.2 ms);
    # c1: max(wgrad 5 ms, host c1 0.1 ms)
    bwd = 2e-4 + 2e-3 + 4e-3 + 5e-3
    update = 2e-3
    assert t["schedule_s"] == pytest.approx(fwd + bwd + update)
    assert t["seconds"] == t["schedule_s"] and t["bound"] == "engine"
    assert t["engine_s"] == pytest.approx(1e-3 + 2e-3 + 2e-3 + 9e-3 + 2e-3)
    assert t["host_s"] == pytest.approx(10 * 1e-4)
    assert t["overlap_s"] == pytest.approx(2e-4 + 1e-4)  # the host's segments hide under the weight gradients


def test_host_bound_step_by_hand():
    # the same engine, the host's passes 100x larger: 10 ms per op and phase
    engine, host = _net({"c1": {"fwd": 1e5, "wgrad": 5e5, "update": 1e5},
                         "c2": {"fwd": 2e5, "bwd_data": 2e5, "wgrad": 4e5, "update": 1e5}},
                        {"c1": 1e7, "bn1": 1e7, "c2": 1e7, "bn2": 1e7, "loss": 1e7})
    t = steptime.step_time(engine, host, HOST, 1e12, MHZ)
    fwd = 3e-3 + 5e-2
    bwd = 2e-2 + 2e-3 + max(4e-3, 2e-2) + max(5e-3, 1e-2)
    assert t["schedule_s"] == pytest.approx(fwd + bwd + 2e-3)
    assert t["bound"] == "host" and t["host_s"] == pytest.approx(0.1)
    assert t["overlap_s"] == pytest.approx(4e-3 + 5e-3)  # now the weight gradients hide under the host


def test_ddr_bound_step_by_hand():
    # 1 ms of engine and 10 ms of host work, but 50 MB of traffic in all on a 1 GB/s DDR: 50 ms
    engine = {"c1": {"fwd": eslot(1e5, nbytes=4e7)}}
    host = {"c1": {"fwd": hslot(1e7)}}
    t = steptime.step_time(engine, host, HOST, 1e9, MHZ)
    assert t["ddr_s"] == pytest.approx((4e7 + 1e7) / 1e9)
    assert t["schedule_s"] == pytest.approx(1e-3 + 1e-2)
    assert t["seconds"] == pytest.approx(5e-2) and t["bound"] == "DDR"


def _model():
    return SimpleNamespace(power_w={"pl_static": 0.1, "ps_idle": 0.5, "ps_busy": 1.5, "board_rest": 2.0},
                           ddr_pj_per_byte=100.0, host=HOST, ddr_bytes_per_s=1e12,
                           price=lambda slot: {"mac_j": slot["macs"].get("int8x8", 0) * 1e-12,
                                               "ddr_j": slot["bytes"] * 1e-10,
                                               "j": slot["macs"].get("int8x8", 0) * 1e-12 + slot["bytes"] * 1e-10})


def test_whole_board_joules_are_the_sum_of_their_parts_by_hand():
    t = {"seconds": 2.0, "host_s": 0.5, "bytes": {"host": 1e9, "engine": 0.0}}
    e = wholeboard.energy(t, {"mac_j": 0.25, "ddr_j": 0.75}, _model())
    assert e["parts"]["engine"]["j"] == pytest.approx(1.0)
    assert e["parts"]["host"]["j"] == pytest.approx(1.0 * 0.5 + 1e9 * 100e-12)  # (busy - idle) x host time + its DDR
    assert e["parts"]["static"]["j"] == pytest.approx((0.1 + 0.5) * 2.0)
    assert e["parts"]["idle"]["j"] == pytest.approx(2.0 * 2.0)
    assert e["j"] == pytest.approx(1.0 + 0.6 + 1.2 + 4.0)
    assert e["j"] == sum(p["j"] for p in e["parts"].values())


def test_a_runs_whole_board_figures_sum_over_epochs():
    engine, host = _net({"c1": {"fwd": 1e5, "wgrad": 5e5, "update": 1e5}}, {"c1": 1e5, "loss": 1e5})
    total = {"fwd": {"macs": {"int8x8": 1e9}, "bytes": 1e6}}
    recs = [{"epoch": i, "ops": {"per_layer": engine, "total": total, "host": {"per_layer": host}}} for i in (1, 2)]
    r = wholeboard.run(recs, _model(), "pynq-z2")
    one = wholeboard.epoch(recs[0]["ops"], _model(), 100.0)  # the PYNQ-Z2's clock
    assert r["seconds"] == pytest.approx(2 * one["time"]["seconds"]) and r["j"] == pytest.approx(2 * one["j"])
    assert r["j"] == pytest.approx(sum(r["parts"].values()))
    assert [e["bound"] for e in r["epochs"]] == ["engine", "engine"]
    assert wholeboard.missing(recs) is None
    assert "no host counts" in wholeboard.missing([{"epoch": 1, "ops": {"per_layer": engine, "total": total}}])
