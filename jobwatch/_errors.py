"""The one error tree of jobwatch.

Every error jobwatch raises derives from :class:`JobwatchError`, and every message says what
went wrong and what to do about it::

    JobwatchError
    ├── ConfigError                 a configuration file, mapping or variable is wrong
    ├── PluginError                 an entry point is missing, broken or of the wrong type
    ├── TransportError              talking to the API failed
    │   ├── NetworkError            connection refused, reset, timed out
    │   ├── StreamError             an event stream broke its protocol
    │   └── APIError                the API answered with an error envelope
    │       ├── AuthenticationError 401: the API key was refused
    │       ├── JobNotFound         404: the API does not know the job
    │       └── RateLimited         the API's request budget is spent (429, or as the provider says)
    ├── InvalidJobId                a job id is empty, too long or not text (also a ValueError)
    ├── DecodeError                 a payload is not what the provider's wire format says
    ├── WebhookVerificationError    a webhook delivery failed verification (carries its HTTP status)
    ├── WatchTimeout                a wait ended before the job reached a terminal state
    └── WatcherClosed               a closed Watcher was used again

Errors of httpx are translated into this tree at the transport seam; they never
leak raw to the application.
"""

from __future__ import annotations

__all__ = [
    "APIError",
    "AuthenticationError",
    "ConfigError",
    "DecodeError",
    "InvalidJobId",
    "JobNotFound",
    "JobwatchError",
    "NetworkError",
    "PluginError",
    "RateLimited",
    "StreamError",
    "TransportError",
    "WatchTimeout",
    "WatcherClosed",
    "WebhookVerificationError",
]


class JobwatchError(Exception):
    """Base class of every error raised by jobwatch."""


class ConfigError(JobwatchError):
    """The configuration is invalid; the message names the table and key to fix."""


class PluginError(JobwatchError):
    """An entry point could not be resolved, imported or used."""


class TransportError(JobwatchError):
    """Talking to the API failed."""


class NetworkError(TransportError):
    """The connection to the API failed (refused, reset, timed out)."""


class StreamError(TransportError):
    """An event stream broke its protocol (wrong content type, malformed frame, silence)."""


class APIError(TransportError):
    """The API answered with an error.

    ``status`` is the HTTP status, ``code`` the API's machine-readable error code (as its
    provider reads it from the body), ``retry_after`` the seconds the API asked to wait, if any.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: str | None = None,
        retry_after: float | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.retry_after = retry_after
        self.request_id = request_id

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed later (429 and 5xx)."""
        return self.status == 429 or self.status >= 500


class AuthenticationError(APIError):
    """The API refused the credentials (HTTP 401)."""


class JobNotFound(APIError):
    """The API does not know the job (HTTP 404)."""


class RateLimited(APIError):
    """The API's request budget is spent; ``retry_after`` says for how long.

    A 429 usually, but any answer a provider classifies as rate limited (GitHub's 403s, say).
    jobwatch waits these out itself; one reaches the application only when the wait would
    outlast its deadline. A provider's ``error_for`` that returns one makes the answer a rate
    limit whatever its status.
    """


class InvalidJobId(JobwatchError, ValueError):
    """A job id that names no job: empty, too long, or with control characters."""


class DecodeError(JobwatchError):
    """A payload does not match the provider's wire format; nothing was delivered from it."""


class WebhookVerificationError(JobwatchError):
    """A webhook delivery failed verification; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, *, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


class WatchTimeout(JobwatchError, TimeoutError):
    """A wait ended before the job reached a terminal state."""

    def __init__(self, message: str, *, job_id: str, last_event: object | None = None) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.last_event = last_event


class WatcherClosed(JobwatchError):
    """The Watcher was used after it was closed; create a new one."""


def leaves(exc: BaseException) -> list[BaseException]:
    """The errors inside (nested) exception groups, or ``[exc]`` for a plain one."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]
