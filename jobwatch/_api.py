"""Budgeted access to one job API: every request a Watcher makes goes through :class:`APIClient`.

It owns the HTTP client and the request budget; it makes a provider's :class:`Request`, asks
the provider to classify the answer (``Provider.classify``) and obeys the verdict for everyone:
a rate-limited answer pauses every caller, and the rate-limit headers of every answer tighten
the budget. It translates httpx's failures into :class:`~jobwatch.NetworkError`, and knows no
API's status codes.
"""

from __future__ import annotations

import logging
import ssl
import time

import anyio
import httpx

from ._budget import RequestBudget
from ._config import Config, redact_url
from ._errors import JobwatchError, NetworkError, RateLimited, WatcherClosed
from ._http import Classification, Outcome, Request, Response
from ._redact import redact
from .abc import Provider

__all__ = ["APIClient"]

log = logging.getLogger("jobwatch")

#: Tries of a one-off request (a reconcile, a result page) that fails for a passing reason.
ATTEMPTS = 4
#: How long a one-off request waits out rate limits before it gives up, seconds.
RATE_LIMIT_DEADLINE = 3600.0


def user_agent() -> str:
    """``jobwatch/<version>``: the User-Agent of every request jobwatch makes."""
    from . import __version__  # imported by the time a request is made; not at module load

    return f"jobwatch/{__version__}"


def describe_http_error(exc: BaseException) -> str:
    """``Name: what went wrong`` for an httpx failure, never ``Name:`` with nothing after it.

    httpx's message is sometimes empty (a TLS handshake with a server that speaks plain HTTP,
    under trio): the first error in its chain that says something is used instead.
    """
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ssl.SSLError):
            return (
                f"{type(exc).__name__}: TLS failed ({cause.reason or cause}); if the "
                "server speaks plain HTTP, base_url must begin with http://"
            )
        if str(cause):
            return f"{type(exc).__name__}: {redact(str(cause))}"
        cause = cause.__cause__ or cause.__context__
    return f"{type(exc).__name__} (no detail given)"


def repeated_prefix(base_url: str, path: str) -> str | None:
    """The leading segments of a request ``path`` that ``base_url``'s own path ends with
    (``/v1`` for ``https://api.example.com/v1`` and ``/v1/jobs/x``), else None.

    Such a base_url names the API's version prefix, which the provider adds again: requests
    go to ``/v1/v1/...`` and every job is "not found".
    """
    base = [part for part in httpx.URL(base_url).path.split("/") if part]
    parts = [part for part in path.split("/") if part]
    for n in range(min(len(base), len(parts)), 0, -1):
        if base[-n:] == parts[:n]:
            return "/" + "/".join(parts[:n])
    return None


def missing_prefix(base_url: str, default_base_url: str | None) -> str | None:
    """The path of the provider's own base URL (``/v1`` for ``https://api.openai.com/v1``)
    that ``base_url`` lacks, else None.

    Such a base_url asks for the API's paths without their version prefix: every job is
    "not found".
    """
    expected = httpx.URL(default_base_url).path.strip("/") if default_base_url else ""
    own = httpx.URL(base_url).path.strip("/")
    if not expected or own == expected or own.endswith(f"/{expected}"):
        return None
    return f"/{expected}"


