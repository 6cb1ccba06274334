"""The ``reader`` provider: every Reader wire format, decoded into JobEvents.

Keys are semantic so that the same fact from a poll, a stream or a webhook collapses:
``{job}:started``, ``{job}:progress:{completed}``, ``{job}:page:{url}``,
``{job}:page_failed:{url}``, ``{job}:terminal`` and ``workspace:credit_low:{body digest}``.
Webhook events and keys come from the signed body only, never from Reader's unsigned
``X-Reader-Event`` and ``X-Reader-Delivery`` headers. Reader's signature scheme is in
:mod:`._reader_scheme`. Reader facts: ``reference/reader-api.md`` of the jobwatch design.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import msgspec

from .._config import Config
from .._errors import (
    APIError,
    AuthenticationError,
    DecodeError,
    JobNotFound,
    JobwatchError,
    RateLimited,
)
from .._events import EventKind, JobEvent, JobStatus
from .._ratelimit import redirect_note
from .._state import MAX_COUNT, seconds
from ..abc import (
    Capabilities,
    Classification,
    Provider,
    Request,
    Response,
    ResultsPage,
    Snapshot,
    WebhookDelivery,
    classify_http,
    parse_retry_after,
    path_segment,
)

__all__ = ["ReaderProvider"]

log = logging.getLogger("jobwatch.reader")

PAGE_SIZE = 100
_JOB_STREAM_ALIASES = {
    "job:progress": "progress",
    "job:page": "page",
    "job:error": "error",
    "job:completed": "done",
    "job:failed": "done",
    "job:cancelled": "done",
}
# The status a `job:`-named final frame implies when its payload carries none.
_IMPLIED_STATUS = {
    "job:completed": "completed",
    "job:failed": "failed",
    "job:cancelled": "cancelled",
}
# Webhook events about jobs; the final ones with the status they imply when the body has
# none. Reader documents no job.cancelled; should one come, it is the terminal event it names.
_JOB_WEBHOOKS: dict[str, str | None] = {
    "job.started": None,
    "job.page": None,
    "job.completed": "completed",
    "job.failed": "failed",
    "job.cancelled": "cancelled",
}
# The webhook event a body with this status is, whatever header it came with.
_EVENT_BY_STATUS = {
    "processing": "job.started",
    "completed": "job.completed",
    "failed": "job.failed",
    "cancelled": "job.cancelled",
}
_WORKSPACE_EVENTS = ("job:progress", "job:completed", "job:failed")
#: How errors name a frame of each event the workspace stream sends.
_WORKSPACE_WHAT = {name: f"workspace stream {name!r} frame" for name in _WORKSPACE_EVENTS}
_STATUS_BY_VALUE = {status.value: status for status in JobStatus}
# msgspec decodes a frame's JSON several times faster than json.loads; whatever it refuses
# goes to json.loads, which accepts what the standard library accepts and words the errors.
_decode_json = msgspec.json.Decoder().decode


def _json_object(body: bytes | str, what: str) -> dict[str, Any]:
    try:
        obj = _decode_json(body)
    except (msgspec.MsgspecError, RecursionError):
        obj = None
    if type(obj) is dict:
        return obj
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecodeError(f"{what} is not valid JSON: {exc}") from None
    except RecursionError:
        raise DecodeError(f"{what} is nested too deeply to decode") from None
    if not isinstance(obj, dict):
        raise DecodeError(f"{what} must be a JSON object, got {type(obj).__name__}")
    return obj


def _get(
    obj: Mapping[str, Any],
    name: str,
    kind: type | tuple[type, ...],
    what: str,
    *,
    required: bool = True,
) -> Any:
    if name not in obj or obj[name] is None:
        if required:
            raise DecodeError(f"{what} has no {name!r} field")
        return None
    value = obj[name]
    if isinstance(value, bool) and kind is int or not isinstance(value, kind):
        raise DecodeError(f"{what}: {name!r} must be {_kind_name(kind)}, got {value!r}")
    if kind is int and isinstance(value, int) and value < 0:
        raise DecodeError(f"{what}: {name!r} must not be negative, got {value!r}")
    if kind is int and isinstance(value, int) and value > MAX_COUNT:
        # No store could record it: refused here, not failed on every retry of a delivery.
        raise DecodeError(f"{what}: {name!r} must be at most {MAX_COUNT}, got {value!r}")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise DecodeError(f"{what}: {name!r} is not valid Unicode text") from None
    return value


def _about(job_id: str, data: Mapping[str, Any]) -> None:
    """Raise DecodeError when an answer to ``GET /v1/jobs/{job_id}`` is about another job (a
    proxy or cache that mixed answers up): its state or results are not this job's."""
    if "id" in data and data["id"] != job_id:
        raise DecodeError(f"GET /v1/jobs/{job_id} answered about another job: {data['id']!r:.80}")


