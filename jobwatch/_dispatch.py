"""The dispatcher: hands each delivered event to every matching subscriber.

Each subscription has its own bounded queue, drained by a task of its own, so a slow callback
delays only itself until its queue is full. A subscription to one job has that task only while
its queue holds events, so ten thousand idle subscriptions cost no task; a subscription to
every job sees a steady flow and keeps its task, parked between events (starting a task costs
several times more than waking one). A callback that raises is retried as its subscription's
:class:`Retry` says and then kept as a dead letter; it never stops the other callbacks or the
transports. An event leaves the store's inbox once every subscriber it went to has handled it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import Any

import anyio
import attrs
from anyio.abc import TaskGroup

from ._errors import ConfigError, JobwatchError
from ._events import EventKind, JobEvent
from .abc import Store, Transport

__all__ = [
    "DEFAULT_RETRY",
    "Callback",
    "Dispatcher",
    "Retry",
    "Subscription",
    "being_cancelled",
    "callback_failed",
]

log = logging.getLogger("jobwatch")

#: Handled events are acknowledged together, at most this many at a time.
_ACK_EVERY = 256

Callback = Callable[[JobEvent], Awaitable[None] | None]


def _kinds(kinds: Collection[str] | None) -> frozenset[EventKind] | None:
    """The kinds a subscription wants (None: every kind); ConfigError naming the known kinds
    for a name that is none of them."""
    if isinstance(kinds, str):  # kinds="completed": one kind, not its letters
        kinds = (kinds,)
    if kinds is None:
        return None
    if not isinstance(kinds, Iterable):
        raise ConfigError(
            f'kinds must be event kind names (e.g. ("completed", "failed")), got {kinds!r}; '
            'leave it out (None) or give "*" for every kind'
        )
    kinds = list(kinds)
    if not kinds:
        # Nothing would ever reach the callback, and a subscription to a job watched it forever.
        raise ConfigError(
            f"kinds is empty, so no event would reach the callback; name the kinds "
            f'({", ".join(_KIND_NAMES)}), or leave it out (None) or give "*" for every kind'
        )
    if "*" in kinds:
        return None
    unknown = [k for k in kinds if k not in _KIND_NAMES]
    if unknown:
        raise ConfigError(
            f"unknown event kind{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))}; "
            f'the kinds are {", ".join(_KIND_NAMES)}, or "*" for every kind'
        )
    return frozenset(EventKind(k) for k in kinds)


_KIND_NAMES = tuple(kind.value for kind in EventKind)


def _delays(value: Any) -> tuple[float, ...]:
    """``backoff`` as a tuple of seconds: one number, or a sequence of them."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = (value,)
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ConfigError(
            f"Retry backoff must be seconds (a number or a sequence of numbers), got {value!r}"
        )
    delays = tuple(value)
    for delay in delays:
        if not _seconds(delay) or delay < 0:
            raise ConfigError(
                f"Retry backoff must be seconds, each a finite number >= 0, "
                f"got {delay!r} in {value!r}"
            )
    return tuple(float(d) for d in delays)


