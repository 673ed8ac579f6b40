"""Power-rail sources behind one small duck-typed interface, and their integration.

A rail has ``name``, ``unit`` ("W" for power, "J" for an energy counter), ``source`` (where the
figure comes from, in every report) and ``resolution``; ``read()`` gives a ``Reading`` with a
timestamp. Sources here:

- Linux hwmon sysfs (``hwmon*/name``, ``power*_input`` in uW, ``in*_input`` in mV and
  ``curr*_input`` in mA, ``*_label``); a rail that reports only voltage and current gives their
  product. The root is injectable, so tests run on fake trees.
- Linux powercap / RAPL (``intel-rapl*/energy_uj`` with ``max_energy_range_uj``): the
  workstation CPU's own joules, wrap-around handled. Reported as the host CPU's, never mixed with
  a board's.
- An external meter's log (CSV of timestamp and watts, e.g. a USB power meter, for boards
  without sensors such as the PYNQ-Z1/Z2), integrated over a run's phase timestamps.

A source that is missing or unreadable says so in one line (``probe``) and the run goes on.
"""
from __future__ import annotations

import csv
import glob
import os
import time
from dataclasses import dataclass

import numpy as np

from contract.errors import E2TError


@dataclass(frozen=True)
class Reading:
    t: float      # seconds (time.monotonic on this machine, or the log's clock)
    value: float  # in the rail's unit


def _read_number(path: str) -> float:
    with open(path) as f:
        return float(f.read().strip())


def _label(folder: str, prefix: str, default: str) -> str:
    path = os.path.join(folder, f"{prefix}_label")
    try:
        with open(path) as f:
            return f.read().strip() or default
    except OSError:
        return default


class HwmonRail:
    """One hwmon power rail: ``power*_input`` (uW), or ``in*_input`` (mV) x ``curr*_input`` (mA)."""

    unit, resolution = "W", 1e-6

    def __init__(self, folder: str, chip: str, power: str | None = None, volt: str | None = None,
                 curr: str | None = None, label: str = ""):
        self.folder, self.power, self.volt, self.curr = folder, power, volt, curr
        self.name = f"{chip}:{label}"
        self.source = f"hwmon {folder} ({'power' if power else 'voltage x current'})"

    def read(self) -> Reading:
        t = time.monotonic()
        if self.power:
            return Reading(t, _read_number(os.path.join(self.folder, self.power)) * 1e-6)
        v = _read_number(os.path.join(self.folder, self.volt)) * 1e-3
        i = _read_number(os.path.join(self.folder, self.curr)) * 1e-3
        return Reading(t, v * i)


def hwmon_rails(root: str = "/sys/class/hwmon") -> list[HwmonRail]:
    """Every power rail under ``root``: power inputs, and voltage/current pairs of one label."""
    rails = []
    for folder in sorted(glob.glob(os.path.join(root, "hwmon*"))):
        try:
            with open(os.path.join(folder, "name")) as f:
                chip = f.read().strip()
        except OSError:
            continue
        files = set(os.listdir(folder))
        for f in sorted(files):
            if f.startswith("power") and f.endswith("_input"):
                prefix = f[:-len("_input")]
                rails.append(HwmonRail(folder, chip, power=f, label=_label(folder, prefix, prefix)))
        volts = {_label(folder, f[:-6], f[:-6]): f for f in files if f.startswith("in") and f.endswith("_input")}
        currs = {_label(folder, f[:-6], f[:-6]): f for f in files if f.startswith("curr") and f.endswith("_input")}
        powered = {r.name.split(":", 1)[1] for r in rails if r.folder == folder}
        for label in sorted(set(volts) & set(currs) - powered):
            rails.append(HwmonRail(folder, chip, volt=volts[label], curr=currs[label], label=label))
    return rails


