"""A stand-in for a PYNQ board under the real ``pynq`` package: a ``pynq.Device`` subclass whose
register accesses reach an emulated e2t engine register file (host/engine/emulated.py) and whose
``allocate`` hands out ``pynq.PynqBuffer``s in a byte array, plus a minimal ``.hwh`` that
describes a Zynq-7000 PS and the engine IP. Only the physical board is missing."""
import os
import struct

import numpy as np

from contract import regmap
from host.engine.emulated import EmulatedRegisters

IP_BASE, IP_RANGE = 0x4000_0000, 0x1_0000
DDR_BASE, DDR_SIZE = 0x1000_0000, 64 << 20


def hwh_text(moved: str | None = None, with_engine: bool = True) -> str:
    """The overlay's metadata: the PS7 with an AXI GP0 master, and the engine with every register
    of this e2t's map (64-bit ones as ``<name>_1`` / ``<name>_2``, as Vitis HLS lists them);
    ``moved`` shifts that register by 8 bytes (an overlay from another register map)."""
    rm = regmap.load()
    regs = ['<REGISTER NAME="CTRL"><PROPERTY NAME="DESCRIPTION" VALUE="Control signals"/>'
            '<PROPERTY NAME="ADDRESS_OFFSET" VALUE="0x0"/><PROPERTY NAME="SIZE" VALUE="32"/>'
            '<PROPERTY NAME="ACCESS" VALUE="read-write"/><PROPERTY NAME="IS_ENABLED" VALUE="true"/></REGISTER>']
    for name, r in rm.regs.items():
        off = r["offset"] + (8 if name == moved else 0)
        parts = [(name, off)] if r["width"] == 32 else [(f"{name}_1", off), (f"{name}_2", off + 4)]
        for reg, o in parts:
            regs.append(f'<REGISTER NAME="{reg}"><PROPERTY NAME="DESCRIPTION" VALUE="{name}"/>'
                        f'<PROPERTY NAME="ADDRESS_OFFSET" VALUE="0x{o:x}"/><PROPERTY NAME="SIZE" VALUE="32"/>'
                        f'<PROPERTY NAME="ACCESS" VALUE="{r["access"]}"/><PROPERTY NAME="IS_ENABLED" VALUE="true"/>'
                        f'</REGISTER>')
    ps_params = "".join(
        f'<PARAMETER NAME="PCW_FPGA_FCLK{i}_ENABLE" VALUE="{int(i == 0)}"/>'
        f'<PARAMETER NAME="PCW_FCLK{i}_PERIPHERAL_CLKSRC" VALUE="IO PLL"/>'
        f'<PARAMETER NAME="PCW_FCLK{i}_PERIPHERAL_DIVISOR0" VALUE="{5 if i == 0 else 1}"/>'
        f'<PARAMETER NAME="PCW_FCLK{i}_PERIPHERAL_DIVISOR1" VALUE="{2 if i == 0 else 1}"/>' for i in range(4))
    ps_params += '<PARAMETER NAME="PSU__CRL_APB__PL0_REF_CTRL__ACT_FREQMHZ" VALUE="100.0"/>'
    memrange = (f'<MEMRANGE INSTANCE="e2t_engine_0" ADDRESSBLOCK="Reg" MEMTYPE="REGISTER" BASEVALUE="0x{IP_BASE:x}" '
                f'HIGHVALUE="0x{IP_BASE + IP_RANGE - 1:x}" MASTERBUSINTERFACE="M_AXI_GP0" '
                f'SLAVEBUSINTERFACE="s_axi_control"/>') if with_engine else ""
    engine = (f'<MODULE INSTANCE="e2t_engine_0" FULLNAME="/e2t_engine_0" MODTYPE="e2t_engine" VLNV="{rm.vlnv}" '
              f'IS_PL="TRUE"><ADDRESSBLOCKS><ADDRESSBLOCK NAME="Reg" INTERFACE="s_axi_control" USAGE="register" '
              f'BASE_ADDRESS="0" RANGE="{IP_RANGE}"><REGISTERS>{"".join(regs)}</REGISTERS></ADDRESSBLOCK>'
              f'</ADDRESSBLOCKS><BUSINTERFACES><BUSINTERFACE NAME="s_axi_control" TYPE="SLAVE" '
              f'VLNV="xilinx.com:interface:aximm:1.0"/></BUSINTERFACES></MODULE>') if with_engine else ""
    return (f'<?xml version="1.0" encoding="UTF-8"?><EDKSYSTEM><SYSTEMINFO NAME="e2t_bd" ARCH="zynq" DEVICE="7z020" '
            f'PACKAGE="clg400" SPEEDGRADE="-1"/><EXTERNALPORTS/><MODULES>'
            f'<MODULE INSTANCE="processing_system7_0" FULLNAME="/processing_system7_0" MODTYPE="processing_system7" '
            f'VLNV="xilinx.com:ip:processing_system7:5.5" IS_PL="FALSE"><PARAMETERS>{ps_params}</PARAMETERS>'
            f'<MEMORYMAP>{memrange}</MEMORYMAP><BUSINTERFACES><BUSINTERFACE NAME="M_AXI_GP0" TYPE="MASTER" '
            f'VLNV="xilinx.com:interface:aximm:1.0"/></BUSINTERFACES></MODULE>{engine}</MODULES></EDKSYSTEM>')


