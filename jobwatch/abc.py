"""Base classes for plugin authors: the three seams of jobwatch.

A **provider** knows one API's wire formats and turns them into :class:`~jobwatch.JobEvent`
values (pure functions, no I/O). A **transport** moves bytes — polls, holds streams open,
receives webhooks — through its :class:`TransportHost`: an :class:`EventSink` for what it
decoded and :class:`APIAccess` for budgeted requests. A **store** keeps
what must survive a restart: dedup keys, per-job state, stream checkpoints and the inbox of
events received but not yet dispatched.

Each implementation, the built-in ones too, is registered under an entry point group
(``jobwatch.providers``, ``jobwatch.transports``, ``jobwatch.stores``) and reads only the
configuration table named after it (``[jobwatch.<name>]``) in ``from_config``.
A :class:`Scheme` verifies webhook signatures; schemes are registered under
``jobwatch.schemes`` and chosen by ``[jobwatch.webhook] scheme``.
``jobwatch.testing`` has a conformance suite for each seam.
"""

from __future__ import annotations

import abc
import contextlib
import json
import shlex
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import anyio
import attrs
from anyio.abc import TaskStatus

from ._budget import RequestBudget
from ._capabilities import Capabilities
from ._config import Config
from ._errors import ConfigError, DecodeError, JobwatchError
from ._events import JobEvent
from ._http import Classification, Outcome, RateLimit, Request, Response
from ._ratelimit import classify_http, parse_rate_limit, parse_retry_after
from ._scheme import Scheme
from ._state import JobState, ResultsPage, Snapshot

if TYPE_CHECKING:
    from typing import Self

    from ._policy import Signals

__all__ = [
    "APIAccess",
    "Capabilities",
    "Classification",
    "EventSink",
    "JobState",
    "Outcome",
    "Provider",
    "RateLimit",
    "Request",
    "RequestBudget",
    "Response",
    "ResultsPage",
    "Scheme",
    "Snapshot",
    "Store",
    "Transport",
    "TransportHost",
    "Verdict",
    "WebhookDelivery",
    "classify_http",
    "kept_key",
    "parse_rate_limit",
    "parse_retry_after",
    "path_segment",
    "unreadable_kept",
]


@attrs.frozen(kw_only=True)
class WebhookDelivery:
    """A decoded webhook delivery: the sender's delivery id (if any) and its events.

    ``events`` is empty for a delivery of an event the provider has no job event for (one not
    about jobs, or a name the API's documentation does not list, such as a later revision's):
    the receiver acknowledges it, logs it and counts it as ``ignored``, and dispatches nothing.

    ``reconcile`` names jobs the delivery reports without their state (a thin delivery that
    carries an id, not counts): before recording ``events``, the receiver asks its sink to poll
    each once (:meth:`EventSink.reconcile`), so that the snapshot's events, counts included,
    come first and ``events`` are what is left when no poll can be made.
    """

    delivery_id: str | None
    event_name: str
    events: tuple[JobEvent, ...]
    reconcile: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class Verdict:
    """The ordering guard's answer for one event, applied atomically by :meth:`Store.record`.

    ``event`` is what to deliver (with its final key), or None to drop; ``state`` the job state
    to save (None: unchanged); ``check`` asks for one confirming poll of the job; ``dropped``
    names why an event was not delivered (``duplicate``, ``stale``, ``backwards``,
    ``after-terminal``, ``old-attempt``).
    """

    event: JobEvent | None
    state: JobState | None = None
    check: bool = False
    dropped: str | None = None


_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")


def path_segment(value: str) -> str:
    """``value`` as one URL path segment: every byte but letters, digits and ``-_.~``
    percent-encoded, and ``.`` / ``..`` too, so that no job id can change a request's path or
    query. A provider builds its URLs with it (``f"/v1/jobs/{path_segment(job_id)}"``)."""
    if value in (".", ".."):
        return value.replace(".", "%2E")
    if all(c in _UNRESERVED for c in value):
        return value
    return "".join(
        c if c in _UNRESERVED else "".join(f"%{b:02X}" for b in c.encode("utf-8")) for c in value
    )


