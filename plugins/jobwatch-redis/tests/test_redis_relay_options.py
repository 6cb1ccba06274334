"""``[jobwatch.relay] published_ttl`` below one second: Redis refuses ``SET ... EX 0``, so the
relay retried a publish that could never succeed, and relayed nothing."""

from __future__ import annotations

import anyio
import pytest
import redis
from jobwatch_redis import RedisOptions, RedisStore, RelayOptions, RelayTransport

from jobwatch import Config, ConfigError, Watcher
from jobwatch.testing import ScriptedTransport, make_event

pytestmark = pytest.mark.redis


@pytest.mark.anyio
async def test_a_published_ttl_below_a_second_still_publishes(redis_url: str, prefix: str) -> None:
    stream = f"{prefix}:events"
    relay = RelayTransport(
        RelayOptions(url=redis_url, stream=stream, role="publish", published_ttl=0.5)
    )
    store = RedisStore(RedisOptions(url=redis_url, prefix=prefix, owner="pub"))
    events = [make_event("completed", "j1")]
    config = Config.from_mapping({"jobwatch": {"transport": "relay"}})
    client = redis.Redis.from_url(redis_url)
    try:
        async with Watcher(config, transports=[ScriptedTransport(events), relay], store=store):
            with anyio.fail_after(5):
                while client.xlen(stream) < 1:  # noqa: ASYNC110 - polls Redis
                    await anyio.sleep(0.01)
    finally:
        client.close()


@pytest.mark.parametrize("ttl", [0.0, -1.0])
def test_a_published_ttl_that_is_not_positive_is_refused(ttl: float) -> None:
    with pytest.raises(ConfigError, match="published_ttl"):
        RelayTransport(RelayOptions(published_ttl=ttl))