def _seconds(value: object) -> bool:
    """Whether ``value`` is a finite number of seconds (of any sign; not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer beyond a float's range
        return False


def _check_timeout(instance: Retry, attribute: object, value: Any) -> None:
    if value is not None and (not _seconds(value) or value <= 0):
        raise ConfigError(
            f"Retry timeout must be seconds, a finite number > 0 (or None: no limit), got {value!r}"
        )


def _check_attempts(instance: Retry, attribute: object, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"Retry attempts must be a whole number >= 1 (1: no retry), got {value!r}"
        )


@attrs.frozen(kw_only=True)
class Retry:
    """How a subscription's callback is retried when it raises, before its event is kept as
    a dead letter.

    ``attempts`` is how many times the callback is called for one event, in all (1: no
    retry). ``backoff`` is the wait, in seconds, before each retry: the first number before
    the second call, and so on, the last repeated if there are more retries than numbers
    (one number: the same wait every time; ``()``: none). While a callback waits to be
    retried, the later events of its subscription wait behind it, so that each callback sees
    its events in order; other subscriptions are not held up.

    ``timeout`` is how many seconds one call may take (None, the default: no limit). A call
    that takes longer is cancelled and counts as a failure (even if the callback catches the
    cancellation and returns): retried, then kept as a dead letter. Only what the callback
    awaits can be cut short — an async callback, or an awaitable a sync one returns; a sync
    callback runs on the event loop to its end. A callback that never returns holds its
    subscription's events, then (once its queue is full) every transport's: a timeout bounds
    that.

    The default, ``Retry()``, is four calls with 0.5, 2 and 8 s between them (about 10 s).
    """

    attempts: int = attrs.field(default=4, validator=_check_attempts)
    backoff: tuple[float, ...] = attrs.field(default=(0.5, 2.0, 8.0), converter=_delays)
    timeout: float | None = attrs.field(default=None, validator=_check_timeout)

    def delay(self, failed: int) -> float:
        """Seconds to wait after the ``failed``-th failed call (1 for the first)."""
        if not self.backoff:
            return 0.0
        return self.backoff[min(failed, len(self.backoff)) - 1]


def callback_failed(exc: BaseException) -> bool:
    """Whether ``exc``, raised by a callback, is the callback's own failure, to retry and keep
    as a dead letter: any Exception, and a cancellation that did not come to this task — the
    callback awaited work that someone else cancelled (an asyncio task, a future). The task's
    own cancellation (the Watcher stops), KeyboardInterrupt and SystemExit go on up."""
    if isinstance(exc, Exception):
        return True
    return isinstance(exc, anyio.get_cancelled_exc_class()) and not being_cancelled()


def being_cancelled() -> bool:
    """Whether the current task is being cancelled: a cancel scope around it was cancelled or
    is past its deadline, or (asyncio) someone asked for the task's cancellation."""
    if anyio.current_effective_deadline() <= anyio.current_time():
        return True
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no asyncio loop runs this task (trio)
        return False
    return task is not None and task.cancelling() > 0


def _is_async(callback: Callback) -> bool:
    return inspect.iscoroutinefunction(callback) or inspect.iscoroutinefunction(
        getattr(callback, "__call__", None)  # noqa: B004 - async callable objects
    )


@attrs.define(eq=False, repr=False)
class Subscription:
    """A registered callback; :meth:`cancel` stops further calls."""

    callback: Callback
    kinds: frozenset[EventKind] | None
    job_id: str | None
    name: str
    retry: Retry | None = None  # None: the Watcher's own (watch, wait): called once
    cancelled: bool = False
    is_async: bool = False
    _queue: deque[JobEvent] = attrs.field(factory=deque)
    _running: bool = False
    _space: anyio.Event | None = None
    _idle: anyio.Event | None = None
    _stop: anyio.Event | None = None
    _on_cancel: Callable[[Subscription], None] | None = None
    _full_said: float = -math.inf  # when a full queue was last said (the loop's clock)

    def __repr__(self) -> str:
        kinds = "*" if self.kinds is None else ",".join(sorted(self.kinds))
        job = "every job" if self.job_id is None else f"job {self.job_id!r}"
        state = " cancelled" if self.cancelled else ""
        return f"<Subscription {self.name} kinds={kinds} {job}{state}>"

    def wants(self, event: JobEvent) -> bool:
        return not self.cancelled and (self.kinds is None or event.kind in self.kinds)

    def cancel(self) -> None:
        """Stop calling this subscription's callback; events already queued are skipped."""
        if not self.cancelled:
            self.cancelled = True
            if self._space is not None:
                self._space.set()
            if self._idle is not None:
                self._idle.set()
            if self._stop is not None:
                self._stop.set()  # a callback waiting to be retried is not called again
            if self._on_cancel is not None:
                self._on_cancel(self)


@attrs.define
class _Counts:
    delivered: int = 0
    callback_errors: int = 0
    dead_letters: int = 0


