"""The emulated engine's cost per call outside its kernel: tiny STATS, APPLY and CONV_FWD calls.

    python bench/call_overhead.py [--calls 2000] [--rounds 3] [--tensors 180] [--threads N] [--gap US]
                                  [--against TREE] [--json PATH]

Each call goes through ``EngineSession`` on the emulated overlay as a training step's do: the
driver's register writes, the start, the wait and the status reads, the DDR's and the step
tensors' flush and invalidate (``--tensors`` step tensors beside the bench's own, about what a
ResNet-20 E2-Train step with ``--elementwise engine`` holds), the emulated register file's
decode (every address register holds a buffer, as after a step's first calls), the CPU build's
marshalling and the kernel. The operands are 1 image of 16 x 8 x 8 (the conv: 16 to 16
channels, 3 x 3), so the kernel does little. It runs on ``--threads`` OpenMP threads (default
``$OMP_NUM_THREADS``, else 1; 0: the runtime's default, every core), each call after ``--gap``
idle microseconds (default 0, back to back; the host's work between a training step's engine
calls is such a gap, in which OpenMP's idle threads fall asleep).

Per op, microseconds per call: of the calling thread's CPU time on one thread (the kernel runs on
that thread; other processes on a shared machine add little to it), of wall time on more (the
wait for the other threads is no CPU time of the caller's). ``session`` is the whole call,
``kernel`` the CPU build's entry point within it (timed around each ctypes call), ``outside`` the
difference, and ``marshal`` the CPU build's ``Engine.call`` on the same registers and buffers
less its kernel. ``--against`` measures another checkout of e2t too (e.g. git HEAD's,
unpacked), round by round alternating with this one, for an A/B on the same machine at the same
time; each figure's best round counts.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPS = ("STATS", "APPLY", "CONV_FWD")
FIGURES = ("session", "kernel", "outside", "marshal")
# one thread: the calling thread's CPU time (what other processes run meanwhile is not in it);
# more: wall time, which holds the wait for the others
CLOCK = time.thread_time if os.environ.get("OMP_NUM_THREADS") == "1" else time.perf_counter


class _Recorder:
    """The emulated IP's CPU build, keeping the registers and buffers of its last call and the
    seconds spent in its kernel (the ctypes entry point, timed around each call)."""

    def __init__(self, engine):
        self.engine, self.last, self.kernel_s = engine, None, 0.0
        fn = engine._fn

        def timed(*args):
            start = CLOCK()
            fn(*args)
            self.kernel_s += CLOCK() - start
        engine._fn = timed

    def call(self, regs, ports, **kw):
        self.last = (dict(regs), dict(ports), kw)  # kw: the overlay's (persistent=True where the tree has it)
        return self.engine.call(regs, ports, **kw)


def _per_call(fn, calls: int, engine: _Recorder, gap_s: float) -> tuple[float, float]:
    """Microseconds per call of ``fn`` and of the kernel within it, each call after ``gap_s`` idle."""
    engine.kernel_s, spent = 0.0, 0.0
    for _ in range(calls):
        if gap_s:
            time.sleep(gap_s)
        start = CLOCK()
        fn()
        spent += CLOCK() - start
    return spent / calls * 1e6, engine.kernel_s / calls * 1e6


def measure(calls: int, tensors: int, gap_s: float) -> dict:
    """Microseconds per call of each op's figures, in this process (the tree on sys.path)."""
    import numpy as np

    from contract import numerics as nx
    from hls import csim
    from host.engine.emulated import EmulatedOverlay
    from host.engine.session import EngineSession
    from host.plan import planbuild

    plan, _, arrays = planbuild.from_model("resnet8", 1, 10, 8, "pynq-z2", 8, seed=0)
    s = EngineSession(plan, arrays, EmulatedOverlay("pynq-z2", log=lambda m: None))
    engine = s.ip.engine = _Recorder(s.ip.engine)
    op = next(o for o in plan.convs() if o["c_in"] == o["c_out"] == 16 and o["stride"] == 1 and o["k"] == 3)
    shape = (op["c_in"], op["h"], op["w"])
    for i in range(tensors):
        s.tensor(f"other.{i}", np.int32, shape, 1)
    rng = np.random.default_rng(0)
    s.tensor("a", np.int32, shape, 1)[...] = rng.integers(-1000, 1000, (1, *shape))
    s.tensor("z", np.int8, shape, 1)
    s.tensor("x", np.int8, shape, 1)[...] = rng.integers(-128, 128, (1, *shape))
    s.tensor("y", np.int32, (op["c_out"], op["ho"], op["wo"]), 1)
    coef = np.tile(np.array([[1 << 20, 0, 0]], np.int64), (op["c_in"], 1))
    # one call of each other kind sets every address register, as in a training step: a start
    # hands the CPU build every buffer they address
    s.tensor("a16", np.int16, shape, 1)
    s.tensor("m", np.int8, shape, 1)
    s.apply(op, "fwd", 1, "a", coef, 24, "a16", b="a", mask="m")
    s.set_grad(op, np.zeros((1, op["c_out"], op["ho"], op["wo"]), np.int64))
    s.conv_bwd_data(op, 1)
    s.conv_wgrad(op, 1, "abs")
    s.update(op, nx.UpdateConstants.from_floats(0.01, 0.0, 0.9))
    runs = {"STATS": lambda: s.stats(op, "fwd", 1, "a", 4),
            "APPLY": lambda: s.apply(op, "fwd", 1, "a", coef, 24, "z"),
            "CONV_FWD": lambda: s.conv_fwd(op, None, n=1, act="x", out="y")}
    out = {}
    for kind, run in runs.items():
        run()  # first-call costs (the cycle model's memo, step tensors' buffers)
        regs, ports, kw = engine.last
        session, kernel = _per_call(run, calls, engine, gap_s)
        call, call_kernel = _per_call(lambda: engine.engine.call(regs, ports, **kw), calls, engine, gap_s)
        out[kind] = {"session": session, "kernel": kernel, "outside": session - kernel,
                     "marshal": call - call_kernel}
    out["source"] = csim.ROOT
    return out


