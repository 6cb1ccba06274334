"""The redis store: jobwatch's store conformance suite, and what a fleet adds to it."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import attrs
import pytest
import redis
from jobwatch_redis import RedisOptions, RedisStore, RedisUnavailable

from jobwatch import Config, ConfigError, JobEvent, Watcher
from jobwatch._guard import decide
from jobwatch.abc import JobState, Store
from jobwatch.stores.memory import MemoryStore
from jobwatch.testing import ScriptedTransport, StoreConformance, make_event

pytestmark = pytest.mark.redis


class TestRedisStoreConformance(StoreConformance):
    @pytest.fixture
    def make_store(self, redis_url: str, prefix: str) -> Callable[..., Store]:
        options = RedisOptions(url=redis_url, prefix=prefix, owner="conformance")
        return lambda clock: RedisStore(options, clock=clock)


@pytest.fixture
def options(redis_url: str, prefix: str) -> RedisOptions:
    return RedisOptions(url=redis_url, prefix=prefix, owner="r1", lease=0.6)


@pytest.fixture
async def fleet(options: RedisOptions) -> AsyncIterator[list[RedisStore]]:
    """Three stores of one namespace, each with its own owner and connection pool."""
    stores = [RedisStore(attrs.evolve(options, owner=f"r{n}")) for n in (1, 2, 3)]
    for store in stores:
        await store.open()
    try:
        yield stores
    finally:
        for store in stores:
            await store.aclose()


async def _record(store: Store, kind: str, job: str = "j1", **kw: object) -> bool:
    event = make_event(kind, job, **kw)  # type: ignore[arg-type]
    verdict = await store.record(job, functools.partial(decide, event=event), ttl=60)
    return verdict.event is not None


@pytest.mark.anyio
async def test_receivers_claim_each_key_once_between_them(fleet: list[RedisStore]) -> None:
    claimed: list[str] = []

    async def receive(store: RedisStore, n: int) -> None:
        if await _record(store, "page", url=f"https://example.com/{n}"):
            claimed.append(store.owner)

    async with anyio.create_task_group() as tg:
        for n in range(30):
            for store in fleet:  # every delivery reaches all three receivers at once
                tg.start_soon(receive, store, n)
    assert len(claimed) == 30
    inboxes = [len(await store.pending()) for store in fleet]
    assert sum(inboxes) == 30


@pytest.mark.anyio
async def test_concurrent_progress_never_clobbers_state(fleet: list[RedisStore]) -> None:
    async with anyio.create_task_group() as tg:
        for n in range(1, 25):
            tg.start_soon(functools.partial(_record, fleet[n % 3], "progress", "j9", completed=n))
    state = await fleet[0].get_job("j9")
    assert state is not None and state.completed == 24


def _batch(events: list[JobEvent]) -> list[tuple[str | None, Any]]:
    return [(e.job_id, functools.partial(decide, event=e)) for e in events]


@pytest.mark.anyio
async def test_a_batch_is_one_round_trip(options: RedisOptions) -> None:
    store = RedisStore(options)
    await store.open()
    trips = 0
    call = store.client.call

    async def counted(fn: Any, **kw: Any) -> Any:
        nonlocal trips
        trips += 1
        return await call(fn, **kw)

    store.client.call = counted  # type: ignore[method-assign]
    try:
        for step in range(1, 4):  # ten jobs, each a little further each read
            events = [make_event("progress", f"j{n}", completed=step) for n in range(10)]
            before = trips
            verdicts = await store.record_batch(_batch(events), ttl=60)
            assert all(v.event is not None for v in verdicts)
            assert trips - before == 1
    finally:
        await store.aclose()


@pytest.mark.anyio
async def test_a_batch_s_claim_rides_the_round_trip_that_commits_its_last_job(
    fleet: list[RedisStore],
) -> None:
    # A webhook delivery's identity is claimed with its events: one round trip where the
    # store's view is fresh, and never before every job of the batch is committed.
    mine, other = fleet[0], fleet[1]
    claim_key = mine.keys.claim("delivery:x")
    trips: list[bool] = []
    call = mine.client.call

    async def noting(fn: Any, **kw: Any) -> Any:
        answer = await call(fn, **kw)
        trips.append(await call(lambda r: r.exists(claim_key)) == 1)
        return answer

    await mine.record_batch(_batch([make_event("progress", "j1", completed=1)]), ttl=60)
    await other.record_batch(_batch([make_event("progress", "j1", completed=2)]), ttl=60)
    mine.client.call = noting  # type: ignore[method-assign]
    events = [make_event("progress", "j2", completed=1), make_event("progress", "j1", completed=3)]
    verdicts = await mine.record_batch(_batch(events), ttl=60, claim=("delivery:x", 60))
    assert all(v.event is not None for v in verdicts)
    assert trips == [False, True]  # j1 changed under it: decided again, then claimed
    trips.clear()
    events = [make_event("progress", "j3", completed=1)]
    await mine.record_batch(_batch(events), ttl=60, claim=("delivery:y", 60))
    assert len(trips) == 1 and await mine.claimed("delivery:y")


@pytest.mark.anyio
async def test_batches_of_receivers_claim_each_key_once_and_keep_the_furthest_count(
    fleet: list[RedisStore],
) -> None:
    # Every receiver gets every read, as batches about the same jobs: the compare-and-set
    # sends a receiver whose view is stale back to decide on what Redis holds.
    delivered: list[str] = []

    async def receive(store: RedisStore, step: int) -> None:
        events = [make_event("progress", f"j{n}", completed=step) for n in range(5)]
        verdicts = await store.record_batch(_batch(events), ttl=60)
        delivered.extend(v.event.key for v in verdicts if v.event is not None)

    for step in (1, 3, 2, 4):
        async with anyio.create_task_group() as tg:
            for store in fleet:
                tg.start_soon(receive, store, step)
    assert sorted(delivered) == sorted(f"j{n}:progress:{c}#1" for n in range(5) for c in (1, 3, 4))
    for n in range(5):
        state = await fleet[0].get_job(f"j{n}")
        assert state is not None and state.completed == 4


@pytest.mark.anyio
async def test_dead_owner_inbox_is_adopted_in_order(options: RedisOptions) -> None:
    first = RedisStore(options)
    await first.open()
    for n in range(3):
        await _record(first, "progress", completed=n)
    await first.aclose()  # gone without dispatching: its lease is given back
    second = RedisStore(attrs.evolve(options, owner="r2"))
    await second.open()
    try:
        keys = [e.key for e in await second.pending()]
        assert keys == [f"j1:progress:{n}#1" for n in range(3)]
        await second.ack(keys[0])
        assert [e.key for e in await second.pending()] == keys[1:]
    finally:
        await second.aclose()


@pytest.mark.anyio
async def test_a_live_owner_keeps_its_inbox(fleet: list[RedisStore]) -> None:
    await _record(fleet[0], "started")
    await anyio.sleep(0.8)  # longer than the lease: only the heartbeat keeps it
    assert await fleet[1].pending() == []
    assert [e.key for e in await fleet[0].pending()] == ["j1:started#1"]


@pytest.mark.anyio
async def test_an_owner_name_in_use_is_refused(options: RedisOptions) -> None:
    first = RedisStore(options)
    await first.open()
    try:
        with pytest.raises(ConfigError, match="in use by another live process"):
            await RedisStore(options).open()
    finally:
        await first.aclose()


@pytest.mark.anyio
async def test_unreachable_redis_fails_record_quickly() -> None:
    store = RedisStore(
        RedisOptions(url="redis://127.0.0.1:1/0", owner="x", timeout=0.2, record_deadline=0.3)
    )
    with anyio.fail_after(5):
        with pytest.raises(RedisUnavailable, match="unavailable"):
            await store.record("j1", functools.partial(decide, event=make_event("started")), ttl=60)
    store.client.close()


@pytest.mark.anyio
async def test_watchers_sharing_the_store_dispatch_each_event_once(
    options: RedisOptions,
) -> None:
    events = [make_event("page", f"j{n % 4}", url=f"https://e/{n}") for n in range(40)]
    events += [make_event("completed", f"j{n}") for n in range(4)]
    seen: list[str] = []
    config = Config.from_mapping({"jobwatch": {"transport": "poll"}})
    async with anyio.create_task_group() as tg:
        for n in (1, 2, 3):
            # A lease of seconds, not the fixture's 0.6 s: no lease runs out here, and three
            # Watchers in one process on a loaded machine stalled its renewal past 0.5 s.
            store = RedisStore(attrs.evolve(options, owner=f"w{n}", lease=10.0))
            tg.start_soon(_run_watcher, config, store, events, seen)
    assert sorted(seen) == sorted(e.key + "#1" for e in events)


async def _run_watcher(
    config: Config, store: RedisStore, events: list[JobEvent], seen: list[str]
) -> None:
    transport = ScriptedTransport(events)
    async with Watcher(config, transports=[transport], store=store) as watcher:
        watcher.subscribe(lambda e: seen.append(e.key))
        with anyio.fail_after(10):
            # Done when every event has been decided (delivered or dropped: events_in counts
            # one as soon as its record starts) and none waits in this owner's inbox.
            while _decided(watcher) < len(events) or await store.pending_keys():  # noqa: ASYNC110 - polls Redis
                await anyio.sleep(0.02)


def _decided(watcher: Watcher) -> int:
    stats = watcher.statistics()
    return stats.events_out + sum(stats.dropped.values())


def test_options_come_from_the_redis_table(redis_url: str) -> None:
    config = Config.from_mapping(
        {
            "jobwatch": {
                "store": "redis",
                "redis": {"url": redis_url, "prefix": "svc", "owner": "r7", "lease": 5},
            }
        }
    )
    store = RedisStore.from_config(config)
    assert (store.owner, store.keys.prefix, store.options.lease) == ("r7", "svc", 5.0)
    assert store.describe()["url"] == redis_url
    with pytest.raises(ConfigError, match=r"\[jobwatch.redis\]"):
        RedisStore.from_config(Config.from_mapping({"jobwatch": {"redis": {"port": 1}}}))
    with pytest.raises(ConfigError, match="url must start"):
        RedisStore(RedisOptions(url="http://x"))


def test_the_entry_point_resolves() -> None:
    from jobwatch._registry import load

    assert load("store", "redis", Store) is RedisStore
    assert MemoryStore.name != RedisStore.name
    assert isinstance(redis.Redis, type)


@pytest.mark.anyio
async def test_put_job_keeps_the_active_index(options: RedisOptions) -> None:
    store = RedisStore(options)
    await store.open()
    try:
        await store.put_job(JobState(job_id="a", watched=True))
        await store.put_job(JobState(job_id="a", watched=True, terminal=True))
        assert await store.active_jobs() == []
    finally:
        await store.aclose()


@pytest.mark.anyio
async def test_a_state_is_stamped_when_committed_after_waiting_for_a_connection(
    options: RedisOptions,
) -> None:
    # Receiver a's end waits for its only connection while receiver b asks the API (which
    # still shows the job running): b's answer, recorded after a's end, is no new run.
    import threading
    import time

    from jobwatch._pipeline import Pipeline

    a = RedisStore(attrs.evolve(options, owner="a", connections=1))
    b = RedisStore(attrs.evolve(options, owner="b"))
    await a.open()
    await b.open()
    to_b: list[str] = []

    async def ignore(event: JobEvent) -> None:
        pass

    async def dispatch_b(event: JobEvent) -> None:
        to_b.append(event.key)

    receiver_a = Pipeline(a, dedup_ttl=3600, dispatch=ignore)
    receiver_b = Pipeline(b, dedup_ttl=3600, dispatch=dispatch_b)
    receiver_a.ready.set()
    receiver_b.ready.set()
    busy = threading.Event()
    try:
        await receiver_a.deliver([make_event("started", "j"), make_event("progress", "j")])
        async with anyio.create_task_group() as tg:
            tg.start_soon(a.client.call, lambda r: busy.wait(10))  # its one connection
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(receiver_a.deliver, [make_event("completed", "j", completed=2)])
            await anyio.wait_all_tasks_blocked()  # decided, waiting for the connection
            asked = time.time()
            while time.time() <= asked:  # the clock moves on before the connection is free
                pass
            busy.set()
        await receiver_b.deliver(
            [make_event("progress", "j", completed=1)], authoritative=True, as_of=asked
        )
        state = await b.get_job("j")
        assert state is not None and (state.run, state.terminal) == (1, True)
        assert to_b == [] and dict(receiver_b.dropped) == {"after-terminal": 1}
    finally:
        busy.set()
        await a.aclose()
        await b.aclose()
