"""The host's numpy work on two cores (the PYNQ-Z2's Cortex-A9 has two; so do most machines).

numpy releases the GIL inside its loops, so an elementwise chain split into two runs of images,
or two independent reductions, run side by side on one worker thread and the caller's. Every
element and every sum is computed exactly as on one thread (a reduction is never split), so
the results are bit-identical either way. ``E2T_HOST_THREADS=1`` keeps everything on one thread.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

MIN_ELEMENTS = 1 << 16  # below this a hand-off to the worker costs more than it saves
CPUS = os.cpu_count() or 1
_pool: ThreadPoolExecutor | None = None


def threads() -> int:
    """1 or 2: the threads the host's numpy work uses."""
    value = os.environ.get("E2T_HOST_THREADS")
    return 1 if (int(value) if value else CPUS) < 2 else 2


def _worker() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(1, thread_name_prefix="e2t-host")
    return _pool


def _forget_worker() -> None:  # a forked child has no worker thread: it makes its own
    global _pool
    _pool = None


os.register_at_fork(after_in_child=_forget_worker)


def pair(f, g, size: int):
    """(f(), g()): g on the worker where there are two threads and ``size`` (elements) is worth it."""
    if size < MIN_ELEMENTS or threads() < 2:
        return f(), g()
    later = _worker().submit(g)
    return f(), later.result()


def halves(fn, n: int, size: int) -> None:
    """fn(0, h) here and fn(h, n) on the worker (h = n / 2: runs of images), or fn(0, n) alone
    for small work or one thread. fn must touch only its own images."""
    if n < 2 or size < MIN_ELEMENTS or threads() < 2:
        fn(0, n)
        return
    h = n // 2
    later = _worker().submit(fn, h, n)
    fn(0, h)
    later.result()


def ufunc(op, a, b, dtype) -> np.ndarray:
    """op(a, b) as ``dtype`` for a binary numpy ufunc (np.add, np.multiply, ...), a an array and
    b an array of its shape or a scalar, the images on two threads."""
    a = np.asarray(a)
    whole = np.ndim(b) == 0
    if not a.ndim or not (whole or np.shape(b) == a.shape):
        return op(a, b).astype(dtype, copy=False)
    out = np.empty(a.shape, dtype)
    halves(lambda i, j: op(a[i:j], b if whole else b[i:j], out=out[i:j]), len(a), a.size)
    return out


def take(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """x[rows] (rows: indices along axis 0), the rows copied on two threads."""
    out = np.empty((len(rows), *x.shape[1:]), x.dtype)
    halves(lambda i, j: np.take(x, rows[i:j], axis=0, out=out[i:j]), len(rows), out.size)
    return out


def copy(x: np.ndarray) -> np.ndarray:
    """x.copy(), on two threads."""
    x = np.asarray(x)
    if not x.ndim:
        return x.copy()
    out = np.empty_like(x)
    halves(lambda i, j: np.copyto(out[i:j], x[i:j]), len(x), x.size)
    return out


def scatter(x: np.ndarray, rows: np.ndarray, n: int) -> np.ndarray:
    """An n-row float32 array of zeros with x's rows at ``rows``, on two threads."""
    out = np.zeros((n, *x.shape[1:]), np.float32)

    def part(i, j):
        out[rows[i:j]] = x[i:j]

    halves(part, len(rows), x.size)
    return out
