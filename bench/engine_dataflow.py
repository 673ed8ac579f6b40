"""The engine's dataflow on the fabric, modeled: how busy the multiplier array is on ResNet-20.

    python bench/engine_dataflow.py [--boards pynq-z2 zcu104] [--batch 128] [--json out.json]

For every ResNet-20 conv layer and op (forward, backward to the input, weight gradient with PSG
in its worst case: the predictor, then every tile recomputed) on each board: MACs per cycle
against the array's peak for that op (forward and the PSG predictor pack two products a DSP),
from contract/cycles.py, which walks the kernel's loop nest (hls/src/e2t_engine.cpp). Then one
training iteration (batch 128; no backward-data for the stem, which has no input gradient):
modeled seconds, images per second and GOPS (2 ops a MAC), next to the figures published for
two FPGA training accelerators. Ours are modeled (no synthesis, no board); theirs are measured
on their own designs, networks and number formats, so the rows compare orders of magnitude, not
equal work. Resource use (hls/resources.py, modeled) closes each board's table.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from contract import cycles  # noqa: E402
from hls import boards, resources  # noqa: E402

PUBLISHED = [  # as published (figures quoted in issue 14), not re-measured here
    ("EF-Train (published)", "46.99 GFLOPS", "6.09 GFLOPS/W", "fp32 training"),
    ("BOOST (published)", "131-209 GOPS", "-", "block-minifloat training"),
]
OPS = ("conv_fwd", "conv_bwd_data", "conv_wgrad")


def board_table(name: str, batch: int) -> dict:
    b = boards.board(name)
    rows, seconds, macs = [], 0.0, 0
    for label, count, _, ests in cycles.resnet20(b, batch):
        row = {"layer": label, "count": count}
        for e in ests:  # the stem has no conv_bwd_data (no input gradient in training): "-" below
            seconds += count * e.seconds
            macs += count * e.macs
            if e.op in OPS:
                row[e.op] = {"cycles": e.cycles, "macs_per_cycle": e.macs / e.cycles, "utilization": e.utilization}
        rows.append(row)
    use = {u.resource: (u.used, u.budget) for u in resources.totals(b)}
    return {"board": name, "clock_mhz": b.clock_mhz, "array": f"{b.array_o}x{b.array_i}", "dsps": b.array_o * b.array_i,
            "peaks": {op: cycles.peak_macs_per_cycle(b, op) for op in ("fwd", "bwd", "wgrad_pred", "wgrad_full")},
            "layers": rows, "iteration_s": seconds, "images_per_s": batch / seconds,
            "gops": 2 * macs / seconds / 1e9, "macs_per_iteration": macs, "resources": use}


def text(t: dict, batch: int) -> str:
    p = t["peaks"]
    L = [f"{t['board']}: {t['array']} DSP array at {t['clock_mhz']:g} MHz, batch {batch}, modeled (contract/cycles.py, "
         f"not synthesized)",
         f"  peak MACs/cycle: forward {p['fwd']}, backward {p['bwd']}, PSG predictor {p['wgrad_pred']}, "
         f"full weight gradient {p['wgrad_full']}",
         f"  {'layer (c>o, h, k/s)':<22}" + "".join(f"{op:>24}" for op in OPS)]
    for r in t["layers"]:
        cells = []
        for op in OPS:
            v = r.get(op)
            cells.append(f"{'-':>24}" if v is None else f"{v['macs_per_cycle']:>11.1f} MAC/c {100 * v['utilization']:>5.0f} %")
        L.append(f"  {r['layer'] + ' x' + str(r['count']):<22}" + "".join(cells))
    L.append(f"  (weight gradient: MACs of the predictor and of the full recompute together; % of the array busy)")
    L.append(f"  one training iteration: {t['iteration_s']:.3f} s modeled = {t['images_per_s']:.0f} images/s, "
             f"{t['gops']:.1f} GOPS (int8 / int4 x int16 MACs, 2 ops a MAC)")
    res = ", ".join(f"{k.upper()} {u:,} / {b:,}" for k, (u, b) in t["resources"].items())
    L.append(f"  resources (hls/resources.py, modeled): {res}")
    return "\n".join(L)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--boards", nargs="+", default=["pynq-z2", "zcu104"], choices=boards.names())
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--json", help="write the tables here as JSON")
    args = ap.parse_args(argv)
    tables = [board_table(n, args.batch) for n in args.boards]
    for t in tables:
        print(text(t, args.batch))
        print()
    print(f"{'accelerator':<34}{'throughput':>16}{'efficiency':>18}  training")
    for t in tables:
        print(f"{'e2t on ' + t['board'] + ' (modeled)':<34}{t['gops']:>11.1f} GOPS{'not modeled':>18}  "
              f"int8 / int16 fixed point + PSG, {t['images_per_s']:.0f} images/s ResNet-20")
    for name, thr, eff, what in PUBLISHED:
        print(f"{name:<34}{thr:>16}{eff:>18}  {what}")
    print("(ours: modeled cycles of this kernel, no synthesis or board; published: measured by their authors on "
          "their own networks and number formats. Board power is not modeled here, so no GOPS/W of ours.)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"tables": tables, "published": PUBLISHED}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