def kept_key(raw: str | bytes, *, within: str | None = None) -> str | None:
    """The key of an event a store kept as JSON (:meth:`JobEvent.to_json`; inside the field
    ``within`` of a JSON object when given), read without the rest of it: an entry this
    jobwatch cannot read as an event (a newer one wrote it) is still found by its key, and
    ``jobwatch inbox drop KEY`` removes it. None where no key can be read."""
    try:
        found = json.loads(raw)
    except ValueError:  # (UnicodeDecodeError too)
        return None
    if within is not None:
        found = found.get(within) if isinstance(found, dict) else None
    key = found.get("key") if isinstance(found, dict) else None
    return key if isinstance(key, str) else None


def _drop_command(key: str) -> str:
    """The ``jobwatch inbox drop`` command line that removes ``key``, quoted for a shell, a
    key that begins with - after ``--`` (it would be read as an option)."""
    return f"jobwatch inbox drop {'-- ' if key.startswith('-') else ''}{shlex.quote(key)}"


def unreadable_kept(
    store: str, what: str, key: str | None, error: Exception, *, otherwise: str
) -> DecodeError:
    """The error for an event ``store`` kept (``what``: "the dead letter", say; its ``key``)
    that this jobwatch cannot read (``error``), with the way out: ``jobwatch inbox drop KEY``,
    or ``otherwise`` for one that names no key."""
    way_out = f"remove it with `{_drop_command(key)}`" if key else otherwise
    return DecodeError(
        f"{store}: {what} {key!r} cannot be read by this jobwatch ({error}); a newer "
        f"jobwatch may have written it: run that one, or {way_out}"
    )


class Provider(abc.ABC):
    """One API's knowledge: which requests to make and how to decode every answer.

    Every method is a pure function of its arguments: no I/O, no clock. Decoders raise
    :class:`~jobwatch.DecodeError` for a payload that does not match the wire format (never a
    half-filled event) and :class:`~jobwatch.APIError` subclasses for error responses.
    Events carry a ``key`` that is equal for the same fact whichever channel reported it; the
    core qualifies it with the job's run.

    ``capabilities`` says what the API offers (a class attribute, or set in ``__init__`` by a
    provider whose API is described in its configuration); the policy never picks a transport
    it rules out. ``default_base_url`` is the API's public URL, used when ``[jobwatch]
    base_url`` is not set; a provider without one makes ``base_url`` required.
    """

    name: ClassVar[str]
    capabilities: Capabilities
    default_base_url: str | None = None

    @classmethod
    def from_config(cls, config: Config) -> Self:
        """Build the provider from the ``[jobwatch]`` table and its own ``[jobwatch.<name>]``."""
        return cls(config)  # type: ignore[call-arg]

    def resolve_base_url(self, config: Config) -> str:
        """The URL requests go to: ``[jobwatch] base_url``, else :attr:`default_base_url`.

        Raises :class:`~jobwatch.ConfigError` when neither is set, before any request is made
        (so that no credential goes to a host the user did not name).
        """
        url = config.base_url or self.default_base_url
        if url is None:
            raise ConfigError(
                f"[jobwatch] base_url is not set and the {self.name} provider has no default "
                'base URL; set base_url = "https://..." under [jobwatch] to the API\'s address'
            )
        return url

    @abc.abstractmethod
    def headers(self) -> Mapping[str, str]:
        """Headers every request carries (authentication). A provider that sends its
        credentials only to the API's own origin puts them on each :class:`Request` it makes
        instead, and leaves them out of a request for a URL an answer named elsewhere."""

    @abc.abstractmethod
    def status_request(self, job_id: str) -> Request:
        """The cheapest request that shows a job's status and progress."""

    @abc.abstractmethod
    def decode_status(
        self, job_id: str, response: Response, previous: Snapshot | None, *, source: str
    ) -> tuple[Snapshot, list[JobEvent]]:
        """Decode a status response, and derive the events since the ``previous`` snapshot."""

    @abc.abstractmethod
    def results_request(self, job_id: str) -> Request:
        """The request for the first page of a job's results."""

    @abc.abstractmethod
    def decode_results(self, job_id: str, response: Response) -> ResultsPage:
        """Decode one page of results and the request for the next."""

    def job_stream_request(self, job_id: str) -> Request:
        """The request that opens a job's own event stream (``capabilities.job_stream``).

        Asked for at each connection. Where a job names its own stream in its status (a URL
        field), raise :class:`~jobwatch.StreamError` until a decoded status has shown it: the
        transport then polls the job once and asks again.
        """
        raise NotImplementedError(f"the {self.name} provider has no per-job stream")

    def workspace_stream_request(self) -> Request:
        """The request that opens the workspace stream (``capabilities.workspace_stream``)."""
        raise NotImplementedError(f"the {self.name} provider has no workspace stream")

    def decode_stream_event(
        self, job_id: str | None, event: str, data: str, *, source: str
    ) -> list[JobEvent]:
        """Decode one stream frame; ``job_id`` is None on the workspace stream.

        An empty list means a frame that carries nothing to deliver (a ping, say).
        """
        raise NotImplementedError(f"the {self.name} provider has no event stream")

    def decode_webhook(
        self, headers: Mapping[str, str], body: bytes, *, source: str
    ) -> WebhookDelivery:
        """Decode a verified webhook delivery (headers with lower-case names)."""
        raise NotImplementedError(f"the {self.name} provider receives no webhooks")

    @abc.abstractmethod
    def error_for(self, response: Response) -> JobwatchError:
        """The jobwatch error for a non-2xx response (an APIError subclass)."""

    def classify(self, response: Response) -> Classification:
        """What a response means: fine, rate limited, job gone, retry later, or fatal.

        Called for every response; the transports and the core obey the verdict, and the
        request budget learns the rate-limit headers it carries. The default,
        :func:`classify_http`, reads standard HTTP (429, 503 + ``Retry-After``, 401/403 with a
        rate-limit header, ``x-ratelimit-*``, 404/410, 5xx) and honours a
        :class:`~jobwatch.RateLimited` that :meth:`error_for` returns; override it for an
        API's own signals, starting from ``classify_http(response, self.error_for)``.
        """
        return classify_http(response, self.error_for)