class PowercapRail:
    """A powercap (RAPL) energy counter in joules; ``energy(a, b)`` undoes its wrap-around."""

    unit, resolution = "J", 1e-6

    def __init__(self, folder: str):
        self.folder = folder
        try:
            with open(os.path.join(folder, "name")) as f:
                zone = f.read().strip()
        except OSError:
            zone = os.path.basename(folder)
        self.name = f"rapl:{zone}"
        self.source = f"powercap {folder} (this machine's CPU, not a board)"
        path = os.path.join(folder, "max_energy_range_uj")
        self.range_j = _read_number(path) * 1e-6 if os.path.exists(path) else None

    def read(self) -> Reading:
        return Reading(time.monotonic(), _read_number(os.path.join(self.folder, "energy_uj")) * 1e-6)

    def energy(self, a: Reading, b: Reading) -> float:
        """Joules between two readings; one wrap of the counter is undone (readings must be
        closer than a full range apart)."""
        d = b.value - a.value
        if d < 0:
            if not self.range_j:
                raise E2TError(f"{self.folder}: the energy counter went back and its range is unknown")
            d += self.range_j
        return d


def powercap_rails(root: str = "/sys/class/powercap") -> list[PowercapRail]:
    return [PowercapRail(f) for f in sorted(glob.glob(os.path.join(root, "intel-rapl*")))
            if os.path.exists(os.path.join(f, "energy_uj"))]


def trapezoid(t, w) -> float:
    """Joules of power samples ``w`` (W) at times ``t`` (s), by the trapezoid rule over the real
    timestamps (uneven spacing allowed)."""
    t, w = np.asarray(t, np.float64), np.asarray(w, np.float64)
    if len(t) != len(w):
        raise ValueError(f"{len(t)} timestamps but {len(w)} samples")
    if len(t) < 2:
        return 0.0
    if np.any(np.diff(t) < 0):
        raise ValueError("timestamps go back in time")
    return float(np.sum((w[1:] + w[:-1]) * np.diff(t)) / 2)


class MeterLog:
    """An external power meter's CSV log: a time column (seconds) and a watts column."""

    unit, resolution = "W", None

    def __init__(self, path: str, time_col: str = "timestamp", watt_col: str = "watts"):
        self.name, self.source = f"meter:{os.path.basename(path)}", f"external meter log {path}"
        try:
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
        except OSError as e:
            raise E2TError(f"{path}: cannot read the meter log ({e.strerror})") from None
        if not rows or time_col not in rows[0] or watt_col not in rows[0]:
            raise E2TError(f"{path}: a meter log needs columns '{time_col}' and '{watt_col}'")
        try:
            self.t = np.array([float(r[time_col]) for r in rows])
            self.w = np.array([float(r[watt_col]) for r in rows])
        except ValueError as e:
            raise E2TError(f"{path}: a value is not a number ({e})") from None
        order = np.argsort(self.t, kind="stable")
        self.t, self.w = self.t[order], self.w[order]

    def energy(self, t0: float, t1: float, offset: float = 0.0) -> float:
        """Joules between run times ``t0`` and ``t1`` (the log's clock minus ``offset``): the
        samples inside, with the power at both ends interpolated."""
        t = self.t - offset
        if t0 < t[0] or t1 > t[-1]:
            raise E2TError(f"{self.name}: the phase {t0:.3f}..{t1:.3f} s is outside the log "
                           f"({t[0]:.3f}..{t[-1]:.3f} s)")
        inside = (t > t0) & (t < t1)
        ts = np.concatenate([[t0], t[inside], [t1]])
        ws = np.concatenate([[np.interp(t0, t, self.w)], self.w[inside], [np.interp(t1, t, self.w)]])
        return trapezoid(ts, ws)