class Dispatcher:
    """Fans events out to subscriptions, indexed by job, each drained by its own task."""

    def __init__(
        self,
        store: Store,
        *,
        queue_size: int = 1000,
        on_unsubscribe: Callable[[Subscription], None] | None = None,
    ) -> None:
        self._store = store
        self._queue_size = queue_size
        self._by_job: dict[str | None, list[Subscription]] = {}
        self._outstanding: dict[str, int] = {}
        self._acks: list[str] = []  # handled, to be acknowledged with the next flush
        self._tg: TaskGroup | None = None
        self._on_unsubscribe = on_unsubscribe
        self._noted_every_job = False
        self.counts = _Counts()

    def start(self, tg: TaskGroup) -> None:
        """Run subscription tasks in ``tg`` from now on."""
        self._tg = tg

    def close(self) -> None:
        """Stop dispatching (the Watcher is shutting down); queued events stay in the inbox."""
        self._tg = None
        for sub in self._by_job.get(None, ()):
            if sub._idle is not None:
                sub._idle.set()  # a parked task ends instead of waiting for more

    def subscribe(
        self,
        callback: Callback,
        *,
        kinds: Collection[str] | None = None,
        job_id: str | None = None,
        retry: Retry | bool = True,
    ) -> Subscription:
        """Register ``callback``; ``retry`` is its :class:`Retry` (True: the default one;
        False: called once, for the Watcher's own subscriptions)."""
        policy = _policy(retry)
        name = getattr(callback, "__qualname__", None) or repr(callback)
        sub = Subscription(
            callback, _kinds(kinds), job_id, name, policy, is_async=_is_async(callback)
        )
        sub._on_cancel = self._unsubscribe
        self._by_job.setdefault(job_id, []).append(sub)
        return sub

    def note_every_job(self, transports: Iterable[Transport]) -> None:
        """Warn, once, that callbacks for every job hear only of watched jobs when no
        transport reports the others (polling and per-job streams ask about watched jobs)."""
        running = list(transports)
        if self._noted_every_job or not running or any(_reports_every_job(t) for t in running):
            return
        self._noted_every_job = True
        log.warning(
            "a callback for every job is registered, but the transports (%s) report only the "
            "jobs this Watcher watches: it is called for jobs given to watch(), wait() or "
            "subscribe(job_id=...), and no others; to hear of every job of the account, use "
            "webhooks or the workspace stream",
            ", ".join(t.name for t in running),
        )

    def _unsubscribe(self, sub: Subscription) -> None:
        subs = self._by_job.get(sub.job_id, [])
        if sub in subs:
            subs.remove(sub)
            if not subs:
                del self._by_job[sub.job_id]
        if self._on_unsubscribe is not None:
            self._on_unsubscribe(sub)

    async def dispatch(self, event: JobEvent, *, callbacks_only: bool = False) -> None:
        """Queue ``event`` for every matching subscription (waits while a queue is full);
        with ``callbacks_only``, not for the Watcher's own (``watch()``, ``wait()``)."""
        await self.dispatch_batch((event,), callbacks_only=callbacks_only)

    async def dispatch_batch(
        self, events: Iterable[JobEvent], *, callbacks_only: bool = False
    ) -> None:
        """:meth:`dispatch` each of ``events`` in order: one call for a read's events."""
        by_job, outstanding, size, counts = (
            self._by_job,
            self._outstanding,
            self._queue_size,
            self.counts,
        )
        for event in events:
            kind, job_id = event.kind, event.job_id
            targets = []
            # The job's own subscriptions first, then everyone's (Subscription.wants, inlined:
            # this runs for every event).
            for group in (
                by_job.get(job_id, ()) if job_id is not None else (),
                by_job.get(None, ()),
            ):
                for sub in group:
                    if not sub.cancelled and (sub.kinds is None or kind in sub.kinds):
                        if not callbacks_only or sub.retry is not None:
                            targets.append(sub)
            counts.delivered += 1
            key = event.key
            if not targets:
                if key not in outstanding:  # (else it is done when its other dispatch is)
                    self._acks.append(key)
                    if len(self._acks) >= _ACK_EVERY:
                        await self.flush()
                continue
            outstanding[key] = outstanding.get(key, 0) + len(targets)
            for sub in targets:
                # (A replay waits for no room: asked for from a callback, it would wait for
                # that callback's own queue; it goes one event over the bound instead.)
                while len(sub._queue) >= size and not sub.cancelled and not callbacks_only:
                    if sub._space is None:  # one event for every dispatch waiting on this queue
                        sub._space = anyio.Event()
                    await _room(sub, sub._space, size)
                sub._queue.append(event)
                if sub._running:
                    if sub._idle is not None:
                        sub._idle.set()
                elif self._tg is not None:
                    sub._running = True
                    self._tg.start_soon(self._drain, sub)
        await self.flush()

    async def _drain(self, sub: Subscription) -> None:
        try:
            while True:
                queue = sub._queue
                while queue:
                    event = queue[0]
                    # Cancelled mid-callback (shutdown, crash): the event stays in the inbox
                    # and is replayed by the next Watcher on this store.
                    if not sub.cancelled:
                        if sub.is_async and self._acks:
                            await self.flush()  # (handled: not held up by a slow call)
                        if not sub.cancelled:  # (cancelled meanwhile: skipped, as queued)
                            await self._call(sub, event)
                    queue.popleft()
                    if sub._space is not None:
                        sub._space.set()
                        sub._space = None
                    self._done(event.key)
                    if len(self._acks) >= _ACK_EVERY:
                        await self.flush()
                if self._acks:
                    await self.flush()
                    continue  # events queued meanwhile found a task running: it takes them
                if sub.job_id is not None or sub.cancelled or self._tg is None:
                    return
                sub._idle = anyio.Event()  # a subscription to every job waits for more
                await sub._idle.wait()
                sub._idle = None
        finally:
            sub._running = False
            sub._idle = None

    def _done(self, key: str) -> None:
        """One subscriber has handled the event of ``key``: the last one to do so has it
        acknowledged with the next flush."""
        outstanding = self._outstanding
        left = outstanding.get(key, 1) - 1
        if left > 0:
            outstanding[key] = left
            return
        outstanding.pop(key, None)
        self._acks.append(key)

    async def flush(self) -> None:
        """Remove the handled events not yet acknowledged from the store's inbox, in one call
        (the drains do as they go; the Watcher, closing, for what its cancelled tasks left)."""
        if not self._acks:
            return
        keys, self._acks = self._acks, []
        if self._outstanding:
            # A key handed over again since it was handled (a dead letter replayed) stays in
            # the inbox until that dispatch is handled too: it is acknowledged then.
            outstanding = self._outstanding
            keys = [key for key in keys if key not in outstanding]
            if not keys:
                return
        try:
            await self._store.ack_batch(keys)
        except JobwatchError as exc:
            # Handled but still in the inbox: replayed after a restart, which callbacks that
            # are idempotent by event.key absorb.
            log.warning(
                "could not remove %d handled events from the store's inbox: %s", len(keys), exc
            )

    async def _call(self, sub: Subscription, event: JobEvent) -> None:
        policy = sub.retry
        attempts = 1 if policy is None else policy.attempts
        for attempt in range(attempts):
            try:
                # What an async callback returns is awaited, and so is an awaitable that a
                # sync one returns.
                result = sub.callback(event)
                if sub.is_async or (result is not None and inspect.isawaitable(result)):
                    if not sub.is_async:
                        await self.flush()  # (handled: not held up by a slow call)
                    await _awaited(result, None if policy is None else policy.timeout)
                return
            except BaseException as exc:  # a callback's failure must never stop the others
                if not callback_failed(exc):
                    raise
                self.counts.callback_errors += 1
                error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "callback %s failed on %s (attempt %d): %s",
                    sub.name,
                    event.key,
                    attempt + 1,
                    error,
                )
                if policy is not None and attempt + 1 < attempts:
                    await self.flush()  # (what was handled: not held up meanwhile)
                    await _backoff(sub, policy.delay(attempt + 1))
                    if sub.cancelled:  # cancelled meanwhile: its event is skipped, not kept
                        return
        self.counts.dead_letters += 1
        log.error("callback %s gave up on %s; kept as a dead letter", sub.name, event.key)
        try:
            await self._store.dead_letter(event, sub.name, error)
        except JobwatchError as exc:  # the log line above is then all that is kept
            log.warning("could not keep the dead letter of %s in the store: %s", event.key, exc)