class EventSink(abc.ABC):
    """Where a transport hands what it learned: decoded events in, and the jobs to watch.

    A webhook receiver needs nothing more; the serverless handler is one.
    ``deliver`` feeds decoded events into the dedup and ordering pipeline; ``authoritative``
    marks a polled snapshot, the only evidence that may begin a new run of a finished job.
    """

    provider: Provider
    store: Store

    @abc.abstractmethod
    async def deliver(
        self,
        events: Sequence[JobEvent],
        *,
        authoritative: bool = False,
        as_of: float | None = None,
        claim: tuple[str, float] | None = None,
    ) -> None:
        """Hand decoded events to the pipeline; returns once they are recorded.

        ``as_of`` is when the snapshot behind authoritative events was requested
        (``Response.sent_at``, wall clock): a snapshot requested before the job's terminal
        event was recorded — by this process or another sharing the store — is stale, and may
        not begin a new run. ``claim``, a ``(key, ttl)`` pair, is claimed in the store with the
        events, once they are recorded (:meth:`Store.record_batch`): the webhook receiver hands
        each delivery's identity this way. A sink whose ``deliver`` does not take ``claim``
        (written before it existed) still works: the receiver then claims the key itself,
        once ``deliver`` returns.
        """

    @abc.abstractmethod
    def count(self, transport: str, name: str, n: int = 1) -> None:
        """Add ``n`` to the transport's counter ``name`` in ``Watcher.statistics()``."""

    async def reconcile(self, job_ids: Iterable[str], *, reason: str) -> None:  # noqa: B027
        """Poll each job once within the budget and deliver what its snapshot shows
        (nothing where the sink makes no requests)."""

    def watched(self) -> frozenset[str]:
        """The jobs some subscriber is waiting on and that have not ended."""
        return frozenset()

    def end_job(self, job_id: str, error: JobwatchError) -> None:  # noqa: B027 - optional
        """Stop watching a job because of ``error``; its ``watch()``/``wait()`` raise it."""


