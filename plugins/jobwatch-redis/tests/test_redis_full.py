"""A full Redis (maxmemory reached, maxmemory-policy noeviction): recording is refused as a
condition to retry, saying what to change, what was dispatched still leaves the inbox, and a
live receiver keeps its lease.

Runs a redis-server of its own: the shared one is never reconfigured.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import anyio
import pytest
import redis
from jobwatch_redis import RedisOptions, RedisStore, RedisUnavailable
from own_redis import OwnRedis, needs_server

from jobwatch._guard import decide
from jobwatch.testing import make_event

pytestmark = [pytest.mark.redis, pytest.mark.anyio, needs_server]


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    server = OwnRedis()
    try:
        yield server
    finally:
        server.close()


def _fill(server: OwnRedis) -> None:
    """Fill Redis with 500 kB of other data, and set its maxmemory well below what it holds."""
    server.client.mset({f"filler:{n}": "x" * 1000 for n in range(500)})
    used = int(server.client.info("memory")["used_memory"])
    server.client.config_set("maxmemory-policy", "noeviction")
    server.client.config_set("maxmemory", used - 200_000)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        server.client.set("filler:one-more", "x")


async def test_a_full_redis_still_takes_acknowledgements(own_redis: OwnRedis) -> None:
    store = RedisStore(RedisOptions(url=own_redis.url(), owner="r1", record_deadline=0.3))
    await store.open()
    try:
        for n in range(3):
            event = make_event("page", "j1", url=f"https://example.com/{n}")
            await store.record("j1", functools.partial(decide, event=event), ttl=60)
        _fill(own_redis)

        event = make_event("page", "j1", url="https://example.com/full")
        with pytest.raises(RedisUnavailable) as full:  # the receiver answers 503
            await store.record("j1", functools.partial(decide, event=event), ttl=60)
        assert "maxmemory" in str(full.value)

        # What was dispatched leaves the inbox, and frees memory: a key left in it would be
        # dispatched again after a restart.
        for key in await store.pending_keys():
            await store.ack(key)
        assert await store.pending_keys() == []
    finally:
        await store.aclose()


async def test_a_full_redis_keeps_a_live_owners_lease(own_redis: OwnRedis) -> None:
    # A lease that runs out while Redis is full has another receiver, once memory is freed,
    # adopt and dispatch the inbox of a process that is still dispatching it.
    store = RedisStore(RedisOptions(url=own_redis.url(), owner="r1", lease=0.3))
    await store.open()
    try:
        _fill(own_redis)
        with anyio.move_on_after(1.0):  # more than three leases: renewed or gone by then
            while own_redis.client.exists(store.keys.lease()):  # noqa: ASYNC110
                await anyio.sleep(0.02)
        assert own_redis.client.exists(store.keys.lease())
    finally:
        await store.aclose()
