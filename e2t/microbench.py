"""Engine micro-benchmarks for calibrating a board's energy model (``e2t energy calibrate --run``).

Each benchmark repeats one engine op of a small plan (ResNet-8's largest 3x3 and 1x1 convs
that have a backward to the input, at the plan's batch) between a meter's ``start()`` and
``stop()``:
forward (int8 x 8), backward to the input (int16 x 8), the full weight gradient (int8 x 16),
the PSG predictor (int4 x 16, every sign predicted), the update (int32 and DDR-heavy), and an
idle stretch (seconds only); each at two call counts, so that time and work do not move
together. A segment is what the session counted in the stretch (contract/opcount.py's MACs by
operand widths and bytes), its seconds, its wall-clock span and the joules the meter measured;
energy/calibrate.py fits the model to the segments.

On a board the meter is its rails (or, after the run, an external meter's log over each
segment's span). On the emulated engine, ``ModeledMeter`` returns the model's own joules plus a
constant power: fitting those gives the model back, a check of the pipeline, labelled modeled.
"""
from __future__ import annotations

import time

import numpy as np

from contract import numerics as nx
from contract.errors import E2TError
from contract.opcount import sum_layers
from host.engine.session import EngineSession
from host.plan import planbuild
from host.train.trainer import open_overlay

from energy import model as emodel, rails

def _totals(per_layer: dict) -> dict:
    """MACs by width and bytes, summed over a session's layers and phases."""
    return sum_layers(per_layer).get("all", {"macs": {}, "bytes": 0.0})


def _delta(after: dict, before: dict) -> dict:
    macs = {w: n - before["macs"].get(w, 0) for w, n in after["macs"].items() if n - before["macs"].get(w, 0)}
    return {"macs": macs, "bytes": after["bytes"] - before["bytes"]}


def benchmark_layers(plan) -> list[dict]:
    """The convs the benchmarks run: the 3x3 and the 1x1 conv with the most MACs among those with
    a backward to the input (their bytes per MAC differ, which separates DDR from MACs)."""
    macs = lambda o: o["c_out"] * o["c_in"] * o["k"] ** 2 * o["ho"] * o["wo"]  # noqa: E731
    return [max((o for o in plan.convs() if o["input_grad"] and o["k"] == k), key=macs) for k in (3, 1)]


def _calls(session, op: dict, n: int, rng) -> dict:
    """One engine call per benchmark kind on layer ``op`` (its buffers filled first)."""
    x_q = rng.integers(-127, 128, (n, op["c_in"], op["h"], op["w"]), dtype=np.int8)
    g_q = rng.integers(-2000, 2001, (n, op["c_out"], op["ho"], op["wo"]), dtype=np.int16)
    k = nx.UpdateConstants.from_floats(0.01, 1e-4, 0.9)
    session.conv_fwd(op, x_q)  # the layer's act buffer holds x_q for the weight gradients
    session.set_grad(op, g_q)
    return {"forward": lambda: session.conv_fwd(op, x_q), "backward_data": lambda: session.conv_bwd_data(op, n),
            "wgrad_full": lambda: session.conv_wgrad(op, n, "full"),
            "wgrad_psg": lambda: session.conv_wgrad(op, n, "abs", 0), "update": lambda: session.update(op, k)}


