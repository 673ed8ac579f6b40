"""e2t estimate: the resource model against hand counts, the modeled speed and energy of a plan,
and the refusal of a configuration over the board's budget."""
from __future__ import annotations

import os

import pytest

from contract import boards, opcount
from e2t.cli import main
from hls import estimate as est, export, resources
from host.plan import planbuild


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
    """PYNQ-Z2 (8 x 16 DSP array, 64 channels, 32 x 32 maps, 3 x 3 taps, 64-bit beats):
    DSP: the one array, 8 x 16 products of 25 x 18 bits = 128 slices (the update's products run on
    it in pieces, the PSG ratio and the sizes are shift-and-add loops), and the per-element unit's
    own, five a lane, two lanes: 138 of 220.
    BRAM18: x images 2 copies x 16 banks x (4 channels x 1024 bytes = 4096 x 8: 2) = 64; g images
    2 x 8 banks x (8 channels x 1024 x 16 bit: 8) = 128; weight rows 16 lanes x (64 x 4 x 16 = 4096
    bytes: 2) = 32; G store 8 rows x (1024 x 48 bit: 3) = 24; 2 m_axi bundles x 2 = 4; the per-element
    unit's arrays of 64 entries, M1, M2 (25 bit), B (57), STATS's sums (36, 54) and extremes (32, 32):
    one block each but B and sum a_t b_t, two: 9; 261 of 280."""
    use = {u.resource: u for u in resources.totals(boards.board("pynq-z2"))}
    assert (use["dsp"].used, use["dsp"].budget, use["dsp"].fits) == (138, 220, True)
    assert (use["bram18"].used, use["bram18"].budget) == (261, 280)
    assert use["lut"].fits and use["ff"].fits and all(u.fits for u in use.values())
    parts = resources.engine(boards.board("pynq-z2"))
    assert {name: p["dsp"] for name, p in parts.items() if p["dsp"]} == {"multiplier array": 128, "per-element unit": 10}


def test_the_model_counts_every_pipelined_loop_of_the_kernel():
    """PIPELINED_LOOPS (their counters and exit tests in LUTs) is the number of the kernel's loop
    labels that -DE2T_TRIPS counts (the E2T_LOOPS list of hls/src/e2t_engine.cpp)."""
    import re
    from hls import csim
    with open(os.path.join(csim.HERE, "src", "e2t_engine.cpp")) as f:
        text = f.read()
    block = text[text.index("#define E2T_LOOPS(X)"):text.index("#define E2T_LOOP_ID")]
    assert len(re.findall(r"X\((\w+)\)", block)) == resources.PIPELINED_LOOPS


def test_the_engine_on_the_zcu104_by_hand():
    """The same 8 x 16 array and maxima on the XCZU7EV (DSP48E2, 128-bit beats): DSP 128 and the
    per-element unit's 4 lanes of 5, BRAM18
    64 + 128 + 32 + 24 + 4 + 9 = 261; the LUT-RAM output blocks have 4 banks a channel for 4-int32 beats."""
    use = {u.resource: u.used for u in resources.totals(boards.board("zcu104"))}
    assert (use["dsp"], use["bram18"]) == (128 + 4 * 5, 261)
    assert all(u.fits for b in boards.names() for u in resources.totals(boards.board(b)))


