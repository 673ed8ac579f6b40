"""e2t deploy: a bundle that installs into a directory laid out like a PYNQ v3 image (its
pynq-venv, fresh: the board requirements only, no torch, onnx or hls4ml, and never a pynq over the
image's) and trains there; the wrong environment and bad input are one line and write nothing, not
even into the source tree; the board side is checked for Python 3.10 syntax with vermin."""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tarfile

import pytest

import pynq_standin
from conftest import ROOT
from contract import boards
from e2t import deploy
from e2t.cli import main

BUNDLE_ARGS = ["deploy", "--board", "pynq-z2", "--model", "resnet8", "--dataset", "digits", "--batch", "32",
               "--epochs", "1"]


def source_tree() -> dict:
    """Every file of the checkout with its size and mtime, and every folder (Python's own caches,
    .git and .venv aside): what a command that must not write there could have changed."""
    seen = {}
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in (".git", ".venv", "__pycache__", ".pytest_cache")]
        seen[folder] = None
        for name in files:
            st = os.stat(os.path.join(folder, name))
            seen[os.path.join(folder, name)] = (st.st_size, st.st_mtime_ns)
    return seen


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """The bundle, and the source tree just before and after ``e2t deploy`` wrote it."""
    out = tmp_path_factory.mktemp("deploy") / "bundle"
    before = source_tree()
    assert main(BUNDLE_ARGS + ["--out", str(out)]) == 0
    return out, before, source_tree()


@pytest.fixture(scope="module")
def bundle(deployed):
    return deployed[0]


def test_the_bundle_holds_what_a_board_needs(bundle):
    names = sorted(os.listdir(bundle))
    assert names == ["README.txt", "data", "install.sh", "plan", "python.sh", "requirements-board.txt", "train.sh",
                     "wheels"]
    assert sorted(os.listdir(bundle / "plan")) == ["plan.json", "weights.bin"]
    assert os.listdir(bundle / "data") == ["digits.csv.gz"]
    assert "--backend emu" in (bundle / "train.sh").read_text()  # no overlay built here
    with tarfile.open(str(bundle) + ".tar.gz") as tar:
        inside = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {"install.sh", "train.sh", "python.sh", "plan/weights.bin", "data/digits.csv.gz"} <= inside


def requirement_names(text: str) -> set[str]:
    return {line.split("<")[0].split("=")[0].strip() for line in text.splitlines() if line and line[0] != "#"}


def test_the_bundle_never_installs_pynq_and_pandas_only_where_pynq_reads_rails(bundle):
    """pynq is the image's own; pandas serves pynq.DataRecorder only, and the PYNQ-Z2 has no rails
    for it (the ZCU104 has)."""
    assert requirement_names((bundle / "requirements-board.txt").read_text()) == {"numpy", "matplotlib", "pillow"}
    assert requirement_names(deploy._board_requirements(boards.board("zcu104"))) == {
        "numpy", "matplotlib", "pillow", "pandas"}


def test_deploy_leaves_the_source_tree_as_it_was(deployed):
    """The wheel is built from a copy of the tree in a temporary folder: no build/, e2t.egg-info/
    or any other file appears in the checkout or changes there (build/hls, the engine cache, too)."""
    _, before, after = deployed
    assert sorted(set(after) - set(before)) == []
    assert [p for p in before if p in after and before[p] != after[p]] == []


def pynq_image(root, pynq_version: str | None = "3.0.1", pip: bool = False):
    """A folder laid out like a PYNQ v3 image for the bundle's scripts (PYNQ_ROOT=root): its
    pynq-venv, a new virtual environment of this Python (with pip when ``pip``: then it holds only
    what install.sh puts there, from PyPI) whose python3 logs every call to calls.log and whose
    pynq is a stand-in of ``pynq_version``; and the image's /etc/profile.d/xrt_setup.sh."""
    venv = root / "usr/local/share/pynq-venv"
    subprocess.run([sys.executable, "-m", "venv", *([] if pip else ["--without-pip"]), str(venv)], check=True,
                   timeout=120)
    site = venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    if pynq_version is not None:
        (site / "pynq").mkdir()
        (site / "pynq" / "__init__.py").write_text(f'__version__ = "{pynq_version}"\n')
    python3 = venv / "bin" / "python3"
    python3.unlink()
    python3.write_text('#!/bin/sh\necho "XILINX_XRT=${XILINX_XRT:-} $*" >> "$(dirname "$0")/calls.log"\n'
                       'exec "$(dirname "$0")/python" "$@"\n')
    python3.chmod(0o755)
    (root / "etc/profile.d").mkdir(parents=True)
    (root / "etc/profile.d/xrt_setup.sh").write_text("export XILINX_XRT=/usr\n")
    return venv, site


