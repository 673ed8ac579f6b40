"""The energy model of a board, as data (``bitstreams/<board>/energy.json``), and the modeled
joules of a run: every MAC priced by its operand widths and every DDR byte moved, phase by
phase and layer by layer, from the ``ops`` record each trainer writes per epoch
(contract/opcount.py's counts; the on-engine trainer counts the calls it made). Every figure in
the file carries its source; what the model does not price is listed in the file and in
every report. The float baseline is priced as fp32 training on the same fabric.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

from contract.boards import DATA
from contract.errors import E2TError
from contract.jsonfile import read_json

FILE = "energy.json"
STATIC_LAYER = "(static power)"


@dataclass(frozen=True)
class EnergyModel:
    """pJ per MAC by operand widths and per DDR byte, with the source of each figure."""

    path: str
    board: str
    table: str
    mac_pj: dict
    ddr_pj_per_byte: float
    sources: dict
    not_modeled: list
    static_w: float | None = None  # constant board power (a calibration fits it); priced over board time only

    def price(self, slot: dict) -> dict:
        """Joules of one count slot (``{"macs": {width: n}, "bytes": b}``): MACs, DDR and total."""
        mac_j = 0.0
        for width, n in slot.get("macs", {}).items():
            if width not in self.mac_pj:
                raise E2TError(f"{self.path}: no energy for {width} MACs (it prices {', '.join(self.mac_pj)})")
            mac_j += n * self.mac_pj[width] * 1e-12
        ddr_j = slot.get("bytes", 0.0) * self.ddr_pj_per_byte * 1e-12
        return {"mac_j": mac_j, "ddr_j": ddr_j, "j": mac_j + ddr_j}


def number(value, where: str) -> float:
    """``value`` as a float if it is a finite JSON number >= 0 (a bool or a string is none);
    otherwise one line naming ``where`` (the file and the field)."""
    try:
        ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and value >= 0
    except OverflowError:  # an integer beyond any float
        ok = False
    if not ok:
        raise E2TError(f"{where}: {repr(value)[:40]} is not a finite number >= 0")
    return float(value)


def text(value, where: str) -> str:
    """``value`` if it is a non-empty JSON string; otherwise one line naming ``where``."""
    if not isinstance(value, str) or not value:
        raise E2TError(f"{where}: {repr(value)[:40]} is not a name (a non-empty string)")
    return value


def load(board: str, path: str | None = None) -> EnergyModel:
    """The board's energy model (or the file at ``path``); a wrong field is named."""
    path = path or os.path.join(DATA, board, FILE)
    d = read_json(path, "the energy model", f"no energy model for board '{board}'")
    sources = {}

    def field(parent: dict, key: str, name: str, kind: type = object):
        """``parent[key]`` (``name``: its dotted field), there and of ``kind``."""
        if key not in parent:
            inside = f" in {name.rpartition('.')[0]}" if "." in name else ""
            raise E2TError(f"{path}: field '{key}' is missing{inside}")
        if not isinstance(parent[key], kind):
            raise E2TError(f"{path}: {name}: {repr(parent[key])[:40]} is not a JSON "
                           f"{'object' if kind is dict else 'array'}")
        return parent[key]

    def figure(parent: dict, key: str, name: str) -> float:
        """A ``{"value": number, "source": text}`` entry's number; its source into ``sources``."""
        entry = field(parent, key, name, dict)
        sources[name] = text(field(entry, "source", f"{name}.source"), f"{path}: {name}.source")
        return number(field(entry, "value", f"{name}.value"), f"{path}: {name}.value")

    if not isinstance(d, dict):
        raise E2TError(f"{path}: {type(d).__name__} is not an energy model (a JSON object)")
    widths = field(d, "mac_pj", "mac_pj", dict)
    mac = {width: figure(widths, width, f"mac_pj.{width}") for width in widths}
    ddr = figure(d, "ddr_pj_per_byte", "ddr_pj_per_byte")
    static = figure(d, "static_w", "static_w") if d.get("static_w") is not None else None
    not_modeled = field(d, "not_modeled", "not_modeled", list)
    for i, item in enumerate(not_modeled):
        text(item, f"{path}: not_modeled[{i}]")
    board_name, table = (text(field(d, key, key), f"{path}: {key}") for key in ("board", "table"))
    return EnergyModel(path, board_name, table, mac, ddr, sources, list(not_modeled), static)


def run_energy(records: list[dict], model: EnergyModel, board_time: bool = False) -> dict:
    """Modeled joules of a run from its metrics records: per epoch (by phase) and per layer;
    ``measured``: the joules of every rail the run recorded (each with its source), kept apart.
    A model with a constant power prices it over each epoch's seconds when they are the board's
    (``board_time``: a run on the board) as the phase "static"; otherwise it says why not."""
    epochs, layers, phases, measured = [], {}, {}, {}
    not_modeled = list(model.not_modeled)
    if model.static_w is not None and not board_time:
        not_modeled.insert(0, f"the constant {model.static_w:.4g} W of this model: the run's seconds are not the "
                              f"board's (it did not run on one)")
    total = 0.0
    for r in records:
        ops = r.get("ops")
        if not ops:
            raise E2TError(f"epoch {r.get('epoch')} has no operation counts ('ops'): this run's trainer "
                           f"does not count its work")
        by_phase = {}
        for phase, slot in ops["total"].items():
            if phase == "all":
                continue
            by_phase[phase] = model.price(slot)
            acc = phases.setdefault(phase, {"mac_j": 0.0, "ddr_j": 0.0, "j": 0.0})
            for k in acc:
                acc[k] += by_phase[phase][k]
        if model.static_w is not None and board_time:
            by_phase["static"] = {"mac_j": 0.0, "ddr_j": 0.0, "j": model.static_w * float(r.get("seconds") or 0.0)}
            acc = phases.setdefault("static", {"mac_j": 0.0, "ddr_j": 0.0, "j": 0.0})
            acc["j"] += by_phase["static"]["j"]
            layers[STATIC_LAYER] = layers.get(STATIC_LAYER, 0.0) + by_phase["static"]["j"]  # the sums stay whole
        for name, per in ops.get("per_layer", {}).items():
            layers[name] = layers.get(name, 0.0) + sum(model.price(slot)["j"] for slot in per.values())
        j = sum(p["j"] for p in by_phase.values())
        total += j
        epochs.append({"epoch": r["epoch"], "j": j, "cumulative_j": total, "phases": by_phase,
                       "test_acc": r.get("test_acc"), "kept_iterations": r.get("kept_iterations"),
                       "rails": {k: v["joules"] for k, v in r.get("rails", {}).items()}})
        for name, v in r.get("rails", {}).items():
            acc = measured.setdefault(name, {"joules": 0.0, "kind": "measured", "source": v["source"]})
            acc["joules"] += v["joules"]
    return {"kind": "modeled", "model": model.path, "table": model.table, "board": model.board,
            "sources": model.sources, "not_modeled": not_modeled, "total_j": total,
            "phases": phases, "layers": layers, "epochs": epochs, "measured": measured}
