"""Per-frame work on worker threads while the caller goes on, results handed back in submission order.

OpenCV, NumPy, SciPy and PyTorch release the GIL in their heavy calls, so threads overlap a batch's
network pass with the previous batch's PNG encoding (`predict`) or metrics (`evaluate`) without copying
frames between processes (benchmarks/NOTES.md 42, 45).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor


class InOrder:
    """`submit(fn, *args)` runs on one of `workers` threads; each result goes to `done` (if given) in the
    order of submission. At most `ahead` calls wait or run at once, so memory stays bounded. Leaving the
    `with` block waits for every call and raises the first error; leaving it on an error cancels the rest."""

    def __init__(self, workers: int = 1, ahead: int = 8, done: Callable | None = None):
        self.ahead = max(1, ahead)
        self.done = done
        self.pool = ThreadPoolExecutor(max_workers=max(1, workers))
        self.pending: deque = deque()

    def submit(self, fn: Callable, *args) -> None:
        self.pending.append(self.pool.submit(fn, *args))
        while len(self.pending) > self.ahead:
            self._finish_one()

    def _finish_one(self) -> None:
        result = self.pending.popleft().result()
        if self.done is not None:
            self.done(result)

    def __enter__(self) -> InOrder:
        return self

    def __exit__(self, exc_type, *_) -> None:
        try:
            while self.pending and exc_type is None:
                self._finish_one()
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)
