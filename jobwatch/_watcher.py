"""The Watcher: one task group owning the transports, the pipeline and the dispatcher."""

from __future__ import annotations

import contextlib
import enum
import logging
import math
import numbers
from collections import defaultdict
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
from anyio.abc import TaskGroup, TaskStatus

from ._api import APIClient
from ._budget import BudgetOptions, RequestBudget
from ._config import Config, load_config
from ._dispatch import (
    DEFAULT_RETRY,
    Callback,
    Dispatcher,
    Retry,
    Subscription,
    being_cancelled,
)
from ._errors import (
    ConfigError,
    DecodeError,
    InvalidJobId,
    JobwatchError,
    TransportError,
    WatcherClosed,
    WatchTimeout,
    leaves,
)
from ._events import JobEvent
from ._guard import qualify, run_of
from ._http import Request, Response
from ._pipeline import JobRecord, Pipeline
from ._policy import Decision, Signals, check_names, choose_transport
from ._registry import GROUPS, build, installed
from ._state import JobState
from .abc import Outcome, Provider, Store, Transport, TransportHost, Verdict

__all__ = ["Statistics", "Watcher"]

log = logging.getLogger("jobwatch")

DEFAULT_TIMEOUT = 3600.0
#: Seconds a finished job's one confirming request may take before its known end stands.
_CONFIRM_DEADLINE = 5.0
#: Seconds between two questions to the store for events a failed record left recorded.
_STRANDED_EVERY = 1.0


@attrs.frozen(kw_only=True)
class Statistics:
    """A snapshot of a Watcher's counters.

    ``events_in`` counts events the transports decoded, ``events_out`` those delivered after
    dedup; ``dropped`` says why the rest were dropped. ``transports`` holds each transport's
    own counters (requests, reconnects, fallbacks, ...). ``stopped`` names each transport
    that stopped for good (the API refused the key of a stream, say) with why: nothing more
    arrives through it. Once every transport has stopped, the Watcher ends with that error.
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
    stopped: Mapping[str, str] = attrs.field(factory=dict)


class _State(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


class _JobQueue:
    """One ``watch()`` iterator's queue: events, then maybe an error that ends it."""

    def __init__(self) -> None:
        self.send, self.receive = anyio.create_memory_object_stream[JobEvent | JobwatchError](1000)
        self.error: JobwatchError | None = None

    def end(self, error: JobwatchError) -> None:
        """Raise ``error`` to the iterator once it has read what is queued (a full queue
        cannot lose it, as a last item could be)."""
        if self.error is None:
            self.error = error
        self.send.close()


