"""The workstation backends the board-side CLI reaches without importing them: entry points of
the ``e2t.backends`` group (pyproject.toml), loaded by name only when a command asks for one, so
host/ itself never imports torch or reference/ (ARCHITECTURE.md: a registration seam)."""
from __future__ import annotations

from importlib.metadata import entry_points

from .errors import E2TError

GROUP = "e2t.backends"


def load(name: str, what: str):
    """The object registered as ``name``; a one-line E2TError naming ``what`` needs it otherwise."""
    found = [ep for ep in entry_points(group=GROUP) if ep.name == name]
    if not found:
        raise E2TError(f"{what} needs the workstation backend '{name}', which is not installed here "
                       f"(on a workstation: pip install -r requirements.txt -e .)")
    try:
        return found[0].load()
    except ImportError as e:
        raise E2TError(f"{what} needs PyTorch and the reference/ package ({e}); "
                       f"install requirements.txt, or use a board backend") from None
