"""Whole-board joules: power x modeled time plus the dynamic terms, split into what they went to.

- engine: its MACs and its DDR bytes (energy/model.py's pricing of the counts);
- host: the PS's power above idle while the host computes (``ps_busy - ps_idle`` x the host's
  busy seconds) and the DDR bytes its numpy passes move (at the same pJ per byte);
- static: the PL's static power and the PS at idle, over the whole modeled time;
- idle: the rest of the board at idle (regulators, DDR standby, peripherals), over the same time.

The parts add up to the whole by construction (``j``). Time comes from energy/steptime.py; every
watt and rate from the board's energy model file, each with its source. Modeled, not measured.
"""
from __future__ import annotations

from contract.boards import board as get_board

from . import steptime

PARTS = ("engine", "host", "static", "idle")
PART_NAMES = {"engine": "engine (MACs, DDR)", "host": "host CPU (numpy, its DDR)", "static": "PL and PS static",
              "idle": "rest of the board, idle"}


def energy(t: dict, engine_j: dict, model) -> dict:
    """Joules of modeled time ``t`` (steptime.step_time) with the engine's priced ``engine_j``
    (``{"mac_j", "ddr_j"}``), by part, and their sum ``j``."""
    w = model.power_w
    parts = {"engine": {"mac_j": engine_j["mac_j"], "ddr_j": engine_j["ddr_j"]},
             "host": {"cpu_j": (w["ps_busy"] - w["ps_idle"]) * t["host_s"],
                      "ddr_j": t["bytes"]["host"] * model.ddr_pj_per_byte * 1e-12},
             "static": {"pl_j": w["pl_static"] * t["seconds"], "ps_j": w["ps_idle"] * t["seconds"]},
             "idle": {"board_j": w["board_rest"] * t["seconds"]}}
    for part in parts.values():
        part["j"] = sum(part.values())
    return {"parts": parts, "j": sum(p["j"] for p in parts.values())}


def epoch(ops: dict, model, clock_mhz: float) -> dict:
    """Modeled time and whole-board joules of one epoch's ``ops`` record, the engine at ``clock_mhz``."""
    t = steptime.step_time(ops.get("per_layer", {}), ops.get("host", {}).get("per_layer", {}), model.host,
                           model.ddr_bytes_per_s, clock_mhz)
    engine_j = {"mac_j": 0.0, "ddr_j": 0.0}
    for phase, slot in ops["total"].items():
        if phase != "all":
            priced = model.price(slot)
            engine_j["mac_j"] += priced["mac_j"]
            engine_j["ddr_j"] += priced["ddr_j"]
    return {"time": t, **energy(t, engine_j, model)}


def missing(records: list[dict]) -> str | None:
    """Why ``records`` cannot be priced whole-board (None: they can): the counts it needs."""
    for r in records:
        ops = r.get("ops") or {}
        if "host" not in ops:
            return (f"epoch {r.get('epoch')} has no host counts (ops.host): its trainer predates the whole-board "
                    f"model or does not count the host's work")
        if not any("cycles" in s for per in ops.get("per_layer", {}).values() for s in per.values()):
            return f"epoch {r.get('epoch')} has no modeled engine cycles (ops.per_layer.*.cycles)"
    return None


def run(records: list[dict], model, board_name: str) -> dict:
    """Whole-board time and joules of a run, per epoch and in all; ``seconds`` by engine / host /
    overlap, the bound of each epoch, joules by part."""
    epochs, total = [], {"seconds": 0.0, "engine_s": 0.0, "host_s": 0.0, "ddr_s": 0.0, "overlap_s": 0.0, "j": 0.0,
                         "parts": {p: 0.0 for p in PARTS}}
    clock_mhz = get_board(board_name).clock_mhz  # one board.json read for the run
    for r in records:
        e = epoch(r["ops"], model, clock_mhz)
        t = e["time"]
        for key in ("seconds", "engine_s", "host_s", "ddr_s", "overlap_s"):
            total[key] += t[key]
        total["j"] += e["j"]
        for p in PARTS:
            total["parts"][p] += e["parts"][p]["j"]
        epochs.append({"epoch": r["epoch"], "seconds": t["seconds"], "bound": t["bound"], "engine_s": t["engine_s"],
                       "host_s": t["host_s"], "ddr_s": t["ddr_s"], "overlap_s": t["overlap_s"], "j": e["j"],
                       "parts": {p: e["parts"][p]["j"] for p in PARTS}})
    total["host_share"] = total["host_s"] / total["seconds"] if total["seconds"] else 0.0
    return {"kind": "modeled", "board": board_name, "epochs": epochs, **total}
