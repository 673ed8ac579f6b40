"""Calibration of a board's energy model from rail readings: a least-squares fit of pJ per MAC
(by operand widths), pJ per DDR byte, the host CPU's power above idle and the board's constant
power (W) to measured segments.

A segment is a stretch of a run (an engine or host micro-benchmark, or an epoch) with its counts
(``macs`` by width, ``bytes`` moved to and from the DDR), the seconds the host was busy
(``host_seconds``), its ``seconds`` and the ``joules`` the rails measured. The fit solves
``joules = sum_w macs_w * e_w + bytes * e_ddr + host_seconds * p_host + seconds * p_const``
for non-negative coefficients; the residuals and the condition number of the design matrix are
reported, so a calibration whose segments cannot separate two coefficients says so. The fitted
model (``write_fitted``) is the board's default with the fitted figures in: the PS busy power
is its idle power plus ``p_host``, the constant is split as the default's PL static and PS idle
power (kept, an assumption) and the rest of the board; host rates measured on the board replace
the default's. It is written beside the board's default file (``energy.fitted.json``), never
over it, and over an earlier calibration only when asked (``--force``).
"""
from __future__ import annotations

import json
import os

import numpy as np

from contract.errors import E2TError
from contract.runs import write_file

from . import model as emodel

FITTED = "energy.fitted.json"


def fit(segments: list[dict], widths: list[str]) -> dict:
    """Fitted coefficients (pJ per MAC of each width, pJ per byte, W of the busy host above
    idle, W constant), with the residuals (J), their RMS relative to the measured joules, and
    the condition number."""
    n = len(widths) + 3
    if len(segments) < n:
        raise E2TError(f"calibration needs at least {n} segments for {n} coefficients, got {len(segments)}")
    a = np.array([[s["macs"].get(w, 0) * 1e-12 for w in widths] + [s["bytes"] * 1e-12, s.get("host_seconds", 0.0),
                                                                   s["seconds"]] for s in segments], np.float64)
    y = np.array([s["joules"] for s in segments], np.float64)
    scale = np.abs(a).max(axis=0)
    if np.any(scale == 0):
        missing = [n for n, sc in zip(widths + ["bytes", "host_seconds", "seconds"], scale) if sc == 0]
        raise E2TError(f"the segments never exercise {', '.join(missing)}: nothing to fit them from (host_seconds: "
                       f"the host's busy seconds; e2t energy calibrate --run times host-only passes)")
    x, *_ = np.linalg.lstsq(a / scale, y, rcond=None)
    x = x / scale
    if np.any(x < 0):  # refit with the negative coefficients held at zero (an active-set step)
        keep = x >= 0
        xk, *_ = np.linalg.lstsq(a[:, keep] / scale[keep], y, rcond=None)
        x = np.zeros_like(x)
        x[keep] = xk / scale[keep]
    residuals = y - a @ x
    return {"mac_pj": dict(zip(widths, x[:len(widths)].tolist())), "ddr_pj_per_byte": float(x[-3]),
            "host_w": float(x[-2]), "constant_w": float(x[-1]), "residuals_j": residuals.tolist(),
            "rms_relative": float(np.sqrt(np.mean((residuals / np.maximum(np.abs(y), 1e-30)) ** 2))),
            "condition": float(np.linalg.cond(a / scale)), "segments": len(segments)}


def target(board: str, path: str | None = None, force: bool = False) -> str:
    """The file a calibration writes: ``path``, or ``energy.fitted.json`` beside the board's
    default model, never the default itself; an existing one only with ``force``."""
    if path == "":
        raise E2TError("--out is empty: name the fitted model file")
    default = emodel.load(board).path
    out = path or os.path.join(os.path.dirname(default), FITTED)
    if os.path.abspath(out) == os.path.abspath(default):
        raise E2TError(f"{out} is the board's default model: a calibration is written beside it, never over it")
    if os.path.lexists(out) and not (force and os.path.isfile(out)):
        raise E2TError(f"{out} already exists: pass --force to replace it, or --out a new file" if os.path.isfile(out)
                       else f"--out {out} is not a file: name the fitted model file")
    return out


