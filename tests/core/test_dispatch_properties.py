"""Properties of the dispatcher under any batches and subscriptions: each subscription gets
exactly the events it matches, in order, and every event leaves the inbox exactly once, after
all its subscribers have handled it."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Sequence

import anyio
import anyio.lowlevel
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from jobwatch import EventKind, JobEvent
from jobwatch._dispatch import Dispatcher, Subscription
from jobwatch._guard import decide
from jobwatch.stores.memory import MemoryStore
from jobwatch.testing import make_event

JOBS = ("j1", "j2", "j3")
KINDS = ("progress", "page", "completed")


class AckCounting(MemoryStore):
    """A memory store that counts how often each key is acknowledged, checks that an
    acknowledged event was handled by every subscriber it went to, and lets other tasks run
    while it acknowledges."""

    def __init__(self) -> None:
        super().__init__()
        self.acked: Counter[str] = Counter()
        self.handled: Counter[str] = Counter()
        self.expected: dict[str, int] = {}

    async def ack_batch(self, keys: Sequence[str]) -> None:
        for key in keys:
            assert self.handled[key] == self.expected[key], key
        self.acked.update(keys)
        # As a store that answers later does: other tasks run meanwhile.
        await anyio.lowlevel.checkpoint()
        await super().ack_batch(keys)


@st.composite
def workloads(
    draw: st.DrawFn,
) -> tuple[list[JobEvent], list[int], list[tuple[str | None, tuple[str, ...] | None, bool]], int]:
    count = draw(st.integers(1, 40))
    events = []
    for n in range(count):
        kind = draw(st.sampled_from(KINDS))
        job = draw(st.sampled_from(JOBS))
        if kind == "page":
            events.append(make_event("page", job, url=f"https://e/{n}"))
        elif kind == "completed":
            events.append(make_event("completed", job, key=f"{job}:terminal:{n}"))
        else:
            events.append(make_event("progress", job, completed=n))
    cuts = sorted(draw(st.sets(st.integers(1, count - 1), max_size=count - 1))) if count > 1 else []
    subscriptions = draw(
        st.lists(
            st.tuples(
                st.sampled_from((None, *JOBS)),
                st.one_of(
                    st.none(), st.lists(st.sampled_from(KINDS), min_size=1, unique=True).map(tuple)
                ),
                st.booleans(),
            ),
            max_size=4,
        )
    )
    return events, cuts, subscriptions, draw(st.integers(1, 4))


async def dispatched(
    events: list[JobEvent],
    cuts: list[int],
    subscriptions: list[tuple[str | None, tuple[str, ...] | None, bool]],
    queue_size: int,
) -> tuple[AckCounting, list[JobEvent], list[list[JobEvent]], list[Subscription]]:
    store = AckCounting()
    recorded = []
    for event in events:
        verdict = await store.record(event.job_id, functools.partial(decide, event=event), ttl=60)
        if verdict.event is not None:  # (the guard drops progress after a job's end, say)
            recorded.append(verdict.event)
    dispatcher = Dispatcher(store, queue_size=queue_size)
    got: list[list[JobEvent]] = []
    subs = []
    for job_id, kinds, is_async in subscriptions:
        mine: list[JobEvent] = []
        got.append(mine)

        def handle(event: JobEvent, mine: list[JobEvent] = mine) -> None:
            mine.append(event)
            store.handled[event.key] += 1

        if is_async:

            async def callback(
                event: JobEvent, handle: Callable[[JobEvent], None] = handle
            ) -> None:
                await anyio.lowlevel.checkpoint()  # other tasks run in between
                handle(event)

            subs.append(dispatcher.subscribe(callback, kinds=kinds, job_id=job_id))
        else:
            subs.append(dispatcher.subscribe(handle, kinds=kinds, job_id=job_id))
    for event in recorded:
        store.expected[event.key] = sum(1 for sub in subs if _matches(sub, event))
    bounds = [0, *(cut for cut in cuts if cut < len(recorded)), len(recorded)]
    async with anyio.create_task_group() as tg:
        dispatcher.start(tg)
        for start, end in zip(bounds, bounds[1:], strict=False):
            await dispatcher.dispatch_batch(recorded[start:end])
        await anyio.wait_all_tasks_blocked()
        dispatcher.close()
    return store, recorded, got, subs


def _matches(sub: Subscription, event: JobEvent) -> bool:
    return (sub.job_id is None or sub.job_id == event.job_id) and (
        sub.kinds is None or event.kind in sub.kinds
    )


@settings(max_examples=300, deadline=None)
@given(workloads())
def test_each_subscription_gets_its_events_in_order_and_each_leaves_the_inbox_once(
    workload: tuple[
        list[JobEvent], list[int], list[tuple[str | None, tuple[str, ...] | None, bool]], int
    ],
) -> None:
    store, recorded, got, subs = trio.run(dispatched, *workload)
    for sub, mine in zip(subs, got, strict=True):
        assert mine == [event for event in recorded if _matches(sub, event)]
    assert store.acked == Counter(event.key for event in recorded)
    assert store._inbox == {}
    assert all(isinstance(event.kind, EventKind) for event in recorded)
