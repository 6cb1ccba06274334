"""The shared request budget of a Watcher: what the configuration allows, tightened by the API.

:class:`RequestBudget` is sans-I/O: every method takes ``now`` (seconds on any monotonic clock)
and nothing reads a clock. Three things hold a request back:

- **Windows.** At most ``capacity`` requests in any ``window + margin`` seconds, for each
  window configured (``rpm``: 60 seconds; ``rph``: an hour). A request is counted when the
  client sends it and when the server receives it, a little later; as long as that lag varies
  by less than ``margin`` between two requests, no server-side window holds more than
  ``capacity`` requests, even when the client fills its own budget to the last request.
- **Pauses.** A rate-limited answer stops every caller: :meth:`RequestBudget.rate_limited`
  holds the budget for the wait the API asked for, or — when it named none — for a backoff
  that doubles with each such answer in a row (1 s, 2 s, 4 s ... up to a minute).
- **What the API says.** :meth:`RequestBudget.observe` reads the rate-limit headers of every
  response (as the provider parsed them): ``remaining`` N with a ``reset`` allows at most N
  more requests until the reset — fewer the requests already sent after the one that learnt
  it — so ``remaining`` 0 pauses until the reset; a ``limit`` lowers the capacity of every
  window no longer than the time to the reset (the API's own window is at least that long, so
  such a window can never hold more than the limit).

The thin async shell, :meth:`RequestBudget.acquire`, sleeps with anyio's clock until a request
may go and takes it; :class:`~jobwatch._api.APIClient` does the rest for every request::

    budget = RequestBudget(5000, 3600.0)       # an hourly budget
    ticket = await budget.acquire()            # within a running anyio/trio/asyncio loop
    response = await client.get(...)
    budget.observe(anyio.current_time(), ticket, verdict.rate_limit)
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from typing import Self

import anyio
import attrs

from ._config import Config
from ._errors import ConfigError
from ._http import RateLimit

__all__ = ["BudgetOptions", "RequestBudget"]

#: Seconds added to every window by default: the slack for server-side timing jitter.
DEFAULT_MARGIN = 1.0
#: The first and the longest pause for rate-limited answers that name no wait, seconds.
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0

#: Clock readings closer than this (seconds) are the same moment; far below the margin.
_SAME_MOMENT = 1e-9


@attrs.frozen(kw_only=True)
class BudgetOptions:
    """The request budget's keys, read from ``[jobwatch.poll]`` (where ``rpm`` has always been).

    ``rpm``: requests per minute this Watcher may make in all. ``rph``: requests per hour, for
    APIs with hourly budgets (GitHub: 5000); unset, there is no hourly cap. Both hold at once.
    """

    rpm: int = 60
    rph: int | None = None

    def check(self, table: str = "[jobwatch.poll]") -> Self:
        """Return the options, or raise ConfigError naming the key that is out of range."""
        for key, per in (("rpm", "a minute"), ("rph", "an hour")):
            value = getattr(self, key)
            if value is not None and not value > 0:
                raise ConfigError(
                    f"{table} {key} must be a positive number of requests {per}, got {value!r}"
                )
        return self

    @classmethod
    def from_config(cls, config: Config) -> BudgetOptions:
        """The budget's keys of ``[jobwatch.poll]``; the poll transport checks the others."""
        names = {field.name for field in attrs.fields(cls)}
        own = {k: v for k, v in config.table("poll").items() if k in names}
        options = attrs.evolve(config, tables={**config.tables, "poll": own}).options("poll", cls)
        with config.naming_source():
            options.check()
        return options

    def budget(self) -> RequestBudget:
        """A fresh budget with these limits."""
        hourly = () if self.rph is None else ((self.rph, 3600.0),)
        return RequestBudget(self.rpm, 60.0, also=hourly)


