"""Blocking helpers for scripts and notebooks: :func:`wait` and :func:`iter_events`.

Both create a :class:`~jobwatch.Watcher` for one job, run it on trio, and hand back plain
values. They work from a plain script and from a thread where an event loop already runs (a
Jupyter notebook's asyncio loop, a trio program): there the Watcher runs on trio in a worker
thread while the caller's thread waits — blocking the caller, as a blocking call should, without
nesting event loops. An interrupted caller (KeyboardInterrupt, or its asyncio task cancelled)
stops that Watcher and waits for it to end before raising.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import aclosing
from typing import Any, TypeVar, cast

import sniffio
import trio

from ._config import Config, load_config
from ._errors import WatchTimeout
from ._events import JobEvent
from ._policy import check_served
from ._watcher import DEFAULT_TIMEOUT, Watcher, check_timeout

__all__ = ["iter_events", "wait"]

T = TypeVar("T")

_END = object()


def wait(
    job_id: str,
    *,
    config: Config | None = None,
    timeout: float | None = None,
    transport: str | Sequence[str] | None = None,
) -> JobEvent:
    """Block until ``job_id`` reaches a terminal state and return that event.

    ``config`` defaults to :func:`~jobwatch.load_config` (``jobwatch.toml`` or
    ``JOBWATCH_CONFIG``); ``transport`` overrides its ``transport`` (``"poll"``, ``"sse"``, a
    list). Raises :class:`~jobwatch.WatchTimeout` after ``timeout`` seconds (default: one hour),
    and the job's own error (``JobNotFound``, ``AuthenticationError``) if its watch ends.
    """
    check_timeout(timeout)
    resolved = _resolve(config, transport)
    deadline = DEFAULT_TIMEOUT if timeout is None else timeout

    async def main() -> JobEvent:
        async with Watcher(resolved) as watcher:
            return await watcher.wait(job_id, timeout=deadline)

    return _run(main)


def iter_events(
    job_id: str,
    *,
    config: Config | None = None,
    timeout: float | None = None,
    transport: str | Sequence[str] | None = None,
) -> Iterator[JobEvent]:
    """Yield ``job_id``'s events as they arrive, ending after its terminal event.

    ``config`` and ``transport`` are those of :func:`wait`. Raises
    :class:`~jobwatch.WatchTimeout` if the job has not finished after ``timeout`` seconds
    (default: one hour). Leaving the loop early stops the Watcher.
    """
    check_timeout(timeout)
    resolved = _resolve(config, transport)
    deadline = DEFAULT_TIMEOUT if timeout is None else timeout
    items: queue.Queue[Any] = queue.Queue()
    stop = _Stopper()
    thread = threading.Thread(
        target=_produce,
        args=(job_id, resolved, deadline, items, stop),
        name=f"jobwatch-iter-{job_id}",
        daemon=True,
    )
    thread.start()
    caller = _Caller()
    try:
        while (item := _next(items, caller)) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.stop()
        thread.join()


def _next(items: queue.Queue[Any], caller: _Caller) -> Any:
    """The next item, or CancelledError once the caller's asyncio task is cancelled."""
    if caller.task is None:
        return items.get()  # KeyboardInterrupt interrupts it
    while True:
        try:
            return items.get(timeout=_LOOK_EVERY)
        except queue.Empty:
            if caller.cancelled():
                raise asyncio.CancelledError from None


def explain_timeout(exc: WatchTimeout, watcher: Watcher) -> WatchTimeout:
    """``exc``, saying so when the API was not answering at the end (as ``Watcher.wait``
    does for its own timeouts)."""
    return watcher._explained(exc)


def _resolve(config: Config | None, transport: str | Sequence[str] | None) -> Config:
    resolved = config if config is not None else load_config()
    if transport is not None:
        resolved = resolved.replace(
            transport=transport if isinstance(transport, str) else tuple(transport)
        )
        # Named as the argument: the Watcher would blame the file's [jobwatch] transport.
        check_served(resolved, f"transport={transport!r}", os.environ)
    return resolved


def _in_event_loop() -> bool:
    try:
        sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        return False
    return True


