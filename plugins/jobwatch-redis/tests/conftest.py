"""Fixtures of the jobwatch-redis tests: a Redis URL on db 15 and a fresh key prefix per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis
from redis_proxy import RedisProxy

#: db 15, never db 0: the tests share the machine's Redis with anything else that uses it.
REDIS_URL = "redis://127.0.0.1:6379/15"


@pytest.fixture(params=["trio", "asyncio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every async test runs on trio (the default) and on asyncio."""
    return str(request.param)


@pytest.fixture
def redis_url() -> str:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        pytest.fail(f"the redis tests need Redis on 127.0.0.1:6379 ({exc}); start redis-server")
    return REDIS_URL


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix no other test uses; its keys are deleted afterwards."""
    name = f"jwtest:{uuid.uuid4().hex[:12]}"
    yield name
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{name}*", count=1000))
        if keys:
            client.delete(*keys)
    except redis.RedisError:
        pass  # a test that stops Redis cleans nothing; the prefix is never reused
    finally:
        client.close()


@pytest.fixture
def proxy() -> Iterator[RedisProxy]:
    """A TCP proxy in front of the machine's Redis that a test can cut or slow
    (:class:`redis_proxy.RedisProxy`)."""
    own = RedisProxy()
    try:
        yield own
    finally:
        own.close()
