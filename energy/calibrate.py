"""Calibration of a board's energy model from rail readings: a least-squares fit of pJ per MAC
(by operand widths), pJ per DDR byte and a constant power (W) to measured segments.

A segment is a stretch of a run (an engine micro-benchmark, or an epoch) with its counts
(``macs`` by width, ``bytes``), its ``seconds`` and the ``joules`` the rails measured. The fit
solves ``joules = sum_w macs_w * e_w + bytes * e_ddr + seconds * p_static`` for non-negative
coefficients; the residuals and the condition number of the design matrix are reported, so a
calibration whose segments cannot separate two coefficients says so. The fitted model is
written beside the board's default file (``energy.fitted.json``), never over it, and over an
earlier calibration only when asked (``--force``).
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
    """Fitted coefficients (pJ per MAC of each width, pJ per byte, W constant), with the
    residuals (J), their RMS relative to the measured joules, and the condition number."""
    if len(segments) < len(widths) + 2:
        raise E2TError(f"calibration needs at least {len(widths) + 2} segments for {len(widths) + 2} coefficients, "
                       f"got {len(segments)}")
    a = np.array([[s["macs"].get(w, 0) * 1e-12 for w in widths] + [s["bytes"] * 1e-12, s["seconds"]]
                  for s in segments], np.float64)
    y = np.array([s["joules"] for s in segments], np.float64)
    scale = np.abs(a).max(axis=0)
    if np.any(scale == 0):
        missing = [n for n, sc in zip(widths + ["ddr_bytes", "static"], scale) if sc == 0]
        raise E2TError(f"the segments never exercise {', '.join(missing)}: nothing to fit them from")
    x, *_ = np.linalg.lstsq(a / scale, y, rcond=None)
    x = x / scale
    if np.any(x < 0):  # refit with the negative coefficients held at zero (an active-set step)
        keep = x >= 0
        xk, *_ = np.linalg.lstsq(a[:, keep] / scale[keep], y, rcond=None)
        x = np.zeros_like(x)
        x[keep] = xk / scale[keep]
    residuals = y - a @ x
    return {"mac_pj": dict(zip(widths, x[:len(widths)].tolist())), "ddr_pj_per_byte": float(x[-2]),
            "static_w": float(x[-1]), "residuals_j": residuals.tolist(),
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


def write_fitted(board: str, fitted: dict, source: str, path: str | None = None, force: bool = False) -> str:
    """The fitted model as a model file beside the board's default one (``target``); returns its path."""
    base = emodel.load(board)
    out = target(board, path, force)
    d = {"board": board, "table": f"calibrated ({source})",
         "mac_pj": {w: {"value": v, "source": f"least-squares fit, {source}"} for w, v in fitted["mac_pj"].items()},
         "ddr_pj_per_byte": {"value": fitted["ddr_pj_per_byte"], "source": f"least-squares fit, {source}"},
         "static_w": {"value": fitted["static_w"], "source": f"least-squares fit, {source}"},
         "fit": {k: fitted[k] for k in ("rms_relative", "condition", "segments")},
         "not_modeled": ["the host CPU's energy for the host ops apart from the constant (unless its rail was part "
                         "of the measurement)"]}
    for w, entry in base.mac_pj.items():  # widths the calibration did not exercise keep their default figure
        d["mac_pj"].setdefault(w, {"value": entry, "source": base.sources[f"mac_pj.{w}"]})
    write_file(out, (json.dumps(d, indent=1) + "\n").encode(), replace=force)
    return out
