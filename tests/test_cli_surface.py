"""The command line's surface: argparse's errors as the project's one line, refusals instead of
tracebacks, a closed stdout, one EngineError family, help texts and the modes of written files."""
import argparse
import os
import re
import subprocess
import sys

import pytest

from contract import runs
from contract.errors import E2TError
from e2t.cli import build_parser, main
from host.engine.driver import EngineError
from host.train.config import TrainConfig

from conftest import ROOT
from test_cli import one_line_error


@pytest.mark.parametrize("argv, match", [
    (["train", "--epochs", "x"], "e2t: error: train: argument --epochs: invalid int value: 'x'"),
    (["train", "--epoks", "3"], "e2t: error: train: unrecognized arguments: --epoks 3"),
    (["energy", "report"], "e2t: error: energy report: the following arguments are required: run_dir"),
    (["energy", "calibrate", "--backend", "fpga"], "energy calibrate: argument --backend: invalid choice: 'fpga'"),
    (["bogus"], "e2t: error: argument command: invalid choice: 'bogus'"),
    ([], "e2t: error: the following arguments are required: command"),
])
def test_argparse_errors_are_one_line_naming_the_subcommand(capsys, argv, match):
    one_line_error(capsys, argv, match)


@pytest.mark.parametrize("flag, value", [("--size", "0"), ("--size", "-3"), ("--num-classes", "0"),
                                         ("--in-channels", "0")])
def test_info_refuses_an_empty_model(capsys, flag, value):
    one_line_error(capsys, ["info", flag, value], f"{flag} {value}: ")


def _run(argv, **kwargs):
    return subprocess.run([sys.executable, "-m", "e2t.cli", *argv], cwd=ROOT, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=ROOT, **kwargs.pop("env", {})), **kwargs)


def test_a_closed_stdout_ends_quietly():
    """`e2t estimate | head -1` where head is gone before e2t writes: no traceback, exit 141 (as a
    filter that SIGPIPE stopped). A pipe whose read end is closed first makes that certain."""
    r, w = os.pipe()
    os.close(r)
    try:
        done = _run(["estimate", "--model", "resnet8"], stdout=w, stderr=subprocess.PIPE)
    finally:
        os.close(w)
    assert (done.returncode, done.stderr) == (141, "")
    head = subprocess.run(f"'{sys.executable}' -m e2t.cli estimate --model resnet8 | head -1", shell=True,
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True,
                          timeout=120)
    assert head.stdout.startswith("resnet8 on pynq-z2") and head.stdout.count("\n") == 1 and head.stderr == ""


def test_the_cpu_build_s_errors_are_the_driver_s_engine_error():
    from hls import csim
    assert csim.EngineError is EngineError and issubclass(EngineError, E2TError)
    with pytest.raises(EngineError, match="unknown engine build 'x'"):
        csim.build("x")


@pytest.mark.parametrize("engine", ["fast", "native", "ap"])
def test_no_compiler_is_one_line_and_leaves_nothing(tmp_path, engine):
    """No g++ on PATH and an empty build cache ($E2T_CACHE): every engine build says so in one line
    before the run folder is made."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "cache").mkdir()
    done = _run(["train", "--backend", "emu", "--precision", "fixed", "--model", "resnet8", "--epochs", "1",
                 "--engine", engine, "--out", str(tmp_path / "X")], capture_output=True,
                env={"PATH": str(tmp_path / "bin"), "E2T_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["e2t: error: the CPU builds need a C++ compiler: 'g++' is not on PATH "
                                        "(apt install g++)"]
    assert not (tmp_path / "X").exists() and not os.listdir(tmp_path / "cache")


def _parsers(parser=None, name="e2t"):
    """(name, parser) of every command and subcommand."""
    parser = parser or build_parser()
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, p in action.choices.items():
                yield from _parsers(p, f"{name} {sub}")


@pytest.fixture
def wide(monkeypatch):
    """Help rendered on one line per entry (argparse wraps at $COLUMNS, and breaks --psg-tau)."""
    monkeypatch.setenv("COLUMNS", "1000")


def _options(help_text: str) -> dict:
    """Each argument's entry of a rendered help: its invocation -> its help, unwrapped (may be '')."""
    entries = []
    for line in help_text.split("\n\n", 1)[1].splitlines():  # past the usage paragraph
        if re.match(r"  \S", line):
            entries.append(line.strip().split("  ", 1) + [""])
        elif re.match(r" {3,}\S", line) and entries:
            entries[-1][1] += " " + line.strip()
    return {invocation: " ".join(text.split()) for invocation, text, *_ in entries}