class PynqRail:
    """One rail of ``pynq.get_rails()`` (libsensors on the board): its power sensor, or the
    product of its voltage and current sensors."""

    unit, resolution = "W", None

    def __init__(self, rail):
        self.rail, self.name = rail, f"pynq:{rail.name}"
        self.sensor = rail.power  # None for a rail with voltage and current only
        self.source = f"pynq.get_rails() {rail.name} ({'power' if rail.power else 'voltage x current'}, libsensors)"

    def read(self) -> Reading:
        r = self.rail
        value = r.power.value if r.power else r.voltage.value * r.current.value
        return Reading(time.monotonic(), float(value))


def pynq_rails(get_rails=None) -> list[PynqRail]:
    """The board's rails through pynq (``get_rails`` injectable); those with no power reading
    (neither a power sensor nor voltage and current) are left out."""
    if get_rails is None:
        import warnings
        try:
            import pynq
        except ImportError as e:
            raise OSError(f"pynq is not installed ({e})") from None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Could not initialise libsensors": get_rails() is then empty
            found = pynq.get_rails()
    else:
        found = get_rails()
    return [PynqRail(r) for _, r in sorted(found.items()) if r.power or (r.voltage and r.current)]


def probe(hwmon_root: str = "/sys/class/hwmon", powercap_root: str = "/sys/class/powercap", log=print,
          pynq: bool = False, get_rails=None) -> list:
    """The rails this machine has (``pynq``: also the board's, through pynq.get_rails()); every
    source that is missing or unreadable gets one line."""
    found = []
    sources = [("hwmon", hwmon_rails, hwmon_root), ("powercap", powercap_rails, powercap_root)]
    if pynq:
        sources.insert(0, ("pynq", lambda _: pynq_rails(get_rails), "pynq.get_rails()"))
    for what, finder, root in sources:
        try:
            rails = finder(root)
        except OSError as e:
            log(f"energy: {what} at {root} unreadable ({e.strerror or e}); going on without it")
            continue
        ok = []
        for r in rails:
            try:
                r.read()
                ok.append(r)
            except (OSError, ValueError) as e:
                log(f"energy: {r.name} ({r.source}) unreadable ({getattr(e, 'strerror', None) or e}); skipped")
        if not rails:
            log(f"energy: no {what} rails at {root}")
        found += ok
    return found


def board_rails(recorded: dict, names: list) -> list:
    """The rails of ``recorded`` ({rail: ...}) that sum to the board's power: for each rail the
    board's data names (``board.json`` "rails": a label, ``pynq:12V``, or a hwmon chip,
    ``ina260_u14:power1``) the first recorded one it names (a sensor read both through pynq and
    hwmon counts once); every recorded rail where it names none or none was recorded. A board's
    sensors can sit behind one another (the ZCU104's regulators behind its 12 V input), so
    summing all would count twice."""
    chosen = []
    for n in names:
        hits = [r for r in sorted(recorded) if n in (r, r.split(":", 1)[0], r.rsplit(":", 1)[-1])]
        if hits and hits[0] not in chosen:
            chosen.append(hits[0])
    return sorted(chosen or recorded)


class EmulatedRail:
    """The model's power over an emulated run's timeline, labelled modeled: each epoch's
    modeled joules spread evenly over its measured seconds, sampled at ``rate_hz``. Its
    trapezoid integral gives back the modeled energy (a check of the pipeline, not a
    measurement)."""

    unit, resolution = "W", None

    def __init__(self, result: dict, records: list[dict], rate_hz: float = 50.0):
        self.name, self.source = "emulated", f"modeled ({result['table']}; {result['model']})"
        self.kind = "modeled"
        t, w, start = [], [], 0.0
        for ep, rec in zip(result["epochs"], records):
            seconds = float(rec.get("seconds") or 0.0)
            if seconds <= 0:
                continue
            n = max(2, int(seconds * rate_hz) + 1)
            t.append(np.linspace(start, start + seconds, n))
            w.append(np.full(n, ep["j"] / seconds))
            start += seconds
        self.t = np.concatenate(t) if t else np.zeros(0)
        self.w = np.concatenate(w) if w else np.zeros(0)

    def energy(self) -> float:
        """The trapezoid integral over the whole timeline (each epoch's samples on their own)."""
        return trapezoid(self.t, self.w)


