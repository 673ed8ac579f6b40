"""contract/parallel.py: the host's numpy work on two threads gives the bits one thread gives, on
odd batches and below and above the hand-off size, and the worker really takes half."""
import threading

import numpy as np
import pytest

from contract import numerics as nx, parallel
from host.train import hostops, walk

F32 = np.float32


def _both(monkeypatch, fn):
    """fn() on one thread and on two, as tuples."""
    out = []
    for threads in ("1", "2"):
        monkeypatch.setenv("E2T_HOST_THREADS", threads)
        r = fn()
        out.append(r if isinstance(r, tuple) else (r,))
    return out


def _same(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype.kind == "f":
        bits = np.uint32 if a.dtype == F32 else np.uint64
        a, b = a.view(bits), b.view(bits)
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)


@pytest.mark.parametrize("n", [1, 5, 129])
def test_two_threads_give_one_thread_s_bits(monkeypatch, n):
    rng = np.random.default_rng(n)
    shape = (n, 16, 32, 32)  # 16,384 elements an image: one stays on one thread; 5 split 2 + 3
    x = (rng.standard_normal(shape) * np.exp2(rng.integers(-30, 30, shape))).astype(F32)
    g = rng.standard_normal(shape).astype(F32)
    gamma, beta, invstd = (rng.standard_normal(16).astype(F32) for _ in range(3))
    y = rng.integers(-2**31, 2**31, shape).astype(np.int32)
    e_channel = np.arange(16).reshape(1, -1, 1, 1) - 20
    for fn in (lambda: hostops.bn_train(x, gamma, beta, 1e-5),
               lambda: hostops.bn_backward(g, x, invstd, gamma),
               lambda: nx.quantize_tensor(x, nx.ACT, np.int8)[:2],
               lambda: nx.quantize_tensor(g, nx.GRAD, np.int16)[:2],
               lambda: nx.dequantize(y, e_channel),
               lambda: nx.dequantize(y, -7),
               lambda: parallel.ufunc(np.maximum, x, F32(0), F32),
               lambda: parallel.ufunc(np.greater, x, F32(0), bool),
               lambda: parallel.ufunc(np.add, x, g, F32),
               lambda: parallel.ufunc(np.multiply, g, x > 0, F32),
               lambda: hostops.avgpool(x),
               lambda: parallel.take(x, np.flatnonzero(np.arange(n) % 3 != 1)),
               lambda: parallel.scatter(g[: (n + 1) // 2], np.arange(0, n, 2), n),
               lambda: parallel.copy(x),
               lambda: walk.gradient_sum([x, g, -x, 2 * g])):
        one, two = _both(monkeypatch, fn)
        assert len(one) == len(two) and all(_same(a, b) for a, b in zip(one, two))


def test_the_worker_takes_the_second_half_and_small_work_stays(monkeypatch):
    monkeypatch.setenv("E2T_HOST_THREADS", "2")
    seen = []
    parallel.halves(lambda a, b: seen.append((a, b, threading.current_thread().name)), 10, parallel.MIN_ELEMENTS)
    assert sorted(s[:2] for s in seen) == [(0, 5), (5, 10)]
    assert {s[2].startswith("e2t-host") for s in seen} == {True, False}
    seen.clear()
    parallel.halves(lambda a, b: seen.append((a, b)), 10, parallel.MIN_ELEMENTS - 1)
    assert seen == [(0, 10)]
    monkeypatch.setenv("E2T_HOST_THREADS", "1")
    seen.clear()
    parallel.halves(lambda a, b: seen.append((a, b)), 10, 10 * parallel.MIN_ELEMENTS)
    assert seen == [(0, 10)] and parallel.threads() == 1
    assert parallel.pair(lambda: 1, lambda: 2, 0) == (1, 2)


def test_a_forked_child_makes_its_own_worker(monkeypatch):
    import os
    import signal
    monkeypatch.setenv("E2T_HOST_THREADS", "2")
    x = np.arange(4 * parallel.MIN_ELEMENTS, dtype=F32).reshape(4, -1)
    parallel.copy(x)  # the parent's worker exists now
    pid = os.fork()
    if pid == 0:  # the child: a hang ends in SIGALRM after 10 s, a wrong copy exits 1
        signal.alarm(10)
        os._exit(0 if np.array_equal(parallel.copy(x), x) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, "the forked child hung or copied wrong"