def run(session, plan, meter, calls: int = 8, idle_s: float = 0.5, log=print) -> list[dict]:
    """Segments of every benchmark kind on each benchmark layer at ``calls`` and ``2 * calls``
    calls (idle: ``idle_s`` and twice that); ``meter``: ``start()`` / ``stop() -> {rail: {"joules",
    ...}}``. A segment's joules are the sum over the board's own rails (``rails.board_rails``)."""
    rng = np.random.default_rng(0)
    runs = [(kind, op["name"], fn) for op in benchmark_layers(plan)
            for kind, fn in _calls(session, op, plan.batch, rng).items()] + [("idle", "", None)]
    segments = []
    for kind, layer, fn in runs:
        for reps in (calls, 2 * calls):
            before = _totals(session.per_layer)
            meter.start()
            t0, wall0 = time.perf_counter(), time.time()
            if fn is None:
                time.sleep(idle_s * reps / calls)
            else:
                for _ in range(reps):
                    fn()
            seconds, wall1 = time.perf_counter() - t0, time.time()
            recorded = meter.stop()
            got = {n: recorded[n] for n in rails.board_rails(recorded, plan.board.rails)}
            spans = [r["seconds"] for r in got.values() if "seconds" in r]
            seconds = max(spans) if spans else seconds  # the span the rails integrated over, if they say
            counts = _delta(_totals(session.per_layer), before)
            segments.append({"kind": kind, "layer": layer, "calls": 0 if fn is None else reps, **counts,
                             "seconds": seconds, "wall": [wall0, wall1],
                             "joules": sum(r["joules"] for r in got.values()), "rails": sorted(got)})
            log(f"energy calibrate: {kind} {layer} x {reps}: {seconds:.3f} s, {segments[-1]['joules']:.4g} J "
                f"({', '.join(sorted(got)) or 'no rail'})")
    return segments


def joules_from_log(segments: list[dict], log) -> None:
    """Each segment's joules from an external meter's log (``rails.MeterLog``) over its wall-clock
    span, for boards without rails; the log's clock must be Unix seconds."""
    for s in segments:
        s["joules"] = log.energy(*s["wall"])
        s["seconds"] = s["wall"][1] - s["wall"][0]
        s["rails"] = [log.name]


class ModeledMeter:
    """The emulated engine's rail for the benchmarks: the model's joules of what ``session``
    counted between ``start()`` and ``stop()``, plus ``static_w`` times the seconds."""

    def __init__(self, session, model, static_w: float):
        self.session, self.model, self.static_w = session, model, static_w
        self.source = f"modeled ({model.table}; {model.path}) + {static_w:g} W constant, a pipeline check"

    def start(self) -> None:
        self._before, self._t0 = _totals(self.session.per_layer), time.perf_counter()

    def stop(self) -> dict:
        seconds = time.perf_counter() - self._t0
        j = self.model.price(_delta(_totals(self.session.per_layer), self._before))["j"] + self.static_w * seconds
        return {"emulated": {"joules": j, "kind": "modeled", "source": self.source, "unit": "W", "seconds": seconds}}


class _NoMeter:
    """Brackets the benchmarks when an external meter's log gives the joules afterwards."""

    def start(self) -> None:
        pass

    def stop(self) -> dict:
        return {}


def calibration_segments(board: str, backend: str, calls: int, bitfile: str | None = None,
                         meter_log: str | None = None, board_meter=None, log=print) -> tuple[list, str]:
    """The benchmarks' segments on ``backend`` (pynq: a board, its rails from ``board_meter()`` or
    ``meter_log`` afterwards; emu: the emulated engine with ``ModeledMeter``), and where their
    joules come from."""
    if calls < 1:
        raise E2TError(f"--calls must be at least 1, got {calls}")
    plan, _, arrays = planbuild.from_model("resnet8", 1, 10, 8, board, 32, 0)
    session = EngineSession(plan, arrays, open_overlay(backend, board, bitfile=bitfile, log=log))
    if backend == "emu":
        meter = ModeledMeter(session, emodel.load(board), static_w=1.0)
        source = f"the emulated engine's modeled rail ({meter.source})"
    elif meter_log:
        meter, source = _NoMeter(), f"the meter log {meter_log}"
    else:
        meter = board_meter() if board_meter else None
        if meter is None:
            raise E2TError(f"{board} has no power rails e2t can read: log an external meter and pass --meter-log")
        source = "the board's rails"
    segments = run(session, plan, meter, calls, log=log)
    if meter_log:
        joules_from_log(segments, rails.MeterLog(meter_log))
    return segments, source