@attrs.define
class _Window:
    """One sliding window: the send times of the requests it still counts."""

    capacity: int
    span: float
    taken: deque[float] = attrs.Factory(deque)

    def expire(self, now: float) -> None:
        # A request taken at t counts against every window that still contains t. Times
        # within _SAME_MOMENT count as one: `now + delay(now)`, summed in floats, may land a
        # few units of the last place before the moment a slot frees.
        while self.taken and self.taken[0] <= now - self.span + _SAME_MOMENT:
            self.taken.popleft()

    def free_at(self, times: deque[float] | list[float]) -> float:
        """When the next request fits, given the times counted (-inf: now)."""
        if len(times) < self.capacity:
            return -math.inf
        # The oldest request that keeps the window full must leave it first.
        return times[len(times) - self.capacity] + self.span


class RequestBudget:
    """At most ``capacity`` requests in any ``window + margin`` seconds (and in each of the
    ``also`` windows, ``(capacity, window)`` pairs), paused while the API is rate limited and
    tightened by what its answers say; see the module docstring.

    ``capacity`` must be at least 1, ``window`` positive, ``margin`` non-negative. The methods
    take ``now`` from one monotonic clock (``anyio.current_time()`` in the async shell); times
    must not go backwards between calls.
    """

    def __init__(
        self,
        capacity: int,
        window: float = 60.0,
        *,
        margin: float = DEFAULT_MARGIN,
        also: Iterable[tuple[int, float]] = (),
    ) -> None:
        if window <= 0 or margin < 0:
            raise ValueError(f"window must be > 0 and margin >= 0, got {window!r}, {margin!r}")
        limits = [(capacity, window), *also]
        for size, span in limits:
            if isinstance(size, bool) or not isinstance(size, int) or size < 1 or not span > 0:
                raise ValueError(
                    f"a budget of capacity {size!r} per {span!r} s: the capacity "
                    "must be a positive integer and the window > 0 seconds"
                )
        self.capacity = capacity
        self.window = window
        self.margin = margin
        self._windows = [_Window(size, span + margin) for size, span in limits]
        self._configured = tuple(limits)
        self._paused_until = -math.inf
        self._backoff = 0.0
        self._tickets = 0
        # What the API said: no request beyond ticket `_allowed` before `_reset_at`.
        self._allowed = 0
        self._reset_at = -math.inf

    def __repr__(self) -> str:
        also = "".join(f", also=({c}, {w:g})" for c, w in self._configured[1:])
        return (
            f"RequestBudget(capacity={self.capacity}, window={self.window:g}, "
            f"margin={self.margin:g}{also})"
        )

    @property
    def limits(self) -> tuple[tuple[int, float], ...]:
        """Every window as ``(capacity, seconds)``, capacities as lowered by the API's limit."""
        return tuple((w.capacity, w.span - self.margin) for w in self._windows)

    @property
    def rate(self) -> float:
        """The sustained requests per second the tightest window allows."""
        return min(capacity / seconds for capacity, seconds in self.limits)

    @property
    def paused_until(self) -> float:
        """The time before which no request may go (``-inf`` when never paused)."""
        return max(self._paused_until, self._allowance_end())

    def _allowance_end(self) -> float:
        """The reset the API named, while its allowance is used up (else -inf)."""
        return self._reset_at if self._tickets >= self._allowed else -math.inf

    def used(self, now: float) -> int:
        """Requests counted in the (first) window that ends at ``now``."""
        self._windows[0].expire(now)
        return len(self._windows[0].taken)

    def available(self, now: float) -> int:
        """Requests that may go at ``now`` without waiting (0 while paused)."""
        if self.delay(now) > 0:
            return 0
        left = []
        for window in self._windows:
            window.expire(now)
            left.append(window.capacity - len(window.taken))
        if now < self._reset_at:
            left.append(self._allowed - self._tickets)
        return min(left)

    def delay(self, now: float) -> float:
        """Seconds from ``now`` until one request may go; 0.0 when it may go now."""
        at = self.paused_until
        for window in self._windows:
            window.expire(now)
            at = max(at, window.free_at(window.taken))
        wait = at - now
        return wait if wait > _SAME_MOMENT else 0.0

    def take(self, now: float) -> int:
        """Count one request sent at ``now``; call it only when ``delay(now)`` is 0.

        Returns the request's ticket, which :meth:`observe` takes with the request's answer.
        """
        if self.delay(now) > 0:
            raise RuntimeError(
                f"request budget exhausted at {now}: next slot in {self.delay(now):.3f} s "
                f"({self!r}); wait for delay() before take()"
            )
        for window in self._windows:
            window.taken.append(now)
        self._tickets += 1
        return self._tickets

    def pause(self, until: float) -> None:
        """Let no request go before ``until``; never shortens a pause."""
        self._paused_until = max(self._paused_until, until)

    def rate_limited(self, now: float, wait: float | None) -> float:
        """A rate-limited answer: pause every caller ``wait`` seconds, or — with no wait named
        (or a wait of 0, which a rate limit contradicts) — for a backoff that doubles with each
        such answer in a row. Returns the pause's end."""
        if not wait:
            self._backoff = min(BACKOFF_MAX, self._backoff * 2 or BACKOFF_FIRST)
            wait = self._backoff
        self.pause(now + wait)
        return self._paused_until

    def observe(
        self, now: float, ticket: int | None, rate_limit: RateLimit | None, *, limited: bool = False
    ) -> None:
        """Learn from the answer to the request of ``ticket`` (None: one not counted here).

        ``remaining`` with a ``reset`` allows that many more requests until ``now + reset``,
        less those sent after this one; a ``limit`` with a ``reset`` lowers the capacity of the
        windows no longer than the reset.
        An answer that is not ``limited`` ends the backoff of rate-limited answers in a row.
        """
        if not limited:
            self._backoff = 0.0
        if rate_limit is None:
            return
        if rate_limit.reset is None:
            return
        if rate_limit.limit is not None:
            for window in self._windows:
                if window.span - self.margin <= rate_limit.reset + _SAME_MOMENT:
                    window.capacity = min(window.capacity, rate_limit.limit)
        if rate_limit.remaining is None:
            return
        since = self._tickets if ticket is None else ticket
        allowed, reset_at = since + rate_limit.remaining, now + rate_limit.reset
        if now >= self._reset_at or reset_at > self._reset_at + DEFAULT_MARGIN:
            # The first word on this window, or a later window than the one known: replace.
            self._allowed, self._reset_at = allowed, reset_at
        else:
            # Answers overtake each other; within one window the lowest allowance is right.
            self._allowed = min(self._allowed, allowed)
            self._reset_at = max(self._reset_at, reset_at)

    def next_free(self, now: float, n: int) -> float:
        """The earliest time at or after ``now`` when the ``n``-th next request could go.

        ``n`` = 1 is ``now + delay(now)``. The scheduler uses it to see how far out the budget
        pushes the next few polls, assuming no other request is taken meanwhile.
        """
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n!r}")
        for window in self._windows:
            window.expire(now)
        times = [list(w.taken)[-w.capacity :] for w in self._windows]
        at, tickets = max(now, self._paused_until), self._tickets
        for _ in range(n):
            if tickets >= self._allowed:
                at = max(at, self._reset_at)
            for window, counted in zip(self._windows, times, strict=True):
                at = max(at, window.free_at(counted))
            for counted in times:
                counted.append(at)
            tickets += 1
        return at

    async def acquire(self) -> int:
        """Wait (anyio time) until a request may go, and take it; returns its ticket.

        Checking and taking happen with no await between them, so concurrent callers of one
        event loop never overdraw the budget; a pause made while a caller sleeps is honoured
        when it wakes.
        """
        while True:
            now = anyio.current_time()
            wait = self.delay(now)
            if wait <= 0:
                return self.take(now)
            await anyio.sleep(wait)


async def acquire(budget: RequestBudget) -> None:
    """Wait until ``budget`` allows a request and take it (same as ``budget.acquire()``)."""
    await budget.acquire()
