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
from jobwatch._registry import base, load
from jobwatch.abc import Response, parse_retry_after
from jobwatch.stores.memory import MemoryStore
from jobwatch.testing import ScriptedHost
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


@pytest.mark.anyio
async def test_results_about_another_job_are_not_taken_for_the_job_asked_about() -> None:
    # The same mixed-up answer to a results request: job_b's pages must not be handed out
    # as job_a's results.
    async def handler(request: httpx.Request) -> httpx.Response:
        data = {
            "id": "job_b",
            "status": "completed",
            "completed": 1,
            "total": 1,
            "error": None,
            "results": [{"url": "https://example.com/b"}],
        }
        pagination = {"total": 1, "skip": 0, "limit": 20, "hasMore": False}
        return httpx.Response(200, json={"success": True, "data": data, "pagination": pagination})

    got: list[object] = []
    async with reader_watcher(handler) as w:
        with pytest.raises(jobwatch.DecodeError, match="another job: 'job_b'"):
            async for item in w.results("job_a"):
                got.append(item)
    assert got == []


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", MOCK)
@pytest.mark.parametrize("value", ["60, 60", "30,60", " 60 , 60 "])
async def test_a_retry_after_sent_twice_is_still_a_rate_limit(value: str) -> None:
    # A proxy that adds its own Retry-After to the API's: HTTP joins the two with a comma.
    # GitHub's secondary limit (403 + Retry-After) must still pause every poller, for the
    # longer of the two, and end no watch.
    start = anyio.current_time()  # the clock is shared by the parameters
    api = RunsAPI(
        ends={"r1": start + 40.0, "r2": start + 70.0},
        refuse=lambda n, path: (403, {"retry-after": value}) if n == 3 else None,
    )
    async with watcher(api) as w:
        finals: dict[str, jobwatch.JobEvent] = {}

        async def one(run: str) -> None:
            finals[run] = await w.wait(run, timeout=3600)

        async with anyio.create_task_group() as tg:
            for run in api.ends:
                tg.start_soon(one, run)
        stats = w.statistics()
    assert {run: str(e.kind) for run, e in finals.items()} == dict.fromkeys(api.ends, "completed")
    assert api.statuses[2] == 403
    assert min(api.times[3:]) >= api.times[2] + 60.0
    assert stats.transports["poll"].get("ended", 0) == 0


DATE = "Fri, 15 Jan 2027 08:00:00 GMT"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("60, 60", 60.0),
        ("10, 45", 45.0),
        ("60, soon", 60.0),
        (f"{DATE}, Fri, 15 Jan 2027 08:01:40 GMT", 100.0),  # two HTTP-dates
        ("Fri, 15 Jan 2027 08:00:30 GMT, 10", 30.0),
        ("soon, later", None),
        ("99999999, 5", 3600.0),
    ],
)
def test_several_retry_after_values_wait_the_longest(value: str, seconds: float | None) -> None:
    response = Response(status=429, headers={"retry-after": value, "date": DATE})
    assert parse_retry_after(response) == seconds


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", MOCK)
@pytest.mark.parametrize("value", ["30, 30", "Fri, 15 Jan 2027 08:00:30 GMT"])
async def test_reader_honours_any_retry_after_it_can_read(value: str) -> None:
    # Reader's 429 rate_limited names its wait in Retry-After; one sent twice, or as an
    # HTTP-date, must still be waited, not replaced by a backoff of a second.
    asked: list[float] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        asked.append(anyio.current_time())
        if len(asked) == 1:
            error = {"code": "rate_limited", "message": "Rate limit exceeded."}
            headers = {"retry-after": value, "date": DATE}
            return httpx.Response(429, headers=headers, json={"success": False, "error": error})
        return reader_job("job_a", "completed", 10)

    async with reader_watcher(handler) as w:
        final = await w.wait("job_a", timeout=600)
    assert final.kind == "completed"
    assert asked[1] - asked[0] >= 30.0


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", MOCK)
@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_a_redirect_ends_the_watch_saying_where_it_points_and_what_to_do(
    status: int,
) -> None:
    # jobwatch follows no redirect (the API key would go along to wherever it points): the
    # error says where the API sent it, and that base_url is what to change.
    moved = "https://api.reader.example/v1/jobs/job_a?limit=1"

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers={"location": moved})

    async with reader_watcher(handler) as w:
        with pytest.raises(jobwatch.APIError) as caught:
            await w.wait("job_a", timeout=600)
    message = str(caught.value)
    assert f"HTTP {status}" in message
    assert "https://api.reader.example/v1/jobs/job_a" in message
    assert "base_url" in message


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_described_api_says_where_a_redirect_points(status: int) -> None:
    config = jobwatch.Config.from_mapping(
        {"jobwatch": {"provider": "github-actions", "github-actions": {"repository": "o/r"}}},
        environ={},
    )
    github = load("provider", "github-actions", base("provider")).from_config(config)
    moved = Response(
        status=status, headers={"location": "https://user:pw@api.github.example/repos/o/r"}
    )
    assert github.classify(moved).ends
    message = str(github.error_for(moved))
    assert f"HTTP {status}" in message
    assert "https://user:***@api.github.example/repos/o/r" in message
    assert "base_url" in message


class _UnwatchingHost(ScriptedHost):
    """A host whose application stops watching each job while its poll is being recorded."""

    transport: PollTransport

    async def deliver(self, events: Any, **kw: Any) -> None:
        for job_id in {e.job_id for e in events if e.job_id is not None}:
            self._watching.discard(job_id)
            self.transport.unwatch(job_id)
        await anyio.lowlevel.checkpoint()
        await super().deliver(events, **kw)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", MOCK)
async def test_jobs_unwatched_while_their_poll_is_recorded_leave_nothing_behind() -> None:
    # Thousands of jobs watched and unwatched, each while its poll is in flight: the poll
    # transport keeps nothing of them (what it kept would grow with every job ever watched).
    async def handler(request: httpx.Request) -> httpx.Response:
        return reader_job(request.url.path.rsplit("/", 1)[-1], "processing", 3)

    config = jobwatch.Config.from_mapping(
        {"jobwatch": {"provider": "reader", "base_url": "http://reader.test", "api_key": "k"}}
    )
    provider = load("provider", "reader", base("provider")).from_config(config)
    poll = PollTransport(PollOptions(rpm=100_000), rng=random.Random(1))
    host = _UnwatchingHost(
        config, provider, rpm=100_000, http_transport=httpx.MockTransport(handler)
    )
    host.transport = poll
    async with host, anyio.create_task_group() as tg:
        await tg.start(poll.run, host)
        for n in range(2000):
            host.watch(poll, f"job_{n}")
            if n % 50 == 0:
                await anyio.sleep(1.0)
        await anyio.sleep(60.0)
        tg.cancel_scope.cancel()
    assert host.requests >= 2000
    assert len(poll.schedule) == 0
    assert poll._snapshots == {}
