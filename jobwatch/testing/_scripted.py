"""A transport that delivers what a test scripts, with no network."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

import anyio
from anyio.abc import TaskStatus

from .._errors import JobwatchError
from .._events import EventKind, JobEvent, JobStatus
from ..abc import Transport, TransportHost

__all__ = ["ScriptedTransport", "make_event"]

Handler = Callable[[str], Iterable[JobEvent]]


def make_event(
    kind: str | EventKind,
    job_id: str | None = "job_1",
    *,
    status: JobStatus | str | None = None,
    completed: int | None = None,
    total: int | None = None,
    url: str | None = None,
    source: str = "scripted",
    key: str | None = None,
    occurred_at: datetime | None = None,
    data: dict[str, Any] | None = None,
    error: str | None = None,
    attempt: int | None = None,
) -> JobEvent:
    """Build a JobEvent with the key the built-in providers would give it.

    ``status`` defaults to what the kind implies (``processing`` for started and progress, the
    terminal status for completed, failed and cancelled). ``error`` is why a job or a page
    failed, ``attempt`` the API's own attempt number (an event of a higher one begins a run).
    """
    kind = EventKind(kind)
    if status is None:
        status = _implied_status(kind)
    if key is None:
        key = _key(kind, job_id, completed, url)
    payload = dict(data or {})
    if url is not None:
        payload.setdefault("url", url)
    return JobEvent(
        kind=kind,
        job_id=job_id,
        status=None if status is None else JobStatus(status),
        completed=completed,
        total=total,
        key=key,
        source=source,
        occurred_at=occurred_at,
        error=error,
        attempt=attempt,
        data=payload,
    )


def _implied_status(kind: EventKind) -> JobStatus | None:
    if kind in (EventKind.STARTED, EventKind.PROGRESS):
        return JobStatus.PROCESSING
    if kind.terminal:
        return JobStatus(kind.value)
    return None


def _key(kind: EventKind, job_id: str | None, completed: int | None, url: str | None) -> str:
    if job_id is None:
        return f"workspace:{kind.value}"
    if kind.terminal:
        return f"{job_id}:terminal"
    if kind is EventKind.PROGRESS:
        return f"{job_id}:progress:{completed}"
    if kind in (EventKind.PAGE, EventKind.PAGE_FAILED):
        return f"{job_id}:{kind.value}:{url}"
    return f"{job_id}:{kind.value}"


class ScriptedTransport(Transport):
    """Delivers scripted events, like ``httpx.MockTransport`` does responses.

    ``script`` is delivered in order once the Watcher starts; each item is an event or a
    sequence of events delivered together. ``handler(job_id)`` is called when the application
    starts watching a job and its events are delivered. :meth:`send` delivers more at any time.
    ``push=False`` makes it count as a polling transport (no safety net), and
    ``authoritative=True`` marks its events as polled snapshots.
    """

    name = "scripted"

    def __init__(
        self,
        script: Iterable[JobEvent | Sequence[JobEvent]] = (),
        *,
        handler: Handler | None = None,
        push: bool = True,
        authoritative: bool = False,
        name: str = "scripted",
    ) -> None:
        self._script = list(script)
        self._handler = handler
        self.push = push  # type: ignore[misc]
        self.name = name  # type: ignore[misc]
        self._authoritative = authoritative
        self._host: TransportHost | None = None
        self._queued: list[list[JobEvent]] = []
        self._wake: anyio.Event | None = None
        self.watching: set[str] = set()
        self.watch_calls: list[str] = []

    async def run(
        self, host: TransportHost, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        self._host = host
        task_status.started()
        for item in self._script:
            await host.deliver(
                [item] if isinstance(item, JobEvent) else list(item),
                authoritative=self._authoritative,
            )
        while True:
            self._wake = anyio.Event()
            while self._queued:
                await host.deliver(self._queued.pop(0), authoritative=self._authoritative)
            await self._wake.wait()

    def watch(self, job_id: str) -> None:
        self.watching.add(job_id)
        self.watch_calls.append(job_id)
        if self._handler is not None:
            events = list(self._handler(job_id))
            if events:
                self._queued.append(events)
                if self._wake is not None:
                    self._wake.set()

    def unwatch(self, job_id: str) -> None:
        self.watching.discard(job_id)

    async def send(self, *events: JobEvent, authoritative: bool | None = None) -> None:
        """Deliver ``events`` now, through the Watcher's pipeline."""
        if self._host is None:
            raise JobwatchError("the ScriptedTransport is not running; enter its Watcher first")
        flag = self._authoritative if authoritative is None else authoritative
        await self._host.deliver(list(events), authoritative=flag)

    async def reconcile(self, *job_ids: str, reason: str = "scripted") -> None:
        """Ask the Watcher to poll ``job_ids`` once, as a transport does after a reconnect."""
        if self._host is None:
            raise JobwatchError("the ScriptedTransport is not running; enter its Watcher first")
        await self._host.reconcile(job_ids, reason=reason)
