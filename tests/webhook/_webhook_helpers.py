"""Shared by the webhook tests: configurations, signed Reader deliveries, a running receiver."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import attrs
import httpx

import jobwatch
from jobwatch.abc import Store
from jobwatch.providers._reader_scheme import ReaderScheme
from jobwatch.stores.memory import MemoryStore
from jobwatch.transports.webhook import WebhookTransport

SECRET = "whk-secret-for-tests-0123456789"
PATH = "/hooks/reader"


def config(**webhook: Any) -> jobwatch.Config:
    table = {"secrets": [SECRET], **webhook}
    return jobwatch.Config.from_mapping(
        {
            "jobwatch": {
                "api_key": "rdr_sim",
                "transport": "webhook",
                "store": "memory",
                "safety_poll": 0,
                "webhook": table,
            }
        }
    )


def delivery(
    event: str = "job.completed",
    payload: Mapping[str, Any] | None = None,
    *,
    delivery_id: str = "d-1",
    secret: str = SECRET,
    now: float | None = None,
    body: bytes | None = None,
) -> tuple[dict[str, str], bytes]:
    """Headers and body of a Reader delivery signed with ``secret`` at ``now``."""
    if body is None:
        data = (
            payload
            if payload is not None
            else {"jobId": "job_1", "status": "completed", "completed": 3, "total": 3}
        )
        body = json.dumps(data).encode()
    headers = ReaderScheme([secret]).sign(body, now=time.time() if now is None else now)
    headers.update(
        {
            "content-type": "application/json",
            "x-reader-event": event,
            "x-reader-delivery": delivery_id,
        }
    )
    return headers, body


@attrs.define
class Running:
    watcher: jobwatch.Watcher
    transport: WebhookTransport
    events: list[jobwatch.JobEvent]

    def client(self) -> httpx.AsyncClient:
        """A client talking to the receiver's ASGI app in-process."""
        app: Any = self.watcher.asgi_app()
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hook")


@asynccontextmanager
async def receiving(
    cfg: jobwatch.Config | None = None, *, store: Store | None = None
) -> AsyncIterator[Running]:
    """A real Watcher with the webhook transport, collecting every dispatched event."""
    cfg = cfg or config()
    transport = WebhookTransport.from_config(cfg)
    watcher = jobwatch.Watcher(cfg, transports=[transport], store=store or MemoryStore())
    events: list[jobwatch.JobEvent] = []
    watcher.subscribe(events.append)
    async with watcher:
        yield Running(watcher, transport, events)


async def until(predicate: Any, within: float = 5.0) -> None:
    """Wait (checking every few ms) until ``predicate()`` is true."""
    import anyio

    with anyio.fail_after(within):
        while not predicate():  # noqa: ASYNC110 - the predicate has no event to wait on
            await anyio.sleep(0.005)
