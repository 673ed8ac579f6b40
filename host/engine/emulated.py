"""An emulated overlay with PYNQ's surface: ``overlay.e2t_engine_0`` (an IP with ``read``,
``write`` and ``register_map``), ``overlay.allocate`` (numpy buffers with a
``physical_address``, ``flush`` and ``invalidate``) and ``ip_dict``.

Behind it: a register file and an address-mapped memory. Writing ``ap_start`` decodes the
registers, finds each buffer by its address and runs the op in the engine's CPU build (the
``fast`` build by default, ``native`` or ``ap`` on request; built by hls/csim.py, reached
through the ``engine`` entry point so host/ never imports it). The driver (host/engine/driver.py) is
the same code here and on a board.
"""
from __future__ import annotations

import bisect
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from contract import backends, numerics as nx, regmap

from .driver import EngineCalls, EngineError, layout

BASE_ADDRESS = 0x4000_0000    # where the IP's AXI-Lite window would be
MEMORY_BASE = 0x1000_0000     # first "physical" address of allocated buffers
PAGE = 4096
POLL_S = 1e-3                 # the longest a read of the control register waits for a running op
VARIANTS = ("fast", "native", "ap")


class EmulatedBuffer(np.ndarray):
    """A numpy array at a physical address of the emulated memory (pynq's PynqBuffer shape):
    coherent, as pynq calls a buffer whose ``flush`` and ``invalidate`` have nothing to do."""

    physical_address: int = 0
    coherent = True

    def flush(self) -> None:
        """Caches are coherent in emulation: nothing to write back."""

    def invalidate(self) -> None:
        """Nothing to drop in emulation."""

    def freebuffer(self) -> None:
        """Allocations live as long as the overlay."""


