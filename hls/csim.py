"""CPU builds of the engine, loaded with ctypes: hls4ml's ``compile`` step for e2t.

Three builds share one C entry point, ``e2t_call`` (hls/include/e2t_regs.h), so the same
Python call runs on any of them:

- ``ap``: the HLS kernel (hls/src/e2t_engine.cpp) with the HLS arbitrary-precision types at
  the widths of engine_config.h, taken from the installed hls4ml package: the bit-true build;
- ``native``: the same kernel source with plain C++ integers (faster to build and run);
- ``fast``: hls/fast/e2t_fast.cpp, im2col + blocked integer GEMM, for training at useful
  scale; it gives the same integers as the kernel, which tests check.

Builds are cached under ``build/hls/`` (``$E2T_CACHE`` when set) by a hash of the sources, the
board configuration and the compiler command, and land atomically, so parallel processes never
load half a library. A refusal or a failed build is host.engine.driver's EngineError (an E2TError).
"""
from __future__ import annotations

import concurrent.futures
import ctypes
import fcntl
import functools
import hashlib
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import time

import numpy as np

from contract import numerics as nx
from contract.regmap import RegMap
from host.engine.driver import EngineError  # one family for the engine's errors, an E2TError: one line at the CLI

from . import boards, regmap

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# builds land in the source tree's build/ (a checkout), else in the user's cache (an installed wheel)
CACHE = os.environ.get("E2T_CACHE") or (os.path.join(ROOT, "build", "hls") if os.path.isfile(os.path.join(ROOT, "pyproject.toml"))
                                        else os.path.join(os.path.expanduser("~"), ".cache", "e2t", "hls"))
INCLUDE = os.path.join(HERE, "include")
KERNEL_SOURCES = [os.path.join(HERE, "src", "e2t_engine.cpp"), os.path.join(HERE, "src", "e2t_call.cpp")]
FAST_SOURCES = [os.path.join(HERE, "fast", "e2t_fast.cpp"), os.path.join(HERE, "fast", "e2t_fast_ops.cpp")]
VARIANTS = ("ap", "native", "fast")
CXX = os.environ.get("CXX", "g++")


def ap_types_dir() -> str:
    """hls4ml's copy of the HLS arbitrary-precision headers (Apache-2.0), used in place."""
    spec = importlib.util.find_spec("hls4ml")
    if spec is None or not spec.submodule_search_locations:
        raise EngineError("the 'ap' build needs the ap_types headers of hls4ml: pip install hls4ml==1.3.0")
    path = os.path.join(spec.submodule_search_locations[0], "templates", "vivado", "ap_types")
    if not os.path.exists(os.path.join(path, "ap_int.h")):
        raise EngineError(f"hls4ml is installed but {path}/ap_int.h is missing")
    return path


def _sources(variant: str) -> list[str]:
    srcs = FAST_SOURCES if variant == "fast" else KERNEL_SOURCES
    headers = [os.path.join(d, f) for d in (INCLUDE, os.path.join(HERE, "src"), os.path.join(HERE, "fast"))
               if os.path.isdir(d) for f in sorted(os.listdir(d)) if f.endswith(".h")]
    return srcs + headers


# The fast build's CPU paths per target architecture: each compiles hls/fast/e2t_fast_ops.cpp once
# with these flags (hls/fast/e2t_fast_simd.h); hls/fast/e2t_fast.cpp picks one at run time.
# x86-64-v3 is AVX2 with FMA, BMI and F16C (Haswell, Zen 1 and later); v4 adds AVX-512 F/BW/VL/DQ.
# Instruction scheduling is tuned for the machine that builds (-mtune=native, when it is not a
# cross build), which never limits the CPUs a path runs on.
_AVX512 = ["-march=x86-64-v4", "-mavx512vnni"]
FAST_PATHS = {
    "x86_64": {"vnni512": ["-DE2T_PATH_VNNI512", *_AVX512], "vnni256": ["-DE2T_PATH_VNNI256", *_AVX512],
               "avx2": ["-DE2T_PATH_AVX2", "-march=x86-64-v3"], "scalar": ["-DE2T_PATH_SCALAR"]},
    "aarch64": {"neon": ["-DE2T_PATH_NEON"], "scalar": ["-DE2T_PATH_SCALAR"]},
}


