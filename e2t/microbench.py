"""Engine and host micro-benchmarks for calibrating a board's energy model (``e2t energy calibrate --run``).

Each benchmark repeats one engine op of a small plan (ResNet-8's largest 3x3 and 1x1 convs
that have a backward to the input, at the plan's batch) between a meter's ``start()`` and
``stop()``:
forward (int8 x 8), backward to the input (int16 x 8), the full weight gradient (int8 x 16),
the PSG predictor (int4 x 16, every sign predicted), the update (int32 and DDR-heavy); then
the host's numpy passes alone (``HostPasses``: a stream pass over arrays far beyond the caches,
float32, float64 and int32 elementwise passes over cache-resident arrays, a 1-element loop for
the per-call overhead), and an idle stretch (seconds only); each at two call counts, so that
time and work do not move together. A segment is what the session counted in the stretch
(contract/opcount.py's MACs by operand widths and bytes, plus the DDR bytes of the host's
stream passes), the host's busy seconds, its seconds, its wall-clock span and the joules the
meter measured; energy/calibrate.py fits the model to the segments. The host-only stretches
separate the host's power from the constant; their timings are the host's rates
(``HostPasses.section``), measured on the machine that runs them.

On a board the meter is its rails (or, after the run, an external meter's log over each
segment's span). On the emulated engine, ``ModeledMeter`` returns the whole-board model's own
joules: fitting those gives the model back, a check of the pipeline, labelled modeled.
"""
from __future__ import annotations

import os
import platform
import time

import numpy as np

from contract import numerics as nx
from contract.errors import E2TError
from contract.opcount import sum_layers
from host.engine.session import EngineSession
from host.plan import planbuild
from host.train.trainer import open_overlay

from energy import model as emodel, rails

STREAM_ELEMENTS = 8 * 2**20  # float32: 32 MiB per array, far beyond the caches of any board's CPU
CACHE_ELEMENTS = 16 * 2**10  # per array: 64 KiB (float32), resident in an A9's or an A53's L2 cache
CACHE_PASSES = 4096  # numpy passes per benchmark call over the cache-resident arrays
TINY_PASSES = 16384  # numpy calls per benchmark call on a 1-element array
HOST_WHAT = {"stream_bytes_per_s": "float32 scale passes over {mib:g} MiB arrays, bytes read and written per second",
             "f32_per_s": "float32 adds over cache-resident arrays, less the per-call overhead",
             "f64_per_s": "float64 adds over cache-resident arrays, less the per-call overhead",
             "int_per_s": "int32 adds over cache-resident arrays, less the per-call overhead",
             "call_s": "a 1-element numpy add in a loop, seconds per call"}


def machine() -> str:
    """This machine in words: host name, architecture, CPU model (Linux's /proc/cpuinfo) and cores."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{platform.node() or 'this machine'} ({platform.machine()}, {cpu}, {os.cpu_count()} cores)"


class HostPasses:
    """The host's micro-benchmarks: numpy passes of the kinds the host ops make, one thread as
    the trainer runs them. ``busy_s`` and ``ddr_bytes`` add up what all of them ran (the stream
    passes' bytes go to the DDR, the cache-resident ones' do not); ``timed``: per kind, its
    seconds, numpy calls and work (bytes or elements)."""

    def __init__(self, stream_elements: int = STREAM_ELEMENTS, cache_elements: int = CACHE_ELEMENTS):
        big = np.random.default_rng(0).standard_normal(stream_elements, dtype=np.float32)
        out, tiny = np.empty_like(big), np.zeros(1, np.float32)
        cached = {t: (np.ones(cache_elements, t), np.ones(cache_elements, t), np.empty(cache_elements, t))
                  for t in (np.float32, np.float64, np.int32)}
        add = lambda t: lambda: np.add(cached[t][0], cached[t][1], out=cached[t][2])  # noqa: E731
        self.stream_mib = big.nbytes / 2**20
        self.busy_s, self.ddr_bytes, self.timed = 0.0, 0.0, {}
        # kind: (one numpy call, numpy calls per benchmark call, work per numpy call, its bytes go to the DDR)
        self.kinds = {"host_call": (lambda: np.add(tiny, tiny, out=tiny), TINY_PASSES, 0, False),
                      "host_stream": (lambda: np.multiply(big, np.float32(0.5), out=out), 1, 2 * big.nbytes, True),
                      "host_f32": (add(np.float32), CACHE_PASSES, cache_elements, False),
                      "host_f64": (add(np.float64), CACHE_PASSES, cache_elements, False),
                      "host_int": (add(np.int32), CACHE_PASSES, cache_elements, False)}

    def calls(self) -> dict:
        """One benchmark call of each kind, timed into ``busy_s``, ``ddr_bytes`` and ``timed``."""
        def timed(kind, fn, n, work, ddr):
            def call():
                t0 = time.perf_counter()
                for _ in range(n):
                    fn()
                seconds = time.perf_counter() - t0
                acc = self.timed.setdefault(kind, [0.0, 0, 0.0])
                acc[0], acc[1], acc[2] = acc[0] + seconds, acc[1] + n, acc[2] + n * work
                self.busy_s += seconds
                self.ddr_bytes += n * work if ddr else 0
            return call
        return {kind: timed(kind, *spec) for kind, spec in self.kinds.items()}

    def rates(self) -> dict:
        """The host's figures from the passes run: seconds per numpy call from the 1-element loop;
        bytes and elements per second from the other passes' work over their seconds less that."""
        seconds, n, _ = self.timed["host_call"]
        call_s = seconds / n
        rate = lambda s, n, work: work / max(s - n * call_s, 1e-12)  # noqa: E731
        return {"stream_bytes_per_s": rate(*self.timed["host_stream"]), "f32_per_s": rate(*self.timed["host_f32"]),
                "f64_per_s": rate(*self.timed["host_f64"]), "int_per_s": rate(*self.timed["host_int"]),
                "call_s": call_s}

    def section(self) -> dict:
        """The rates as an energy model file's ``host`` section, each figure with its source."""
        where = machine()
        return {"cpu": f"{where}: measured with one numpy thread, as the trainer's host ops run",
                **{k: {"value": v, "source": f"measured by e2t energy calibrate on {where}: "
                                             f"{HOST_WHAT[k].format(mib=self.stream_mib)}"}
                   for k, v in self.rates().items()}}


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


