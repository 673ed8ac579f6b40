"""``e2t estimate``: what a board would do with a network, before buying one or running Vivado.

For a plan (``--plan DIR``, or one built from ``--model`` and ``--dataset``): the engine's
DSP, BRAM, LUT and FF use against the board's budget (hls/resources.py), engine cycles per
training step (contract/cycles.py, through hls/export.py's per-layer costs), images per second at
the board's clock, and joules per image from the board's energy model (energy/model.py) for
the engine's fixed-point training and for fp32 training on the same counts. With ``--elementwise
engine`` the step is contract v2's (host/train/intops.py): BatchNorm, ReLU, the residual add and the
quantization as the engine's STATS and APPLY calls beside the convs (host/train/elementwise.py),
the host left with its op table's work (SLU gates: every gate on, as the host's count). Every
figure is modeled. A configuration over the board's BRAM, LUT or FF budget is refused after the table,
with the resource and both numbers; a multiplier array over its DSP budget already when
board.json loads (contract/boards.py), before any table.
"""
from __future__ import annotations

import os

from contract import cycles as cycle_model, opcount
from contract.boards import DATA, DEFAULT_BOARD, board, check_fit
from contract.errors import E2TError
from energy import model as energy_model, wholeboard
from host.plan import schema as planmod
from host.train import hostwork, intops
from host.train.config import ELEMENTWISE
from host.train.elementwise import elementwise_calls, elementwise_counts

from . import export, resources


def conv_counts(plan: planmod.Plan, precision: opcount.Precision) -> dict:
    """contract/opcount.py's counts of one training step at the plan's batch, per conv in plan
    order (PSG's worst case: every tile recomputed), each slot with its modeled engine ``cycles``
    (contract/cycles.py, as hls/export.py's layer costs: the weight gradient's in its first phase)."""
    per_layer: dict = {}
    for op in plan.convs():
        g = opcount.LayerGeom(op["name"], "residual" if op["input_grad"] else "stem", op["c_in"], op["c_out"],
                              op["k"], op["h"], op["w"], op["ho"], op["wo"])
        cycles = cycle_model.phase_cycles(cycle_model.conv_shape(op, plan.batch), plan.board, precision.psg,
                                          op["input_grad"])
        per_layer[op["name"]] = {phase: {**slot, "cycles": cycles.get(phase, 0)}
                                 for phase, slot in opcount.layer_ops(g, plan.batch, precision).items()}
    return per_layer


def _whole_board(plan: planmod.Plan, per_layer: dict, em, host: dict) -> dict:
    """The board's modeled step (energy/steptime.py) and joules by part (energy/wholeboard.py)
    of the fixed-point + PSG step: the engine's counts and the host's (``host``, host/train/hostwork.py's)."""
    engine = per_layer["engine, fixed point + PSG"]
    ops = {"per_layer": engine, "total": opcount.sum_layers(engine), "host": host}
    return wholeboard.epoch(ops, em, plan.board.clock_mhz)


def estimate(plan: planmod.Plan, energy_file: str | None = None, elementwise: str = "host") -> dict:
    """The modeled figures of ``plan`` on its board; ``elementwise`` "engine": contract v2's step,
    its STATS and APPLY calls counted with the convs' (the fp32 comparison keeps the convs' alone)."""
    b, v2 = plan.board, elementwise == "engine"
    calls = elementwise_calls(plan) if v2 else []
    host = hostwork.step_work(plan, psg=True, table=intops.INT_OPS) if v2 else hostwork.step_work(plan, psg=True)
    macs, cycles = export.engine_cycles(plan)
    macs, cycles = macs + sum(k["macs"] for k in calls), cycles + sum(k["cycles"] for k in calls)
    seconds = cycles / (b.clock_mhz * 1e6)
    em = energy_model.load(b.name, energy_file)
    joules, per_layer = {}, {}
    for name, prec in (("engine, fixed point + PSG", opcount.Precision("fixed", psg=True)),
                       ("fp32 training, same counts", opcount.Precision("fp32"))):
        per_layer[name] = conv_counts(plan, prec)
        if prec.mode == "fixed":
            elementwise_counts(calls, per_layer[name])
        total = opcount.sum_layers(per_layer[name])
        joules[name] = sum(em.price(slot)["j"] for phase, slot in total.items() if phase != "all") / plan.batch
    return {"board": b.name, "part": b.part, "clock_mhz": b.clock_mhz, "tile": f"{b.tile_o}x{b.tile_i} PSG tile, {b.array_o}x{b.array_i} DSP array",
            "model": plan.network["model"], "batch": plan.batch, "resources": resources.totals(b),
            "macs_per_step": macs, "cycles_per_step": cycles, "seconds_per_step": seconds,
            "images_per_s": plan.batch / seconds, "joules_per_image": joules,
            "per_layer": per_layer["engine, fixed point + PSG"],
            "whole_board": _whole_board(plan, per_layer, em, host),
            "host_cpu": em.host["cpu"], "energy_model": os.path.relpath(em.path, os.path.dirname(DATA)) if em.path.startswith(DATA) else em.path,
            "energy_table": em.table,
            "elementwise": {"calls": len(calls), "cycles": sum(k["cycles"] for k in calls),
                            "macs": sum(k["macs"] for k in calls)} if v2 else None}


