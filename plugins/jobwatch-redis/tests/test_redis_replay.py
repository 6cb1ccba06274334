"""A captured delivery replayed to another receiver of the fleet is a duplicate there.

Each receiver claims the identity of the signed content it recorded in Redis, beside the
dedup keys: a replay to any receiver sharing the prefix is answered ``duplicate`` and
dispatches nothing, even once the job has moved on to a new run.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx
import pytest
from jobwatch_redis import RedisOptions, RedisStore

import jobwatch
from jobwatch.abc import JobState
from jobwatch.providers._reader_scheme import ReaderScheme
from jobwatch.transports.webhook import WebhookTransport

pytestmark = [pytest.mark.redis, pytest.mark.anyio]

SECRET = "whsec-replay-test-secret"
PAGE = {"jobId": "job_9", "url": "https://example.com/p1", "markdown": "# p1"}


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


@asynccontextmanager
async def _receiver(
    url: str, prefix: str, owner: str, events: list[jobwatch.JobEvent]
) -> AsyncIterator[httpx.AsyncClient]:
    cfg = _config()
    store = RedisStore(RedisOptions(url=url, prefix=prefix, owner=owner))
    watcher = jobwatch.Watcher(cfg, transports=[WebhookTransport.from_config(cfg)], store=store)
    watcher.subscribe(events.append)
    async with (
        watcher,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=watcher.asgi_app()), base_url="http://r"
        ) as client,
    ):
        yield client


async def test_a_replay_to_another_receiver_of_the_fleet_is_a_duplicate(
    redis_url: str, prefix: str
) -> None:
    body = json.dumps(PAGE).encode()
    headers = {
        **ReaderScheme([SECRET]).sign(body, now=time.time()),
        "content-type": "application/json",
        "x-reader-event": "job.page",
        "x-reader-delivery": "d-page",
    }
    first_events: list[jobwatch.JobEvent] = []
    other_events: list[jobwatch.JobEvent] = []
    async with (
        _receiver(redis_url, prefix, "r1", first_events) as r1,
        _receiver(redis_url, prefix, "r2", other_events) as r2,
    ):
        first = await r1.post("/hooks/reader", content=body, headers=headers)
        with anyio.fail_after(5):
            while not first_events:  # noqa: ASYNC110 - the callback sets nothing to wait on
                await anyio.sleep(0.01)
        # The job runs again (a poll saw it): a replayed page would pass for one of run 2.
        state = JobState(
            job_id="job_9", run=2, status=jobwatch.JobStatus.PROCESSING, started=True, watched=True
        )
        store = RedisStore(RedisOptions(url=redis_url, prefix=prefix, owner="setup"))
        await store.open()
        await store.put_job(state)
        await store.aclose()
        replays = [
            await r2.post(
                "/hooks/reader", content=body, headers={**headers, "x-reader-delivery": f"d-{n}"}
            )
            for n in range(3)
        ]
        await anyio.sleep(0.2)
    assert first.json() == {"ok": True, "duplicate": False}
    assert [r.json() for r in replays] == [{"ok": True, "duplicate": True}] * 3
    assert other_events == [] and len(first_events) == 1
