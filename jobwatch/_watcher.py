"""The Watcher: one task group owning the transports, the pipeline and the dispatcher."""

from __future__ import annotations

import contextlib
import enum
import functools
import logging
import math
from collections import defaultdict, deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Collection,
    Iterable,
    Mapping,
    Sequence,
)
from contextlib import aclosing
from types import TracebackType
from typing import Any, Self

import anyio
import attrs
import httpx
from anyio.abc import TaskGroup

from ._api import APIClient
from ._budget import RequestBudget
from ._config import Config, load_config
from ._dispatch import Callback, Dispatcher, Subscription
from ._errors import (
    AuthenticationError,
    ConfigError,
    JobNotFound,
    JobwatchError,
    WatcherClosed,
    WatchTimeout,
    leaves,
)
from ._events import EventKind, JobEvent
from ._guard import decide, qualify
from ._policy import Decision, Signals, check_names, choose_transport
from ._registry import GROUPS, base, installed, load
from ._values import JobState, Request, Response, Snapshot
from .abc import Provider, Store, Transport, TransportHost, Verdict

__all__ = ["Statistics", "Watcher"]

log = logging.getLogger("jobwatch")

DEFAULT_TIMEOUT = 3600.0


@attrs.frozen(kw_only=True)
class Statistics:
    """A snapshot of a Watcher's counters.

    ``events_in`` counts events the transports decoded, ``events_out`` those delivered after
    dedup; ``dropped`` says why the rest were dropped. ``transports`` holds each transport's
    own counters (requests, reconnects, fallbacks, ...).
    """

    events_in: int
    events_out: int
    duplicates: int
    dropped: Mapping[str, int]
    requests: int
    rate_limited: int
    reconnects: int
    reconciles: int
    safety_polls: int
    callback_errors: int
    dead_letters: int
    transports: Mapping[str, Mapping[str, int]]