def write_overlay(folder, **kw) -> str:
    """An empty .bit (the stand-in never reads it) with the .hwh beside it; returns the .bit's path."""
    bit = os.path.join(str(folder), "e2t.bit")
    open(bit, "wb").close()
    with open(os.path.join(str(folder), "e2t.hwh"), "w") as f:
        f.write(hwh_text(**kw))
    return bit


class _Memory:
    """The stand-in's DDR as host/engine/emulated.py's memory interface (``view`` by address)."""

    def __init__(self):
        self.bytes = bytearray(DDR_SIZE)

    def view(self, address: int, dtype, what: str) -> np.ndarray:
        off = address - DDR_BASE
        if not 0 <= off < DDR_SIZE:
            from host.engine.driver import EngineError
            raise EngineError(f"stand-in board: {what} address 0x{address:x} is outside its DDR")
        raw = np.frombuffer(self.bytes, np.uint8)[off:]
        return raw[:len(raw) - len(raw) % np.dtype(dtype).itemsize].view(dtype)


def make_device(board: str = "pynq-z2", hang: bool = False):
    """A fresh stand-in device (classes are made here so that importing this module needs no pynq)."""
    from pynq.buffer import PynqBuffer
    from pynq.pl_server.device import Device

    class StandInDevice(Device):
        """No ``_probe_``: pynq never lists it among the system's devices."""

        def __init__(self):
            super().__init__("e2t-standin")
            self.capabilities = {"REGISTER_RW": True}
            self.name, self.arch, self.bitfile_name, self.timestamp = "standin", "armv7l", None, ""
            self.memory = _Memory()
            self.engine = EmulatedRegisters(self.memory, board, hang=hang)
            self._next = DDR_BASE

        def get_bitfile_metadata(self, bitfile_name, partial=False):
            from pynq.pl_server.hwh_parser import get_hwh_name
            from pynqmetadata.frontends import Metadata
            from pynqmetadata.views.runtime import RuntimeMetadataParser
            parser = RuntimeMetadataParser(Metadata(input=get_hwh_name(bitfile_name)))
            parser.bin_data = parser.xclbin_data = parser.dtbo_data = None
            return parser

        def read_registers(self, address, length):
            words = [self.engine.read(address - IP_BASE + 4 * i) for i in range(length // 4)]
            return struct.pack(f"<{len(words)}I", *words)

        def write_registers(self, address, data):
            for i in range(len(data) // 4):
                self.engine.write(address - IP_BASE + 4 * i, struct.unpack_from("<I", data, 4 * i)[0])

        def download(self, bitstream, parser=None):
            self.post_download(bitstream, parser, self.name)

        def gen_cache(self, bitstream, parser=None):
            pass

        def insert_device_tree(self, abs_dtbo):
            pass

        def remove_device_tree(self, abs_dtbo):
            pass

        def shutdown(self):
            pass

        def allocate(self, shape, dtype="u1", cacheable=False, **kwargs):
            dtype = np.dtype(dtype)
            nbytes = int(np.prod(shape)) * dtype.itemsize
            phys = -(-self._next // 4096) * 4096
            if phys + nbytes > DDR_BASE + DDR_SIZE:
                raise MemoryError("stand-in DDR exhausted")
            self._next = phys + nbytes
            view = memoryview(self.memory.bytes)[phys - DDR_BASE:phys - DDR_BASE + nbytes]
            return PynqBuffer(shape, dtype, buffer=view, device=self, device_address=phys, bo=None, coherent=True)

        def flush(self, bo, offset, ptr, size):
            pass

        def invalidate(self, bo, offset, ptr, size):
            pass

    return StandInDevice()


def reset_pynq() -> None:
    """Undo the process-wide state an Overlay leaves in pynq."""
    import pynq
    from pynq.pl_server.device import Device
    pynq.Clocks.device = None
    for cls, attr in ((pynq.Clocks, "_real_instance"), (Device, "_active_device"), (Device, "_devices")):
        if attr in cls.__dict__:
            delattr(cls, attr)
