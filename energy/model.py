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
HOST_RATES = ("stream_bytes_per_s", "f32_per_s", "f64_per_s", "int_per_s")  # > 0: the time model divides by them
POWERS = ("pl_static", "ps_idle", "ps_busy", "board_rest")  # W
WHOLE_BOARD = ("host", "ddr_bytes_per_s", "power_w")  # the sections issue 23 added to every model file


@dataclass(frozen=True)
class EnergyModel:
    """pJ per MAC by operand widths and per DDR byte; the whole board's figures: the host CPU
    (``host``: its ``cpu`` text, HOST_RATES per second, ``call_s`` seconds per numpy call), the
    DDR's sustained bytes per second shared by the ARM and the fabric, the power in W of POWERS;
    ``sources``: each figure's source, keyed by its dotted field ("host.f32_per_s")."""

    path: str
    board: str
    table: str
    mac_pj: dict
    ddr_pj_per_byte: float
    sources: dict
    not_modeled: list
    host: dict
    ddr_bytes_per_s: float
    power_w: dict

    def price(self, slot: dict) -> dict:
        """Joules of one count slot (``{"macs": {width: n}, "bytes": b}``): MACs, DDR and total."""
        mac_j = 0.0
        for width, n in slot.get("macs", {}).items():
            if width not in self.mac_pj:
                raise E2TError(f"{self.path}: no energy for {width} MACs (it prices {', '.join(self.mac_pj)})")
            mac_j += n * self.mac_pj[width] * 1e-12
        ddr_j = slot.get("bytes", 0.0) * self.ddr_pj_per_byte * 1e-12
        return {"mac_j": mac_j, "ddr_j": ddr_j, "j": mac_j + ddr_j}


def number(value, where: str, positive: bool = False) -> float:
    """``value`` as a float if it is a finite JSON number >= 0 (> 0 if ``positive``; a bool or a
    string is none); otherwise one line naming ``where`` (the file and the field)."""
    try:
        ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and \
            (value > 0 if positive else value >= 0)
    except OverflowError:  # an integer beyond any float
        ok = False
    if not ok:
        raise E2TError(f"{where}: {repr(value)[:40]} is not a finite number {'>' if positive else '>='} 0")
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
            older = f" (a model file older than the whole-board figures: copy it from " \
                    f"{os.path.join(DATA, board, FILE)})" if parent is d and key in WHOLE_BOARD else ""
            raise E2TError(f"{path}: field '{key}' is missing{inside}{older}")
        if not isinstance(parent[key], kind):
            raise E2TError(f"{path}: {name}: {repr(parent[key])[:40]} is not a JSON "
                           f"{'object' if kind is dict else 'array'}")
        return parent[key]

    def figure(parent: dict, key: str, name: str, positive: bool = False) -> float:
        """A ``{"value": number, "source": text}`` entry's number; its source into ``sources``."""
        entry = field(parent, key, name, dict)
        sources[name] = text(field(entry, "source", f"{name}.source"), f"{path}: {name}.source")
        return number(field(entry, "value", f"{name}.value"), f"{path}: {name}.value", positive)

    if not isinstance(d, dict):
        raise E2TError(f"{path}: {type(d).__name__} is not an energy model (a JSON object)")
    widths = field(d, "mac_pj", "mac_pj", dict)
    mac = {width: figure(widths, width, f"mac_pj.{width}") for width in widths}
    ddr = figure(d, "ddr_pj_per_byte", "ddr_pj_per_byte")
    section = field(d, "host", "host", dict)
    host = {"cpu": text(field(section, "cpu", "host.cpu"), f"{path}: host.cpu")}
    host.update({k: figure(section, k, f"host.{k}", positive=True) for k in HOST_RATES})
    host["call_s"] = figure(section, "call_s", "host.call_s")
    ddr_bw = figure(d, "ddr_bytes_per_s", "ddr_bytes_per_s", positive=True)
    watts = field(d, "power_w", "power_w", dict)
    power = {k: figure(watts, k, f"power_w.{k}") for k in POWERS}
    not_modeled = field(d, "not_modeled", "not_modeled", list)
    for i, item in enumerate(not_modeled):
        text(item, f"{path}: not_modeled[{i}]")
    board_name, table = (text(field(d, key, key), f"{path}: {key}") for key in ("board", "table"))
    return EnergyModel(path, board_name, table, mac, ddr, sources, list(not_modeled), host, ddr_bw, power)


def run_energy(records: list[dict], model: EnergyModel) -> dict:
    """Modeled dynamic joules of the engine in a run from its metrics records: per epoch (by
    phase) and per layer; ``measured``: the joules of every rail the run recorded (each with its
    source), kept apart. Time, static and idle power and the host are energy/wholeboard.py's."""
    epochs, layers, phases, measured = [], {}, {}, {}
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
            "sources": model.sources, "not_modeled": list(model.not_modeled), "total_j": total,
            "phases": phases, "layers": layers, "epochs": epochs, "measured": measured}
