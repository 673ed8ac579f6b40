"""A run folder: ``config.json``, ``metrics.jsonl`` and an atomically written checkpoint.

Shared by every backend (the PyTorch reference writes torch checkpoints into it, the
board trainer numpy ones), so that resuming and reading results work the same way.
"""
from __future__ import annotations

import json
import os
import tempfile

from .errors import E2TError

CONFIG = "config.json"
METRICS = "metrics.jsonl"


def atomic_write(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old file or the new one."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class RunDir:
    """One training run on disk. ``checkpoint_name`` is the backend's checkpoint file."""

    def __init__(self, path: str, checkpoint_name: str):
        self.path = path
        self.checkpoint = os.path.join(path, checkpoint_name)

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def has_checkpoint(self) -> bool:
        return os.path.exists(self.checkpoint)

    def check_new(self) -> None:
        """Refuse a path that is a file or a folder already holding a run (before any work)."""
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise E2TError(f"--out {self.path} is a file, not a run folder: choose a folder")
        if self.has_checkpoint() or os.path.exists(self.file(CONFIG)):
            raise E2TError(f"run folder {self.path} already holds a run: pass --resume to "
                           f"continue it, or choose a new --out")

    def create(self, config: dict) -> None:
        """Start a new run; refuses a folder that already holds one (nothing is overwritten)."""
        self.check_new()
        os.makedirs(self.path, exist_ok=True)
        atomic_write(self.file(CONFIG), (json.dumps(config, indent=2, sort_keys=True) + "\n").encode())
        atomic_write(self.file(METRICS), b"")

    def load_config(self) -> dict:
        """The config a run was started with (for ``--resume``)."""
        try:
            with open(self.file(CONFIG)) as f:
                return json.load(f)
        except FileNotFoundError:
            raise E2TError(f"cannot resume: {self.file(CONFIG)} does not exist "
                           f"(is {self.path} a run folder?)") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise E2TError(f"cannot resume: {self.file(CONFIG)} is corrupt ({e})") from None

    def write_checkpoint(self, data: bytes) -> None:
        atomic_write(self.checkpoint, data)

    def read_checkpoint(self) -> bytes:
        try:
            with open(self.checkpoint, "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise E2TError(f"cannot resume: no checkpoint at {self.checkpoint}") from None

    def metrics(self) -> list[dict]:
        """All metric records written so far (one per line)."""
        if not os.path.exists(self.file(METRICS)):
            return []
        with open(self.file(METRICS)) as f:
            return [json.loads(line) for line in f if line.strip()]

    def append_metrics(self, record: dict) -> None:
        with open(self.file(METRICS), "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def truncate_metrics(self, epochs_done: int) -> None:
        """Keep only records of epochs 1..epochs_done, the ones the checkpoint holds."""
        kept = [r for r in self.metrics() if r.get("epoch", 0) <= epochs_done]
        atomic_write(self.file(METRICS), "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept).encode())


def epoch_line(r: dict) -> str:
    """One log line for an epoch's metrics record (every backend's)."""
    line = f"epoch {r['epoch']}: "
    if r["train_loss"] is not None:
        line += f"train loss {r['train_loss']:.4f} acc {100 * r['train_acc']:.2f} %, "
    line += f"test acc {100 * r['test_acc']:.2f} %"
    if r["dropped_iterations"]:
        line += f", {r['dropped_iterations']} of {r['kept_iterations'] + r['dropped_iterations']} batches dropped"
    if r.get("executed_fraction") is not None:
        line += f", {100 * r['executed_fraction']:.1f} % of gated blocks run"
    if r.get("psg_predicted_fraction") is not None:
        line += f", PSG predicted {100 * r['psg_predicted_fraction']:.1f} %"
    line += f" ({r['seconds']:.1f} s, {r['images_per_s']:.0f} img/s"
    if r.get("engine_seconds") is not None:
        line += f", engine {sum(r['engine_seconds'].values()):.1f} s"
    return line + ")"