class Watcher:
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
        with self.config.naming_source():  # a component's ConfigError names the file
            self.provider = provider or build("provider", self.config.provider, self.config)
            base_url = self.provider.resolve_base_url(self.config)
        # The transport names may come from the environment or a flag: not the file's to name.
        self.decision = self._decide(transports, environ, signals)
        with self.config.naming_source():
            self._transports = list(transports) if transports is not None else self._build()
            self.store = store or build("store", self.config.store, self.config)
            _check_other_tables(
                self.config,
                {
                    ("provider", self.config.provider),
                    ("store", self.config.store),
                    *(("transport", n) for n in self.decision.transports),
                },
            )
        self._api = APIClient(
            self.config,
            self.provider,
            _make_budget(self.config),
            base_url=base_url,
            http_transport=http_transport,
        )
        self._dispatcher = Dispatcher(self.store, on_unsubscribe=self._on_unsubscribe)
        self._pipeline = Pipeline(
            self.store,
            dedup_ttl=self.config.dedup_ttl,
            dispatch=self._dispatcher.dispatch,
            dispatch_batch=self._dispatcher.dispatch_batch,
            on_check=self._check,
            on_final=self._unwatch_transports,
            on_new_run=self._rewatch,
        )
        self._host = _Host(self)
        self._state = _State.NEW
        self._tg: TaskGroup | None = None
        # The task that entered the block (whose cancel scopes the task group sits in), what
        # aclose() in another task asks of it, and when it is done closing.
        self._owner: int | None = None
        self._close_asked = False
        self._running = False
        self._closed: anyio.Event | None = None
        # The jobs some subscriber waits on (or an earlier process left unfinished).
        self._watching: dict[str, JobRecord] = {}
        self._inherited: list[str] = []
        self._counters: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self._totals: dict[str, int] = defaultdict(int)
        # Transports that stopped for good, by id() (a plugin's may not be hashable), and why.
        self._stopped: dict[int, tuple[Transport, JobwatchError]] = {}
        # The error the Watcher ends with once no transport runs any more.
        self._failure: JobwatchError | None = None

    # -- construction --------------------------------------------------------------------

    def _decide(
        self,
        transports: Sequence[Transport] | None,
        environ: Mapping[str, str] | None,
        signals: Signals | None,
    ) -> Decision:
        if transports is not None:
            names = tuple(t.name for t in transports)
            push = bool(transports) and all(t.push for t in transports)
            return Decision(
                transports=names,
                reasons=("transports given to the Watcher",),
                safety_poll=self.config.safety_poll if push else 0.0,
            )
        decision = choose_transport(self.config, environ, signals, provider=self.provider)
        check_names(decision.transports, installed("transport"))
        return decision

    def _build(self) -> list[Transport]:
        config = self.config
        if self.decision.scope is not None and "scope" not in config.table("sse"):
            config = config.with_table("sse", scope=self.decision.scope)
        return [build("transport", name, config) for name in self.decision.transports]

    # -- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._state is not _State.NEW:
            raise WatcherClosed("this Watcher was already used; create a new Watcher")
        self._state = _State.OPEN
        self._owner = anyio.get_current_task().id
        self._closed = anyio.Event()
        try:
            await self.store.open()
            self._api.open()
            # Read before anything of this process marks jobs watched: these are the jobs an
            # earlier process left unfinished.
            self._inherited = [s.job_id for s in await self.store.active_jobs()]
            tg = anyio.create_task_group()
            await tg.__aenter__()
            self._tg = tg
            if type(self.store).monitor is not Store.monitor:  # (the default returns at once)
                tg.start_soon(self._monitor_store)
            self._dispatcher.start(tg)
            for transport in self._transports:
                await tg.start(self._run_transport, transport)
            for job_id in list(self._watching):  # subscribed before the Watcher started
                self._watch_transports(job_id)
                tg.start_soon(self._mark_watched, job_id)
            tg.start_soon(self._open_gate)
            tg.start_soon(self._dispatch_stranded)
            if self.decision.safety_poll > 0:
                tg.start_soon(self._safety_net, self.decision.safety_poll)
        except BaseException as exc:
            await self._shutdown(type(exc), exc, exc.__traceback__)
            raise
        self._running = True
        if self._close_asked:  # aclose() in another task while this one was starting
            tg.cancel_scope.cancel()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        return await self._shutdown(exc_type, exc, tb)

    async def aclose(self) -> None:
        """Stop every transport and task, and close the store (same as leaving the block).

        Called in another task than the one in the ``async with`` block (a signal handler, a
        callback), it cancels the block's body at its next ``await`` — the block then ends
        without an error — and returns once the Watcher is closed.
        """
        if self._state is _State.NEW or self._closed is None:
            return
        if self._state is _State.OPEN:
            if anyio.get_current_task().id == self._owner:
                await self._shutdown(None, None, None)
                return
            # The task group sits in the owner's cancel scopes: only the owner can leave it.
            self._close_asked = True
            if self._running and self._tg is not None:
                self._tg.cancel_scope.cancel()
        await self._closed.wait()

    async def _shutdown(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        if self._state is _State.CLOSED:
            return None  # aclose() inside the block, then the block's end: closed once
        self._state = _State.CLOSED
        self._dispatcher.close()
        # watch() and wait() in tasks that outlive the block end now, not at their timeout.
        self._end_watches(
            lambda job_id: WatcherClosed(
                f"the Watcher closed while job {job_id} was watched; wait for the job inside "
                "the Watcher's `async with` block"
            )
        )
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
            # Every transport stopped, and the block was cancelled for it (or had ended): the
            # block raises why. An error of the block's own, or a cancellation from outside,
            # goes on as it is.
            if self._failure is not None and (exc is None or result):
                raise self._failure
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    # Handled events leave the inbox: the next Watcher replays only the rest.
                    await self._dispatcher.flush()
                    await self._api.aclose()
                    await self.store.aclose()
                finally:
                    if self._closed is not None:
                        self._closed.set()
        return result

    async def _run_transport(
        self, transport: Transport, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Run ``transport``; once started, a JobwatchError it raises, or a return, means
        that it stopped for good (an error before it started fails the Watcher's start). One
        that ends so while it is being cancelled (the Watcher closes, from this task or
        another) has not stopped: it was stopped, and the Watcher ends as it was asked to."""
        status = _Started(task_status)
        try:
            await transport.run(self._host, task_status=status)
        except JobwatchError as exc:
            if not status.done or being_cancelled():
                raise
            error = exc
        else:
            if not status.done or being_cancelled():
                return  # anyio says that it never started, or it was cancelled
            error = TransportError(
                f"the {transport.name} transport stopped without saying why, so nothing more "
                "can arrive through it; report this to the transport's authors, and use "
                "another transport meanwhile"
            )
        if self._state is _State.OPEN:
            self._transport_stopped(transport, error)

    def _transport_stopped(self, transport: Transport, error: JobwatchError) -> None:
        self._stopped[id(transport)] = (transport, error)
        running = [t.name for t in self._transports if id(t) not in self._stopped]
        if running:
            log.error(
                "the %s transport stopped: %s; the Watcher goes on with %s",
                transport.name,
                error,
                ", ".join(running),
            )
            return
        # Said by the error the Watcher ends with; the log only tells the story.
        log.info(
            "the %s transport stopped: %s; no transport can report anything any more, so "
            "the Watcher ends",
            transport.name,
            error,
        )
        self._failure = error
        self._end_watches(lambda _: error)
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    async def _monitor_store(self) -> None:
        """Run the store's :meth:`~jobwatch.abc.Store.monitor`; the error it raises ends the
        Watcher (raised in its task group), and every watch() and wait() in progress with it."""
        try:
            await self.store.monitor()
        except JobwatchError as exc:
            if self._state is _State.OPEN and not being_cancelled():
                lost = exc
                self._end_watches(lambda _: lost)
            raise

    def _end_watches(self, error: Callable[[str | None], JobwatchError]) -> None:
        """End every watch() and wait() in progress with ``error(job_id)``: whoever waits for
        a job hears why nothing more will come."""
        for record in list(self._pipeline.jobs.values()):
            for queue in list(record.queues or ()):
                queue.end(error(record.job_id))

    def _check_open(self, *, starting: bool = False) -> None:
        """Raise WatcherClosed unless the Watcher runs (``starting``: or has not started)."""
        if self._state is _State.CLOSED:
            raise WatcherClosed("this Watcher is closed; create a new Watcher")
        if self._state is _State.NEW and not starting:
            raise WatcherClosed(
                "this Watcher is not running: use it inside `async with "
                "watcher:` (callbacks may be registered before entering)"
            )

    async def _open_gate(self) -> None:
        # Runs at the first checkpoint of the `async with` body, after its callbacks are on.
        # Deliveries wait for the gate, so nothing new is recorded while the inbox replays.
        pending = await self.store.pending()
        self._totals["replayed"] += len(pending)
        await self._replay(pending)
        self._pipeline.ready.set()
        for job_id in self._inherited:
            self._watch(job_id)
            self._watch_transports(job_id)
            if self._tg is not None:
                self._tg.start_soon(self._inherited_deadline, job_id)
        if self._inherited:
            await self._reconcile(self._inherited, reason="start")

    async def _dispatch_stranded(self) -> None:
        # A record that raised may have recorded its events all the same (a remote store's
        # answer lost on the way back): once the store can tell, they are dispatched here,
        # as the inbox is at start, instead of waiting in it for the next start.
        await self._pipeline.ready.wait()
        while True:
            await anyio.sleep(_STRANDED_EVERY)
            try:
                events = await self.store.stranded()
            except JobwatchError as exc:
                log.warning("could not ask the store for events left undispatched: %s", exc)
                continue
            self._totals["replayed"] += len(events)
            await self._replay(events)

    async def _replay(self, events: Sequence[JobEvent]) -> None:
        """Hand events the store recorded but never saw handled to the subscribers, in order.
        One of a run the job has left since (a dead letter moved back to the inbox) goes to
        the callbacks only, as :meth:`replay_dead_letter` hands it: it is old news to the
        job, to ``watch()`` and ``wait()`` and to the dashboard."""
        runs: dict[str, int] = {}  # each job's current run, read once (replays record none)
        for event in events:
            run, job_id = run_of(event.key), event.job_id
            if run is not None and job_id is not None:
                if job_id not in runs:
                    state = await self.store.get_job(job_id)
                    runs[job_id] = 0 if state is None else state.run
                if run < runs[job_id]:
                    await self._hand_to_callbacks(event)
                    continue
            await self._pipeline.replay(event)

    # -- the application's API -----------------------------------------------------------

    def on(self, *kinds: str, retry: Retry = DEFAULT_RETRY) -> Callable[[Callback], Callback]:
        """Decorator: call the function for events of these kinds (``"*"`` = every kind) of
        every job the transports report — see :meth:`subscribe` for which jobs those are,
        and for ``retry``."""

        def register(callback: Callback) -> Callback:
            self.subscribe(callback, kinds=kinds or None, retry=retry)
            return callback

        return register

    def subscribe(
        self,
        callback: Callback,
        *,
        kinds: Collection[str] | None = None,
        job_id: str | None = None,
        retry: Retry = DEFAULT_RETRY,
    ) -> Subscription:
        """Call ``callback`` (sync or async) for matching events.

        With ``job_id``, the Watcher watches that job (until the subscription is cancelled)
        and calls back for its events. With ``job_id=None``, it listens to whatever the
        transports report: webhooks and a workspace stream report every job of the account,
        but polling and per-job streams ask only about watched jobs — there the callback hears
        only of jobs watched by ``watch()``, ``wait()`` or a subscription with a ``job_id``.

        A callback that raises is called again as ``retry`` says (by default four calls, 0.5,
        2 and 8 s apart), then its event is kept in the store as a dead letter
        (``jobwatch inbox``); the subscription's later events wait meanwhile.
        """
        self._check_open(starting=True)
        if job_id is not None:
            check_job_id(job_id)
        else:
            self._dispatcher.note_every_job(self._transports)
        if not isinstance(retry, Retry):  # True/False mean something else to the dispatcher
            raise ConfigError(
                f"retry must be a jobwatch.Retry, e.g. jobwatch.Retry(attempts=4, "
                f"backoff=(0.5, 2, 8)), got {retry!r}"
            )
        sub = self._dispatcher.subscribe(callback, kinds=kinds, job_id=job_id, retry=retry)
        if job_id is not None:
            self._add_watch(job_id)
        return sub

    def _on_unsubscribe(self, sub: Subscription) -> None:
        if sub.job_id is not None and sub.retry:
            self._drop_watch(sub.job_id)

    async def watch(self, job_id: str) -> AsyncGenerator[JobEvent, None]:
        """This job's events as they arrive; ends after its terminal event."""
        self._check_open()
        check_job_id(job_id)
        # Held while the requests below are awaited: the record they answer into stays.
        with self._pipeline.held((job_id,)) as held:
            record = held[job_id]
            if record.final is not None and not record.watched:
                # It ended while nobody watched it here: it may have been retried since.
                await self._confirm_final(job_id)
            stored = None
            if record.final is None:
                # Finished before this process knew of it: answer from the store and one
                # poll, without opening a stream or a poll schedule for it.
                stored = await self._final_from_store(job_id)
        if stored is not None:
            yield stored
            return
        queue = _JobQueue()
        if record.queues is None:
            record.queues = set()
        record.queues.add(queue)

        async def put(event: JobEvent) -> None:
            with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                await queue.send.send(event)  # closed: the iterator has ended

        sub = self._dispatcher.subscribe(put, job_id=job_id, retry=False)
        self._add_watch(job_id)
        try:
            async with aclosing(self._replay_final(record, queue)) as items:
                async for item in items:
                    if isinstance(item, JobwatchError):
                        raise item
                    yield item
                    if item.terminal:
                        return
            if queue.error is not None:
                raise queue.error
        finally:
            sub.cancel()
            queue.send.close()
            queue.receive.close()
            record.queues.discard(queue)
            self._drop_watch(job_id)

    async def _replay_final(
        self, record: JobRecord, queue: _JobQueue
    ) -> AsyncGenerator[JobEvent | JobwatchError, None]:
        if record.final is not None:
            yield record.final
            return
        if record.error is not None:
            yield record.error
            return
        async for item in queue.receive:
            yield item

    async def _final_from_store(self, job_id: str) -> JobEvent | None:
        state = await self.store.get_job(job_id)
        if state is None or not state.terminal:
            return None
        # Finished before this process knew it: the snapshot shows the terminal state again.
        response = await self._api.request_with_retry(self.provider.status_request(job_id))
        _, events = self.provider.decode_status(job_id, response, None, source="store")
        final = next((e for e in events if e.terminal), None)
        return None if final is None else qualify(final, state.run)

    async def wait(
        self,
        job_id: str,
        timeout: float | None = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - DESIGN §4
    ) -> JobEvent:
        """The job's terminal event; raises WatchTimeout after ``timeout`` seconds."""
        check_timeout(timeout)
        last: JobEvent | None = None
        deadline = math.inf if timeout is None else timeout
        with anyio.move_on_after(deadline):
            async with aclosing(self.watch(job_id)) as events:
                async for event in events:
                    last = event
                    if event.terminal:
                        return event
        raise self._explained(
            WatchTimeout(
                f"job {job_id} did not finish within {timeout} s (last event: "
                f"{last.kind if last else 'none'}); pass a longer timeout, or check the job",
                job_id=job_id,
                last_event=last,
            )
        )

    def _explained(self, exc: WatchTimeout) -> WatchTimeout:
        """``exc``, saying so when the API was not answering at the end: a wait that times
        out because every request fails is not a slow job."""
        api = self._api
        if not api.failures_in_a_row or api.last_failure is None:
            return exc
        why = str(api.last_failure).removesuffix("; jobwatch retries with backoff")
        count = api.failures_in_a_row
        return WatchTimeout(
            f"{exc}; behind it, the API did not answer the last {count} request"
            f"{'s' * (count > 1)}: {why}",
            job_id=exc.job_id,
            last_event=exc.last_event,
        )

    async def replay_dead_letter(self, key: str) -> bool:
        """Hand the event of the dead letter ``key`` to the subscribers again, now.

        The store moves it back into its inbox (so a crash before every subscriber handled it
        replays it at the next start); once it has, this returns True, and the event is
        dispatched in its job's turn to every matching subscription, as at start: a callback
        that handled it before sees it again, so keep callbacks idempotent by ``event.key``.
        It is old news to the job: ``watch()``, ``wait()`` and the dashboard's table are not
        given it, and the job's runs are left as they are. False if the store keeps no dead
        letter ``key`` (stores that keep none: the default, and stores without a list of
        them).
        """
        self._check_open()
        kept = [event for event, _, _ in await self.store.dead_letters() if event.key == key]
        if not kept or not await self.store.replay_dead_letter(key):
            return False
        # Not awaited here: a callback may ask for it while its job's turn waits for room in
        # that callback's own queue.
        self._tg.start_soon(self._hand_to_callbacks, kept[-1])  # type: ignore[union-attr]
        return True

    async def _hand_to_callbacks(self, event: JobEvent) -> None:
        async with self._pipeline.turn(event.job_id):  # in order with the job's live events
            await self._dispatcher.dispatch(event, callbacks_only=True)

    async def results(self, job_id: str) -> AsyncIterator[Mapping[str, Any]]:
        """Every result entry of a job, following the API's pagination within the budget."""
        self._check_open()
        check_job_id(job_id)
        request: Request | None = self.provider.results_request(job_id)
        asked: set[tuple[Any, ...]] = set()
        later: list[Request] = []  # what pages said to read once their own pages run out
        while request is not None:
            asked.add(_identity(request))
            response = await self._api.request_with_retry(request)
            page = self.provider.decode_results(job_id, response)
            for item in page.items:
                yield item
            later[:0] = page.then
            request = page.next
            if request is not None and _identity(request) in asked:
                # An API that ignores its own cursor would hand out the same pages forever.
                raise DecodeError(
                    f"the results of job {job_id}: the next page ({request.method} "
                    f"{request.path} {dict(request.params)}) repeats a page already read; "
                    "stopped there (the API ignores the position it was asked for)"
                )
            while request is None and later:
                request = later.pop(0)
                if _identity(request) in asked:
                    request = None  # results named twice (one file as output and errors): once

    def asgi_app(self) -> Any:
        """The webhook receiver as an ASGI app, to mount in your own server."""
        for transport in self._transports:
            if transport.name == "webhook":
                return transport.asgi_app()  # type: ignore[attr-defined]
        raise ConfigError(
            'asgi_app() needs the webhook transport; set transport = "webhook" (or a list '
            "with it) and configure [jobwatch.webhook]"
        )

    def dashboard_app(self) -> Any:
        """The live dashboard of every job this Watcher sees, and ``GET /events``, its
        dispatched events as an SSE relay: an ASGI app to mount in your own server."""
        from ._dashboard import DashboardApp

        return DashboardApp.for_watcher(self)

    def bound_url(self, transport: str) -> str:
        """The address a receiving transport (``webhook``) listens on, once started."""
        for candidate in self._transports:
            url = getattr(candidate, "bound_url", None)
            if candidate.name == transport and url:
                return str(url)
        raise ConfigError(
            f"no running {transport!r} transport listens on an address; set "
            f"[jobwatch.{transport}] listen"
        )

    def statistics(self) -> Statistics:
        """A frozen snapshot of the counters."""
        per = {name: dict(c) for name, c in self._counters.items()}
        counts = self._dispatcher.counts
        pipeline = self._pipeline
        return Statistics(
            events_in=pipeline.events_in,
            events_out=pipeline.events_out,
            duplicates=pipeline.dropped.get("duplicate", 0),
            dropped=dict(pipeline.dropped),
            requests=self._api.requests,
            rate_limited=self._api.rate_limited_count,
            reconnects=sum(c.get("reconnects", 0) for c in per.values()),
            reconciles=self._totals["reconciles"],
            safety_polls=self._totals["safety_polls"],
            callback_errors=counts.callback_errors,
            dead_letters=counts.dead_letters,
            transports=per,
            stopped={t.name: str(error) for t, error in self._stopped.values()},
        )

    # -- watched jobs ----------------------------------------------------------------------

    def _watch(self, job_id: str) -> JobRecord:
        record = self._pipeline.job(job_id)
        record.watched = True
        self._watching[job_id] = record
        return record

    def _add_watch(self, job_id: str) -> None:
        record = self._watch(job_id)
        record.watchers += 1
        if record.heard is None:
            record.heard = anyio.current_time() if self._state is _State.OPEN else 0.0
        if self._state is _State.OPEN and record.watchers == 1:
            self._watch_transports(job_id)
            self._tg.start_soon(self._mark_watched, job_id)  # type: ignore[union-attr]

    def _drop_watch(self, job_id: str) -> None:
        record = self._pipeline.job(job_id)
        record.watchers -= 1
        if record.watchers <= 0:
            self._stop_watching(record)

    def _stop_watching(self, record: JobRecord) -> None:
        assert record.job_id is not None
        record.watchers = 0
        record.watched = False
        self._watching.pop(record.job_id, None)
        self._unwatch_transports(record.job_id)
        # It stays watched in the store: a process going away closes its watches just as an
        # application letting a job go does, and the next process must pick the job up (for
        # the default deadline, see _inherited_deadline).

    async def _inherited_deadline(self, job_id: str) -> None:
        # A job an earlier process left unfinished, that nobody here asked about, is watched
        # for the default deadline, not forever (an unknown status would never end it).
        await anyio.sleep(DEFAULT_TIMEOUT)
        record = self._pipeline.job(job_id)
        if record.watched and record.watchers == 0 and record.final is None:
            log.warning(
                "stopped watching job %s, left unfinished by an earlier process: no "
                "end within %g s and nobody here waits for it",
                job_id,
                DEFAULT_TIMEOUT,
            )
            self._stop_watching(record)
            self._tg.start_soon(self._mark_ended, job_id)  # type: ignore[union-attr]

    def _watch_transports(self, job_id: str) -> None:
        record = self._pipeline.job(job_id)
        if record.final is not None or record.error is not None:
            return
        record.heard = anyio.current_time()
        for transport in self._transports:
            transport.watch(job_id)

    def _rewatch(self, job_id: str) -> None:
        # A finished job began a new run: whoever still watches it hears of that run too, and
        # the safety net counts its silence from now.
        if self._pipeline.job(job_id).watched and self._state is _State.OPEN:
            self._watch_transports(job_id)

    def _unwatch_transports(self, job_id: str) -> None:
        self._pipeline.job(job_id).heard = None
        for transport in self._transports:
            transport.unwatch(job_id)

    async def _mark_watched(self, job_id: str) -> None:
        # Durable only so that a restarted Watcher reconciles the job; a store failure here
        # costs that, never the Watcher. Through record(), so that it is atomic with the
        # job's events: a read-then-write could put back a state older than a terminal one.
        def watched(state: JobState | None) -> Verdict:
            if state is not None and state.watched:
                return Verdict(event=None)
            return Verdict(
                event=None, state=attrs.evolve(state or JobState(job_id=job_id), watched=True)
            )

        try:
            await self.store.record(job_id, watched, ttl=self.config.dedup_ttl)
        except JobwatchError as exc:
            log.warning("could not mark job %s as watched in the store: %s", job_id, exc)

    def _watched(self) -> frozenset[str]:
        return frozenset(
            job_id
            for job_id, record in self._watching.items()
            if record.final is None and record.error is None
        )

    def _end_job(self, job_id: str, error: JobwatchError) -> None:
        record = self._pipeline.job(job_id)
        if record.error is not None:
            return  # ended already (a transport and a reconcile may both find out): said once
        log.warning(
            "stopped watching job %s: %s", job_id, str(error).removeprefix(f"job {job_id}: ")
        )
        record.error = error
        self._unwatch_transports(job_id)
        if self._tg is not None:
            self._tg.start_soon(self._mark_ended, job_id)
        for queue in list(record.queues or ()):
            queue.end(error)

    async def _mark_ended(self, job_id: str) -> None:
        # A job whose watch ended (in an error, or let go) is watched no more: a later Watcher
        # on this store must not poll it again. Shielded: the Watcher often closes right after
        # the error it was waiting for.
        def ended(state: JobState | None) -> Verdict:
            if state is None or not state.watched:
                return Verdict(event=None)
            return Verdict(event=None, state=attrs.evolve(state, watched=False))

        with anyio.move_on_after(10.0, shield=True):
            try:
                await self.store.record(job_id, ended, ttl=self.config.dedup_ttl)
            except JobwatchError as exc:
                log.warning(
                    "could not mark job %s as no longer watched in the store: %s", job_id, exc
                )

    # -- what the transports ask of the Watcher through its host ----------------------------

    def _check(self, job_id: str) -> None:
        record = self._pipeline.job(job_id)
        if not record.checking and self._tg is not None:
            record.checking = True
            self._tg.start_soon(self._run_check, record)

    async def _run_check(self, record: JobRecord) -> None:
        assert record.job_id is not None
        try:
            await self._reconcile(
                [record.job_id], reason="pushed event contradicts a terminal state"
            )
        finally:
            record.checking = False

    async def _reconcile(self, job_ids: Iterable[str], *, reason: str) -> None:
        for job_id in job_ids:
            self._totals["reconciles"] += 1
            log.debug("reconciling job %s by one poll: %s", job_id, reason)
            await self._poll_once(job_id)

    async def _poll_once(self, job_id: str) -> None:
        try:
            response, verdict = await self._api.fetch(self.provider.status_request(job_id))
        except JobwatchError as exc:
            log.warning("could not poll job %s: %s", job_id, exc)
            return
        if verdict.ends:  # the provider says the job is gone, or asking again cannot help
            self._end_job(job_id, self.provider.error_for(response))
            return
        with self._pipeline.held((job_id,)) as held:  # its snapshot is kept after the await
            record = held[job_id]
            try:
                snapshot, events = self.provider.decode_status(
                    job_id, response, record.snapshot, source="poll"
                )
            except JobwatchError as exc:
                log.warning("could not decode job %s: %s", job_id, exc)
                return
            try:
                # Once asked, the answer is recorded whole: a caller's deadline (a webhook
                # receiver's, say) may cut the request short, never the recording.
                with anyio.CancelScope(shield=True):
                    await self._pipeline.deliver(events, authoritative=True, as_of=response.sent_at)
            except JobwatchError as exc:  # the store failed; the safety net or a later poll
                log.warning("could not record the poll of job %s: %s", job_id, exc)
                return
            record.snapshot = snapshot

    async def _confirm_final(self, job_id: str) -> None:
        """Ask the API once, briefly, whether a finished job began a new run; the snapshot goes
        through the pipeline (a new run clears the final event). An API that does not answer
        at once changes nothing: the final event known here stands."""
        with anyio.move_on_after(_CONFIRM_DEADLINE):
            try:
                response = await self._api.request(self.provider.status_request(job_id))
            except JobwatchError:
                return
            if self.provider.classify(response).outcome is not Outcome.FINE:
                return
            try:
                _, events = self.provider.decode_status(job_id, response, None, source="poll")
                with anyio.CancelScope(shield=True):
                    await self._pipeline.deliver(events, authoritative=True, as_of=response.sent_at)
            except JobwatchError as exc:
                log.debug("could not confirm the end of job %s: %s", job_id, exc)

    async def _safety_net(self, seconds: float) -> None:
        tick = max(min(seconds / 4, 5.0), 0.05)
        while True:
            await anyio.sleep(tick)
            now = anyio.current_time()
            silent = [
                job_id
                for job_id in self._watched()
                if now - _heard(self._watching[job_id], now) >= seconds
            ]
            for job_id in silent:
                self._watching[job_id].heard = now
                self._totals["safety_polls"] += 1
                await self._reconcile([job_id], reason=f"silent for {seconds:g} s (safety net)")


#: Longer than any job id an API hands out; a longer "id" is a mistake (a pasted document).
MAX_JOB_ID = 512


def check_job_id(job_id: object) -> None:
    """Raise InvalidJobId unless ``job_id`` can name a job: non-empty text of at most
    ``MAX_JOB_ID`` characters without control characters."""
    if not isinstance(job_id, str):
        raise InvalidJobId(f"a job id is text, got {type(job_id).__name__} {job_id!r}")
    if not job_id.strip():
        raise InvalidJobId("the job id is empty; pass the id the API returned for the job")
    if len(job_id) > MAX_JOB_ID:
        raise InvalidJobId(
            f"the job id is {len(job_id)} characters long (at most "
            f"{MAX_JOB_ID}); pass the id the API returned for the job"
        )
    if any(ord(c) < 32 or ord(c) == 127 for c in job_id):
        raise InvalidJobId(
            f"the job id {job_id!r} contains control characters; pass the id "
            "the API returned for the job"
        )


def check_timeout(timeout: object) -> None:
    """Raise ConfigError unless ``timeout`` is seconds (a number, not NaN) or None."""
    if timeout is None:
        return
    # (numbers.Real: a NumPy integer or a Fraction is seconds too.)
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real) or math.isnan(timeout):
        raise ConfigError(
            f"timeout must be seconds (a number, e.g. 600) or None for no deadline, got {timeout!r}"
        )


def _identity(request: Request) -> tuple[Any, ...]:
    """What makes two requests the same request (a Request's mappings are not hashable)."""
    return (
        request.method,
        request.path,
        tuple(sorted(request.params.items())),
        tuple(sorted(request.headers.items())),
    )


class _Started:
    """A transport's task status that remembers whether the transport said it started."""

    def __init__(self, status: TaskStatus[None]) -> None:
        self._status = status
        self.done = False

    def started(self, value: None = None) -> None:
        self.done = True
        self._status.started(value)


def _heard(record: JobRecord, now: float) -> float:
    return now if record.heard is None else record.heard


class _Host(TransportHost):
    """What a Watcher's transports see: its pipeline, its API access and its watched jobs."""

    def __init__(self, watcher: Watcher) -> None:
        self._watcher = watcher
        self._api = watcher._api
        self.config = watcher.config
        self.provider = watcher.provider
        self.store = watcher.store

    @property
    def budget(self) -> RequestBudget:  # type: ignore[override]
        return self._api.budget

    @property
    def base_url(self) -> str:
        return self._api.base_url

    @property
    def transports(self) -> tuple[str, ...]:
        return tuple(t.name for t in self._watcher._transports)

    async def deliver(
        self,
        events: Sequence[JobEvent],
        *,
        authoritative: bool = False,
        as_of: float | None = None,
        claim: tuple[str, float] | None = None,
    ) -> None:
        await self._watcher._pipeline.deliver(
            events, authoritative=authoritative, as_of=as_of, claim=claim
        )

    async def request(self, request: Request) -> Response:
        return await self._api.request(request)

    async def spend(self) -> None:
        await self._api.spend()

    def rate_limited(self, retry_after: float | None) -> None:
        self._api.rate_limited(retry_after)

    def count(self, transport: str, name: str, n: int = 1) -> None:
        self._watcher._counters[transport][name] += n

    async def reconcile(self, job_ids: Iterable[str], *, reason: str) -> None:
        await self._watcher._reconcile(job_ids, reason=reason)

    def watched(self) -> frozenset[str]:
        return self._watcher._watched()

    def end_job(self, job_id: str, error: JobwatchError) -> None:
        self._watcher._end_job(job_id, error)

    def subscribe(
        self,
        callback: Callable[[JobEvent], Any],
        *,
        kinds: Collection[str] | None = None,
        job_id: str | None = None,
    ) -> Any:
        return self._watcher.subscribe(callback, kinds=kinds, job_id=job_id)


def _check_other_tables(config: Config, built: set[tuple[str, str]]) -> None:
    """Build each component that has a table but that this Watcher does not use.

    Its options are then checked now (an unknown key, a wrong type or value is a ConfigError)
    rather than on the day the policy picks it — in a terminal instead of CI, say.
    """
    for kind in GROUPS:
        for name in installed(kind):
            if name in config.tables and (kind, name) not in built:
                build(kind, name, config)


def _make_budget(config: Config) -> RequestBudget:
    return BudgetOptions.from_config(config).budget()
