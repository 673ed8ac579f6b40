"""hostops.bncoef_work against the code it counts: contract/bncoef.py's rules (and the inference
affine of host/train/intops.py's BatchNorm) run on arrays that count every numpy call made on
them, for each kind of BatchNorm pass, on realistic sums (apply_plan's exponent loop once)."""
import numpy as np
import pytest

from contract import bncoef, numerics as nx
from host.train import hostops, intops


class Counted(np.ndarray):
    """An array that counts the numpy calls made on it: ufuncs (operators, reductions, methods
    that reduce), the copying methods; what the calls return counts on. ``COUNTING`` turns
    bncoef's and intops' ``np`` into one whose functions count (and return Counted arrays)."""
    calls = 0

    def __array_ufunc__(self, ufunc, method, *inputs, **kw):
        Counted.calls += 1
        if "out" in kw:
            kw["out"] = tuple(map(_plain, kw["out"]))
        return _counted(getattr(ufunc, method)(*map(_plain, inputs), **kw))

    def astype(self, *a, **kw):
        Counted.calls += 1
        return _counted(_plain(self).astype(*a, **kw))

    def copy(self, *a, **kw):
        Counted.calls += 1
        return _counted(_plain(self).copy(*a, **kw))

    def tolist(self):
        Counted.calls += 1
        return _plain(self).tolist()


def _plain(x):
    if isinstance(x, (list, tuple)):
        return type(x)(map(_plain, x))
    return x.view(np.ndarray) if isinstance(x, Counted) else x


def _counted(x):
    return x.view(Counted) if type(x) is np.ndarray else x


class _Numpy:
    """numpy, its functions counted (its types, constants and ufuncs as they are: a ufunc counts
    through the Counted array it takes)."""

    def __getattr__(self, name):
        f = getattr(np, name)
        if not callable(f) or isinstance(f, (type, np.ufunc)):
            return f

        def counted(*args, **kw):
            Counted.calls += 1
            return _counted(f(*map(_plain, args), **{k: _plain(v) for k, v in kw.items()}))
        return counted


COUNTING = _Numpy()


@pytest.fixture
def count(monkeypatch):
    """count(fn) -> the numpy calls fn() makes in bncoef and intops, and how many times apply_plan
    chose coefficients."""
    monkeypatch.setattr(bncoef, "np", COUNTING)
    monkeypatch.setattr(intops, "np", COUNTING)
    rounds = []
    real = bncoef._coefficients
    monkeypatch.setattr(bncoef, "_coefficients", lambda *a: rounds.append(1) or real(*a))

    def run(fn):
        Counted.calls, rounds[:] = 0, []
        fn()
        return Counted.calls, len(rounds)
    return run


def _sums(c, seed=3):
    """STATS SQUARE and PRODUCT sums of conv-like int32 tensors, and their boxes (as Counted)."""
    rng = np.random.default_rng(seed)
    y = np.round(rng.normal(rng.normal(0, 1, (1, c, 1, 1)), 1, (4, c, 5, 5)) * 2 ** 13).astype(np.int32)
    g = np.round(rng.normal(0, 1, y.shape) * 2 ** 20).astype(np.int32)
    t, tg = bncoef.stat_shift(int(np.abs(y).max())), bncoef.stat_shift(int(np.abs(g).max()))
    st, gs = nx.channel_stats(y, t)[0], nx.channel_stats(g, tg, y, t)[0]
    box = np.stack([y.min((0, 2, 3)), y.max((0, 2, 3))], 1).astype(np.int64)
    short = np.stack([np.full(c, -90), np.full(c, 127)], 1)
    e_y = rng.integers(-20, -14, c)
    gamma, beta = rng.uniform(0.5, 1.5, c).astype(np.float32), rng.normal(0, 0.2, c).astype(np.float32)
    return {k: np.asarray(v).view(Counted) for k, v in dict(st=st, gs=gs, box=box, short=short, e_y=e_y, gamma=gamma,
                                                             beta=beta).items()} | {"t": t, "tg": tg, "m": 100}


@pytest.mark.parametrize("c", [16, 64])
def test_each_kind_counts_the_calls_its_code_makes(count, c):
    d = _sums(c)
    zeros = np.zeros(c).view(Counted)

    def fwd(short):
        bncoef.stat_shift(2 ** 20)  # Python integers
        f = bncoef.bn_forward(d["st"], d["t"], d["m"], d["e_y"], d["gamma"], d["beta"], 1e-5)
        m2 = np.full(c, 2.0 ** -6).view(Counted) if short else zeros
        bncoef.apply_plan(f["m1"], m2, f["b0"], nx.ACT, d["box"], d["short"] if short else None, relu=True)

    f = bncoef.bn_forward(d["st"], d["t"], d["m"], d["e_y"], d["gamma"], d["beta"], 1e-5)

    def bwd():
        bncoef.stat_shift(2 ** 31)
        b = bncoef.bn_backward(d["gs"], d["tg"], d["t"], d["m"], -30, d["e_y"], f, d["gamma"])
        bncoef.apply_plan(b["p"], b["q"], b["r"], nx.GRAD, d["gs"][:, 2:4], d["box"])

    def relu_bwd(two):
        bncoef.apply_plan(np.full(c, 2.0 ** -20).view(Counted), np.full(c, 2.0 ** -21).view(Counted) if two else zeros,
                          zeros, nx.OUT, d["gs"][:, 2:4], d["box"] if two else None)

    def evaluate():  # intops' BatchNorm in inference (its STATS answered here), then its ReLU's apply_plan
        y = intops.Ints("y", np.zeros((2, c, 1, 1), np.int32), d["e_y"], bound=2 ** 20)
        p = {"weight": d["gamma"], "bias": d["beta"], "running_mean": np.full(c, 0.1, np.float32).view(Counted),
             "running_var": np.full(c, 2.0, np.float32).view(Counted)}
        w = type("W", (), {"training": False, "p": p, "layers": type("S", (), {"stats": lambda self, *a: d["st"]})()})
        v = intops.IntBatchNorm().forward(w, {"name": "bn", "params": {k: k for k in p}, "eps": 1e-5}, [y])
        (_, m1), = v.terms
        bncoef.apply_plan(m1, zeros, v.b0, nx.ACT, d["box"], None, relu=True)

    runs = {"fwd": [lambda: fwd(False), lambda: fwd(True)], "bwd": [bwd],
            "relu_bwd": [lambda: relu_bwd(False), lambda: relu_bwd(True)], "eval": [evaluate]}
    for kind, fns in runs.items():
        want = hostops.bncoef_work(c, kind)
        for fn in fns:
            calls, rounds = count(fn)
            assert rounds == 1 and calls == want["calls"], (kind, calls)
        assert want["bytes"] == c * hostops.bncoef_work(1, kind)["bytes"] and want["flops"]["f64"] > 0


def test_the_kinds_are_their_rules():
    """A kind is its rules' sum; stat_shift makes no numpy call; the counts by hand: bn_forward 22
    calls (moments 8), bn_backward 26, apply_plan 36 (34 after a ReLU: only the top of the box; 7 of
    them for a 0 operand's multiplier and the exponent the multipliers allow)."""
    calls = {rule: hostops.bncoef_work(8, rule)["calls"] for rule in hostops.BNCOEF}
    assert calls == {"bn_forward": 22, "bn_backward": 26, "apply_plan": 36, "apply_plan, relu": 34,
                     "running_affine": 12}
    for kind, rules in hostops.BNCOEF_KINDS.items():
        assert hostops.bncoef_work(8, kind) == hostops.passes(8, *(p for r in rules for p in hostops.BNCOEF[r]))
