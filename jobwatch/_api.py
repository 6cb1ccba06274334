"""Budgeted access to one job API: every request a Watcher makes goes through :class:`APIClient`.

It owns the HTTP client and the request budget; it makes a provider's :class:`Request` and hands
back a :class:`Response` whatever its status, and translates httpx's failures into
:class:`~jobwatch.NetworkError`.
"""

from __future__ import annotations

import logging

import anyio
import httpx

from ._budget import RequestBudget
from ._config import Config, redact_url
from ._errors import NetworkError, WatcherClosed
from ._values import Request, Response
from .abc import Provider

__all__ = ["APIClient"]

log = logging.getLogger("jobwatch")

#: Tries of a one-off request (a reconcile, a result page) before its error is raised.
ATTEMPTS = 4


class APIClient:
    """One API's HTTP client and the request budget shared by everything a Watcher asks.

    ``open`` and ``aclose`` bracket its use; ``requests`` and ``rate_limited`` count what it
    did, for ``Watcher.statistics()``.
    """

    def __init__(self, config: Config, provider: Provider, budget: RequestBudget, *,
                 base_url: str, http_transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = config
        self.provider = provider
        self.budget = budget
        self.base_url = base_url
        self._http_transport = http_transport
        self._http: httpx.AsyncClient | None = None
        self.requests = 0
        self.rate_limited_count = 0

    def open(self) -> None:
        """Create the HTTP client."""
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=dict(self.provider.headers()),
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
        """Make one budgeted request relative to the base URL; any status comes back."""
        if self._http is None:
            raise WatcherClosed("the Watcher is not running; use it inside `async with`")
        await self.spend()
        sent_at = anyio.current_time()
        try:
            reply = await self._http.request(
                request.method, request.path, params=dict(request.params),
                headers=dict(request.headers),
            )
        except httpx.HTTPError as exc:
            raise NetworkError(
                f"{request.method} {redact_url(self.base_url)}{request.path} failed: "
                f"{type(exc).__name__}: {exc}; jobwatch retries with backoff"
            ) from exc
        response = Response(status=reply.status_code, headers=dict(reply.headers),
                            body=reply.content, sent_at=sent_at)
        if response.status == 429:
            self.rate_limited(getattr(self.provider.error_for(response), "retry_after", None))
        return response

    def rate_limited(self, retry_after: float | None) -> None:
        """Pause the budget for ``retry_after`` seconds: every caller waits."""
        self.rate_limited_count += 1
        if retry_after is not None:
            self.budget.pause(anyio.current_time() + retry_after)

    async def request_with_retry(self, request: Request) -> Response:
        """A 2xx response to ``request``, trying a few times; the API's error otherwise."""
        for attempt in range(ATTEMPTS):
            try:
                response = await self.request(request)
            except NetworkError:
                if attempt + 1 == ATTEMPTS:
                    raise
                await anyio.sleep(2.0**attempt)
                continue
            if response.status < 300:
                return response
            error = self.provider.error_for(response)
            if response.status != 429 and response.status < 500 or attempt + 1 == ATTEMPTS:
                raise error
            await anyio.sleep(0 if response.status == 429 else 2.0**attempt)
        raise AssertionError("unreachable")
