"""The dispatcher's tasks (one kept by a subscription to every job, none for idle ones), and
how handled events leave the store's inbox."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import anyio
import pytest

import jobwatch
from jobwatch import JobEvent
from jobwatch._dispatch import Dispatcher
from jobwatch._guard import decide
from jobwatch.stores.memory import MemoryStore
from jobwatch.testing import ScriptedTransport, make_event

pytestmark = pytest.mark.anyio


class CountingTaskGroup:
    """A task group that counts the tasks started in it."""

    def __init__(self, tg: Any) -> None:
        self._tg = tg
        self.started = 0

    def start_soon(self, *args: Any, **kwargs: Any) -> None:
        self.started += 1
        self._tg.start_soon(*args, **kwargs)


async def test_a_subscription_to_every_job_keeps_one_task_for_a_steady_flow() -> None:
    dispatcher = Dispatcher(MemoryStore())
    got: list[str] = []
    everyone = dispatcher.subscribe(lambda event: got.append(event.key))
    async with anyio.create_task_group() as tg:
        counting = CountingTaskGroup(tg)
        dispatcher.start(counting)  # type: ignore[arg-type]
        for n in range(20):
            await dispatcher.dispatch(make_event("progress", f"job_{n}", completed=1))
            await anyio.sleep(0.01)  # the queue runs empty between events
        assert len(got) == 20 and counting.started == 1
        everyone.cancel()  # wakes the parked task, which then ends
        with anyio.fail_after(2):
            while everyone._running:  # noqa: ASYNC110 - the task's end has no event
                await anyio.sleep(0.01)


async def test_a_subscription_to_one_job_has_a_task_only_while_it_has_events() -> None:
    dispatcher = Dispatcher(MemoryStore())
    got: list[jobwatch.JobEvent] = []
    mine = dispatcher.subscribe(got.append, job_id="job_1")
    async with anyio.create_task_group() as tg:
        counting = CountingTaskGroup(tg)
        dispatcher.start(counting)  # type: ignore[arg-type]
        for n in range(3):
            await dispatcher.dispatch(make_event("progress", "job_1", completed=n + 1))
            await anyio.sleep(0.01)
            assert not mine._running  # drained: its task has ended
        assert [e.completed for e in got] == [1, 2, 3] and counting.started == 3


async def test_closing_ends_a_parked_task_without_cancelling_anything() -> None:
    dispatcher = Dispatcher(MemoryStore())
    dispatcher.subscribe(lambda event: None)
    with anyio.fail_after(2):
        async with anyio.create_task_group() as tg:  # exits only once every task has ended
            dispatcher.start(tg)
            await dispatcher.dispatch(make_event("progress", "job_1", completed=1))
            await anyio.sleep(0.01)  # handled; the task is parked
            dispatcher.close()


class AckCountingStore(MemoryStore):
    """A memory store that keeps the keys of each ``ack_batch`` call."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[str]] = []

    async def ack_batch(self, keys: Sequence[str]) -> None:
        self.batches.append(list(keys))
        await super().ack_batch(keys)


async def _recorded(store: MemoryStore, count: int, job_id: str = "job_1") -> list[JobEvent]:
    """``count`` progress events of ``job_id``, recorded (in the store's inbox)."""
    events = []
    for n in range(count):
        event = make_event("progress", job_id, completed=n + 1)
        verdict = await store.record(job_id, functools.partial(decide, event=event), ttl=60)
        assert verdict.event is not None
        events.append(verdict.event)
    return events


async def test_handled_events_leave_the_inbox_together() -> None:
    store = AckCountingStore()
    dispatcher = Dispatcher(store)
    got: list[str] = []
    dispatcher.subscribe(lambda event: got.append(event.key))
    events = await _recorded(store, 300)
    async with anyio.create_task_group() as tg:
        dispatcher.start(tg)
        await dispatcher.dispatch_batch(events)
        await anyio.wait_all_tasks_blocked()
        assert got == [event.key for event in events]
        assert [len(keys) for keys in store.batches] == [256, 44]
        assert await store.pending() == []
        dispatcher.close()


