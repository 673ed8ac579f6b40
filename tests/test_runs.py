import os
import re

import pytest

from contract.errors import E2TError
from contract.runs import RunDir, atomic_write


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "ckpt"
    atomic_write(str(path), b"old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        atomic_write(str(path), b"new")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["ckpt"]  # no temp file left behind


def test_run_folder_refuses_to_overwrite(tmp_path):
    run = RunDir(str(tmp_path / "run"), "checkpoint.pt")
    run.create({"a": 1})
    with pytest.raises(E2TError, match="already holds a run"):
        run.create({"a": 2})
    assert run.load_config() == {"a": 1}


def test_truncate_metrics_drops_epochs_past_checkpoint(tmp_path):
    run = RunDir(str(tmp_path), "c")
    run.create({})
    for e in (1, 2, 3):
        run.append_metrics({"epoch": e})
    run.truncate_metrics(2)
    assert [r["epoch"] for r in run.metrics()] == [1, 2]


def test_missing_and_corrupt_config(tmp_path):
    with pytest.raises(E2TError, match="does not exist"):
        RunDir(str(tmp_path), "c").load_config()
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(E2TError, match="corrupt"):
        RunDir(str(tmp_path), "c").load_config()


@pytest.mark.parametrize("epochs", [[2], [1, 1, 2], []])
def test_truncate_metrics_refuses_records_the_checkpoint_holds_lost_or_twice(tmp_path, epochs):
    """A resumed run whose epoch 1 record was lost went on, and its energy report then priced one
    epoch too few (or, repeated, one too many); nothing is written when refused."""
    run = RunDir(str(tmp_path), "c")
    run.create({})
    for e in epochs + [3]:
        run.append_metrics({"epoch": e})
    before = (tmp_path / "metrics.jsonl").read_bytes()
    with pytest.raises(E2TError, match=re.escape(f"holds records of epochs {epochs}, the checkpoint is after epoch 2")):
        run.truncate_metrics(2)
    assert (tmp_path / "metrics.jsonl").read_bytes() == before
