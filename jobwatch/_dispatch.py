"""The dispatcher: hands each delivered event to every matching subscriber.

Each subscription has its own bounded queue and task, so a slow callback delays only itself
until its queue is full. A callback that raises is retried with backoff and then kept as a
dead letter; it never stops the other callbacks or the transports. An event leaves the store's
inbox once every subscriber it went to has handled it.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Awaitable, Callable, Collection
from typing import Any

import anyio
import attrs
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._errors import JobwatchError
from ._events import EventKind, JobEvent
from .abc import Store

__all__ = ["Callback", "Dispatcher", "Subscription"]

log = logging.getLogger("jobwatch")

Callback = Callable[[JobEvent], Awaitable[None] | None]


def _kinds(kinds: Collection[str] | None) -> frozenset[EventKind] | None:
    if kinds is None or "*" in kinds:
        return None
    return frozenset(EventKind(k) for k in kinds)


@attrs.define(eq=False)
class Subscription:
    """A registered callback; :meth:`cancel` stops further calls."""

    callback: Callback
    kinds: frozenset[EventKind] | None
    job_id: str | None
    name: str
    retry: bool = True
    cancelled: bool = False
    is_async: bool = False
    _send: MemoryObjectSendStream[JobEvent] | None = None
    _on_cancel: Callable[[Subscription], None] | None = None

    def matches(self, event: JobEvent) -> bool:
        if self.cancelled:
            return False
        if self.kinds is not None and event.kind not in self.kinds:
            return False
        return self.job_id is None or self.job_id == event.job_id

    def cancel(self) -> None:
        """Stop calling this subscription's callback; events already queued are skipped."""
        if not self.cancelled:
            self.cancelled = True
            if self._on_cancel is not None:
                self._on_cancel(self)


@attrs.define
class _Counts:
    delivered: int = 0
    callback_errors: int = 0
    dead_letters: int = 0


class Dispatcher:
    """Fans events out to subscriptions, each on its own task with a bounded queue."""

    def __init__(
        self,
        store: Store,
        *,
        queue_size: int = 1000,
        attempts: int = 4,
        backoff: float = 0.5,
        on_unsubscribe: Callable[[Subscription], None] | None = None,
    ) -> None:
        self._store = store
        self._queue_size = queue_size
        self._attempts = attempts
        self._backoff = backoff
        self._subs: list[Subscription] = []
        self._outstanding: dict[str, int] = {}
        self._tg: TaskGroup | None = None
        self._on_unsubscribe = on_unsubscribe
        self.counts = _Counts()

    def start(self, tg: TaskGroup) -> None:
        """Start the workers of the subscriptions made so far, and of later ones, in ``tg``."""
        self._tg = tg
        for sub in self._subs:
            self._start_worker(sub)

    def close(self) -> None:
        """Close every subscription's queue (the Watcher is shutting down)."""
        for sub in self._subs:
            if sub._send is not None:
                sub._send.close()

    def subscribe(
        self,
        callback: Callback,
        *,
        kinds: Collection[str] | None = None,
        job_id: str | None = None,
        retry: bool = True,
    ) -> Subscription:
        name = getattr(callback, "__qualname__", None) or repr(callback)
        sub = Subscription(callback, _kinds(kinds), job_id, name, retry,
                           is_async=_is_async(callback))
        sub._on_cancel = self._unsubscribe
        self._subs.append(sub)
        if self._tg is not None:
            self._start_worker(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
        if sub._send is not None:
            sub._send.close()
        if self._on_unsubscribe is not None:
            self._on_unsubscribe(sub)

    def _start_worker(self, sub: Subscription) -> None:
        assert self._tg is not None
        send, receive = anyio.create_memory_object_stream[JobEvent](self._queue_size)
        sub._send = send
        self._tg.start_soon(self._work, sub, receive)

    async def dispatch(self, event: JobEvent) -> None:
        """Queue ``event`` for every matching subscription (waits while a queue is full)."""
        targets = [s for s in self._subs if s.matches(event)]
        self.counts.delivered += 1
        if not targets:
            self._outstanding[event.key] = 1
            await self._done(event.key)
            return
        self._outstanding[event.key] = self._outstanding.get(event.key, 0) + len(targets)
        for sub in targets:
            try:
                assert sub._send is not None
                await sub._send.send(event)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                await self._done(event.key)

    async def _work(self, sub: Subscription, receive: MemoryObjectReceiveStream[JobEvent]) -> None:
        async with receive:
            async for event in receive:
                # Cancelled mid-callback (shutdown, crash): the event stays in the inbox and
                # is replayed by the next Watcher on this store.
                if not sub.cancelled:
                    await self._call(sub, event)
                await self._done(event.key)

    async def _done(self, key: str) -> None:
        left = self._outstanding.get(key, 1) - 1
        if left > 0:
            self._outstanding[key] = left
            return
        self._outstanding.pop(key, None)
        try:
            await self._store.ack(key)
        except JobwatchError as exc:
            # Handled but still in the inbox: it is replayed after a restart, which callbacks
            # that are idempotent by event.key absorb.
            log.warning("could not remove %s from the store's inbox: %s", key, exc)

    async def _call(self, sub: Subscription, event: JobEvent) -> None:
        for attempt in range(self._attempts if sub.retry else 1):
            try:
                if sub.is_async:
                    await sub.callback(event)  # type: ignore[misc]
                else:
                    await _invoke(sub.callback, event)
                return
            except Exception as exc:  # a callback's failure must never stop the others
                self.counts.callback_errors += 1
                error = f"{type(exc).__name__}: {exc}"
                log.warning("callback %s failed on %s (attempt %d): %s",
                            sub.name, event.key, attempt + 1, error)
                if attempt + 1 < self._attempts and sub.retry:
                    await anyio.sleep(self._backoff * math.pow(4, attempt))
        self.counts.dead_letters += 1
        log.error("callback %s gave up on %s; kept as a dead letter", sub.name, event.key)
        await self._store.dead_letter(event, sub.name, error)


def _is_async(callback: Callback) -> bool:
    return inspect.iscoroutinefunction(callback) or inspect.iscoroutinefunction(
        getattr(callback, "__call__", None)  # noqa: B004 - async callable objects
    )


async def _invoke(callback: Callback, event: JobEvent) -> None:
    result: Any = callback(event)
    if inspect.isawaitable(result):
        await result
