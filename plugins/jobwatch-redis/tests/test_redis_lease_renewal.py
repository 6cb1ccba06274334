"""A receiver keeps its lease through what it should ride out, and never takes back one it lost.

The lease (``lease`` seconds in Redis) is renewed every ``lease / 3`` seconds by a thread, and
a receiver that has not renewed it for 0.8 × ``lease`` counts it lost and stops
(``LeaseLost``). A Redis that is slow for less than that costs answers, not the receiver; a
receiver that did not run for longer (a long pause of the process) stops for good, whatever
Redis says when it wakes. A proxy on loopback (``redis_proxy.py``) slows Redis for one client
only, since other tests share the server.
"""

from __future__ import annotations

import sys
import time

import anyio
import pytest
import redis
from jobwatch_redis import LeaseLost, RedisOptions, RedisStore
from redis_proxy import RedisProxy

pytestmark = [pytest.mark.redis, pytest.mark.anyio]


async def _just_renewed(client: redis.Redis, key: str, lease: float) -> None:
    """Return right after the heartbeat renewed the lease at ``key`` (its TTL jumped up)."""
    with anyio.fail_after(lease * 2):
        last = client.pttl(key)
        while True:
            await anyio.sleep(0.005)
            now = client.pttl(key)
            if now > last:
                return
            last = now


async def test_a_renewal_that_redis_answers_late_does_not_lose_the_lease(
    redis_url: str, prefix: str, proxy: RedisProxy
) -> None:
    lease, timeout = 3.0, 0.5
    store = RedisStore(
        RedisOptions(url=proxy.url(), prefix=prefix, owner="r1", lease=lease, timeout=timeout)
    )
    await store.open()
    direct = redis.Redis.from_url(redis_url)
    try:
        await _just_renewed(direct, store.keys.lease(), lease)
        # Redis answers nothing for 0.7 x lease: the next renewal (sent lease / 3 later)
        # times out, and so does the client's one retry. That is shorter than 0.8 x lease,
        # which the receiver rides out: it renews as soon as Redis answers again.
        proxy.stall(lease * 0.7)
        with anyio.move_on_after(lease * 1.5):
            await store.monitor()  # raises LeaseLost if the lease is counted lost
        assert await store.pending() == []
        assert direct.get(store.keys.lease()) is not None
    finally:
        await store.aclose()
        direct.close()


def _pause_the_process(seconds: float) -> None:
    """Run no other thread for ``seconds``, as a long garbage collection does (or a paused
    VM): this thread keeps the interpreter all that time."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(seconds * 10)
    try:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            pass
    finally:
        sys.setswitchinterval(interval)


async def test_a_receiver_paused_past_its_lease_never_takes_it_back(
    redis_url: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Used as the serverless handler uses it: no Watcher, so no monitor() thread either.
    lease = 1.0
    store = RedisStore(RedisOptions(url=redis_url, prefix=prefix, owner="r1", lease=lease))
    await store.open()
    direct = redis.Redis.from_url(redis_url)
    key = store.keys.lease()
    try:
        # Redis lets the lease run out meanwhile: another receiver may adopt the inbox.
        _pause_the_process(lease * 2)
        with anyio.fail_after(lease * 3):  # the heartbeat wakes: it loses, or takes it again
            while "lost its lease" not in caplog.text and not direct.exists(key):  # noqa: ASYNC110 - a thread logs it, or Redis holds it
                await anyio.sleep(0.01)
        assert not direct.exists(key), "a lease that ran out was taken again"
        with pytest.raises(LeaseLost):
            await store.pending()
    finally:
        await store.aclose()
        direct.close()
