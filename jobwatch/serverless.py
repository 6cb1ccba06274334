"""Webhook handlers for serverless functions: verify, record, dispatch — no server, no stream.

A serverless function lives for one request, so there is no Watcher running in the
background: each invocation checks and verifies the delivery exactly as the webhook receiver
does (``[jobwatch.webhook]``: scheme, secrets, tolerance, max_body), then opens the store,
records its events through the same dedup and ordering guard, calls ``on_event`` for each new
event, closes the store again and returns the answer::

    import jobwatch

    config = jobwatch.load_config()

    def on_event(event: jobwatch.JobEvent) -> None:
        print(event.kind, event.job_id)

    handler = jobwatch.serverless.lambda_handler(config, on_event=on_event)
    # AWS Lambda: set the function's handler to this module's `handler`

An event whose callback raised stays in the store's inbox and is offered again at the start of
the next invocation (``attempts`` times in one process, then kept as a dead letter). Dedup
across function instances needs a store they share (``store = "redis"``, say); the default
sqlite file in a function's ``/tmp`` deduplicates only within one instance.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import inspect
import json
import logging
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import anyio

from ._config import Config
from ._dispatch import callback_failed
from ._errors import JobwatchError
from ._events import JobEvent
from ._pipeline import Pipeline
from ._registry import build
from .abc import EventSink, Provider, Store
from .transports._receiver import Receiver, Reply, VerificationFailures, normalize_headers
from .transports.webhook import WebhookTransport

__all__ = ["Handler", "lambda_handler"]

log = logging.getLogger("jobwatch.serverless")

OnEvent = Callable[[JobEvent], Awaitable[None] | None]
_HANDLED = 10_000
#: Seconds an instance holds an event it hands to on_event, so that no other instance sharing
#: the store hands it over meanwhile: the longest an invocation may run (AWS Lambda's 15
#: minutes). An instance that stopped before it acknowledged the event leaves it to the
#: others once this is over.
HANDING_OVER = 900.0
_UNAVAILABLE = Reply(
    503,
    (("content-type", "application/json"),),
    b'{"ok":false,"error":"the store is unavailable; retry later"}',
)
LambdaFunction = Callable[[Mapping[str, Any], Any], dict[str, Any]]


class _HandlerSink(EventSink):
    """Where one invocation's receiver hands its events: the pipeline, without a poll."""

    def __init__(self, config: Config, provider: Provider, store: Store) -> None:
        self.provider = provider
        self.store = store
        self.recorded: list[JobEvent] = []
        self.counters: dict[str, int] = defaultdict(int)
        self.pipeline = Pipeline(store, dedup_ttl=config.dedup_ttl, dispatch=self._recorded)
        self.pipeline.ready.set()

    async def _recorded(self, event: JobEvent) -> None:
        self.recorded.append(event)  # on_event is called once the delivery is answered for

    async def deliver(
        self,
        events: Sequence[JobEvent],
        *,
        authoritative: bool = False,
        as_of: float | None = None,
        claim: tuple[str, float] | None = None,
    ) -> None:
        # A handler never polls, so nothing it records is a (possibly stale) snapshot.
        await self.pipeline.deliver(events, authoritative=authoritative, as_of=as_of, claim=claim)
        for reason, n in self.pipeline.dropped.items():
            self.counters[f"dropped_{reason}"] = n

    def end_job(self, job_id: str, error: JobwatchError) -> None:
        log.warning("job %s: %s", job_id, error)

    def count(self, transport: str, name: str, n: int = 1) -> None:
        self.counters[name] += n


#: Marks an opening cut short by its invocation's cancellation; the next waiting one opens.
_ABANDONED = JobwatchError("the opening invocation was cancelled")


