"""Redis restarted empty (no persistence), or the namespace's keys deleted, under a running
fleet: what a receiver records afterwards is still adopted by the others when it dies."""

from __future__ import annotations

import functools
from collections.abc import Callable

import anyio
import attrs
import pytest
import redis
from jobwatch_redis import RedisOptions, RedisStore

from jobwatch import JobEvent
from jobwatch._guard import decide
from jobwatch.abc import JobState, Verdict
from jobwatch.testing import make_event

pytestmark = [pytest.mark.redis, pytest.mark.anyio]


def _decides(event: JobEvent) -> tuple[str | None, Callable[[JobState | None], Verdict]]:
    return event.job_id, functools.partial(decide, event=event)


async def _crash(store: RedisStore) -> None:
    """Stop ``store`` as a killed process stops: no heartbeat, its lease left to run out."""
    store._stop.set()
    if store._heartbeat is not None:
        await anyio.to_thread.run_sync(store._heartbeat.join)
        store._heartbeat = None
    store.client.close()


async def test_an_inbox_written_after_redis_lost_its_keys_is_adopted_when_its_owner_dies(
    redis_url: str, prefix: str
) -> None:
    options = RedisOptions(url=redis_url, prefix=prefix, owner="r1", lease=0.6)
    first = RedisStore(options)
    await first.open()
    client = redis.Redis.from_url(redis_url)
    try:
        # Every key of the namespace gone, as after a restart of a Redis without persistence.
        client.delete(*client.scan_iter(match=f"{prefix}:*", count=1000))
        single = make_event("page", "j1", url="https://example.com/1")
        batched = make_event("page", "j2", url="https://example.com/2")
        assert (await first.record(*_decides(single), ttl=60)).event is not None
        assert all(v.event for v in await first.record_batch([_decides(batched)], ttl=60))
        await _crash(first)
        client.delete(first.keys.lease())  # as its expiry does, lease seconds later
    finally:
        client.close()
    second = RedisStore(attrs.evolve(options, owner="r2"))
    await second.open()
    try:
        adopted = sorted(event.key for event in await second.pending())
    finally:
        await second.aclose()
    assert adopted == sorted(f"{e.key}#1" for e in (single, batched))
