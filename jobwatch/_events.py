"""The normalized event: one type for every API and every transport."""

from __future__ import annotations

import enum
import json
import types
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs
import msgspec

from ._errors import DecodeError

__all__ = ["EventKind", "JobEvent", "JobStatus"]

#: Compact JSON as UTF-8 bytes, for what jobwatch writes on the path of every event (a durable
#: store's inbox, the relay): one encoder, built once, three times as fast as the standard
#: library's; what JSON has no form for is written as its ``str()``, and a float that is not
#: a number or infinite as ``null``. Text with a lone surrogate (which JSON's ``\ud83d``
#: escapes can carry and UTF-8 cannot) raises UnicodeEncodeError.
encode_json = msgspec.json.Encoder(enc_hook=str).encode
# The standard library's writes those floats as NaN and Infinity and those surrogates as
# escapes, all of which json.loads reads back.
_encode_exact = json.JSONEncoder(separators=(",", ":"), default=str).encode


class EventKind(enum.StrEnum):
    """What happened to a job."""

    STARTED = "started"
    PROGRESS = "progress"
    PAGE = "page"
    PAGE_FAILED = "page_failed"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    CREDIT_LOW = "credit_low"

    @property
    def terminal(self) -> bool:
        """Whether an event of this kind ends a run of the job."""
        return self in _TERMINAL_KINDS

    @property
    def carries_data(self) -> bool:
        """Whether an event of this kind carries data of its own (a page and its result).

        The ordering guard delivers such events even when they arrive late — after a higher
        count or after the run's terminal event — since nothing else brings their data; only
        exact duplicates, and events of an older attempt, are dropped. Their kinds' events do
        not move the job's status or count.
        """
        return self in _DATA_KINDS


class JobStatus(enum.StrEnum):
    """A job's lifecycle state."""

    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """Whether the job has stopped (completed, failed or cancelled)."""
        return self in _TERMINAL_STATUSES

    @property
    def rank(self) -> int:
        """Position in the lifecycle: 0 queued, 1 processing, 2 terminal."""
        return _RANK[self]


_TERMINAL_KINDS = frozenset({EventKind.COMPLETED, EventKind.FAILED, EventKind.CANCELLED})
_DATA_KINDS = frozenset({EventKind.PAGE, EventKind.PAGE_FAILED})
_TERMINAL_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})
_TERMINAL_KIND = {
    JobStatus.COMPLETED: EventKind.COMPLETED,
    JobStatus.FAILED: EventKind.FAILED,
    JobStatus.CANCELLED: EventKind.CANCELLED,
}
_RANK = {
    status: 2 if status in _TERMINAL_STATUSES else int(status is not JobStatus.QUEUED)
    for status in JobStatus
}


def _kind(value: EventKind | str) -> EventKind:
    return value if type(value) is EventKind else EventKind(value)


_new = object.__new__
_Proxy = types.MappingProxyType
#: The payload of an event built without one (read-only, so it can be shared).
_NO_DATA: Mapping[str, Any] = _Proxy({})


def _freeze(data: Mapping[str, Any]) -> Mapping[str, Any]:
    if type(data) is _Proxy:
        return data  # already read-only: events of one payload share it
    return _Proxy(dict(data))