def run(session, plan, meter, calls: int = 8, idle_s: float = 0.5, log=print,
        host: HostPasses | None = None) -> list[dict]:
    """Segments of every engine benchmark kind on each benchmark layer, of every host pass
    (``host``, default ``HostPasses()``) and idle, at ``calls`` and ``2 * calls`` calls (idle:
    ``idle_s`` and twice that); ``meter``: ``start()`` / ``stop() -> {rail: {"joules", ...}}``. A
    segment's joules are the sum over the board's own rails (``rails.board_rails``)."""
    rng = np.random.default_rng(0)
    host = host or HostPasses()
    runs = [(kind, op["name"], fn) for op in benchmark_layers(plan)
            for kind, fn in _calls(session, op, plan.batch, rng).items()] + \
        [(kind, "", fn) for kind, fn in host.calls().items()] + [("idle", "", None)]
    segments = []
    for kind, layer, fn in runs:
        for reps in (calls, 2 * calls):
            before, busy, ddr = _totals(session.per_layer), host.busy_s, host.ddr_bytes
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
            counts["bytes"] += host.ddr_bytes - ddr
            segments.append({"kind": kind, "layer": layer, "calls": 0 if fn is None else reps, **counts,
                             "host_seconds": host.busy_s - busy, "seconds": seconds, "wall": [wall0, wall1],
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
    """The emulated engine's rail for the benchmarks, the whole-board model's joules of what ran
    between ``start()`` and ``stop()``: the engine's counts priced, the host passes' DDR bytes,
    the host's busy seconds at ``host_w`` (PS busy - idle), the seconds at ``constant_w`` (PL
    static + PS idle + the rest of the board)."""

    def __init__(self, session, host: HostPasses, model):
        w = model.power_w
        self.session, self.host, self.model = session, host, model
        self.host_w, self.constant_w = w["ps_busy"] - w["ps_idle"], w["pl_static"] + w["ps_idle"] + w["board_rest"]
        self.source = (f"modeled ({model.table}; {model.path}): the host {self.host_w:.4g} W above idle, "
                       f"{self.constant_w:.4g} W constant, a pipeline check")

    def start(self) -> None:
        self._before, self._t0 = (_totals(self.session.per_layer), self.host.busy_s, self.host.ddr_bytes), \
            time.perf_counter()

    def stop(self) -> dict:
        seconds = time.perf_counter() - self._t0
        engine, busy, ddr = self._before
        j = (self.model.price(_delta(_totals(self.session.per_layer), engine))["j"]
             + (self.host.ddr_bytes - ddr) * self.model.ddr_pj_per_byte * 1e-12
             + self.host_w * (self.host.busy_s - busy) + self.constant_w * seconds)
        return {"emulated": {"joules": j, "kind": "modeled", "source": self.source, "unit": "W", "seconds": seconds}}


class _NoMeter:
    """Brackets the benchmarks when an external meter's log gives the joules afterwards."""

    def start(self) -> None:
        pass

    def stop(self) -> dict:
        return {}


def calibration_segments(board: str, backend: str, calls: int, bitfile: str | None = None,
                         meter_log: str | None = None, board_meter=None, log=print) -> tuple[list, str, dict]:
    """The benchmarks' segments on ``backend`` (pynq: a board, its rails from ``board_meter()`` or
    ``meter_log`` afterwards; emu: the emulated engine with ``ModeledMeter``), where their
    joules come from, and the host's rates measured here (``HostPasses.section``)."""
    if calls < 1:
        raise E2TError(f"--calls must be at least 1, got {calls}")
    plan, _, arrays = planbuild.from_model("resnet8", 1, 10, 8, board, 32, 0)
    session = EngineSession(plan, arrays, open_overlay(backend, board, bitfile=bitfile, log=log))
    host = HostPasses()
    if backend == "emu":
        meter = ModeledMeter(session, host, emodel.load(board))
        source = f"the emulated engine's modeled rail ({meter.source})"
    elif meter_log:
        meter, source = _NoMeter(), f"the meter log {meter_log}"
    else:
        meter = board_meter() if board_meter else None
        if meter is None:
            raise E2TError(f"{board} has no power rails e2t can read: log an external meter and pass --meter-log")
        source = "the board's rails"
    segments = run(session, plan, meter, calls, log=log, host=host)
    if meter_log:
        joules_from_log(segments, rails.MeterLog(meter_log))
    return segments, source, host.section()
