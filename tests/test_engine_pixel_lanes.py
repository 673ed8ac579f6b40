"""CONV_WGRAD's pixel-lane sweep (hls/src/e2t_engine.cpp, wgp_tile: stride 1, C <= AI / 2 input
channels, output rows of Wo >= AI / 2 pixels; the stem's shape) in the kernel builds, against the
numeric contract: integers only, on both sides of every condition and at the largest sums. The
lanes are built on the 128-bit boards (contract/boards.py, pixel_lanes_built: the kernel's
E2T_WGP_PIX): the ZCU104 runs them, its predictor packing two entries a DSP (WGP_PACK), whose field
split the extreme operands test; the PYNQ-Z2 (64-bit port, the XC7Z020's trim) runs the channel
sweep on the same shapes, with the kernel rows folded into the lanes where C k <= AI (wg_tile's
k.fold: lane c k + ky, x's planes shifted by the loads), to the same integers; and a PYNQ-Z2 build
with the lanes forced on (no board's configuration today) keeps the unpacked predictor, one entry a
DSP, tested. The fast build has its own weight gradient (tests/test_engine.py covers it)."""
import numpy as np
import pytest

from contract import cycles, numerics as nx
from hls import boards
from hls.csim import Engine

LANES_ON = "pynq-z2+lanes"  # the PYNQ-Z2's configuration with E2T_WGP_PIX 1
KERNEL_ENGINES = [(v, b) for b in ("pynq-z2", "zcu104") for v in ("native", "ap")] + [("native", LANES_ON)]
HALF = boards.board("pynq-z2").array_i // 2
assert HALF == boards.board("zcu104").array_i // 2 == 8

# (n, c, o, h, w, k, stride, pad) with what each one reaches
EDGES = [
    (2, 8, 9, 5, 8, 3, 1, 1),     # C = AI / 2 (the largest pixel-lane C), Wo = AI / 2 (the shortest row)
    (2, 9, 9, 5, 8, 3, 1, 1),     # C = AI / 2 + 1: the channel sweep
    (2, 3, 8, 5, 7, 3, 1, 1),     # Wo = AI / 2 - 1: the channel sweep
    (1, 3, 16, 6, 10, 3, 1, 0),   # Wo = 8 without padding
    (2, 3, 16, 32, 32, 3, 1, 1),  # the stem at 2 images: Wo = 32, two groups a row, C k^2 = 27 (odd: a half pair)
    (1, 5, 17, 4, 20, 3, 1, 1),   # a partial group (20 = 16 + 4), an output channel past the array's rows
    (2, 8, 20, 4, 17, 2, 1, 0),   # k = 2
    (1, 1, 1, 1, 8, 1, 1, 0),     # one entry (C k^2 = 1 < AI / 2: the group lasts AI / 2 cycles)
    (3, 2, 9, 3, 32, 1, 1, 0),    # k = 1, three images
    (1, 8, 64, 3, 20, 3, 1, 1),   # C k^2 = 72: one output group a pass, eight passes
    (1, 7, 24, 3, 16, 3, 1, 1),   # C k^2 = 63: two groups a pass (126 of the output block's 128 pixels)
    (1, 3, 16, 9, 32, 3, 2, 1),   # stride 2: the channel sweep
    # the kernel rows in lanes where no pixel lanes run (C k <= AI = 16, k >= 2) and their edges
    (2, 5, 9, 6, 6, 3, 1, 1),     # C k = 15, Wo = 6 (no lanes on any board)
    (2, 6, 9, 6, 6, 3, 1, 1),     # C k = 18: the plain channel sweep
    (1, 8, 9, 5, 5, 2, 2, 1),     # C k = 16 at k = 2, stride 2, pad 1 (a plane shifted one row down)
    (3, 3, 17, 1, 7, 3, 1, 1),    # a one-row map: two of each channel's three planes shifted off it
    (2, 1, 4, 28, 28, 3, 1, 1),   # MNIST's stem, 28 x 28 (shifted rows not whole beats on either board)
    # the folded full pass's spare lanes (column k - 1 in lanes C k.., m = (AI - C k) // k channels a
    # sweep, (k - 1) m >= C): the stem's above (m = 2, lane 15 idle, the second sweep's past C)
    (2, 4, 9, 6, 6, 2, 1, 0),     # k = 2, C = m = 4: the limit, one sweep
    (2, 5, 9, 6, 6, 2, 1, 0),     # k = 2, C = 5 > m = 3: two sweeps, no spare lanes
    (2, 4, 9, 6, 6, 3, 1, 1),     # k = 3, C = 4: (k - 1) m = 2 < 4, no spare lanes
]


