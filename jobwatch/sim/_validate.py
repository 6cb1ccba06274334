"""Validation of request bodies and query strings, as Reader's ``invalid_request`` issues.

Each checker takes a decoded JSON value and its path and returns a list of issues shaped like
the OpenAPI example: ``{"path": "urls.2", "code": "invalid_string", "message": "Invalid url"}``.
Unknown body fields are ignored (the official SDKs send a few fields this simulator does not
model).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "WEBHOOK_EVENTS",
    "check_read",
    "check_webhook_create",
    "check_webhook_update",
    "query_int",
]

Issue = dict[str, str]
Checker = Callable[[Any, str], list[Issue]]

WEBHOOK_EVENTS = ("job.started", "job.page", "job.completed", "job.failed", "credit.low")


def _issue(path: str, code: str, message: str) -> list[Issue]:
    return [{"path": path, "code": code, "message": message}]


def _join(path: str, key: str | int) -> str:
    return f"{path}.{key}" if path else str(key)


def is_url(value: object) -> bool:
    """Whether `value` is an absolute http(s) URL with a host."""
    if not isinstance(value, str) or len(value) > 2048 or any(c.isspace() for c in value):
        return False
    try:
        parts = urlsplit(value)
        return parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        return False


def _url(value: Any, path: str) -> list[Issue]:
    return [] if is_url(value) else _issue(path, "invalid_string", "Invalid url")


def _string(low: int = 0, high: int = 10_000) -> Checker:
    def check(value: Any, path: str) -> list[Issue]:
        if not isinstance(value, str):
            return _issue(path, "invalid_type", "Expected string")
        if not low <= len(value) <= high:
            return _issue(
                path,
                "too_small" if len(value) < low else "too_big",
                f"String must contain {low} to {high} character(s)",
            )
        return []

    return check


def _integer(low: int, high: int) -> Checker:
    def check(value: Any, path: str) -> list[Issue]:
        if type(value) is not int:
            return _issue(path, "invalid_type", "Expected integer")
        if not low <= value <= high:
            return _issue(
                path,
                "too_small" if value < low else "too_big",
                f"Number must be between {low} and {high}",
            )
        return []

    return check


def _boolean(value: Any, path: str) -> list[Issue]:
    return [] if isinstance(value, bool) else _issue(path, "invalid_type", "Expected boolean")


def _one_of(*choices: str) -> Checker:
    def check(value: Any, path: str) -> list[Issue]:
        if value in choices and isinstance(value, str):
            return []
        return _issue(path, "invalid_enum_value", f"Expected one of {', '.join(choices)}")

    return check


def _array(item: Checker, low: int = 0, high: int = 10_000) -> Checker:
    def check(value: Any, path: str) -> list[Issue]:
        if not isinstance(value, list):
            return _issue(path, "invalid_type", "Expected array")
        if not low <= len(value) <= high:
            return _issue(
                path,
                "too_small" if len(value) < low else "too_big",
                f"Array must contain {low} to {high} element(s)",
            )
        return [issue for n, element in enumerate(value) for issue in item(element, _join(path, n))]

    return check


def _string_map(value: Any, path: str) -> list[Issue]:
    if not isinstance(value, dict):
        return _issue(path, "invalid_type", "Expected object")
    return [
        issue
        for key, element in value.items()
        for issue in _string(0, 8192)(element, _join(path, key))
    ]


def _fields(spec: Mapping[str, Checker], required: tuple[str, ...] = ()) -> Checker:
    def check(value: Any, path: str) -> list[Issue]:
        if not isinstance(value, dict):
            return _issue(path, "invalid_type", "Expected object")
        issues = [
            issue
            for name in required
            if name not in value
            for issue in _issue(_join(path, name), "invalid_type", "Required")
        ]
        for name, checker in spec.items():
            if name in value:
                issues += checker(value[name], _join(path, name))
        return issues

    return check


_INLINE_WEBHOOK = _fields(
    {"url": _url, "events": _array(_one_of(*WEBHOOK_EVENTS)), "secret": _string(16, 256)},
    required=("url",),
)

_READ = _fields(
    {
        "url": _url,
        "urls": _array(_url, 1, 1000),
        "formats": _array(_one_of("markdown", "html")),
        "onlyMainContent": _boolean,
        "includeTags": _array(_string()),
        "excludeTags": _array(_string()),
        "waitForSelector": _string(),
        "timeoutMs": _integer(1000, 120_000),
        "proxyMode": _one_of("standard", "stealth", "auto"),
        "batchConcurrency": _integer(1, 20),
        "maxDepth": _integer(1, 10),
        "maxPages": _integer(1, 10_000),
        "cache": _boolean,
        "webhook": _INLINE_WEBHOOK,
    }
)


def check_read(body: Any) -> list[Issue]:
    """Issues with a ``POST /v1/read`` body (empty when it is valid)."""
    issues = _READ(body, "")
    if issues:
        return issues
    if ("url" in body) == ("urls" in body):
        return _issue("url", "invalid_union", "Provide exactly one of url or urls")
    if "urls" in body and ("maxDepth" in body or "maxPages" in body):
        return _issue(
            "maxDepth",
            "unrecognized_keys",
            "maxDepth and maxPages apply to a crawl of a single url",
        )
    return []


_WEBHOOK_FIELDS: dict[str, Checker] = {
    "url": _url,
    "name": _string(1, 100),
    "events": _array(_one_of(*WEBHOOK_EVENTS), 1),
    "secret": _string(16, 256),
    "headers": _string_map,
}


def check_webhook_create(body: Any) -> list[Issue]:
    """Issues with a ``POST /v1/webhooks`` body."""
    return _fields(_WEBHOOK_FIELDS, required=("url", "name", "events"))(body, "")


def check_webhook_update(body: Any) -> list[Issue]:
    """Issues with a ``PATCH /v1/webhooks/{id}`` body; the secret cannot be changed."""
    spec = {**_WEBHOOK_FIELDS, "active": _boolean}
    issues = _fields(spec)(body, "")
    if not issues and "secret" in body:
        return _issue(
            "secret",
            "unrecognized_keys",
            "The secret cannot be changed; delete and recreate the webhook to rotate it",
        )
    return issues


def query_int(
    query: Mapping[str, str], name: str, default: int, low: int, high: int
) -> int | list[Issue]:
    """An integer query parameter within ``[low, high]``, or the issues with it."""
    raw = query.get(name)
    if raw is None:
        return default
    text = raw.strip()
    if re.fullmatch(r"-?[0-9]{1,12}", text) is None:
        return _issue(name, "invalid_type", "Expected integer")
    value = int(text)
    if not low <= value <= high:
        return _issue(
            name,
            "too_small" if value < low else "too_big",
            f"Number must be between {low} and {high}",
        )
    return value
