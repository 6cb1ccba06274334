"""The shared request budget of a Watcher: requests per minute over a sliding window.

:class:`RequestBudget` is sans-I/O: every method takes ``now`` (seconds on any monotonic clock)
and nothing reads a clock. It counts requests the way Reader does — at most ``rpm`` requests in
any window of ``window`` seconds — and keeps a small safety margin so that the server never sees
more: the window it enforces is ``window + margin`` seconds long. A request is counted when the
client sends it and when the server receives it, a little later; as long as that lag varies by
less than ``margin`` between two requests, no server-side window holds more than ``rpm``
requests, even when the client fills its own budget to the last request.

A 429 with ``Retry-After`` stops every caller: :meth:`RequestBudget.pause` holds the budget
until a given time. The thin async shell, :meth:`RequestBudget.acquire`, sleeps with anyio's
clock until a request may go and takes it::

    budget = RequestBudget(rpm=60)
    await budget.acquire()          # within a running anyio/trio/asyncio loop
    response = await client.get(...)
    if response.status_code == 429:
        budget.pause(anyio.current_time() + retry_after)

Used by the Watcher for every request it makes on behalf of any transport (polls, results,
reconciles, stream openings) and by the poll scheduler to plan within the budget.
"""

from __future__ import annotations

from collections import deque

import anyio

__all__ = ["RequestBudget"]

#: Seconds added to the window by default: the slack for server-side timing jitter.
DEFAULT_MARGIN = 1.0


#: Clock readings closer than this (seconds) are the same moment; far below the margin.
_SAME_MOMENT = 1e-9


class RequestBudget:
    """At most ``rpm`` requests in any ``window + margin`` seconds, and pauses for 429s.

    ``rpm`` must be at least 1, ``window`` positive, ``margin`` non-negative. The methods take
    ``now`` from one monotonic clock (``anyio.current_time()`` in the async shell); times must
    not go backwards between calls.
    """

    def __init__(self, rpm: int, window: float = 60.0, *, margin: float = DEFAULT_MARGIN) -> None:
        if isinstance(rpm, bool) or not isinstance(rpm, int) or rpm < 1:
            raise ValueError(f"rpm must be a positive integer, got {rpm!r}")
        if window <= 0 or margin < 0:
            raise ValueError(f"window must be > 0 and margin >= 0, got {window!r}, {margin!r}")
        self.rpm = rpm
        self.window = window
        self.margin = margin
        self._span = window + margin
        self._taken: deque[float] = deque()
        self._paused_until = float("-inf")

    def __repr__(self) -> str:
        return f"RequestBudget(rpm={self.rpm}, window={self.window}, margin={self.margin})"

    @property
    def paused_until(self) -> float:
        """The time before which no request may go (``-inf`` when never paused)."""
        return self._paused_until

    def _expire(self, now: float) -> None:
        # A request taken at t counts against every window that still contains t. Times
        # within _SAME_MOMENT count as one: `now + delay(now)`, summed in floats, may land a
        # few units of the last place before the moment a slot frees.
        while self._taken and self._taken[0] <= now - self._span + _SAME_MOMENT:
            self._taken.popleft()

    def used(self, now: float) -> int:
        """Requests counted in the window that ends at ``now``."""
        self._expire(now)
        return len(self._taken)

    def available(self, now: float) -> int:
        """Requests that may go at ``now`` without waiting (0 while paused)."""
        if now < self._paused_until:
            return 0
        return self.rpm - self.used(now)

    def delay(self, now: float) -> float:
        """Seconds from ``now`` until one request may go; 0.0 when it may go now."""
        wait = self._paused_until - now
        self._expire(now)
        if len(self._taken) >= self.rpm:
            # The oldest request that keeps the window full must leave it first.
            oldest = self._taken[len(self._taken) - self.rpm]
            wait = max(wait, oldest + self._span - now)
        return wait if wait > _SAME_MOMENT else 0.0

    def take(self, now: float) -> None:
        """Count one request sent at ``now``; call it only when ``delay(now)`` is 0."""
        if self.delay(now) > 0:
            raise RuntimeError(
                f"request budget exhausted at {now}: {self.used(now)} of {self.rpm} used, "
                f"next slot in {self.delay(now):.3f} s; wait for delay() before take()"
            )
        self._taken.append(now)

    def pause(self, until: float) -> None:
        """Let no request go before ``until`` (a 429's ``Retry-After``); never shortens a pause."""
        self._paused_until = max(self._paused_until, until)

    def next_free(self, now: float, n: int) -> float:
        """The earliest time at or after ``now`` when the ``n``-th next request could go.

        ``n`` = 1 is ``now + delay(now)``. The scheduler uses it to see how far out the budget
        pushes the next few polls, assuming no other request is taken meanwhile.
        """
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n!r}")
        self._expire(now)
        times = list(self._taken)
        at = max(now, self._paused_until)
        for _ in range(n):
            if len(times) >= self.rpm:
                at = max(at, times[-self.rpm] + self._span)
            times.append(at)
        return at

    async def acquire(self) -> None:
        """Wait (anyio time) until a request may go, and take it.

        Checking and taking happen with no await between them, so concurrent callers of one
        event loop never overdraw the budget; a :meth:`pause` made while a caller sleeps is
        honoured when it wakes.
        """
        while True:
            now = anyio.current_time()
            wait = self.delay(now)
            if wait <= 0:
                self.take(now)
                return
            await anyio.sleep(wait)


async def acquire(budget: RequestBudget) -> None:
    """Wait until ``budget`` allows a request and take it (same as ``budget.acquire()``)."""
    await budget.acquire()
