"""First-order resource model of e2t_engine on a board: DSP slices, 18 Kb BRAMs, LUTs and FFs.

It reads the kernel as written (hls/src/e2t_engine.cpp, docs/engine.md) with the board's array
(``array_o x array_i``), maxima and AXI width:

- DSP: the one multiplier array, ``pe_array``: array_o x array_i products of 25 x 18 bits (one
  DSP48E1 / DSP48E2 slice each), shared by every op through one ``array_unit`` (ALLOCATION). The
  update's 64-bit products are pieces on that array, the PSG ratio R max|G| and the per-call
  sizes are shift-and-add loops, addresses are shifts and additions: no other multiplier.
- BRAM: every on-chip buffer as the kernel partitions and binds it (x and g images twice, the
  weight rows, the G store); a bank takes the fewest 18 Kb blocks of any aspect ratio (16K x 1 ...
  512 x 36); each m_axi bundle buffers its bursts in BRAM. The output blocks are LUT-RAM.
- LUT / FF: the operand muxes of the array, the forward adder trees (the backward column sums
  run down the DSP cascade), the weight-gradient lane adders and their shift chain, the
  pixel-lane weight gradient's g registers, per-lane x reads and copy adders (it sums on the
  forward's trees), the banks' rotations, LUT-RAM, the update and PSG datapaths, the AXI adapters and the control, with
  per-unit figures that are estimates (one LUT per adder bit, a 4:1 mux per LUT6, a 64 x 1
  LUT-RAM per LUT, two for a dual-port one).

This is a model: synthesis (``make bitstream``) decides. Every table it feeds says "modeled".
"""
from __future__ import annotations

from dataclasses import dataclass

from contract.boards import Board
from contract.errors import E2TError

from contract.boards import wgp_pack
from contract.cycles import GS_DEPTH, PB  # the kernel's block and G store sizes, one Python source

DSP_PORTS = {"zynq7": (25, 18), "zynqmp": (27, 18)}       # DSP48E1, DSP48E2 multiplier ports
BRAM18_SHAPES = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))
LUTRAM_BITS = 1024            # banks below this go to LUT-RAM or registers
PRODUCT = (25, 18)            # pe_array's operands: A / pre-adder port x B port
M_AXI_BUNDLES = 2             # gmem_rd (reads, in-place master) and gmem_wr (writes, mom, scratch, sgn)
BRAM18_PER_M_AXI = 2          # read and write burst buffers of one adapter
LUT_PER_M_AXI, FF_PER_M_AXI = 1200, 1800
LUT_CONTROL, FF_CONTROL = 6000, 8000   # AXI-Lite registers, checks, the ops' sequencing
PIPELINED_LOOPS = 26          # the kernel's pipelined loops (its E2T_LOOPS labels; tests/test_estimate.py counts them)
LUT_PER_LOOP, FF_PER_LOOP = 150, 100   # counters, address arithmetic and exit test of one loop
UPDATE_LUT, UPDATE_FF = 1500, 600      # UPDATE's 64-bit sums, rounding shifts and saturations
PSG_LUT = 400                 # PSG: |G| >= T and |G| 2^16 >= R max|G| per entry, signs


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
                                 "lut": dsps * (a_bits + b_bits), "ff": 0}  # A, B, M, P registers sit in the slice
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
    mux = lambda ways, bits: bits * -(-ways // 4)  # noqa: E731  (a ways:1 mux per bit, 4:1 per LUT6)
    pack = wgp_pack(b)  # the pixel-lane predictor's two entries a DSP (the kernel's WGP_PACK)
    ports = 2 if pack else 1
    parts["wgrad, pixel lanes"] = {
        "dsp": 0, "bram18": 0,
        # per lane an ai:1 bank mux of x (one a read port in use), its bounds checks and address adder;
        # the next group's g, two lanes a cycle from ao banks; the copy's rest 2^16 + low; packed, a
        # third (4-bit) tree a row
        "lut": ports * ai * (mux(ai, 8) + 40) + 2 * ao * mux(ao, 16) + ao * wide
               + (ao * (ai - 1) * (4 + _log2_ceil(ai)) if pack else 0),
        "ff": 2 * ao * ai * 16 + ai * 24}  # the group's g and the next group's, lane validity and addresses
    parts["bank rotations"] = {"dsp": 0, "bram18": 0,
                               "lut": 2 * ai * mux(ai, 8) + ao * mux(ao, 16) + ai * mux(bw8, 8) + ao * mux(bw16, 16),
                               "ff": 0}
    bram = lutram = 0
    for banks, depth, width, kind in buffers(b).values():
        if kind == "bram":
            bram += banks * bram18(depth, width)
        else:
            lutram += banks * width * 2 * -(-depth // 64)  # simple dual port: two 64 x 1 per bit
    parts["on-chip buffers"] = {"dsp": 0, "bram18": bram, "lut": lutram, "ff": 0}
    parts["update and PSG"] = {"dsp": 0, "bram18": 0, "lut": UPDATE_LUT + PSG_LUT,
                               "ff": UPDATE_FF + (-(-b.max_c // b.tile_o)) * (-(-b.max_c // b.tile_i))}
    parts["AXI and control"] = {"dsp": 0, "bram18": M_AXI_BUNDLES * BRAM18_PER_M_AXI,
                                "lut": M_AXI_BUNDLES * LUT_PER_M_AXI + LUT_CONTROL + PIPELINED_LOOPS * LUT_PER_LOOP,
                                "ff": M_AXI_BUNDLES * FF_PER_M_AXI + FF_CONTROL + PIPELINED_LOOPS * FF_PER_LOOP}
    return parts


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
