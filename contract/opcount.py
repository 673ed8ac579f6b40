"""Operation accounting: MACs at their bit widths and bytes moved, per layer and phase.

What the energy model turns into joules. Counted per kept iteration from the layer
geometry, the samples each layer really ran on (SLU skips, SMD drops) and the PSG
layers' recompute statistics, at the granularity the engine uses (docs/numerics.md):

- ``fwd``: forward conv, ``bwd_data``: backward to the input (not for the stem, whose
  input is the image, nor above frozen layers), ``bwd_w_pred``: the 4-bit predictor
  weight gradient (PSG only), ``bwd_w_full``: the full-precision weight gradient (PSG: only
  the channel pairs inside tiles that hold an unsure entry), ``update``: the weight update
  (3 multiply-adds per weight); a frozen layer (``--train-from``, ``--train``) has neither.
- MAC widths: ``fp32``; ``int8x8`` (x_q * W_q); ``int16x8`` (g_q * W_q); ``int4x16``
  (x_msb * g_q); ``int8x16`` (x_q * g_q); ``int32`` (the integer update); contract v2's
  per-element ops (``--elementwise engine``), one product per element and operand: ``int18x18``
  (STATS) and ``int32x24`` (APPLY), in the phase of the pass they serve (``fwd``, ``bwd_data``).
- Bytes are DDR traffic of the engine's dataflow: operands read once and results written
  once per op (x, W, g at their formats; conv outputs and input gradients as int32;
  master weights and momentum as int32, read and written by the update).

Host slots (``ops["host"]["per_layer"][op][phase]``, every plan op in plan order, ``{}`` for none)
count the board CPU's numpy work around the engine calls: ``read`` and ``written`` bytes (``bytes``
their sum), elementwise arithmetic by dtype (``flops``: ``f32``, ``f64``, ``int``) and ``calls``
(numpy passes, for per-call overhead); ``fwd`` and ``bwd_data`` for the forward and backward
passes, ``update`` for the SGD of the host's parameters and the convs' weight refresh.
host/train/hostops.py states what counts as a read, a write and a flop.

Board side: numpy-free plain Python, no torch.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

# The one phase vocabulary: what the counts record (engine and host), the groups the engine
# session times (a run's "engine_seconds"), and the names the energy reports print.
PHASES = ("fwd", "bwd_data", "bwd_w_pred", "bwd_w_full", "update")
TIMED_PHASES = {"forward": ("fwd",), "backward_data": ("bwd_data",), "wgrad": ("bwd_w_pred", "bwd_w_full"),
                "update": ("update",)}
PHASE_NAMES = {"fwd": "forward", "bwd_data": "backward-data", "bwd_w_pred": "PSG predictor",
               "bwd_w_full": "full weight gradient", "update": "update"}


@dataclass(frozen=True)
class LayerGeom:
    """One conv or linear layer as the accounting sees it (a linear layer is a 1x1 conv)."""

    name: str
    role: str  # "stem" | "residual" | "shortcut" | "gate" | "classifier"
    c_in: int
    c_out: int
    k: int
    h_in: int
    w_in: int
    h_out: int
    w_out: int
    block: int | None = None  # the gated block a "residual" conv belongs to
    trains: bool = True  # False: frozen (--train-from, --train): no weight gradient, no update
    input_grad: bool = True  # False: its input gets no gradient (no backward-data; the stem's never does)

    @property
    def weights(self) -> int:
        return self.c_out * self.c_in * self.k * self.k

    def macs_per_sample(self) -> int:
        return self.h_out * self.w_out * self.weights


@dataclass(frozen=True)
class Precision:
    """How the convs compute: 'fp32' or 'fixed', with or without PSG."""

    mode: str = "fp32"
    psg: bool = False

    def width(self, phase: str) -> str:
        if self.mode == "fp32":
            return "fp32"
        return {"fwd": "int8x8", "bwd_data": "int16x8", "bwd_w_pred": "int4x16",
                "bwd_w_full": "int8x16", "update": "int32" if self.psg else "fp32"}[phase]

    def bytes_x(self) -> float:
        return 4.0 if self.mode == "fp32" else 1.0

    def bytes_g(self) -> float:
        return 4.0 if self.mode == "fp32" else 2.0

    def bytes_w(self) -> float:
        return 4.0 if self.mode == "fp32" else 1.0


def add_count(acc: dict, phase: str, width: str, macs: float, nbytes: float, cycles: int | None = None) -> None:
    """Adds to ``acc[phase]``; ``cycles``: the engine's modeled cycles (contract/cycles.py) of the calls counted."""
    slot = acc.setdefault(phase, {"macs": {}, "bytes": 0.0})
    slot["macs"][width] = slot["macs"].get(width, 0) + macs
    slot["bytes"] += nbytes
    if cycles is not None:
        slot["cycles"] = slot.get("cycles", 0) + cycles