@pytest.fixture(scope="module", params=KERNEL_ENGINES, ids=[f"{b}-{v}" for v, b in KERNEL_ENGINES])
def engine(request):
    variant, board = request.param
    with pytest.MonkeyPatch.context() as mp:
        if board == LANES_ON:
            header = boards.config_header
            mp.setattr(boards, "config_header", lambda b, origin=None: header(b, origin).replace(
                "#define E2T_WGP_PIX 0", "#define E2T_WGP_PIX 1"))
        e = Engine(variant, board=board.split("+")[0], log=lambda m: None)
    e.board_name = e.board.name
    e.lanes = board == LANES_ON or boards.pixel_lanes_built(e.board)
    return e


def operands(rng, n, c, o, h, w, k, s, p):
    ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    return rng.integers(-128, 128, (n, c, h, w)), rng.integers(-32768, 32768, (n, o, ho, wo))


def check_every_mode(engine, x, g, k, s, p):
    """FULL, and PSG by |G_msb| (T = 0, the median, 2^62) and by ratio (0, 0.3, 1): G, signs and
    the counters equal the contract's."""
    b = boards.board(engine.board_name)
    G, none, st = engine.conv_wgrad(x, g, k, s, p, "full")
    g_full = nx.conv_wgrad(x, g, k, s, p, 128)
    assert none is None and st["status"] == 0 and np.array_equal(G, g_full)
    g_msb = nx.conv_wgrad(nx.msb(x), g, k, s, p, 8)
    median = int(np.median(np.abs(g_msb)))
    for mode, thr, ref in (("abs", 0, {"T": 0}), ("abs", median, {"T": median}), ("abs", 1 << 62, {"T": 1 << 62}),
                           ("ratio", 0, {"R": 0}), ("ratio", nx.ratio_fixed(0.3), {"R": nx.ratio_fixed(0.3)}),
                           ("ratio", 1 << 16, {"R": 1 << 16})):
        G, sign, st = engine.conv_wgrad(x, g, k, s, p, mode, thr)
        want, sure = nx.psg_select(g_msb, g_full, **ref)
        tiles, recomputed, _ = nx.uncertain_tiles(sure, b.tile_o, b.tile_i)
        assert np.array_equal(G, g_msb) and np.array_equal(sign, want), (mode, thr)
        assert (st["psg_sure"], st["psg_tiles"], st["psg_recomputed"]) == (int(sure.sum()), tiles, recomputed)


@pytest.mark.parametrize("shape", EDGES, ids=["x".join(map(str, t)) for t in EDGES])
def test_pixel_lanes_and_their_edges_equal_the_contract(engine, shape):
    n, c, o, h, w, k, s, p = shape
    b = boards.board(engine.board_name)
    s_ = cycles.ConvShape(n, c, h, w, o, k, s, p)
    # the condition as the kernel states it (the model's pixel_lanes follows the kernel, tests/test_cycles.py)
    lanes = s == 1 and c <= HALF and s_.wo >= HALF
    assert cycles.pixel_lanes(s_, b) == (lanes and boards.pixel_lanes_built(b))
    x, g = operands(np.random.default_rng(sum(shape)), *shape)
    check_every_mode(engine, x, g, k, s, p)


