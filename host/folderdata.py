"""A user's own images as a data set (``--dataset folder --data-dir D``): one subfolder of PNG or
JPEG images per class (classes sorted by folder name), or one ``.npz`` with ``x`` (N x H x W,
N x H x W x C or N x C x H x W, uint8) and ``y`` (N integer labels). Images are converted to
``channels`` (1: grayscale, 3: RGB; default: 1 if every image is grayscale, else 3) and
resized to ``size`` x ``size`` when given; sizes must agree otherwise. The split, the
normalisation and the augmentation follow the built-in sets (host/datasets.py)."""
from __future__ import annotations

import os

import numpy as np

from .errors import E2TError

IMAGE_TYPES = (".png", ".jpg", ".jpeg", ".bmp")


def _images_of(folder: str) -> dict[str, list[str]]:
    if not os.path.isdir(folder):
        raise E2TError(f"--data-dir {folder}: no such folder (it needs one subfolder of images per class, "
                       f"or a .npz file with x and y)")
    classes = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)) and not d.startswith("."))
    if len(classes) < 2:
        raise E2TError(f"{folder}: {len(classes)} class folder(s); a data set needs at least 2 (one subfolder of "
                       f"images per class)")
    found = {}
    for c in classes:
        files = sorted(f for f in os.listdir(os.path.join(folder, c)) if f.lower().endswith(IMAGE_TYPES))
        if not files:
            raise E2TError(f"{os.path.join(folder, c)}: class '{c}' has no images ({', '.join(IMAGE_TYPES)})")
        found[c] = [os.path.join(folder, c, f) for f in files]
    return found


def _read_images(found: dict, size: int | None, channels: int | None) -> tuple[np.ndarray, np.ndarray, list]:
    from PIL import Image, UnidentifiedImageError
    opened, labels = [], []
    for label, (c, files) in enumerate(found.items()):
        for path in files:
            try:
                with Image.open(path) as im:
                    im.load()
                    opened.append((path, im.copy()))
            except (OSError, UnidentifiedImageError) as e:
                raise E2TError(f"{path}: cannot read the image ({type(e).__name__}: {e})") from None
            labels.append(label)
    if channels is None:
        channels = 1 if all(im.mode in ("1", "L", "I", "I;16", "F") for _, im in opened) else 3
    if size is None:
        first, size0 = opened[0][0], opened[0][1].size
        other = next(((p, im.size) for p, im in opened if im.size != size0), None)
        if other is not None:
            raise E2TError(f"images differ in size ({size0[0]} x {size0[1]} in {first}, {other[1][0]} x {other[1][1]} "
                           f"in {other[0]}): pass --size N to resize them all to N x N")
    out = []
    for path, im in opened:
        im = im.convert("L" if channels == 1 else "RGB")
        if size is not None and im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR)
        a = np.asarray(im, np.uint8)
        out.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    return np.stack(out), np.array(labels, np.int64), list(found)


def _read_npz(path: str, size: int | None, channels: int | None) -> tuple[np.ndarray, np.ndarray, list]:
    try:
        with np.load(path) as z:
            if "x" not in z.files or "y" not in z.files:
                raise E2TError(f"{path}: needs arrays 'x' (images) and 'y' (labels); it has {', '.join(z.files)}")
            x, y = z["x"], z["y"]
    except (OSError, ValueError) as e:
        raise E2TError(f"{path}: cannot read it as .npz ({e})") from None
    if x.dtype != np.uint8 or x.ndim not in (3, 4) or len(x) != len(y) or y.ndim != 1 or y.dtype.kind not in "iu":
        raise E2TError(f"{path}: x must be uint8 N x H x W (x C) and y N integer labels; got x {x.dtype} {x.shape}, "
                       f"y {y.dtype} {y.shape}")
    if x.ndim == 3:
        x = x[:, None]
    elif x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if channels is not None and channels != x.shape[1]:
        x = x.mean(1, keepdims=True).round().astype(np.uint8) if channels == 1 else np.repeat(x, 3, axis=1)
    if size is not None and x.shape[2:] != (size, size):
        from PIL import Image
        mode = "L" if x.shape[1] == 1 else "RGB"
        x = np.stack([np.asarray(Image.fromarray(im[0] if mode == "L" else im.transpose(1, 2, 0), mode)
                                 .resize((size, size), Image.BILINEAR), np.uint8).reshape(size, size, -1)
                      .transpose(2, 0, 1) for im in x])
    classes = np.unique(y)
    if len(classes) < 2 or classes[0] < 0:
        raise E2TError(f"{path}: labels must be >= 0 with at least 2 classes; got {classes[:10].tolist()}")
    return x, y.astype(np.int64), [str(c) for c in range(int(classes.max()) + 1)]


def load_folder(data_dir: str | None, size: int | None = None, channels: int | None = None):
    """The user's data set as host.datasets.Dataset (name ``folder``)."""
    from .datasets import Dataset, _stratified_split
    if data_dir is None:
        raise E2TError("--dataset folder needs --data-dir: a folder with one subfolder of images per class, or a .npz")
    if channels not in (None, 1, 3):
        raise E2TError(f"--channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    if size is not None and not 1 <= size <= 1024:
        raise E2TError(f"--size must be 1..1024 pixels, got {size}")
    npz = [f for f in sorted(os.listdir(data_dir)) if f.endswith(".npz")] if os.path.isdir(data_dir) else []
    if data_dir.endswith(".npz") or npz:
        x, y, classes = _read_npz(data_dir if data_dir.endswith(".npz") else os.path.join(data_dir, npz[0]), size, channels)
    else:
        x, y, classes = _read_images(_images_of(data_dir), size, channels)
    train, test = _stratified_split(y)
    if not len(test):
        raise E2TError(f"{data_dir}: too few images for a test split (20 % of each class): {len(y)} images")
    scaled = x[train].astype(np.float64) / 255
    return Dataset(name="folder", train_x=x[train], train_y=y[train], test_x=x[test], test_y=y[test],
                   num_classes=len(classes), mean=tuple(float(v) for v in scaled.mean(axis=(0, 2, 3))),
                   std=tuple(float(max(v, 1e-3)) for v in scaled.std(axis=(0, 2, 3))), augment="shift")
