"""The poll transport end to end: a real Watcher, the Reader simulator's ASGI app reached
through ``httpx.ASGITransport``, and virtual time (trio's MockClock) where timing matters."""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio
import httpx
import pytest
import trio.testing

import jobwatch
from jobwatch import AuthenticationError, ConfigError, JobNotFound
from jobwatch.sim import Faults, Simulator
from jobwatch.stores.memory import MemoryStore
from jobwatch.transports.poll import PollOptions, PollTransport

MOCK = [
    pytest.param(
        ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)}), id="trio-mockclock"
    )
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class Recorder:
    """ASGI middleware: records when each API request arrives and can answer some itself."""

    def __init__(
        self,
        app: Any,
        *,
        refuse: Callable[[str, int], tuple[int, dict[str, str]] | None] | None = None,
    ) -> None:
        self.app = app
        self.refuse = refuse
        self.times: list[float] = []
        self.paths: list[str] = []
        self.statuses: list[int] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.times.append(anyio.current_time())
        self.paths.append(scope["path"])
        answer = self.refuse(scope["path"], len(self.times)) if self.refuse else None
        if answer is not None:
            status, headers = answer
            self.statuses.append(status)
            body = b'{"success":false,"error":{"code":"%s","message":"scripted"}}' % (
                b"rate_limited" if status == 429 else b"internal_error"
            )
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return

        async def record(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.statuses.append(message["status"])
            await send(message)

        await self.app(scope, receive, record)


def config(rpm: int = 60, api_key: str = "rdr_sim", **poll: Any) -> jobwatch.Config:
    return jobwatch.Config.from_mapping(
        {
            "jobwatch": {
                "api_key": api_key,
                "base_url": "http://sim",
                "transport": "poll",
                "store": "memory",
                "poll": {"rpm": rpm, **poll},
            }
        }
    )


def watcher(app: Any, cfg: jobwatch.Config | None = None) -> jobwatch.Watcher:
    cfg = cfg or config()
    transport = PollTransport(cfg.options("poll", PollOptions), rng=random.Random(1))
    return jobwatch.Watcher(
        cfg,
        transports=[transport],
        store=MemoryStore(),
        http_transport=httpx.ASGITransport(app=app),
    )


async def settle() -> None:
    """Let a fresh Watcher finish its start-up (replay, reconcile of stored jobs) first."""
    await anyio.sleep(0.001)


def urls(n: int, prefix: str = "p") -> list[str]:
    return [f"https://example.com/{prefix}/{k}" for k in range(n)]


# -- configuration and classification ---------------------------------------------------------


def test_options_come_from_the_poll_table_strictly() -> None:
    assert PollTransport.from_config(config(rpm=10, interval=1)).options == PollOptions(
        interval=1.0, rpm=10
    )
    with pytest.raises(ConfigError, match=r"jobwatch\.poll"):
        PollTransport.from_config(config(intervall=3))
    with pytest.raises(ConfigError, match="rpm"):
        PollTransport.from_config(config(rpm="fast"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="max_interval"):
        PollTransport.from_config(config(interval=10.0, max_interval=5.0))
    with pytest.raises(ConfigError, match="positive"):
        PollTransport.from_config(config(rpm=0))


def test_poll_is_a_pull_transport_named_poll() -> None:
    assert PollTransport.name == "poll" and PollTransport.push is False


# -- end to end in virtual time ---------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", MOCK)
async def test_jobs_complete_with_few_requests_and_little_delay() -> None:
    sim = Simulator(seed=3, tier="enterprise")
    jobs = {sim.create_job(urls=urls(n, str(n))): n for n in (20, 60, 140, 240)}
    app = Recorder(sim.app)
    detected: dict[str, float] = {}
    async with watcher(app, config(rpm=1000)) as w:
        await settle()

        async def one(job_id: str) -> None:
            final = await w.wait(job_id)
            assert final.kind == "completed" and final.completed == jobs[job_id]
            assert final.source == "poll"
            detected[job_id] = anyio.current_time()

        async with anyio.create_task_group() as tg:
            for job_id in jobs:
                tg.start_soon(one, job_id)
        stats = w.statistics()
    t0 = app.times[0]  # the simulator's time zero: its clock starts with the first request
    ends = {j: t0 + _end_offset(sim, j) for j in jobs}
    delays = [detected[j] - ends[j] for j in jobs]
    assert all(0 <= d <= 2.0 for d in delays), delays
    fixed = sum(int((_end_offset(sim, j)) / 2) + 1 for j in jobs)  # every 2 s
    assert len(app.times) <= fixed / 3, (len(app.times), fixed)
    assert stats.transports["poll"]["requests"] >= len(jobs)


def _end_offset(sim: Simulator, job_id: str) -> float:
    """Simulated seconds from the simulator's time zero to the job's completion."""
    job = sim.job(job_id)
    from datetime import datetime

    def parse(s: str) -> float:
        return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()

    zero = parse(job["createdAt"])  # created before the clock started: time zero
    return parse(job["completedAt"]) - zero


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", MOCK)
async def test_budget_holds_for_many_jobs_on_the_free_tier() -> None:
    """Twelve jobs, ten requests a minute: never a 429, never 11 requests in 60 s."""
    sim = Simulator(seed=4, tier="free")
    jobs = [sim.create_job(urls=urls(40 + 10 * n, str(n))) for n in range(12)]
    app = Recorder(sim.app)
    async with watcher(app, config(rpm=10)) as w:
        async with anyio.create_task_group() as tg:
            for job_id in jobs:
                tg.start_soon(w.wait, job_id)
    assert 429 not in app.statuses
    for i, t in enumerate(app.times):
        assert sum(1 for u in app.times[i:] if u < t + 60.0) <= 10


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", MOCK)
async def test_retry_after_pauses_every_poller() -> None:
    sim = Simulator(seed=5, tier="enterprise")
    jobs = [sim.create_job(urls=urls(30, str(n))) for n in range(3)]
    app = Recorder(sim.app, refuse=lambda path, n: (429, {"retry-after": "20"}) if n == 2 else None)
    async with watcher(app, config(rpm=1000)) as w:
        await settle()
        async with anyio.create_task_group() as tg:
            for job_id in jobs:
                tg.start_soon(w.wait, job_id)
        stats = w.statistics()
    refused = app.times[1]
    after = [t for t in app.times[2:]]
    assert after and min(after) >= refused + 20.0
    assert stats.rate_limited == 1
    assert stats.transports["poll"]["rate_limited"] == 1


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", MOCK)
async def test_server_errors_back_off_and_the_job_still_completes() -> None:
    sim = Simulator(seed=6, tier="enterprise", faults=Faults(error_burst=5))
    job_id = sim.create_job(urls=urls(20))
    app = Recorder(sim.app)
    async with watcher(app, config(rpm=1000)) as w:
        await settle()
        final = await w.wait(job_id)
        stats = w.statistics()
    assert final.kind == "completed"
    assert app.statuses[:6] == [500] * 5 + [200]
    gaps = [b - a for a, b in zip(app.times, app.times[1:6], strict=False)]
    for n, gap in enumerate(gaps):  # 2 s doubling per error, "equal jitter"
        assert 2.0 * 2**n / 2 <= gap <= 2.0 * 2**n
    assert stats.transports["poll"]["errors"] == 5


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", MOCK)
async def test_unknown_job_ends_its_own_watch_only() -> None:
    sim = Simulator(seed=7, tier="enterprise")
    good = sim.create_job(urls=urls(10))
    async with watcher(sim.app, config(rpm=1000)) as w:
        await settle()
        with pytest.raises(JobNotFound, match="job job_nope: .*404"):
            await w.wait("job_nope")
        assert (await w.wait(good)).kind == "completed"
        assert w.statistics().transports["poll"]["ended"] == 1


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", MOCK)
async def test_refused_api_key_ends_the_watch_with_a_clear_error() -> None:
    sim = Simulator(seed=8)
    job_id = sim.create_job(urls=urls(5))
    async with watcher(sim.app, config(api_key="rdr_wrong")) as w:
        with pytest.raises(AuthenticationError, match="api_key"):
            await w.wait(job_id)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", MOCK)
async def test_cancelled_and_failed_jobs_are_reported() -> None:
    sim = Simulator(seed=9, tier="enterprise", job_failure_p=1.0)
    failing = sim.create_job(urls=urls(20))
    async with watcher(sim.app, config(rpm=1000)) as w:
        assert (await w.wait(failing)).kind == "failed"
    sim2 = Simulator(seed=10, tier="enterprise")
    cancelled = sim2.create_job(urls=urls(200))
    async with watcher(sim2.app, config(rpm=1000)) as w:
        start = anyio.current_time()
        async with anyio.create_task_group() as tg:

            async def cancel_later() -> None:
                await anyio.sleep(15)
                sim2.cancel_job(cancelled)

            tg.start_soon(cancel_later)
            final = await w.wait(cancelled)
        assert final.kind == "cancelled"
        assert anyio.current_time() - start - 15 <= 30.0  # found within max_interval


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", MOCK)
async def test_events_follow_the_snapshots() -> None:
    sim = Simulator(seed=11, tier="enterprise")
    job_id = sim.create_job(urls=urls(30))
    async with watcher(sim.app, config(rpm=1000)) as w:
        kinds = [str(event.kind) async for event in w.watch(job_id)]
    assert kinds.count("started") == 1 and kinds[-1] == "completed"
    assert set(kinds[:-1]) <= {"started", "progress"}


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", MOCK)
async def test_results_follow_pagination() -> None:
    sim = Simulator(seed=12, tier="enterprise")
    job_id = sim.create_job(urls=urls(250))
    app = Recorder(sim.app)
    async with watcher(app, config(rpm=1000)) as w:
        await w.wait(job_id)
        before = len(app.times)
        pages = [page async for page in w.results(job_id)]
    assert [p["url"] for p in pages] == urls(250)
    assert len(app.times) - before == 3  # 100 + 100 + 50


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", MOCK)
async def test_unwatched_jobs_are_no_longer_polled() -> None:
    sim = Simulator(seed=13, tier="enterprise")
    job_id = sim.create_job(urls=urls(400))
    app = Recorder(sim.app)
    async with watcher(app, config(rpm=1000)) as w:
        with anyio.move_on_after(10):
            await w.wait(job_id)
        seen = len(app.times)
        await anyio.sleep(120)
        assert len(app.times) == seen


@pytest.mark.anyio
async def test_real_time_on_both_backends() -> None:
    sim = Simulator(seed=14, tier="enterprise", page_interval=0.02, start_delay=0.0)
    job_id = sim.create_job(urls=urls(10))
    async with watcher(sim.app, config(rpm=1000, interval=0.2, max_interval=1.0)) as w:
        with anyio.fail_after(10):
            final = await w.wait(job_id)
    assert final.kind == "completed"


class _Unreachable(httpx.AsyncBaseTransport):
    """An API host that never answers: every request fails to connect."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno -2] Name or service not known", request=request)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", MOCK)
async def test_an_unreachable_api_is_said_again_while_it_lasts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Not one line and then an hour of silence: the 2nd, 4th, 8th... failure in a row says so.
    cfg = config(rpm=1000)
    transport = PollTransport(cfg.options("poll", PollOptions), rng=random.Random(1))
    w = jobwatch.Watcher(
        cfg, transports=[transport], store=MemoryStore(), http_transport=_Unreachable()
    )
    async with w:
        with pytest.raises(TimeoutError), anyio.fail_after(1800):
            await w.wait("job_1", timeout=None)
    said = [
        r.getMessage()
        for r in caplog.records
        if r.levelname == "WARNING" and "times in a row" in r.getMessage()
    ]
    streaks = [int(m.split(" failed ")[1].split()[0]) for m in said]
    assert streaks[:4] == [2, 4, 8, 16], said
    assert all("Name or service not known" in m for m in said)
    assert w.statistics().transports["poll"]["errors"] >= 16


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", MOCK)
async def test_results_stop_with_an_error_when_the_next_page_repeats_an_asked_one() -> None:
    # An API that ignores `skip` answers every page as the first: following its `next`
    # forever would yield the same results without end.
    body = (
        b'{"success":true,"data":{"id":"j1","status":"completed","mode":"batch","completed":2,'
        b'"total":2,"creditsUsed":2,"error":null,"results":[{"url":"https://example.com/a"}],'
        b'"startedAt":null,"completedAt":null,"createdAt":"2026-01-01T00:00:00Z"},'
        b'"pagination":{"total":2,"skip":0,"limit":100,"hasMore":true}}'
    )
    asked: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        asked.append(scope["query_string"].decode())
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    items: list[Any] = []
    async with watcher(app, config(rpm=1000)) as w:
        with pytest.raises(jobwatch.DecodeError, match="repeats a page already read"):
            async for item in w.results("j1"):
                items.append(item)
    assert len(items) == 2 and len(asked) == 2  # the first page, the second, then no third


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", MOCK)
async def test_a_waiting_job_is_timed_from_the_start_the_api_states() -> None:
    # The simulator stamps startedAt from the loop's clock (virtual here) and the wall clock
    # at its creation; the transport moves it onto the schedule's clock by the offset between
    # the wall clock and the loop's that it reads when it starts. The loop's clock stands
    # still while the test really runs up to then: what the offset moved meanwhile (tens of
    # milliseconds on a slow machine) is the error of that stamp, allowed for below.
    created = time.time() - anyio.current_time()
    sim = Simulator(seed=5, tier="enterprise", epoch=created + anyio.current_time())
    job_id = sim.create_job(urls=urls(20))
    app = Recorder(sim.app)
    async with watcher(app, config(rpm=1000)) as w:
        (transport,) = w._transports
        assert isinstance(transport, PollTransport)
        progressed = anyio.Event()

        def running(event: jobwatch.JobEvent) -> None:
            if event.completed:
                progressed.set()

        w.subscribe(running, job_id=job_id, kinds=("progress",))
        with anyio.fail_after(60):
            await progressed.wait()  # the poll that saw it running, recorded
            await anyio.wait_all_tasks_blocked()  # ... and observed by the schedule
        plan = transport.schedule._plans[job_id]
    # First seen queued (its first poll at once), then running: anchored at its start, which
    # the simulator makes 0.1 s after the job's creation.
    assert plan.started_known and plan.anchor is not None
    moved = transport._wall_offset - created
    assert 0 <= moved < 5
    assert plan.anchor[0] + moved == pytest.approx(app.times[0] + 0.1, abs=0.05)
