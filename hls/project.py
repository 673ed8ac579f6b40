"""The engine's Vitis HLS project for one board: csim, csynth, cosim and IP export.

C simulation, C synthesis, C/RTL co-simulation and export as a Vivado IP
(e2t:hls:e2t_engine:1.0), with hls/run_hls.tcl:

    python -m hls.project --board pynq-z2 --steps csim,csynth,cosim,export --out build/hls_project/pynq-z2
    python -m hls.project --board zcu104 --steps csynth --dry-run     # print the command only

Writes the board's ``engine_config.h`` (hls/boards.py) into ``<out>/include`` and runs, in
``<out>``, ``vitis_hls -f hls/run_hls.tcl -tclargs board=... part=... clock_mhz=... steps=...
out=... config_dir=...``. Vitis HLS must be on PATH (source ``<Vitis>/settings64.sh``); without
it the command stops with a non-zero status and says so. ``make -C hls csim-gcc`` runs the same
testbench (hls/tb/e2t_engine_tb.cpp) with g++, in both the native and the ap_int build.
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys

from contract.errors import E2TError

from . import boards

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TCL = os.path.join(HERE, "run_hls.tcl")
STEPS = ("csim", "csynth", "cosim", "export")
VITIS_HLS = os.environ.get("VITIS_HLS", "vitis_hls")


def parse_steps(text: str) -> list[str]:
    """Comma-separated steps ('all' for the four), in flow order; ValueError for unknown ones."""
    words = [w.strip() for w in text.split(",") if w.strip()]
    if "all" in words:
        return list(STEPS)
    unknown = [w for w in words if w not in STEPS]
    if unknown or not words:
        raise ValueError(f"unknown step(s) {', '.join(unknown) or '(none given)'} (known: {', '.join(STEPS)}, all)")
    return [s for s in STEPS if s in words]


def default_out(board: str) -> str:
    return os.path.join(ROOT, "build", "hls_project", board)


def config_dir(out: str) -> str:
    """Where the board's engine_config.h goes inside the project folder."""
    return os.path.join(os.path.abspath(out), "include")


def log_path(out: str) -> str:
    return os.path.join(os.path.abspath(out), "vitis_hls.log")


def command(board: boards.Board, steps: list[str], out: str, vitis_hls: str = VITIS_HLS) -> list[str]:
    """The vitis_hls command line (run with ``out`` as the working directory)."""
    out = os.path.abspath(out)
    return [vitis_hls, "-f", TCL, "-l", log_path(out), "-tclargs",
            f"board={board.name}", f"part={board.part}", f"clock_mhz={board.clock_mhz:g}",
            f"steps={','.join(steps)}", f"out={out}", f"config_dir={config_dir(out)}"]


def prepare(board: boards.Board, out: str) -> str:
    """Write ``<out>/include/engine_config.h`` for ``board``; returns its path."""
    folder = config_dir(out)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "engine_config.h")
    text = boards.config_header(board)
    if os.path.exists(path):
        with open(path) as f:
            if f.read() == text:
                return path
    with open(path, "w") as f:
        f.write(text)
    return path


STANDALONE_SOURCES = ("src/e2t_engine.cpp", "src/e2t_engine.h", "src/e2t_checks.h", "include/e2t_numerics.h",
                      "include/e2t_regs.h", "tb/e2t_engine_tb.cpp", "run_hls.tcl")

