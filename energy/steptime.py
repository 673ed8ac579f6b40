"""The time model of training on the board: the engine's modeled cycles, the host's time from its
counted work, their overlap as the on-engine trainer schedules them, and the DDR both share.

Inputs are the count records every run writes per epoch (``ops``: the engine's ``per_layer``
slots with their modeled ``cycles``, the host's ``host.per_layer`` slots in plan order;
contract/opcount.py) or ``e2t estimate``'s counts of one step; the rates are the board's
(``EnergyModel.host``, ``.ddr_bytes_per_s``; every figure with its source). The schedule:

- forward and update: serial. The host quantizes, the engine runs the conv, the host
  dequantizes and runs BatchNorm, ReLU, ...: each waits for the other.
- backward: each conv's CONV_BWD_DATA is waited for; its CONV_WGRAD runs while the host goes on
  with the ops below it, down to the next conv, whose first engine call waits for it
  (host/train/ops.py's ``Conv.backward``). So a conv's weight gradient overlaps the host's
  backward work of its segment: the conv itself (dequantize, quantize) and the ops below it, up
  to the next conv; the ops above the last conv (loss, classifier, pooling) run before any
  engine call.
- the DDR is a floor: the engine's and the host's bytes together at its sustained bandwidth.

Host time of a slot: ``calls`` x the per-call overhead, plus the longer of its bytes at the
stream bandwidth and its flops at the CPU's rates (a roofline per op). Over an epoch the model
runs on the epoch's summed counts: exact for identical steps, a slight undercount of the
overlap's waits where steps differ (SLU's sub-batches). Everything here is modeled.
"""
from __future__ import annotations

from contract.opcount import PHASES

WGRAD = ("bwd_w_pred", "bwd_w_full")
FLOP_RATES = {"f32": "f32_per_s", "f64": "f64_per_s", "int": "int_per_s"}
BOUNDS = ("engine", "host", "DDR")


def host_seconds(slot: dict, host: dict) -> float:
    """Modeled seconds of one host count slot on a CPU with rates ``host`` (EnergyModel.host)."""
    if not slot:
        return 0.0
    memory = slot.get("bytes", 0.0) / host["stream_bytes_per_s"]
    compute = sum(n / host[FLOP_RATES[kind]] for kind, n in slot.get("flops", {}).items())
    return slot.get("calls", 0) * host["call_s"] + max(memory, compute)


def _engine_s(per: dict, phases, hz: float) -> float:
    return sum(per.get(p, {}).get("cycles", 0) for p in phases) / hz


def _host_s(per: dict, phase: str, host: dict) -> float:
    return host_seconds(per.get(phase, {}), host)


def step_time(engine: dict, host_work: dict, host: dict, ddr_bytes_per_s: float, clock_mhz: float) -> dict:
    """Modeled board seconds of the work in ``engine`` (per conv: phase -> count slot with
    ``cycles``) and ``host_work`` (per plan op, in plan order: phase -> host slot).

    Returns ``seconds`` (the step, or the epoch), its ``bound`` ("engine", "host" or "DDR"),
    ``schedule_s`` (engine and host as scheduled), ``ddr_s`` (the shared floor), ``engine_s`` and
    ``host_s`` (each side's busy time), ``overlap_s`` (time both were busy), ``by_phase``
    (engine and host seconds per phase) and the ``bytes`` of each side."""
    hz = clock_mhz * 1e6
    by_phase = {p: {"engine_s": sum(_engine_s(per, (p,), hz) for per in engine.values()),
                    "host_s": sum(_host_s(per, p, host) for per in host_work.values())} for p in PHASES}
    engine_s = sum(v["engine_s"] for v in by_phase.values())
    host_s = sum(v["host_s"] for v in by_phase.values())
    # backward: host work above the last conv serial; then per conv, its backward-data serial and its
    # weight gradient beside the host's segment below it
    backward, segment, conv = 0.0, 0.0, None
    for name in reversed(list(host_work)):
        if name in engine:
            if conv is not None:
                backward += max(_engine_s(engine[conv], WGRAD, hz), segment)
                segment = 0.0
            conv = name
            backward += _engine_s(engine[name], ("bwd_data",), hz)
        if conv is None:
            backward += _host_s(host_work[name], "bwd_data", host)
        else:
            segment += _host_s(host_work[name], "bwd_data", host)
    if conv is not None:
        backward += max(_engine_s(engine[conv], WGRAD, hz), segment)
    for name, per in engine.items():  # convs the host's list does not hold: serial
        if name not in host_work:
            backward += _engine_s(per, ("bwd_data",) + WGRAD, hz)
    serial = sum(by_phase[p]["engine_s"] + by_phase[p]["host_s"] for p in ("fwd", "update"))
    schedule_s = serial + backward
    engine_bytes = sum(s.get("bytes", 0.0) for per in engine.values() for s in per.values())
    host_bytes = sum(s.get("bytes", 0.0) for per in host_work.values() for s in per.values())
    ddr_s = (engine_bytes + host_bytes) / ddr_bytes_per_s
    seconds = max(schedule_s, ddr_s)
    bound = "DDR" if ddr_s > schedule_s else "engine" if engine_s >= host_s else "host"
    return {"seconds": seconds, "bound": bound, "schedule_s": schedule_s, "ddr_s": ddr_s, "engine_s": engine_s,
            "host_s": host_s, "overlap_s": max(0.0, engine_s + host_s - schedule_s), "by_phase": by_phase,
            "bytes": {"engine": engine_bytes, "host": host_bytes}}
