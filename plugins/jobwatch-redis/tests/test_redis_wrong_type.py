"""A key of the wrong type where the store writes (left by another program that uses the same
names): recording fails saying what to change, and leaves nothing behind that would make the
sender's retry, once the key is gone, a duplicate of an event no inbox holds."""

from __future__ import annotations

import functools

import pytest
import redis
from jobwatch_redis import RedisCommandError, RedisOptions, RedisStore

from jobwatch import JobEvent
from jobwatch._guard import decide
from jobwatch.testing import make_event

pytestmark = [pytest.mark.redis, pytest.mark.anyio]


async def _record(store: RedisStore, event: JobEvent, batched: bool) -> list[JobEvent | None]:
    decides = functools.partial(decide, event=event)
    if batched:
        verdicts = await store.record_batch([(event.job_id, decides)], ttl=60)
    else:
        verdicts = [await store.record(event.job_id, decides, ttl=60)]
    return [verdict.event for verdict in verdicts]


@pytest.mark.parametrize("batched", [False, True], ids=["record", "record_batch"])
@pytest.mark.parametrize("stray", ["inbox", "order", "seq", "owners", "active"])
async def test_a_key_of_the_wrong_type_loses_no_event(
    redis_url: str, prefix: str, batched: bool, stray: str
) -> None:
    store = RedisStore(RedisOptions(url=redis_url, prefix=prefix, owner="r1"))
    await store.open()
    client = redis.Redis.from_url(redis_url)
    keys = store.keys
    key = {
        "inbox": keys.inbox(),
        "order": keys.order(),
        "seq": keys.seq,
        "owners": keys.owners,
        "active": keys.active,
    }[stray]
    event = make_event("completed", "j1")
    try:
        client.delete(key)
        client.rpush(key, "left here by another program")
        with pytest.raises(RedisCommandError) as refused:
            await _record(store, event, batched)
        assert "[jobwatch.redis] prefix" in str(refused.value)  # says what to change
        client.delete(key)  # the stray key removed; the sender retries the delivery
        assert await _record(store, event, batched) != [None], "taken for a duplicate: lost"
        assert [e.key for e in await store.pending()] == [event.key + "#1"]
    finally:
        client.close()
        await store.aclose()
