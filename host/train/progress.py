"""A dependency-free progress line for long loops (redrawn on a terminal, sparse in logs)."""
from __future__ import annotations

import sys
import time


class Progress:
    """``with Progress(total, "epoch 3") as bar: bar.update(loss=0.1)``."""

    def __init__(self, total: int, desc: str, stream=None, enabled: bool = True):
        self.total, self.desc, self.n = total, desc, 0
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.perf_counter()
        self._last_logged = -1

    def update(self, n: int = 1, **postfix) -> None:
        self.n += n
        if not self.enabled:
            return
        decile = 10 * self.n // max(self.total, 1)
        if not self.tty and decile == self._last_logged:
            return
        self._last_logged = decile
        elapsed = time.perf_counter() - self.start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.n) / rate if rate > 0 else 0.0
        info = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in postfix.items())
        line = f"{self.desc} {self.n}/{self.total} [{elapsed:.0f}s<{eta:.0f}s, {rate:.2f} it/s] {info}"
        self.stream.write(("\r" + line + "\033[K") if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
