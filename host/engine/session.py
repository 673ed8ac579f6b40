"""A plan's engine ops on one overlay (a board's or the emulated one): the DDR allocated once
from the plan's layout, and one method per engine op of a conv layer that fills the
registers from the plan, checks the buffers, runs the call through the driver and counts
what it did (ops, MACs by phase and operand widths per layer in contract/opcount.py's terms, so
the energy model prices both backends alike, bytes moved, the modeled engine cycles of each
call (contract/cycles.py on the plan's board), seconds).

A weight gradient can run while the host works on (``conv_wgrad(..., wait=False)``): the
engine works beside the CPU, and any later engine call or DDR access through the session
waits for it first (``wait``)."""
from __future__ import annotations

import time
from collections import defaultdict

import numpy as np

from contract import cycles as cycle_model, numerics as nx, weightrefresh as wr
from contract.opcount import TIMED_PHASES, add_count

from .driver import DDR, EngineError

PHASES = tuple(TIMED_PHASES)  # the groups of engine calls timed apart
TIMED = {p: group for group, phases in TIMED_PHASES.items() for p in phases}  # accounting phase -> its group
MODEL = {"CONV_FWD": cycle_model.conv_fwd, "CONV_BWD_DATA": cycle_model.conv_bwd_data,
         "CONV_WGRAD": cycle_model.conv_wgrad, "UPDATE": cycle_model.update,
         "STATS": lambda shape, b: cycle_model.elementwise_cycles("stats", *shape, b),
         "APPLY": lambda shape, b: cycle_model.elementwise_cycles("apply", *shape, b)}  # each call's cycle model
ELEMENT_MACS = {"STATS": "int18x18", "APPLY": "int32x24"}  # the multiplier width of a per-element op (opcount.py)


class StepTensors(dict):
    """Contract v2's step tensors by name (DDR buffers the session allocates as they are first
    used), flushed and invalidated around every call like the plan's DDR: those that are not
    ``coherent``, as pynq's buffers' ``flush`` and ``invalidate`` do (a coherent one's have
    nothing to do; the emulated overlay's are all coherent), so that a step's hundreds of
    coherent tensors cost nothing per call."""

    def __init__(self):
        super().__init__()
        self._maintained = {}  # name -> buffer, of those not coherent

    def __setitem__(self, name: str, buf) -> None:
        super().__setitem__(name, buf)
        self._maintained.pop(name, None)
        if not getattr(buf, "coherent", False):
            self._maintained[name] = buf

    def flush(self) -> None:
        for buf in self._maintained.values():
            buf.flush()

    def invalidate(self) -> None:
        for buf in self._maintained.values():
            buf.invalidate()


