"""Reading an API description (``[jobwatch.generic]``, or a preset's TOML) strictly, once.

:func:`read_description` turns the table into a frozen :class:`Description` with every path,
condition and template compiled, or raises a :class:`~jobwatch.ConfigError` naming the table
and key: an unknown key, a wrong type, a path that is not JMESPath, a bare ``true`` in a
condition, a rule that can never be reached, a placeholder nothing fills. :data:`VOCABULARY`
lists the keys of every table; ``docs/providers.md`` documents each (a test compares them).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import attrs

from .._config import UNSENDABLE, unsendable
from .._errors import ConfigError
from .._events import JobStatus
from .._registry import installed
from ._paths import (
    JOB_ID,
    Condition,
    Path,
    Template,
    compile_condition,
    compile_path,
    compile_template,
    placeholders,
)

__all__ = ["VOCABULARY", "Description", "Entry", "read_description"]

#: The keys of every table of a description, by table ("" is the top level). Tables whose
#: keys are the user's own (status words, event names, variables) are not listed.
VOCABULARY: dict[str, tuple[str, ...]] = {
    "": (
        "api",
        "description",
        "base_url",
        "variables",
        "values",
        "auth",
        "request",
        "job",
        "status",
        "progress",
        "results",
        "stream",
        "webhook",
        "rate_limit",
        "errors",
    ),
    "auth": ("style", "header", "prefix", "env"),
    "request": ("headers",),
    "job": ("get", "root", "id", "attempt", "error", "started_at", "ended_at"),
    "status": ("path", "map", "rules", "unknown", "guards"),
    "status.rules": ("when", "status", "transitional", "error"),
    "status.guards": ("status", "require", "otherwise"),
    "progress": ("kind", "done", "total", "buckets", "value", "total_may_grow"),
    "results": (
        "source",
        "items",
        "url",
        "get",
        "fields",
        "format",
        "next",
        "next_path",
        "cursor_param",
    ),
    "stream": ("url", "url_from", "event_path", "events", "done", "resume"),
    "stream.done": ("path", "map"),
    "webhook": (
        "scheme",
        "event_header",
        "event_path",
        "events",
        "job_id",
        "delivery_header",
        "delivery_path",
        "payload",
        "root",
        "only",
    ),
    "events": ("kind", "error", "id", "failed_when"),
    "rate_limit": ("statuses", "signals", "when", "wait"),
    "errors": ("message", "gone"),
}

STATUSES = {status.value: status for status in JobStatus}
#: What a stream frame or a webhook delivery may be.
ENTRY_KINDS = (
    "status",
    "started",
    "progress",
    "completed",
    "failed",
    "cancelled",
    "page",
    "page_failed",
    "done",
    "ignore",
)
AUTH_STYLES = ("bearer", "header", "raw", "none")
PROGRESS_KINDS = ("none", "counts", "buckets", "fraction", "percent")
RESULT_SOURCES = ("none", "inline", "url", "request")
NEXT_KINDS = ("none", "link", "url", "cursor")
SIGNALS = ("retry-after", "x-ratelimit")
_MISSING: Any = object()
#: Error messages in a JSON error answer, tried in order when [errors] message is not set.
_MESSAGES = ("error.message", "message", "detail", "error")


class _Table:
    """One table of a description: unknown keys refused, each value read with its type."""

    def __init__(self, data: object, where: str, keys: tuple[str, ...] | None) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where} must be a table, got {_shown(data)}")
        self.data, self.where = data, where
        if keys is not None:
            unknown = sorted(str(key) for key in data if key not in keys)
            if unknown:
                raise ConfigError(
                    f"{where}: unknown key(s) {', '.join(unknown)}; the keys of this table are "
                    f"{', '.join(keys)}"
                )

    def at(self, key: str) -> str:
        return f"{self.where} {key}"

    def get(self, key: str, default: Any = _MISSING) -> Any:
        if key in self.data:
            return self.data[key]
        if default is _MISSING:
            raise ConfigError(f"{self.where} needs the key {key}")
        return default

    def text(self, key: str, default: Any = _MISSING) -> Any:
        value = self.get(key, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, str):
            raise ConfigError(f"{self.at(key)} must be text, got {_shown(value)}")
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self.get(key, default)
        if not isinstance(value, bool):
            raise ConfigError(f"{self.at(key)} must be true or false, got {_shown(value)}")
        return value

    def choice(self, key: str, options: tuple[str, ...], default: str | None = None) -> str:
        value = self.get(key, _MISSING if default is None else default)
        if value not in options:
            raise ConfigError(
                f"{self.at(key)} must be one of {', '.join(options)}, got {_shown(value)}"
            )
        return str(value)

    def path(self, key: str, default: Any = _MISSING) -> Any:
        value = self.get(key, default)
        if value is default and default is not _MISSING:
            return value
        return compile_path(value, self.at(key))

    def paths(self, key: str) -> tuple[Path, ...]:
        """A path, or a list of paths (tried in order, or summed, as the key says)."""
        value = self.get(key, ())
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or key in self.data and not items:
            # An empty list would read nothing: progress never counted, say, without a word.
            raise ConfigError(
                f"{self.at(key)} must be a path or a non-empty list of paths, got {_shown(value)}"
            )
        return tuple(compile_path(item, f"{self.at(key)}[{i}]") for i, item in enumerate(items))

    def condition(self, key: str, default: Any = _MISSING) -> Any:
        value = self.get(key, default)
        if value is default and default is not _MISSING:
            return value
        return compile_condition(value, self.at(key))

    def table(self, key: str, keys: tuple[str, ...] | None) -> _Table | None:
        value = self.get(key, None)
        return None if value is None else _Table(value, f"{self.where[:-1]}.{key}]", keys)

    def texts(self, key: str) -> dict[str, str]:
        """A table of the user's own keys whose values are text."""
        sub = self.table(key, None)
        if sub is None:
            return {}
        for name, value in sub.data.items():
            if not isinstance(value, str):
                raise ConfigError(f"{sub.where} {name} must be text, got {_shown(value)}")
        return dict(sub.data)

    def statuses(self, key: str, default: tuple[int, ...]) -> tuple[int, ...]:
        value = self.get(key, list(default))
        if not isinstance(value, list) or not all(
            type(v) is int and 100 <= v <= 599 for v in value
        ):
            raise ConfigError(
                f"{self.at(key)} must be a list of HTTP statuses (100-599), got {_shown(value)}"
            )
        return tuple(value)


