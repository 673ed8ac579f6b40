"""SMD, stochastic mini-batch dropping: seeded draws, the iteration budget, coasting."""
import numpy as np
import pytest
import torch

from contract.errors import E2TError
from host.train.config import TrainConfig
from reference import train as train_mod
from reference.train import Trainer, smd_drops

TINY = dict(model="resnet8", dataset="digits", batch_size=64, epochs=1, lr=0.05, seed=3)
ITERS = 1438 // 64


def test_draws_are_seeded_and_drop_about_p():
    a = smd_drops(0.3, seed=3, epoch=1, iterations=20_000)
    assert np.array_equal(a, smd_drops(0.3, seed=3, epoch=1, iterations=20_000))
    assert not np.array_equal(a, smd_drops(0.3, seed=3, epoch=2, iterations=20_000))
    assert abs(a.mean() - 0.3) < 0.015
    assert np.array_equal(smd_drops(0.3, 3, 1, 100), a[:100])  # one draw per iteration, in order
    assert not smd_drops(0.0, 3, 1, 1000).any()


@pytest.mark.parametrize("p", [-0.1, 1.0])
def test_bad_probability(p):
    with pytest.raises(E2TError, match="--smd must be a drop probability"):
        TrainConfig(smd=p)


def test_lr_schedule_counts_dropped_iterations(tmp_path, monkeypatch):
    seen_iterations = []
    real_lr_at = train_mod.lr_at

    def recording_lr_at(cfg, iteration, total):
        seen_iterations.append(iteration)
        return real_lr_at(cfg, iteration, total)

    monkeypatch.setattr(train_mod, "lr_at", recording_lr_at)
    cfg = TrainConfig(**TINY, smd=0.5, lr_milestones=(0.5,))
    trainer = Trainer(cfg, str(tmp_path / "run"), progress=False, log=lambda m: None)
    steps = []
    real_step = trainer.opt.step

    def counting_step():
        steps.append(trainer.iteration)
        real_step()

    trainer.opt.step = counting_step
    (record,) = trainer.fit()
    dropped = smd_drops(0.5, cfg.seed, 0, ITERS)
    assert seen_iterations == list(range(ITERS))
    assert record["iteration"] == ITERS and record["lr"] == pytest.approx(0.005)
    assert record["dropped_iterations"] == dropped.sum() and 0 < dropped.sum() < ITERS
    assert record["kept_iterations"] == len(steps) == ITERS - dropped.sum()
    assert steps == [i + 1 for i in np.flatnonzero(~dropped)]  # updates happen on the kept iterations only


@pytest.mark.parametrize("coast", [False, True])
def test_dropped_iterations_move_weights_only_when_coasting(tmp_path, monkeypatch, coast):
    monkeypatch.setattr(train_mod, "smd_drops", lambda p, seed, epoch, n: np.ones(n, dtype=bool))
    trainer = Trainer(TrainConfig(**TINY, smd=0.5, smd_coast=coast), str(tmp_path / "run"),
                      progress=False, log=lambda m: None)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    (record,) = trainer.fit()
    after = trainer.model.state_dict()
    assert record["kept_iterations"] == 0 and record["train_loss"] is None
    assert all(torch.equal(before[k], after[k]) for k in before if "running" in k)  # no forward pass
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    if coast:  # weight decay through momentum moves every weight
        assert "conv1.weight" in moved and "fc.weight" in moved
    else:
        assert moved == []
