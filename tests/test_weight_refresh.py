"""The weights' refresh on the engine (contract v2, contract/weightrefresh.py): one STATS and three
APPLY calls give exactly the int8 weights, shifts and bounds of the host's refresh
(numerics.renormalize, weights_for_use, fwd_bound, bwd_data_bound), on every conv shape of a
gated ResNet-8 and at each limit: shifts 23 apart (the largest multiplier) and 24 (refused: the
host refreshes), rows aligned by a right shift, zero rows, a master at 2^30 - 1 and at 2^30 (the
host renormalizes); a row that fits no plane. A v2 training step gives the same state either way."""
import numpy as np
import pytest

from contract import numerics as nx, weightrefresh as wr
from contract.boards import board
from host.engine.emulated import EmulatedOverlay
from host.engine.session import EngineSession
from host.plan import planbuild
from host.train.config import TrainConfig
from host.train.trainer import EngineTrainer

TOP = 1 << nx.MASTER_RENORM_BITS


@pytest.fixture(scope="module")
def session():
    plan, _, arrays = planbuild.from_model("resnet8", 1, 10, 32, "pynq-z2", 8, seed=2, slu=True)
    return EngineSession(plan, arrays, EmulatedOverlay("pynq-z2", log=lambda m: None))


def _both(s, op, master: np.ndarray) -> tuple:
    """(host's, engine's) refresh of ``master``: weights, shifts, exponents, bounds, and whether the
    engine took it; the saturations the engine counted."""
    e_w, out = op["w_exp"], []
    for engine in (False, True):
        s.buffer(op, "master")[...] = master
        s.buffer(op, "wgt")[...] = 0
        s.buffer(op, "wshift")[...] = 0
        op["w_exp"] = e_w
        sat = s.counts["saturations"]
        took = s.refresh_on_engine(op) if engine else s.refresh_weights(op) or False
        if engine and not took:
            s.refresh_weights(op)
        out.append((s.buffer(op, "wgt").copy(), s.buffer(op, "wshift").copy(), s.buffer(op, "master").copy(),
                    op["w_exp"], op["wq_exp"], s._bounds[op["name"]], took, s.counts["saturations"] - sat))
    return tuple(out)


def _same(host, engine) -> bool:
    return all(np.array_equal(a, b) for a, b in zip(host[:3], engine[:3])) and host[3:6] == engine[3:6]


def test_every_conv_shape_on_random_masters(session):
    rng = np.random.default_rng(0)
    seen = set()
    for op in session.plan.convs():
        shape = session.buffer(op, "master").shape
        scale = rng.integers(0, 29, shape[0])  # each row its own magnitude, one of them zero
        master = rng.integers(-(1 << 20), 1 << 20, shape) >> (20 - scale.reshape(-1, 1, 1, 1) % 21)
        master[rng.integers(shape[0])] = 0
        host, engine = _both(session, op, master)
        assert engine[6] and _same(host, engine) and engine[7] == 0, op["name"]
        seen.add((op["k"], op["role"]))
    assert {(1, "gate"), (3, "stem"), (1, "shortcut"), (3, "residual")} <= seen


@pytest.mark.parametrize("top, low, took", [
    (TOP - (1 << 22) - 1, 0, True),   # shifts 23 and 0: the multiplier 2^23, the largest
    (TOP - (1 << 22), 0, False),      # shifts 24 and 0: 2^24 refused, the host refreshes
    (TOP - (1 << 22), 128, True),     # shifts 24 and 1
    (TOP - 1, 5, False),              # shifts 24 and 0
    (TOP, 1 << 20, False),            # 2^30: renormalized, on the host
    (-TOP, 1 << 20, False),
    (1 << 29, 1 << 9, True),          # a row aligned by a right shift (shifts 23 and 3, 12 apart + 8)
    (0, 0, True),                     # all zero
])
def test_the_limits(session, top, low, took):
    op = next(o for o in session.plan.convs() if o["name"] == "blocks.2.conv2")
    rng = np.random.default_rng(1)
    master = rng.integers(-abs(low), abs(low) + 1, session.buffer(op, "master").shape)
    master[:, 0, 0, 0] = abs(low)  # every row's largest magnitude at least ``low``
    master[3, 5, 1, 1] = top
    master[7] = np.clip(master[7], -(1 << 9), 1 << 9)
    host, engine = _both(session, op, master)
    assert engine[6] == took and _same(host, engine) and engine[7] == 0


def test_a_renormalized_master_is_shifted_on_the_host(session):
    op = next(o for o in session.plan.convs() if o["name"] == "blocks.1.conv1")
    master = np.zeros(session.buffer(op, "master").shape, np.int64)
    master[0, 0, 0, 0], master[1, 0, 0, 0] = TOP, 3
    e_w = op["w_exp"]
    host, engine = _both(session, op, master)
    assert not engine[6] and _same(host, engine) and engine[3] == e_w + 1 and engine[2][0, 0, 0, 0] == TOP // 2
    op["w_exp"] = e_w


def test_views_at_the_engine_s_limits():
    b = board("pynq-z2")
    assert wr.row_view(64, 32 * 32, b) == (32, 32) and wr.row_view(64, 27, b) == (1, 27)
    assert wr.row_view(64, 576, b) == (18, 32) and wr.row_view(64, 32 * 33, b) is None  # 1056 > 32 x 32
    assert wr.row_view(64, 37, b) is None and wr.row_view(65, 27, b) is None  # a prime past 32; too many rows
    op = {"c_out": 64, "c_in": 64, "k": 3}
    assert wr.views(op, b) == ((1, 64, 18, 32), (64, 64, 3, 3))
    assert wr.views({**op, "c_in": 65}, b) is None and wr.views({**op, "k": 33}, b) is None


def test_a_v2_step_gives_the_same_state_with_the_refresh_on_the_host(tmp_path, monkeypatch):
    cfg = TrainConfig(model="resnet8", dataset="digits", epochs=1, batch_size=16, precision="fixed", psg=True,
                      backend="emu", elementwise="engine", slu_target=0.6, slu_gate_init=0.9)
    states = []
    for on_engine in (True, False):
        if not on_engine:
            monkeypatch.setattr(EngineSession, "refresh_on_engine", lambda self, op: False)
        t = EngineTrainer(cfg, str(tmp_path / str(on_engine)), progress=False, log=lambda m: None)
        t.iters_per_epoch = 3
        r = t.train_epoch()
        states.append(({**t.session.arrays(), **t.params}, r["engine"]["ops_stats"]))
    (a, stats_a), (b, stats_b) = states
    assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)
    assert stats_a > stats_b  # the refresh's STATS ran on the engine in the first
