"""Values that cross the seams between the core, transports, providers and stores."""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import attrs

from ._events import JobStatus, _slot_setters

#: The largest count (or attempt number) a provider may decode: SQLite's largest INTEGER.
#: Beyond it no durable store could record the event, and a webhook delivery carrying one
#: would be answered 503 on every retry instead of being refused once.
MAX_COUNT = 2**63 - 1

__all__ = [
    "MAX_COUNT",
    "Capabilities",
    "Classification",
    "JobState",
    "Outcome",
    "RateLimit",
    "Request",
    "Response",
    "ResultsPage",
    "Snapshot",
    "seconds",
]


@attrs.frozen(kw_only=True)
class Request:
    """An HTTP request a provider asks a transport to make, relative to ``base_url``."""

    method: str = "GET"
    path: str
    params: Mapping[str, str] = attrs.field(factory=dict)
    headers: Mapping[str, str] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class Response:
    """An HTTP response as the core hands it to a provider: status, headers, body bytes."""

    status: int
    headers: Mapping[str, str] = attrs.field(factory=dict)
    body: bytes = b""
    #: When the request left (wall clock, ``time.time()``): what a snapshot in the body is as
    #: of, compared with when other processes sharing the store recorded a job's end.
    sent_at: float | None = None


@attrs.frozen(kw_only=True)
class Capabilities:
    """What an API offers; the policy, the transports and ``jobwatch doctor`` ask this
    instead of assuming one API's shape.

    - ``job_stream`` / ``workspace_stream``: a per-job / a workspace-wide event stream exists
      (the policy never picks ``sse`` for a provider with neither).
    - ``stream_event_ids``: the streams send ``id:`` and resume from ``Last-Event-ID``.
    - ``webhooks``: the provider decodes webhook deliveries (``decode_webhook``); the policy
      never picks ``webhook`` for a provider without them.
    - ``webhook_scheme``: the signature scheme its webhook deliveries use.
    - ``announces_cancellation``: push channels report cancelled jobs; if not, push transports
      need the safety net (``safety_poll``) to learn of a cancellation.
    """

    job_stream: bool = False
    workspace_stream: bool = False
    stream_event_ids: bool = False
    webhooks: bool = False
    webhook_scheme: str = "standard-webhooks"
    announces_cancellation: bool = True

    def offers(self) -> tuple[str, ...]:
        """The built-in transports these capabilities can serve, in their usual order."""
        streams = self.job_stream or self.workspace_stream
        return ("poll", *(("sse",) if streams else ()), *(("webhook",) if self.webhooks else ()))


@attrs.frozen(kw_only=True)
class Snapshot:
    """A job's state as one status request showed it (what polling compares).

    ``started_at`` is when the API says the job started (wall clock, seconds since the epoch),
    where its answer says so: the poll schedule times the job's pace from there.
    """

    job_id: str
    status: JobStatus | None
    raw_status: str
    completed: int | None = None
    total: int | None = None
    data: Mapping[str, Any] = attrs.field(factory=dict, eq=False)
    started_at: float | None = attrs.field(default=None, eq=False)

    @property
    def terminal(self) -> bool:
        """Whether the snapshot shows a job that has stopped."""
        return self.status is not None and self.status.terminal


@attrs.frozen(kw_only=True)
class ResultsPage:
    """One page of a job's results and the request for the next page, if any."""

    items: tuple[Mapping[str, Any], ...]
    next: Request | None = None


@attrs.frozen(kw_only=True)
class JobState:
    """What the core remembers of one job: the ordering guard's state, kept by the Store.

    ``run`` counts runs of the job (a retried job starts run 2). ``attempt`` is the API's own
    attempt number of this run, where its events carry one (None until then). ``completed`` is
    the highest progress count delivered in this run, ``status`` the furthest status,
    ``terminal`` whether the run's terminal event was delivered. ``watched`` marks jobs an
    application asked about, which a restarted Watcher reconciles. ``updated_at`` is when a
    delivered event last changed it (wall clock, seconds since the epoch; 0 if never
    stamped): a polled snapshot requested before a run's end was recorded begins no new run.
    """

    job_id: str
    run: int = 1
    attempt: int | None = None
    status: JobStatus | None = None
    completed: int | None = None
    total: int | None = None
    started: bool = False
    terminal: bool = False
    watched: bool = False
    updated_at: float = 0.0


_STATE_SETTERS = _slot_setters(
    JobState,
    (
        "job_id",
        "run",
        "attempt",
        "status",
        "completed",
        "total",
        "started",
        "terminal",
        "watched",
        "updated_at",
    ),
)


def seconds(when: datetime | None) -> float | None:
    """An API's time as wall-clock seconds since the epoch (a time without a zone taken as
    UTC, as APIs write them); None stays None."""
    if when is None:
        return None
    try:
        return (when if when.tzinfo is not None else when.replace(tzinfo=UTC)).timestamp()
    except (OverflowError, OSError, ValueError):
        return None


