"""An event recorded while Redis' answer was lost is dispatched without a restart.

The commit script runs, its answer never comes back, and Redis stays away longer than
``record_deadline``: the receiver answers 503, and the sender's retry finds the event's key
held. The event sits in the receiver's inbox — and the receiver that recorded it dispatches
it once Redis answers again, whether the retry came back to it or went to another receiver.
A proxy on loopback (``redis_proxy.py``) loses the answer.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import anyio
import httpx
import pytest
import redis
from jobwatch_redis import RedisOptions, RedisStore
from jobwatch_redis._scripts import COMMIT_BATCH
from redis_proxy import RedisProxy

import jobwatch
from jobwatch.providers._reader_scheme import ReaderScheme
from jobwatch.transports.webhook import WebhookTransport

pytestmark = [pytest.mark.redis, pytest.mark.anyio]

SECRET = "whsec-adoption-test-secret"
PATH = "/hooks/reader"
KEY = "job_1:terminal#1"


@pytest.fixture
def proxy(redis_url: str) -> Iterator[RedisProxy]:
    # Loaded beforehand: the commit that loses its answer then runs at its first try.
    client = redis.Redis.from_url(redis_url)
    client.script_load(COMMIT_BATCH)
    client.close()
    own = RedisProxy()
    try:
        yield own
    finally:
        own.close()


def _commit_marker() -> bytes:
    import hashlib

    return hashlib.sha1(COMMIT_BATCH.encode()).hexdigest().encode()


class _Looked(RedisStore):
    """A Redis store that tells each of the Watcher's looks for events left undispatched."""

    def __init__(self, options: RedisOptions) -> None:
        super().__init__(options)
        self.asked = anyio.Event()  # set at the Watcher's next look at the store

    async def stranded(self) -> list[jobwatch.JobEvent]:
        asked, self.asked = self.asked, anyio.Event()
        asked.set()
        return await super().stranded()


@asynccontextmanager
async def _receiver(
    url: str, prefix: str, owner: str, events: list[jobwatch.JobEvent]
) -> AsyncIterator[tuple[httpx.AsyncClient, _Looked]]:
    cfg = jobwatch.Config.from_mapping(
        {
            "jobwatch": {
                "api_key": "rdr_sim",
                "transport": "webhook",
                "safety_poll": 0,
                "webhook": {"secrets": [SECRET], "scheme": "reader"},
            }
        }
    )
    store = _Looked(
        RedisOptions(url=url, prefix=prefix, owner=owner, record_deadline=0.5, timeout=0.3)
    )
    watcher = jobwatch.Watcher(cfg, transports=[WebhookTransport.from_config(cfg)], store=store)
    watcher.subscribe(events.append)
    async with (
        watcher,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=watcher.asgi_app()), base_url="http://r"
        ) as client,
    ):
        yield client, store


def _delivery() -> tuple[bytes, dict[str, str]]:
    body = json.dumps(
        {"jobId": "job_1", "status": "completed", "completed": 3, "total": 3}
    ).encode()
    return body, {
        **ReaderScheme([SECRET]).sign(body, now=time.time()),
        "content-type": "application/json",
        "x-reader-event": "job.completed",
        "x-reader-delivery": "d-1",
    }


async def _lose_the_answer(client: httpx.AsyncClient, proxy: RedisProxy) -> None:
    """Send the delivery while the answer to its commit is lost and Redis stays away."""
    proxy.cut_after(_commit_marker(), down_for=1.0)  # longer than record_deadline
    body, headers = _delivery()
    refused = await client.post(PATH, content=body, headers=headers)
    assert refused.status_code == 503 and proxy.cut.is_set()
    while proxy.down:  # noqa: ASYNC110 - the proxy is a thread: nothing to wait on
        await anyio.sleep(0.05)


async def _until_dispatched(events: list[jobwatch.JobEvent], store: _Looked) -> None:
    with anyio.fail_after(10):
        while not events:  # noqa: ASYNC110 - the callback sets nothing to wait on
            await anyio.sleep(0.02)
    # The next look at the store finds nothing more: a look that began after the dispatch,
    # and dispatched what it found before the one after it began. (Looks, not a sleep: a
    # loaded machine may not look within any short while, and a second dispatch would go
    # unseen.)
    for _ in range(2):
        with anyio.fail_after(10):
            await store.asked.wait()


def _inbox(redis_url: str, prefix: str, owner: str) -> int:
    client = redis.Redis.from_url(redis_url)
    try:
        return int(client.hlen(f"{prefix}:inbox:{owner}"))
    finally:
        client.close()


async def test_the_receiver_that_recorded_it_dispatches_it(
    redis_url: str, prefix: str, proxy: RedisProxy
) -> None:
    events: list[jobwatch.JobEvent] = []
    async with _receiver(proxy.url(), prefix, "r1", events) as (r1, store):
        await _lose_the_answer(r1, proxy)
        body, headers = _delivery()
        retried = await r1.post(PATH, content=body, headers=headers)  # as the sender does
        await _until_dispatched(events, store)
    assert retried.status_code == 200
    assert [e.key for e in events] == [KEY]
    assert _inbox(redis_url, prefix, "r1") == 0


async def test_it_is_dispatched_when_the_retry_goes_to_another_receiver(
    redis_url: str, prefix: str, proxy: RedisProxy
) -> None:
    first: list[jobwatch.JobEvent] = []
    other: list[jobwatch.JobEvent] = []
    async with (
        _receiver(proxy.url(), prefix, "r1", first) as (r1, store),
        _receiver(redis_url, prefix, "r2", other) as (r2, _),
    ):
        await _lose_the_answer(r1, proxy)
        body, headers = _delivery()
        retried = await r2.post(PATH, content=body, headers=headers)
        await _until_dispatched(first, store)
    assert retried.status_code == 200
    assert [e.key for e in first] == [KEY] and other == []
    assert _inbox(redis_url, prefix, "r1") == 0


async def test_without_a_retry_it_is_dispatched_all_the_same(
    redis_url: str, prefix: str, proxy: RedisProxy
) -> None:
    events: list[jobwatch.JobEvent] = []
    async with _receiver(proxy.url(), prefix, "r1", events) as (r1, store):
        await _lose_the_answer(r1, proxy)
        await _until_dispatched(events, store)
    assert [e.key for e in events] == [KEY]