def _shown(value: object) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _status(value: object, where: str) -> JobStatus:
    if not isinstance(value, str) or value not in STATUSES:
        raise ConfigError(f"{where} must be one of {', '.join(STATUSES)}, got {_shown(value)}")
    return STATUSES[value]


# -- the parts of a description -------------------------------------------------------------


@attrs.frozen
class Auth:
    style: str
    header: str
    prefix: str
    env: str | None


@attrs.frozen
class Job:
    get: Template
    root: Path | None
    id: Path | None
    attempt: Path | None
    error: tuple[Path, ...]
    started_at: Path | None
    ended_at: Path | None


@attrs.frozen
class Rule:
    """What a status value or a ``when`` rule means."""

    status: JobStatus
    transitional: bool = False
    error: Path | None = None
    when: Condition | None = None


@attrs.frozen
class Guard:
    require: Condition
    otherwise: JobStatus


@attrs.frozen
class Status:
    path: Path | None
    map: Mapping[str, Rule]
    rules: tuple[Rule, ...]
    unknown: str
    guards: Mapping[JobStatus, Guard]


@attrs.frozen
class Progress:
    kind: str
    done: tuple[Path, ...]
    total: tuple[Path, ...]
    buckets: Path | None
    bucket_names: tuple[str, ...]
    value: Path | None
    total_may_grow: bool


@attrs.frozen
class Results:
    source: str
    items: Path | None
    url: Path | None
    get: Template | None
    fields: tuple[Mapping[str, Path], ...]  # one table of placeholders per request, in turn
    format: str
    next: str
    next_path: Path | None
    cursor_param: str | None


