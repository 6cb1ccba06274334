"""The dispatcher's tasks: one kept by a subscription to every job, none for idle ones."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import jobwatch
from jobwatch._dispatch import Dispatcher
from jobwatch.stores.memory import MemoryStore
from jobwatch.testing import make_event

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
