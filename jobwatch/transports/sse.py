"""The ``sse`` transport: Server-Sent Events streams, as reliable as a webhook.

Two scopes (``[jobwatch.sse] scope``):

- ``job``: one stream per watched job (``Provider.job_stream_request``); it ends after the
  job's terminal frame.
- ``workspace``: one stream for every job (``Provider.workspace_stream_request``); the
  Watcher's pipeline and dispatcher route its events, so 10,000 watched jobs cost one
  connection.

What makes a stream reliable (details in ``docs/streaming.md``):

- **Reconnection** by :class:`~jobwatch.transports._reconnect.Reconnector`: exponential backoff
  with jitter, the server's ``retry:`` honoured within bounds, and — where the provider says its
  streams carry ids (``Capabilities.stream_event_ids``) — ``Last-Event-ID`` sent back and the
  last id checkpointed in the Store so a restarted process resumes where it stopped.
- **A heartbeat watchdog**: ``heartbeat_timeout`` seconds without a byte (an event, or a
  ``: ping`` comment) and the stream is reconnected.
- **Reconcile**: a connection that was not resumed with ``Last-Event-ID`` (the first one, and
  every reconnect to a server without ids) polls each of its watched jobs once,
  paced at the request budget's rate, so nothing that happened while it was down is lost.
  A job's stream that the server ends without a terminal frame polls its job once too, even
  where the next connection resumes: a server ends a job's stream when the job ends, and a
  resumed stream would have nothing more to say (a final frame the provider could not read).
- **A hostile server is contained**: the transport parses the bytes itself
  (:mod:`~jobwatch.transports._sse_parser`), holding at most ``max_event_bytes`` of a line or
  an event and expanding a compressed read by a bounded amount, and yields to the event loop
  between pieces of a read; a stream over a bound is dropped and backs off. Redirects are
  followed only within the origin the request was made to, each one spent from the budget;
  credentials never go to another origin. URLs in logs and errors have their password redacted.
- **Fallback**: an endpoint that answers 404/405 (or another 4xx), a content type that is not
  ``text/event-stream``, or ``max_failures`` failed attempts in a row degrade the stream's jobs
  to polling every ``fallback_interval`` seconds; every ``probe_interval`` seconds the stream is
  tried again, and the transport returns to it once it opens.
- **Errors** of httpx are translated into jobwatch's tree at this seam. A refused key (the
  provider's AuthenticationError) is not retried: on a job's stream it ends that job (its
  ``wait()`` raises it); on the workspace stream, which reports every job, it stops the
  transport — ``run`` raises it, the Watcher names it in ``statistics().stopped`` and, with no
  other transport running, ends with it.

Counters in ``Watcher.statistics().transports["sse"]``: ``streams_opened``, ``reconnects``,
``stalls``, ``fallbacks``, ``recoveries``, ``malformed``, ``oversized``, ``redirects``,
``events``, ``requests``, ``store_errors``.
"""

from __future__ import annotations

import base64
import logging
import math
import random
from collections.abc import Iterable, Sequence
from typing import Literal

import anyio
import attrs
import httpx
from anyio.abc import TaskGroup, TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._api import describe_http_error, user_agent
from .._config import Config, redact_url
from .._errors import (
    AuthenticationError,
    ConfigError,
    DecodeError,
    JobwatchError,
    NetworkError,
    StreamError,
)
from .._events import EventKind, JobEvent, JobStatus
from ..abc import Capabilities, Outcome, Request, Response, Transport, TransportHost
from ._reconnect import Action, Backoff, Cause, Pacer, Reconnector
from ._sse_parser import BodyDecoder, Frame, FrameParser, Limits

__all__ = ["SSEOptions", "SSETransport"]

log = logging.getLogger("jobwatch.sse")

#: Reads of the streams (each a batch of events) waiting for the pipeline.
_QUEUE = 64
#: Seconds between tries to record a read's events while the store fails (doubling).
_STORE_RETRY_FIRST, _STORE_RETRY_MAX = 0.5, 30.0
#: Polls that reconcile may have in flight at once (all within the Watcher's budget); also
#: the burst the reconcile pacer allows before it settles to the budget's rate.
_RECONCILERS = 4
#: Redirects followed per connection attempt, each within the origin it started at.
_MAX_REDIRECTS = 5
#: Frames decoded between two turns given to the event loop.
_YIELD_EVERY = 256
#: Malformed frames logged per connection; more are only counted.
_MALFORMED_LOGGED = 10
#: Bytes read of an error answer (a JSON envelope; the rest is not wanted).
_ERROR_BODY = 64 * 2**10
#: Seconds the status request that asks why a job failed may hold a read's delivery.
_EXPLAIN_DEADLINE = 5.0
_FAILED = EventKind.FAILED