def test_the_per_element_unit_by_hand():
    """STATS and APPLY as elem_plane computes them, one lane per int32 of a beat (2 on the PYNQ-Z2,
    4 on the ZCU104). A lane: b from the int32 or int8 buffer (a 2:1 mux of 32 bits) and the mask's
    test (8); APPLY's + B (58 bits); the one int64 rounding shift (the half's one-hot 64, the add 64,
    three 4:1 stages of 64: 320) of APPLY's v or STATS's a (a 2:1 mux of 64); RELU / MASK's zero
    (64), the one saturation by the bits above the format: runs of 8, 2, 14 and 33 bits between the
    sign bits of int8, int16, STATS's 18 bits and int32, an all-ones and an all-zeros detector each
    (2 x (2 + 1 + 3 + 6)), a LUT a format and the 4:1 select (29), the clamp (32); STATS's b_t: its
    rounding shift on 33 bits (165), its 18-bit test on the 16 bits above (6), the clamp (18), b_t
    or a_t onto its slice (18); the sums (42, 36, 54), min and max (a compare and a select of 32
    each) of the raw a or the output (a 2:1 mux): 1,106 (1,654 before STATS shared the shift, its
    b_t shift was clamped at 32 bits and the ranges were tested by the bits above). Its own five
    slices a lane (two for each 25 x 32 product of APPLY, one for a_t b_t) and M1 a + M2 b in
    fabric (58): 125 LUTs a lane fewer than on the array's ports."""
    b = boards.board("pynq-z2")
    lane = resources.elementwise_lane_luts()
    assert lane == {"operands": 40, "apply v": 58, "round": 64 + 320, "zero, saturate": 64 + 29 + 32,
                    "stats b_t": 165 + 6 + 18 + 18, "statistics": 42 + 36 + 54 + 128 + 32}
    assert sum(lane.values()) == 1106 and resources.elementwise_lanes(b) == 2
    choice = resources.elementwise_dsp_choice(b)
    assert choice == {"shared": {"dsp": 0, "lut": 2 * (43 + 40 + 42 + 58)}, "added": {"dsp": 10, "lut": 2 * 58}}
    unit = resources.engine(b)["per-element unit"]
    # + the plane sums' 3:1 mux onto the stats port (64), the saturation counter (32 + a lane's bit),
    # 15 new AXI-Lite words' read mux (4 LUT6 a bit: 128), 7 new ports' address adders (224); the
    # streaming's second copies: ac1's 16 x 2 banks of 48 bits take two more writers (1,536), xb1 and
    # gb1 one or two (16 x 8, 8 x 16), each lane's operands from either copy (88) and the store's beat (64)
    assert resources.elementwise_streaming(b) == 1536 + 128 + 128 + 2 * 88 + 64
    assert unit == {"dsp": 10, "bram18": 9, "lut": 2 * 1106 + 116 + 64 + 34 + 128 + 224 + 2032, "ff": unit["ff"]}
    assert resources.engine(boards.board("zcu104"))["per-element unit"]["lut"] == (4 * (1106 + 58) + 64 + 36 + 352
                                                                                   + 3072 + 128 + 128 + 4 * 88 + 128)


def test_the_xc7z020_trims_the_pixel_lanes(monkeypatch):
    """The per-element unit and the pixel-lane weight gradient do not fit the XC7Z020 together: on
    a 64-bit port the engine builds no pixel lanes (the switch of contract/boards.py, which the
    kernel's E2T_WGP_PIX and the cycle model follow): 2,048 LUTs and their three loops' 450."""
    z, p = boards.board("zcu104"), boards.board("pynq-z2")
    assert resources.pixel_lanes_built is boards.pixel_lanes_built
    assert boards.pixel_lanes_built(z) and not boards.pixel_lanes_built(p)
    assert resources.engine(p)["wgrad, pixel lanes"] == {"dsp": 0, "bram18": 0, "lut": 0, "ff": 0}
    assert resources.engine(z)["wgrad, pixel lanes"]["lut"] == 4160 + 450
    lut = {u.resource: u for u in resources.totals(p)}["lut"]
    assert lut.fits
    monkeypatch.setattr(resources, "pixel_lanes_built", lambda b: True)
    assert resources.engine(p)["wgrad, pixel lanes"]["lut"] == 2048 + 450
    assert {u.resource: u for u in resources.totals(p)}["lut"].used == lut.used + 2048 + 450 > lut.budget  # over


