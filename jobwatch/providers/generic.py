"""The ``generic`` provider: any HTTP job API described in ``[jobwatch.generic]``, no Python.

The description (vocabulary in ``docs/providers.md``, reading in :mod:`._describe`) says where
a job's status, counts, error and attempt live, what each status value means, how results,
streams and webhooks look; this module decodes every answer with it. Keys are those of every
provider: ``{job}:started``, ``{job}:progress:{completed}`` (a status change without a count:
``{job}:progress:{status}``), ``{job}:page:{id}``, ``{job}:terminal``.

Credentials go only to the API's own origin: they ride on each request the provider makes
(never in :meth:`GenericProvider.headers`), and a URL taken from an answer (a stream URL, a
next page) on another origin is requested without them.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, ClassVar
from urllib.parse import urlsplit

import msgspec

from .._config import UNSENDABLE, Config, unsendable
from .._errors import (
    APIError,
    AuthenticationError,
    ConfigError,
    DecodeError,
    JobNotFound,
    JobwatchError,
    RateLimited,
    StreamError,
)
from .._events import _TERMINAL_KIND, JobEvent, JobStatus
from .._ratelimit import redirect_note
from .._state import MAX_COUNT, seconds
from ..abc import (
    Capabilities,
    Classification,
    Outcome,
    Provider,
    Request,
    Response,
    ResultsPage,
    Snapshot,
    WebhookDelivery,
    parse_rate_limit,
    parse_retry_after,
)
from ._describe import Description, Entry, read_description
from ._paths import JOB_ID, Path, truthy

__all__ = ["GenericProvider", "capabilities_of"]

log = logging.getLogger("jobwatch.generic")

_KIND_STATUS = {
    "completed": JobStatus.COMPLETED,
    "failed": JobStatus.FAILED,
    "cancelled": JobStatus.CANCELLED,
    "started": JobStatus.PROCESSING,
    "progress": JobStatus.PROCESSING,
}
_PROCESSING, _QUEUED, _FAILED = JobStatus.PROCESSING, JobStatus.QUEUED, JobStatus.FAILED
#: Every delivery of a webhook whose body is the job and that names no events.
_STATUS_ENTRY = Entry(kind="status")
#: Jobs whose stream URL (read from their status) is remembered.
_REMEMBERED = 10_000
#: Distinct unknown status values warned about, per provider.
_WARNED = 1_000
_MESSAGE_CHARS = 300
_LINK = re.compile(r"<([^>]*)>((?:\s*;\s*[^;,]*)*)")
# msgspec decodes JSON several times faster than json.loads.
_decode_json = msgspec.json.Decoder().decode


def _parse(body: bytes | str, what: str) -> Any:
    """The JSON value of ``body``; DecodeError if it is not JSON."""
    try:
        return _decode_json(body)
    except (msgspec.MsgspecError, RecursionError):
        pass  # json.loads accepts what the standard library accepts, and words the error
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecodeError(f"{what} is not valid JSON: {exc}") from None
    except RecursionError:
        raise DecodeError(f"{what} is nested too deeply to decode") from None


def _object(value: Any, what: str) -> dict[str, Any]:
    if type(value) is not dict:
        raise DecodeError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _text(value: Any) -> str:
    """A value as text: text itself, anything else as compact JSON."""
    if type(value) is str:
        return value
    return json.dumps(value, separators=(",", ":"), default=str)


def _identifier(value: str, what: str) -> str:
    """``value``, which names a job, a page or a delivery in event keys and claims, once it is
    known to be Unicode text: a JSON escape of half a character (``"\\ud800"``) is valid JSON,
    but no store can write it, and a delivery naming one would fail on every retry."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise DecodeError(f"{what} is not valid Unicode text: {value!r}") from None
    return value


def _count(value: Any, path: Path) -> int | None:
    if value is None or type(value) is int and 0 <= value <= MAX_COUNT:
        return value
    if type(value) is float and value.is_integer() and 0 <= value <= MAX_COUNT:
        # JSON has numbers, not integers: an API that writes 10.0 means 10, and refusing it
        # lost the job's every answer, its end included.
        return int(value)
    if type(value) is int and value > MAX_COUNT:
        raise DecodeError(f"{path.text!r} must be at most {MAX_COUNT}, got {value!r}")
    raise DecodeError(f"{path.text!r} must be a whole number >= 0, got {value!r}")