def text(e: dict) -> str:
    """The table ``e2t estimate`` prints."""
    v2 = e["elementwise"]
    lines = [f"{e['model']} on {e['board']} ({e['part']}, {e['clock_mhz']:g} MHz, {e['tile']}), batch "
             f"{e['batch']}{', contract v2 (--elementwise engine)' if v2 else ''}: modeled (hls/resources.py, "
             f"contract/cycles.py, {e['energy_model']}), not synthesized",
             "", f"{'resource':<10}{'used':>10}{'budget':>10}{'use':>8}"]
    for u in e["resources"]:
        mark = "" if u.fits else "  over budget"
        lines.append(f"{u.resource.upper():<10}{u.used:>10,}{u.budget:>10,}{100 * u.used / u.budget:>7.0f}%{mark}")
    wb, t = e["whole_board"], e["whole_board"]["time"]
    n, bytes_gb = e["batch"], sum(t["bytes"].values()) / 1e9
    ddr = [("DDR bytes per training step", f"{bytes_gb:.2f} GB (engine {t['bytes']['engine'] / 1e9:.2f} GB, host "
                                           f"{t['bytes']['host'] / 1e9:.2f} GB)")] if v2 else []
    rows = [("engine cycles per training step", f"{e['cycles_per_step']:,} (PSG worst case: every tile recomputed"
                                                + (f"; STATS and APPLY: {v2['cycles']:,} in {v2['calls']} calls" if v2
                                                   else "") + ")"),
            ("engine time per training step", f"{e['seconds_per_step']:.2f} s at {e['clock_mhz']:g} MHz"),
            ("host time per training step", f"{t['host_s']:.2f} s ({e['host_cpu']}; numpy passes moving "
                                            f"{t['bytes']['host'] / 1e9:.2f} GB)"),
            ("DDR floor per training step", f"{t['ddr_s']:.2f} s ({bytes_gb:.2f} GB of engine and host traffic)"),
            *ddr,
            ("board time per training step", f"{t['seconds']:.2f} s, bound by the {t['bound']} "
                                             f"({t['overlap_s']:.2f} s of engine and host overlap)"),
            ("images per second", f"{n / t['seconds']:.1f} on the board (the engine alone: {e['images_per_s']:.1f})"),
            ("MACs per training step", f"{e['macs_per_step'] / 1e9:.2f} G"
                                       + (f" (STATS and APPLY's products: {v2['macs'] / 1e9:.2f} G)" if v2 else ""))]
    rows += [(f"energy per image, {name}", f"{j * 1e3:.3f} mJ (dynamic: MACs and DDR"
                                           + ("; the convs alone)" if v2 and name.startswith("fp32") else ")"))
             for name, j in e["joules_per_image"].items()]
    rows.append(("whole-board energy per image, by part", ", ".join(
        f"{part} {p['j'] / n * 1e3:.3f}" for part, p in wb["parts"].items()) + " mJ"))
    w = max(len(k) for k, _ in rows)
    lines += [""] + [f"{k:<{w}}  {v}" for k, v in rows]
    lines += [f"host share of the board step: {100 * t['host_s'] / t['seconds']:.0f} %",
              f"whole-board energy per image: {wb['j'] / n * 1e3:.3f} mJ",
              f"(energy: MACs and DDR traffic priced by {e['energy_table']}; the host's rates, the DDR's bandwidth "
              f"and the board's power are estimates, each with its source in {e['energy_model']})"]
    return "\n".join(lines)


def main(args) -> int:
    """The ``e2t estimate`` command (through the ``estimate`` entry point)."""
    if args.elementwise not in ELEMENTWISE:
        raise E2TError(f"unknown --elementwise '{args.elementwise}' (known: {', '.join(ELEMENTWISE)})")
    if args.plan:
        plan = planmod.load(args.plan)
        if args.board and args.board != plan.board.name:
            raise E2TError(f"--board {args.board}: the plan in {args.plan} is for {plan.board.name}")
    else:
        from host.data.datasets import shape_of
        from host.plan import planbuild
        check_fit(board(args.board or DEFAULT_BOARD), args.batch, "--batch", args.image_size)
        c, k, size = shape_of(args.dataset, args.data_dir, args.image_size, args.image_channels)
        plan = planbuild.from_model(args.model, c, k, size, args.board or DEFAULT_BOARD, args.batch, 0, args.slu,
                                    None, args.dataset)[0]
    e = estimate(plan, args.energy_model, args.elementwise)
    print(text(e))
    resources.refuse_over_budget(plan.board, e["resources"])
    return 0
