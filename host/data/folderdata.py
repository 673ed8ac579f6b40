"""A user's own images as a data set (``--dataset folder --data-dir D``), read into arrays:
``LAYOUT`` says what D holds. Images are converted to ``channels`` (1: grayscale, 3: RGB;
default: 1 if every image is grayscale, else 3) and resized to ``size`` x ``size`` when given;
otherwise they must all have one square size. Every file is checked before training starts,
and declared sizes before anything is decoded: damage is one E2TError naming the file.
host/data/datasets.py splits, normalises and augments the arrays like the built-in sets."""
from __future__ import annotations

import io
import os
import struct
import warnings
import zipfile
import zlib

import numpy as np

from contract.errors import E2TError

IMAGE_TYPES = (".png", ".jpg", ".jpeg", ".bmp")
MAX_SIDE = 4096  # images may declare at most MAX_SIDE ** 2 pixels (a decompression bomb declares more)
NPZ_X = "N x H x W, N x H x W x C or N x C x H x W (C = 1 or 3)"  # the shapes of x a .npz may hold
LAYOUT = (f"one subfolder of PNG/JPEG/BMP images per class (classes sorted by name), or one .npz with uint8 x "
          f"({NPZ_X}) and integer labels y (0..classes-1)")
_GRAY = ("1", "L", "I", "I;16", "F")  # image modes that hold one channel
_PNG_END = b"\0\0\0\0IEND\xaeB`\x82"  # a PNG's last chunk; the decoder does not miss it, a copy cut short lacks it
_BROKEN = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error)  # what damaged images raise


def _listdir(folder: str) -> list[str]:
    try:
        return sorted(os.listdir(folder))
    except OSError as e:
        raise E2TError(f"{folder}: cannot list the folder ({e.strerror or e}): check that it exists "
                       f"and is readable") from None


def _images_of(folder: str) -> dict[str, list[str]]:
    classes = [d for d in _listdir(folder) if os.path.isdir(os.path.join(folder, d)) and not d.startswith(".")]
    if len(classes) < 2:
        raise E2TError(f"{folder}: {len(classes)} class folder(s); a data set needs at least 2 (one subfolder of "
                       f"images per class)")
    found = {}
    for c in classes:
        files = [f for f in _listdir(os.path.join(folder, c)) if f.lower().endswith(IMAGE_TYPES)]
        if not files:
            raise E2TError(f"{os.path.join(folder, c)}: class '{c}' has no images ({', '.join(IMAGE_TYPES)})")
        found[c] = [os.path.join(folder, c, f) for f in files]
    return found


def _too_large(path: str, declared: str) -> E2TError:
    return E2TError(f"{path}: declares {declared} pixels per image, more than the {MAX_SIDE} x {MAX_SIDE} this "
                    f"reads: shrink the images or leave them out")


def _check_sizes(sizes: list[tuple[str, tuple[int, int]]]) -> None:
    """Without --size every image must have the first one's size, and it must be square."""
    (first, (w, h)), other = sizes[0], next(((p, s) for p, s in sizes if s != sizes[0][1]), None)
    if other is not None:
        raise E2TError(f"images differ in size ({w} x {h} in {first}, {other[1][0]} x {other[1][1]} "
                       f"in {other[0]}): pass --size N to resize them all to N x N")
    if w != h:
        raise E2TError(f"images are {w} x {h} ({first}), not square: pass --size N to resize them to N x N")


def _header(path: str) -> tuple[tuple[int, int], str]:
    """(width, height) and mode an image file declares, read without decoding it."""
    from PIL import Image
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                size, mode = im.size, im.mode
    except Image.DecompressionBombError:  # PIL refuses to open it at all
        raise _too_large(path, f"more than {2 * Image.MAX_IMAGE_PIXELS:,}") from None
    except _BROKEN as e:
        raise E2TError(f"{path}: cannot read the image ({type(e).__name__}: {e})") from None
    if size[0] * size[1] > MAX_SIDE ** 2:
        raise _too_large(path, f"{size[0]} x {size[1]}")
    return size, mode


def _decode(path: str, size: int | None, channels: int) -> np.ndarray:
    """One image as uint8 C x H x W; a truncated file is refused, not padded."""
    from PIL import Image
    try:
        with open(path, "rb") as f:
            data = f.read()
        if data.startswith(b"\x89PNG") and _PNG_END not in data:
            raise EOFError("truncated PNG: it lacks the IEND chunk that ends the file")
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            im = im.convert("L" if channels == 1 else "RGB")
    except _BROKEN as e:
        raise E2TError(f"{path}: cannot read the image ({type(e).__name__}: {e})") from None
    if size is not None and im.size != (size, size):
        im = im.resize((size, size), Image.BILINEAR)
    a = np.asarray(im, np.uint8)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def _read_images(found: dict, size: int | None, channels: int | None) -> tuple[np.ndarray, np.ndarray, list]:
    files = [(path, label) for label, paths in enumerate(found.values()) for path in paths]
    heads = [_header(path) for path, _ in files]  # every file's declared size, before any is decoded
    if channels is None:
        channels = 1 if all(mode in _GRAY for _, mode in heads) else 3
    if size is None:
        _check_sizes([(path, wh) for (path, _), (wh, _) in zip(files, heads)])
    x = np.stack([_decode(path, size, channels) for path, _ in files])
    return x, np.array([label for _, label in files], np.int64), list(found)


