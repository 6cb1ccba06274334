"""Regressions: hangs, lost events and overwritten state found in review, each pinned here."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import anyio
import pytest

import jobwatch
from jobwatch._dispatch import Dispatcher
from jobwatch.abc import JobState, Verdict
from jobwatch.stores.memory import MemoryStore
from jobwatch.stores.sqlite import SQLiteStore
from jobwatch.testing import ScriptedTransport, make_event

pytestmark = pytest.mark.anyio

CONFIG = jobwatch.Config.from_mapping(
    {"jobwatch": {"store": "memory", "safety_poll": 0}}, environ={}
)


async def test_a_cancelled_group_commit_leader_leaves_no_caller_waiting() -> None:
    store = SQLiteStore(":memory:")
    await store.open()
    results: list[int] = []

    async def leader() -> None:
        with anyio.move_on_after(0.05):
            await store._tx(lambda: time.sleep(0.3))  # a slow batch, cancelled meanwhile

    async def follower() -> None:
        await anyio.sleep(0.01)
        results.append(await store._tx(lambda: 42))  # queued behind the leader's batch

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(leader)
            tg.start_soon(follower)
    await store.aclose()
    assert results == [42]


async def test_dispatches_waiting_on_one_full_queue_all_get_through() -> None:
    dispatcher = Dispatcher(MemoryStore(), queue_size=1)
    gate, got = anyio.Event(), []

    async def slow(event: jobwatch.JobEvent) -> None:
        await gate.wait()
        got.append(event.key)

    dispatcher.subscribe(slow)
    async with anyio.create_task_group() as tg:
        dispatcher.start(tg)
        await dispatcher.dispatch(make_event("progress", "j1", completed=1))
        for job in ("j2", "j3"):  # both wait for room in the same queue
            tg.start_soon(dispatcher.dispatch, make_event("progress", job, completed=1))
        await anyio.wait_all_tasks_blocked()  # j1 in the callback, j2 and j3 waiting for room
        gate.set()
        with anyio.fail_after(2):
            while len(got) < 3:  # noqa: ASYNC110 - the dispatcher offers nothing to wait on
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    assert sorted(got) == ["j1:progress:1", "j2:progress:1", "j3:progress:1"]


class _Overlapping(SQLiteStore):
    """Marking job j1 watched overlaps the recording of its terminal event, in the one order
    that could undo it: the mark reads (or begins) first, the terminal event is recorded,
    and only then may the mark write."""

    def __init__(self) -> None:
        super().__init__(":memory:")
        self.marking = anyio.Event()  # marking j1 watched has read its state, or begun
        self.ended = anyio.Event()  # j1's terminal event is recorded
        plain = self.record

        async def record(
            job_id: str | None, decide: Callable[[JobState | None], Verdict], *, ttl: float
        ) -> Verdict:
            if job_id == "j1":
                self.marking.set()
            return await plain(job_id, decide, ttl=ttl)

        # On the instance: a subclass's own record() would take every event off the group
        # commit (record_batch goes through record() then).
        self.record = record  # type: ignore[method-assign]

    async def get_job(self, job_id: str) -> JobState | None:
        state = await super().get_job(job_id)
        if job_id == "j1":
            self.marking.set()
        return state

    async def put_job(self, state: JobState) -> None:
        if state.job_id == "j1":
            await self.ended.wait()
        await super().put_job(state)

    async def record_batch(
        self,
        records: Sequence[tuple[str | None, Callable[[JobState | None], Verdict]]],
        *,
        ttl: float,
        claim: tuple[str, float] | None = None,
    ) -> list[Verdict]:
        ours = any(job_id == "j1" for job_id, _ in records)
        if ours and not self.ended.is_set():
            await self.marking.wait()
        verdicts = await super().record_batch(records, ttl=ttl, claim=claim)
        if ours and any(v.event is not None and v.event.terminal for v in verdicts):
            self.ended.set()
        return verdicts


async def test_marking_a_job_watched_never_undoes_its_terminal_state() -> None:
    store = _Overlapping()
    transport = ScriptedTransport(handler=lambda job: [make_event("completed", job)])
    seen: list[str] = []
    completed = anyio.Event()
    late = make_event("progress", "j1", completed=2, total=3)
    outcome: list[str | None] = []  # what the pipeline did with the late event
    decided = anyio.Event()

    def show(event: jobwatch.JobEvent) -> None:
        seen.append(event.kind.value)
        if event.kind.value == "completed":
            completed.set()

    def observe(event: jobwatch.JobEvent, dropped: str | None) -> None:
        if event.job_id == "j1" and event.kind is late.kind:
            outcome.append(dropped)
            decided.set()

    async with jobwatch.Watcher(CONFIG, transports=[transport], store=store) as watcher:
        watcher._pipeline.observers.append(observe)
        watcher.subscribe(show)
        watcher.subscribe(lambda e: None, job_id="j1")  # watching makes it complete at once
        with anyio.fail_after(5):
            await completed.wait()
            # Marking it watched (in a task of its own) has reached the store too.
            while (state := await store.get_job("j1")) is None or not state.watched:
                pass
        await transport.send(late)
        with anyio.fail_after(5):
            await decided.wait()
        state = await store.get_job("j1")
    assert outcome != [None], "the late event was dispatched after the terminal one"
    assert state is not None and state.terminal and state.watched
    assert seen == ["completed"]


async def test_a_failing_dead_letter_store_stops_nothing() -> None:
    class DiskFull(MemoryStore):
        async def dead_letter(self, event: jobwatch.JobEvent, subscriber: str, error: str) -> None:
            raise jobwatch.JobwatchError("disk full")

    transport = ScriptedTransport()
    watcher = jobwatch.Watcher(CONFIG, transports=[transport], store=DiskFull())
    other: list[str] = []

    def broken(event: jobwatch.JobEvent) -> None:
        raise ValueError("boom")

    watcher.subscribe(broken, kinds=("progress",), retry=jobwatch.Retry(backoff=0))
    watcher.subscribe(lambda e: other.append(e.kind.value), kinds=("completed",))
    async with watcher:
        await transport.send(make_event("progress", "j1", completed=1))
        await anyio.sleep(0.1)
        await transport.send(make_event("completed", "j1"))
        await anyio.sleep(0.1)
    assert other == ["completed"]


async def test_jobs_subscribed_before_entering_are_durably_watched() -> None:
    store = MemoryStore()
    watcher = jobwatch.Watcher(CONFIG, transports=[ScriptedTransport()], store=store)
    watcher.subscribe(lambda e: None, job_id="early")
    async with watcher:
        watcher.subscribe(lambda e: None, job_id="late")
        await anyio.sleep(0.05)
        active = {s.job_id for s in await store.active_jobs()}
    assert active == {"early", "late"}


async def test_a_store_that_fails_to_open_closes_what_was_opened() -> None:
    class Broken(MemoryStore):
        closed = False

        async def active_jobs(self) -> list[jobwatch.abc.JobState]:
            raise jobwatch.JobwatchError("cannot read")

        async def aclose(self) -> None:
            Broken.closed = True

    watcher = jobwatch.Watcher(CONFIG, transports=[ScriptedTransport()], store=Broken())
    with pytest.raises(jobwatch.JobwatchError, match="cannot read"):
        async with watcher:
            pass
    assert Broken.closed and watcher._api._http is not None and watcher._api._http.is_closed


async def test_a_fleet_member_never_hides_a_new_runs_started() -> None:
    class Shared(MemoryStore):
        shared = True  # as the Redis store: other processes record into it too

    store = Shared()
    a, b = ScriptedTransport(name="a"), ScriptedTransport(name="b", authoritative=True)
    seen_a: list[str] = []
    async with (
        jobwatch.Watcher(CONFIG, transports=[a], store=store) as first,
        jobwatch.Watcher(CONFIG, transports=[b], store=store),
    ):
        first.subscribe(lambda e: seen_a.append(e.key))
        await a.send(make_event("started", "j1"))  # run 1, through this member
        await b.send(make_event("completed", "j1"))  # the other member ends run 1
        await b.send(make_event("progress", "j1", status="queued", completed=0))  # retried
        await a.send(make_event("started", "j1"))  # run 2 starts, seen here
        await anyio.sleep(0.05)
    assert seen_a == ["j1:started#1", "j1:started#2"]


async def test_processes_sharing_a_sqlite_file_never_hide_a_new_runs_started(
    tmp_path: Path,
) -> None:
    # Two processes' stores on one file: what one records, the other's shortcuts cannot know.
    path = tmp_path / "state.db"
    a, b = ScriptedTransport(name="a"), ScriptedTransport(name="b", authoritative=True)
    seen_a: list[str] = []
    async with (
        jobwatch.Watcher(CONFIG, transports=[a], store=SQLiteStore(path)) as first,
        jobwatch.Watcher(CONFIG, transports=[b], store=SQLiteStore(path)),
    ):
        first.subscribe(lambda e: seen_a.append(e.key))
        await a.send(make_event("started", "j1"))  # run 1, through this process
        await b.send(make_event("completed", "j1"))  # the other process ends run 1
        await b.send(make_event("progress", "j1", status="queued", completed=0))  # retried
        await a.send(make_event("started", "j1"))  # run 2 starts, seen here
        await anyio.wait_all_tasks_blocked()
    assert seen_a == ["j1:started#1", "j1:started#2"]
