"""Simulated time: the manual clock for tests and a sans-I/O timer queue."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable

__all__ = ["ManualClock", "TimerHandle", "Timers"]


class ManualClock:
    """A simulated clock that moves only when told to.

    Pass one to `Simulator(clock=...)`; every `advance` runs whatever the simulator had due up
    to the new time (pages, pings, webhook retries) before it returns, so tests need not sleep::

        clock = ManualClock()
        sim = Simulator(clock=clock)
        clock.advance(10)   # ten simulated seconds of job progress, immediately
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._listeners: list[Callable[[], None]] = []

    def __call__(self) -> float:
        """Return the current simulated time in seconds."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by `seconds` and let every listener catch up."""
        if seconds < 0:
            raise ValueError(f"cannot move time backwards ({seconds} s)")
        self._now += seconds
        for listener in list(self._listeners):
            listener()

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call `listener` after every `advance` (the simulator registers its engine here)."""
        self._listeners.append(listener)


class TimerHandle:
    """A scheduled callback; `cancel` stops it from running."""

    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        """Do not run the callback."""
        self.cancelled = True


class Timers:
    """Callbacks due at simulated times, run in time order by `run_due`."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, TimerHandle, Callable[[], None]]] = []
        self._seq = itertools.count()

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        """Run `callback` once simulated time reaches `when`."""
        handle = TimerHandle()
        heapq.heappush(self._heap, (when, next(self._seq), handle, callback))
        return handle

    def next_deadline(self) -> float | None:
        """The earliest pending time, or None."""
        while self._heap and self._heap[0][2].cancelled:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def run_due(self, now: float) -> None:
        """Run, in order, every callback due at or before `now`."""
        while (deadline := self.next_deadline()) is not None and deadline <= now:
            _, _, handle, callback = heapq.heappop(self._heap)
            callback()