class EngineSession:
    """Engine calls for the conv ops of ``plan`` on ``overlay`` (``e2t_engine_0`` + ``allocate``)."""

    def __init__(self, plan, arrays: dict, overlay, ip_name: str = "e2t_engine_0"):
        self.plan, self.ip = plan, getattr(overlay, ip_name, None)
        if self.ip is None:
            raise EngineError(f"the overlay has no IP '{ip_name}' (its IPs: {', '.join(getattr(overlay, 'ip_dict', {}))})")
        self.ddr, self._allocate, self._tensors = DDR(plan, overlay.allocate), overlay.allocate, StepTensors()
        self.ddr.load(arrays)
        self.ddr.flush()
        self.v = self.ddr.views
        self.counts = defaultdict(int)
        self.seconds = defaultdict(float)
        self.per_layer = {}  # op name -> contract/opcount.py's per-phase MACs by width, bytes and cycles
        self._bounds = {}  # op name -> weight_bounds of its weights as used (until they change)
        self._cycles = {}  # (op kind, shape, PSG, recomputed tiles) -> modeled cycles of one call
        self._bytes = {}  # (STATS or APPLY, shape and mode) -> DDR bytes of one call
        self._pending = None  # the call started without waiting: its finish and what follows it

    # -- helpers --------------------------------------------------------------------------
    def _shape(self, op: dict, n: int) -> dict:
        if not 1 <= n <= self.plan.batch:
            raise EngineError(f"{op['name']}: a call on {n} images; the plan's buffers hold 1..{self.plan.batch}")
        return {"batch": n, "c_in": op["c_in"], "h_in": op["h"], "w_in": op["w"], "c_out": op["c_out"],
                "kernel": op["k"], "stride": op["stride"], "pad": op["pad"]}

    def _addr(self, op: dict, *roles: str, **tensors: str | None) -> dict:
        """Addresses of ``op``'s buffers by role; a role in ``tensors`` names a step tensor instead."""
        out = {role: self.ddr.address(op["buffers"][role]) for role in roles}
        out.update({role: self._tensors[name].physical_address for role, name in tensors.items() if name})
        return out

    def _modeled(self, kind: str, shape, psg: bool = False, recomputed: int | None = None) -> int:
        """The cycle model's cycles of one call (``shape``: a ConvShape, or UPDATE's weight count),
        memoized: the model walks the kernel's loops in Python."""
        key = (kind, shape, psg, recomputed)
        if key not in self._cycles:
            wgrad = (psg, recomputed) if kind == "CONV_WGRAD" else ()
            self._cycles[key] = MODEL[kind](shape, self.plan.board, *wgrad)
        return self._cycles[key]

    def _run(self, phase: str, kind: str, op: dict, scalars: dict, addresses: dict, nbytes: int, macs: dict,
             then=None, wait: bool = True, shape=None) -> dict | None:
        """One call; ``macs`` maps (accounting phase, width) to MACs (contract/opcount.py's names),
        the first of them also the call's bytes and modeled cycles (``shape``: the model's shape of
        the call; where not given, the op's on ``scalars``' batch). ``then(status)`` follows the
        call; ``wait=False`` returns once it started (``wait`` finishes it). Engine seconds are the
        host's time inside the call, its start and its wait: in emulation the engine's CPU build
        and the driver; on a board what the host waited for (the fabric's work beside the host's
        is not in them)."""
        self.wait()
        what, regs = f"{kind} of layer {op['name']}", {"op": self.ip.regs.ops[kind], **scalars}
        t0 = time.perf_counter()
        self.ip.start(what, regs, addresses, flush=(self.ddr, self._tensors))
        started = time.perf_counter() - t0

        def finish() -> dict:
            t1 = time.perf_counter()
            st = self.ip.wait(what, regs, invalidate=(self.ddr, self._tensors))
            self.seconds[phase] += started + time.perf_counter() - t1
            self.counts[f"ops_{kind.lower()}"] += 1
            self.counts["bytes"] += nbytes
            self.counts["saturations"] += st["saturations"]
            layer = self.per_layer.setdefault(op["name"], {})
            psg = kind == "CONV_WGRAD" and scalars["mode"] != self.ip.regs.modes["FULL"]
            cycles = self._modeled(kind, shape or cycle_model.conv_shape(op, scalars["batch"]), psg,
                                   st["psg_recomputed"] if psg else None)
            for i, ((acct, width), value) in enumerate(macs.items()):
                add_count(layer, acct, width, value, nbytes if i == 0 else 0, cycles if i == 0 else None)
            if then is not None:
                then(st)
            return st

        if wait:
            return finish()
        self._pending = finish
        return None

    def wait(self) -> None:
        """Finish the call started without waiting, if one is running."""
        finish, self._pending = self._pending, None
        if finish is not None:
            finish()

    def buffer(self, op: dict, role: str) -> np.ndarray:
        """The DDR view of one of ``op``'s buffers, once the engine is done with it."""
        self.wait()
        return self.v[op["buffers"][role]]

    def weight_bounds(self, op: dict) -> tuple[int, int, int]:
        """(forward bound, backward bound per unit of |g|, e_ref') of the layer's weights as used
        (docs/numerics.md, section 4), computed once per change of the weights."""
        b = self._bounds.get(op["name"])
        if b is None:
            wgt, s = self.buffer(op, "wgt"), self.buffer(op, "wshift")
            w_al, e_ref = nx.aligned_weights(wgt, s.astype(np.int64))
            b = self._bounds[op["name"]] = (nx.fwd_bound(wgt), nx.bwd_data_bound(np.ones(1, np.int64), w_al), e_ref)
        return b

    # -- the ops --------------------------------------------------------------------------
    def conv_fwd(self, op: dict, x_q: np.ndarray | None, *, n: int | None = None, act: str | None = None,
                 out: str | None = None) -> tuple[np.ndarray, int]:
        """CONV_FWD of ``x_q`` (int8-valued, n images): (int32 y, shift r). x_q stays in the
        layer's ``act`` buffer for its weight gradient. Contract v2: ``x_q`` None, the input is
        step tensor ``act`` (``n`` images) and the output goes to step tensor ``out``."""
        n = len(x_q) if x_q is not None else n
        regs = self._shape(op, n)
        if x_q is not None:
            self.buffer(op, "act")[:n] = x_q
        r = nx.out_shift(self.weight_bounds(op)[0])
        size = n * op["c_out"] * op["ho"] * op["wo"]
        macs = size * op["c_in"] * op["k"] ** 2
        self._run("forward", "CONV_FWD", op, {**regs, "shift": r}, self._addr(op, "act", "wgt", "out", act=act, out=out),
                  n * op["c_in"] * op["h"] * op["w"] + self.buffer(op, "wgt").size + 4 * size, {("fwd", "int8x8"): macs})
        y = self._tensors[out][:n] if out else self.buffer(op, "out")[:size].reshape(n, op["c_out"], op["ho"], op["wo"])
        return y, r

    def set_grad(self, op: dict, g_q: np.ndarray) -> None:
        """The layer's int16 output gradient into the shared ``grad`` buffer."""
        self.buffer(op, "grad")[:g_q.size] = g_q.reshape(-1)

    def conv_wgrad(self, op: dict, n: int, mode: str, threshold: int = 0, then=None, wait: bool = True,
                   act: str | None = None, grad: str | None = None) -> dict | None:
        """CONV_WGRAD on the layer's ``act`` and the ``grad`` set by ``set_grad`` (contract v2:
        step tensors ``act`` and ``grad``): PSG modes leave the signs in the layer's ``sgn``
        buffer; FULL leaves G_full in ``scratch``. ``then()`` follows the call; with
        ``wait=False`` the host goes on while it runs."""
        regs = self._shape(op, n)
        modes = self.ip.regs.modes
        code = {"full": modes["FULL"], "abs": modes["PSG_ABS"], "ratio": modes["PSG_RATIO"]}[mode]
        taps = op["c_out"] * op["c_in"] * op["k"] ** 2
        macs = n * op["ho"] * op["wo"] * taps

        def counted(st: dict) -> None:
            if mode != "full" and st["psg_tiles"]:
                share = st["psg_recomputed"] / st["psg_tiles"]  # recomputed tiles read x and g again
                add_count(self.per_layer[op["name"]], "bwd_w_full", "int8x16",
                          macs * st["psg_recomputed"] // st["psg_tiles"],
                          share * (n * op["c_in"] * op["h"] * op["w"] + 2 * n * op["c_out"] * op["ho"] * op["wo"]),
                          0)  # the recompute's cycles are the call's, counted in bwd_w_pred
                self.counts["psg_sure"] += st["psg_sure"]
                self.counts["psg_entries"] += taps
            if then is not None:
                then()

        return self._run("wgrad", "CONV_WGRAD", op, {**regs, "mode": code, "threshold": threshold},
                         self._addr(op, "act", "grad", "sgn", "scratch", act=act, grad=grad),
                         n * op["c_in"] * op["h"] * op["w"] + 2 * n * op["c_out"] * op["ho"] * op["wo"] + 9 * taps,
                         {("bwd_w_pred", "int4x16"): macs} if mode != "full" else {("bwd_w_full", "int8x16"): macs},
                         counted, wait)

    def wgrad_result(self, op: dict) -> np.ndarray:
        """The int64 weight gradient (G_full or G_msb) the last CONV_WGRAD of ``op`` left in ``scratch``."""
        sgn = self.buffer(op, "sgn")
        return self.buffer(op, "scratch")[:sgn.size].reshape(sgn.shape)

    def conv_bwd_data(self, op: dict, n: int, *, grad: str | None = None, out: str | None = None,
                      g_range: tuple | None = None) -> tuple[np.ndarray, int, int]:
        """CONV_BWD_DATA of the ``grad`` buffer: (int32 g_x, shift r, e_ref') with g_x's
        exponent e_g + wq_exp + e_ref' + r (docs/numerics.md, section 4). Contract v2: the
        gradient is step tensor ``grad`` with values in ``g_range`` (min, max), g_x goes to
        step tensor ``out``."""
        regs = self._shape(op, n)
        wgt, s = self.buffer(op, "wgt"), self.buffer(op, "wshift")
        _, per_g, e_ref = self.weight_bounds(op)
        if g_range is None:
            g_q = self.buffer(op, "grad")[:n * op["c_out"] * op["ho"] * op["wo"]]
            g_range = (int(g_q.min()), int(g_q.max())) if g_q.size else (0, 0)
        r = nx.out_shift(max(-g_range[0], g_range[1]) * per_g)
        size = n * op["c_in"] * op["h"] * op["w"]
        macs = n * op["c_out"] * op["ho"] * op["wo"] * op["c_in"] * op["k"] ** 2
        self._run("backward_data", "CONV_BWD_DATA", op, {**regs, "shift": r},
                  self._addr(op, "grad", "wgt", "wshift", "out", grad=grad, out=out),
                  2 * n * op["c_out"] * op["ho"] * op["wo"] + wgt.size + len(s) + 4 * size, {("bwd_data", "int16x8"): macs})
        gx = self._tensors[out][:n] if out else self.buffer(op, "out")[:size].reshape(n, op["c_in"], op["h"], op["w"])
        return gx, r, e_ref

    # -- contract v2: step tensors in DDR, STATS and APPLY (docs/numerics.md, section 9) ----------
    def tensor(self, name: str, dtype, per_image: tuple, n: int) -> np.ndarray:
        """Step tensor ``name``'s DDR buffer, its first ``n`` images of shape ``per_image``: allocated
        at the plan's batch on first use and kept (an engine op reads and writes it in place)."""
        buf = self._tensors.get(name)
        if buf is None:
            buf = self._tensors[name] = self._allocate((self.plan.batch, *per_image), dtype)
        if buf.dtype != np.dtype(dtype) or buf.shape[1:] != tuple(per_image) or not 1 <= n <= len(buf):
            raise EngineError(f"step tensor {name}: {n} images of {tuple(per_image)} {np.dtype(dtype)} asked, "
                              f"it holds {len(buf)} of {buf.shape[1:]} {buf.dtype}")
        return buf[:n]

    def _small(self, name: str, count: int, dtype=np.int64) -> np.ndarray:
        """A flat buffer of at least ``count`` entries (int64: coefficients, statistics), kept and
        grown as calls need."""
        buf = self._tensors.get(name)
        if buf is None or len(buf) < count:
            buf = self._tensors[name] = self._allocate((max(count, 3 * self.plan.board.max_c),), dtype)
        return buf

    def _elem(self, kind: str, op: dict, phase: str, shape: tuple, scalars: dict, addresses: dict,
              products: int) -> np.ndarray:
        """One STATS or APPLY call over an N x C x H x W ``shape`` (``addresses``: src1 and the rest),
        counted in ``op``'s ``phase``."""
        n, c, h, w = shape
        shape = (*shape, scalars["mode"])
        key = (kind, shape)
        if key not in self._bytes:
            self._bytes[key] = sum(cycle_model.elementwise_bytes(kind.lower(), *shape))
        self._run(TIMED[phase], kind, op, {**scalars, "batch": n, "c_in": c, "h_in": h, "w_in": w}, addresses,
                  self._bytes[key], {(phase, ELEMENT_MACS[kind]): products * n * c * h * w}, shape=shape)
        return self._tensors["stats"]

    def _stats(self, op: dict, phase: str, shape: tuple, src1: int, t: int, src2: int | None = None,
               u: int = 0) -> np.ndarray:
        """STATS of the int32 tensor at ``src1`` (and ``src2``: PRODUCT): a copy of the int64 [C][4] sums."""
        c = shape[1]
        self._small("stats", 4 * c)
        addr = {"src1": src1, "stats": self._tensors["stats"].physical_address}
        if src2 is not None:
            addr["src2"] = src2
        mode = self.ip.regs.stats_modes["PRODUCT" if src2 is not None else "SQUARE"]
        out = self._elem("STATS", op, phase, shape, {"mode": mode, "shift": t, "shift2": u}, addr, 1)
        return out[:4 * c].reshape(c, 4).copy()

    def _apply(self, op: dict, phase: str, shape: tuple, src1: int, coef: np.ndarray, shift: int,
               out: tuple[int, int], b: tuple[int, str] | None = None, relu: bool = False,
               mask: int | None = None) -> np.ndarray:
        """APPLY of the int32 tensor at ``src1`` into ``out`` (address, bits), ``b`` its second source
        (address, "int32" or "int8"), ``mask`` an int8 tensor's address: a copy of the int64
        [N][C][3] plane statistics."""
        n, c = shape[:2]
        self._small("coef", 3 * c)[:3 * c] = np.asarray(coef, np.int64).reshape(-1)
        self._small("stats", 3 * n * c)
        (dst, bits), src2 = out, b[1] if b else "none"
        mode = self.ip.regs.apply_mode(src2=src2, relu=relu, mask=mask is not None, out_bits=bits)
        addr = {"src1": src1, "coef": self._tensors["coef"].physical_address,
                "stats": self._tensors["stats"].physical_address, {8: "dst8", 16: "dst16", 32: "out"}[bits]: dst}
        if b:
            addr["act" if src2 == "int8" else "src2"] = b[0]
        if mask is not None:
            addr["mask"] = mask
        res = self._elem("APPLY", op, phase, shape, {"mode": mode, "shift": shift}, addr, 1 + bool(b))
        return res[:3 * n * c].reshape(n, c, 3).copy()

    def stats(self, op: dict, phase: str, n: int, a: str, t: int, b: str | None = None, u: int = 0) -> np.ndarray:
        """STATS of step tensor ``a`` (and ``b``: PRODUCT) on ``n`` images: a copy of the int64 [C][4] sums."""
        src2 = self._tensors[b].physical_address if b else None
        return self._stats(op, phase, (n, *self._tensors[a].shape[1:]), self._tensors[a].physical_address, t, src2, u)

    def apply(self, op: dict, phase: str, n: int, a: str, coef: np.ndarray, shift: int, out: str,
              b: str | None = None, relu: bool = False, mask: str | None = None) -> np.ndarray:
        """APPLY to step tensor ``a`` (``b``: its int32 or int8 second source, ``mask``: an int8
        step tensor) into step tensor ``out`` (int8, int16 or int32: the output field), ``n``
        images: a copy of the int64 [N][C][3] plane statistics."""
        t = self._tensors
        second = (t[b].physical_address, "int8" if t[b].dtype == np.int8 else "int32") if b else None
        return self._apply(op, phase, (n, *t[a].shape[1:]), t[a].physical_address, coef, shift,
                           (t[out].physical_address, t[out].dtype.itemsize * 8), second, relu,
                           t[mask].physical_address if mask else None)

    def update(self, op: dict, k: nx.UpdateConstants) -> int:
        """UPDATE of the layer's master and momentum with its ``sgn``; returns saturations."""
        count = self.buffer(op, "master").size
        st = self._run("update", "UPDATE", op, {"count": count, "e_w": op["w_exp"], "lr": k.LR, "wd": k.WD, "mu": k.MU},
                       self._addr(op, "master", "mom", "sgn"), 17 * count, {("update", "int32"): 3 * count},
                       shape=count)
        return st["saturations"]

    def refresh_weights(self, op: dict, on_engine: bool = False) -> None:
        """After an update: renormalize the master and recompute the weights as used and their
        bounds, on the host, or (``on_engine``, contract v2) by ``refresh_on_engine`` where it can."""
        if on_engine and self.refresh_on_engine(op):
            return
        master = self.buffer(op, "master")
        w, e_w = nx.renormalize(master, op["w_exp"])
        if e_w != op["w_exp"]:
            master[...] = w
            op["w_exp"] = e_w
        wq, s = nx.weights_for_use(master)
        self.buffer(op, "wgt")[...] = wq
        self.buffer(op, "wshift")[...] = s
        op["wq_exp"] = e_w
        self._bounds.pop(op["name"], None)
        self.weight_bounds(op)

    def refresh_on_engine(self, op: dict) -> bool:
        """The weights' refresh as one STATS and three APPLY calls in the update phase
        (contract/weightrefresh.py): the same weights, shifts and bounds as ``refresh_weights`` on
        the host. False, nothing written, where the engine cannot take the layer or its master
        must be renormalized (the host then does it)."""
        views, master = wr.views(op, self.plan.board), self.ddr.address(op["buffers"]["master"])
        if views is None:
            return False
        rows, taps = views
        st = self._stats(op, "update", rows, master, wr.STAT_T)
        plan = None if wr.needs_renormalize(st[:, 2], st[:, 3]) else wr.row_coefficients(st[:, 2], st[:, 3])
        if plan is None:
            return False
        s, shift, coef = plan
        wgt = self.ddr.address(op["buffers"]["wgt"])
        self._apply(op, "update", rows, master, coef, shift, (wgt, 8))
        scratch = self._small("wabs", self.v[op["buffers"]["wgt"]].size, np.int8)
        sums = sum(self._apply(op, "update", taps, master, wr.abs_coefficients(op["c_in"], sign), 0,
                               (scratch.physical_address, 8), (wgt, "int8"), relu=True)[:, :, 0]
                   for sign in wr.ABS_SIGNS)
        self.buffer(op, "wshift")[...] = s
        op["wq_exp"] = op["w_exp"]
        self._bounds[op["name"]] = wr.bounds(sums, s, self.buffer(op, "wgt"))
        return True

    def arrays(self) -> dict:
        """The persistent engine arrays (what weights.bin holds), copied out of DDR."""
        self.wait()
        self.ddr.invalidate()
        return {name: self.v[name].copy() for name, b in self.ddr.entries.items() if b["init"] == "weights.bin"}
