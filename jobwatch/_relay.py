"""The relay's sans-I/O core: the Watcher's events numbered and encoded once, the table of
jobs, and what each ``/events`` client is due next.

:class:`Relay` keeps the events, encoded once as SSE frames, in a bounded ring for
``Last-Event-ID`` resume; it keeps the table of jobs and each job's timeline (its events, and
what the pipeline dropped); and :meth:`Relay.take` says what a client is due next: the frames
after its position, or a ``snapshot`` of the table when it is new, resumes from too far back,
or could not keep up. Clients share the ring: a slow client holds a position, not a queue, so
it costs no memory and never slows the Watcher or the other clients. :class:`Scrubber` removes
secrets from everything the relay shows. No I/O here, and no clock but the one given.
"""

from __future__ import annotations

import functools
import math
import secrets
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import anyio
import attrs

from ._config import Config, Secret
from ._events import JobEvent, encode_json

__all__ = ["MAX_WRITE", "Client", "Relay", "Scrubber", "encode", "secret_name"]

#: The most bytes sent to one client in one write; a longer backlog goes in several.
MAX_WRITE = 256 * 1024

_TERMINAL = frozenset({"completed", "failed", "cancelled"})


def encode(value: Any) -> bytes:
    """Compact JSON as UTF-8 bytes, for the page and ``/events``: text with a lone surrogate
    (an API's string cut inside a character) is shown with U+FFFD in its place."""
    try:
        return encode_json(value)
    except UnicodeEncodeError:
        return encode_json(_without_surrogates(value))


def _without_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, Mapping):
        return {_without_surrogates(k): _without_surrogates(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_without_surrogates(item) for item in value]
    return value


# -- secrets -------------------------------------------------------------------------------

_SECRET_NAMES = (
    "secret",
    "secrets",
    "token",
    "password",
    "passwd",
    "apikey",
    "authorization",
    "signature",
    "credential",
    "credentials",
    "cookie",
    "privatekey",
)
#: Secrets shorter than this are removed where a whole value equals them, not inside text.
_MIN_SCRUB = 4
REDACTED = "***"
_SCALARS = frozenset({int, float, bool, type(None)})


@functools.lru_cache(maxsize=4096)  # on the path of every event; payloads repeat their keys
def secret_name(name: str) -> bool:
    """Whether a key named ``name`` holds a secret (``api_key``, ``webhookSecret``, ...)."""
    flat = name.lower().replace("_", "").replace("-", "")
    return flat.endswith(_SECRET_NAMES)


class Scrubber:
    """Removes secrets from what the dashboard shows: every occurrence of a known secret's
    value in any text, and the value of any payload key named like a secret."""

    def __init__(self, values: Iterable[str]) -> None:
        known = {v for v in values if v}
        self._long = sorted((v for v in known if len(v) >= _MIN_SCRUB), key=len, reverse=True)
        self._short = frozenset(v for v in known if len(v) < _MIN_SCRUB)

    @classmethod
    def for_config(cls, config: Config) -> Scrubber:
        """A scrubber of every secret in ``config``: the API key, webhook secrets, the
        dashboard's token, and any value under a key named like a secret."""
        found: list[str] = []
        if config.api_key is not None:
            found.append(config.api_key.reveal())

        def walk(value: Any, name: str) -> None:
            if isinstance(value, Secret):
                found.append(value.reveal())
            elif isinstance(value, str):
                if secret_name(name):
                    found.append(value)
            elif isinstance(value, Mapping):
                for key, item in value.items():
                    walk(item, str(key))
            elif isinstance(value, list | tuple):
                for item in value:
                    walk(item, name)

        walk(config.tables, "")
        return cls(found)

    def text(self, value: str) -> str:
        if value in self._short:
            return REDACTED
        for secret in self._long:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value

    def payload(self, value: Any) -> Any:
        """A JSON-ready copy of ``value`` without secrets."""
        if type(value) in _SCALARS:  # most of a payload: no ABC checks for them
            return value
        if isinstance(value, str):
            return self.text(value) if self._long or self._short else value
        if type(value) is dict or isinstance(value, Mapping):
            return {
                str(k): REDACTED if secret_name(str(k)) else self.payload(v)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.payload(item) for item in value]
        return value

    def event(self, event: JobEvent) -> dict[str, Any]:
        """The event's JSON form (DESIGN §7) without secrets."""
        body = event.to_dict()
        for name in ("job_id", "key", "error"):
            if body[name] is not None:
                body[name] = self.payload(body[name])
        body["data"] = self.payload(event.data)
        return body


# -- the relay (sans-I/O) -------------------------------------------------------------------


@attrs.define(eq=False)
class Client:
    """One ``/events`` connection: the id of the last event it was sent (None: it is due a
    snapshot), the last event when it resumed, and since when a write to it is pending."""

    position: int | None
    resumed_at: int = 0
    writing_since: float | None = None


@attrs.define(eq=False)
class _Row:
    job_id: str
    first_seen: float
    source: str
    timeline: deque[dict[str, Any]]
    status: str | None = None
    kind: str | None = None
    completed: int | None = None
    total: int | None = None
    error: str | None = None
    attempt: int | None = None
    updated: float = 0.0
    events: int = 0
    dropped: int = 0
    page_errors: int = 0
    follow: Any = None  # what keeps the job watched (cancel() ends it)
    drops: dict[tuple[str, str, str], dict[str, Any]] = attrs.Factory(dict)

    def apply(self, body: Mapping[str, Any], now: float) -> None:
        kind = body["kind"]
        if body["status"] is not None:
            self.status = body["status"]
        elif kind in _TERMINAL:
            self.status = kind
        if self.status not in _TERMINAL:
            self.error = None  # running again: a new run
        if body["completed"] is not None:
            self.completed = body["completed"]
        if body["total"] is not None:
            self.total = body["total"]
        if body["attempt"] is not None:
            self.attempt = body["attempt"]
        if kind == "failed":
            self.error = body["error"] or "failed"
        elif kind == "page_failed":
            self.page_errors += 1
        self.kind = kind
        self.updated = now

    def to_dict(self, now: float) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "status": self.status,
            "kind": self.kind,
            "completed": self.completed,
            "total": self.total,
            "source": self.source,
            "error": self.error,
            "attempt": self.attempt,
            "events": self.events,
            "dropped": self.dropped,
            "page_errors": self.page_errors,
            "age": round(now - self.first_seen, 3),
            "idle": round(now - self.updated, 3),
        }


