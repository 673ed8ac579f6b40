"""STATS and APPLY on the engine (contract v2), modeled: ResNet-20's training step today and under v2.

    python bench/per_element_model.py [--boards pynq-z2 zcu104] [--batch 128] [--json out.json]

Today (issue 23's model, ``e2t estimate``'s code path): the engine runs the convs, the board's
ARM runs BatchNorm, ReLU, the residual add, the quantization to the next conv's input and their
backward passes in float32 numpy (host/train/hostwork.py counts them). Under contract v2
(``e2t estimate --elementwise engine``'s step, docs/numerics.md, section 9) the engine runs them
too, as the on-engine trainer's op table (host/train/intops.py) calls them
(host/train/elementwise.py lists the calls), per BatchNorm:

- forward: STATS (SQUARE) over the conv's int32 output y, then its ReLU's APPLY: M1 y (+ M2 times
  the block's shortcut in its second BatchNorm: the int8 activation, or a projection's int32
  output with its own BatchNorm folded into M2 and B), ReLU, int8 out into the next conv's input;
  a projection's BatchNorm has STATS only (its APPLY is the block's);
- backward: its ReLU's APPLY (the mask from the stored int8 activation, and the two gradients of
  a tensor with two consumers aligned, int32 out; none for a projection's BatchNorm, whose
  gradient is its block's), STATS (PRODUCT: g and y), APPLY (P g + Q y + R, int16 out for
  CONV_BWD_DATA and CONV_WGRAD);

and the host keeps O(N x C) work a layer, as that op table counts it (the reductions of APPLY's
plane statistics, the O(channels) rules of the weights' refresh, which the engine runs after each
UPDATE as one STATS and three APPLY calls (contract/weightrefresh.py), the classifier, the loss,
the parameters' SGD; two per-element passes: the images' quantization, the pooled gradient's
broadcast). contract/bncoef.py's rules around each call (the moments, the coefficients and
shifts) are counted from their code (host/train/hostops.py's ``bncoef_work``) and printed apart;
the host's time holds them once the op table's ``work`` counts them. The convs' engine cycles are
unchanged; every STATS and APPLY call adds contract/cycles.py's cycles, as the kernel runs it (per
plane: bursts in, sweep, bursts out, in series) and, in a third column, at its beat bound (the
busier bundle's beats: a pass whose loads, sweep and stores overlapped).
The time is energy/steptime.py's schedule, the joules energy/wholeboard.py's, both as ``e2t
estimate`` uses them. Every figure is modeled; what the model leaves out is printed with it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from contract import cycles, opcount  # noqa: E402
from energy import model as energy_model, steptime, wholeboard  # noqa: E402
from hls import boards, estimate as est, resources  # noqa: E402
from host.data.datasets import shape_of  # noqa: E402
from host.plan import planbuild  # noqa: E402
from host.train import hostops, hostwork, intops  # noqa: E402
from host.train.elementwise import elementwise_calls, elementwise_counts  # noqa: E402

RULES = {("stats", "fwd"): "bn_forward", ("apply", "fwd"): "apply_plan, relu", ("stats", "bwd_data"): "bn_backward",
         ("apply", "bwd_data"): "apply_plan"}  # contract/bncoef.py's rule around each call (hostops.BNCOEF)
COLUMNS = ("today", "v2", "v2_beats")
COLUMN_NAMES = {"today": "today (host float32)", "v2": "v2, kernel as written", "v2_beats": "v2, at its beat bound"}
LEAVES_OUT = ("the driver's register writes, cache maintenance and Python between engine calls, in every column "
              "(v2 adds its STATS / APPLY calls to the convs')",
              "in contract/bncoef.py's rules, apply_plan's second round where a rounded coefficient clips at a "
              "corner, and host/train/intops.py's own small calls around them (host/train/hostops.py, bncoef_work)",
              "DDR contention between the engine's two bundles and the ARM beyond the shared floor",
              "in the beat-bound column, the STATS / APPLY calls' checks and setup (under 1 % of a pass)",
              "v2's accuracy: integer statistics and fused rounding instead of float32 (docs/numerics.md, section 9)")


def resnet20_plan(board: str, batch: int):
    """ResNet-20 on CIFAR-10's images (3 x 32 x 32, 10 classes) for ``board`` at ``batch``."""
    c, k, size = shape_of("cifar10")
    return planbuild.from_model("resnet20", c, k, size, board, batch, 0, False, None, "cifar10")[0]


