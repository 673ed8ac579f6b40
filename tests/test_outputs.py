"""Outputs: no command writes over an existing output (one line, exit 2, every byte kept) unless
re-writing is what it is for; what is written is written whole or not at all; energy compare
compares the same training only and shows each run's epochs and accuracy."""
import hashlib
import json
import os
import shutil

import numpy as np
import pytest

from contract import runs
from e2t.cli import main

from test_energy import _record, _run, _segments


def tree(*roots) -> dict:
    """Every file and folder under ``roots``: path -> sha256 of its bytes (None for a folder)."""
    out = {}
    for root in map(str, roots):
        for d, dirs, names in os.walk(root):
            out.update({os.path.join(d, n): None for n in dirs})
            for n in names:
                with open(os.path.join(d, n), "rb") as f:
                    out[os.path.join(d, n)] = hashlib.sha256(f.read()).hexdigest()
    return out


def refused(capsys, argv, *roots) -> str:
    """``e2t argv`` gives one line, exit 2, and leaves every byte under ``roots`` as it was."""
    capsys.readouterr()
    before = tree(*roots)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("e2t: error: ") and "\n" not in err, err
    assert tree(*roots) == before
    return err


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The smallest real inputs: a 40-image .npz data set, a run trained on it for one epoch
    (torch backend, with its energy report), a plan folder and calibration segments."""
    root = tmp_path_factory.mktemp("world")
    rng = np.random.default_rng(0)
    np.savez(root / "tiny.npz", x=rng.integers(0, 256, (40, 8, 8), dtype=np.uint8), y=np.arange(40) % 2)
    tiny = ["--model", "resnet8", "--dataset", "folder", "--data-dir", str(root / "tiny.npz"), "--epochs", "1",
            "--batch-size", "16", "--quiet"]
    assert main(["train", *tiny, "--out", str(root / "run")]) == 0
    assert main(["plan", "--model", "resnet8", "--dataset", "digits", "--batch", "16", "--out", str(root / "plan")]) == 0
    (root / "seg.json").write_text(json.dumps(_segments({"int8x8": 1.5, "int4x16": 1.0}, 200.0, 0.5)))
    return {"root": root, "tiny": tiny, "run": str(root / "run"), "plan": str(root / "plan"),
            "seg": str(root / "seg.json")}


WRITERS = {  # e2t's writing subcommands: their argv with the output at ``out``
    "train torch": lambda w, out: ["train", *w["tiny"], "--out", out],
    "train emu": lambda w, out: ["train", *w["tiny"], "--backend", "emu", "--precision", "fixed", "--out", out],
    "plan": lambda w, out: ["plan", "--model", "resnet8", "--dataset", "digits", "--batch", "16", "--out", out],
    "export forward": lambda w, out: ["export", w["run"], "--out", out, "--quiet"],
    "export back": lambda w, out: ["export", w["plan"], "--out", out, "--quiet"],
    "deploy": lambda w, out: ["deploy", "--model", "resnet8", "--dataset", "digits", "--batch", "16", "--out", out],
    "energy compare --out": lambda w, out: ["energy", "compare", w["run"], w["run"], "--out", out],
    "energy calibrate --out": lambda w, out: ["energy", "calibrate", "--segments", w["seg"], "--out", out],
}


@pytest.mark.parametrize("kind", ["run", "plan", "file"])
@pytest.mark.parametrize("command", list(WRITERS))
def test_every_writing_command_refuses_an_existing_output(world, tmp_path, capsys, command, kind):
    """The sweep: --out at a trained run's folder (a copy of one, as `cp -r runs/r runs/x`), a
    plan's folder or a file is refused with one line, exit 2, and not a byte of it (or of the
    inputs) changes."""
    out = tmp_path / "x"
    if kind == "file":
        out.write_text("keep me")
    else:
        shutil.copytree(world[kind], out)
    err = refused(capsys, WRITERS[command](world, str(out)), tmp_path, world["root"])
    assert str(out) in err


@pytest.mark.parametrize("argv", [
    ["plan", "--out", ""], ["energy", "calibrate", "--segments", "{seg}", "--out", ""],
    ["energy", "compare", "{run}", "{run}", "--out", ""], ["energy", "report", "{run}", "--board", ""],
    ["energy", "report", "{run}", "--model", ""]], ids=["plan", "calibrate", "compare", "report board", "report model"])
def test_an_empty_output_or_model_flag_is_one_line(world, tmp_path, capsys, monkeypatch, argv):
    monkeypatch.chdir(tmp_path)
    assert "is empty" in refused(capsys, [a.format(**world) for a in argv], tmp_path, world["root"])


@pytest.mark.parametrize("kind", ["a file", "a folder of one's own"])
def test_energy_report_refuses_a_report_path_that_is_not_its_report(world, tmp_path, capsys, kind):
    run = tmp_path / "run"
    shutil.copytree(world["run"], run)
    target = run / "energy-zcu104"
    if kind == "a file":
        target.write_text("keep me")
    else:
        target.mkdir()
        (target / "notes.txt").write_text("keep me")
    err = refused(capsys, ["energy", "report", str(run), "--board", "zcu104"], tmp_path, world["root"])
    assert str(target) in err


def test_a_report_for_another_board_keeps_the_run_s_own(world, tmp_path, capsys):
    """`e2t energy report RUN --board zcu104` writes RUN/energy-zcu104/ beside the pynq-z2 report
    (it used to write over it); a re-run with the same pricing re-writes its own folder (a normal need);
    a --model file whose folder holds another pricing is refused without --force."""
    run = tmp_path / "run"
    shutil.copytree(world["run"], run)
    own = tree(run / "energy")
    assert main(["energy", "report", str(run), "--board", "zcu104"]) == 0
    assert str(run / "energy-zcu104" / "report.html") in capsys.readouterr().out
    assert tree(run / "energy") == own
    assert json.loads((run / "energy-zcu104" / "energy.json").read_text())["board"] == "zcu104"
    assert main(["energy", "report", str(run)]) == 0
    assert sorted(p for p in os.listdir(run) if p.startswith((".", "energy"))) == ["energy", "energy-zcu104"]
    mine = tmp_path / "zcu104.json"  # a model file named like another pricing's folder
    with open(json.loads((run / "energy" / "energy.json").read_text())["model"]) as f:
        mine.write_text(json.dumps({**json.load(f), "table": "my own figures"}))
    err = refused(capsys, ["energy", "report", str(run), "--model", str(mine)], run)
    assert "pass --force" in err and "zcu104" in err
    assert main(["energy", "report", str(run), "--model", str(mine), "--force"]) == 0
    assert json.loads((run / "energy-zcu104" / "energy.json").read_text())["table"] == "my own figures"


def _failing_write(monkeypatch, after: int):
    """Make the writers' file writes fail (disk full) after ``after`` files."""
    real, calls = runs._synced, []

    def synced(f, data):
        calls.append(1)
        if len(calls) > after:
            raise OSError(28, "No space left on device")
        real(f, data)
    monkeypatch.setattr(runs, "_synced", synced)