@attrs.frozen
class Entry:
    """What a stream frame or a webhook delivery of one event name becomes."""

    kind: str
    error: Path | None = None
    id: Path | None = None
    failed_when: Condition | None = None


@attrs.frozen
class Stream:
    url: Template | None
    url_from: Path | None
    event_path: Path | None
    events: Mapping[str, Entry]
    done_path: Path | None
    done_map: Mapping[str, JobStatus]
    resume: bool


@attrs.frozen
class Webhook:
    scheme: str
    event_header: str | None
    event_path: Path | None
    events: Mapping[str, Entry]
    job_id: Path
    delivery_header: str | None
    delivery_path: Path | None
    payload: str
    root: Path | None
    only: tuple[tuple[Path, str], ...]


@attrs.frozen
class RateLimits:
    statuses: tuple[int, ...]
    signals: tuple[str, ...]
    when: Condition | None
    wait: float | None


@attrs.frozen
class Errors:
    message: tuple[Path, ...]
    gone: tuple[int, ...]


@attrs.frozen
class Description:
    """An API described in TOML, compiled: what :class:`~.generic.GenericProvider` runs."""

    api: str
    description: str
    base_url: str | None
    variables: Mapping[str, str]
    auth: Auth
    headers: Mapping[str, str]
    job: Job
    status: Status
    progress: Progress
    results: Results
    stream: Stream | None
    webhook: Webhook | None
    rate_limit: RateLimits
    errors: Errors
    #: The variables the status request was filled with, as (name, value), and the table
    #: that sets them: a job "not found" may be one looked for in the wrong place.
    bound: tuple[tuple[str, str], ...] = ()
    bound_where: str = ""

    def bind(self, values: Mapping[str, str], where: str) -> Description:
        """The description with its variables filled from ``values`` (the keys of ``where``)."""
        unknown = sorted(set(values) - set(self.variables))
        if unknown:
            known = ", ".join(sorted(self.variables)) or "none"
            raise ConfigError(
                f"{where}: unknown key(s) {', '.join(unknown)}; this API's variables are {known}"
            )
        for name, help_text in self.variables.items():
            if not isinstance(values.get(name), str) or not values[name]:
                raise ConfigError(f"{where} {name} is not set: {help_text}")
        job = attrs.evolve(self.job, get=self.job.get.bind(values, where, self.variables))
        results = self.results
        if results.get is not None:
            results = attrs.evolve(results, get=results.get.bind(values, where, self.variables))
        stream = self.stream
        if stream is not None and stream.url is not None:
            stream = attrs.evolve(stream, url=stream.url.bind(values, where, self.variables))
        webhook = self.webhook
        if webhook is not None and webhook.only:
            only = tuple((path, _fill(text, values)) for path, text in webhook.only)
            webhook = attrs.evolve(webhook, only=only)
        bound = tuple((name, values[name]) for name in sorted(self.job.get.names & set(values)))
        return attrs.evolve(
            self,
            job=job,
            results=results,
            stream=stream,
            webhook=webhook,
            bound=bound,
            bound_where=where,
        )


def _fill(text: str, values: Mapping[str, str]) -> str:
    for name, value in values.items():
        text = text.replace(f"{{{name}}}", value)
    return text


# -- reading each table ---------------------------------------------------------------------


def read_description(data: object, where: str) -> tuple[Description, dict[str, str]]:
    """The description in ``data`` (the table named ``where``) and its ``values``."""
    top = _Table(data, where, VOCABULARY[""])
    variables = top.texts("variables")
    if JOB_ID in variables:
        raise ConfigError(
            f"{top.where[:-1]}.variables] {JOB_ID}: {{{JOB_ID}}} is the job's id in every "
            "template, and a variable of that name would put its one value in place of every "
            "job's; name the variable otherwise"
        )
    values = top.texts("values")
    names = frozenset(variables) | {JOB_ID}
    base_url = top.text("base_url", None)
    if base_url is not None and not base_url.startswith(("http://", "https://")):
        raise ConfigError(
            f"{top.at('base_url')} must start with http:// or https://, got {base_url!r}"
        )
    job = _job(_sub(top, "job", required=True), names)
    status = _status_table(_sub(top, "status", required=True))
    description = Description(
        api=top.text("api", "the API"),
        description=top.text("description", ""),
        base_url=base_url,
        variables=variables,
        auth=_auth(_sub(top, "auth")),
        headers=_headers(_sub(top, "request")),
        job=job,
        status=status,
        progress=_progress(_sub(top, "progress")),
        results=_results(_sub(top, "results"), names),
        stream=_stream(top.table("stream", VOCABULARY["stream"]), names),
        webhook=_webhook(top.table("webhook", VOCABULARY["webhook"]), names),
        rate_limit=_rate_limit(_sub(top, "rate_limit")),
        errors=_errors(_sub(top, "errors")),
    )
    _check_results(description, top.where)
    return description, values


