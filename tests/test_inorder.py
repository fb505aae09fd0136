"""InOrder: work on threads, results back in submission order, the first error raised, memory bounded."""

from __future__ import annotations

import threading
import time

import pytest

from polypseg.inorder import InOrder


def test_results_come_back_in_submission_order_with_several_workers():
    got = []

    def slow_first(i):
        time.sleep(0.02 if i % 4 == 0 else 0.0)  # later calls finish before earlier ones
        return i, threading.get_ident()

    with InOrder(workers=4, ahead=6, done=got.append) as work:
        for i in range(40):
            work.submit(slow_first, i)
    assert [i for i, _ in got] == list(range(40))
    assert len({t for _, t in got}) > 1  # it really ran on several threads


def test_at_most_ahead_calls_are_outstanding():
    running, peak, lock = [0], [0], threading.Lock()

    def job(_):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.005)
        with lock:
            running[0] -= 1

    with InOrder(workers=8, ahead=3) as work:
        for i in range(30):
            work.submit(job, i)
    assert 1 <= peak[0] <= 4  # `ahead` waiting plus the one just submitted


def test_the_first_error_is_raised_and_the_rest_cancelled():
    calls = []

    def fail(i):
        calls.append(i)
        raise OSError(f"disk full at {i}")

    with pytest.raises(OSError, match="disk full at 0"), InOrder(workers=1, ahead=2) as work:
        for i in range(50):
            work.submit(fail, i)
    assert len(calls) < 50