@functools.lru_cache(maxsize=None)
def target_arch(cxx: str = CXX) -> str:
    """The architecture ``cxx`` compiles for (x86_64, aarch64, ...), from ``-dumpmachine``."""
    done = subprocess.run([cxx, "-dumpmachine"], capture_output=True, text=True)
    if done.returncode != 0:
        raise EngineError(f"'{cxx} -dumpmachine' failed: {done.stderr.strip()}")
    return done.stdout.strip().split("-")[0]


def _steps(variant: str, cfg_dir: str, out: str, cxx: str = CXX, exe_main: str | None = None) -> list[list[str]]:
    """The compiler commands of one build, in order; the last writes ``out`` (a shared library,
    or with ``exe_main`` an executable of the fast build around that source file)."""
    base = [cxx, "-std=c++17", "-fPIC", "-I", INCLUDE, "-I", os.path.join(HERE, "src"), "-I", cfg_dir]
    if variant == "ap":
        return [base + ["-shared", "-O2", "-DE2T_AP_TYPES", "-isystem", ap_types_dir()] + KERNEL_SOURCES + ["-o", out]]
    if variant == "native":
        return [base + ["-shared", "-O3", "-march=native"] + KERNEL_SOURCES + ["-o", out]]
    arch = target_arch(cxx)
    paths = FAST_PATHS.get(arch, {"scalar": ["-DE2T_PATH_SCALAR"]})
    tune = ["-mtune=native"] if arch == platform.machine() and arch == "x86_64" else []
    fast = os.path.join(HERE, "fast")
    steps, objs = [], []
    for name, flags in paths.items():
        obj = f"{out}.{name}.o"
        steps.append(base + ["-I", fast, "-O3", "-fopenmp", "-c", f"-DE2T_FAST_NS=e2t_fast_{name}", *flags, *tune,
                             os.path.join(fast, "e2t_fast_ops.cpp"), "-o", obj])
        objs.append(obj)
    top = f"{out}.top.o"
    steps.append(base + ["-O2", "-fopenmp", "-c", os.path.join(fast, "e2t_fast.cpp"), "-o", top])
    link = ["-shared"] if exe_main is None else [exe_main]
    steps.append(base + ["-O2", "-fopenmp", *link, top, *objs, "-o", out])
    return steps


def _no_shared_code(obj: str, cxx: str) -> None:
    """Refuse a path object that defines weak (COMDAT) symbols: the linker keeps one copy of each,
    which could be the copy compiled for another CPU's instructions."""
    nm = cxx[:-3] + "nm" if cxx.endswith("g++") else "nm"
    done = subprocess.run([nm if shutil.which(nm) else "nm", "-C", "--defined-only", obj], capture_output=True, text=True)
    weak = [ln for ln in done.stdout.splitlines() if len(ln.split()) >= 3 and ln.split()[1] in ("W", "V", "u")
            and not ln.split()[2].startswith("DW.ref.")]  # the exception personality's pointer: data, not code
    if done.returncode != 0 or weak:
        raise EngineError(f"{os.path.basename(obj)} defines weak symbols that paths for other CPUs would share "
                          f"(give them internal linkage): {'; '.join(weak[:5]) or done.stderr.strip()}")


@functools.lru_cache(maxsize=None)
def _compiler_query(cxx: str, *args: str) -> bytes:
    """What ``cxx args`` prints (its version, what -march=native means): asked once per process."""
    return subprocess.run([cxx, *args], capture_output=True, text=True).stdout.encode()


def _native_target(steps: list[list[str]], cxx: str) -> bytes:
    """What -march/-mtune=native mean on this machine, for the cache key (empty if no step uses them)."""
    if not any("-march=native" in s or "-mtune=native" in s for s in steps):
        return b""
    return _compiler_query(cxx, "-march=native", "-Q", "--help=target")


