"""Reconnection of one event stream, as a sans-I/O state machine.

:class:`Reconnector` follows one stream through its life: connection attempts, the frames it
carries, the ways it ends, and the fallback to polling when the stream cannot be had. It reads
no clock and does no I/O: the SSE transport's async shell tells it what happened (with ``now``
from anyio's clock) and it answers with values — the headers to send, whether to reconcile,
and a :class:`Plan` saying when to try again or whether to fall back::

    machine = Reconnector(Backoff(initial=1.0, maximum=30.0), max_failures=5,
                          probe_interval=60.0, rng=random.Random(7), resumable=True)
    headers = machine.request_headers()            # Last-Event-ID once the server sent ids
    opened = machine.opened()                      # 200 text/event-stream
    machine.received()                             # a byte arrived: the stream is healthy
    machine.event(event_id="42", retry_ms=None)    # one dispatched frame
    plan = machine.ended(now, Cause.DROPPED)       # Plan(action=RECONNECT, at=now + ~1 s)

Rules (WHATWG EventSource, plus what jobwatch adds):

- ``id:`` sets the last event id, sent back as ``Last-Event-ID`` (UTF-8) on the next
  connection; an empty id clears it. Only a ``resumable`` stream (the provider says its server
  resumes from ``Last-Event-ID``) tracks ids; any other ignores them and is reconciled on every
  connection. An id that no HTTP header can carry (a control character, a space or tab at
  either end, over ``MAX_ID_BYTES``: :func:`header_id` says why) is ignored and the last good
  one kept: the server then resumes from earlier, and what it sends again is dropped as a
  duplicate.
- ``retry:`` (milliseconds) sets the reconnection time, clamped to ``RETRY_MIN`` ..
  ``RETRY_MAX`` seconds: a server may neither make a client hammer it nor send it away.
- A connection attempt *fails* when it ends before a single byte arrived. The delay before the
  next attempt is ``base · multiplier^failures`` (``base`` is the server's ``retry:`` if it
  sent one, else ``Backoff.initial``), capped at ``max(Backoff.maximum, retry)``, with up to
  ``Backoff.jitter`` of it taken off at random — but never below the server's ``retry:``.
  A rate-limited answer waits at least the time it names. A connection that broke a bound (an
  oversized line or event, a compression bomb) fails too, whatever it sent before.
- ``max_failures`` failed attempts in a row, or an endpoint that does not serve a stream (the
  provider classifies the answer as gone or fatal, or its content type is not
  ``text/event-stream``), fall back to polling;
  the stream is probed again every ``probe_interval`` seconds, and a probe that opens ends
  the fallback. A 401 ends the stream: retrying with a refused key cannot succeed.
- A connection that opens without sending ``Last-Event-ID`` cannot have been resumed, so its
  jobs must be reconciled by one poll each; one that sent it is resumed by the server.
"""

from __future__ import annotations

import enum
import math
import random
import re

import attrs

__all__ = [
    "RETRY_MAX",
    "RETRY_MIN",
    "Action",
    "Backoff",
    "Cause",
    "Opened",
    "Pacer",
    "Plan",
    "Reconnector",
    "header_id",
]

#: The bounds of the server's ``retry:``, seconds.
RETRY_MIN = 0.5
RETRY_MAX = 60.0


#: Characters no header value may hold (RFC 9110 field-value: no control but HTAB).
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f]")
#: The longest id sent back, in UTF-8 bytes: servers refuse header lines of 4–16 KiB and more
#: (nginx and Apache by default at 8 KiB), and an id is a position, not a payload.
MAX_ID_BYTES = 4096


def header_id(event_id: str) -> str | None:
    """Why ``event_id`` cannot be sent back as ``Last-Event-ID``, or None when it can.

    A header value may not begin or end with a space or tab, nor hold a control character;
    any other text goes as UTF-8, as browsers send it, up to ``MAX_ID_BYTES``.
    """
    if _CONTROL.search(event_id):
        return "it holds a control character"
    if event_id[:1] in (" ", "\t") or event_id[-1:] in (" ", "\t"):
        return "it begins or ends with a space or tab"
    if len(event_id) > MAX_ID_BYTES // 4 and len(event_id.encode()) > MAX_ID_BYTES:
        return f"it is longer than {MAX_ID_BYTES} bytes, more than a server takes in a header"
    return None


