"""Request limits of the simulated Reader, without I/O: the RPM window and idempotency replay."""

from __future__ import annotations

import itertools
import math
from collections import deque

import attrs

__all__ = ["IdempotencyCache", "RateWindow", "StoredResponse"]


class RateWindow:
    """Requests per minute over a sliding window of simulated time."""

    def __init__(self, limit: int, window: float = 60.0) -> None:
        self.limit = limit
        self.window = window
        self._hits: deque[float] = deque()

    def hit(self, now: float) -> int | None:
        """Count a request at `now`; if it is over the limit, count nothing and return the
        whole seconds to wait before retrying."""
        while self._hits and self._hits[0] <= now - self.window:
            self._hits.popleft()
        if len(self._hits) < self.limit:
            self._hits.append(now)
            return None
        return max(1, math.ceil(self._hits[0] + self.window - now))


@attrs.frozen(kw_only=True)
class StoredResponse:
    """A response kept for replay: status, body and the headers worth replaying."""

    status: int
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()


class IdempotencyCache:
    """``x-idempotency-key`` → the first successful response, kept for `ttl` simulated seconds."""

    def __init__(self, ttl: float = 86_400.0) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[float, StoredResponse]] = {}

    def get(self, key: str, now: float) -> StoredResponse | None:
        """The stored response for `key`, unless it expired."""
        entry = self._entries.get(key)
        if entry is None or entry[0] <= now:
            self._entries.pop(key, None)
            return None
        return entry[1]

    def __len__(self) -> int:
        """How many keys are kept (expired ones included until the next `put`)."""
        return len(self._entries)

    def put(self, key: str, now: float, response: StoredResponse) -> None:
        """Keep `response` for `key` until ``now + ttl``, and forget the keys that expired."""
        self._entries.pop(key, None)
        self._entries[key] = (now + self.ttl, response)
        # One ttl and a clock that only moves on: the oldest entries expire first.
        for old in list(itertools.takewhile(lambda k: self._entries[k][0] <= now, self._entries)):
            del self._entries[old]