def _run_steps(what: str, steps: list[list[str]], cxx: str) -> None:
    """Run a build's commands: the object compiles (``-c``) side by side, as many at once as this
    machine has CPUs, then the rest in order; each CPU path's object is checked for shared code."""
    objs, rest = [c for c in steps if "-c" in c], [c for c in steps if "-c" not in c]
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(len(objs), os.cpu_count() or 1))) as pool:
        done = list(pool.map(lambda cmd: (cmd, subprocess.run(cmd, capture_output=True, text=True)), objs))
    for cmd in rest if all(run.returncode == 0 for _, run in done) else []:
        done.append((cmd, subprocess.run(cmd, capture_output=True, text=True)))
        if done[-1][1].returncode != 0:
            break
    for cmd, run in done:
        if run.returncode != 0:
            raise EngineError(f"building {what} failed:\n{' '.join(cmd)}\n{run.stderr[-4000:]}")
    for cmd in objs:
        if any(a.startswith("-DE2T_FAST_NS=") for a in cmd):
            _no_shared_code(cmd[-1], cxx)


def build(variant: str = "fast", board: str = boards.DEFAULT_BOARD, log=None, cxx: str = CXX,
          exe_main: str | None = None) -> str:
    """Compile one build for one board (or reuse the cached one); returns the library's path.
    ``cxx`` may be a cross compiler; ``exe_main`` builds the fast engine into an executable around
    that C++ file instead of a library (the ARM test runner)."""
    if variant not in VARIANTS:
        raise EngineError(f"unknown engine build '{variant}' (known: {', '.join(VARIANTS)})")
    if shutil.which(cxx) is None:
        raise EngineError(f"the CPU builds need a C++ compiler: '{cxx}' is not on PATH (apt install g++)")
    cfg = boards.config_header(boards.board(board))
    digest = hashlib.sha256(cfg.encode())
    for path in _sources(variant) + ([exe_main] if exe_main else []):
        with open(path, "rb") as f:
            digest.update(path.encode() + b"\0" + f.read())
    steps = _steps(variant, "CFG", "OUT", cxx, exe_main)
    digest.update(repr(steps).encode() + _native_target(steps, cxx))
    digest.update(_compiler_query(cxx, "--version"))
    arch = target_arch(cxx)
    kind = "run" if exe_main else "lib"
    folder = os.path.join(CACHE, f"{variant}-{board}-{arch}-{kind}-{digest.hexdigest()[:16]}")
    lib = os.path.join(folder, f"e2t_{variant}_run" if exe_main else f"libe2t_{variant}.so")
    if os.path.exists(lib):
        return lib
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(lib):
            return lib
        with open(os.path.join(folder, "engine_config.h"), "w") as f:
            f.write(cfg)
        tmp = lib + f".tmp{os.getpid()}"
        start = time.perf_counter()
        say = log or (lambda m: print(m, file=sys.stderr))
        say(f"e2t: building the '{variant}' engine for {board} ({arch}) ...")
        _run_steps(f"the '{variant}' engine", _steps(variant, folder, tmp, cxx, exe_main), cxx)
        os.replace(tmp, lib)
        say(f"e2t: built {lib} in {time.perf_counter() - start:.1f} s")
    return lib


_CTYPES = {"uint32_t": ctypes.c_uint32, "int32_t": ctypes.c_int32, "uint64_t": ctypes.c_uint64}


def _struct(kind: str) -> type:
    fields = [(r.name, ctypes.c_void_p if kind == "ptr" else _CTYPES[r.ctype]) for r in regmap.REGISTERS if r.kind == kind]
    return type(f"e2t_{kind}", (ctypes.Structure,), {"_fields_": fields})


Regs, Ports, Status = _struct("in"), _struct("ptr"), _struct("out")
_STATUS_NAMES = {v: k for k, v in regmap.STATUS.items()}
_MODES = {"full": regmap.WGRAD_MODES["FULL"], "abs": regmap.WGRAD_MODES["PSG_ABS"],
          "ratio": regmap.WGRAD_MODES["PSG_RATIO"]}
_MAP = RegMap(regmap.regmap_json())  # the live definition's map: APPLY's mode fields


_PORT_TYPES = {r.name: np.dtype(nx.C_TYPES[r.ctype]) for r in regmap.REGISTERS if r.kind == "ptr"}
_REG_NAMES, _STATUS_FIELDS = frozenset(f for f, _ in Regs._fields_), tuple(f for f, _ in Status._fields_)


