"""First-order resource model of e2t_engine on a board: DSP slices, 18 Kb BRAMs, LUTs and FFs.

It reads the kernel as written (hls/src/e2t_engine.cpp, docs/engine.md) with the board's array
(``array_o x array_i``), maxima and AXI width:

- DSP: the one multiplier array, ``pe_array``: array_o x array_i products of 25 x 18 bits (one
  DSP48E1 / DSP48E2 slice each), shared by the conv ops and UPDATE through one ``array_unit``
  (ALLOCATION); the update's 64-bit products are pieces on that array. The per-element unit
  (STATS, APPLY) has five slices a lane of its own (``elementwise_dsp_choice``: fewer LUTs than
  muxing its operands onto the array). The PSG ratio R max|G| and the per-call sizes are
  shift-and-add loops, addresses are shifts and additions: no other multiplier.
- BRAM: every on-chip buffer as the kernel partitions and binds it (x and g images twice, the
  weight rows, the G store; the per-element unit's per-channel arrays); a bank takes the fewest
  18 Kb blocks of any aspect ratio (16K x 1 ... 512 x 36); each m_axi bundle buffers its bursts in
  BRAM. The output blocks are LUT-RAM.
- LUT / FF: the operand muxes of the array, the forward adder trees (the backward column sums
  run down the DSP cascade), the weight-gradient lane adders and their shift chain, its kernel
  rows in lanes (the loads' shifted planes, per-lane row tests, the flush's entries), the
  pixel-lane weight gradient's g registers, per-lane x reads and copy adders (it sums on the
  forward's trees; built on 128-bit ports only: contract/boards.py's ``pixel_lanes_built``, the
  kernel's E2T_WGP_PIX), the banks' rotations, LUT-RAM, the update and PSG datapaths, the per-element
  unit (``elementwise_unit``), the AXI adapters and the control, with
  per-unit figures that are estimates (one LUT per adder bit, a 4:1 mux per LUT6, a 64 x 1
  LUT-RAM per LUT, two for a dual-port one).

This is a model: synthesis (``make bitstream``) decides. Every table it feeds says "modeled".
"""
from __future__ import annotations

from dataclasses import dataclass

from contract.boards import Board
from contract.errors import E2TError

from contract import numerics as nx
from contract.boards import pixel_lanes_built, wgp_pack
from contract.cycles import GS_DEPTH, PB  # the kernel's block and G store sizes, one Python source

DSP_PORTS = {"zynq7": (25, 18), "zynqmp": (27, 18)}       # DSP48E1, DSP48E2 multiplier ports
BRAM18_SHAPES = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))
LUTRAM_BITS = 1024            # banks below this go to LUT-RAM or registers
PRODUCT = (25, 18)            # pe_array's operands: A / pre-adder port x B port
ARRAY_WAYS = 3                # sources a port bit of the array muxes: weights / activations / update pieces
M_AXI_BUNDLES = 2             # gmem_rd (reads, in-place master) and gmem_wr (writes, mom, scratch, sgn; reads act)
BRAM18_PER_M_AXI = 2          # read and write burst buffers of one adapter
LUT_PER_M_AXI, FF_PER_M_AXI = 1200, 1800
LUT_CONTROL, FF_CONTROL = 6000, 8000   # AXI-Lite registers, checks, the ops' sequencing
PIPELINED_LOOPS = 31          # the kernel's pipelined loops (its E2T_LOOPS labels; tests/test_estimate.py counts them)
PIXEL_LANE_LOOPS = 3          # of them the pixel-lane weight gradient's (WGP_GPRE, WGP_SWEEP, WGP_COPY)
LUT_PER_LOOP, FF_PER_LOOP = 150, 100   # counters, address arithmetic and exit test of one loop
UPDATE_LUT, UPDATE_FF = 1500, 600      # UPDATE's 64-bit sums, rounding shifts and saturations
PSG_LUT = 400                 # PSG: |G| >= T and |G| 2^16 >= R max|G| per entry, signs
# The per-element unit (STATS, APPLY; docs/numerics.md section 9) at the kernel's widths: v = M1 a + M2 b + B
# (|v| < 2^57), the int64 rounding shifts, STATS's channel sums (|sum a_t| <= 2^35, |sum a_t b_t| <= 2^52) and
# raw int32 extremes, APPLY's plane sum of H W outputs
ELEM_V_BITS, ELEM_ROUND_BITS = nx.COEF_B_BITS + 2, 64
ELEM_FORMATS = (8, 16, nx.STAT_BITS, 32)     # the lane's saturation: APPLY's outputs and STATS's a_t
STAT_SHIFT_BITS = 33                         # STATS's b_t shift: an int32 and its rounding half (u <= 32)
ELEM_STAT_BITS = (36, 54, 32, 32)            # a channel's sum a_t, sum a_t b_t, min a, max a
ELEM_PLANE_SUM_BITS = 42
ELEM_NEW_PORTS, ELEM_NEW_WORDS = 7, 15       # src1, src2, mask, coef, dst8, dst16, stats; shift2 + 7 64-bit pointers