#: Seconds a full queue may go without room before it is said: a flood fills a fast
#: callback's queue too, for a moment; a callback that has not finished one event in this
#: long holds up delivery.
_STUCK_AFTER = 10.0
#: A subscription whose queue stays full is said so at most this often (seconds).
_FULL_SAID_EVERY = 600.0


async def _room(sub: Subscription, space: anyio.Event, size: int) -> None:
    """Wait for room in ``sub``'s full queue; warn (at most every ten minutes) when none
    comes for ``_STUCK_AFTER`` seconds."""
    with anyio.move_on_after(_STUCK_AFTER):
        await space.wait()
    if space.is_set():
        return
    now = anyio.current_time()
    if now - sub._full_said >= _FULL_SAID_EVERY:
        sub._full_said = now
        if sub.retry is None:  # the Watcher's own: a watch() whose loop does not read on
            log.warning(
                "watch(%r) has %d events its loop has not taken for %g s: new events wait "
                "for it, and so do the transports that deliver them; take them (a loop body "
                "that awaits long holds them up), or leave the loop to stop watching",
                sub.job_id,
                size,
                _STUCK_AFTER,
            )
        else:
            log.warning(
                "callback %s has handled none of its %d waiting events for %g s: new events "
                "wait for it, and so do the transports that deliver them; if it may hang (a "
                "request without a timeout, say), give it retry=jobwatch.Retry(timeout=...) "
                "so that a call that takes too long is cut short",
                sub.name,
                size,
                _STUCK_AFTER,
            )
    await space.wait()


