"""A user's own data set (--dataset folder): every damaged or malformed file is one line naming it,
before anything is written or decoded in full; a folder plans and deploys end to end; and the data
modules import each other without a cycle."""
import contextlib
import io
import json
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

from conftest import ROOT
from host.data import folderdata
from e2t.cli import build_parser, main
from contract.errors import E2TError
from test_cli import one_line_error
from test_engine_training import _write_folder

PLAN = ["plan", "--model", "resnet8", "--board", "pynq-z2", "--batch", "8"]
DEPLOY = ["deploy", "--model", "resnet8", "--board", "pynq-z2", "--batch", "8", "--epochs", "1", "--dataset", "folder"]


def refused(capsys, tmp_path, data, match, *flags):
    """``e2t plan`` of the folder data set ``data`` is one line with ``match``, and writes nothing."""
    out = tmp_path / "plan"
    one_line_error(capsys, [*PLAN, "--dataset", "folder", "--data-dir", str(data), *flags, "--out", str(out)], match)
    assert not out.exists()


def _png_header_only(path, w, h):
    """A PNG that declares w x h pixels and holds a few bytes of them (what a decompression bomb starts as)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("side", [20000, 5000])  # PIL's own refusal, and ours under PIL's limit
def test_an_image_that_declares_too_many_pixels_is_refused_before_decoding(capsys, tmp_path, side):
    _write_folder(tmp_path / "d", n=3)
    _png_header_only(tmp_path / "d" / "cat" / "big.png", side, side)
    refused(capsys, tmp_path, tmp_path / "d", f"big.png: declares")
    refused(capsys, tmp_path, tmp_path / "d", "4096 x 4096", "--size", "16")


@pytest.mark.parametrize("cut", [1, 12, 21])  # PIL decodes all of these without a word: the IEND chunk is cut
def test_a_truncated_png_is_refused_naming_it(capsys, tmp_path, cut):
    _write_folder(tmp_path / "d", n=3)
    png = tmp_path / "d" / "dog" / "1.png"
    png.write_bytes(png.read_bytes()[:-cut])
    refused(capsys, tmp_path, tmp_path / "d", "1.png: cannot read the image (EOFError: truncated PNG")


def test_an_unreadable_class_folder_is_one_line(capsys, tmp_path, monkeypatch):
    _write_folder(tmp_path / "d", n=3)
    locked, listdir = str(tmp_path / "d" / "dog"), os.listdir

    def no_permission(path):  # what chmod 000 gives a user who is not root (the tests may run as root)
        if str(path) == locked:
            raise PermissionError(13, "Permission denied", path)
        return listdir(path)
    monkeypatch.setattr(os, "listdir", no_permission)
    refused(capsys, tmp_path, tmp_path / "d", f"{locked}: cannot list the folder (Permission denied)")


@pytest.mark.parametrize("left", [1, 2])
def test_a_class_too_small_for_the_split_is_refused_naming_it(capsys, tmp_path, left):
    """The split holds out round(20 %) of each class: a class needs 3 images to get a test image."""
    _write_folder(tmp_path / "d", n=3)
    for i in range(left, 3):
        os.remove(tmp_path / "d" / "owl" / f"{i}.png")
    refused(capsys, tmp_path, tmp_path / "d", f"class 'owl' has {left} image(s)")


def test_images_of_one_size_must_be_square(capsys, tmp_path):
    _write_folder(tmp_path / "d", sizes=((12, 10),), n=3)
    refused(capsys, tmp_path, tmp_path / "d", "images are 12 x 10 (")


X = np.random.default_rng(0).integers(0, 256, (12, 8, 8), dtype=np.uint8)
Y = np.arange(12) % 3


@pytest.mark.parametrize("arrays,match", [
    (dict(x=X, y=Y * 10**12), "labels y must be 0..n-1 with every class present"),  # no 10^12 class names
    (dict(x=X, y=Y * 2), "got 3 distinct labels from 0 to 4"),
    (dict(x=X, y=Y - 1), "from -1 to 1"),
    (dict(x=X.astype(np.float32), y=Y), "x must be uint8 N x H x W, N x H x W x C or N x C x H x W"),
    (dict(x=np.repeat(X[..., None], 4, -1), y=Y), "got x uint8 (12, 8, 8, 4)"),  # RGBA
    (dict(x=X[:, 0], y=Y), "got x uint8 (12, 8)"),
    (dict(x=X, y=Y[:-1]), "y int64 (11,)"),
    (dict(x=X, y=Y.astype(np.float64)), "y float64 (12,)"),
    (dict(x=X, y=Y.astype(object)), "y object (12,)"),  # refused from the header: nothing is unpickled
    (dict(x=X[:, :, :6], y=Y), "images are 6 x 8"),
    (dict(images=X), "needs arrays 'x' (images) and 'y' (labels); it has images"),
])
def test_a_malformed_npz_is_one_line_naming_it(capsys, tmp_path, arrays, match):
    np.savez(tmp_path / "d.npz", **arrays)
    refused(capsys, tmp_path, tmp_path / "d.npz", match)


@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_a_truncated_npz_is_one_line_naming_it(capsys, tmp_path, keep):
    np.savez_compressed(tmp_path / "d.npz", x=X, y=Y)
    data = (tmp_path / "d.npz").read_bytes()
    (tmp_path / "d.npz").write_bytes(data[:int(keep * len(data))])
    refused(capsys, tmp_path, tmp_path / "d.npz", "d.npz: cannot read it as .npz (BadZipFile")


def test_damaged_files_are_refused_or_read_never_a_traceback(tmp_path):
    """Seeded damage to each kind of file a folder data set holds: a cut file is always refused; a
    flipped bit is refused or (where the format has no checksum) read; nothing else escapes."""
    from PIL import Image
    rng = np.random.default_rng(21)
    for ext in (".png", ".jpg", ".bmp", ".npz"):
        root = tmp_path / ext[1:]
        root.mkdir()
        if ext == ".npz":
            path = data_dir = root / "d.npz"
            np.savez_compressed(path, x=X, y=Y)
        else:
            for c in ("a", "b"):
                (root / c).mkdir()
                for i in range(3):
                    Image.fromarray(X[i]).save(root / c / f"{i}{ext}")
            path, data_dir = root / "b" / f"2{ext}", root
        good = path.read_bytes()
        for trial in range(40):
            damaged = bytearray(good)
            if trial % 2:
                damaged = damaged[:rng.integers(1, len(good))]
            else:
                damaged[rng.integers(len(good))] ^= 1 << rng.integers(8)
            path.write_bytes(bytes(damaged))
            try:
                folderdata.read_folder(str(data_dir))
                assert not trial % 2, f"a cut {path.name} was read"
            except E2TError as e:
                assert str(path) in str(e) and "\n" not in str(e)


def test_help_says_what_a_folder_data_set_holds():
    """train, plan and deploy say it: a .npz holds uint8 x in one of three layouts and integer y."""
    sub = next(a for a in build_parser()._actions if a.choices and "plan" in a.choices).choices
    for cmd in ("train", "plan", "deploy"):
        text = " ".join(sub[cmd].format_help().split())
        assert "uint8 x (N x H x W, N x H x W x C or N x C x H x W (C = 1 or 3)) and integer labels y" in text, cmd


def test_size_and_channels_are_refused_for_a_built_in_set(capsys, tmp_path):
    one_line_error(capsys, [*PLAN, "--dataset", "digits", "--size", "16", "--out", str(tmp_path / "p")],
                   "--size and --channels convert the images of --dataset folder; digits")


def test_a_folder_plans_with_its_own_shape(capsys, tmp_path):
    _write_folder(tmp_path / "d", sizes=((12, 12), (10, 14)), n=3)
    assert main([*PLAN, "--dataset", "folder", "--data-dir", str(tmp_path / "d"), "--size", "16",
                 "--out", str(tmp_path / "p")]) == 0
    assert "for folder " in capsys.readouterr().out
    net = json.loads((tmp_path / "p" / "plan.json").read_text())["network"]
    assert (net["in_channels"], net["num_classes"], net["height"], net["width"]) == (1, 3, 16, 16)
    np.savez(tmp_path / "d.npz", x=np.stack([X] * 3, 1), y=Y)
    assert main([*PLAN, "--dataset", "folder", "--data-dir", str(tmp_path / "d.npz"), "--channels", "1",
                 "--out", str(tmp_path / "q")]) == 0
    net = json.loads((tmp_path / "q" / "plan.json").read_text())["network"]
    assert (net["in_channels"], net["num_classes"], net["height"]) == (1, 3, 8)


@pytest.fixture(scope="module")
def folder_bundle(tmp_path_factory):
    """``e2t deploy`` of a folder of 12 x 12 and 10 x 14 images resized to 8: (root, what it logged)."""
    root = tmp_path_factory.mktemp("folder-deploy")
    _write_folder(root / "imgs", sizes=((12, 12), (10, 14)), n=5)
    with contextlib.redirect_stderr(io.StringIO()) as log:
        assert main([*DEPLOY, "--data-dir", str(root / "imgs"), "--size", "8", "--out", str(root / "b")]) == 0
    return root, log.getvalue()


def test_a_folder_deploys_as_its_files_and_says_so(folder_bundle):
    root, log = folder_bundle
    assert f"copied the folder data set {root / 'imgs'} into the bundle's data/imgs (15 files" in log
    assert "train.sh reads it there with --size 8 --channels 1" in log
    assert sorted(os.listdir(root / "b" / "data" / "imgs")) == ["cat", "dog", "owl"]
    assert "--data-dir data/imgs --size 8 --channels 1 " in (root / "b" / "train.sh").read_text()


def test_the_folder_bundle_trains(folder_bundle):
    """train.sh reads the copied images as the workstation did (the install is test_deploy's)."""
    root, _ = folder_bundle
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": ROOT, "OUT": str(root / "run")}
    run = subprocess.run(["sh", str(root / "b" / "train.sh"), "--smd", "0", "--quiet"], cwd=root, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "resnet8 on folder: test accuracy" in run.stdout
    assert json.loads((root / "run" / "config.json").read_text())["image_size"] == 8


def test_a_plan_that_does_not_fit_the_folder_is_refused_before_the_bundle(capsys, folder_bundle, tmp_path):
    root, _ = folder_bundle
    one_line_error(capsys, [*DEPLOY, "--data-dir", str(root / "imgs"), "--size", "16", "--plan",
                            str(root / "b" / "plan"), "--out", str(tmp_path / "c")],
                   "takes 1 x 8 x 8 images into 3 classes; folder has 1 x 16 x 16")
    assert not (tmp_path / "c").exists()


def test_a_plan_of_other_classes_is_deployed_for_a_new_head(capsys, folder_bundle, tmp_path, monkeypatch):
    """A trained plan and a data set of another class count: the bundle is written (train.sh's
    --init puts a new head on the plan, host/plan/finetune.py), and deploy says so."""
    from e2t import deploy
    root, _ = folder_bundle
    written = []
    monkeypatch.setattr(deploy, "_write", lambda *a, **k: written.append(a) or ("bundle", "bundle.tar.gz"))
    import numpy as np
    np.savez(tmp_path / "four.npz", x=np.random.default_rng(0).integers(0, 256, (20, 8, 8), dtype=np.uint8),
             y=np.arange(20) % 4)
    assert main([*DEPLOY, "--data-dir", str(tmp_path / "four.npz"), "--plan", str(root / "b" / "plan"),
                 "--out", str(tmp_path / "c")]) == 0
    assert written and "3 classes, folder 4: train.sh fine-tunes it with a new head" in capsys.readouterr().err