def rules_work(call: dict) -> dict:
    """The host slot of contract/bncoef.py's rule around one STATS or APPLY call of
    elementwise_calls: bn_forward after the forward STATS, bn_backward after STATS PRODUCT,
    apply_plan before every APPLY (a forward one's, into a ReLU: the box's top alone); not for the
    update's weight-refresh calls, whose rules are their conv's work (hostops.refresh_on_engine_work)."""
    return hostops.bncoef_work(call["shape"][1], RULES[call["op"], call["phase"]])


def conv_streams(s: cycles.ConvShape, op: str) -> tuple[int, int, int]:
    """DDR bytes of one conv call as the kernel moves them, a channel each (hls/regmap.py's
    bundles): read on gmem_rd, read on gmem_wr (x), written on gmem_wr. Forward: W in, x in, int32
    y out; backward: g, W, shifts in, int32 g_x out; the weight gradient (PSG's worst case: the
    predictor's pass, then every tile again): g twice in, x twice and its G (int64) read back twice
    (decide, signs), G written twice and the signs out."""
    x, y, wts = s.n * s.c * s.h * s.w, s.n * s.o * s.ho * s.wo, s.o * s.c * s.k * s.k
    return {"conv_fwd": (wts, x, 4 * y), "conv_bwd_data": (2 * y + wts + s.o, 0, 4 * x),
            "conv_wgrad": (2 * 2 * y, 2 * x + 2 * 8 * wts, 2 * 8 * wts + wts)}[op]


def roofline(b, batch: int, em) -> list[dict]:
    """Each 3 x 3 conv shape's ops: their roofline (the array at its peak for the op; the DDR: the
    busiest of the bundles' three channels at a beat a cycle, all bytes at the board's sustained
    bandwidth; whichever is slowest) as a share of their modeled cycles."""
    per_cycle = em.ddr_bytes_per_s / (b.clock_mhz * 1e6)
    rows = []
    for label, count, s, ests in cycles.resnet20(b, batch):
        if s.k != 3:
            continue
        row = {"layer": label, "count": count}
        for e in ests:
            if e.op != "update":
                streams = conv_streams(s, e.op)
                ddr = max(max(streams) / (b.axi_bits / 8), sum(streams) / per_cycle)
                row[e.op] = {"share": max(e.busy, ddr) / e.cycles, "bound": "array" if e.busy >= ddr else "DDR"}
        rows.append(row)
    return rows


def board_model(name: str, batch: int) -> dict:
    """Today's step and v2's (the kernel as written, and at its beat bound) on board ``name``."""
    plan = resnet20_plan(name, batch)
    em = energy_model.load(name)
    today, v2 = est.estimate(plan), est.estimate(plan, elementwise="engine")
    calls = elementwise_calls(plan)
    beats = [{**k, "cycles": cycles.elementwise_beats(k["op"], *k["shape"], k["mode"], plan.board)} for k in calls]
    per = elementwise_counts(beats, est.conv_counts(plan, opcount.Precision("fixed", psg=True)))
    host = hostwork.step_work(plan, psg=True, table=intops.INT_OPS)
    cols = {"today": today["whole_board"], "v2": v2["whole_board"],
            "v2_beats": wholeboard.epoch({"per_layer": per, "total": opcount.sum_layers(per), "host": host}, em,
                                         plan.board.clock_mhz)}
    hz = plan.board.clock_mhz * 1e6
    rules_s = sum(steptime.host_seconds(rules_work(k), em.host) for k in calls if k["phase"] != "update")
    out = {"board": name, "clock_mhz": plan.board.clock_mhz, "batch": batch, "host_cpu": em.host["cpu"],
           "per_element_s": {"today": 0.0, "v2": sum(k["cycles"] for k in calls) / hz,
                             "v2_beats": sum(k["cycles"] for k in beats) / hz},
           "calls": len(calls), "columns": {},
           "bn_rules_s": {"today": 0.0, "v2": rules_s, "v2_beats": rules_s},
           "roofline": roofline(plan.board, batch, em),
           "resources": {u.resource: (u.used, u.budget) for u in resources.totals(plan.board)},
           "unit": resources.engine(plan.board)["per-element unit"],
           "pixel_lanes": resources.pixel_lanes_built(plan.board)}
    for col, wb in cols.items():
        t = wb["time"]
        out["columns"][col] = {"step_s": t["seconds"], "engine_s": t["engine_s"], "host_s": t["host_s"],
                               "ddr_s": t["ddr_s"], "bound": t["bound"], "ratio": t["seconds"] / t["engine_s"],
                               "host_share": t["host_s"] / t["seconds"], "ddr_bytes": dict(t["bytes"]),
                               "mj_per_image": wb["j"] / batch * 1e3,
                               "mj_parts": {p: v["j"] / batch * 1e3 for p, v in wb["parts"].items()}}
    return out