def test_every_option_has_a_help_and_at_most_one_default(wide):
    for name, parser in _parsers():
        for option, text in _options(parser.format_help()).items():
            where = f"{name} {option}"
            assert text, f"{where} has no help"
            assert "(default: None)" not in text and "(default: False)" not in text, where
            assert len(re.findall(r"\(default", text)) <= 1, f"{where} says its default twice: {text}"
    options = _options(dict(_parsers())["e2t plan"].format_help())
    assert "default" not in options["--out OUT"]
    assert all(m in dict(_parsers())["e2t info"].format_help() for m in ("resnet8", "resnet110"))


def test_every_command_defaults_to_the_same_model_and_data():
    d, parse = TrainConfig(), build_parser().parse_args
    for argv in (["plan", "--out", "x"], ["estimate"], ["deploy", "--out", "x"]):
        args = parse(argv)
        assert (args.model, args.dataset) == (d.model, d.dataset), argv
    assert parse(["info"]).model == d.model


def test_estimate_takes_a_folder_data_set(capsys, tmp_path):
    """`estimate --dataset folder` asked for a --data-dir that estimate did not have."""
    import numpy as np
    np.savez(tmp_path / "d.npz", x=np.zeros((20, 12, 12), np.uint8), y=np.arange(20) % 4)
    assert main(["estimate", "--dataset", "folder", "--data-dir", str(tmp_path / "d.npz"), "--model", "resnet8",
                 "--batch", "8"]) == 0
    assert capsys.readouterr().out.startswith("resnet8 on pynq-z2")


def test_the_psg_help_says_which_tau_saves(wide):
    options = _options(dict(_parsers())["e2t train"].format_help())
    assert "--psg alone costs energy: --psg-tau 0" in options["--psg"]
    assert "0 takes every sign from the predictor" in options["--psg-tau PSG_TAU"]
    assert "costs energy" in options["--psg-ratio PSG_RATIO"]


def test_written_files_get_the_umask_s_mode(tmp_path):
    old = os.umask(0o022)
    try:
        run = runs.RunDir(str(tmp_path / "run"), "checkpoint.npz")
        run.create({"model": "resnet8"})
        runs.atomic_write(run.checkpoint, b"1")
        runs.atomic_write(run.checkpoint, b"2")  # replacing a file
        os.umask(0o077)
        runs.atomic_write(str(tmp_path / "private"), b"3")
    finally:
        os.umask(old)
    modes = {n: os.stat(os.path.join(run.path, n)).st_mode & 0o777 for n in os.listdir(run.path)}
    assert modes == {"config.json": 0o644, "metrics.jsonl": 0o644, "checkpoint.npz": 0o644}
    assert os.stat(tmp_path / "private").st_mode & 0o777 == 0o600


@pytest.mark.parametrize("argv, name", [
    (["estimate", "--plan", ""], "--plan"), (["estimate", "--energy-model", ""], "--energy-model"),
    (["estimate", "--board", ""], "--board"), (["train", "--out", ""], "--out"),
    (["train", "--preset", ""], "--preset"),
    (["energy", "report", ""], "run_dir"), (["export", "", "--out", "x"], "source"),
    (["energy", "calibrate", "--segments", ""], "--segments")])
def test_an_empty_value_is_refused_naming_its_flag(capsys, tmp_path, monkeypatch, argv, name):
    """An empty value read as "not given": `estimate --plan ''` estimated the default model,
    `train --out ''` trained into ./runs/."""
    monkeypatch.chdir(tmp_path)
    one_line_error(capsys, argv, f"argument {name}: the value is empty")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("seed", ["-1", str(2 ** 64)])