def _count(obj: Mapping[str, Any], name: str, what: str) -> int | None:
    """An optional count field: ``_get(obj, name, int, what, required=False)``, faster."""
    value = obj.get(name)
    if value is None or type(value) is int and 0 <= value <= MAX_COUNT:
        return value
    return _get(obj, name, int, what, required=False)  # type: ignore[no-any-return]


def _text(obj: Mapping[str, Any], name: str, what: str) -> str:
    """A required text field: ``_get(obj, name, str, what)``, faster for ASCII text."""
    value = obj.get(name)
    if type(value) is str and value.isascii():
        return value
    return _get(obj, name, str, what)  # type: ignore[no-any-return]


def _job_id(obj: Mapping[str, Any], what: str) -> str:
    """The required ``jobId``: text, and not empty (an empty id names no job)."""
    value = _text(obj, "jobId", what)
    if not value:
        raise DecodeError(f"{what}: 'jobId' is empty")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names: dict[Any, str] = {int: "an integer", str: "a string", dict: "an object", list: "a list"}
    return names.get(kind, str(kind))


def _status(
    obj: Mapping[str, Any], what: str, *, required: bool = True
) -> tuple[JobStatus | None, str]:
    raw = obj.get("status")
    if type(raw) is str and raw in _STATUS_BY_VALUE:
        return _STATUS_BY_VALUE[raw], raw
    raw = _get(obj, "status", str, what, required=required)
    if raw is None:
        return None, ""
    try:
        return JobStatus(raw), raw
    except ValueError:
        log.warning("%s: unknown job status %r; the job is not taken as running", what, raw)
        return None, raw


def _error_text(payload: Mapping[str, Any], word: str = "failed") -> str:
    """Why a job or a page failed, in Reader's words: its ``error``, else the status word."""
    error = payload.get("error")
    if error is None or error == "":
        return word
    if isinstance(error, str):
        return error
    return json.dumps(error, separators=(",", ":"))  # not text: its JSON, nothing lost


def _failure(payload: Mapping[str, Any], status: JobStatus) -> str | None:
    """The ``error`` of a terminal event: set on failed jobs only."""
    return _error_text(payload, status.value) if status is JobStatus.FAILED else None


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


