"""Admission control: a bound on inference requests running or queued, across HTTP processes.

The counter lives in shared memory made by the main process before LitServe
forks its HTTP processes, so the bound holds for the whole server. A request
over the bound is answered 503 at once, with ``Retry-After`` set to the
recent time an admitted request took (rounded up): by then a slot has
usually freed.
"""

from __future__ import annotations

import math
import multiprocessing as mp

_SMOOTHING = 0.2  # weight of the newest request in the moving average


class Admission:
    def __init__(self, limit: int):
        if limit < 1:
            raise ValueError(f"the admission limit must be at least 1, got {limit}")
        self.limit = limit
        self._count = mp.Value("i", 0)
        self._seconds = mp.Value("d", 1.0, lock=False)  # written under _count's lock

    def try_enter(self) -> bool:
        with self._count.get_lock():
            if self._count.value >= self.limit:
                return False
            self._count.value += 1
            return True

    def leave(self, seconds: float) -> None:
        with self._count.get_lock():
            self._count.value -= 1
            self._seconds.value += _SMOOTHING * (seconds - self._seconds.value)

    @property
    def in_flight(self) -> int:
        return self._count.value

    def retry_after(self) -> int:
        return max(1, math.ceil(self._seconds.value))
