"""The Watcher with a scripted transport: subscribe, watch, wait, dead letters, restart."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
import trio.testing

import jobwatch
from jobwatch.stores.memory import MemoryStore
from jobwatch.stores.sqlite import SQLiteStore
from jobwatch.testing import ScriptedTransport, make_event

pytestmark = pytest.mark.anyio

CONFIG = jobwatch.Config.from_mapping({"jobwatch": {"api_key": "rdr_test", "store": "memory"}})
MOCK = [
    pytest.param(
        ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)}), id="trio-mockclock"
    )
]


def lifecycle(job: str = "job_1") -> list[jobwatch.JobEvent]:
    return [
        make_event("started", job),
        make_event("progress", job, completed=1, total=3),
        make_event("page", job, url="https://example.com/1"),
        make_event("progress", job, completed=3, total=3),
        make_event("completed", job, completed=3, total=3),
    ]


async def test_wait_returns_the_terminal_event() -> None:
    transport = ScriptedTransport(handler=lifecycle)
    async with jobwatch.Watcher(CONFIG, transports=[transport], store=MemoryStore()) as w:
        final = await w.wait("job_1", timeout=5)
    assert final.kind is jobwatch.EventKind.COMPLETED
    assert final.key == "job_1:terminal#1"


async def test_watch_yields_each_event_once_and_ends() -> None:
    doubled = lambda job: lifecycle(job) + lifecycle(job)  # noqa: E731
    transport = ScriptedTransport(handler=doubled)
    async with jobwatch.Watcher(CONFIG, transports=[transport], store=MemoryStore()) as w:
        kinds = [e.kind.value async for e in w.watch("job_1")]
    assert kinds == ["started", "progress", "page", "progress", "completed"]


async def test_callbacks_by_kind_sync_and_async() -> None:
    seen: list[str] = []
    transport = ScriptedTransport(lifecycle())
    watcher = jobwatch.Watcher(CONFIG, transports=[transport], store=MemoryStore())

    @watcher.on("completed", "failed")
    async def done(event: jobwatch.JobEvent) -> None:
        seen.append(f"async:{event.kind}")

    watcher.subscribe(lambda e: seen.append(f"sync:{e.kind}"), kinds=("progress",))
    async with watcher:
        await anyio.sleep(0.2)
    assert sorted(seen) == ["async:completed", "sync:progress", "sync:progress"]


@pytest.mark.parametrize("anyio_backend", MOCK)
async def test_wait_times_out() -> None:
    transport = ScriptedTransport()
    async with jobwatch.Watcher(CONFIG, transports=[transport], store=MemoryStore()) as w:
        with pytest.raises(jobwatch.WatchTimeout, match="did not finish within 30"):
            await w.wait("job_1", timeout=30)


@pytest.mark.parametrize("anyio_backend", MOCK)
async def test_failing_callback_is_retried_then_dead_lettered() -> None:
    calls: list[str] = []
    store = MemoryStore()

    def broken(event: jobwatch.JobEvent) -> None:
        calls.append(event.key)
        raise RuntimeError("boom")

    good: list[str] = []
    transport = ScriptedTransport([make_event("completed", "j")])
    watcher = jobwatch.Watcher(CONFIG, transports=[transport], store=store)
    watcher.subscribe(broken)
    watcher.subscribe(lambda e: good.append(e.key))
    async with watcher:
        await anyio.sleep(60)
        stats = watcher.statistics()
    assert len(calls) == 4 and good == ["j:terminal#1"]
    assert stats.dead_letters == 1 and stats.callback_errors == 4
    assert [e.key for e, _, _ in await store.dead_letters()] == ["j:terminal#1"]
    assert await store.pending() == []


async def test_reuse_after_close_raises() -> None:
    watcher = jobwatch.Watcher(CONFIG, transports=[ScriptedTransport()], store=MemoryStore())
    async with watcher:
        pass
    with pytest.raises(jobwatch.WatcherClosed, match="create a new Watcher"):
        async with watcher:
            pass
    with pytest.raises(jobwatch.WatcherClosed):
        watcher.subscribe(print)


async def test_inbox_is_replayed_after_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    started = anyio.Event()

    async def stuck(event: jobwatch.JobEvent) -> None:
        started.set()
        await anyio.sleep_forever()

    transport = ScriptedTransport([make_event("completed", "j")])
    watcher = jobwatch.Watcher(CONFIG, transports=[transport], store=SQLiteStore(path))
    watcher.subscribe(stuck)
    async with watcher:
        await started.wait()  # recorded, handed to the callback, never finished: a crash

    got: list[str] = []
    again = jobwatch.Watcher(CONFIG, transports=[ScriptedTransport()], store=SQLiteStore(path))
    again.subscribe(lambda e: got.append(e.key))
    async with again:
        await anyio.sleep(0.1)
    assert got == ["j:terminal#1"]
    check = SQLiteStore(path)
    await check.open()
    assert await check.pending() == []
    await check.aclose()


@pytest.mark.parametrize("anyio_backend", MOCK)
async def test_slow_subscriber_does_not_stall_others() -> None:
    fast: list[int] = []
    events = [make_event("progress", "j", completed=n) for n in range(50)]
    transport = ScriptedTransport(events)
    watcher = jobwatch.Watcher(CONFIG, transports=[transport], store=MemoryStore())

    async def slow(event: jobwatch.JobEvent) -> None:
        await anyio.sleep(3600)

    watcher.subscribe(slow)
    watcher.subscribe(lambda e: fast.append(e.completed or 0))
    async with watcher:
        await anyio.sleep(1)
        assert fast == list(range(50))
