"""Operation accounting against hand counts on a tiny network."""
import pytest

from contract.opcount import LayerGeom, OpCounter, Precision, total_macs
from reference.geometry import layer_geometry
from reference.models import build_model

# stem 1->2 3x3 on 4x4; one gated block (2->2 3x3, twice); classifier 2->3
TINY = [
    LayerGeom("conv1", "stem", 1, 2, 3, 4, 4, 4, 4),
    LayerGeom("blocks.0.conv1", "residual", 2, 2, 3, 4, 4, 4, 4, block=0),
    LayerGeom("blocks.0.conv2", "residual", 2, 2, 3, 4, 4, 4, 4, block=0),
    LayerGeom("fc", "classifier", 2, 3, 1, 1, 1, 1, 1),
]
STEM, RES, FC = 16 * 2 * 1 * 9, 16 * 2 * 2 * 9, 2 * 3  # MACs per sample: 288, 576, 6


def test_fp32_hand_count():
    c = OpCounter(TINY, Precision("fp32"))
    c.add_iteration(batch=4, executed={0: 1})  # the block ran on 1 of 4 samples
    t = c.totals()
    assert t["fwd"]["macs"] == {"fp32": 4 * STEM + 2 * 1 * RES + 4 * FC}
    assert t["bwd_data"]["macs"] == {"fp32": 2 * 1 * RES + 4 * FC}  # no gradient to the image
    assert t["bwd_w_full"]["macs"] == {"fp32": 4 * STEM + 2 * RES + 4 * FC}
    weights = 18 + 36 + 36 + 6
    assert t["update"]["macs"] == {"fp32": 3 * weights}
    # stem forward bytes: x 4*16 floats, W 18 floats, y 4*2*16 floats
    assert c.per_layer["conv1"]["fwd"]["bytes"] == 4 * (4 * 16 + 18 + 4 * 32)
    assert total_macs(t) == sum(sum(p["macs"].values()) for k, p in t.items() if k != "all")


def test_psg_hand_count_and_recompute_share():
    c = OpCounter(TINY, Precision("fixed", psg=True))
    stats = {"blocks.0.conv1": {"pairs_recomputed": 2}, "blocks.0.conv2": {"pairs_recomputed": 0},
             "conv1": {"pairs_recomputed": 2}}
    c.add_iteration(batch=2, executed={0: 2}, psg_stats=stats)
    t = c.totals()
    assert t["fwd"]["macs"] == {"int8x8": 2 * STEM + 2 * 2 * RES, "fp32": 2 * FC}
    assert t["bwd_data"]["macs"] == {"int16x8": 2 * 2 * RES, "fp32": 2 * FC}
    assert t["bwd_w_pred"]["macs"] == {"int4x16": 2 * STEM + 2 * 2 * RES}
    # stem: 2 of 2 pairs recomputed; conv1: 2 of 4; conv2: none
    assert t["bwd_w_full"]["macs"] == {"int8x16": 2 * STEM + 2 * RES // 2, "fp32": 2 * FC}
    assert t["update"]["macs"] == {"int32": 3 * 90, "fp32": 3 * 6}
    # predictor reads x_msb (half a byte) and g (2 bytes) of the stem: 2*16*0.5 + 2*32*2
    assert c.per_layer["conv1"]["bwd_w_pred"]["bytes"] == 2 * 16 * 0.5 + 2 * 32 * 2


def test_dropped_and_coasting_iterations():
    c = OpCounter(TINY, Precision("fp32"))
    c.add_iteration(batch=4, kept=False)
    assert total_macs(c.totals()) == 0 and c.iterations == {"kept": 0, "dropped": 1, "coasted": 0}
    c.add_iteration(batch=4, kept=False, coast=True)
    assert c.totals()["all"]["macs"] == {"fp32": 3 * 96}  # only the update
    assert c.iterations == {"kept": 0, "dropped": 2, "coasted": 1}


@pytest.mark.parametrize("name,macs", [("resnet8", 12_501_632), ("resnet20", 40_813_184)])
def test_geometry_matches_model(name, macs):
    model = build_model(name, 10, 3)
    geoms = layer_geometry(model, 3)
    assert sum(g.macs_per_sample() for g in geoms) == macs  # He et al.'s figures, option-B shortcuts
    assert geoms[0].macs_per_sample() == 16 * 32 * 32 * 3 * 9 and geoms[-1].macs_per_sample() == 640
    roles = [g.role for g in geoms]
    assert roles[0] == "stem" and roles[-1] == "classifier" and roles.count("shortcut") == 2
    assert {g.block for g in geoms if g.role == "residual"} == set(range(len(model.blocks)))