class EmulatedMemory:
    """Allocations at increasing page-aligned addresses, found again by address."""

    def __init__(self):
        self.blocks, self.starts, self.next = [], [], MEMORY_BASE
        self._views = {}  # (address, dtype) -> view: allocations never move or end

    def allocate(self, shape, dtype=np.uint8) -> EmulatedBuffer:
        a = np.zeros(shape, dtype).view(EmulatedBuffer)
        a.physical_address = self.next
        self.blocks.append((self.next, self.next + a.nbytes, a))
        self.starts.append(self.next)
        self.next += -(-max(a.nbytes, 1) // PAGE) * PAGE
        return a

    def view(self, address: int, dtype, what: str) -> np.ndarray:
        """The memory from ``address`` to the end of its allocation, as ``dtype``."""
        found = self._views.get((address, dtype))
        if found is None:
            found = self._views[address, dtype] = self._find(address, dtype, what)
        return found

    def _find(self, address: int, dtype, what: str) -> np.ndarray:
        i = bisect.bisect_right(self.starts, address) - 1  # the allocations lie at increasing addresses
        if i >= 0:
            start, end, block = self.blocks[i]
            if address < end:
                raw = block.reshape(-1).view(np.uint8)[address - start:]
                if (address - start) % np.dtype(dtype).itemsize:
                    raise EngineError(f"emulated engine: {what} address 0x{address:x} is not aligned to "
                                      f"{np.dtype(dtype).itemsize} bytes")
                return raw[:len(raw) - len(raw) % np.dtype(dtype).itemsize].view(dtype)
        raise EngineError(f"emulated engine: {what} address 0x{address:x} is in no allocated buffer "
                          f"(a real engine would read or write stray memory)")


class EmulatedRegisters:
    """The IP's AXI-Lite register file; writing ``ap_start`` runs the op on the CPU build, on
    buffers found by address in ``memory`` (anything with ``view(address, dtype, what)``).

    ``threaded``: the op runs on a worker thread, as the fabric runs beside the CPU, and the
    control register reads busy until it ends (a refusal raises at that read). By default it
    runs within the write: the CPU build already uses every core, so nothing is gained by
    overlapping it with the host, and on a 2-core machine ResNet-20 training steps ran 5-20 %
    slower with the worker thread."""

    def __init__(self, memory, board: str, variant: str = "fast", hang: bool = False, log=None,
                 threaded: bool = False):
        if variant not in VARIANTS:
            raise EngineError(f"unknown engine build '{variant}' (known: {', '.join(VARIANTS)})")
        self.memory, self.hang = memory, hang
        rm = regmap.load()
        self.register_map = {name: r["offset"] for name, r in rm.regs.items()}
        lay = layout(rm)
        self._ctrl, self._idle, self._finished = lay.ctrl, lay.idle, lay.done | lay.idle
        # what a start decodes, from the map once: the (offset, width) of every scalar, then of
        # every address; (name, signed) of the scalars, (name, element type) of the addresses
        scalars, addresses = rm.names("scalar"), rm.names("address")
        self._decoded = [lay.at[n] for n in scalars + addresses]
        self._scalars = [(n, rm.regs[n]["type"] == "int32_t") for n in scalars]
        self._ports = [(n, nx.C_TYPES[rm.regs[n]["type"]]) for n in addresses]
        self._status = {name: off for name, off, _ in lay.status}
        self.words = {self._ctrl: self._idle}
        engine = backends.load("engine", "the emulated engine (--backend emu)")
        self.engine = engine(variant, board, log=log or (lambda m: None))
        self.calls = 0
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="e2t-engine") if threaded else None
        self._error, self._ended = None, threading.Event()
        self._ended.set()

    def read(self, offset: int) -> int:
        if offset == self._ctrl:
            if self._worker is not None:
                self._ended.wait(POLL_S)  # a poll of a running op returns when it ends, or after POLL_S
            if self._error is not None:
                error, self._error = self._error, None
                raise error  # the CPU build's refusal, raised where the driver waits
        return self.words.get(offset, 0)

    def write(self, offset: int, value: int) -> None:
        if offset == self._ctrl:
            if value & 1:
                self._start()
            return
        self.words[offset] = int(value) & 0xFFFFFFFF

    def _start(self) -> None:
        self.words[self._ctrl] = 1  # started, busy
        if self.hang:
            return
        word = self.words.get  # a register's word, or two (low first) for 64 bits
        values = [word(off, 0) | (word(off + 4, 0) << 32 if width == 64 else 0) for off, width in self._decoded]
        scalars = {name: v - (1 << 32) if signed and v >= 1 << 31 else v
                   for (name, signed), v in zip(self._scalars, values)}
        view = self.memory.view
        ports = {name: view(address, dtype, name)
                 for (name, dtype), address in zip(self._ports, values[len(self._scalars):]) if address}
        if self._worker is None:
            self._execute(scalars, ports)
        else:
            self._ended.clear()
            self._worker.submit(self._execute, scalars, ports)

    def _execute(self, scalars: dict, ports: dict) -> None:
        """Run the op and set the status and control registers (``_ended`` then, if threaded)."""
        try:
            status = self.engine.call(scalars, ports, persistent=True)  # views of the memory; the GIL is released
            for name, value in status.items():
                self.words[self._status[name]] = int(value) & 0xFFFFFFFF
            self.calls += 1
        except Exception as e:  # noqa: BLE001 - handed to the thread that waits
            self._error = e
        self.words[self._ctrl] = self._finished
        if self._worker is not None:
            self._ended.set()


class EmulatedIP(EngineCalls, EmulatedRegisters):
    """The engine IP of the emulated overlay: the driver's calls on the register file."""


class EmulatedOverlay:
    """``pynq.Overlay``'s surface for the e2t engine, without a board."""

    def __init__(self, board: str, variant: str = "fast", hang: bool = False, log=None, threaded: bool = False):
        self.memory = EmulatedMemory()
        self.e2t_engine_0 = EmulatedIP(self.memory, board, variant, hang, log, threaded)
        self.ip_dict = {"e2t_engine_0": {"type": regmap.load().vlnv, "phys_addr": BASE_ADDRESS,
                                         "addr_range": 0x10000, "registers": {
                                             n: {"address_offset": o} for n, o in self.e2t_engine_0.register_map.items()}}}

    def allocate(self, shape, dtype=np.uint8) -> EmulatedBuffer:
        return self.memory.allocate(shape, dtype)