class APIAccess(abc.ABC):
    """Budgeted access to the API: every request a transport makes draws from one budget.

    ``request`` makes one HTTP request relative to ``base_url`` and returns the response
    whatever its status (a rate-limited answer pauses every caller); network failures raise
    :class:`~jobwatch.NetworkError`. Long-lived streams are opened by the transport itself,
    after :meth:`spend`.
    """

    provider: Provider
    #: The shared request budget: a transport may consult ``budget.delay(now)`` to plan,
    #: but takes requests only through :meth:`request` or :meth:`spend`.
    budget: RequestBudget | None = None

    @abc.abstractmethod
    async def request(self, request: Request) -> Response:
        """Make one budgeted request relative to the API's base URL."""

    @abc.abstractmethod
    async def spend(self) -> None:
        """Take one request from the budget without making it (opening a stream, say)."""

    def rate_limited(self, retry_after: float | None) -> None:  # noqa: B027 - optional hook
        """A rate-limited answer came back outside :meth:`request` (a stream opening, say):
        pause the budget for ``retry_after`` seconds, as :meth:`request` does by itself."""

    @property
    @abc.abstractmethod
    def base_url(self) -> str:
        """The API's base URL, for transports that open their own connections."""


class TransportHost(EventSink, APIAccess):
    """What a Watcher offers its transports: both seams. Transports never reach past it."""

    config: Config

    @property
    def transports(self) -> tuple[str, ...]:
        """The names of the transports this host runs."""
        return ()

    def subscribe(
        self,
        callback: Callable[[JobEvent], Any],
        *,
        kinds: Collection[str] | None = None,
        job_id: str | None = None,
    ) -> Any:
        """Call ``callback`` for matching dispatched events, like ``Watcher.subscribe``
        (a relay publishes what a receiver dispatches this way)."""
        raise NotImplementedError(f"{type(self).__name__} dispatches to no subscribers")