def _check_results(description: Description, where: str) -> None:
    results = description.results
    if (results.source == "url" or results.fields) and description.job.id is None:
        raise ConfigError(
            f"{where[:-1]}.job] needs id (the path of the job's id in its status): "
            "results read from the job tell its status from a results page by it"
        )
    if results.next == "cursor" and (results.source == "url" or results.fields):
        raise ConfigError(
            f'{where[:-1]}.results] next = "cursor" pages the first results '
            "request again, which a URL or fields read from the job are not"
        )


def _sub(top: _Table, name: str, *, required: bool = False) -> _Table:
    if required and name not in top.data:
        raise ConfigError(f"{top.where} needs the table [{top.where[1:-1]}.{name}]")
    table = top.table(name, VOCABULARY[name])
    return table if table is not None else _Table({}, f"{top.where[:-1]}.{name}]", None)


def _auth(table: _Table) -> Auth:
    style = table.choice("style", AUTH_STYLES, "bearer")
    unread = {"bearer": ("header", "prefix"), "none": ("header", "prefix", "env")}.get(style, ())
    for key in unread:
        if key in table.data:
            # The key would go where the style says, not where this key does: a 401 follows.
            sends = "Authorization: Bearer KEY" if style == "bearer" else "no key"
            raise ConfigError(
                f'{table.at(key)} is not read with style = "{style}", which sends {sends}; '
                'set style = "header" (or "raw") to send the key in a header of your choice'
            )
    header = table.text("header", "authorization" if style != "header" else "x-api-key")
    if not _is_header_name(header):
        raise ConfigError(f"{table.at('header')} must be a header name, got {header!r}")
    env = table.text("env", None)
    prefix = table.text("prefix", "")
    if prefix and unsendable(prefix + "k"):  # ("Token " ends in the space before the key)
        raise ConfigError(f"{table.at('prefix')} {UNSENDABLE}")
    return Auth(style=style, header=header.lower(), prefix=prefix, env=env)


def _headers(table: _Table) -> dict[str, str]:
    headers = table.texts("headers")
    for name, value in headers.items():
        if not _is_header_name(name):
            raise ConfigError(f"{table.where} headers: {name!r} is not a header name")
        if unsendable(value):
            raise ConfigError(f"{table.where} headers: the value of {name!r} {UNSENDABLE}")
    return {name.lower(): value for name, value in headers.items()}


def _naming_the_job(template: Template, where: str, fields: frozenset[str] = frozenset()) -> None:
    """Refuse a per-job request in which nothing names the job: every job would get the
    answer about one."""
    if not template.names & (fields | {JOB_ID}):
        also = "".join(f" or {{{name}}}" for name in sorted(fields))
        raise ConfigError(
            f"{where}: {template.text!r} does not name the job, so every job would be asked "
            f"about with the same request; put {{{JOB_ID}}}{also} where the API expects the "
            "job's id (the path or the query)"
        )


def _job(table: _Table, names: frozenset[str]) -> Job:
    root = table.path("root", None)
    get = compile_template(table.get("get"), table.at("get"), names)
    _naming_the_job(get, table.at("get"))
    return Job(
        get=get,
        root=None if root is None or root.is_current else root,
        id=table.path("id", None),
        attempt=table.path("attempt", None),
        error=table.paths("error"),
        started_at=table.path("started_at", None),
        ended_at=table.path("ended_at", None),
    )