def _at_most(total: int, what: str) -> int:
    """A sum of counts, which no store could record past MAX_COUNT: refused here instead of
    failing to be recorded (a webhook delivery would be answered 503 on every retry)."""
    if total > MAX_COUNT:
        raise DecodeError(f"{what} must be at most {MAX_COUNT}, got {total!r}")
    return total


def _sum(paths: tuple[Path, ...], job: dict[str, Any]) -> int | None:
    """The count at ``paths``, summed; None where none of them holds one."""
    counts = [_count(path.get(job), path) for path in paths]
    known = [c for c in counts if c is not None]
    if not known:
        return None
    return _at_most(sum(known), " + ".join(repr(path.text) for path in paths))


def _nothing(value: Any) -> None:
    return None


def _when(value: Any) -> datetime | None:
    """An ISO 8601 text or a Unix time in seconds, as a datetime; None if neither."""
    try:
        if type(value) is str:
            return datetime.fromisoformat(value)
        if type(value) in (int, float) and math.isfinite(value):
            return datetime.fromtimestamp(value, UTC)
    except (ValueError, OverflowError, OSError):
        pass
    return None


def _origin(url: str) -> tuple[str, str, int | None] | None:
    try:
        parts = urlsplit(url)
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts.scheme, parts.hostname, port


class _State:
    """What one job object says: the status and everything that rides on its events."""

    __slots__ = ("attempt", "completed", "data", "error", "raw", "status", "total", "transitional")

    def __init__(
        self,
        status: JobStatus | None,
        raw: str,
        completed: int | None,
        total: int | None,
        attempt: int | None,
        error: str | None,
        transitional: bool,
        data: Mapping[str, Any],
    ) -> None:
        self.status, self.raw, self.completed, self.total = status, raw, completed, total
        self.attempt, self.error, self.transitional, self.data = attempt, error, transitional, data