class PynqRecorder:
    """Measures the board's power-sensor rails with ``pynq.DataRecorder`` (the PYNQ image's
    sampler: a thread that reads the sensors every ``period`` seconds into a pandas frame,
    each ``start()`` a new mark). DataRecorder only records: ``stop()`` integrates each rail by
    the trapezoid rule over the frame's real timestamps. ``data_recorder``: injectable."""

    def __init__(self, found: list, period: float = 0.1, data_recorder=None):
        if data_recorder is None:
            from pynq import DataRecorder as data_recorder
        self.rails, self.period = [r for r in found if getattr(r, "sensor", None) is not None], period
        self.recorder = data_recorder(*[r.sensor for r in self.rails])
        self.mark = None

    def start(self) -> None:
        self.mark = self.recorder.mark() + 1  # record() starts the next mark: this stretch's samples
        self.recorder.record(self.period)

    def stop(self) -> dict:
        self.recorder.stop()
        frame = self.recorder.frame
        part = frame[frame["Mark"] == self.mark]
        t = part.index.values.astype("datetime64[ns]").astype(np.int64) / 1e9  # seconds, whatever the unit
        out = {}
        for r in self.rails:
            out[r.name] = {"joules": trapezoid(t, part[r.sensor.name].to_numpy(np.float64)), "kind": "measured",
                           "source": r.source + ", sampled by pynq.DataRecorder", "unit": "W",
                           "seconds": float(t[-1] - t[0]) if len(t) else 0.0}
        return out


class Recorder:
    """Measures rails over stretches of a run: energy counters (RAPL) by their difference,
    power rails (hwmon) sampled on a thread every ``period`` seconds and integrated. ``start()``
    and ``stop() -> {rail: {"joules", "kind", "source", "unit"}}`` bracket one stretch."""

    def __init__(self, found: list, period: float = 0.1):
        import threading
        self.rails, self.period, self._threading = found, period, threading
        self._samples, self._stop, self._thread, self._counters = {}, None, None, {}

    def _sample(self):
        while not self._stop.wait(self.period):
            for r in self.rails:
                if r.unit == "W":
                    try:
                        self._samples[r.name].append(r.read())
                    except (OSError, ValueError):
                        pass

    def start(self) -> None:
        self._samples = {r.name: [r.read()] for r in self.rails if r.unit == "W"}
        self._counters = {r.name: r.read() for r in self.rails if r.unit == "J"}
        self._stop = self._threading.Event()
        self._thread = self._threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        out = {}
        for r in self.rails:
            if r.unit == "W":
                s = self._samples[r.name] + [r.read()]
                j, span = trapezoid([x.t for x in s], [x.value for x in s]), s[-1].t - s[0].t
            else:
                end = r.read()
                j, span = r.energy(self._counters[r.name], end), end.t - self._counters[r.name].t
            out[r.name] = {"joules": j, "kind": "measured", "source": r.source, "unit": r.unit, "seconds": span}
        return out


def meter(found: list, period: float = 0.1, data_recorder=None):
    """One ``start()`` / ``stop()`` recorder for every rail found (None for none): the board's
    power sensors through pynq.DataRecorder, the rest (hwmon, powercap, V x I rails) through
    ``Recorder``."""
    sensed = [r for r in found if getattr(r, "sensor", None) is not None]
    parts = ([PynqRecorder(sensed, period, data_recorder)] if sensed else [])
    rest = [r for r in found if r not in sensed]
    parts += [Recorder(rest, period)] if rest else []
    return _Meters(parts) if parts else None


class _Meters:
    def __init__(self, parts: list):
        self.parts = parts

    def start(self) -> None:
        for p in self.parts:
            p.start()

    def stop(self) -> dict:
        out = {}
        for p in self.parts:
            out.update(p.stop())
        return out