def dsp_per_product(a_bits: int, b_bits: int, family: str) -> int:
    """DSP slices of one a x b signed product: the operands split over the ports' widths."""
    big, small = DSP_PORTS[family]
    a, b = max(a_bits, b_bits), min(a_bits, b_bits)
    if a <= big and b <= small:
        return 1
    return -(-a // (big - 1)) * -(-b // (small - 1))  # signed pieces: one bit of each port is the sign


def bram18(depth: int, width: int) -> int:
    """18 Kb blocks of one memory bank (0 below ``LUTRAM_BITS``)."""
    if depth * width < LUTRAM_BITS:
        return 0
    return min(-(-depth // d) * -(-width // w) for d, w in BRAM18_SHAPES)


def _pow2_at_least(v: int) -> int:
    p = 1
    while p < v:
        p *= 2
    return p


def _log2_ceil(v: int) -> int:
    return max(0, (v - 1).bit_length())


def _mux(ways: int, bits: int) -> int:
    """LUTs of a ways:1 mux of ``bits`` bits (4:1 per LUT6)."""
    return bits * -(-ways // 4)


@dataclass(frozen=True)
class Use:
    """Modeled use of one resource against the board's budget."""

    resource: str
    used: int
    budget: int

    @property
    def fits(self) -> bool:
        return self.used <= self.budget


def buffers(b: Board) -> dict[str, tuple[int, int, int, str]]:
    """The kernel's on-chip buffers as banks: name -> (banks, depth, width, storage)."""
    ao, ai = b.array_o, b.array_i
    kk = b.max_k ** 2
    xslots, gslots = -(-b.max_c // ai), -(-b.max_c // ao)
    kkp = 4 if kk <= 4 else 16 if kk <= 16 else 64
    bw32 = b.axi_bits // 32
    nacc = max(2 * ao, ai)
    return {
        "x images (xb0, xb1)": (2 * ai, xslots * b.max_h * b.max_w, 8, "bram"),
        "g images (gb0, gb1)": (2 * ao, gslots * b.max_ho * b.max_wo, 16, "bram"),
        "weight rows (wm)": (ai, b.max_c * _pow2_at_least(xslots) * kkp, 8, "bram"),
        "G store (gs)": (ao, GS_DEPTH, b.acc_wide_bits, "bram"),
        "output blocks (ac0, ac1)": (2 * nacc * bw32, PB // bw32, b.acc_wide_bits, "lutram"),
    }


def engine(b: Board) -> dict[str, dict[str, int]]:
    """Modeled resources of the engine on board ``b``, per part of the kernel."""
    ao, ai = b.array_o, b.array_i
    dsps, fo = ao * ai, 2 * ao
    beat = b.axi_bits // 8
    bw8, bw16 = beat, beat // 2
    wide = b.acc_wide_bits
    sweep = 23 + _log2_ceil(b.max_ho * b.max_wo) + 1   # one sweep's x g sums (|x g| <= 2^22)
    a_bits, b_bits = PRODUCT
    parts = {}
    parts["multiplier array"] = {"dsp": dsps * dsp_per_product(a_bits, b_bits, b.family), "bram18": 0,
                                 # a 3:1 mux in front of each port bit (weights / activations / update pieces)
                                 "lut": dsps * _mux(ARRAY_WAYS, a_bits + b_bits), "ff": 0}  # A, B, M, P in the slice
    tree_bits = 16 + _log2_ceil(ai)
    parts["forward"] = {"dsp": 0, "bram18": 0,
                        # fo adder trees over ai packed halves, the +1s of negative low fields as carries, acc
                        "lut": fo * (ai - 1) * tree_bits + fo * b.acc_fwd_bits,
                        "ff": 2 * fo * ai * 8 + fo * tree_bits * _log2_ceil(ai)}  # weights + next, tree stages
    parts["backward"] = {"dsp": 0, "bram18": 0,
                         # column sums in the DSP cascade; accumulate, align W_q by s[o] (ai 8 -> 20-bit shifters)
                         "lut": ai * wide + ai * 60, "ff": 2 * dsps * 20}
    parts["weight gradient"] = {"dsp": 0, "bram18": 0,
                                # two lane sums a DSP (full: one), the flush chain's load mux, flush adders, x_msb
                                "lut": dsps * (sweep + sweep - 4) + ao * 2 * ai * sweep // 2 + ao * wide + 2 * ai * 8,
                                "ff": dsps * (sweep + sweep - 4) + ao * 2 * ai * sweep}
    built = pixel_lanes_built(b)  # the kernel's WGP_PIX (hls/boards.py)
    pack = built and wgp_pack(b)  # its predictor's two entries a DSP (WGP_PACK)
    ports = 2 if pack else 1
    parts["wgrad, pixel lanes"] = {
        "dsp": 0, "bram18": 0,
        # per lane an ai:1 bank mux of x (one a read port in use), its bounds checks and address adder;
        # the next group's g, two lanes a cycle from ao banks; the copy's rest 2^16 + low; packed, a
        # third (4-bit) tree a row; its three loops
        "lut": built * (ports * ai * (_mux(ai, 8) + 40) + 2 * ao * _mux(ao, 16) + ao * wide
                        + (ao * (ai - 1) * (4 + _log2_ceil(ai)) if pack else 0) + PIXEL_LANE_LOOPS * LUT_PER_LOOP),
        # both groups' g, lane validity and addresses
        "ff": built * (2 * ao * ai * 16 + ai * 24 + PIXEL_LANE_LOOPS * FF_PER_LOOP)}
    xbits = _log2_ceil(b.max_h * b.max_w) + 1  # a pixel of a plane, signed
    parts["wgrad, kernel rows in lanes"] = {
        "dsp": 0, "bram18": 0,
        # built on every board (the channel sweep's fold, k.fold): load_x's plane row and shift (p - ky) W,
        # its pixel j + shift, the DDR address's return to the channel's start and a write enable a
        # byte of the beat; the sweep's row tests (two compares a kernel row), a lane's row select and
        # its two operands' gates (one LUT6 each: the lane's row is a constant of k); the flush's lane
        # (c, ky) counters and G store entry. Its spare lanes (k.sp): a lane's operand from port B in
        # the full pass (a 2:1 mux, two bits a LUT6) and its lane test l >= C k (one LUT6: l is a
        # constant); port B's bank offset and its step, the spare lanes' channel base; in the flush
        # the spare lane test, the counters' restart at the channel base, the tap k - 1 and the write
        # test (c < C, lane < C k + m k); the call's m k - m >= C
        "lut": (2 + 2 * xbits + 32 + 2 * bw8) + (b.max_k * 2 * 3 + 3 * ai) + (2 * _log2_ceil(GS_DEPTH) + 10)
               + ai * (8 // 2 + 1) + (2 * _log2_ceil(ai) + 6) + (3 + 6 + 3 + 3 + 8) + 6,
        "ff": 32 + xbits + 2 + 9 + (_log2_ceil(ai) + 3 * 6 + 16)}
    parts["bank rotations"] = {"dsp": 0, "bram18": 0,
                               "lut": 2 * ai * _mux(ai, 8) + ao * _mux(ao, 16) + ai * _mux(bw8, 8) + ao * _mux(bw16, 16),
                               "ff": 0}
    bram = lutram = 0
    for banks, depth, width, kind in buffers(b).values():
        if kind == "bram":
            bram += banks * bram18(depth, width)
        else:
            lutram += banks * width * 2 * -(-depth // 64)  # simple dual port: two 64 x 1 per bit
    parts["on-chip buffers"] = {"dsp": 0, "bram18": bram, "lut": lutram, "ff": 0}
    flags = (-(-b.max_c // b.tile_o)) * (-(-b.max_c // b.tile_i))  # PSG tiles: a flag register each
    parts["update and PSG"] = {"dsp": 0, "bram18": 0,
                               # + the decide's count of first-flagged tiles: a flag read (flags:1) and its counter
                               "lut": UPDATE_LUT + PSG_LUT + _mux(flags, 1) + _log2_ceil(flags + 1),
                               "ff": UPDATE_FF + flags + _log2_ceil(flags + 1)}
    parts["per-element unit"] = elementwise_unit(b)
    loops = PIPELINED_LOOPS - PIXEL_LANE_LOOPS  # the pixel lanes' are theirs
    parts["AXI and control"] = {"dsp": 0, "bram18": M_AXI_BUNDLES * BRAM18_PER_M_AXI,
                                "lut": M_AXI_BUNDLES * LUT_PER_M_AXI + LUT_CONTROL + loops * LUT_PER_LOOP,
                                "ff": M_AXI_BUNDLES * FF_PER_M_AXI + FF_CONTROL + loops * FF_PER_LOOP}
    return parts


def elementwise_lanes(b: Board) -> int:
    """Lanes of the per-element unit: one per int32 of a beat (the kernel's BW32), so a sweep trip
    takes one beat of src1."""
    return b.axi_bits // 32


def elementwise_dsp_choice(b: Board) -> dict[str, dict[str, int]]:
    """The per-element unit's products two ways, DSP slices and LUTs: ``shared``, on the array (idle
    while STATS and APPLY run: ops are serial): per lane four slices of an array row (M1 and M2,
    25 bits whole on the A port, times a and b in 17-bit pieces on the B port), STATS's a_t b_t on
    the first of them, whose port muxes take a 4th and 5th way (the other three a 4th: still one
    LUT6 a bit), the pieces recombined in fabric, (M1 a_hi + M2 b_hi) 2^17 + M1 a_lo + M2 b_lo;
    ``added``, as the kernel does (elem_plane), slices of its own: each 25 x 32 product whole out of
    two slices chained with the cascade's 17-bit shift, M1 a + M2 b summed in fabric, and STATS's
    a_t b_t on a fifth (it comes after the lane's one rounding shift, APPLY's products before it)."""
    lanes, port = elementwise_lanes(b), sum(PRODUCT)
    big, small = DSP_PORTS[b.family]
    assert nx.COEF_M_BITS + 1 <= big, "a coefficient fits the A port whole"
    slices = 2 * -(-32 // (small - 1))
    hi, lo = nx.COEF_M_BITS + 1 + 32 - (small - 1), nx.COEF_M_BITS + 1 + small - 1  # the pieces' sums' bits
    return {"shared": {"dsp": 0, "lut": lanes * (_mux(ARRAY_WAYS + 2, port) - _mux(ARRAY_WAYS, port)
                                                 + hi + lo + ELEM_V_BITS)},
            "added": {"dsp": lanes * (slices + 1), "lut": lanes * ELEM_V_BITS}}


def _round_shift(bits: int) -> int:
    """LUTs of rshift_round on ``bits`` bits by a register 0..62 (or 0..32: six bits either way): the
    half's one-hot, the add, the arithmetic shift (4:1 mux stages)."""
    return bits + bits + bits * -(-nx.SHIFT_MAX.bit_length() // 2)


def _fits(bits: int, formats: tuple) -> int:
    """LUTs of the test whether a ``bits``-bit value lies in a signed format of ``formats``, by the
    bits above the format (all equal to its sign bit) rather than by compares with its range: an
    all-ones and an all-zeros detector (six inputs a LUT) on each run of bits between two formats'
    sign bits, and with several formats a LUT each to combine its runs and the select among them."""
    edges = sorted(f - 1 for f in formats) + [bits]
    runs = sum(2 * -(-(top - low) // 6) for low, top in zip(edges, edges[1:]))
    return runs + (len(formats) + _mux(len(formats), 1) if len(formats) > 1 else 0)


def elementwise_lane_luts() -> dict[str, int]:
    """LUTs of one lane of the per-element unit as elem_plane computes it (int64 where it is
    int64): its operands (b from the int32 or the int8 buffer, the mask's test); APPLY's v = the
    products + B; the lane's one rounding shift, of APPLY's v or of STATS's a (a 2:1 mux before
    it); RELU / MASK's zero and the one saturation, to APPLY's output format or to STATS's 18 bits
    (``_fits`` over ``ELEM_FORMATS``, then the clamp); STATS's b_t, its own rounding shift on 33
    bits (u clamped at 32, where every int32 rounds to 0 already), its 18-bit test and clamp, and
    the mux of b_t or a_t (SQUARE) onto its slice; the sums (APPLY's plane sum, STATS's sum a_t,
    sum a_t b_t) and the minimum and maximum of the raw a or of the output."""
    return {"operands": _mux(2, 32) + 8, "apply v": ELEM_V_BITS,
            "round": _mux(2, ELEM_ROUND_BITS) + _round_shift(ELEM_ROUND_BITS),
            "zero, saturate": ELEM_ROUND_BITS + _fits(ELEM_ROUND_BITS, ELEM_FORMATS) + 32,
            "stats b_t": _round_shift(STAT_SHIFT_BITS) + _fits(STAT_SHIFT_BITS, (nx.STAT_BITS,)) + nx.STAT_BITS
            + _mux(2, nx.STAT_BITS),
            "statistics": ELEM_PLANE_SUM_BITS + sum(ELEM_STAT_BITS[:2]) + 2 * (32 + 32) + _mux(2, 32)}


def elementwise_streaming(b: Board) -> int:
    """LUTs of the per-element ops' streaming (per_element: a plane loads into one copy of the
    buffers it borrows while the other is swept and stored): the muxes the second copies add, one
    LUT6 a bit up to four sources. Write ports: ac1's banks (nacc x BW32 of acc_wide bits) take the
    plane's load and the sweep's outputs beside the array's sums, xb1 the int8 b, gb1 the mask and
    an int32 b's halves; read side: each lane's a, b (two halves), int8 b and mask from either copy,
    and the store's beat."""
    nacc, lanes = max(2 * b.array_o, b.array_i), elementwise_lanes(b)
    return (nacc * lanes * b.acc_wide_bits + b.array_i * 8 + b.array_o * 16 + lanes * (32 + 32 + 8 + 16)
            + b.axi_bits)


def elementwise_unit(b: Board) -> dict[str, int]:
    """STATS and APPLY's datapath (hls/src/e2t_engine.cpp, elem_plane and per_element):
    ``elementwise_lanes`` lanes (``elementwise_lane_luts``), their products on slices of their own
    (``elementwise_dsp_choice``'s added way: fewer LUTs than the shared one on every board), the
    plane sums' writes, the saturation counter, the new registers (AXI-Lite words, each new m_axi
    port's address adder), the second copies' muxes (``elementwise_streaming``), and the per-channel
    arrays of max_c entries in BRAM: M1, M2, B and STATS's running sums and extremes. The loops'
    counters are "AXI and control"'s (PIPELINED_LOOPS)."""
    lanes, own = elementwise_lanes(b), elementwise_dsp_choice(b)["added"]
    arrays = (nx.COEF_M_BITS + 1, nx.COEF_M_BITS + 1, nx.COEF_B_BITS + 1) + ELEM_STAT_BITS
    lane_ff = 32 + 32 + 8 + ELEM_V_BITS + ELEM_ROUND_BITS + STAT_SHIFT_BITS + 32 + 2 * nx.STAT_BITS \
        + ELEM_PLANE_SUM_BITS + sum(ELEM_STAT_BITS)
    return {"dsp": own["dsp"], "bram18": sum(bram18(b.max_c, w) for w in arrays),
            "lut": lanes * sum(elementwise_lane_luts().values()) + own["lut"] + _mux(3, 64) + 32 + lanes
            + _mux(ELEM_NEW_WORDS, 32) + ELEM_NEW_PORTS * 32 + elementwise_streaming(b),
            "ff": lanes * lane_ff + sum(arrays[:3]) + 32 + ELEM_NEW_WORDS * 32}


def totals(b: Board) -> list[Use]:
    """DSP, BRAM18, LUT and FF of the engine on ``b`` against the board's budget."""
    parts = engine(b)
    return [Use(r, sum(p[r] for p in parts.values()), getattr(b, r)) for r in ("dsp", "bram18", "lut", "ff")]


def refuse_over_budget(b: Board, uses: list[Use] | None = None) -> None:
    """E2TError naming every resource of the engine over board ``b``'s budget, with both numbers."""
    over = [f"{u.resource.upper()} {u.used:,} > {u.budget:,}" for u in (uses or totals(b)) if not u.fits]
    if over:
        raise E2TError(f"the engine configuration of {b.name} is over the board's budget: {'; '.join(over)} "
                       f"(modeled by hls/resources.py; bitstreams/{b.name}/board.json sets the engine's sizes)")


def main(argv=None) -> None:
    import argparse

    from .boards import BOARDS, DEFAULT_BOARD, board as get_board
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--board", default=DEFAULT_BOARD, choices=sorted(BOARDS))
    b = get_board(p.parse_args(argv).board)
    print(f"modeled (hls/resources.py, not synthesized): e2t_engine on {b.name} ({b.part}), "
          f"{b.array_o}x{b.array_i} DSP array")
    print(f"{'part':<22}{'DSP':>8}{'BRAM18':>8}{'LUT':>9}{'FF':>9}")
    for name, u in engine(b).items():
        print(f"{name:<22}{u['dsp']:>8,}{u['bram18']:>8,}{u['lut']:>9,}{u['ff']:>9,}")
    use = totals(b)
    print(f"{'total':<22}" + "".join(f"{u.used:>{8 if i < 2 else 9},}" for i, u in enumerate(use)))
    print(f"{'budget':<22}" + "".join(f"{u.budget:>{8 if i < 2 else 9},}" for i, u in enumerate(use)))


if __name__ == "__main__":
    main()