def _buffer(name: str, a) -> np.ndarray:
    want = _PORT_TYPES[name]
    if not isinstance(a, np.ndarray) or a.dtype != want or not (a.flags.c_contiguous and a.flags.writeable):
        raise EngineError(f"buffer '{name}' must be a writeable C-contiguous numpy array of {want.name}")
    return a


def _address(a: np.ndarray) -> int:
    """The address of a checked buffer's first element, through ctypes' view of its memory (in
    under half the time of ``a.ctypes.data``; an empty array has no byte to view)."""
    return ctypes.addressof(ctypes.c_char.from_buffer(a)) if a.nbytes else a.ctypes.data


def _ints(name: str, a, fmt: nx.Fmt, dtype) -> np.ndarray:
    a = np.asarray(a)
    if a.size and (a.min() < fmt.lo or a.max() > fmt.hi):
        raise EngineError(f"{name} has values outside the {fmt.bits}-bit range [{fmt.lo}, {fmt.hi}]")
    return np.ascontiguousarray(a, dtype=dtype)


def _nchw(name: str, a, like: np.ndarray | None, fmt: nx.Fmt, dtype) -> np.ndarray:
    """``_ints`` for an N x C x H x W operand, of ``like``'s shape when given."""
    a = _ints(name, a, fmt, dtype)
    if (like is None and a.ndim != 4) or (like is not None and a.shape != like.shape):
        raise EngineError(f"{name} has shape {a.shape}; it must be " +
                          ("N x C x H x W" if like is None else f"the first operand's {like.shape}"))
    return a


def _marshal(regs: dict, ports: dict | None) -> tuple[dict, "Regs"]:
    """Checked buffers (none where ``ports`` is None) and the register struct of one call (both
    Engine kinds)."""
    unknown = regs.keys() - _REG_NAMES | (ports or {}).keys() - _PORT_TYPES.keys()
    if unknown:
        raise EngineError(f"unknown register(s): {', '.join(sorted(unknown))}")
    return {k: _buffer(k, v) for k, v in (ports or {}).items()}, Regs(**{k: int(v) for k, v in regs.items()})