def test_a_plan_s_speed_and_energy():
    plan = planbuild.from_model("resnet8", 1, 10, 8, "zcu104", 16, 0)[0]
    e = est.estimate(plan)
    macs, cycles = export.engine_cycles(plan)
    assert e["cycles_per_step"] == cycles and e["images_per_s"] == pytest.approx(16 * 200e6 / cycles)
    fwd = sum(16 * o["ho"] * o["wo"] * o["c_out"] * o["c_in"] * o["k"] ** 2 for o in plan.convs())
    counts = opcount.sum_layers(est.conv_counts(plan, opcount.Precision("fixed", psg=True)))
    assert counts["fwd"]["macs"] == {"int8x8": fwd} and counts["bwd_w_pred"]["macs"] == {"int4x16": fwd}
    j = e["joules_per_image"]
    assert 0 < j["engine, fixed point + PSG"] < j["fp32 training, same counts"]
    assert "modeled" in est.text(e) and "over budget" not in est.text(e)


def test_the_cli_prints_the_table_and_refuses_what_does_not_fit(capsys, tmp_path):
    assert main(["estimate", "--board", "zcu104", "--model", "resnet20"]) == 0
    assert "images per second" in capsys.readouterr().out
    assert main(["estimate", "--board", "pynq-z2", "--model", "resnet20"]) == 0
    out = capsys.readouterr().out
    assert "DSP" in out and "over budget" not in out
    # a 16 x 16 array does not fit the XC7Z020: refused with the resource and both numbers
    import dataclasses
    from contract.errors import E2TError
    big = dataclasses.replace(boards.board("pynq-z2"), array_o=16, array_i=16)
    with pytest.raises(E2TError, match="DSP 266 > 220") as err:  # 256 in the array, 10 in the per-element unit
        resources.refuse_over_budget(big)
    assert "LUT" in str(err.value) and "BRAM18 285 > 280" in str(err.value)  # its G store's 24 more blocks
    assert main(["plan", "--model", "resnet8", "--dataset", "digits", "--board", "zcu104", "--batch", "8",
                 "--out", str(tmp_path / "p")]) == 0
    assert main(["estimate", "--plan", str(tmp_path / "p"), "--board", "kv260"]) == 2
    assert "the plan in" in capsys.readouterr().err


def test_the_whole_board_lines_by_hand():
    """The step's parts: the engine's cycles, the host's counted passes (host/train/hostwork.py) at the
    board's rates, the DDR floor; the two lines a script reads; the joules by part add up."""
    from energy import model as emodel, steptime
    from host.train import hostwork
    plan = planbuild.from_model("resnet8", 1, 10, 8, "pynq-z2", 16, 0)[0]
    e = est.estimate(plan)
    wb, t, em = e["whole_board"], e["whole_board"]["time"], emodel.load("pynq-z2")
    host = hostwork.step_work(plan, psg=True)
    assert t["host_s"] == pytest.approx(sum(steptime.host_seconds(s, em.host) for per in host["per_layer"].values()
                                            for s in per.values()))
    assert t["engine_s"] == pytest.approx(e["cycles_per_step"] / 100e6)
    engine_bytes = opcount.sum_layers(e["per_layer"])["all"]["bytes"]
    assert t["ddr_s"] == pytest.approx((engine_bytes + host["total"]["all"]["bytes"]) / em.ddr_bytes_per_s)
    assert t["engine_s"] + t["host_s"] - t["overlap_s"] == pytest.approx(t["schedule_s"])
    assert t["seconds"] == max(t["schedule_s"], t["ddr_s"])
    assert wb["j"] == pytest.approx(sum(p["j"] for p in wb["parts"].values()))
    assert wb["parts"]["engine"]["j"] == pytest.approx(16 * e["joules_per_image"]["engine, fixed point + PSG"])
    lines = est.text(e).splitlines()
    share = [l for l in lines if l.startswith("host share of the board step: ")]
    energy = [l for l in lines if l.startswith("whole-board energy per image: ")]
    assert share == [f"host share of the board step: {100 * t['host_s'] / t['seconds']:.0f} %"]
    assert energy == [f"whole-board energy per image: {wb['j'] / 16 * 1e3:.3f} mJ"]
    assert f"bound by the {t['bound']}" in est.text(e)