def _run(main: Callable[[], Awaitable[T]]) -> T:
    """Run ``main`` on trio here, or in a worker thread when this thread runs a loop."""
    if not _in_event_loop():
        try:
            return trio.run(main)
        except BaseExceptionGroup as group:
            raise _unwrap(group) from None
    outcome: list[Any] = []
    stop = _Stopper()

    async def stoppable() -> T:
        with trio.CancelScope() as scope:
            stop.attach(scope)
            return await main()
        raise _Stopped

    done = threading.Event()

    def target() -> None:
        try:
            outcome.append((True, trio.run(stoppable)))
        except BaseException as exc:  # handed to the caller's thread below
            outcome.append((False, _unwrap(exc)))
        finally:
            done.set()

    thread = threading.Thread(target=target, name="jobwatch-wait", daemon=True)
    thread.start()
    _block_until(done, stop)
    thread.join()
    ok, value = outcome[0]
    if not ok:
        raise value
    return cast(T, value)


class _Stopped(Exception):
    """The worker's run was cancelled because the caller stopped waiting."""


#: Seconds between two looks, by a caller blocked in a thread that runs an event loop, at
#: whether its task was cancelled meanwhile.
_LOOK_EVERY = 0.05


class _Caller:
    """The asyncio task, if any, that a blocking call is made from, and whether it has been
    cancelled since the call began. asyncio.run() answers Ctrl-C by cancelling its main
    task, which a call blocking that task's thread never sees otherwise: it would go on
    waiting for the job, up to its timeout."""

    def __init__(self) -> None:
        try:
            self.task = asyncio.current_task()
        except RuntimeError:  # no asyncio loop runs in this thread
            self.task = None
        self.cancels = self.task.cancelling() if self.task is not None else 0

    def cancelled(self) -> bool:
        return self.task is not None and self.task.cancelling() > self.cancels


def _block_until(done: threading.Event, stop: _Stopper) -> None:
    """Block until ``done``. If the caller is interrupted meanwhile (KeyboardInterrupt, or
    its asyncio task is cancelled), stop the worker's Watcher and wait for it to end before
    raising, so that nothing of the watch is left running.

    (An Event, not Thread.join: a join that KeyboardInterrupt interrupts can take a thread
    that still runs for one that has ended.)
    """
    caller = _Caller()
    try:
        if caller.task is None:
            done.wait()  # KeyboardInterrupt interrupts it
        while not done.wait(_LOOK_EVERY):
            if caller.cancelled():
                raise asyncio.CancelledError
    finally:
        if not done.is_set():
            stop.stop()
            done.wait()


class _Stopper:
    """Lets the consuming thread cancel the producer's trio run, before or after it starts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self._stopped = False

    def attach(self, scope: trio.CancelScope) -> None:
        with self._lock:
            self._token, self._scope = trio.lowlevel.current_trio_token(), scope
            if self._stopped:
                scope.cancel()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            if self._token is not None and self._scope is not None:
                try:
                    self._token.run_sync_soon(self._scope.cancel)
                except trio.RunFinishedError:
                    pass


def _produce(
    job_id: str, config: Config, deadline: float, items: queue.Queue[Any], stop: _Stopper
) -> None:
    async def main() -> None:
        with trio.CancelScope() as scope:
            stop.attach(scope)
            async with Watcher(config) as watcher:
                # A deadline already past (0, or negative: a remaining time computed by the
                # caller) times out at once, as wait() does; trio refuses a negative one.
                with trio.move_on_after(max(deadline, 0)) as timer:
                    async with aclosing(watcher.watch(job_id)) as events:
                        async for event in events:
                            items.put(event)
                            if event.terminal:
                                return
                if timer.cancelled_caught:
                    raise explain_timeout(
                        WatchTimeout(
                            f"job {job_id} did not finish within {deadline} s; pass a longer "
                            "timeout, or check the job",
                            job_id=job_id,
                        ),
                        watcher,
                    )

    try:
        trio.run(main)
    except BaseException as exc:  # handed to the consuming thread
        items.put(_unwrap(exc))
    finally:
        items.put(_END)


def _unwrap(exc: BaseException) -> BaseException:
    """The one error inside nested single-member exception groups (a task group's wrapping)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