def _rule_error(table: _Table, status: JobStatus) -> Path | None:
    error = table.path("error", None)
    if error is not None and status is not JobStatus.FAILED:
        raise ConfigError(f"{table.at('error')}: only a rule for failed says why it failed")
    return error  # type: ignore[no-any-return]


def _map_entry(value: object, where: str) -> Rule:
    if isinstance(value, str):
        return Rule(status=_status(value, where))
    entry = _Table(value, where, VOCABULARY["status.rules"][1:])
    status = _status(entry.get("status"), entry.at("status"))
    return Rule(
        status=status,
        transitional=entry.flag("transitional", False),
        error=_rule_error(entry, status),
    )


def _status_table(table: _Table) -> Status:
    path = table.path("path")
    mapping = table.table("map", None)
    entries = (
        {}
        if mapping is None
        else {
            str(value): _map_entry(rule, f"{mapping.where} {value}")
            for value, rule in mapping.data.items()
        }
    )
    rules = _rules(table)
    if not rules and not entries:
        raise ConfigError(
            f"{table.where} needs map (with path) or rules: without either, no "
            "status would ever be known"
        )
    catch_all = next((i for i, r in enumerate(rules) if r.when and r.when.constant), None)
    if catch_all is not None and entries:
        raise ConfigError(
            f"{table.where} map is unreachable: rules[{catch_all}] matches every "
            "answer before the map is read"
        )
    guards = _guards(table, {r.status for r in rules} | {r.status for r in entries.values()})
    return Status(
        path=path,
        map=entries,
        rules=rules,
        unknown=table.choice("unknown", ("warn", "fail"), "warn"),
        guards=guards,
    )


def _rules(table: _Table) -> tuple[Rule, ...]:
    value = table.get("rules", [])
    if not isinstance(value, list):
        raise ConfigError(
            f"{table.at('rules')} must be an array of tables ([[...rules]]), got {_shown(value)}"
        )
    rules: list[Rule] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(value):
        entry = _Table(item, f"{table.where[:-1]}.rules][{index}]", VOCABULARY["status.rules"])
        when = entry.condition("when")
        _reachable(entry, when, index, rules, seen)
        status = _status(entry.get("status"), entry.at("status"))
        rules.append(
            Rule(
                status=status,
                transitional=entry.flag("transitional", False),
                error=_rule_error(entry, status),
                when=when,
            )
        )
    return tuple(rules)


def _reachable(
    entry: _Table, when: Condition, index: int, rules: list[Rule], seen: dict[str, int]
) -> None:
    """Refuse a rule that can never be the first to match."""
    if when.constant is False:
        raise ConfigError(
            f"{entry.at('when')}: {when.text!r} is never true; the rule can never match"
        )
    earlier = next((i for i, r in enumerate(rules) if r.when and r.when.constant), None)
    if earlier is not None:
        raise ConfigError(f"{entry.where} is unreachable: rules[{earlier}] matches every answer")
    key = repr(when.path.tree)
    if key in seen:
        raise ConfigError(
            f"{entry.where} is unreachable: rules[{seen[key]}] has the same condition {when.text!r}"
        )
    seen[key] = index


def _guards(table: _Table, produced: set[JobStatus]) -> dict[JobStatus, Guard]:
    value = table.get("guards", [])
    if not isinstance(value, list):
        raise ConfigError(f"{table.at('guards')} must be an array of tables, got {_shown(value)}")
    guards: dict[JobStatus, Guard] = {}
    for index, item in enumerate(value):
        entry = _Table(item, f"{table.where[:-1]}.guards][{index}]", VOCABULARY["status.guards"])
        status = _status(entry.get("status"), entry.at("status"))
        if not status.terminal:
            raise ConfigError(
                f"{entry.at('status')}: guards are for terminal statuses "
                "(completed, failed, cancelled)"
            )
        if status not in produced:
            raise ConfigError(
                f"{entry.where} is unreachable: no map entry or rule gives {status.value}"
            )
        if status in guards:
            raise ConfigError(
                f"{entry.where} is unreachable: an earlier guard is for {status.value}"
            )
        otherwise = _status(entry.get("otherwise", "processing"), entry.at("otherwise"))
        if otherwise.terminal:
            raise ConfigError(
                f"{entry.at('otherwise')} must be queued or processing: a guard "
                "that fails leaves the job running"
            )
        guards[status] = Guard(require=entry.condition("require"), otherwise=otherwise)
    return guards


