"""HTTP as providers see it: the request a provider asks a transport to make, the response
it reads, and its verdict on that response (retry, wait, give up) with the rate limit it saw."""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from typing import Any

import attrs

__all__ = ["MAX_WAIT", "Classification", "Outcome", "RateLimit", "Request", "Response"]


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