def _positive(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


def _at_least_one(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value >= 1.0:
        raise ValueError(f"{attribute.name} must be >= 1, got {value!r}")


def _fraction(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{attribute.name} must be in [0, 1), got {value!r}")


@attrs.frozen(kw_only=True)
class Backoff:
    """Exponential backoff with jitter: the delays between failed connection attempts."""

    initial: float = attrs.field(default=1.0, validator=_positive)
    maximum: float = attrs.field(default=30.0, validator=_positive)
    multiplier: float = attrs.field(default=2.0, validator=_at_least_one)
    jitter: float = attrs.field(default=0.5, validator=_fraction)


class Cause(enum.Enum):
    """Why a connection ended, as the async shell saw it."""

    #: The server ended the response (a clean end of the body).
    CLOSED = "closed"
    #: The connection broke while the stream was being read.
    DROPPED = "dropped"
    #: Nothing arrived for the heartbeat timeout: the stream went silent.
    STALLED = "stalled"
    #: No response: connection refused, reset or timed out before the headers.
    REFUSED = "refused"
    #: An answer worth retrying (a server error, a rate limit, as the provider classifies it).
    RETRYABLE = "retryable"
    #: The endpoint does not serve a stream (gone or fatal, or not text/event-stream).
    UNSUPPORTED = "unsupported"
    #: The API refused the credentials.
    UNAUTHORIZED = "unauthorized"
    #: The server broke a bound mid-stream (an oversized line or event, a compression bomb,
    #: a corrupt body): a failed attempt, even though bytes arrived.
    VIOLATED = "violated"


class Action(enum.Enum):
    """What to do after a connection ended."""

    RECONNECT = "reconnect"
    FALLBACK = "fallback"
    END = "end"


@attrs.frozen(kw_only=True)
class Plan:
    """The answer to :meth:`Reconnector.ended`.

    ``action`` says what to do, ``at`` when: the time of the next connection attempt for
    ``RECONNECT``, of the next probe for ``FALLBACK`` (meanwhile, poll). ``fell_back`` is true
    when this plan begins a fallback (it was streaming before), for the statistics and the log.
    """

    action: Action
    at: float
    fell_back: bool = False


@attrs.frozen(kw_only=True)
class Opened:
    """The answer to :meth:`Reconnector.opened`.

    ``reconcile``: the connection was not resumed with ``Last-Event-ID``, so what happened
    while it was down must be learnt by polling. ``recovered``: this connection ends a fallback.
    ``reconnected``: it follows an earlier connection (a reconnect, not the first open).
    """

    reconcile: bool
    recovered: bool
    reconnected: bool


class Reconnector:
    """The reconnection state of one stream; see the module docstring for the rules.

    ``rng`` draws the jitter (inject a seeded ``random.Random`` for reproducible delays);
    ``resumable``: the server resumes from ``Last-Event-ID`` (else ids are ignored);
    ``last_event_id`` resumes a stream whose position was saved before a restart.
    """

    def __init__(
        self,
        backoff: Backoff,
        *,
        max_failures: int,
        probe_interval: float,
        rng: random.Random | None = None,
        resumable: bool = True,
        last_event_id: str | None = None,
    ) -> None:
        if max_failures < 1:
            raise ValueError(f"max_failures must be >= 1, got {max_failures!r}")
        self.backoff = backoff
        self.max_failures = max_failures
        self.probe_interval = probe_interval
        self._rng = rng if rng is not None else random.Random()
        self.resumable = resumable
        self.last_event_id = ""
        self.resume_from(last_event_id)
        #: The server's reconnection time (``retry:``, clamped), seconds; None until it sends one.
        self.retry: float | None = None
        #: Connection attempts in a row that failed: ended before a byte arrived, or broke a
        #: bound.
        self.failures = 0
        self.in_fallback = False
        self._connections = 0
        self._healthy = False

    def resume_from(self, saved: str | None) -> None:
        """Resume from ``saved``, a position kept before a restart, where it can be sent back
        (a stream that does not resume, and an id no header can carry, ignore it)."""
        if self.resumable and saved and header_id(saved) is None:
            self.last_event_id = saved

    # -- what the shell reports -----------------------------------------------------------

    def request_headers(self) -> dict[str, str]:
        """Headers for the next connection attempt: ``Last-Event-ID`` once there is one."""
        return {"last-event-id": self.last_event_id} if self.last_event_id else {}

    def opened(self) -> Opened:
        """The server answered 200 with ``text/event-stream``."""
        result = Opened(
            reconcile=not self.last_event_id,
            recovered=self.in_fallback,
            reconnected=self._connections > 0,
        )
        self._connections += 1
        self._healthy = False
        self.in_fallback = False
        return result

    def received(self) -> None:
        """Bytes arrived on the open stream (an event, a comment, a blank line)."""
        self._healthy = True

    def event(self, *, event_id: str | None, retry_ms: int | None) -> str | None:
        """A frame was dispatched with these ``id:`` / ``retry:`` values (None: absent).

        Returns why the id was ignored when it cannot be sent back (see :func:`header_id`),
        else None.
        """
        refused = None
        if self.resumable and event_id is not None and "\0" not in event_id:
            refused = header_id(event_id)
            if refused is None:
                self.last_event_id = event_id
        if retry_ms is not None and retry_ms >= 0:
            self.retry = min(max(retry_ms / 1000.0, RETRY_MIN), RETRY_MAX)
        return refused

    def ended(self, now: float, cause: Cause, *, retry_after: float | None = None) -> Plan:
        """The connection (or attempt) ended for ``cause``; plan the next move."""
        healthy, self._healthy = self._healthy, False
        if cause is Cause.UNAUTHORIZED:
            return Plan(action=Action.END, at=now)
        if self.in_fallback or cause is Cause.UNSUPPORTED:
            return self._fall_back(now)
        if healthy and cause is not Cause.VIOLATED:
            self.failures = 0
        else:
            self.failures += 1
            if self.failures >= self.max_failures:
                return self._fall_back(now)
        wait = self.delay()
        if retry_after is not None:
            wait = max(wait, retry_after)
        return Plan(action=Action.RECONNECT, at=now + wait)

    # -- the arithmetic -------------------------------------------------------------------

    def delay(self) -> float:
        """Seconds before the next attempt, after ``failures`` failed attempts in a row."""
        base = self.retry if self.retry is not None else self.backoff.initial
        ceiling = max(self.backoff.maximum, self.retry or 0.0)
        try:
            grown = base * self.backoff.multiplier**self.failures
        except OverflowError:
            grown = math.inf
        bound = min(ceiling, grown)
        jittered = bound * (1.0 - self.backoff.jitter * self._rng.random())
        return max(jittered, self.retry or 0.0)

    def _fall_back(self, now: float) -> Plan:
        began = not self.in_fallback
        self.in_fallback = True
        self.failures = 0
        return Plan(action=Action.FALLBACK, at=now + self.probe_interval, fell_back=began)


class Pacer:
    """At most ``burst`` takes at once, then one every ``interval`` seconds (a token bucket).

    The SSE transport paces its reconcile polls with it, at the request budget's rate, so that
    a stream that reconnects often cannot spend the whole budget in a burst. ``interval`` 0
    paces nothing. Sans-I/O like the rest of this module: ``now`` comes from the caller.
    """

    def __init__(self, interval: float, burst: int = 1) -> None:
        if interval < 0 or burst < 1:
            raise ValueError(f"interval must be >= 0 and burst >= 1, got {interval!r}, {burst!r}")
        self.interval = interval
        self.burst = burst
        self._next = -math.inf  # when the bucket is full again, in the caller's clock

    def delay(self, now: float) -> float:
        """Seconds from ``now`` until one take is allowed; 0.0 when it is allowed now."""
        wait = self._next - now - (self.burst - 1) * self.interval
        return wait if wait > 1e-9 else 0.0

    def take(self, now: float) -> None:
        """Count one take at ``now``; call it only when ``delay(now)`` is 0."""
        self._next = max(self._next, now) + self.interval
