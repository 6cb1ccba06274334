"""A Redis password never reaches a ``repr()``, a description or an error message."""

from __future__ import annotations

import socket

import pytest
from jobwatch_redis import RedisOptions, RedisStore, RedisUnavailable, RelayOptions
from jobwatch_redis._client import RedisClient, describe_url

from jobwatch import Config, ConfigError

PASSWORD = "s3cret-Pa55"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@host:6379/0", "redis://:***@host:6379/0"),
        ("rediss://user:p@ss@host:6380/1", "rediss://user:***@host:6380/1"),
        ("redis://token@host/0", "redis://***@host/0"),
        ("unix:///run/redis.sock?db=0&password=pw", "unix:///run/redis.sock?db=0&password=***"),
        ("redis://host/0?ssl_password=pw&db=1", "redis://host/0?ssl_password=***&db=1"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ],
)
def test_redis_urls_are_described_without_passwords(url: str, shown: str) -> None:
    assert describe_url(url) == shown


def test_the_options_repr_shows_no_password() -> None:
    url = f"redis://jobwatch:{PASSWORD}@redis.internal:6379/0"
    for options in (RedisOptions(url=url), RelayOptions(url=url)):
        assert PASSWORD not in repr(options)
        assert "jobwatch:***@redis.internal" in repr(options)
    store = RedisStore.from_config(
        Config.from_mapping({"jobwatch": {"store": "redis", "redis": {"url": url}}})
    )
    assert PASSWORD not in repr(store.describe())


def test_a_bad_url_is_refused_without_its_password() -> None:
    with pytest.raises(ConfigError) as refused:
        RedisStore(RedisOptions(url=f"http://jobwatch:{PASSWORD}@redis.internal"))
    assert PASSWORD not in str(refused.value)


@pytest.mark.anyio
async def test_an_unreachable_redis_is_reported_without_its_password() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = RedisClient(f"redis://jobwatch:{PASSWORD}@127.0.0.1:{port}/0", timeout=0.5)
    try:
        with pytest.raises(RedisUnavailable) as failed:
            await client.call(lambda redis: redis.ping())
    finally:
        client.close()
    assert "jobwatch:***@127.0.0.1" in str(failed.value)
    assert PASSWORD not in str(failed.value) and PASSWORD not in repr(client)