def _progress(table: _Table) -> Progress:
    kind = table.choice("kind", PROGRESS_KINDS, "none")
    names: tuple[str, ...] = ()
    if kind == "buckets":  # done names buckets (keys of the object), not paths
        names = _names(table, "done")
        done: tuple[Path, ...] = ()
    else:
        done = table.paths("done")
    total = table.paths("total")
    buckets = table.path("buckets", None)
    value = table.path("value", None)
    needs = {
        "counts": ("done",),
        "buckets": ("buckets", "done"),
        "fraction": ("value",),
        "percent": ("value",),
        "none": (),
    }[kind]
    for key in needs:
        if key not in table.data:
            raise ConfigError(f"{table.where} kind = {kind!r} needs {key}")
    allowed = {
        "counts": {"done", "total"},
        "buckets": {"buckets", "done"},
        "fraction": {"value"},
        "percent": {"value"},
        "none": set(),
    }[kind]
    extra = sorted(
        k for k in ("done", "total", "buckets", "value") if k in table.data and k not in allowed
    )
    if extra:
        raise ConfigError(f"{table.where}: {', '.join(extra)} is not read with kind = {kind!r}")
    return Progress(
        kind=kind,
        done=done,
        total=total,
        buckets=buckets,
        bucket_names=names,
        value=value,
        total_may_grow=table.flag("total_may_grow", False),
    )


def _names(table: _Table, key: str) -> tuple[str, ...]:
    value = table.get(key)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{table.at(key)} must be a list of names, got {_shown(value)}")
    return tuple(value)


def _results(table: _Table, names: frozenset[str]) -> Results:
    source = table.choice("source", RESULT_SOURCES, "none")
    fields = _fields(table)
    placeholders = frozenset(fields[0]) if fields else frozenset()
    get = None
    if "get" in table.data:
        get = compile_template(table.get("get"), table.at("get"), names | placeholders)
        _naming_the_job(get, table.at("get"), placeholders)
    needs = {"url": "url", "request": "get"}.get(source)
    if needs is not None and needs not in table.data:
        raise ConfigError(f"{table.where} source = {source!r} needs {needs}")
    for key, used in (
        ("url", source == "url"),
        ("get", source == "request"),
        ("fields", source == "request"),
    ):
        if key in table.data and not used:
            raise ConfigError(f"{table.at(key)} is not read with source = {source!r}")
    next_kind = table.choice("next", NEXT_KINDS, "none")
    next_path = table.path("next_path", None)
    if next_kind in ("url", "cursor") and next_path is None:
        raise ConfigError(f"{table.where} next = {next_kind!r} needs next_path")
    if next_kind not in ("url", "cursor") and next_path is not None:
        # Left alone, only the first page would be read, without a word.
        raise ConfigError(
            f'{table.at("next_path")} is read only with next = "url" (a next page\'s URL '
            f'is there) or next = "cursor" (a token sent back); this table has next = '
            f"{next_kind!r}"
        )
    if source == "inline" and "format" in table.data:
        raise ConfigError(
            f"{table.at('format')} is not read with source = 'inline': the entries are in the "
            "job's JSON answer"
        )
    cursor = table.text("cursor_param", None)
    if (cursor is None) != (next_kind != "cursor"):
        raise ConfigError(
            f'{table.where}: cursor_param goes with next = "cursor" (the query '
            "parameter the next page's token is sent in)"
        )
    items = table.path("items", None)
    return Results(
        source=source,
        items=None if items is None or items.is_current else items,
        url=table.path("url", None),
        get=get,
        fields=fields,
        format=table.choice("format", ("json", "jsonl"), "json"),
        next=next_kind,
        next_path=next_path,
        cursor_param=cursor,
    )