class Engine:
    """One CPU build of the engine: ``call`` is the register-level interface (what the PYNQ
    driver's emulated overlay uses), and there is one numpy-level method per op."""

    def __init__(self, variant: str = "fast", board: str = boards.DEFAULT_BOARD, log=None, cpu_path: str | None = None):
        self.variant, self.board = variant, boards.board(board)
        self.path = build(variant, board, log)
        if variant == "fast" and not {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & set(os.environ):
            # libgomp reads this when the library loads it: idle threads sleep at once rather than
            # spin. Spinning takes the core the host's second numpy thread (contract/parallel.py)
            # works on between engine calls, and on the 2-core virtual machine the next op then
            # stalled: 4 empty parallel regions after 2 ms idle took a median 2.1 ms spinning
            # 10,000 turns, 60 us passive. Small ops never wake the pool (PAR_* in
            # hls/fast/e2t_fast_ops.cpp).
            os.environ["OMP_WAIT_POLICY"] = "passive"
        self._lib = ctypes.CDLL(self.path)
        self._kept_ports, self._kept_arrays = {}, []  # call(..., persistent=True)'s Ports by array ids
        sig = [ctypes.POINTER(Regs), ctypes.POINTER(Ports), ctypes.POINTER(Status)]
        self.cpu_path = None
        if variant == "fast":
            self._lib.e2t_fast_path_name.restype = ctypes.c_char_p
            self._lib.e2t_fast_path_chosen.argtypes = sig[:1]
            self._lib.e2t_fast_call.argtypes = [ctypes.c_int] + sig
            self._lib.e2t_fast_call.restype = None
            names = self.cpu_paths()
            self.cpu_path = cpu_path or os.environ.get("E2T_FAST_PATH") or "auto"
            if not names.get(self.cpu_path):
                known = ", ".join(n for n, ok in names.items() if ok)
                raise EngineError(f"CPU path '{self.cpu_path}' of the fast engine " +
                                  ("is not supported by this CPU" if self.cpu_path in names else "is unknown") +
                                  f" (this CPU runs: {known}; E2T_FAST_PATH or cpu_path= choose one)")
            index = list(names).index(self.cpu_path)
            fast_call = self._lib.e2t_fast_call
            self._fn = lambda r, p, s: fast_call(index, r, p, s)
        else:
            self._fn = self._lib.e2t_call
            self._fn.argtypes = sig
            self._fn.restype = None

    def cpu_paths(self) -> dict[str, bool]:
        """The fast build's CPU paths (``auto`` first), each with whether this CPU runs it."""
        lib = self._lib
        return {lib.e2t_fast_path_name(i).decode(): bool(lib.e2t_fast_path_supported(i))
                for i in range(lib.e2t_fast_path_count())}

    def path_taken(self, regs: dict) -> str:
        """The CPU path this engine runs for ``regs`` (``auto`` resolved per call); the build name
        for the kernel builds."""
        if self.variant != "fast":
            return self.variant
        if self.cpu_path != "auto":
            return self.cpu_path
        return self._lib.e2t_fast_path_name(self._lib.e2t_fast_path_chosen(ctypes.byref(Regs(**regs)))).decode()

    def call(self, regs: dict, ports: dict, persistent: bool = False) -> dict:
        """Run one op: ``regs`` maps register names to integers (missing ones are 0), ``ports``
        maps buffer names to numpy arrays of the register map's element types. Returns the
        status registers. The GIL is released while the engine runs. ``persistent``: the arrays
        live as long as this engine and come back (the emulated overlay's views of its memory),
        so each set's checked Ports struct is kept by their ids and found again."""
        key = (tuple(ports), tuple(map(id, ports.values()))) if persistent else None
        p = self._kept_ports.get(key) if persistent else None
        held, r = _marshal(regs, None if p is not None else ports)
        if p is None:
            p = Ports(**{k: _address(v) for k, v in held.items()})
            if persistent:
                self._kept_ports[key] = p
                self._kept_arrays.append(held)  # alive, so that no other array takes their ids
        s = Status()
        self._fn(ctypes.byref(r), ctypes.byref(p), ctypes.byref(s))
        return {f: getattr(s, f) for f in _STATUS_FIELDS}

    def _run(self, what: str, regs: dict, ports: dict) -> dict:
        st = self.call(regs, ports)
        if st["status"] != regmap.STATUS["OK"]:
            raise EngineError(f"e2t_engine refused {what} with registers {regs}: {_STATUS_NAMES.get(st['status'], st['status'])}"
                              f" (limits of board {self.board.name}: channels <= {self.board.max_c}, "
                              f"H, W <= {self.board.max_h}, output map <= {self.board.max_ho} x {self.board.max_wo}, "
                              f"k <= {self.board.max_k}, pad <= {self.board.max_pad}, batch <= {self.board.max_batch}; "
                              f"docs/numerics.md, section 8)")
        return st

    @staticmethod
    def _shape(x_shape, o: int, k: int, stride: int, pad: int) -> dict:
        n, c, h, w = x_shape
        return {"batch": n, "c_in": c, "h_in": h, "w_in": w, "c_out": o, "kernel": k, "stride": stride, "pad": pad}

    def conv_fwd(self, x_q, w_q, stride: int, pad: int, shift: int | None = None) -> tuple[np.ndarray, int, dict]:
        """y = rshift_round(conv(x_q, W_q), r) as int32 NCHW; r = the contract's shift unless given.
        Returns (y, r, status)."""
        x = _ints("x_q", x_q, nx.ACT, np.int8)
        w = _ints("W_q", w_q, nx.WGT, np.int8)
        r = nx.out_shift(nx.fwd_bound(w)) if shift is None else shift
        n, _, h, wd = x.shape
        o, _, k, _ = w.shape
        y = np.empty((n, o, (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1), np.int32)
        st = self._run("CONV_FWD", {"op": regmap.OPS["CONV_FWD"], "shift": r, **self._shape(x.shape, o, k, stride, pad)},
                       {"act": x, "wgt": w, "out": y})
        return y, r, st

    def conv_bwd_data(self, g_q, w_q, shifts, stride: int, pad: int, in_hw: tuple,
                      shift: int | None = None) -> tuple[np.ndarray, int, dict]:
        """g_x = rshift_round(conv_transpose(g_q, W_al), r) as int32 NCHW, weights aligned by their
        per-channel shifts (docs/numerics.md, section 4). Returns (g_x, r, status)."""
        g = _ints("g_q", g_q, nx.GRAD, np.int16)
        w = _ints("W_q", w_q, nx.WGT, np.int8)
        s = np.ascontiguousarray(shifts, dtype=np.int8)
        if shift is None:
            shift = nx.out_shift(nx.bwd_data_bound(g, nx.aligned_weights(w, s)[0]))
        n, o = g.shape[:2]
        c, k = w.shape[1], w.shape[2]
        gx = np.empty((n, c) + tuple(in_hw), np.int32)
        regs = {"op": regmap.OPS["CONV_BWD_DATA"], "shift": shift, **self._shape((n, c) + tuple(in_hw), o, k, stride, pad)}
        st = self._run("CONV_BWD_DATA", regs, {"grad": g, "wgt": w, "wshift": s, "out": gx})
        return gx, shift, st

    def conv_wgrad(self, x_q, g_q, k: int, stride: int, pad: int, mode: str = "full",
                   threshold: int = 0) -> tuple[np.ndarray, np.ndarray | None, dict]:
        """Weight gradient. ``full``: returns (G_full int64, None, status). ``abs`` (threshold T)
        or ``ratio`` (threshold R = ratio * 2^16): returns (G_msb, sign int8, status) with the
        PSG counts in the status."""
        if mode not in _MODES:
            raise EngineError(f"unknown weight-gradient mode '{mode}' (known: {', '.join(_MODES)})")
        x = _ints("x_q", x_q, nx.ACT, np.int8)
        g = _ints("g_q", g_q, nx.GRAD, np.int16)
        o, c = g.shape[1], x.shape[1]
        scratch = np.empty((o, c, k, k), np.int64)
        sign = np.zeros((o, c, k, k), np.int8)
        regs = {"op": regmap.OPS["CONV_WGRAD"], "mode": _MODES[mode], "threshold": threshold,
                **self._shape(x.shape, o, k, stride, pad)}
        st = self._run("CONV_WGRAD", regs, {"act": x, "grad": g, "sgn": sign, "scratch": scratch})
        return scratch, (None if mode == "full" else sign), st

    def update(self, master: np.ndarray, mom: np.ndarray, sign, e_w: int, k: nx.UpdateConstants) -> int:
        """One sign-momentum step on int32 ``master`` and ``mom`` in place; returns saturations."""
        s = np.ascontiguousarray(sign, dtype=np.int8)
        if master.shape != mom.shape or master.size != s.size:
            raise EngineError(f"update: master {master.shape}, momentum {mom.shape} and sign {s.shape} differ in size")
        regs = {"op": regmap.OPS["UPDATE"], "count": master.size, "e_w": e_w, "lr": k.LR, "wd": k.WD, "mu": k.MU}
        return self._run("UPDATE", regs, {"master": _buffer("master", master), "mom": _buffer("mom", mom), "sgn": s})["saturations"]

    @staticmethod
    def _elem_regs(op: str, a: np.ndarray, **regs) -> dict:
        n, c, h, w = a.shape
        return {"op": regmap.OPS[op], "batch": n, "c_in": c, "h_in": h, "w_in": w, **regs}

    def stats(self, a, t: int, b=None, u: int = 0) -> tuple[np.ndarray, dict]:
        """STATS (docs/numerics.md, section 9.2) on int32 NCHW ``a`` (and ``b``: PRODUCT, else
        SQUARE): per channel (sum a_t, sum a_t b_t, min a, max a) as int64 [C][4]. Returns
        (stats, status)."""
        a = _nchw("a", a, None, nx.OUT, np.int32)
        ports = {"src1": a, "stats": np.empty((a.shape[1], 4), np.int64)}
        if b is not None:
            ports["src2"] = _nchw("b", b, a, nx.OUT, np.int32)
        mode = regmap.STATS_MODES["SQUARE" if b is None else "PRODUCT"]
        st = self._run("STATS", self._elem_regs("STATS", a, mode=mode, shift=t, shift2=u), ports)
        return ports["stats"], st

    def apply(self, a, coef, shift: int, b=None, relu: bool = False, mask=None,
              out_bits: int = 8) -> tuple[np.ndarray, np.ndarray, dict]:
        """APPLY (docs/numerics.md, section 9.3) on int32 NCHW ``a`` with int64 ``coef`` [C][3]; ``b``
        an int32 (src2) or int8 (act) array, by its dtype, or None; ``mask`` int8. Returns (z as
        int8/int16/int32 by ``out_bits``, plane stats int64 [N][C][3], status)."""
        a = _nchw("a", a, None, nx.OUT, np.int32)
        n, c = a.shape[:2]
        coef = np.ascontiguousarray(coef, dtype=np.int64)
        if coef.shape != (c, 3):
            raise EngineError(f"coef has shape {coef.shape}; APPLY reads ({c}, 3): M1, M2, B per channel")
        b = None if b is None else np.asarray(b)
        src2 = "none" if b is None else {np.dtype(np.int32): "int32", np.dtype(np.int8): "int8"}.get(b.dtype)
        if src2 is None:
            raise EngineError(f"b must be int32 (src2) or int8 (act), not {b.dtype}")
        mode = _MAP.apply_mode(src2, relu, mask is not None, out_bits)
        z = np.empty(a.shape, f"int{out_bits}")
        ports = {"src1": a, "coef": coef, {8: "dst8", 16: "dst16", 32: "out"}[out_bits]: z,
                 "stats": np.empty((n, c, 3), np.int64)}
        if b is not None:
            ports["src2" if src2 == "int32" else "act"] = _nchw("b", b, a, nx.OUT if src2 == "int32" else nx.ACT, b.dtype)
        if mask is not None:
            ports["mask"] = _nchw("mask", mask, a, nx.ACT, np.int8)
        st = self._run("APPLY", self._elem_regs("APPLY", a, mode=mode, shift=shift), ports)
        return z, ports["stats"], st


class RunnerEngine(Engine):
    """The fast build as a separate program (hls/fast/e2t_fast_runner.cpp) driven over pipes,
    with Engine's interface: for a build Python cannot load, such as the aarch64 one under
    qemu-user (``prefix=["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu"]``)."""

    def __init__(self, cxx: str, prefix: list[str] = (), board: str = boards.DEFAULT_BOARD, log=None,
                 cpu_path: str = "auto"):
        self.variant, self.board, self.cpu_path = "fast", boards.board(board), cpu_path
        runner = os.path.join(HERE, "fast", "e2t_fast_runner.cpp")
        self.path = build("fast", board, log, cxx=cxx, exe_main=runner)
        names = ["auto", *FAST_PATHS.get(target_arch(cxx), {"scalar": []})]
        if cpu_path not in names:
            raise EngineError(f"CPU path '{cpu_path}' is unknown for {target_arch(cxx)} (known: {', '.join(names)})")
        self._index = names.index(cpu_path)
        self._proc = subprocess.Popen([*prefix, self.path], stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.stdin.close()
            self._proc.wait(timeout=30)

    def call(self, regs: dict, ports: dict, persistent: bool = False) -> dict:
        """Engine.call through the runner (``persistent`` has nothing to keep: the buffers go by value)."""
        held, r = _marshal(regs, ports)
        msg = [np.int32(self._index).tobytes(), np.uint32(ctypes.sizeof(Regs)).tobytes(), bytes(r)]
        for name, _ in Ports._fields_:
            data = held[name].tobytes() if name in held else b""
            msg += [np.uint64(len(data)).tobytes(), data]
        self._proc.stdin.write(b"".join(msg))
        self._proc.stdin.flush()
        read = self._proc.stdout.read
        st = Status.from_buffer_copy(read(ctypes.sizeof(Status)) or b"\0" * ctypes.sizeof(Status))
        if self._proc.poll() not in (None, 0):
            raise EngineError(f"{self.path} stopped with status {self._proc.returncode}")
        for name, _ in Ports._fields_:
            size = int(np.frombuffer(read(8), np.uint64)[0])
            data = read(size)
            if name in held:
                held[name][...] = np.frombuffer(data, held[name].dtype).reshape(held[name].shape)
        return {f: getattr(st, f) for f in _STATUS_FIELDS}