class Relay:
    """The table of jobs and the numbered frames of the Watcher's events, for many clients.

    ``observe(event, dropped)`` takes each event the Watcher dispatches (``dropped`` None)
    or drops (``dropped`` the reason), and returns at once. Event ids are ``EPOCH-N``: a
    client that resumes with an id of another epoch (the process restarted) or older than
    the ring gets a snapshot. ``follow(job_id)``, when given, is called for each new job that
    has not ended and returns a handle whose ``cancel()`` is called when it ends or leaves
    the table.
    """

    def __init__(
        self,
        *,
        scrubber: Scrubber | None = None,
        buffer: int = 10_000,
        client_queue: int = 1_000,
        jobs: int = 10_000,
        timeline: int = 200,
        epoch: str | None = None,
        clock: Callable[[], float] = anyio.current_time,
        follow: Callable[[str], Any] | None = None,
    ) -> None:
        self.epoch = epoch or secrets.token_hex(4)
        self.scrubber = scrubber or Scrubber(())
        self.seq = 0
        self.client_queue = client_queue
        self.clients: set[Client] = set()
        self.counts = {"snapshots": 0, "resumed": 0, "resyncs": 0, "stuck": 0}
        self.notice: dict[str, Any] | None = None
        self.closed = False
        self._ring: list[bytes] = [b""] * buffer
        # Bytes published up to each event (one slot more than the ring: the position just
        # before the oldest frame needs its count too), so that a write is cut in O(log n).
        self._sizes: list[int] = [0] * (buffer + 1)
        self._bytes = 0
        # The last write made: clients at the same position share it rather than join again.
        self._write: tuple[int, int, bytes] = (0, 0, b"")
        self._jobs: OrderedDict[str, _Row] = OrderedDict()
        self._max_jobs = jobs
        self._timeline = timeline
        self._clock = clock
        self._follow = follow
        self._changed: anyio.Event | None = None
        self._version = 0
        self._snapshot: tuple[tuple[int, int], float, bytes] | None = None

    # -- what comes in ---------------------------------------------------------------------

    def observe(self, event: JobEvent, dropped: str | None) -> None:
        """Take an event the Watcher dispatched (``dropped`` None) or dropped."""
        if dropped is None:
            self.publish(event)
        else:
            self.dropped(event, dropped)

    def publish(self, event: JobEvent) -> None:
        """Number, encode and keep a dispatched event, and wake the clients."""
        body = self.scrubber.event(event)
        self.seq += 1
        ident = f"{self.epoch}-{self.seq}"
        frame = b"id: %s\ndata: %s\n\n" % (ident.encode(), encode(body))
        self._ring[(self.seq - 1) % len(self._ring)] = frame
        self._bytes += len(frame)
        self._sizes[self.seq % len(self._sizes)] = self._bytes
        if body["job_id"] is None:
            self.notice = body
        else:
            self._note(body, ident)
        self._version += 1
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def _note(self, body: dict[str, Any], ident: str) -> None:
        now = self._clock()
        row = self._jobs.get(body["job_id"])
        if row is None:
            row = self._add(body, now)
        row.apply(body, now)
        row.events += 1
        row.timeline.append(_entry(body, now - row.first_seen, ident=ident))
        if row.status in _TERMINAL and row.follow is not None:
            _cancel(row)

    def _add(self, body: Mapping[str, Any], now: float) -> _Row:
        job_id = body["job_id"]
        row = _Row(job_id, now, body["source"], deque(maxlen=self._timeline))
        self._jobs[job_id] = row
        if self._follow is not None and body["kind"] not in _TERMINAL:
            row.follow = self._follow(job_id)
        if len(self._jobs) > self._max_jobs:
            self._evict()
        return row

    def _evict(self) -> None:
        # The oldest finished job leaves; among the first hundred none has finished: the
        # oldest one does.
        victim = next(iter(self._jobs))
        for _, (job_id, row) in zip(range(100), self._jobs.items(), strict=False):
            if row.status in _TERMINAL:
                victim = job_id
                break
        _cancel(self._jobs.pop(victim))

    def dropped(self, event: JobEvent, reason: str) -> None:
        """Note an event the pipeline dropped in its job's timeline."""
        if event.job_id is None:
            return
        row = self._jobs.get(self.scrubber.text(event.job_id))
        if row is None:
            if reason != "duplicate":
                return  # a stale event says nothing of where the job is now
            # A duplicate states what was true of the job: enough to show a job this process
            # has not seen delivered (it restarted, and reconciliation polled it).
            body = self.scrubber.event(event)
            row = self._add(body, self._clock())
            row.apply(body, row.first_seen)
        row.dropped += 1
        self._version += 1
        at = round(self._clock() - row.first_seen, 3)
        # A stream repeats some facts with every frame: each is said once, with a count.
        same = (event.key, reason, event.source)
        entry = row.drops.get(same)
        if entry is not None:
            entry["count"] += 1
            entry["last"] = at
            return
        if len(row.drops) >= self._timeline:
            row.drops.clear()
        entry = row.drops[same] = _entry(self.scrubber.event(event), at, dropped=reason)
        row.timeline.append(entry)

    # -- what goes out -----------------------------------------------------------------------

    def connect(self, last_event_id: str | None) -> Client:
        """A new client, resuming after ``last_event_id`` when the ring still holds what
        followed it (else it is due a snapshot)."""
        position = self._position(last_event_id) if last_event_id else None
        if position is not None:
            self.counts["resumed"] += 1
        client = Client(position, resumed_at=self.seq)
        self.clients.add(client)
        return client

    def disconnect(self, client: Client) -> None:
        self.clients.discard(client)

    def _position(self, last_event_id: str) -> int | None:
        epoch, _, number = last_event_id.strip().rpartition("-")
        # ASCII digits, few enough for a count of events: str.isdigit() takes '²', which
        # int() refuses, and int() refuses more than 4,300 digits.
        if epoch != self.epoch or not (number.isascii() and number.isdigit()) or len(number) > 20:
            return None
        position = int(number)
        return position if self.seq - len(self._ring) <= position <= self.seq else None

    def take(self, client: Client, *, max_bytes: int = MAX_WRITE, upto: int | None = None) -> bytes:
        """The next write for ``client`` (b"" when it is up to date), moving its position:
        the events after its position up to event ``upto`` (default: the last), as many as
        ``max_bytes`` allow and at least one; or a snapshot.

        Clients at the same position given the same ``upto`` share one write: the bytes are
        joined for the first of them only.
        """
        if client.position is not None and client.position < self.seq - len(self._ring):
            self.counts["resyncs"] += 1  # what it missed has left the ring
            client.position = None
        if client.position is None:
            client.position = self.seq
            self.counts["snapshots"] += 1
            return self.snapshot_frame()
        after, last = client.position, self.seq if upto is None else min(upto, self.seq)
        if last <= after:
            return b""
        end = self._cut(after, last, max_bytes)
        if self._write[:2] != (after, end):
            self._write = (after, end, b"".join(self._slice(after, end)))
        client.position = end
        return self._write[2]

    def _cut(self, after: int, last: int, max_bytes: int) -> int:
        """The last event of a write that begins after ``after`` and ends at ``last`` at the
        latest: as many as ``max_bytes`` allow, and at least one."""
        sizes, slots = self._sizes, len(self._sizes)
        base = sizes[after % slots]
        if sizes[last % slots] - base <= max_bytes:
            return last
        low, high = after + 1, last  # sizes[low] - base may exceed max_bytes: one frame
        while low < high:
            middle = (low + high + 1) // 2
            if sizes[middle % slots] - base <= max_bytes:
                low = middle
            else:
                high = middle - 1
        return low

    def sent(self, client: Client) -> None:
        """A write to ``client`` finished. A client more than ``client_queue`` events behind
        (not counting the backlog it resumed with) cannot keep up: it is resynced with a
        snapshot rather than sent the backlog."""
        if client.position is None:
            return
        if self.seq - max(client.position, client.resumed_at) > self.client_queue:
            self.counts["resyncs"] += 1
            client.position = None

    def _slice(self, after: int, upto: int) -> list[bytes]:
        ring, size = self._ring, len(self._ring)
        if upto <= after:
            return []
        start, end = after % size, upto % size
        if upto - after == size or start >= end:
            return ring[start:] + ring[:end]
        return ring[start:end]

    def changed(self) -> anyio.Event:
        """An event set at the next publish."""
        if self._changed is None:
            self._changed = anyio.Event()
        return self._changed

    def close(self) -> None:
        """Ask every client's stream to end (the server is stopping)."""
        self.closed = True
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    # -- the table -------------------------------------------------------------------------

    def last_event_id(self) -> str:
        return f"{self.epoch}-{self.seq}"

    def table(self) -> dict[str, Any]:
        """The current table (what ``GET /jobs`` answers and a snapshot carries)."""
        now = self._clock()
        return {
            "last_event_id": self.last_event_id(),
            "notice": self.notice,
            "max_jobs": self._max_jobs,
            "jobs": [row.to_dict(now) for row in self._jobs.values()],
        }

    def snapshot_frame(self) -> bytes:
        """The ``snapshot`` event: the table as of the last event, with that event's id."""
        now = self._clock()
        key = (self.seq, self._version)
        if (
            self._snapshot is not None
            and self._snapshot[0] == key
            and now - self._snapshot[1] < 1.0
        ):
            return self._snapshot[2]
        frame = b"event: snapshot\nid: %s\ndata: %s\n\n" % (
            self.last_event_id().encode(),
            encode(self.table()),
        )
        self._snapshot = (key, now, frame)
        return frame

    def job(self, job_id: str) -> dict[str, Any] | None:
        """One job's row and timeline, or None."""
        row = self._jobs.get(job_id)
        if row is None:
            return None
        return {"job": row.to_dict(self._clock()), "timeline": list(row.timeline)}

    def relay_stats(self, stalled_after: float = math.inf) -> dict[str, int]:
        """The relay's counters; ``stalled``: clients with a write pending for longer than
        ``stalled_after`` seconds."""
        since = self._clock() - stalled_after
        stalled = sum(
            1 for c in self.clients if c.writing_since is not None and c.writing_since < since
        )
        return {
            "clients": len(self.clients),
            "stalled": stalled,
            "events": self.seq,
            "jobs": len(self._jobs),
            **self.counts,
        }


def _entry(
    body: Mapping[str, Any], at: float, *, ident: str | None = None, dropped: str | None = None
) -> dict[str, Any]:
    url = body["data"].get("url")  # a page's, in the API's words
    return {
        "t": round(at, 3),
        "id": ident,
        "kind": body["kind"],
        "key": body["key"],
        "source": body["source"],
        "status": body["status"],
        "completed": body["completed"],
        "total": body["total"],
        "error": body["error"],
        "dropped": dropped,
        "count": 1,
        "last": None,
        "url": url if isinstance(url, str) else None,
    }


def _cancel(row: _Row) -> None:
    follow, row.follow = row.follow, None
    if follow is not None:
        follow.cancel()