class _State(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


class _JobQueue:
    """One ``watch()`` iterator's queue: events, then maybe an error."""

    def __init__(self) -> None:
        self.send, self.receive = anyio.create_memory_object_stream[JobEvent | JobwatchError](
            1000
        )


class Watcher(TransportHost):
    """Watches jobs through the transports the policy (or the configuration) chose.

    Use it as an async context manager; register callbacks before the block's first ``await``
    (or before entering) so that events replayed from the store's inbox reach them::

        async with jobwatch.Watcher(config) as watcher:
            final = await watcher.wait(job_id)

    ``transports``, ``store`` and ``provider`` take ready instances instead of the names in
    the configuration (tests, embedding); ``environ`` and ``signals`` feed the policy.
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        transports: Sequence[Transport] | None = None,
        store: Store | None = None,
        provider: Provider | None = None,
        environ: Mapping[str, str] | None = None,
        signals: Signals | None = None,
        http_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config if config is not None else load_config()
        # The transport names may come from the environment or a flag: not the file's to name.
        self.decision = self._decide(transports, environ, signals)
        with self.config.naming_source():  # a component's ConfigError names the file
            self.provider = provider or load(
                "provider", self.config.provider, Provider).from_config(self.config)
            self._transports = list(transports) if transports is not None else self._build()
            self.store = store or load("store", self.config.store, Store).from_config(
                self.config)
            _check_other_tables(self.config, {
                ("provider", self.config.provider), ("store", self.config.store),
                *(("transport", n) for n in self.decision.transports)})
        self._api = APIClient(self.config, self.provider, _make_budget(self.config),
                              base_url=self.config.base_url, http_transport=http_transport)
        self._dispatcher = Dispatcher(self.store, on_unsubscribe=self._on_unsubscribe)
        self._state = _State.NEW
        self._tg: TaskGroup | None = None
        self._locks: dict[str | None, deque[anyio.Event]] = {}
        # Jobs whose current run's `started` was recorded: a stream repeats `started` with
        # every progress frame, and a repeat needs no store trip. Every terminal event passes
        # through this process and forgets the job (a retry may follow) — unless other
        # processes record into the same store, where this cache is not used.
        self._started: set[str] = set()
        self._gate = anyio.Event()
        self._watch_counts: dict[str, int] = defaultdict(int)
        self._queues: dict[str, set[_JobQueue]] = defaultdict(set)
        self._finals: dict[str, JobEvent] = {}
        self._errors: dict[str, JobwatchError] = {}
        self._snapshots: dict[str, Snapshot] = {}
        self._heard: dict[str, float] = {}
        self._checking: set[str] = set()
        self._inherited: list[str] = []
        self._terminal_at: dict[str, float] = {}
        self._counters: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self._dropped: dict[str, int] = defaultdict(int)
        self._totals: dict[str, int] = defaultdict(int)

    # -- construction --------------------------------------------------------------------

    def _decide(self, transports: Sequence[Transport] | None, environ: Mapping[str, str] | None,
                signals: Signals | None) -> Decision:
        if transports is not None:
            names = tuple(t.name for t in transports)
            push = bool(transports) and all(t.push for t in transports)
            return Decision(transports=names, reasons=("transports given to the Watcher",),
                            safety_poll=self.config.safety_poll if push else 0.0)
        decision = choose_transport(self.config, environ, signals)
        check_names(decision.transports, installed("transport"))
        return decision

    def _build(self) -> list[Transport]:
        config = self.config
        if self.decision.scope is not None and "scope" not in config.table("sse"):
            config = config.with_table("sse", scope=self.decision.scope)
        return [load("transport", name, Transport).from_config(config)
                for name in self.decision.transports]

    # -- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._state is not _State.NEW:
            raise WatcherClosed("this Watcher was already used; create a new Watcher")
        self._state = _State.OPEN
        try:
            await self.store.open()
            self._api.open()
            # Read before anything of this process marks jobs watched: these are the jobs an
            # earlier process left unfinished.
            self._inherited = [s.job_id for s in await self.store.active_jobs()]
            tg = anyio.create_task_group()
            await tg.__aenter__()
            self._tg = tg
            self._dispatcher.start(tg)
            for transport in self._transports:
                await tg.start(transport.run, self)
            for job_id in self._watch_counts:  # subscribed before the Watcher started
                self._watch_transports(job_id)
                tg.start_soon(self._mark_watched, job_id)
            tg.start_soon(self._open_gate)
            if self.decision.safety_poll > 0:
                tg.start_soon(self._safety_net, self.decision.safety_poll)
        except BaseException as exc:
            await self._shutdown(type(exc), exc, exc.__traceback__)
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> bool | None:
        return await self._shutdown(exc_type, exc, tb)

    async def aclose(self) -> None:
        """Stop every transport and task, and close the store (same as leaving the block)."""
        if self._state is _State.OPEN:
            await self._shutdown(None, None, None)

    async def _shutdown(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> bool | None:
        self._state = _State.CLOSED
        self._dispatcher.close()
        result = None
        try:
            if self._tg is not None:
                self._tg.cancel_scope.cancel()
                try:
                    result = await self._tg.__aexit__(exc_type, exc, tb)
                except BaseExceptionGroup as group:
                    # The block's own error, or a single failure, is raised as itself.
                    inner = leaves(group)
                    if exc is not None and all(e is exc for e in inner):
                        raise exc from None
                    if len(inner) == 1:
                        raise inner[0] from None
                    raise
        finally:
            with anyio.CancelScope(shield=True):
                await self._api.aclose()
                await self.store.aclose()
        return result

    def _check_open(self) -> None:
        if self._state is _State.CLOSED:
            raise WatcherClosed("this Watcher is closed; create a new Watcher")

    async def _open_gate(self) -> None:
        # Runs at the first checkpoint of the `async with` body, after its callbacks are on.
        # Deliveries wait for the gate, so nothing new is recorded while the inbox replays.
        for event in await self.store.pending():
            self._totals["replayed"] += 1
            await self._dispatcher.dispatch(event)
        self._gate.set()
        for job_id in self._inherited:
            self._watch_counts[job_id] += 0
            self._watch_transports(job_id)
        if self._inherited:
            await self.reconcile(self._inherited, reason="start")

    # -- the application's API -----------------------------------------------------------

    def on(self, *kinds: str) -> Callable[[Callback], Callback]:
        """Decorator: call the function for events of these kinds (``"*"`` = every kind)."""
        def register(callback: Callback) -> Callback:
            self.subscribe(callback, kinds=kinds or None)
            return callback
        return register

    def subscribe(self, callback: Callback, *, kinds: Collection[str] | None = None,
                  job_id: str | None = None) -> Subscription:
        """Call ``callback`` (sync or async) for matching events; ``job_id=None``: every job."""
        self._check_open()
        sub = self._dispatcher.subscribe(callback, kinds=kinds, job_id=job_id)
        if job_id is not None:
            self._add_watch(job_id)
        return sub

    def _on_unsubscribe(self, sub: Subscription) -> None:
        if sub.job_id is not None and sub.retry:
            self._drop_watch(sub.job_id)

    async def watch(self, job_id: str) -> AsyncGenerator[JobEvent, None]:
        """This job's events as they arrive; ends after its terminal event."""
        self._check_open()
        if job_id not in self._finals:
            # Finished before this process knew of it: answer from the store and one poll,
            # without opening a stream or a poll schedule for it.
            stored = await self._final_from_store(job_id)
            if stored is not None:
                yield stored
                return
        queue = _JobQueue()
        self._queues[job_id].add(queue)

        async def put(event: JobEvent) -> None:
            with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                await queue.send.send(event)  # closed: the iterator has ended

        sub = self._dispatcher.subscribe(put, job_id=job_id, retry=False)
        self._add_watch(job_id)
        try:
            async with aclosing(self._replay_final(job_id, queue)) as items:
                async for item in items:
                    if isinstance(item, JobwatchError):
                        raise item
                    yield item
                    if item.terminal:
                        return
        finally:
            sub.cancel()
            queue.send.close()
            queue.receive.close()
            self._queues[job_id].discard(queue)
            self._drop_watch(job_id)

    async def _replay_final(self, job_id: str, queue: _JobQueue
                            ) -> AsyncGenerator[JobEvent | JobwatchError, None]:
        final = self._finals.get(job_id)
        if final is not None:
            yield final
            return
        if job_id in self._errors:
            yield self._errors[job_id]
            return
        async for item in queue.receive:
            yield item

    async def _final_from_store(self, job_id: str) -> JobEvent | None:
        state = await self.store.get_job(job_id)
        if state is None or not state.terminal:
            return None
        # Finished before this process knew it: the snapshot shows the terminal state again.
        response = await self._request_with_retry(self.provider.status_request(job_id))
        _, events = self.provider.decode_status(job_id, response, None, source="store")
        final = next((e for e in events if e.terminal), None)
        return None if final is None else qualify(final, state.run)

    async def wait(
        self, job_id: str, timeout: float | None = DEFAULT_TIMEOUT  # noqa: ASYNC109 - DESIGN §4
    ) -> JobEvent:
        """The job's terminal event; raises WatchTimeout after ``timeout`` seconds."""
        last: JobEvent | None = None
        deadline = math.inf if timeout is None else timeout
        with anyio.move_on_after(deadline):
            async with aclosing(self.watch(job_id)) as events:
                async for event in events:
                    last = event
                    if event.terminal:
                        return event
        raise WatchTimeout(
            f"job {job_id} did not finish within {timeout} s (last event: "
            f"{last.kind if last else 'none'}); pass a longer timeout, or check the job",
            job_id=job_id, last_event=last,
        )

    async def results(self, job_id: str) -> AsyncIterator[Mapping[str, Any]]:
        """Every result entry of a job, following the API's pagination within the budget."""
        self._check_open()
        request: Request | None = self.provider.results_request(job_id)
        while request is not None:
            response = await self._request_with_retry(request)
            page = self.provider.decode_results(job_id, response)
            for item in page.items:
                yield item
            request = page.next

    def asgi_app(self) -> Any:
        """The webhook receiver as an ASGI app, to mount in your own server."""
        for transport in self._transports:
            if transport.name == "webhook":
                return transport.asgi_app()  # type: ignore[attr-defined]
        raise ConfigError(
            "asgi_app() needs the webhook transport; set transport = \"webhook\" (or a list "
            "with it) and configure [jobwatch.webhook]"
        )

    def bound_url(self, transport: str) -> str:
        """The address a receiving transport (``webhook``) listens on, once started."""
        for candidate in self._transports:
            url = getattr(candidate, "bound_url", None)
            if candidate.name == transport and url:
                return str(url)
        raise ConfigError(f"no running {transport!r} transport listens on an address; set "
                          f"[jobwatch.{transport}] listen")

    def statistics(self) -> Statistics:
        """A frozen snapshot of the counters."""
        per = {name: dict(c) for name, c in self._counters.items()}
        counts = self._dispatcher.counts
        return Statistics(
            events_in=self._totals["events_in"], events_out=self._totals["events_out"],
            duplicates=self._dropped.get("duplicate", 0), dropped=dict(self._dropped),
            requests=self._api.requests, rate_limited=self._api.rate_limited_count,
            reconnects=sum(c.get("reconnects", 0) for c in per.values()),
            reconciles=self._totals["reconciles"], safety_polls=self._totals["safety_polls"],
            callback_errors=counts.callback_errors, dead_letters=counts.dead_letters,
            transports=per,
        )

    # -- watched jobs ----------------------------------------------------------------------

    def _add_watch(self, job_id: str) -> None:
        self._watch_counts[job_id] += 1
        self._heard.setdefault(job_id, anyio.current_time() if self._state is _State.OPEN else 0)
        if self._state is _State.OPEN and self._watch_counts[job_id] == 1:
            self._watch_transports(job_id)
            self._tg.start_soon(self._mark_watched, job_id)  # type: ignore[union-attr]

    def _drop_watch(self, job_id: str) -> None:
        self._watch_counts[job_id] -= 1
        if self._watch_counts[job_id] <= 0:
            del self._watch_counts[job_id]
            self._unwatch_transports(job_id)

    def _watch_transports(self, job_id: str) -> None:
        if job_id in self._finals or job_id in self._errors:
            return
        self._heard[job_id] = anyio.current_time()
        for transport in self._transports:
            transport.watch(job_id)

    def _unwatch_transports(self, job_id: str) -> None:
        self._heard.pop(job_id, None)
        for transport in self._transports:
            transport.unwatch(job_id)

    async def _mark_watched(self, job_id: str) -> None:
        # Durable only so that a restarted Watcher reconciles the job; a store failure here
        # costs that, never the Watcher. Through record(), so that it is atomic with the
        # job's events: a read-then-write could put back a state older than a terminal one.
        def watched(state: JobState | None) -> Verdict:
            if state is not None and state.watched:
                return Verdict(event=None)
            return Verdict(event=None, state=attrs.evolve(state or JobState(job_id=job_id),
                                                          watched=True))

        try:
            await self.store.record(job_id, watched, ttl=self.config.dedup_ttl)
        except JobwatchError as exc:
            log.warning("could not mark job %s as watched in the store: %s", job_id, exc)

    def watched(self) -> frozenset[str]:
        return frozenset(j for j in self._watch_counts
                         if j not in self._finals and j not in self._errors)

    def end_job(self, job_id: str, error: JobwatchError) -> None:
        if job_id in self._errors:
            return  # ended already (a transport and a reconcile may both find out): said once
        log.warning("stopped watching job %s: %s", job_id,
                    str(error).removeprefix(f"job {job_id}: "))
        self._errors[job_id] = error
        self._unwatch_transports(job_id)
        for queue in list(self._queues.get(job_id, ())):
            try:
                queue.send.send_nowait(error)
            except anyio.WouldBlock:
                pass

    # -- TransportHost ---------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return self.config.base_url

    @property
    def transports(self) -> tuple[str, ...]:
        return tuple(t.name for t in self._transports)

    @property
    def budget(self) -> RequestBudget:
        """The request budget every request of this Watcher draws from (``rpm``)."""
        return self._api.budget

    def count(self, transport: str, name: str, n: int = 1) -> None:
        self._counters[transport][name] += n

    async def spend(self) -> None:
        await self._api.spend()

    async def request(self, request: Request) -> Response:
        return await self._api.request(request)

    def rate_limited(self, retry_after: float | None) -> None:
        self._api.rate_limited(retry_after)

    async def _request_with_retry(self, request: Request) -> Response:
        return await self._api.request_with_retry(request)

    async def deliver(self, events: Sequence[JobEvent], *, authoritative: bool = False,
                      as_of: float | None = None) -> None:
        if not self._gate.is_set():
            await self._gate.wait()
        if self.store.concurrent and len(events) > 1:
            by_job: dict[str | None, list[JobEvent]] = {}
            for event in events:
                by_job.setdefault(event.job_id, []).append(event)
            if len(by_job) > 1:
                async with anyio.create_task_group() as tg:
                    for group in by_job.values():
                        tg.start_soon(self._deliver_in_order, group, authoritative, as_of)
                return
        await self._deliver_in_order(events, authoritative, as_of)

    async def _deliver_in_order(self, events: Sequence[JobEvent], authoritative: bool,
                                as_of: float | None) -> None:
        for event in events:
            # One job at a time keeps its order; different jobs record concurrently, which
            # lets the store commit them together. The lock costs a dict entry when nobody
            # waits for it.
            job_id = event.job_id
            if job_id in self._locks:
                await self._wait_turn(job_id)
            else:
                self._locks[job_id] = deque()
            try:
                stale = authoritative and not self._fresh(event, as_of)
                await self._deliver_one(event, authoritative and not stale, check=not stale)
            finally:
                self._unlock(job_id)

    async def _wait_turn(self, job_id: str | None) -> None:
        turn = anyio.Event()
        self._locks[job_id].append(turn)
        try:
            await turn.wait()
        except BaseException:
            if turn.is_set():
                self._unlock(job_id)  # the turn came with the cancellation: pass it on
            else:
                self._locks[job_id].remove(turn)
            raise

    def _unlock(self, job_id: str | None) -> None:
        waiters = self._locks[job_id]
        if waiters:
            waiters.popleft().set()  # ownership passes to the next in line
        else:
            del self._locks[job_id]

    def _fresh(self, event: JobEvent, as_of: float | None) -> bool:
        # A poll answered after a pushed terminal event, but asked before it, shows the old
        # run still going: it is no evidence of a new run.
        ended = self._terminal_at.get(event.job_id or "")
        return as_of is None or ended is None or as_of >= ended

    async def _deliver_one(self, event: JobEvent, authoritative: bool, *,
                           check: bool = True) -> None:
        self._totals["events_in"] += 1
        job_id = event.job_id
        if job_id is not None and job_id in self._heard:
            self._heard[job_id] = anyio.current_time()
        if job_id is not None and event.terminal:
            self._started.discard(job_id)
        elif event.kind is EventKind.STARTED and job_id in self._started:
            self._dropped["duplicate"] += 1
            return
        verdict = await self.store.record(
            event.job_id, functools.partial(decide, event=event, authoritative=authoritative),
            ttl=self.config.dedup_ttl,
        )
        if verdict.check and check and event.job_id is not None:
            self._check(event.job_id)
        if event.kind is EventKind.STARTED and job_id is not None and not self.store.shared \
                and (verdict.event is not None or verdict.dropped == "duplicate"
                     and not verdict.check):
            self._started.add(job_id)
        if verdict.event is None:
            self._dropped[verdict.dropped or "dropped"] += 1
            return
        self._totals["events_out"] += 1
        if verdict.event.terminal and verdict.event.job_id is not None:
            self._finals[verdict.event.job_id] = verdict.event
            self._terminal_at[verdict.event.job_id] = anyio.current_time()
            self._unwatch_transports(verdict.event.job_id)
        elif verdict.event.job_id in self._finals and not verdict.event.kind.startswith("page"):
            del self._finals[verdict.event.job_id]  # a new run began
        await self._dispatcher.dispatch(verdict.event)

    def _check(self, job_id: str) -> None:
        if job_id not in self._checking and self._tg is not None:
            self._checking.add(job_id)
            self._tg.start_soon(self._run_check, job_id)

    async def _run_check(self, job_id: str) -> None:
        try:
            await self.reconcile([job_id], reason="pushed event contradicts a terminal state")
        finally:
            self._checking.discard(job_id)

    async def reconcile(self, job_ids: Iterable[str], *, reason: str) -> None:
        for job_id in job_ids:
            self._totals["reconciles"] += 1
            log.debug("reconciling job %s by one poll: %s", job_id, reason)
            await self._poll_once(job_id)

    async def _poll_once(self, job_id: str) -> None:
        try:
            response = await self._request_with_retry(self.provider.status_request(job_id))
        except (JobNotFound, AuthenticationError) as exc:
            self.end_job(job_id, exc)
            return
        except JobwatchError as exc:
            log.warning("could not poll job %s: %s", job_id, exc)
            return
        try:
            snapshot, events = self.provider.decode_status(
                job_id, response, self._snapshots.get(job_id), source="poll")
        except JobwatchError as exc:
            log.warning("could not decode job %s: %s", job_id, exc)
            return
        self._snapshots[job_id] = snapshot
        await self.deliver(events, authoritative=True, as_of=response.sent_at)

    async def _safety_net(self, seconds: float) -> None:
        tick = max(min(seconds / 4, 5.0), 0.05)
        while True:
            await anyio.sleep(tick)
            now = anyio.current_time()
            silent = [j for j in self.watched() if now - self._heard.get(j, now) >= seconds]
            for job_id in silent:
                self._heard[job_id] = now
                self._totals["safety_polls"] += 1
                await self.reconcile([job_id], reason=f"silent for {seconds:g} s (safety net)")


def _check_other_tables(config: Config, built: set[tuple[str, str]]) -> None:
    """Build each component that has a table but that this Watcher does not use.

    Its options are then checked now (an unknown key, a wrong type or value is a ConfigError)
    rather than on the day the policy picks it — in a terminal instead of CI, say.
    """
    for kind in GROUPS:
        for name in installed(kind):
            if name in config.tables and (kind, name) not in built:
                load(kind, name, base(kind)).from_config(config)


def _make_budget(config: Config) -> RequestBudget:
    from .transports.poll import PollOptions

    return RequestBudget(config.options("poll", PollOptions).check().rpm)

