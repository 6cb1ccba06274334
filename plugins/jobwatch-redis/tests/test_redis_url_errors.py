"""A URL whose password, user or database Redis refuses: a ConfigError at start that says what
to fix in which table, never the password, and never "unavailable, jobwatch retries".

Runs a redis-server of its own with a password: the shared one is never reconfigured.
"""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import pytest
import redis
from jobwatch_redis import RedisOptions, RedisStore, RelayOptions, RelayTransport
from own_redis import OwnRedis, needs_server

from jobwatch import Config, ConfigError, Watcher
from jobwatch.stores.memory import MemoryStore

pytestmark = [pytest.mark.redis, pytest.mark.anyio, needs_server]

PASSWORD = "s3cret-Pa55"


@pytest.fixture
def locked_redis() -> Iterator[OwnRedis]:
    server = OwnRedis("--requirepass", PASSWORD)
    try:
        yield server
    finally:
        server.close()


@pytest.mark.parametrize(
    ("auth", "db", "says"),
    [
        (f":{PASSWORD}x@", "0", "password"),
        ("", "0", "password"),
        (f"someone:{PASSWORD}@", "0", "password"),
        (f":{PASSWORD}@", "99", "database"),
        (f":{PASSWORD}@", "O", "database"),  # a letter O: redis-py took database 0
    ],
    ids=["wrong-password", "no-password", "wrong-user", "db-out-of-range", "db-not-a-number"],
)
async def test_a_wrong_password_or_database_says_what_to_fix(
    locked_redis: OwnRedis, auth: str, db: str, says: str
) -> None:
    store = RedisStore(RedisOptions(url=locked_redis.url(auth, db), owner="r1"))
    try:
        with anyio.fail_after(10), pytest.raises(ConfigError) as refused:
            await store.open()
    finally:
        await store.aclose()
    message = str(refused.value)
    assert says in message and "[jobwatch.redis] url" in message
    assert PASSWORD not in message and "jobwatch retries" not in message


@pytest.mark.parametrize("role", ["consume", "publish"])
async def test_a_relay_with_a_wrong_password_fails_at_start(
    locked_redis: OwnRedis, role: str
) -> None:
    relay = RelayTransport(RelayOptions(url=locked_redis.url(":nope@"), role=role))  # type: ignore[arg-type]
    config = Config.from_mapping({"jobwatch": {"transport": "relay"}})
    with anyio.fail_after(10), pytest.raises(ConfigError) as refused:
        async with Watcher(config, transports=[relay], store=MemoryStore()):
            await anyio.sleep_forever()  # a relay that retries in vain never ends this
    assert "[jobwatch.relay] url" in str(refused.value)


async def test_a_user_without_the_commands_jobwatch_needs_says_so(locked_redis: OwnRedis) -> None:
    locked_redis.client.acl_setuser(
        "limited", enabled=True, passwords=[f"+{PASSWORD}"], keys=["*"], commands=["+@all", "-sadd"]
    )
    store = RedisStore(RedisOptions(url=locked_redis.url(f"limited:{PASSWORD}@"), owner="r1"))
    try:
        with anyio.fail_after(10), pytest.raises(ConfigError) as refused:
            await store.open()
    finally:
        await store.aclose()
    assert "grant" in str(refused.value) and PASSWORD not in str(refused.value)


@pytest.mark.parametrize(("db", "number"), [("0/", 0), ("3/", 3)])
async def test_a_database_number_with_a_slash_after_it_is_that_database(
    locked_redis: OwnRedis, db: str, number: int
) -> None:
    # redis://host:6379/3/ is database 3 to redis-py: refusing it stopped a working receiver.
    store = RedisStore(RedisOptions(url=locked_redis.url(f":{PASSWORD}@", db), owner="r1"))
    try:
        with anyio.fail_after(10):
            await store.open()
        await store.put_checkpoint("stream", "1-0")
    finally:
        await store.aclose()
    client = redis.Redis(port=locked_redis.port, password=PASSWORD, db=number)
    try:
        assert client.hget(store.keys.checkpoints, "stream") == b"1-0"
    finally:
        client.close()