def power(fitted: dict, base: emodel.EnergyModel, source: str) -> tuple[dict, list[str]]:
    """The fitted model's ``power_w`` entries: PS busy = the default's PS idle + the fitted host
    power; the fitted constant split as the default's PL static and PS idle (kept: the split is
    assumed, the fit measures only their sum with the rest) and the rest of the board. A rest
    below zero (the assumed PL static and PS idle exceed the fitted constant) is clipped to 0,
    not refused, so the fitted engine and host figures are kept; the warning (returned) and the
    figure's source say so and by how much the model's constant then exceeds the measured one."""
    w, c, fit_source = base.power_w, fitted["constant_w"], f"least-squares fit, {source}"
    kept = f"kept from {base.path}: the assumed split of the fitted constant {c:.4g} W"
    rest = c - w["pl_static"] - w["ps_idle"]
    rest_source = f"the fitted constant {c:.4g} W less pl_static and ps_idle ({fit_source})"
    warnings = []
    if rest < 0:
        warnings.append(f"energy calibrate: warning: the fitted constant {c:.4g} W is below the assumed PL static + "
                        f"PS idle {w['pl_static'] + w['ps_idle']:.4g} W ({base.path}): board_rest clipped to 0, so "
                        f"the fitted model's constant exceeds the measured one by {-rest:.4g} W; correct pl_static "
                        f"and ps_idle in the fitted file if the board's figures are known")
        rest_source += f"; clipped to 0 from {rest:.4g} W (the assumed PL static and PS idle exceed the constant)"
        rest = 0.0
    return {"pl_static": {"value": w["pl_static"], "source": f"{base.sources['power_w.pl_static']} ({kept})"},
            "ps_idle": {"value": w["ps_idle"], "source": f"{base.sources['power_w.ps_idle']} ({kept})"},
            "ps_busy": {"value": w["ps_idle"] + fitted["host_w"],
                        "source": f"ps_idle + the fitted host power {fitted['host_w']:.4g} W ({fit_source})"},
            "board_rest": {"value": rest, "source": rest_source}}, warnings


def write_fitted(board: str, fitted: dict, source: str, path: str | None = None, force: bool = False,
                 host: dict | None = None, log=print) -> str:
    """The fitted model as a model file beside the board's default one (``target``); returns its
    path. ``host``: the host section measured on the board (model-file form), else the default's;
    a clipped split of the constant is logged (``power``)."""
    base = emodel.load(board)
    out = target(board, path, force)
    fit_source = f"least-squares fit, {source}"
    watts, warnings = power(fitted, base, source)
    default_host = {"cpu": base.host["cpu"], **{k: {"value": v, "source": base.sources[f"host.{k}"]}
                                                for k, v in base.host.items() if k != "cpu"}}
    d = {"board": board, "table": f"calibrated ({source})",
         "mac_pj": {w: {"value": v, "source": fit_source} for w, v in fitted["mac_pj"].items()},
         "ddr_pj_per_byte": {"value": fitted["ddr_pj_per_byte"], "source": fit_source},
         "host": host or default_host,
         "ddr_bytes_per_s": {"value": base.ddr_bytes_per_s, "source": base.sources["ddr_bytes_per_s"]},
         "power_w": watts,
         "fit": {k: fitted[k] for k in ("host_w", "constant_w", "rms_relative", "condition", "segments")},
         "not_modeled": base.not_modeled}
    for w, entry in base.mac_pj.items():  # widths the calibration did not exercise keep their default figure
        d["mac_pj"].setdefault(w, {"value": entry, "source": base.sources[f"mac_pj.{w}"]})
    write_file(out, (json.dumps(d, indent=1) + "\n").encode(), replace=force)
    for line in warnings:
        log(line)
    return out
