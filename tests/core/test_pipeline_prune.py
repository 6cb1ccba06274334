"""The pipeline lets go of what it knows of quiet jobs: a long-lived process on a busy stream
keeps a bounded number of job records, and what it forgets changes no verdict."""

from __future__ import annotations

import time

import anyio
import httpx
import pytest

import jobwatch
from jobwatch import JobEvent
from jobwatch._pipeline import Pipeline
from jobwatch.stores.memory import MemoryStore
from jobwatch.testing import ScriptedTransport, make_event

pytestmark = pytest.mark.anyio


def pipeline(delivered: list[JobEvent], prune_from: int = 64) -> Pipeline:
    async def dispatch(event: JobEvent) -> None:
        delivered.append(event)

    made = Pipeline(MemoryStore(), dedup_ttl=3600.0, dispatch=dispatch)
    made.prune_from = prune_from
    made.ready.set()
    return made


def running(job_id: str, completed: int = 1) -> list[JobEvent]:
    return [
        make_event("started", job_id, total=9),
        make_event("progress", job_id, completed=completed, total=9),
    ]


async def test_records_of_quiet_jobs_are_let_go() -> None:
    delivered: list[JobEvent] = []
    pipe = pipeline(delivered)
    most = 0
    for n in range(5000):
        await pipe.deliver(running(f"job_{n}"))
        most = max(most, len(pipe.jobs))
    # Each job was heard of once: the records stay within twice the count pruning starts at
    # (it doubles from what is left), where 5,000 were kept before.
    assert most <= 2 * 64 + 1
    assert len(delivered) == 10_000


async def test_jobs_still_talking_keep_their_records() -> None:
    delivered: list[JobEvent] = []
    pipe = pipeline(delivered)
    for n in range(2000):
        await pipe.deliver(running("busy", completed=n + 1) + running(f"job_{n}"))
        assert "busy" in pipe.jobs
    # The busy job's start is still known here: only its first `started` reached the store.
    assert pipe.dropped["duplicate"] == 1999
    assert [e.completed for e in delivered if e.job_id == "busy" and e.kind == "progress"] == list(
        range(1, 2001)
    )


async def test_records_held_by_someone_are_kept() -> None:
    delivered: list[JobEvent] = []
    pipe = pipeline(delivered)
    watched, waited, checked = pipe.job("watched"), pipe.job("waited"), pipe.job("checked")
    watched.watched, watched.watchers, watched.heard = True, 1, 0.0
    waited.queues = {object()}
    checked.checking = True
    for n in range(1000):
        await pipe.deliver(running(f"job_{n}"))
    assert pipe.jobs["watched"] is watched
    assert pipe.jobs["waited"] is waited
    assert pipe.jobs["checked"] is checked
    for held in (watched, waited, checked):
        assert not held.idle()


async def test_a_record_whose_turn_is_taken_is_kept() -> None:
    delivered: list[JobEvent] = []
    release = anyio.Event()

    async def slow(event: JobEvent) -> None:
        if event.job_id == "slow":
            await release.wait()
        delivered.append(event)

    pipe = Pipeline(MemoryStore(), dedup_ttl=3600.0, dispatch=slow)
    pipe.prune_from = 8
    pipe.ready.set()
    async with anyio.create_task_group() as nursery:
        nursery.start_soon(pipe.deliver, running("slow"))
        await anyio.wait_all_tasks_blocked()
        record = pipe.jobs["slow"]
        assert record.busy
        for n in range(200):
            await pipe.deliver(running(f"job_{n}"))
        assert pipe.jobs["slow"] is record
        release.set()
    assert [e.job_id for e in delivered].count("slow") == 2


async def test_a_batch_of_many_new_jobs_keeps_its_own_records_until_it_is_done() -> None:
    # One read naming thousands of jobs prunes twice while it gathers their records: the
    # records it gathered first are its own, and a later batch of one of them waits its turn.
    delivered: list[JobEvent] = []
    release = anyio.Event()

    async def slow(event: JobEvent) -> None:
        if event.job_id == "first" and event.kind == "started":
            await release.wait()  # a full subscription queue, say: the batch keeps the turn
        delivered.append(event)

    pipe = Pipeline(MemoryStore(), dedup_ttl=3600.0, dispatch=slow)
    pipe.prune_from = 8
    pipe.ready.set()
    crowd = [event for n in range(40) for event in running(f"job_{n}")]
    async with anyio.create_task_group() as nursery:
        nursery.start_soon(pipe.deliver, running("first") + crowd)
        await anyio.wait_all_tasks_blocked()
        assert pipe.jobs["first"].busy
        nursery.start_soon(pipe.deliver, [make_event("completed", "first", total=9)])
        await anyio.wait_all_tasks_blocked()
        release.set()
    assert [(e.kind, e.completed) for e in delivered if e.job_id == "first"] == [
        ("started", None),
        ("progress", 1),
        ("completed", None),
    ]
    assert all(record.holds == 0 for record in pipe.jobs.values())


async def test_waiting_on_an_ended_job_keeps_its_record_while_the_api_is_asked() -> None:
    # wait() on a job that ended while nobody watched it asks the API once whether it was
    # retried; jobs heard of meanwhile must not take its record, and its end, away.
    asked, answer = anyio.Event(), anyio.Event()

    async def api(request: httpx.Request) -> httpx.Response:
        asked.set()
        await answer.wait()
        data = {"id": "j", "status": "completed", "completed": 9, "total": 9}
        return httpx.Response(200, json={"success": True, "data": data})

    config = jobwatch.Config.from_mapping(
        {"jobwatch": {"api_key": "rdr_x", "store": "memory", "safety_poll": 0}}, environ={}
    )
    push = ScriptedTransport()
    watcher = jobwatch.Watcher(config, transports=[push], http_transport=httpx.MockTransport(api))
    async with watcher:
        watcher._pipeline.prune_from = 2
        await push.send(make_event("started", "j"), make_event("completed", "j"))
        ended: list[JobEvent] = []

        async def wait() -> None:
            ended.append(await watcher.wait("j", timeout=30))

        async with anyio.create_task_group() as nursery:
            nursery.start_soon(wait)
            await asked.wait()
            for n in range(40):
                await push.send(make_event("started", f"other_{n}"))
            assert "j" in watcher._pipeline.jobs
            answer.set()
    assert [event.key for event in ended] == ["j:terminal#1"]


async def test_an_ended_job_s_record_goes_too_and_its_end_still_holds() -> None:
    delivered: list[JobEvent] = []
    pipe = pipeline(delivered)
    asked = time.time()
    await pipe.deliver([*running("ended"), make_event("completed", "ended", total=9)])
    for n in range(1000):
        await pipe.deliver(running(f"job_{n}"))
    assert "ended" not in pipe.jobs
    # A poll asked before the end, answered now: the store's state says it is old news.
    before = len(delivered)
    await pipe.deliver(running("ended", completed=4), authoritative=True, as_of=asked)
    assert len(delivered) == before


async def test_what_a_forgotten_job_sends_again_is_still_dropped() -> None:
    delivered: list[JobEvent] = []
    pipe = pipeline(delivered)
    await pipe.deliver(running("again", completed=5))
    for n in range(1000):
        await pipe.deliver(running(f"job_{n}"))
    assert "again" not in pipe.jobs
    before = len(delivered)
    await pipe.deliver(running("again", completed=5) + running("again", completed=3))
    # The store remembers the start, the key and the count: the record was only a shortcut.
    assert len(delivered) == before
    assert pipe.dropped["stale"] == 1
    await pipe.deliver(running("again", completed=6))
    assert [e.completed for e in delivered[before:]] == [6]