class ReaderProvider(Provider):
    """Reader (api.reader.dev): batch and crawl jobs, two SSE streams, signed webhooks."""

    name = "reader"
    capabilities = Capabilities(
        job_stream=True,
        workspace_stream=True,
        stream_event_ids=False,
        webhooks=True,
        webhook_scheme="reader",
        announces_cancellation=False,
    )
    default_base_url: str | None = "https://api.reader.dev"

    def __init__(self, config: Config | None = None) -> None:
        key = None if config is None else config.api_key
        self._headers = {} if key is None else {"x-api-key": key.reveal()}

    @classmethod
    def from_config(cls, config: Config) -> ReaderProvider:
        return cls(config)

    def headers(self) -> Mapping[str, str]:
        return self._headers

    # -- polling -------------------------------------------------------------------------

    def status_request(self, job_id: str) -> Request:
        return Request(path=f"/v1/jobs/{path_segment(job_id)}", params={"limit": "1"})

    def decode_status(
        self, job_id: str, response: Response, previous: Snapshot | None, *, source: str
    ) -> tuple[Snapshot, list[JobEvent]]:
        data = self._data(response, f"GET /v1/jobs/{job_id}")
        what = f"job {job_id} snapshot"
        _about(job_id, data)
        status, raw = _status(data, what)
        snap = Snapshot(
            job_id=job_id,
            status=status,
            raw_status=raw,
            completed=_get(data, "completed", int, what, required=False),
            total=_get(data, "total", int, what, required=False),
            data=data,
            started_at=seconds(_timestamp(data.get("startedAt"))),
        )
        return snap, self._snapshot_events(snap, previous, source)

    def _snapshot_events(
        self, snap: Snapshot, previous: Snapshot | None, source: str
    ) -> list[JobEvent]:
        moved = previous is None or (previous.completed, previous.total, previous.status) != (
            snap.completed,
            snap.total,
            snap.status,
        )
        status = snap.status
        return JobEvent.lifecycle(
            snap.job_id,
            status,
            source=source,
            completed=snap.completed,
            total=snap.total,
            data=MappingProxyType(dict(snap.data)),
            progress=moved,
            error=None if status is None else _failure(snap.data, status),
            started_at=_timestamp(snap.data.get("startedAt")),
            ended_at=_timestamp(snap.data.get("completedAt")),
        )

    def results_request(self, job_id: str) -> Request:
        return Request(
            path=f"/v1/jobs/{path_segment(job_id)}", params={"skip": "0", "limit": str(PAGE_SIZE)}
        )

    def decode_results(self, job_id: str, response: Response) -> ResultsPage:
        where = f"GET /v1/jobs/{job_id}"
        envelope = self._envelope(response, where)
        _about(job_id, envelope["data"])
        results = _get(envelope["data"], "results", list, f"{where} data")
        if not all(isinstance(item, dict) for item in results):
            raise DecodeError(f"{where}: every entry of 'results' must be an object")
        pagination = _get(envelope, "pagination", dict, where, required=False) or {}
        skip = pagination.get("skip", 0)
        if pagination.get("hasMore") is True and results and isinstance(skip, int):
            params = {"skip": str(skip + len(results)), "limit": str(PAGE_SIZE)}
            return ResultsPage(
                items=tuple(results),
                next=Request(path=f"/v1/jobs/{path_segment(job_id)}", params=params),
            )
        return ResultsPage(items=tuple(results))

    # -- streams -------------------------------------------------------------------------

    def job_stream_request(self, job_id: str) -> Request:
        return Request(
            path=f"/v1/jobs/{path_segment(job_id)}/stream", headers={"accept": "text/event-stream"}
        )

    def workspace_stream_request(self) -> Request:
        return Request(path="/v1/events", headers={"accept": "text/event-stream"})

    def decode_stream_event(
        self, job_id: str | None, event: str, data: str, *, source: str
    ) -> list[JobEvent]:
        if job_id is None:
            return self._workspace_frame(event, data, source)
        return self._job_frame(job_id, event, data, source)

    def _job_frame(self, job_id: str, name: str, data: str, source: str) -> list[JobEvent]:
        event = _JOB_STREAM_ALIASES.get(name, name)
        what = f"job {job_id} stream {name!r} frame"
        if event not in ("progress", "page", "error", "done"):
            raise DecodeError(
                f"job {job_id} stream: unknown event {name!r} "
                "(Reader's per-job stream sends progress, page, error and done)"
            )
        payload = _json_object(data, what)
        if name in _IMPLIED_STATUS:
            payload = {"status": _IMPLIED_STATUS[name], **payload}
        if event in ("page", "error"):
            return [self._page(job_id, payload, what, source, failed=event == "error")]
        return self._state_events(job_id, payload, what, source, final=event == "done")

    def _workspace_frame(self, event: str, data: str, source: str) -> list[JobEvent]:
        what = _WORKSPACE_WHAT.get(event)
        if what is None:
            raise DecodeError(
                f"workspace stream: unknown event {event!r} (Reader's /v1/events sends "
                "job:progress, job:completed and job:failed)"
            )
        payload = _json_object(data, what)
        job_id = _job_id(payload, what)
        if event == "job:failed":
            payload = {"status": "failed", **payload}
        return self._state_events(job_id, payload, what, source, final=event != "job:progress")

    def _state_events(
        self,
        job_id: str,
        payload: dict[str, Any],
        what: str,
        source: str,
        *,
        final: bool,
        when: datetime | None = None,
    ) -> list[JobEvent]:
        """The events of one state payload: ``started`` and ``progress``, or the terminal one.

        ``payload`` is a dict of the caller's own (fresh from JSON): it is frozen without a
        copy, and shared by the events.
        """
        status, raw = _status(payload, what)
        completed = _count(payload, "completed", what)
        total = _count(payload, "total", what)
        if final:
            if status is None or not status.terminal:
                raise DecodeError(f"{what}: a final frame needs a terminal status, got {raw!r}")
        elif status is not None and status.terminal:
            raise DecodeError(f"{what}: a progress frame cannot carry the final status {raw!r}")
        return JobEvent.lifecycle(
            job_id,
            status,
            source=source,
            completed=completed,
            total=total,
            data=MappingProxyType(payload),
            error=_failure(payload, status) if final and status is not None else None,
            started_at=when,
            progress_at=when,
            ended_at=when,
        )

    def _page(
        self,
        job_id: str,
        payload: Mapping[str, Any],
        what: str,
        source: str,
        when: datetime | None = None,
        *,
        failed: bool = False,
    ) -> JobEvent:
        url = _get(payload, "url", str, what)
        failed = failed or payload.get("error") is not None
        kind = EventKind.PAGE_FAILED if failed else EventKind.PAGE
        return JobEvent(
            kind=kind,
            job_id=job_id,
            key=f"{job_id}:{kind.value}:{url}",
            source=source,
            data=payload,
            occurred_at=when,
            error=_error_text(payload) if failed else None,
        )

    # -- webhooks ------------------------------------------------------------------------

    def decode_webhook(
        self, headers: Mapping[str, str], body: bytes, *, source: str
    ) -> WebhookDelivery:
        # Only signed content decides what a delivery is and whether it is new: Reader signs
        # the timestamp and the body, never X-Reader-Event nor X-Reader-Delivery (and another
        # scheme signs no Reader header at all). The body's event wins; the header may agree
        # with it, or name what the body leaves open, but never end a job by itself.
        payload = _json_object(body, "webhook body")
        header = headers.get("x-reader-event") or None
        implied = _body_event(payload)
        if implied is not None and header is not None and header != implied:
            raise DecodeError(
                f"the X-Reader-Event header says {header!r} but the signed body is a "
                f"{implied!r} delivery; refused, since the header is not signed"
            )
        name = implied or header
        if name is None:
            raise DecodeError(
                "webhook delivery names no event: no X-Reader-Event header and "
                "no 'event' or 'type' field in the body"
            )
        delivery = headers.get("x-reader-delivery") or None
        when = _unix_time(headers.get("x-reader-timestamp"))
        events = self._webhook_events(name, payload, body, when, source, signed=implied is not None)
        return WebhookDelivery(delivery_id=delivery, event_name=name, events=tuple(events))

    def _webhook_events(
        self,
        name: str,
        payload: dict[str, Any],
        body: bytes,
        when: datetime | None,
        source: str,
        *,
        signed: bool,
    ) -> list[JobEvent]:
        what = f"webhook {name!r} body"
        if name == "credit.low":
            if "jobId" in payload:
                raise DecodeError(f"{what} names a job; a credit.low delivery names none")
            # Keyed by the signed body, the same across Reader's retries of one delivery.
            ident = hashlib.sha256(body).hexdigest()[:32]
            return [
                JobEvent(
                    kind=EventKind.CREDIT_LOW,
                    job_id=None,
                    key=f"workspace:credit_low:{ident}",
                    source=source,
                    data=payload,
                    occurred_at=when,
                )
            ]
        if name not in _JOB_WEBHOOKS:
            # No job event in it (a later revision's session.created, say): nothing to
            # deliver, and nothing wrong with the delivery, which Reader would only retry if
            # refused.
            return []
        job_id = _job_id(payload, what)
        if name == "job.page":
            return [self._page(job_id, payload, what, source, when)]
        if name == "job.started":
            # A started job is processing whatever known status the body says; an unknown one
            # is never taken as running. The raw value stays in data.
            status, raw = _status(payload, what, required=False)
            started = None if raw and status is None else JobStatus.PROCESSING
            return [
                JobEvent(
                    kind=EventKind.STARTED,
                    job_id=job_id,
                    key=f"{job_id}:started",
                    status=started,
                    source=source,
                    data=payload,
                    completed=_get(payload, "completed", int, what, required=False),
                    total=_get(payload, "total", int, what, required=False),
                    occurred_at=when,
                )
            ]
        if not signed and "status" not in payload:
            raise DecodeError(
                f"{what} does not say the job ended (no terminal 'status'); the "
                "X-Reader-Event header alone is not signed, and ends no job"
            )
        if signed:  # the status the signed body implies, where it names none itself
            payload = {"status": _JOB_WEBHOOKS[name], **payload}
        return self._state_events(job_id, payload, what, source, final=True, when=when)

    # -- errors --------------------------------------------------------------------------

    def _envelope(self, response: Response, where: str) -> dict[str, Any]:
        if not 200 <= response.status < 300:
            raise self.error_for(response)
        envelope = _json_object(response.body, f"{where} response")
        if envelope.get("success") is not True or not isinstance(envelope.get("data"), dict):
            raise DecodeError(f"{where} response is not Reader's success envelope")
        return envelope

    def _data(self, response: Response, where: str) -> dict[str, Any]:
        data: dict[str, Any] = self._envelope(response, where)["data"]
        return data

    def error_for(self, response: Response) -> JobwatchError:
        code, message, details = _error_fields(response.body)
        request_id = response.headers.get("x-request-id")
        status = response.status
        text = (
            f"Reader answered HTTP {status}"
            + (f" {code}" if code else "")
            + (f": {message}" if message else "")
        )
        if status == 401:
            return AuthenticationError(
                f"{text}; check api_key in [jobwatch] (Reader keys begin with rdr_)",
                status=status,
                code=code,
                request_id=request_id,
            )
        if status == 404:
            return JobNotFound(
                f"{text}; check the job id", status=status, code=code, request_id=request_id
            )
        if status == 429:
            retry = _retry_after(response, details)
            return RateLimited(
                f"{text}; jobwatch waits and retries",
                status=status,
                code=code,
                retry_after=retry,
                request_id=request_id,
            )
        text += redirect_note(response)
        return APIError(text, status=status, code=code, request_id=request_id)

    def classify(self, response: Response) -> Classification:
        # Reader's two 429s: `rate_limited` names its wait (Retry-After, and the same seconds
        # in details.retryAfterSeconds) and pauses every request; `concurrency_limited` means
        # too many active jobs, which no pause of every request cures: that job backs off.
        if response.status == 429:
            code, _, details = _error_fields(response.body)
            if code == "concurrency_limited":
                return Classification.retry()
            wait = _retry_after(response, details)
            return Classification.rate_limited(wait=wait)
        return classify_http(response, self.error_for)