async def _awaited(result: Any, limit: float | None) -> None:
    """Await what a callback returned, cut short after ``limit`` seconds (TimeoutError)."""
    if limit is None:
        await result
        return
    with anyio.move_on_after(limit) as scope:
        await result
    # Cut short, whether the cancellation came out of the call or the callback caught it and
    # returned: the call took longer all the same. A Watcher closing meanwhile goes on
    # closing (its cancellation is raised here), with no failure to keep.
    if scope.cancel_called:
        await anyio.lowlevel.checkpoint_if_cancelled()
        seconds = repr(float(limit)).removesuffix(".0")  # as given: 5, 2.5, 1234.5678
        raise TimeoutError(f"the callback took longer than {seconds} s (its Retry timeout)")


async def _backoff(sub: Subscription, delay: float) -> None:
    """Wait ``delay`` seconds before the next call, or until the subscription is cancelled."""
    if sub.cancelled:
        return
    sub._stop = anyio.Event()
    try:
        with anyio.move_on_after(delay):
            await sub._stop.wait()
    finally:
        sub._stop = None


DEFAULT_RETRY = Retry()


def _policy(retry: Retry | bool) -> Retry | None:
    if retry is True:
        return DEFAULT_RETRY
    if retry is False:
        return None
    if not isinstance(retry, Retry):
        raise ConfigError(
            f"retry must be a jobwatch.Retry, e.g. jobwatch.Retry(attempts=4, "
            f"backoff=(0.5, 2, 8)), got {retry!r}"
        )
    return retry


def _reports_every_job(transport: Transport) -> bool:
    # A transport says so with ``reports_every_job``; without it, one that polls (not push)
    # asks only about watched jobs, and a push transport is taken to report them all.
    return bool(getattr(transport, "reports_every_job", transport.push))
