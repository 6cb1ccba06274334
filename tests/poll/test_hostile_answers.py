"""What a broken or hostile API may answer to polls: every answer ends in a clear error or a
bounded backoff, and the job's end is still delivered.

The API is the fictional "runs" API of ``_runs_api``; virtual time under trio's MockClock.
"""

from __future__ import annotations

import random
from typing import Any

import anyio
import httpx
import pytest
import trio.testing
from _runs_api import RunsAPI, watcher

import jobwatch
from jobwatch.stores.memory import MemoryStore
from jobwatch.transports.poll import PollOptions, PollTransport

MOCK = [
    pytest.param(
        ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)}), id="trio-mockclock"
    )
]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", MOCK)
async def test_a_server_error_storm_of_many_hours_backs_off_and_the_end_is_delivered() -> None:
    # Ten hours of 503s with no Retry-After: well over a thousand failed polls in a row, each
    # backing off to max_interval; the run's completion is delivered once the API recovers.
    recovers = 36_000.0
    api = RunsAPI(ends={"r1": recovers})
    api.refuse = lambda n, path: (503, {}) if api.times[-1] < recovers else None
    async with watcher(api, interval=1.0, max_interval=30.0) as w:
        final = await w.wait("r1", timeout=recovers + 3600)
    assert final.kind == "completed"
    failed = api.statuses.count(503)
    assert failed > 1024
    assert api.times[-1] - recovers <= 30.0
    # max_interval bounds the backoff; "equal jitter" keeps each gap at least half of it
    assert failed <= recovers / 15.0 + 10


def reader_watcher(handler: Any) -> jobwatch.Watcher:
    """A Watcher of Reader through ``httpx.MockTransport``, polling."""
    cfg = jobwatch.Config.from_mapping(
        {
            "jobwatch": {
                "provider": "reader",
                "base_url": "http://reader.test",
                "api_key": "rdr_test",
                "transport": "poll",
                "store": "memory",
                "poll": {"rpm": 1000, "interval": 1.0, "max_interval": 5.0},
            }
        }
    )
    poll = PollTransport(cfg.options("poll", PollOptions), rng=random.Random(1))
    return jobwatch.Watcher(
        cfg, transports=[poll], store=MemoryStore(), http_transport=httpx.MockTransport(handler)
    )


def reader_job(job_id: str, status: str, completed: int) -> httpx.Response:
    data = {"id": job_id, "status": status, "completed": completed, "total": 10, "error": None}
    return httpx.Response(200, json={"success": True, "data": data})


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", MOCK)
async def test_an_answer_about_another_job_is_not_taken_for_the_job_asked_about() -> None:
    # A proxy or cache that mixes up answers: the first polls of job_a are answered with
    # job_b, which is done. job_a's watch must not end with job_b's completion.
    asked: list[float] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        asked.append(anyio.current_time())
        if len(asked) <= 3:
            return reader_job("job_b", "completed", 10)
        if anyio.current_time() < 60.0:
            return reader_job("job_a", "processing", 3)
        return reader_job("job_a", "completed", 10)

    async with reader_watcher(handler) as w:
        final = await w.wait("job_a", timeout=600)
    assert final.kind == "completed"
    assert final.data["id"] == "job_a"
    assert asked[-1] >= 60.0
