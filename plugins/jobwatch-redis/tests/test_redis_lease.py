"""The heartbeat never takes an owner's lease from another live process.

A receiver that could not reach Redis for longer than its lease (a network partition, a
paused VM) finds, when it comes back, that a process started meanwhile under the same owner
name holds the lease. Renewing it regardless made two live holders of one owner name, which
the start refuses.
"""

from __future__ import annotations

import anyio
import pytest
import redis
from jobwatch_redis import RedisOptions, RedisStore

pytestmark = [pytest.mark.redis, pytest.mark.anyio]


async def test_the_heartbeat_leaves_a_lease_another_process_took(
    redis_url: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = RedisStore(RedisOptions(url=redis_url, prefix=prefix, owner="r1", lease=0.3))
    await store.open()
    client = redis.Redis.from_url(redis_url)
    try:
        # Its lease ran out and a process started under the same name took it.
        client.set(store.keys.lease(), "the-other-process", px=60_000)
        with anyio.move_on_after(0.6):  # six heartbeats
            while client.get(store.keys.lease()) == b"the-other-process":  # noqa: ASYNC110
                await anyio.sleep(0.02)
        assert client.get(store.keys.lease()) == b"the-other-process"
        assert "held by another process" in caplog.text
    finally:
        client.close()
        await store.aclose()
