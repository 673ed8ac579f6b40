"""Analytical cycle model of e2t_engine: loop trip counts x initiation interval, per op and tile.

It follows the loop nest of hls/src/e2t_engine.cpp: every pipelined loop there runs at II = 1
and costs ``trips + depth`` cycles (``depth``: the pipeline's fill, an estimate until a
synthesis report replaces it). Loads are modeled at one element per cycle, as the kernel's
load loops read them. Later issues turn these cycles into board time and modeled energy
without synthesis; ``python -m hls.cycles`` prints the model for ResNet-20's layers.

The figures are a model, not a measurement: they say so wherever they are printed.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

from .boards import DEFAULT_BOARD, BOARDS, Board, board as get_board

DEPTH = {"load": 4, "fwd": 8, "bwd": 10, "wgrad": 8, "write": 6, "decide": 4, "update": 12}


@dataclass(frozen=True)
class ConvShape:
    """The shape registers of one conv call."""

    n: int
    c: int
    h: int
    w: int
    o: int
    k: int
    stride: int
    pad: int

    @property
    def ho(self) -> int:
        return (self.h + 2 * self.pad - self.k) // self.stride + 1

    @property
    def wo(self) -> int:
        return (self.w + 2 * self.pad - self.k) // self.stride + 1

    @property
    def macs(self) -> int:
        return self.n * self.o * self.c * self.k * self.k * self.ho * self.wo


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def _loop(trips: int, depth: str) -> int:
    return trips + DEPTH[depth] if trips > 0 else 0


def _load_act(s: ConvShape, b: Board) -> int:
    return b.tile_i * _loop((s.h + 2 * s.pad) * (s.w + 2 * s.pad), "load")


def _load_grad(s: ConvShape, b: Board) -> int:
    return b.tile_o * _loop(s.ho * s.wo, "load")


def _taps_loop(s: ConvShape, depth: str) -> int:
    return s.k * s.k * s.ho * _loop(s.wo, depth)


def conv_fwd(s: ConvShape, b: Board) -> int:
    pix = s.ho * s.wo
    per_ctile = _load_act(s, b) + b.tile_o * b.tile_i * _loop(s.k * s.k, "load") + _taps_loop(s, "fwd")
    per_otile = _loop(pix, "write") + _ceil(s.c, b.tile_i) * per_ctile + b.tile_o * _loop(pix, "write")
    return s.n * _ceil(s.o, b.tile_o) * per_otile


def conv_bwd_data(s: ConvShape, b: Board) -> int:
    per_otile = _load_grad(s, b) + b.tile_o * b.tile_i * _loop(s.k * s.k, "load") + _taps_loop(s, "bwd")
    per_ctile = (_loop((s.h + 2 * s.pad) * (s.w + 2 * s.pad), "write") + _ceil(s.o, b.tile_o) * per_otile
                 + b.tile_i * s.h * _loop(s.w, "write"))
    return s.o + s.n * _ceil(s.c, b.tile_i) * per_ctile


def wgrad_tile(s: ConvShape, b: Board) -> int:
    """One weight-gradient tile (all images): the unit the PSG recompute is counted in."""
    return _loop(b.max_k * b.max_k, "write") + s.n * (_load_act(s, b) + _load_grad(s, b) + _taps_loop(s, "wgrad"))


def tiles(s: ConvShape, b: Board) -> int:
    return _ceil(s.o, b.tile_o) * _ceil(s.c, b.tile_i)


def conv_wgrad(s: ConvShape, b: Board, psg: bool = False, recomputed: int | None = None) -> int:
    """Pass 1 (G_full, or G_msb under PSG) over every tile; under PSG, pass 2 decides every tile
    and recomputes ``recomputed`` of them (all when not given: the worst case)."""
    t = tiles(s, b)
    entries = b.tile_o * b.tile_i * _loop(s.k * s.k, "write")
    cycles = t * (wgrad_tile(s, b) + entries)
    if psg:
        recomputed = t if recomputed is None else recomputed
        cycles += t * 2 * b.tile_o * b.tile_i * _loop(s.k * s.k, "decide") + recomputed * wgrad_tile(s, b)
    return cycles


def update(count: int) -> int:
    return _loop(count, "update")


def peak_macs_per_cycle(b: Board) -> int:
    """Channel pairs multiplied per cycle in the pipelined loops."""
    return b.tile_o * b.tile_i


@dataclass(frozen=True)
class Estimate:
    """Modeled cycles of one op on one board."""

    op: str
    cycles: int
    macs: int
    board: Board

    @property
    def seconds(self) -> float:
        return self.cycles / (self.board.clock_mhz * 1e6)

    @property
    def utilization(self) -> float:
        return self.macs / (self.cycles * peak_macs_per_cycle(self.board)) if self.cycles else 0.0


def estimate_layer(s: ConvShape, b: Board, psg: bool = True, recomputed: int | None = None) -> list[Estimate]:
    """Forward, backward-to-input, weight gradient (with PSG) and update of one conv layer."""
    weights = s.o * s.c * s.k * s.k
    recomputed = tiles(s, b) if recomputed is None else recomputed
    wg_macs = s.macs + (s.macs * recomputed // tiles(s, b) if psg else 0)  # predictor + recomputed tiles
    return [Estimate("conv_fwd", conv_fwd(s, b), s.macs, b),
            Estimate("conv_bwd_data", conv_bwd_data(s, b), s.macs, b),
            Estimate("conv_wgrad", conv_wgrad(s, b, psg, recomputed), wg_macs, b),
            Estimate("update", update(weights), 0, b)]


RESNET20_LAYERS = (  # (c, o, h, k, stride, count): stem, three stages, projections
    (3, 16, 32, 3, 1, 1), (16, 16, 32, 3, 1, 6), (16, 32, 32, 3, 2, 1), (32, 32, 16, 3, 1, 5), (16, 32, 32, 1, 2, 1),
    (32, 64, 16, 3, 2, 1), (64, 64, 8, 3, 1, 5), (32, 64, 16, 1, 2, 1))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--board", default=DEFAULT_BOARD, choices=sorted(BOARDS))
    p.add_argument("--batch", type=int, default=128)
    args = p.parse_args(argv)
    b = get_board(args.board)
    print(f"modeled (hls/cycles.py, not synthesized): e2t_engine on {b.name} at {b.clock_mhz:g} MHz, "
          f"{b.tile_o}x{b.tile_i} tile, batch {args.batch}, PSG worst case (every tile recomputed)")
    print(f"{'layer (c>o, h, k/s)':<24}{'op':<15}{'cycles':>14}{'ms':>10}{'MAC util':>10}")
    total = 0.0
    for c, o, h, k, stride, count in RESNET20_LAYERS:
        s = ConvShape(args.batch, c, h, h, o, k, stride, (k - 1) // 2)
        for e in estimate_layer(s, b):
            total += count * e.seconds
            print(f"{f'{c}>{o}, {h}, {k}/{stride} x{count}':<24}{e.op:<15}{e.cycles:>14,}{1e3 * e.seconds:>10.2f}"
                  f"{100 * e.utilization:>9.0f}%")
    print(f"one training iteration of ResNet-20's convs: {total:.2f} s modeled")


if __name__ == "__main__":
    main()