class APIClient:
    """One API's HTTP client and the request budget shared by everything a Watcher asks.

    ``open`` and ``aclose`` bracket its use; ``requests`` and ``rate_limited_count`` count what
    it did, for ``Watcher.statistics()``.
    """

    def __init__(
        self,
        config: Config,
        provider: Provider,
        budget: RequestBudget,
        *,
        base_url: str,
        http_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self.provider = provider
        self.budget = budget
        self.base_url = base_url
        self._http_transport = http_transport
        self._http: httpx.AsyncClient | None = None
        self.requests = 0
        self.rate_limited_count = 0
        #: Requests that failed to get any answer since the last answer, and the last such
        #: failure; ``answered``: whether the API ever answered (a wrong base_url never does).
        self.failures_in_a_row = 0
        self.last_failure: NetworkError | None = None
        self.answered = False

    def open(self) -> None:
        """Create the HTTP client."""
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"user-agent": user_agent(), **self.provider.headers()},
            timeout=httpx.Timeout(30.0, connect=10.0),
            transport=self._http_transport,
        )

    async def aclose(self) -> None:
        """Close the HTTP client."""
        if self._http is not None:
            await self._http.aclose()

    async def spend(self) -> None:
        """Take one request from the budget without making it (opening a stream, say)."""
        await self.budget.acquire()
        self.requests += 1

    async def request(self, request: Request) -> Response:
        """Make one budgeted request relative to the base URL; any status comes back.

        A rate-limited answer (as the provider classifies it) has paused every caller by the
        time it returns.
        """
        response, _ = await self._exchange(request)
        return response

    async def _exchange(self, request: Request) -> tuple[Response, Classification]:
        if self._http is None:
            raise WatcherClosed("the Watcher is not running; use it inside `async with`")
        ticket = await self.budget.acquire()
        self.requests += 1
        sent_at = time.time()  # wall clock: compared with what other processes recorded
        try:
            reply = await self._http.request(
                request.method,
                request.path,
                params=dict(request.params),
                headers=dict(request.headers),
            )
        except httpx.HTTPError as exc:
            self.failures_in_a_row += 1
            self.last_failure = NetworkError(
                f"{request.method} {redact_url(self.base_url)}{request.path} failed: "
                f"{describe_http_error(exc)}; jobwatch retries with backoff"
            )
            raise self.last_failure from exc
        self.failures_in_a_row, self.answered = 0, True
        response = Response(
            status=reply.status_code,
            headers=dict(reply.headers),
            body=reply.content,
            sent_at=sent_at,
        )
        verdict = self.provider.classify(response)
        limited = verdict.outcome is Outcome.RATE_LIMITED
        self.budget.observe(anyio.current_time(), ticket, verdict.rate_limit, limited=limited)
        if limited:
            self.rate_limited(verdict.wait)
        return response, verdict

    def rate_limited(self, retry_after: float | None) -> None:
        """Pause the budget for ``retry_after`` seconds (None: a backoff): every caller waits."""
        self.rate_limited_count += 1
        now = anyio.current_time()
        until = self.budget.rate_limited(now, retry_after)
        log.info("the API is rate limiting: every request waits %.1f s", until - now)

    async def fetch(
        self, request: Request, *, deadline: float = RATE_LIMIT_DEADLINE
    ) -> tuple[Response, Classification]:
        """The answer that settles ``request``, and its verdict: fine, gone or fatal.

        Rate-limited answers are waited out (every caller pauses) for up to ``deadline``
        seconds; passing failures and network errors are tried :data:`ATTEMPTS` times with
        backoff. When those run out the last error is raised.
        """
        give_up = anyio.current_time() + deadline
        failures = 0
        while True:
            try:
                response, verdict = await self._exchange(request)
            except NetworkError:
                failures += 1
                if failures == ATTEMPTS:
                    raise
                await anyio.sleep(2.0 ** (failures - 1))
                continue
            if verdict.outcome is Outcome.RATE_LIMITED:
                # The pause is in the budget: the next try waits for it.
                if max(self.budget.paused_until, anyio.current_time()) >= give_up:
                    raise self._still_limited(response, deadline)
                continue
            if verdict.outcome is Outcome.RETRY:
                failures += 1
                if failures == ATTEMPTS:
                    raise self.provider.error_for(response)
                await anyio.sleep(max(2.0 ** (failures - 1), verdict.wait or 0.0))
                continue
            return response, verdict

    async def request_with_retry(self, request: Request) -> Response:
        """A fine answer to ``request``, retried as :meth:`fetch` does; the API's error when
        the answer is that the job is gone, or another that trying again cannot help."""
        response, verdict = await self.fetch(request)
        if verdict.outcome is not Outcome.FINE:
            raise self.provider.error_for(response)
        return response

    def _still_limited(self, response: Response, deadline: float) -> JobwatchError:
        error = self.provider.error_for(response)
        if isinstance(error, RateLimited):
            return error
        return RateLimited(
            f"{error}; still rate limited after waiting up to {deadline:g} s",
            status=response.status,
            retry_after=self.budget.paused_until - anyio.current_time(),
        )
