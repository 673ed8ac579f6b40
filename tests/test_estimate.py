"""e2t estimate: the resource model against hand counts, the modeled speed and energy of a plan,
and the refusal of a configuration over the board's budget."""
from __future__ import annotations

import pytest

from host import boards, opcount, planbuild
from host.cli import main
from hls import estimate as est, export, resources


@pytest.mark.parametrize("a, b, family, dsp", [
    (8, 8, "zynq7", 1), (25, 18, "zynq7", 1), (26, 18, "zynq7", 2 * 2), (25, 19, "zynq7", 2 * 2),
    (16, 20, "zynq7", 1), (27, 18, "zynqmp", 1), (28, 18, "zynqmp", 2 * 2),
    (64, 32, "zynq7", 3 * 2), (64, 64, "zynq7", 3 * 4), (64, 32, "zynqmp", 3 * 2)])
def test_dsp_slices_per_product(a, b, family, dsp):
    """One slice while the operands fit the ports (25 x 18 / 27 x 18, either order); past them,
    signed pieces of 24 x 17 (26 x 17) bits."""
    assert resources.dsp_per_product(a, b, family) == dsp


@pytest.mark.parametrize("depth, width, blocks", [
    (9, 8, 0), (127, 8, 0), (128, 8, 1), (1156, 8, 1), (1024, 18, 1), (1025, 18, 2), (1024, 32, 2),
    (1156, 48, 6), (16384, 1, 1), (16385, 1, 2), (512, 36, 1), (512, 37, 2)])
def test_bram18_blocks_per_bank(depth, width, blocks):
    assert resources.bram18(depth, width) == blocks


def test_the_engine_on_the_xc7z020_by_hand():
    """PYNQ-Z2 (8 x 8 tile, 34 x 34 padded input, 32 x 32 output map, 9 taps):
    DSP: three arrays of 64 one-slice products = 192, the update's 3 x (64 x 32) = 18 and the PSG
    ratio's 64 x 64 = 12: 222, two more than the XC7Z020's 220.
    BRAM18: forward 8 input banks (1156 x 8: 1 each) + 8 sums (1024 x 32: 2 each) = 24; backward
    8 gradient banks (1024 x 16: 1) + 8 sums (1156 x 48: 6) = 56; weight gradient 8 + 8 = 16;
    9 m_axi adapters x 2 = 18: 114."""
    use = {u.resource: u for u in resources.totals(boards.board("pynq-z2"))}
    assert (use["dsp"].used, use["dsp"].budget, use["dsp"].fits) == (222, 220, False)
    assert (use["bram18"].used, use["bram18"].budget) == (114, 280)
    assert use["lut"].fits and use["ff"].fits


def test_the_engine_on_the_zcu104_by_hand():
    """16 x 16 tile: DSP 3 x 256 + 18 + 12 = 798; BRAM18 (16 + 32) + (16 + 96) + (16 + 16) + 18 = 210."""
    use = {u.resource: u.used for u in resources.totals(boards.board("zcu104"))}
    assert (use["dsp"], use["bram18"]) == (798, 210)


def test_a_plan_s_speed_and_energy():
    plan = planbuild.from_model("resnet8", 1, 10, 8, "zcu104", 16, 0)[0]
    e = est.estimate(plan)
    macs, cycles = export.engine_cycles(plan)
    assert e["cycles_per_step"] == cycles and e["images_per_s"] == pytest.approx(16 * 200e6 / cycles)
    fwd = sum(16 * o["ho"] * o["wo"] * o["c_out"] * o["c_in"] * o["k"] ** 2 for o in plan.convs())
    counts = est._step_counts(plan, opcount.Precision("fixed", psg=True))
    assert counts["fwd"]["macs"] == {"int8x8": fwd} and counts["bwd_w_pred"]["macs"] == {"int4x16": fwd}
    j = e["joules_per_image"]
    assert 0 < j["engine, fixed point + PSG"] < j["fp32 training, same counts"]
    assert "modeled" in est.text(e) and "over budget" not in est.text(e)


def test_the_cli_prints_the_table_and_refuses_what_does_not_fit(capsys, tmp_path):
    assert main(["estimate", "--board", "zcu104", "--model", "resnet20"]) == 0
    assert "images per second" in capsys.readouterr().out
    assert main(["estimate", "--board", "pynq-z2", "--model", "resnet20"]) == 2
    out, err = capsys.readouterr()
    assert "DSP" in out and "over budget" in out
    assert err.count("\n") == 1 and "DSP 222 > 220" in err
    assert main(["plan", "--model", "resnet8", "--dataset", "digits", "--board", "zcu104", "--batch", "8",
                 "--out", str(tmp_path / "p")]) == 0
    assert main(["estimate", "--plan", str(tmp_path / "p"), "--board", "kv260"]) == 2
    assert "the plan in" in capsys.readouterr().err
