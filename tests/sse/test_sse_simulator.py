"""The SSE transport end to end: the real Watcher against the simulator on a loopback port."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import anyio
import pytest

import jobwatch
from jobwatch import JobEvent
from jobwatch.sim import Faults, ManualClock, Simulator, Step, running
from jobwatch.stores.memory import MemoryStore
from jobwatch.transports.sse import SSEOptions, SSETransport

pytestmark = pytest.mark.anyio


def config(url: str, *, api_key: str = "rdr_sim", **sse: Any) -> jobwatch.Config:
    return jobwatch.Config.from_mapping(
        {
            "jobwatch": {
                "base_url": url,
                "api_key": api_key,
                "store": "memory",
                "safety_poll": 0,
                "poll": {"rpm": 100_000},
                "sse": sse,
            }
        }
    )


def transport(cfg: jobwatch.Config, seed: int = 0) -> SSETransport:
    return SSETransport(cfg.options("sse", SSEOptions), rng=random.Random(seed))


class Recorder:
    """Every event the application saw, per job."""

    def __init__(self) -> None:
        self.terminal: dict[str, list[JobEvent]] = defaultdict(list)
        self.progress: dict[str, list[int]] = defaultdict(list)

    def __call__(self, event: JobEvent) -> None:
        assert event.job_id is not None
        if event.terminal:
            self.terminal[event.job_id].append(event)
        elif event.completed is not None and event.kind == "progress":
            self.progress[event.job_id].append(event.completed)


async def wait_all(
    watcher: jobwatch.Watcher, jobs: list[str], *, limit: float, tick: Callable[[], None]
) -> list[JobEvent]:
    """Wait for every job at once (each is watched from the start), calling ``tick`` and
    sleeping a little until they are all done."""
    finals: dict[str, JobEvent] = {}

    async def wait(job: str) -> None:
        finals[job] = await watcher.wait(job)

    with anyio.fail_after(limit):
        async with anyio.create_task_group() as tg:
            for job in jobs:
                tg.start_soon(wait, job)
            while len(finals) < len(jobs):
                tick()
                await anyio.sleep(0.01)
    return [finals[job] for job in jobs]


def pages(n: int, pace: random.Random | None = None, interval: float = 1.0) -> list[Step]:
    """``n`` pages; with ``pace``, each takes 0.5 to 1.5 times ``interval`` (so that jobs
    started together do not all report at the same instants)."""
    if pace is None:
        return [Step(kind="page") for _ in range(n)]
    return [Step(kind="page", delay=interval * pace.uniform(0.5, 1.5)) for _ in range(n)]


@pytest.mark.parametrize(
    ("scope", "drop_p", "interval", "min_drops"),
    [
        ("job", 0.2, 1.0, 100),
        # Every reconnect of the workspace stream polls each of the 20 jobs (Reader cannot
        # replay): fewer drops, spread over more simulated time, keep those polls within the
        # simulator's rate limit (1,000 requests per simulated minute).
        ("workspace", 0.1, 4.0, 12),
    ],
)
async def test_random_drops_lose_no_terminal_event(
    scope: str, drop_p: float, interval: float, min_drops: int
) -> None:
    # A manual clock moves the jobs on only as fast as the test says, so that the stream
    # is connected when frames are written (and drops are injected) however loaded the CPU.
    clock = ManualClock()
    sim = Simulator(
        seed=7,
        tier="enterprise",
        clock=clock,
        page_interval=interval,
        faults=Faults(drop_sse_p=drop_p),
    )

    def tick() -> None:
        # The workspace stream carries every job: move on only while it is connected (the
        # simulator counts one open per connection and one fault per drop).
        opens = sim.request_counts().by_endpoint.get("GET /v1/events", 0)
        if scope == "job" or opens > sim.fault_counts()["drop_sse_p"]:
            sim.advance(interval / 5)

    async with running(sim) as url:
        cfg = config(
            url,
            scope=scope,
            backoff_initial=0.002,
            backoff_max=0.01,
            max_failures=50,
            heartbeat_timeout=30.0,
        )
        seen = Recorder()
        async with jobwatch.Watcher(
            cfg, transports=[transport(cfg)], store=MemoryStore()
        ) as watcher:
            watcher.subscribe(seen)
            pace = random.Random(5)
            jobs = [sim.create_job(steps=pages(25, pace, interval)) for _ in range(20)]
            finals = await wait_all(watcher, jobs, limit=60, tick=tick)
            stats = watcher.statistics()
    drops = sim.fault_counts()["drop_sse_p"]
    assert drops >= min_drops, f"only {drops} drops were injected"
    assert all(final.kind == "completed" for final in finals)
    for job in jobs:
        assert len(seen.terminal[job]) == 1, f"{job}: {seen.terminal[job]}"
        assert seen.progress[job] == sorted(set(seen.progress[job])), f"{job} went backwards"
    assert stats.transports["sse"]["reconnects"] >= min_drops
    assert stats.reconciles >= min_drops if scope == "workspace" else stats.reconciles >= 1


async def test_a_stalled_stream_is_detected_and_recovered() -> None:
    # Every connection goes silent (no events, no pings) after 3 events, for far longer than
    # the test may take: only the heartbeat watchdog can get the job to its end.
    sim = Simulator(seed=3, time_scale=20.0, page_interval=1.0, faults="stall_sse=3@1h")
    async with running(sim) as url:
        cfg = config(
            url, scope="job", heartbeat_timeout=0.3, backoff_initial=0.01, backoff_max=0.05
        )
        async with jobwatch.Watcher(
            cfg, transports=[transport(cfg)], store=MemoryStore()
        ) as watcher:
            job = sim.create_job(steps=pages(12))
            with anyio.fail_after(30):
                final = await watcher.wait(job)
            stats = watcher.statistics().transports["sse"]
    assert final.kind == "completed"
    assert sim.fault_counts()["stall_sse"] >= 1
    assert stats["stalls"] >= 1 and stats["reconnects"] >= 1


async def test_a_refused_key_ends_the_job_instead_of_retrying() -> None:
    sim = Simulator(seed=1)
    async with running(sim) as url:
        cfg = config(url, api_key="rdr_wrong", scope="job", backoff_initial=0.01)
        async with jobwatch.Watcher(
            cfg, transports=[transport(cfg)], store=MemoryStore()
        ) as watcher:
            job = sim.create_job(steps=pages(3))
            with anyio.fail_after(10), pytest.raises(jobwatch.AuthenticationError):
                await watcher.wait(job)
    assert sim.request_counts().by_endpoint.get("GET /v1/jobs/{id}/stream", 0) == 1


async def test_a_refused_key_on_the_workspace_stream_ends_the_watcher_saying_what_to_do() -> None:
    # The workspace stream is what reports every job to callbacks that watch no job of their
    # own (a dashboard, a worker): refused, it ended 0 watched jobs and tried again every
    # probe_interval for good, while the Watcher looked healthy and nothing could arrive.
    sim = Simulator(seed=1)
    heard: list[JobEvent] = []
    async with running(sim) as url:
        cfg = config(url, api_key="rdr_wrong", scope="workspace", backoff_initial=0.01)
        sse = transport(cfg)
        with anyio.fail_after(10), pytest.raises(jobwatch.AuthenticationError) as caught:
            async with jobwatch.Watcher(cfg, transports=[sse], store=MemoryStore()) as watcher:
                watcher.subscribe(heard.append)
                await anyio.sleep_forever()
    assert "check api_key" in str(caught.value) and "rdr_wrong" not in str(caught.value)
    assert sim.request_counts().by_endpoint.get("GET /v1/events", 0) == 1
    assert heard == []
    stopped = watcher.statistics().stopped
    assert list(stopped) == ["sse"] and "check api_key" in stopped["sse"]


async def test_a_job_unknown_to_the_api_ends_with_job_not_found() -> None:
    sim = Simulator(seed=1)
    async with running(sim) as url:
        cfg = config(url, scope="job", backoff_initial=0.01)
        async with jobwatch.Watcher(
            cfg, transports=[transport(cfg)], store=MemoryStore()
        ) as watcher:
            with anyio.fail_after(10), pytest.raises(jobwatch.JobNotFound):
                await watcher.wait("job_does_not_exist")
            stats = watcher.statistics().transports["sse"]
    assert stats["fallbacks"] == 1


@pytest.mark.parametrize("scope", ["job", "workspace"])
async def test_a_failed_job_ends_with_the_reason_the_api_gives(scope: str) -> None:
    # Reader's per-job stream ends a failed job with `done` {status, completed, total}: no
    # reason. The watch ended with "failed" where a status request says why.
    sim = Simulator(seed=5, time_scale=50.0, page_interval=1.0)
    async with running(sim) as url:
        cfg = config(url, scope=scope, backoff_initial=0.01)
        async with jobwatch.Watcher(
            cfg, transports=[transport(cfg)], store=MemoryStore()
        ) as watcher:
            job = sim.create_job(steps=[*pages(2), Step(kind="fail", error="quota of the origin")])
            with anyio.fail_after(30):
                final = await watcher.wait(job)
    assert (final.kind, final.error) == ("failed", "quota of the origin")
    # The poll that reconciles the opening connection, and at most one asking why.
    assert sim.request_counts().by_endpoint.get("GET /v1/jobs/{id}", 0) <= 2
