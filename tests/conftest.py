"""Shared test set-up: the repo root on sys.path, small CPU thread counts."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# `make test` runs two pytest workers (pytest-xdist), one a core: each keeps torch's and the BLAS's
# work on one thread, so that the two do not fight over the cores. The fast engine keeps its OpenMP
# threads (its threaded paths are under test; idle ones sleep, hls/csim.py).
if os.environ.get("PYTEST_XDIST_WORKER"):
    for var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    import torch

    torch.set_num_threads(1)


def kill_in_epoch_2(trainer_class, monkeypatch):
    """Make ``trainer_class``'s runs stop (KeyboardInterrupt) as their second epoch starts;
    ``monkeypatch.undo()`` or a new setattr of ``train_epoch`` restores it."""
    real_epoch, calls = trainer_class.train_epoch, []

    def interrupted(self):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed half-way through the second epoch
        return real_epoch(self)

    monkeypatch.setattr(trainer_class, "train_epoch", interrupted)
    return real_epoch


def interrupted_and_resumed(cfg, tmp_path, monkeypatch):
    """Train ``cfg`` twice: straight through (run a), and killed during epoch 2 then resumed
    (run b). Returns (records a, records b, checkpoint a, checkpoint b)."""
    import pytest

    from reference.train import CHECKPOINT, Trainer, decode_checkpoint

    def state(name):
        with open(os.path.join(tmp_path, name, CHECKPOINT), "rb") as f:
            return decode_checkpoint(f.read(), name)

    quiet = dict(progress=False, log=lambda m: None)
    records = Trainer(cfg, str(tmp_path / "a"), **quiet).fit()
    real_epoch = kill_in_epoch_2(Trainer, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, str(tmp_path / "b"), **quiet).fit()
    assert state("b")["epoch"] == 1
    monkeypatch.setattr(Trainer, "train_epoch", real_epoch)
    resumed = Trainer(cfg, str(tmp_path / "b"), resume=True, **quiet).fit()
    return records, resumed, state("a"), state("b")


def assert_same_state(a, b):
    """Bit-identical weights, buffers and optimizer state of two checkpoints."""
    import torch

    assert a["iteration"] == b["iteration"]
    for key, value in a["model"].items():
        same = torch.equal(value, b["model"][key]) if torch.is_tensor(value) else value == b["model"][key]
        assert same, key
    for key, value in a["optimizer"]["state"].items():
        assert torch.equal(value["momentum_buffer"], b["optimizer"]["state"][key]["momentum_buffer"])
    for x, y in zip(a["psg"]["buffers"], b["psg"]["buffers"]):
        assert torch.equal(x, y)