def _no_reason(event: JobEvent) -> bool:
    """Whether a failure carries no reason: none, or its status word (what a provider writes
    where the API gave no failure text)."""
    return event.error is None or event.error == _FAILED_WORD


_FAILED_WORD = JobStatus.FAILED.value


def _positive(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


@attrs.frozen(kw_only=True)
class SSEOptions:
    """The ``[jobwatch.sse]`` table.

    Attributes:
        scope: ``job`` (one stream per watched job) or ``workspace`` (one for all jobs).
        heartbeat_timeout: seconds without a byte before the stream is taken as stalled and
            reconnected (well above the API's own ping interval).
        connect_timeout: seconds to wait for a connection to the server.
        backoff_initial: the first delay before reconnecting, seconds (the server's ``retry:``
            replaces it).
        backoff_max: the longest delay between attempts, seconds.
        max_failures: failed connection attempts in a row before falling back to polling.
        fallback_interval: while fallen back, poll the stream's jobs every this many seconds.
        probe_interval: while fallen back, try the stream again every this many seconds.
        reconcile_on_watch: workspace scope: poll a job once when it is watched while the
            stream is open, in case it changed before the stream could report it.
        max_event_bytes: the most data one event may carry, and so the longest line; a
            stream that sends more is dropped (and backs off) rather than filling memory.
    """

    scope: Literal["job", "workspace"] = "job"
    heartbeat_timeout: float = attrs.field(default=75.0, validator=_positive)
    connect_timeout: float = attrs.field(default=10.0, validator=_positive)
    backoff_initial: float = attrs.field(default=1.0, validator=_positive)
    backoff_max: float = attrs.field(default=30.0, validator=_positive)
    max_failures: int = attrs.field(default=5, validator=attrs.validators.ge(1))
    fallback_interval: float = attrs.field(default=5.0, validator=_positive)
    probe_interval: float = attrs.field(default=60.0, validator=_positive)
    reconcile_on_watch: bool = True
    max_event_bytes: int = attrs.field(default=4 * 2**20, validator=attrs.validators.ge(1024))

    def backoff(self) -> Backoff:
        """The reconnection backoff these options describe."""
        return Backoff(
            initial=self.backoff_initial, maximum=max(self.backoff_max, self.backoff_initial)
        )

    def limits(self) -> Limits:
        """How much of a stream the parser may hold, as these options say."""
        return Limits(max_event=self.max_event_bytes)


@attrs.frozen(kw_only=True)
class _Ending:
    """How one connection ended: the cause for the state machine, the error for logs."""

    cause: Cause
    error: JobwatchError
    retry_after: float | None = None


@attrs.define(eq=False)
class _Stream:
    """One stream's identity and state: a job's own stream, or the workspace stream."""

    job_id: str | None
    request: Request | None  # a job's stream: asked for at each connection (_stream_request)
    machine: Reconnector
    scope: anyio.CancelScope = attrs.Factory(anyio.CancelScope)
    open: bool = False
    #: Malformed frames logged on the current connection.
    malformed: int = 0
    #: An id that cannot be sent back was logged on the current connection.
    bad_id: bool = False

    @property
    def checkpoint(self) -> str:
        return "sse:workspace" if self.job_id is None else f"sse:job:{self.job_id}"

    @property
    def label(self) -> str:
        return "the workspace stream" if self.job_id is None else f"job {self.job_id}'s stream"


@attrs.frozen(slots=True)
class _Batch:
    """Events decoded from one read of a stream, and the position to checkpoint after them."""

    events: list[JobEvent]
    checkpoint: str
    event_id: str | None


class SSETransport(Transport):
    """Watch jobs through Server-Sent Events streams; see the module docstring.

    ``rng`` draws the reconnection jitter (seed it for reproducible tests).
    """

    name = "sse"
    push = True

    def __init__(
        self, options: SSEOptions | None = None, *, rng: random.Random | None = None
    ) -> None:
        self.options = options or SSEOptions()
        self._rng = rng or random.Random()
        self._host: TransportHost | None = None
        self._tg: TaskGroup | None = None
        self._client: httpx.AsyncClient | None = None
        self._credentials: dict[str, str] = {}
        self._origin: tuple[str, str, int | None] | None = None
        self._send: MemoryObjectSendStream[_Batch] | None = None
        self._scope: Literal["job", "workspace"] = self.options.scope
        self._streams: dict[str | None, _Stream] = {}
        self._pending: set[str] = set()
        self._to_reconcile: dict[str, str] = {}
        self._reconcile_wake = anyio.Event()
        self._pacer = Pacer(0.0, burst=_RECONCILERS)
        self._limits = self.options.limits()
        #: Why the transport stopped for good (the workspace stream's key was refused).
        self._stopped: JobwatchError | None = None

    @property
    def reports_every_job(self) -> bool:
        """Whether jobs nobody watches are reported too: only by the workspace stream."""
        return self._scope == "workspace"

    @classmethod
    def from_config(cls, config: Config) -> SSETransport:
        return cls(config.options("sse", SSEOptions))

    # -- lifecycle ------------------------------------------------------------------------

    async def run(
        self, host: TransportHost, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        if self._host is not None:
            raise RuntimeError("this SSETransport is already running; create another one")
        self._host = host
        self._scope = _pick_scope(
            self.options.scope, host.provider.capabilities, host.provider.name
        )
        send, receive = anyio.create_memory_object_stream[_Batch](_QUEUE)
        self._send = send
        try:
            async with self._make_client(host) as client, anyio.create_task_group() as tg:
                self._client, self._tg = client, tg
                tg.start_soon(self._deliver_loop, receive)
                for _ in range(_RECONCILERS):
                    tg.start_soon(self._reconciler)
                self._start_streams(host)
                task_status.started()
        finally:
            stopped, self._stopped = self._stopped, None
            send.close()
            self._host = self._tg = self._client = self._send = None
            self._streams.clear()
        if stopped is not None:
            raise stopped  # the Watcher goes on with its other transports, or ends with it

    def _make_client(self, host: TransportHost) -> httpx.AsyncClient:
        timeout = httpx.Timeout(None, connect=self.options.connect_timeout)
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=20)
        # The client carries no credentials: _open adds them to requests for the API's own
        # origin only (a stream URL taken from a job may name another host). A password in
        # base_url becomes basic auth there, out of the URL, so httpx's log never prints it.
        base_url = httpx.URL(host.base_url)
        self._credentials = dict(host.provider.headers())
        if base_url.userinfo:
            pair = f"{base_url.username}:{base_url.password}".encode()
            self._credentials["authorization"] = "Basic " + base64.b64encode(pair).decode()
            base_url = base_url.copy_with(username=None, password=None)
        self._origin = _origin(base_url)
        # Redirects are followed by _open, within one origin.
        return httpx.AsyncClient(
            base_url=base_url,
            headers={"user-agent": user_agent()},
            timeout=timeout,
            limits=limits,
            follow_redirects=False,
        )

    def _start_streams(self, host: TransportHost) -> None:
        if self._scope == "workspace":
            request = host.provider.workspace_stream_request()
            self._spawn(_Stream(job_id=None, request=request, machine=self._machine()))
            return
        for job_id in sorted(host.watched() | self._pending):
            self.watch(job_id)
        self._pending.clear()

    def _machine(self) -> Reconnector:
        # Ids are trusted only where the provider says its server resumes from them: ids from
        # a server that does not replay would skip the reconcile that finds what was missed.
        resumable = self._require_host().provider.capabilities.stream_event_ids
        return Reconnector(
            self.options.backoff(),
            max_failures=self.options.max_failures,
            probe_interval=self.options.probe_interval,
            rng=self._rng,
            resumable=resumable,
        )

    def _spawn(self, stream: _Stream) -> None:
        assert self._tg is not None
        self._streams[stream.job_id] = stream
        self._tg.start_soon(self._run_stream, stream)

    def watch(self, job_id: str) -> None:
        if self._tg is None or self._host is None:
            self._pending.add(job_id)
        elif self._scope == "job":
            if job_id not in self._streams:
                self._spawn(_Stream(job_id=job_id, request=None, machine=self._machine()))
        elif self.options.reconcile_on_watch and self._workspace_open():
            self._reconcile([job_id], "sse watch")

    def _workspace_open(self) -> bool:
        stream = self._streams.get(None)
        return stream is not None and stream.open

    def unwatch(self, job_id: str) -> None:
        self._pending.discard(job_id)
        stream = self._streams.pop(job_id, None) if self._scope == "job" else None
        if stream is not None:
            stream.scope.cancel()

    # -- one stream, across its connections -----------------------------------------------

    async def _run_stream(self, stream: _Stream) -> None:
        host = self._require_host()
        with stream.scope:
            try:
                if stream.machine.resumable and not stream.machine.last_event_id:
                    stream.machine.resume_from(await host.store.get_checkpoint(stream.checkpoint))
                await self._stream_loop(stream)
            finally:
                if self._streams.get(stream.job_id) is stream:
                    del self._streams[stream.job_id]

    async def _stream_loop(self, stream: _Stream) -> None:
        host = self._require_host()
        while True:
            ending = await self._connect(stream)
            if ending is None:
                return  # the job's stream delivered its terminal frame
            if ending.cause is Cause.CLOSED and stream.job_id and stream.machine.last_event_id:
                # (Without an id the next connection is reconciled anyway.)
                self._reconcile([stream.job_id], "sse stream ended")
            plan = stream.machine.ended(
                anyio.current_time(), ending.cause, retry_after=ending.retry_after
            )
            if plan.action is Action.END:
                self._refused(stream, ending.error)
                return
            elif plan.action is Action.FALLBACK:
                if plan.fell_back:
                    host.count(self.name, "fallbacks")
                    log.warning(
                        "%s: %s; falling back to polling, and trying the stream again in %g s",
                        stream.label,
                        ending.error,
                        plan.at - _now(),
                    )
                await self._fallback(stream, until=plan.at)
            else:
                host.count(self.name, "reconnects")
                log.info(
                    "%s: %s; reconnecting in %.2f s",
                    stream.label,
                    ending.error,
                    max(0.0, plan.at - _now()),
                )
                await anyio.sleep_until(plan.at)

    def _refused(self, stream: _Stream, error: JobwatchError) -> None:
        """The API refused the key: a job's stream ends that job; the workspace stream,
        which reports every job, stops the transport (asking again with a refused key would
        only look healthy while nothing can arrive)."""
        host = self._require_host()
        if stream.job_id is not None:
            log.error("%s: %s; ending the job", stream.label, error)
            host.end_job(stream.job_id, error)
            return
        log.debug("%s: %s; the sse transport stops", stream.label, error)
        self._stopped = error  # the Watcher says so
        assert self._tg is not None
        self._tg.cancel_scope.cancel()

    async def _fallback(self, stream: _Stream, *, until: float) -> None:
        while True:
            jobs = self._jobs_of(stream)
            if jobs:
                await self._poll(jobs, "sse fallback")
            if _now() >= until:
                return
            await anyio.sleep(min(self.options.fallback_interval, until - _now()))

    def _jobs_of(self, stream: _Stream) -> list[str]:
        watched = self._require_host().watched()
        if stream.job_id is None:
            return sorted(watched)
        return [stream.job_id] if stream.job_id in watched else []

    # -- one connection -------------------------------------------------------------------

    async def _connect(self, stream: _Stream) -> _Ending | None:
        response: httpx.Response | _Ending | None = None
        try:
            response = await self._open(stream)
            if isinstance(response, _Ending):
                return response
            refused = await self._check(response)
            if refused is not None:
                return refused
            return await self._consume(stream, response)
        except httpx.HTTPError as exc:
            cause = Cause.DROPPED if stream.open else Cause.REFUSED
            return _Ending(cause=cause, error=_network_error(exc))
        finally:
            stream.open = False
            if isinstance(response, httpx.Response):
                await _close(response)

    async def _open(self, stream: _Stream) -> httpx.Response | _Ending:
        """Send the stream's request, following redirects within its origin.

        Every request, each redirect included, is spent from the budget; a redirect to another
        origin is not followed, so the provider's credentials go nowhere else.
        """
        host, client = self._require_host(), self._client
        assert client is not None
        spec = stream.request or await self._stream_request(stream)
        if isinstance(spec, _Ending):
            return spec
        headers = {
            **spec.headers,
            "accept": "text/event-stream",
            "accept-encoding": "gzip, deflate",
            "cache-control": "no-store",
            **stream.machine.request_headers(),
        }
        request = client.build_request(
            spec.method, spec.path, params=dict(spec.params), headers=_utf8(headers)
        )
        if _origin(request.url) == self._origin:
            request.headers.update(self._credentials)
            headers = {**self._credentials, **headers}  # redirects stay at this origin
        for hop in range(_MAX_REDIRECTS + 1):
            await host.spend()
            host.count(self.name, "requests")
            response: httpx.Response | None = None
            with anyio.move_on_after(self.options.heartbeat_timeout):
                response = await client.send(request, stream=True, follow_redirects=False)
            if response is None:
                return _Ending(
                    cause=Cause.STALLED,
                    error=StreamError(
                        f"{_where(request)} sent no response headers within "
                        f"{self.options.heartbeat_timeout:g} s"
                    ),
                )
            if not response.has_redirect_location:
                return response
            await _close(response)
            target = _redirect(response, hop)
            if isinstance(target, _Ending):
                return target
            host.count(self.name, "redirects")
            request = client.build_request(request.method, target, headers=_utf8(headers))
        raise AssertionError("unreachable: _redirect refuses the last hop")

    async def _stream_request(self, stream: _Stream) -> Request | _Ending:
        """A job's stream request, asked for at each connection: a job may name its stream in
        its status (``StreamError`` until the provider has read it), which one poll reads."""
        host = self._require_host()
        assert stream.job_id is not None
        try:
            return host.provider.job_stream_request(stream.job_id)
        except StreamError:
            await host.reconcile([stream.job_id], reason="sse: the job names its stream")
        try:
            return host.provider.job_stream_request(stream.job_id)
        except StreamError as exc:
            return _Ending(cause=Cause.UNSUPPORTED, error=exc)

    async def _check(self, response: httpx.Response) -> _Ending | None:
        """None if the response is an event stream; else how the attempt ended."""
        if response.is_success:
            kind = response.headers.get("content-type", "").partition(";")[0].strip()
            if kind.lower() == "text/event-stream":
                return None
            return _Ending(
                cause=Cause.UNSUPPORTED,
                error=StreamError(
                    f"{_where(response.request)} answered {response.status_code} with content type "
                    f"{kind or 'none'!r}, not text/event-stream; is base_url right?"
                ),
            )
        # The provider's verdict decides; the transport knows no status codes of its own.
        host, answer = self._require_host(), await _error_response(response)
        verdict, error = host.provider.classify(answer), host.provider.error_for(answer)
        if verdict.outcome is Outcome.RATE_LIMITED:
            host.rate_limited(verdict.wait)  # every request waits
        if verdict.outcome in (Outcome.RATE_LIMITED, Outcome.RETRY):
            return _Ending(cause=Cause.RETRYABLE, error=error, retry_after=verdict.wait)
        if verdict.outcome is Outcome.FATAL and isinstance(error, AuthenticationError):
            return _Ending(cause=Cause.UNAUTHORIZED, error=error)
        # Gone, or refused otherwise: no stream here; polling learns whether the job goes on.
        return _Ending(cause=Cause.UNSUPPORTED, error=error)

    async def _consume(self, stream: _Stream, response: httpx.Response) -> _Ending | None:
        try:
            body = BodyDecoder(response.headers.get("content-encoding", ""), self._limits)
        except StreamError as exc:
            return _Ending(
                cause=Cause.UNSUPPORTED, error=StreamError(f"{_where(response.request)}: {exc}")
            )
        host = self._require_host()
        stream.open = True
        stream.malformed, stream.bad_id = 0, False
        host.count(self.name, "streams_opened")
        opened = stream.machine.opened()
        if opened.recovered:
            host.count(self.name, "recoveries")
            log.warning("%s is back; leaving the polling fallback", stream.label)
        if opened.reconcile:
            reason = "sse reconnect" if opened.reconnected else "sse start"
            self._reconcile(self._jobs_of(stream), reason)
        return await self._read(stream, response, body)

    async def _read(
        self, stream: _Stream, response: httpx.Response, body: BodyDecoder
    ) -> _Ending | None:
        """Read frames until the stream ends; None if it ended after a job's terminal frame.

        The loop never leaves the body iterator early (no ``break``, no cancellation outside
        it): httpx's nested async generators are only finalized cleanly when they run out or
        raise, so a stream ends by the server closing it, a network error, or a cancellation
        (the watchdog, ``stop`` after a broken bound, ``unwatch``) that strikes while the
        iterator waits for bytes. Between pieces of a large read the loop yields, shielded.
        """
        timeout = self.options.heartbeat_timeout
        parser = FrameParser(self._limits)
        machine = stream.machine
        violation: StreamError | None = None
        finished = False
        with anyio.CancelScope(deadline=_now() + timeout) as watchdog, anyio.CancelScope() as stop:
            async for raw in response.aiter_raw():
                if stop.cancel_called:
                    continue  # what was already buffered, after a broken bound
                watchdog.deadline = _now() + timeout
                machine.received()
                try:
                    for index, piece in enumerate(body.decode(raw)):
                        if index:
                            await _yield()
                        frames = parser.feed(piece)
                        if frames and await self._frames(stream, frames, watchdog):
                            finished = True
                        if parser.error is not None:
                            raise parser.error
                except StreamError as exc:
                    violation = exc
                    stop.cancel()  # lands in the iterator's next wait for bytes
        if finished:
            return None
        if violation is not None:
            self._require_host().count(self.name, "oversized")
            return _Ending(
                cause=Cause.VIOLATED, error=StreamError(f"{_where(response.request)}: {violation}")
            )
        if watchdog.cancelled_caught:
            self._require_host().count(self.name, "stalls")
            return _Ending(
                cause=Cause.STALLED,
                error=StreamError(
                    f"{_where(response.request)}: no byte for {timeout:g} s (heartbeat timeout)"
                ),
            )
        return _Ending(
            cause=Cause.CLOSED,
            error=StreamError(f"{_where(response.request)}: the server closed the stream"),
        )

    async def _frames(
        self, stream: _Stream, frames: Sequence[Frame], watchdog: anyio.CancelScope
    ) -> bool:
        """Decode frames and queue their events, a batch per group; True after a terminal
        frame of a job's own stream."""
        decode = self._require_host().provider.decode_stream_event
        machine, job_id, finished = stream.machine, stream.job_id, False
        for start in range(0, len(frames), _YIELD_EVERY):
            if start:
                await _yield()
            events: list[JobEvent] = []
            position = machine.last_event_id
            group = frames if len(frames) <= _YIELD_EVERY else frames[start : start + _YIELD_EVERY]
            for frame in group:
                if frame.id is not None or frame.retry is not None:
                    refused = machine.event(event_id=frame.id, retry_ms=frame.retry)
                    if refused is not None:
                        self._bad_id(stream, frame.id or "", refused)
                if not frame.data:
                    continue  # a frame without data delivers nothing
                try:
                    events += decode(job_id, frame.event, frame.data, source=self.name)
                except DecodeError as exc:
                    self._malformed(stream, frame.event, exc)
            if events or position != machine.last_event_id:
                if job_id is not None and any(e.terminal for e in events):
                    finished = True
                checkpoint = machine.last_event_id if machine.resumable else None
                await self._enqueue(_Batch(events, stream.checkpoint, checkpoint), watchdog)
        return finished

    async def _enqueue(self, batch: _Batch, watchdog: anyio.CancelScope) -> None:
        send = self._require_send()
        try:
            try:
                send.send_nowait(batch)
                return
            except anyio.WouldBlock:
                pass
            # Waiting for the pipeline is not silence on the wire: pause the watchdog.
            # Shielded, so that a cancellation lands in the body iterator instead (_read).
            watchdog.deadline = math.inf
            with anyio.CancelScope(shield=True):
                await send.send(batch)
            watchdog.deadline = _now() + self.options.heartbeat_timeout
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            # The transport is closing and the delivery loop is gone: nothing was recorded
            # or checkpointed past these events, so a restart gets them again.
            pass

    def _bad_id(self, stream: _Stream, event_id: str, why: str) -> None:
        """An id that cannot be sent back is ignored: logged once per connection."""
        if not stream.bad_id:
            stream.bad_id = True
            log.warning(
                "%s: ignored the event id %r, which cannot be sent back as Last-Event-ID (%s); "
                "a reconnect resumes from the last id before it, and repeats are dropped",
                stream.label,
                event_id[:80],
                why,
            )

    def _malformed(self, stream: _Stream, name: str, error: DecodeError) -> None:
        """A frame the provider could not decode is dropped: counted, and logged up to a
        bound per connection (a server sending nothing else must not flood the log)."""
        self._require_host().count(self.name, "malformed")
        stream.malformed += 1
        if stream.malformed <= _MALFORMED_LOGGED:
            more = (
                "; further malformed frames on this connection are only counted"
                if stream.malformed == _MALFORMED_LOGGED
                else ""
            )
            log.warning(
                "%s: dropped a malformed %r frame: %s%s", stream.label, name[:80], error, more
            )

    # -- delivery and reconciliation ------------------------------------------------------

    async def _deliver_loop(self, receive: MemoryObjectReceiveStream[_Batch]) -> None:
        host = self._require_host()
        async with receive:
            async for first in receive:
                batches = [first]
                while len(batches) < _QUEUE:
                    try:
                        batches.append(receive.receive_nowait())
                    except anyio.WouldBlock:
                        break
                # One read, one delivery: the pipeline records a read's events together,
                # and reads merged into one delivery would only keep more events alive at once.
                for batch in batches:
                    if batch.events:
                        await self._deliver_read(host, batch.events)
                        host.count(self.name, "events", len(batch.events))
                positions = {b.checkpoint: b.event_id for b in batches if b.event_id is not None}
                for name, value in positions.items():
                    try:
                        await host.store.put_checkpoint(name, value)
                    except JobwatchError as exc:  # a restart resumes earlier; dedup drops it
                        log.warning("could not save the position of %s: %s", name, exc)

    async def _deliver_read(self, host: TransportHost, events: list[JobEvent]) -> None:
        """Deliver one read's events. A watched job's failure the stream reports without its
        reason (Reader's per-job ``done`` frame has none) is asked about first, by one status
        request, so that the end delivered carries the API's reason; the stream's own comes
        after it, as a duplicate, or alone if that request fails or takes too long.

        The jobs of a read are asked about together, under one deadline, and only while
        watched: a job no one waits on, or that has ended (a failure the stream repeats),
        costs no request. Such a job's failure, and its events after it, wait for the
        answer; the read's other events go first, each job's in the stream's order."""
        failed = [e.job_id for e in events if e.kind is _FAILED and _no_reason(e) and e.job_id]
        watched = host.watched() if failed else frozenset()  # (a set of every watched job)
        asked = dict.fromkeys(job_id for job_id in failed if job_id in watched)
        if not asked:
            await self._deliver(host, events)
            return
        now: list[JobEvent] = []
        later: list[JobEvent] = []
        waiting: set[str] = set()
        for event in events:
            job_id = event.job_id
            if job_id in asked and (job_id in waiting or event.kind is _FAILED):
                waiting.add(job_id)
                later.append(event)
            else:
                now.append(event)
        if now:
            await self._deliver(host, now)
        with anyio.move_on_after(_EXPLAIN_DEADLINE):
            async with anyio.create_task_group() as tg:
                for job_id in asked:
                    tg.start_soon(self._explain, host, job_id)
        await self._deliver(host, later)

    async def _explain(self, host: TransportHost, job_id: str) -> None:
        try:
            await host.reconcile([job_id], reason="sse: a failure without why")
        except JobwatchError as exc:  # the stream's own failure is delivered all the same
            log.warning("could not ask why job %s failed: %s", job_id, exc)

    async def _deliver(self, host: TransportHost, events: list[JobEvent]) -> None:
        """Hand one read's events to the pipeline, trying again while the store fails: the
        stream waits (its queue fills, reading pauses) rather than losing them."""
        delay = _STORE_RETRY_FIRST
        while True:
            try:
                await host.deliver(events)
                return
            except JobwatchError as exc:
                host.count(self.name, "store_errors")
                log.warning(
                    "could not record %d streamed event(s), trying again in %g s: %s",
                    len(events),
                    delay,
                    exc,
                )
            await anyio.sleep(delay)
            delay = min(delay * 2, _STORE_RETRY_MAX)

    def _reconcile(self, job_ids: Iterable[str], reason: str) -> None:
        for job_id in job_ids:
            self._to_reconcile[job_id] = reason
        if self._to_reconcile:
            self._reconcile_wake.set()

    async def _reconciler(self) -> None:
        """One of a few workers that poll the jobs queued by ``_reconcile``, oldest first,
        paced at the budget's rate (a job queued again meanwhile is polled once)."""
        host = self._require_host()
        while True:
            while not self._to_reconcile:
                if self._reconcile_wake.is_set():
                    self._reconcile_wake = anyio.Event()
                await self._reconcile_wake.wait()
            self._pacer.interval = _pace(host.budget)  # the API may have lowered the budget
            wait = self._pacer.delay(_now())
            if wait > 0:
                await anyio.sleep(wait)
                continue  # another worker may have taken the turn, or the queue emptied
            self._pacer.take(_now())
            job_id = next(iter(self._to_reconcile))
            reason = self._to_reconcile.pop(job_id)
            if job_id in host.watched():
                await self._poll([job_id], reason)

    async def _poll(self, job_ids: list[str], reason: str) -> None:
        if not job_ids:
            return
        try:
            await self._require_host().reconcile(job_ids, reason=reason)
        except JobwatchError as exc:
            log.warning("could not poll %d job(s) (%s): %s", len(job_ids), reason, exc)

    # -- small helpers ---------------------------------------------------------------------

    def _require_host(self) -> TransportHost:
        if self._host is None:
            raise RuntimeError("the SSE transport is not running")
        return self._host

    def _require_send(self) -> MemoryObjectSendStream[_Batch]:
        if self._send is None:
            raise RuntimeError("the SSE transport is not running")
        return self._send


def _now() -> float:
    return anyio.current_time()


def _pick_scope(
    wanted: Literal["job", "workspace"], caps: Capabilities, provider: str
) -> Literal["job", "workspace"]:
    offered = {"job": caps.job_stream, "workspace": caps.workspace_stream}
    if offered[wanted]:
        return wanted
    other: Literal["job", "workspace"] = "workspace" if wanted == "job" else "job"
    if offered[other]:
        log.warning(
            "the %s provider has no %s stream; using its %s stream instead", provider, wanted, other
        )
        return other
    raise ConfigError(
        f"[jobwatch.sse] the {provider} provider offers no event stream; use transport = "
        f'"poll" or "webhook" with it'
    )


def _pace(budget: object) -> float:
    """Seconds between reconcile polls: the budget's sustained rate (0 = a host without one)."""
    rate = getattr(budget, "rate", None)
    if isinstance(rate, int | float) and rate > 0:
        return 1.0 / rate
    return 0.0


def _where(request: httpx.Request) -> str:
    return f"GET {redact_url(str(request.url.copy_with(query=None)))}"


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


def _redirect(response: httpx.Response, hop: int) -> httpx.URL | _Ending:
    """Where a redirect may be followed, or why not."""
    request, status = response.request, response.status_code
    try:
        target = request.url.join(response.headers["location"])
    except (httpx.InvalidURL, ValueError):
        return _Ending(
            cause=Cause.UNSUPPORTED,
            error=StreamError(
                f"{_where(request)} answered {status} with a Location that is not a URL"
            ),
        )
    if _origin(target) != _origin(request.url):
        shown = redact_url(str(target.copy_with(path="/", query=None, fragment=None)))
        return _Ending(
            cause=Cause.UNSUPPORTED,
            error=StreamError(
                f"{_where(request)} answered {status}, redirecting to another origin ({shown}); "
                f"jobwatch sends credentials only to the origin it is configured with and does "
                f"not follow: set base_url to the API's own origin"
            ),
        )
    if hop >= _MAX_REDIRECTS:
        return _Ending(
            cause=Cause.UNSUPPORTED,
            error=StreamError(
                f"{_where(request)} answered {status} after {_MAX_REDIRECTS} redirects; jobwatch "
                f"follows no more (a redirect loop?)"
            ),
        )
    return target


def _utf8(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    """Headers as UTF-8, as browsers send ``Last-Event-ID``: httpx encodes a text value as
    ASCII, and an id beyond ASCII would raise."""
    return [(name.encode(), value.encode()) for name, value in headers.items()]


def _network_error(exc: httpx.HTTPError) -> NetworkError:
    try:
        url = exc.request.url
    except RuntimeError:  # an error raised before a request existed
        return NetworkError(f"the stream failed: {type(exc).__name__}")
    text = describe_http_error(exc).partition(": ")[2]
    if url.password:
        text = text.replace(str(url), redact_url(str(url))).replace(url.password, "***")
    error = NetworkError(
        f"GET {redact_url(str(url.copy_with(query=None)))} failed: {type(exc).__name__}: {text}"
    )
    error.__cause__ = exc
    return error


async def _yield() -> None:
    """Give the event loop a turn in the middle of a read; shielded, so that a cancellation
    waits for the body iterator (see ``SSETransport._read``)."""
    with anyio.CancelScope(shield=True):
        await anyio.lowlevel.checkpoint()


async def _close(response: httpx.Response) -> None:
    with anyio.move_on_after(1.0, shield=True):
        await response.aclose()


async def _error_response(response: httpx.Response) -> Response:
    body = await _read_bounded(response, _ERROR_BODY)  # an error envelope: small
    return Response(status=response.status_code, headers=dict(response.headers), body=body)


async def _read_bounded(response: httpx.Response, limit: int) -> bytes:
    """At most ``limit`` decoded bytes of the body; a server may not fill memory with an
    error answer either. The iterator is ended by a cancellation, as in ``_read``."""
    try:
        decoder = BodyDecoder(response.headers.get("content-encoding", ""), Limits(max_event=limit))
    except StreamError:
        return b""
    body = bytearray()
    with anyio.CancelScope() as stop:
        async for raw in response.aiter_raw():
            if stop.cancel_called:
                continue
            try:
                for piece in decoder.decode(raw):
                    body += piece[: limit - len(body)]
                    if len(body) >= limit:
                        stop.cancel()
                        break
            except StreamError:
                stop.cancel()
    return bytes(body)
