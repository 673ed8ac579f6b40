"""The engine driver: one op = write its registers by name, check and pass the buffers, start,
wait for ``ap_done`` with a timeout, read and decode the status registers.

``EngineCalls`` holds the calling convention over ``self.read`` / ``self.write`` (32-bit words
at byte offsets), so the same code drives the IP on a board (``pynq_driver()``: a
``pynq.DefaultIP`` subclass bound by VLNV) and the emulated IP (host/engine/emulated.py).
"""
from __future__ import annotations

import functools
import time

import numpy as np

from contract import regmap
from contract.errors import E2TError

DEFAULT_TIMEOUT_S = 60.0


class EngineError(E2TError):
    """The engine refused an op, hung, or does not match this e2t, or its CPU build (hls/csim.py)
    failed: an E2TError, so the CLI says it in one line."""


class EngineTimeout(EngineError):
    """``ap_done`` did not come within the timeout."""


class BadOp(EngineError):
    pass


class BadShape(EngineError):
    pass


class BadArg(EngineError):
    pass


STATUS_ERRORS = {"BAD_OP": BadOp, "BAD_SHAPE": BadShape, "BAD_ARG": BadArg}


def read_word(read, offset: int, width: int) -> int:
    """A register of ``width`` bits at ``offset`` through a 32-bit ``read``: low word first."""
    lo = int(read(offset)) & 0xFFFFFFFF
    return lo | (int(read(offset + 4)) & 0xFFFFFFFF) << 32 if width == 64 else lo


class Layout:
    """A register map as every call uses it, worked out once per map (``layout``; the map stays
    the one source): each register's (offset, width) by name, the status registers' (name,
    offset, width) in map order, the control register's offset and its bits' masks."""

    def __init__(self, rm: regmap.RegMap):
        self.rm = rm
        self.at = {name: (r["offset"], r["width"]) for name, r in rm.regs.items()}
        self.status = tuple((name, *self.at[name]) for name in rm.names("status"))
        c = rm.control
        self.ctrl = c["offset"]
        self.start, self.done, self.idle = (1 << c[bit] for bit in ("ap_start", "ap_done", "ap_idle"))

    def find(self, name: str) -> tuple[int, int]:
        """(offset, width) of register ``name``; the map refuses an unknown name (E2TError)."""
        if name not in self.at:
            self.rm.offset(name)  # raises: the engine has no such register
        return self.at[name]


@functools.lru_cache(maxsize=None)
def layout(rm: regmap.RegMap) -> Layout:
    return Layout(rm)


class EngineCalls:
    """The engine's calling convention (docs/numerics.md, section 8.1) over read/write."""

    timeout_s = DEFAULT_TIMEOUT_S
    poll_s = 20e-6

    @property
    def regs(self) -> regmap.RegMap:
        return regmap.load()

    def write_reg(self, name: str, value: int) -> None:
        self._write_regs(layout(self.regs), {name: value})

    def _write_regs(self, lay: Layout, values: dict) -> None:
        """Write registers by name: a 64-bit one as two words, low word first."""
        write, at = self.write, lay.at
        for name, value in values.items():
            off, width = at.get(name) or lay.find(name)
            value = int(value)
            write(off, value & 0xFFFFFFFF)
            if width == 64:
                write(off + 4, (value >> 32) & 0xFFFFFFFF)

    def read_reg(self, name: str) -> int:
        return read_word(self.read, *layout(self.regs).find(name))

    def run(self, what: str, scalars: dict, addresses: dict, flush=(), invalidate=()) -> dict:
        """One call: ``scalars`` and ``addresses`` by register name, ``flush`` the buffers the
        engine reads before the start, ``invalidate`` those it writes after it. Returns the
        status registers; raises the status's EngineError subclass when the op is refused."""
        self.start(what, scalars, addresses, flush)
        return self.wait(what, scalars, invalidate)

    def start(self, what: str, scalars: dict, addresses: dict, flush=()) -> None:
        """The first half of ``run``: check the engine is idle, write the registers, flush,
        set ``ap_start`` and return while the engine works (the CPU is free meanwhile)."""
        lay = layout(self.regs)
        state = int(self.read(lay.ctrl))
        if not state & lay.idle:
            raise EngineError(f"{what}: the engine is not idle (control register 0x{state:x}) before the start: "
                              f"an earlier call did not finish")
        self._write_regs(lay, scalars)
        self._write_regs(lay, addresses)
        for buf in flush:
            buf.flush()
        self.write(lay.ctrl, lay.start)

    def wait(self, what: str, scalars: dict, invalidate=()) -> dict:
        """The second half of ``run``: wait for ``ap_done`` (the timeout counts from here),
        invalidate, read and decode the status registers."""
        lay, read = layout(self.regs), self.read
        start = time.monotonic()
        while not int(read(lay.ctrl)) & lay.done:
            waited = time.monotonic() - start
            if waited > self.timeout_s:
                raise EngineTimeout(f"{what}: no ap_done after {waited:.1f} s (timeout {self.timeout_s:g} s): the "
                                    f"engine hangs or the overlay is not the e2t engine")
            time.sleep(self.poll_s)
        for buf in invalidate:
            buf.invalidate()
        status = {name: read_word(read, off, width) for name, off, width in lay.status}
        code = status["status"]
        if code != lay.rm.status["OK"]:
            name = lay.rm.status_names.get(code, f"status {code}")
            raise STATUS_ERRORS.get(name, EngineError)(f"{what}: the engine refused the call with {name} "
                                                       f"(registers {scalars}; docs/numerics.md, section 8.5)")
        return status


