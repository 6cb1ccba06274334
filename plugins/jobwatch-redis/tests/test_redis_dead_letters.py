"""Dead letters on Redis: kept for the namespace, replayed into an owner's inbox, dropped."""

from __future__ import annotations

import shlex

import anyio
import attrs
import pytest
from jobwatch_redis import RedisOptions, RedisStore

import jobwatch
from jobwatch.testing import ScriptedTransport, make_event

pytestmark = [pytest.mark.redis, pytest.mark.anyio]

CONFIG = jobwatch.Config.from_mapping({"jobwatch": {"api_key": "rdr_test", "store": "memory"}})


@pytest.fixture
def options(redis_url: str, prefix: str) -> RedisOptions:
    return RedisOptions(url=redis_url, prefix=prefix, owner="worker-1", lease=0.6)


async def kept_dead_letter(options: RedisOptions) -> str:
    """A worker whose callback fails on a job's final event: the event's key, once kept."""
    store = RedisStore(options)
    kept = anyio.Event()
    keep = store.dead_letter

    async def dead_letter(event: jobwatch.JobEvent, subscriber: str, error: str) -> None:
        await keep(event, subscriber, error)
        kept.set()

    store.dead_letter = dead_letter  # type: ignore[method-assign]
    watcher = jobwatch.Watcher(
        CONFIG, store=store, transports=[ScriptedTransport([make_event("completed", "j")])]
    )

    def broken(event: jobwatch.JobEvent) -> None:
        raise RuntimeError("mail server down")

    watcher.subscribe(broken, retry=jobwatch.Retry(attempts=1))
    async with watcher:
        with anyio.fail_after(10):
            await kept.wait()
    return "j:terminal#1"


async def test_a_replayed_dead_letter_is_dispatched_by_the_owners_next_start(
    options: RedisOptions,
) -> None:
    key = await kept_dead_letter(options)
    other = RedisStore(attrs.evolve(options, owner="operator"))
    await other.open()
    try:  # dead letters are the namespace's: any owner lists them
        [(event, _, error)] = await other.dead_letters()
        assert (event.key, error) == (key, "RuntimeError: mail server down")
    finally:
        await other.aclose()

    store = RedisStore(options)
    await store.open()
    try:
        assert await store.replay_dead_letter(key)
        assert not await store.replay_dead_letter(key)
        assert await store.dead_letters() == [] and await store.pending_keys() == [key]
    finally:
        await store.aclose()

    arrived = anyio.Event()
    got: list[str] = []

    def fixed(event: jobwatch.JobEvent) -> None:
        got.append(event.key)
        arrived.set()

    watcher = jobwatch.Watcher(CONFIG, store=RedisStore(options), transports=[ScriptedTransport()])
    watcher.subscribe(fixed)
    async with watcher:
        with anyio.fail_after(10):
            await arrived.wait()
    assert got == [key]


async def test_a_dropped_dead_letter_is_gone_for_every_owner(options: RedisOptions) -> None:
    key = await kept_dead_letter(options)
    store = RedisStore(attrs.evolve(options, owner="operator"))
    await store.open()
    try:
        assert await store.drop(key)
        assert await store.dead_letters() == []
        assert not await store.drop(key) and not await store.replay_dead_letter(key)
    finally:
        await store.aclose()


async def test_a_dead_letter_this_jobwatch_cannot_read_is_named_and_can_be_dropped(
    options: RedisOptions,
) -> None:
    # An event kind a newer jobwatch wrote: listing failed with "malformed event", naming
    # nothing, and drop and replay parsed every dead letter, so it could not be removed.
    import json

    import redis

    key = await kept_dead_letter(options)
    store = RedisStore(attrs.evolve(options, owner="operator"))
    await store.open()
    client = redis.Redis.from_url(options.url)
    try:
        (raw,) = client.lrange(store.keys.dead_letters, 0, -1)
        entry = json.loads(raw)
        entry["event"]["kind"] = "paused"
        client.lset(store.keys.dead_letters, 0, json.dumps(entry))
        with pytest.raises(jobwatch.DecodeError) as unread:
            await store.dead_letters()
        said = str(unread.value)
        assert f"{key!r} cannot be read by this jobwatch" in said
        assert f"jobwatch inbox drop {shlex.quote(key)}" in said  # runs as printed
        with pytest.raises(jobwatch.DecodeError, match="cannot be read by this jobwatch"):
            await store.replay_dead_letter(key)  # the inbox must read back what it holds
        assert await store.drop(key)
        assert await store.dead_letters() == []
    finally:
        client.close()
        await store.aclose()