class GenericProvider(Provider):
    """An HTTP job API described in TOML (``[jobwatch.generic]``).

    Build it with :meth:`from_config`; its capabilities and default base URL come from the
    description. Presets (``openai-batch``, ``github-actions``, ``replicate``) are subclasses
    that read a description shipped with jobwatch instead, and their own table's variables.
    """

    name: ClassVar[str] = "generic"

    def __init__(self, description: Description, config: Config | None = None) -> None:
        self.description = d = description
        self.default_base_url = d.base_url
        self.capabilities = capabilities_of(d)
        base = (config.base_url if config is not None else None) or d.base_url
        self._origin = None if base is None else _origin(base)
        self._static = dict(d.headers)
        self._auth = _credentials(d, config)
        self._stream_urls: OrderedDict[str, str] = OrderedDict()
        self._warned: set[str] = set()
        # What every decode reads, fetched once.
        self._status, self._progress, self._job = d.status, d.progress, d.job
        self._map, self._rules, self._guards = d.status.map, d.status.rules, d.status.guards
        self._status_of = d.status.path.get if d.status.path is not None else _nothing
        self._map_only = not self._rules and not self._guards
        self._one_done = d.progress.done[0].get if len(d.progress.done) == 1 else None
        self._one_total = d.progress.total[0].get if len(d.progress.total) == 1 else None
        self._grows = d.progress.total_may_grow
        self._started_at = None if d.job.started_at is None else d.job.started_at.get
        self._ended_at = None if d.job.ended_at is None else d.job.ended_at.get
        # Fields read from the job object itself by name: a dict lookup, not a call.
        self._status_field = None if d.status.path is None else d.status.path.field
        done, total = d.progress.done, d.progress.total
        self._count_fields = (
            (done[0].field, total[0].field)
            if (
                d.progress.kind == "counts"
                and len(done) == len(total) == 1
                and done[0].field is not None
                and total[0].field is not None
            )
            else None
        )
        self._url_from = None if d.stream is None else d.stream.url_from
        self._frames = None if d.stream is None else d.stream.events
        self._event_path = None if d.stream is None else d.stream.event_path

    @classmethod
    def from_config(cls, config: Config) -> GenericProvider:
        where = f"[jobwatch.{cls.name}]"
        with config.naming_source():
            description, values, values_where = cls.read(config.table(cls.name), where)
            return cls(description.bind(values, values_where), config)

    @classmethod
    def read(
        cls, table: Mapping[str, Any], where: str
    ) -> tuple[Description, Mapping[str, Any], str]:
        """The description a configuration table gives, its variables' values, and where
        those values are configured (for messages)."""
        if not table:
            raise ConfigError(
                f"{where} is missing: the generic provider watches the API this table "
                "describes (see docs/providers.md, or copy a preset: jobwatch providers NAME)"
            )
        description, values = read_description(table, where)
        return description, values, f"{where[:-1]}.values]"

    #: What a user does to teach the description a status value it does not map.
    remedy: ClassVar[str] = "map it under [jobwatch.generic.status]"

    def headers(self) -> Mapping[str, str]:
        # Credentials are not here: they ride on each request to the API's own origin.
        return self._static

    # -- requests ----------------------------------------------------------------------------

    def _headers_for(self, url: str) -> Mapping[str, str]:
        """The credentials for a URL an answer named: only on the API's own origin."""
        if url.startswith("/") and not url.startswith("//"):
            return self._auth
        origin = _origin(url)
        return self._auth if origin is not None and origin == self._origin else {}

    def status_request(self, job_id: str) -> Request:
        return self._job.get.render({JOB_ID: job_id}, self._auth)

    def _absolute(self, url: Any, what: str) -> Request:
        if type(url) is not str or not (
            url.startswith("/") and not url.startswith("//") or _origin(url) is not None
        ):
            raise DecodeError(f"{what} is not an http(s) URL or a path: {url!r}")
        return Request(path=url, headers=self._headers_for(url))

    # -- statuses ----------------------------------------------------------------------------

    def decode_status(
        self, job_id: str, response: Response, previous: Snapshot | None, *, source: str
    ) -> tuple[Snapshot, list[JobEvent]]:
        if not 200 <= response.status < 300:
            raise self.error_for(response)
        try:
            job = self._root(_parse(response.body, "the answer"))
            self._about(job_id, job)
            state = self._state(job_id, job)
        except DecodeError as exc:
            raise DecodeError(f"the status of job {job_id}: {exc}") from None
        snapshot = Snapshot(
            job_id=job_id,
            status=state.status,
            raw_status=state.raw,
            completed=state.completed,
            total=state.total,
            data=job,
            started_at=None if self._started_at is None else seconds(_when(self._started_at(job))),
        )
        if self._url_from is not None:
            self._learn(job_id, job)
        return snapshot, self._events(job_id, job, state, previous, source)

    def _about(self, job_id: str, job: dict[str, Any]) -> None:
        """Refuse an answer whose ``[job] id`` names another job (a proxy or cache that mixed
        answers up): its state is not this job's."""
        ident = self._job.id
        if ident is not None and (found := ident.get(job)) is not None:
            if _text(found) != job_id:
                raise DecodeError(f"answered about another job: {found!r:.80}")

    def _root(self, document: Any) -> dict[str, Any]:
        root = self._job.root
        job = document if root is None else root.get(document)
        if type(job) is not dict:
            where = "the answer" if root is None else f"{root.text!r} of the answer"
            raise DecodeError(f"{where} must be a JSON object, got {type(job).__name__}")
        return job

    def _state(self, job_id: str, job: dict[str, Any]) -> _State:
        """What ``job`` says; DecodeError (without the job's name) when it is malformed."""
        field = self._status_field
        value = job.get(field) if field is not None else self._status_of(job)
        raw = value if type(value) is str else ("" if value is None else _text(value))
        if self._map_only:
            rule = self._map.get(raw) if value is not None else None
        else:
            rule = next((r for r in self._rules if r.when is not None and r.when.holds(job)), None)
            if rule is None and value is not None:
                rule = self._map.get(raw)
        names = self._count_fields
        if names is not None:  # the usual: a count and a total, fields of the job
            completed, total = job.get(names[0]), job.get(names[1])
            if not (
                (completed is None or type(completed) is int and 0 <= completed <= MAX_COUNT)
                and (total is None or type(total) is int and 0 <= total <= MAX_COUNT)
            ):
                completed, total = self._counts(job)  # which says what is wrong
        else:
            completed, total = self._counts(job)
        attempt = None if self._job.attempt is None else self._attempt(job)
        if rule is None:
            return self._unknown(job_id, job, value, raw, completed, total, attempt)
        status, transitional = rule.status, rule.transitional
        if self._guards:
            guard = self._guards.get(status)
            if guard is not None and not guard.require.holds(job):
                status, transitional, rule = guard.otherwise, False, None
        error = None
        if status is _FAILED:
            error = self._error(job, rule.error if rule is not None else None, raw)
        return _State(
            status, raw, completed, total, attempt, error, transitional, MappingProxyType(job)
        )

    def _unknown(
        self,
        job_id: str,
        job: dict[str, Any],
        value: Any,
        raw: str,
        completed: int | None,
        total: int | None,
        attempt: int | None,
    ) -> _State:
        if value is None:
            path = self._status.path
            raise DecodeError(f"the answer has no status at {getattr(path, 'text', '')!r}")
        if self._status.unknown == "fail":
            return _State(
                _FAILED,
                raw,
                completed,
                total,
                attempt,
                f"unknown status {raw!r}",
                False,
                MappingProxyType(job),
            )
        if raw not in self._warned and len(self._warned) < _WARNED:
            self._warned.add(raw)
            log.warning(
                "%s: job %s has the status %r, which the %s description does not map; "
                "it is not taken as running, and the watch goes on until its deadline "
                "(%s)",
                self.description.api,
                job_id,
                raw,
                self.name,
                self.remedy,
            )
        return _State(None, raw, completed, total, attempt, None, False, MappingProxyType(job))

    def _counts(self, job: dict[str, Any]) -> tuple[int | None, int | None]:
        spec = self._progress
        kind = spec.kind
        if kind == "counts":
            done, total = self._one_done, self._one_total
            if done is not None and total is not None:  # the usual: one path each
                completed, of = done(job), total(job)
                if (
                    completed is None or type(completed) is int and 0 <= completed <= MAX_COUNT
                ) and (of is None or type(of) is int and 0 <= of <= MAX_COUNT):
                    return completed, of
            return _sum(spec.done, job), _sum(spec.total, job)
        if kind == "none":
            return None, None
        if kind == "buckets":
            return self._buckets(job)
        assert spec.value is not None  # checked when the description was read
        value = spec.value.get(job)
        if value is None:
            return None, None
        top = 1.0 if kind == "fraction" else 100.0
        if type(value) not in (int, float) or not 0 <= value <= top:
            raise DecodeError(
                f"{spec.value.text!r} must be a number from 0 to {top:g}, got {value!r}"
            )
        return round(value * 100 / top), 100

    def _buckets(self, job: dict[str, Any]) -> tuple[int | None, int | None]:
        spec = self._progress
        assert spec.buckets is not None
        buckets = spec.buckets.get(job)
        if buckets is None:
            return None, None
        if type(buckets) is not dict or None in buckets.values():
            raise DecodeError(
                f"{spec.buckets.text!r} must be an object of whole numbers >= 0, got {buckets!r}"
            )
        if not all(type(n) is int and n >= 0 for n in buckets.values()):
            buckets = {name: _count(n, spec.buckets) for name, n in buckets.items()}
        return (
            _at_most(sum(buckets.get(name, 0) for name in spec.bucket_names), spec.buckets.text),
            _at_most(sum(buckets.values()), spec.buckets.text),
        )

    def _attempt(self, job: dict[str, Any]) -> int | None:
        path = self._job.attempt
        return None if path is None else _count(path.get(job), path)

    def _error(self, job: Mapping[str, Any], first: Path | None, word: str) -> str:
        """Why the job failed, in the API's words; its status word where it gives none."""
        for path in (first, *self._job.error):
            if path is not None:
                value = path.get(job)
                if truthy(value):
                    return _text(value)
        return word or "failed"

    def _events(
        self,
        job_id: str,
        job: dict[str, Any],
        state: _State,
        previous: Snapshot | None,
        source: str,
    ) -> list[JobEvent]:
        status, completed, total = state.status, state.completed, state.total
        progress: bool | str = False
        if (
            previous is None
            or previous.completed != completed
            or previous.total != total
            or previous.raw_status != state.raw
        ):
            if completed is not None and not state.transitional and not self._grows:
                progress = True  # the usual key, {job}:progress:{completed}
            else:
                progress = self._progress_key(job_id, state) or False
        terminal = status is not None and status.terminal
        started = self._started_at if status is _PROCESSING else None
        ended = self._ended_at if terminal else None
        return JobEvent.lifecycle(
            job_id,
            status,
            source=source,
            completed=completed,
            total=total,
            data=state.data,
            progress=progress,
            error=state.error,
            attempt=state.attempt,
            started_at=None if started is None else _when(started(job)),
            ended_at=None if ended is None else _when(ended(job)),
        )

    def _progress_key(self, job_id: str, state: _State) -> str | None:
        completed = state.completed
        if completed is not None:
            if not state.transitional and not self._grows:
                return f"{job_id}:progress:{completed}"
            key = f"{job_id}:progress:{completed}"
            if self._grows and state.total is not None:
                key += f"/{state.total}"
            return f"{key}:{state.raw}" if state.transitional else key
        if state.transitional:
            return f"{job_id}:progress:{state.raw}"
        if state.status is _QUEUED:
            return f"{job_id}:progress:queued"
        return None

    def _learn(self, job_id: str, job: dict[str, Any]) -> None:
        """Remember what later requests need from the job itself: its stream's URL."""
        if self._url_from is None:
            return
        url = self._url_from.get(job)
        if type(url) is str and _origin(url) is not None:
            self._stream_urls[job_id] = url
            self._stream_urls.move_to_end(job_id)
            if len(self._stream_urls) > _REMEMBERED:
                self._stream_urls.popitem(last=False)

    # -- results -----------------------------------------------------------------------------

    def results_request(self, job_id: str) -> Request:
        spec = self.description.results
        if spec.source == "none":
            raise ConfigError(
                f"the {self.name} description has no [results] table: set source "
                "to inline, url or request to read a job's results"
            )
        if spec.source == "request" and not spec.fields:
            assert spec.get is not None
            return spec.get.render({JOB_ID: job_id}, self._auth)
        return self.status_request(job_id)  # the results, or where they are, are in the job

    def decode_results(self, job_id: str, response: Response) -> ResultsPage:
        if not 200 <= response.status < 300:
            raise self.error_for(response)
        try:
            return self._results(job_id, response)
        except DecodeError as exc:
            raise DecodeError(f"the results of job {job_id}: {exc}") from None

    def _results(self, job_id: str, response: Response) -> ResultsPage:
        spec = self.description.results
        if spec.source == "inline":
            document: Any = self._root(_parse(response.body, "the answer"))
            return self._page(job_id, document, response)
        if spec.source == "url" or spec.fields:
            job = self._job_in(job_id, response)
            if job is not None:
                found = self._results_from(job_id, job)
                return ResultsPage(
                    items=(), next=found[0] if found else None, then=tuple(found[1:])
                )
        if spec.format == "jsonl":
            return self._jsonl(job_id, response)
        return self._page(job_id, _parse(response.body, "the answer"), response)

    def _job_in(self, job_id: str, response: Response) -> dict[str, Any] | None:
        """The job, when the answer is its status (the first step to results it names)."""
        try:
            job = self._root(json.loads(response.body))
        except (ValueError, UnicodeDecodeError, RecursionError, DecodeError):
            return None
        ident = self._job.id
        if ident is not None and _text(ident.get(job)) != job_id:
            return None
        return job

    def _results_from(self, job_id: str, job: dict[str, Any]) -> list[Request]:
        """The requests of the results the job names, in order (none: it names none yet)."""
        spec = self.description.results
        if spec.url is not None:
            url = spec.url.get(job)
            return [] if url is None else [self._absolute(url, repr(spec.url.text))]
        assert spec.get is not None
        found = []
        for fields in spec.fields:
            values = {JOB_ID: job_id}
            for name, path in fields.items():
                value = path.get(job)
                if value is None or value == "":
                    break  # nothing there (no output file: a batch whose requests all failed)
                values[name] = _text(value)
            else:
                found.append(spec.get.render(values, self._auth))
        return found

    def _page(self, job_id: str, document: Any, response: Response) -> ResultsPage:
        spec = self.description.results
        value = document if spec.items is None else spec.items.get(document)
        items = value if type(value) is list else ([] if value is None else [value])
        return ResultsPage(
            items=tuple(i if type(i) is dict else {"value": i} for i in items),
            next=self._next(job_id, document, response),
        )

    def _jsonl(self, job_id: str, response: Response) -> ResultsPage:
        try:
            text = response.body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"the answer is not UTF-8 text: {exc}") from None
        items = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                item = _parse(line, f"line {number}")
                items.append(item if type(item) is dict else {"value": item})
        return ResultsPage(items=tuple(items), next=self._next(job_id, None, response))

    def _next(self, job_id: str, document: Any, response: Response) -> Request | None:
        spec = self.description.results
        if spec.next == "link":
            url = _next_link(response.headers)
            return None if url is None else self._absolute(url, "the Link header")
        if spec.next == "none" or spec.next_path is None:
            return None
        value = spec.next_path.get(document)
        if value is None or value == "":
            return None
        if spec.next == "url":
            return self._absolute(value, repr(spec.next_path.text))
        first = self.results_request(job_id)
        assert spec.cursor_param is not None
        return Request(
            method=first.method,
            path=first.path,
            headers=first.headers,
            params={**first.params, spec.cursor_param: _text(value)},
        )

    # -- streams -----------------------------------------------------------------------------

    def job_stream_request(self, job_id: str) -> Request:
        stream = self.description.stream
        if stream is None:
            return super().job_stream_request(job_id)
        if stream.url is not None:
            return stream.url.render({JOB_ID: job_id}, self._auth)
        url = self._stream_urls.get(job_id)
        if url is None:
            assert stream.url_from is not None
            raise StreamError(
                f"job {job_id} names its stream's URL in its status "
                f"({stream.url_from.text}), which has not been read yet"
            )
        return Request(path=url, headers=self._headers_for(url))

    def decode_stream_event(
        self, job_id: str | None, event: str, data: str, *, source: str
    ) -> list[JobEvent]:
        frames = self._frames
        if frames is None:
            return super().decode_stream_event(job_id, event, data, source=source)
        if job_id is None:
            raise DecodeError(f"the {self.name} description has no workspace stream")
        try:
            if self._event_path is None:
                entry = frames.get(event)
                if entry is not None and entry.kind == "status":  # the usual: no other layer
                    job = _object(_parse(data, "the data"), "the data")
                    if self._url_from is not None:
                        self._learn(job_id, job)
                    return self._events(job_id, job, self._state(job_id, job), None, source)
            return self._frame(job_id, event, data, source)
        except DecodeError as exc:
            raise DecodeError(f"job {job_id} stream {event!r} frame: {exc}") from None

    def _frame(self, job_id: str, event: str, data: str, source: str) -> list[JobEvent]:
        payload: Any = None
        name = event
        if self._event_path is not None:
            payload = _parse(data, "the data")
            name = _text(self._event_path.get(payload))
        assert self._frames is not None
        entry = self._frames.get(name)
        if entry is None or entry.kind == "ignore":
            return []
        if entry.kind == "status":
            job = _object(_parse(data, "the data") if payload is None else payload, "the data")
            self._learn(job_id, job)
            return self._events(job_id, job, self._state(job_id, job), None, source)
        if entry.kind == "done":
            return self._done(job_id, name, data, payload, source)
        return [self._entry_event(entry, job_id, name, data, payload, source)]

    def _done(self, job_id: str, name: str, data: str, payload: Any, source: str) -> list[JobEvent]:
        stream = self.description.stream
        assert stream is not None and stream.done_path is not None
        body = _parse(data or "{}", "the data") if payload is None else payload
        value = stream.done_path.get(body)
        reason = "" if value is None else _text(value)
        status = stream.done_map.get(reason)
        if status is None:
            # Not a way of ending the description knows: the stream closes, and the poll
            # that follows a stream without resume learns how the job ended.
            log.warning(
                "%s: job %s: a %r frame says %r, which [stream.done] map does not name; "
                "polling finds out how the job ended",
                self.description.api,
                job_id,
                name,
                reason,
            )
            return []
        error = (reason or status.value) if status is _FAILED else None
        frozen = MappingProxyType(body if type(body) is dict else {"value": body})
        return [
            JobEvent.build(
                kind=_TERMINAL_KIND[status],
                job_id=job_id,
                status=status,
                key=f"{job_id}:terminal",
                source=source,
                error=error,
                data=frozen,
            )
        ]

    def _entry_event(
        self, entry: Entry, job_id: str, name: str, data: str | bytes, payload: Any, source: str
    ) -> JobEvent:
        """The event a frame or a delivery of a named kind is (its data is not the job)."""
        if payload is None:
            try:
                payload = _parse(data, "the data") if data else {}
            except DecodeError:
                payload = {
                    "value": data if isinstance(data, str) else data.decode("utf-8", "replace")
                }
        frozen = MappingProxyType(payload if type(payload) is dict else {"value": payload})
        kind = entry.kind
        if kind == "page" and entry.failed_when is not None and entry.failed_when.holds(payload):
            kind = "page_failed"
        if kind in ("page", "page_failed"):
            assert entry.id is not None
            ident = entry.id.get(payload)
            if ident is None or ident == "":
                raise DecodeError(f"no page id at {entry.id.text!r}")
            error = self._item_error(entry, payload, "failed") if kind == "page_failed" else None
            return JobEvent.build(
                kind=kind,
                job_id=job_id,
                key=f"{job_id}:{kind}:{_identifier(_text(ident), 'the page id')}",
                source=source,
                error=error,
                data=frozen,
            )
        status = _KIND_STATUS[kind]
        if status.terminal:
            error = self._item_error(entry, payload, name) if status is _FAILED else None
            return JobEvent.build(
                kind=_TERMINAL_KIND[status],
                job_id=job_id,
                status=status,
                key=f"{job_id}:terminal",
                source=source,
                error=error,
                data=frozen,
            )
        key = f"{job_id}:started" if kind == "started" else f"{job_id}:progress:processing"
        return JobEvent.build(
            kind=kind, job_id=job_id, status=status, key=key, source=source, data=frozen
        )

    def _item_error(self, entry: Entry, payload: Any, name: str) -> str:
        if entry.error is not None:
            value = entry.error.get(payload)
            if truthy(value):
                return _text(value)
        if type(payload) is dict:
            if set(payload) == {"value"} and truthy(payload["value"]):
                return _text(payload["value"])  # a frame of plain text
            return self._error(payload, None, name.rpartition(".")[2])
        return name.rpartition(".")[2] or "failed"

    # -- webhooks ----------------------------------------------------------------------------

    def decode_webhook(
        self, headers: Mapping[str, str], body: bytes, *, source: str
    ) -> WebhookDelivery:
        hook = self.description.webhook
        if hook is None:
            return super().decode_webhook(headers, body, source=source)
        payload = _object(_parse(body, "the webhook body"), "the webhook body")
        name = self._event_name(hook.event_header, hook.event_path, headers, payload)
        delivery = headers.get(hook.delivery_header) if hook.delivery_header else None
        if delivery is None and hook.delivery_path is not None:
            found = hook.delivery_path.get(payload)
            delivery = None if found is None else _identifier(_text(found), "the delivery id")
        entry = hook.events.get(name) if hook.events else _STATUS_ENTRY
        if (
            entry is None
            or entry.kind == "ignore"
            or not all(
                _text(path.get(payload)).casefold() == value.casefold() for path, value in hook.only
            )
        ):
            return WebhookDelivery(delivery_id=delivery or None, event_name=name, events=())
        job_id = self._webhook_job(payload)
        try:
            events, name = self._delivered(entry, job_id, name, payload, source)
        except DecodeError as exc:
            raise DecodeError(f"webhook {name!r} about job {job_id}: {exc}") from None
        # A thin delivery says what happened, not the job's state: one status request tells.
        # A page carries its own data.
        thin = hook.payload == "thin" and entry.kind not in ("page", "page_failed")
        reconcile = (job_id,) if thin else ()
        return WebhookDelivery(
            delivery_id=delivery or None, event_name=name, events=tuple(events), reconcile=reconcile
        )

    def _delivered(
        self, entry: Entry, job_id: str, name: str, payload: dict[str, Any], source: str
    ) -> tuple[list[JobEvent], str]:
        """The events of one delivery, and its event name (the job's status, if it has none)."""
        hook = self.description.webhook
        assert hook is not None
        if entry.kind != "status":
            return [self._entry_event(entry, job_id, name, b"", payload, source)], name
        job = payload if hook.root is None else hook.root.get(payload)
        job = _object(job, f"the job at {getattr(hook.root, 'text', '@')!r}")
        state = self._state(job_id, job)
        self._learn(job_id, job)
        return self._events(job_id, job, state, None, source), name or state.raw

    @staticmethod
    def _event_name(
        header: str | None, path: Path | None, headers: Mapping[str, str], payload: dict[str, Any]
    ) -> str:
        parts = []
        if header is not None:
            parts.append(headers.get(header, ""))
        if path is not None:
            value = path.get(payload)
            parts.append("" if value is None else _text(value))
        return ".".join(part for part in parts if part)

    def _webhook_job(self, payload: dict[str, Any]) -> str:
        hook = self.description.webhook
        assert hook is not None
        value = hook.job_id.get(payload)
        if type(value) is int and value >= 0 or type(value) is str and value:
            return _identifier(str(value), f"the job id at {hook.job_id.text!r}")
        raise DecodeError(
            f"the webhook body has no job id at {hook.job_id.text!r} (text or a "
            f"whole number), got {value!r}"
        )

    # -- errors ------------------------------------------------------------------------------

    def error_for(self, response: Response) -> JobwatchError:
        status = response.status
        message = self._message(response.body)
        text = f"{self.description.api} answered HTTP {status}" + (
            f": {message}" if message else ""
        )
        verdict = self.classify(response)
        if verdict.outcome is Outcome.RATE_LIMITED:
            return RateLimited(
                f"{text}; jobwatch waits and retries", status=status, retry_after=verdict.wait
            )
        if status == 401:
            env = self.description.auth.env
            hint = f" (or set {env} in the environment)" if env else ""
            return AuthenticationError(f"{text}; check api_key in [jobwatch]{hint}", status=status)
        if status in self.description.errors.gone:
            # The status request names more than the job (GitHub's repository): a job
            # looked for in the wrong place is "not found" too.
            where = "".join(
                f", and {name} {value!r} ({self.description.bound_where} {name}: "
                f"{self.description.variables.get(name, '')})"
                for name, value in self.description.bound
            )
            return JobNotFound(f"{text}; check the job id{where}", status=status)
        return APIError(text + redirect_note(response), status=status)

    def _message(self, body: bytes) -> str | None:
        try:
            document = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return None
        for path in self.description.errors.message:
            value = path.get(document)
            if truthy(value):
                return " ".join(_text(value).split())[:_MESSAGE_CHARS]
        return None

    def classify(self, response: Response) -> Classification:
        spec = self.description.rate_limit
        headers_named = "x-ratelimit" in spec.signals
        limits = parse_rate_limit(response) if headers_named else None
        status = response.status
        if 200 <= status < 300:
            return Classification.fine(rate_limit=limits)
        hint = parse_retry_after(response) if "retry-after" in spec.signals else None
        told = status in spec.statuses or spec.when is not None and self._says(spec.when, response)
        # A spent budget is why a 403 or 429 refused the request, or an answer the description
        # names as rate limited (whose reset is the wait). On any other answer it is the state
        # the request left (it used the last unit): a 404 is still gone, a 401 still a refused
        # key, and the request budget pauses the next requests.
        spent = (told or status in (403, 429)) and limits is not None and limits.remaining == 0
        if (
            told
            or 400 <= status < 500
            and (hint is not None or spent)
            or status == 503
            and hint is not None
        ):
            reset = limits.reset if spent and limits is not None else None
            wait = next((w for w in (hint, reset, spec.wait) if w is not None), None)
            return Classification.rate_limited(wait=wait, rate_limit=limits)
        if status in self.description.errors.gone:
            return Classification.gone(rate_limit=limits)
        if status >= 500 or status == 408:
            return Classification.retry(wait=hint, rate_limit=limits)
        return Classification.fatal(rate_limit=limits)

    @staticmethod
    def _says(condition: Any, response: Response) -> bool:
        try:
            document = json.loads(response.body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return False
        return bool(condition.holds(document))


def _next_link(headers: Mapping[str, str]) -> str | None:
    """The ``rel="next"`` URL of a ``Link`` header (RFC 8288), if any."""
    value = headers.get("link")
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == "link"), None)
    for match in _LINK.finditer(value or ""):
        params = match.group(2).replace(" ", "").lower()
        if 'rel="next"' in params or "rel=next" in params.replace('"', ""):
            return match.group(1)
    return None