async def test_an_event_no_one_wants_leaves_the_inbox_with_its_batch() -> None:
    store = AckCountingStore()
    dispatcher = Dispatcher(store)
    dispatcher.subscribe(lambda event: None, kinds=("completed",))
    events = await _recorded(store, 3)
    await dispatcher.dispatch_batch(events)
    assert store.batches == [[event.key for event in events]]
    assert await store.pending() == []


async def test_what_was_handled_leaves_the_inbox_while_a_callback_waits_to_be_retried() -> None:
    store = AckCountingStore()
    dispatcher = Dispatcher(store)
    calls: list[int | None] = []

    def callback(event: JobEvent) -> None:
        calls.append(event.completed)
        if event.completed == 2:
            raise RuntimeError("not yet")

    dispatcher.subscribe(callback, retry=jobwatch.Retry(attempts=2, backoff=3600))
    first, second = await _recorded(store, 2)
    async with anyio.create_task_group() as tg:
        dispatcher.start(tg)
        await dispatcher.dispatch_batch([first, second])
        await anyio.wait_all_tasks_blocked()  # the second waits an hour for its retry
        assert calls == [1, 2]
        assert [event.key for event in await store.pending()] == [second.key]
        tg.cancel_scope.cancel()


async def test_what_was_handled_leaves_the_inbox_before_an_async_callback_is_awaited() -> None:
    store = AckCountingStore()
    dispatcher = Dispatcher(store)
    release = anyio.Event()

    async def callback(event: JobEvent) -> None:
        if event.completed == 2:
            await release.wait()

    dispatcher.subscribe(callback)
    first, second = await _recorded(store, 2)
    async with anyio.create_task_group() as tg:
        dispatcher.start(tg)
        await dispatcher.dispatch_batch([first, second])
        await anyio.wait_all_tasks_blocked()  # the second's callback awaits
        assert [event.key for event in await store.pending()] == [second.key]
        release.set()
        await anyio.wait_all_tasks_blocked()
        assert await store.pending() == []
        dispatcher.close()


class SlowAckStore(MemoryStore):
    """A memory store whose ``ack_batch`` waits until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = anyio.Event()
        self.acking = anyio.Event()

    async def ack_batch(self, keys: Sequence[str]) -> None:
        self.acking.set()
        await self.release.wait()
        await super().ack_batch(keys)


@pytest.mark.parametrize("job_id", [None, "job_1"])
async def test_an_event_queued_while_the_handled_ones_are_acknowledged_is_handled(
    job_id: str | None,
) -> None:
    store = SlowAckStore()
    dispatcher = Dispatcher(store)
    got: list[int | None] = []
    dispatcher.subscribe(lambda event: got.append(event.completed), job_id=job_id)
    first, second = await _recorded(store, 2)
    async with anyio.create_task_group() as tg:
        dispatcher.start(tg)
        await dispatcher.dispatch(first)
        await store.acking.wait()  # the first was handled; its task acknowledges it
        tg.start_soon(dispatcher.dispatch, second)  # its own flush waits too
        await anyio.wait_all_tasks_blocked()
        store.release.set()
        await anyio.wait_all_tasks_blocked()
        assert got == [1, 2]
        assert await store.pending() == []
        dispatcher.close()


async def test_a_subscription_cancelled_during_an_ack_flush_is_not_called() -> None:
    store = SlowAckStore()
    dispatcher = Dispatcher(store)
    got: list[int | None] = []

    async def callback(event: JobEvent) -> None:
        got.append(event.completed)

    sub = dispatcher.subscribe(callback)
    first, second = await _recorded(store, 2)
    async with anyio.create_task_group() as tg:
        dispatcher.start(tg)
        await dispatcher.dispatch_batch([first, second])
        await store.acking.wait()  # the first was handled; acknowledged before the second
        sub.cancel()  # "events already queued are skipped"
        store.release.set()
        await anyio.wait_all_tasks_blocked()
        assert got == [1]
        dispatcher.close()


class SlowDeadLetterStore(MemoryStore):
    """A memory store whose ``dead_letter`` of ``slow`` waits until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.slow = ""
        self.release = anyio.Event()
        self.keeping = anyio.Event()

    async def dead_letter(self, event: JobEvent, subscriber: str, error: str) -> None:
        if event.key == self.slow:
            self.keeping.set()
            await self.release.wait()
        await super().dead_letter(event, subscriber, error)