def _optional_int(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise DecodeError(f"expected an integer or null, got {value!r}")
    return value


@attrs.frozen(kw_only=True)
class JobEvent:
    """One logical event of a job, delivered to the application exactly once.

    ``key`` is the identity of the logical event: the same fact reported by two transports has
    the same key (``started`` once per run, ``progress`` once per completed count, ``page`` once
    per URL, one terminal event per run). ``source`` names the transport that delivered it
    first. ``error`` says why a job or an item failed, in the API's words (``failed`` and
    ``page_failed`` events). ``attempt`` is the API's own attempt number, where it numbers them
    (a re-run of a GitHub workflow is attempt 2). ``data`` is the payload as the API sent it,
    read-only.

    Providers on the path of every event build events with :meth:`build`, which takes the same
    arguments and makes the same event at less cost.
    """

    kind: EventKind = attrs.field(converter=_kind)
    job_id: str | None
    status: JobStatus | None = None
    completed: int | None = None
    total: int | None = None
    key: str
    source: str
    occurred_at: datetime | None = None
    error: str | None = None
    attempt: int | None = None
    data: Mapping[str, Any] = attrs.field(factory=dict, converter=_freeze, eq=False)

    @staticmethod
    def build(
        *,
        kind: EventKind | str,
        job_id: str | None,
        status: JobStatus | None = None,
        completed: int | None = None,
        total: int | None = None,
        key: str,
        source: str,
        occurred_at: datetime | None = None,
        error: str | None = None,
        attempt: int | None = None,
        data: Mapping[str, Any] = _NO_DATA,
    ) -> JobEvent:
        """``JobEvent(...)`` with the same arguments, for decoders on the path of every event.

        The event is equal to the one the constructor makes, and converted the same way
        (``kind`` from its value, ``data`` frozen into a read-only copy unless it already is a
        :class:`types.MappingProxyType`, which events of one payload may then share). It costs
        about two thirds as much: the fields are written through their slots rather than
        through attrs' frozen ``__setattr__``.
        """
        return _build(
            kind, job_id, status, completed, total, key, source, occurred_at, error, attempt, data
        )

    @staticmethod
    def lifecycle(
        job_id: str,
        status: JobStatus | None,
        *,
        source: str,
        completed: int | None = None,
        total: int | None = None,
        data: Mapping[str, Any] = _NO_DATA,
        progress: bool | str = True,
        error: str | None = None,
        attempt: int | None = None,
        started_at: datetime | None = None,
        progress_at: datetime | None = None,
        ended_at: datetime | None = None,
    ) -> list[JobEvent]:
        """The events a job's reported state implies, keyed as the built-in providers key
        them — what a provider's ``decode_status`` or a stream frame of the job's state
        returns.

        A terminal ``status`` is the run's one terminal event (``{job}:terminal``, with
        ``error`` and ``ended_at``). Otherwise: ``started`` (``{job}:started``, at
        ``started_at``) while the job is processing, then ``progress``
        (``{job}:progress:{completed}``, at ``progress_at``) when a count is known.
        ``progress=False`` leaves the progress event out (the count did not move since the
        last snapshot); a string is its key instead (a status change without a count, say).
        Every event carries ``completed``, ``total``, ``attempt`` and ``data``.
        """
        kind = _TERMINAL_KIND.get(status)  # type: ignore[arg-type]
        if kind is not None:
            return [
                _build(
                    kind,
                    job_id,
                    status,
                    completed,
                    total,
                    f"{job_id}:terminal",
                    source,
                    ended_at,
                    error,
                    attempt,
                    data,
                )
            ]
        if progress is True:
            key = None if completed is None else f"{job_id}:progress:{completed}"
        else:
            key = progress or None
        events = []
        if status is _PROCESSING:
            started = f"{job_id}:started"
            events.append(
                _build(
                    _STARTED,
                    job_id,
                    status,
                    completed,
                    total,
                    started,
                    source,
                    started_at,
                    None,
                    attempt,
                    data,
                )
            )
        if key is not None:
            events.append(
                _build(
                    _PROGRESS,
                    job_id,
                    status,
                    completed,
                    total,
                    key,
                    source,
                    progress_at,
                    None,
                    attempt,
                    data,
                )
            )
        return events

    @property
    def terminal(self) -> bool:
        """Whether this event ends a run of its job (completed, failed or cancelled)."""
        return self.kind in _TERMINAL_KINDS

    def with_key(self, key: str) -> JobEvent:
        """The same event under another key (cheaper than ``attrs.evolve``)."""
        return _build(
            self.kind,
            self.job_id,
            self.status,
            self.completed,
            self.total,
            key,
            self.source,
            self.occurred_at,
            self.error,
            self.attempt,
            self.data,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form: field names of JobEvent, ``occurred_at`` in ISO 8601."""
        return {
            "kind": self.kind.value,
            "job_id": self.job_id,
            "status": None if self.status is None else self.status.value,
            "completed": self.completed,
            "total": self.total,
            "key": self.key,
            "source": self.source,
            "occurred_at": None if self.occurred_at is None else self.occurred_at.isoformat(),
            "error": self.error,
            "attempt": self.attempt,
            "data": dict(self.data),
        }

    def to_json(self) -> str:
        """:meth:`to_dict` as one line of JSON (the form the CLI's ``--json`` prints and the
        durable stores keep), which :meth:`from_json` reads back as the same event."""
        body = self.to_dict()
        try:
            data = encode_json(body["data"])
            # A null may be a float JSON has no form for (an API's NaN, read by json.loads):
            # then, as for a lone surrogate, only the standard library's encoder writes what
            # reads back the same.
            if b"null" not in data:
                return encode_json({**body, "data": msgspec.Raw(data)}).decode()
        except UnicodeEncodeError:
            pass
        return _encode_exact(body)

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> JobEvent:
        """Rebuild an event from :meth:`to_dict` output; raises DecodeError when malformed.

        ``error`` and ``attempt`` may be missing (events written before they existed): they
        are then None.
        """
        try:
            status = obj.get("status")
            when = obj.get("occurred_at")
            data = obj.get("data") or {}
            if not isinstance(data, Mapping):
                raise DecodeError(f"'data' must be an object, got {type(data).__name__}")
            for name in ("key", "source"):
                if not isinstance(obj[name], str):
                    raise DecodeError(f"{name!r} must be a string, got {obj[name]!r}")
            for name in ("job_id", "error"):
                value = obj.get(name)
                if value is not None and not isinstance(value, str):
                    raise DecodeError(f"{name!r} must be a string or null, got {value!r}")
            return cls(
                kind=EventKind(obj["kind"]),
                job_id=obj.get("job_id"),
                status=None if status is None else JobStatus(status),
                completed=_optional_int(obj.get("completed")),
                total=_optional_int(obj.get("total")),
                key=obj["key"],
                source=obj["source"],
                occurred_at=None if when is None else datetime.fromisoformat(when),
                error=obj.get("error"),
                attempt=_optional_int(obj.get("attempt")),
                data=data,
            )
        except KeyError as exc:
            raise DecodeError(f"event is missing the field {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise DecodeError(f"malformed event: {exc}") from None

    @classmethod
    def from_json(cls, text: str | bytes) -> JobEvent:
        """Parse the form written by :meth:`to_json`; raises DecodeError when malformed."""
        try:
            obj = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise DecodeError(f"event is not valid JSON: {exc}") from None
        except RecursionError:
            raise DecodeError("event JSON is nested too deeply") from None
        if not isinstance(obj, dict):
            raise DecodeError("event JSON must be an object")
        return cls.from_dict(obj)


def _slot_setters(cls: type, names: tuple[str, ...]) -> tuple[Any, ...]:
    """The setters of a frozen, slotted attrs class's fields ``names`` (all of them, in order).

    Writing through a slot's own setter skips the frozen ``__setattr__`` and the converters:
    for values that are already what the converters would make of them, on hot paths.
    """
    if names != tuple(field.name for field in attrs.fields(cls)):
        raise AssertionError(
            f"the fast constructor of {cls.__name__} must set every field, in order"
        )
    return tuple(getattr(cls, name).__set__ for name in names)


_FIELDS = (
    "kind",
    "job_id",
    "status",
    "completed",
    "total",
    "key",
    "source",
    "occurred_at",
    "error",
    "attempt",
    "data",
)
_SETTERS = _slot_setters(JobEvent, _FIELDS)
_STARTED, _PROGRESS, _PROCESSING = EventKind.STARTED, EventKind.PROGRESS, JobStatus.PROCESSING


def _build(
    kind: EventKind | str,
    job_id: str | None,
    status: JobStatus | None,
    completed: int | None,
    total: int | None,
    key: str,
    source: str,
    occurred_at: datetime | None,
    error: str | None,
    attempt: int | None,
    data: Mapping[str, Any],
) -> JobEvent:
    """:meth:`JobEvent.build`, its arguments by position (the hot paths inside jobwatch)."""
    event = _new(JobEvent)
    (
        set_kind,
        set_job,
        set_status,
        set_completed,
        set_total,
        set_key,
        set_source,
        set_when,
        set_error,
        set_attempt,
        set_data,
    ) = _SETTERS
    set_kind(event, kind if type(kind) is EventKind else EventKind(kind))
    set_job(event, job_id)
    set_status(event, status)
    set_completed(event, completed)
    set_total(event, total)
    set_key(event, key)
    set_source(event, source)
    set_when(event, occurred_at)
    set_error(event, error)
    set_attempt(event, attempt)
    set_data(event, data if type(data) is _Proxy else _Proxy(dict(data)))
    return event
