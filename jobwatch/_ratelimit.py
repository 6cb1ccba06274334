"""Standard HTTP rate-limit signals, read from a response: what ``Provider.classify`` builds on.

Public through :mod:`jobwatch.abc`, for any provider: :func:`parse_retry_after`,
:func:`parse_rate_limit` and :func:`classify_http`, the default classification. They are pure
functions of a :class:`~jobwatch.abc.Response`: an absolute time in a header (an HTTP-date in
``Retry-After``, a Unix time in ``x-ratelimit-reset``) is measured against the response's own
``Date`` header, so the server's clock is compared with itself and no clock is read here.
Every wait is capped (one hour by default), so that one absurd header cannot stop a Watcher
for good; values that are not numbers, negative or not finite are ignored.
"""

from __future__ import annotations

import email.utils
import math
import re
from collections.abc import Callable, Mapping

from ._errors import JobwatchError, RateLimited
from ._http import MAX_WAIT, Classification, RateLimit, Response
from ._redact import redact_url

__all__ = ["classify_http", "parse_rate_limit", "parse_retry_after"]

#: A reset value above this many seconds is a Unix time, not a number of seconds to wait.
_UNIX_TIME = 100_000_000.0
#: The leading number of a header value: ``60``, ``12.5``, or ``100`` of ``100;w=60``.
_NUMBER = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(?:[,;]|$)")
#: The commas between several values of one header, not the one inside an HTTP-date
#: (``Wed, 21 Oct 2015 07:28:00 GMT``).
_SEVERAL = re.compile(r",(?!\s*\d{1,2}\s+[A-Za-z]{3}\s)")
#: Header families that carry limit, remaining and reset, tried in order.
_FAMILIES = ("x-ratelimit-", "ratelimit-")


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:  # a provider's own Response may keep the names as the server spelt them
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value


def _number(value: str | None) -> float | None:
    match = _NUMBER.match(value) if value is not None else None
    if match is None:
        return None
    number = float(match.group(1))
    return number if math.isfinite(number) else None


def _server_time(headers: Mapping[str, str], name: str) -> float | None:
    """A header's HTTP-date as a Unix time, or None."""
    value = _header(headers, name)
    return _http_date(value) if value else None


def _http_date(text: str) -> float | None:
    """An HTTP-date as a Unix time, or None."""
    try:
        return email.utils.parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _seconds_until(when: float, headers: Mapping[str, str]) -> float | None:
    """Seconds from the response's ``Date`` to the Unix time ``when`` (None without a Date)."""
    now = _server_time(headers, "date")
    return None if now is None else max(0.0, when - now)


def _capped(seconds: float | None, cap: float) -> float | None:
    return None if seconds is None else min(seconds, cap)


def parse_retry_after(response: Response, *, cap: float = MAX_WAIT) -> float | None:
    """The seconds ``Retry-After`` asks to wait: a number of seconds or an HTTP-date.

    None when the header is absent or unreadable, or when it is a date and the response has
    no ``Date`` to measure it against; at most ``cap`` seconds. Several values (the header
    sent twice arrives as one, joined by commas): the longest of those that can be read.
    """
    value = _header(response.headers, "retry-after")
    if value is None:
        return None
    # Sent twice (an API's and a proxy's), the values arrive joined by a comma: the
    # longest is waited, so that neither is cut short.
    waits = [_retry_after(part, response.headers) for part in _SEVERAL.split(value)]
    return _capped(max((w for w in waits if w is not None), default=None), cap)


def _retry_after(value: str, headers: Mapping[str, str]) -> float | None:
    """Seconds one ``Retry-After`` value asks to wait: a number, or an HTTP-date."""
    if _NUMBER.fullmatch(value.strip()):
        return _number(value)
    when = _http_date(value.strip())
    return None if when is None else _seconds_until(when, headers)


def parse_rate_limit(response: Response, *, cap: float = MAX_WAIT) -> RateLimit | None:
    """What ``x-ratelimit-*`` (GitHub and many others) or ``ratelimit-*`` headers say.

    ``limit`` and ``remaining`` are whole numbers; ``reset`` is read as seconds to wait, or —
    when larger than any such wait could be — as a Unix time, measured against ``Date``.
    None when the response carries none of them.
    """
    headers = response.headers
    for family in _FAMILIES:
        limit, remaining, reset = (
            _number(_header(headers, family + part)) for part in ("limit", "remaining", "reset")
        )
        if limit is None and remaining is None and reset is None:
            continue
        if reset is not None and reset > _UNIX_TIME:
            reset = _seconds_until(reset, headers)
        return RateLimit(
            limit=None if limit is None or limit < 1 else int(limit),
            remaining=None if remaining is None else int(remaining),
            reset=_capped(reset, cap),
        )
    return None


def classify_http(
    response: Response,
    error_for: Callable[[Response], JobwatchError] | None = None,
    *,
    cap: float = MAX_WAIT,
) -> Classification:
    """The standard HTTP meaning of a response; ``Provider.classify`` by default.

    - 2xx: fine.
    - rate limited: any ``RateLimited`` that ``error_for`` returns; 429; 503 with
      ``Retry-After``; 401 or 403 with ``Retry-After`` or ``remaining`` 0 (GitHub's secondary
      and primary limits). The wait: the error's ``retry_after``, else ``Retry-After``, else
      the reset of a spent budget, else None (jobwatch backs off).
    - gone: 404, 410. retry: other 5xx, 408 (after ``Retry-After`` if given).
    - fatal: 401, 403 and every other answer.

    Whatever the outcome, the rate-limit headers ride along for the request budget to learn.
    """
    limits = parse_rate_limit(response, cap=cap)
    status = response.status
    if 200 <= status < 300:
        return Classification.fine(rate_limit=limits)
    error = error_for(response) if error_for is not None else None
    hint = parse_retry_after(response, cap=cap)
    spent = limits is not None and limits.remaining == 0
    if (
        isinstance(error, RateLimited)
        or status == 429
        or status == 503
        and hint is not None
        or status in (401, 403)
        and (hint is not None or spent)
    ):
        told = error.retry_after if isinstance(error, RateLimited) else None
        if told is not None and not (math.isfinite(told) and told >= 0):
            told = None
        reset = limits.reset if spent and limits is not None else None
        wait = next((w for w in (told, hint, reset) if w is not None), None)
        return Classification.rate_limited(wait=_capped(wait, cap), rate_limit=limits)
    if status in (404, 410):
        return Classification.gone(rate_limit=limits)
    if status >= 500 or status == 408:
        return Classification.retry(wait=hint, rate_limit=limits)
    return Classification.fatal(rate_limit=limits)


def redirect_note(response: Response) -> str:
    """What to say of a redirect (a 3xx answer), to add to the API's error; else ``""``.

    jobwatch follows no redirect: the API key would go along to wherever it points. A user
    whose API moved changes ``base_url``; the note says where the API pointed.
    """
    if not 300 <= response.status < 400:
        return ""
    location = " ".join((_header(response.headers, "location") or "").split())[:200]
    where = f" to {redact_url(location)}" if location else ""
    return (
        f"; a redirect{where}, which jobwatch does not follow (the API key would go along): "
        "if the API has moved, set base_url in [jobwatch] to its new address"
    )