class Transport(abc.ABC):
    """A way of learning about jobs: poll, stream, webhook, or a plugin's own.

    The Watcher builds it with :meth:`from_config`, runs :meth:`run` in its task group until
    it closes, and tells it which jobs the application watches through :meth:`watch` and
    :meth:`unwatch`. ``run`` calls ``task_status.started()`` once it is ready to receive.
    """

    name: ClassVar[str]
    #: A push transport reports on its own; the Watcher's safety net polls jobs it left silent.
    push: ClassVar[bool] = True

    @classmethod
    def from_config(cls, config: Config) -> Self:
        """Build the transport from its ``[jobwatch.<name>]`` table."""
        return cls()

    @classmethod
    def fits(cls, config: Config, environ: Mapping[str, str], signals: Signals) -> str | None:
        """For the policy: a reason this transport fits the environment, or None.

        The policy asks plugin transports whose ``[jobwatch.<name>]`` table is present, before
        its own table; the first that answers with a reason is chosen.
        """
        return None

    @abc.abstractmethod
    async def run(
        self, host: TransportHost, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Move bytes until cancelled, handing decoded events to ``host.deliver``.

        A transport that can tell the Watcher nothing any more (the API refused its key)
        raises a JobwatchError saying what to do; the Watcher names it in
        ``statistics().stopped`` and ends with it once no transport runs. An error before
        ``task_status.started()`` fails the Watcher's start."""

    def watch(self, job_id: str) -> None:  # noqa: B027 - optional hook
        """The application started watching ``job_id``."""

    def unwatch(self, job_id: str) -> None:  # noqa: B027 - optional hook
        """Nobody watches ``job_id`` any more (it ended, or its watchers left)."""


class Store(abc.ABC):
    """What must survive a restart, and be shared by receivers that deduplicate together.

    :meth:`record` is the heart: it loads a job's state, asks ``decide`` (the pure ordering
    guard) for a :class:`Verdict`, and — atomically — drops the event if its key was seen
    within ``ttl`` seconds, else claims the key, saves the state and appends the event to the
    inbox. Events leave the inbox through :meth:`ack` once every subscriber has handled them;
    :meth:`pending` replays what is left after a restart, and :meth:`stranded` what a call
    that raised recorded all the same. :meth:`claim` keeps, beside the dedup keys, which
    webhook deliveries were recorded. Implementations must not block the event loop.
    """

    name: ClassVar[str]
    #: A store whose ``record`` waits on I/O. The pipeline does not consult it: it hands each
    #: batch to :meth:`record_batch`, which such a store overrides to apply it in one go.
    concurrent: ClassVar[bool] = False
    #: Other processes may record into the same store (a fleet on one server, processes
    #: sharing one file): a process then keeps no shortcut of its own about a job's state.
    shared: ClassVar[bool] = False

    @classmethod
    def from_config(cls, config: Config) -> Self:
        """Build the store from its ``[jobwatch.<name>]`` table."""
        return cls()

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Connect or create files; called once before use."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections and files."""

    async def monitor(self) -> None:  # noqa: B027 - optional hook
        """Watch, while a Watcher uses the store, for a loss that must stop it; raise it then.

        The Watcher runs this in its task group from start to close (after :meth:`open`), and
        an error raised here ends the Watcher with it, whatever transports still run: its
        callbacks stop, nothing more is dispatched, and ``async with watcher`` raises it, as
        does every ``watch()`` and ``wait()`` in progress. A store that can lose, behind the
        process's back, what this process owns — a lease on its inbox that ran out while
        another process adopted what it held — raises a JobwatchError that says what to do
        (restart, so that it takes a new lease). Returning ends only the watch. The default
        returns at once: a store without such a loss has nothing to do.
        """

    @abc.abstractmethod
    async def record(
        self, job_id: str | None, decide: Callable[[JobState | None], Verdict], *, ttl: float
    ) -> Verdict:
        """Apply the verdict of ``decide`` atomically; a seen key becomes ``duplicate``."""

    async def record_batch(
        self,
        records: Sequence[tuple[str | None, Callable[[JobState | None], Verdict]]],
        *,
        ttl: float,
        claim: tuple[str, float] | None = None,
    ) -> list[Verdict]:
        """Record several events at once: what :meth:`record` of each ``(job_id, decide)``
        in turn would answer, one verdict per record, in order.

        Each ``decide`` sees the job's state as the records before it left it (a record whose
        key was seen leaves it unchanged). The pipeline hands a network read's events here
        in one call, grouped by job; a store that can apply them together (one transaction,
        one round trip) overrides this. The default calls :meth:`record` for each: if one
        raises, those before it stay recorded, and :meth:`stranded` hands their events over
        for dispatch.

        ``claim``, a ``(key, ttl)`` pair (the identity of a webhook delivery), is claimed as
        :meth:`claim` would, once the records are recorded, never when recording raised. A
        store that can writes it in the records' own transaction, so that a crash keeps both
        or neither. The default calls :meth:`claim` after the records; if that raises, the
        records stand and their events are stranded as above (the sender's retry is then
        recorded again, and its events' keys make it dispatch nothing twice). A store whose
        ``record_batch`` does not take ``claim`` (written before it existed) still works: the
        pipeline calls :meth:`claim` after it.
        """
        verdicts: list[Verdict] = []
        with _stranding(self, verdicts):
            for job_id, decide in records:
                verdicts.append(await self.record(job_id, decide, ttl=ttl))
            if claim is not None:
                await self.claim(claim[0], ttl=claim[1])
        return verdicts

    async def stranded(self) -> list[JobEvent]:
        """Events in the inbox that a call which raised recorded all the same, each returned
        once: the Watcher dispatches them as it dispatches the inbox at start.

        A record can fail after it committed (a remote store's reply lost on the way back),
        and a batch after recording some of its events; the caller saw an error, so nobody
        else will dispatch them before a restart. The Watcher asks every second: answer at
        once when there is nothing to look into. The default returns what the default
        :meth:`record_batch` recorded before a later record of its batch raised.
        """
        local = _local(self)
        events, local.stranded = local.stranded, []
        return events

    async def claimed(self, key: str) -> bool:
        """Whether ``key`` is held by a :meth:`claim` whose ``ttl`` has not run out.

        Claims are not dedup keys: claiming ``key`` never makes an event with that key a
        duplicate, nor does recording one make ``key`` claimed.
        """
        return _local(self).claims.held(key, anyio.current_time())

    async def claim(self, key: str, *, ttl: float) -> bool:
        """Hold ``key`` for ``ttl`` seconds, atomically: True if it was free (never claimed,
        or its claim ran out), False if it is held (it then stays as it was).

        The webhook receiver claims the identity of the signed content of each delivery it
        recorded, for as long as that signature could be accepted again, and answers a
        delivery whose identity is :meth:`claimed` as a duplicate: a store that keeps claims
        beside its dedup keys makes that hold across restarts and across the processes that
        share it. The default keeps the last 10,000 claims in this process only; override
        both methods to keep them as durably as the dedup keys.
        """
        return _local(self).claims.claim(key, anyio.current_time(), ttl)

    @abc.abstractmethod
    async def get_job(self, job_id: str) -> JobState | None:
        """The saved state of a job, if any."""

    @abc.abstractmethod
    async def put_job(self, state: JobState) -> None:
        """Save a job's state (creating it)."""

    @abc.abstractmethod
    async def active_jobs(self) -> list[JobState]:
        """Watched jobs whose current run has not ended (reconciled on start)."""

    @abc.abstractmethod
    async def pending(self) -> list[JobEvent]:
        """Events recorded but not yet acknowledged, oldest first."""

    @abc.abstractmethod
    async def ack(self, key: str) -> None:
        """Remove a dispatched event from the inbox."""

    async def ack_batch(self, keys: Sequence[str]) -> None:
        """Remove dispatched events from the inbox, as :meth:`ack` of each key in order
        does (the default); the dispatcher hands over what it handled together. A store
        that can remove them in one go overrides it."""
        for key in keys:
            await self.ack(key)

    @abc.abstractmethod
    async def get_checkpoint(self, name: str) -> str | None:
        """A transport's saved position (an SSE stream's last event id, say)."""

    @abc.abstractmethod
    async def put_checkpoint(self, name: str, value: str) -> None:
        """Save a transport's position."""

    async def dead_letter(self, event: JobEvent, subscriber: str, error: str) -> None:  # noqa: B027
        """Keep an event whose callback kept failing (default: not kept beyond the log)."""

    async def dead_letters(self) -> list[tuple[JobEvent, str, str]]:
        """The dead letters kept, oldest first, each ``(event, subscriber, error)``.

        ``jobwatch inbox`` and the dashboard list them. The default keeps none, so lists none.
        """
        return []

    async def replay_dead_letter(self, key: str) -> bool:
        """Move the dead letters of the event ``key`` back into the inbox, as one event: the
        next Watcher on this store dispatches it at start, to every matching subscriber.
        True if there was one; the default keeps none, so answers False."""
        return False

    async def drop(self, key: str) -> bool:
        """Forget the event ``key`` for good: its dead letters and its inbox row, so that it
        is never dispatched. True if there was either. The default removes the inbox row with
        :meth:`ack`."""
        if not any(event.key == key for event in await self.pending()):
            return False
        await self.ack(key)
        return True

    def describe(self) -> Mapping[str, Any]:
        """Non-secret facts for ``jobwatch doctor`` (path, URL without password, ...)."""
        return {"name": self.name}


#: How many claims the default :meth:`Store.claim` keeps (per store, in this process).
_LOCAL_CLAIMS = 10_000


class _Claims:
    """The default claims: key -> when it runs out (anyio's clock), the newest last."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}

    def held(self, key: str, now: float) -> bool:
        until = self._until.get(key)
        return until is not None and until > now

    def claim(self, key: str, now: float, ttl: float) -> bool:
        if self.held(key, now):
            return False
        self._until.pop(key, None)
        self._until[key] = now + ttl
        if len(self._until) > _LOCAL_CLAIMS:
            del self._until[next(iter(self._until))]
        return True


@attrs.define
class _Local:
    """What the defaults of :class:`Store` keep for one store instance, in this process."""

    claims: _Claims = attrs.Factory(_Claims)
    stranded: list[JobEvent] = attrs.Factory(list)


def _local(store: Store) -> _Local:
    local: _Local | None = getattr(store, "_jobwatch_local", None)
    if local is None:
        local = _Local()
        try:
            object.__setattr__(store, "_jobwatch_local", local)  # a frozen attrs store too
        except AttributeError:  # a store with __slots__: kept beside it instead
            return _SLOTTED.setdefault(id(store), local)
    return local


_SLOTTED: dict[int, _Local] = {}


@contextlib.contextmanager
def _stranding(store: Store, verdicts: Sequence[Verdict]) -> Iterator[None]:
    """Strand the events of ``verdicts`` (:meth:`Store.stranded`) if the block raises: they
    are recorded, but the caller sees the error, not these verdicts, so nobody would
    dispatch them. ``verdicts`` is read when the block raises: it may grow inside it."""
    try:
        yield
    except BaseException:
        _local(store).stranded.extend(v.event for v in verdicts if v.event is not None)
        raise
