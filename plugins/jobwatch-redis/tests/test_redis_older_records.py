"""Records written before events had ``error`` and ``attempt``, and job states before
``attempt``, still load from Redis and take the new fields from then on."""

from __future__ import annotations

import functools
import json

import attrs
import pytest
import redis
from jobwatch_redis import RedisOptions, RedisStore
from jobwatch_redis._keys import Keys, decode_entry, state_from_json, state_to_json

from jobwatch import JobEvent, JobStatus
from jobwatch._guard import decide
from jobwatch.abc import JobState
from jobwatch.testing import make_event

pytestmark = pytest.mark.redis

#: A job state and an event (key OLD_KEY) as the store wrote them before either had an attempt.
OLD_KEY = "j1:page_failed:https://example.com/a#1"
OLD_STATE = {
    "completed": 3,
    "job_id": "j1",
    "run": 1,
    "started": True,
    "status": "processing",
    "terminal": False,
    "total": 9,
    "updated_at": 0.0,
    "watched": True,
}
OLD_EVENT = {
    "kind": "page_failed",
    "job_id": "j1",
    "status": None,
    "completed": None,
    "total": None,
    "key": OLD_KEY,
    "source": "webhook",
    "occurred_at": None,
    "data": {"url": "https://example.com/a", "error": "timeout"},
}


def test_an_old_job_state_loads_without_an_attempt() -> None:
    state = state_from_json(json.dumps(OLD_STATE))
    assert state == JobState(
        job_id="j1", completed=3, total=9, started=True, watched=True, status=JobStatus.PROCESSING
    )
    assert state.attempt is None
    numbered = attrs.evolve(state, attempt=2)
    assert state_from_json(state_to_json(numbered)) == numbered


def test_an_old_relayed_event_decodes() -> None:
    event = decode_entry({b"event": json.dumps(OLD_EVENT).encode()})
    assert (event.key, event.error, event.attempt) == (
        "j1:page_failed:https://example.com/a",
        None,
        None,
    )


@pytest.mark.anyio
async def test_old_records_load_from_the_store(redis_url: str, prefix: str) -> None:
    keys = Keys(prefix=prefix, owner="r1")
    client = redis.Redis.from_url(redis_url)
    try:
        client.set(keys.job("j1"), json.dumps(OLD_STATE))
        client.sadd(keys.active, "j1")
        client.hset(keys.inbox(), OLD_KEY, json.dumps(OLD_EVENT))
        client.zadd(keys.order(), {OLD_KEY: 1})
    finally:
        client.close()

    store = RedisStore(RedisOptions(url=redis_url, prefix=prefix, owner="r1"))
    await store.open()
    try:
        (pending,) = await store.pending()
        assert pending == JobEvent.from_dict(OLD_EVENT)
        assert (pending.error, pending.attempt) == (None, None)
        assert [s.job_id for s in await store.active_jobs()] == ["j1"]
        assert (await store.get_job("j1")) == state_from_json(json.dumps(OLD_STATE))
        # The next record decides on the old state and saves the attempt it learns.
        event = attrs.evolve(make_event("completed", "j1", completed=9), attempt=1)
        verdict = await store.record("j1", functools.partial(decide, event=event), ttl=60)
        assert verdict.event is not None and verdict.event.key == "j1:terminal#1"
        saved = await store.get_job("j1")
        assert saved is not None and (saved.attempt, saved.terminal) == (1, True)
        assert (await store.pending())[-1].attempt == 1
    finally:
        await store.aclose()