def board_shell(bundle, script: str, *args: str, **env) -> subprocess.CompletedProcess:
    """``sh BUNDLE/script args`` in a clean environment with ``env`` added."""
    clean = {k: v for k, v in os.environ.items()
             if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHON", "PYNQ_ROOT", "XILINX_XRT", "OUT")}
    return subprocess.run(["sh", str(bundle / script), *args], env={**clean, **env}, capture_output=True,
                          text=True, timeout=600)


def test_the_bundle_installs_into_a_pynq_image_with_board_requirements_only_and_trains_twice(bundle, tmp_path):
    """On a PYNQ v3 image install.sh puts e2t and the board requirements (from PyPI here: the venv
    is fresh) into the image's pynq-venv, with the image's XRT set-up, and no pynq over the
    image's, nor torch, onnx or hls4ml; train.sh trains with that Python, and a second sh train.sh
    starts runs/<model>-<dataset>-2. On another Linux, PYTHON= picks the Python (and OUT= the run)."""
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    venv, site = pynq_image(tmp_path / "image", pip=True)
    image = {"PYNQ_ROOT": str(tmp_path / "image"), "E2T_CACHE": str(tmp_path / "cache")}
    done = board_shell(copy, "install.sh", **image)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert done.stdout.splitlines()[-1] == f"install.sh: e2t is installed for {venv}/bin/python3 (pynq 3.0.1); " \
                                           f"next: sh train.sh"
    assert glob.glob(str(site / "e2t-*.dist-info")) and not glob.glob(str(site / "pynq*.dist-info"))
    assert (site / "pynq" / "__init__.py").read_text() == '__version__ = "3.0.1"\n'  # the image's, untouched
    probe = subprocess.run([str(venv / "bin" / "python"), "-c", "import importlib.util as u; print([m for m in "
                            "('torch', 'onnx', 'hls4ml', 'onnxruntime', 'pandas') if u.find_spec(m)])"],
                           capture_output=True, text=True, cwd=tmp_path)
    assert probe.stdout.strip() == "[]", probe.stderr
    for n in (1, 2):
        run = board_shell(copy, "train.sh", "--quiet", **image)
        assert run.returncode == 0, run.stderr[-3000:]
        assert f"new run folder runs/resnet8-digits-{n} " in run.stderr
        assert "test accuracy" in run.stdout and f"run folder runs/resnet8-digits-{n}\n" in run.stdout
        assert (copy / "runs" / f"resnet8-digits-{n}" / "energy" / "report.html").is_file()
    calls = (venv / "bin" / "calls.log").read_text().splitlines()
    assert all(c.startswith("XILINX_XRT=/usr ") for c in calls), calls
    assert sum("-m e2t.cli train " in c for c in calls) == 2 and sum("-m pip install" in c for c in calls) == 2
    run = board_shell(copy, "train.sh", "--quiet", PYTHON=str(venv / "bin" / "python"), OUT=str(tmp_path / "run"),
                      E2T_CACHE=image["E2T_CACHE"])
    assert run.returncode == 0 and "new run folder" not in run.stderr, run.stderr[-3000:]
    assert (tmp_path / "run" / "metrics.jsonl").is_file()


def refused(bundle, script: str, expect: str, **env) -> None:
    """``sh BUNDLE/script`` with ``env`` exits 2 with one line on stderr, from the script, holding ``expect``."""
    done = board_shell(bundle, script, **env)
    assert done.returncode == 2 and done.stdout == "" and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"{script}: ") and expect in done.stderr, done.stderr


def not_root(tmp_path) -> str:
    """A PATH whose ``id`` says the user is not root."""
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "id").write_text("#!/bin/sh\necho 1000\n")
    (tmp_path / "user" / "id").chmod(0o755)
    return f"{tmp_path / 'user'}:{os.environ['PATH']}"


def test_the_scripts_refuse_a_wrong_environment_with_one_line(bundle, tmp_path):
    """No image, a pynq other than the v3 images', none at all, or not root where the image's
    environment is root's: one line naming it, exit 2, and nothing installed."""
    _, site = pynq_image(tmp_path / "image", pynq_version="4.0.0")
    image = {"PYNQ_ROOT": str(tmp_path / "image")}
    for script in ("install.sh", "train.sh"):
        refused(bundle, script, "has pynq 4.0.0; this bundle is for the PYNQ v3 images' pynq 3.0.x or 3.1.x", **image)
        refused(bundle, script, "not a PYNQ v3 image", PYNQ_ROOT=str(tmp_path / "nothing"))
    shutil.rmtree(site / "pynq")
    refused(bundle, "install.sh", "has no pynq", **image)
    (site / "pynq").mkdir()
    (site / "pynq" / "__init__.py").write_text('__version__ = "3.1"\n')
    refused(bundle, "install.sh", "is root's: run sudo sh install.sh", **image, PATH=not_root(tmp_path))
    refused(bundle, "train.sh", "e2t is not installed for", **image)
    assert not glob.glob(str(site / "e2t*")) and not (bundle / "runs").exists()


