"""A run folder: ``config.json``, ``metrics.jsonl`` and an atomically written checkpoint.

Shared by every backend (the PyTorch reference writes torch checkpoints into it, the
board trainer numpy ones), so that resuming and reading results work the same way.
Also the writers every command's outputs go through (``write_file``, ``write_folder``): whole
or not at all, and an existing output is refused unless the command replaces it on purpose.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil

from .errors import E2TError
from .jsonfile import parse

CONFIG = "config.json"
METRICS = "metrics.jsonl"
TEMPORARY = ".tmp-"  # the prefix of atomic_write's temporary files: a kill during a write leaves one


def _synced(f, data: bytes) -> None:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())


def atomic_write(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old file or the new one. The
    file gets the mode open() gives a new file (0666 less the umask), not mkstemp's 0600."""
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".tmp-{secrets.token_hex(8)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            _synced(f, data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def refuse_existing(path: str, flag: str = "--out", folder: bool = True) -> None:
    """One line, before any work, when the output ``path`` exists: nothing is written over. A
    ``folder`` output may be an empty folder; a file output may not exist at all."""
    if not path:
        raise E2TError(f"{flag} is empty: name the output")
    if not os.path.lexists(path):
        return
    real_dir = os.path.isdir(path) and not os.path.islink(path)
    try:
        if folder and real_dir and not os.listdir(path):
            return
    except OSError as e:
        raise E2TError(f"{flag} {path}: cannot read it ({e.strerror})") from None
    raise E2TError(f"{flag} {path} already exists ({'a folder' if real_dir else 'a file'}): nothing is written "
                   f"over it; choose a new path")


def write_file(path: str, data: bytes, replace: bool = False, flag: str = "--out") -> None:
    """Write the file ``path`` whole or not at all (``atomic_write``). An existing ``path`` is
    refused (``refuse_existing``), or with ``replace`` (when it is a file) written over."""
    if not (replace and os.path.isfile(path)):
        refuse_existing(path, flag, folder=False)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        atomic_write(path, data)
    except OSError as e:
        raise E2TError(f"{flag} {path}: cannot write it ({e.strerror or e})") from None