class Handler:
    """Handles webhook deliveries one request at a time, for any serverless platform.

    ``on_event`` (sync or async) is called once per new event, after the delivery was
    recorded. ``store`` and ``provider`` replace the configured ones (tests); ``check_path``
    also requires the request path to be ``[jobwatch.webhook] path`` (platforms route by
    function, and add stage prefixes, so it is off by default). ``backend`` is the event loop
    :meth:`handle` runs on.
    """

    def __init__(
        self,
        config: Config,
        *,
        on_event: OnEvent,
        store: Store | None = None,
        provider: Provider | None = None,
        check_path: bool = False,
        attempts: int = 3,
        backend: str = "asyncio",
    ) -> None:
        transport = WebhookTransport.from_config(config)
        self.config = config
        self.on_event = on_event
        self.provider = provider or build("provider", config.provider, config)
        self.store = store or build("store", config.store, config)
        self._options = transport.options
        self._scheme = transport.scheme_for(self.provider)
        self._path = transport.path_for(self.provider)
        self._refused = VerificationFailures()
        self._check_path = check_path
        self._attempts = attempts
        self._failures: dict[str, int] = defaultdict(int)
        # Each job whose events an invocation is handing to on_event now (its turn), and the
        # event set when that turn is over: a job's events are handed over one turn at a time.
        self._busy: dict[str | None, anyio.Event] = {}
        # Each job's event whose on_event failed, or that could not be claimed, and that waits
        # in the inbox to be offered again: the job's later events wait behind it, as a
        # Watcher's callbacks do.
        self._waiting: dict[str | None, str] = {}
        # Keys this process has handed to on_event (or given up on): their inbox rows may
        # outlive the call that acked them by a commit, and must not be offered twice.
        self._handled: OrderedDict[str, None] = OrderedDict()
        # Keys this process claimed in the store to hand to on_event, until when (monotonic).
        self._claims: OrderedDict[str, float] = OrderedDict()
        # Invocations running at once in this process (handle_async in an async runtime)
        # share one opening of the store: the last one to finish closes it.
        self._users = 0
        self._opened: anyio.Event | None = None
        self._open_error: BaseException | None = None
        self._closing: anyio.Event | None = None
        # handle() runs an event loop of its own per call: calls from several threads take
        # turns, since what the invocations share (the store's opening) belongs to one loop.
        self._sync_turn = threading.Lock()
        self.backend = backend

    def handle(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | Iterable[tuple[str, str]],
        body: bytes,
    ) -> Reply:
        """Handle one request from synchronous code; returns (status, headers, body).

        Calls from several threads at once (a threaded runtime) take turns: each runs an
        event loop of its own, and the store is opened in one loop at a time.
        """
        with self._sync_turn:
            return anyio.run(self.handle_async, method, path, headers, body, backend=self.backend)

    async def handle_async(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | Iterable[tuple[str, str]],
        body: bytes,
    ) -> Reply:
        """Handle one request inside a running event loop; requests may overlap.

        A request that fails a check or its signature is answered without the store; a
        verified one opens it, and a store that cannot be opened or read answers 503, so that
        the sender retries.
        """
        fields = normalize_headers(headers)
        host = _HandlerSink(self.config, self.provider, self.store)
        receiver = self._receiver(host)
        early = receiver.check(method, path, fields, len(body))
        if early is None:
            early = receiver.refusal(fields, body)
        if early is not None:
            return receiver.rejected(early)
        try:
            await self._open()
        except Exception as exc:
            log.warning("the %s store could not be opened, answering 503: %s", self.store.name, exc)
            return _UNAVAILABLE
        try:
            waiting = dict(self._waiting)
            try:
                pending = await self.store.pending()
            except Exception as exc:
                log.warning(
                    "the %s store could not be read, answering 503: %s", self.store.name, exc
                )
                return _UNAVAILABLE
            self._let_go(waiting, pending)
            await self._offer(pending)
            reply = await receiver.record(fields, body)
            if reply.status == 200:
                await self._hand_over(host.recorded)
            return reply
        finally:
            with anyio.CancelScope(shield=True):
                await self._close()

    async def _close(self) -> None:
        """Close the store once the last invocation using it is done; a failure is logged:
        what the invocation answers was decided by what the store had committed."""
        try:
            await self._close_store()
        except Exception as exc:
            log.warning("the %s store failed to close: %s", self.store.name, exc)

    async def _open(self) -> None:
        self._users += 1
        try:
            if self._users == 1:
                await self._open_first()
                return
            while True:
                opened = self._opened
                assert opened is not None
                await opened.wait()
                if self._opened is not opened:  # another invocation took the opening over
                    continue
                if self._open_error is _ABANDONED:  # its opener was cancelled: open it here
                    await self._open_first()
                elif self._open_error is not None:
                    raise JobwatchError(
                        f"the {self.store.name} store could not be opened: {self._open_error}"
                    )
                return
        except BaseException:
            self._users -= 1
            raise

    async def _open_first(self) -> None:
        opened = self._opened = anyio.Event()
        self._open_error = None
        try:
            if self._closing is not None:  # the last one out is still closing it
                await self._closing.wait()
            await self.store.open()
        except Exception as exc:
            self._open_error = exc
            raise
        except BaseException:
            # Cancelled (its sender gave up): the invocations waiting need not fail for it.
            self._open_error = _ABANDONED
            raise
        finally:
            opened.set()

    async def _close_store(self) -> None:
        self._users -= 1
        if self._users == 0 and self._open_error is None:
            closing = self._closing = anyio.Event()
            try:
                await self.store.aclose()
            finally:
                closing.set()
                if self._closing is closing:
                    self._closing = None

    def _receiver(self, host: _HandlerSink) -> Receiver:
        options = self._options
        return Receiver(
            host,
            scheme=self._scheme,
            path=self._path if self._check_path else None,
            max_body=options.max_body,
            allow_unsigned=options.allow_unsigned,
            dedup_ttl=self.config.dedup_ttl,
            failures=self._refused,
        )

    def _let_go(self, waiting: Mapping[str | None, str], pending: Sequence[JobEvent]) -> None:
        """Jobs whose failed event (as ``waiting`` had it before the inbox was read) is gone
        from the inbox (acknowledged by another instance, dropped with ``jobwatch inbox``)
        have their later events handed over again."""
        keys = {event.key for event in pending}
        for job, key in waiting.items():
            if key not in keys and self._waiting.get(job) == key:
                del self._waiting[job]
                self._failures.pop(key, None)  # never offered here again

    async def _offer(self, pending: Sequence[JobEvent]) -> None:
        """Offer what the inbox held before the delivery is recorded (events an earlier
        invocation could not hand over), each job's in inbox order. A job in another
        invocation's turn is left to later, and so are the events behind one of its job whose
        on_event failed or that this process could not claim: this must not wait on another's
        callback."""
        passed: set[str | None] = set()
        for event in pending:
            key, job = event.key, event.job_id
            if job in passed:
                continue
            if job in self._busy:
                passed.add(job)
                continue
            if key in self._handled or self._waiting.get(job, key) != key:
                continue
            with self._turn(job):
                await self._offer_one(event)

    async def _hand_over(self, recorded: Sequence[JobEvent]) -> None:
        """Hand the invocation's own recorded events to on_event, each job's in the order the
        store recorded them. A job in another invocation's turn is waited for; in its own turn,
        an invocation hands over every event of the job the inbox holds up to its own (oldest
        first), whichever invocation recorded them: the inbox, not the order in which
        invocations wake or hear back from the store, is the order of recording. An event
        another turn handed over is done; one behind an event whose on_event failed, or that
        this process could not claim, stays in the inbox, offered after it."""
        own: dict[str | None, list[JobEvent]] = {}
        for event in recorded:
            own.setdefault(event.job_id, []).append(event)
        for job, events in own.items():
            while job not in self._waiting and any(e.key not in self._handled for e in events):
                busy = self._busy.get(job)
                if busy is not None:
                    await busy.wait()
                    continue
                with self._turn(job):
                    await self._hand_over_job(job, events)
                break

    async def _hand_over_job(self, job: str | None, events: Sequence[JobEvent]) -> None:
        """In ``job``'s turn: hand over the job's events in the inbox up to the last of
        ``events``. The inbox unreadable, the first of them not handed over stays there, and
        the job's later events behind it."""
        try:
            inbox = await self.store.pending()
        except Exception as exc:
            log.warning(
                "the %s store could not be read to hand over job %s's events in order: %s; "
                "they stay in the inbox",
                self.store.name,
                job,
                exc,
            )
            first = next((e.key for e in events if e.key not in self._handled), None)
            if first is not None:
                self._waiting[job] = first
            return
        left = {event.key for event in events}
        for event in inbox:
            if not left or job in self._waiting:
                return
            if event.job_id != job:
                continue
            left.discard(event.key)
            if event.key not in self._handled:
                await self._offer_one(event)

    @contextlib.contextmanager
    def _turn(self, job: str | None) -> Iterator[None]:
        """The job's turn (none may be in one already): the others wait until it is over."""
        done = self._busy[job] = anyio.Event()
        try:
            yield
        finally:
            del self._busy[job]
            done.set()

    async def _offer_one(self, event: JobEvent) -> None:
        """Hand ``event`` to on_event if this process may; if not, the job's later events
        stay in the inbox behind it."""
        if await self._take(event.key):
            await self._call(event)
        else:
            self._waiting[event.job_id] = event.key

    async def _take(self, key: str) -> bool:
        """Whether this process may hand ``key`` to on_event: it holds the event's claim in
        the store already (an earlier attempt here), or claims it now. An event claimed by
        another instance sharing the store is that instance's to hand over (it may be doing
        so now, its acknowledgement not yet written): it is left in the inbox."""
        now = time.monotonic()
        until = self._claims.get(key)
        if until is not None and now < until:
            return True
        try:
            taken = await self.store.claim(f"on_event:{key}", ttl=HANDING_OVER)
        except Exception as exc:  # it stays in the inbox, offered again by the next invocation
            log.warning(
                "the %s store could not claim %s for on_event: %s; it stays in the inbox",
                self.store.name,
                key,
                exc,
            )
            return False
        if taken:
            self._claims[key] = now + HANDING_OVER
            if len(self._claims) > _HANDLED:
                self._claims.popitem(last=False)
        return taken

    async def _call(self, event: JobEvent) -> None:
        try:
            result = self.on_event(event)
            if inspect.isawaitable(result):
                await result
        except BaseException as exc:  # the event stays in the inbox for the next invocation
            if not callback_failed(exc):  # the invocation itself is cancelled
                raise
            self._failures[event.key] += 1
            error = f"{type(exc).__name__}: {exc}"
            log.warning(
                "on_event failed on %s (attempt %d): %s",
                event.key,
                self._failures[event.key],
                error,
            )
            if self._failures[event.key] >= self._attempts:
                log.error("on_event gave up on %s; kept as a dead letter", event.key)
                self._remember(event)
                await self._settle(event, error)
            else:
                self._waiting[event.job_id] = event.key
            return
        self._remember(event)
        await self._settle(event, None)

    async def _settle(self, event: JobEvent, error: str | None) -> None:
        """Keep ``event``'s dead letter (``error``: why on_event gave up), then take it out of
        the inbox. A store failing here fails no delivery: each was recorded and answered for
        already (an error would only make its sender retry into the dedup), and an event left
        in the inbox is not offered again by this process."""
        try:
            if error is not None:
                await self.store.dead_letter(event, "on_event", error)
            await self.store.ack(event.key)
        except Exception as exc:
            log.warning(
                "the %s store failed to take %s out of its inbox: %s; it stays there",
                self.store.name,
                event.key,
                exc,
            )

    def _remember(self, event: JobEvent) -> None:
        key = event.key
        if self._waiting.get(event.job_id) == key:
            del self._waiting[event.job_id]
        self._claims.pop(key, None)
        self._failures.pop(key, None)  # handed over, or given up on: never called again
        self._handled[key] = None
        if len(self._handled) > _HANDLED:
            self._handled.popitem(last=False)

    def lambda_event(self, event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
        """An AWS Lambda handler: API Gateway REST (v1) or HTTP (v2) events, function URLs."""
        try:
            method, path, headers, body = _from_lambda(event)
        except ValueError as exc:  # answered as the receiver answers what it refuses
            error = json.dumps({"ok": False, "error": str(exc)}, separators=(",", ":"))
            return _to_lambda(Reply(400, (("content-type", "application/json"),), error.encode()))
        return _to_lambda(self.handle(method, path, headers, body))


def lambda_handler(
    config: Config, *, on_event: OnEvent, store: Store | None = None
) -> LambdaFunction:
    """A function ``(event, context) -> dict`` for AWS Lambda that handles webhook deliveries.

    It takes API Gateway REST API (payload 1.0) and HTTP API (payload 2.0) events and Lambda
    function URL events, base64-encoded bodies included, and returns the matching response.
    """
    return Handler(config, on_event=on_event, store=store).lambda_event


def _from_lambda(event: Mapping[str, Any]) -> tuple[str, str, list[tuple[str, str]], bytes]:
    if not isinstance(event, Mapping):
        raise ValueError("not an API Gateway or function URL event")
    context = event.get("requestContext")
    http = (
        context.get("http")
        if isinstance(context, Mapping) and event.get("version") == "2.0"
        else None
    )
    if isinstance(http, Mapping):
        method, path = http.get("method"), event.get("rawPath", http.get("path", "/"))
        headers = _pairs(event.get("headers"), multi=False)
    else:
        method, path = event.get("httpMethod"), event.get("path", "/")
        multi = event.get("multiValueHeaders")
        headers = _pairs(multi, multi=True) if multi else _pairs(event.get("headers"), multi=False)
    if not isinstance(method, str) or not isinstance(path, str):
        raise ValueError("the event names no HTTP method and path (not an API Gateway event)")
    return method, path, headers, _body(event)


def _pairs(headers: Any, *, multi: bool) -> list[tuple[str, str]]:
    """The header fields of an event's ``headers`` (``multi``: ``multiValueHeaders``). A header
    whose value is null was not sent: it is left out, not read as the text "None"."""
    if headers is None:
        return []
    if not isinstance(headers, Mapping):
        raise ValueError("the event's headers are not an object of header names")
    pairs: list[tuple[str, str]] = []
    for name, value in headers.items():
        values = value if multi and isinstance(value, list) else [value]
        for one in values:
            if one is None:
                continue
            if isinstance(one, bool) or not isinstance(one, str | int | float):
                raise ValueError(f"the event's header {name!r} has a value that is not text")
            pairs.append((str(name), str(one)))
    return pairs


def _body(event: Mapping[str, Any]) -> bytes:
    body = event.get("body")
    if body is None:
        return b""
    if not isinstance(body, str):
        raise ValueError("the event's body is not a string")
    if event.get("isBase64Encoded"):
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("the event's body is marked base64 but does not decode") from None
    return body.encode("utf-8", "surrogatepass")


def _to_lambda(reply: Reply) -> dict[str, Any]:
    return {
        "statusCode": reply.status,
        "headers": dict(reply.headers),
        "body": reply.body.decode("utf-8", "replace"),
        "isBase64Encoded": False,
    }
