"""The engine builds that engine tests run on: the two kernel builds (ap, native), every CPU path
of the fast build for this machine's architecture ("auto" and each forced path), and the aarch64
fast build's paths (NEON, scalar) under qemu-user. A path this CPU cannot run, or the aarch64
build without the cross tools, is skipped with the reason."""
import shutil

import pytest

from hls import csim

FAST_PATHS = ["auto", *csim.FAST_PATHS.get(csim.target_arch(), {"scalar": []})]
ARM_CXX, QEMU, ARM_SYSROOT = "aarch64-linux-gnu-g++", "qemu-aarch64", "/usr/aarch64-linux-gnu"
ARM_PATHS = [] if csim.target_arch() == "aarch64" else ["neon", "scalar"]
BUILDS = ([("ap", None), ("native", None)] + [("fast", p) for p in FAST_PATHS]
          + [("aarch64", p) for p in ARM_PATHS])
IDS = [v if p is None else f"{v}-{p}" for v, p in BUILDS]


def make_engine(build) -> csim.Engine:
    """The Engine for one (variant, cpu_path) of BUILDS, or a skip naming what is missing."""
    variant, path = build
    quiet = lambda m: None  # noqa: E731
    if variant == "aarch64":
        missing = [t for t in (ARM_CXX, QEMU) if shutil.which(t) is None]
        if missing:
            pytest.skip(f"the aarch64 build needs {' and '.join(missing)} "
                        "(apt-get install g++-aarch64-linux-gnu qemu-user; make test-tools)")
        return csim.RunnerEngine(ARM_CXX, [QEMU, "-L", ARM_SYSROOT], log=quiet, cpu_path=path)
    if path is None:
        return csim.Engine(variant, log=quiet)
    if not csim.Engine("fast", log=quiet).cpu_paths().get(path):
        pytest.skip(f"this CPU cannot run the fast engine's '{path}' path")
    return csim.Engine("fast", log=quiet, cpu_path=path)
