"""Bad input: one line naming the problem, non-zero exit, no traceback, nothing lost."""
import os
import subprocess
import sys

import pytest

from e2t.cli import main

from conftest import ROOT

FAST = ["--model", "resnet8", "--dataset", "digits", "--epochs", "1", "--batch-size", "128", "--quiet"]


def one_line_error(capsys, argv, match):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("e2t: error:") and "\n" not in err and "Traceback" not in err
    assert match in err
    return err


@pytest.mark.parametrize("argv,match", [
    (["train", "--model", "resnet19"], "unknown model 'resnet19'"),
    (["train", "--dataset", "imagenet"], "unknown dataset"),
    (["train", "--backend", "tpu"], "unknown backend 'tpu'"),
    (["train", "--resume"], "--resume needs --out"),
])
def test_bad_names(capsys, argv, match):
    one_line_error(capsys, argv, match)


def test_missing_cifar_says_where_to_put_it(capsys, tmp_path):
    one_line_error(capsys, ["train", "--dataset", "cifar10", "--data-dir", str(tmp_path),
                            "--out", str(tmp_path / "run")], "cifar-10-python.tar.gz")
    assert not (tmp_path / "run").exists()


def test_corrupt_cifar_tarball(capsys, tmp_path):
    (tmp_path / "cifar-100-python.tar.gz").write_bytes(b"\x1f\x8b not really a tarball")
    one_line_error(capsys, ["train", "--dataset", "cifar100", "--data-dir", str(tmp_path),
                            "--out", str(tmp_path / "run")], "cifar-100-python.tar.gz")


def test_corrupt_checkpoint_loses_nothing(capsys, tmp_path):
    out = str(tmp_path / "run")
    assert main(["train", *FAST, "--out", out]) == 0
    capsys.readouterr()
    ckpt = os.path.join(out, "checkpoint.pt")
    with open(ckpt, "r+b") as f:
        f.truncate(os.path.getsize(ckpt) // 2)
    def files():
        return {os.path.relpath(os.path.join(d, n), out): open(os.path.join(d, n), "rb").read()
                for d, _, names in os.walk(out) for n in names}
    before = files()
    one_line_error(capsys, ["train", "--resume", "--out", out], "corrupt or truncated")
    assert files() == before


def test_existing_run_is_not_overwritten(capsys, tmp_path):
    out = str(tmp_path / "run")
    assert main(["train", *FAST, "--out", out]) == 0
    assert " after 1 epoch; run folder " in capsys.readouterr().out
    before = open(os.path.join(out, "checkpoint.pt"), "rb").read()
    one_line_error(capsys, ["train", *FAST, "--out", out], "already holds a run")
    one_line_error(capsys, ["train", "--resume", "--out", out, "--lr", "0.5"], "--lr 0.5 differs")
    assert open(os.path.join(out, "checkpoint.pt"), "rb").read() == before


def test_console_script_exit_code():
    env = dict(os.environ, PYTHONPATH=ROOT)
    r = subprocess.run([sys.executable, "-m", "e2t.cli", "train", "--model", "resnet7"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["e2t: error: unknown model 'resnet7' (known: resnet8, resnet20, "
                                             "resnet38, resnet74, resnet110)"]


@pytest.mark.parametrize("backend", [[], ["--backend", "emu", "--precision", "fixed"]])
def test_out_that_is_a_file_is_one_line(capsys, tmp_path, backend):
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    one_line_error(capsys, ["train", *FAST, *backend, "--out", str(target)], "is a file, not a run folder")
    assert target.read_text() == "keep me"


def test_backend_errors_are_one_line(capsys, tmp_path):
    one_line_error(capsys, ["train", *FAST, "--backend", "emu", "--precision", "fp32", "--out", str(tmp_path / "r")],
                   "--precision fp32: --backend emu computes in fixed point")
    one_line_error(capsys, ["train", *FAST, "--backend", "pynq", "--precision", "fixed", "--out", str(tmp_path / "p")],
                   "--backend pynq needs")
    one_line_error(capsys, ["train", *FAST, "--backend", "emu", "--precision", "fixed", "--dataset", "folder",
                            "--out", str(tmp_path / "f")], "--dataset folder needs --data-dir")
