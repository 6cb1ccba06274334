"""Rate limits as the provider classifies them: every caller pauses, no watch ends, nothing is
raised to the application, and the budget learns from the API's headers.

The API is the fictional "runs" API of ``_runs_api``, whose provider relies on
``Provider.classify``'s default; virtual time under trio's MockClock, except for the stream,
which needs a real loopback server.
"""

from __future__ import annotations

import anyio
import pytest
import trio.testing
from _runs_api import RunsAPI, serving, watcher

from jobwatch import APIError, JobEvent, RateLimited
from jobwatch.testing import ScriptedTransport
from jobwatch.transports.sse import SSEOptions, SSETransport

MOCK = [
    pytest.param(
        ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)}), id="trio-mockclock"
    )
]


async def wait_all(w: object, runs: list[str], deadline: float = 3600.0) -> dict[str, JobEvent]:
    finals: dict[str, JobEvent] = {}

    async def one(run: str) -> None:
        finals[run] = await w.wait(run, timeout=deadline)  # type: ignore[attr-defined]

    async with anyio.create_task_group() as tg:
        for run in runs:
            tg.start_soon(one, run)
    return finals


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", MOCK)
async def test_a_403_with_retry_after_pauses_every_poller_and_ends_no_watch() -> None:
    # GitHub's secondary limit: 403 + retry-after. The default classification calls it a rate
    # limit, so every poller waits the minute and every run's completion is still delivered.
    api = RunsAPI(
        ends={"r1": 40.0, "r2": 70.0, "r3": 100.0},
        refuse=lambda n, path: (403, {"retry-after": "60"}) if n == 5 else None,
    )
    async with watcher(api) as w:
        finals = await wait_all(w, list(api.ends))
        stats = w.statistics()
    assert {run: str(event.kind) for run, event in finals.items()} == dict.fromkeys(
        api.ends, "completed"
    )
    refused = api.times[4]
    assert api.statuses[4] == 403
    assert min(api.times[5:]) >= refused + 60.0
    assert stats.rate_limited == 1
    assert stats.transports["poll"]["rate_limited"] == 1
    assert stats.transports["poll"].get("ended", 0) == 0


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", MOCK)
async def test_a_spent_hourly_budget_pauses_until_its_reset() -> None:
    # Ten requests an hour, the first window ending at 600 s: the answers count down
    # x-ratelimit-remaining, and the one that says 0 holds every request until the reset.
    # Asking anyway would be answered 403 (GitHub's primary limit).
    api = RunsAPI(ends={"r1": 900.0, "r2": 1200.0}, hourly=10, window_ends=600.0)
    async with watcher(api, interval=1.0, max_interval=5.0) as w:
        finals = await wait_all(w, ["r1", "r2"], deadline=10_000)
    assert [str(e.kind) for e in finals.values()] == ["completed", "completed"]
    assert 403 not in api.statuses
    assert len([t for t in api.times if t < 600.0]) == 10
    assert min(t for t in api.times if t >= 600.0) == pytest.approx(600.0, abs=1.0)
    for start in api.times:  # the next window (600 s to 4200 s) has ten requests too
        assert len([t for t in api.times if start <= t < start + 3600.0]) <= 20


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", MOCK)
@pytest.mark.parametrize(
    ("refusal", "times", "waited"),
    [
        ((403, {"retry-after": "30"}), 2, 60.0),  # GitHub's secondary limit
        ((429, {}), 5, 1.0 + 2 + 4 + 8 + 16),  # no wait named: backoff, every caller
        ((503, {"retry-after": "10"}), 1, 10.0),
    ],
    ids=["403+retry-after", "429-without-wait", "503+retry-after"],
)
async def test_results_wait_through_a_rate_limit_instead_of_raising(
    refusal: tuple[int, dict[str, str]], times: int, waited: float
) -> None:
    api = RunsAPI(
        ends={"r1": 0.0}, pages=3, refuse=lambda n, path: refusal if 2 <= n < 2 + times else None
    )
    async with watcher(api) as w:
        start = anyio.current_time()
        items = [item async for item in w.results("r1")]
        took = anyio.current_time() - start
        stats = w.statistics()
    assert items == [{"run": "r1", "page": page} for page in (1, 2, 3)]
    assert took == pytest.approx(waited, abs=0.5)
    assert stats.rate_limited == times


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", MOCK)
async def test_results_give_up_on_a_rate_limit_longer_than_their_deadline() -> None:
    api = RunsAPI(ends={"r1": 0.0}, refuse=lambda n, path: (429, {"retry-after": "7200"}))
    async with watcher(api) as w:
        with pytest.raises(RateLimited, match="still rate limited"):
            _ = [item async for item in w.results("r1")]
    assert len(api.times) == 1  # an hour's pause (the cap) is past the deadline: no waiting


@pytest.mark.anyio
async def test_a_stream_opening_answered_403_with_retry_after_pauses_every_caller() -> None:
    api = RunsAPI(refuse=lambda n, path: (403, {"retry-after": "1"}) if n == 1 else None)
    async with serving(api) as url:
        api.ends["r1"] = anyio.current_time() + 1.5
        sse = SSETransport(SSEOptions(scope="job", backoff_initial=0.05))
        async with watcher(api, base_url=url, transports=[sse]) as w:
            with anyio.fail_after(20):
                final = await w.wait("r1")
            stats = w.statistics()
    assert final.kind == "completed" and final.source == "sse"
    assert api.statuses[0] == 403 and api.paths[0] == "/runs/r1/stream"
    assert min(api.times[1:]) >= api.times[0] + 1.0  # the reconnect and its reconcile poll
    assert stats.rate_limited == 1
    assert stats.transports["sse"].get("fallbacks", 0) == 0


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", MOCK)
async def test_a_reconcile_waits_through_a_rate_limit_and_delivers() -> None:
    api = RunsAPI(
        ends={"r1": 0.0}, refuse=lambda n, path: (403, {"retry-after": "30"}) if n == 1 else None
    )
    scripted = ScriptedTransport()
    async with watcher(api, transports=[scripted]) as w:
        async with anyio.create_task_group() as tg:
            tg.start_soon(scripted.reconcile, "r1")
            final = await w.wait("r1", timeout=600)
    assert final.kind == "completed" and final.source == "poll"
    assert api.statuses == [403, 200] and api.times[1] - api.times[0] >= 30.0


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", MOCK)
async def test_a_reconcile_that_finds_the_job_gone_ends_its_watch() -> None:
    api = RunsAPI(ends={"r1": 0.0}, refuse=lambda n, path: (410, {}))
    scripted = ScriptedTransport()
    async with watcher(api, transports=[scripted]) as w:
        async with anyio.create_task_group() as tg:
            tg.start_soon(scripted.reconcile, "r1")
            with pytest.raises(APIError, match="410"), anyio.fail_after(600):
                await w.wait("r1")
    assert api.statuses == [410]  # gone is gone: not asked again
