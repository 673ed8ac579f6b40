"""The energy model of a board, as data (``bitstreams/<board>/energy.json``), and the modeled
joules of a run: every MAC priced by its operand widths and every DDR byte moved, phase by
phase and layer by layer, from the ``ops`` record each trainer writes per epoch
(host/opcount.py's counts; the on-engine trainer counts the calls it made). Every figure in
the file carries its source; what the model does not price is listed in the file and in
every report. The float baseline is priced as fp32 training on the same fabric.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from host.boards import DATA
from host.errors import E2TError
from host.jsonfile import read_json

FILE = "energy.json"
STATIC_LAYER = "(static power)"
PHASE_NAMES = {"fwd": "forward", "bwd_data": "backward-data", "bwd_w_pred": "PSG predictor",
               "bwd_w_full": "full weight gradient", "update": "update", "static": "static (board time)"}


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


def load(board: str, path: str | None = None) -> EnergyModel:
    """The board's energy model (or the file at ``path``); a wrong field is named."""
    path = path or os.path.join(DATA, board, FILE)
    d = read_json(path, "the energy model", f"no energy model for board '{board}'")
    sources, mac = {}, {}
    try:
        for width, entry in d["mac_pj"].items():
            mac[width] = float(entry["value"])
            sources[f"mac_pj.{width}"] = str(entry["source"])
        ddr = float(d["ddr_pj_per_byte"]["value"])
        sources["ddr_pj_per_byte"] = str(d["ddr_pj_per_byte"]["source"])
        static = d.get("static_w")
        if static is not None:
            sources["static_w"] = str(static["source"])
            static = float(static["value"])
        model = EnergyModel(path, str(d["board"]), str(d["table"]), mac, ddr, sources, list(d["not_modeled"]), static)
    except (KeyError, TypeError, ValueError) as e:
        raise E2TError(f"{path}: field {e} is missing or not a number with a source") from None
    bad = [k for k, v in mac.items() if not v >= 0] + (["ddr_pj_per_byte"] if not ddr >= 0 else [])
    if bad:
        raise E2TError(f"{path}: {', '.join(bad)} must be >= 0")
    return model


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
