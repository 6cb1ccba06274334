"""A receiver whose lease ran out stops dispatching what another receiver may adopt.

Cut off from Redis (a network partition, or a stall) for longer than ``lease``, a receiver
still holds events in memory and in its inbox, while any receiver that starts meanwhile
adopts that inbox and dispatches it. The receiver that lost its lease must end its Watcher
before the lease runs out in Redis, with an error that says what to do, rather than dispatch
those events a second time. A proxy on loopback (``redis_proxy.py``) cuts it off.
"""

from __future__ import annotations

import json
import time

import anyio
import httpx
import pytest
import redis
from jobwatch_redis import RedisOptions, RedisStore
from redis_proxy import RedisProxy

import jobwatch
from jobwatch.providers._reader_scheme import ReaderScheme
from jobwatch.transports.webhook import WebhookTransport

pytestmark = [pytest.mark.redis, pytest.mark.anyio]

SECRET = "whsec-lease-lost-test-secret"
PATH = "/hooks/reader"
LEASE = 1.0


def _delivery(job_id: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"jobId": job_id, "status": "completed", "completed": 1, "total": 1})
    return body.encode(), {
        **ReaderScheme([SECRET]).sign(body.encode(), now=time.time()),
        "content-type": "application/json",
        "x-reader-event": "job.completed",
        "x-reader-delivery": f"d-{job_id}",
    }


def _config() -> jobwatch.Config:
    return jobwatch.Config.from_mapping(
        {
            "jobwatch": {
                "api_key": "rdr_sim",
                "transport": "webhook",
                "safety_poll": 0,
                "webhook": {"secrets": [SECRET], "scheme": "reader"},
            }
        }
    )


async def _until_lease_gone(client: redis.Redis, key: str) -> None:
    with anyio.fail_after(LEASE * 5):
        while client.exists(key):  # noqa: ASYNC110 - Redis expires it: nothing to wait on
            await anyio.sleep(0.02)


async def test_a_receiver_that_lost_its_lease_dispatches_nothing_another_adopts(
    redis_url: str, prefix: str, proxy: RedisProxy, caplog: pytest.LogCaptureFixture
) -> None:
    options = RedisOptions(
        url=proxy.url(), prefix=prefix, owner="r1", lease=LEASE, timeout=0.2, record_deadline=0.5
    )
    store = RedisStore(options)
    watcher = jobwatch.Watcher(
        _config(), transports=[WebhookTransport.from_config(_config())], store=store
    )
    gate = anyio.Event()
    handled: list[str] = []

    async def slow(event: jobwatch.JobEvent) -> None:  # the first event holds the rest back
        await gate.wait()
        handled.append(event.key)

    watcher.subscribe(slow)
    direct = redis.Redis.from_url(redis_url)
    lost: jobwatch.JobwatchError | None = None
    try:
        async with (
            watcher,
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=watcher.asgi_app()), base_url="http://r1"
            ) as client,
        ):
            for job_id in ("job_1", "job_2"):
                body, headers = _delivery(job_id)
                answer = await client.post(PATH, content=body, headers=headers)
                assert answer.status_code == 200
            proxy.partition(down_for=LEASE * 10)
            # Another receiver sees the lease gone and adopts the inbox...
            await _until_lease_gone(direct, store.keys.lease())
            adopter = RedisStore(RedisOptions(url=redis_url, prefix=prefix, owner="r2"))
            await adopter.open()
            try:
                adopted = [event.key for event in await adopter.pending()]
            finally:
                await adopter.aclose()
            assert len(adopted) == 2
            # ...while this one, its callback free again, goes on with what it held.
            gate.set()
            with anyio.fail_after(5):
                while not handled:  # noqa: ASYNC110 - the callback sets nothing to wait on
                    await anyio.sleep(0.02)
    except jobwatch.JobwatchError as exc:
        lost = exc
    finally:
        direct.close()
    assert handled == []
    assert lost is not None and type(lost).__name__ == "LeaseLost"
    message = str(lost)
    assert "'r1'" in message and "lease" in message and "restart" in message
    assert "lost its lease" in caplog.text
    # What it held is left to the receiver that adopts its inbox, once each.
    direct = redis.Redis.from_url(redis_url)
    try:
        await _until_lease_gone(direct, store.keys.lease())
    finally:
        direct.close()
    adopter = RedisStore(RedisOptions(url=redis_url, prefix=prefix, owner="r2"))
    await adopter.open()
    try:
        adopted = sorted(event.key for event in await adopter.pending())
    finally:
        await adopter.aclose()
    assert adopted == ["job_1:terminal#1", "job_2:terminal#1"]