def _error_fields(body: bytes) -> tuple[str | None, str | None, Mapping[str, Any]]:
    try:
        error = json.loads(body).get("error")
    except (ValueError, UnicodeDecodeError, AttributeError, RecursionError):
        return None, None, {}
    if not isinstance(error, dict):
        return None, None, {}
    code, message, details = error.get("code"), error.get("message"), error.get("details")
    return (
        code if isinstance(code, str) else None,
        message if isinstance(message, str) else None,
        details if isinstance(details, dict) else {},
    )


MAX_RETRY_AFTER = 3600.0


def _retry_after(response: Response, details: Mapping[str, Any]) -> float | None:
    # Retry-After as HTTP reads it (seconds, an HTTP-date, a header sent twice), else the
    # same seconds in the body. One that is not a finite, non-negative number of seconds is
    # ignored; a huge one is capped so that one bad header cannot stop a Watcher for good.
    header = parse_retry_after(response, cap=MAX_RETRY_AFTER)
    if header is not None:
        return header
    for value in (response.headers.get("retry-after"), details.get("retryAfterSeconds")):
        try:
            seconds = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        if math.isfinite(seconds) and seconds >= 0:
            return min(seconds, MAX_RETRY_AFTER)
    return None


def _body_event(payload: Mapping[str, Any]) -> str | None:
    """The webhook event a body names or implies by its shape, or None where it leaves the
    name open (a body that is about no job, or names a job and nothing more)."""
    for field in ("event", "type"):
        value = payload.get(field)
        if isinstance(value, str) and value:
            return value
    if "jobId" not in payload:
        return None
    status = payload.get("status")
    if status is None:
        if "url" in payload:
            return "job.page"  # a results[] entry: pages carry no status
        return "job.failed" if payload.get("error") is not None else None
    return _EVENT_BY_STATUS.get(status) if isinstance(status, str) else None


def _unix_time(value: str | None) -> datetime | None:
    if value is None or not value.isdigit():
        return None
    try:
        return datetime.fromtimestamp(int(value), UTC)
    except (OverflowError, ValueError, OSError):
        return None