def make_state(
    job_id: str,
    run: int,
    attempt: int | None,
    status: JobStatus | None,
    completed: int | None,
    total: int | None,
    started: bool,
    terminal: bool,
    watched: bool,
    updated_at: float,
) -> JobState:
    """``JobState(...)`` with these values, built through the slots' own setters: for the
    guard and the stores, which build one for every event and every job read back."""
    state = object.__new__(JobState)
    (
        set_job,
        set_run,
        set_attempt,
        set_status,
        set_completed,
        set_total,
        set_started,
        set_terminal,
        set_watched,
        set_updated,
    ) = _STATE_SETTERS
    set_job(state, job_id)
    set_run(state, run)
    set_attempt(state, attempt)
    set_status(state, status)
    set_completed(state, completed)
    set_total(state, total)
    set_started(state, started)
    set_terminal(state, terminal)
    set_watched(state, watched)
    set_updated(state, updated_at)
    return state


class Outcome(enum.StrEnum):
    """What an API's answer means for the request that got it (see :class:`Classification`)."""

    #: A usable answer: decode it.
    FINE = "fine"
    #: The API's request budget is spent: every caller pauses; no watch ends.
    RATE_LIMITED = "rate_limited"
    #: The job is gone (unknown or deleted): its watch ends with the API's error.
    GONE = "gone"
    #: A passing failure: this request (this job's poll) is tried again later.
    RETRY = "retry"
    #: Trying again cannot help (a refused key, say): the watch ends with the API's error.
    FATAL = "fatal"


#: The longest wait a response can impose, in seconds: one absurd header never stops a Watcher.
MAX_WAIT = 3600.0


def _capped(value: float | None) -> float | None:
    return None if value is None else min(float(value), MAX_WAIT)


def _optional_seconds(_: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise ValueError(
            f"{attribute.name} must be a finite number of seconds >= 0 or None, got {value!r}"
        )


def _optional_count(_: object, attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ValueError(f"{attribute.name} must be an integer >= 0 or None, got {value!r}")


@attrs.frozen(kw_only=True)
class RateLimit:
    """What one response says about the API's request budget; any part may be unknown.

    ``limit``: requests the API allows per its window. ``remaining``: requests left in the
    current window. ``reset``: seconds from the response until that window ends (at most
    ``MAX_WAIT``, one hour). Read them with :func:`jobwatch.abc.parse_rate_limit`.
    """

    limit: int | None = attrs.field(default=None, validator=_optional_count)
    remaining: int | None = attrs.field(default=None, validator=_optional_count)
    reset: float | None = attrs.field(default=None, converter=_capped, validator=_optional_seconds)


@attrs.frozen(kw_only=True)
class Classification:
    """A provider's verdict on one response (``Provider.classify``); transports and the core
    obey it and know no status codes of their own.

    ``wait``: seconds before asking again — every caller waits for ``RATE_LIMITED``, the one
    job for ``RETRY``; None lets jobwatch back off on its own; at most ``MAX_WAIT`` (an hour).
    ``rate_limit``: what the response said about the API's budget, whatever the outcome; the
    request budget learns it.
    Build one with :meth:`fine`, :meth:`rate_limited`, :meth:`gone`, :meth:`retry` or
    :meth:`fatal`.
    """

    outcome: Outcome
    wait: float | None = attrs.field(default=None, converter=_capped, validator=_optional_seconds)
    rate_limit: RateLimit | None = None

    @classmethod
    def fine(cls, *, rate_limit: RateLimit | None = None) -> Classification:
        """A usable answer."""
        return cls(outcome=Outcome.FINE, rate_limit=rate_limit)

    @classmethod
    def rate_limited(
        cls, *, wait: float | None = None, rate_limit: RateLimit | None = None
    ) -> Classification:
        """The budget is spent: every caller pauses ``wait`` seconds (None: backoff)."""
        return cls(outcome=Outcome.RATE_LIMITED, wait=wait, rate_limit=rate_limit)

    @classmethod
    def gone(cls, *, rate_limit: RateLimit | None = None) -> Classification:
        """The job is gone: its watch ends with the API's error."""
        return cls(outcome=Outcome.GONE, rate_limit=rate_limit)

    @classmethod
    def retry(
        cls, *, wait: float | None = None, rate_limit: RateLimit | None = None
    ) -> Classification:
        """A passing failure: try this request again later (after ``wait`` seconds, if given)."""
        return cls(outcome=Outcome.RETRY, wait=wait, rate_limit=rate_limit)

    @classmethod
    def fatal(cls, *, rate_limit: RateLimit | None = None) -> Classification:
        """Trying again cannot help: the watch ends with the API's error."""
        return cls(outcome=Outcome.FATAL, rate_limit=rate_limit)

    @property
    def ends(self) -> bool:
        """Whether the answer ends the job's watch (``GONE`` or ``FATAL``)."""
        return self.outcome in (Outcome.GONE, Outcome.FATAL)
