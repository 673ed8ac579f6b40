"""The engine builds that engine tests run on: the two kernel builds (ap, native) and every CPU
path of the fast build for this machine's architecture ("auto" and each forced path). A path this
CPU cannot run is skipped, naming the path."""
import pytest

from hls import csim

FAST_PATHS = ["auto", *csim.FAST_PATHS.get(csim.target_arch(), {"scalar": []})]
BUILDS = [("ap", None), ("native", None)] + [("fast", p) for p in FAST_PATHS]
IDS = [v if p is None else f"fast-{p}" for v, p in BUILDS]


def make_engine(build) -> csim.Engine:
    """The Engine for one (variant, cpu_path) of BUILDS, or a skip if this CPU lacks the path."""
    variant, path = build
    engine = csim.Engine(variant, log=lambda m: None) if path is None else csim.Engine("fast", log=lambda m: None)
    if path is not None:
        if not engine.cpu_paths().get(path):
            pytest.skip(f"this CPU cannot run the fast engine's '{path}' path")
        engine = csim.Engine("fast", log=lambda m: None, cpu_path=path)
    return engine