_STANDALONE_MAKEFILE = """\
# The e2t engine's Vitis HLS project for {board} ({part}, {clock:g} MHz), sized by `e2t export`.
#
#   make csim-gcc                 the testbench with g++ (native integers; AP_TYPES=<folder of
#                                 ap_int.h> adds the bit-true ap_int build)
#   make csim|csynth|cosim|export Vitis HLS (vitis_hls on PATH: source <Vitis>/settings64.sh)
#   make all                      csim, csynth, cosim and export: the IP e2t:hls:e2t_engine:1.0
HERE := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))
CXX ?= g++
VITIS_HLS ?= vitis_hls
BUILD := $(HERE)/build
INC := -I $(HERE)/include -I $(HERE)/src -I $(HERE)/config
FLAGS := -std=c++17 -O1 -Wall -Wextra
KFLAGS := $(FLAGS) -Wno-unknown-pragmas -Wno-unused-label
DEPS := $(wildcard $(HERE)/src/* $(HERE)/include/* $(HERE)/config/* $(HERE)/tb/*)
ARGS := board={board} part={part} clock_mhz={clock:g} config_dir=$(HERE)/config out=$(HERE)/prj

.PHONY: csim-gcc csim csynth cosim export all

csim-gcc: $(BUILD)/tb_native $(if $(AP_TYPES),$(BUILD)/tb_ap)
\t$(BUILD)/tb_native
\t$(if $(AP_TYPES),$(BUILD)/tb_ap)

$(BUILD)/tb_native: $(DEPS)
\tmkdir -p $(BUILD)
\t$(CXX) $(FLAGS) $(INC) -c $(HERE)/tb/e2t_engine_tb.cpp -o $(BUILD)/tb_native.o
\t$(CXX) $(KFLAGS) $(INC) -c $(HERE)/src/e2t_engine.cpp -o $(BUILD)/kernel_native.o
\t$(CXX) $(BUILD)/tb_native.o $(BUILD)/kernel_native.o -o $@

$(BUILD)/tb_ap: $(DEPS)
\tmkdir -p $(BUILD)
\t$(CXX) $(FLAGS) -DE2T_AP_TYPES -isystem $(AP_TYPES) $(INC) -c $(HERE)/tb/e2t_engine_tb.cpp -o $(BUILD)/tb_ap.o
\t$(CXX) $(KFLAGS) -Wno-maybe-uninitialized -Wno-uninitialized -DE2T_AP_TYPES -isystem $(AP_TYPES) $(INC) \\
\t    -c $(HERE)/src/e2t_engine.cpp -o $(BUILD)/kernel_ap.o
\t$(CXX) $(BUILD)/tb_ap.o $(BUILD)/kernel_ap.o -o $@

csim csynth cosim export all:
\t@command -v $(VITIS_HLS) >/dev/null || {{ echo "make: $(VITIS_HLS) is not on PATH (source <Vitis>/settings64.sh); make csim-gcc runs the testbench with g++"; exit 2; }}
\tcd $(HERE) && $(VITIS_HLS) -f run_hls.tcl -tclargs $(ARGS) steps=$(if $(filter all,$@),csim$(,)csynth$(,)cosim$(,)export,$@)

, := ,
"""


def standalone(board: boards.Board) -> dict[str, bytes]:
    """A self-contained Vitis HLS project folder for ``board`` (relative path -> bytes): the kernel,
    its headers and testbench, run_hls.tcl, ``config/engine_config.h`` and a Makefile whose
    ``csim-gcc`` builds the testbench with g++ and whose Vitis targets run run_hls.tcl."""
    files = {}
    for rel in STANDALONE_SOURCES:
        with open(os.path.join(HERE, rel), "rb") as f:
            files[rel] = f.read()
    files["config/engine_config.h"] = boards.config_header(board).encode()
    files["Makefile"] = _STANDALONE_MAKEFILE.format(board=board.name, part=board.part, clock=board.clock_mhz).encode()
    return files


def _rel(path: str) -> str:
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m hls.project", description=__doc__.splitlines()[0])
    p.add_argument("--board", default=boards.DEFAULT_BOARD, help=f"one of {', '.join(boards.BOARDS)}")
    p.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated, from {', '.join(STEPS)} (or all)")
    p.add_argument("--out", default=None, help="project folder (default build/hls_project/<board>)")
    p.add_argument("--vitis-hls", default=VITIS_HLS, help="the Vitis HLS executable (default: $VITIS_HLS or vitis_hls)")
    p.add_argument("--dry-run", action="store_true", help="print the command and write nothing")
    args = p.parse_args(argv)
    try:
        board = boards.board(args.board)
        steps = parse_steps(args.steps)
    except (ValueError, E2TError) as e:
        p.error(str(e))
    out = os.path.abspath(args.out or default_out(board.name))
    cmd = command(board, steps, out, args.vitis_hls)
    if args.dry_run:
        print(f"cd {shlex.quote(out)} && {shlex.join(cmd)}")
        return 0
    config = prepare(board, out)
    if shutil.which(args.vitis_hls) is None:
        print(f"hls.project: Vitis HLS is needed for {', '.join(steps)} but '{args.vitis_hls}' is not on PATH "
              f"(source <Vitis>/settings64.sh); prepared {_rel(config)} for {board.name} ({board.part}, "
              f"{board.clock_mhz:g} MHz); `make -C hls csim-gcc BOARD={board.name}` runs the same testbench "
              f"with g++ here.", file=sys.stderr)
        return 2
    print(f"hls.project: {board.name}: {', '.join(steps)} in {_rel(out)} (log {_rel(log_path(out))})", file=sys.stderr)
    done = subprocess.run(cmd, cwd=out)
    if done.returncode != 0:
        print(f"hls.project: vitis_hls failed (exit {done.returncode}) for {board.name}: see {_rel(log_path(out))}",
              file=sys.stderr)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