def _credentials(description: Description, config: Config | None) -> dict[str, str]:
    auth = description.auth
    if auth.style == "none":
        return {}
    key = config.api_key.reveal() if config is not None and config.api_key else None
    if key is None and auth.env:
        key = os.environ.get(auth.env) or None
        if key is not None and unsendable(key):
            raise ConfigError(
                f"{auth.env} (the API key the description's [auth] env names) {UNSENDABLE}"
            )
    if key is None:
        return {}
    if auth.style == "bearer":
        return {"authorization": f"Bearer {key}"}
    return {auth.header: f"{auth.prefix}{key}"}


def capabilities_of(description: Description) -> Capabilities:
    stream, hook = description.stream, description.webhook
    announced = False
    if stream is not None:
        kinds = {e.kind for e in stream.events.values()}
        announced |= (
            bool(kinds & {"status", "cancelled"}) or JobStatus.CANCELLED in stream.done_map.values()
        )
    if hook is not None:
        kinds = {e.kind for e in hook.events.values()} if hook.events else {"status"}
        announced |= bool(kinds & {"status", "cancelled"})
    return Capabilities(
        job_stream=stream is not None,
        stream_event_ids=stream is not None and stream.resume,
        webhooks=hook is not None,
        webhook_scheme=hook.scheme if hook is not None else "standard-webhooks",
        announces_cancellation=announced,
    )