async def test_a_dead_letter_replayed_before_its_ack_is_flushed_stays_in_the_inbox() -> None:
    store = SlowDeadLetterStore()
    dispatcher = Dispatcher(store)
    calls: list[int | None] = []

    def callback(event: JobEvent) -> None:
        calls.append(event.completed)
        if len(calls) <= 2:
            raise RuntimeError("down")

    dispatcher.subscribe(callback, retry=jobwatch.Retry(attempts=1))
    first, second = await _recorded(store, 2)
    store.slow = second.key
    async with anyio.create_task_group() as tg:
        dispatcher.start(tg)
        await dispatcher.dispatch_batch([first, second])
        await store.keeping.wait()  # the first is a dead letter; the second is being kept
        assert await store.replay_dead_letter(first.key)  # back in the inbox ...
        await dispatcher.dispatch(first, callbacks_only=True)  # ... and handed over again
        # Queued behind the second, not handled again yet: it stays in the inbox (a crash
        # now replays it).
        assert [event.key for event in await store.pending()] == [second.key, first.key]
        store.release.set()
        await anyio.wait_all_tasks_blocked()
        assert calls == [1, 2, 1]
        assert await store.pending() == []
        dispatcher.close()


class StuckDeadLetterStore(MemoryStore):
    """A memory store whose ``dead_letter`` never returns."""

    def __init__(self) -> None:
        super().__init__()
        self.keeping = anyio.Event()

    async def dead_letter(self, event: JobEvent, subscriber: str, error: str) -> None:
        self.keeping.set()
        await anyio.sleep_forever()


async def test_what_was_handled_leaves_the_inbox_when_the_watcher_closes() -> None:
    store = StuckDeadLetterStore()
    first = make_event("progress", "job_1", completed=1)
    second = make_event("progress", "job_1", completed=2)
    config = jobwatch.Config.from_mapping({"jobwatch": {"api_key": "rdr_test", "store": "memory"}})
    watcher = jobwatch.Watcher(
        config, transports=[ScriptedTransport([[first, second]])], store=store
    )
    got: list[int | None] = []

    def callback(event: JobEvent) -> None:
        got.append(event.completed)
        if event.completed == 2:
            raise RuntimeError("down")

    watcher.subscribe(callback, retry=jobwatch.Retry(attempts=1))
    async with watcher:
        await store.keeping.wait()  # the first was handled; the second is being kept
    assert got == [1, 2]
    # The next Watcher on this store replays the second (never kept), not the first.
    assert [event.completed for event in await store.pending()] == [2]


async def test_events_no_one_wants_leave_the_inbox_at_most_256_a_call() -> None:
    store = AckCountingStore()
    dispatcher = Dispatcher(store)
    dispatcher.subscribe(lambda event: None, kinds=("completed",))
    events = await _recorded(store, 600)
    await dispatcher.dispatch_batch(events)
    assert [len(keys) for keys in store.batches] == [256, 256, 88]
    assert await store.pending() == []


async def test_what_was_handled_leaves_the_inbox_before_a_returned_awaitable_is_awaited() -> None:
    store = AckCountingStore()
    dispatcher = Dispatcher(store)
    release = anyio.Event()

    def callback(event: JobEvent) -> Any:
        return release.wait() if event.completed == 2 else None

    dispatcher.subscribe(callback)
    first, second = await _recorded(store, 2)
    async with anyio.create_task_group() as tg:
        dispatcher.start(tg)
        await dispatcher.dispatch_batch([first, second])
        await anyio.wait_all_tasks_blocked()  # what the second's call returned is awaited
        assert [event.key for event in await store.pending()] == [second.key]
        release.set()
        await anyio.wait_all_tasks_blocked()
        assert await store.pending() == []
        dispatcher.close()
