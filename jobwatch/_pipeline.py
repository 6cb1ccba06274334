"""The one path every decoded event takes: per-job order, the guard, the store, then dispatch.

:class:`Pipeline` serves the Watcher and the serverless handler alike. For each event it takes
the event's job in turn (events of one job in order, different jobs concurrently), asks the
ordering guard through :meth:`Store.record <jobwatch.abc.Store.record>`, keeps the bookkeeping
of final events, and hands what is new to ``dispatch``. What this process knows of one job
lives in one :class:`JobRecord`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any

import anyio
import attrs

from ._compat import takes_keyword
from ._errors import JobwatchError
from ._events import EventKind, JobEvent
from ._guard import decide
from ._state import MAX_COUNT, Snapshot
from .abc import JobState, Store, Verdict

__all__ = ["JobRecord", "Pipeline"]

log = logging.getLogger("jobwatch")

_STARTED = EventKind.STARTED
#: Records are looked over for quiet ones once there are this many (and then each time their
#: number has doubled since): amortized, a constant cost per new job.
PRUNE_FROM = 4096


def _ignore(job_id: str) -> None:
    pass


@attrs.define(eq=False)
class JobRecord:
    """What this process knows of one job.

    The pipeline keeps ``final`` (the current run's terminal event, once delivered),
    ``started`` (the run's ``started`` was recorded: a stream repeats it with every progress
    frame, and a repeat needs no store trip), ``heard``
    (when a transport last spoke of a watched job; None when not watched) and the job's turn
    (``busy``, ``waiting``). The Watcher keeps the rest: who watches it and why it stopped.
    ``touched`` is the pipeline's generation when the record was last asked for; ``holds``
    counts those that need the record kept while they await something (:meth:`Pipeline.held`).
    """

    job_id: str | None
    final: JobEvent | None = None
    started: bool = False
    heard: float | None = None
    busy: bool = False
    waiting: deque[anyio.Event] | None = None
    watched: bool = False
    watchers: int = 0
    queues: set[Any] | None = None
    error: JobwatchError | None = None
    snapshot: Snapshot | None = None
    checking: bool = False
    touched: int = 0
    holds: int = 0

    def idle(self) -> bool:
        """Nothing here holds the record: no watcher, no turn taken or awaited, no check."""
        return not (
            self.holds
            or self.busy
            or self.waiting
            or self.watched
            or self.watchers
            or self.queues
            or self.checking
            or self.heard is not None
        )


class Pipeline:
    """Dedup and the ordering guard between the transports and the dispatcher.

    ``dispatch`` receives each delivered event once it is recorded; ``dispatch_batch``, when
    given, takes its place with a batch's delivered events in one call. ``on_check(job_id)`` is
    called when a pushed event contradicts a finished run (one confirming poll is wanted);
    ``on_final(job_id)`` when a run's terminal event is delivered, ``on_new_run(job_id)`` when a
    finished job's new run begins. Deliveries wait for
    :attr:`ready` (the Watcher replays its inbox first). ``events_in``, ``events_out`` and
    ``dropped`` (by reason) count what went through. Each of ``observers`` is called with
    every event, as ``(event, None)`` once it is recorded, before it is dispatched (a batch's
    events are all told before the first is dispatched), and as ``(event, reason)`` when it
    is dropped; it must return at once (it runs on the path of every event).
    """

    def __init__(
        self,
        store: Store,
        *,
        dedup_ttl: float,
        dispatch: Callable[[JobEvent], Awaitable[None]],
        dispatch_batch: Callable[[list[JobEvent]], Awaitable[None]] | None = None,
        on_check: Callable[[str], None] = _ignore,
        on_final: Callable[[str], None] = _ignore,
        on_new_run: Callable[[str], None] = _ignore,
    ) -> None:
        self.store = store
        self.dedup_ttl = dedup_ttl
        self.ready = anyio.Event()
        self.jobs: dict[str | None, JobRecord] = {}
        self.events_in = 0
        self.events_out = 0
        self.dropped: dict[str, int] = defaultdict(int)
        self.observers: list[Callable[[JobEvent, str | None], None]] = []
        self._dispatch = dispatch
        self._dispatch_batch = dispatch_batch
        self._on_check = on_check
        self._on_final = on_final
        self._on_new_run = on_new_run
        self._generation = 0
        self._prune_from = self._prune_at = PRUNE_FROM

    @property
    def prune_from(self) -> int:
        """Records are looked over for quiet ones once there are this many, then each time
        their number has doubled since."""
        return self._prune_from

    @prune_from.setter
    def prune_from(self, count: int) -> None:
        self._prune_from = self._prune_at = count

    def job(self, job_id: str | None) -> JobRecord:
        """The record of ``job_id``, created on first use."""
        record = self.jobs.get(job_id)
        if record is None:
            if len(self.jobs) >= self._prune_at:
                self.prune()
            record = self.jobs[job_id] = JobRecord(job_id, touched=self._generation)
        else:
            record.touched = self._generation
        return record

    def held(self, job_ids: Iterable[str | None]) -> _Held:
        """The records of ``job_ids`` by job id, kept (not let go by :meth:`prune`) until the
        ``with`` block ends: for whoever reads a record, awaits, and reads it again."""
        return _Held(self, job_ids)

    def prune(self) -> int:
        """Let go of the records of jobs nobody here holds (:meth:`JobRecord.idle`) and that no
        one asked for since the last prune; returns how many went. What they knew is a
        shortcut only: the store has the job's state, and a record made again starts from
        it."""
        generation, jobs = self._generation, self.jobs
        quiet = [
            job_id
            for job_id, record in jobs.items()
            if job_id is not None and record.touched < generation and record.idle()
        ]
        for job_id in quiet:
            del jobs[job_id]
        self._generation = generation + 1
        self._prune_at = max(self._prune_from, 2 * len(jobs))
        return len(quiet)

    async def deliver(
        self,
        events: Sequence[JobEvent],
        *,
        authoritative: bool = False,
        as_of: float | None = None,
        claim: tuple[str, float] | None = None,
    ) -> None:
        """Record and dispatch ``events``; returns once every one is recorded.

        ``events`` is what one network read decoded (a stream read, a webhook delivery, a
        polled snapshot). They are grouped by job, each job's turn is taken once, the whole
        batch is recorded in one :meth:`Store.record_batch <jobwatch.abc.Store.record_batch>`
        call, and then dispatched, each job's events in order. ``claim`` (``(key, ttl)``, a
        webhook delivery's identity) is claimed in that same call.
        """
        if not self.ready.is_set():
            await self.ready.wait()
        by_job: dict[str | None, list[JobEvent]] = {}
        for event in events:
            group = by_job.get(event.job_id)
            if group is None:
                by_job[event.job_id] = [event]
            else:
                group.append(event)
        if not by_job and claim is None:
            return
        # Held from the first until the batch is done: a record let go meanwhile (a batch of
        # thousands of new jobs prunes as it gathers them) would leave a job's turn behind.
        with self.held(by_job) as records:
            await self._take_turns(records)
            try:
                await self._deliver_batch(by_job, records, authoritative, as_of, claim)
            finally:
                for record in records.values():
                    _pass_turn(record)

    async def _take_turns(self, records: dict[str | None, JobRecord]) -> None:
        """Take each job's turn: at once when no job is busy, else in order of job id, so that
        two batches waiting for each other's jobs cannot both hold one the other waits for."""
        if not any(record.busy for record in records.values()):
            for record in records.values():
                record.busy = True
            return
        taken: list[JobRecord] = []
        try:
            for record in sorted(records.values(), key=_order):
                if record.busy:
                    await self._wait_turn(record)
                else:
                    record.busy = True
                taken.append(record)
        except BaseException:
            for record in taken:
                _pass_turn(record)
            raise

    async def _deliver_batch(
        self,
        by_job: dict[str | None, list[JobEvent]],
        records: dict[str | None, JobRecord],
        authoritative: bool,
        as_of: float | None,
        claim: tuple[str, float] | None,
    ) -> None:
        """Record one batch with one store call, then dispatch it."""
        steps: list[_Step] = []
        heard = None
        for job_id, group in by_job.items():
            record = records[job_id]
            if record.heard is not None:
                record.heard = heard = heard or anyio.current_time()
            for event in group:
                self.events_in += 1
                if job_id is not None and event.terminal:
                    record.started = False
                elif event.kind is _STARTED and record.started and event.attempt is None:
                    # (A `started` of a numbered attempt may begin a new run: the guard decides.)
                    self._dropped(event, "duplicate")
                    continue
                steps.append(_Step(record, event, authoritative, as_of))
        if not steps and claim is None:
            return
        try:
            verdicts = await self._record(steps, claim)
        except JobwatchError:
            raise
        except Exception:
            # A value no durable store can keep (a plugin provider's count past 64 bits, a
            # lone surrogate in an id): the events holding one are dropped, each said, and the
            # rest recorded; a failure no event explains goes on up.
            kept = [step for step in steps if not self._unwritable(step.event)]
            if len(kept) == len(steps):
                raise
            steps = kept
            if not steps and claim is None:
                return
            verdicts = await self._record(steps, claim)
        shared, settle = self.store.shared, self._settle
        delivered = [
            new
            for step, verdict in zip(steps, verdicts, strict=True)
            if (new := settle(step.record, step.event, verdict, shared)) is not None
        ]
        if self._dispatch_batch is not None:
            await self._dispatch_batch(delivered)
        else:
            for new in delivered:
                await self._dispatch(new)

    async def _record(self, steps: list[_Step], claim: tuple[str, float] | None) -> list[Verdict]:
        """The verdicts of one ``record_batch`` call, which takes ``claim`` with the records."""
        store, records = self.store, [(s.event.job_id, s) for s in steps]
        if claim is None:
            return await store.record_batch(records, ttl=self.dedup_ttl)
        if takes_keyword(store.record_batch, "claim"):
            return await store.record_batch(records, ttl=self.dedup_ttl, claim=claim)
        # A store written before claims rode with records: claimed once they are recorded.
        verdicts = await store.record_batch(records, ttl=self.dedup_ttl)
        await claim_recorded(store, claim)
        return verdicts

    def _settle(
        self, record: JobRecord, event: JobEvent, verdict: Verdict, shared: bool
    ) -> JobEvent | None:
        """Act on one recorded event's verdict: ask for a check, keep the bookkeeping of
        starts and final events; the event to dispatch, if it was delivered."""
        job_id = event.job_id
        if verdict.check and job_id is not None:
            self._on_check(job_id)
        if (
            event.kind is _STARTED
            and job_id is not None
            and not shared
            and (verdict.event is not None or verdict.dropped == "duplicate" and not verdict.check)
        ):
            # Other processes record into a shared store: there, no shortcut of our own.
            record.started = True
        delivered = verdict.event
        if delivered is None:
            self._dropped(event, verdict.dropped or "dropped")
            return None
        self.events_out += 1
        self._keep_final(record, delivered)
        if self.observers:
            self.notify(delivered)
        return delivered

    def _keep_final(self, record: JobRecord, delivered: JobEvent) -> None:
        job_id = delivered.job_id
        if delivered.terminal and job_id is not None:
            record.final = delivered
            record.started = False  # a `started` earlier in the batch set it: the run is over
            self._on_final(job_id)
        elif record.final is not None and not delivered.kind.carries_data:
            record.final = None  # a new run began
            if job_id is not None:
                self._on_new_run(job_id)

    async def replay(self, event: JobEvent) -> None:
        """Dispatch an event the store recorded earlier but never saw dispatched (its inbox at
        start, a record whose answer was lost): in its job's turn, with the bookkeeping of
        final events, as if delivered now."""
        async with self.turn(event.job_id) as record:
            self._keep_final(record, event)
            self.notify(event)
            await self._dispatch(event)

    @contextlib.asynccontextmanager
    async def turn(self, job_id: str | None) -> AsyncIterator[JobRecord]:
        """The job's turn: none of its events is recorded or dispatched until the block ends."""
        with self.held((job_id,)) as records:
            await self._take_turns(records)
            try:
                yield records[job_id]
            finally:
                _pass_turn(records[job_id])

    async def _wait_turn(self, record: JobRecord) -> None:
        turn = anyio.Event()
        if record.waiting is None:
            record.waiting = deque()
        record.waiting.append(turn)
        try:
            await turn.wait()
        except BaseException:
            if turn.is_set():
                _pass_turn(record)  # the turn came with the cancellation: pass it on
            else:
                record.waiting.remove(turn)
            raise

    def _unwritable(self, event: JobEvent) -> bool:
        """Whether ``event`` holds a value no durable store can keep; if so it is dropped
        (``unwritable``) and logged with what to fix."""
        reason = unwritable(event)
        if reason is None:
            return False
        log.error(
            "dropped %s from %s: %s, which no durable store can keep; the provider that "
            "decoded it should refuse such input (a DecodeError)",
            event.key,
            event.source,
            reason,
        )
        self._dropped(event, "unwritable")
        return True

    def _dropped(self, event: JobEvent, reason: str) -> None:
        self.dropped[reason] += 1
        self.notify(event, reason)

    def notify(self, event: JobEvent, dropped: str | None = None) -> None:
        """Tell the observers of ``event``: dispatched (``dropped`` None), or dropped and why."""
        for observer in self.observers:
            observer(event, dropped)


class _Held:
    """:meth:`Pipeline.held` (a class rather than a generator: it is on every batch's path)."""

    __slots__ = ("records",)

    def __init__(self, pipeline: Pipeline, job_ids: Iterable[str | None]) -> None:
        self.records: dict[str | None, JobRecord] = {}
        try:
            for job_id in job_ids:
                record = pipeline.job(job_id)
                record.holds += 1  # before the next job() may prune
                self.records[job_id] = record
        except BaseException:
            self.__exit__()
            raise

    def __enter__(self) -> dict[str | None, JobRecord]:
        return self.records

    def __exit__(self, *exc_info: object) -> None:
        for record in self.records.values():
            record.holds -= 1


class _Step:
    """One event of a batch on its way through the store: called with the job's state, it
    asks the ordering guard (what ``Store.record_batch`` calls for each record). A state it
    changes is stamped with the wall clock of that moment, inside the store's atomic record
    (after any wait for another process's lock): a poll asked before it is older news."""

    __slots__ = ("as_of", "authoritative", "event", "record")

    def __init__(
        self, record: JobRecord, event: JobEvent, authoritative: bool, as_of: float | None
    ) -> None:
        self.record, self.event = record, event
        self.authoritative, self.as_of = authoritative, as_of

    def __call__(self, state: JobState | None) -> Verdict:
        return decide(
            state,
            self.event,
            authoritative=self.authoritative,
            as_of=self.as_of,
            now=time.time(),
        )


async def claim_recorded(store: Store, claim: tuple[str, float]) -> None:
    """Claim ``(key, ttl)``, a webhook delivery's identity, after its events were recorded
    (where it could not ride with them): a failure is logged, not raised, since the delivery
    is recorded all the same and its events' keys still deduplicate."""
    try:
        await store.claim(claim[0], ttl=claim[1])
    except Exception as exc:
        log.warning("could not keep the identity of a recorded webhook delivery: %s", exc)


def unwritable(event: JobEvent) -> str | None:
    """Why no durable store could keep ``event`` (SQLite's integers are 64-bit, its text and
    Redis's keys UTF-8); None when any can."""
    for name in ("completed", "total", "attempt"):
        value = getattr(event, name)
        if value is not None and not -MAX_COUNT - 1 <= value <= MAX_COUNT:
            return f"its {name} ({value}) does not fit in 64 bits"
    for name in ("job_id", "key", "source", "error"):
        value = getattr(event, name)
        if value is not None and not _encodable(value):
            return f"its {name} holds a character UTF-8 has no form for (a lone surrogate)"
    return None  # (data is always written: JobEvent.to_json escapes and stringifies)


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _order(record: JobRecord) -> tuple[bool, str]:
    return record.job_id is not None, record.job_id or ""


def _pass_turn(record: JobRecord) -> None:
    if record.waiting:
        record.waiting.popleft().set()  # the turn passes to the next in line
    else:
        record.busy = False
