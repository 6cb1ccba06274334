"""The normalized event: one type for every API and every transport."""

from __future__ import annotations

import enum
import json
import types
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs

from ._errors import DecodeError

__all__ = ["EventKind", "JobEvent", "JobStatus"]

# json.dumps with options builds an encoder per call; events are encoded on every record.
_encode = json.JSONEncoder(separators=(",", ":"), default=str).encode


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
        """Whether an event of this kind carries data of its own (a page of results): it is
        delivered even when it arrives late, and only an exact duplicate is dropped."""
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
_RANK = {status: 2 if status in _TERMINAL_STATUSES else int(status is not JobStatus.QUEUED)
         for status in JobStatus}


def _kind(value: EventKind | str) -> EventKind:
    return value if type(value) is EventKind else EventKind(value)


def _freeze(data: Mapping[str, Any]) -> Mapping[str, Any]:
    if type(data) is types.MappingProxyType:
        return data  # already read-only: events of one payload share it
    return types.MappingProxyType(dict(data))


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
    first. ``data`` is the payload as the API sent it, read-only.
    """

    kind: EventKind = attrs.field(converter=_kind)
    job_id: str | None
    status: JobStatus | None = None
    completed: int | None = None
    total: int | None = None
    key: str
    source: str
    occurred_at: datetime | None = None
    data: Mapping[str, Any] = attrs.field(factory=dict, converter=_freeze, eq=False)

    @property
    def terminal(self) -> bool:
        """Whether this event ends a run of its job (completed, failed or cancelled)."""
        return self.kind in _TERMINAL_KINDS

    def with_key(self, key: str) -> JobEvent:
        """The same event under another key (cheaper than ``attrs.evolve``)."""
        return _make_event(self.kind, self.job_id, self.status, self.completed, self.total, key,
                           self.source, self.occurred_at, self.data)

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
            "data": dict(self.data),
        }

    def to_json(self) -> str:
        """One line of JSON (the NDJSON form used by the CLI, the relay and the logs)."""
        return _encode(self.to_dict())

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> JobEvent:
        """Rebuild an event from :meth:`to_dict` output; raises DecodeError when malformed."""
        try:
            status = obj.get("status")
            when = obj.get("occurred_at")
            data = obj.get("data") or {}
            if not isinstance(data, Mapping):
                raise DecodeError(f"'data' must be an object, got {type(data).__name__}")
            for name in ("key", "source"):
                if not isinstance(obj[name], str):
                    raise DecodeError(f"{name!r} must be a string, got {obj[name]!r}")
            job_id = obj.get("job_id")
            if job_id is not None and not isinstance(job_id, str):
                raise DecodeError(f"'job_id' must be a string or null, got {job_id!r}")
            return cls(
                kind=EventKind(obj["kind"]),
                job_id=job_id,
                status=None if status is None else JobStatus(status),
                completed=_optional_int(obj.get("completed")),
                total=_optional_int(obj.get("total")),
                key=obj["key"],
                source=obj["source"],
                occurred_at=None if when is None else datetime.fromisoformat(when),
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
        raise AssertionError(f"the fast constructor of {cls.__name__} must set every field, "
                             "in order")
    return tuple(getattr(cls, name).__set__ for name in names)


_SETTERS = _slot_setters(JobEvent, ("kind", "job_id", "status", "completed", "total", "key",
                                    "source", "occurred_at", "data"))
_new = object.__new__


def _make_event(kind: EventKind, job_id: str | None, status: JobStatus | None,
                completed: int | None, total: int | None, key: str, source: str,
                occurred_at: datetime | None, data: Mapping[str, Any]) -> JobEvent:
    """A JobEvent from values that are already what the converters would make of them.

    Nothing is checked: a wrong value makes a wrong event. Callers outside jobwatch use the
    public constructor.

    For jobwatch's own decoders and pipeline, on the path of every event: ``kind`` is an
    :class:`EventKind`, ``data`` a :class:`types.MappingProxyType` nobody else can change.
    The result is equal to ``JobEvent(kind=kind, ...)`` with the same values.
    """
    event = _new(JobEvent)
    set_kind, set_job, set_status, set_completed, set_total, set_key, set_source, set_when, \
        set_data = _SETTERS
    set_kind(event, kind)
    set_job(event, job_id)
    set_status(event, status)
    set_completed(event, completed)
    set_total(event, total)
    set_key(event, key)
    set_source(event, source)
    set_when(event, occurred_at)
    set_data(event, data)
    return event
