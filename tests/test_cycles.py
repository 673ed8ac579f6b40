"""The analytical cycle model (hls/cycles.py): hand counts on a tiny layer, and its shape."""
from hls import cycles
from hls.boards import board

B = board("pynq-z2")  # 8 x 8 tile
D = cycles.DEPTH


def test_one_pixel_conv_by_hand():
    s = cycles.ConvShape(n=1, c=1, h=1, w=1, o=1, k=1, stride=1, pad=0)
    zero, write = 1 + D["write"], B.tile_o * (1 + D["write"])
    load_act, load_wgt = B.tile_i * (1 + D["load"]), B.tile_o * B.tile_i * (1 + D["load"])
    assert cycles.conv_fwd(s, B) == zero + load_act + load_wgt + (1 + D["fwd"]) + write
    tile = (9 + D["write"]) + load_act + B.tile_o * (1 + D["load"]) + (1 + D["wgrad"])
    store = B.tile_o * B.tile_i * (1 + D["write"])
    assert cycles.conv_wgrad(s, B) == tile + store
    decide = 2 * B.tile_o * B.tile_i * (1 + D["decide"])
    assert cycles.conv_wgrad(s, B, psg=True, recomputed=0) == tile + store + decide
    assert cycles.conv_wgrad(s, B, psg=True) == 2 * tile + store + decide
    assert cycles.update(100) == 100 + D["update"]


def test_model_scales_with_the_work():
    s = cycles.ConvShape(8, 16, 16, 16, 32, 3, 1, 1)
    double_batch = cycles.ConvShape(16, 16, 16, 16, 32, 3, 1, 1)
    assert cycles.conv_fwd(double_batch, B) == 2 * cycles.conv_fwd(s, B)
    # the predictor pass runs the same loop as the full one: PSG saves multiplier energy, not cycles
    assert cycles.conv_wgrad(s, B) < cycles.conv_wgrad(s, B, psg=True, recomputed=0) < cycles.conv_wgrad(s, B, psg=True)
    wide = board("zcu104")  # 16 x 16 tile at 200 MHz
    fast, slow = cycles.estimate_layer(s, wide)[0], cycles.estimate_layer(s, B)[0]
    assert fast.seconds < slow.seconds and 0 < slow.utilization <= 1 and 0 < fast.utilization <= 1
