"""Compile the engine builds the test suite uses, in the background while its first tests run
(`make test` starts it beside pytest): each build is cached and locked (hls/csim.build), so a test
that needs one waits for it or finds it done. Failures are left to the tests that use the build,
which report them."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from hls import csim  # noqa: E402

import engines  # noqa: E402

BUILDS = [("fast", "pynq-z2"), ("native", "pynq-z2"), ("ap", "pynq-z2"), ("fast", "zcu104"), ("native", "zcu104"),
          ("ap", "zcu104")]


def main() -> int:
    quiet = lambda m: None  # noqa: E731
    for variant, board in BUILDS:
        try:
            csim.build(variant, board, log=quiet)
        except csim.EngineError:
            pass
    if csim.target_arch() != "aarch64" and all(csim.shutil.which(t) for t in (engines.ARM_CXX, engines.QEMU)):
        try:
            csim.build("fast", cxx=engines.ARM_CXX, exe_main=csim.RUNNER_MAIN, log=quiet)
        except csim.EngineError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
