"""A transport host for testing one transport on its own, without a Watcher."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import anyio
import httpx

from .._api import APIClient
from .._budget import RequestBudget
from .._config import Config
from .._errors import JobwatchError
from .._events import JobEvent
from .._pipeline import Pipeline
from ..abc import Provider, Request, Response, Store, TransportHost
from ..stores.memory import MemoryStore

__all__ = ["ScriptedHost"]


class ScriptedHost(TransportHost):
    """Runs one transport as a Watcher would, and records what it did.

    Requests go to ``config``'s base URL (or through ``http_transport``, an
    ``httpx.MockTransport`` say) within a budget of ``rpm`` requests a minute; delivered events
    go through the same dedup and ordering pipeline as a Watcher's, into :attr:`delivered`.
    The test decides what is watched (:meth:`watch`); :attr:`ended` holds the jobs a transport
    ended, with their errors, and :attr:`counts` its counters::

        host = ScriptedHost(config, provider)
        async with host, anyio.create_task_group() as tg:
            await tg.start(transport.run, host)
            host.watch(transport, job_id)
            final = await host.final(job_id)
    """

    def __init__(
        self,
        config: Config,
        provider: Provider,
        *,
        store: Store | None = None,
        rpm: int = 6000,
        http_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self.provider = provider
        self.store = store or MemoryStore()
        self._api = APIClient(
            config,
            provider,
            RequestBudget(rpm),
            base_url=provider.resolve_base_url(config),
            http_transport=http_transport,
        )
        self.delivered: list[JobEvent] = []
        self.ended: dict[str, JobwatchError] = {}
        self.counts: dict[tuple[str, str], int] = defaultdict(int)
        self.reconciled: list[str] = []
        self._watching: set[str] = set()
        self._arrived = anyio.Event()
        self._pipeline = Pipeline(self.store, dedup_ttl=config.dedup_ttl, dispatch=self._arrive)
        self._pipeline.ready.set()

    async def __aenter__(self) -> ScriptedHost:
        await self.store.open()
        self._api.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        with anyio.CancelScope(shield=True):
            await self._api.aclose()
            await self.store.aclose()

    @property
    def requests(self) -> int:
        """Requests taken from the budget so far (stream openings included)."""
        return self._api.requests

    async def _arrive(self, event: JobEvent) -> None:
        self.delivered.append(event)
        self._arrived.set()

    def watch(self, transport: Any, job_id: str) -> None:
        """Watch ``job_id``: it is in :meth:`watched`, and ``transport`` is told."""
        self._watching.add(job_id)
        transport.watch(job_id)

    async def final(self, job_id: str) -> JobEvent:
        """Wait for the terminal event of ``job_id`` (use a deadline around it)."""
        while True:
            for event in self.delivered:
                if event.job_id == job_id and event.terminal:
                    return event
            if job_id in self.ended:
                raise self.ended[job_id]
            self._arrived = anyio.Event()
            await self._arrived.wait()

    # -- TransportHost ---------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return self._api.base_url

    @property
    def budget(self) -> RequestBudget:  # type: ignore[override]
        return self._api.budget

    async def request(self, request: Request) -> Response:
        return await self._api.request(request)

    async def spend(self) -> None:
        await self._api.spend()

    def rate_limited(self, retry_after: float | None) -> None:
        self._api.rate_limited(retry_after)

    async def deliver(
        self,
        events: Sequence[JobEvent],
        *,
        authoritative: bool = False,
        as_of: float | None = None,
        claim: tuple[str, float] | None = None,
    ) -> None:
        await self._pipeline.deliver(events, authoritative=authoritative, as_of=as_of, claim=claim)

    def count(self, transport: str, name: str, n: int = 1) -> None:
        self.counts[transport, name] += n

    async def reconcile(self, job_ids: Iterable[str], *, reason: str) -> None:
        for job_id in job_ids:
            self.reconciled.append(job_id)
            response = await self._api.request_with_retry(self.provider.status_request(job_id))
            _, events = self.provider.decode_status(job_id, response, None, source="poll")
            await self.deliver(events, authoritative=True, as_of=response.sent_at)

    def watched(self) -> frozenset[str]:
        return frozenset(
            j
            for j in self._watching
            if j not in self.ended and not any(e.job_id == j and e.terminal for e in self.delivered)
        )

    def end_job(self, job_id: str, error: JobwatchError) -> None:
        self.ended[job_id] = error
        self._arrived.set()

    def subscribe(
        self, callback: Callable[[JobEvent], Any], *, kinds: Any = None, job_id: str | None = None
    ) -> Any:
        raise NotImplementedError("a ScriptedHost has no subscribers; read host.delivered")
