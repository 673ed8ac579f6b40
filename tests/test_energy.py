"""The energy model as data, modeled joules of a run, and its report (numpy + matplotlib, no torch)."""
import csv
import io
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from contract.boards import DATA, names
from contract.errors import E2TError
from energy import model as emodel, report
from test_steptime import hslot


def _run(folder, records, config=None):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config or {"model": "resnet8", "dataset": "digits", "backend": "emu", "board": "pynq-z2"}, f)
    with open(os.path.join(folder, "metrics.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    return str(folder)


def _record(epoch, fwd_macs, nbytes, acc=0.5):
    per_layer = {"conv1": {"fwd": {"macs": {"int8x8": fwd_macs}, "bytes": nbytes}},
                 "fc": {"fwd": {"macs": {"fp32": 640}, "bytes": 0.0}, "update": {"macs": {"int32": 30}, "bytes": 17.0}}}
    total = {"fwd": {"macs": {"int8x8": fwd_macs, "fp32": 640}, "bytes": nbytes},
             "update": {"macs": {"int32": 30}, "bytes": 17.0}}
    return {"epoch": epoch, "test_acc": acc, "kept_iterations": 3, "ops": {"total": total, "per_layer": per_layer}}


def test_every_board_has_a_sourced_model():
    for board in names():
        m = emodel.load(board)
        assert set(m.mac_pj) >= {"int8x8", "int4x16", "int16x8", "int8x16", "int32", "fp32"}
        per_op = [s for k, s in m.sources.items() if k.startswith(("mac_pj.", "ddr_pj_per_byte"))]
        assert len(per_op) == len(m.mac_pj) + 1 and all("Horowitz" in s for s in per_op) and m.not_modeled


def test_modeled_energy_is_the_sum_of_its_breakdown_and_hand_computed(tmp_path):
    m = emodel.load("pynq-z2")
    recs = [_record(1, 1_000_000, 5000.0), _record(2, 2_000_000, 8000.0, 0.7)]
    r = emodel.run_energy(recs, m)
    want1 = (1e6 * 0.3 + 640 * 4.6 + 5000 * 243.75 + 30 * 3.2 + 17 * 243.75) * 1e-12
    assert r["epochs"][0]["j"] == pytest.approx(want1, rel=1e-12)
    assert r["total_j"] == pytest.approx(sum(p["j"] for p in r["phases"].values()), rel=1e-12)
    assert r["total_j"] == pytest.approx(sum(r["layers"].values()), rel=1e-12)
    assert r["total_j"] == pytest.approx(r["epochs"][-1]["cumulative_j"], rel=1e-12)
    assert r["kind"] == "modeled"


def test_report_files_and_html_images_exist(tmp_path):
    run = _run(tmp_path / "run", [_record(1, 10**9, 1e6), _record(2, 2 * 10**9, 2e6, 0.8)])
    path, _ = report.write(run)
    folder = os.path.dirname(path)
    for name in ("energy.json", "energy.csv", "report.html"):
        assert os.path.isfile(os.path.join(folder, name))
    text = open(path).read()
    srcs = re.findall(r'<img src="([^"]+)"', text)
    assert len(srcs) == 4 and all(os.path.getsize(os.path.join(folder, s)) > 1000 for s in srcs)
    assert "Modeled, not measured" in text and "J (modeled)" in text and "Horowitz" in text
    rows = open(os.path.join(folder, "energy.csv")).read().splitlines()
    assert rows[0].startswith("epoch,kind,engine_joules,engine_cumulative_joules") and rows[1].split(",")[1] == "modeled" and len(rows) == 3


def test_bad_model_and_run_folders_are_named(tmp_path):
    with pytest.raises(E2TError, match="not a run folder \\(config.json is missing\\)"):
        report.write(str(tmp_path))
    bad = tmp_path / "m.json"
    d = json.load(open(os.path.join(DATA, "pynq-z2", "energy.json")))
    del d["ddr_pj_per_byte"]
    bad.write_text(json.dumps(d))
    with pytest.raises(E2TError, match="field 'ddr_pj_per_byte' is missing"):
        emodel.load("pynq-z2", str(bad))
    run = _run(tmp_path / "r", [{"epoch": 1, "test_acc": 0.1}])
    with pytest.raises(E2TError, match="epoch 1 has no operation counts"):
        report.write(run)


def test_cli_energy_report(tmp_path, capsys):
    from e2t.cli import main
    run = _run(tmp_path / "run", [_record(1, 10**9, 1e6)])
    assert main(["energy", "report", run]) == 0
    out = capsys.readouterr().out
    assert out.startswith("energy: ") and "J modeled" in out and "report.html" in out


def test_compare_prints_savings_against_the_baseline(tmp_path, capsys):
    from e2t.cli import main
    a = _run(tmp_path / "base", [_record(1, 4 * 10**9, 4e6, 0.90)])
    b = _run(tmp_path / "e2t", [_record(1, 10**9, 1e6, 0.89)])
    assert main(["energy", "compare", a, b, "--out", str(tmp_path / "c.json")]) == 0
    out = capsys.readouterr().out
    assert "modeled energy (Horowitz" in out and "not modeled:" in out
    rows = json.load(open(tmp_path / "c.json"))["rows"]
    assert rows[0]["saved"] == 0 and rows[1]["saved"] == pytest.approx(0.75, abs=1e-3)
    assert rows[1]["d_acc"] == pytest.approx(-0.01)
    assert "e2t" in out.splitlines()[-2] and "75.0%" in out.splitlines()[-2]


def test_report_renders_in_headless_chromium(tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    run = _run(tmp_path / "run", [_record(1, 10**9, 1e6), _record(2, 2 * 10**9, 2e6, 0.8)])
    path, _ = report.write(run)
    png = tmp_path / "report.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={png}",
                    "--window-size=1100,2400", f"file://{path}"], capture_output=True, timeout=120)
    assert png.is_file() and png.stat().st_size > 20_000


# -- rail sources ----------------------------------------------------------------------------------

from energy import rails  # noqa: E402


def _hwmon(root):
    a = root / "hwmon0"
    a.mkdir(parents=True)
    (a / "name").write_text("ina226\n")
    (a / "power1_input").write_text("2500000\n")        # 2.5 W in uW
    (a / "power1_label").write_text("VCCINT\n")
    (a / "in1_input").write_text("1000\n")              # the same rail's voltage: not a second rail
    (a / "in1_label").write_text("VCCINT\n")
    (a / "curr1_input").write_text("2500\n")
    (a / "curr1_label").write_text("VCCINT\n")
    (a / "in2_input").write_text("3300\n")              # 3.3 V x 0.5 A, no power file
    (a / "in2_label").write_text("VCC3V3\n")
    (a / "curr2_input").write_text("500\n")
    (a / "curr2_label").write_text("VCC3V3\n")
    b = root / "hwmon1"
    b.mkdir()
    (b / "name").write_text("k10temp\n")                # no power, no current: no rail
    (b / "temp1_input").write_text("45000\n")
    c = root / "hwmon2"
    c.mkdir()                                           # no name file: skipped


def test_hwmon_rails_on_a_fake_tree(tmp_path):
    _hwmon(tmp_path)
    found = {r.name: r for r in rails.hwmon_rails(str(tmp_path))}
    assert set(found) == {"ina226:VCCINT", "ina226:VCC3V3"}
    assert found["ina226:VCCINT"].read().value == pytest.approx(2.5)
    assert found["ina226:VCC3V3"].read().value == pytest.approx(1.65) and "voltage x current" in found["ina226:VCC3V3"].source


def test_powercap_wraps_and_missing_sources_are_one_line(tmp_path):
    z = tmp_path / "intel-rapl:0"
    z.mkdir()
    (z / "name").write_text("package-0\n")
    (z / "max_energy_range_uj").write_text("262143328850\n")
    (z / "energy_uj").write_text("262143000000\n")
    (rail,) = rails.powercap_rails(str(tmp_path))
    a = rail.read()
    (z / "energy_uj").write_text("671150\n")
    b = rail.read()
    assert rail.energy(a, b) == pytest.approx((262143328850 - 262143000000 + 671150) * 1e-6)
    assert rail.name == "rapl:package-0" and "not a board" in rail.source
    lines = []
    assert rails.probe(str(tmp_path / "none"), str(tmp_path / "none2"), log=lines.append) == []
    assert lines == [f"energy: no hwmon rails at {tmp_path / 'none'}", f"energy: no powercap rails at {tmp_path / 'none2'}"]
    _hwmon(tmp_path / "hw")
    os.remove(tmp_path / "hw" / "hwmon0" / "curr2_input")
    os.makedirs(tmp_path / "hw" / "hwmon0" / "curr2_input")   # unreadable: a folder where a number should be
    lines = []
    ok = rails.probe(str(tmp_path / "hw"), str(tmp_path), log=lines.append)
    assert [r.name for r in ok] == ["ina226:VCCINT", "rapl:package-0"]
    assert len(lines) == 1 and "ina226:VCC3V3" in lines[0] and "skipped" in lines[0]


def test_trapezoid_on_known_signals():
    t = np.linspace(0, 2, 2001)
    assert rails.trapezoid(t, np.full_like(t, 3.0)) == pytest.approx(6.0)
    assert rails.trapezoid(t, 2 * t) == pytest.approx(4.0)                     # exact for linear power
    assert rails.trapezoid([0, 0.1, 0.5, 2.0], [1, 1, 1, 1]) == pytest.approx(2.0)  # uneven steps
    assert rails.trapezoid(t, np.sin(np.pi * t) ** 2) == pytest.approx(1.0, rel=1e-6)
    with pytest.raises(ValueError, match="back in time"):
        rails.trapezoid([0, 2, 1], [1, 1, 1])


def test_meter_log_aligned_to_phases(tmp_path):
    log = tmp_path / "meter.csv"
    rows = ["timestamp,watts"] + [f"{100 + 0.5 * i},{2.0 if i < 10 else 4.0}" for i in range(21)]
    log.write_text("\n".join(rows) + "\n")
    m = rails.MeterLog(str(log))
    assert m.energy(1.0, 4.0, offset=100.0) == pytest.approx(6.0)      # 2 W for 3 s
    assert m.energy(6.0, 9.0, offset=100.0) == pytest.approx(12.0)     # 4 W for 3 s
    assert m.energy(4.5, 5.5, offset=100.0) == pytest.approx(3.5)      # 2 W at 4.5 s, 4 W from 5 s: linear between
    with pytest.raises(E2TError, match="outside the log"):
        m.energy(9.0, 11.0, offset=100.0)
    (tmp_path / "bad.csv").write_text("time,power\n1,2\n")
    with pytest.raises(E2TError, match="needs columns 'timestamp' and 'watts'"):
        rails.MeterLog(str(tmp_path / "bad.csv"))


def test_the_emulated_rail_integrates_to_the_modeled_energy():
    m = emodel.load("pynq-z2")
    recs = [dict(_record(1, 10**9, 1e6), seconds=3.2), dict(_record(2, 3 * 10**9, 4e6), seconds=7.9)]
    result = emodel.run_energy(recs, m)
    rail = rails.EmulatedRail(result, recs)
    assert rail.kind == "modeled" and "Horowitz" in rail.source
    assert rail.energy() == pytest.approx(result["total_j"], rel=0.01)


# -- calibration --------------------------------------------------------------------------------------

def _segments(coeffs, ddr, constant, n=12, noise=0.0, seed=0, host_w=0.8):
    """Synthetic segments: every other one with the host busy part of its seconds (``host_w`` W above idle)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        macs = {w: float(rng.integers(1, 50) * 10**9) for w in coeffs}
        nbytes, seconds = float(rng.integers(1, 50) * 10**7), float(rng.uniform(0.5, 5))
        host_seconds = float(rng.uniform(0, seconds)) if i % 2 else 0.0
        j = sum(macs[w] * c for w, c in coeffs.items()) * 1e-12 + nbytes * ddr * 1e-12 + host_seconds * host_w + \
            seconds * constant
        out.append({"macs": macs, "bytes": nbytes, "host_seconds": host_seconds, "seconds": seconds,
                    "joules": j * (1 + noise * rng.standard_normal())})
    return out


def test_calibration_recovers_known_coefficients(tmp_path):
    """The host's power above idle and the constant come back with the engine's coefficients:
    exactly without noise, within a few % with 0.5 % noise on the joules."""
    from energy import calibrate
    coeffs = {"int8x8": 1.7, "int16x8": 3.1, "int4x16": 1.2}
    exact = calibrate.fit(_segments(coeffs, 120.0, 0.35, host_w=0.25), sorted(coeffs))
    for w, c in coeffs.items():
        assert exact["mac_pj"][w] == pytest.approx(c, rel=1e-9)
    assert exact["ddr_pj_per_byte"] == pytest.approx(120.0, rel=1e-9)
    assert exact["host_w"] == pytest.approx(0.25, rel=1e-9) and exact["constant_w"] == pytest.approx(0.35, rel=1e-9)
    assert exact["rms_relative"] < 1e-12 and exact["condition"] > 1
    noisy = calibrate.fit(_segments(coeffs, 120.0, 0.35, n=40, noise=0.005, seed=1, host_w=0.25), sorted(coeffs))
    for w, c in coeffs.items():
        assert noisy["mac_pj"][w] == pytest.approx(c, rel=0.1)
    assert noisy["host_w"] == pytest.approx(0.25, rel=0.03) and noisy["constant_w"] == pytest.approx(0.35, rel=0.02)
    assert 0.001 < noisy["rms_relative"] < 0.02
    with pytest.raises(E2TError, match="at least 6 segments"):
        calibrate.fit(_segments(coeffs, 120.0, 0.35, n=3), sorted(coeffs))
    engine_only = [dict(s, host_seconds=0.0) for s in _segments(coeffs, 120.0, 0.35)]
    with pytest.raises(E2TError, match="never exercise host_seconds"):
        calibrate.fit(engine_only, sorted(coeffs))


def test_the_fitted_constant_is_split_by_the_assumed_powers(tmp_path):
    """The fitted model: PS busy = the default's PS idle + the fitted host power; the constant
    less the default's PL static and PS idle (kept, said in their sources) is the rest of the
    board; a constant below them clips the rest to 0 with a warning line and says so in its
    source; host rates measured on the board replace the default's."""
    from energy import calibrate
    base = emodel.load("pynq-z2")
    w = base.power_w
    fitted = {"mac_pj": {"int8x8": 1.5}, "ddr_pj_per_byte": 200.0, "host_w": 0.7, "constant_w": 3.0,
              "rms_relative": 0.01, "condition": 10.0, "segments": 20}
    lines = []
    m = emodel.load("pynq-z2", calibrate.write_fitted("pynq-z2", fitted, "a test", str(tmp_path / "a.json"),
                                                      log=lines.append))
    assert m.power_w["ps_busy"] == pytest.approx(w["ps_idle"] + 0.7) and lines == []
    assert m.power_w["board_rest"] == pytest.approx(3.0 - w["pl_static"] - w["ps_idle"])
    assert (m.power_w["pl_static"], m.power_w["ps_idle"]) == (w["pl_static"], w["ps_idle"])
    assert "the assumed split of the fitted constant 3 W" in m.sources["power_w.ps_idle"]
    assert m.host == base.host and m.sources["host.f32_per_s"] == base.sources["host.f32_per_s"]
    host = {"cpu": "a test CPU", **{k: {"value": 1e6, "source": "measured by e2t energy calibrate on a test"}
                                    for k in ("stream_bytes_per_s", "f32_per_s", "f64_per_s", "int_per_s", "call_s")}}
    low = calibrate.write_fitted("pynq-z2", dict(fitted, constant_w=0.3), "a test", str(tmp_path / "b.json"),
                                 host=host, log=lines.append)
    m = emodel.load("pynq-z2", low)
    assert m.power_w["board_rest"] == 0.0 and "clipped to 0" in m.sources["power_w.board_rest"]
    assert len(lines) == 1 and "board_rest clipped to 0" in lines[0] and "exceeds the measured one by" in lines[0]
    assert m.host["f32_per_s"] == 1e6 and m.sources["host.call_s"].startswith("measured by e2t energy calibrate")


def test_e2t_energy_calibrate_writes_beside_the_default(tmp_path, capsys):
    from e2t.cli import main
    seg = tmp_path / "seg.json"
    seg.write_text(json.dumps(_segments({"int8x8": 1.5, "int4x16": 1.0}, 200.0, 0.5)))
    default = open(os.path.join(DATA, "pynq-z2", "energy.json")).read()
    out = tmp_path / "fitted.json"
    assert main(["energy", "calibrate", "--board", "pynq-z2", "--segments", str(seg), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "the default model is unchanged" in captured.out
    assert "board_rest clipped to 0" in captured.err  # _segments' 0.5 W constant is below PL static + PS idle
    m = emodel.load("pynq-z2", str(out))
    assert m.mac_pj["int8x8"] == pytest.approx(1.5) and m.mac_pj["fp32"] == 4.6  # unexercised widths keep theirs
    assert m.power_w["ps_busy"] == pytest.approx(m.power_w["ps_idle"] + 0.8)  # _segments' host term
    assert "least-squares fit" in m.sources["mac_pj.int8x8"]
    assert open(os.path.join(DATA, "pynq-z2", "energy.json")).read() == default
    with pytest.raises(E2TError, match="beside it, never over it"):
        from energy import calibrate
        calibrate.write_fitted("pynq-z2", {}, "x", os.path.join(DATA, "pynq-z2", "energy.json"))


def test_rails_recorded_over_a_run_appear_beside_the_model(tmp_path, monkeypatch, capsys):
    """e2t train on the engine records this machine's rails (here a fake RAPL tree) per epoch; the
    report shows them as measured, apart from the modeled figures."""
    from e2t.cli import main
    z = tmp_path / "pc" / "intel-rapl:0"
    z.mkdir(parents=True)
    (z / "name").write_text("package-0\n")
    (z / "energy_uj").write_text("1000000\n")
    (z / "max_energy_range_uj").write_text("262143328850\n")
    monkeypatch.setenv("E2T_POWERCAP_ROOT", str(tmp_path / "pc"))
    monkeypatch.setenv("E2T_HWMON_ROOT", str(tmp_path / "none"))
    out = tmp_path / "run"
    assert main(["train", "--backend", "emu", "--precision", "fixed", "--psg", "--model", "resnet8", "--dataset",
                 "digits", "--epochs", "1", "--batch-size", "64", "--out", str(out), "--quiet"]) == 0
    assert "no hwmon rails" in capsys.readouterr().err
    rec = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert rec["rails"]["rapl:package-0"]["joules"] == 0.0 and rec["rails"]["rapl:package-0"]["kind"] == "measured"
    html_text = (out / "energy" / "report.html").read_text()
    assert "Measured on rails" in html_text and "rapl:package-0" in html_text and "not a board" in html_text
    assert "measured:rapl:package-0_joules" in (out / "energy" / "energy.csv").read_text()


class _Sensor:
    """A libsensors sensor as pynq shows one: a name, a value, and pynq's MultiSensor protocol."""

    def __init__(self, name, value):
        self.name, self._value, self.parents = name, value, ()

    @property
    def value(self):
        return self._value() if callable(self._value) else self._value

    def get_value(self, parents=None):
        return self.value


class _Rail:
    def __init__(self, name, power=None, voltage=None, current=None):
        self.name, self.power, self.voltage, self.current = name, power, voltage, current


def test_pynq_rails_from_get_rails():
    """Power sensors are read as they are, voltage-and-current rails as their product; a rail
    with neither is left out; a board without libsensors (an empty dict) has no rails."""
    found = rails.pynq_rails(lambda: {"VCCINT": _Rail("VCCINT", power=_Sensor("VCCINT_power", 1.25)),
                                      "VCC1V2": _Rail("VCC1V2", voltage=_Sensor("v", 1.2), current=_Sensor("i", 0.5)),
                                      "TEMP": _Rail("TEMP")})
    assert [r.name for r in found] == ["pynq:VCC1V2", "pynq:VCCINT"]
    assert [r.read().value for r in found] == [pytest.approx(0.6), 1.25]
    assert "voltage x current" in found[0].source and "pynq.get_rails()" in found[1].source
    assert rails.pynq_rails(lambda: {}) == []
    lines = []
    assert rails.probe(os.devnull, os.devnull, log=lines.append, pynq=True, get_rails=dict) == []
    assert lines[0] == "energy: no pynq rails at pynq.get_rails()"


def test_the_board_s_own_rails_are_summed_and_no_sensor_twice():
    """ZCU104: its regulators sit behind the 12 V input, so a segment's joules are 12V's alone
    (board.json names it), even with hwmon reading the same INA226 again; KV260: its INA260's
    hwmon chip; a board naming no rail, or none recorded (the emulating host): every rail."""
    from contract import boards
    from e2t import microbench
    from host.engine.emulated import EmulatedOverlay
    from host.engine.session import EngineSession
    from host.plan import planbuild
    z = boards.board("zcu104")
    assert z.rails == ["12V"] and boards.board("kv260").rails == ["ina260_u14"]
    got = {"pynq:12V": 0, "pynq:INT": 0, "pynq:1V8": 0, "ina226:power1": 0, "rapl:package-0": 0}
    assert rails.board_rails(got, z.rails) == ["pynq:12V"]
    both = {"ina260_u14:power1": 0, "pynq:ina260_u14": 0}
    assert rails.board_rails(both, ["ina260_u14"]) == ["ina260_u14:power1"]
    assert rails.board_rails(got, []) == sorted(got)
    assert rails.board_rails({"rapl:package-0": 0}, z.rails) == ["rapl:package-0"]

    class TwoRails:  # a ZCU104 meter: 12 W in, 4 W of it on INT
        def start(self):
            pass

        def stop(self):
            return {"pynq:12V": {"joules": 12.0, "seconds": 1.0}, "pynq:INT": {"joules": 4.0, "seconds": 1.0}}

    plan, _, arrays = planbuild.from_model("resnet8", 1, 10, 8, "zcu104", 4, 0)
    session = EngineSession(plan, arrays, EmulatedOverlay("zcu104", log=lambda m: None))
    segs = microbench.run(session, plan, TwoRails(), calls=1, idle_s=0.01, log=lambda m: None)
    assert segs and all(s["joules"] == 12.0 and s["rails"] == ["pynq:12V"] for s in segs)


def test_pynq_data_recorder_integrated_over_its_timestamps():
    """The real pynq.DataRecorder samples a fake power sensor (2 W, then 2 W + 10 W/s ramp); each
    start/stop stretch is integrated over the frame's own timestamps; V x I rails go to Recorder."""
    import time
    from pynq import DataRecorder
    t0 = time.time()
    ramp = _Rail("RAMP", power=_Sensor("RAMP_power", lambda: 2.0 + 10.0 * (time.time() - t0)))
    flat = _Rail("FLAT", power=_Sensor("FLAT_power", 2.0))
    vi = _Rail("VI", voltage=_Sensor("v", 5.0), current=_Sensor("i", 0.2))
    found = rails.pynq_rails(lambda: {"RAMP": ramp, "FLAT": flat, "VI": vi})
    m = rails.meter(found, period=0.02, data_recorder=DataRecorder)
    for _ in range(2):  # two stretches: marks keep them apart
        m.start()
        time.sleep(0.5)
        out = m.stop()
    frame = m.parts[0].recorder.frame
    part = frame[frame["Mark"] == m.parts[0].mark]
    t = part.index.values.astype("datetime64[ns]").astype(np.int64) / 1e9
    span = t[-1] - t[0]
    assert span > 0.3 and len(part) > 10
    assert out["pynq:FLAT"]["joules"] == pytest.approx(2.0 * span, rel=1e-6)
    w = part["RAMP_power"].to_numpy()  # a linear ramp's integral: the mean of its ends times the span
    assert out["pynq:RAMP"]["joules"] == pytest.approx((w[0] + w[-1]) / 2 * span, rel=0.02) and w[-1] > w[0] + 3
    assert "pynq.DataRecorder" in out["pynq:FLAT"]["source"] and out["pynq:VI"]["joules"] == pytest.approx(0.5, rel=0.2)


def test_calibration_benchmarks_on_the_emulated_engine_give_the_model_back(tmp_path, capsys):
    """e2t energy calibrate --run --backend emu: the micro-benchmarks (every op kind on a 3x3 and
    a 1x1 conv, the host's numpy passes, two call counts, idle) through the emulated overlay, a
    modeled rail (the whole-board model's joules): the least-squares fit recovers every
    coefficient, the host's power and the constant too; nothing is written without --out, and
    with it the fitted file lands there, with the host rates timed on this machine."""
    from e2t.cli import main
    assert main(["energy", "calibrate", "--run", "--backend", "emu", "--calls", "2"]) == 0
    out = capsys.readouterr().out
    within = float(re.search(r"within ([0-9.e+-]+) %", out).group(1))
    assert within < 1e-3 and "not a measurement" in out
    assert not os.path.exists(os.path.join(DATA, "pynq-z2", "energy.fitted.json"))
    target = tmp_path / "fitted.json"
    assert main(["energy", "calibrate", "--run", "--backend", "emu", "--calls", "2", "--out", str(target)]) == 0
    fitted = emodel.load("pynq-z2", str(target))
    base = emodel.load("pynq-z2")
    for w in ("int8x8", "int16x8", "int8x16", "int4x16", "int32"):
        assert fitted.mac_pj[w] == pytest.approx(base.mac_pj[w], rel=1e-6)
    for k in ("pl_static", "ps_idle", "ps_busy", "board_rest"):
        assert fitted.power_w[k] == pytest.approx(base.power_w[k], rel=1e-6)
    assert "calibrated" in fitted.table and "measured by e2t energy calibrate on" in fitted.sources["host.call_s"]
    assert 0 < fitted.host["call_s"] < 1e-3 and fitted.host["stream_bytes_per_s"] > 1e7


def test_calibration_joules_from_a_meter_log_and_a_missing_board(tmp_path, capsys):
    from e2t import microbench
    from e2t.cli import main
    log = tmp_path / "meter.csv"
    log.write_text("timestamp,watts\n1000.0,2.0\n1010.0,4.0\n")
    segs = [{"wall": [1000.0, 1010.0]}, {"wall": [1002.0, 1004.0]}]
    microbench.joules_from_log(segs, rails.MeterLog(str(log)))
    assert segs[0]["joules"] == pytest.approx(30.0) and segs[1]["joules"] == pytest.approx(2 * 2.6)  # 2.4 W to 2.8 W over 2 s
    assert segs[0]["seconds"] == 10.0 and segs[0]["rails"] == ["meter:meter.csv"]
    assert main(["energy", "calibrate", "--run", "--backend", "pynq"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--bitfile" in err


def _whole_board_record(epoch, fwd_macs, nbytes, acc=0.5):
    """``_record`` with the engine's modeled cycles and the host's counts (ops.host) of a conv,
    its BatchNorm and the classifier, in plan order."""
    r = _record(epoch, fwd_macs, nbytes, acc)
    r["ops"]["per_layer"]["conv1"]["fwd"]["cycles"] = fwd_macs // 64
    r["ops"]["host"] = {"per_layer": {"conv1": {"fwd": hslot(nbytes, calls=2)},
                                      "bn1": {"fwd": hslot(2 * nbytes, f32=nbytes, calls=6),
                                              "bwd_data": hslot(3 * nbytes, f32=nbytes, calls=9)},
                                      "fc": {"update": hslot(1e4, f32=640, calls=3)}}}
    r["seconds"] = 1000.0  # the emulator's seconds: not the board's
    return r


def test_the_report_prices_the_whole_board_and_its_parts_add_up(tmp_path, capsys):
    """What replaced the constant power: a run with the host's counts and the engine's cycles
    gets the whole-board section (modeled board time, joules by part) in energy.json, the CSV
    and report.html; the whole equals the sum of its parts everywhere; the run's own seconds
    play no part. "Not in this model" is the model file's list alone."""
    from e2t.cli import main
    from energy import wholeboard
    m = emodel.load("pynq-z2")
    recs = [_whole_board_record(1, 10**9, 1e6), _whole_board_record(2, 2 * 10**9, 3e6, 0.8)]
    run = _run(tmp_path / "run", recs)
    assert main(["energy", "report", run]) == 0
    assert "J modeled for the whole board over" in capsys.readouterr().out
    folder = tmp_path / "run" / "energy"
    result = json.loads((folder / "energy.json").read_text())
    wb, want = result["whole_board"], wholeboard.run(recs, m, "pynq-z2")
    assert wb["priced"] and wb["kind"] == "modeled" and wb["model"] == m.path
    assert wb["seconds"] == pytest.approx(want["seconds"]) and wb["seconds"] < 10
    assert wb["j"] == pytest.approx(sum(wb["parts"].values()), rel=1e-12)
    assert wb["parts"]["engine"] == pytest.approx(result["total_j"], rel=1e-12)  # the dynamic total is its part
    for ep in wb["epochs"]:
        assert ep["j"] == pytest.approx(sum(ep["parts"].values()), rel=1e-12)
    assert result["not_modeled"] == m.not_modeled
    rows = list(csv.DictReader(io.StringIO((folder / "energy.csv").read_text())))
    for row, ep in zip(rows, wb["epochs"]):
        assert float(row["whole_board_joules"]) == pytest.approx(
            sum(float(row[f"whole_board:{p}_joules"]) for p in wholeboard.PARTS), rel=1e-5)
        assert float(row["board_seconds"]) == pytest.approx(ep["seconds"], rel=1e-5) and row["bound"] == ep["bound"]
    text = (folder / "report.html").read_text()
    table = re.search(r"<th>share</th></tr>(.*?)<tr><th>whole board</th><th>([^<]+)</th>", text, re.S)
    parts = [float(v) for v in re.findall(r"<tr><td>[^<]+</td><td>([^<]+)</td><td>[^<]+ %</td></tr>", table.group(1))]
    assert len(parts) == 4 and sum(parts) == pytest.approx(float(table.group(2)), rel=1e-3)
    assert "Whole board: " in text and "Engine (dynamic): " in text and "power_w.ps_idle" in text
    assert (folder / "whole_board_per_epoch.png").stat().st_size > 1000


def test_a_board_run_shows_its_measured_seconds_beside_the_modeled(tmp_path):
    """A run on the board (--backend pynq) keeps each epoch's measured seconds beside the modeled
    board time; priced for another board, or run on the emulator, it has none to show."""
    recs = [_whole_board_record(1, 10**9, 1e6), _whole_board_record(2, 2 * 10**9, 3e6, 0.8)]
    for r, s in zip(recs, (12.5, 13.0)):
        r["seconds"] = s
    config = {"model": "resnet8", "dataset": "digits", "backend": "pynq", "board": "pynq-z2"}
    _, result = report.write(_run(tmp_path / "board", recs, config))
    wb = result["whole_board"]
    assert [ep["measured_s"] for ep in wb["epochs"]] == [12.5, 13.0] and wb["measured_s"] == 25.5
    assert "measured on the board (s)" in (tmp_path / "board" / "energy" / "report.html").read_text()
    _, other = report.write(str(tmp_path / "board"), board="zcu104")
    assert "measured_s" not in other["whole_board"]
    _, emulated = report.write(_run(tmp_path / "emu", recs))
    assert "measured_s" not in emulated["whole_board"]


def test_an_init_run_s_report_shows_where_it_started(tmp_path):
    """A fine-tuning run (--init) records its starting accuracy in epoch 1's record: the report says it;
    a value that is no number is one line naming the field."""
    recs = [_whole_board_record(1, 10**9, 1e6, 0.8)]
    recs[0]["init_test_acc"] = 0.25
    _, result = report.write(_run(tmp_path / "run", recs))
    assert result["init_test_acc"] == 0.25
    assert "(from 25.00 % before training: the --init network)" in (tmp_path / "run" / "energy" / "report.html").read_text()
    recs[0]["init_test_acc"] = "a lot"
    with pytest.raises(E2TError, match=r"line 1: init_test_acc: 'a lot' is not a finite number >= 0"):
        report.write(_run(tmp_path / "bad", recs))


def test_a_run_without_host_counts_gets_the_engine_report_and_says_why(tmp_path):
    run = _run(tmp_path / "run", [_record(1, 10**9, 1e6)])
    _, result = report.write(run)
    assert not result["whole_board"]["priced"] and "no host counts" in result["whole_board"]["why"]
    assert result["not_modeled"][0].startswith("the whole board (") and result["not_modeled"][1:] == \
        emodel.load("pynq-z2").not_modeled
    text = (tmp_path / "run" / "energy" / "report.html").read_text()
    assert "The whole board is not priced: epoch 1 has no host counts" in text
    assert "whole_board" not in (tmp_path / "run" / "energy" / "energy.csv").read_text()


def test_compare_shows_whole_board_savings_beside_the_dynamic(tmp_path, capsys):
    """One table: engine joules and saved %, board seconds, whole-board joules and saved %; a run
    without host counts shows "-" there and a note line says why."""
    from energy import wholeboard
    m = emodel.load("pynq-z2")
    base = [_whole_board_record(1, 4 * 10**9, 4e6, 0.9)]
    small = [_whole_board_record(1, 10**9, 1e6, 0.89)]
    a, b = _run(tmp_path / "base", base), _run(tmp_path / "e2t", small)
    c = _run(tmp_path / "old", [_record(1, 10**9, 1e6, 0.88)])
    text, data = report.compare([a, b, c])
    rows = data["rows"]
    board = [wholeboard.run(r, m, "pynq-z2")["j"] for r in (base, small)]
    assert rows[1]["board_j"] == pytest.approx(board[1])
    assert rows[1]["board_saved"] == pytest.approx(1 - board[1] / board[0])
    assert rows[1]["saved"] == pytest.approx(0.75, abs=1e-3) and rows[1]["board_saved"] < rows[1]["saved"]
    assert rows[2]["board_j"] is None and rows[2]["board_saved"] is None and rows[2]["j"] > 0
    lines = text.splitlines()
    assert lines[1] == f"note: {c}: the whole board is not priced: epoch 1 has no host counts (ops.host): its " \
                       f"trainer predates the whole-board model or does not count the host's work"
    assert lines[2].split() == ["run", "epochs", "test", "acc", "engine", "(J)", "saved", "board", "(s)", "board",
                                "(J)", "saved", "d", "acc"]
    e2t_row, old_row = lines[4].split(), lines[5].split()
    assert e2t_row[5] == "75.0%" and float(e2t_row[7]) == pytest.approx(board[1], rel=1e-3)
    assert e2t_row[8] == f"{100 * rows[1]['board_saved']:.1f}%" and old_row[6:9] == ["-", "-", "-"]


CONFIG = {"model": "resnet8", "dataset": "digits", "backend": "emu", "board": "pynq-z2"}


def _slot(records, line, *path):
    node = records[line - 1]["ops"]
    for key in path:
        node = node[key]
    return node


@pytest.mark.parametrize("config, change, message", [
    ([], None, "config.json: list is not a run's config"),
    ({**CONFIG, "board": ["pynq-z2"]}, None, "config.json: board: ['pynq-z2'] is not a name"),
    ({**CONFIG, "smd": "0.5"}, None, "config.json: smd: '0.5' is not a finite number >= 0"),
    (CONFIG, lambda r: _slot(r, 2, "per_layer", "conv1", "fwd").update(macs="x"),
     "metrics.jsonl: line 2: ops.per_layer.conv1.fwd.macs: 'x' is not a JSON object"),
    (CONFIG, lambda r: _slot(r, 1, "total", "fwd").update(bytes="5000.0"),
     "metrics.jsonl: line 1: ops.total.fwd.bytes: '5000.0' is not a finite number >= 0"),
    (CONFIG, lambda r: _slot(r, 2, "total", "update", "macs").update(int32=-1),
     "metrics.jsonl: line 2: ops.total.update.macs.int32: -1 is not a finite number >= 0"),
    (CONFIG, lambda r: r[0].update(test_acc="x"), "metrics.jsonl: line 1: test_acc: 'x' is not a finite number"),
    (CONFIG, lambda r: r.insert(1, r[0]), "metrics.jsonl: line 2: epoch 1 where 2 is due"),  # counted twice
    (CONFIG, lambda r: r.pop(0), "metrics.jsonl: line 1: epoch 2 where 1 is due"),
    (CONFIG, lambda r: r[0].update(epoch=True), "metrics.jsonl: line 1: epoch True where 1 is due"),
])
def test_the_report_checks_what_it_reads_of_the_run(tmp_path, capsys, config, change, message):
    """config.json and metrics.jsonl of the wrong types gave tracebacks, a repeated epoch was priced twice."""
    from test_cli import one_line_error
    records = [_record(1, 10**9, 1e6), _record(2, 10**9, 1e6)]
    if change:
        change(records)
    run = _run(tmp_path / "run", records)
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    err = one_line_error(capsys, ["energy", "report", run], message)
    assert os.path.join(run, "") in err and sorted(os.listdir(run)) == ["config.json", "metrics.jsonl"]


@pytest.mark.parametrize("value", [True, False, "0.3", None])
def test_an_energy_model_figure_must_be_a_number(tmp_path, value):
    """`"value": true` was priced as 1 pJ per MAC."""
    d = json.load(open(os.path.join(DATA, "pynq-z2", "energy.json")))
    d["mac_pj"]["int8x8"]["value"] = value
    (tmp_path / "m.json").write_text(json.dumps(d))
    with pytest.raises(E2TError, match=re.escape(f"m.json: mac_pj.int8x8.value: {value!r} is not a finite number")):
        emodel.load("pynq-z2", str(tmp_path / "m.json"))