def test_the_switch_changes_cycles_not_numbers(monkeypatch):
    """The stem's weight gradient with and without the lanes (the ZCU104's native build and the
    PYNQ-Z2's): the same G and signs in every mode; the channel sweep with its kernel rows folded
    into the lanes and the full pass's last column in the spare lanes costs the PYNQ-Z2 what the
    lanes would (modeled: 10.7 ms a step at batch 128, both bound by g's loads); without the spare
    lanes 1.24 times (13.3 ms), unfolded more than three times (36.9 ms)."""
    pix, chan = (Engine("native", board=name, log=lambda m: None) for name in ("zcu104", "pynq-z2"))
    x, g = operands(np.random.default_rng(7), 2, 3, 16, 32, 32, 3, 1, 1)
    for mode, thr in (("full", 0), ("abs", 0), ("ratio", nx.ratio_fixed(0.3))):
        a, b = pix.conv_wgrad(x, g, 3, 1, 1, mode, thr), chan.conv_wgrad(x, g, 3, 1, 1, mode, thr)
        assert np.array_equal(a[0], b[0]) and (a[1] is b[1] is None or np.array_equal(a[1], b[1])), mode
    s, p = cycles.ConvShape(128, 3, 32, 32, 16, 3, 1, 1), boards.board("pynq-z2")
    assert not cycles.pixel_lanes(s, p) and cycles.pixel_lanes(s, boards.board("zcu104")) and cycles.tap_rows(s, p)
    assert cycles.spare_lanes(s, p)
    folded = cycles.conv_wgrad(s, p, psg=True)
    with monkeypatch.context() as m:
        m.setattr(cycles, "spare_lanes", lambda s, b: False)
        no_spare = cycles.conv_wgrad(s, p, psg=True)
        m.setattr(cycles, "tap_rows", lambda s, b: False)
        unfolded = cycles.conv_wgrad(s, p, psg=True)
    monkeypatch.setattr(cycles, "pixel_lanes_built", lambda b: True)
    lanes = cycles.conv_wgrad(s, p, psg=True)
    assert cycles.pixel_lanes(s, p) and lanes < folded < 1.01 * lanes
    assert 1.2 * lanes < no_spare < 1.3 * lanes and unfolded > 3 * lanes


def test_pixel_lanes_at_the_largest_sums(engine):
    """x = -128 or 127 and g = -32768 or alternating +-32767 over the largest batch at a 32 x 32 map,
    3 channels (the stem), and a checkerboard of x: full sums 2^40, predictor sums 2^36, in both
    fields of a packed DSP. The
    ap build takes 8 images (the same fields, sums 2^35). The PYNQ-Z2 runs the stem with its kernel
    rows in the lanes, whose packed predictor holds neighbouring columns kx, kx + 1 of one row: 8
    images, the ap build 2 (an image's sweep sums are what the fields split; the widest sums over
    the full batch are tests/test_engine_boundary.py's, folded too)."""
    if engine.lanes != boards.pixel_lanes_built(engine.board):
        pytest.skip("the PYNQ-Z2 with lanes forced on: its edges above")
    zcu, ap = engine.board_name == "zcu104", engine.variant == "ap"
    n = (8 if ap else boards.board(engine.board_name).max_batch) if zcu else (2 if ap else 8)
    c, o, h, w, k, s, p = 3, 16, 32, 32, 3, 1, 1
    alternating = np.where(np.arange(h * w).reshape(h, w) % 2, 32767, -32768) * np.ones((n, o, 1, 1), np.int64)
    # a checkerboard of -128 and 127: the two entries of a packed DSP (neighbouring taps) of opposite signs
    board = np.where(np.add.outer(np.arange(h), np.arange(w)) % 2, 127, -128) * np.ones((n, c, 1, 1), np.int64)
    for x, g in ((-128, np.full((n, o, h, w), -32768)), (127, alternating), (-128, alternating),
                 (board, np.full((n, o, h, w), -32768)), (board, alternating)):
        check_every_mode(engine, np.broadcast_to(x, (n, c, h, w)), g, k, s, p)
    x = np.full((n, c, h, w), -128)
    g_full = nx.conv_wgrad(x, np.full((n, o, h, w), -32768), k, s, p, 128)
    assert g_full.max() == 128 * 32768 * n * h * w