def test_plan_checks_its_seed_as_train_does(capsys, tmp_path, seed):
    err = one_line_error(capsys, ["plan", "--seed", seed, "--out", str(tmp_path / "p")], "--seed must be 0 .. ")
    assert one_line_error(capsys, ["train", "--seed", seed], "--seed") == err and not (tmp_path / "p").exists()


@pytest.mark.parametrize("batch", ["0", "-1", "300"])
@pytest.mark.parametrize("command", [["plan", "--out", "p"], ["estimate", "--model", "resnet8"],
                                     ["deploy", "--out", "b"]])
def test_a_batch_the_board_cannot_take_is_named_by_its_flag(capsys, tmp_path, monkeypatch, command, batch):
    """`e2t plan --batch 300` said "plan.json: batch: 300 exceeds ...", a file the user never gave."""
    monkeypatch.chdir(tmp_path)
    err = one_line_error(capsys, command + ["--batch", batch], "--batch 300 exceeds the pynq-z2 engine's largest "
                         "batch 256" if batch == "300" else "--batch must be at least 1")
    assert "plan.json" not in err and os.listdir(tmp_path) == []


@pytest.mark.parametrize("command", [["plan", "--out", "p"], ["estimate"]])
def test_images_the_board_cannot_take_are_named_by_the_data_set_or_size(capsys, tmp_path, monkeypatch, command):
    import numpy as np
    monkeypatch.chdir(tmp_path)
    np.savez(tmp_path / "d.npz", x=np.zeros((20, 64, 64), np.uint8), y=np.arange(20) % 4)
    argv = command + ["--model", "resnet8", "--dataset", "folder", "--data-dir", "d.npz"]
    one_line_error(capsys, argv, "the images of --dataset folder are 64 x 64 pixels, more than the pynq-z2 engine's "
                                 "largest 32 x 32: give --size 32 (or less)")
    one_line_error(capsys, argv + ["--size", "48"], "--size 48 exceeds the pynq-z2 engine's largest image 32 x 32")
    assert os.listdir(tmp_path) == ["d.npz"]


def test_train_init_takes_the_plan_s_model_and_board(capsys, tmp_path):
    """`train --init P --board zcu104` with a pynq-z2 plan (or --model resnet20 with a resnet8) ran,
    and the run's config recorded the flag's (or the default) model and board, not the plan's."""
    import dataclasses

    from e2t.cli import config_from_args
    from host.plan import planbuild
    from host.train.trainer import EngineTrainer
    planbuild.save(str(tmp_path / "p"), *planbuild.from_model("resnet8", 1, 10, 32, "zcu104", 8)[:2])
    argv = ["train", "--backend", "emu", "--dataset", "digits", "--batch-size", "8", "--init", str(tmp_path / "p"),
            "--out", str(tmp_path / "run")]
    one_line_error(capsys, argv + ["--board", "pynq-z2"], f"--board pynq-z2: the --init plan {tmp_path / 'p'} is for "
                                                          f"zcu104 (leave --board out)")
    one_line_error(capsys, argv + ["--model", "resnet20"], "--model resnet20: the --init plan")
    given = config_from_args(build_parser().parse_args(argv + ["--model", "resnet8"]))
    cfg = config_from_args(build_parser().parse_args(argv))
    assert (cfg.model, cfg.board) == (given.model, given.board) == ("resnet8", "zcu104")
    with pytest.raises(E2TError, match="the plan is a resnet8 for zcu104, the run's config a resnet20 for zcu104"):
        EngineTrainer(dataclasses.replace(cfg, model="resnet20"), str(tmp_path / "run"), progress=False)
    assert not (tmp_path / "run").exists()
    assert TrainConfig(backend="emu", model="onnx-3conv", init="p").model == "onnx-3conv"  # an imported network's name
    with pytest.raises(E2TError, match="unknown model 'onnx-3conv'"):
        TrainConfig(model="onnx-3conv")
