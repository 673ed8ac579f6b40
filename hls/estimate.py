"""``e2t estimate``: what a board would do with a network, before buying one or running Vivado.

For a plan (``--plan DIR``, or one built from ``--model`` and ``--dataset``): the engine's
DSP, BRAM, LUT and FF use against the board's budget (hls/resources.py), engine cycles per
training step (contract/cycles.py, through hls/export.py's per-layer costs), images per second at
the board's clock, and joules per image from the board's energy model (energy/model.py) for
the engine's fixed-point training and for fp32 training on the same counts. Every figure is
modeled. A configuration over the board's BRAM, LUT or FF budget is refused after the table,
with the resource and both numbers; a multiplier array over its DSP budget already when
board.json loads (contract/boards.py), before any table.
"""
from __future__ import annotations

import os

from contract import cycles as cycle_model, opcount
from contract.boards import DATA, DEFAULT_BOARD, board, check_fit
from contract.errors import E2TError
from energy import model as energy_model
from host.plan import schema as planmod

from . import export, resources


def _step_counts(plan: planmod.Plan, precision: opcount.Precision) -> dict:
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


def estimate(plan: planmod.Plan, energy_file: str | None = None) -> dict:
    """The modeled figures of ``plan`` on its board."""
    b = plan.board
    macs, cycles = export.engine_cycles(plan)
    seconds = cycles / (b.clock_mhz * 1e6)
    em = energy_model.load(b.name, energy_file)
    joules, per_layer = {}, {}
    for name, prec in (("engine, fixed point + PSG", opcount.Precision("fixed", psg=True)),
                       ("fp32 training, same counts", opcount.Precision("fp32"))):
        per_layer[name] = _step_counts(plan, prec)
        total = opcount.sum_layers(per_layer[name])
        joules[name] = sum(em.price(slot)["j"] for phase, slot in total.items() if phase != "all") / plan.batch
    return {"board": b.name, "part": b.part, "clock_mhz": b.clock_mhz, "tile": f"{b.tile_o}x{b.tile_i} PSG tile, {b.array_o}x{b.array_i} DSP array",
            "model": plan.network["model"], "batch": plan.batch, "resources": resources.totals(b),
            "macs_per_step": macs, "cycles_per_step": cycles, "seconds_per_step": seconds,
            "images_per_s": plan.batch / seconds, "joules_per_image": joules,
            "per_layer": per_layer["engine, fixed point + PSG"],
            "energy_model": os.path.relpath(em.path, os.path.dirname(DATA)) if em.path.startswith(DATA) else em.path,
            "energy_table": em.table}


def text(e: dict) -> str:
    """The table ``e2t estimate`` prints."""
    lines = [f"{e['model']} on {e['board']} ({e['part']}, {e['clock_mhz']:g} MHz, {e['tile']}), batch "
             f"{e['batch']}: modeled (hls/resources.py, hls/cycles.py, {e['energy_model']}), not synthesized",
             "", f"{'resource':<10}{'used':>10}{'budget':>10}{'use':>8}"]
    for u in e["resources"]:
        mark = "" if u.fits else "  over budget"
        lines.append(f"{u.resource.upper():<10}{u.used:>10,}{u.budget:>10,}{100 * u.used / u.budget:>7.0f}%{mark}")
    rows = [("engine cycles per training step", f"{e['cycles_per_step']:,} (PSG worst case: every tile recomputed)"),
            ("time per training step", f"{e['seconds_per_step']:.2f} s at {e['clock_mhz']:g} MHz"),
            ("images per second", f"{e['images_per_s']:.1f} (forward and backward, engine only)"),
            ("MACs per training step", f"{e['macs_per_step'] / 1e9:.2f} G")]
    rows += [(f"energy per image, {name}", f"{j * 1e3:.3f} mJ") for name, j in e["joules_per_image"].items()]
    w = max(len(k) for k, _ in rows)
    lines += [""] + [f"{k:<{w}}  {v}" for k, v in rows]
    lines.append(f"(energy: MACs and DDR traffic priced by {e['energy_table']})")
    return "\n".join(lines)


def main(args) -> int:
    """The ``e2t estimate`` command (through the ``estimate`` entry point)."""
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
    e = estimate(plan, args.energy_model)
    print(text(e))
    resources.refuse_over_budget(plan.board, e["resources"])
    return 0