def _fields(table: _Table) -> tuple[Mapping[str, Path], ...]:
    """``fields``: one table of placeholders, or a list of them (a request each, in turn)."""
    value = table.get("fields", None)
    if value is None:
        return ()
    where = table.at("fields")
    several = isinstance(value, list | tuple)
    if several and not value:
        raise ConfigError(f"{where} is an empty list: give one table of paths per request")
    tables = [
        _Table(item, f"{where}[{index}]" if several else where, None)
        for index, item in enumerate(value if several else [value])
    ]
    first = frozenset(tables[0].data)
    for other in tables[1:]:
        if frozenset(other.data) != first:
            raise ConfigError(
                f"{other.where} fills {', '.join(sorted(map(str, other.data))) or 'nothing'} "
                f"where {tables[0].where} fills {', '.join(sorted(first)) or 'nothing'}: each "
                "table fills the same placeholders of get"
            )
    return tuple(
        {str(name): compile_path(path, f"{sub.where} {name}") for name, path in sub.data.items()}
        for sub in tables
    )


def _entries(table: _Table | None, *, stream: bool) -> dict[str, Entry]:
    if table is None:
        return {}
    kinds = ENTRY_KINDS if stream else tuple(k for k in ENTRY_KINDS if k != "done")
    entries: dict[str, Entry] = {}
    for name, value in table.data.items():
        where = f"{table.where} {name}"
        if isinstance(value, str):
            value = {"kind": value}
        entry = _Table(value, where, VOCABULARY["events"])
        kind = entry.choice("kind", kinds)
        error = entry.path("error", None)
        ident = entry.path("id", None)
        if error is not None and kind not in ("failed", "page", "page_failed"):
            raise ConfigError(
                f"{entry.at('error')} is read only for failed, page (when it "
                "failed) and page_failed"
            )
        if (ident is not None) != (kind in ("page", "page_failed")):
            raise ConfigError(
                f"{where}: page and page_failed need id (the path of the page's "
                "identity, its URL say), and other kinds take none"
            )
        failed_when = entry.condition("failed_when", None)
        if failed_when is not None and kind != "page":
            raise ConfigError(
                f'{entry.at("failed_when")} is read only for kind = "page" (a '
                "page that failed is a page_failed event)"
            )
        entries[str(name)] = Entry(kind=kind, error=error, id=ident, failed_when=failed_when)
    return entries


def _stream(table: _Table | None, names: frozenset[str]) -> Stream | None:
    if table is None:
        return None
    if ("url" in table.data) == ("url_from" in table.data):
        raise ConfigError(
            f"{table.where} needs url (a request template) or url_from (the "
            "path of the stream's URL in the job), one of them"
        )
    url = None
    if "url" in table.data:
        url = compile_template(table.get("url"), table.at("url"), names)
        _naming_the_job(url, table.at("url"))
    events = _entries(table.table("events", None), stream=True)
    if not events:
        raise ConfigError(
            f"{table.where} needs events: the event names it sends and what each means"
        )
    done = table.table("done", VOCABULARY["stream.done"])
    done_map: dict[str, JobStatus] = {}
    done_path = None
    if done is not None:
        done_path = done.path("path")
        outcomes = done.get("map")
        if not isinstance(outcomes, Mapping) or not outcomes:
            raise ConfigError(
                f"{done.at('map')} must be a table of values and the terminal "
                f"status each means, got {_shown(outcomes)}"
            )
        for value, word in outcomes.items():
            status = _status(word, f"{done.at('map')}.{value}")
            if not status.terminal:
                raise ConfigError(
                    f"{done.at('map')}.{value} must be completed, failed or "
                    "cancelled: a done frame ends the job"
                )
            done_map[str(value)] = status
    uses_done = any(e.kind == "done" for e in events.values())
    if uses_done != (done is not None):
        raise ConfigError(
            f'{table.where}: an event of kind "done" and the table [stream.done] '
            "(which says how it ended) go together"
        )
    return Stream(
        url=url,
        url_from=table.path("url_from", None),
        event_path=table.path("event_path", None),
        events=events,
        done_path=done_path,
        done_map=done_map,
        resume=table.flag("resume", False),
    )