def check_hwh_registers(found: dict, where: str = "the overlay's .hwh") -> None:
    """Compare the registers an overlay's metadata lists (name -> {'address_offset': ...}, as
    pynq's ip_dict gives them) with this e2t's map; refuse a mismatch with both versions."""
    rm = regmap.load()
    offsets = {}
    for name, info in found.items():
        off = info.get("address_offset", info.get("offset")) if isinstance(info, dict) else None
        if off is not None:
            offsets[name] = int(off)
    for name in rm.names("scalar") + rm.names("address") + rm.names("status"):
        want = rm.offset(name)
        got = offsets.get(name, offsets.get(f"{name}_1"))
        if got is None or got != want:
            have = "missing" if got is None else f"at 0x{got:03x}"
            raise EngineError(f"register '{name}' is {have} in {where} but at 0x{want:03x} in this e2t's register map "
                              f"(version {rm.version}): rebuild the overlay from this e2t, or use the e2t it was "
                              f"built with")


@functools.lru_cache(maxsize=None)
def pynq_driver():
    """The ``pynq.DefaultIP`` subclass for the engine, bound to its VLNV (defined on first use,
    so that importing host/ never needs pynq). Call before ``pynq.Overlay(...)``."""
    try:
        from pynq import DefaultIP
    except Exception as e:  # pynq raises more than ImportError off a board
        raise E2TError(f"--backend pynq needs the pynq package on a PYNQ board ({type(e).__name__}: {e})") from None

    class E2TEngine(EngineCalls, DefaultIP):
        """The e2t training engine IP: ``pynq.Overlay`` binds it by VLNV."""

        bindto = [regmap.load().vlnv]

        def __init__(self, description):
            super().__init__(description)
            check_hwh_registers(description.get("registers", {}), f"the .hwh of {description.get('fullpath', 'the IP')}")

    return E2TEngine


class PynqOverlay:
    """A loaded ``pynq.Overlay`` as the trainer uses an overlay: its e2t engine IP and
    ``allocate`` (pynq's contiguous memory, on the overlay's device)."""

    def __init__(self, overlay):
        driver = pynq_driver()
        vlnv = regmap.load().vlnv
        names = [n for n, d in overlay.ip_dict.items() if d.get("type", "").startswith(vlnv.rsplit(":", 1)[0])]
        if not names:
            raise EngineError(f"the overlay has no e2t engine IP ({vlnv}); its IPs: {', '.join(overlay.ip_dict) or 'none'}")
        self.e2t_engine_0 = getattr(overlay, names[0])
        if not isinstance(self.e2t_engine_0, driver):
            raise EngineError(f"{names[0]} is bound to {type(self.e2t_engine_0).__name__}, not the e2t driver: its "
                              f"version differs from {vlnv} ({overlay.ip_dict[names[0]].get('type')})")
        self.overlay, self.ip_dict, self._device = overlay, overlay.ip_dict, overlay.device

    def allocate(self, shape, dtype=np.uint8):
        import pynq
        return pynq.allocate(shape, dtype, target=self._device)


class DDR:
    """The plan's one DDR allocation and a named numpy view of every buffer in it."""

    def __init__(self, plan, allocate):
        total = plan.data["ddr"]["bytes"]
        self.buffer = allocate((total,), np.uint8)
        self.base = int(self.buffer.physical_address)
        align = plan.data["ddr"]["align"]
        if self.base % align:
            raise EngineError(f"the DDR buffer at 0x{self.base:x} is not {align}-byte aligned")
        self.views, self.entries = {}, {}
        for b in plan.data["ddr"]["buffers"]:
            raw = self.buffer[b["offset"]:b["offset"] + b["bytes"]]
            self.views[b["name"]] = np.asarray(raw).view(b["dtype"]).reshape(b["shape"])
            self.entries[b["name"]] = b

    def address(self, name: str) -> int:
        return self.base + self.entries[name]["offset"]

    def load(self, arrays: dict) -> None:
        """Copy the plan's arrays (weights.bin) into their DDR buffers."""
        for name, b in self.entries.items():
            if b["init"] == "weights.bin":
                self.views[name][...] = arrays[name]

    def flush(self) -> None:
        self.buffer.flush()

    def invalidate(self) -> None:
        self.buffer.invalidate()
