"""e2t deploy: a bundle that installs into a fresh virtual environment with the board requirements
only (no torch, onnx or hls4ml) and trains there; bad input is one line and writes nothing; the
board side is checked for Python 3.10 syntax with vermin."""
from __future__ import annotations

import os
import subprocess
import sys
import tarfile

import pytest

from conftest import ROOT
from host.cli import main

BUNDLE_ARGS = ["deploy", "--board", "pynq-z2", "--model", "resnet8", "--dataset", "digits", "--batch", "32",
               "--epochs", "1"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("deploy") / "bundle"
    assert main(BUNDLE_ARGS + ["--out", str(out)]) == 0
    return out


def test_the_bundle_holds_what_a_board_needs(bundle):
    names = sorted(os.listdir(bundle))
    assert names == ["README.txt", "data", "install.sh", "plan", "requirements-board.txt", "train.sh", "wheels"]
    assert sorted(os.listdir(bundle / "plan")) == ["plan.json", "weights.bin"]
    assert os.listdir(bundle / "data") == ["digits.csv.gz"]
    assert "--backend emu" in (bundle / "train.sh").read_text()  # no overlay built here
    with tarfile.open(str(bundle) + ".tar.gz") as tar:
        inside = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {"install.sh", "train.sh", "plan/weights.bin", "data/digits.csv.gz"} <= inside


def test_the_bundle_installs_and_trains_in_a_fresh_venv_with_board_requirements_only(bundle, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(["sh", str(bundle / "install.sh")], env={**env, "PYTHON": py}, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    probe = subprocess.run([py, "-c", "import importlib.util as u; print([m for m in ('torch', 'onnx', 'hls4ml', "
                                      "'onnxruntime') if u.find_spec(m)])"], capture_output=True, text=True, cwd=tmp_path)
    assert probe.stdout.strip() == "[]", probe.stderr
    run = subprocess.run(["sh", str(bundle / "train.sh"), "--quiet"], cwd=tmp_path, timeout=600, capture_output=True,
                         text=True, env={**env, "PYTHON": py, "E2T_CACHE": str(tmp_path / "cache"),
                                         "OUT": str(tmp_path / "run")})
    assert run.returncode == 0, run.stderr[-3000:]
    assert "test accuracy" in run.stdout and "report" in run.stdout
    assert (tmp_path / "run" / "metrics.jsonl").is_file() and (tmp_path / "run" / "energy" / "report.html").is_file()


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


def test_the_board_side_runs_on_python_3_10():
    """vermin: nothing in host/ or energy/ needs a Python newer than the PYNQ images' 3.10; and it
    does catch what would (a 3.11 module)."""
    def vermin(*paths):
        return subprocess.run([os.path.join(os.path.dirname(sys.executable), "vermin"), "-t=3.10-", "--violations", "--no-tips",
                               "--eval-annotations", *paths], capture_output=True, text=True, cwd=ROOT, timeout=300)
    ok = vermin("host", "energy")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    newer = os.path.join(ROOT, "build", "vermin_probe.py")
    os.makedirs(os.path.dirname(newer), exist_ok=True)
    with open(newer, "w") as f:
        f.write("import tomllib\n")
    assert vermin(newer).returncode != 0
