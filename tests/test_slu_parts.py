"""SLU's gradient parts on contract v2 (host/train/intops.py): a gated block's input gradient
(``Spread``) and the mix's shortcut gradient (``Masked``) are not written; where they meet, the
two APPLYs on their own rows give the integers, planes and ranges of the one APPLY of both written
whole, at every number of picked images, the first and the last rows, the int32 extremes and
under ReLU's mask; ``join_steps`` says how any list of parts is joined."""
from types import SimpleNamespace

import numpy as np
import pytest

from host.train import intops
from host.train.config import TrainConfig
from host.train.intops import Ints, Masked, Spread, join_steps
from host.train.trainer import EngineTrainer

N = 16
I32 = np.iinfo(np.int32)


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    cfg = TrainConfig(backend="emu", model="resnet8", dataset="digits", epochs=1, batch_size=N, precision="fixed",
                      elementwise="engine")
    t = EngineTrainer(cfg, str(tmp_path_factory.mktemp("slu") / "run"), progress=False, log=lambda m: None)
    return t.session, next(op for op in t.plan.ops if op["type"] == "relu")


def _ints(s, name, q, e):
    buf = s.tensor(name, q.dtype, q.shape[1:], len(q))
    buf[...] = q
    c = q.shape[1]
    lo, hi = q.min((0, 2, 3)).astype(np.int64), q.max((0, 2, 3)).astype(np.int64)
    return Ints(name, buf, np.full(c, e, np.int64), lo, hi)


def _grad(rng, n, extremes):
    q = rng.integers(-5000, 5000, (n, 3, 4, 5)).astype(np.int32)
    if extremes:  # the int32 extremes in the first and the last image
        q[0, :, 0, 0], q[-1, :, -1, -1] = I32.min, I32.max
    return q


@pytest.mark.parametrize("k", [1, 2, 7, N - 1, N])
@pytest.mark.parametrize("order", ["masked first", "spread first"])
@pytest.mark.parametrize("masked_by_relu", [False, True])
def test_a_masked_and_a_spread_join_apart_as_written_whole(session, k, order, masked_by_relu):
    s, op = session
    rng = np.random.default_rng(k * 4 + len(order) + masked_by_relu)
    picks = np.array([0, N - 1]) if k == 2 else np.sort(rng.choice(N, k, replace=False))  # 2: the first and last
    w = SimpleNamespace(layers=s)
    full = _ints(s, f"t.full.{k}", _grad(rng, N, True), -20)
    rows = _ints(s, f"t.rows.{k}", _grad(rng, k, k > 1), -17)
    mask = None
    if masked_by_relu:
        mask = _ints(s, f"t.mask.{k}", rng.integers(-3, 4, (N, 3, 4, 5)).astype(np.int8), 0)
    lazy = [Masked(full, picks), Spread(rows, picks, N)]
    if order == "spread first":
        lazy.reverse()
    sat, calls = s.counts["saturations"], s.counts["ops_apply"]
    got = intops._join(w, op, lazy, f"t.lazy.{k}", mask)
    assert s.counts["ops_apply"] == calls + 2  # apart: an APPLY on each part's own rows
    whole = intops._join(w, op, [intops._whole(w, p) for p in lazy], f"t.whole.{k}", mask)
    assert s.counts["saturations"] == sat
    assert np.array_equal(got.q, whole.q) and np.array_equal(got.planes, whole.planes)
    assert np.array_equal(got.lo, whole.lo) and np.array_equal(got.hi, whole.hi) and got.exponent == whole.exponent


def test_a_lazy_part_written_whole_holds_its_rows_and_zeros(session):
    s, _ = session
    rng = np.random.default_rng(1)
    w = SimpleNamespace(layers=s)
    picks = np.array([0, 3, 4, N - 1])
    full = _ints(s, "w.full", _grad(rng, N, True), 0)
    rows = _ints(s, "w.rows", _grad(rng, len(picks), True), 0)
    spread, masked = intops._whole(w, Spread(rows, picks, N)), intops._whole(w, Masked(full, picks))
    others = np.setdiff1d(np.arange(N), picks)
    assert np.array_equal(spread.q[picks], rows.q) and not spread.q[others].any()
    assert np.array_equal(masked.q[others], full.q[others]) and not masked.q[picks].any()
    assert np.array_equal(spread.lo, np.minimum(rows.lo, 0)) and np.array_equal(masked.hi, np.maximum(full.hi, 0))


M, S, I = ("masked", 5), ("spread", 5), ("ints",)


@pytest.mark.parametrize("kinds, keep, steps", [
    ((M, S), 2, [("apart", 5, True)]),
    ((S, M), 1, [("apart", 5, False), ("whole", I)]),
    ((M, S, S, I), 2, [("apart", 5, False), ("whole", I), ("whole", S), ("join", 2, False),
                       ("whole", I), ("whole", I), ("join", 2, True)]),
    ((M, S, S, I), 1, [("apart", 5, False), ("whole", I), ("whole", S), ("join", 2, False),
                       ("whole", I), ("whole", I), ("join", 2, False), ("whole", I)]),
    ((M,), 2, [("whole", M), ("join", 1, True)]),
    ((M,), 1, [("whole", M)]),
    ((S, S), 2, [("whole", S), ("whole", S), ("join", 2, True)]),
    ((M, ("spread", 4)), 1, [("whole", M), ("whole", ("spread", 4)), ("join", 2, False), ("whole", I)]),
])
def test_join_steps_pairs_a_masked_and_a_spread_of_one_gate_only(kinds, keep, steps):
    assert join_steps(kinds, keep) == steps