def text(m: dict) -> str:
    cols = m["columns"]
    L = [f"ResNet-20 on CIFAR-10 (3 x 32 x 32), batch {m['batch']}, {m['board']} at {m['clock_mhz']:g} MHz "
         f"({m['host_cpu']}): modeled, not measured",
         f"  {'':<34}" + "".join(f"{COLUMN_NAMES[c]:>26}" for c in COLUMNS)]

    def row(label, fmt):
        L.append(f"  {label:<34}" + "".join(f"{fmt(cols[c], c):>26}" for c in COLUMNS))

    row("step time (modeled)", lambda v, c: f"{v['step_s']:.2f} s, {v['bound']}-bound")
    row("engine-only time (modeled)", lambda v, c: f"{v['engine_s']:.2f} s")
    row("  of it STATS / APPLY (modeled)", lambda v, c: f"{m['per_element_s'][c]:.2f} s" if c != "today" else "-")
    row("host time (modeled)", lambda v, c: f"{v['host_s']:.3f} s")
    row("  of it bncoef.py's rules (modeled)", lambda v, c: f"{m['bn_rules_s'][c]:.3f} s" if c != "today" else "-")
    row("step / engine-only (modeled)", lambda v, c: f"{v['ratio']:.2f} x")
    row("host share (modeled)", lambda v, c: f"{100 * v['host_share']:.2f} %")
    row("DDR bytes per step (modeled)", lambda v, c: f"{sum(v['ddr_bytes'].values()) / 1e9:.2f} GB")
    row("  engine / host", lambda v, c: f"{v['ddr_bytes']['engine'] / 1e9:.2f} / {v['ddr_bytes']['host'] / 1e9:.2f} GB")
    row("DDR floor (modeled)", lambda v, c: f"{v['ddr_s']:.2f} s")
    row("whole-board energy (modeled)", lambda v, c: f"{v['mj_per_image']:.1f} mJ/img")
    row("step <= 1.25 x engine-only", lambda v, c: "yes" if v["ratio"] <= 1.25 else "no")
    row("host <= 10 % of the step", lambda v, c: "yes" if v["host_share"] <= 0.10 else "no")
    L.append(f"  (v2 adds {m['calls']} STATS / APPLY calls a step.) Each 3 x 3 conv's share of its roofline (array "
             f"peak or DDR, whichever binds; the same convs in every column):")
    for r in m["roofline"]:
        cells = "  ".join(f"{op} {100 * r[op]['share']:.0f} % ({r[op]['bound']})"
                          for op in ("conv_fwd", "conv_bwd_data", "conv_wgrad") if op in r)
        L.append(f"    {r['layer'] + ' x' + str(r['count']):<22}{cells}")
    res = ", ".join(f"{k.upper()} {u:,} / {b:,} ({100 * u / b:.0f} %)" for k, (u, b) in m["resources"].items())
    L.append(f"  the engine with the per-element unit (hls/resources.py, modeled): {res}; the unit "
             f"{m['unit']['lut']:,} LUTs, {m['unit']['bram18']} BRAM18, {m['unit']['dsp']} DSP"
             + ("" if m["pixel_lanes"] else "; no pixel-lane weight gradient (the trim that makes room, docs/engine.md)"))
    L += ["  the model leaves out:"] + [f"    - {x}" for x in LEAVES_OUT]
    return "\n".join(L)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--boards", nargs="+", default=["pynq-z2", "zcu104"], choices=boards.names())
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--json", help="write the figures here as JSON")
    args = ap.parse_args(argv)
    models = [board_model(n, args.batch) for n in args.boards]
    print("\n\n".join(text(m) for m in models))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"kind": "modeled", "models": models, "leaves_out": LEAVES_OUT,
                       "bncoef_calls": {rule: len(passes) for rule, passes in hostops.BNCOEF.items()}}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
