"""First-order resource model of e2t_engine on a board: DSP slices, 18 Kb BRAMs, LUTs and FFs.

It reads the kernel as written (hls/src/e2t_engine.cpp) with the board's tile:

- DSP: each op (forward, backward to the input, weight gradient) has its own unrolled array of
  ``tile_o x tile_i`` multipliers (the kernel shares none across ops), each product as many
  DSP slices as its operand widths need (25 x 18 bits on a DSP48E1, 27 x 18 on a DSP48E2); the
  update's three 64 x 32-bit products and the adaptive PSG threshold's 64 x 64 one add theirs.
- BRAM: every on-chip buffer partitioned as the kernel's pragmas say; a bank of 1 Kbit or more
  takes the fewest 18 Kb blocks of any aspect ratio (16K x 1 ... 512 x 36), a smaller one
  goes to LUTs or registers; each ``m_axi`` adapter buffers its bursts in BRAM.
- LUT / FF: adders of the accumulators, LUT-RAM banks, the AXI adapters and the control,
  with per-unit figures that are estimates.

This is a model: synthesis (``make bitstream``) decides. Every table it feeds says "modeled".
"""
from __future__ import annotations

from dataclasses import dataclass

from host.boards import Board
from host.errors import E2TError

DSP_PORTS = {"zynq7": (25, 18), "zynqmp": (27, 18)}       # DSP48E1, DSP48E2 multiplier ports
BRAM18_SHAPES = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))
LUTRAM_BITS = 1024            # banks below this go to LUT-RAM or registers
M_AXI_BUNDLES = 9             # the kernel's m_axi interfaces (one per DDR buffer)
BRAM18_PER_M_AXI = 2          # read and write burst buffers of one adapter
LUT_PER_M_AXI, FF_PER_M_AXI = 1200, 1800
LUT_CONTROL, FF_CONTROL = 6000, 8000   # AXI-Lite registers, loop control, address arithmetic, checks
SCALAR_PRODUCTS = ((64, 32), (64, 32), (64, 32), (64, 64))  # update: WD*w, MU*b, LR*b; PSG ratio


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


@dataclass(frozen=True)
class Use:
    """Modeled use of one resource against the board's budget."""

    resource: str
    used: int
    budget: int

    @property
    def fits(self) -> bool:
        return self.used <= self.budget


def engine(b: Board) -> dict[str, dict[str, int]]:
    """Modeled resources of the engine on board ``b``, per part of the kernel."""
    to, ti, kk = b.tile_o, b.tile_i, b.max_k ** 2
    xb = (b.max_h + 2 * b.max_pad) * (b.max_w + 2 * b.max_pad)
    pix = b.max_ho * b.max_wo
    fam, acc, wide = b.family, b.acc_fwd_bits, b.acc_wide_bits
    arrays = {  # part: (product widths, accumulator bits, BRAM banks as (count, depth, width))
        "forward": ((8, 8), acc, [(ti, xb, 8), (to, pix, acc), (to * ti, kk, 8)]),
        "backward_data": ((16, 20), wide, [(to, pix, 16), (ti, xb, wide), (to * ti, kk, 20)]),
        "wgrad": ((8, 16), wide, [(ti, xb, 8), (to, pix, 16), (2 * to * ti, kk, wide)]),
    }
    parts = {}
    for name, ((wa, wb), acc_bits, banks) in arrays.items():
        lutram = sum(n * w * -(-d // 64) for n, d, w in banks if d * w < LUTRAM_BITS)
        parts[name] = {"dsp": to * ti * dsp_per_product(wa, wb, fam),
                       "bram18": sum(n * bram18(d, w) for n, d, w in banks),
                       "lut": to * ti * acc_bits + lutram,   # one adder bit per LUT, LUT-RAM 64 x 1 per LUT
                       "ff": to * ti * (acc_bits + wa + wb)}  # pipeline registers of operands and sums
    parts["update_and_psg"] = {"dsp": sum(dsp_per_product(a, c, fam) for a, c in SCALAR_PRODUCTS),
                               "bram18": 0, "lut": 64 * 8, "ff": 64 * 12}
    parts["axi_and_control"] = {"dsp": 0, "bram18": M_AXI_BUNDLES * BRAM18_PER_M_AXI,
                                "lut": M_AXI_BUNDLES * LUT_PER_M_AXI + LUT_CONTROL,
                                "ff": M_AXI_BUNDLES * FF_PER_M_AXI + FF_CONTROL}
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
