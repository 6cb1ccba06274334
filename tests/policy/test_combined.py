"""Several transports at once, against the simulator with faults on every one of them."""

from __future__ import annotations

from collections import defaultdict
from contextlib import aclosing
from pathlib import Path

import anyio
import httpx
import pytest

import jobwatch
from jobwatch.sim import Simulator, Step, running

pytestmark = pytest.mark.anyio

SECRET = "whsec-combined-0123456789abcdef"
FAULTS = (
    "drop_sse_p=0.15,webhook_dup_p=0.4,webhook_reorder=true,corrupt_signature_p=0.2,error_burst=3"
)


def config(url: str, key: str, transport: object, **extra: object) -> jobwatch.Config:
    body = {
        "base_url": url,
        "api_key": key,
        "transport": transport,
        "store": "memory",
        "poll": {"interval": 0.5, "max_interval": 2.0, "rpm": 1000},
        "sse": {"scope": "workspace", "backoff_initial": 0.05, "backoff_max": 0.2},
        "webhook": {"listen": "127.0.0.1:0", "secrets": [SECRET]},
        **extra,
    }
    return jobwatch.Config.from_mapping({"jobwatch": body}, environ={})


async def register_webhook(url: str, key: str, hook: str) -> None:
    async with httpx.AsyncClient(base_url=url, headers={"x-api-key": key}) as http:
        reply = await http.post(
            "/v1/webhooks",
            json={
                "url": hook,
                "name": "combined",
                "secret": SECRET,
                "events": ["job.started", "job.page", "job.completed", "job.failed"],
            },
        )
    assert reply.status_code == 201, reply.text


async def test_webhook_sse_and_poll_at_once_deliver_each_event_once() -> None:
    sim = Simulator(time_scale=5.0, tier="enterprise", seed=3)
    async with running(sim) as url:
        watcher = jobwatch.Watcher(config(url, sim.api_key, ["webhook", "sse", "poll"]))
        seen: list[jobwatch.JobEvent] = []
        watcher.subscribe(seen.append)
        async with watcher:
            await register_webhook(
                url, sim.api_key, watcher.bound_url("webhook").rstrip("/") + "/hooks/reader"
            )
            sim.set_faults(FAULTS)
            jobs = [
                sim.create_job(steps=[Step(kind="page")] * 8 + [Step(kind="page_error")])
                for _ in range(5)
            ]
            jobs.append(sim.create_job(steps=[Step(kind="page"), Step(kind="fail")]))
            with anyio.fail_after(60):
                finals = [await watcher.wait(job, timeout=60) for job in jobs]
            await anyio.sleep(0.5)  # late copies from the slower transports arrive and drop
            stats = watcher.statistics()

    assert [f.kind.value for f in finals] == ["completed"] * 5 + ["failed"]
    keys = [e.key for e in seen]
    assert len(keys) == len(set(keys)), "an event was dispatched twice"
    by_job: dict[str | None, list[jobwatch.JobEvent]] = defaultdict(list)
    for event in seen:
        by_job[event.job_id].append(event)
    for job in jobs:
        events = by_job[job]
        assert sum(e.terminal for e in events) == 1
        counts = [e.completed for e in events if e.kind == "progress" and e.completed is not None]
        assert counts == sorted(counts), f"progress went backwards for {job}: {counts}"
    # Every transport took part, the copies of the others were dropped as duplicates, and
    # the faults really happened.
    per = stats.transports
    assert per["webhook"]["deliveries"] > 0 and per["sse"]["events"] > 0
    assert per["poll"]["requests"] > 0
    assert {e.source for e in seen} <= {"webhook", "sse", "poll"}
    assert stats.duplicates > 0
    faults = sim.fault_counts()
    assert faults["drop_sse_p"] > 0 and faults["webhook_dup_p"] > 0
    assert faults["corrupt_signature_p"] > 0 and faults["error_burst"] == 3


async def test_completion_comes_from_whichever_transport_saw_it_first() -> None:
    sim = Simulator(time_scale=20.0, tier="enterprise", seed=5)
    async with running(sim) as url:
        # The webhook is slowed down by a minute of simulated time: the stream wins.
        sim.set_faults("webhook_delay=60s")
        watcher = jobwatch.Watcher(config(url, sim.api_key, ["webhook", "sse"]))
        async with watcher:
            await register_webhook(
                url, sim.api_key, watcher.bound_url("webhook").rstrip("/") + "/hooks/reader"
            )
            job = sim.create_job(steps=[Step(kind="page")] * 3)
            final = await watcher.wait(job, timeout=30)
    assert final.source == "sse"


async def test_a_restart_delivers_what_completed_in_between(tmp_path: Path) -> None:
    sim = Simulator(time_scale=20.0, tier="enterprise")
    store = {"store": "sqlite", "sqlite": {"path": str(tmp_path / "state.db")}}
    async with running(sim) as url:
        job = sim.create_job(steps=[Step(kind="page", delay=2.0)] * 6)
        first = jobwatch.Watcher(config(url, sim.api_key, "poll", **store))
        async with first, aclosing(first.watch(job)) as events:
            async for event in events:
                if event.kind == "progress":
                    break  # the process goes away while the job runs
        while sim.job(job)["status"] != "completed":  # noqa: ASYNC110 - the simulator's state
            await anyio.sleep(0.05)

        done: list[jobwatch.JobEvent] = []
        arrived = anyio.Event()

        def completed(event: jobwatch.JobEvent) -> None:
            done.append(event)
            arrived.set()

        second = jobwatch.Watcher(config(url, sim.api_key, "poll", **store))
        second.subscribe(completed, kinds=("completed",))  # watches nothing by itself
        async with second:
            with anyio.fail_after(10):
                await arrived.wait()
    assert [(e.job_id, e.kind.value) for e in done] == [(job, "completed")]