def _webhook(table: _Table | None, names: frozenset[str]) -> Webhook | None:
    if table is None:
        return None
    payload = table.choice("payload", ("object", "thin"), "object")
    events = _entries(table.table("events", None), stream=False)
    header = _header_name(table, "event_header")
    event_path = table.path("event_path", None)
    if events and header is None and event_path is None:
        raise ConfigError(
            f"{table.where}: events needs event_header or event_path, where a "
            "delivery names its event"
        )
    if not events and (payload == "thin" or header is not None or event_path is not None):
        raise ConfigError(
            f"{table.where} needs events: the event names it receives and what "
            "each means (others are acknowledged and ignored)"
        )
    if payload == "thin" and any(e.kind == "status" for e in events.values()):
        raise ConfigError(
            f'{table.where}: payload = "thin" carries no job, so no event can be of kind "status"'
        )
    only = table.table("only", None)
    filters = (
        ()
        if only is None
        else tuple(
            (compile_path(path, f"{only.where} {path!r}"), _only_value(only, path, value, names))
            for path, value in only.data.items()
        )
    )
    delivery_header = _header_name(table, "delivery_header")
    root = table.path("root", None)
    return Webhook(
        scheme=_scheme(table),
        event_header=None if header is None else header.lower(),
        event_path=event_path,
        events=events,
        job_id=table.path("job_id"),
        delivery_header=None if delivery_header is None else delivery_header.lower(),
        delivery_path=table.path("delivery_path", None),
        payload=payload,
        root=None if root is None or root.is_current else root,
        only=filters,
    )


def _is_header_name(name: str) -> bool:
    """Letters, digits, ``-`` and ``_``: what the header names of APIs are made of."""
    return bool(name) and all(c.isalnum() or c in "-_" for c in name)


def _header_name(table: _Table, key: str) -> str | None:
    # No delivery carries a header named otherwise: every one would read as unnamed.
    name: str | None = table.text(key, None)
    if name is not None and not _is_header_name(name):
        raise ConfigError(f"{table.at(key)} must be a header name (X-Event-Type), got {name!r}")
    return name


def _scheme(table: _Table) -> str:
    # Checked here, not when the receiver starts: there the name would be "the provider's
    # webhook_scheme", which no file spells, and `jobwatch doctor` would not see it.
    scheme = table.text("scheme", "standard-webhooks")
    schemes = installed("scheme")
    if scheme not in schemes:
        raise ConfigError(
            f"{table.at('scheme')}: unknown scheme {scheme!r}; the installed schemes are "
            f"{', '.join(schemes)} (entry point group jobwatch.schemes): check the spelling, "
            "or install the package that provides it"
        )
    return scheme  # type: ignore[no-any-return]


def _only_value(table: _Table, path: object, value: object, names: frozenset[str]) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{table.where} {path!r} must be text, got {_shown(value)}")
    unknown = sorted(placeholders(value) - (names - {JOB_ID}))
    if unknown:
        raise ConfigError(
            f"{table.where} {path!r}: {value!r} names {', '.join(unknown)}; only "
            "variables may be named here"
        )
    return value


def _rate_limit(table: _Table) -> RateLimits:
    signals = table.get("signals", list(SIGNALS))
    if not isinstance(signals, list) or not all(s in SIGNALS for s in signals):
        raise ConfigError(
            f"{table.at('signals')} must be a list of {', '.join(SIGNALS)}, got {_shown(signals)}"
        )
    wait = table.get("wait", None)
    if wait is not None and (
        isinstance(wait, bool)
        or not isinstance(wait, int | float)
        or not math.isfinite(wait)
        or wait < 0
    ):
        raise ConfigError(
            f"{table.at('wait')} must be a number of seconds >= 0, got {_shown(wait)}"
        )
    return RateLimits(
        statuses=table.statuses("statuses", (429,)),
        signals=tuple(signals),
        when=table.condition("when", None),
        wait=None if wait is None else float(wait),
    )


def _errors(table: _Table) -> Errors:
    message = table.paths("message") or tuple(compile_path(p, "default") for p in _MESSAGES)
    return Errors(message=message, gone=table.statuses("gone", (404, 410)))