def test_a_plan_that_fails_mid_way_leaves_nothing(tmp_path, capsys, monkeypatch):
    _failing_write(monkeypatch, after=1)
    err = refused(capsys, ["plan", "--model", "resnet8", "--dataset", "digits", "--batch", "16",
                           "--out", str(tmp_path / "p")], tmp_path)
    assert "No space left on device" in err and "nothing was written" in err
    assert os.listdir(tmp_path) == []


def test_a_report_that_fails_mid_way_keeps_the_old_one(world, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(world["run"], run)
    _failing_write(monkeypatch, after=3)
    refused(capsys, ["energy", "report", str(run)], tmp_path)
    assert sorted(os.listdir(run)) == sorted(os.listdir(world["run"]))


def test_write_folder_replaces_whole_and_takes_an_empty_folder(tmp_path):
    dst = tmp_path / "out"
    runs.write_folder(str(dst), {"a": b"1", "sub/b": b"2"})
    assert (dst / "sub" / "b").read_bytes() == b"2"
    runs.write_folder(str(dst), {"c": b"3"}, replace=True)
    assert os.listdir(dst) == ["c"]
    (tmp_path / "empty").mkdir()
    runs.write_folder(str(tmp_path / "empty"), {"a": b"1"})  # an empty folder is a new output
    assert os.listdir(tmp_path / "empty") == ["a"] and sorted(os.listdir(tmp_path)) == ["empty", "out"]


# -- energy compare: the same training only, with its epochs and accuracy ---------------------------

CONFIG = {"model": "resnet8", "dataset": "digits", "backend": "emu", "board": "pynq-z2"}


@pytest.mark.parametrize("field, value", [("model", "resnet20"), ("dataset", "mnist5k"), ("image_size", 16)])
def test_compare_refuses_runs_of_another_training_without_force(tmp_path, capsys, field, value):
    a = _run(tmp_path / "base", [_record(1, 4 * 10**9, 4e6, 0.90)], CONFIG)
    b = _run(tmp_path / "other", [_record(1, 10**9, 1e6, 0.20), _record(2, 10**9, 1e6, 0.30)],
             {**CONFIG, field: value})
    err = refused(capsys, ["energy", "compare", a, b, "--out", str(tmp_path / "c.json")], tmp_path)
    assert f"trains {field} {value}" in err and "--force" in err
    assert main(["energy", "compare", a, b, "--force"]) == 0
    assert "different numbers of epochs" in capsys.readouterr().out


def test_compare_prints_epochs_and_test_accuracy(tmp_path, capsys):
    a = _run(tmp_path / "base", [_record(1, 4 * 10**9, 4e6, 0.5), _record(2, 4 * 10**9, 4e6, 0.90)], CONFIG)
    b = _run(tmp_path / "e2t", [_record(1, 10**9, 1e6, 0.4), _record(2, 10**9, 1e6, 0.8875)], CONFIG)
    assert main(["energy", "compare", a, b, "--out", str(tmp_path / "sub" / "c.json")]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("run "))
    assert lines[header].split()[:7] == ["run", "epochs", "test", "acc", "engine", "(J)", "saved"]
    assert lines[header + 2].split()[:4] == ["e2t", "2", "88.75", "%"] and "different numbers" not in "".join(lines)
    rows = json.loads((tmp_path / "sub" / "c.json").read_text())["rows"]
    assert [r["epochs"] for r in rows] == [2, 2] and rows[1]["test_acc"] == 0.8875


def test_compare_out_at_a_folder_is_one_line(tmp_path, capsys):
    a = _run(tmp_path / "a", [_record(1, 10**9, 1e6)], CONFIG)
    assert "already exists (a folder)" in refused(capsys, ["energy", "compare", a, a, "--out", str(tmp_path)], tmp_path)


# -- the report's settings in words; calibration over an earlier one only with --force --------------

def test_report_says_the_settings_in_words(tmp_path, capsys):
    run = _run(tmp_path / "run", [_record(1, 10**9, 1e6)],
               {**CONFIG, "precision": "fixed", "psg": True, "psg_tau": 0.0, "psg_ratio": None, "smd": 0.5,
                "slu_target": None})
    assert main(["energy", "report", run]) == 0
    html = (tmp_path / "run" / "energy" / "report.html").read_text()
    assert "PSG on (tau 0), SMD on (p 0.5), SLU off" in html
    assert "True" not in html and "None" not in html


def test_calibration_replaces_an_earlier_one_only_with_force(tmp_path, capsys, monkeypatch):
    from contract.boards import DATA
    from energy import model as emodel
    (tmp_path / "pynq-z2").mkdir()
    shutil.copy(os.path.join(DATA, "pynq-z2", "energy.json"), tmp_path / "pynq-z2")
    monkeypatch.setattr(emodel, "DATA", str(tmp_path))  # the board's default model, and energy.fitted.json beside it
    seg = tmp_path / "seg.json"
    seg.write_text(json.dumps(_segments({"int8x8": 1.5, "int4x16": 1.0}, 200.0, 0.5)))
    assert main(["energy", "calibrate", "--segments", str(seg)]) == 0
    fitted = tmp_path / "pynq-z2" / "energy.fitted.json"
    assert "pass --force" in refused(capsys, ["energy", "calibrate", "--segments", str(seg)], tmp_path)
    seg.write_text(json.dumps(_segments({"int8x8": 2.5, "int4x16": 1.0}, 200.0, 0.5)))
    assert main(["energy", "calibrate", "--segments", str(seg), "--force"]) == 0
    assert emodel.load("pynq-z2", str(fitted)).mac_pj["int8x8"] == pytest.approx(2.5)