def run_tree(tree: str, args) -> dict:
    """``measure`` of the checkout at ``tree`` in a fresh process."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", tree, "--calls", str(args.calls),
           "--tensors", str(args.tensors), "--gap", str(args.gap)]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tree, env=env)
    if done.returncode:
        sys.exit(f"call_overhead: the measurement of {tree} failed:\n{done.stderr[-3000:]}")
    got = json.loads(done.stdout.strip().splitlines()[-1])
    if os.path.realpath(got.pop("source")) != os.path.realpath(tree):
        sys.exit(f"call_overhead: the measurement of {tree} imported another checkout of e2t")
    return got


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=2000, help="calls per op and figure (default 2000)")
    p.add_argument("--rounds", type=int, default=3, help="rounds; the best of each figure counts (default 3)")
    p.add_argument("--tensors", type=int, default=180, help="other step tensors the session holds (default 180)")
    p.add_argument("--threads", type=int, help="OMP_NUM_THREADS of the measurements (default: as set, else 1; "
                   "0: the runtime's default, every core)")
    p.add_argument("--gap", type=float, default=0.0, help="idle microseconds before each call (default 0)")
    p.add_argument("--against", help="another e2t checkout to measure alongside (e.g. git HEAD's, unpacked)")
    p.add_argument("--json", help="also write the figures here")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # measure the checkout at this path, in this process
    args = p.parse_args()
    if args.threads is None:
        args.threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    if args.worker:
        sys.path.insert(0, args.worker)
        print(json.dumps(measure(args.calls, args.tensors, args.gap * 1e-6)))
        return
    trees = {"this": HERE_ROOT, **({"against": os.path.abspath(args.against)} if args.against else {})}
    best = {t: {k: dict.fromkeys(FIGURES, float("inf")) for k in OPS} for t in trees}
    for r in range(args.rounds):
        for name, tree in trees.items():
            for kind, figs in run_tree(tree, args).items():
                for f, v in figs.items():
                    best[name][kind][f] = min(best[name][kind][f], v)
            print(f"  round {r + 1}: {tree} measured", flush=True)
    clock = "CPU time of the calling thread" if args.threads == 1 else "wall time"
    print(f"\n{args.calls} calls per op and figure, {args.tensors} other step tensors, best of {args.rounds} rounds; "
          f"OMP_NUM_THREADS {args.threads or 'unset'}, {args.gap:g} us idle before each call; "
          f"microseconds per call ({clock})")
    print(f"{'tree':<9}{'op':<10}{'session':>10}{'kernel':>9}{'outside':>10}{'marshal':>10}")
    for name, tree in trees.items():
        for kind in OPS:
            f = best[name][kind]
            print(f"{name:<9}{kind:<10}{f['session']:>10.1f}{f['kernel']:>9.1f}{f['outside']:>10.1f}{f['marshal']:>10.1f}")
    if args.against:
        print("outside the kernel, against / this: " + ", ".join(
            f"{k} {best['against'][k]['outside'] / best['this'][k]['outside']:.2f}x" for k in OPS))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"calls": args.calls, "tensors": args.tensors, "rounds": args.rounds, "threads": args.threads,
                       "gap_us": args.gap, "trees": trees, "us_per_call": best}, fh, indent=1)


if __name__ == "__main__":
    main()
