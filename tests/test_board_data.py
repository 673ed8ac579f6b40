"""The whole-board figures of every board's energy model (issue 23): sourced, labelled as
estimates, checked one line at a time when wrong, and consistent with each other."""
import json
import os
import re

import pytest

from contract.boards import DATA, names
from contract.errors import E2TError
from energy import model as emodel

NEW = [f"host.{k}" for k in (*emodel.HOST_RATES, "call_s")] + ["ddr_bytes_per_s"] + \
      [f"power_w.{k}" for k in emodel.POWERS]


@pytest.mark.parametrize("board", names())
def test_every_board_has_sourced_whole_board_figures(board):
    m = emodel.load(board)
    assert m.host["cpu"] and set(m.host) == {"cpu", *emodel.HOST_RATES, "call_s"}
    assert set(m.power_w) == set(emodel.POWERS)
    for name in NEW:
        source = m.sources[name]
        assert re.match(r"(estimate|assumption), not measured on this board by e2t", source), (name, source)
        assert len(source) > 80, (name, source)  # says where the figure comes from, not only its label


@pytest.mark.parametrize("board", names())
def test_the_figures_agree_with_each_other(board):
    m = emodel.load(board)
    w, host = m.power_w, m.host
    assert w["ps_busy"] >= w["ps_idle"] > 0 and w["pl_static"] > 0 and w["board_rest"] > 0
    assert host["stream_bytes_per_s"] <= m.ddr_bytes_per_s  # one core streams through the shared DDR
    assert host["f64_per_s"] <= host["f32_per_s"] and 0 < host["call_s"] < 1e-3
    idle = w["pl_static"] + w["ps_idle"] + w["board_rest"]
    measured = re.search(r"measured ([\d.]+) W", m.sources["power_w.board_rest"])
    if measured:  # a board whose idle total was measured at its input: the parts add up to it
        assert idle == pytest.approx(float(measured.group(1)))
    assert 1.0 < idle < 30.0


def _load_with(tmp_path, change):
    with open(os.path.join(DATA, "pynq-z2", emodel.FILE)) as f:
        d = json.load(f)
    change(d)
    path = tmp_path / "m.json"
    path.write_text(json.dumps(d))
    return lambda: emodel.load("pynq-z2", str(path))


def _set(*keys, value):
    def change(d):
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value
    return change


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("power_w"), "m.json: field 'power_w' is missing (a model file older than the whole-board figures: "
                                 "copy it from " + os.path.join(DATA, "pynq-z2", emodel.FILE) + ")"),
    (lambda d: d.pop("ddr_bytes_per_s"), "m.json: field 'ddr_bytes_per_s' is missing (a model file older"),
    (lambda d: d["host"].pop("stream_bytes_per_s"), "m.json: field 'stream_bytes_per_s' is missing in host"),
    (lambda d: d["power_w"]["ps_busy"].pop("source"), "m.json: field 'source' is missing in power_w.ps_busy"),
    (_set("power_w", "ps_idle", "value", value=-0.5), "m.json: power_w.ps_idle.value: -0.5 is not a finite number"),
    (_set("host", "f32_per_s", "value", value=0), "m.json: host.f32_per_s.value: 0 is not a finite number > 0"),
    (_set("ddr_bytes_per_s", "value", value=True), "m.json: ddr_bytes_per_s.value: True is not a finite number > 0"),
    (_set("host", "call_s", "value", value="3e-5"), "m.json: host.call_s.value: '3e-5' is not a finite number >= 0"),
    (_set("host", "cpu", value=""), "m.json: host.cpu: '' is not a name"),
    (_set("power_w", "board_rest", "source", value=""), "m.json: power_w.board_rest.source: '' is not a name"),
    (_set("host", value=[]), "m.json: host: [] is not a JSON object"),
])
def test_a_wrong_whole_board_figure_is_named_on_one_line(tmp_path, change, message):
    with pytest.raises(E2TError) as e:
        _load_with(tmp_path, change)()
    assert message in str(e.value) and "\n" not in str(e.value)