def _npy_header(z: zipfile.ZipFile, name: str) -> tuple[tuple, np.dtype]:
    """(shape, dtype) an array of the .npz declares, read without its data."""
    with z.open(name) as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f)
    return shape, dtype


def _npy_read(z: zipfile.ZipFile, name: str) -> np.ndarray:
    with z.open(name) as f:
        return np.lib.format.read_array(f, allow_pickle=False)


def _channels_at(shape: tuple) -> int:
    """Axis of x's channels: none (0: N x H x W, grayscale), last (N x H x W x C) or 1 (N x C x H x W)."""
    if len(shape) != 4:
        return 0
    return 3 if shape[-1] in (1, 3) and shape[1] not in (1, 3) else 1


def _read_npz(path: str, size: int | None, channels: int | None) -> tuple[np.ndarray, np.ndarray, list]:
    try:
        with zipfile.ZipFile(path) as z:
            arrays = {n[:-4]: n for n in z.namelist() if n.endswith(".npy")}
            if "x" not in arrays or "y" not in arrays:
                raise E2TError(f"{path}: needs arrays 'x' (images) and 'y' (labels); it has "
                               f"{', '.join(arrays) or 'none'}")
            (xs, xt), (ys, yt) = _npy_header(z, arrays["x"]), _npy_header(z, arrays["y"])
            at = _channels_at(xs)
            if (xt != np.uint8 or len(xs) not in (3, 4) or 0 in xs or (at and xs[at] not in (1, 3))
                    or ys != xs[:1] or yt.kind not in "iu"):
                raise E2TError(f"{path}: x must be uint8 {NPZ_X} and y N integer labels; got x {xt} {xs}, "
                               f"y {yt} {ys}")
            h, w = xs[-2:] if at != 3 else xs[1:3]
            if h * w > MAX_SIDE ** 2:
                raise _too_large(path, f"{w} x {h}")
            if size is None:
                _check_sizes([(path, (w, h))])
            x, y = _npy_read(z, arrays["x"]), _npy_read(z, arrays["y"])
    except (OSError, zipfile.BadZipFile, zlib.error, EOFError, ValueError, NotImplementedError, struct.error) as e:
        raise E2TError(f"{path}: cannot read it as .npz ({type(e).__name__}: {e}): write it again "
                       f"(numpy.savez)") from None
    classes = np.unique(y)
    if len(classes) < 2 or classes[0] != 0 or classes[-1] != len(classes) - 1:
        raise E2TError(f"{path}: labels y must be 0..n-1 with every class present and n >= 2; got {len(classes)} "
                       f"distinct labels from {classes[0]} to {classes[-1]}")
    x = x[:, None] if at == 0 else x.transpose(0, 3, 1, 2) if at == 3 else x
    if channels is not None and channels != x.shape[1]:
        x = x.mean(1, keepdims=True).round().astype(np.uint8) if channels == 1 else np.repeat(x, 3, axis=1)
    if size is not None and x.shape[2:] != (size, size):
        from PIL import Image
        mode = "L" if x.shape[1] == 1 else "RGB"
        x = np.stack([np.asarray(Image.fromarray(im[0] if mode == "L" else im.transpose(1, 2, 0), mode)
                                 .resize((size, size), Image.BILINEAR), np.uint8).reshape(size, size, -1)
                      .transpose(2, 0, 1) for im in x])
    return x, y.astype(np.int64), [str(c) for c in range(len(classes))]


def read_folder(data_dir: str | None, size: int | None = None,
                channels: int | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The user's data set: x uint8 N x C x H x W, y int64 in 0..n-1, and the n class names."""
    if data_dir is None:
        raise E2TError(f"--dataset folder needs --data-dir: {LAYOUT}")
    if channels not in (None, 1, 3):
        raise E2TError(f"--channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    if size is not None and not 1 <= size <= 1024:
        raise E2TError(f"--size must be 1..1024 pixels, got {size}")
    if data_dir.endswith(".npz"):
        return _read_npz(data_dir, size, channels)
    if not os.path.isdir(data_dir):
        raise E2TError(f"--data-dir {data_dir}: no such folder (it needs {LAYOUT})")
    npz = [f for f in _listdir(data_dir) if f.endswith(".npz")]
    if npz:
        return _read_npz(os.path.join(data_dir, npz[0]), size, channels)
    return _read_images(_images_of(data_dir), size, channels)