def write_folder(path: str, files: dict[str, bytes], replace: bool = False, flag: str = "--out") -> None:
    """Write the folder ``path`` holding ``files`` (relative path -> bytes), whole or not at all:
    they go into a temporary folder beside it, renamed to ``path`` last. An existing ``path`` is
    refused (``refuse_existing``), or with ``replace`` swapped for the new folder."""
    dst = os.path.abspath(path)
    swap = replace and os.path.isdir(dst) and not os.path.islink(dst)
    if not swap:
        refuse_existing(path, flag)
    tmp, old = (os.path.join(os.path.dirname(dst), f".{os.path.basename(dst)}.{k}{os.getpid()}") for k in ("tmp", "old"))
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        for name, data in files.items():
            target = os.path.join(tmp, name)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as f:
                _synced(f, data)
        if swap:
            os.rename(dst, old)
        try:
            os.rename(tmp, dst)  # an empty folder is replaced; one that filled up meanwhile is not
        except BaseException:
            if swap:
                os.rename(old, dst)
            raise
        if swap:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as e:
        raise E2TError(f"{flag} {path}: cannot write it ({e.strerror or e}); nothing was written") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class RunDir:
    """One training run on disk. ``checkpoint_name`` is the backend's checkpoint file."""

    def __init__(self, path: str, checkpoint_name: str):
        self.path = path
        self.checkpoint = os.path.join(path, checkpoint_name)
        self.saved_epoch: int | None = None  # the epoch of the checkpoint on disk (None: nothing saved yet)
        self.created: list[str] = []  # the folders and files this process made, in order (``abandon``)

    def _new(self, path: str) -> None:
        if not os.path.lexists(path):
            self.created.append(path)

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def has_checkpoint(self) -> bool:
        return os.path.exists(self.checkpoint)

    def check_new(self) -> None:
        """Refuse a path that is a file or a folder with anything in it, a run or not (before any work)."""
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise E2TError(f"--out {self.path} is a file, not a run folder: choose a folder")
        if self.has_checkpoint() or os.path.exists(self.file(CONFIG)):
            raise E2TError(f"run folder {self.path} already holds a run: pass --resume to "
                           f"continue it, or choose a new --out")
        if os.path.isdir(self.path) and os.listdir(self.path):
            raise E2TError(f"--out {self.path} holds other files, not a run: choose a new --out (or an empty folder)")

    def create(self, config: dict) -> None:
        """Start a new run; refuses a folder that already holds one (nothing is overwritten)."""
        self.check_new()
        missing, folder = [], os.path.abspath(self.path)
        while not os.path.lexists(folder):
            missing.append(folder)
            folder = os.path.dirname(folder)
        os.makedirs(self.path, exist_ok=True)
        self.created += reversed(missing)
        for name, data in ((CONFIG, (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()), (METRICS, b"")):
            self._new(self.file(name))
            atomic_write(self.file(name), data)

    def abandon(self) -> None:
        """After an interrupt or error before the first checkpoint: remove what this process created
        (a folder that was there before stays as it was). Nothing once a checkpoint is saved."""
        if self.saved_epoch is not None:
            return
        for path in reversed(self.created):
            try:
                os.rmdir(path) if os.path.isdir(path) and not os.path.islink(path) else os.unlink(path)
            except OSError:
                pass  # gone already, or a folder someone put other files into meanwhile: it stays
        self.created = []

    @contextlib.contextmanager
    def guard(self):
        """Around training: ``abandon`` on any exception, then re-raise it."""
        try:
            yield
        except BaseException:
            self.abandon()
            raise

    def left(self, interrupted: bool) -> str:
        """What a stopped run leaves, and what to do next (true whichever way it stopped)."""
        if self.saved_epoch is None:
            return ("nothing was saved (interrupted in epoch 1); run the same command again" if interrupted
                    else "nothing was saved (stopped in epoch 1)")
        return (f"{'interrupted; ' if interrupted else ''}the run is saved up to epoch {self.saved_epoch}: "
                f"continue with e2t train --resume --out {self.path}")

    def load_config(self) -> dict:
        """The config a run was started with (for ``--resume``)."""
        try:
            with open(self.file(CONFIG)) as f:
                return parse(f.read())
        except FileNotFoundError:
            raise E2TError(f"cannot resume: {self.file(CONFIG)} does not exist "
                           f"(is {self.path} a run folder?)") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise E2TError(f"cannot resume: {self.file(CONFIG)} is corrupt ({e})") from None
        except OSError as e:
            raise E2TError(f"cannot resume: {self.file(CONFIG)} cannot be read ({e.strerror or e})") from None

    def write_checkpoint(self, data: bytes, epoch: int) -> None:
        """The checkpoint after ``epoch``, atomically: from here on the run can be resumed."""
        atomic_write(self.checkpoint, data)
        self.saved_epoch = epoch

    def read_checkpoint(self) -> bytes:
        try:
            with open(self.checkpoint, "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise E2TError(f"cannot resume: no checkpoint at {self.checkpoint}") from None

    def metrics(self) -> list[dict]:
        """All metric records written so far (one per line). A last line that is not a record is
        dropped: what a kill during the append leaves (the checkpoint, not this file, is the truth)."""
        path = self.file(METRICS)
        if not os.path.lexists(path):
            return []
        try:
            with open(path, "rb") as f:
                lines = [line for line in f.read().split(b"\n") if line.strip()]
        except OSError as e:
            raise E2TError(f"{path} cannot be read ({e.strerror or e}): it should be the run's metrics file") from None
        records = []
        for i, line in enumerate(lines, 1):
            try:
                r = parse(line)
            except ValueError:
                r = None
            if not isinstance(r, dict) or not isinstance(r.get("epoch"), int) or isinstance(r["epoch"], bool):
                if i == len(lines):
                    break
                raise E2TError(f"{path}: line {i} is not a metrics record (a JSON object with its epoch)")
            records.append(r)
        return records

    def resume(self, epoch: int | None) -> None:
        """Continue after the checkpoint of ``epoch`` (None: none saved yet, from the start), once
        every check passed: metrics.jsonl keeps the records of epochs 1..epoch, and the temporaries of
        writes a kill cut short are removed."""
        self.load_config()  # a run folder
        self.truncate_metrics(epoch or 0)
        for name in os.listdir(self.path):
            if name.startswith(TEMPORARY) and os.path.isfile(self.file(name)):
                os.unlink(self.file(name))
        self.saved_epoch = epoch

    def append_metrics(self, record: dict) -> None:
        self._new(self.file(METRICS))
        with open(self.file(METRICS), "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def truncate_metrics(self, epochs_done: int) -> None:
        """Keep only records of epochs 1..epochs_done, the ones the checkpoint holds: each once, in
        order (the energy report prices every epoch's), or nothing is written."""
        kept = [r for r in self.metrics() if r["epoch"] <= epochs_done]
        if [r["epoch"] for r in kept] != list(range(1, epochs_done + 1)):
            raise E2TError(f"{self.file(METRICS)} holds records of epochs {[r['epoch'] for r in kept]}, the checkpoint "
                           f"is after epoch {epochs_done}: each epoch's record is due once, in order (the energy "
                           f"report prices them); this run cannot go on, start a new --out")
        self._new(self.file(METRICS))
        atomic_write(self.file(METRICS), "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept).encode())


def check_position(where: str, epoch, iteration, epochs: int, per_epoch: int) -> None:
    """A checkpoint is taken after an epoch of the run: 1 <= epoch <= epochs, and its iteration is
    epoch x the iterations of an epoch."""
    if not isinstance(epoch, int) or isinstance(epoch, bool) or not 1 <= epoch <= epochs:
        raise E2TError(f"{where}: epoch {epoch!r} is not one of the run's epochs 1..{epochs}")
    if not isinstance(iteration, int) or isinstance(iteration, bool) or iteration != epoch * per_epoch:
        raise E2TError(f"{where}: iteration {iteration!r} is not the end of epoch {epoch} "
                       f"({epoch} x {per_epoch} iterations)")


def check_arrays(where: str, saved: dict, expected: dict) -> None:
    """A checkpoint's arrays (numpy) are exactly the run's: the same names, each of the same dtype
    and shape, floats finite. Nothing is re-initialised, cut to a narrower type or broadcast."""
    import numpy as np

    missing, extra = sorted(set(expected) - set(saved)), sorted(set(saved) - set(expected))
    if missing or extra:
        parts = [f"{what} {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
                 for what, names in (("lacks", missing), ("has no place for", extra)) if names]
        raise E2TError(f"{where} does not fit the run: it {' and '.join(parts)}")
    for name, want in expected.items():
        got = saved[name]
        if got.dtype != want.dtype or got.shape != want.shape:
            raise E2TError(f"{where}: {name} is {got.dtype} {list(got.shape)}, the run's is "
                           f"{want.dtype} {list(want.shape)}")
        if got.dtype.kind == "f" and not np.isfinite(got).all():
            raise E2TError(f"{where}: {name} holds NaN or infinite values")


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