def layer_ops(g: LayerGeom, n: int, p: Precision, psg_stats: dict | None = None,
              update: bool = True) -> dict:
    """Counts of one layer for one iteration in which it ran on ``n`` samples.

    ``psg_stats`` (PSG layers): ``pairs_recomputed``, the channel pairs in recomputed
    tiles. ``update``: whether the layer's weights are updated this iteration. A frozen layer
    (``g.trains`` false) has no weight gradient and no update; one whose input gets no gradient
    (``g.input_grad`` false) no backward-data.
    """
    acc: dict = {}
    conv = p if g.role != "classifier" else Precision("fp32")
    macs = n * g.macs_per_sample()
    x_el, y_el = n * g.c_in * g.h_in * g.w_in, n * g.c_out * g.h_out * g.w_out
    out_bytes = 4.0  # int32 or fp32 results
    if n:
        add_count(acc, "fwd", conv.width("fwd"), macs, x_el * conv.bytes_x() + g.weights * conv.bytes_w() + y_el * out_bytes)
        if g.role != "stem" and g.input_grad:
            add_count(acc, "bwd_data", conv.width("bwd_data"), macs,
                 y_el * conv.bytes_g() + g.weights * conv.bytes_w() + x_el * out_bytes)
        if g.trains and conv.psg:
            add_count(acc, "bwd_w_pred", conv.width("bwd_w_pred"), macs, x_el * 0.5 + y_el * conv.bytes_g())
            share = (psg_stats or {}).get("pairs_recomputed", g.c_out * g.c_in) / (g.c_out * g.c_in)
            add_count(acc, "bwd_w_full", conv.width("bwd_w_full"), macs * share,
                 share * (x_el * conv.bytes_x() + y_el * conv.bytes_g()))
        elif g.trains:
            add_count(acc, "bwd_w_full", conv.width("bwd_w_full"), macs,
                 x_el * conv.bytes_x() + y_el * conv.bytes_g() + g.weights * out_bytes)
    if update and g.trains:
        # master + momentum in and out, + the gradient: PSG's signs as the engine's sgn port reads them (int8)
        per_weight = 16.0 + (1.0 if conv.psg else 4.0)
        add_count(acc, "update", conv.width("update"), 3 * g.weights, g.weights * per_weight)
    return acc


class OpCounter:
    """Accumulates counts over iterations: ``add_iteration`` per drawn mini-batch."""

    def __init__(self, layers: list[LayerGeom], precision: Precision):
        self.layers, self.precision = layers, precision
        self.reset()

    def reset(self) -> None:
        self.per_layer: dict[str, dict] = {g.name: {} for g in self.layers}
        self.iterations = {"kept": 0, "dropped": 0, "coasted": 0}

    def add_iteration(self, batch: int, executed: dict[int, int] | None = None,
                      psg_stats: dict[str, dict] | None = None, kept: bool = True,
                      coast: bool = False) -> None:
        """One iteration. ``executed[block]``: samples that ran that gated block (all when
        absent). A dropped batch (``kept=False``) costs nothing, or just the update when
        coasting (``coast=True``)."""
        if not kept:
            self.iterations["dropped"] += 1
            if not coast:
                return
            self.iterations["coasted"] += 1
        else:
            self.iterations["kept"] += 1
        executed, psg_stats = executed or {}, psg_stats or {}
        for g in self.layers:
            n = 0 if not kept else executed.get(g.block, batch) if g.role == "residual" else batch
            ops = layer_ops(g, n, self.precision, psg_stats.get(g.name))
            mine = self.per_layer[g.name]
            for phase, slot in ops.items():
                for width, macs in slot["macs"].items():
                    add_count(mine, phase, width, macs, 0.0)
                mine[phase]["bytes"] += slot["bytes"]

    def totals(self) -> dict:
        """Per phase and in all: MACs by width and bytes, summed over layers."""
        return sum_layers(self.per_layer)

    def record(self) -> dict:
        """JSON-ready summary for metrics.jsonl."""
        return {"precision": asdict(self.precision), "iterations": dict(self.iterations),
                "total": self.totals(), "per_layer": self.per_layer}


def sum_layers(per_layer: dict) -> dict:
    """Per phase and in all: MACs by width, bytes and (where the slots hold them) modeled engine
    cycles of per-layer counts, summed over layers."""
    out: dict = {}
    for ops in per_layer.values():
        for phase, slot in ops.items():
            for key in (phase, "all"):
                acc = out.setdefault(key, {"macs": {}, "bytes": 0.0})
                for width, macs in slot["macs"].items():
                    acc["macs"][width] = acc["macs"].get(width, 0) + macs
                acc["bytes"] += slot["bytes"]
                if "cycles" in slot:
                    acc["cycles"] = acc.get("cycles", 0) + slot["cycles"]
    return out


def total_macs(ops: dict) -> float:
    """All MACs of a ``totals()`` / ``record()['total']`` dict, whatever their width."""
    return sum(ops.get("all", {"macs": {}})["macs"].values())


# -- host slots -----------------------------------------------------------------------------
HOST_FLOPS = ("f32", "f64", "int")


def host_slot(read: int = 0, written: int = 0, flops: dict | None = None, calls: int = 0) -> dict:
    """One host slot: bytes read and written, flops by dtype (every key of HOST_FLOPS), numpy calls."""
    return {"bytes": read + written, "read": read, "written": written,
            "flops": {k: (flops or {}).get(k, 0) for k in HOST_FLOPS}, "calls": calls}


def add_host(acc: dict, phase: str, slot: dict) -> None:
    """Add the host slot ``slot`` into ``acc[phase]``."""
    mine = acc.get(phase)
    if mine is None:  # (not setdefault: a slot built on every call costs the trainers' counting)
        mine = acc[phase] = host_slot()
    for key in ("bytes", "read", "written", "calls"):
        mine[key] += slot[key]
    for kind, n in slot["flops"].items():
        mine["flops"][kind] = mine["flops"].get(kind, 0) + n


def merge_host(*slots: dict) -> dict:
    """One host slot holding the sum of ``slots`` (empty ones, ``{}``, add nothing)."""
    acc: dict = {}
    for s in slots:
        if s:
            add_host(acc, "sum", s)
    return acc.get("sum", host_slot())


def sum_host_layers(per_layer: dict) -> dict:
    """Per phase and in all: the host slots of per-op counts, summed over ops."""
    out: dict = {}
    for ops in per_layer.values():
        for phase, slot in ops.items():
            for key in (phase, "all"):
                add_host(out, key, slot)
    return out