def test_with_an_overlay_train_sh_needs_root_and_the_image_s_pynq(tmp_path, monkeypatch, capsys):
    """A bundle with an overlay (the stand-in's) trains with --backend pynq: as root only, and with
    a PYNQ v3 image's pynq even where PYTHON= names the interpreter."""
    data = tmp_path / "bitstreams"
    shutil.copytree(boards.DATA, data)
    pynq_standin.write_overlay(data / "pynq-z2")
    monkeypatch.setattr(boards, "DATA", str(data))
    assert main(BUNDLE_ARGS + ["--out", str(tmp_path / "bundle")]) == 0
    bundle = tmp_path / "bundle"
    assert sorted(os.listdir(bundle / "overlay")) == ["e2t.bit", "e2t.hwh"]
    assert "--backend pynq --bitfile overlay/e2t.bit" in (bundle / "train.sh").read_text()
    assert "On the board: sudo sh train.sh" in (bundle / "README.txt").read_text()
    pynq_image(tmp_path / "image")
    image = {"PYNQ_ROOT": str(tmp_path / "image")}
    refused(bundle, "train.sh", "loading the overlay needs root: run sudo sh train.sh", **image,
            PATH=not_root(tmp_path))
    refused(bundle, "train.sh", "e2t is not installed for", **image)  # as root, with the image's pynq
    refused(bundle, "train.sh", f"{sys.executable} has pynq ", PYTHON=sys.executable)  # the workstation's


def test_deploy_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    assert main(BUNDLE_ARGS + ["--out", str(busy)]) == 2
    assert os.listdir(busy) == ["keep.txt"]
    assert main(["plan", "--model", "resnet8", "--dataset", "digits", "--board", "zcu104", "--batch", "8",
                 "--out", str(tmp_path / "p")]) == 0
    capsys.readouterr()
    assert main(["deploy", "--board", "pynq-z2", "--plan", str(tmp_path / "p"), "--dataset", "digits",
                 "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is for zcu104" in err and not (tmp_path / "b").exists()
    assert main(["deploy", "--dataset", "folder", "--plan", str(tmp_path / "p"), "--board", "zcu104",
                 "--out", str(tmp_path / "c")]) == 2
    assert "--dataset folder needs --data-dir" in capsys.readouterr().err and not (tmp_path / "c").exists()


@pytest.mark.parametrize("flags", [["--epochs", "0"], ["--epochs", "-2"], ["--batch", "0"], ["--out", ""]],
                         ids=["epochs 0", "epochs -2", "batch 0", "empty out"])
def test_deploy_refuses_here_what_train_sh_could_not_run_on_the_board(tmp_path, monkeypatch, capsys, flags):
    monkeypatch.chdir(tmp_path)
    assert main(BUNDLE_ARGS + ["--out", "bundle", *flags]) == 2  # the later flag wins
    err = capsys.readouterr().err
    named = f"e2t: error: {flags[0]} " if flags[1] else f"e2t: error: deploy: argument {flags[0]}: "  # argparse's
    assert err.count("\n") == 1 and err.startswith(named) and os.listdir(tmp_path) == []


def test_deploy_never_writes_over_the_tarball_beside_out(tmp_path, capsys):
    (tmp_path / "bundle.tar.gz").write_bytes(b"mine")
    assert main(BUNDLE_ARGS + ["--out", str(tmp_path / "bundle")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bundle.tar.gz exists" in err
    assert os.listdir(tmp_path) == ["bundle.tar.gz"] and (tmp_path / "bundle.tar.gz").read_bytes() == b"mine"


def test_an_interrupted_deploy_leaves_nothing(tmp_path, monkeypatch, capsys):
    """Killed while the tarball is written: neither the folder nor a part of the tarball stays."""
    def add(self, *args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(tarfile.TarFile, "add", add)
    assert main(BUNDLE_ARGS + ["--out", str(tmp_path / "bundle")]) == 130
    assert os.listdir(tmp_path) == []


def test_deploy_into_a_folder_it_cannot_make_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("mine")
    assert main(BUNDLE_ARGS + ["--out", str(tmp_path / "file" / "bundle")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot make the bundle folder (Not a directory)" in err
    assert os.listdir(tmp_path) == ["file"]


def test_the_board_side_runs_on_python_3_10():
    """vermin: nothing in host/ or energy/ needs a Python newer than the PYNQ images' 3.10; and it
    does catch what would (a 3.11 module)."""
    def vermin(*paths):
        return subprocess.run([os.path.join(os.path.dirname(sys.executable), "vermin"), "-t=3.10-", "--violations", "--no-tips",
                               "--eval-annotations", *paths], capture_output=True, text=True, cwd=ROOT, timeout=300)
    ok = vermin("contract", "host", "energy", "e2t")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    newer = os.path.join(ROOT, "build", "vermin_probe.py")
    os.makedirs(os.path.dirname(newer), exist_ok=True)
    with open(newer, "w") as f:
        f.write("import tomllib\n")
    assert vermin(newer).returncode != 0
