"""watch() and wait() against the Watcher's lifetime: a Watcher that closes under them, and a
watch that ends in an error while its reader is behind."""

from __future__ import annotations

import anyio
import anyio.abc
import httpx
import pytest

import jobwatch
from jobwatch.stores.memory import MemoryStore
from jobwatch.testing import ScriptedTransport, make_event

pytestmark = pytest.mark.anyio

CONFIG = jobwatch.Config.from_mapping(
    {"jobwatch": {"store": "memory", "safety_poll": 0}}, environ={}
)


def watcher(**options: object) -> jobwatch.Watcher:
    return jobwatch.Watcher(
        CONFIG,
        transports=[ScriptedTransport()],
        store=MemoryStore(),
        **options,  # type: ignore[arg-type]
    )


async def test_a_wait_in_a_task_that_outlives_the_block_ends_when_the_watcher_closes() -> None:
    # Not an hour later with "did not finish; check the job": the job was fine.
    ended: list[BaseException] = []

    async def wait(w: jobwatch.Watcher) -> None:
        try:
            await w.wait("job_1", timeout=3600)
        except jobwatch.JobwatchError as exc:
            ended.append(exc)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            async with watcher() as w:
                tg.start_soon(wait, w)
                await anyio.wait_all_tasks_blocked()
    assert len(ended) == 1 and type(ended[0]) is jobwatch.WatcherClosed
    assert "job_1" in str(ended[0]) and "async with" in str(ended[0])


async def test_a_watch_in_a_task_that_outlives_the_block_ends_after_what_was_queued() -> None:
    seen: list[str] = []
    ended: list[BaseException] = []

    async def watch(w: jobwatch.Watcher) -> None:
        try:
            async for event in w.watch("job_1"):
                seen.append(event.key)
        except jobwatch.JobwatchError as exc:
            ended.append(exc)

    transport = ScriptedTransport()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            async with jobwatch.Watcher(CONFIG, transports=[transport], store=MemoryStore()) as w:
                tg.start_soon(watch, w)
                await anyio.wait_all_tasks_blocked()
                await transport.send(make_event("progress", "job_1", completed=1))
                await anyio.wait_all_tasks_blocked()
    assert seen == ["job_1:progress:1#1"]
    assert len(ended) == 1 and type(ended[0]) is jobwatch.WatcherClosed


async def test_aclose_inside_the_block_then_leaving_it_closes_once() -> None:
    with anyio.fail_after(5):
        async with watcher() as w:
            await w.aclose()
        with pytest.raises(jobwatch.WatcherClosed):
            await w.wait("job_1", timeout=1)


async def test_a_watch_that_ends_in_an_error_behind_a_full_queue_still_raises_it() -> None:
    # The job's watch ends (404) while its reader has 1000 events unread: the error must come
    # after them, not be lost to a full queue (the reader then waited for its timeout).
    def api(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            404, json={"success": False, "error": {"code": "not_found", "message": "no job"}}
        )

    transport = ScriptedTransport()
    w = jobwatch.Watcher(
        CONFIG,
        transports=[transport],
        store=MemoryStore(),
        http_transport=httpx.MockTransport(api),
    )
    go = anyio.Event()
    seen: list[int | None] = []
    ended: list[BaseException] = []

    async def read() -> None:
        try:
            async for event in w.watch("job_1"):
                seen.append(event.completed)
                await go.wait()  # behind from the first event on
        except jobwatch.JobwatchError as exc:
            ended.append(exc)

    with anyio.fail_after(10):
        async with w, anyio.create_task_group() as tg:
            tg.start_soon(read)
            await anyio.wait_all_tasks_blocked()
            await transport.send(make_event("progress", "job_1", completed=1))
            await anyio.wait_all_tasks_blocked()
            await transport.send(
                *(make_event("progress", "job_1", completed=n) for n in range(2, 1002))
            )
            await anyio.wait_all_tasks_blocked()
            await transport.reconcile("job_1")  # the API says the job is gone
            go.set()
    assert seen == list(range(1, 1002))
    assert len(ended) == 1 and isinstance(ended[0], jobwatch.JobNotFound)


class _Store(MemoryStore):
    closed = False

    async def aclose(self) -> None:
        self.closed = True
        await super().aclose()


async def test_aclose_in_another_task_ends_the_block_and_returns_once_closed() -> None:
    store = _Store()
    w = jobwatch.Watcher(CONFIG, transports=[ScriptedTransport()], store=store)
    reached: list[str] = []

    async def owner(task_status: anyio.abc.TaskStatus[None]) -> None:
        async with w:
            task_status.started()
            await w.wait("job_1", timeout=3600)
            reached.append("after the wait")  # never: the body is cancelled
        reached.append("after the block")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(owner)
            await anyio.wait_all_tasks_blocked()
            await w.aclose()
            assert store.closed
    assert reached == ["after the block"]


async def test_a_callback_may_close_its_watcher() -> None:
    transport = ScriptedTransport()
    w = jobwatch.Watcher(CONFIG, transports=[transport], store=MemoryStore())

    async def stop(event: jobwatch.JobEvent) -> None:
        await w.aclose()

    w.subscribe(stop)
    with anyio.fail_after(5):
        async with w:
            await transport.send(make_event("completed"))
            await anyio.sleep_forever()


class _LosingStore(MemoryStore):
    """A store that can lose what this process owns behind its back (as a lease runs out)."""

    def __init__(self) -> None:
        super().__init__()
        self.lost = anyio.Event()

    async def monitor(self) -> None:
        await self.lost.wait()
        raise jobwatch.JobwatchError("the inbox went to another process; restart this one")


async def test_a_store_that_loses_its_inbox_ends_the_watcher_with_its_error() -> None:
    # What the callbacks still held would otherwise be dispatched here and by the process
    # that took the inbox over.
    store = _LosingStore()
    transport = ScriptedTransport()
    w = jobwatch.Watcher(CONFIG, transports=[transport], store=store)
    gate = anyio.Event()
    handled: list[str] = []

    async def slow(event: jobwatch.JobEvent) -> None:
        await gate.wait()
        handled.append(event.key)

    w.subscribe(slow)
    with anyio.fail_after(5), pytest.raises(jobwatch.JobwatchError, match="restart this one"):
        async with w:
            await transport.send(make_event("started", "job_1"), make_event("page", "job_1"))
            await anyio.wait_all_tasks_blocked()  # the first callback waits, the second queued
            store.lost.set()
            await anyio.sleep_forever()  # ended by the store's error, not by the block
    assert handled == []
    assert len(await store.pending()) == 2  # left for whoever owns the inbox now


async def test_a_wait_in_another_task_ends_with_the_error_of_a_store_that_lost_its_inbox() -> None:
    # A web application's request handlers wait in tasks of their own, the Watcher in the
    # app's lifespan: they heard "wait for the job inside the Watcher's async with block"
    # instead of why the Watcher ended (restart this one), as they hear a transport's.
    store = _LosingStore()
    w = jobwatch.Watcher(CONFIG, transports=[ScriptedTransport()], store=store)
    waited: list[BaseException] = []

    async def wait() -> None:
        try:
            await w.wait("job_1", timeout=3600)
        except jobwatch.JobwatchError as exc:
            waited.append(exc)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            with pytest.raises(jobwatch.JobwatchError, match="restart this one"):
                async with w:
                    tg.start_soon(wait)
                    await anyio.wait_all_tasks_blocked()
                    store.lost.set()
                    await anyio.sleep_forever()
    assert [str(e) for e in waited] == ["the inbox went to another process; restart this one"]
